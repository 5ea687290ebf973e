//! Web chat (SPEC §9.2.2): one page and a WebSocket, served on the shared
//! HTTP listener. Every route but the static script and style checks
//! [`WebAuth`]: the session cookie a one-time login link (`/?login=<code>`)
//! sets, or `Authorization: Bearer <web token>` (constant-time); a missing
//! or wrong one is 401. The token itself is never accepted in a URL.
//!
//! Routes: `GET /` the page (HTML embedded in the binary; its script and
//! style at `GET /chat.js` and `GET /chat.css`, so the page's CSP allows no
//! inline script), `GET /ws` the WebSocket, `POST /upload?name=` a file
//! (raw body, up to [`MAX_ATTACHMENT`]; answers an upload id the next
//! message names), `GET /files/<dir>/<name>` a file the agent sent (always
//! `Content-Disposition: attachment`, `application/octet-stream`, and a
//! sandboxing CSP: an agent's `.html` never renders as our origin).
//! `Host`/`Origin` are checked by the listener's guard layer
//! ([`crate::http::serve`]).
//!
//! One conversation per browser user: `platform_id` = the user (`?user=`,
//! default the owner's login), sender `web:<user>`. WebSocket frames are
//! JSON. Client: `message{text, client_id, attachments[{upload}|{name,
//! size}]}`, `click{callback}`, `stop` (cancel the agent's turn). Server:
//! `hello{user, about}`, `history{items}`, `accepted{client_id, id}`,
//! `handled{client_id, id, note}`, `rejected{client_id, reason}`,
//! `message{id, text, html, buttons, files[{name, url}], in_reply_to}`,
//! `edit{id, text, html}`, `reaction{id, emoji}`, `notice{text}`, and the
//! live view (decision 0048): `working{reply_to, state, since_ms}`,
//! `draft{reply_to, text, html}` (the reply so far, replaced by the
//! `message` whose `in_reply_to` names it), `idle{reply_to}`; and
//! `conversations{items, current, default}` (the web conversations, for
//! the page's list). A client `message` may carry `edit_of` (decision 0049).
//!
//! A reply is delivered when at least one tab of its user is connected;
//! with none, delivery waits (`Unavailable`) and resumes when one connects
//! (missed messages then arrive live, older ones are in the history).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use axum::body::{to_bytes, Body};
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use tokio::sync::mpsc;

use crate::http::{unauthorized as refuse, WebAuth, LOGIN_HELP};
use crate::{
    Address, BoxFuture, Button, Capabilities, Channel, ChannelEvent, DeliverError,
    InboundAttachment, Live, Outgoing, MAX_ATTACHMENT,
};

pub mod markdown;
mod tab;

pub const CHANNEL_TYPE: &str = "web";
const PAGE: &str = include_str!("web_page.html");
const SCRIPT: &str = include_str!("web_page.js");
const STYLE: &str = include_str!("web_page.css");
/// What a download may do if a browser renders it anyway: nothing.
const FILE_CSP: &str = "default-src 'none'; sandbox; frame-ancestors 'none'";
/// Messages shown on connect.
const HISTORY: usize = 200;
/// Uploads not yet named by a message, per host (oldest dropped beyond
/// either cap: they live in memory until the message that names them).
const MAX_PENDING_UPLOADS: usize = 32;
const MAX_PENDING_BYTES: u64 = 100 << 20;

/// A tab's latest streamed draft frame: a slot, not a queue, so a tab
/// that reads slowly holds one draft, never a backlog (decision 0048).
#[derive(Default)]
pub(crate) struct DraftSlot {
    pub(crate) frame: Mutex<Option<String>>,
    pub(crate) ready: tokio::sync::Notify,
}

type Clients = HashMap<String, Vec<(u64, mpsc::UnboundedSender<String>, Arc<DraftSlot>)>>;

pub struct WebChannel {
    auth: Arc<WebAuth>,
    default_user: String,
    /// Copies of files the agent sent (`<dir>/files/<id>/<name>`).
    files_dir: PathBuf,
    events: mpsc::Sender<ChannelEvent>,
    clients: Mutex<Clients>,
    uploads: Mutex<Vec<(String, String, InboundAttachment)>>,
    next: std::sync::atomic::AtomicU64,
    /// The agent and model the page's header names ([`WebChannel::set_about`]).
    about: Mutex<Option<String>>,
}

/// A user name: 1–64 of `[A-Za-z0-9_.-]`.
pub fn valid_user(u: &str) -> bool {
    !u.is_empty()
        && u.len() <= 64
        && u.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

fn random_id() -> String {
    let mut b = [0u8; 12];
    use ring::rand::SecureRandom;
    let _ = ring::rand::SystemRandom::new().fill(&mut b);
    crate::http::hex(&b)
}

impl WebChannel {
    /// `auth` is shared with the dashboard (one login signs both in).
    pub fn new(
        auth: Arc<WebAuth>,
        dir: PathBuf,
        default_user: String,
        events: mpsc::Sender<ChannelEvent>,
    ) -> Result<Arc<WebChannel>, String> {
        if !valid_user(&default_user) {
            return Err(format!("the login {default_user:?} cannot be a web chat user name (use letters, digits, '-', '_' or '.')"));
        }
        let files_dir = dir.join("files");
        std::fs::create_dir_all(&files_dir)
            .map_err(|e| format!("creating {}: {e}", files_dir.display()))?;
        Ok(Arc::new(WebChannel {
            auth,
            default_user,
            files_dir,
            events,
            clients: Mutex::new(HashMap::new()),
            uploads: Mutex::new(Vec::new()),
            next: std::sync::atomic::AtomicU64::new(1),
            about: Mutex::new(None),
        }))
    }

    /// What the page's header says it talks to (sent in every `hello`).
    pub fn set_about(&self, about: String) {
        *self.about.lock().unwrap() = Some(about);
    }

    /// The routes this adapter serves.
    pub fn router(self: &Arc<Self>) -> axum::Router {
        axum::Router::new()
            .route("/", get(page))
            .route(
                "/chat.js",
                get(|| async {
                    (
                        [
                            ("content-type", "text/javascript; charset=utf-8"),
                            ("cache-control", "no-cache"),
                        ],
                        SCRIPT,
                    )
                }),
            )
            .route(
                "/chat.css",
                get(|| async {
                    (
                        [
                            ("content-type", "text/css; charset=utf-8"),
                            ("cache-control", "no-cache"),
                        ],
                        STYLE,
                    )
                }),
            )
            .route("/ws", get(ws))
            .route("/upload", post(upload))
            .route("/files/{dir}/{name}", get(download))
            .with_state(self.clone())
    }

    fn authorized(&self, headers: &HeaderMap) -> bool {
        self.auth.authorized(headers)
    }

    /// The conversation's user; `Err`: why the name is refused (a 400).
    fn user(&self, q: &Auth) -> Result<String, String> {
        match q.user.as_deref() {
            None | Some("") => Ok(self.default_user.clone()),
            Some(u) if valid_user(u) => Ok(u.to_owned()),
            Some(u) => Err(format!(
                "user {u:?} is not valid: use 1-64 letters, digits, '-', '_' or '.'"
            )),
        }
    }

    /// Sends a frame to every tab of a user; false if none is connected.
    fn push(&self, user: &str, frame: serde_json::Value) -> bool {
        let line = frame.to_string();
        let mut clients = self.clients.lock().unwrap();
        let Some(tabs) = clients.get_mut(user) else {
            return false;
        };
        tabs.retain(|(_, tx, _)| tx.send(line.clone()).is_ok());
        !tabs.is_empty()
    }

    /// Whether a tab of `user` is connected.
    fn connected(&self, user: &str) -> bool {
        self.clients.lock().unwrap().contains_key(user)
    }

    /// Puts a draft frame in every tab's slot of `user` (replacing the one
    /// not yet sent).
    fn push_draft(&self, user: &str, frame: String) {
        let clients = self.clients.lock().unwrap();
        for (_, _, slot) in clients.get(user).into_iter().flatten() {
            *slot.frame.lock().unwrap() = Some(frame.clone());
            slot.ready.notify_one();
        }
    }

    /// Copies a delivered file where `/files/…` serves it; returns its URL
    /// path. The folder is named from the message's id, so the history can
    /// link the file again after a reload ([`WebChannel::file_url`]).
    async fn keep_file(&self, f: &crate::OutFile, msg_id: &str) -> Result<String, DeliverError> {
        let name = file_name(&f.name);
        // A file kept under that name is never replaced (an agent picks its
        // rows' ids, so another session's row could name the same folder):
        // this copy then goes to a folder of its own.
        let mut dir = file_dir(msg_id);
        if self.files_dir.join(&dir).join(&name).exists() {
            dir = random_id();
        }
        let d = self.files_dir.join(&dir);
        tokio::fs::create_dir_all(&d)
            .await
            .map_err(|e| DeliverError::Retryable(format!("creating {}: {e}", d.display())))?;
        let copy = async {
            let mut from = tokio::fs::File::open(&f.path).await?;
            let mut to = tokio::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(d.join(&name))
                .await?;
            tokio::io::copy(&mut from, &mut to).await
        };
        copy.await
            .map_err(|e| DeliverError::Retryable(format!("copying {}: {e}", f.name)))?;
        Ok(format!("/files/{dir}/{}", urlencode(&name)))
    }
}

/// A delivered file's name as kept: no control characters, slashes or
/// leading dots.
fn file_name(name: &str) -> String {
    let name: String = name
        .chars()
        .filter(|c| !c.is_control() && *c != '/' && *c != '\\')
        .collect();
    let name = name.trim_start_matches('.').to_owned();
    if name.is_empty() {
        "file".to_owned()
    } else {
        name
    }
}

/// The folder a message's files are kept in: a hash of its id (hex, as
/// `/files/<dir>/…` requires).
fn file_dir(msg_id: &str) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, msg_id.as_bytes());
    crate::http::hex(&d.as_ref()[..16])
}

impl WebChannel {
    /// The URL of a file the message `msg_id` delivered, if it was kept.
    pub(crate) fn file_url(&self, msg_id: &str, name: &str) -> Option<String> {
        let (dir, name) = (file_dir(msg_id), file_name(name));
        self.files_dir
            .join(&dir)
            .join(&name)
            .is_file()
            .then(|| format!("/files/{dir}/{}", urlencode(&name)))
    }
}

fn urlencode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[derive(Deserialize, Default)]
struct Auth {
    /// A one-time login code (on `/` only).
    login: Option<String>,
    /// The long-lived token in a URL: refused with the way in.
    token: Option<String>,
    user: Option<String>,
    name: Option<String>,
}

fn text(status: StatusCode, msg: &str) -> Response {
    (
        status,
        [("content-type", "text/plain; charset=utf-8")],
        msg.to_owned(),
    )
        .into_response()
}

fn unauthorized(q: &Auth) -> Response {
    if q.token.is_some() {
        return refuse(&format!("the web token is no longer accepted in a URL (it would stay in history and logs): {LOGIN_HELP}"));
    }
    refuse(&format!("not signed in: {LOGIN_HELP}"))
}

async fn page(
    State(ch): State<Arc<WebChannel>>,
    Query(q): Query<Auth>,
    headers: HeaderMap,
) -> Response {
    if let Some(code) = q.login.as_deref() {
        let clean = match q.user.as_deref() {
            Some(u) if !u.is_empty() => format!("/?user={}", urlencode(u)),
            _ => "/".to_owned(),
        };
        return ch.auth.login(code, &headers, &clean);
    }
    if !ch.authorized(&headers) {
        return unauthorized(&q);
    }
    let mut r = Html(PAGE).into_response();
    r.headers_mut().insert(
        "cache-control",
        axum::http::HeaderValue::from_static("no-store"),
    );
    r
}

async fn upload(
    State(ch): State<Arc<WebChannel>>,
    Query(q): Query<Auth>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    if !ch.authorized(&headers) {
        return unauthorized(&q);
    }
    let user = match ch.user(&q) {
        Ok(u) => u,
        Err(why) => return text(StatusCode::BAD_REQUEST, &why),
    };
    let name = q
        .name
        .clone()
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "file".into());
    let bytes = match to_bytes(body, MAX_ATTACHMENT as usize).await {
        Ok(b) => b,
        Err(_) => {
            return text(
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!("the file is larger than {} MiB", MAX_ATTACHMENT >> 20),
            )
        }
    };
    let mime = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let id = random_id();
    let a = InboundAttachment {
        name,
        mime,
        size: bytes.len() as u64,
        data: Some(bytes.to_vec()),
    };
    let mut ups = ch.uploads.lock().unwrap();
    ups.push((id.clone(), user, a));
    while ups.len() > MAX_PENDING_UPLOADS
        || ups.iter().map(|(_, _, a)| a.size).sum::<u64>() > MAX_PENDING_BYTES
    {
        let (old, _, a) = ups.remove(0);
        tracing::info!(upload = %old, name = %a.name, "an upload no message named was dropped");
    }
    (
        StatusCode::OK,
        [("content-type", "application/json")],
        serde_json::json!({"upload": id}).to_string(),
    )
        .into_response()
}

async fn download(
    State(ch): State<Arc<WebChannel>>,
    Path((dir, name)): Path<(String, String)>,
    Query(q): Query<Auth>,
    headers: HeaderMap,
) -> Response {
    if !ch.authorized(&headers) {
        return unauthorized(&q);
    }
    let plain = |s: &str| {
        !s.is_empty()
            && s != "."
            && s != ".."
            && !s.contains('/')
            && !s.contains('\\')
            && !s.contains('\0')
    };
    if !plain(&dir) || !plain(&name) || !dir.bytes().all(|b| b.is_ascii_hexdigit()) {
        return text(StatusCode::NOT_FOUND, "no such file\n");
    }
    match tokio::fs::read(ch.files_dir.join(&dir).join(&name)).await {
        Ok(bytes) => {
            let disposition = format!("attachment; filename*=UTF-8''{}", urlencode(&name));
            let mut r = (StatusCode::OK, bytes).into_response();
            r.headers_mut().insert(
                "content-type",
                axum::http::HeaderValue::from_static("application/octet-stream"),
            );
            r.headers_mut().insert(
                "content-security-policy",
                axum::http::HeaderValue::from_static(FILE_CSP),
            );
            r.headers_mut().insert(
                "cache-control",
                axum::http::HeaderValue::from_static("private, no-store"),
            );
            let v = axum::http::HeaderValue::from_str(&disposition)
                .unwrap_or(axum::http::HeaderValue::from_static("attachment"));
            r.headers_mut().insert("content-disposition", v);
            r
        }
        Err(_) => text(StatusCode::NOT_FOUND, "no such file\n"),
    }
}

async fn ws(
    State(ch): State<Arc<WebChannel>>,
    Query(q): Query<Auth>,
    headers: HeaderMap,
    up: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Response {
    // The credential first: an unauthenticated caller learns nothing else.
    if !ch.authorized(&headers) {
        return unauthorized(&q);
    }
    let up = match up {
        Ok(u) => u,
        Err(e) => return e.into_response(),
    };
    let user = match ch.user(&q) {
        Ok(u) => u,
        Err(why) => return text(StatusCode::BAD_REQUEST, &why),
    };
    up.on_upgrade(move |socket| tab::session(ch, user, socket))
}

pub(crate) fn buttons_json(b: &[Button]) -> serde_json::Value {
    serde_json::Value::Array(
        b.iter()
            .map(|b| serde_json::json!({"label": b.label, "callback": b.callback}))
            .collect(),
    )
}

impl Channel for WebChannel {
    fn channel_type(&self) -> &'static str {
        CHANNEL_TYPE
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            edit: true,
            reactions: true,
            buttons: true,
            files: true,
            open_dm: true,
            max_text: 100_000,
            ..Default::default()
        }
    }

    fn deliver<'a>(
        &'a self,
        to: &'a Address,
        msg: &'a Outgoing,
    ) -> BoxFuture<'a, Result<String, DeliverError>> {
        Box::pin(async move {
            if !self.clients.lock().unwrap().contains_key(&to.platform_id) {
                return Err(DeliverError::Unavailable(format!(
                    "no browser of {} is connected",
                    to.platform_id
                )));
            }
            let mut files = Vec::new();
            for f in &msg.files {
                let url = self.keep_file(f, &msg.id).await?;
                files.push(serde_json::json!({"name": f.name, "url": url, "size": f.size}));
            }
            let frame = serde_json::json!({
                "type": "message", "id": msg.id, "text": msg.text, "html": markdown::to_html(&msg.text),
                "buttons": buttons_json(&msg.buttons), "files": files, "in_reply_to": msg.in_reply_to,
            });
            if !self.push(&to.platform_id, frame) {
                return Err(DeliverError::Unavailable(format!(
                    "no browser of {} is connected",
                    to.platform_id
                )));
            }
            Ok(msg.id.clone())
        })
    }

    fn notice<'a>(
        &'a self,
        to: &'a Address,
        text: &'a str,
    ) -> BoxFuture<'a, Result<(), DeliverError>> {
        Box::pin(async move {
            // No browser open: the host keeps the notice and sends it when
            // one connects (`Available`), as for every channel (issue 15).
            if self.push(
                &to.platform_id,
                serde_json::json!({"type": "notice", "text": text}),
            ) {
                Ok(())
            } else {
                Err(DeliverError::Unavailable(format!(
                    "no browser of {} is connected",
                    to.platform_id
                )))
            }
        })
    }

    fn edit<'a>(
        &'a self,
        to: &'a Address,
        platform_message_id: &'a str,
        text: &'a str,
    ) -> BoxFuture<'a, Result<(), DeliverError>> {
        Box::pin(async move {
            if self.push(
                &to.platform_id,
                serde_json::json!({"type": "edit", "id": platform_message_id, "text": text, "html": markdown::to_html(text)}),
            ) {
                Ok(())
            } else {
                Err(DeliverError::Unavailable(format!(
                    "no browser of {} is connected",
                    to.platform_id
                )))
            }
        })
    }

    fn react<'a>(
        &'a self,
        to: &'a Address,
        platform_message_id: &'a str,
        emoji: &'a str,
    ) -> BoxFuture<'a, Result<(), DeliverError>> {
        Box::pin(async move {
            if self.push(
                &to.platform_id,
                serde_json::json!({"type": "reaction", "id": platform_message_id, "emoji": emoji}),
            ) {
                Ok(())
            } else {
                Err(DeliverError::Unavailable(format!(
                    "no browser of {} is connected",
                    to.platform_id
                )))
            }
        })
    }

    fn live<'a>(&'a self, to: &'a Address, live: &'a Live) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let frame = match live {
                Live::Working {
                    reply_to,
                    state,
                    since_ms,
                } => {
                    serde_json::json!({"type": "working", "reply_to": reply_to, "state": state, "since_ms": since_ms})
                }
                // Rendered only for a connected tab, into its slot.
                Live::Draft { reply_to, text, .. } => {
                    if self.connected(&to.platform_id) {
                        let f = serde_json::json!({
                            "type": "draft", "reply_to": reply_to, "text": &**text, "html": markdown::to_html(text),
                        });
                        self.push_draft(&to.platform_id, f.to_string());
                    }
                    return;
                }
                Live::Idle { reply_to } => {
                    serde_json::json!({"type": "idle", "reply_to": reply_to})
                }
            };
            self.push(&to.platform_id, frame);
        })
    }

    fn open_dm<'a>(&'a self, user: &'a str) -> BoxFuture<'a, Result<Option<String>, DeliverError>> {
        Box::pin(async move { Ok(valid_user(user).then(|| user.to_owned())) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An agent picks its rows' ids: a second delivery naming the same
    /// message id and file (another session's row, say) never replaces the
    /// file kept for the first; it gets a folder of its own.
    #[tokio::test]
    async fn a_kept_file_is_never_replaced() {
        let tmp = tempfile::tempdir().unwrap();
        let (events, _rx) = mpsc::channel(8);
        let web = WebChannel::new(
            WebAuth::new("t".into()),
            tmp.path().into(),
            "owner".into(),
            events,
        )
        .unwrap();
        let (tx, mut tab) = mpsc::unbounded_channel();
        web.clients.lock().unwrap().insert(
            "owner".into(),
            vec![(1, tx, Arc::new(DraftSlot::default()))],
        );
        let to = Address {
            channel_type: CHANNEL_TYPE.into(),
            platform_id: "owner".into(),
            thread_id: None,
        };
        let send = |content: &'static str| {
            let src = tmp.path().join(format!("src-{}", content.len()));
            std::fs::write(&src, content).unwrap();
            Outgoing {
                id: "out-1".into(),
                text: "here".into(),
                in_reply_to: None,
                buttons: vec![],
                files: vec![crate::OutFile {
                    name: "report.txt".into(),
                    size: content.len() as u64,
                    path: src,
                }],
            }
        };
        web.deliver(&to, &send("the first")).await.unwrap();
        web.deliver(&to, &send("a forged second")).await.unwrap();
        let urls: Vec<String> = (0..2)
            .map(|_| {
                let v: serde_json::Value = serde_json::from_str(&tab.try_recv().unwrap()).unwrap();
                v["files"][0]["url"].as_str().unwrap().to_owned()
            })
            .collect();
        assert_ne!(urls[0], urls[1]);
        let first = urls[0]
            .trim_start_matches("/files/")
            .replace("report.txt", "");
        let kept = std::fs::read_to_string(tmp.path().join("files").join(first).join("report.txt"))
            .unwrap();
        assert_eq!(kept, "the first");
        // The history links the first.
        assert_eq!(
            web.file_url("out-1", "report.txt").as_deref(),
            Some(urls[0].as_str())
        );
    }
}
