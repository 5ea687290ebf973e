//! P4's channel: the host's side of a chat platform and nothing else. It
//! hands the host inbound events as an adapter would (waiting for the
//! host's ack) and accepts whatever the host delivers without keeping it
//! (P4 measures routing, not replies). The recording `FakeChannel` of
//! `pinch-channels` is test scaffolding behind its `test-support` feature,
//! not in the release binary (decision 0037).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use pinch_channels::{
    Ack, AckOutcome, Address, BoxFuture, Capabilities, Channel, ChannelEvent, DeliverError,
    InboundEvent, Outgoing,
};
use tokio::sync::mpsc;

pub(super) struct BenchChannel {
    caps: Capabilities,
    events: mpsc::Sender<ChannelEvent>,
    next_id: AtomicU64,
}

impl BenchChannel {
    pub(super) fn new(caps: Capabilities, events: mpsc::Sender<ChannelEvent>) -> Arc<BenchChannel> {
        Arc::new(BenchChannel {
            caps,
            events,
            next_id: AtomicU64::new(1),
        })
    }

    /// Delivers an inbound event to the host and waits for its ack.
    pub(super) async fn send(&self, ev: InboundEvent) -> AckOutcome {
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
}

impl Channel for BenchChannel {
    fn channel_type(&self) -> &'static str {
        "bench"
    }

    fn capabilities(&self) -> Capabilities {
        self.caps
    }

    fn deliver<'a>(
        &'a self,
        _to: &'a Address,
        _msg: &'a Outgoing,
    ) -> BoxFuture<'a, Result<String, DeliverError>> {
        Box::pin(async move {
            Ok(format!(
                "bench-{}",
                self.next_id.fetch_add(1, Ordering::Relaxed)
            ))
        })
    }

    fn notice<'a>(
        &'a self,
        _to: &'a Address,
        _text: &'a str,
    ) -> BoxFuture<'a, Result<(), DeliverError>> {
        Box::pin(async { Ok(()) })
    }
}
