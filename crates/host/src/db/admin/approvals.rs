//! `approvals-list` and `approvals-get` (deciding one needs the main loop:
//! `approvals-approve`/`-reject` are served there).

use pinch_policy::admin::Verb;
use pinch_proto::rusqlite::types::Value as Sv;
use serde_json::Value;

use super::sql::*;
use super::*;

impl Ctx<'_> {
    pub(super) fn approvals(&self, verb: Verb) -> Reply {
        match verb {
            Verb::List => self.approvals_list(),
            Verb::Get => self.approvals_get(),
            _ => Err(self.unserved()),
        }
    }

    pub(super) fn approvals_list(&self) -> Reply {
        let status = self.a.opt_str("status")?;
        list(
            self.conn,
            &self.a,
            "SELECT approval_id AS id, agent_group_id AS ag, session_id, action, title, approver_user_id AS approver, status,
                    decided_by, decided_at, expires_at, created_at FROM pending_approvals",
            &[("status = ?", status.map(Sv::Text))],
            "created_at DESC, approval_id",
        )
    }

    pub(super) fn approvals_get(&self) -> Reply {
        let id = self.a.id("pinch admin approvals get a1b2c3")?;
        let mut row = one(
            self.conn,
            "SELECT approval_id AS id, session_id, agent_group_id AS ag, request_id, action, payload, title, options_json,
                    approver_user_id AS approver, channel_type, platform_id, thread_id, platform_message_id, status,
                    decided_by, decided_at, result, expires_at, created_at
             FROM pending_approvals WHERE approval_id = ?1",
            &[s(&id)],
        )?
        .ok_or_else(|| not_found(format!("no approval {id:?} (see `pinch admin approvals list`)")))?;
        for c in ["payload", "options_json"] {
            if let Some(v) = row[c]
                .as_str()
                .and_then(|t| serde_json::from_str::<Value>(t).ok())
            {
                row[c] = v;
            }
        }
        Ok(row)
    }
}
