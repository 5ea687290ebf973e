//! The dashboard's charts (issue 18): the counters `/metrics` exports,
//! sampled on a timer into a small ring (the last [`KEEP`] samples, six
//! hours at the default minute), and turned into per-interval rates and
//! reply-latency percentiles for the page. In memory only: a restart
//! starts the charts over (Prometheus is the place for long history).

use std::collections::VecDeque;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Mutex;
use std::time::Duration;

use serde_json::{json, Value};

use crate::metrics::{Metrics, LATENCY_BUCKETS, METRICS};

/// Samples kept.
pub const KEEP: usize = 360;
/// The default time between samples.
pub const DEFAULT_EVERY: Duration = Duration::from_secs(60);

/// The counters at one moment.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Sample {
    pub at_ms: i64,
    pub messages: u64,
    pub replies: u64,
    pub failures: u64,
    pub spawns: u64,
    pub exits: u64,
    pub quarantines: u64,
    pub latency: [u64; LATENCY_BUCKETS.len()],
    pub latency_count: u64,
}

impl Metrics {
    /// The counters now.
    pub fn sample(&self, at_ms: i64) -> Sample {
        let (latency, latency_count) = self.reply_snapshot();
        Sample {
            at_ms,
            messages: self.messages_in.load(Relaxed),
            replies: self.deliveries.load(Relaxed),
            failures: self.delivery_failures.load(Relaxed),
            spawns: self.spawns.load(Relaxed),
            exits: self.exits_total(),
            quarantines: self.quarantines.load(Relaxed),
            latency,
            latency_count,
        }
    }
}

/// The ring of samples.
pub static HISTORY: Mutex<VecDeque<Sample>> = Mutex::new(VecDeque::new());

/// Adds a sample, dropping the oldest beyond [`KEEP`].
pub fn push(ring: &Mutex<VecDeque<Sample>>, s: Sample) {
    let mut r = ring.lock().unwrap_or_else(|p| p.into_inner());
    if r.len() >= KEEP {
        r.pop_front();
    }
    r.push_back(s);
}

/// Samples every `every` until the process ends (a task of the host).
pub async fn run(every: Duration) {
    let now = || jiff::Timestamp::now().as_millisecond();
    push(&HISTORY, METRICS.sample(now()));
    let mut tick = tokio::time::interval(every.max(Duration::from_millis(10)));
    tick.tick().await;
    loop {
        tick.tick().await;
        push(&HISTORY, METRICS.sample(now()));
    }
}

/// The `q` quantile (0..1) of the latencies counted in `delta` (cumulative
/// bucket counts, as Prometheus keeps them) as the upper bound of the
/// bucket it falls in, in milliseconds; beyond the last bucket, `None`.
fn quantile(delta: &[u64; LATENCY_BUCKETS.len()], count: u64, q: f64) -> Option<f64> {
    if count == 0 {
        return None;
    }
    let want = (q * count as f64).ceil().max(1.0) as u64;
    LATENCY_BUCKETS
        .iter()
        .zip(delta)
        .find(|(_, c)| **c >= want)
        .map(|(b, _)| b * 1000.0)
}

/// The chart data: for each interval between consecutive samples, its end
/// time and what happened in it (counts) and the reply latency's p50/p95
/// (ms, a bucket's upper bound; `null` with no replies or beyond 30 s).
pub fn series(samples: &[Sample]) -> Value {
    let points: Vec<Value> = samples
        .windows(2)
        .map(|w| {
            let (a, b) = (&w[0], &w[1]);
            let d = |x: u64, y: u64| y.saturating_sub(x);
            let mut lat = [0u64; LATENCY_BUCKETS.len()];
            for (i, l) in lat.iter_mut().enumerate() {
                *l = d(a.latency[i], b.latency[i]);
            }
            let n = d(a.latency_count, b.latency_count);
            json!({
                "at_ms": b.at_ms,
                "seconds": (b.at_ms - a.at_ms) as f64 / 1000.0,
                "messages": d(a.messages, b.messages),
                "replies": d(a.replies, b.replies),
                "failures": d(a.failures, b.failures),
                "spawns": d(a.spawns, b.spawns),
                "exits": d(a.exits, b.exits),
                "quarantines": d(a.quarantines, b.quarantines),
                "p50_ms": quantile(&lat, n, 0.5),
                "p95_ms": quantile(&lat, n, 0.95),
            })
        })
        .collect();
    json!({ "points": points })
}

/// [`series`] of the host's ring.
pub fn current() -> Value {
    let r = HISTORY.lock().unwrap_or_else(|p| p.into_inner());
    let v: Vec<Sample> = r.iter().cloned().collect();
    series(&v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_count_what_happened_and_estimate_latency() {
        let m = Metrics::new();
        let a = m.sample(0);
        m.messages_in.fetch_add(3, Relaxed);
        for s in [0.004, 0.004, 0.02, 0.2] {
            m.delivered(s);
            m.replied(s);
        }
        m.spawns.fetch_add(1, Relaxed);
        m.exit(Some(0), None);
        let b = m.sample(60_000);
        let v = series(&[a, b]);
        let p = &v["points"][0];
        assert_eq!(p["messages"], 3);
        assert_eq!(p["replies"], 4);
        assert_eq!(
            (p["spawns"].as_u64(), p["exits"].as_u64()),
            (Some(1), Some(1))
        );
        assert_eq!(p["seconds"], 60.0);
        // Two of four at ≤ 5 ms: the median's bucket; the slowest at ≤ 250 ms.
        assert_eq!(p["p50_ms"], 5.0);
        assert_eq!(p["p95_ms"], 250.0);
        // A quiet interval: counts 0, no latency.
        let c = m.sample(120_000);
        let b = m.sample(60_000);
        let q = &series(&[b, c])["points"][0];
        assert_eq!(q["replies"], 0);
        assert!(q["p50_ms"].is_null());
    }

    #[test]
    fn the_ring_keeps_the_newest() {
        let ring = Mutex::new(VecDeque::new());
        for i in 0..(KEEP as i64 + 5) {
            push(
                &ring,
                Sample {
                    at_ms: i,
                    ..Sample::default()
                },
            );
        }
        let r = ring.lock().unwrap();
        assert_eq!(r.len(), KEEP);
        assert_eq!(r.front().unwrap().at_ms, 5);
    }
}
