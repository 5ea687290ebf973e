//! Running the bridge: spawn it, speak [`wire`] over its stdio, restart it
//! with the shared backoff when it exits or stalls, stop for good when
//! WhatsApp logged the device out.

use std::process::Stdio;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

use super::{setup, wire, Status, WaWebChannel, LINK_FIX};
use crate::platform::Backoff;
use crate::{Ack, AckOutcome, Address, ChannelEvent, DeliverError, InboundEvent};

/// How often a waiting adapter looks for a new session (after a link).
const IDLE_POLL: Duration = Duration::from_secs(1);
/// How long an inbound message may wait for the host's commit.
const ACK_WAIT: Duration = Duration::from_secs(60);

/// How a bridge run ended.
enum End {
    /// Start again after the backoff.
    Again(String),
    LoggedOut(String),
}

/// The adapter's background task.
pub(super) async fn supervise(ch: Arc<WaWebChannel>) {
    let p = ch.cfg.paths.clone();
    let mut backoff = Backoff::default();
    let mut said = "";
    while !ch.closed.load(Ordering::SeqCst) {
        if p.logged_out.exists() {
            ch.set_status(Status::LoggedOut);
            if said != "out" {
                tracing::error!(
                    channel = super::CHANNEL_TYPE,
                    "WhatsApp logged this device out; {LINK_FIX}"
                );
                said = "out";
            }
            tokio::time::sleep(IDLE_POLL).await;
            continue;
        }
        ch.set_status(Status::Down);
        if !p.linked() {
            if said != "unlinked" {
                tracing::warn!(
                    channel = super::CHANNEL_TYPE,
                    "WhatsApp is not linked yet; {LINK_FIX}"
                );
                said = "unlinked";
            }
            tokio::time::sleep(IDLE_POLL).await;
            continue;
        }
        let lock = match setup::Lock::take(&p.lock) {
            Ok(Some(l)) => l,
            Ok(None) => {
                if said != "locked" {
                    tracing::warn!(channel = super::CHANNEL_TYPE, "another pinch (a `pinch channels whatsapp link`?) holds the WhatsApp session; waiting for it");
                    said = "locked";
                }
                tokio::time::sleep(IDLE_POLL).await;
                continue;
            }
            Err(e) => {
                tracing::error!(channel = super::CHANNEL_TYPE, "{e}");
                tokio::time::sleep(backoff.failed()).await;
                continue;
            }
        };
        said = "";
        let end = run(&ch, &mut backoff).await;
        drop(lock);
        for (_, w) in ch.waiting.lock().unwrap().drain() {
            let _ = w.send(Err(DeliverError::Retryable(
                "the WhatsApp bridge stopped".into(),
            )));
        }
        *ch.to_bridge.lock().unwrap() = None;
        match end {
            End::LoggedOut(why) => {
                let first = !p.logged_out.exists();
                let stamp = format!("{why} (at {} s since the epoch)", now_s());
                if let Err(e) = crate::write_private(&p.logged_out, stamp.as_bytes()) {
                    tracing::error!("whatsapp_web: cannot record the logout: {e}");
                }
                ch.set_status(Status::LoggedOut);
                if first {
                    let text = format!(
                        "WhatsApp logged pinch's linked device out ({why}): messages on WhatsApp are not read or answered until you {LINK_FIX}."
                    );
                    let _ = ch
                        .events
                        .send(ChannelEvent::Notice {
                            to: Address {
                                channel_type: "cli".into(),
                                platform_id: "local".into(),
                                thread_id: None,
                            },
                            text,
                        })
                        .await;
                }
            }
            End::Again(why) => {
                if ch.closed.load(Ordering::SeqCst) {
                    return;
                }
                let wait = backoff.failed();
                tracing::warn!(
                    channel = super::CHANNEL_TYPE,
                    "the WhatsApp bridge stopped ({why}); starting it again in {}s",
                    wait.as_secs()
                );
                tokio::time::sleep(wait).await;
            }
        }
    }
}

/// Starts the bridge in `link` mode or not: the child and its lines.
pub(super) fn spawn(
    cfg: &super::WaWebConfig,
    session: &std::path::Path,
    link: bool,
) -> Result<(Child, String), String> {
    if cfg.default_bridge {
        setup::refresh_script(&cfg.paths)?;
        setup::installed(&cfg.paths)?;
    }
    let start = wire::Start {
        op: "start",
        session: session.display().to_string(),
        media: cfg.paths.media.display().to_string(),
        spool: cfg.paths.spool.display().to_string(),
        max_bytes: crate::MAX_ATTACHMENT,
        alive_ms: (cfg.stall.as_millis() as u64 / 4).max(25),
        link,
        read_receipts: cfg.read_receipts,
    };
    // The bridge runs outside the agents' sandbox, as the owner: it needs
    // the network and its session folder (decision 0055 names the risk).
    #[allow(clippy::disallowed_methods)] // the WhatsApp Web bridge, supervised by its adapter
    let mut cmd = std::process::Command::new(&cfg.command[0]);
    crate::helper_env(&mut cmd);
    let child = Command::from(cmd)
        .args(&cfg.command[1..])
        .current_dir(&cfg.paths.root)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| {
            format!(
                "cannot start the WhatsApp bridge ({}): {e}; install it with `pinch channels whatsapp install` (needs Node.js 20 or later)",
                cfg.command[0]
            )
        })?;
    Ok((
        child,
        serde_json::to_string(&start).expect("start serialises"),
    ))
}

/// Forwards the bridge's stderr to the log (debug), lines bounded.
pub(super) fn log_stderr(child: &mut Child) {
    if let Some(err) = child.stderr.take() {
        tokio::spawn(async move {
            let mut r = BufReader::new(err);
            loop {
                match read_line(&mut r).await {
                    Ok(Some(line)) => {
                        let l = String::from_utf8_lossy(&line);
                        tracing::debug!(
                            channel = super::CHANNEL_TYPE,
                            "bridge: {}",
                            l.chars().take(500).collect::<String>()
                        );
                    }
                    Ok(None) => return,
                    // An over-long line is skipped, not the end of reading:
                    // an undrained pipe would block the bridge's writes.
                    Err(e) => {
                        tracing::debug!(channel = super::CHANNEL_TYPE, "bridge: {e}, skipped");
                        if !skip_line(&mut r).await {
                            return;
                        }
                    }
                }
            }
        });
    }
}

/// Reads past the next newline; false at the end or on an error.
async fn skip_line<R: AsyncBufRead + Unpin>(r: &mut R) -> bool {
    loop {
        let Ok(buf) = r.fill_buf().await else {
            return false;
        };
        if buf.is_empty() {
            return false;
        }
        match buf.iter().position(|&b| b == b'\n') {
            Some(i) => {
                r.consume(i + 1);
                return true;
            }
            None => {
                let n = buf.len();
                r.consume(n);
            }
        }
    }
}

/// One line of at most [`wire::MAX_LINE`] bytes (without its newline);
/// `None` at the end. A longer line is an error (the bridge is broken).
pub(super) async fn read_line<R: AsyncBufRead + Unpin>(
    r: &mut R,
) -> Result<Option<Vec<u8>>, String> {
    let mut out = Vec::new();
    loop {
        let buf = r.fill_buf().await.map_err(|e| e.to_string())?;
        if buf.is_empty() {
            return Ok((!out.is_empty()).then_some(out));
        }
        let (chunk, done) = match buf.iter().position(|&b| b == b'\n') {
            Some(i) => (&buf[..i], Some(i + 1)),
            None => (buf, None),
        };
        if out.len() + chunk.len() > wire::MAX_LINE {
            return Err(format!("a line longer than {} bytes", wire::MAX_LINE));
        }
        out.extend_from_slice(chunk);
        let used = done.unwrap_or(buf.len());
        r.consume(used);
        if done.is_some() {
            return Ok(Some(out));
        }
    }
}

/// One run of the bridge, until it exits, stalls or is logged out.
async fn run(ch: &Arc<WaWebChannel>, backoff: &mut Backoff) -> End {
    let (mut child, start) = match spawn(&ch.cfg, &ch.cfg.paths.session, false) {
        Ok(c) => c,
        Err(e) => return End::Again(e),
    };
    log_stderr(&mut child);
    let mut stdin = child.stdin.take().expect("piped");
    let mut out = BufReader::new(child.stdout.take().expect("piped"));
    let (tx, mut rx) = mpsc::channel::<String>(256);
    let writer = tokio::spawn(async move {
        let mut line = start;
        loop {
            line.push('\n');
            if stdin.write_all(line.as_bytes()).await.is_err() || stdin.flush().await.is_err() {
                return;
            }
            match rx.recv().await {
                Some(l) => line = l,
                None => return,
            }
        }
    });
    let _writer = AbortOnDrop(writer);
    let stall = ch.cfg.stall;
    loop {
        let line = match tokio::time::timeout(stall, read_line(&mut out)).await {
            Err(_) => return End::Again(format!("silent for {}s", stall.as_secs_f64())),
            Ok(Err(e)) => return End::Again(e),
            Ok(Ok(None)) => {
                let status = child
                    .wait()
                    .await
                    .map(|s| s.to_string())
                    .unwrap_or_default();
                return End::Again(format!("it exited ({status})"));
            }
            Ok(Ok(Some(l))) => l,
        };
        let ev = match wire::parse(&line) {
            Ok(ev) => ev,
            Err(e) => {
                tracing::warn!(
                    channel = super::CHANNEL_TYPE,
                    "skipped a line from the bridge: {e}"
                );
                continue;
            }
        };
        match ev {
            wire::Event::Alive => {}
            wire::Event::Connected { me } => {
                backoff.connected();
                tracing::info!(channel = super::CHANNEL_TYPE, "WhatsApp connected as {me}");
                *ch.to_bridge.lock().unwrap() = Some(tx.clone());
                ch.set_status(Status::Up);
                let _ = ch
                    .events
                    .send(ChannelEvent::Available {
                        channel_type: super::CHANNEL_TYPE.into(),
                    })
                    .await;
            }
            wire::Event::Qr { .. } => {
                return End::LoggedOut("WhatsApp asks to pair again".into());
            }
            wire::Event::LoggedOut { reason } => {
                return End::LoggedOut(if reason.is_empty() {
                    "logged out".into()
                } else {
                    reason
                });
            }
            wire::Event::Closed { reason } => {
                return End::Again(format!("connection closed: {reason}"))
            }
            wire::Event::Error { message } => {
                tracing::warn!(
                    channel = super::CHANNEL_TYPE,
                    "bridge: {}",
                    message.chars().take(500).collect::<String>()
                );
            }
            wire::Event::Reaction { chat, msg, emoji } => {
                tracing::debug!(
                    channel = super::CHANNEL_TYPE,
                    "a reaction {emoji} to {msg} in {chat} (not used)"
                );
            }
            wire::Event::Result {
                id,
                ok,
                msg_id,
                error,
                permanent,
            } => {
                let r = match (ok, msg_id) {
                    (true, Some(m)) => Ok(m),
                    (true, None) => Ok(String::new()),
                    (false, _) => {
                        let e = error.unwrap_or_else(|| "the bridge gave no reason".into());
                        Err(if permanent {
                            DeliverError::Permanent(e)
                        } else {
                            DeliverError::Retryable(e)
                        })
                    }
                };
                if let Some(w) = ch.waiting.lock().unwrap().remove(&id) {
                    let _ = w.send(r);
                }
            }
            wire::Event::Message(m) => inbound(ch, &m, &tx).await,
        }
    }
}

/// Hands a message to the host; `ack` goes back to the bridge only once
/// the host stored it.
async fn inbound(ch: &Arc<WaWebChannel>, m: &wire::WireMessage, tx: &mpsc::Sender<String>) {
    let mut ev = match wire::inbound(m, super::CHANNEL_TYPE) {
        Ok(ev) => ev,
        Err(e) => {
            tracing::warn!(channel = super::CHANNEL_TYPE, "dropped a message: {e}");
            // Acked all the same, its download removed: else the bridge
            // keeps it (and its media) and gives it again at every start.
            if let Some(f) = m.media.as_ref().and_then(|md| md.file.as_deref()) {
                if wire::valid_file(f) {
                    let _ = tokio::fs::remove_file(ch.cfg.paths.media.join(f)).await;
                }
            }
            let ack = wire::Command::Ack {
                chat: m.chat.clone(),
                msg: m.id.clone(),
            };
            let _ = tx
                .send(serde_json::to_string(&ack).expect("serialises"))
                .await;
            return;
        }
    };
    read_media(&ch.cfg.paths.media, m, &mut ev).await;
    let (ack, done) = Ack::new();
    if ch
        .events
        .send(ChannelEvent::Message(ev, ack))
        .await
        .is_err()
    {
        return;
    }
    let tx = tx.clone();
    let (chat, msg) = (m.chat.clone(), m.id.clone());
    let file = m
        .media
        .as_ref()
        .and_then(|md| md.file.clone())
        .filter(|f| wire::valid_file(f));
    let media = ch.cfg.paths.media.clone();
    tokio::spawn(async move {
        match tokio::time::timeout(ACK_WAIT, done).await {
            Ok(Ok(AckOutcome::Stored { .. })) => {
                if let Some(f) = file {
                    let _ = tokio::fs::remove_file(media.join(f)).await;
                }
                let line =
                    serde_json::to_string(&wire::Command::Ack { chat, msg }).expect("serialises");
                let _ = tx.send(line).await;
            }
            other => tracing::warn!(
                channel = super::CHANNEL_TYPE,
                "message {msg} not stored ({other:?}); the bridge gives it again at its next start"
            ),
        }
    });
}

/// Reads the message's media file (a plain name in the media folder, no
/// symlink, capped) into its attachment.
async fn read_media(dir: &std::path::Path, m: &wire::WireMessage, ev: &mut InboundEvent) {
    let Some(md) = &m.media else { return };
    let Some(f) = md.file.as_deref() else { return };
    if !wire::valid_file(f) {
        tracing::warn!(
            channel = super::CHANNEL_TYPE,
            "ignored a media file with an odd name {f:?}"
        );
        return;
    }
    let path = dir.join(f);
    let read = tokio::task::spawn_blocking(move || -> std::io::Result<Option<Vec<u8>>> {
        use std::io::Read;
        use std::os::unix::fs::OpenOptionsExt;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)?;
        let mut data = Vec::new();
        file.take(crate::MAX_ATTACHMENT + 1)
            .read_to_end(&mut data)?;
        Ok((data.len() as u64 <= crate::MAX_ATTACHMENT).then_some(data))
    })
    .await;
    match read {
        Ok(Ok(data)) => {
            if let Some(a) = ev.attachments.first_mut() {
                a.size = data.as_ref().map_or(a.size, |d| d.len() as u64);
                a.data = data;
            }
        }
        other => tracing::warn!(
            channel = super::CHANNEL_TYPE,
            "cannot read the media of {}: {other:?}",
            m.id
        ),
    }
}

/// Unix seconds now.
fn now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn lines_are_bounded() {
        let mut ok = BufReader::new(&b"{\"ev\":\"alive\"}\nlast"[..]);
        assert_eq!(
            read_line(&mut ok).await.unwrap().unwrap(),
            b"{\"ev\":\"alive\"}"
        );
        assert_eq!(read_line(&mut ok).await.unwrap().unwrap(), b"last");
        assert_eq!(read_line(&mut ok).await.unwrap(), None);
        let long = vec![b'x'; wire::MAX_LINE + 10];
        let mut r = BufReader::new(&long[..]);
        assert!(read_line(&mut r).await.is_err());
    }
}
