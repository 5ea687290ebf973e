//! Crash budget and quarantine (SPEC §6.4, lesson 27).
//!
//! Abnormal exits (1, 75, signals, stuck kills, spawn failures) count per
//! session over a sliding window. After the k-th, with work pending, the
//! runner respawns after `delays[k-1]`; one past the budget quarantines the
//! session. Exit 78 (bad configuration) quarantines at once: retrying a
//! configuration that cannot work only burns time. Clean exits never count.

use std::time::Duration;

/// The shortest wait before any retry the host schedules: a respawn after
/// an abnormal exit or a failed spawn, an orphaned message's retry. No
/// setting goes below it, so no configuration turns a retry into a tight
/// loop (issue 15, break 1; decision 0024): a failing spawn costs a few
/// milliseconds, and 500 ms keeps a crash loop near 2 attempts a second
/// while a user whose runner crashed once still waits well under a second.
pub const MIN_RETRY_DELAY: Duration = Duration::from_millis(500);

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BudgetConfig {
    pub window: Duration,
    /// Abnormal exits allowed in the window; the next one quarantines.
    pub budget: usize,
    /// Respawn delay after the k-th abnormal exit (last repeats).
    pub delays: Vec<Duration>,
}

impl Default for BudgetConfig {
    fn default() -> Self {
        BudgetConfig {
            window: Duration::from_secs(600),
            budget: 5,
            delays: [0, 2, 8, 30, 120]
                .into_iter()
                .map(Duration::from_secs)
                .collect(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Respawn (if work is pending) no earlier than this delay.
    Respawn(Duration),
    /// Stop trying; tell the user once.
    Quarantine,
}

/// Decides after an abnormal exit. `exits_ms` are the abnormal exit times
/// (including this one) on any monotonic millisecond clock; `config_error`
/// marks exit 78.
pub fn after_abnormal_exit(
    now_ms: i64,
    exits_ms: &[i64],
    config_error: bool,
    c: &BudgetConfig,
) -> Verdict {
    if config_error {
        return Verdict::Quarantine;
    }
    let window = c.window.as_millis() as i64;
    let k = exits_ms.iter().filter(|t| now_ms - **t <= window).count();
    if k > c.budget {
        return Verdict::Quarantine;
    }
    let idx = k.saturating_sub(1).min(c.delays.len().saturating_sub(1));
    Verdict::Respawn(
        c.delays
            .get(idx)
            .copied()
            .unwrap_or(Duration::ZERO)
            .max(MIN_RETRY_DELAY),
    )
}

/// How much of the back-off after the last of `exits_ms` (this session's
/// abnormal exits still in the window, oldest first, epoch ms) is still to
/// run at `now_ms`: what a host restarted mid back-off waits (issue 15,
/// break 6). `None` when it is over, or the exits quarantine.
pub fn backoff_left(now_ms: i64, exits_ms: &[i64], c: &BudgetConfig) -> Option<Duration> {
    let &last = exits_ms.last()?;
    match after_abnormal_exit(last, exits_ms, false, c) {
        Verdict::Respawn(d) => {
            let ends = last + d.as_millis() as i64;
            (ends > now_ms).then(|| Duration::from_millis((ends - now_ms) as u64))
        }
        Verdict::Quarantine => None,
    }
}

/// The plain sentence stored as `quarantine_reason` and shown to the user.
/// `last_cause` says how the last try ended (`killed by SIGKILL`, `exit code
/// 1`, `could not be started`); `last_detail` why, when known (the runner's
/// last error line).
pub fn quarantine_reason(
    exits: usize,
    span: Duration,
    last_cause: &str,
    last_detail: Option<&str>,
) -> String {
    let mins = (span.as_secs() / 60).max(1);
    let mut s =
        format!("the agent's runner failed {exits} times in {mins} min (last: {last_cause})");
    if let Some(d) = last_detail.filter(|d| !d.is_empty()) {
        let d: String = d.chars().take(200).collect();
        s.push_str(&format!(": {d}"));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_then_quarantine_on_the_sixth() {
        let c = BudgetConfig::default();
        let mut exits = Vec::new();
        let mut verdicts = Vec::new();
        for i in 0..6 {
            let now = i * 1_000;
            exits.push(now);
            verdicts.push(after_abnormal_exit(now, &exits, false, &c));
        }
        let s = Duration::from_secs;
        assert_eq!(
            verdicts,
            vec![
                Verdict::Respawn(MIN_RETRY_DELAY),
                Verdict::Respawn(s(2)),
                Verdict::Respawn(s(8)),
                Verdict::Respawn(s(30)),
                Verdict::Respawn(s(120)),
                Verdict::Quarantine
            ]
        );
    }

    #[test]
    fn old_exits_leave_the_window() {
        let c = BudgetConfig::default();
        let exits = [0, 1, 2, 3, 4, 700_000];
        assert_eq!(
            after_abnormal_exit(700_000, &exits, false, &c),
            Verdict::Respawn(MIN_RETRY_DELAY)
        );
    }

    #[test]
    fn no_setting_makes_a_delay_shorter_than_the_floor() {
        for delays in [vec![], vec![Duration::ZERO], vec![Duration::from_millis(1)]] {
            let c = BudgetConfig {
                window: Duration::from_secs(600),
                budget: 1_000_000,
                delays,
            };
            for k in 1..50 {
                let exits: Vec<i64> = (0..k).collect();
                assert_eq!(
                    after_abnormal_exit(k, &exits, false, &c),
                    Verdict::Respawn(MIN_RETRY_DELAY)
                );
            }
        }
    }

    #[test]
    fn a_restart_resumes_the_backoff_where_it_was() {
        let c = BudgetConfig::default();
        let ms = Duration::from_millis;
        // (now, exits, expected left)
        let table: [(i64, &[i64], Option<Duration>); 7] = [
            (0, &[], None),
            // first exit: the floor
            (100, &[0], Some(ms(400))),
            (500, &[0], None),
            // third exit: 8 s after it
            (3_000, &[0, 1_000, 2_000], Some(ms(7_000))),
            (10_000, &[0, 1_000, 2_000], None),
            (9_999, &[0, 1_000, 2_000], Some(ms(1))),
            // past the budget: quarantined, nothing to wait for
            (5_001, &[0, 1, 2, 3, 4, 5_000], None),
        ];
        for (i, (now, exits, want)) in table.into_iter().enumerate() {
            assert_eq!(backoff_left(now, exits, &c), want, "row {i}");
        }
    }

    #[test]
    fn config_errors_quarantine_at_once() {
        assert_eq!(
            after_abnormal_exit(0, &[0], true, &BudgetConfig::default()),
            Verdict::Quarantine
        );
    }

    #[test]
    fn reason_is_plain() {
        let r = quarantine_reason(
            6,
            Duration::from_secs(240),
            "killed by SIGKILL",
            Some("inbound.db corrupt"),
        );
        assert_eq!(
            r,
            "the agent's runner failed 6 times in 4 min (last: killed by SIGKILL): inbound.db corrupt"
        );
    }
}
