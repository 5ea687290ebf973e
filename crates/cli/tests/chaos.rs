//! R3/R4, short: SIGKILL runners and the host at random moments under a
//! steady stream of messages; nothing accepted may be lost. The long run is
//! `pinch bench chaos` with bigger numbers (see README).

mod common;

use std::process::Command;

fn chaos(sandbox: &str, seed: &str) -> serde_json::Value {
    let out = Command::new(common::PINCH)
        .args([
            "bench",
            "chaos",
            "--messages",
            "150",
            "--runner-kills",
            "12",
            "--host-kills",
            "3",
            "--rate",
            "25",
            "--json",
        ])
        .args(["--sandbox", sandbox, "--seed", seed])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!(
            "no report ({e}): {stdout} {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    eprintln!("{report}");
    assert_eq!(report["lost"], 0, "messages lost: {report}");
    assert!(out.status.success(), "{report}");
    assert_eq!(report["sent"], 150);
    // How many were in flight when the host died depends on load; the
    // property is that every accepted one is answered.
    assert!(
        report["accepted"].as_u64().unwrap() >= 100,
        "the system kept making progress: {report}"
    );
    assert_eq!(report["answered"], report["accepted"]);
    assert!(
        report["runner_kills"].as_u64().unwrap() >= 1,
        "the runner was really killed: {report}"
    );
    assert_eq!(report["host_kills"], 3);
    // A runner kill can never duplicate a reply (outputs and acks commit
    // together); only a host killed in the send window can.
    assert!(
        report["duplicates_reanswered"].as_u64().unwrap() == 0,
        "{report}"
    );
    report
}

#[test]
fn r3_r4_random_kills_lose_nothing_process() {
    chaos("process", "12345");
}

#[test]
fn r3_r4_random_kills_lose_nothing_bwrap() {
    if common::bwrap_or_skip() {
        chaos("bwrap", "67890");
    }
}
