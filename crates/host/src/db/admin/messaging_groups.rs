//! `messaging-groups-*`: the conversations the host knows, their sender
//! policy and deny list.

use pinch_policy::admin::Verb;
use pinch_proto::rusqlite::{self, types::Value as Sv, OptionalExtension};
use serde_json::json;

use super::sql::*;
use super::*;

impl Ctx<'_> {
    pub(super) fn messaging_groups(&self, verb: Verb) -> Reply {
        match verb {
            Verb::List => self.mg_list(),
            Verb::Get => self.mg_get(),
            Verb::Create => self.mg_create(),
            Verb::Update => self.mg_update(),
            Verb::Delete => self.mg_delete(),
            Verb::Deny => self.mg_deny(true),
            Verb::Undeny => self.mg_deny(false),
            _ => Err(self.unserved()),
        }
    }

    pub(super) fn mg_list(&self) -> Reply {
        list(
            self.conn,
            &self.a,
            &format!("SELECT {MG_COLS} FROM messaging_groups"),
            &[(
                "channel_type = ?",
                self.a.opt_str("channel_type")?.map(Sv::Text),
            )],
            "created_at, rowid",
        )
    }

    pub(super) fn mg_get(&self) -> Reply {
        let id = self.a.id("pinch admin messaging-groups get mg-cli-local")?;
        self.need_mg(&id)
    }

    pub(super) fn mg_create(&self) -> Reply {
        let cmd = self.cmd();
        let ex = "pinch admin messaging-groups create --channel_type telegram --platform_id -1001234 --name family";
        let channel = self.a.req_str("channel_type", ex)?;
        if !channel
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
            || channel.len() > 32
        {
            return Err(invalid(format!("{cmd}: --channel_type {channel:?} must be a lowercase channel name such as telegram, cli or slack")));
        }
        let platform_id = self.a.req_str("platform_id", ex)?;
        let name = self
            .a
            .opt_str("name")?
            .map(|n| n.trim().to_owned())
            .filter(|n| !n.is_empty());
        let is_group = self.a.opt_bool("is_group")?.unwrap_or(false);
        let policy = self
            .a
            .opt_str("unknown_sender_policy")?
            .unwrap_or_else(|| "request_approval".into());
        let id = match self.a.opt_str("id")?.filter(|i| !i.is_empty()) {
            Some(id) => id,
            None => format!("mg-{channel}-{}", pinch_proto::runner_config::random_hex(4)),
        };
        check_id(cmd, "messaging group id", &id, "mg-telegram-family")?;
        if let Some(existing) = self
            .conn
            .query_row(
                "SELECT id FROM messaging_groups WHERE channel_type = ?1 AND platform_id = ?2",
                [&channel, &platform_id],
                |r| r.get::<_, String>(0),
            )
            .optional()
            .sql()?
        {
            return Err(invalid(format!("{cmd}: the {channel} conversation {platform_id:?} already exists as messaging group {existing:?}")));
        }
        self.conn
            .execute(
                "INSERT INTO messaging_groups (id, channel_type, platform_id, name, is_group, unknown_sender_policy, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                rusqlite::params![id, channel, platform_id, name, is_group as i64, policy, now()],
            )
            .exists_as(&|| format!("{cmd}: messaging group {id:?} already exists"))?;
        self.need_mg(&id)
    }

    pub(super) fn mg_update(&self) -> Reply {
        let cmd = self.cmd();
        let id = self.a.id(
            "pinch admin messaging-groups update mg-cli-local --unknown_sender_policy strict",
        )?;
        let mut ch: Vec<(&str, Sv)> = Vec::new();
        if let Some(n) = self.a.nullable_str("name")? {
            ch.push(("name", opt(n.as_deref().map(str::trim))));
        }
        if let Some(b) = self.a.opt_bool("is_group")? {
            ch.push(("is_group", Sv::Integer(b as i64)));
        }
        if let Some(p) = self.a.opt_str("unknown_sender_policy")? {
            ch.push(("unknown_sender_policy", Sv::Text(p)));
        }
        if ch.is_empty() {
            return Err(invalid(format!(
                "{cmd} needs something to change: --name, --is_group or --unknown_sender_policy"
            )));
        }
        if !update(self.conn, "messaging_groups", "id", &id, &ch)? {
            return Err(not_found(format!(
                "no messaging group {id:?} (see `pinch admin messaging-groups list`)"
            )));
        }
        self.need_mg(&id)
    }

    pub(super) fn mg_delete(&self) -> Reply {
        let id = self
            .a
            .id("pinch admin messaging-groups delete mg-telegram-1a2b3c4d")?;
        self.need_mg(&id)?;
        self.refuse_active_sessions(
            "messaging_group_id",
            &id,
            &format!("messaging-groups-delete: {id:?}"),
        )?;
        let tx = Nested::begin(self.conn).sql()?;
        // Closed sessions stay (their history is the agent's); they just
        // lose the link (sessions → messaging_groups has no cascade).
        tx.execute(
            "UPDATE sessions SET messaging_group_id = NULL WHERE messaging_group_id = ?1",
            [&id],
        )
        .sql()?;
        let dests = tx
            .execute(
                "DELETE FROM agent_destinations WHERE target_type = 'channel' AND target_id = ?1",
                [&id],
            )
            .sql()?;
        tx.execute("DELETE FROM messaging_groups WHERE id = ?1", [&id])
            .sql()?;
        tx.commit().sql()?;
        Ok(json!({"deleted": id, "destinations_removed": dests}))
    }

    pub(super) fn mg_deny(&self, deny: bool) -> Reply {
        let id = self.a.id(if deny {
            "pinch admin messaging-groups deny mg-telegram-1a2b3c4d"
        } else {
            "pinch admin messaging-groups undeny mg-telegram-1a2b3c4d"
        })?;
        self.need_mg(&id)?;
        let v = if deny { Sv::Text(now()) } else { Sv::Null };
        if deny {
            // Keep the first denial's time.
            self.conn
                .execute(
                    "UPDATE messaging_groups SET denied_at = coalesce(denied_at, ?2) WHERE id = ?1",
                    rusqlite::params![id, v],
                )
                .sql()?;
        } else {
            self.conn
                .execute(
                    "UPDATE messaging_groups SET denied_at = NULL WHERE id = ?1",
                    [&id],
                )
                .sql()?;
        }
        self.need_mg(&id)
    }
}
