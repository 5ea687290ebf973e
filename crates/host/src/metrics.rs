//! Prometheus metrics (issue 8), served at `GET /metrics` on the host's
//! HTTP listener (loopback by default).
//!
//! Counters and the delivery-latency histogram are process-wide atomics
//! the host bumps where things happen (spawns, exits by code, quarantines,
//! deliveries). Gauges are published by the main loop after each event
//! (sessions by state, the channel queue); the pending work in each
//! session's databases is counted when scraped, read-only, so a scrape
//! never waits on the main loop.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;

/// Upper bounds (seconds) of the delivery-latency buckets.
pub const LATENCY_BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

pub struct Metrics {
    /// Messages the channels brought in and the host took.
    pub messages_in: AtomicU64,
    pub spawns: AtomicU64,
    pub quarantines: AtomicU64,
    pub deliveries: AtomicU64,
    pub delivery_failures: AtomicU64,
    exits: Mutex<BTreeMap<String, u64>>,
    /// From the runner writing a message to the channel accepting it.
    delivery_latency: Histogram,
    /// From a message being stored to the channel accepting its reply.
    reply_latency: Histogram,
    pub sessions_active: AtomicU64,
    pub sessions_running: AtomicU64,
    pub sessions_quarantined: AtomicU64,
    pub channel_queue: AtomicU64,
    /// Session folders to count pending work in at scrape time.
    session_dirs: Mutex<Vec<PathBuf>>,
}

#[allow(clippy::declare_interior_mutable_const)]
const ZERO: AtomicU64 = AtomicU64::new(0);

/// A Prometheus histogram over [`LATENCY_BUCKETS`] (cumulative buckets).
struct Histogram {
    buckets: [AtomicU64; LATENCY_BUCKETS.len()],
    count: AtomicU64,
    /// Sum in microseconds.
    sum_us: AtomicU64,
}

impl Histogram {
    const fn new() -> Histogram {
        Histogram {
            buckets: [ZERO; LATENCY_BUCKETS.len()],
            count: ZERO,
            sum_us: ZERO,
        }
    }

    fn observe(&self, secs: f64) {
        self.count.fetch_add(1, Relaxed);
        self.sum_us.fetch_add((secs.max(0.0) * 1e6) as u64, Relaxed);
        for (i, b) in LATENCY_BUCKETS.iter().enumerate() {
            if secs <= *b {
                self.buckets[i].fetch_add(1, Relaxed);
            }
        }
    }

    fn snapshot(&self) -> ([u64; LATENCY_BUCKETS.len()], u64) {
        let mut b = [0u64; LATENCY_BUCKETS.len()];
        for (i, v) in b.iter_mut().enumerate() {
            *v = self.buckets[i].load(Relaxed);
        }
        (b, self.count.load(Relaxed))
    }

    fn render(&self, s: &mut String, name: &str, help: &str) {
        let _ = write!(s, "# HELP {name} {help}\n# TYPE {name} histogram\n");
        for (i, b) in LATENCY_BUCKETS.iter().enumerate() {
            let _ = writeln!(
                s,
                "{name}_bucket{{le=\"{b}\"}} {}",
                self.buckets[i].load(Relaxed)
            );
        }
        let count = self.count.load(Relaxed);
        let _ = writeln!(s, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(s, "{name}_sum {}", self.sum_us.load(Relaxed) as f64 / 1e6);
        let _ = writeln!(s, "{name}_count {count}");
    }
}

pub static METRICS: Metrics = Metrics::new();

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// All zero (the process's one is [`METRICS`]; a test makes its own so
    /// tests running side by side do not count into it).
    pub const fn new() -> Metrics {
        Metrics {
            messages_in: ZERO,
            spawns: ZERO,
            quarantines: ZERO,
            deliveries: ZERO,
            delivery_failures: ZERO,
            exits: Mutex::new(BTreeMap::new()),
            delivery_latency: Histogram::new(),
            reply_latency: Histogram::new(),
            sessions_active: ZERO,
            sessions_running: ZERO,
            sessions_quarantined: ZERO,
            channel_queue: ZERO,
            session_dirs: Mutex::new(Vec::new()),
        }
    }
}

impl Metrics {
    /// A runner ended: `code` or, if killed, `signal`.
    pub fn exit(&self, code: Option<i32>, signal: Option<i32>) {
        let label = match (code, signal) {
            (Some(c), _) => format!("code=\"{c}\""),
            (None, Some(s)) => format!("signal=\"{s}\""),
            _ => "code=\"unknown\"".to_owned(),
        };
        *self
            .exits
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(label)
            .or_default() += 1;
    }

    /// A row reached its platform `secs` after the runner wrote it.
    pub fn delivered(&self, secs: f64) {
        self.deliveries.fetch_add(1, Relaxed);
        self.delivery_latency.observe(secs);
    }

    /// A reply reached its platform `secs` after the message it answers
    /// was stored.
    pub fn replied(&self, secs: f64) {
        self.reply_latency.observe(secs);
    }

    /// Runners that ended, whatever their code.
    pub fn exits_total(&self) -> u64 {
        self.exits
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .sum()
    }

    /// The reply-latency histogram's cumulative buckets and its count.
    pub fn reply_snapshot(&self) -> ([u64; LATENCY_BUCKETS.len()], u64) {
        self.reply_latency.snapshot()
    }

    pub fn set_session_dirs(&self, dirs: Vec<PathBuf>) {
        *self.session_dirs.lock().unwrap_or_else(|p| p.into_inner()) = dirs;
    }

    /// The text exposition format (version 0.0.4).
    pub fn render(&self) -> String {
        let mut s = String::new();
        let counter = |s: &mut String, name: &str, help: &str, v: u64| {
            let _ = write!(
                s,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}\n"
            );
        };
        let gauge = |s: &mut String, name: &str, help: &str, v: u64| {
            let _ = write!(s, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}\n");
        };
        counter(
            &mut s,
            "pinch_messages_received_total",
            "Messages the channels brought in and the host took.",
            self.messages_in.load(Relaxed),
        );
        counter(
            &mut s,
            "pinch_runner_spawns_total",
            "Runners started.",
            self.spawns.load(Relaxed),
        );
        let _ = write!(s, "# HELP pinch_runner_exits_total Runners that ended, by exit code or signal.\n# TYPE pinch_runner_exits_total counter\n");
        for (label, v) in self.exits.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            let _ = writeln!(s, "pinch_runner_exits_total{{{label}}} {v}");
        }
        counter(
            &mut s,
            "pinch_quarantines_total",
            "Sessions quarantined after repeated crashes.",
            self.quarantines.load(Relaxed),
        );
        counter(
            &mut s,
            "pinch_deliveries_total",
            "Outbound messages delivered to a channel.",
            self.deliveries.load(Relaxed),
        );
        counter(
            &mut s,
            "pinch_delivery_failures_total",
            "Outbound messages that failed for good.",
            self.delivery_failures.load(Relaxed),
        );
        self.delivery_latency.render(
            &mut s,
            "pinch_delivery_latency_seconds",
            "From the runner writing a message to the channel accepting it.",
        );
        self.reply_latency.render(
            &mut s,
            "pinch_reply_latency_seconds",
            "From a message being stored to the channel accepting the agent's reply to it.",
        );
        let _ = write!(
            s,
            "# HELP pinch_sessions Active sessions by state.\n# TYPE pinch_sessions gauge\n"
        );
        let active = self.sessions_active.load(Relaxed);
        let running = self.sessions_running.load(Relaxed);
        let quarantined = self.sessions_quarantined.load(Relaxed);
        let _ = writeln!(s, "pinch_sessions{{state=\"running\"}} {running}");
        let _ = writeln!(s, "pinch_sessions{{state=\"quarantined\"}} {quarantined}");
        let _ = writeln!(
            s,
            "pinch_sessions{{state=\"idle\"}} {}",
            active.saturating_sub(running + quarantined)
        );
        gauge(
            &mut s,
            "pinch_channel_queue",
            "Channel events waiting for the main loop.",
            self.channel_queue.load(Relaxed),
        );
        let (inbound, outbound) = self.pending();
        gauge(
            &mut s,
            "pinch_inbound_pending",
            "Inbound rows not yet processed by a runner, all sessions.",
            inbound,
        );
        gauge(
            &mut s,
            "pinch_outbound_pending",
            "Outbound rows not yet delivered or failed, all sessions.",
            outbound,
        );
        s
    }

    /// Pending inbound and undelivered outbound rows over the sessions,
    /// read-only (a session whose files cannot be read counts 0).
    fn pending(&self) -> (u64, u64) {
        let dirs = self
            .session_dirs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let busy = std::time::Duration::from_millis(200);
        let (mut i, mut o) = (0u64, 0u64);
        for d in dirs {
            let inb = d.join("in").join(pinch_proto::layout::INBOUND_DB);
            let outb = d.join("out").join(pinch_proto::layout::OUTBOUND_DB);
            let Ok(c) = pinch_proto::open::open_reader(&inb, busy) else {
                continue;
            };
            let q = |n: Result<i64, pinch_proto::ProtoError>| n.unwrap_or(0).max(0) as u64;
            // Rows still pending in the host's view (acks not yet synced back).
            i += q(pinch_proto::inbound::count_pending_triggers(&c));
            let terminal = crate::ledger::open_read(&d)
                .map_or(0, |l| q(pinch_proto::ledger::count_terminal(&l)));
            if let Ok(oc) = pinch_proto::open::open_agent_reader(&outb, busy) {
                o += q(pinch_proto::outbound::count(&oc)).saturating_sub(terminal);
            }
        }
        (i, o)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exposition_format() {
        let m = &Metrics::new();
        m.spawns.fetch_add(2, Relaxed);
        m.exit(Some(0), None);
        m.exit(Some(75), None);
        m.exit(Some(75), None);
        m.exit(None, Some(9));
        m.delivered(0.003);
        m.delivered(0.2);
        m.delivered(100.0);
        let s = m.render();
        assert!(
            s.contains("# TYPE pinch_runner_spawns_total counter\npinch_runner_spawns_total 2\n"),
            "{s}"
        );
        assert!(
            s.contains("pinch_runner_exits_total{code=\"75\"} 2\n")
                && s.contains("pinch_runner_exits_total{signal=\"9\"} 1\n"),
            "{s}"
        );
        assert!(
            s.contains("pinch_delivery_latency_seconds_bucket{le=\"0.005\"} 1\n"),
            "{s}"
        );
        assert!(
            s.contains("pinch_delivery_latency_seconds_bucket{le=\"0.25\"} 2\n"),
            "{s}"
        );
        assert!(
            s.contains("pinch_delivery_latency_seconds_bucket{le=\"30\"} 2\n"),
            "{s}"
        );
        assert!(
            s.contains("pinch_delivery_latency_seconds_bucket{le=\"+Inf\"} 3\n")
                && s.contains("pinch_delivery_latency_seconds_count 3\n"),
            "{s}"
        );
        // Every sample line is `name{labels} number`.
        for l in s.lines().filter(|l| !l.starts_with('#')) {
            let (_, v) = l.rsplit_once(' ').unwrap();
            assert!(v.parse::<f64>().is_ok(), "{l}");
        }
    }
}
