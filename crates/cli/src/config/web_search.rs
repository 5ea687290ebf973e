//! `[web_search]`: the search backend agents' `web_search` tool asks
//! through the host (decision 0042). Its key is read from the host's
//! environment here and never written anywhere else.

use anyhow::{bail, Result};
use pinch_host::HostConfig;
use pinch_web::search::{Backend, Key, BRAVE_URL, TAVILY_URL};
use serde::Deserialize;

use super::env::Env;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebSearchSection {
    /// `searxng` (self-hosted, JSON API), `brave` or `tavily`.
    pub backend: Option<String>,
    /// The endpoint: SearXNG's base URL (required for it); Brave's and
    /// Tavily's have defaults.
    pub url: Option<String>,
    /// The variable holding the API key (default `BRAVE_API_KEY` or
    /// `TAVILY_API_KEY`). Never the key itself.
    pub key_env: Option<String>,
    /// Results one search returns at most (default 10).
    pub max_results: Option<u64>,
}

impl WebSearchSection {
    pub(super) fn apply(&self, c: &mut HostConfig, env: &Env) -> Result<()> {
        if let Some(n) = self.max_results {
            if n == 0 {
                bail!("web_search.max_results must be at least 1");
            }
            c.web.search_max = usize::try_from(n).unwrap_or(usize::MAX);
        }
        let Some(backend) = self.backend.as_deref() else {
            if self.url.is_some() || self.key_env.is_some() {
                bail!("[web_search] has url or key_env but no backend: add backend = \"searxng\", \"brave\" or \"tavily\"");
            }
            return Ok(());
        };
        let key = |default_var: &str| -> Result<Key> {
            let var = self.key_env.as_deref().unwrap_or(default_var);
            match env.non_empty(var) {
                Some(k) => Ok(Key::new(k)),
                None => bail!("web_search.backend = {backend:?} needs its API key in the environment variable {var}: export {var}=… where pinch runs (never in a file)"),
            }
        };
        let url = |default: &str| self.url.clone().unwrap_or_else(|| default.to_owned());
        c.web.search = Some(match backend {
            "searxng" => match &self.url {
                Some(u) => Backend::Searxng { url: u.clone() },
                None => bail!("web_search.backend = \"searxng\" needs url = \"http://…\" (your SearXNG instance, with the json format enabled)"),
            },
            "brave" => Backend::Brave {
                url: url(BRAVE_URL),
                key: key("BRAVE_API_KEY")?,
            },
            "tavily" => Backend::Tavily {
                url: url(TAVILY_URL),
                key: key("TAVILY_API_KEY")?,
            },
            other => bail!("web_search.backend = {other:?} is not one of \"searxng\", \"brave\", \"tavily\""),
        });
        if let Some(u) = &self.url {
            if !(u.starts_with("http://") || u.starts_with("https://")) {
                bail!("web_search.url = {u:?} must start with http:// or https://");
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::*;
    use super::super::*;

    fn with_env(text: &str, vars: &[(&str, &str)]) -> Result<HostConfig> {
        resolve("/tmp/x".into(), &file_of(text), &scripted(), &env_of(vars))
    }

    #[test]
    fn backends_keys_and_their_errors() {
        let c = with_env(
            "[web_search]\nbackend = \"brave\"\n",
            &[("BRAVE_API_KEY", "bk")],
        )
        .unwrap();
        assert_eq!(c.web.search.as_ref().map(|b| b.name()), Some("brave"));
        assert!(
            !format!("{:?}", c.web.search).contains("bk"),
            "the key never prints"
        );
        let e = with_env("[web_search]\nbackend = \"tavily\"\n", &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("TAVILY_API_KEY") && e.contains("export"), "{e}");
        let c = with_env(
            "[web_search]\nbackend = \"tavily\"\nkey_env = \"MY_KEY\"\nmax_results = 3\n",
            &[("MY_KEY", "k")],
        )
        .unwrap();
        assert_eq!(c.web.search_max, 3);
        let e = with_env("[web_search]\nbackend = \"searxng\"\n", &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("needs url"), "{e}");
        let c = with_env(
            "[web_search]\nbackend = \"searxng\"\nurl = \"http://127.0.0.1:8888\"\n",
            &[],
        )
        .unwrap();
        assert_eq!(c.web.search.as_ref().map(|b| b.name()), Some("searxng"));
        let e = with_env("[web_search]\nbackend = \"bing\"\n", &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("not one of"), "{e}");
        let e = with_env("[web_search]\nurl = \"http://x\"\n", &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("no backend"), "{e}");
        assert!(with_env("", &[]).unwrap().web.search.is_none());
    }
}
