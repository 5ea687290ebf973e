//! The group commit of routed messages (SPEC §4): the rows a batch of
//! channel events routed are written one transaction per session, sessions
//! in parallel, then each event's ack completes and its sessions are woken.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use pinch_channels::AckOutcome;

use super::Host;
use crate::paths::SessionDir;
use crate::session;

/// Sessions committed in parallel by a flush.
const FLUSH_THREADS: usize = 16;

/// One session's routed rows in one transaction.
pub(super) fn commit_rows(
    dir: &SessionDir,
    rows: &[pinch_proto::rows::NewInbound],
    out_max: i64,
) -> Result<(), String> {
    session::write_inbound(dir, rows, out_max)
        .map(|_| ())
        .map_err(|e| format!("writing {}: {e:#}", dir.inbound_db().display()))
}

impl Host {
    /// Commits routed rows (one transaction per session, up to
    /// [`FLUSH_THREADS`] sessions at once), then completes the acks of the
    /// events they belong to and wakes their sessions. An event whose rows
    /// did not commit is acked as failed (the platform redelivers; inserts
    /// are idempotent by id), partially stored events say so.
    pub(super) fn flush(&mut self) {
        if self.pending_writes.is_empty() && self.pending_acks.is_empty() {
            return;
        }
        let t_flush = Instant::now();
        let mut lost: Vec<String> = Vec::new();
        let mut groups: Vec<(String, SessionDir, i64, Vec<pinch_proto::rows::NewInbound>)> =
            Vec::new();
        for (sid, row) in std::mem::take(&mut self.pending_writes) {
            match groups.iter_mut().find(|g| g.0 == sid) {
                Some(g) => g.3.push(row),
                None => {
                    let Some(s) = self.sessions.get(&sid) else {
                        lost.push(sid);
                        continue;
                    };
                    let out_max = s.shared.out_max.load(std::sync::atomic::Ordering::Relaxed);
                    groups.push((sid, s.dir.clone(), out_max, vec![row]));
                }
            }
        }
        for (sid, ..) in &groups {
            self.check_inbound_now(sid);
        }
        let results: Vec<Result<(), String>> = if groups.len() <= 1 {
            groups
                .iter()
                .map(|(_, dir, out_max, rows)| commit_rows(dir, rows, *out_max))
                .collect()
        } else {
            let next = std::sync::atomic::AtomicUsize::new(0);
            let slots: Vec<Mutex<Option<Result<(), String>>>> =
                groups.iter().map(|_| Mutex::new(None)).collect();
            std::thread::scope(|scope| {
                for _ in 0..groups.len().min(FLUSH_THREADS) {
                    scope.spawn(|| loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some((_, dir, out_max, rows)) = groups.get(i) else {
                            break;
                        };
                        *slots[i].lock().unwrap() = Some(commit_rows(dir, rows, *out_max));
                    });
                }
            });
            slots
                .into_iter()
                .map(|m| {
                    m.into_inner()
                        .unwrap()
                        .unwrap_or_else(|| Err("not written".into()))
                })
                .collect()
        };
        tracing::trace!(
            sessions = groups.len(),
            events = self.pending_acks.len(),
            ms = t_flush.elapsed().as_millis() as u64,
            "flushed routed rows"
        );
        let mut failed: HashMap<String, String> = HashMap::new();
        for sid in lost {
            failed.insert(sid, "the session is no longer loaded".into());
        }
        for ((sid, dir, out_max, rows), r) in groups.iter().zip(results) {
            // Our own file damaged: recovered, then written once more (issue 15).
            let r = r.or_else(|e| self.retry_if_repaired(sid, dir, rows, *out_max, e));
            match r {
                Ok(()) => {
                    if let Err(e) = self.central.touch_session(sid) {
                        tracing::warn!(session_id = %sid, "could not update last_active: {e:#}");
                    }
                }
                Err(e) => {
                    tracing::error!(session_id = %sid, "could not store inbound messages: {e}");
                    failed.insert(sid.clone(), e);
                }
            }
        }
        let mut wake: Vec<String> = Vec::new();
        for p in std::mem::take(&mut self.pending_acks) {
            let bad: Vec<&String> = p
                .stored
                .iter()
                .filter(|s| failed.contains_key(*s))
                .collect();
            // Not stored for every agent it was meant for: failed, so the
            // platform redelivers (the rows that did commit are idempotent).
            let outcome = if let Some(b) = bad.first() {
                if p.ack.is_none() {
                    tracing::error!(sessions = ?bad, "a replayed message could not be stored; it is kept in its approval's result");
                }
                AckOutcome::Failed(format!("could not store the message: {}", failed[*b]))
            } else {
                AckOutcome::Stored {
                    routed: p.stored.len(),
                    handled: p.note.as_ref().is_some_and(|n| n.handled),
                    note: p.note.map(|n| n.text),
                }
            };
            if let Some(ack) = p.ack {
                ack.complete(outcome);
            }
            for id in p.woken {
                if !failed.contains_key(&id) && !wake.contains(&id) {
                    wake.push(id);
                }
            }
        }
        // Once per session (a burst for one session is one wake check).
        for id in wake {
            self.try_wake(&id);
        }
    }
}
