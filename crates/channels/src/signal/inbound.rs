//! The inbound side: the journalled messages handed to the host in order,
//! each removed from the journal only after the host's commit, then its
//! read receipt; attachments read from signal-cli's folder.

use std::os::unix::fs::OpenOptionsExt;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use crate::platform::{Backoff, SEND_TIMEOUT};
use crate::{Ack, AckOutcome, ChannelEvent, InboundAttachment, MAX_ATTACHMENT};

use super::{clip, envelope, SignalChannel, ACK_WAIT};

impl SignalChannel {
    /// Hands the journalled messages to the host, oldest first; each
    /// leaves the journal once committed (then its read receipt goes).
    pub(super) async fn inbox_loop(self: Arc<Self>) {
        let mut backoff = Backoff::default();
        while !self.closed() {
            let mut retry = None;
            for p in self.spool.list() {
                if self.closed() {
                    return;
                }
                let env: Option<Value> = std::fs::read(&p)
                    .ok()
                    .and_then(|b| serde_json::from_slice(&b).ok());
                let inc = match env.as_ref().map(|e| envelope::read(e, &self.cfg.account)) {
                    Some(Ok(i)) => i,
                    _ => {
                        tracing::warn!(path = %p.display(), "signal: a journalled message cannot be read; dropped");
                        self.spool.done(&p);
                        continue;
                    }
                };
                let mut ev = inc.event.clone();
                ev.attachments = inc.files.iter().map(|f| self.load_file(f)).collect();
                let (ack, rx) = Ack::new();
                if self
                    .events
                    .send(ChannelEvent::Message(ev, ack))
                    .await
                    .is_err()
                {
                    return; // the host is gone
                }
                match crate::http::within(ACK_WAIT, rx).await {
                    Some(Ok(AckOutcome::Stored { .. })) => {
                        self.spool.done(&p);
                        backoff.progress();
                        if self.cfg.read_receipts {
                            self.receipt(&inc.author, inc.timestamp);
                        }
                    }
                    other => {
                        let why = match other {
                            Some(Ok(AckOutcome::Failed(w))) => w,
                            _ => "no answer from the host".into(),
                        };
                        tracing::warn!(id = %inc.event.message_id, "signal: the host did not store a message (kept, offered again): {why}");
                        retry = Some(backoff.failed());
                        break;
                    }
                }
            }
            let wait = retry.unwrap_or(Duration::from_secs(30));
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(wait) => {}
                _ = self.stop.notified() => {}
            }
        }
    }

    /// A read receipt for a committed message (best effort).
    fn receipt(self: &Arc<Self>, author: &str, timestamp: u64) {
        let me = self.clone();
        let author = author.to_owned();
        tokio::spawn(async move {
            let p = json!({"account": me.cfg.account, "recipient": [author], "targetTimestamp": [timestamp], "type": "read"});
            if let Err(e) = me.call("sendReceipt", p, SEND_TIMEOUT).await {
                tracing::debug!("signal: read receipt not sent: {e}");
            }
        });
    }

    /// An attachment's bytes from signal-cli's folder: the id checked,
    /// links not followed, regular files only, capped.
    fn load_file(&self, f: &envelope::FileRef) -> InboundAttachment {
        let mut a = InboundAttachment {
            name: f.name.clone(),
            mime: f.mime.clone(),
            size: f.size,
            data: None,
        };
        if !envelope::safe_id(&f.id) {
            tracing::warn!(
                "signal: an attachment id that is not a plain file name was ignored: {:?}",
                clip(&f.id, 80)
            );
            return a;
        }
        let Some(dir) = &self.cfg.attachments_dir else {
            return a;
        };
        let path = dir.join(&f.id);
        let read = || -> std::io::Result<Option<Vec<u8>>> {
            use std::io::Read;
            let file = std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
                .open(&path)?;
            let meta = file.metadata()?;
            if !meta.is_file() {
                return Err(std::io::Error::other("not a regular file"));
            }
            if meta.len() > MAX_ATTACHMENT {
                return Ok(None);
            }
            let mut out = Vec::new();
            file.take(MAX_ATTACHMENT + 1).read_to_end(&mut out)?;
            Ok((out.len() as u64 <= MAX_ATTACHMENT).then_some(out))
        };
        match read() {
            Ok(d) => {
                if let Some(d) = &d {
                    a.size = d.len() as u64;
                }
                a.data = d;
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), "signal: an attachment could not be read: {e}")
            }
        }
        a
    }
}
