//! WhatsApp through Meta's official Cloud API (decision 0052), a thin
//! client on `reqwest` like the other platforms (decision 0018).
//!
//! Inbound: Meta's webhook on the shared HTTP listener. `GET /whatsapp`
//! answers the subscription check (`hub.mode=subscribe`, the verify token
//! compared in constant time, the `hub.challenge` echoed); `POST
//! /whatsapp` is refused (401) unless `X-Hub-Signature-256` is the
//! HMAC-SHA256 of the raw body with the app secret (ring's constant-time
//! verify). Every message of a POST is handed to the host and the POST is
//! answered 200 only once each is acked as stored (else 503, and Meta
//! delivers it again; the `wamid` message id makes a redelivery one row).
//! A reply button or list row pressed under pinch's question is a click
//! carrying pinch's callback; a user's reaction is dropped (logged).
//!
//! Ids: the Cloud API is one-to-one with the business number (groups are
//! not in it): the conversation and the sender are the user's `wa_id`
//! (their phone number), the message id is the `wamid…`.
//!
//! Outbound: `POST /{version}/{phone_number_id}/messages` (text split at
//! 4096 chars, the first part a reply to the answered message; reply
//! buttons, a list past three options; reactions), files uploaded to
//! `/media` and sent by id; inbound media through `GET /{version}/{media
//! id}` and its short-lived URL, with the token, capped.
//!
//! **The 24-hour window:** a business may send free-form messages only
//! within 24 hours of the user's last message. The time of each user's
//! last message (its own timestamp, or when it arrived) is kept in memory
//! and in `<data>/channels/whatsapp-window.json` (0600, written
//! atomically). A message outside the window (by that record, or Graph's
//! error 131047) is not sent: the configured `template` is sent instead
//! (it should invite the user to write) and the message fails for good,
//! saying so; without a template it fails saying to configure one.
//!
//! **No idempotency key:** the Cloud API has none, so a send whose answer
//! is lost (a timeout after Meta accepted it) and is retried can arrive
//! twice; the host's ledger keeps that to the rare lost answer.
//!
//! The token is sent only as `Authorization: Bearer`; errors have their
//! URLs removed and the token replaced, never logged.

mod api;
mod config;
mod hook;
mod payload;

pub use config::{WhatsAppSection, KIND};

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use tokio::sync::mpsc;

use crate::platform::Secret;
use crate::{Address, BoxFuture, Capabilities, Channel, ChannelEvent, DeliverError, Outgoing};

use api::Fail;

pub const CHANNEL_TYPE: &str = "whatsapp";
/// WhatsApp's text message limit (characters).
pub const MAX_TEXT: usize = 4096;
pub const DEFAULT_BASE_URL: &str = "https://graph.facebook.com";
/// The webhook route on the shared listener.
pub const WEBHOOK_PATH: &str = "/whatsapp";
/// The signature header of a webhook POST.
pub const SIGNATURE_HEADER: &str = "x-hub-signature-256";
/// How long after a user's last message a business may send free-form.
pub const WINDOW: Duration = Duration::from_secs(24 * 3600);
/// How long an inbound message may wait for the host's commit.
const ACK_WAIT: Duration = Duration::from_secs(60);

#[derive(Clone, Debug)]
pub struct WhatsAppConfig {
    /// The access token (a system user's), sent as a bearer token.
    pub token: Secret,
    /// Signs webhook POSTs (`X-Hub-Signature-256`).
    pub app_secret: Secret,
    /// What Meta's subscription check must present.
    pub verify_token: Secret,
    pub phone_number_id: String,
    /// `https://graph.facebook.com` (tests: the fake's address).
    pub base_url: String,
    /// `v21.0`.
    pub api_version: String,
    /// The template for outside the window: (name, language code).
    pub template: Option<(String, String)>,
    /// Where the window's times are kept (`None`: memory only).
    pub window_file: Option<PathBuf>,
}

/// When each user last wrote (Unix seconds), to tell whether the 24-hour
/// window is open; saved on every change.
#[derive(Debug)]
pub(super) struct Window {
    path: Option<PathBuf>,
    map: Mutex<BTreeMap<String, i64>>,
}

impl Window {
    fn load(path: Option<PathBuf>) -> Window {
        let map = path
            .as_ref()
            .and_then(|p| std::fs::read(p).ok())
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        Window {
            path,
            map: Mutex::new(map),
        }
    }

    /// `user` wrote at `at` (kept if later than what is known).
    fn seen(&self, user: &str, at: i64) {
        let mut m = self.map.lock().unwrap();
        if m.get(user).is_some_and(|&t| t >= at) {
            return;
        }
        m.insert(user.to_owned(), at);
        if let Some(p) = &self.path {
            if let Err(e) = crate::write_private(p, &serde_json::to_vec(&*m).unwrap_or_default()) {
                tracing::warn!(path = %p.display(), "whatsapp: cannot save the 24-hour window times: {e}");
            }
        }
    }

    /// Whether a free-form message to `user` is allowed at `now`.
    fn open(&self, user: &str, now: i64) -> bool {
        self.map
            .lock()
            .unwrap()
            .get(user)
            .is_some_and(|&t| now.saturating_sub(t) < WINDOW.as_secs() as i64)
    }
}

/// Unix seconds now.
fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

pub struct WhatsAppChannel {
    cfg: WhatsAppConfig,
    client: reqwest::Client,
    events: mpsc::Sender<ChannelEvent>,
    window: Window,
    closed: AtomicBool,
}

impl WhatsAppChannel {
    /// Builds the adapter (it serves only its webhook route: nothing runs
    /// in the background); must be called inside the tokio runtime.
    pub fn start(
        cfg: WhatsAppConfig,
        events: mpsc::Sender<ChannelEvent>,
    ) -> Result<Arc<WhatsAppChannel>, String> {
        if cfg.token.0.is_empty() || cfg.app_secret.0.is_empty() {
            return Err("the WhatsApp access token or app secret is empty".into());
        }
        Ok(Arc::new(WhatsAppChannel {
            client: crate::platform::client(crate::platform::SEND_TIMEOUT)?,
            window: Window::load(cfg.window_file.clone()),
            cfg,
            events,
            closed: AtomicBool::new(false),
        }))
    }

    /// The webhook routes (`GET` and `POST /whatsapp`) for the shared
    /// listener.
    pub fn router(self: &Arc<Self>) -> axum::Router {
        axum::Router::new()
            .route(
                WEBHOOK_PATH,
                axum::routing::get(hook::verify).post(hook::receive),
            )
            .with_state(self.clone())
    }

    /// Outside the window: the template instead (if configured), and the
    /// reason the message fails.
    async fn outside(&self, to: &str) -> DeliverError {
        let Some((name, _)) = &self.cfg.template else {
            return DeliverError::Permanent(
                "outside WhatsApp's 24-hour window (the user last wrote over 24 hours ago, or never): \
                 configure [whatsapp] template = \"<an approved template>\" to invite them to write"
                    .into(),
            );
        };
        match self.send_template(to).await {
            Ok(_) => DeliverError::Permanent(format!(
                "outside WhatsApp's 24-hour window: sent the template {name} instead; the user must write first"
            )),
            Err(Fail::Window) => DeliverError::Permanent(format!(
                "outside WhatsApp's 24-hour window, and WhatsApp refused the template {name} too"
            )),
            Err(Fail::Deliver(e)) => e,
        }
    }

    /// A free-form send: refused before trying outside the window; Graph's
    /// own refusal (131047) handled the same way.
    async fn free_form<T>(
        &self,
        to: &Address,
        send: impl std::future::Future<Output = Result<T, Fail>>,
    ) -> Result<T, DeliverError> {
        if !self.window.open(&to.platform_id, now()) {
            return Err(self.outside(&to.platform_id).await);
        }
        match send.await {
            Ok(v) => Ok(v),
            Err(Fail::Window) => Err(self.outside(&to.platform_id).await),
            Err(Fail::Deliver(e)) => Err(e),
        }
    }
}

impl Channel for WhatsAppChannel {
    fn channel_type(&self) -> &'static str {
        CHANNEL_TYPE
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            threads: false,
            edit: false,
            reactions: true,
            buttons: true,
            typing: false,
            files: true,
            open_dm: true,
            max_text: MAX_TEXT,
        }
    }

    fn deliver<'a>(
        &'a self,
        to: &'a Address,
        msg: &'a Outgoing,
    ) -> BoxFuture<'a, Result<String, DeliverError>> {
        Box::pin(async move {
            self.free_form(to, async {
                let mut first = None;
                if !msg.text.is_empty() || !msg.buttons.is_empty() {
                    first = Some(
                        self.send_text(
                            &to.platform_id,
                            &msg.text,
                            msg.in_reply_to.as_deref(),
                            &msg.buttons,
                        )
                        .await?,
                    );
                }
                for f in &msg.files {
                    let id = self.send_file(&to.platform_id, f).await?;
                    first = first.or(Some(id));
                }
                first.ok_or_else(|| {
                    Fail::Deliver(DeliverError::Permanent(
                        "nothing to send: no text and no files".into(),
                    ))
                })
            })
            .await
        })
    }

    fn notice<'a>(
        &'a self,
        to: &'a Address,
        text: &'a str,
    ) -> BoxFuture<'a, Result<(), DeliverError>> {
        Box::pin(async move {
            // A notice never sends the template (one per failed reply is
            // enough).
            if !self.window.open(&to.platform_id, now()) {
                return Err(DeliverError::Permanent(
                    "outside WhatsApp's 24-hour window: the user must write first".into(),
                ));
            }
            match self.send_text(&to.platform_id, text, None, &[]).await {
                Ok(_) => Ok(()),
                Err(Fail::Window) => Err(DeliverError::Permanent(
                    "outside WhatsApp's 24-hour window: the user must write first".into(),
                )),
                Err(Fail::Deliver(e)) => Err(e),
            }
        })
    }

    fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
    }

    fn open_dm<'a>(&'a self, user: &'a str) -> BoxFuture<'a, Result<Option<String>, DeliverError>> {
        // The conversation with a user is their wa_id (the window decides
        // whether anything can be sent).
        Box::pin(async move { Ok(Some(user.to_owned())) })
    }

    fn react<'a>(
        &'a self,
        to: &'a Address,
        platform_message_id: &'a str,
        emoji: &'a str,
    ) -> BoxFuture<'a, Result<(), DeliverError>> {
        Box::pin(async move {
            let body = json!({
                "recipient_type": "individual",
                "to": to.platform_id,
                "type": "reaction",
                "reaction": {"message_id": platform_message_id, "emoji": emoji},
            });
            if !self.window.open(&to.platform_id, now()) {
                return Err(DeliverError::Permanent(
                    "outside WhatsApp's 24-hour window: no reaction until the user writes".into(),
                ));
            }
            match self.post_message(body).await {
                Ok(_) => Ok(()),
                Err(Fail::Window) => Err(DeliverError::Permanent(
                    "outside WhatsApp's 24-hour window: no reaction until the user writes".into(),
                )),
                Err(Fail::Deliver(e)) => Err(e),
            }
        })
    }
}

/// `pinch doctor`'s live check: the token reads the number.
pub(super) async fn probe(cfg: &WhatsAppConfig) -> Result<String, String> {
    let client = crate::platform::client(crate::platform::SEND_TIMEOUT)?;
    let url = format!(
        "{}/{}/{}?fields=display_phone_number,verified_name",
        cfg.base_url, cfg.api_version, cfg.phone_number_id
    );
    let token = &cfg.token.0;
    let resp = client
        .get(url)
        .bearer_auth(token)
        .send()
        .await
        .map_err(|e| {
            format!(
                "the Graph API did not answer: {}",
                crate::platform::scrub(&e, token)
            )
        })?;
    let status = resp.status();
    let body = resp.bytes().await.unwrap_or_default();
    let v: serde_json::Value =
        crate::platform::json_lossy("whatsapp probe", &body).unwrap_or_default();
    if status.is_success() {
        let number = v["display_phone_number"].as_str().unwrap_or("?");
        let name = v["verified_name"].as_str().unwrap_or("no verified name");
        return Ok(format!("the Graph API reads the number {number} ({name})"));
    }
    let why = v["error"]["message"]
        .as_str()
        .unwrap_or("no message")
        .replace(token.as_str(), "<token>");
    Err(format!(
        "the Graph API answered {status} for phone_number_id {}: {why}; check the token (and its whatsapp_business_messaging permission) and the id",
        cfg.phone_number_id
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_opens_for_a_day_keeps_the_latest_time_and_is_saved_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("whatsapp-window.json");
        let w = Window::load(Some(path.clone()));
        let t = 1_733_400_000;
        assert!(!w.open("491", t), "never wrote: closed");
        w.seen("491", t);
        w.seen("491", t - 100);
        assert!(w.open("491", t + 24 * 3600 - 1));
        assert!(!w.open("491", t + 24 * 3600));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let again = Window::load(Some(path));
        assert!(again.open("491", t + 10), "read back from the file");
        assert_eq!(again.map.lock().unwrap().get("491"), Some(&t));
    }

    #[test]
    fn secrets_are_never_in_debug_output() {
        let c = WhatsAppConfig {
            token: Secret("EAAG-SECRET".into()),
            app_secret: Secret("app-SECRET".into()),
            verify_token: Secret("verify-SECRET".into()),
            phone_number_id: "1".into(),
            base_url: DEFAULT_BASE_URL.into(),
            api_version: "v21.0".into(),
            template: None,
            window_file: None,
        };
        assert!(!format!("{c:?}").contains("SECRET"));
    }
}
