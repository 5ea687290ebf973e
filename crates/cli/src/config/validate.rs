//! Settings that make no sense are refused before anything starts: every
//! numeric setting has a floor (and durations a ceiling, so a huge value
//! cannot overflow a timer), lists that must hold something may not be
//! empty, and `proxy.egress_allow` is a list in the file. Each problem names
//! where the value came from (the file, or the `PINCH__…` variable), the
//! key, the value and what is allowed; all problems are reported at once.
//!
//! The floors live with their settings (each section module lists its own);
//! this module is the vocabulary they use (where a value came from, a floor
//! on seconds or a count) and words the problems; `super::problems` collects
//! them and checks what spans sections.

use std::collections::BTreeMap;
use std::path::PathBuf;

/// Where the settings came from, for messages.
#[derive(Debug, Default, Clone)]
pub struct Origin {
    /// The configuration file (it may not exist: then only defaults and
    /// variables apply).
    pub path: PathBuf,
    /// Dotted key (`host.crash_budget`) → the variable that set it.
    pub env: BTreeMap<String, String>,
}

impl Origin {
    pub(super) fn place(&self, key: &str) -> String {
        match self.env.get(key) {
            Some(var) => format!("environment variable {var}"),
            None if self.path.as_os_str().is_empty() => "in the configuration".into(),
            None => self.path.display().to_string(),
        }
    }
}

/// The longest duration any setting may have: a year.
pub const MAX_SECS: f64 = 365.0 * 24.0 * 3600.0;

/// A number of seconds with its floor and why the floor is there.
#[derive(Clone)]
pub(super) struct Secs<'a> {
    key: &'a str,
    value: Option<f64>,
    min: f64,
    why: &'a str,
}

impl<'a> Secs<'a> {
    pub fn new(key: &'a str, value: Option<f64>, min: f64, why: &'a str) -> Secs<'a> {
        Secs {
            key,
            value,
            min,
            why,
        }
    }
}

/// A count with its floor.
#[derive(Clone)]
pub(super) struct Count<'a> {
    key: &'a str,
    value: Option<u64>,
    min: u64,
    why: &'a str,
}

impl<'a> Count<'a> {
    pub fn new(key: &'a str, value: Option<impl Into<u64>>, min: u64, why: &'a str) -> Count<'a> {
        Count {
            key,
            value: value.map(Into::into),
            min,
            why,
        }
    }
}

pub(super) fn secs_problem(o: &Origin, s: &Secs) -> Option<String> {
    let v = s.value?;
    if v.is_finite() && v >= s.min && v <= MAX_SECS {
        return None;
    }
    Some(format!(
        "{}: {} = {v} is not allowed: give a number of seconds from {} to {} (a year); {}",
        o.place(s.key),
        s.key,
        s.min,
        MAX_SECS,
        s.why
    ))
}

pub(super) fn count_problem(o: &Origin, c: &Count) -> Option<String> {
    let v = c.value?;
    if v >= c.min {
        return None;
    }
    Some(format!(
        "{}: {} must be at least {}, got {v}; {}",
        o.place(c.key),
        c.key,
        c.min,
        c.why
    ))
}

/// What a problem's message tells the user to do for the default.
pub(super) const LEAVE_OUT: &str = "leave it out for the default";

#[cfg(test)]
mod tests {
    use super::super::{problems, FileConfig};
    use super::*;

    fn load(toml: &str, env: &[(&str, &str)]) -> FileConfig {
        let mut t: toml::Table = toml.parse().unwrap();
        let env: super::super::Env = env.iter().copied().collect();
        let set = super::super::env::apply_env(&mut t, &env).unwrap();
        let mut f: FileConfig = super::super::from_table(t).unwrap();
        f.origin = Origin {
            path: "/etc/pinch/pinch.toml".into(),
            env: set.into_iter().collect(),
        };
        f
    }

    fn one(toml: &str) -> String {
        let p = problems(&load(toml, &[]));
        assert_eq!(p.len(), 1, "{toml}: {p:?}");
        p[0].clone()
    }

    #[test]
    fn each_senseless_number_is_refused_naming_file_key_value_and_range() {
        for (toml, key, value, allowed) in [
            (
                "[host]\ncrash_budget = 0",
                "host.crash_budget",
                "got 0",
                "at least 1",
            ),
            (
                "[host]\nmax_concurrent_runners = 0",
                "host.max_concurrent_runners",
                "got 0",
                "at least 1",
            ),
            ("[host]\nsweep_s = 0", "host.sweep_s", "= 0 ", "from 0.1 to"),
            (
                "[host]\nstop_grace_s = 0",
                "host.stop_grace_s",
                "= 0 ",
                "from 0.1 to",
            ),
            (
                "[host]\ncrash_window_s = 0",
                "host.crash_window_s",
                "= 0 ",
                "from 1 to",
            ),
            (
                "[host]\nretry_base_s = 0",
                "host.retry_base_s",
                "= 0 ",
                "from 0.05 to",
            ),
            (
                "[host]\ndelivery_poll_s = 0",
                "host.delivery_poll_s",
                "= 0 ",
                "from 0.01 to",
            ),
            (
                "[host]\nrespawn_delays_s = [0, -1]",
                "host.respawn_delays_s",
                "= -1 ",
                "from 0 to",
            ),
            (
                "[host]\nrespawn_delays_s = []",
                "host.respawn_delays_s",
                "= []",
                "at least one delay",
            ),
            (
                "[runner]\nidle_exit_s = 0",
                "runner.idle_exit_s",
                "= 0 ",
                "from 1 to",
            ),
            (
                "[runner]\npoll_idle_s = 0",
                "runner.poll_idle_s",
                "= 0 ",
                "burns CPU",
            ),
            (
                "[runner]\npoll_idle_s = 1e30",
                "runner.poll_idle_s",
                "= 1000000000000000000000000000000 ",
                "(a year)",
            ),
            (
                "[runner]\npoll_active_s = 0",
                "runner.poll_active_s",
                "= 0 ",
                "from 0.01 to",
            ),
            (
                "[runner]\nheartbeat_s = 0",
                "runner.heartbeat_s",
                "= 0 ",
                "from 0.1 to",
            ),
            (
                "[runner]\nbusy_timeout_s = 1",
                "runner.busy_timeout_s",
                "= 1 ",
                "from 2 to",
            ),
            (
                "[runner]\nbatch_size = 0",
                "runner.batch_size",
                "got 0",
                "at least 1",
            ),
            (
                "[runner]\ncorruption_streak = 0",
                "runner.corruption_streak",
                "got 0",
                "at least 1",
            ),
            (
                "[runner]\nmax_steps = 0",
                "runner.max_steps",
                "got 0",
                "at least 1",
            ),
            (
                "[stuck]\nheartbeat_ceiling_s = 0",
                "stuck.heartbeat_ceiling_s",
                "= 0 ",
                "from 1 to",
            ),
            (
                "[stuck]\nspawn_grace_s = 0",
                "stuck.spawn_grace_s",
                "= 0 ",
                "from 1 to",
            ),
            (
                "[stuck]\nclaim_stuck_s = 0",
                "stuck.claim_stuck_s",
                "= 0 ",
                "from 1 to",
            ),
            (
                "[stuck]\nheartbeat_ceiling_s = 6",
                "stuck.heartbeat_ceiling_s",
                "= 6 ",
                "twice runner.heartbeat_s = 5",
            ),
            (
                "[proxy]\nheader_timeout_s = 0",
                "proxy.header_timeout_s",
                "= 0 ",
                "from 0.1 to",
            ),
            (
                "[proxy]\nidle_timeout_s = 0",
                "proxy.idle_timeout_s",
                "= 0 ",
                "from 0.1 to",
            ),
            (
                "[proxy]\nupstream_timeout_s = 0",
                "proxy.upstream_timeout_s",
                "= 0 ",
                "from 0.1 to",
            ),
            (
                "[proxy]\nmax_connections = 0",
                "proxy.max_connections",
                "got 0",
                "at least 1",
            ),
            (
                "[proxy]\nmax_connections_per_session = 0",
                "proxy.max_connections_per_session",
                "got 0",
                "at least 1",
            ),
            (
                "[proxy]\negress_allow = \"api.github.com\"",
                "proxy.egress_allow",
                "\"api.github.com\"",
                "give a list",
            ),
            (
                "[sandbox]\nmemory_mb = 0",
                "sandbox.memory_mb",
                "got 0",
                "at least 1",
            ),
            (
                "[sandbox]\ndisk_mb = 0",
                "sandbox.disk_mb",
                "got 0",
                "at least 1",
            ),
            (
                "[sandbox]\npids = 4",
                "sandbox.pids",
                "got 4",
                "at least 16",
            ),
            (
                "[sandbox]\nopen_files = 10",
                "sandbox.open_files",
                "got 10",
                "at least 64",
            ),
            (
                "[provider.local]\nmax_tokens = 0",
                "provider.local.max_tokens",
                "got 0",
                "at least 1",
            ),
            (
                "[provider.openai]\nallow_paths = []",
                "provider.openai.allow_paths",
                "= []",
                "forward nothing",
            ),
            (
                "[webhooks.ci]\nmax_body = 0",
                "webhooks.ci.max_body",
                "got 0",
                "at least 1",
            ),
            (
                "[telegram]\nstall_s = 0",
                "telegram.stall_s",
                "= 0 ",
                "from 0.1 to",
            ),
        ] {
            let e = one(toml);
            assert!(
                e.starts_with("/etc/pinch/pinch.toml: ")
                    && e.contains(key)
                    && e.contains(value)
                    && e.contains(allowed),
                "{toml}: {e}"
            );
        }
    }

    #[test]
    fn sensible_values_and_the_defaults_pass() {
        assert!(problems(&load("", &[])).is_empty());
        let ok = "[host]\ncrash_budget = 1\nsweep_s = 0.1\nrespawn_delays_s = [0]\nmax_concurrent_runners = 1\n\
                  [runner]\nidle_exit_s = 1\npoll_idle_s = 0.05\nheartbeat_s = 0.5\n[stuck]\nheartbeat_ceiling_s = 1\n\
                  [proxy]\negress_allow = [\"a.com\"]\n";
        assert_eq!(problems(&load(ok, &[])), Vec::<String>::new());
    }

    #[test]
    fn a_value_from_the_environment_names_its_variable() {
        let f = load("", &[("PINCH__HOST__CRASH_BUDGET", "0")]);
        let p = problems(&f);
        assert!(
            p.len() == 1
                && p[0].starts_with(
                    "environment variable PINCH__HOST__CRASH_BUDGET: host.crash_budget"
                ),
            "{p:?}"
        );
        // A comma-separated egress list is the variable's form, and fine there.
        let f = load("", &[("PINCH__PROXY__EGRESS_ALLOW", "a.com,b.org")]);
        assert!(problems(&f).is_empty());
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let p = problems(&load(
            "[host]\ncrash_budget = 0\nsweep_s = 0\n[runner]\npoll_idle_s = 0\n",
            &[],
        ));
        assert_eq!(p.len(), 3, "{p:?}");
    }

    #[test]
    fn a_wrong_type_names_the_key_and_what_is_allowed() {
        let e = toml::Value::Table("[proxy]\negress_allow = 5\n".parse().unwrap())
            .try_into::<FileConfig>()
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("proxy.egress_allow") && e.contains("a list of hosts"),
            "{e}"
        );
        let e = toml::Value::Table("[host]\ncrash_budget = -5\n".parse().unwrap())
            .try_into::<FileConfig>()
            .unwrap_err()
            .to_string();
        assert!(e.contains("host.crash_budget") && e.contains("-5"), "{e}");
    }
}
