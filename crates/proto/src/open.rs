//! The only place a session DB is opened.
//!
//! Invariants kept here (SPEC §3.3):
//! - session DBs use `journal_mode=DELETE` and `synchronous=FULL`, never WAL:
//!   WAL's shared-memory index does not cross VM file sharing.
//! - every handle sets `mmap_size=0` and a busy timeout (>= 2 s): a mapped
//!   page cache goes stale across a mount, and without the timeout a quarter
//!   of reads failed "locked" upstream.
//! - readers are read-only and fresh (the caller opens one per poll);
//!   `immutable=1` is never used.
//! - writers begin with `BEGIN IMMEDIATE` (see [`write_tx`]).

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, Transaction, TransactionBehavior};

use crate::ProtoError;

/// Default busy timeout for session DBs.
pub const DEFAULT_BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// The floor below which reads fail spuriously as "locked".
pub const MIN_BUSY_TIMEOUT: Duration = Duration::from_secs(2);

fn open_err(path: &Path) -> impl FnOnce(rusqlite::Error) -> ProtoError + '_ {
    move |source| ProtoError::Open { path: path.to_owned(), source }
}

fn common_pragmas(conn: &Connection, path: &Path, busy: Duration) -> Result<(), ProtoError> {
    conn.busy_timeout(busy.max(MIN_BUSY_TIMEOUT)).map_err(open_err(path))?;
    conn.pragma_update(None, "mmap_size", 0).map_err(open_err(path))?;
    Ok(())
}

/// Opens a session DB for writing, creating it if absent.
///
/// Used by the host for `inbound.db` and by the runner for `outbound.db`;
/// never by one side on the other's file.
pub fn open_writer(path: &Path, busy: Duration) -> Result<Connection, ProtoError> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags).map_err(open_err(path))?;
    common_pragmas(&conn, path, busy)?;
    // journal_mode returns the resulting mode; insist on DELETE.
    let mode: String = conn
        .query_row("PRAGMA journal_mode=DELETE", [], |r| r.get(0))
        .map_err(open_err(path))?;
    if !mode.eq_ignore_ascii_case("delete") {
        return Err(ProtoError::JournalMode { path: path.to_owned(), mode });
    }
    conn.pragma_update(None, "synchronous", "FULL").map_err(open_err(path))?;
    Ok(conn)
}

/// Opens a session DB read-only: the fresh reader of SPEC §3.3.4.
///
/// Fails (rather than creating) when the file does not exist.
pub fn open_reader(path: &Path, busy: Duration) -> Result<Connection, ProtoError> {
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags).map_err(open_err(path))?;
    common_pragmas(&conn, path, busy)?;
    Ok(conn)
}

/// Rolls back a hot journal left by a writer that died mid-transaction.
///
/// Opens read-write, performs a trivial read (which makes SQLite roll the
/// journal back), and closes. Writes no row. The host calls this on
/// `outbound.db` only while no runner of the session is alive: it is the one
/// read-write open of a file the host does not own. A missing file is fine.
pub fn recovery_open(path: &Path, busy: Duration) -> Result<(), ProtoError> {
    if !path.exists() {
        return Ok(());
    }
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags).map_err(open_err(path))?;
    common_pragmas(&conn, path, busy)?;
    conn.query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get::<_, i64>(0))
        .map_err(open_err(path))?;
    Ok(())
}

/// Starts a write transaction with `BEGIN IMMEDIATE`, so the write lock is
/// taken up front and a concurrent writer waits on the busy timeout instead
/// of failing at commit time.
pub fn write_tx(conn: &mut Connection) -> Result<Transaction<'_>, ProtoError> {
    conn.transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(ProtoError::sqlite("begin immediate"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writer_uses_delete_journal_and_full_sync() {
        let d = tempfile::tempdir().unwrap();
        let c = open_writer(&d.path().join("a.db"), DEFAULT_BUSY_TIMEOUT).unwrap();
        let mode: String = c.query_row("PRAGMA journal_mode", [], |r| r.get(0)).unwrap();
        assert_eq!(mode, "delete");
        let sync: i64 = c.query_row("PRAGMA synchronous", [], |r| r.get(0)).unwrap();
        assert_eq!(sync, 2, "FULL");
        let mmap: i64 = c.query_row("PRAGMA mmap_size", [], |r| r.get(0)).unwrap();
        assert_eq!(mmap, 0);
    }

    #[test]
    fn reader_cannot_write_and_does_not_create() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("a.db");
        assert!(open_reader(&p, DEFAULT_BUSY_TIMEOUT).is_err());
        assert!(!p.exists());
        open_writer(&p, DEFAULT_BUSY_TIMEOUT).unwrap().execute_batch("CREATE TABLE t(x)").unwrap();
        let r = open_reader(&p, DEFAULT_BUSY_TIMEOUT).unwrap();
        let err = r.execute("INSERT INTO t VALUES (1)", []).unwrap_err();
        assert!(err.to_string().contains("readonly"), "{err}");
    }

    #[test]
    fn busy_timeout_has_a_floor() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("a.db");
        open_writer(&p, Duration::from_millis(1)).unwrap();
        let r = open_reader(&p, Duration::from_millis(1)).unwrap();
        let t: i64 = r.query_row("PRAGMA busy_timeout", [], |r| r.get(0)).unwrap();
        assert!(t >= 2000);
    }
}
