//! The bodies of the host's own routes on the proxy socket: a request's
//! body read within its limits, and JSON or byte answers written within
//! the idle timeout (shared by `web.rs`, `voice.rs` and `stream.rs`).

use super::*;

/// A host route's body: `len` bytes (`early` already read), into one
/// buffer of that size, within the idle timeout; `what` names it in the
/// timeout's error.
pub(super) async fn read_body(
    c: &mut UnixStream,
    len: u64,
    early: &[u8],
    lim: &Limits,
    what: &str,
) -> std::io::Result<Vec<u8>> {
    let want = usize::try_from(len).unwrap_or(0);
    let mut body = Vec::with_capacity(want);
    body.extend_from_slice(&early[..early.len().min(want)]);
    let read = async {
        let mut chunk = vec![0u8; 64 * 1024];
        while body.len() < want {
            let room = (want - body.len()).min(chunk.len());
            let n = c.read(&mut chunk[..room]).await?;
            if n == 0 {
                return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof));
            }
            body.extend_from_slice(&chunk[..n]);
        }
        Ok(())
    };
    match tokio::time::timeout(lim.idle_timeout, read).await {
        Ok(r) => r.map(|()| body),
        Err(_) => Err(timed_out(&format!("reading {what}"))),
    }
}

pub(super) async fn write_answer(
    c: &mut UnixStream,
    code: u16,
    json: &serde_json::Value,
    lim: &Limits,
) -> std::io::Result<()> {
    let text = json.to_string();
    write_bytes(c, code, "application/json", text.as_bytes(), lim).await
}

/// An answer of `content_type` with `body`.
pub(super) async fn write_bytes(
    c: &mut UnixStream,
    code: u16,
    content_type: &str,
    body: &[u8],
    lim: &Limits,
) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {code} {}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        if code == 200 { "OK" } else { reason_phrase(code) },
        body.len()
    );
    let write = async {
        c.write_all(head.as_bytes()).await?;
        c.write_all(body).await
    };
    match tokio::time::timeout(lim.idle_timeout, write).await {
        Ok(r) => r,
        Err(_) => Err(timed_out("writing the answer of a web route")),
    }
}

/// A refusal: its status and `{"error": msg}`.
pub(super) fn error(code: u16, msg: String) -> (u16, serde_json::Value) {
    (code, serde_json::json!({ "error": msg }))
}
