//! Opening files an agent asked to send (`outbox/<row id>/<name>`, decision
//! 0009). The outbox is written by the runner, so everything in it is
//! untrusted: plain names only, no symlinks at any step, the real path
//! inside the outbox's real path, a regular file, at most 50 MiB (SPEC §6.6).
//!
//! (Placeholder with the signature the lead's version has; replaced by it
//! when `main` lands it.)

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Largest outbox file sent (SPEC §6.6).
pub const MAX_OUTBOX_FILE: u64 = 50 << 20;

#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    #[error("{0:?} is not a plain file name")]
    BadName(String),
    #[error("{0} is missing")]
    Missing(PathBuf),
    #[error("{0} is a symlink or not a regular file; refused")]
    NotAFile(PathBuf),
    #[error("{0} lies outside the outbox; refused")]
    Escapes(PathBuf),
    #[error("{name} is {size} bytes, over the {MAX_OUTBOX_FILE}-byte limit")]
    TooLarge { name: String, size: u64 },
    #[error("opening {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

fn plain(name: &str) -> bool {
    !name.is_empty() && name.len() <= 255 && name != "." && name != ".." && !name.contains('/') && !name.chars().any(char::is_control)
}

/// Opens `outbox_root/row_id/name` for reading after the checks above;
/// returns the open file and its size.
pub fn open_checked(outbox_root: &Path, row_id: &str, name: &str) -> Result<(File, u64), OutboxError> {
    for n in [row_id, name] {
        if !plain(n) {
            return Err(OutboxError::BadName(n.to_owned()));
        }
    }
    let io_err = |path: &Path| {
        let path = path.to_owned();
        move |source: io::Error| if source.kind() == io::ErrorKind::NotFound { OutboxError::Missing(path) } else { OutboxError::Io { path, source } }
    };
    let root = fs::canonicalize(outbox_root).map_err(io_err(outbox_root))?;
    let dir = outbox_root.join(row_id);
    let m = fs::symlink_metadata(&dir).map_err(io_err(&dir))?;
    if !m.is_dir() {
        return Err(OutboxError::NotAFile(dir));
    }
    let path = dir.join(name);
    // O_NONBLOCK: a FIFO planted there must not hang the open.
    let f = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(&path)
        .map_err(|e| if e.raw_os_error() == Some(libc::ELOOP) { OutboxError::NotAFile(path.clone()) } else { io_err(&path)(e) })?;
    let meta = f.metadata().map_err(io_err(&path))?;
    if !meta.is_file() {
        return Err(OutboxError::NotAFile(path));
    }
    // The folder may have been swapped for a symlink between the lstat and
    // the open: the open file's real path must still be under the root.
    let real = fs::read_link(format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&f))).map_err(io_err(&path))?;
    if real.parent().and_then(Path::parent) != Some(root.as_path()) {
        return Err(OutboxError::Escapes(real));
    }
    if meta.len() > MAX_OUTBOX_FILE {
        return Err(OutboxError::TooLarge { name: name.to_owned(), size: meta.len() });
    }
    Ok((f, meta.len()))
}
