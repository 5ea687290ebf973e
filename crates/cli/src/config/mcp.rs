//! `[mcp.servers.<name>]`: external MCP servers every runner starts.

use std::path::PathBuf;

use anyhow::{bail, Result};
use pinch_host::HostConfig;
use serde::Deserialize;

/// `[mcp.servers.<name>]`: external stdio MCP servers (SPEC §5.6), started
/// by each runner inside its sandbox; tools appear as `<name>__<tool>`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct McpSection {
    #[serde(default)]
    pub servers: std::collections::BTreeMap<String, McpServerSection>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct McpServerSection {
    /// The program, as the sandbox sees it (`/usr/bin/…` or a name in PATH).
    pub command: String,
    #[serde(default)]
    pub args: Vec<String>,
    /// Plain settings only: the sandbox can read them (no secrets).
    #[serde(default)]
    pub env: std::collections::BTreeMap<String, String>,
    pub cwd: Option<PathBuf>,
    pub timeout_s: Option<u64>,
    /// Agent group ids that get this server (absent = all).
    pub groups: Option<Vec<String>>,
}

impl McpSection {
    pub(super) fn apply(&self, c: &mut HostConfig) -> Result<()> {
        for (name, m) in &self.servers {
            let server = pinch_proto::runner_config::McpServerConfig {
                name: name.clone(),
                command: m.command.clone(),
                args: m.args.clone(),
                env: m.env.clone(),
                cwd: m.cwd.clone(),
                timeout_s: m.timeout_s,
            };
            let problems = server.problems();
            if !problems.is_empty() {
                bail!("[mcp.servers.{name}]: {}", problems.join("; "));
            }
            if m.groups.as_ref().is_some_and(|g| g.is_empty()) {
                bail!("[mcp.servers.{name}]: groups is empty; list agent group ids, or leave it out for all groups");
            }
            c.mcp_servers.push(pinch_host::config::McpServerEntry {
                server,
                groups: m.groups.clone(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::*;
    use super::super::*;
    #[allow(unused_imports)]
    use super::*;

    #[test]
    fn mcp_servers_from_the_file() {
        let toml = r#"
            [mcp.servers.files]
            command = "mcp-files"
            args = ["--root", "/workspace/agent"]
            env = { LOG = "1" }
            timeout_s = 30
            [mcp.servers.calc]
            command = "calc-mcp"
            groups = ["other"]
        "#;
        let f = file_of(toml);
        let c = resolve("/tmp/x".into(), &f, &scripted(), &Env::default()).unwrap();
        let main = c.mcp_servers_for("main", Vec::new());
        assert_eq!(main.len(), 1, "calc is for group `other` only: {main:?}");
        assert_eq!(main[0].name, "files");
        assert_eq!(main[0].args, ["--root", "/workspace/agent"]);
        assert_eq!(main[0].env.get("LOG").map(String::as_str), Some("1"));
        assert_eq!(main[0].timeout_s, Some(30));
        assert_eq!(c.mcp_servers_for("other", Vec::new()).len(), 2);
        // The group's own entry replaces the file's of the same name.
        let own = pinch_proto::runner_config::McpServerConfig {
            name: "files".into(),
            command: "other-files".into(),
            ..Default::default()
        };
        assert_eq!(
            c.mcp_servers_for("main", vec![own])[0].command,
            "other-files"
        );

        for (bad, expect) in [
            ("[mcp.servers.\"a.b\"]\ncommand = \"x\"\n", "[A-Za-z0-9_-]"),
            ("[mcp.servers.x]\ncommand = \"\"\n", "command is empty"),
            (
                "[mcp.servers.x]\ncommand = \"y\"\ngroups = []\n",
                "groups is empty",
            ),
        ] {
            let f = file_of(bad);
            let e = resolve("/tmp/x".into(), &f, &scripted(), &Env::default()).unwrap_err();
            assert!(e.to_string().contains(expect), "{bad}: {e}");
        }
        let typo: Result<FileConfig, _> = toml::Value::Table(
            "[mcp.servers.x]\ncommand = \"y\"\nargv = []\n"
                .parse()
                .unwrap(),
        )
        .try_into();
        assert!(typo.unwrap_err().to_string().contains("argv"));
    }
}
