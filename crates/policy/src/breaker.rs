//! The boot circuit breaker (SPEC §6.5, lesson 24): a host that crash-loops
//! at boot waits longer each time instead of hammering what breaks it.
//!
//! `run/circuit-breaker.json` lists boot times of the last hour; boot n
//! (counting this one) waits `DELAYS[n-1]` (the last repeats). No file means
//! a clean previous exit: a graceful shutdown deletes it.

use std::time::Duration;

pub const WINDOW_MS: i64 = 3_600_000;
pub const DELAYS_S: [u64; 7] = [0, 0, 10, 30, 120, 300, 900];

/// Given earlier boot times (ms) and now, returns the boots to keep
/// (including this one) and how long to wait before booting.
pub fn decide(earlier_ms: &[i64], now_ms: i64) -> (Vec<i64>, Duration) {
    let mut boots: Vec<i64> = earlier_ms
        .iter()
        .copied()
        .filter(|t| now_ms - *t < WINDOW_MS && *t <= now_ms)
        .collect();
    boots.sort_unstable();
    boots.push(now_ms);
    let n = boots.len();
    let wait = DELAYS_S[(n - 1).min(DELAYS_S.len() - 1)];
    (boots, Duration::from_secs(wait))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boots_one_and_two_wait_zero_three_waits_ten() {
        let (b, w) = decide(&[], 0);
        assert_eq!((b.len(), w), (1, Duration::ZERO));
        let (b, w) = decide(&b, 1_000);
        assert_eq!((b.len(), w), (2, Duration::ZERO));
        let (b, w) = decide(&b, 2_000);
        assert_eq!((b.len(), w), (3, Duration::from_secs(10)));
        let mut boots = b;
        let mut waits = Vec::new();
        for i in 0..6 {
            let (b2, w) = decide(&boots, 3_000 + i);
            boots = b2;
            waits.push(w.as_secs());
        }
        assert_eq!(waits, vec![30, 120, 300, 900, 900, 900]);
    }

    #[test]
    fn boots_older_than_an_hour_are_forgotten() {
        let (b, w) = decide(&[0, 1, 2, 3], WINDOW_MS + 10);
        assert_eq!(b, vec![WINDOW_MS + 10]);
        assert_eq!(w, Duration::ZERO);
    }
}
