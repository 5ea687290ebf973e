//! Issue 15, part "chat": what `pinch chat` and the CLI channel do when
//! something goes wrong — notices to nobody, bad bytes, long lines, a host
//! that restarts mid-input, a provider that fails, a missing model.

mod common;

use std::time::Duration;

use common::*;
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

/// Break 5: a quarantine notice for a terminal user with no `pinch chat`
/// open is kept (across a host restart too) and is the first thing the
/// next client gets — once.
#[test]
fn a_notice_to_nobody_is_kept_across_a_restart_and_shown_first_on_connect() {
    let tmp = tempfile::tempdir().unwrap();
    let rt = rt();
    let host = rt
        .block_on(pinch_host::start(crash_loop_config(tmp.path())))
        .unwrap();
    let mut c = Client::connect(&host.cli_socket);
    c.say("anyone there?", "c1");
    drop(c); // the user walks away before the agent fails
    wait_for("the session to be quarantined", WAIT, || {
        quarantined(tmp.path())
    });
    // The notice had nobody to go to; the host stops and starts again.
    rt.block_on(host.shutdown()).unwrap();
    let host = rt
        .block_on(pinch_host::start(crash_loop_config(tmp.path())))
        .unwrap();
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

fn pinch(args: &[&str], data: &std::path::Path) -> std::process::Command {
    let mut c = std::process::Command::new(PINCH);
    c.arg("--data-dir")
        .arg(data)
        .args(args)
        .env("PINCH_CONFIG", "/dev/null")
        .env_remove("ANTHROPIC_API_KEY")
        .env_remove("OPENAI_API_KEY")
        .env_remove("OPENAI_BASE_URL")
        .env_remove("PINCH_HOME");
    c
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

/// Break 7, piped: a line with invalid UTF-8 is sent with U+FFFD in place
/// of the bad bytes, said once with its line number, and the lines after it
/// are sent too.
#[test]
fn piped_invalid_utf8_is_replaced_said_once_and_the_rest_is_sent() {
    let tmp = tempfile::tempdir().unwrap();
    let rt = rt();
    let host = rt
        .block_on(pinch_host::start(host_config(tmp.path(), Choice::Process)))
        .unwrap();
    let out = chat_to_running(
        &tmp.path().join("data"),
        b"first\ncaf\xff\xfe au lait\nsecond \xc3\nlast\n",
    );
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{stderr}");
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
    let host = rt.block_on(pinch_host::start(cfg)).unwrap();
    let data = tmp.path().join("data");
    let out = chat_to_running(&data, b"hello\n");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "ok: hello\n");
    let out = chat_to_running(&data, b"hello\nplease fail\nbye\n");
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "{stderr}");
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
    let host = rt
        .block_on(pinch_host::start(host_config(tmp.path(), Choice::Process)))
        .unwrap();
    let mut input = b"before\n".to_vec();
    input.extend(std::iter::repeat_n(b'x', 10 << 20));
    input.extend(b"\nafter\n");
    let out = chat_to_running(&tmp.path().join("data"), &input);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "{stderr}");
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
