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
//! row records it), and only when they could be read — a busy or damaged
//! `inbound.db` fails the open, and the next pass tries again.
//!
//! The ledger is never made anew silently (decision 0026). `inbound.db`'s
//! old table carries a [`MOVED`] row once the ledger exists. A ledger that
//! is missing where one existed (the marker, or replies already in
//! `outbound.db`: it is made before any runner), damaged, or emptied is rebuilt conservatively: the readable rows of a
//! damaged one are kept, and every other reply already in `outbound.db` is
//! recorded as delivered, so nothing is sent twice; the conversation is
//! told once which replies may not have reached it ([`Ledger::rebuilt`]).
//! A failed read or write of the ledger is a [`LedgerFault`]: the next pass
//! reopens and checks the ledger, never `inbound.db`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use pinch_proto::rows::{status, LedgerRow};
use pinch_proto::rusqlite::{self, Connection, OpenFlags};

use crate::paths::SessionDir;

/// The row written into `inbound.db`'s old `delivered` table once the
/// session's ledger exists: a later open that finds no `delivered.db`
/// knows the ledger was lost, not never made.
pub const MOVED: &str = "#ledger-moved-to-delivered.db";

/// The `last_error` of a row the rebuild recorded as delivered.
pub const ASSUMED: &str = "assumed delivered: the delivery ledger was lost or damaged";

/// The ledger file of a session.
pub fn path(dir: &SessionDir) -> PathBuf {
    dir.root().join("delivered.db")
}

/// A read or write of the ledger failed (context of the error): the
/// delivery task reopens and checks the ledger, not `inbound.db`.
#[derive(Debug)]
pub struct LedgerFault(pub String);

impl std::fmt::Display for LedgerFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

pub struct Ledger {
    conn: Connection,
    path: PathBuf,
    /// Set when this open rebuilt a lost or damaged ledger: the notice for
    /// the conversation (taken and sent once by the delivery task).
    pub rebuilt: Option<String>,
}

/// Why the ledger had to be rebuilt.
enum Loss {
    Missing,
    Damaged {
        error: String,
        kept: Option<PathBuf>,
    },
}

impl Ledger {
    /// Opens the session's ledger: checks an existing one (rebuilding it
    /// when damaged or emptied), makes it on a session's first pass
    /// (importing an older session's `inbound.db` ledger), rebuilds it when
    /// it was lost (see the module doc).
    pub fn open(dir: &SessionDir) -> Result<Ledger> {
        let path = path(dir);
        let inbound = dir.inbound_db();
        if std::fs::symlink_metadata(&path).is_ok() {
            let checked = Ledger::open_file(&path).and_then(|l| {
                l.check()?;
                Ok(l)
            });
            let l = match checked {
                Ok(l) => l,
                Err(e) if is_damage(&e) => {
                    let error = format!("{e:#}");
                    let kept = aside(&path);
                    let salvaged = kept
                        .as_deref()
                        .and_then(|k| pinch_proto::open::open_reader(k, crate::session::BUSY).ok())
                        .map(|c| read_all(&c).unwrap_or_default())
                        .unwrap_or_default();
                    let mut l = Ledger::open_file(&path)?;
                    l.insert(&salvaged, true)?;
                    l.rebuild(dir, Loss::Damaged { error, kept })?;
                    l.mark_moved(&inbound);
                    return Ok(l);
                }
                Err(e) => return Err(e),
            };
            l.mark_moved(&inbound);
            return Ok(l);
        }
        // No ledger file. What inbound.db's old table holds must be read
        // (or be truly absent) before anything is decided.
        let old = read_old(&inbound)?;
        let moved = old.iter().any(|(e, _)| e.message_out_id == MOVED);
        let old: Vec<_> = old
            .into_iter()
            .filter(|(e, _)| e.message_out_id != MOVED)
            .collect();
        // No marker (it went with a lost inbound.db too, or the ledger was
        // made before markers), yet the agent already wrote replies: a
        // ledger existed, since it is made at the session's first pass,
        // before any runner. Lost as well.
        let replied = !moved && old.is_empty() && !read_outbound(&dir.outbound_db())?.is_empty();
        if moved || replied {
            // It existed: lost. Rebuilt, never made anew empty.
            let mut l = Ledger::open_file(&path)?;
            l.insert(&old, false)?;
            l.rebuild(dir, Loss::Missing)?;
            l.mark_moved(&inbound);
            return Ok(l);
        }
        // Made for the first time (a new session, or one of an older pinch
        // whose ledger is imported), whole or not at all: built under a
        // temporary name with its rows and its record of making, closed (the
        // last close folds the WAL back into the file), renamed into place,
        // and only then recorded in inbound.db. A host killed half-way
        // leaves no ledger and no marker, which the next open takes for a
        // first making again — never a file or marker that reads as a lost
        // ledger, whose rebuild would count unsent replies as delivered.
        let tmp = path.with_file_name(format!(
            "delivered.db.tmp-{}",
            pinch_proto::runner_config::random_hex(4)
        ));
        let built = Ledger::open_file(&tmp).and_then(|mut l| l.insert(&old, true));
        if let Err(e) = built.and_then(|()| {
            std::fs::rename(&tmp, &path)
                .with_context(|| format!("putting the new delivery ledger at {}", path.display()))
        }) {
            for ext in ["", "-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{}{ext}", tmp.display()));
            }
            return Err(e);
        }
        if let Some(parent) = path.parent() {
            let _ = std::fs::File::open(parent).and_then(|d| d.sync_all());
        }
        let l = Ledger::open_file(&path)?;
        l.mark_moved(&inbound);
        if !old.is_empty() {
            tracing::info!(rows = old.len(), ledger = %path.display(), "moved the delivery ledger out of inbound.db");
        }
        Ok(l)
    }

    /// Opens (creating if needed) the file and its schema.
    fn open_file(path: &Path) -> Result<Ledger> {
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
            | OpenFlags::SQLITE_OPEN_NOFOLLOW;
        let conn = Connection::open_with_flags(path, flags)
            .with_context(|| format!("opening the delivery ledger {}", path.display()))?;
        let setup = || -> rusqlite::Result<()> {
            conn.busy_timeout(std::time::Duration::from_secs(5))?;
            conn.query_row("PRAGMA journal_mode=WAL", [], |_| Ok(()))?;
            conn.pragma_update(None, "synchronous", "FULL")?;
            Ok(())
        };
        setup()
            .map_err(anyhow::Error::from)
            .and_then(|()| Ok(pinch_proto::ledger::create(&conn)?))
            .with_context(|| format!("preparing the delivery ledger {}", path.display()))?;
        Ok(Ledger {
            conn,
            path: path.to_owned(),
            rebuilt: None,
        })
    }

    /// An existing ledger: `quick_check`, and the `imported` row every
    /// ledger gets when it is made (a file emptied or replaced has none).
    fn check(&self) -> Result<()> {
        let lines: Vec<String> = self
            .conn
            .prepare("PRAGMA quick_check")
            .and_then(|mut st| {
                st.query_map([], |r| r.get::<_, String>(0))?
                    .collect::<rusqlite::Result<_>>()
            })
            .with_context(|| format!("checking the delivery ledger {}", self.path.display()))?;
        if lines != ["ok"] {
            anyhow::bail!(
                "the delivery ledger {} is damaged: quick_check: {}",
                self.path.display(),
                lines.join("; ")
            );
        }
        if !self.made()? {
            anyhow::bail!(
                "the delivery ledger {} is damaged: it has no record of its making (emptied or replaced)",
                self.path.display()
            );
        }
        Ok(())
    }

    fn made(&self) -> Result<bool> {
        let done = pinch_proto::ledger::made_at(&self.conn)
            .with_context(|| format!("reading the delivery ledger {}", self.path.display()))?;
        Ok(done.is_some())
    }

    /// Inserts rows (never replacing one the ledger has); `made` also
    /// records that the ledger is made, in the same commit.
    fn insert(&mut self, rows: &[(LedgerRow, String)], made: bool) -> Result<()> {
        let path = self.path.clone();
        let tx = self.conn.transaction()?;
        let at = made.then(pinch_proto::time::now);
        pinch_proto::ledger::insert_keeping(&tx, rows, at.as_deref())?;
        tx.commit()
            .with_context(|| format!("writing the delivery ledger {}", path.display()))
    }

    /// Records every reply in `outbound.db` the ledger does not know as
    /// delivered (nothing is sent twice) and marks the ledger made; when
    /// there were any, or the file was damaged, prepares the notice.
    fn rebuild(&mut self, dir: &SessionDir, loss: Loss) -> Result<()> {
        let out = read_outbound(&dir.outbound_db())?;
        let mut assumed = Vec::new();
        for r in &out {
            if self.get(&r.id)?.is_none() {
                assumed.push(r);
            }
        }
        let rows: Vec<(LedgerRow, String)> = assumed
            .iter()
            .map(|r| {
                (
                    LedgerRow {
                        message_out_id: r.id.clone(),
                        platform_message_id: None,
                        status: status::DELIVERED.into(),
                        attempts: 0,
                        last_error: Some(ASSUMED.into()),
                    },
                    pinch_proto::time::now(),
                )
            })
            .collect();
        self.insert(&rows, true)?;
        if assumed.is_empty() && matches!(loss, Loss::Missing) {
            return Ok(()); // a new session: nothing was lost
        }
        let shown = self.path.display();
        let what = match &loss {
            Loss::Missing => format!("{shown} was deleted"),
            Loss::Damaged { error, kept } => format!(
                "{shown} was damaged ({error}); {}",
                match kept {
                    Some(k) => format!("the damaged file is kept at {}", k.display()),
                    None => "it could not be moved aside and was replaced".into(),
                }
            ),
        };
        let latest: Vec<String> = assumed
            .iter()
            .rev()
            .take(3)
            .map(|r| {
                let text = pinch_proto::content::ChatOut::parse(&r.content)
                    .ok()
                    .and_then(|c| match c {
                        pinch_proto::content::ChatOut::Text { text, .. } => Some(text),
                        _ => None,
                    })
                    .unwrap_or_else(|| r.kind.clone());
                // The agent's text, quoted in a host notice: one short line.
                let short: String = text
                    .chars()
                    .map(|c| if c.is_control() { ' ' } else { c })
                    .take(60)
                    .collect();
                format!("\"{short}\" ({}, id {})", r.timestamp, r.id)
            })
            .collect();
        let text = if assumed.is_empty() {
            format!(
                "This conversation's delivery record {what}. The host rebuilt it from what it could read; \
                 no reply was affected."
            )
        } else {
            format!(
                "This conversation's delivery record {what}. The host rebuilt it and treats the {} \
                 earlier replies it could not confirm as delivered, so none is sent twice. If you did \
                 not receive one of the latest of them, ask the assistant to repeat it: {}.",
                assumed.len(),
                latest.join("; ")
            )
        };
        tracing::error!(ledger = %shown, assumed = assumed.len(), "{text}");
        self.rebuilt = Some(text);
        Ok(())
    }

    /// Records [`MOVED`] in `inbound.db` if it is not there (a ledger made
    /// before the record existed; best effort, tried at every open).
    fn mark_moved(&self, inbound: &Path) {
        let done = pinch_proto::open::open_reader(inbound, crate::session::BUSY)
            .ok()
            .and_then(|c| pinch_proto::rows::ledger_get(&c, MOVED).ok())
            .flatten()
            .is_some();
        if done || std::fs::symlink_metadata(inbound).is_err() {
            return;
        }
        if let Err(e) = record_moved(inbound, &self.path) {
            tracing::debug!(file = %inbound.display(), "could not record the ledger in inbound.db (tried again at the next open): {e:#}");
        }
    }

    pub fn get(&self, out_id: &str) -> Result<Option<LedgerRow>> {
        pinch_proto::rows::ledger_get(&self.conn, out_id).context(LedgerFault(format!(
            "reading the delivery ledger {}",
            self.path.display()
        )))
    }

    /// Upserts an entry (one commit, one fsync).
    pub fn put(&self, e: &LedgerRow) -> Result<()> {
        pinch_proto::rows::ledger_put(&self.conn, e, &pinch_proto::time::now()).with_context(
            || {
                LedgerFault(format!(
                    "writing the delivery ledger {} (free space; delivery retries by itself)",
                    self.path.display()
                ))
            },
        )?;
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

fn read_all(c: &Connection) -> Result<Vec<(LedgerRow, String)>, pinch_proto::ProtoError> {
    pinch_proto::ledger::all(c)
}

/// The rows of `inbound.db`'s old `delivered` table. Empty only when the
/// file or the table is truly absent; any other failure (busy, damaged,
/// unreadable) is an error, so the open is tried again later.
fn read_old(inbound: &Path) -> Result<Vec<(LedgerRow, String)>> {
    let read = || -> Result<Vec<(LedgerRow, String)>> {
        match std::fs::symlink_metadata(inbound) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
            Ok(_) => {}
        }
        let c = pinch_proto::open::open_reader(inbound, crate::session::BUSY)?;
        if pinch_proto::schema::columns(&c, "delivered")?.is_empty() {
            return Ok(Vec::new());
        }
        Ok(read_all(&c)?)
    };
    read().with_context(|| {
        format!(
            "reading the old delivery ledger in {} before making the session's ledger (tried again at the next pass)",
            inbound.display()
        )
    })
}

/// Writes [`MOVED`] into `inbound.db`'s old `delivered` table: this
/// session's ledger is `ledger` (carried along when the file is recovered).
fn record_moved(inbound: &Path, ledger: &Path) -> Result<()> {
    let write = || -> Result<()> {
        let mut c = pinch_proto::open::open_existing_writer(inbound, crate::session::BUSY)?;
        pinch_proto::schema::migrate_inbound(&c)?;
        let tx = pinch_proto::open::write_tx(&mut c)?;
        pinch_proto::rows::ledger_put(
            &tx,
            &LedgerRow {
                message_out_id: MOVED.into(),
                platform_message_id: None,
                status: status::DELIVERED.into(),
                attempts: 0,
                last_error: Some(format!("the delivery ledger is {}", ledger.display())),
            },
            &pinch_proto::time::now(),
        )?;
        tx.commit()?;
        Ok(())
    };
    write().with_context(|| {
        format!(
            "recording the delivery ledger in {} (tried again at the next pass)",
            inbound.display()
        )
    })
}

/// Every reply in `outbound.db` (none when the file is absent).
fn read_outbound(out: &Path) -> Result<Vec<pinch_proto::rows::OutboundRow>> {
    if std::fs::symlink_metadata(out).is_err() {
        return Ok(Vec::new());
    }
    let c = pinch_proto::open::open_agent_reader(out, crate::session::BUSY)?;
    Ok(pinch_proto::rows::outbound_after(&c, i64::MIN)?)
}

/// Whether an error says the ledger file itself is unusable as a ledger.
fn is_damage(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<rusqlite::Error>()
            .is_some_and(pinch_proto::is_corruption)
            || pinch_proto::error::message_is_corruption(&c.to_string())
            || c.to_string().contains("is damaged:")
    })
}

/// Moves a damaged ledger (and its WAL files) aside; `None` if it could not be.
fn aside(path: &Path) -> Option<PathBuf> {
    let ts = jiff::Timestamp::now()
        .strftime("%Y%m%dT%H%M%SZ")
        .to_string();
    let kept = path.with_file_name(format!("delivered.db.corrupt-{ts}"));
    if let Err(e) = std::fs::rename(path, &kept) {
        tracing::error!(ledger = %path.display(), "cannot move the damaged delivery ledger aside, replacing it: {e}");
        let _ = std::fs::remove_file(path);
        for ext in ["-wal", "-shm"] {
            let _ = std::fs::remove_file(path.with_file_name(format!("delivered.db{ext}")));
        }
        return None;
    }
    for ext in ["-wal", "-shm"] {
        let p = path.with_file_name(format!("delivered.db{ext}"));
        if std::fs::symlink_metadata(&p).is_ok() {
            let _ = std::fs::rename(
                &p,
                path.with_file_name(format!("delivered.db{ext}.corrupt-{ts}")),
            );
        }
    }
    Some(kept)
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

    /// A session of an older pinch: its ledger row `old` in inbound.db.
    fn older_session() -> (tempfile::TempDir, SessionDir) {
        let t = tempfile::tempdir().unwrap();
        let data = crate::paths::DataDir::new(t.path());
        let dir = crate::session::create_folder(&data, "ag", "s1").unwrap();
        let mut c =
            pinch_proto::open::open_writer(&dir.inbound_db(), crate::session::BUSY).unwrap();
        let tx = pinch_proto::open::write_tx(&mut c).unwrap();
        pinch_proto::rows::ledger_put(&tx, &entry("old"), "2026-01-01T00:00:00.000Z").unwrap();
        tx.commit().unwrap();
        (t, dir)
    }

    /// Review of issue 15: an older session's inbound.db that cannot be
    /// read at the ledger's first open (damaged here; busy the same) must
    /// not end the import for good: the open fails, and once the file reads
    /// again its rows are imported — none of those replies is sent again.
    #[test]
    fn an_unreadable_inbound_db_at_first_open_is_imported_later_not_skipped() {
        let (_t, dir) = older_session();
        let good = dir.inbound_db().with_extension("good");
        std::fs::rename(dir.inbound_db(), &good).unwrap();
        std::fs::write(dir.inbound_db(), vec![0xa5u8; 4096]).unwrap();
        let e = Ledger::open(&dir)
            .err()
            .expect("the open waits for a readable inbound.db");
        assert!(format!("{e:#}").contains("inbound.db"), "{e:#}");
        std::fs::rename(&good, dir.inbound_db()).unwrap();
        let l = Ledger::open(&dir).unwrap();
        assert_eq!(l.get("old").unwrap(), Some(entry("old")));
        assert!(l.rebuilt.is_none());
    }

    /// A host killed while it made a session's first ledger leaves at most
    /// a temporary file: never a `delivered.db` without its record of
    /// making, nor a marker in inbound.db without the ledger (the marker
    /// is written after the rename), so the next open makes the ledger
    /// again instead of "rebuilding a lost one" — a false notice, and for
    /// a session of an older pinch, pending replies counted as delivered.
    #[test]
    fn a_ledger_made_half_way_leaves_nothing_that_reads_as_a_loss() {
        let t = tempfile::tempdir().unwrap();
        let data = crate::paths::DataDir::new(t.path());
        let dir = crate::session::create_folder(&data, "ag", "s1").unwrap();
        // The state a kill half-way through the making leaves.
        let left = dir.root().join("delivered.db.tmp-dead");
        drop(Ledger::open_file(&left).unwrap());
        let l = Ledger::open(&dir).unwrap();
        assert!(l.rebuilt.is_none(), "made, not rebuilt: {:?}", l.rebuilt);
        let inbound =
            pinch_proto::open::open_reader(&dir.inbound_db(), crate::session::BUSY).unwrap();
        let marker = pinch_proto::ledger::count_of(&inbound, MOVED).unwrap();
        assert_eq!(marker, 1, "the marker follows the made ledger");
        assert!(path(&dir).exists());
    }

    /// A reply in outbound.db, as a runner writes it.
    fn reply(dir: &SessionDir, id: &str, text: &str) {
        let mut c =
            pinch_proto::open::open_existing_writer(&dir.outbound_db(), crate::session::BUSY)
                .unwrap();
        let tx = pinch_proto::open::write_tx(&mut c).unwrap();
        pinch_proto::rows::insert_outbound(
            &tx,
            &pinch_proto::rows::NewOutbound {
                id: id.into(),
                timestamp: pinch_proto::time::now(),
                kind: "chat".into(),
                content: serde_json::json!({ "text": text }).to_string(),
                ..Default::default()
            },
            0,
        )
        .unwrap();
        tx.commit().unwrap();
    }

    /// Review of issue 15: a ledger deleted, or emptied to zero bytes, is
    /// not made anew empty: every reply already written is recorded as
    /// delivered, the notice names the latest, and a new session (no
    /// replies yet) is made quietly.
    #[test]
    fn a_lost_or_emptied_ledger_is_rebuilt_with_every_written_reply_delivered() {
        let t = tempfile::tempdir().unwrap();
        let data = crate::paths::DataDir::new(t.path());
        let dir = crate::session::create_folder(&data, "ag", "s1").unwrap();
        let l = Ledger::open(&dir).unwrap();
        assert!(l.rebuilt.is_none(), "a new session is made quietly");
        drop(l);
        reply(&dir, "r1", "first\nanswer");
        reply(&dir, "r2", "second answer");
        // Deleted; emptied; deleted together with inbound.db (its marker
        // gone: the replies in outbound.db still tell).
        for (emptied, inbound_too) in [(false, false), (true, false), (false, true)] {
            for ext in ["", "-wal", "-shm"] {
                let _ = std::fs::remove_file(dir.root().join(format!("delivered.db{ext}")));
            }
            if emptied {
                std::fs::write(path(&dir), b"").unwrap();
            }
            if inbound_too {
                std::fs::remove_file(dir.inbound_db()).unwrap();
                let c = pinch_proto::open::open_writer(&dir.inbound_db(), crate::session::BUSY)
                    .unwrap();
                pinch_proto::schema::migrate_inbound(&c).unwrap();
            }
            let l = Ledger::open(&dir).unwrap();
            for id in ["r1", "r2"] {
                let e = l.get(id).unwrap().expect("recorded");
                assert_eq!(e.status, status::DELIVERED, "{id}");
            }
            let told = l.rebuilt.clone().expect("the owner is told");
            assert!(
                told.contains("2 earlier replies")
                    && told.contains("\"second answer\"")
                    && told.contains("\"first answer\""),
                "{told}"
            );
            assert_eq!(told.contains("damaged"), emptied, "{told}");
            drop(l);
            // Told once: the rebuilt ledger opens as it was left.
            assert!(Ledger::open(&dir).unwrap().rebuilt.is_none());
        }
    }

    #[test]
    fn survives_the_loss_of_inbound_db_and_imports_an_old_ledger_once() {
        // An older session: its ledger row in inbound.db.
        let (_t, dir) = older_session();
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
