//! `[web_fetch]`: what agents' `web_fetch` tool may do through the host
//! (decision 0042). The per-group policy is `agent_configs.web`.

use anyhow::Result;
use pinch_host::HostConfig;
use serde::Deserialize;

use super::proxy::HostList;
use super::secs;
use super::validate::{Count, Secs};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebFetchSection {
    /// `web_fetch` for every agent group unless the group's own policy
    /// says otherwise (default true).
    pub enabled: Option<bool>,
    /// Private hosts agents may fetch (a NAS, a home server): `host`,
    /// `host:port`, `*.domain`; any port when none is given.
    pub allow_private: Option<HostList>,
    /// Mebibytes read from one response at most (default 5).
    pub max_download_mb: Option<u64>,
    /// Characters of text returned at most (default 100000).
    pub max_chars: Option<u64>,
    /// Seconds for a whole fetch, redirects included (default 30).
    pub timeout_s: Option<f64>,
    /// Redirects followed at most (default 10).
    pub max_redirects: Option<u64>,
    /// Network fetches per agent group per minute (default 30).
    pub per_minute: Option<u64>,
    /// Seconds a fetched page is served from the cache (default 300; 0 = no cache).
    pub cache_s: Option<f64>,
}

impl WebFetchSection {
    pub(super) fn secs(&self) -> Vec<Secs<'static>> {
        vec![
            Secs::new(
                "web_fetch.timeout_s",
                self.timeout_s,
                0.1,
                "0 would fail every fetch",
            ),
            Secs::new(
                "web_fetch.cache_s",
                self.cache_s,
                0.0,
                "0 turns the cache off",
            ),
        ]
    }

    pub(super) fn counts(&self) -> Vec<Count<'static>> {
        vec![
            Count::new(
                "web_fetch.max_download_mb",
                self.max_download_mb,
                1,
                "0 would read nothing",
            ),
            Count::new(
                "web_fetch.max_chars",
                self.max_chars,
                1,
                "0 would return nothing",
            ),
            Count::new(
                "web_fetch.per_minute",
                self.per_minute,
                1,
                "to turn web_fetch off, set enabled = false",
            ),
        ]
    }

    pub(super) fn apply(&self, c: &mut HostConfig) -> Result<()> {
        let w = &mut c.web;
        w.fetch = self.enabled.unwrap_or(w.fetch);
        if let Some(list) = &self.allow_private {
            w.allow_private = pinch_policy::hosts::HostPatterns::parse_as(
                &pinch_web::ascii_hosts(&list.entries()),
                "web_fetch.allow_private",
                None,
            )
            .map_err(anyhow::Error::msg)?;
        }
        if let Some(mb) = self.max_download_mb {
            w.max_download = mb.saturating_mul(1024 * 1024);
        }
        if let Some(n) = self.max_chars {
            w.max_chars = usize::try_from(n).unwrap_or(usize::MAX);
        }
        if let Some(v) = self.timeout_s {
            w.timeout = secs("web_fetch.timeout_s", v)?;
        }
        if let Some(n) = self.max_redirects {
            w.max_redirects = usize::try_from(n).unwrap_or(usize::MAX);
        }
        if let Some(n) = self.per_minute {
            w.per_minute = u32::try_from(n).unwrap_or(u32::MAX);
        }
        if let Some(v) = self.cache_s {
            w.cache_ttl = secs("web_fetch.cache_s", v)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::*;
    use std::time::Duration;

    #[test]
    fn web_fetch_settings_from_the_file() {
        let c = resolve_str(
            "[web_fetch]\nallow_private = [\"nas.lan\", \"127.0.0.1:8080\"]\ntimeout_s = 5\nmax_download_mb = 2\nper_minute = 10\ncache_s = 0\n",
        )
        .unwrap();
        assert!(c.web.fetch);
        assert!(c.web.allow_private.allows("nas.lan", 80));
        assert!(c.web.allow_private.allows("127.0.0.1", 8080));
        assert!(!c.web.allow_private.allows("127.0.0.1", 8081));
        assert_eq!(c.web.timeout, Duration::from_secs(5));
        assert_eq!(c.web.max_download, 2 * 1024 * 1024);
        assert_eq!(c.web.per_minute, 10);
        assert_eq!(c.web.cache_ttl, Duration::ZERO);
        assert!(
            !resolve_str("[web_fetch]\nenabled = false\n")
                .unwrap()
                .web
                .fetch
        );
        let e = resolve_str("[web_fetch]\nper_minute = 0\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("web_fetch.per_minute") && e.contains("enabled = false"),
            "{e}"
        );
        let e = resolve_str("[web_fetch]\nallow_private = [\"a b\"]\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("web_fetch.allow_private entry"), "{e}");
    }
}
