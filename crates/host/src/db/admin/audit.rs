//! Read-only records: `user-dms-list` (resolved direct-message
//! conversations) and `dropped-messages-list` (what the router dropped, why).

use pinch_policy::admin::Verb;
use pinch_proto::rusqlite::types::Value as Sv;

use super::sql::*;
use super::*;

impl Ctx<'_> {
    pub(super) fn user_dms(&self, verb: Verb) -> Reply {
        match verb {
            Verb::List => self.user_dms_list(),
            _ => Err(self.unserved()),
        }
    }

    pub(super) fn dropped_messages(&self, verb: Verb) -> Reply {
        match verb {
            Verb::List => self.dropped_list(),
            _ => Err(self.unserved()),
        }
    }

    pub(super) fn user_dms_list(&self) -> Reply {
        list(
            self.conn,
            &self.a,
            "SELECT user_id AS user, channel_type, messaging_group_id AS mg, resolved_at FROM user_dms",
            &[("user_id = ?", self.a.opt_str("user")?.map(Sv::Text))],
            "user_id, channel_type",
        )
    }

    pub(super) fn dropped_list(&self) -> Reply {
        list(
            self.conn,
            &self.a,
            "SELECT channel_type, platform_id, user_id AS user, sender_name, reason, messaging_group_id AS mg,
                    agent_group_id AS ag, message_count, first_seen, last_seen FROM dropped_messages",
            &[("reason = ?", self.a.opt_str("reason")?.map(Sv::Text))],
            "last_seen DESC, channel_type, platform_id",
        )
    }
}
