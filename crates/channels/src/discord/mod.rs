//! Discord (SPEC §9.1): the gateway WebSocket for events, REST for the
//! rest; a thin client over `reqwest` and `tokio-tungstenite`.
//!
//! Gateway: HELLO → IDENTIFY (or RESUME with the session id and last
//! sequence), heartbeats at the server's interval with an ack check (a
//! missing ack is a zombie connection: rebuilt), READY / RESUMED,
//! MESSAGE_CREATE, INTERACTION_CREATE; op 7 and op 9 handled. Reconnects
//! wait `min(1 h, 2^n s)`, reset after 5 healthy minutes; a silent socket
//! (no frame, no heartbeat ack) is rebuilt by the stall watchdog.
//!
//! No event is redelivered by Discord after a fresh IDENTIFY, so the
//! adapter keeps a per-channel cursor (the newest message id the host
//! stored, in a small JSON file) and after READY fetches `GET
//! /channels/{id}/messages?after=<cursor>` for every channel it knows: a
//! host restart loses nothing in those channels and repeats nothing (the
//! message id makes a re-fetched message one row). Messages in a channel
//! pinch has never stored anything from, sent while it was down, are not
//! fetched.
//!
//! Ids: channel → `platform_id` (a thread: its parent, and the thread's id
//! as `thread_id`), user → sender id. Mentions from the `mentions` array or
//! a reply to the bot; bots (and this one) are skipped. Outbound: messages
//! split at 2000 chars with a `nonce` (enforced: a retried POST is one
//! message), buttons as components, edits, reactions, typing, files.

mod api;
mod config;
mod gateway;
mod inbound;
mod payload;

pub use config::{DiscordSection, KIND};

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::{mpsc, Notify};

use crate::platform::{split_text, url_segment, Cursors, Multipart, Secret};
use crate::{Address, BoxFuture, Capabilities, Channel, ChannelEvent, DeliverError, Outgoing};

pub const CHANNEL_TYPE: &str = "discord";
pub const MAX_TEXT: usize = 2000;
pub const DEFAULT_BASE_URL: &str = "https://discord.com/api/v10";
/// GUILDS | GUILD_MESSAGES | DIRECT_MESSAGES | MESSAGE_CONTENT.
const INTENTS: u64 = 1 | (1 << 9) | (1 << 12) | (1 << 15);
const ACK_WAIT: Duration = Duration::from_secs(60);

#[derive(Clone, Debug)]
pub struct DiscordConfig {
    pub token: Secret,
    /// REST base (`https://discord.com/api/v10`; tests: the fake). The
    /// gateway URL comes from `GET /gateway/bot`.
    pub base_url: String,
    pub stall: Duration,
    /// Where the per-channel cursors are kept (`None`: in memory only).
    pub cursor_file: Option<std::path::PathBuf>,
}

impl DiscordConfig {
    pub fn new(token: String) -> DiscordConfig {
        DiscordConfig {
            token: Secret(token),
            base_url: DEFAULT_BASE_URL.into(),
            stall: crate::platform::DEFAULT_STALL,
            cursor_file: None,
        }
    }
}

/// Work for the inbound task, in arrival order.
enum Inbound {
    Message(payload::Message),
    Interaction(payload::Interaction),
    /// Fetch what a channel got after this message id.
    CatchUp {
        channel: String,
        after: String,
    },
}

pub struct DiscordChannel {
    cfg: DiscordConfig,
    client: reqwest::Client,
    events: mpsc::Sender<ChannelEvent>,
    me: Mutex<Option<String>>,
    /// Channel id → parent id for threads (`None`: not a thread).
    parents: Mutex<HashMap<String, Option<String>>>,
    cursors: Cursors,
    inbound: mpsc::UnboundedSender<Inbound>,
    closed: AtomicBool,
    wake: Notify,
    /// Connections made (1 = the first); for logs.
    connects: AtomicU64,
    /// Streamed replies as a draft message edited in place (decision 0048).
    drafts: crate::draft::Drafts,
}

impl DiscordChannel {
    /// Builds the adapter and starts the gateway connection (inside the
    /// tokio runtime).
    pub fn start(
        cfg: DiscordConfig,
        events: mpsc::Sender<ChannelEvent>,
    ) -> Result<Arc<DiscordChannel>, String> {
        if cfg.token.0.trim().is_empty() {
            return Err("the Discord bot token is empty".into());
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let ch = Arc::new(DiscordChannel {
            client: crate::platform::client(crate::platform::SEND_TIMEOUT)?,
            cursors: Cursors::load(cfg.cursor_file.clone()),
            cfg,
            events,
            me: Mutex::new(None),
            parents: Mutex::new(HashMap::new()),
            inbound: tx,
            closed: AtomicBool::new(false),
            wake: Notify::new(),
            connects: AtomicU64::new(0),
            drafts: Default::default(),
        });
        tokio::spawn(ch.clone().gateway_loop());
        tokio::spawn(ch.clone().inbound_loop(rx));
        Ok(ch)
    }

    pub(super) async fn sleep(&self, d: Duration) {
        let _ = tokio::time::timeout(d, self.wake.notified()).await;
    }
}

/// Where to post: the thread if there is one, else the channel.
fn target(to: &Address) -> &str {
    to.thread_id.as_deref().unwrap_or(&to.platform_id)
}

/// Discord's nonce is at most 25 characters: a digest of the row id and
/// the part number, so a retried delivery is recognised as the same.
fn nonce(id: &str, part: usize) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, format!("{id}/{part}").as_bytes());
    crate::http::hex(d.as_ref())[..25].to_owned()
}

fn components(buttons: &[crate::Button]) -> Value {
    // At most 5 buttons a row, 5 rows.
    let rows: Vec<Value> = buttons
        .chunks(5)
        .take(5)
        .map(|row| {
            let b: Vec<Value> = row.iter().map(|b| json!({"type": 2, "style": 1, "label": b.label.chars().take(80).collect::<String>(), "custom_id": b.callback})).collect();
            json!({"type": 1, "components": b})
        })
        .collect();
    Value::Array(rows)
}

/// Snowflakes compare as numbers.
fn snowflake_newer(old: &str, new: &str) -> bool {
    new.parse::<u64>().unwrap_or(0) > old.parse::<u64>().unwrap_or(0)
}

fn snowflake_lt(a: &str, b: &str) -> std::cmp::Ordering {
    a.parse::<u64>()
        .unwrap_or(0)
        .cmp(&b.parse::<u64>().unwrap_or(0))
}

impl Channel for DiscordChannel {
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
                .post_text(
                    to,
                    &msg.id,
                    &msg.text,
                    msg.in_reply_to.as_deref(),
                    &msg.buttons,
                )
                .await?;
            for (i, f) in msg.files.iter().enumerate() {
                let data = tokio::fs::read(&f.path)
                    .await
                    .map_err(|e| DeliverError::Retryable(format!("reading {}: {e}", f.name)))?;
                let payload = json!({"nonce": nonce(&msg.id, 1000 + i), "enforce_nonce": true, "attachments": [{"id": 0, "filename": f.name}]});
                let (ct, body) = Multipart::default()
                    .text("payload_json", &payload.to_string())
                    .file("files[0]", &f.name, &data)
                    .finish();
                let req = self
                    .req(
                        reqwest::Method::POST,
                        &format!("/channels/{}/messages", target(to)),
                    )
                    .header("content-type", ct)
                    .body(body);
                let r: payload::Created = self.send("POST file", req).await?;
                first = first.or(r.id);
            }
            first.ok_or_else(|| {
                DeliverError::Permanent("nothing to send: no text and no files".into())
            })
        })
    }

    fn notice<'a>(
        &'a self,
        to: &'a Address,
        text: &'a str,
    ) -> BoxFuture<'a, Result<(), DeliverError>> {
        Box::pin(async move {
            let id = crate::http::hex(
                ring::digest::digest(&ring::digest::SHA256, text.as_bytes()).as_ref(),
            );
            self.post_text(to, &format!("notice-{id}"), text, None, &[])
                .await
                .map(|_| ())
        })
    }

    fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        self.wake.notify_waiters();
    }

    fn open_dm<'a>(&'a self, user: &'a str) -> BoxFuture<'a, Result<Option<String>, DeliverError>> {
        Box::pin(async move {
            let r: payload::Created = self
                .send(
                    "open DM",
                    self.req(reqwest::Method::POST, "/users/@me/channels")
                        .json(&json!({"recipient_id": user})),
                )
                .await?;
            Ok(r.id)
        })
    }

    fn edit<'a>(
        &'a self,
        to: &'a Address,
        platform_message_id: &'a str,
        text: &'a str,
    ) -> BoxFuture<'a, Result<(), DeliverError>> {
        Box::pin(async move {
            let text = split_text(text, MAX_TEXT, |_| 1).remove(0);
            let path = format!(
                "/channels/{}/messages/{}",
                target(to),
                url_segment(platform_message_id)
            );
            self.send::<Value>(
                "edit",
                self.req(reqwest::Method::PATCH, &path)
                    .json(&json!({"content": text})),
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
            let path = format!(
                "/channels/{}/messages/{}/reactions/{}/@me",
                target(to),
                url_segment(platform_message_id),
                url_segment(emoji)
            );
            self.send::<Value>("reaction", self.req(reqwest::Method::PUT, &path))
                .await
                .map(|_| ())
        })
    }

    fn live<'a>(&'a self, to: &'a Address, live: &'a crate::Live) -> BoxFuture<'a, ()> {
        Box::pin(async move { self.drafts.live(self, to, live).await })
    }

    fn typing<'a>(&'a self, to: &'a Address) -> BoxFuture<'a, Result<(), DeliverError>> {
        Box::pin(async move {
            self.send::<Value>(
                "typing",
                self.req(
                    reqwest::Method::POST,
                    &format!("/channels/{}/typing", target(to)),
                ),
            )
            .await
            .map(|_| ())
        })
    }
}

impl crate::draft::DraftOps for DiscordChannel {
    fn draft_max(&self) -> usize {
        MAX_TEXT
    }
    fn send_draft<'a>(
        &'a self,
        to: &'a Address,
        key: &'a str,
        text: &'a str,
    ) -> BoxFuture<'a, Result<String, DeliverError>> {
        Box::pin(async move {
            self.post_text(to, &format!("draft-{key}"), text, Some(key), &[])
                .await?
                .ok_or_else(|| {
                    DeliverError::Retryable("Discord answered without a message id".into())
                })
        })
    }
    fn delete_draft<'a>(
        &'a self,
        to: &'a Address,
        id: &'a str,
    ) -> BoxFuture<'a, Result<(), DeliverError>> {
        Box::pin(async move {
            let path = format!("/channels/{}/messages/{}", target(to), url_segment(id));
            self.send::<Value>("delete", self.req(reqwest::Method::DELETE, &path))
                .await
                .map(|_| ())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nonce_is_short_and_stable() {
        assert_eq!(nonce("out-1", 0).len(), 25);
        assert_eq!(nonce("out-1", 0), nonce("out-1", 0));
        assert_ne!(nonce("out-1", 0), nonce("out-1", 1));
        assert!(snowflake_newer("99", "100"));
        assert!(!snowflake_newer("100", "99"));
        let b: Vec<crate::Button> = (0..7)
            .map(|i| crate::Button {
                label: format!("b{i}"),
                callback: format!("c{i}"),
            })
            .collect();
        let c = components(&b);
        assert_eq!(c.as_array().unwrap().len(), 2);
        assert_eq!(c[1]["components"].as_array().unwrap().len(), 2);
        assert_eq!(url_segment("👍"), "%F0%9F%91%8D");
    }
}
