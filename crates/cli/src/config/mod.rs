//! Configuration: `pinch.toml` < env `PINCH__<SECTION>__<KEY>` < flags,
//! resolved once into the host's [`HostConfig`]. Unknown keys are errors
//! that name the key (a typo must not silently fall back to a default).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use pinch_host::sandbox::Choice;
use pinch_host::HostConfig;
use pinch_proto::runner_config::ProviderSettings;
use serde::Deserialize;

mod validate;
pub use validate::Origin;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Where the settings came from (set by [`load_file`]), for messages.
    #[serde(skip)]
    pub origin: Origin,
    pub data_dir: Option<PathBuf>,
    pub timezone: Option<String>,
    #[serde(default)]
    pub sandbox: SandboxSection,
    #[serde(default)]
    pub provider: ProviderSection,
    #[serde(default)]
    pub runner: RunnerSection,
    #[serde(default)]
    pub host: HostSection,
    #[serde(default)]
    pub stuck: StuckSection,
    #[serde(default)]
    pub proxy: ProxySection,
    #[serde(default)]
    pub mcp: McpSection,
    #[serde(default)]
    pub http: HttpSection,
    #[serde(default)]
    pub web: WebSection,
    /// `[webhooks.<name>]`: generic webhooks (`POST /hooks/<name>`).
    #[serde(default)]
    pub webhooks: std::collections::BTreeMap<String, WebhookSection>,
    /// `[telegram]`: the Telegram bot (on when the section is present).
    pub telegram: Option<TelegramSection>,
    /// `[discord]`: the Discord bot (on when the section is present).
    pub discord: Option<DiscordSection>,
    /// `[slack]`: the Slack app (on when the section is present).
    pub slack: Option<SlackSection>,
}

/// `[discord]`: a Discord bot (gateway + REST).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiscordSection {
    /// The variable holding the bot token (default `DISCORD_BOT_TOKEN`).
    pub token_env: Option<String>,
    /// The REST base (default `https://discord.com/api/v10`).
    pub base_url: Option<String>,
    /// Stall watchdog limit in seconds (default 120).
    pub stall_s: Option<f64>,
}

/// `[slack]`: a Slack app in Socket Mode.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlackSection {
    /// The variable holding the app-level token, `xapp-…` (default `SLACK_APP_TOKEN`).
    pub app_token_env: Option<String>,
    /// The variable holding the bot token, `xoxb-…` (default `SLACK_BOT_TOKEN`).
    pub bot_token_env: Option<String>,
    /// The Web API base (default `https://slack.com/api`).
    pub base_url: Option<String>,
    /// Stall watchdog limit in seconds (default 120).
    pub stall_s: Option<f64>,
}

/// `[telegram]`: a Telegram bot (long-poll unless `webhook_url` is set).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelegramSection {
    /// The variable holding the bot token (default `TELEGRAM_BOT_TOKEN`).
    pub token_env: Option<String>,
    /// The Bot API server (default `https://api.telegram.org`).
    pub base_url: Option<String>,
    /// Webhook mode: the public HTTPS URL that reaches `/telegram` on the
    /// `[http]` listener.
    pub webhook_url: Option<String>,
    /// The variable holding the webhook secret (default `TELEGRAM_WEBHOOK_SECRET`).
    pub webhook_secret_env: Option<String>,
    /// Stall watchdog limit in seconds (default 120).
    pub stall_s: Option<f64>,
}

/// `[http]`: the listener web chat and webhooks share (on only when one of
/// them is configured).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSection {
    /// `host:port`, default `127.0.0.1:7878` (loopback only). Any other
    /// address needs `allow_plaintext_remote = true` (pinch has no TLS).
    pub listen: Option<String>,
    /// Serve plain HTTP on a non-loopback `listen` anyway (default false).
    pub allow_plaintext_remote: Option<bool>,
    /// Names browsers may reach the listener by besides its address (a TLS
    /// reverse proxy's public name), accepted in `Host` and `Origin`.
    #[serde(default)]
    pub hosts: Vec<String>,
    /// Serve Prometheus metrics at `/metrics` (default true whenever the
    /// listener runs; `metrics = true` alone starts the listener).
    pub metrics: Option<bool>,
}

/// `[web]`: web chat.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebSection {
    pub enabled: Option<bool>,
}

/// `[webhooks.<name>]`: one generic webhook.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookSection {
    /// The HMAC-SHA256 key (≥ 16 bytes). Prefer `secret_env`.
    pub secret: Option<String>,
    /// The environment variable that holds the key.
    pub secret_env: Option<String>,
    /// Where the agent's replies are POSTed (JSON).
    pub callback_url: Option<String>,
    /// Largest body accepted, in bytes (default 1 MiB).
    pub max_body: Option<usize>,
}

/// `[proxy]`: what the per-session credential proxy lets out.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxySection {
    /// Hosts sandboxes may `CONNECT` to (TLS end to end, no credentials):
    /// `host`, `host:port`, `*.domain` (port 443 unless given). A list, or
    /// a comma-separated string (`PINCH__PROXY__EGRESS_ALLOW=a.com,b.org`).
    pub egress_allow: Option<HostList>,
    /// Connections one sandbox may hold open to its proxy (default 32).
    pub max_connections_per_session: Option<usize>,
    /// Connections all sandboxes together may hold (default 256; never
    /// more than a quarter of the host's open-file limit).
    pub max_connections: Option<usize>,
    /// Seconds from connecting to the end of the request head (default 10).
    pub header_timeout_s: Option<f64>,
    /// Seconds of client silence mid-body or mid-response (default 60).
    pub idle_timeout_s: Option<f64>,
    /// Seconds of upstream silence, and of an egress tunnel (default 300).
    pub upstream_timeout_s: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(
    untagged,
    expecting = "a list of hosts, e.g. egress_allow = [\"api.github.com\", \"*.pypi.org\"]"
)]
pub enum HostList {
    List(Vec<String>),
    Csv(String),
}

impl HostList {
    fn entries(&self) -> Vec<String> {
        match self {
            HostList::List(v) => v.clone(),
            HostList::Csv(s) => s
                .split(',')
                .map(str::trim)
                .filter(|x| !x.is_empty())
                .map(str::to_owned)
                .collect(),
        }
    }
}

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

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StuckSection {
    pub spawn_grace_s: Option<f64>,
    pub heartbeat_ceiling_s: Option<f64>,
    pub claim_stuck_s: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SandboxSection {
    pub backend: Option<String>,
    /// Per-process caps inside bwrap (defaults: 4096 MiB private memory,
    /// 1024 MiB files, 4 h CPU, 4096 open files).
    pub memory_mb: Option<u64>,
    pub file_size_mb: Option<u64>,
    pub cpu_s: Option<u64>,
    pub open_files: Option<u64>,
    pub pids: Option<u64>,
    /// Disk quota per session over its writable folders (default 2048 MiB).
    pub disk_mb: Option<u64>,
    /// A cgroup per sandbox for `pids` and total memory (default true).
    pub cgroup: Option<bool>,
    /// The mount allowlist (default: `mount-allowlist.toml` beside the
    /// default `pinch.toml`).
    pub mount_allowlist: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderSection {
    pub default: Option<String>,
    #[serde(default)]
    pub scripted: ScriptedSection,
    #[serde(default)]
    pub openai: UpstreamSection,
    #[serde(default)]
    pub anthropic: UpstreamSection,
    /// `[provider.cli]`: an agent CLI run in the sandbox as the engine.
    pub cli: Option<pinch_proto::runner_config::CliEngineSettings>,
    #[serde(default)]
    pub local: LocalSection,
}

/// The in-process GGUF model (`pinch model fetch` puts the default one in
/// `$PINCH_HOME/models/`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalSection {
    /// The GGUF file (default: `$PINCH_HOME/models/SmolLM2-135M-Instruct.Q4_1.gguf`).
    pub model: Option<PathBuf>,
    /// Cap on generated tokens per reply (default 512).
    pub max_tokens: Option<u32>,
    /// Context window in tokens, prompt plus reply (default 2048).
    pub context: Option<u32>,
}

/// An OpenAI-compatible or Anthropic endpoint the credential proxy forwards
/// to; its key comes from the environment (`OPENAI_API_KEY`,
/// `ANTHROPIC_API_KEY`), never from a file in the data dir.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamSection {
    /// `https://api.openai.com/v1`, `http://127.0.0.1:11434/v1`, …
    pub base_url: Option<String>,
    /// The model name to ask for.
    pub model: Option<String>,
    /// The paths under the route the credential proxy forwards (default:
    /// what the provider and its CLIs call, see `proxy::default_paths`).
    pub allow_paths: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScriptedSection {
    /// Path to a script file (TOML rules).
    pub script: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunnerSection {
    pub idle_exit_s: Option<f64>,
    pub poll_idle_s: Option<f64>,
    pub poll_active_s: Option<f64>,
    pub heartbeat_s: Option<f64>,
    pub busy_timeout_s: Option<f64>,
    pub batch_size: Option<u32>,
    pub corruption_streak: Option<u32>,
    /// Model calls per turn (agent loop step limit).
    pub max_steps: Option<u32>,
    pub log: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostSection {
    pub delivery_poll_s: Option<f64>,
    pub sweep_s: Option<f64>,
    pub max_concurrent_runners: Option<usize>,
    pub stop_grace_s: Option<f64>,
    /// Abnormal runner exits allowed per window before quarantine.
    pub crash_budget: Option<usize>,
    pub crash_window_s: Option<f64>,
    /// Respawn delays after the 1st, 2nd, … abnormal exit (last repeats).
    pub respawn_delays_s: Option<Vec<f64>>,
    /// Wait before booting after repeated unclean exits (default on).
    pub boot_breaker: Option<bool>,
    /// Retry backoff base for messages whose runner died: base · 2^tries.
    pub retry_base_s: Option<f64>,
    /// Online backup of pinch.db every this many seconds (0: only at a
    /// clean stop; default 900), keeping the newest `backup_keep` (8).
    pub backup_interval_s: Option<f64>,
    pub backup_keep: Option<usize>,
}

/// Flags that override the file (from `pinch host` / `pinch chat`).
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub provider: Option<String>,
    pub sandbox: Option<String>,
    pub script: Option<PathBuf>,
}

/// The default data dir: `$XDG_DATA_HOME/pinch` or `~/.local/share/pinch`.
pub fn default_data_dir() -> PathBuf {
    if let Some(x) = std::env::var_os("XDG_DATA_HOME").filter(|x| !x.is_empty()) {
        return PathBuf::from(x).join("pinch");
    }
    home().join(".local/share/pinch")
}

/// `~/.config/pinch/mount-allowlist.toml` (SPEC §7.8).
pub fn default_mount_allowlist() -> PathBuf {
    default_config_path().with_file_name("mount-allowlist.toml")
}

pub fn default_config_path() -> PathBuf {
    if let Some(x) = std::env::var_os("XDG_CONFIG_HOME").filter(|x| !x.is_empty()) {
        return PathBuf::from(x).join("pinch/pinch.toml");
    }
    home().join(".config/pinch/pinch.toml")
}

fn home() -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/"))
}

/// Reads the file (an explicit path must exist; the default may not) and
/// applies `PINCH__SECTION__KEY` environment overrides.
pub fn load_file(explicit: Option<&Path>) -> Result<FileConfig> {
    let (path, must_exist) = match explicit {
        Some(p) => (p.to_owned(), true),
        None => (default_config_path(), false),
    };
    let mut value: toml::Table = match std::fs::read_to_string(&path) {
        Ok(text) => text
            .parse::<toml::Table>()
            .with_context(|| format!("parsing {}", path.display()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !must_exist => toml::Table::new(),
        Err(e) => {
            return Err(e).with_context(|| format!("reading the config file {}", path.display()))
        }
    };
    let env = apply_env(&mut value, std::env::vars())?;
    let mut cfg: FileConfig = toml::Value::Table(value).try_into().with_context(|| {
        format!(
            "in the configuration ({} and PINCH__* variables)",
            path.display()
        )
    })?;
    cfg.origin = Origin {
        path,
        env: env.into_iter().collect(),
    };
    Ok(cfg)
}

/// `PINCH__RUNNER__IDLE_EXIT_S=5` → `runner.idle_exit_s = 5`. Returns the
/// keys set this way (`runner.idle_exit_s`) with the variable that set each.
pub fn apply_env(
    table: &mut toml::Table,
    vars: impl Iterator<Item = (String, String)>,
) -> Result<Vec<(String, String)>> {
    let mut set = Vec::new();
    for (k, v) in vars {
        let Some(rest) = k.strip_prefix("PINCH__") else {
            continue;
        };
        let parts: Vec<String> = rest.split("__").map(|p| p.to_ascii_lowercase()).collect();
        if parts.iter().any(|p| p.is_empty()) {
            bail!("environment variable {k} is malformed: use PINCH__<SECTION>__<KEY>");
        }
        let value = parse_scalar(&v);
        let mut t = &mut *table;
        for p in &parts[..parts.len() - 1] {
            let entry = t
                .entry(p.clone())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            t = match entry {
                toml::Value::Table(tt) => tt,
                _ => bail!("environment variable {k}: {p} is not a section"),
            };
        }
        t.insert(parts[parts.len() - 1].clone(), value);
        set.push((parts.join("."), k));
    }
    Ok(set)
}

fn parse_scalar(v: &str) -> toml::Value {
    if let Ok(i) = v.parse::<i64>() {
        return toml::Value::Integer(i);
    }
    if let Ok(f) = v.parse::<f64>() {
        return toml::Value::Float(f);
    }
    match v {
        "true" => toml::Value::Boolean(true),
        "false" => toml::Value::Boolean(false),
        _ => toml::Value::String(v.to_owned()),
    }
}

fn secs(name: &str, v: f64) -> Result<Duration> {
    if !(v.is_finite() && v >= 0.0) {
        bail!("{name} must be a non-negative number of seconds, got {v}");
    }
    Ok(Duration::from_secs_f64(v))
}

fn ms(name: &str, v: f64) -> Result<u64> {
    Ok(secs(name, v)?.as_millis() as u64)
}

/// The system's IANA zone name, `UTC` if unknown.
pub fn system_timezone() -> String {
    if let Ok(tz) = std::env::var("TZ") {
        let tz = tz.trim_start_matches(':');
        if !tz.is_empty() && jiff::tz::TimeZone::get(tz).is_ok() {
            return tz.to_owned();
        }
    }
    jiff::tz::TimeZone::system()
        .iana_name()
        .map(str::to_owned)
        .unwrap_or_else(|| "UTC".into())
}

/// Resolves everything into the host's configuration.
pub fn resolve(data_dir: PathBuf, file: &FileConfig, o: &Overrides) -> Result<HostConfig> {
    let problems = validate::problems(file);
    if !problems.is_empty() {
        bail!("{}", problems.join("\n"));
    }
    let mut c = HostConfig::new(data_dir);
    let backend = o
        .sandbox
        .clone()
        .or_else(|| file.sandbox.backend.clone())
        .unwrap_or_else(|| "auto".into());
    c.sandbox = backend
        .parse::<Choice>()
        .map_err(|e| anyhow::anyhow!("sandbox: {e}"))?;
    let d = pinch_host::sandbox::Limits::default();
    let sb = &file.sandbox;
    let positive = |name: &str, v: Option<u64>, default: u64| -> Result<u64> {
        match v {
            Some(0) => anyhow::bail!("[sandbox] {name} = 0 would stop every runner; give a positive number or leave it out for {default}"),
            Some(n) => Ok(n),
            None => Ok(default),
        }
    };
    c.sandbox_limits = pinch_host::sandbox::Limits {
        memory_mb: positive("memory_mb", sb.memory_mb, d.memory_mb)?,
        file_size_mb: positive("file_size_mb", sb.file_size_mb, d.file_size_mb)?,
        cpu_s: positive("cpu_s", sb.cpu_s, d.cpu_s)?,
        open_files: positive("open_files", sb.open_files, d.open_files)?.max(64),
        pids: positive("pids", sb.pids, d.pids)?.max(16),
        cgroup: sb.cgroup.unwrap_or(d.cgroup),
    };
    c.disk_quota_mb = positive("disk_mb", sb.disk_mb, c.disk_quota_mb)?;
    c.mount_allowlist = Some(
        sb.mount_allowlist
            .clone()
            .unwrap_or_else(default_mount_allowlist),
    );
    // Default order (SPEC §5.5): configured (flag, then file; a scripted
    // provider's script counts) → ANTHROPIC_API_KEY → OPENAI_BASE_URL /
    // OPENAI_API_KEY → the local model if its file is there → an error
    // saying how to get one. Never a silent fall back to `scripted`.
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let local_model = local_model_path(&c.data_dir, file)?;
    let provider = pick_provider(&Available {
        configured: o.provider.clone().or_else(|| file.provider.default.clone()),
        script: o.script.is_some() || file.provider.scripted.script.is_some(),
        anthropic_key: env("ANTHROPIC_API_KEY").is_some(),
        openai: env("OPENAI_BASE_URL").is_some() || env("OPENAI_API_KEY").is_some(),
        local_model: local_model.is_file(),
    });
    let Some(provider) = provider else {
        bail!(
            "no model to talk to: no provider is configured, neither ANTHROPIC_API_KEY nor OPENAI_BASE_URL/OPENAI_API_KEY is set, \
             and there is no local model at {}. Run `pinch model fetch` to download the small offline model \
             (SmolLM2-135M-Instruct, 98 MB), set ANTHROPIC_API_KEY or OPENAI_BASE_URL, or pass --provider scripted for the echo bot",
            local_model.display()
        );
    };
    if !matches!(
        provider.as_str(),
        "scripted" | "openai" | "anthropic" | "local" | "cli"
    ) {
        bail!("unknown provider {provider:?}: use `anthropic`, `openai` (any OpenAI-compatible endpoint), `local` (a GGUF model on this machine), `cli` (an agent CLI, with [provider.cli]) or `scripted`");
    }
    if provider == "local" && !local_model.is_file() {
        bail!(
            "the local model {} is missing: run `pinch model fetch` (or set provider.local.model to a GGUF file)",
            local_model.display()
        );
    }
    let cli = match (&file.provider.cli, provider.as_str()) {
        (Some(c), _) => {
            let p = c.problems();
            if !p.is_empty() {
                bail!("[provider.cli]: {}", p.join("; "));
            }
            Some(c.clone())
        }
        (None, "cli") => bail!("provider \"cli\" needs a [provider.cli] section with at least `command` (e.g. command = \"claude\", flavor = \"claude\")"),
        (None, _) => None,
    };
    // The model APIs an agent CLI of a known flavor talks to.
    let cli_flavor = cli
        .as_ref()
        .filter(|_| provider == "cli")
        .and_then(|c| c.flavor.clone())
        .unwrap_or_default();
    let openai_url = file
        .provider
        .openai
        .base_url
        .clone()
        .or_else(|| env("OPENAI_BASE_URL"))
        .or_else(|| {
            (provider == "openai" || cli_flavor == "codex")
                .then(|| "https://api.openai.com/v1".to_owned())
        });
    let anthropic_url = file
        .provider
        .anthropic
        .base_url
        .clone()
        .or_else(|| env("ANTHROPIC_BASE_URL"))
        .or_else(|| {
            (provider == "anthropic"
                || cli_flavor == "claude"
                || env("ANTHROPIC_API_KEY").is_some())
            .then(|| "https://api.anthropic.com".to_owned())
        });
    let script_path = o
        .script
        .clone()
        .or_else(|| file.provider.scripted.script.clone());
    let script = match script_path {
        Some(p) => {
            let text = std::fs::read_to_string(&p).with_context(|| {
                format!("reading the scripted provider's script {}", p.display())
            })?;
            pinch_providers_check(&text)
                .with_context(|| format!("in the script {}", p.display()))?;
            Some(text)
        }
        None => None,
    };
    let model = match provider.as_str() {
        "openai" => Some(
            file.provider
                .openai
                .model
                .clone()
                .or_else(|| env("OPENAI_MODEL"))
                .unwrap_or_else(|| "gpt-4o-mini".into()),
        ),
        "anthropic" => Some(
            file.provider
                .anthropic
                .model
                .clone()
                .or_else(|| env("ANTHROPIC_MODEL"))
                .unwrap_or_else(|| "claude-sonnet-4-5".into()),
        ),
        "cli" => file
            .provider
            .anthropic
            .model
            .clone()
            .filter(|_| cli_flavor == "claude")
            .or_else(|| {
                file.provider
                    .openai
                    .model
                    .clone()
                    .filter(|_| cli_flavor == "codex")
            }),
        // The host path; the host rewrites it to the sandbox's view.
        "local" => Some(local_model.to_string_lossy().into_owned()),
        _ => None,
    };
    let (max_tokens, context) = match provider.as_str() {
        "local" => {
            for (name, v) in [
                ("provider.local.max_tokens", file.provider.local.max_tokens),
                ("provider.local.context", file.provider.local.context),
            ] {
                if v == Some(0) {
                    bail!("{name} must be at least 1");
                }
            }
            (file.provider.local.max_tokens, file.provider.local.context)
        }
        _ => (None, None),
    };
    c.provider = ProviderSettings {
        kind: provider,
        script,
        model,
        max_tokens,
        context,
        cli,
    };
    for (name, url, key_var, header, prefix, section) in [
        (
            "openai",
            &openai_url,
            "OPENAI_API_KEY",
            "authorization",
            "Bearer ",
            &file.provider.openai,
        ),
        (
            "anthropic",
            &anthropic_url,
            "ANTHROPIC_API_KEY",
            "x-api-key",
            "",
            &file.provider.anthropic,
        ),
    ] {
        if let Some(url) = url {
            if !url.starts_with("http://") && !url.starts_with("https://") {
                bail!("provider.{name}.base_url {url:?} must start with http:// or https://");
            }
            let auth = std::env::var(key_var)
                .ok()
                .filter(|k| !k.is_empty())
                .map(|k| {
                    (
                        header.to_owned(),
                        pinch_host::proxy::Secret::new(format!("{prefix}{k}")),
                    )
                });
            let mut up = pinch_host::proxy::Upstream::new(name, url.trim_end_matches('/'), auth);
            if let Some(paths) = &section.allow_paths {
                for p in paths {
                    pinch_host::proxy::check_path(p)
                        .map_err(|e| anyhow::anyhow!("provider.{name}.{e}"))?;
                }
                up.paths = paths.clone();
            }
            c.proxy_upstreams.push(up);
        }
    }
    let px = &file.proxy;
    for (key, v) in [
        (
            "max_connections_per_session",
            px.max_connections_per_session,
        ),
        ("max_connections", px.max_connections),
    ] {
        if v == Some(0) {
            bail!("proxy.{key} must be at least 1");
        }
    }
    let lim = &mut c.proxy_limits;
    lim.per_session = px.max_connections_per_session.unwrap_or(lim.per_session);
    lim.total = px.max_connections.unwrap_or(lim.total);
    for (key, v, slot) in [
        (
            "proxy.header_timeout_s",
            px.header_timeout_s,
            &mut lim.header_timeout,
        ),
        (
            "proxy.idle_timeout_s",
            px.idle_timeout_s,
            &mut lim.idle_timeout,
        ),
        (
            "proxy.upstream_timeout_s",
            px.upstream_timeout_s,
            &mut lim.upstream_timeout,
        ),
    ] {
        if let Some(v) = v {
            if v == 0.0 {
                bail!("{key} must be more than 0 seconds");
            }
            *slot = secs(key, v)?;
        }
    }
    if let Some(list) = &file.proxy.egress_allow {
        let entries = list.entries();
        pinch_host::proxy::EgressAllow::parse(&entries)
            .map_err(|e| anyhow::anyhow!("proxy.{e}"))?;
        c.proxy_egress_allow = entries;
    }
    c.timezone = match &file.timezone {
        Some(tz) => {
            jiff::tz::TimeZone::get(tz).with_context(|| {
                format!("timezone {tz:?} is not a known IANA zone (e.g. Europe/Madrid)")
            })?;
            tz.clone()
        }
        None => system_timezone(),
    };
    let r = &file.runner;
    if let Some(v) = r.idle_exit_s {
        c.runner.idle_exit_ms = ms("runner.idle_exit_s", v)?;
    }
    if let Some(v) = r.poll_idle_s {
        c.runner.poll_idle_ms = ms("runner.poll_idle_s", v)?.max(1);
    }
    if let Some(v) = r.poll_active_s {
        c.runner.poll_active_ms = ms("runner.poll_active_s", v)?.max(1);
    }
    if let Some(v) = r.heartbeat_s {
        c.runner.heartbeat_ms = ms("runner.heartbeat_s", v)?.max(10);
    }
    if let Some(v) = r.busy_timeout_s {
        let b = ms("runner.busy_timeout_s", v)?;
        if b < 2000 {
            bail!("runner.busy_timeout_s must be at least 2 (shorter timeouts make reads fail as locked)");
        }
        c.runner.busy_timeout_ms = b;
    }
    if let Some(v) = r.batch_size {
        if v == 0 {
            bail!("runner.batch_size must be at least 1");
        }
        c.batch_size = v;
    }
    if let Some(v) = r.corruption_streak {
        if v == 0 {
            bail!("runner.corruption_streak must be at least 1");
        }
        c.runner.corruption_streak = v;
    }
    if let Some(v) = r.max_steps {
        if v == 0 {
            bail!("runner.max_steps must be at least 1 (it counts model calls per turn; the default is 50)");
        }
        c.runner.max_steps = v;
    }
    if let Some(v) = &r.log {
        c.runner_log = v.clone();
    }
    let h = &file.host;
    if let Some(v) = h.delivery_poll_s {
        c.delivery_poll = secs("host.delivery_poll_s", v)?.max(Duration::from_millis(10));
    }
    if let Some(v) = h.sweep_s {
        c.sweep_interval = secs("host.sweep_s", v)?.max(Duration::from_millis(100));
    }
    if let Some(v) = h.max_concurrent_runners {
        c.max_concurrent_runners = v;
    }
    if let Some(v) = h.stop_grace_s {
        c.stop_grace = secs("host.stop_grace_s", v)?;
    }
    if let Some(v) = h.crash_budget {
        c.budget.budget = v;
    }
    if let Some(v) = h.crash_window_s {
        c.budget.window = secs("host.crash_window_s", v)?;
    }
    if let Some(v) = &h.respawn_delays_s {
        if v.is_empty() {
            bail!("host.respawn_delays_s needs at least one delay");
        }
        c.budget.delays = v
            .iter()
            .map(|d| secs("host.respawn_delays_s", *d))
            .collect::<Result<_>>()?;
    }
    if let Some(v) = h.boot_breaker {
        c.boot_breaker = v;
    }
    if let Some(v) = h.retry_base_s {
        c.retry_base = secs("host.retry_base_s", v)?;
    }
    if let Some(v) = h.backup_interval_s {
        c.backup_every = secs("host.backup_interval_s", v)?;
        if !c.backup_every.is_zero() && c.backup_every < Duration::from_secs(10) {
            bail!("host.backup_interval_s must be 0 (back up only at a clean stop) or at least 10 seconds; the default is 900");
        }
    }
    if let Some(v) = h.backup_keep {
        if v == 0 {
            bail!("host.backup_keep must be at least 1 (how many backups of pinch.db to keep in <data>/backups; the default is 8)");
        }
        c.backup_keep = v;
    }
    for (name, m) in &file.mcp.servers {
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
    c.http = http_settings(file)?;
    c.platforms = platforms(file, &c.data_dir)?;
    let st = &file.stuck;
    if let Some(v) = st.spawn_grace_s {
        c.stuck.spawn_grace = secs("stuck.spawn_grace_s", v)?;
    }
    if let Some(v) = st.heartbeat_ceiling_s {
        c.stuck.heartbeat_ceiling = secs("stuck.heartbeat_ceiling_s", v)?;
    }
    if let Some(v) = st.claim_stuck_s {
        c.stuck.claim_stuck = secs("stuck.claim_stuck_s", v)?;
    }
    Ok(c)
}

/// The HTTP listener's settings: `None` unless web chat or a webhook is on.
fn http_settings(file: &FileConfig) -> Result<Option<pinch_host::config::HttpSettings>> {
    let mut hooks = Vec::new();
    for (name, h) in &file.webhooks {
        if !pinch_channels::webhook::valid_name(name) {
            bail!("[webhooks.{name}]: the name must be 1-64 letters, digits, '-' or '_' (it is the URL path /hooks/<name>)");
        }
        let secret = match (&h.secret, &h.secret_env) {
            (Some(_), Some(_)) => bail!("[webhooks.{name}]: give secret or secret_env, not both"),
            (Some(s), None) => s.clone(),
            (None, Some(var)) => std::env::var(var)
                .ok()
                .filter(|v| !v.is_empty())
                .with_context(|| format!("[webhooks.{name}]: secret_env names {var}, which is not set"))?,
            (None, None) => bail!("[webhooks.{name}]: needs secret_env = \"VARIABLE\" (or secret = \"…\"), the key senders sign bodies with"),
        };
        if secret.len() < 16 {
            bail!("[webhooks.{name}]: the secret must be at least 16 bytes (e.g. `openssl rand -hex 32`)");
        }
        if let Some(u) = &h.callback_url {
            if !u.starts_with("http://") && !u.starts_with("https://") {
                bail!("[webhooks.{name}]: callback_url must start with http:// or https://");
            }
        }
        let max_body = h
            .max_body
            .unwrap_or(pinch_channels::webhook::DEFAULT_MAX_BODY);
        if max_body == 0 {
            bail!("[webhooks.{name}]: max_body must be at least 1");
        }
        hooks.push(pinch_channels::webhook::HookConfig {
            name: name.clone(),
            secret,
            callback_url: h.callback_url.clone(),
            max_body,
        });
    }
    for h in &file.http.hosts {
        if h.trim().is_empty() || h.contains(['/', '@', ' ', '\\', ',']) {
            bail!("[http] hosts entry {h:?} must be a host name, optionally with :port (e.g. \"pinch.example.com\")");
        }
    }
    let web = file.web.enabled.unwrap_or(false);
    let metrics = file.http.metrics.unwrap_or(true);
    let telegram_hook = file
        .telegram
        .as_ref()
        .is_some_and(|t| t.webhook_url.is_some());
    if !web
        && hooks.is_empty()
        && !telegram_hook
        && file.http.listen.is_none()
        && file.http.metrics != Some(true)
    {
        return Ok(None);
    }
    let listen = file
        .http
        .listen
        .as_deref()
        .unwrap_or(pinch_host::config::HttpSettings::DEFAULT_LISTEN);
    let listen = listen.parse::<std::net::SocketAddr>().with_context(|| {
        format!("http.listen {listen:?} is not host:port (e.g. 127.0.0.1:7878)")
    })?;
    let settings = pinch_host::config::HttpSettings {
        listen,
        web,
        hooks,
        metrics,
        hosts: file.http.hosts.clone(),
        allow_plaintext_remote: file.http.allow_plaintext_remote.unwrap_or(false),
    };
    pinch_host::config::check_listen(&settings)?;
    Ok(Some(settings))
}

/// The variables the configured chat platforms read their secrets from:
/// `(section, key, variable)` (for `pinch doctor`, which checks only
/// whether each is set).
pub fn channel_envs(file: &FileConfig) -> Vec<(&'static str, &'static str, String)> {
    let mut out = Vec::new();
    if let Some(t) = &file.telegram {
        out.push((
            "telegram",
            "token_env",
            t.token_env
                .clone()
                .unwrap_or_else(|| "TELEGRAM_BOT_TOKEN".into()),
        ));
        if t.webhook_url.is_some() {
            out.push((
                "telegram",
                "webhook_secret_env",
                t.webhook_secret_env
                    .clone()
                    .unwrap_or_else(|| "TELEGRAM_WEBHOOK_SECRET".into()),
            ));
        }
    }
    if let Some(d) = &file.discord {
        out.push((
            "discord",
            "token_env",
            d.token_env
                .clone()
                .unwrap_or_else(|| "DISCORD_BOT_TOKEN".into()),
        ));
    }
    if let Some(sl) = &file.slack {
        out.push((
            "slack",
            "app_token_env",
            sl.app_token_env
                .clone()
                .unwrap_or_else(|| "SLACK_APP_TOKEN".into()),
        ));
        out.push((
            "slack",
            "bot_token_env",
            sl.bot_token_env
                .clone()
                .unwrap_or_else(|| "SLACK_BOT_TOKEN".into()),
        ));
    }
    out
}

/// The token in the variable a channel's `*_env` key names (or its default).
pub fn env_secret(section: &str, key: &str, var: &str) -> Result<String> {
    std::env::var(var).ok().filter(|v| !v.trim().is_empty()).map(|v| v.trim().to_owned()).with_context(|| {
        format!("[{section}]: the environment variable {var} (named by {key}) is not set; export it, or name another with {key} = \"VAR\"")
    })
}

fn base_url(section: &str, url: Option<&str>, default: &str) -> Result<String> {
    let u = url.unwrap_or(default);
    if !u.starts_with("http://") && !u.starts_with("https://") {
        bail!("[{section}]: base_url {u:?} must start with http:// or https://");
    }
    Ok(u.trim_end_matches('/').to_owned())
}

fn stall(section: &str, v: Option<f64>) -> Result<Duration> {
    match v {
        None => Ok(Duration::from_secs(120)),
        Some(v) => {
            let d = secs(&format!("{section}.stall_s"), v)?;
            if d < Duration::from_millis(100) {
                bail!("{section}.stall_s must be at least 0.1");
            }
            Ok(d)
        }
    }
}

/// The chat platforms configured in the file, as adapter factories.
/// Tokens are read here (and only held by the adapters): never logged,
/// never in `runner.json`.
fn platforms(
    file: &FileConfig,
    data_dir: &Path,
) -> Result<Vec<pinch_host::config::PlatformFactory>> {
    let mut out: Vec<pinch_host::config::PlatformFactory> = Vec::new();
    if let Some(t) = &file.telegram {
        use pinch_channels::telegram::{TelegramChannel, TelegramConfig};
        let var = t.token_env.as_deref().unwrap_or("TELEGRAM_BOT_TOKEN");
        let mut cfg = TelegramConfig::new(env_secret("telegram", "token_env", var)?);
        cfg.base_url = base_url(
            "telegram",
            t.base_url.as_deref(),
            pinch_channels::telegram::DEFAULT_BASE_URL,
        )?;
        cfg.stall = stall("telegram", t.stall_s)?;
        if let Some(url) = &t.webhook_url {
            if !url.starts_with("https://") && !url.starts_with("http://") {
                bail!("[telegram]: webhook_url {url:?} must be an https:// URL that reaches /telegram on pinch's [http] listener");
            }
            let var = t
                .webhook_secret_env
                .as_deref()
                .unwrap_or("TELEGRAM_WEBHOOK_SECRET");
            let secret = env_secret("telegram", "webhook_secret_env", var)?;
            if secret.len() < 16
                || !secret
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            {
                bail!("[telegram]: the webhook secret in {var} must be 16-256 of A-Z a-z 0-9 _ - (e.g. `openssl rand -hex 32`)");
            }
            cfg.webhook = Some((url.clone(), pinch_channels::platform::Secret(secret)));
        }
        let token = cfg.token.0.clone();
        if token.contains('/') || !token.contains(':') {
            bail!("[telegram]: the token in {var} does not look like a bot token (<digits>:<letters>; get one from @BotFather)");
        }
        out.push(std::sync::Arc::new(move |tx| {
            let ch = TelegramChannel::start(cfg.clone(), tx)?;
            let router = cfg.webhook.is_some().then(|| ch.router());
            Ok((ch as std::sync::Arc<dyn pinch_channels::Channel>, router))
        }));
    }
    if let Some(d) = &file.discord {
        use pinch_channels::discord::{DiscordChannel, DiscordConfig};
        let var = d.token_env.as_deref().unwrap_or("DISCORD_BOT_TOKEN");
        let mut cfg = DiscordConfig::new(env_secret("discord", "token_env", var)?);
        cfg.base_url = base_url(
            "discord",
            d.base_url.as_deref(),
            pinch_channels::discord::DEFAULT_BASE_URL,
        )?;
        cfg.stall = stall("discord", d.stall_s)?;
        cfg.cursor_file = Some(data_dir.join("channels").join("discord-cursors.json"));
        let dir = data_dir.join("channels");
        out.push(std::sync::Arc::new(move |tx| {
            std::fs::create_dir_all(&dir)
                .map_err(|e| format!("creating {}: {e}", dir.display()))?;
            let ch = DiscordChannel::start(cfg.clone(), tx)?;
            Ok((ch as std::sync::Arc<dyn pinch_channels::Channel>, None))
        }));
    }
    if let Some(sl) = &file.slack {
        use pinch_channels::slack::{SlackChannel, SlackConfig};
        let app_var = sl.app_token_env.as_deref().unwrap_or("SLACK_APP_TOKEN");
        let bot_var = sl.bot_token_env.as_deref().unwrap_or("SLACK_BOT_TOKEN");
        let app = env_secret("slack", "app_token_env", app_var)?;
        let bot = env_secret("slack", "bot_token_env", bot_var)?;
        if !app.starts_with("xapp-") {
            bail!("[slack]: {app_var} must hold the app-level token (xapp-…, with the connections:write scope), not a bot or user token");
        }
        let mut cfg = SlackConfig::new(app, bot);
        cfg.base_url = base_url(
            "slack",
            sl.base_url.as_deref(),
            pinch_channels::slack::DEFAULT_BASE_URL,
        )?;
        cfg.stall = stall("slack", sl.stall_s)?;
        out.push(std::sync::Arc::new(move |tx| {
            let ch = SlackChannel::start(cfg.clone(), tx)?;
            Ok((ch as std::sync::Arc<dyn pinch_channels::Channel>, None))
        }));
    }
    Ok(out)
}

/// What the default provider choice looks at.
#[derive(Debug, Default)]
pub struct Available {
    pub configured: Option<String>,
    pub script: bool,
    pub anthropic_key: bool,
    pub openai: bool,
    pub local_model: bool,
}

/// SPEC §5.5's order; `None` = nothing to talk to.
pub fn pick_provider(a: &Available) -> Option<String> {
    a.configured
        .clone()
        .or_else(|| a.script.then(|| "scripted".to_owned()))
        .or_else(|| a.anthropic_key.then(|| "anthropic".to_owned()))
        .or_else(|| a.openai.then(|| "openai".to_owned()))
        .or_else(|| a.local_model.then(|| "local".to_owned()))
}

/// The local model file: configured (relative paths from the current
/// directory), else the default file in `<data dir>/models/`.
pub fn local_model_path(data_dir: &Path, file: &FileConfig) -> Result<PathBuf> {
    match &file.provider.local.model {
        Some(p) if p.is_absolute() => Ok(p.clone()),
        Some(p) => Ok(std::env::current_dir()
            .context("reading the current directory")?
            .join(p)),
        None => Ok(models_dir(data_dir).join(pinch_local::DEFAULT_MODEL_FILE)),
    }
}

/// `<data dir>/models/`.
pub fn models_dir(data_dir: &Path) -> PathBuf {
    pinch_host::paths::DataDir::new(data_dir).models_dir()
}

/// Validates a scripted provider script here, so a bad one is a startup
/// error the user sees, not a runner exiting 78 later.
fn pinch_providers_check(text: &str) -> Result<()> {
    pinch_providers::scripted::Scripted::from_script(Some(text))
        .map(|_| ())
        .map_err(|e| anyhow::anyhow!(e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_overrides_and_unknown_keys() {
        let mut t: toml::Table = "[runner]\nidle_exit_s = 600\n".parse().unwrap();
        apply_env(
            &mut t,
            vec![
                ("PINCH__RUNNER__IDLE_EXIT_S".to_string(), "5".to_string()),
                ("OTHER".into(), "x".into()),
            ]
            .into_iter(),
        )
        .unwrap();
        let cfg: FileConfig = toml::Value::Table(t).try_into().unwrap();
        assert_eq!(cfg.runner.idle_exit_s, Some(5.0), "env beats the file");
        let c = resolve(
            "/tmp/x".into(),
            &cfg,
            &Overrides {
                sandbox: Some("process".into()),
                provider: Some("scripted".into()),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(c.runner.idle_exit_ms, 5000);

        let bad: Result<FileConfig, _> =
            toml::Value::Table("[runner]\nidle_exit = 5\n".parse().unwrap()).try_into();
        let msg = bad.unwrap_err().to_string();
        assert!(msg.contains("idle_exit"), "{msg}");
    }

    #[test]
    fn backup_settings() {
        let resolve_str = |text: &str| {
            let cfg: FileConfig = toml::Value::Table(text.parse().unwrap())
                .try_into()
                .unwrap();
            resolve(
                "/tmp/x".into(),
                &cfg,
                &Overrides {
                    sandbox: Some("process".into()),
                    provider: Some("scripted".into()),
                    ..Default::default()
                },
            )
        };
        let c = resolve_str("").unwrap();
        assert_eq!(c.backup_every, Duration::from_secs(900));
        assert_eq!(c.backup_keep, 8);
        let c = resolve_str("[host]\nbackup_interval_s = 0\nbackup_keep = 2\n").unwrap();
        assert_eq!((c.backup_every, c.backup_keep), (Duration::ZERO, 2));
        let e = resolve_str("[host]\nbackup_keep = 0\n").unwrap_err();
        assert!(format!("{e}").contains("host.backup_keep"), "{e}");
        let e = resolve_str("[host]\nbackup_interval_s = 1\n").unwrap_err();
        assert!(format!("{e}").contains("host.backup_interval_s"), "{e}");
    }

    #[test]
    fn platform_sections() {
        let parse =
            |t: &str| -> FileConfig { toml::Value::Table(t.parse().unwrap()).try_into().unwrap() };
        let o = Overrides {
            sandbox: Some("process".into()),
            provider: Some("scripted".into()),
            ..Default::default()
        };
        // Variables only this test sets (each test runs in its own process under nextest).
        std::env::set_var("PINCH_CFGTEST_TG", "123:abc");
        std::env::set_var("PINCH_CFGTEST_BAD_TG", "not-a-token");
        std::env::set_var("PINCH_CFGTEST_DC", "dc-token");
        std::env::set_var("PINCH_CFGTEST_XAPP", "xapp-1-x");
        std::env::set_var("PINCH_CFGTEST_XOXB", "xoxb-1-x");
        std::env::set_var("PINCH_CFGTEST_HOOK", "0123456789abcdef0123");
        let good = "[telegram]\ntoken_env = \"PINCH_CFGTEST_TG\"\n[discord]\ntoken_env = \"PINCH_CFGTEST_DC\"\nstall_s = 5\n\
                    [slack]\napp_token_env = \"PINCH_CFGTEST_XAPP\"\nbot_token_env = \"PINCH_CFGTEST_XOXB\"\n";
        let c = resolve("/tmp/x".into(), &parse(good), &o).unwrap();
        assert_eq!(c.platforms.len(), 3);
        assert!(c.http.is_none(), "long-poll and sockets need no listener");
        let envs = channel_envs(&parse(good));
        assert_eq!(
            envs.iter().map(|e| e.2.as_str()).collect::<Vec<_>>(),
            [
                "PINCH_CFGTEST_TG",
                "PINCH_CFGTEST_DC",
                "PINCH_CFGTEST_XAPP",
                "PINCH_CFGTEST_XOXB"
            ]
        );
        // Telegram's webhook mode turns the listener on.
        let hook = "[telegram]\ntoken_env = \"PINCH_CFGTEST_TG\"\nwebhook_url = \"https://x.example/telegram\"\nwebhook_secret_env = \"PINCH_CFGTEST_HOOK\"\n";
        assert!(resolve("/tmp/x".into(), &parse(hook), &o)
            .unwrap()
            .http
            .is_some());
        for (toml, want) in [
            ("[telegram]\ntoken_env = \"PINCH_CFGTEST_UNSET\"\n", "PINCH_CFGTEST_UNSET (named by token_env) is not set"),
            ("[telegram]\ntoken_env = \"PINCH_CFGTEST_BAD_TG\"\n", "does not look like a bot token"),
            ("[telegram]\ntoken_env = \"PINCH_CFGTEST_TG\"\nwebhook_url = \"https://x/telegram\"\nwebhook_secret_env = \"PINCH_CFGTEST_TG\"\n", "webhook secret"),
            ("[discord]\ntoken_env = \"PINCH_CFGTEST_DC\"\nbase_url = \"ftp://x\"\n", "must start with http"),
            ("[discord]\ntoken_env = \"PINCH_CFGTEST_DC\"\nstall_s = 0\n", "stall_s"),
            ("[slack]\napp_token_env = \"PINCH_CFGTEST_XOXB\"\nbot_token_env = \"PINCH_CFGTEST_XOXB\"\n", "app-level token (xapp-"),
            ("[slack]\napp_token_env = \"PINCH_CFGTEST_XAPP\"\nbot_token_env = \"PINCH_CFGTEST_UNSET\"\n", "bot_token_env"),
        ] {
            let e = format!("{:#}", resolve("/tmp/x".into(), &parse(toml), &o).err().unwrap_or_else(|| panic!("accepted: {toml}")));
            assert!(e.contains(want), "{toml} → {e}");
            assert!(!e.contains("123:abc") && !e.contains("dc-token") && !e.contains("xoxb-1-x"), "a secret in an error: {e}");
        }
    }

    #[test]
    fn http_web_and_webhooks() {
        let parse =
            |t: &str| -> FileConfig { toml::Value::Table(t.parse().unwrap()).try_into().unwrap() };
        let o = Overrides {
            sandbox: Some("process".into()),
            provider: Some("scripted".into()),
            ..Default::default()
        };
        // Off unless something needs it; an explicit `listen` turns it on
        // (for /metrics).
        assert!(resolve("/tmp/x".into(), &parse(""), &o)
            .unwrap()
            .http
            .is_none());
        assert!(resolve(
            "/tmp/x".into(),
            &parse("[http]\nlisten = \"127.0.0.1:9\"\n"),
            &o
        )
        .unwrap()
        .http
        .is_some_and(|h| h.metrics && !h.web));
        let c = resolve("/tmp/x".into(), &parse("[web]\nenabled = true\n"), &o).unwrap();
        let h = c.http.unwrap();
        assert!(h.web && h.hooks.is_empty());
        assert_eq!(
            h.listen.to_string(),
            "127.0.0.1:7878",
            "loopback by default"
        );
        let c = resolve(
            "/tmp/x".into(),
            &parse("[http]\nlisten = \"127.0.0.1:8123\"\n[webhooks.ci]\nsecret = \"0123456789abcdef\"\ncallback_url = \"https://x.example/cb\"\n"),
            &o,
        )
        .unwrap();
        let h = c.http.unwrap();
        assert!(!h.web);
        assert_eq!(
            (
                h.listen.port(),
                h.hooks[0].name.as_str(),
                h.hooks[0].max_body
            ),
            (8123, "ci", 1 << 20)
        );
        assert!(
            !format!("{:?}", h.hooks[0]).contains("0123456789abcdef"),
            "the secret is not in Debug output"
        );
        for (toml, says) in [
            ("[webhooks.ci]\n", "secret_env"),
            ("[webhooks.ci]\nsecret = \"short\"\n", "at least 16 bytes"),
            (
                "[webhooks.ci]\nsecret = \"0123456789abcdef\"\nsecret_env = \"X\"\n",
                "not both",
            ),
            (
                "[webhooks.ci]\nsecret_env = \"PINCH_TEST_SURELY_UNSET_VAR\"\n",
                "not set",
            ),
            (
                "[webhooks.\"a/b\"]\nsecret = \"0123456789abcdef\"\n",
                "letters, digits",
            ),
            (
                "[webhooks.ci]\nsecret = \"0123456789abcdef\"\ncallback_url = \"ftp://x\"\n",
                "http://",
            ),
            (
                "[web]\nenabled = true\n[http]\nlisten = \"localhost\"\n",
                "host:port",
            ),
        ] {
            let e = resolve("/tmp/x".into(), &parse(toml), &o)
                .unwrap_err()
                .to_string();
            assert!(e.contains(says), "{toml}: {e}");
        }
        let bad: Result<FileConfig, _> =
            toml::Value::Table("[webhooks.ci]\nsecrett = \"x\"\n".parse().unwrap()).try_into();
        assert!(bad.unwrap_err().to_string().contains("secrett"));
    }

    #[test]
    fn a_non_loopback_listener_needs_the_plaintext_override() {
        let parse =
            |t: &str| -> FileConfig { toml::Value::Table(t.parse().unwrap()).try_into().unwrap() };
        let o = Overrides {
            sandbox: Some("process".into()),
            provider: Some("scripted".into()),
            ..Default::default()
        };
        for listen in ["0.0.0.0:7878", "192.168.1.10:7878", "[::]:7878"] {
            let e = resolve(
                "/tmp/x".into(),
                &parse(&format!(
                    "[web]\nenabled = true\n[http]\nlisten = \"{listen}\"\n"
                )),
                &o,
            )
            .unwrap_err();
            let e = format!("{e:#}");
            assert!(
                e.contains(listen)
                    && e.contains("allow_plaintext_remote = true")
                    && e.contains("no TLS"),
                "{e}"
            );
        }
        let toml = "[web]\nenabled = true\n[http]\nlisten = \"0.0.0.0:7878\"\nallow_plaintext_remote = true\nhosts = [\"pinch.example.com\"]\n";
        let h = resolve("/tmp/x".into(), &parse(toml), &o)
            .unwrap()
            .http
            .unwrap();
        assert!(h.allow_plaintext_remote && h.hosts == ["pinch.example.com"]);
        assert!(
            resolve(
                "/tmp/x".into(),
                &parse("[http]\nlisten = \"[::1]:7878\"\n"),
                &o
            )
            .is_ok(),
            "IPv6 loopback is local"
        );
        let e = resolve("/tmp/x".into(), &parse("[http]\nhosts = [\"a/b\"]\n"), &o)
            .unwrap_err()
            .to_string();
        assert!(e.contains("[http] hosts"), "{e}");
    }

    #[test]
    fn default_provider_order() {
        let all = Available {
            configured: None,
            script: false,
            anthropic_key: true,
            openai: true,
            local_model: true,
        };
        assert_eq!(pick_provider(&all).as_deref(), Some("anthropic"));
        assert_eq!(
            pick_provider(&Available {
                configured: Some("local".into()),
                ..all
            })
            .as_deref(),
            Some("local")
        );
        assert_eq!(
            pick_provider(&Available {
                openai: true,
                local_model: true,
                ..Default::default()
            })
            .as_deref(),
            Some("openai")
        );
        assert_eq!(
            pick_provider(&Available {
                local_model: true,
                ..Default::default()
            })
            .as_deref(),
            Some("local")
        );
        assert_eq!(
            pick_provider(&Available {
                script: true,
                anthropic_key: true,
                ..Default::default()
            })
            .as_deref(),
            Some("scripted")
        );
        assert_eq!(
            pick_provider(&Available::default()),
            None,
            "no silent fall back to the echo bot"
        );
    }

    #[test]
    fn local_model_settings_reach_the_runner_config() {
        let tmp = tempfile::tempdir().unwrap();
        let models = tmp.path().join("models");
        std::fs::create_dir_all(&models).unwrap();
        std::fs::write(models.join(pinch_local::DEFAULT_MODEL_FILE), b"GGUF").unwrap();
        let mut f = FileConfig::default();
        f.provider.local.max_tokens = Some(64);
        let c = resolve(
            tmp.path().into(),
            &f,
            &Overrides {
                provider: Some("local".into()),
                sandbox: Some("process".into()),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(c.provider.kind, "local");
        assert_eq!(
            c.provider.model.as_deref(),
            Some(
                models
                    .join(pinch_local::DEFAULT_MODEL_FILE)
                    .to_str()
                    .unwrap()
            )
        );
        assert_eq!(
            (c.provider.max_tokens, c.provider.context),
            (Some(64), None)
        );
        f.provider.local.context = Some(0);
        let e = resolve(
            tmp.path().into(),
            &f,
            &Overrides {
                provider: Some("local".into()),
                sandbox: Some("process".into()),
                ..Default::default()
            },
        )
        .unwrap_err();
        assert!(e.to_string().contains("provider.local.context"), "{e}");
    }

    #[test]
    fn bad_values_name_the_fix() {
        let f = FileConfig {
            runner: RunnerSection {
                busy_timeout_s: Some(0.5),
                ..Default::default()
            },
            ..Default::default()
        };
        let e = resolve(
            "/tmp/x".into(),
            &f,
            &Overrides {
                sandbox: Some("process".into()),
                provider: Some("scripted".into()),
                ..Default::default()
            },
        )
        .unwrap_err();
        assert!(
            e.to_string().contains("runner.busy_timeout_s = 0.5")
                && e.to_string().contains("from 2 to"),
            "{e}"
        );
        let e = resolve(
            "/tmp/x".into(),
            &FileConfig::default(),
            &Overrides {
                sandbox: Some("vm".into()),
                ..Default::default()
            },
        )
        .unwrap_err();
        assert!(
            format!("{e:#}").contains("expected auto, bwrap, docker or process"),
            "{e:#}"
        );
        let e = resolve(
            "/tmp/x".into(),
            &FileConfig::default(),
            &Overrides {
                provider: Some("local".into()),
                sandbox: Some("process".into()),
                ..Default::default()
            },
        )
        .unwrap_err();
        assert!(
            e.to_string().contains("pinch model fetch")
                && e.to_string().contains("/tmp/x/models/SmolLM2"),
            "{e}"
        );
        let e = resolve(
            "/tmp/x".into(),
            &FileConfig::default(),
            &Overrides {
                provider: Some("llama".into()),
                sandbox: Some("process".into()),
                ..Default::default()
            },
        )
        .unwrap_err();
        assert!(e.to_string().contains("unknown provider"), "{e}");
        let c = resolve(
            "/tmp/x".into(),
            &FileConfig::default(),
            &Overrides {
                provider: Some("openai".into()),
                sandbox: Some("process".into()),
                ..Default::default()
            },
        )
        .unwrap();
        assert!(
            c.proxy_upstreams.iter().any(|u| u.name == "openai"),
            "openai gets a proxy route"
        );
        assert!(
            !format!("{c:?}").contains("sk-"),
            "no key in the resolved config's Debug"
        );
    }

    #[test]
    fn cli_engine_from_the_file() {
        let toml = r#"
            [provider]
            default = "cli"
            [provider.cli]
            command = "claude"
            flavor = "claude"
            env = { DISABLE_TELEMETRY = "1" }
            timeout_s = 600
            [provider.anthropic]
            model = "claude-sonnet-4-5"
        "#;
        let f: FileConfig = toml::Value::Table(toml.parse().unwrap())
            .try_into()
            .unwrap();
        let c = resolve(
            "/tmp/x".into(),
            &f,
            &Overrides {
                sandbox: Some("process".into()),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(c.provider.kind, "cli");
        let cli = c.provider.cli.clone().unwrap();
        assert_eq!(
            (cli.command.as_str(), cli.flavor.as_deref(), cli.timeout_s),
            ("claude", Some("claude"), Some(600))
        );
        assert_eq!(
            c.provider.model.as_deref(),
            Some("claude-sonnet-4-5"),
            "a claude CLI is told the anthropic model"
        );
        assert!(
            c.proxy_upstreams.iter().any(|u| u.name == "anthropic"),
            "a claude CLI gets the anthropic route"
        );

        let f: FileConfig = toml::Value::Table("[provider]\ndefault = \"cli\"\n".parse().unwrap())
            .try_into()
            .unwrap();
        let e = resolve(
            "/tmp/x".into(),
            &f,
            &Overrides {
                sandbox: Some("process".into()),
                ..Default::default()
            },
        )
        .unwrap_err();
        assert!(
            e.to_string().contains("needs a [provider.cli] section"),
            "{e}"
        );
        let f: FileConfig = toml::Value::Table(
            "[provider.cli]\ncommand = \"x\"\nflavor = \"gemini\"\n"
                .parse()
                .unwrap(),
        )
        .try_into()
        .unwrap();
        let e = resolve(
            "/tmp/x".into(),
            &f,
            &Overrides {
                provider: Some("cli".into()),
                sandbox: Some("process".into()),
                ..Default::default()
            },
        )
        .unwrap_err();
        assert!(
            e.to_string().contains("flavor \"gemini\" is unknown"),
            "{e}"
        );
        let bad: Result<FileConfig, _> = toml::Value::Table(
            "[provider.cli]\ncommand = \"x\"\nargz = []\n"
                .parse()
                .unwrap(),
        )
        .try_into();
        assert!(bad.unwrap_err().to_string().contains("argz"));
    }

    #[test]
    fn egress_allow_from_file_and_env() {
        let mut t: toml::Table =
            "[proxy]\negress_allow = [\"api.github.com\", \"*.pypi.org:443\"]\n"
                .parse()
                .unwrap();
        let f: FileConfig = toml::Value::Table(t.clone()).try_into().unwrap();
        let c = resolve(
            "/tmp/x".into(),
            &f,
            &Overrides {
                sandbox: Some("process".into()),
                provider: Some("scripted".into()),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(c.proxy_egress_allow, ["api.github.com", "*.pypi.org:443"]);
        apply_env(
            &mut t,
            vec![(
                "PINCH__PROXY__EGRESS_ALLOW".to_string(),
                "a.example.com, b.example.org:8443".to_string(),
            )]
            .into_iter(),
        )
        .unwrap();
        let mut f: FileConfig = toml::Value::Table(t).try_into().unwrap();
        f.origin.env.insert(
            "proxy.egress_allow".into(),
            "PINCH__PROXY__EGRESS_ALLOW".into(),
        );
        let c = resolve(
            "/tmp/x".into(),
            &f,
            &Overrides {
                sandbox: Some("process".into()),
                provider: Some("scripted".into()),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(
            c.proxy_egress_allow,
            ["a.example.com", "b.example.org:8443"],
            "env beats the file"
        );
        let f: FileConfig = toml::Value::Table(
            "[proxy]\negress_allow = [\"x.com:https\"]\n"
                .parse()
                .unwrap(),
        )
        .try_into()
        .unwrap();
        let e = resolve(
            "/tmp/x".into(),
            &f,
            &Overrides {
                sandbox: Some("process".into()),
                provider: Some("scripted".into()),
                ..Default::default()
            },
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .contains("proxy.egress_allow entry \"x.com:https\""),
            "{e}"
        );
    }

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
        let f: FileConfig = toml::Value::Table(toml.parse().unwrap())
            .try_into()
            .unwrap();
        let c = resolve(
            "/tmp/x".into(),
            &f,
            &Overrides {
                sandbox: Some("process".into()),
                provider: Some("scripted".into()),
                ..Default::default()
            },
        )
        .unwrap();
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
            let f: FileConfig = toml::Value::Table(bad.parse().unwrap()).try_into().unwrap();
            let e = resolve(
                "/tmp/x".into(),
                &f,
                &Overrides {
                    sandbox: Some("process".into()),
                    provider: Some("scripted".into()),
                    ..Default::default()
                },
            )
            .unwrap_err();
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
