//! Socket Mode: `auth.test` once, `apps.connections.open`, the WebSocket
//! (hello, disconnect, envelopes queued for the inbound task, acks sent
//! once the host stored the event, pings, the stall watchdog), reconnects
//! with backoff; envelopes handled one at a time in arrival order.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message as WsMessage;

use crate::platform::{json_lossy, Backoff, Watchdog};
use crate::{Ack, AckOutcome, ChannelEvent, Click, InboundAttachment, MAX_ATTACHMENT};

use super::payload::{AuthTest, ConnectionsOpen, Envelope, EventCallback, File, Interactive};
use super::{SlackChannel, ACK_WAIT, CHANNEL_TYPE, SEEN};

impl SlackChannel {
    pub(super) async fn socket_loop(self: Arc<Self>) {
        let mut backoff = Backoff::default();
        while !self.closed.load(Ordering::SeqCst) {
            let res = self.connect_once(&mut backoff).await;
            if self.closed.load(Ordering::SeqCst) {
                break;
            }
            let d = backoff.failed();
            match res {
                Ok(why) => tracing::info!(
                    retry_in_s = d.as_secs(),
                    "slack: socket closed ({why}); reconnecting"
                ),
                Err(e) => tracing::warn!(retry_in_s = d.as_secs(), "slack: socket failed: {e}"),
            }
            self.sleep(d).await;
        }
    }

    async fn connect_once(&self, backoff: &mut Backoff) -> Result<String, String> {
        if self.me.lock().unwrap().is_none() {
            let r: AuthTest = self
                .call("auth.test", json!({}))
                .await
                .map_err(|e| e.to_string())?;
            *self.me.lock().unwrap() = r.user_id;
        }
        let r: ConnectionsOpen = self
            .call_with(&self.cfg.app_token.0, "apps.connections.open", json!({}))
            .await
            .map_err(|e| e.to_string())?;
        let url = r.url.ok_or("apps.connections.open gave no url")?;
        let mut ws = crate::platform::ws_connect(&url).await?;
        let watchdog = Watchdog::new(self.cfg.stall);
        let mut check = tokio::time::interval(watchdog.tick());
        // Ask for a pong now and then so a quiet but healthy link shows progress.
        let mut ping = tokio::time::interval(watchdog.limit / 3);
        let mut acks = self.acks_rx.lock().await;
        let mut hello = false;
        let opened = tokio::time::Instant::now();
        loop {
            tokio::select! {
                frame = ws.next() => {
                    let bytes = match frame {
                        Some(Ok(WsMessage::Text(t))) => t.as_bytes().to_vec(),
                        // Not sent by Slack today, but read the same way:
                        // invalid UTF-8 replaced.
                        Some(Ok(WsMessage::Binary(b))) => b.to_vec(),
                        Some(Ok(WsMessage::Close(_))) | None => return Ok("connection closed".into()),
                        Some(Ok(_)) => { watchdog.progress(); continue }
                        Some(Err(e)) => return Err(e.to_string()),
                    };
                    watchdog.progress();
                    let v: Envelope = match json_lossy("slack: a Socket Mode frame", &bytes) {
                        Ok(v) => v,
                        Err(e) => {
                            tracing::warn!("slack: a Socket Mode frame that is not JSON was skipped: {e}");
                            continue;
                        }
                    };
                    match v.kind.as_deref() {
                        Some("hello") => {
                            hello = true;
                            backoff.connected();
                            tracing::info!("slack: socket mode connected");
                        }
                        Some("disconnect") => return Ok(format!("disconnect: {}", v.reason.as_deref().unwrap_or("?"))),
                        Some(_) if v.envelope_id.is_some() => {
                            let _ = self.inbound.send(v);
                        }
                        _ => {}
                    }
                }
                Some(id) = acks.recv() => {
                    ws.send(WsMessage::text(json!({"envelope_id": id}).to_string())).await.map_err(|e| e.to_string())?;
                }
                _ = ping.tick() => {
                    let _ = ws.send(WsMessage::Ping(Vec::new().into())).await;
                }
                _ = check.tick() => {
                    if watchdog.stalled() || (!hello && opened.elapsed() >= watchdog.limit) {
                        tracing::warn!(stall_s = watchdog.limit.as_secs_f64(), "slack: the socket made no progress; rebuilding the connection");
                        return Ok("stalled".into());
                    }
                }
                _ = self.wake.notified() => {
                    if self.closed.load(Ordering::SeqCst) {
                        let _ = ws.close(None).await;
                        return Ok("closing".into());
                    }
                }
            }
        }
    }

    fn seen(&self, event_id: &str) -> bool {
        self.seen.lock().unwrap().iter().any(|e| e == event_id)
    }

    fn remember(&self, event_id: &str) {
        let mut s = self.seen.lock().unwrap();
        s.push_back(event_id.to_owned());
        while s.len() > SEEN {
            s.pop_front();
        }
    }

    /// Envelopes, one at a time in arrival order: hand over, wait for the
    /// commit, then ack.
    pub(super) async fn inbound_loop(self: Arc<Self>, mut rx: mpsc::UnboundedReceiver<Envelope>) {
        while let Some(env) = rx.recv().await {
            let id = env.envelope_id.clone().unwrap_or_default();
            let stored = match env.kind.as_deref() {
                Some("events_api") => self.on_event(env.payload()).await,
                Some("interactive") => {
                    self.on_interactive(env.payload()).await;
                    true
                }
                // Slash commands and anything newer: acked, not handled.
                _ => true,
            };
            if stored {
                let _ = self.acks_tx.send(id);
            }
        }
    }

    /// `true` when the event may be acked (stored, or nothing to store).
    async fn on_event(&self, p: EventCallback) -> bool {
        let event_id = p.event_id.unwrap_or_default();
        if !event_id.is_empty() && self.seen(&event_id) {
            return true; // a retry of something already stored
        }
        let me = self.me.lock().unwrap().clone().unwrap_or_default();
        let Some((mut ev, files)) = p.event.and_then(|e| e.to_event(&me)) else {
            return true;
        };
        for f in files {
            ev.attachments.push(self.attachment(f).await);
        }
        let (ack, rx) = Ack::new();
        if self
            .events
            .send(ChannelEvent::Message(ev, ack))
            .await
            .is_err()
        {
            return false;
        }
        match crate::http::within(ACK_WAIT, rx).await {
            Some(Ok(AckOutcome::Stored { .. })) => {
                self.remember(&event_id);
                true
            }
            other => {
                tracing::warn!(event_id, "slack: the host did not store an event; leaving it unacked so Slack retries: {other:?}");
                false
            }
        }
    }

    /// Downloads one file with the bot token (capped).
    async fn attachment(&self, f: File) -> InboundAttachment {
        let data = match f.url_private_download.as_ref().or(f.url_private.as_ref()) {
            Some(url) if f.size <= MAX_ATTACHMENT => {
                let req = self.client.get(url).bearer_auth(&self.cfg.bot_token.0);
                crate::platform::download_capped(req, &self.cfg.bot_token.0)
                    .await
                    .unwrap_or_else(|e| {
                        tracing::warn!(
                            "slack: downloading a file failed, it is noted but not kept: {e}"
                        );
                        None
                    })
            }
            _ => None,
        };
        InboundAttachment {
            name: f.name.unwrap_or_else(|| "file".into()),
            mime: f.mimetype,
            size: f.size,
            data,
        }
    }

    async fn on_interactive(&self, p: Interactive) {
        if p.kind != "block_actions" {
            return;
        }
        let Some((channel, thread_id)) = p.place() else {
            return;
        };
        let user_id = p
            .user
            .as_ref()
            .and_then(|u| u.id.clone())
            .unwrap_or_default();
        for a in p.actions.iter().flatten() {
            let Some(value) = &a.value else {
                continue;
            };
            let click = Click {
                channel_type: CHANNEL_TYPE.into(),
                platform_id: channel.clone(),
                thread_id: thread_id.clone(),
                user_id: user_id.clone(),
                callback: value.clone(),
            };
            let _ = self.events.send(ChannelEvent::Click(click)).await;
        }
    }
}
