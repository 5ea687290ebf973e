//! Telegram (SPEC §9.1) over the Bot API, a thin client on `reqwest`.
//!
//! Inbound: `getUpdates` long-poll (default), or webhook mode (`POST
//! /telegram` on the shared HTTP listener, the `X-Telegram-Bot-Api-Secret-
//! Token` header checked). Every update of a batch is handed to the host and
//! the poll `offset` moves past the batch only once each is acked as stored:
//! a restart re-fetches what was not, and the message id (`<chat>.<msg>`)
//! makes the redelivery one row. In webhook mode the POST is answered 200
//! only after the ack (else 503, and Telegram retries).
//!
//! Ids: chat → `platform_id`, forum topic → `thread_id`, user → sender id.
//! Mentions come from entities (`@botname`, `text_mention`) or a reply to
//! the bot's message, never a text regex; other bots (and this one) are
//! skipped. Outbound: `sendMessage` split at 4096 UTF-16 units, inline
//! keyboards (callback data ≤ 64 bytes; the callback query is answered),
//! `editMessageText`, `setMessageReaction`, `sendChatAction`,
//! `sendDocument` (`sendVoice` for OGG/Opus: a voice reply plays as a
//! voice note); inbound files through `getFile`.
//!
//! The token is in every URL; it never reaches a log or an error (errors
//! have their URL removed and the token replaced).

mod api;
mod config;
mod payload;
mod poll;

pub use config::{TelegramSection, KIND};

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::de::IgnoredAny;
use serde_json::{json, Value};
use tokio::sync::{mpsc, Notify, OnceCell};

use crate::platform::{split_text, Multipart, Secret};
use crate::{
    Address, BoxFuture, Capabilities, Channel, ChannelEvent, DeliverError, Outgoing, MAX_CALLBACK,
};

pub const CHANNEL_TYPE: &str = "telegram";
/// Telegram's message limit (UTF-16 code units).
pub const MAX_TEXT: usize = 4096;
pub const DEFAULT_BASE_URL: &str = "https://api.telegram.org";
pub const SECRET_HEADER: &str = "x-telegram-bot-api-secret-token";
/// The webhook route on the shared listener.
pub const WEBHOOK_PATH: &str = "/telegram";
/// How long an inbound update may wait for the host's commit.
const ACK_WAIT: Duration = Duration::from_secs(60);

#[derive(Clone, Debug)]
pub struct TelegramConfig {
    pub token: Secret,
    /// `https://api.telegram.org` (tests: the fake's address).
    pub base_url: String,
    /// Webhook mode: the public URL Telegram posts to (it must reach
    /// `/telegram` on pinch's listener) and the secret it sends back.
    pub webhook: Option<(String, Secret)>,
    /// The stall watchdog's limit (SPEC §9.1: 120 s); the long-poll timeout
    /// is kept well under it.
    pub stall: Duration,
}

impl TelegramConfig {
    pub fn new(token: String) -> TelegramConfig {
        TelegramConfig {
            token: Secret(token),
            base_url: DEFAULT_BASE_URL.into(),
            webhook: None,
            stall: crate::platform::DEFAULT_STALL,
        }
    }
    fn poll_timeout(&self) -> u64 {
        (self.stall.as_secs() / 2).clamp(1, 30)
    }
}

pub struct TelegramChannel {
    cfg: TelegramConfig,
    client: Mutex<reqwest::Client>,
    events: mpsc::Sender<ChannelEvent>,
    me: OnceCell<payload::Me>,
    closed: AtomicBool,
    wake: Notify,
    /// Streamed replies as a draft message edited in place (decision 0048).
    drafts: crate::draft::Drafts,
}

impl TelegramChannel {
    /// Builds the adapter and starts its long-poll (or, in webhook mode,
    /// registers the webhook); must be called inside the tokio runtime.
    pub fn start(
        cfg: TelegramConfig,
        events: mpsc::Sender<ChannelEvent>,
    ) -> Result<Arc<TelegramChannel>, String> {
        if cfg.token.0.is_empty() || cfg.token.0.contains('/') {
            return Err(
                "the Telegram bot token is empty or malformed (get one from @BotFather)".into(),
            );
        }
        let ch = Arc::new(TelegramChannel {
            client: Mutex::new(crate::platform::client(crate::platform::SEND_TIMEOUT)?),
            cfg,
            events,
            me: OnceCell::new(),
            closed: AtomicBool::new(false),
            wake: Notify::new(),
            drafts: Default::default(),
        });
        let run = ch.clone();
        if ch.cfg.webhook.is_some() {
            tokio::spawn(async move { run.register_webhook().await });
        } else {
            tokio::spawn(async move { run.poll_loop().await });
        }
        Ok(ch)
    }

    /// The webhook route (`POST /telegram`) for the shared listener.
    pub fn router(self: &Arc<Self>) -> axum::Router {
        axum::Router::new()
            .route(WEBHOOK_PATH, axum::routing::post(poll::webhook))
            .with_state(self.clone())
    }
}

fn chat_id(platform_id: &str) -> Value {
    platform_id
        .parse::<i64>()
        .map_or_else(|_| Value::String(platform_id.to_owned()), Value::from)
}

/// `<chat>.<msg>` (or a bare number) → the message id.
fn msg_id(platform_message_id: &str) -> Option<i64> {
    platform_message_id.rsplit('.').next()?.parse().ok()
}

/// [`msg_id`] for an edit or a reaction: a message that is not Telegram's
/// cannot be changed here.
fn target_msg_id(platform_message_id: &str) -> Result<i64, DeliverError> {
    msg_id(platform_message_id).ok_or_else(|| {
        DeliverError::Permanent(format!(
            "{platform_message_id:?} is not a Telegram message id"
        ))
    })
}

fn thread(body: &mut Value, to: &Address) {
    if let Some(t) = to.thread_id.as_deref().and_then(|t| t.parse::<i64>().ok()) {
        body["message_thread_id"] = t.into();
    }
}

fn keyboard(buttons: &[crate::Button]) -> Result<Value, DeliverError> {
    let mut rows = Vec::new();
    for b in buttons {
        if b.callback.len() > MAX_CALLBACK {
            return Err(DeliverError::Permanent(format!(
                "button {:?}: callback data is over {MAX_CALLBACK} bytes",
                b.label
            )));
        }
        rows.push(json!([{"text": b.label, "callback_data": b.callback}]));
    }
    Ok(json!({"inline_keyboard": rows}))
}

impl Channel for TelegramChannel {
    fn channel_type(&self) -> &'static str {
        CHANNEL_TYPE
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            threads: true,
            edit: true,
            reactions: true,
            buttons: true,
            typing: true,
            files: true,
            open_dm: true,
            max_text: MAX_TEXT,
        }
    }

    fn deliver<'a>(
        &'a self,
        to: &'a Address,
        msg: &'a Outgoing,
    ) -> BoxFuture<'a, Result<String, DeliverError>> {
        Box::pin(async move {
            // A streamed reply's draft becomes the reply.
            if let Some(id) = self.drafts.finish_with(self, to, msg).await {
                return Ok(id);
            }
            let mut first = self
                .send_text(to, &msg.text, msg.in_reply_to.as_deref(), &msg.buttons)
                .await?;
            for f in &msg.files {
                let data = tokio::fs::read(&f.path)
                    .await
                    .map_err(|e| DeliverError::Retryable(format!("reading {}: {e}", f.name)))?;
                let mut form = Multipart::default().text("chat_id", &to.platform_id);
                if let Some(t) = &to.thread_id {
                    form = form.text("message_thread_id", t);
                }
                // OGG/Opus (a voice reply) plays as a voice note.
                let (method, field) = if is_opus(&data) {
                    ("sendVoice", "voice")
                } else {
                    ("sendDocument", "document")
                };
                let (ct, body) = form.file(field, &f.name, &data).finish();
                let req = self
                    .http()
                    .post(self.url(method))
                    .header("content-type", ct)
                    .body(body);
                let r: payload::Sent = self.finish(method, req).await?;
                first = first.or(r.message_id);
            }
            let id = first.ok_or_else(|| {
                DeliverError::Permanent("nothing to send: no text and no files".into())
            })?;
            Ok(format!("{}.{id}", to.platform_id))
        })
    }

    fn notice<'a>(
        &'a self,
        to: &'a Address,
        text: &'a str,
    ) -> BoxFuture<'a, Result<(), DeliverError>> {
        Box::pin(async move { self.send_text(to, text, None, &[]).await.map(|_| ()) })
    }

    fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        self.wake.notify_waiters();
    }

    fn open_dm<'a>(&'a self, user: &'a str) -> BoxFuture<'a, Result<Option<String>, DeliverError>> {
        // A private chat's id is the user's id (the user must have started the bot).
        Box::pin(async move { Ok(Some(user.to_owned())) })
    }

    fn edit<'a>(
        &'a self,
        to: &'a Address,
        platform_message_id: &'a str,
        text: &'a str,
    ) -> BoxFuture<'a, Result<(), DeliverError>> {
        Box::pin(async move {
            let id = target_msg_id(platform_message_id)?;
            let text = split_text(text, MAX_TEXT, char::len_utf16).remove(0);
            self.call::<IgnoredAny>(
                "editMessageText",
                json!({"chat_id": chat_id(&to.platform_id), "message_id": id, "text": text}),
            )
            .await
            .map(|_| ())
        })
    }

    fn react<'a>(
        &'a self,
        to: &'a Address,
        platform_message_id: &'a str,
        emoji: &'a str,
    ) -> BoxFuture<'a, Result<(), DeliverError>> {
        Box::pin(async move {
            let id = target_msg_id(platform_message_id)?;
            let body = json!({"chat_id": chat_id(&to.platform_id), "message_id": id, "reaction": [{"type": "emoji", "emoji": emoji}]});
            self.call::<IgnoredAny>("setMessageReaction", body)
                .await
                .map(|_| ())
        })
    }

    fn live<'a>(&'a self, to: &'a Address, live: &'a crate::Live) -> BoxFuture<'a, ()> {
        Box::pin(async move { self.drafts.live(self, to, live).await })
    }

    fn typing<'a>(&'a self, to: &'a Address) -> BoxFuture<'a, Result<(), DeliverError>> {
        Box::pin(async move {
            let mut body = json!({"chat_id": chat_id(&to.platform_id), "action": "typing"});
            thread(&mut body, to);
            self.call::<IgnoredAny>("sendChatAction", body)
                .await
                .map(|_| ())
        })
    }
}

impl crate::draft::DraftOps for TelegramChannel {
    fn draft_max(&self) -> usize {
        // 4096 UTF-16 units; a char is at most two.
        MAX_TEXT / 2
    }
    fn send_draft<'a>(
        &'a self,
        to: &'a Address,
        key: &'a str,
        text: &'a str,
    ) -> BoxFuture<'a, Result<String, DeliverError>> {
        Box::pin(async move {
            let id = self
                .send_text(to, text, Some(key), &[])
                .await?
                .ok_or_else(|| {
                    DeliverError::Retryable("Telegram answered without a message id".into())
                })?;
            Ok(format!("{}.{id}", to.platform_id))
        })
    }
    fn delete_draft<'a>(
        &'a self,
        to: &'a Address,
        id: &'a str,
    ) -> BoxFuture<'a, Result<(), DeliverError>> {
        Box::pin(async move {
            let id = target_msg_id(id)?;
            self.call::<IgnoredAny>(
                "deleteMessage",
                json!({"chat_id": chat_id(&to.platform_id), "message_id": id}),
            )
            .await
            .map(|_| ())
        })
    }
}

/// OGG audio in the Opus codec: what Telegram plays as a voice note.
fn is_opus(data: &[u8]) -> bool {
    data.starts_with(b"OggS")
        && data[..data.len().min(128)]
            .windows(8)
            .any(|w| w == b"OpusHead")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_keyboards() {
        assert_eq!(msg_id("-100123.45"), Some(45));
        assert_eq!(msg_id("45"), Some(45));
        assert_eq!(msg_id("x"), None);
        assert_eq!(chat_id("-100123"), json!(-100123));
        assert_eq!(chat_id("@chan"), json!("@chan"));
        let big = crate::Button {
            label: "x".into(),
            callback: "y".repeat(65),
        };
        assert!(keyboard(&[big]).is_err());
    }

    #[test]
    fn the_token_is_never_in_debug_output() {
        let c = TelegramConfig::new("123456:SECRET-token".into());
        assert!(!format!("{c:?}").contains("SECRET"));
    }
}
