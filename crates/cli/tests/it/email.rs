//! The email channel against real mail servers (Dovecot for IMAP, Exim
//! for SMTP, both from Debian, started by the test on loopback ports with
//! their own configs in a temp dir; see common/mail.rs): mail from alice
//! reaches the agent through the real `pinch host`, the agent's reply is
//! found in alice's mailbox threaded under her mail, files go both ways,
//! HTML mail is read as text, a numbered question is answered by replying
//! "2", and a host killed mid-fetch, or cut off from its IMAP server,
//! loses and repeats nothing. The login may come from pinch's secret store:
//! a password, or an OAuth secret whose access token logs in with XOAUTH2.

use crate::common::mail::MailServers;
use crate::common::platform::{self, daemon, delivered, rows, Platform, Setup, SHARED_RULES, WAIT};
use crate::common::wait_for;
use pinch_channels::email::parse::message_key;

const ALICE: &str = "alice@example.test";
const BOB: &str = "bob@example.test";
const PINCH_ADDR: &str = "pinch@example.test";

fn script() -> String {
    format!("{SHARED_RULES}\n[[rule]]\nreply = \"hi from the agent\"\n")
}

/// The `[email]` section's servers: plain on loopback.
fn plain_servers(m: &MailServers) -> String {
    format!(
        "imap_host = \"127.0.0.1\"\nimap_port = {}\nimap_tls = \"none\"\nsmtp_port = {}\nsmtp_tls = \"none\"\n",
        m.imap_port, m.smtp_port
    )
}

fn setup(m: &MailServers, extra: &str) -> Setup {
    setup_with(&format!("{}{extra}", plain_servers(m)))
}

fn setup_with(servers: &str) -> Setup {
    let login = "username = \"pinch\"\npassword_env = \"PINCH_TEST_MAIL_PW\"";
    setup_as(PINCH_ADDR, login, servers, &[("PINCH_TEST_MAIL_PW", "pw1")])
}

/// pinch as `address`, logging in as `login` says (`username`, and the
/// password's variable or secret).
fn setup_as(address: &str, login: &str, servers: &str, env: &[(&str, &str)]) -> Setup {
    platform::setup(Platform {
        channel: "email",
        // alice owns pinch (so her answer to a question counts).
        owner: Some(ALICE),
        chats: &[("mg-alice", ALICE, false, "pattern")],
        script: &script(),
        config: format!(
            "[email]\naddress = \"{address}\"\nname = \"Pinch\"\n{login}\nstall_s = 3\n{servers}"
        ),
        env,
    })
}

/// A plain mail from alice; see [`mail_from`].
fn mail(id: &str, subject: &str, body: &str, reply_to: Option<(&str, &str)>) -> String {
    mail_from(ALICE, id, subject, body, reply_to)
}

/// A plain mail from `from`; `reply_to`: the parent's id and the thread's
/// ids (the `References:` a mail client writes: the parent's, then it).
fn mail_from(
    from: &str,
    id: &str,
    subject: &str,
    body: &str,
    reply_to: Option<(&str, &str)>,
) -> String {
    let threading = reply_to
        .map(|(p, refs)| format!("In-Reply-To: <{p}>\r\nReferences: {refs}\r\n"))
        .unwrap_or_default();
    format!(
        "From: {from}\r\nTo: {PINCH_ADDR}\r\nSubject: {subject}\r\nMessage-ID: <{id}>\r\n{threading}Content-Type: text/plain; charset=utf-8\r\n\r\n{body}\r\n"
    )
}

/// The state file exists once the channel has logged in and set its mark
/// at the mailbox's newest mail: mail sent after that is the agent's.
fn wait_connected(s: &Setup) {
    wait_for("the email channel's first login", WAIT, || {
        s.data.join("channels/email/state.json").exists()
    });
}

/// Replies in alice's mailbox to the mail `id`.
fn replies_to(m: &MailServers, id: &str) -> Vec<String> {
    let needle = format!("In-Reply-To: <{id}>");
    m.mailbox("alice")
        .into_iter()
        .filter(|r| r.contains(&needle))
        .collect()
}

/// Mail servers, the data dir, and `pinch host` logged in to them; `None`
/// when the servers cannot run here (see [`MailServers::start`]).
fn started() -> Option<(MailServers, Setup, crate::common::Daemon)> {
    let m = MailServers::start()?;
    let s = setup(&m, "");
    let d = daemon(&s);
    wait_connected(&s);
    Some((m, s, d))
}

fn wait_reply(m: &MailServers, id: &str) -> String {
    m.wait_mail("alice", WAIT, |r| {
        r.contains(&format!("In-Reply-To: <{id}>"))
    })
}

#[test]
fn email_replies_in_thread_with_files_html_corrections_and_a_numbered_answer() {
    let Some((m, s, _d)) = started() else {
        return;
    };

    m.send(
        ALICE,
        PINCH_ADDR,
        &mail("a1@example.test", "plans", "hello there", None),
    );
    let r = wait_reply(&m, "a1@example.test");
    assert!(r.contains("hi from the agent"), "{r}");
    assert!(r.contains("Subject: Re: plans"), "{r}");
    assert!(r.contains("References: <a1@example.test>"), "{r}");
    assert!(r.contains("Auto-Submitted: auto-replied"), "{r}");
    assert!(r.contains("From: Pinch <pinch@example.test>"), "{r}");
    assert!(r.contains("Message-ID: <pinch."), "{r}");
    wait_for("alice's mail flagged seen after the commit", WAIT, || {
        m.maildir_flags("pinch", "a1@example.test")
            .is_some_and(|f| f.contains('S'))
    });

    // A file in: saved into the inbox and read by the agent.
    let with_file = format!(
        "From: {ALICE}\r\nTo: {PINCH_ADDR}\r\nSubject: notes\r\nMessage-ID: <a2@example.test>\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nread the attachment\r\n--b\r\nContent-Type: text/plain; name=\"notes.txt\"\r\nContent-Disposition: attachment; filename=\"notes.txt\"\r\nContent-Transfer-Encoding: base64\r\n\r\ndGhlIHNlY3JldCB3b3JkIGlzIHRhbmdlcmluZQ==\r\n--b--\r\n"
    );
    m.send(ALICE, PINCH_ADDR, &with_file);
    let r = wait_reply(&m, "a2@example.test");
    assert!(r.contains("the secret word is tangerine"), "{r}");

    // A file out: an attachment of the reply.
    m.send(
        ALICE,
        PINCH_ADDR,
        &mail("a3@example.test", "report", "send me the report", None),
    );
    let r = m.wait_mail("alice", WAIT, |r| {
        r.contains("In-Reply-To: <a3@example.test>") && r.contains("report.txt")
    });
    assert!(
        r.contains("numbers: 1 2 3") || r.contains("bnVtYmVyczogMSAyIDM"),
        "the file's content: {r}"
    );

    // HTML only: read as text (Markdown), scripts dropped.
    let html = format!(
        "From: {ALICE}\r\nTo: {PINCH_ADDR}\r\nSubject: page\r\nMessage-ID: <a4@example.test>\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<html><body><p>mojibake <b>bold</b> words</p><script>evil()</script></body></html>\r\n"
    );
    m.send(ALICE, PINCH_ADDR, &html);
    let r = wait_reply(&m, "a4@example.test");
    assert!(r.contains("**bold**") && !r.contains("evil"), "{r}");

    // No edits or reactions by mail: an edit arrives as a correction, a
    // reaction is dropped, and the turn still ends with its reply.
    m.send(
        ALICE,
        PINCH_ADDR,
        &mail("a7@example.test", "draft", "draft please", None),
    );
    let c = m.wait_mail("alice", WAIT, |r| {
        r.contains("(correction to message 3) draft v2")
    });
    assert!(c.contains("In-Reply-To: <a7@example.test>"), "{c}");
    m.send(
        ALICE,
        PINCH_ADDR,
        &mail("a8@example.test", "react", "react to this", None),
    );
    let r = m.wait_mail("alice", WAIT, |r| {
        r.contains("In-Reply-To: <a8@example.test>") && r.contains("reacted")
    });
    assert!(!r.contains('👍'), "{r}");

    // A question: the numbered fallback, answered by a reply in the thread
    // with the quoted question under it.
    m.send(
        ALICE,
        PINCH_ADDR,
        &mail("a5@example.test", "paint", "pick a colour", None),
    );
    let q = m.wait_mail("alice", WAIT, |r| r.contains("Which colour?"));
    let header = |name: &str| {
        q.lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|l| l.trim().to_owned())
            .unwrap_or_else(|| panic!("the question has no {name}: {q}"))
    };
    let qid = header("Message-ID:").trim_matches(['<', '>']).to_owned();
    let refs = format!("{} <{qid}>", header("References:"));
    m.send(
        ALICE,
        PINCH_ADDR,
        &mail(
            "a6@example.test",
            "Re: paint",
            "2\r\n\r\nOn Friday, Pinch wrote:\r\n> Which colour?\r\n> 1. Red\r\n> 2. Blue",
            Some((&qid, &refs)),
        ),
    );
    let r = m.wait_mail("alice", WAIT, |r| r.contains("you chose:"));
    assert!(
        r.contains("Blue (value b)") && r.contains("In-Reply-To: <a5@example.test>"),
        "{r}"
    );
    s.log_lacks(&["pw1"]);
}

#[test]
fn email_a_killed_host_and_a_dropped_imap_connection_lose_and_repeat_nothing() {
    let Some((m, s, mut d)) = started() else {
        return;
    };
    m.send(
        ALICE,
        PINCH_ADDR,
        &mail("k1@example.test", "one", "hello one", None),
    );
    wait_reply(&m, "k1@example.test");
    wait_for("the reply recorded as delivered", WAIT, || {
        delivered(&s.data) >= 1
    });

    // The IMAP connection dies under the channel (its server process is
    // killed): it connects again, and mail sent meanwhile arrives.
    wait_for("pinch's IMAP session killed", WAIT, || {
        m.kill_imap_sessions() > 0
    });
    m.send(
        ALICE,
        PINCH_ADDR,
        &mail("k2@example.test", "two", "hello two", None),
    );
    wait_reply(&m, "k2@example.test");
    wait_for("both replies recorded as delivered", WAIT, || {
        delivered(&s.data) >= 2
    });

    // SIGKILL right after the commit of k2, with the mark's move lost too
    // (the state file rolled back to before k2, as a crash between the two
    // writes leaves it), and a third mail sent while pinch is down.
    let state = s.data.join("channels/email/state.json");
    let saved: serde_json::Value = serde_json::from_slice(&std::fs::read(&state).unwrap()).unwrap();
    d.0.kill().unwrap();
    d.0.wait().unwrap();
    let mut rolled = saved.clone();
    rolled["last_uid"] = serde_json::json!(saved["last_uid"].as_u64().unwrap() - 1);
    std::fs::write(&state, serde_json::to_vec(&rolled).unwrap()).unwrap();
    m.send(
        ALICE,
        PINCH_ADDR,
        &mail("k3@example.test", "three", "hello three", None),
    );
    let _d2 = daemon(&s);
    wait_reply(&m, "k3@example.test");
    wait_for("the mark past the third mail", WAIT, || {
        let v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&state).unwrap_or_default()).unwrap_or_default();
        v["last_uid"].as_u64() > saved["last_uid"].as_u64()
    });
    wait_for("three replies recorded as delivered", WAIT, || {
        delivered(&s.data) >= 3
    });
    for id in ["k1@example.test", "k2@example.test", "k3@example.test"] {
        assert_eq!(
            rows(&s.data, &message_key(ALICE, id)),
            1,
            "{id} stored once"
        );
        assert_eq!(replies_to(&m, id).len(), 1, "{id} answered once");
    }
}

/// A header's value in a raw mail (its first line).
fn header(raw: &str, name: &str) -> String {
    raw.lines()
        .find_map(|l| l.strip_prefix(name))
        .map(|l| l.trim().to_owned())
        .unwrap_or_else(|| panic!("no {name} in: {raw}"))
}

#[test]
fn email_an_unknown_sender_waits_for_the_owner_who_approves_by_replying_with_a_number() {
    let Some((m, s, _d)) = started() else {
        return;
    };

    // bob is nobody pinch knows: his mail waits, and the owner (alice) gets
    // the card by mail, outside any thread.
    m.send(
        BOB,
        PINCH_ADDR,
        &mail_from(BOB, "b1@example.test", "hello", "hi pinch, bob here", None),
    );
    let card = m.wait_mail("alice", WAIT, |r| r.contains("Connect this conversation"));
    assert!(card.contains("1. Connect to"), "{card}");
    assert!(
        !card.contains("In-Reply-To:"),
        "a card starts its own thread: {card}"
    );
    assert!(
        m.mailbox("bob").is_empty(),
        "nothing reaches bob before the owner decides"
    );

    // alice answers "1" from her mail client: a reply with the card quoted.
    let cid = header(&card, "Message-ID:");
    let answer = mail(
        "a-ok@example.test",
        "Re: pinch",
        "1\r\n\r\nOn Friday, Pinch wrote:\r\n> Connect this conversation?",
        Some((cid.trim_matches(['<', '>']), &cid)),
    );
    m.send(ALICE, PINCH_ADDR, &answer);
    let r = m.wait_mail("bob", WAIT, |r| r.contains("hi from the agent"));
    assert!(r.contains("In-Reply-To: <b1@example.test>"), "{r}");
    assert!(r.contains("Subject: Re: hello"), "{r}");
    assert_eq!(rows(&s.data, &message_key(BOB, "b1@example.test")), 1);
}

/// `pinch doctor` on the setup with `password`: its `[email]` lines.
fn doctor_email_lines(s: &Setup, password: &str) -> Vec<String> {
    platform::doctor_lines(s, "email", "PINCH_TEST_MAIL_PW", password)
}

#[test]
fn email_doctor_logs_in_and_names_a_refused_password() {
    let Some(m) = MailServers::start() else {
        return;
    };
    let s = setup(&m, "");
    let lines = doctor_email_lines(&s, "pw1");
    assert!(
        lines.iter().any(|l| l.starts_with("ok")
            && l.contains(&format!(
                "IMAP 127.0.0.1:{} logged in as pinch",
                m.imap_port
            ))
            && l.contains("INBOX holds 0 mails")
            && l.contains("SMTP 127.0.0.1")),
        "{lines:?}"
    );
    let lines = doctor_email_lines(&s, "wrong");
    assert!(
        lines.iter().any(|l| l.starts_with("FAIL")
            && l.contains("logging in")
            && l.contains("check [email] username and the password")),
        "{lines:?}"
    );
    assert!(lines.iter().all(|l| !l.contains("wrong")), "{lines:?}");
}

#[test]
fn email_over_tls_trusts_only_the_configured_ca() {
    let Some(m) = MailServers::start_tls() else {
        return;
    };
    // Implicit TLS both ways (the defaults), to `localhost` as the
    // servers' certificate names it.
    let servers = format!(
        "imap_host = \"localhost\"\nimap_port = {}\nsmtp_port = {}\n",
        m.imap_port, m.smtps_port
    );
    // Without the servers' CA: refused, the password never sent.
    let untrusted = setup_with(&servers);
    let lines = doctor_email_lines(&untrusted, "pw1");
    assert!(
        lines.iter().any(|l| l.starts_with("FAIL")
            && l.contains("TLS with localhost")
            && l.contains("certificate")),
        "{lines:?}"
    );
    assert!(
        !m.logs().contains("user=<pinch>"),
        "no login reached Dovecot over an unverified connection"
    );

    let s = setup_with(&format!(
        "{servers}ca_file = {:?}\n",
        m.dir.path().join("cert.pem")
    ));
    let lines = doctor_email_lines(&s, "pw1");
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("ok") && l.contains("logged in as pinch")),
        "{lines:?}"
    );
    let _d = daemon(&s);
    wait_connected(&s);
    m.send(
        ALICE,
        PINCH_ADDR,
        &mail("t1@example.test", "secure", "hello over tls", None),
    );
    let r = wait_reply(&m, "t1@example.test");
    assert!(r.contains("hi from the agent"), "{r}");
    assert!(
        m.logs().contains("P=esmtpsa") || m.logs().contains("X=TLS"),
        "the reply went over SMTP with TLS: {}",
        m.logs()
    );
}

/// `pinch secrets …` on the setup's data dir and key file, `stdin` its
/// input: (success, stdout and stderr).
fn secrets_cli(s: &Setup, args: &[&str], stdin: &str) -> (bool, String) {
    use std::io::Write;
    let mut c = std::process::Command::new(crate::common::PINCH)
        .arg("secrets")
        .args(args)
        .arg("--data-dir")
        .arg(&s.data)
        .envs(s.env.iter().map(|(k, v)| (k, v)))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    c.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    let o = c.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    (o.status.success(), text)
}

/// The store's key outside the data dir, as `pinch secrets` would make it.
fn key_env(m: &MailServers) -> (&'static str, String) {
    let key = m.dir.path().join("keys/secrets.key");
    ("PINCH_SECRETS_KEY_FILE", key.display().to_string())
}

#[test]
fn email_logs_in_with_a_password_kept_in_the_secret_store_for_channels_only() {
    let Some(m) = MailServers::start() else {
        return;
    };
    let (k, v) = key_env(&m);
    let login = "username = \"pinch\"\npassword_secret = \"mailpw\"";
    let s = setup_as(PINCH_ADDR, login, &plain_servers(&m), &[(k, &v)]);
    // A secret bound to agents is refused for a channel's login.
    let (ok, out) = secrets_cli(
        &s,
        &[
            "add",
            "mailpw",
            "--host",
            "imap.example.test",
            "--group",
            "main",
        ],
        "pw1",
    );
    assert!(ok, "{out}");
    let lines = platform::doctor_lines(&s, "email", "UNUSED", "");
    assert!(
        lines.iter().any(|l| l.starts_with("FAIL")
            && l.contains("is bound to agents")
            && l.contains("--for-channels")),
        "{lines:?}"
    );
    let (ok, out) = secrets_cli(&s, &["rm", "mailpw"], "");
    assert!(ok, "{out}");
    let (ok, out) = secrets_cli(&s, &["add", "mailpw", "--for-channels"], "pw1");
    assert!(ok && out.contains("for pinch's channels only"), "{out}");
    let (_, out) = secrets_cli(&s, &["list"], "");
    assert!(out.contains("none (for pinch's channels only)"), "{out}");
    let lines = platform::doctor_lines(&s, "email", "UNUSED", "");
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("ok") && l.contains("logged in as pinch")),
        "{lines:?}"
    );

    let _d = daemon(&s);
    wait_connected(&s);
    m.send(
        ALICE,
        PINCH_ADDR,
        &mail("sp1@example.test", "stored", "hello", None),
    );
    let r = wait_reply(&m, "sp1@example.test");
    assert!(r.contains("hi from the agent"), "{r}");
    // Each login is audited as the channel's; the value is nowhere.
    let (_, audit) = secrets_cli(&s, &["audit"], "");
    assert!(
        audit.contains("channel:email") && audit.contains("mailpw"),
        "{audit}"
    );
    s.log_lacks(&["pw1"]);
    let runner_json = walk(&s.data, "runner.json");
    assert!(
        runner_json.iter().all(|j| !j.contains("mailpw")),
        "a channel's secret is never offered to an agent: {runner_json:?}"
    );
}

/// The text of every file called `name` under `dir`.
fn walk(dir: &std::path::Path, name: &str) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() && !p.is_symlink() {
            out.extend(walk(&p, name));
        } else if p.file_name().is_some_and(|f| f == name) {
            out.push(std::fs::read_to_string(&p).unwrap_or_default());
        }
    }
    out
}

#[test]
fn email_with_an_oauth_secret_logs_in_with_xoauth2_to_imap_and_smtp() {
    use crate::common::mail::OAUTH_TOKEN;
    use std::io::{Read, Write};
    use std::sync::{Arc, Mutex};
    let Some(m) = MailServers::start() else {
        return;
    };
    // The provider's token endpoint: mints OAUTH_TOKEN from the refresh
    // token, recording what it was asked.
    let asked: Arc<Mutex<Vec<String>>> = Arc::default();
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let a2 = asked.clone();
    std::thread::spawn(move || {
        for mut c in l.incoming().flatten() {
            let Some(head) = crate::common::https::read_head(&mut c) else {
                continue;
            };
            let len: usize = head
                .to_ascii_lowercase()
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            let mut body = vec![0u8; len];
            if c.read_exact(&mut body).is_err() {
                continue;
            }
            a2.lock()
                .unwrap()
                .push(String::from_utf8_lossy(&body).into_owned());
            let answer = format!(
                r#"{{"access_token":"{OAUTH_TOKEN}","expires_in":3600,"token_type":"bearer"}}"#
            );
            let _ = write!(c, "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{answer}", answer.len());
        }
    });
    let (k, v) = key_env(&m);
    let login = "username = \"oauser\"\npassword_secret = \"mail-oauth\"";
    let me = "oauser@example.test";
    let s = setup_as(me, login, &plain_servers(&m), &[(k, &v)]);
    pinch_host::secrets::Store::new(&s.data, v.clone().into())
        .add(
            &pinch_host::secrets::NewSecret {
                name: "mail-oauth".into(),
                form: pinch_host::secrets::Form::parse("bearer").unwrap(),
                hosts: Vec::new(),
                groups: Vec::new(),
                approve: pinch_host::secrets::Approve::Never,
            },
            &pinch_host::secrets::Value::OAuth(pinch_host::secrets::OAuthValue {
                refresh_token: "rt-mail".into(),
                client_id: "pinch-mail".into(),
                client_secret: None,
                token_url: format!("http://127.0.0.1:{port}/token"),
                scope: None,
            }),
        )
        .unwrap();
    let _d = daemon(&s);
    wait_connected(&s);
    m.send(
        ALICE,
        me,
        &mail_to(me, "o1@example.test", "hello over oauth"),
    );
    let r = wait_reply(&m, "o1@example.test");
    assert!(r.contains("hi from the agent"), "{r}");
    assert!(r.contains("From: Pinch <oauser@example.test>"), "{r}");
    let logs = m.logs();
    assert!(
        logs.contains("user=<oauser>, method=XOAUTH2"),
        "Dovecot saw an XOAUTH2 login: {logs}"
    );
    assert!(
        logs.contains("A=xoauth2:oauser"),
        "Exim took the reply after an XOAUTH2 login: {logs}"
    );
    let asked = asked.lock().unwrap();
    assert!(
        !asked.is_empty()
            && asked.iter().all(|b| b.contains("grant_type=refresh_token")
                && b.contains("refresh_token=rt-mail")
                && b.contains("client_id=pinch-mail")),
        "{asked:?}"
    );
    s.log_lacks(&[OAUTH_TOKEN, "rt-mail"]);
}

/// A plain mail from alice to `to`.
fn mail_to(to: &str, id: &str, body: &str) -> String {
    format!(
        "From: {ALICE}\r\nTo: {to}\r\nSubject: oauth\r\nMessage-ID: <{id}>\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{body}\r\n"
    )
}

/// The email world of the shared channel suite: alice mails pinch; her
/// mailbox holds the replies.
struct MailWorld {
    m: MailServers,
    s: Setup,
    n: std::cell::Cell<u32>,
}

fn mail_world() -> Option<MailWorld> {
    let m = MailServers::start()?;
    let s = setup(&m, "");
    Some(MailWorld {
        m,
        s,
        n: Default::default(),
    })
}

impl crate::common::suite::World for MailWorld {
    fn setup(&self) -> &Setup {
        &self.s
    }

    fn ready(&self) {
        wait_connected(&self.s);
    }

    fn say(&self, text: &str, file: Option<(&str, &[u8])>) -> String {
        use base64::Engine;
        self.n.set(self.n.get() + 1);
        let id = format!("suite{}@example.test", self.n.get());
        let raw = match file {
            None => mail(&id, "suite", text, None),
            Some((name, bytes)) => format!(
                "From: {ALICE}\r\nTo: {PINCH_ADDR}\r\nSubject: suite\r\nMessage-ID: <{id}>\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\n{text}\r\n--b\r\nContent-Type: application/octet-stream; name=\"{name}\"\r\nContent-Disposition: attachment; filename=\"{name}\"\r\nContent-Transfer-Encoding: base64\r\n\r\n{}\r\n--b--\r\n",
                base64::engine::general_purpose::STANDARD.encode(bytes)
            ),
        };
        self.m.send(ALICE, PINCH_ADDR, &raw);
        message_key(ALICE, &id)
    }

    fn replies(&self) -> Vec<crate::common::suite::Reply> {
        use mail_parser::MimeHeaders;
        self.m
            .mailbox("alice")
            .iter()
            .filter_map(|raw| mail_parser::MessageParser::default().parse(raw.as_bytes()))
            .map(|msg| crate::common::suite::Reply {
                text: msg.body_text(0).unwrap_or_default().into_owned(),
                files: msg
                    .attachments()
                    .map(|a| {
                        let name = a.attachment_name().unwrap_or_default().to_owned();
                        (name, a.contents().to_vec())
                    })
                    .collect(),
            })
            .collect()
    }
}

crate::channel_suite!(mail_world);
