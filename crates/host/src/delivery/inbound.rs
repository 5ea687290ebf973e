//! The session's `inbound.db` as a delivery pass holds it (reopened when
//! the main loop replaced the file), and whether a failed pass should make
//! the main loop check that file.

use anyhow::Result;
use pinch_proto::open::open_existing_writer;

use crate::session::BUSY;

/// Whether a failed pass should make the main loop check `inbound.db`: it
/// failed as corrupt (issue 15), and not in the ledger — a fault of the
/// ledger is the ledger's own, the next pass reopens and checks it
/// ([`crate::ledger`]), and checking `inbound.db` for it would stall
/// delivery on the wrong file.
pub(super) fn inbound_is_suspect(e: &anyhow::Error) -> bool {
    e.downcast_ref::<crate::ledger::LedgerFault>().is_none()
        && e.chain().any(|c| {
            c.downcast_ref::<pinch_proto::ProtoError>()
                .is_some_and(|p| p.is_corruption())
                || c.downcast_ref::<pinch_proto::rusqlite::Error>()
                    .is_some_and(pinch_proto::is_corruption)
                || pinch_proto::error::message_is_corruption(&c.to_string())
        })
}

/// The session's `inbound.db` as one delivery pass holds it across its
/// awaits (channel calls, the main loop's answers). The main loop may
/// replace the file meanwhile (a deleted or damaged one is made anew or
/// recovered, [`crate::session_check`]), so every write goes through
/// [`Inbound::current`], which reopens the file at the path when it is no
/// longer the one held: a note committed into the file moved aside would
/// never reach the agent (issue 15 review).
pub(super) struct Inbound {
    conn: pinch_proto::rusqlite::Connection,
    path: std::path::PathBuf,
    stamp: Option<crate::session_check::Stamp>,
}

impl Inbound {
    /// Opens the existing file (never created here: a vanished inbound.db
    /// is the main loop's to notice and report).
    pub(super) fn open(path: std::path::PathBuf) -> Result<Inbound> {
        let mut tries = 0;
        loop {
            let stamp = crate::session_check::stamp(&path);
            let conn = open_existing_writer(&path, BUSY)?;
            tries += 1;
            // Replaced between the stamp and the open: open it again.
            if crate::session_check::stamp(&path) == stamp || tries == 3 {
                return Ok(Inbound { conn, path, stamp });
            }
        }
    }

    /// The connection to the file now at the path, reopened if the one held
    /// was replaced.
    pub(super) fn current(&mut self) -> Result<&mut pinch_proto::rusqlite::Connection> {
        if crate::session_check::stamp(&self.path) != self.stamp {
            tracing::info!(file = %self.path.display(), "inbound.db was replaced during a delivery pass; writing to the new file");
            *self = Inbound::open(self.path.clone())?;
        }
        Ok(&mut self.conn)
    }
}

impl std::ops::Deref for Inbound {
    type Target = pinch_proto::rusqlite::Connection;
    fn deref(&self) -> &Self::Target {
        &self.conn
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Review of issue 15: a corrupt ledger is not reported as a damaged
    /// inbound.db (the main loop would check the wrong file).
    #[test]
    fn a_corrupt_ledger_is_not_blamed_on_inbound_db() {
        use pinch_proto::rusqlite::{ffi, Error};
        let corrupt = || {
            anyhow::Error::from(Error::SqliteFailure(
                ffi::Error::new(ffi::SQLITE_CORRUPT),
                Some("database disk image is malformed".into()),
            ))
        };
        assert!(inbound_is_suspect(
            &corrupt().context("reading /s/in/inbound.db")
        ));
        assert!(!inbound_is_suspect(&corrupt().context(
            crate::ledger::LedgerFault("reading the delivery ledger /s/delivered.db".into())
        )));
        assert!(!inbound_is_suspect(&anyhow::anyhow!("database is locked")));
    }
}
