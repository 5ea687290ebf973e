//! Clicks, questions and approvals (SPEC §7.1–§7.3): one card primitive
//! (`pending_approvals`, buttons `a:<id>:<n>`) used for sender approval,
//! channel registration and agents' admin commands; the approver chosen
//! and reached by DM; only the approver, an admin of the group or an owner
//! may decide, anyone else is refused visibly and audited; cards expire.
//!
//! One file per job: `cards.rs` the card primitive (made, sent to the
//! first reachable approver, its address recorded, expired); `answers.rs`
//! the clicks (questions answered, approvals decided and carried out, a
//! new agent named); `requests.rs` the sender and channel (registration)
//! requests that raise cards. This file holds `system_in`, the system row
//! written into a session that expiry and the agents' other requests use.

use pinch_proto::content::InContent;
use pinch_proto::rows::NewInbound;
use pinch_proto::time;

use crate::main_loop::Host;
use crate::session;

mod answers;
mod cards;
mod requests;

impl Host {
    /// Writes a system row into a session's `inbound.db` (and wakes it if
    /// `trigger`). Logged, not returned: the callers are event handlers.
    pub(in crate::main_loop) fn system_in(
        &mut self,
        session_id: &str,
        id: &str,
        content: InContent,
        trigger: bool,
    ) {
        let Some(s) = self.sessions.get(session_id) else {
            tracing::warn!(session_id = %session_id, "a system message for a session that is not active was dropped");
            return;
        };
        let row = NewInbound {
            id: id.to_owned(),
            kind: "system".into(),
            timestamp: time::now(),
            trigger,
            content: content.to_json(),
            ..Default::default()
        };
        let out_max = s.shared.out_max.load(std::sync::atomic::Ordering::Relaxed);
        if let Err(e) = session::write_inbound(&s.dir, &[row], out_max) {
            tracing::error!(session_id = %session_id, "could not write a system message: {e:#}");
            return;
        }
        if trigger {
            self.try_wake(session_id);
        }
    }
}
