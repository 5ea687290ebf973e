//! Settings that make no sense are refused before anything starts: every
//! numeric setting has a floor (and durations a ceiling, so a huge value
//! cannot overflow a timer), lists that must hold something may not be
//! empty, and `proxy.egress_allow` is a list in the file. Each problem names
//! where the value came from (the file, or the `PINCH__…` variable), the
//! key, the value and what is allowed; all problems are reported at once.

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::{FileConfig, HostList};

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
    fn place(&self, key: &str) -> String {
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
struct Secs<'a> {
    key: &'a str,
    value: Option<f64>,
    min: f64,
    why: &'a str,
}

/// A count with its floor.
struct Count<'a> {
    key: &'a str,
    value: Option<u64>,
    min: u64,
    why: &'a str,
}

fn secs_problem(o: &Origin, s: &Secs) -> Option<String> {
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

fn count_problem(o: &Origin, c: &Count) -> Option<String> {
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

/// Every problem with the numeric and list settings, one line each (empty
/// when all make sense).
pub fn problems(f: &FileConfig) -> Vec<String> {
    let o = &f.origin;
    let r = &f.runner;
    let h = &f.host;
    let st = &f.stuck;
    let px = &f.proxy;
    let sb = &f.sandbox;
    let leave_out = "leave it out for the default";
    let mut secs = vec![
        Secs {
            key: "runner.idle_exit_s",
            value: r.idle_exit_s,
            min: 1.0,
            why: "it is how long an idle runner waits for work before exiting; 0 would end it after every message",
        },
        Secs {
            key: "runner.poll_idle_s",
            value: r.poll_idle_s,
            min: 0.05,
            why: "an idle runner checks for work this often; below 0.05 it burns CPU doing nothing",
        },
        Secs {
            key: "runner.poll_active_s",
            value: r.poll_active_s,
            min: 0.01,
            why: "a busy runner checks for new messages this often; below 0.01 it burns CPU",
        },
        Secs {
            key: "runner.heartbeat_s",
            value: r.heartbeat_s,
            min: 0.1,
            why: "the runner proves it is alive this often",
        },
        Secs {
            key: "runner.busy_timeout_s",
            value: r.busy_timeout_s,
            min: 2.0,
            why: "shorter timeouts make reads fail as locked",
        },
        Secs {
            key: "host.delivery_poll_s",
            value: h.delivery_poll_s,
            min: 0.01,
            why: "the host checks for replies to deliver this often",
        },
        Secs {
            key: "host.sweep_s",
            value: h.sweep_s,
            min: 0.1,
            why: "the host's periodic check for due work and stuck runners; 0 would spin",
        },
        Secs {
            key: "host.stop_grace_s",
            value: h.stop_grace_s,
            min: 0.1,
            why: "a stopped runner gets this long to finish cleanly before it is killed",
        },
        Secs {
            key: "host.crash_window_s",
            value: h.crash_window_s,
            min: 1.0,
            why: "abnormal exits are counted over this window",
        },
        Secs {
            key: "host.retry_base_s",
            value: h.retry_base_s,
            min: 0.05,
            why: "a message whose runner died is retried after base · 2^tries; 0 would retry in a tight loop",
        },
        Secs {
            key: "stuck.spawn_grace_s",
            value: st.spawn_grace_s,
            min: 1.0,
            why: "a new runner gets this long to start before it counts as stuck",
        },
        Secs {
            key: "stuck.heartbeat_ceiling_s",
            value: st.heartbeat_ceiling_s,
            min: 1.0,
            why: "a runner silent this long is killed as stuck; 0 would kill every runner",
        },
        Secs {
            key: "stuck.claim_stuck_s",
            value: st.claim_stuck_s,
            min: 1.0,
            why: "a claimed message with no progress this long counts as stuck",
        },
        Secs {
            key: "proxy.header_timeout_s",
            value: px.header_timeout_s,
            min: 0.1,
            why: "0 would cut every connection to the credential proxy",
        },
        Secs {
            key: "proxy.idle_timeout_s",
            value: px.idle_timeout_s,
            min: 0.1,
            why: "0 would cut every connection to the credential proxy",
        },
        Secs {
            key: "proxy.upstream_timeout_s",
            value: px.upstream_timeout_s,
            min: 0.1,
            why: "0 would cut every call to the model",
        },
    ];
    for (section, stall) in [
        ("telegram", f.telegram.as_ref().and_then(|t| t.stall_s)),
        ("discord", f.discord.as_ref().and_then(|t| t.stall_s)),
        ("slack", f.slack.as_ref().and_then(|t| t.stall_s)),
    ] {
        secs.push(Secs {
            key: match section {
                "telegram" => "telegram.stall_s",
                "discord" => "discord.stall_s",
                _ => "slack.stall_s",
            },
            value: stall,
            min: 0.1,
            why: "the connection is restarted after this long without a sign of life",
        });
    }
    let delays = h.respawn_delays_s.clone().unwrap_or_default();
    for d in &delays {
        secs.push(Secs {
            key: "host.respawn_delays_s",
            value: Some(*d),
            min: 0.0,
            why: "the waits before respawning after the 1st, 2nd, … abnormal exit",
        });
    }
    let mut out: Vec<String> = secs.iter().filter_map(|s| secs_problem(o, s)).collect();
    let u = |v: Option<usize>| v.map(|x| x as u64);
    let u32 = |v: Option<u32>| v.map(u64::from);
    let counts = [
        Count {
            key: "host.crash_budget",
            value: u(h.crash_budget),
            min: 1,
            why: "abnormal exits allowed per crash_window_s before the session is quarantined; 0 would quarantine on the first",
        },
        Count {
            key: "host.max_concurrent_runners",
            value: u(h.max_concurrent_runners),
            min: 1,
            why: "0 would never run an agent",
        },
        Count {
            key: "runner.batch_size",
            value: u32(r.batch_size),
            min: 1,
            why: "messages handed to the agent per turn",
        },
        Count {
            key: "runner.corruption_streak",
            value: u32(r.corruption_streak),
            min: 1,
            why: "failed reads in a row before the runner exits 75",
        },
        Count {
            key: "runner.max_steps",
            value: u32(r.max_steps),
            min: 1,
            why: "it counts model calls per turn; the default is 50",
        },
        Count {
            key: "proxy.max_connections_per_session",
            value: u(px.max_connections_per_session),
            min: 1,
            why: "0 would cut the sandbox off from its model",
        },
        Count {
            key: "proxy.max_connections",
            value: u(px.max_connections),
            min: 1,
            why: "0 would cut every sandbox off from its model",
        },
        Count {
            key: "sandbox.memory_mb",
            value: sb.memory_mb,
            min: 1,
            why: "0 would stop every runner",
        },
        Count {
            key: "sandbox.file_size_mb",
            value: sb.file_size_mb,
            min: 1,
            why: "0 would stop every runner",
        },
        Count {
            key: "sandbox.cpu_s",
            value: sb.cpu_s,
            min: 1,
            why: "0 would stop every runner",
        },
        Count {
            key: "sandbox.disk_mb",
            value: sb.disk_mb,
            min: 1,
            why: "0 would stop every runner",
        },
        Count {
            key: "sandbox.open_files",
            value: sb.open_files,
            min: 64,
            why: "fewer open files than that and the runner cannot start",
        },
        Count {
            key: "sandbox.pids",
            value: sb.pids,
            min: 16,
            why: "fewer processes than that and the runner cannot start",
        },
        Count {
            key: "provider.local.max_tokens",
            value: u32(f.provider.local.max_tokens),
            min: 1,
            why: "0 would never answer",
        },
        Count {
            key: "provider.local.context",
            value: u32(f.provider.local.context),
            min: 1,
            why: "the model's context window in tokens",
        },
    ];
    out.extend(counts.iter().filter_map(|c| count_problem(o, c)));
    for (name, w) in &f.webhooks {
        if w.max_body == Some(0) {
            out.push(format!(
                "{}: webhooks.{name}.max_body must be at least 1, got 0; {leave_out} (1 MiB)",
                o.path.display()
            ));
        }
    }
    if h.respawn_delays_s.is_some() && delays.is_empty() {
        out.push(format!(
            "{}: host.respawn_delays_s = [] is not allowed: give at least one delay in seconds (e.g. [0, 2, 8, 30, 120]), or {leave_out}",
            o.place("host.respawn_delays_s")
        ));
    }
    for (name, section) in [
        ("openai", &f.provider.openai),
        ("anthropic", &f.provider.anthropic),
    ] {
        if section.allow_paths.as_ref().is_some_and(|p| p.is_empty()) {
            out.push(format!(
                "{}: provider.{name}.allow_paths = [] would forward nothing to the model; list paths, or {leave_out}",
                o.path.display()
            ));
        }
    }
    if let Some(HostList::Csv(s)) = &px.egress_allow {
        if !o.env.contains_key("proxy.egress_allow") {
            out.push(format!(
                "{}: proxy.egress_allow = {s:?} is a string; give a list of hosts, e.g. egress_allow = [\"api.github.com\", \"*.pypi.org\"] \
                 (a comma-separated string is only for the PINCH__PROXY__EGRESS_ALLOW variable)",
                o.path.display()
            ));
        }
    }
    // Cross-setting: the ceiling must leave room for several heartbeats.
    let beat = r.heartbeat_s.unwrap_or(5.0);
    let ceiling = st.heartbeat_ceiling_s.unwrap_or(60.0);
    if out.is_empty() && ceiling < 2.0 * beat {
        out.push(format!(
            "{}: stuck.heartbeat_ceiling_s = {ceiling} is less than twice runner.heartbeat_s = {beat}: every healthy runner would be killed as stuck; \
             make the ceiling at least twice the heartbeat",
            o.place("stuck.heartbeat_ceiling_s")
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(toml: &str, env: &[(&str, &str)]) -> FileConfig {
        let mut t: toml::Table = toml.parse().unwrap();
        let set = super::super::apply_env(
            &mut t,
            env.iter().map(|(k, v)| (k.to_string(), v.to_string())),
        )
        .unwrap();
        let mut f: FileConfig = toml::Value::Table(t).try_into().unwrap();
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
