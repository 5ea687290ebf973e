//! Reading the files an agent sent (SPEC §6, §7.8): the runner copies each
//! into `outbox/<messages_out id>/<name>` and names it in the row's
//! `files`. Both the row and the folder are written from inside the
//! sandbox, so they are untrusted: a compromised runner could name
//! `../../etc/shadow`, plant a symlink to a host file, or keep swapping the
//! row's folder with a symlink (`renameat2(RENAME_EXCHANGE)`) while the host
//! reads it (issue 14).
//!
//! So [`open_checked`] never opens a path by name. The session's `outbox/`
//! is opened as a trusted folder (the session folder holding it is the
//! host's; the agent cannot replace it), the row's folder is opened beneath
//! that descriptor and the file beneath the row folder's, each with
//! `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS)`
//! ([`crate::safe_fs`]); plain names only (no `/`, `..`, NUL or control
//! characters); the opened descriptor must be a regular file within the
//! size cap. What is read is that descriptor: a swap after the open changes
//! nothing. [`snapshot`] copies it (bounded by the checked size) into a
//! sealed anonymous file, so a channel reading the file later reads exactly
//! the bytes that were checked, however the agent grows or rewrites its
//! copy meanwhile.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use crate::safe_fs::{self, Dir};

/// Largest file an agent may send (SPEC §7 limits: outbox file 50 MiB).
pub const MAX_OUTBOX_FILE: u64 = 50 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    #[error("{0:?} is not a plain file name (no `/`, `..`, leading `.`, NUL or control characters); refused")]
    BadName(String),
    #[error("the message's outbox folder {0} is missing")]
    NoFolder(PathBuf),
    #[error("{0} is, or passes through, a symlink; refused (the host never follows links in an outbox: put the file itself in outbox/<message id>/)")]
    Symlink(PathBuf),
    #[error("{0} is not a regular file (a folder, FIFO, socket or device); refused")]
    NotRegular(PathBuf),
    #[error("{0} is not a folder, or was swapped for a symlink while the host opened it; refused (the host never follows links in an outbox: put the file itself in outbox/<message id>/)")]
    NotAFolder(PathBuf),
    #[error("{path} is {size} bytes; files up to {MAX_OUTBOX_FILE} bytes can be sent")]
    TooLarge { path: PathBuf, size: u64 },
    #[error("{path} changed while it was being sent (it is no longer {size} bytes); send it again once it is complete")]
    Changed { path: PathBuf, size: u64 },
    #[error("{path} is missing")]
    Missing { path: PathBuf },
    #[error("reading {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

impl From<safe_fs::Error> for OutboxError {
    fn from(e: safe_fs::Error) -> Self {
        match e {
            safe_fs::Error::BadPath(p) => OutboxError::BadName(p.to_string_lossy().into_owned()),
            safe_fs::Error::Symlink(p) => OutboxError::Symlink(p),
            safe_fs::Error::NotDir(p) => OutboxError::NotAFolder(p),
            safe_fs::Error::NotRegular(p) | safe_fs::Error::Linked(p) => OutboxError::NotRegular(p),
            safe_fs::Error::Missing(path) => OutboxError::Missing { path },
            safe_fs::Error::Io { path, source } => OutboxError::Io { path, source },
        }
    }
}

/// Whether `name` is one plain path component we accept from a runner.
pub fn plain_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && !name.starts_with('.')
        && !name.contains(['/', '\\'])
        && !name.chars().any(char::is_control)
}

/// Opens `outbox_root/<row_id>/<name>` for reading, with the checks above.
/// Returns the file and its size (of the opened file, checked against the
/// cap; read at most that many bytes: the agent can still append).
pub fn open_checked(
    outbox_root: &Path,
    row_id: &str,
    name: &str,
) -> Result<(File, u64), OutboxError> {
    for part in [row_id, name] {
        if !plain_name(part) {
            return Err(OutboxError::BadName(part.to_owned()));
        }
    }
    // The outbox itself is a folder of the host's session folder.
    let root = Dir::open_trusted(outbox_root).map_err(|e| match e {
        safe_fs::Error::Missing(p) => OutboxError::NoFolder(p),
        e => e.into(),
    })?;
    let dir = root.dir(row_id).map_err(|e| match e {
        safe_fs::Error::Missing(p) => OutboxError::NoFolder(p),
        e => e.into(),
    })?;
    let f = dir.open_file(name)?;
    let path = dir.path().join(name);
    // The opened file itself (not the name, which could be swapped now).
    let m = f.metadata().map_err(|source| OutboxError::Io {
        path: path.clone(),
        source,
    })?;
    if m.len() > MAX_OUTBOX_FILE {
        return Err(OutboxError::TooLarge {
            path,
            size: m.len(),
        });
    }
    Ok((f, m.len()))
}

/// Copies exactly `size` bytes of `f` (a file [`open_checked`] returned,
/// `path` for messages) into a sealed anonymous file (`memfd`, no name in
/// any folder): what a channel then reads is what was checked. A file that
/// is now shorter or longer than `size` is refused ([`OutboxError::Changed`]).
pub fn snapshot(f: &mut File, size: u64, path: &Path) -> Result<File, OutboxError> {
    use rustix::fs::{MemfdFlags, SealFlags};
    let io_err = |source: io::Error| OutboxError::Io {
        path: path.to_owned(),
        source,
    };
    let fd = rustix::fs::memfd_create(
        "pinch-outbox",
        MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING,
    )
    .map_err(|e| io_err(e.into()))?;
    let mut copy = File::from(fd);
    let copied = io::copy(&mut Read::by_ref(f).take(size), &mut copy).map_err(io_err)?;
    let mut more = [0u8; 1];
    if copied != size || f.read(&mut more).map_err(io_err)? != 0 {
        return Err(OutboxError::Changed {
            path: path.to_owned(),
            size,
        });
    }
    copy.flush().map_err(io_err)?;
    io::Seek::rewind(&mut copy).map_err(io_err)?;
    rustix::fs::fcntl_add_seals(
        &copy,
        SealFlags::WRITE | SealFlags::GROW | SealFlags::SHRINK | SealFlags::SEAL,
    )
    .map_err(|e| io_err(e.into()))?;
    Ok(copy)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::symlink;

    fn read(r: Result<(File, u64), OutboxError>) -> String {
        let (mut f, _) = r.unwrap();
        let mut s = String::new();
        f.read_to_string(&mut s).unwrap();
        s
    }

    #[test]
    fn a_plain_file_in_its_row_folder_opens() {
        let d = tempfile::tempdir().unwrap();
        let outbox = d.path().join("outbox");
        fs::create_dir_all(outbox.join("r1")).unwrap();
        fs::write(outbox.join("r1/report.txt"), "numbers").unwrap();
        assert_eq!(read(open_checked(&outbox, "r1", "report.txt")), "numbers");
        assert!(matches!(
            open_checked(&outbox, "r1", "nope.txt"),
            Err(OutboxError::Missing { .. })
        ));
        assert!(matches!(
            open_checked(&outbox, "r2", "report.txt"),
            Err(OutboxError::NoFolder(_))
        ));
    }

    #[test]
    fn hostile_names_links_and_folders_are_refused() {
        let d = tempfile::tempdir().unwrap();
        let outbox = d.path().join("outbox");
        let outside = d.path().join("outside");
        fs::create_dir_all(outbox.join("r1")).unwrap();
        fs::create_dir_all(&outside).unwrap();
        fs::write(outside.join("secret"), "s").unwrap();
        fs::write(d.path().join("top"), "t").unwrap();
        for name in [
            "../../top",
            "../secret",
            "/etc/passwd",
            "..",
            ".",
            "",
            "a\0b",
            "a\nb",
            ".hidden",
            "a/b",
        ] {
            assert!(
                matches!(
                    open_checked(&outbox, "r1", name),
                    Err(OutboxError::BadName(_))
                ),
                "{name:?}"
            );
            assert!(
                matches!(
                    open_checked(&outbox, name, "x"),
                    Err(OutboxError::BadName(_))
                ),
                "row {name:?}"
            );
        }
        // a symlink as the file, to a host file
        symlink(outside.join("secret"), outbox.join("r1/link.txt")).unwrap();
        assert!(matches!(
            open_checked(&outbox, "r1", "link.txt"),
            Err(OutboxError::Symlink(_))
        ));
        // a symlink as the row folder
        symlink(&outside, outbox.join("r2")).unwrap();
        assert!(matches!(
            open_checked(&outbox, "r2", "secret"),
            Err(OutboxError::Symlink(_))
        ));
        // a folder or a fifo where a file should be
        fs::create_dir(outbox.join("r1/sub")).unwrap();
        assert!(matches!(
            open_checked(&outbox, "r1", "sub"),
            Err(OutboxError::NotRegular(_))
        ));
        let fifo = outbox.join("r1/fifo");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        assert!(
            matches!(
                open_checked(&outbox, "r1", "fifo"),
                Err(OutboxError::NotRegular(_))
            ),
            "a fifo never blocks the host"
        );
        // an outbox root that is itself reached through a symlink still works
        symlink(&outbox, d.path().join("alias")).unwrap();
        fs::write(outbox.join("r1/ok.txt"), "ok").unwrap();
        assert_eq!(
            read(open_checked(&d.path().join("alias"), "r1", "ok.txt")),
            "ok"
        );
    }

    #[test]
    fn over_the_cap_is_refused_before_reading() {
        let d = tempfile::tempdir().unwrap();
        let outbox = d.path().join("outbox");
        fs::create_dir_all(outbox.join("r1")).unwrap();
        let f = File::create(outbox.join("r1/big.bin")).unwrap();
        f.set_len(MAX_OUTBOX_FILE + 1).unwrap();
        assert!(matches!(
            open_checked(&outbox, "r1", "big.bin"),
            Err(OutboxError::TooLarge { .. })
        ));
    }

    #[test]
    fn refusals_name_the_cause_and_the_fix() {
        let d = tempfile::tempdir().unwrap();
        let outbox = d.path().join("outbox");
        fs::create_dir_all(outbox.join("r1")).unwrap();
        fs::write(d.path().join("secret"), "s").unwrap();
        // a relative link, a link to another row folder, a file as the row folder
        symlink("../../secret", outbox.join("r1/rel.txt")).unwrap();
        symlink("r1", outbox.join("r3")).unwrap();
        fs::write(outbox.join("r4"), "not a folder").unwrap();
        let e = open_checked(&outbox, "r1", "rel.txt").unwrap_err();
        assert!(
            matches!(e, OutboxError::Symlink(_))
                && e.to_string()
                    .contains("put the file itself in outbox/<message id>/"),
            "{e}"
        );
        assert!(
            matches!(
                open_checked(&outbox, "r3", "rel.txt"),
                Err(OutboxError::Symlink(_))
            ),
            "a link to another row folder too"
        );
        let e = open_checked(&outbox, "r4", "x").unwrap_err();
        assert!(
            matches!(e, OutboxError::NotAFolder(_)) && e.to_string().contains("not a folder"),
            "{e}"
        );
        let e = open_checked(&d.path().join("gone"), "r1", "x").unwrap_err();
        assert!(
            matches!(e, OutboxError::NoFolder(_)) && e.to_string().contains("missing"),
            "{e}"
        );
    }

    /// Once open, the row folder is held by descriptor: swapping its name
    /// for a link afterwards (the race of issue 14) changes nothing.
    #[test]
    fn a_swap_after_the_open_reads_the_checked_file() {
        let d = tempfile::tempdir().unwrap();
        let outbox = d.path().join("outbox");
        let outside = d.path().join("outside");
        fs::create_dir_all(outbox.join("r1")).unwrap();
        fs::create_dir_all(&outside).unwrap();
        fs::write(outbox.join("r1/f.txt"), "benign").unwrap();
        fs::write(outside.join("f.txt"), "SECRET").unwrap();
        let (mut f, size) = open_checked(&outbox, "r1", "f.txt").unwrap();
        fs::rename(outbox.join("r1"), outbox.join("r1-moved")).unwrap();
        symlink(&outside, outbox.join("r1")).unwrap();
        let mut s = String::new();
        f.read_to_string(&mut s).unwrap();
        assert_eq!((s.as_str(), size), ("benign", 6));
        assert!(
            matches!(
                open_checked(&outbox, "r1", "f.txt"),
                Err(OutboxError::Symlink(_))
            ),
            "and the next open refuses the link"
        );
    }

    #[test]
    fn a_snapshot_holds_exactly_the_checked_bytes() {
        let d = tempfile::tempdir().unwrap();
        let outbox = d.path().join("outbox");
        fs::create_dir_all(outbox.join("r1")).unwrap();
        fs::write(outbox.join("r1/f.txt"), "twelve bytes").unwrap();
        let (mut f, size) = open_checked(&outbox, "r1", "f.txt").unwrap();
        let mut snap = snapshot(&mut f, size, Path::new("r1/f.txt")).unwrap();
        // The agent rewrites its copy afterwards: the snapshot keeps the checked bytes.
        fs::write(
            outbox.join("r1/f.txt"),
            "rewritten, and much longer than before",
        )
        .unwrap();
        let mut s = String::new();
        snap.read_to_string(&mut s).unwrap();
        assert_eq!(s, "twelve bytes");
        // Sealed: no write, no growth.
        assert!(
            snap.write_all(b"x").is_err() && snap.set_len(100).is_err(),
            "sealed"
        );
        // A file that grew past what was checked is refused, not read on.
        let (mut f, _) = open_checked(&outbox, "r1", "f.txt").unwrap();
        let e = snapshot(&mut f, 12, Path::new("r1/f.txt")).unwrap_err();
        assert!(
            matches!(e, OutboxError::Changed { .. }) && e.to_string().contains("send it again"),
            "{e}"
        );
    }
}
