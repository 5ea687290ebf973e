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

pub use super::migrations::MIGRATIONS;

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

    /// A channel's conversations (not denied), newest activity first.
    pub fn conversations_of(
        &self,
        channel_type: &str,
    ) -> Result<Vec<pinch_channels::ConversationItem>> {
        let mut st = self.conn.prepare(
            "SELECT m.platform_id, m.name, (SELECT max(s.last_active) FROM sessions s WHERE s.messaging_group_id = m.id) AS active
               FROM messaging_groups m WHERE m.channel_type = ?1 AND m.denied_at IS NULL
              ORDER BY coalesce(active, m.created_at) DESC LIMIT 100",
        )?;
        let rows = st.query_map([channel_type], |r| {
            Ok(pinch_channels::ConversationItem {
                platform_id: r.get(0)?,
                name: r.get(1)?,
                last_active: r.get(2)?,
            })
        })?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
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
