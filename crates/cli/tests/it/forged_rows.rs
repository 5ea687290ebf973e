//! Issue 14, break 3: the host must not trust the address on rows the
//! agent writes. A real host (web chat, a webhook with a real callback
//! server, the terminal socket, a recording fake channel) and a real
//! runner in a real bwrap sandbox, whose scripted model calls `shell` to
//! run `sqlite3` on its own `out/outbound.db`, as the attacker did:
//! forged `messages_out` rows addressed to another web user, a webhook,
//! the terminal, a channel that does not exist, another conversation of a
//! real channel, another thread, and half an address. None is delivered;
//! each is failed with a reason the agent reads and audited; the
//! session's normal reply still arrives. And a row to a granted but
//! unreachable user (no browser tab) does not hold back the next reply.
//!
//! The agent under attack is `stranger`, wired to the fake conversation
//! `fake`/`c1` and granted nothing else (except `carol` in the wedge test).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use crate::common::*;
use futures_util::{SinkExt, StreamExt};
use pinch_channels::cli_socket::ServerMsg;
use pinch_channels::fake::{FakeChannel, Sent};
use pinch_channels::{AckOutcome, Capabilities, InboundEvent};
use pinch_host::db::central::Central;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

const WAIT: Duration = Duration::from_secs(60);
const SECRET: &str = "forged-rows-hook-secret-0123456789";

/// Forged rows: (id, channel_type, platform_id, thread_id). Seqs are odd
/// and far above anything the runner allocated, as an attacker picks them.
type Forged = (
    &'static str,
    Option<&'static str>,
    Option<&'static str>,
    Option<&'static str>,
);
const FORGED: &[Forged] = &[
    ("forged-web-bob", Some("web"), Some("bob"), None),
    ("forged-web-dave", Some("web"), Some("dave"), None),
    ("forged-hook", Some("webhook"), Some("ci"), None),
    ("forged-cli", Some("cli"), Some("local"), None),
    ("forged-nochannel", Some("nochannel"), Some("x"), None),
    ("forged-fake-other", Some("fake"), Some("other-chat"), None),
    (
        "forged-thread",
        Some("fake"),
        Some("c1"),
        Some("other-thread"),
    ),
    ("forged-half", Some("web"), None, None),
];

/// The shell command the model runs: one INSERT per forged row, through
/// the sqlite3 CLI the sandbox sees under /usr. The first row also claims
/// to answer the message that started the turn.
fn attack_command() -> String {
    let sql_str = |v: Option<&str>| v.map_or("NULL".to_owned(), |s| format!("'{s}'"));
    let mut sql = String::new();
    for (i, (id, ct, pid, thread)) in FORGED.iter().enumerate() {
        let reply = if i == 0 { "'m1:stranger'" } else { "NULL" };
        sql.push_str(&format!(
            "INSERT INTO messages_out (id, seq, in_reply_to, timestamp, kind, channel_type, platform_id, thread_id, content) VALUES \
             ('{id}', {}, {reply}, strftime('%Y-%m-%dT%H:%M:%fZ','now'), 'chat', {}, {}, {}, '{{\"text\":\"FORGED {id}\"}}');\n",
            100_001 + 2 * i,
            sql_str(*ct),
            sql_str(*pid),
            sql_str(*thread),
        ));
    }
    format!("sqlite3 -cmd '.timeout 5000' /pinch/out/outbound.db <<'SQL'\n{sql}SQL\necho inserted $(sqlite3 /pinch/out/outbound.db \"SELECT count(*) FROM messages_out WHERE id LIKE 'forged-%'\")")
}

fn script() -> String {
    let cmd = toml::Value::String(attack_command()).to_string();
    format!(
        r#"
[[rule]]
contains = "attack"
tool = "shell"
args = {{ command = {cmd} }}

[[rule]]
after_tool = "shell"
reply = "attack done: {{tool_result}}"

[[rule]]
contains = "wedge"
tool = "send_message"
args = {{ to = "carol", text = "hello carol" }}

[[rule]]
after_tool = "send_message"
reply = "still here"

[[rule]]
contains = "ping"
reply = "pong"
"#
    )
}

/// What the webhook's callback server received.
#[derive(Default)]
struct Callback {
    got: Mutex<Vec<String>>,
}

async fn callback_server(state: Arc<Callback>) -> SocketAddr {
    use axum::extract::State;
    let app = axum::Router::new()
        .route(
            "/cb",
            axum::routing::post(|State(s): State<Arc<Callback>>, body: String| async move {
                s.got.lock().unwrap().push(body);
                axum::http::StatusCode::OK
            }),
        )
        .with_state(state);
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    addr
}

struct World {
    rt: tokio::runtime::Runtime,
    host: Option<pinch_host::HostHandle>,
    fake: Arc<FakeChannel>,
    callback: Arc<Callback>,
    data: PathBuf,
    _tmp: tempfile::TempDir,
}

/// `stranger` wired to `fake`/`c1` (open to anyone); `grant_carol` also
/// grants it the web user `carol` as a destination.
fn world(grant_carol: bool) -> World {
    let tmp = tempfile::tempdir().unwrap();
    let rt = rt();
    let callback = Arc::new(Callback::default());
    let cb_addr = rt.block_on(callback_server(callback.clone()));
    let mut cfg = with_script(
        host_config(tmp.path(), pinch_host::sandbox::Choice::Bwrap),
        &script(),
    );
    cfg.http = Some(pinch_host::config::HttpSettings {
        listen: "127.0.0.1:0".parse().unwrap(),
        web: true,
        hooks: vec![pinch_channels::webhook::HookConfig {
            name: "ci".into(),
            secret: SECRET.into(),
            callback_url: Some(format!("http://{cb_addr}/cb")),
            max_body: 4096,
        }],
        metrics: false,
        hosts: vec![],
        allow_plaintext_remote: false,
    });
    let data = cfg.data_dir.clone();
    std::fs::create_dir_all(&data).unwrap();
    {
        let mut c = Central::open(&data.join("pinch.db")).unwrap();
        c.bootstrap("tester").unwrap();
        let t = "2026-01-01T00:00:00.000Z";
        let sql = |q: &str| c.conn.execute(q, [t]).unwrap();
        sql("INSERT INTO agent_groups (id, name, folder, provider, created_at) VALUES ('stranger', 'stranger', 'stranger', NULL, ?1)");
        sql("INSERT INTO messaging_groups (id, channel_type, platform_id, name, is_group, unknown_sender_policy, created_at)
             VALUES ('mg-fake', 'fake', 'c1', 'fake chat', 0, 'public', ?1)");
        sql("INSERT INTO wirings (id, messaging_group_id, agent_group_id, engage_mode, engage_pattern, sender_scope, ignored_message_policy, session_mode, priority, created_at)
             VALUES ('w-fake', 'mg-fake', 'stranger', 'pattern', '.', 'all', 'drop', 'shared', 0, ?1)");
        if grant_carol {
            sql("INSERT INTO messaging_groups (id, channel_type, platform_id, name, is_group, unknown_sender_policy, created_at)
                 VALUES ('mg-web-carol', 'web', 'carol', 'carol', 0, 'strict', ?1)");
            sql("INSERT INTO agent_destinations (agent_group_id, local_name, target_type, target_id, created_at)
                 VALUES ('stranger', 'carol', 'channel', 'mg-web-carol', ?1)");
        }
    }
    let slot: Arc<OnceLock<Arc<FakeChannel>>> = Default::default();
    let s2 = slot.clone();
    cfg.extra_channels.push(Arc::new(move |tx| {
        let ch = FakeChannel::new(
            "fake",
            Capabilities {
                max_text: 4000,
                ..Default::default()
            },
            tx,
        );
        s2.set(ch.clone()).ok();
        ch
    }));
    let host = rt.block_on(pinch_host::start(cfg)).unwrap();
    World {
        rt,
        host: Some(host),
        fake: slot.get().unwrap().clone(),
        callback,
        data,
        _tmp: tmp,
    }
}

impl World {
    fn say(&self, id: &str, text: &str) {
        let ev = InboundEvent {
            channel_type: "fake".into(),
            platform_id: "c1".into(),
            message_id: id.into(),
            sender_id: "ann".into(),
            sender_name: Some("Ann".into()),
            text: text.into(),
            is_mention: true,
            ..Default::default()
        };
        let out = self.rt.block_on(self.fake.send(ev));
        assert!(
            matches!(out, AckOutcome::Stored { routed: 1, .. }),
            "{out:?}"
        );
    }

    fn wait_fake(&self, what: &str, pred: impl FnMut(&Sent) -> bool) -> Sent {
        self.rt
            .block_on(self.fake.wait_for(WAIT, pred))
            .unwrap_or_else(|| {
                panic!(
                    "timed out waiting for {what}; sent so far: {:#?}",
                    self.fake.sent()
                )
            })
    }

    fn session_dir(&self) -> PathBuf {
        let c = pinch_proto::rusqlite::Connection::open(self.data.join("pinch.db")).unwrap();
        let id: String = c
            .query_row(
                "SELECT id FROM sessions WHERE agent_group_id = 'stranger'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        self.data.join("sessions/stranger").join(id)
    }

    fn web_addr(&self) -> SocketAddr {
        self.host.as_ref().unwrap().http_addr.unwrap()
    }

    fn shutdown(mut self) {
        let h = self.host.take().unwrap();
        self.rt.block_on(h.shutdown()).unwrap();
    }
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A browser tab of `user`, as the page connects (past hello and history).
async fn tab(addr: SocketAddr, data: &Path, user: &str) -> Ws {
    let token = pinch_host::web_token(data).unwrap();
    let mut ws = web_socket(addr, &token, user).await;
    for want in ["hello", "history"] {
        assert_eq!(frame(&mut ws).await["type"], want);
    }
    ws
}

async fn frame(ws: &mut Ws) -> Value {
    loop {
        let m = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("a frame in time")
            .expect("socket open")
            .unwrap();
        if let Message::Text(t) = m {
            return serde_json::from_str(&t).unwrap();
        }
    }
}

/// Frames a tab got before the answer to a message it sends now (the
/// host answers every message, so anything pushed earlier is read first).
async fn frames_before_barrier(ws: &mut Ws, cid: &str) -> Vec<Value> {
    ws.send(Message::Text(
        json!({"type": "message", "text": "barrier", "client_id": cid})
            .to_string()
            .into(),
    ))
    .await
    .unwrap();
    let mut before = Vec::new();
    loop {
        let v = frame(ws).await;
        if v["client_id"] == cid {
            return before;
        }
        before.push(v);
    }
}

/// The ledger entry of an outbound row: (status, last_error).
fn ledger(dir: &Path, id: &str) -> Option<(String, Option<String>)> {
    use pinch_proto::rusqlite::OptionalExtension;
    ledger_db(dir)
        .query_row(
            "SELECT status, last_error FROM delivered WHERE message_out_id = ?1",
            [id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()
        .unwrap()
}

#[test]
fn forged_addresses_are_refused_told_to_the_agent_and_audited_and_the_reply_still_arrives() {
    if !bwrap_or_skip() {
        return;
    }
    let w = world(false);
    let addr = w.web_addr();
    // Bob has a tab open (and never talked to this agent); a terminal
    // client is connected; the callback server listens.
    let mut bob = w.rt.block_on(tab(addr, &w.data, "bob"));
    let mut cli = Client::connect(&w.data.join("run/cli.sock"));

    w.say("m1", "attack");
    let reply = w.wait_fake("the normal reply after the forged rows", |s| {
        s.text().starts_with("attack done")
    });
    assert_eq!(reply.to().platform_id, "c1");
    assert!(
        reply.text().contains(&format!("inserted {}", FORGED.len())),
        "the attack ran in the sandbox: {}",
        reply.text()
    );

    let dir = w.session_dir();
    let reply_id = match &reply {
        Sent::Message { msg, .. } => msg.id.clone(),
        _ => unreachable!(),
    };
    // Every forged row: failed for good with the reason, and the agent is
    // told (an action_result row in its inbound.db, read in its next turn).
    for (id, ct, pid, _) in FORGED {
        let (status, err) = ledger(&dir, id).unwrap_or_else(|| panic!("{id} has no ledger entry"));
        let err = err.unwrap_or_default();
        assert_eq!(status, "failed", "{id}: {err}");
        assert!(err.starts_with("not delivered: "), "{id}: {err}");
        if let (Some(ct), Some(pid)) = (ct, pid) {
            assert!(
                err.contains(&format!("{ct}/{pid}")),
                "{id}: the reason names the claimed address: {err}"
            );
        }
        let told: String = inbound(&dir)
            .query_row(
                "SELECT content FROM messages_in WHERE id = ?1 AND kind = 'system'",
                [format!("deliver-failed:{id}")],
                |r| r.get(0),
            )
            .unwrap_or_else(|e| panic!("{id}: the agent was not told: {e}"));
        let v: Value = serde_json::from_str(&told).unwrap();
        assert_eq!(v["result"]["message_out_id"], *id, "{told}");
        assert_eq!(v["result"]["error"].as_str(), Some(err.as_str()), "{told}");
    }
    assert!(err_of(&dir, "forged-web-bob")
        .contains("neither this session's conversation nor one of your destinations"));
    assert!(err_of(&dir, "forged-thread").contains("thread \"other-thread\""));
    assert!(err_of(&dir, "forged-half").contains("no platform id"));
    // (The ledger entry follows the channel's call.)
    wait_for("the reply recorded as delivered", WAIT, || {
        ledger(&dir, &reply_id).is_some_and(|l| l.0 == "delivered")
    });

    // Nothing reached a place: not the fake channel's other conversation
    // or thread, not the webhook callback, not bob's tab, not the terminal.
    for s in w.fake.sent() {
        assert!(!s.text().contains("FORGED"), "forged text sent: {s:?}");
        assert_eq!(
            (s.to().platform_id.as_str(), s.to().thread_id.as_deref()),
            ("c1", None),
            "{s:?}"
        );
    }
    assert!(
        w.callback.got.lock().unwrap().is_empty(),
        "the webhook callback got {:?}",
        w.callback.got.lock().unwrap()
    );
    cli.send_text("ping", "p1");
    loop {
        match cli.recv().expect("the host answers the terminal") {
            ServerMsg::Message { text, .. } => panic!("the terminal got {text:?}"),
            ServerMsg::Accepted {
                client_id: Some(c), ..
            } if c == "p1" => break,
            _ => {}
        }
    }

    // (Bob's barrier message asks the owner, on the terminal, to register him: after the terminal's check.)
    let bob_saw = w.rt.block_on(frames_before_barrier(&mut bob, "b1"));
    assert!(
        bob_saw.iter().all(|v| v["type"] != "message"),
        "bob got {bob_saw:?}"
    );
    // Audited: one row for the session, counting every refusal.
    let audit = pinch_proto::rusqlite::Connection::open(w.data.join("pinch.db")).unwrap();
    wait_for("the refusals in the audit", WAIT, || {
        audit
            .query_row(
                "SELECT message_count FROM dropped_messages WHERE reason = 'address_refused' AND agent_group_id = 'stranger' AND platform_id = ?1",
                [dir.file_name().unwrap().to_str().unwrap()],
                |r| r.get::<_, i64>(0),
            )
            .is_ok_and(|n| n == FORGED.len() as i64)
    });

    // The session goes on: the next message is answered as usual.
    w.say("m2", "ping");
    w.wait_fake("the next reply", |s| s.text() == "pong");
    drop(cli);
    w.shutdown();
}

fn err_of(dir: &Path, id: &str) -> String {
    ledger(dir, id).and_then(|l| l.1).unwrap_or_default()
}

#[test]
fn a_row_to_an_unreachable_user_does_not_hold_back_the_next_reply() {
    if !bwrap_or_skip() {
        return;
    }
    let w = world(true);
    // carol is a granted destination, but no tab of hers is open: her
    // message waits, and the reply to the conversation goes out anyway.
    w.say("m1", "wedge");
    w.wait_fake("the reply after the message to carol", |s| {
        s.text() == "still here"
    });
    let dir = w.session_dir();
    let carol_row: String = outbound(&dir)
        .query_row(
            "SELECT id FROM messages_out WHERE platform_id = 'carol'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(
        ledger(&dir, &carol_row),
        None,
        "carol's message is still waiting, neither failed nor delivered"
    );
    // And the next turn's reply too.
    w.say("m2", "ping");
    w.wait_fake("the next reply", |s| s.text() == "pong");
    // When carol opens a tab, her message arrives.
    let addr = w.web_addr();
    w.rt.block_on(async {
        let mut carol = tab(addr, &w.data, "carol").await;
        loop {
            let v = frame(&mut carol).await;
            if v["type"] == "message" {
                assert_eq!(v["text"], "hello carol", "{v}");
                break;
            }
        }
    });
    wait_for("carol's message recorded as delivered", WAIT, || {
        ledger(&dir, &carol_row).is_some_and(|l| l.0 == "delivered")
    });
    w.shutdown();
}
