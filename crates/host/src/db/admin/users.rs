//! `users-*`: the people the host knows, by `<channel>:<platform id>`.

use pinch_policy::admin::Verb;
use pinch_proto::rusqlite::{self, types::Value as Sv};
use serde_json::{json, Value};

use super::sql::*;
use super::*;

impl Ctx<'_> {
    pub(super) fn users(&self, verb: Verb) -> Reply {
        match verb {
            Verb::List => self.users_list(),
            Verb::Get => self.users_get(),
            Verb::Create => self.users_create(),
            Verb::Update => self.users_update(),
            Verb::Delete => self.users_delete(),
            _ => Err(self.unserved()),
        }
    }

    pub(super) fn user_row(&self, id: &str) -> R<Value> {
        one(
            self.conn,
            "SELECT id, kind, display_name, created_at FROM users WHERE id = ?1",
            &[s(id)],
        )?
        .ok_or_else(|| not_found(format!("no user {id:?} (see `pinch admin users list`)")))
    }

    /// `channel:handle`, both parts non-empty; returns the channel.
    pub(super) fn user_kind(&self, id: &str, key: &str) -> R<String> {
        match id.split_once(':') {
            Some((k, rest)) if !k.is_empty() && !rest.is_empty() && !id.chars().any(char::is_whitespace) => Ok(k.to_owned()),
            _ => Err(invalid(format!(
                "{}: --{key} {id:?} must be <channel>:<platform user id>, e.g. telegram:123456789 or cli:alice",
                self.cmd()
            ))),
        }
    }

    /// Creates the user row if it does not exist yet.
    pub(super) fn ensure_user(&self, conn: &Connection, id: &str, key: &str) -> R<()> {
        let kind = self.user_kind(id, key)?;
        conn.execute("INSERT OR IGNORE INTO users (id, kind, display_name, created_at) VALUES (?1, ?2, NULL, ?3)", rusqlite::params![id, kind, now()])
            .sql()?;
        Ok(())
    }

    pub(super) fn users_list(&self) -> Reply {
        list(
            self.conn,
            &self.a,
            "SELECT id, kind, display_name, created_at FROM users",
            &[("kind = ?", self.a.opt_str("kind")?.map(Sv::Text))],
            "created_at, rowid",
        )
    }

    pub(super) fn users_get(&self) -> Reply {
        let id = self.a.id("pinch admin users get telegram:123456789")?;
        let mut u = self.user_row(&id)?;
        u["roles"] = Value::Array(rows(
            self.conn,
            "SELECT role, agent_group_id AS ag FROM user_roles WHERE user_id = ?1 ORDER BY role, ag",
            &[s(&id)],
        )?);
        u["member_of"] = Value::Array(
            rows(self.conn, "SELECT agent_group_id AS ag FROM agent_group_members WHERE user_id = ?1 ORDER BY ag", &[s(&id)])?
                .into_iter()
                .map(|r| r["ag"].clone())
                .collect(),
        );
        Ok(u)
    }

    pub(super) fn users_create(&self) -> Reply {
        let cmd = self.cmd();
        let id = self
            .a
            .id("pinch admin users create telegram:123456789 --display_name Bob")?;
        let prefix = self.user_kind(&id, "id")?;
        let kind = self
            .a
            .opt_str("kind")?
            .filter(|k| !k.trim().is_empty())
            .unwrap_or(prefix);
        let name = self
            .a
            .opt_str("display_name")?
            .map(|n| n.trim().to_owned())
            .filter(|n| !n.is_empty());
        self.conn
            .execute(
                "INSERT INTO users (id, kind, display_name, created_at) VALUES (?1, ?2, ?3, ?4)",
                rusqlite::params![id, kind, name, now()],
            )
            .exists_as(&|| format!("{cmd}: user {id:?} already exists"))?;
        self.user_row(&id)
    }

    pub(super) fn users_update(&self) -> Reply {
        let cmd = self.cmd();
        let id = self
            .a
            .id("pinch admin users update telegram:123456789 --display_name Bob")?;
        let mut ch: Vec<(&str, Sv)> = Vec::new();
        if self.a.has("kind") {
            ch.push(("kind", s(self.a.req_str("kind", "--kind telegram")?.trim())));
        }
        if let Some(n) = self.a.nullable_str("display_name")? {
            ch.push(("display_name", opt(n.as_deref().map(str::trim))));
        }
        if ch.is_empty() {
            return Err(invalid(format!(
                "{cmd} needs something to change: --display_name or --kind"
            )));
        }
        if !update(self.conn, "users", "id", &id, &ch)? {
            return Err(not_found(format!(
                "no user {id:?} (see `pinch admin users list`)"
            )));
        }
        self.user_row(&id)
    }

    pub(super) fn owners(&self) -> R<i64> {
        count(
            self.conn,
            "SELECT count(*) FROM user_roles WHERE role = 'owner'",
            &[],
        )
    }

    pub(super) fn users_delete(&self) -> Reply {
        let id = self.a.id("pinch admin users delete telegram:123456789")?;
        self.user_row(&id)?;
        let owner = exists(
            self.conn,
            "SELECT 1 FROM user_roles WHERE user_id = ?1 AND role = 'owner'",
            &[s(&id)],
        )?;
        if owner && self.owners()? <= 1 {
            return Err(forbidden(format!(
                "users-delete: {id} is the last owner; grant another owner first (`pinch admin roles grant --user <id> --role owner`)"
            )));
        }
        // Roles and memberships cascade.
        self.conn
            .execute("DELETE FROM users WHERE id = ?1", [&id])
            .sql()?;
        Ok(json!({"deleted": id}))
    }
}
