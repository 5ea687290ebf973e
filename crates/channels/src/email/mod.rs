//! Email (decision 0051): IMAP in, SMTP out.
//!
//! Inbound: one IMAP connection to the mailbox (INBOX by default), IDLE
//! when the server has it (re-issued every `stall_s`, which is also the
//! liveness check: a dead connection fails the re-issue and is rebuilt
//! with the shared backoff), polling every `poll_s` when it has not. Each
//! new mail, in UID order, is read ([`parse`]), handed to the host, and
//! only once the host has committed it is it flagged `\Seen` and the mark
//! (the last UID, per UIDVALIDITY, [`state`]) moved past it; a failure
//! leaves the mark where it was and the mail is read again. On its first
//! start the channel begins at the mailbox's newest mail: the mail already
//! there is the owner's, not work for the agent.
//!
//! Outbound: SMTP with the same credentials, a reply threaded under the
//! mail it answers (`In-Reply-To:`, `References:`, `Re:` subject), files
//! as attachments, `Auto-Submitted: auto-replied` (RFC 3834: other robots
//! do not answer it, and this channel skips mail that carries it), and a
//! `Message-ID:` made from the outbound row's id, so a retried send is the
//! same message to every mail client.

mod config;
mod imap;
pub mod parse;
mod send;
pub mod state;

pub use config::{EmailSection, KIND};

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, Notify};

use crate::kind::Credential;
use crate::platform::Secret;
use crate::{Address, BoxFuture, Capabilities, Channel, ChannelEvent, DeliverError, Outgoing};

pub const CHANNEL_TYPE: &str = "email";
/// The longest reply text sent in one mail (characters).
pub const MAX_TEXT: usize = 100_000;

/// How a connection is encrypted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Tls {
    /// TLS from the first byte (IMAP 993, SMTP 465).
    Implicit,
    /// Plain, then STARTTLS before anything else (IMAP 143, SMTP 587).
    Starttls,
    /// None at all: only to a loopback address (a local bridge or test).
    None,
}

/// One server.
#[derive(Clone, Debug)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
    pub tls: Tls,
}

#[derive(Clone, Debug)]
pub struct EmailConfig {
    /// pinch's address (lower-case): From of its mail.
    pub address: String,
    /// The display name on its mail.
    pub name: Option<String>,
    pub username: String,
    pub login: Login,
    pub imap: Endpoint,
    pub smtp: Endpoint,
    pub mailbox: String,
    /// Use IDLE when the server offers it (else poll).
    pub idle: bool,
    pub poll: Duration,
    pub stall: Duration,
    pub trusted_authserv_id: Option<String>,
    /// Extra roots (PEM) trusted for IMAP and SMTP, beside the web's.
    pub ca_pem: Option<Vec<u8>>,
    pub data_dir: PathBuf,
}

/// Where the password (or OAuth token) comes from.
#[derive(Clone)]
pub enum Login {
    /// The host's environment, read once at start.
    Env(Secret),
    /// pinch's secret store, by name, read at each login: a plain secret
    /// is a password; an OAuth secret gives an access token (XOAUTH2).
    Store {
        name: String,
        source: Arc<dyn crate::kind::SecretSource>,
    },
}

impl std::fmt::Debug for Login {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Login::Env(_) => f.write_str("Env(<redacted>)"),
            Login::Store { name, .. } => write!(f, "Store({name:?})"),
        }
    }
}

impl EmailConfig {
    /// The credential to log in to `server` with.
    pub(super) async fn credential(&self, server: &str) -> Result<Credential, String> {
        match &self.login {
            Login::Env(p) => Ok(Credential::Password(p.0.clone())),
            Login::Store { name, source } => source.credential(name, CHANNEL_TYPE, server).await,
        }
    }

    /// What to check when a login is refused.
    pub(super) fn login_hint(&self) -> String {
        match &self.login {
            Login::Env(_) => "check [email] username and the password in its variable".into(),
            Login::Store { name, .. } => format!(
                "check [email] username and the secret {name:?} (pinch secrets rotate {name})"
            ),
        }
    }
}

pub struct EmailChannel {
    cfg: EmailConfig,
    events: mpsc::Sender<ChannelEvent>,
    state: tokio::sync::Mutex<state::State>,
    store: state::Store,
    closed: AtomicBool,
    wake: Notify,
    /// (UID, failed fetches of it): see `imap::MAX_TRIES`.
    tries: tokio::sync::Mutex<(u32, u32)>,
}

impl EmailChannel {
    /// Builds the adapter and starts its IMAP loop; must be called inside
    /// the tokio runtime.
    pub fn start(
        cfg: EmailConfig,
        events: mpsc::Sender<ChannelEvent>,
    ) -> Result<Arc<EmailChannel>, String> {
        let store = state::Store::new(&cfg.data_dir);
        let saved = store.load()?;
        let ch = Arc::new(EmailChannel {
            cfg,
            events,
            state: tokio::sync::Mutex::new(saved),
            store,
            closed: AtomicBool::new(false),
            wake: Notify::new(),
            tries: tokio::sync::Mutex::new((0, 0)),
        });
        let run = ch.clone();
        tokio::spawn(async move { run.run().await });
        Ok(ch)
    }

    fn closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    /// Saves the state, logging (not failing) when the disk refuses: the
    /// cost is a repeat after a restart, which the host stores once.
    fn save(&self, s: &state::State) {
        if let Err(e) = self.store.save(s) {
            tracing::warn!("email: {e}");
        }
    }
}

/// `pinch doctor`'s check: log in to IMAP and open the mailbox, and
/// reach the SMTP server (lettre's connection test: greeting and EHLO).
pub async fn probe(cfg: &EmailConfig) -> Result<String, String> {
    let imap = imap::check(cfg)
        .await
        .map_err(|e| format!("IMAP {}:{}: {e}", cfg.imap.host, cfg.imap.port))?;
    let server = format!("{}:{}", cfg.smtp.host, cfg.smtp.port);
    let cred = cfg
        .credential(&server)
        .await
        .map_err(|e| format!("SMTP {server}: {e}"))?;
    send::Smtp::new(cfg, &cred)?.check(cfg).await?;
    Ok(format!(
        "IMAP {}:{} logged in as {} ({imap}); SMTP {}:{} answers",
        cfg.imap.host, cfg.imap.port, cfg.username, cfg.smtp.host, cfg.smtp.port
    ))
}

impl Channel for EmailChannel {
    fn channel_type(&self) -> &'static str {
        CHANNEL_TYPE
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            threads: true,
            files: true,
            open_dm: true,
            max_text: MAX_TEXT,
            ..Default::default()
        }
    }

    fn deliver<'a>(
        &'a self,
        to: &'a Address,
        msg: &'a Outgoing,
    ) -> BoxFuture<'a, Result<String, DeliverError>> {
        Box::pin(self.send(to, msg))
    }

    fn notice<'a>(
        &'a self,
        to: &'a Address,
        text: &'a str,
    ) -> BoxFuture<'a, Result<(), DeliverError>> {
        Box::pin(async move {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos();
            let msg = Outgoing {
                id: format!("notice.{nanos}"),
                text: text.to_owned(),
                in_reply_to: None,
                buttons: Vec::new(),
                files: Vec::new(),
            };
            self.send(to, &msg).await.map(|_| ())
        })
    }

    fn open_dm<'a>(&'a self, user: &'a str) -> BoxFuture<'a, Result<Option<String>, DeliverError>> {
        Box::pin(async move { Ok(user.contains('@').then(|| user.to_ascii_lowercase())) })
    }

    fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        self.wake.notify_waiters();
    }
}
