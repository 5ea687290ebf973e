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
