//! Per-session disk quota (issue 14): what a session's writable folders —
//! its group's workspace, its `outbox/` and its `out/` — use on disk,
//! measured by the host with a walk that never follows a symlink
//! ([`crate::fswalk`]) and whose work is bounded: past [`MAX_FILES`]
//! entries the walk stops and the session counts as over its quota
//! (millions of empty files exhaust a filesystem's inodes just as well).
//!
//! Usage is allocated blocks (`st_blocks · 512`), so a sparse file costs
//! what it really takes and hard links are counted once per name (an
//! agent that links a file many times only hurts its own quota).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::fswalk::{self, Bounds};

/// Entries a session's folders may hold before they count as over quota
/// (and where the measuring walk stops).
pub const MAX_FILES: u64 = 250_000;
/// Folder depth the walk enters; deeper folders count as over quota too.
pub const MAX_DEPTH: usize = 128;
/// How many of the biggest items a report names.
const SHOWN: usize = 5;

/// One folder measured: what the agent calls it, and where it is.
#[derive(Clone, Debug)]
pub struct Root {
    /// The path inside the sandbox (`/workspace/agent`).
    pub shown: String,
    pub host: PathBuf,
}

/// What a session's folders use.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    pub bytes: u64,
    pub entries: u64,
    /// The walk stopped early (too many entries or too deep).
    pub truncated: bool,
    /// The biggest top-level items (folders summed), biggest first, as the
    /// agent sees them: (path, bytes).
    pub biggest: Vec<(String, u64)>,
}

/// Measures the folders (a missing one counts as empty).
pub fn measure(roots: &[Root]) -> Usage {
    let mut u = Usage::default();
    let mut by_top: HashMap<String, u64> = HashMap::new();
    for r in roots {
        let left = MAX_FILES.saturating_sub(u.entries);
        if left == 0 {
            u.truncated = true;
            break;
        }
        let bounds = Bounds {
            max_entries: left,
            max_depth: MAX_DEPTH,
        };
        let walked = fswalk::walk(&r.host, false, bounds, &mut |item| {
            let size = (item.stat.st_blocks as u64).saturating_mul(512);
            u.bytes = u.bytes.saturating_add(size);
            if let Some(top) = item.rel.components().next() {
                let key = Path::new(&r.shown)
                    .join(top.as_os_str())
                    .to_string_lossy()
                    .into_owned();
                *by_top.entry(key).or_default() += size;
            }
        });
        match walked {
            Ok(w) => {
                u.entries += w.entries;
                u.truncated |= w.truncated;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            // A root that is a symlink or not a folder: the agent cannot
            // make one (it cannot write the parents), so this is the
            // owner's doing; nothing to measure there.
            Err(e) => tracing::warn!(folder = %r.host.display(), "cannot measure disk use: {e}"),
        }
    }
    let mut top: Vec<(String, u64)> = by_top.into_iter().collect();
    top.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    top.truncate(SHOWN);
    u.biggest = top;
    u
}

/// MB with one decimal, for people.
pub fn mb(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / (1u64 << 20) as f64)
}

impl Usage {
    /// Why this is over `limit_bytes`, if it is.
    pub fn over(&self, limit_bytes: u64) -> Option<String> {
        if self.truncated {
            Some(format!("its folders hold more than {MAX_FILES} files or are nested deeper than {MAX_DEPTH} levels"))
        } else if self.bytes > limit_bytes {
            Some(format!(
                "its folders use {} of its {} disk quota",
                mb(self.bytes),
                mb(limit_bytes)
            ))
        } else {
            None
        }
    }

    /// The biggest items, one per line.
    pub fn biggest_lines(&self) -> String {
        self.biggest
            .iter()
            .map(|(p, b)| format!("- {p}: {}", mb(*b)))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_blocks_below_each_root_and_names_the_biggest() {
        let d = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let ws = d.path().join("ws");
        let outbox = d.path().join("outbox");
        std::fs::create_dir_all(ws.join("data")).unwrap();
        std::fs::create_dir_all(&outbox).unwrap();
        std::fs::write(ws.join("data/a.bin"), vec![1u8; 3 << 20]).unwrap();
        std::fs::write(ws.join("data/b.bin"), vec![1u8; 1 << 20]).unwrap();
        std::fs::write(ws.join("small"), vec![1u8; 10]).unwrap();
        std::fs::write(outbox.join("report.pdf"), vec![1u8; 2 << 20]).unwrap();
        // Not counted: what a symlink points at, and a sparse file's hole.
        std::fs::write(outside.path().join("huge"), vec![1u8; 8 << 20]).unwrap();
        std::os::unix::fs::symlink(outside.path(), ws.join("escape")).unwrap();
        let sparse = std::fs::File::create(ws.join("sparse")).unwrap();
        sparse.set_len(1 << 30).unwrap();
        let roots = vec![
            Root {
                shown: "/workspace/agent".into(),
                host: ws.clone(),
            },
            Root {
                shown: "/workspace/outbox".into(),
                host: outbox,
            },
            Root {
                shown: "/pinch/out".into(),
                host: d.path().join("missing"),
            },
        ];
        let u = measure(&roots);
        assert!(u.bytes >= 6 << 20 && u.bytes < 7 << 20, "{}", u.bytes);
        assert!(!u.truncated);
        assert_eq!(u.biggest[0].0, "/workspace/agent/data");
        assert!(u.biggest[0].1 >= 4 << 20);
        assert_eq!(u.biggest[1].0, "/workspace/outbox/report.pdf");
        assert_eq!(u.over(100 << 20), None);
        let why = u.over(5 << 20).unwrap();
        assert!(why.contains("of its 5.0 MB disk quota"), "{why}");
        assert!(
            u.biggest_lines()
                .starts_with("- /workspace/agent/data: 4.0 MB"),
            "{}",
            u.biggest_lines()
        );
    }
}
