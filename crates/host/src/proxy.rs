//! The credential proxy (SPEC §8.2, first version): the only way out of a
//! sandbox. One HTTP/1.1 server per session on `run/proxy/<session>/llm.sock`
//! (the directory is bound read-only at `/pinch/run`; connecting works
//! through a read-only bind). Requests to `/<route>/<rest>` go to that
//! route's upstream with the host's credential injected and any client
//! credential stripped; everything else is refused and logged. Keys live
//! only in the host: never in `runner.json`, the sandbox environment, logs
//! or DBs.
//!
//! This version forwards plain-HTTP upstreams (Ollama, vLLM, llama.cpp's
//! server, or a fake in tests); TLS upstreams and the `CONNECT` egress
//! allowlist come with the provider work.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UnixListener, UnixStream};

/// A secret whose `Debug` never shows it.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }
    fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// One route: `/<name>/…` → `base_url` + `…`, with `header: value` injected.
#[derive(Clone, Debug)]
pub struct Upstream {
    pub name: String,
    /// `http://host:port[/prefix]`.
    pub base_url: String,
    /// e.g. ("authorization", "Bearer sk-…") or ("x-api-key", "…").
    pub auth: Option<(String, Secret)>,
}

const MAX_HEAD: usize = 64 * 1024;
const MAX_BODY: usize = 16 * 1024 * 1024;
/// Client headers never forwarded: credentials and hop-by-hop headers.
const STRIPPED: &[&str] = &["authorization", "x-api-key", "proxy-authorization", "connection", "host", "content-length", "transfer-encoding", "keep-alive"];

/// Serves the proxy on `socket` until the returned handle is aborted.
pub fn serve(socket: &Path, session_id: String, upstreams: Arc<Vec<Upstream>>) -> std::io::Result<tokio::task::JoinHandle<()>> {
    if let Some(dir) = socket.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let _ = std::fs::remove_file(socket);
    let listener = UnixListener::bind(socket)?;
    // The sandbox's user maps to the host's: owner-only is enough.
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600))?;
    Ok(tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            let (u, sid) = (upstreams.clone(), session_id.clone());
            tokio::spawn(async move {
                if let Err(e) = handle(stream, &u, &sid).await {
                    tracing::debug!(session_id = %sid, "proxy connection ended: {e}");
                }
            });
        }
    }))
}

async fn respond(c: &mut UnixStream, code: u16, reason: &str, body: &str) -> std::io::Result<()> {
    let msg = format!(
        "HTTP/1.1 {code} {reason}\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    c.write_all(msg.as_bytes()).await
}

async fn handle(mut c: UnixStream, upstreams: &[Upstream], session_id: &str) -> std::io::Result<()> {
    // Read the request head.
    let mut buf = Vec::with_capacity(4096);
    let head_end = loop {
        let mut chunk = [0u8; 4096];
        let n = c.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > MAX_HEAD {
            return respond(&mut c, 431, "Request Header Fields Too Large", "request head too large\n").await;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or("");
    let mut parts = request_line.split(' ');
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let headers: Vec<(String, String)> = lines
        .filter(|l| !l.is_empty())
        .filter_map(|l| l.split_once(':').map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned())))
        .collect();
    let route = target.strip_prefix('/').and_then(|t| t.split_once('/').map(|(r, rest)| (r, format!("/{rest}"))));
    let Some((upstream, rest)) = route.and_then(|(r, rest)| upstreams.iter().find(|u| u.name == r).map(|u| (u, rest))) else {
        tracing::warn!(session_id, method, target, "proxy refused a request outside the allowed routes");
        return respond(&mut c, 403, "Forbidden", "pinch proxy: only the configured model APIs are reachable from the sandbox\n").await;
    };
    if headers.iter().any(|(k, v)| k == "transfer-encoding" && v.contains("chunked")) {
        return respond(&mut c, 411, "Length Required", "send a content-length body\n").await;
    }
    let len: usize = headers.iter().find(|(k, _)| k == "content-length").and_then(|(_, v)| v.parse().ok()).unwrap_or(0);
    if len > MAX_BODY {
        return respond(&mut c, 413, "Payload Too Large", "request body too large\n").await;
    }
    let mut body = buf[head_end..].to_vec();
    while body.len() < len {
        let mut chunk = vec![0u8; (len - body.len()).min(64 * 1024)];
        let n = c.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        body.extend_from_slice(&chunk[..n]);
    }
    body.truncate(len);
    let Some(base) = upstream.base_url.strip_prefix("http://") else {
        return respond(&mut c, 502, "Bad Gateway", "pinch proxy: only http:// upstreams are supported in this build\n").await;
    };
    let (authority, prefix) = match base.split_once('/') {
        Some((a, p)) => (a.to_owned(), format!("/{}", p.trim_end_matches('/'))),
        None => (base.to_owned(), String::new()),
    };
    let mut req = format!("{method} {prefix}{rest} HTTP/1.1\r\nhost: {authority}\r\nconnection: close\r\ncontent-length: {len}\r\n");
    for (k, v) in &headers {
        if !STRIPPED.contains(&k.as_str()) {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
    }
    if let Some((k, v)) = &upstream.auth {
        req.push_str(&format!("{k}: {}\r\n", v.expose()));
    }
    req.push_str("\r\n");
    let mut up = match TcpStream::connect(&authority).await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(session_id, upstream = %upstream.name, "proxy cannot reach the upstream: {e}");
            return respond(&mut c, 502, "Bad Gateway", &format!("pinch proxy: upstream {} unreachable\n", upstream.name)).await;
        }
    };
    up.write_all(req.as_bytes()).await?;
    up.write_all(&body).await?;
    tracing::debug!(session_id, upstream = %upstream.name, method, path = %rest, "proxied");
    // Stream the response back as it comes (SSE works unchanged).
    tokio::io::copy(&mut up, &mut c).await?;
    c.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_print() {
        let s = Secret::new("sk-very-secret");
        assert_eq!(format!("{s:?}"), "Secret(***)");
        let u = Upstream { name: "openai".into(), base_url: "http://x".into(), auth: Some(("authorization".into(), s)) };
        assert!(!format!("{u:?}").contains("sk-very-secret"));
    }
}
