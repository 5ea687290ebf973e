//! `members-*`: who may talk to an agent group.

use pinch_policy::admin::Verb;
use pinch_proto::rusqlite::{self, types::Value as Sv};
use serde_json::json;

use super::sql::*;
use super::*;

impl Ctx<'_> {
    pub(super) fn members(&self, verb: Verb) -> Reply {
        match verb {
            Verb::List => self.members_list(),
            Verb::Add => self.members_add(),
            Verb::Remove => self.members_remove(),
            _ => Err(self.unserved()),
        }
    }

    pub(super) fn members_list(&self) -> Reply {
        let ag = self.ag_arg(false, "")?;
        list(
            self.conn,
            &self.a,
            "SELECT user_id AS user, agent_group_id AS ag, added_by, added_at FROM agent_group_members",
            &[("agent_group_id = ?", ag.map(Sv::Text))],
            "agent_group_id, user_id",
        )
    }

    pub(super) fn members_args(&self, verb: &str) -> R<(String, String)> {
        let ex = format!("pinch admin members {verb} --user telegram:123456789 --ag main");
        let ag = self.ag_arg(true, &ex)?.unwrap_or_default();
        let user = self.a.req_str("user", &ex)?;
        self.user_kind(&user, "user")?;
        Ok((user, ag))
    }

    pub(super) fn members_add(&self) -> Reply {
        let cmd = self.cmd();
        let (user, ag) = self.members_args("add")?;
        self.need_group(&ag)?;
        let tx = Nested::begin(self.conn).sql()?;
        self.ensure_user(&tx, &user, "user")?;
        tx.execute(
            "INSERT INTO agent_group_members (user_id, agent_group_id, added_by, added_at) VALUES (?1, ?2, ?3, ?4)",
            rusqlite::params![user, ag, self.caller.label(), now()],
        )
        .exists_as(&|| format!("{cmd}: the membership of {user} in {ag} already exists"))?;
        tx.commit().sql()?;
        Ok(json!({"user": user, "ag": ag, "added_by": self.caller.label()}))
    }

    pub(super) fn members_remove(&self) -> Reply {
        let cmd = self.cmd();
        let (user, ag) = self.members_args("remove")?;
        let n = self
            .conn
            .execute(
                "DELETE FROM agent_group_members WHERE user_id = ?1 AND agent_group_id = ?2",
                rusqlite::params![user, ag],
            )
            .sql()?;
        if n == 0 {
            return Err(not_found(format!(
                "{cmd}: {user} is not a member of {ag} (see `pinch admin members list {ag}`)"
            )));
        }
        let mut out = json!({"user": user, "ag": ag, "removed": true});
        // An admin role still grants access; say so.
        if exists(self.conn, "SELECT 1 FROM user_roles WHERE user_id = ?1 AND (agent_group_id = ?2 OR agent_group_id IS NULL)", &[s(&user), s(&ag)])? {
            out["note"] = json!(format!("{user} still has access to {ag} through a role (see `pinch admin roles list --user {user}`)"));
        }
        Ok(out)
    }
}
