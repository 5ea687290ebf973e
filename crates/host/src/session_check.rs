//! The host's checks of a session's own files (issue 15, decision 0026):
//! is `inbound.db` still the file the host made (identity), and is it
//! readable (corruption); if not, a fresh file, with what could be
//! recovered, and the damaged or foreign one kept aside.
//!
//! Identity: the host writes a `session_identity` row (session id and a
//! random generation) into every `inbound.db` it makes and records the
//! generation in the central DB. A file that is absent, carries no identity
//! or another session's, is not this session's file: the host makes a
//! fresh one (never silently: the caller logs and tells the owner). A file
//! with this session's id but another generation (a copy restored from a
//! backup) is used as found and reported. `(device, inode)` of the file is
//! kept in memory, so the check on the hot paths is one `lstat`.
//!
//! Corruption: `PRAGMA quick_check` (on a runner's exit 75 or any abnormal
//! exit, and whenever reading the identity fails as corrupt), and
//! `PRAGMA integrity_check` ([`Depth::Full`]) when a read or write failed
//! as corrupt, since index damage passes `quick_check`. A corrupt
//! file is copied row by row into a fresh one: each table is read forwards
//! by rowid until the first unreadable page, then backwards from the end
//! down to the same point, so rows on both sides of a damaged page survive
//! and only the rows on damaged pages are lost. SQLite's backup API copies
//! pages as they are (the damage with them) and the `.recover` extension is
//! not built into rusqlite's bundled SQLite, so neither is used. The copy
//! is bounded against a file shaped by the agent (see `copy_readable`).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use pinch_proto::open::{mono_ms, open_existing_writer, open_reader, open_writer};
use pinch_proto::rusqlite::{self, Connection};
use pinch_proto::schema::{self, Table};

use crate::paths::SessionDir;
use pinch_proto::open::DEFAULT_BUSY_TIMEOUT as BUSY;

/// Which file a path names: device and inode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stamp {
    dev: u64,
    ino: u64,
}

/// The file's stamp (`lstat`), `None` when absent.
pub fn stamp(path: &Path) -> Option<Stamp> {
    use std::os::unix::fs::MetadataExt;
    std::fs::symlink_metadata(path).ok().map(|m| Stamp {
        dev: m.dev(),
        ino: m.ino(),
    })
}

/// What a check found.
#[derive(Debug, PartialEq)]
pub enum Finding {
    /// The recorded file (or, with nothing recorded yet, adopted as found).
    Same,
    /// The file was gone: a fresh, empty one was made.
    Vanished,
    /// Another file stood in its place: kept aside, a fresh one made.
    Foreign { why: String, kept: PathBuf },
    /// This session's file of another generation (e.g. restored from a
    /// backup): used as found.
    OtherGeneration { found: String, recorded: String },
    /// Corrupt: what was readable was copied into a fresh file.
    Recovered(Recovery),
}

#[derive(Debug, PartialEq)]
pub struct Recovery {
    /// What SQLite said about the damaged file.
    pub error: String,
    /// Where the damaged file was moved.
    pub kept: PathBuf,
    /// Rows copied, per table.
    pub copied: Vec<(String, u64)>,
    /// Tables whose reading stopped at damage (rows there are lost).
    pub incomplete: Vec<String>,
}

impl Recovery {
    /// "12 messages_in rows, 3 destinations rows" etc.
    pub fn summary(&self) -> String {
        let copied: Vec<String> = self
            .copied
            .iter()
            .filter(|(_, n)| *n > 0)
            .map(|(t, n)| format!("{n} {t} rows"))
            .collect();
        let copied = if copied.is_empty() {
            "nothing could be read".to_owned()
        } else {
            format!("recovered {}", copied.join(", "))
        };
        if self.incomplete.is_empty() {
            copied
        } else {
            format!(
                "{copied}; rows on damaged pages of {} are lost",
                self.incomplete.join(", ")
            )
        }
    }
}

/// How deep a check of `inbound.db` looks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Depth {
    /// Identity only (the hot paths).
    Identity,
    /// Identity and `PRAGMA quick_check` (page structure).
    Quick,
    /// Also `PRAGMA integrity_check`, which compares every index with its
    /// table: index damage passes `quick_check` yet fails writes as
    /// "malformed" and hides rows from indexed reads. Run when a read or
    /// write failed as corrupt (once per file, see `main_loop/session_db.rs`).
    Full,
}

pub struct Checked {
    pub generation: String,
    pub finding: Finding,
    pub stamp: Option<Stamp>,
}

enum Identity {
    Ours {
        session_id: String,
        generation: String,
    },
    None,
}

/// Checks the session's `inbound.db` against the recorded generation and
/// repairs what it finds (see the module doc); `depth` says which
/// corruption checks run. An error (e.g. BUSY) changes nothing: check again
/// later.
pub fn check_inbound(
    dir: &SessionDir,
    session_id: &str,
    recorded: Option<&str>,
    depth: Depth,
) -> Result<Checked> {
    let path = dir.inbound_db();
    let done = |generation: String, finding: Finding| Checked {
        generation,
        finding,
        stamp: stamp(&path),
    };
    if std::fs::symlink_metadata(&path).is_err() {
        let g = fresh_inbound(dir, session_id, None)?;
        return Ok(done(g, Finding::Vanished));
    }
    let read = read_identity(&path, depth);
    let ident = match read {
        Ok(i) => i,
        Err(e) if e.corrupt => {
            let (g, r) = recover_inbound(dir, session_id, &e.message)?;
            return Ok(done(g, Finding::Recovered(r)));
        }
        Err(e) => anyhow::bail!("checking {}: {}", path.display(), e.message),
    };
    match ident {
        Identity::Ours {
            session_id: sid,
            generation,
        } if sid == session_id => match recorded {
            Some(r) if r != generation => {
                let recorded = r.to_owned();
                Ok(done(
                    generation.clone(),
                    Finding::OtherGeneration {
                        found: generation,
                        recorded,
                    },
                ))
            }
            _ => {
                migrate(&path)?;
                Ok(done(generation, Finding::Same))
            }
        },
        Identity::None if recorded.is_none() => {
            // A session made before identities existed: adopt the file.
            let g = new_generation();
            let mut c = open_existing_writer(&path, BUSY)?;
            schema::migrate_inbound(&c)?;
            write_identity(&mut c, session_id, &g)?;
            Ok(done(g, Finding::Same))
        }
        other => {
            let why = match other {
                Identity::Ours { session_id: s, .. } => format!("it is session {s}'s file"),
                Identity::None if std::fs::symlink_metadata(&path).is_ok_and(|m| m.len() == 0) => {
                    "it is empty (zero length)".to_owned()
                }
                Identity::None => "it carries no session identity".to_owned(),
            };
            // Not this session's data: kept in the host-only session
            // folder, out of the agent's sight (in/ is bound into its sandbox).
            let kept = aside(&path, "foreign", Some(dir.root()))?;
            let g = fresh_inbound(dir, session_id, None)?;
            Ok(done(g, Finding::Foreign { why, kept }))
        }
    }
}

/// Quick-checks `outbound.db` (only while no runner of the session is
/// alive) and, if corrupt, recovers its readable rows into a fresh file,
/// keeping the damaged one aside. `Ok(None)`: fine or absent.
pub fn check_outbound(dir: &SessionDir) -> Result<Option<Recovery>> {
    let path = dir.outbound_db();
    if std::fs::symlink_metadata(&path).is_err() {
        return Ok(None);
    }
    let problem = match open_reader(&path, BUSY) {
        Err(e) if e.is_corruption() => Some(e.to_string()),
        Err(e) => return Err(e).with_context(|| format!("checking {}", path.display())),
        Ok(c) => {
            bound_time(&c, std::time::Instant::now() + RECOVERY_LIMIT);
            match quick_check(&c) {
                Ok(()) => None,
                Err(e) if e.corrupt => Some(e.message),
                Err(e) => anyhow::bail!("checking {}: {}", path.display(), e.message),
            }
        }
    };
    let Some(error) = problem else {
        return Ok(None);
    };
    let r = rebuild(
        &path,
        schema::OUTBOUND_TABLES,
        &|c| schema::migrate_outbound(c).map_err(Into::into),
        &error,
    )?;
    Ok(Some(r))
}

struct ReadErr {
    corrupt: bool,
    message: String,
}

impl From<rusqlite::Error> for ReadErr {
    fn from(e: rusqlite::Error) -> Self {
        ReadErr {
            corrupt: pinch_proto::is_corruption(&e),
            message: e.to_string(),
        }
    }
}

impl From<pinch_proto::ProtoError> for ReadErr {
    fn from(e: pinch_proto::ProtoError) -> Self {
        ReadErr {
            corrupt: e.is_corruption(),
            message: e.to_string(),
        }
    }
}

fn quick_check(c: &Connection) -> Result<(), ReadErr> {
    pragma_check(c, "quick_check")
}

/// `PRAGMA quick_check` or `integrity_check`: "ok", or the damage found.
fn pragma_check(c: &Connection, which: &str) -> Result<(), ReadErr> {
    let mut st = c.prepare(&format!("PRAGMA {which}"))?;
    let lines: Vec<String> = st
        .query_map([], |r| r.get::<_, String>(0))?
        .collect::<Result<_, _>>()?;
    if lines.len() == 1 && lines[0] == "ok" {
        return Ok(());
    }
    Err(ReadErr {
        corrupt: true,
        message: format!(
            "{which}: {}",
            lines.into_iter().take(3).collect::<Vec<_>>().join("; ")
        ),
    })
}

fn read_identity(path: &Path, depth: Depth) -> Result<Identity, ReadErr> {
    // Read-write (no create): rolls back a hot journal of our own writes.
    let c = open_existing_writer(path, BUSY)?;
    if depth >= Depth::Quick {
        bound_time(&c, std::time::Instant::now() + RECOVERY_LIMIT);
        quick_check(&c)?;
    }
    if depth == Depth::Full {
        pragma_check(&c, "integrity_check")?;
    }
    c.query_row("SELECT count(*) FROM sqlite_master", [], |r| {
        r.get::<_, i64>(0)
    })?;
    if schema::columns(&c, "session_identity")?.is_empty() {
        return Ok(Identity::None);
    }
    Ok(match pinch_proto::inbound::identity(&c)? {
        Some((session_id, generation)) => Identity::Ours {
            session_id,
            generation,
        },
        None => Identity::None,
    })
}

fn migrate(path: &Path) -> Result<()> {
    let c = open_existing_writer(path, BUSY)?;
    schema::migrate_inbound(&c)?;
    Ok(())
}

fn new_generation() -> String {
    pinch_proto::runner_config::random_hex(8)
}

fn write_identity(c: &mut Connection, session_id: &str, generation: &str) -> Result<()> {
    let tx = pinch_proto::open::write_tx(c)?;
    pinch_proto::inbound::set_identity(&tx, session_id, generation, &pinch_proto::time::now())?;
    tx.commit()?;
    Ok(())
}

/// Writes the identity into a file the host just made (session creation).
pub fn stamp_new_file(path: &Path, session_id: &str) -> Result<String> {
    let g = new_generation();
    let mut c = open_existing_writer(path, BUSY)?;
    schema::migrate_inbound(&c)?;
    write_identity(&mut c, session_id, &g)?;
    Ok(g)
}

/// A temporary name next to `path` for a file being built.
fn tmp_next_to(path: &Path) -> PathBuf {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    path.with_file_name(format!(
        ".{name}.new-{}",
        pinch_proto::runner_config::random_hex(4)
    ))
}

/// Moves `path` (and a journal beside it) aside as
/// `<name>.<what>-<UTC timestamp>`, beside it or into `into` (same file
/// system); returns the new path.
fn aside(path: &Path, what: &str, into: Option<&Path>) -> Result<PathBuf> {
    let ts = jiff::Timestamp::now()
        .strftime("%Y%m%dT%H%M%SZ")
        .to_string();
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let kept = match into {
        Some(d) => d.join(format!("{name}.{what}-{ts}")),
        None => path.with_file_name(format!("{name}.{what}-{ts}")),
    };
    std::fs::rename(path, &kept)
        .with_context(|| format!("moving {} aside to {}", path.display(), kept.display()))?;
    let journal = path.with_file_name(format!("{name}-journal"));
    if std::fs::symlink_metadata(&journal).is_ok() {
        let _ = std::fs::rename(
            &journal,
            kept.with_file_name(format!("{name}-journal.{what}-{ts}")),
        );
    }
    Ok(kept)
}

fn sync_parent(path: &Path) -> Result<()> {
    let parent = path.parent().unwrap_or(Path::new("."));
    std::fs::File::open(parent)
        .and_then(|f| f.sync_all())
        .with_context(|| format!("syncing {}", parent.display()))
}

/// Adds rows to a fresh file before it is moved into place.
type Fill<'a> = &'a dyn Fn(&Connection) -> Result<()>;

/// Makes a fresh `inbound.db` (schema and identity; `fill` adds rows) under
/// a temporary name and renames it into place.
fn fresh_inbound(dir: &SessionDir, session_id: &str, fill: Option<Fill<'_>>) -> Result<String> {
    let path = dir.inbound_db();
    let tmp = tmp_next_to(&path);
    let build = || -> Result<String> {
        let mut c = open_writer(&tmp, BUSY)?;
        schema::migrate_inbound(&c)?;
        if let Some(f) = fill {
            f(&c)?;
        }
        let g = new_generation();
        write_identity(&mut c, session_id, &g)?;
        drop(c);
        std::fs::rename(&tmp, &path)
            .with_context(|| format!("moving a fresh {} into place", path.display()))?;
        sync_parent(&path)?;
        Ok(g)
    };
    build().inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

fn recover_inbound(dir: &SessionDir, session_id: &str, error: &str) -> Result<(String, Recovery)> {
    let path = dir.inbound_db();
    let tables: Vec<&Table> = schema::INBOUND_TABLES
        .iter()
        .copied()
        .filter(|t| t.name != "session_identity")
        .collect();
    let result = std::cell::RefCell::new(None);
    let fill = |fresh: &Connection| -> Result<()> {
        *result.borrow_mut() = Some(copy_readable(&path, fresh, &tables)?);
        Ok(())
    };
    // Build the fresh file first (the damaged one is still in place), then
    // move the damaged one aside and the fresh one in.
    let work = dir.root().join(format!(
        ".recover-{}",
        pinch_proto::runner_config::random_hex(4)
    ));
    let staged = SessionDir(work.clone());
    std::fs::create_dir_all(staged.in_dir())
        .with_context(|| format!("making a work folder {}", work.display()))?;
    let moved = (|| -> Result<(String, PathBuf)> {
        let g = fresh_inbound(&staged, session_id, Some(&fill))?;
        let kept = aside(&path, "corrupt", None)?;
        std::fs::rename(staged.inbound_db(), &path)
            .with_context(|| format!("moving the recovered {} into place", path.display()))?;
        sync_parent(&path)?;
        Ok((g, kept))
    })();
    let _ = std::fs::remove_dir_all(&work);
    let (g, kept) = moved?;
    let (copied, incomplete) = result.into_inner().unwrap_or_default();
    Ok((
        g,
        Recovery {
            error: error.to_owned(),
            kept,
            copied,
            incomplete,
        },
    ))
}

/// Rebuilds a corrupt file in place from its readable rows (outbound.db).
fn rebuild(
    path: &Path,
    tables: &[&Table],
    migrate: &dyn Fn(&Connection) -> Result<()>,
    error: &str,
) -> Result<Recovery> {
    let tmp = tmp_next_to(path);
    let (copied, incomplete) = {
        let c = open_writer(&tmp, BUSY)?;
        migrate(&c)?;
        copy_readable(path, &c, tables).inspect_err(|_| {
            let _ = std::fs::remove_file(&tmp);
        })?
    };
    let kept = aside(path, "corrupt", None)?;
    std::fs::rename(&tmp, path)
        .with_context(|| format!("moving the recovered {} into place", path.display()))?;
    sync_parent(path)?;
    Ok(Recovery {
        error: error.to_owned(),
        kept,
        copied,
        incomplete,
    })
}

type Copied = (Vec<(String, u64)>, Vec<String>);

/// The longest a check or recovery of one file may take; SQLite is
/// interrupted past it (what was copied by then is kept). The file is the
/// agent's to shape (outbound.db), so its size and shape bound nothing.
pub const RECOVERY_LIMIT: std::time::Duration = std::time::Duration::from_secs(120);

extern "C" fn past_deadline(deadline_ms: *mut std::ffi::c_void) -> std::ffi::c_int {
    (mono_ms() >= deadline_ms as usize as u64) as std::ffi::c_int
}

/// Interrupts every statement of `c` once `deadline` has passed (SQLite's
/// progress handler; the deadline travels as the handler's argument).
fn bound_time(c: &Connection, deadline: std::time::Instant) {
    let left = deadline.saturating_duration_since(std::time::Instant::now());
    let at = mono_ms().saturating_add(left.as_millis() as u64) as usize;
    // SAFETY: the handle is valid while `c` lives; the handler reads no
    // memory through its argument (a number, not a pointer).
    unsafe {
        rusqlite::ffi::sqlite3_progress_handler(
            c.handle(),
            10_000,
            Some(past_deadline),
            at as *mut std::ffi::c_void,
        );
    }
}

/// Copies every readable row of `tables` from the damaged file at `from`
/// into `to` (which has the schema). Never fails on the damage itself.
///
/// Bounded against a file shaped to make it loop or crawl: a scan stops
/// where the rowid fails to increase (forwards) or decrease (backwards),
/// as an interior page whose cells all point at one child makes SQLite
/// read that child again and again without an error; no more rows are
/// visited than the file has room for (pages × the most cells a page can
/// hold), nor more bytes of values than the file's size (no one value
/// longer either: `SQLITE_LIMIT_LENGTH`); SQLite is interrupted at [`RECOVERY_LIMIT`]; and each table is
/// copied in one transaction (a commit per row cost 0.85 ms of fsync).
fn copy_readable(from: &Path, to: &Connection, tables: &[&Table]) -> Result<Copied> {
    let deadline = std::time::Instant::now() + RECOVERY_LIMIT;
    let mut copied = Vec::new();
    let mut incomplete = Vec::new();
    let src = match open_reader(from, BUSY) {
        Ok(c) => c,
        Err(_) => {
            return Ok((
                Vec::new(),
                tables.iter().map(|t| t.name.to_owned()).collect(),
            ))
        }
    };
    bound_time(&src, deadline);
    // A table-leaf cell takes at least 4 bytes (its pointer, payload
    // size, rowid, a header byte), so no page holds more than size / 4.
    let room = {
        let pages = src
            .query_row("PRAGMA page_count", [], |r| r.get::<_, i64>(0))
            .unwrap_or(0)
            .max(0) as u64;
        let size = src
            .query_row("PRAGMA page_size", [], |r| r.get::<_, i64>(0))
            .unwrap_or(65_536)
            .max(512) as u64;
        (pages.saturating_mul(size / 4), pages.saturating_mul(size))
    };
    let (room, file_bytes) = room;
    // No value is longer than the file, nor all of them together: an
    // overflow chain that leads back into itself reads no further.
    // SAFETY: the handle is valid while `src` lives.
    unsafe {
        rusqlite::ffi::sqlite3_limit(
            src.handle(),
            rusqlite::ffi::SQLITE_LIMIT_LENGTH,
            file_bytes.clamp(1, i32::MAX as u64) as i32,
        );
    }
    // Bytes of values read, over all tables.
    let mut read = 0u64;
    for t in tables {
        let have = match schema::columns(&src, t.name) {
            Ok(h) => h,
            Err(_) => {
                incomplete.push(t.name.to_owned());
                continue;
            }
        };
        let cols: Vec<&str> = t
            .columns
            .iter()
            .map(|(n, _)| *n)
            .filter(|n| have.contains(*n))
            .collect();
        if cols.is_empty() {
            continue;
        }
        let insert = pinch_proto::schema::salvage_insert_sql(t, &cols);
        let tx = to.unchecked_transaction()?;
        let mut n = 0u64;
        let mut visited = 0u64;
        let mut last_fwd: Option<i64> = None;
        let mut put = |vals: Vec<rusqlite::types::Value>| -> Result<()> {
            use rusqlite::types::Value as V;
            visited += 1;
            read += vals
                .iter()
                .map(|v| match v {
                    V::Text(t) => t.len() as u64,
                    V::Blob(b) => b.len() as u64,
                    V::Null => 0,
                    _ => 1,
                })
                .sum::<u64>();
            if visited > room || read > file_bytes {
                anyhow::bail!("more rows or bytes than the file has room for");
            }
            n += tx
                .prepare_cached(&insert)?
                .execute(rusqlite::params_from_iter(vals))? as u64;
            Ok(())
        };
        // Forwards until the first error…
        let fwd = scan(&src, t, &cols, false, None, &mut |rowid, v| {
            last_fwd = Some(rowid);
            put(v)
        });
        let damaged = fwd.is_err();
        if damaged {
            // …then backwards from the end down to where it stopped.
            let _ = scan(&src, t, &cols, true, last_fwd, &mut |_, v| put(v));
        }
        tx.commit()?;
        if damaged {
            incomplete.push(t.name.to_owned());
        }
        copied.push((t.name.to_owned(), n));
    }
    Ok((copied, incomplete))
}

/// Reads `table` by rowid (forwards, or backwards down to `stop`), calling
/// `each` per row; returns at the first read error, or where the rowid
/// fails to move on (a B-tree that leads back into itself).
fn scan(
    src: &Connection,
    table: &pinch_proto::schema::Table,
    cols: &[&str],
    backwards: bool,
    stop: Option<i64>,
    each: &mut dyn FnMut(i64, Vec<rusqlite::types::Value>) -> Result<()>,
) -> Result<()> {
    let ncols = cols.len();
    let sql = pinch_proto::schema::salvage_scan_sql(table, cols, backwards);
    let mut st = src.prepare(&sql)?;
    let mut rows = if backwards {
        st.query([stop.unwrap_or(i64::MIN)])?
    } else {
        st.query([])?
    };
    let mut last: Option<i64> = None;
    while let Some(r) = rows.next()? {
        let rowid: i64 = r.get(0)?;
        if let Some(l) = last {
            if (backwards && rowid >= l) || (!backwards && rowid <= l) {
                anyhow::bail!("rowid {rowid} after {l}: the table's B-tree leads back into itself");
            }
        }
        last = Some(rowid);
        let vals = (1..=ncols)
            .map(|i| r.get::<_, rusqlite::types::Value>(i))
            .collect::<rusqlite::Result<Vec<_>>>()?;
        each(rowid, vals)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(t: &Path) -> SessionDir {
        let data = crate::paths::DataDir::new(t);
        crate::session::create_folder(&data, "ag", "s1").unwrap()
    }

    #[test]
    fn a_vanished_or_foreign_file_is_replaced_and_reported() {
        let t = tempfile::tempdir().unwrap();
        let dir = session(t.path());
        let first = check_inbound(&dir, "s1", None, Depth::Identity).unwrap();
        assert_eq!(first.finding, Finding::Same);
        let g = first.generation;
        let again = check_inbound(&dir, "s1", Some(&g), Depth::Quick).unwrap();
        assert_eq!(
            (again.finding, again.generation.as_str()),
            (Finding::Same, g.as_str())
        );

        std::fs::remove_file(dir.inbound_db()).unwrap();
        let v = check_inbound(&dir, "s1", Some(&g), Depth::Identity).unwrap();
        assert_eq!(v.finding, Finding::Vanished);
        assert_ne!(v.generation, g);

        std::fs::write(dir.inbound_db(), b"").unwrap();
        let f = check_inbound(&dir, "s1", Some(&v.generation), Depth::Identity).unwrap();
        match f.finding {
            Finding::Foreign { why, kept } => {
                assert!(why.contains("empty"), "{why}");
                assert!(kept.exists());
                // Out of the agent's sight: the host-only session folder.
                assert_eq!(kept.parent(), Some(dir.root()));
            }
            other => panic!("{other:?}"),
        }
        // Another session's file.
        let other = session(&t.path().join("o"));
        stamp_new_file(&other.inbound_db(), "s2").unwrap();
        std::fs::copy(other.inbound_db(), dir.inbound_db()).unwrap();
        let f2 = check_inbound(&dir, "s1", Some(&f.generation), Depth::Identity).unwrap();
        assert!(
            matches!(&f2.finding, Finding::Foreign { why, .. } if why.contains("s2")),
            "{:?}",
            f2.finding
        );
    }

    /// Writes `n` pending chat rows `m0…` whose content is `content(i)`.
    fn fill_inbound(dir: &SessionDir, n: usize, content: impl Fn(usize) -> String) {
        let mut c = open_existing_writer(&dir.inbound_db(), BUSY).unwrap();
        let tx = pinch_proto::open::write_tx(&mut c).unwrap();
        for i in 0..n {
            let row = pinch_proto::rows::NewInbound {
                id: format!("m{i}"),
                kind: "chat".into(),
                timestamp: pinch_proto::time::now(),
                trigger: true,
                content: content(i),
                ..Default::default()
            };
            pinch_proto::rows::insert_inbound(&tx, &row, 0).unwrap();
        }
        tx.commit().unwrap();
    }

    /// A real damaged leaf page in the middle of `messages_in`: the rows
    /// before and after it are recovered, the damaged file is kept aside,
    /// and the fresh file passes `quick_check`.
    #[test]
    fn a_damaged_page_loses_only_its_rows() {
        let t = tempfile::tempdir().unwrap();
        let dir = session(t.path());
        let g = check_inbound(&dir, "s1", None, Depth::Identity)
            .unwrap()
            .generation;
        fill_inbound(&dir, 300, |i| {
            format!("{{\"text\":\"row-{i:03}-{}\"}}", "x".repeat(900))
        });
        // The page holding row 150.
        let bytes = std::fs::read(dir.inbound_db()).unwrap();
        let at = bytes
            .windows(8)
            .position(|w| w == b"row-150-")
            .expect("row 150 on disk");
        let page = at / 4096;
        let mut damaged = bytes.clone();
        damaged[page * 4096..(page + 1) * 4096].fill(0xa5);
        std::fs::write(dir.inbound_db(), &damaged).unwrap();

        let c = check_inbound(&dir, "s1", Some(&g), Depth::Quick).unwrap();
        let Finding::Recovered(r) = c.finding else {
            panic!("{:?}", c.finding)
        };
        assert!(r.kept.exists() && r.kept.to_string_lossy().contains(".corrupt-"));
        let n = r.copied.iter().find(|(t, _)| t == "messages_in").unwrap().1;
        assert!(n > 250 && n < 300, "{r:?}");
        assert_eq!(r.incomplete, vec!["messages_in".to_string()]);
        assert!(r.summary().contains("lost"), "{}", r.summary());
        let fresh = open_reader(&dir.inbound_db(), BUSY).unwrap();
        quick_check(&fresh).map_err(|e| e.message).unwrap();
        let has = |id: &str| {
            fresh
                .query_row("SELECT 1 FROM messages_in WHERE id = ?1", [id], |_| Ok(()))
                .is_ok()
        };
        assert!(has("m0") && has("m299") && !has("m150"));
        // Recorded anew: the next check finds it the same.
        let again = check_inbound(&dir, "s1", Some(&c.generation), Depth::Quick).unwrap();
        assert_eq!(again.finding, Finding::Same);
    }

    /// A real index that no longer matches its table (the pending index
    /// holds wrong keys): `quick_check` says ok, writes to those rows fail
    /// "malformed" and the indexed read of pending work says there is
    /// none. The full check finds it and the rowid copy rebuilds the index.
    #[test]
    fn a_damaged_index_passes_quick_check_but_the_full_check_recovers_it() {
        let t = tempfile::tempdir().unwrap();
        let dir = session(t.path());
        let g = check_inbound(&dir, "s1", None, Depth::Identity)
            .unwrap()
            .generation;
        fill_inbound(&dir, 20, |i| format!("{{\"text\":\"q{i}\"}}"));
        // Damage the real index, keeping its number of entries: rebuilt
        // under a definition with other keys, then given its own back.
        let idx = "CREATE INDEX messages_in_pending ON messages_in(status, seq)";
        let set_sql = |sql: &str| {
            let c = Connection::open(dir.inbound_db()).unwrap();
            c.execute_batch("PRAGMA writable_schema = ON").unwrap();
            c.execute(
                "UPDATE sqlite_master SET sql = ?1 WHERE name = 'messages_in_pending'",
                [sql],
            )
            .unwrap();
        };
        set_sql("CREATE INDEX messages_in_pending ON messages_in(status || 'x', seq)");
        Connection::open(dir.inbound_db())
            .unwrap()
            .execute_batch("REINDEX messages_in_pending")
            .unwrap();
        set_sql(idx);
        let pending = |p: &Path| -> i64 {
            open_reader(p, BUSY)
                .unwrap()
                .query_row(
                    "SELECT count(*) FROM messages_in INDEXED BY messages_in_pending WHERE status = 'pending'",
                    [],
                    |r| r.get(0),
                )
                .unwrap()
        };
        assert_eq!(pending(&dir.inbound_db()), 0, "the damage hides the rows");
        let w = open_existing_writer(&dir.inbound_db(), BUSY).unwrap();
        let e = w
            .execute(
                "UPDATE messages_in SET status = 'completed' WHERE id = 'm3'",
                [],
            )
            .unwrap_err();
        assert!(pinch_proto::is_corruption(&e), "{e}");
        drop(w);

        // What the exit check sees: nothing.
        let quick = check_inbound(&dir, "s1", Some(&g), Depth::Quick).unwrap();
        assert_eq!(quick.finding, Finding::Same);
        // What a failed write leads to: found and recovered.
        let full = check_inbound(&dir, "s1", Some(&g), Depth::Full).unwrap();
        let Finding::Recovered(r) = full.finding else {
            panic!("{:?}", full.finding)
        };
        assert!(r.error.contains("integrity_check"), "{}", r.error);
        assert_eq!(
            r.copied.iter().find(|(t, _)| t == "messages_in").unwrap().1,
            20
        );
        assert_eq!(pending(&dir.inbound_db()), 20);
        let again = check_inbound(&dir, "s1", Some(&full.generation), Depth::Full).unwrap();
        assert_eq!(again.finding, Finding::Same);
    }

    /// Points every child pointer of a table's interior root page at its
    /// first child: a B-tree that leads back into itself. SQLite reads
    /// that child again and again without an error; only quick_check sees
    /// it ("2nd reference to page").
    fn loop_root(db: &Path, table: &str) {
        let (root, size): (i64, usize) = {
            let c = Connection::open(db).unwrap();
            (
                c.query_row(
                    "SELECT rootpage FROM sqlite_master WHERE name = ?1",
                    [table],
                    |r| r.get(0),
                )
                .unwrap(),
                c.query_row("PRAGMA page_size", [], |r| r.get::<_, i64>(0))
                    .unwrap() as usize,
            )
        };
        let mut bytes = std::fs::read(db).unwrap();
        let at = (root as usize - 1) * size;
        let page = &mut bytes[at..at + size];
        assert_eq!(page[0], 5, "an interior table page");
        let cells = u16::from_be_bytes([page[3], page[4]]) as usize;
        assert!(cells >= 10, "{cells} cells");
        let ptr = |page: &[u8], i: usize| {
            u16::from_be_bytes([page[12 + 2 * i], page[13 + 2 * i]]) as usize
        };
        let first: [u8; 4] = page[ptr(page, 0)..ptr(page, 0) + 4].try_into().unwrap();
        for i in 0..cells {
            let o = ptr(page, i);
            page[o..o + 4].copy_from_slice(&first);
        }
        page[8..12].copy_from_slice(&first);
        std::fs::write(db, &bytes).unwrap();
    }

    /// A crafted outbound.db whose B-tree loops: the recovery's scan stops
    /// where the rowid fails to increase instead of reading the same page
    /// once per interior cell (with a deeper fan, for ever).
    #[test]
    fn a_looping_btree_is_scanned_once_not_for_ever() {
        let t = tempfile::tempdir().unwrap();
        let dir = session(t.path());
        {
            let c = open_writer(&dir.outbound_db(), BUSY).unwrap();
            c.execute_batch("BEGIN").unwrap();
            for i in 0..200 {
                c.execute(
                    "INSERT INTO messages_out (id, seq, timestamp, kind, content) VALUES (?1, ?2, 'x', 'chat', ?3)",
                    rusqlite::params![format!("o{i}"), 2 * i + 1, format!("out-{i:03}-{}", "y".repeat(900))],
                )
                .unwrap();
            }
            c.execute_batch("COMMIT").unwrap();
        }
        loop_root(&dir.outbound_db(), "messages_out");
        let src = open_reader(&dir.outbound_db(), BUSY).unwrap();
        let mut visits = 0;
        let r = scan(
            &src,
            &pinch_proto::schema::MESSAGES_OUT,
            &["id"],
            false,
            None,
            &mut |_, _| {
                visits += 1;
                Ok(())
            },
        );
        assert!(r.is_err(), "the loop is reported as damage");
        assert!(visits <= 10, "{visits} rows visited: the scan looped");
        drop(src);
        let r = check_outbound(&dir).unwrap().expect("recovered");
        assert!(r.error.contains("quick_check"), "{}", r.error);
        assert_eq!(r.incomplete, vec!["messages_out".to_string()]);
        assert_eq!(
            check_outbound(&dir).unwrap(),
            None,
            "the new file is healthy"
        );
    }

    /// A corrupt outbound.db (the host checks it only while no runner
    /// lives) is rebuilt from its readable rows; a healthy one is left be.
    #[test]
    fn a_corrupt_outbound_db_is_rebuilt_and_a_healthy_one_left_alone() {
        let t = tempfile::tempdir().unwrap();
        let dir = session(t.path());
        {
            let c = open_writer(&dir.outbound_db(), BUSY).unwrap();
            for i in 0..200 {
                c.execute(
                    "INSERT INTO messages_out (id, seq, timestamp, kind, content) VALUES (?1, ?2, 'x', 'chat', ?3)",
                    rusqlite::params![format!("o{i}"), 2 * i + 1, format!("out-{i:03}-{}", "y".repeat(900))],
                )
                .unwrap();
            }
        }
        assert_eq!(check_outbound(&dir).unwrap(), None);
        let mut bytes = std::fs::read(dir.outbound_db()).unwrap();
        let at = bytes.windows(8).position(|w| w == b"out-100-").unwrap();
        let page = at / 4096;
        bytes[page * 4096..(page + 1) * 4096].fill(0xa5);
        std::fs::write(dir.outbound_db(), &bytes).unwrap();
        let r = check_outbound(&dir).unwrap().expect("recovered");
        let n = r
            .copied
            .iter()
            .find(|(t, _)| t == "messages_out")
            .unwrap()
            .1;
        assert!(n > 150 && n < 200, "{r:?}");
        assert!(r.kept.exists());
        assert_eq!(
            check_outbound(&dir).unwrap(),
            None,
            "the new file is healthy"
        );
    }
}
