//! Per-sandbox process and memory caps through cgroups (issue 8): a fork
//! bomb or a runaway allocation in one session must not starve the host or
//! the other sessions. rlimits cannot do this (`RLIMIT_NPROC` counts every
//! process of the user, and is not enforced for root).
//!
//! Each runner gets its own cgroup **under the host's own cgroup** (so it
//! stays inside whatever limits the host itself runs under), with
//! `pids.max` and a memory limit; the spawned process joins it between fork
//! and exec by writing `0` to `cgroup.procs` (no window in which it could
//! fork outside). Both cgroup v2 (one hierarchy; the host's cgroup must let
//! us enable `pids`/`memory` for a child) and v1 (`pids` and `memory`
//! hierarchies) are handled. Where cgroups are not writable (an
//! unprivileged user without delegation) this is skipped with one warning;
//! `pinch doctor` reports it.

use std::fs;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use crate::limits::Limits;

const ROOT: &str = "/sys/fs/cgroup";

/// The cgroups one runner joins: open `cgroup.procs` files (written in the
/// child) and the folders to remove once it has exited.
#[derive(Debug)]
pub struct Prepared {
    pub procs: Vec<OwnedFd>,
    pub dirs: Vec<PathBuf>,
}

/// The host's own cgroup paths: (v2 path) or (v1 controller → path).
fn own_cgroups() -> (Option<String>, Vec<(String, String)>) {
    let Ok(s) = fs::read_to_string("/proc/self/cgroup") else {
        return (None, vec![]);
    };
    let mut v2 = None;
    let mut v1 = Vec::new();
    for line in s.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, ctrls, path) = (
            parts.next(),
            parts.next().unwrap_or(""),
            parts.next().unwrap_or(""),
        );
        if ctrls.is_empty() {
            v2 = Some(path.to_owned());
        } else {
            for c in ctrls.split(',') {
                v1.push((c.to_owned(), path.to_owned()));
            }
        }
    }
    (v2, v1)
}

fn under(root: &Path, rel: &str) -> PathBuf {
    root.join(rel.trim_start_matches('/'))
}

fn open_procs(dir: &Path) -> std::io::Result<OwnedFd> {
    let f = fs::OpenOptions::new()
        .write(true)
        .open(dir.join("cgroup.procs"))?;
    Ok(OwnedFd::from(f))
}

/// Creates the cgroups for runner `id` with `caps`. `Err` says why it is
/// not possible here (the caller warns once and goes on without).
pub fn prepare(id: &str, caps: &Limits) -> Result<Prepared, String> {
    let root = Path::new(ROOT);
    let (v2, v1) = own_cgroups();
    let mem_bytes = caps.memory_mb.saturating_mul(1 << 20);
    // cgroup v1: the pids and memory hierarchies, each mounted at ROOT/<name>.
    let v1_dirs: Vec<(&str, PathBuf)> = ["pids", "memory"]
        .iter()
        .filter_map(|c| {
            v1.iter()
                .find(|(n, _)| n == c)
                .map(|(_, p)| (*c, under(&root.join(c), p)))
        })
        .filter(|(_, d)| d.is_dir())
        .collect();
    if !v1_dirs.is_empty() {
        let mut out = Prepared {
            procs: vec![],
            dirs: vec![],
        };
        for (ctrl, base) in v1_dirs {
            let dir = base.join(format!("pinch-{id}"));
            let r = (|| -> std::io::Result<()> {
                fs::create_dir(&dir)?;
                out.dirs.push(dir.clone());
                match ctrl {
                    "pids" => fs::write(dir.join("pids.max"), caps.pids.to_string())?,
                    _ => fs::write(dir.join("memory.limit_in_bytes"), mem_bytes.to_string())?,
                }
                out.procs.push(open_procs(&dir)?);
                Ok(())
            })();
            if let Err(e) = r {
                cleanup(&out.dirs);
                return Err(format!("cgroup v1 {ctrl} at {}: {e}", dir.display()));
            }
        }
        return Ok(out);
    }
    // cgroup v2: a `pinch` folder beside the host's own cgroup's processes
    // is not allowed (no internal processes), so the host's cgroup gets a
    // `pinch-runners` child with the controllers enabled, and each runner a
    // folder inside it.
    let Some(own) = v2 else {
        return Err("no cgroup hierarchy found in /proc/self/cgroup".into());
    };
    let host = under(root, &own);
    let controllers = fs::read_to_string(host.join("cgroup.controllers"))
        .map_err(|e| format!("{}: {e}", host.display()))?;
    if !controllers.split_whitespace().any(|c| c == "pids") {
        return Err(format!(
            "the pids controller is not available in {}",
            host.display()
        ));
    }
    let parent = host.join("pinch-runners");
    let r = (|| -> std::io::Result<Prepared> {
        if !parent.is_dir() {
            fs::create_dir(&parent)?;
        }
        let want = if controllers.split_whitespace().any(|c| c == "memory") {
            "+pids +memory"
        } else {
            "+pids"
        };
        fs::write(parent.join("cgroup.subtree_control"), want)?;
        let dir = parent.join(format!("pinch-{id}"));
        fs::create_dir(&dir)?;
        let mut out = Prepared {
            procs: vec![],
            dirs: vec![dir.clone()],
        };
        fs::write(dir.join("pids.max"), caps.pids.to_string())?;
        if want.contains("memory") {
            fs::write(dir.join("memory.max"), mem_bytes.to_string())?;
        }
        out.procs.push(open_procs(&dir)?);
        Ok(out)
    })();
    r.map_err(|e| format!("cgroup v2 under {}: {e}", parent.display()))
}

/// Removes a runner's cgroups (once its processes are gone; a folder that
/// still has members stays and is retried by [`sweep`]).
pub fn cleanup(dirs: &[PathBuf]) {
    for d in dirs {
        let _ = fs::remove_dir(d);
    }
}

/// How old an empty runner cgroup must be before [`sweep`] removes it.
const SWEEP_MIN_AGE: std::time::Duration = std::time::Duration::from_secs(60);

/// Removes empty `pinch-*` runner cgroups left by earlier hosts.
pub fn sweep() {
    let root = Path::new(ROOT);
    let (v2, v1) = own_cgroups();
    let mut bases: Vec<PathBuf> = v1
        .iter()
        .filter(|(c, _)| c == "pids" || c == "memory")
        .map(|(c, p)| under(&root.join(c), p))
        .collect();
    if let Some(p) = v2 {
        bases.push(under(root, &p).join("pinch-runners"));
    }
    for b in bases {
        if let Ok(rd) = fs::read_dir(&b) {
            for e in rd.flatten() {
                // Only old ones: another host (or test) may have made this
                // one a moment ago and be about to join it — removing it
                // then fails that spawn with ENODEV.
                let old = e
                    .metadata()
                    .ok()
                    .and_then(|m| m.modified().ok())
                    .and_then(|t| t.elapsed().ok())
                    .is_some_and(|age| age >= SWEEP_MIN_AGE);
                if e.file_name().to_string_lossy().starts_with("pinch-") && e.path().is_dir() && old
                {
                    let _ = fs::remove_dir(e.path());
                }
            }
        }
    }
}

/// Writes `0` (the calling process) to each open `cgroup.procs`. Runs in
/// the child between fork and exec: only `write(2)`.
///
/// # Safety
/// Only async-signal-safe calls; meant for `pre_exec`.
pub unsafe fn join(fds: &[std::os::fd::RawFd]) -> std::io::Result<()> {
    for &fd in fds {
        // SAFETY: writing a static buffer to an fd we own.
        if unsafe { libc::write(fd, b"0".as_ptr().cast(), 1) } != 1 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}
