//! The central DB as a file (issue 15): what a missing, empty or damaged
//! `pinch.db` means, and the words that say so.
//!
//! A data dir whose `sessions/` holds session folders has been used: a
//! missing, empty or never-bootstrapped `pinch.db` there is a lost DB, not
//! a first run. Booting fresh would orphan those sessions and their pending
//! messages, so the host refuses and names the recovery: the newest backup
//! (`pinch admin restore`) or a rebuild from the session folders (`pinch
//! admin repair`). Every error about the file names it, quotes SQLite, and
//! gives the fix that matches the cause (damage, a full disk, permissions).

use std::path::Path;

use pinch_proto::rusqlite::{self, ffi::ErrorCode};

use crate::paths::{DataDir, SessionDir};

/// One session folder found on disk: `sessions/<agent group>/<session>/`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FolderSession {
    pub agent_group_id: String,
    pub session_id: String,
    pub dir: SessionDir,
}

/// Every session folder under `sessions/` (half-built `.tmp-*` ones and
/// anything that is not a plain directory are skipped), sorted by path.
pub fn session_folders(data: &DataDir) -> Vec<FolderSession> {
    let mut out = Vec::new();
    let Ok(ags) = std::fs::read_dir(data.sessions_dir()) else {
        return out;
    };
    for ag in ags.flatten() {
        if !ag.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let ag_id = ag.file_name().to_string_lossy().into_owned();
        if ag_id.starts_with('.') {
            continue;
        }
        let Ok(entries) = std::fs::read_dir(ag.path()) else {
            continue;
        };
        for e in entries.flatten() {
            let sid = e.file_name().to_string_lossy().into_owned();
            if sid.starts_with('.') || !e.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            out.push(FolderSession {
                agent_group_id: ag_id.clone(),
                session_id: sid.clone(),
                dir: data.session(&ag_id, &sid),
            });
        }
    }
    out.sort_by(|a, b| a.dir.root().cmp(b.dir.root()));
    out
}

/// `pinch --data-dir <abs> admin …`: a command the owner can paste.
fn cmd(data: &DataDir, rest: &str) -> String {
    let root = std::path::absolute(data.root()).unwrap_or_else(|_| data.root().to_owned());
    format!("pinch --data-dir {} admin {rest}", root.display())
}

/// How to get a usable central DB back, with the exact commands.
pub fn recovery_hint(data: &DataDir) -> String {
    let repair = cmd(data, "repair");
    match crate::backup::backups(data).first() {
        Some(b) => format!(
            "with the host stopped, restore the newest backup ({}) with `{}`, or rebuild the sessions from their folders with `{repair}` (either keeps the damaged file aside)",
            b.display(),
            cmd(data, "restore")
        ),
        None => format!(
            "there is no backup in {}; with the host stopped, rebuild the sessions from their folders with `{repair}` (it keeps the damaged file aside)",
            data.backups_dir().display()
        ),
    }
}

/// Before the central DB is opened (and so created): a missing or empty
/// `pinch.db` beside session folders is a lost DB, not a first run.
pub fn check_before_open(data: &DataDir) -> anyhow::Result<()> {
    let path = data.central_db();
    let state = match std::fs::metadata(&path) {
        Ok(m) if m.len() == 0 => "is empty (0 bytes)",
        Ok(_) => return Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => "is missing",
        Err(e) => anyhow::bail!(
            "cannot read the central DB {}: {e}; check its owner and permissions",
            path.display()
        ),
    };
    refuse_if_used(data, state)
}

/// After opening: a DB that was never bootstrapped beside session folders
/// is a replacement, not the original.
pub fn check_after_open(data: &DataDir, bootstrapped: bool) -> anyhow::Result<()> {
    if bootstrapped {
        return Ok(());
    }
    refuse_if_used(data, "holds no install (it was replaced or emptied)")
}

fn refuse_if_used(data: &DataDir, state: &str) -> anyhow::Result<()> {
    let n = session_folders(data).len();
    if n == 0 {
        return Ok(());
    }
    anyhow::bail!(
        "the central DB {} {state}, but {} holds {n} session folder{}: this is not a first run, and starting fresh would orphan those sessions and their pending messages. Not starting. To recover: {}",
        data.central_db().display(),
        data.sessions_dir().display(),
        if n == 1 { "" } else { "s" },
        recovery_hint(data)
    )
}

/// What went wrong with the central DB, in words that name the file, quote
/// SQLite and give the fix for that cause. `doing` is what failed
/// ("opening", "checking", …).
pub fn describe(path: &Path, doing: &str, e: &rusqlite::Error) -> String {
    let data = DataDir::new(path.parent().unwrap_or(Path::new(".")));
    let fix = match e.sqlite_error_code() {
        Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt) => {
            format!("the file is damaged; {}", recovery_hint(&data))
        }
        Some(ErrorCode::DiskFull) => "the filesystem is full: free space there, or choose another location with --data-dir or PINCH_HOME".to_owned(),
        Some(ErrorCode::CannotOpen | ErrorCode::PermissionDenied | ErrorCode::ReadOnly) => format!(
            "check that {} and its folder exist and are writable by this user, or choose another location with --data-dir or PINCH_HOME",
            path.display()
        ),
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => {
            "another process holds it locked; stop it (only one pinch host per data dir)".to_owned()
        }
        Some(ErrorCode::SystemIoFailure) => format!(
            "the disk returned an I/O error: check the disk (dmesg) and free space; if the file is damaged, {}",
            recovery_hint(&data)
        ),
        _ => format!(
            "if the file is damaged, {}",
            recovery_hint(&data)
        ),
    };
    format!(
        "{doing} the central DB {} failed: SQLite: {e}; {fix}",
        path.display()
    )
}

/// `PRAGMA quick_check` found damage: the file, SQLite's first findings
/// and the fix.
pub fn describe_check(path: &Path, findings: &[String]) -> String {
    let data = DataDir::new(path.parent().unwrap_or(Path::new(".")));
    let shown: Vec<&str> = findings.iter().take(3).map(String::as_str).collect();
    format!(
        "the central DB {} is damaged: SQLite's quick_check says {:?}{}; {}",
        path.display(),
        shown.join("; "),
        if findings.len() > 3 {
            format!(" (and {} more)", findings.len() - 3)
        } else {
            String::new()
        },
        recovery_hint(&data)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn used_data_dir() -> (tempfile::TempDir, DataDir) {
        let t = tempfile::tempdir().unwrap();
        let data = DataDir::new(t.path().join("data"));
        std::fs::create_dir_all(data.sessions_dir().join("main").join("s0123456789ab")).unwrap();
        (t, data)
    }

    #[test]
    fn missing_or_empty_db_beside_sessions_is_refused() {
        let (_t, data) = used_data_dir();
        let e = check_before_open(&data).unwrap_err().to_string();
        assert!(e.contains("is missing") && e.contains("pinch.db"), "{e}");
        assert!(e.contains("admin repair") && e.contains("no backup"), "{e}");
        std::fs::write(data.central_db(), b"").unwrap();
        let e = check_before_open(&data).unwrap_err().to_string();
        assert!(e.contains("is empty"), "{e}");
        // A backup is named, newest first, with the restore command.
        std::fs::create_dir_all(data.backups_dir()).unwrap();
        for n in ["pinch.db.20260101T000000Z", "pinch.db.20260102T000000Z"] {
            std::fs::write(data.backups_dir().join(n), b"x").unwrap();
        }
        let e = check_before_open(&data).unwrap_err().to_string();
        assert!(
            e.contains("pinch.db.20260102T000000Z") && e.contains("admin restore"),
            "{e}"
        );
        assert!(check_after_open(&data, false).is_err());
        assert!(check_after_open(&data, true).is_ok());
    }

    #[test]
    fn a_fresh_data_dir_is_a_first_run() {
        let t = tempfile::tempdir().unwrap();
        let data = DataDir::new(t.path().join("data"));
        assert!(check_before_open(&data).is_ok());
        // An agent group folder with no session in it is still fresh, and
        // half-built folders do not count.
        std::fs::create_dir_all(data.sessions_dir().join("main").join(".tmp-s1")).unwrap();
        assert!(check_before_open(&data).is_ok());
        assert!(check_after_open(&data, false).is_ok());
    }
}
