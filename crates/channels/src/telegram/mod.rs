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
//! `sendDocument`; inbound files through `getFile`.
//!
//! The token is in every URL; it never reaches a log or an error (errors
//! have their URL removed and the token replaced).

mod config;

pub use config::TelegramSection;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::{mpsc, Notify, OnceCell};

use crate::platform::{classify, scrub, split_text, Backoff, Multipart, Secret, Watchdog};
use crate::{
    Ack, AckOutcome, Address, BoxFuture, Capabilities, Channel, ChannelEvent, Click, DeliverError,
    InboundAttachment, InboundEvent, Outgoing, MAX_ATTACHMENT, MAX_CALLBACK,
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

#[derive(Debug)]
struct Me {
    id: i64,
    username: String,
}

pub struct TelegramChannel {
    cfg: TelegramConfig,
    client: Mutex<reqwest::Client>,
    events: mpsc::Sender<ChannelEvent>,
    me: OnceCell<Me>,
    closed: AtomicBool,
    wake: Notify,
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
            .route(WEBHOOK_PATH, axum::routing::post(webhook))
            .with_state(self.clone())
    }

    fn url(&self, method: &str) -> String {
        format!(
            "{}/bot{}/{method}",
            self.cfg.base_url.trim_end_matches('/'),
            self.cfg.token.0
        )
    }

    fn http(&self) -> reqwest::Client {
        self.client.lock().unwrap().clone()
    }

    /// One Bot API call; the `result` on success.
    async fn call(&self, method: &str, body: Value) -> Result<Value, DeliverError> {
        let req = self.http().post(self.url(method)).json(&body);
        self.finish(method, req).await
    }

    async fn finish(
        &self,
        method: &str,
        req: reqwest::RequestBuilder,
    ) -> Result<Value, DeliverError> {
        let token = &self.cfg.token.0;
        let resp = req.send().await.map_err(|e| {
            DeliverError::Retryable(format!("telegram {method}: {}", scrub(&e, token)))
        })?;
        let status = resp.status();
        let v: Value = resp.json().await.unwrap_or_default();
        if status.is_success() && v["ok"] == true {
            return Ok(v["result"].clone());
        }
        let desc = v["description"]
            .as_str()
            .unwrap_or("no description")
            .replace(token.as_str(), "<token>");
        Err(classify(
            status,
            format!("telegram {method} answered {status}: {desc}"),
        ))
    }

    async fn me(&self) -> Result<&Me, DeliverError> {
        self.me
            .get_or_try_init(|| async {
                let r = self.call("getMe", json!({})).await?;
                Ok(Me {
                    id: r["id"].as_i64().unwrap_or_default(),
                    username: r["username"].as_str().unwrap_or_default().to_owned(),
                })
            })
            .await
    }

    async fn register_webhook(self: Arc<Self>) {
        let Some((url, secret)) = self.cfg.webhook.clone() else {
            return;
        };
        let mut backoff = Backoff::default();
        while !self.closed.load(Ordering::SeqCst) {
            let body = json!({"url": url, "secret_token": secret.0, "allowed_updates": ["message", "callback_query"]});
            match self.call("setWebhook", body).await {
                Ok(_) => {
                    tracing::info!("telegram: webhook registered");
                    return;
                }
                Err(e) => {
                    let d = backoff.failed();
                    tracing::warn!(retry_in_s = d.as_secs(), "telegram: setWebhook failed: {e}");
                    self.sleep(d).await;
                }
            }
        }
    }

    async fn sleep(&self, d: Duration) {
        let _ = tokio::time::timeout(d, self.wake.notified()).await;
    }

    /// The long-poll: fetch a batch, hand every update to the host, move
    /// the offset past the batch only when all are stored. A poll that
    /// does not answer within the stall limit is abandoned and the HTTP
    /// client rebuilt (SPEC §9.1 watchdog).
    async fn poll_loop(self: Arc<Self>) {
        let mut backoff = Backoff::default();
        let mut offset: i64 = 0;
        let mut webhook_cleared = false;
        let watchdog = Watchdog::new(self.cfg.stall);
        while !self.closed.load(Ordering::SeqCst) {
            if !webhook_cleared {
                // getUpdates is refused while a webhook is set.
                match self
                    .call("deleteWebhook", json!({"drop_pending_updates": false}))
                    .await
                {
                    Ok(_) => webhook_cleared = true,
                    Err(e) => tracing::warn!(
                        "telegram: deleteWebhook failed (getUpdates may be refused): {e}"
                    ),
                }
            }
            let timeout = self.cfg.poll_timeout();
            let body = json!({"offset": offset, "timeout": timeout, "allowed_updates": ["message", "callback_query"]});
            let req = self
                .http()
                .post(self.url("getUpdates"))
                .json(&body)
                .timeout(Duration::from_secs(timeout) + self.cfg.stall);
            let res = tokio::select! {
                r = self.finish("getUpdates", req) => Some(r),
                _ = tokio::time::sleep(watchdog.limit) => None,
                _ = self.wake.notified() => continue,
            };
            match res {
                None => {
                    tracing::warn!(
                        stall_s = watchdog.limit.as_secs_f64(),
                        "telegram: the long-poll made no progress; rebuilding the connection"
                    );
                    self.rebuild_client();
                    let d = backoff.failed();
                    self.sleep(d).await;
                }
                Some(Err(e)) => {
                    let d = backoff.failed();
                    tracing::warn!(retry_in_s = d.as_secs(), "telegram: getUpdates failed: {e}");
                    if matches!(e, DeliverError::Permanent(_)) {
                        webhook_cleared = false;
                    }
                    self.sleep(d).await;
                }
                Some(Ok(v)) => {
                    watchdog.progress();
                    backoff.progress();
                    let updates = v.as_array().cloned().unwrap_or_default();
                    let (next, all) = self.handle_batch(&updates).await;
                    offset = next.max(offset);
                    if !all {
                        // The host could not store one; fetch it again soon.
                        self.sleep(Duration::from_secs(1)).await;
                    }
                }
            }
        }
    }

    fn rebuild_client(&self) {
        if let Ok(c) = crate::platform::client(crate::platform::SEND_TIMEOUT) {
            *self.client.lock().unwrap() = c;
        }
    }

    /// Hands a batch to the host (all at once, in order) and waits for the
    /// acks: `(offset to poll from next, whether every update was stored)`.
    async fn handle_batch(&self, updates: &[Value]) -> (i64, bool) {
        let mut pending = Vec::new();
        let mut next = 0;
        for u in updates {
            let id = u["update_id"].as_i64().unwrap_or_default();
            match self.emit(u).await {
                Ok(rx) => pending.push((id, Some(rx))),
                Err(e) => {
                    tracing::warn!(
                        update_id = id,
                        "telegram: update not handed to the host: {e}"
                    );
                    pending.push((id, None));
                    break;
                }
            }
        }
        for (id, rx) in pending {
            let stored = match rx {
                None => false,
                Some(Wait::Done) => true,
                Some(Wait::Ack(rx)) => match crate::http::within(ACK_WAIT, rx).await {
                    Some(Ok(AckOutcome::Stored { .. })) => true,
                    Some(Ok(AckOutcome::Failed(why))) => {
                        tracing::warn!(update_id = id, "telegram: the host did not store an update (will fetch it again): {why}");
                        false
                    }
                    _ => false,
                },
            };
            if !stored {
                return (id, false);
            }
            next = id + 1;
        }
        (next, true)
    }

    /// Turns one update into a host event; `Wait::Done` for updates that
    /// need no commit (skipped, clicks).
    async fn emit(&self, u: &Value) -> Result<Wait, String> {
        if let Some(q) = u.get("callback_query") {
            self.on_callback(q).await;
            return Ok(Wait::Done);
        }
        let Some(m) = u.get("message") else {
            return Ok(Wait::Done);
        };
        let me = self.me().await.map_err(|e| e.to_string())?;
        let Some(ev) = self.to_event(m, me).await else {
            return Ok(Wait::Done);
        };
        let (ack, rx) = Ack::new();
        self.events
            .send(ChannelEvent::Message(ev, ack))
            .await
            .map_err(|_| "the host is shutting down".to_owned())?;
        Ok(Wait::Ack(rx))
    }

    async fn on_callback(&self, q: &Value) {
        // Answer first so the user's spinner stops, whatever happens next.
        if let Some(id) = q["id"].as_str() {
            if let Err(e) = self
                .call("answerCallbackQuery", json!({"callback_query_id": id}))
                .await
            {
                tracing::debug!("telegram: answerCallbackQuery failed: {e}");
            }
        }
        let (Some(chat), Some(data)) = (q["message"]["chat"]["id"].as_i64(), q["data"].as_str())
        else {
            return;
        };
        if q["from"]["is_bot"] == true {
            return;
        }
        let click = Click {
            channel_type: CHANNEL_TYPE.into(),
            platform_id: chat.to_string(),
            thread_id: topic(&q["message"]),
            user_id: q["from"]["id"].as_i64().unwrap_or_default().to_string(),
            callback: data.to_owned(),
        };
        let _ = self.events.send(ChannelEvent::Click(click)).await;
    }

    async fn to_event(&self, m: &Value, me: &Me) -> Option<InboundEvent> {
        let from = &m["from"];
        if from["is_bot"] == true || from["id"].as_i64() == Some(me.id) || from.is_null() {
            return None;
        }
        let chat = m["chat"]["id"].as_i64()?;
        let mid = m["message_id"].as_i64()?;
        let is_group = m["chat"]["type"].as_str() != Some("private");
        let text = m["text"]
            .as_str()
            .or(m["caption"].as_str())
            .unwrap_or_default()
            .to_owned();
        let entities = m
            .get("entities")
            .or(m.get("caption_entities"))
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let mentioned = entities.iter().any(|e| match e["type"].as_str() {
            Some("mention") => utf16_slice(&text, &e["offset"], &e["length"]).is_some_and(|s| {
                !me.username.is_empty() && s.eq_ignore_ascii_case(&format!("@{}", me.username))
            }),
            Some("text_mention") => e["user"]["id"].as_i64() == Some(me.id),
            _ => false,
        });
        let replied = m["reply_to_message"]["from"]["id"].as_i64() == Some(me.id);
        let attachments = self.attachments(m).await;
        if text.is_empty() && attachments.is_empty() {
            return None; // service messages, stickers: nothing to say
        }
        let name = [from["first_name"].as_str(), from["last_name"].as_str()]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join(" ");
        Some(InboundEvent {
            channel_type: CHANNEL_TYPE.into(),
            platform_id: chat.to_string(),
            thread_id: topic(m),
            message_id: format!("{chat}.{mid}"),
            sender_id: from["id"].as_i64().unwrap_or_default().to_string(),
            sender_name: if name.is_empty() {
                from["username"].as_str().map(str::to_owned)
            } else {
                Some(name)
            },
            text,
            is_mention: !is_group || mentioned || replied,
            is_group,
            attachments,
            webhook: None,
        })
    }

    /// Downloads the message's files (`document`, the largest `photo`,
    /// audio, video, voice) through `getFile`.
    async fn attachments(&self, m: &Value) -> Vec<InboundAttachment> {
        let mut files = Vec::new();
        for kind in ["document", "audio", "video", "voice", "animation"] {
            if let Some(f) = m.get(kind).filter(|f| f.is_object()) {
                files.push((
                    f.clone(),
                    f["file_name"]
                        .as_str()
                        .map(str::to_owned)
                        .unwrap_or_else(|| kind.to_string()),
                ));
            }
        }
        if let Some(p) = m["photo"].as_array().and_then(|a| a.last()) {
            files.push((p.clone(), "photo.jpg".into()));
        }
        let mut out = Vec::new();
        for (f, name) in files {
            let size = f["file_size"].as_u64().unwrap_or_default();
            let mime = f["mime_type"].as_str().map(str::to_owned);
            let data = if size > MAX_ATTACHMENT {
                None
            } else {
                self.download(f["file_id"].as_str().unwrap_or_default())
                    .await
            };
            let size = data.as_ref().map_or(size, |d| d.len() as u64);
            out.push(InboundAttachment {
                name,
                mime,
                size,
                data,
            });
        }
        out
    }

    async fn download(&self, file_id: &str) -> Option<Vec<u8>> {
        let r = match self.call("getFile", json!({"file_id": file_id})).await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!("telegram: getFile failed, the file is noted but not kept: {e}");
                return None;
            }
        };
        let path = r["file_path"].as_str()?;
        let url = format!(
            "{}/file/bot{}/{path}",
            self.cfg.base_url.trim_end_matches('/'),
            self.cfg.token.0
        );
        match crate::platform::download_capped(self.http().get(url), &self.cfg.token.0).await {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(
                    "telegram: downloading a file failed, it is noted but not kept: {e}"
                );
                None
            }
        }
    }

    async fn send_text(
        &self,
        to: &Address,
        text: &str,
        reply_to: Option<&str>,
        buttons: &[crate::Button],
    ) -> Result<Option<i64>, DeliverError> {
        let parts = split_text(text, MAX_TEXT, char::len_utf16);
        let n = parts.len();
        let mut first = None;
        for (i, p) in parts.into_iter().enumerate() {
            if p.is_empty() {
                continue;
            }
            let mut body = json!({"chat_id": chat_id(&to.platform_id), "text": p});
            thread(&mut body, to);
            if let (0, Some(r)) = (i, reply_to.and_then(msg_id)) {
                body["reply_parameters"] =
                    json!({"message_id": r, "allow_sending_without_reply": true});
            }
            if i + 1 == n && !buttons.is_empty() {
                body["reply_markup"] = keyboard(buttons)?;
            }
            let r = self.call("sendMessage", body).await?;
            first = first.or(r["message_id"].as_i64());
        }
        Ok(first)
    }
}

enum Wait {
    Done,
    Ack(tokio::sync::oneshot::Receiver<AckOutcome>),
}

fn topic(m: &Value) -> Option<String> {
    (m["is_topic_message"] == true)
        .then(|| m["message_thread_id"].as_i64())
        .flatten()
        .map(|t| t.to_string())
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

/// The entity's text: offsets and lengths are in UTF-16 units.
fn utf16_slice(text: &str, offset: &Value, length: &Value) -> Option<String> {
    let (o, l) = (offset.as_u64()? as usize, length.as_u64()? as usize);
    let units: Vec<u16> = text.encode_utf16().collect();
    units
        .get(o..o.checked_add(l)?)
        .map(String::from_utf16_lossy)
}

async fn webhook(
    axum::extract::State(ch): axum::extract::State<Arc<TelegramChannel>>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> axum::http::StatusCode {
    use axum::http::StatusCode;
    let Some((_, secret)) = &ch.cfg.webhook else {
        return StatusCode::NOT_FOUND;
    };
    let given = headers
        .get(SECRET_HEADER)
        .map(|v| v.as_bytes())
        .unwrap_or_default();
    if !crate::http::secret_eq(given, secret.0.as_bytes()) {
        tracing::warn!("telegram: webhook POST without the right secret token refused");
        return StatusCode::UNAUTHORIZED;
    }
    let Ok(u) = serde_json::from_slice::<Value>(&body) else {
        return StatusCode::BAD_REQUEST;
    };
    let (_, all) = ch.handle_batch(std::slice::from_ref(&u)).await;
    // 503: Telegram delivers the update again later.
    if all {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    }
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
                let (ct, body) = form.file("document", &f.name, &data).finish();
                let req = self
                    .http()
                    .post(self.url("sendDocument"))
                    .header("content-type", ct)
                    .body(body);
                let r = self.finish("sendDocument", req).await?;
                first = first.or(r["message_id"].as_i64());
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
            let id = msg_id(platform_message_id).ok_or_else(|| {
                DeliverError::Permanent(format!(
                    "{platform_message_id:?} is not a Telegram message id"
                ))
            })?;
            let text = split_text(text, MAX_TEXT, char::len_utf16).remove(0);
            self.call(
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
            let id = msg_id(platform_message_id).ok_or_else(|| {
                DeliverError::Permanent(format!(
                    "{platform_message_id:?} is not a Telegram message id"
                ))
            })?;
            let body = json!({"chat_id": chat_id(&to.platform_id), "message_id": id, "reaction": [{"type": "emoji", "emoji": emoji}]});
            self.call("setMessageReaction", body).await.map(|_| ())
        })
    }

    fn typing<'a>(&'a self, to: &'a Address) -> BoxFuture<'a, Result<(), DeliverError>> {
        Box::pin(async move {
            let mut body = json!({"chat_id": chat_id(&to.platform_id), "action": "typing"});
            thread(&mut body, to);
            self.call("sendChatAction", body).await.map(|_| ())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_entities() {
        assert_eq!(msg_id("-100123.45"), Some(45));
        assert_eq!(msg_id("45"), Some(45));
        assert_eq!(msg_id("x"), None);
        assert_eq!(chat_id("-100123"), json!(-100123));
        assert_eq!(chat_id("@chan"), json!("@chan"));
        // "😀 @pinch_bot hi": the emoji is two UTF-16 units.
        assert_eq!(
            utf16_slice("😀 @pinch_bot hi", &json!(3), &json!(10)).as_deref(),
            Some("@pinch_bot")
        );
        assert_eq!(utf16_slice("short", &json!(3), &json!(10)), None);
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

/// Telegram's entity offsets come from the platform: any offset and length
/// over any text (emoji, surrogate pairs, out of range, not numbers) give
/// the slice or `None`, never a panic.
#[cfg(test)]
mod proptests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn entity_slices_never_panic_and_are_in_range(
            text in ".{0,60}",
            offset in proptest::option::of(0u64..200),
            length in proptest::option::of(0u64..200),
            junk in "[a-z]{0,3}",
        ) {
            let units = text.encode_utf16().count() as u64;
            let o = offset.map(Value::from).unwrap_or(Value::from(junk.clone()));
            let l = length.map(Value::from).unwrap_or(Value::from(junk));
            let got = utf16_slice(&text, &o, &l);
            match (offset, length) {
                (Some(o), Some(l)) if o + l <= units => {
                    let s = got.expect("in range");
                    prop_assert_eq!(s.encode_utf16().count() as u64, l);
                }
                _ => prop_assert!(got.is_none()),
            }
        }
    }
}
