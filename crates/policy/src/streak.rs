//! The corruption streak (SPEC §5.7, lesson 4, nanoclaw PR #2597).
//!
//! On VM file sharing a sandbox can latch a torn page-cache view of
//! `inbound.db`: every read fails as corrupt although the host's file is
//! fine, and reopening in the same process never helps. Only a fresh sandbox
//! (a fresh mount) recovers, so after enough consecutive corruption errors
//! the runner exits 75 and the host respawns it.

use std::time::Duration;

/// Consecutive corruption errors before the runner exits 75.
///
/// Ten is far above any plausible run of torn reads during one host write
/// burst (a single torn read heals on the next poll), yet with the 500 ms
/// pacing below it gives up after ~5 s: fast enough that a user sees a short
/// delay, not a stall.
pub const CORRUPTION_STREAK_EXIT: u32 = 10;
/// After a corruption error the next poll runs exactly this much later,
/// whatever wakes arrive, so the streak spans ~5 s at any poll interval.
pub const CORRUPTION_PACING: Duration = Duration::from_millis(500);
/// Pause after the exit line so it flushes through the sandbox's log pipe.
pub const EXIT_FLUSH: Duration = Duration::from_millis(100);
/// Poll errors of any kind for this long without a success also exit 75.
pub const POLL_FAILURE_CEILING: Duration = Duration::from_secs(60);

/// Outcome of one poll, as the streak sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PollOutcome {
    Ok,
    Corrupt,
    OtherError,
}

/// What the runner does next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreakAction {
    /// Poll again on the normal schedule.
    Continue,
    /// Poll again after exactly the pacing delay, ignoring wakes.
    PaceThenRetry,
    /// Log the cause, flush, exit 75: corruption streak reached.
    ExitCorrupt,
    /// Log the cause, flush, exit 75: no successful poll for the ceiling.
    ExitPollCeiling,
}

/// Counts consecutive corruption errors; time is passed in.
#[derive(Clone, Debug)]
pub struct Streak {
    threshold: u32,
    ceiling: Duration,
    count: u32,
    /// Time of the last success, as elapsed since the runner started.
    last_ok: Duration,
}

impl Streak {
    pub fn new(threshold: u32, ceiling: Duration) -> Self {
        Streak {
            threshold: threshold.max(1),
            ceiling,
            count: 0,
            last_ok: Duration::ZERO,
        }
    }

    pub fn count(&self) -> u32 {
        self.count
    }

    /// Records an outcome at `now` (elapsed since start) and decides.
    pub fn record(&mut self, outcome: PollOutcome, now: Duration) -> StreakAction {
        match outcome {
            PollOutcome::Ok => {
                self.count = 0;
                self.last_ok = now;
                StreakAction::Continue
            }
            PollOutcome::Corrupt => {
                self.count += 1;
                if self.count >= self.threshold {
                    StreakAction::ExitCorrupt
                } else if now.saturating_sub(self.last_ok) >= self.ceiling {
                    StreakAction::ExitPollCeiling
                } else {
                    StreakAction::PaceThenRetry
                }
            }
            PollOutcome::OtherError => {
                // Any non-corruption error resets the streak: only an
                // unbroken run of corruption means a latched bad view.
                self.count = 0;
                if now.saturating_sub(self.last_ok) >= self.ceiling {
                    StreakAction::ExitPollCeiling
                } else {
                    StreakAction::Continue
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use PollOutcome::*;

    fn run(outcomes: &[PollOutcome]) -> Vec<StreakAction> {
        let mut s = Streak::new(CORRUPTION_STREAK_EXIT, POLL_FAILURE_CEILING);
        outcomes
            .iter()
            .enumerate()
            .map(|(i, o)| s.record(*o, Duration::from_millis(500 * i as u64)))
            .collect()
    }

    #[test]
    fn ten_corrupt_in_a_row_exit() {
        let a = run(&[Corrupt; 10]);
        assert!(a[..9].iter().all(|x| *x == StreakAction::PaceThenRetry));
        assert_eq!(a[9], StreakAction::ExitCorrupt);
    }

    #[test]
    fn nine_then_good_resets() {
        let mut o = vec![Corrupt; 9];
        o.push(Ok);
        o.extend([Corrupt; 9]);
        assert!(!run(&o).contains(&StreakAction::ExitCorrupt));
    }

    #[test]
    fn busy_in_between_resets() {
        let mut o = vec![Corrupt; 5];
        o.push(OtherError);
        o.extend([Corrupt; 9]);
        assert!(!run(&o).contains(&StreakAction::ExitCorrupt));
    }

    #[test]
    fn errors_without_success_hit_the_ceiling() {
        let mut s = Streak::new(10, Duration::from_secs(60));
        assert_eq!(
            s.record(OtherError, Duration::from_secs(30)),
            StreakAction::Continue
        );
        assert_eq!(
            s.record(OtherError, Duration::from_secs(61)),
            StreakAction::ExitPollCeiling
        );
        let mut s = Streak::new(10, Duration::from_secs(60));
        assert_eq!(
            s.record(Ok, Duration::from_secs(59)),
            StreakAction::Continue
        );
        assert_eq!(
            s.record(OtherError, Duration::from_secs(61)),
            StreakAction::Continue
        );
    }
}
