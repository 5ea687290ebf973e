//! Session folders and the host's writes to `inbound.db`.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use pinch_proto::open::{open_existing_writer, open_reader, open_writer, write_tx};
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
    let parent = final_dir
        .root()
        .parent()
        .expect("session dir has a parent")
        .to_owned();
    std::fs::create_dir_all(&parent).with_context(|| format!("creating {}", parent.display()))?;
    let tmp = SessionDir(parent.join(format!(".tmp-{session_id}")));
    let build = || -> Result<()> {
        for d in [tmp.in_dir(), tmp.out_dir(), tmp.inbox(), tmp.outbox()] {
            std::fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
        }
        let conn = open_writer(&tmp.inbound_db(), BUSY)?;
        schema::migrate_inbound(&conn)?;
        drop(conn);
        // Whose file this is, and which generation of it (issue 15).
        crate::session_check::stamp_new_file(&tmp.inbound_db(), session_id)?;
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
        return Err(e.context(format!(
            "creating session folder {}",
            final_dir.root().display()
        )));
    }
    Ok(final_dir)
}

fn sync_dir(p: &Path) -> Result<()> {
    std::fs::File::open(p)
        .and_then(|f| f.sync_all())
        .with_context(|| format!("syncing {}", p.display()))
}

/// Removes half-built session folders left by a crash.
pub fn remove_stale_tmp(data: &DataDir) {
    let Ok(ags) = std::fs::read_dir(data.sessions_dir()) else {
        return;
    };
    for ag in ags.flatten() {
        let Ok(entries) = std::fs::read_dir(ag.path()) else {
            continue;
        };
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().starts_with(".tmp-") {
                tracing::warn!(path = %e.path().display(), "removing a half-built session folder");
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
}

/// Writes inbound rows in one transaction; returns the seqs of new rows.
pub fn write_inbound(
    dir: &SessionDir,
    rows_in: &[NewInbound],
    out_max: i64,
) -> Result<Vec<Option<i64>>> {
    let path = dir.inbound_db();
    let mut conn = open_existing_writer(&path, BUSY)?;
    let tx = write_tx(&mut conn)?;
    let mut seqs = Vec::with_capacity(rows_in.len());
    for r in rows_in {
        seqs.push(rows::insert_inbound(&tx, r, out_max)?);
    }
    tx.commit()
        .with_context(|| format!("committing to {}", path.display()))?;
    Ok(seqs)
}

/// Projects destinations and the default reply address (at spawn and when
/// wiring changes), in one transaction.
pub fn project(dir: &SessionDir, dests: &[Destination], routing: &Routing) -> Result<()> {
    // Unchanged (the common case at every spawn): no write, no fsync.
    if let Ok(c) = open_reader(&dir.inbound_db(), BUSY) {
        if rows::destinations(&c).is_ok_and(|d| d == dests)
            && rows::routing(&c).is_ok_and(|r| r.as_ref() == Some(routing))
        {
            return Ok(());
        }
    }
    let mut conn = open_existing_writer(&dir.inbound_db(), BUSY)?;
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
    let finished: std::collections::HashSet<String> =
        match pinch_proto::open::open_agent_reader(&dir.outbound_db(), BUSY) {
            Ok(c) => rows::acks(&c)?
                .into_iter()
                .filter(|a| a.status != rows::status::PROCESSING)
                .map(|a| a.message_id)
                .collect(),
            Err(_) => Default::default(),
        };
    Ok(due.iter().any(|r| !finished.contains(&r.id)))
}

/// When the session's next not-yet-due trigger row (a scheduled task)
/// falls due, if any.
pub fn next_due(dir: &SessionDir) -> Result<Option<jiff::Timestamp>> {
    let conn = open_reader(&dir.inbound_db(), BUSY)?;
    let now = jiff::Timestamp::now();
    Ok(rows::pending_inbound(&conn)?
        .iter()
        .filter(|r| r.trigger)
        .filter_map(|r| {
            r.process_after
                .as_deref()
                .and_then(|p| pinch_proto::time::parse(p).ok())
        })
        .filter(|t| *t > now)
        .min())
}

/// Milliseconds since the Unix epoch of a stored timestamp.
fn ms(s: &str) -> Option<i64> {
    pinch_proto::time::parse(s).ok().map(|t| t.as_millisecond())
}

/// What the stuck decision needs to know about a live runner, read from its
/// files (heartbeat mtime, its own claims, `container_state`), and the error
/// that kept its `outbound.db` part from being read, if one did.
///
/// The view always carries the heartbeat: `outbound.db` is the agent's to
/// write (a hostile one may drop `processing_ack`), so a file that cannot be
/// read leaves the decision to the heartbeat alone — it never protects a
/// frozen runner (issue 15 review).
pub fn stuck_view(
    dir: &SessionDir,
    runner_id: &str,
    spawned_at_ms: i64,
) -> (pinch_policy::sweep::RunnerView, Option<anyhow::Error>) {
    // `out/` is the agent's: the heartbeat's own times (lstat), never a
    // link's target's.
    let heartbeat_ms = std::fs::symlink_metadata(dir.heartbeat())
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_millis() as i64);
    let heartbeat_only = pinch_policy::sweep::RunnerView {
        spawned_at_ms,
        heartbeat_ms,
        ..Default::default()
    };
    match claims_view(dir, runner_id, heartbeat_only.clone()) {
        Ok(v) => (v, None),
        Err(e) => (
            heartbeat_only,
            Some(e.context(format!("reading {}", dir.outbound_db().display()))),
        ),
    }
}

/// `view` with the runner's claims and progress from its `outbound.db`.
fn claims_view(
    dir: &SessionDir,
    runner_id: &str,
    mut view: pinch_policy::sweep::RunnerView,
) -> Result<pinch_policy::sweep::RunnerView> {
    use pinch_policy::sweep::ToolInFlight;
    let Ok(conn) = pinch_proto::open::open_agent_reader(&dir.outbound_db(), BUSY) else {
        return Ok(view);
    };
    view.oldest_own_claim_ms = rows::acks(&conn)?
        .iter()
        .filter(|a| a.runner_id == runner_id && a.status == rows::status::PROCESSING)
        .filter_map(|a| ms(&a.status_changed))
        .min();
    if let Some(p) = pinch_proto::outbound::progress(&conn)? {
        if p.runner_id.as_deref() == Some(runner_id) {
            view.last_progress_ms = p.last_progress_at.as_deref().and_then(ms);
            if let (Some(s), Some(t)) = (
                p.tool_started_at.as_deref().and_then(ms),
                p.tool_declared_timeout_ms,
            ) {
                view.tool = Some(ToolInFlight {
                    started_ms: s,
                    declared_timeout_ms: t,
                });
            }
        }
    }
    Ok(view)
}

/// A claim left by a runner that is no longer alive.
#[derive(Clone, Debug)]
pub struct Orphan {
    pub id: String,
    pub tries: i64,
    pub process_after: Option<String>,
    pub status: String,
    pub channel_type: Option<String>,
    pub platform_id: Option<String>,
    pub thread_id: Option<String>,
}

/// `processing` claims in `outbound.db` not held by `alive` (a runner id that
/// is still running, if any), joined with their inbound rows.
pub fn orphan_claims(dir: &SessionDir, alive: Option<&str>) -> Result<Vec<Orphan>> {
    let Ok(out) = pinch_proto::open::open_agent_reader(&dir.outbound_db(), BUSY) else {
        return Ok(Vec::new());
    };
    let ids: Vec<String> = rows::acks(&out)?
        .into_iter()
        .filter(|a| a.status == rows::status::PROCESSING && Some(a.runner_id.as_str()) != alive)
        .map(|a| a.message_id)
        .collect();
    drop(out);
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let inb = open_reader(&dir.inbound_db(), BUSY)?;
    Ok(rows::inbound_by_ids(&inb, &ids)?
        .into_iter()
        .map(|r| Orphan {
            id: r.id,
            tries: r.tries,
            process_after: r.process_after,
            status: r.status,
            channel_type: r.channel_type,
            platform_id: r.platform_id,
            thread_id: r.thread_id,
        })
        .collect())
}

/// Applies orphan decisions to `messages_in` in one transaction. Returns the
/// rows newly failed (their origins are told once) and the earliest new due
/// time (ms) to wake at.
pub fn apply_orphans(
    dir: &SessionDir,
    orphans: &[Orphan],
    transient: bool,
    retry_base_ms: i64,
    now: jiff::Timestamp,
) -> Result<(Vec<Orphan>, Option<i64>)> {
    use pinch_policy::retry::{decide_orphan, Orphan as D};
    let mut failed = Vec::new();
    let mut earliest: Option<i64> = None;
    let mut conn = open_existing_writer(&dir.inbound_db(), BUSY)?;
    let tx = write_tx(&mut conn)?;
    for o in orphans.iter().filter(|o| o.status == rows::status::PENDING) {
        let future = o
            .process_after
            .as_deref()
            .and_then(|p| pinch_proto::time::parse(p).ok())
            .is_some_and(|t| t > now);
        match decide_orphan(o.tries, future, transient, retry_base_ms) {
            D::AlreadyScheduled | D::Release => {}
            D::Retry { tries, due_in_ms } => {
                let due = now.as_millisecond() + due_in_ms;
                let due_s = pinch_proto::time::format(
                    jiff::Timestamp::from_millisecond(due).unwrap_or(now),
                );
                pinch_proto::inbound::schedule_retry(&tx, &o.id, tries, &due_s)?;
                earliest = Some(earliest.map_or(due, |e: i64| e.min(due)));
                tracing::warn!(id = %o.id, tries, retry_in_ms = due_in_ms, "message was claimed by a runner that died; retrying later");
            }
            D::Fail { tries } => {
                pinch_proto::inbound::fail_after_tries(&tx, &o.id, tries)?;
                tracing::error!(id = %o.id, tries, "message failed after the maximum number of tries");
                failed.push(o.clone());
            }
        }
    }
    tx.commit()?;
    Ok((failed, earliest))
}
