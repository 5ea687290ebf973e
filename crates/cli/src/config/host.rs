//! `[host]`: the host's own timings, supervision and backups.

use std::time::Duration;

use anyhow::{bail, Result};
use pinch_host::HostConfig;
use serde::Deserialize;

use super::secs;
use super::validate::{Count, Origin, Secs, LEAVE_OUT};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostSection {
    pub delivery_poll_s: Option<f64>,
    pub sweep_s: Option<f64>,
    pub max_concurrent_runners: Option<usize>,
    pub stop_grace_s: Option<f64>,
    /// Abnormal runner exits allowed per window before quarantine.
    pub crash_budget: Option<usize>,
    pub crash_window_s: Option<f64>,
    /// Respawn delays after the 1st, 2nd, … abnormal exit (last repeats).
    pub respawn_delays_s: Option<Vec<f64>>,
    /// Wait before booting after repeated unclean exits (default on).
    pub boot_breaker: Option<bool>,
    /// Retry backoff base for messages whose runner died: base · 2^tries.
    pub retry_base_s: Option<f64>,
    /// Online backup of pinch.db every this many seconds (0: only at a
    /// clean stop; default 900), keeping the newest `backup_keep` (8).
    pub backup_interval_s: Option<f64>,
    pub backup_keep: Option<usize>,
}

impl HostSection {
    /// The floors [`super::validate`] checks.
    pub(super) fn secs(&self) -> Vec<Secs<'static>> {
        vec![
            Secs::new(
                "host.delivery_poll_s",
                self.delivery_poll_s,
                0.01,
                "the host checks for replies to deliver this often",
            ),
            Secs::new(
                "host.sweep_s",
                self.sweep_s,
                0.1,
                "the host's periodic check for due work and stuck runners; 0 would spin",
            ),
            Secs::new(
                "host.stop_grace_s",
                self.stop_grace_s,
                0.1,
                "a stopped runner gets this long to finish cleanly before it is killed",
            ),
            Secs::new(
                "host.crash_window_s",
                self.crash_window_s,
                1.0,
                "abnormal exits are counted over this window",
            ),
            Secs::new(
                "host.retry_base_s",
                self.retry_base_s,
                0.05,
                "a message whose runner died is retried after base · 2^tries; 0 would retry in a tight loop",
            ),
        ]
    }

    /// Each respawn delay (reported after the other sections' seconds).
    pub(super) fn delay_secs(&self) -> Vec<Secs<'static>> {
        self.respawn_delays_s
            .iter()
            .flatten()
            .map(|d| {
                Secs::new(
                    "host.respawn_delays_s",
                    Some(*d),
                    0.0,
                    "the waits before respawning after the 1st, 2nd, … abnormal exit",
                )
            })
            .collect()
    }

    pub(super) fn counts(&self) -> Vec<Count<'static>> {
        let u = |v: Option<usize>| v.map(|x| x as u64);
        vec![
            Count::new(
                "host.crash_budget",
                u(self.crash_budget),
                1,
                "abnormal exits allowed per crash_window_s before the session is quarantined; 0 would quarantine on the first",
            ),
            Count::new(
                "host.max_concurrent_runners",
                u(self.max_concurrent_runners),
                1,
                "0 would never run an agent",
            ),
        ]
    }

    /// Checks beyond the floors.
    pub(super) fn problems(&self, o: &Origin) -> Vec<String> {
        let mut out = Vec::new();
        if self.respawn_delays_s.as_ref().is_some_and(Vec::is_empty) {
            out.push(format!(
                "{}: host.respawn_delays_s = [] is not allowed: give at least one delay in seconds (e.g. [0, 2, 8, 30, 120]), or {LEAVE_OUT}",
                o.place("host.respawn_delays_s")
            ));
        }
        out
    }

    pub(super) fn apply(&self, c: &mut HostConfig) -> Result<()> {
        if let Some(v) = self.delivery_poll_s {
            c.delivery_poll = secs("host.delivery_poll_s", v)?.max(Duration::from_millis(10));
        }
        if let Some(v) = self.sweep_s {
            c.sweep_interval = secs("host.sweep_s", v)?.max(Duration::from_millis(100));
        }
        if let Some(v) = self.max_concurrent_runners {
            c.max_concurrent_runners = v;
        }
        if let Some(v) = self.stop_grace_s {
            c.stop_grace = secs("host.stop_grace_s", v)?;
        }
        if let Some(v) = self.crash_budget {
            c.budget.budget = v;
        }
        if let Some(v) = self.crash_window_s {
            c.budget.window = secs("host.crash_window_s", v)?;
        }
        if let Some(v) = &self.respawn_delays_s {
            if v.is_empty() {
                bail!("host.respawn_delays_s needs at least one delay");
            }
            c.budget.delays = v
                .iter()
                .map(|d| secs("host.respawn_delays_s", *d))
                .collect::<Result<_>>()?;
        }
        if let Some(v) = self.boot_breaker {
            c.boot_breaker = v;
        }
        if let Some(v) = self.retry_base_s {
            c.retry_base = secs("host.retry_base_s", v)?;
        }
        if let Some(v) = self.backup_interval_s {
            c.backup_every = secs("host.backup_interval_s", v)?;
            if !c.backup_every.is_zero() && c.backup_every < Duration::from_secs(10) {
                bail!("host.backup_interval_s must be 0 (back up only at a clean stop) or at least 10 seconds; the default is 900");
            }
        }
        if let Some(v) = self.backup_keep {
            if v == 0 {
                bail!("host.backup_keep must be at least 1 (how many backups of pinch.db to keep in <data>/backups; the default is 8)");
            }
            c.backup_keep = v;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::resolve_str;
    use std::time::Duration;

    #[test]
    fn backup_settings() {
        let c = resolve_str("").unwrap();
        assert_eq!(c.backup_every, Duration::from_secs(900));
        assert_eq!(c.backup_keep, 8);
        let c = resolve_str("[host]\nbackup_interval_s = 0\nbackup_keep = 2\n").unwrap();
        assert_eq!((c.backup_every, c.backup_keep), (Duration::ZERO, 2));
        let e = resolve_str("[host]\nbackup_keep = 0\n").unwrap_err();
        assert!(format!("{e}").contains("host.backup_keep"), "{e}");
        let e = resolve_str("[host]\nbackup_interval_s = 1\n").unwrap_err();
        assert!(format!("{e}").contains("host.backup_interval_s"), "{e}");
    }
}
