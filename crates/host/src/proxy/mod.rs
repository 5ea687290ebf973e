//! The credential proxy (SPEC §8.2, first version): the only way out of a
//! sandbox. One HTTP/1.1 server per session on `run/proxy/<session>/llm.sock`
//! (the directory is bound read-only at `/pinch/run`; connecting works
//! through a read-only bind). Requests to `/<route>/<rest>` go to that
//! route's upstream with the host's credential injected and any client
//! credential stripped; everything else is refused and logged. Keys live
//! only in the host: never in `runner.json`, the sandbox environment, logs
//! or DBs.
//!
//! Upstreams are `http://` (Ollama, vLLM, llama.cpp's server) or `https://`
//! (TLS by rustls, verified against the Mozilla roots plus any configured
//! extra root).
//!
//! Egress (SPEC §8.2): `CONNECT host:port` to a host bound to no secret
//! (see below) and on the allowlist opens
//! a TCP connection and splices bytes both ways (the client's TLS runs end
//! to end; nothing is injected); any other `CONNECT` gets 403 and a log line
//! naming the host and how to allow it. See [`EgressAllow`].
//!
//! Secrets (decision 0050): a `CONNECT` to a host bound to a secret the
//! session's group may use is answered by the proxy itself and the secret
//! injected (`inject.rs`); see [`SecretAccess`].
//!
//! The host's own route: `POST /_pinch/web/fetch` is answered by the host
//! (`web.rs`, decision 0042), never forwarded.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpStream, UnixListener, UnixStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

mod body;
mod inject;
mod inject_http;
mod limits;
mod request;
mod serve;
mod stream;
mod upstream;
mod voice;
mod web;

pub use inject::{SecretAccess, UseAsk, Verdict, APPROVAL_WAIT};
pub use limits::{effective_total, raise_nofile, Budget, Limits};
pub use pinch_policy::hosts::EgressAllow;
pub use serve::serve;
pub use stream::StreamAccess;
pub use web::WebAccess;

/// The TLS client configuration for `https://` upstreams: Mozilla's roots
/// (webpki-roots) plus `extra_roots` (DER), e.g. a company CA or a test's.
pub fn tls_config(extra_roots: &[Vec<u8>]) -> Result<Arc<rustls::ClientConfig>, String> {
    let mut roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    for der in extra_roots {
        roots
            .add(rustls::pki_types::CertificateDer::from(der.clone()))
            .map_err(|e| format!("an extra root certificate is invalid: {e}"))?;
    }
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(Arc::new(cfg))
}

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

/// One route: `/<name>/<path>` → `base_url` + `<path>`, with `header:
/// value` injected, for the paths in `paths` only.
#[derive(Clone, Debug)]
pub struct Upstream {
    pub name: String,
    /// `http://host:port[/prefix]`.
    pub base_url: String,
    /// e.g. ("authorization", "Bearer sk-…") or ("x-api-key", "…").
    pub auth: Option<(String, Secret)>,
    /// The paths under the route that are forwarded, compared exactly (the
    /// query is not part of it): e.g. `/chat/completions`.
    pub paths: Vec<String>,
}

impl Upstream {
    /// A route with the model API paths its provider uses ([`default_paths`]).
    pub fn new(
        name: impl Into<String>,
        base_url: impl Into<String>,
        auth: Option<(String, Secret)>,
    ) -> Upstream {
        let name = name.into();
        let paths = default_paths(&name);
        Upstream {
            name,
            base_url: base_url.into(),
            auth,
            paths,
        }
    }
}

/// What each provider calls, relative to its `base_url`: the `openai`
/// provider posts `/chat/completions` (base URLs end in `/v1`), Codex-style
/// CLIs use `/responses`, SDKs list `/models`; the `anthropic` provider and
/// Claude Code post `/v1/messages` (and count tokens). Other routes: none
/// until configured.
pub fn default_paths(route: &str) -> Vec<String> {
    let paths: &[&str] = match route {
        "openai" => &["/chat/completions", "/responses", "/models"],
        "anthropic" => &["/v1/messages", "/v1/messages/count_tokens", "/v1/models"],
        _ => &[],
    };
    paths.iter().map(|p| (*p).to_owned()).collect()
}

/// Checks a configured allowed path: absolute, printable, no query,
/// fragment, escapes, dot segments or empty segments.
pub fn check_path(p: &str) -> Result<(), String> {
    let ok = p.starts_with('/')
        && p.len() > 1
        && p.bytes()
            .all(|b| b.is_ascii_graphic() && !matches!(b, b'?' | b'#' | b'%' | b'\\'))
        && p[1..]
            .split('/')
            .all(|seg| !seg.is_empty() && seg != "." && seg != "..");
    if ok {
        Ok(())
    } else {
        Err(format!("allowed path {p:?} must be a plain absolute path like \"/v1/messages\" (no query, %, dot or empty segments)"))
    }
}

/// The longest request head read (request line and headers).
pub const MAX_HEAD: usize = 64 * 1024;
/// The largest request body forwarded (streamed, never held whole).
pub const MAX_BODY: u64 = 16 * 1024 * 1024;

/// What every connection of one session's proxy shares.
struct Ctx {
    session_id: String,
    upstreams: Arc<Vec<Upstream>>,
    egress: Arc<EgressAllow>,
    tls: Arc<rustls::ClientConfig>,
    limits: Limits,
    /// `web_fetch` for the session's agent group (`None`: not offered).
    web: Option<Arc<WebAccess>>,
}

fn reason_phrase(code: u16) -> &'static str {
    match code {
        400 => "Bad Request",
        403 => "Forbidden",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        411 => "Length Required",
        415 => "Unsupported Media Type",
        429 => "Too Many Requests",
        413 => "Payload Too Large",
        431 => "Request Header Fields Too Large",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Error",
    }
}

fn response(code: u16, body: &str, extra: &[(&str, &str)]) -> String {
    let mut msg = format!("HTTP/1.1 {code} {}\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n", reason_phrase(code), body.len());
    for (k, v) in extra {
        msg.push_str(&format!("{k}: {v}\r\n"));
    }
    msg.push_str("\r\n");
    msg.push_str(body);
    msg
}

/// Answers `code` with `body` (bounded by the idle timeout: a client that
/// does not read does not keep the connection).
async fn respond(c: &mut UnixStream, lim: &Limits, code: u16, body: &str) -> std::io::Result<()> {
    match tokio::time::timeout(
        lim.idle_timeout,
        c.write_all(response(code, body, &[]).as_bytes()),
    )
    .await
    {
        Ok(r) => r,
        Err(_) => Err(timed_out("writing a response to the client")),
    }
}

fn timed_out(what: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::TimedOut, format!("timed out {what}"))
}

#[cfg(test)]
fn test_routes() -> Vec<Upstream> {
    vec![
        Upstream::new(
            "openai",
            "http://127.0.0.1:9/v1",
            Some(("authorization".into(), Secret::new("Bearer sk-k"))),
        ),
        Upstream::new(
            "anthropic",
            "https://api.example.com",
            Some(("x-api-key".into(), Secret::new("sk-a"))),
        ),
    ]
}

#[cfg(test)]
const OK: &str = "POST /openai/chat/completions HTTP/1.1\r\nHost: p\r\n";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_print() {
        let s = Secret::new("sk-very-secret");
        assert_eq!(format!("{s:?}"), "Secret(***)");
        let u = Upstream::new("openai", "http://x", Some(("authorization".into(), s)));
        assert!(!format!("{u:?}").contains("sk-very-secret"));
    }

    #[test]
    fn configured_paths_are_plain() {
        for good in ["/v1/messages", "/chat/completions", "/models"] {
            assert!(check_path(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "/",
            "v1/messages",
            "/v1/../files",
            "/v1//x",
            "/v1/x?y",
            "/v1/%2e",
            "/v1/x/",
            "/v 1",
            "/./x",
        ] {
            assert!(
                check_path(bad).unwrap_err().contains(&format!("{bad:?}")),
                "{bad}"
            );
        }
        assert!(
            default_paths("other").is_empty(),
            "an unknown route forwards nothing until configured"
        );
    }
}
