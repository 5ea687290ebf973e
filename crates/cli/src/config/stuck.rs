//! `[stuck]`: when the host's sweep counts a runner as stuck.

use anyhow::Result;
use pinch_host::HostConfig;
use serde::Deserialize;

use super::secs;
use super::validate::Secs;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StuckSection {
    pub spawn_grace_s: Option<f64>,
    pub heartbeat_ceiling_s: Option<f64>,
    pub claim_stuck_s: Option<f64>,
}

impl StuckSection {
    /// The floors [`super::validate`] checks.
    pub(super) fn secs(&self) -> Vec<Secs<'static>> {
        vec![
            Secs::new(
                "stuck.spawn_grace_s",
                self.spawn_grace_s,
                1.0,
                "a new runner gets this long to start before it counts as stuck",
            ),
            Secs::new(
                "stuck.heartbeat_ceiling_s",
                self.heartbeat_ceiling_s,
                1.0,
                "a runner silent this long is killed as stuck; 0 would kill every runner",
            ),
            Secs::new(
                "stuck.claim_stuck_s",
                self.claim_stuck_s,
                1.0,
                "a claimed message with no progress this long counts as stuck",
            ),
        ]
    }

    pub(super) fn apply(&self, c: &mut HostConfig) -> Result<()> {
        if let Some(v) = self.spawn_grace_s {
            c.stuck.spawn_grace = secs("stuck.spawn_grace_s", v)?;
        }
        if let Some(v) = self.heartbeat_ceiling_s {
            c.stuck.heartbeat_ceiling = secs("stuck.heartbeat_ceiling_s", v)?;
        }
        if let Some(v) = self.claim_stuck_s {
            c.stuck.claim_stuck = secs("stuck.claim_stuck_s", v)?;
        }
        Ok(())
    }
}
