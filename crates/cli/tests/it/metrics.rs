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

#[test]
fn metrics_are_scraped_over_http() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = host_config(tmp.path(), any_sandbox());
    cfg.http = Some(pinch_host::config::HttpSettings::local(
        "127.0.0.1:0".parse().unwrap(),
        false,
    ));
    let rt = rt();
    let host = rt.block_on(pinch_host::start(cfg)).unwrap();
    let addr = host.http_addr.expect("the listener is up");
    let before = scrape(addr);
    assert_eq!(value(&before, "pinch_runner_spawns_total"), 0.0);
    let mut c = Client::connect(&host.cli_socket);
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
    assert_eq!(value(&m, "pinch_sessions{state=\"running\"}"), 1.0);
    assert_eq!(value(&m, "pinch_sessions{state=\"quarantined\"}"), 0.0);
    assert_eq!(
        value(&m, "pinch_outbound_pending"),
        0.0,
        "everything was delivered"
    );
    value(&m, "pinch_inbound_pending");
    value(&m, "pinch_channel_queue");
    // A crash shows up as an exit by signal.
    let pid = rt
        .block_on(host.sessions())
        .into_iter()
        .find_map(|s| s.runner_pid)
        .expect("a live runner");
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    wait_for("the exit is counted", Duration::from_secs(20), || {
        scrape(addr).contains("pinch_runner_exits_total{signal=\"9\"} 1")
    });
    rt.block_on(host.shutdown()).unwrap();
}
