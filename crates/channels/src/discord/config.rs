//! `[discord]` in `pinch.toml`: the section, its defaults, the variable
//! its token is read from, and how the adapter is built from it.

use std::sync::Arc;

use crate::kind::{
    self, ChannelKind, ChannelSection, Floor, Host, SecretEnv, SectionError, Starter,
};
use crate::Channel;

use super::{DiscordChannel, DiscordConfig, CHANNEL_TYPE, DEFAULT_BASE_URL};

const TOKEN_ENV: &str = "DISCORD_BOT_TOKEN";

/// The `[discord]` kind, registered in [`crate::KINDS`].
pub const KIND: ChannelKind = ChannelKind::new::<DiscordSection>(CHANNEL_TYPE);

/// `[discord]`: a Discord bot (gateway + REST).
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiscordSection {
    /// The variable holding the bot token (default `DISCORD_BOT_TOKEN`).
    pub token_env: Option<String>,
    /// The REST base (default `https://discord.com/api/v10`).
    pub base_url: Option<String>,
    /// Stall watchdog limit in seconds (default 120).
    pub stall_s: Option<f64>,
}

impl ChannelSection for DiscordSection {
    fn secret_envs(&self) -> Vec<SecretEnv> {
        vec![SecretEnv {
            section: CHANNEL_TYPE,
            key: "token_env",
            var: self.token_env.clone().unwrap_or_else(|| TOKEN_ENV.into()),
            hint: "the bot token from the Discord developer portal (Bot → Reset Token)",
        }]
    }

    fn floors(&self) -> Vec<Floor> {
        vec![kind::stall_floor(self.stall_s)]
    }

    fn build(&self, host: &Host) -> Result<Starter, SectionError> {
        let var = self.token_env.as_deref().unwrap_or(TOKEN_ENV);
        let mut cfg = DiscordConfig::new(host.secret(CHANNEL_TYPE, "token_env", var)?);
        cfg.base_url = kind::base_url(CHANNEL_TYPE, self.base_url.as_deref(), DEFAULT_BASE_URL)?;
        cfg.stall = kind::stall(CHANNEL_TYPE, self.stall_s)?;
        let dir = host.data_dir.join("channels");
        cfg.cursor_file = Some(dir.join("discord-cursors.json"));
        Ok(Arc::new(move |tx| {
            std::fs::create_dir_all(&dir)
                .map_err(|e| format!("creating {}: {e}", dir.display()))?;
            let ch = DiscordChannel::start(cfg.clone(), tx)?;
            Ok((ch as Arc<dyn Channel>, None))
        }))
    }
}
