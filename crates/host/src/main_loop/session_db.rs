//! The main loop's side of [`crate::session_check`]: when a session's own
//! files are checked, what is recorded, and who is told (issue 15,
//! decision 0026).
//!
//! - At load (boot, first use) and before every write or wake: is
//!   `inbound.db` still the file the host made? One `lstat` while its
//!   device and inode are unchanged; otherwise the identity check.
//! - After a runner's abnormal exit (exit 75 among them), with no runner
//!   alive: `PRAGMA quick_check` on `inbound.db` and `outbound.db` (the
//!   agent's file: off the main loop, the session not woken meanwhile); a
//!   corrupt one is recovered into a fresh file, the damaged one kept
//!   beside it.
//! - When a read or write of `inbound.db` failed as corrupt: the same, with
//!   `PRAGMA integrity_check` the first time for that file.
//!
//! Anything found is logged at ERROR naming the file and told once to the
//! session's conversation (the generation recorded in the central DB
//! changes with the fresh file, so the next check finds it the same).

use pinch_proto::rows::Routing;

use super::Host;
use crate::db::central::SessionRow;
use crate::paths::SessionDir;
use crate::session_check::{self, Depth, Finding, Stamp};

/// Whether an error of a session-DB read or write says the file is corrupt.
pub(super) fn is_corrupt(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<pinch_proto::ProtoError>()
            .is_some_and(|p| p.is_corruption())
            || pinch_proto::error::message_is_corruption(&c.to_string())
    })
}

impl Host {
    /// Checks the session's `inbound.db` (see the module doc); `depth` says
    /// which corruption checks run. Returns the file's stamp to remember, or the
    /// one given when the check could not run (it runs again next time).
    pub(super) fn inspect_inbound(
        &self,
        row: &SessionRow,
        dir: &SessionDir,
        known: Option<Stamp>,
        depth: Depth,
    ) -> Option<Stamp> {
        let path = dir.inbound_db();
        if depth == Depth::Identity && known.is_some() && session_check::stamp(&path) == known {
            return known;
        }
        let id = row.id.as_str();
        let recorded = match self.central.inbound_generation(id) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(session_id = %id, "cannot read the recorded generation of {} (checked again later): {e:#}", path.display());
                return known;
            }
        };
        let checked = match session_check::check_inbound(dir, id, recorded.as_deref(), depth) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(session_id = %id, "cannot check {} (checked again later): {e:#}", path.display());
                return known;
            }
        };
        if recorded.as_deref() != Some(checked.generation.as_str()) {
            if let Err(e) = self.central.set_inbound_generation(id, &checked.generation) {
                tracing::error!(session_id = %id, "cannot record the generation of {}: {e:#}", path.display());
            }
        }
        let shown = path.display();
        let text = match &checked.finding {
            Finding::Same => return checked.stamp,
            Finding::Vanished => format!(
                "This conversation's message store {shown} was deleted; the host made a new, empty one. \
                 Messages that were waiting for the assistant are lost: please send them again. \
                 Replies already delivered will not be sent again."
            ),
            Finding::Foreign { why, kept } => format!(
                "This conversation's message store {shown} was replaced by a file that is not this \
                 conversation's ({why}); it is kept at {} and the host made a new, empty store. \
                 Messages that were waiting for the assistant are lost: please send them again.",
                kept.display()
            ),
            Finding::OtherGeneration { found, recorded } => format!(
                "This conversation's message store {shown} was replaced by another copy of it \
                 (generation {found}, expected {recorded}), perhaps restored from a backup; the host \
                 continues with it. Replies already delivered will not be sent again."
            ),
            Finding::Recovered(r) => format!(
                "This conversation's message store {shown} was damaged on disk ({}). The host moved it \
                 to {} and {} into a new file; the assistant continues. If a message of yours is not \
                 answered, please send it again.",
                r.error,
                r.kept.display(),
                r.summary()
            ),
        };
        tracing::error!(session_id = %id, file = %shown, "{text}");
        // A fresh file has no projections yet: destinations and routing.
        if let Err(e) = self.project(row, dir) {
            tracing::error!(session_id = %id, "cannot project destinations into the new {shown}: {e:#}");
        }
        self.tell_conversation(row, text);
        checked.stamp
    }

    /// After an abnormal exit, with no runner of the session alive: the
    /// deep check of both files (exit 75 says the runner could not read
    /// its view; only the host can tell a torn view from its own damaged
    /// file). `inbound.db` (the host's own, its size bounded by the host's
    /// writes) is checked here; `outbound.db` (the agent's: its size and
    /// shape are attacker input) on a blocking thread, the session marked
    /// as being checked (not woken or respawned) until
    /// `Event::OutboundChecked` brings the result. Returns
    /// the stamp to remember.
    pub(super) fn check_after_exit(&mut self, row: &SessionRow, dir: &SessionDir) -> Option<Stamp> {
        let stamp = self.inspect_inbound(row, dir, None, Depth::Quick);
        let Some(s) = self.sessions.get_mut(&row.id) else {
            return stamp;
        };
        s.checking = true;
        let (events, id, dir) = (self.events.clone(), row.id.clone(), dir.clone());
        let check = tokio::task::spawn_blocking(move || {
            session_check::check_outbound(&dir).map_err(|e| format!("{e:#}"))
        });
        // The result always comes back, a panic included: the session must
        // not stay "being checked" for ever.
        tokio::spawn(async move {
            let result = check
                .await
                .unwrap_or_else(|e| Err(format!("the check failed: {e}")));
            let _ = events.send(super::Event::OutboundChecked {
                session_id: id,
                result,
            });
        });
        stamp
    }

    /// The result of the check [`Self::check_after_exit`] started: told
    /// and logged as other damage; the session may be woken again.
    pub(super) fn outbound_checked(
        &mut self,
        id: &str,
        result: Result<Option<session_check::Recovery>, String>,
    ) {
        let Some(s) = self.sessions.get_mut(id) else {
            return;
        };
        s.checking = false;
        let (row, dir) = (s.row.clone(), s.dir.clone());
        match result {
            Ok(None) => {}
            Ok(Some(r)) => {
                let text = format!(
                    "The assistant's reply store {} was damaged on disk ({}). The host moved it to {} \
                     and {} into a new file; the assistant continues.",
                    dir.outbound_db().display(),
                    r.error,
                    r.kept.display(),
                    r.summary()
                );
                tracing::error!(session_id = %id, file = %dir.outbound_db().display(), "{text}");
                self.tell_conversation(&row, text);
            }
            Err(e) => {
                tracing::warn!(session_id = %id, "cannot check {}: {e}", dir.outbound_db().display())
            }
        }
        if let Some(s) = self.sessions.get(id) {
            s.shared.kick.notify_one();
            s.shared.notify.notify_one();
        }
        self.try_wake(id);
    }

    /// [`Self::inspect_inbound`] for a loaded session, remembering the stamp.
    pub(super) fn check_inbound_now(&mut self, id: &str) {
        let Some(s) = self.sessions.get(id) else {
            return;
        };
        let (row, dir, known) = (s.row.clone(), s.dir.clone(), s.inbound_stamp);
        let stamp = self.inspect_inbound(&row, &dir, known, Depth::Identity);
        if let Some(s) = self.sessions.get_mut(id) {
            if stamp != known {
                s.shared.kick.notify_one();
            }
            s.inbound_stamp = stamp;
        }
    }

    /// The deep check of a loaded session's inbound.db, whatever its stamp
    /// (a read or write of it failed as corrupt). `quick_check` does not
    /// compare indexes with their tables, so the first time for a file
    /// (per stamp) this also runs `PRAGMA integrity_check`: a damaged
    /// index fails writes as "malformed" and hides rows from indexed reads
    /// while `quick_check` says ok. Recovery copies the rows by rowid into
    /// a fresh file, which rebuilds every index.
    pub(super) fn check_inbound_deep(&mut self, id: &str) {
        let Some(s) = self.sessions.get(id) else {
            return;
        };
        let (row, dir, known) = (s.row.clone(), s.dir.clone(), s.inbound_stamp);
        let now = session_check::stamp(&dir.inbound_db());
        let depth = if now.is_some() && s.integrity_checked == now {
            Depth::Quick
        } else {
            Depth::Full
        };
        let stamp = self.inspect_inbound(&row, &dir, None, depth);
        if let Some(s) = self.sessions.get_mut(id) {
            if stamp != known {
                s.shared.kick.notify_one();
            }
            if depth == Depth::Full {
                s.integrity_checked = stamp;
            }
            s.inbound_stamp = stamp;
        }
    }

    /// A failed write of routed rows: if the file is corrupt, the deep
    /// check recovers it and the rows are written once more.
    pub(super) fn retry_if_repaired(
        &mut self,
        id: &str,
        dir: &SessionDir,
        rows: &[pinch_proto::rows::NewInbound],
        out_max: i64,
        err: String,
    ) -> Result<(), String> {
        if !pinch_proto::error::message_is_corruption(&err) {
            return Err(err);
        }
        let before = self.sessions.get(id).and_then(|s| s.inbound_stamp);
        self.check_inbound_deep(id);
        let after = self.sessions.get(id).and_then(|s| s.inbound_stamp);
        if after == before {
            return Err(err);
        }
        super::inbound::commit_rows(dir, rows, out_max)
    }

    /// The delivery ledger was rebuilt (logged at ERROR by the ledger):
    /// the session's conversation is told, once.
    pub(super) fn tell_ledger_rebuilt(&self, id: &str, text: String) {
        if let Some(s) = self.sessions.get(id) {
            let row = s.row.clone();
            self.tell_conversation(&row, text);
        }
    }

    /// A host notice to the session's conversation (its messaging group).
    fn tell_conversation(&self, row: &SessionRow, text: String) {
        let routing = row
            .messaging_group_id
            .as_deref()
            .and_then(|mg| self.central.messaging_group_by_id(mg).ok().flatten())
            .map(|m| Routing {
                channel_type: Some(m.channel_type),
                platform_id: Some(m.platform_id),
                thread_id: row.thread_id.clone(),
            });
        match routing {
            Some(r) => self.notify_origin(r.channel_type, r.platform_id, r.thread_id, text),
            None => {
                tracing::warn!(session_id = %row.id, "the session has no conversation to tell; see the ERROR above")
            }
        }
    }
}
