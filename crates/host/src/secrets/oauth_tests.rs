//! The OAuth refresh against a fake token endpoint: a real HTTP/1.1
//! server on 127.0.0.1 that counts requests, measures how many are in
//! flight at once and remembers every token it issued and until when it
//! is valid.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::oauth::Tokens;
use super::{Approve, Form, NewSecret, OAuthValue, Store, Value};

/// How the fake endpoint answers.
#[derive(Clone)]
enum Mode {
    /// A new access token; the refresh token stays valid.
    Plain,
    /// A new access token and a new refresh token (`rt-<n+1>`); only the
    /// newest refresh token is accepted, an old one is `invalid_grant`.
    Rotate,
    /// `400 {"error":"invalid_grant", ...}`.
    InvalidGrant,
    /// `400` whose description echoes the request body (a careless
    /// endpoint), so an error could carry the refresh token.
    Echo,
}

#[derive(Default)]
struct Seen {
    requests: usize,
    in_flight: usize,
    max_in_flight: usize,
    /// Each request's form fields, in arrival order.
    forms: Vec<HashMap<String, String>>,
    /// Each request's arrival.
    arrivals: Vec<Instant>,
    /// Each issued token in order: (token, issued at, expires at).
    issued: Vec<(String, Instant, Instant)>,
    /// The refresh token the endpoint accepts (rotation mode).
    current_refresh: String,
}

struct Endpoint {
    url: String,
    seen: Arc<Mutex<Seen>>,
}

impl Endpoint {
    /// Serves on 127.0.0.1:0; each answer takes `delay`, tokens live
    /// `expires_in` seconds.
    async fn start(mode: Mode, expires_in: u64, delay: Duration) -> Endpoint {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/token", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Seen {
            current_refresh: "rt-1".into(),
            ..Seen::default()
        }));
        let s2 = seen.clone();
        tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                let (seen, mode) = (s2.clone(), mode.clone());
                tokio::spawn(async move {
                    let _ = answer(conn, &seen, &mode, expires_in, delay).await;
                });
            }
        });
        Endpoint { url, seen }
    }

    fn seen(&self) -> std::sync::MutexGuard<'_, Seen> {
        self.seen.lock().unwrap()
    }
}

/// Reads one request, answers it after `delay`, closes the connection.
async fn answer(
    mut conn: TcpStream,
    seen: &Mutex<Seen>,
    mode: &Mode,
    expires_in: u64,
    delay: Duration,
) -> std::io::Result<()> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let (head_end, body_len, method) = loop {
        let n = conn.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut req = httparse::Request::new(&mut headers);
        if let httparse::Status::Complete(end) = req.parse(&buf).unwrap() {
            let len = req
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                .map_or(0, |h| {
                    std::str::from_utf8(h.value).unwrap().parse().unwrap()
                });
            break (end, len, req.method.unwrap().to_owned());
        }
    };
    while buf.len() < head_end + body_len {
        let n = conn.read(&mut chunk).await?;
        assert!(n > 0, "the client closed mid-body");
        buf.extend_from_slice(&chunk[..n]);
    }
    assert_eq!(method, "POST");
    let body = String::from_utf8(buf[head_end..head_end + body_len].to_vec()).unwrap();
    let form = parse_form(&body);
    {
        let mut s = seen.lock().unwrap();
        s.requests += 1;
        s.in_flight += 1;
        s.max_in_flight = s.max_in_flight.max(s.in_flight);
        s.forms.push(form.clone());
        s.arrivals.push(Instant::now());
    }
    // The endpoint's own work: long enough that overlapping refreshes
    // would be in flight together.
    tokio::time::sleep(delay).await;
    let (status, json) = {
        let mut s = seen.lock().unwrap();
        s.in_flight -= 1;
        let n = s.issued.len() + 1;
        let issue = |s: &mut Seen, extra: &str| {
            let token = format!("at-{n}");
            let now = Instant::now();
            s.issued
                .push((token.clone(), now, now + Duration::from_secs(expires_in)));
            format!(
                r#"{{"access_token":"{token}","expires_in":{expires_in},"token_type":"bearer"{extra}}}"#
            )
        };
        let grant_ok = form.get("grant_type").map(String::as_str) == Some("refresh_token");
        match mode {
            _ if !grant_ok => (400, r#"{"error":"unsupported_grant_type"}"#.to_owned()),
            Mode::Plain => (200, issue(&mut s, "")),
            Mode::Rotate if form.get("refresh_token") == Some(&s.current_refresh) => {
                let next = format!("rt-{}", s.forms.len() + 1);
                s.current_refresh = next.clone();
                (200, issue(&mut s, &format!(r#","refresh_token":"{next}""#)))
            }
            Mode::Rotate | Mode::InvalidGrant => (
                400,
                r#"{"error":"invalid_grant","error_description":"Token has been expired or revoked."}"#.to_owned(),
            ),
            Mode::Echo => (
                400,
                serde_json::json!({"error": "invalid_request", "error_description": format!("cannot parse {body}")})
                    .to_string(),
            ),
        }
    };
    let reason = if status == 200 { "OK" } else { "Bad Request" };
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        json.len()
    );
    conn.write_all(head.as_bytes()).await?;
    conn.write_all(json.as_bytes()).await?;
    conn.shutdown().await
}

/// `application/x-www-form-urlencoded` into its fields.
fn parse_form(body: &str) -> HashMap<String, String> {
    fn decode(s: &str) -> String {
        let b = s.as_bytes();
        let mut out = Vec::with_capacity(b.len());
        let mut i = 0;
        while i < b.len() {
            match b[i] {
                b'+' => out.push(b' '),
                b'%' if i + 2 < b.len() => {
                    let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap();
                    out.push(u8::from_str_radix(hex, 16).unwrap());
                    i += 2;
                }
                c => out.push(c),
            }
            i += 1;
        }
        String::from_utf8(out).unwrap()
    }
    body.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}

/// A store holding one OAuth secret `name` whose token URL is `url`.
fn store_with(
    name: &str,
    url: &str,
    refresh: &str,
    secret: Option<&str>,
) -> (tempfile::TempDir, Arc<Store>, OAuthValue) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let store = Arc::new(Store::new(&data, dir.path().join("key/secrets.key")));
    let v = OAuthValue {
        refresh_token: refresh.into(),
        client_id: "pinch-client.apps".into(),
        client_secret: secret.map(str::to_owned),
        token_url: url.into(),
        scope: None,
    };
    let s = NewSecret {
        name: name.into(),
        form: Form::Bearer,
        hosts: vec!["api.example.com".into()],
        groups: vec!["main".into()],
        approve: Approve::Never,
    };
    store.add(&s, &Value::OAuth(v.clone())).unwrap();
    (dir, store, v)
}

fn tokens() -> Arc<Tokens> {
    let tls = crate::proxy::tls_config(&[]).unwrap();
    Arc::new(Tokens::new(&tls).unwrap())
}

fn stored(store: &Store, name: &str) -> OAuthValue {
    match store.value(name).unwrap() {
        Value::OAuth(v) => v,
        other => panic!("secret {name} is {other:?}, not OAuth"),
    }
}

/// `n` callers released together, each with its own copy of `v`.
async fn burst(
    n: usize,
    t: &Arc<Tokens>,
    store: &Arc<Store>,
    name: &str,
    v: &OAuthValue,
) -> Vec<Result<String, String>> {
    let gate = Arc::new(tokio::sync::Barrier::new(n));
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let (t, store, name, v, gate) = (
                t.clone(),
                store.clone(),
                name.to_owned(),
                v.clone(),
                gate.clone(),
            );
            tokio::spawn(async move {
                gate.wait().await;
                t.access_token(&store, &name, &v).await
            })
        })
        .collect();
    let mut out = Vec::new();
    for task in tasks {
        out.push(task.await.unwrap());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn one_refresh_in_flight_under_load_and_tokens_renewed_before_expiry() {
    const LIFETIME: u64 = 2;
    let ep = Endpoint::start(Mode::Plain, LIFETIME, Duration::from_millis(150)).await;
    let (_dir, store, v) = store_with("api", &ep.url, "rt-1", None);
    let t = tokens();

    let first = burst(50, &t, &store, "api", &v).await;
    assert!(
        first.iter().all(|r| r.as_deref() == Ok("at-1")),
        "{first:?}"
    );
    assert_eq!(t.refreshes.load(Ordering::SeqCst), 1);
    assert_eq!(ep.seen().requests, 1);
    assert_eq!(ep.seen().forms[0]["refresh_token"], "rt-1");
    assert_eq!(ep.seen().forms[0]["client_id"], "pinch-client.apps");

    // Several callers for three lifetimes: every token handed out was
    // issued by the endpoint and is still valid when it is handed out.
    let until = Instant::now() + Duration::from_secs(3 * LIFETIME);
    let callers: Vec<_> = (0..6)
        .map(|_| {
            let (t, store, v, seen) = (t.clone(), store.clone(), v.clone(), ep.seen.clone());
            tokio::spawn(async move {
                let mut calls = 0u32;
                while Instant::now() < until {
                    let token = t.access_token(&store, "api", &v).await.unwrap();
                    let now = Instant::now();
                    let expires = {
                        let s = seen.lock().unwrap();
                        let found = s.issued.iter().find(|(k, _, _)| *k == token);
                        found
                            .unwrap_or_else(|| panic!("{token} was never issued"))
                            .2
                    };
                    assert!(
                        now < expires,
                        "{token} was handed out {:?} after it expired",
                        now - expires
                    );
                    calls += 1;
                    // Pacing, so the callers do not spin.
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                calls
            })
        })
        .collect();
    for c in callers {
        assert!(c.await.unwrap() > 100, "every caller kept calling");
    }

    let s = ep.seen();
    let refreshes = t.refreshes.load(Ordering::SeqCst) as usize;
    assert_eq!(refreshes, s.requests);
    assert_eq!(s.max_in_flight, 1, "refreshes overlapped");
    // One refresh per 0.8 lifetime (plus the endpoint's 150 ms): about
    // three in six seconds, never more than one per 0.8 lifetime.
    assert!(
        (3..=5).contains(&refreshes),
        "{refreshes} refreshes in {}s",
        3 * LIFETIME
    );
    let life = Duration::from_secs(LIFETIME);
    for k in 1..s.requests {
        let (ref prev, issued, expires) = s.issued[k - 1];
        let asked = s.arrivals[k];
        assert!(
            asked >= issued + life.mul_f64(0.8),
            "refresh {k} came {:?} after {prev} was issued: too early",
            asked - issued
        );
        assert!(
            asked < expires,
            "refresh {k} came only after {prev} expired"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rotated_refresh_token_is_stored_and_used_next() {
    let ep = Endpoint::start(Mode::Rotate, 1, Duration::from_millis(100)).await;
    let (_dir, store, v1) = store_with("mail", &ep.url, "rt-1", Some("cs-hidden"));
    let t = tokens();

    // Callers that read the value before the rotation (as the proxy does
    // per request) wait for the one refresh and share its token; none
    // spends the old refresh token again.
    let first = burst(20, &t, &store, "mail", &v1).await;
    assert!(
        first.iter().all(|r| r.as_deref() == Ok("at-1")),
        "{first:?}"
    );
    assert_eq!(ep.seen().requests, 1);
    assert_eq!(ep.seen().forms[0]["client_secret"], "cs-hidden");
    let v2 = stored(&store, "mail");
    assert_eq!(v2.refresh_token, "rt-2");
    assert_eq!(
        (v2.client_id.as_str(), v2.token_url.as_str()),
        (v1.client_id.as_str(), v1.token_url.as_str())
    );
    assert_eq!(
        t.access_token(&store, "mail", &v1).await.as_deref(),
        Ok("at-1"),
        "a stale caller gets the cached token"
    );
    assert_eq!(
        t.access_token(&store, "mail", &v2).await.as_deref(),
        Ok("at-1"),
        "the rotated value is the cached one"
    );
    assert_eq!(ep.seen().requests, 1);

    // The next refresh, once due (0.8 s), sends rt-2, even for a caller
    // still holding rt-1.
    let deadline = Instant::now() + Duration::from_secs(10);
    let token = loop {
        let token = t.access_token(&store, "mail", &v1).await.unwrap();
        if token != "at-1" {
            break token;
        }
        assert!(
            Instant::now() < deadline,
            "no refresh within 10 s of a 1 s token"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(token, "at-2");
    assert_eq!(ep.seen().requests, 2);
    assert_eq!(ep.seen().forms[1]["refresh_token"], "rt-2");
    assert_eq!(stored(&store, "mail").refresh_token, "rt-3");

    // A restarted host (no cache) refreshes with the stored rt-3.
    let fresh = tokens();
    let v3 = stored(&store, "mail");
    assert_eq!(
        fresh.access_token(&store, "mail", &v3).await.as_deref(),
        Ok("at-3")
    );
    assert_eq!(ep.seen().forms[2]["refresh_token"], "rt-3");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_grant_names_the_secret_and_the_fix_and_never_the_token() {
    let ep = Endpoint::start(Mode::InvalidGrant, 1, Duration::ZERO).await;
    let (_dir, store, v) = store_with("gmail", &ep.url, "rt-SECRET-4711", Some("cs-SECRET-0815"));
    let t = tokens();
    let err = t.access_token(&store, "gmail", &v).await.unwrap_err();
    assert!(err.contains("\"gmail\""), "{err}");
    assert!(err.contains("`pinch secrets oauth gmail`"), "{err}");
    assert!(err.contains("invalid_grant"), "{err}");
    assert!(!err.contains("SECRET"), "{err}");
    assert_eq!(ep.seen().forms[0]["refresh_token"], "rt-SECRET-4711");

    // An endpoint that echoes the request in its error does not carry the
    // refresh token or the client secret into the error either.
    let ep = Endpoint::start(Mode::Echo, 1, Duration::ZERO).await;
    let (_dir2, store, v) = store_with("echo", &ep.url, "1//rt-SECRET", Some("cs SECRET"));
    let err = t.access_token(&store, "echo", &v).await.unwrap_err();
    assert!(err.contains("invalid_request: cannot parse"), "{err}");
    assert!(
        err.contains("client_id=pinch-client.apps"),
        "the echo is kept: {err}"
    );
    assert!(!err.contains("SECRET"), "{err}");
    assert!(
        !err.contains("pinch secrets oauth"),
        "only invalid_grant asks for a new sign-in: {err}"
    );
}
