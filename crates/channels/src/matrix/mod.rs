//! Matrix (decision 0053): a thin client of the client-server API on
//! `reqwest`, like the other platforms (decision 0018). No end-to-end
//! encryption: an encrypted event is answered, once per room, by a notice
//! saying pinch cannot read it (and a warning in the log).
//!
//! Inbound: `/sync` long-poll with an inline filter (messages, encrypted
//! events and memberships; no presence, no account data). Every message of
//! a batch is handed to the host, and the batch's `next_batch` token saved
//! (`<data>/channels/matrix/state.json`, 0600) only once each is acked as
//! stored; a failure syncs the same batch again, and the event id (the
//! message id) makes a repeat one row. On its first start the channel
//! skips the timeline (the rooms' history is not work for the agent), and
//! in a room it has just joined it skips what came before its join.
//!
//! Invites: the host says whether the inviter is a user pinch knows (an
//! owner, an admin, a member of an agent group: the sender policy of
//! decision 0053); pinch joins for them and rejects (leaves) the others,
//! logging why.
//!
//! Ids: room → `platform_id`, `m.thread` root → `thread_id`, event id →
//! message id, user id → sender id. A room of two members is a direct
//! conversation (every message addressed); in larger rooms a message is
//! addressed when it mentions pinch (`m.mentions`, or a link to pinch in
//! older clients' formatting, never a text match).
//!
//! Outbound: `PUT /rooms/{room}/send/{type}/{txn}` with a transaction id
//! made from the outbound row id (a retried send is the same event),
//! replies (`m.in_reply_to`), threads, edits (`m.replace`), reactions
//! (`m.annotation`), typing, files uploaded to the media repository.
//! Inbound files through authenticated media, capped.
//!
//! The access token is read from the host's environment and sent only as
//! `Authorization: Bearer`; errors have it removed, it is never logged.

mod api;
mod config;
pub mod payload;
mod sync;

pub use config::{MatrixSection, KIND};

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::os::unix::fs::DirBuilderExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::{mpsc, Notify};

use crate::platform::{split_text, Secret};
use crate::{Address, BoxFuture, Capabilities, Channel, ChannelEvent, DeliverError, Outgoing};

pub const CHANNEL_TYPE: &str = "matrix";
/// The longest text pinch sends as one message (characters); longer
/// replies are split into events of at most [`MAX_EVENT_TEXT`] bytes.
pub const MAX_TEXT: usize = 16_000;
/// Homeservers refuse events over 64 KiB; the body is kept well under.
const MAX_EVENT_TEXT: usize = 32_000;
/// How long an inbound message may wait for the host's commit.
const ACK_WAIT: Duration = Duration::from_secs(60);
/// Rooms and direct conversations remembered.
const MAX_REMEMBERED: usize = 1000;

#[derive(Clone, Debug)]
pub struct MatrixConfig {
    /// `https://matrix.example.org` (no trailing slash).
    pub homeserver: String,
    /// pinch's user id, `@pinch:example.org`.
    pub user_id: String,
    pub token: Secret,
    /// The stall watchdog's limit; the long-poll's timeout is under it.
    pub stall: Duration,
    pub data_dir: PathBuf,
}

impl MatrixConfig {
    fn poll_timeout(&self) -> Duration {
        Duration::from_secs((self.stall.as_secs() / 2).clamp(1, 30))
    }
}

/// What the channel keeps across restarts.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct State {
    /// The account the token belongs to: another one starts afresh.
    pub user_id: Option<String>,
    /// Where the next `/sync` starts: moved only after every message
    /// before it is committed.
    pub next_batch: Option<String>,
    /// Rooms already told that pinch cannot read encrypted messages.
    #[serde(default)]
    pub encrypted_told: VecDeque<String>,
    /// Direct rooms pinch opened, by user.
    #[serde(default)]
    pub dms: BTreeMap<String, String>,
}

pub struct MatrixChannel {
    cfg: MatrixConfig,
    client: Mutex<reqwest::Client>,
    events: mpsc::Sender<ChannelEvent>,
    state: Mutex<State>,
    state_path: PathBuf,
    /// Joined members per room, as the last batch or lookup said.
    members: Mutex<HashMap<String, u64>>,
    closed: AtomicBool,
    wake: Notify,
}

impl MatrixChannel {
    /// Builds the adapter and starts its sync loop; must be called inside
    /// the tokio runtime.
    pub fn start(
        cfg: MatrixConfig,
        events: mpsc::Sender<ChannelEvent>,
    ) -> Result<Arc<MatrixChannel>, String> {
        let state_path = cfg.data_dir.join("channels/matrix/state.json");
        let mut state: State = match std::fs::read(&state_path) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| {
                format!(
                    "{} is not valid ({e}); move it aside to start again from the newest messages",
                    state_path.display()
                )
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => State::default(),
            Err(e) => return Err(format!("reading {}: {e}", state_path.display())),
        };
        if state.user_id.as_deref() != Some(cfg.user_id.as_str()) {
            state = State {
                user_id: Some(cfg.user_id.clone()),
                ..Default::default()
            };
        }
        let ch = Arc::new(MatrixChannel {
            client: Mutex::new(crate::platform::client(crate::platform::SEND_TIMEOUT)?),
            cfg,
            events,
            state: Mutex::new(state),
            state_path,
            members: Mutex::new(HashMap::new()),
            closed: AtomicBool::new(false),
            wake: Notify::new(),
        });
        let run = ch.clone();
        tokio::spawn(async move { run.sync_loop().await });
        Ok(ch)
    }

    fn closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    /// Changes the state and saves it (0600, atomically); a refused write
    /// is logged: its cost is a repeat after a restart, stored once.
    fn update(&self, f: impl FnOnce(&mut State)) {
        let body = {
            let mut s = self.state.lock().unwrap();
            f(&mut s);
            serde_json::to_vec(&*s).expect("plain data serialises")
        };
        let save = || -> std::io::Result<()> {
            if let Some(dir) = self.state_path.parent() {
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(dir)?;
            }
            crate::write_private(&self.state_path, &body)
        };
        if let Err(e) = save() {
            tracing::warn!("matrix: saving {}: {e}", self.state_path.display());
        }
    }

    async fn send(&self, to: &Address, msg: &Outgoing) -> Result<String, DeliverError> {
        let mut first = None;
        let parts = split_text(&msg.text, MAX_EVENT_TEXT, char::len_utf8);
        for (i, p) in parts.into_iter().enumerate() {
            if p.is_empty() {
                continue;
            }
            let mut content = json!({"msgtype": "m.text", "body": p});
            let reply = if i == 0 {
                msg.in_reply_to.as_deref()
            } else {
                None
            };
            relate(&mut content, to, reply);
            let id = self
                .send_event(
                    &to.platform_id,
                    "m.room.message",
                    &format!("{}.{i}", msg.id),
                    content,
                )
                .await?;
            first = first.or(Some(id));
        }
        for (i, f) in msg.files.iter().enumerate() {
            let data = tokio::fs::read(&f.path)
                .await
                .map_err(|e| DeliverError::Retryable(format!("reading {}: {e}", f.name)))?;
            let mime = api::mime_of(&f.name);
            let size = data.len();
            let uri = self.upload(&f.name, mime, data).await?;
            let mut content = json!({"msgtype": api::msgtype_of(mime), "body": f.name,
                "filename": f.name, "url": uri, "info": {"size": size, "mimetype": mime}});
            relate(&mut content, to, None);
            let id = self
                .send_event(
                    &to.platform_id,
                    "m.room.message",
                    &format!("{}.f{i}", msg.id),
                    content,
                )
                .await?;
            first = first.or(Some(id));
        }
        first.ok_or_else(|| DeliverError::Permanent("nothing to send: no text and no files".into()))
    }
}

/// Relates a message to its thread (`m.thread`, with the reply fallback
/// clients without threads show) and to the message it answers.
fn relate(content: &mut Value, to: &Address, reply_to: Option<&str>) {
    let reply_to = reply_to.filter(|r| r.starts_with('$'));
    if let Some(root) = to.thread_id.as_deref() {
        content["m.relates_to"] = json!({"rel_type": "m.thread", "event_id": root,
            "is_falling_back": reply_to.is_none(),
            "m.in_reply_to": {"event_id": reply_to.unwrap_or(root)}});
    } else if let Some(r) = reply_to {
        content["m.relates_to"] = json!({"m.in_reply_to": {"event_id": r}});
    }
}

/// A transaction id for a change that has no row of its own (an edit, a
/// reaction): the same change, retried, is the same transaction.
fn txn_of(kind: &str, parts: &[&str]) -> String {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for p in parts {
        ctx.update(p.as_bytes());
        ctx.update(&[0]);
    }
    format!("{kind}.{}", &crate::http::hex(ctx.finish().as_ref())[..32])
}

/// An event id pinch may name in a relation.
fn target(id: &str) -> Result<&str, DeliverError> {
    if id.starts_with('$') && id.len() <= 255 {
        Ok(id)
    } else {
        Err(DeliverError::Permanent(format!(
            "{id:?} is not a Matrix event id"
        )))
    }
}

/// `pinch doctor`'s check: who the token belongs to (`whoami`), which
/// must be the configured user.
pub async fn probe(cfg: &MatrixConfig) -> Result<String, String> {
    let client = crate::platform::client(crate::platform::SEND_TIMEOUT)?;
    let req = client.get(format!(
        "{}/_matrix/client/v3/account/whoami",
        cfg.homeserver
    ));
    let v = api::finish(&cfg.token.0, "whoami", req).await.map_err(|e| {
        let e = match e {
            DeliverError::Retryable(m) | DeliverError::Permanent(m) | DeliverError::Unavailable(m) => m,
        };
        if e.contains("M_UNKNOWN_TOKEN") || e.contains("M_MISSING_TOKEN") {
            format!("{e} (the homeserver refused the access token: check the variable [matrix] token_env names)")
        } else {
            format!("{e} (check [matrix] homeserver)")
        }
    })?;
    let who = v["user_id"].as_str().unwrap_or_default();
    if who != cfg.user_id {
        return Err(format!(
            "the access token belongs to {who:?}, not to [matrix] user_id {:?}",
            cfg.user_id
        ));
    }
    let device = v["device_id"].as_str().unwrap_or("no device");
    Ok(format!(
        "{} answers; logged in as {who} ({device})",
        cfg.homeserver
    ))
}

impl Channel for MatrixChannel {
    fn channel_type(&self) -> &'static str {
        CHANNEL_TYPE
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            threads: true,
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
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos();
            let body = split_text(text, MAX_EVENT_TEXT, char::len_utf8).remove(0);
            let mut content = json!({"msgtype": "m.notice", "body": body});
            relate(&mut content, to, None);
            self.send_event(
                &to.platform_id,
                "m.room.message",
                &format!("notice.{nanos}"),
                content,
            )
            .await
            .map(|_| ())
        })
    }

    fn open_dm<'a>(&'a self, user: &'a str) -> BoxFuture<'a, Result<Option<String>, DeliverError>> {
        Box::pin(async move {
            if !user.starts_with('@') || !user.contains(':') || user == self.cfg.user_id {
                return Ok(None);
            }
            if let Some(room) = self.state.lock().unwrap().dms.get(user).cloned() {
                return Ok(Some(room));
            }
            let body =
                json!({"is_direct": true, "invite": [user], "preset": "trusted_private_chat"});
            let v = self
                .call(
                    reqwest::Method::POST,
                    "/_matrix/client/v3/createRoom",
                    Some(body),
                )
                .await?;
            let room = v["room_id"].as_str().map(str::to_owned).ok_or_else(|| {
                DeliverError::Retryable("matrix: createRoom answered without a room_id".into())
            })?;
            self.update(|s| {
                if s.dms.len() >= MAX_REMEMBERED {
                    s.dms.clear();
                }
                s.dms.insert(user.to_owned(), room.clone());
            });
            Ok(Some(room))
        })
    }

    fn edit<'a>(
        &'a self,
        to: &'a Address,
        platform_message_id: &'a str,
        text: &'a str,
    ) -> BoxFuture<'a, Result<(), DeliverError>> {
        Box::pin(async move {
            let id = target(platform_message_id)?;
            let text = split_text(text, MAX_EVENT_TEXT / 2, char::len_utf8).remove(0);
            let content = json!({"msgtype": "m.text", "body": format!("* {text}"),
                "m.new_content": {"msgtype": "m.text", "body": text},
                "m.relates_to": {"rel_type": "m.replace", "event_id": id}});
            let txn = txn_of("edit", &[&to.platform_id, id, &text]);
            self.send_event(&to.platform_id, "m.room.message", &txn, content)
                .await
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
            let id = target(platform_message_id)?;
            let content =
                json!({"m.relates_to": {"rel_type": "m.annotation", "event_id": id, "key": emoji}});
            let txn = txn_of("react", &[&to.platform_id, id, emoji]);
            self.send_event(&to.platform_id, "m.reaction", &txn, content)
                .await
                .map(|_| ())
        })
    }

    fn typing<'a>(&'a self, to: &'a Address) -> BoxFuture<'a, Result<(), DeliverError>> {
        Box::pin(async move {
            let path = format!(
                "/_matrix/client/v3/rooms/{}/typing/{}",
                crate::platform::url_segment(&to.platform_id),
                crate::platform::url_segment(&self.cfg.user_id)
            );
            self.call(
                reqwest::Method::PUT,
                &path,
                Some(json!({"typing": true, "timeout": 30000})),
            )
            .await
            .map(|_| ())
        })
    }

    fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        self.wake.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relations_follow_the_thread_and_the_reply() {
        let to = |t: Option<&str>| Address {
            channel_type: CHANNEL_TYPE.into(),
            platform_id: "!r:x".into(),
            thread_id: t.map(str::to_owned),
        };
        let mut c = json!({});
        relate(&mut c, &to(Some("$root")), Some("$m"));
        assert_eq!(c["m.relates_to"]["rel_type"], "m.thread");
        assert_eq!(c["m.relates_to"]["event_id"], "$root");
        assert_eq!(c["m.relates_to"]["m.in_reply_to"]["event_id"], "$m");
        assert_eq!(c["m.relates_to"]["is_falling_back"], false);
        let mut c = json!({});
        relate(&mut c, &to(None), Some("$m"));
        assert_eq!(
            c["m.relates_to"],
            json!({"m.in_reply_to": {"event_id": "$m"}})
        );
        let mut c = json!({});
        relate(&mut c, &to(None), Some("notice.1"));
        assert!(c.get("m.relates_to").is_none(), "only event ids are named");
        assert!(target("$e").is_ok() && target("e").is_err());
        assert_eq!(txn_of("edit", &["a", "b"]), txn_of("edit", &["a", "b"]));
        assert_ne!(txn_of("edit", &["a", "b"]), txn_of("edit", &["ab", ""]));
    }
}
