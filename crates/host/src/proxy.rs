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
//! Egress (SPEC §8.2): `CONNECT host:port` to a host on the allowlist opens
//! a TCP connection and splices bytes both ways (the client's TLS runs end
//! to end; nothing is injected); any other `CONNECT` gets 403 and a log line
//! naming the host and how to allow it. See [`EgressAllow`].

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UnixListener, UnixStream};

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
const STRIPPED: &[&str] = &[
    "authorization",
    "x-api-key",
    "proxy-authorization",
    "connection",
    "host",
    "content-length",
    "transfer-encoding",
    "keep-alive",
];

/// One allowlist entry: an exact host or a `*.suffix` pattern, and a port.
#[derive(Clone, Debug, PartialEq, Eq)]
struct EgressRule {
    /// Lowercase, no trailing dot. For a pattern: the suffix with its dot
    /// (`.example.com`).
    host: String,
    wildcard: bool,
    port: u16,
}

/// Hosts a sandbox may `CONNECT` to. Entries: `api.github.com` (port 443),
/// `host:port`, `*.example.com` (any subdomain, not `example.com` itself;
/// list that too if wanted), `[::1]:8443` for an IPv6 literal. Names
/// compare case-insensitively, ignoring a trailing dot. Empty = no egress.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EgressAllow(Vec<EgressRule>);

impl EgressAllow {
    /// Parses entries; the error names the bad entry and the accepted forms.
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> Result<EgressAllow, String> {
        let mut rules = Vec::new();
        for e in entries {
            let raw = e.as_ref().trim();
            let bad = |why: &str| {
                format!("egress_allow entry {raw:?} {why}: use `host`, `host:port`, `*.domain` or `*.domain:port` (port 443 when none is given)")
            };
            let (host, port) = split_host_port(raw).ok_or_else(|| bad("has an invalid port"))?;
            let host = host.trim_end_matches('.').to_ascii_lowercase();
            let (wildcard, host) = match host.strip_prefix("*.") {
                Some(rest) => (true, format!(".{rest}")),
                None => (false, host),
            };
            let name = host.trim_start_matches('.');
            if name.is_empty()
                || name.contains('*')
                || name.contains('/')
                || name.chars().any(char::is_whitespace)
            {
                return Err(bad("is not a host name"));
            }
            rules.push(EgressRule {
                host,
                wildcard,
                port: port.unwrap_or(443),
            });
        }
        Ok(EgressAllow(rules))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Adds another list's entries (host-wide plus the agent group's).
    pub fn extend(&mut self, other: EgressAllow) {
        self.0.extend(other.0);
    }

    /// Whether `host:port` may be reached.
    pub fn allows(&self, host: &str, port: u16) -> bool {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        self.0.iter().any(|r| {
            r.port == port
                && if r.wildcard {
                    host.ends_with(&r.host) && host.len() > r.host.len()
                } else {
                    host == r.host
                }
        })
    }
}

/// `host`, `host:port`, `[v6]`, `[v6]:port` → (host without brackets,
/// port). `None` when a port is present but not a number in 1..=65535.
fn split_host_port(s: &str) -> Option<(&str, Option<u16>)> {
    let parse_port = |p: &str| p.parse::<u16>().ok().filter(|p| *p != 0);
    if let Some(rest) = s.strip_prefix('[') {
        let (h, tail) = rest.split_once(']')?;
        return match tail.strip_prefix(':') {
            Some(p) => Some((h, Some(parse_port(p)?))),
            None if tail.is_empty() => Some((h, None)),
            None => None,
        };
    }
    match s.rsplit_once(':') {
        // A bare IPv6 literal has several colons and no port.
        Some((h, _)) if h.contains(':') => Some((s, None)),
        Some((h, p)) => Some((h, Some(parse_port(p)?))),
        None => Some((s, None)),
    }
}

/// Serves the proxy on `socket` until the returned handle is aborted.
pub fn serve(
    socket: &Path,
    session_id: String,
    upstreams: Arc<Vec<Upstream>>,
    egress: Arc<EgressAllow>,
    tls: Arc<rustls::ClientConfig>,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    if let Some(dir) = socket.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let _ = std::fs::remove_file(socket);
    let listener = UnixListener::bind(socket)?;
    // The sandbox's user maps to the host's: owner-only is enough.
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600))?;
    Ok(tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let (u, eg, sid, tls) = (
                upstreams.clone(),
                egress.clone(),
                session_id.clone(),
                tls.clone(),
            );
            tokio::spawn(async move {
                if let Err(e) = handle(stream, &u, &eg, &sid, tls).await {
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

async fn handle(
    mut c: UnixStream,
    upstreams: &[Upstream],
    egress: &EgressAllow,
    session_id: &str,
    tls: Arc<rustls::ClientConfig>,
) -> std::io::Result<()> {
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
            return respond(
                &mut c,
                431,
                "Request Header Fields Too Large",
                "request head too large\n",
            )
            .await;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or("");
    let mut parts = request_line.split(' ');
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let headers: Vec<(String, String)> = lines
        .filter(|l| !l.is_empty())
        .filter_map(|l| {
            l.split_once(':')
                .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        })
        .collect();
    if method.eq_ignore_ascii_case("CONNECT") {
        return connect(c, target, &buf[head_end..], egress, session_id).await;
    }
    let route = target
        .strip_prefix('/')
        .and_then(|t| t.split_once('/').map(|(r, rest)| (r, format!("/{rest}"))));
    let Some((upstream, rest)) =
        route.and_then(|(r, rest)| upstreams.iter().find(|u| u.name == r).map(|u| (u, rest)))
    else {
        tracing::warn!(
            session_id,
            method,
            target,
            "proxy refused a request outside the allowed routes"
        );
        return respond(
            &mut c,
            403,
            "Forbidden",
            "pinch proxy: only the configured model APIs are reachable from the sandbox\n",
        )
        .await;
    };
    if headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"))
    {
        return respond(
            &mut c,
            411,
            "Length Required",
            "send a content-length body\n",
        )
        .await;
    }
    let len: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
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
    let (secure, base) = match (
        upstream.base_url.strip_prefix("https://"),
        upstream.base_url.strip_prefix("http://"),
    ) {
        (Some(b), _) => (true, b),
        (None, Some(b)) => (false, b),
        _ => {
            return respond(
                &mut c,
                502,
                "Bad Gateway",
                "pinch proxy: upstream base_url must be http:// or https://\n",
            )
            .await
        }
    };
    let (authority, prefix) = match base.split_once('/') {
        Some((a, p)) => (a.to_owned(), format!("/{}", p.trim_end_matches('/'))),
        None => (base.to_owned(), String::new()),
    };
    let host_only = authority
        .rsplit_once(':')
        .map_or(authority.as_str(), |(h, _)| h)
        .trim_matches(['[', ']'])
        .to_owned();
    let connect_to = if authority.contains(':') {
        authority.clone()
    } else {
        format!("{authority}:{}", if secure { 443 } else { 80 })
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
    let tcp = match TcpStream::connect(&connect_to).await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(session_id, upstream = %upstream.name, "proxy cannot reach the upstream: {e}");
            return respond(
                &mut c,
                502,
                "Bad Gateway",
                &format!("pinch proxy: upstream {} unreachable\n", upstream.name),
            )
            .await;
        }
    };
    tracing::debug!(session_id, upstream = %upstream.name, method, path = %rest, "proxied");
    if secure {
        let name = match rustls::pki_types::ServerName::try_from(host_only.clone()) {
            Ok(n) => n,
            Err(e) => {
                return respond(
                    &mut c,
                    502,
                    "Bad Gateway",
                    &format!("pinch proxy: bad upstream host {host_only}: {e}\n"),
                )
                .await
            }
        };
        let tls_stream = match tokio_rustls::TlsConnector::from(tls)
            .connect(name, tcp)
            .await
        {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(session_id, upstream = %upstream.name, "TLS to the upstream failed: {e}");
                return respond(
                    &mut c,
                    502,
                    "Bad Gateway",
                    &format!("pinch proxy: TLS to upstream {} failed\n", upstream.name),
                )
                .await;
            }
        };
        forward(tls_stream, &req, &body, c).await
    } else {
        forward(tcp, &req, &body, c).await
    }
}

/// `CONNECT host:port`: splice to the host if the allowlist has it.
async fn connect(
    mut c: UnixStream,
    target: &str,
    early: &[u8],
    egress: &EgressAllow,
    session_id: &str,
) -> std::io::Result<()> {
    // Only printable ASCII reaches the logs and the resolver.
    let parsed = split_host_port(target)
        .filter(|_| !target.is_empty() && target.bytes().all(|b| b.is_ascii_graphic()));
    let Some((host, Some(port))) = parsed else {
        return respond(
            &mut c,
            400,
            "Bad Request",
            "pinch proxy: CONNECT needs host:port\n",
        )
        .await;
    };
    if !egress.allows(host, port) {
        let entry = if port == 443 {
            host.to_owned()
        } else {
            format!("{host}:{port}")
        };
        tracing::warn!(
            session_id,
            host,
            port,
            "proxy refused CONNECT to {host}:{port}: not on the egress allowlist; to allow it add {entry:?} to `egress_allow` under [proxy] in pinch.toml (or to the agent group's egress_allow)"
        );
        let body = format!("pinch proxy: {host}:{port} is not on the egress allowlist (ask the operator to add {entry:?} to egress_allow)\n");
        return respond(&mut c, 403, "Forbidden", &body).await;
    }
    let addr = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let mut up = match TcpStream::connect(&addr).await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(
                session_id,
                host,
                port,
                "proxy cannot reach the egress host: {e}"
            );
            return respond(
                &mut c,
                502,
                "Bad Gateway",
                &format!("pinch proxy: cannot reach {host}:{port}: {e}\n"),
            )
            .await;
        }
    };
    tracing::info!(session_id, host, port, "egress tunnel opened");
    c.write_all(b"HTTP/1.1 200 Connection Established\r\n\r\n")
        .await?;
    // Bytes the client sent right after the head (a TLS hello) go first.
    if !early.is_empty() {
        up.write_all(early).await?;
    }
    let (to_host, to_client) = tokio::io::copy_bidirectional(&mut c, &mut up).await?;
    tracing::debug!(
        session_id,
        host,
        port,
        to_host,
        to_client,
        "egress tunnel closed"
    );
    Ok(())
}

/// Sends the request upstream and streams the response back as it comes
/// (SSE works unchanged).
async fn forward<S: AsyncRead + AsyncWrite + Unpin>(
    mut up: S,
    req: &str,
    body: &[u8],
    mut c: UnixStream,
) -> std::io::Result<()> {
    up.write_all(req.as_bytes()).await?;
    up.write_all(body).await?;
    up.flush().await?;
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match up.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => n,
            // A TLS peer closing without close_notify ends the body too.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(e) => return Err(e),
        };
        c.write_all(&buf[..n]).await?;
    }
    c.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_print() {
        let s = Secret::new("sk-very-secret");
        assert_eq!(format!("{s:?}"), "Secret(***)");
        let u = Upstream {
            name: "openai".into(),
            base_url: "http://x".into(),
            auth: Some(("authorization".into(), s)),
        };
        assert!(!format!("{u:?}").contains("sk-very-secret"));
    }

    #[test]
    fn egress_allowlist_matching() {
        let a = EgressAllow::parse(&[
            "api.github.com",
            "*.PyPI.org",
            "files.example.net:8443",
            "127.0.0.1:7000",
            "[::1]:9000",
            "dot.example.com.",
        ])
        .unwrap();
        let cases = [
            ("api.github.com", 443, true),
            ("API.GitHub.com.", 443, true),
            ("api.github.com", 80, false),
            ("github.com", 443, false),
            ("evilapi.github.com", 443, false),
            ("upload.pypi.org", 443, true),
            ("a.b.pypi.org", 443, true),
            ("pypi.org", 443, false),
            ("notpypi.org", 443, false),
            ("files.example.net", 8443, true),
            ("files.example.net", 443, false),
            ("127.0.0.1", 7000, true),
            ("127.0.0.1", 7001, false),
            ("::1", 9000, true),
            ("dot.example.com", 443, true),
        ];
        for (host, port, want) in cases {
            assert_eq!(a.allows(host, port), want, "{host}:{port}");
        }
        assert!(
            !EgressAllow::default().allows("api.github.com", 443),
            "empty = no egress"
        );
    }

    #[test]
    fn bad_egress_entries_name_the_entry() {
        for bad in [
            "host:http",
            "host:0",
            "host:70000",
            "",
            "*",
            "a/b",
            "*.*.x",
            "[::1]x",
        ] {
            let e = EgressAllow::parse(&[bad]).unwrap_err();
            assert!(
                e.contains(&format!("{bad:?}")) && e.contains("host:port"),
                "{bad}: {e}"
            );
        }
        assert_eq!(split_host_port("[::1]:443"), Some(("::1", Some(443))));
        assert_eq!(
            split_host_port("example.com:8080"),
            Some(("example.com", Some(8080)))
        );
    }
}
