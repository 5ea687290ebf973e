//! Slack (SPEC §9.1) in Socket Mode: `apps.connections.open` (app-level
//! token) gives a WebSocket URL; events arrive as envelopes that are acked
//! (`{"envelope_id"}`) only after the host committed the message, so Slack
//! redelivers what a crashed host never stored. A retried envelope whose
//! event was already stored is acked without a second hand-over (and the
//! message id `<channel>-<ts>` makes any redelivery one row anyway).
//! Outbound goes through the Web API with the bot token: `chat.postMessage`
//! (`thread_ts`), `chat.update`, `reactions.add`, Block Kit buttons
//! (`block_actions` envelopes become clicks), files via
//! `files.getUploadURLExternal` + upload + `files.completeUploadExternal`,
//! and inbound files from `url_private_download` with the token.
//!
//! Mentions come from the message's rich-text blocks (a `user` element
//! naming the bot) or Slack's `<@BOTID>` markup, and a thread reply in a
//! thread the bot is in counts only with a mention; bots are skipped.
//! Slack has no typing indicator for apps: `typing` is off.

mod api;
mod config;
mod payload;
mod socket;

pub use config::{SlackSection, KIND};

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::{mpsc, Notify};

use crate::platform::{split_text, Secret};
use crate::{Address, BoxFuture, Capabilities, Channel, ChannelEvent, DeliverError, Outgoing};

pub const CHANNEL_TYPE: &str = "slack";
/// A section block's text limit (Slack truncates longer messages badly).
pub const MAX_TEXT: usize = 3000;
pub const DEFAULT_BASE_URL: &str = "https://slack.com/api";
const ACK_WAIT: Duration = Duration::from_secs(60);
/// Stored event ids remembered to recognise Slack's retries.
const SEEN: usize = 1024;

#[derive(Clone, Debug)]
pub struct SlackConfig {
    /// `xapp-…`: opens Socket Mode connections.
    pub app_token: Secret,
    /// `xoxb-…`: the Web API.
    pub bot_token: Secret,
    pub base_url: String,
    pub stall: Duration,
}

impl SlackConfig {
    pub fn new(app_token: String, bot_token: String) -> SlackConfig {
        SlackConfig {
            app_token: Secret(app_token),
            bot_token: Secret(bot_token),
            base_url: DEFAULT_BASE_URL.into(),
            stall: crate::platform::DEFAULT_STALL,
        }
    }
}

pub struct SlackChannel {
    cfg: SlackConfig,
    client: reqwest::Client,
    events: mpsc::Sender<ChannelEvent>,
    me: Mutex<Option<String>>,
    inbound: mpsc::UnboundedSender<payload::Envelope>,
    /// Envelope ids to ack on the socket (sent by the inbound task once stored).
    acks_tx: mpsc::UnboundedSender<String>,
    acks_rx: tokio::sync::Mutex<mpsc::UnboundedReceiver<String>>,
    seen: Mutex<VecDeque<String>>,
    closed: AtomicBool,
    wake: Notify,
    /// Streamed replies as a draft message edited in place (decision 0048).
    drafts: crate::draft::Drafts,
}

impl SlackChannel {
    pub fn start(
        cfg: SlackConfig,
        events: mpsc::Sender<ChannelEvent>,
    ) -> Result<Arc<SlackChannel>, String> {
        if !cfg.app_token.0.starts_with("xapp-") {
            return Err("the Slack app-level token must start with xapp- (Basic Information → App-Level Tokens, scope connections:write)".into());
        }
        if cfg.bot_token.0.trim().is_empty() {
            return Err("the Slack bot token (xoxb-…) is empty".into());
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let (acks_tx, acks_rx) = mpsc::unbounded_channel();
        let ch = Arc::new(SlackChannel {
            client: crate::platform::client(crate::platform::SEND_TIMEOUT)?,
            cfg,
            events,
            me: Mutex::new(None),
            inbound: tx,
            acks_tx,
            acks_rx: tokio::sync::Mutex::new(acks_rx),
            seen: Mutex::new(VecDeque::new()),
            closed: AtomicBool::new(false),
            wake: Notify::new(),
            drafts: Default::default(),
        });
        tokio::spawn(ch.clone().socket_loop());
        tokio::spawn(ch.clone().inbound_loop(rx));
        Ok(ch)
    }

    pub(super) async fn sleep(&self, d: Duration) {
        let _ = tokio::time::timeout(d, self.wake.notified()).await;
    }
}

fn blocks(text: &str, buttons: &[crate::Button]) -> Value {
    let elements: Vec<Value> = buttons
        .iter()
        .take(25)
        .enumerate()
        .map(|(i, b)| json!({"type": "button", "action_id": format!("pinch-{i}"), "text": {"type": "plain_text", "text": b.label.chars().take(75).collect::<String>()}, "value": b.callback}))
        .collect();
    json!([
        {"type": "section", "text": {"type": "mrkdwn", "text": text}},
        {"type": "actions", "elements": elements}
    ])
}

/// Slack names reactions (`thumbsup`), agents send characters (`👍`).
fn emoji_name(emoji: &str) -> Option<String> {
    let e = emoji.trim().trim_matches(':');
    if !e.is_empty()
        && e.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'+'))
    {
        return Some(e.to_owned());
    }
    let name = match e.trim_end_matches('\u{fe0f}') {
        "👍" => "+1",
        "👎" => "-1",
        "❤" => "heart",
        "✅" => "white_check_mark",
        "❌" => "x",
        "👀" => "eyes",
        "🎉" => "tada",
        "😂" => "joy",
        "🙏" => "pray",
        "🔥" => "fire",
        "😀" => "grinning",
        "🙂" => "slightly_smiling_face",
        "👋" => "wave",
        "🤔" => "thinking_face",
        "⏳" => "hourglass_flowing_sand",
        "💯" => "100",
        "🚀" => "rocket",
        "👌" => "ok_hand",
        _ => return None,
    };
    Some(name.to_owned())
}

/// `<channel>-<ts>` → the ts (a bare ts passes through).
fn ts_of(platform_message_id: &str) -> &str {
    platform_message_id
        .split_once('-')
        .map_or(platform_message_id, |(_, ts)| ts)
}

impl Channel for SlackChannel {
    fn channel_type(&self) -> &'static str {
        CHANNEL_TYPE
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            threads: true,
            edit: true,
            reactions: true,
            buttons: true,
            typing: false,
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
            let first = self.post_text(to, &msg.text, &msg.buttons).await?;
            for f in &msg.files {
                let data = tokio::fs::read(&f.path)
                    .await
                    .map_err(|e| DeliverError::Retryable(format!("reading {}: {e}", f.name)))?;
                self.upload(to, &f.name, data).await?;
            }
            // A files-only message has no ts of its own to edit: the upload's id is not a message.
            Ok(first.map_or_else(
                || format!("{}-files-{}", to.platform_id, msg.id),
                |ts| format!("{}-{ts}", to.platform_id),
            ))
        })
    }

    fn notice<'a>(
        &'a self,
        to: &'a Address,
        text: &'a str,
    ) -> BoxFuture<'a, Result<(), DeliverError>> {
        Box::pin(async move { self.post_text(to, text, &[]).await.map(|_| ()) })
    }

    fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        self.wake.notify_waiters();
    }

    fn open_dm<'a>(&'a self, user: &'a str) -> BoxFuture<'a, Result<Option<String>, DeliverError>> {
        Box::pin(async move {
            let r: payload::Opened = self
                .call("conversations.open", json!({"users": user}))
                .await?;
            Ok(r.channel.and_then(|c| c.id))
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
            self.call::<Value>(
                "chat.update",
                json!({"channel": to.platform_id, "ts": ts_of(platform_message_id), "text": text}),
            )
            .await
            .map(|_| ())
        })
    }

    fn live<'a>(&'a self, to: &'a Address, live: &'a crate::Live) -> BoxFuture<'a, ()> {
        Box::pin(async move { self.drafts.live(self, to, live).await })
    }

    fn react<'a>(
        &'a self,
        to: &'a Address,
        platform_message_id: &'a str,
        emoji: &'a str,
    ) -> BoxFuture<'a, Result<(), DeliverError>> {
        Box::pin(async move {
            let name = emoji_name(emoji).ok_or_else(|| {
                DeliverError::Permanent(format!(
                    "no Slack reaction name known for {emoji:?}; use a name such as \"thumbsup\""
                ))
            })?;
            let body = json!({"channel": to.platform_id, "timestamp": ts_of(platform_message_id), "name": name});
            match self.call::<Value>("reactions.add", body).await {
                Err(DeliverError::Permanent(e)) if e.ends_with("already_reacted") => Ok(()),
                r => r.map(|_| ()),
            }
        })
    }
}

impl crate::draft::DraftOps for SlackChannel {
    fn draft_max(&self) -> usize {
        MAX_TEXT
    }
    fn send_draft<'a>(
        &'a self,
        to: &'a Address,
        _key: &'a str,
        text: &'a str,
    ) -> BoxFuture<'a, Result<String, DeliverError>> {
        Box::pin(async move {
            let ts = self.post_text(to, text, &[]).await?.ok_or_else(|| {
                DeliverError::Retryable("Slack answered without a message ts".into())
            })?;
            Ok(format!("{}-{ts}", to.platform_id))
        })
    }
    fn delete_draft<'a>(
        &'a self,
        to: &'a Address,
        id: &'a str,
    ) -> BoxFuture<'a, Result<(), DeliverError>> {
        Box::pin(async move {
            self.call::<Value>(
                "chat.delete",
                json!({"channel": to.platform_id, "ts": ts_of(id)}),
            )
            .await
            .map(|_| ())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emoji_names_and_ids() {
        assert_eq!(emoji_name("👍").as_deref(), Some("+1"));
        assert_eq!(emoji_name("❤️").as_deref(), Some("heart"));
        assert_eq!(emoji_name(":eyes:").as_deref(), Some("eyes"));
        assert_eq!(emoji_name("🦀"), None);
        assert_eq!(ts_of("C1-1700000000.000100"), "1700000000.000100");
        assert_eq!(ts_of("1700000000.000100"), "1700000000.000100");
    }
}

/// Slack's blocks come from the platform: any JSON, however nested, is
/// searched for a mention without a panic, and a mention of this bot
/// placed anywhere in it is found.
#[cfg(test)]
mod proptests {
    use super::payload::mentions_in_blocks;
    use proptest::prelude::*;
    use serde_json::Value;
    fn json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            "[a-z_]{0,8}".prop_map(Value::from),
        ];
        leaf.prop_recursive(6, 64, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
                proptest::collection::btree_map(
                    "type|user_id|elements|text|[a-z]{1,4}",
                    inner,
                    0..6
                )
                .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn any_blocks_are_searched_and_a_planted_mention_is_found(
            blocks in json(),
            depth in 0usize..5,
        ) {
            // Whatever it found before, planting the mention makes it found.
            let _ = mentions_in_blocks(&blocks, "UBOT");
            let mut planted = serde_json::json!({"type": "user", "user_id": "UBOT"});
            for _ in 0..depth {
                planted = serde_json::json!({"elements": [planted]});
            }
            let with = serde_json::json!([blocks.clone(), planted]);
            prop_assert!(mentions_in_blocks(&with, "UBOT"));
            let other = serde_json::json!([{"type": "user", "user_id": "UOTHER"}]);
            prop_assert!(!mentions_in_blocks(&other, "UBOT"));
        }
    }
}
