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

mod config;

pub use config::SlackSection;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::sync::{mpsc, Notify};
use tokio_tungstenite::tungstenite::Message as WsMessage;

use crate::platform::{classify, scrub, split_text, Backoff, Secret, Watchdog};
use crate::{
    Ack, AckOutcome, Address, BoxFuture, Capabilities, Channel, ChannelEvent, Click, DeliverError,
    InboundAttachment, InboundEvent, Outgoing, MAX_ATTACHMENT,
};

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
    inbound: mpsc::UnboundedSender<Value>,
    /// Envelope ids to ack on the socket (sent by the inbound task once stored).
    acks_tx: mpsc::UnboundedSender<String>,
    acks_rx: tokio::sync::Mutex<mpsc::UnboundedReceiver<String>>,
    seen: Mutex<VecDeque<String>>,
    closed: AtomicBool,
    wake: Notify,
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
        });
        tokio::spawn(ch.clone().socket_loop());
        tokio::spawn(ch.clone().inbound_loop(rx));
        Ok(ch)
    }

    fn url(&self, method: &str) -> String {
        format!("{}/{method}", self.cfg.base_url.trim_end_matches('/'))
    }

    /// A Web API call with `token`; the whole answer when `ok`.
    async fn call_with(
        &self,
        token: &str,
        method: &str,
        body: Value,
    ) -> Result<Value, DeliverError> {
        let req = self
            .client
            .post(self.url(method))
            .bearer_auth(token)
            .json(&body);
        let resp = req.send().await.map_err(|e| {
            DeliverError::Retryable(format!("slack {method}: {}", scrub(&e, token)))
        })?;
        let status = resp.status();
        let v: Value = resp.json().await.unwrap_or_default();
        if status.is_success() && v["ok"] == true {
            return Ok(v);
        }
        let err = v["error"].as_str().unwrap_or("no error given").to_owned();
        let what = format!("slack {method} answered {status}: {err}");
        if !status.is_success() {
            return Err(classify(status, what));
        }
        Err(match err.as_str() {
            "ratelimited"
            | "internal_error"
            | "fatal_error"
            | "service_unavailable"
            | "request_timeout" => DeliverError::Retryable(what),
            _ => DeliverError::Permanent(what),
        })
    }

    async fn call(&self, method: &str, body: Value) -> Result<Value, DeliverError> {
        self.call_with(&self.cfg.bot_token.0, method, body).await
    }

    async fn sleep(&self, d: Duration) {
        let _ = tokio::time::timeout(d, self.wake.notified()).await;
    }

    async fn socket_loop(self: Arc<Self>) {
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
            let r = self
                .call("auth.test", json!({}))
                .await
                .map_err(|e| e.to_string())?;
            *self.me.lock().unwrap() = r["user_id"].as_str().map(str::to_owned);
        }
        let r = self
            .call_with(&self.cfg.app_token.0, "apps.connections.open", json!({}))
            .await
            .map_err(|e| e.to_string())?;
        let url = r["url"]
            .as_str()
            .ok_or("apps.connections.open gave no url")?
            .to_owned();
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
                    let text = match frame {
                        Some(Ok(WsMessage::Text(t))) => t.to_string(),
                        Some(Ok(WsMessage::Close(_))) | None => return Ok("connection closed".into()),
                        Some(Ok(_)) => { watchdog.progress(); continue }
                        Some(Err(e)) => return Err(e.to_string()),
                    };
                    watchdog.progress();
                    let v: Value = serde_json::from_str(&text).unwrap_or_default();
                    match v["type"].as_str() {
                        Some("hello") => {
                            hello = true;
                            backoff.connected();
                            tracing::info!("slack: socket mode connected");
                        }
                        Some("disconnect") => return Ok(format!("disconnect: {}", v["reason"].as_str().unwrap_or("?"))),
                        Some(_) if v["envelope_id"].is_string() => {
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
    async fn inbound_loop(self: Arc<Self>, mut rx: mpsc::UnboundedReceiver<Value>) {
        while let Some(env) = rx.recv().await {
            let id = env["envelope_id"].as_str().unwrap_or_default().to_owned();
            let stored = match env["type"].as_str() {
                Some("events_api") => self.on_event(&env["payload"]).await,
                Some("interactive") => {
                    self.on_interactive(&env["payload"]).await;
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
    async fn on_event(&self, p: &Value) -> bool {
        let event_id = p["event_id"].as_str().unwrap_or_default().to_owned();
        if !event_id.is_empty() && self.seen(&event_id) {
            return true; // a retry of something already stored
        }
        let Some(ev) = self.to_event(&p["event"]).await else {
            return true;
        };
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

    async fn to_event(&self, e: &Value) -> Option<InboundEvent> {
        if e["type"] != "message" {
            return None; // app_mention duplicates a message event
        }
        let me = self.me.lock().unwrap().clone().unwrap_or_default();
        if e["bot_id"].is_string() || e["user"].as_str().is_none_or(|u| u == me) {
            return None;
        }
        if !matches!(
            e["subtype"].as_str(),
            None | Some("file_share") | Some("thread_broadcast")
        ) {
            return None; // edits, deletions, joins
        }
        let channel = e["channel"].as_str()?;
        let ts = e["ts"].as_str()?;
        let is_group = e["channel_type"].as_str() != Some("im");
        let text = e["text"].as_str().unwrap_or_default().to_owned();
        let mentioned = !me.is_empty()
            && (mentions_in_blocks(&e["blocks"], &me) || text.contains(&format!("<@{me}>")));
        let mut attachments = Vec::new();
        for f in e["files"].as_array().into_iter().flatten() {
            let size = f["size"].as_u64().unwrap_or_default();
            let data = match f["url_private_download"]
                .as_str()
                .or(f["url_private"].as_str())
            {
                Some(url) if size <= MAX_ATTACHMENT => {
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
            attachments.push(InboundAttachment {
                name: f["name"].as_str().unwrap_or("file").to_owned(),
                mime: f["mimetype"].as_str().map(str::to_owned),
                size,
                data,
            });
        }
        if text.is_empty() && attachments.is_empty() {
            return None;
        }
        Some(InboundEvent {
            channel_type: CHANNEL_TYPE.into(),
            platform_id: channel.to_owned(),
            thread_id: e["thread_ts"].as_str().map(str::to_owned),
            message_id: format!("{channel}-{ts}"),
            sender_id: e["user"].as_str().unwrap_or_default().to_owned(),
            sender_name: e["user_profile"]["display_name"]
                .as_str()
                .filter(|n| !n.is_empty())
                .or(e["user_profile"]["real_name"].as_str())
                .map(str::to_owned),
            text,
            is_mention: !is_group || mentioned,
            is_group,
            attachments,
            webhook: None,
        })
    }

    async fn on_interactive(&self, p: &Value) {
        if p["type"] != "block_actions" {
            return;
        }
        let Some(channel) = p["channel"]["id"]
            .as_str()
            .or(p["container"]["channel_id"].as_str())
        else {
            return;
        };
        for a in p["actions"].as_array().into_iter().flatten() {
            let Some(value) = a["value"].as_str() else {
                continue;
            };
            let click = Click {
                channel_type: CHANNEL_TYPE.into(),
                platform_id: channel.to_owned(),
                thread_id: p["message"]["thread_ts"]
                    .as_str()
                    .or(p["container"]["thread_ts"].as_str())
                    .map(str::to_owned),
                user_id: p["user"]["id"].as_str().unwrap_or_default().to_owned(),
                callback: value.to_owned(),
            };
            let _ = self.events.send(ChannelEvent::Click(click)).await;
        }
    }

    async fn post_text(
        &self,
        to: &Address,
        text: &str,
        buttons: &[crate::Button],
    ) -> Result<Option<String>, DeliverError> {
        let parts = split_text(text, MAX_TEXT, |_| 1);
        let n = parts.len();
        let mut first = None;
        for (i, p) in parts.into_iter().enumerate() {
            if p.is_empty() {
                continue;
            }
            let mut body = json!({"channel": to.platform_id, "text": p, "unfurl_links": false});
            if let Some(t) = &to.thread_id {
                body["thread_ts"] = t.as_str().into();
            }
            if i + 1 == n && !buttons.is_empty() {
                body["blocks"] = blocks(&p, buttons);
            }
            let r = self.call("chat.postMessage", body).await?;
            first = first.or(r["ts"].as_str().map(str::to_owned));
        }
        Ok(first)
    }

    async fn upload(&self, to: &Address, name: &str, data: Vec<u8>) -> Result<(), DeliverError> {
        let len = data.len().to_string();
        let form = [("filename", name), ("length", len.as_str())];
        let req = self
            .client
            .post(self.url("files.getUploadURLExternal"))
            .bearer_auth(&self.cfg.bot_token.0)
            .form(&form);
        let token = &self.cfg.bot_token.0;
        let resp = req.send().await.map_err(|e| {
            DeliverError::Retryable(format!(
                "slack files.getUploadURLExternal: {}",
                scrub(&e, token)
            ))
        })?;
        let status = resp.status();
        let v: Value = resp.json().await.unwrap_or_default();
        if !status.is_success() || v["ok"] != true {
            return Err(classify(
                status,
                format!(
                    "slack files.getUploadURLExternal: {}",
                    v["error"].as_str().unwrap_or("failed")
                ),
            ));
        }
        let (Some(url), Some(file_id)) = (v["upload_url"].as_str(), v["file_id"].as_str()) else {
            return Err(DeliverError::Retryable(
                "slack files.getUploadURLExternal gave no upload_url".into(),
            ));
        };
        let up =
            self.client.post(url).body(data).send().await.map_err(|e| {
                DeliverError::Retryable(format!("slack upload: {}", scrub(&e, token)))
            })?;
        if !up.status().is_success() {
            return Err(classify(
                up.status(),
                format!("slack upload answered {}", up.status()),
            ));
        }
        let mut body =
            json!({"files": [{"id": file_id, "title": name}], "channel_id": to.platform_id});
        if let Some(t) = &to.thread_id {
            body["thread_ts"] = t.as_str().into();
        }
        self.call("files.completeUploadExternal", body)
            .await
            .map(|_| ())
    }
}

fn mentions_in_blocks(blocks: &Value, me: &str) -> bool {
    fn walk(v: &Value, me: &str) -> bool {
        match v {
            Value::Object(o) => {
                (o.get("type").and_then(Value::as_str) == Some("user")
                    && o.get("user_id").and_then(Value::as_str) == Some(me))
                    || o.values().any(|x| walk(x, me))
            }
            Value::Array(a) => a.iter().any(|x| walk(x, me)),
            _ => false,
        }
    }
    walk(blocks, me)
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
            let r = self
                .call("conversations.open", json!({"users": user}))
                .await?;
            Ok(r["channel"]["id"].as_str().map(str::to_owned))
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
            self.call(
                "chat.update",
                json!({"channel": to.platform_id, "ts": ts_of(platform_message_id), "text": text}),
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
            let name = emoji_name(emoji).ok_or_else(|| {
                DeliverError::Permanent(format!(
                    "no Slack reaction name known for {emoji:?}; use a name such as \"thumbsup\""
                ))
            })?;
            let body = json!({"channel": to.platform_id, "timestamp": ts_of(platform_message_id), "name": name});
            match self.call("reactions.add", body).await {
                Err(DeliverError::Permanent(e)) if e.ends_with("already_reacted") => Ok(()),
                r => r.map(|_| ()),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emoji_names_ids_and_mentions() {
        assert_eq!(emoji_name("👍").as_deref(), Some("+1"));
        assert_eq!(emoji_name("❤️").as_deref(), Some("heart"));
        assert_eq!(emoji_name(":eyes:").as_deref(), Some("eyes"));
        assert_eq!(emoji_name("🦀"), None);
        assert_eq!(ts_of("C1-1700000000.000100"), "1700000000.000100");
        assert_eq!(ts_of("1700000000.000100"), "1700000000.000100");
        let b = json!([{"type": "rich_text", "elements": [{"type": "rich_text_section", "elements": [{"type": "user", "user_id": "UBOT"}]}]}]);
        assert!(mentions_in_blocks(&b, "UBOT"));
        assert!(!mentions_in_blocks(&b, "UOTHER"));
    }
}

/// Slack's blocks come from the platform: any JSON, however nested, is
/// searched for a mention without a panic, and a mention of this bot
/// placed anywhere in it is found.
#[cfg(test)]
mod proptests {
    use super::*;
    use proptest::prelude::*;

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
