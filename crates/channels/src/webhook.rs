//! The generic webhook (SPEC §9.2.6): `POST /hooks/<name>` with an
//! HMAC-SHA256 signature over the raw body becomes a `webhook` row; the
//! agent's replies are POSTed as JSON to the hook's callback URL.
//!
//! Wire format (ours; documented in the README; docs/decisions/0022):
//! - request headers, all signed together with the body:
//!   `X-Pinch-Timestamp: <unix seconds>`, `X-Pinch-Delivery: <id>` (1-128
//!   of `A-Z a-z 0-9 . _ -`), optional `X-Pinch-Event: <name>` (0-128 of
//!   the same), and `X-Pinch-Signature: v1=<hex HMAC-SHA256(secret,
//!   "v1:<timestamp>:<delivery>:<event>:<raw body>")>` ([`signature`]; an
//!   absent event signs as empty). The fields cannot contain `:`, so the
//!   string is unambiguous. A timestamp more than [`MAX_SKEW`] from the
//!   host's clock is refused (401): a captured request cannot be replayed
//!   later, nor with another delivery id or event (the signature breaks).
//!   Within the window, a repeat of a delivery id already stored is
//!   acknowledged again (200, the same id) without a second row (the host
//!   deduplicates by `hook-<name>-<delivery>`): that is how a sender's
//!   retry after a timeout must behave, and a replay of it changes nothing.
//!   Body-only signatures (`sha256=`, GitHub's `X-Hub-Signature-256`) are
//!   refused with the way to sign.
//! - responses: `200 {"ok":true,"id":…}` only after the row is committed;
//!   `401` missing/bad/stale signature (with the reason), `400` malformed
//!   delivery id or event, `404` unknown hook, `413` body over the hook's
//!   cap, `403` not connected to an agent (with the reason), `503` not
//!   stored (retry).
//! - replies: `POST <callback_url>` with `{"id", "hook", "text",
//!   "in_reply_to"}` (event `reply`) or `{"id", "hook", "notice"}` (event
//!   `notice`), signed the same way with the same secret (delivery = the
//!   row id, fresh timestamp per attempt), `Idempotency-Key: <id>`. 2xx =
//!   delivered; 429, 5xx, timeouts and connection errors are retried by
//!   the host; other 4xx fail the row.
//!
//! The conversation is the hook (`platform_id` = its name), the sender
//! `webhook:<name>`. Secrets are never logged.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{to_bytes, Body};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use tokio::sync::mpsc;

use crate::http::{secret_eq, sign};
use crate::{
    Ack, AckOutcome, Address, BoxFuture, Capabilities, Channel, ChannelEvent, DeliverError,
    InboundEvent, Outgoing, WebhookEvent,
};

pub const CHANNEL_TYPE: &str = "webhook";
pub const SIGNATURE_HEADER: &str = "x-pinch-signature";
pub const DELIVERY_HEADER: &str = "x-pinch-delivery";
pub const EVENT_HEADER: &str = "x-pinch-event";
pub const TIMESTAMP_HEADER: &str = "x-pinch-timestamp";
/// How far a request's timestamp may be from the host's clock.
pub const MAX_SKEW: Duration = Duration::from_secs(5 * 60);
/// Default body cap (1 MiB).
pub const DEFAULT_MAX_BODY: usize = 1 << 20;
/// Longest the host may take to commit before the POST is answered 503.
const ACK_WAIT: Duration = Duration::from_secs(30);
/// A callback POST's deadline (SPEC §6.6 send timeout).
const SEND_TIMEOUT: Duration = Duration::from_secs(30);

/// One configured hook.
#[derive(Clone)]
pub struct HookConfig {
    pub name: String,
    pub secret: String,
    /// Where replies are POSTed; `None`: replies fail (told to the agent).
    pub callback_url: Option<String>,
    pub max_body: usize,
}

impl std::fmt::Debug for HookConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HookConfig")
            .field("name", &self.name)
            .field("secret", &"<redacted>")
            .field("callback_url", &self.callback_url)
            .field("max_body", &self.max_body)
            .finish()
    }
}

/// `v1=<hex HMAC-SHA256(secret, "v1:<timestamp>:<delivery>:<event>:<body>")>`,
/// the value of `X-Pinch-Signature` both ways.
pub fn signature(
    secret: &[u8],
    timestamp: u64,
    delivery: &str,
    event: &str,
    body: &[u8],
) -> String {
    let mut msg = format!("v1:{timestamp}:{delivery}:{event}:").into_bytes();
    msg.extend_from_slice(body);
    format!("v1={}", sign(secret, &msg))
}

/// A delivery id or event name as signed: 1 (0 for an event) to 128 of
/// `A-Z a-z 0-9 . _ -`.
fn field_ok(s: &str, may_be_empty: bool) -> bool {
    (may_be_empty || !s.is_empty())
        && s.len() <= 128
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Checks a request's signed headers; `Err((status, reason))` refuses it.
pub fn verify(
    secret: &[u8],
    headers: &HeaderMap,
    body: &[u8],
    now: u64,
) -> Result<(String, String), (StatusCode, String)> {
    let unauthorized = |m: String| Err((StatusCode::UNAUTHORIZED, m));
    const HOW: &str = "sign \"v1:<X-Pinch-Timestamp>:<X-Pinch-Delivery>:<X-Pinch-Event>:<raw body>\" with HMAC-SHA256 and the hook's secret, \
                       and send X-Pinch-Signature: v1=<hex>";
    let Some(given) = header(headers, &[SIGNATURE_HEADER]) else {
        if headers.contains_key("x-hub-signature-256") {
            return unauthorized(format!("X-Hub-Signature-256 signs only the body, so a captured request could be replayed: {HOW}"));
        }
        return unauthorized(format!("missing X-Pinch-Signature header: {HOW}"));
    };
    if given.trim().starts_with("sha256=") {
        return unauthorized(format!(
            "sha256= signatures cover only the body and are no longer accepted: {HOW}"
        ));
    }
    let Some(ts) = header(headers, &[TIMESTAMP_HEADER]) else {
        return unauthorized(format!(
            "missing X-Pinch-Timestamp header (unix seconds): {HOW}"
        ));
    };
    let Ok(ts) = ts.trim().parse::<u64>() else {
        return unauthorized(format!(
            "X-Pinch-Timestamp {ts:?} is not unix seconds: {HOW}"
        ));
    };
    let Some(delivery) = header(headers, &[DELIVERY_HEADER]).map(str::trim) else {
        return unauthorized(format!(
            "missing X-Pinch-Delivery header (a unique id per event, kept on retries): {HOW}"
        ));
    };
    if !field_ok(delivery, false) {
        return Err((
            StatusCode::BAD_REQUEST,
            "X-Pinch-Delivery must be 1-128 of A-Z a-z 0-9 . _ -".into(),
        ));
    }
    let event = header(headers, &[EVENT_HEADER])
        .map(str::trim)
        .unwrap_or("");
    if !field_ok(event, true) {
        return Err((
            StatusCode::BAD_REQUEST,
            "X-Pinch-Event must be at most 128 of A-Z a-z 0-9 . _ -".into(),
        ));
    }
    let want = signature(secret, ts, delivery, event, body);
    if !secret_eq(given.trim().as_bytes(), want.as_bytes()) {
        return unauthorized(format!(
            "bad signature: X-Pinch-Signature does not match the timestamp, delivery id, event and body with this hook's secret ({HOW})"
        ));
    }
    // Checked after the signature, so only the secret's holder learns the clock.
    let skew = now.abs_diff(ts);
    if skew > MAX_SKEW.as_secs() {
        return unauthorized(format!(
            "stale X-Pinch-Timestamp: {ts} is {skew} s from this host's clock (at most {} s allowed); sign with the current time \
             and check the sender's clock",
            MAX_SKEW.as_secs()
        ));
    }
    Ok((delivery.to_owned(), event.to_owned()))
}

/// A hook name: 1–64 of `[A-Za-z0-9_-]` (it is a URL segment and a
/// conversation id).
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

pub struct WebhookChannel {
    hooks: HashMap<String, HookConfig>,
    events: mpsc::Sender<ChannelEvent>,
    client: reqwest::Client,
}

impl WebhookChannel {
    pub fn new(
        hooks: Vec<HookConfig>,
        events: mpsc::Sender<ChannelEvent>,
    ) -> Result<Arc<WebhookChannel>, String> {
        let mut map = HashMap::new();
        for h in hooks {
            if !valid_name(&h.name) {
                return Err(format!(
                    "webhook name {:?} is invalid: use 1-64 letters, digits, '-' or '_'",
                    h.name
                ));
            }
            if h.secret.len() < 16 {
                return Err(format!(
                    "webhook {:?}: the secret must be at least 16 bytes",
                    h.name
                ));
            }
            map.insert(h.name.clone(), h);
        }
        let client = reqwest::Client::builder()
            .timeout(SEND_TIMEOUT)
            .build()
            .map_err(|e| format!("building the HTTP client: {e}"))?;
        Ok(Arc::new(WebhookChannel {
            hooks: map,
            events,
            client,
        }))
    }

    /// The routes this adapter serves (`POST /hooks/{name}`).
    pub fn router(self: &Arc<Self>) -> axum::Router {
        axum::Router::new()
            .route("/hooks/{name}", post(receive))
            .with_state(self.clone())
    }

    async fn post_json(
        &self,
        hook: &HookConfig,
        id: &str,
        event: &str,
        body: serde_json::Value,
    ) -> Result<(), DeliverError> {
        let Some(url) = hook.callback_url.as_deref() else {
            return Err(DeliverError::Permanent(format!(
                "webhook {:?} has no callback_url configured, so replies cannot be sent",
                hook.name
            )));
        };
        let bytes = body.to_string().into_bytes();
        // Row ids are ours (`[A-Za-z0-9._-]`); anything else is hashed so
        // the signed string stays unambiguous.
        let delivery = if field_ok(id, false) {
            id.to_owned()
        } else {
            crate::http::hex(ring::digest::digest(&ring::digest::SHA256, id.as_bytes()).as_ref())
        };
        let ts = unix_now();
        let sig = signature(hook.secret.as_bytes(), ts, &delivery, event, &bytes);
        let res = self
            .client
            .post(url)
            .header("content-type", "application/json")
            .header(TIMESTAMP_HEADER, ts.to_string())
            .header(DELIVERY_HEADER, &delivery)
            .header(EVENT_HEADER, event)
            .header(SIGNATURE_HEADER, sig)
            .header("idempotency-key", id)
            .body(bytes)
            .send()
            .await;
        match res {
            Ok(r) if r.status().is_success() => Ok(()),
            Ok(r) => {
                let s = r.status();
                let why = format!("callback for webhook {:?} answered {s}", hook.name);
                if s.is_server_error()
                    || s == reqwest::StatusCode::TOO_MANY_REQUESTS
                    || s == reqwest::StatusCode::REQUEST_TIMEOUT
                {
                    Err(DeliverError::Retryable(why))
                } else {
                    Err(DeliverError::Permanent(why))
                }
            }
            // Connection refused, reset, timeout, TLS: may work later.
            Err(e) => Err(DeliverError::Retryable(format!(
                "callback for webhook {:?}: {}",
                hook.name,
                without_url(&e)
            ))),
        }
    }
}

/// reqwest errors print the URL, which may carry a token in its query.
fn without_url(e: &reqwest::Error) -> String {
    let mut s = e.to_string();
    if let Some(u) = e.url() {
        s = s.replace(u.as_str(), "<callback url>");
    }
    s
}

fn reply(status: StatusCode, body: serde_json::Value) -> Response {
    (
        status,
        [("content-type", "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn err(status: StatusCode, msg: &str) -> Response {
    reply(status, serde_json::json!({"ok": false, "error": msg}))
}

fn header<'a>(h: &'a HeaderMap, names: &[&str]) -> Option<&'a str> {
    names
        .iter()
        .find_map(|n| h.get(*n))
        .and_then(|v| v.to_str().ok())
}

async fn receive(
    State(ch): State<Arc<WebhookChannel>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let Some(hook) = ch.hooks.get(&name) else {
        return err(
            StatusCode::NOT_FOUND,
            &format!("no webhook named {name:?} is configured"),
        );
    };
    let bytes = match to_bytes(body, hook.max_body).await {
        Ok(b) => b,
        Err(_) => {
            return err(
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!(
                    "the body is larger than this hook's limit of {} bytes",
                    hook.max_body
                ),
            )
        }
    };
    let (delivery, event) = match verify(hook.secret.as_bytes(), &headers, &bytes, unix_now()) {
        Ok(v) => v,
        Err((status, why)) => {
            tracing::warn!(hook = %name, "webhook POST refused: {why}");
            return err(status, &why);
        }
    };
    // Invalid UTF-8 (signed as sent) becomes U+FFFD, so a JSON body with
    // one bad byte is still read as JSON.
    let body = crate::http::lossy(&format!("webhook {name}: the body"), &bytes);
    let payload = serde_json::from_str::<serde_json::Value>(&body)
        .unwrap_or_else(|_| serde_json::Value::String(body.into_owned()));
    let message_id = format!("hook-{name}-{delivery}");
    let ev = InboundEvent {
        channel_type: CHANNEL_TYPE.into(),
        platform_id: name.clone(),
        thread_id: None,
        message_id: message_id.clone(),
        sender_id: name.clone(),
        sender_name: Some(format!("webhook {name}")),
        text: if event.is_empty() {
            format!("webhook {name}")
        } else {
            format!("webhook {name}: {event}")
        },
        // A hook is addressed to pinch, like a DM.
        is_mention: true,
        is_group: false,
        attachments: Vec::new(),
        webhook: Some(WebhookEvent {
            source: name.clone(),
            event,
            payload,
        }),
        edit_of: None,
    };
    let (ack, rx) = Ack::new();
    if ch
        .events
        .send(ChannelEvent::Message(ev, ack))
        .await
        .is_err()
    {
        return err(
            StatusCode::SERVICE_UNAVAILABLE,
            "pinch is shutting down; retry later",
        );
    }
    match crate::http::within(ACK_WAIT, rx).await {
        Some(Ok(AckOutcome::Stored { routed, .. })) if routed > 0 => reply(
            StatusCode::OK,
            serde_json::json!({"ok": true, "id": message_id}),
        ),
        Some(Ok(AckOutcome::Stored { note, .. })) => err(
            StatusCode::FORBIDDEN,
            &format!(
                "not stored: {}",
                note.unwrap_or_else(|| "no agent took it".into())
            ),
        ),
        Some(Ok(AckOutcome::Failed(why))) => err(
            StatusCode::SERVICE_UNAVAILABLE,
            &format!("not stored ({why}); retry later"),
        ),
        _ => err(
            StatusCode::SERVICE_UNAVAILABLE,
            "not stored in time; retry later",
        ),
    }
}

impl Channel for WebhookChannel {
    fn channel_type(&self) -> &'static str {
        CHANNEL_TYPE
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            max_text: 100_000,
            ..Default::default()
        }
    }

    fn deliver<'a>(
        &'a self,
        to: &'a Address,
        msg: &'a Outgoing,
    ) -> BoxFuture<'a, Result<String, DeliverError>> {
        Box::pin(async move {
            let Some(hook) = self.hooks.get(&to.platform_id) else {
                return Err(DeliverError::Permanent(format!(
                    "no webhook named {:?} is configured",
                    to.platform_id
                )));
            };
            let body = serde_json::json!({"id": msg.id, "hook": hook.name, "text": msg.text, "in_reply_to": msg.in_reply_to});
            self.post_json(hook, &msg.id, "reply", body).await?;
            Ok(msg.id.clone())
        })
    }

    fn notice<'a>(
        &'a self,
        to: &'a Address,
        text: &'a str,
    ) -> BoxFuture<'a, Result<(), DeliverError>> {
        Box::pin(async move {
            let Some(hook) = self.hooks.get(&to.platform_id) else {
                return Err(DeliverError::Permanent(format!(
                    "no webhook named {:?} is configured",
                    to.platform_id
                )));
            };
            let id = format!(
                "notice-{}",
                crate::http::hex(
                    ring::digest::digest(&ring::digest::SHA256, text.as_bytes()).as_ref()
                )
            );
            self.post_json(
                hook,
                &id,
                "notice",
                serde_json::json!({"id": id, "hook": hook.name, "notice": text}),
            )
            .await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    const SECRET: &[u8] = b"0123456789abcdef";

    fn req(ts: u64, delivery: &str, event: Option<&str>, sig: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            TIMESTAMP_HEADER,
            HeaderValue::from_str(&ts.to_string()).unwrap(),
        );
        h.insert(DELIVERY_HEADER, HeaderValue::from_str(delivery).unwrap());
        if let Some(e) = event {
            h.insert(EVENT_HEADER, HeaderValue::from_str(e).unwrap());
        }
        h.insert(SIGNATURE_HEADER, HeaderValue::from_str(sig).unwrap());
        h
    }

    #[test]
    fn the_signature_binds_timestamp_delivery_event_and_body() {
        let now = 1_800_000_000;
        let body = b"{\"a\":1}";
        let sig = signature(SECRET, now, "d-1", "push", body);
        assert_eq!(
            verify(SECRET, &req(now, "d-1", Some("push"), &sig), body, now),
            Ok(("d-1".into(), "push".into()))
        );
        // The same signature with any one field changed is refused.
        for (h, b) in [
            (req(now, "d-2", Some("push"), &sig), &body[..]),
            (req(now, "d-1", Some("delete"), &sig), &body[..]),
            (req(now, "d-1", None, &sig), &body[..]),
            (req(now + 1, "d-1", Some("push"), &sig), &body[..]),
            (req(now, "d-1", Some("push"), &sig), &b"{\"a\":2}"[..]),
        ] {
            let (st, why) = verify(SECRET, &h, b, now).unwrap_err();
            assert_eq!(st, StatusCode::UNAUTHORIZED);
            assert!(why.starts_with("bad signature"), "{why}");
        }
        // Stale either way, even when correctly signed.
        for ts in [now - 301, now + 301] {
            let h = req(ts, "d-1", None, &signature(SECRET, ts, "d-1", "", body));
            let (st, why) = verify(SECRET, &h, body, now).unwrap_err();
            assert_eq!(st, StatusCode::UNAUTHORIZED);
            assert!(why.starts_with("stale X-Pinch-Timestamp"), "{why}");
        }
        assert!(verify(
            SECRET,
            &req(
                now - 300,
                "d-1",
                None,
                &signature(SECRET, now - 300, "d-1", "", body)
            ),
            body,
            now
        )
        .is_ok());
        // The old body-only scheme is refused with the way to sign.
        let old = format!("sha256={}", sign(SECRET, body));
        let why = verify(SECRET, &req(now, "d-1", None, &old), body, now)
            .unwrap_err()
            .1;
        assert!(
            why.contains("only the body") && why.contains("v1:<X-Pinch-Timestamp>"),
            "{why}"
        );
        // A delivery id with a ':' could shift the fields: refused.
        assert_eq!(
            verify(SECRET, &req(now, "a:b", None, &sig), body, now)
                .unwrap_err()
                .0,
            StatusCode::BAD_REQUEST
        );
    }
}

/// The webhook's signature check against any request (issue 16, S9): it
/// never panics, accepts exactly the documented HMAC over timestamp,
/// delivery, event and body, and refuses the same request with any one
/// byte of the body changed.
#[cfg(test)]
mod proptests {
    use super::*;
    use axum::http::HeaderValue;
    use proptest::prelude::*;

    const SECRET: &[u8] = b"0123456789abcdef";
    const NOW: u64 = 1_800_000_000;

    fn headers(fields: &[(&'static str, &[u8])]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in fields {
            if let Ok(v) = HeaderValue::from_bytes(v) {
                h.insert(*k, v);
            }
        }
        h
    }

    proptest! {
        #[test]
        fn any_headers_and_body_are_answered_without_a_panic(
            ts in proptest::collection::vec(any::<u8>(), 0..24),
            delivery in proptest::collection::vec(any::<u8>(), 0..140),
            event in proptest::collection::vec(any::<u8>(), 0..40),
            sig in proptest::collection::vec(any::<u8>(), 0..80),
            body in proptest::collection::vec(any::<u8>(), 0..200),
        ) {
            let h = headers(&[
                (TIMESTAMP_HEADER, &ts),
                (DELIVERY_HEADER, &delivery),
                (EVENT_HEADER, &event),
                (SIGNATURE_HEADER, &sig),
            ]);
            // Random bytes are never a valid signature.
            prop_assert!(verify(SECRET, &h, &body, NOW).is_err());
        }

        #[test]
        fn the_documented_hmac_is_accepted_and_a_changed_body_is_not(
            skew in -299i64..=299,
            delivery in "[A-Za-z0-9._-]{1,128}",
            event in "[A-Za-z0-9._-]{1,64}",
            body in proptest::collection::vec(any::<u8>(), 1..300),
            flip in any::<proptest::sample::Index>(),
        ) {
            let ts = NOW.checked_add_signed(skew).unwrap();
            let sig = signature(SECRET, ts, &delivery, &event, &body);
            // The documented form, computed here: v1=hex(HMAC-SHA256(secret,
            // "v1:<ts>:<delivery>:<event>:" + body)).
            let mut msg = format!("v1:{ts}:{delivery}:{event}:").into_bytes();
            msg.extend_from_slice(&body);
            let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, SECRET);
            let hex: String = ring::hmac::sign(&key, &msg).as_ref().iter().map(|b| format!("{b:02x}")).collect();
            prop_assert_eq!(&sig, &format!("v1={hex}"));
            let h = headers(&[
                (TIMESTAMP_HEADER, ts.to_string().as_bytes()),
                (DELIVERY_HEADER, delivery.as_bytes()),
                (EVENT_HEADER, event.as_bytes()),
                (SIGNATURE_HEADER, sig.as_bytes()),
            ]);
            prop_assert_eq!(verify(SECRET, &h, &body, NOW), Ok((delivery.clone(), event.clone())));
            let mut changed = body.clone();
            let i = flip.index(changed.len());
            changed[i] ^= 0x01;
            prop_assert!(verify(SECRET, &h, &changed, NOW).is_err());
        }
    }
}
