//! A minimal HTTP/1.1 client over the credential proxy's Unix socket (the
//! sandbox has no other way out, and no TLS is needed on this hop).

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use crate::{ErrorKind, ProviderError};

pub fn err(kind: ErrorKind, retryable: bool, message: impl Into<String>) -> ProviderError {
    ProviderError {
        message: message.into(),
        retryable,
        kind,
        retry_after: None,
    }
}

/// A response: its status, the `retry-after` it asked for (seconds; the
/// HTTP-date form is ignored) and a reader of the (de-chunked) body.
pub struct Response {
    pub status: u16,
    pub retry_after: Option<Duration>,
    pub body: Box<dyn BufRead>,
}

/// POSTs the JSON `body` to `path` on the proxy.
pub fn post(
    socket: &Path,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
    timeout: Duration,
) -> Result<Response, ProviderError> {
    let mut s = UnixStream::connect(socket).map_err(|e| {
        err(
            ErrorKind::Other,
            true,
            format!(
                "cannot reach the credential proxy at {}: {e}",
                socket.display()
            ),
        )
    })?;
    s.set_read_timeout(Some(timeout)).ok();
    s.set_write_timeout(Some(timeout)).ok();
    let mut req = format!("POST {path} HTTP/1.1\r\nhost: proxy\r\ncontent-type: application/json\r\naccept: text/event-stream\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str(&format!(
        "content-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    ));
    s.write_all(req.as_bytes())
        .and_then(|_| s.write_all(body.as_bytes()))
        .map_err(|e| err(ErrorKind::Other, true, format!("writing to the proxy: {e}")))?;
    let mut r = BufReader::new(s);
    let head = read_head(&mut r)?;
    let reader: Box<dyn BufRead> = if head.chunked {
        Box::new(BufReader::new(Chunked {
            inner: r,
            left: 0,
            done: false,
        }))
    } else {
        Box::new(r)
    };
    Ok(Response {
        status: head.status,
        retry_after: head.retry_after,
        body: reader,
    })
}

/// The error for a non-200 answer, classified by what retrying can do,
/// with the wait the API asked for.
pub fn status_error(mut r: Response) -> ProviderError {
    let mut text = String::new();
    let _ = r.body.read_to_string(&mut text);
    let text: String = text.chars().take(300).collect();
    let status = r.status;
    let e = match status {
        429 => err(ErrorKind::RateLimited, true, text),
        401 | 403 => err(ErrorKind::Auth, false, format!("HTTP {status}: {text}")),
        400 | 404 | 422 => err(
            ErrorKind::BadRequest,
            false,
            format!("HTTP {status}: {text}"),
        ),
        529 | 503 => err(
            ErrorKind::Overloaded,
            true,
            format!("HTTP {status}: {text}"),
        ),
        _ => err(
            ErrorKind::Server,
            status >= 500,
            format!("HTTP {status}: {text}"),
        ),
    };
    ProviderError {
        retry_after: r.retry_after,
        ..e
    }
}

/// What the head says about the body and the next try.
struct Head {
    status: u16,
    chunked: bool,
    retry_after: Option<Duration>,
}

/// Reads the status line and headers.
fn read_head(r: &mut impl BufRead) -> Result<Head, ProviderError> {
    let mut line = String::new();
    r.read_line(&mut line).map_err(|e| {
        err(
            ErrorKind::Timeout,
            true,
            format!("reading the response: {e}"),
        )
    })?;
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| {
            err(
                ErrorKind::Server,
                true,
                format!("not an HTTP response: {line:?}"),
            )
        })?;
    let (mut chunked, mut retry_after) = (false, None);
    loop {
        line.clear();
        if r.read_line(&mut line)
            .map_err(|e| err(ErrorKind::Timeout, true, e.to_string()))?
            == 0
            || line == "\r\n"
            || line == "\n"
        {
            break;
        }
        let l = line.to_ascii_lowercase();
        if l.starts_with("transfer-encoding:") && l.contains("chunked") {
            chunked = true;
        }
        if let Some(v) = l.strip_prefix("retry-after:") {
            retry_after = v.trim().parse().ok().map(Duration::from_secs);
        }
    }
    Ok(Head {
        status,
        chunked,
        retry_after,
    })
}

/// Decodes `Transfer-Encoding: chunked`.
struct Chunked<R> {
    inner: R,
    left: usize,
    done: bool,
}

impl<R: BufRead> Read for Chunked<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.done {
            return Ok(0);
        }
        if self.left == 0 {
            let mut size = String::new();
            if self.inner.read_line(&mut size)? == 0 {
                self.done = true;
                return Ok(0);
            }
            let size = size.trim();
            if size.is_empty() {
                // the CRLF after a chunk
                return self.read(buf);
            }
            let n = usize::from_str_radix(size.split(';').next().unwrap_or("0"), 16)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
            if n == 0 {
                self.done = true;
                return Ok(0);
            }
            self.left = n;
        }
        let want = buf.len().min(self.left);
        let got = self.inner.read(&mut buf[..want])?;
        if got == 0 {
            self.done = true;
        }
        self.left -= got;
        Ok(got)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_seconds_are_kept_with_the_error() {
        let head = |extra: &str| {
            let raw = format!("HTTP/1.1 429 Too Many\r\n{extra}content-length: 2\r\n\r\n{{}}");
            let mut r = BufReader::new(std::io::Cursor::new(raw.into_bytes()));
            let h = read_head(&mut r).unwrap();
            status_error(Response {
                status: h.status,
                retry_after: h.retry_after,
                body: Box::new(r),
            })
        };
        let e = head("Retry-After: 7\r\n");
        assert_eq!((e.kind, e.retryable), (ErrorKind::RateLimited, true));
        assert_eq!(e.retry_after, Some(Duration::from_secs(7)));
        assert_eq!(head("").retry_after, None);
        // The HTTP-date form is not honoured (the API sends seconds).
        assert_eq!(
            head("retry-after: Fri, 31 Dec 1999 23:59:59 GMT\r\n").retry_after,
            None
        );
    }

    #[test]
    fn chunked_decoding() {
        let raw = b"5\r\nhello\r\n7;x=y\r\n, world\r\n0\r\n\r\n";
        let mut c = Chunked {
            inner: BufReader::new(&raw[..]),
            left: 0,
            done: false,
        };
        let mut s = String::new();
        c.read_to_string(&mut s).unwrap();
        assert_eq!(s, "hello, world");
    }
}
