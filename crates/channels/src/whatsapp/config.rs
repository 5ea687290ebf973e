//! `[whatsapp]` in `pinch.toml`: the section, its defaults, the variables
//! its secrets are read from, and how the adapter is built from it.

use std::sync::Arc;

use crate::kind::{
    self, ChannelKind, ChannelSection, Host, Probe, SecretEnv, SectionError, Starter,
};
use crate::platform::Secret;
use crate::Channel;

use super::{WhatsAppChannel, WhatsAppConfig, CHANNEL_TYPE, DEFAULT_BASE_URL};

const TOKEN_ENV: &str = "WHATSAPP_TOKEN";
const APP_SECRET_ENV: &str = "WHATSAPP_APP_SECRET";
const VERIFY_TOKEN_ENV: &str = "WHATSAPP_VERIFY_TOKEN";
const DEFAULT_API_VERSION: &str = "v21.0";
const DEFAULT_TEMPLATE_LANGUAGE: &str = "en_US";

/// The `[whatsapp]` kind, registered in [`crate::KINDS`]; Meta posts to
/// `/whatsapp` on the shared listener (signed with the app secret).
pub const KIND: ChannelKind =
    ChannelKind::new::<WhatsAppSection>(CHANNEL_TYPE).serving(&[super::WEBHOOK_PATH]);

/// `[whatsapp]`: a WhatsApp Business number on the Cloud API.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WhatsAppSection {
    /// The business number's id (WhatsApp Manager → API Setup).
    pub phone_number_id: String,
    /// The variable holding the access token (default `WHATSAPP_TOKEN`).
    pub token_env: Option<String>,
    /// The variable holding the app secret that signs webhook POSTs
    /// (default `WHATSAPP_APP_SECRET`).
    pub app_secret_env: Option<String>,
    /// The variable holding the webhook verify token (default
    /// `WHATSAPP_VERIFY_TOKEN`).
    pub verify_token_env: Option<String>,
    /// The Graph API server (default `https://graph.facebook.com`).
    pub base_url: Option<String>,
    /// The Graph API version (default `v21.0`).
    pub api_version: Option<String>,
    /// An approved template sent when a reply falls outside the 24-hour
    /// window (it should invite the user to write).
    pub template: Option<String>,
    /// The template's language code (default `en_US`).
    pub template_language: Option<String>,
}

impl ChannelSection for WhatsAppSection {
    fn secret_envs(&self) -> Vec<SecretEnv> {
        let var = |v: &Option<String>, d: &str| v.clone().unwrap_or_else(|| d.into());
        vec![
            SecretEnv {
                section: CHANNEL_TYPE,
                key: "token_env",
                var: var(&self.token_env, TOKEN_ENV),
                hint: "a system user's access token with whatsapp_business_messaging (Meta Business Settings → System users)",
            },
            SecretEnv {
                section: CHANNEL_TYPE,
                key: "app_secret_env",
                var: var(&self.app_secret_env, APP_SECRET_ENV),
                hint: "the app secret (Meta app dashboard → App settings → Basic)",
            },
            SecretEnv {
                section: CHANNEL_TYPE,
                key: "verify_token_env",
                var: var(&self.verify_token_env, VERIFY_TOKEN_ENV),
                hint: "a random string you also enter as the webhook's verify token, e.g. `openssl rand -hex 32`",
            },
        ]
    }

    fn needs_listener(&self) -> bool {
        true
    }

    fn build(&self, host: &Host) -> Result<Starter, SectionError> {
        let cfg = self.config(host)?;
        let dir = host.data_dir.join("channels");
        Ok(Arc::new(move |tx| {
            std::fs::create_dir_all(&dir)
                .map_err(|e| format!("creating {}: {e}", dir.display()))?;
            let ch = WhatsAppChannel::start(cfg.clone(), tx)?;
            let router = ch.router();
            Ok((ch as Arc<dyn Channel>, Some(router)))
        }))
    }

    fn probe(&self, host: &Host) -> Option<Probe> {
        let cfg = self.config(host).ok()?;
        Some(Box::pin(async move { super::probe(&cfg).await }))
    }
}

impl WhatsAppSection {
    /// The adapter's configuration: the section checked, the secrets read.
    fn config(&self, host: &Host) -> Result<WhatsAppConfig, SectionError> {
        let bad = |p: String| SectionError::new(CHANNEL_TYPE, p);
        let id = self.phone_number_id.trim();
        if id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad(format!(
                "phone_number_id {:?} must be the number's id (digits, from WhatsApp Manager → API Setup), not the phone number",
                self.phone_number_id
            )));
        }
        let version = self
            .api_version
            .clone()
            .unwrap_or_else(|| DEFAULT_API_VERSION.into());
        if !version.starts_with('v')
            || version.len() < 2
            || !version[1..]
                .bytes()
                .all(|b| b.is_ascii_digit() || b == b'.')
        {
            return Err(bad(format!(
                "api_version {version:?} must look like \"{DEFAULT_API_VERSION}\""
            )));
        }
        let secret = |key: &str, var: &Option<String>, default: &str| {
            host.secret(CHANNEL_TYPE, key, var.as_deref().unwrap_or(default))
                .map(Secret)
        };
        let template = match self.template.as_deref().map(str::trim) {
            None => None,
            Some("") => return Err(bad("template must name an approved template".into())),
            Some(t) => Some((
                t.to_owned(),
                self.template_language
                    .clone()
                    .unwrap_or_else(|| DEFAULT_TEMPLATE_LANGUAGE.into()),
            )),
        };
        Ok(WhatsAppConfig {
            token: secret("token_env", &self.token_env, TOKEN_ENV)?,
            app_secret: secret("app_secret_env", &self.app_secret_env, APP_SECRET_ENV)?,
            verify_token: secret("verify_token_env", &self.verify_token_env, VERIFY_TOKEN_ENV)?,
            phone_number_id: id.to_owned(),
            base_url: kind::base_url(CHANNEL_TYPE, self.base_url.as_deref(), DEFAULT_BASE_URL)?,
            api_version: version,
            template,
            window_file: Some(host.data_dir.join("channels").join("whatsapp-window.json")),
        })
    }
}
