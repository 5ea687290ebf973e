//! The sweep and the stuck timer (SPEC §6.2): every session is poked, woken
//! if it has due work, and its live runner killed when
//! `pinch_policy::sweep::decide_stuck` says a deadline passed. A chain of
//! timers per runner checks it again at its next deadline.

use std::time::Instant;

use pinch_policy::retry;

use super::{now_ms, session, Event, Host};

impl Host {
    /// The sweep (SPEC §6.2), in order per session: ack sync (the delivery
    /// pass, poked), wake if due (before any reset; a runner spawned by this
    /// tick is not stuck-checked in it, lesson 9), then the stuck decision.
    pub(super) fn sweep(&mut self) {
        self.expire_approvals();
        let ids: Vec<String> = self.sessions.keys().cloned().collect();
        let now = now_ms();
        for id in ids {
            let Some(s) = self.sessions.get(&id) else {
                continue;
            };
            s.shared.notify.notify_one();
            if s.runner.is_none() {
                self.try_wake(&id);
                continue;
            }
            let live = s.runner.as_ref().expect("checked");
            if live.kill_reason.is_some() || live.stop_requested_at.is_some() {
                continue;
            }
            let (view, err) = session::stuck_view(&s.dir, &live.runner_id, live.spawned_ms);
            self.stuck_read_failed(&id, err, now);
            if let pinch_policy::sweep::Stuck::Kill(reason) =
                pinch_policy::sweep::decide_stuck(now, &view, &self.cfg.stuck)
            {
                self.kill_stuck(&id, reason);
            }
        }
    }

    /// Kills a stuck runner: SIGTERM, SIGKILL after the stop grace.
    pub(super) fn kill_stuck(&mut self, id: &str, reason: pinch_policy::sweep::StuckReason) {
        let Some(live) = self.sessions.get_mut(id).and_then(|s| s.runner.as_mut()) else {
            return;
        };
        tracing::warn!(session_id = %id, runner_id = %live.runner_id, reason = reason.as_str(), "runner is stuck: killing it (SIGTERM, SIGKILL after the grace)");
        live.kill_reason = Some(reason.as_str());
        live.stop_requested_at = Some(Instant::now());
        live.child.terminate();
        let rid = live.runner_id.clone();
        self.stop_deadline(id, rid);
    }

    /// Schedules the stuck check of this runner at `at_ms` (epoch ms), no
    /// sooner than a quarter second from now (never a tight loop).
    pub(super) fn schedule_stuck_check(&self, id: &str, runner_id: &str, at_ms: i64) {
        let delay = pinch_policy::sweep::check_in(at_ms, now_ms());
        let (events, sid, rid) = (self.events.clone(), id.to_owned(), runner_id.to_owned());
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let _ = events.send(Event::StuckCheck {
                session_id: sid,
                runner_id: rid,
            });
        });
    }

    /// The per-runner stuck timer fired: kill the runner if a deadline has
    /// passed, else check again at its next deadline. One chain of timers
    /// per runner (started at spawn), so a frozen runner is killed about
    /// when its heartbeat ceiling passes, whatever the sweep interval.
    pub(super) fn stuck_check(&mut self, id: &str, runner_id: &str) {
        let Some(s) = self.sessions.get(id) else {
            return;
        };
        let Some(live) = s.runner.as_ref().filter(|l| l.runner_id == runner_id) else {
            return; // that runner is gone: its chain ends
        };
        if live.kill_reason.is_some() || live.stop_requested_at.is_some() {
            return; // already being stopped (the stop deadline kills it)
        }
        let now = now_ms();
        // An unreadable outbound.db (the agent's file: it may have dropped
        // `processing_ack`) leaves the heartbeat to decide; the claims are
        // read again after a growing pause.
        let (view, err) = session::stuck_view(&s.dir, runner_id, live.spawned_ms);
        let read_again = self.stuck_read_failed(id, err, now);
        match pinch_policy::sweep::decide_stuck(now, &view, &self.cfg.stuck) {
            pinch_policy::sweep::Stuck::Kill(reason) => self.kill_stuck(id, reason),
            pinch_policy::sweep::Stuck::No => {
                let next = pinch_policy::sweep::next_deadline(&view, &self.cfg.stuck);
                self.schedule_stuck_check(id, runner_id, read_again.map_or(next, |r| r.min(next)))
            }
        }
    }

    /// Records how the stuck check's read of the live runner's `outbound.db`
    /// went. A failure is logged once per distinct error (not on every
    /// check) and read again after a growing pause (1 s doubling to 60 s):
    /// returns when (epoch ms). `None` when the read worked.
    pub(super) fn stuck_read_failed(
        &mut self,
        id: &str,
        err: Option<anyhow::Error>,
        now: i64,
    ) -> Option<i64> {
        let live = self.sessions.get_mut(id)?.runner.as_mut()?;
        let Some(e) = err else {
            if live.stuck_read_failures > 0 {
                tracing::info!(session_id = %id, failures = live.stuck_read_failures, "the stuck check reads the runner's claims again");
            }
            live.stuck_read_failures = 0;
            live.stuck_read_error = None;
            return None;
        };
        let msg = format!("{e:#}");
        live.stuck_read_failures += 1;
        let pause_ms = retry::read_backoff(live.stuck_read_failures).as_millis() as i64;
        if live.stuck_read_error.as_deref() != Some(msg.as_str()) {
            tracing::warn!(session_id = %id, runner_id = %live.runner_id, retry_in_s = pause_ms / 1000, "cannot read the runner's claims for the stuck check; its heartbeat alone decides until they can be read (an unreadable outbound.db never protects a frozen runner); logged again only if the error changes: {msg}");
            live.stuck_read_error = Some(msg);
        } else {
            tracing::debug!(session_id = %id, failures = live.stuck_read_failures, "the stuck check's read failed again: {msg}");
        }
        Some(now + pause_ms)
    }
}
