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

use super::inject_http::{exchange, parse, path_of, upstream_head, Rewind};
use super::*;
use crate::secrets::{self, Approve, Binding, Store, Use, Value};

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

/// Audit writes of refusals in flight, over all sessions: a refusal costs
/// the agent nothing, so beyond this many they are counted in the log
/// instead of each written (uses that were injected are always written).
const MAX_REFUSALS_IN_FLIGHT: usize = 8;
static REFUSALS_IN_FLIGHT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
static REFUSALS_UNWRITTEN: AtomicU64 = AtomicU64::new(0);

/// Writes an audit row off the async threads (logged on failure).
pub(super) fn audit(sa: &Arc<SecretAccess>, u: Use) {
    let refusal = u.outcome != "injected";
    if refusal && REFUSALS_IN_FLIGHT.fetch_add(1, Ordering::SeqCst) >= MAX_REFUSALS_IN_FLIGHT {
        REFUSALS_IN_FLIGHT.fetch_sub(1, Ordering::SeqCst);
        let n = REFUSALS_UNWRITTEN.fetch_add(1, Ordering::Relaxed) + 1;
        if n.is_power_of_two() {
            tracing::warn!(session_id = %u.session, secret = %u.secret, unwritten = n, "refused uses of secrets come faster than the audit writes them; {n} not written so far (an agent repeating a refused request)");
        }
        return;
    }
    let store = sa.store.clone();
    tokio::task::spawn_blocking(move || {
        if let Err(e) = store.record(&u) {
            tracing::error!(secret = %u.secret, "could not write the secret-use audit row: {e}");
        }
        if refusal {
            REFUSALS_IN_FLIGHT.fetch_sub(1, Ordering::SeqCst);
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
    // The head, within the head timeout (in all, not per read) and size.
    let deadline = tokio::time::Instant::now() + lim.header_timeout;
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    let end = loop {
        let n = match tokio::time::timeout_at(deadline, tls.read(&mut chunk)).await {
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
    let path = path_of(&req.target);
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
    // The binding as it is now (the owner may have changed it while the
    // card waited), read with the value.
    let secret = match value_of(sa, &b.name, host, port).await {
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
    let status = exchange(up, &secret, &head, &req, &early_body, &mut tls, lim).await;
    drop(secret);
    let code = status.as_ref().map_or(0, |s| *s);
    audit(
        sa,
        row(code, if status.is_ok() { "injected" } else { "cut" }),
    );
    tracing::info!(session_id = sid, secret = %b.name, method = %req.method, host = %authority, path = %path, status = code, "injected a secret");
    let _ = tls.shutdown().await;
    status.map(|_| ())
}

/// The secret's text — a token as stored, or an OAuth access token — if
/// its binding, read again with it, still sends it to `host:port` for this
/// group.
async fn value_of(
    sa: &Arc<SecretAccess>,
    name: &str,
    host: &str,
    port: u16,
) -> Result<String, String> {
    let (sa2, n, h) = (sa.clone(), name.to_owned(), host.to_owned());
    let v = tokio::task::spawn_blocking(move || {
        let still = sa2
            .store
            .bound_to(&h, port)?
            .into_iter()
            .any(|b| b.name == n && b.allows_group(&sa2.group));
        if !still {
            return Ok(None);
        }
        sa2.store.value(&n).map(Some)
    })
    .await
    .map_err(|e| e.to_string())?
    .map_err(|e| e.to_string())?;
    let token = match v {
        None => {
            return Err("its binding changed: it is no longer for this host or agent group".into())
        }
        Some(Value::Token { value }) => value,
        Some(Value::OAuth(o)) => sa.tokens.access_token(&sa.store, name, &o).await?,
    };
    if token.bytes().any(|b| b.is_ascii_control()) {
        return Err("the value holds a control character, which no header can carry".into());
    }
    Ok(token)
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
