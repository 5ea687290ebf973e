//! The CLI channel: a Unix socket (`run/cli.sock`, mode 0600) speaking JSON
//! lines. `pinch chat` is its client.
//!
//! Client → host: `message{text, client_id, key}` (`key`, optional: the same
//! key twice is stored once, see [`ClientMsg::Message`]), `ack{id}` (a delivered message
//! was printed), `click{callback}`.
//! Host → client: `hello{user}`, `accepted{client_id, id, routed, note}`,
//! `rejected{client_id, error}`, `message{id, text, in_reply_to, buttons}`
//! (`buttons` = `[{label, callback}]`, left out when empty; a click sends the
//! callback back),
//! `settled{ids, failed}` (`failed`: those the agent could not answer,
//! left out when empty), `notice{text}`, `superseded`.
//!
//! One conversation (`platform_id = local`), one client at a time: a newer
//! client supersedes the older, which is told so. A delivery counts only
//! when the client acks the line, so a client that dies mid-reply loses
//! nothing: the reply goes to the next client. With no client connected a
//! delivery is `Unavailable` and resumes on connect.

use std::collections::HashMap;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::OwnedWriteHalf;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot};

use crate::{
    Ack, AckOutcome, Address, BoxFuture, Capabilities, Channel, ChannelEvent, DeliverError,
    InboundEvent, Outgoing,
};

pub const CHANNEL_TYPE: &str = "cli";
pub const PLATFORM_ID: &str = "local";
/// How long a delivery waits for the client's ack before counting a retry.
pub const CLIENT_ACK_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest accepted line from a client.
pub const MAX_LINE: usize = 1 << 20;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientMsg {
    Message {
        text: String,
        #[serde(default)]
        client_id: Option<String>,
        /// Makes the message idempotent: sent again with the same key (the
        /// client lost the host before it confirmed), it is stored once.
        /// 1..=64 of `A-Za-z0-9_-`, unique per message (e.g. a random run
        /// id and the line number).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        key: Option<String>,
    },
    Ack {
        id: String,
    },
    Click {
        callback: String,
    },
    /// Cancel the agent's turn (Ctrl+C in `pinch chat` while it works).
    Stop,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMsg {
    Hello {
        user: String,
        /// Whom the client talks to, in one line (`agent `main` · model
        /// …`), for `pinch chat`'s banner.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        about: Option<String>,
    },
    Accepted {
        #[serde(default)]
        client_id: Option<String>,
        id: String,
        routed: usize,
        #[serde(default)]
        note: Option<String>,
        /// With `routed == 0`: the host answered it itself or holds it
        /// for an approval (the note says which); not a failure.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        handled: bool,
    },
    Rejected {
        #[serde(default)]
        client_id: Option<String>,
        error: String,
    },
    Message {
        id: String,
        text: String,
        #[serde(default)]
        in_reply_to: Option<String>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        buttons: Vec<WireButton>,
    },
    Settled {
        ids: Vec<String>,
        /// Those of `ids` the agent could not answer (its provider failed,
        /// or the message was set aside): `pinch chat` exits non-zero.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        failed: Vec<String>,
    },
    Notice {
        text: String,
    },
    Superseded,
    /// The live view (decision 0048; advisory, never acked): what the
    /// agent does for the message `reply_to`, since `since_ms` (epoch ms).
    Working {
        #[serde(default)]
        reply_to: Option<String>,
        state: String,
        since_ms: i64,
    },
    /// The reply so far: `text` continues the draft at byte `at` (`0`:
    /// the draft starts over). The `Message` answering `reply_to` is the
    /// reply.
    Draft {
        #[serde(default)]
        reply_to: Option<String>,
        at: usize,
        text: String,
    },
    /// The turn on `reply_to` ended or was abandoned: drop its draft.
    Idle {
        #[serde(default)]
        reply_to: Option<String>,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireButton {
    pub label: String,
    pub callback: String,
}

impl ServerMsg {
    pub fn line(&self) -> String {
        let mut s = serde_json::to_string(self).expect("server messages serialise");
        s.push('\n');
        s
    }
}

/// A platform message id for a CLI message: random, because inbound rows
/// are keyed by it and a repeat across host restarts would be ignored as a
/// redelivery.
fn new_message_id(key: Option<&str>) -> String {
    if let Some(k) = key {
        // Checked by `valid_key`: a platform id that repeats when the
        // client sends the same message again, so it is stored once.
        return format!("cli-k-{k}");
    }
    use std::io::Read;
    let mut b = [0u8; 8];
    if std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .is_err()
    {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos() as u64;
        b = t.to_le_bytes();
    }
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!("cli-{hex}")
}

/// A message key: 1..=64 of `A-Za-z0-9_-`.
fn valid_key(k: &str) -> bool {
    (1..=64).contains(&k.len())
        && k.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// A client's write half, shared by every delivery to it.
type SharedWriter = Arc<tokio::sync::Mutex<OwnedWriteHalf>>;
/// Deliveries waiting for a client's ack, by outgoing id.
type Waiting = Arc<Mutex<HashMap<String, oneshot::Sender<()>>>>;

struct Client {
    id: u64,
    writer: SharedWriter,
    /// Deliveries waiting for this client's ack, by outgoing id.
    waiting: Waiting,
}

pub struct CliChannel {
    path: PathBuf,
    user: String,
    /// Sent in every `Hello` ([`CliChannel::set_about`]).
    about: Mutex<Option<String>>,
    current: Mutex<Option<Client>>,
    next_id: AtomicU64,
    accept: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl CliChannel {
    /// What every client's `Hello` says of whom it talks to.
    pub fn set_about(&self, about: String) {
        *self.about.lock().unwrap() = Some(about);
    }

    /// Binds the socket (replacing a stale file no one listens on) and starts
    /// accepting clients. Events go to `events`.
    pub fn bind(
        path: &Path,
        user: String,
        events: mpsc::Sender<ChannelEvent>,
    ) -> io::Result<Arc<CliChannel>> {
        if path.exists() {
            match std::os::unix::net::UnixStream::connect(path) {
                Ok(_) => {
                    return Err(io::Error::new(
                        io::ErrorKind::AddrInUse,
                        format!(
                            "{} is in use: another pinch host serves this data dir",
                            path.display()
                        ),
                    ))
                }
                Err(_) => std::fs::remove_file(path)?,
            }
        }
        let listener = UnixListener::bind(path)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        let ch = Arc::new(CliChannel {
            path: path.to_owned(),
            user,
            about: Mutex::new(None),
            current: Mutex::new(None),
            next_id: AtomicU64::new(1),
            accept: Mutex::new(None),
        });
        // The accept loop holds only a weak reference: dropping or closing
        // the channel ends it.
        let me = Arc::downgrade(&ch);
        let task = tokio::spawn(async move {
            loop {
                match listener.accept().await {
                    Ok((stream, _)) => {
                        // Only the owner's own processes, never a sandbox.
                        if let Err(e) = crate::peer::check_stream(&stream) {
                            tracing::warn!("cli socket: refused a connection: {e}");
                            continue;
                        }
                        match me.upgrade() {
                            Some(ch) => ch.serve(stream, events.clone()),
                            None => return,
                        }
                    }
                    Err(e) => {
                        tracing::warn!("cli socket accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        });
        *ch.accept.lock().unwrap() = Some(task);
        Ok(ch)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn address() -> Address {
        Address {
            channel_type: CHANNEL_TYPE.into(),
            platform_id: PLATFORM_ID.into(),
            thread_id: None,
        }
    }

    fn serve(self: Arc<Self>, stream: UnixStream, events: mpsc::Sender<ChannelEvent>) {
        let (read, write) = stream.into_split();
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let writer = Arc::new(tokio::sync::Mutex::new(write));
        let waiting: Waiting = Arc::default();
        tokio::spawn(async move {
            // The hello is the first line: written before the client is
            // registered, so no notice or reply can come before it.
            let hello = ServerMsg::Hello {
                user: self.user.clone(),
                about: self.about.lock().unwrap().clone(),
            };
            if writer
                .lock()
                .await
                .write_all(hello.line().as_bytes())
                .await
                .is_err()
            {
                return;
            }
            let old = self.current.lock().unwrap().replace(Client {
                id,
                writer: writer.clone(),
                waiting: waiting.clone(),
            });
            if let Some(old) = old {
                // Deliveries waiting on the old client fail as Unavailable
                // and are retried with the new one.
                old.waiting.lock().unwrap().clear();
                let mut w = old.writer.lock().await;
                let _ = w.write_all(ServerMsg::Superseded.line().as_bytes()).await;
                let _ = w.shutdown().await;
            }
            let _ = events
                .send(ChannelEvent::Available {
                    channel_type: CHANNEL_TYPE.into(),
                })
                .await;
            let mut lines = BufReader::new(read);
            let mut buf: Vec<u8> = Vec::new();
            loop {
                buf.clear();
                match (&mut lines)
                    .take(MAX_LINE as u64 + 1)
                    .read_until(b'\n', &mut buf)
                    .await
                {
                    Ok(0) => break,
                    Ok(n) if n > MAX_LINE => {
                        // Say why, skip the rest of the line, keep serving:
                        // a client that is still writing it would otherwise
                        // see only a broken pipe.
                        let msg = ServerMsg::Rejected {
                            client_id: None,
                            error: format!(
                                "line longer than 1 MiB ({MAX_LINE} bytes); not stored — send shorter messages"
                            ),
                        };
                        let _ = writer.lock().await.write_all(msg.line().as_bytes()).await;
                        if buf.last() != Some(&b'\n') && !skip_line(&mut lines).await {
                            break;
                        }
                        continue;
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::debug!("cli client read failed: {e}");
                        break;
                    }
                }
                let Ok(text) = std::str::from_utf8(&buf) else {
                    let msg = ServerMsg::Rejected {
                        client_id: None,
                        error: "the line is not valid UTF-8; send UTF-8 JSON".into(),
                    };
                    if writer
                        .lock()
                        .await
                        .write_all(msg.line().as_bytes())
                        .await
                        .is_err()
                    {
                        break;
                    }
                    continue;
                };
                let line = text.trim();
                if line.is_empty() {
                    continue;
                }
                match serde_json::from_str::<ClientMsg>(line) {
                    Ok(ClientMsg::Ack { id: out_id }) => {
                        if let Some(tx) = waiting.lock().unwrap().remove(&out_id) {
                            let _ = tx.send(());
                        }
                    }
                    Ok(ClientMsg::Message {
                        text,
                        client_id,
                        key,
                    }) => {
                        if key.as_deref().is_some_and(|k| !valid_key(k)) {
                            let msg = ServerMsg::Rejected {
                                client_id,
                                error: "the message key must be 1 to 64 of A-Z a-z 0-9 _ -".into(),
                            };
                            let _ = writer.lock().await.write_all(msg.line().as_bytes()).await;
                            continue;
                        }
                        let event = InboundEvent {
                            channel_type: CHANNEL_TYPE.into(),
                            platform_id: PLATFORM_ID.into(),
                            thread_id: None,
                            message_id: new_message_id(key.as_deref()),
                            sender_id: self.user.clone(),
                            sender_name: Some(self.user.clone()),
                            text,
                            is_mention: true,
                            is_group: false,
                            ..Default::default()
                        };
                        let mid = event.message_id.clone();
                        let (ack, rx) = Ack::new();
                        if events
                            .send(ChannelEvent::Message(event, ack))
                            .await
                            .is_err()
                        {
                            break; // host is shutting down
                        }
                        // The answer is written when the commit is done, by
                        // its own task: this reader goes on with the next
                        // lines (more messages, acks of deliveries), so a
                        // client may have several messages in flight and a
                        // commit never holds up the acks deliveries wait for.
                        // Messages still reach the host in the order sent.
                        let writer = writer.clone();
                        tokio::spawn(async move {
                            let reply = match rx.await {
                                Ok(AckOutcome::Stored {
                                    routed,
                                    note,
                                    handled,
                                }) => ServerMsg::Accepted {
                                    handled,
                                    client_id,
                                    id: mid,
                                    routed,
                                    note,
                                },
                                Ok(AckOutcome::Failed(error)) => {
                                    ServerMsg::Rejected { client_id, error }
                                }
                                Err(_) => ServerMsg::Rejected {
                                    client_id,
                                    error: "the host stopped before storing the message".into(),
                                },
                            };
                            let _ = writer.lock().await.write_all(reply.line().as_bytes()).await;
                        });
                    }
                    Ok(ClientMsg::Stop) => {
                        let to = Address {
                            channel_type: CHANNEL_TYPE.into(),
                            platform_id: PLATFORM_ID.into(),
                            thread_id: None,
                        };
                        let sender = format!("{CHANNEL_TYPE}:{}", self.user);
                        if events
                            .send(ChannelEvent::Stop { to, sender })
                            .await
                            .is_err()
                        {
                            break; // host is shutting down
                        }
                    }
                    Ok(ClientMsg::Click { callback }) => {
                        if callback.is_empty() || callback.len() > crate::MAX_CALLBACK {
                            let msg = ServerMsg::Notice {
                                text: format!(
                                    "that button's data is not valid (1..={} bytes)",
                                    crate::MAX_CALLBACK
                                ),
                            };
                            let _ = writer.lock().await.write_all(msg.line().as_bytes()).await;
                            continue;
                        }
                        let click = crate::Click {
                            channel_type: CHANNEL_TYPE.into(),
                            platform_id: PLATFORM_ID.into(),
                            thread_id: None,
                            user_id: self.user.clone(),
                            callback,
                        };
                        if events.send(ChannelEvent::Click(click)).await.is_err() {
                            break; // host is shutting down
                        }
                    }
                    Err(e) => {
                        let msg = ServerMsg::Rejected {
                            client_id: None,
                            error: format!("not a client message ({e}); send one JSON object per line, e.g. {{\"type\":\"message\",\"text\":\"hi\"}}"),
                        };
                        let _ = writer.lock().await.write_all(msg.line().as_bytes()).await;
                    }
                }
            }
            waiting.lock().unwrap().clear();
            self.drop_client(id);
        });
    }

    fn drop_client(&self, id: u64) {
        let mut cur = self.current.lock().unwrap();
        if cur.as_ref().is_some_and(|c| c.id == id) {
            // Dropping the waiters fails their deliveries as Unavailable.
            *cur = None;
        }
    }

    fn current(&self) -> Option<(u64, SharedWriter, Waiting)> {
        self.current
            .lock()
            .unwrap()
            .as_ref()
            .map(|c| (c.id, c.writer.clone(), c.waiting.clone()))
    }

    async fn send_line(&self, msg: &ServerMsg) -> Result<(), DeliverError> {
        let Some((id, writer, _)) = self.current() else {
            return Err(DeliverError::Unavailable(
                "no pinch chat client is connected".into(),
            ));
        };
        let res = writer.lock().await.write_all(msg.line().as_bytes()).await;
        res.map_err(|e| {
            self.drop_client(id);
            DeliverError::Unavailable(format!("client went away: {e}"))
        })
    }
}

/// Reads and drops bytes up to and including the next newline; false at
/// EOF or on a read error.
async fn skip_line<R: tokio::io::AsyncBufRead + Unpin>(r: &mut R) -> bool {
    loop {
        let (n, found) = match r.fill_buf().await {
            Ok([]) | Err(_) => return false,
            Ok(b) => match b.iter().position(|&c| c == b'\n') {
                Some(i) => (i + 1, true),
                None => (b.len(), false),
            },
        };
        r.consume(n);
        if found {
            return true;
        }
    }
}

impl Drop for CliChannel {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

impl Channel for CliChannel {
    fn channel_type(&self) -> &'static str {
        CHANNEL_TYPE
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            max_text: 1 << 20,
            buttons: true,
            open_dm: true,
            ..Default::default()
        }
    }

    fn open_dm<'a>(&'a self, user: &'a str) -> BoxFuture<'a, Result<Option<String>, DeliverError>> {
        // One conversation, with the one local user.
        Box::pin(async move { Ok((user == self.user).then(|| PLATFORM_ID.to_owned())) })
    }

    fn deliver<'a>(
        &'a self,
        to: &'a Address,
        msg: &'a Outgoing,
    ) -> BoxFuture<'a, Result<String, DeliverError>> {
        Box::pin(async move {
            if to.platform_id != PLATFORM_ID {
                return Err(DeliverError::Permanent(format!(
                    "the cli channel has one conversation, {PLATFORM_ID:?}, not {:?}",
                    to.platform_id
                )));
            }
            let Some((cid, writer, waiting)) = self.current() else {
                return Err(DeliverError::Unavailable(
                    "no pinch chat client is connected".into(),
                ));
            };
            let (tx, rx) = oneshot::channel();
            waiting.lock().unwrap().insert(msg.id.clone(), tx);
            let buttons = msg
                .buttons
                .iter()
                .map(|b| WireButton {
                    label: b.label.clone(),
                    callback: b.callback.clone(),
                })
                .collect();
            let line = ServerMsg::Message {
                id: msg.id.clone(),
                text: msg.text.clone(),
                in_reply_to: msg.in_reply_to.clone(),
                buttons,
            }
            .line();
            if let Err(e) = writer.lock().await.write_all(line.as_bytes()).await {
                waiting.lock().unwrap().remove(&msg.id);
                self.drop_client(cid);
                return Err(DeliverError::Unavailable(format!("client went away: {e}")));
            }
            match tokio::time::timeout(CLIENT_ACK_TIMEOUT, rx).await {
                Ok(Ok(())) => Ok(msg.id.clone()),
                Ok(Err(_)) => Err(DeliverError::Unavailable(
                    "client disconnected before acknowledging".into(),
                )),
                Err(_) => {
                    waiting.lock().unwrap().remove(&msg.id);
                    Err(DeliverError::Retryable(
                        "client did not acknowledge within 10 s".into(),
                    ))
                }
            }
        })
    }

    fn close(&self) {
        if let Some(t) = self.accept.lock().unwrap().take() {
            t.abort();
        }
        if let Some(c) = self.current.lock().unwrap().take() {
            c.waiting.lock().unwrap().clear();
        }
        let _ = std::fs::remove_file(&self.path);
    }

    fn settled(&self, to: &Address, ids: &[String]) {
        self.settled_with(to, ids, &[])
    }

    fn settled_with(&self, _to: &Address, ids: &[String], failed: &[String]) {
        if ids.is_empty() {
            return;
        }
        let Some((_, writer, _)) = self.current() else {
            return;
        };
        let line = ServerMsg::Settled {
            ids: ids.to_vec(),
            failed: failed.to_vec(),
        }
        .line();
        tokio::spawn(async move {
            let _ = writer.lock().await.write_all(line.as_bytes()).await;
        });
    }

    fn live<'a>(&'a self, _to: &'a Address, live: &'a crate::Live) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let msg = match live {
                crate::Live::Working {
                    reply_to,
                    state,
                    since_ms,
                } => ServerMsg::Working {
                    reply_to: reply_to.clone(),
                    state: state.clone(),
                    since_ms: *since_ms,
                },
                crate::Live::Draft {
                    reply_to,
                    text,
                    same,
                } => ServerMsg::Draft {
                    reply_to: reply_to.clone(),
                    at: *same,
                    text: text.get(*same..).unwrap_or_default().to_owned(),
                },
                crate::Live::Idle { reply_to } => ServerMsg::Idle {
                    reply_to: reply_to.clone(),
                },
            };
            let _ = self.send_line(&msg).await;
        })
    }

    fn notice<'a>(
        &'a self,
        _to: &'a Address,
        text: &'a str,
    ) -> BoxFuture<'a, Result<(), DeliverError>> {
        Box::pin(async move {
            self.send_line(&ServerMsg::Notice {
                text: text.to_owned(),
            })
            .await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_format() {
        let m: ClientMsg = serde_json::from_str(r#"{"type":"message","text":"hi"}"#).unwrap();
        assert_eq!(
            m,
            ClientMsg::Message {
                text: "hi".into(),
                client_id: None,
                key: None,
            }
        );
        let l = ServerMsg::Message {
            id: "o1".into(),
            text: "yo".into(),
            in_reply_to: None,
            buttons: vec![],
        }
        .line();
        assert_eq!(
            l,
            "{\"type\":\"message\",\"id\":\"o1\",\"text\":\"yo\",\"in_reply_to\":null}\n"
        );
        assert!(serde_json::from_str::<ClientMsg>(r#"{"type":"nope"}"#).is_err());
    }

    async fn read_msg(r: &mut BufReader<tokio::net::unix::OwnedReadHalf>) -> ServerMsg {
        let mut s = String::new();
        r.read_line(&mut s).await.unwrap();
        serde_json::from_str(&s).unwrap_or_else(|e| panic!("{e}: {s:?}"))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn deliver_waits_for_the_client_ack_and_newer_client_supersedes() {
        let d = tempfile::tempdir().unwrap();
        let sock = d.path().join("cli.sock");
        let (tx, mut rx) = mpsc::channel(16);
        let ch = CliChannel::bind(&sock, "tester".into(), tx).unwrap();
        let mode = std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let addr = CliChannel::address();
        let out = Outgoing {
            id: "o1".into(),
            text: "hello".into(),
            in_reply_to: None,
            buttons: vec![],
            files: vec![],
        };
        // no client: unavailable
        assert!(matches!(
            ch.deliver(&addr, &out).await,
            Err(DeliverError::Unavailable(_))
        ));

        let (r1, mut w1) = UnixStream::connect(&sock).await.unwrap().into_split();
        let mut r1 = BufReader::new(r1);
        assert_eq!(
            read_msg(&mut r1).await,
            ServerMsg::Hello {
                user: "tester".into(),
                about: None,
            }
        );
        assert!(matches!(
            rx.recv().await,
            Some(ChannelEvent::Available { .. })
        ));

        // a message in is acked only after the host completes it
        w1.write_all(b"{\"type\":\"message\",\"text\":\"hi\",\"client_id\":\"c1\"}\n")
            .await
            .unwrap();
        let Some(ChannelEvent::Message(ev, ack)) = rx.recv().await else {
            panic!()
        };
        assert_eq!(ev.text, "hi");
        assert_eq!(ev.sender_id, "tester");
        ack.complete(AckOutcome::Stored {
            routed: 1,
            note: None,
            handled: false,
        });
        match read_msg(&mut r1).await {
            ServerMsg::Accepted {
                client_id,
                id,
                routed,
                ..
            } => {
                assert_eq!(client_id.as_deref(), Some("c1"));
                assert_eq!(id, ev.message_id);
                assert_eq!(routed, 1);
            }
            other => panic!("{other:?}"),
        }

        // delivery completes only when the client acks
        let ch2 = ch.clone();
        let addr2 = addr.clone();
        let out2 = out.clone();
        let pending = tokio::spawn(async move { ch2.deliver(&addr2, &out2).await });
        assert_eq!(
            read_msg(&mut r1).await,
            ServerMsg::Message {
                id: "o1".into(),
                text: "hello".into(),
                in_reply_to: None,
                buttons: vec![]
            }
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!pending.is_finished());
        w1.write_all(b"{\"type\":\"ack\",\"id\":\"o1\"}\n")
            .await
            .unwrap();
        assert_eq!(pending.await.unwrap().unwrap(), "o1");

        // a delivery in flight when the client dies is unavailable, not lost
        let ch3 = ch.clone();
        let (a3, o3) = (
            addr.clone(),
            Outgoing {
                id: "o2".into(),
                text: "x".into(),
                in_reply_to: None,
                buttons: vec![],
                files: vec![],
            },
        );
        let pending = tokio::spawn(async move { ch3.deliver(&a3, &o3).await });
        let _ = read_msg(&mut r1).await;
        // second client supersedes the first
        let (r2, _w2) = UnixStream::connect(&sock).await.unwrap().into_split();
        let mut r2 = BufReader::new(r2);
        assert_eq!(
            read_msg(&mut r2).await,
            ServerMsg::Hello {
                user: "tester".into(),
                about: None,
            }
        );
        assert_eq!(read_msg(&mut r1).await, ServerMsg::Superseded);
        drop(w1);
        let res = pending.await.unwrap();
        assert!(matches!(res, Err(DeliverError::Unavailable(_))), "{res:?}");

        // bad input gets a clear rejection and the connection stays usable
        let (r3, mut w3) = UnixStream::connect(&sock).await.unwrap().into_split();
        let mut r3 = BufReader::new(r3);
        let _ = read_msg(&mut r3).await;
        w3.write_all(b"this is not json\n").await.unwrap();
        match read_msg(&mut r3).await {
            ServerMsg::Rejected { error, .. } => {
                assert!(error.contains("one JSON object per line"), "{error}")
            }
            other => panic!("{other:?}"),
        }

        // buttons travel to the client; a click comes back as an event
        let ch4 = ch.clone();
        let a4 = addr.clone();
        let o4 = Outgoing {
            id: "o3".into(),
            text: "Pick one".into(),
            in_reply_to: None,
            buttons: vec![crate::Button {
                label: "Yes".into(),
                callback: "q:ab:0".into(),
            }],
            files: vec![],
        };
        let pending = tokio::spawn(async move { ch4.deliver(&a4, &o4).await });
        match read_msg(&mut r3).await {
            ServerMsg::Message { buttons, .. } => assert_eq!(
                buttons,
                vec![WireButton {
                    label: "Yes".into(),
                    callback: "q:ab:0".into()
                }]
            ),
            other => panic!("{other:?}"),
        }
        w3.write_all(b"{\"type\":\"ack\",\"id\":\"o3\"}\n")
            .await
            .unwrap();
        pending.await.unwrap().unwrap();
        while let Ok(ev) = rx.try_recv() {
            assert!(matches!(ev, ChannelEvent::Available { .. }), "{ev:?}");
        }
        w3.write_all(b"{\"type\":\"click\",\"callback\":\"q:ab:0\"}\n")
            .await
            .unwrap();
        loop {
            match rx.recv().await {
                Some(ChannelEvent::Click(c)) => {
                    assert_eq!(
                        (
                            c.callback.as_str(),
                            c.user_id.as_str(),
                            c.platform_id.as_str()
                        ),
                        ("q:ab:0", "tester", PLATFORM_ID)
                    );
                    break;
                }
                Some(ChannelEvent::Available { .. }) => continue,
                other => panic!("{other:?}"),
            }
        }
        // an oversized callback is refused at the edge
        let long = format!(
            "{{\"type\":\"click\",\"callback\":\"{}\"}}\n",
            "x".repeat(65)
        );
        w3.write_all(long.as_bytes()).await.unwrap();
        match read_msg(&mut r3).await {
            ServerMsg::Notice { text } => assert!(text.contains("not valid"), "{text}"),
            other => panic!("{other:?}"),
        }
    }
}

/// The CLI socket protocol against any line (issue 16, S9): whatever a
/// client writes — bytes that are not UTF-8, not JSON, JSON of the wrong
/// shape, a valid message — the server answers or ignores it and keeps the
/// connection: a barrier sent after them all is answered.
#[cfg(test)]
mod proptests {
    use super::*;
    use proptest::prelude::*;

    fn line() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..300),
            "[ -~]{0,200}".prop_map(String::into_bytes),
            (".{0,80}", proptest::option::of("[A-Za-z0-9_ !-]{0,70}")).prop_map(|(t, k)| {
                serde_json::json!({"type": "message", "text": t, "client_id": "c", "key": k})
                    .to_string()
                    .into_bytes()
            }),
            ".{0,80}".prop_map(|c| serde_json::json!({"type": "click", "callback": c})
                .to_string()
                .into_bytes()),
            ".{0,40}".prop_map(|i| serde_json::json!({"type": "ack", "id": i})
                .to_string()
                .into_bytes()),
        ]
        .prop_map(|mut l| {
            l.retain(|b| *b != b'\n');
            l
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]
        #[test]
        fn any_line_is_answered_or_ignored_and_the_connection_goes_on(
            lines in proptest::collection::vec(line(), 1..8)
        ) {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            let not_utf8 = lines.iter().filter(|l| std::str::from_utf8(l).is_err()).count();
            let seen = rt.block_on(async {
                let d = tempfile::tempdir().unwrap();
                let sock = d.path().join("cli.sock");
                let (tx, mut rx) = mpsc::channel(16);
                let _ch = CliChannel::bind(&sock, "tester".into(), tx).unwrap();
                // The host: every message refused, clicks dropped.
                tokio::spawn(async move {
                    while let Some(ev) = rx.recv().await {
                        if let ChannelEvent::Message(_, ack) = ev {
                            ack.complete(AckOutcome::Failed("not today".into()));
                        }
                    }
                });
                let (r, mut w) = UnixStream::connect(&sock).await.unwrap().into_split();
                let mut r = BufReader::new(r);
                let mut buf = String::new();
                r.read_line(&mut buf).await.unwrap();
                assert!(buf.contains("hello"), "{buf}");
                for l in &lines {
                    w.write_all(l).await.unwrap();
                    w.write_all(b"\n").await.unwrap();
                }
                w.write_all(b"{\"type\":\"message\",\"text\":\"b\",\"client_id\":\"barrier\",\"key\":\"bad key!\"}\n")
                    .await
                    .unwrap();
                let mut seen = Vec::new();
                loop {
                    let mut s = String::new();
                    let n = tokio::time::timeout(Duration::from_secs(10), r.read_line(&mut s))
                        .await
                        .expect("the barrier is answered")
                        .unwrap();
                    assert!(n > 0, "the server closed the connection after {seen:?}");
                    let m: ServerMsg = serde_json::from_str(&s).unwrap_or_else(|e| panic!("{e}: {s:?}"));
                    if matches!(&m, ServerMsg::Rejected { client_id: Some(c), .. } if c == "barrier") {
                        return seen;
                    }
                    seen.push(m);
                }
            });
            let utf8_refusals = seen
                .iter()
                .filter(|m| matches!(m, ServerMsg::Rejected { error, .. } if error.contains("not valid UTF-8")))
                .count();
            prop_assert_eq!(utf8_refusals, not_utf8, "{:?}", seen);
        }
    }
}
