//! The web dashboard (issue 8): one page next to web chat, behind the same
//! token, showing sessions with their state and last exit, quarantines
//! with a button to lift them, pending approvals with their choices, and
//! dropped messages. It talks to the host through the same admin
//! dispatcher as `pinch admin` (the main loop), limited to the commands the
//! page needs.

use pinch_channels::http::axum::{
    self,
    extract::{Query, State},
    http::{HeaderMap, StatusCode},
    response::{Html, IntoResponse, Response},
    routing::{get, post},
};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot};

use crate::admin::{Reply, Request};

const PAGE: &str = include_str!("dashboard.html");

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
    token: String,
    admin: mpsc::UnboundedSender<(Request, oneshot::Sender<Reply>)>,
}

#[derive(Deserialize, Default)]
struct Auth {
    token: Option<String>,
}

impl Ctx {
    fn authorized(&self, q: &Auth, headers: &HeaderMap) -> bool {
        let given = q.token.as_deref().or_else(|| {
            headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
        });
        given.is_some_and(|t| pinch_channels::http::secret_eq(t.as_bytes(), self.token.as_bytes()))
    }
}

pub fn router(
    token: String,
    admin: mpsc::UnboundedSender<(Request, oneshot::Sender<Reply>)>,
) -> axum::Router {
    axum::Router::new()
        .route("/dashboard", get(page))
        .route("/api/admin", post(api))
        .with_state(Ctx { token, admin })
}

fn unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [("content-type", "text/plain; charset=utf-8")],
        "missing or wrong token: open /dashboard?token=<pinch admin web-token>\n",
    )
        .into_response()
}

async fn page(State(c): State<Ctx>, Query(q): Query<Auth>, headers: HeaderMap) -> Response {
    if !c.authorized(&q, &headers) {
        return unauthorized();
    }
    let mut r = Html(PAGE).into_response();
    r.headers_mut().insert(
        "referrer-policy",
        axum::http::HeaderValue::from_static("no-referrer"),
    );
    r.headers_mut().insert(
        "cache-control",
        axum::http::HeaderValue::from_static("no-store"),
    );
    r
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
    if !c.authorized(&q, &headers) {
        return unauthorized();
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
