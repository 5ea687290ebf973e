//! Reading the files an agent sent (SPEC §6, §7.8): the runner copies each
//! into `outbox/<messages_out id>/<name>` and names it in the row's
//! `files`. Both the row and the folder are written from inside the
//! sandbox, so they are untrusted: a compromised runner could name
//! `../../etc/shadow`, plant a symlink to a host file, or swap a folder for
//! a symlink. [`open_checked`] opens only a regular file directly inside
//! the row's folder: plain names (no `/`, `..`, NUL or control
//! characters), no symlink at either level (`lstat` and `O_NOFOLLOW`), real
//! path containment, a size cap — and it returns the open file, so what is
//! read is what was checked (no swap between check and read).

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Largest file an agent may send (SPEC §7 limits: outbox file 50 MiB).
pub const MAX_OUTBOX_FILE: u64 = 50 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    #[error("{0:?} is not a plain file name (no `/`, `..`, leading `.`, NUL or control characters); refused")]
    BadName(String),
    #[error("the message's outbox folder {0} is missing")]
    NoFolder(PathBuf),
    #[error("{0} is a symlink or not a regular file/folder; refused")]
    NotRegular(PathBuf),
    #[error("{0} lies outside the session's outbox; refused")]
    Escapes(PathBuf),
    #[error("{path} is {size} bytes; files up to {MAX_OUTBOX_FILE} bytes can be sent")]
    TooLarge { path: PathBuf, size: u64 },
    #[error("{path} is missing")]
    Missing { path: PathBuf },
    #[error("reading {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
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
/// Returns the file and its size.
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
    let io_err = |path: &Path| {
        let path = path.to_owned();
        move |source: io::Error| OutboxError::Io { path, source }
    };
    let root = fs::canonicalize(outbox_root).map_err(io_err(outbox_root))?;
    let dir = outbox_root.join(row_id);
    match fs::symlink_metadata(&dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => return Err(OutboxError::NotRegular(dir)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(OutboxError::NoFolder(dir)),
        Err(e) => return Err(io_err(&dir)(e)),
    }
    let real_dir = fs::canonicalize(&dir).map_err(io_err(&dir))?;
    if real_dir.parent() != Some(root.as_path()) {
        return Err(OutboxError::Escapes(real_dir));
    }
    let path = real_dir.join(name);
    let f = match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(&path)
    {
        Ok(f) => f,
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Err(OutboxError::NotRegular(path))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(OutboxError::Missing { path }),
        Err(e) => return Err(io_err(&path)(e)),
    };
    // The opened file itself (not the name, which could be swapped now).
    let m = f.metadata().map_err(io_err(&path))?;
    if !m.is_file() {
        return Err(OutboxError::NotRegular(path));
    }
    if m.len() > MAX_OUTBOX_FILE {
        return Err(OutboxError::TooLarge {
            path,
            size: m.len(),
        });
    }
    Ok((f, m.len()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
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
            Err(OutboxError::NotRegular(_))
        ));
        // a symlink as the row folder
        symlink(&outside, outbox.join("r2")).unwrap();
        assert!(matches!(
            open_checked(&outbox, "r2", "secret"),
            Err(OutboxError::NotRegular(_))
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
}
