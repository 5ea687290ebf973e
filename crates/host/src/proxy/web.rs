//! The host's own route on the proxy socket: `POST /_pinch/web/fetch`
//! (decision 0042). The sandbox's `web_fetch` tool sends `{"url": …,
//! "max_chars": …}`; the host fetches under the session's agent group
//! policy with [`pinch_web::Web`] and answers `200` with the page as JSON,
//! or the refusal's status with `{"error": …}`. The sandbox never opens a
//! network connection of its own.

use super::*;

/// The path of the fetch route. `_` cannot start a configured route name.
pub(super) const FETCH_PATH: &str = "/_pinch/web/fetch";
/// The largest request body the route reads.
pub(super) const MAX_REQUEST: u64 = 64 * 1024;

/// What a session's proxy needs to fetch for its agent group.
pub struct WebAccess {
    pub web: Arc<pinch_web::Web>,
    pub group: String,
    /// The group's policy, or why it could not be read (web_fetch is then
    /// refused with that reason).
    pub policy: Result<pinch_web::GroupPolicy, String>,
}

#[derive(serde::Deserialize)]
struct FetchRequest {
    url: String,
    max_chars: Option<usize>,
}

/// Reads the request body (`len` bytes, `early` already read) and answers.
pub(super) async fn fetch(
    mut c: UnixStream,
    len: u64,
    early: &[u8],
    ctx: &Ctx,
) -> std::io::Result<()> {
    let lim = &ctx.limits;
    let mut body = early.to_vec();
    let want = usize::try_from(len).unwrap_or(usize::MAX);
    let read = async {
        let mut chunk = [0u8; 4096];
        while body.len() < want {
            let n = c.read(&mut chunk).await?;
            if n == 0 {
                return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof));
            }
            body.extend_from_slice(&chunk[..n]);
        }
        Ok(())
    };
    match tokio::time::timeout(lim.idle_timeout, read).await {
        Ok(r) => r?,
        Err(_) => return Err(timed_out("reading a web_fetch request")),
    }
    body.truncate(want);
    let (code, json) = answer(&body, ctx).await;
    let text = json.to_string();
    let head = format!(
        "HTTP/1.1 {code} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        if code == 200 { "OK" } else { reason_phrase(code) },
        text.len()
    );
    let write = async {
        c.write_all(head.as_bytes()).await?;
        c.write_all(text.as_bytes()).await
    };
    match tokio::time::timeout(lim.idle_timeout, write).await {
        Ok(r) => r,
        Err(_) => Err(timed_out("writing a web_fetch answer")),
    }
}

async fn answer(body: &[u8], ctx: &Ctx) -> (u16, serde_json::Value) {
    let sid = ctx.session_id.as_str();
    let err = |code: u16, msg: String| (code, serde_json::json!({ "error": msg }));
    let Some(access) = ctx.web.as_deref() else {
        return err(403, "web_fetch is not available through this proxy".into());
    };
    let req: FetchRequest = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(e) => {
            return err(
                400,
                format!("the request must be JSON {{\"url\": \"https://…\"}} ({e})"),
            )
        }
    };
    let policy = match &access.policy {
        Ok(p) => p,
        Err(why) => {
            return err(
                403,
                format!("refused: this agent group's web policy is invalid: {why}"),
            )
        }
    };
    let started = Instant::now();
    let r = access
        .web
        .fetch(&access.group, policy, &req.url, req.max_chars)
        .await;
    let ms = started.elapsed().as_millis() as u64;
    match r {
        Ok(page) => {
            tracing::info!(session_id = sid, url = %req.url, final_url = %page.final_url, status = page.status, cached = page.cached, ms, "web_fetch");
            (200, serde_json::to_value(&page).unwrap_or_default())
        }
        Err(e) => {
            tracing::warn!(session_id = sid, url = %req.url, ms, "web_fetch: {e}");
            err(e.status(), e.to_string())
        }
    }
}
