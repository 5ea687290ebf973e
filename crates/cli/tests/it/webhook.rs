//! The generic webhook (SPEC §9.2.6) end to end: the real `pinch host`
//! daemon configured from a file, a real HTTP client posting to its
//! listener, and a fake callback server in the test receiving the agent's
//! replies. Bad and missing signatures, an unknown hook, an over-size
//! body, a retried POST stored once, a 503 from the callback retried, and
//! a host killed after answering 200 delivering the reply after restart.
//! Issue 14: a captured request replayed with a new delivery id or a
//! forged event header, a stale or future timestamp, and the old body-only
//! signature are refused; an exact replay inside the window is the same
//! single row.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};

use crate::common::platform::{self, Platform, BAD_UTF8, REPLACED, WAIT};
use crate::common::*;

const SECRET: &str = "0123456789abcdef-test-secret";

/// One POST the callback got: a valid signature (if it was one), the
/// idempotency key, the JSON body.
type Got = (Option<String>, Option<String>, serde_json::Value);

/// What the fake callback server saw, and the status it answers with.
#[derive(Default)]
struct Callback {
    got: Mutex<Vec<Got>>,
    status: AtomicU16,
}

async fn callback_server(state: Arc<Callback>) -> SocketAddr {
    use axum::extract::State;
    use axum::http::HeaderMap;
    let app = axum::Router::new()
        .route(
            "/cb",
            axum::routing::post(
                |State(s): State<Arc<Callback>>, h: HeaderMap, body: axum::body::Bytes| async move {
                    let key = h
                        .get("idempotency-key")
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned);
                    // The reply must carry the documented signature: the
                    // HMAC computed here, over the timestamp, the delivery id
                    // (= the idempotency key) and the event, compared.
                    let hv = |n: &str| h.get(n).and_then(|v| v.to_str().ok()).map(str::to_owned);
                    let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
                    let event = if v.get("notice").is_some() {
                        "notice"
                    } else {
                        "reply"
                    };
                    let ts = hv("x-pinch-timestamp").and_then(|t| t.parse::<u64>().ok());
                    let sig = match (
                        ts,
                        hv("x-pinch-delivery"),
                        hv("x-pinch-event"),
                        hv("x-pinch-signature"),
                    ) {
                        (Some(ts), Some(d), Some(e), Some(given))
                            if ts.abs_diff(now()) <= 300
                                && Some(d.as_str()) == key.as_deref()
                                && e == event
                                && given == hmac_v1(ts, &d, &e, &body) =>
                        {
                            Some(given)
                        }
                        _ => None,
                    };
                    s.got.lock().unwrap().push((sig, key, v));
                    axum::http::StatusCode::from_u16(s.status.load(Ordering::SeqCst)).unwrap()
                },
            ),
        )
        .with_state(state);
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    addr
}

/// A `platform::Setup` and the port of the host's HTTP listener.
struct Setup {
    p: platform::Setup,
    port: u16,
}

impl std::ops::Deref for Setup {
    type Target = platform::Setup;
    fn deref(&self) -> &platform::Setup {
        &self.p
    }
}

fn setup(callback: SocketAddr) -> Setup {
    setup_scripted(callback, "[[rule]]\nreply = \"webhook handled\"\n")
}

fn setup_scripted(callback: SocketAddr, script: &str) -> Setup {
    let port = free_port();
    let p = platform::setup(Platform {
        channel: "webhook",
        owner: None,
        chats: &[("mg-hook", "ci", false, "pattern")],
        script,
        config: format!(
            "[http]\nlisten = \"127.0.0.1:{port}\"\n\
             [webhooks.ci]\nsecret_env = \"PINCH_TEST_HOOK_SECRET\"\ncallback_url = \"http://{callback}/cb\"\nmax_body = 4096\n"
        ),
        env: &[("PINCH_TEST_HOOK_SECRET", SECRET)],
    });
    Setup { p, port }
}

/// A callback server answering `status`, and a webhook setup calling it.
fn with_callback(rt: &tokio::runtime::Runtime, status: u16) -> (Arc<Callback>, Setup) {
    let cb = Arc::new(Callback {
        status: AtomicU16::new(status),
        ..Default::default()
    });
    let cb_addr = rt.block_on(callback_server(cb.clone()));
    (cb, setup(cb_addr))
}

fn daemon(s: &Setup) -> Daemon {
    let d = platform::daemon(s);
    wait_for("the HTTP listener", WAIT, || {
        std::net::TcpStream::connect(("127.0.0.1", s.port)).is_ok()
    });
    d
}

/// `v1=<hex HMAC-SHA256>` of `v1:<ts>:<delivery>:<event>:<body>` with the
/// hook's secret, as the README documents it — computed here with ring, not
/// with the code under test, so a host that signs or checks anything else
/// fails these tests.
fn hmac_v1(ts: u64, delivery: &str, event: &str, body: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, SECRET.as_bytes());
    let mut msg = format!("v1:{ts}:{delivery}:{event}:").into_bytes();
    msg.extend_from_slice(body);
    let tag = ring::hmac::sign(&key, &msg);
    let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("v1={hex}")
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// The headers of a correctly signed request (event `push`, timestamp now).
fn signed(body: &[u8], delivery: &str) -> Vec<(&'static str, String)> {
    signed_at(body, delivery, "push", now())
}

fn signed_at(body: &[u8], delivery: &str, event: &str, ts: u64) -> Vec<(&'static str, String)> {
    vec![
        ("x-pinch-timestamp", ts.to_string()),
        ("x-pinch-delivery", delivery.to_owned()),
        ("x-pinch-event", event.to_owned()),
        ("x-pinch-signature", hmac_v1(ts, delivery, event, body)),
    ]
}

/// `headers` with `name` set to `value` (or removed with `None`).
fn with(
    mut headers: Vec<(&'static str, String)>,
    name: &'static str,
    value: Option<&str>,
) -> Vec<(&'static str, String)> {
    headers.retain(|(k, _)| *k != name);
    if let Some(v) = value {
        headers.push((name, v.to_owned()));
    }
    headers
}

async fn post(
    port: u16,
    hook: &str,
    body: &[u8],
    headers: &[(&'static str, String)],
) -> (u16, String) {
    let c = reqwest::Client::new();
    let mut r = c
        .post(format!("http://127.0.0.1:{port}/hooks/{hook}"))
        .body(body.to_vec());
    for (k, v) in headers {
        r = r.header(*k, v);
    }
    let resp = r.send().await.unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}

/// Rows stored for a delivery id, over all sessions of `main`.
fn stored(data: &Path, delivery: &str) -> i64 {
    let mut n = 0;
    for d in std::fs::read_dir(data.join("sessions/main"))
        .into_iter()
        .flatten()
    {
        let c = inbound(&d.unwrap().path());
        n += c
            .query_row(
                "SELECT count(*) FROM messages_in WHERE id = ?1 AND kind = 'webhook'",
                [format!("hook-ci-{delivery}:main")],
                |r| r.get::<_, i64>(0),
            )
            .unwrap();
    }
    n
}

fn replies_to(cb: &Callback, delivery: &str) -> Vec<Got> {
    cb.got
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, _, v)| v["in_reply_to"] == format!("hook-ci-{delivery}"))
        .cloned()
        .collect()
}

#[test]
fn signed_posts_are_stored_once_answered_by_callback_and_refusals_are_clear() {
    let rt = rt();
    let (cb, s) = with_callback(&rt, 200);
    let _d = daemon(&s);
    let body = br#"{"ref":"main","commits":3}"#;

    // Refusals: no signature, a wrong one, an unknown hook, a body over the cap.
    let (st, msg) = rt.block_on(post(
        s.port,
        "ci",
        body,
        &with(signed(body, "x1"), "x-pinch-signature", None),
    ));
    assert_eq!(st, 401, "{msg}");
    assert!(msg.contains("missing X-Pinch-Signature"), "{msg}");
    let (st, msg) = rt.block_on(post(s.port, "ci", body, &signed(b"another body", "x1")));
    assert_eq!(st, 401, "{msg}");
    assert!(msg.contains("bad signature"), "{msg}");
    let (st, msg) = rt.block_on(post(s.port, "nope", body, &signed(body, "x1")));
    assert_eq!(st, 404, "{msg}");
    assert!(msg.contains("no webhook named \\\"nope\\\""), "{msg}");
    let big = vec![b'x'; 5000];
    let (st, msg) = rt.block_on(post(s.port, "ci", &big, &signed(&big, "x1")));
    assert_eq!(st, 413, "{msg}");
    // The delivery id is signed, so it is required.
    let (st, msg) = rt.block_on(post(
        s.port,
        "ci",
        body,
        &with(signed(body, "x1"), "x-pinch-delivery", None),
    ));
    assert_eq!(st, 401, "{msg}");
    assert!(msg.contains("missing X-Pinch-Delivery"), "{msg}");
    assert_eq!(stored(&s.data, "x1"), 0, "nothing refused is stored");

    // A good POST: 200 only once committed; a retry with the same delivery id is stored once.
    let (st, msg) = rt.block_on(post(s.port, "ci", body, &signed(body, "d-1")));
    assert_eq!(st, 200, "{msg}");
    assert!(msg.contains("\"ok\":true"), "{msg}");
    assert_eq!(
        stored(&s.data, "d-1"),
        1,
        "a 200 means the row is committed"
    );
    let (st, _) = rt.block_on(post(s.port, "ci", body, &signed(body, "d-1")));
    assert_eq!(st, 200);
    assert_eq!(stored(&s.data, "d-1"), 1, "a retried POST is stored once");

    // The stored row is a `webhook` row with the parsed payload.
    let dir = std::fs::read_dir(s.data.join("sessions/main"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let content: String = inbound(&dir)
        .query_row(
            "SELECT content FROM messages_in WHERE id = 'hook-ci-d-1:main'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(&content).unwrap();
    assert_eq!(v["source"], "ci");
    assert_eq!(v["event"], "push");
    assert_eq!(v["payload"]["commits"], 3);

    // The agent's reply reaches the callback, signed, with the row id as idempotency key.
    wait_for("the reply at the callback", WAIT, || {
        !replies_to(&cb, "d-1").is_empty()
    });
    let (sig, key, v) = replies_to(&cb, "d-1").remove(0);
    assert!(
        sig.is_some(),
        "the reply carries the HMAC of its timestamp, delivery id, event and body with the hook's secret"
    );
    assert_eq!(v["text"], "webhook handled");
    assert_eq!(v["hook"], "ci");
    assert_eq!(key.as_deref(), v["id"].as_str());
}

#[test]
fn a_failing_callback_is_retried_and_a_killed_host_loses_nothing() {
    let rt = rt();
    // The callback is down (503) until the host has been killed and restarted.
    let (cb, s) = with_callback(&rt, 503);
    let mut d = daemon(&s);
    let body = br#"{"job":"nightly","status":"failed"}"#;
    let (st, msg) = rt.block_on(post(s.port, "ci", body, &signed(body, "d-2")));
    assert_eq!(st, 200, "{msg}");
    // The reply was tried once (503: retryable), then the host dies hard.
    wait_for("a first callback attempt", WAIT, || {
        !replies_to(&cb, "d-2").is_empty()
    });
    d.0.kill().unwrap();
    d.0.wait().unwrap();
    cb.status.store(200, Ordering::SeqCst);
    let tried = replies_to(&cb, "d-2").len();
    let _d2 = daemon(&s);
    wait_for("the reply delivered after the restart", WAIT, || {
        replies_to(&cb, "d-2").len() > tried
    });
    let all = replies_to(&cb, "d-2");
    assert!(all.iter().all(|(_, _, v)| v["text"] == "webhook handled"));
    let keys: std::collections::HashSet<_> = all.iter().map(|(_, k, _)| k.clone()).collect();
    assert_eq!(
        keys.len(),
        1,
        "every attempt carries the same idempotency key: {all:?}"
    );
    assert_eq!(stored(&s.data, "d-2"), 1);
    // The ledger says delivered.
    let dir = std::fs::read_dir(s.data.join("sessions/main"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let key = keys.into_iter().next().unwrap().unwrap();
    wait_for("the ledger entry", WAIT, || {
        ledger_db(&dir)
            .query_row(
                "SELECT status FROM delivered WHERE message_out_id = ?1",
                [&key],
                |r| r.get::<_, String>(0),
            )
            .is_ok_and(|s| s == "delivered")
    });
}

/// Issue 14: what an attacker who captured one signed POST (a log, a
/// proxy, a leaked request dump) can do with it.
#[test]
fn a_captured_post_cannot_be_replayed_reworded_or_replayed_later() {
    let rt = rt();
    let (_cb, s) = with_callback(&rt, 200);
    let _d = daemon(&s);
    let body = br#"{"action":"deploy","env":"prod"}"#;
    let captured_ts = now();
    let captured = signed_at(body, "r-1", "push", captured_ts);
    let (st, msg) = rt.block_on(post(s.port, "ci", body, &captured));
    assert_eq!(st, 200, "{msg}");
    assert_eq!(stored(&s.data, "r-1"), 1);

    // The same request again, inside the window: acknowledged, still one row.
    let (st, msg) = rt.block_on(post(s.port, "ci", body, &captured));
    assert_eq!(st, 200, "{msg}");
    assert!(msg.contains("hook-ci-r-1"), "the same id: {msg}");
    assert_eq!(
        stored(&s.data, "r-1"),
        1,
        "a replayed delivery id is not a second message"
    );

    // A new delivery id (to dodge the dedup), or a forged event header: the signature breaks.
    for (what, headers) in [
        (
            "a new delivery id",
            with(captured.clone(), "x-pinch-delivery", Some("r-2")),
        ),
        (
            "a forged event",
            with(captured.clone(), "x-pinch-event", Some("release")),
        ),
        (
            "the event removed",
            with(captured.clone(), "x-pinch-event", None),
        ),
        (
            "a moved timestamp",
            with(
                captured.clone(),
                "x-pinch-timestamp",
                Some(&(captured_ts + 1).to_string()),
            ),
        ),
    ] {
        let (st, msg) = rt.block_on(post(s.port, "ci", body, &headers));
        assert_eq!(st, 401, "{what}: {msg}");
        assert!(msg.contains("bad signature"), "{what}: {msg}");
    }
    assert_eq!(
        stored(&s.data, "r-2"),
        0,
        "the reworded replay stored nothing"
    );

    // A request signed more than 5 minutes ago (or ahead): stale.
    for ts in [now() - 301, now() + 400] {
        let (st, msg) = rt.block_on(post(
            s.port,
            "ci",
            body,
            &signed_at(body, "r-3", "push", ts),
        ));
        assert_eq!(st, 401, "{msg}");
        assert!(
            msg.contains("stale X-Pinch-Timestamp") && msg.contains("300 s"),
            "{msg}"
        );
    }
    assert_eq!(stored(&s.data, "r-3"), 0);

    // The old body-only signature (ours or GitHub's) is refused with the way to sign.
    let old = format!(
        "sha256={}",
        pinch_channels::http::sign(SECRET.as_bytes(), body)
    );
    for name in ["x-pinch-signature", "x-hub-signature-256"] {
        let headers = with(
            with(captured.clone(), "x-pinch-signature", None),
            name,
            Some(&old),
        );
        let headers = with(headers, "x-pinch-delivery", Some("r-4"));
        let (st, msg) = rt.block_on(post(s.port, "ci", body, &headers));
        assert_eq!(st, 401, "{name}: {msg}");
        assert!(
            msg.contains("only the body") && msg.contains("v1:<X-Pinch-Timestamp>"),
            "{name}: {msg}"
        );
    }
    assert_eq!(stored(&s.data, "r-4"), 0);
}

#[test]
fn a_config_without_a_secret_is_refused_with_the_fix() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("pinch.toml");
    std::fs::write(
        &cfg,
        "[webhooks.ci]\ncallback_url = \"http://127.0.0.1:1/cb\"\n",
    )
    .unwrap();
    let out = std::process::Command::new(PINCH)
        .args([
            "host",
            "--provider",
            "scripted",
            "--sandbox",
            "process",
            "--data-dir",
        ])
        .arg(tmp.path().join("data"))
        .arg("--config")
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("[webhooks.ci]") && err.contains("secret_env"),
        "{err}"
    );
}

/// A signed JSON body with bytes that are not UTF-8 in one of its strings:
/// stored with U+FFFD as JSON (not as one opaque string), answered, the
/// replacement logged; the next POST goes through as usual.
#[test]
fn a_body_with_invalid_utf8_is_stored_with_replacement_and_the_next_goes_through() {
    let rt = rt();
    let (cb, s) = with_callback(&rt, 200);
    let _d = daemon(&s);
    let body = platform::invalid_utf8(
        format!(r#"{{"job":"nightly","note":"caf{BAD_UTF8} ok"}}"#).as_bytes(),
    );
    assert!(std::str::from_utf8(&body).is_err());
    let (st, msg) = rt.block_on(post(s.port, "ci", &body, &signed(&body, "u-1")));
    assert_eq!(st, 200, "{msg}");
    let content = stored_content(&s.data, "u-1").expect("the row");
    let v: serde_json::Value = serde_json::from_str(&content).unwrap();
    assert!(
        v.to_string()
            .contains(&format!(r#""note":"caf{REPLACED} ok""#)),
        "the payload is JSON with U+FFFD: {content}"
    );
    wait_for("the reply", WAIT, || !replies_to(&cb, "u-1").is_empty());
    // The barrier.
    let next = br#"{"job":"nightly","note":"fine"}"#;
    let (st, msg) = rt.block_on(post(s.port, "ci", next, &signed(next, "u-2")));
    assert_eq!(st, 200, "{msg}");
    wait_for("the barrier's reply", WAIT, || {
        !replies_to(&cb, "u-2").is_empty()
    });
    assert!(
        s.log().contains("invalid UTF-8"),
        "the replacement is logged"
    );
}

/// The stored content of a delivery's row (any session of `main`).
fn stored_content(data: &Path, delivery: &str) -> Option<String> {
    std::fs::read_dir(data.join("sessions/main"))
        .into_iter()
        .flatten()
        .find_map(|d| {
            inbound(&d.unwrap().path())
                .query_row(
                    "SELECT content FROM messages_in WHERE id = ?1",
                    [format!("hook-ci-{delivery}:main")],
                    |r| r.get::<_, String>(0),
                )
                .ok()
        })
}

/// The webhook's world of the shared channel suite: a sender POSTing
/// signed events (retrying until it gets a 200, as GitHub and Stripe do),
/// the replies on the callback. A webhook carries no files.
struct HookWorld {
    rt: tokio::runtime::Runtime,
    cb: Arc<Callback>,
    s: Setup,
    n: std::sync::atomic::AtomicU32,
}

fn hook_world() -> Option<HookWorld> {
    let rt = rt();
    let cb = Arc::new(Callback {
        status: AtomicU16::new(200),
        ..Default::default()
    });
    let addr = rt.block_on(callback_server(cb.clone()));
    let script = format!(
        "{}\n[[rule]]\nreply = \"webhook handled\"\n",
        platform::SHARED_RULES
    );
    let s = setup_scripted(addr, &script);
    Some(HookWorld {
        rt,
        cb,
        s,
        n: Default::default(),
    })
}

impl crate::common::suite::World for HookWorld {
    fn setup(&self) -> &platform::Setup {
        &self.s
    }

    fn ready(&self) {
        wait_for("the HTTP listener", WAIT, || {
            std::net::TcpStream::connect(("127.0.0.1", self.s.port)).is_ok()
        });
    }

    fn say(&self, text: &str, _file: Option<(&str, &[u8])>) -> String {
        let n = self.n.fetch_add(1, Ordering::SeqCst);
        let delivery = format!("suite-d{n}");
        let body = serde_json::json!({ "note": text }).to_string().into_bytes();
        // The agent reads a webhook as `webhook ci: <event>` (the body is
        // its payload): the text goes in the event, as far as it may.
        let event: String = text
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect();
        let port = self.s.port;
        let d2 = delivery.clone();
        self.rt.spawn(async move {
            for _ in 0..600 {
                let event = event.clone();
                // Signed afresh each time: the timestamp must be recent.
                let c = reqwest::Client::new();
                let mut r = c
                    .post(format!("http://127.0.0.1:{port}/hooks/ci"))
                    .body(body.clone());
                for (k, v) in signed_at(&body, &d2, &event, now()) {
                    r = r.header(k, v);
                }
                if r.send().await.is_ok_and(|r| r.status().is_success()) {
                    return;
                }
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        });
        format!("hook-ci-{delivery}")
    }

    fn replies(&self) -> Vec<crate::common::suite::Reply> {
        // A callback retried with the same idempotency key is one reply.
        let mut keys = std::collections::HashSet::new();
        self.cb
            .got
            .lock()
            .unwrap()
            .iter()
            .filter(|(sig, key, v)| {
                sig.is_some() && v.get("text").is_some() && keys.insert(key.clone())
            })
            .map(|(_, _, v)| crate::common::suite::Reply {
                text: v["text"].as_str().unwrap_or_default().to_owned(),
                files: Vec::new(),
            })
            .collect()
    }

    fn files(&self) -> bool {
        false
    }
}

crate::channel_suite!(hook_world);
