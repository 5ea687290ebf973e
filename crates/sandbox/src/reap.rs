//! Reaping what a dead host or a dead sandbox supervisor left behind: live
//! processes found by their command line (the data dir's own paths, so
//! another install's processes are never touched).

use std::path::Path;
use std::time::{Duration, Instant};

/// Kills (SIGKILL) every live process, other than this one, whose command
/// line mentions `path` and is a sandbox or a runner: what a dead host or a
/// dead sandbox supervisor left behind. Matching on the data dir's own paths
/// means another install's processes are never touched. Waits up to 1 s for
/// them to go. Returns how many it killed.
pub fn reap(path: &str) -> usize {
    let me = std::process::id();
    let mut killed = Vec::new();
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return 0;
    };
    for e in rd.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if pid == me || is_zombie(pid) {
            continue;
        }
        let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        if cmd.contains(path) && (cmd.contains("bwrap") || cmd.contains(" runner ")) {
            // SAFETY: plain kill(2) of a live pid read from /proc just now.
            unsafe {
                libc::kill(pid as i32, libc::SIGKILL);
            }
            killed.push(pid);
        }
    }
    let deadline = Instant::now() + Duration::from_secs(1);
    while killed
        .iter()
        .any(|p| !is_zombie(*p) && Path::new(&format!("/proc/{p}")).exists())
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(2));
    }
    killed.len()
}

fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}
