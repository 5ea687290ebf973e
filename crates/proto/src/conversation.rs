//! The runner's statements on `conversation` in `outbound.db`: the record
//! of each continuation's messages, tool steps and compaction summaries
//! (roles `user`, `assistant`, `step`, `summary`; what they mean is the
//! runner's `history` module).

use rusqlite::{params, Connection, Transaction};

use crate::ProtoError;

/// One row of the conversation.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    pub idx: i64,
    pub role: String,
    pub content: String,
    pub created_at: String,
}

/// What a continuation holds: its compaction summaries and user messages
/// (counted), and the newest summary's content.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Counts {
    pub summaries: i64,
    pub user_messages: i64,
    pub last_summary: Option<String>,
}

/// The counts of a continuation, in one read.
pub fn counts(conn: &Connection, continuation: &str) -> Result<Counts, ProtoError> {
    conn.query_row(
        "SELECT (SELECT count(*) FROM conversation WHERE continuation = ?1 AND role = 'summary'),
                (SELECT count(*) FROM conversation WHERE continuation = ?1 AND role = 'user'),
                (SELECT content FROM conversation WHERE continuation = ?1 AND role = 'summary' ORDER BY idx DESC LIMIT 1)",
        [continuation],
        |r| {
            Ok(Counts {
                summaries: r.get(0)?,
                user_messages: r.get(1)?,
                last_summary: r.get(2)?,
            })
        },
    )
    .map_err(ProtoError::sqlite("reading the conversation"))
}

/// The continuation's `user`, `assistant` and `step` rows from `idx` on,
/// oldest first.
pub fn rows_from(conn: &Connection, continuation: &str, from: i64) -> Result<Vec<Row>, ProtoError> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT idx, role, content, created_at FROM conversation
             WHERE continuation = ?1 AND idx >= ?2 AND role IN ('user', 'assistant', 'step') ORDER BY idx",
        )
        .map_err(ProtoError::sqlite("reading the conversation"))?;
    let rows = stmt
        .query_map(params![continuation, from], |r| {
            Ok(Row {
                idx: r.get(0)?,
                role: r.get(1)?,
                content: r.get(2)?,
                created_at: r.get(3)?,
            })
        })
        .map_err(ProtoError::sqlite("reading the conversation"))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(ProtoError::sqlite("reading the conversation"))?;
    Ok(rows)
}

/// Appends `(role, content)` rows after the continuation's last `idx`, in
/// the caller's transaction; returns the first new `idx`.
pub fn append(
    tx: &Transaction<'_>,
    continuation: &str,
    msgs: &[(&str, &str)],
    now: &str,
) -> Result<i64, ProtoError> {
    let next: i64 = tx
        .query_row(
            "SELECT coalesce(max(idx), -1) + 1 FROM conversation WHERE continuation = ?1",
            [continuation],
            |r| r.get(0),
        )
        .map_err(ProtoError::sqlite("appending to the conversation"))?;
    for (i, (role, content)) in msgs.iter().enumerate() {
        tx.execute(
            "INSERT INTO conversation (continuation, idx, role, content, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![continuation, next + i as i64, role, content, now],
        )
        .map_err(ProtoError::sqlite("appending to the conversation"))?;
    }
    Ok(next)
}
