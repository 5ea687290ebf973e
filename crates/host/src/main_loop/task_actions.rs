//! The agent's task tools reach the host as `system` rows; the host
//! changes the session's task rows (`crate::tasks`), wakes the session when
//! a task falls due, and answers with an `action_result` (context for the
//! agent's next turn, `trigger=0`).

use pinch_proto::content::{InContent, SystemIn};
use serde_json::{json, Value};

use super::Host;

pub(super) const ACTIONS: &[&str] = &[
    "schedule_task",
    "update_task",
    "cancel_task",
    "pause_task",
    "resume_task",
];

impl Host {
    pub(super) fn task_action(
        &mut self,
        session_id: &str,
        out_id: &str,
        action: &str,
        v: &Value,
    ) -> Result<(), String> {
        let Some(s) = self.sessions.get(session_id) else {
            return Err("the session is not active".into());
        };
        // A row delivered twice (slow main loop, host crash) acts once.
        let result_id = format!("task-result:{out_id}");
        if super::agent_admin::session_has_row(&s.dir, &result_id) {
            return Ok(());
        }
        let out_max = s.shared.out_max.load(std::sync::atomic::Ordering::Relaxed);
        let request_id = v.get("request_id").cloned().unwrap_or(Value::Null);
        let (status, result, wake) = match crate::tasks::apply(
            &s.dir,
            action,
            v,
            &self.cfg.timezone,
            out_max,
        ) {
            Ok(done) => {
                tracing::info!(session_id = %session_id, action, result = %done.result, "task action done");
                let mut r = done.result;
                r["request_id"] = request_id;
                ("ok", r, done.wake_at)
            }
            Err(e) => {
                tracing::info!(session_id = %session_id, action, "task action refused: {e:#}");
                (
                    "failed",
                    json!({"request_id": request_id, "error": format!("{e:#}")}),
                    None,
                )
            }
        };
        let content = InContent::System(SystemIn::ActionResult {
            action: action.to_owned(),
            status: status.into(),
            result,
        });
        self.system_in(session_id, &result_id, content, false);
        if let Some(due) = wake {
            self.wake_at(session_id, due.as_millisecond());
        }
        Ok(())
    }
}
