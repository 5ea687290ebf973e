//! `[slack]` in `pinch.toml`: the section, its defaults, the variables its
//! tokens are read from, and how the adapter is built from it.

use std::sync::Arc;

use crate::kind::{
    self, ChannelKind, ChannelSection, Floor, Host, SecretEnv, SectionError, Starter,
};
use crate::Channel;

use super::{SlackChannel, SlackConfig, CHANNEL_TYPE, DEFAULT_BASE_URL};

const APP_TOKEN_ENV: &str = "SLACK_APP_TOKEN";
const BOT_TOKEN_ENV: &str = "SLACK_BOT_TOKEN";

/// The `[slack]` kind, registered in [`crate::KINDS`].
pub const KIND: ChannelKind = ChannelKind::new::<SlackSection>(CHANNEL_TYPE);

/// `[slack]`: a Slack app in Socket Mode.
#[derive(Debug, Default, serde::Deserialize)]
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

impl ChannelSection for SlackSection {
    fn secret_envs(&self) -> Vec<SecretEnv> {
        vec![
            SecretEnv {
                section: CHANNEL_TYPE,
                key: "app_token_env",
                var: self
                    .app_token_env
                    .clone()
                    .unwrap_or_else(|| APP_TOKEN_ENV.into()),
                hint: "the app-level token xapp-… (Basic Information → App-Level Tokens, scope connections:write)",
            },
            SecretEnv {
                section: CHANNEL_TYPE,
                key: "bot_token_env",
                var: self
                    .bot_token_env
                    .clone()
                    .unwrap_or_else(|| BOT_TOKEN_ENV.into()),
                hint: "the bot token xoxb-… (OAuth & Permissions)",
            },
        ]
    }

    fn floors(&self) -> Vec<Floor> {
        vec![kind::stall_floor(self.stall_s)]
    }

    fn build(&self, host: &Host) -> Result<Starter, SectionError> {
        let app_var = self.app_token_env.as_deref().unwrap_or(APP_TOKEN_ENV);
        let bot_var = self.bot_token_env.as_deref().unwrap_or(BOT_TOKEN_ENV);
        let app = host.secret(CHANNEL_TYPE, "app_token_env", app_var)?;
        let bot = host.secret(CHANNEL_TYPE, "bot_token_env", bot_var)?;
        if !app.starts_with("xapp-") {
            return Err(SectionError::new(CHANNEL_TYPE, format!("{app_var} must hold the app-level token (xapp-…, with the connections:write scope), not a bot or user token")));
        }
        let mut cfg = SlackConfig::new(app, bot);
        cfg.base_url = kind::base_url(CHANNEL_TYPE, self.base_url.as_deref(), DEFAULT_BASE_URL)?;
        cfg.stall = kind::stall(CHANNEL_TYPE, self.stall_s)?;
        Ok(Arc::new(move |tx| {
            let ch = SlackChannel::start(cfg.clone(), tx)?;
            Ok((ch as Arc<dyn Channel>, None))
        }))
    }
}
