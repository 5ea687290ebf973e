//! Discord end to end: the real `pinch host` daemon configured with
//! `[discord] base_url` pointing at a fake Discord in this file (axum: the
//! REST endpoints pinch uses and the gateway WebSocket with HELLO,
//! IDENTIFY/READY, RESUME/RESUMED with replay, heartbeats and acks), real
//! runners with the scripted provider. A message in and the reply out, an
//! edit, a reaction, a button click answering an agent question, a file
//! each way, a long reply split at 2000, mentions in a guild, bots
//! ignored; a dropped gateway resumed; a silent gateway (no heartbeat
//! acks) rebuilt; a host killed with SIGKILL catching up from its cursor
//! without losing or repeating a message.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::common::platform::{
    self, daemon, delivered, rows, wait_found, Calls, Drops, Platform, Setup, BAD_UTF8,
    SHARED_RULES, WAIT,
};
use crate::common::*;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use serde_json::{json, Value};

const TOKEN: &str = "discord-TEST-token-xyz";
const BOT: &str = "900";
const USER: &str = "42";

fn script() -> String {
    format!(
        r#"{SHARED_RULES}
[[rule]]
contains = "long one"
reply = "{long}"

[[rule]]
reply = "hi from the agent"
"#,
        long = "x".repeat(4500)
    )
}

struct Live(tokio::sync::broadcast::Sender<(u64, Value)>);

impl Default for Live {
    fn default() -> Self {
        Live(tokio::sync::broadcast::channel(256).0)
    }
}

/// The fake Discord.
#[derive(Default)]
struct Fake {
    addr: Mutex<String>,
    /// Every dispatch sent (seq, event) — replayed on RESUME.
    dispatched: Mutex<Vec<(u64, Value)>>,
    seq: AtomicU64,
    /// User messages per channel (for `GET /channels/{id}/messages`).
    history: Mutex<Vec<Value>>,
    /// REST calls: (method path, body).
    calls: Calls,
    /// Gateway ops received (IDENTIFY = 2, RESUME = 6).
    ops: Mutex<Vec<u64>>,
    connections: AtomicU64,
    /// Gateway connections open right now.
    open: Arc<AtomicU64>,
    live: Live,
    /// Close every open gateway connection.
    drops: Drops,
    /// Stop answering heartbeats and sending anything (a dead link).
    silent: AtomicBool,
    next_id: AtomicU64,
    nonces: Mutex<std::collections::HashMap<String, Value>>,
    /// Attachments the suite's world sent (name → bytes), at `/att/{name}`.
    files: Mutex<std::collections::HashMap<String, Vec<u8>>>,
}

impl Fake {
    fn new() -> Arc<Fake> {
        Arc::new(Fake {
            next_id: AtomicU64::new(10_000),
            ..Default::default()
        })
    }
    fn dispatch(&self, t: &str, d: Value) {
        let s = self.seq.fetch_add(1, Ordering::SeqCst) + 1;
        let ev = json!({"op": 0, "t": t, "s": s, "d": d});
        self.dispatched.lock().unwrap().push((s, ev.clone()));
        let _ = self.live.0.send((s, ev));
    }
    fn user_message(&self, channel: &str, id: u64, text: &str, extra: Value) -> Value {
        let mut m = json!({"id": id.to_string(), "channel_id": channel, "content": text, "author": {"id": USER, "username": "ann"}, "mentions": [], "attachments": []});
        for (k, v) in extra.as_object().cloned().unwrap_or_default() {
            m[k] = v;
        }
        self.history.lock().unwrap().push(m.clone());
        self.dispatch("MESSAGE_CREATE", m.clone());
        m
    }
    fn calls(&self, prefix: &str) -> Vec<(String, Value)> {
        self.calls.named(|p| p.starts_with(prefix))
    }
    fn posts(&self) -> Vec<Value> {
        self.calls("POST /channels/")
            .into_iter()
            .filter(|(p, _)| p.ends_with("/messages"))
            .map(|(_, v)| v)
            .collect()
    }
    fn replies_to(&self, id: u64) -> usize {
        self.posts()
            .iter()
            .filter(|v| {
                v["message_reference"]["message_id"]
                    .as_str()
                    .and_then(|s| s.parse::<u64>().ok())
                    == Some(id)
            })
            .count()
    }
}

/// A dispatch on the wire: a text frame, or a binary one with
/// [`platform::BAD_UTF8`] made invalid UTF-8 (a text frame cannot carry it).
fn frame(ev: &Value) -> Message {
    let text = ev.to_string();
    if text.contains(BAD_UTF8) {
        Message::Binary(platform::invalid_utf8(text.as_bytes()).into())
    } else {
        Message::text(text)
    }
}

async fn gateway(
    ws: WebSocketUpgrade,
    axum::extract::State(f): axum::extract::State<Arc<Fake>>,
) -> axum::response::Response {
    ws.on_upgrade(move |s| session(s, f))
}

async fn session(mut s: WebSocket, f: Arc<Fake>) {
    f.connections.fetch_add(1, Ordering::SeqCst);
    struct Open(Arc<AtomicU64>);
    impl Drop for Open {
        fn drop(&mut self) {
            self.0.fetch_sub(1, Ordering::SeqCst);
        }
    }
    f.open.fetch_add(1, Ordering::SeqCst);
    let _open = Open(f.open.clone());
    let mut drops = f.drops.0.subscribe();
    let mut live = f.live.0.subscribe();
    let _ = s
        .send(Message::text(
            json!({"op": 10, "d": {"heartbeat_interval": 1000}}).to_string(),
        ))
        .await;
    let mut ready = false;
    loop {
        tokio::select! {
            m = s.recv() => {
                let Some(Ok(Message::Text(t))) = m else { return };
                if f.silent.load(Ordering::SeqCst) {
                    continue;
                }
                let v: Value = serde_json::from_str(&t).unwrap_or_default();
                let op = v["op"].as_u64().unwrap_or(99);
                if op != 1 {
                    f.ops.lock().unwrap().push(op);
                }
                match op {
                    1 => { let _ = s.send(Message::text(json!({"op": 11}).to_string())).await; }
                    2 => {
                        assert_eq!(v["d"]["token"], TOKEN);
                        let s_ = f.seq.fetch_add(1, Ordering::SeqCst) + 1;
                        let addr = f.addr.lock().unwrap().clone();
                        let r = json!({"op": 0, "t": "READY", "s": s_, "d": {"session_id": "sess-1", "resume_gateway_url": format!("ws://{addr}/gw"), "user": {"id": BOT, "username": "pinch", "bot": true}}});
                        let _ = s.send(Message::text(r.to_string())).await;
                        ready = true;
                    }
                    6 => {
                        let after = v["d"]["seq"].as_u64().unwrap_or(0);
                        let missed: Vec<Value> = f.dispatched.lock().unwrap().iter().filter(|(q, _)| *q > after).map(|(_, e)| e.clone()).collect();
                        for e in missed {
                            let _ = s.send(frame(&e)).await;
                        }
                        let _ = s.send(Message::text(json!({"op": 0, "t": "RESUMED", "s": null, "d": {}}).to_string())).await;
                        ready = true;
                    }
                    _ => {}
                }
            }
            e = live.recv() => {
                let Ok((_, ev)) = e else { continue };
                if ready && !f.silent.load(Ordering::SeqCst) {
                    let _ = s.send(frame(&ev)).await;
                }
            }
            _ = drops.changed() => return,
        }
    }
}

async fn rest(
    axum::extract::State(f): axum::extract::State<Arc<Fake>>,
    method: axum::http::Method,
    uri: axum::http::Uri,
    h: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> (axum::http::StatusCode, String) {
    use axum::http::StatusCode;
    if h.get("authorization").and_then(|v| v.to_str().ok()) != Some(&format!("Bot {TOKEN}")) {
        return (
            StatusCode::UNAUTHORIZED,
            json!({"message": "401: Unauthorized", "code": 0}).to_string(),
        );
    }
    let path = uri.path().trim_start_matches("/api").to_owned();
    let multipart = h
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|c| c.starts_with("multipart/"));
    let v: Value = if multipart {
        json!({"raw": String::from_utf8_lossy(&body)})
    } else {
        serde_json::from_slice(&body).unwrap_or(Value::Null)
    };
    let key = format!("{method} {}", percent_decode(&path));
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match (method.as_str(), segs.as_slice()) {
        ("GET", ["gateway", "bot"]) => {
            let addr = f.addr.lock().unwrap().clone();
            (
                StatusCode::OK,
                json!({"url": format!("ws://{addr}/gw"), "shards": 1}).to_string(),
            )
        }
        ("GET", ["channels", id]) => (
            StatusCode::OK,
            json!({"id": id, "type": if id.starts_with('t') { 11 } else { 0 }, "parent_id": "g1"})
                .to_string(),
        ),
        ("GET", ["channels", id, "messages"]) => {
            let after: u64 = uri
                .query()
                .unwrap_or("")
                .split('&')
                .find_map(|kv| kv.strip_prefix("after="))
                .and_then(|a| a.parse().ok())
                .unwrap_or(0);
            f.calls.push(key, json!({"after": after}));
            let mut ms: Vec<Value> = f
                .history
                .lock()
                .unwrap()
                .iter()
                .filter(|m| {
                    m["channel_id"] == *id
                        && m["id"].as_str().unwrap().parse::<u64>().unwrap() > after
                })
                .cloned()
                .collect();
            ms.reverse(); // newest first, as Discord answers
            (StatusCode::OK, Value::Array(ms).to_string())
        }
        ("POST", ["channels", ch, "messages"]) => {
            let payload = if multipart { json!({}) } else { v.clone() };
            if let Some(n) = payload["nonce"].as_str() {
                if let Some(existing) = f.nonces.lock().unwrap().get(n) {
                    return (StatusCode::OK, existing.to_string());
                }
            }
            f.calls.push(key, v.clone());
            let m = json!({"id": f.next_id.fetch_add(1, Ordering::SeqCst).to_string(), "channel_id": ch, "content": v["content"]});
            if let Some(n) = payload["nonce"].as_str() {
                f.nonces.lock().unwrap().insert(n.to_owned(), m.clone());
            }
            (StatusCode::OK, m.to_string())
        }
        ("POST", ["users", "@me", "channels"]) => (
            StatusCode::OK,
            json!({"id": format!("dm-{}", v["recipient_id"].as_str().unwrap_or(""))}).to_string(),
        ),
        ("PATCH", ["channels", _, "messages", _]) => {
            f.calls.push(key, v);
            (StatusCode::OK, json!({}).to_string())
        }
        ("PUT", ["channels", _, "messages", _, "reactions", _, "@me"])
        | ("POST", ["channels", _, "typing"])
        | ("POST", ["interactions", _, _, "callback"]) => {
            f.calls.push(key, v);
            (StatusCode::NO_CONTENT, String::new())
        }
        _ => (
            StatusCode::NOT_FOUND,
            json!({"message": "404: Not Found"}).to_string(),
        ),
    }
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Ok(x) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(x);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

async fn serve(f: Arc<Fake>) -> std::net::SocketAddr {
    let app = axum::Router::new()
        .route("/gw", axum::routing::get(gateway))
        .route(
            "/att/{name}",
            axum::routing::get(
                |axum::extract::State(f): axum::extract::State<Arc<Fake>>,
                 axum::extract::Path(name): axum::extract::Path<String>| async move {
                    match f.files.lock().unwrap().get(&name) {
                        Some(b) => b.clone(),
                        None if name == "notes.txt" => b"the secret word is plum".to_vec(),
                        None => Vec::new(),
                    }
                },
            ),
        )
        .fallback(rest)
        .with_state(f.clone());
    let addr = platform::serve(app).await;
    *f.addr.lock().unwrap() = addr.to_string();
    addr
}

fn setup(api: std::net::SocketAddr) -> Setup {
    platform::setup(Platform {
        channel: "discord",
        owner: Some(USER),
        chats: &[
            ("mg-dm", "dm1", false, "pattern"),
            ("mg-guild", "g1", true, "mention"),
        ],
        script: &script(),
        config: format!("[discord]\ntoken_env = \"PINCH_TEST_DISCORD_TOKEN\"\nbase_url = \"http://{api}/api\"\nstall_s = 2\n"),
        env: &[("PINCH_TEST_DISCORD_TOKEN", TOKEN)],
    })
}

fn wait_post(f: &Fake, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    wait_found(what, || f.posts().into_iter().find(|v| pred(v)))
}

fn wait_call(f: &Fake, what: &str, prefix: &str) -> (String, Value) {
    wait_found(what, || f.calls(prefix).into_iter().next())
}

fn ready(f: &Fake, s: &Setup) {
    let deadline = std::time::Instant::now() + WAIT;
    while !f.ops.lock().unwrap().contains(&2) {
        if std::time::Instant::now() > deadline {
            let log = std::fs::read_to_string(s.data.with_extension("log")).unwrap_or_default();
            let tail: Vec<&str> = log
                .lines()
                .filter(|l| l.contains("discord") || l.contains("ERROR"))
                .take(30)
                .collect();
            panic!(
                "timed out waiting for the gateway IDENTIFY; log:\n{}",
                tail.join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn discord_message_edit_reaction_click_files_split_and_mentions() {
    let rt = rt();
    let f = Fake::new();
    let api = rt.block_on(serve(f.clone()));
    let s = setup(api);
    let _d = daemon(&s);
    ready(&f, &s);

    f.user_message("dm1", 1001, "draft please", json!({}));
    wait_post(&f, "the draft", |v| v["content"] == "draft v1");
    let (path, body) = wait_call(&f, "the edit", "PATCH /channels/dm1/messages/");
    assert_eq!(
        path, "PATCH /channels/dm1/messages/10000",
        "the draft was the first message posted"
    );
    assert_eq!(body, json!({"content": "draft v2"}));
    wait_post(&f, "the final answer", |v| v["content"] == "edited");
    wait_call(&f, "the typing indicator", "POST /channels/dm1/typing");
    assert!(f
        .posts()
        .iter()
        .all(|v| v["nonce"].as_str().is_some_and(|n| n.len() <= 25) && v["enforce_nonce"] == true));

    f.user_message("dm1", 1002, "react to this", json!({}));
    let (path, _) = wait_call(&f, "the reaction", "PUT /channels/dm1/messages/");
    assert_eq!(path, "PUT /channels/dm1/messages/1001/reactions/👍/@me");
    wait_post(&f, "the answer", |v| v["content"] == "reacted");

    f.user_message("dm1", 1003, "which colour?", json!({}));
    let card = wait_post(&f, "the question card", |v| v["components"].is_array());
    let blue = card["components"][0]["components"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["label"] == "Blue")
        .expect("a Blue button")
        .clone();
    f.dispatch(
        "INTERACTION_CREATE",
        json!({"id": "int-1", "token": "itok", "type": 3, "channel_id": "dm1", "user": {"id": USER}, "data": {"custom_id": blue["custom_id"], "component_type": 2}}),
    );
    wait_call(
        &f,
        "the interaction acknowledged",
        "POST /interactions/int-1/itok/callback",
    );
    let chose = wait_post(&f, "the answer reaching the agent", |v| {
        v["content"]
            .as_str()
            .is_some_and(|t| t.starts_with("you chose:"))
    });
    assert!(chose["content"].as_str().unwrap().contains('b'), "{chose}");

    let att = json!({"attachments": [{"id": "a1", "filename": "notes.txt", "size": 23, "content_type": "text/plain", "url": format!("http://{api}/att/notes.txt")}]});
    f.user_message("dm1", 1004, "read the attachment please", att);
    let said = wait_post(&f, "the agent's reading", |v| {
        v["content"]
            .as_str()
            .is_some_and(|t| t.starts_with("the file says:"))
    });
    assert!(
        said["content"]
            .as_str()
            .unwrap()
            .contains("the secret word is plum"),
        "{said}"
    );

    f.user_message("dm1", 1005, "send me the report", json!({}));
    let doc = wait_post(&f, "the file", |v| v["raw"].is_string());
    let raw = doc["raw"].as_str().unwrap();
    assert!(
        raw.contains("filename=\"report.txt\"")
            && raw.contains("numbers: 1 2 3")
            && raw.contains("payload_json"),
        "{raw}"
    );
    wait_post(&f, "the caption", |v| v["content"] == "here it is");

    f.user_message("dm1", 1006, "a long one please", json!({}));
    wait_for("three parts", WAIT, || {
        f.posts()
            .iter()
            .filter(|v| v["content"].as_str().is_some_and(|t| t.starts_with("xxx")))
            .count()
            == 3
    });
    let parts: Vec<String> = f
        .posts()
        .iter()
        .filter_map(|v| {
            v["content"]
                .as_str()
                .filter(|t| t.starts_with("xxx"))
                .map(str::to_owned)
        })
        .collect();
    assert!(parts.iter().all(|p| p.chars().count() <= 2000));
    assert_eq!(parts.concat(), "x".repeat(4500));

    // Guild channel: no mention → dropped; a bot → ignored; a mention → answered.
    f.user_message("g1", 2001, "hello all", json!({"guild_id": "G"}));
    f.user_message("g1", 2002, "hello from a bot", json!({"guild_id": "G", "author": {"id": "555", "username": "otherbot", "bot": true}, "mentions": [{"id": BOT}]}));
    f.user_message(
        "g1",
        2003,
        "hello <@900>",
        json!({"guild_id": "G", "mentions": [{"id": BOT, "username": "pinch"}]}),
    );
    wait_for("the guild answer", WAIT, || f.replies_to(2003) == 1);
    assert_eq!(rows(&s.data, "2001"), 0, "not mentioned: dropped");
    assert_eq!(rows(&s.data, "2002"), 0, "a bot's message is not stored");
    assert_eq!(f.replies_to(2002), 0);
    // A thread (a channel whose parent is g1): the conversation is g1, the
    // thread its thread_id; the answer is posted into the thread.
    f.user_message(
        "t1",
        2004,
        "thread hello <@900>",
        json!({"guild_id": "G", "mentions": [{"id": BOT}]}),
    );
    wait_for("the thread answer", WAIT, || f.replies_to(2004) == 1);
    assert!(f
        .calls("POST /channels/t1/messages")
        .iter()
        .any(|(_, v)| v["message_reference"]["message_id"] == "2004"));
    let mut thread = None;
    for d in std::fs::read_dir(s.data.join("sessions/main")).unwrap() {
        let c = inbound(&d.unwrap().path());
        if let Ok(t) = c.query_row(
            "SELECT platform_id, thread_id FROM messages_in WHERE id = '2004:main'",
            [],
            |r| Ok((r.get::<_, String>(0)?, r.get::<_, Option<String>>(1)?)),
        ) {
            thread = Some(t);
        }
    }
    assert_eq!(thread, Some(("g1".to_owned(), Some("t1".to_owned()))));
    // A channel pinch has never seen: the owner gets an approval card in a
    // DM the adapter opens (POST /users/@me/channels), and rejects it.
    f.user_message(
        "g2",
        3001,
        "hi <@900>, new here",
        json!({"guild_id": "G", "mentions": [{"id": BOT}]}),
    );
    let card = wait_post(&f, "the approval card in the owner's DM", |v| {
        v["content"]
            .as_str()
            .is_some_and(|t| t.starts_with("Approval needed"))
    });
    assert!(
        f.calls("POST /channels/dm-42/messages")
            .iter()
            .any(|(_, v)| v == &card),
        "the card went to the DM the adapter opened"
    );
    let reject = card["components"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r["components"].as_array().unwrap().clone())
        .find(|b| b["label"] == "Reject")
        .expect("a Reject button");
    let before = f.calls("POST /channels/dm-42/messages").len();
    f.dispatch("INTERACTION_CREATE", json!({"id": "int-2", "token": "itok2", "type": 3, "channel_id": "dm-42", "user": {"id": USER}, "data": {"custom_id": reject["custom_id"], "component_type": 2}}));
    wait_for("the decision's notice", WAIT, || {
        f.calls("POST /channels/dm-42/messages").len() > before
    });
    let notice = f.calls("POST /channels/dm-42/messages").pop().unwrap().1;
    assert!(
        !notice["content"]
            .as_str()
            .unwrap_or("")
            .starts_with("Approval needed"),
        "{notice}"
    );
    wait_call(
        &f,
        "the interaction acknowledged",
        "POST /interactions/int-2/itok2/callback",
    );
    s.log_lacks(&[TOKEN]);
}

#[test]
fn discord_resumes_a_dropped_gateway_rebuilds_a_silent_one_and_a_killed_host_catches_up() {
    let rt = rt();
    let f = Fake::new();
    let api = rt.block_on(serve(f.clone()));
    let s = setup(api);
    let mut d = daemon(&s);
    ready(&f, &s);

    f.user_message("dm1", 1001, "hello one", json!({}));
    wait_for("the first reply", WAIT, || f.replies_to(1001) == 1);

    // The server drops the connection; a message sent meanwhile is
    // replayed on RESUME.
    f.drops.drop_all();
    wait_for("the connection closed", WAIT, || {
        f.open.load(Ordering::SeqCst) == 0
    });
    f.user_message("dm1", 1002, "hello two", json!({}));
    wait_for("the reply after the drop", WAIT, || f.replies_to(1002) == 1);
    let ops = f.ops.lock().unwrap().clone();
    assert_eq!(
        ops,
        vec![2, 6],
        "one IDENTIFY, then a RESUME (which replayed the message)"
    );

    // The link goes silent (no heartbeat acks, no events): the adapter
    // must notice and reconnect on its own.
    let before = f.connections.load(Ordering::SeqCst);
    f.silent.store(true, Ordering::SeqCst);
    wait_for("a new connection after the silence", WAIT, || {
        f.connections.load(Ordering::SeqCst) > before
    });
    f.silent.store(false, Ordering::SeqCst);
    f.user_message("dm1", 1003, "hello three", json!({}));
    wait_for("the reply after the silence", WAIT, || {
        f.replies_to(1003) == 1
    });
    wait_for("the replies recorded as delivered", WAIT, || {
        delivered(&s.data) >= 3
    });

    // SIGKILL; a message arrives while pinch is down; the restarted host
    // identifies afresh (no replay) and catches up from its cursor.
    d.0.kill().unwrap();
    d.0.wait().unwrap();
    f.drops.drop_all();
    f.history.lock().unwrap().push(json!({"id": "1004", "channel_id": "dm1", "content": "hello four", "author": {"id": USER, "username": "ann"}, "mentions": [], "attachments": []}));
    let _d2 = daemon(&s);
    wait_for("the reply to the message sent while down", WAIT, || {
        f.replies_to(1004) == 1
    });
    let fetched = f.calls("GET /channels/dm1/messages");
    assert!(
        !fetched.is_empty() && fetched[0].1["after"].as_u64().unwrap() >= 1003,
        "caught up from the cursor: {fetched:?}"
    );
    for id in 1001..=1004u64 {
        assert_eq!(
            rows(&s.data, &id.to_string()),
            1,
            "message {id} stored once"
        );
        assert_eq!(f.replies_to(id), 1, "message {id} answered once");
    }
}

/// A MESSAGE_CREATE whose content is not valid UTF-8 (a binary gateway
/// frame with raw bytes): delivered with U+FFFD, logged, and the gateway
/// goes on (the next message is answered). Before, a binary frame was
/// dropped without a word.
#[test]
fn discord_invalid_utf8_is_replaced_and_the_gateway_goes_on() {
    let rt = rt();
    let f = Fake::new();
    let api = rt.block_on(serve(f.clone()));
    let s = setup(api);
    let _d = daemon(&s);
    ready(&f, &s);

    f.user_message(
        "dm1",
        3001,
        &format!("mojibake caf{BAD_UTF8} ok"),
        json!({}),
    );
    let echo = wait_post(&f, "the echo", |v| {
        v["content"]
            .as_str()
            .is_some_and(|t| t.starts_with("echo:"))
    });
    platform::assert_replaced(&echo, "content");
    assert_eq!(rows(&s.data, "3001"), 1);
    // The barrier, on the same connection.
    f.user_message("dm1", 3002, "the barrier", json!({}));
    wait_post(&f, "the barrier's answer", |v| {
        v["content"] == "hi from the agent"
    });
    assert!(
        s.log().contains("invalid UTF-8"),
        "the replacement is logged"
    );
}

/// Discord's world of the shared channel suite: the owner's DM channel
/// `dm1` on the fake gateway and REST API (a message sent while pinch is
/// down is in the channel's history, which it catches up from).
struct DcWorld {
    _rt: tokio::runtime::Runtime,
    f: Arc<Fake>,
    api: std::net::SocketAddr,
    s: Setup,
    n: AtomicU64,
    identified: Mutex<usize>,
}

fn dc_world() -> Option<DcWorld> {
    let rt = rt();
    let f = Fake::new();
    let api = rt.block_on(serve(f.clone()));
    let s = setup(api);
    Some(DcWorld {
        _rt: rt,
        f,
        api,
        s,
        n: AtomicU64::new(2000),
        identified: Mutex::new(0),
    })
}

impl crate::common::suite::World for DcWorld {
    fn setup(&self) -> &Setup {
        &self.s
    }

    fn ready(&self) {
        // A new IDENTIFY: this daemon's gateway session.
        let mut seen = self.identified.lock().unwrap();
        let before = *seen;
        wait_for("the gateway IDENTIFY", WAIT, || {
            self.f
                .ops
                .lock()
                .unwrap()
                .iter()
                .filter(|o| **o == 2)
                .count()
                > before
        });
        *seen = before + 1;
    }

    fn say(&self, text: &str, file: Option<(&str, &[u8])>) -> String {
        let id = self.n.fetch_add(1, Ordering::SeqCst);
        let extra = match file {
            None => json!({}),
            Some((name, bytes)) => {
                self.f
                    .files
                    .lock()
                    .unwrap()
                    .insert(name.to_owned(), bytes.to_vec());
                json!({"attachments": [{"id": format!("a{id}"), "filename": name, "size": bytes.len(),
                    "content_type": "text/plain", "url": format!("http://{}/att/{name}", self.api)}]})
            }
        };
        self.f.user_message("dm1", id, text, extra);
        id.to_string()
    }

    fn replies(&self) -> Vec<crate::common::suite::Reply> {
        use crate::common::suite::{multipart_field, multipart_files, Reply};
        self.f
            .calls("POST /channels/dm1/messages")
            .into_iter()
            .map(|(_, v)| match v["raw"].as_str() {
                Some(raw) => {
                    let payload: Value = multipart_field(raw, "payload_json")
                        .and_then(|p| serde_json::from_str(&p).ok())
                        .unwrap_or_default();
                    Reply {
                        text: payload["content"].as_str().unwrap_or_default().to_owned(),
                        files: multipart_files(raw),
                    }
                }
                None => Reply {
                    text: v["content"].as_str().unwrap_or_default().to_owned(),
                    files: Vec::new(),
                },
            })
            .collect()
    }
}

crate::channel_suite!(dc_world);
