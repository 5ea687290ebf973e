//! `[provider]` and its subsections: which model the runners talk to and
//! the credential proxy's routes to it (keys come from the environment,
//! never from a file in the data dir).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use pinch_host::HostConfig;
use pinch_proto::runner_config::ProviderSettings;
use serde::Deserialize;

use super::validate::{Count, Origin, LEAVE_OUT};
use super::{Env, FileConfig, Overrides};

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
    /// The model takes images: photos people send are shown to it
    /// (default: Anthropic yes; OpenAI-compatible yes for api.openai.com,
    /// else no — many local servers refuse image parts).
    pub vision: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScriptedSection {
    /// Path to a script file (TOML rules).
    pub script: Option<PathBuf>,
}

impl LocalSection {
    /// The floors [`super::validate`] checks.
    pub(super) fn counts(&self) -> Vec<Count<'static>> {
        vec![
            Count::new(
                "provider.local.max_tokens",
                self.max_tokens,
                1,
                "0 would never answer",
            ),
            Count::new(
                "provider.local.context",
                self.context,
                1,
                "the model's context window in tokens",
            ),
        ]
    }
}

impl ProviderSection {
    /// Checks beyond the floors.
    pub(super) fn problems(&self, o: &Origin) -> Vec<String> {
        let mut out = Vec::new();
        for (name, section) in [("openai", &self.openai), ("anthropic", &self.anthropic)] {
            if section.allow_paths.as_ref().is_some_and(|p| p.is_empty()) {
                out.push(format!(
                    "{}: provider.{name}.allow_paths = [] would forward nothing to the model; list paths, or {LEAVE_OUT}",
                    o.path.display()
                ));
            }
        }
        out
    }

    /// The provider (flag, then file, then what the environment offers),
    /// its model and the credential proxy's upstreams.
    pub(super) fn apply(&self, c: &mut HostConfig, o: &Overrides, env: &Env) -> Result<()> {
        // Default order (SPEC §5.5): configured (flag, then file; a scripted
        // provider's script counts) → ANTHROPIC_API_KEY → OPENAI_BASE_URL /
        // OPENAI_API_KEY → the local model if its file is there → an error
        // saying how to get one. Never a silent fall back to `scripted`.
        let env = |k: &str| env.non_empty(k).map(str::to_owned);
        let local_model = local_model_path_of(&c.data_dir, &self.local)?;
        let provider = pick_provider(&Available {
            configured: o.provider.clone().or_else(|| self.default.clone()),
            script: o.script.is_some() || self.scripted.script.is_some(),
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
        let cli = match (&self.cli, provider.as_str()) {
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
        let openai_url = self
            .openai
            .base_url
            .clone()
            .or_else(|| env("OPENAI_BASE_URL"))
            .or_else(|| {
                (provider == "openai" || cli_flavor == "codex")
                    .then(|| "https://api.openai.com/v1".to_owned())
            });
        let anthropic_url = self
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
        let script_path = o.script.clone().or_else(|| self.scripted.script.clone());
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
                self.openai
                    .model
                    .clone()
                    .or_else(|| env("OPENAI_MODEL"))
                    .unwrap_or_else(|| "gpt-4o-mini".into()),
            ),
            "anthropic" => Some(
                self.anthropic
                    .model
                    .clone()
                    .or_else(|| env("ANTHROPIC_MODEL"))
                    .unwrap_or_else(|| "claude-sonnet-4-5".into()),
            ),
            "cli" => self
                .anthropic
                .model
                .clone()
                .filter(|_| cli_flavor == "claude")
                .or_else(|| self.openai.model.clone().filter(|_| cli_flavor == "codex")),
            // The host path; the host rewrites it to the sandbox's view.
            "local" => Some(local_model.to_string_lossy().into_owned()),
            _ => None,
        };
        let (max_tokens, context) = match provider.as_str() {
            "local" => {
                for (name, v) in [
                    ("provider.local.max_tokens", self.local.max_tokens),
                    ("provider.local.context", self.local.context),
                ] {
                    if v == Some(0) {
                        bail!("{name} must be at least 1");
                    }
                }
                (self.local.max_tokens, self.local.context)
            }
            _ => (None, None),
        };
        let vision = match provider.as_str() {
            "anthropic" => Some(self.anthropic.vision.unwrap_or(true)),
            "openai" => Some(self.openai.vision.unwrap_or_else(|| {
                openai_url
                    .as_deref()
                    .is_some_and(|u| u.starts_with("https://api.openai.com"))
            })),
            _ => None,
        };
        c.provider = ProviderSettings {
            vision,
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
                &self.openai,
            ),
            (
                "anthropic",
                &anthropic_url,
                "ANTHROPIC_API_KEY",
                "x-api-key",
                "",
                &self.anthropic,
            ),
        ] {
            if let Some(url) = url {
                if !url.starts_with("http://") && !url.starts_with("https://") {
                    bail!("provider.{name}.base_url {url:?} must start with http:// or https://");
                }
                let auth = env(key_var).map(|k| {
                    (
                        header.to_owned(),
                        pinch_host::proxy::Secret::new(format!("{prefix}{k}")),
                    )
                });
                let mut up =
                    pinch_host::proxy::Upstream::new(name, url.trim_end_matches('/'), auth);
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
        Ok(())
    }
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
    local_model_path_of(data_dir, &file.provider.local)
}

fn local_model_path_of(data_dir: &Path, local: &LocalSection) -> Result<PathBuf> {
    match &local.model {
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
    use super::super::tests::*;
    use super::super::*;
    #[allow(unused_imports)]
    use super::*;

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
            &Env::default(),
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
            &Env::default(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("provider.local.context"), "{e}");
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
        let f = file_of(toml);
        let c = resolve(
            "/tmp/x".into(),
            &f,
            &Overrides {
                sandbox: Some("process".into()),
                ..Default::default()
            },
            &Env::default(),
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
            &Env::default(),
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
            &Env::default(),
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
}
