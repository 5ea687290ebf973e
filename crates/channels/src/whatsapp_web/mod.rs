//! WhatsApp as a linked device of the owner's own account (WhatsApp Web's
//! protocol), decision 0055. The protocol is unofficial: pinch does not
//! speak it itself but supervises a bridge process, a small Node script
//! over Baileys (`bridge.mjs`, installed with a pinned Baileys by `pinch
//! channels whatsapp install`), and talks to it in newline-delimited JSON
//! over its stdio ([`wire`]).
//!
//! - **Pairing:** `pinch channels whatsapp link` runs the bridge in link
//!   mode and shows its QR codes in the terminal; the session keys land in
//!   `<data>/channels/whatsapp-web/session/` (0600 files, 0700 folders).
//!   Without a session the adapter waits (and says how to link); it picks
//!   a new session up without a restart.
//! - **Inbound:** the bridge writes each message to its spool before it
//!   tells pinch, downloads media into the media folder (capped), and
//!   drops the spool entry (and sends the read receipt) only when pinch
//!   answers `ack` after the host's commit. A restart replays the spool;
//!   the message id makes a replay the same row. DMs are always for
//!   pinch; in groups, an @-mention of the account (or a reply to it) is a
//!   mention, and the wiring's engage mode decides.
//! - **Outbound:** text (split at 4096), the first part quoting the
//!   message it answers; files (copied into the media folder for the
//!   bridge); reactions; typing. Each message's WhatsApp id is derived
//!   from pinch's row id ([`wire::message_id`]), so a retry is the same
//!   message.
//! - **Supervision:** the bridge is restarted with the shared backoff when
//!   it exits, and killed and restarted when it is silent past `stall_s`
//!   (it says `alive` every quarter of it).
//! - **Logged out** (the owner removed the device, or WhatsApp did): the
//!   bridge says so and exits; pinch writes `logged-out` beside the
//!   session, stops, tells the owner once (a host notice to `pinch chat`)
//!   that `pinch channels whatsapp link` fixes it, and `pinch doctor`
//!   reports it.

mod bridge;
mod config;
mod link;
mod setup;
pub mod wire;

use config::from_table;
pub use config::{WaWebSection, KIND};

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use crate::{Address, BoxFuture, Capabilities, Channel, ChannelEvent, DeliverError, Outgoing};

pub const CHANNEL_TYPE: &str = "whatsapp_web";
/// The text limit pinch keeps to (WhatsApp takes more; long texts read
/// better split).
pub const MAX_TEXT: usize = 4096;
/// The Baileys release the bridge is written for (`pinch channels
/// whatsapp install` installs exactly this).
pub const BAILEYS: &str = "7.0.0-rc14";
/// The bridge script, written next to its `node_modules` by the install
/// and refreshed at every start (a pinch upgrade brings its bridge).
pub const BRIDGE_JS: &str = include_str!("bridge.mjs");
/// How long a command waits for the bridge's answer (a file: longer).
const ANSWER_WAIT: Duration = Duration::from_secs(30);
const FILE_WAIT: Duration = Duration::from_secs(180);
/// The largest file handed to the bridge (WhatsApp's document limit is
/// far above; the host caps outbox files anyway).
const MAX_OUT_FILE: u64 = 64 << 20;

/// The channel's folders and files under the data dir.
#[derive(Clone, Debug)]
pub struct Paths {
    pub root: PathBuf,
    pub session: PathBuf,
    pub media: PathBuf,
    pub spool: PathBuf,
    pub bridge: PathBuf,
    /// Present once WhatsApp logged this device out (its text: why).
    pub logged_out: PathBuf,
    /// Held (flock) by whoever runs the bridge on this session.
    pub lock: PathBuf,
}

impl Paths {
    pub fn new(data_dir: &Path) -> Paths {
        let root = data_dir.join("channels").join("whatsapp-web");
        Paths {
            session: root.join("session"),
            media: root.join("media"),
            spool: root.join("spool"),
            bridge: root.join("bridge"),
            logged_out: root.join("logged-out"),
            lock: root.join("bridge.lock"),
            root,
        }
    }

    /// Creates the folders, 0700 (also tightening ones that exist).
    pub fn create(&self) -> Result<(), String> {
        use std::os::unix::fs::PermissionsExt;
        for d in [&self.root, &self.session, &self.media, &self.spool] {
            std::fs::create_dir_all(d).map_err(|e| format!("creating {}: {e}", d.display()))?;
            std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o700))
                .map_err(|e| format!("securing {}: {e}", d.display()))?;
        }
        Ok(())
    }

    /// Whether a pairing left session keys.
    pub fn linked(&self) -> bool {
        self.session.join("creds.json").is_file()
    }
}

#[derive(Clone, Debug)]
pub struct WaWebConfig {
    pub command: Vec<String>,
    /// `command` is the installed bridge (its install is checked).
    pub default_bridge: bool,
    pub stall: Duration,
    pub read_receipts: bool,
    pub paths: Paths,
}

/// Where the link stands, for deliveries.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Status {
    Down,
    Up,
    LoggedOut,
}

/// The fix named wherever the session is gone.
pub const LINK_FIX: &str = "run `pinch channels whatsapp link` and scan the code with WhatsApp (Settings → Linked devices)";

pub struct WaWebChannel {
    cfg: WaWebConfig,
    events: mpsc::Sender<ChannelEvent>,
    status: Mutex<Status>,
    /// Lines to the running bridge.
    to_bridge: Mutex<Option<mpsc::Sender<String>>>,
    /// Commands waiting for their answer.
    waiting: Mutex<HashMap<String, oneshot::Sender<Result<String, DeliverError>>>>,
    next: AtomicU64,
    closed: AtomicBool,
}

impl WaWebChannel {
    /// Starts the supervisor (inside the tokio runtime).
    pub fn start(
        cfg: WaWebConfig,
        events: mpsc::Sender<ChannelEvent>,
    ) -> Result<Arc<WaWebChannel>, String> {
        cfg.paths.create()?;
        let ch = Arc::new(WaWebChannel {
            cfg,
            events,
            status: Mutex::new(Status::Down),
            to_bridge: Mutex::new(None),
            waiting: Mutex::new(HashMap::new()),
            next: AtomicU64::new(1),
            closed: AtomicBool::new(false),
        });
        tokio::spawn(bridge::supervise(ch.clone()));
        Ok(ch)
    }

    /// Sends `cmd` (built with a fresh request id) and waits for its answer.
    async fn call(
        &self,
        wait: Duration,
        cmd: impl FnOnce(String) -> wire::Command,
    ) -> Result<String, DeliverError> {
        match &*self.status.lock().unwrap() {
            Status::LoggedOut => {
                return Err(DeliverError::Permanent(format!(
                    "WhatsApp logged this device out; {LINK_FIX}"
                )))
            }
            Status::Down => {
                return Err(DeliverError::Unavailable(
                    "WhatsApp is not connected (the bridge is starting or reconnecting)".into(),
                ))
            }
            Status::Up => {}
        }
        let id = self.next.fetch_add(1, Ordering::SeqCst).to_string();
        let line = serde_json::to_string(&cmd(id.clone())).expect("commands serialise");
        let (tx, rx) = oneshot::channel();
        self.waiting.lock().unwrap().insert(id.clone(), tx);
        let sent = match self.to_bridge.lock().unwrap().clone() {
            Some(b) => b.try_send(line).is_ok(),
            None => false,
        };
        if !sent {
            self.waiting.lock().unwrap().remove(&id);
            return Err(DeliverError::Unavailable(
                "the WhatsApp bridge is not running".into(),
            ));
        }
        match tokio::time::timeout(wait, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(DeliverError::Retryable(
                "the WhatsApp bridge stopped before answering".into(),
            )),
            Err(_) => {
                self.waiting.lock().unwrap().remove(&id);
                Err(DeliverError::Retryable(format!(
                    "the WhatsApp bridge did not answer within {}s",
                    wait.as_secs()
                )))
            }
        }
    }

    /// Copies an outbox file into the media folder for the bridge (the
    /// host's `/proc/self/fd` path means nothing to another process).
    fn hand_over(&self, f: &crate::OutFile) -> Result<wire::OutMedia, DeliverError> {
        if f.size > MAX_OUT_FILE {
            return Err(DeliverError::Permanent(format!(
                "{} is larger than {} MiB",
                f.name,
                MAX_OUT_FILE >> 20
            )));
        }
        let mut r = [0u8; 8];
        let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut r);
        let file = format!("out-{}", crate::http::hex(&r));
        let dest = self.cfg.paths.media.join(&file);
        let data = std::fs::read(&f.path)
            .map_err(|e| DeliverError::Permanent(format!("reading {}: {e}", f.name)))?;
        crate::write_private(&dest, &data).map_err(|e| {
            DeliverError::Retryable(format!("handing {} to the bridge: {e}", f.name))
        })?;
        Ok(wire::OutMedia {
            file,
            name: f.name.clone(),
            mime: mime_of(&f.name).into(),
        })
    }

    fn set_status(&self, s: Status) {
        *self.status.lock().unwrap() = s;
    }
}

/// A file's MIME type by its extension (what WhatsApp shows it as).
fn mime_of(name: &str) -> &'static str {
    let ext = name
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default();
    match ext.as_str() {
        "jpg" | "jpeg" => "image/jpeg",
        "png" => "image/png",
        "webp" => "image/webp",
        "gif" => "image/gif",
        "mp4" => "video/mp4",
        "ogg" | "opus" => "audio/ogg; codecs=opus",
        "mp3" => "audio/mpeg",
        "pdf" => "application/pdf",
        "txt" | "md" | "csv" => "text/plain",
        "json" => "application/json",
        _ => "application/octet-stream",
    }
}

impl Channel for WaWebChannel {
    fn channel_type(&self) -> &'static str {
        CHANNEL_TYPE
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            threads: false,
            edit: false,
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
        Box::pin(async move {
            if !wire::valid_jid(&to.platform_id) {
                return Err(DeliverError::Permanent(format!(
                    "{:?} is not a WhatsApp chat",
                    to.platform_id
                )));
            }
            let text = crate::numbered_fallback(&msg.text, &msg.buttons);
            let mut parts = if text.is_empty() {
                Vec::new()
            } else {
                crate::platform::split_text(&text, MAX_TEXT, |_| 1)
            };
            let mut first = None;
            let mut n = 0;
            let quote = msg.in_reply_to.clone().filter(|q| wire::valid_id(q));
            // One file and at most one text part: the text is the file's
            // caption (audio has none: sent apart).
            let mut files = msg.files.iter();
            if msg.files.len() == 1
                && parts.len() <= 1
                && !mime_of(&msg.files[0].name).starts_with("audio/")
            {
                let f = files.next().expect("one file");
                let media = self.hand_over(f)?;
                let caption = parts.pop().unwrap_or_default();
                let id = self
                    .call(FILE_WAIT, |id| wire::Command::Send {
                        id,
                        to: to.platform_id.clone(),
                        msg_id: wire::message_id(&msg.id, 0),
                        text: caption,
                        quote: quote.clone(),
                        file: Some(media),
                    })
                    .await?;
                return Ok(id);
            }
            for part in parts {
                let q = if n == 0 { quote.clone() } else { None };
                let id = self
                    .call(ANSWER_WAIT, |id| wire::Command::Send {
                        id,
                        to: to.platform_id.clone(),
                        msg_id: wire::message_id(&msg.id, n),
                        text: part,
                        quote: q,
                        file: None,
                    })
                    .await?;
                n += 1;
                first = first.or(Some(id));
            }
            for f in files {
                let media = self.hand_over(f)?;
                let id = self
                    .call(FILE_WAIT, |id| wire::Command::Send {
                        id,
                        to: to.platform_id.clone(),
                        msg_id: wire::message_id(&msg.id, n),
                        text: String::new(),
                        quote: None,
                        file: Some(media),
                    })
                    .await?;
                n += 1;
                first = first.or(Some(id));
            }
            first.ok_or_else(|| {
                DeliverError::Permanent("nothing to send: no text and no files".into())
            })
        })
    }

    fn notice<'a>(
        &'a self,
        to: &'a Address,
        text: &'a str,
    ) -> BoxFuture<'a, Result<(), DeliverError>> {
        Box::pin(async move {
            let mut r = [0u8; 8];
            let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut r);
            let out = Outgoing {
                id: format!("notice-{}", crate::http::hex(&r)),
                text: text.into(),
                in_reply_to: None,
                buttons: Vec::new(),
                files: Vec::new(),
            };
            self.deliver(to, &out).await.map(|_| ())
        })
    }

    fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        *self.to_bridge.lock().unwrap() = None;
    }

    fn open_dm<'a>(&'a self, user: &'a str) -> BoxFuture<'a, Result<Option<String>, DeliverError>> {
        // A user's JID is also their direct chat.
        Box::pin(async move { Ok(wire::valid_jid(user).then(|| user.to_owned())) })
    }

    fn react<'a>(
        &'a self,
        to: &'a Address,
        platform_message_id: &'a str,
        emoji: &'a str,
    ) -> BoxFuture<'a, Result<(), DeliverError>> {
        Box::pin(async move {
            if !wire::valid_jid(&to.platform_id) || !wire::valid_id(platform_message_id) {
                return Err(DeliverError::Permanent("not a WhatsApp message".into()));
            }
            self.call(ANSWER_WAIT, |id| wire::Command::React {
                id,
                to: to.platform_id.clone(),
                msg: platform_message_id.to_owned(),
                emoji: emoji.to_owned(),
            })
            .await
            .map(|_| ())
        })
    }

    fn typing<'a>(&'a self, to: &'a Address) -> BoxFuture<'a, Result<(), DeliverError>> {
        Box::pin(async move {
            if !wire::valid_jid(&to.platform_id) {
                return Ok(());
            }
            self.call(ANSWER_WAIT, |id| wire::Command::Typing {
                id,
                to: to.platform_id.clone(),
            })
            .await
            .map(|_| ())
        })
    }
}

/// `pinch doctor`'s check: linked, logged out, or never linked; and the
/// installed bridge when it is the default one.
pub(super) fn probe(cfg: &WaWebConfig) -> Result<String, String> {
    let p = &cfg.paths;
    if let Ok(why) = std::fs::read_to_string(&p.logged_out) {
        return Err(format!(
            "logged out ({}); {LINK_FIX}",
            why.trim().chars().take(200).collect::<String>()
        ));
    }
    if !p.linked() {
        return Err(format!("not linked yet; {LINK_FIX}"));
    }
    if cfg.default_bridge {
        setup::installed(p)?;
    }
    Ok(format!("linked (session keys in {})", p.session.display()))
}
