//! Scheduled tasks as rows of `messages_in` (`kind = 'task'`, SPEC §7.4):
//! the statements the host runs for the agent's task actions and for the
//! next occurrence of a recurring task. A task is addressed by its
//! occurrence id or its series id; "live" means `pending` or `paused`.
//!
//! Writers take a [`Transaction`] begun with [`crate::open::write_tx`] on
//! `inbound.db` (host only); readers take any connection.

use rusqlite::{params, Connection, OptionalExtension, Transaction};

use crate::ProtoError;

/// What the next occurrence of a finished row is made from.
#[derive(Clone, Debug, PartialEq)]
pub struct Occurrence {
    pub kind: String,
    /// When this occurrence was scheduled (its `process_after`).
    pub process_after: Option<String>,
    pub recurrence: Option<String>,
    pub series_id: Option<String>,
    pub content: String,
    pub channel_type: Option<String>,
    pub platform_id: Option<String>,
    pub thread_id: Option<String>,
}

/// The row `id` as a task occurrence (any kind; the caller checks).
pub fn occurrence(conn: &Connection, id: &str) -> Result<Option<Occurrence>, ProtoError> {
    conn.query_row(
        "SELECT kind, process_after, recurrence, series_id, content, channel_type, platform_id, thread_id FROM messages_in WHERE id = ?1",
        [id],
        |r| {
            Ok(Occurrence {
                kind: r.get(0)?,
                process_after: r.get(1)?,
                recurrence: r.get(2)?,
                series_id: r.get(3)?,
                content: r.get(4)?,
                channel_type: r.get(5)?,
                platform_id: r.get(6)?,
                thread_id: r.get(7)?,
            })
        },
    )
    .optional()
    .map_err(ProtoError::sqlite("reading a task occurrence"))
}

/// A status change of a task action (cancel, pause, resume).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transition {
    /// live → `cancelled`
    Cancel,
    /// `pending` → `paused`
    Pause,
    /// `paused` → `pending`
    Resume,
}

impl Transition {
    /// The status the rows end in.
    pub fn to(self) -> &'static str {
        match self {
            Transition::Cancel => "cancelled",
            Transition::Pause => "paused",
            Transition::Resume => "pending",
        }
    }
}

/// Moves the task rows of `key` (id or series id) through `t`; returns how
/// many rows changed.
pub fn transition(tx: &Transaction<'_>, key: &str, t: Transition) -> Result<usize, ProtoError> {
    let sql = match t {
        Transition::Cancel => "UPDATE messages_in SET status = ?2 WHERE kind = 'task' AND (id = ?1 OR series_id = ?1) AND status IN ('pending', 'paused')",
        Transition::Pause => "UPDATE messages_in SET status = ?2 WHERE kind = 'task' AND (id = ?1 OR series_id = ?1) AND status IN ('pending')",
        Transition::Resume => "UPDATE messages_in SET status = ?2 WHERE kind = 'task' AND (id = ?1 OR series_id = ?1) AND status IN ('paused')",
    };
    tx.execute(sql, params![key, t.to()])
        .map_err(ProtoError::sqlite("changing a task's status"))
}

/// The earliest `process_after` of the pending task rows of `key`.
pub fn next_due(conn: &Connection, key: &str) -> Result<Option<String>, ProtoError> {
    conn.query_row(
        "SELECT min(process_after) FROM messages_in WHERE kind = 'task' AND (id = ?1 OR series_id = ?1) AND status = 'pending'",
        [key],
        |r| r.get::<_, Option<String>>(0),
    )
    .map_err(ProtoError::sqlite("reading a task's next time"))
}

/// The newest live row of `key`: (id, content).
pub fn newest_live(conn: &Connection, key: &str) -> Result<Option<(String, String)>, ProtoError> {
    conn.query_row(
        "SELECT id, content FROM messages_in WHERE kind = 'task' AND (id = ?1 OR series_id = ?1) AND status IN ('pending', 'paused')
         ORDER BY seq DESC LIMIT 1",
        [key],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
    .optional()
    .map_err(ProtoError::sqlite("reading a live task"))
}

pub fn set_recurrence(tx: &Transaction<'_>, id: &str, recurrence: &str) -> Result<(), ProtoError> {
    tx.execute(
        "UPDATE messages_in SET recurrence = ?2 WHERE id = ?1",
        params![id, recurrence],
    )
    .map_err(ProtoError::sqlite("updating a task's recurrence"))?;
    Ok(())
}

pub fn set_content(tx: &Transaction<'_>, id: &str, content: &str) -> Result<(), ProtoError> {
    tx.execute(
        "UPDATE messages_in SET content = ?2 WHERE id = ?1",
        params![id, content],
    )
    .map_err(ProtoError::sqlite("updating a task's content"))?;
    Ok(())
}

pub fn set_process_after(tx: &Transaction<'_>, id: &str, at: &str) -> Result<(), ProtoError> {
    tx.execute(
        "UPDATE messages_in SET process_after = ?2 WHERE id = ?1",
        params![id, at],
    )
    .map_err(ProtoError::sqlite("updating a task's time"))?;
    Ok(())
}

/// A live task row as `list_tasks` and `pinch admin tasks list` show it.
#[derive(Clone, Debug, PartialEq)]
pub struct LiveTask {
    pub id: String,
    pub series_id: Option<String>,
    pub status: String,
    pub process_after: Option<String>,
    pub recurrence: Option<String>,
    pub content: String,
}

/// Every live task row, soonest first.
pub fn live(conn: &Connection) -> Result<Vec<LiveTask>, ProtoError> {
    let mut st = conn
        .prepare(
            "SELECT id, series_id, status, process_after, recurrence, content FROM messages_in
             WHERE kind = 'task' AND status IN ('pending', 'paused') ORDER BY process_after, seq",
        )
        .map_err(ProtoError::sqlite("reading live tasks"))?;
    let rows = st
        .query_map([], |r| {
            Ok(LiveTask {
                id: r.get(0)?,
                series_id: r.get(1)?,
                status: r.get(2)?,
                process_after: r.get(3)?,
                recurrence: r.get(4)?,
                content: r.get(5)?,
            })
        })
        .map_err(ProtoError::sqlite("reading live tasks"))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(ProtoError::sqlite("reading live tasks"))?;
    Ok(rows)
}

/// Whether a live task has `key` as its id or series id.
pub fn holds(conn: &Connection, key: &str) -> Result<bool, ProtoError> {
    Ok(conn
        .query_row(
            "SELECT 1 FROM messages_in WHERE kind = 'task' AND (id = ?1 OR series_id = ?1) AND status IN ('pending', 'paused') LIMIT 1",
            [key],
            |_| Ok(()),
        )
        .optional()
        .map_err(ProtoError::sqlite("looking up a task"))?
        .is_some())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::open::{open_writer, write_tx, DEFAULT_BUSY_TIMEOUT};
    use crate::rows::{insert_inbound, NewInbound};

    #[test]
    fn transitions_move_only_the_rows_they_name() {
        let d = tempfile::tempdir().unwrap();
        let mut c = open_writer(&d.path().join("inbound.db"), DEFAULT_BUSY_TIMEOUT).unwrap();
        crate::schema::migrate_inbound(&c).unwrap();
        let tx = write_tx(&mut c).unwrap();
        for (id, at) in [
            ("task:s1:a", "2030-01-02T00:00:00.000Z"),
            ("task:s1:b", "2030-01-01T00:00:00.000Z"),
        ] {
            let row = NewInbound {
                id: id.into(),
                kind: "task".into(),
                timestamp: "t".into(),
                process_after: Some(at.into()),
                content: "{}".into(),
                series_id: Some("s1".into()),
                ..Default::default()
            };
            insert_inbound(&tx, &row, 0).unwrap();
        }
        let chat = NewInbound {
            id: "s1".into(),
            kind: "chat".into(),
            timestamp: "t".into(),
            content: "{}".into(),
            ..Default::default()
        };
        insert_inbound(&tx, &chat, 0).unwrap();
        assert_eq!(transition(&tx, "s1", Transition::Resume).unwrap(), 0);
        assert_eq!(transition(&tx, "s1", Transition::Pause).unwrap(), 2);
        assert_eq!(next_due(&tx, "s1").unwrap(), None);
        assert!(holds(&tx, "task:s1:a").unwrap());
        assert_eq!(transition(&tx, "s1", Transition::Resume).unwrap(), 2);
        assert_eq!(
            next_due(&tx, "s1").unwrap().as_deref(),
            Some("2030-01-01T00:00:00.000Z")
        );
        assert_eq!(newest_live(&tx, "s1").unwrap().unwrap().0, "task:s1:b");
        assert_eq!(
            live(&tx).unwrap().len(),
            2,
            "the chat row named s1 is no task"
        );
        assert_eq!(transition(&tx, "s1", Transition::Cancel).unwrap(), 2);
        assert!(!holds(&tx, "s1").unwrap());
        assert_eq!(occurrence(&tx, "s1").unwrap().unwrap().kind, "chat");
        tx.commit().unwrap();
    }
}
