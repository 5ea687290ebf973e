//! The one HTTP listener the HTTP-facing adapters share (web chat,
//! webhooks; later Telegram's webhook mode): axum on the host's tokio
//! runtime. Each adapter contributes an [`axum::Router`]; the host merges
//! them and serves the result on one address (default `127.0.0.1:7878`,
//! off unless configured).
//!
//! [`serve`] wraps every route in one guard layer (docs/decisions/0022):
//! security headers on every response (a strict `Content-Security-Policy`
//! with `frame-ancestors 'none'` unless the route set a stricter one,
//! `X-Content-Type-Options: nosniff`, `X-Frame-Options: DENY`,
//! `Referrer-Policy: no-referrer`), and a `Host`/`Origin` check (403) on
//! every request except the signed machine endpoints ([`SIGNED_PATHS`]).
//! [`WebAuth`] is the browser and API authentication web chat and the
//! dashboard share: one-time login links that set a session cookie, or
//! `Authorization: Bearer <web token>`.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use tokio::net::TcpListener;
use tokio::sync::watch;

pub use axum;
pub use axum::Router;

/// The policy every response gets unless its route set its own: nothing
/// inline, nothing from elsewhere, never framed.
pub const CSP: &str =
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; \
                       base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// Paths authenticated by a signature from a machine, not by a browser
/// credential: exempt from the `Host`/`Origin` check (a reverse proxy may
/// forward any public `Host`; a forged request fails the signature). The
/// registered channel kinds add their routes ([`crate::ChannelKind::routes`]:
/// `/telegram`).
pub const SIGNED_PATHS: &[&str] = &["/hooks/"];

/// Whether `path` is a signed machine path (ours or a channel kind's).
fn signed_path(path: &str) -> bool {
    SIGNED_PATHS
        .iter()
        .chain(crate::KINDS.iter().flat_map(|k| k.routes))
        .any(|p| path.starts_with(p))
}

/// A running listener; [`Server::stop`] releases the port.
pub struct Server {
    pub addr: SocketAddr,
    stop: watch::Sender<bool>,
    join: tokio::task::JoinHandle<()>,
}

/// Binds `addr` (a clear error naming it when taken or not allowed).
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await.map_err(|e| {
        std::io::Error::new(e.kind(), format!("cannot listen on {addr}: {e} (choose another address with [http] listen in pinch.toml)"))
    })
}

/// Serves `router` on `listener` until [`Server::stop`], behind the guard
/// layer (security headers; `Host`/`Origin` checked against the bound
/// address and `hosts`, the extra names `[http] hosts` allows).
pub fn serve(listener: TcpListener, router: Router, hosts: Vec<String>) -> std::io::Result<Server> {
    let addr = listener.local_addr()?;
    let guard = Arc::new(Guard::new(addr, hosts));
    let router = router.layer(axum::middleware::from_fn(
        move |req: Request<axum::body::Body>, next: axum::middleware::Next| {
            let guard = guard.clone();
            async move {
                let refused = guard.check(req.uri().path(), req.headers());
                let mut r = match refused {
                    Some(why) => {
                        tracing::warn!(path = %req.uri().path(), "HTTP request refused: {why}");
                        (
                            StatusCode::FORBIDDEN,
                            [("content-type", "text/plain; charset=utf-8")],
                            format!("{why}\n"),
                        )
                            .into_response()
                    }
                    None => next.run(req).await,
                };
                security_headers(r.headers_mut());
                r
            }
        },
    ));
    let (stop, mut stopped) = watch::channel(false);
    let join = tokio::spawn(async move {
        let shutdown = async move {
            let _ = stopped.wait_for(|s| *s).await;
        };
        if let Err(e) = axum::serve(listener, router)
            .with_graceful_shutdown(shutdown)
            .await
        {
            tracing::error!(%addr, "the HTTP listener failed: {e}");
        }
    });
    tracing::info!(%addr, "HTTP listener ready");
    Ok(Server { addr, stop, join })
}

impl Server {
    /// Stops accepting; open connections get `grace` to finish, then the
    /// listener task is dropped (so the port is free on return).
    pub async fn stop(self, grace: Duration) {
        let _ = self.stop.send(true);
        let mut join = self.join;
        if tokio::time::timeout(grace, &mut join).await.is_err() {
            join.abort();
            let _ = join.await;
        }
    }
}

/// Adds the headers every response carries (a route's own CSP is kept).
pub fn security_headers(h: &mut HeaderMap) {
    if !h.contains_key("content-security-policy") {
        h.insert("content-security-policy", HeaderValue::from_static(CSP));
    }
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    h.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
}

/// The `Host`/`Origin` rule of one listener.
#[derive(Debug)]
pub struct Guard {
    listen: SocketAddr,
    /// Extra names (`[http] hosts`), lower case: `name` (any port) or `name:port`.
    hosts: Vec<String>,
}

/// `host[:port]` of an authority; `None` if malformed.
fn split_authority(a: &str) -> Option<(String, Option<u16>)> {
    let a = a.trim().to_ascii_lowercase();
    if a.is_empty() || a.contains(['/', '@', ' ', '\\']) {
        return None;
    }
    let (host, port) = if let Some(rest) = a.strip_prefix('[') {
        let (h, after) = rest.split_once(']')?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':')?.parse().ok()?),
        };
        (h.to_owned(), port)
    } else {
        match a.rsplit_once(':') {
            Some((h, p)) if !h.contains(':') => (h.to_owned(), Some(p.parse().ok()?)),
            Some(_) => return None,
            None => (a.clone(), None),
        }
    };
    let host = host.trim_end_matches('.').to_owned();
    (!host.is_empty()).then_some((host, port))
}

impl Guard {
    pub fn new(listen: SocketAddr, hosts: Vec<String>) -> Guard {
        Guard {
            listen,
            hosts: hosts
                .into_iter()
                .map(|h| h.trim().trim_end_matches('.').to_ascii_lowercase())
                .collect(),
        }
    }

    fn named(&self, host: &str, port: Option<u16>) -> bool {
        self.hosts
            .iter()
            .any(|n| *n == host || port.is_some_and(|p| *n == format!("{host}:{p}")))
    }

    /// Whether `Host: <value>` names this listener. The name decides, not
    /// the port: DNS rebinding changes the name, while an SSH forward
    /// (`ssh -L 9000:localhost:7878`) legitimately changes the port.
    pub fn host_ok(&self, value: &str) -> bool {
        let Some((host, port)) = split_authority(value) else {
            return false;
        };
        if self.named(&host, port) {
            return true;
        }
        let ip = self.listen.ip();
        match host.parse::<IpAddr>() {
            Ok(h) => ip.is_unspecified() || h == ip || (ip.is_loopback() && h.is_loopback()),
            Err(_) => host == "localhost" && (ip.is_loopback() || ip.is_unspecified()),
        }
    }

    /// Whether `Origin: <value>` is this listener as reached by `host`
    /// (the request's own, already checked `Host`).
    pub fn origin_ok(&self, origin: &str, host: &str) -> bool {
        let Some((scheme, authority)) = origin.trim().split_once("://") else {
            return false;
        };
        let default = match scheme.to_ascii_lowercase().as_str() {
            "http" => 80,
            "https" => 443,
            _ => return false,
        };
        let (Some((oh, op)), Some((hh, hp))) = (split_authority(authority), split_authority(host))
        else {
            return false;
        };
        (oh == hh && op.unwrap_or(default) == hp.unwrap_or(default)) || self.named(&oh, op)
    }

    /// `Some(reason)` if the request must be refused (403).
    pub fn check(&self, path: &str, h: &HeaderMap) -> Option<String> {
        if signed_path(path) {
            return None;
        }
        let host = h.get("host").and_then(|v| v.to_str().ok()).unwrap_or("");
        if !self.host_ok(host) {
            return Some(format!(
                "Host {host:?} is not this listener's address ({}): if you reach pinch through a proxy or a DNS name, \
                 add that name to [http] hosts in pinch.toml",
                self.listen
            ));
        }
        if let Some(origin) = h.get("origin") {
            let o = origin.to_str().unwrap_or("?");
            if !self.origin_ok(o, host) {
                return Some(format!(
                    "cross-origin request from Origin {o:?} refused: only pages served by this listener ({host}) may call it \
                     (a proxy's public name goes in [http] hosts)"
                ));
            }
        }
        None
    }
}

/// The cookie a login link sets.
pub const SESSION_COOKIE: &str = "pinch_session";
/// How long a login link works (once).
pub const LOGIN_TTL: Duration = Duration::from_secs(30 * 60);
/// How long a browser stays signed in.
pub const SESSION_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

fn now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn mac(token: &str, msg: &str) -> String {
    sign(token.as_bytes(), msg.as_bytes())
}

/// A one-time login code for a link (`?login=<code>`): `<expiry>.<nonce>.<mac>`,
/// HMAC-SHA256 keyed by the web token, so anything that can read the token
/// file (`pinch chat --web`, `pinch admin web-link`) can make one without
/// asking the host, and nothing else can.
pub fn login_code(token: &str) -> String {
    let mut nonce = [0u8; 16];
    use ring::rand::SecureRandom;
    let _ = ring::rand::SystemRandom::new().fill(&mut nonce);
    let expiry = now_s() + LOGIN_TTL.as_secs();
    let nonce = hex(&nonce);
    let m = mac(token, &format!("pinch-login-v1:{expiry}:{nonce}"));
    format!("{expiry}.{nonce}.{m}")
}

/// Why a login code was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum LoginRefused {
    Malformed,
    Expired,
    Used,
}

/// Who a request is, as far as web chat and the dashboard care.
pub struct WebAuth {
    token: String,
    /// Nonces of redeemed login codes, with their expiry (pruned after it).
    used: Mutex<HashMap<String, u64>>,
}

/// Redeemed codes remembered at most (a flood of valid codes needs the token).
const MAX_USED: usize = 10_000;

impl WebAuth {
    pub fn new(token: String) -> Arc<WebAuth> {
        Arc::new(WebAuth {
            token,
            used: Mutex::new(HashMap::new()),
        })
    }

    /// Redeems a login code once.
    pub fn redeem(&self, code: &str) -> Result<(), LoginRefused> {
        self.redeem_at(code, now_s())
    }

    fn redeem_at(&self, code: &str, now: u64) -> Result<(), LoginRefused> {
        let mut parts = code.split('.');
        let (Some(exp), Some(nonce), Some(m), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(LoginRefused::Malformed);
        };
        let Ok(expiry) = exp.parse::<u64>() else {
            return Err(LoginRefused::Malformed);
        };
        if nonce.len() != 32 || !nonce.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(LoginRefused::Malformed);
        }
        if !secret_eq(
            m.as_bytes(),
            mac(&self.token, &format!("pinch-login-v1:{expiry}:{nonce}")).as_bytes(),
        ) {
            return Err(LoginRefused::Malformed);
        }
        if now > expiry || expiry > now + LOGIN_TTL.as_secs() + 60 {
            return Err(LoginRefused::Expired);
        }
        let mut used = self.used.lock().unwrap_or_else(|e| e.into_inner());
        used.retain(|_, e| *e >= now);
        if used.contains_key(nonce) {
            return Err(LoginRefused::Used);
        }
        if used.len() >= MAX_USED {
            return Err(LoginRefused::Used);
        }
        used.insert(nonce.to_owned(), expiry);
        Ok(())
    }

    /// A fresh session cookie's value: `<expiry>.<mac>`.
    pub fn session_value(&self) -> String {
        let expiry = now_s() + SESSION_TTL.as_secs();
        format!(
            "{expiry}.{}",
            mac(&self.token, &format!("pinch-session-v1:{expiry}"))
        )
    }

    fn session_ok_at(&self, v: &str, now: u64) -> bool {
        let Some((exp, m)) = v.split_once('.') else {
            return false;
        };
        let Ok(expiry) = exp.parse::<u64>() else {
            return false;
        };
        secret_eq(
            m.as_bytes(),
            mac(&self.token, &format!("pinch-session-v1:{expiry}")).as_bytes(),
        ) && now <= expiry
    }

    /// A valid session cookie or `Authorization: Bearer <web token>`
    /// (constant-time). The token is never accepted in the URL.
    pub fn authorized(&self, h: &HeaderMap) -> bool {
        let bearer = h
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if let Some(t) = bearer {
            return secret_eq(t.trim().as_bytes(), self.token.as_bytes());
        }
        let now = now_s();
        cookies(h, SESSION_COOKIE).any(|v| self.session_ok_at(v, now))
    }

    /// The `Set-Cookie` value signing a browser in (`Secure` when the
    /// request came over TLS through a proxy that says so).
    pub fn set_cookie(&self, h: &HeaderMap) -> String {
        let tls = h
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|p| p.eq_ignore_ascii_case("https"));
        format!(
            "{SESSION_COOKIE}={}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}{}",
            self.session_value(),
            SESSION_TTL.as_secs(),
            if tls { "; Secure" } else { "" }
        )
    }

    /// For a page route (`/`, `/dashboard`) given `?login=<code>`: redeems
    /// it, sets the cookie and sends the browser on to `clean` (the same
    /// page without the code). A used or expired code with a valid cookie
    /// already in place just goes on; otherwise a 401 that says why.
    ///
    /// The onward step is a `<meta http-equiv="refresh">` page, not a 303:
    /// a `SameSite=Strict` cookie is not sent on a redirect in a chain a
    /// link on another site started, but is on a navigation the page itself
    /// starts.
    pub fn login(&self, code: &str, h: &HeaderMap, clean: &str) -> Response {
        let cookie = match self.redeem(code) {
            Ok(()) => Some(self.set_cookie(h)),
            Err(_) if self.authorized(h) => None,
            Err(why) => {
                let what = match why {
                    LoginRefused::Malformed => "this login link is not valid",
                    LoginRefused::Expired => "this login link has expired",
                    LoginRefused::Used => "this login link was already used (each works once)",
                };
                return unauthorized(&format!("{what}: {LOGIN_HELP}"));
            }
        };
        let esc = clean
            .replace('&', "&amp;")
            .replace('"', "&quot;")
            .replace('<', "&lt;");
        let body = format!(
            "<!doctype html><meta charset=\"utf-8\"><meta http-equiv=\"refresh\" content=\"0; url={esc}\">\
             <title>pinch</title><p>Signed in. <a href=\"{esc}\">Continue</a>.</p>\n"
        );
        let mut r = (
            StatusCode::OK,
            [
                ("content-type", "text/html; charset=utf-8"),
                ("cache-control", "no-store"),
            ],
            body,
        )
            .into_response();
        if let Some(c) = cookie.and_then(|c| HeaderValue::from_str(&c).ok()) {
            r.headers_mut().insert("set-cookie", c);
        }
        r
    }
}

/// How to get in, for every 401 of web chat and the dashboard.
pub const LOGIN_HELP: &str = "open the one-time link `pinch chat --web` or `pinch admin web-link` prints (it signs this browser in), \
                              or send `Authorization: Bearer <token>` with the token `pinch admin web-token` prints";

/// A 401 with a plain-text reason.
pub fn unauthorized(why: &str) -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [
            ("content-type", "text/plain; charset=utf-8"),
            ("cache-control", "no-store"),
        ],
        format!("{why}\n"),
    )
        .into_response()
}

/// Values of the cookie `name` in the request's `Cookie` headers.
pub fn cookies<'a>(h: &'a HeaderMap, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
    h.get_all("cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(move |kv| {
            kv.trim()
                .split_once('=')
                .filter(|(k, _)| *k == name)
                .map(|(_, v)| v)
        })
}

/// Constant-time equality of two secrets (tokens, signatures).
pub fn secret_eq(a: &[u8], b: &[u8]) -> bool {
    // ring compares in time independent of the contents (lengths may leak,
    // which for fixed-length tokens says nothing).
    #[allow(deprecated)]
    ring::constant_time::verify_slices_are_equal(a, b).is_ok()
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// `HMAC-SHA256(secret, body)` as lower-case hex.
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
    hex(ring::hmac::sign(&key, body).as_ref())
}

/// Runs `f` on a future for its side effect with a deadline (used to bound
/// waits on the host inside handlers).
pub async fn within<T>(d: Duration, f: impl Future<Output = T>) -> Option<T> {
    tokio::time::timeout(d, f).await.ok()
}

/// Bytes a client sent as text: invalid UTF-8 becomes U+FFFD and is
/// logged (naming `what`), so one bad byte never drops the message.
pub fn lossy<'a>(what: &str, bytes: &'a [u8]) -> std::borrow::Cow<'a, str> {
    let s = String::from_utf8_lossy(bytes);
    if matches!(s, std::borrow::Cow::Owned(_)) {
        tracing::warn!("{what}: invalid UTF-8 is replaced with U+FFFD");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_matches_the_rfc_4231_vector() {
        // RFC 4231 test case 2.
        assert_eq!(
            sign(b"Jefe", b"what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert!(secret_eq(b"abc", b"abc"));
        assert!(!secret_eq(b"abc", b"abd"));
        assert!(!secret_eq(b"abc", b"abcd"));
    }

    fn hm(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn host_must_name_the_listener() {
        let g = Guard::new(
            "127.0.0.1:7878".parse().unwrap(),
            vec!["Pinch.Example.com".into()],
        );
        for ok in [
            "127.0.0.1:7878",
            "localhost:7878",
            "LOCALHOST:7878",
            "[::1]:7878",
            "127.0.0.2:7878",
            "pinch.example.com",
            "pinch.example.com:443",
            "localhost:9000",
            "127.0.0.1",
        ] {
            assert!(g.host_ok(ok), "{ok}");
        }
        for bad in [
            "",
            "evil.example:7878",
            "10.0.0.1:7878",
            "a@127.0.0.1:7878",
            "[::1",
            "x:y:7878",
            "localhost.evil.example:7878",
        ] {
            assert!(!g.host_ok(bad), "{bad}");
        }
        let any = Guard::new("0.0.0.0:80".parse().unwrap(), vec![]);
        assert!(
            any.host_ok("192.168.1.5")
                && any.host_ok("10.0.0.1:80")
                && !any.host_ok("rebind.evil.example")
        );
    }

    #[test]
    fn origin_must_be_this_listener() {
        let g = Guard::new(
            "127.0.0.1:7878".parse().unwrap(),
            vec!["pinch.example.com".into()],
        );
        assert!(g.origin_ok("http://127.0.0.1:7878", "127.0.0.1:7878"));
        assert!(
            g.origin_ok("https://pinch.example.com", "127.0.0.1:7878"),
            "a proxy's public name"
        );
        assert!(!g.origin_ok("http://evil.example", "127.0.0.1:7878"));
        assert!(
            !g.origin_ok("http://localhost:7878", "127.0.0.1:7878"),
            "another origin, even if it is the same machine"
        );
        assert!(!g.origin_ok("null", "127.0.0.1:7878"));
        assert!(!g.origin_ok("http://127.0.0.1:7879", "127.0.0.1:7878"));
        // The guard: signed machine paths are exempt; everything else is checked.
        let evil = hm(&[
            ("host", "127.0.0.1:7878"),
            ("origin", "http://evil.example"),
        ]);
        assert!(g.check("/ws", &evil).unwrap().contains("cross-origin"));
        assert!(g.check("/hooks/ci", &evil).is_none());
        #[cfg(feature = "channel-telegram")]
        assert!(
            g.check("/telegram", &evil).is_none(),
            "a registered kind's route"
        );
        assert!(g
            .check("/api/admin", &hm(&[("host", "evil.example:7878")]))
            .unwrap()
            .contains("[http] hosts"));
        assert!(g.check("/", &hm(&[])).is_some(), "no Host at all");
        assert!(g.check("/", &hm(&[("host", "127.0.0.1:7878")])).is_none());
    }

    #[test]
    fn login_codes_work_once_and_expire() {
        let token = "t".repeat(64);
        let a = WebAuth::new(token.clone());
        let code = login_code(&token);
        assert_eq!(a.redeem(&code), Ok(()));
        assert_eq!(a.redeem(&code), Err(LoginRefused::Used));
        assert_eq!(
            WebAuth::new("u".repeat(64)).redeem(&login_code(&token)),
            Err(LoginRefused::Malformed),
            "another token's code"
        );
        let fresh = login_code(&token);
        let expiry: u64 = fresh.split('.').next().unwrap().parse().unwrap();
        assert_eq!(a.redeem_at(&fresh, expiry + 1), Err(LoginRefused::Expired));
        // Tampering with the expiry breaks the MAC.
        let mut parts: Vec<&str> = fresh.split('.').collect();
        let later = (expiry + 3600).to_string();
        parts[0] = &later;
        assert_eq!(a.redeem(&parts.join(".")), Err(LoginRefused::Malformed));
        assert_eq!(a.redeem("x"), Err(LoginRefused::Malformed));
    }

    #[test]
    fn sessions_by_cookie_or_bearer_never_by_query() {
        let token = "t".repeat(64);
        let a = WebAuth::new(token.clone());
        let v = a.session_value();
        assert!(a.authorized(&hm(&[(
            "cookie",
            &format!("theme=dark; {SESSION_COOKIE}={v}")
        )])));
        assert!(a.authorized(&hm(&[("authorization", &format!("Bearer {token}"))])));
        assert!(!a.authorized(&hm(&[("authorization", "Bearer wrong")])));
        assert!(
            !a.authorized(&hm(&[("cookie", &format!("{SESSION_COOKIE}={token}"))])),
            "the token is not a session"
        );
        assert!(!a.authorized(&hm(&[])));
        let exp: u64 = v.split('.').next().unwrap().parse().unwrap();
        assert!(!a.session_ok_at(&v, exp + 1), "an expired session");
        let c = a.set_cookie(&hm(&[("x-forwarded-proto", "https")]));
        assert!(
            c.contains("HttpOnly")
                && c.contains("SameSite=Strict")
                && c.contains("Path=/")
                && c.ends_with("; Secure"),
            "{c}"
        );
        assert!(!a.set_cookie(&hm(&[])).contains("Secure"));
    }
}
