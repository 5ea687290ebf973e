//! The host's delivery ledger: which `messages_out` rows the channel already
//! took (issue 15, decision 0026).
//!
//! It lives in `<session>/delivered.db`, in the session's host-only folder
//! (never bound into a sandbox), not in `inbound.db`: a session file that
//! vanished or was replaced must not take the record of what was sent with
//! it, or every old reply goes out again. Delivery consults it before every
//! send and writes it after the channel took the row.
//!
//! Cost: the file is the host's alone (no VM file sharing, no second
//! process), so it runs in WAL mode with `synchronous=FULL` and one
//! connection held by the session's delivery task: a ledger write is one
//! WAL append and one fsync, where the old write into `inbound.db`
//! (rollback journal) cost a journal write, a database write and their
//! fsyncs. A lookup is an indexed read on an open connection.
//!
//! A session made by an older pinch has its ledger in `inbound.db`'s
//! `delivered` table: the first open copies those rows (once; a `meta`
//! row records it).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use pinch_proto::rows::LedgerRow;
use pinch_proto::rusqlite::{self, params, Connection, OpenFlags, OptionalExtension};

use crate::paths::SessionDir;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS delivered (
  message_out_id TEXT PRIMARY KEY, platform_message_id TEXT, status TEXT NOT NULL,
  attempts INTEGER NOT NULL DEFAULT 0, last_error TEXT, updated_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
";

/// The ledger file of a session.
pub fn path(dir: &SessionDir) -> PathBuf {
    dir.root().join("delivered.db")
}

pub struct Ledger {
    conn: Connection,
    path: PathBuf,
}

impl Ledger {
    /// Opens (creating if needed) the session's ledger; imports an older
    /// session's `inbound.db` ledger the first time.
    pub fn open(dir: &SessionDir) -> Result<Ledger> {
        let path = path(dir);
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
            | OpenFlags::SQLITE_OPEN_NOFOLLOW;
        let conn = Connection::open_with_flags(&path, flags)
            .with_context(|| format!("opening the delivery ledger {}", path.display()))?;
        let setup = || -> rusqlite::Result<()> {
            conn.busy_timeout(std::time::Duration::from_secs(5))?;
            conn.query_row("PRAGMA journal_mode=WAL", [], |_| Ok(()))?;
            conn.pragma_update(None, "synchronous", "FULL")?;
            conn.execute_batch(SCHEMA)
        };
        setup().with_context(|| format!("preparing the delivery ledger {}", path.display()))?;
        let mut l = Ledger { conn, path };
        l.import_once(&dir.inbound_db())?;
        Ok(l)
    }

    fn import_once(&mut self, inbound: &Path) -> Result<()> {
        let done: Option<String> = self
            .conn
            .query_row("SELECT value FROM meta WHERE key = 'imported'", [], |r| {
                r.get(0)
            })
            .optional()?;
        if done.is_some() {
            return Ok(());
        }
        // Read-only, no create: a missing inbound.db has nothing to import.
        let old: Vec<(LedgerRow, String)> =
            match pinch_proto::open::open_reader(inbound, crate::session::BUSY) {
                Ok(c) => read_all(&c).unwrap_or_default(),
                Err(_) => Vec::new(),
            };
        let path = self.path.clone();
        let tx = self.conn.transaction()?;
        for (e, at) in &old {
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
            )?;
        }
        tx.execute(
            "INSERT OR REPLACE INTO meta VALUES ('imported', ?1)",
            [pinch_proto::time::now()],
        )?;
        tx.commit()
            .with_context(|| format!("importing the delivery ledger into {}", path.display()))?;
        if !old.is_empty() {
            tracing::info!(rows = old.len(), ledger = %path.display(), "moved the delivery ledger out of inbound.db");
        }
        Ok(())
    }

    pub fn get(&self, out_id: &str) -> Result<Option<LedgerRow>> {
        self.conn
            .query_row(
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
            .with_context(|| format!("reading the delivery ledger {}", self.path.display()))
    }

    /// Upserts an entry (one commit, one fsync).
    pub fn put(&self, e: &LedgerRow) -> Result<()> {
        self.conn
            .execute(
                "INSERT INTO delivered (message_out_id, platform_message_id, status, attempts, last_error, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT(message_out_id) DO UPDATE SET platform_message_id=excluded.platform_message_id,
                   status=excluded.status, attempts=excluded.attempts, last_error=excluded.last_error,
                   updated_at=excluded.updated_at",
                params![
                    e.message_out_id,
                    e.platform_message_id,
                    e.status,
                    e.attempts,
                    e.last_error,
                    pinch_proto::time::now()
                ],
            )
            .with_context(|| {
                format!(
                    "writing the delivery ledger {} (free space, then restart the host)",
                    self.path.display()
                )
            })?;
        Ok(())
    }
}

/// A read-only handle on a session's ledger (`root` = the session folder),
/// for readers outside delivery (history, metrics). `None` when absent.
pub fn open_read(root: &Path) -> Option<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY
        | OpenFlags::SQLITE_OPEN_NO_MUTEX
        | OpenFlags::SQLITE_OPEN_NOFOLLOW;
    let c = Connection::open_with_flags(root.join("delivered.db"), flags).ok()?;
    c.busy_timeout(std::time::Duration::from_secs(2)).ok()?;
    Some(c)
}

fn read_all(c: &Connection) -> rusqlite::Result<Vec<(LedgerRow, String)>> {
    let mut st = c.prepare(
        "SELECT message_out_id, platform_message_id, status, attempts, last_error, updated_at FROM delivered",
    )?;
    let rows = st.query_map([], |r| {
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
    })?;
    rows.collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use pinch_proto::rows::status;

    fn entry(id: &str) -> LedgerRow {
        LedgerRow {
            message_out_id: id.into(),
            platform_message_id: Some(format!("p-{id}")),
            status: status::DELIVERED.into(),
            attempts: 1,
            last_error: None,
        }
    }

    #[test]
    fn survives_the_loss_of_inbound_db_and_imports_an_old_ledger_once() {
        let t = tempfile::tempdir().unwrap();
        let data = crate::paths::DataDir::new(t.path());
        let dir = crate::session::create_folder(&data, "ag", "s1").unwrap();
        // An older session: its ledger row in inbound.db.
        {
            let mut c =
                pinch_proto::open::open_writer(&dir.inbound_db(), crate::session::BUSY).unwrap();
            let tx = pinch_proto::open::write_tx(&mut c).unwrap();
            pinch_proto::rows::ledger_put(&tx, &entry("old"), "2026-01-01T00:00:00.000Z").unwrap();
            tx.commit().unwrap();
        }
        let l = Ledger::open(&dir).unwrap();
        assert_eq!(l.get("old").unwrap(), Some(entry("old")));
        l.put(&entry("new")).unwrap();
        drop(l);
        std::fs::remove_file(dir.inbound_db()).unwrap();
        let l = Ledger::open(&dir).unwrap();
        assert!(l.get("old").unwrap().is_some() && l.get("new").unwrap().is_some());
        assert_eq!(l.get("never").unwrap(), None);
    }
}
