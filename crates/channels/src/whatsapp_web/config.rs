//! `[whatsapp_web]` in `pinch.toml`: the section, its defaults and how the
//! adapter is built from it. There are no secrets in the environment: the
//! session keys the pairing made are the secret, kept 0600 under
//! `<data>/channels/whatsapp-web/session/` (decision 0055).

use std::sync::Arc;

use crate::kind::{
    self, ChannelKind, ChannelSection, Floor, Host, Probe, SecretEnv, SectionError, Starter,
};
use crate::Channel;

use super::{Paths, WaWebChannel, WaWebConfig, CHANNEL_TYPE};

/// The `[whatsapp_web]` kind, registered in [`crate::KINDS`] (it serves
/// no route: the bridge dials out); its set-up steps are `pinch channels
/// whatsapp link|install`.
pub const KIND: ChannelKind =
    ChannelKind::new::<WaWebSection>(CHANNEL_TYPE).with_setup(super::link::step);

/// `[whatsapp_web]`: the owner's own WhatsApp account, as a linked device.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WaWebSection {
    /// The bridge to run, program and arguments (default: `node` on the
    /// bridge `pinch channels whatsapp install` put under the data dir).
    pub command: Option<Vec<String>>,
    /// Seconds without a sign of life from the bridge before it is
    /// restarted (default 120).
    pub stall_s: Option<f64>,
    /// Mark a message read (blue ticks) once pinch has stored it (default
    /// true).
    pub read_receipts: Option<bool>,
}

impl ChannelSection for WaWebSection {
    fn secret_envs(&self) -> Vec<SecretEnv> {
        Vec::new()
    }

    fn floors(&self) -> Vec<Floor> {
        vec![kind::stall_floor(self.stall_s)]
    }

    fn build(&self, host: &Host) -> Result<Starter, SectionError> {
        let cfg = self.config(host.data_dir)?;
        Ok(Arc::new(move |tx| {
            let ch = WaWebChannel::start(cfg.clone(), tx)?;
            Ok((ch as Arc<dyn Channel>, None))
        }))
    }

    fn probe(&self, host: &Host) -> Option<Probe> {
        let cfg = self.config(host.data_dir).ok()?;
        Some(Box::pin(async move { super::probe(&cfg) }))
    }
}

impl WaWebSection {
    /// The adapter's configuration: the section checked.
    pub fn config(&self, data_dir: &std::path::Path) -> Result<WaWebConfig, SectionError> {
        let paths = Paths::new(data_dir);
        let command = match &self.command {
            None => vec![
                "node".to_owned(),
                paths.bridge.join("bridge.mjs").display().to_string(),
            ],
            Some(c) if c.is_empty() || c[0].trim().is_empty() => {
                return Err(SectionError::new(
                    CHANNEL_TYPE,
                    "command must name a program (e.g. [\"node\", \"/path/bridge.mjs\"]), or be left out for the installed bridge",
                ))
            }
            Some(c) => c.clone(),
        };
        Ok(WaWebConfig {
            default_bridge: self.command.is_none(),
            command,
            stall: kind::stall(CHANNEL_TYPE, self.stall_s)?,
            read_receipts: self.read_receipts.unwrap_or(true),
            paths,
        })
    }
}

/// The section as `pinch channels whatsapp` reads it from a file's table.
pub(super) fn from_table(v: toml::Value) -> Result<WaWebSection, String> {
    let mut t = toml::Table::new();
    t.insert(CHANNEL_TYPE.to_owned(), v);
    let mut m: std::collections::BTreeMap<String, WaWebSection> = toml::Value::Table(t)
        .try_into()
        .map_err(|e: toml::de::Error| e.to_string())?;
    Ok(m.remove(CHANNEL_TYPE).unwrap_or_default())
}
