//! Supervision faults (issue 15): spawns that keep failing, the crash
//! budget across host restarts, frozen runners, long back-offs and the
//! cause a quarantine names. Real host, real processes, real files.

mod common;

use std::time::{Duration, Instant};

use common::*;
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
    while Instant::now() < deadline {
        match c.recv() {
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

/// Break 1: every spawn fails (the runner executable is missing), with no
/// respawn delay and a budget far larger than the recursion the host used
/// to survive. The host stays up: each failure is counted like an abnormal
/// exit and the retry is a scheduled event after a floor delay, never a
/// nested call.
#[test]
fn spawns_that_keep_failing_back_off_without_overflowing_the_stack() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = host_config(tmp.path(), Choice::Process);
    cfg.runner_exe = tmp.path().join("no-such-pinch");
    cfg.budget.budget = 100_000;
    cfg.budget.delays = vec![Duration::ZERO];
    cfg.boot_breaker = false;
    let rt = rt();
    let host = rt.block_on(pinch_host::start(cfg)).unwrap();
    let mut c = Client::connect(&host.cli_socket);
    c.say("anyone there?", "c1");
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
    let mut cfg = host_config(tmp.path(), Choice::Process);
    cfg.runner_exe = tmp.path().join("no-such-pinch");
    cfg.budget.budget = 3;
    cfg.budget.delays = vec![Duration::ZERO];
    cfg.boot_breaker = false;
    let rt = rt();
    let host = rt.block_on(pinch_host::start(cfg)).unwrap();
    let mut c = Client::connect(&host.cli_socket);
    c.say("anyone there?", "c1");
    let notice = next_notice(&mut c, Duration::from_secs(30)).expect("a quarantine notice");
    assert!(
        notice.contains("unavailable") && notice.contains("4 times"),
        "{notice}"
    );
    assert!(notice.contains("could not be started"), "{notice}");
    assert_eq!(count_exits(tmp.path(), "spawn_failed"), 4);
    rt.block_on(host.shutdown()).unwrap();
}
