//! Is a live runner stuck? (SPEC §6.2 step 3, lessons 8–10.)
//!
//! Three independent deadlines, each a reason to kill:
//! - *spawn grace*: a runner that has not written a heartbeat at all some
//!   time after spawn (upstream exempted heartbeat-less runners forever);
//! - *heartbeat ceiling*: a heartbeat older than the ceiling (the runner's
//!   heartbeat thread beats whatever the provider does, so an old one means
//!   the process is frozen or gone);
//! - *claim stuck*: the runner holds a claim and has made no progress for
//!   the tolerance, unless a tool is running within its declared timeout
//!   (plus slack).
//!
//! Claims of other (dead) runners never cause a kill (lesson 9): they are
//! orphans for the retry path, not evidence against this runner.

use std::time::Duration;

/// All times are milliseconds on one clock (e.g. Unix epoch ms).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RunnerView {
    pub spawned_at_ms: i64,
    /// mtime of `out/heartbeat`, if the file exists.
    pub heartbeat_ms: Option<i64>,
    /// Earliest claim time among this runner's `processing` acks.
    pub oldest_own_claim_ms: Option<i64>,
    /// `container_state.last_progress_at`.
    pub last_progress_ms: Option<i64>,
    /// A tool in flight: when it started and the timeout it declared.
    pub tool: Option<ToolInFlight>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ToolInFlight {
    pub started_ms: i64,
    pub declared_timeout_ms: i64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StuckLimits {
    pub spawn_grace: Duration,
    pub heartbeat_ceiling: Duration,
    pub claim_stuck: Duration,
    /// Added to a tool's declared timeout before it counts as stuck.
    pub tool_slack: Duration,
}

impl Default for StuckLimits {
    fn default() -> Self {
        StuckLimits {
            spawn_grace: Duration::from_secs(60),
            heartbeat_ceiling: Duration::from_secs(60),
            claim_stuck: Duration::from_secs(300),
            tool_slack: Duration::from_secs(30),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stuck {
    No,
    Kill(StuckReason),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StuckReason {
    NoHeartbeatAfterSpawn,
    HeartbeatStale,
    ClaimStuck,
}

impl StuckReason {
    pub fn as_str(self) -> &'static str {
        match self {
            StuckReason::NoHeartbeatAfterSpawn => "no heartbeat since spawn",
            StuckReason::HeartbeatStale => "heartbeat stale",
            StuckReason::ClaimStuck => "claim made no progress",
        }
    }
}

fn older_than(now: i64, t: i64, d: Duration) -> bool {
    now.saturating_sub(t) > d.as_millis() as i64
}

pub fn decide_stuck(now_ms: i64, v: &RunnerView, l: &StuckLimits) -> Stuck {
    match v.heartbeat_ms {
        None => {
            if older_than(now_ms, v.spawned_at_ms, l.spawn_grace) {
                return Stuck::Kill(StuckReason::NoHeartbeatAfterSpawn);
            }
        }
        Some(hb) => {
            // A heartbeat from before this spawn is not this runner's.
            let hb = hb.max(v.spawned_at_ms);
            if older_than(now_ms, hb, l.heartbeat_ceiling) {
                return Stuck::Kill(if v.heartbeat_ms.unwrap_or(0) < v.spawned_at_ms {
                    StuckReason::NoHeartbeatAfterSpawn
                } else {
                    StuckReason::HeartbeatStale
                });
            }
        }
    }
    if let Some(claim) = v.oldest_own_claim_ms {
        let since = claim.max(v.last_progress_ms.unwrap_or(i64::MIN));
        if older_than(now_ms, since, l.claim_stuck) {
            let tool_ok = v.tool.is_some_and(|t| {
                !older_than(
                    now_ms,
                    t.started_ms,
                    Duration::from_millis(t.declared_timeout_ms.max(0) as u64) + l.tool_slack,
                )
            });
            if !tool_ok {
                return Stuck::Kill(StuckReason::ClaimStuck);
            }
        }
    }
    Stuck::No
}

/// The earliest time (ms) at which [`decide_stuck`] says `Kill` for this
/// view if the runner makes no further sign of life: when the host checks
/// again (a timer per runner, so a frozen runner is killed about when its
/// deadline passes, not at the next sweep). A fresher heartbeat or progress
/// only moves it later.
pub fn next_deadline(v: &RunnerView, l: &StuckLimits) -> i64 {
    let ms = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX / 4);
    let alive = match v.heartbeat_ms {
        None => v.spawned_at_ms.saturating_add(ms(l.spawn_grace)),
        Some(hb) => hb
            .max(v.spawned_at_ms)
            .saturating_add(ms(l.heartbeat_ceiling)),
    };
    let claim = v.oldest_own_claim_ms.map(|c| {
        let since = c.max(v.last_progress_ms.unwrap_or(i64::MIN));
        let stuck = since.saturating_add(ms(l.claim_stuck));
        match v.tool {
            Some(t) => stuck.max(
                t.started_ms
                    .saturating_add(t.declared_timeout_ms.max(0))
                    .saturating_add(ms(l.tool_slack)),
            ),
            None => stuck,
        }
    });
    // `decide_stuck` kills strictly after a deadline.
    claim.map_or(alive, |c| c.min(alive)).saturating_add(1)
}

/// The first time (ms) a runner spawned at `spawned_at_ms` could be found
/// stuck, whatever it does: its heartbeat and claims all come after the
/// spawn, so no deadline ends before the shortest limit has passed.
pub fn first_deadline(spawned_at_ms: i64, l: &StuckLimits) -> i64 {
    let shortest = l.spawn_grace.min(l.heartbeat_ceiling).min(l.claim_stuck);
    spawned_at_ms
        .saturating_add(i64::try_from(shortest.as_millis()).unwrap_or(i64::MAX / 4))
        .saturating_add(1)
}

/// How long from `now_ms` until a stuck check due at `at_ms` runs: no
/// sooner than a quarter second (a deadline already past is never a tight
/// loop of checks).
pub fn check_in(at_ms: i64, now_ms: i64) -> Duration {
    Duration::from_millis(at_ms.saturating_sub(now_ms).max(250) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use Stuck::*;
    use StuckReason::*;

    const S: i64 = 1000;

    fn v(
        spawned: i64,
        hb: Option<i64>,
        claim: Option<i64>,
        progress: Option<i64>,
        tool: Option<(i64, i64)>,
    ) -> RunnerView {
        RunnerView {
            spawned_at_ms: spawned,
            heartbeat_ms: hb,
            oldest_own_claim_ms: claim,
            last_progress_ms: progress,
            tool: tool.map(|(s, t)| ToolInFlight {
                started_ms: s,
                declared_timeout_ms: t,
            }),
        }
    }

    #[test]
    fn decide_stuck_table() {
        let l = StuckLimits::default();
        // (now, view, expected)
        let table = [
            // spawn grace
            (30 * S, v(0, None, None, None, None), No),
            (60 * S, v(0, None, None, None, None), No),
            (
                61 * S,
                v(0, None, None, None, None),
                Kill(NoHeartbeatAfterSpawn),
            ),
            // an old heartbeat file from a previous runner does not count
            (
                61 * S,
                v(0, Some(-500 * S), None, None, None),
                Kill(NoHeartbeatAfterSpawn),
            ),
            (30 * S, v(0, Some(-500 * S), None, None, None), No),
            // heartbeat ceiling
            (100 * S, v(0, Some(50 * S), None, None, None), No),
            (
                111 * S,
                v(0, Some(50 * S), None, None, None),
                Kill(HeartbeatStale),
            ),
            // idle runner with a fresh heartbeat and no claims lives forever
            (10_000 * S, v(0, Some(9_990 * S), None, None, None), No),
            // claim stuck: 300 s without progress
            (400 * S, v(0, Some(399 * S), Some(100 * S), None, None), No),
            (
                401 * S,
                v(0, Some(399 * S), Some(100 * S), None, None),
                Kill(ClaimStuck),
            ),
            // progress moves the deadline
            (
                401 * S,
                v(0, Some(399 * S), Some(100 * S), Some(200 * S), None),
                No,
            ),
            // a tool within its declared timeout + 30 s widens tolerance
            (
                1_000 * S,
                v(
                    0,
                    Some(999 * S),
                    Some(100 * S),
                    None,
                    Some((100 * S, 900 * S)),
                ),
                No,
            ),
            (
                1_031 * S,
                v(
                    0,
                    Some(1_030 * S),
                    Some(100 * S),
                    None,
                    Some((100 * S, 900 * S)),
                ),
                Kill(ClaimStuck),
            ),
            // ... and is no shield once the tool itself overran
            (
                500 * S,
                v(
                    0,
                    Some(499 * S),
                    Some(100 * S),
                    None,
                    Some((100 * S, 10 * S)),
                ),
                Kill(ClaimStuck),
            ),
        ];
        for (i, (now, view, want)) in table.into_iter().enumerate() {
            assert_eq!(decide_stuck(now, &view, &l), want, "row {i}: {view:?}");
        }
    }

    #[test]
    fn a_check_waits_at_least_a_quarter_second() {
        let ms = Duration::from_millis;
        // (due, now, expected wait)
        let table = [
            (10_000, 0, ms(10_000)),
            (251, 0, ms(251)),
            (250, 0, ms(250)),
            (1, 0, ms(250)),
            (0, 5_000, ms(250)),
            (i64::MIN, i64::MAX, ms(250)),
        ];
        for (i, (at, now, want)) in table.into_iter().enumerate() {
            assert_eq!(check_in(at, now), want, "row {i}");
        }
    }

    #[test]
    fn next_deadline_is_exactly_when_the_kill_comes() {
        let l = StuckLimits::default();
        let views = [
            v(0, None, None, None, None),
            v(0, Some(-500 * S), None, None, None),
            v(0, Some(50 * S), None, None, None),
            v(0, Some(399 * S), Some(100 * S), None, None),
            v(0, Some(399 * S), Some(100 * S), Some(200 * S), None),
            v(
                0,
                Some(999 * S),
                Some(100 * S),
                None,
                Some((100 * S, 900 * S)),
            ),
            v(
                0,
                Some(499 * S),
                Some(100 * S),
                None,
                Some((100 * S, 10 * S)),
            ),
            v(0, Some(10 * S), Some(5 * S), Some(8 * S), None),
        ];
        for view in views {
            assert!(first_deadline(view.spawned_at_ms, &l) <= next_deadline(&view, &l));
            let at = next_deadline(&view, &l);
            assert_eq!(decide_stuck(at - 1, &view, &l), No, "{view:?} at {at}");
            assert!(
                matches!(decide_stuck(at, &view, &l), Kill(_)),
                "{view:?} at {at}"
            );
        }
    }

    #[test]
    // `1 * S` reads as "one second" beside the other multiples of `S`.
    #[allow(clippy::identity_op)]
    fn silent_four_minutes_with_fresh_heartbeat_lives() {
        // Lesson 10: a slow provider (no events for 4 min) is not stuck.
        let l = StuckLimits::default();
        let view = v(0, Some(239 * S), Some(1 * S), Some(1 * S), None);
        assert_eq!(decide_stuck(240 * S, &view, &l), No);
    }
}
