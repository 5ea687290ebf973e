//! `[runner]`: the timings and sizes every runner is started with.

use anyhow::{bail, Result};
use pinch_host::HostConfig;
use serde::Deserialize;

use super::ms;
use super::validate::{Count, Secs};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunnerSection {
    pub idle_exit_s: Option<f64>,
    pub poll_idle_s: Option<f64>,
    pub poll_active_s: Option<f64>,
    pub heartbeat_s: Option<f64>,
    pub busy_timeout_s: Option<f64>,
    pub batch_size: Option<u32>,
    pub corruption_streak: Option<u32>,
    /// Model calls per turn (agent loop step limit).
    pub max_steps: Option<u32>,
    pub log: Option<String>,
}

impl RunnerSection {
    /// The floors [`super::validate`] checks.
    pub(super) fn secs(&self) -> Vec<Secs<'static>> {
        vec![
            Secs::new("runner.idle_exit_s", self.idle_exit_s, 1.0, "it is how long an idle runner waits for work before exiting; 0 would end it after every message"),
            Secs::new("runner.poll_idle_s", self.poll_idle_s, 0.05, "an idle runner checks for work this often; below 0.05 it burns CPU doing nothing"),
            Secs::new("runner.poll_active_s", self.poll_active_s, 0.01, "a busy runner checks for new messages this often; below 0.01 it burns CPU"),
            Secs::new("runner.heartbeat_s", self.heartbeat_s, 0.1, "the runner proves it is alive this often"),
            Secs::new("runner.busy_timeout_s", self.busy_timeout_s, 2.0, "shorter timeouts make reads fail as locked"),
        ]
    }

    pub(super) fn counts(&self) -> Vec<Count<'static>> {
        vec![
            Count::new(
                "runner.batch_size",
                self.batch_size,
                1,
                "messages handed to the agent per turn",
            ),
            Count::new(
                "runner.corruption_streak",
                self.corruption_streak,
                1,
                "failed reads in a row before the runner exits 75",
            ),
            Count::new(
                "runner.max_steps",
                self.max_steps,
                1,
                "it counts model calls per turn; the default is 50",
            ),
        ]
    }

    pub(super) fn apply(&self, c: &mut HostConfig) -> Result<()> {
        if let Some(v) = self.idle_exit_s {
            c.runner.idle_exit_ms = ms("runner.idle_exit_s", v)?;
        }
        if let Some(v) = self.poll_idle_s {
            c.runner.poll_idle_ms = ms("runner.poll_idle_s", v)?.max(1);
        }
        if let Some(v) = self.poll_active_s {
            c.runner.poll_active_ms = ms("runner.poll_active_s", v)?.max(1);
        }
        if let Some(v) = self.heartbeat_s {
            c.runner.heartbeat_ms = ms("runner.heartbeat_s", v)?.max(10);
        }
        if let Some(v) = self.busy_timeout_s {
            let b = ms("runner.busy_timeout_s", v)?;
            if b < 2000 {
                bail!("runner.busy_timeout_s must be at least 2 (shorter timeouts make reads fail as locked)");
            }
            c.runner.busy_timeout_ms = b;
        }
        if let Some(v) = self.batch_size {
            if v == 0 {
                bail!("runner.batch_size must be at least 1");
            }
            c.batch_size = v;
        }
        if let Some(v) = self.corruption_streak {
            if v == 0 {
                bail!("runner.corruption_streak must be at least 1");
            }
            c.runner.corruption_streak = v;
        }
        if let Some(v) = self.max_steps {
            if v == 0 {
                bail!("runner.max_steps must be at least 1 (it counts model calls per turn; the default is 50)");
            }
            c.runner.max_steps = v;
        }
        if let Some(v) = &self.log {
            c.runner_log = v.clone();
        }
        Ok(())
    }
}
