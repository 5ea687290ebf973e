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
    pub paths: RunnerPaths,
    pub provider: ProviderSettings,
    /// IANA zone for prompts (`UTC` if unknown).
    pub timezone: String,
    pub timings: Timings,
    pub batch_size: u32,
    /// The credential proxy's socket as the runner sees it.
    #[serde(default)]
    pub proxy_socket: Option<PathBuf>,
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
        }
    }
}

impl RunnerConfig {
    /// Checks what serde cannot: returns every problem, named.
    pub fn validate(&self) -> Result<(), String> {
        let mut problems = Vec::new();
        if self.version != VERSION {
            problems.push(format!("version is {}, this runner reads {VERSION}", self.version));
        }
        for (name, v) in [("session_id", &self.session_id), ("runner_id", &self.runner_id), ("agent_group_id", &self.agent_group_id)] {
            if v.is_empty() || !v.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
                problems.push(format!("{name} {v:?} must be non-empty [A-Za-z0-9_-]"));
            }
        }
        if self.provider.kind.is_empty() {
            problems.push("provider.kind is empty".into());
        }
        if self.batch_size == 0 {
            problems.push("batch_size must be at least 1".into());
        }
        if self.timings.busy_timeout_ms < 2_000 {
            problems.push("timings.busy_timeout_ms must be at least 2000".into());
        }
        if self.timings.corruption_streak == 0 {
            problems.push("timings.corruption_streak must be at least 1".into());
        }
        for (name, p) in [("in_dir", &self.paths.in_dir), ("out_dir", &self.paths.out_dir)] {
            if !p.is_absolute() {
                problems.push(format!("paths.{name} {} must be absolute", p.display()));
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
    let ok = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut buf)).is_ok();
    if !ok {
        // Fall back to time and pid; uniqueness per process is what matters.
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
        let seed = t ^ ((std::process::id() as u128) << 64);
        for (i, b) in buf.iter_mut().enumerate() {
            *b = (seed >> ((i % 16) * 8)) as u8;
        }
    }
    buf.iter().map(|b| format!("{b:02x}")).collect()
}
