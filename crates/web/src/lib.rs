//! pinch-web: the host's reach to the web on an agent's behalf (issue 17,
//! decision 0042). The sandbox has no network; its `web_fetch` tool asks
//! the host through the credential proxy's socket, and the host fetches
//! here: a real HTTP client (reqwest, rustls), redirects followed one hop
//! at a time, each hop checked by the SSRF guard ([`guard`]), the body
//! capped, the content turned into readable text ([`extract`]), a
//! per-group rate limit and a short cache.
//!
//! Knows nothing of sessions, SQLite or channels: the caller passes the
//! agent group's id and policy.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pinch_policy::hosts::HostPatterns;
use pinch_policy::rate::Bucket;
use reqwest::Url;
use serde::{Deserialize, Serialize};

mod extract;
mod guard;
pub mod search;
pub mod speech;
#[cfg(feature = "test-support")]
pub mod testing;
pub mod voice;

/// HTML from anywhere (a page, a mail) as readable text: Markdown, with
/// scripts and styles dropped; a document over 1 MiB is cut first and one
/// nested deeper than the converter is trusted with is read as plain text
/// (the same converter `web_fetch` uses, guards included).
pub fn html_to_text(html: &str) -> String {
    let mut source = html.to_owned();
    extract::cut(&mut source, extract::MAX_HTML);
    extract::html(&source).text
}

/// The install's web settings (`[web_fetch]` in `pinch.toml`).
#[derive(Clone, Debug)]
pub struct Settings {
    /// `web_fetch` for every group unless its own policy says otherwise.
    pub fetch: bool,
    /// Private hosts the owner lets agents fetch (`host`, `host:port`,
    /// `*.domain`; any port when none is given).
    pub allow_private: HostPatterns,
    /// Bytes read from a response at most (the rest is cut, and said).
    pub max_download: u64,
    /// Characters of text returned at most.
    pub max_chars: usize,
    /// The whole fetch, redirects and body included.
    pub timeout: Duration,
    pub max_redirects: usize,
    /// Network fetches per agent group per minute (cache hits are free).
    pub per_minute: u32,
    /// How long a fetched page is served from the cache.
    pub cache_ttl: Duration,
    /// The owner's search backend (`[web_search]`); `None`: no web_search.
    pub search: Option<search::Backend>,
    /// Search results returned at most.
    pub search_max: usize,
    /// The owner's transcription endpoint (`[voice]`); `None`: voice
    /// notes reach the agent as files only.
    pub voice: Option<voice::Endpoint>,
    /// The owner's speech endpoint (`[voice] speech_url`); `None`: no
    /// `send_voice`.
    pub speech: Option<speech::SpeechEndpoint>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            fetch: true,
            allow_private: HostPatterns::default(),
            max_download: 5 * 1024 * 1024,
            max_chars: 100_000,
            timeout: Duration::from_secs(30),
            max_redirects: 10,
            per_minute: 30,
            cache_ttl: Duration::from_secs(300),
            search: None,
            search_max: 10,
            voice: None,
            speech: None,
        }
    }
}

/// An agent group's web policy (`agent_configs.web`, a JSON object):
/// `{"fetch": false}` turns `web_fetch` off, `{"search": false}`
/// `web_search`; `allow` (when not empty) and `deny` are host patterns for
/// fetches (any port when none is given).
#[derive(Clone, Debug, Default)]
pub struct GroupPolicy {
    /// `None`: the install's [`Settings::fetch`].
    pub fetch: Option<bool>,
    /// `None`: on when the install has a search backend.
    pub search: Option<bool>,
    /// Voice notes transcribed; `None`: on when the install has `[voice]`.
    pub voice: Option<bool>,
    pub allow: HostPatterns,
    pub deny: HostPatterns,
}

/// The JSON shape of `agent_configs.web`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GroupPolicyJson {
    fetch: Option<bool>,
    search: Option<bool>,
    voice: Option<bool>,
    #[serde(default)]
    allow: Vec<String>,
    #[serde(default)]
    deny: Vec<String>,
}

/// What `--web` takes, for error messages.
pub const POLICY_EXAMPLE: &str = r#"{"fetch":true,"search":true,"voice":true,"allow":["*.wikipedia.org"],"deny":["example.com"]}"#;

impl GroupPolicy {
    /// Parses `agent_configs.web` (NULL or empty: the install's defaults).
    pub fn from_json(v: Option<&str>) -> Result<GroupPolicy, String> {
        let Some(text) = v.map(str::trim).filter(|t| !t.is_empty()) else {
            return Ok(GroupPolicy::default());
        };
        let j: GroupPolicyJson = serde_json::from_str(text)
            .map_err(|e| format!("must be a JSON object like {POLICY_EXAMPLE} ({e})"))?;
        Ok(GroupPolicy {
            fetch: j.fetch,
            search: j.search,
            voice: j.voice,
            allow: HostPatterns::parse_as(&ascii_hosts(&j.allow), "web.allow", None)?,
            deny: HostPatterns::parse_as(&ascii_hosts(&j.deny), "web.deny", None)?,
        })
    }
}

/// Host patterns with their names as a URL's host is compared: an entry
/// written in Unicode (`bücher.example`, `*.例え.jp:8443`) in its ASCII
/// (punycode) form, the form `url` gives every fetched URL's host. Entries
/// that are not names are left for the pattern parser to judge.
pub fn ascii_hosts<S: AsRef<str>>(entries: &[S]) -> Vec<String> {
    entries
        .iter()
        .map(|e| {
            let e = e.as_ref().trim();
            let (wild, rest) = match e.strip_prefix("*.") {
                Some(r) => ("*.", r),
                None => ("", e),
            };
            let (name, port) = match rest.rsplit_once(':') {
                Some((n, p)) if !n.contains(':') && !n.starts_with('[') => (n, Some(p)),
                _ => (rest, None),
            };
            if name.is_ascii() {
                return e.to_owned();
            }
            match url::Host::parse(name) {
                Ok(url::Host::Domain(ascii)) => match port {
                    Some(p) => format!("{wild}{ascii}:{p}"),
                    None => format!("{wild}{ascii}"),
                },
                _ => e.to_owned(),
            }
        })
        .collect()
}

/// A fetched page as the agent gets it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Page {
    /// The URL asked for.
    pub url: String,
    /// Where the redirects ended.
    pub final_url: String,
    pub status: u16,
    pub content_type: Option<String>,
    pub title: Option<String>,
    pub text: String,
    /// The body was longer than the download cap or the text longer than
    /// the character cap, and was cut.
    pub truncated: bool,
    /// Served from the cache (fetched within the last few minutes).
    pub cached: bool,
}

/// Why a fetch gave no page, worded for the agent; [`FetchError::status`]
/// is what the proxy answers with.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FetchError {
    #[error("{0}")]
    BadRequest(String),
    #[error("refused: {0}")]
    Refused(String),
    #[error("too many fetches: this agent group may fetch {per_minute} pages a minute; try again in {wait_s} s")]
    RateLimited { per_minute: u32, wait_s: u64 },
    #[error("not supported: {0}")]
    Unsupported(String),
    #[error("the fetch failed: {0}")]
    Failed(String),
    #[error("the fetch took longer than {0} s ([web_fetch] timeout_s)")]
    TimedOut(u64),
    #[error("{0}")]
    Unavailable(String),
    /// An owner's service (the transcription endpoint) failed; the text
    /// names it.
    #[error("{0}")]
    Service(String),
}

impl FetchError {
    pub fn status(&self) -> u16 {
        match self {
            FetchError::BadRequest(_) => 400,
            FetchError::Refused(_) => 403,
            FetchError::RateLimited { .. } => 429,
            FetchError::Unsupported(_) => 415,
            FetchError::Failed(_) => 502,
            FetchError::TimedOut(_) => 504,
            FetchError::Unavailable(_) => 503,
            FetchError::Service(_) => 502,
        }
    }
}

/// A cached page and the hosts its redirects passed through (each checked
/// again against the asking group's lists).
struct Cached {
    at: Instant,
    hops: Vec<Url>,
    page: Page,
}

const CACHE_ENTRIES: usize = 256;
/// Network fetches in flight at once, all groups together: with the 5 MiB
/// download cap, at most 40 MiB of bodies held (others wait their turn,
/// within their own timeout).
const FETCHES_IN_FLIGHT: usize = 8;
/// The cache's texts together, at most (oldest entries go first).
const CACHE_BYTES: usize = 64 * 1024 * 1024;
/// Stack of the thread that converts one page (the tree is at most
/// `extract::MAX_DEPTH`-ish deep; this leaves a wide margin).
const CONVERT_STACK: usize = 64 * 1024 * 1024;

/// The fetcher, shared by every session's proxy.
pub struct Web {
    settings: Settings,
    client: reqwest::Client,
    /// For the owner's search backend: no guard (the owner chose it).
    search_client: reqwest::Client,
    cache: Mutex<HashMap<String, Cached>>,
    buckets: Mutex<HashMap<String, Bucket>>,
    /// Transcriptions per group (the owner's key pays for each).
    voice_buckets: Mutex<HashMap<String, Bucket>>,
    /// Voice replies per group.
    speech_buckets: Mutex<HashMap<String, Bucket>>,
    epoch: Instant,
    /// Pages converted at once (each on its own thread).
    converting: tokio::sync::Semaphore,
    /// Fetches in flight across every session (each may hold a response
    /// of up to `max_download` bytes while it is read).
    fetching: tokio::sync::Semaphore,
    /// For the owner's transcription endpoint: no guard, no redirects.
    voice_client: reqwest::Client,
    /// Transcriptions in flight across every session; the proxy takes a
    /// permit before it reads the audio ([`Web::voice_slot`]).
    transcribing: Arc<tokio::sync::Semaphore>,
}

impl Web {
    pub fn new(settings: Settings) -> Result<Web, String> {
        let resolver = guard::GuardedResolver {
            allow_private: Arc::new(settings.allow_private.clone()),
        };
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .dns_resolver(Arc::new(resolver))
            .connect_timeout(Duration::from_secs(10).min(settings.timeout))
            .user_agent(concat!("pinch/", env!("CARGO_PKG_VERSION"), " (web_fetch)"))
            .build()
            .map_err(|e| format!("building the web client: {e}"))?;
        let search_client = reqwest::Client::builder()
            .timeout(settings.timeout)
            // A redirect would carry the key's header to another host.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!(
                "pinch/",
                env!("CARGO_PKG_VERSION"),
                " (web_search)"
            ))
            .build()
            .map_err(|e| format!("building the search client: {e}"))?;
        let voice_client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("pinch/", env!("CARGO_PKG_VERSION"), " (voice)"))
            .build()
            .map_err(|e| format!("building the transcription client: {e}"))?;
        Ok(Web {
            settings,
            voice_client,
            transcribing: Arc::new(tokio::sync::Semaphore::new(voice::IN_FLIGHT)),
            client,
            search_client,
            cache: Mutex::default(),
            buckets: Mutex::default(),
            voice_buckets: Mutex::default(),
            speech_buckets: Mutex::default(),
            epoch: Instant::now(),
            converting: tokio::sync::Semaphore::new(2),
            fetching: tokio::sync::Semaphore::new(FETCHES_IN_FLIGHT),
        })
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Fetches `url` for the agent group `group` under its `policy`;
    /// `max_chars` (capped by the install's) bounds the text returned.
    pub async fn fetch(
        &self,
        group: &str,
        policy: &GroupPolicy,
        url: &str,
        max_chars: Option<usize>,
    ) -> Result<Page, FetchError> {
        if !self.fetch_on(policy) {
            return Err(FetchError::Refused(format!(
                "web_fetch is off for agent group {group:?}; the owner can turn it on with `pinch admin groups config-set {group} --web '{{\"fetch\":true}}'`"
            )));
        }
        let start = Url::parse(url.trim())
            .map_err(|e| FetchError::BadRequest(format!("{url:?} is not a URL ({e})")))?;
        let allow = &self.settings.allow_private;
        guard::check_hop(&start, policy, allow).map_err(FetchError::Refused)?;
        let max_chars = max_chars
            .unwrap_or(self.settings.max_chars)
            .clamp(1, self.settings.max_chars);
        // Keyed by group too: one group cannot learn from `cached` (or the
        // timing) what another fetched.
        let key = format!("{group}\n{start}");
        if let Some(page) = self.cached(&key, policy, max_chars) {
            return Ok(page);
        }
        self.take_token(group)?;
        let limit = self.settings.timeout;
        let fetch = async {
            let _slot = self
                .fetching
                .acquire()
                .await
                .map_err(|_| FetchError::Failed("the host is shutting down".into()))?;
            self.fetch_hops(start.clone(), policy).await
        };
        let (page, hops) = match tokio::time::timeout(limit, fetch).await {
            Ok(r) => r?,
            Err(_) => return Err(FetchError::TimedOut(limit.as_secs())),
        };
        let mut shown = page.clone();
        shown.truncated |= extract::cut(&mut shown.text, max_chars);
        if let (false, Ok(mut c)) = (self.settings.cache_ttl.is_zero(), self.cache.lock()) {
            let ttl = self.settings.cache_ttl;
            c.retain(|_, v| v.at.elapsed() <= ttl);
            let mut bytes: usize = c.values().map(|v| v.page.text.len()).sum();
            while !c.is_empty()
                && (c.len() >= CACHE_ENTRIES || bytes + page.text.len() > CACHE_BYTES)
            {
                let oldest = c.iter().min_by_key(|(_, v)| v.at).map(|(k, _)| k.clone());
                if let Some(v) = oldest.and_then(|k| c.remove(&k)) {
                    bytes -= v.page.text.len();
                }
            }
            c.insert(
                key,
                Cached {
                    at: Instant::now(),
                    hops,
                    page,
                },
            );
        }
        Ok(shown)
    }

    /// Whether `web_search` is offered to a group under `policy`.
    pub fn search_on(&self, policy: &GroupPolicy) -> bool {
        self.settings.search.is_some() && policy.search.unwrap_or(true)
    }

    /// Whether `web_fetch` is offered to a group under `policy`.
    pub fn fetch_on(&self, policy: &GroupPolicy) -> bool {
        policy.fetch.unwrap_or(self.settings.fetch)
    }

    /// Searches the owner's backend for `group`; `count` hits at most
    /// (capped by the install's `search_max`). Counts against the same
    /// per-group rate as fetches.
    pub async fn search(
        &self,
        group: &str,
        policy: &GroupPolicy,
        query: &str,
        count: Option<usize>,
    ) -> Result<Vec<search::Hit>, FetchError> {
        let Some(backend) = &self.settings.search else {
            return Err(FetchError::Refused(
                "no search backend is configured: the owner can set one in pinch.toml under [web_search] (backend = \"searxng\", \"brave\" or \"tavily\")".into(),
            ));
        };
        if !self.search_on(policy) {
            return Err(FetchError::Refused(format!(
                "web_search is off for agent group {group:?}; the owner can turn it on with `pinch admin groups config-set {group} --web '{{\"search\":true}}'`"
            )));
        }
        let query = query.trim();
        if query.is_empty() {
            return Err(FetchError::BadRequest("the query is empty".into()));
        }
        let count = count.unwrap_or(5).clamp(1, self.settings.search_max.max(1));
        self.take_token(group)?;
        let limit = self.settings.timeout;
        match tokio::time::timeout(
            limit,
            search::run(&self.search_client, backend, query, count),
        )
        .await
        {
            Ok(r) => r,
            Err(_) => Err(FetchError::TimedOut(limit.as_secs())),
        }
    }

    /// A fresh cached copy whose every hop this group may still reach.
    fn cached(&self, key: &str, policy: &GroupPolicy, max_chars: usize) -> Option<Page> {
        let c = self.cache.lock().ok()?;
        let hit = c.get(key)?;
        if hit.at.elapsed() > self.settings.cache_ttl {
            return None;
        }
        let allow = &self.settings.allow_private;
        if hit
            .hops
            .iter()
            .any(|u| guard::check_hop(u, policy, allow).is_err())
        {
            return None;
        }
        let mut page = hit.page.clone();
        page.cached = true;
        page.truncated |= extract::cut(&mut page.text, max_chars);
        Some(page)
    }

    fn take_token(&self, group: &str) -> Result<(), FetchError> {
        let now = i64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(i64::MAX);
        let per_minute = self.settings.per_minute;
        let mut b = self
            .buckets
            .lock()
            .map_err(|_| FetchError::Failed("internal error (rate limiter)".into()))?;
        let bucket = b
            .entry(group.to_owned())
            .or_insert_with(|| Bucket::new(per_minute, now));
        bucket.take(now).map_err(|ms| FetchError::RateLimited {
            per_minute,
            wait_s: ms.div_ceil(1000),
        })
    }

    /// Requests `url`, following redirects one checked hop at a time;
    /// returns the page (text not yet cut to the caller's size) and the hops.
    async fn fetch_hops(
        &self,
        first: Url,
        policy: &GroupPolicy,
    ) -> Result<(Page, Vec<Url>), FetchError> {
        let allow = &self.settings.allow_private;
        let mut url = first.clone();
        let mut hops = vec![url.clone()];
        loop {
            let resp = self
                .client
                .get(url.clone())
                .header(
                    "accept",
                    "text/html,application/xhtml+xml,application/json,text/plain;q=0.9,*/*;q=0.5",
                )
                .send()
                .await
                .map_err(|e| send_error(&url, &e))?;
            let status = resp.status();
            if status.is_redirection() {
                if let Some(loc) = resp.headers().get("location") {
                    if hops.len() > self.settings.max_redirects {
                        return Err(FetchError::Failed(format!(
                            "more than {} redirects, starting at {first}",
                            self.settings.max_redirects
                        )));
                    }
                    let loc = String::from_utf8_lossy(loc.as_bytes()).into_owned();
                    let next = url.join(&loc).map_err(|e| {
                        FetchError::Failed(format!(
                            "{url} redirected to {loc:?}, which is not a URL ({e})"
                        ))
                    })?;
                    guard::check_hop(&next, policy, allow).map_err(|why| {
                        FetchError::Refused(format!("{url} redirected to {next}: {why}"))
                    })?;
                    url = next;
                    hops.push(url.clone());
                    continue;
                }
            }
            let content_type = resp
                .headers()
                .get("content-type")
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
            let (body, cut_short) = self.read_body(resp, &url).await?;
            let page = self
                .page(&first, &url, status.as_u16(), content_type, body, cut_short)
                .await?;
            return Ok((page, hops));
        }
    }

    async fn read_body(
        &self,
        mut resp: reqwest::Response,
        url: &Url,
    ) -> Result<(Vec<u8>, bool), FetchError> {
        let cap = usize::try_from(self.settings.max_download).unwrap_or(usize::MAX);
        let mut body = Vec::new();
        loop {
            match resp.chunk().await {
                Ok(Some(c)) => {
                    let room = cap - body.len();
                    if c.len() >= room {
                        body.extend_from_slice(&c[..room]);
                        // More than the cap, or exactly it with more to come.
                        let more = c.len() > room || !matches!(resp.chunk().await, Ok(None));
                        return Ok((body, more));
                    }
                    body.extend_from_slice(&c);
                }
                Ok(None) => return Ok((body, false)),
                Err(e) => return Err(FetchError::Failed(format!("reading {url}: {}", scrub(&e)))),
            }
        }
    }

    async fn page(
        &self,
        first: &Url,
        url: &Url,
        status: u16,
        content_type: Option<String>,
        mut body: Vec<u8>,
        mut cut_short: bool,
    ) -> Result<Page, FetchError> {
        let ct = content_type.clone();
        let (title, mut text) = match extract::kind(ct.as_deref(), &body) {
            extract::Kind::Unsupported(why) => {
                return Err(FetchError::Unsupported(format!(
                    "{url} (status {status}) is {why}"
                )))
            }
            extract::Kind::Html => {
                if body.len() > extract::MAX_HTML {
                    body.truncate(extract::MAX_HTML);
                    cut_short = true;
                }
                // Parsing and converting is CPU work the agent's page
                // decides: off the async workers, on a thread with a large
                // stack, two at a time.
                let _slot = self
                    .converting
                    .acquire()
                    .await
                    .map_err(|_| FetchError::Failed("the host is shutting down".into()))?;
                let (tx, rx) = tokio::sync::oneshot::channel();
                std::thread::Builder::new()
                    .name("pinch-web-html".into())
                    .stack_size(CONVERT_STACK)
                    .spawn(move || {
                        let e = extract::html(&extract::decode(ct.as_deref(), &body));
                        let _ = tx.send(e);
                    })
                    .map_err(|e| FetchError::Failed(format!("starting the HTML reader: {e}")))?;
                let e = rx
                    .await
                    .map_err(|_| FetchError::Failed("the page could not be read as HTML".into()))?;
                (e.title, e.text)
            }
            extract::Kind::Text => (None, extract::decode(ct.as_deref(), &body)),
        };
        // Only what an agent may be shown is kept (the cache holds it too).
        cut_short |= extract::cut(&mut text, self.settings.max_chars);
        Ok(Page {
            url: first.to_string(),
            final_url: url.to_string(),
            status,
            content_type,
            title,
            text,
            truncated: cut_short,
            cached: false,
        })
    }
}

/// A send error as the agent reads it: the guard's reason when it was the
/// guard, else reqwest's error without the URL (already named).
fn send_error(url: &Url, e: &reqwest::Error) -> FetchError {
    if let Some(why) = guard::refusal_in(e) {
        return FetchError::Refused(why);
    }
    if e.is_timeout() {
        return FetchError::Failed(format!("connecting to {url} timed out"));
    }
    FetchError::Failed(format!("requesting {url}: {}", scrub(e)))
}

/// reqwest's message and its causes, without repeating the URL.
fn scrub(e: &reqwest::Error) -> String {
    let mut parts = vec![e.to_string()];
    let mut cur = std::error::Error::source(e);
    while let Some(s) = cur {
        parts.push(s.to_string());
        cur = s.source();
    }
    parts.dedup();
    parts.join(": ")
}
