//! Sessions under management: found or created for a conversation,
//! loaded (recovery opens, projection, its delivery, its crash budget as the
//! last host left it, its next due task), and re-projected after an admin
//! change.

use std::time::Instant;

use anyhow::{Context, Result};
use pinch_proto::rows::Routing;
use pinch_proto::runner_config::random_hex;

use super::{ensure_group_folder, now_ms, Host, SessionRt};
use crate::db::central::SessionRow;
use crate::paths::SessionDir;
use crate::session;

impl Host {
    /// The active session for (ag, mg, thread), created if missing.
    pub(super) fn session_for(
        &mut self,
        ag_id: &str,
        mg_id: &str,
        thread_id: Option<&str>,
    ) -> Result<String> {
        self.session_in(ag_id, Some(mg_id), thread_id)
    }

    /// The active session for (ag, mg or none, thread), created if missing.
    pub(super) fn session_in(
        &mut self,
        ag_id: &str,
        mg_id: Option<&str>,
        thread_id: Option<&str>,
    ) -> Result<String> {
        if let Some(row) = self.central.find_session(ag_id, mg_id, thread_id)? {
            if !self.sessions.contains_key(&row.id) {
                let id = row.id.clone();
                self.load_session(row)?;
                return Ok(id);
            }
            return Ok(row.id);
        }
        let folder = self
            .central
            .agent_folder(ag_id)?
            .with_context(|| format!("agent group {ag_id} has no folder"))?;
        ensure_group_folder(&self.data, &folder)?;
        let id = format!("s{}", random_hex(crate::paths::SESSION_ID_HEX / 2));
        let dir = session::create_folder(&self.data, ag_id, &id)?;
        let row = SessionRow {
            id: id.clone(),
            agent_group_id: ag_id.to_owned(),
            messaging_group_id: mg_id.map(str::to_owned),
            thread_id: thread_id.map(str::to_owned),
            folder,
        };
        if let Err(e) = self.central.insert_session(&row, &self.cfg.provider.kind) {
            let _ = std::fs::remove_dir_all(dir.root());
            return Err(e.context("recording the new session"));
        }
        tracing::info!(session_id = %id, agent_group = %ag_id, "session created");
        self.load_session(row)?;
        Ok(id)
    }

    /// Brings a session under management: recovery opens, projection,
    /// delivery task. Used at boot and on first use.
    pub(super) fn load_session(&mut self, row: SessionRow) -> Result<()> {
        let dir = self.data.session(&row.agent_group_id, &row.id);
        if !dir.root().exists() {
            anyhow::bail!("session folder {} is missing", dir.root().display());
        }
        // Our own file: still the one we made (identity), hot journal
        // rolled back, migrated lazily; never silently recreated (issue 15).
        let inbound_stamp =
            self.inspect_inbound(&row, &dir, None, crate::session_check::Depth::Identity);
        // No runner of this session is alive here: roll back a torn runner write.
        pinch_proto::open::recovery_open(&dir.outbound_db(), session::BUSY)?;
        self.project(&row, &dir)?;
        let shared = self.start_delivery(&row, &dir);
        self.central.set_runner_state(&row.id, "stopped", None)?;
        let quarantined = self.central.quarantine_of(&row.id)?.is_some();
        // The crash budget as the last host left it (issue 15, break 6).
        let (exits_ms, next_spawn_at) = self.restore_budget(&row.id);
        // A scheduled task falling due later wakes the session then.
        match session::next_due(&dir) {
            Ok(Some(t)) => self.wake_at(&row.id, t.as_millisecond()),
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(session_id = %row.id, "cannot read scheduled tasks (the sweep still wakes due ones): {e:#}")
            }
        }
        self.sessions.insert(
            row.id.clone(),
            SessionRt {
                row,
                dir,
                shared,
                runner: None,
                exits_ms,
                next_spawn_at,
                backoff_told: None,
                wake_scheduled: false,
                wake_failures: 0,
                orphans_pending: None,
                quarantined,
                closed: false,
                disk: Default::default(),
                inbound_stamp,
                integrity_checked: None,
                checking: false,
            },
        );
        Ok(())
    }

    /// A session's abnormal exits still in the budget's window, and when
    /// its back-off after the last of them ends (if still ahead).
    pub(super) fn restore_budget(&self, id: &str) -> (Vec<i64>, Option<Instant>) {
        let now = now_ms();
        let window = self.cfg.budget.window.as_millis() as i64;
        let exits = match self.central.budget_exits(id, now - window) {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(session_id = %id, "cannot read the crash budget (it starts empty): {e:#}");
                return (Vec::new(), None);
            }
        };
        let next = pinch_policy::budget::backoff_left(now, &exits, &self.cfg.budget)
            .map(|left| Instant::now() + left);
        (exits, next)
    }

    /// Re-projects destinations and routing into every loaded session
    /// (after an admin change to destinations or wirings).
    pub(super) fn reproject_all(&self) {
        for s in self.sessions.values() {
            if let Err(e) = self.project(&s.row, &s.dir) {
                tracing::warn!(session_id = %s.row.id, "could not re-project destinations: {e:#}");
            }
        }
    }

    pub(super) fn project(&self, row: &SessionRow, dir: &SessionDir) -> Result<()> {
        let dests = self.central.destinations(&row.agent_group_id)?;
        let routing = match row.messaging_group_id.as_deref() {
            Some(mg) => match self.central.messaging_group_by_id(mg)? {
                Some(m) => Routing {
                    channel_type: Some(m.channel_type),
                    platform_id: Some(m.platform_id),
                    thread_id: row.thread_id.clone(),
                },
                None => Routing::default(),
            },
            None => Routing::default(),
        };
        session::project(dir, &dests, &routing)
    }
}
