//! May a wake start a runner now? (SPEC §6.1, §6.4; issue 15.)
//!
//! Something wakes a session (a message, due work, the end of a back-off,
//! the sweep, an admin command). Before the host looks for due work it
//! passes the gates below, in this order; the first that holds decides.
//! Time is a parameter: the host passes `Instant::now()`, tests pass any
//! instant, so every row of the table is checked without sleeping.
//!
//! How long a retry waits is not decided here: the crash budget's delays
//! and the floor under every retry are [`crate::budget`], the pauses after
//! a failed read [`crate::retry`].

use std::time::{Duration, Instant};

use crate::budget::MIN_RETRY_DELAY;

/// A back-off at least this long, with a message waiting, is announced to
/// the user (shorter ones pass before anyone wonders).
pub const BACKOFF_NOTICE_AFTER: Duration = Duration::from_secs(5);

/// What the host knows of a session when it is woken.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Session {
    /// A runner of it is alive (it sees new work through inotify).
    pub running: bool,
    /// Closed by the admin: takes no new work.
    pub closed: bool,
    /// Over its crash budget: no respawn until lifted.
    pub quarantined: bool,
    /// Its `outbound.db` is being checked after an abnormal exit.
    pub checking: bool,
    /// Over its disk quota when last measured.
    pub over_quota: bool,
    /// When the crash budget's back-off ends, if one was set.
    pub next_spawn_at: Option<Instant>,
    /// Already waiting in the queue for a runner slot.
    pub queued: bool,
}

/// Why a wake does nothing now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    ShuttingDown,
    Running,
    Closed,
    Quarantined,
    /// Woken again when the check of its `outbound.db` is in.
    Checking,
    /// Measured again (off the main loop); woken once there is room.
    OverQuota,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    Refuse(Refusal),
    /// Backing off after abnormal exits: wake again at `until`, `left`
    /// from now (the user may be told, see [`announce_backoff`]).
    Backoff {
        until: Instant,
        left: Duration,
    },
    /// All slots are taken and it is queued already: woken when one frees.
    WaitForSlot,
    /// Look for due work (then spawn, or queue for a slot).
    Look,
}

/// The gates of a wake, in order. `slots_full`: as many runners are alive
/// as the host allows.
pub fn decide(now: Instant, shutting_down: bool, s: &Session, slots_full: bool) -> Decision {
    use Refusal::*;
    let refused = [
        (shutting_down, ShuttingDown),
        (s.running, Running),
        (s.closed, Closed),
        (s.quarantined, Quarantined),
        (s.checking, Checking),
        (s.over_quota, OverQuota),
    ];
    if let Some((_, why)) = refused.into_iter().find(|(holds, _)| *holds) {
        return Decision::Refuse(why);
    }
    if let Some(until) = s.next_spawn_at.filter(|at| *at > now) {
        return Decision::Backoff {
            until,
            left: until - now,
        };
    }
    if slots_full && s.queued {
        return Decision::WaitForSlot;
    }
    Decision::Look
}

/// When a failed spawn (or an abnormal exit) is retried: at the end of the
/// session's back-off, never sooner than [`MIN_RETRY_DELAY`] from now, so
/// a loop of failures is never a tight loop (issue 15, break 1).
pub fn retry_at(now: Instant, next_spawn_at: Option<Instant>) -> Instant {
    next_spawn_at.unwrap_or(now).max(now + MIN_RETRY_DELAY)
}

/// Whether a back-off with `left` to go is told to the user: long enough
/// to be noticed, and not the one (`next_spawn_at`) told already.
pub fn announce_backoff(
    left: Duration,
    told: Option<Instant>,
    next_spawn_at: Option<Instant>,
) -> bool {
    left >= BACKOFF_NOTICE_AFTER && !(told.is_some() && told == next_spawn_at)
}

/// The notice for a back-off: `exits` abnormal exits recently, a runner
/// again in about `left`.
pub fn backoff_notice(exits: usize, left: Duration) -> String {
    let secs = left.as_secs_f64().ceil() as u64;
    let when = if secs < 90 {
        format!("{secs} s")
    } else {
        format!("{} min", secs.div_ceil(60))
    };
    format!("The assistant stopped unexpectedly ({exits} times recently) and is restarting: it will pick up your message in about {when}.")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::budget::{after_abnormal_exit, BudgetConfig, Verdict};
    use Decision::*;
    use Refusal::*;

    fn s() -> Session {
        Session::default()
    }

    #[test]
    fn the_gates_in_order() {
        let t0 = Instant::now();
        let later = Some(t0 + Duration::from_secs(8));
        let earlier = Some(t0 - Duration::from_millis(1));
        let backoff = Backoff {
            until: t0 + Duration::from_secs(8),
            left: Duration::from_secs(8),
        };
        // (shutting down, session, slots full, expected)
        let table = [
            (false, s(), false, Look),
            (true, s(), false, Refuse(ShuttingDown)),
            (
                true,
                Session {
                    running: true,
                    ..s()
                },
                false,
                Refuse(ShuttingDown),
            ),
            (
                false,
                Session {
                    running: true,
                    quarantined: true,
                    ..s()
                },
                false,
                Refuse(Running),
            ),
            (
                false,
                Session {
                    closed: true,
                    quarantined: true,
                    ..s()
                },
                false,
                Refuse(Closed),
            ),
            (
                false,
                Session {
                    quarantined: true,
                    checking: true,
                    ..s()
                },
                false,
                Refuse(Quarantined),
            ),
            (
                false,
                Session {
                    checking: true,
                    over_quota: true,
                    ..s()
                },
                false,
                Refuse(Checking),
            ),
            // over quota wins over a back-off: measured, not announced
            (
                false,
                Session {
                    over_quota: true,
                    next_spawn_at: later,
                    ..s()
                },
                false,
                Refuse(OverQuota),
            ),
            // back-off not over: due later
            (
                false,
                Session {
                    next_spawn_at: later,
                    ..s()
                },
                false,
                backoff,
            ),
            (
                false,
                Session {
                    next_spawn_at: later,
                    queued: true,
                    ..s()
                },
                true,
                backoff,
            ),
            // back-off over (or exactly now): due
            (
                false,
                Session {
                    next_spawn_at: earlier,
                    ..s()
                },
                false,
                Look,
            ),
            (
                false,
                Session {
                    next_spawn_at: Some(t0),
                    ..s()
                },
                false,
                Look,
            ),
            // slots: queued and still full waits; otherwise it looks
            // (and queues itself if there is work and no slot)
            (
                false,
                Session {
                    queued: true,
                    ..s()
                },
                true,
                WaitForSlot,
            ),
            (false, s(), true, Look),
            (
                false,
                Session {
                    queued: true,
                    ..s()
                },
                false,
                Look,
            ),
        ];
        for (i, (down, session, full, want)) in table.into_iter().enumerate() {
            assert_eq!(
                decide(t0, down, &session, full),
                want,
                "row {i}: {session:?}"
            );
        }
    }

    #[test]
    fn a_retry_never_comes_sooner_than_the_floor() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        // (back-off end, expected retry time)
        let table = [
            (None, t0 + MIN_RETRY_DELAY),
            (Some(t0), t0 + MIN_RETRY_DELAY),
            (Some(t0 - ms(10_000)), t0 + MIN_RETRY_DELAY),
            (Some(t0 + ms(499)), t0 + MIN_RETRY_DELAY),
            (Some(t0 + ms(501)), t0 + ms(501)),
            (Some(t0 + ms(30_000)), t0 + ms(30_000)),
        ];
        for (i, (next, want)) in table.into_iter().enumerate() {
            assert_eq!(retry_at(t0, next), want, "row {i}");
        }
    }

    #[test]
    fn a_backoff_is_told_once_and_only_when_long() {
        let t0 = Instant::now();
        let end = Some(t0 + Duration::from_secs(30));
        let other = Some(t0 + Duration::from_secs(120));
        let s = Duration::from_secs;
        // (left, told, next spawn, expected)
        let table = [
            (s(4), None, end, false),
            (s(5), None, end, true),
            (s(30), None, end, true),
            (s(30), end, end, false),
            (s(120), end, other, true),
            (s(30), None, None, true),
        ];
        for (i, (left, told, next, want)) in table.into_iter().enumerate() {
            assert_eq!(announce_backoff(left, told, next), want, "row {i}");
        }
    }

    #[test]
    fn the_notice_says_when_in_words() {
        let ms = Duration::from_millis;
        assert!(backoff_notice(2, ms(7_200)).ends_with("in about 8 s."));
        assert!(backoff_notice(3, ms(89_000)).ends_with("in about 89 s."));
        assert!(backoff_notice(4, ms(90_000)).ends_with("in about 2 min."));
        assert!(backoff_notice(4, ms(120_000)).contains("(4 times recently)"));
        assert!(backoff_notice(4, ms(120_001)).ends_with("in about 3 min."));
    }

    /// The supervision story with the shipped defaults, told by the clock
    /// alone: each abnormal exit sets a back-off the next wake respects,
    /// and the exit past the budget quarantines, which refuses every wake.
    #[test]
    fn crashes_back_off_then_quarantine() {
        let c = BudgetConfig::default();
        let t0 = Instant::now();
        let mut exits: Vec<i64> = Vec::new();
        let mut session = s();
        let mut waits = Vec::new();
        for k in 0..6u64 {
            // six crashes 33 s apart: all inside the 10 min window
            let now_ms = (k * 200_000 / 6) as i64;
            let now = t0 + Duration::from_millis(now_ms as u64);
            exits.push(now_ms);
            match after_abnormal_exit(now_ms, &exits, false, &c) {
                Verdict::Respawn(d) => {
                    session.next_spawn_at = Some(now + d);
                    waits.push(d.as_millis() as u64);
                    let just_before = now + d - Duration::from_millis(1);
                    assert!(
                        matches!(decide(just_before, false, &session, false), Backoff { .. }),
                        "exit {k}: not yet"
                    );
                    assert_eq!(decide(now + d, false, &session, false), Look, "exit {k}");
                    assert!(retry_at(now, session.next_spawn_at) >= now + MIN_RETRY_DELAY);
                }
                Verdict::Quarantine => session.quarantined = true,
            }
        }
        assert_eq!(waits, vec![500, 2_000, 8_000, 30_000, 120_000]);
        assert!(
            session.quarantined,
            "the sixth exit in the window quarantines"
        );
        let much_later = t0 + Duration::from_secs(3_600);
        assert_eq!(
            decide(much_later, false, &session, false),
            Refuse(Quarantined)
        );
    }
}
