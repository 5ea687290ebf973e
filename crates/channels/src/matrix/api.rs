//! Client-server API calls: the access token as a bearer header only,
//! answers read with a size cap, failures sorted by the homeserver's
//! `errcode` without the token; events sent with a transaction id, media
//! uploaded and downloaded (authenticated media first).

use serde_json::Value;

use crate::platform::{classify, download_capped, scrub, url_segment};
use crate::DeliverError;

use super::payload::Media;
use super::MatrixChannel;

/// The largest answer read from the homeserver (a `/sync` of many rooms).
pub const MAX_ANSWER: usize = 64 << 20;
/// The largest file sent (homeservers commonly refuse over 50 MiB).
pub const MAX_UPLOAD: u64 = 50 << 20;

impl MatrixChannel {
    pub(super) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.cfg.homeserver)
    }

    pub(super) fn http(&self) -> reqwest::Client {
        self.client.lock().unwrap().clone()
    }

    pub(super) fn rebuild_client(&self) {
        if let Ok(c) = crate::platform::client(crate::platform::SEND_TIMEOUT) {
            *self.client.lock().unwrap() = c;
        }
    }

    /// One call with a JSON body (or none); the answer's JSON.
    pub(super) async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, DeliverError> {
        let mut req = self.http().request(method, self.url(path));
        if let Some(b) = body {
            req = req.json(&b);
        }
        finish(&self.cfg.token.0, path, req).await
    }

    /// `PUT /rooms/{room}/send/{type}/{txn}`: the same transaction id
    /// names the same event, so a retried send is not a second message.
    pub(super) async fn send_event(
        &self,
        room: &str,
        kind: &str,
        txn: &str,
        content: Value,
    ) -> Result<String, DeliverError> {
        let path = format!(
            "/_matrix/client/v3/rooms/{}/send/{}/{}",
            url_segment(room),
            url_segment(kind),
            url_segment(txn)
        );
        let v = self
            .call(reqwest::Method::PUT, &path, Some(content))
            .await?;
        v["event_id"].as_str().map(str::to_owned).ok_or_else(|| {
            DeliverError::Retryable(
                "matrix: the homeserver answered a send without an event_id".into(),
            )
        })
    }

    /// Uploads a file; its `mxc://` URI.
    pub(super) async fn upload(
        &self,
        name: &str,
        mime: &str,
        data: Vec<u8>,
    ) -> Result<String, DeliverError> {
        if data.len() as u64 > MAX_UPLOAD {
            return Err(DeliverError::Permanent(format!(
                "{name} is over {} MiB, more than homeservers take",
                MAX_UPLOAD >> 20
            )));
        }
        let path = format!("/_matrix/media/v3/upload?filename={}", url_segment(name));
        let req = self
            .http()
            .post(self.url(&path))
            .header("content-type", mime)
            .body(data);
        let v = finish(&self.cfg.token.0, "/_matrix/media/v3/upload", req).await?;
        v["content_uri"]
            .as_str()
            .filter(|u| super::payload::mxc(u).is_some())
            .map(str::to_owned)
            .ok_or_else(|| {
                DeliverError::Retryable("matrix: the upload answered without a content_uri".into())
            })
    }

    /// A file's bytes (capped at [`crate::MAX_ATTACHMENT`]; `None` when
    /// larger or unreachable, logged): the authenticated media endpoint,
    /// then the older unauthenticated one for homeservers without it.
    pub(super) async fn download(&self, m: &Media) -> Option<Vec<u8>> {
        if m.size.is_some_and(|s| s > crate::MAX_ATTACHMENT) {
            return None;
        }
        let token = &self.cfg.token.0;
        let tail = format!("{}/{}", url_segment(&m.server), url_segment(&m.media_id));
        let v1 = self
            .http()
            .get(self.url(&format!("/_matrix/client/v1/media/download/{tail}")))
            .bearer_auth(token);
        let first = download_capped(v1, token).await;
        let r = match first {
            Ok(d) => Ok(d),
            Err(e) => {
                tracing::debug!(
                    "matrix: authenticated media download failed ({e}); trying /_matrix/media/v3"
                );
                let v3 = self
                    .http()
                    .get(self.url(&format!("/_matrix/media/v3/download/{tail}")))
                    .bearer_auth(token);
                download_capped(v3, token).await
            }
        };
        match r {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(
                    "matrix: downloading {} failed, it is noted but not kept: {e}",
                    m.name
                );
                None
            }
        }
    }
}

/// Sends `req` with the token and reads the answer (at most
/// [`MAX_ANSWER`] bytes): its JSON on success, else the homeserver's
/// `errcode` and `error`, sorted by what may work later.
pub(super) async fn finish(
    token: &str,
    what: &str,
    req: reqwest::RequestBuilder,
) -> Result<Value, DeliverError> {
    let fail =
        |e: reqwest::Error| DeliverError::Retryable(format!("matrix {what}: {}", scrub(&e, token)));
    let mut resp = req.bearer_auth(token).send().await.map_err(fail)?;
    let status = resp.status();
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(fail)? {
        if body.len() + chunk.len() > MAX_ANSWER {
            return Err(DeliverError::Retryable(format!(
                "matrix {what}: the answer is over {} MiB",
                MAX_ANSWER >> 20
            )));
        }
        body.extend_from_slice(&chunk);
    }
    let v: Value =
        crate::platform::json_lossy(&format!("matrix {what}"), &body).unwrap_or_default();
    if status.is_success() {
        return Ok(v);
    }
    let code = v["errcode"].as_str().unwrap_or("no errcode");
    let msg = v["error"].as_str().unwrap_or("").replace(token, "<token>");
    let text = format!("matrix {what} answered {status}: {code} {msg}");
    Err(match code {
        "M_LIMIT_EXCEEDED" => DeliverError::Retryable(text),
        _ => classify(status, text),
    })
}

/// The media type of a file by its name's extension (what clients show
/// inline), `application/octet-stream` otherwise.
pub fn mime_of(name: &str) -> &'static str {
    let ext = name.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase());
    match ext.as_deref() {
        Some("txt" | "md" | "csv" | "log") => "text/plain",
        Some("json") => "application/json",
        Some("pdf") => "application/pdf",
        Some("png") => "image/png",
        Some("jpg" | "jpeg") => "image/jpeg",
        Some("gif") => "image/gif",
        Some("webp") => "image/webp",
        Some("ogg" | "opus") => "audio/ogg",
        Some("mp3") => "audio/mpeg",
        Some("mp4") => "video/mp4",
        Some("zip") => "application/zip",
        _ => "application/octet-stream",
    }
}

/// The event `msgtype` for a file of media type `mime`.
pub fn msgtype_of(mime: &str) -> &'static str {
    match mime.split('/').next() {
        Some("image") => "m.image",
        Some("audio") => "m.audio",
        Some("video") => "m.video",
        _ => "m.file",
    }
}
