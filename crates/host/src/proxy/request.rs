//! Parsing a request head into a decision: forward to a route (with the
//! client's credentials and hop-by-hop headers stripped), open an allowed
//! `CONNECT`, or refuse with a reason.

use super::*;
use pinch_policy::hosts::split_host_port;

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

/// A refused request: the status and a reason naming the cause and the fix.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Refusal {
    pub(super) code: u16,
    pub(super) reason: String,
}

fn refuse(code: u16, reason: impl Into<String>) -> Refusal {
    Refusal {
        code,
        reason: reason.into(),
    }
}

#[derive(Debug, PartialEq, Eq)]
pub(super) enum Decision {
    /// An egress tunnel to an allowlisted `host:port`.
    Connect {
        host: String,
        port: u16,
    },
    Forward(Forward),
    /// One of the host's own routes ([`super::web::HostRoute`]), with the
    /// body's length.
    Host {
        route: super::web::HostRoute,
        len: u64,
    },
}

/// A model API request to forward.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Forward {
    /// Index into the upstreams.
    pub(super) upstream: usize,
    pub(super) method: String,
    /// What follows the route: an allowed path and the query as sent.
    pub(super) rest: String,
    /// The client's headers still to send (names lowercase).
    pub(super) headers: Vec<(String, Vec<u8>)>,
    pub(super) len: u64,
    pub(super) expect_continue: bool,
}

const MAX_HEADERS: usize = 100;

/// Decides what to do with one request head (everything up to and with
/// its empty line). Parsing is httparse's; on top, anything two HTTP
/// implementations could read differently is refused: a line end other
/// than CRLF, a folded header line, more than one `Content-Length` or
/// `Host`, `Content-Length` with `Transfer-Encoding`, a target that is
/// not origin-form. Only the allowed paths of a configured route pass.
pub(super) fn decide(head: &[u8], upstreams: &[Upstream]) -> Result<Decision, Refusal> {
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
    // CONNECT carries no body, so HTTP/1.0's is as unambiguous as 1.1's;
    // Python's http.client (under `requests` and `pip`) sends 1.0.
    if req.version != Some(1) && !(req.version == Some(0) && method == "CONNECT") {
        return Err(refuse(
            400,
            "only HTTP/1.1 is spoken here (and HTTP/1.0 for CONNECT)",
        ));
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
    let host_route = super::web::HostRoute::of(path);
    if let (Some(r), false) = (host_route, method == "POST") {
        return Err(refuse(405, format!("{path} takes POST with {}", r.body())));
    }
    let found = if host_route.is_some() {
        None
    } else {
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
        Some((idx, rest))
    };
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
    let Some((idx, rest)) = found else {
        let Some(route) = host_route else {
            return Err(refuse(403, "no route"));
        };
        if len > route.max_request() {
            return Err(refuse(
                413,
                format!(
                    "a request to {path} is larger than {} bytes",
                    route.max_request()
                ),
            ));
        }
        return Ok(Decision::Host { route, len });
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

#[cfg(test)]
mod tests {
    use super::*;

    fn code(head: &str) -> u16 {
        match decide(head.as_bytes(), &test_routes()) {
            Ok(_) => 200,
            Err(r) => r.code,
        }
    }

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
        let r = decide(b"POST /openai/files HTTP/1.1\r\n\r\n", &test_routes()).unwrap_err();
        assert!(
            r.reason.contains("/files")
                && r.reason.contains("allow_paths")
                && r.reason.contains("/chat/completions"),
            "{}",
            r.reason
        );
    }

    /// The host's own fetch route: POST only, a small body, never a
    /// forward (no upstream is named `_pinch`).
    #[test]
    fn the_fetch_route_is_the_hosts() {
        let head = |m: &str, len: u64| {
            format!("{m} /_pinch/web/fetch HTTP/1.1\r\nHost: p\r\nContent-Length: {len}\r\n\r\n")
        };
        assert_eq!(
            decide(head("POST", 20).as_bytes(), &test_routes()),
            Ok(Decision::Host {
                route: super::super::web::HostRoute::Fetch,
                len: 20,
            })
        );
        assert_eq!(code(&head("GET", 0)), 405);
        assert_eq!(code(&head("POST", 64 * 1024 + 1)), 413);
        assert_eq!(
            code("POST /_pinch/web/other HTTP/1.1\r\nHost: p\r\n\r\n"),
            403
        );
        // The voice route takes a small JSON body naming a file.
        let voice = |len: u64| {
            format!("POST /_pinch/voice/transcribe HTTP/1.1\r\nHost: p\r\nContent-Length: {len}\r\n\r\n")
        };
        assert_eq!(
            decide(voice(40).as_bytes(), &test_routes()),
            Ok(Decision::Host {
                route: super::super::web::HostRoute::Transcribe,
                len: 40,
            })
        );
        assert_eq!(code(&voice(64 * 1024 + 1)), 413);
        assert_eq!(
            code(
                "POST /_pinch/web/fetch HTTP/1.1\r\nHost: p\r\nTransfer-Encoding: chunked\r\n\r\n"
            ),
            411
        );
    }

    #[test]
    fn connect_targets() {
        let d = decide(
            b"CONNECT api.github.com:443 HTTP/1.1\r\nHost: api.github.com:443\r\n\r\n",
            &test_routes(),
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
        // Python's http.client tunnels with HTTP/1.0.
        assert_eq!(
            decide(
                b"CONNECT api.github.com:443 HTTP/1.0\r\n\r\n",
                &test_routes()
            ),
            Ok(Decision::Connect {
                host: "api.github.com".into(),
                port: 443
            })
        );
        assert_eq!(code("CONNECT a.com:443\nX: y HTTP/1.1\r\n\r\n"), 400);
    }
}
