//! The gateway WebSocket: HELLO → IDENTIFY or RESUME, heartbeats with an
//! ack check, READY/RESUMED, dispatches queued for the inbound task, op 7
//! and op 9, the stall watchdog; reconnects with backoff.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message as WsMessage;

use crate::platform::{json_lossy, Backoff, Watchdog};

use super::payload::{Frame, GatewayBot, Hello, Interaction, Message, Ready};
use super::{DiscordChannel, Inbound, INTENTS};

/// Gateway session state kept across reconnects (for RESUME).
#[derive(Default)]
pub(super) struct Session {
    id: Option<String>,
    seq: Option<u64>,
    resume_url: Option<String>,
}

impl DiscordChannel {
    pub(super) async fn gateway_loop(self: Arc<Self>) {
        let mut backoff = Backoff::default();
        let mut session = Session::default();
        while !self.closed.load(Ordering::SeqCst) {
            let res = self.connect_once(&mut session, &mut backoff).await;
            if self.closed.load(Ordering::SeqCst) {
                break;
            }
            let d = backoff.failed();
            match res {
                Ok(why) => tracing::info!(
                    retry_in_s = d.as_secs(),
                    "discord: gateway closed ({why}); reconnecting"
                ),
                Err(e) => tracing::warn!(retry_in_s = d.as_secs(), "discord: gateway failed: {e}"),
            }
            self.sleep(d).await;
        }
    }

    /// One gateway connection, until it ends: `Ok(reason)` for an orderly
    /// end (reconnect asked, zombie, stall), `Err` for a failure.
    async fn connect_once(
        &self,
        session: &mut Session,
        backoff: &mut Backoff,
    ) -> Result<String, String> {
        let base = match &session.resume_url {
            Some(u) if session.id.is_some() => u.clone(),
            _ => {
                let v: GatewayBot = self
                    .send(
                        "GET /gateway/bot",
                        self.req(reqwest::Method::GET, "/gateway/bot"),
                    )
                    .await
                    .map_err(|e| e.to_string())?;
                v.url.ok_or("GET /gateway/bot gave no url")?
            }
        };
        // `wss://gateway.discord.gg` → `wss://gateway.discord.gg/?v=10…`;
        // a URL with a path keeps it as is.
        let has_path = base
            .split_once("://")
            .is_some_and(|(_, rest)| rest.trim_end_matches('/').contains('/'));
        let sep = if has_path || base.ends_with('/') {
            ""
        } else {
            "/"
        };
        let url = format!("{base}{sep}?v=10&encoding=json");
        let mut ws = crate::platform::ws_connect(&url).await?;
        self.connects.fetch_add(1, Ordering::SeqCst);
        let watchdog = Watchdog::new(self.cfg.stall);
        let ready = &mut false;
        // HELLO.
        let hello = tokio::time::timeout(self.cfg.stall, next_frame(&mut ws))
            .await
            .map_err(|_| "no HELLO")??;
        if hello.op != Some(10) {
            return Err(format!("expected HELLO, got op {:?}", hello.op));
        }
        let interval = Duration::from_millis(
            hello
                .data::<Hello>()
                .and_then(|h| h.heartbeat_interval)
                .unwrap_or(41_250)
                .max(100),
        );
        let start = match (&session.id, session.seq) {
            (Some(id), Some(seq)) => {
                json!({"op": 6, "d": {"token": self.cfg.token.0, "session_id": id, "seq": seq}})
            }
            _ => {
                json!({"op": 2, "d": {"token": self.cfg.token.0, "intents": INTENTS, "properties": {"os": "linux", "browser": "pinch", "device": "pinch"}}})
            }
        };
        ws.send(WsMessage::text(start.to_string()))
            .await
            .map_err(|e| e.to_string())?;
        let mut heartbeat = tokio::time::interval_at(
            tokio::time::Instant::now() + interval.mul_f64(0.5),
            interval,
        );
        let mut acked = true;
        let opened = tokio::time::Instant::now();
        let mut check = tokio::time::interval(watchdog.tick());
        loop {
            tokio::select! {
                frame = ws.next() => {
                    let bytes = match frame {
                        Some(Ok(WsMessage::Text(t))) => t.as_bytes().to_vec(),
                        // Not asked for (no compression, JSON encoding),
                        // but read the same way: invalid UTF-8 replaced.
                        Some(Ok(WsMessage::Binary(b))) => b.to_vec(),
                        Some(Ok(WsMessage::Close(c))) => {
                            let code = c.as_ref().map(|c| u16::from(c.code)).unwrap_or(0);
                            if matches!(code, 4004 | 4010 | 4011 | 4012 | 4013 | 4014) {
                                tracing::error!(code, "discord: the gateway refused the connection (bad token, intents not enabled in the developer portal, or invalid shard); still retrying with backoff");
                            }
                            if matches!(code, 4007 | 4009) {
                                *session = Session::default();
                            }
                            return Ok(format!("closed by the server, code {code}"));
                        }
                        Some(Ok(_)) => { watchdog.progress(); continue }
                        Some(Err(e)) => return Err(e.to_string()),
                        None => return Ok("connection dropped".into()),
                    };
                    watchdog.progress();
                    let v: Frame = match json_lossy("discord: a gateway frame", &bytes) {
                        Ok(v) => v,
                        Err(e) => {
                            tracing::warn!("discord: a gateway frame that is not JSON was skipped: {e}");
                            continue;
                        }
                    };
                    if let Some(s) = v.s {
                        session.seq = Some(s);
                    }
                    match v.op {
                        Some(0) => {
                            if matches!(v.t.as_deref(), Some("READY" | "RESUMED")) {
                                *ready = true;
                            }
                            self.dispatch(&v, session, backoff).await
                        }
                        Some(1) => {
                            let hb = json!({"op": 1, "d": session.seq});
                            ws.send(WsMessage::text(hb.to_string())).await.map_err(|e| e.to_string())?;
                        }
                        Some(7) => return Ok("the server asked to reconnect".into()),
                        Some(9) => {
                            if v.d != serde_json::Value::Bool(true) {
                                *session = Session::default();
                            }
                            return Ok("invalid session".into());
                        }
                        Some(11) => acked = true,
                        _ => {}
                    }
                }
                _ = heartbeat.tick() => {
                    if !acked {
                        let _ = ws.close(None).await;
                        return Ok("no heartbeat ack (zombie connection)".into());
                    }
                    acked = false;
                    let hb = json!({"op": 1, "d": session.seq});
                    ws.send(WsMessage::text(hb.to_string())).await.map_err(|e| e.to_string())?;
                }
                _ = check.tick() => {
                    if watchdog.stalled() {
                        tracing::warn!(stall_s = watchdog.limit.as_secs_f64(), "discord: the gateway made no progress; rebuilding the connection");
                        return Ok("stalled".into());
                    }
                    // Heartbeats acked but no READY/RESUMED: no events will come.
                    if !*ready && opened.elapsed() >= watchdog.limit {
                        tracing::warn!("discord: no READY or RESUMED from the gateway; rebuilding the connection");
                        return Ok("no READY".into());
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

    async fn dispatch(&self, v: &Frame, session: &mut Session, backoff: &mut Backoff) {
        match v.t.as_deref() {
            Some("READY") => {
                let d: Ready = v.data().unwrap_or_default();
                session.id = d.session_id;
                session.resume_url = d.resume_gateway_url;
                *self.me.lock().unwrap() = d.user.map(|u| u.id);
                backoff.connected();
                tracing::info!(
                    connection = self.connects.load(Ordering::SeqCst),
                    "discord: gateway ready"
                );
                // A fresh session replays nothing: catch up from the cursors.
                for (channel, after) in self.cursors.all() {
                    let _ = self.inbound.send(Inbound::CatchUp { channel, after });
                }
            }
            Some("RESUMED") => {
                backoff.connected();
                tracing::info!("discord: gateway session resumed");
            }
            Some("MESSAGE_CREATE") => match v.data::<Message>() {
                Some(m) => {
                    let _ = self.inbound.send(Inbound::Message(m));
                }
                None => tracing::warn!("discord: a MESSAGE_CREATE pinch cannot read was skipped"),
            },
            Some("INTERACTION_CREATE") => {
                let i: Interaction = v.data().unwrap_or_default();
                let _ = self.inbound.send(Inbound::Interaction(i));
            }
            _ => {}
        }
    }
}

/// The next frame (HELLO): text, or binary read the same way.
async fn next_frame(ws: &mut crate::platform::Ws) -> Result<Frame, String> {
    loop {
        let bytes = match ws.next().await {
            Some(Ok(WsMessage::Text(t))) => t.as_bytes().to_vec(),
            Some(Ok(WsMessage::Binary(b))) => b.to_vec(),
            Some(Ok(WsMessage::Close(_))) | None => {
                return Err("the gateway closed the connection".into())
            }
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(e.to_string()),
        };
        return json_lossy("discord: a gateway frame", &bytes).map_err(|e| e.to_string());
    }
}
