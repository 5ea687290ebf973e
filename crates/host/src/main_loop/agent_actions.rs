//! Actions agents ask of the host through `system` rows in `outbound.db`
//! (SPEC §10): one router by the row's `action` — the `admin` tool
//! (`agent_admin.rs`), `create_agent`, self-modification (`self_mod.rs`)
//! and the task tools (`task_actions.rs`). The router knows those modules;
//! none of them knows the router, so there is no import cycle between them.

use serde_json::Value;

use super::Host;

impl Host {
    /// Handles one agent `system` row; `Err` = not handled (the delivery
    /// fails the row and tells the agent why).
    pub(super) fn agent_action(
        &mut self,
        session_id: &str,
        out_id: &str,
        content: &str,
    ) -> Result<(), String> {
        let v: Value =
            serde_json::from_str(content).map_err(|e| format!("content is not valid JSON: {e}"))?;
        match v.get("action").and_then(Value::as_str) {
            Some("admin_request") => self.admin_request(session_id, out_id, &v),
            Some("create_agent") => self.create_agent_request(session_id, out_id, &v),
            Some(a) if super::self_mod::ACTIONS.contains(&a) => {
                let a = a.to_owned();
                self.self_mod_request(session_id, out_id, &a, &v)
            }
            Some(a) if super::task_actions::ACTIONS.contains(&a) => {
                let a = a.to_owned();
                self.task_action(session_id, out_id, &a, &v)
            }
            Some(other) => Err(format!(
                "the host does not carry out {other:?} in this version"
            )),
            None => Err("a system row needs an `action`".into()),
        }
    }
}
