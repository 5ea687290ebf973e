//! `[matrix]` in `pinch.toml`: the section, its defaults, the variable its
//! access token is read from, and how the adapter is built from it.

use std::net::IpAddr;
use std::sync::Arc;

use crate::kind::{
    self, ChannelKind, ChannelSection, Floor, Host, Probe, SecretEnv, SectionError, Starter,
};
use crate::platform::Secret;
use crate::Channel;

use super::{MatrixChannel, MatrixConfig, CHANNEL_TYPE};

const TOKEN_ENV: &str = "PINCH_MATRIX_TOKEN";

/// The `[matrix]` kind, registered in [`crate::KINDS`].
pub const KIND: ChannelKind = ChannelKind::new::<MatrixSection>(CHANNEL_TYPE);

/// `[matrix]`: a Matrix account pinch uses over the client-server API.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatrixSection {
    /// The homeserver's client-server API base, `https://matrix.example.org`.
    pub homeserver: String,
    /// pinch's Matrix user id, `@pinch:example.org`.
    pub user_id: String,
    /// The variable holding the account's access token (default
    /// `PINCH_MATRIX_TOKEN`).
    pub token_env: Option<String>,
    /// The stall limit in seconds (default 120): a `/sync` silent this
    /// long is abandoned and the connection rebuilt.
    pub stall_s: Option<f64>,
}

impl ChannelSection for MatrixSection {
    fn secret_envs(&self) -> Vec<SecretEnv> {
        vec![SecretEnv {
            section: CHANNEL_TYPE,
            key: "token_env",
            var: self.token_env.clone().unwrap_or_else(|| TOKEN_ENV.into()),
            hint: "the access token of pinch's Matrix account (Element: Settings → Help & About → Access Token, or the login API)",
        }]
    }

    fn floors(&self) -> Vec<Floor> {
        vec![kind::stall_floor(self.stall_s)]
    }

    fn build(&self, host: &Host) -> Result<Starter, SectionError> {
        let cfg = self.config(host)?;
        Ok(Arc::new(move |tx| {
            let ch = MatrixChannel::start(cfg.clone(), tx)?;
            Ok((ch as Arc<dyn Channel>, None))
        }))
    }

    fn probe(&self, host: &Host) -> Option<Probe> {
        let cfg = self.config(host).ok()?;
        Some(Box::pin(async move { super::probe(&cfg).await }))
    }
}

impl MatrixSection {
    fn config(&self, host: &Host) -> Result<MatrixConfig, SectionError> {
        let bad = |p: String| SectionError::new(CHANNEL_TYPE, p);
        let homeserver = self.homeserver.trim();
        if !homeserver.starts_with("https://") && !homeserver.starts_with("http://") {
            return Err(bad(format!(
                "homeserver {homeserver:?} must be the client-server API's URL, e.g. \"https://matrix.example.org\""
            )));
        }
        let homeserver = kind::base_url(CHANNEL_TYPE, Some(homeserver), "")?;
        if let Some(rest) = homeserver.strip_prefix("http://") {
            if !loopback(rest) {
                return Err(bad(format!(
                    "homeserver {homeserver:?}: plain http:// is only allowed to a loopback address (the access token and every message would cross the network in clear); use https://"
                )));
            }
        }
        let user_id = self.user_id.trim();
        if !valid_user_id(user_id) {
            return Err(bad(format!(
                "user_id {:?} is not a Matrix user id (e.g. \"@pinch:example.org\")",
                self.user_id
            )));
        }
        let var = self.token_env.as_deref().unwrap_or(TOKEN_ENV);
        let token = host.secret(CHANNEL_TYPE, "token_env", var)?;
        if token
            .bytes()
            .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
        {
            return Err(bad(format!(
                "the access token in {var} has spaces or control characters in it: paste it alone"
            )));
        }
        Ok(MatrixConfig {
            homeserver,
            user_id: user_id.to_owned(),
            token: Secret(token),
            stall: kind::stall(CHANNEL_TYPE, self.stall_s)?,
            data_dir: host.data_dir.to_owned(),
        })
    }
}

/// `@localpart:server`, the server part a host name (with a port).
pub fn valid_user_id(id: &str) -> bool {
    let Some((local, server)) = id.strip_prefix('@').and_then(|r| r.split_once(':')) else {
        return false;
    };
    !local.is_empty()
        && local.len() + server.len() < 255
        && local
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b':' && b != b'/')
        && !server.is_empty()
        && server
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
}

/// Whether the authority of `http://<rest>` is a loopback address.
fn loopback(rest: &str) -> bool {
    let auth = rest.split('/').next().unwrap_or_default();
    let host = if let Some(v6) = auth.strip_prefix('[') {
        v6.split(']').next().unwrap_or_default()
    } else {
        auth.split(':').next().unwrap_or_default()
    };
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(body: &str) -> Result<Starter, SectionError> {
        let v: toml::Table = body.parse().unwrap();
        let c = KIND
            .parse(toml::Value::Table(v))
            .map_err(|e| SectionError::new(CHANNEL_TYPE, e.to_string()))?;
        let env = |v: &str| (v == TOKEN_ENV).then(|| "syt_abc".to_owned());
        c.section.build(&Host {
            data_dir: std::path::Path::new("/tmp"),
            env: &env,
            store: None,
        })
    }

    #[test]
    fn the_section_is_strict_and_names_the_fix() {
        let ok = "homeserver = \"https://matrix.example.org/\"\nuser_id = \"@pinch:example.org\"\n";
        assert!(build(ok).is_ok());
        let e = build(&format!("{ok}bogus = 1")).err().unwrap().to_string();
        assert!(e.contains("unknown field `bogus`"), "{e}");
        let e = build("homeserver = \"http://matrix.example.org\"\nuser_id = \"@p:x\"\n")
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("only allowed to a loopback"), "{e}");
        assert!(build("homeserver = \"http://127.0.0.1:8008\"\nuser_id = \"@p:x\"\n").is_ok());
        assert!(build("homeserver = \"http://[::1]:8008\"\nuser_id = \"@p:x\"\n").is_ok());
        let e = build("homeserver = \"matrix.org\"\nuser_id = \"@p:x\"\n")
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("client-server API's URL"), "{e}");
        let e = build("homeserver = \"https://m\"\nuser_id = \"pinch\"\n")
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("not a Matrix user id"), "{e}");
        let e = build(&format!("{ok}token_env = \"NOPE\""))
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("NOPE (named by token_env) is not set"), "{e}");
        assert!(!loopback("localhost.evil.com") && loopback("localhost:8008/x"));
        assert!(!valid_user_id("@a/b:x") && valid_user_id("@a.b_c=d:example.org:8448"));
    }
}
