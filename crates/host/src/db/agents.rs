//! Central-DB reads of an agent group's settings and address book.

use anyhow::{Context, Result};
use pinch_proto::rusqlite::{params, OptionalExtension};

use super::central::Central;

impl Central {
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

    /// The agent group's web policy (`agent_configs.web`; NULL or no row =
    /// the install's `[web_fetch]` settings). Invalid JSON is an error naming
    /// the group and the shape.
    pub fn web_policy(&self, ag_id: &str) -> Result<pinch_web::GroupPolicy> {
        let raw: Option<String> = self
            .conn
            .query_row(
                "SELECT web FROM agent_configs WHERE agent_group_id = ?1",
                [ag_id],
                |r| r.get(0),
            )
            .optional()?
            .flatten();
        pinch_web::GroupPolicy::from_json(raw.as_deref()).map_err(|e| {
            anyhow::anyhow!("agent_configs.web of agent group {ag_id:?} {e}; fix it with `pinch admin groups config-set {ag_id} --web '...'`")
        })
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

    /// The group's `agent_configs.extra_mounts` as stored (a JSON list of
    /// folder requests; `None` for NULL or no row).
    pub fn extra_mounts_requested(&self, ag_id: &str) -> Result<Option<String>> {
        Ok(self
            .conn
            .query_row(
                "SELECT extra_mounts FROM agent_configs WHERE agent_group_id = ?1",
                [ag_id],
                |r| r.get(0),
            )
            .optional()?
            .flatten())
    }

    /// The group's `agent_configs.sandbox` as stored (a JSON object of
    /// sandbox overrides; `None` for NULL or no row).
    pub fn agent_sandbox(&self, ag_id: &str) -> Result<Option<String>> {
        Ok(self
            .conn
            .query_row(
                "SELECT sandbox FROM agent_configs WHERE agent_group_id = ?1",
                [ag_id],
                |r| r.get::<_, Option<String>>(0),
            )
            .optional()?
            .flatten())
    }

    /// The group's `agent_configs.admin_scope` (`None` when it has no
    /// config row).
    pub fn admin_scope(&self, ag_id: &str) -> Result<Option<String>> {
        Ok(self
            .conn
            .query_row(
                "SELECT admin_scope FROM agent_configs WHERE agent_group_id = ?1",
                [ag_id],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// Whether the group may create agents without an approval
    /// (`agent_configs.can_create_agents`; false when it has no config row).
    pub fn can_create_agents(&self, ag_id: &str) -> Result<bool> {
        Ok(self
            .conn
            .query_row(
                "SELECT can_create_agents FROM agent_configs WHERE agent_group_id = ?1",
                [ag_id],
                |r| r.get::<_, i64>(0),
            )
            .optional()?
            .is_some_and(|n| n != 0))
    }

    /// One of the group's self-modifiable JSON lists, as stored (`None` for
    /// NULL or no row).
    pub fn config_list(&self, ag_id: &str, list: ConfigList) -> Result<Option<String>> {
        Ok(match list {
            ConfigList::McpServers => self.conn.query_row(
                "SELECT mcp_servers FROM agent_configs WHERE agent_group_id = ?1",
                [ag_id],
                |r| r.get(0),
            ),
            ConfigList::Packages => self.conn.query_row(
                "SELECT packages FROM agent_configs WHERE agent_group_id = ?1",
                [ag_id],
                |r| r.get(0),
            ),
        }
        .optional()?
        .flatten())
    }

    /// Replaces one of the group's self-modifiable JSON lists; returns the
    /// rows changed (0 when the group has no config row).
    pub fn set_config_list(
        &self,
        ag_id: &str,
        list: ConfigList,
        json: &str,
        now: &str,
    ) -> Result<usize> {
        let sql = match list {
            ConfigList::McpServers => {
                "UPDATE agent_configs SET mcp_servers = ?2, updated_at = ?3 WHERE agent_group_id = ?1"
            }
            ConfigList::Packages => {
                "UPDATE agent_configs SET packages = ?2, updated_at = ?3 WHERE agent_group_id = ?1"
            }
        };
        Ok(self.conn.execute(sql, params![ag_id, json, now])?)
    }

    /// Whether the group already has a destination called `local_name`.
    pub fn has_destination(&self, ag_id: &str, local_name: &str) -> Result<bool> {
        Ok(self
            .conn
            .query_row(
                "SELECT 1 FROM agent_destinations WHERE agent_group_id = ?1 AND local_name = ?2",
                params![ag_id, local_name],
                |_| Ok(()),
            )
            .optional()?
            .is_some())
    }

    /// The destinations both ways between a parent and the agent it
    /// created: the parent calls the child `local_name`, the child calls
    /// its parent `parent`.
    pub fn link_child_agent(
        &self,
        parent: &str,
        local_name: &str,
        child: &str,
        now: &str,
    ) -> Result<()> {
        self.conn.execute(
            "INSERT INTO agent_destinations (agent_group_id, local_name, target_type, target_id, created_at) VALUES (?1, ?2, 'agent', ?3, ?4)",
            params![parent, local_name, child, now],
        )?;
        self.conn.execute(
            "INSERT INTO agent_destinations (agent_group_id, local_name, target_type, target_id, created_at) VALUES (?1, 'parent', 'agent', ?2, ?3)",
            params![child, parent, now],
        )?;
        Ok(())
    }
}

/// The JSON lists of `agent_configs` an agent may extend through an
/// approved self-modification request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfigList {
    /// `mcp_servers` (`add_mcp_server`).
    McpServers,
    /// `packages` (`install_packages`).
    Packages,
}
