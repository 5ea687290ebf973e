//! Session folders and the host's writes to `inbound.db`.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use pinch_proto::open::{open_reader, open_writer, write_tx};
use pinch_proto::rows::{self, Destination, NewInbound, Routing};
use pinch_proto::schema;

use crate::paths::{DataDir, SessionDir};

pub const BUSY: Duration = pinch_proto::open::DEFAULT_BUSY_TIMEOUT;

/// Creates a session folder atomically: everything is built under a
/// temporary name in the same parent and renamed into place, so a crash or a
/// full disk leaves either a complete folder or nothing (a leftover `.tmp-*`
/// is removed at boot).
pub fn create_folder(data: &DataDir, ag_id: &str, session_id: &str) -> Result<SessionDir> {
    let final_dir = data.session(ag_id, session_id);
    let parent = final_dir.root().parent().expect("session dir has a parent").to_owned();
    std::fs::create_dir_all(&parent).with_context(|| format!("creating {}", parent.display()))?;
    let tmp = SessionDir(parent.join(format!(".tmp-{session_id}")));
    let build = || -> Result<()> {
        for d in [tmp.in_dir(), tmp.out_dir(), tmp.inbox(), tmp.outbox()] {
            std::fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
        }
        let conn = open_writer(&tmp.inbound_db(), BUSY)?;
        schema::migrate_inbound(&conn)?;
        drop(conn);
        // The outbound file is created with its schema before any runner
        // exists (no rows), so readers always find the tables. From here on
        // only runners write it.
        let conn = open_writer(&tmp.outbound_db(), BUSY)?;
        schema::migrate_outbound(&conn)?;
        drop(conn);
        sync_dir(tmp.root())?;
        std::fs::rename(tmp.root(), final_dir.root())
            .with_context(|| format!("moving {} into place", final_dir.root().display()))?;
        sync_dir(&parent)?;
        Ok(())
    };
    if let Err(e) = build() {
        let _ = std::fs::remove_dir_all(tmp.root());
        return Err(e.context(format!("creating session folder {}", final_dir.root().display())));
    }
    Ok(final_dir)
}

fn sync_dir(p: &Path) -> Result<()> {
    std::fs::File::open(p).and_then(|f| f.sync_all()).with_context(|| format!("syncing {}", p.display()))
}

/// Removes half-built session folders left by a crash.
pub fn remove_stale_tmp(data: &DataDir) {
    let Ok(ags) = std::fs::read_dir(data.sessions_dir()) else { return };
    for ag in ags.flatten() {
        let Ok(entries) = std::fs::read_dir(ag.path()) else { continue };
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().starts_with(".tmp-") {
                tracing::warn!(path = %e.path().display(), "removing a half-built session folder");
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
}

/// Writes inbound rows in one transaction; returns the seqs of new rows.
pub fn write_inbound(dir: &SessionDir, rows_in: &[NewInbound], out_max: i64) -> Result<Vec<Option<i64>>> {
    let path = dir.inbound_db();
    let mut conn = open_writer(&path, BUSY)?;
    let tx = write_tx(&mut conn)?;
    let mut seqs = Vec::with_capacity(rows_in.len());
    for r in rows_in {
        seqs.push(rows::insert_inbound(&tx, r, out_max)?);
    }
    tx.commit().with_context(|| format!("committing to {}", path.display()))?;
    Ok(seqs)
}

/// Projects destinations and the default reply address (at spawn and when
/// wiring changes), in one transaction.
pub fn project(dir: &SessionDir, dests: &[Destination], routing: &Routing) -> Result<()> {
    let mut conn = open_writer(&dir.inbound_db(), BUSY)?;
    schema::migrate_inbound(&conn)?;
    let tx = write_tx(&mut conn)?;
    rows::replace_destinations(&tx, dests)?;
    rows::set_routing(&tx, routing)?;
    tx.commit()?;
    Ok(())
}

/// Whether the session has work a runner should wake for: a pending,
/// due `trigger = 1` row that the runner file has not already finished.
pub fn has_due_trigger(dir: &SessionDir) -> Result<bool> {
    let conn = open_reader(&dir.inbound_db(), BUSY)?;
    let pending = rows::pending_inbound(&conn)?;
    drop(conn);
    let now = jiff::Timestamp::now();
    let due: Vec<&rows::InboundRow> = pending
        .iter()
        .filter(|r| r.trigger && pinch_proto::time::is_due(r.process_after.as_deref(), now))
        .collect();
    if due.is_empty() {
        return Ok(false);
    }
    let finished: std::collections::HashSet<String> = match open_reader(&dir.outbound_db(), BUSY) {
        Ok(c) => rows::acks(&c)?
            .into_iter()
            .filter(|a| a.status != rows::status::PROCESSING)
            .map(|a| a.message_id)
            .collect(),
        Err(_) => Default::default(),
    };
    Ok(due.iter().any(|r| !finished.contains(&r.id)))
}
