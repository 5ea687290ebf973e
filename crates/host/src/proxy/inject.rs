//! Credential injection (decision 0050): a `CONNECT` to a host bound to a
//! secret the session's agent group may use is not tunnelled. The proxy
//! answers the tunnel itself with TLS under a leaf from the install's CA
//! (which the sandbox trusts), reads one HTTP/1.1 request, checks the
//! owner's approval rule, puts the secret in (the client's own credential
//! header is dropped), sends the request to the real host over TLS
//! verified against the public roots, and streams the answer back. Every
//! use and refusal is audited in the store. Every other host keeps the
//! end-to-end tunnel.
//!
//! One request per tunnel (`connection: close` both ways): clients open
//! the next tunnel for the next request, and nothing is ever read past
//! one request's framing.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use super::*;
use crate::secrets::{self, Approve, Binding, Form, Store, Use, Value};

/// How long a request waits for the owner's click before it is refused
/// (the card stays; "always" then lets the retry through).
pub const APPROVAL_WAIT: Duration = Duration::from_secs(120);

/// The owner's answer to a use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    Deny(String),
}

/// A use the owner is asked about (the main loop raises the card).
#[derive(Debug)]
pub struct UseAsk {
    pub secret: String,
    pub group: String,
    pub session: String,
    pub method: String,
    pub host: String,
    pub path: String,
    pub reply: oneshot::Sender<Verdict>,
}

/// What one session's proxy needs to inject its group's secrets.
pub struct SecretAccess {
    pub store: Arc<Store>,
    pub ca: Arc<secrets::ca::Ca>,
    pub tokens: Arc<secrets::oauth::Tokens>,
    pub group: String,
    /// Where approval questions go (`None`: every ask is refused).
    pub ask: Option<mpsc::UnboundedSender<UseAsk>>,
    pub approval_wait: Duration,
}

/// What a `CONNECT` to `host:port` becomes.
pub(super) enum Route {
    /// No secret is bound there: today's rules (`egress_allow`).
    Unbound,
    /// Bound to secrets this group may not use: refused (unless the
    /// allowlist also has the host, then a plain tunnel).
    NotForGroup(Vec<String>),
    Inject(Binding),
}

/// Looks the host up in the store (off the async threads).
pub(super) async fn route(sa: &Arc<SecretAccess>, host: &str, port: u16) -> Result<Route, String> {
    let (sa2, h) = (sa.clone(), host.to_owned());
    let bound = tokio::task::spawn_blocking(move || sa2.store.bound_to(&h, port))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    if bound.is_empty() {
        return Ok(Route::Unbound);
    }
    match bound.iter().find(|b| b.allows_group(&sa.group)) {
        Some(b) => Ok(Route::Inject(b.clone())),
        None => Ok(Route::NotForGroup(
            bound.into_iter().map(|b| b.name).collect(),
        )),
    }
}

/// Writes an audit row (logged on failure; never blocks the answer).
pub(super) fn audit(sa: &Arc<SecretAccess>, u: Use) {
    let store = sa.store.clone();
    tokio::task::spawn_blocking(move || {
        if let Err(e) = store.record(&u) {
            tracing::error!(secret = %u.secret, "could not write the secret-use audit row: {e}");
        }
    });
}

#[allow(clippy::too_many_arguments)]
pub(super) fn use_row(
    sa: &SecretAccess,
    sid: &str,
    secret: &str,
    method: &str,
    host: &str,
    path: &str,
    status: u16,
    outcome: &str,
) -> Use {
    Use {
        at: pinch_proto::time::now(),
        agent_group: sa.group.clone(),
        session: sid.to_owned(),
        secret: secret.to_owned(),
        method: method.to_owned(),
        host: host.to_owned(),
        path: path.to_owned(),
        status,
        outcome: outcome.to_owned(),
    }
}

/// A JSON answer inside the tunnel (`message` is what API clients print).
fn answer(code: u16, message: &str) -> Vec<u8> {
    let body = serde_json::json!({"error": "pinch_proxy", "message": message}).to_string();
    format!(
        "HTTP/1.1 {code} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        reason_phrase(code),
        body.len()
    )
    .into_bytes()
}

/// A stream that yields `pre` before its inner stream's bytes (what the
/// client sent right behind its `CONNECT`: the TLS hello).
struct Rewind<S> {
    pre: Vec<u8>,
    pos: usize,
    inner: S,
}

impl<S: AsyncRead + Unpin> AsyncRead for Rewind<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if self.pos < self.pre.len() {
            let n = buf.remaining().min(self.pre.len() - self.pos);
            let start = self.pos;
            buf.put_slice(&self.pre[start..start + n]);
            self.pos += n;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Rewind<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        b: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, b)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The request read inside the tunnel.
struct Req {
    method: String,
    /// Path and query as sent (origin-form).
    target: String,
    headers: Vec<(String, Vec<u8>)>,
    body: Body,
    expect_continue: bool,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Body {
    Len(u64),
    Chunked,
}

/// Client headers never sent on: hop-by-hop ones (the proxy frames the
/// request) and the client's own proxy credentials.
const HOP: &[&str] = &[
    "host",
    "connection",
    "proxy-connection",
    "proxy-authorization",
    "keep-alive",
    "te",
    "trailer",
    "upgrade",
    "content-length",
    "transfer-encoding",
    "expect",
];

fn parse(head: &[u8]) -> Result<Req, String> {
    let mut hs = [httparse::EMPTY_HEADER; 100];
    let mut r = httparse::Request::new(&mut hs);
    match r.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => return Err("the request head is incomplete".into()),
        Err(e) => return Err(format!("the request head does not parse: {e}")),
    }
    let method = r.method.unwrap_or_default().to_owned();
    let target = r.path.unwrap_or_default().to_owned();
    if !target.starts_with('/') {
        return Err(format!(
            "the request target {target:?} must be a path (origin-form) inside a tunnel"
        ));
    }
    if r.version != Some(1) {
        return Err("only HTTP/1.1 is spoken inside the tunnel".into());
    }
    let (mut len, mut chunked, mut expect_continue, mut lens) = (0u64, false, false, 0);
    let mut headers = Vec::new();
    for h in r.headers.iter() {
        let name = h.name.to_ascii_lowercase();
        match name.as_str() {
            "content-length" => {
                lens += 1;
                len = std::str::from_utf8(h.value)
                    .ok()
                    .and_then(|v| v.trim().parse().ok())
                    .ok_or("a Content-Length that is not a number")?;
            }
            "transfer-encoding" => {
                if !h.value.eq_ignore_ascii_case(b"chunked") {
                    return Err("a Transfer-Encoding other than chunked".into());
                }
                chunked = true;
            }
            "expect" => expect_continue = h.value.eq_ignore_ascii_case(b"100-continue"),
            _ => {}
        }
        if !HOP.contains(&name.as_str()) {
            headers.push((name, h.value.to_vec()));
        }
    }
    if lens > 1 || (lens == 1 && chunked) {
        return Err(
            "a request with two lengths (Content-Length twice, or with Transfer-Encoding)".into(),
        );
    }
    if len > MAX_BODY {
        return Err(format!("a body larger than {MAX_BODY} bytes"));
    }
    Ok(Req {
        method,
        target,
        headers,
        body: if chunked {
            Body::Chunked
        } else {
            Body::Len(len)
        },
        expect_continue,
    })
}

/// The path without its query (what the audit and the card show).
fn path_of(target: &str) -> &str {
    target.split(['?', '#']).next().unwrap_or(target)
}

/// `target` with `name=value` as the query parameter `name` (any the
/// client sent under that name dropped).
fn with_query(target: &str, name: &str, value: &str) -> String {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let enc = |s: &str| {
        s.bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect::<String>()
    };
    let mut parts: Vec<String> = query
        .split('&')
        .filter(|p| !p.is_empty() && p.split('=').next() != Some(name))
        .map(str::to_owned)
        .collect();
    parts.push(format!("{}={}", enc(name), enc(value)));
    format!("{path}?{}", parts.join("&"))
}

/// The head sent to the real host.
fn upstream_head(req: &Req, authority: &str, form: &Form, secret: &str) -> Vec<u8> {
    use base64::Engine;
    let target = match form {
        Form::Query(n) => with_query(&req.target, n, secret),
        _ => req.target.clone(),
    };
    let mut h = format!(
        "{} {target} HTTP/1.1\r\nhost: {authority}\r\nconnection: close\r\n",
        req.method
    )
    .into_bytes();
    match req.body {
        Body::Len(n) => h.extend_from_slice(format!("content-length: {n}\r\n").as_bytes()),
        Body::Chunked => h.extend_from_slice(b"transfer-encoding: chunked\r\n"),
    }
    let dropped = form.header();
    for (k, v) in &req.headers {
        if Some(k.as_str()) == dropped {
            continue;
        }
        h.extend_from_slice(k.as_bytes());
        h.extend_from_slice(b": ");
        h.extend_from_slice(v);
        h.extend_from_slice(b"\r\n");
    }
    match form {
        Form::Bearer => {
            h.extend_from_slice(format!("authorization: Bearer {secret}\r\n").as_bytes())
        }
        Form::Basic => {
            let b = base64::engine::general_purpose::STANDARD.encode(secret);
            h.extend_from_slice(format!("authorization: Basic {b}\r\n").as_bytes());
        }
        Form::Header(n) => h.extend_from_slice(format!("{n}: {secret}\r\n").as_bytes()),
        Form::Query(_) => {}
    }
    h.extend_from_slice(b"\r\n");
    h
}

/// Whether the owner lets this use through (asking if the rule says so).
async fn approved(
    sa: &Arc<SecretAccess>,
    b: &Binding,
    sid: &str,
    method: &str,
    host: &str,
    path: &str,
) -> Verdict {
    let granted = match b.approve {
        Approve::Never => return Verdict::Allow,
        Approve::Every => false,
        Approve::First => {
            let (sa2, name) = (sa.clone(), b.name.clone());
            match tokio::task::spawn_blocking(move || sa2.store.granted(&name, &sa2.group)).await {
                Ok(Ok(g)) => g,
                Ok(Err(e)) => {
                    return Verdict::Deny(format!("the secret store cannot be read: {e}"))
                }
                Err(e) => return Verdict::Deny(e.to_string()),
            }
        }
    };
    if granted {
        return Verdict::Allow;
    }
    let Some(ask) = &sa.ask else {
        return Verdict::Deny("this host cannot ask the owner (no approval channel)".into());
    };
    let (tx, rx) = oneshot::channel();
    let q = UseAsk {
        secret: b.name.clone(),
        group: sa.group.clone(),
        session: sid.to_owned(),
        method: method.to_owned(),
        host: host.to_owned(),
        path: path.to_owned(),
        reply: tx,
    };
    if ask.send(q).is_err() {
        return Verdict::Deny("the host is shutting down".into());
    }
    match tokio::time::timeout(sa.approval_wait, rx).await {
        Ok(Ok(v)) => v,
        Ok(Err(_)) => Verdict::Deny("the approval request was dropped (the card expired or could not be sent to any owner)".into()),
        Err(_) => Verdict::Deny(format!(
            "the owner has not answered the approval card within {} s; it stays open: try again once they allow it",
            sa.approval_wait.as_secs()
        )),
    }
}

/// Serves one intercepted tunnel to `host:port` with `b`'s secret.
pub(super) async fn intercept(
    mut c: UnixStream,
    host: &str,
    port: u16,
    early: &[u8],
    ctx: &Ctx,
    sa: &Arc<SecretAccess>,
    b: Binding,
) -> std::io::Result<()> {
    let (lim, sid) = (&ctx.limits, ctx.session_id.as_str());
    let server = match sa.ca.server_config(host) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(
                session_id = sid,
                host,
                "cannot make a certificate to inject secret {}: {e}",
                b.name
            );
            return respond(
                &mut c,
                lim,
                502,
                &format!("pinch proxy: cannot make a certificate for {host}: {e}\n"),
            )
            .await;
        }
    };
    c.write_all(b"HTTP/1.1 200 Connection Established\r\n\r\n")
        .await?;
    let stream = Rewind {
        pre: early.to_vec(),
        pos: 0,
        inner: c,
    };
    let mut tls = match tokio::time::timeout(
        lim.header_timeout,
        tokio_rustls::TlsAcceptor::from(server).accept(stream),
    )
    .await
    {
        Ok(Ok(t)) => t,
        Ok(Err(e)) => {
            tracing::warn!(session_id = sid, host, "a client in the sandbox refused the proxy's TLS for {host} ({e}): does it trust /etc/ssl/certs/ca-certificates.crt (SSL_CERT_FILE)?");
            return Ok(());
        }
        Err(_) => return Err(timed_out("waiting for the client's TLS hello")),
    };
    let authority = if port == 443 {
        host.to_owned()
    } else if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    // The head, within the head timeout and size.
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    let end = loop {
        let n = match tokio::time::timeout(lim.header_timeout, tls.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return Ok(()),
            Ok(Ok(n)) => n,
            Err(_) => return Err(timed_out("waiting for the request head in the tunnel")),
        };
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4) {
            break end;
        }
        if buf.len() > MAX_HEAD {
            tls.write_all(&answer(
                431,
                &format!("the request head is larger than {MAX_HEAD} bytes"),
            ))
            .await?;
            return tls.shutdown().await;
        }
    };
    let req = match parse(&buf[..end]) {
        Ok(r) => r,
        Err(why) => {
            tracing::warn!(
                session_id = sid,
                host,
                "proxy refused a request in the tunnel: {why}"
            );
            tls.write_all(&answer(400, &format!("pinch proxy: {why}")))
                .await?;
            return tls.shutdown().await;
        }
    };
    let path = path_of(&req.target).to_owned();
    let row = |status: u16, outcome: &str| {
        use_row(
            sa,
            sid,
            &b.name,
            &req.method,
            &authority,
            &path,
            status,
            outcome,
        )
    };
    if let Verdict::Deny(why) = approved(sa, &b, sid, &req.method, &authority, &path).await {
        let msg = format!("pinch proxy: the use of secret {:?} by agent group {:?} for {} {authority}{path} was not allowed: {why}", b.name, sa.group, req.method);
        tracing::warn!(session_id = sid, secret = %b.name, "{msg}");
        audit(sa, row(403, "denied"));
        tls.write_all(&answer(403, &msg)).await?;
        return tls.shutdown().await;
    }
    let secret = match value_of(sa, &b).await {
        Ok(s) => s,
        Err(why) => {
            tracing::error!(session_id = sid, secret = %b.name, "{why}");
            audit(sa, row(502, "secret_unavailable"));
            tls.write_all(&answer(
                502,
                &format!("pinch proxy: secret {:?} cannot be used now: {why}", b.name),
            ))
            .await?;
            return tls.shutdown().await;
        }
    };
    let head = upstream_head(&req, &authority, &b.form, &secret);
    drop(secret);
    let up = match open_upstream(host, port, ctx).await {
        Ok(u) => u,
        Err(why) => {
            tracing::warn!(session_id = sid, host, secret = %b.name, "{why}");
            audit(sa, row(502, "upstream_failed"));
            tls.write_all(&answer(502, &format!("pinch proxy: {why}")))
                .await?;
            return tls.shutdown().await;
        }
    };
    let early_body = buf[end..].to_vec();
    let status = exchange(up, &head, &req, &early_body, &mut tls, lim).await;
    let code = status.as_ref().map_or(0, |s| *s);
    audit(
        sa,
        row(code, if status.is_ok() { "injected" } else { "cut" }),
    );
    tracing::info!(session_id = sid, secret = %b.name, method = %req.method, host = %authority, path = %path, status = code, "injected a secret");
    let _ = tls.shutdown().await;
    status.map(|_| ())
}

/// The secret's text: a token as stored, or an OAuth access token.
async fn value_of(sa: &Arc<SecretAccess>, b: &Binding) -> Result<String, String> {
    let (sa2, name) = (sa.clone(), b.name.clone());
    let v = tokio::task::spawn_blocking(move || sa2.store.value(&name))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    match v {
        Value::Token { value } => Ok(value),
        Value::OAuth(o) => sa.tokens.access_token(&sa.store, &b.name, &o).await,
    }
}

/// TCP then TLS to the real host, verified against the proxy's roots.
async fn open_upstream(
    host: &str,
    port: u16,
    ctx: &Ctx,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, String> {
    let lim = &ctx.limits;
    let addr = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let tcp = match tokio::time::timeout(lim.upstream_timeout, TcpStream::connect(&addr)).await {
        Ok(Ok(s)) => {
            // One request and its answer: no waiting on Nagle.
            let _ = s.set_nodelay(true);
            s
        }
        Ok(Err(e)) => return Err(format!("cannot reach {addr}: {e}")),
        Err(_) => return Err(format!("{addr} did not accept a connection in time")),
    };
    let name = rustls::pki_types::ServerName::try_from(host.to_owned())
        .map_err(|e| format!("bad host {host}: {e}"))?;
    match tokio::time::timeout(
        lim.upstream_timeout,
        tokio_rustls::TlsConnector::from(ctx.tls.clone()).connect(name, tcp),
    )
    .await
    {
        Ok(Ok(s)) => Ok(s),
        Ok(Err(e)) => Err(format!(
            "TLS to {addr} failed, so the secret was not sent: {e}"
        )),
        Err(_) => Err(format!("TLS to {addr} timed out")),
    }
}

/// Sends the head and body, relays the answer; returns its status.
async fn exchange<U, C>(
    mut up: U,
    head: &[u8],
    req: &Req,
    early: &[u8],
    c: &mut C,
    lim: &Limits,
) -> std::io::Result<u16>
where
    U: AsyncRead + AsyncWrite + Unpin,
    C: AsyncRead + AsyncWrite + Unpin,
{
    if req.expect_continue {
        c.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await?;
    }
    up.write_all(head).await?;
    let mut from_client = Rewind {
        pre: early.to_vec(),
        pos: 0,
        inner: &mut *c,
    };
    match req.body {
        Body::Len(n) => {
            let mut left = n;
            let mut buf = vec![0u8; 16 * 1024];
            while left > 0 {
                let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                let got = match tokio::time::timeout(
                    lim.idle_timeout,
                    from_client.read(&mut buf[..want]),
                )
                .await
                {
                    Ok(r) => r?,
                    Err(_) => return Err(timed_out("reading the request body in the tunnel")),
                };
                if got == 0 {
                    return Err(std::io::ErrorKind::UnexpectedEof.into());
                }
                up.write_all(&buf[..got]).await?;
                left -= got as u64;
            }
        }
        Body::Chunked => relay_chunked(&mut from_client, &mut up, lim).await?,
    }
    up.flush().await?;
    // The answer: relayed as it comes; its status read from the first line.
    let mut buf = vec![0u8; 16 * 1024];
    let mut first = Vec::new();
    let mut status = 0u16;
    loop {
        let n = match tokio::time::timeout(lim.upstream_timeout, up.read(&mut buf)).await {
            Err(_) => return Err(timed_out("waiting for the upstream's answer")),
            Ok(Ok(0)) => break,
            Ok(Ok(n)) => n,
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Ok(Err(e)) => return Err(e),
        };
        if status == 0 && first.len() < 64 {
            first.extend_from_slice(&buf[..n.min(64)]);
            status = std::str::from_utf8(&first)
                .ok()
                .and_then(|l| l.split(' ').nth(1))
                .and_then(|s| s.get(..3))
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
        }
        match tokio::time::timeout(lim.idle_timeout, c.write_all(&buf[..n])).await {
            Ok(r) => r?,
            Err(_) => return Err(timed_out("writing the answer in the tunnel")),
        }
    }
    Ok(status)
}

/// Relays a chunked body exactly: each size line, its bytes, the last
/// chunk and the trailers; nothing after it is read.
async fn relay_chunked<R, W>(r: &mut R, w: &mut W, lim: &Limits) -> std::io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let bad = |why: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, why.to_owned());
    let mut total = 0u64;
    let mut line = Vec::new();
    // One byte at a time for the framing lines (they are short); the data by blocks.
    async fn read_line<R: AsyncRead + Unpin>(
        r: &mut R,
        line: &mut Vec<u8>,
        lim: &Limits,
    ) -> std::io::Result<()> {
        line.clear();
        let mut b = [0u8; 1];
        while !line.ends_with(b"\r\n") {
            if line.len() > 4096 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "a chunk line is too long",
                ));
            }
            match tokio::time::timeout(lim.idle_timeout, r.read(&mut b)).await {
                Ok(Ok(0)) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
                Ok(Ok(_)) => line.push(b[0]),
                Ok(Err(e)) => return Err(e),
                Err(_) => return Err(timed_out("reading a chunked body")),
            }
        }
        Ok(())
    }
    loop {
        read_line(r, &mut line, lim).await?;
        let size = match httparse::parse_chunk_size(&line) {
            Ok(httparse::Status::Complete((_, n))) => n,
            _ => return Err(bad("a chunk size that does not parse")),
        };
        w.write_all(&line).await?;
        if size == 0 {
            // Trailers, up to the empty line.
            loop {
                read_line(r, &mut line, lim).await?;
                w.write_all(&line).await?;
                if line == b"\r\n" {
                    return Ok(());
                }
            }
        }
        total += size;
        if total > MAX_BODY {
            return Err(bad("a chunked body larger than the proxy's limit"));
        }
        let mut left = size + 2;
        let mut buf = vec![0u8; 16 * 1024];
        while left > 0 {
            let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
            let n = match tokio::time::timeout(lim.idle_timeout, r.read(&mut buf[..want])).await {
                Ok(Ok(0)) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
                Ok(Ok(n)) => n,
                Ok(Err(e)) => return Err(e),
                Err(_) => return Err(timed_out("reading a chunked body")),
            };
            w.write_all(&buf[..n]).await?;
            left -= n as u64;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_secret_replaces_the_clients_credential_in_each_form() {
        let req = parse(b"GET /user/repos?page=2&access_token=mine HTTP/1.1\r\nHost: evil.example\r\nAuthorization: token mine\r\nX-Api-Key: mine\r\nAccept: application/json\r\nProxy-Authorization: p\r\nConnection: keep-alive\r\n\r\n").unwrap();
        let head = |f: Form| {
            String::from_utf8(upstream_head(&req, "api.github.com", &f, "S3CR3T")).unwrap()
        };
        let h = head(Form::Bearer);
        assert!(h.starts_with("GET /user/repos?page=2&access_token=mine HTTP/1.1\r\nhost: api.github.com\r\nconnection: close\r\ncontent-length: 0\r\n"), "{h}");
        assert!(h.ends_with("x-api-key: mine\r\naccept: application/json\r\nauthorization: Bearer S3CR3T\r\n\r\n"), "{h}");
        assert_eq!(h.matches("authorization").count(), 1, "{h}");
        assert!(
            !h.contains("proxy-authorization") && !h.contains("keep-alive") && !h.contains("evil")
        );
        let h = head(Form::Basic);
        assert!(h.contains("authorization: Basic UzNDUjNU\r\n"), "{h}");
        let h = head(Form::Header("x-api-key".into()));
        assert!(
            h.contains("authorization: token mine")
                && h.contains("x-api-key: S3CR3T")
                && !h.contains("x-api-key: mine"),
            "{h}"
        );
        let h = head(Form::Query("access_token".into()));
        assert!(
            h.starts_with("GET /user/repos?page=2&access_token=S3CR3T HTTP/1.1"),
            "{h}"
        );
        assert_eq!(path_of(&req.target), "/user/repos");
        assert_eq!(with_query("/x", "k", "a b&c"), "/x?k=a%20b%26c");
    }

    #[test]
    fn ambiguous_or_foreign_requests_are_refused() {
        for bad in [
            &b"GET https://other.example/ HTTP/1.1\r\n\r\n"[..],
            b"GET / HTTP/1.0\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: 99999999999\r\n\r\n",
        ] {
            assert!(parse(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
        assert!(
            parse(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n")
                .is_ok_and(|r| r.body == Body::Chunked)
        );
    }

    #[tokio::test]
    async fn a_chunked_body_is_relayed_exactly_and_nothing_after_it() {
        let input = b"4\r\nwiki\r\n5;x=y\r\npedia\r\n0\r\nT: v\r\n\r\nNEXT REQUEST";
        let mut r = &input[..];
        let mut out = Vec::new();
        relay_chunked(&mut r, &mut out, &Limits::default())
            .await
            .unwrap();
        assert_eq!(out, &input[..input.len() - 12]);
        assert_eq!(r, b"NEXT REQUEST");
        let mut r = &b"zz\r\n"[..];
        assert!(relay_chunked(&mut r, &mut Vec::new(), &Limits::default())
            .await
            .is_err());
    }
}
