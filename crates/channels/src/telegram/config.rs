//! `[telegram]` in `pinch.toml`: the section, its defaults, the variables
//! its secrets are read from, and how the adapter is built from it.

use std::sync::Arc;

use crate::kind::{
    self, ChannelKind, ChannelSection, Floor, Host, SecretEnv, SectionError, Starter,
};
use crate::platform::Secret;
use crate::Channel;

use super::{TelegramChannel, TelegramConfig, CHANNEL_TYPE, DEFAULT_BASE_URL};

const TOKEN_ENV: &str = "TELEGRAM_BOT_TOKEN";
const WEBHOOK_SECRET_ENV: &str = "TELEGRAM_WEBHOOK_SECRET";

/// The `[telegram]` kind, registered in [`crate::KINDS`].
pub const KIND: ChannelKind =
    ChannelKind::new::<TelegramSection>(CHANNEL_TYPE).serving(&[super::WEBHOOK_PATH]);

/// `[telegram]`: a Telegram bot (long-poll unless `webhook_url` is set).
#[derive(Debug, Default, serde::Deserialize)]
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

impl ChannelSection for TelegramSection {
    fn secret_envs(&self) -> Vec<SecretEnv> {
        let mut out = vec![SecretEnv {
            section: CHANNEL_TYPE,
            key: "token_env",
            var: self.token_env.clone().unwrap_or_else(|| TOKEN_ENV.into()),
            hint: "the token @BotFather gave you",
        }];
        if self.webhook_url.is_some() {
            out.push(SecretEnv {
                section: CHANNEL_TYPE,
                key: "webhook_secret_env",
                var: self
                    .webhook_secret_env
                    .clone()
                    .unwrap_or_else(|| WEBHOOK_SECRET_ENV.into()),
                hint: "a random secret, e.g. `openssl rand -hex 32`",
            });
        }
        out
    }

    fn floors(&self) -> Vec<Floor> {
        vec![kind::stall_floor(self.stall_s)]
    }

    fn needs_listener(&self) -> bool {
        self.webhook_url.is_some()
    }

    fn build(&self, host: &Host) -> Result<Starter, SectionError> {
        let bad = |p: String| SectionError::new(CHANNEL_TYPE, p);
        let var = self.token_env.as_deref().unwrap_or(TOKEN_ENV);
        let mut cfg = TelegramConfig::new(host.secret(CHANNEL_TYPE, "token_env", var)?);
        cfg.base_url = kind::base_url(CHANNEL_TYPE, self.base_url.as_deref(), DEFAULT_BASE_URL)?;
        cfg.stall = kind::stall(CHANNEL_TYPE, self.stall_s)?;
        if let Some(url) = &self.webhook_url {
            if !url.starts_with("https://") && !url.starts_with("http://") {
                return Err(bad(format!("webhook_url {url:?} must be an https:// URL that reaches /telegram on pinch's [http] listener")));
            }
            let var = self
                .webhook_secret_env
                .as_deref()
                .unwrap_or(WEBHOOK_SECRET_ENV);
            let secret = host.secret(CHANNEL_TYPE, "webhook_secret_env", var)?;
            if secret.len() < 16
                || !secret
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            {
                return Err(bad(format!("the webhook secret in {var} must be 16-256 of A-Z a-z 0-9 _ - (e.g. `openssl rand -hex 32`)")));
            }
            cfg.webhook = Some((url.clone(), Secret(secret)));
        }
        let token = &cfg.token.0;
        if token.contains('/') || !token.contains(':') {
            return Err(bad(format!("the token in {var} does not look like a bot token (<digits>:<letters>; get one from @BotFather)")));
        }
        Ok(Arc::new(move |tx| {
            let ch = TelegramChannel::start(cfg.clone(), tx)?;
            let router = cfg.webhook.is_some().then(|| ch.router());
            Ok((ch as Arc<dyn Channel>, router))
        }))
    }
}
