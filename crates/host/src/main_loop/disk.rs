//! The per-session disk quota, enforced (issue 14; measurement in
//! [`crate::quota`]). While a runner lives, a task measures the session's
//! writable folders at spawn and every `disk_check` off the main loop;
//! over the quota, the runner is stopped (stop file, then killed after the
//! grace), the agent finds a note saying what uses the space in its next
//! turn, and the conversation is told once what the owner can do. The
//! session is not started again while it is over: each wake (a new
//! message, `pinch admin sessions resume`, due work) measures again off
//! the main loop, and once there is room — files deleted by the owner, or
//! the quota raised with `pinch admin groups config-set <group> --sandbox
//! '{"disk_mb": N}'` — it runs as before. Letting the agent run to clean
//! up would let it write more first, so it does not (decision 0023).

use std::time::Duration;

use pinch_proto::content::{InContent, SystemIn};

use super::{Event, Host};
use crate::quota::{self, Root, Usage};

/// A session's quota state on the main loop.
#[derive(Debug, Default)]
pub(super) struct DiskState {
    /// Why it is over its quota (the runner may not start), if it is.
    over: Option<String>,
    /// A measurement is under way (at most one per session).
    checking: bool,
}

impl DiskState {
    /// Over its quota when last measured: no runner may start.
    pub(super) fn is_over(&self) -> bool {
        self.over.is_some()
    }
}

impl Host {
    /// The session's quota in bytes: the group's `sandbox.disk_mb`, else
    /// `[sandbox] disk_mb`.
    pub(super) fn disk_limit(&self, ag: &str) -> u64 {
        let group: Option<u64> = self
            .central
            .agent_sandbox(ag)
            .ok()
            .flatten()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .and_then(|v| v.get("disk_mb").and_then(serde_json::Value::as_u64))
            .filter(|mb| *mb > 0);
        group
            .unwrap_or(self.cfg.disk_quota_mb)
            .saturating_mul(1 << 20)
    }

    /// The folders a session's runner can write: its group's workspace,
    /// its outbox and its `out/`.
    fn disk_roots(&self, id: &str) -> Vec<Root> {
        let Some(s) = self.sessions.get(id) else {
            return Vec::new();
        };
        vec![
            Root {
                shown: "/workspace/agent".into(),
                host: self.data.group_dir(&s.row.folder),
            },
            Root {
                shown: "/workspace/outbox".into(),
                host: s.dir.outbox(),
            },
            Root {
                shown: "/pinch/out".into(),
                host: s.dir.out_dir(),
            },
        ]
    }

    /// Starts measuring a live runner's folders (now, then every
    /// `disk_check`), reporting when they are over the quota; it stops
    /// when the returned sender is dropped (the runner's record goes).
    pub(super) fn watch_disk(&self, id: &str, runner_id: &str) -> tokio::sync::oneshot::Sender<()> {
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let roots = self.disk_roots(id);
        let limit = self
            .sessions
            .get(id)
            .map(|s| self.disk_limit(&s.row.agent_group_id))
            .unwrap_or(u64::MAX);
        let (events, every) = (
            self.events.clone(),
            self.cfg.disk_check.max(Duration::from_millis(100)),
        );
        let (sid, rid) = (id.to_owned(), runner_id.to_owned());
        tokio::spawn(async move {
            loop {
                let r = roots.clone();
                let Ok(usage) = tokio::task::spawn_blocking(move || quota::measure(&r)).await
                else {
                    return;
                };
                // Over (by the limit at spawn): the main loop decides with
                // the current limit, and stops the runner, which ends this.
                if usage.over(limit).is_some()
                    && events
                        .send(Event::DiskChecked {
                            session_id: sid.clone(),
                            runner_id: Some(rid.clone()),
                            usage,
                        })
                        .is_err()
                {
                    return;
                }
                tokio::select! {
                    _ = tokio::time::sleep(every) => {}
                    _ = &mut stopped => return,
                }
            }
        });
        stop
    }

    /// Whether the session may start a runner as far as its disk goes; if
    /// not, measures again (off the main loop) and wakes it once there is
    /// room.
    pub(super) fn disk_allows_spawn(&mut self, id: &str) -> bool {
        let roots = self.disk_roots(id);
        let Some(s) = self.sessions.get_mut(id) else {
            return false;
        };
        if s.disk.over.is_none() {
            return true;
        }
        if !s.disk.checking {
            s.disk.checking = true;
            let (events, sid) = (self.events.clone(), id.to_owned());
            tokio::spawn(async move {
                let usage = tokio::task::spawn_blocking(move || quota::measure(&roots))
                    .await
                    .unwrap_or_else(|_| Usage {
                        truncated: true,
                        ..Usage::default()
                    });
                let _ = events.send(Event::DiskChecked {
                    session_id: sid,
                    runner_id: None,
                    usage,
                });
            });
        }
        false
    }

    /// A measurement came back.
    pub(super) fn disk_checked(&mut self, id: &str, runner_id: Option<String>, usage: Usage) {
        let Some(ag) = self.sessions.get(id).map(|s| s.row.agent_group_id.clone()) else {
            return;
        };
        let limit = self.disk_limit(&ag);
        let why = usage.over(limit);
        let Some(s) = self.sessions.get_mut(id) else {
            return;
        };
        if runner_id.is_none() {
            s.disk.checking = false;
        }
        let Some(why) = why else {
            if s.disk.over.take().is_some() {
                tracing::info!(session_id = %id, used = %quota::mb(usage.bytes), limit = %quota::mb(limit), "session back under its disk quota: it runs again");
                self.try_wake(id);
            }
            return;
        };
        let first = s.disk.over.is_none();
        s.disk.over = Some(why.clone());
        let folder = s.row.folder.clone();
        let live = s
            .runner
            .as_ref()
            .is_some_and(|l| runner_id.as_deref().is_none_or(|r| r == l.runner_id));
        if live {
            self.request_stop(id);
        }
        if !first {
            return;
        }
        let biggest = usage.biggest_lines();
        tracing::error!(
            session_id = %id, agent_group = %ag, used = %quota::mb(usage.bytes), limit = %quota::mb(limit), files = usage.entries,
            "session over its disk quota, runner stopped: {why}; biggest:\n{biggest}\ndelete files in groups/{folder}/ or the session's outbox/, or raise the quota: pinch admin groups config-set {ag} --sandbox '{{\"disk_mb\": N}}'"
        );
        let note = format!(
            "The host stopped your last turn: {why}. What uses the space:\n{biggest}\nDelete files you no longer need (for example with the shell tool) before you write anything else; if you stay over the quota you will be stopped again."
        );
        self.system_in(
            id,
            &format!("disk-quota:{}", pinch_proto::time::now()),
            InContent::System(SystemIn::Note { text: note }),
            false,
        );
        let routing = self
            .sessions
            .get(id)
            .and_then(|s| {
                pinch_proto::open::open_reader(&s.dir.inbound_db(), crate::session::BUSY).ok()
            })
            .and_then(|c| pinch_proto::rows::routing(&c).ok().flatten());
        if let Some(r) = routing {
            self.notify_origin(
                r.channel_type,
                r.platform_id,
                r.thread_id,
                format!(
                    "The assistant is paused: {why} (biggest: {}). Messages sent meanwhile are kept. To make room, the owner can delete files in groups/{folder}/ of the pinch data dir, or raise the quota with `pinch admin groups config-set {ag} --sandbox '{{\"disk_mb\": N}}'`; then send a message.",
                    usage.biggest.iter().take(3).map(|(p, b)| format!("{p} {}", quota::mb(*b))).collect::<Vec<_>>().join(", ")
                ),
            );
        }
    }
}
