//! `roles-*`: owners (global) and admins (global or of a group).

use pinch_policy::admin::Verb;
use pinch_proto::rusqlite::{self, types::Value as Sv};
use serde_json::json;

use super::sql::*;
use super::*;

impl Ctx<'_> {
    pub(super) fn roles(&self, verb: Verb) -> Reply {
        match verb {
            Verb::List => self.roles_list(),
            Verb::Grant => self.roles_grant(),
            Verb::Revoke => self.roles_revoke(),
            _ => Err(self.unserved()),
        }
    }

    pub(super) fn roles_list(&self) -> Reply {
        list(
            self.conn,
            &self.a,
            "SELECT user_id AS user, role, agent_group_id AS ag, granted_by, granted_at FROM user_roles",
            &[
                ("user_id = ?", self.a.opt_str("user")?.map(Sv::Text)),
                ("role = ?", self.a.opt_str("role")?.map(Sv::Text)),
                ("agent_group_id = ?", self.a.opt_str("ag")?.map(Sv::Text)),
            ],
            "role DESC, user_id, agent_group_id",
        )
    }

    /// (user, role, ag) of grant/revoke, validated.
    pub(super) fn role_args(&self, verb: &str) -> R<(String, String, Option<String>)> {
        let cmd = self.cmd();
        let ex =
            format!("pinch admin roles {verb} --user telegram:123456789 --role admin --ag main");
        let user = self.a.req_str("user", &ex)?;
        self.user_kind(&user, "user")?;
        let role = self
            .a
            .opt_str("role")?
            .ok_or_else(|| invalid(format!("{cmd} needs --role: owner or admin (e.g. {ex})")))?;
        let ag = self.a.opt_str("ag")?.filter(|a| !a.trim().is_empty());
        if role == "owner" && ag.is_some() {
            return Err(invalid(format!(
                "{cmd}: owner is always global; drop --ag (or use --role admin --ag <group>)"
            )));
        }
        Ok((user, role, ag))
    }

    pub(super) fn roles_grant(&self) -> Reply {
        let cmd = self.cmd();
        let (user, role, ag) = self.role_args("grant")?;
        if let Some(ag) = &ag {
            self.need_group(ag)?;
        }
        let tx = Nested::begin(self.conn).sql()?;
        self.ensure_user(&tx, &user, "user")?;
        let t = now();
        tx.execute(
            "INSERT INTO user_roles (user_id, role, agent_group_id, granted_by, granted_at) VALUES (?1, ?2, ?3, ?4, ?5)",
            rusqlite::params![user, role, ag, self.caller.label(), t],
        )
        .exists_as(&|| match &ag {
            Some(ag) => format!("{cmd}: the role {role} of {ag} for {user} already exists"),
            None => format!("{cmd}: the role global {role} for {user} already exists"),
        })?;
        // An agent group's admin is also its member (SPEC §3.1).
        if let Some(ag) = &ag {
            tx.execute(
                "INSERT OR IGNORE INTO agent_group_members (user_id, agent_group_id, added_by, added_at) VALUES (?1, ?2, ?3, ?4)",
                rusqlite::params![user, ag, self.caller.label(), t],
            )
            .sql()?;
        }
        tx.commit().sql()?;
        Ok(json!({"user": user, "role": role, "ag": ag, "granted_by": self.caller.label()}))
    }

    pub(super) fn roles_revoke(&self) -> Reply {
        let cmd = self.cmd();
        let (user, role, ag) = self.role_args("revoke")?;
        if role == "owner" {
            let is_owner = exists(
                self.conn,
                "SELECT 1 FROM user_roles WHERE user_id = ?1 AND role = 'owner'",
                &[s(&user)],
            )?;
            if is_owner && self.owners()? <= 1 {
                return Err(forbidden(format!(
                    "{cmd}: {user} is the last owner; grant another owner first (`pinch admin roles grant --user <id> --role owner`)"
                )));
            }
        }
        let n = self
            .conn
            .execute(
                "DELETE FROM user_roles WHERE user_id = ?1 AND role = ?2 AND coalesce(agent_group_id, '') = coalesce(?3, '')",
                rusqlite::params![user, role, ag],
            )
            .sql()?;
        if n == 0 {
            let what = match &ag {
                Some(ag) => format!("{role} of {ag}"),
                None => format!("global {role}"),
            };
            return Err(not_found(format!(
                "{cmd}: {user} is not {what} (see `pinch admin roles list --user {user}`)"
            )));
        }
        Ok(json!({"user": user, "role": role, "ag": ag, "revoked": true}))
    }
}
