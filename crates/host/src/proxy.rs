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
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpStream, UnixListener, UnixStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

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
/// Client headers never forwarded: credentials and hop-by-hop headers
/// (the proxy frames the upstream request itself).
const STRIPPED: &[&str] = &[
    "authorization",
    "x-api-key",
    "api-key",
    "x-goog-api-key",
    "cookie",
    "proxy-authorization",
    "proxy-connection",
    "connection",
    "host",
    "content-length",
    "transfer-encoding",
    "keep-alive",
    "te",
    "trailer",
    "upgrade",
    "expect",
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

/// What one sandbox (and all of them together) can make the proxy hold.
/// Every connection is bounded in time and memory: the head is read whole
/// within `header_timeout` (at most [`MAX_HEAD`] bytes), bodies are streamed
/// through a fixed buffer (never collected), and a connection silent for
/// longer than its timeout is closed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Open connections one session's socket accepts at once (`[proxy]
    /// max_connections_per_session`, default 32); more get 503.
    pub per_session: usize,
    /// Open connections all sessions together hold (`[proxy]
    /// max_connections`, default 256), further capped at a quarter of the
    /// host's open-file limit (each connection may hold two descriptors;
    /// the other half stays the host's: databases, listeners, runners).
    pub total: usize,
    /// From accept to the end of the request head (`header_timeout_s`,
    /// default 10 s): a slow or silent client is answered 408 and closed.
    pub header_timeout: Duration,
    /// Silence from the client while the proxy waits for its body or
    /// writes to it (`idle_timeout_s`, default 60 s).
    pub idle_timeout: Duration,
    /// Silence from the upstream (a model thinking before its first token)
    /// and in both directions of an egress tunnel (`upstream_timeout_s`,
    /// default 300 s).
    pub upstream_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            per_session: 32,
            total: 256,
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            upstream_timeout: Duration::from_secs(300),
        }
    }
}

/// The connection budget every session's proxy draws from (one per host).
pub struct Budget {
    limits: Limits,
    total: Arc<Semaphore>,
    total_cap: usize,
    nofile: u64,
}

impl Budget {
    /// `nofile`: the host's open-file limit (see [`raise_nofile`]).
    pub fn new(limits: Limits, nofile: u64) -> Budget {
        let total_cap = effective_total(limits.total, nofile);
        tracing::info!(
            per_session = limits.per_session,
            total = total_cap,
            nofile,
            "credential proxy limits: {} connections per session, {total_cap} in all (open-file limit {nofile})",
            limits.per_session
        );
        Budget {
            total: Arc::new(Semaphore::new(total_cap)),
            limits,
            total_cap,
            nofile,
        }
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The host-wide cap in force (after the open-file limit).
    pub fn total_cap(&self) -> usize {
        self.total_cap
    }
}

/// The configured total, capped so proxy connections (two descriptors
/// each at most) can use no more than half of the open-file limit.
pub fn effective_total(configured: usize, nofile: u64) -> usize {
    let by_fds = usize::try_from(nofile / 4).unwrap_or(usize::MAX);
    configured.min(by_fds).max(1)
}

/// Raises the soft open-file limit to the hard one (the host needs room
/// for its databases and listeners whatever the sandboxes do); returns the
/// soft limit now in force.
pub fn raise_nofile() -> u64 {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) != 0 {
            return 1024;
        }
        if r.rlim_cur < r.rlim_max {
            let want = libc::rlimit {
                rlim_cur: r.rlim_max,
                rlim_max: r.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &want) == 0 {
                r.rlim_cur = r.rlim_max;
            } else {
                tracing::warn!(
                    "cannot raise the open-file limit from {} to {}: {}",
                    r.rlim_cur,
                    r.rlim_max,
                    std::io::Error::last_os_error()
                );
            }
        }
    }
    r.rlim_cur
}

/// Why a connection was not admitted.
#[derive(Debug, PartialEq, Eq)]
enum Full {
    Session(usize),
    Total { cap: usize, nofile: u64 },
}

impl Full {
    fn message(&self) -> String {
        match self {
            Full::Session(n) => format!(
                "this sandbox already holds {n} connections to the proxy (the per-session limit, [proxy] max_connections_per_session): close idle connections and retry"
            ),
            Full::Total { cap, nofile } => format!(
                "all sessions together hold {cap} proxy connections (the host-wide limit: [proxy] max_connections, at most a quarter of the open-file limit {nofile}): retry later"
            ),
        }
    }
}

/// Takes a session slot and a host-wide slot, or says which is full.
fn admit(
    session: &Arc<Semaphore>,
    budget: &Budget,
) -> Result<(OwnedSemaphorePermit, OwnedSemaphorePermit), Full> {
    let s = session
        .clone()
        .try_acquire_owned()
        .map_err(|_| Full::Session(budget.limits.per_session))?;
    let t = budget
        .total
        .clone()
        .try_acquire_owned()
        .map_err(|_| Full::Total {
            cap: budget.total_cap,
            nofile: budget.nofile,
        })?;
    Ok((s, t))
}

/// At most one log line per `every` for a repeated event, with the count
/// of the ones not logged.
struct Throttle {
    every: Duration,
    last: Option<Instant>,
    suppressed: u64,
}

impl Throttle {
    fn new(every: Duration) -> Throttle {
        Throttle {
            every,
            last: None,
            suppressed: 0,
        }
    }

    /// `Some(suppressed since the last line)` when a line is due.
    fn note(&mut self, now: Instant) -> Option<u64> {
        if self
            .last
            .is_some_and(|l| now.duration_since(l) < self.every)
        {
            self.suppressed += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.suppressed))
    }
}

const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(10);
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

struct Ctx {
    session_id: String,
    upstreams: Arc<Vec<Upstream>>,
    egress: Arc<EgressAllow>,
    tls: Arc<rustls::ClientConfig>,
    limits: Limits,
}

/// Serves the proxy on `socket` until the returned handle is aborted.
pub fn serve(
    socket: &Path,
    session_id: String,
    upstreams: Arc<Vec<Upstream>>,
    egress: Arc<EgressAllow>,
    tls: Arc<rustls::ClientConfig>,
    budget: Arc<Budget>,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    if let Some(dir) = socket.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let _ = std::fs::remove_file(socket);
    let listener = UnixListener::bind(socket)?;
    // The sandbox's user maps to the host's: owner-only is enough.
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600))?;
    let slots = Arc::new(Semaphore::new(budget.limits.per_session));
    let ctx = Arc::new(Ctx {
        session_id,
        upstreams,
        egress,
        tls,
        limits: budget.limits.clone(),
    });
    Ok(tokio::spawn(async move {
        let mut backoff = ACCEPT_BACKOFF_MIN;
        let mut refusals = Throttle::new(Duration::from_secs(5));
        loop {
            let stream = match listener.accept().await {
                Ok((s, _)) => {
                    backoff = ACCEPT_BACKOFF_MIN;
                    s
                }
                Err(e) => {
                    // EMFILE and friends: never spin; the backlog waits.
                    if backoff == ACCEPT_BACKOFF_MIN {
                        tracing::warn!(session_id = %ctx.session_id, "the credential proxy cannot accept a connection ({e}); backing off");
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
                    continue;
                }
            };
            let permits = match admit(&slots, &budget) {
                Ok(p) => p,
                Err(full) => {
                    // Answered without waiting (a fresh socket's buffer
                    // takes it) and closed: the slot stays free.
                    let body = format!("pinch proxy: {}\n", full.message());
                    let _ =
                        stream.try_write(response(503, &body, &[("retry-after", "1")]).as_bytes());
                    if let Some(suppressed) = refusals.note(Instant::now()) {
                        tracing::warn!(session_id = %ctx.session_id, suppressed, "proxy refused a connection: {}", full.message());
                    }
                    continue;
                }
            };
            let ctx = ctx.clone();
            tokio::spawn(async move {
                let _permits = permits;
                if let Err(e) = handle(stream, &ctx).await {
                    tracing::debug!(session_id = %ctx.session_id, "proxy connection ended: {e}");
                }
            });
        }
    }))
}

fn reason_phrase(code: u16) -> &'static str {
    match code {
        400 => "Bad Request",
        403 => "Forbidden",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        411 => "Length Required",
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

/// The head as read: its bytes and where it ends (any bytes after are the
/// start of the body or a tunnel).
enum HeadRead {
    Head(Vec<u8>, usize),
    Closed,
    TooLarge,
}

/// Where the head ends: after the first empty line, whether its line ends
/// are CRLF or (refused later) bare LF.
fn head_end(buf: &[u8]) -> Option<usize> {
    buf.iter()
        .enumerate()
        .find_map(|(i, b)| match (b, buf.get(i + 1), buf.get(i + 2)) {
            (b'\n', Some(b'\n'), _) => Some(i + 2),
            (b'\n', Some(b'\r'), Some(b'\n')) => Some(i + 3),
            _ => None,
        })
}

async fn read_head(c: &mut UnixStream) -> std::io::Result<HeadRead> {
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    loop {
        let n = c.read(&mut chunk).await?;
        if n == 0 {
            return Ok(HeadRead::Closed);
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = head_end(&buf) {
            return Ok(if end > MAX_HEAD {
                HeadRead::TooLarge
            } else {
                HeadRead::Head(buf, end)
            });
        }
        if buf.len() > MAX_HEAD {
            return Ok(HeadRead::TooLarge);
        }
    }
}

async fn handle(mut c: UnixStream, ctx: &Ctx) -> std::io::Result<()> {
    let lim = &ctx.limits;
    let sid = ctx.session_id.as_str();
    let (buf, end) = match tokio::time::timeout(lim.header_timeout, read_head(&mut c)).await {
        Err(_) => {
            tracing::debug!(
                session_id = sid,
                "proxy closed a connection whose request head did not arrive in time"
            );
            let body = format!("pinch proxy: the request head did not arrive within {} s ([proxy] header_timeout_s)\n", lim.header_timeout.as_secs_f64());
            return respond(&mut c, lim, 408, &body).await;
        }
        Ok(r) => match r? {
            HeadRead::Closed => return Ok(()),
            HeadRead::TooLarge => {
                return respond(
                    &mut c,
                    lim,
                    431,
                    &format!("pinch proxy: the request head is larger than {MAX_HEAD} bytes\n"),
                )
                .await
            }
            HeadRead::Head(buf, end) => (buf, end),
        },
    };
    match decide(&buf[..end], &ctx.upstreams) {
        Err(r) => {
            tracing::warn!(
                session_id = sid,
                code = r.code,
                "proxy refused a request: {}",
                r.reason
            );
            respond(&mut c, lim, r.code, &format!("pinch proxy: {}\n", r.reason)).await
        }
        Ok(Decision::Connect { host, port }) => connect(c, &host, port, &buf[end..], ctx).await,
        Ok(Decision::Forward(f)) => forward(c, f, &buf[end..], ctx).await,
    }
}

/// A refused request: the status and a reason naming the cause and the fix.
#[derive(Debug, PartialEq, Eq)]
struct Refusal {
    code: u16,
    reason: String,
}

fn refuse(code: u16, reason: impl Into<String>) -> Refusal {
    Refusal {
        code,
        reason: reason.into(),
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Decision {
    /// An egress tunnel to an allowlisted `host:port`.
    Connect {
        host: String,
        port: u16,
    },
    Forward(Forward),
}

/// A model API request to forward.
#[derive(Debug, PartialEq, Eq)]
struct Forward {
    /// Index into the upstreams.
    upstream: usize,
    method: String,
    /// What follows the route: an allowed path and the query as sent.
    rest: String,
    /// The client's headers still to send (names lowercase).
    headers: Vec<(String, Vec<u8>)>,
    len: u64,
    expect_continue: bool,
}

const MAX_HEADERS: usize = 100;

/// Decides what to do with one request head (everything up to and with
/// its empty line). Parsing is httparse's; on top, anything two HTTP
/// implementations could read differently is refused: a line end other
/// than CRLF, a folded header line, more than one `Content-Length` or
/// `Host`, `Content-Length` with `Transfer-Encoding`, a target that is
/// not origin-form. Only the allowed paths of a configured route pass.
fn decide(head: &[u8], upstreams: &[Upstream]) -> Result<Decision, Refusal> {
    for (i, b) in head.iter().enumerate() {
        let bare_lf = *b == b'\n' && (i == 0 || head[i - 1] != b'\r');
        let bare_cr = *b == b'\r' && head.get(i + 1) != Some(&b'\n');
        if bare_lf || bare_cr {
            return Err(refuse(
                400,
                "a bare LF or CR in the request head: every line must end with CRLF",
            ));
        }
        if *b == b'\n' && matches!(head.get(i + 1), Some(b' ' | b'\t')) {
            return Err(refuse(
                400,
                "a folded header line (obs-fold): send each header on one line",
            ));
        }
    }
    let mut hs = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut hs);
    match req.parse(head) {
        Ok(httparse::Status::Complete(n)) if n == head.len() => {}
        Ok(_) => return Err(refuse(400, "an incomplete request head")),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(refuse(431, format!("more than {MAX_HEADERS} headers")))
        }
        Err(e) => return Err(refuse(400, format!("a malformed request head ({e})"))),
    }
    let (method, target) = (req.method.unwrap_or(""), req.path.unwrap_or(""));
    if req.version != Some(1) {
        return Err(refuse(400, "only HTTP/1.1 is spoken here"));
    }
    let count = |name: &str| {
        req.headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case(name))
            .count()
    };
    if count("host") > 1 {
        return Err(refuse(400, "more than one Host header"));
    }
    if method == "CONNECT" {
        // Only printable ASCII reaches the logs and the resolver.
        let parsed = split_host_port(target)
            .filter(|_| !target.is_empty() && target.bytes().all(|b| b.is_ascii_graphic()));
        let Some((host, Some(port))) = parsed else {
            return Err(refuse(400, "CONNECT needs host:port"));
        };
        return Ok(Decision::Connect {
            host: host.to_owned(),
            port,
        });
    }
    if !target.starts_with('/') {
        return Err(refuse(
            400,
            format!("the request target {target:?} is not a path: send `/<route>/<path>` to this socket (egress to other hosts goes through CONNECT)"),
        ));
    }
    if target.contains('#') {
        return Err(refuse(400, "a fragment (#) in the request target"));
    }
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (target, None),
    };
    let route = path
        .strip_prefix('/')
        .and_then(|t| t.split_once('/'))
        .map(|(r, rest)| (r, format!("/{rest}")));
    let Some((idx, upstream, rest)) = route.and_then(|(r, rest)| {
        upstreams
            .iter()
            .enumerate()
            .find(|(_, u)| u.name == r)
            .map(|(i, u)| (i, u, rest))
    }) else {
        return Err(refuse(403, format!("{path} is not a configured model API route: only the configured model APIs are reachable from the sandbox")));
    };
    if !upstream.paths.contains(&rest) {
        return Err(refuse(
            403,
            format!(
                "{rest} is not an allowed path of the {} route (allowed: {}); the operator can allow more with [provider.{}] allow_paths",
                upstream.name,
                upstream.paths.join(", "),
                upstream.name
            ),
        ));
    }
    if method != "GET" && method != "POST" {
        return Err(refuse(
            405,
            format!("{method} is not forwarded: the model APIs take GET and POST"),
        ));
    }
    let (cl, te) = (count("content-length"), count("transfer-encoding"));
    if cl > 0 && te > 0 {
        return Err(refuse(
            400,
            "both Content-Length and Transfer-Encoding: send one Content-Length",
        ));
    }
    if te > 0 {
        return Err(refuse(
            411,
            "send the body with a Content-Length (Transfer-Encoding is not accepted)",
        ));
    }
    if cl > 1 {
        return Err(refuse(400, "more than one Content-Length header"));
    }
    let len = match req
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("content-length"))
    {
        None => 0,
        Some(h) => {
            let v = h.value.trim_ascii();
            match std::str::from_utf8(v)
                .ok()
                .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|s| s.parse::<u64>().ok())
            {
                Some(n) => n,
                None => return Err(refuse(400, "Content-Length is not a number")),
            }
        }
    };
    if len > MAX_BODY {
        return Err(refuse(
            413,
            format!("the request body is larger than {MAX_BODY} bytes"),
        ));
    }
    // Headers the client named in `Connection` are hop-by-hop too.
    let mut hop: Vec<String> = Vec::new();
    for h in req
        .headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("connection"))
    {
        hop.extend(
            String::from_utf8_lossy(h.value)
                .split(',')
                .map(|t| t.trim().to_ascii_lowercase())
                .filter(|t| !t.is_empty()),
        );
    }
    let mut expect_continue = false;
    let mut headers = Vec::new();
    for h in req.headers.iter() {
        let name = h.name.to_ascii_lowercase();
        if name == "expect" {
            expect_continue |= h.value.trim_ascii().eq_ignore_ascii_case(b"100-continue");
            continue;
        }
        if STRIPPED.contains(&name.as_str()) || hop.contains(&name) {
            continue;
        }
        headers.push((name, h.value.trim_ascii().to_vec()));
    }
    let rest = match query {
        Some(q) => format!("{rest}?{q}"),
        None => rest,
    };
    Ok(Decision::Forward(Forward {
        upstream: idx,
        method: method.to_owned(),
        rest,
        headers,
        len,
        expect_continue,
    }))
}

/// Where an upstream's `base_url` points.
struct Target {
    secure: bool,
    /// `host[:port]` as written (the `Host` header).
    authority: String,
    host: String,
    connect_to: String,
    /// The path prefix, without a trailing slash.
    prefix: String,
}

fn target_of(base_url: &str) -> Option<Target> {
    let (secure, base) = match (
        base_url.strip_prefix("https://"),
        base_url.strip_prefix("http://"),
    ) {
        (Some(b), _) => (true, b),
        (None, Some(b)) => (false, b),
        _ => return None,
    };
    let (authority, prefix) = match base.split_once('/') {
        Some((a, p)) => (a.to_owned(), format!("/{}", p.trim_end_matches('/'))),
        None => (base.to_owned(), String::new()),
    };
    let host = authority
        .rsplit_once(':')
        .map_or(authority.as_str(), |(h, _)| h)
        .trim_matches(['[', ']'])
        .to_owned();
    let connect_to = if authority.contains(':') {
        authority.clone()
    } else {
        format!("{authority}:{}", if secure { 443 } else { 80 })
    };
    Some(Target {
        secure,
        authority,
        host,
        connect_to,
        prefix: if prefix == "/" { String::new() } else { prefix },
    })
}

/// The head sent upstream: our own framing (`Content-Length` as checked,
/// `Connection: close`), the client's remaining headers, the credential.
fn upstream_head(f: &Forward, t: &Target, auth: Option<&(String, Secret)>) -> Vec<u8> {
    let mut h = format!(
        "{} {}{} HTTP/1.1\r\nhost: {}\r\nconnection: close\r\ncontent-length: {}\r\n",
        f.method, t.prefix, f.rest, t.authority, f.len
    )
    .into_bytes();
    for (k, v) in &f.headers {
        h.extend_from_slice(k.as_bytes());
        h.extend_from_slice(b": ");
        h.extend_from_slice(v);
        h.extend_from_slice(b"\r\n");
    }
    if let Some((k, v)) = auth {
        h.extend_from_slice(format!("{k}: {}\r\n", v.expose()).as_bytes());
    }
    h.extend_from_slice(b"\r\n");
    h
}

async fn forward(mut c: UnixStream, f: Forward, early: &[u8], ctx: &Ctx) -> std::io::Result<()> {
    let (lim, sid) = (&ctx.limits, ctx.session_id.as_str());
    let upstream = &ctx.upstreams[f.upstream];
    let Some(t) = target_of(&upstream.base_url) else {
        return respond(
            &mut c,
            lim,
            502,
            "pinch proxy: upstream base_url must be http:// or https://\n",
        )
        .await;
    };
    let head = upstream_head(&f, &t, upstream.auth.as_ref());
    let tcp = match tokio::time::timeout(lim.upstream_timeout, TcpStream::connect(&t.connect_to))
        .await
    {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::warn!(session_id = sid, upstream = %upstream.name, "proxy cannot reach the upstream: {e}");
            return respond(
                &mut c,
                lim,
                502,
                &format!("pinch proxy: upstream {} unreachable\n", upstream.name),
            )
            .await;
        }
        Err(_) => {
            return respond(
                &mut c,
                lim,
                504,
                &format!(
                    "pinch proxy: upstream {} did not accept a connection in time\n",
                    upstream.name
                ),
            )
            .await
        }
    };
    tracing::debug!(session_id = sid, upstream = %upstream.name, method = %f.method, path = %f.rest, "proxied");
    if t.secure {
        let name = match rustls::pki_types::ServerName::try_from(t.host.clone()) {
            Ok(n) => n,
            Err(e) => {
                return respond(
                    &mut c,
                    lim,
                    502,
                    &format!("pinch proxy: bad upstream host {}: {e}\n", t.host),
                )
                .await
            }
        };
        let tls = tokio_rustls::TlsConnector::from(ctx.tls.clone()).connect(name, tcp);
        let tls_stream = match tokio::time::timeout(lim.upstream_timeout, tls).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                tracing::warn!(session_id = sid, upstream = %upstream.name, "TLS to the upstream failed: {e}");
                return respond(
                    &mut c,
                    lim,
                    502,
                    &format!("pinch proxy: TLS to upstream {} failed\n", upstream.name),
                )
                .await;
            }
            Err(_) => {
                return respond(
                    &mut c,
                    lim,
                    504,
                    &format!("pinch proxy: TLS to upstream {} timed out\n", upstream.name),
                )
                .await
            }
        };
        relay(tls_stream, &head, &f, early, c, lim).await
    } else {
        relay(tcp, &head, &f, early, c, lim).await
    }
}

/// The relay buffer: the most a connection holds of a body or a response.
const RELAY_BUF: usize = 16 * 1024;

/// Sends the head, streams the body from the client (exactly its
/// `Content-Length`; anything after is never forwarded), then streams the
/// response back as it comes (SSE works unchanged).
async fn relay<S: AsyncRead + AsyncWrite + Unpin>(
    mut up: S,
    head: &[u8],
    f: &Forward,
    early: &[u8],
    mut c: UnixStream,
    lim: &Limits,
) -> std::io::Result<()> {
    async fn within<T>(
        d: Duration,
        what: &str,
        fut: impl std::future::Future<Output = std::io::Result<T>>,
    ) -> std::io::Result<T> {
        tokio::time::timeout(d, fut)
            .await
            .unwrap_or_else(|_| Err(timed_out(what)))
    }
    if f.expect_continue {
        within(
            lim.idle_timeout,
            "writing 100 Continue",
            c.write_all(b"HTTP/1.1 100 Continue\r\n\r\n"),
        )
        .await?;
    }
    within(
        lim.upstream_timeout,
        "sending the head upstream",
        up.write_all(head),
    )
    .await?;
    let first = &early[..early
        .len()
        .min(usize::try_from(f.len).unwrap_or(usize::MAX))];
    within(
        lim.upstream_timeout,
        "sending the body upstream",
        up.write_all(first),
    )
    .await?;
    let mut left = f.len - first.len() as u64;
    let mut buf = vec![0u8; RELAY_BUF];
    while left > 0 {
        let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let n = match tokio::time::timeout(lim.idle_timeout, c.read(&mut buf[..want])).await {
            Err(_) => {
                let body = format!(
                    "pinch proxy: the request body stalled for {} s ([proxy] idle_timeout_s)\n",
                    lim.idle_timeout.as_secs_f64()
                );
                return respond(&mut c, lim, 408, &body).await;
            }
            Ok(r) => r?,
        };
        if n == 0 {
            // The client gave up; the upstream sees a short body and a close.
            return Ok(());
        }
        within(
            lim.upstream_timeout,
            "sending the body upstream",
            up.write_all(&buf[..n]),
        )
        .await?;
        left -= n as u64;
    }
    within(
        lim.upstream_timeout,
        "sending the body upstream",
        up.flush(),
    )
    .await?;
    loop {
        let n = match tokio::time::timeout(lim.upstream_timeout, up.read(&mut buf)).await {
            Err(_) => return Err(timed_out("waiting for the upstream")),
            Ok(Ok(0)) => break,
            Ok(Ok(n)) => n,
            // A TLS peer closing without close_notify ends the body too.
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Ok(Err(e)) => return Err(e),
        };
        within(
            lim.idle_timeout,
            "writing the response to the client",
            c.write_all(&buf[..n]),
        )
        .await?;
    }
    c.shutdown().await
}

/// `CONNECT host:port`: splice to the host if the allowlist has it.
async fn connect(
    mut c: UnixStream,
    host: &str,
    port: u16,
    early: &[u8],
    ctx: &Ctx,
) -> std::io::Result<()> {
    let (lim, session_id) = (&ctx.limits, ctx.session_id.as_str());
    if !ctx.egress.allows(host, port) {
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
        return respond(&mut c, lim, 403, &body).await;
    }
    let addr = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let mut up = match tokio::time::timeout(lim.upstream_timeout, TcpStream::connect(&addr)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::warn!(
                session_id,
                host,
                port,
                "proxy cannot reach the egress host: {e}"
            );
            return respond(
                &mut c,
                lim,
                502,
                &format!("pinch proxy: cannot reach {host}:{port}: {e}\n"),
            )
            .await;
        }
        Err(_) => {
            return respond(
                &mut c,
                lim,
                504,
                &format!("pinch proxy: {host}:{port} did not accept a connection in time\n"),
            )
            .await
        }
    };
    tracing::info!(session_id, host, port, "egress tunnel opened");
    c.write_all(b"HTTP/1.1 200 Connection Established\r\n\r\n")
        .await?;
    // Bytes the client sent right after the head (a TLS hello) go first.
    if !early.is_empty() {
        up.write_all(early).await?;
    }
    let progress = Arc::new(AtomicU64::new(0));
    let mut c = Counted {
        inner: c,
        progress: progress.clone(),
    };
    tokio::select! {
        r = tokio::io::copy_bidirectional(&mut c, &mut up) => {
            let (to_host, to_client) = r?;
            tracing::debug!(session_id, host, port, to_host, to_client, "egress tunnel closed");
        }
        () = silence(&progress, lim.upstream_timeout) => {
            tracing::debug!(session_id, host, port, "egress tunnel closed after {} s of silence", lim.upstream_timeout.as_secs_f64());
        }
    }
    Ok(())
}

/// Resolves once `progress` has not moved for `limit`.
async fn silence(progress: &AtomicU64, limit: Duration) {
    let tick = (limit / 4).max(Duration::from_millis(10));
    let (mut seen, mut since) = (progress.load(Ordering::Relaxed), Instant::now());
    loop {
        tokio::time::sleep(tick).await;
        let now = progress.load(Ordering::Relaxed);
        if now != seen {
            (seen, since) = (now, Instant::now());
        } else if since.elapsed() >= limit {
            return;
        }
    }
}

/// A stream that counts the bytes through it (for [`silence`]).
struct Counted<S> {
    inner: S,
    progress: Arc<AtomicU64>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        self.progress.fetch_add(n as u64, Ordering::Relaxed);
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = &r {
            self.progress.fetch_add(*n as u64, Ordering::Relaxed);
        }
        r
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

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

    fn routes() -> Vec<Upstream> {
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

    fn code(head: &str) -> u16 {
        match decide(head.as_bytes(), &routes()) {
            Ok(_) => 200,
            Err(r) => r.code,
        }
    }

    const OK: &str = "POST /openai/chat/completions HTTP/1.1\r\nHost: p\r\n";

    #[test]
    fn ambiguous_heads_are_refused() {
        let cases: &[(&str, String, u16)] = &[
            ("plain", format!("{OK}Content-Length: 2\r\n\r\n"), 200),
            (
                "no body",
                "GET /openai/models HTTP/1.1\r\nHost: p\r\n\r\n".into(),
                200,
            ),
            (
                "with a query",
                "GET /openai/models?limit=5 HTTP/1.1\r\nHost: p\r\n\r\n".into(),
                200,
            ),
            (
                "anthropic",
                "POST /anthropic/v1/messages HTTP/1.1\r\nContent-Length: 0\r\n\r\n".into(),
                200,
            ),
            (
                "bare LF in a value",
                format!("{OK}X-A: a\nAuthorization: b\r\n\r\n"),
                400,
            ),
            (
                "bare LF ends",
                "POST /openai/chat/completions HTTP/1.1\nHost: p\n\n".into(),
                400,
            ),
            (
                "bare LF in the target",
                "POST /openai/chat/completions\nX: y HTTP/1.1\r\n\r\n".into(),
                400,
            ),
            ("bare CR", format!("{OK}X-A: a\rB: c\r\n\r\n"), 400),
            ("obs-fold", format!("{OK}X-A: a\r\n b\r\n\r\n"), 400),
            ("tab fold", format!("{OK}X-A: a\r\n\tb\r\n\r\n"), 400),
            (
                "two equal CL",
                format!("{OK}Content-Length: 2\r\nContent-Length: 2\r\n\r\n"),
                400,
            ),
            (
                "two CL",
                format!("{OK}Content-Length: 2\r\ncontent-length: 9\r\n\r\n"),
                400,
            ),
            (
                "CL and TE",
                format!("{OK}Content-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n"),
                400,
            ),
            (
                "TE alone",
                format!("{OK}Transfer-Encoding: chunked\r\n\r\n"),
                411,
            ),
            ("CL signed", format!("{OK}Content-Length: +2\r\n\r\n"), 400),
            ("CL list", format!("{OK}Content-Length: 2, 2\r\n\r\n"), 400),
            (
                "CL too big",
                format!("{OK}Content-Length: {}\r\n\r\n", MAX_BODY + 1),
                413,
            ),
            ("two Hosts", format!("{OK}Host: q\r\n\r\n"), 400),
            ("space before colon", format!("{OK}X-A : b\r\n\r\n"), 400),
            ("NUL in a value", format!("{OK}X-A: a\0b\r\n\r\n"), 400),
            (
                "HTTP/1.0",
                "GET /openai/models HTTP/1.0\r\n\r\n".into(),
                400,
            ),
            (
                "absolute-form",
                "GET http://127.0.0.1:9/v1/models HTTP/1.1\r\n\r\n".into(),
                400,
            ),
            ("asterisk", "OPTIONS * HTTP/1.1\r\n\r\n".into(), 400),
            (
                "fragment",
                "GET /openai/models#x HTTP/1.1\r\n\r\n".into(),
                400,
            ),
            (
                "unlisted path",
                "POST /openai/files HTTP/1.1\r\n\r\n".into(),
                403,
            ),
            (
                "dot segments",
                "POST /openai/chat/completions/../../files HTTP/1.1\r\n\r\n".into(),
                403,
            ),
            (
                "escaped slash",
                "POST /openai/chat%2fcompletions HTTP/1.1\r\n\r\n".into(),
                403,
            ),
            (
                "double slash",
                "POST /openai//chat/completions HTTP/1.1\r\n\r\n".into(),
                403,
            ),
            (
                "trailing slash",
                "POST /openai/chat/completions/ HTTP/1.1\r\n\r\n".into(),
                403,
            ),
            ("route only", "GET /openai HTTP/1.1\r\n\r\n".into(), 403),
            (
                "unknown route",
                "GET /elsewhere/x HTTP/1.1\r\n\r\n".into(),
                403,
            ),
            (
                "other route's path",
                "POST /anthropic/chat/completions HTTP/1.1\r\n\r\n".into(),
                403,
            ),
            (
                "DELETE",
                "DELETE /openai/models HTTP/1.1\r\n\r\n".into(),
                405,
            ),
        ];
        for (what, head, want) in cases {
            assert_eq!(code(head), *want, "{what}: {head:?}");
        }
        let many: String = (0..MAX_HEADERS + 1)
            .map(|i| format!("X-{i}: v\r\n"))
            .collect();
        assert_eq!(code(&format!("{OK}{many}\r\n")), 431);
        // Each refusal names its cause.
        let r = decide(b"POST /openai/files HTTP/1.1\r\n\r\n", &routes()).unwrap_err();
        assert!(
            r.reason.contains("/files")
                && r.reason.contains("allow_paths")
                && r.reason.contains("/chat/completions"),
            "{}",
            r.reason
        );
    }

    #[test]
    fn credentials_and_hop_by_hop_headers_are_stripped() {
        let head = format!(
            "{OK}Authorization: Bearer mine\r\nX-Api-Key: k\r\nCookie: c\r\nProxy-Authorization: p\r\nConnection: keep-alive, X-Secret\r\nX-Secret: s\r\nKeep-Alive: 5\r\nTE: trailers\r\nUpgrade: h2c\r\nExpect: 100-continue\r\nAnthropic-Version: 2023-06-01\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n"
        );
        let Ok(Decision::Forward(f)) = decide(head.as_bytes(), &routes()) else {
            panic!()
        };
        let names: Vec<&str> = f.headers.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(names, ["anthropic-version", "content-type"]);
        assert!(f.expect_continue);
        assert_eq!(
            (f.upstream, f.len, f.rest.as_str(), f.method.as_str()),
            (0, 2, "/chat/completions", "POST")
        );
        let t = target_of("http://127.0.0.1:9/v1").unwrap();
        let up = String::from_utf8(upstream_head(&f, &t, routes()[0].auth.as_ref())).unwrap();
        assert_eq!(
            up,
            "POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1:9\r\nconnection: close\r\ncontent-length: 2\r\nanthropic-version: 2023-06-01\r\ncontent-type: application/json\r\nauthorization: Bearer sk-k\r\n\r\n"
        );
        // The query travels; the prefix of an https base without a path is empty.
        let Ok(Decision::Forward(f)) = decide(
            b"POST /anthropic/v1/messages?beta=true HTTP/1.1\r\n\r\n",
            &routes(),
        ) else {
            panic!()
        };
        let t = target_of("https://api.example.com").unwrap();
        assert!((t.secure, t.connect_to.as_str()) == (true, "api.example.com:443"));
        let up = String::from_utf8(upstream_head(&f, &t, routes()[1].auth.as_ref())).unwrap();
        assert!(
            up.starts_with("POST /v1/messages?beta=true HTTP/1.1\r\nhost: api.example.com\r\n")
                && up.ends_with("x-api-key: sk-a\r\n\r\n"),
            "{up}"
        );
    }

    #[test]
    fn connect_targets() {
        let d = decide(
            b"CONNECT api.github.com:443 HTTP/1.1\r\nHost: api.github.com:443\r\n\r\n",
            &routes(),
        )
        .unwrap();
        assert_eq!(
            d,
            Decision::Connect {
                host: "api.github.com".into(),
                port: 443
            }
        );
        assert_eq!(code("CONNECT api.github.com HTTP/1.1\r\n\r\n"), 400);
        assert_eq!(code("CONNECT a.com:443\nX: y HTTP/1.1\r\n\r\n"), 400);
    }

    #[test]
    fn the_head_ends_at_the_first_empty_line() {
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nA: b\r\n\r\nbody"), Some(24));
        assert_eq!(head_end(b"GET / HTTP/1.1\nA: b\n\nbody"), Some(21));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nA: b\r\n"), None);
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

    #[test]
    fn the_total_cap_leaves_half_the_descriptors_to_the_host() {
        assert_eq!(effective_total(256, 1_048_576), 256);
        assert_eq!(effective_total(256, 1024), 256);
        assert_eq!(effective_total(256, 512), 128);
        assert_eq!(effective_total(256, 2), 1);
        assert!(raise_nofile() >= 64);
    }

    #[test]
    fn slots_per_session_and_in_all() {
        let budget = Budget::new(
            Limits {
                per_session: 2,
                total: 3,
                ..Limits::default()
            },
            1 << 20,
        );
        let (a, b) = (Arc::new(Semaphore::new(2)), Arc::new(Semaphore::new(2)));
        let a1 = admit(&a, &budget).unwrap();
        let _a2 = admit(&a, &budget).unwrap();
        assert_eq!(admit(&a, &budget).unwrap_err(), Full::Session(2));
        let _b1 = admit(&b, &budget).unwrap();
        let full = admit(&b, &budget).unwrap_err();
        assert_eq!(
            full,
            Full::Total {
                cap: 3,
                nofile: 1 << 20
            }
        );
        assert!(
            full.message().contains("max_connections")
                && Full::Session(2)
                    .message()
                    .contains("max_connections_per_session")
        );
        // A refused session slot is not kept; closing frees both slots.
        assert_eq!(b.available_permits(), 1);
        drop(a1);
        assert!(admit(&b, &budget).is_ok());
    }

    #[test]
    fn repeated_refusals_log_once_per_interval() {
        let mut t = Throttle::new(Duration::from_secs(5));
        let t0 = Instant::now();
        assert_eq!(t.note(t0), Some(0));
        assert_eq!(t.note(t0 + Duration::from_secs(1)), None);
        assert_eq!(t.note(t0 + Duration::from_secs(2)), None);
        assert_eq!(t.note(t0 + Duration::from_secs(6)), Some(2));
    }

    /// A real socket: a silent connection gets 408 after the head timeout
    /// and gives its slot back.
    #[tokio::test]
    async fn silent_connections_are_answered_and_their_slots_freed() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("llm.sock");
        let limits = Limits {
            per_session: 1,
            header_timeout: Duration::from_secs(2),
            ..Limits::default()
        };
        let budget = Arc::new(Budget::new(limits, 1 << 20));
        let tls = tls_config(&[]).unwrap();
        let h = serve(
            &sock,
            "s".into(),
            Arc::new(routes()),
            Arc::new(EgressAllow::default()),
            tls,
            budget,
        )
        .unwrap();
        let mut first = UnixStream::connect(&sock).await.unwrap();
        first.write_all(b"POST /openai/chat/comp").await.unwrap();
        // The single slot is taken: the next connection is told so.
        let mut out = String::new();
        let mut second = UnixStream::connect(&sock).await.unwrap();
        second.read_to_string(&mut out).await.unwrap();
        assert!(
            out.starts_with("HTTP/1.1 503") && out.contains("max_connections_per_session"),
            "{out}"
        );
        out.clear();
        first.read_to_string(&mut out).await.unwrap();
        assert!(
            out.starts_with("HTTP/1.1 408") && out.contains("header_timeout_s"),
            "{out}"
        );
        // The slot is back.
        let mut third = UnixStream::connect(&sock).await.unwrap();
        third
            .write_all(b"GET /nowhere/x HTTP/1.1\r\n\r\n")
            .await
            .unwrap();
        out.clear();
        third.read_to_string(&mut out).await.unwrap();
        assert!(out.starts_with("HTTP/1.1 403"), "{out}");
        h.abort();
    }
}
