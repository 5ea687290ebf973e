//! One host per data dir: an exclusive `flock` on `run/host.lock`.

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::os::unix::io::AsRawFd;
use std::path::Path;

use anyhow::{bail, Context, Result};

pub struct HostLock {
    _file: File,
}

impl HostLock {
    pub fn acquire(path: &Path, data_dir: &Path) -> Result<HostLock> {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(path)
            .with_context(|| format!("opening the host lock {}", path.display()))?;
        // SAFETY: flock on a valid open descriptor.
        let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let mut pid = String::new();
            let _ = f.read_to_string(&mut pid);
            bail!(
                "another pinch host (pid {}) is already running for the data dir {}; stop it first, or use another --data-dir",
                pid.trim(),
                data_dir.display()
            );
        }
        f.set_len(0)?;
        f.rewind()?;
        write!(f, "{}", std::process::id())?;
        f.sync_all()?;
        Ok(HostLock { _file: f })
    }
}
