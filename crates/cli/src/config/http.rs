//! `[http]`, `[web]` and `[webhooks.<name>]`: the listener web chat,
//! webhooks, Telegram's webhook mode and `/metrics` share.

use anyhow::{bail, Context, Result};
use serde::Deserialize;

use super::{Env, FileConfig};

/// `[http]`: the listener web chat and webhooks share (on only when one of
/// them is configured).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSection {
    /// `host:port`, default `127.0.0.1:7878` (loopback only). Any other
    /// address needs `allow_plaintext_remote = true` (pinch has no TLS).
    pub listen: Option<String>,
    /// Serve plain HTTP on a non-loopback `listen` anyway (default false).
    pub allow_plaintext_remote: Option<bool>,
    /// Names browsers may reach the listener by besides its address (a TLS
    /// reverse proxy's public name), accepted in `Host` and `Origin`.
    #[serde(default)]
    pub hosts: Vec<String>,
    /// Serve Prometheus metrics at `/metrics` (default true whenever the
    /// listener runs; `metrics = true` alone starts the listener).
    pub metrics: Option<bool>,
}

/// `[web]`: web chat.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebSection {
    pub enabled: Option<bool>,
}

/// `[webhooks.<name>]`: one generic webhook.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookSection {
    /// The HMAC-SHA256 key (≥ 16 bytes). Prefer `secret_env`.
    pub secret: Option<String>,
    /// The environment variable that holds the key.
    pub secret_env: Option<String>,
    /// Where the agent's replies are POSTed (JSON).
    pub callback_url: Option<String>,
    /// Largest body accepted, in bytes (default 1 MiB).
    pub max_body: Option<usize>,
}

/// Checks beyond the floors.
pub(super) fn problems(f: &FileConfig) -> Vec<String> {
    let mut out = Vec::new();
    for (name, w) in &f.webhooks {
        if w.max_body == Some(0) {
            out.push(format!(
                "{}: webhooks.{name}.max_body must be at least 1, got 0; {} (1 MiB)",
                f.origin.path.display(),
                super::validate::LEAVE_OUT
            ));
        }
    }
    out
}

/// The HTTP listener's settings: `None` unless web chat or a webhook is on.
pub(super) fn settings(
    file: &FileConfig,
    env: &Env,
) -> Result<Option<pinch_host::config::HttpSettings>> {
    let mut hooks = Vec::new();
    for (name, h) in &file.webhooks {
        if !pinch_channels::webhook::valid_name(name) {
            bail!("[webhooks.{name}]: the name must be 1-64 letters, digits, '-' or '_' (it is the URL path /hooks/<name>)");
        }
        let secret = match (&h.secret, &h.secret_env) {
            (Some(_), Some(_)) => bail!("[webhooks.{name}]: give secret or secret_env, not both"),
            (Some(s), None) => s.clone(),
            (None, Some(var)) => env
                .non_empty(var)
                .map(str::to_owned)
                .with_context(|| format!("[webhooks.{name}]: secret_env names {var}, which is not set"))?,
            (None, None) => bail!("[webhooks.{name}]: needs secret_env = \"VARIABLE\" (or secret = \"…\"), the key senders sign bodies with"),
        };
        if secret.len() < 16 {
            bail!("[webhooks.{name}]: the secret must be at least 16 bytes (e.g. `openssl rand -hex 32`)");
        }
        if let Some(u) = &h.callback_url {
            if !u.starts_with("http://") && !u.starts_with("https://") {
                bail!("[webhooks.{name}]: callback_url must start with http:// or https://");
            }
        }
        let max_body = h
            .max_body
            .unwrap_or(pinch_channels::webhook::DEFAULT_MAX_BODY);
        if max_body == 0 {
            bail!("[webhooks.{name}]: max_body must be at least 1");
        }
        hooks.push(pinch_channels::webhook::HookConfig {
            name: name.clone(),
            secret,
            callback_url: h.callback_url.clone(),
            max_body,
        });
    }
    for h in &file.http.hosts {
        if h.trim().is_empty() || h.contains(['/', '@', ' ', '\\', ',']) {
            bail!("[http] hosts entry {h:?} must be a host name, optionally with :port (e.g. \"pinch.example.com\")");
        }
    }
    let web = file.web.enabled.unwrap_or(false);
    let metrics = file.http.metrics.unwrap_or(true);
    let channel_routes = super::channels::need_listener(file);
    if !web
        && hooks.is_empty()
        && !channel_routes
        && file.http.listen.is_none()
        && file.http.metrics != Some(true)
    {
        return Ok(None);
    }
    let listen = file
        .http
        .listen
        .as_deref()
        .unwrap_or(pinch_host::config::HttpSettings::DEFAULT_LISTEN);
    let listen = listen.parse::<std::net::SocketAddr>().with_context(|| {
        format!("http.listen {listen:?} is not host:port (e.g. 127.0.0.1:7878)")
    })?;
    let settings = pinch_host::config::HttpSettings {
        listen,
        web,
        hooks,
        metrics,
        hosts: file.http.hosts.clone(),
        allow_plaintext_remote: file.http.allow_plaintext_remote.unwrap_or(false),
    };
    pinch_host::config::check_listen(&settings)?;
    Ok(Some(settings))
}

#[cfg(test)]
mod tests {
    use super::super::tests::*;
    use super::super::*;
    #[allow(unused_imports)]
    use super::*;

    #[test]
    fn http_web_and_webhooks() {
        let parse = file_of;
        let o = scripted();
        // Off unless something needs it; an explicit `listen` turns it on
        // (for /metrics).
        assert!(resolve("/tmp/x".into(), &parse(""), &o, &Env::default())
            .unwrap()
            .http
            .is_none());
        assert!(resolve(
            "/tmp/x".into(),
            &parse("[http]\nlisten = \"127.0.0.1:9\"\n"),
            &o,
            &Env::default()
        )
        .unwrap()
        .http
        .is_some_and(|h| h.metrics && !h.web));
        let c = resolve(
            "/tmp/x".into(),
            &parse("[web]\nenabled = true\n"),
            &o,
            &Env::default(),
        )
        .unwrap();
        let h = c.http.unwrap();
        assert!(h.web && h.hooks.is_empty());
        assert_eq!(
            h.listen.to_string(),
            "127.0.0.1:7878",
            "loopback by default"
        );
        let c = resolve(
            "/tmp/x".into(),
            &parse("[http]\nlisten = \"127.0.0.1:8123\"\n[webhooks.ci]\nsecret = \"0123456789abcdef\"\ncallback_url = \"https://x.example/cb\"\n"),
            &o, &Env::default()
        )
        .unwrap();
        let h = c.http.unwrap();
        assert!(!h.web);
        assert_eq!(
            (
                h.listen.port(),
                h.hooks[0].name.as_str(),
                h.hooks[0].max_body
            ),
            (8123, "ci", 1 << 20)
        );
        assert!(
            !format!("{:?}", h.hooks[0]).contains("0123456789abcdef"),
            "the secret is not in Debug output"
        );
        for (toml, says) in [
            ("[webhooks.ci]\n", "secret_env"),
            ("[webhooks.ci]\nsecret = \"short\"\n", "at least 16 bytes"),
            (
                "[webhooks.ci]\nsecret = \"0123456789abcdef\"\nsecret_env = \"X\"\n",
                "not both",
            ),
            (
                "[webhooks.ci]\nsecret_env = \"PINCH_TEST_SURELY_UNSET_VAR\"\n",
                "not set",
            ),
            (
                "[webhooks.\"a/b\"]\nsecret = \"0123456789abcdef\"\n",
                "letters, digits",
            ),
            (
                "[webhooks.ci]\nsecret = \"0123456789abcdef\"\ncallback_url = \"ftp://x\"\n",
                "http://",
            ),
            (
                "[web]\nenabled = true\n[http]\nlisten = \"localhost\"\n",
                "host:port",
            ),
        ] {
            let e = resolve("/tmp/x".into(), &parse(toml), &o, &Env::default())
                .unwrap_err()
                .to_string();
            assert!(e.contains(says), "{toml}: {e}");
        }
        let bad: Result<FileConfig, _> =
            toml::Value::Table("[webhooks.ci]\nsecrett = \"x\"\n".parse().unwrap()).try_into();
        assert!(bad.unwrap_err().to_string().contains("secrett"));
    }

    #[test]
    fn a_non_loopback_listener_needs_the_plaintext_override() {
        let parse = file_of;
        let o = scripted();
        for listen in ["0.0.0.0:7878", "192.168.1.10:7878", "[::]:7878"] {
            let e = resolve(
                "/tmp/x".into(),
                &parse(&format!(
                    "[web]\nenabled = true\n[http]\nlisten = \"{listen}\"\n"
                )),
                &o,
                &Env::default(),
            )
            .unwrap_err();
            let e = format!("{e:#}");
            assert!(
                e.contains(listen)
                    && e.contains("allow_plaintext_remote = true")
                    && e.contains("no TLS"),
                "{e}"
            );
        }
        let toml = "[web]\nenabled = true\n[http]\nlisten = \"0.0.0.0:7878\"\nallow_plaintext_remote = true\nhosts = [\"pinch.example.com\"]\n";
        let h = resolve("/tmp/x".into(), &parse(toml), &o, &Env::default())
            .unwrap()
            .http
            .unwrap();
        assert!(h.allow_plaintext_remote && h.hosts == ["pinch.example.com"]);
        assert!(
            resolve(
                "/tmp/x".into(),
                &parse("[http]\nlisten = \"[::1]:7878\"\n"),
                &o,
                &Env::default()
            )
            .is_ok(),
            "IPv6 loopback is local"
        );
        let e = resolve(
            "/tmp/x".into(),
            &parse("[http]\nhosts = [\"a/b\"]\n"),
            &o,
            &Env::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("[http] hosts"), "{e}");
    }
}
