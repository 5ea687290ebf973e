//! The central-DB statements of `pinch admin repair` (rebuilding rows from
//! the session folders) and of its health probe. The decisions (what to
//! adopt, what to report) stay in [`crate::repair`].

use std::collections::HashSet;
use std::path::Path;

use anyhow::Result;
use pinch_proto::rusqlite::{params, Connection, OpenFlags, OptionalExtension, Transaction};

/// Whether `path` is a bootstrapped central DB that passes `quick_check`
/// (opened read-only; any failure is "no").
pub fn healthy(path: &Path) -> bool {
    if std::fs::metadata(path).map(|m| m.len()).unwrap_or(0) == 0 {
        return false;
    }
    let Ok(c) = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY) else {
        return false;
    };
    let ok = c
        .query_row("PRAGMA quick_check", [], |r| r.get::<_, String>(0))
        .is_ok_and(|v| v == "ok");
    ok && c
        .query_row("SELECT 1 FROM meta WHERE key = 'bootstrapped'", [], |_| {
            Ok(())
        })
        .is_ok()
}

/// The ids of every session row (any status).
pub fn session_ids(conn: &Connection) -> Result<HashSet<String>> {
    let mut st = conn.prepare("SELECT id FROM sessions")?;
    let ids = st
        .query_map([], |r| r.get::<_, String>(0))?
        .collect::<Result<_, _>>()?;
    Ok(ids)
}

/// The messaging group of an address, if one exists.
pub fn messaging_group_id(tx: &Transaction<'_>, ct: &str, pid: &str) -> Result<Option<String>> {
    Ok(tx
        .query_row(
            "SELECT id FROM messaging_groups WHERE channel_type = ?1 AND platform_id = ?2",
            params![ct, pid],
            |r| r.get(0),
        )
        .optional()?)
}

/// A messaging group rebuilt from a session folder: unnamed, unknown
/// senders `strict`.
pub fn insert_recovered_messaging_group(
    tx: &Transaction<'_>,
    id: &str,
    ct: &str,
    pid: &str,
    at: &str,
) -> Result<()> {
    tx.execute(
        "INSERT INTO messaging_groups (id, channel_type, platform_id, name, is_group, unknown_sender_policy, created_at)
         VALUES (?1, ?2, ?3, NULL, 0, 'strict', ?4)",
        params![id, ct, pid, at],
    )?;
    Ok(())
}

pub fn agent_group_exists(tx: &Transaction<'_>, ag: &str) -> Result<bool> {
    Ok(tx
        .query_row("SELECT 1 FROM agent_groups WHERE id = ?1", [ag], |_| Ok(()))
        .optional()?
        .is_some())
}

/// An agent group rebuilt from a session folder, with default settings.
pub fn insert_recovered_agent_group(
    tx: &Transaction<'_>,
    ag: &str,
    folder: &str,
    at: &str,
) -> Result<()> {
    tx.execute(
        "INSERT INTO agent_groups (id, name, folder, provider, created_at) VALUES (?1, ?2, ?3, NULL, ?4)",
        params![ag, folder, folder, at],
    )?;
    tx.execute(
        "INSERT INTO agent_configs (agent_group_id, updated_at) VALUES (?1, ?2)",
        params![ag, at],
    )?;
    Ok(())
}

/// Adds a destination unless the group already has one by that name;
/// returns whether it was added.
pub fn insert_destination_if_absent(
    tx: &Transaction<'_>,
    ag: &str,
    local_name: &str,
    kind: &str,
    target: &str,
    at: &str,
) -> Result<bool> {
    let n = tx.execute(
        "INSERT OR IGNORE INTO agent_destinations (agent_group_id, local_name, target_type, target_id, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![ag, local_name, kind, target, at],
    )?;
    Ok(n > 0)
}

pub fn is_wired(tx: &Transaction<'_>, mg: &str, ag: &str) -> Result<bool> {
    Ok(tx
        .query_row(
            "SELECT 1 FROM wirings WHERE messaging_group_id = ?1 AND agent_group_id = ?2",
            params![mg, ag],
            |_| Ok(()),
        )
        .optional()?
        .is_some())
}

/// Whether (ag, mg, thread) already has an active session.
pub fn active_session_taken(
    tx: &Transaction<'_>,
    ag: &str,
    mg: Option<&str>,
    thread: Option<&str>,
) -> Result<bool> {
    Ok(tx
        .query_row(
            "SELECT 1 FROM sessions WHERE status = 'active' AND agent_group_id = ?1
               AND coalesce(messaging_group_id, '') = coalesce(?2, '') AND coalesce(thread_id, '') = coalesce(?3, '')",
            params![ag, mg, thread],
            |_| Ok(()),
        )
        .optional()?
        .is_some())
}

/// A session row rebuilt from its folder (runner stopped).
pub fn insert_recovered_session(
    tx: &Transaction<'_>,
    id: &str,
    ag: &str,
    mg: Option<&str>,
    thread: Option<&str>,
    status: &str,
    at: &str,
) -> Result<()> {
    tx.execute(
        "INSERT INTO sessions (id, agent_group_id, messaging_group_id, thread_id, provider, status, runner_status, last_active, created_at)
         VALUES (?1, ?2, ?3, ?4, NULL, ?5, 'stopped', ?6, ?6)",
        params![id, ag, mg, thread, status, at],
    )?;
    Ok(())
}
