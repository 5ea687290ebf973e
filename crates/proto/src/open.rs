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
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, Transaction, TransactionBehavior};

use crate::ProtoError;

/// Default busy timeout for session DBs.
pub const DEFAULT_BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// The floor below which reads fail spuriously as "locked".
pub const MIN_BUSY_TIMEOUT: Duration = Duration::from_secs(2);

fn open_err(path: &Path) -> impl FnOnce(rusqlite::Error) -> ProtoError + '_ {
    move |source| ProtoError::Open {
        path: path.to_owned(),
        source,
    }
}

/// The busy timeout in force for this process, in ms (see [`busy_wait`]).
static BUSY_MS: AtomicU64 = AtomicU64::new(5_000);
/// Fine-grained retries first: host and runner collide for well under a
/// millisecond (one commit), and SQLite's default handler sleeps 1, 2, 5,
/// 10 ms, which measured as most of a reply's latency.
const FINE_STEPS: i32 = 50;
const FINE_STEP: Duration = Duration::from_micros(100);

/// SQLite busy handler: 50 retries 100 µs apart (the first 5 ms), then 1 ms
/// apart until the busy timeout is spent. Returns false to give up (BUSY).
fn busy_wait(attempt: i32) -> bool {
    let total_ms = BUSY_MS.load(Ordering::Relaxed) as i32;
    if attempt < FINE_STEPS {
        std::thread::sleep(FINE_STEP);
        return true;
    }
    // ~5 ms spent in fine steps; then one attempt per millisecond.
    if attempt - FINE_STEPS + 5 >= total_ms {
        return false;
    }
    std::thread::sleep(Duration::from_millis(1));
    true
}

fn common_pragmas(conn: &Connection, path: &Path, busy: Duration) -> Result<(), ProtoError> {
    BUSY_MS.fetch_max(
        busy.max(MIN_BUSY_TIMEOUT).as_millis() as u64,
        Ordering::Relaxed,
    );
    conn.busy_handler(Some(busy_wait)).map_err(open_err(path))?;
    conn.pragma_update(None, "mmap_size", 0)
        .map_err(open_err(path))?;
    Ok(())
}

/// Refuses a session DB, or its journal or WAL beside it, that exists but
/// is not a regular file (a FIFO, socket, device, directory or symlink),
/// without opening it: `lstat` never blocks. SQLite opens without
/// `O_NONBLOCK` and `NOFOLLOW` does not stop a FIFO, so a FIFO the agent
/// puts in place of `out/outbound.db` (or its `-journal`) would block the
/// opener for ever (issue 15). Every open in this module calls this first;
/// an absent file passes (the open itself decides).
pub fn ensure_regular(path: &Path) -> Result<(), ProtoError> {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    for p in [
        path.to_owned(),
        path.with_file_name(format!("{name}-journal")),
        path.with_file_name(format!("{name}-wal")),
    ] {
        let Ok(m) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        let t = m.file_type();
        if t.is_file() {
            continue;
        }
        use std::os::unix::fs::FileTypeExt;
        let kind = if t.is_fifo() {
            "a FIFO"
        } else if t.is_socket() {
            "a socket"
        } else if t.is_symlink() {
            "a symbolic link"
        } else if t.is_dir() {
            "a directory"
        } else if t.is_block_device() || t.is_char_device() {
            "a device"
        } else {
            "not a file"
        };
        return Err(ProtoError::Open {
            path: path.to_owned(),
            source: rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CANTOPEN),
                Some(format!(
                    "{} is {kind}, not a regular file: refused (opening it could block for ever); \
                     remove it (an agent's out/ folder: the runner makes a new outbound.db)",
                    p.display()
                )),
            ),
        });
    }
    Ok(())
}

/// Opens a session DB for writing, creating it if absent.
///
/// Used by the host for `inbound.db` and by the runner for `outbound.db`;
/// never by one side on the other's file.
pub fn open_writer(path: &Path, busy: Duration) -> Result<Connection, ProtoError> {
    ensure_regular(path)?;
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX
        | OpenFlags::SQLITE_OPEN_NOFOLLOW;
    writer(path, flags, busy)
}

/// Opens an existing session DB for writing; fails when it is absent.
///
/// The host's every write to `inbound.db` after the session folder was made
/// goes through this: a file that vanished must be noticed and reported,
/// never silently recreated empty (issue 15).
pub fn open_existing_writer(path: &Path, busy: Duration) -> Result<Connection, ProtoError> {
    if std::fs::symlink_metadata(path).is_err() {
        return Err(ProtoError::Open {
            path: path.to_owned(),
            source: rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CANTOPEN),
                Some("the file does not exist (it was never created or has been deleted)".into()),
            ),
        });
    }
    ensure_regular(path)?;
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX
        | OpenFlags::SQLITE_OPEN_NOFOLLOW;
    writer(path, flags, busy)
}

/// Opens with `flags` and sets what every writer needs: the rollback
/// journal (`journal_mode` returns the resulting mode; DELETE is insisted
/// on) and `synchronous=FULL`.
fn writer(path: &Path, flags: OpenFlags, busy: Duration) -> Result<Connection, ProtoError> {
    let conn = Connection::open_with_flags(path, flags).map_err(open_err(path))?;
    common_pragmas(&conn, path, busy)?;
    // journal_mode returns the resulting mode; insist on DELETE.
    let mode: String = conn
        .query_row("PRAGMA journal_mode=DELETE", [], |r| r.get(0))
        .map_err(open_err(path))?;
    if !mode.eq_ignore_ascii_case("delete") {
        return Err(ProtoError::JournalMode {
            path: path.to_owned(),
            mode,
        });
    }
    conn.pragma_update(None, "synchronous", "FULL")
        .map_err(open_err(path))?;
    Ok(conn)
}

/// Opens a session DB read-only: the fresh reader of SPEC §3.3.4.
///
/// Fails (rather than creating) when the file does not exist.
pub fn open_reader(path: &Path, busy: Duration) -> Result<Connection, ProtoError> {
    // Never through a symlink: `out/` is the runner's folder, and a
    // `outbound.db` linked to another session's (or the central) database
    // must not be read as this session's (issue 14). Nor a FIFO (issue 15).
    ensure_regular(path)?;
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY
        | OpenFlags::SQLITE_OPEN_NO_MUTEX
        | OpenFlags::SQLITE_OPEN_NOFOLLOW;
    let conn = Connection::open_with_flags(path, flags).map_err(open_err(path))?;
    common_pragmas(&conn, path, busy)?;
    Ok(conn)
}

/// The longest one statement on a file the agent writes may keep SQLite
/// busy without a pause (issue 15 review): a B-tree whose interior cells
/// point at one child again and again reads as an endless table with no
/// error, and a host read of such a file must not stall the main loop.
pub const AGENT_READ_LIMIT: Duration = Duration::from_secs(2);

/// [`open_reader`] for a file the agent writes (`outbound.db`): every
/// statement is interrupted (`SQLITE_INTERRUPT`) once it has kept SQLite
/// busy for [`AGENT_READ_LIMIT`] with no pause.
pub fn open_agent_reader(path: &Path, busy: Duration) -> Result<Connection, ProtoError> {
    let conn = open_reader(path, busy)?;
    bound_busy_time(&conn, AGENT_READ_LIMIT);
    Ok(conn)
}

/// SQLite's progress handler is called every this many VM steps (well
/// under a millisecond of work).
const PROGRESS_STEPS: std::ffi::c_int = 10_000;
/// A gap this long between two calls ends a busy run: the statement was
/// paused (its caller between steps, or waiting on a lock).
const RUN_GAP_MS: u64 = 100;

thread_local! {
    /// (start of the current busy run, last call), in [`mono_ms`].
    static BUSY_RUN: std::cell::Cell<(u64, u64)> = const { std::cell::Cell::new((0, 0)) };
}

/// Milliseconds on a monotonic clock of this process (for deadlines
/// passed to SQLite's progress handler as a number).
pub fn mono_ms() -> u64 {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    START
        .get_or_init(std::time::Instant::now)
        .elapsed()
        .as_millis() as u64
}

extern "C" fn over_busy_limit(limit_ms: *mut std::ffi::c_void) -> std::ffi::c_int {
    let now = mono_ms();
    BUSY_RUN.with(|r| {
        let (start, last) = r.get();
        let start = if now.saturating_sub(last) > RUN_GAP_MS {
            now
        } else {
            start
        };
        r.set((start, now));
        (now - start > limit_ms as usize as u64) as std::ffi::c_int
    })
}

/// Interrupts any statement of `conn` that keeps SQLite busy for `limit`
/// without a pause of [`RUN_GAP_MS`]. The run is timed per thread (a
/// statement steps on one thread); the limit travels as the handler's
/// argument, a number, not a pointer.
pub fn bound_busy_time(conn: &Connection, limit: Duration) {
    let ms = limit.as_millis().min(usize::MAX as u128) as usize;
    // SAFETY: the handle is valid while `conn` lives, and SQLite drops the
    // handler with the connection; the handler dereferences nothing.
    unsafe {
        rusqlite::ffi::sqlite3_progress_handler(
            conn.handle(),
            PROGRESS_STEPS,
            Some(over_busy_limit),
            ms as *mut std::ffi::c_void,
        );
    }
}

/// Rolls back a hot journal left by a writer that died mid-transaction.
///
/// Opens read-write, performs a trivial read (which makes SQLite roll the
/// journal back), and closes. Writes no row. The host calls this on
/// `outbound.db` only while no runner of the session is alive: it is the one
/// read-write open of a file the host does not own. A missing file is fine.
pub fn recovery_open(path: &Path, busy: Duration) -> Result<(), ProtoError> {
    if std::fs::symlink_metadata(path).is_err() {
        return Ok(());
    }
    ensure_regular(path)?;
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX
        | OpenFlags::SQLITE_OPEN_NOFOLLOW;
    let conn = Connection::open_with_flags(path, flags).map_err(open_err(path))?;
    common_pragmas(&conn, path, busy)?;
    conn.query_row("SELECT count(*) FROM sqlite_master", [], |r| {
        r.get::<_, i64>(0)
    })
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

    /// A statement on an agent's file that keeps SQLite busy with no end
    /// (here an endless recursive query; a looping B-tree reads the same
    /// way) is interrupted at the limit instead of holding its thread.
    #[test]
    fn an_endless_statement_on_an_agents_file_is_interrupted() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("outbound.db");
        open_writer(&p, DEFAULT_BUSY_TIMEOUT)
            .unwrap()
            .execute_batch("CREATE TABLE t (x); INSERT INTO t VALUES (1);")
            .unwrap();
        let c = open_agent_reader(&p, DEFAULT_BUSY_TIMEOUT).unwrap();
        let n: i64 = c
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 1, "an ordinary read is untouched");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let c = open_reader(&p, DEFAULT_BUSY_TIMEOUT).unwrap();
            bound_busy_time(&c, Duration::from_millis(200));
            let r = c.query_row(
                "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n) SELECT count(*) FROM n",
                [],
                |r| r.get::<_, i64>(0),
            );
            let _ = tx.send(r);
        });
        let r = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("the endless statement was never interrupted");
        let e = r.expect_err("an endless statement cannot finish");
        assert_eq!(
            e.sqlite_error_code(),
            Some(rusqlite::ErrorCode::OperationInterrupted),
            "{e}"
        );
    }

    #[test]
    fn writer_uses_delete_journal_and_full_sync() {
        let d = tempfile::tempdir().unwrap();
        let c = open_writer(&d.path().join("a.db"), DEFAULT_BUSY_TIMEOUT).unwrap();
        let mode: String = c
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "delete");
        let sync: i64 = c.query_row("PRAGMA synchronous", [], |r| r.get(0)).unwrap();
        assert_eq!(sync, 2, "FULL");
        let mmap: i64 = c.query_row("PRAGMA mmap_size", [], |r| r.get(0)).unwrap();
        assert_eq!(mmap, 0);
    }

    /// A session DB replaced by a symlink (to another session's file, or
    /// the central DB) is never opened through it.
    #[test]
    fn no_open_follows_a_symlinked_database() {
        let d = tempfile::tempdir().unwrap();
        let real = d.path().join("other.db");
        open_writer(&real, Duration::from_secs(2))
            .unwrap()
            .execute_batch("CREATE TABLE secret(x); INSERT INTO secret VALUES ('other session');")
            .unwrap();
        let link = d.path().join("outbound.db");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        assert!(open_reader(&link, Duration::from_secs(2)).is_err());
        assert!(open_writer(&link, Duration::from_secs(2)).is_err());
        assert!(recovery_open(&link, Duration::from_secs(2)).is_err());
    }

    /// A FIFO in place of the file or its journal is refused, never
    /// opened (an open of a FIFO without O_NONBLOCK blocks for ever).
    #[test]
    fn a_fifo_in_place_of_a_database_or_its_journal_is_refused_not_opened() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("outbound.db");
        let fifo = |at: &Path| {
            let c = std::ffi::CString::new(at.as_os_str().as_encoded_bytes()).unwrap();
            assert_eq!(unsafe { libc_mkfifo(c.as_ptr(), 0o600) }, 0);
        };
        fifo(&p);
        let b = Duration::from_secs(2);
        for e in [
            open_reader(&p, b).map(drop).unwrap_err(),
            open_writer(&p, b).map(drop).unwrap_err(),
            open_existing_writer(&p, b).map(drop).unwrap_err(),
            recovery_open(&p, b).unwrap_err(),
        ] {
            assert!(e.to_string().contains("is a FIFO"), "{e}");
            assert!(!e.is_corruption());
        }
        std::fs::remove_file(&p).unwrap();
        open_writer(&p, b)
            .unwrap()
            .execute_batch("CREATE TABLE t(x); INSERT INTO t VALUES (1);")
            .unwrap();
        fifo(&d.path().join("outbound.db-journal"));
        let e = open_reader(&p, b).map(drop).unwrap_err();
        assert!(
            e.to_string().contains("outbound.db-journal is a FIFO"),
            "{e}"
        );
    }

    extern "C" {
        #[link_name = "mkfifo"]
        fn libc_mkfifo(path: *const std::ffi::c_char, mode: u32) -> i32;
    }

    #[test]
    fn reader_cannot_write_and_does_not_create() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("a.db");
        assert!(open_reader(&p, DEFAULT_BUSY_TIMEOUT).is_err());
        assert!(!p.exists());
        open_writer(&p, DEFAULT_BUSY_TIMEOUT)
            .unwrap()
            .execute_batch("CREATE TABLE t(x)")
            .unwrap();
        let r = open_reader(&p, DEFAULT_BUSY_TIMEOUT).unwrap();
        let err = r.execute("INSERT INTO t VALUES (1)", []).unwrap_err();
        assert!(err.to_string().contains("readonly"), "{err}");
    }

    #[test]
    fn busy_waits_at_least_the_floor_then_gives_up() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("a.db");
        let mut w = open_writer(&p, Duration::from_millis(1)).unwrap();
        w.execute_batch("CREATE TABLE t(x)").unwrap();
        let _tx = write_tx(&mut w).unwrap();
        // A second writer waits (≥ the 2 s floor), then reports BUSY.
        let mut w2 = open_writer(&p, Duration::from_millis(1)).unwrap();
        let t0 = std::time::Instant::now();
        let err = write_tx(&mut w2).unwrap_err();
        assert!(t0.elapsed() >= MIN_BUSY_TIMEOUT, "{:?}", t0.elapsed());
        assert!(
            err.to_string().contains("locked") || err.to_string().contains("busy"),
            "{err}"
        );
    }
}
