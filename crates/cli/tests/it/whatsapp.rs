//! WhatsApp (Cloud API) end to end: the real `pinch host` daemon configured
//! with `[whatsapp] base_url` pointing at a fake Graph API in this file
//! (axum, the wire format of exactly the calls pinch makes), webhooks
//! POSTed to the daemon's `[http]` listener signed as Meta signs them, real
//! runners answering with the scripted provider. The subscription check, a
//! message in and its reply out, a bad signature, a redelivery, a question
//! as reply buttons and the press answering it, a file each way; the
//! 24-hour window (the template instead, the reply failed with the reason).
//! What only Meta's service can show is in decision 0052.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;

use crate::common::platform::{
    self, daemon, failed_deliveries, rows, wait_found, wait_listener, Calls, Platform, Setup,
    SHARED_RULES, WAIT,
};
use crate::common::*;
use serde_json::{json, Value};

const TOKEN: &str = "EAAG-TEST-token-abcdef";
const APP_SECRET: &str = "TEST-app-secret-0123456789";
const VERIFY: &str = "TEST-verify-0123456789";
const PNID: &str = "106540352242922";
const VER: &str = "v21.0";
/// The owner, who writes within the window.
const USER: &str = "4915112345678";
/// A user whose only message is over a day old (a late redelivery).
const LATE: &str = "4917000000000";
const TEMPLATE: &str = "hello_world";

fn script() -> String {
    format!("{SHARED_RULES}\n[[rule]]\nreply = \"hi from the agent\"\n")
}

/// The fake Graph API: every call recorded as (what, body).
#[derive(Default)]
struct Fake {
    calls: Calls,
    next: AtomicI64,
    /// Meta's own record says the window is closed: free-form messages are
    /// refused with 131047 (re-engagement message).
    closed: AtomicBool,
    /// Media the suite's world sent in (id → bytes), beside `media-doc-1`.
    media: std::sync::Mutex<std::collections::HashMap<String, Vec<u8>>>,
    /// Media pinch uploaded (id → the multipart body).
    uploads: std::sync::Mutex<std::collections::HashMap<String, String>>,
}

impl Fake {
    /// The bodies of `POST /messages` that satisfy `pred`.
    fn messages(&self, pred: impl Fn(&Value) -> bool) -> Vec<Value> {
        self.calls
            .bodies("messages")
            .into_iter()
            .filter(|v| pred(v))
            .collect()
    }
    fn wait_message(&self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        wait_found(what, || self.messages(&pred).into_iter().next())
    }
}

fn authorized(h: &axum::http::HeaderMap) -> bool {
    h.get("authorization")
        .is_some_and(|v| v.as_bytes() == format!("Bearer {TOKEN}").as_bytes())
}

fn graph_error(code: i64, message: &str) -> (axum::http::StatusCode, axum::Json<Value>) {
    let status = if code == 190 {
        axum::http::StatusCode::UNAUTHORIZED
    } else {
        axum::http::StatusCode::BAD_REQUEST
    };
    (
        status,
        axum::Json(
            json!({"error": {"message": message, "type": "OAuthException", "code": code, "fbtrace_id": "AbC"}}),
        ),
    )
}

async fn serve(fake: Arc<Fake>) -> std::net::SocketAddr {
    use axum::extract::{Path as P, State};
    use axum::http::{HeaderMap, StatusCode};
    type Answer = (StatusCode, axum::Json<Value>);
    async fn post(
        State(f): State<Arc<Fake>>,
        P((ver, id, what)): P<(String, String, String)>,
        h: HeaderMap,
        body: axum::body::Bytes,
    ) -> Answer {
        if !authorized(&h) {
            return graph_error(190, "Invalid OAuth access token.");
        }
        if ver != VER || id != PNID {
            return graph_error(100, "Unsupported post request.");
        }
        match what.as_str() {
            "messages" => {
                let v: Value = serde_json::from_slice(&body).unwrap_or_default();
                f.calls.push("messages", v.clone());
                if v["messaging_product"] != "whatsapp" {
                    return graph_error(100, "The parameter messaging_product is required.");
                }
                if f.closed.load(Ordering::SeqCst) && v["type"] != "template" {
                    return graph_error(
                        131047,
                        "Re-engagement message: more than 24 hours have passed since the recipient last replied",
                    );
                }
                let n = f.next.fetch_add(1, Ordering::SeqCst);
                (
                    StatusCode::OK,
                    axum::Json(json!({"messaging_product": "whatsapp",
                        "contacts": [{"input": v["to"], "wa_id": v["to"]}],
                        "messages": [{"id": format!("wamid.OUT{n}")}]})),
                )
            }
            "media" => {
                let raw = String::from_utf8_lossy(&body).into_owned();
                f.calls.push("media", json!({"raw": raw}));
                let n = f.uploads.lock().unwrap().len() + 1;
                // The first is `media-up-1`, as the file test expects.
                let id = format!("media-up-{n}");
                f.uploads.lock().unwrap().insert(id.clone(), raw);
                (StatusCode::OK, axum::Json(json!({"id": id})))
            }
            _ => graph_error(100, "Unknown path."),
        }
    }
    /// `GET /{ver}/{media id}`: where to fetch it (on this fake).
    async fn media(
        State(f): State<Arc<Fake>>,
        P((ver, id)): P<(String, String)>,
        h: HeaderMap,
    ) -> Answer {
        if !authorized(&h) {
            return graph_error(190, "Invalid OAuth access token.");
        }
        if ver == VER && id == PNID {
            // `pinch doctor`'s probe.
            return (
                StatusCode::OK,
                axum::Json(json!({"display_phone_number": "+1 555-078-3881",
                    "verified_name": "Pinch Test", "id": PNID})),
            );
        }
        f.calls.push("media-info", json!({"id": id}));
        let known = f.media.lock().unwrap().contains_key(&id);
        if ver != VER || (id != "media-doc-1" && !known) {
            return graph_error(100, "Unsupported get request.");
        }
        let host = h.get("host").unwrap().to_str().unwrap();
        (
            StatusCode::OK,
            axum::Json(json!({"messaging_product": "whatsapp",
                "url": format!("http://{host}/lookaside/{id}?ext=1"),
                "mime_type": "text/plain", "file_size": 23, "id": id})),
        )
    }
    async fn download(
        State(f): State<Arc<Fake>>,
        P(id): P<String>,
        h: HeaderMap,
    ) -> (StatusCode, Vec<u8>) {
        if let Some(b) = f.media.lock().unwrap().get(&id).filter(|_| authorized(&h)) {
            return (StatusCode::OK, b.clone());
        }
        if !authorized(&h) || id != "media-doc-1" {
            return (StatusCode::NOT_FOUND, Vec::new());
        }
        (StatusCode::OK, b"the secret word is plum".to_vec())
    }
    let app = axum::Router::new()
        .route("/lookaside/{id}", axum::routing::get(download))
        .route("/{ver}/{id}", axum::routing::get(media))
        .route("/{ver}/{id}/{what}", axum::routing::post(post))
        .with_state(fake);
    platform::serve(app).await
}

/// A data dir whose `[whatsapp]` reaches the fake, with an `[http]`
/// listener on `port` for the webhooks.
fn setup(api: std::net::SocketAddr, port: u16) -> Setup {
    platform::setup(Platform {
        channel: "whatsapp",
        // The user owns pinch (so the question's press counts).
        owner: Some(USER),
        chats: &[
            ("mg-dm", USER, false, "pattern"),
            ("mg-late", LATE, false, "pattern"),
        ],
        script: &script(),
        config: format!(
            "[whatsapp]\nphone_number_id = \"{PNID}\"\ntoken_env = \"PINCH_TEST_WA_TOKEN\"\n\
             app_secret_env = \"PINCH_TEST_WA_APP_SECRET\"\nverify_token_env = \"PINCH_TEST_WA_VERIFY\"\n\
             base_url = \"http://{api}\"\ntemplate = \"{TEMPLATE}\"\n[http]\nlisten = \"127.0.0.1:{port}\"\n"
        ),
        env: &[
            ("PINCH_TEST_WA_TOKEN", TOKEN),
            ("PINCH_TEST_WA_APP_SECRET", APP_SECRET),
            ("PINCH_TEST_WA_VERIFY", VERIFY),
        ],
    })
}

/// Unix seconds now.
fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A webhook notification carrying one message from `from`, sent at `at`.
fn notification(from: &str, at: i64, mut msg: Value) -> Value {
    msg["from"] = from.into();
    msg["timestamp"] = at.to_string().into();
    json!({"object": "whatsapp_business_account", "entry": [{"id": "102290129340398", "changes": [{
        "field": "messages",
        "value": {
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "15550783881", "phone_number_id": PNID},
            "contacts": [{"profile": {"name": "Ann"}, "wa_id": from}],
            "messages": [msg]
        }
    }]}]})
}

fn text(id: &str, body: &str) -> Value {
    json!({"id": id, "type": "text", "text": {"body": body}})
}

/// The daemon's webhook endpoint, signed with `secret` (`None`: unsigned).
struct Hook<'a> {
    rt: &'a tokio::runtime::Runtime,
    url: String,
}

impl Hook<'_> {
    fn post(&self, secret: Option<&str>, body: &Value) -> u16 {
        let bytes = body.to_string().into_bytes();
        self.rt.block_on(async {
            let mut r = reqwest::Client::new()
                .post(&self.url)
                .header("content-type", "application/json");
            if let Some(s) = secret {
                let sig = pinch_channels::http::sign(s.as_bytes(), &bytes);
                r = r.header("x-hub-signature-256", format!("sha256={sig}"));
            }
            r.body(bytes).send().await.unwrap().status().as_u16()
        })
    }
    fn signed(&self, body: &Value) -> u16 {
        self.post(Some(APP_SECRET), body)
    }
    fn get(&self, query: &str) -> (u16, String) {
        self.rt.block_on(async {
            let r = reqwest::get(format!("{}?{query}", self.url)).await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        })
    }
}

fn start(rt: &tokio::runtime::Runtime) -> (Arc<Fake>, Setup, Daemon, Hook<'_>) {
    let fake = Arc::new(Fake::default());
    let api = rt.block_on(serve(fake.clone()));
    let port = free_port();
    let s = setup(api, port);
    let d = daemon(&s);
    wait_listener(port);
    let hook = Hook {
        rt,
        url: format!("http://127.0.0.1:{port}/whatsapp"),
    };
    (fake, s, d, hook)
}

#[test]
fn whatsapp_webhook_verification_signatures_replies_buttons_and_files() {
    let rt = rt();
    let (fake, s, _d, hook) = start(&rt);

    // Meta's subscription check: the challenge echoed only for the right
    // verify token.
    let (st, body) = hook.get(&format!(
        "hub.mode=subscribe&hub.verify_token={VERIFY}&hub.challenge=1158201444"
    ));
    assert_eq!((st, body.as_str()), (200, "1158201444"));
    let (st, _) = hook.get("hub.mode=subscribe&hub.verify_token=wrong&hub.challenge=1158201444");
    assert_eq!(st, 403);
    assert_eq!(hook.get("hub.challenge=1").0, 403, "no token at all");

    // A bad or missing signature: 401, nothing stored.
    let hello = notification(USER, now(), text("wamid.IN1", "hello there"));
    assert_eq!(hook.post(None, &hello), 401);
    assert_eq!(hook.post(Some("not-the-app-secret"), &hello), 401);
    assert_eq!(rows(&s.data, "wamid.IN1"), 0);

    // Signed: 200 once stored; the reply answers the message.
    assert_eq!(hook.signed(&hello), 200);
    assert_eq!(
        rows(&s.data, "wamid.IN1"),
        1,
        "200 only once the row is committed"
    );
    let reply = fake.wait_message("the reply", |v| v["context"]["message_id"] == "wamid.IN1");
    assert_eq!(
        reply,
        json!({"messaging_product": "whatsapp", "recipient_type": "individual", "to": USER,
            "type": "text", "text": {"body": "hi from the agent"},
            "context": {"message_id": "wamid.IN1"}})
    );
    // Meta delivers it again: one row, one reply.
    assert_eq!(hook.signed(&hello), 200, "a redelivery is fine");
    assert_eq!(rows(&s.data, "wamid.IN1"), 1, "and stored once");

    // A question as reply buttons; the press answers it.
    assert_eq!(
        hook.signed(&notification(
            USER,
            now(),
            text("wamid.IN2", "which colour?")
        )),
        200
    );
    let card = fake.wait_message("the question", |v| v["type"] == "interactive");
    assert_eq!(card["to"], USER);
    assert_eq!(card["interactive"]["type"], "button");
    let buttons = card["interactive"]["action"]["buttons"].as_array().unwrap();
    assert_eq!(buttons.len(), 2, "{card}");
    let blue = buttons
        .iter()
        .find(|b| b["reply"]["title"] == "Blue")
        .expect("a Blue button");
    let id = blue["reply"]["id"].as_str().unwrap();
    assert!(id.len() <= 64, "{id}");
    let press = json!({"id": "wamid.IN3", "type": "interactive",
        "context": {"from": "15550783881", "id": "wamid.OUT1"},
        "interactive": {"type": "button_reply", "button_reply": {"id": id, "title": "Blue"}}});
    assert_eq!(hook.signed(&notification(USER, now(), press)), 200);
    let chose = fake.wait_message("the answer reaching the agent", |v| {
        v["text"]["body"]
            .as_str()
            .is_some_and(|t| t.starts_with("you chose:"))
    });
    assert!(
        chose["text"]["body"].as_str().unwrap().contains('b'),
        "{chose}"
    );

    // A file in (its URL from Graph, then the bytes), read by the agent.
    let doc = json!({"id": "wamid.IN4", "type": "document", "document": {
        "caption": "read the attachment please", "filename": "notes.txt",
        "mime_type": "text/plain", "sha256": "x", "id": "media-doc-1"}});
    assert_eq!(hook.signed(&notification(USER, now(), doc)), 200);
    let said = fake.wait_message("the agent's reading", |v| {
        v["text"]["body"]
            .as_str()
            .is_some_and(|t| t.starts_with("the file says:"))
    });
    assert!(
        said["text"]["body"]
            .as_str()
            .unwrap()
            .contains("the secret word is plum"),
        "{said}"
    );

    // A file out: uploaded, then sent as a document by its media id.
    assert_eq!(
        hook.signed(&notification(
            USER,
            now(),
            text("wamid.IN5", "send me the report")
        )),
        200
    );
    let sent = fake.wait_message("the document", |v| v["type"] == "document");
    assert_eq!(
        sent["document"],
        json!({"id": "media-up-1", "filename": "report.txt"})
    );
    let up = wait_found("the upload", || {
        fake.calls.bodies("media").into_iter().next()
    });
    let raw = up["raw"].as_str().unwrap();
    assert!(
        raw.contains("filename=\"report.txt\"")
            && raw.contains("numbers: 1 2 3")
            && raw.contains("name=\"messaging_product\"\r\n\r\nwhatsapp")
            && raw.contains("name=\"type\"\r\n\r\ntext/plain"),
        "{raw}"
    );
    fake.wait_message("the file's text", |v| v["text"]["body"] == "here it is");
    fake.wait_message("the report's final answer", |v| {
        v["text"]["body"] == "report sent"
    });

    // Everything answered exactly once.
    assert_eq!(
        fake.messages(|v| v["context"]["message_id"] == "wamid.IN1")
            .len(),
        1,
        "one reply to the redelivered message"
    );
    assert!(
        failed_deliveries(&s.data).is_empty(),
        "{:?}",
        failed_deliveries(&s.data)
    );
    s.log_lacks(&[TOKEN, APP_SECRET, VERIFY]);
}

#[test]
fn whatsapp_outside_the_24_hour_window_sends_the_template_and_fails_the_reply() {
    let rt = rt();
    let (fake, s, _d, hook) = start(&rt);

    // Meta redelivers a message sent 25 hours ago: stored, but the window
    // it opened is closed, so the reply is not sent; the template is.
    let old = now() - 25 * 3600;
    assert_eq!(
        hook.signed(&notification(
            LATE,
            old,
            text("wamid.OLD", "are you there?")
        )),
        200
    );
    assert_eq!(rows(&s.data, "wamid.OLD"), 1);
    let tpl = fake.wait_message("the template", |v| v["type"] == "template");
    assert_eq!(
        tpl,
        json!({"messaging_product": "whatsapp", "recipient_type": "individual", "to": LATE,
            "type": "template", "template": {"name": TEMPLATE, "language": {"code": "en_US"}}})
    );
    let why = wait_found("the failed reply", || {
        failed_deliveries(&s.data).into_iter().next()
    });
    assert!(
        why.contains("outside WhatsApp's 24-hour window: sent the template hello_world instead; the user must write first"),
        "{why}"
    );
    assert!(
        fake.messages(|v| v["to"] == LATE && v["type"] != "template")
            .is_empty(),
        "no free-form message outside the window"
    );
    // The window's record: the user's time, in a private file.
    let file = s.data.join("channels/whatsapp-window.json");
    let saved: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    assert_eq!(saved[LATE], old);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );

    // The user writes now: the window is open and the reply goes out.
    assert_eq!(
        hook.signed(&notification(LATE, now(), text("wamid.NEW", "hello again"))),
        200
    );
    let reply = fake.wait_message("the reply in the window", |v| {
        v["context"]["message_id"] == "wamid.NEW"
    });
    assert_eq!(reply["text"]["body"], "hi from the agent");
    wait_for("the window's record to move", WAIT, || {
        let v: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
        v[LATE].as_i64().is_some_and(|t| t > old)
    });

    // Meta disagrees (its window is closed though pinch's record says
    // open): Graph's 131047 is handled the same way, the template instead.
    fake.closed.store(true, Ordering::SeqCst);
    assert_eq!(
        hook.signed(&notification(
            LATE,
            now(),
            text("wamid.REFUSED", "one more")
        )),
        200
    );
    wait_for("a second template", WAIT, || {
        fake.messages(|v| v["type"] == "template").len() == 2
    });
    wait_for("the second failed reply", WAIT, || {
        failed_deliveries(&s.data).len() == 2
    });
    assert!(
        failed_deliveries(&s.data)
            .iter()
            .all(|w| w.contains("sent the template hello_world instead")),
        "{:?}",
        failed_deliveries(&s.data)
    );
    s.log_lacks(&[TOKEN, APP_SECRET, VERIFY]);
}

/// `pinch doctor` on the setup with `token`: its `[whatsapp]` lines.
fn doctor_lines(s: &Setup, token: &str) -> Vec<String> {
    platform::doctor_lines(s, "whatsapp", "PINCH_TEST_WA_TOKEN", token)
}

#[test]
fn whatsapp_doctor_reads_the_number_and_names_a_refused_token() {
    let rt = rt();
    let fake = Arc::new(Fake::default());
    let api = rt.block_on(serve(fake.clone()));
    let s = setup(api, free_port());
    let lines = doctor_lines(&s, TOKEN);
    assert!(
        lines.iter().any(|l| l.starts_with("ok")
            && l.contains("the Graph API reads the number +1 555-078-3881 (Pinch Test)")),
        "{lines:?}"
    );
    let lines = doctor_lines(&s, "EAAG-wrong-token");
    assert!(
        lines.iter().any(|l| l.starts_with("FAIL")
            && l.contains("Invalid OAuth access token")
            && l.contains("check the token")),
        "{lines:?}"
    );
    assert!(
        lines.iter().all(|l| !l.contains("EAAG-wrong-token")),
        "{lines:?}"
    );
}

/// WhatsApp's world of the shared channel suite: the owner's chat, its
/// messages POSTed as Meta does (retried until the daemon takes them,
/// as Meta retries a webhook that failed), the replies on the fake Graph.
struct WaWorld {
    rt: tokio::runtime::Runtime,
    fake: Arc<Fake>,
    s: Setup,
    port: u16,
    n: AtomicI64,
}

fn wa_world() -> Option<WaWorld> {
    let rt = rt();
    let fake = Arc::new(Fake::default());
    let api = rt.block_on(serve(fake.clone()));
    let port = free_port();
    let s = setup(api, port);
    Some(WaWorld {
        rt,
        fake,
        s,
        port,
        n: AtomicI64::new(0),
    })
}

impl crate::common::suite::World for WaWorld {
    fn setup(&self) -> &Setup {
        &self.s
    }

    fn ready(&self) {
        wait_listener(self.port);
    }

    fn say(&self, text: &str, file: Option<(&str, &[u8])>) -> String {
        let n = self.n.fetch_add(1, Ordering::SeqCst);
        let id = format!("wamid.SUITE{n}");
        let msg = match file {
            None => json!({"id": id, "type": "text", "text": {"body": text}}),
            Some((name, bytes)) => {
                let media = format!("media-suite-{n}");
                self.fake
                    .media
                    .lock()
                    .unwrap()
                    .insert(media.clone(), bytes.to_vec());
                json!({"id": id, "type": "document", "document": {"id": media, "filename": name,
                    "caption": text, "mime_type": "text/plain", "sha256": "x"}})
            }
        };
        let body = notification(USER, now(), msg).to_string().into_bytes();
        let url = format!("http://127.0.0.1:{}/whatsapp", self.port);
        // Meta retries until it gets a 200: in the background, so a message
        // sent while pinch is down arrives once it is back.
        let sig = pinch_channels::http::sign(APP_SECRET.as_bytes(), &body);
        self.rt.spawn(async move {
            let c = reqwest::Client::new();
            for _ in 0..600 {
                let r = c
                    .post(&url)
                    .header("content-type", "application/json")
                    .header("x-hub-signature-256", format!("sha256={sig}"))
                    .body(body.clone())
                    .send()
                    .await;
                if r.is_ok_and(|r| r.status().is_success()) {
                    return;
                }
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        });
        id
    }

    fn replies(&self) -> Vec<crate::common::suite::Reply> {
        use crate::common::suite::{multipart_files, Reply};
        let uploads = self.fake.uploads.lock().unwrap().clone();
        self.fake
            .messages(|v| v["to"] == USER)
            .into_iter()
            .map(|v| match v["type"].as_str() {
                Some("document") => Reply {
                    text: v["document"]["caption"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned(),
                    files: uploads
                        .get(v["document"]["id"].as_str().unwrap_or_default())
                        .map(|raw| multipart_files(raw))
                        .unwrap_or_default(),
                },
                _ => Reply {
                    text: v["text"]["body"].as_str().unwrap_or_default().to_owned(),
                    files: Vec::new(),
                },
            })
            .collect()
    }
}

crate::channel_suite!(wa_world);
