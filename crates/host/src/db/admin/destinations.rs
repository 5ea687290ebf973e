//! `destinations-*`: where an agent group may send (its local names for
//! conversations and other agents).

use pinch_policy::admin::Verb;
use pinch_proto::rusqlite::{self, types::Value as Sv};
use serde_json::json;

use super::sql::*;
use super::*;

impl Ctx<'_> {
    pub(super) fn destinations(&self, verb: Verb) -> Reply {
        match verb {
            Verb::List => self.destinations_list(),
            Verb::Add => self.destinations_add(),
            Verb::Remove => self.destinations_remove(),
            _ => Err(self.unserved()),
        }
    }

    pub(super) fn destinations_list(&self) -> Reply {
        let ag = self.ag_arg(false, "")?;
        list(
            self.conn,
            &self.a,
            "SELECT agent_group_id AS ag, local_name AS name, target_type, target_id AS target, created_at FROM agent_destinations",
            &[("agent_group_id = ?", ag.map(Sv::Text))],
            "agent_group_id, local_name",
        )
    }

    pub(super) fn destinations_add(&self) -> Reply {
        let cmd = self.cmd();
        let ex = "pinch admin destinations add main --name family --target_type channel --target mg-telegram-1a2b3c4d";
        let ag = self.ag_arg(true, ex)?.unwrap_or_default();
        let name = self.a.req_str("name", ex)?;
        let ok = (1..=64).contains(&name.len())
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
        if !ok {
            return Err(invalid(format!("{cmd}: --name {name:?} must be 1 to 64 letters, digits, '_', '-' or '.', e.g. --name family")));
        }
        let kind = self.a.opt_str("target_type")?.ok_or_else(|| {
            invalid(format!(
                "{cmd} needs --target_type: channel or agent (e.g. {ex})"
            ))
        })?;
        let target = self.a.req_str("target", ex)?;
        self.need_group(&ag)?;
        if kind == "channel" {
            self.need_mg(&target)?;
        } else if !self.group_exists(&target)? {
            return Err(self.no_group(&target));
        }
        self.conn
            .execute(
                "INSERT INTO agent_destinations (agent_group_id, local_name, target_type, target_id, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                rusqlite::params![ag, name, kind, target, now()],
            )
            .exists_as(&|| format!("{cmd}: destination {name:?} of {ag} already exists"))?;
        Ok(json!({"ag": ag, "name": name, "target_type": kind, "target": target}))
    }

    pub(super) fn destinations_remove(&self) -> Reply {
        let cmd = self.cmd();
        let ex = "pinch admin destinations remove main --name family";
        let ag = self.ag_arg(true, ex)?.unwrap_or_default();
        let name = self.a.req_str("name", ex)?;
        let n = self
            .conn
            .execute(
                "DELETE FROM agent_destinations WHERE agent_group_id = ?1 AND local_name = ?2",
                rusqlite::params![ag, name],
            )
            .sql()?;
        if n == 0 {
            return Err(not_found(format!("{cmd}: {ag} has no destination {name:?} (see `pinch admin destinations list {ag}`)")));
        }
        Ok(json!({"ag": ag, "name": name, "removed": true}))
    }
}
