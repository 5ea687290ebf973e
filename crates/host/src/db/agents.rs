//! Central-DB reads of an agent group's settings and address book.

use anyhow::{Context, Result};
use pinch_proto::rusqlite::OptionalExtension;

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
}
