//! The host's main loop: boot, then one `select!` over a closed set of
//! events, handled one at a time. It is the sole owner of the central DB and
//! of each session's runner state.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use pinch_channels::cli_socket::CliChannel;
use pinch_channels::{AckOutcome, Channel, ChannelEvent};
use pinch_policy::exit::{self, Cause};
use pinch_proto::rows::Routing;
use pinch_proto::runner_config::{random_hex, RunnerConfig, VERSION};
use pinch_proto::time;
use regex::Regex;
use tokio::sync::{mpsc, watch};

use crate::central::{Central, SessionRow};
use crate::config::HostConfig;
use crate::delivery::{self, Channels, Shared};
use crate::lock::HostLock;
use crate::paths::{DataDir, SessionDir};
use crate::sandbox::{self, Mounts, Sandbox};
use crate::session;
use crate::{Control, HostHandle, SessionInfo, Stats};

mod a2a;
mod agent_actions;
mod agent_admin;
mod approvals;
mod create_agent;
mod disk;
mod notices;
mod routing;
mod self_mod;
mod session_db;
mod task_actions;

pub(crate) enum Event {
    Channel(ChannelEvent),
    /// A host notice to store and send (from a delivery task).
    Notice {
        to: pinch_channels::Address,
        text: String,
    },
    /// A stored host notice's send finished (`notices.rs`).
    NoticeSent {
        notice: crate::notices::StoredNotice,
        result: Result<(), pinch_channels::DeliverError>,
    },
    RunnerExited {
        session_id: String,
        runner_id: String,
        code: Option<i32>,
        signal: Option<i32>,
    },
    Wake(String),
    /// A read of this session's inbound.db failed as corrupt (delivery, a
    /// wake): the deep check (issue 15).
    SessionDbFault(String),
    /// A delivery task rebuilt the session's lost or damaged delivery
    /// ledger: the notice for its conversation (decision 0026).
    LedgerRebuilt(String, String),
    /// The check of a session's `outbound.db` after an abnormal exit, run
    /// off the main loop (the file is the agent's: its size and shape are
    /// attacker input), is done (`session_db.rs`).
    OutboundChecked {
        session_id: String,
        result: Result<Option<crate::session_check::Recovery>, String>,
    },
    /// Wake this session at this time (epoch ms): a task falls due.
    WakeAt(String, i64),
    /// A live runner's stuck deadline (spawn grace, heartbeat ceiling,
    /// claim) may have passed: check it now (issue 15; the sweep checks too).
    StuckCheck {
        session_id: String,
        runner_id: String,
    },
    /// The stop grace of a runner ran out: kill it if it is still that runner.
    StopDeadline {
        session_id: String,
        runner_id: String,
    },
    Control(Control),
    Admin(
        crate::admin::Request,
        tokio::sync::oneshot::Sender<crate::admin::Reply>,
    ),
    /// A delivery task is about to send a question's buttons; it waits for
    /// the reply so a click can never arrive before the record exists.
    QuestionAsked(
        crate::central::PendingQuestion,
        tokio::sync::oneshot::Sender<bool>,
    ),
    /// An approval card is about to go to this approver's DM: record where,
    /// before it is sent (same reason as `QuestionAsked`).
    ApprovalAddressed {
        approval_id: String,
        approver: String,
        channel_type: String,
        platform_id: String,
        opened: bool,
        done: tokio::sync::oneshot::Sender<bool>,
    },
    /// A `system` row an agent wrote (admin request, task action, …); the
    /// reply says whether it was handled (Err: why not, told to the agent).
    AgentAction {
        session_id: String,
        out_id: String,
        content: String,
        done: tokio::sync::oneshot::Sender<Result<String, String>>,
    },
    /// A chat row an agent addressed to another agent; the reply is the
    /// delivery's record (Ok: the target session) or why it was refused.
    AgentMessage {
        session_id: String,
        row: pinch_proto::rows::OutboundRow,
        done: tokio::sync::oneshot::Sender<Result<String, String>>,
    },
    /// A delivery task refused an outbound row whose address the session
    /// is not granted (issue 14): counted in the drop audit. `claimed` is
    /// the row's address as the runner wrote it, bounded.
    AddressRefused {
        session_id: String,
        agent_group: String,
        claimed: String,
    },
    /// Approved packages finished installing (or failed).
    ToolsInstalled {
        approval: Box<crate::permissions::Approval>,
        result: Result<String, String>,
    },
    /// No approver could be reached for this card.
    ApprovalUndeliverable {
        approval_id: String,
        why: String,
    },
    /// A session's writable folders were measured (`runner_id`: by the
    /// watch of that live runner, which reports only when over quota).
    DiskChecked {
        session_id: String,
        runner_id: Option<String>,
        usage: crate::quota::Usage,
    },
    Shutdown,
}

struct Live {
    runner_id: String,
    pid: u32,
    started_at: String,
    spawned_ms: i64,
    stop_requested_at: Option<Instant>,
    /// Set when the sweep kills it as stuck.
    kill_reason: Option<&'static str>,
    /// The stuck check's failed reads of this runner's `outbound.db` in a
    /// row, and the last error logged (each distinct one is logged once).
    stuck_read_failures: u32,
    stuck_read_error: Option<String>,
    /// Write end of the liveness pipe; the runner exits when it closes
    /// (this host died, or this runner's record was dropped).
    _alive: Option<std::os::fd::OwnedFd>,
    /// Dropped with this record: ends the runner's disk-quota watch.
    _disk_watch: tokio::sync::oneshot::Sender<()>,
}

/// An inbound event routed but not yet committed: its ack (none for a
/// replay) completes at the flush, once its sessions' writes are done.
pub(crate) struct PendingAck {
    ack: Option<pinch_channels::Ack>,
    stored: Vec<String>,
    note: Option<String>,
    woken: Vec<String>,
}

/// A back-off at least this long, with a message waiting, is announced to
/// the user (shorter ones pass before anyone wonders).
const BACKOFF_NOTICE_AFTER: Duration = Duration::from_secs(5);

/// Most events routed before their writes are flushed together.
const FLUSH_BATCH: usize = 1024;
/// Sessions committed in parallel by a flush.
const FLUSH_THREADS: usize = 16;

struct SessionRt {
    row: SessionRow,
    dir: SessionDir,
    shared: Arc<Shared>,
    runner: Option<Live>,
    /// Abnormal exit times (epoch ms) for the crash budget.
    exits_ms: Vec<i64>,
    next_spawn_at: Option<Instant>,
    /// The back-off (its end) the user was last told about.
    backoff_told: Option<Instant>,
    wake_scheduled: bool,
    /// Consecutive failures to read the session's due work.
    wake_failures: u32,
    /// A dead runner's claims could not be resolved yet (retried before
    /// the next spawn, so a crashing message always counts its tries).
    orphans_pending: Option<bool>,
    quarantined: bool,
    /// Closed by the admin: takes no new work.
    closed: bool,
    /// Over its disk quota? (`disk.rs`)
    disk: disk::DiskState,
    /// Device and inode of its inbound.db when last checked (`session_db.rs`).
    inbound_stamp: Option<crate::session_check::Stamp>,
    /// The `inbound.db` (stamp) `PRAGMA integrity_check` last passed or
    /// repaired: run once per file when a read or write fails as corrupt.
    integrity_checked: Option<crate::session_check::Stamp>,
    /// Its `outbound.db` is being checked off the main loop after an
    /// abnormal exit: no runner is spawned until the result is in.
    checking: bool,
}

struct Host {
    cfg: HostConfig,
    data: DataDir,
    central: Central,
    sandbox: Box<dyn Sandbox>,
    channels: Arc<Channels>,
    sessions: HashMap<String, SessionRt>,
    events: mpsc::UnboundedSender<Event>,
    watcher: Option<notify::RecommendedWatcher>,
    watch_map: Arc<Mutex<HashMap<PathBuf, Arc<Shared>>>>,
    delivery_stop: watch::Sender<bool>,
    delivery_tasks: tokio::task::JoinSet<()>,
    /// One credential proxy per session that has had a runner.
    proxies: HashMap<String, tokio::task::JoinHandle<()>>,
    proxy_tls: Arc<rustls::ClientConfig>,
    /// The connection budget all sessions' proxies share.
    proxy_budget: Arc<crate::proxy::Budget>,
    regexes: HashMap<String, Option<Regex>>,
    slot_queue: VecDeque<String>,
    /// Routed rows waiting for the flush, in routing order.
    pending_writes: Vec<(String, pinch_proto::rows::NewInbound)>,
    pending_acks: Vec<PendingAck>,
    /// Agent-to-agent sends per ordered pair (times), for the rate limit.
    a2a_sends: a2a::PairLimiter,
    /// How many sessions `/metrics` was last told about.
    published_sessions: usize,
    stats: Arc<Stats>,
    shutting_down: bool,
    /// Stored host notices being sent now (`notices.rs`).
    notices_in_flight: Mutex<HashMap<i64, String>>,
    /// Channel types a flush skipped because their notices were on their
    /// way: flushed again when those come back unsent (a client connected
    /// while the send to nobody was in flight).
    notices_reflush: Mutex<std::collections::HashSet<String>>,
    _lock: HostLock,
}

/// One session's routed rows in one transaction.
fn commit_rows(
    dir: &SessionDir,
    rows: &[pinch_proto::rows::NewInbound],
    out_max: i64,
) -> Result<(), String> {
    session::write_inbound(dir, rows, out_max)
        .map(|_| ())
        .map_err(|e| format!("writing {}: {e:#}", dir.inbound_db().display()))
}

/// Creates the data dir layout, proving it is writable.
fn prepare_data_dir(data: &DataDir) -> Result<()> {
    let hint = "choose a writable location with --data-dir or PINCH_HOME";
    for d in [
        data.root().to_owned(),
        data.run_dir(),
        data.logs_dir(),
        data.groups_dir(),
        data.sessions_dir(),
    ] {
        std::fs::create_dir_all(&d)
            .with_context(|| format!("cannot create {} ({hint})", d.display()))?;
    }
    let probe = data
        .run_dir()
        .join(format!(".probe-{}", std::process::id()));
    let res = (|| -> std::io::Result<()> {
        use std::io::Write;
        let mut f = std::fs::File::create(&probe)?;
        f.write_all(&[0u8; 4096])?;
        f.sync_all()
    })();
    let _ = std::fs::remove_file(&probe);
    res.with_context(|| {
        format!(
            "the data dir {} is not writable (or is full) ({hint})",
            data.root().display()
        )
    })?;
    Ok(())
}

/// The instructions a new group starts with.
const DEFAULT_AGENT_MD: &str =
    "# Instructions\n\nYou are a helpful personal assistant. Answer briefly.\n";
/// Largest `AGENT.md` the host copies for a sandbox.
const MAX_AGENT_MD: u64 = 1 << 20;

/// Makes the group's folder, its `.home`, and its `AGENT.md` when missing,
/// and returns the folder and the instructions. The folder is the agent's
/// workspace, so everything beneath it is opened beneath the data dir's
/// descriptor with no symlink followed ([`crate::safe_fs`]): a link the
/// agent planted as `AGENT.md` or `.home` is never written through, it is
/// removed (and logged) and the default instructions take its place.
fn ensure_group_folder(data: &DataDir, folder: &str) -> Result<(PathBuf, Vec<u8>)> {
    use crate::safe_fs::{Create, Dir, Error};
    use std::io::{Read, Write};
    let root = Dir::open_trusted(data.root())?;
    let g = root.create_dir_all(Path::new("groups").join(folder), 0o700)?;
    if let Err(e) = g.create_dir_all(".home", 0o700) {
        tracing::warn!(group = %folder, "the agent's home folder is unusable ({e}); its HOME may not be writable");
    }
    migrate_tools(data, &root, &g, folder);
    let write_default = |g: &Dir| -> Result<Vec<u8>> {
        let mut f = g.create_file("AGENT.md", Create::New, 0o600)?;
        f.write_all(DEFAULT_AGENT_MD.as_bytes()).with_context(|| {
            format!(
                "writing {}",
                data.group_dir(folder).join("AGENT.md").display()
            )
        })?;
        Ok(DEFAULT_AGENT_MD.as_bytes().to_vec())
    };
    let md = match g.open_file("AGENT.md") {
        Ok(f) => {
            let mut buf = Vec::new();
            f.take(MAX_AGENT_MD + 1)
                .read_to_end(&mut buf)
                .with_context(|| format!("reading {}", g.path().join("AGENT.md").display()))?;
            anyhow::ensure!(
                buf.len() as u64 <= MAX_AGENT_MD,
                "{} is larger than {MAX_AGENT_MD} bytes; shorten it",
                g.path().join("AGENT.md").display()
            );
            buf
        }
        Err(Error::Missing(_)) => write_default(&g)?,
        Err(e @ (Error::Symlink(_) | Error::NotRegular(_))) => {
            tracing::warn!(group = %folder, "{e}: removed it; the group starts again from the default instructions (something inside the sandbox replaced AGENT.md)");
            g.remove_file("AGENT.md")?;
            write_default(&g)?
        }
        Err(e) => return Err(e.into()),
    };
    Ok((data.group_dir(folder), md))
}

/// Before issue 14 approved packages lived in the workspace's `.tools`,
/// where the agent could replace the folder with a symlink; they now live
/// in the host-only `tools/<folder>/`. Moves an old real folder once (the
/// entry itself: nothing inside is followed) and says so.
fn migrate_tools(
    data: &DataDir,
    root: &crate::safe_fs::Dir,
    g: &crate::safe_fs::Dir,
    folder: &str,
) {
    let Ok(old) = g.dir(".tools") else { return };
    drop(old);
    let moved = root
        .create_dir_all("tools", 0o700)
        .and_then(|tools| match tools.dir(folder) {
            Ok(_) => Ok(false),
            Err(crate::safe_fs::Error::Missing(_)) => {
                g.rename(".tools", &tools, folder).map(|_| true)
            }
            Err(e) => Err(e),
        });
    match moved {
        Ok(true) => {
            tracing::info!(group = %folder, "moved approved packages from {} to {} (host-only)", g.path().join(".tools").display(), data.tools_dir(folder).display())
        }
        Ok(false) => {}
        Err(e) => {
            tracing::warn!(group = %folder, "could not move the old tools folder: {e}; approve the packages again")
        }
    }
}

/// Boots a host and returns its handle; the main loop runs on the current
/// tokio runtime (which must be multi-threaded: runners are spawned from
/// its long-lived worker threads, so `--die-with-parent` never fires early).
pub async fn start(cfg: HostConfig) -> Result<HostHandle> {
    // Private data dir (issue 14): nothing is created readable by others,
    // and what an older version left open is narrowed.
    crate::private::restrict_umask();
    let data = DataDir::new(cfg.data_dir.clone());
    data.check_socket_paths().map_err(anyhow::Error::msg)?;
    prepare_data_dir(&data)?;
    let lock = HostLock::acquire(&data.lock_file(), data.root())?;
    match crate::private::tighten(data.root()) {
        Ok(t) if t.dirs + t.files > 0 => tracing::warn!(dirs = t.dirs, files = t.files, failed = t.failed, "the data dir was readable by other users: removed group/other access from {} directories and {} files", t.dirs, t.files),
        Ok(_) => {}
        Err(e) => tracing::warn!("could not check the data dir's permissions: {e}"),
    }
    // A lost pinch.db beside session folders is not a first run (issue 15);
    // checked before the boot breaker, so a refusal is not counted as a crash.
    crate::central_file::check_before_open(&data)?;
    let mut central = Central::open(&data.central_db())?;
    crate::central_file::check_after_open(&data, central.is_bootstrapped()?)?;
    if cfg.boot_breaker {
        boot_breaker(&data).await;
    }
    let left = reap(&data.sessions_dir().to_string_lossy());
    if left > 0 {
        tracing::warn!(
            count = left,
            "killed sandboxes and runners left over from a previous host of this data dir"
        );
    }
    let mut sandbox =
        sandbox::select_with(cfg.sandbox, cfg.sandbox_limits).map_err(|e| anyhow::anyhow!(e))?;
    sandbox
        .prepare(&cfg.runner_exe, data.root(), &data.run_dir())
        .map_err(|e| anyhow::anyhow!("preparing the {} sandbox: {e}", sandbox.kind().as_str()))?;
    if sandbox.kind() == sandbox::Kind::Process {
        tracing::warn!("sandbox `process`: runners get NO isolation (they can read and write everything you can, and use the network); for development only");
    }
    if central.bootstrap(&cfg.login)? {
        tracing::info!(owner = %format!("cli:{}", cfg.login), "first run: created agent group `main`, the terminal conversation and its wiring");
    }
    if central.narrow_main_admin_scope()? {
        tracing::warn!("agent group `main` had admin_scope = global, the old default: narrowed to `group` (changes beyond its group now wait for your approval); to restore it: pinch admin groups config-set main --admin_scope global");
    }
    ensure_group_folder(&data, "main")?;
    std::fs::create_dir_all(data.group_dir("global"))
        .context("creating the global group folder")?;
    session::remove_stale_tmp(&data);

    let (ev_tx, mut ev_rx) = mpsc::unbounded_channel::<Event>();
    let (ch_tx, mut ch_rx) = mpsc::channel::<ChannelEvent>(1024);
    let cli = CliChannel::bind(&data.cli_socket(), cfg.login.clone(), ch_tx.clone())
        .with_context(|| format!("binding the CLI socket {}", data.cli_socket().display()))?;
    let mut channels: Channels = HashMap::new();
    channels.insert(
        cli.channel_type().to_owned(),
        cli.clone() as Arc<dyn Channel>,
    );
    for make in &cfg.extra_channels {
        let ch = make(ch_tx.clone());
        channels.insert(ch.channel_type().to_owned(), ch);
    }
    let mut routes = Vec::new();
    for make in &cfg.platforms {
        let (ch, router) = make(ch_tx.clone()).map_err(|e| anyhow::anyhow!(e))?;
        if let Some(r) = router {
            if cfg.http.is_none() {
                anyhow::bail!("the {} channel serves HTTP but no listener is configured (set [http] listen in pinch.toml)", ch.channel_type());
            }
            routes.push(r);
        }
        channels.insert(ch.channel_type().to_owned(), ch);
    }
    if cfg.http.as_ref().is_some_and(|h| h.web) {
        central
            .ensure_web_owner(&cfg.login)
            .context("wiring web chat to the agent `main`")?;
    }
    let (admin_tx, mut admin_rx) = mpsc::unbounded_channel();
    let http_server = match &cfg.http {
        Some(h) => Some(
            start_http(
                h,
                &data,
                &cfg.login,
                &ch_tx,
                &mut channels,
                routes,
                &admin_tx,
            )
            .await?,
        ),
        None => None,
    };
    let http_addr = http_server.as_ref().map(|s| s.addr);

    let watch_map: Arc<Mutex<HashMap<PathBuf, Arc<Shared>>>> = Arc::default();
    let watcher = {
        let map = watch_map.clone();
        match notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
            let Ok(ev) = res else { return };
            // Only a finished runner commit (or a new file) is worth a pass.
            if !pinch_runner_hint(&ev) {
                return;
            }
            for p in &ev.paths {
                if let Some(parent) = p.parent() {
                    if let Some(s) = map.lock().unwrap().get(parent) {
                        s.notify.notify_one();
                    }
                }
            }
        }) {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::warn!("inotify unavailable, deliveries rely on the 1 s poll: {e}");
                None
            }
        }
    };

    crate::admin::serve(&data.admin_socket(), admin_tx)
        .with_context(|| format!("binding the admin socket {}", data.admin_socket().display()))?;
    let (delivery_stop, _) = watch::channel(false);
    // Rolling online backups of pinch.db (issue 15), off the main loop.
    tokio::spawn(crate::backup::run_periodic(
        data.clone(),
        cfg.backup_every,
        cfg.backup_keep,
        delivery_stop.subscribe(),
    ));
    let stats = Arc::new(Stats::default());
    let sandbox_kind = sandbox.kind();
    let mut host = Host {
        cfg: cfg.clone(),
        data: data.clone(),
        central,
        sandbox,
        channels: Arc::new(channels),
        sessions: HashMap::new(),
        events: ev_tx.clone(),
        watcher,
        watch_map,
        delivery_stop,
        delivery_tasks: tokio::task::JoinSet::new(),
        proxies: HashMap::new(),
        proxy_tls: crate::proxy::tls_config(&cfg.proxy_extra_roots)
            .map_err(|e| anyhow::anyhow!("proxy TLS: {e}"))?,
        proxy_budget: Arc::new(crate::proxy::Budget::new(
            cfg.proxy_limits.clone(),
            crate::proxy::raise_nofile(),
        )),
        regexes: HashMap::new(),
        slot_queue: VecDeque::new(),
        pending_writes: Vec::new(),
        pending_acks: Vec::new(),
        a2a_sends: a2a::PairLimiter::default(),
        published_sessions: usize::MAX,
        stats: stats.clone(),
        shutting_down: false,
        notices_in_flight: Mutex::default(),
        notices_reflush: Mutex::default(),
        _lock: lock,
    };
    // Rebuild the view from the DBs: every active session is recovered, its
    // deliveries resumed and its due work woken.
    for row in host.central.active_sessions()? {
        let id = row.id.clone();
        if let Err(e) = host.load_session(row) {
            tracing::error!(session_id = %id, "cannot recover session at boot: {e:#}");
        }
    }
    let ids: Vec<String> = host.sessions.keys().cloned().collect();
    for id in ids {
        host.try_wake(&id);
    }
    host.flush_notices(None);
    tracing::info!(data_dir = %data.root().display(), sandbox = sandbox_kind.as_str(), socket = %data.cli_socket().display(), "pinch host ready");

    let metrics_tx = ch_tx.clone();
    let join = tokio::spawn(async move {
        let mut delivery_tick = tokio::time::interval(host.cfg.delivery_poll);
        let mut sweep_tick = tokio::time::interval(host.cfg.sweep_interval);
        sweep_tick.tick().await;
        let mut shutdown_deadline: Option<tokio::time::Instant> = None;
        loop {
            let deadline = shutdown_deadline;
            tokio::select! {
                Some(ev) = ev_rx.recv() => {
                    if let Event::Shutdown = ev {
                        if shutdown_deadline.is_none() {
                            shutdown_deadline = Some(tokio::time::Instant::now() + host.cfg.stop_grace);
                            host.begin_shutdown();
                        }
                    } else {
                        host.handle(ev);
                    }
                }
                Some(ev) = ch_rx.recv() => {
                    // Route what is queued, then commit it together: one
                    // transaction per session, sessions in parallel.
                    let t_route = Instant::now();
                    host.handle(Event::Channel(ev));
                    let mut n = 1;
                    while n < FLUSH_BATCH {
                        let Ok(ev) = ch_rx.try_recv() else { break };
                        host.handle(Event::Channel(ev));
                        n += 1;
                    }
                    tracing::trace!(events = n, ms = t_route.elapsed().as_millis() as u64, "routed a batch");
                }
                Some((req, reply)) = admin_rx.recv() => host.handle(Event::Admin(req, reply)),
                _ = delivery_tick.tick() => host.poke_live_deliveries(),
                _ = sweep_tick.tick() => {
                    host.sweep();
                    host.flush_notices(None);
                }
                _ = async { tokio::time::sleep_until(deadline.unwrap()).await }, if deadline.is_some() => {
                    host.kill_remaining();
                    shutdown_deadline = Some(tokio::time::Instant::now() + Duration::from_secs(3600));
                    // exits of killed runners arrive as events; give them a moment
                    let until = tokio::time::Instant::now() + Duration::from_secs(2);
                    while host.live_count() > 0 && tokio::time::Instant::now() < until {
                        match tokio::time::timeout_at(until, ev_rx.recv()).await {
                            Ok(Some(ev @ Event::RunnerExited { .. })) => host.handle(ev),
                            Ok(Some(_)) => {}
                            _ => break,
                        }
                    }
                }
            }
            host.flush();
            host.publish_gauges(metrics_tx.max_capacity() - metrics_tx.capacity());
            if shutdown_deadline.is_some() && host.live_count() == 0 {
                break;
            }
        }
        host.finish_shutdown().await;
        for ch in host.channels.values() {
            ch.close();
        }
        if let Some(s) = http_server {
            s.stop(Duration::from_secs(2)).await;
        }
        drop(cli);
        Ok(())
    });
    Ok(HostHandle {
        cli_socket: data.cli_socket(),
        http_addr,
        data_dir: data.root().to_owned(),
        sandbox: sandbox_kind,
        stats,
        control: ev_tx,
        join,
    })
}

impl Host {
    /// Commits routed rows (one transaction per session, up to
    /// [`FLUSH_THREADS`] sessions at once), then completes the acks of the
    /// events they belong to and wakes their sessions. An event whose rows
    /// did not commit is acked as failed (the platform redelivers; inserts
    /// are idempotent by id), partially stored events say so.
    fn flush(&mut self) {
        if self.pending_writes.is_empty() && self.pending_acks.is_empty() {
            return;
        }
        let t_flush = Instant::now();
        let mut lost: Vec<String> = Vec::new();
        let mut groups: Vec<(String, SessionDir, i64, Vec<pinch_proto::rows::NewInbound>)> =
            Vec::new();
        for (sid, row) in std::mem::take(&mut self.pending_writes) {
            match groups.iter_mut().find(|g| g.0 == sid) {
                Some(g) => g.3.push(row),
                None => {
                    let Some(s) = self.sessions.get(&sid) else {
                        lost.push(sid);
                        continue;
                    };
                    let out_max = s.shared.out_max.load(std::sync::atomic::Ordering::Relaxed);
                    groups.push((sid, s.dir.clone(), out_max, vec![row]));
                }
            }
        }
        for (sid, ..) in &groups {
            self.check_inbound_now(sid);
        }
        let results: Vec<Result<(), String>> = if groups.len() <= 1 {
            groups
                .iter()
                .map(|(_, dir, out_max, rows)| commit_rows(dir, rows, *out_max))
                .collect()
        } else {
            let next = std::sync::atomic::AtomicUsize::new(0);
            let slots: Vec<Mutex<Option<Result<(), String>>>> =
                groups.iter().map(|_| Mutex::new(None)).collect();
            std::thread::scope(|scope| {
                for _ in 0..groups.len().min(FLUSH_THREADS) {
                    scope.spawn(|| loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some((_, dir, out_max, rows)) = groups.get(i) else {
                            break;
                        };
                        *slots[i].lock().unwrap() = Some(commit_rows(dir, rows, *out_max));
                    });
                }
            });
            slots
                .into_iter()
                .map(|m| {
                    m.into_inner()
                        .unwrap()
                        .unwrap_or_else(|| Err("not written".into()))
                })
                .collect()
        };
        tracing::trace!(
            sessions = groups.len(),
            events = self.pending_acks.len(),
            ms = t_flush.elapsed().as_millis() as u64,
            "flushed routed rows"
        );
        let mut failed: HashMap<String, String> = HashMap::new();
        for sid in lost {
            failed.insert(sid, "the session is no longer loaded".into());
        }
        for ((sid, dir, out_max, rows), r) in groups.iter().zip(results) {
            // Our own file damaged: recovered, then written once more (issue 15).
            let r = r.or_else(|e| self.retry_if_repaired(sid, dir, rows, *out_max, e));
            match r {
                Ok(()) => {
                    if let Err(e) = self.central.touch_session(sid) {
                        tracing::warn!(session_id = %sid, "could not update last_active: {e:#}");
                    }
                }
                Err(e) => {
                    tracing::error!(session_id = %sid, "could not store inbound messages: {e}");
                    failed.insert(sid.clone(), e);
                }
            }
        }
        let mut wake: Vec<String> = Vec::new();
        for p in std::mem::take(&mut self.pending_acks) {
            let bad: Vec<&String> = p
                .stored
                .iter()
                .filter(|s| failed.contains_key(*s))
                .collect();
            // Not stored for every agent it was meant for: failed, so the
            // platform redelivers (the rows that did commit are idempotent).
            let outcome = if let Some(b) = bad.first() {
                if p.ack.is_none() {
                    tracing::error!(sessions = ?bad, "a replayed message could not be stored; it is kept in its approval's result");
                }
                AckOutcome::Failed(format!("could not store the message: {}", failed[*b]))
            } else {
                AckOutcome::Stored {
                    routed: p.stored.len(),
                    note: p.note,
                }
            };
            if let Some(ack) = p.ack {
                ack.complete(outcome);
            }
            for id in p.woken {
                if !failed.contains_key(&id) && !wake.contains(&id) {
                    wake.push(id);
                }
            }
        }
        // Once per session (a burst for one session is one wake check).
        for id in wake {
            self.try_wake(&id);
        }
    }

    fn live_count(&self) -> usize {
        self.sessions
            .values()
            .filter(|s| s.runner.is_some())
            .count()
    }

    fn handle(&mut self, ev: Event) {
        match ev {
            Event::Channel(ChannelEvent::Message(ev, ack)) => {
                if self.shutting_down {
                    ack.complete(AckOutcome::Failed(
                        "the host is shutting down; send again in a moment".into(),
                    ));
                    return;
                }
                let outcome = match self.route(&ev) {
                    Ok((stored, note, woken)) => {
                        self.pending_acks.push(PendingAck {
                            ack: Some(ack),
                            stored,
                            note,
                            woken,
                        });
                        return;
                    }
                    Err(e) => {
                        tracing::error!(channel = %ev.channel_type, "could not store an inbound message: {e:#}");
                        AckOutcome::Failed(format!("could not store the message: {e:#}"))
                    }
                };
                ack.complete(outcome);
            }
            Event::Channel(ChannelEvent::Click(c)) => self.on_click(c),
            Event::Channel(ChannelEvent::History { to, limit, reply }) => {
                let dirs = match self
                    .central
                    .messaging_group(&to.channel_type, &to.platform_id)
                {
                    Ok(Some(mg)) => self
                        .central
                        .session_dirs_of(&mg.id, &self.data)
                        .unwrap_or_else(|e| {
                            tracing::warn!(
                                "could not list a conversation's sessions for its history: {e:#}"
                            );
                            Vec::new()
                        }),
                    _ => Vec::new(),
                };
                // The reads run off the main loop.
                tokio::task::spawn_blocking(move || {
                    let _ = reply.send(crate::history::read(&dirs, &to, limit));
                });
            }
            Event::ApprovalAddressed {
                approval_id,
                approver,
                channel_type,
                platform_id,
                opened,
                done,
            } => {
                let _ = done.send(self.record_card_address(
                    &approval_id,
                    &approver,
                    &channel_type,
                    &platform_id,
                    opened,
                ));
            }
            Event::AgentAction {
                session_id,
                out_id,
                content,
                done,
            } => {
                let _ = done.send(
                    self.agent_action(&session_id, &out_id, &content)
                        .map(|()| "host".to_owned()),
                );
            }
            Event::AgentMessage {
                session_id,
                row,
                done,
            } => {
                let _ = done.send(self.agent_message(&session_id, &row));
            }
            Event::AddressRefused {
                session_id,
                agent_group,
                claimed,
            } => {
                // One audit row per session (the claim is the agent's text:
                // kept as the latest example, never as a key, so forged rows
                // cannot grow the central DB).
                if let Err(e) = self.central.audit_drop(
                    "outbound",
                    &session_id,
                    Some(&format!("agent:{agent_group}")),
                    Some(&claimed),
                    "address_refused",
                    None,
                    Some(&agent_group),
                ) {
                    tracing::warn!(session_id = %session_id, "could not record a refused address in the audit: {e:#}");
                }
            }
            Event::ApprovalUndeliverable { approval_id, why } => {
                tracing::error!(approval = %approval_id, "no approver could be reached ({why}); decide it with `pinch admin approvals approve {approval_id}` or `… reject {approval_id}`");
            }
            Event::QuestionAsked(q, done) => {
                let ok = match self.central.insert_pending_question(&q) {
                    Ok(()) => true,
                    Err(e) => {
                        tracing::error!(session_id = %q.session_id, "could not record a pending question (its delivery is retried): {e:#}");
                        false
                    }
                };
                let _ = done.send(ok);
            }
            Event::NoticeSent { notice, result } => self.notice_sent(notice, result),
            Event::Notice { to, text } => self.durable_notice(to, text),
            Event::Channel(ChannelEvent::Available { channel_type }) => {
                // Stored notices first: they are older than any reply.
                self.flush_notices(Some(&channel_type));
                for s in self.sessions.values() {
                    s.shared.notify.notify_one();
                }
            }
            Event::RunnerExited {
                session_id,
                runner_id,
                code,
                signal,
            } => self.on_exit(&session_id, &runner_id, code, signal),
            Event::WakeAt(id, due_ms) => self.wake_at(&id, due_ms),
            Event::SessionDbFault(id) => self.check_inbound_deep(&id),
            Event::LedgerRebuilt(id, text) => self.tell_ledger_rebuilt(&id, text),
            Event::OutboundChecked { session_id, result } => {
                self.outbound_checked(&session_id, result)
            }
            Event::Wake(id) => {
                if let Some(s) = self.sessions.get_mut(&id) {
                    s.wake_scheduled = false;
                }
                self.try_wake(&id);
            }
            Event::ToolsInstalled { approval, result } => self.tools_installed(&approval, result),
            Event::DiskChecked {
                session_id,
                runner_id,
                usage,
            } => self.disk_checked(&session_id, runner_id, usage),
            Event::StuckCheck {
                session_id,
                runner_id,
            } => self.stuck_check(&session_id, &runner_id),
            Event::StopDeadline {
                session_id,
                runner_id,
            } => {
                if let Some(l) = self
                    .sessions
                    .get(&session_id)
                    .and_then(|s| s.runner.as_ref())
                {
                    if l.runner_id == runner_id {
                        tracing::warn!(session_id = %session_id, runner_id = %runner_id, "runner did not stop within the grace, killing it");
                        kill(l.pid);
                        self.sandbox.kill_session(&session_id);
                    }
                }
            }
            Event::Control(Control::Sessions(tx)) => {
                let list = self
                    .sessions
                    .values()
                    .map(|s| SessionInfo {
                        id: s.row.id.clone(),
                        agent_group_id: s.row.agent_group_id.clone(),
                        dir: s.dir.root().to_owned(),
                        runner_id: s.runner.as_ref().map(|l| l.runner_id.clone()),
                        runner_pid: s.runner.as_ref().map(|l| l.pid),
                    })
                    .collect();
                let _ = tx.send(list);
            }
            Event::Control(Control::StopRunner(id, tx)) => {
                let _ = tx.send(self.request_stop(&id));
            }
            Event::Admin(req, reply) => {
                let _ = reply.send(self.admin(req));
            }
            Event::Shutdown => {}
        }
    }

    /// The main loop's own commands get their arguments checked (unknown
    /// keys, `--limit`/`--offset`) and their lists paged first.
    fn admin(&mut self, mut req: crate::admin::Request) -> crate::admin::Reply {
        let page = match crate::admin_cmds::loop_args(&req.command, &req.args) {
            Some(checked) => {
                let (args, page) = checked?;
                req.args = args;
                page
            }
            None => None,
        };
        let reply = self.admin_command(req);
        match page {
            Some(p) => reply.map(|v| p.apply(v)),
            None => reply,
        }
    }

    fn admin_command(&mut self, req: crate::admin::Request) -> crate::admin::Reply {
        use crate::admin::err;
        let arg = |k: &str| req.args.get(k).and_then(|v| v.as_str()).map(str::to_owned);
        let handler = |e: anyhow::Error| err("handler-error", format!("{e:#}"));
        match req.command.as_str() {
            "host-status" => Ok(serde_json::json!({
                "version": env!("CARGO_PKG_VERSION"),
                "data_dir": self.data.root(),
                "sandbox": self.sandbox.kind().as_str(),
                "sessions": self.sessions.len(),
                "live_runners": self.live_count(),
            })),
            "host-version" => Ok(
                serde_json::json!({"version": env!("CARGO_PKG_VERSION"), "runner_protocol": VERSION}),
            ),
            "channels-status" => {
                let mut names: Vec<&String> = self.channels.keys().collect();
                names.sort();
                Ok(serde_json::Value::Array(
                    names
                        .into_iter()
                        .map(|n| {
                            let c = self.channels[n].capabilities();
                            serde_json::json!({
                                "channel": n, "running": true, "threads": c.threads, "buttons": c.buttons, "edit": c.edit,
                                "reactions": c.reactions, "typing": c.typing, "files": c.files, "open_dm": c.open_dm, "max_text": c.max_text,
                            })
                        })
                        .collect(),
                ))
            }
            "groups-restart" => {
                // Stops the group's live runners; the next message (or due
                // work, at the sweep) starts fresh ones with the current config.
                let id = arg("id").ok_or_else(|| {
                    err(
                        "invalid-args",
                        "groups-restart needs a group id: pinch admin groups restart <id>",
                    )
                })?;
                if self.central.agent_folder(&id).map_err(handler)?.is_none() {
                    return Err(err("not-found", format!("no agent group {id}")));
                }
                let ids: Vec<String> = self
                    .sessions
                    .iter()
                    .filter(|(_, s)| s.row.agent_group_id == id && !s.closed)
                    .map(|(k, _)| k.clone())
                    .collect();
                let mut stopped = Vec::new();
                for sid in ids {
                    if self.request_stop(&sid) {
                        stopped.push(sid.clone());
                    }
                    self.try_wake(&sid);
                }
                Ok(serde_json::json!({"id": id, "stopped": stopped}))
            }
            "sessions-list" => {
                let mut rows = self.central.session_states().map_err(handler)?;
                for r in rows.iter_mut() {
                    let live = r["id"]
                        .as_str()
                        .and_then(|id| self.sessions.get(id))
                        .and_then(|s| s.runner.as_ref())
                        .map(|l| l.pid);
                    r["runner_pid"] = live.into();
                }
                Ok(serde_json::Value::Array(rows))
            }
            "sessions-get" => {
                let id =
                    arg("id").ok_or_else(|| err("invalid-args", "sessions-get needs args.id"))?;
                let rows = self.central.session_states().map_err(handler)?;
                rows.into_iter()
                    .find(|r| r["id"] == id.as_str())
                    .ok_or_else(|| err("not-found", format!("no session {id}")))
            }
            "sessions-resume" => {
                let id = arg("id")
                    .ok_or_else(|| err("invalid-args", "sessions-resume needs args.id"))?;
                if !self.sessions.contains_key(&id) {
                    return Err(err("not-found", format!("no active session {id}")));
                }
                let was = self.sessions.get(&id).is_some_and(|s| s.quarantined);
                self.lift_quarantine(&id, "pinch admin sessions resume");
                self.try_wake(&id);
                Ok(serde_json::json!({"id": id, "was_quarantined": was}))
            }
            "sessions-stop" | "sessions-restart" => {
                let id = arg("id").ok_or_else(|| {
                    err(
                        "invalid-args",
                        format!(
                            "{} needs a session id: pinch admin sessions {} <id>",
                            req.command,
                            &req.command[9..]
                        ),
                    )
                })?;
                if !self.sessions.contains_key(&id) {
                    return Err(err("not-found", format!("no active session {id}")));
                }
                let was_running = self.request_stop(&id);
                if req.command == "sessions-restart" {
                    // The next wake (a message, or the sweep with due work) spawns afresh.
                    self.try_wake(&id);
                }
                Ok(serde_json::json!({"id": id, "was_running": was_running}))
            }
            "sessions-close" => {
                let id = arg("id").ok_or_else(|| {
                    err(
                        "invalid-args",
                        "sessions-close needs a session id: pinch admin sessions close <id>",
                    )
                })?;
                if !self.sessions.contains_key(&id) {
                    return Err(err("not-found", format!("no active session {id}")));
                }
                let was_running = self.request_stop(&id);
                self.central.close_session(&id).map_err(handler)?;
                if let Some(s) = self.sessions.get_mut(&id) {
                    s.closed = true;
                }
                Ok(serde_json::json!({"id": id, "closed": true, "was_running": was_running}))
            }
            "approvals-approve" | "approvals-reject" => {
                let id = arg("id").ok_or_else(|| {
                    err(
                        "invalid-args",
                        format!(
                            "{} needs an approval id: pinch admin approvals {} <id>",
                            req.command,
                            &req.command[10..]
                        ),
                    )
                })?;
                let a = self
                    .central
                    .approval(&id)
                    .map_err(handler)?
                    .ok_or_else(|| err("not-found", format!("no approval {id}")))?;
                if a.status != "pending" {
                    return Err(err(
                        "invalid-args",
                        format!("approval {id} is already {}", a.status),
                    ));
                }
                if time::parse(&a.expires_at).is_ok_and(|t| t <= jiff::Timestamp::now()) {
                    self.expire(&a);
                    return Err(err("invalid-args", format!("approval {id} has expired")));
                }
                let value = if req.command == "approvals-approve" {
                    match arg("value") {
                        Some(v) => v,
                        None if a.action == "register" => {
                            return Err(err("invalid-args", format!("a registration needs --value connect:<agent group id> (or `new`); options: {}", a.options.iter().map(|o| o.value.as_str()).collect::<Vec<_>>().join(", "))))
                        }
                        None => a.options.first().map(|o| o.value.clone()).unwrap_or_default(),
                    }
                } else {
                    a.options
                        .last()
                        .map(|o| o.value.clone())
                        .unwrap_or_default()
                };
                if !a.options.iter().any(|o| o.value == value) {
                    return Err(err(
                        "invalid-args",
                        format!(
                            "{value:?} is not an option of approval {id}; options: {}",
                            a.options
                                .iter()
                                .map(|o| o.value.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    ));
                }
                let by = format!("cli:{}", self.cfg.login);
                let text = self.decide(&a, &value, &by, None).map_err(handler)?;
                Ok(serde_json::json!({"id": id, "value": value, "result": text}))
            }
            "tasks-list" => {
                // Optional filters: --ag <group>, --session <id>.
                let (ag, sid) = (arg("ag"), arg("session"));
                let mut out = Vec::new();
                let mut ids: Vec<&String> = self.sessions.keys().collect();
                ids.sort();
                for id in ids {
                    let s = &self.sessions[id];
                    if s.closed
                        || ag.as_ref().is_some_and(|a| *a != s.row.agent_group_id)
                        || sid.as_ref().is_some_and(|x| x != id)
                    {
                        continue;
                    }
                    for mut t in crate::tasks::live(&s.dir).map_err(handler)? {
                        t["session"] = id.clone().into();
                        t["agent_group"] = s.row.agent_group_id.clone().into();
                        out.push(t);
                    }
                }
                out.sort_by(|a, b| a["next"].as_str().cmp(&b["next"].as_str()));
                Ok(serde_json::Value::Array(out))
            }
            "tasks-pause" | "tasks-resume" | "tasks-cancel" => {
                let verb = &req.command[6..];
                let id = arg("id").ok_or_else(|| err("invalid-args", format!("tasks-{verb} needs a task id or series id: pinch admin tasks {verb} <id> (see `pinch admin tasks list`)")))?;
                let holder = self
                    .sessions
                    .iter()
                    .filter(|(_, s)| !s.closed)
                    .find(|(_, s)| crate::tasks::holds(&s.dir, &id).unwrap_or(false))
                    .map(|(k, _)| k.clone());
                let Some(sid) = holder else {
                    return Err(err("not-found", format!("no live task has the id or series id {id:?} (see `pinch admin tasks list`)")));
                };
                let s = &self.sessions[&sid];
                let out_max = s.shared.out_max.load(std::sync::atomic::Ordering::Relaxed);
                let action = format!("{verb}_task");
                let done = crate::tasks::apply(
                    &s.dir,
                    &action,
                    &serde_json::json!({"id": id}),
                    &self.cfg.timezone,
                    out_max,
                )
                .map_err(|e| {
                    let m = format!("{e:#}");
                    // "no paused task has the id …" and the like.
                    err(
                        if m.starts_with("no ") {
                            "not-found"
                        } else {
                            "handler-error"
                        },
                        m,
                    )
                })?;
                tracing::info!(session_id = %sid, task = %id, action = %action, "task changed by the owner");
                if let Some(due) = done.wake_at {
                    self.wake_at(&sid, due.as_millisecond());
                }
                let mut r = done.result;
                r["session"] = sid.into();
                Ok(r)
            }
            other => {
                let reply = crate::admin_cmds::dispatch(&self.central.conn, &crate::admin_cmds::Caller::Owner, other, &req.args)
                    .unwrap_or_else(|| Err(err("unknown-command", format!("unknown command {other:?}; run `pinch admin --help` for the resources and verbs"))));
                if reply.is_ok()
                    && (other.starts_with("destinations-")
                        || other.starts_with("wirings-")
                        || other.starts_with("messaging-groups-")
                        || other == "groups-delete")
                {
                    self.reproject_all();
                }
                reply
            }
        }
    }

    /// The active session for (ag, mg, thread), created if missing.
    fn session_for(&mut self, ag_id: &str, mg_id: &str, thread_id: Option<&str>) -> Result<String> {
        self.session_in(ag_id, Some(mg_id), thread_id)
    }

    /// The active session for (ag, mg or none, thread), created if missing.
    fn session_in(
        &mut self,
        ag_id: &str,
        mg_id: Option<&str>,
        thread_id: Option<&str>,
    ) -> Result<String> {
        if let Some(row) = self.central.find_session(ag_id, mg_id, thread_id)? {
            if !self.sessions.contains_key(&row.id) {
                let id = row.id.clone();
                self.load_session(row)?;
                return Ok(id);
            }
            return Ok(row.id);
        }
        let folder = self
            .central
            .agent_folder(ag_id)?
            .with_context(|| format!("agent group {ag_id} has no folder"))?;
        ensure_group_folder(&self.data, &folder)?;
        let id = format!("s{}", random_hex(crate::paths::SESSION_ID_HEX / 2));
        let dir = session::create_folder(&self.data, ag_id, &id)?;
        let row = SessionRow {
            id: id.clone(),
            agent_group_id: ag_id.to_owned(),
            messaging_group_id: mg_id.map(str::to_owned),
            thread_id: thread_id.map(str::to_owned),
            folder,
        };
        if let Err(e) = self.central.insert_session(&row, &self.cfg.provider.kind) {
            let _ = std::fs::remove_dir_all(dir.root());
            return Err(e.context("recording the new session"));
        }
        tracing::info!(session_id = %id, agent_group = %ag_id, "session created");
        self.load_session(row)?;
        Ok(id)
    }

    /// Brings a session under management: recovery opens, projection,
    /// delivery task. Used at boot and on first use.
    fn load_session(&mut self, row: SessionRow) -> Result<()> {
        let dir = self.data.session(&row.agent_group_id, &row.id);
        if !dir.root().exists() {
            anyhow::bail!("session folder {} is missing", dir.root().display());
        }
        // Our own file: still the one we made (identity), hot journal
        // rolled back, migrated lazily; never silently recreated (issue 15).
        let inbound_stamp =
            self.inspect_inbound(&row, &dir, None, crate::session_check::Depth::Identity);
        // No runner of this session is alive here: roll back a torn runner write.
        pinch_proto::open::recovery_open(&dir.outbound_db(), session::BUSY)?;
        self.project(&row, &dir)?;
        let shared = Shared::new();
        shared.out_max.store(
            pinch_proto::seq::other_max(&dir.outbound_db(), "messages_out"),
            std::sync::atomic::Ordering::Relaxed,
        );
        let mut task = delivery::Task::new(
            row.id.clone(),
            dir.clone(),
            self.channels.clone(),
            shared.clone(),
            self.events.clone(),
        );
        task.timezone = self.cfg.timezone.clone();
        task.agent_group = row.agent_group_id.clone();
        use tracing::Instrument;
        let span = tracing::info_span!("delivery", session_id = %row.id);
        self.delivery_tasks
            .spawn(task.run(self.delivery_stop.subscribe()).instrument(span));
        self.central.set_runner_state(&row.id, "stopped", None)?;
        let quarantined = self.central.quarantine_of(&row.id)?.is_some();
        // The crash budget as the last host left it (issue 15, break 6).
        let (exits_ms, next_spawn_at) = self.restore_budget(&row.id);
        // A scheduled task falling due later wakes the session then.
        match session::next_due(&dir) {
            Ok(Some(t)) => self.wake_at(&row.id, t.as_millisecond()),
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(session_id = %row.id, "cannot read scheduled tasks (the sweep still wakes due ones): {e:#}")
            }
        }
        self.sessions.insert(
            row.id.clone(),
            SessionRt {
                row,
                dir,
                shared,
                runner: None,
                exits_ms,
                next_spawn_at,
                backoff_told: None,
                wake_scheduled: false,
                wake_failures: 0,
                orphans_pending: None,
                quarantined,
                closed: false,
                disk: Default::default(),
                inbound_stamp,
                integrity_checked: None,
                checking: false,
            },
        );
        Ok(())
    }

    /// A session's abnormal exits still in the budget's window, and when
    /// its back-off after the last of them ends (if still ahead).
    fn restore_budget(&self, id: &str) -> (Vec<i64>, Option<Instant>) {
        let now = now_ms();
        let window = self.cfg.budget.window.as_millis() as i64;
        let exits = match self.central.budget_exits(id, now - window) {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(session_id = %id, "cannot read the crash budget (it starts empty): {e:#}");
                return (Vec::new(), None);
            }
        };
        let Some(&last) = exits.last() else {
            return (exits, None);
        };
        let next = match pinch_policy::budget::after_abnormal_exit(
            last,
            &exits,
            false,
            &self.cfg.budget,
        ) {
            pinch_policy::budget::Verdict::Respawn(d) => {
                let ends = last + d.as_millis() as i64;
                (ends > now).then(|| Instant::now() + Duration::from_millis((ends - now) as u64))
            }
            pinch_policy::budget::Verdict::Quarantine => None,
        };
        (exits, next)
    }

    /// Re-projects destinations and routing into every loaded session
    /// (after an admin change to destinations or wirings).
    fn reproject_all(&self) {
        for s in self.sessions.values() {
            if let Err(e) = self.project(&s.row, &s.dir) {
                tracing::warn!(session_id = %s.row.id, "could not re-project destinations: {e:#}");
            }
        }
    }

    fn project(&self, row: &SessionRow, dir: &SessionDir) -> Result<()> {
        let dests = self.central.destinations(&row.agent_group_id)?;
        let routing = match row.messaging_group_id.as_deref() {
            Some(mg) => match self.central.messaging_group_by_id(mg)? {
                Some(m) => Routing {
                    channel_type: Some(m.channel_type),
                    platform_id: Some(m.platform_id),
                    thread_id: row.thread_id.clone(),
                },
                None => Routing::default(),
            },
            None => Routing::default(),
        };
        session::project(dir, &dests, &routing)
    }

    /// Spawns the session's runner if it has due work and none is alive
    /// (single-flight: only the main loop spawns, one event at a time).
    fn try_wake(&mut self, id: &str) {
        if self.shutting_down {
            return;
        }
        let live = self.live_count();
        let events = self.events.clone();
        let Some(s) = self.sessions.get_mut(id) else {
            return;
        };
        if s.runner.is_some() {
            return; // the live runner sees the write through inotify on in/
        }
        if s.closed {
            return;
        }
        if s.quarantined {
            tracing::debug!(session_id = %id, "wake refused: the session is quarantined");
            return;
        }
        if s.checking {
            tracing::debug!(session_id = %id, "wake deferred: its outbound.db is being checked");
            return;
        }
        if !self.disk_allows_spawn(id) {
            tracing::debug!(session_id = %id, "wake refused: the session is over its disk quota (measuring again)");
            return;
        }
        let Some(s) = self.sessions.get_mut(id) else {
            return;
        };
        if let Some(at) = s.next_spawn_at {
            let now = Instant::now();
            if at > now {
                if !s.wake_scheduled {
                    s.wake_scheduled = true;
                    let id = id.to_owned();
                    tokio::spawn(async move {
                        tokio::time::sleep(at - now).await;
                        let _ = events.send(Event::Wake(id));
                    });
                }
                self.tell_backoff(id, at - now);
                return;
            }
        }
        if live >= self.cfg.max_concurrent_runners && self.slot_queue.iter().any(|q| q == id) {
            return; // already waiting for a slot; checked again when one frees
        }
        self.check_inbound_now(id);
        let Some(s) = self.sessions.get_mut(id) else {
            return;
        };
        match session::has_due_trigger(&s.dir) {
            Ok(true) => s.wake_failures = 0,
            Ok(false) => {
                s.wake_failures = 0;
                return;
            }
            Err(e) => {
                // Never throws: retry with a growing delay (1 s … 60 s).
                s.wake_failures += 1;
                let delay = Duration::from_secs(1u64 << s.wake_failures.min(6))
                    .min(Duration::from_secs(60));
                tracing::warn!(session_id = %id, retry_in_s = delay.as_secs(), "cannot check for due work: {e:#}");
                if session_db::is_corrupt(&e) {
                    let _ = events.send(Event::SessionDbFault(id.to_owned()));
                }
                if !s.wake_scheduled {
                    s.wake_scheduled = true;
                    let id = id.to_owned();
                    tokio::spawn(async move {
                        tokio::time::sleep(delay).await;
                        let _ = events.send(Event::Wake(id));
                    });
                }
                return;
            }
        }
        if let Some(transient) = s.orphans_pending {
            self.resolve_orphans(id, transient);
            if self
                .sessions
                .get(id)
                .is_some_and(|s| s.orphans_pending.is_some())
            {
                // Still unreadable: try again shortly (and the sweep retries too).
                self.wake_at(id, now_ms() + 2_000);
                return;
            }
        }
        if live >= self.cfg.max_concurrent_runners {
            if !self.slot_queue.iter().any(|q| q == id) {
                self.slot_queue.push_back(id.to_owned());
            }
            return;
        }
        if let Err(e) = self.spawn(id) {
            tracing::error!(session_id = %id, "runner spawn failed: {e:#}");
            let detail = format!("{e:#}");
            let _ = self.central.record_exit(
                id,
                "-",
                &time::now(),
                None,
                None,
                Cause::SpawnFailed.as_str(),
                Some(&detail),
            );
            // Like an abnormal exit: counted, and retried by an event after
            // the back-off (never a nested wake: issue 15, break 1).
            if self.count_abnormal(
                id,
                Cause::SpawnFailed,
                "could not be started",
                Some(&detail),
            ) {
                self.wake_after_backoff(id);
            }
        }
    }

    /// A message is waiting while the session backs off for longer than
    /// [`BACKOFF_NOTICE_AFTER`]: tells its conversation once per back-off
    /// that the agent is restarting, and when (issue 15).
    fn tell_backoff(&mut self, id: &str, left: Duration) {
        if left < BACKOFF_NOTICE_AFTER {
            return;
        }
        let Some(s) = self.sessions.get_mut(id) else {
            return;
        };
        if s.backoff_told.is_some() && s.backoff_told == s.next_spawn_at {
            return;
        }
        if !matches!(session::has_due_trigger(&s.dir), Ok(true)) {
            return; // nobody is waiting (yet): told when a message is
        }
        s.backoff_told = s.next_spawn_at;
        let exits = s.exits_ms.len();
        let routing = pinch_proto::open::open_reader(&s.dir.inbound_db(), session::BUSY)
            .ok()
            .and_then(|c| pinch_proto::rows::routing(&c).ok().flatten());
        let secs = left.as_secs_f64().ceil() as u64;
        let when = if secs < 90 {
            format!("{secs} s")
        } else {
            format!("{} min", secs.div_ceil(60))
        };
        tracing::info!(session_id = %id, wait_s = secs, "told the user the agent restarts after its back-off");
        if let Some(r) = routing {
            self.notify_origin(r.channel_type, r.platform_id, r.thread_id, format!(
                "The assistant stopped unexpectedly ({exits} times recently) and is restarting: it will pick up your message in about {when}."
            ));
        }
    }

    /// Schedules a `Wake` for when the session's back-off ends. The only way
    /// a retry is started: an event handled on its own, so a loop of
    /// failures is a sequence of events, never a recursion.
    fn wake_after_backoff(&mut self, id: &str) {
        let events = self.events.clone();
        let Some(s) = self.sessions.get_mut(id) else {
            return;
        };
        if s.wake_scheduled {
            return;
        }
        let at = s
            .next_spawn_at
            .unwrap_or_else(Instant::now)
            .max(Instant::now() + pinch_policy::budget::MIN_RETRY_DELAY);
        s.wake_scheduled = true;
        let id = id.to_owned();
        tokio::spawn(async move {
            tokio::time::sleep_until(at.into()).await;
            let _ = events.send(Event::Wake(id));
        });
    }

    /// Gauges for `/metrics`: sessions by state, the channel queue, and
    /// (when the set changed) the session folders to count pending work in.
    fn publish_gauges(&mut self, queue: usize) {
        use std::sync::atomic::Ordering::Relaxed;
        let m = &crate::metrics::METRICS;
        let (mut active, mut running, mut quarantined) = (0u64, 0u64, 0u64);
        for s in self.sessions.values().filter(|s| !s.closed) {
            active += 1;
            running += s.runner.is_some() as u64;
            quarantined += s.quarantined as u64;
        }
        m.sessions_active.store(active, Relaxed);
        m.sessions_running.store(running, Relaxed);
        m.sessions_quarantined.store(quarantined, Relaxed);
        m.channel_queue.store(queue as u64, Relaxed);
        if self.published_sessions != active as usize {
            self.published_sessions = active as usize;
            m.set_session_dirs(
                self.sessions
                    .values()
                    .filter(|s| !s.closed)
                    .map(|s| s.dir.root().to_owned())
                    .collect(),
            );
        }
    }

    /// The group's extra folders that pass the allowlist (SPEC §7.8); the
    /// rest are logged with their reasons and left out.
    fn extra_mounts(&self, ag: &str) -> Vec<pinch_policy::mounts::Granted> {
        use pinch_proto::rusqlite::OptionalExtension;
        let requests: Option<String> = self
            .central
            .conn
            .query_row(
                "SELECT extra_mounts FROM agent_configs WHERE agent_group_id = ?1",
                [ag],
                |r| r.get(0),
            )
            .optional()
            .ok()
            .flatten()
            .flatten();
        if requests
            .as_deref()
            .is_none_or(|r| r.trim().is_empty() || r.trim() == "[]")
        {
            return Vec::new();
        }
        let Some(path) = &self.cfg.mount_allowlist else {
            tracing::warn!(agent_group = %ag, "extra folders are configured but no mount allowlist is: none are mounted");
            return Vec::new();
        };
        let allow = match crate::mounts::load(path) {
            Ok(a) => a,
            Err(e) => {
                tracing::error!(agent_group = %ag, "no extra folders mounted: {e:#}");
                return Vec::new();
            }
        };
        let mut protected =
            vec![std::fs::canonicalize(self.data.root())
                .unwrap_or_else(|_| self.data.root().to_owned())];
        if let Some(dir) = path.parent() {
            protected.push(std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_owned()));
        }
        let (ok, refused) = crate::mounts::resolve(requests.as_deref(), &allow, &protected);
        for r in refused {
            tracing::warn!(agent_group = %ag, "extra folder not mounted: {r}");
        }
        ok
    }

    fn spawn(&mut self, id: &str) -> Result<()> {
        let s = self.sessions.get(id).expect("session exists");
        let span =
            tracing::info_span!("session", session_id = %id, agent_group = %s.row.agent_group_id);
        let _g = span.enter();
        let dir = s.dir.clone();
        let row = s.row.clone();
        self.project(&row, &dir)?;
        let runner_id = format!("r{}", random_hex(6));
        let (agent_dir, agent_md) = ensure_group_folder(&self.data, &row.folder)?;
        // The sandbox gets the host's copy of the instructions, from a
        // folder no sandbox binds (issue 14).
        crate::safe_fs::Dir::open_trusted(self.data.root())?
            .dir(
                dir.root()
                    .strip_prefix(self.data.root())
                    .context("the session folder is inside the data dir")?,
            )?
            .write_atomic("AGENT.md", &agent_md, 0o600)?;
        let local_model = (self.cfg.provider.kind == "local")
            .then(|| self.cfg.provider.model.clone().map(PathBuf::from))
            .flatten();
        let mounts = Mounts {
            in_dir: match &self.cfg.in_dir_view {
                Some(view) => view(&dir.in_dir()).context("preparing the sandbox's view of in/")?,
                None => dir.in_dir(),
            },
            out_dir: dir.out_dir(),
            inbox_dir: dir.inbox(),
            outbox_dir: dir.outbox(),
            agent_dir,
            global_dir: self.data.group_dir("global"),
            proxy_dir: Some(self.ensure_proxy(&row.id, &row.agent_group_id)?),
            models_dir: Some(self.data.models_dir()),
            model_file: local_model.clone(),
            extra: self.extra_mounts(&row.agent_group_id),
            tools_dir: Some(self.data.tools_dir(&row.folder)),
            agent_md: Some(dir.agent_md()),
            data_root: self.data.root().to_owned(),
        };
        // `local`: runner.json names the model as the runner will see it.
        let mut provider = self.cfg.provider.clone();
        if let Some(host_path) = &local_model {
            provider.model = Some(
                self.sandbox
                    .model_path(&mounts, host_path)
                    .to_string_lossy()
                    .into_owned(),
            );
        }
        let proxy_socket = match self.sandbox.kind() {
            sandbox::Kind::Bwrap | sandbox::Kind::Docker => "/pinch/run/llm.sock".to_owned(),
            sandbox::Kind::Process => mounts
                .proxy_dir
                .as_ref()
                .map(|d| d.join("llm.sock").to_string_lossy().into_owned())
                .unwrap_or_default(),
        };
        let rc = RunnerConfig {
            version: VERSION,
            session_id: row.id.clone(),
            runner_id: runner_id.clone(),
            agent_group_id: row.agent_group_id.clone(),
            agent_name: row.agent_group_id.clone(),
            assistant_name: self
                .central
                .assistant_name(&row.agent_group_id)
                .unwrap_or_else(|e| {
                    tracing::warn!(
                        "reading the assistant name failed (the prompt uses the agent id): {e}"
                    );
                    None
                }),
            paths: self.sandbox.runner_paths(&mounts),
            provider,
            timezone: self.cfg.timezone.clone(),
            timings: self.cfg.runner.clone(),
            batch_size: self.cfg.batch_size,
            proxy_socket: Some(proxy_socket.clone().into()),
            mcp_servers: self.cfg.mcp_servers_for(
                &row.agent_group_id,
                self.central.agent_mcp_servers(&row.agent_group_id)?,
            ),
        };
        let _ = std::fs::remove_file(dir.stop_file());
        write_atomic(
            &dir.runner_json(),
            serde_json::to_string_pretty(&rc)?.as_bytes(),
        )?;
        pinch_proto::open::recovery_open(&dir.outbound_db(), session::BUSY)?;
        match std::fs::remove_file(dir.heartbeat()) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).context("deleting the old heartbeat"),
        }
        let log_dir = self.data.runner_logs(&row.id);
        std::fs::create_dir_all(&log_dir)?;
        prune_logs(&log_dir, 4);
        let log_path = log_dir.join(format!("{runner_id}.log"));
        let log = std::fs::File::create(&log_path)
            .with_context(|| format!("creating {}", log_path.display()))?;
        // Approved packages (SPEC §7.6) come first on PATH.
        let tools_root = if self.sandbox.kind().isolated() {
            PathBuf::from(crate::tools_dir::SANDBOX_TOOLS)
        } else {
            mounts.tools_dir.clone().unwrap_or_default()
        };
        let (mut tool_path, python_path) = crate::tools_dir::env_for(&tools_root);
        tool_path.extend(["/usr/local/bin", "/usr/bin", "/bin"].map(str::to_owned));
        let env = vec![
            ("PINCH_PROXY".to_owned(), proxy_socket),
            ("PATH".to_owned(), tool_path.join(":")),
            ("PYTHONPATH".to_owned(), python_path),
            (
                "HOME".to_owned(),
                if self.sandbox.kind().isolated() {
                    "/workspace/agent/.home".to_owned()
                } else {
                    mounts
                        .agent_dir
                        .join(".home")
                        .to_string_lossy()
                        .into_owned()
                },
            ),
            ("LANG".to_owned(), "C.UTF-8".to_owned()),
            ("TZ".to_owned(), self.cfg.timezone.clone()),
            ("PINCH_LOG".to_owned(), self.cfg.runner_log.clone()),
            ("PINCH_SESSION_ID".to_owned(), row.id.clone()),
        ];
        // Liveness pipe (decision 0006): the runner holds the read end as fd
        // 3 and exits on EOF, so it never outlives this host, whatever
        // happens to the sandbox's own parent-death signal.
        let (alive_r, alive_w) = liveness_pipe().context("creating the liveness pipe")?;
        let mut env = env;
        let fds = self.sandbox.passes_fds();
        if fds {
            env.push(("PINCH_HOST_FD".to_owned(), HOST_FD.to_string()));
        }
        let mut cmd = self
            .sandbox
            .command(&self.cfg.runner_exe, &mounts, &env)
            .context("preparing the sandbox")?;
        cmd.stdin(std::process::Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        if fds {
            use std::os::fd::AsRawFd;
            use std::os::unix::process::CommandExt;
            let r = alive_r.as_raw_fd();
            // SAFETY: dup2 is async-signal-safe; it clears CLOEXEC on fd 3 only.
            unsafe {
                cmd.pre_exec(move || {
                    if r == HOST_FD {
                        // dup2 onto itself would keep close-on-exec set.
                        if libc::fcntl(r, libc::F_SETFD, 0) < 0 {
                            return Err(std::io::Error::last_os_error());
                        }
                    } else if libc::dup2(r, HOST_FD) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        if self.sandbox.kind() == sandbox::Kind::Process {
            tracing::warn!(
                "starting a runner WITHOUT a sandbox (--sandbox process): development only"
            );
        }
        let mut child = tokio::process::Command::from(cmd)
            .kill_on_drop(false)
            .spawn()
            .with_context(|| format!("starting the {} sandbox", self.sandbox.kind().as_str()))?;
        drop(alive_r);
        let pid = child.id().unwrap_or(0);
        let started_at = time::now();
        // The child is running: from here nothing may abort the bookkeeping,
        // or the exit would never be watched.
        if let Err(e) = self
            .central
            .set_runner_state(&row.id, "running", Some(&runner_id))
        {
            tracing::warn!("could not record the runner state: {e:#}");
        }
        if let Some(w) = self.watcher.as_mut() {
            use notify::Watcher;
            if let Err(e) = w.watch(&dir.out_dir(), notify::RecursiveMode::NonRecursive) {
                tracing::warn!("cannot watch {}: {e}", dir.out_dir().display());
            }
        }
        self.watch_map
            .lock()
            .unwrap()
            .insert(dir.out_dir(), self.sessions[id].shared.clone());
        let events = self.events.clone();
        let (sid, rid) = (row.id.clone(), runner_id.clone());
        tokio::spawn(async move {
            let status = child.wait().await;
            let (code, signal) = match status {
                Ok(st) => {
                    use std::os::unix::process::ExitStatusExt;
                    (st.code(), st.signal())
                }
                Err(e) => {
                    tracing::error!(session_id = %sid, "waiting for the runner failed: {e}");
                    (None, None)
                }
            };
            let _ = events.send(Event::RunnerExited {
                session_id: sid,
                runner_id: rid,
                code,
                signal,
            });
        });
        self.stats
            .spawns
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        crate::metrics::METRICS
            .spawns
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tracing::info!(runner_id = %runner_id, pid, sandbox = self.sandbox.kind().as_str(), log = %log_path.display(), "runner spawned");
        let disk_watch = self.watch_disk(id, &runner_id);
        let spawned_ms = now_ms();
        // The runner's stuck timer: first due when its earliest deadline
        // could pass, then at each next deadline its state gives.
        self.schedule_stuck_check(
            id,
            &runner_id,
            pinch_policy::sweep::first_deadline(spawned_ms, &self.cfg.stuck),
        );
        let s = self.sessions.get_mut(id).expect("session exists");
        s.runner = Some(Live {
            runner_id,
            pid,
            started_at,
            spawned_ms,
            stop_requested_at: None,
            kill_reason: None,
            stuck_read_failures: 0,
            stuck_read_error: None,
            _alive: Some(alive_w),
            _disk_watch: disk_watch,
        });
        Ok(())
    }

    fn on_exit(&mut self, id: &str, runner_id: &str, code: Option<i32>, signal: Option<i32>) {
        self.stats
            .exits
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        crate::metrics::METRICS.exit(code, signal);
        // bwrap and docker report a runner killed by a signal as 128 + n.
        let (code, signal) = exit::unwrap_status(code, signal, self.sandbox.kind().isolated());
        let shutting_down = self.shutting_down;
        let Some(s) = self.sessions.get_mut(id) else {
            return;
        };
        let span = tracing::info_span!("session", session_id = %id);
        let _g = span.enter();
        let Some(live) = s.runner.take_if(|l| l.runner_id == runner_id) else {
            return;
        };
        let asked = live.stop_requested_at.is_some();
        let cause = exit::classify(code, signal, shutting_down);
        let cause_str = match (cause, live.kill_reason) {
            (Cause::Killed, Some(_)) => "killed_stuck",
            (Cause::Transient, _)
                if detail_is_corruption(
                    &self.data.runner_logs(id).join(format!("{runner_id}.log")),
                ) =>
            {
                "corruption"
            }
            (c, _) => c.as_str(),
        };
        let log = self.data.runner_logs(id).join(format!("{runner_id}.log"));
        // The cause the runner itself logged (not whatever it said last).
        let detail = last_error_line(&log);
        let what = exit::describe(code, signal);
        if cause.is_abnormal() {
            tracing::warn!(
                runner_id,
                cause = cause_str,
                last_log = detail.as_deref().unwrap_or(""),
                "runner {} ({what})",
                cause.meaning()
            );
        } else {
            tracing::info!(
                runner_id,
                cause = cause_str,
                "runner {} ({what})",
                cause.meaning()
            );
        }
        let detail = match live.kill_reason {
            Some(r) => Some(format!("killed as stuck: {r}")),
            None => detail,
        };
        let _ = self.central.record_exit(
            id,
            runner_id,
            &live.started_at,
            code,
            signal,
            cause_str,
            detail.as_deref(),
        );
        let _ = self.central.set_runner_state(id, "stopped", None);
        self.watch_map.lock().unwrap().remove(&s.dir.out_dir());
        if let Some(w) = self.watcher.as_mut() {
            use notify::Watcher;
            let _ = w.unwatch(&s.dir.out_dir());
        }
        if let Err(e) = pinch_proto::open::recovery_open(&s.dir.outbound_db(), session::BUSY) {
            tracing::warn!("recovery open of outbound.db failed: {e}");
        }
        let dir = s.dir.clone();
        drop(live._alive);
        if cause.is_abnormal() {
            // No runner alive: the host checks its own files (issue 15).
            let row = s.row.clone();
            let stamp = self.check_after_exit(&row, &dir);
            if let Some(s) = self.sessions.get_mut(id) {
                s.inbound_stamp = stamp;
                s.shared.kick.notify_one();
            }
        }
        // A sandbox whose supervisor died can leave its inner process tree
        // behind; nothing of this session may run when the next runner starts.
        let leftovers = reap(&dir.root().to_string_lossy());
        if leftovers > 0 {
            tracing::warn!(
                count = leftovers,
                "killed processes the dead sandbox left behind"
            );
        }
        // Orphan claims of the dead runner: retry with backoff, or fail at
        // the limit and tell the user once (SPEC §6.3). Exit 75 (the mount
        // failed) and clean exits release claims without a try.
        self.resolve_orphans(id, cause == Cause::Transient || !cause.is_abnormal());
        let counts = cause.is_abnormal() && !(asked && live.kill_reason.is_none());
        let proceed = if counts {
            self.count_abnormal(id, cause, &what, detail.as_deref())
        } else {
            true
        };
        let Some(s) = self.sessions.get_mut(id) else {
            return;
        };
        s.shared.notify.notify_one();
        if !shutting_down {
            // Sessions waiting for a slot go first, so a busy session cannot
            // take back the slot it just freed every time.
            while let Some(q) = self.slot_queue.pop_front() {
                if self.live_count() >= self.cfg.max_concurrent_runners {
                    self.slot_queue.push_front(q);
                    break;
                }
                self.try_wake(&q);
            }
            if proceed {
                self.try_wake(id);
            }
        }
    }

    /// Resolves a dead runner's claims; on failure remembers to retry before
    /// the next spawn (the next runner would otherwise drop the claims
    /// without the try being counted).
    fn resolve_orphans(&mut self, id: &str, transient: bool) {
        let Some(s) = self.sessions.get(id) else {
            return;
        };
        let dir = s.dir.clone();
        let res = session::orphan_claims(&dir, None).and_then(|o| {
            session::apply_orphans(
                &dir,
                &o,
                transient,
                self.cfg.retry_base.as_millis() as i64,
                jiff::Timestamp::now(),
            )
        });
        match res {
            Ok((failed, earliest)) => {
                for o in failed {
                    self.notify_origin(o.channel_type, o.platform_id, o.thread_id,
                        "Sorry, I could not process your message: it failed 5 times, so I set it aside. Please send it again later.".into());
                }
                if let Some(due) = earliest {
                    self.wake_at(id, due);
                }
                if let Some(s) = self.sessions.get_mut(id) {
                    s.orphans_pending = None;
                }
            }
            Err(e) => {
                tracing::warn!(session_id = %id, "cannot resolve orphan claims yet (retried before the next spawn): {e:#}");
                if let Some(s) = self.sessions.get_mut(id) {
                    s.orphans_pending = Some(transient);
                }
            }
        }
    }

    /// Counts an abnormal exit against the crash budget (SPEC §6.4). Returns
    /// whether the session may respawn (after `next_spawn_at`); false when
    /// it is now quarantined, in which case the user was told once.
    /// `what` says how it ended (`killed by SIGKILL`, `exit code 1`, `could
    /// not be started`), `detail` why, when known (the runner's last ERROR).
    fn count_abnormal(&mut self, id: &str, cause: Cause, what: &str, detail: Option<&str>) -> bool {
        let now = now_ms();
        let Some(s) = self.sessions.get_mut(id) else {
            return false;
        };
        s.exits_ms.push(now);
        let window = self.cfg.budget.window.as_millis() as i64;
        s.exits_ms.retain(|t| now - *t <= window);
        // Persisted, so a restart of the host does not reset the budget.
        if let Err(e) = self.central.count_budget_exit(id, now, window) {
            tracing::warn!(session_id = %id, "could not record the exit in the crash budget (a restart forgets it): {e:#}");
        }
        match pinch_policy::budget::after_abnormal_exit(
            now,
            &s.exits_ms,
            cause == Cause::Config,
            &self.cfg.budget,
        ) {
            pinch_policy::budget::Verdict::Respawn(delay) => {
                s.next_spawn_at = Some(Instant::now() + delay);
                if !delay.is_zero() {
                    tracing::warn!(session_id = %id, exits = s.exits_ms.len(), delay_s = delay.as_secs_f64(), "backing off before the next respawn");
                }
                true
            }
            pinch_policy::budget::Verdict::Quarantine => {
                let span = Duration::from_millis(
                    (now - s.exits_ms.first().copied().unwrap_or(now)).max(0) as u64,
                );
                let reason =
                    pinch_policy::budget::quarantine_reason(s.exits_ms.len(), span, what, detail);
                s.quarantined = true;
                crate::metrics::METRICS
                    .quarantines
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let routing = pinch_proto::open::open_reader(&s.dir.inbound_db(), session::BUSY)
                    .ok()
                    .and_then(|c| pinch_proto::rows::routing(&c).ok().flatten());
                match self.central.quarantine(id, &reason) {
                    Ok(true) => {
                        tracing::error!(session_id = %id, reason = %reason, "session quarantined: no more respawns until a new message or `pinch admin sessions resume`");
                        if let Some(r) = routing {
                            self.notify_origin(r.channel_type, r.platform_id, r.thread_id, format!(
                                "The assistant is unavailable: {reason}. Send a new message to try again, or ask the owner to run `pinch admin sessions resume {id}`."
                            ));
                        }
                    }
                    Ok(false) => {}
                    Err(e) => {
                        tracing::error!(session_id = %id, "cannot record the quarantine: {e:#}")
                    }
                }
                false
            }
        }
    }

    /// Lifts a quarantine (a user's new message or an admin command).
    fn lift_quarantine(&mut self, id: &str, why: &str) {
        if let Some(s) = self.sessions.get_mut(id) {
            if s.quarantined || !s.exits_ms.is_empty() {
                s.quarantined = false;
                s.exits_ms.clear();
                s.next_spawn_at = None;
            }
        }
        if let Err(e) = self.central.clear_budget_exits(id) {
            tracing::warn!(session_id = %id, "could not clear the crash budget's record: {e:#}");
        }
        match self.central.lift_quarantine(id) {
            Ok(true) => tracing::info!(session_id = %id, "quarantine lifted: {why}"),
            Ok(false) => {}
            Err(e) => tracing::error!(session_id = %id, "cannot lift the quarantine: {e:#}"),
        }
    }

    /// A host notice (not an agent reply) to a conversation, e.g. a
    /// quarantine or a message that failed for good.
    fn notify_origin(
        &self,
        channel_type: Option<String>,
        platform_id: Option<String>,
        thread_id: Option<String>,
        text: String,
    ) {
        let (Some(ct), Some(pid)) = (channel_type, platform_id) else {
            return;
        };
        // Stored first, so nobody listening now does not lose it (notices.rs).
        self.durable_notice(
            pinch_channels::Address {
                channel_type: ct,
                platform_id: pid,
                thread_id,
            },
            text,
        );
    }

    /// Wakes a session at an epoch-ms time (a retry or task coming due).
    fn wake_at(&self, id: &str, due_ms: i64) {
        let delay = Duration::from_millis((due_ms - now_ms()).max(0) as u64);
        let (events, id) = (self.events.clone(), id.to_owned());
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let _ = events.send(Event::Wake(id));
        });
    }

    /// Starts the session's credential proxy if it is not running; returns
    /// its directory (what the sandbox binds at `/pinch/run`). Its egress
    /// allowlist is the host's `proxy.egress_allow` plus the agent group's
    /// `agent_configs.egress_allow`, read when the proxy starts.
    fn ensure_proxy(&mut self, id: &str, ag_id: &str) -> Result<PathBuf> {
        let dir = self.data.run_dir().join("proxy").join(id);
        let running = self.proxies.get(id).is_some_and(|h| !h.is_finished());
        if !running {
            let sock = dir.join("llm.sock");
            if sock.as_os_str().len() > 107 {
                anyhow::bail!("the proxy socket path {} is longer than a Unix socket allows (107 bytes): use a shorter --data-dir", sock.display());
            }
            let mut egress = crate::proxy::EgressAllow::parse(&self.cfg.proxy_egress_allow)
                .map_err(|e| anyhow::anyhow!("proxy.{e}"))?;
            let group = self.central.egress_allow(ag_id)?;
            egress.extend(
                crate::proxy::EgressAllow::parse(&group)
                    .map_err(|e| anyhow::anyhow!("agent group {ag_id:?}: {e}"))?,
            );
            let h = crate::proxy::serve(
                &sock,
                id.to_owned(),
                Arc::new(self.cfg.proxy_upstreams.clone()),
                Arc::new(egress),
                self.proxy_tls.clone(),
                self.proxy_budget.clone(),
            )
            .with_context(|| format!("starting the credential proxy on {}", sock.display()))?;
            self.proxies.insert(id.to_owned(), h);
        }
        Ok(dir)
    }

    /// Asks a runner to stop via `in/stop` (works through any sandbox).
    fn request_stop(&mut self, id: &str) -> bool {
        let Some(s) = self.sessions.get_mut(id) else {
            return false;
        };
        let Some(live) = s.runner.as_mut() else {
            return false;
        };
        if live.stop_requested_at.is_none() {
            live.stop_requested_at = Some(Instant::now());
            if let Err(e) = write_atomic(&s.dir.stop_file(), live.runner_id.as_bytes()) {
                tracing::warn!(session_id = %id, "cannot write the stop file, killing the runner: {e}");
                kill(live.pid);
                self.sandbox.kill_session(id);
            }
            let rid = live.runner_id.clone();
            self.stop_deadline(id, rid);
        }
        true
    }

    fn poke_live_deliveries(&self) {
        for s in self.sessions.values().filter(|s| s.runner.is_some()) {
            s.shared.notify.notify_one();
        }
    }

    /// The sweep (SPEC §6.2), in order per session: ack sync (the delivery
    /// pass, poked), wake if due (before any reset; a runner spawned by this
    /// tick is not stuck-checked in it, lesson 9), then the stuck decision.
    fn sweep(&mut self) {
        self.expire_approvals();
        let ids: Vec<String> = self.sessions.keys().cloned().collect();
        let now = now_ms();
        for id in ids {
            let Some(s) = self.sessions.get(&id) else {
                continue;
            };
            s.shared.notify.notify_one();
            if s.runner.is_none() {
                self.try_wake(&id);
                continue;
            }
            let live = s.runner.as_ref().expect("checked");
            if live.kill_reason.is_some() || live.stop_requested_at.is_some() {
                continue;
            }
            let (view, err) = session::stuck_view(&s.dir, &live.runner_id, live.spawned_ms);
            self.stuck_read_failed(&id, err, now);
            if let pinch_policy::sweep::Stuck::Kill(reason) =
                pinch_policy::sweep::decide_stuck(now, &view, &self.cfg.stuck)
            {
                self.kill_stuck(&id, reason);
            }
        }
    }

    /// Kills a stuck runner: SIGTERM, SIGKILL after the stop grace.
    fn kill_stuck(&mut self, id: &str, reason: pinch_policy::sweep::StuckReason) {
        let Some(live) = self.sessions.get_mut(id).and_then(|s| s.runner.as_mut()) else {
            return;
        };
        tracing::warn!(session_id = %id, runner_id = %live.runner_id, reason = reason.as_str(), "runner is stuck: killing it (SIGTERM, SIGKILL after the grace)");
        live.kill_reason = Some(reason.as_str());
        live.stop_requested_at = Some(Instant::now());
        term(live.pid);
        let rid = live.runner_id.clone();
        self.stop_deadline(id, rid);
    }

    /// The runner's stop grace starts now: a `StopDeadline` event when it
    /// runs out (the runner is killed then if it is still alive).
    fn stop_deadline(&self, id: &str, runner_id: String) {
        let (events, grace, session_id) = (self.events.clone(), self.cfg.stop_grace, id.to_owned());
        tokio::spawn(async move {
            tokio::time::sleep(grace).await;
            let _ = events.send(Event::StopDeadline {
                session_id,
                runner_id,
            });
        });
    }

    /// Schedules the stuck check of this runner at `at_ms` (epoch ms), no
    /// sooner than a quarter second from now (never a tight loop).
    fn schedule_stuck_check(&self, id: &str, runner_id: &str, at_ms: i64) {
        let delay = Duration::from_millis((at_ms - now_ms()).max(250) as u64);
        let (events, sid, rid) = (self.events.clone(), id.to_owned(), runner_id.to_owned());
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let _ = events.send(Event::StuckCheck {
                session_id: sid,
                runner_id: rid,
            });
        });
    }

    /// The per-runner stuck timer fired: kill the runner if a deadline has
    /// passed, else check again at its next deadline. One chain of timers
    /// per runner (started at spawn), so a frozen runner is killed about
    /// when its heartbeat ceiling passes, whatever the sweep interval.
    fn stuck_check(&mut self, id: &str, runner_id: &str) {
        let Some(s) = self.sessions.get(id) else {
            return;
        };
        let Some(live) = s.runner.as_ref().filter(|l| l.runner_id == runner_id) else {
            return; // that runner is gone: its chain ends
        };
        if live.kill_reason.is_some() || live.stop_requested_at.is_some() {
            return; // already being stopped (the stop deadline kills it)
        }
        let now = now_ms();
        // An unreadable outbound.db (the agent's file: it may have dropped
        // `processing_ack`) leaves the heartbeat to decide; the claims are
        // read again after a growing pause.
        let (view, err) = session::stuck_view(&s.dir, runner_id, live.spawned_ms);
        let read_again = self.stuck_read_failed(id, err, now);
        match pinch_policy::sweep::decide_stuck(now, &view, &self.cfg.stuck) {
            pinch_policy::sweep::Stuck::Kill(reason) => self.kill_stuck(id, reason),
            pinch_policy::sweep::Stuck::No => {
                let next = pinch_policy::sweep::next_deadline(&view, &self.cfg.stuck);
                self.schedule_stuck_check(id, runner_id, read_again.map_or(next, |r| r.min(next)))
            }
        }
    }

    /// Records how the stuck check's read of the live runner's `outbound.db`
    /// went. A failure is logged once per distinct error (not on every
    /// check) and read again after a growing pause (1 s doubling to 60 s):
    /// returns when (epoch ms). `None` when the read worked.
    fn stuck_read_failed(&mut self, id: &str, err: Option<anyhow::Error>, now: i64) -> Option<i64> {
        let live = self.sessions.get_mut(id)?.runner.as_mut()?;
        let Some(e) = err else {
            if live.stuck_read_failures > 0 {
                tracing::info!(session_id = %id, failures = live.stuck_read_failures, "the stuck check reads the runner's claims again");
            }
            live.stuck_read_failures = 0;
            live.stuck_read_error = None;
            return None;
        };
        let msg = format!("{e:#}");
        live.stuck_read_failures += 1;
        let pause_ms = (1_000i64 << (live.stuck_read_failures - 1).min(6)).min(60_000);
        if live.stuck_read_error.as_deref() != Some(msg.as_str()) {
            tracing::warn!(session_id = %id, runner_id = %live.runner_id, retry_in_s = pause_ms / 1000, "cannot read the runner's claims for the stuck check; its heartbeat alone decides until they can be read (an unreadable outbound.db never protects a frozen runner); logged again only if the error changes: {msg}");
            live.stuck_read_error = Some(msg);
        } else {
            tracing::debug!(session_id = %id, failures = live.stuck_read_failures, "the stuck check's read failed again: {msg}");
        }
        Some(now + pause_ms)
    }

    fn begin_shutdown(&mut self) {
        tracing::info!(live = self.live_count(), "shutting down: stopping runners");
        self.shutting_down = true;
        let ids: Vec<String> = self
            .sessions
            .iter()
            .filter(|(_, s)| s.runner.is_some())
            .map(|(k, _)| k.clone())
            .collect();
        for id in ids {
            self.request_stop(&id);
        }
    }

    fn kill_remaining(&mut self) {
        for s in self.sessions.values() {
            if let Some(l) = &s.runner {
                tracing::warn!(session_id = %s.row.id, "runner did not stop within the grace, killing it");
                kill(l.pid);
                self.sandbox.kill_session(&s.row.id);
            }
        }
    }

    async fn finish_shutdown(&mut self) {
        let _ = self.delivery_stop.send(true);
        let all = async { while self.delivery_tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(Duration::from_secs(10), all)
            .await
            .is_err()
        {
            tracing::warn!(
                "deliveries did not finish within 10 s; unsent rows are sent on the next start"
            );
            self.delivery_tasks.abort_all();
        }
        for s in self.sessions.values() {
            let _ = self.central.set_runner_state(&s.row.id, "stopped", None);
        }
        crate::backup::backup_logged(self.data.clone(), self.cfg.backup_keep).await;
        let _ = std::fs::remove_file(self.data.admin_socket());
        for (id, h) in self.proxies.drain() {
            h.abort();
            let _ =
                std::fs::remove_file(self.data.run_dir().join("proxy").join(id).join("llm.sock"));
        }
        // A graceful exit clears the breaker, even if teardown had trouble.
        let _ = std::fs::remove_file(self.data.run_dir().join(BREAKER_FILE));
        tracing::info!("pinch host stopped");
    }
}

const BREAKER_FILE: &str = "circuit-breaker.json";

/// Builds the HTTP-facing adapters, registers them as channels, and binds
/// and serves their routes on the one listener.
async fn start_http(
    h: &crate::config::HttpSettings,
    data: &DataDir,
    login: &str,
    ch_tx: &mpsc::Sender<ChannelEvent>,
    channels: &mut Channels,
    routes: Vec<pinch_channels::http::Router>,
    admin_tx: &mpsc::UnboundedSender<(
        crate::admin::Request,
        tokio::sync::oneshot::Sender<crate::admin::Reply>,
    )>,
) -> Result<pinch_channels::http::Server> {
    let mut router = pinch_channels::http::Router::new();
    for r in routes {
        router = router.merge(r);
    }
    if !h.hooks.is_empty() {
        let hooks = pinch_channels::webhook::WebhookChannel::new(h.hooks.clone(), ch_tx.clone())
            .map_err(|e| anyhow::anyhow!("webhooks: {e}"))?;
        router = router.merge(hooks.router());
        channels.insert(pinch_channels::webhook::CHANNEL_TYPE.to_owned(), hooks);
    }
    crate::config::check_listen(h).map_err(|e| anyhow::anyhow!("{e}"))?;
    if h.web {
        let auth = pinch_channels::http::WebAuth::new(crate::web_token(data.root())?);
        let web = pinch_channels::web::WebChannel::new(
            auth.clone(),
            data.root().join("web"),
            login.to_owned(),
            ch_tx.clone(),
        )
        .map_err(|e| anyhow::anyhow!("web chat: {e}"))?;
        router = router.merge(web.router());
        channels.insert(pinch_channels::web::CHANNEL_TYPE.to_owned(), web);
        // The dashboard, behind the same sign-in.
        router = router.merge(crate::dashboard::router(auth, admin_tx.clone()));
    }
    if h.metrics {
        // Loopback: open, like any local exporter. Otherwise the web token
        // as a bearer token.
        let token = if h.listen.ip().is_loopback() {
            None
        } else {
            Some(crate::web_token(data.root())?)
        };
        router = router.route(
            "/metrics",
            pinch_channels::http::axum::routing::get(move |headers: pinch_channels::http::axum::http::HeaderMap| {
                let token = token.clone();
                async move {
                    use pinch_channels::http::axum::http::{header, StatusCode};
                    if let Some(t) = token {
                        let given = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer ")).unwrap_or("");
                        if !pinch_channels::http::secret_eq(given.as_bytes(), t.as_bytes()) {
                            return (StatusCode::UNAUTHORIZED, [(header::CONTENT_TYPE, "text/plain")], "metrics need `Authorization: Bearer <web token>` (pinch admin web-token)\n".to_owned());
                        }
                    }
                    let body = tokio::task::spawn_blocking(|| crate::metrics::METRICS.render()).await.unwrap_or_default();
                    (StatusCode::OK, [(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body)
                }
            }),
        );
    }
    if !h.listen.ip().is_loopback() {
        tracing::warn!(listen = %h.listen, "the HTTP listener is reachable from other machines over plain HTTP ([http] allow_plaintext_remote = true)");
    }
    let listener = pinch_channels::http::bind(h.listen).await?;
    Ok(pinch_channels::http::serve(
        listener,
        router,
        h.hosts.clone(),
    )?)
}

/// Waits as the boot circuit breaker says (SPEC §6.5): boots within the
/// last hour are listed in `run/circuit-breaker.json`; a graceful exit
/// deletes it. A missing or unreadable file counts as a clean history.
async fn boot_breaker(data: &DataDir) {
    let path = data.run_dir().join(BREAKER_FILE);
    let earlier: Vec<i64> = std::fs::read_to_string(&path)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default();
    let (boots, wait) = pinch_policy::breaker::decide(&earlier, now_ms());
    if let Err(e) = write_atomic(
        &path,
        serde_json::to_string(&boots).unwrap_or_default().as_bytes(),
    ) {
        tracing::warn!("cannot write the boot breaker file: {e:#}");
    }
    if !wait.is_zero() {
        tracing::warn!(
            boots_last_hour = boots.len(),
            wait_s = wait.as_secs(),
            "the host has restarted repeatedly without a clean exit: waiting before booting"
        );
        // Another `pinch` finding the lock taken says why (issue 15).
        let lock = data.lock_file();
        crate::lock::BootWait::write(&lock, now_ms() + wait.as_millis() as i64, boots.len());
        tokio::time::sleep(wait).await;
        crate::lock::BootWait::clear(&lock);
    }
}

/// The fd number the runner finds the liveness pipe on.
const HOST_FD: i32 = 3;

fn liveness_pipe() -> std::io::Result<(std::os::fd::OwnedFd, std::os::fd::OwnedFd)> {
    use std::os::fd::FromRawFd;
    let mut fds = [0i32; 2];
    // SAFETY: pipe2 fills two new descriptors we then own.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: both fds were just created and are owned by nobody else.
    Ok(unsafe {
        (
            std::os::fd::OwnedFd::from_raw_fd(fds[0]),
            std::os::fd::OwnedFd::from_raw_fd(fds[1]),
        )
    })
}

/// Kills (SIGKILL) every live process, other than this one, whose command
/// line mentions `path` and is a sandbox or a runner: what a dead host or a
/// dead sandbox supervisor left behind. Matching on the data dir's own paths
/// means another install's processes are never touched. Waits up to 1 s for
/// them to go. Returns how many it killed.
fn reap(path: &str) -> usize {
    let me = std::process::id();
    let mut killed = Vec::new();
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return 0;
    };
    for e in rd.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if pid == me || is_zombie(pid) {
            continue;
        }
        let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        if cmd.contains(path) && (cmd.contains("bwrap") || cmd.contains(" runner ")) {
            kill(pid);
            killed.push(pid);
        }
    }
    let deadline = Instant::now() + Duration::from_secs(1);
    while killed
        .iter()
        .any(|p| !is_zombie(*p) && Path::new(&format!("/proc/{p}")).exists())
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(2));
    }
    killed.len()
}

fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

/// The wake rule of `pinch_proto::layout::is_commit_hint`, for `out/`.
fn pinch_runner_hint(ev: &notify::Event) -> bool {
    let access = matches!(ev.kind, notify::EventKind::Access(_));
    let removed = matches!(ev.kind, notify::EventKind::Remove(_));
    ev.paths.iter().any(|p| {
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
        pinch_proto::layout::is_commit_hint(name, pinch_proto::layout::OUTBOUND_DB, access, removed)
    })
}

fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

/// Whether the runner's last log lines name a corrupt inbound view.
fn detail_is_corruption(log: &Path) -> bool {
    let Ok(text) = std::fs::read(log) else {
        return false;
    };
    let tail = String::from_utf8_lossy(&text[text.len().saturating_sub(2048)..]).to_string();
    tail.contains("could not be read") || tail.contains("read failed as corrupt")
}

fn term(pid: u32) {
    if pid > 0 {
        // SAFETY: plain kill(2) on a child we have not reaped yet.
        unsafe {
            libc::kill(pid as i32, libc::SIGTERM);
        }
    }
}

fn kill(pid: u32) {
    if pid > 0 {
        // SAFETY: plain kill(2) on a child we have not reaped yet.
        unsafe {
            libc::kill(pid as i32, libc::SIGKILL);
        }
    }
}

/// Writes a file via a temporary name and rename, so readers never see half.
/// Not fsynced: these files (`runner.json`, `in/stop`, the breaker list) are
/// rewritten when needed, and readers share our page cache.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    let res = (|| -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        std::fs::rename(&tmp, path)
    })();
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    res.with_context(|| format!("writing {}", path.display()))
}

/// The last error the runner's log records: its last `ERROR` line (the
/// text after the level) or a Rust panic message, whichever came later;
/// `None` when the log has neither (then the exit status says it all).
fn last_error_line(path: &Path) -> Option<String> {
    use std::io::{Read, Seek, SeekFrom};
    const TAIL: u64 = 64 * 1024;
    let mut f = std::fs::File::open(path).ok()?;
    let len = f.metadata().ok()?.len();
    f.seek(SeekFrom::Start(len.saturating_sub(TAIL))).ok()?;
    let mut text = Vec::new();
    f.take(TAIL).read_to_end(&mut text).ok()?;
    error_in_log(&String::from_utf8_lossy(&text))
}

fn error_in_log(text: &str) -> Option<String> {
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    lines.iter().enumerate().rev().find_map(|(i, l)| {
        let msg = if let Some((_, rest)) = l.split_once(" ERROR ") {
            rest.trim().to_owned()
        } else if let Some(rest) = l.strip_prefix("ERROR ") {
            rest.trim().to_owned()
        } else if l.starts_with("thread '") && l.contains("panicked at") {
            // The panic's message is on the next line (Rust ≥ 1.73).
            match lines
                .get(i + 1)
                .filter(|n| l.ends_with(':') && !n.is_empty())
            {
                Some(n) => format!("{l} {n}"),
                None => (*l).to_owned(),
            }
        } else {
            return None;
        };
        (!msg.is_empty()).then(|| msg.chars().take(500).collect())
    })
}

/// Keeps the newest `keep` runner logs of a session.
fn prune_logs(dir: &Path, keep: usize) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    let mut files: Vec<(std::time::SystemTime, PathBuf)> = rd
        .flatten()
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .collect();
    files.sort();
    let n = files.len();
    for (_, p) in files.into_iter().take(n.saturating_sub(keep)) {
        let _ = std::fs::remove_file(p);
    }
}

#[cfg(test)]
mod tests {
    use super::error_in_log;

    #[test]
    fn the_last_error_line_is_quoted_not_the_last_line() {
        let log = "2026-12-04T22:57:38.1Z  INFO runner started\n\
                   2026-12-04T22:57:39.1Z ERROR provider: the API key was refused\n\
                   2026-12-04T22:57:39.2Z  INFO exiting\n";
        assert_eq!(
            error_in_log(log).as_deref(),
            Some("provider: the API key was refused")
        );
        let panic =
            "2026-12-04T22:57:38.1Z ERROR old\nthread 'main' panicked at src/x.rs:1:1:\nboom\n";
        assert_eq!(
            error_in_log(panic).as_deref(),
            Some("thread 'main' panicked at src/x.rs:1:1: boom")
        );
        assert_eq!(error_in_log("2026-12-04T22:57:38.1Z  INFO fine\n"), None);
        assert_eq!(error_in_log(""), None);
    }
}
