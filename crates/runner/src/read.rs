//! Reading a file the agent could have replaced (its `MEMORY.md`,
//! `AGENT.md`, a skill's `SKILL.md`): never blocking on a FIFO, never
//! following a final symlink, never reading more than asked.

use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Up to `max` bytes of the regular file at `path`. A FIFO, device,
/// directory or symlink there is an error (opened `O_NONBLOCK|O_NOFOLLOW`,
/// then checked with `fstat`), so a reader never waits for a writer that
/// never comes.
pub fn regular(path: &Path, max: usize) -> std::io::Result<Vec<u8>> {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW)
        .open(path)?;
    if !f.metadata()?.is_file() {
        return Err(std::io::Error::other(format!(
            "{} is not a regular file",
            path.display()
        )));
    }
    let mut buf = Vec::new();
    f.take(max as u64).read_to_end(&mut buf)?;
    Ok(buf)
}

/// [`regular`] as text (invalid UTF-8 replaced).
pub fn text(path: &Path, max: usize) -> std::io::Result<String> {
    regular(path, max).map(|b| String::from_utf8_lossy(&b).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fifos_links_and_long_files_are_handled_without_waiting() {
        let d = tempfile::tempdir().unwrap();
        let fifo = d.path().join("MEMORY.md");
        let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        assert!(text(&fifo, 100)
            .unwrap_err()
            .to_string()
            .contains("not a regular file"));
        let link = d.path().join("link");
        std::os::unix::fs::symlink("/dev/zero", &link).unwrap();
        assert!(text(&link, 100).is_err());
        let long = d.path().join("long");
        std::fs::write(&long, "x".repeat(1000)).unwrap();
        assert_eq!(text(&long, 10).unwrap().len(), 10);
    }
}
