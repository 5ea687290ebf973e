//! Waking a session: the gates and the back-off are pure
//! ([`pinch_policy::wake`], with the time passed in), the look for due work,
//! the slot queue and the spawn are here. Every retry is a `Wake` event
//! after a timer, never a nested call (issue 15, break 1).

use std::time::{Duration, Instant};

use pinch_policy::exit::Cause;
use pinch_policy::retry;
use pinch_policy::wake::{self, Decision, Refusal};
use pinch_proto::time;

use super::{now_ms, session_db, Event, Host};
use crate::session;

impl Host {
    /// Spawns the session's runner if it has due work and none is alive
    /// (single-flight: only the main loop spawns, one event at a time).
    /// Whether it may, and when a back-off ends, is decided by
    /// [`wake::decide`]; this carries the decision out.
    pub(super) fn try_wake(&mut self, id: &str) {
        let now = Instant::now();
        let live = self.live_count();
        let slots_full = live >= self.cfg.max_concurrent_runners;
        let events = self.events.clone();
        let Some(s) = self.sessions.get(id) else {
            return;
        };
        let view = wake::Session {
            running: s.runner.is_some(),
            closed: s.closed,
            quarantined: s.quarantined,
            checking: s.checking,
            over_quota: s.disk.is_over(),
            next_spawn_at: s.next_spawn_at,
            queued: slots_full && self.slot_queue.iter().any(|q| q == id),
        };
        match wake::decide(now, self.shutting_down, &view, slots_full) {
            Decision::Look => {}
            Decision::Refuse(Refusal::Quarantined) => {
                tracing::debug!(session_id = %id, "wake refused: the session is quarantined");
                return;
            }
            Decision::Refuse(Refusal::Checking) => {
                tracing::debug!(session_id = %id, "wake deferred: its outbound.db is being checked");
                return;
            }
            Decision::Refuse(Refusal::OverQuota) => {
                // Measures again off the main loop; woken once there is room.
                self.disk_allows_spawn(id);
                tracing::debug!(session_id = %id, "wake refused: the session is over its disk quota (measuring again)");
                return;
            }
            // A live runner sees the write through inotify on in/.
            Decision::Refuse(_) => return,
            // Already waiting for a slot; checked again when one frees.
            Decision::WaitForSlot => return,
            Decision::Backoff { left, .. } => {
                let Some(s) = self.sessions.get_mut(id) else {
                    return;
                };
                if !s.wake_scheduled {
                    s.wake_scheduled = true;
                    let id = id.to_owned();
                    tokio::spawn(async move {
                        tokio::time::sleep(left).await;
                        let _ = events.send(Event::Wake(id));
                    });
                }
                self.tell_backoff(id, left);
                return;
            }
        }
        self.check_inbound_now(id);
        let Some(s) = self.sessions.get_mut(id) else {
            return;
        };
        match session::has_due_trigger(&s.dir) {
            Ok(true) => s.wake_failures = 0,
            Ok(false) => {
                s.wake_failures = 0;
                return;
            }
            Err(e) => {
                // Never throws: retry with a growing delay (2 s … 60 s).
                s.wake_failures += 1;
                let delay = retry::read_backoff(s.wake_failures + 1);
                tracing::warn!(session_id = %id, retry_in_s = delay.as_secs(), "cannot check for due work: {e:#}");
                if session_db::is_corrupt(&e) {
                    let _ = events.send(Event::SessionDbFault(id.to_owned()));
                }
                if !s.wake_scheduled {
                    s.wake_scheduled = true;
                    let id = id.to_owned();
                    tokio::spawn(async move {
                        tokio::time::sleep(delay).await;
                        let _ = events.send(Event::Wake(id));
                    });
                }
                return;
            }
        }
        if let Some(transient) = s.orphans_pending {
            self.resolve_orphans(id, transient);
            if self
                .sessions
                .get(id)
                .is_some_and(|s| s.orphans_pending.is_some())
            {
                // Still unreadable: try again shortly (and the sweep retries too).
                self.wake_at(
                    id,
                    now_ms() + retry::UNRESOLVED_ORPHANS_RETRY.as_millis() as i64,
                );
                return;
            }
        }
        if slots_full {
            if !self.slot_queue.iter().any(|q| q == id) {
                self.slot_queue.push_back(id.to_owned());
            }
            return;
        }
        if let Err(e) = self.spawn(id) {
            tracing::error!(session_id = %id, "runner spawn failed: {e:#}");
            let detail = format!("{e:#}");
            let _ = self.central.record_exit(
                id,
                "-",
                &time::now(),
                None,
                None,
                Cause::SpawnFailed.as_str(),
                Some(&detail),
            );
            // Like an abnormal exit: counted, and retried by an event after
            // the back-off (never a nested wake: issue 15, break 1).
            if self.count_abnormal(
                id,
                Cause::SpawnFailed,
                "could not be started",
                Some(&detail),
            ) {
                self.wake_after_backoff(id);
            }
        }
    }

    /// A message is waiting while the session backs off for longer than
    /// [`wake::BACKOFF_NOTICE_AFTER`]: tells its conversation once per
    /// back-off that the agent is restarting, and when (issue 15).
    pub(super) fn tell_backoff(&mut self, id: &str, left: Duration) {
        let Some(s) = self.sessions.get_mut(id) else {
            return;
        };
        if !wake::announce_backoff(left, s.backoff_told, s.next_spawn_at) {
            return;
        }
        if !matches!(session::has_due_trigger(&s.dir), Ok(true)) {
            return; // nobody is waiting (yet): told when a message is
        }
        s.backoff_told = s.next_spawn_at;
        let exits = s.exits_ms.len();
        let routing = pinch_proto::open::open_reader(&s.dir.inbound_db(), session::BUSY)
            .ok()
            .and_then(|c| pinch_proto::rows::routing(&c).ok().flatten());
        let secs = left.as_secs_f64().ceil() as u64;
        tracing::info!(session_id = %id, wait_s = secs, "told the user the agent restarts after its back-off");
        if let Some(r) = routing {
            self.notify_origin(
                r.channel_type,
                r.platform_id,
                r.thread_id,
                wake::backoff_notice(exits, left),
            );
        }
    }

    /// Schedules a `Wake` for when the session's back-off ends. The only way
    /// a retry is started: an event handled on its own, so a loop of
    /// failures is a sequence of events, never a recursion.
    pub(super) fn wake_after_backoff(&mut self, id: &str) {
        let events = self.events.clone();
        let Some(s) = self.sessions.get_mut(id) else {
            return;
        };
        if s.wake_scheduled {
            return;
        }
        let at = wake::retry_at(Instant::now(), s.next_spawn_at);
        s.wake_scheduled = true;
        let id = id.to_owned();
        tokio::spawn(async move {
            tokio::time::sleep_until(at.into()).await;
            let _ = events.send(Event::Wake(id));
        });
    }

    /// Wakes a session at an epoch-ms time (a retry or task coming due).
    pub(super) fn wake_at(&self, id: &str, due_ms: i64) {
        let delay = Duration::from_millis((due_ms - now_ms()).max(0) as u64);
        let (events, id) = (self.events.clone(), id.to_owned());
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let _ = events.send(Event::Wake(id));
        });
    }
}
