//! What the email channel keeps across restarts, in
//! `<data>/channels/email/state.json` (0600, replaced atomically): where
//! it is in the mailbox (the UIDVALIDITY and the last UID the host has
//! committed) and, per thread, what a reply needs (subject, references).
//!
//! The mark moves only after the host's commit, one mail at a time in UID
//! order, so a crash repeats at most the mail being handled, and the host
//! stores a repeated `Message-ID` once.

use std::collections::VecDeque;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Threads remembered for replies (oldest forgotten first).
pub const MAX_THREADS: usize = 1000;
/// References kept per thread: the root and the newest ones (mail clients
/// thread on the root and the last few).
const MAX_REFS: usize = 20;

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct State {
    /// The mailbox the mark belongs to (`user@host:port/mailbox`): another
    /// one starts afresh, its UIDs being another count.
    #[serde(default)]
    pub account: Option<String>,
    /// The mailbox's UIDVALIDITY the mark belongs to.
    pub uid_validity: Option<u32>,
    /// The last UID the host committed (or skipped on purpose).
    pub last_uid: u32,
    /// Newest last.
    pub threads: VecDeque<Thread>,
    /// Message ids of mail pinch sent outside any thread (approval cards,
    /// notices to a new address): a reply to one is read without a thread,
    /// as the card's numbered answer must be. Newest last.
    #[serde(default)]
    pub roots: VecDeque<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Thread {
    /// The thread id (its root message id).
    pub id: String,
    pub subject: String,
    /// Message ids, oldest first; the last is the newest mail.
    pub references: Vec<String>,
}

impl State {
    /// The thread `id`, if remembered.
    pub fn thread(&self, id: &str) -> Option<&Thread> {
        self.threads.iter().find(|t| t.id == id)
    }

    /// Remembers a mail pinch sent outside any thread.
    pub fn note_root(&mut self, id: &str) {
        self.roots.push_back(id.to_owned());
        while self.roots.len() > MAX_THREADS {
            self.roots.pop_front();
        }
    }

    /// Whether `id` is a mail pinch sent outside any thread.
    pub fn is_root(&self, id: &str) -> bool {
        self.roots.iter().any(|r| r == id)
    }

    /// Remembers a mail of thread `id` (moving the thread to the newest).
    pub fn note(&mut self, id: &str, subject: &str, refs: &[String]) {
        let mut t = match self.threads.iter().position(|t| t.id == id) {
            Some(i) => self.threads.remove(i).unwrap_or_default(),
            None => Thread {
                id: id.to_owned(),
                ..Default::default()
            },
        };
        if !subject.is_empty() || t.subject.is_empty() {
            t.subject = subject.to_owned();
        }
        for r in refs {
            if !t.references.contains(r) {
                t.references.push(r.clone());
            }
        }
        if t.references.len() > MAX_REFS {
            let cut = t.references.len() - MAX_REFS;
            t.references.drain(1..=cut);
        }
        self.threads.push_back(t);
        while self.threads.len() > MAX_THREADS {
            self.threads.pop_front();
        }
    }
}

/// The state file of a data dir.
#[derive(Clone, Debug)]
pub struct Store {
    path: PathBuf,
}

impl Store {
    pub fn new(data_dir: &Path) -> Store {
        Store {
            path: data_dir.join("channels/email/state.json"),
        }
    }

    /// The saved state; a missing file is a first start. A file that does
    /// not parse is an error naming it (never silently a first start,
    /// which would skip mail).
    pub fn load(&self) -> Result<State, String> {
        match std::fs::read(&self.path) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| {
                format!(
                    "{} is not valid ({e}); move it aside to start again from the mailbox's newest mail",
                    self.path.display()
                )
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(State::default()),
            Err(e) => Err(format!("reading {}: {e}", self.path.display())),
        }
    }

    /// Writes the state: a new file, synced, renamed over the old one.
    pub fn save(&self, s: &State) -> Result<(), String> {
        let dir = self.path.parent().expect("a file under channels/email");
        let err = |e: std::io::Error| format!("saving {}: {e}", self.path.display());
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(err)?;
        crate::write_private(
            &self.path,
            &serde_json::to_vec(s).expect("plain data serialises"),
        )
        .map_err(err)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threads_are_bounded_and_keep_their_root() {
        let mut s = State::default();
        for i in 0..(MAX_THREADS + 5) {
            s.note(&format!("t{i}"), "s", &[format!("t{i}")]);
        }
        assert_eq!(s.threads.len(), MAX_THREADS);
        assert!(s.thread("t0").is_none() && s.thread("t5").is_some());
        for i in 0..30 {
            s.note("t5", "", &[format!("m{i}")]);
        }
        let t = s.thread("t5").unwrap();
        assert_eq!(t.references.len(), MAX_REFS);
        assert_eq!(t.references[0], "t5");
        assert_eq!(t.references.last().unwrap(), "m29");
        assert_eq!(t.subject, "s", "an empty subject keeps the old one");
        assert_eq!(s.threads.back().unwrap().id, "t5", "newest last");
    }

    #[test]
    fn state_survives_a_reload_and_a_bad_file_is_an_error() {
        let d = tempfile::tempdir().unwrap();
        let st = Store::new(d.path());
        assert_eq!(st.load().unwrap(), State::default());
        let mut s = State {
            uid_validity: Some(9),
            last_uid: 41,
            ..Default::default()
        };
        s.note("a", "hello", &["a".into()]);
        st.save(&s).unwrap();
        assert_eq!(st.load().unwrap(), s);
        let mode = std::fs::metadata(d.path().join("channels/email/state.json"))
            .unwrap()
            .permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o600
        );
        std::fs::write(d.path().join("channels/email/state.json"), "{").unwrap();
        assert!(st.load().unwrap_err().contains("move it aside"));
    }
}
