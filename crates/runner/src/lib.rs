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

pub mod cli_engine;
pub mod commands;
pub mod compact;
pub mod egress;
pub mod format;
pub mod heartbeat;
pub mod history;
pub mod output;
mod poll;
pub mod prescript;
pub mod prompt;
pub mod signals;
pub mod tools;

use std::collections::HashSet;
use std::path::Path;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use jiff::{tz::TimeZone, Timestamp};
use pinch_policy::exit::{EXIT_CONFIG, EXIT_FATAL, EXIT_OK, EXIT_TEMPFAIL};
use pinch_policy::streak::{PollOutcome, Streak, StreakAction};
use pinch_proto::content::InContent;
use pinch_proto::layout;
use pinch_proto::open::{open_writer, write_tx};
use pinch_proto::rows::{self, status, NewOutbound};
use pinch_proto::runner_config::RunnerConfig;
use pinch_proto::rusqlite::Connection;
use pinch_proto::{schema, time};
use pinch_providers::{Provider, Step, TurnRequest};

use crate::poll::Snapshot;

/// A uniformly random wait in `[0, cap_ms]` ("full jitter").
fn jitter(cap_ms: u64) -> u64 {
    let r =
        u64::from_str_radix(&pinch_proto::runner_config::random_hex(8), 16).unwrap_or(cap_ms / 2);
    r % (cap_ms + 1)
}

/// The `session_state` key of the provider conversation.
fn continuation_key(cfg: &RunnerConfig) -> String {
    format!("continuation:{}", cfg.provider.kind)
}

/// Commands the outer loop handles; mid-turn they wait (lesson 19).
fn is_command(text: &str) -> bool {
    commands::Command::parse(text).is_some()
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

/// Per-turn facts the tools and follow-ups need.
struct TurnState {
    origin: Option<tools::Address>,
    in_reply_to: String,
    destinations: Vec<rows::Destination>,
    /// Largest inbound seq seen this turn (the reply is numbered above it).
    in_max: i64,
}

struct FollowUps {
    ids: Vec<String>,
    prompt: String,
    texts: Vec<String>,
    in_max: i64,
}

/// `container_state.last_progress_at` is written at most this often.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

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
    first_poll: bool,
    /// The provider conversation this session continues
    /// (`session_state` key `continuation:<provider>`).
    continuation: Option<String>,
    /// Provider usage since the last record (summed per call).
    spent: history::Spent,
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
                tx.execute(
                    "DELETE FROM processing_ack WHERE message_id = ?1 AND status = 'processing'",
                    [id],
                )
                .map_err(|e| Startup::Fatal(format!("clearing stale claims: {e}")))?;
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
        let (mcp, failed) = pinch_mcp::McpClients::start(&cfg.mcp_servers);
        let mut mcp_notes = mcp.instructions_by_server();
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
            first_poll: true,
            continuation,
            spent: history::Spent::default(),
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

    /// Handles one successful poll. Returns whether a turn ran (or rows were
    /// settled), in which case the loop polls again at once.
    fn handle(&mut self, snap: Snapshot) -> Result<bool, pinch_proto::ProtoError> {
        let first = std::mem::replace(&mut self.first_poll, false);
        self.prune_synced_acks(&snap)?;
        let now = Timestamp::now();
        let mut bad: Vec<(String, String)> = Vec::new();
        let mut parsed: Vec<(usize, InContent)> = Vec::new();
        for (i, row) in snap.pending.iter().enumerate() {
            if self.acked.contains(&row.id)
                || (row.on_wake && !first)
                || !time::is_due(row.process_after.as_deref(), now)
            {
                continue;
            }
            if row
                .process_after
                .as_deref()
                .is_some_and(|p| time::parse(p).is_err())
            {
                tracing::warn!(id = %row.id, process_after = ?row.process_after, "unparseable due time, treating as due now");
            }
            match InContent::parse(&row.kind, &row.content) {
                Err(e) => bad.push((
                    row.id.clone(),
                    format!("content is not valid JSON ({e}); the host must write JSON content"),
                )),
                Ok(InContent::Unknown { kind, .. }) => bad.push((
                    row.id.clone(),
                    format!(
                        "unknown kind {kind:?}: this runner handles chat, task, webhook and system"
                    ),
                )),
                Ok(InContent::System(s)) if waited_for(&s) => {} // belongs to a waiting tool
                Ok(c) => parsed.push((i, c)),
            }
        }
        if !bad.is_empty() {
            let now_s = time::now();
            let tx = write_tx(&mut self.out)?;
            for (id, reason) in &bad {
                tracing::warn!(id = %id, "failing inbound row: {reason}");
                rows::ack(
                    &tx,
                    id,
                    status::FAILED,
                    &self.cfg.runner_id,
                    &now_s,
                    Some(reason),
                )?;
            }
            tx.commit()
                .map_err(pinch_proto::ProtoError::sqlite("commit failed acks"))?;
            self.acked.extend(bad.into_iter().map(|(id, _)| id));
        }
        let cands: Vec<pinch_policy::batch::Candidate> = parsed
            .iter()
            .map(|(i, _)| pinch_policy::batch::Candidate {
                seq: snap.pending[*i].seq,
                trigger: snap.pending[*i].trigger,
            })
            .collect();
        let Some(batch) = pinch_policy::batch::select(&cands, self.cfg.batch_size as usize) else {
            return Ok(false);
        };
        let by_seq = |seq: i64| parsed.iter().find(|(i, _)| snap.pending[*i].seq == seq);
        let mut take: Vec<(&pinch_proto::rows::InboundRow, &InContent)> = batch
            .take
            .iter()
            .filter_map(|s| by_seq(*s).map(|(i, c)| (&snap.pending[*i], c)))
            .collect();
        let skip_ids: Vec<String> = batch
            .skip
            .iter()
            .filter_map(|s| by_seq(*s))
            .map(|(i, _)| snap.pending[*i].id.clone())
            .collect();
        // Pre-scripts first (SPEC §7.4): a task whose script finds nothing
        // to do is finished here, without the model (lesson 41).
        let mut script_data: std::collections::HashMap<i64, serde_json::Value> =
            std::collections::HashMap::new();
        let mut quiet: Vec<String> = Vec::new();
        for (row, content) in &take {
            if let InContent::Task(pinch_proto::content::TaskIn {
                script: Some(sc), ..
            }) = content
            {
                match prescript::run(sc, &self.cfg.paths.workspace_dir) {
                    prescript::Verdict::Skip => quiet.push(row.id.clone()),
                    prescript::Verdict::Wake(Some(d)) => {
                        script_data.insert(row.seq, d);
                    }
                    prescript::Verdict::Wake(None) => {}
                }
            }
        }
        if !quiet.is_empty() {
            let now_s = time::now();
            let tx = write_tx(&mut self.out)?;
            for id in &quiet {
                rows::ack(
                    &tx,
                    id,
                    status::COMPLETED,
                    &self.cfg.runner_id,
                    &now_s,
                    Some("pre-script: nothing to do"),
                )?;
            }
            tx.commit()
                .map_err(pinch_proto::ProtoError::sqlite("commit pre-script acks"))?;
            tracing::info!(
                tasks = quiet.len(),
                "task pre-script found nothing to do; no model call"
            );
            self.acked.extend(quiet.iter().cloned());
            take.retain(|(r, _)| !quiet.contains(&r.id));
            if !take.iter().any(|(r, _)| r.trigger) {
                // Context rows stay pending for a later turn.
                return Ok(true);
            }
        }
        let trigger_seq = if take.iter().any(|(r, _)| r.seq == batch.trigger) {
            batch.trigger
        } else {
            take.iter()
                .find(|(r, _)| r.trigger)
                .map(|(r, _)| r.seq)
                .expect("a trigger row is left")
        };
        let with_data: Vec<InContent> = take
            .iter()
            .map(|(r, c)| match (c, script_data.get(&r.seq)) {
                (InContent::Task(t), Some(d)) => {
                    let mut t = t.clone();
                    t.prompt = format!("{}\n\nData from the task's check script: {d}", t.prompt);
                    InContent::Task(t)
                }
                _ => (*c).clone(),
            })
            .collect();
        let mut take: Vec<(&pinch_proto::rows::InboundRow, &InContent)> = take
            .iter()
            .zip(&with_data)
            .map(|((r, _), c)| (*r, c))
            .collect();
        // A command heading a batch runs alone, without the model (SPEC
        // §5.2); what came after it waits for the next turn.
        let command = take.first().and_then(|(r, c)| match c {
            InContent::Chat(ch) if r.seq == trigger_seq => commands::Command::parse(&ch.text),
            _ => None,
        });
        let clear = command == Some(commands::Command::Clear);
        if command.is_some() {
            take.truncate(1);
        }
        let trigger_row = take
            .iter()
            .find(|(r, _)| r.seq == trigger_seq)
            .map(|(r, _)| (*r).clone())
            .expect("trigger in batch");
        let ids: Vec<&str> = take.iter().map(|(r, _)| r.id.as_str()).collect();
        // The continuation is created and stored before the first call
        // (lesson 13: a turn killed midway resumes the same conversation).
        let fresh = clear || self.continuation.is_none();
        if fresh {
            self.continuation = Some(format!("c-{}", pinch_proto::runner_config::random_hex(8)));
        }
        let continuation = self.continuation.clone().expect("set above");

        // Claim the batch (and settle skipped context) in one transaction.
        let now_s = time::now();
        {
            let tx = write_tx(&mut self.out)?;
            rows::claim(&tx, &ids, &self.cfg.runner_id, &now_s)?;
            if fresh {
                rows::state_put(&tx, &continuation_key(&self.cfg), &continuation, &now_s)?;
            }
            for id in &skip_ids {
                rows::ack(
                    &tx,
                    id,
                    status::COMPLETED,
                    &self.cfg.runner_id,
                    &now_s,
                    Some("skipped: older context beyond the batch size"),
                )?;
            }
            tx.execute(
                "INSERT INTO container_state (id, runner_id, turn_started_at, last_progress_at, updated_at) VALUES (1, ?1, ?2, ?2, ?2)
                 ON CONFLICT(id) DO UPDATE SET runner_id=excluded.runner_id, current_tool=NULL, tool_declared_timeout_ms=NULL,
                   tool_started_at=NULL, turn_started_at=excluded.turn_started_at, last_progress_at=excluded.last_progress_at,
                   updated_at=excluded.updated_at",
                [&self.cfg.runner_id, &now_s],
            )
            .map_err(pinch_proto::ProtoError::sqlite("writing container state"))?;
            tx.commit()
                .map_err(pinch_proto::ProtoError::sqlite("commit claim"))?;
        }
        if !skip_ids.is_empty() {
            tracing::info!(
                count = skip_ids.len(),
                "older context rows skipped (beyond the batch size)"
            );
        }
        self.acked.extend(ids.iter().map(|s| s.to_string()));
        self.acked.extend(skip_ids);
        tracing::debug!(batch = ?batch.take, trigger = batch.trigger, "claimed batch");

        let items: Vec<format::Item<'_>> = take
            .iter()
            .map(|(row, content)| format::Item { row, content })
            .collect();
        let prompt = format::format_batch(
            &items,
            &snap.destinations,
            &self.cfg.timezone,
            &self.tz,
            now,
        );
        let texts: Vec<String> = take
            .iter()
            .filter_map(|(_, c)| match c {
                InContent::Chat(c) => Some(c.text.clone()),
                InContent::Task(t) => Some(t.prompt.clone()),
                _ => None,
            })
            .collect();
        let caps = self.provider.capabilities();
        let offered = if command.is_none() && caps.tools {
            self.all_tools()
        } else {
            Vec::new()
        };
        let mcp_instructions = self.mcp_notes.clone();
        let system = if offered.is_empty()
            && caps.context_window > 0
            && caps.context_window <= prompt::SMALL_WINDOW
        {
            prompt::system_prompt_small(&self.cfg)
        } else {
            prompt::system_prompt(&self.cfg, &snap.destinations, &offered, &mcp_instructions)
        };
        // What every request carries besides history and prompt: the system
        // prompt and the tool schemas (for the context estimate).
        let fixed = format!(
            "{system}{}",
            serde_json::to_string(&offered).unwrap_or_default()
        );
        let mut compacted: Option<Result<Option<compact::Compacted>, String>> = None;
        let history = if fresh || command.is_some() {
            Vec::new()
        } else {
            let mut live = history::Live::load(&self.out, &continuation)?;
            let reported = history::usage_get(&self.out, &history::usage_key(&continuation))?
                .last_input_tokens;
            let tokens = compact::estimate_tokens(&fixed, &live.history(), &prompt, reported);
            if compact::over_threshold(tokens, caps.context_window) {
                tracing::info!(
                    tokens,
                    window = caps.context_window,
                    "the conversation fills the context window past the threshold"
                );
                match self.compact(&continuation, &system, 4)? {
                    Ok(Some(_)) => live = history::Live::load(&self.out, &continuation)?,
                    Ok(None) => {}
                    Err(e) => tracing::warn!(
                        "compaction failed, the oldest messages are left out instead: {e}"
                    ),
                }
            }
            // Whatever compaction managed, never send more than the window.
            let budget =
                (caps.context_window as usize * 4).saturating_sub(fixed.len() + prompt.len()) * 9
                    / 10;
            let budget = if caps.context_window == 0 {
                usize::MAX
            } else {
                budget
            };
            history::fit(live.history(), live.summary.is_some(), budget)
        };
        if command == Some(commands::Command::Compact) {
            compacted = Some(self.compact(&continuation, &system, 2)?);
        }
        let mut req = TurnRequest {
            system,
            prompt,
            texts,
            continuation: Some(continuation),
            fresh_continuation: fresh,
            history,
            tools: offered,
            ..Default::default()
        };
        let mut ids: Vec<String> = ids.iter().map(|s| s.to_string()).collect();
        // What the next turn's history shows as this turn's user message:
        // the batch plus any follow-ups that joined it.
        let mut user_record = req.prompt.clone();
        let origin = match (&trigger_row.channel_type, &snap.routing) {
            (Some(_), _) => Some(tools::Address {
                channel_type: trigger_row.channel_type.clone(),
                platform_id: trigger_row.platform_id.clone(),
                thread_id: trigger_row.thread_id.clone(),
            }),
            (None, Some(r)) => Some(tools::Address::of_routing(r)),
            (None, None) => None,
        };
        let mut turn = TurnState {
            origin,
            in_reply_to: trigger_row.id.clone(),
            destinations: snap.destinations.clone(),
            in_max: snap.in_max,
        };
        let reply = |text: String| {
            Ok(pinch_providers::TurnResult {
                text,
                ..Default::default()
            })
        };
        let conv = req.continuation.clone().unwrap_or_default();
        let result = if let Some(cmd) = command {
            tracing::info!(
                ?cmd,
                "command heading the batch, answered without the model"
            );
            match cmd {
                commands::Command::Clear => reply("Session cleared.".into()),
                commands::Command::Compact => reply(match compacted.take().expect("compacted above") {
                    Ok(Some(c)) => format!(
                        "Compacted: {} messages summarised; the full text is archived in {}. MEMORY.md stays as it is.",
                        c.messages, c.archive
                    ),
                    Ok(None) => "Nothing to compact yet: the conversation since the last compaction is shorter than one exchange.".into(),
                    Err(e) => format!("Could not compact the conversation: {e}. It goes on as it was."),
                }),
                commands::Command::Context => {
                    // As a normal turn would send it: tools offered, their schemas counted.
                    let all = if caps.tools { self.all_tools() } else { Vec::new() };
                    let sys = prompt::system_prompt(&self.cfg, &snap.destinations, &all, &mcp_instructions);
                    let fixed = format!("{sys}{}", serde_json::to_string(&all).unwrap_or_default());
                    reply(commands::context(&self.out, &conv, &fixed, caps.context_window)?)
                }
                commands::Command::Cost => reply(commands::cost(&self.out, &conv)?),
                commands::Command::Files => reply(commands::files(&self.cfg)),
            }
        } else if self.cfg.provider.kind == "cli" {
            // CLI ENGINE HOOK (2/2): the agent CLI runs the whole loop itself,
            // calling pinch's tools over MCP; its answer has no tool calls.
            self.cli_turn(&req, &turn)
        } else {
            let first = match self.provider_turn(&req) {
                // A resume the provider no longer knows: start over once, not
                // forever (lesson 14).
                Err(e) if e.kind == pinch_providers::ErrorKind::SessionNotFound && !fresh => {
                    tracing::warn!(
                        "resuming the conversation failed ({e}); starting a new one, once"
                    );
                    let c = format!("c-{}", pinch_proto::runner_config::random_hex(8));
                    let tx = write_tx(&mut self.out)?;
                    rows::state_put(&tx, &continuation_key(&self.cfg), &c, &time::now())?;
                    tx.commit()
                        .map_err(pinch_proto::ProtoError::sqlite("commit continuation"))?;
                    self.continuation = Some(c.clone());
                    req.continuation = Some(c);
                    req.fresh_continuation = true;
                    req.history.clear();
                    self.provider_turn(&req)
                }
                r => r,
            };
            self.agent_loop(first, &mut req, &mut turn, &mut ids, &mut user_record)?
        };

        let answered: Option<String> = match (&result, command) {
            (Ok(r), None) => Some(r.text.clone()),
            _ => None,
        };
        /// Where a reply goes (`None`: back to the origin) and its text.
        type Outgoing = (Option<rows::Destination>, String);
        let (sends, outcome, reason): (Vec<Outgoing>, &str, Option<String>) = match result {
            Ok(r) => {
                let parsed = output::parse(&r.text);
                let mut sends = Vec::new();
                for s in parsed.sends {
                    match s {
                        output::Send::Origin(text) => sends.push((None, text)),
                        output::Send::To { name, text } => {
                            match snap.destinations.iter().find(|d| d.name == name) {
                                Some(d) => sends.push((Some(d.clone()), text)),
                                None => {
                                    tracing::warn!(name = %name, "agent addressed an unknown destination; block dropped")
                                }
                            }
                        }
                    }
                }
                (sends, status::COMPLETED, None)
            }
            Err(e) => {
                tracing::error!(retryable = e.retryable, "provider failed: {e}");
                (
                    vec![(
                        None,
                        format!("Sorry, I could not answer that: the model provider failed ({e})."),
                    )],
                    status::FAILED,
                    Some(format!("provider failed: {e}")),
                )
            }
        };

        // Outputs and acks commit together (lesson 18/20).
        let now_s = time::now();
        let tx = write_tx(&mut self.out)?;
        for (dest, text) in sends {
            self.out_counter += 1;
            let (channel_type, platform_id, thread_id) = match &dest {
                Some(d) if d.kind == "agent" => {
                    (Some("agent".to_owned()), d.agent_group_id.clone(), None)
                }
                Some(d) => (d.channel_type.clone(), d.platform_id.clone(), None),
                None => match (&trigger_row.channel_type, &snap.routing) {
                    (Some(_), _) => (
                        trigger_row.channel_type.clone(),
                        trigger_row.platform_id.clone(),
                        trigger_row.thread_id.clone(),
                    ),
                    (None, Some(r)) => (
                        r.channel_type.clone(),
                        r.platform_id.clone(),
                        r.thread_id.clone(),
                    ),
                    (None, None) => (None, None, None),
                },
            };
            let row = NewOutbound {
                id: format!("out-{}-{}", self.cfg.runner_id, self.out_counter),
                in_reply_to: Some(trigger_row.id.clone()),
                timestamp: now_s.clone(),
                deliver_after: None,
                kind: "chat".into(),
                platform_id,
                channel_type,
                thread_id,
                content: pinch_proto::content::ChatOut::Text {
                    text,
                    files: vec![],
                }
                .to_json(),
            };
            rows::insert_outbound(&tx, &row, turn.in_max)?;
        }
        for id in &ids {
            rows::ack(
                &tx,
                id,
                outcome,
                &self.cfg.runner_id,
                &now_s,
                reason.as_deref(),
            )?;
        }
        if let (Some(reply), Some(c)) = (answered.as_deref(), req.continuation.as_deref()) {
            history::append(
                &tx,
                c,
                &[("user", &user_record), ("assistant", reply)],
                &now_s,
            )?;
        }
        if let (None, Some(c)) = (command, req.continuation.as_deref()) {
            let spent = std::mem::take(&mut self.spent);
            history::usage_record(&tx, c, &spent, true, &now_s)?;
        }
        tx.execute("UPDATE container_state SET turn_started_at = NULL, last_progress_at = ?1, updated_at = ?1 WHERE id = 1 AND runner_id = ?2", [&now_s, &self.cfg.runner_id])
            .map_err(pinch_proto::ProtoError::sqlite("writing container state"))?;
        tx.commit()
            .map_err(pinch_proto::ProtoError::sqlite("commit turn"))?;
        tracing::info!(batch = ids.len(), outcome, "turn done");
        Ok(true)
    }

    /// The agent loop (SPEC §5.5): while the model asks for tools, run
    /// them, append the results (and any follow-ups that arrived, lesson
    /// 20) to the steps, record the step in `conversation` with the
    /// follow-ups' claims (lesson 13), and call the model again. Ends at the
    /// first result without tool calls, at an error, or at `max_steps`
    /// model calls (then with the text the last call had).
    fn agent_loop(
        &mut self,
        first: Result<pinch_providers::TurnResult, pinch_providers::ProviderError>,
        req: &mut TurnRequest,
        turn: &mut TurnState,
        ids: &mut Vec<String>,
        user_record: &mut String,
    ) -> Result<
        Result<pinch_providers::TurnResult, pinch_providers::ProviderError>,
        pinch_proto::ProtoError,
    > {
        let max = self.cfg.timings.max_steps.max(1);
        let mut calls = 1u32;
        let mut r = first;
        loop {
            let t = match r {
                Ok(t) if !t.tool_calls.is_empty() => t,
                other => return Ok(other),
            };
            if req.tools.is_empty() {
                tracing::warn!(
                    calls = t.tool_calls.len(),
                    "the provider called tools although none were offered; calls ignored"
                );
                return Ok(Ok(pinch_providers::TurnResult {
                    tool_calls: Vec::new(),
                    ..t
                }));
            }
            if calls >= max {
                tracing::warn!(
                    max_steps = max,
                    pending_calls = t.tool_calls.len(),
                    "step limit reached: the turn ends with the text of the last step, its tool calls not run"
                );
                return Ok(Ok(pinch_providers::TurnResult {
                    tool_calls: Vec::new(),
                    ..t
                }));
            }
            let mut new_steps = self.run_tools(&t, turn);
            let follow = self.follow_ups(ids);
            if let Some(f) = &follow {
                new_steps.push(Step::User {
                    text: f.prompt.clone(),
                });
            }
            let now_s = time::now();
            {
                let tx = write_tx(&mut self.out)?;
                if let Some(c) = req.continuation.as_deref() {
                    let recs: Vec<String> = new_steps
                        .iter()
                        .map(|s| serde_json::to_string(s).unwrap_or_default())
                        .collect();
                    let msgs: Vec<(&str, &str)> =
                        recs.iter().map(|x| ("step", x.as_str())).collect();
                    history::append(&tx, c, &msgs, &now_s)?;
                }
                if let Some(f) = &follow {
                    let fids: Vec<&str> = f.ids.iter().map(String::as_str).collect();
                    rows::claim(&tx, &fids, &self.cfg.runner_id, &now_s)?;
                }
                tx.execute(
                    "UPDATE container_state SET last_progress_at = ?1, updated_at = ?1 WHERE id = 1 AND runner_id = ?2",
                    [&now_s, &self.cfg.runner_id],
                )
                .map_err(pinch_proto::ProtoError::sqlite("writing container state"))?;
                tx.commit()
                    .map_err(pinch_proto::ProtoError::sqlite("commit step"))?;
            }
            req.steps.extend(new_steps);
            if let Some(f) = follow {
                tracing::info!(count = f.ids.len(), "follow-ups joined the turn");
                self.acked.extend(f.ids.iter().cloned());
                ids.extend(f.ids);
                req.texts.extend(f.texts);
                user_record.push('\n');
                user_record.push_str(&f.prompt);
                turn.in_max = turn.in_max.max(f.in_max);
            }
            calls += 1;
            r = self.provider_turn(req);
        }
    }

    /// The built-in tools, then the MCP servers' (a name clash keeps the
    /// built-in one: MCP names always contain `__`, built-ins never do).
    fn all_tools(&self) -> Vec<pinch_providers::ToolSpec> {
        let mut all = tools::specs();
        all.extend(self.mcp.tools());
        all
    }

    /// Runs one step's tool calls in order; returns the step records (the
    /// model's output, then each result).
    fn run_tools(&mut self, t: &pinch_providers::TurnResult, turn: &TurnState) -> Vec<Step> {
        let stop_file = self.cfg.paths.in_dir.join(layout::STOP);
        let rid = self.cfg.runner_id.clone();
        let should_stop = move || {
            signals::stop_requested()
                || std::fs::read_to_string(&stop_file).is_ok_and(|s| s.trim() == rid)
        };
        let mut ctx = tools::ToolCtx::new(&self.cfg, &mut self.out, &should_stop);
        ctx.destinations = turn.destinations.clone();
        ctx.origin = turn.origin.clone();
        ctx.in_reply_to = Some(turn.in_reply_to.clone());
        ctx.in_max = turn.in_max;
        ctx.counter = self.tool_counter;
        let mut steps = vec![Step::Assistant {
            text: t.text.clone(),
            calls: t.tool_calls.clone(),
        }];
        for c in &t.tool_calls {
            let started = Instant::now();
            let out = if self.mcp.has_tool(&c.name) {
                // The declared timeout widens the host's stuck tolerance
                // while an external server works (SPEC §5.6).
                let timeout = self.mcp.timeout_of(&c.name).unwrap_or(Duration::from_secs(
                    pinch_proto::runner_config::MCP_DEFAULT_TIMEOUT_S,
                ));
                ctx.set_tool_in_flight(Some((&c.name, timeout.as_millis() as u64)));
                let r = self.mcp.call(&c.name, &c.arguments, None);
                ctx.set_tool_in_flight(None);
                match r {
                    Ok(r) => tools::ToolOutput {
                        content: r.content,
                        is_error: r.is_error,
                    },
                    Err(e) => tools::ToolOutput::err(e.to_string()),
                }
            } else {
                tools::call(&mut ctx, &c.name, &c.arguments)
            };
            tracing::info!(tool = %c.name, is_error = out.is_error, ms = started.elapsed().as_millis() as u64, "tool call");
            if out.is_error {
                tracing::debug!(tool = %c.name, "tool error: {}", out.content);
            }
            steps.push(Step::ToolResult {
                call_id: c.id.clone(),
                name: c.name.clone(),
                content: out.content,
                is_error: out.is_error,
            });
        }
        self.tool_counter = ctx.counter;
        let acked = std::mem::take(&mut ctx.acked);
        drop(ctx);
        self.acked.extend(acked);
        steps
    }

    /// Due rows that arrived during the turn, to join it at a step boundary
    /// (lesson 20). A command (`/clear`, …) and everything after it wait
    /// for the outer loop (lesson 19); rows this version cannot parse are
    /// left for the outer loop to fail.
    fn follow_ups(&mut self, turn_ids: &[String]) -> Option<FollowUps> {
        let snap = match poll::snapshot(&self.cfg) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("polling for follow-ups failed (they wait for the next turn): {e}");
                return None;
            }
        };
        let now = Timestamp::now();
        let mut taken: Vec<(&rows::InboundRow, InContent)> = Vec::new();
        for row in &snap.pending {
            if self.acked.contains(&row.id)
                || turn_ids.contains(&row.id)
                || row.on_wake
                || !time::is_due(row.process_after.as_deref(), now)
            {
                continue;
            }
            let Ok(c) = InContent::parse(&row.kind, &row.content) else {
                continue;
            };
            match &c {
                InContent::Unknown { .. } => continue,
                InContent::System(s) if waited_for(s) => continue,
                InContent::Chat(ch) if is_command(&ch.text) => break,
                // A task starts a turn of its own: its pre-script decides
                // first whether the model is called at all (lesson 41).
                InContent::Task(_) => break,
                _ => {}
            }
            taken.push((row, c));
            if taken.len() >= self.cfg.batch_size as usize {
                break;
            }
        }
        if taken.is_empty() {
            return None;
        }
        let items: Vec<format::Item<'_>> = taken
            .iter()
            .map(|(row, content)| format::Item { row, content })
            .collect();
        let prompt = format::format_batch(
            &items,
            &snap.destinations,
            &self.cfg.timezone,
            &self.tz,
            now,
        );
        let texts = taken
            .iter()
            .filter_map(|(_, c)| match c {
                InContent::Chat(c) => Some(c.text.clone()),
                InContent::Task(t) => Some(t.prompt.clone()),
                _ => None,
            })
            .collect();
        Some(FollowUps {
            ids: taken.iter().map(|(r, _)| r.id.clone()).collect(),
            prompt,
            texts,
            in_max: snap.in_max,
        })
    }

    /// A provider call with retries (SPEC §5.5): retryable errors (429,
    /// 529, 5xx, timeouts, cut streams) back off with full jitter between
    /// the base and 60 s, up to `provider_tries` attempts; the heartbeat
    /// thread keeps beating meanwhile, and each wait is recorded as progress.
    fn provider_turn(
        &mut self,
        req: &TurnRequest,
    ) -> Result<pinch_providers::TurnResult, pinch_providers::ProviderError> {
        let tries = self.cfg.timings.provider_tries.max(1);
        let base = self.cfg.timings.provider_retry_base_ms.max(1);
        let mut attempt = 1;
        loop {
            match self.provider_call(req) {
                Err(e) if e.retryable && attempt < tries => {
                    let cap = (base << (attempt - 1).min(16)).min(60_000);
                    let wait = Duration::from_millis(jitter(cap));
                    tracing::warn!(
                        attempt,
                        of = tries,
                        wait_ms = wait.as_millis() as u64,
                        "provider failed, retrying: {e}"
                    );
                    let now_s = time::now();
                    let _ = self.out.execute(
                        "UPDATE container_state SET last_progress_at = ?1, updated_at = ?1 WHERE id = 1 AND runner_id = ?2",
                        [&now_s, &self.cfg.runner_id],
                    );
                    std::thread::sleep(wait);
                    attempt += 1;
                }
                r => return r,
            }
        }
    }

    /// One provider call. Its events are liveness: progress is recorded (at
    /// most every PROGRESS_EVERY) so the host's stuck check sees a slow turn
    /// moving.
    fn provider_call(
        &mut self,
        req: &TurnRequest,
    ) -> Result<pinch_providers::TurnResult, pinch_providers::ProviderError> {
        let (out, provider, runner_id) = (
            &mut self.out,
            &mut self.provider,
            self.cfg.runner_id.clone(),
        );
        let mut last_progress = Instant::now();
        let r = provider.turn(req, &mut |_ev| {
            if last_progress.elapsed() >= PROGRESS_EVERY {
                last_progress = Instant::now();
                let now_s = time::now();
                if let Err(e) = out.execute(
                    "UPDATE container_state SET last_progress_at = ?1, updated_at = ?1 WHERE id = 1 AND runner_id = ?2",
                    [&now_s, &runner_id],
                ) {
                    tracing::warn!("could not record turn progress: {e}");
                }
            }
        });
        if let Ok(t) = &r {
            self.spent.add(t.usage);
        }
        r
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
        {
            let mut stmt = tx
                // Failed acks stay: their reason is the record of why.
                .prepare_cached(
                    "DELETE FROM processing_ack WHERE message_id = ?1 AND status = 'completed'",
                )
                .map_err(pinch_proto::ProtoError::sqlite("pruning acks"))?;
            for id in &done {
                stmt.execute([id])
                    .map_err(pinch_proto::ProtoError::sqlite("pruning acks"))?;
            }
        }
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
}
