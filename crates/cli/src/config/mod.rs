//! Configuration: `pinch.toml` < env `PINCH__<SECTION>__<KEY>` < flags,
//! resolved once into the host's [`HostConfig`]. Unknown keys are errors
//! that name the key (a typo must not silently fall back to a default).
//!
//! Resolution is a function of the file, an [`Env`] passed in (the binary
//! passes [`Env::process`]) and the flags: nothing here reads the process
//! environment. One module per section holds its keys, their floors
//! (checked by [`validate`]) and how they land in [`HostConfig`].

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use pinch_host::HostConfig;
use serde::Deserialize;

mod channels;
mod env;
mod host;
mod http;
mod mcp;
mod provider;
mod proxy;
mod runner;
mod sandbox;
mod stuck;
mod validate;
mod voice;
mod web_fetch;
mod web_search;

pub use channels::{channel_envs, channel_probes};
pub use env::Env;
pub use provider::{local_model_path, models_dir};

use env::apply_env;
use host::HostSection;
use http::{HttpSection, WebSection, WebhookSection};
use mcp::McpSection;
use provider::ProviderSection;
use proxy::ProxySection;
use runner::RunnerSection;
use sandbox::SandboxSection;
use stuck::StuckSection;
use validate::Origin;
use voice::VoiceSection;
use web_fetch::WebFetchSection;
use web_search::WebSearchSection;

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
    /// `[secrets]`: where the secret store's key is (decision 0050).
    #[serde(default)]
    pub secrets: SecretsSection,
    #[serde(default)]
    pub http: HttpSection,
    #[serde(default)]
    pub web: WebSection,
    /// `[web_fetch]`: what agents' `web_fetch` may reach and how much.
    #[serde(default)]
    pub web_fetch: WebFetchSection,
    /// `[web_search]`: the search backend `web_search` asks.
    #[serde(default)]
    pub web_search: WebSearchSection,
    /// `[voice]`: the transcription endpoint for voice notes.
    #[serde(default)]
    pub voice: VoiceSection,
    /// `[webhooks.<name>]`: generic webhooks (`POST /hooks/<name>`).
    #[serde(default)]
    pub webhooks: std::collections::BTreeMap<String, WebhookSection>,
    /// The chat platforms' sections (`[telegram]`, `[discord]`, `[slack]`):
    /// every kind registered in [`pinch_channels::KINDS`] whose section is
    /// present, in registry order. Each channel's module reads its own
    /// section (set by [`from_table`], not by serde).
    #[serde(skip)]
    pub channels: Vec<pinch_channels::Configured>,
}

/// `[secrets]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretsSection {
    /// The key file (default `~/.config/pinch/secrets.key`; never inside
    /// the data dir). `PINCH_SECRETS_KEY_FILE` overrides it.
    pub key_file: Option<PathBuf>,
    /// Seconds a request waits for the owner's approval (default 120).
    pub approval_wait_s: Option<u64>,
}

/// Flags that override the file (from `pinch host` / `pinch chat`).
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub provider: Option<String>,
    pub sandbox: Option<String>,
    pub script: Option<PathBuf>,
}

/// The default data dir: `$XDG_DATA_HOME/pinch` or `~/.local/share/pinch`.
pub fn default_data_dir(env: &Env) -> PathBuf {
    if let Some(x) = env.non_empty("XDG_DATA_HOME") {
        return PathBuf::from(x).join("pinch");
    }
    home(env).join(".local/share/pinch")
}

/// `~/.config/pinch/mount-allowlist.toml` (SPEC §7.8).
pub fn default_mount_allowlist(env: &Env) -> PathBuf {
    default_config_path(env).with_file_name("mount-allowlist.toml")
}

pub fn default_config_path(env: &Env) -> PathBuf {
    if let Some(x) = env.non_empty("XDG_CONFIG_HOME") {
        return PathBuf::from(x).join("pinch/pinch.toml");
    }
    home(env).join(".config/pinch/pinch.toml")
}

fn home(env: &Env) -> PathBuf {
    env.get("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/"))
}

/// Reads the file (an explicit path must exist; the default may not) and
/// applies `PINCH__SECTION__KEY` overrides from `env`.
pub fn load_file(explicit: Option<&Path>, env: &Env) -> Result<FileConfig> {
    let (path, must_exist) = match explicit {
        Some(p) => (p.to_owned(), true),
        None => (default_config_path(env), false),
    };
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => Some(text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !must_exist => None,
        Err(e) => {
            return Err(e).with_context(|| format!("reading the config file {}", path.display()))
        }
    };
    parse(path, text.as_deref(), env)
}

/// The file's text (`None`: no file) with `env`'s overrides, as settings.
pub fn parse(path: PathBuf, text: Option<&str>, env: &Env) -> Result<FileConfig> {
    let mut value: toml::Table = match text {
        Some(text) => text
            .parse::<toml::Table>()
            .with_context(|| format!("parsing {}", path.display()))?,
        None => toml::Table::new(),
    };
    let set = apply_env(&mut value, env)?;
    let mut cfg = from_table(value).with_context(|| {
        format!(
            "in the configuration ({} and PINCH__* variables)",
            path.display()
        )
    })?;
    cfg.origin = Origin {
        path,
        env: set.into_iter().collect(),
    };
    Ok(cfg)
}

/// Settings from a table (file and variables merged): the registered
/// channel sections are taken out and read by their channels, the rest is
/// read strictly (an unknown key, or a section no channel registered, is
/// an error naming it).
pub fn from_table(mut table: toml::Table) -> Result<FileConfig> {
    let channels = channels::take_sections(&mut table)?;
    let mut cfg: FileConfig =
        toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| {
                let msg = e.to_string();
                // A top-level unknown key: also name the channel sections, which
                // serde's list of expected keys no longer includes.
                if msg.starts_with("unknown field") && !msg.contains("\nin `") {
                    anyhow::anyhow!(
                        "{}; or one of the channel sections {}",
                        msg.trim_end(),
                        channels::section_names()
                    )
                } else {
                    anyhow::Error::new(e)
                }
            })?;
    cfg.channels = channels;
    Ok(cfg)
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

/// The zone `TZ` names when it is a known IANA zone, else the system's,
/// else `UTC`.
pub fn system_timezone(env: &Env) -> String {
    if let Some(tz) = env.get("TZ") {
        let tz = tz.trim_start_matches(':');
        if !tz.is_empty() && jiff::tz::TimeZone::get(tz).is_ok() {
            return tz.to_owned();
        }
    }
    // (jiff's own lookup reads TZ and /etc/localtime itself.)
    jiff::tz::TimeZone::system()
        .iana_name()
        .map(str::to_owned)
        .unwrap_or_else(|| "UTC".into())
}

/// Resolves everything into the host's configuration: every section's
/// problems are reported at once first, then each section lands in turn.
pub fn resolve(
    data_dir: PathBuf,
    file: &FileConfig,
    o: &Overrides,
    env: &Env,
) -> Result<HostConfig> {
    let problems = problems(file);
    if !problems.is_empty() {
        bail!("{}", problems.join("\n"));
    }
    let mut c = HostConfig::new(data_dir);
    file.sandbox.apply(&mut c, o, env)?;
    file.provider.apply(&mut c, o, env)?;
    file.proxy.apply(&mut c)?;
    if let Some(k) = &file.secrets.key_file {
        c.secrets_key_file = Some(k.clone());
    }
    if let Some(s) = file.secrets.approval_wait_s {
        c.secrets_approval_wait = std::time::Duration::from_secs(s.max(1));
    }
    file.web_fetch.apply(&mut c)?;
    file.web_search.apply(&mut c, env)?;
    file.voice.apply(&mut c, env)?;
    c.timezone = match &file.timezone {
        Some(tz) => {
            jiff::tz::TimeZone::get(tz).with_context(|| {
                format!("timezone {tz:?} is not a known IANA zone (e.g. Europe/Madrid)")
            })?;
            tz.clone()
        }
        None => system_timezone(env),
    };
    file.runner.apply(&mut c)?;
    file.host.apply(&mut c)?;
    file.mcp.apply(&mut c)?;
    c.http = http::settings(file, env)?;
    c.channel_secrets = Some(
        pinch_host::secrets::channels::ForChannels::new(&c)
            .map_err(|e| anyhow::anyhow!("the secret store for channels: {e}"))?,
    );
    c.platforms = channels::platforms(file, &c, env)?;
    file.stuck.apply(&mut c)?;
    Ok(c)
}

/// Every problem with the numeric and list settings, one line each (empty
/// when all make sense). Each section lists its own floors and checks;
/// this collects them (seconds first, then counts, then the rest) and adds
/// the checks that span sections.
fn problems(f: &FileConfig) -> Vec<String> {
    let o = &f.origin;
    let channel_floors = channels::floors(f);
    let secs = [
        f.runner.secs(),
        f.host.secs(),
        f.stuck.secs(),
        f.proxy.secs(),
        f.web_fetch.secs(),
        f.voice.secs(),
        channels::stall_secs(&channel_floors),
        f.host.delay_secs(),
    ]
    .concat();
    let mut out: Vec<String> = secs
        .iter()
        .filter_map(|s| validate::secs_problem(o, s))
        .collect();
    let counts = [
        f.host.counts(),
        f.runner.counts(),
        f.proxy.counts(),
        f.web_fetch.counts(),
        f.voice.counts(),
        f.sandbox.counts(),
        f.provider.local.counts(),
    ]
    .concat();
    out.extend(counts.iter().filter_map(|c| validate::count_problem(o, c)));
    out.extend(http::problems(f));
    out.extend(f.host.problems(o));
    out.extend(f.provider.problems(o));
    out.extend(f.proxy.problems(o));
    // Cross-setting: the ceiling must leave room for several heartbeats.
    let beat = f.runner.heartbeat_s.unwrap_or(5.0);
    let ceiling = f.stuck.heartbeat_ceiling_s.unwrap_or(60.0);
    if out.is_empty() && ceiling < 2.0 * beat {
        out.push(format!(
            "{}: stuck.heartbeat_ceiling_s = {ceiling} is less than twice runner.heartbeat_s = {beat}: every healthy runner would be killed as stuck; \
             make the ceiling at least twice the heartbeat",
            o.place("stuck.heartbeat_ceiling_s")
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    //! Helpers the section modules' tests share, and the tests of the
    //! whole: layering, unknown keys, the error wording.
    use super::*;

    /// Settings from TOML text alone (no variables).
    pub(super) fn file_of(t: &str) -> FileConfig {
        from_table(t.parse().unwrap()).unwrap()
    }

    /// An environment of just these variables.
    pub(super) fn env_of(vars: &[(&str, &str)]) -> Env {
        vars.iter().copied().collect()
    }

    /// The process sandbox and the scripted provider, as most tests want.
    pub(super) fn scripted() -> Overrides {
        Overrides {
            sandbox: Some("process".into()),
            provider: Some("scripted".into()),
            ..Default::default()
        }
    }

    /// Resolves TOML text with [`scripted`] and no variables.
    pub(super) fn resolve_str(text: &str) -> Result<HostConfig> {
        resolve(
            "/tmp/x".into(),
            &file_of(text),
            &scripted(),
            &Env::default(),
        )
    }

    #[test]
    fn env_overrides_and_unknown_keys() {
        let env = env_of(&[("PINCH__RUNNER__IDLE_EXIT_S", "5"), ("OTHER", "x")]);
        let cfg = parse(
            "/etc/pinch.toml".into(),
            Some("[runner]\nidle_exit_s = 600\n"),
            &env,
        )
        .unwrap();
        assert_eq!(cfg.runner.idle_exit_s, Some(5.0), "env beats the file");
        assert_eq!(
            cfg.origin.env.get("runner.idle_exit_s").map(String::as_str),
            Some("PINCH__RUNNER__IDLE_EXIT_S")
        );
        let c = resolve("/tmp/x".into(), &cfg, &scripted(), &env).unwrap();
        assert_eq!(c.runner.idle_exit_ms, 5000);

        let bad: Result<FileConfig, _> =
            toml::Value::Table("[runner]\nidle_exit = 5\n".parse().unwrap()).try_into();
        let msg = bad.unwrap_err().to_string();
        assert!(msg.contains("idle_exit"), "{msg}");
        let e = parse(
            "/etc/pinch.toml".into(),
            None,
            &env_of(&[("PINCH__RUNNER__IDLE_EXIT", "5")]),
        )
        .unwrap_err();
        let e = format!("{e:#}");
        assert!(
            e.contains("idle_exit") && e.contains("PINCH__* variables"),
            "{e}"
        );
    }

    #[test]
    fn load_file_reads_the_default_path_from_the_env() {
        let tmp = tempfile::tempdir().unwrap();
        let env = env_of(&[
            ("XDG_CONFIG_HOME", tmp.path().to_str().unwrap()),
            ("HOME", "/nonexistent-home"),
        ]);
        assert_eq!(
            default_config_path(&env),
            tmp.path().join("pinch/pinch.toml")
        );
        assert_eq!(
            default_mount_allowlist(&env),
            tmp.path().join("pinch/mount-allowlist.toml")
        );
        // No default file: defaults. An explicit path must exist.
        assert!(load_file(None, &env).unwrap().runner.idle_exit_s.is_none());
        let missing = tmp.path().join("nope.toml");
        let e = format!("{:#}", load_file(Some(&missing), &env).unwrap_err());
        assert!(e.contains("reading the config file"), "{e}");
        std::fs::create_dir_all(tmp.path().join("pinch")).unwrap();
        std::fs::write(
            tmp.path().join("pinch/pinch.toml"),
            "[runner]\nbatch_size = 3\n",
        )
        .unwrap();
        let f = load_file(None, &env).unwrap();
        assert_eq!(f.runner.batch_size, Some(3));
        assert_eq!(f.origin.path, tmp.path().join("pinch/pinch.toml"));
        // The data dir: XDG_DATA_HOME, else HOME; an empty one is unset.
        assert_eq!(
            default_data_dir(&env_of(&[("XDG_DATA_HOME", "/d"), ("HOME", "/h")])),
            PathBuf::from("/d/pinch")
        );
        assert_eq!(
            default_data_dir(&env_of(&[("XDG_DATA_HOME", ""), ("HOME", "/h")])),
            PathBuf::from("/h/.local/share/pinch")
        );
        assert_eq!(
            default_data_dir(&Env::default()),
            PathBuf::from("/.local/share/pinch")
        );
    }

    #[test]
    fn the_timezone_comes_from_the_file_then_tz() {
        let f = file_of("timezone = \"Asia/Tokyo\"\n");
        let c = resolve("/tmp/x".into(), &f, &scripted(), &env_of(&[("TZ", "UTC")])).unwrap();
        assert_eq!(c.timezone, "Asia/Tokyo");
        let c = resolve(
            "/tmp/x".into(),
            &FileConfig::default(),
            &scripted(),
            &env_of(&[("TZ", ":Europe/Madrid")]),
        )
        .unwrap();
        assert_eq!(c.timezone, "Europe/Madrid");
        let e = resolve_str("timezone = \"Mars/Olympus\"\n").unwrap_err();
        assert!(format!("{e:#}").contains("not a known IANA zone"), "{e:#}");
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
        let e = resolve("/tmp/x".into(), &f, &scripted(), &Env::default()).unwrap_err();
        assert!(
            e.to_string().contains("runner.busy_timeout_s = 0.5")
                && e.to_string().contains("from 2 to"),
            "{e}"
        );
        let o = |provider: Option<&str>, sandbox: &str| Overrides {
            provider: provider.map(Into::into),
            sandbox: Some(sandbox.into()),
            ..Default::default()
        };
        let none = Env::default();
        let e = resolve(
            "/tmp/x".into(),
            &FileConfig::default(),
            &o(None, "vm"),
            &none,
        )
        .unwrap_err();
        assert!(
            format!("{e:#}").contains("expected auto, bwrap, docker or process"),
            "{e:#}"
        );
        let e = resolve(
            "/tmp/x".into(),
            &FileConfig::default(),
            &o(Some("local"), "process"),
            &none,
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
            &o(Some("llama"), "process"),
            &none,
        )
        .unwrap_err();
        assert!(e.to_string().contains("unknown provider"), "{e}");
        let c = resolve(
            "/tmp/x".into(),
            &FileConfig::default(),
            &o(Some("openai"), "process"),
            &env_of(&[("OPENAI_API_KEY", "sk-test-secret")]),
        )
        .unwrap();
        assert!(
            c.proxy_upstreams.iter().any(|u| u.name == "openai"),
            "openai gets a proxy route"
        );
        assert!(
            !format!("{c:?}").contains("sk-test-secret"),
            "no key in the resolved config's Debug"
        );
        // Vision: OpenAI's own API yes, another OpenAI-compatible server
        // only when said; Anthropic yes.
        assert_eq!(c.provider.vision, Some(true), "api.openai.com takes images");
        let key = env_of(&[("OPENAI_API_KEY", "k"), ("ANTHROPIC_API_KEY", "k")]);
        let local = |extra: &str| {
            let text = format!("[provider.openai]\nbase_url = \"http://127.0.0.1:8080/v1\"\nmodel = \"m\"\n{extra}");
            resolve(
                "/tmp/x".into(),
                &file_of(&text),
                &o(Some("openai"), "process"),
                &key,
            )
            .unwrap()
            .provider
            .vision
        };
        assert_eq!(local(""), Some(false));
        assert_eq!(local("vision = true\n"), Some(true));
        let c = resolve(
            "/tmp/x".into(),
            &FileConfig::default(),
            &o(Some("anthropic"), "process"),
            &key,
        )
        .unwrap();
        assert_eq!(c.provider.vision, Some(true));
    }
}
