//! `in/runner.json`: everything a runner needs, written by the host before
//! each spawn and validated by the runner (invalid → exit 78).
//!
//! Paths are as the runner sees them (inside the sandbox for `bwrap`, host
//! paths for `process`). It never carries a secret: credentials stay in the
//! host and reach APIs through the proxy.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Bumped when a field changes meaning; additions keep the version.
pub const VERSION: u32 = 1;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunnerConfig {
    pub version: u32,
    pub session_id: String,
    pub runner_id: String,
    pub agent_group_id: String,
    pub agent_name: String,
    /// The name the assistant goes by (`agent_configs.assistant_name`),
    /// when the operator gave one; the system prompt's identity.
    #[serde(default)]
    pub assistant_name: Option<String>,
    pub paths: RunnerPaths,
    pub provider: ProviderSettings,
    /// IANA zone for prompts (`UTC` if unknown).
    pub timezone: String,
    pub timings: Timings,
    pub batch_size: u32,
    /// The credential proxy's socket as the runner sees it.
    #[serde(default)]
    pub proxy_socket: Option<PathBuf>,
    /// Which of the host's web tools the agent group is offered (decision
    /// 0042); the host refuses the others anyway.
    #[serde(default)]
    pub web: WebTools,
    /// External stdio MCP servers the agent may use (SPEC §5.6), started by
    /// the runner inside its sandbox.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mcp_servers: Vec<McpServerConfig>,
    /// The owner's credentials this agent group may use (decision 0050):
    /// names and hosts only. The proxy adds the secret to requests to
    /// those hosts; the value never reaches the sandbox.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub credentials: Vec<Credential>,
}

/// A credential the agent may use: its name and the hosts it is sent to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Credential {
    pub name: String,
    pub hosts: Vec<String>,
}

/// One external MCP server spoken to over stdio (SPEC §5.6): plain data, so
/// it can travel in `runner.json` and `agent_configs.mcp_servers`; the
/// `pinch-mcp` crate starts it. Never carries a secret (`env` is plain
/// configuration, visible in the sandbox).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct McpServerConfig {
    /// Prefix of its tools (`<name>__<tool>`): `[A-Za-z0-9_-]`, no `__`.
    pub name: String,
    /// The program (a path, or a name looked up in `PATH`).
    pub command: String,
    #[serde(default)]
    pub args: Vec<String>,
    /// Added to the runner's (already clean) environment.
    #[serde(default)]
    pub env: std::collections::BTreeMap<String, String>,
    /// Working directory (default: the runner's, the agent's workspace).
    #[serde(default)]
    pub cwd: Option<PathBuf>,
    /// Seconds a start or a call may take (default [`MCP_DEFAULT_TIMEOUT_S`]).
    #[serde(default)]
    pub timeout_s: Option<u64>,
}

/// Default per-call (and start-up) timeout of an MCP server.
pub const MCP_DEFAULT_TIMEOUT_S: u64 = 60;
/// Longest timeout a server may configure (the shell tool's ceiling).
pub const MCP_MAX_TIMEOUT_S: u64 = 3600;

impl McpServerConfig {
    /// Every problem with this entry, named (empty = fine).
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        let n = &self.name;
        if n.is_empty()
            || !n
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            || n.contains("__")
        {
            p.push(format!("mcp server name {n:?} must be non-empty [A-Za-z0-9_-] without \"__\" (it prefixes the tool names)"));
        }
        if self.command.trim().is_empty() {
            p.push(format!("mcp server {n:?}: command is empty (give the program to run, e.g. command = \"npx\")"));
        }
        if let Some(t) = self.timeout_s {
            if t == 0 || t > MCP_MAX_TIMEOUT_S {
                p.push(format!(
                    "mcp server {n:?}: timeout_s must be 1..={MCP_MAX_TIMEOUT_S}, got {t}"
                ));
            }
        }
        for k in self.env.keys() {
            if k.is_empty() || k.contains('=') || k.contains('\0') {
                p.push(format!(
                    "mcp server {n:?}: env key {k:?} is not a valid variable name"
                ));
            }
        }
        p
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunnerPaths {
    pub in_dir: PathBuf,
    pub out_dir: PathBuf,
    pub inbox_dir: PathBuf,
    pub outbox_dir: PathBuf,
    pub workspace_dir: PathBuf,
    /// Instructions shared by all agents (`groups/global`), read-only.
    #[serde(default)]
    pub global_dir: Option<PathBuf>,
    /// Extra folders the owner allowed (SPEC §7.8), by name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra: Vec<ExtraMount>,
}

/// One extra folder as the runner sees it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExtraMount {
    pub name: String,
    pub path: PathBuf,
    pub read_write: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderSettings {
    pub kind: String,
    /// Scripted provider: the script's TOML text.
    #[serde(default)]
    pub script: Option<String>,
    /// The model name (HTTP providers) or, for `local`, the GGUF file as
    /// the runner sees it.
    #[serde(default)]
    pub model: Option<String>,
    /// Cap on tokens generated per step (`local`; `None` = the provider's default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    /// Context window in tokens (`local`; `None` = the provider's default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<u32>,
    /// `kind = "cli"`: the external agent CLI run as the engine (SPEC §5.5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cli: Option<CliEngineSettings>,
    /// The model takes images (`None`: the provider's default: Anthropic
    /// yes, OpenAI-compatible no unless `[provider.openai] vision = true`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vision: Option<bool>,
}

/// The CLI engine: an agent CLI (Claude Code, Codex, or anything that reads
/// a prompt on stdin and prints its answer) run in the sandbox for each
/// turn, with pinch's tools offered to it over MCP (`pinch runner mcp`).
/// Plain configuration: visible in the sandbox, never a secret.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CliEngineSettings {
    /// The program as the sandbox sees it (a path, or a name in `PATH`).
    pub command: String,
    /// Arguments, with placeholders `{mcp_config}`, `{mcp_socket}`,
    /// `{pinch}`, `{system_prompt_file}`, `{system_prompt}`, `{model}`.
    /// Absent: the flavor's defaults.
    #[serde(default)]
    pub args: Option<Vec<String>>,
    /// Added to the CLI's environment (after pinch's own variables).
    #[serde(default)]
    pub env: std::collections::BTreeMap<String, String>,
    /// `claude`, `codex` or `generic` (default): default arguments and
    /// whether the CLI resumes its own conversation.
    #[serde(default)]
    pub flavor: Option<String>,
    /// Seconds one turn of the CLI may take (default
    /// [`CLI_DEFAULT_TIMEOUT_S`]); then its process group is killed.
    #[serde(default)]
    pub timeout_s: Option<u64>,
}

/// Default time one CLI-engine turn may take.
pub const CLI_DEFAULT_TIMEOUT_S: u64 = 1800;
/// The flavors the CLI engine knows.
pub const CLI_FLAVORS: [&str; 3] = ["claude", "codex", "generic"];

impl CliEngineSettings {
    /// Every problem with these settings, named (empty = fine).
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        if self.command.trim().is_empty() {
            p.push("provider.cli.command is empty (give the agent CLI to run, e.g. command = \"claude\")".into());
        }
        if let Some(f) = &self.flavor {
            if !CLI_FLAVORS.contains(&f.as_str()) {
                p.push(format!(
                    "provider.cli.flavor {f:?} is unknown: use one of {}",
                    CLI_FLAVORS.join(", ")
                ));
            }
        }
        if let Some(t) = self.timeout_s {
            if t == 0 || t > 24 * 3600 {
                p.push(format!("provider.cli.timeout_s must be 1..=86400, got {t}"));
            }
        }
        for k in self.env.keys() {
            if k.is_empty() || k.contains('=') || k.contains('\0') {
                p.push(format!(
                    "provider.cli.env key {k:?} is not a valid variable name"
                ));
            }
        }
        p
    }
}

/// Runner timings (SPEC §6.6). Milliseconds so tests can shrink them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Timings {
    pub poll_idle_ms: u64,
    pub poll_active_ms: u64,
    pub idle_exit_ms: u64,
    pub heartbeat_ms: u64,
    pub busy_timeout_ms: u64,
    pub corruption_streak: u32,
    pub corruption_pacing_ms: u64,
    pub exit_flush_ms: u64,
    pub poll_failure_ceiling_ms: u64,
    /// Provider retries (SPEC §5.5): full jitter between `base` and 60 s.
    #[serde(default = "default_retry_base_ms")]
    pub provider_retry_base_ms: u64,
    #[serde(default = "default_provider_tries")]
    pub provider_tries: u32,
    /// Agent loop (SPEC §5.5): model calls per turn before the turn ends
    /// with what text there is.
    #[serde(default = "default_max_steps")]
    pub max_steps: u32,
    /// How long one model call may go without a sign of life: the runner
    /// declares each call in flight with this bound (as a tool declares its
    /// timeout), so the host's claim-stuck check waits for it. The host
    /// sets it from the credential proxy's limits (decision 0040).
    #[serde(default = "default_model_wait_ms")]
    pub model_wait_ms: u64,
    /// How long one `web_fetch` may take through the host: the runner
    /// waits this long for the answer and declares the call in flight with
    /// it. The host sets it from `[web_fetch] timeout_s` (decision 0042).
    #[serde(default = "default_web_fetch_ms")]
    pub web_fetch_ms: u64,
    /// How long transcribing one voice note may take through the host
    /// (its turn at the endpoint and the endpoint's answer). The host sets
    /// it from `[voice] timeout_s` (decision 0046).
    #[serde(default = "default_voice_ms")]
    pub voice_ms: u64,
}

/// The host's web tools offered to the agent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebTools {
    pub fetch: bool,
    pub search: bool,
    /// The host transcribes voice notes (`[voice] url` is configured).
    #[serde(default)]
    pub voice: bool,
    /// The host speaks voice replies (`[voice] speech_url`): `send_voice`.
    #[serde(default)]
    pub speech: bool,
}

impl Default for WebTools {
    /// What the host offers without settings: fetch on, no search backend.
    fn default() -> Self {
        WebTools {
            fetch: true,
            search: false,
            voice: false,
            speech: false,
        }
    }
}

fn default_web_fetch_ms() -> u64 {
    // The host's default fetch timeout (30 s) and a margin for the proxy.
    40_000
}

fn default_voice_ms() -> u64 {
    // Waiting for a turn at the endpoint and the default timeout (120 s
    // each), and a margin.
    250_000
}

fn default_model_wait_ms() -> u64 {
    // Three waits of the proxy's default `upstream_timeout` (300 s).
    900_000
}

fn default_max_steps() -> u32 {
    50
}

fn default_retry_base_ms() -> u64 {
    1_000
}

fn default_provider_tries() -> u32 {
    5
}

impl Default for Timings {
    fn default() -> Self {
        Timings {
            poll_idle_ms: 1_000,
            poll_active_ms: 250,
            idle_exit_ms: 10 * 60 * 1_000,
            heartbeat_ms: 5_000,
            busy_timeout_ms: 5_000,
            // = pinch_policy::streak::{CORRUPTION_STREAK_EXIT, CORRUPTION_PACING,
            // EXIT_FLUSH, POLL_FAILURE_CEILING} (checked by a runner test).
            corruption_streak: 10,
            corruption_pacing_ms: 500,
            exit_flush_ms: 100,
            poll_failure_ceiling_ms: 60_000,
            provider_retry_base_ms: default_retry_base_ms(),
            provider_tries: default_provider_tries(),
            max_steps: default_max_steps(),
            model_wait_ms: default_model_wait_ms(),
            web_fetch_ms: default_web_fetch_ms(),
            voice_ms: default_voice_ms(),
        }
    }
}

impl RunnerConfig {
    /// Checks what serde cannot: returns every problem, named.
    pub fn validate(&self) -> Result<(), String> {
        let mut problems = Vec::new();
        if self.version != VERSION {
            problems.push(format!(
                "version is {}, this runner reads {VERSION}",
                self.version
            ));
        }
        for (name, v) in [
            ("session_id", &self.session_id),
            ("runner_id", &self.runner_id),
            ("agent_group_id", &self.agent_group_id),
        ] {
            if v.is_empty()
                || !v
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                problems.push(format!("{name} {v:?} must be non-empty [A-Za-z0-9_-]"));
            }
        }
        if self.provider.kind.is_empty() {
            problems.push("provider.kind is empty".into());
        }
        match (&self.provider.cli, self.provider.kind.as_str()) {
            (Some(c), _) => problems.extend(c.problems()),
            (None, "cli") => problems.push(
                "provider.kind is \"cli\" but provider.cli is missing (give at least its command)"
                    .into(),
            ),
            (None, _) => {}
        }
        if self.batch_size == 0 {
            problems.push("batch_size must be at least 1".into());
        }
        if self.timings.busy_timeout_ms < 2_000 {
            problems.push("timings.busy_timeout_ms must be at least 2000".into());
        }
        if self.timings.max_steps == 0 {
            problems.push("timings.max_steps must be at least 1".into());
        }
        if self.timings.corruption_streak == 0 {
            problems.push("timings.corruption_streak must be at least 1".into());
        }
        for (name, p) in [
            ("in_dir", &self.paths.in_dir),
            ("out_dir", &self.paths.out_dir),
        ] {
            if !p.is_absolute() {
                problems.push(format!("paths.{name} {} must be absolute", p.display()));
            }
        }
        let mut seen = std::collections::BTreeSet::new();
        for m in &self.mcp_servers {
            problems.extend(m.problems());
            if !seen.insert(m.name.as_str()) {
                problems.push(format!("mcp server {:?} is listed twice", m.name));
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("; "))
        }
    }
}

/// Random lowercase hex from the OS (ids that must not collide).
pub fn random_hex(bytes: usize) -> String {
    use std::io::Read;
    let mut buf = vec![0u8; bytes];
    let ok = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .is_ok();
    if !ok {
        // Fall back to time and pid; uniqueness per process is what matters.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        let seed = t ^ ((std::process::id() as u128) << 64);
        for (i, b) in buf.iter_mut().enumerate() {
            *b = (seed >> ((i % 16) * 8)) as u8;
        }
    }
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(name: &str) -> McpServerConfig {
        McpServerConfig {
            name: name.into(),
            command: "srv".into(),
            ..Default::default()
        }
    }

    #[test]
    fn mcp_servers_are_validated_and_optional_in_json() {
        assert!(server("files").problems().is_empty());
        assert!(server("a__b").problems()[0].contains("without \"__\""));
        assert!(server("a b").problems()[0].contains("[A-Za-z0-9_-]"));
        let mut s = server("x");
        s.command = " ".into();
        s.timeout_s = Some(0);
        let p = s.problems();
        assert!(p.iter().any(|m| m.contains("command is empty")), "{p:?}");
        assert!(p.iter().any(|m| m.contains("timeout_s must be")), "{p:?}");

        // Older runner.json files (no key) still parse; the key round-trips.
        let json =
            r#"{"name":"fs","command":"mcp-fs","args":["--ro"],"env":{"A":"1"},"timeout_s":5}"#;
        let s: McpServerConfig = serde_json::from_str(json).unwrap();
        assert_eq!(s.args, vec!["--ro"]);
        assert_eq!(s.env.get("A").map(String::as_str), Some("1"));
        let rc = RunnerConfig {
            version: VERSION,
            session_id: "s1".into(),
            runner_id: "r1".into(),
            agent_group_id: "main".into(),
            agent_name: "main".into(),
            assistant_name: None,
            paths: RunnerPaths {
                in_dir: "/pinch/in".into(),
                out_dir: "/pinch/out".into(),
                inbox_dir: "/i".into(),
                outbox_dir: "/o".into(),
                workspace_dir: "/w".into(),
                global_dir: None,
                extra: vec![],
            },
            provider: ProviderSettings {
                kind: "scripted".into(),
                ..Default::default()
            },
            timezone: "UTC".into(),
            timings: Timings::default(),
            batch_size: 10,
            proxy_socket: None,
            web: WebTools::default(),
            mcp_servers: vec![server("fs"), server("fs"), server("a b")],
            credentials: Vec::new(),
        };
        let e = rc.validate().unwrap_err();
        assert!(
            e.contains("\"fs\" is listed twice") && e.contains("\"a b\""),
            "{e}"
        );
        let json = serde_json::to_string(&RunnerConfig {
            mcp_servers: vec![],
            ..rc
        })
        .unwrap();
        assert!(!json.contains("mcp_servers"), "empty list left out: {json}");
        let back: RunnerConfig = serde_json::from_str(&json).unwrap();
        assert!(back.mcp_servers.is_empty());

        let bad =
            serde_json::from_str::<McpServerConfig>(r#"{"name":"fs","command":"x","cmd":"y"}"#)
                .unwrap_err();
        assert!(bad.to_string().contains("cmd"), "{bad}");
    }
}
