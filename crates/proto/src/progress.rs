//! The runner's writes of `container_state` in `outbound.db`: the one row
//! (`id = 1`) saying which runner owns the session, when its turn started,
//! when it last made progress and which tool is in flight. The host reads
//! it with [`crate::outbound::progress`] for its stuck check.
//!
//! Every update names the runner (`runner_id = ?`), so a runner that lost
//! the session to a newer one cannot overwrite the newer one's state.

use rusqlite::{params, Connection, Transaction};

use crate::ProtoError;

/// A claim's turn starts: the row becomes this runner's, the turn started
/// and progress made `now`, with `in_flight` (a name and declared timeout,
/// e.g. the model call the turn begins with) or nothing in flight. In the
/// claim's transaction.
pub fn begin_turn(
    tx: &Transaction<'_>,
    runner_id: &str,
    now: &str,
    in_flight: Option<(&str, i64)>,
) -> Result<(), ProtoError> {
    let (name, timeout_ms, started) = match in_flight {
        Some((n, ms)) => (Some(n), Some(ms), Some(now)),
        None => (None, None, None),
    };
    tx.execute(
        "INSERT INTO container_state (id, runner_id, current_tool, tool_declared_timeout_ms, tool_started_at,
           turn_started_at, last_progress_at, updated_at) VALUES (1, ?1, ?2, ?3, ?4, ?5, ?5, ?5)
         ON CONFLICT(id) DO UPDATE SET runner_id=excluded.runner_id, current_tool=excluded.current_tool,
           tool_declared_timeout_ms=excluded.tool_declared_timeout_ms, tool_started_at=excluded.tool_started_at,
           turn_started_at=excluded.turn_started_at, last_progress_at=excluded.last_progress_at,
           updated_at=excluded.updated_at",
        params![runner_id, name, timeout_ms, started, now],
    )
    .map_err(ProtoError::sqlite("writing container state"))?;
    Ok(())
}

/// The turn is over (in the transaction that commits its outcome); nothing
/// of it is in flight any more.
pub fn end_turn(tx: &Transaction<'_>, runner_id: &str, now: &str) -> Result<(), ProtoError> {
    tx.execute(
        "UPDATE container_state SET turn_started_at = NULL, current_tool = NULL, tool_declared_timeout_ms = NULL,
           tool_started_at = NULL, last_progress_at = ?1, updated_at = ?1 WHERE id = 1 AND runner_id = ?2",
        [now, runner_id],
    )
    .map_err(ProtoError::sqlite("writing container state"))?;
    Ok(())
}

/// The turn made progress `now` (a provider event, a tool step, a retry).
pub fn touch(conn: &Connection, runner_id: &str, now: &str) -> Result<(), ProtoError> {
    conn.execute(
        "UPDATE container_state SET last_progress_at = ?1, updated_at = ?1 WHERE id = 1 AND runner_id = ?2",
        [now, runner_id],
    )
    .map_err(ProtoError::sqlite("writing container state"))?;
    Ok(())
}

/// Records a tool in flight (its name and declared timeout, started `now`;
/// the host widens its stuck tolerance by the timeout), or with `None`
/// clears it. Progress is made `now` either way.
pub fn set_tool(
    conn: &Connection,
    runner_id: &str,
    tool: Option<(&str, i64)>,
    now: &str,
) -> Result<(), ProtoError> {
    let (name, timeout_ms, started) = match tool {
        Some((n, ms)) => (Some(n), Some(ms), Some(now)),
        None => (None, None, None),
    };
    conn.execute(
        "UPDATE container_state SET current_tool = ?1, tool_declared_timeout_ms = ?2, tool_started_at = ?3,
           last_progress_at = ?4, updated_at = ?4 WHERE id = 1 AND runner_id = ?5",
        params![name, timeout_ms, started, now, runner_id],
    )
    .map_err(ProtoError::sqlite("recording the tool in flight"))?;
    Ok(())
}
