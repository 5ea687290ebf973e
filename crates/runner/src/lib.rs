//! The runner: a session's agent process, started by the host in a sandbox.
//!
//! It reads `in/runner.json`, then loops: a fresh read-only poll of
//! `in/inbound.db`, pick the oldest due batch, claim it in `out/outbound.db`,
//! format the prompt, run the provider, write the replies and the acks in one
//! transaction. A dedicated thread touches `out/heartbeat`. Wakes come from
//! inotify on `in/` plus a timer. It exits 0 when idle past its timeout or
//! asked to stop, 75 when its view of `inbound.db` is corrupt (or polls keep
//! failing) so the host gives it a fresh mount, 78 on a bad configuration.
//!
//! Invariants: writes only under `out/` (and, later, outbox and workspace);
//! never writes `inbound.db`; never knows channels or the host.

pub mod address;
mod agent;
pub mod cli_engine;
pub mod commands;
pub mod compact;
pub mod egress;
pub mod format;
pub mod heartbeat;
pub mod history;
pub mod memory;
pub mod output;
mod plan;
mod poll;
pub mod prescript;
pub mod prompt;
pub mod read;
mod resize;
pub mod signals;
pub mod skills;
pub mod stream;
pub mod tools;
mod turn;
mod vision;
mod voice;

use std::collections::HashSet;
use std::path::Path;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use jiff::tz::TimeZone;
use pinch_policy::exit::{EXIT_CONFIG, EXIT_FATAL, EXIT_OK, EXIT_TEMPFAIL};
use pinch_policy::streak::{PollOutcome, Streak, StreakAction};
use pinch_proto::layout;
use pinch_proto::open::{open_writer, write_tx};
use pinch_proto::rows;
use pinch_proto::runner_config::RunnerConfig;
use pinch_proto::rusqlite::Connection;
use pinch_proto::schema;
use pinch_providers::Provider;

use crate::poll::Snapshot;

/// A uniformly random wait in `[0, cap_ms]` ("full jitter").
fn jitter(cap_ms: u64) -> u64 {
    let r =
        u64::from_str_radix(&pinch_proto::runner_config::random_hex(8), 16).unwrap_or(cap_ms / 2);
    r % (cap_ms + 1)
}

/// The longest wait between two provider attempts (SPEC §5.5).
const RETRY_CAP_MS: u64 = 60_000;

/// The wait after failed attempt `attempt` (from 1) before the next (SPEC
/// §5.5): full jitter below `base · 2^(attempt-1)`, capped at 60 s — and at
/// least the `retry-after` the API asked for, itself capped at 60 s.
fn retry_wait(attempt: u32, base_ms: u64, e: &pinch_providers::ProviderError) -> Duration {
    let cap = (base_ms << (attempt.max(1) - 1).min(16)).min(RETRY_CAP_MS);
    let asked = e
        .retry_after
        .map_or(0, |d| (d.as_millis() as u64).min(RETRY_CAP_MS));
    Duration::from_millis(jitter(cap).max(asked))
}

/// The `session_state` key of the provider conversation.
fn continuation_key(cfg: &RunnerConfig) -> String {
    format!("continuation:{}", cfg.provider.kind)
}

/// A tool reply some tool is waiting for right now belongs to that tool;
/// a question's answer nobody waits for any more (its tool gave up, or its
/// runner died) is late: it joins the next turn as context (SPEC §7.3).
fn waited_for(s: &pinch_proto::content::SystemIn) -> bool {
    match s {
        pinch_proto::content::SystemIn::QuestionResponse { question_id, .. } => {
            tools::questions::is_waiting(question_id)
        }
        pinch_proto::content::SystemIn::AdminResponse { request_id, .. } => {
            tools::questions::is_waiting(&tools::admin::waiting_key(request_id))
        }
        other => other.is_tool_reply(),
    }
}

/// `container_state.last_progress_at` is written at most this often.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// `container_state.current_tool` while a model call is in flight
/// (decision 0040).
const MODEL_CALL: &str = "model";

/// Runs a runner from its config file; returns the process exit code.
pub fn run(config_path: &Path) -> i32 {
    let cfg = match load_config(config_path) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(path = %config_path.display(), "runner configuration is invalid, exiting 78: {e}");
            return EXIT_CONFIG;
        }
    };
    let span =
        tracing::info_span!("runner", session_id = %cfg.session_id, runner_id = %cfg.runner_id);
    let _g = span.enter();
    match Runner::start(cfg) {
        Ok(mut r) => r.run_loop(),
        Err(Startup::Config(e)) => {
            tracing::error!("runner cannot start with this configuration, exiting 78: {e}");
            EXIT_CONFIG
        }
        Err(Startup::Fatal(e)) => {
            tracing::error!("runner failed to start, exiting 1: {e}");
            EXIT_FATAL
        }
    }
}

fn load_config(p: &Path) -> Result<RunnerConfig, String> {
    let text = std::fs::read_to_string(p).map_err(|e| format!("reading {}: {e}", p.display()))?;
    let cfg: RunnerConfig =
        serde_json::from_str(&text).map_err(|e| format!("parsing {}: {e}", p.display()))?;
    cfg.validate()?;
    Ok(cfg)
}

enum Startup {
    Config(String),
    Fatal(String),
}

/// The provider `runner.json` names. `local` is built here (it needs
/// candle, which the providers crate stays free of); the rest by
/// `pinch_providers::build`. A model that will not load is a configuration
/// problem (exit 78) whose message says how to get one.
fn build_provider(cfg: &RunnerConfig) -> Result<Box<dyn Provider>, Startup> {
    // CLI ENGINE HOOK (1/2): `cli` is not an HTTP provider but an agent CLI
    // the turn runs (cli_engine.rs).
    if let (Some(settings), "cli") = (&cfg.provider.cli, cfg.provider.kind.as_str()) {
        return Ok(Box::new(cli_engine::CliEngine {
            settings: settings.clone(),
        }));
    }
    if cfg.provider.kind == "local" {
        let path = cfg.provider.model.clone().ok_or_else(|| {
            Startup::Config("provider local needs provider.model, the GGUF file (run `pinch model fetch` to get the default one)".into())
        })?;
        let mut o = pinch_local::Options::new(path);
        if let Some(n) = cfg.provider.max_tokens {
            o.max_tokens = n;
        }
        if let Some(n) = cfg.provider.context {
            o.context = n;
        }
        return pinch_local::Local::load(&o)
            .map(|l| Box::new(l) as Box<dyn Provider>)
            .map_err(|e| Startup::Config(e.to_string()));
    }
    pinch_providers::build(&pinch_providers::Settings {
        kind: cfg.provider.kind.clone(),
        script: cfg.provider.script.clone(),
        model: cfg.provider.model.clone(),
        proxy_socket: cfg.proxy_socket.clone(),
        vision: cfg.provider.vision,
    })
    .map_err(|e| Startup::Config(e.to_string()))
}

struct Runner {
    cfg: RunnerConfig,
    out: Connection,
    provider: Box<dyn Provider>,
    tz: TimeZone,
    /// Ids this runner file has acked or claimed and the host has not yet
    /// synced into `messages_in` (SPEC §3.3.6): never taken twice.
    acked: HashSet<String>,
    wakes: mpsc::Receiver<()>,
    _watcher: Option<notify::RecommendedWatcher>,
    _heartbeat: heartbeat::Heartbeat,
    out_counter: u64,
    /// Outbound rows written by tools (ids `out-<runner>-t<n>-…`).
    tool_counter: u64,
    /// The agent group's external MCP servers (SPEC §5.6), started once
    /// per runner; their tools are offered as `<server>__<tool>`.
    mcp: pinch_mcp::McpClients,
    /// (server, text) for the system prompt: each server's instructions,
    /// and a line for each server that failed to start (reported, not
    /// fatal, SPEC §5.1).
    mcp_notes: Vec<(String, String)>,
    /// MCP servers that failed to start and why (told to the conversation
    /// once per distinct error).
    mcp_failures: Vec<(String, String)>,
    /// The group's long-term memory index, or why it is off.
    memory: Result<pinch_proto::rusqlite::Connection, String>,
    first_poll: bool,
    /// The provider conversation this session continues
    /// (`session_state` key `continuation:<provider>`).
    continuation: Option<String>,
    /// Provider usage since the last record (summed per call).
    spent: history::Spent,
    /// The claim's commit declared the turn's first model call in flight
    /// (decision 0040): that call writes nothing more for it.
    model_marked: bool,
    /// The reply being streamed to the host (the inbound id it answers),
    /// while the turn's provider calls run; `None` for other calls (a
    /// compaction's summary).
    streaming_for: Option<String>,
    /// Sends streamed text to the host; started at the first streamed call.
    streamer: Option<stream::Streamer>,
}

impl Runner {
    fn start(cfg: RunnerConfig) -> Result<Runner, Startup> {
        let busy = Duration::from_millis(cfg.timings.busy_timeout_ms);
        // CLI ENGINE HOOK (1/2): `cli` is not an HTTP provider but an agent
        // CLI the turn runs (cli_engine.rs).
        let provider = build_provider(&cfg)?;
        // Tools reach allowlisted hosts only through the credential proxy's
        // CONNECT: a loopback forwarder to its socket, handed to commands
        // as HTTP(S)_PROXY (SPEC §8.2). Without it tools simply have no
        // network, which is not worth failing a turn over.
        if let Some(sock) = cfg.proxy_socket.as_deref() {
            match egress::start(sock) {
                Ok(addr) => {
                    let _ = tools::shell::EGRESS_PROXY.set(format!("http://{addr}"));
                    tracing::debug!(%addr, "egress forwarder listening");
                }
                Err(e) => {
                    tracing::warn!("no egress forwarder for tools (they will have no network): {e}")
                }
            }
        }
        let tz = TimeZone::get(&cfg.timezone).unwrap_or_else(|_| {
            tracing::warn!(timezone = %cfg.timezone, "unknown timezone, prompts use UTC");
            TimeZone::UTC
        });
        let out_path = cfg.paths.out_dir.join(layout::OUTBOUND_DB);
        let mut out = open_writer(&out_path, busy).map_err(|e| Startup::Fatal(e.to_string()))?;
        schema::migrate_outbound(&out).map_err(|e| Startup::Fatal(e.to_string()))?;
        // Claims of earlier runners were re-queued by the host: drop them
        // (their completed/failed acks stay until the host has synced them).
        // Only written when there are some: a clean cold start commits
        // nothing before its first claim (P3).
        let all = rows::acks(&out).map_err(|e| Startup::Fatal(e.to_string()))?;
        let stale: Vec<&str> = all
            .iter()
            .filter(|a| a.status == rows::status::PROCESSING && a.runner_id != cfg.runner_id)
            .map(|a| a.message_id.as_str())
            .collect();
        if !stale.is_empty() {
            let tx = write_tx(&mut out).map_err(|e| Startup::Fatal(e.to_string()))?;
            for id in &stale {
                rows::drop_claim(&tx, id).map_err(|e| Startup::Fatal(e.to_string()))?;
            }
            tx.commit()
                .map_err(|e| Startup::Fatal(format!("commit startup: {e}")))?;
            tracing::info!(count = stale.len(), "dropped claims of an earlier runner");
        }
        let acked: HashSet<String> = all
            .iter()
            .filter(|a| !(a.status == rows::status::PROCESSING && a.runner_id != cfg.runner_id))
            .map(|a| a.message_id.clone())
            .collect();
        // Long-term memory: the group's index, with its own connection.
        // Unusable = a warning, not a failure (decision 0043).
        let memory =
            memory::open(&out, &cfg.paths.workspace_dir, &cfg.session_id, busy).map_err(|e| {
                tracing::warn!("long-term memory is unavailable: {e}");
                e
            });
        let continuation = rows::state_get(&out, &continuation_key(&cfg))
            .map_err(|e| Startup::Fatal(e.to_string()))?;
        let hb = heartbeat::Heartbeat::start(
            cfg.paths.out_dir.join(layout::HEARTBEAT),
            Duration::from_millis(cfg.timings.heartbeat_ms),
        )
        .map_err(|e| Startup::Fatal(format!("starting heartbeat: {e}")))?;
        let (tx, wakes) = mpsc::channel();
        let watcher = watch_in_dir(&cfg.paths.in_dir, tx);
        signals::install();
        watch_host_fd();
        // After the heartbeat: a slow server start is a live runner.
        let servers = egress::with_proxy_env(&cfg.mcp_servers, tools::shell::EGRESS_PROXY.get());
        let (mcp, failed) = pinch_mcp::McpClients::start(&servers);
        let mut mcp_notes = mcp.instructions_by_server();
        let mcp_failures: Vec<(String, String)> = failed
            .iter()
            .map(|(n, e)| (n.clone(), e.to_string()))
            .collect();
        for (name, e) in failed {
            tracing::warn!(server = %name, "MCP server unavailable for this runner: {e}");
            mcp_notes.push((
                name,
                format!("This server failed to start, so its tools are not available now ({e})."),
            ));
        }
        if !mcp.is_empty() {
            tracing::info!(tools = mcp.tools().len(), "MCP servers started");
        }
        tracing::info!(provider = provider.name(), "runner started");
        Ok(Runner {
            cfg,
            out,
            provider,
            tz,
            acked,
            wakes,
            _watcher: watcher,
            _heartbeat: hb,
            out_counter: 0,
            tool_counter: 0,
            mcp,
            mcp_notes,
            mcp_failures,
            memory,
            first_poll: true,
            continuation,
            spent: history::Spent::default(),
            model_marked: false,
            streaming_for: None,
            streamer: None,
        })
    }

    fn run_loop(&mut self) -> i32 {
        let t = self.cfg.timings.clone();
        let idle_poll = Duration::from_millis(t.poll_idle_ms);
        let active_poll = Duration::from_millis(t.poll_active_ms);
        let pacing = Duration::from_millis(t.corruption_pacing_ms);
        let idle_exit = Duration::from_millis(t.idle_exit_ms);
        let flush = Duration::from_millis(t.exit_flush_ms);
        let mut streak = Streak::new(
            t.corruption_streak,
            Duration::from_millis(t.poll_failure_ceiling_ms),
        );
        let started = Instant::now();
        let mut last_work = Instant::now();
        loop {
            if signals::stop_requested() {
                tracing::info!("asked to stop by a signal, exiting 0");
                return EXIT_OK;
            }
            if self.stop_file_names_me() {
                tracing::info!("asked to stop by the host, exiting 0");
                return EXIT_OK;
            }
            let result = poll::snapshot(&self.cfg);
            let outcome = match &result {
                Ok(_) => PollOutcome::Ok,
                // The corruption family: corrupt, missing, unreadable
                // (EACCES) or without the schema (issue 15).
                Err(e) if e.is_unusable_view() => PollOutcome::Corrupt,
                Err(_) => PollOutcome::OtherError,
            };
            let action = streak.record(outcome, started.elapsed());
            let mut next_wait = idle_poll;
            match (result, action) {
                (Ok(snap), _) => match self.handle(snap) {
                    Ok(true) => {
                        last_work = Instant::now();
                        next_wait = Duration::ZERO;
                    }
                    Ok(false) => {}
                    Err(e) => {
                        tracing::error!("turn failed writing outbound.db, exiting 1: {e}");
                        return EXIT_FATAL;
                    }
                },
                (Err(e), StreakAction::ExitCorrupt) => {
                    let code = e
                        .sqlite_error()
                        .and_then(|s| s.sqlite_error_code())
                        .map(|c| format!("{c:?}"))
                        .unwrap_or_default();
                    tracing::error!(
                        count = streak.count(),
                        file = %self.cfg.paths.in_dir.join(layout::INBOUND_DB).display(),
                        "inbound.db could not be read {} times in a row (last: {code} {e}): either this sandbox's \
                         mount holds a torn view or the host's file is damaged; exiting 75 so the host checks its \
                         file and starts a fresh sandbox",
                        streak.count()
                    );
                    std::thread::sleep(flush);
                    return EXIT_TEMPFAIL;
                }
                (Err(e), StreakAction::ExitPollCeiling) => {
                    tracing::error!(
                        "inbound.db polls have failed for {} s without a success (last: {e}): exiting 75 for a fresh sandbox",
                        t.poll_failure_ceiling_ms / 1000
                    );
                    std::thread::sleep(flush);
                    return EXIT_TEMPFAIL;
                }
                (Err(e), StreakAction::PaceThenRetry) => {
                    tracing::warn!(
                        streak = streak.count(),
                        "inbound.db poll failed (counts toward the streak): {e}"
                    );
                    // Exactly the pacing delay, wakes ignored.
                    std::thread::sleep(pacing);
                    continue;
                }
                (Err(e), StreakAction::Continue) => {
                    tracing::warn!("inbound.db poll failed: {e}");
                    next_wait = active_poll;
                }
            }
            if next_wait.is_zero() {
                continue;
            }
            if last_work.elapsed() >= idle_exit {
                tracing::info!(
                    idle_s = last_work.elapsed().as_secs(),
                    "idle past the timeout, exiting 0"
                );
                return EXIT_OK;
            }
            let wait = next_wait.min(
                idle_exit
                    .saturating_sub(last_work.elapsed())
                    .max(Duration::from_millis(1)),
            );
            if self.wakes.recv_timeout(wait).is_ok() {
                while self.wakes.try_recv().is_ok() {}
            }
        }
    }

    /// The host asks a runner to stop by writing its id into `in/stop`.
    fn stop_file_names_me(&self) -> bool {
        std::fs::read_to_string(self.cfg.paths.in_dir.join(layout::STOP))
            .is_ok_and(|s| s.trim() == self.cfg.runner_id)
    }

    /// Drops completed acks the host has already copied into `messages_in`
    /// (their rows are no longer pending), keeping `processing_ack` small.
    fn prune_synced_acks(&mut self, snap: &Snapshot) -> Result<(), pinch_proto::ProtoError> {
        if self.acked.is_empty() {
            return Ok(());
        }
        let pending: HashSet<&str> = snap.pending.iter().map(|r| r.id.as_str()).collect();
        let done: Vec<String> = self
            .acked
            .iter()
            .filter(|id| !pending.contains(id.as_str()))
            .cloned()
            .collect();
        // (failed ones are kept in the table but leave the in-memory set)
        if done.is_empty() {
            return Ok(());
        }
        let tx = write_tx(&mut self.out)?;
        // Failed acks stay: their reason is the record of why.
        rows::prune_completed(&tx, &done)?;
        tx.commit()
            .map_err(pinch_proto::ProtoError::sqlite("commit prune"))?;
        for id in done {
            self.acked.remove(&id);
        }
        Ok(())
    }
}

/// The host passes the read end of a pipe as `PINCH_HOST_FD`; it reads EOF
/// when the host is gone. A runner never outlives its host (a sandbox's own
/// parent-death signal proved unreliable for nested bwrap processes): it
/// exits at once, like a kill, which its files are built to survive.
fn watch_host_fd() {
    let Some(fd) = std::env::var("PINCH_HOST_FD")
        .ok()
        .and_then(|v| v.parse::<i32>().ok())
    else {
        return;
    };
    let _ = std::thread::Builder::new()
        .name("host-watch".into())
        .spawn(move || {
            let mut b = [0u8; 1];
            loop {
                // SAFETY: reading one byte into a valid buffer from an fd we were given.
                let n = unsafe { libc::read(fd, b.as_mut_ptr().cast(), 1) };
                if n == 0
                    || (n < 0
                        && std::io::Error::last_os_error().kind()
                            != std::io::ErrorKind::Interrupted)
                {
                    tracing::warn!("the host is gone (liveness pipe closed): exiting");
                    std::process::exit(pinch_policy::exit::EXIT_FATAL);
                }
            }
        });
}

/// Applies [`layout::is_commit_hint`] to a notify event.
pub fn is_commit_hint(ev: &notify::Event, db_name: &str) -> bool {
    let access = matches!(ev.kind, notify::EventKind::Access(_));
    let removed = matches!(ev.kind, notify::EventKind::Remove(_));
    ev.paths.iter().any(|p| {
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
        layout::is_commit_hint(name, db_name, access, removed)
    })
}

/// inotify on `in/`: an event is a hint to poll. Absent (e.g. no inotify
/// across a VM mount) the timer alone drives polls.
fn watch_in_dir(dir: &Path, tx: mpsc::Sender<()>) -> Option<notify::RecommendedWatcher> {
    use notify::{RecursiveMode, Watcher};
    let mut w = match notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        if res.is_ok_and(|ev| is_commit_hint(&ev, layout::INBOUND_DB)) {
            let _ = tx.send(());
        }
    }) {
        Ok(w) => w,
        Err(e) => {
            tracing::warn!("inotify unavailable, polling on the timer only: {e}");
            return None;
        }
    };
    if let Err(e) = w.watch(dir, RecursiveMode::NonRecursive) {
        tracing::warn!(dir = %dir.display(), "cannot watch in/, polling on the timer only: {e}");
        return None;
    }
    Some(w)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use pinch_policy::streak::{
        CORRUPTION_PACING, CORRUPTION_STREAK_EXIT, EXIT_FLUSH, POLL_FAILURE_CEILING,
    };
    use pinch_proto::runner_config::Timings;

    /// `runner.json` defaults come from the named constants of the streak
    /// rule (proto cannot depend on policy, so they are restated there).
    #[test]
    fn runner_config_defaults_are_the_streak_rule() {
        let t = Timings::default();
        assert_eq!(t.corruption_streak, CORRUPTION_STREAK_EXIT);
        assert_eq!(
            Duration::from_millis(t.corruption_pacing_ms),
            CORRUPTION_PACING
        );
        assert_eq!(Duration::from_millis(t.exit_flush_ms), EXIT_FLUSH);
        assert_eq!(
            Duration::from_millis(t.poll_failure_ceiling_ms),
            POLL_FAILURE_CEILING
        );
    }

    /// The retry wait stays under its cap, and a `retry-after` is a floor
    /// (itself capped at 60 s), whatever the jitter drew.
    #[test]
    fn retry_wait_is_full_jitter_under_the_cap_and_honours_retry_after() {
        use pinch_providers::{ErrorKind, ProviderError};
        let e = |retry_after: Option<Duration>| ProviderError {
            message: "busy".into(),
            retryable: true,
            kind: ErrorKind::RateLimited,
            retry_after,
        };
        for _ in 0..200 {
            assert!(super::retry_wait(1, 100, &e(None)) <= Duration::from_millis(100));
            assert!(super::retry_wait(3, 100, &e(None)) <= Duration::from_millis(400));
            assert!(super::retry_wait(30, 100, &e(None)) <= Duration::from_secs(60));
            let w = super::retry_wait(1, 100, &e(Some(Duration::from_secs(2))));
            assert_eq!(w, Duration::from_secs(2), "the jitter is below the floor");
            let w = super::retry_wait(1, 100, &e(Some(Duration::from_secs(3600))));
            assert_eq!(
                w,
                Duration::from_secs(60),
                "a floor above the cap is capped"
            );
        }
    }
}
