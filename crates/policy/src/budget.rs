//! Crash budget and quarantine (SPEC §6.4, lesson 27).
//!
//! Abnormal exits (1, 75, signals, stuck kills, spawn failures) count per
//! session over a sliding window. After the k-th, with work pending, the
//! runner respawns after `delays[k-1]`; one past the budget quarantines the
//! session. Exit 78 (bad configuration) quarantines at once: retrying a
//! configuration that cannot work only burns time. Clean exits never count.

use std::time::Duration;

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
    Verdict::Respawn(c.delays.get(idx).copied().unwrap_or(Duration::ZERO))
}

/// The plain sentence stored as `quarantine_reason` and shown to the user.
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
                Verdict::Respawn(s(0)),
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
            Verdict::Respawn(Duration::ZERO)
        );
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
            "transient",
            Some("inbound.db corrupt"),
        );
        assert_eq!(
            r,
            "the agent's runner failed 6 times in 4 min (last: transient): inbound.db corrupt"
        );
    }
}
