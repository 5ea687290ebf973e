//! `groups-*`: agent groups and their config (`agent_configs`).

use pinch_policy::admin::Verb;
use pinch_proto::rusqlite::{self, types::Value as Sv, OptionalExtension};
use serde_json::{json, Value};

use super::sql::*;
use super::*;

/// JSON columns of `agent_configs` and the shape each must have.
fn check_config_json(cmd: &str, key: &str, v: &Value) -> R<()> {
    let shape_err = |want: &str, example: &str| {
        invalid(format!(
            "{cmd}: --{key} must be {want}, e.g. --{key} '{example}'"
        ))
    };
    match key {
        "mcp_servers" => serde_json::from_value::<Vec<pinch_proto::runner_config::McpServerConfig>>(v.clone())
            .map(|_| ())
            .map_err(|e| {
                invalid(format!(
                    "{cmd}: --mcp_servers must be a JSON list of {{name, command, args, env, cwd, timeout_s}} ({e}), e.g. --mcp_servers '[{{\"name\":\"fs\",\"command\":\"mcp-fs\"}}]'"
                ))
            }),
        "egress_allow" => match v.as_array() {
            Some(a) if a.iter().all(Value::is_string) => Ok(()),
            _ => Err(shape_err("a JSON list of host patterns", "[\"api.github.com\", \"*.pypi.org\"]")),
        },
        "web" => pinch_web::GroupPolicy::from_json(Some(&v.to_string()))
            .map(|_| ())
            .map_err(|e| invalid(format!("{cmd}: --web {e}, e.g. --web '{}'", pinch_web::POLICY_EXAMPLE))),
        "packages" => match v.as_array() {
            Some(_) => Ok(()),
            None => Err(shape_err("a JSON list", "[\"ripgrep\"]")),
        },
        "extra_mounts" => match v.as_array() {
            Some(a) => {
                for m in a {
                    let (_, name, _) = crate::mounts::parse_request(m).map_err(|e| invalid(format!("{cmd}: --extra_mounts: {e} (in {m})")))?;
                    pinch_policy::mounts::check_name(&name).map_err(|e| invalid(format!("{cmd}: --extra_mounts: {e} (in {m})")))?;
                }
                Ok(())
            }
            None => Err(shape_err("a JSON list", "[{\"host\":\"~/notes\",\"name\":\"notes\",\"read_write\":false}]")),
        },
        "sandbox" => match v.as_object() {
            // disk_mb 0 or not a whole number fell back to the default silently.
            Some(o) if o.get("disk_mb").is_some_and(|d| d.as_u64().is_none_or(|n| n == 0)) => Err(shape_err(
                "a JSON object whose disk_mb is a whole number of MiB, at least 1",
                "{\"disk_mb\":4096}",
            )),
            Some(_) => Ok(()),
            None => Err(shape_err("a JSON object", "{\"memory_mb\":1024}")),
        },
        _ => Ok(()),
    }
}

const JSON_COLS: [&str; 6] = [
    "mcp_servers",
    "packages",
    "extra_mounts",
    "egress_allow",
    "web",
    "sandbox",
];

const GROUP_COLS: &str =
    "g.id, g.name, g.folder, g.provider, c.admin_scope, c.can_create_agents, g.created_at";

impl Ctx<'_> {
    pub(super) fn groups(&self, verb: Verb) -> Reply {
        match verb {
            Verb::List => self.groups_list(),
            Verb::Get => self.groups_get(),
            Verb::Create => self.groups_create(),
            Verb::Update => self.groups_update(),
            Verb::Delete => self.groups_delete(),
            Verb::ConfigGet => self.config_get(),
            Verb::ConfigSet => self.config_set(),
            _ => Err(self.unserved()),
        }
    }

    pub(super) fn group_row(&self, id: &str) -> R<Option<Value>> {
        one(
            self.conn,
            &format!(
                "SELECT {GROUP_COLS},
                    (SELECT count(*) FROM sessions s WHERE s.agent_group_id = g.id AND s.status = 'active') AS active_sessions,
                    (SELECT count(*) FROM wirings w WHERE w.agent_group_id = g.id) AS wirings
                 FROM agent_groups g LEFT JOIN agent_configs c ON c.agent_group_id = g.id WHERE g.id = ?1"
            ),
            &[s(id)],
        )
    }

    pub(super) fn groups_list(&self) -> Reply {
        list(
            self.conn,
            &self.a,
            &format!("SELECT {GROUP_COLS} FROM agent_groups g LEFT JOIN agent_configs c ON c.agent_group_id = g.id"),
            &[("g.id = ?", self.own.map(s))],
            "g.created_at, g.rowid",
        )
    }

    pub(super) fn groups_get(&self) -> Reply {
        let id = self.a.id("pinch admin groups get main")?;
        self.readable_group(&id)?;
        self.group_row(&id)?.ok_or_else(|| self.no_group(&id))
    }

    pub(super) fn groups_create(&self) -> Reply {
        if self.own.is_some() {
            return Err(forbidden(
                "groups-create: admin_scope \"group\" cannot create agent groups",
            ));
        }
        let cmd = self.cmd();
        let name = self
            .a
            .req_str("name", "pinch admin groups create --name Research")?;
        let name = name.trim().to_owned();
        let folder = match self.a.opt_str("folder")?.filter(|f| !f.is_empty()) {
            Some(f) => f,
            None => {
                let f = sanitize_name(&name, 40);
                if f.is_empty() {
                    return Err(invalid(format!(
                        "{cmd}: the name {name:?} gives no usable folder; give one with --folder (lowercase letters, digits, '-'), e.g. --folder research"
                    )));
                }
                f
            }
        };
        check_folder(cmd, &folder)?;
        let id = self
            .a
            .opt_str("id")?
            .filter(|i| !i.is_empty())
            .unwrap_or_else(|| format!("ag-{folder}"));
        check_id(cmd, "group id", &id, "ag-research")?;
        let provider = self.a.opt_str("provider")?.filter(|p| !p.trim().is_empty());
        if self.group_exists(&id)? {
            return Err(invalid(format!(
                "{cmd}: agent group {id:?} already exists (give another --id)"
            )));
        }
        let tx = Nested::begin(self.conn).sql()?;
        let t = now();
        tx.execute(
            "INSERT INTO agent_groups (id, name, folder, provider, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
            rusqlite::params![id, name, folder, provider, t],
        )
        .exists_as(&|| format!("{cmd}: an agent group with folder {folder:?} already exists (give another --folder)"))?;
        tx.execute(
            "INSERT INTO agent_configs (agent_group_id, admin_scope, can_create_agents, updated_at) VALUES (?1, 'disabled', 0, ?2)",
            rusqlite::params![id, t],
        )
        .sql()?;
        tx.commit().sql()?;
        self.group_row(&id)?.ok_or_else(|| self.no_group(&id))
    }

    pub(super) fn groups_update(&self) -> Reply {
        let cmd = self.cmd();
        let id = self
            .a
            .id("pinch admin groups update ag-research --name Research")?;
        self.writable_group(&id)?;
        let mut ch: Vec<(&str, Sv)> = Vec::new();
        if self.a.has("name") {
            ch.push((
                "name",
                s(self
                    .a
                    .req_str(
                        "name",
                        "pinch admin groups update ag-research --name Research",
                    )?
                    .trim()),
            ));
        }
        if let Some(p) = self.a.nullable_str("provider")? {
            ch.push(("provider", opt(p.as_deref())));
        }
        if ch.is_empty() {
            return Err(invalid(format!("{cmd} needs something to change: --name or --provider (config: `pinch admin groups config-set`)")));
        }
        if !update(self.conn, "agent_groups", "id", &id, &ch)? {
            return Err(self.no_group(&id));
        }
        self.group_row(&id)?.ok_or_else(|| self.no_group(&id))
    }

    pub(super) fn groups_delete(&self) -> Reply {
        if self.own.is_some() {
            return Err(forbidden(
                "groups-delete: admin_scope \"group\" cannot delete agent groups",
            ));
        }
        let id = self.a.id("pinch admin groups delete ag-research")?;
        if id == "main" {
            return Err(forbidden("groups-delete: the main agent group cannot be deleted (it is the terminal's agent)"));
        }
        let folder: String = self
            .conn
            .query_row(
                "SELECT folder FROM agent_groups WHERE id = ?1",
                [&id],
                |r| r.get(0),
            )
            .optional()
            .sql()?
            .ok_or_else(|| self.no_group(&id))?;
        self.refuse_active_sessions(
            "agent_group_id",
            &id,
            &format!("groups-delete: agent group {id:?}"),
        )?;
        let tx = Nested::begin(self.conn).sql()?;
        // Closed sessions keep their folders on disk; their rows would
        // block the delete (sessions → agent_groups has no cascade).
        tx.execute("DELETE FROM runner_exits WHERE session_id IN (SELECT id FROM sessions WHERE agent_group_id = ?1)", [&id]).sql()?;
        let closed = tx
            .execute("DELETE FROM sessions WHERE agent_group_id = ?1", [&id])
            .sql()?;
        // Other groups' destinations that name this group would dangle.
        let dests = tx
            .execute(
                "DELETE FROM agent_destinations WHERE target_type = 'agent' AND target_id = ?1",
                [&id],
            )
            .sql()?;
        tx.execute("DELETE FROM agent_groups WHERE id = ?1", [&id])
            .sql()?;
        tx.commit().sql()?;
        Ok(json!({
            "deleted": id,
            "closed_sessions_forgotten": closed,
            "destinations_removed": dests,
            "folder_kept": format!("groups/{folder}"),
        }))
    }

    pub(super) fn config_row(&self, id: &str) -> R<Option<Value>> {
        let row = one(
            self.conn,
            "SELECT agent_group_id AS ag, provider, model, assistant_name, batch_size, mcp_servers, packages, extra_mounts,
                    egress_allow, web, sandbox, admin_scope, can_create_agents, idle_exit_s, claim_stuck_s, updated_at
             FROM agent_configs WHERE agent_group_id = ?1",
            &[s(id)],
        )?;
        Ok(row.map(|mut r| {
            for c in JSON_COLS {
                if let Some(text) = r[c].as_str() {
                    if let Ok(v) = serde_json::from_str::<Value>(text) {
                        r[c] = v;
                    }
                }
            }
            r
        }))
    }

    pub(super) fn config_get(&self) -> Reply {
        let id = self.a.id("pinch admin groups config-get main")?;
        self.readable_group(&id)?;
        match self.config_row(&id)? {
            Some(r) => Ok(r),
            None if self.group_exists(&id)? => {
                Ok(json!({"ag": id, "admin_scope": "disabled", "can_create_agents": 0}))
            }
            None => Err(self.no_group(&id)),
        }
    }

    pub(super) fn config_set(&self) -> Reply {
        let cmd = self.cmd();
        let id = self
            .a
            .id("pinch admin groups config-set ag-research --model claude-sonnet-4-5")?;
        self.writable_group(&id)?;
        if self.own.is_some() {
            for k in ["admin_scope", "can_create_agents"] {
                if self.a.has(k) {
                    return Err(forbidden(format!(
                        "{cmd}: an agent cannot change its own {k}; only the owner can"
                    )));
                }
            }
        }
        let mut ch: Vec<(&str, Sv)> = Vec::new();
        for k in ["provider", "model", "assistant_name"] {
            if let Some(v) = self.a.nullable_str(k)? {
                ch.push((k, opt(v.as_deref())));
            }
        }
        for k in ["batch_size", "idle_exit_s", "claim_stuck_s"] {
            if let Some(v) = self.a.nullable_int(k)? {
                ch.push((k, v.map(Sv::Integer).unwrap_or(Sv::Null)));
            }
        }
        for k in JSON_COLS {
            match self.a.json(k)? {
                None => {}
                Some(None) => ch.push((k, Sv::Null)),
                Some(Some(v)) => {
                    check_config_json(cmd, k, &v)?;
                    ch.push((k, Sv::Text(v.to_string())));
                }
            }
        }
        if let Some(v) = self.a.opt_choice::<AdminScope>("admin_scope")? {
            ch.push(("admin_scope", s(v.as_str())));
        }
        if let Some(b) = self.a.opt_bool("can_create_agents")? {
            ch.push(("can_create_agents", Sv::Integer(b as i64)));
        }
        if ch.is_empty() {
            let keys: Vec<String> = pinch_policy::admin::CONFIG_KEYS
                .iter()
                .map(|k| format!("--{k}"))
                .collect();
            return Err(invalid(format!(
                "{cmd} needs something to set: one of {}",
                keys.join(", ")
            )));
        }
        self.need_group(&id)?;
        ch.push(("updated_at", Sv::Text(now())));
        let tx = Nested::begin(self.conn).sql()?;
        tx.execute(
            "INSERT OR IGNORE INTO agent_configs (agent_group_id, admin_scope, can_create_agents, updated_at) VALUES (?1, 'disabled', 0, ?2)",
            rusqlite::params![id, now()],
        )
        .sql()?;
        update(&tx, "agent_configs", "agent_group_id", &id, &ch)?;
        tx.commit().sql()?;
        self.config_row(&id)?.ok_or_else(|| self.no_group(&id))
    }
}
