//! What the Signal channel keeps on disk, under
//! `<data>/channels/signal/` (folders 0700, files 0600):
//!
//! - `inbox/`: every envelope as read off the socket, one file each,
//!   written and synced before the host sees the message and removed only
//!   after the host's commit. signal-cli has already told Signal's server
//!   it has the message by the time pinch reads it (it acknowledges what it
//!   decrypted and stored), so this journal is what stands between a crash
//!   of pinch and a lost message: after a restart the files still here are
//!   handed to the host again (a repeat of one already committed is stored
//!   once, by its id).
//! - `sent.json`: the Signal timestamp of each reply sent, by outbound row
//!   id, so that a retried delivery of a row that did go out returns the
//!   same message instead of sending it again.
//! - `outbox/`: files being sent, copied for signal-cli to read (it runs
//!   as another process and cannot open pinch's descriptors), removed after
//!   the send.

use std::collections::VecDeque;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Envelopes kept waiting for the host at most (a host down for days
/// with a busy group); past it new ones are refused, loudly.
pub const MAX_SPOOL: usize = 100_000;
/// Sent timestamps remembered (oldest forgotten first).
pub const MAX_SENT: usize = 5_000;

pub fn private_dir(p: &Path) -> std::io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(p)
}

/// The inbound journal.
#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    next: AtomicU64,
    count: AtomicU64,
}

impl Spool {
    pub fn open(dir: PathBuf) -> std::io::Result<Spool> {
        private_dir(&dir)?;
        let s = Spool {
            dir,
            next: AtomicU64::new(0),
            count: AtomicU64::new(0),
        };
        let list = s.list();
        let last = list
            .last()
            .and_then(|p| p.file_stem()?.to_str()?.parse::<u64>().ok())
            .unwrap_or(0);
        s.next.store(last + 1, Ordering::SeqCst);
        s.count.store(list.len() as u64, Ordering::SeqCst);
        Ok(s)
    }

    /// Journals one envelope (synced before this returns).
    pub fn put(&self, envelope: &serde_json::Value) -> std::io::Result<()> {
        if self.count.load(Ordering::SeqCst) as usize >= MAX_SPOOL {
            return Err(std::io::Error::other(format!(
                "{MAX_SPOOL} messages already wait for the host in {}",
                self.dir.display()
            )));
        }
        let n = self.next.fetch_add(1, Ordering::SeqCst);
        let body = serde_json::to_vec(envelope).unwrap_or_default();
        crate::write_private(&self.dir.join(format!("{n:020}.json")), &body)?;
        self.count.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    /// The journalled envelopes, oldest first.
    pub fn list(&self) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(&self.dir)
            .into_iter()
            .flatten()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        v.sort();
        v
    }

    /// The host has it: forget it.
    pub fn done(&self, p: &Path) {
        match std::fs::remove_file(p) {
            Ok(()) => {
                self.count.fetch_sub(1, Ordering::SeqCst);
            }
            Err(e) => {
                tracing::warn!(path = %p.display(), "signal: cannot remove a handled message from the journal (it will be offered again, and stored once): {e}")
            }
        }
    }
}

/// Outbound rows already sent: row id → Signal timestamp.
#[derive(Debug)]
pub struct Sent {
    path: PathBuf,
    list: Mutex<VecDeque<(String, u64)>>,
}

impl Sent {
    pub fn load(path: PathBuf) -> Sent {
        let list = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        Sent {
            path,
            list: Mutex::new(list),
        }
    }

    pub fn get(&self, id: &str) -> Option<u64> {
        let l = self.list.lock().unwrap();
        l.iter().rev().find(|(i, _)| i == id).map(|(_, t)| *t)
    }

    /// Records a sent row (synced before this returns).
    pub fn put(&self, id: &str, timestamp: u64) {
        let mut l = self.list.lock().unwrap();
        l.push_back((id.to_owned(), timestamp));
        while l.len() > MAX_SENT {
            l.pop_front();
        }
        let body = serde_json::to_vec(&*l).unwrap_or_default();
        if let Err(e) = crate::write_private(&self.path, &body) {
            tracing::warn!(path = %self.path.display(), "signal: cannot record a sent message (a retry after a crash could send it again): {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_journal_keeps_order_across_reopening_and_forgets_what_is_done() {
        let d = tempfile::tempdir().unwrap();
        let s = Spool::open(d.path().join("inbox")).unwrap();
        for i in 0..3 {
            s.put(&serde_json::json!({"n": i})).unwrap();
        }
        let l = s.list();
        assert_eq!(l.len(), 3);
        s.done(&l[0]);
        let s = Spool::open(d.path().join("inbox")).unwrap();
        s.put(&serde_json::json!({"n": 3})).unwrap();
        let got: Vec<i64> = s
            .list()
            .iter()
            .map(|p| {
                serde_json::from_slice::<serde_json::Value>(&std::fs::read(p).unwrap()).unwrap()
                    ["n"]
                    .as_i64()
                    .unwrap()
            })
            .collect();
        assert_eq!(got, [1, 2, 3]);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&s.list()[0])
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn sent_rows_are_remembered_across_reopening() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("sent.json");
        let s = Sent::load(p.clone());
        assert_eq!(s.get("out-1"), None);
        s.put("out-1", 42);
        assert_eq!(Sent::load(p).get("out-1"), Some(42));
    }
}
