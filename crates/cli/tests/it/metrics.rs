//! The Prometheus endpoint (issue 8), scraped over real HTTP from a real
//! host with real runners: spawns, exits by signal, deliveries with their
//! latency, sessions by state, pending work.

use std::io::{Read, Write};
use std::time::Duration;

use crate::common::*;

fn scrape(addr: std::net::SocketAddr) -> String {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    out
}

fn value(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(series)
                .and_then(|r| r.strip_prefix(' '))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or_else(|| panic!("{series} missing in:\n{text}"))
}

/// The runner processes below `pid` (`<exe> runner …`, not the sandbox
/// that wraps one).
fn runners_below(pid: u32) -> Vec<u32> {
    let mut found = Vec::new();
    let mut todo = vec![pid];
    while let Some(p) = todo.pop() {
        for c in process_tree(p).into_iter().skip(1) {
            let argv = std::fs::read(format!("/proc/{c}/cmdline")).unwrap_or_default();
            if argv.split(|b| *b == 0).nth(1) == Some(b"runner") {
                found.push(c);
            }
            todo.push(c);
        }
    }
    found
}

/// The counters are the process's own, so the host is a `pinch host`
/// process of its own (in one test process, other tests' hosts would
/// count too).
#[test]
fn metrics_are_scraped_over_http() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let port = free_port();
    let cfg = tmp.path().join("pinch.toml");
    std::fs::write(
        &cfg,
        format!("[http]\nlisten = \"127.0.0.1:{port}\"\nmetrics = true\n"),
    )
    .unwrap();
    let sandbox = match any_sandbox() {
        pinch_host::sandbox::Choice::Docker => "docker",
        pinch_host::sandbox::Choice::Bwrap => "bwrap",
        _ => "process",
    };
    let host = start_daemon(&data, &cfg, sandbox);
    let addr: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
    let cli = data.join("run/cli.sock");
    wait_for("the host to listen", Duration::from_secs(30), || {
        cli.exists() && std::net::TcpStream::connect(addr).is_ok()
    });
    let before = scrape(addr);
    assert_eq!(value(&before, "pinch_runner_spawns_total"), 0.0);
    let mut c = Client::connect(&cli);
    let replies = c.ask("hello metrics");
    assert!(!replies.is_empty());
    let m = scrape(addr);
    assert!(
        m.contains("Content-Type: text/plain; version=0.0.4")
            || m.contains("content-type: text/plain; version=0.0.4"),
        "{m}"
    );
    assert_eq!(value(&m, "pinch_runner_spawns_total"), 1.0);
    assert!(value(&m, "pinch_deliveries_total") >= 1.0);
    assert!(value(&m, "pinch_delivery_latency_seconds_count") >= 1.0);
    assert!(value(&m, "pinch_delivery_latency_seconds_bucket{le=\"+Inf\"}") >= 1.0);
    // The wait a person had: their message stored → the reply delivered.
    assert_eq!(value(&m, "pinch_reply_latency_seconds_count"), 1.0);
    assert_eq!(value(&m, "pinch_messages_received_total"), 1.0);
    assert_eq!(value(&m, "pinch_sessions{state=\"running\"}"), 1.0);
    assert_eq!(value(&m, "pinch_sessions{state=\"quarantined\"}"), 0.0);
    assert_eq!(
        value(&m, "pinch_outbound_pending"),
        0.0,
        "everything was delivered"
    );
    value(&m, "pinch_inbound_pending");
    value(&m, "pinch_channel_queue");
    // A crash shows up as an exit by signal, also when the sandbox reports
    // it as `128 + n` (bwrap, docker).
    let runners = runners_below(host.id());
    assert_eq!(runners.len(), 1, "one live runner: {runners:?}");
    unsafe { libc::kill(runners[0] as i32, libc::SIGKILL) };
    wait_for("the exit is counted", Duration::from_secs(20), || {
        scrape(addr).contains("pinch_runner_exits_total{signal=\"9\"} 1")
    });
}
