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

mod config;

pub use config::DiscordSection;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::sync::{mpsc, Notify};
use tokio_tungstenite::tungstenite::Message as WsMessage;

use crate::platform::{
    classify, scrub, split_text, url_segment, Backoff, Cursors, Multipart, Secret, Watchdog,
};
use crate::{
    Ack, AckOutcome, Address, BoxFuture, Capabilities, Channel, ChannelEvent, Click, DeliverError,
    InboundAttachment, InboundEvent, Outgoing, MAX_ATTACHMENT,
};

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

/// Gateway session state kept across reconnects (for RESUME).
#[derive(Default)]
struct Session {
    id: Option<String>,
    seq: Option<u64>,
    resume_url: Option<String>,
}

pub struct DiscordChannel {
    cfg: DiscordConfig,
    client: reqwest::Client,
    events: mpsc::Sender<ChannelEvent>,
    me: Mutex<Option<String>>,
    /// Channel id → parent id for threads (`None`: not a thread).
    parents: Mutex<HashMap<String, Option<String>>>,
    cursors: Cursors,
    inbound: mpsc::UnboundedSender<Value>,
    closed: AtomicBool,
    wake: Notify,
    /// Connections made (1 = the first); for logs.
    connects: AtomicU64,
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
        });
        tokio::spawn(ch.clone().gateway_loop());
        tokio::spawn(ch.clone().inbound_loop(rx));
        Ok(ch)
    }

    fn req(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.client
            .request(
                method,
                format!("{}{path}", self.cfg.base_url.trim_end_matches('/')),
            )
            .header("authorization", format!("Bot {}", self.cfg.token.0))
            .header("user-agent", "DiscordBot (https://github.com/pinch, 0.1)")
    }

    async fn send(&self, what: &str, req: reqwest::RequestBuilder) -> Result<Value, DeliverError> {
        let token = &self.cfg.token.0;
        let resp = req.send().await.map_err(|e| {
            DeliverError::Retryable(format!("discord {what}: {}", scrub(&e, token)))
        })?;
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        if status.is_success() {
            return Ok(serde_json::from_str(&text).unwrap_or(Value::Null));
        }
        let msg: Value = serde_json::from_str(&text).unwrap_or_default();
        let desc = msg["message"]
            .as_str()
            .unwrap_or("no message")
            .replace(token.as_str(), "<token>");
        Err(classify(
            status,
            format!("discord {what} answered {status}: {desc}"),
        ))
    }

    async fn sleep(&self, d: Duration) {
        let _ = tokio::time::timeout(d, self.wake.notified()).await;
    }

    async fn gateway_loop(self: Arc<Self>) {
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
                let v = self
                    .send(
                        "GET /gateway/bot",
                        self.req(reqwest::Method::GET, "/gateway/bot"),
                    )
                    .await
                    .map_err(|e| e.to_string())?;
                v["url"]
                    .as_str()
                    .ok_or("GET /gateway/bot gave no url")?
                    .to_owned()
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
        let hello = tokio::time::timeout(self.cfg.stall, next_json(&mut ws))
            .await
            .map_err(|_| "no HELLO")??;
        if hello["op"] != 10 {
            return Err(format!("expected HELLO, got op {}", hello["op"]));
        }
        let interval = Duration::from_millis(
            hello["d"]["heartbeat_interval"]
                .as_u64()
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
                    let text = match frame {
                        Some(Ok(WsMessage::Text(t))) => t.to_string(),
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
                    let v: Value = serde_json::from_str(&text).unwrap_or_default();
                    if let Some(s) = v["s"].as_u64() {
                        session.seq = Some(s);
                    }
                    match v["op"].as_u64() {
                        Some(0) => {
                            if matches!(v["t"].as_str(), Some("READY" | "RESUMED")) {
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
                            if v["d"] != true {
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

    async fn dispatch(&self, v: &Value, session: &mut Session, backoff: &mut Backoff) {
        let d = &v["d"];
        match v["t"].as_str() {
            Some("READY") => {
                session.id = d["session_id"].as_str().map(str::to_owned);
                session.resume_url = d["resume_gateway_url"].as_str().map(str::to_owned);
                *self.me.lock().unwrap() = d["user"]["id"].as_str().map(str::to_owned);
                backoff.connected();
                tracing::info!(
                    connection = self.connects.load(Ordering::SeqCst),
                    "discord: gateway ready"
                );
                // A fresh session replays nothing: catch up from the cursors.
                for (channel, after) in self.cursors.all() {
                    let _ = self
                        .inbound
                        .send(json!({"catch_up": channel, "after": after}));
                }
            }
            Some("RESUMED") => {
                backoff.connected();
                tracing::info!("discord: gateway session resumed");
            }
            Some("MESSAGE_CREATE") => {
                let _ = self.inbound.send(d.clone());
            }
            Some("INTERACTION_CREATE") => {
                let _ = self.inbound.send(json!({"interaction": d}));
            }
            _ => {}
        }
    }

    /// Inbound work, one at a time in arrival order (so the gateway task
    /// never waits on the host): downloads, the host's ack, the cursor.
    async fn inbound_loop(self: Arc<Self>, mut rx: mpsc::UnboundedReceiver<Value>) {
        while let Some(v) = rx.recv().await {
            if let Some(i) = v.get("interaction") {
                self.on_interaction(i).await;
            } else if let Some(channel) = v["catch_up"].as_str() {
                self.catch_up(channel, v["after"].as_str().unwrap_or("0"))
                    .await;
            } else {
                self.on_message(&v).await;
            }
        }
    }

    async fn catch_up(&self, channel: &str, after: &str) {
        let mut after = after.to_owned();
        loop {
            let path = format!("/channels/{channel}/messages?after={after}&limit=100");
            let batch = match self
                .send("GET messages", self.req(reqwest::Method::GET, &path))
                .await
            {
                Ok(Value::Array(a)) => a,
                Ok(_) => return,
                Err(e) => {
                    tracing::warn!(channel, "discord: catching up failed, messages sent while disconnected may be missing: {e}");
                    return;
                }
            };
            let n = batch.len();
            // Newest first: oldest first for the host.
            let mut batch = batch;
            batch.sort_by(|a, b| {
                snowflake_lt(
                    a["id"].as_str().unwrap_or("0"),
                    b["id"].as_str().unwrap_or("0"),
                )
            });
            for m in &batch {
                let mut m = m.clone();
                if m["channel_id"].is_null() {
                    m["channel_id"] = channel.into();
                }
                self.on_message(&m).await;
                after = m["id"].as_str().unwrap_or(&after).to_owned();
            }
            if n < 100 {
                return;
            }
        }
    }

    async fn on_message(&self, m: &Value) {
        let me = self.me.lock().unwrap().clone();
        if m["author"]["bot"] == true
            || m["author"]["id"]
                .as_str()
                .is_some_and(|a| Some(a) == me.as_deref())
            || m["webhook_id"].is_string()
        {
            return;
        }
        let Some(channel) = m["channel_id"].as_str() else {
            return;
        };
        let Some(id) = m["id"].as_str() else { return };
        let (platform_id, thread_id) = self.place(channel).await;
        let is_group = m["guild_id"].is_string();
        let me_id = me.unwrap_or_default();
        let mentioned = m["mentions"]
            .as_array()
            .is_some_and(|a| a.iter().any(|u| u["id"] == me_id.as_str()));
        let replied = m["referenced_message"]["author"]["id"] == me_id.as_str();
        let mut attachments = Vec::new();
        for a in m["attachments"].as_array().into_iter().flatten() {
            let size = a["size"].as_u64().unwrap_or_default();
            let data = match a["url"].as_str() {
                Some(url) if size <= MAX_ATTACHMENT => {
                    crate::platform::download_capped(self.client.get(url), &self.cfg.token.0)
                        .await
                        .unwrap_or_else(|e| {
                            tracing::warn!(
                        "discord: downloading an attachment failed, it is noted but not kept: {e}"
                    );
                            None
                        })
                }
                _ => None,
            };
            let name = a["filename"].as_str().unwrap_or("file").to_owned();
            attachments.push(InboundAttachment {
                name,
                mime: a["content_type"].as_str().map(str::to_owned),
                size,
                data,
            });
        }
        let text = m["content"].as_str().unwrap_or_default().to_owned();
        if text.is_empty() && attachments.is_empty() {
            return;
        }
        let ev = InboundEvent {
            channel_type: CHANNEL_TYPE.into(),
            platform_id,
            thread_id,
            message_id: id.to_owned(),
            sender_id: m["author"]["id"].as_str().unwrap_or_default().to_owned(),
            sender_name: m["author"]["global_name"]
                .as_str()
                .or(m["author"]["username"].as_str())
                .map(str::to_owned),
            text,
            is_mention: !is_group || mentioned || replied,
            is_group,
            attachments,
            webhook: None,
        };
        // Discord does not redeliver: retry the hand-over a few times.
        for attempt in 0..5u32 {
            let (ack, rx) = Ack::new();
            if self
                .events
                .send(ChannelEvent::Message(ev.clone(), ack))
                .await
                .is_err()
            {
                return;
            }
            match crate::http::within(ACK_WAIT, rx).await {
                Some(Ok(AckOutcome::Stored { .. })) => {
                    self.cursors.advance(channel, id, snowflake_newer);
                    return;
                }
                other => {
                    tracing::warn!(
                        message_id = id,
                        attempt,
                        "discord: the host did not store a message ({other:?}); retrying"
                    );
                    self.sleep(Backoff::delay(attempt)).await;
                }
            }
        }
        tracing::error!(message_id = id, "discord: a message could not be stored after 5 attempts; it will be fetched again after the next reconnect");
    }

    async fn on_interaction(&self, i: &Value) {
        // Acknowledge (type 6: update the message later, no visible reply).
        if let (Some(id), Some(tok)) = (i["id"].as_str(), i["token"].as_str()) {
            let req = self
                .req(
                    reqwest::Method::POST,
                    &format!("/interactions/{id}/{}/callback", url_segment(tok)),
                )
                .json(&json!({"type": 6}));
            if let Err(e) = self.send("interaction callback", req).await {
                tracing::debug!("discord: interaction callback failed: {e}");
            }
        }
        let (Some(channel), Some(custom)) =
            (i["channel_id"].as_str(), i["data"]["custom_id"].as_str())
        else {
            return;
        };
        let user = i["member"]["user"]["id"]
            .as_str()
            .or(i["user"]["id"].as_str())
            .unwrap_or_default()
            .to_owned();
        let (platform_id, thread_id) = self.place(channel).await;
        let click = Click {
            channel_type: CHANNEL_TYPE.into(),
            platform_id,
            thread_id,
            user_id: user,
            callback: custom.to_owned(),
        };
        let _ = self.events.send(ChannelEvent::Click(click)).await;
    }

    /// A channel id → (`platform_id`, `thread_id`): a thread is its parent
    /// channel plus the thread's id. Looked up once per channel.
    async fn place(&self, channel: &str) -> (String, Option<String>) {
        if let Some(p) = self.parents.lock().unwrap().get(channel).cloned() {
            return p.map_or_else(
                || (channel.to_owned(), None),
                |p| (p, Some(channel.to_owned())),
            );
        }
        let parent = match self
            .send(
                "GET channel",
                self.req(reqwest::Method::GET, &format!("/channels/{channel}")),
            )
            .await
        {
            Ok(c) if matches!(c["type"].as_u64(), Some(10..=12)) => {
                c["parent_id"].as_str().map(str::to_owned)
            }
            Ok(_) => None,
            Err(e) => {
                tracing::debug!(
                    "discord: channel lookup failed, treating it as a plain channel: {e}"
                );
                return (channel.to_owned(), None);
            }
        };
        self.parents
            .lock()
            .unwrap()
            .insert(channel.to_owned(), parent.clone());
        parent.map_or_else(
            || (channel.to_owned(), None),
            |p| (p, Some(channel.to_owned())),
        )
    }

    async fn post_text(
        &self,
        to: &Address,
        id: &str,
        text: &str,
        reply_to: Option<&str>,
        buttons: &[crate::Button],
    ) -> Result<Option<String>, DeliverError> {
        let target = target(to);
        let parts = split_text(text, MAX_TEXT, |_| 1);
        let n = parts.len();
        let mut first = None;
        for (i, p) in parts.into_iter().enumerate() {
            if p.is_empty() {
                continue;
            }
            let mut body = json!({"content": p, "nonce": nonce(id, i), "enforce_nonce": true, "allowed_mentions": {"parse": []}});
            if let (0, Some(r)) = (i, reply_to) {
                body["message_reference"] = json!({"message_id": r, "fail_if_not_exists": false});
            }
            if i + 1 == n && !buttons.is_empty() {
                body["components"] = components(buttons);
            }
            let r = self
                .send(
                    "POST message",
                    self.req(
                        reqwest::Method::POST,
                        &format!("/channels/{target}/messages"),
                    )
                    .json(&body),
                )
                .await?;
            first = first.or(r["id"].as_str().map(str::to_owned));
        }
        Ok(first)
    }
}

async fn next_json(ws: &mut crate::platform::Ws) -> Result<Value, String> {
    loop {
        match ws.next().await {
            Some(Ok(WsMessage::Text(t))) => {
                return serde_json::from_str(&t).map_err(|e| e.to_string())
            }
            Some(Ok(WsMessage::Close(_))) | None => {
                return Err("the gateway closed the connection".into())
            }
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(e.to_string()),
        }
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
                let r = self.send("POST file", req).await?;
                first = first.or(r["id"].as_str().map(str::to_owned));
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
            let r = self
                .send(
                    "open DM",
                    self.req(reqwest::Method::POST, "/users/@me/channels")
                        .json(&json!({"recipient_id": user})),
                )
                .await?;
            Ok(r["id"].as_str().map(str::to_owned))
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
            self.send(
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
            self.send("reaction", self.req(reqwest::Method::PUT, &path))
                .await
                .map(|_| ())
        })
    }

    fn typing<'a>(&'a self, to: &'a Address) -> BoxFuture<'a, Result<(), DeliverError>> {
        Box::pin(async move {
            self.send(
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
