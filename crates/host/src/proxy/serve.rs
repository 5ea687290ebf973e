//! The listener and one connection: accept with backoff, read the head
//! within its limits, answer refusals, hand a forward to `forward`.

use super::limits::{admit, Throttle};
use super::request::{decide, Decision};
use super::upstream::{connect, forward};
use super::*;

const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(10);
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Serves the proxy on `socket` until the returned handle is aborted.
pub fn serve(
    socket: &Path,
    session_id: String,
    upstreams: Arc<Vec<Upstream>>,
    egress: Arc<EgressAllow>,
    tls: Arc<rustls::ClientConfig>,
    budget: Arc<Budget>,
    web: Option<Arc<super::WebAccess>>,
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
        web,
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
        Ok(Decision::Host { route, len }) => {
            match route {
                super::web::HostRoute::Transcribe => {
                    return super::voice::answer(c, len, &buf[end..], ctx).await
                }
                super::web::HostRoute::Speak => {
                    return super::voice::answer_speak(c, len, &buf[end..], ctx).await
                }
                super::web::HostRoute::Stream => {
                    return super::stream::answer(c, len, &buf[end..], ctx).await
                }
                _ => {}
            }
            super::web::answer_route(c, route, len, &buf[end..], ctx).await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_head_ends_at_the_first_empty_line() {
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nA: b\r\n\r\nbody"), Some(24));
        assert_eq!(head_end(b"GET / HTTP/1.1\nA: b\n\nbody"), Some(21));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nA: b\r\n"), None);
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
            Arc::new(test_routes()),
            Arc::new(EgressAllow::default()),
            tls,
            budget,
            None,
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
