//! The host's resolved configuration (the CLI resolves file, env and flags
//! into this once; the host never reads the environment itself).

use std::path::PathBuf;
use std::time::Duration;

use pinch_proto::runner_config::{ProviderSettings, Timings};

use crate::sandbox::Choice;

/// Maps a session's `in/` directory to the directory the sandbox binds at
/// `/pinch/in`, called at every spawn on the main loop (keep it quick). An
/// error fails that spawn (it counts against the crash budget). Fault-
/// injection tests use it to put a FUSE view between the file and the
/// sandbox; the provider owns the views' lifetime.
pub type InDirView =
    std::sync::Arc<dyn Fn(&std::path::Path) -> std::io::Result<PathBuf> + Send + Sync>;

#[derive(Clone)]
pub struct HostConfig {
    pub data_dir: PathBuf,
    pub sandbox: Choice,
    /// The owner's mount allowlist (SPEC §7.8); `None` or a missing file:
    /// no extra folders. Its folder is never mounted.
    pub mount_allowlist: Option<PathBuf>,
    /// Resource limits for bwrap runners (`[sandbox]` memory_mb, …).
    pub sandbox_limits: crate::sandbox::Limits,
    /// Disk quota per session over its writable folders, MiB (`[sandbox]
    /// disk_mb`; a group's `sandbox.disk_mb` overrides it).
    pub disk_quota_mb: u64,
    /// How often a live runner's folders are measured against the quota.
    pub disk_check: Duration,
    pub provider: ProviderSettings,
    /// IANA zone for prompts.
    pub timezone: String,
    pub runner: Timings,
    pub batch_size: u32,
    /// The `pinch` executable runners are started from (the running one).
    pub runner_exe: PathBuf,
    /// The owner's login (`cli:<login>`).
    pub login: String,
    /// Poke deliveries of live sessions this often (inotify fallback).
    pub delivery_poll: Duration,
    /// The sweep: wake sessions with due work and no runner.
    pub sweep_interval: Duration,
    pub max_concurrent_runners: usize,
    /// Grace between asking a runner to stop and killing it.
    pub stop_grace: Duration,
    /// Log level handed to runners (`PINCH_LOG`).
    pub runner_log: String,
    /// Crash budget and respawn delays (SPEC §6.4).
    pub budget: pinch_policy::budget::BudgetConfig,
    /// Stuck-runner deadlines (SPEC §6.2).
    pub stuck: pinch_policy::sweep::StuckLimits,
    /// The boot circuit breaker (SPEC §6.5). Tests that kill hosts on
    /// purpose may turn it off.
    pub boot_breaker: bool,
    /// Online backups of `pinch.db` into `backups/` this often (zero: only
    /// at a clean shutdown), keeping the newest `backup_keep` (issue 15).
    pub backup_every: Duration,
    /// How often the dashboard's charts sample the counters (default a
    /// minute; tests make it short).
    pub metrics_sample: Duration,
    pub backup_keep: usize,
    /// Retry backoff base for orphaned claims: `base · 2^tries` (SPEC §6.3).
    pub retry_base: Duration,
    /// What the sandbox sees as `in/` (default: the session's own `in/`).
    pub in_dir_view: Option<InDirView>,
    /// Model APIs the credential proxy forwards to, with their keys.
    pub proxy_upstreams: Vec<crate::proxy::Upstream>,
    /// Extra trusted roots (DER) for `https://` upstreams.
    pub proxy_extra_roots: Vec<Vec<u8>>,
    /// Hosts every sandbox may `CONNECT` to (see `proxy::EgressAllow` for
    /// the forms); an agent group's `agent_configs.egress_allow` adds more.
    pub proxy_egress_allow: Vec<String>,
    /// Connection caps and timeouts of the credential proxy (`[proxy]`).
    pub proxy_limits: crate::proxy::Limits,
    /// The secret store's key file (`[secrets] key_file`; default
    /// `~/.config/pinch/secrets.key`, see `secrets::key_path`).
    pub secrets_key_file: Option<std::path::PathBuf>,
    /// How long a request waits for the owner's approval of a secret's use.
    pub secrets_approval_wait: Duration,
    /// The store as the channels read it (their OAuth token cache is the
    /// proxy's too); made by the configuration loader when a channel may
    /// need it, else by the host.
    pub channel_secrets: Option<std::sync::Arc<crate::secrets::channels::ForChannels>>,
    /// What agents' `web_fetch` may do (`[web_fetch]`; decision 0042).
    pub web: pinch_web::Settings,
    /// MCP servers from the configuration file (`[mcp.servers.<name>]`).
    /// A group's own `agent_configs.mcp_servers` entry of the same name
    /// replaces one of these.
    pub mcp_servers: Vec<McpServerEntry>,
    /// mention-sticky: a group session active this recently keeps engaging
    /// without a mention (SPEC §4 step 2f).
    pub sticky_window: Duration,
    /// Approval cards expire after this (SPEC §6.6: 24 h).
    pub approval_ttl: Duration,
    /// More channel adapters, built once the host's event queue exists
    /// (tests and benchmarks add a recording fake; the platform adapters
    /// come from configuration).
    pub extra_channels: Vec<ChannelFactory>,
    /// The chat platforms from configuration (Telegram, Discord, Slack):
    /// built once the event queue exists; one may contribute routes to the
    /// shared HTTP listener (Telegram's webhook mode), which then must be
    /// configured ([`HostConfig::http`]).
    pub platforms: Vec<PlatformFactory>,
    /// The HTTP listener shared by web chat and webhooks (SPEC §9.2);
    /// `None` (the default): no listener.
    pub http: Option<HttpSettings>,
}

/// What the shared HTTP listener serves.
#[derive(Clone, Debug)]
pub struct HttpSettings {
    /// Default `127.0.0.1:7878`; port 0 picks a free one
    /// ([`crate::HostHandle::http_addr`] says which).
    pub listen: std::net::SocketAddr,
    /// Serve web chat (`/`, `/ws`, uploads and downloads), behind the token
    /// in `<data dir>/web-token`.
    pub web: bool,
    /// Generic webhooks (`POST /hooks/<name>`).
    pub hooks: Vec<pinch_channels::webhook::HookConfig>,
    /// Prometheus metrics at `GET /metrics` (no token on a loopback
    /// listener; the web token as a bearer token otherwise).
    pub metrics: bool,
    /// Names besides the bound address a browser may use in `Host`/`Origin`
    /// (`[http] hosts`: a reverse proxy's public name).
    pub hosts: Vec<String>,
    /// `[http] allow_plaintext_remote`: serve plain HTTP on a non-loopback
    /// address anyway (pinch has no TLS of its own).
    pub allow_plaintext_remote: bool,
}

impl HttpSettings {
    pub const DEFAULT_LISTEN: &'static str = "127.0.0.1:7878";

    /// Loopback, web chat, no hooks, metrics on: `pinch chat --web`'s listener.
    pub fn local(listen: std::net::SocketAddr, web: bool) -> HttpSettings {
        HttpSettings {
            listen,
            web,
            hooks: Vec::new(),
            metrics: true,
            hosts: Vec::new(),
            allow_plaintext_remote: false,
        }
    }
}

/// A non-loopback listener without the explicit override, refused.
#[derive(Debug, thiserror::Error)]
#[error(
    "[http] listen = \"{0}\" is reachable from other machines, but pinch serves plain HTTP (it has no TLS of its own): \
     sign-in cookies, chats and webhook payloads would cross the network in clear. Keep listen on 127.0.0.1 and put a TLS \
     reverse proxy in front (add its public name to [http] hosts), or, on a network you trust, set \
     [http] allow_plaintext_remote = true in pinch.toml"
)]
pub struct PlaintextRemote(pub std::net::SocketAddr);

/// Refuses a non-loopback `listen` unless `allow_plaintext_remote`.
pub fn check_listen(h: &HttpSettings) -> Result<(), PlaintextRemote> {
    if h.listen.ip().is_loopback() || h.allow_plaintext_remote {
        Ok(())
    } else {
        Err(PlaintextRemote(h.listen))
    }
}

/// Builds an adapter that sends its events into the host's queue.
pub type ChannelFactory = std::sync::Arc<
    dyn Fn(
            tokio::sync::mpsc::Sender<pinch_channels::ChannelEvent>,
        ) -> std::sync::Arc<dyn pinch_channels::Channel>
        + Send
        + Sync,
>;

/// Builds a platform adapter (starting its connection) and, if it serves
/// HTTP, its routes. An `Err` (a clear message) stops the host's start.
pub type PlatformFactory = std::sync::Arc<
    dyn Fn(
            tokio::sync::mpsc::Sender<pinch_channels::ChannelEvent>,
        ) -> Result<
            (
                std::sync::Arc<dyn pinch_channels::Channel>,
                Option<pinch_channels::http::Router>,
            ),
            String,
        > + Send
        + Sync,
>;

/// A configured MCP server and the agent groups that get it.
#[derive(Clone, Debug, PartialEq)]
pub struct McpServerEntry {
    pub server: pinch_proto::runner_config::McpServerConfig,
    /// Agent group ids; `None` = every group.
    pub groups: Option<Vec<String>>,
}

impl HostConfig {
    /// The MCP servers a group's runner gets: the file's entries for it,
    /// then the group's own (same name = replaced), in name order.
    pub fn mcp_servers_for(
        &self,
        ag_id: &str,
        own: Vec<pinch_proto::runner_config::McpServerConfig>,
    ) -> Vec<pinch_proto::runner_config::McpServerConfig> {
        let mut by_name = std::collections::BTreeMap::new();
        for e in &self.mcp_servers {
            if e.groups
                .as_ref()
                .is_none_or(|g| g.iter().any(|x| x == ag_id))
            {
                by_name.insert(e.server.name.clone(), e.server.clone());
            }
        }
        for s in own {
            by_name.insert(s.name.clone(), s);
        }
        by_name.into_values().collect()
    }
}

impl std::fmt::Debug for HostConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostConfig")
            .field("data_dir", &self.data_dir)
            .field("sandbox", &self.sandbox)
            .field("provider", &self.provider.kind)
            .field("timezone", &self.timezone)
            .finish_non_exhaustive()
    }
}

impl HostConfig {
    /// Defaults for a data dir; the CLI overrides from file, env and flags.
    pub fn new(data_dir: PathBuf) -> HostConfig {
        HostConfig {
            data_dir,
            sandbox: Choice::Auto,
            sandbox_limits: crate::sandbox::Limits::default(),
            disk_quota_mb: 2048,
            disk_check: Duration::from_secs(5),
            mount_allowlist: None,
            provider: ProviderSettings {
                kind: "scripted".into(),
                ..Default::default()
            },
            timezone: "UTC".into(),
            runner: Timings::default(),
            batch_size: 10,
            runner_exe: std::env::current_exe().unwrap_or_else(|_| PathBuf::from("pinch")),
            login: login(),
            delivery_poll: Duration::from_secs(1),
            sweep_interval: Duration::from_secs(60),
            max_concurrent_runners: 8,
            stop_grace: Duration::from_secs(5),
            runner_log: "info".into(),
            budget: Default::default(),
            stuck: Default::default(),
            boot_breaker: true,
            backup_every: crate::backup::DEFAULT_EVERY,
            metrics_sample: crate::metrics_history::DEFAULT_EVERY,
            backup_keep: crate::backup::DEFAULT_KEEP,
            retry_base: Duration::from_millis(pinch_policy::retry::BASE_BACKOFF_MS as u64),
            in_dir_view: None,
            proxy_upstreams: Vec::new(),
            proxy_extra_roots: Vec::new(),
            proxy_egress_allow: Vec::new(),
            proxy_limits: crate::proxy::Limits::default(),
            secrets_key_file: None,
            secrets_approval_wait: crate::proxy::APPROVAL_WAIT,
            channel_secrets: None,
            web: pinch_web::Settings::default(),
            mcp_servers: Vec::new(),
            sticky_window: Duration::from_secs(600),
            approval_ttl: Duration::from_secs(24 * 3600),
            extra_channels: Vec::new(),
            platforms: Vec::new(),
            http: None,
        }
    }
}

/// The invoking user's login: `$USER`, `$LOGNAME`, the passwd entry, or `owner`.
pub fn login() -> String {
    for v in ["USER", "LOGNAME"] {
        if let Ok(u) = std::env::var(v) {
            if !u.is_empty() {
                return u;
            }
        }
    }
    // SAFETY: getpwuid returns a pointer into static storage or NULL; we copy
    // the name out at once, at startup, before other threads use it.
    unsafe {
        let pw = libc::getpwuid(libc::getuid());
        if !pw.is_null() && !(*pw).pw_name.is_null() {
            if let Ok(s) = std::ffi::CStr::from_ptr((*pw).pw_name).to_str() {
                return s.to_owned();
            }
        }
    }
    "owner".into()
}
