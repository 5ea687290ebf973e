//! What the Telegram, Discord and Slack adapters share: reconnect backoff,
//! the stall watchdog's clock, error classification without secrets,
//! capped downloads, multipart bodies and text splitting. Thin on purpose:
//! each adapter is a small client over `reqwest` (and a WebSocket for the
//! gateways), see docs/decisions/0018-platform-adapters.md.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::DeliverError;

/// SPEC §9.1: a long-poll or socket silent this long is rebuilt.
pub const DEFAULT_STALL: Duration = crate::kind::DEFAULT_STALL;
/// The longest reconnect wait (SPEC §9.1: min(1 h, 2^n s)).
pub const MAX_BACKOFF: Duration = Duration::from_secs(3600);
/// A connection up this long counts as healthy: the next failure starts
/// the backoff from the beginning again.
pub const HEALTHY_AFTER: Duration = Duration::from_secs(300);
/// A request's deadline (SPEC §6.6 send timeout).
pub const SEND_TIMEOUT: Duration = Duration::from_secs(30);

/// Reconnect backoff: `min(1 h, 2^n s)` for the n-th failure in a row,
/// reset once a connection has stayed healthy for [`HEALTHY_AFTER`]
/// (upstream got an IP blocked by reconnect storms; never retry in a loop).
#[derive(Debug)]
pub struct Backoff {
    failures: u32,
    connected_at: Option<Instant>,
    healthy_after: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            failures: 0,
            connected_at: None,
            healthy_after: HEALTHY_AFTER,
        }
    }
}

impl Backoff {
    /// A connection (or a successful request) began now.
    pub fn connected(&mut self) {
        self.connected_at = Some(Instant::now());
    }

    /// The connection failed or dropped: how long to wait before the next
    /// attempt.
    pub fn failed(&mut self) -> Duration {
        if self
            .connected_at
            .take()
            .is_some_and(|t| t.elapsed() >= self.healthy_after)
        {
            self.failures = 0;
        }
        let d = Self::delay(self.failures);
        self.failures = self.failures.saturating_add(1);
        d
    }

    /// A success that is not a connection (a poll answered): the run of
    /// failures is over as soon as the link has been up long enough.
    pub fn progress(&mut self) {
        match self.connected_at {
            Some(t) if t.elapsed() >= self.healthy_after => self.failures = 0,
            None => self.connected_at = Some(Instant::now()),
            _ => {}
        }
    }

    /// `min(1 h, 2^n s)`.
    pub fn delay(n: u32) -> Duration {
        if n >= 12 {
            return MAX_BACKOFF;
        }
        Duration::from_secs(1u64 << n).min(MAX_BACKOFF)
    }
}

/// When the connection last made progress (any response, frame or
/// heartbeat ack). The adapter's loop asks [`Watchdog::stalled`] on a tick
/// and rebuilds the connection when it says so.
#[derive(Debug)]
pub struct Watchdog {
    last: Mutex<Instant>,
    pub limit: Duration,
}

impl Watchdog {
    pub fn new(limit: Duration) -> Watchdog {
        Watchdog {
            last: Mutex::new(Instant::now()),
            limit,
        }
    }
    pub fn progress(&self) {
        *self.last.lock().unwrap() = Instant::now();
    }
    pub fn stalled(&self) -> bool {
        self.last.lock().unwrap().elapsed() >= self.limit
    }
    /// How often to check: a tenth of the limit, at least 50 ms.
    pub fn tick(&self) -> Duration {
        (self.limit / 10).max(Duration::from_millis(50))
    }
}

/// A secret held by an adapter: never printed (`Debug` shows `<redacted>`).
#[derive(Clone)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// A reqwest error as text, with the URL (which may carry a token, as
/// Telegram's does) and the secret itself removed.
pub fn scrub(e: &reqwest::Error, secret: &str) -> String {
    let mut s = e.to_string();
    if let Some(u) = e.url() {
        s = s.replace(u.as_str(), "<url>");
    }
    if !secret.is_empty() {
        s = s.replace(secret, "<token>");
    }
    s
}

/// Builds a client with the send timeout (no cookies, rustls on ring).
pub fn client(timeout: Duration) -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .timeout(timeout)
        .build()
        .map_err(|e| format!("building the HTTP client: {e}"))
}

/// Sorts an HTTP failure: 429, 5xx and 408 may work later; other 4xx never.
pub fn classify(status: reqwest::StatusCode, what: String) -> DeliverError {
    if status.is_server_error()
        || status == reqwest::StatusCode::TOO_MANY_REQUESTS
        || status == reqwest::StatusCode::REQUEST_TIMEOUT
    {
        DeliverError::Retryable(what)
    } else {
        DeliverError::Permanent(what)
    }
}

/// Downloads at most [`crate::MAX_ATTACHMENT`] bytes: `Ok(None)` when the
/// body is larger (the host turns that into a note).
pub async fn download_capped(
    req: reqwest::RequestBuilder,
    secret: &str,
) -> Result<Option<Vec<u8>>, String> {
    let mut resp = req.send().await.map_err(|e| scrub(&e, secret))?;
    if !resp.status().is_success() {
        return Err(format!("download answered {}", resp.status()));
    }
    if resp
        .content_length()
        .is_some_and(|n| n > crate::MAX_ATTACHMENT)
    {
        return Ok(None);
    }
    let mut out = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| scrub(&e, secret))? {
        if out.len() as u64 + chunk.len() as u64 > crate::MAX_ATTACHMENT {
            return Ok(None);
        }
        out.extend_from_slice(&chunk);
    }
    Ok(Some(out))
}

/// A platform's body or frame as text. Invalid UTF-8 becomes U+FFFD and
/// is logged (naming `what`), so one bad byte neither stalls a channel nor
/// loses the rest of the message (decision 0036).
pub fn lossy<'a>(what: &str, bytes: &'a [u8]) -> std::borrow::Cow<'a, str> {
    crate::http::lossy(what, bytes)
}

/// JSON from a platform's bytes, invalid UTF-8 replaced (see [`lossy`]).
pub fn json_lossy<T: serde::de::DeserializeOwned>(
    what: &str,
    bytes: &[u8],
) -> Result<T, serde_json::Error> {
    serde_json::from_str(&lossy(what, bytes))
}

/// `#[serde(deserialize_with)]` for an optional part of a payload: present
/// but not of the expected shape reads as absent (platforms add and change
/// fields; one odd field must not drop the whole message).
pub fn lenient<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::de::DeserializeOwned,
{
    let v = <serde_json::Value as serde::Deserialize>::deserialize(d)?;
    Ok(serde_json::from_value(v).ok())
}

/// A `multipart/form-data` body: text fields, then one file.
pub struct Multipart {
    boundary: String,
    body: Vec<u8>,
}

impl Default for Multipart {
    fn default() -> Self {
        let mut r = [0u8; 12];
        let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut r);
        Multipart {
            boundary: format!("pinch-{}", crate::http::hex(&r)),
            body: Vec::new(),
        }
    }
}

impl Multipart {
    pub fn text(mut self, name: &str, value: &str) -> Self {
        self.body.extend_from_slice(
            format!(
                "--{}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n",
                self.boundary
            )
            .as_bytes(),
        );
        self
    }
    pub fn file(self, name: &str, filename: &str, data: &[u8]) -> Self {
        self.file_as(name, filename, "application/octet-stream", data)
    }
    /// [`Multipart::file`] declaring its content type (`mime`).
    pub fn file_as(mut self, name: &str, filename: &str, mime: &str, data: &[u8]) -> Self {
        // Quotes and line breaks cannot be escaped portably: drop them.
        let clean: String = filename
            .chars()
            .filter(|c| !matches!(c, '"' | '\r' | '\n' | '\\'))
            .collect();
        self.body.extend_from_slice(
            format!(
                "--{}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"{clean}\"\r\nContent-Type: {mime}\r\n\r\n",
                self.boundary
            )
            .as_bytes(),
        );
        self.body.extend_from_slice(data);
        self.body.extend_from_slice(b"\r\n");
        self
    }
    /// `(content type, body)`.
    pub fn finish(mut self) -> (String, Vec<u8>) {
        self.body
            .extend_from_slice(format!("--{}--\r\n", self.boundary).as_bytes());
        (
            format!("multipart/form-data; boundary={}", self.boundary),
            self.body,
        )
    }
}

/// Splits `text` into pieces of at most `max` units as `len` counts them
/// (chars, or UTF-16 units for Telegram), preferring a line break, then a
/// space, in the last quarter of a piece.
pub fn split_text(text: &str, max: usize, len: impl Fn(char) -> usize) -> Vec<String> {
    let max = max.max(1);
    let mut out = Vec::new();
    let mut rest = text;
    loop {
        let mut units = 0;
        let mut cut = rest.len();
        for (i, c) in rest.char_indices() {
            if units + len(c) > max {
                cut = i;
                break;
            }
            units += len(c);
        }
        if cut == rest.len() {
            out.push(rest.to_owned());
            return out;
        }
        // Back up to a line break or space in the last quarter, if any.
        let head = &rest[..cut];
        let floor = head
            .char_indices()
            .nth(head.chars().count() * 3 / 4)
            .map_or(0, |(i, _)| i);
        let at = head[floor..]
            .rfind('\n')
            .or_else(|| head[floor..].rfind(' '))
            .map(|i| floor + i + 1)
            .filter(|&i| i > 0)
            .unwrap_or(cut);
        out.push(rest[..at].to_owned());
        rest = &rest[at..];
    }
}

/// A gateway's WebSocket.
#[cfg(feature = "platform-ws")]
pub type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Opens a WebSocket (`wss://` over rustls on ring with the webpki roots,
/// `ws://` for the fakes), within the send timeout.
#[cfg(feature = "platform-ws")]
pub async fn ws_connect(url: &str) -> Result<Ws, String> {
    use tokio_tungstenite::Connector;
    let connector = if url.starts_with("wss://") {
        let roots = rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        let cfg = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
        Some(Connector::Rustls(std::sync::Arc::new(cfg)))
    } else {
        Some(Connector::Plain)
    };
    let fut = tokio_tungstenite::connect_async_tls_with_config(url, None, true, connector);
    match tokio::time::timeout(SEND_TIMEOUT, fut).await {
        Ok(Ok((ws, _))) => Ok(ws),
        // The URL may carry a ticket (Slack): never print it.
        Ok(Err(e)) => Err(format!("WebSocket connection failed: {e}")),
        Err(_) => Err("WebSocket connection timed out".into()),
    }
}

/// Percent-encodes everything but unreserved characters (a URL segment).
pub fn url_segment(s: &str) -> String {
    // `.` and `..` (and `%2e`, which URL parsers read the same) would be
    // dot segments: resolved away, they move the request to another path.
    // An id never is one; sent as a literal `%2E` it names nothing.
    if s == "." || s == ".." {
        return "%252E".repeat(s.len());
    }
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A small JSON file of per-conversation cursors (the last message id
/// stored), written atomically; the gateways catch up from it.
#[derive(Debug)]
pub struct Cursors {
    path: Option<std::path::PathBuf>,
    map: Mutex<std::collections::BTreeMap<String, String>>,
}

impl Cursors {
    pub fn load(path: Option<std::path::PathBuf>) -> Cursors {
        let map = path
            .as_ref()
            .and_then(|p| std::fs::read(p).ok())
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        Cursors {
            path,
            map: Mutex::new(map),
        }
    }
    pub fn all(&self) -> Vec<(String, String)> {
        self.map
            .lock()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
    /// Records `id` for `key` if it is newer (`newer(old, new)`).
    pub fn advance(&self, key: &str, id: &str, newer: impl Fn(&str, &str) -> bool) {
        let mut m = self.map.lock().unwrap();
        if m.get(key).is_some_and(|old| !newer(old, id)) {
            return;
        }
        m.insert(key.to_owned(), id.to_owned());
        if let Some(p) = &self.path {
            let tmp = p.with_extension("tmp");
            let body = serde_json::to_vec(&*m).unwrap_or_default();
            if let Err(e) = std::fs::write(&tmp, body).and_then(|_| std::fs::rename(&tmp, p)) {
                tracing::warn!(path = %p.display(), "cannot save channel cursors: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_segment_never_becomes_a_dot_segment() {
        assert_eq!(url_segment("a b/c"), "a%20b%2Fc");
        assert_eq!(url_segment("v1.2"), "v1.2");
        for dots in [".", ".."] {
            let seg = url_segment(dots);
            let u = reqwest::Url::parse(&format!("https://h/x/{seg}/y")).unwrap();
            assert_eq!(u.path(), format!("/x/{seg}/y"), "{dots} kept its place");
        }
    }

    #[test]
    fn backoff_doubles_to_an_hour_and_resets_after_a_healthy_spell() {
        assert_eq!(Backoff::delay(0), Duration::from_secs(1));
        assert_eq!(Backoff::delay(5), Duration::from_secs(32));
        assert_eq!(Backoff::delay(11), Duration::from_secs(2048));
        assert_eq!(Backoff::delay(12), MAX_BACKOFF);
        assert_eq!(Backoff::delay(40), MAX_BACKOFF);
        let mut b = Backoff {
            healthy_after: Duration::ZERO,
            ..Default::default()
        };
        assert_eq!(b.failed(), Duration::from_secs(1));
        assert_eq!(b.failed(), Duration::from_secs(2));
        b.connected();
        assert_eq!(
            b.failed(),
            Duration::from_secs(1),
            "a healthy connection resets the run"
        );
        let mut b = Backoff::default();
        b.connected();
        b.failed();
        b.connected();
        assert_eq!(
            b.failed(),
            Duration::from_secs(2),
            "a short-lived connection does not reset it"
        );
    }

    #[test]
    fn split_respects_the_limit_and_prefers_breaks() {
        let t = format!("{}\n{}", "a".repeat(90), "b".repeat(50));
        let parts = split_text(&t, 100, |_| 1);
        assert_eq!(parts, vec![format!("{}\n", "a".repeat(90)), "b".repeat(50)]);
        let parts = split_text(&"x".repeat(250), 100, |_| 1);
        assert_eq!(
            parts.iter().map(|p| p.len()).collect::<Vec<_>>(),
            vec![100, 100, 50]
        );
        // UTF-16 units: an emoji is two.
        let parts = split_text(&"😀".repeat(3), 4, char::len_utf16);
        assert_eq!(parts, vec!["😀😀".to_owned(), "😀".to_owned()]);
        assert_eq!(parts.concat(), "😀".repeat(3));
    }

    #[test]
    fn a_secret_never_shows_in_debug() {
        assert_eq!(format!("{:?}", Secret("123:abc".into())), "<redacted>");
    }
}
