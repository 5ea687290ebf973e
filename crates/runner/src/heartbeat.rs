//! The heartbeat: a thread that touches `out/heartbeat` on its own timer for
//! the runner's whole life, whatever the provider does (lesson 10: beating on
//! provider events killed slow sessions upstream).

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

pub struct Heartbeat {
    stop: Arc<AtomicBool>,
}

pub fn touch(path: &std::path::Path) -> std::io::Result<()> {
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)?;
    f.set_modified(SystemTime::now())
}

impl Heartbeat {
    pub fn start(path: PathBuf, every: Duration) -> std::io::Result<Heartbeat> {
        touch(&path)?;
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        std::thread::Builder::new()
            .name("heartbeat".into())
            .spawn(move || {
                let tick = Duration::from_millis(50).min(every);
                let mut since = Duration::ZERO;
                while !s.load(Ordering::Relaxed) {
                    std::thread::sleep(tick);
                    since += tick;
                    if since >= every {
                        since = Duration::ZERO;
                        if let Err(e) = touch(&path) {
                            tracing::warn!(path = %path.display(), "heartbeat touch failed: {e}");
                        }
                    }
                }
            })?;
        Ok(Heartbeat { stop })
    }
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
