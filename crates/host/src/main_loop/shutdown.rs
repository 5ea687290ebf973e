//! Shutdown: runners asked to stop, killed after the grace, deliveries
//! drained, a last backup, the boot breaker cleared.

use std::time::Duration;

use super::boot::BREAKER_FILE;
use super::Host;

impl Host {
    pub(super) fn begin_shutdown(&mut self) {
        tracing::info!(live = self.live_count(), "shutting down: stopping runners");
        self.shutting_down = true;
        let ids: Vec<String> = self
            .sessions
            .iter()
            .filter(|(_, s)| s.runner.is_some())
            .map(|(k, _)| k.clone())
            .collect();
        for id in ids {
            self.request_stop(&id);
        }
    }

    pub(super) fn kill_remaining(&mut self) {
        for s in self.sessions.values() {
            if let Some(l) = &s.runner {
                tracing::warn!(session_id = %s.row.id, "runner did not stop within the grace, killing it");
                l.child.kill();
            }
        }
    }

    pub(super) async fn finish_shutdown(&mut self) {
        let _ = self.delivery_stop.send(true);
        let all = async { while self.delivery_tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(Duration::from_secs(10), all)
            .await
            .is_err()
        {
            tracing::warn!(
                "deliveries did not finish within 10 s; unsent rows are sent on the next start"
            );
            self.delivery_tasks.abort_all();
        }
        for s in self.sessions.values() {
            let _ = self.central.set_runner_state(&s.row.id, "stopped", None);
        }
        crate::backup::backup_logged(self.data.clone(), self.cfg.backup_keep).await;
        let _ = std::fs::remove_file(self.data.admin_socket());
        for (id, h) in self.proxies.drain() {
            h.abort();
            let _ =
                std::fs::remove_file(self.data.run_dir().join("proxy").join(id).join("llm.sock"));
        }
        // A graceful exit clears the breaker, even if teardown had trouble.
        let _ = std::fs::remove_file(self.data.run_dir().join(BREAKER_FILE));
        tracing::info!("pinch host stopped");
    }
}
