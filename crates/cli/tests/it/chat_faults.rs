//! Issue 15, part "chat": what `pinch chat` and the CLI channel do when
//! something goes wrong — notices to nobody, bad bytes, long lines, a host
//! that restarts mid-input, a provider that fails, a missing model.

use std::time::Duration;

use crate::common::*;
use pinch_channels::cli_socket::ServerMsg;
use pinch_host::sandbox::Choice;

const WAIT: Duration = Duration::from_secs(30);

fn quarantined(tmp: &std::path::Path) -> bool {
    pinch_proto::rusqlite::Connection::open(tmp.join("data/pinch.db"))
        .unwrap()
        .query_row(
            "SELECT count(*) FROM sessions WHERE quarantined_at IS NOT NULL",
            [],
            |r| r.get::<_, i64>(0),
        )
        .unwrap()
        > 0
}

fn crash_loop_config(tmp: &std::path::Path) -> pinch_host::HostConfig {
    let mut cfg = host_config(tmp, Choice::Process);
    cfg.runner_exe = "/bin/false".into(); // every runner exits 1 at once
    cfg.budget.delays = vec![Duration::ZERO, Duration::from_millis(50)];
    cfg.boot_breaker = false;
    cfg
}

fn start_host(rt: &tokio::runtime::Runtime, cfg: pinch_host::HostConfig) -> pinch_host::HostHandle {
    rt.block_on(pinch_host::start(cfg)).unwrap()
}

/// A host whose runners work (the echo model).
fn working_host(rt: &tokio::runtime::Runtime, tmp: &std::path::Path) -> pinch_host::HostHandle {
    start_host(rt, host_config(tmp, Choice::Process))
}

/// The user asks once and walks away before the agent fails; its runner
/// never starts, so the session is quarantined with nobody to tell. The
/// host then stops.
fn quarantined_while_nobody_listens(rt: &tokio::runtime::Runtime, tmp: &std::path::Path) {
    let host = start_host(rt, crash_loop_config(tmp));
    let mut c = Client::connect(&host.cli_socket);
    c.say("anyone there?", "c1");
    drop(c); // the user walks away before the agent fails
    wait_for("the session to be quarantined", WAIT, || quarantined(tmp));
    rt.block_on(host.shutdown()).unwrap();
}

/// Break 5: a quarantine notice for a terminal user with no `pinch chat`
/// open is kept (across a host restart too) and is the first thing the
/// next client gets — once.
#[test]
fn a_notice_to_nobody_is_kept_across_a_restart_and_shown_first_on_connect() {
    let tmp = tempfile::tempdir().unwrap();
    let rt = rt();
    quarantined_while_nobody_listens(&rt, tmp.path());
    // The notice had nobody to go to; the host starts again.
    let host = start_host(&rt, crash_loop_config(tmp.path()));
    let mut c = Client::connect(&host.cli_socket);
    match c.recv() {
        Some(ServerMsg::Notice { text }) => assert!(
            text.contains("unavailable") && text.contains("sessions resume"),
            "{text}"
        ),
        other => panic!("expected the stored quarantine notice first, got {other:?}"),
    }
    // Delivered: the next client does not get it again.
    drop(c);
    let mut c = Client::connect(&host.cli_socket);
    c.say("status?", "c2");
    // Its own reply never comes (the runner cannot start); no stale notice
    // comes before the acceptance either — `say` stashes anything else.
    rt.block_on(host.shutdown()).unwrap();
}

/// `pinch model path` with no model says it is missing and how to get it.
#[test]
fn model_path_without_a_model_says_it_is_missing_and_how_to_fetch_it() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let out = pinch(&["model", "path"], &data).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    // stdout still names where it belongs (for scripts); stderr explains.
    assert!(String::from_utf8_lossy(&out.stdout).contains("models/"));
    assert!(
        err.contains("no model") && err.contains("pinch model fetch"),
        "{err}"
    );
}

/// `pinch chat` with only a data dir (no provider, no API keys, an empty
/// config), as a user runs it next to a daemon.
fn chat_to_running(data: &std::path::Path, input: &[u8]) -> std::process::Output {
    pinch_chat_bytes(
        &["--data-dir", data.to_str().unwrap(), "--timeout", "60"],
        &[("PINCH_CONFIG", std::path::Path::new("/dev/null"))],
        input,
    )
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The stdout and stderr of a `pinch chat` that exited with `code`.
fn exited(out: std::process::Output, code: i32) -> (String, String) {
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(code), "{stderr}");
    (stdout, stderr)
}

/// Break 7, piped: a line with invalid UTF-8 is sent with U+FFFD in place
/// of the bad bytes, said once with its line number, and the lines after it
/// are sent too.
#[test]
fn piped_invalid_utf8_is_replaced_said_once_and_the_rest_is_sent() {
    let tmp = tempfile::tempdir().unwrap();
    let rt = rt();
    let host = working_host(&rt, tmp.path());
    let (stdout, stderr) = exited(
        chat_to_running(
            &tmp.path().join("data"),
            b"first\ncaf\xff\xfe au lait\nsecond \xc3\nlast\n",
        ),
        0,
    );
    assert_eq!(
        stdout,
        "Hello from pinch! You said: first\nHello from pinch! You said: caf\u{fffd}\u{fffd} au lait\nHello from pinch! You said: second \u{fffd}\nHello from pinch! You said: last\n"
    );
    assert!(
        stderr.contains("line 2 is not valid UTF-8") && stderr.contains("U+FFFD"),
        "{stderr}"
    );
    assert_eq!(stderr.matches("not valid UTF-8").count(), 1, "{stderr}");
    rt.block_on(host.shutdown()).unwrap();
}

/// `pinch chat` next to a running host needs no provider of its own (the
/// host's configuration decides), and a turn whose provider failed makes
/// it exit 1, naming the line, after printing the apology.
#[test]
fn chat_to_a_running_host_needs_no_provider_and_a_provider_failure_exits_1() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = with_script(
        host_config(tmp.path(), Choice::Process),
        "[[rule]]\ncontains = \"fail\"\nerror = \"simulated outage\"\n\n[[rule]]\nreply = \"ok: {text}\"\n",
    );
    let rt = rt();
    let host = start_host(&rt, cfg);
    let data = tmp.path().join("data");
    let (stdout, _) = exited(chat_to_running(&data, b"hello\n"), 0);
    assert_eq!(stdout, "ok: hello\n");
    let (stdout, stderr) = exited(chat_to_running(&data, b"hello\nplease fail\nbye\n"), 1);
    assert!(
        stdout.contains("Sorry, I could not answer that") && stdout.ends_with("ok: bye\n"),
        "{stdout}"
    );
    assert!(
        stderr.contains("line 2: the agent could not answer it"),
        "{stderr}"
    );
    rt.block_on(host.shutdown()).unwrap();
}

/// A 10 MB line: the host's reason is shown (not "Broken pipe"), the line
/// is not sent, the other lines are, and the exit status says one failed.
/// A raw client that sends one anyway gets the reason and keeps its
/// connection.
#[test]
fn a_line_over_1_mib_is_refused_with_the_reason_and_the_rest_is_sent() {
    let tmp = tempfile::tempdir().unwrap();
    let rt = rt();
    let host = working_host(&rt, tmp.path());
    let mut input = b"before\n".to_vec();
    input.extend(std::iter::repeat_n(b'x', 10 << 20));
    input.extend(b"\nafter\n");
    let (stdout, stderr) = exited(chat_to_running(&tmp.path().join("data"), &input), 1);
    assert!(
        stderr.contains("line 2: line longer than 1 MiB") && !stderr.contains("Broken pipe"),
        "{stderr}"
    );
    assert_eq!(
        stdout,
        "Hello from pinch! You said: before\nHello from pinch! You said: after\n"
    );

    // The host's side, for any client: the reason, then business as usual.
    let mut c = Client::connect(&host.cli_socket);
    let mut long = b"{\"type\":\"message\",\"text\":\"".to_vec();
    long.extend(std::iter::repeat_n(b'y', 3 << 20));
    long.extend(b"\"}\n");
    std::io::Write::write_all(&mut c.w, &long).unwrap();
    match c.recv() {
        Some(ServerMsg::Rejected { error, .. }) => {
            assert!(error.contains("line longer than 1 MiB"), "{error}")
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        c.ask("still here"),
        ["Hello from pinch! You said: still here"]
    );
    rt.block_on(host.shutdown()).unwrap();
}

/// A stand-in host on `data/run/cli.sock` that plays one connection at a
/// time: `script` gets each client message and answers with server lines;
/// `Err(())` drops the connection there (the host died).
struct FakeHost {
    path: std::path::PathBuf,
    /// Bound before `pinch chat` starts (else it would start a host).
    listener: Option<std::os::unix::net::UnixListener>,
    /// Every message line received, over all connections.
    got: Vec<pinch_channels::cli_socket::ClientMsg>,
}

impl FakeHost {
    fn new(data: &std::path::Path) -> FakeHost {
        std::fs::create_dir_all(data.join("run")).unwrap();
        let path = data.join("run/cli.sock");
        FakeHost {
            listener: Some(std::os::unix::net::UnixListener::bind(&path).unwrap()),
            path,
            got: Vec::new(),
        }
    }

    /// Serves one client until `answer` returns `None` (the host dies:
    /// the socket goes away with the connection).
    fn serve_one(
        &mut self,
        mut answer: impl FnMut(&pinch_channels::cli_socket::ClientMsg) -> Option<Vec<ServerMsg>>,
    ) {
        let l = match self.listener.take() {
            Some(l) => l,
            None => std::os::unix::net::UnixListener::bind(&self.path).unwrap(),
        };
        // `pinch chat` first only checks that a host answers: a connection
        // that says nothing is not the client yet.
        let mut said = false;
        while !said {
            said = self.serve_conn(&l, &mut answer);
        }
        drop(l);
        let _ = std::fs::remove_file(&self.path);
    }

    fn serve_conn(
        &mut self,
        l: &std::os::unix::net::UnixListener,
        answer: &mut impl FnMut(&pinch_channels::cli_socket::ClientMsg) -> Option<Vec<ServerMsg>>,
    ) -> bool {
        use std::io::{BufRead, Write};
        l.set_nonblocking(true).unwrap();
        let deadline = std::time::Instant::now() + WAIT;
        let s = loop {
            match l.accept() {
                Ok((s, _)) => break s,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    assert!(
                        std::time::Instant::now() < deadline,
                        "pinch chat never connected"
                    );
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(e) => panic!("accept: {e}"),
            }
        };
        s.set_nonblocking(false).unwrap();
        s.set_read_timeout(Some(WAIT)).unwrap();
        let mut said = false;
        let mut w = s.try_clone().unwrap();
        let mut r = std::io::BufReader::new(s);
        w.write_all(
            ServerMsg::Hello {
                user: "tester".into(),
                about: None,
            }
            .line()
            .as_bytes(),
        )
        .unwrap_or_default();
        let mut line = String::new();
        loop {
            line.clear();
            if r.read_line(&mut line).unwrap_or(0) == 0 {
                break;
            }
            said = true;
            let m: pinch_channels::cli_socket::ClientMsg = serde_json::from_str(&line).unwrap();
            if matches!(m, pinch_channels::cli_socket::ClientMsg::Ack { .. }) {
                continue;
            }
            self.got.push(m.clone());
            match answer(&m) {
                Some(out) => {
                    for o in out {
                        w.write_all(o.line().as_bytes()).unwrap();
                    }
                }
                None => break,
            }
        }
        said
    }
}

/// The host's normal answer to a message: stored, replied, settled.
fn answer_normally(m: &pinch_channels::cli_socket::ClientMsg) -> Option<Vec<ServerMsg>> {
    let pinch_channels::cli_socket::ClientMsg::Message {
        text,
        client_id,
        key,
    } = m
    else {
        return Some(vec![]);
    };
    let id = format!("cli-k-{}", key.clone().expect("pinch chat sends a key"));
    Some(vec![
        ServerMsg::Accepted {
            client_id: client_id.clone(),
            id: id.clone(),
            routed: 1,
            note: None,
            handled: false,
        },
        ServerMsg::Message {
            id: format!("out-{id}"),
            text: format!("re: {text}"),
            in_reply_to: Some(id.clone()),
            buttons: vec![],
        },
        ServerMsg::Settled {
            ids: vec![id],
            failed: vec![],
        },
    ])
}

fn spawn_chat(data: &std::path::Path, timeout_s: &str, input: &[u8]) -> std::process::Child {
    use std::io::Write;
    let mut child = std::process::Command::new(PINCH)
        .args(["chat", "--data-dir"])
        .arg(data)
        .args(["--timeout", timeout_s])
        .env("PINCH_CONFIG", "/dev/null")
        .env_remove("ANTHROPIC_API_KEY")
        .env_remove("OPENAI_API_KEY")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    child
}

/// Piped input, the host dies before confirming line 2: the client waits
/// for it to come back, sends line 2 again under the same key (stored once
/// by the host) and goes on with the rest.
#[test]
fn piped_chat_waits_for_a_host_that_died_before_confirming_and_continues() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let mut host = FakeHost::new(&data);
    let child = spawn_chat(&data, "20", b"one\ntwo\nthree\n");
    let mut n = 0;
    host.serve_one(|m| {
        n += 1;
        if n == 2 {
            None // dies with line 2 received, unconfirmed
        } else {
            answer_normally(m)
        }
    });
    std::thread::sleep(Duration::from_millis(300)); // down for a while
    host.serve_one(answer_normally);
    let (stdout, stderr) = exited(child.wait_with_output().unwrap(), 0);
    assert_eq!(stdout, "re: one\nre: two\nre: three\n", "{stderr}");
    assert!(
        stderr.contains("before it confirmed line 2") && stderr.contains("sending line 2 again"),
        "{stderr}"
    );
    let keys: Vec<String> = host
        .got
        .iter()
        .filter_map(|m| match m {
            pinch_channels::cli_socket::ClientMsg::Message { key, .. } => key.clone(),
            _ => None,
        })
        .collect();
    assert_eq!(keys.len(), 4, "line 2 twice: {keys:?}");
    assert_eq!(keys[1], keys[2], "the resend has the same key");
    assert_ne!(keys[0], keys[1]);
}

/// The host never comes back: the lines not confirmed are listed and the
/// exit status is 1 (no silent success, no hang past the timeout).
#[test]
fn piped_chat_reports_the_lines_a_host_that_stayed_away_never_confirmed() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let mut host = FakeHost::new(&data);
    let child = spawn_chat(&data, "2", b"one\ntwo\n\nthree\n");
    let mut n = 0;
    host.serve_one(|m| {
        n += 1;
        (n < 2).then(|| answer_normally(m)).flatten()
    });
    let (stdout, stderr) = exited(child.wait_with_output().unwrap(), 1);
    assert_eq!(stdout, "re: one\n");
    assert!(stderr.contains("did not confirm lines 2, 4"), "{stderr}");
}

/// The host's half of "stored once": a message sent again with the same key
/// is confirmed with the same id and stored once.
#[test]
fn a_message_sent_again_with_its_key_is_stored_once() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = with_script(
        host_config(tmp.path(), Choice::Process),
        "[[rule]]\nreply = \"ok: {text}\"\n",
    );
    let rt = rt();
    let host = start_host(&rt, cfg);
    let mut c = Client::connect(&host.cli_socket);
    let send = |c: &mut Client| {
        c.send(&pinch_channels::cli_socket::ClientMsg::Message {
            text: "only once".into(),
            client_id: Some("k1".into()),
            key: Some("run1-7".into()),
        });
        loop {
            match c.recv().expect("host closed") {
                ServerMsg::Accepted {
                    client_id: Some(k),
                    id,
                    routed,
                    ..
                } if k == "k1" => {
                    assert_eq!(routed, 1);
                    return id;
                }
                ServerMsg::Message { id, .. } => {
                    c.send(&pinch_channels::cli_socket::ClientMsg::Ack { id })
                }
                _ => {}
            }
        }
    };
    let a = send(&mut c);
    c.until_settled(&a);
    drop(c);
    let mut c = Client::connect(&host.cli_socket);
    let b = send(&mut c);
    assert_eq!(a, b);
    let dir = rt.block_on(host.sessions()).remove(0).dir;
    let n: i64 = inbound(&dir)
        .query_row(
            "SELECT count(*) FROM messages_in WHERE content LIKE '%only once%'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(n, 1);
    // A key that is not 1..=64 of A-Za-z0-9_- is refused, not mangled.
    c.send(&pinch_channels::cli_socket::ClientMsg::Message {
        text: "x".into(),
        client_id: Some("k2".into()),
        key: Some("no spaces".into()),
    });
    loop {
        match c.recv().expect("host closed") {
            ServerMsg::Rejected { error, .. } => {
                assert!(error.contains("key"), "{error}");
                break;
            }
            ServerMsg::Accepted { .. } => panic!("a bad key was accepted"),
            _ => {}
        }
    }
    rt.block_on(host.shutdown()).unwrap();
}

/// Break 7, typed: at a terminal (a real pty), a line with invalid UTF-8
/// is sent with U+FFFD, said once with its line number, and the session
/// goes on (it used to end with exit 0 and no word); Ctrl-D ends it.
#[test]
fn typed_invalid_utf8_is_replaced_and_the_session_goes_on() {
    use std::io::{Read, Write};
    use std::os::fd::{FromRawFd, OwnedFd};
    let tmp = tempfile::tempdir().unwrap();
    let rt = rt();
    let host = working_host(&rt, tmp.path());
    let (mut master, slave) = unsafe {
        let (mut m, mut s) = (0, 0);
        assert_eq!(
            libc::openpty(
                &mut m,
                &mut s,
                std::ptr::null_mut(),
                std::ptr::null(),
                std::ptr::null()
            ),
            0
        );
        (std::fs::File::from_raw_fd(m), OwnedFd::from_raw_fd(s))
    };
    let mut child = std::process::Command::new(PINCH)
        .args(["chat", "--data-dir"])
        .arg(tmp.path().join("data"))
        .env("PINCH_CONFIG", "/dev/null")
        .env_remove("ANTHROPIC_API_KEY")
        .env_remove("OPENAI_API_KEY")
        .stdin(std::process::Stdio::from(slave))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Drain the terminal's echo so it never fills up.
    let mut echo = master.try_clone().unwrap();
    std::thread::spawn(move || {
        let mut b = [0u8; 4096];
        while echo.read(&mut b).is_ok_and(|n| n > 0) {}
    });
    let seen = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let mut stdout = child.stdout.take().unwrap();
    let s2 = seen.clone();
    std::thread::spawn(move || {
        let mut b = [0u8; 4096];
        while let Ok(n) = stdout.read(&mut b) {
            if n == 0 {
                break;
            }
            s2.lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(&b[..n]));
        }
    });
    master.write_all(b"caf\xff\n").unwrap();
    wait_for("the reply to the bad line", WAIT, || {
        seen.lock().unwrap().contains("You said: caf\u{fffd}\n")
    });
    master.write_all(b"still here\n").unwrap();
    wait_for("the reply to the next line", WAIT, || {
        seen.lock().unwrap().contains("You said: still here\n")
    });
    master.write_all(b"\x04").unwrap(); // Ctrl-D
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("line 1 is not valid UTF-8") && stderr.contains("U+FFFD"),
        "{stderr}"
    );
    rt.block_on(host.shutdown()).unwrap();
}

/// The same through `pinch chat` itself: the stored notice is printed
/// before the reply to the user's next line (the connection that found the
/// host is the one chatted on, so no probe swallows it).
#[test]
fn pinch_chat_shows_a_stored_notice_before_the_next_reply() {
    let tmp = tempfile::tempdir().unwrap();
    let rt = rt();
    quarantined_while_nobody_listens(&rt, tmp.path());
    // The cause is fixed; the host runs normally again.
    let host = working_host(&rt, tmp.path());
    let (stdout, stderr) = exited(
        chat_to_running(&tmp.path().join("data"), b"hello again\n"),
        0,
    );
    assert!(
        stderr.starts_with("pinch: The assistant is unavailable"),
        "{stderr}"
    );
    // The message that was waiting is answered too (with the new one).
    assert!(
        stdout.contains("anyone there?") && stdout.contains("hello again"),
        "{stdout}"
    );
    rt.block_on(host.shutdown()).unwrap();
}
