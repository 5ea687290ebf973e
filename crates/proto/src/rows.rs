//! Typed rows and the queries host and runner run on session DBs.
//!
//! Writers (`insert_*`, `ack_*`, `ledger_*`) take a [`Transaction`] begun with
//! [`crate::open::write_tx`]; readers take any connection and name their
//! columns through [`crate::schema::select_list`] so an older file reads with
//! defaults.

use rusqlite::{params, Connection, OptionalExtension, Row, Transaction};

use crate::schema::{self, columns, select_list};
use crate::seq::{self, Owner};
use crate::ProtoError;

/// Terminal and non-terminal statuses of `messages_in`.
pub mod status {
    pub const PENDING: &str = "pending";
    pub const COMPLETED: &str = "completed";
    pub const FAILED: &str = "failed";
    pub const PAUSED: &str = "paused";
    pub const CANCELLED: &str = "cancelled";
    /// `processing_ack` only: claimed by a runner, not finished.
    pub const PROCESSING: &str = "processing";
    /// `delivered` ledger.
    pub const SENDING: &str = "sending";
    pub const DELIVERED: &str = "delivered";
}

#[derive(Clone, Debug, PartialEq)]
pub struct InboundRow {
    pub id: String,
    pub seq: i64,
    pub kind: String,
    pub timestamp: String,
    pub status: String,
    pub process_after: Option<String>,
    pub recurrence: Option<String>,
    pub series_id: Option<String>,
    pub tries: i64,
    pub trigger: bool,
    pub platform_id: Option<String>,
    pub channel_type: Option<String>,
    pub thread_id: Option<String>,
    pub content: String,
    pub source_session_id: Option<String>,
    pub on_wake: bool,
}

const IN_COLS: &[&str] = &[
    "id",
    "seq",
    "kind",
    "timestamp",
    "status",
    "process_after",
    "recurrence",
    "series_id",
    "tries",
    "trigger",
    "platform_id",
    "channel_type",
    "thread_id",
    "content",
    "source_session_id",
    "on_wake",
];

impl InboundRow {
    fn from_row(r: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(InboundRow {
            id: r.get(0)?,
            seq: r.get(1)?,
            kind: r.get(2)?,
            timestamp: r.get(3)?,
            status: r.get(4)?,
            process_after: r.get(5)?,
            recurrence: r.get(6)?,
            series_id: r.get(7)?,
            tries: r.get::<_, Option<i64>>(8)?.unwrap_or(0),
            trigger: r.get::<_, Option<i64>>(9)?.unwrap_or(1) != 0,
            platform_id: r.get(10)?,
            channel_type: r.get(11)?,
            thread_id: r.get(12)?,
            content: r.get(13)?,
            source_session_id: r.get(14)?,
            on_wake: r.get::<_, Option<i64>>(15)?.unwrap_or(0) != 0,
        })
    }
}

/// A row the host is about to write into `messages_in`.
#[derive(Clone, Debug, Default)]
pub struct NewInbound {
    pub id: String,
    pub kind: String,
    pub timestamp: String,
    pub process_after: Option<String>,
    pub trigger: bool,
    pub platform_id: Option<String>,
    pub channel_type: Option<String>,
    pub thread_id: Option<String>,
    pub content: String,
    pub source_session_id: Option<String>,
    pub on_wake: bool,
    /// Tasks: the cron expression and the series the occurrences share.
    pub recurrence: Option<String>,
    pub series_id: Option<String>,
}

/// Inserts an inbound row with the next even seq. An id that already exists
/// is a no-op (a redelivered platform message is harmless): returns `None`.
pub fn insert_inbound(
    tx: &Transaction<'_>,
    row: &NewInbound,
    out_max: i64,
) -> Result<Option<i64>, ProtoError> {
    let exists: Option<i64> = tx
        .query_row(
            "SELECT seq FROM messages_in WHERE id = ?1",
            [&row.id],
            |r| r.get(0),
        )
        .optional()
        .map_err(ProtoError::sqlite("checking inbound id"))?;
    if exists.is_some() {
        return Ok(None);
    }
    let seq = seq::next(tx, Owner::Host, out_max)?;
    tx.execute(
        // Plain INSERT: the id check above makes redelivery harmless, and
        // OR IGNORE would also swallow a CHECK/UNIQUE failure on seq.
        "INSERT INTO messages_in (id, seq, kind, timestamp, status, process_after, trigger,
           platform_id, channel_type, thread_id, content, source_session_id, on_wake, recurrence, series_id)
         VALUES (?1, ?2, ?3, ?4, 'pending', ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
        params![
            row.id,
            seq,
            row.kind,
            row.timestamp,
            row.process_after,
            row.trigger as i64,
            row.platform_id,
            row.channel_type,
            row.thread_id,
            row.content,
            row.source_session_id,
            row.on_wake as i64,
            row.recurrence,
            row.series_id
        ],
    )
    .map_err(ProtoError::sqlite("inserting inbound row"))?;
    Ok(Some(seq))
}

/// All `pending` inbound rows in seq order (the runner filters due ones).
pub fn pending_inbound(conn: &Connection) -> Result<Vec<InboundRow>, ProtoError> {
    let have = columns(conn, schema::MESSAGES_IN.name)?;
    let sql = format!(
        "SELECT {} FROM messages_in WHERE status = 'pending' ORDER BY seq",
        select_list(&have, IN_COLS)
    );
    let mut stmt = conn
        .prepare(&sql)
        .map_err(ProtoError::sqlite("reading pending inbound"))?;
    let rows = stmt
        .query_map([], InboundRow::from_row)
        .map_err(ProtoError::sqlite("reading pending inbound"))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(ProtoError::sqlite("reading pending inbound"))?;
    Ok(rows)
}

/// Inbound rows by id (any status).
pub fn inbound_by_ids(conn: &Connection, ids: &[String]) -> Result<Vec<InboundRow>, ProtoError> {
    let have = columns(conn, schema::MESSAGES_IN.name)?;
    let sql = format!(
        "SELECT {} FROM messages_in WHERE id = ?1",
        select_list(&have, IN_COLS)
    );
    let mut stmt = conn
        .prepare(&sql)
        .map_err(ProtoError::sqlite("reading inbound"))?;
    let mut out = Vec::new();
    for id in ids {
        if let Some(r) = stmt
            .query_row([id], InboundRow::from_row)
            .optional()
            .map_err(ProtoError::sqlite("reading inbound"))?
        {
            out.push(r);
        }
    }
    Ok(out)
}

/// Sets the status of inbound rows (host only: ack sync, retries).
pub fn set_inbound_status(
    tx: &Transaction<'_>,
    id: &str,
    status: &str,
) -> Result<bool, ProtoError> {
    let n = tx
        .execute(
            "UPDATE messages_in SET status = ?2 WHERE id = ?1 AND status <> ?2",
            params![id, status],
        )
        .map_err(ProtoError::sqlite("updating inbound status"))?;
    Ok(n > 0)
}

#[derive(Clone, Debug, PartialEq)]
pub struct OutboundRow {
    pub id: String,
    pub seq: i64,
    pub in_reply_to: Option<String>,
    pub timestamp: String,
    pub deliver_after: Option<String>,
    pub kind: String,
    pub platform_id: Option<String>,
    pub channel_type: Option<String>,
    pub thread_id: Option<String>,
    pub content: String,
}

const OUT_COLS: &[&str] = &[
    "id",
    "seq",
    "in_reply_to",
    "timestamp",
    "deliver_after",
    "kind",
    "platform_id",
    "channel_type",
    "thread_id",
    "content",
];

impl OutboundRow {
    fn from_row(r: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(OutboundRow {
            id: r.get(0)?,
            seq: r.get(1)?,
            in_reply_to: r.get(2)?,
            timestamp: r.get(3)?,
            deliver_after: r.get(4)?,
            kind: r.get(5)?,
            platform_id: r.get(6)?,
            channel_type: r.get(7)?,
            thread_id: r.get(8)?,
            content: r.get(9)?,
        })
    }
}

/// A row the runner is about to write into `messages_out`.
#[derive(Clone, Debug, Default)]
pub struct NewOutbound {
    pub id: String,
    pub in_reply_to: Option<String>,
    pub timestamp: String,
    pub deliver_after: Option<String>,
    pub kind: String,
    pub platform_id: Option<String>,
    pub channel_type: Option<String>,
    pub thread_id: Option<String>,
    pub content: String,
}

/// Inserts an outbound row with the next odd seq (runner only).
pub fn insert_outbound(
    tx: &Transaction<'_>,
    row: &NewOutbound,
    in_max: i64,
) -> Result<i64, ProtoError> {
    let seq = seq::next(tx, Owner::Runner, in_max)?;
    tx.execute(
        "INSERT INTO messages_out (id, seq, in_reply_to, timestamp, deliver_after, kind, platform_id,
           channel_type, thread_id, content) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        params![
            row.id,
            seq,
            row.in_reply_to,
            row.timestamp,
            row.deliver_after,
            row.kind,
            row.platform_id,
            row.channel_type,
            row.thread_id,
            row.content
        ],
    )
    .map_err(ProtoError::sqlite("inserting outbound row"))?;
    Ok(seq)
}

/// Outbound rows with seq above `after`, in seq order.
pub fn outbound_after(conn: &Connection, after: i64) -> Result<Vec<OutboundRow>, ProtoError> {
    let have = columns(conn, schema::MESSAGES_OUT.name)?;
    if have.is_empty() {
        return Ok(Vec::new());
    }
    let sql = format!(
        "SELECT {} FROM messages_out WHERE seq > ?1 ORDER BY seq",
        select_list(&have, OUT_COLS)
    );
    let mut stmt = conn
        .prepare(&sql)
        .map_err(ProtoError::sqlite("reading outbound"))?;
    let rows = stmt
        .query_map([after], OutboundRow::from_row)
        .map_err(ProtoError::sqlite("reading outbound"))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(ProtoError::sqlite("reading outbound"))?;
    Ok(rows)
}

#[derive(Clone, Debug, PartialEq)]
pub struct AckRow {
    pub message_id: String,
    pub status: String,
    pub runner_id: String,
    pub status_changed: String,
    pub reason: Option<String>,
}

/// Every row of `processing_ack` (empty if the table does not exist yet).
pub fn acks(conn: &Connection) -> Result<Vec<AckRow>, ProtoError> {
    let have = columns(conn, schema::PROCESSING_ACK.name)?;
    if have.is_empty() {
        return Ok(Vec::new());
    }
    let sql = format!(
        "SELECT {} FROM processing_ack",
        select_list(
            &have,
            &[
                "message_id",
                "status",
                "runner_id",
                "status_changed",
                "reason"
            ]
        )
    );
    let mut stmt = conn
        .prepare(&sql)
        .map_err(ProtoError::sqlite("reading acks"))?;
    let rows = stmt
        .query_map([], |r| {
            Ok(AckRow {
                message_id: r.get(0)?,
                status: r.get(1)?,
                runner_id: r.get(2)?,
                status_changed: r.get(3)?,
                reason: r.get(4)?,
            })
        })
        .map_err(ProtoError::sqlite("reading acks"))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(ProtoError::sqlite("reading acks"))?;
    Ok(rows)
}

/// Claims rows for a runner (`processing`). Runner only.
pub fn claim(
    tx: &Transaction<'_>,
    ids: &[&str],
    runner_id: &str,
    now: &str,
) -> Result<(), ProtoError> {
    let mut stmt = tx
        .prepare_cached(
            "INSERT INTO processing_ack (message_id, status, runner_id, status_changed) VALUES (?1, 'processing', ?2, ?3)
             ON CONFLICT(message_id) DO UPDATE SET status='processing', runner_id=excluded.runner_id,
               status_changed=excluded.status_changed, reason=NULL",
        )
        .map_err(ProtoError::sqlite("claiming"))?;
    for id in ids {
        stmt.execute(params![id, runner_id, now])
            .map_err(ProtoError::sqlite("claiming"))?;
    }
    Ok(())
}

/// Records a terminal outcome (`completed`/`failed`) for a row. Runner only.
pub fn ack(
    tx: &Transaction<'_>,
    id: &str,
    status: &str,
    runner_id: &str,
    now: &str,
    reason: Option<&str>,
) -> Result<(), ProtoError> {
    tx.execute(
        "INSERT INTO processing_ack (message_id, status, runner_id, status_changed, reason) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT(message_id) DO UPDATE SET status=excluded.status, runner_id=excluded.runner_id,
           status_changed=excluded.status_changed, reason=excluded.reason",
        params![id, status, runner_id, now, reason],
    )
    .map_err(ProtoError::sqlite("acking"))?;
    Ok(())
}

/// Drops a row's `processing` claim (one of an earlier runner's, which the
/// host has re-queued); a terminal ack stays. Runner only.
pub fn drop_claim(tx: &Transaction<'_>, id: &str) -> Result<(), ProtoError> {
    tx.execute(
        "DELETE FROM processing_ack WHERE message_id = ?1 AND status = 'processing'",
        [id],
    )
    .map_err(ProtoError::sqlite("clearing stale claims"))?;
    Ok(())
}

/// Deletes the `completed` acks of these rows (the host has synced them);
/// failed acks stay, their reason is the record of why. Runner only.
pub fn prune_completed(tx: &Transaction<'_>, ids: &[String]) -> Result<(), ProtoError> {
    let mut stmt = tx
        .prepare_cached("DELETE FROM processing_ack WHERE message_id = ?1 AND status = 'completed'")
        .map_err(ProtoError::sqlite("pruning acks"))?;
    for id in ids {
        stmt.execute([id])
            .map_err(ProtoError::sqlite("pruning acks"))?;
    }
    Ok(())
}

/// The delivery ledger entry of an outbound row.
#[derive(Clone, Debug, PartialEq)]
pub struct LedgerRow {
    pub message_out_id: String,
    pub platform_message_id: Option<String>,
    pub status: String,
    pub attempts: i64,
    pub last_error: Option<String>,
}

pub fn ledger_get(conn: &Connection, out_id: &str) -> Result<Option<LedgerRow>, ProtoError> {
    conn.query_row(
        "SELECT message_out_id, platform_message_id, status, attempts, last_error FROM delivered WHERE message_out_id = ?1",
        [out_id],
        |r| {
            Ok(LedgerRow {
                message_out_id: r.get(0)?,
                platform_message_id: r.get(1)?,
                status: r.get(2)?,
                attempts: r.get(3)?,
                last_error: r.get(4)?,
            })
        },
    )
    .optional()
    .map_err(ProtoError::sqlite("reading delivery ledger"))
}

/// Upserts a ledger entry (host only): into `inbound.db`'s old table inside
/// a write transaction, or into the ledger file (one commit of its own).
pub fn ledger_put(conn: &Connection, e: &LedgerRow, now: &str) -> Result<(), ProtoError> {
    conn.execute(
        "INSERT INTO delivered (message_out_id, platform_message_id, status, attempts, last_error, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT(message_out_id) DO UPDATE SET platform_message_id=excluded.platform_message_id,
           status=excluded.status, attempts=excluded.attempts, last_error=excluded.last_error, updated_at=excluded.updated_at",
        params![e.message_out_id, e.platform_message_id, e.status, e.attempts, e.last_error, now],
    )
    .map_err(ProtoError::sqlite("writing delivery ledger"))?;
    Ok(())
}

/// A destination the agent may address (projection of the central ACL).
#[derive(Clone, Debug, PartialEq)]
pub struct Destination {
    pub name: String,
    pub display_name: Option<String>,
    /// `channel` or `agent`.
    pub kind: String,
    pub channel_type: Option<String>,
    pub platform_id: Option<String>,
    pub agent_group_id: Option<String>,
}

/// Replaces the whole destinations table in one transaction (host only).
pub fn replace_destinations(tx: &Transaction<'_>, dests: &[Destination]) -> Result<(), ProtoError> {
    tx.execute("DELETE FROM destinations", [])
        .map_err(ProtoError::sqlite("projecting destinations"))?;
    for d in dests {
        tx.execute(
            "INSERT INTO destinations (name, display_name, type, channel_type, platform_id, agent_group_id)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![d.name, d.display_name, d.kind, d.channel_type, d.platform_id, d.agent_group_id],
        )
        .map_err(ProtoError::sqlite("projecting destinations"))?;
    }
    Ok(())
}

pub fn destinations(conn: &Connection) -> Result<Vec<Destination>, ProtoError> {
    let mut stmt = conn
        .prepare("SELECT name, display_name, type, channel_type, platform_id, agent_group_id FROM destinations ORDER BY name")
        .map_err(ProtoError::sqlite("reading destinations"))?;
    let rows = stmt
        .query_map([], |r| {
            Ok(Destination {
                name: r.get(0)?,
                display_name: r.get(1)?,
                kind: r.get(2)?,
                channel_type: r.get(3)?,
                platform_id: r.get(4)?,
                agent_group_id: r.get(5)?,
            })
        })
        .map_err(ProtoError::sqlite("reading destinations"))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(ProtoError::sqlite("reading destinations"))?;
    Ok(rows)
}

/// The default reply address of a session.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Routing {
    pub channel_type: Option<String>,
    pub platform_id: Option<String>,
    pub thread_id: Option<String>,
}

pub fn set_routing(tx: &Transaction<'_>, r: &Routing) -> Result<(), ProtoError> {
    tx.execute(
        "INSERT INTO session_routing (id, channel_type, platform_id, thread_id) VALUES (1, ?1, ?2, ?3)
         ON CONFLICT(id) DO UPDATE SET channel_type=excluded.channel_type, platform_id=excluded.platform_id,
           thread_id=excluded.thread_id",
        params![r.channel_type, r.platform_id, r.thread_id],
    )
    .map_err(ProtoError::sqlite("writing session routing"))?;
    Ok(())
}

pub fn routing(conn: &Connection) -> Result<Option<Routing>, ProtoError> {
    conn.query_row(
        "SELECT channel_type, platform_id, thread_id FROM session_routing WHERE id = 1",
        [],
        |r| {
            Ok(Routing {
                channel_type: r.get(0)?,
                platform_id: r.get(1)?,
                thread_id: r.get(2)?,
            })
        },
    )
    .optional()
    .map_err(ProtoError::sqlite("reading session routing"))
}

/// `session_state` key/value (runner writes).
pub fn state_get(conn: &Connection, key: &str) -> Result<Option<String>, ProtoError> {
    conn.query_row(
        "SELECT value FROM session_state WHERE key = ?1",
        [key],
        |r| r.get(0),
    )
    .optional()
    .map_err(ProtoError::sqlite("reading session state"))
    .map(Option::flatten)
}

pub fn state_put(
    tx: &Transaction<'_>,
    key: &str,
    value: &str,
    now: &str,
) -> Result<(), ProtoError> {
    tx.execute(
        "INSERT INTO session_state (key, value, updated_at) VALUES (?1, ?2, ?3)
         ON CONFLICT(key) DO UPDATE SET value=excluded.value, updated_at=excluded.updated_at",
        params![key, value, now],
    )
    .map_err(ProtoError::sqlite("writing session state"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::open::{open_writer, write_tx, DEFAULT_BUSY_TIMEOUT};

    #[test]
    fn inbound_insert_is_idempotent_and_even() {
        let d = tempfile::tempdir().unwrap();
        let mut c = open_writer(&d.path().join("inbound.db"), DEFAULT_BUSY_TIMEOUT).unwrap();
        schema::migrate_inbound(&c).unwrap();
        let row = NewInbound {
            id: "m1".into(),
            kind: "chat".into(),
            timestamp: crate::time::now(),
            trigger: true,
            content: "{}".into(),
            ..Default::default()
        };
        let tx = write_tx(&mut c).unwrap();
        assert_eq!(insert_inbound(&tx, &row, 7).unwrap(), Some(8));
        assert_eq!(insert_inbound(&tx, &row, 7).unwrap(), None);
        tx.commit().unwrap();
        let p = pending_inbound(&c).unwrap();
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].seq, 8);
        assert!(p[0].trigger);
    }

    #[test]
    fn acks_upsert() {
        let d = tempfile::tempdir().unwrap();
        let mut c = open_writer(&d.path().join("outbound.db"), DEFAULT_BUSY_TIMEOUT).unwrap();
        schema::migrate_outbound(&c).unwrap();
        let tx = write_tx(&mut c).unwrap();
        claim(&tx, &["a", "b"], "r1", "t0").unwrap();
        ack(&tx, "a", status::COMPLETED, "r1", "t1", None).unwrap();
        tx.commit().unwrap();
        let mut a = acks(&c).unwrap();
        a.sort_by(|x, y| x.message_id.cmp(&y.message_id));
        assert_eq!(a[0].status, "completed");
        assert_eq!(a[1].status, "processing");
    }
}
