//! Central-DB rows of sessions: lookup, lifecycle, runner state, exits,
//! the crash budget, quarantine and the inbound generation.

use anyhow::Result;
use pinch_proto::rusqlite::{self, params, OptionalExtension};

use super::central::{now, Central, SessionRow};

impl Central {
    /// The active session for (ag, mg, thread), if any.
    pub fn find_session(
        &self,
        ag_id: &str,
        mg_id: Option<&str>,
        thread_id: Option<&str>,
    ) -> Result<Option<SessionRow>> {
        Ok(self
            .conn
            .prepare_cached(
                "SELECT s.id, s.agent_group_id, s.messaging_group_id, s.thread_id, g.folder
                 FROM sessions s JOIN agent_groups g ON g.id = s.agent_group_id
                 WHERE s.status = 'active' AND s.agent_group_id = ?1 AND coalesce(s.messaging_group_id, '') = coalesce(?2, '')
                   AND coalesce(s.thread_id, '') = coalesce(?3, '')",
            )?
            .query_row(params![ag_id, mg_id, thread_id], Self::session_row)
            .optional()?)
    }

    pub(super) fn session_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<SessionRow> {
        Ok(SessionRow {
            id: r.get(0)?,
            agent_group_id: r.get(1)?,
            messaging_group_id: r.get(2)?,
            thread_id: r.get(3)?,
            folder: r.get(4)?,
        })
    }

    pub fn active_sessions(&self) -> Result<Vec<SessionRow>> {
        let mut s = self.conn.prepare(
            "SELECT s.id, s.agent_group_id, s.messaging_group_id, s.thread_id, g.folder
             FROM sessions s JOIN agent_groups g ON g.id = s.agent_group_id WHERE s.status = 'active' ORDER BY s.created_at",
        )?;
        let rows = s
            .query_map([], Self::session_row)?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    pub fn insert_session(&self, s: &SessionRow, provider: &str) -> Result<()> {
        let t = now();
        self.conn.execute(
            "INSERT INTO sessions (id, agent_group_id, messaging_group_id, thread_id, provider, status, runner_status, last_active, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, 'active', 'stopped', ?6, ?6)",
            params![s.id, s.agent_group_id, s.messaging_group_id, s.thread_id, provider, t],
        )?;
        Ok(())
    }

    pub fn close_session(&self, id: &str) -> Result<()> {
        self.conn
            .execute("UPDATE sessions SET status = 'closed' WHERE id = ?1", [id])?;
        Ok(())
    }

    pub fn touch_session(&self, id: &str) -> Result<()> {
        self.conn
            .prepare_cached("UPDATE sessions SET last_active = ?2 WHERE id = ?1")?
            .execute(params![id, now()])?;
        Ok(())
    }

    pub fn set_runner_state(
        &self,
        session_id: &str,
        status: &str,
        runner_id: Option<&str>,
    ) -> Result<()> {
        self.conn.execute(
            "UPDATE sessions SET runner_status = ?2, runner_id = coalesce(?3, runner_id),
               runner_started_at = CASE WHEN ?2 IN ('starting', 'running') THEN ?4 ELSE runner_started_at END WHERE id = ?1",
            params![session_id, status, runner_id, now()],
        )?;
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    pub fn record_exit(
        &self,
        session_id: &str,
        runner_id: &str,
        started_at: &str,
        code: Option<i32>,
        signal: Option<i32>,
        cause: &str,
        detail: Option<&str>,
    ) -> Result<()> {
        self.conn.execute(
            "INSERT INTO runner_exits (session_id, runner_id, started_at, exited_at, exit_code, signal, cause, detail)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![session_id, runner_id, started_at, now(), code, signal, cause, detail],
        )?;
        Ok(())
    }

    /// Counts an abnormal exit (epoch ms) against the session's crash
    /// budget and forgets the session's exits older than `window_ms`.
    pub fn count_budget_exit(&self, session_id: &str, at_ms: i64, window_ms: i64) -> Result<()> {
        let tx = self.conn.unchecked_transaction()?;
        tx.execute(
            "DELETE FROM crash_budget WHERE session_id = ?1 AND at_ms < ?2",
            params![session_id, at_ms.saturating_sub(window_ms)],
        )?;
        tx.execute(
            "INSERT INTO crash_budget (session_id, at_ms) VALUES (?1, ?2)",
            params![session_id, at_ms],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// The session's counted abnormal exits at or after `since_ms`, oldest first.
    pub fn budget_exits(&self, session_id: &str, since_ms: i64) -> Result<Vec<i64>> {
        let mut st = self.conn.prepare_cached(
            "SELECT at_ms FROM crash_budget WHERE session_id = ?1 AND at_ms >= ?2 ORDER BY at_ms",
        )?;
        let rows = st
            .query_map(params![session_id, since_ms], |r| r.get(0))?
            .collect::<Result<Vec<i64>, _>>()?;
        Ok(rows)
    }

    /// Forgets the session's counted exits (its quarantine was lifted).
    pub fn clear_budget_exits(&self, session_id: &str) -> Result<()> {
        self.conn.execute(
            "DELETE FROM crash_budget WHERE session_id = ?1",
            [session_id],
        )?;
        Ok(())
    }

    /// Quarantines a session; returns false if it already was (so the user
    /// is told exactly once).
    pub fn quarantine(&self, id: &str, reason: &str) -> Result<bool> {
        let n = self.conn.execute(
            "UPDATE sessions SET quarantined_at = ?2, quarantine_reason = ?3 WHERE id = ?1 AND quarantined_at IS NULL",
            params![id, now(), reason],
        )?;
        Ok(n > 0)
    }

    /// Lifts a quarantine; returns whether there was one.
    pub fn lift_quarantine(&self, id: &str) -> Result<bool> {
        let n = self.conn.execute(
            "UPDATE sessions SET quarantined_at = NULL, quarantine_reason = NULL WHERE id = ?1 AND quarantined_at IS NOT NULL",
            [id],
        )?;
        Ok(n > 0)
    }

    /// The generation of the session's inbound.db the host last made or
    /// adopted (issue 15); `None` before the first check.
    pub fn inbound_generation(&self, id: &str) -> Result<Option<String>> {
        Ok(self
            .conn
            .query_row(
                "SELECT inbound_generation FROM sessions WHERE id = ?1",
                [id],
                |r| r.get(0),
            )
            .optional()?
            .flatten())
    }

    pub fn set_inbound_generation(&self, id: &str, generation: &str) -> Result<()> {
        self.conn.execute(
            "UPDATE sessions SET inbound_generation = ?2 WHERE id = ?1",
            params![id, generation],
        )?;
        Ok(())
    }

    pub fn quarantine_of(&self, id: &str) -> Result<Option<(String, String)>> {
        Ok(self
            .conn
            .query_row(
                "SELECT quarantined_at, coalesce(quarantine_reason, '') FROM sessions WHERE id = ?1 AND quarantined_at IS NOT NULL",
                [id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?)
    }

    /// Sessions with their state, for the admin surface.
    pub fn session_states(&self) -> Result<Vec<serde_json::Value>> {
        let mut s = self.conn.prepare(
            "SELECT s.id, s.agent_group_id, s.messaging_group_id, s.thread_id, s.status, s.runner_status, s.runner_id,
                    s.last_active, s.quarantined_at, s.quarantine_reason,
                    (SELECT count(*) FROM runner_exits e WHERE e.session_id = s.id) AS exits,
                    (SELECT cause || coalesce(': ' || detail, '') FROM runner_exits e WHERE e.session_id = s.id ORDER BY rowid DESC LIMIT 1),
                    (SELECT exited_at FROM runner_exits e WHERE e.session_id = s.id ORDER BY rowid DESC LIMIT 1),
                    (SELECT CASE WHEN signal IS NOT NULL THEN 'signal ' || signal WHEN exit_code IS NOT NULL THEN 'exit code ' || exit_code END
                       FROM runner_exits e WHERE e.session_id = s.id ORDER BY rowid DESC LIMIT 1)
             FROM sessions s ORDER BY s.created_at",
        )?;
        let rows = s
            .query_map([], |r| {
                Ok(serde_json::json!({
                    "id": r.get::<_, String>(0)?,
                    "agent_group": r.get::<_, String>(1)?,
                    "messaging_group": r.get::<_, Option<String>>(2)?,
                    "thread": r.get::<_, Option<String>>(3)?,
                    "status": r.get::<_, String>(4)?,
                    "runner": r.get::<_, String>(5)?,
                    "runner_id": r.get::<_, Option<String>>(6)?,
                    "last_active": r.get::<_, Option<String>>(7)?,
                    "quarantined_at": r.get::<_, Option<String>>(8)?,
                    "quarantine_reason": r.get::<_, Option<String>>(9)?,
                    "exits": r.get::<_, i64>(10)?,
                    "last_exit": r.get::<_, Option<String>>(11)?,
                    "last_exit_at": r.get::<_, Option<String>>(12)?,
                    "last_exit_status": r.get::<_, Option<String>>(13)?,
                }))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }
}
