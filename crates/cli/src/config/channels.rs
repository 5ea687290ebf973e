//! `[telegram]`, `[discord]` and `[slack]`: the chat platforms (each on
//! when its section is present). Tokens are read from the variables the
//! sections name, only here, and held only by the adapters.

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde::Deserialize;

use super::validate::Secs;
use super::{secs, Env, FileConfig};

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

/// The stall limits [`super::validate`] checks.
pub(super) fn stall_secs(f: &FileConfig) -> Vec<Secs<'static>> {
    let why = "the connection is restarted after this long without a sign of life";
    vec![
        Secs::new(
            "telegram.stall_s",
            f.telegram.as_ref().and_then(|t| t.stall_s),
            0.1,
            why,
        ),
        Secs::new(
            "discord.stall_s",
            f.discord.as_ref().and_then(|t| t.stall_s),
            0.1,
            why,
        ),
        Secs::new(
            "slack.stall_s",
            f.slack.as_ref().and_then(|t| t.stall_s),
            0.1,
            why,
        ),
    ]
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
pub fn env_secret(env: &Env, section: &str, key: &str, var: &str) -> Result<String> {
    env.get(var).filter(|v| !v.trim().is_empty()).map(|v| v.trim().to_owned()).with_context(|| {
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
pub(super) fn platforms(
    file: &FileConfig,
    data_dir: &Path,
    env: &Env,
) -> Result<Vec<pinch_host::config::PlatformFactory>> {
    let mut out: Vec<pinch_host::config::PlatformFactory> = Vec::new();
    if let Some(t) = &file.telegram {
        use pinch_channels::telegram::{TelegramChannel, TelegramConfig};
        let var = t.token_env.as_deref().unwrap_or("TELEGRAM_BOT_TOKEN");
        let mut cfg = TelegramConfig::new(env_secret(env, "telegram", "token_env", var)?);
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
            let secret = env_secret(env, "telegram", "webhook_secret_env", var)?;
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
        let mut cfg = DiscordConfig::new(env_secret(env, "discord", "token_env", var)?);
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
        let app = env_secret(env, "slack", "app_token_env", app_var)?;
        let bot = env_secret(env, "slack", "bot_token_env", bot_var)?;
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

#[cfg(test)]
mod tests {
    use super::super::tests::*;
    use super::super::*;
    #[allow(unused_imports)]
    use super::*;

    #[test]
    fn platform_sections() {
        let parse = file_of;
        let o = scripted();
        // The variables the sections name: passed in, not set on the process.
        let env = env_of(&[
            ("PINCH_CFGTEST_TG", "123:abc"),
            ("PINCH_CFGTEST_BAD_TG", "not-a-token"),
            ("PINCH_CFGTEST_DC", "dc-token"),
            ("PINCH_CFGTEST_XAPP", "xapp-1-x"),
            ("PINCH_CFGTEST_XOXB", "xoxb-1-x"),
            ("PINCH_CFGTEST_HOOK", "0123456789abcdef0123"),
            ("PINCH_CFGTEST_BLANK", "   "),
        ]);
        let good = "[telegram]\ntoken_env = \"PINCH_CFGTEST_TG\"\n[discord]\ntoken_env = \"PINCH_CFGTEST_DC\"\nstall_s = 5\n\
                    [slack]\napp_token_env = \"PINCH_CFGTEST_XAPP\"\nbot_token_env = \"PINCH_CFGTEST_XOXB\"\n";
        let c = resolve("/tmp/x".into(), &parse(good), &o, &env).unwrap();
        assert_eq!(c.platforms.len(), 3);
        let e = resolve("/tmp/x".into(), &parse(good), &o, &Env::default()).unwrap_err();
        assert!(format!("{e:#}").contains("PINCH_CFGTEST_TG"), "{e:#}");
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
        assert!(resolve("/tmp/x".into(), &parse(hook), &o, &env)
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
            ("[discord]\ntoken_env = \"PINCH_CFGTEST_BLANK\"\n", "PINCH_CFGTEST_BLANK (named by token_env) is not set"),
        ] {
            let e = format!("{:#}", resolve("/tmp/x".into(), &parse(toml), &o, &env).err().unwrap_or_else(|| panic!("accepted: {toml}")));
            assert!(e.contains(want), "{toml} → {e}");
            assert!(!e.contains("123:abc") && !e.contains("dc-token") && !e.contains("xoxb-1-x"), "a secret in an error: {e}");
        }
    }
}
