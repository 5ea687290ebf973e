//! OAuth 2 access tokens minted from a stored refresh token (decision
//! 0050). The proxy asks for a secret's token per request; the token is
//! kept in memory only and refreshed once 80 % of its lifetime has gone,
//! so requests never carry an expired one. One lock per secret: however
//! many requests arrive while a refresh runs, exactly one refresh is in
//! flight and the rest wait for its token. A provider that rotates the
//! refresh token gets the new one sealed back into the store.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{OAuthValue, Store, Value};

/// A token endpoint's answer is read up to this.
const MAX_ANSWER: usize = 64 * 1024;
/// How long a token endpoint may take.
const TOKEN_TIMEOUT: Duration = Duration::from_secs(20);
/// The lifetime assumed when the endpoint does not say (`expires_in`).
const DEFAULT_LIFETIME: Duration = Duration::from_secs(3600);

struct Minted {
    /// Which stored value minted it (a rotated secret is minted anew).
    fingerprint: Vec<u8>,
    token: String,
    refresh_at: Instant,
}

type Slot = Arc<tokio::sync::Mutex<Option<Minted>>>;

/// The access tokens of every OAuth secret.
pub struct Tokens {
    slots: Mutex<HashMap<String, Slot>>,
    http: reqwest::Client,
    /// Refreshes made (for tests and the dashboard).
    pub refreshes: AtomicU64,
}

fn fingerprint(v: &OAuthValue) -> Vec<u8> {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for part in [&v.refresh_token, &v.client_id, &v.token_url] {
        ctx.update(part.as_bytes());
        ctx.update(b"\0");
    }
    ctx.finish().as_ref().to_vec()
}

/// What a token endpoint answers (RFC 6749 §5.1).
#[derive(serde::Deserialize)]
struct Answer {
    access_token: Option<String>,
    expires_in: Option<f64>,
    refresh_token: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

impl Tokens {
    /// `tls`: the proxy's client configuration (the public roots plus any
    /// configured extra root).
    pub fn new(tls: &rustls::ClientConfig) -> Result<Tokens, String> {
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(tls.clone())
            .timeout(TOKEN_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .build()
            .map_err(|e| format!("the OAuth client: {e}"))?;
        Ok(Tokens {
            slots: Mutex::new(HashMap::new()),
            http,
            refreshes: AtomicU64::new(0),
        })
    }

    /// The access token for secret `name` (value `v`), refreshed first if
    /// it is due. The error names the secret and the endpoint's reason.
    pub async fn access_token(
        &self,
        store: &Arc<Store>,
        name: &str,
        v: &OAuthValue,
    ) -> Result<String, String> {
        let slot = self
            .slots
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(name.to_owned())
            .or_default()
            .clone();
        let mut held = slot.lock().await;
        let mut fp = fingerprint(v);
        let mut v = std::borrow::Cow::Borrowed(v);
        if let Some(m) = held.as_ref() {
            if m.fingerprint != fp {
                // A caller that read the value before the refresh it
                // waited for rotated the refresh token holds the spent
                // one; the store has the new one.
                let (store2, name2) = (store.clone(), name.to_owned());
                if let Ok(Ok(Value::OAuth(now))) =
                    tokio::task::spawn_blocking(move || store2.value(&name2)).await
                {
                    if fingerprint(&now) == m.fingerprint {
                        fp = m.fingerprint.clone();
                        v = std::borrow::Cow::Owned(now);
                    }
                }
            }
            if m.fingerprint == fp && Instant::now() < m.refresh_at {
                return Ok(m.token.clone());
            }
        }
        let v = v.as_ref();
        let (token, lifetime, rotated) = self.refresh(name, v).await?;
        if let Some(new_refresh) = rotated {
            let mut nv = v.clone();
            nv.refresh_token = new_refresh;
            fp = fingerprint(&nv);
            let (store, name2, old) = (store.clone(), name.to_owned(), v.clone());
            let saved = tokio::task::spawn_blocking(move || store.update_oauth(&name2, &old, &nv))
                .await
                .map_err(|e| e.to_string())
                .and_then(|r| r.map_err(|e| e.to_string()));
            if let Err(e) = saved {
                tracing::error!(secret = name, "the token endpoint gave a new refresh token that could not be stored ({e}); the next refresh may fail: `pinch secrets oauth {name}` signs in again");
            }
        }
        *held = Some(Minted {
            fingerprint: fp,
            token: token.clone(),
            refresh_at: Instant::now() + lifetime.mul_f64(0.8),
        });
        Ok(token)
    }

    /// One refresh: the new access token, its lifetime, a rotated
    /// refresh token if the endpoint gave one.
    async fn refresh(
        &self,
        name: &str,
        v: &OAuthValue,
    ) -> Result<(String, Duration, Option<String>), String> {
        self.refreshes.fetch_add(1, Ordering::SeqCst);
        let mut form = vec![
            ("grant_type", "refresh_token"),
            ("refresh_token", v.refresh_token.as_str()),
            ("client_id", v.client_id.as_str()),
        ];
        if let Some(s) = &v.client_secret {
            form.push(("client_secret", s));
        }
        if let Some(s) = &v.scope {
            form.push(("scope", s));
        }
        let fail = |why: String| {
            format!(
                "refreshing the OAuth token of secret {name:?} at {}: {why}",
                v.token_url
            )
        };
        let mut res = self
            .http
            .post(&v.token_url)
            .header("accept", "application/json")
            .form(&form)
            .send()
            .await
            .map_err(|e| fail(e.without_url().to_string()))?;
        let status = res.status();
        let mut body = Vec::new();
        while let Some(chunk) = res.chunk().await.map_err(|e| fail(e.to_string()))? {
            body.extend_from_slice(&chunk);
            if body.len() > MAX_ANSWER {
                return Err(fail("the answer is larger than 64 KiB".into()));
            }
        }
        let a: Answer = serde_json::from_slice(&body)
            .map_err(|_| fail(format!("answered {status} with something that is not JSON")))?;
        match (a.access_token, a.error) {
            (Some(token), None) if status.is_success() && !token.is_empty() => {
                let secs = a.expires_in.filter(|s| s.is_finite() && *s > 0.0);
                let lifetime =
                    secs.map_or(DEFAULT_LIFETIME, |s| Duration::from_secs_f64(s.min(1e7)));
                tracing::info!(
                    secret = name,
                    lifetime_s = lifetime.as_secs_f64(),
                    "minted an OAuth access token"
                );
                Ok((token, lifetime, a.refresh_token.filter(|r| !r.is_empty())))
            }
            (_, err) => {
                let why = match (err, a.error_description) {
                    (Some(e), Some(d)) => format!("{e}: {d}"),
                    (Some(e), None) => e,
                    _ => "no access_token".into(),
                };
                let hint = if why.starts_with("invalid_grant") {
                    format!(" (the sign-in was revoked or expired: `pinch secrets oauth {name}` signs in again)")
                } else {
                    String::new()
                };
                Err(fail(format!(
                    "answered {status}: {}{hint}",
                    clip(&redact(why, v))
                )))
            }
        }
    }
}

/// `why` without the refresh token or client secret (an endpoint may
/// echo the request), as sent and form-encoded.
fn redact(mut why: String, v: &OAuthValue) -> String {
    for s in [Some(&v.refresh_token), v.client_secret.as_ref()]
        .into_iter()
        .flatten()
    {
        if !s.is_empty() {
            why = why
                .replace(s.as_str(), "***")
                .replace(&form_encoded(s), "***");
        }
    }
    why
}

fn form_encoded(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'*' | b'-' | b'.' | b'_' => {
                (b as char).to_string()
            }
            b' ' => "+".into(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn clip(s: &str) -> String {
    s.chars().take(300).collect()
}
