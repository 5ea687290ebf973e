//! The web dashboard (issue 8): one page next to web chat, behind the same
//! sign-in ([`WebAuth`]: the session cookie of a one-time login link, or
//! `Authorization: Bearer <web token>`), showing sessions with their state
//! and last exit, quarantines with a button to lift them, pending approvals
//! with their choices, and dropped messages. It talks to the host through
//! the same admin dispatcher as `pinch admin` (the main loop), limited to
//! the commands the page needs. `/api/admin` takes only
//! `Content-Type: application/json` (415 otherwise), so a cross-site HTML
//! form cannot post to it; `Host`/`Origin` are checked by the listener's
//! guard layer. The page's script is served at `/dashboard.js` (no inline
//! script under the CSP).

use pinch_channels::http::axum::{
    self,
    extract::{Query, State},
    http::{HeaderMap, StatusCode},
    response::{Html, IntoResponse, Response},
    routing::{get, post},
};
use pinch_channels::http::{unauthorized as refuse, WebAuth, LOGIN_HELP};
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

use crate::admin::{Reply, Request};

const PAGE: &str = include_str!("dashboard.html");
const SCRIPT: &str = include_str!("dashboard.js");
const STYLE: &str = include_str!("dashboard.css");

/// What the page may ask for.
pub const ALLOWED: &[&str] = &[
    "host-status",
    "sessions-list",
    "approvals-list",
    "approvals-get",
    "dropped-messages-list",
    "sessions-resume",
    "approvals-approve",
    "approvals-reject",
];

#[derive(Clone)]
struct Ctx {
    auth: Arc<WebAuth>,
    admin: mpsc::UnboundedSender<(Request, oneshot::Sender<Reply>)>,
    data: crate::paths::DataDir,
}

#[derive(Deserialize, Default)]
struct Auth {
    login: Option<String>,
    token: Option<String>,
    /// `/api/session`: which session.
    id: Option<String>,
}

/// `auth` is web chat's (one login signs both in).
pub fn router(
    auth: Arc<WebAuth>,
    admin: mpsc::UnboundedSender<(Request, oneshot::Sender<Reply>)>,
    data: crate::paths::DataDir,
) -> axum::Router {
    axum::Router::new()
        .route("/dashboard", get(page))
        .route(
            "/dashboard.js",
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
            "/dashboard.css",
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
        .route("/api/admin", post(api))
        .route("/api/charts", get(charts))
        .route("/api/session", get(session))
        .route("/api/audit", get(audit))
        .with_state(Ctx { auth, admin, data })
}

fn unauthorized(q: &Auth) -> Response {
    if q.token.is_some() {
        return refuse(&format!("the web token is no longer accepted in a URL (it would stay in history and logs): {LOGIN_HELP}"));
    }
    refuse(&format!("not signed in: {LOGIN_HELP}"))
}

async fn page(State(c): State<Ctx>, Query(q): Query<Auth>, headers: HeaderMap) -> Response {
    if let Some(code) = q.login.as_deref() {
        return c.auth.login(code, &headers, "/dashboard");
    }
    if !c.auth.authorized(&headers) {
        return unauthorized(&q);
    }
    let mut r = Html(PAGE).into_response();
    r.headers_mut().insert(
        "cache-control",
        axum::http::HeaderValue::from_static("no-store"),
    );
    r
}

/// The charts' data: the sampled counters as per-interval counts and
/// reply-latency percentiles (`metrics_history.rs`).
async fn charts(State(c): State<Ctx>, Query(q): Query<Auth>, headers: HeaderMap) -> Response {
    if !c.auth.authorized(&headers) {
        return unauthorized(&q);
    }
    json_reply(StatusCode::OK, crate::metrics_history::current())
}

/// The newest uses of secrets (decision 0050), read from the store off the
/// async threads; none when no secret was ever stored.
async fn audit(State(c): State<Ctx>, Query(q): Query<Auth>, headers: HeaderMap) -> Response {
    if !c.auth.authorized(&headers) {
        return unauthorized(&q);
    }
    let root = c.data.root().to_owned();
    let uses = tokio::task::spawn_blocking(move || {
        crate::secrets::Store::new(&root, std::path::PathBuf::new()).uses(50, 0)
    })
    .await;
    match uses {
        Ok(Ok(u)) => json_reply(StatusCode::OK, json!({"ok": true, "uses": u})),
        Ok(Err(e)) => json_reply(
            StatusCode::INTERNAL_SERVER_ERROR,
            json!({"ok": false, "error": {"code": "store", "message": e.to_string()}}),
        ),
        Err(e) => json_reply(
            StatusCode::INTERNAL_SERVER_ERROR,
            json!({"ok": false, "error": {"code": "internal", "message": e.to_string()}}),
        ),
    }
}

/// One session's detail: its row as `pinch admin sessions get` shows it
/// (state, last exit and cause), and what `session_detail.rs` reads.
async fn session(State(c): State<Ctx>, Query(q): Query<Auth>, headers: HeaderMap) -> Response {
    if !c.auth.authorized(&headers) {
        return unauthorized(&q);
    }
    let Some(id) = q.id.clone() else {
        return json_reply(
            StatusCode::BAD_REQUEST,
            json!({"ok": false, "error": {"code": "invalid-args", "message": "name the session: /api/session?id=<session id>"}}),
        );
    };
    let (tx, rx) = oneshot::channel();
    let req = Request {
        id: Value::Null,
        command: "sessions-get".into(),
        args: json!({"id": id}),
    };
    if c.admin.send((req, tx)).is_err() {
        return json_reply(
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"ok": false, "error": {"code": "transport-error", "message": "the host is shutting down"}}),
        );
    }
    let row = match rx.await {
        Ok(Ok(row)) => row,
        Ok(Err(e)) => return json_reply(StatusCode::NOT_FOUND, json!({"ok": false, "error": e})),
        Err(_) => {
            return json_reply(
                StatusCode::SERVICE_UNAVAILABLE,
                json!({"ok": false, "error": {"code": "transport-error", "message": "the host dropped the request"}}),
            )
        }
    };
    // The row's own id and group (the host's records) name the folders.
    let (sid, ag) = (
        row["id"].as_str().unwrap_or_default().to_owned(),
        row["agent_group"].as_str().unwrap_or_default().to_owned(),
    );
    let data = c.data.clone();
    let detail = tokio::task::spawn_blocking(move || {
        crate::session_detail::read(&data.session(&ag, &sid), &data.runner_logs(&sid))
    })
    .await
    .unwrap_or_default();
    json_reply(
        StatusCode::OK,
        json!({"ok": true, "data": {"session": row, "detail": detail}}),
    )
}

/// Whether the request says its body is JSON (`application/json`, any parameters).
fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
}

#[derive(Deserialize)]
struct Call {
    command: String,
    #[serde(default)]
    args: Value,
}

fn json_reply(status: StatusCode, v: Value) -> Response {
    (
        status,
        [("content-type", "application/json")],
        v.to_string(),
    )
        .into_response()
}

async fn api(
    State(c): State<Ctx>,
    Query(q): Query<Auth>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    if !c.auth.authorized(&headers) {
        return unauthorized(&q);
    }
    // A cross-site form can send only urlencoded, multipart or text/plain
    // bodies without a preflight: JSON only defeats form-POST CSRF.
    if !is_json(&headers) {
        return json_reply(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            json!({"ok": false, "error": {"code": "invalid-args", "message": "send the call as JSON with Content-Type: application/json"}}),
        );
    }
    let call: Call = match serde_json::from_slice(&body) {
        Ok(c) => c,
        Err(e) => {
            return json_reply(
                StatusCode::BAD_REQUEST,
                json!({"ok": false, "error": {"code": "invalid-args", "message": format!("send {{\"command\": …, \"args\": {{…}}}}: {e}")}}),
            )
        }
    };
    if !ALLOWED.contains(&call.command.as_str()) {
        return json_reply(
            StatusCode::FORBIDDEN,
            json!({"ok": false, "error": {"code": "forbidden", "message": format!("the dashboard does not run {}; use `pinch admin`", call.command)}}),
        );
    }
    let (tx, rx) = oneshot::channel();
    let args = if call.args.is_null() {
        json!({})
    } else {
        call.args
    };
    if c.admin
        .send((
            Request {
                id: Value::Null,
                command: call.command,
                args,
            },
            tx,
        ))
        .is_err()
    {
        return json_reply(
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"ok": false, "error": {"code": "transport-error", "message": "the host is shutting down"}}),
        );
    }
    match rx.await {
        Ok(Ok(data)) => json_reply(StatusCode::OK, json!({"ok": true, "data": data})),
        Ok(Err(e)) => json_reply(StatusCode::OK, json!({"ok": false, "error": e})),
        Err(_) => json_reply(
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"ok": false, "error": {"code": "transport-error", "message": "the host dropped the request"}}),
        ),
    }
}
