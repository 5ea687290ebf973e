//! The host's own routes on the proxy socket (decision 0042):
//! `POST /_pinch/web/fetch` (`{"url": …, "max_chars": …}`) and
//! `POST /_pinch/web/search` (`{"query": …, "count": …}`), and
//! `POST /_pinch/voice/transcribe` (`{"path": "/workspace/inbox/…"}`,
//! answered by `super::voice`; decision 0046). The host does
//! the work under the session's agent group policy with
//! [`pinch_web::Web`] and answers `200` with JSON (the page; `{"results":
//! […]}`; `{"text": …}`), or the refusal's status with `{"error": …}`.
//! The sandbox never opens a network connection of its own.

use super::body::{error, read_body, write_answer};
use super::*;

/// The host's routes (their paths start with `/_pinch/`, which no
/// configured model route can be named).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum HostRoute {
    Fetch,
    Search,
    Transcribe,
    Speak,
    Stream,
}

impl HostRoute {
    pub(super) fn of(path: &str) -> Option<HostRoute> {
        match path {
            "/_pinch/web/fetch" => Some(HostRoute::Fetch),
            "/_pinch/web/search" => Some(HostRoute::Search),
            "/_pinch/voice/transcribe" => Some(HostRoute::Transcribe),
            "/_pinch/voice/speak" => Some(HostRoute::Speak),
            "/_pinch/stream" => Some(HostRoute::Stream),
            _ => None,
        }
    }

    /// The largest request body the route reads.
    pub(super) fn max_request(self) -> u64 {
        match self {
            HostRoute::Fetch | HostRoute::Search | HostRoute::Transcribe | HostRoute::Speak => {
                64 * 1024
            }
            // A piece of up to 16 KiB of text, JSON-escaped (a control
            // character takes six bytes).
            HostRoute::Stream => 128 * 1024,
        }
    }

    /// What the route's body is, for a refusal.
    pub(super) fn body(self) -> &'static str {
        match self {
            HostRoute::Fetch => r#"a JSON body {"url": …}"#,
            HostRoute::Search => r#"a JSON body {"query": …}"#,
            HostRoute::Transcribe => r#"a JSON body {"path": "/workspace/inbox/…"}"#,
            HostRoute::Speak => r#"a JSON body {"text": …}"#,
            HostRoute::Stream => r#"a JSON body {"reply_to": …, "at": …, "text": …}"#,
        }
    }
}

pub(super) const NO_WEB: &str = "the host's web tools are not available through this proxy";

/// What a session's proxy needs to fetch for its agent group.
pub struct WebAccess {
    pub web: Arc<pinch_web::Web>,
    pub group: String,
    /// The group's policy, or why it could not be read (web_fetch is then
    /// refused with that reason).
    pub policy: Result<pinch_web::GroupPolicy, String>,
    /// The session's inbox on the host (files people sent; read-only in
    /// the sandbox): the only files transcribed.
    pub(super) inbox: std::path::PathBuf,
    /// One voice note at a time per session (the runner asks one by one),
    /// so one session cannot take every transcription turn.
    pub(super) voice_busy: Arc<Semaphore>,
    /// Transcripts made for this session, by the file's (device, inode)
    /// (oldest first): however the path is spelt, a file is paid for once.
    pub(super) transcripts: std::sync::Mutex<Vec<((u64, u64), String)>>,
    /// Streamed reply text (decision 0048); `None`: not taken.
    pub(super) stream: Option<Arc<super::stream::StreamAccess>>,
    /// The group's secrets, injected on `CONNECT` (decision 0050).
    pub(super) secrets: Option<Arc<super::inject::SecretAccess>>,
}

impl WebAccess {
    pub fn new(
        web: Arc<pinch_web::Web>,
        group: String,
        policy: Result<pinch_web::GroupPolicy, String>,
        inbox: std::path::PathBuf,
    ) -> WebAccess {
        WebAccess {
            web,
            group,
            policy,
            inbox,
            voice_busy: Arc::new(Semaphore::new(1)),
            transcripts: std::sync::Mutex::default(),
            stream: None,
            secrets: None,
        }
    }

    /// Takes streamed reply text for the live view.
    pub fn with_stream(mut self, s: super::stream::StreamAccess) -> WebAccess {
        self.stream = Some(Arc::new(s));
        self
    }

    /// Injects the group's secrets (decision 0050).
    pub fn with_secrets(mut self, s: super::inject::SecretAccess) -> WebAccess {
        self.secrets = Some(Arc::new(s));
        self
    }
}

#[derive(serde::Deserialize)]
struct FetchRequest {
    url: String,
    max_chars: Option<usize>,
}

#[derive(serde::Deserialize)]
struct SearchRequest {
    query: String,
    count: Option<usize>,
}

/// Reads the request body (`len` bytes, `early` already read) and answers.
pub(super) async fn answer_route(
    mut c: UnixStream,
    route: HostRoute,
    len: u64,
    early: &[u8],
    ctx: &Ctx,
) -> std::io::Result<()> {
    let lim = &ctx.limits;
    // `decide` capped `len` at the route's maximum.
    let body = read_body(&mut c, len, early, lim, "a request to a web route").await?;
    let (code, json) = answer(route, body, ctx).await;
    write_answer(&mut c, code, &json, lim).await
}

/// The agent's URL for a log line: escaped (`?`) and at most 512 characters.
fn shown(url: &str) -> String {
    url.chars().take(512).collect()
}

/// A route's JSON request, or the 400 naming the shape it needs.
fn parse<T: serde::de::DeserializeOwned>(
    body: &[u8],
    shape: &str,
) -> Result<T, (u16, serde_json::Value)> {
    serde_json::from_slice(body)
        .map_err(|e| error(400, format!("the request must be JSON {shape} ({e})")))
}

async fn answer(route: HostRoute, body: Vec<u8>, ctx: &Ctx) -> (u16, serde_json::Value) {
    let Some(access) = ctx.web.as_deref() else {
        return error(403, NO_WEB.into());
    };
    let policy = match &access.policy {
        Ok(p) => p,
        Err(why) => {
            return error(
                403,
                format!("refused: this agent group's web policy is invalid: {why}"),
            )
        }
    };
    let sid = ctx.session_id.as_str();
    let started = Instant::now();
    match route {
        HostRoute::Fetch => {
            let req: FetchRequest = match parse(&body, r#"{"url": "https://…"}"#) {
                Ok(r) => r,
                Err(refusal) => return refusal,
            };
            let r = access
                .web
                .fetch(&access.group, policy, &req.url, req.max_chars)
                .await;
            let ms = started.elapsed().as_millis() as u64;
            match r {
                Ok(page) => {
                    tracing::info!(session_id = sid, url = ?shown(&req.url), final_url = %page.final_url, status = page.status, cached = page.cached, ms, "web_fetch");
                    (200, serde_json::to_value(&page).unwrap_or_default())
                }
                Err(e) => {
                    tracing::warn!(session_id = sid, url = ?shown(&req.url), ms, "web_fetch: {e}");
                    error(e.status(), e.to_string())
                }
            }
        }
        HostRoute::Search => {
            let req: SearchRequest = match parse(&body, r#"{"query": "…"}"#) {
                Ok(r) => r,
                Err(refusal) => return refusal,
            };
            let r = access
                .web
                .search(&access.group, policy, &req.query, req.count)
                .await;
            let ms = started.elapsed().as_millis() as u64;
            match r {
                Ok(hits) => {
                    tracing::info!(session_id = sid, results = hits.len(), ms, "web_search");
                    (200, serde_json::json!({ "results": hits }))
                }
                Err(e) => {
                    tracing::warn!(session_id = sid, ms, "web_search: {e}");
                    error(e.status(), e.to_string())
                }
            }
        }
        // Answered by `super::voice`.
        HostRoute::Transcribe | HostRoute::Speak | HostRoute::Stream => {
            error(500, "internal error: misrouted".into())
        }
    }
}
