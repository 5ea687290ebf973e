//! Secrets injected by the credential proxy (decision 0050), through the
//! real binary: a host, a runner in bwrap, a scripted model whose shell
//! tool runs `curl` and Python `requests` exactly as an agent would, and
//! loopback HTTPS servers with their own certificates playing GitHub's API.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::sync::{Arc, Mutex};

use crate::common::https::{fake_api_with, plain_server, FakeApi};
use crate::common::*;
use pinch_channels::cli_socket::ClientMsg;
use pinch_host::sandbox::Choice;
use pinch_host::secrets::{Approve, Form, NewSecret, Store, Value};

const TOKEN: &str = "ghp_TEST_TOKEN_4fj29d";

/// [`fake_api_with`] playing GitHub: `{"login":"octocat"}` with
/// `authorization: Bearer TOKEN`, 401 otherwise.
fn fake_api() -> FakeApi {
    fake_api_with(|head| {
        let authed = head
            .lines()
            .any(|l| l.eq_ignore_ascii_case(&format!("authorization: Bearer {TOKEN}")));
        if authed {
            (
                "200 OK",
                "application/json",
                br#"{"login":"octocat"}"#.to_vec(),
            )
        } else {
            (
                "401 Unauthorized",
                "application/json",
                br#"{"message":"Requires authentication"}"#.to_vec(),
            )
        }
    })
}

fn secret(name: &str, port: u16, groups: &[&str], approve: Approve) -> NewSecret {
    NewSecret {
        name: name.into(),
        form: Form::Bearer,
        hosts: vec![format!("127.0.0.1:{port}")],
        groups: groups.iter().map(|g| (*g).to_owned()).collect(),
        approve,
    }
}

/// The store of `tmp`'s data dir, its key outside it.
fn store(tmp: &Path) -> Store {
    let data = tmp.join("data");
    std::fs::create_dir_all(&data).unwrap();
    Store::new(&data, tmp.join("keys/secrets.key"))
}

fn script(rules: &[(&str, &str)]) -> String {
    let mut s = String::new();
    for (trigger, command) in rules {
        s.push_str(&format!(
            "[[rule]]\ncontains = {trigger:?}\ntool = \"shell\"\nargs = {{ command = {command:?}, timeout_s = 150 }}\n\n"
        ));
    }
    s.push_str("[[rule]]\nafter_tool = \"*\"\nreply = \"tool said: {tool_result}\"\n");
    s
}

/// The isolated sandbox the tests run in: Docker in scripts/test's Docker
/// pass, else bwrap (the process sandbox is offered no secret).
fn isolated() -> Option<Choice> {
    match any_sandbox() {
        Choice::Docker => Some(Choice::Docker),
        _ => bwrap_or_skip().then_some(Choice::Bwrap),
    }
}

/// A host in `sandbox` whose scripted model runs `rules`' shell commands, with
/// `roots` trusted upstream and the secrets key beside the data dir.
fn config(
    tmp: &Path,
    sandbox: Choice,
    script: &str,
    roots: Vec<Vec<u8>>,
) -> pinch_host::HostConfig {
    let mut cfg = with_script(host_config(tmp, sandbox), script);
    cfg.proxy_extra_roots = roots;
    cfg.secrets_key_file = Some(tmp.join("keys/secrets.key"));
    cfg
}

fn curl(port: u16) -> String {
    format!("curl -sS -w ' HTTP=%{{http_code}}' https://127.0.0.1:{port}/user?page=1; echo \" curl-exit=$?\"")
}

#[test]
fn curl_and_python_get_the_answer_with_the_token_injected_and_it_never_enters_the_sandbox() {
    let Some(sandbox) = isolated() else {
        return;
    };
    let api = fake_api();
    // Another API bound to a secret only `research` may use; one whose
    // certificate the proxy does not trust; a plain host on the allowlist.
    let other = fake_api();
    let tampered = fake_api();
    let tmp = tempfile::tempdir().unwrap();
    let st = store(tmp.path());
    let token = || Value::Token {
        value: TOKEN.into(),
    };
    st.add(
        &secret("github", api.port, &["main"], Approve::Never),
        &token(),
    )
    .unwrap();
    st.add(
        &secret("research-only", other.port, &["research"], Approve::Never),
        &token(),
    )
    .unwrap();
    st.add(
        &secret("tampered", tampered.port, &["main"], Approve::Never),
        &token(),
    )
    .unwrap();
    let py = format!("python3 -c \"import requests; r = requests.get('https://127.0.0.1:{}/user', timeout=60); print('py', r.status_code, r.text)\"", api.port);
    // Looks for the token everywhere the sandbox can read: the environment
    // of every process, its folders, the system roots (split so this
    // command line itself does not hold it).
    let (a, b) = TOKEN.split_at(8);
    let leak = format!("A={a}; B={b}; F=$(grep -rlsF \"$A$B\" /proc/[0-9]*/environ /workspace /pinch /etc /tmp | tr '\\n' ' '); N=$(env | grep -cF \"$A$B\"); echo \"files=[$F] env=$N\"");
    let plain = plain_server();
    let mut cfg = config(tmp.path(), sandbox, &script(&[
            ("curl-it", &curl(api.port)),
            ("py-it", &py),
            ("other-it", &curl(other.port)),
            ("tampered-it", &curl(tampered.port)),
            ("plain-it", &format!("curl -sS -p -x $HTTPS_PROXY http://127.0.0.1:{}/x -o /dev/null -w '%{{http_code}}'; echo \" plain-exit=$?\"", plain.port)),
            ("leak-check", &leak),
        ]), vec![api.cert_der.clone(), other.cert_der.clone()]);
    cfg.proxy_egress_allow = vec![format!("127.0.0.1:{}", plain.port)];
    let rt = rt();
    let host = rt.block_on(pinch_host::start(cfg)).unwrap();
    let mut c = Client::connect(&host.cli_socket);

    let r = c.ask("curl-it").join("\n");
    assert!(
        r.contains(r#"{"login":"octocat"}"#) && r.contains("curl-exit=0"),
        "{r}"
    );
    let r = c.ask("py-it").join("\n");
    assert!(r.contains(r#"py 200 {"login":"octocat"}"#), "{r}");
    {
        let heads = api.heads.lock().unwrap();
        assert_eq!(heads.len(), 2, "{heads:?}");
        assert!(
            heads[0].starts_with("GET /user?page=1 HTTP/1.1\r\nhost: 127.0.0.1:"),
            "{}",
            heads[0]
        );
        for h in heads.iter() {
            assert_eq!(h.matches(TOKEN).count(), 1, "{h}");
            assert!(h.contains("connection: close"), "{h}");
        }
    }
    // A group the secret is not bound to: refused at CONNECT, nothing sent.
    let r = c.ask("other-it").join("\n");
    assert!(r.contains("403") && !r.contains("octocat"), "{r}");
    assert!(other.heads.lock().unwrap().is_empty());
    // An upstream whose certificate is not trusted: the secret is not sent.
    let r = c.ask("tampered-it").join("\n");
    assert!(
        r.contains("HTTP=502") && r.contains("the secret was not sent"),
        "{r}"
    );
    assert!(tampered.heads.lock().unwrap().is_empty());
    // A host bound to nothing is a plain tunnel: the client's own bytes.
    let r = c.ask("plain-it").join("\n");
    assert!(r.contains("200 plain-exit=0"), "{r}");
    {
        let heads = plain.heads.lock().unwrap();
        assert_eq!(heads.len(), 1, "{heads:?}");
        assert!(
            heads[0].starts_with("GET /x HTTP/1.1")
                && !heads[0].to_ascii_lowercase().contains("authorization"),
            "no injection on a tunnel: {}",
            heads[0]
        );
    }
    let r = c.ask("leak-check").join("\n");
    assert!(
        r.contains("files=[] env=0"),
        "the token is readable in the sandbox: {r}"
    );
    rt.block_on(host.shutdown()).unwrap();

    // Not in any file: the session DBs, runner.json, logs, the store.
    assert!(
        files_holding(tmp.path(), TOKEN).is_empty(),
        "{:?}",
        files_holding(tmp.path(), TOKEN)
    );
    // Audited: two injected uses, the refusal, the refused upstream (the
    // rows are written off the requests' path).
    wait_for(
        "four audit rows",
        std::time::Duration::from_secs(10),
        || st.uses(50, 0).unwrap().len() == 4,
    );
    let uses = st.uses(50, 0).unwrap();
    let by = |o: &str| uses.iter().filter(|u| u.outcome == o).count();
    assert_eq!(
        (by("injected"), by("denied"), by("upstream_failed")),
        (2, 1, 1),
        "{uses:?}"
    );
    let injected = uses.iter().find(|u| u.outcome == "injected").unwrap();
    assert_eq!(
        (
            injected.method.as_str(),
            injected.path.as_str(),
            injected.status,
            injected.agent_group.as_str()
        ),
        ("GET", "/user", 200, "main")
    );
    assert!(st
        .list()
        .unwrap()
        .iter()
        .find(|b| b.name == "github")
        .unwrap()
        .last_used_at
        .is_some());
}

/// The API, its `github` secret for `main` under `approve = first`, and a
/// host whose model runs `curl-it`.
fn first_use_asks(sandbox: Choice) -> (FakeApi, tempfile::TempDir, Store, pinch_host::HostConfig) {
    let api = fake_api();
    let tmp = tempfile::tempdir().unwrap();
    let st = store(tmp.path());
    st.add(
        &secret("github", api.port, &["main"], Approve::First),
        &Value::Token {
            value: TOKEN.into(),
        },
    )
    .unwrap();
    let cfg = config(
        tmp.path(),
        sandbox,
        &script(&[("curl-it", &curl(api.port))]),
        vec![api.cert_der.clone()],
    );
    (api, tmp, st, cfg)
}

/// Approvals: the first use asks the owner; "allow once" lets that request
/// through and the next asks again; "always" is remembered; "deny" reaches
/// the agent as a 403 it can explain. Each use is audited.
#[test]
fn the_owner_allows_once_always_or_denies_a_first_use() {
    let Some(sandbox) = isolated() else {
        return;
    };
    let (api, _tmp, st, mut cfg) = first_use_asks(sandbox);
    cfg.http = Some(pinch_host::config::HttpSettings::local(
        "127.0.0.1:0".parse().unwrap(),
        true,
    ));
    let data = cfg.data_dir.clone();
    let rt = rt();
    let host = rt.block_on(pinch_host::start(cfg)).unwrap();
    let mut c = Client::connect(&host.cli_socket);
    let click = |c: &mut Client, id: &str, choice: &str| -> String {
        let mid = c.say("curl-it", id);
        let (title, buttons) = c.until_buttons();
        assert!(
            title.contains("agent `main` wants to use `github` for GET 127.0.0.1:")
                && title.contains("/user"),
            "{title}"
        );
        let before = api.heads.lock().unwrap().len();
        let b = buttons
            .iter()
            .find(|b| b.label == choice)
            .unwrap_or_else(|| panic!("{buttons:?}"));
        c.send(&ClientMsg::Click {
            callback: b.callback.clone(),
        });
        let out = c.until_settled(&mid).join("\n");
        let sent = api.heads.lock().unwrap().len() - before;
        assert_eq!(sent, usize::from(choice != "Deny"), "{choice}: {out}");
        out
    };
    let r = click(&mut c, "m1", "Allow once");
    assert!(r.contains("octocat"), "{r}");
    // Once is once: the next use asks again, and is denied.
    let r = click(&mut c, "m2", "Deny");
    assert!(
        r.contains("403")
            && r.contains(
                "the owner denied agent group \\\"main\\\" the use of secret \\\"github\\\""
            ),
        "{r}"
    );
    let r = click(&mut c, "m3", "Allow always");
    assert!(r.contains("octocat"), "{r}");
    // Always is remembered: no card.
    let r = c.ask("curl-it").join("\n");
    assert!(r.contains("octocat") && !r.contains("wants to use"), "{r}");
    // The dashboard lists the uses, newest first.
    let (addr, token) = (
        host.http_addr.unwrap(),
        pinch_host::web_token(&data).unwrap(),
    );
    let audit = || -> serde_json::Value {
        rt.block_on(async {
            reqwest::Client::new()
                .get(format!("http://{addr}/api/audit"))
                .bearer_auth(&token)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap()
        })
    };
    // The last use's row is written off the request's path.
    wait_for(
        "four audited uses",
        std::time::Duration::from_secs(10),
        || audit()["uses"].as_array().is_some_and(|u| u.len() == 4),
    );
    let audit = audit();
    let outcomes: Vec<&str> = audit["uses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(
        outcomes,
        ["injected", "injected", "denied", "injected"],
        "{audit}"
    );
    rt.block_on(host.shutdown()).unwrap();
    assert!(st.granted("github", "main").unwrap());
    let outcomes: Vec<(String, u16)> = st
        .uses(10, 0)
        .unwrap()
        .into_iter()
        .rev()
        .map(|u| (u.outcome, u.status))
        .collect();
    assert_eq!(
        outcomes,
        [
            ("injected", 200),
            ("denied", 403),
            ("injected", 200),
            ("injected", 200)
        ]
        .map(|(o, s)| (o.to_owned(), s)),
    );
    assert_eq!(
        api.heads.lock().unwrap().len(),
        3,
        "the denied request never reached the API"
    );
}

/// S8 for secrets: a click on a secret's card by someone who is not an
/// owner (here a group admin forging the card's callback) is refused and
/// changes nothing; the request is refused once the wait is over, and the
/// API never sees the token.
#[test]
fn a_non_owners_click_on_a_secrets_card_is_refused() {
    let Some(sandbox) = isolated() else {
        return;
    };
    let (api, _tmp, st, mut cfg) = first_use_asks(sandbox);
    cfg.secrets_approval_wait = std::time::Duration::from_secs(3);
    // The terminal's user is only an admin of `main`; the owner is on a
    // channel that is not running (the card waits for them).
    let db = cfg.data_dir.join("pinch.db");
    {
        let mut c = pinch_host::db::central::Central::open(&db).unwrap();
        c.bootstrap(&cfg.login).unwrap();
        let me = format!("cli:{}", cfg.login);
        c.conn
            .execute("DELETE FROM user_roles WHERE user_id = ?1", [&me])
            .unwrap();
        c.conn.execute("INSERT INTO user_roles (user_id, role, agent_group_id, granted_at) VALUES (?1, 'admin', 'main', '2026-01-01T00:00:00Z')", [&me]).unwrap();
        c.conn.execute("INSERT INTO users (id, kind, created_at) VALUES ('chat:owner', 'chat', '2026-01-01T00:00:00Z')", []).unwrap();
        c.conn.execute("INSERT INTO user_roles (user_id, role, agent_group_id, granted_at) VALUES ('chat:owner', 'owner', NULL, '2026-01-01T00:00:00Z')", []).unwrap();
    }
    let rt = rt();
    let host = rt.block_on(pinch_host::start(cfg)).unwrap();
    let mut c = Client::connect(&host.cli_socket);
    let mid = c.say("curl-it", "m1");
    let read = pinch_proto::rusqlite::Connection::open(&db).unwrap();
    let pending = || -> Option<String> {
        read.query_row(
            "SELECT approval_id FROM pending_approvals WHERE action = 'secret_use' AND status = 'pending'",
            [],
            |r| r.get(0),
        )
        .ok()
    };
    wait_for(
        "the secret's card",
        std::time::Duration::from_secs(60),
        || pending().is_some(),
    );
    let id = pending().unwrap();
    // "Allow always", forged by the admin.
    c.send(&ClientMsg::Click {
        callback: format!("a:{id}:1"),
    });
    let out = c.until_settled(&mid).join("\n");
    assert!(
        out.contains("HTTP=403") && out.contains("has not answered the approval card"),
        "{out}"
    );
    rt.block_on(host.shutdown()).unwrap();
    assert_eq!(
        pending(),
        Some(id),
        "the card is still the owner's to decide"
    );
    assert!(!st.granted("github", "main").unwrap());
    assert!(
        api.heads.lock().unwrap().is_empty(),
        "nothing reached the API"
    );
    wait_for(
        "the refusal's audit row",
        std::time::Duration::from_secs(10),
        || !st.uses(10, 0).unwrap().is_empty(),
    );
    let uses = st.uses(10, 0).unwrap();
    assert_eq!(uses.len(), 1, "{uses:?}");
    assert_eq!((uses[0].outcome.as_str(), uses[0].status), ("denied", 403));
    let refused: i64 = read
        .query_row(
            "SELECT count(*) FROM dropped_messages WHERE reason = 'not_approver'",
            [],
            |r| r.get(0),
        )
        .unwrap_or(-1);
    assert!(refused >= 1, "the refused click is audited ({refused})");
}

/// `git ls-remote` over HTTPS works unchanged: git (libcurl) tunnels
/// through `https_proxy`, trusts the bundle, and the smart-HTTP server
/// sees the token the proxy put in.
#[test]
fn git_over_https_gets_the_token_injected() {
    let Some(sandbox) = isolated() else {
        return;
    };
    const SHA: &str = "8d2f7d9a0b1c2e3f4a5b6c7d8e9f0a1b2c3d4e5f";
    let pkt = |s: &str| format!("{:04x}{s}", s.len() + 4);
    let api = fake_api_with(move |head| {
        let authed = head.contains(&format!("authorization: Bearer {TOKEN}"));
        if !authed || !head.starts_with("GET /repo.git/info/refs?service=git-upload-pack ") {
            return ("401 Unauthorized", "text/plain", b"no".to_vec());
        }
        let body = format!(
            "{}0000{}{}0000",
            pkt("# service=git-upload-pack\n"),
            pkt(&format!("{SHA} HEAD\0symref=HEAD:refs/heads/main\n")),
            pkt(&format!("{SHA} refs/heads/main\n")),
        );
        (
            "200 OK",
            "application/x-git-upload-pack-advertisement",
            body.into_bytes(),
        )
    });
    let tmp = tempfile::tempdir().unwrap();
    store(tmp.path())
        .add(
            &secret("github", api.port, &["main"], Approve::Never),
            &Value::Token {
                value: TOKEN.into(),
            },
        )
        .unwrap();
    let cmd = format!(
        "GIT_TERMINAL_PROMPT=0 git ls-remote https://127.0.0.1:{}/repo.git; echo \" git-exit=$?\"",
        api.port
    );
    let cfg = config(
        tmp.path(),
        sandbox,
        &script(&[("git-it", &cmd)]),
        vec![api.cert_der.clone()],
    );
    let rt = rt();
    let host = rt.block_on(pinch_host::start(cfg)).unwrap();
    let mut c = Client::connect(&host.cli_socket);
    let r = c.ask("git-it").join("\n");
    rt.block_on(host.shutdown()).unwrap();
    assert!(
        r.contains(&format!("{SHA}\trefs/heads/main")) && r.contains("git-exit=0"),
        "{r}"
    );
    let heads = api.heads.lock().unwrap();
    assert!(
        heads[0].contains("git/"),
        "git's own user agent: {}",
        heads[0]
    );
}

/// An OAuth secret through the proxy under load: many requests at once
/// from the sandbox for several token lifetimes; every request carries a
/// token that is not expired, the token endpoint is never asked twice at
/// once, and it is asked again before each token expires.
#[test]
fn oauth_tokens_are_refreshed_before_expiry_under_load_one_refresh_at_a_time() {
    use std::time::{Duration, Instant};
    let Some(sandbox) = isolated() else {
        return;
    };
    const LIFE: Duration = Duration::from_secs(2);
    // The token endpoint: plain HTTP on loopback, a little slow, counting.
    #[derive(Default)]
    struct Tok {
        issued: Vec<Instant>,
        in_flight: usize,
        max_in_flight: usize,
        bodies: Vec<String>,
    }
    let tok: Arc<Mutex<Tok>> = Arc::default();
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let tport = l.local_addr().unwrap().port();
    let t2 = tok.clone();
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(mut c) = conn else { continue };
            let t = t2.clone();
            std::thread::spawn(move || {
                let Some(head) = crate::common::https::read_head(&mut c) else {
                    return;
                };
                let head = head.to_ascii_lowercase();
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                let mut body = vec![0u8; len];
                c.read_exact(&mut body).unwrap();
                {
                    let mut t = t.lock().unwrap();
                    t.in_flight += 1;
                    t.max_in_flight = t.max_in_flight.max(t.in_flight);
                    t.bodies.push(String::from_utf8_lossy(&body).into_owned());
                }
                std::thread::sleep(Duration::from_millis(150));
                let n = {
                    let mut t = t.lock().unwrap();
                    t.in_flight -= 1;
                    t.issued.push(Instant::now());
                    t.issued.len()
                };
                let answer = format!(
                    r#"{{"access_token":"at-{n}","expires_in":{},"token_type":"bearer"}}"#,
                    LIFE.as_secs()
                );
                let _ = write!(c, "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{answer}", answer.len());
            });
        }
    });
    // The API: 200 only with a token that was issued and has not expired.
    let stale = Arc::new(Mutex::new(Vec::<String>::new()));
    let (t3, s2) = (tok.clone(), stale.clone());
    let api = fake_api_with(move |head| {
        let n: Option<usize> = head
            .lines()
            .find_map(|l| l.strip_prefix("authorization: Bearer at-"))
            .and_then(|v| v.trim().parse().ok());
        let fresh = n.is_some_and(|n| {
            t3.lock()
                .unwrap()
                .issued
                .get(n - 1)
                .is_some_and(|at| at.elapsed() < LIFE)
        });
        if fresh {
            ("200 OK", "text/plain", b"ok".to_vec())
        } else {
            s2.lock()
                .unwrap()
                .push(head.lines().take(8).collect::<Vec<_>>().join(" | "));
            ("401 Unauthorized", "text/plain", b"expired".to_vec())
        }
    });
    let tmp = tempfile::tempdir().unwrap();
    store(tmp.path())
        .add(
            &secret("calendar", api.port, &["main"], Approve::Never),
            &Value::OAuth(pinch_host::secrets::OAuthValue {
                refresh_token: "rt-1".into(),
                client_id: "client-1".into(),
                client_secret: None,
                token_url: format!("http://127.0.0.1:{tport}/token"),
                scope: None,
            }),
        )
        .unwrap();
    // 4 requests at once, again and again, for about 5 s (2.5 lifetimes).
    let load = format!(
        "end=$(($(date +%s) + 5)); while [ $(date +%s) -lt $end ]; do for j in 1 2 3 4; do curl -s -o /dev/null -w '%{{http_code}}\\n' https://127.0.0.1:{}/events & done; wait; done | sort | uniq -c",
        api.port
    );
    let cfg = config(
        tmp.path(),
        sandbox,
        &script(&[("load-it", &load)]),
        vec![api.cert_der.clone()],
    );
    let rt = rt();
    let host = rt.block_on(pinch_host::start(cfg)).unwrap();
    let mut c = Client::connect(&host.cli_socket);
    let started = Instant::now();
    let r = c.ask("load-it").join("\n");
    let took = started.elapsed();
    rt.block_on(host.shutdown()).unwrap();
    let stale = stale.lock().unwrap();
    assert!(
        stale.is_empty(),
        "requests without a fresh token: {stale:?}\n{r}"
    );
    assert!(
        !r.contains(" 401") && !r.contains(" 502") && r.contains(" 200"),
        "{r}"
    );
    let t = tok.lock().unwrap();
    assert_eq!(t.max_in_flight, 1, "two refreshes at once");
    let n = t.issued.len();
    let most = (took.as_secs_f64() / (LIFE.as_secs_f64() * 0.8)).ceil() as usize + 1;
    assert!(
        n >= 3 && n <= most,
        "{n} tokens in {took:?} (at most {most})"
    );
    assert!(
        t.bodies
            .iter()
            .all(|b| b.contains("grant_type=refresh_token")
                && b.contains("refresh_token=rt-1")
                && b.contains("client_id=client-1")),
        "{:?}",
        t.bodies
    );
}

/// `pinch secrets` as the owner runs it: the value from stdin only, never
/// shown again; list, edit, rm; the audit through `pinch admin audit list`
/// with no host running; a query secret on a wildcard refused up front.
#[test]
fn the_secrets_command_keeps_values_out_of_sight() {
    use std::process::Stdio;
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let key = tmp.path().join("keys/secrets.key");
    let run = |args: &[&str], input: &str| {
        let mut c = pinch(args, &data)
            .env("PINCH_SECRETS_KEY_FILE", &key)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        c.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
        let o = c.wait_with_output().unwrap();
        (
            o.status.code(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            ),
        )
    };
    let (code, out) = run(
        &[
            "secrets",
            "add",
            "github",
            "--host",
            "api.github.com",
            "--group",
            "main",
        ],
        &format!("{TOKEN}\n"),
    );
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("Added github") && !out.contains(TOKEN),
        "{out}"
    );
    let (_, out) = run(&["secrets", "list"], "");
    assert!(
        out.contains("github  token  hosts: api.github.com  groups: main  form: bearer  approve: first  last used: never"),
        "{out}"
    );
    assert!(!out.contains(TOKEN));
    // The same name again, an empty value, a wildcard query secret: refused.
    let (code, out) = run(
        &[
            "secrets", "add", "github", "--host", "x.com", "--group", "main",
        ],
        "v",
    );
    assert!(
        code == Some(1) && out.contains("pinch secrets rotate github"),
        "{out}"
    );
    let (code, out) = run(
        &[
            "secrets", "add", "empty", "--host", "x.com", "--group", "main",
        ],
        "",
    );
    assert!(
        code == Some(1) && out.contains("the value is empty"),
        "{out}"
    );
    let (code, out) = run(
        &[
            "secrets",
            "add",
            "maps",
            "--host",
            "*.example.com",
            "--group",
            "main",
            "--form",
            "query:key",
        ],
        "v",
    );
    assert!(code == Some(1) && out.contains("no *."), "{out}");
    let (code, out) = run(
        &[
            "secrets",
            "edit",
            "github",
            "--approve",
            "never",
            "--group",
            "research",
        ],
        "",
    );
    assert_eq!(code, Some(0), "{out}");
    let (_, out) = run(&["secrets", "list"], "");
    assert!(
        out.contains("groups: research") && out.contains("approve: never"),
        "{out}"
    );
    let (code, out) = run(&["admin", "audit", "list"], "");
    assert!(
        code == Some(0) && out.contains("No secret has been used."),
        "{out}"
    );
    // Sealed at rest; the key is apart and private.
    assert!(files_holding(tmp.path(), TOKEN).is_empty());
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let (code, out) = run(&["secrets", "rm", "github"], "");
    assert!(code == Some(0) && out.contains("Removed github"), "{out}");
    let (_, out) = run(&["secrets", "list"], "");
    assert!(out.contains("No secrets."), "{out}");
}
