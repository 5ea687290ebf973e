//! Central-DB queries of the permission model (SPEC §3.1, §7.1, §7.2):
//! roles, members, approvers and their DMs, approvals and the drop audit.
//! Only the main loop calls these (it alone writes the central DB).

use anyhow::{Context, Result};
use pinch_proto::rusqlite::{params, OptionalExtension};

use crate::db::central::{now, Central, MessagingGroup};

pub use super::approvals::{Approval, ApprovalOption};

impl Central {
    /// (access, admin) of a user for an agent group: access = owner, any
    /// admin of it (global or its own) or member; admin = owner, global
    /// admin or its admin.
    pub fn sender_rights(&self, user_id: &str, ag_id: &str) -> Result<(bool, bool)> {
        let admin = self
            .conn
            .prepare_cached(
                "SELECT 1 FROM user_roles WHERE user_id = ?1 AND (role = 'owner' OR agent_group_id IS NULL OR agent_group_id = ?2) LIMIT 1",
            )?
            .query_row(params![user_id, ag_id], |_| Ok(()))
            .optional()?
            .is_some();
        if admin {
            return Ok((true, true));
        }
        let member = self
            .conn
            .prepare_cached(
                "SELECT 1 FROM agent_group_members WHERE user_id = ?1 AND agent_group_id = ?2",
            )?
            .query_row(params![user_id, ag_id], |_| Ok(()))
            .optional()?
            .is_some();
        Ok((member, false))
    }

    pub fn is_owner(&self, user_id: &str) -> Result<bool> {
        Ok(self
            .conn
            .query_row(
                "SELECT 1 FROM user_roles WHERE user_id = ?1 AND role = 'owner'",
                [user_id],
                |_| Ok(()),
            )
            .optional()?
            .is_some())
    }

    /// Is the user someone pinch knows: any role (owner, admin) or a
    /// member of any agent group? (An adapter asks before it accepts an
    /// invite from them, `ChannelEvent::Known`.)
    pub fn is_known(&self, user_id: &str) -> Result<bool> {
        Ok(self
            .conn
            .query_row(
                "SELECT 1 FROM user_roles WHERE user_id = ?1 UNION ALL SELECT 1 FROM agent_group_members WHERE user_id = ?1 LIMIT 1",
                [user_id],
                |_| Ok(()),
            )
            .optional()?
            .is_some())
    }

    /// Does the user exist already? (Saves a write per message.)
    pub fn user_exists(&self, user_id: &str) -> Result<bool> {
        Ok(self
            .conn
            .prepare_cached("SELECT 1 FROM users WHERE id = ?1")?
            .query_row([user_id], |_| Ok(()))
            .optional()?
            .is_some())
    }

    /// Approvers in the order SPEC §7.2 asks, as tiers: admins of the
    /// group, then global admins, then owners (each in grant order; a user
    /// appears once, in the first tier that has them).
    pub fn approver_tiers(&self, ag_id: Option<&str>) -> Result<Vec<Vec<String>>> {
        let q = |sql: &str, p: &[&dyn pinch_proto::rusqlite::ToSql]| -> Result<Vec<String>> {
            let mut s = self.conn.prepare(sql)?;
            let rows = s
                .query_map(p, |r| r.get::<_, String>(0))?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        };
        let mut tiers = Vec::new();
        if let Some(ag) = ag_id {
            tiers.push(q("SELECT user_id FROM user_roles WHERE role = 'admin' AND agent_group_id = ?1 ORDER BY granted_at, user_id", &[&ag])?);
        }
        tiers.push(q("SELECT user_id FROM user_roles WHERE role = 'admin' AND agent_group_id IS NULL ORDER BY granted_at, user_id", &[])?);
        tiers.push(q(
            "SELECT user_id FROM user_roles WHERE role = 'owner' ORDER BY granted_at, user_id",
            &[],
        )?);
        let mut seen: Vec<String> = Vec::new();
        for t in tiers.iter_mut() {
            t.retain(|u| {
                let new = !seen.contains(u);
                seen.push(u.clone());
                new
            });
        }
        Ok(tiers)
    }

    /// May this user decide an approval for `ag`? An owner always; an
    /// admin of the group (or a global admin) unless the card is for owners
    /// only. Being the addressed approver is not enough by itself: an
    /// approver who lost their role since cannot decide.
    pub fn may_decide(
        &self,
        user_id: &str,
        ag_id: Option<&str>,
        owners_only: bool,
    ) -> Result<bool> {
        if self.is_owner(user_id)? {
            return Ok(true);
        }
        match ag_id {
            Some(ag) if !owners_only => Ok(self.sender_rights(user_id, ag)?.1),
            _ => Ok(false),
        }
    }

    /// Runs `f` as one unit (a savepoint: nests inside other savepoints);
    /// rolled back on error.
    pub fn atomically<T>(&mut self, f: impl FnOnce(&mut Central) -> Result<T>) -> Result<T> {
        self.conn.execute_batch("SAVEPOINT atomically")?;
        match f(self) {
            Ok(v) => {
                self.conn.execute_batch("RELEASE atomically")?;
                Ok(v)
            }
            Err(e) => {
                if self
                    .conn
                    .execute_batch("ROLLBACK TO atomically; RELEASE atomically")
                    .is_err()
                {
                    let _ = self.conn.execute_batch("ROLLBACK");
                }
                Err(e)
            }
        }
    }

    pub fn user_dm(&self, user_id: &str, channel_type: &str) -> Result<Option<String>> {
        Ok(self
            .conn
            .query_row(
                "SELECT m.platform_id FROM user_dms d JOIN messaging_groups m ON m.id = d.messaging_group_id
                 WHERE d.user_id = ?1 AND d.channel_type = ?2",
                params![user_id, channel_type],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// Records a user's DM conversation, creating its messaging group (not
    /// a group chat; policy `strict`) if pinch did not know it.
    pub fn set_user_dm(
        &mut self,
        user_id: &str,
        channel_type: &str,
        platform_id: &str,
    ) -> Result<()> {
        let tx = self.conn.savepoint()?;
        let t = now();
        tx.execute(
            "INSERT OR IGNORE INTO messaging_groups (id, channel_type, platform_id, name, is_group, unknown_sender_policy, created_at)
             VALUES (?1, ?2, ?3, ?4, 0, 'strict', ?5)",
            params![format!("mg-{channel_type}-{}", pinch_proto::runner_config::random_hex(4)), channel_type, platform_id, format!("DM {user_id}"), t],
        )?;
        let mg: String = tx.query_row(
            "SELECT id FROM messaging_groups WHERE channel_type = ?1 AND platform_id = ?2",
            params![channel_type, platform_id],
            |r| r.get(0),
        )?;
        tx.execute(
            "INSERT INTO user_dms (user_id, channel_type, messaging_group_id, resolved_at) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT(user_id, channel_type) DO UPDATE SET messaging_group_id = excluded.messaging_group_id, resolved_at = excluded.resolved_at",
            params![user_id, channel_type, mg, t],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// A conversation pinch has just met (SPEC §4 step 2c): policy
    /// `request_approval`.
    pub fn create_messaging_group(
        &self,
        channel_type: &str,
        platform_id: &str,
        name: Option<&str>,
        is_group: bool,
    ) -> Result<MessagingGroup> {
        self.conn.execute(
            "INSERT OR IGNORE INTO messaging_groups (id, channel_type, platform_id, name, is_group, unknown_sender_policy, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, 'request_approval', ?6)",
            params![format!("mg-{channel_type}-{}", pinch_proto::runner_config::random_hex(4)), channel_type, platform_id, name, is_group, now()],
        )?;
        self.messaging_group(channel_type, platform_id)?
            .context("the new messaging group vanished")
    }

    /// One more dropped message in the audit.
    #[allow(clippy::too_many_arguments)]
    pub fn audit_drop(
        &self,
        channel_type: &str,
        platform_id: &str,
        user_id: Option<&str>,
        sender_name: Option<&str>,
        reason: &str,
        mg_id: Option<&str>,
        ag_id: Option<&str>,
    ) -> Result<()> {
        let t = now();
        self.conn
            .prepare_cached(
                "INSERT INTO dropped_messages (channel_type, platform_id, user_id, sender_name, reason, messaging_group_id, agent_group_id,
                   message_count, first_seen, last_seen)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 1, ?8, ?8)
                 ON CONFLICT(channel_type, platform_id, user_id, reason, agent_group_id)
                 DO UPDATE SET message_count = message_count + 1, last_seen = excluded.last_seen,
                   sender_name = coalesce(excluded.sender_name, sender_name)",
            )?
            .execute(params![channel_type, platform_id, user_id.unwrap_or(""), sender_name, reason, mg_id, ag_id.unwrap_or(""), t])?;
        Ok(())
    }

    pub fn add_member(&self, user_id: &str, ag_id: &str, added_by: &str) -> Result<()> {
        self.conn.execute(
            "INSERT OR IGNORE INTO users (id, kind, display_name, created_at) VALUES (?1, ?2, NULL, ?3)",
            params![user_id, user_id.split(':').next().unwrap_or("user"), now()],
        )?;
        self.conn.execute(
            "INSERT OR IGNORE INTO agent_group_members (user_id, agent_group_id, added_by, added_at) VALUES (?1, ?2, ?3, ?4)",
            params![user_id, ag_id, added_by, now()],
        )?;
        Ok(())
    }

    /// The agent group's newest active session (agent-shared mode).
    pub fn newest_session(&self, ag_id: &str) -> Result<Option<crate::db::central::SessionRow>> {
        Ok(self
            .conn
            .query_row(
                "SELECT s.id, s.agent_group_id, s.messaging_group_id, s.thread_id, g.folder
                 FROM sessions s JOIN agent_groups g ON g.id = s.agent_group_id
                 WHERE s.status = 'active' AND s.agent_group_id = ?1 ORDER BY s.created_at DESC, s.rowid DESC LIMIT 1",
                [ag_id],
                |r| Ok(crate::db::central::SessionRow { id: r.get(0)?, agent_group_id: r.get(1)?, messaging_group_id: r.get(2)?, thread_id: r.get(3)?, folder: r.get(4)? }),
            )
            .optional()?)
    }

    /// `last_active` of the active (ag, mg, thread) session, if any.
    pub fn session_last_active(
        &self,
        ag_id: &str,
        mg_id: &str,
        thread_id: Option<&str>,
    ) -> Result<Option<String>> {
        Ok(self
            .conn
            .prepare_cached(
                "SELECT last_active FROM sessions WHERE status = 'active' AND agent_group_id = ?1
                   AND coalesce(messaging_group_id, '') = ?2 AND coalesce(thread_id, '') = coalesce(?3, '')",
            )?
            .query_row(params![ag_id, mg_id, thread_id], |r| r.get::<_, Option<String>>(0))
            .optional()?
            .flatten())
    }

    /// (id, name) of every agent group, by name.
    pub fn agent_groups(&self) -> Result<Vec<(String, String)>> {
        let mut s = self
            .conn
            .prepare("SELECT id, name FROM agent_groups ORDER BY name, id")?;
        let rows = s
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// Creates an agent group named `name` with a folder derived from it
    /// (lowercase letters, digits and `-`; a suffix if taken). Returns its id.
    pub fn create_agent_group(&mut self, name: &str) -> Result<String> {
        let base: String = name
            .trim()
            .to_lowercase()
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect::<String>()
            .split('-')
            .filter(|p| !p.is_empty())
            .collect::<Vec<_>>()
            .join("-");
        let base: String = base.chars().take(32).collect();
        anyhow::ensure!(
            !base.is_empty(),
            "an agent's name needs at least one letter or digit, got {name:?}"
        );
        let tx = self.conn.savepoint()?;
        let mut folder = base.clone();
        let mut n = 1;
        while folder == "global"
            || tx
                .query_row(
                    "SELECT 1 FROM agent_groups WHERE folder = ?1 OR id = ?1",
                    [&folder],
                    |_| Ok(()),
                )
                .optional()?
                .is_some()
        {
            n += 1;
            folder = format!("{base}-{n}");
        }
        let t = now();
        tx.execute("INSERT INTO agent_groups (id, name, folder, provider, created_at) VALUES (?1, ?2, ?1, NULL, ?3)", params![folder, name.trim(), t])?;
        tx.execute(
            "INSERT INTO agent_configs (agent_group_id, updated_at) VALUES (?1, ?2)",
            params![folder, t],
        )?;
        tx.commit()?;
        Ok(folder)
    }

    /// Connects a conversation to an agent group the way registration does
    /// (SPEC §7.1): `mention-sticky` in a group, `pattern "."` in a DM;
    /// known senders, accumulate, shared; plus the agent's destination.
    pub fn wire_registered(&mut self, mg: &MessagingGroup, ag_id: &str) -> Result<()> {
        let (mode, pattern) = if mg.is_group {
            ("mention-sticky", None)
        } else {
            ("pattern", Some("."))
        };
        let tx = self.conn.savepoint()?;
        let t = now();
        tx.execute(
            "INSERT OR IGNORE INTO wirings (id, messaging_group_id, agent_group_id, engage_mode, engage_pattern, sender_scope,
               ignored_message_policy, session_mode, priority, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, 'known', 'accumulate', 'shared', 0, ?6)",
            params![format!("w-{}", pinch_proto::runner_config::random_hex(4)), mg.id, ag_id, mode, pattern, t],
        )?;
        let local: String = mg
            .name
            .clone()
            .unwrap_or_else(|| format!("{}-{}", mg.channel_type, mg.platform_id))
            .to_lowercase()
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .take(40)
            .collect();
        tx.execute(
            "INSERT OR IGNORE INTO agent_destinations (agent_group_id, local_name, target_type, target_id, created_at)
             VALUES (?1, ?2, 'channel', ?3, ?4)",
            params![ag_id, local, mg.id, t],
        )?;
        tx.commit()?;
        Ok(())
    }

    pub fn deny_messaging_group(&self, mg_id: &str) -> Result<()> {
        self.conn.execute(
            "UPDATE messaging_groups SET denied_at = ?2 WHERE id = ?1",
            params![mg_id, now()],
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn central() -> (tempfile::TempDir, Central) {
        let d = tempfile::tempdir().unwrap();
        let mut c = Central::open(&d.path().join("pinch.db")).unwrap();
        c.bootstrap("alice").unwrap();
        (d, c)
    }

    #[test]
    fn who_may_decide() {
        let (_d, c) = central();
        c.conn.execute("INSERT INTO agent_groups (id, name, folder, created_at) VALUES ('ops', 'ops', 'ops', 'x')", []).unwrap();
        for (u, role, ag) in [
            ("t:gadmin", "admin", Some("main")),
            ("t:global", "admin", None),
            ("t:opsadmin", "admin", Some("ops")),
        ] {
            c.conn
                .execute(
                    "INSERT INTO users (id, kind, created_at) VALUES (?1, 't', 'x')",
                    [u],
                )
                .unwrap();
            c.conn.execute("INSERT INTO user_roles (user_id, role, agent_group_id, granted_at) VALUES (?1, ?2, ?3, 'x')", params![u, role, ag]).unwrap();
        }
        c.add_member("t:member", "main", "test").unwrap();
        // (user, ag, owners_only) -> may decide
        for (u, ag, owners_only, want) in [
            ("cli:alice", Some("main"), false, true),
            ("cli:alice", Some("main"), true, true),
            ("cli:alice", None, false, true),
            ("t:gadmin", Some("main"), false, true),
            ("t:gadmin", Some("main"), true, false),
            ("t:gadmin", None, false, false),
            ("t:global", Some("main"), false, true),
            ("t:opsadmin", Some("main"), false, false),
            ("t:member", Some("main"), false, false),
            ("t:stranger", Some("main"), false, false),
        ] {
            assert_eq!(
                c.may_decide(u, ag, owners_only).unwrap(),
                want,
                "{u} {ag:?} owners_only={owners_only}"
            );
        }
        let tiers = c.approver_tiers(Some("main")).unwrap();
        assert_eq!(
            tiers,
            vec![
                vec!["t:gadmin".to_string()],
                vec!["t:global".to_string()],
                vec!["cli:alice".to_string()]
            ]
        );
    }

    #[test]
    fn atomically_rolls_back_everything_on_error_and_nests() {
        let (_d, mut c) = central();
        let r: Result<()> = c.atomically(|c| {
            c.add_member("t:x", "main", "test")?;
            c.atomically(|c| c.add_member("t:y", "main", "test"))?;
            anyhow::bail!("boom")
        });
        assert!(r.is_err());
        let n: i64 = c
            .conn
            .query_row("SELECT count(*) FROM agent_group_members", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 0);
        c.atomically(|c| c.add_member("t:x", "main", "test"))
            .unwrap();
        let n: i64 = c
            .conn
            .query_row("SELECT count(*) FROM agent_group_members", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 1);
        assert!(c.conn.is_autocommit(), "no transaction left open");
    }
}
