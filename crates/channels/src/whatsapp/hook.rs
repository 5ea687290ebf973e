//! Inbound: Meta's webhook. The subscription check (`GET /whatsapp`) and
//! the notifications (`POST /whatsapp`, signed), every message handed to
//! the host and the POST answered 200 only once each is stored.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::http::secret_eq;
use crate::platform::json_lossy;
use crate::{Ack, AckOutcome, ChannelEvent, InboundAttachment};

use super::payload::{Inbound, Message, Notification};
use super::{now, WhatsAppChannel, ACK_WAIT, SIGNATURE_HEADER};

/// `GET /whatsapp?hub.mode=subscribe&hub.verify_token=…&hub.challenge=…`:
/// the challenge echoed (text/plain) iff the verify token matches.
pub(super) async fn verify(
    State(ch): State<Arc<WhatsAppChannel>>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let given = q.get("hub.verify_token").map(String::as_bytes);
    let ok = q.get("hub.mode").map(String::as_str) == Some("subscribe")
        && given.is_some_and(|g| secret_eq(g, ch.cfg.verify_token.0.as_bytes()));
    match q.get("hub.challenge") {
        Some(c) if ok => {
            tracing::info!("whatsapp: webhook subscription verified");
            (
                StatusCode::OK,
                [("content-type", "text/plain; charset=utf-8")],
                c.clone(),
            )
                .into_response()
        }
        _ => {
            tracing::warn!(
                "whatsapp: a webhook verification without the right verify token refused"
            );
            StatusCode::FORBIDDEN.into_response()
        }
    }
}

/// Whether `header` (`sha256=<hex>`) is the HMAC-SHA256 of `body` with
/// `secret` (ring's verify compares in constant time).
pub(super) fn signed(header: Option<&[u8]>, secret: &[u8], body: &[u8]) -> bool {
    let Some(hex) = header.and_then(|h| h.strip_prefix(b"sha256=")) else {
        return false;
    };
    let Some(tag) = unhex(hex) else {
        return false;
    };
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
    ring::hmac::verify(&key, body, &tag).is_ok()
}

fn unhex(s: &[u8]) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    let d = |c: u8| (c as char).to_digit(16).map(|v| v as u8);
    s.chunks(2)
        .map(|p| Some((d(p[0])? << 4) | d(p[1])?))
        .collect()
}

/// `POST /whatsapp`: the signature checked, every message handed over,
/// 200 only once all are stored (503: Meta delivers the POST again).
pub(super) async fn receive(
    State(ch): State<Arc<WhatsAppChannel>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> StatusCode {
    if ch.closed.load(std::sync::atomic::Ordering::SeqCst) {
        // Shutting down: Meta delivers the POST again later.
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    let sig = headers.get(SIGNATURE_HEADER).map(|v| v.as_bytes());
    if !signed(sig, ch.cfg.app_secret.0.as_bytes(), &body) {
        tracing::warn!("whatsapp: a webhook POST without a valid X-Hub-Signature-256 refused");
        return StatusCode::UNAUTHORIZED;
    }
    let n = match json_lossy::<Notification>("whatsapp webhook", &body) {
        Ok(n) => n,
        Err(e) => {
            tracing::warn!(
                "whatsapp: a signed webhook POST that is not a notification refused: {e}"
            );
            return StatusCode::BAD_REQUEST;
        }
    };
    if ch.handle(&n).await {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    }
}

impl WhatsAppChannel {
    /// Hands every message of a notification to the host and waits for
    /// the acks: whether all were stored (clicks and skipped messages need
    /// no commit).
    async fn handle(&self, n: &Notification) -> bool {
        let mut pending = Vec::new();
        for change in n.entry.iter().flat_map(|e| &e.changes) {
            let Some(v) = &change.value else { continue };
            if change.field != "messages" {
                continue;
            }
            if let Some(other) = v
                .metadata
                .as_ref()
                .and_then(|m| m.phone_number_id.as_deref())
                .filter(|id| *id != self.cfg.phone_number_id)
            {
                tracing::debug!(
                    phone_number_id = other,
                    "whatsapp: a message for another number skipped"
                );
                continue;
            }
            for raw in v.messages.iter().flatten() {
                let m: Message = match serde_json::from_value(raw.clone()) {
                    Ok(m) => m,
                    Err(e) => {
                        tracing::warn!("whatsapp: a message pinch cannot read skipped: {e}");
                        continue;
                    }
                };
                if !m.from.is_empty() {
                    // The window runs from the user's message: its own time
                    // (a redelivery may be late), never in the future.
                    let t = now();
                    self.window
                        .seen(&m.from, m.sent_at().map_or(t, |s| s.min(t)));
                }
                match m.to_inbound(v.name_of(&m.from)) {
                    Inbound::Skip(why) => {
                        tracing::debug!(id = %m.id, "whatsapp: skipped {why}");
                    }
                    Inbound::Click(c) => {
                        let _ = self.events.send(ChannelEvent::Click(c)).await;
                    }
                    Inbound::Message(mut ev, files) => {
                        for f in files {
                            let (data, size) = self.download(&f.id).await;
                            ev.attachments.push(InboundAttachment {
                                name: f.name,
                                mime: f.mime,
                                size,
                                data,
                            });
                        }
                        let (ack, rx) = Ack::new();
                        let id = ev.message_id.clone();
                        if self
                            .events
                            .send(ChannelEvent::Message(*ev, ack))
                            .await
                            .is_err()
                        {
                            tracing::warn!(
                                "whatsapp: the host is shutting down; Meta will deliver again"
                            );
                            return false;
                        }
                        pending.push((id, rx));
                    }
                }
            }
        }
        let mut all = true;
        for (id, rx) in pending {
            match crate::http::within(ACK_WAIT, rx).await {
                Some(Ok(AckOutcome::Stored { .. })) => {}
                Some(Ok(AckOutcome::Failed(why))) => {
                    tracing::warn!(%id, "whatsapp: the host did not store a message (Meta will deliver it again): {why}");
                    all = false;
                }
                _ => all = false,
            }
        }
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_are_hmac_sha256_of_the_raw_body() {
        let body = br#"{"entry":[]}"#;
        let good = format!("sha256={}", crate::http::sign(b"app-secret", body));
        assert!(signed(Some(good.as_bytes()), b"app-secret", body));
        assert!(!signed(Some(good.as_bytes()), b"other", body));
        assert!(!signed(Some(good.as_bytes()), b"app-secret", b"{}"));
        assert!(!signed(None, b"app-secret", body));
        assert!(!signed(Some(b"sha256=zz"), b"app-secret", body));
        let bare = crate::http::sign(b"app-secret", body);
        assert!(
            !signed(Some(bare.as_bytes()), b"app-secret", body),
            "the prefix is required"
        );
        assert_eq!(unhex(b"0aFf"), Some(vec![0x0a, 0xff]));
        assert_eq!(unhex(b"0"), None);
    }
}
