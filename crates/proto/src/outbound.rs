//! Reads of `outbound.db` beyond the shared row queries of [`crate::rows`]:
//! the host's (the runner's progress, and the lookups of delivery, history
//! and metrics) and the runner's look-ups of its own messages. The host
//! never writes this file.

use rusqlite::{params, Connection, OptionalExtension};

use crate::schema::{self, columns, select_list};
use crate::ProtoError;

/// What `container_state` says of the runner's turn.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Progress {
    pub runner_id: Option<String>,
    pub last_progress_at: Option<String>,
    pub tool_started_at: Option<String>,
    pub tool_declared_timeout_ms: Option<i64>,
    /// The tool in flight (or the model call, `runner::MODEL_CALL`).
    pub current_tool: Option<String>,
    pub turn_started_at: Option<String>,
}

/// The `container_state` row; `None` when the table or the row is absent
/// or unreadable (a file of an older runner reads with defaults).
pub fn progress(conn: &Connection) -> Result<Option<Progress>, ProtoError> {
    let have = columns(conn, schema::CONTAINER_STATE.name)?;
    if have.is_empty() {
        return Ok(None);
    }
    let sql = format!(
        "SELECT {} FROM container_state WHERE id = 1",
        select_list(
            &have,
            &[
                "runner_id",
                "last_progress_at",
                "tool_started_at",
                "tool_declared_timeout_ms",
                "current_tool",
                "turn_started_at"
            ]
        )
    );
    Ok(conn
        .query_row(&sql, [], |r| {
            Ok(Progress {
                runner_id: r.get(0)?,
                last_progress_at: r.get(1)?,
                tool_started_at: r.get(2)?,
                tool_declared_timeout_ms: r.get(3)?,
                current_tool: r.get(4)?,
                turn_started_at: r.get(5)?,
            })
        })
        .ok())
}

/// Whether the agent wrote any row in reply to `in_id`.
pub fn answered(conn: &Connection, in_id: &str) -> Result<bool, ProtoError> {
    Ok(conn
        .query_row(
            "SELECT 1 FROM messages_out WHERE in_reply_to = ?1 LIMIT 1",
            [in_id],
            |_| Ok(()),
        )
        .optional()
        .map_err(ProtoError::sqlite("looking up a reply"))?
        .is_some())
}

/// (id, channel_type, platform_id, thread_id, in_reply_to) of the row with `seq`.
pub type SeqAddress = (
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
);

pub fn address_by_seq(conn: &Connection, seq: i64) -> Result<Option<SeqAddress>, ProtoError> {
    conn.query_row(
        "SELECT id, channel_type, platform_id, thread_id, in_reply_to FROM messages_out WHERE seq = ?1",
        [seq],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
    )
    .optional()
    .map_err(ProtoError::sqlite("reading a row by seq"))
}

/// How many rows the agent wrote.
pub fn count(conn: &Connection) -> Result<i64, ProtoError> {
    conn.query_row("SELECT count(*) FROM messages_out", [], |r| r.get(0))
        .map_err(ProtoError::sqlite("counting outbound rows"))
}

/// A chat row the agent wrote, as history shows it.
#[derive(Clone, Debug, PartialEq)]
pub struct ChatRow {
    pub id: String,
    pub seq: i64,
    pub timestamp: String,
    pub channel_type: Option<String>,
    pub platform_id: Option<String>,
    pub content: String,
}

/// The newest `limit` chat rows, newest first.
pub fn recent_chat(conn: &Connection, limit: i64) -> Result<Vec<ChatRow>, ProtoError> {
    let mut st = conn
        .prepare("SELECT id, seq, timestamp, channel_type, platform_id, content FROM messages_out WHERE kind = 'chat' ORDER BY seq DESC LIMIT ?1")
        .map_err(ProtoError::sqlite("reading chat history"))?;
    let rows = st
        .query_map(params![limit], |r| {
            Ok(ChatRow {
                id: r.get(0)?,
                seq: r.get(1)?,
                timestamp: r.get(2)?,
                channel_type: r.get(3)?,
                platform_id: r.get(4)?,
                content: r.get(5)?,
            })
        })
        .map_err(ProtoError::sqlite("reading chat history"))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(ProtoError::sqlite("reading chat history"))?;
    Ok(rows)
}

/// Whether `seq` is a chat message of this side (the runner's own: what
/// `edit_message` may edit).
pub fn is_chat(conn: &Connection, seq: i64) -> Result<bool, ProtoError> {
    Ok(conn
        .query_row(
            "SELECT seq FROM messages_out WHERE seq = ?1 AND kind = 'chat'",
            [seq],
            |r| r.get::<_, i64>(0),
        )
        .optional()
        .map_err(ProtoError::sqlite("reading messages"))?
        .is_some())
}

/// Whether `messages_out` has a row with this seq (any kind).
pub fn has_seq(conn: &Connection, seq: i64) -> Result<bool, ProtoError> {
    Ok(conn
        .query_row(
            "SELECT count(*) FROM messages_out WHERE seq = ?1",
            [seq],
            |r| r.get::<_, i64>(0),
        )
        .map_err(ProtoError::sqlite("reading messages"))?
        > 0)
}

/// The runner named on row `message_id`'s ack (its claim or outcome),
/// `None` while it has none. `pinch bench` watches claims with it.
pub fn ack_runner(conn: &Connection, message_id: &str) -> Result<Option<String>, ProtoError> {
    conn.query_row(
        "SELECT runner_id FROM processing_ack WHERE message_id = ?1",
        [message_id],
        |r| r.get(0),
    )
    .optional()
    .map_err(ProtoError::sqlite("reading an ack"))
}

/// Whether row `message_id` has an ack (a claim or an outcome).
pub fn has_ack(conn: &Connection, message_id: &str) -> Result<bool, ProtoError> {
    Ok(conn
        .query_row(
            "SELECT 1 FROM processing_ack WHERE message_id = ?1",
            [message_id],
            |_| Ok(()),
        )
        .optional()
        .map_err(ProtoError::sqlite("reading an ack"))?
        .is_some())
}
