//! The hand-off to delivery: one delivery task per session
//! (`crate::delivery`), started when the session is loaded and poked when
//! its runner commits (inotify on `out/`), at the delivery poll and at
//! the sweep. Delivery answers through [`Event`](crate::event::Event)s.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use super::Host;
use crate::db::central::SessionRow;
use crate::delivery::{self, Shared};
use crate::paths::SessionDir;

impl Host {
    /// Starts the session's delivery task; returns what pokes it.
    pub(super) fn start_delivery(&mut self, row: &SessionRow, dir: &SessionDir) -> Arc<Shared> {
        let shared = Shared::new();
        shared.out_max.store(
            pinch_proto::seq::other_max(&dir.outbound_db(), "messages_out"),
            std::sync::atomic::Ordering::Relaxed,
        );
        let mut task = delivery::Task::new(
            row.id.clone(),
            dir.clone(),
            self.channels.clone(),
            shared.clone(),
            self.events.clone(),
        );
        task.timezone = self.cfg.timezone.clone();
        task.agent_group = row.agent_group_id.clone();
        task.live = Some(self.live.clone());
        use tracing::Instrument;
        let span = tracing::info_span!("delivery", session_id = %row.id);
        self.delivery_tasks
            .spawn(task.run(self.delivery_stop.subscribe()).instrument(span));
        shared
    }

    pub(super) fn poke_live_deliveries(&self) {
        for s in self.sessions.values().filter(|s| s.runner.is_some()) {
            s.shared.notify.notify_one();
        }
    }
}

/// Watches the live runners' `out/` folders (`watch_map`: folder → the
/// session's delivery), poking a delivery when its runner commits. `None`
/// without inotify: deliveries then rely on the poll.
pub(super) fn out_watcher(
    map: Arc<Mutex<HashMap<PathBuf, Arc<Shared>>>>,
) -> Option<notify::RecommendedWatcher> {
    match notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        let Ok(ev) = res else { return };
        // Only a finished runner commit (or a new file) is worth a pass.
        if !pinch_runner_hint(&ev) {
            return;
        }
        for p in &ev.paths {
            if let Some(parent) = p.parent() {
                if let Some(s) = map.lock().unwrap().get(parent) {
                    s.notify.notify_one();
                }
            }
        }
    }) {
        Ok(w) => Some(w),
        Err(e) => {
            tracing::warn!("inotify unavailable, deliveries rely on the 1 s poll: {e}");
            None
        }
    }
}

/// The wake rule of `pinch_proto::layout::is_commit_hint`, for `out/`.
fn pinch_runner_hint(ev: &notify::Event) -> bool {
    let access = matches!(ev.kind, notify::EventKind::Access(_));
    let removed = matches!(ev.kind, notify::EventKind::Remove(_));
    ev.paths.iter().any(|p| {
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
        pinch_proto::layout::is_commit_hint(name, pinch_proto::layout::OUTBOUND_DB, access, removed)
    })
}
