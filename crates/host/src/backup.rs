//! Rolling online backups of the central DB (issue 15): SQLite's online
//! backup API copies `pinch.db` into `backups/pinch.db.<UTC time>` while the
//! host runs, on a timer and at a clean shutdown, keeping the newest few.
//!
//! The copy reads through its own connection on a blocking thread, so the
//! main loop never waits for it (WAL: a reader does not block the writer).
//! It goes in steps of [`PAGES_PER_STEP`] pages; a write by the host between
//! steps restarts the copy, so after [`MAX_RESTARTS`] restarts the rest is
//! copied in one step (one read transaction, still no wait for the writer).
//! Each backup is written under a temporary name (0600), checked with
//! `PRAGMA quick_check`, switched to a plain rollback journal (one
//! self-contained file), fsynced and renamed into place; the folder is
//! fsynced too.

use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use pinch_proto::rusqlite::{self, backup::StepResult, Connection, OpenFlags};

use crate::paths::DataDir;

/// Backup file names: `pinch.db.<YYYYMMDDTHHMMSS.mmmZ>` (string order =
/// time order).
pub const PREFIX: &str = "pinch.db.";
pub const DEFAULT_EVERY: Duration = Duration::from_secs(15 * 60);
pub const DEFAULT_KEEP: usize = 8;
const PAGES_PER_STEP: i32 = 256;
const MAX_RESTARTS: u32 = 3;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("backing up the central DB {src} into {dst}: {what}: {err}; check free space and permissions in {dir}")]
    Io {
        src: PathBuf,
        dst: PathBuf,
        dir: PathBuf,
        what: &'static str,
        err: String,
    },
    #[error("the backup {dst} of {src} failed its check ({findings}); the central DB may be damaged: stop the host and run `pinch admin repair`")]
    Check {
        src: PathBuf,
        dst: PathBuf,
        findings: String,
    },
}

/// The file name for a backup taken now.
fn name_now() -> String {
    // 2026-12-04T22:57:39.123Z → 20261204T225739.123Z
    let t = pinch_proto::time::now();
    let compact: String = t.chars().filter(|c| *c != '-' && *c != ':').collect();
    format!("{PREFIX}{compact}")
}

/// Takes one backup now and drops all but the newest `keep`. Returns the
/// new backup's path.
pub fn backup_now(data: &DataDir, keep: usize) -> Result<PathBuf, Error> {
    let src_path = data.central_db();
    let dir = data.backups_dir();
    let mut name = name_now();
    for n in 1.. {
        if !dir.join(&name).exists() && !dir.join(format!(".{name}.tmp")).exists() {
            break;
        }
        name = format!("{}-{n}", name_now());
    }
    let dst = dir.join(&name);
    let tmp = dir.join(format!(".{name}.tmp"));
    let io = |what: &'static str| {
        let (src, dst, dir) = (src_path.clone(), dst.clone(), dir.clone());
        move |e: &dyn std::fmt::Display| Error::Io {
            src,
            dst,
            dir,
            what,
            err: e.to_string(),
        }
    };
    std::fs::create_dir_all(&dir).map_err(|e| io("creating the backups folder")(&e))?;
    let res = (|| {
        // 0600 from the start, whatever the umask.
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| io("creating the temporary file")(&e))?;
        let src = Connection::open_with_flags(
            &src_path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| io("opening the central DB")(&e))?;
        src.busy_timeout(Duration::from_secs(5))
            .map_err(|e| io("opening the central DB")(&e))?;
        let mut dst_conn = Connection::open(&tmp).map_err(|e| io("opening the backup")(&e))?;
        copy(&src, &mut dst_conn).map_err(|e| io("copying")(&e))?;
        drop(src);
        let findings: Vec<String> = dst_conn
            .prepare("PRAGMA quick_check")
            .and_then(|mut st| {
                st.query_map([], |r| r.get::<_, String>(0))?
                    .collect::<Result<Vec<_>, _>>()
            })
            .map_err(|e| io("checking the backup")(&e))?;
        if findings.iter().any(|f| f != "ok") {
            return Err(Error::Check {
                src: src_path.clone(),
                dst: dst.clone(),
                findings: findings.join("; "),
            });
        }
        // One self-contained file: no -wal beside it.
        dst_conn
            .query_row("PRAGMA journal_mode=DELETE", [], |r| r.get::<_, String>(0))
            .map_err(|e| io("finishing the backup")(&e))?;
        dst_conn
            .close()
            .map_err(|(_, e)| io("closing the backup")(&e))?;
        std::fs::File::open(&tmp)
            .and_then(|f| f.sync_all())
            .map_err(|e| io("syncing the backup")(&e))?;
        std::fs::rename(&tmp, &dst).map_err(|e| io("renaming the backup into place")(&e))?;
        std::fs::File::open(&dir)
            .and_then(|f| f.sync_all())
            .map_err(|e| io("syncing the backups folder")(&e))?;
        Ok(())
    })();
    if let Err(e) = res {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    rotate(data, keep);
    Ok(dst)
}

/// Copies `src` into `dst` in steps; see the module doc.
fn copy(src: &Connection, dst: &mut Connection) -> rusqlite::Result<()> {
    let b = rusqlite::backup::Backup::new(src, dst)?;
    let mut restarts = 0;
    let mut last_remaining = i32::MAX;
    loop {
        let pages = if restarts >= MAX_RESTARTS {
            -1
        } else {
            PAGES_PER_STEP
        };
        match b.step(pages)? {
            StepResult::Done => return Ok(()),
            StepResult::More | StepResult::Busy | StepResult::Locked => {
                let p = b.progress();
                if p.remaining > last_remaining {
                    restarts += 1;
                }
                last_remaining = p.remaining;
                std::thread::sleep(Duration::from_millis(1));
            }
            _ => std::thread::sleep(Duration::from_millis(1)),
        }
    }
}

/// Removes all but the newest `keep` backups (and stale temporaries).
fn rotate(data: &DataDir, keep: usize) {
    for old in backups(data).into_iter().skip(keep.max(1)) {
        if let Err(e) = std::fs::remove_file(&old) {
            tracing::warn!(path = %old.display(), "cannot remove an old backup: {e}");
        }
    }
}

/// Takes a backup off the async runtime, logging the outcome.
pub async fn backup_logged(data: DataDir, keep: usize) {
    match tokio::task::spawn_blocking(move || backup_now(&data, keep)).await {
        Ok(Ok(p)) => tracing::debug!(path = %p.display(), "backed up the central DB"),
        Ok(Err(e)) => tracing::error!("{e}"),
        Err(e) => tracing::error!("the central DB backup task failed: {e}"),
    }
}

/// The periodic backup: every `every` until `stop` turns true.
pub async fn run_periodic(
    data: DataDir,
    every: Duration,
    keep: usize,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    if every.is_zero() {
        return;
    }
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => backup_logged(data.clone(), keep).await,
            r = stop.changed() => if r.is_err() || *stop.borrow() { return },
        }
    }
}

/// Whether a file is a usable SQLite DB: opens read-only and passes
/// `PRAGMA integrity_check`. The error names the file and what SQLite said.
pub fn verify(path: &Path) -> Result<(), String> {
    let c = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(|e| format!("{}: SQLite: {e}", path.display()))?;
    let findings: Vec<String> = c
        .prepare("PRAGMA integrity_check")
        .and_then(|mut st| {
            st.query_map([], |r| r.get::<_, String>(0))?
                .collect::<Result<Vec<_>, _>>()
        })
        .map_err(|e| format!("{}: SQLite: {e}", path.display()))?;
    if findings.iter().any(|f| f != "ok") {
        return Err(format!(
            "{} fails SQLite's integrity_check: {}",
            path.display(),
            findings.join("; ")
        ));
    }
    Ok(())
}

/// The backups in `backups/`, newest first (names sort by time).
pub fn backups(data: &DataDir) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(data.backups_dir())
        .map(|rd| {
            rd.flatten()
                .filter(|e| {
                    let n = e.file_name();
                    let n = n.to_string_lossy();
                    n.starts_with(PREFIX) && !n.ends_with(".tmp")
                })
                .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v.reverse();
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn backups_appear_rotate_and_verify_while_the_db_is_written() {
        let t = tempfile::tempdir().unwrap();
        let data = DataDir::new(t.path());
        let mut c = crate::db::central::Central::open(&data.central_db()).unwrap();
        c.bootstrap("tester").unwrap();
        let mut made = Vec::new();
        for i in 0..5 {
            // The host's own connection stays open and writes between backups.
            c.conn
                .execute(
                    "INSERT INTO meta (key, value) VALUES (?1, 'x')",
                    [format!("k{i}")],
                )
                .unwrap();
            made.push(backup_now(&data, 3).unwrap());
        }
        let left = backups(&data);
        assert_eq!(left, made.iter().rev().take(3).cloned().collect::<Vec<_>>());
        for b in &left {
            verify(b).unwrap();
            let mode = std::fs::metadata(b).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", b.display());
            assert!(!b.with_extension("wal").exists());
        }
        // The newest backup holds the newest write.
        let r = Connection::open(&left[0]).unwrap();
        let n: i64 = r
            .query_row("SELECT count(*) FROM meta WHERE key LIKE 'k%'", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(n, 5);
        // No temporaries are left.
        let names: Vec<String> = std::fs::read_dir(data.backups_dir())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(names.iter().all(|n| n.starts_with(PREFIX)), "{names:?}");
    }
}
