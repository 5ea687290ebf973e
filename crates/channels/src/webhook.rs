//! The generic webhook (SPEC §9.2.6): `POST /hooks/<name>` with an
//! HMAC-SHA256 signature over the raw body becomes a `webhook` row; the
//! agent's replies are POSTed as JSON to the hook's callback URL.
//!
//! Wire format (ours; documented in the README):
//! - request headers: `X-Pinch-Signature: sha256=<hex HMAC-SHA256(secret,
//!   raw body)>` (GitHub's `X-Hub-Signature-256` is accepted too),
//!   optional `X-Pinch-Delivery: <id>` (GitHub's `X-GitHub-Delivery` too;
//!   else the body's SHA-256 is the id: a retried POST is stored once),
//!   optional `X-Pinch-Event: <name>`.
//! - responses: `200 {"ok":true,"id":…}` only after the row is committed;
//!   `401` missing/bad signature, `404` unknown hook, `413` body over the
//!   hook's cap, `403` not connected to an agent (with the reason), `503`
//!   not stored (retry).
//! - replies: `POST <callback_url>` with `{"id", "hook", "text",
//!   "in_reply_to"}` (or `{"id", "hook", "notice"}`), signed the same way
//!   with the same secret, `Idempotency-Key: <id>`. 2xx = delivered; 429,
//!   5xx, timeouts and connection errors are retried by the host; other
//!   4xx fail the row.
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
        body: serde_json::Value,
    ) -> Result<(), DeliverError> {
        let Some(url) = hook.callback_url.as_deref() else {
            return Err(DeliverError::Permanent(format!(
                "webhook {:?} has no callback_url configured, so replies cannot be sent",
                hook.name
            )));
        };
        let bytes = body.to_string().into_bytes();
        let sig = format!("sha256={}", sign(hook.secret.as_bytes(), &bytes));
        let res = self
            .client
            .post(url)
            .header("content-type", "application/json")
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
    let Some(given) = header(&headers, &[SIGNATURE_HEADER, "x-hub-signature-256"]) else {
        return err(
            StatusCode::UNAUTHORIZED,
            "missing X-Pinch-Signature header: send sha256=<hex HMAC-SHA256 of the raw body, keyed with the hook's secret>",
        );
    };
    let want = format!("sha256={}", sign(hook.secret.as_bytes(), &bytes));
    if !secret_eq(given.trim().as_bytes(), want.as_bytes()) {
        tracing::warn!(hook = %name, "webhook POST with a bad signature refused");
        return err(StatusCode::UNAUTHORIZED, "bad signature: X-Pinch-Signature does not match HMAC-SHA256 of the body with this hook's secret");
    }
    let delivery = header(&headers, &[DELIVERY_HEADER, "x-github-delivery"])
        .map(|d| {
            d.chars()
                .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_' || *c == '.')
                .take(128)
                .collect::<String>()
        })
        .filter(|d| !d.is_empty())
        .unwrap_or_else(|| {
            crate::http::hex(ring::digest::digest(&ring::digest::SHA256, &bytes).as_ref())
        });
    let event = header(&headers, &[EVENT_HEADER, "x-github-event"])
        .unwrap_or("")
        .chars()
        .take(128)
        .collect::<String>();
    let payload = serde_json::from_slice::<serde_json::Value>(&bytes).unwrap_or_else(|_| {
        serde_json::Value::String(String::from_utf8_lossy(&bytes).into_owned())
    });
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
            self.post_json(hook, &msg.id, body).await?;
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
                serde_json::json!({"id": id, "hook": hook.name, "notice": text}),
            )
            .await
        })
    }
}
