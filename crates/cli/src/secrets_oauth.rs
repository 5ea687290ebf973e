//! `pinch secrets oauth`: the device-code sign-in (RFC 8628) from the
//! owner's terminal. pinch asks the provider for a code, the owner opens
//! the provider's page in any browser and enters it, and pinch polls the
//! token endpoint until the sign-in is done, denied or expired. The result
//! is a refresh token (stored as an OAuth secret that mints access tokens)
//! or, for providers whose tokens do not expire (a classic GitHub OAuth
//! app), the access token itself. Tokens are never printed.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// How long one request to the provider may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// An answer is read up to this.
const MAX_ANSWER: usize = 64 * 1024;
/// The polling interval when the provider does not give one (RFC 8628 §3.2).
const DEFAULT_INTERVAL: u64 = 5;
/// What `slow_down` adds to the interval (RFC 8628 §3.5).
const SLOW_DOWN: Duration = Duration::from_secs(5);
const DEVICE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";

/// Whose device flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Provider {
    Github,
    Google,
    /// Any RFC 8628 provider: both endpoints given.
    Generic,
}

/// A provider's device flow: its endpoints and the OAuth client (no
/// `Debug`: it holds the client secret).
#[derive(Clone)]
pub struct DeviceFlow {
    pub device_url: String,
    pub token_url: String,
    pub client_id: String,
    pub client_secret: Option<String>,
    pub scope: Option<String>,
}

impl DeviceFlow {
    /// The flow for `p`; `device_url`/`token_url` override GitHub's and
    /// Google's endpoints (GitHub Enterprise) and are required for
    /// [`Provider::Generic`].
    pub fn for_provider(
        p: Provider,
        client_id: String,
        client_secret: Option<String>,
        scope: Option<String>,
        device_url: Option<String>,
        token_url: Option<String>,
    ) -> Result<DeviceFlow> {
        let client_id = client_id.trim().to_owned();
        if client_id.is_empty() {
            bail!("--client-id is empty: give the OAuth client id of the app registered with the provider");
        }
        let client_secret = client_secret.filter(|s| !s.is_empty());
        let scope = scope.map(|s| s.trim().to_owned()).filter(|s| !s.is_empty());
        let (device_url, token_url) = match p {
            Provider::Github => (
                device_url.unwrap_or_else(|| "https://github.com/login/device/code".into()),
                token_url.unwrap_or_else(|| "https://github.com/login/oauth/access_token".into()),
            ),
            Provider::Google => {
                if client_secret.is_none() {
                    bail!("Google's device sign-in needs the OAuth client's secret too: add --client-secret (Google Cloud console → APIs & Services → Credentials, a client of type \"TVs and Limited Input devices\")");
                }
                if scope.is_none() {
                    bail!("Google grants nothing without a scope: add --scope, e.g. --scope https://www.googleapis.com/auth/gmail.readonly (several separated by spaces)");
                }
                (
                    device_url
                        .unwrap_or_else(|| "https://oauth2.googleapis.com/device/code".into()),
                    token_url.unwrap_or_else(|| "https://oauth2.googleapis.com/token".into()),
                )
            }
            Provider::Generic => match (device_url, token_url) {
                (Some(d), Some(t)) => (d, t),
                (d, t) => {
                    let missing = match (d, t) {
                        (None, None) => "--device-url and --token-url",
                        (None, _) => "--device-url",
                        _ => "--token-url",
                    };
                    bail!("a generic provider needs both endpoints: add {missing} (the provider's device authorization and token URLs)");
                }
            },
        };
        check_url(&device_url, "--device-url")?;
        check_url(&token_url, "--token-url")?;
        Ok(DeviceFlow {
            device_url,
            token_url,
            client_id,
            client_secret,
            scope,
        })
    }
}

/// HTTPS, or HTTP to a loopback address (nothing on the network sees it).
fn check_url(url: &str, flag: &str) -> Result<()> {
    let u = reqwest::Url::parse(url).with_context(|| format!("{flag} {url:?} is not a URL"))?;
    let host = u.host_str().unwrap_or("");
    let loopback = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<std::net::IpAddr>()
        .is_ok_and(|a| a.is_loopback());
    match u.scheme() {
        "https" if u.host().is_some() => Ok(()),
        "http" if loopback => Ok(()),
        _ => bail!("{flag} {url:?} must be an https:// URL (the sign-in's tokens travel over it)"),
    }
}

/// What a finished sign-in gives.
#[derive(Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A refresh token: the secret mints access tokens from it.
    Refresh { refresh_token: String },
    /// Only an access token, which does not expire (no refresh token).
    AccessOnly { access_token: String },
}

impl std::fmt::Debug for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outcome::Refresh { .. } => f.write_str("Refresh(***)"),
            Outcome::AccessOnly { .. } => f.write_str("AccessOnly(***)"),
        }
    }
}

/// The device authorization answer (RFC 8628 §3.2).
#[derive(serde::Deserialize)]
struct DeviceAnswer {
    device_code: Option<String>,
    user_code: Option<String>,
    verification_uri: Option<String>,
    /// Google's spelling.
    verification_url: Option<String>,
    interval: Option<u64>,
    expires_in: Option<u64>,
    error: Option<String>,
    error_description: Option<String>,
}

/// The token endpoint's answer (RFC 6749 §5.1, RFC 8628 §3.5).
#[derive(serde::Deserialize)]
struct TokenAnswer {
    access_token: Option<String>,
    refresh_token: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
    /// GitHub's new interval with `slow_down`.
    interval: Option<u64>,
}

/// Signs in: prints one line telling the owner where to enter which code
/// to `out`, then polls until the owner is done, denies it, the code
/// expires or `max_wait` has passed.
pub async fn run(
    flow: &DeviceFlow,
    out: &mut (dyn std::io::Write + Send),
    max_wait: Duration,
) -> Result<Outcome> {
    let http = client(flow)?;
    let mut form = vec![("client_id", flow.client_id.as_str())];
    if let Some(s) = &flow.scope {
        form.push(("scope", s));
    }
    let (status, body) = post(&http, &flow.device_url, &form).await?;
    let d: DeviceAnswer = serde_json::from_slice(&body).map_err(|_| {
        anyhow::anyhow!("the device endpoint {} answered {status} with something that is not JSON; check --device-url", flow.device_url)
    })?;
    if let Some(e) = d.error.as_deref().filter(|e| !e.is_empty()) {
        bail!(
            "the device endpoint {} refused: {}; check --client-id{}",
            flow.device_url,
            reason(e, d.error_description.as_deref()),
            if flow.scope.is_some() {
                " and --scope"
            } else {
                ""
            }
        );
    }
    let (Some(device_code), Some(user_code), Some(uri)) = (
        d.device_code.filter(|s| !s.is_empty()),
        d.user_code.filter(|s| !s.is_empty()),
        d.verification_uri
            .or(d.verification_url)
            .filter(|s| !s.is_empty()),
    ) else {
        bail!(
            "the device endpoint {} answered {status} without a device_code, user_code and verification_uri; check --device-url",
            flow.device_url
        );
    };
    let lifetime = Duration::from_secs(d.expires_in.unwrap_or(900));
    let wait = lifetime.min(max_wait);
    writeln!(
        out,
        "Open {uri} and enter the code {user_code} (within {}).",
        minutes(wait)
    )
    .context("writing the sign-in instructions")?;
    out.flush().context("writing the sign-in instructions")?;

    let started = Instant::now();
    let mut interval = Duration::from_secs(d.interval.unwrap_or(DEFAULT_INTERVAL));
    let mut form = vec![
        ("grant_type", DEVICE_GRANT),
        ("device_code", device_code.as_str()),
        ("client_id", flow.client_id.as_str()),
    ];
    if let Some(s) = &flow.client_secret {
        form.push(("client_secret", s));
    }
    loop {
        let left = wait.saturating_sub(started.elapsed());
        tokio::time::sleep(interval.min(left)).await;
        if started.elapsed() >= wait {
            if wait < lifetime {
                bail!("no sign-in within {}: pinch stopped waiting; run `pinch secrets oauth` again for a new code", minutes(wait));
            }
            bail!("the code {user_code} expired before the sign-in was finished ({}); run `pinch secrets oauth` again for a new code", minutes(lifetime));
        }
        let (status, body) = post(&http, &flow.token_url, &form).await?;
        let a: TokenAnswer = serde_json::from_slice(&body).map_err(|_| {
            anyhow::anyhow!("the token endpoint {} answered {status} with something that is not JSON; check --token-url", flow.token_url)
        })?;
        match a.error.as_deref().filter(|e| !e.is_empty()) {
            None if status.is_success() => {
                if let Some(r) = a.refresh_token.filter(|s| !s.is_empty()) {
                    return Ok(Outcome::Refresh { refresh_token: r });
                }
                if let Some(t) = a.access_token.filter(|s| !s.is_empty()) {
                    return Ok(Outcome::AccessOnly { access_token: t });
                }
                bail!(
                    "the token endpoint {} answered {status} without a token; check --token-url",
                    flow.token_url
                );
            }
            Some("authorization_pending") => {}
            Some("slow_down") => {
                interval += SLOW_DOWN;
                if let Some(s) = a.interval {
                    interval = interval.max(Duration::from_secs(s));
                }
            }
            Some("access_denied") => {
                bail!("the sign-in was denied at {uri}: nothing was stored; run `pinch secrets oauth` again and approve the access")
            }
            Some("expired_token") => {
                bail!("the code {user_code} expired before the sign-in was finished; run `pinch secrets oauth` again for a new code")
            }
            e => {
                let why = reason(e.unwrap_or("no token"), a.error_description.as_deref());
                let secret = if flow.client_secret.is_some() {
                    ", --client-secret"
                } else {
                    ""
                };
                bail!(
                    "the token endpoint {} answered {status}: {why}; check --client-id{secret} and --token-url",
                    flow.token_url
                )
            }
        }
    }
}

/// The client: timeouts, redirects only within the same origin.
fn client(flow: &DeviceFlow) -> Result<reqwest::Client> {
    let same_origin = reqwest::redirect::Policy::custom(|a| {
        let first = a.previous().first();
        let same = first.is_some_and(|f| {
            f.scheme() == a.url().scheme()
                && f.host_str() == a.url().host_str()
                && f.port_or_known_default() == a.url().port_or_known_default()
        });
        if same && a.previous().len() < 5 {
            a.follow()
        } else {
            a.stop()
        }
    });
    let mut b = reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .connect_timeout(CONNECT_TIMEOUT)
        .redirect(same_origin);
    if [&flow.device_url, &flow.token_url]
        .iter()
        .all(|u| u.starts_with("http://"))
    {
        // Loopback endpoints (check_url): never through a proxy.
        b = b.no_proxy();
    }
    b.build()
        .context("building the HTTP client for the sign-in")
}

/// POSTs `form` to `url`: the status and the answer's body.
async fn post(
    http: &reqwest::Client,
    url: &str,
    form: &[(&str, &str)],
) -> Result<(reqwest::StatusCode, Vec<u8>)> {
    let mut res = http
        .post(url)
        .header("accept", "application/json")
        .form(form)
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("cannot reach {url}: {}", causes(e)))?;
    let status = res.status();
    if status.is_redirection() {
        let to = res
            .headers()
            .get("location")
            .and_then(|l| l.to_str().ok())
            .unwrap_or("?");
        bail!(
            "{url} redirects to {}; a redirect to another host is not followed: give the final URL",
            clip(to)
        );
    }
    let mut body = Vec::new();
    while let Some(chunk) = res
        .chunk()
        .await
        .map_err(|e| anyhow::anyhow!("reading the answer of {url}: {}", causes(e)))?
    {
        body.extend_from_slice(&chunk);
        if body.len() > MAX_ANSWER {
            bail!("{url} answered more than 64 KiB; check the URL");
        }
    }
    Ok((status, body))
}

/// A reqwest error and its causes (`connection refused`, a DNS error),
/// without the URL the message already names.
fn causes(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut text = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        text = format!("{text}: {s}");
        source = s.source();
    }
    text
}

fn reason(error: &str, description: Option<&str>) -> String {
    match description {
        Some(d) if !d.is_empty() => clip(&format!("{error} ({d})")),
        _ => clip(error),
    }
}

fn clip(s: &str) -> String {
    s.chars().take(300).collect()
}

fn minutes(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 60 {
        format!("{} min", s.div_ceil(60))
    } else {
        format!("{d:?}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// What the fake provider saw.
    #[derive(Default)]
    struct Seen {
        device_forms: Vec<String>,
        polls: Vec<(Instant, String)>,
    }

    /// A fake provider on 127.0.0.1: `/device` answers `device`, `/token`
    /// answers the `polls` in turn (the last one again when they run out).
    async fn provider(
        device: serde_json::Value,
        polls: Vec<(u16, &'static str)>,
    ) -> (String, Arc<Mutex<Seen>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let device = device.to_string().replace("BASE", &base);
        let seen = Arc::new(Mutex::new(Seen::default()));
        let s2 = seen.clone();
        tokio::spawn(async move {
            while let Ok((mut c, _)) = listener.accept().await {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                let (path, body) = loop {
                    let n = c.read(&mut chunk).await.unwrap();
                    assert!(n > 0, "the client closed mid-request");
                    buf.extend_from_slice(&chunk[..n]);
                    let raw = String::from_utf8_lossy(&buf).into_owned();
                    let text = raw.to_ascii_lowercase();
                    let Some((head, rest)) = text.split_once("\r\n\r\n") else {
                        continue;
                    };
                    let len = head.split("content-length: ").nth(1);
                    let len = len.map_or(0, |v| v.lines().next().unwrap().parse().unwrap());
                    if rest.len() >= len {
                        let json = head.contains("\r\naccept: application/json");
                        assert!(head.starts_with("post ") && json, "{head}");
                        let path = head.split(' ').nth(1).unwrap().to_owned();
                        break (path, raw[head.len() + 4..][..len].to_owned());
                    }
                };
                let (status, answer) = {
                    let mut s = s2.lock().unwrap();
                    if path == "/device" {
                        s.device_forms.push(body);
                        (200, device.clone())
                    } else {
                        s.polls.push((Instant::now(), body));
                        let (st, a) = polls[(s.polls.len() - 1).min(polls.len() - 1)];
                        (st, a.to_owned())
                    }
                };
                let head = format!("HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n", answer.len());
                c.write_all(head.as_bytes()).await.unwrap();
                c.write_all(answer.as_bytes()).await.unwrap();
                let _ = c.shutdown().await;
            }
        });
        (base, seen)
    }

    fn flow(base: &str, secret: Option<&str>) -> DeviceFlow {
        DeviceFlow::for_provider(
            Provider::Generic,
            "client-123".into(),
            secret.map(str::to_owned),
            Some("repo read:user".into()),
            Some(format!("{base}/device")),
            Some(format!("{base}/token")),
        )
        .unwrap()
    }

    fn device(interval: u64, expires_in: u64) -> serde_json::Value {
        serde_json::json!({"device_code": "dc-77", "user_code": "WDJB-MJHT", "verification_uri": "BASE/activate", "interval": interval, "expires_in": expires_in})
    }

    const PENDING: (u16, &str) = (400, r#"{"error":"authorization_pending"}"#);

    /// The error of a sign-in at the fake provider `base`.
    async fn error_of(base: &str, secret: Option<&str>, max_wait: Duration) -> String {
        let got = run(&flow(base, secret), &mut Vec::new(), max_wait).await;
        got.unwrap_err().to_string()
    }

    #[tokio::test]
    async fn pending_twice_then_slow_down_then_a_refresh_token() {
        let (base, seen) = provider(
            device(0, 600),
            vec![
                PENDING,
                // GitHub answers its errors with 200.
                (200, r#"{"error":"authorization_pending","error_description":"waiting"}"#),
                (400, r#"{"error":"slow_down"}"#),
                (200, r#"{"access_token":"at-SECRET","refresh_token":"rt-SECRET","expires_in":3600,"token_type":"bearer"}"#),
            ],
        )
        .await;
        let mut out = Vec::new();
        let got = run(
            &flow(&base, Some("cs-SECRET")),
            &mut out,
            Duration::from_secs(60),
        )
        .await
        .unwrap();
        let want = "rt-SECRET".to_owned();
        assert_eq!(
            got,
            Outcome::Refresh {
                refresh_token: want
            }
        );
        assert_eq!(format!("{got:?}"), "Refresh(***)");
        let out = String::from_utf8(out).unwrap();
        assert_eq!(out.lines().count(), 1, "{out}");
        assert!(
            out.contains(&format!("{base}/activate")) && out.contains("WDJB-MJHT"),
            "{out}"
        );
        assert!(!out.contains("SECRET") && !out.contains("dc-77"), "{out}");

        let s = seen.lock().unwrap();
        assert_eq!(
            s.device_forms,
            ["client_id=client-123&scope=repo+read%3Auser"]
        );
        assert_eq!(s.polls.len(), 4);
        for (_, form) in &s.polls {
            assert_eq!(form, "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Adevice_code&device_code=dc-77&client_id=client-123&client_secret=cs-SECRET");
        }
        let gap = s.polls[3].0 - s.polls[2].0;
        assert!(
            gap >= SLOW_DOWN,
            "slow_down was followed after {gap:?}, not 5 s"
        );
        assert!(
            s.polls[2].0 - s.polls[0].0 < SLOW_DOWN,
            "the pending polls kept the interval of 0 s"
        );
    }

    #[tokio::test]
    async fn an_access_token_alone_and_googles_verification_url() {
        let (base, seen) = provider(
            serde_json::json!({"device_code": "dc-1", "user_code": "ABCD-EFGH", "verification_url": "https://www.google.com/device", "interval": 0, "expires_in": 1800}),
            vec![(200, r#"{"access_token":"gho_SECRET","token_type":"bearer","scope":"repo"}"#)],
        )
        .await;
        let mut out = Vec::new();
        let got = run(&flow(&base, None), &mut out, Duration::from_secs(3600))
            .await
            .unwrap();
        let want = "gho_SECRET".to_owned();
        assert_eq!(got, Outcome::AccessOnly { access_token: want });
        let out = String::from_utf8(out).unwrap();
        assert!(
            out.contains("https://www.google.com/device")
                && out.contains("ABCD-EFGH")
                && out.contains("30 min"),
            "{out}"
        );
        let s = seen.lock().unwrap();
        assert_eq!(s.polls.len(), 1);
        assert!(
            !s.polls[0].1.contains("client_secret"),
            "no secret was given: {}",
            s.polls[0].1
        );
    }

    #[tokio::test]
    async fn access_denied_says_denied() {
        let (base, seen) = provider(device(0, 600), vec![PENDING, (400, r#"{"error":"access_denied","error_description":"The user has denied your application access."}"#)]).await;
        let err = error_of(&base, None, Duration::from_secs(60)).await;
        assert!(
            err.contains("denied") && err.contains("nothing was stored"),
            "{err}"
        );
        assert_eq!(seen.lock().unwrap().polls.len(), 2);
    }

    #[tokio::test]
    async fn an_expired_code_says_expired() {
        let (base, _) = provider(device(0, 600), vec![(400, r#"{"error":"expired_token"}"#)]).await;
        let err = error_of(&base, None, Duration::from_secs(60)).await;
        assert!(
            err.contains("WDJB-MJHT expired") && err.contains("pinch secrets oauth"),
            "{err}"
        );

        // The provider keeps saying pending: pinch stops once the code's
        // own lifetime (1 s) is over, or at max_wait.
        let (base, seen) = provider(device(1, 1), vec![PENDING]).await;
        let t0 = Instant::now();
        let err = error_of(&base, None, Duration::from_secs(60)).await;
        assert!(err.contains("expired"), "{err}");
        assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
        assert!(seen.lock().unwrap().polls.len() <= 1);
        let (base, _) = provider(device(1, 600), vec![PENDING]).await;
        let err = error_of(&base, None, Duration::from_millis(300)).await;
        assert!(
            err.contains("no sign-in within 300ms") && err.contains("stopped waiting"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn other_errors_name_the_endpoint_and_never_a_secret() {
        let (base, _) = provider(
            device(0, 600),
            vec![(
                401,
                r#"{"error":"invalid_client","error_description":"bad client"}"#,
            )],
        )
        .await;
        let err = error_of(&base, Some("cs-SECRET"), Duration::from_secs(60)).await;
        assert!(
            err.contains(&format!("{base}/token"))
                && err.contains("invalid_client (bad client)")
                && err.contains("--client-secret"),
            "{err}"
        );
        assert!(!err.contains("SECRET") && !err.contains("dc-77"), "{err}");

        // Nothing listening: the endpoint and the cause.
        let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", closed.local_addr().unwrap());
        drop(closed);
        let err = error_of(&base, None, Duration::from_secs(60)).await;
        assert!(
            err.starts_with(&format!("cannot reach {base}/device: ")),
            "{err}"
        );
        assert!(err.to_ascii_lowercase().contains("refused"), "{err}");
    }

    #[test]
    fn providers_and_their_settings() {
        let gh =
            DeviceFlow::for_provider(Provider::Github, "Iv1.abc".into(), None, None, None, None)
                .unwrap();
        assert_eq!(gh.device_url, "https://github.com/login/device/code");
        assert_eq!(gh.token_url, "https://github.com/login/oauth/access_token");
        let g = |secret: Option<&str>, scope: Option<&str>| {
            DeviceFlow::for_provider(
                Provider::Google,
                "x.apps.googleusercontent.com".into(),
                secret.map(Into::into),
                scope.map(Into::into),
                None,
                None,
            )
        };
        let e = g(None, Some("email")).err().unwrap().to_string();
        assert!(e.contains("--client-secret"), "{e}");
        let e = g(Some("s"), None).err().unwrap().to_string();
        assert!(e.contains("--scope"), "{e}");
        let ok = g(Some("s"), Some("email")).unwrap();
        assert_eq!(
            (ok.device_url.as_str(), ok.token_url.as_str()),
            (
                "https://oauth2.googleapis.com/device/code",
                "https://oauth2.googleapis.com/token"
            )
        );
        let generic = |d: Option<&str>, t: Option<&str>| {
            DeviceFlow::for_provider(
                Provider::Generic,
                "c".into(),
                None,
                None,
                d.map(Into::into),
                t.map(Into::into),
            )
            .map_err(|e| e.to_string())
        };
        let e = generic(None, None).err().unwrap();
        assert!(e.contains("--device-url and --token-url"), "{e}");
        let e = generic(Some("https://id.example/device"), None)
            .err()
            .unwrap();
        assert!(
            e.contains("--token-url") && !e.contains("--device-url"),
            "{e}"
        );
        let e = generic(
            Some("http://id.example/device"),
            Some("https://id.example/token"),
        )
        .err()
        .unwrap();
        assert!(e.contains("--device-url") && e.contains("https://"), "{e}");
        assert!(generic(Some("http://127.0.0.1:9/d"), Some("http://[::1]:9/t")).is_ok());
        let e = DeviceFlow::for_provider(Provider::Github, " ".into(), None, None, None, None)
            .err()
            .unwrap();
        assert!(e.to_string().contains("--client-id"), "{e}");
    }
}
