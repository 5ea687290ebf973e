//! The upstream side: the upstream request head with the host's credential
//! injected, the upstream connection (TCP or TLS), and the byte relay
//! with its silence timeout and counters.

use super::request::Forward;
use super::*;

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

pub(super) async fn forward(
    mut c: UnixStream,
    f: Forward,
    early: &[u8],
    ctx: &Ctx,
) -> std::io::Result<()> {
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
        relay(tls_stream, &head, &f, early, c, lim, &upstream.name).await
    } else {
        relay(tcp, &head, &f, early, c, lim, &upstream.name).await
    }
}

/// The relay buffer: the most a connection holds of a body or a response.
const RELAY_BUF: usize = 16 * 1024;

/// Sends the head, streams the body from the client (exactly its
/// `Content-Length`; anything after is never forwarded), then streams the
/// response back as it comes (SSE works unchanged). An upstream silent for
/// the upstream timeout before its first byte is answered 504 naming it
/// and the setting (the client learns why); silent mid-response, the
/// connection is closed (the client sees a cut response).
async fn relay<S: AsyncRead + AsyncWrite + Unpin>(
    mut up: S,
    head: &[u8],
    f: &Forward,
    early: &[u8],
    mut c: UnixStream,
    lim: &Limits,
    name: &str,
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
    let mut relayed = false;
    loop {
        let n = match tokio::time::timeout(lim.upstream_timeout, up.read(&mut buf)).await {
            Err(_) if !relayed => {
                let secs = lim.upstream_timeout.as_secs_f64();
                tracing::warn!(
                    upstream = name,
                    "the upstream sent nothing for {secs} s ([proxy] upstream_timeout_s); answered 504"
                );
                let body = format!(
                    "pinch proxy: upstream {name} sent nothing for {secs} s ([proxy] upstream_timeout_s)\n"
                );
                return respond(&mut c, lim, 504, &body).await;
            }
            Err(_) => return Err(timed_out("waiting for the upstream")),
            Ok(Ok(0)) => break,
            Ok(Ok(n)) => n,
            // A TLS peer closing without close_notify ends the body too.
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Ok(Err(e)) => return Err(e),
        };
        relayed = true;
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
pub(super) async fn connect(
    mut c: UnixStream,
    host: &str,
    port: u16,
    early: &[u8],
    ctx: &Ctx,
) -> std::io::Result<()> {
    let (lim, session_id) = (&ctx.limits, ctx.session_id.as_str());
    if let Some(sa) = ctx.web.as_ref().and_then(|w| w.secrets.as_ref()) {
        use super::inject::{audit, intercept, route, use_row, Route};
        match route(sa, host, port).await {
            Err(e) => {
                tracing::error!(
                    session_id,
                    host,
                    "the secret store cannot be read ({e}); CONNECT refused"
                );
                let body = format!("pinch proxy: the secret store cannot be read, so {host}:{port} is refused: {e}\n");
                return respond(&mut c, lim, 503, &body).await;
            }
            Ok(Route::Inject(b)) => return intercept(c, host, port, early, ctx, sa, b).await,
            Ok(Route::NotForGroup(names)) if !ctx.egress.allows(host, port) => {
                let names = names.join(", ");
                let msg = format!("{host}:{port} is bound to secret(s) {names}, which agent group {:?} may not use (the owner can add it: `pinch secrets edit <name> --group {}`)", sa.group, sa.group);
                tracing::warn!(session_id, host, port, "proxy refused CONNECT: {msg}");
                for n in names.split(", ") {
                    audit(
                        sa,
                        use_row(sa, session_id, n, "CONNECT", host, "", 403, "denied"),
                    );
                }
                return respond(&mut c, lim, 403, &format!("pinch proxy: {msg}\n")).await;
            }
            Ok(_) => {}
        }
    }
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
    use crate::proxy::request::{decide, Decision};

    #[test]
    fn credentials_and_hop_by_hop_headers_are_stripped() {
        let head = format!(
            "{OK}Authorization: Bearer mine\r\nX-Api-Key: k\r\nCookie: c\r\nProxy-Authorization: p\r\nConnection: keep-alive, X-Secret\r\nX-Secret: s\r\nKeep-Alive: 5\r\nTE: trailers\r\nUpgrade: h2c\r\nExpect: 100-continue\r\nAnthropic-Version: 2023-06-01\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n"
        );
        let Ok(Decision::Forward(f)) = decide(head.as_bytes(), &test_routes()) else {
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
        let up = String::from_utf8(upstream_head(&f, &t, test_routes()[0].auth.as_ref())).unwrap();
        assert_eq!(
            up,
            "POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1:9\r\nconnection: close\r\ncontent-length: 2\r\nanthropic-version: 2023-06-01\r\ncontent-type: application/json\r\nauthorization: Bearer sk-k\r\n\r\n"
        );
        // The query travels; the prefix of an https base without a path is empty.
        let Ok(Decision::Forward(f)) = decide(
            b"POST /anthropic/v1/messages?beta=true HTTP/1.1\r\n\r\n",
            &test_routes(),
        ) else {
            panic!()
        };
        let t = target_of("https://api.example.com").unwrap();
        assert!((t.secure, t.connect_to.as_str()) == (true, "api.example.com:443"));
        let up = String::from_utf8(upstream_head(&f, &t, test_routes()[1].auth.as_ref())).unwrap();
        assert!(
            up.starts_with("POST /v1/messages?beta=true HTTP/1.1\r\nhost: api.example.com\r\n")
                && up.ends_with("x-api-key: sk-a\r\n\r\n"),
            "{up}"
        );
    }
}
