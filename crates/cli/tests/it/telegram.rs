//! Telegram end to end: the real `pinch host` daemon configured with
//! `[telegram] base_url` pointing at a fake Bot API server in this file
//! (axum, the real wire format of exactly the methods pinch uses), real
//! runners answering with the scripted provider. A message in and the
//! reply out, an edit, a reaction, an inline-keyboard click answering an
//! agent question, a file each way, a long reply split at 4096, mentions
//! in a group, bots ignored; a stalled long-poll rebuilt by the watchdog;
//! a host killed with SIGKILL neither losing nor repeating a message.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::common::platform::{
    self, daemon, delivered, rows, wait_found, Calls, Platform, Setup, BAD_UTF8, SHARED_RULES, WAIT,
};
use crate::common::*;
use serde_json::{json, Value};

const TOKEN: &str = "123456:TEST-token-abcdef";
const BOT_ID: i64 = 999;
const DM: i64 = 42;
const GROUP: i64 = -100_777;

fn script() -> String {
    format!(
        r#"{SHARED_RULES}
[[rule]]
contains = "show env"
tool = "shell"
args = {{ command = "env; echo END-OF-ENV" }}

[[rule]]
after_tool = "shell"
reply = "env: {{tool_result}}"

[[rule]]
contains = "long one"
reply = "{long}"

[[rule]]
contains = "tell a story"
reply = "Once upon a time a tiny crab wrote a reply word by word for a whole story."
stream_ms = 250

[[rule]]
contains = "say it aloud"
tool = "send_voice"
args = {{ text = "The rent is due on Friday." }}

[[rule]]
after_tool = "send_voice"
reply = "voice: {{tool_result}}"

[[rule]]
reply = "hi from the agent"
"#,
        long = long_reply()
    )
}

/// 5000 chars with a line break at 3000: split there and at no other place.
fn long_reply() -> String {
    format!("{}\\n{}", "a".repeat(3000), "b".repeat(1999))
}

/// The fake Bot API: updates queued by the test, every call recorded.
#[derive(Default)]
struct Fake {
    updates: Mutex<Vec<Value>>,
    /// Updates below this id are confirmed (Telegram forgets them).
    floor: AtomicI64,
    calls: Calls,
    new_update: tokio::sync::Notify,
    /// The next getUpdates hangs (a stalled connection).
    stall_next: AtomicBool,
    stalled: AtomicI64,
    next_msg: AtomicI64,
    next_update: AtomicI64,
    /// Files the Bot API serves (`file_path` → bytes), beside `f-notes`.
    files: Mutex<std::collections::HashMap<String, Vec<u8>>>,
}

impl Fake {
    fn push(&self, mut u: Value) -> i64 {
        let id = self.next_update.fetch_add(1, Ordering::SeqCst) + 1;
        u["update_id"] = id.into();
        self.updates.lock().unwrap().push(u);
        self.new_update.notify_waiters();
        id
    }
    fn message(&self, chat: i64, chat_type: &str, mid: i64, from: i64, text: &str) -> Value {
        json!({"message": {
            "message_id": mid, "date": 1_700_000_000,
            "chat": {"id": chat, "type": chat_type},
            "from": {"id": from, "is_bot": false, "first_name": "Ann"},
            "text": text
        }})
    }
    fn calls(&self, method: &str) -> Vec<Value> {
        self.calls.bodies(method)
    }
    fn sent_texts(&self) -> Vec<String> {
        self.calls("sendMessage")
            .iter()
            .filter_map(|v| v["text"].as_str().map(str::to_owned))
            .collect()
    }
    fn replies_to(&self, mid: i64) -> usize {
        self.calls("sendMessage")
            .iter()
            .filter(|v| v["reply_parameters"]["message_id"] == mid)
            .count()
    }
}

async fn serve(fake: Arc<Fake>) -> std::net::SocketAddr {
    use axum::extract::{Path as P, State};
    use axum::http::HeaderMap;
    async fn api(
        State(f): State<Arc<Fake>>,
        P((bot, method)): P<(String, String)>,
        h: HeaderMap,
        body: axum::body::Bytes,
    ) -> axum::Json<Value> {
        if bot != format!("bot{TOKEN}") {
            return axum::Json(
                json!({"ok": false, "error_code": 401, "description": "Unauthorized"}),
            );
        }
        let multipart = h
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|c| c.starts_with("multipart/form-data"));
        let v: Value = if multipart {
            json!({"raw": String::from_utf8_lossy(&body)})
        } else {
            serde_json::from_slice(&body).unwrap_or_default()
        };
        if method != "getUpdates" {
            f.calls.push(method.clone(), v.clone());
        }
        let ok = |r: Value| axum::Json(json!({"ok": true, "result": r}));
        match method.as_str() {
            "getMe" => ok(
                json!({"id": BOT_ID, "is_bot": true, "first_name": "Pinch", "username": "pinch_bot"}),
            ),
            "getUpdates" => {
                let offset = v["offset"].as_i64().unwrap_or(0);
                f.floor.fetch_max(offset, Ordering::SeqCst);
                f.calls.push(method.clone(), v.clone());
                if f.stall_next.swap(false, Ordering::SeqCst) {
                    f.stalled.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                }
                let deadline = tokio::time::Instant::now()
                    + Duration::from_secs(v["timeout"].as_u64().unwrap_or(0));
                loop {
                    let notified = f.new_update.notified();
                    let floor = f.floor.load(Ordering::SeqCst);
                    let ready: Vec<Value> = f
                        .updates
                        .lock()
                        .unwrap()
                        .iter()
                        .filter(|u| u["update_id"].as_i64().unwrap() >= floor)
                        .cloned()
                        .collect();
                    if !ready.is_empty()
                        || tokio::time::timeout_at(deadline, notified).await.is_err()
                    {
                        return ok(Value::Array(ready));
                    }
                }
            }
            "sendMessage" | "sendDocument" | "sendVoice" => ok(
                json!({"message_id": 5000 + f.next_msg.fetch_add(1, Ordering::SeqCst), "chat": {"id": v["chat_id"]}}),
            ),
            "getFile" => ok(
                json!({"file_id": v["file_id"], "file_path": format!("documents/{}.txt", v["file_id"].as_str().unwrap_or("x"))}),
            ),
            "deleteWebhook"
            | "deleteMessage"
            | "setWebhook"
            | "editMessageText"
            | "setMessageReaction"
            | "sendChatAction"
            | "answerCallbackQuery" => ok(json!(true)),
            _ => axum::Json(json!({"ok": false, "error_code": 404, "description": "Not Found"})),
        }
    }
    async fn file(
        State(f): State<Arc<Fake>>,
        P((bot, path)): P<(String, String)>,
    ) -> (axum::http::StatusCode, Vec<u8>) {
        if let Some(b) = f.files.lock().unwrap().get(&path) {
            return (axum::http::StatusCode::OK, b.clone());
        }
        if bot != format!("bot{TOKEN}") || path != "documents/f-notes.txt" {
            return (axum::http::StatusCode::NOT_FOUND, Vec::new());
        }
        (
            axum::http::StatusCode::OK,
            b"the secret word is plum".to_vec(),
        )
    }
    /// Every answer as bytes, with [`platform::BAD_UTF8`] made invalid UTF-8.
    async fn api_raw(
        state: State<Arc<Fake>>,
        path: P<(String, String)>,
        h: HeaderMap,
        body: axum::body::Bytes,
    ) -> ([(&'static str, &'static str); 1], Vec<u8>) {
        let axum::Json(v) = api(state, path, h, body).await;
        let wire = platform::invalid_utf8(&serde_json::to_vec(&v).unwrap());
        ([("content-type", "application/json")], wire)
    }
    let app = axum::Router::new()
        .route("/{bot}/{method}", axum::routing::post(api_raw))
        .route("/file/{bot}/{*path}", axum::routing::get(file))
        .with_state(fake);
    platform::serve(app).await
}

fn setup(api: std::net::SocketAddr) -> Setup {
    setup_with(api, "")
}

/// [`setup`] with more of `pinch.toml`.
fn setup_with(api: std::net::SocketAddr, extra: &str) -> Setup {
    let (dm, group) = (DM.to_string(), GROUP.to_string());
    platform::setup(Platform {
        channel: "telegram",
        // The DM's user owns pinch (so the question card's click counts).
        owner: Some(&dm),
        chats: &[
            ("mg-dm", &dm, false, "pattern"),
            ("mg-group", &group, true, "mention"),
        ],
        script: &script(),
        config: format!(
            "[telegram]\ntoken_env = \"PINCH_TEST_TG_TOKEN\"\nbase_url = \"http://{api}\"\nstall_s = 2\n{extra}"
        ),
        env: &[("PINCH_TEST_TG_TOKEN", TOKEN)],
    })
}

fn wait_call(fake: &Fake, what: &str, method: &str, pred: impl Fn(&Value) -> bool) -> Value {
    wait_found(what, || fake.calls(method).into_iter().find(|v| pred(v)))
}

fn log_has_no_token(s: &Setup) {
    s.log_lacks(&["TEST-token"]);
}

#[test]
fn telegram_message_edit_reaction_click_files_split_and_mentions() {
    let rt = rt();
    let fake = Arc::new(Fake::default());
    let api = rt.block_on(serve(fake.clone()));
    let s = setup(api);
    let _d = daemon(&s);

    // A message in, the agent's message out, then its edit.
    fake.push(fake.message(DM, "private", 1, DM, "draft please"));
    let draft = wait_call(&fake, "the draft", "sendMessage", |v| {
        v["text"] == "draft v1"
    });
    let draft_id = 5000
        + fake
            .calls("sendMessage")
            .iter()
            .position(|v| v["text"] == "draft v1")
            .unwrap() as i64;
    assert_eq!(draft["chat_id"], DM);
    let edit = wait_call(&fake, "the edit", "editMessageText", |_| true);
    assert_eq!(
        edit,
        json!({"chat_id": DM, "message_id": draft_id, "text": "draft v2"})
    );
    wait_call(&fake, "the final answer", "sendMessage", |v| {
        v["text"] == "edited"
    });
    assert_eq!(rows(&s.data, &format!("{DM}.1")), 1);
    let typing = wait_call(&fake, "the typing indicator", "sendChatAction", |_| true);
    assert_eq!(typing, json!({"chat_id": DM, "action": "typing"}));

    // A reaction on the first message (seq 2).
    fake.push(fake.message(DM, "private", 2, DM, "react to this"));
    let r = wait_call(&fake, "the reaction", "setMessageReaction", |_| true);
    assert_eq!(
        r,
        json!({"chat_id": DM, "message_id": 1, "reaction": [{"type": "emoji", "emoji": "👍"}]})
    );
    wait_call(&fake, "the answer", "sendMessage", |v| {
        v["text"] == "reacted"
    });

    // A question card as an inline keyboard; the click answers it.
    fake.push(fake.message(DM, "private", 3, DM, "which colour?"));
    let card = wait_call(&fake, "the question card", "sendMessage", |v| {
        v["reply_markup"]["inline_keyboard"].is_array()
    });
    let rows_kb = card["reply_markup"]["inline_keyboard"]
        .as_array()
        .unwrap()
        .clone();
    let blue = rows_kb
        .iter()
        .map(|r| &r[0])
        .find(|b| b["text"] == "Blue")
        .expect("a Blue button")
        .clone();
    let data = blue["callback_data"].as_str().unwrap();
    assert!(data.len() <= 64, "callback data within 64 bytes: {data}");
    fake.push(json!({"callback_query": {
        "id": "cq-1", "from": {"id": DM, "is_bot": false, "first_name": "Ann"}, "data": data,
        "message": {"message_id": 5000, "chat": {"id": DM, "type": "private"}}
    }}));
    wait_call(&fake, "the callback answered", "answerCallbackQuery", |v| {
        v["callback_query_id"] == "cq-1"
    });
    let chose = wait_call(&fake, "the answer reaching the agent", "sendMessage", |v| {
        v["text"]
            .as_str()
            .is_some_and(|t| t.starts_with("you chose:"))
    });
    assert!(chose["text"].as_str().unwrap().contains('b'), "{chose}");

    // A file in (getFile + download), read by the agent.
    let mut m = fake.message(DM, "private", 4, DM, "");
    m["message"].as_object_mut().unwrap().remove("text");
    m["message"]["caption"] = "read the attachment please".into();
    m["message"]["document"] = json!({"file_id": "f-notes", "file_unique_id": "u1", "file_name": "notes.txt", "mime_type": "text/plain", "file_size": 23});
    fake.push(m);
    let said = wait_call(&fake, "the agent's reading", "sendMessage", |v| {
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

    // A file out (sendDocument, multipart).
    fake.push(fake.message(DM, "private", 5, DM, "send me the report"));
    let doc = wait_call(&fake, "the document", "sendDocument", |_| true);
    let raw = doc["raw"].as_str().unwrap();
    assert!(
        raw.contains("filename=\"report.txt\"")
            && raw.contains("numbers: 1 2 3")
            && raw.contains(&DM.to_string()),
        "{raw}"
    );
    wait_call(&fake, "the file's caption text", "sendMessage", |v| {
        v["text"] == "here it is"
    });

    // The report's turn is over (else the next message would join it as a
    // follow-up and never get a turn of its own).
    wait_call(&fake, "the report's final answer", "sendMessage", |v| {
        v["text"] == "report sent"
    });

    // A long reply split at the limit, at the line break.
    fake.push(fake.message(DM, "private", 6, DM, "a long one please"));
    wait_call(&fake, "the second part", "sendMessage", |v| {
        v["text"].as_str().is_some_and(|t| t.starts_with('b'))
    });
    let parts: Vec<String> = fake
        .sent_texts()
        .into_iter()
        .filter(|t| t.starts_with('a') && t.len() > 100 || t.starts_with("bbb"))
        .collect();
    assert_eq!(
        parts.len(),
        2,
        "{:?}",
        parts.iter().map(String::len).collect::<Vec<_>>()
    );
    assert!(parts.iter().all(|p| p.encode_utf16().count() <= 4096));
    assert_eq!(parts.concat(), long_reply().replace("\\n", "\n"));

    // The token never reaches the sandbox: not in the agent's environment,
    // not in any file under the sessions.
    fake.push(fake.message(DM, "private", 7, DM, "show env please"));
    let env = wait_call(&fake, "the environment", "sendMessage", |v| {
        v["text"].as_str().is_some_and(|t| t.starts_with("env:"))
    });
    let env = env["text"].as_str().unwrap();
    assert!(env.contains("END-OF-ENV"), "{env}");
    assert!(
        !env.contains("TEST-token") && !env.contains("PINCH_TEST_TG_TOKEN"),
        "the token reached the sandbox: {env}"
    );
    for f in walk(&s.data.join("sessions")) {
        let bytes = std::fs::read(&f).unwrap_or_default();
        assert!(
            !String::from_utf8_lossy(&bytes).contains("TEST-token"),
            "the token is in {}",
            f.display()
        );
    }

    // Group: not mentioned → stored nowhere; a bot → ignored; @mention and a
    // reply to the bot → answered.
    fake.push(fake.message(GROUP, "supergroup", 10, 7, "hello all"));
    let mut bot = fake.message(GROUP, "supergroup", 11, 555, "hello @pinch_bot from a bot");
    bot["message"]["from"]["is_bot"] = true.into();
    fake.push(bot);
    let mut m = fake.message(GROUP, "supergroup", 12, 7, "hey @pinch_bot hello");
    m["message"]["entities"] = json!([{"type": "mention", "offset": 4, "length": 10}]);
    fake.push(m);
    let mut m = fake.message(GROUP, "supergroup", 13, 7, "and hello again");
    m["message"]["reply_to_message"] = json!({"message_id": 5001, "chat": {"id": GROUP, "type": "supergroup"}, "from": {"id": BOT_ID, "is_bot": true, "first_name": "Pinch"}});
    fake.push(m);
    // 12 and 13 may be answered together (one batch), in reply to either.
    wait_for("the group answer", WAIT, || {
        fake.replies_to(12) + fake.replies_to(13) >= 1
    });
    assert_eq!(
        rows(&s.data, &format!("{GROUP}.12")),
        1,
        "an @mention engages"
    );
    assert_eq!(
        rows(&s.data, &format!("{GROUP}.13")),
        1,
        "a reply to the bot engages"
    );
    assert_eq!(
        rows(&s.data, &format!("{GROUP}.10")),
        0,
        "a group message without a mention is dropped"
    );
    assert_eq!(
        fake.replies_to(10),
        0,
        "a group message without a mention is not answered"
    );
    assert_eq!(fake.replies_to(11), 0, "a bot's message is not answered");
    assert_eq!(
        rows(&s.data, &format!("{GROUP}.11")),
        0,
        "a bot's message is not stored"
    );
    // A forum topic is a thread: the answer goes back into it.
    let mut m = fake.message(GROUP, "supergroup", 14, 7, "topic hello @pinch_bot");
    m["message"]["entities"] = json!([{"type": "mention", "offset": 12, "length": 10}]);
    m["message"]["is_topic_message"] = true.into();
    m["message"]["message_thread_id"] = 77.into();
    fake.push(m);
    wait_for("the topic answer", WAIT, || fake.replies_to(14) == 1);
    let ans = fake
        .calls("sendMessage")
        .into_iter()
        .find(|v| v["reply_parameters"]["message_id"] == 14)
        .unwrap();
    assert_eq!(ans["message_thread_id"], 77, "{ans}");
    assert!(fake
        .calls("sendMessage")
        .iter()
        .all(|v| v["chat_id"] == DM || v["chat_id"] == GROUP));
    log_has_no_token(&s);
}

#[test]
fn telegram_recovers_a_stalled_poll_and_a_killed_host_loses_and_repeats_nothing() {
    let rt = rt();
    let fake = Arc::new(Fake::default());
    let api = rt.block_on(serve(fake.clone()));
    let s = setup(api);
    let mut d = daemon(&s);

    let u1 = fake.push(fake.message(DM, "private", 1, DM, "hello one"));
    wait_for("the first reply", WAIT, || fake.replies_to(1) == 1);

    // The next long-poll hangs; a message sent meanwhile arrives only
    // through the connection the watchdog rebuilds.
    fake.stall_next.store(true, Ordering::SeqCst);
    wait_for("a hanging poll", WAIT, || {
        fake.stalled.load(Ordering::SeqCst) == 1
    });
    fake.push(fake.message(DM, "private", 2, DM, "hello two"));
    wait_for("the reply after the stall", WAIT, || {
        fake.replies_to(2) == 1
    });
    wait_for("both replies recorded as delivered", WAIT, || {
        delivered(&s.data) >= 2
    });

    // SIGKILL; the offset confirmation is lost too (Telegram offers both
    // again), and a third message arrives while pinch is down.
    d.0.kill().unwrap();
    d.0.wait().unwrap();
    fake.floor.store(u1, Ordering::SeqCst);
    let u3 = fake.push(fake.message(DM, "private", 3, DM, "hello three"));
    let _d2 = daemon(&s);
    wait_for("the reply to the message sent while down", WAIT, || {
        fake.replies_to(3) == 1
    });
    wait_for("the redelivered batch confirmed", WAIT, || {
        fake.floor.load(Ordering::SeqCst) > u3
    });
    for mid in 1..=3 {
        assert_eq!(
            rows(&s.data, &format!("{DM}.{mid}")),
            1,
            "message {mid} stored once"
        );
        assert_eq!(fake.replies_to(mid), 1, "message {mid} answered once");
    }
    log_has_no_token(&s);
}

#[test]
fn telegram_webhook_mode_checks_the_secret_and_answers_after_the_commit() {
    const HOOK_SECRET: &str = "hook-secret-0123456789abcdef";
    let rt = rt();
    let fake = Arc::new(Fake::default());
    let api = rt.block_on(serve(fake.clone()));
    let mut s = setup(api);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut cfg = std::fs::read_to_string(&s.cfg).unwrap();
    cfg.push_str(&format!("webhook_url = \"https://bot.example.org/telegram\"\nwebhook_secret_env = \"PINCH_TEST_TG_HOOK\"\n[http]\nlisten = \"127.0.0.1:{port}\"\n"));
    std::fs::write(&s.cfg, cfg).unwrap();
    s.env
        .push(("PINCH_TEST_TG_HOOK".into(), HOOK_SECRET.into()));
    let _d = daemon(&s);
    let set = wait_call(&fake, "setWebhook", "setWebhook", |_| true);
    assert_eq!(set["url"], "https://bot.example.org/telegram");
    assert_eq!(set["secret_token"], HOOK_SECRET);
    assert!(
        fake.calls("getUpdates").is_empty(),
        "no long-poll in webhook mode"
    );

    let post = |secret: Option<&str>, body: &Value| -> u16 {
        rt.block_on(async {
            let mut r = reqwest::Client::new()
                .post(format!("http://127.0.0.1:{port}/telegram"))
                .json(body);
            if let Some(s) = secret {
                r = r.header("x-telegram-bot-api-secret-token", s);
            }
            r.send().await.unwrap().status().as_u16()
        })
    };
    wait_for("the listener", WAIT, || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    let mut u = fake.message(DM, "private", 1, DM, "hello by webhook");
    u["update_id"] = 1.into();
    assert_eq!(post(None, &u), 401, "no secret header");
    assert_eq!(
        post(Some("wrong-secret-0123456789"), &u),
        401,
        "a wrong secret"
    );
    assert_eq!(rows(&s.data, &format!("{DM}.1")), 0);
    assert_eq!(post(Some(HOOK_SECRET), &u), 200);
    assert_eq!(
        rows(&s.data, &format!("{DM}.1")),
        1,
        "200 only once the row is committed"
    );
    assert_eq!(post(Some(HOOK_SECRET), &u), 200, "a redelivery is fine");
    assert_eq!(rows(&s.data, &format!("{DM}.1")), 1, "and stored once");
    wait_for("the reply", WAIT, || fake.replies_to(1) == 1);

    // Raw bytes that are not UTF-8 in the update: stored with U+FFFD and
    // answered 200 (not 400, which Telegram would retry forever).
    let mut u = fake.message(DM, "private", 2, DM, &format!("mojibake caf{BAD_UTF8} ok"));
    u["update_id"] = 2.into();
    let raw = platform::invalid_utf8(u.to_string().as_bytes());
    let st = rt.block_on(async {
        reqwest::Client::new()
            .post(format!("http://127.0.0.1:{port}/telegram"))
            .header("x-telegram-bot-api-secret-token", HOOK_SECRET)
            .header("content-type", "application/json")
            .body(raw)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    });
    assert_eq!(st, 200);
    assert_eq!(rows(&s.data, &format!("{DM}.2")), 1);
    let echo = wait_call(&fake, "the echo", "sendMessage", |v| {
        v["text"].as_str().is_some_and(|t| t.starts_with("echo:"))
    });
    platform::assert_replaced(&echo, "text");
    // The barrier.
    let mut u = fake.message(DM, "private", 3, DM, "the barrier");
    u["update_id"] = 3.into();
    assert_eq!(post(Some(HOOK_SECRET), &u), 200);
    wait_for("the barrier's reply", WAIT, || fake.replies_to(3) == 1);
    log_has_no_token(&s);
}

/// A message whose text is not valid UTF-8 on the wire (raw bytes in the
/// `getUpdates` answer): delivered with U+FFFD, logged, and the poll goes
/// on (the next message is answered; before, the unreadable batch was
/// fetched again forever and nothing after it arrived).
#[test]
fn telegram_invalid_utf8_is_replaced_and_the_poll_goes_on() {
    let rt = rt();
    let fake = Arc::new(Fake::default());
    let api = rt.block_on(serve(fake.clone()));
    let s = setup(api);
    let _d = daemon(&s);

    fake.push(fake.message(DM, "private", 1, DM, &format!("mojibake caf{BAD_UTF8} ok")));
    let echo = wait_call(&fake, "the echo", "sendMessage", |v| {
        v["text"].as_str().is_some_and(|t| t.starts_with("echo:"))
    });
    platform::assert_replaced(&echo, "text");
    assert_eq!(rows(&s.data, &format!("{DM}.1")), 1);
    // The barrier: the next message goes through.
    fake.push(fake.message(DM, "private", 2, DM, "the barrier"));
    wait_call(&fake, "the barrier's answer", "sendMessage", |v| {
        v["text"] == "hi from the agent"
    });
    assert!(
        s.log().contains("invalid UTF-8"),
        "the replacement is logged"
    );
    log_has_no_token(&s);
}

/// OGG/Opus as a speech endpoint answers `response_format: "opus"` (its
/// first page: the Ogg capture pattern and the Opus head).
const SPOKEN: &[u8] =
    b"OggS\0\x02\0\0\0\0\0\0\0\0\x01\0\0\0\0\0\0\0\x6b\x1f\x01\x13OpusHead\x01\x01\x38\x01\x80\xbb\0\0\0\0\0";

fn speech(path: &str, _port: u16) -> pinch_web::testing::Answer {
    Some(match path {
        "/v1/audio/speech" => (
            200,
            pinch_web::testing::header("content-type", "audio/ogg"),
            SPOKEN.to_vec(),
        ),
        _ => (404, vec![], vec![]),
    })
}

/// `send_voice` with `[voice] speech_url`: the host asks the owner's
/// speech endpoint (a loopback server) for Opus, the agent's tool sends
/// it as `voice.ogg`, and Telegram gets it through `sendVoice`, so it
/// plays as a voice note.
#[test]
fn telegram_a_voice_reply_goes_out_as_a_voice_note() {
    let rt = rt();
    let fake = Arc::new(Fake::default());
    let api = rt.block_on(serve(fake.clone()));
    let tts = pinch_web::testing::serve(speech);
    let s = setup_with(
        api,
        &format!(
            "[voice]\nspeech_url = \"http://127.0.0.1:{}/v1/audio/speech\"\nspeech_voice = \"nova\"\n",
            tts.port
        ),
    );
    let _d = daemon(&s);
    fake.push(fake.message(DM, "private", 1, DM, "please say it aloud"));
    let voice = wait_call(&fake, "the voice note", "sendVoice", |_| true);
    let raw = voice["raw"].as_str().unwrap();
    assert!(
        raw.contains("name=\"voice\"; filename=\"voice.ogg\"") && raw.contains("OpusHead"),
        "{raw}"
    );
    wait_call(&fake, "the tool's report", "sendMessage", |v| {
        v["text"]
            .as_str()
            .is_some_and(|t| t.starts_with("voice: sent voice.ogg"))
    });
    let asked: Value = serde_json::from_slice(&tts.bodies.lock().unwrap()[0]).unwrap();
    assert_eq!(
        asked,
        json!({"model": "tts-1", "input": "The rent is due on Friday.", "voice": "nova", "response_format": "opus"})
    );
    assert!(fake.calls("sendDocument").is_empty(), "not as a document");
}

/// A reply that streams for seconds is one Telegram message: sent as a
/// draft after a second, edited at most once a second as the model writes,
/// then edited into the final text; nothing else is sent for it.
#[test]
fn telegram_a_streamed_reply_is_one_message_edited_in_place() {
    let rt = rt();
    let fake = Arc::new(Fake::default());
    let api = rt.block_on(serve(fake.clone()));
    let s = setup(api);
    let _d = daemon(&s);
    let story = "Once upon a time a tiny crab wrote a reply word by word for a whole story.";
    fake.push(fake.message(DM, "private", 1, DM, "tell a story"));
    let draft = wait_call(&fake, "the draft", "sendMessage", |v| {
        v["text"]
            .as_str()
            .is_some_and(|t| t.starts_with("Once") && t.ends_with(" …"))
    });
    assert_eq!(draft["reply_parameters"]["message_id"], 1, "{draft}");
    wait_call(&fake, "the final text", "editMessageText", |v| {
        v["text"] == story
    });
    let edits = fake.calls("editMessageText");
    let id = edits.last().unwrap()["message_id"].clone();
    assert!(
        edits.iter().all(|e| e["message_id"] == id),
        "one message edited: {edits:?}"
    );
    assert!(edits.len() >= 2, "edited while it streamed: {edits:?}");
    // The draft grew, and the story took about 3.5 s: at most one edit a second.
    assert!(edits.len() <= 5, "{edits:?}");
    assert!(
        !fake.sent_texts().iter().any(|t| t == story),
        "the reply was not sent again: {:?}",
        fake.sent_texts()
    );
    assert!(fake.calls("deleteMessage").is_empty());
}

/// Telegram's world of the shared channel suite: the owner's DM with the
/// bot on the fake Bot API.
struct TgWorld {
    _rt: tokio::runtime::Runtime,
    fake: Arc<Fake>,
    s: Setup,
    n: AtomicI64,
}

fn tg_world() -> Option<TgWorld> {
    let rt = rt();
    let fake = Arc::new(Fake::default());
    let api = rt.block_on(serve(fake.clone()));
    let s = setup(api);
    Some(TgWorld {
        _rt: rt,
        fake,
        s,
        n: AtomicI64::new(100),
    })
}

impl crate::common::suite::World for TgWorld {
    fn setup(&self) -> &Setup {
        &self.s
    }

    fn say(&self, text: &str, file: Option<(&str, &[u8])>) -> String {
        let mid = self.n.fetch_add(1, Ordering::SeqCst);
        let mut m = self.fake.message(DM, "private", mid, DM, text);
        if let Some((name, bytes)) = file {
            let id = format!("f-suite-{mid}");
            self.fake
                .files
                .lock()
                .unwrap()
                .insert(format!("documents/{id}.txt"), bytes.to_vec());
            m["message"]["document"] = json!({"file_id": id, "file_unique_id": id, "file_name": name, "mime_type": "text/plain", "file_size": bytes.len()});
            m["message"]["caption"] = text.into();
            m["message"].as_object_mut().unwrap().remove("text");
        }
        self.fake.push(m);
        format!("{DM}.{mid}")
    }

    fn replies(&self) -> Vec<crate::common::suite::Reply> {
        use crate::common::suite::{multipart_field, multipart_files, Reply};
        self.fake
            .calls
            .named(|m| m == "sendMessage" || m == "sendDocument")
            .into_iter()
            .filter_map(|(m, v)| match m.as_str() {
                "sendMessage" => (v["chat_id"] == DM).then(|| Reply {
                    text: v["text"].as_str().unwrap_or_default().to_owned(),
                    files: Vec::new(),
                }),
                _ => {
                    let raw = v["raw"].as_str().unwrap_or_default();
                    (multipart_field(raw, "chat_id").as_deref() == Some(&DM.to_string())).then(
                        || Reply {
                            text: multipart_field(raw, "caption").unwrap_or_default(),
                            files: multipart_files(raw),
                        },
                    )
                }
            })
            .collect()
    }
}

crate::channel_suite!(tg_world);
