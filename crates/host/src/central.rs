//! The central DB `pinch.db` (SPEC §3.1): WAL, foreign keys, migrations
//! keyed by name. Only the host's main loop writes it.
//!
//! Migrations are `(name, sql)` pairs applied in order, each in one
//! transaction with its `schema_migrations` record, so applying twice is a
//! no-op and a crash mid-migration leaves nothing half-applied. A shipped
//! migration is never edited; changes come as new, additive migrations.

use std::path::Path;

use anyhow::{Context, Result};
use pinch_proto::rusqlite::{self, params, Connection, OptionalExtension};

pub const MIGRATIONS: &[(&str, &str)] = &[
    (
        "0001_core",
    "
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE agent_groups (
  id TEXT PRIMARY KEY, name TEXT NOT NULL, folder TEXT NOT NULL UNIQUE, provider TEXT,
  created_at TEXT NOT NULL);
CREATE TABLE agent_configs (
  agent_group_id TEXT PRIMARY KEY REFERENCES agent_groups(id) ON DELETE CASCADE,
  provider TEXT, model TEXT, assistant_name TEXT, batch_size INTEGER,
  mcp_servers TEXT, packages TEXT, extra_mounts TEXT, egress_allow TEXT, sandbox TEXT,
  admin_scope TEXT NOT NULL DEFAULT 'disabled' CHECK (admin_scope IN ('disabled','group','global')),
  can_create_agents INTEGER NOT NULL DEFAULT 0, idle_exit_s INTEGER, claim_stuck_s INTEGER,
  updated_at TEXT NOT NULL);
CREATE TABLE messaging_groups (
  id TEXT PRIMARY KEY, channel_type TEXT NOT NULL, platform_id TEXT NOT NULL, name TEXT,
  is_group INTEGER NOT NULL DEFAULT 0,
  unknown_sender_policy TEXT NOT NULL DEFAULT 'request_approval'
    CHECK (unknown_sender_policy IN ('strict','request_approval','public')),
  denied_at TEXT, created_at TEXT NOT NULL,
  UNIQUE (channel_type, platform_id));
CREATE TABLE wirings (
  id TEXT PRIMARY KEY,
  messaging_group_id TEXT NOT NULL REFERENCES messaging_groups(id) ON DELETE CASCADE,
  agent_group_id TEXT NOT NULL REFERENCES agent_groups(id) ON DELETE CASCADE,
  engage_mode TEXT NOT NULL CHECK (engage_mode IN ('pattern','mention','mention-sticky')),
  engage_pattern TEXT,
  sender_scope TEXT NOT NULL DEFAULT 'known' CHECK (sender_scope IN ('all','known')),
  ignored_message_policy TEXT NOT NULL DEFAULT 'drop' CHECK (ignored_message_policy IN ('drop','accumulate')),
  session_mode TEXT NOT NULL DEFAULT 'shared' CHECK (session_mode IN ('shared','per-thread','agent-shared')),
  priority INTEGER NOT NULL DEFAULT 0, created_at TEXT NOT NULL,
  UNIQUE (messaging_group_id, agent_group_id));
CREATE TABLE users (id TEXT PRIMARY KEY, kind TEXT NOT NULL, display_name TEXT, created_at TEXT NOT NULL);
CREATE TABLE user_roles (
  user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
  role TEXT NOT NULL CHECK (role IN ('owner','admin')),
  agent_group_id TEXT REFERENCES agent_groups(id) ON DELETE CASCADE,
  granted_by TEXT, granted_at TEXT NOT NULL,
  CHECK (role <> 'owner' OR agent_group_id IS NULL));
CREATE UNIQUE INDEX user_roles_key ON user_roles (user_id, role, coalesce(agent_group_id, ''));
CREATE TABLE agent_group_members (
  user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
  agent_group_id TEXT NOT NULL REFERENCES agent_groups(id) ON DELETE CASCADE,
  added_by TEXT, added_at TEXT NOT NULL,
  PRIMARY KEY (user_id, agent_group_id));
CREATE TABLE sessions (
  id TEXT PRIMARY KEY,
  agent_group_id TEXT NOT NULL REFERENCES agent_groups(id),
  messaging_group_id TEXT REFERENCES messaging_groups(id),
  thread_id TEXT, provider TEXT,
  status TEXT NOT NULL DEFAULT 'active' CHECK (status IN ('active','closed')),
  runner_status TEXT NOT NULL DEFAULT 'stopped' CHECK (runner_status IN ('stopped','starting','running','stopping')),
  runner_id TEXT, runner_started_at TEXT, last_active TEXT,
  quarantined_at TEXT, quarantine_reason TEXT, created_at TEXT NOT NULL);
CREATE UNIQUE INDEX sessions_active_key ON sessions
  (agent_group_id, coalesce(messaging_group_id, ''), coalesce(thread_id, '')) WHERE status = 'active';
CREATE TABLE runner_exits (
  session_id TEXT NOT NULL, runner_id TEXT NOT NULL, started_at TEXT, exited_at TEXT NOT NULL,
  exit_code INTEGER, signal INTEGER, cause TEXT NOT NULL, detail TEXT);
CREATE INDEX runner_exits_session ON runner_exits (session_id, exited_at);
CREATE TABLE agent_destinations (
  agent_group_id TEXT NOT NULL REFERENCES agent_groups(id) ON DELETE CASCADE,
  local_name TEXT NOT NULL,
  target_type TEXT NOT NULL CHECK (target_type IN ('channel','agent')),
  target_id TEXT NOT NULL, created_at TEXT NOT NULL,
  PRIMARY KEY (agent_group_id, local_name));
",
), (
    // Questions an agent asked (ask_user_question) and the host delivered
    // with buttons (SPEC §7.3). `question_id` is the host's short id used in
    // the button callbacks (`q:<id>:<index>`, ≤ 64 bytes); the agent's own
    // id stays in `agent_question_id`, so an agent cannot aim its buttons at
    // another session's question.
    "0002_pending_questions",
    "
CREATE TABLE pending_questions (
  question_id TEXT PRIMARY KEY,
  session_id TEXT NOT NULL,
  agent_question_id TEXT NOT NULL,
  message_out_id TEXT NOT NULL,
  channel_type TEXT, platform_id TEXT, thread_id TEXT,
  title TEXT, options_json TEXT NOT NULL,
  expires_at TEXT NOT NULL, created_at TEXT NOT NULL);
CREATE INDEX pending_questions_out ON pending_questions (session_id, message_out_id);
",
), (
    // Permissions and approvals (SPEC §3.1, §7.1, §7.2). One card table for
    // every approval (`pending_approvals`, button callbacks `a:<id>:<n>`);
    // sender and registration requests add their dedupe rows, which point
    // at their card. `dropped_messages` is the drop audit, one row per
    // (conversation, sender, reason, agent) with a count.
    "0003_permissions",
    "
CREATE TABLE user_dms (
  user_id TEXT NOT NULL, channel_type TEXT NOT NULL,
  messaging_group_id TEXT NOT NULL REFERENCES messaging_groups(id) ON DELETE CASCADE,
  resolved_at TEXT NOT NULL,
  PRIMARY KEY (user_id, channel_type));
CREATE TABLE pending_approvals (
  approval_id TEXT PRIMARY KEY,
  session_id TEXT, agent_group_id TEXT, request_id TEXT,
  action TEXT NOT NULL, payload TEXT NOT NULL,
  title TEXT NOT NULL, options_json TEXT NOT NULL,
  approver_user_id TEXT NOT NULL,
  channel_type TEXT, platform_id TEXT, thread_id TEXT, platform_message_id TEXT,
  status TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending','approved','rejected','expired')),
  decided_by TEXT, decided_at TEXT, result TEXT,
  expires_at TEXT NOT NULL, created_at TEXT NOT NULL);
CREATE INDEX pending_approvals_open ON pending_approvals (status, expires_at);
CREATE TABLE pending_sender_approvals (
  id TEXT PRIMARY KEY,
  messaging_group_id TEXT NOT NULL REFERENCES messaging_groups(id) ON DELETE CASCADE,
  agent_group_id TEXT NOT NULL REFERENCES agent_groups(id) ON DELETE CASCADE,
  sender_identity TEXT NOT NULL, sender_name TEXT,
  original_event TEXT NOT NULL, approver_user_id TEXT NOT NULL, approval_id TEXT NOT NULL,
  created_at TEXT NOT NULL,
  UNIQUE (messaging_group_id, sender_identity));
CREATE TABLE pending_channel_approvals (
  messaging_group_id TEXT PRIMARY KEY REFERENCES messaging_groups(id) ON DELETE CASCADE,
  agent_group_id TEXT, original_event TEXT NOT NULL, approver_user_id TEXT NOT NULL, approval_id TEXT NOT NULL,
  awaiting_name_channel TEXT, awaiting_name_platform_id TEXT,
  created_at TEXT NOT NULL);
CREATE TABLE dropped_messages (
  channel_type TEXT NOT NULL, platform_id TEXT NOT NULL,
  user_id TEXT NOT NULL DEFAULT '', sender_name TEXT,
  reason TEXT NOT NULL, messaging_group_id TEXT, agent_group_id TEXT NOT NULL DEFAULT '',
  message_count INTEGER NOT NULL DEFAULT 1, first_seen TEXT NOT NULL, last_seen TEXT NOT NULL,
  PRIMARY KEY (channel_type, platform_id, user_id, reason, agent_group_id));
",
), (
    // Issue 15: the crash budget's abnormal exits, so a restart of the
    // host does not forget them (epoch ms; lifting a quarantine clears them).
    "0004_crash_budget",
    "
CREATE TABLE crash_budget (session_id TEXT NOT NULL, at_ms INTEGER NOT NULL);
CREATE INDEX crash_budget_session ON crash_budget (session_id, at_ms);
",
), (
    // Issue 15: the generation of each session's inbound.db (a random id
    // the host also stores inside the file), so a file that vanished or
    // was swapped is noticed. NULL = not recorded yet (adopted as found).
    "0005_session_db_generation",
    "ALTER TABLE sessions ADD COLUMN inbound_generation TEXT;",
), ("0006_host_notices", crate::notices::MIGRATION)];

/// A question waiting for a button press.
#[derive(Clone, Debug, PartialEq)]
pub struct PendingQuestion {
    pub question_id: String,
    pub session_id: String,
    pub agent_question_id: String,
    pub message_out_id: String,
    pub channel_type: Option<String>,
    pub platform_id: Option<String>,
    pub thread_id: Option<String>,
    pub title: String,
    /// `[{label, value}]` as the agent gave them.
    pub options_json: String,
    pub expires_at: String,
}

pub struct Central {
    pub conn: Connection,
}

/// A wiring with what the router needs of it.
#[derive(Clone, Debug)]
pub struct WiringRow {
    pub id: String,
    pub messaging_group_id: String,
    pub agent_group_id: String,
    pub engage_mode: String,
    pub engage_pattern: Option<String>,
    pub sender_scope: String,
    pub ignored_message_policy: String,
    pub session_mode: String,
}

#[derive(Clone, Debug)]
pub struct MessagingGroup {
    pub id: String,
    pub channel_type: String,
    pub platform_id: String,
    pub name: Option<String>,
    pub unknown_sender_policy: String,
    pub denied_at: Option<String>,
    pub is_group: bool,
}

#[derive(Clone, Debug)]
pub struct SessionRow {
    pub id: String,
    pub agent_group_id: String,
    pub messaging_group_id: Option<String>,
    pub thread_id: Option<String>,
    pub folder: String,
}

pub(crate) fn now() -> String {
    pinch_proto::time::now()
}

impl Central {
    /// Opens (creating) the central DB, checks it (`PRAGMA quick_check`)
    /// and applies pending migrations. Every error names the file, quotes
    /// SQLite and gives the fix for its cause ([`crate::central_file`]).
    pub fn open(path: &Path) -> Result<Central> {
        use crate::central_file::{describe, describe_check};
        let conn =
            Connection::open(path).map_err(|e| anyhow::anyhow!(describe(path, "opening", &e)))?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        let mode: String = conn
            .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
            .map_err(|e| anyhow::anyhow!(describe(path, "opening (setting WAL on)", &e)))?;
        if mode != "wal" {
            anyhow::bail!(
                "{} cannot use WAL (got {mode}); put the data dir on a local filesystem",
                path.display()
            );
        }
        conn.execute_batch(
            "PRAGMA foreign_keys=ON; PRAGMA synchronous=NORMAL; PRAGMA wal_autocheckpoint=1000;",
        )
        .map_err(|e| anyhow::anyhow!(describe(path, "configuring", &e)))?;
        // Damage in the middle of the file surfaces here, naming the file,
        // rather than later as a bare "database disk image is malformed".
        let findings: Vec<String> = conn
            .prepare("PRAGMA quick_check")
            .and_then(|mut st| {
                st.query_map([], |r| r.get::<_, String>(0))?
                    .collect::<Result<Vec<_>, _>>()
            })
            .map_err(|e| anyhow::anyhow!(describe(path, "checking", &e)))?;
        if findings.iter().any(|f| f != "ok") {
            anyhow::bail!(describe_check(path, &findings));
        }
        let mut c = Central { conn };
        c.migrate()
            .map_err(|e| match e.downcast_ref::<rusqlite::Error>() {
                Some(se) => anyhow::anyhow!(describe(path, "migrating", se)),
                None => e.context(format!("migrating the central DB at {}", path.display())),
            })?;
        Ok(c)
    }

    /// Whether the first-run bootstrap has happened in this file.
    pub fn is_bootstrapped(&self) -> Result<bool> {
        Ok(self
            .conn
            .query_row("SELECT 1 FROM meta WHERE key = 'bootstrapped'", [], |_| {
                Ok(())
            })
            .optional()?
            .is_some())
    }

    pub fn migrate(&mut self) -> Result<Vec<&'static str>> {
        self.conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS schema_migrations (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)",
        )?;
        let mut applied = Vec::new();
        for (name, sql) in MIGRATIONS {
            let tx = self
                .conn
                .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let done: bool = tx
                .query_row(
                    "SELECT 1 FROM schema_migrations WHERE name = ?1",
                    [name],
                    |_| Ok(()),
                )
                .optional()?
                .is_some();
            if !done {
                tx.execute_batch(sql)
                    .with_context(|| format!("migration {name}"))?;
                tx.execute(
                    "INSERT INTO schema_migrations (name, applied_at) VALUES (?1, ?2)",
                    params![name, now()],
                )?;
                applied.push(*name);
            }
            tx.commit()?;
        }
        Ok(applied)
    }

    /// Issue 14: `main` used to be bootstrapped with `admin_scope =
    /// 'global'`, which no owner chose. Once per install (a `meta` marker),
    /// a `main` still at `global` is narrowed to `group`; its agent can
    /// still ask for anything beyond its group through an owner's approval
    /// card. Returns whether it changed the row (the caller logs it once).
    pub fn narrow_main_admin_scope(&mut self) -> Result<bool> {
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        if tx
            .query_row(
                "SELECT 1 FROM meta WHERE key = 'main_admin_scope_narrowed'",
                [],
                |_| Ok(()),
            )
            .optional()?
            .is_some()
        {
            return Ok(false);
        }
        let t = now();
        let n = tx.execute(
            "UPDATE agent_configs SET admin_scope = 'group', updated_at = ?1 WHERE agent_group_id = 'main' AND admin_scope = 'global'",
            [&t],
        )?;
        tx.execute(
            "INSERT INTO meta (key, value) VALUES ('main_admin_scope_narrowed', ?1)",
            [&t],
        )?;
        tx.commit()?;
        Ok(n > 0)
    }

    /// First run: owner, agent group `main`, the terminal conversation and a
    /// `pattern "."` wiring. Idempotent (guarded by the `bootstrapped` marker
    /// in the same transaction). Returns whether it ran.
    /// The folders of every session (active or closed) of a conversation.
    pub fn session_dirs_of(
        &self,
        mg_id: &str,
        data: &crate::paths::DataDir,
    ) -> Result<Vec<crate::paths::SessionDir>> {
        let mut st = self
            .conn
            .prepare("SELECT agent_group_id, id FROM sessions WHERE messaging_group_id = ?1")?;
        let rows = st.query_map([mg_id], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
        })?;
        let mut out = Vec::new();
        for r in rows {
            let (ag, id) = r?;
            out.push(data.session(&ag, &id));
        }
        Ok(out)
    }

    /// Web chat for the owner (idempotent): user `web:<login>` is an owner,
    /// and the conversation `web`/`<login>` is wired to `main` like the
    /// terminal. Other web users go through registration as on any channel.
    pub fn ensure_web_owner(&mut self, owner_login: &str) -> Result<()> {
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let t = now();
        let user = format!("web:{owner_login}");
        let mg = format!("mg-web-{owner_login}");
        tx.execute("INSERT OR IGNORE INTO users (id, kind, display_name, created_at) VALUES (?1, 'web', ?2, ?3)", params![user, owner_login, t])?;
        tx.execute("INSERT OR IGNORE INTO user_roles (user_id, role, agent_group_id, granted_by, granted_at) VALUES (?1, 'owner', NULL, 'web', ?2)", params![user, t])?;
        let existing: Option<String> = tx
            .query_row(
                "SELECT id FROM messaging_groups WHERE channel_type = 'web' AND platform_id = ?1",
                [owner_login],
                |r| r.get(0),
            )
            .optional()?;
        if existing.is_none() {
            tx.execute(
                "INSERT INTO messaging_groups (id, channel_type, platform_id, name, is_group, unknown_sender_policy, created_at)
                 VALUES (?1, 'web', ?2, 'web chat', 0, 'strict', ?3)",
                params![mg, owner_login, t],
            )?;
            tx.execute(
                "INSERT INTO wirings (id, messaging_group_id, agent_group_id, engage_mode, engage_pattern, sender_scope,
                   ignored_message_policy, session_mode, priority, created_at)
                 SELECT ?1, ?2, 'main', 'pattern', '.', 'known', 'drop', 'shared', 0, ?3 WHERE EXISTS (SELECT 1 FROM agent_groups WHERE id = 'main')",
                params![format!("w-main-web-{owner_login}"), mg, t],
            )?;
            tx.execute(
                "INSERT OR IGNORE INTO agent_destinations (agent_group_id, local_name, target_type, target_id, created_at)
                 SELECT 'main', 'web', 'channel', ?1, ?2 WHERE EXISTS (SELECT 1 FROM agent_groups WHERE id = 'main')",
                params![mg, t],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    pub fn bootstrap(&mut self, owner_login: &str) -> Result<bool> {
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        if tx
            .query_row("SELECT 1 FROM meta WHERE key = 'bootstrapped'", [], |_| {
                Ok(())
            })
            .optional()?
            .is_some()
        {
            return Ok(false);
        }
        let t = now();
        let install_id = pinch_proto::runner_config::random_hex(4);
        tx.execute(
            "INSERT OR IGNORE INTO meta (key, value) VALUES ('install_id', ?1)",
            [&install_id],
        )?;
        let owner = format!("cli:{owner_login}");
        tx.execute("INSERT OR IGNORE INTO users (id, kind, display_name, created_at) VALUES (?1, 'cli', ?2, ?3)", params![owner, owner_login, t])?;
        tx.execute("INSERT OR IGNORE INTO user_roles (user_id, role, agent_group_id, granted_by, granted_at) VALUES (?1, 'owner', NULL, 'bootstrap', ?2)", params![owner, t])?;
        tx.execute("INSERT INTO agent_groups (id, name, folder, provider, created_at) VALUES ('main', 'main', 'main', NULL, ?1)", [&t])?;
        tx.execute("INSERT INTO agent_configs (agent_group_id, admin_scope, can_create_agents, updated_at) VALUES ('main', 'group', 1, ?1)", [&t])?;
        // Nothing to narrow on this install (see `narrow_main_admin_scope`).
        tx.execute(
            "INSERT OR IGNORE INTO meta (key, value) VALUES ('main_admin_scope_narrowed', ?1)",
            [&t],
        )?;
        tx.execute(
            "INSERT INTO messaging_groups (id, channel_type, platform_id, name, is_group, unknown_sender_policy, created_at)
             VALUES ('mg-cli-local', 'cli', 'local', 'terminal', 0, 'strict', ?1)",
            [&t],
        )?;
        tx.execute(
            "INSERT INTO wirings (id, messaging_group_id, agent_group_id, engage_mode, engage_pattern, sender_scope,
               ignored_message_policy, session_mode, priority, created_at)
             VALUES ('w-main-terminal', 'mg-cli-local', 'main', 'pattern', '.', 'known', 'drop', 'shared', 0, ?1)",
            [&t],
        )?;
        tx.execute(
            "INSERT INTO agent_destinations (agent_group_id, local_name, target_type, target_id, created_at)
             VALUES ('main', 'terminal', 'channel', 'mg-cli-local', ?1)",
            [&t],
        )?;
        tx.execute(
            "INSERT INTO meta (key, value) VALUES ('bootstrapped', ?1)",
            [&t],
        )?;
        tx.commit()?;
        Ok(true)
    }

    fn mg_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<MessagingGroup> {
        Ok(MessagingGroup {
            id: r.get(0)?,
            channel_type: r.get(1)?,
            platform_id: r.get(2)?,
            name: r.get(3)?,
            unknown_sender_policy: r.get(4)?,
            denied_at: r.get(5)?,
            is_group: r.get(6)?,
        })
    }

    pub fn messaging_group(
        &self,
        channel_type: &str,
        platform_id: &str,
    ) -> Result<Option<MessagingGroup>> {
        Ok(self
            .conn
            .prepare_cached(
                "SELECT id, channel_type, platform_id, name, unknown_sender_policy, denied_at, is_group FROM messaging_groups
                 WHERE channel_type = ?1 AND platform_id = ?2",
            )?
            .query_row(params![channel_type, platform_id], Self::mg_row)
            .optional()?)
    }

    pub fn messaging_group_by_id(&self, id: &str) -> Result<Option<MessagingGroup>> {
        Ok(self
            .conn
            .query_row(
                "SELECT id, channel_type, platform_id, name, unknown_sender_policy, denied_at, is_group FROM messaging_groups WHERE id = ?1",
                [id],
                Self::mg_row,
            )
            .optional()?)
    }

    /// Wirings of a conversation, highest priority first.
    pub fn wirings(&self, mg_id: &str) -> Result<Vec<WiringRow>> {
        let mut s = self.conn.prepare_cached(
            "SELECT id, agent_group_id, engage_mode, engage_pattern, sender_scope, ignored_message_policy, session_mode,
                    messaging_group_id
             FROM wirings WHERE messaging_group_id = ?1 ORDER BY priority DESC, created_at, id",
        )?;
        let rows = s
            .query_map([mg_id], |r| {
                Ok(WiringRow {
                    id: r.get(0)?,
                    agent_group_id: r.get(1)?,
                    engage_mode: r.get(2)?,
                    engage_pattern: r.get(3)?,
                    sender_scope: r.get(4)?,
                    ignored_message_policy: r.get(5)?,
                    session_mode: r.get(6)?,
                    messaging_group_id: r.get(7)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// Creates the user if new (the `<channel>:` prefix is part of the id).
    pub fn upsert_user(&self, user_id: &str, kind: &str, display_name: Option<&str>) -> Result<()> {
        self.conn.execute(
            "INSERT INTO users (id, kind, display_name, created_at) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT(id) DO UPDATE SET display_name = coalesce(excluded.display_name, display_name)",
            params![user_id, kind, display_name, now()],
        )?;
        Ok(())
    }

    /// Owner, global admin, admin of the group, or member.
    pub fn has_access(&self, user_id: &str, ag_id: &str) -> Result<bool> {
        let role: bool = self
            .conn
            .query_row(
                "SELECT 1 FROM user_roles WHERE user_id = ?1 AND (role = 'owner' OR agent_group_id IS NULL OR agent_group_id = ?2)",
                params![user_id, ag_id],
                |_| Ok(()),
            )
            .optional()?
            .is_some();
        if role {
            return Ok(true);
        }
        Ok(self
            .conn
            .query_row(
                "SELECT 1 FROM agent_group_members WHERE user_id = ?1 AND agent_group_id = ?2",
                params![user_id, ag_id],
                |_| Ok(()),
            )
            .optional()?
            .is_some())
    }

    pub fn insert_pending_question(&self, q: &PendingQuestion) -> Result<()> {
        self.conn.execute(
            "INSERT OR IGNORE INTO pending_questions (question_id, session_id, agent_question_id, message_out_id, channel_type,
               platform_id, thread_id, title, options_json, expires_at, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            params![q.question_id, q.session_id, q.agent_question_id, q.message_out_id, q.channel_type, q.platform_id, q.thread_id, q.title, q.options_json, q.expires_at, now()],
        )?;
        Ok(())
    }

    pub fn pending_question(&self, question_id: &str) -> Result<Option<PendingQuestion>> {
        Ok(self
            .conn
            .query_row(
                "SELECT question_id, session_id, agent_question_id, message_out_id, channel_type, platform_id, thread_id, title,
                        options_json, expires_at FROM pending_questions WHERE question_id = ?1",
                [question_id],
                |r| {
                    Ok(PendingQuestion {
                        question_id: r.get(0)?,
                        session_id: r.get(1)?,
                        agent_question_id: r.get(2)?,
                        message_out_id: r.get(3)?,
                        channel_type: r.get(4)?,
                        platform_id: r.get(5)?,
                        thread_id: r.get(6)?,
                        title: r.get::<_, Option<String>>(7)?.unwrap_or_default(),
                        options_json: r.get(8)?,
                        expires_at: r.get(9)?,
                    })
                },
            )
            .optional()?)
    }

    /// Forgets every pending entry of one asked message (a redelivery may
    /// have made more than one).
    pub fn delete_pending_questions(
        &self,
        session_id: &str,
        message_out_id: &str,
    ) -> Result<usize> {
        Ok(self.conn.execute(
            "DELETE FROM pending_questions WHERE session_id = ?1 AND message_out_id = ?2",
            params![session_id, message_out_id],
        )?)
    }

    /// The agent group's `agent_configs.egress_allow` (a JSON array of host
    /// patterns; NULL or no row = none). Invalid JSON is an error naming
    /// the group.
    pub fn egress_allow(&self, ag_id: &str) -> Result<Vec<String>> {
        let raw: Option<String> = self
            .conn
            .query_row(
                "SELECT egress_allow FROM agent_configs WHERE agent_group_id = ?1",
                [ag_id],
                |r| r.get(0),
            )
            .optional()?
            .flatten();
        match raw.as_deref().map(str::trim) {
            None | Some("") => Ok(Vec::new()),
            Some(text) => serde_json::from_str(text).with_context(|| {
                format!("agent_configs.egress_allow of agent group {ag_id:?} must be a JSON array of host patterns, e.g. [\"api.github.com\", \"*.pypi.org\"]")
            }),
        }
    }

    /// The group's own MCP servers (`agent_configs.mcp_servers`, a JSON
    /// list of `McpServerConfig`; NULL or absent = none).
    pub fn agent_mcp_servers(
        &self,
        ag_id: &str,
    ) -> Result<Vec<pinch_proto::runner_config::McpServerConfig>> {
        let json: Option<String> = self
            .conn
            .query_row(
                "SELECT mcp_servers FROM agent_configs WHERE agent_group_id = ?1",
                [ag_id],
                |r| r.get(0),
            )
            .optional()?
            .flatten();
        match json.as_deref().map(str::trim) {
            None | Some("") => Ok(Vec::new()),
            Some(j) => serde_json::from_str(j).with_context(|| {
                format!("agent_configs.mcp_servers of agent group {ag_id:?} is not a JSON list of {{name, command, args, env, cwd, timeout_s}}")
            }),
        }
    }

    /// The agent group's `agent_configs.assistant_name`, if set and not blank.
    pub fn assistant_name(&self, ag_id: &str) -> Result<Option<String>> {
        let raw: Option<String> = self
            .conn
            .query_row(
                "SELECT assistant_name FROM agent_configs WHERE agent_group_id = ?1",
                [ag_id],
                |r| r.get(0),
            )
            .optional()?
            .flatten();
        Ok(raw.map(|n| n.trim().to_owned()).filter(|n| !n.is_empty()))
    }

    pub fn agent_folder(&self, ag_id: &str) -> Result<Option<String>> {
        Ok(self
            .conn
            .query_row(
                "SELECT folder FROM agent_groups WHERE id = ?1",
                [ag_id],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// The active session for (ag, mg, thread), if any.
    pub fn find_session(
        &self,
        ag_id: &str,
        mg_id: Option<&str>,
        thread_id: Option<&str>,
    ) -> Result<Option<SessionRow>> {
        Ok(self
            .conn
            .prepare_cached(
                "SELECT s.id, s.agent_group_id, s.messaging_group_id, s.thread_id, g.folder
                 FROM sessions s JOIN agent_groups g ON g.id = s.agent_group_id
                 WHERE s.status = 'active' AND s.agent_group_id = ?1 AND coalesce(s.messaging_group_id, '') = coalesce(?2, '')
                   AND coalesce(s.thread_id, '') = coalesce(?3, '')",
            )?
            .query_row(params![ag_id, mg_id, thread_id], Self::session_row)
            .optional()?)
    }

    fn session_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<SessionRow> {
        Ok(SessionRow {
            id: r.get(0)?,
            agent_group_id: r.get(1)?,
            messaging_group_id: r.get(2)?,
            thread_id: r.get(3)?,
            folder: r.get(4)?,
        })
    }

    pub fn active_sessions(&self) -> Result<Vec<SessionRow>> {
        let mut s = self.conn.prepare(
            "SELECT s.id, s.agent_group_id, s.messaging_group_id, s.thread_id, g.folder
             FROM sessions s JOIN agent_groups g ON g.id = s.agent_group_id WHERE s.status = 'active' ORDER BY s.created_at",
        )?;
        let rows = s
            .query_map([], Self::session_row)?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    pub fn insert_session(&self, s: &SessionRow, provider: &str) -> Result<()> {
        let t = now();
        self.conn.execute(
            "INSERT INTO sessions (id, agent_group_id, messaging_group_id, thread_id, provider, status, runner_status, last_active, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, 'active', 'stopped', ?6, ?6)",
            params![s.id, s.agent_group_id, s.messaging_group_id, s.thread_id, provider, t],
        )?;
        Ok(())
    }

    pub fn close_session(&self, id: &str) -> Result<()> {
        self.conn
            .execute("UPDATE sessions SET status = 'closed' WHERE id = ?1", [id])?;
        Ok(())
    }

    pub fn touch_session(&self, id: &str) -> Result<()> {
        self.conn
            .prepare_cached("UPDATE sessions SET last_active = ?2 WHERE id = ?1")?
            .execute(params![id, now()])?;
        Ok(())
    }

    pub fn set_runner_state(
        &self,
        session_id: &str,
        status: &str,
        runner_id: Option<&str>,
    ) -> Result<()> {
        self.conn.execute(
            "UPDATE sessions SET runner_status = ?2, runner_id = coalesce(?3, runner_id),
               runner_started_at = CASE WHEN ?2 IN ('starting', 'running') THEN ?4 ELSE runner_started_at END WHERE id = ?1",
            params![session_id, status, runner_id, now()],
        )?;
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    pub fn record_exit(
        &self,
        session_id: &str,
        runner_id: &str,
        started_at: &str,
        code: Option<i32>,
        signal: Option<i32>,
        cause: &str,
        detail: Option<&str>,
    ) -> Result<()> {
        self.conn.execute(
            "INSERT INTO runner_exits (session_id, runner_id, started_at, exited_at, exit_code, signal, cause, detail)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![session_id, runner_id, started_at, now(), code, signal, cause, detail],
        )?;
        Ok(())
    }

    /// Counts an abnormal exit (epoch ms) against the session's crash
    /// budget and forgets the session's exits older than `window_ms`.
    pub fn count_budget_exit(&self, session_id: &str, at_ms: i64, window_ms: i64) -> Result<()> {
        let tx = self.conn.unchecked_transaction()?;
        tx.execute(
            "DELETE FROM crash_budget WHERE session_id = ?1 AND at_ms < ?2",
            params![session_id, at_ms.saturating_sub(window_ms)],
        )?;
        tx.execute(
            "INSERT INTO crash_budget (session_id, at_ms) VALUES (?1, ?2)",
            params![session_id, at_ms],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// The session's counted abnormal exits at or after `since_ms`, oldest first.
    pub fn budget_exits(&self, session_id: &str, since_ms: i64) -> Result<Vec<i64>> {
        let mut st = self.conn.prepare_cached(
            "SELECT at_ms FROM crash_budget WHERE session_id = ?1 AND at_ms >= ?2 ORDER BY at_ms",
        )?;
        let rows = st
            .query_map(params![session_id, since_ms], |r| r.get(0))?
            .collect::<Result<Vec<i64>, _>>()?;
        Ok(rows)
    }

    /// Forgets the session's counted exits (its quarantine was lifted).
    pub fn clear_budget_exits(&self, session_id: &str) -> Result<()> {
        self.conn.execute(
            "DELETE FROM crash_budget WHERE session_id = ?1",
            [session_id],
        )?;
        Ok(())
    }

    /// Quarantines a session; returns false if it already was (so the user
    /// is told exactly once).
    pub fn quarantine(&self, id: &str, reason: &str) -> Result<bool> {
        let n = self.conn.execute(
            "UPDATE sessions SET quarantined_at = ?2, quarantine_reason = ?3 WHERE id = ?1 AND quarantined_at IS NULL",
            params![id, now(), reason],
        )?;
        Ok(n > 0)
    }

    /// Lifts a quarantine; returns whether there was one.
    pub fn lift_quarantine(&self, id: &str) -> Result<bool> {
        let n = self.conn.execute(
            "UPDATE sessions SET quarantined_at = NULL, quarantine_reason = NULL WHERE id = ?1 AND quarantined_at IS NOT NULL",
            [id],
        )?;
        Ok(n > 0)
    }

    /// The generation of the session's inbound.db the host last made or
    /// adopted (issue 15); `None` before the first check.
    pub fn inbound_generation(&self, id: &str) -> Result<Option<String>> {
        Ok(self
            .conn
            .query_row(
                "SELECT inbound_generation FROM sessions WHERE id = ?1",
                [id],
                |r| r.get(0),
            )
            .optional()?
            .flatten())
    }

    pub fn set_inbound_generation(&self, id: &str, generation: &str) -> Result<()> {
        self.conn.execute(
            "UPDATE sessions SET inbound_generation = ?2 WHERE id = ?1",
            params![id, generation],
        )?;
        Ok(())
    }

    pub fn quarantine_of(&self, id: &str) -> Result<Option<(String, String)>> {
        Ok(self
            .conn
            .query_row(
                "SELECT quarantined_at, coalesce(quarantine_reason, '') FROM sessions WHERE id = ?1 AND quarantined_at IS NOT NULL",
                [id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?)
    }

    /// Sessions with their state, for the admin surface.
    pub fn session_states(&self) -> Result<Vec<serde_json::Value>> {
        let mut s = self.conn.prepare(
            "SELECT s.id, s.agent_group_id, s.messaging_group_id, s.thread_id, s.status, s.runner_status, s.runner_id,
                    s.last_active, s.quarantined_at, s.quarantine_reason,
                    (SELECT count(*) FROM runner_exits e WHERE e.session_id = s.id) AS exits,
                    (SELECT cause || coalesce(': ' || detail, '') FROM runner_exits e WHERE e.session_id = s.id ORDER BY rowid DESC LIMIT 1)
             FROM sessions s ORDER BY s.created_at",
        )?;
        let rows = s
            .query_map([], |r| {
                Ok(serde_json::json!({
                    "id": r.get::<_, String>(0)?,
                    "agent_group": r.get::<_, String>(1)?,
                    "messaging_group": r.get::<_, Option<String>>(2)?,
                    "thread": r.get::<_, Option<String>>(3)?,
                    "status": r.get::<_, String>(4)?,
                    "runner": r.get::<_, String>(5)?,
                    "runner_id": r.get::<_, Option<String>>(6)?,
                    "last_active": r.get::<_, Option<String>>(7)?,
                    "quarantined_at": r.get::<_, Option<String>>(8)?,
                    "quarantine_reason": r.get::<_, Option<String>>(9)?,
                    "exits": r.get::<_, i64>(10)?,
                    "last_exit": r.get::<_, Option<String>>(11)?,
                }))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// The agent group's destinations, projected for its sessions.
    pub fn destinations(&self, ag_id: &str) -> Result<Vec<pinch_proto::rows::Destination>> {
        let mut s = self.conn.prepare_cached(
            "SELECT d.local_name, d.target_type, d.target_id, m.channel_type, m.platform_id, m.name
             FROM agent_destinations d LEFT JOIN messaging_groups m ON d.target_type = 'channel' AND m.id = d.target_id
             WHERE d.agent_group_id = ?1 ORDER BY d.local_name",
        )?;
        let rows = s
            .query_map([ag_id], |r| {
                let kind: String = r.get(1)?;
                let target: String = r.get(2)?;
                Ok(pinch_proto::rows::Destination {
                    name: r.get(0)?,
                    display_name: r.get(5)?,
                    agent_group_id: (kind == "agent").then(|| target.clone()),
                    channel_type: r.get(3)?,
                    platform_id: r.get(4)?,
                    kind,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_exits_survive_a_reopen_leave_the_window_and_clear() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("pinch.db");
        let c = Central::open(&p).unwrap();
        for t in [1_000, 2_000, 50_000] {
            c.count_budget_exit("s1", t, 10_000).unwrap();
        }
        c.count_budget_exit("s2", 3_000, 10_000).unwrap();
        drop(c);
        let c = Central::open(&p).unwrap();
        // 1 000 and 2 000 left the window when 50 000 was counted.
        assert_eq!(c.budget_exits("s1", 0).unwrap(), vec![50_000]);
        assert_eq!(c.budget_exits("s2", 0).unwrap(), vec![3_000]);
        assert!(c.budget_exits("s2", 3_001).unwrap().is_empty());
        c.clear_budget_exits("s1").unwrap();
        assert!(c.budget_exits("s1", 0).unwrap().is_empty());
        assert_eq!(c.budget_exits("s2", 0).unwrap(), vec![3_000]);
    }

    #[test]
    fn migrations_apply_once_and_bootstrap_is_idempotent() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("pinch.db");
        let mut c = Central::open(&p).unwrap();
        assert!(
            c.migrate().unwrap().is_empty(),
            "second application is a no-op"
        );
        drop(c);
        let mut c = Central::open(&p).unwrap();
        assert!(c.bootstrap("alice").unwrap());
        assert!(!c.bootstrap("alice").unwrap());
        let mg = c.messaging_group("cli", "local").unwrap().unwrap();
        let w = c.wirings(&mg.id).unwrap();
        assert_eq!(w.len(), 1);
        assert_eq!(w[0].agent_group_id, "main");
        assert!(c.has_access("cli:alice", "main").unwrap());
        assert!(!c.has_access("cli:mallory", "main").unwrap());
        let dests = c.destinations("main").unwrap();
        assert_eq!(dests[0].name, "terminal");
        assert_eq!(dests[0].platform_id.as_deref(), Some("local"));
        let n: i64 = c
            .conn
            .query_row("SELECT count(*) FROM schema_migrations", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n as usize, MIGRATIONS.len());
    }

    #[test]
    fn main_starts_at_group_scope_and_an_old_global_is_narrowed_once() {
        let d = tempfile::tempdir().unwrap();
        let mut c = Central::open(&d.path().join("pinch.db")).unwrap();
        c.bootstrap("alice").unwrap();
        let scope = |c: &Central| {
            c.conn
                .query_row(
                    "SELECT admin_scope FROM agent_configs WHERE agent_group_id = 'main'",
                    [],
                    |r| r.get::<_, String>(0),
                )
                .unwrap()
        };
        assert_eq!(scope(&c), "group");
        assert!(
            !c.narrow_main_admin_scope().unwrap(),
            "a fresh install has nothing to narrow"
        );
        // An install bootstrapped by an older version: global, no marker.
        c.conn
            .execute(
                "UPDATE agent_configs SET admin_scope = 'global' WHERE agent_group_id = 'main'",
                [],
            )
            .unwrap();
        c.conn
            .execute(
                "DELETE FROM meta WHERE key = 'main_admin_scope_narrowed'",
                [],
            )
            .unwrap();
        assert!(c.narrow_main_admin_scope().unwrap());
        assert_eq!(scope(&c), "group");
        // The owner chooses global afterwards: it stays.
        c.conn
            .execute(
                "UPDATE agent_configs SET admin_scope = 'global' WHERE agent_group_id = 'main'",
                [],
            )
            .unwrap();
        assert!(!c.narrow_main_admin_scope().unwrap());
        assert_eq!(scope(&c), "global");
    }

    #[test]
    fn assistant_name_is_read_and_blank_is_none() {
        let d = tempfile::tempdir().unwrap();
        let mut c = Central::open(&d.path().join("pinch.db")).unwrap();
        c.bootstrap("alice").unwrap();
        assert_eq!(c.assistant_name("main").unwrap(), None);
        c.conn
            .execute(
                "UPDATE agent_configs SET assistant_name = '  ' WHERE agent_group_id = 'main'",
                [],
            )
            .unwrap();
        assert_eq!(c.assistant_name("main").unwrap(), None);
        c.conn.execute("UPDATE agent_configs SET assistant_name = ' Pinchy ' WHERE agent_group_id = 'main'", []).unwrap();
        assert_eq!(c.assistant_name("main").unwrap().as_deref(), Some("Pinchy"));
        assert_eq!(c.assistant_name("nobody").unwrap(), None);
    }

    #[test]
    fn pending_questions_round_trip_and_are_forgotten_per_message() {
        let d = tempfile::tempdir().unwrap();
        let c = Central::open(&d.path().join("pinch.db")).unwrap();
        let q = PendingQuestion {
            question_id: "h1".into(),
            session_id: "s1".into(),
            agent_question_id: "aq".into(),
            message_out_id: "out-1".into(),
            channel_type: Some("cli".into()),
            platform_id: Some("local".into()),
            thread_id: None,
            title: "T".into(),
            options_json: r#"[{"label":"Yes","value":"y"}]"#.into(),
            expires_at: "2030-01-01T00:00:00.000000Z".into(),
        };
        c.insert_pending_question(&q).unwrap();
        // a redelivery of the same message makes a second entry under a new id
        c.insert_pending_question(&PendingQuestion {
            question_id: "h2".into(),
            ..q.clone()
        })
        .unwrap();
        // the same id again is ignored, not an error
        c.insert_pending_question(&q).unwrap();
        assert_eq!(c.pending_question("h1").unwrap(), Some(q.clone()));
        assert_eq!(c.delete_pending_questions("s1", "out-1").unwrap(), 2);
        assert_eq!(c.pending_question("h2").unwrap(), None);
    }

    #[test]
    fn one_active_session_per_key() {
        let d = tempfile::tempdir().unwrap();
        let mut c = Central::open(&d.path().join("pinch.db")).unwrap();
        c.bootstrap("alice").unwrap();
        let s = SessionRow {
            id: "s1".into(),
            agent_group_id: "main".into(),
            messaging_group_id: Some("mg-cli-local".into()),
            thread_id: None,
            folder: "main".into(),
        };
        c.insert_session(&s, "scripted").unwrap();
        let dup = SessionRow {
            id: "s2".into(),
            ..s.clone()
        };
        assert!(c.insert_session(&dup, "scripted").is_err());
        assert_eq!(
            c.find_session("main", Some("mg-cli-local"), None)
                .unwrap()
                .unwrap()
                .id,
            "s1"
        );
    }
}
