//! The host's delivery ledger file `<session>/delivered.db` (issue 15,
//! decision 0026): the same `delivered` table as [`crate::schema::DELIVERED`]
//! (it moved out of `inbound.db`, whose old table older sessions still
//! carry), plus a `meta` table with the record of the ledger's making.
//!
//! The runner never sees this file; it lives here because its `delivered`
//! rows are the session table's rows, read and written by the same named
//! statements ([`crate::rows::ledger_get`], [`crate::rows::ledger_put`]) on
//! either file, so the table has one door (decision 0034).

use rusqlite::{params, Connection, Transaction};

use crate::rows::LedgerRow;
use crate::ProtoError;

/// The ledger file's schema. `delivered` is declared exactly as the
/// session table's first version (an existing file is never altered).
pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS delivered (
  message_out_id TEXT PRIMARY KEY, platform_message_id TEXT, status TEXT NOT NULL,
  attempts INTEGER NOT NULL DEFAULT 0, last_error TEXT, updated_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
";

/// Creates the ledger's tables if they are missing.
pub fn create(conn: &Connection) -> Result<(), ProtoError> {
    conn.execute_batch(SCHEMA)
        .map_err(ProtoError::sqlite("creating the delivery ledger's tables"))
}

/// When the ledger was made (its `imported` record), if it was.
pub fn made_at(conn: &Connection) -> Result<Option<String>, ProtoError> {
    use rusqlite::OptionalExtension;
    conn.query_row("SELECT value FROM meta WHERE key = 'imported'", [], |r| {
        r.get(0)
    })
    .optional()
    .map_err(ProtoError::sqlite(
        "reading the delivery ledger's record of making",
    ))
}

/// Inserts rows with their `updated_at`, never replacing a row the ledger
/// has; with `made_now`, also records the making (`at`), in the same
/// transaction.
pub fn insert_keeping(
    tx: &Transaction<'_>,
    rows: &[(LedgerRow, String)],
    made_now: Option<&str>,
) -> Result<(), ProtoError> {
    for (e, at) in rows {
        tx.execute(
            "INSERT OR IGNORE INTO delivered VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                e.message_out_id,
                e.platform_message_id,
                e.status,
                e.attempts,
                e.last_error,
                at
            ],
        )
        .map_err(ProtoError::sqlite("writing the delivery ledger"))?;
    }
    if let Some(at) = made_now {
        tx.execute("INSERT OR REPLACE INTO meta VALUES ('imported', ?1)", [at])
            .map_err(ProtoError::sqlite("recording the delivery ledger's making"))?;
    }
    Ok(())
}

/// Every `delivered` row with its `updated_at` (the ledger file's, or an
/// older `inbound.db`'s table).
pub fn all(conn: &Connection) -> Result<Vec<(LedgerRow, String)>, ProtoError> {
    let mut st = conn
        .prepare(
            "SELECT message_out_id, platform_message_id, status, attempts, last_error, updated_at FROM delivered",
        )
        .map_err(ProtoError::sqlite("reading the delivery ledger"))?;
    let rows = st
        .query_map([], |r| {
            Ok((
                LedgerRow {
                    message_out_id: r.get(0)?,
                    platform_message_id: r.get(1)?,
                    status: r.get(2)?,
                    attempts: r.get(3)?,
                    last_error: r.get(4)?,
                },
                r.get(5)?,
            ))
        })
        .map_err(ProtoError::sqlite("reading the delivery ledger"))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(ProtoError::sqlite("reading the delivery ledger"))?;
    Ok(rows)
}

/// The ids of the rows the channel took (`delivered`).
pub fn delivered_ids(conn: &Connection) -> Result<Vec<String>, ProtoError> {
    let mut st = conn
        .prepare("SELECT message_out_id FROM delivered WHERE status = 'delivered'")
        .map_err(ProtoError::sqlite("reading the delivery ledger"))?;
    let ids = st
        .query_map([], |r| r.get::<_, String>(0))
        .map_err(ProtoError::sqlite("reading the delivery ledger"))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(ProtoError::sqlite("reading the delivery ledger"))?;
    Ok(ids)
}

/// How many rows reached a terminal status (`delivered` or `failed`).
pub fn count_terminal(conn: &Connection) -> Result<i64, ProtoError> {
    conn.query_row(
        "SELECT count(*) FROM delivered WHERE status IN ('delivered', 'failed')",
        [],
        |r| r.get(0),
    )
    .map_err(ProtoError::sqlite("counting the delivery ledger"))
}

/// How many entries `out_id` has (0 or 1).
pub fn count_of(conn: &Connection, out_id: &str) -> Result<i64, ProtoError> {
    conn.query_row(
        "SELECT count(*) FROM delivered WHERE message_out_id = ?1",
        [out_id],
        |r| r.get(0),
    )
    .map_err(ProtoError::sqlite("counting the delivery ledger"))
}
