//! `web_search`: the owner's search backend, asked by the host (decision
//! 0042). SearXNG (self-hosted, JSON API), Brave Search API or Tavily;
//! their keys live in the host's environment and never reach a sandbox.
//! The endpoint is the owner's own setting, so the SSRF guard (which
//! protects against URLs an agent chooses) does not apply to it.

use serde::{Deserialize, Serialize};

use crate::FetchError;

/// A key whose `Debug` never shows it.
#[derive(Clone)]
pub struct Key(pub(crate) String);

impl Key {
    pub fn new(k: impl Into<String>) -> Key {
        Key(k.into())
    }
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Key(***)")
    }
}

#[derive(Clone, Debug)]
pub enum Backend {
    /// `url` is the instance's base, e.g. `http://127.0.0.1:8888`; its
    /// settings must allow the `json` format.
    Searxng { url: String },
    /// `url` defaults to `https://api.search.brave.com/res/v1/web/search`.
    Brave { url: String, key: Key },
    /// `url` defaults to `https://api.tavily.com/search`.
    Tavily { url: String, key: Key },
}

impl Backend {
    pub fn name(&self) -> &'static str {
        match self {
            Backend::Searxng { .. } => "searxng",
            Backend::Brave { .. } => "brave",
            Backend::Tavily { .. } => "tavily",
        }
    }
}

/// The largest answer read from a backend.
const MAX_ANSWER: usize = 4 * 1024 * 1024;

pub const BRAVE_URL: &str = "https://api.search.brave.com/res/v1/web/search";
pub const TAVILY_URL: &str = "https://api.tavily.com/search";

/// One result as the agent gets it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hit {
    pub title: String,
    pub url: String,
    pub snippet: String,
}

#[derive(Deserialize)]
struct Searxng {
    #[serde(default)]
    results: Vec<SearxngHit>,
}
#[derive(Deserialize)]
struct SearxngHit {
    #[serde(default)]
    title: String,
    #[serde(default)]
    url: String,
    #[serde(default)]
    content: String,
}

#[derive(Deserialize)]
struct Brave {
    web: Option<BraveWeb>,
}
#[derive(Deserialize)]
struct BraveWeb {
    #[serde(default)]
    results: Vec<BraveHit>,
}
#[derive(Deserialize)]
struct BraveHit {
    #[serde(default)]
    title: String,
    #[serde(default)]
    url: String,
    #[serde(default)]
    description: String,
}

/// Brave's snippets carry `<strong>` marks around the matched words.
fn plain(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut in_tag = false;
    for c in s.chars() {
        match c {
            '<' => in_tag = true,
            '>' if in_tag => in_tag = false,
            _ if !in_tag => out.push(c),
            _ => {}
        }
    }
    out.replace("&amp;", "&")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
}

/// Sends `req` to an owner's service and reads its answer, at most `max`
/// bytes: the status and the body, or what went wrong (worded to follow
/// the service's name).
pub(crate) async fn send_capped(
    req: reqwest::RequestBuilder,
    max: usize,
) -> Result<(reqwest::StatusCode, Vec<u8>), String> {
    let mut resp = req
        .send()
        .await
        .map_err(|e| format!("could not be reached ({})", e.without_url()))?;
    let status = resp.status();
    let mut body = Vec::new();
    loop {
        match resp.chunk().await {
            Ok(Some(c)) if body.len() + c.len() <= max => body.extend_from_slice(&c),
            Ok(Some(_)) => return Err(format!("answered more than {max} bytes")),
            Ok(None) => return Ok((status, body)),
            Err(e) => return Err(format!("answer could not be read ({})", e.without_url())),
        }
    }
}

/// Asks `backend` for `query`; at most `count` hits.
pub(crate) async fn run(
    client: &reqwest::Client,
    backend: &Backend,
    query: &str,
    count: usize,
) -> Result<Vec<Hit>, FetchError> {
    let name = backend.name();
    let failed = |what: String| FetchError::Failed(format!("the {name} search backend {what}"));
    let req = match backend {
        Backend::Searxng { url } => client
            .get(format!("{}/search", url.trim_end_matches('/')))
            .query(&[("q", query), ("format", "json")]),
        Backend::Brave { url, key } => client
            .get(url)
            .query(&[("q", query), ("count", &count.to_string())])
            .header("x-subscription-token", &key.0)
            .header("accept", "application/json"),
        Backend::Tavily { url, key } => client
            .post(url)
            .bearer_auth(&key.0)
            .json(&serde_json::json!({ "query": query, "max_results": count })),
    };
    let (status, body) = send_capped(req, MAX_ANSWER).await.map_err(failed)?;
    if !status.is_success() {
        let head: String = String::from_utf8_lossy(&body).chars().take(200).collect();
        let hint = match (name, status.as_u16()) {
            ("searxng", 403) => {
                " (enable the json format under search.formats in its settings.yml)"
            }
            (_, 401 | 403) => " (check the API key in the host's environment)",
            (_, 429) => " (the backend's own rate limit)",
            _ => "",
        };
        return Err(failed(format!("answered {status}{hint}: {head}")));
    }
    let bad =
        |e: serde_json::Error| failed(format!("answered something that is not its JSON ({e})"));
    let hits: Vec<Hit> = match backend {
        Backend::Searxng { .. } | Backend::Tavily { .. } => {
            serde_json::from_slice::<Searxng>(&body)
                .map_err(bad)?
                .results
                .into_iter()
                .map(|h| Hit {
                    title: h.title,
                    url: h.url,
                    snippet: h.content,
                })
                .collect()
        }
        Backend::Brave { .. } => serde_json::from_slice::<Brave>(&body)
            .map_err(bad)?
            .web
            .map(|w| w.results)
            .unwrap_or_default()
            .into_iter()
            .map(|h| Hit {
                title: plain(&h.title),
                url: h.url,
                snippet: plain(&h.description),
            })
            .collect(),
    };
    Ok(hits
        .into_iter()
        .filter(|h| !h.url.is_empty())
        .take(count)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn brave_marks_are_taken_out_and_keys_never_print() {
        assert_eq!(
            plain("the <strong>rent</strong> &amp; fees"),
            "the rent & fees"
        );
        assert_eq!(format!("{:?}", Key::new("sk-secret")), "Key(***)");
        let b = Backend::Brave {
            url: BRAVE_URL.into(),
            key: Key::new("sk-secret"),
        };
        assert!(!format!("{b:?}").contains("sk-secret"));
    }
}
