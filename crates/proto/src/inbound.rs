//! The host's statements on `inbound.db` beyond the shared row queries of
//! [`crate::rows`]: the file's identity, the retry bookkeeping of orphaned
//! claims, and the reads of delivery, history and metrics.

use rusqlite::{params, Connection, OptionalExtension, Transaction};

use crate::ProtoError;

/// The `session_identity` row: (session id, generation), if written.
/// The caller checks first that the table exists ([`crate::schema::columns`]).
pub fn identity(conn: &Connection) -> Result<Option<(String, String)>, ProtoError> {
    conn.query_row(
        "SELECT session_id, generation FROM session_identity WHERE id = 1",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
    .optional()
    .map_err(ProtoError::sqlite("reading the session identity"))
}

/// Writes (or replaces) the `session_identity` row.
pub fn set_identity(
    tx: &Transaction<'_>,
    session_id: &str,
    generation: &str,
    now: &str,
) -> Result<(), ProtoError> {
    tx.execute(
        "INSERT OR REPLACE INTO session_identity (id, session_id, generation, created_at) VALUES (1, ?1, ?2, ?3)",
        params![session_id, generation, now],
    )
    .map_err(ProtoError::sqlite("writing the session identity"))?;
    Ok(())
}

/// A still-pending row is tried again later: its try count and due time.
/// Returns whether the row was pending (and changed).
pub fn schedule_retry(
    tx: &Transaction<'_>,
    id: &str,
    tries: i64,
    process_after: &str,
) -> Result<bool, ProtoError> {
    let n = tx
        .execute(
            "UPDATE messages_in SET tries = ?2, process_after = ?3 WHERE id = ?1 AND status = 'pending'",
            params![id, tries, process_after],
        )
        .map_err(ProtoError::sqlite("scheduling a retry"))?;
    Ok(n > 0)
}

/// A still-pending row failed for good after `tries`. Returns whether the
/// row was pending (and changed).
pub fn fail_after_tries(tx: &Transaction<'_>, id: &str, tries: i64) -> Result<bool, ProtoError> {
    let n = tx
        .execute(
            "UPDATE messages_in SET tries = ?2, status = 'failed' WHERE id = ?1 AND status = 'pending'",
            params![id, tries],
        )
        .map_err(ProtoError::sqlite("failing a row"))?;
    Ok(n > 0)
}

/// A still-pending row is cancelled (the user stopped its turn): no
/// runner takes it again. Returns whether the row was pending (and changed).
pub fn cancel_pending(tx: &Transaction<'_>, id: &str) -> Result<bool, ProtoError> {
    let n = tx
        .execute(
            "UPDATE messages_in SET status = 'cancelled' WHERE id = ?1 AND status = 'pending'",
            [id],
        )
        .map_err(ProtoError::sqlite("cancelling a row"))?;
    Ok(n > 0)
}

/// Whether `messages_in` has a row with this id (any status).
pub fn has_row(conn: &Connection, id: &str) -> Result<bool, ProtoError> {
    Ok(conn
        .query_row("SELECT 1 FROM messages_in WHERE id = ?1", [id], |_| Ok(()))
        .optional()
        .map_err(ProtoError::sqlite("looking up an inbound row"))?
        .is_some())
}

/// Whether `messages_in` has a row with this seq (any kind).
pub fn has_seq(conn: &Connection, seq: i64) -> Result<bool, ProtoError> {
    Ok(conn
        .query_row(
            "SELECT count(*) FROM messages_in WHERE seq = ?1",
            [seq],
            |r| r.get::<_, i64>(0),
        )
        .map_err(ProtoError::sqlite("reading messages"))?
        > 0)
}

/// Whether row `id` is `pending` (false when there is no such row).
pub fn is_pending(conn: &Connection, id: &str) -> Result<bool, ProtoError> {
    Ok(conn
        .query_row(
            "SELECT status = 'pending' FROM messages_in WHERE id = ?1",
            [id],
            |r| r.get::<_, bool>(0),
        )
        .optional()
        .map_err(ProtoError::sqlite("reading a row's status"))?
        .unwrap_or(false))
}

/// How many chat rows (`kind = 'chat'`) the file holds, any status.
pub fn count_chat(conn: &Connection) -> Result<i64, ProtoError> {
    conn.query_row(
        "SELECT count(*) FROM messages_in WHERE kind = 'chat'",
        [],
        |r| r.get(0),
    )
    .map_err(ProtoError::sqlite("counting chat rows"))
}

/// How many rows wait to trigger a turn (`pending`, `trigger = 1`).
pub fn count_pending_triggers(conn: &Connection) -> Result<i64, ProtoError> {
    conn.query_row(
        "SELECT count(*) FROM messages_in WHERE status = 'pending' AND trigger = 1",
        [],
        |r| r.get(0),
    )
    .map_err(ProtoError::sqlite("counting pending rows"))
}

/// (kind, content, channel_type, platform_id) of the row with `seq`.
pub type SeqRow = (String, String, Option<String>, Option<String>);

pub fn by_seq(conn: &Connection, seq: i64) -> Result<Option<SeqRow>, ProtoError> {
    conn.query_row(
        "SELECT kind, content, channel_type, platform_id FROM messages_in WHERE seq = ?1",
        [seq],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
    )
    .optional()
    .map_err(ProtoError::sqlite("reading a row by seq"))
}

/// The newest `limit` chat rows from any conversation: (timestamp,
/// content), newest first (a session's detail on the dashboard).
pub fn recent_chat(conn: &Connection, limit: i64) -> Result<Vec<(String, String)>, ProtoError> {
    let mut st = conn
        .prepare("SELECT timestamp, content FROM messages_in WHERE kind = 'chat' ORDER BY seq DESC LIMIT ?1")
        .map_err(ProtoError::sqlite("reading recent chat"))?;
    let rows = st
        .query_map(params![limit], |r| Ok((r.get(0)?, r.get(1)?)))
        .map_err(ProtoError::sqlite("reading recent chat"))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(ProtoError::sqlite("reading recent chat"))?;
    Ok(rows)
}

/// The newest `limit` chat rows from one conversation: (timestamp, content),
/// newest first.
pub fn chat_from(
    conn: &Connection,
    channel_type: &str,
    platform_id: &str,
    limit: i64,
) -> Result<Vec<(String, String)>, ProtoError> {
    let mut st = conn
        .prepare(
            "SELECT timestamp, content FROM messages_in WHERE kind = 'chat' AND channel_type = ?1 AND platform_id = ?2 ORDER BY seq DESC LIMIT ?3",
        )
        .map_err(ProtoError::sqlite("reading chat history"))?;
    let rows = st
        .query_map(params![channel_type, platform_id, limit], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .map_err(ProtoError::sqlite("reading chat history"))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(ProtoError::sqlite("reading chat history"))?;
    Ok(rows)
}
