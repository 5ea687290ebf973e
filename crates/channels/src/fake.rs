//! A recording adapter for tests, behind the `test-support` feature (not in
//! the release binary; `pinch bench` P4 has its own channel): it has the
//! wire format of no platform; it injects inbound events and clicks as a
//! platform adapter would (waiting for the host's ack) and records
//! everything the host sends, so a test can assert on cards, buttons,
//! notices, files, edits and reactions (files are read during the
//! delivery: their paths are only valid then). Capabilities are chosen per
//! instance, so one host can run a button-less channel next to a threaded
//! one.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, Notify};

use crate::{
    Ack, AckOutcome, Address, BoxFuture, Capabilities, Channel, ChannelEvent, DeliverError,
    InboundEvent, Outgoing,
};

/// One thing the host sent through this channel.
#[derive(Clone, Debug, PartialEq)]
pub enum Sent {
    /// `files` holds each attached file's name and content, read during the call.
    Message {
        to: Address,
        msg: Outgoing,
        platform_message_id: String,
        files: Vec<(String, Vec<u8>)>,
    },
    Notice {
        to: Address,
        text: String,
    },
    Edit {
        to: Address,
        platform_message_id: String,
        text: String,
    },
    Reaction {
        to: Address,
        platform_message_id: String,
        emoji: String,
    },
    Typing {
        to: Address,
    },
}

impl Sent {
    pub fn to(&self) -> &Address {
        match self {
            Sent::Message { to, .. }
            | Sent::Notice { to, .. }
            | Sent::Edit { to, .. }
            | Sent::Reaction { to, .. }
            | Sent::Typing { to } => to,
        }
    }
    pub fn text(&self) -> &str {
        match self {
            Sent::Message { msg, .. } => &msg.text,
            Sent::Notice { text, .. } | Sent::Edit { text, .. } => text,
            Sent::Reaction { emoji, .. } => emoji,
            Sent::Typing { .. } => "",
        }
    }
}

pub struct FakeChannel {
    name: &'static str,
    caps: Capabilities,
    events: mpsc::Sender<ChannelEvent>,
    log: Mutex<Vec<Sent>>,
    changed: Notify,
    next_id: AtomicU64,
    /// Users with no reachable DM (open_dm answers None).
    no_dm: Mutex<Vec<String>>,
}

impl FakeChannel {
    pub fn new(
        name: &'static str,
        caps: Capabilities,
        events: mpsc::Sender<ChannelEvent>,
    ) -> Arc<FakeChannel> {
        Arc::new(FakeChannel {
            name,
            caps,
            events,
            log: Mutex::new(Vec::new()),
            changed: Notify::new(),
            next_id: AtomicU64::new(1),
            no_dm: Mutex::new(Vec::new()),
        })
    }

    /// Delivers an inbound event to the host and waits for its ack.
    pub async fn send(&self, ev: InboundEvent) -> AckOutcome {
        let (ack, rx) = Ack::new();
        if self
            .events
            .send(ChannelEvent::Message(ev, ack))
            .await
            .is_err()
        {
            return AckOutcome::Failed("the host is gone".into());
        }
        rx.await
            .unwrap_or_else(|_| AckOutcome::Failed("the host dropped the ack".into()))
    }

    /// A button press.
    pub async fn click(&self, c: crate::Click) {
        let _ = self.events.send(ChannelEvent::Click(c)).await;
    }

    /// Makes `open_dm(user)` answer "unreachable".
    pub fn block_dm(&self, user: &str) {
        self.no_dm.lock().unwrap().push(user.to_owned());
    }

    pub fn sent(&self) -> Vec<Sent> {
        self.log.lock().unwrap().clone()
    }

    /// Waits until something sent matches (checking what was sent before
    /// the call too); `None` after the timeout.
    pub async fn wait_for(
        &self,
        timeout: Duration,
        mut pred: impl FnMut(&Sent) -> bool,
    ) -> Option<Sent> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.changed.notified();
            if let Some(s) = self.log.lock().unwrap().iter().find(|s| pred(s)) {
                return Some(s.clone());
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return None;
            }
        }
    }

    fn record(&self, s: Sent) {
        self.log.lock().unwrap().push(s);
        self.changed.notify_waiters();
    }
}

impl Channel for FakeChannel {
    fn channel_type(&self) -> &'static str {
        self.name
    }

    fn capabilities(&self) -> Capabilities {
        self.caps
    }

    fn deliver<'a>(
        &'a self,
        to: &'a Address,
        msg: &'a Outgoing,
    ) -> BoxFuture<'a, Result<String, DeliverError>> {
        Box::pin(async move {
            let pid = format!(
                "{}-{}",
                self.name,
                self.next_id.fetch_add(1, Ordering::Relaxed)
            );
            let mut files = Vec::new();
            for f in &msg.files {
                let bytes = tokio::fs::read(&f.path)
                    .await
                    .map_err(|e| DeliverError::Retryable(format!("reading {}: {e}", f.name)))?;
                files.push((f.name.clone(), bytes));
            }
            self.record(Sent::Message {
                to: to.clone(),
                msg: msg.clone(),
                platform_message_id: pid.clone(),
                files,
            });
            Ok(pid)
        })
    }

    fn notice<'a>(
        &'a self,
        to: &'a Address,
        text: &'a str,
    ) -> BoxFuture<'a, Result<(), DeliverError>> {
        Box::pin(async move {
            self.record(Sent::Notice {
                to: to.clone(),
                text: text.to_owned(),
            });
            Ok(())
        })
    }

    fn edit<'a>(
        &'a self,
        to: &'a Address,
        platform_message_id: &'a str,
        text: &'a str,
    ) -> BoxFuture<'a, Result<(), DeliverError>> {
        Box::pin(async move {
            self.record(Sent::Edit {
                to: to.clone(),
                platform_message_id: platform_message_id.to_owned(),
                text: text.to_owned(),
            });
            Ok(())
        })
    }

    fn react<'a>(
        &'a self,
        to: &'a Address,
        platform_message_id: &'a str,
        emoji: &'a str,
    ) -> BoxFuture<'a, Result<(), DeliverError>> {
        Box::pin(async move {
            self.record(Sent::Reaction {
                to: to.clone(),
                platform_message_id: platform_message_id.to_owned(),
                emoji: emoji.to_owned(),
            });
            Ok(())
        })
    }

    fn typing<'a>(&'a self, to: &'a Address) -> BoxFuture<'a, Result<(), DeliverError>> {
        Box::pin(async move {
            self.record(Sent::Typing { to: to.clone() });
            Ok(())
        })
    }

    fn open_dm<'a>(&'a self, user: &'a str) -> BoxFuture<'a, Result<Option<String>, DeliverError>> {
        Box::pin(async move {
            if !self.caps.open_dm || self.no_dm.lock().unwrap().iter().any(|u| u == user) {
                return Ok(None);
            }
            Ok(Some(format!("dm-{user}")))
        })
    }
}
