//! Bad input and faults that the foundation already handles: clients that
//! disconnect or compete, a host killed with a reply pending, malformed
//! rows, a corrupt inbound view, a bad runner config, an unusable data dir.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;
use pinch_channels::cli_socket::ServerMsg;
use pinch_host::sandbox::Choice;

const SLOW: &str =
    "[[rule]]\ncontains = \"slow\"\nreply = \"slow reply: {text}\"\ndelay_ms = 700\n";

#[test]
fn client_disconnecting_mid_reply_loses_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let rt = rt();
    let host = rt
        .block_on(pinch_host::start(with_script(
            host_config(tmp.path(), Choice::Process),
            SLOW,
        )))
        .unwrap();
    let mut a = Client::connect(&host.cli_socket);
    let id = a.say("slow one", "c1");
    drop(a); // gone before the reply exists
    std::thread::sleep(Duration::from_millis(1200));
    let mut b = Client::connect(&host.cli_socket);
    let replies = b.until_settled(&id);
    assert_eq!(replies, vec!["slow reply: slow one".to_string()]);
    rt.block_on(host.shutdown()).unwrap();
}

#[test]
fn reply_is_not_counted_until_the_client_acks_it() {
    let tmp = tempfile::tempdir().unwrap();
    let rt = rt();
    let host = rt
        .block_on(pinch_host::start(host_config(tmp.path(), Choice::Process)))
        .unwrap();
    let mut a = Client::connect(&host.cli_socket);
    let id = a.say("read me", "c1");
    // Read the reply line but die before acknowledging it.
    loop {
        if let Some(ServerMsg::Message { .. }) = a.recv() {
            break;
        }
    }
    drop(a);
    let mut b = Client::connect(&host.cli_socket);
    assert_eq!(
        b.until_settled(&id),
        vec!["Hello from pinch! You said: read me".to_string()]
    );
    rt.block_on(host.shutdown()).unwrap();
}

#[test]
fn two_clients_at_once_newer_takes_over_nothing_lost() {
    let tmp = tempfile::tempdir().unwrap();
    let rt = rt();
    let host = rt
        .block_on(pinch_host::start(with_script(
            host_config(tmp.path(), Choice::Process),
            SLOW,
        )))
        .unwrap();
    let mut a = Client::connect(&host.cli_socket);
    let id_a = a.say("slow from a", "a1");
    let mut b = Client::connect(&host.cli_socket);
    assert_eq!(
        a.recv(),
        Some(ServerMsg::Superseded),
        "the older client is told"
    );
    let id_b = b.say("from b", "b1");
    let mut got = b.until_settled(&id_a);
    got.extend(b.until_settled(&id_b));
    // Both are answered on the newer client (possibly in one batched turn).
    let all = got.join("\n");
    assert!(
        all.contains("slow from a") && all.contains("from b"),
        "{got:?}"
    );
    rt.block_on(host.shutdown()).unwrap();
}

/// Live (non-zombie) processes whose command line names this data dir.
fn leftovers(data: &std::path::Path) -> usize {
    let needle = data.to_string_lossy().to_string();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()))
        .filter(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let zombie = stat
                .rsplit_once(')')
                .is_some_and(|(_, r)| r.trim_start().starts_with('Z'));
            let cmd = String::from_utf8_lossy(
                &std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default(),
            )
            .replace('\0', " ");
            !zombie && cmd.contains(&needle) && (cmd.contains("bwrap") || cmd.contains(" runner "))
        })
        .count()
}

fn daemon_host_restart(sandbox: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let cfg = tmp.path().join("pinch.toml");
    let script = tmp.path().join("script.toml");
    std::fs::write(&script, SLOW).unwrap();
    // The boot breaker would (rightly) slow the third unclean boot by 10 s.
    std::fs::write(
        &cfg,
        format!(
            "[provider.scripted]\nscript = {:?}\n[host]\nsweep_s = 1\nboot_breaker = false\n",
            script
        ),
    )
    .unwrap();
    let sock = data.join("run/cli.sock");

    // 1. Killed mid-turn: the runner dies with the host, the message stays
    //    pending, the restarted host runs it again and answers.
    let mut h = start_daemon(&data, &cfg, sandbox);
    let mut c = Client::connect(&sock);
    let id = c.say("slow before the crash", "c1");
    // Inside the 700 ms turn: the runner has claimed the message.
    let session = || {
        std::fs::read_dir(data.join("sessions/main"))
            .ok()?
            .flatten()
            .map(|e| e.path())
            .find(|p| {
                !p.file_name().unwrap().to_string_lossy().starts_with('.')
                    && p.join("out/outbound.db").exists()
            })
    };
    let claims = |d: &std::path::Path| {
        pinch_proto::open::open_reader(&d.join("out/outbound.db"), Duration::from_secs(5))
            .ok()?
            .query_row(
                "SELECT count(*) FROM processing_ack WHERE message_id = ?1",
                [format!("{id}:main")],
                |r| r.get::<_, i64>(0),
            )
            .ok()
    };
    wait_for("the runner's claim", Duration::from_secs(20), || {
        session().is_some_and(|d| claims(&d) == Some(1))
    });
    h.kill().unwrap();
    h.wait().unwrap();
    // R4: no sandbox or runner outlives a SIGKILLed host.
    wait_for(
        "the runner to die with its host",
        Duration::from_secs(5),
        || leftovers(&data) == 0,
    );
    let replies: i64 = outbound(&session().unwrap())
        .query_row("SELECT count(*) FROM messages_out", [], |r| r.get(0))
        .unwrap();
    assert_eq!(
        replies, 0,
        "killed inside the turn: claimed, not yet answered"
    );
    // 2. Reply written but never delivered: host killed with no client.
    let t = Instant::now();
    let mut h = start_daemon(&data, &cfg, sandbox);
    let mut c = Client::connect(&sock);
    assert_eq!(
        c.settled_then_barrier(&id),
        vec!["slow reply: slow before the crash".to_string()]
    );
    eprintln!("phase 1 took {:?}", t.elapsed());
    let id2 = c.say("slow while nobody listens", "c2");
    drop(c);
    let inbound_db = std::fs::read_dir(data.join("sessions/main"))
        .unwrap()
        .flatten()
        .next()
        .unwrap()
        .path();
    wait_for("the reply row", Duration::from_secs(10), || {
        outbound(&inbound_db)
            .query_row("SELECT count(*) FROM messages_out", [], |r| {
                r.get::<_, i64>(0)
            })
            .unwrap()
            >= 2
    });
    h.kill().unwrap();
    h.wait().unwrap();
    let t = Instant::now();
    let mut h = start_daemon(&data, &cfg, sandbox);
    let mut c = Client::connect(&sock);
    assert_eq!(
        c.settled_then_barrier(&id2),
        vec!["slow reply: slow while nobody listens".to_string()]
    );
    eprintln!("phase 2 took {:?}", t.elapsed());
    unsafe {
        libc::kill(h.id() as i32, libc::SIGTERM);
    }
    let st = h.wait().unwrap();
    assert!(st.success(), "graceful exit on SIGTERM: {st}");
    // Each message answered exactly once in the ledger.
    let inb = ledger_db(&inbound_db);
    let delivered: i64 = inb
        .query_row(
            "SELECT count(*) FROM delivered WHERE status = 'delivered'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let outs: i64 = outbound(&inbound_db)
        .query_row("SELECT count(*) FROM messages_out", [], |r| r.get(0))
        .unwrap();
    assert_eq!(outs, 2, "one reply per message, the killed turn wrote none");
    assert_eq!(delivered, 2);
}

#[test]
fn host_killed_with_a_reply_pending_delivers_after_restart() {
    daemon_host_restart("process");
}

#[test]
fn host_killed_with_a_reply_pending_delivers_after_restart_bwrap() {
    if bwrap_or_skip() {
        daemon_host_restart("bwrap");
    }
}

#[test]
fn second_host_on_the_same_data_dir_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let rt = rt();
    let host = rt
        .block_on(pinch_host::start(host_config(tmp.path(), Choice::Process)))
        .unwrap();
    let err = rt
        .block_on(pinch_host::start(host_config(tmp.path(), Choice::Process)))
        .err()
        .expect("second host must fail");
    let msg = format!("{err:#}");
    assert!(
        msg.contains("another pinch host") && msg.contains("already running"),
        "{msg}"
    );
    rt.block_on(host.shutdown()).unwrap();
}

#[test]
fn malformed_rows_fail_with_a_reason_and_the_loop_goes_on() {
    let tmp = tempfile::tempdir().unwrap();
    let rt = rt();
    let host = rt
        .block_on(pinch_host::start(host_config(tmp.path(), Choice::Process)))
        .unwrap();
    let mut c = Client::connect(&host.cli_socket);
    assert_eq!(c.ask("first").len(), 1);
    let s = rt.block_on(host.sessions()).remove(0);
    // Write two bad rows as the host would (its own file), then a good message.
    {
        let mut w =
            pinch_proto::open::open_writer(&s.dir.join("in/inbound.db"), Duration::from_secs(5))
                .unwrap();
        let tx = pinch_proto::open::write_tx(&mut w).unwrap();
        for (id, kind, content) in [
            ("bad-json", "chat", "{not json"),
            ("bad-kind", "hologram", "{\"x\":1}"),
        ] {
            pinch_proto::rows::insert_inbound(
                &tx,
                &pinch_proto::rows::NewInbound {
                    id: id.into(),
                    kind: kind.into(),
                    timestamp: pinch_proto::time::now(),
                    trigger: true,
                    channel_type: Some("cli".into()),
                    platform_id: Some("local".into()),
                    content: content.into(),
                    ..Default::default()
                },
                1_000,
            )
            .unwrap();
        }
        tx.commit().unwrap();
    }
    let id = c.say("still alive?", "c9");
    // The sender is told about each failed row, once, then gets the answer.
    let mut notices = Vec::new();
    let mut replies = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while (notices.len() < 2 || replies.is_empty()) && Instant::now() < deadline {
        match c.recv().unwrap() {
            ServerMsg::Notice { text } => notices.push(text),
            ServerMsg::Message { id: oid, text, .. } => {
                replies.push(text);
                c.send(&pinch_channels::cli_socket::ClientMsg::Ack { id: oid });
            }
            _ => {}
        }
    }
    assert_eq!(
        replies,
        vec!["Hello from pinch! You said: still alive?".to_string()]
    );
    assert_eq!(notices.len(), 2, "{notices:?}");
    assert!(
        notices.iter().any(|n| n.contains("not valid JSON")),
        "{notices:?}"
    );
    assert!(
        notices.iter().any(|n| n.contains("unknown kind")),
        "{notices:?}"
    );
    let _ = id;
    wait_for("bad rows synced as failed", Duration::from_secs(10), || {
        inbound(&s.dir)
            .query_row("SELECT count(*) FROM messages_in WHERE id IN ('bad-json','bad-kind') AND status = 'failed'", [], |r| r.get::<_, i64>(0))
            .unwrap()
            == 2
    });
    let out = outbound(&s.dir);
    let r1: String = out
        .query_row(
            "SELECT reason FROM processing_ack WHERE message_id = 'bad-json'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(r1.contains("not valid JSON"), "{r1}");
    let r2: String = out
        .query_row(
            "SELECT reason FROM processing_ack WHERE message_id = 'bad-kind'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(r2.contains("unknown kind \"hologram\""), "{r2}");
    rt.block_on(host.shutdown()).unwrap();
}

/// Builds a session folder and a runner.json for running `pinch runner`
/// directly (process paths), as the host would.
fn runner_fixture(tmp: &std::path::Path, streak: u32) -> (std::path::PathBuf, std::path::PathBuf) {
    let data = pinch_host::paths::DataDir::new(tmp.join("data"));
    let dir = pinch_host::session::create_folder(&data, "main", "sfix").unwrap();
    let ws = tmp.join("ws");
    std::fs::create_dir_all(&ws).unwrap();
    let timings = pinch_proto::runner_config::Timings {
        corruption_streak: streak,
        ..Default::default()
    };
    let cfg = pinch_proto::runner_config::RunnerConfig {
        version: pinch_proto::runner_config::VERSION,
        session_id: "sfix".into(),
        runner_id: "rfix".into(),
        agent_group_id: "main".into(),
        agent_name: "main".into(),
        assistant_name: None,
        paths: pinch_proto::runner_config::RunnerPaths {
            in_dir: dir.in_dir(),
            out_dir: dir.out_dir(),
            inbox_dir: dir.inbox(),
            outbox_dir: dir.outbox(),
            workspace_dir: ws,
            global_dir: None,
            extra: vec![],
        },
        provider: pinch_proto::runner_config::ProviderSettings {
            kind: "scripted".into(),
            ..Default::default()
        },
        timezone: "UTC".into(),
        timings,
        batch_size: 10,
        proxy_socket: None,
        web: Default::default(),
        mcp_servers: Vec::new(),
        credentials: Vec::new(),
    };
    let p = dir.runner_json();
    std::fs::write(&p, serde_json::to_string(&cfg).unwrap()).unwrap();
    (dir.root().to_owned(), p)
}

#[test]
fn runner_exits_75_after_ten_corrupt_polls_with_one_clear_line() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, cfg) = runner_fixture(tmp.path(), 10);
    // A torn view: the header of inbound.db is garbage.
    let db = dir.join("in/inbound.db");
    let mut bytes = std::fs::read(&db).unwrap();
    for b in bytes.iter_mut().take(100) {
        *b = 0x5a;
    }
    std::fs::write(&db, &bytes).unwrap();
    let t0 = Instant::now();
    let out = Command::new(PINCH)
        .args(["runner", "--config"])
        .arg(&cfg)
        .env("PINCH_LOG", "info")
        .output()
        .unwrap();
    let took = t0.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(75), "{stderr}");
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("exiting 75"))
        .collect();
    assert_eq!(lines.len(), 1, "exactly one exit line: {stderr}");
    assert!(
        lines[0].contains("ERROR")
            && lines[0].contains("10 times in a row")
            && lines[0].contains("inbound.db"),
        "{}",
        lines[0]
    );
    let warns = stderr
        .lines()
        .filter(|l| l.contains("poll failed (counts toward the streak)"))
        .count();
    assert_eq!(
        warns, 9,
        "nine paced retries before the tenth error exits: {stderr}"
    );
    // 9 pauses of 500 ms: the streak spans ~4.5 s whatever the poll interval.
    assert!(
        took >= Duration::from_millis(4500),
        "paced at 500 ms: {took:?}"
    );
}

/// A zero-length `inbound.db` (SQLite reads it as an empty database: "no
/// such table") is counted by the streak like corruption: exit 75 after ten
/// paced polls, not after the 60 s poll-failure ceiling (issue 15).
#[test]
fn runner_exits_75_on_a_zero_length_inbound_db_like_corruption() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, cfg) = runner_fixture(tmp.path(), 10);
    std::fs::write(dir.join("in/inbound.db"), b"").unwrap();
    let mut child = Command::new(PINCH)
        .args(["runner", "--config"])
        .arg(&cfg)
        .env("PINCH_LOG", "info")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Ten paced polls take ~5 s; the ceiling would take 60 s. Kill at 30 s
    // so a regression fails instead of hanging.
    let mut status = None;
    crate::common::wait_for("the runner to exit", Duration::from_secs(30), || {
        status = child.try_wait().unwrap();
        status.is_some()
    });
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert_eq!(status.unwrap().code(), Some(75), "{stderr}");
    let line = stderr
        .lines()
        .find(|l| l.contains("exiting 75"))
        .unwrap_or_default();
    assert!(
        line.contains("10 times in a row") && line.contains("no such table"),
        "{stderr}"
    );
    assert!(!stderr.contains("likely fine"), "{stderr}");
}

#[test]
fn runner_with_a_bad_config_exits_78_naming_the_problem() {
    let tmp = tempfile::tempdir().unwrap();
    let (_dir, cfg) = runner_fixture(tmp.path(), 10);
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&cfg).unwrap()).unwrap();
    v["batch_size"] = 0.into();
    v["provider"]["kind"] = "quantum".into();
    std::fs::write(&cfg, v.to_string()).unwrap();
    let out = Command::new(PINCH)
        .args(["runner", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{stderr}");
    assert!(stderr.contains("batch_size must be at least 1"), "{stderr}");
    std::fs::write(&cfg, "{\"version\": 1, \"surprise\": true}").unwrap();
    let out = Command::new(PINCH)
        .args(["runner", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("unknown field"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn chat(data: &std::path::Path, args: &[&str], input: &str) -> std::process::Output {
    let mut all = vec![
        "--data-dir",
        data.to_str().unwrap(),
        "--provider",
        "scripted",
    ];
    all.extend_from_slice(args);
    crate::common::pinch_chat(
        &all,
        &[("PINCH_CONFIG", std::path::Path::new("/dev/null"))],
        input,
    )
}

#[test]
fn scripted_pinch_chat_prints_replies_and_exits() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let out = chat(
        &data,
        &["--sandbox", "process", "--timeout", "30"],
        "hi\n\nthere\n",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "Hello from pinch! You said: hi\nHello from pinch! You said: there\n"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("WARNING"),
        "process sandbox warns loudly"
    );
    // The first run created the default setup; a second run reuses it.
    let out = chat(&data, &["--sandbox", "process"], "again\n");
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "Hello from pinch! You said: again\n"
    );
}

#[test]
fn scripted_pinch_chat_in_bwrap() {
    if !bwrap_or_skip() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let out = chat(
        &tmp.path().join("data"),
        &["--timeout", "30"],
        "through the sandbox\n",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "Hello from pinch! You said: through the sandbox\n"
    );
}

#[test]
fn bad_flags_and_config_are_usage_and_config_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let out = chat(&tmp.path().join("d"), &["--sandbox", "vm"], "x\n");
    assert_eq!(out.status.code(), Some(78));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("expected auto, bwrap, docker or process")
    );
    let out = Command::new(PINCH)
        .args(["chat", "--no-such-flag"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let cfg = tmp.path().join("pinch.toml");
    std::fs::write(&cfg, "[runner]\nidle_exit_secs = 3\n").unwrap();
    let out = Command::new(PINCH)
        .args(["chat", "--data-dir"])
        .arg(tmp.path().join("d"))
        .arg("--config")
        .arg(&cfg)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("idle_exit_secs"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn umount(at: &std::path::Path) {
    let _ = Command::new("umount").arg("-l").arg(at).status();
}

#[test]
fn read_only_or_full_data_dir_gives_a_clear_error_naming_the_path() {
    let tmp = tempfile::tempdir().unwrap();
    let ro = tmp.path().join("ro");
    if !mount_tmpfs(&ro, "ro,size=1m") {
        return;
    }
    let out = chat(&ro.join("data"), &["--sandbox", "process"], "hi\n");
    umount(&ro);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&ro.join("data").display().to_string()) && err.contains("Read-only"),
        "{err}"
    );
    assert!(err.contains("--data-dir"), "names the fix: {err}");

    let full = tmp.path().join("full");
    if !mount_tmpfs(&full, "size=64k") {
        return;
    }
    let out = chat(&full.join("data"), &["--sandbox", "process"], "hi\n");
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    // nothing half-written: no temporary session folders remain
    let leftovers: Vec<_> = walk(&full)
        .into_iter()
        .filter(|p| p.to_string_lossy().contains(".tmp-"))
        .collect();
    umount(&full);
    assert_ne!(out.status.code(), Some(0), "{err}");
    assert!(
        err.contains(&full.join("data").display().to_string()),
        "names the path: {err}"
    );
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn missing_bubblewrap_says_how_to_install_and_process_needs_asking() {
    let tmp = tempfile::tempdir().unwrap();
    let mut child = Command::new(PINCH)
        .args(["chat", "--provider", "scripted", "--data-dir"])
        .arg(tmp.path().join("d"))
        .env("PINCH_CONFIG", "/dev/null")
        .env("PATH", tmp.path()) // no bwrap anywhere on PATH
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"hi\n").unwrap();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{err}");
    assert!(
        err.contains("apt-get install -y bubblewrap") && err.contains("--sandbox process"),
        "{err}"
    );
    assert!(
        out.stdout.is_empty(),
        "never silently falls back to no isolation"
    );
}

#[test]
fn boot_breaker_records_unclean_boots_and_a_clean_exit_clears_it() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let cfg = tmp.path().join("pinch.toml");
    std::fs::write(&cfg, "").unwrap();
    let breaker = data.join("run/circuit-breaker.json");
    let sock = data.join("run/cli.sock");
    let mut h = start_daemon(&data, &cfg, "process");
    drop(Client::connect(&sock));
    h.kill().unwrap();
    h.wait().unwrap();
    let boots: Vec<i64> =
        serde_json::from_str(&std::fs::read_to_string(&breaker).unwrap()).unwrap();
    assert_eq!(boots.len(), 1);
    let mut h = start_daemon(&data, &cfg, "process");
    drop(Client::connect(&sock)); // boot 2 does not wait (connect gives up after 10 s)
    let boots: Vec<i64> =
        serde_json::from_str(&std::fs::read_to_string(&breaker).unwrap()).unwrap();
    assert_eq!(boots.len(), 2);
    unsafe {
        libc::kill(h.id() as i32, libc::SIGTERM);
    }
    assert!(h.wait().unwrap().success());
    assert!(
        !breaker.exists(),
        "a graceful exit deletes the breaker file"
    );
}

fn admin_runner_pid(data: &std::path::Path) -> Option<u64> {
    let out = Command::new(PINCH)
        .args(["admin", "sessions", "list", "--json", "--data-dir"])
        .arg(data)
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    v["data"]
        .as_array()?
        .iter()
        .find_map(|r| r["runner_pid"].as_u64())
}

/// Lesson 25: a host reaping what its previous life left behind never
/// touches another install's sandboxes.
#[test]
fn reaping_at_boot_spares_another_installs_runners() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("pinch.toml");
    std::fs::write(&cfg, "[host]\nboot_breaker = false\n").unwrap();
    let sandbox = if pinch_host::sandbox::select(Choice::Bwrap).is_ok() {
        "bwrap"
    } else {
        "process"
    };
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    let mut ha = start_daemon(&a, &cfg, sandbox);
    let _hb = start_daemon(&b, &cfg, sandbox);
    for d in [&a, &b] {
        let mut c = Client::connect(&d.join("run/cli.sock"));
        assert_eq!(c.ask("wake up").len(), 1);
    }
    let pid_b = admin_runner_pid(&b).expect("b's runner is alive");
    ha.kill().unwrap();
    ha.wait().unwrap();
    let _ha2 = start_daemon(&a, &cfg, sandbox);
    let mut c = Client::connect(&a.join("run/cli.sock"));
    assert_eq!(c.ask("a again").len(), 1);
    assert_eq!(
        admin_runner_pid(&b),
        Some(pid_b),
        "b's runner survived a's reboot"
    );
    assert!(std::path::Path::new(&format!("/proc/{pid_b}")).exists());
    let mut cb = Client::connect(&b.join("run/cli.sock"));
    assert_eq!(cb.ask("b still fine").len(), 1);
}
