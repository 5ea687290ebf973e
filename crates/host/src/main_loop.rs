//! The host's main loop: boot, then one `select!` over a closed set of
//! events ([`Event`], in `event.rs`), handled one at a time. It is the sole
//! owner of the central DB and of each session's runner state.
//!
//! The story, a module per part (decision 0031):
//! - `boot.rs`: everything before the first event (`group_folder.rs`:
//!   a group's folder and its instructions);
//! - `dispatch.rs`: each event to its handler;
//! - `routing.rs`, `inbound.rs`: a message routed, then committed with its
//!   batch (the flush) and its sessions woken;
//! - `wake.rs`: may the session start a runner now (`pinch_policy::wake`)?
//! - `spawn.rs`: starting one;
//! - `supervise.rs`: its exit, the crash budget, quarantine, stopping;
//! - `sweep.rs`: the periodic pass and the stuck timer;
//! - `handoff.rs`: each session's delivery task;
//! - `loop_admin.rs`: the admin commands that act on runner state;
//! - `shutdown.rs`; and the agents' requests (`agent_admin.rs`,
//!   `approvals/`, `a2a.rs`, ...), the notices, the disk quota and the
//!   session files' checks.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Result;
use regex::Regex;
use tokio::sync::{mpsc, watch};

use crate::config::HostConfig;
use crate::db::central::{Central, SessionRow};
use crate::delivery::{Channels, Shared};
use crate::lock::HostLock;
use crate::paths::{DataDir, SessionDir};
use crate::sandbox::{self, Sandbox};
use crate::session;
use crate::{HostHandle, Stats};

pub(crate) use crate::event::Event;
use group_folder::ensure_group_folder;

mod a2a;
mod agent_actions;
mod agent_admin;
mod approvals;
mod boot;
mod create_agent;
mod disk;
mod dispatch;
mod group_folder;
mod handoff;
mod inbound;
mod loop_admin;
mod notices;
mod routing;
mod runner_log;
mod secret_uses;
mod self_mod;
mod session_db;
mod sessions;
mod shutdown;
mod spawn;
mod stop;
mod supervise;
mod sweep;
mod task_actions;
mod wake;

struct Live {
    runner_id: String,
    pid: u32,
    started_at: String,
    spawned_ms: i64,
    stop_requested_at: Option<Instant>,
    /// Set when the sweep kills it as stuck.
    kill_reason: Option<&'static str>,
    /// Killed because a user stopped its turn (decision 0048): the claims
    /// it held for other conversations are released without a try.
    stopped_by_user: bool,
    /// The stuck check's failed reads of this runner's `outbound.db` in a
    /// row, and the last error logged (each distinct one is logged once).
    stuck_read_failures: u32,
    stuck_read_error: Option<String>,
    /// The sandbox's handle: stop, kill; dropping it closes the liveness
    /// pipe, and the runner exits (this host died, or this record was dropped).
    child: Box<dyn sandbox::RunnerHandle>,
    /// Dropped with this record: ends the runner's disk-quota watch.
    _disk_watch: tokio::sync::oneshot::Sender<()>,
}

/// An inbound event routed but not yet committed: its ack (none for a
/// replay) completes at the flush, once its sessions' writes are done.
pub(crate) struct PendingAck {
    ack: Option<pinch_channels::Ack>,
    stored: Vec<String>,
    note: Option<routing::Note>,
    woken: Vec<String>,
}

/// Most events routed before their writes are flushed together.
const FLUSH_BATCH: usize = 1024;

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
    /// The conversations' live view: what the agent does, its streamed
    /// reply (decision 0048).
    live: Arc<crate::live::LiveHub>,
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
    /// `web_fetch`'s fetcher, shared by every session's proxy.
    web: Arc<pinch_web::Web>,
    /// The secret store, the sandbox CA and the OAuth tokens every
    /// session's proxy shares (decision 0050); approval questions.
    secrets: secret_uses::Secrets,
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
    /// Approval cards being sent now, by id (`approvals/cards.rs`).
    cards_in_flight: Mutex<std::collections::HashSet<String>>,
    /// Channel types whose waiting cards a send skipped because they were
    /// on their way: sent again when those come back.
    cards_resend: Mutex<std::collections::HashSet<String>>,
    _lock: HostLock,
}

/// Boots a host and returns its handle; the main loop runs on the current
/// tokio runtime (which must be multi-threaded: runners are spawned from
/// its long-lived worker threads, so `--die-with-parent` never fires early).
pub async fn start(cfg: HostConfig) -> Result<HostHandle> {
    let booted = boot::boot(cfg).await?;
    let host = &booted.host;
    let handle = HostHandle {
        cli_socket: host.data.cli_socket(),
        http_addr: booted.http_server.as_ref().map(|s| s.addr),
        data_dir: host.data.root().to_owned(),
        sandbox: host.sandbox.kind(),
        stats: host.stats.clone(),
        control: host.events.clone(),
        join: tokio::spawn(run(booted)),
    };
    Ok(handle)
}

/// The loop: one event at a time, each followed by the flush of what it
/// routed; after a shutdown, until no runner is left.
async fn run(booted: boot::Booted) -> Result<()> {
    let boot::Booted {
        mut host,
        mut ev_rx,
        mut ch_rx,
        mut admin_rx,
        ch_tx: metrics_tx,
        http_server,
        cli,
    } = booted;
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
}

impl Host {
    fn live_count(&self) -> usize {
        self.sessions
            .values()
            .filter(|s| s.runner.is_some())
            .count()
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
}

fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}
