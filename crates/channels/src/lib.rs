//! Channel adapters: how messages enter and leave pinch.
//!
//! An adapter turns a platform's wire format into [`InboundEvent`]s (each
//! with an [`Ack`] the host completes only after the message is committed,
//! so platform offsets are never advanced past unsaved work) and carries out
//! deliveries. Everything platform-specific lives behind [`Channel`]; the
//! host knows only this trait and the capability flags.
//!
//! Adapters (one cargo feature each): `cli` (a Unix socket speaking JSON
//! lines, used by `pinch chat`), `webhook` (`POST /hooks/<name>`, signed
//! with HMAC-SHA256, replies POSTed to a callback URL) and `web` (the chat
//! page and its WebSocket); the last two share one HTTP listener
//! ([`http`]). Telegram, Discord, Slack, email, WhatsApp (Cloud API and Web), Matrix and Signal build on the same trait, and
//! each is registered in [`KINDS`] with its `pinch.toml` section.

#[cfg(feature = "channel-cli")]
pub mod cli_socket;
#[cfg(feature = "channel-discord")]
pub mod discord;
#[cfg(feature = "platform")]
pub mod draft;
#[cfg(feature = "channel-email")]
pub mod email;
#[cfg(feature = "test-support")]
pub mod fake;
#[cfg(feature = "http")]
pub mod http;
#[cfg(feature = "http")]
pub mod kind;
#[cfg(feature = "channel-matrix")]
pub mod matrix;
pub mod peer;
#[cfg(feature = "platform")]
pub mod platform;
#[cfg(feature = "channel-signal")]
pub mod signal;
#[cfg(feature = "channel-slack")]
pub mod slack;
#[cfg(feature = "channel-telegram")]
pub mod telegram;
#[cfg(feature = "channel-web")]
pub mod web;
#[cfg(feature = "channel-webhook")]
pub mod webhook;
#[cfg(feature = "channel-whatsapp")]
pub mod whatsapp;
#[cfg(feature = "channel-whatsapp-web")]
pub mod whatsapp_web;

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;

use tokio::sync::oneshot;

#[cfg(feature = "http")]
pub use kind::{ChannelKind, ChannelSection, Configured};

/// The channel kinds a `pinch.toml` section turns on, in start order
/// (decision 0036). A new channel is its module (declared above) and one
/// entry here: the module owns its section, defaults, secrets, floors,
/// routes and how it is built (its `KIND`); the host reads the section
/// through this table.
#[cfg(feature = "http")]
pub static KINDS: &[ChannelKind] = &[
    #[cfg(feature = "channel-telegram")]
    telegram::KIND,
    #[cfg(feature = "channel-discord")]
    discord::KIND,
    #[cfg(feature = "channel-slack")]
    slack::KIND,
    #[cfg(feature = "channel-email")]
    email::KIND,
    #[cfg(feature = "channel-whatsapp")]
    whatsapp::KIND,
    #[cfg(feature = "channel-matrix")]
    matrix::KIND,
    #[cfg(feature = "channel-signal")]
    signal::KIND,
    #[cfg(feature = "channel-whatsapp-web")]
    whatsapp_web::KIND,
];

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A message as a platform delivered it, normalised (SPEC §4 step 1).
/// Serializable: a message held for an approval is stored and replayed.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct InboundEvent {
    pub channel_type: String,
    /// The conversation on the platform (chat id); `local` for the CLI.
    pub platform_id: String,
    pub thread_id: Option<String>,
    /// The platform's id of this message (stable across redelivery).
    pub message_id: String,
    /// The platform's user id (without the `<channel>:` prefix).
    pub sender_id: String,
    pub sender_name: Option<String>,
    pub text: String,
    /// From the platform (true in DMs), never a text regex.
    pub is_mention: bool,
    pub is_group: bool,
    /// Files that came with the message, already downloaded by the adapter
    /// (capped at [`MAX_ATTACHMENT`]); the host saves them into the inbox
    /// of every session the message reaches before it commits the row.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attachments: Vec<InboundAttachment>,
    /// Set by the webhook adapter: the row is stored as kind `webhook`
    /// (SPEC §3.2) rather than `chat`; `text` is a short summary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<WebhookEvent>,
    /// This message corrects the sender's earlier message with this
    /// platform id (web chat's Up; decision 0049): stored as a message of
    /// its own, marked so the agent reads it as the correction.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub edit_of: Option<String>,
}

/// The largest inbound attachment kept (SPEC §6.6: 25 MiB). Adapters stop
/// downloading past it and pass the attachment with `data: None`.
pub const MAX_ATTACHMENT: u64 = 25 << 20;

/// One file that arrived with a message.
///
/// The bytes travel in the event (the adapter downloads before it emits,
/// SPEC §4 step 1), so the host can save them before the commit with no
/// network call on its main loop. They are not serialised: a message held
/// for an approval is stored without its files (the host tells the agent).
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct InboundAttachment {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mime: Option<String>,
    /// Size on the platform (bytes), known even when the file was not kept.
    pub size: u64,
    /// The content; `None` when it was larger than [`MAX_ATTACHMENT`] or
    /// not kept (a replayed event).
    #[serde(skip)]
    pub data: Option<Vec<u8>>,
}

/// A generic webhook delivery (SPEC §9.2.6).
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct WebhookEvent {
    /// The hook's name (`/hooks/<name>`).
    pub source: String,
    /// The sender's event name (header `X-Pinch-Event`, else empty).
    pub event: String,
    /// The body: JSON if it parses, else a string.
    pub payload: serde_json::Value,
}

/// What the host tells an adapter once it has handled an inbound event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AckOutcome {
    /// Committed for `routed` agents (0 = dropped by routing, with a reason).
    /// `handled`: no agent took it, yet nothing went wrong: the host
    /// answered it itself (`/help`) or holds it for an approval; `note`
    /// says which, to show as information, not as a failure.
    Stored {
        routed: usize,
        note: Option<String>,
        handled: bool,
    },
    /// Not stored; the platform may redeliver (offset not advanced).
    Failed(String),
}

/// Completes an inbound event. Dropping it unanswered means "not stored".
#[derive(Debug)]
pub struct Ack(oneshot::Sender<AckOutcome>);

impl Ack {
    pub fn new() -> (Ack, oneshot::Receiver<AckOutcome>) {
        let (tx, rx) = oneshot::channel();
        (Ack(tx), rx)
    }

    pub fn complete(self, outcome: AckOutcome) {
        let _ = self.0.send(outcome);
    }
}

/// Events adapters send to the host.
#[derive(Debug)]
pub enum ChannelEvent {
    Message(InboundEvent, Ack),
    /// The channel can deliver again (e.g. a CLI client connected).
    Available {
        channel_type: String,
    },
    /// A user pressed a button the host sent (see [`Button`]). The host
    /// answers with a notice to the same conversation.
    Click(Click),
    /// The newest `limit` messages of a conversation, both ways, oldest
    /// first, as stored in its sessions (web chat shows them on connect).
    History {
        to: Address,
        limit: usize,
        reply: oneshot::Sender<Vec<HistoryItem>>,
    },
    /// The conversations this channel has (web chat lists them when a user
    /// has several), newest activity first.
    Conversations {
        channel_type: String,
        reply: oneshot::Sender<Vec<ConversationItem>>,
    },
    /// A user asked to stop the agent's turn in this conversation (web
    /// chat's Stop button, `pinch chat`'s Ctrl+C while it works). The host
    /// cancels the messages of this conversation the runner holds.
    Stop {
        to: Address,
        sender: String,
    },
    /// Whether `user` (without the `<channel>:` prefix) is someone pinch
    /// knows: an owner or admin, or a member of an agent group. Adapters
    /// that are invited into conversations (Matrix) join only for them.
    Known {
        channel_type: String,
        user: String,
        reply: oneshot::Sender<bool>,
    },
    /// A host notice the adapter needs sent (stored first, sent when its
    /// channel can take it), e.g. WhatsApp Web's "logged out: link again"
    /// to the owner's `pinch chat`.
    Notice {
        to: Address,
        text: String,
    },
}

/// What the agent is doing in a conversation right now, as the host knows
/// it (decision 0048). Advisory and lossy: never stored, never a reply; a
/// missed one changes nothing the final reply row does not fix.
#[derive(Clone, Debug, PartialEq)]
pub enum Live {
    /// The agent is working on the message `reply_to` (its platform
    /// message id): `state` says at what (`thinking`, `running web_fetch`),
    /// since `since_ms` (epoch ms, when the turn started).
    Working {
        reply_to: Option<String>,
        state: String,
        since_ms: i64,
    },
    /// The reply to `reply_to` so far, as the model streams it: the whole
    /// text, of which `text[..same]` is what the previous draft showed
    /// (`same == 0`: it starts over, e.g. at the model's next step).
    Draft {
        reply_to: Option<String>,
        text: std::sync::Arc<str>,
        same: usize,
    },
    /// The turn on `reply_to` is over (its reply, if any, was delivered
    /// before this) or abandoned (the runner died, the user stopped it):
    /// drop its draft and indicator.
    Idle { reply_to: Option<String> },
}

/// One message of a conversation's history.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct HistoryItem {
    /// The platform message id (inbound) or the outbound row id (as
    /// delivered; edits and reactions name it).
    pub id: String,
    /// `user` (a message to pinch) or `agent` (a reply).
    pub from: String,
    pub sender: Option<String>,
    pub text: String,
    /// Stored UTC time.
    pub at: String,
    /// Names of the files that came with it.
    pub files: Vec<String>,
    /// A question still waiting for its answer: its buttons, pressable
    /// as when it was sent.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub buttons: Vec<HistoryButton>,
    /// A question's answer (the chosen option's label), once answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answer: Option<String>,
    /// A user's correction of their message with this id (web chat shows
    /// it in place of that message, marked edited).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub edit_of: Option<String>,
    /// A message held until the owner approves its sender or conversation
    /// (not failed, not yet with any agent).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub held: bool,
}

/// A button of a waiting question in the history (as [`Button`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HistoryButton {
    pub label: String,
    pub callback: String,
}

/// One conversation of a channel, for a list of them.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ConversationItem {
    pub platform_id: String,
    pub name: Option<String>,
    /// Stored UTC time of the newest activity of its sessions.
    pub last_active: Option<String>,
}

/// A button press, as the platform reported it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Click {
    pub channel_type: String,
    pub platform_id: String,
    pub thread_id: Option<String>,
    /// The platform's user id (without the `<channel>:` prefix).
    pub user_id: String,
    /// The button's callback data, as the host set it (≤ 64 bytes).
    pub callback: String,
}

/// A button under a message. `callback` is opaque to the adapter and at
/// most [`MAX_CALLBACK`] bytes (Telegram's limit, lesson 30).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Button {
    pub label: String,
    pub callback: String,
}

/// The longest callback any platform accepts (Telegram: 64 bytes).
pub const MAX_CALLBACK: usize = 64;

/// Where a message goes on a platform.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Address {
    pub channel_type: String,
    pub platform_id: String,
    pub thread_id: Option<String>,
}

/// One outgoing message.
#[derive(Clone, Debug, PartialEq)]
pub struct Outgoing {
    /// The `messages_out` id (idempotency key where the platform has one).
    pub id: String,
    pub text: String,
    /// The platform message id of the inbound message this answers.
    pub in_reply_to: Option<String>,
    /// Buttons to show under the text (adapters without buttons show the
    /// labels as a numbered list and take the choice some other way).
    pub buttons: Vec<Button>,
    /// Files to attach (only sent to adapters with `files`; others get a
    /// "[files: …]" line in the text instead).
    pub files: Vec<OutFile>,
}

/// A file the host checked (plain name, no symlinks, inside the session's
/// outbox, size capped) and holds open for the duration of one
/// [`Channel::deliver`] call. `path` names that open file
/// (`/proc/self/fd/N`), so an agent swapping the outbox entry afterwards
/// changes nothing; it is valid only during the call: an adapter that
/// serves the file later copies it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutFile {
    /// The name to show (a plain file name).
    pub name: String,
    pub path: PathBuf,
    pub size: u64,
}

/// What an adapter can do; the host degrades to text where it cannot.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Capabilities {
    pub threads: bool,
    pub edit: bool,
    pub reactions: bool,
    pub buttons: bool,
    pub typing: bool,
    pub files: bool,
    pub open_dm: bool,
    pub max_text: usize,
}

/// Delivery failures, grouped by what the host does next.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DeliverError {
    /// Nobody to deliver to right now (no CLI client): no attempt is used;
    /// delivery resumes on [`ChannelEvent::Available`].
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// May work later (timeouts, 429, 5xx): counts an attempt.
    #[error("retryable: {0}")]
    Retryable(String),
    /// Will never work (bad address, too large): fail the row.
    #[error("permanent: {0}")]
    Permanent(String),
}

/// The adapter trait (SPEC §9.1).
pub trait Channel: Send + Sync + 'static {
    fn channel_type(&self) -> &'static str;
    fn capabilities(&self) -> Capabilities;
    /// Delivers one message; returns the platform message id.
    fn deliver<'a>(
        &'a self,
        to: &'a Address,
        msg: &'a Outgoing,
    ) -> BoxFuture<'a, Result<String, DeliverError>>;
    /// Tells the conversation that these inbound platform message ids are
    /// fully handled (answered and delivered). Adapters with no use for it
    /// ignore it; the CLI uses it so a scripted `pinch chat` knows when to exit.
    fn settled(&self, _to: &Address, _platform_message_ids: &[String]) {}
    /// [`Channel::settled`], saying which of them failed (the agent could
    /// not answer: its provider failed, or the message was set aside).
    fn settled_with(&self, to: &Address, platform_message_ids: &[String], _failed: &[String]) {
        self.settled(to, platform_message_ids)
    }
    /// Stops accepting (the host is shutting down); idempotent.
    fn close(&self) {}
    /// A short host notice to a conversation (not an agent reply).
    fn notice<'a>(
        &'a self,
        to: &'a Address,
        text: &'a str,
    ) -> BoxFuture<'a, Result<(), DeliverError>>;
    /// The direct-message conversation (`platform_id`) with a user of this
    /// platform (`user` without the `<channel>:` prefix), opening it if the
    /// platform needs that. `Ok(None)`: this adapter cannot reach the user
    /// privately. Used to send approval cards (SPEC §7.2).
    fn open_dm<'a>(
        &'a self,
        _user: &'a str,
    ) -> BoxFuture<'a, Result<Option<String>, DeliverError>> {
        Box::pin(async { Ok(None) })
    }
    /// Replaces the text of a message this adapter delivered earlier
    /// (`platform_message_id` as [`Channel::deliver`] returned it). Called
    /// only when `capabilities().edit`; others get a correction message.
    fn edit<'a>(
        &'a self,
        _to: &'a Address,
        _platform_message_id: &'a str,
        _text: &'a str,
    ) -> BoxFuture<'a, Result<(), DeliverError>> {
        Box::pin(async {
            Err(DeliverError::Permanent(
                "this channel cannot edit messages".into(),
            ))
        })
    }
    /// Adds a reaction to a message (one delivered or one received).
    /// Called only when `capabilities().reactions`; others drop reactions.
    fn react<'a>(
        &'a self,
        _to: &'a Address,
        _platform_message_id: &'a str,
        _emoji: &'a str,
    ) -> BoxFuture<'a, Result<(), DeliverError>> {
        Box::pin(async {
            Err(DeliverError::Permanent(
                "this channel has no reactions".into(),
            ))
        })
    }
    /// Shows what the agent is doing, or its reply as it streams
    /// ([`Live`]). Best effort: an adapter without a live view ignores it.
    fn live<'a>(&'a self, _to: &'a Address, _live: &'a Live) -> BoxFuture<'a, ()> {
        Box::pin(async {})
    }
    /// Shows "typing…" in a conversation for a few seconds. Called only
    /// when `capabilities().typing`; best effort.
    fn typing<'a>(&'a self, _to: &'a Address) -> BoxFuture<'a, Result<(), DeliverError>> {
        Box::pin(async { Ok(()) })
    }
}

/// The variables a channel's helper program (signal-cli, the WhatsApp
/// bridge) is given from pinch's environment: what a program needs to run
/// and reach the network, never the other channels' tokens or the model
/// keys pinch holds (the helper reads hostile input and runs third-party
/// code).
pub const HELPER_ENV: &[&str] = &[
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "LANG",
    "LC_ALL",
    "LC_CTYPE",
    "TZ",
    "TMPDIR",
    "XDG_CONFIG_HOME",
    "XDG_DATA_HOME",
    "XDG_CACHE_HOME",
    "XDG_RUNTIME_DIR",
    "JAVA_HOME",
    "JAVA_OPTS",
    "NODE_PATH",
    "NODE_EXTRA_CA_CERTS",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "ALL_PROXY",
    "all_proxy",
];

/// Clears `cmd`'s environment but for [`HELPER_ENV`].
pub fn helper_env(cmd: &mut std::process::Command) {
    cmd.env_clear();
    for k in HELPER_ENV {
        if let Some(v) = std::env::var_os(k) {
            cmd.env(k, v);
        }
    }
}

/// Replaces `path` with `body` as a channel's private state file: a new
/// 0600 file beside it, synced, renamed over it, the folder synced (the
/// email channel's mark, WhatsApp's window).
pub fn write_private(path: &std::path::Path, body: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut name = path.file_name().unwrap_or_default().to_owned();
    name.push(".tmp");
    let tmp = path.with_file_name(name);
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(body)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(d) = path.parent().and_then(|d| std::fs::File::open(d).ok()) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Runs an adapter call, turning a panic inside it into a permanent
/// failure of that one call (logged with the adapter's name): an adapter's
/// bug must fail the message it was sending, not kill the task that
/// delivers every later one (the session's delivery, the notice queue).
pub async fn guarded<T>(
    channel_type: &str,
    call: BoxFuture<'_, Result<T, DeliverError>>,
) -> Result<T, DeliverError> {
    match (Caught { inner: call }).await {
        Ok(r) => r,
        Err(why) => {
            tracing::error!(
                channel = channel_type,
                "the {channel_type} adapter panicked ({why}); this message failed, later ones go on"
            );
            Err(DeliverError::Permanent(format!(
                "the {channel_type} adapter failed inside ({why}); this is a bug in pinch"
            )))
        }
    }
}

/// A future whose panic is caught at each poll.
struct Caught<'a, T> {
    inner: BoxFuture<'a, T>,
}

impl<T> Future for Caught<'_, T> {
    type Output = Result<T, String>;
    fn poll(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let inner = self.inner.as_mut();
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| inner.poll(cx))) {
            Ok(std::task::Poll::Pending) => std::task::Poll::Pending,
            Ok(std::task::Poll::Ready(v)) => std::task::Poll::Ready(Ok(v)),
            Err(p) => std::task::Poll::Ready(Err(p
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic".into()))),
        }
    }
}

/// Text for a channel without buttons: the labels as a numbered list the
/// user answers by sending the number (SPEC §9.1 fallback).
pub fn numbered_fallback(text: &str, buttons: &[Button]) -> String {
    let mut out = text.to_owned();
    for (i, b) in buttons.iter().enumerate() {
        out.push_str(&format!("\n{}. {}", i + 1, b.label));
    }
    if !buttons.is_empty() {
        out.push_str("\n(reply with the number of your choice)");
    }
    out
}

#[cfg(test)]
mod guard_tests {
    use super::*;

    #[test]
    fn a_helper_program_gets_only_the_listed_variables() {
        // The test's own environment (CARGO_*, RUST_*) must not pass, nor
        // a token set for this child.
        #[allow(clippy::disallowed_methods)]
        let mut c = std::process::Command::new("env");
        c.env("PINCH_TEST_CHANNEL_TOKEN", "secret");
        super::helper_env(&mut c);
        let out = c.output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success() && text.contains("PATH="), "{text}");
        for line in text.lines() {
            let k = line.split('=').next().unwrap_or_default();
            assert!(super::HELPER_ENV.contains(&k), "{k} was passed");
        }
    }

    #[tokio::test]
    async fn a_panicking_adapter_call_fails_that_call_only() {
        let bad: BoxFuture<'_, Result<String, DeliverError>> = Box::pin(async {
            tokio::task::yield_now().await;
            let subject = "Привет";
            Ok(subject[..3].to_owned())
        });
        let e = guarded("email", bad).await.unwrap_err();
        assert!(
            matches!(&e, DeliverError::Permanent(m) if m.contains("the email adapter failed inside") && m.contains("char boundary")),
            "{e}"
        );
        let good: BoxFuture<'_, Result<u8, DeliverError>> = Box::pin(async { Ok(7) });
        assert_eq!(guarded("email", good).await.unwrap(), 7);
    }
}
