//! Signal through signal-cli's JSON-RPC daemon (decision 0054): the bridge
//! every self-hosted Signal bot uses, since Signal has no bot API. pinch
//! either connects to a daemon already running (`socket` or `tcp`) or
//! starts and supervises one (`signal_cli`, [`daemon`]); it speaks
//! JSON-RPC 2.0, one JSON object per line ([`rpc`]), as the account
//! `[signal] account` (multi-account calls carry `"account"`).
//!
//! Inbound: `subscribeReceive` (the daemon pinch starts runs with
//! `--receive-mode manual`, so nothing is taken from Signal's server while
//! pinch is not listening); each `receive` notification that holds a
//! message for the agent is journalled to disk ([`spool`]) before the host
//! sees it, and leaves the journal only after the host's commit; then a
//! read receipt goes back (`sendReceipt`). Messages are keyed by author
//! and sent timestamp ([`envelope`]), so a repeat is one row. Files are
//! read from signal-cli's attachments folder by an id checked to be a
//! plain file name, without following links, capped.
//!
//! Outbound: `send` (to `recipient` or `groupId`; a reply quotes the
//! message it answers with `quoteAuthor`/`quoteTimestamp`; files copied
//! into a folder of pinch's for signal-cli to read), `send` with
//! `editTimestamp` for edits, `sendReaction`, `sendTyping`. Signal has no
//! idempotency key: the timestamp of each row sent is recorded so a retry
//! of a row that went out returns it instead of sending it again.

mod config;
pub mod daemon;
pub mod envelope;
mod inbound;
pub mod rpc;
#[cfg(test)]
mod socket_tests;
mod spool;

pub use config::{link, probe, OneOff, SignalSection, KIND};

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::{mpsc, Notify};

use crate::platform::{Backoff, SEND_TIMEOUT};
use crate::{Address, BoxFuture, Capabilities, Channel, ChannelEvent, DeliverError, Outgoing};

use rpc::{CallError, Endpoint, Rpc};

pub const CHANNEL_TYPE: &str = "signal";
/// One message's text at most (characters); longer replies are split.
pub const MAX_TEXT: usize = 6000;
/// How long an inbound message may wait for the host's commit.
const ACK_WAIT: Duration = Duration::from_secs(60);
/// A send with files may take a while (signal-cli uploads them first).
const FILE_SEND_TIMEOUT: Duration = Duration::from_secs(300);

#[derive(Clone, Debug)]
pub struct SignalConfig {
    /// The account (E.164 number) pinch is.
    pub account: String,
    pub endpoint: Endpoint,
    /// Set when pinch starts signal-cli itself.
    pub launch: Option<daemon::Launch>,
    /// signal-cli's attachments folder (`None`: files are not readable
    /// here; the agent is told their names and sizes).
    pub attachments_dir: Option<PathBuf>,
    /// `<data>/channels/signal`.
    pub state_dir: PathBuf,
    pub stall: Duration,
    pub read_receipts: bool,
}

pub struct SignalChannel {
    cfg: SignalConfig,
    events: mpsc::Sender<ChannelEvent>,
    rpc: Mutex<Option<Arc<Rpc>>>,
    spool: Arc<spool::Spool>,
    sent: spool::Sent,
    closed: AtomicBool,
    /// A message was journalled.
    wake: Arc<Notify>,
    /// The channel is closing.
    stop: Arc<Notify>,
    outbox_n: AtomicU64,
}

/// At most `max` characters of `s`.
pub(crate) fn clip(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => s[..i].to_owned(),
        None => s.to_owned(),
    }
}

/// Where a conversation's messages go: `{"recipient": [...]}` or
/// `{"groupId": ...}`, with the account.
fn target(account: &str, to: &Address) -> Value {
    match to.platform_id.strip_prefix(envelope::GROUP) {
        Some(g) => json!({"account": account, "groupId": g}),
        None => json!({"account": account, "recipient": [to.platform_id]}),
    }
}

/// A failed call as the host sorts it.
fn classify(e: CallError) -> DeliverError {
    match e {
        CallError::Link(m) => DeliverError::Retryable(m),
        // Invalid request or params, unknown method, a user error (-1),
        // an untrusted identity (-4): sending again will not help.
        CallError::Rpc { code, message }
            if matches!(code, -32700 | -32600 | -32601 | -32602 | -1 | -4) =>
        {
            DeliverError::Permanent(format!("signal-cli: {message} ({code})"))
        }
        e => DeliverError::Retryable(e.to_string()),
    }
}

/// The per-recipient results of a send: fine if any got it; otherwise
/// why not (an unregistered or untrusted recipient is permanent).
fn send_outcome(v: &Value) -> Result<u64, DeliverError> {
    let ts = v.get("timestamp").and_then(Value::as_u64).ok_or_else(|| {
        DeliverError::Retryable(format!(
            "signal-cli's answer has no timestamp: {}",
            clip(&v.to_string(), 200)
        ))
    })?;
    let results = v.get("results").and_then(Value::as_array);
    let Some(results) = results.filter(|r| !r.is_empty()) else {
        return Ok(ts);
    };
    let types: Vec<&str> = results
        .iter()
        .map(|r| r.get("type").and_then(Value::as_str).unwrap_or("SUCCESS"))
        .collect();
    if types.contains(&"SUCCESS") {
        return Ok(ts);
    }
    let t = types[0];
    let why = format!("Signal refused the message: {t}");
    Err(match t {
        "UNREGISTERED_FAILURE" | "IDENTITY_FAILURE" => DeliverError::Permanent(why),
        _ => DeliverError::Retryable(why),
    })
}

impl SignalChannel {
    /// Builds the adapter and starts its loops (and signal-cli, when pinch
    /// runs it); must be called inside the tokio runtime.
    pub fn start(
        cfg: SignalConfig,
        events: mpsc::Sender<ChannelEvent>,
    ) -> Result<Arc<SignalChannel>, String> {
        let e = |what: &str, err: std::io::Error| format!("[signal] {what}: {err}");
        spool::private_dir(&cfg.state_dir).map_err(|err| e("the state folder", err))?;
        let spool = spool::Spool::open(cfg.state_dir.join("inbox"))
            .map_err(|err| e("the inbound journal", err))?;
        let ch = Arc::new(SignalChannel {
            sent: spool::Sent::load(cfg.state_dir.join("sent.json")),
            spool: Arc::new(spool),
            cfg,
            events,
            rpc: Mutex::new(None),
            closed: AtomicBool::new(false),
            wake: Arc::new(Notify::new()),
            stop: Arc::new(Notify::new()),
            outbox_n: AtomicU64::new(0),
        });
        if let Some(l) = ch.cfg.launch.clone() {
            let stop = ch.stop.clone();
            let weak = Arc::downgrade(&ch);
            tokio::spawn(daemon::supervise(l, stop, move || {
                weak.upgrade().is_none_or(|c| c.closed())
            }));
        }
        let run = ch.clone();
        tokio::spawn(async move { run.connect_loop().await });
        let run = ch.clone();
        tokio::spawn(async move { run.inbox_loop().await });
        Ok(ch)
    }

    fn closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    fn rpc(&self) -> Result<Arc<Rpc>, DeliverError> {
        self.rpc
            .lock()
            .unwrap()
            .clone()
            .filter(|r| r.alive())
            .ok_or_else(|| DeliverError::Retryable("signal-cli is not connected".into()))
    }

    async fn call(
        &self,
        method: &str,
        params: Value,
        limit: Duration,
    ) -> Result<Value, DeliverError> {
        self.rpc()?
            .call(method, params, limit)
            .await
            .map_err(classify)
    }

    /// Connections to the daemon, one after another, the shared backoff
    /// between failures.
    async fn connect_loop(self: Arc<Self>) {
        let mut backoff = Backoff::default();
        while !self.closed() {
            if let Err(e) = self.session(&mut backoff).await {
                let d = backoff.failed();
                tracing::warn!(
                    "signal: {} ({e}); connecting again in {d:?}",
                    self.cfg.endpoint
                );
                tokio::select! {
                    _ = tokio::time::sleep(d) => {}
                    _ = self.stop.notified() => {}
                }
            }
        }
    }

    /// One connection: subscribe, then watch it until it ends or stalls
    /// (an idle daemon sends nothing, so it is asked its `version` now and
    /// then; any line counts as a sign of life).
    async fn session(&self, backoff: &mut Backoff) -> Result<(), String> {
        let account = self.cfg.account.clone();
        let spool = self.spool.clone();
        let wake = self.wake.clone();
        let on_notify: rpc::OnNotify = Box::new(move |method, params| {
            if method != "receive" {
                return;
            }
            let Some((env, acc)) = envelope::unwrap(&params) else {
                return;
            };
            if acc.is_some_and(|a| a != account) {
                return;
            }
            match envelope::read(env, &account) {
                Err(why) => tracing::debug!("signal: envelope skipped: {why}"),
                Ok(_) => match spool.put(env) {
                    Ok(()) => wake.notify_one(),
                    Err(e) => tracing::error!(
                        "signal: a message could not be journalled and is lost: {e}"
                    ),
                },
            }
        });
        let limit = SEND_TIMEOUT.min(self.cfg.stall);
        let rpc = Rpc::connect(&self.cfg.endpoint, limit, self.cfg.stall, on_notify).await?;
        let sub = rpc
            .call(
                "subscribeReceive",
                json!({"account": self.cfg.account}),
                limit,
            )
            .await;
        if let Err(e) = sub {
            rpc.shut("subscribeReceive failed");
            return Err(match e {
                CallError::Rpc { code: -32602, .. } => format!("the account {} is not registered with this signal-cli; link it with `pinch channels signal link`", self.cfg.account),
                e => format!("subscribeReceive: {e}"),
            });
        }
        backoff.connected();
        tracing::info!(
            "signal: connected to signal-cli ({}), receiving for {}",
            self.cfg.endpoint,
            self.cfg.account
        );
        *self.rpc.lock().unwrap() = Some(rpc.clone());
        let ping_every = self.cfg.stall / 3;
        let mut last_ping = tokio::time::Instant::now();
        loop {
            tokio::select! {
                _ = rpc.closed() => return Err("the connection ended".into()),
                _ = self.stop.notified() => { rpc.shut("closing"); return Ok(()); }
                _ = tokio::time::sleep(rpc.watchdog.tick()) => {}
            }
            if self.closed() {
                rpc.shut("closing");
                return Ok(());
            }
            if rpc.watchdog.stalled() {
                rpc.shut("stalled");
                return Err(format!(
                    "no sign of life from signal-cli in {:?}",
                    self.cfg.stall
                ));
            }
            if last_ping.elapsed() >= ping_every {
                last_ping = tokio::time::Instant::now();
                let r = rpc.clone();
                tokio::spawn(async move {
                    let _ = r
                        .call(
                            "version",
                            Value::Null,
                            ping_every.max(Duration::from_millis(100)),
                        )
                        .await;
                });
            }
        }
    }

    /// Copies the files to send into a folder of pinch's that signal-cli
    /// can read: `(folder, paths)`.
    fn stage(
        &self,
        files: &[crate::OutFile],
    ) -> Result<Option<(PathBuf, Vec<String>)>, DeliverError> {
        if files.is_empty() {
            return Ok(None);
        }
        let n = self.outbox_n.fetch_add(1, Ordering::SeqCst);
        let dir = self
            .cfg
            .state_dir
            .join("outbox")
            .join(format!("{}-{n}", std::process::id()));
        let fail = |e: std::io::Error| {
            DeliverError::Retryable(format!("staging a file for signal-cli: {e}"))
        };
        spool::private_dir(&dir).map_err(fail)?;
        let mut paths = Vec::new();
        for (i, f) in files.iter().enumerate() {
            let name: String = f.name.chars().filter(|c| *c != '/' && *c != '\0').collect();
            let name = if name.is_empty() || name.starts_with('.') {
                format!("file{i}")
            } else {
                name
            };
            let sub = dir.join(i.to_string());
            spool::private_dir(&sub).map_err(fail)?;
            let p = sub.join(name);
            std::fs::copy(&f.path, &p).map_err(fail)?;
            paths.push(p.to_string_lossy().into_owned());
        }
        Ok(Some((dir, paths)))
    }

    async fn send(&self, to: &Address, msg: &Outgoing) -> Result<String, DeliverError> {
        let me = &self.cfg.account;
        if let Some(ts) = self.sent.get(&msg.id) {
            tracing::info!(id = %msg.id, "signal: this reply went out before (timestamp {ts}); not sent again");
            return Ok(format!("{me}:{ts}"));
        }
        let text = crate::numbered_fallback(&msg.text, &msg.buttons);
        let parts = if text.is_empty() {
            vec![String::new()]
        } else {
            crate::platform::split_text(&text, MAX_TEXT, |_| 1)
        };
        let staged = self.stage(&msg.files)?;
        let mut first = None;
        let mut result = Ok(());
        for (i, part) in parts.iter().enumerate() {
            let mut p = target(me, to);
            if !part.is_empty() {
                p["message"] = json!(part);
            }
            if i == 0 {
                if let Some((author, ts)) = msg.in_reply_to.as_deref().and_then(envelope::split_id)
                {
                    p["quoteAuthor"] = json!(author);
                    p["quoteTimestamp"] = json!(ts);
                }
            }
            let mut limit = SEND_TIMEOUT;
            if i + 1 == parts.len() {
                if let Some((_, paths)) = &staged {
                    p["attachments"] = json!(paths);
                    limit = FILE_SEND_TIMEOUT;
                }
            }
            match self
                .call("send", p, limit)
                .await
                .and_then(|v| send_outcome(&v))
            {
                Ok(ts) => first = first.or(Some(ts)),
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        if let Some((dir, _)) = staged {
            let _ = std::fs::remove_dir_all(dir);
        }
        result?;
        let ts = first.ok_or_else(|| DeliverError::Permanent("nothing to send".into()))?;
        self.sent.put(&msg.id, ts);
        Ok(format!("{me}:{ts}"))
    }
}

impl Channel for SignalChannel {
    fn channel_type(&self) -> &'static str {
        CHANNEL_TYPE
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            threads: false,
            edit: true,
            reactions: true,
            buttons: false,
            typing: true,
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
        Box::pin(self.send(to, msg))
    }

    fn notice<'a>(
        &'a self,
        to: &'a Address,
        text: &'a str,
    ) -> BoxFuture<'a, Result<(), DeliverError>> {
        Box::pin(async move {
            let mut p = target(&self.cfg.account, to);
            p["message"] = json!(clip(text, MAX_TEXT));
            self.call("send", p, SEND_TIMEOUT)
                .await
                .and_then(|v| send_outcome(&v))
                .map(|_| ())
        })
    }

    fn open_dm<'a>(&'a self, user: &'a str) -> BoxFuture<'a, Result<Option<String>, DeliverError>> {
        // A user's id is their ACI or number: the DM is addressed by it.
        Box::pin(async move {
            Ok((!user.is_empty() && !user.starts_with(envelope::GROUP)).then(|| user.to_owned()))
        })
    }

    fn edit<'a>(
        &'a self,
        to: &'a Address,
        platform_message_id: &'a str,
        text: &'a str,
    ) -> BoxFuture<'a, Result<(), DeliverError>> {
        Box::pin(async move {
            let Some((_, ts)) = envelope::split_id(platform_message_id) else {
                return Err(DeliverError::Permanent(format!(
                    "not a Signal message id: {platform_message_id}"
                )));
            };
            let mut p = target(&self.cfg.account, to);
            p["message"] = json!(clip(text, MAX_TEXT));
            p["editTimestamp"] = json!(ts);
            self.call("send", p, SEND_TIMEOUT)
                .await
                .and_then(|v| send_outcome(&v))
                .map(|_| ())
        })
    }

    fn react<'a>(
        &'a self,
        to: &'a Address,
        platform_message_id: &'a str,
        emoji: &'a str,
    ) -> BoxFuture<'a, Result<(), DeliverError>> {
        Box::pin(async move {
            let Some((author, ts)) = envelope::split_id(platform_message_id) else {
                return Err(DeliverError::Permanent(format!(
                    "not a Signal message id: {platform_message_id}"
                )));
            };
            let mut p = target(&self.cfg.account, to);
            p["emoji"] = json!(emoji);
            p["targetAuthor"] = json!(author);
            p["targetTimestamp"] = json!(ts);
            self.call("sendReaction", p, SEND_TIMEOUT)
                .await
                .and_then(|v| send_outcome(&v))
                .map(|_| ())
        })
    }

    fn typing<'a>(&'a self, to: &'a Address) -> BoxFuture<'a, Result<(), DeliverError>> {
        Box::pin(async move {
            self.call("sendTyping", target(&self.cfg.account, to), SEND_TIMEOUT)
                .await
                .map(|_| ())
        })
    }

    fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        self.stop.notify_waiters();
        if let Some(r) = self.rpc.lock().unwrap().take() {
            r.shut("closing");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn send_results_sort_into_what_the_host_does_next() {
        assert_eq!(send_outcome(&json!({"timestamp": 5})).unwrap(), 5);
        let ok =
            json!({"timestamp": 5, "results": [{"type": "NETWORK_FAILURE"}, {"type": "SUCCESS"}]});
        assert_eq!(
            send_outcome(&ok).unwrap(),
            5,
            "a group where someone got it"
        );
        let gone = json!({"timestamp": 5, "results": [{"recipientAddress": {"number": "+1"}, "type": "UNREGISTERED_FAILURE"}]});
        assert!(matches!(
            send_outcome(&gone),
            Err(DeliverError::Permanent(_))
        ));
        let net = json!({"timestamp": 5, "results": [{"type": "NETWORK_FAILURE"}]});
        assert!(matches!(
            send_outcome(&net),
            Err(DeliverError::Retryable(_))
        ));
        assert!(matches!(
            send_outcome(&json!({})),
            Err(DeliverError::Retryable(_))
        ));
        assert!(matches!(
            classify(CallError::Rpc {
                code: -32602,
                message: "x".into()
            }),
            DeliverError::Permanent(_)
        ));
        assert!(matches!(
            classify(CallError::Rpc {
                code: -5,
                message: "rate".into()
            }),
            DeliverError::Retryable(_)
        ));
        assert!(matches!(
            classify(CallError::Link("gone".into())),
            DeliverError::Retryable(_)
        ));
    }

    #[test]
    fn a_group_is_addressed_by_its_id_and_a_person_as_a_recipient() {
        let a = |p: &str| Address {
            channel_type: CHANNEL_TYPE.into(),
            platform_id: p.into(),
            thread_id: None,
        };
        assert_eq!(
            target("+1", &a("group:abc=")),
            json!({"account": "+1", "groupId": "abc="})
        );
        assert_eq!(
            target("+1", &a("+2")),
            json!({"account": "+1", "recipient": ["+2"]})
        );
    }
}
