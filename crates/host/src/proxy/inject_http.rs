//! The HTTP of an intercepted tunnel (decision 0050): the one request
//! read from the sandbox's client, the head sent to the real host with the
//! secret in, and the exact relay of the body and the answer. Stricter than
//! HTTP requires where two readers could disagree: what the proxy forwards
//! is exactly one request, framed the way it read it.

use super::*;
use crate::secrets::Form;

/// A stream that yields `pre` before its inner stream's bytes (what the
/// client sent right behind its `CONNECT`: the TLS hello).
pub(super) struct Rewind<S> {
    pub(super) pre: Vec<u8>,
    pub(super) pos: usize,
    pub(super) inner: S,
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
pub(super) struct Req {
    pub(super) method: String,
    /// Path and query as sent (origin-form).
    pub(super) target: String,
    pub(super) headers: Vec<(String, Vec<u8>)>,
    pub(super) body: Body,
    pub(super) expect_continue: bool,
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Body {
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

pub(super) fn parse(head: &[u8]) -> Result<Req, String> {
    let mut hs = [httparse::EMPTY_HEADER; 100];
    let mut r = httparse::Request::new(&mut hs);
    // Line ends are CRLF only: a bare LF or CR is read differently by
    // different servers.
    let bare = head.iter().enumerate().any(|(i, b)| match b {
        b'\n' => i == 0 || head[i - 1] != b'\r',
        b'\r' => head.get(i + 1) != Some(&b'\n'),
        _ => false,
    });
    if bare {
        return Err("a line end that is not CRLF".into());
    }
    match r.parse(head) {
        Ok(httparse::Status::Complete(n)) if n == head.len() => {}
        Ok(_) => return Err("the request head is incomplete".into()),
        Err(e) => return Err(format!("the request head does not parse: {e}")),
    }
    let method = r.method.unwrap_or_default().to_owned();
    let target = r.path.unwrap_or_default().to_owned();
    if target.starts_with("//") || target.contains('#') {
        return Err(format!(
            "the request target {:?} is not a plain path (a leading // or a fragment)",
            shown(&target)
        ));
    }
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

/// The path without its query, as the audit and the owner's card show it:
/// printable ASCII only (anything else escaped), at most 200 characters.
pub(super) fn path_of(target: &str) -> String {
    shown(target.split('?').next().unwrap_or(target))
}

fn shown(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        if out.len() >= 200 {
            out.push('…');
            break;
        }
        if c.is_ascii_graphic() {
            out.push(c);
        } else {
            out.push_str(&c.escape_unicode().to_string());
        }
    }
    out
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
pub(super) fn upstream_head(req: &Req, authority: &str, form: &Form, secret: &str) -> Vec<u8> {
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

/// Sends the head and body, relays the answer; returns its status.
pub(super) async fn exchange<U, C>(
    mut up: U,
    secret: &str,
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
    // The answer's head is read whole (bounded) so the secret can be taken
    // out of it: a redirect or a `Link` that keeps the query would hand a
    // `query:` secret back to the agent. Then the rest as it comes.
    let mut buf = vec![0u8; 16 * 1024];
    let mut head = Vec::new();
    let mut body_start = None;
    while body_start.is_none() {
        let n = read_upstream(&mut up, &mut buf, lim).await?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
        body_start = head
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map(|i| i + 4);
        if body_start.is_none() && head.len() > MAX_HEAD {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "the upstream's answer head is larger than the proxy reads",
            ));
        }
    }
    let split = body_start.unwrap_or(head.len());
    let status = std::str::from_utf8(&head[..split.min(64)])
        .ok()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.get(..3))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let mut out = redact(&head[..split], secret);
    out.extend_from_slice(&head[split..]);
    match tokio::time::timeout(lim.idle_timeout, c.write_all(&out)).await {
        Ok(r) => r?,
        Err(_) => return Err(timed_out("writing the answer in the tunnel")),
    }
    loop {
        let n = read_upstream(&mut up, &mut buf, lim).await?;
        if n == 0 {
            break;
        }
        match tokio::time::timeout(lim.idle_timeout, c.write_all(&buf[..n])).await {
            Ok(r) => r?,
            Err(_) => return Err(timed_out("writing the answer in the tunnel")),
        }
    }
    Ok(status)
}

/// One read of the upstream's answer within the upstream timeout; 0 at
/// its end (a TLS peer closing without close_notify ends it too).
async fn read_upstream<U: AsyncRead + Unpin>(
    up: &mut U,
    buf: &mut [u8],
    lim: &Limits,
) -> std::io::Result<usize> {
    match tokio::time::timeout(lim.upstream_timeout, up.read(buf)).await {
        Err(_) => Err(timed_out("waiting for the upstream's answer")),
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(0),
        Ok(r) => r,
    }
}

/// `head` with every copy of `secret` (as sent, and percent-encoded as a
/// query carries it) replaced.
fn redact(head: &[u8], secret: &str) -> Vec<u8> {
    let enc: String = secret
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    let mut out = head.to_vec();
    for s in [secret.as_bytes(), enc.as_bytes()] {
        if s.len() < 4 {
            continue;
        }
        let mut i = 0;
        let mut next = Vec::with_capacity(out.len());
        while i < out.len() {
            if out[i..].starts_with(s) {
                next.extend_from_slice(b"[secret]");
                i += s.len();
            } else {
                next.push(out[i]);
                i += 1;
            }
        }
        out = next;
    }
    out
}

/// Reads one CRLF-ended line (at most 4 KiB).
async fn read_line<R: AsyncRead + Unpin>(
    r: &mut R,
    line: &mut Vec<u8>,
    lim: &Limits,
) -> std::io::Result<()> {
    line.clear();
    let mut b = [0u8; 1];
    while !line.ends_with(b"\r\n") {
        if line.len() > 4096 {
            return Err(bad_data("a chunk line is too long"));
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

fn bad_data(why: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, why.to_owned())
}

/// Relays a chunked body exactly: each size (hex digits only: no
/// extensions), its data and the CRLF after it (checked), the last chunk;
/// trailers are read and dropped. Nothing after it is read.
async fn relay_chunked<R, W>(r: &mut R, w: &mut W, lim: &Limits) -> std::io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut total = 0u64;
    let mut line = Vec::new();
    loop {
        read_line(r, &mut line, lim).await?;
        let digits = &line[..line.len() - 2];
        if digits.is_empty() || digits.len() > 15 || !digits.iter().all(u8::is_ascii_hexdigit) {
            return Err(bad_data("a chunk size that is not plain hex"));
        }
        let size = u64::from_str_radix(std::str::from_utf8(digits).expect("hex is ASCII"), 16)
            .map_err(|_| bad_data("a chunk size that does not parse"))?;
        w.write_all(&line).await?;
        if size == 0 {
            // Trailers (at most 64 lines) are dropped; the empty line ends it.
            for _ in 0..=64 {
                read_line(r, &mut line, lim).await?;
                if line == b"\r\n" {
                    return w.write_all(b"\r\n").await;
                }
            }
            return Err(bad_data("too many trailer lines"));
        }
        total += size;
        if total > MAX_BODY {
            return Err(bad_data("a chunked body larger than the proxy's limit"));
        }
        let mut left = size;
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
        let mut crlf = [0u8; 2];
        match tokio::time::timeout(lim.idle_timeout, r.read_exact(&mut crlf)).await {
            Ok(Ok(_)) if &crlf == b"\r\n" => w.write_all(b"\r\n").await?,
            Ok(Ok(_)) => return Err(bad_data("a chunk not followed by CRLF")),
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err(timed_out("reading a chunked body")),
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
        assert_eq!(path_of("/a\u{202e}b?x"), "/a\\u{202e}b");
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
        let input = b"4\r\nwiki\r\n5\r\npedia\r\n0\r\nT: v\r\n\r\nNEXT REQUEST";
        let mut r = &input[..];
        let mut out = Vec::new();
        relay_chunked(&mut r, &mut out, &Limits::default())
            .await
            .unwrap();
        assert_eq!(
            out, b"4\r\nwiki\r\n5\r\npedia\r\n0\r\n\r\n",
            "trailers dropped"
        );
        assert_eq!(r, b"NEXT REQUEST");
        for bad in [
            &b"zz\r\n"[..],
            b"4;x=y\r\nwiki\r\n0\r\n\r\n",
            b"4\r\nwikiXX0\r\n\r\n",
            b"4\nwiki\r\n",
        ] {
            let mut r = bad;
            assert!(
                relay_chunked(&mut r, &mut Vec::new(), &Limits::default())
                    .await
                    .is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn the_secret_is_taken_out_of_the_answers_head() {
        let head = b"HTTP/1.1 301 Moved\r\nlocation: https://api.example/v2?key=s3cr%2Bt&x=1\r\nlink: <https://api.example/?key=s3cr+t>\r\n\r\n";
        let out = String::from_utf8(redact(head, "s3cr+t")).unwrap();
        assert!(!out.contains("s3cr"), "{out}");
        assert_eq!(out.matches("[secret]").count(), 2, "{out}");
    }
}
