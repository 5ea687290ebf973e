//! Supervision faults (issue 15): spawns that keep failing, the crash
//! budget across host restarts, frozen runners, long back-offs and the
//! cause a quarantine names. Real host, real processes, real files.

use std::time::{Duration, Instant};

use crate::common::*;
use pinch_channels::cli_socket::ServerMsg;
use pinch_host::sandbox::Choice;

fn central(tmp: &std::path::Path) -> pinch_proto::rusqlite::Connection {
    pinch_proto::rusqlite::Connection::open(tmp.join("data/pinch.db")).unwrap()
}

fn count_exits(tmp: &std::path::Path, cause: &str) -> i64 {
    central(tmp)
        .query_row(
            "SELECT count(*) FROM runner_exits WHERE cause = ?1",
            [cause],
            |r| r.get(0),
        )
        .unwrap()
}

/// The next host notice on this connection (other lines are acked/kept out).
fn next_notice(c: &mut Client, within: Duration) -> Option<String> {
    let deadline = Instant::now() + within;
    for m in c.take_seen() {
        if let ServerMsg::Notice { text } = m {
            return Some(text);
        }
    }
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match c.recv_within(left.max(Duration::from_millis(1))) {
            Some(ServerMsg::Notice { text }) => return Some(text),
            Some(ServerMsg::Message { id, .. }) => {
                c.send(&pinch_channels::cli_socket::ClientMsg::Ack { id })
            }
            Some(_) => {}
            None => return None,
        }
    }
    None
}

/// A host whose every runner fails at once (`exe` is missing or exits
/// non-zero), with a crash budget of `budget`, the back-off `delays` and no
/// boot breaker.
fn failing_runner_config(
    tmp: &std::path::Path,
    exe: std::path::PathBuf,
    budget: usize,
    delays: Vec<Duration>,
) -> pinch_host::HostConfig {
    let mut cfg = host_config(tmp, Choice::Process);
    cfg.runner_exe = exe;
    cfg.budget.budget = budget;
    cfg.budget.delays = delays;
    cfg.boot_breaker = false;
    cfg
}

/// Starts a host of `cfg` and a user who asks "anyone there?".
fn start_and_ask(
    cfg: pinch_host::HostConfig,
) -> (tokio::runtime::Runtime, pinch_host::HostHandle, Client) {
    let rt = rt();
    let host = rt.block_on(pinch_host::start(cfg)).unwrap();
    let mut c = Client::connect(&host.cli_socket);
    c.say("anyone there?", "c1");
    (rt, host, c)
}

/// Break 1: every spawn fails (the runner executable is missing), with no
/// respawn delay and a budget far larger than the recursion the host used
/// to survive. The host stays up: each failure is counted like an abnormal
/// exit and the retry is a scheduled event after a floor delay, never a
/// nested call.
#[test]
fn spawns_that_keep_failing_back_off_without_overflowing_the_stack() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("no-such-pinch");
    let (rt, host, _c) = start_and_ask(failing_runner_config(
        tmp.path(),
        missing,
        100_000,
        vec![Duration::ZERO],
    ));
    wait_for("three failed spawns", Duration::from_secs(30), || {
        count_exits(tmp.path(), "spawn_failed") >= 3
    });
    // The main loop still answers (it would have aborted on a stack overflow).
    assert_eq!(rt.block_on(host.sessions()).len(), 1);
    rt.block_on(host.shutdown()).unwrap();
}

/// A spawn failure is an abnormal exit: the budget runs out, the session is
/// quarantined and the user is told once, naming the failure.
#[test]
fn spawns_that_keep_failing_end_quarantined_with_the_user_told() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("no-such-pinch");
    let (rt, host, mut c) = start_and_ask(failing_runner_config(
        tmp.path(),
        missing,
        3,
        vec![Duration::ZERO],
    ));
    let notice = next_notice(&mut c, Duration::from_secs(30)).expect("a quarantine notice");
    assert!(
        notice.contains("unavailable") && notice.contains("4 times"),
        "{notice}"
    );
    assert!(notice.contains("could not be started"), "{notice}");
    assert_eq!(count_exits(tmp.path(), "spawn_failed"), 4);
    rt.block_on(host.shutdown()).unwrap();
}

/// Break 6: abnormal exits before a restart of the host still count. With a
/// budget of 3, the fourth abnormal exit quarantines, whichever host saw
/// the earlier ones.
#[test]
fn the_crash_budget_survives_a_host_restart() {
    let tmp = tempfile::tempdir().unwrap();
    // /bin/false exits 1 at once.
    let cfg = || failing_runner_config(tmp.path(), "/bin/false".into(), 3, vec![Duration::ZERO]);
    let (rt, host, c) = start_and_ask(cfg());
    wait_for("two abnormal exits", Duration::from_secs(20), || {
        count_exits(tmp.path(), "fatal") >= 2
    });
    drop(c);
    rt.block_on(host.shutdown()).unwrap();
    let before = count_exits(tmp.path(), "fatal");
    assert!(before < 4, "not quarantined before the restart");
    // The pending message wakes the session at boot.
    let host = rt.block_on(pinch_host::start(cfg())).unwrap();
    let quarantined = || {
        central(tmp.path())
            .query_row(
                "SELECT count(*) FROM sessions WHERE quarantined_at IS NOT NULL",
                [],
                |r| r.get::<_, i64>(0),
            )
            .unwrap()
            == 1
    };
    wait_for("the quarantine", Duration::from_secs(30), quarantined);
    assert_eq!(
        count_exits(tmp.path(), "fatal"),
        4,
        "quarantined at the budget across the restart ({before} exits before it)"
    );
    rt.block_on(host.shutdown()).unwrap();
}

/// A frozen runner (SIGSTOP) is killed from its own heartbeat deadline: the
/// sweep here runs once an hour, so only the per-runner timer can kill it.
/// The user still gets the answer (the message is retried).
#[test]
fn a_frozen_runner_is_killed_by_its_heartbeat_timer_not_the_sweep() {
    let tmp = tempfile::tempdir().unwrap();
    let mut turn = slow_turn_claimed(tmp.path(), Duration::from_secs(3600));
    let texts = turn.freeze_until_settled();
    assert_eq!(texts, vec!["slow: slow and then frozen".to_string()]);
    assert_eq!(count_exits(tmp.path(), "killed_stuck"), 1);
    turn.rt.block_on(turn.host.shutdown()).unwrap();
}

/// Review of issue 15: a hostile runner replaces `processing_ack` in its
/// own outbound.db by one the host cannot read (a dropped table alone reads
/// as "no claims"; a row of NULLs fails every read) and then freezes. The
/// stuck timer cannot read the runner's claims; the heartbeat alone must
/// still decide (the sweep here runs once
/// an hour, so only the timer can kill it). Before the fix every check
/// failed, was retried every second, and the runner was never killed.
#[test]
fn a_runner_that_breaks_its_claims_table_and_freezes_is_still_killed() {
    let tmp = tempfile::tempdir().unwrap();
    let SlowTurn {
        rt, host, c: _c, s, ..
    } = slow_turn_claimed(tmp.path(), Duration::from_secs(3600));
    // What the compromised runner does to its own file, then it freezes.
    let w = pinch_proto::rusqlite::Connection::open(s.dir.join("out/outbound.db")).unwrap();
    w.busy_timeout(Duration::from_secs(5)).unwrap();
    w.execute_batch(
        "DROP TABLE processing_ack;
         CREATE TABLE processing_ack (message_id, status, runner_id, status_changed, reason);
         INSERT INTO processing_ack VALUES (NULL, NULL, NULL, NULL, NULL);",
    )
    .unwrap();
    drop(w);
    freeze_runner(&s);
    wait_for(
        "the frozen runner to be killed as stuck",
        Duration::from_secs(30),
        || count_exits(tmp.path(), "killed_stuck") == 1,
    );
    rt.block_on(host.shutdown()).unwrap();
}

/// A long back-off with a message waiting is announced once: the agent is
/// restarting, and when.
#[test]
fn a_long_back_off_tells_the_waiting_user_when_the_agent_restarts() {
    let tmp = tempfile::tempdir().unwrap();
    let (rt, host, mut c) = start_and_ask(failing_runner_config(
        tmp.path(),
        "/bin/false".into(),
        10,
        vec![Duration::ZERO, Duration::from_secs(30)],
    ));
    let notice = next_notice(&mut c, Duration::from_secs(20)).expect("a notice");
    assert!(
        notice.contains("restarting") && notice.contains("about 30 s"),
        "{notice}"
    );
    // Another message during the same back-off is not told again.
    c.say("still there?", "c2");
    assert_eq!(next_notice(&mut c, Duration::from_secs(2)), None);
    assert_eq!(count_exits(tmp.path(), "fatal"), 2);
    rt.block_on(host.shutdown()).unwrap();
}

fn quarantine_reason(tmp: &std::path::Path) -> Option<String> {
    central(tmp)
        .query_row(
            "SELECT quarantine_reason FROM sessions WHERE quarantined_at IS NOT NULL",
            [],
            |r| r.get(0),
        )
        .ok()
}

/// A runner killed by SIGKILL inside bwrap (which reports it as exit 137)
/// is recorded and quarantined as killed by SIGKILL, not as an exit code.
#[test]
fn a_runner_killed_by_sigkill_is_named_so_in_the_quarantine() {
    if !bwrap_or_skip() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = with_script(
        host_config(tmp.path(), Choice::Bwrap),
        "[[rule]]\ncontains = \"slow\"\nreply = \"slow: {text}\"\ndelay_ms = 60000\n",
    );
    cfg.budget.budget = 1;
    cfg.budget.delays = vec![Duration::ZERO];
    cfg.retry_base = Duration::ZERO;
    cfg.boot_breaker = false;
    let rt = rt();
    let host = rt.block_on(pinch_host::start(cfg)).unwrap();
    let mut c = Client::connect(&host.cli_socket);
    c.say("slow please", "c1");
    for n in 1..=2u64 {
        let mut runner = None;
        wait_for(
            "a runner inside the sandbox",
            Duration::from_secs(30),
            || {
                let Some(s) = rt.block_on(host.sessions()).pop() else {
                    return false;
                };
                let Some(outer) = s.runner_pid.filter(|_| host.stats.spawns() == n) else {
                    return false;
                };
                runner = crate::common::descendants(outer).into_iter().find(|p| {
                    std::fs::read_to_string(format!("/proc/{p}/comm"))
                        .is_ok_and(|c| c.trim() == "pinch")
                });
                runner.is_some()
            },
        );
        unsafe {
            libc::kill(runner.unwrap() as i32, libc::SIGKILL);
        }
    }
    let notice = next_notice(&mut c, Duration::from_secs(30)).expect("a quarantine notice");
    assert!(notice.contains("killed by SIGKILL"), "{notice}");
    let reason = quarantine_reason(tmp.path()).expect("quarantined");
    assert!(reason.contains("(last: killed by SIGKILL)"), "{reason}");
    let signals: Vec<Option<i64>> = central(tmp.path())
        .prepare("SELECT signal FROM runner_exits ORDER BY rowid")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(signals, vec![Some(9), Some(9)]);
    let out = std::process::Command::new(PINCH)
        .args(["admin", "sessions", "list", "--data-dir"])
        .arg(tmp.path().join("data"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("killed by SIGKILL"), "{text}");
    rt.block_on(host.shutdown()).unwrap();
}

/// A runner that logs an ERROR, then more lines, then crashes: the
/// quarantine quotes the ERROR line and the real exit code.
#[test]
fn the_quarantine_quotes_the_runners_last_error_line() {
    let tmp = tempfile::tempdir().unwrap();
    let exe = tmp.path().join("crashing-runner");
    std::fs::write(
        &exe,
        "#!/bin/sh\n\
         echo '2026-12-04T22:00:00.000001Z  INFO runner started'\n\
         echo '2026-12-04T22:00:00.000002Z ERROR the provider refused the API key'\n\
         echo '2026-12-04T22:00:00.000003Z  INFO closing the session files'\n\
         exit 3\n",
    )
    .unwrap();
    std::os::unix::fs::PermissionsExt::set_mode(
        &mut std::fs::metadata(&exe).unwrap().permissions(),
        0o755,
    );
    std::fs::set_permissions(&exe, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let (rt, host, mut c) = start_and_ask(failing_runner_config(
        tmp.path(),
        exe,
        1,
        vec![Duration::ZERO],
    ));
    let notice = next_notice(&mut c, Duration::from_secs(20)).expect("a quarantine notice");
    assert!(
        notice.contains("(last: exit code 3): the provider refused the API key"),
        "{notice}"
    );
    assert!(!notice.contains("closing the session files"), "{notice}");
    let reason = quarantine_reason(tmp.path()).expect("quarantined");
    assert!(
        reason.ends_with("(last: exit code 3): the provider refused the API key"),
        "{reason}"
    );
    rt.block_on(host.shutdown()).unwrap();
}
