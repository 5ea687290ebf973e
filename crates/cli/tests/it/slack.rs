//! Slack end to end: the real `pinch host` daemon configured with
//! `[slack] base_url` pointing at a fake Slack in this file (axum: the Web
//! API methods pinch uses, the upload URL, `url_private` downloads, and a
//! Socket Mode WebSocket that redelivers unacked envelopes with
//! `retry_attempt` on the next connection), real runners with the
//! scripted provider. A message in and the reply out, an edit, a
//! reaction, a Block Kit button answering an agent question, a file each
//! way, mentions in a channel, bots ignored, envelopes acked only after
//! the commit; a dropped socket and a stalled one rebuilt; a host killed
//! with SIGKILL neither losing nor repeating a message.

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

const APP: &str = "xapp-1-TEST-app-token";
const BOT_TOKEN: &str = "xoxb-TEST-bot-token";
const BOT: &str = "UBOT";
const USER: &str = "U42";

fn script() -> String {
    format!("{SHARED_RULES}\n[[rule]]\nreply = \"echo: {{text}}\"\n")
}

#[derive(Default)]
struct Fake {
    addr: Mutex<String>,
    /// Every envelope queued: (envelope, acked).
    envelopes: Mutex<Vec<(Value, bool)>>,
    calls: Calls,
    uploads: Mutex<Vec<Vec<u8>>>,
    connections: AtomicU64,
    /// Sockets open right now.
    open: Arc<AtomicU64>,
    /// Envelopes sent again with retry_attempt > 0.
    retries: AtomicU64,
    new_envelope: tokio::sync::Notify,
    drops: Drops,
    /// The socket stops reading and writing (no pongs either).
    silent: AtomicBool,
    next_ts: AtomicU64,
    next_env: AtomicU64,
    /// Files the suite's world shared (name → bytes), at `/files/{name}`.
    files: Mutex<std::collections::HashMap<String, Vec<u8>>>,
}

impl Fake {
    fn envelope(&self, kind: &str, payload: Value) -> String {
        let id = format!("env-{}", self.next_env.fetch_add(1, Ordering::SeqCst));
        let e = json!({"envelope_id": id, "type": kind, "payload": payload, "accepts_response_payload": false, "retry_attempt": 0});
        self.envelopes.lock().unwrap().push((e, false));
        self.new_envelope.notify_waiters();
        id
    }
    fn message(
        &self,
        channel: &str,
        channel_type: &str,
        ts: &str,
        text: &str,
        extra: Value,
    ) -> String {
        let mut ev = json!({"type": "message", "channel": channel, "channel_type": channel_type, "user": USER, "text": text, "ts": ts});
        for (k, v) in extra.as_object().cloned().unwrap_or_default() {
            ev[k] = v;
        }
        self.envelope(
            "events_api",
            json!({"event_id": format!("Ev{ts}"), "type": "event_callback", "event": ev}),
        )
    }
    fn acked(&self, id: &str) -> bool {
        self.envelopes
            .lock()
            .unwrap()
            .iter()
            .any(|(e, a)| e["envelope_id"] == id && *a)
    }
    fn calls(&self, method: &str) -> Vec<Value> {
        self.calls.bodies(method)
    }
    fn posts(&self) -> Vec<Value> {
        self.calls("chat.postMessage")
    }
    fn echoes(&self, word: &str) -> usize {
        self.posts()
            .iter()
            .filter(|v| {
                v["text"]
                    .as_str()
                    .is_some_and(|t| t.starts_with("echo:") && t.contains(word))
            })
            .count()
    }
}

async fn socket(
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
    let _ = s
        .send(Message::text(
            json!({"type": "hello", "num_connections": 1, "connection_info": {"app_id": "A1"}})
                .to_string(),
        ))
        .await;
    let mut sent: Vec<String> = Vec::new();
    loop {
        if f.silent.load(Ordering::SeqCst) {
            // A dead link: hold the socket, answer nothing (not even pings).
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(3600)) => return,
                _ = drops.changed() => return,
            }
        }
        // Everything unacked and not yet sent on this connection.
        let due: Vec<Value> = {
            let mut envs = f.envelopes.lock().unwrap();
            let mut out = Vec::new();
            for (e, acked) in envs.iter_mut() {
                let id = e["envelope_id"].as_str().unwrap().to_owned();
                if *acked || sent.contains(&id) {
                    continue;
                }
                if e["delivered_once"] == true {
                    let n = e["retry_attempt"].as_u64().unwrap_or(0) + 1;
                    e["retry_attempt"] = n.into();
                    e["retry_reason"] = "timeout".into();
                    f.retries.fetch_add(1, Ordering::SeqCst);
                }
                e["delivered_once"] = true.into();
                sent.push(id);
                let mut wire = e.clone();
                wire.as_object_mut().unwrap().remove("delivered_once");
                out.push(wire);
            }
            out
        };
        for e in due {
            // Raw bytes that are not UTF-8 need a binary frame.
            let text = e.to_string();
            let m = if text.contains(BAD_UTF8) {
                Message::Binary(platform::invalid_utf8(text.as_bytes()).into())
            } else {
                Message::text(text)
            };
            let _ = s.send(m).await;
        }
        let notified = f.new_envelope.notified();
        tokio::select! {
            m = s.recv() => {
                let Some(Ok(m)) = m else { return };
                if let Message::Text(t) = m {
                    let v: Value = serde_json::from_str(&t).unwrap_or_default();
                    if let Some(id) = v["envelope_id"].as_str() {
                        for (e, acked) in f.envelopes.lock().unwrap().iter_mut() {
                            if e["envelope_id"] == id {
                                *acked = true;
                            }
                        }
                    }
                }
            }
            _ = notified => {}
            _ = drops.changed() => return,
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
    }
}

async fn api(
    axum::extract::State(f): axum::extract::State<Arc<Fake>>,
    axum::extract::Path(method): axum::extract::Path<String>,
    h: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> axum::Json<Value> {
    let auth = h
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let want = if method == "apps.connections.open" {
        APP
    } else {
        BOT_TOKEN
    };
    if auth != format!("Bearer {want}") {
        return axum::Json(json!({"ok": false, "error": "invalid_auth"}));
    }
    let form = h
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|c| c.starts_with("application/x-www-form-urlencoded"));
    let v: Value = if form {
        let m: serde_json::Map<String, Value> = String::from_utf8_lossy(&body)
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_owned(), Value::String(v.replace('+', " "))))
            .collect();
        Value::Object(m)
    } else {
        serde_json::from_slice(&body).unwrap_or_default()
    };
    f.calls.push(method.clone(), v.clone());
    let addr = f.addr.lock().unwrap().clone();
    axum::Json(match method.as_str() {
        "auth.test" => json!({"ok": true, "user_id": BOT, "bot_id": "B1"}),
        "apps.connections.open" => {
            json!({"ok": true, "url": format!("ws://{addr}/socket?ticket=secret-ticket")})
        }
        "chat.postMessage" => {
            json!({"ok": true, "channel": v["channel"], "ts": format!("1700000100.{:06}", f.next_ts.fetch_add(1, Ordering::SeqCst))})
        }
        "files.getUploadURLExternal" => {
            json!({"ok": true, "upload_url": format!("http://{addr}/upload/F1"), "file_id": "F1"})
        }
        "conversations.open" => {
            json!({"ok": true, "channel": {"id": format!("D-{}", v["users"].as_str().unwrap_or(""))}})
        }
        "chat.update" | "reactions.add" | "files.completeUploadExternal" => json!({"ok": true}),
        _ => json!({"ok": false, "error": "unknown_method"}),
    })
}

async fn serve(f: Arc<Fake>) -> std::net::SocketAddr {
    let app = axum::Router::new()
        .route("/socket", axum::routing::get(socket))
        .route("/api/{method}", axum::routing::post(api))
        .route(
            "/upload/{id}",
            axum::routing::post(
                |axum::extract::State(f): axum::extract::State<Arc<Fake>>,
                 body: axum::body::Bytes| async move {
                    f.uploads.lock().unwrap().push(body.to_vec());
                    "OK - 14"
                },
            ),
        )
        .route(
            "/files/{name}",
            axum::routing::get(
                |axum::extract::State(f): axum::extract::State<Arc<Fake>>,
                 axum::extract::Path(name): axum::extract::Path<String>,
                 h: axum::http::HeaderMap| async move {
                    if h.get("authorization").and_then(|v| v.to_str().ok())
                        != Some(&format!("Bearer {BOT_TOKEN}"))
                    {
                        return (axum::http::StatusCode::FORBIDDEN, Vec::new());
                    }
                    match f.files.lock().unwrap().get(&name) {
                        Some(b) => (axum::http::StatusCode::OK, b.clone()),
                        None if name == "notes.txt" => (
                            axum::http::StatusCode::OK,
                            b"the secret word is plum".to_vec(),
                        ),
                        None => (axum::http::StatusCode::NOT_FOUND, Vec::new()),
                    }
                },
            ),
        )
        .with_state(f.clone());
    let addr = platform::serve(app).await;
    *f.addr.lock().unwrap() = addr.to_string();
    addr
}

fn setup(api: std::net::SocketAddr) -> Setup {
    platform::setup(Platform {
        channel: "slack",
        owner: Some(USER),
        chats: &[
            ("mg-dm", "D1", false, "pattern"),
            ("mg-chan", "C1", true, "mention"),
        ],
        script: &script(),
        config: format!(
            "[slack]\napp_token_env = \"PINCH_TEST_SLACK_APP\"\nbot_token_env = \"PINCH_TEST_SLACK_BOT\"\nbase_url = \"http://{api}/api\"\nstall_s = 2\n"
        ),
        env: &[("PINCH_TEST_SLACK_APP", APP), ("PINCH_TEST_SLACK_BOT", BOT_TOKEN)],
    })
}

fn wait_call(f: &Fake, what: &str, method: &str, pred: impl Fn(&Value) -> bool) -> Value {
    wait_found(what, || f.calls(method).into_iter().find(|v| pred(v)))
}

fn no_secret_in_log(s: &Setup) {
    s.log_lacks(&[APP, BOT_TOKEN, "secret-ticket"]);
}

#[test]
fn slack_message_edit_reaction_click_files_and_mentions() {
    let rt = rt();
    let f = Arc::new(Fake::default());
    let api = rt.block_on(serve(f.clone()));
    let s = setup(api);
    let _d = daemon(&s);

    let env = f.message("D1", "im", "1700000000.000001", "draft please", json!({}));
    let draft = wait_call(&f, "the draft", "chat.postMessage", |v| {
        v["text"] == "draft v1"
    });
    assert_eq!(draft["channel"], "D1");
    assert!(f.acked(&env), "the envelope is acked once stored");
    let edit = wait_call(&f, "the edit", "chat.update", |_| true);
    assert_eq!(
        edit,
        json!({"channel": "D1", "ts": "1700000100.000000", "text": "draft v2"})
    );
    wait_call(&f, "the final answer", "chat.postMessage", |v| {
        v["text"] == "edited"
    });

    f.message("D1", "im", "1700000000.000002", "react to this", json!({}));
    let r = wait_call(&f, "the reaction", "reactions.add", |_| true);
    assert_eq!(
        r,
        json!({"channel": "D1", "timestamp": "1700000000.000001", "name": "+1"})
    );
    wait_call(&f, "the answer", "chat.postMessage", |v| {
        v["text"] == "reacted"
    });

    f.message("D1", "im", "1700000000.000003", "which colour?", json!({}));
    let card = wait_call(&f, "the question card", "chat.postMessage", |v| {
        v["blocks"].is_array()
    });
    let blue = card["blocks"][1]["elements"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["text"]["text"] == "Blue")
        .expect("a Blue button")
        .clone();
    let click = f.envelope(
        "interactive",
        json!({"type": "block_actions", "user": {"id": USER}, "channel": {"id": "D1"}, "message": {"ts": "1700000100.000003"},
               "actions": [{"type": "button", "action_id": blue["action_id"], "value": blue["value"]}]}),
    );
    let chose = wait_call(
        &f,
        "the answer reaching the agent",
        "chat.postMessage",
        |v| {
            v["text"]
                .as_str()
                .is_some_and(|t| t.starts_with("you chose:"))
        },
    );
    assert!(chose["text"].as_str().unwrap().contains('b'), "{chose}");
    wait_for("the click envelope acked", WAIT, || f.acked(&click));

    let file = json!({"subtype": "file_share", "files": [{"id": "F9", "name": "notes.txt", "mimetype": "text/plain", "size": 23, "url_private_download": format!("http://{api}/files/notes.txt")}]});
    f.message(
        "D1",
        "im",
        "1700000000.000004",
        "read the attachment please",
        file,
    );
    let said = wait_call(&f, "the agent's reading", "chat.postMessage", |v| {
        v["text"]
            .as_str()
            .is_some_and(|t| t.starts_with("the file says:"))
    });
    assert!(
        said["text"]
            .as_str()
            .unwrap()
            .contains("the secret word is plum"),
        "{said}"
    );

    f.message(
        "D1",
        "im",
        "1700000000.000005",
        "send me the report",
        json!({}),
    );
    let done = wait_call(
        &f,
        "the upload completed",
        "files.completeUploadExternal",
        |_| true,
    );
    assert_eq!(done["files"][0]["title"], "report.txt");
    assert_eq!(done["channel_id"], "D1");
    let asked = f.calls("files.getUploadURLExternal");
    assert_eq!(asked[0]["filename"], "report.txt");
    assert_eq!(asked[0]["length"], "14");
    assert_eq!(
        f.uploads.lock().unwrap().clone(),
        vec![b"numbers: 1 2 3".to_vec()]
    );

    // Channel: no mention → dropped; a bot → ignored; a mention (rich-text
    // block) → answered, in the thread it came from.
    f.message("C1", "channel", "1700000000.000010", "hello all", json!({}));
    f.message(
        "C1",
        "channel",
        "1700000000.000011",
        "hello <@UBOT> bot here",
        json!({"bot_id": "B9", "user": "U555"}),
    );
    let mention = json!({"thread_ts": "1700000000.000009", "blocks": [{"type": "rich_text", "elements": [{"type": "rich_text_section", "elements": [{"type": "user", "user_id": BOT}, {"type": "text", "text": " hello mention"}]}]}]});
    f.message(
        "C1",
        "channel",
        "1700000000.000012",
        "<@UBOT> hello mention",
        mention,
    );
    let ans = wait_call(&f, "the channel answer", "chat.postMessage", |v| {
        v["channel"] == "C1"
    });
    assert_eq!(
        ans["thread_ts"], "1700000000.000009",
        "answered in the thread"
    );
    assert_eq!(
        rows(&s.data, "C1-1700000000.000010"),
        0,
        "not mentioned: dropped"
    );
    assert_eq!(
        rows(&s.data, "C1-1700000000.000011"),
        0,
        "a bot's message is not stored"
    );
    assert_eq!(rows(&s.data, "C1-1700000000.000012"), 1);

    // A channel pinch has never seen: the owner's approval card goes to the
    // DM the adapter opens (conversations.open); Reject is clicked.
    let mention = json!({"blocks": [{"type": "rich_text", "elements": [{"type": "rich_text_section", "elements": [{"type": "user", "user_id": BOT}]}]}]});
    f.message(
        "C2",
        "channel",
        "1700000000.000020",
        "<@UBOT> new here",
        mention,
    );
    let card = wait_call(&f, "the approval card", "chat.postMessage", |v| {
        v["channel"] == "D-U42" && v["blocks"].is_array()
    });
    assert!(
        card["text"]
            .as_str()
            .unwrap()
            .starts_with("Approval needed"),
        "{card}"
    );
    assert_eq!(f.calls("conversations.open")[0]["users"], USER);
    let reject = card["blocks"][1]["elements"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["text"]["text"] == "Reject")
        .expect("a Reject button")
        .clone();
    let before = f.posts().iter().filter(|v| v["channel"] == "D-U42").count();
    f.envelope("interactive", json!({"type": "block_actions", "user": {"id": USER}, "channel": {"id": "D-U42"}, "actions": [{"type": "button", "action_id": reject["action_id"], "value": reject["value"]}]}));
    wait_for("the decision's notice", WAIT, || {
        f.posts().iter().filter(|v| v["channel"] == "D-U42").count() > before
    });
    no_secret_in_log(&s);
}

#[test]
fn slack_recovers_dropped_and_stalled_sockets_and_a_killed_host_loses_and_repeats_nothing() {
    let rt = rt();
    let f = Arc::new(Fake::default());
    let api = rt.block_on(serve(f.clone()));
    let s = setup(api);
    let mut d = daemon(&s);

    let e1 = f.message("D1", "im", "1700000000.000001", "hello one", json!({}));
    wait_for("the first reply", WAIT, || f.echoes("hello one") == 1);
    assert!(f.acked(&e1));

    // Dropped: the next connection gets what was sent meanwhile.
    let before = f.connections.load(Ordering::SeqCst);
    f.drops.drop_all();
    wait_for("the socket closed", WAIT, || {
        f.open.load(Ordering::SeqCst) == 0
    });
    f.message("D1", "im", "1700000000.000002", "hello two", json!({}));
    wait_for("the reply after the drop", WAIT, || {
        f.echoes("hello two") == 1
    });
    assert!(
        f.connections.load(Ordering::SeqCst) > before,
        "delivered on a new connection"
    );

    // Stalled: the socket goes silent (no frames, no pongs); the watchdog rebuilds it.
    let before = f.connections.load(Ordering::SeqCst);
    f.silent.store(true, Ordering::SeqCst);
    wait_for("a new connection after the stall", WAIT, || {
        f.connections.load(Ordering::SeqCst) > before
    });
    f.silent.store(false, Ordering::SeqCst);
    f.drops.drop_all();
    f.message("D1", "im", "1700000000.000003", "hello three", json!({}));
    wait_for("the reply after the stall", WAIT, || {
        f.echoes("hello three") == 1
    });
    wait_for("the replies recorded as delivered", WAIT, || {
        delivered(&s.data) >= 3
    });

    // SIGKILL, with an envelope stored but not acked (Slack will retry it)
    // and another arriving while pinch is down.
    d.0.kill().unwrap();
    d.0.wait().unwrap();
    f.drops.drop_all();
    for (e, acked) in f.envelopes.lock().unwrap().iter_mut() {
        if e["payload"]["event"]["text"] == "hello three" {
            *acked = false; // the ack was lost with the connection
        }
    }
    f.message("D1", "im", "1700000000.000004", "hello four", json!({}));
    let _d2 = daemon(&s);
    wait_for("the reply to the message sent while down", WAIT, || {
        f.echoes("hello four") == 1
    });
    wait_for("every envelope acked", WAIT, || {
        f.envelopes.lock().unwrap().iter().all(|(_, a)| *a)
    });
    assert!(
        f.retries.load(Ordering::SeqCst) >= 1,
        "the unacked envelope was retried"
    );
    for (n, word) in ["one", "two", "three", "four"].iter().enumerate() {
        assert_eq!(
            rows(&s.data, &format!("D1-1700000000.00000{}", n + 1)),
            1,
            "message {word} stored once"
        );
        assert_eq!(
            f.echoes(&format!("hello {word}")),
            1,
            "message {word} answered once"
        );
    }
    no_secret_in_log(&s);
}

/// An envelope whose message text is not valid UTF-8 (a binary Socket Mode
/// frame with raw bytes): delivered with U+FFFD, acked, logged, and the
/// socket goes on (the next message is answered). Before, a binary frame
/// was dropped unacked and Slack would have retried it forever.
#[test]
fn slack_invalid_utf8_is_replaced_and_the_socket_goes_on() {
    let rt = rt();
    let f = Arc::new(Fake::default());
    let api = rt.block_on(serve(f.clone()));
    let s = setup(api);
    let _d = daemon(&s);

    let env = f.message(
        "D1",
        "im",
        "1700000100.000100",
        &format!("mojibake caf{BAD_UTF8} ok"),
        json!({}),
    );
    let echo = wait_call(&f, "the echo", "chat.postMessage", |v| {
        v["text"].as_str().is_some_and(|t| t.contains("mojibake"))
    });
    platform::assert_replaced(&echo, "text");
    wait_found("the envelope acked", || f.acked(&env).then_some(()));
    assert_eq!(rows(&s.data, "D1-1700000100.000100"), 1);
    // The barrier.
    f.message("D1", "im", "1700000101.000100", "the barrier", json!({}));
    wait_found("the barrier's echo", || {
        (f.echoes("the barrier") > 0).then_some(())
    });
    assert!(
        s.log().contains("invalid UTF-8"),
        "the replacement is logged"
    );
    no_secret_in_log(&s);
}

/// Slack's world of the shared channel suite: the owner's DM `D1` over
/// the fake Socket Mode (an envelope sent while pinch is down is
/// redelivered on its next connection) and Web API.
struct SlWorld {
    _rt: tokio::runtime::Runtime,
    f: Arc<Fake>,
    api: std::net::SocketAddr,
    s: Setup,
    n: AtomicU64,
    connected: Mutex<u64>,
}

fn sl_world() -> Option<SlWorld> {
    let rt = rt();
    let f = Arc::new(Fake::default());
    let api = rt.block_on(serve(f.clone()));
    let s = setup(api);
    Some(SlWorld {
        _rt: rt,
        f,
        api,
        s,
        n: AtomicU64::new(0),
        connected: Mutex::new(0),
    })
}

impl crate::common::suite::World for SlWorld {
    fn setup(&self) -> &Setup {
        &self.s
    }

    fn ready(&self) {
        let mut seen = self.connected.lock().unwrap();
        let before = *seen;
        wait_for("a Socket Mode connection", WAIT, || {
            self.f.connections.load(Ordering::SeqCst) > before
        });
        *seen = self.f.connections.load(Ordering::SeqCst);
    }

    fn say(&self, text: &str, file: Option<(&str, &[u8])>) -> String {
        let n = self.n.fetch_add(1, Ordering::SeqCst);
        let ts = format!("1700000300.{n:06}");
        let extra = match file {
            None => json!({}),
            Some((name, bytes)) => {
                self.f
                    .files
                    .lock()
                    .unwrap()
                    .insert(name.to_owned(), bytes.to_vec());
                json!({"subtype": "file_share", "files": [{"id": format!("F-s{n}"), "name": name,
                    "mimetype": "text/plain", "size": bytes.len(),
                    "url_private_download": format!("http://{}/files/{name}", self.api)}]})
            }
        };
        self.f.message("D1", "im", &ts, text, extra);
        format!("D1-{ts}")
    }

    fn replies(&self) -> Vec<crate::common::suite::Reply> {
        use crate::common::suite::Reply;
        let uploads = self.f.uploads.lock().unwrap().clone();
        let mut out: Vec<Reply> = self
            .f
            .posts()
            .into_iter()
            .filter(|v| v["channel"] == "D1")
            .map(|v| Reply {
                text: v["text"].as_str().unwrap_or_default().to_owned(),
                files: Vec::new(),
            })
            .collect();
        // Each upload is completed in turn (the fake's upload URL is one).
        for (v, bytes) in self
            .f
            .calls("files.completeUploadExternal")
            .into_iter()
            .zip(uploads)
        {
            if v["channel_id"] == "D1" {
                let name = v["files"][0]["title"].as_str().unwrap_or_default();
                out.push(Reply {
                    text: String::new(),
                    files: vec![(name.to_owned(), bytes)],
                });
            }
        }
        out
    }
}

crate::channel_suite!(sl_world);
