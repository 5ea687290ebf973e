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
        let try_lock =
            |f: &File| unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        let mut rc = try_lock(&f);
        if rc != 0 {
            let mut pid = String::new();
            let _ = f.read_to_string(&mut pid);
            // Held by this very process: a host embedded here (the tests,
            // an embedder) that was just shut down, whose descriptor a
            // process forked meanwhile by another thread may still share
            // until it execs. That lasts moments: wait for it, briefly.
            if pid.trim() == std::process::id().to_string() {
                let until = std::time::Instant::now() + std::time::Duration::from_secs(2);
                while rc != 0 && std::time::Instant::now() < until {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                    rc = try_lock(&f);
                }
            }
        }
        if rc != 0 {
            let mut pid = String::new();
            let _ = f.rewind();
            let _ = f.read_to_string(&mut pid);
            if let Some(w) = BootWait::read(path, pid.trim()) {
                bail!("{}", w.describe(pid.trim(), data_dir));
            }
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

/// While the boot breaker holds a host back (SPEC §6.5), it says so in
/// `run/boot-wait.json` beside the lock, so another `pinch` that finds the
/// lock taken can say why nothing answers yet instead of "already running".
#[derive(serde::Serialize, serde::Deserialize)]
pub struct BootWait {
    pub pid: String,
    /// When the wait ends (ms since the epoch).
    pub until_ms: i64,
    /// Boots in the last hour without a clean exit, this one included.
    pub boots: usize,
}

pub const BOOT_WAIT_FILE: &str = "boot-wait.json";

impl BootWait {
    fn path(lock: &Path) -> std::path::PathBuf {
        lock.with_file_name(BOOT_WAIT_FILE)
    }

    /// Records the wait (best effort: the message is a courtesy).
    pub fn write(lock: &Path, until_ms: i64, boots: usize) {
        let w = BootWait {
            pid: std::process::id().to_string(),
            until_ms,
            boots,
        };
        if let Ok(t) = serde_json::to_string(&w) {
            let _ = std::fs::write(Self::path(lock), t);
        }
    }

    pub fn clear(lock: &Path) {
        let _ = std::fs::remove_file(Self::path(lock));
    }

    /// The wait of the lock holder `pid`, if it is still waiting.
    fn read(lock: &Path, pid: &str) -> Option<BootWait> {
        let w: BootWait =
            serde_json::from_str(&std::fs::read_to_string(Self::path(lock)).ok()?).ok()?;
        let now = jiff::Timestamp::now().as_millisecond();
        (w.pid == pid && w.until_ms > now).then_some(w)
    }

    fn describe(&self, pid: &str, data_dir: &Path) -> String {
        let left = (self.until_ms - jiff::Timestamp::now().as_millisecond()).max(0) / 1000 + 1;
        format!(
            "the pinch host (pid {pid}) for the data dir {} is waiting {left} s more before it starts: it was started {} times in the last hour without a clean exit, so the boot breaker slows the restarts down (a crash loop would otherwise spin). It answers once the wait ends; its log says why the earlier runs crashed. To start at once, stop it (kill {pid}), delete {}, and start again",
            data_dir.display(),
            self.boots,
            data_dir.join("run").join("circuit-breaker.json").display()
        )
    }
}
