//! Supervision (SPEC §6.3, §6.4): a runner's exit recorded and classified,
//! its orphaned claims retried or failed, abnormal exits counted against the
//! crash budget (the verdict is `pinch_policy::budget`), quarantine set and
//! lifted, and a runner asked to stop, then killed after the grace.

use std::time::{Duration, Instant};

use pinch_policy::exit::{self, Cause};

use super::runner_log::{detail_is_corruption, last_error_line};
use super::spawn::write_atomic;
use super::{now_ms, Event, Host};
use crate::session;

impl Host {
    pub(super) fn on_exit(
        &mut self,
        id: &str,
        runner_id: &str,
        code: Option<i32>,
        signal: Option<i32>,
    ) {
        self.stats
            .exits
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // bwrap and docker report a runner killed by a signal as 128 + n:
        // counted as the signal, as the host classifies it.
        let (code, signal) = exit::unwrap_status(code, signal, self.sandbox.kind().isolated());
        crate::metrics::METRICS.exit(code, signal);
        let shutting_down = self.shutting_down;
        let Some(s) = self.sessions.get_mut(id) else {
            return;
        };
        let span = tracing::info_span!("session", session_id = %id);
        let _g = span.enter();
        let Some(live) = s.runner.take_if(|l| l.runner_id == runner_id) else {
            return;
        };
        *s.shared.runner.lock().unwrap() = None;
        // Its turns' live view ends; a retry streams anew (decision 0048).
        let (hub, sid) = (self.live.clone(), id.to_owned());
        tokio::spawn(async move { hub.gone(&sid, &[]).await });
        let asked = live.stop_requested_at.is_some();
        let cause = exit::classify(code, signal, shutting_down);
        let cause_str = match (cause, live.kill_reason) {
            (Cause::Killed, Some(_)) => "killed_stuck",
            (Cause::Transient, _)
                if detail_is_corruption(
                    &self.data.runner_logs(id).join(format!("{runner_id}.log")),
                ) =>
            {
                "corruption"
            }
            (c, _) => c.as_str(),
        };
        let log = self.data.runner_logs(id).join(format!("{runner_id}.log"));
        // The cause the runner itself logged (not whatever it said last).
        let detail = last_error_line(&log);
        let what = exit::describe(code, signal);
        if cause.is_abnormal() {
            tracing::warn!(
                runner_id,
                cause = cause_str,
                last_log = detail.as_deref().unwrap_or(""),
                "runner {} ({what})",
                cause.meaning()
            );
        } else {
            tracing::info!(
                runner_id,
                cause = cause_str,
                "runner {} ({what})",
                cause.meaning()
            );
        }
        let detail = match live.kill_reason {
            Some(r) => Some(format!("killed as stuck: {r}")),
            None => detail,
        };
        let _ = self.central.record_exit(
            id,
            runner_id,
            &live.started_at,
            code,
            signal,
            cause_str,
            detail.as_deref(),
        );
        let _ = self.central.set_runner_state(id, "stopped", None);
        self.watch_map.lock().unwrap().remove(&s.dir.out_dir());
        if let Some(w) = self.watcher.as_mut() {
            use notify::Watcher;
            let _ = w.unwatch(&s.dir.out_dir());
        }
        if let Err(e) = pinch_proto::open::recovery_open(&s.dir.outbound_db(), session::BUSY) {
            tracing::warn!("recovery open of outbound.db failed: {e}");
        }
        let dir = s.dir.clone();
        drop(live.child);
        if cause.is_abnormal() {
            // No runner alive: the host checks its own files (issue 15).
            let row = s.row.clone();
            let stamp = self.check_after_exit(&row, &dir);
            if let Some(s) = self.sessions.get_mut(id) {
                s.inbound_stamp = stamp;
                s.shared.kick.notify_one();
            }
        }
        // A sandbox whose supervisor died can leave its inner process tree
        // behind; nothing of this session may run when the next runner starts.
        let leftovers = self.sandbox.reap_leftovers(dir.root());
        if leftovers > 0 {
            tracing::warn!(
                count = leftovers,
                "killed processes the dead sandbox left behind"
            );
        }
        // Orphan claims of the dead runner: retry with backoff, or fail at
        // the limit and tell the user once (SPEC §6.3). Exit 75 (the mount
        // failed) and clean exits release claims without a try.
        self.resolve_orphans(
            id,
            cause == Cause::Transient || !cause.is_abnormal() || live.stopped_by_user,
        );
        let counts = cause.is_abnormal() && !(asked && live.kill_reason.is_none());
        let proceed = if counts {
            self.count_abnormal(id, cause, &what, detail.as_deref())
        } else {
            true
        };
        let Some(s) = self.sessions.get_mut(id) else {
            return;
        };
        s.shared.notify.notify_one();
        if !shutting_down {
            // Sessions waiting for a slot go first, so a busy session cannot
            // take back the slot it just freed every time.
            while let Some(q) = self.slot_queue.pop_front() {
                if self.live_count() >= self.cfg.max_concurrent_runners {
                    self.slot_queue.push_front(q);
                    break;
                }
                self.try_wake(&q);
            }
            if proceed {
                self.try_wake(id);
            }
        }
    }

    /// Resolves a dead runner's claims; on failure remembers to retry before
    /// the next spawn (the next runner would otherwise drop the claims
    /// without the try being counted).
    pub(super) fn resolve_orphans(&mut self, id: &str, transient: bool) {
        let Some(s) = self.sessions.get(id) else {
            return;
        };
        let dir = s.dir.clone();
        let res = session::orphan_claims(&dir, None).and_then(|o| {
            session::apply_orphans(
                &dir,
                &o,
                transient,
                self.cfg.retry_base.as_millis() as i64,
                jiff::Timestamp::now(),
            )
        });
        match res {
            Ok((failed, earliest)) => {
                for o in failed {
                    self.notify_origin(o.channel_type, o.platform_id, o.thread_id,
                        "Sorry, I could not process your message: it failed 5 times, so I set it aside. Please send it again later.".into());
                }
                if let Some(due) = earliest {
                    self.wake_at(id, due);
                }
                if let Some(s) = self.sessions.get_mut(id) {
                    s.orphans_pending = None;
                }
            }
            Err(e) => {
                tracing::warn!(session_id = %id, "cannot resolve orphan claims yet (retried before the next spawn): {e:#}");
                if let Some(s) = self.sessions.get_mut(id) {
                    s.orphans_pending = Some(transient);
                }
            }
        }
    }

    /// Counts an abnormal exit against the crash budget (SPEC §6.4). Returns
    /// whether the session may respawn (after `next_spawn_at`); false when
    /// it is now quarantined, in which case the user was told once.
    /// `what` says how it ended (`killed by SIGKILL`, `exit code 1`, `could
    /// not be started`), `detail` why, when known (the runner's last ERROR).
    pub(super) fn count_abnormal(
        &mut self,
        id: &str,
        cause: Cause,
        what: &str,
        detail: Option<&str>,
    ) -> bool {
        let now = now_ms();
        let Some(s) = self.sessions.get_mut(id) else {
            return false;
        };
        s.exits_ms.push(now);
        let window = self.cfg.budget.window.as_millis() as i64;
        s.exits_ms.retain(|t| now - *t <= window);
        // Persisted, so a restart of the host does not reset the budget.
        if let Err(e) = self.central.count_budget_exit(id, now, window) {
            tracing::warn!(session_id = %id, "could not record the exit in the crash budget (a restart forgets it): {e:#}");
        }
        match pinch_policy::budget::after_abnormal_exit(
            now,
            &s.exits_ms,
            cause == Cause::Config,
            &self.cfg.budget,
        ) {
            pinch_policy::budget::Verdict::Respawn(delay) => {
                s.next_spawn_at = Some(Instant::now() + delay);
                if !delay.is_zero() {
                    tracing::warn!(session_id = %id, exits = s.exits_ms.len(), delay_s = delay.as_secs_f64(), "backing off before the next respawn");
                }
                true
            }
            pinch_policy::budget::Verdict::Quarantine => {
                let span = Duration::from_millis(
                    (now - s.exits_ms.first().copied().unwrap_or(now)).max(0) as u64,
                );
                let reason =
                    pinch_policy::budget::quarantine_reason(s.exits_ms.len(), span, what, detail);
                s.quarantined = true;
                crate::metrics::METRICS
                    .quarantines
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let routing = pinch_proto::open::open_reader(&s.dir.inbound_db(), session::BUSY)
                    .ok()
                    .and_then(|c| pinch_proto::rows::routing(&c).ok().flatten());
                match self.central.quarantine(id, &reason) {
                    Ok(true) => {
                        tracing::error!(session_id = %id, reason = %reason, "session quarantined: no more respawns until a new message or `pinch admin sessions resume`");
                        if let Some(r) = routing {
                            self.notify_origin(r.channel_type, r.platform_id, r.thread_id, format!(
                                "The assistant is unavailable: {reason}. Send a new message to try again, or ask the owner to run `pinch admin sessions resume {id}`."
                            ));
                        }
                    }
                    Ok(false) => {}
                    Err(e) => {
                        tracing::error!(session_id = %id, "cannot record the quarantine: {e:#}")
                    }
                }
                false
            }
        }
    }

    /// Lifts a quarantine (a user's new message or an admin command).
    pub(super) fn lift_quarantine(&mut self, id: &str, why: &str) {
        if let Some(s) = self.sessions.get_mut(id) {
            if s.quarantined || !s.exits_ms.is_empty() {
                s.quarantined = false;
                s.exits_ms.clear();
                s.next_spawn_at = None;
            }
        }
        if let Err(e) = self.central.clear_budget_exits(id) {
            tracing::warn!(session_id = %id, "could not clear the crash budget's record: {e:#}");
        }
        match self.central.lift_quarantine(id) {
            Ok(true) => tracing::info!(session_id = %id, "quarantine lifted: {why}"),
            Ok(false) => {}
            Err(e) => tracing::error!(session_id = %id, "cannot lift the quarantine: {e:#}"),
        }
    }

    /// Asks a runner to stop via `in/stop` (works through any sandbox).
    pub(super) fn request_stop(&mut self, id: &str) -> bool {
        let Some(s) = self.sessions.get_mut(id) else {
            return false;
        };
        let Some(live) = s.runner.as_mut() else {
            return false;
        };
        if live.stop_requested_at.is_none() {
            live.stop_requested_at = Some(Instant::now());
            if let Err(e) = write_atomic(&s.dir.stop_file(), live.runner_id.as_bytes()) {
                tracing::warn!(session_id = %id, "cannot write the stop file, killing the runner: {e}");
                live.child.kill();
            }
            let rid = live.runner_id.clone();
            self.stop_deadline(id, rid);
        }
        true
    }

    /// The runner's stop grace starts now: a `StopDeadline` event when it
    /// runs out (the runner is killed then if it is still alive).
    pub(super) fn stop_deadline(&self, id: &str, runner_id: String) {
        let (events, grace, session_id) = (self.events.clone(), self.cfg.stop_grace, id.to_owned());
        tokio::spawn(async move {
            tokio::time::sleep(grace).await;
            let _ = events.send(Event::StopDeadline {
                session_id,
                runner_id,
            });
        });
    }
}
