//! Orphan claims and retries (SPEC §6.3).
//!
//! When a runner dies holding `processing` claims, each claimed row is
//! decided once: skipped if already rescheduled, failed at the try limit
//! (the user is told once), else retried with exponential backoff. After an
//! exit 75 the claims are released without a try: the mount failed, not
//! the message.

use std::time::Duration;

pub const MAX_TRIES: i64 = 5;
pub const BASE_BACKOFF_MS: i64 = 5_000;

/// A dead runner's claims could not be read: the wake that needs them
/// resolved tries again after this (the sweep retries too).
pub const UNRESOLVED_ORPHANS_RETRY: Duration = Duration::from_secs(2);

/// The pause after the `attempt`-th failed read in a row (1-based) of a
/// session file the host keeps polling — the due-work check of a wake, the
/// stuck check's read of a live runner's claims: 1 s doubling to 60 s.
/// A wake passes its failures + 1 (its first failed read waits 2 s).
pub fn read_backoff(attempt: u32) -> Duration {
    Duration::from_secs(1u64 << attempt.saturating_sub(1).min(6)).min(Duration::from_secs(60))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Orphan {
    /// A future `process_after` is already set: decided before (idempotent).
    AlreadyScheduled,
    /// Released as is (no try counted): retry now.
    Release,
    /// `tries + 1`, due again at `now + backoff`.
    Retry { tries: i64, due_in_ms: i64 },
    /// Give up: mark failed, tell the origin once.
    Fail { tries: i64 },
}

/// Decides one orphaned claim. `scheduled_future` = the row's
/// `process_after` is after now; `transient` = the runner exited 75.
pub fn decide_orphan(
    tries: i64,
    scheduled_future: bool,
    transient: bool,
    base_backoff_ms: i64,
) -> Orphan {
    if scheduled_future {
        return Orphan::AlreadyScheduled;
    }
    if transient {
        return Orphan::Release;
    }
    let n = tries + 1;
    if n >= MAX_TRIES {
        Orphan::Fail { tries: n }
    } else {
        Orphan::Retry {
            tries: n,
            due_in_ms: (base_backoff_ms << tries.clamp(0, 20))
                .max(crate::budget::MIN_RETRY_DELAY.as_millis() as i64),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_backoff_doubles_to_a_minute() {
        let got: Vec<u64> = (0..=9).map(|n| read_backoff(n).as_secs()).collect();
        assert_eq!(got, vec![1, 1, 2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(read_backoff(u32::MAX), Duration::from_secs(60));
    }

    #[test]
    fn orphan_table() {
        assert_eq!(
            decide_orphan(0, true, false, BASE_BACKOFF_MS),
            Orphan::AlreadyScheduled
        );
        assert_eq!(
            decide_orphan(0, false, true, BASE_BACKOFF_MS),
            Orphan::Release
        );
        assert_eq!(
            decide_orphan(0, false, false, BASE_BACKOFF_MS),
            Orphan::Retry {
                tries: 1,
                due_in_ms: 5_000
            }
        );
        assert_eq!(
            decide_orphan(1, false, false, BASE_BACKOFF_MS),
            Orphan::Retry {
                tries: 2,
                due_in_ms: 10_000
            }
        );
        assert_eq!(
            decide_orphan(3, false, false, BASE_BACKOFF_MS),
            Orphan::Retry {
                tries: 4,
                due_in_ms: 40_000
            }
        );
        assert_eq!(
            decide_orphan(4, false, false, BASE_BACKOFF_MS),
            Orphan::Fail { tries: 5 }
        );
        // a zero base still waits the floor
        assert_eq!(
            decide_orphan(0, false, false, 0),
            Orphan::Retry {
                tries: 1,
                due_in_ms: 500
            }
        );
        // exit 75 never burns a try, even at the limit
        assert_eq!(
            decide_orphan(4, false, true, BASE_BACKOFF_MS),
            Orphan::Release
        );
    }
}
