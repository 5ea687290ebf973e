//! The pinch host: one daemon per data dir.
//!
//! It receives messages from channels, routes each to the sessions of the
//! agents that engage it, writes them into each session's `inbound.db`,
//! spawns the session's runner in a sandbox when there is work, notices the
//! runner's exit the moment it happens, and delivers what the runner writes
//! to `outbound.db`.
//!
//! Shape: one main loop ([`main_loop`]) owns the central DB and every
//! session's runner state and handles a closed set of [`Event`](event::Event)s one at a
//! time, which is what makes "at most one runner per session" true without
//! locks (100 concurrent wakes are 100 events; the first spawns, the rest see
//! a live runner). Delivery runs in one task per session ([`delivery`]), so a
//! slow channel never blocks routing, and there is one delivery in flight per
//! session.
//!
//! Invariants: the host is the sole writer of the central DB and of every
//! `inbound.db`; it never writes a row into an `outbound.db` (it opens one
//! read-write only to roll back a hot journal while no runner lives); it is
//! the only code that spawns runners, always through a
//! [`pinch_sandbox::Sandbox`] backend and the handle it returns.

pub mod admin;
pub(crate) mod attachments;
pub mod backup;
pub(crate) mod central_file;
pub mod config;
pub(crate) mod dashboard;
pub mod db;
pub(crate) mod delivery;
pub(crate) mod fswalk;
pub(crate) mod history;
pub(crate) mod ledger;
pub(crate) mod live;
pub(crate) mod metrics;
pub(crate) mod metrics_history;
pub mod mounts;
pub(crate) mod outbox;
pub mod paths;
pub mod private;
pub mod proxy;
pub(crate) mod quota;
pub mod repair;
pub mod secrets;
pub mod session;
pub(crate) mod session_check;
pub(crate) mod session_detail;
pub(crate) mod skills;
pub(crate) mod tasks;

mod event;
mod lock;
mod main_loop;

// The sandboxes live in `pinch-sandbox`; these names stay where the binary
// and the tests have always found them.
pub use pinch_sandbox as sandbox;
pub use pinch_sandbox::{cgroup, docker, safe_fs, seccomp, tools_dir};

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use anyhow::{Context, Result};
use tokio::sync::{mpsc, oneshot};

pub use config::HostConfig;
pub use main_loop::start;

/// A one-time login link for a browser: `http://<addr><path>?login=<code>`
/// (see [`pinch_channels::http::login_code`]: made from the web token, so
/// no host needs to be asked; it works once, for 30 minutes, and sets the
/// session cookie).
pub fn web_login_url(
    data_dir: &std::path::Path,
    addr: std::net::SocketAddr,
    path: &str,
) -> Result<String> {
    let token = web_token(data_dir)?;
    Ok(format!(
        "http://{addr}{path}?login={}",
        pinch_channels::http::login_code(&token)
    ))
}

/// The web chat token (`<data dir>/web-token`, 0600), made on first use:
/// 32 random bytes as hex. Web routes take it as `Authorization: Bearer`
/// (never in a URL) and it keys the one-time login links and session
/// cookies (decision 0022); `pinch admin web-token` prints it. Never logged.
pub fn web_token(data_dir: &std::path::Path) -> Result<String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let path = data_dir.join("web-token");
    match std::fs::read_to_string(&path) {
        Ok(t) if t.trim().len() >= 32 => return Ok(t.trim().to_owned()),
        Ok(_) => anyhow::bail!(
            "{} is too short to be a web token: delete it and a new one is made",
            path.display()
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(anyhow::Error::new(e).context(format!("reading {}", path.display()))),
    }
    std::fs::create_dir_all(data_dir)?;
    // From the kernel's CSPRNG only (no fallback: a guessable token is worse than none).
    let mut raw = [0u8; 32];
    std::io::Read::read_exact(
        &mut std::fs::File::open("/dev/urandom")
            .context("opening /dev/urandom for the web token")?,
        &mut raw,
    )?;
    let token: String = raw.iter().map(|b| format!("{b:02x}")).collect();
    let tmp = data_dir.join(format!(".web-token.{}", std::process::id()));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(token.as_bytes())?;
    f.sync_all()?;
    // Another process may have made one meanwhile: the first wins.
    match std::fs::hard_link(&tmp, &path) {
        Ok(()) => {
            let _ = std::fs::remove_file(&tmp);
            Ok(token)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let _ = std::fs::remove_file(&tmp);
            Ok(std::fs::read_to_string(&path)?.trim().to_owned())
        }
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(anyhow::Error::new(e).context(format!("writing {}", path.display())))
        }
    }
}

/// Counters for tests, benchmarks and (later) metrics.
#[derive(Debug, Default)]
pub struct Stats {
    pub spawns: AtomicU64,
    pub exits: AtomicU64,
}

impl Stats {
    pub fn spawns(&self) -> u64 {
        self.spawns.load(Ordering::Relaxed)
    }
    pub fn exits(&self) -> u64 {
        self.exits.load(Ordering::Relaxed)
    }
}

/// A session as the host currently sees it.
#[derive(Clone, Debug)]
pub struct SessionInfo {
    pub id: String,
    pub agent_group_id: String,
    pub dir: PathBuf,
    pub runner_id: Option<String>,
    pub runner_pid: Option<u32>,
}

/// Requests to a running host (from the embedding process: tests, bench).
pub(crate) enum Control {
    Sessions(oneshot::Sender<Vec<SessionInfo>>),
    StopRunner(String, oneshot::Sender<bool>),
}

/// A running host.
pub struct HostHandle {
    pub cli_socket: PathBuf,
    /// Where the HTTP listener (web chat, webhooks) is bound, if configured.
    pub http_addr: Option<std::net::SocketAddr>,
    pub data_dir: PathBuf,
    pub sandbox: sandbox::Kind,
    pub stats: Arc<Stats>,
    control: mpsc::UnboundedSender<event::Event>,
    join: tokio::task::JoinHandle<Result<()>>,
}

impl HostHandle {
    /// Asks the host to shut down gracefully and waits for it.
    pub async fn shutdown(self) -> Result<()> {
        let _ = self.control.send(event::Event::Shutdown);
        self.join.await?
    }

    /// Waits until the host stops on its own (signal handling is the
    /// embedder's job: call [`HostHandle::shutdown`]).
    pub async fn wait(self) -> Result<()> {
        self.join.await?
    }

    pub fn shutdown_sender(&self) -> impl Fn() + Send + Sync + 'static {
        let c = self.control.clone();
        move || {
            let _ = c.send(event::Event::Shutdown);
        }
    }

    pub async fn sessions(&self) -> Vec<SessionInfo> {
        let (tx, rx) = oneshot::channel();
        let _ = self
            .control
            .send(event::Event::Control(Control::Sessions(tx)));
        rx.await.unwrap_or_default()
    }

    /// Asks a session's runner to stop (gracefully, then killed after the
    /// grace). Returns whether one was running.
    pub async fn stop_runner(&self, session_id: &str) -> bool {
        let (tx, rx) = oneshot::channel();
        let _ = self.control.send(event::Event::Control(Control::StopRunner(
            session_id.to_owned(),
            tx,
        )));
        rx.await.unwrap_or(false)
    }
}
