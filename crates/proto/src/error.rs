use std::path::PathBuf;

/// Errors from session-DB work, grouped by what a caller can do about them.
#[derive(Debug, thiserror::Error)]
pub enum ProtoError {
    #[error("opening {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("{what}: {source}")]
    Sqlite {
        what: &'static str,
        #[source]
        source: rusqlite::Error,
    },
    #[error("{path} is in journal mode {mode}; session DBs must use the rollback journal (delete): remove the -wal and -shm files while pinch is stopped")]
    JournalMode { path: PathBuf, mode: String },
    #[error("invalid timestamp {0:?}: expected RFC 3339 or YYYY-MM-DD HH:MM:SS")]
    Time(String),
    #[error("content is not valid JSON: {0}")]
    Json(#[from] serde_json::Error),
}

impl ProtoError {
    pub fn sqlite(what: &'static str) -> impl FnOnce(rusqlite::Error) -> ProtoError {
        move |source| ProtoError::Sqlite { what, source }
    }

    /// The underlying SQLite error, if any.
    pub fn sqlite_error(&self) -> Option<&rusqlite::Error> {
        match self {
            ProtoError::Open { source, .. } | ProtoError::Sqlite { source, .. } => Some(source),
            _ => None,
        }
    }

    /// True when this error means the reader sees a corrupt database image.
    pub fn is_corruption(&self) -> bool {
        self.sqlite_error().is_some_and(is_corruption)
    }

    /// True when this error means the reader cannot use the file it sees
    /// at all (see [`is_unusable_view`]): what the runner's streak counts.
    pub fn is_unusable_view(&self) -> bool {
        self.sqlite_error().is_some_and(is_unusable_view)
    }
}

/// The corruption family the runner's streak counts (issue 15): corruption
/// itself, plus the other ways a reader's view of a session DB is unusable
/// rather than briefly busy: a file that cannot be opened (missing, EACCES:
/// `SQLITE_CANTOPEN`, `SQLITE_PERM`, `SQLITE_AUTH`) and a file without the
/// schema ("no such table", e.g. a zero-length file, which SQLite reads as an
/// empty database). None of these heals by polling again in the same
/// sandbox; all of them either heal with a fresh mount or need the host to
/// look at its own file, which it does on exit 75. BUSY, LOCKED and I/O
/// errors stay outside: they are transient.
pub fn is_unusable_view(err: &rusqlite::Error) -> bool {
    use rusqlite::ErrorCode;
    if is_corruption(err) {
        return true;
    }
    if let rusqlite::Error::SqliteFailure(e, _) = err {
        match e.code {
            ErrorCode::CannotOpen
            | ErrorCode::PermissionDenied
            | ErrorCode::AuthorizationForStatementDenied => return true,
            // SQLITE_ERROR: the message tells ("no such table").
            ErrorCode::Unknown => {}
            _ => return false,
        }
    }
    err.to_string()
        .to_ascii_lowercase()
        .contains("no such table")
}

/// Classifies a SQLite error as corruption of the database image.
///
/// Corruption = primary code `SQLITE_CORRUPT` (any extended code) or
/// `SQLITE_NOTADB`; as a fallback for errors that reach us without a code,
/// a message containing "database disk image is malformed" or
/// "file is not a database". Everything else (BUSY, LOCKED, READONLY,
/// IOERR, ...) is not corruption: the runner's streak rule depends on this
/// being exact, because only corruption justifies asking for a fresh mount.
pub fn is_corruption(err: &rusqlite::Error) -> bool {
    use rusqlite::ErrorCode;
    if let rusqlite::Error::SqliteFailure(e, _) = err {
        if matches!(e.code, ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase) {
            return true;
        }
        // A known code that is not corruption is authoritative.
        if e.code != ErrorCode::Unknown {
            return false;
        }
    }
    let msg = err.to_string();
    message_is_corruption(&msg)
}

/// The message fallback of [`is_corruption`].
pub fn message_is_corruption(msg: &str) -> bool {
    let m = msg.to_ascii_lowercase();
    m.contains("database disk image is malformed") || m.contains("file is not a database")
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::ffi;

    fn failure(code: i32, msg: Option<&str>) -> rusqlite::Error {
        rusqlite::Error::SqliteFailure(ffi::Error::new(code), msg.map(str::to_owned))
    }

    #[test]
    fn corrupt_and_notadb_codes_are_corruption() {
        assert!(is_corruption(&failure(ffi::SQLITE_CORRUPT, None)));
        assert!(is_corruption(&failure(ffi::SQLITE_CORRUPT_VTAB, None)));
        assert!(is_corruption(&failure(ffi::SQLITE_CORRUPT_INDEX, None)));
        assert!(is_corruption(&failure(ffi::SQLITE_NOTADB, None)));
    }

    #[test]
    fn busy_locked_readonly_ioerr_are_not() {
        for code in [
            ffi::SQLITE_BUSY,
            ffi::SQLITE_LOCKED,
            ffi::SQLITE_READONLY,
            ffi::SQLITE_IOERR,
            ffi::SQLITE_IOERR_SHORT_READ,
            ffi::SQLITE_CANTOPEN,
        ] {
            assert!(
                !is_corruption(&failure(code, Some("something"))),
                "code {code}"
            );
        }
        // a known non-corruption code wins over a misleading message
        assert!(!is_corruption(&failure(
            ffi::SQLITE_BUSY,
            Some("database disk image is malformed")
        )));
    }

    #[test]
    fn unusable_views_count_with_corruption_and_busy_does_not() {
        // corruption itself
        assert!(is_unusable_view(&failure(ffi::SQLITE_CORRUPT, None)));
        assert!(is_unusable_view(&failure(ffi::SQLITE_NOTADB, None)));
        // a missing or unreadable file (EACCES) and a file without the schema
        assert!(is_unusable_view(&failure(ffi::SQLITE_CANTOPEN, None)));
        assert!(is_unusable_view(&failure(ffi::SQLITE_PERM, None)));
        assert!(is_unusable_view(&failure(
            ffi::SQLITE_ERROR,
            Some("no such table: messages_in")
        )));
        assert!(is_unusable_view(&rusqlite::Error::SqlInputError {
            error: ffi::Error::new(ffi::SQLITE_ERROR),
            msg: "no such table: messages_in".into(),
            sql: "SELECT 1 FROM messages_in".into(),
            offset: 14,
        }));
        // transient ones stay outside
        for code in [
            ffi::SQLITE_BUSY,
            ffi::SQLITE_LOCKED,
            ffi::SQLITE_IOERR,
            ffi::SQLITE_FULL,
        ] {
            assert!(
                !is_unusable_view(&failure(code, Some("no such table: x"))),
                "code {code}"
            );
        }
        assert!(!is_unusable_view(&failure(
            ffi::SQLITE_ERROR,
            Some("syntax error")
        )));
    }

    /// The real errors SQLite gives for a zero-length file, a file whose
    /// tables are gone, and a missing file.
    #[test]
    fn real_empty_missing_and_tableless_files_are_unusable_views() {
        let dir = tempfile::tempdir().unwrap();
        let read = |p: &std::path::Path| -> ProtoError {
            let c = crate::open::open_reader(p, std::time::Duration::from_secs(2));
            match c {
                Err(e) => e,
                Ok(c) => c
                    .query_row("SELECT count(*) FROM messages_in", [], |r| {
                        r.get::<_, i64>(0)
                    })
                    .map_err(ProtoError::sqlite("reading"))
                    .unwrap_err(),
            }
        };
        let empty = dir.path().join("empty.db");
        std::fs::write(&empty, b"").unwrap();
        assert!(read(&empty).is_unusable_view());
        assert!(!read(&empty).is_corruption());
        let missing = dir.path().join("missing.db");
        assert!(read(&missing).is_unusable_view());
        let other = dir.path().join("other.db");
        rusqlite::Connection::open(&other)
            .unwrap()
            .execute_batch("CREATE TABLE t(x)")
            .unwrap();
        assert!(read(&other).is_unusable_view());
    }

    #[test]
    fn message_fallback() {
        // SQLITE_ERROR carries no specific code: the message decides
        assert!(is_corruption(&failure(
            ffi::SQLITE_ERROR,
            Some("database disk image is malformed")
        )));
        assert!(is_corruption(&failure(
            ffi::SQLITE_ERROR,
            Some("File is not a database")
        )));
        assert!(!is_corruption(&failure(
            ffi::SQLITE_ERROR,
            Some("no such table: messages_in")
        )));
        assert!(message_is_corruption(
            "Error: database disk image is malformed (11)"
        ));
    }

    #[test]
    fn commit_hints() {
        use crate::layout::is_commit_hint as h;
        assert!(
            h("inbound.db-journal", "inbound.db", false, true),
            "journal removal = commit"
        );
        assert!(
            !h("inbound.db-journal", "inbound.db", false, false),
            "journal creation = mid-transaction"
        );
        assert!(!h("inbound.db", "inbound.db", false, false));
        assert!(
            !h("stop", "inbound.db", true, false),
            "our own reads never count"
        );
        assert!(!h("heartbeat", "outbound.db", false, false));
        assert!(h("stop", "inbound.db", false, false));
        assert!(h("runner.json", "inbound.db", false, false));
    }

    #[test]
    fn real_overwritten_header_is_classified_as_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.db");
        {
            let c = rusqlite::Connection::open(&p).unwrap();
            c.execute_batch("CREATE TABLE t(x); INSERT INTO t VALUES (1);")
                .unwrap();
        }
        std::fs::write(&p, vec![0x5a; 4096]).unwrap();
        let c = rusqlite::Connection::open(&p).unwrap();
        let err = c
            .query_row("SELECT count(*) FROM t", [], |r| r.get::<_, i64>(0))
            .unwrap_err();
        assert!(is_corruption(&err), "{err:?}");
    }
}
