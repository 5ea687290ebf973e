//! `wirings-*`: which agent group answers in which conversation, and how
//! it engages.

use pinch_policy::admin::Verb;
use pinch_proto::rusqlite::{self, types::Value as Sv, OptionalExtension};
use serde_json::{json, Value};

use super::sql::*;
use super::*;

const WIRING_COLS: &str = "id, messaging_group_id AS mg, agent_group_id AS ag, engage_mode, engage_pattern, sender_scope, \
     ignored_message_policy, session_mode, priority, created_at";

impl Ctx<'_> {
    pub(super) fn wirings(&self, verb: Verb) -> Reply {
        match verb {
            Verb::List => self.wirings_list(),
            Verb::Get => self.wirings_get(),
            Verb::Create => self.wirings_create(),
            Verb::Update => self.wirings_update(),
            Verb::Delete => self.wirings_delete(),
            _ => Err(self.unserved()),
        }
    }

    pub(super) fn wiring_row(&self, id: &str) -> R<Value> {
        one(
            self.conn,
            &format!("SELECT {WIRING_COLS} FROM wirings WHERE id = ?1"),
            &[s(id)],
        )?
        .ok_or_else(|| not_found(format!("no wiring {id:?} (see `pinch admin wirings list`)")))
    }

    pub(super) fn wirings_list(&self) -> Reply {
        let mg = self.a.opt_str("mg")?.map(Sv::Text);
        let ag = self.a.opt_str("ag")?.map(Sv::Text);
        list(
            self.conn,
            &self.a,
            &format!("SELECT {WIRING_COLS} FROM wirings"),
            &[("messaging_group_id = ?", mg), ("agent_group_id = ?", ag)],
            "created_at, rowid",
        )
    }

    pub(super) fn wirings_get(&self) -> Reply {
        let id = self.a.id("pinch admin wirings get w-main-terminal")?;
        self.wiring_row(&id)
    }

    /// The engage pattern compiles (SPEC §3.1: checked on write).
    pub(super) fn check_pattern(&self, p: &str) -> R<()> {
        regex::Regex::new(p).map(|_| ()).map_err(|e| {
            invalid(format!("{}: --engage_pattern {p:?} is not a valid regex: {e} (use \".\" to engage on every message)", self.cmd()))
        })
    }

    pub(super) fn wirings_create(&self) -> Reply {
        let cmd = self.cmd();
        let ex = "pinch admin wirings create --mg mg-telegram-1a2b --ag main --engage_mode mention";
        let mg = self.a.req_str("mg", ex)?;
        let ag = self.a.req_str("ag", ex)?;
        let mode = self.a.opt_str("engage_mode")?.ok_or_else(|| {
            invalid(format!(
                "{cmd} needs --engage_mode: pattern, mention or mention-sticky (e.g. {ex})"
            ))
        })?;
        let pattern = self.a.opt_str("engage_pattern")?.filter(|p| !p.is_empty());
        if mode == "pattern" && pattern.is_none() {
            return Err(invalid(format!(
                "{cmd}: --engage_mode pattern needs --engage_pattern (a regex; \".\" = every message), e.g. --engage_pattern '^!ask'"
            )));
        }
        if let Some(p) = &pattern {
            self.check_pattern(p)?;
        }
        let scope = self
            .a
            .opt_str("sender_scope")?
            .unwrap_or_else(|| "known".into());
        let ignored = self
            .a
            .opt_str("ignored_message_policy")?
            .unwrap_or_else(|| "drop".into());
        let session_mode = self
            .a
            .opt_str("session_mode")?
            .unwrap_or_else(|| "shared".into());
        let priority = self.a.opt_int("priority")?.unwrap_or(0);
        let mg_row = self.need_mg(&mg)?;
        self.need_group(&ag)?;
        let id = match self.a.opt_str("id")?.filter(|i| !i.is_empty()) {
            Some(id) => id,
            None => format!("w-{ag}-{}", pinch_proto::runner_config::random_hex(3)),
        };
        check_id(cmd, "wiring id", &id, "w-main-family")?;
        if let Some(existing) = self
            .conn
            .query_row(
                "SELECT id FROM wirings WHERE messaging_group_id = ?1 AND agent_group_id = ?2",
                [&mg, &ag],
                |r| r.get::<_, String>(0),
            )
            .optional()
            .sql()?
        {
            return Err(invalid(format!("{cmd}: {mg} is already wired to {ag} (wiring {existing:?}; change it with `pinch admin wirings update {existing}`)")));
        }
        // The destination the agent replies through: the conversation's
        // name, else its platform id, made a plain name.
        let base = mg_row["name"]
            .as_str()
            .or(mg_row["platform_id"].as_str())
            .unwrap_or("");
        let mut local = sanitize_name(base, 40);
        if local.is_empty() {
            local = "channel".into();
        }
        let tx = Nested::begin(self.conn).sql()?;
        tx.execute(
            "INSERT INTO wirings (id, messaging_group_id, agent_group_id, engage_mode, engage_pattern, sender_scope,
               ignored_message_policy, session_mode, priority, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            rusqlite::params![id, mg, ag, mode, pattern, scope, ignored, session_mode, priority, now()],
        )
        .exists_as(&|| format!("{cmd}: wiring {id:?} already exists"))?;
        let added = tx
            .execute(
                "INSERT OR IGNORE INTO agent_destinations (agent_group_id, local_name, target_type, target_id, created_at)
                 VALUES (?1, ?2, 'channel', ?3, ?4)",
                rusqlite::params![ag, local, mg, now()],
            )
            .sql()?;
        tx.commit().sql()?;
        let mut row = self.wiring_row(&id)?;
        row["destination_added"] = if added > 0 { json!(local) } else { Value::Null };
        Ok(row)
    }

    pub(super) fn wirings_update(&self) -> Reply {
        let cmd = self.cmd();
        let id = self
            .a
            .id("pinch admin wirings update w-main-terminal --engage_mode mention")?;
        let current = self.wiring_row(&id)?;
        let mut ch: Vec<(&str, Sv)> = Vec::new();
        let mode = self.a.opt_str("engage_mode")?;
        let pattern = self.a.nullable_str("engage_pattern")?;
        let final_mode = mode
            .clone()
            .unwrap_or_else(|| current["engage_mode"].as_str().unwrap_or("").to_owned());
        let final_pattern = match &pattern {
            Some(p) => p.clone(),
            None => current["engage_pattern"].as_str().map(str::to_owned),
        };
        if final_mode == "pattern" && final_pattern.is_none() {
            return Err(invalid(format!(
                "{cmd}: engage_mode pattern needs --engage_pattern (a regex; \".\" = every message), e.g. --engage_pattern '^!ask'"
            )));
        }
        if let Some(Some(p)) = &pattern {
            self.check_pattern(p)?;
        }
        if let Some(m) = mode {
            ch.push(("engage_mode", Sv::Text(m)));
        }
        if let Some(p) = pattern {
            ch.push(("engage_pattern", opt(p.as_deref())));
        }
        // Choices, checked against their enums when parsed.
        for k in ["sender_scope", "ignored_message_policy", "session_mode"] {
            if let Some(v) = self.a.opt_str(k)? {
                ch.push((k, Sv::Text(v)));
            }
        }
        if let Some(p) = self.a.opt_int("priority")? {
            ch.push(("priority", Sv::Integer(p)));
        }
        if ch.is_empty() {
            return Err(invalid(format!(
                "{cmd} needs something to change: --engage_mode, --engage_pattern, --sender_scope, --ignored_message_policy, --session_mode or --priority"
            )));
        }
        update(self.conn, "wirings", "id", &id, &ch)?;
        self.wiring_row(&id)
    }

    pub(super) fn wirings_delete(&self) -> Reply {
        let id = self.a.id("pinch admin wirings delete w-main-terminal")?;
        let w = self.wiring_row(&id)?;
        self.conn
            .execute("DELETE FROM wirings WHERE id = ?1", [&id])
            .sql()?;
        // The destination the wiring added is a permission of its own (the
        // agent may still post there); say so rather than guess.
        let kept: Vec<Value> = rows(
            self.conn,
            "SELECT local_name FROM agent_destinations WHERE agent_group_id = ?1 AND target_type = 'channel' AND target_id = ?2 ORDER BY local_name",
            &[s(w["ag"].as_str().unwrap_or("")), s(w["mg"].as_str().unwrap_or(""))],
        )?
        .into_iter()
        .map(|r| r["local_name"].clone())
        .collect();
        let mut out = json!({"deleted": id});
        if !kept.is_empty() {
            out["destinations_kept"] = Value::Array(kept);
            out["hint"] = json!(format!(
                "{} may still post there; remove with `pinch admin destinations remove {} --name <name>`",
                w["ag"].as_str().unwrap_or(""),
                w["ag"].as_str().unwrap_or("")
            ));
        }
        Ok(out)
    }
}
