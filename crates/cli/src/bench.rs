//! `pinch bench`: the TARGETS.md figures, measured on this machine.
//!
//! Every figure runs against a real host (the code `pinch host` runs, or the
//! `pinch host` binary itself for P6) in a fresh temporary data dir, with the
//! scripted provider, and is printed beside a baseline measured in the same
//! run and the ratio between the two. Nothing here asserts a timing: the
//! machines are shared and noisy, so the bench measures and reports.
//!
//! Shape: [`run`] resolves the arguments into a plan; then come the measuring
//! tools (a CLI client that acks every reply, a watcher of a session's `out/`
//! that sees a runner's claim, `/proc` readers); one function per figure; the
//! report (table or JSON).
//!
//! The driver runs on the thread that calls `block_on`, never on a runtime
//! worker, so its blocking waits (the claim watcher) never starve the host's
//! tasks, which run on the two workers.

use std::collections::{HashMap, HashSet, VecDeque};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use pinch_channels::cli_socket::{ClientMsg, ServerMsg};
use pinch_host::db::central::{Central, SessionRow};
use pinch_host::paths::{DataDir, SessionDir};
use pinch_host::sandbox::{self, Choice, Kind};
use pinch_host::{HostConfig, HostHandle, SessionInfo};
use pinch_proto::content::{ChatIn, InContent};
use pinch_proto::open::{open_reader, open_writer, write_tx};
use pinch_proto::rows::{self, NewInbound};
use pinch_proto::runner_config::{random_hex, ProviderSettings};
use pinch_proto::rusqlite::Connection;
use pinch_proto::{inbound, outbound};
use tempfile::TempDir;

use crate::chat::Conn;

/// Busy timeout of the bench's own connections (the protocol's default).
const BUSY: Duration = pinch_proto::open::DEFAULT_BUSY_TIMEOUT;
/// Longest wait for anything (a reply, a claim, a runner to stop).
const WAIT: Duration = Duration::from_secs(30);
/// The claim watcher re-checks at least this often without an event.
const RECHECK: Duration = Duration::from_millis(2);
/// Pause between iterations so the warm runner is idle, waiting on inotify,
/// when the next message arrives (its post-turn poll and ack pruning done).
const GAP: Duration = Duration::from_millis(20);
/// Idle sessions seeded for P6.
const P6_SESSIONS: usize = 50;
/// How long P6 and P7 let the process sit idle before reading its RSS.
const P6_IDLE: Duration = Duration::from_secs(2);
const P7_IDLE: Duration = Duration::from_secs(1);

/// A TARGETS.md figure.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, clap::ValueEnum)]
pub enum Fig {
    P1,
    P2,
    P3,
    P4,
    P6,
    P7,
    P9,
    /// One tool round trip (issue 4).
    Tool,
}

impl Fig {
    const ALL: [Fig; 8] = [
        Fig::P1,
        Fig::P2,
        Fig::P3,
        Fig::P4,
        Fig::P6,
        Fig::P7,
        Fig::P9,
        Fig::Tool,
    ];

    fn id(self) -> &'static str {
        match self {
            Fig::P1 => "P1",
            Fig::P2 => "P2",
            Fig::P3 => "P3",
            Fig::P4 => "P4",
            Fig::P6 => "P6",
            Fig::P7 => "P7",
            Fig::P9 => "P9",
            Fig::Tool => "TOOL",
        }
    }

    /// Short label for the table.
    fn label(self) -> &'static str {
        match self {
            Fig::P1 => "row committed → warm claim",
            Fig::P2 => "CLI message → reply (warm)",
            Fig::P3 => "cold start → first claim",
            Fig::P4 => "routing throughput, 100 sessions",
            Fig::P6 => "host idle RSS, 50 sessions",
            Fig::P7 => "runner idle RSS",
            Fig::P9 => "crash noticed → replacement claims",
            Fig::Tool => "CLI message → shell tool → reply (warm)",
        }
    }

    /// What it measures, for the legend.
    fn measures(self) -> &'static str {
        match self {
            Fig::P1 => "inbound row committed → warm runner has claimed it (t0 right after the commit into in/inbound.db; \
                        t1 when a fresh read-only connection sees the claim in out/outbound.db processing_ack)",
            Fig::P2 => "message sent on the CLI channel → reply printed, warm session (t0 before the socket write; \
                        t1 when the reply line is read)",
            Fig::P3 => "cold start: message to a session with no runner → runner's first poll, seen as its claim \
                        (t0 before the socket write; t1 when the claim row appears)",
            Fig::P4 => "inbound messages routed and committed per second: a channel adapter in the host process sends messages \
                        over 100 group conversations, each wired to the agent with sender_scope known, policy strict \
                        (the sender's roles are checked per message), 10 in flight per conversation (1,000 in all); t0 before the first send, t1 when the last \
                        ack (= committed to its session's inbound.db) returns; runners are not started (max_concurrent_runners 0)",
            Fig::P6 => "`pinch host` daemon VmRSS after 2 s idle: CLI channel with one client connected, 50 idle sessions, no runners",
            Fig::P7 => "runner (`pinch runner`) VmRSS after 1 s idle, warm session, scripted provider",
            Fig::P9 => "runner killed (SIGKILL) mid-turn → its replacement has claimed the interrupted message \
                        (t0 just before the kill; t1 when a claim by a new runner id appears; exit noticed from the child, not a sweep)",
            Fig::Tool => "one tool round trip, warm session: message sent on the CLI → scripted model calls `shell` (`echo`) → \
                          sh runs in the sandbox → result → model → reply printed (t0 before the socket write; t1 when the reply line is read)",
        }
    }

    fn target(self, kind: Kind) -> &'static str {
        match (self, kind) {
            (Fig::P1, _) => "p95 ≤ 10 ms",
            (Fig::P2, _) => "p50 ≤ 10 ms, p95 ≤ 25 ms",
            (Fig::P3, Kind::Bwrap) => "p50 ≤ 30 ms",
            (Fig::P3, Kind::Docker) => "p50 ≤ 300 ms",
            (Fig::P3, Kind::Process) => "none (bwrap: p50 ≤ 30 ms)",
            (Fig::P4, _) => "≥ 5,000 msg/s",
            (Fig::P6, _) => "≤ 15 MB",
            (Fig::P7, _) => "≤ 10 MB",
            (Fig::P9, _) => "≤ 100 ms",
            (Fig::Tool, _) => "none (reported in issue 4; baseline P2)",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum SandboxArg {
    Bwrap,
    Process,
    Both,
    /// Docker (only when asked for: it needs a running daemon).
    Docker,
}

#[derive(clap::Args)]
pub struct BenchArgs {
    /// Figures to measure (default: all).
    #[arg(value_enum)]
    figures: Vec<Fig>,
    /// Sandbox(es) to measure with (default: both when bubblewrap works here, else process).
    #[arg(long, value_enum)]
    sandbox: Option<SandboxArg>,
    /// Iterations of every latency figure (default: 50 for P1 and P2, 20 for P3).
    #[arg(long)]
    iterations: Option<usize>,
    /// Print the results as JSON instead of a table.
    #[arg(long)]
    json: bool,
}

/// Runs the bench; temporary data dirs go under `data_dir` when given.
pub fn run(data_dir: Option<PathBuf>, args: BenchArgs) -> Result<i32> {
    if args.iterations == Some(0) {
        bail!("--iterations must be at least 1");
    }
    let mut figures = if args.figures.is_empty() {
        Fig::ALL.to_vec()
    } else {
        args.figures.clone()
    };
    figures.sort();
    figures.dedup();
    let sandboxes = sandboxes(args.sandbox)?;
    let bench = Bench {
        root: data_dir,
        exe: std::env::current_exe()
            .context("finding the pinch executable (runners are started from it)")?,
        iterations: args.iterations,
    };
    let machine = Machine::describe(&sandboxes);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let rows = rt.block_on(bench.run_all(&figures, &sandboxes))?;
    // Hosts of finished figures may leave tasks behind; do not wait for them.
    rt.shutdown_timeout(Duration::from_secs(1));
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report_json(&machine, &rows))?
        );
    } else {
        print_table(&machine, &rows);
    }
    Ok(0)
}

/// Resolves `--sandbox`: `both` (the default) falls back to `process`, with
/// a note, when bwrap does not work here; an explicit `bwrap` that does not
/// work is an error.
fn sandboxes(arg: Option<SandboxArg>) -> Result<Vec<Kind>> {
    let bwrap = || sandbox::select(Choice::Bwrap).map(|_| ());
    Ok(match arg.unwrap_or(SandboxArg::Both) {
        SandboxArg::Process => vec![Kind::Process],
        SandboxArg::Docker => {
            sandbox::select(Choice::Docker)
                .map_err(|e| anyhow!("the docker sandbox does not work here: {e}"))?;
            vec![Kind::Docker]
        }
        SandboxArg::Bwrap => {
            bwrap().map_err(|e| anyhow!("the bwrap sandbox does not work here: {e}"))?;
            vec![Kind::Bwrap]
        }
        SandboxArg::Both => match bwrap() {
            Ok(()) => vec![Kind::Bwrap, Kind::Process],
            Err(e) => {
                eprintln!("pinch bench: note: bubblewrap does not work here ({e}); measuring the process sandbox only");
                vec![Kind::Process]
            }
        },
    })
}

struct Bench {
    /// Parent of the temporary data dirs (`--data-dir`), else the system temp dir.
    root: Option<PathBuf>,
    /// This executable: runners and the P6 daemon are started from it.
    exe: PathBuf,
    iterations: Option<usize>,
}

impl Bench {
    fn n(&self, default: usize) -> usize {
        self.iterations.unwrap_or(default)
    }

    /// A fresh data dir, removed when dropped.
    fn temp_dir(&self, tag: &str) -> Result<TempDir> {
        let mut b = tempfile::Builder::new();
        let prefix = format!("pinch-bench-{tag}-");
        b.prefix(&prefix);
        match &self.root {
            Some(r) => {
                std::fs::create_dir_all(r).with_context(|| format!("creating {}", r.display()))?;
                b.tempdir_in(r)
                    .with_context(|| format!("creating a temporary dir under {}", r.display()))
            }
            None => b.tempdir().context("creating a temporary dir"),
        }
    }

    fn host_config(&self, dir: &Path, kind: Kind) -> HostConfig {
        let mut c = HostConfig::new(dir.to_owned());
        c.sandbox = match kind {
            Kind::Bwrap => Choice::Bwrap,
            Kind::Docker => Choice::Docker,
            Kind::Process => Choice::Process,
        };
        c.provider = ProviderSettings {
            kind: "scripted".into(),
            ..Default::default()
        };
        c.runner_exe = self.exe.clone();
        // Runners must stay warm for the whole run.
        c.runner.idle_exit_ms = 600_000;
        c.login = "bench".into();
        c
    }

    async fn run_all(&self, figures: &[Fig], sandboxes: &[Kind]) -> Result<Vec<Row>> {
        let want = |f: Fig| figures.contains(&f);
        let mut rows = Vec::new();
        for &kind in sandboxes {
            if want(Fig::P1) || want(Fig::P2) {
                rows.extend(
                    self.p1_p2(kind, want(Fig::P1), want(Fig::P2))
                        .await
                        .with_context(|| format!("P1/P2 ({})", kind.as_str()))?,
                );
            }
            if want(Fig::P3) {
                rows.push(
                    self.p3(kind)
                        .await
                        .with_context(|| format!("P3 ({})", kind.as_str()))?,
                );
            }
            if want(Fig::P7) {
                rows.push(
                    self.p7(kind)
                        .await
                        .with_context(|| format!("P7 ({})", kind.as_str()))?,
                );
            }
            if want(Fig::P9) {
                rows.push(
                    self.p9(kind)
                        .await
                        .with_context(|| format!("P9 ({})", kind.as_str()))?,
                );
            }
            if want(Fig::Tool) {
                rows.push(
                    self.tool(kind)
                        .await
                        .with_context(|| format!("TOOL ({})", kind.as_str()))?,
                );
            }
        }
        // Routing starts no runner, so its sandbox does not matter: once.
        if want(Fig::P4) {
            rows.push(self.p4(sandboxes[0]).await.context("P4")?);
        }
        // The idle daemon runs no runner, so its sandbox does not matter: once.
        if want(Fig::P6) {
            rows.push(self.p6(sandboxes[0]).await.context("P6")?);
        }
        rows.sort_by_key(|r| (r.fig, r.sandbox.as_str()));
        Ok(rows)
    }
}

// ---------------------------------------------------------------------------
// Statistics

#[derive(Clone, Copy, Debug)]
struct Summary {
    n: usize,
    median: Duration,
    p95: Duration,
}

impl Summary {
    fn of(mut samples: Vec<Duration>) -> Summary {
        assert!(!samples.is_empty(), "a figure has at least one sample");
        samples.sort();
        Summary {
            n: samples.len(),
            median: nearest_rank(&samples, 50),
            p95: nearest_rank(&samples, 95),
        }
    }
}

/// The nearest-rank percentile of sorted samples: the smallest sample with
/// at least `p` percent of the samples at or below it.
fn nearest_rank(sorted: &[Duration], p: usize) -> Duration {
    let rank = (p * sorted.len()).div_ceil(100).max(1);
    sorted[rank - 1]
}

// ---------------------------------------------------------------------------
// Results

enum Measured {
    Latency(Summary),
    Memory(ProcMem),
    /// `n` operations at `per_s` per second.
    Throughput {
        n: usize,
        per_s: f64,
    },
}

struct Baseline {
    what: String,
    summary: Summary,
    /// Throughput figures: the baseline's rate (then `summary` is unused).
    per_s: Option<f64>,
}

struct Row {
    fig: Fig,
    sandbox: Kind,
    measured: Measured,
    baseline: Option<Baseline>,
    notes: Vec<String>,
}

impl Row {
    fn ratio(&self) -> Option<f64> {
        match (&self.measured, &self.baseline) {
            (Measured::Throughput { per_s, .. }, Some(Baseline { per_s: Some(b), .. }))
                if *b > 0.0 =>
            {
                Some(per_s / b)
            }
            (Measured::Latency(s), Some(b)) if !b.summary.median.is_zero() => {
                Some(s.median.as_secs_f64() / b.summary.median.as_secs_f64())
            }
            _ => None,
        }
    }
}

// ---------------------------------------------------------------------------
// The CLI client

/// The bench's end of the CLI socket. Every reply is acked the moment it is
/// read (the host holds a delivery until its ack, and retries after 10 s).
struct Client {
    conn: Conn,
    sent: u64,
    /// When the first reply to each platform message id arrived.
    replies: HashMap<String, Instant>,
}

/// What the bench sent: a CLI message (known by its client id until the
/// host accepts it) or a row written straight into `inbound.db` (known by
/// its platform message id).
enum Sent<'a> {
    Client(&'a str),
    Platform(&'a str),
}

/// One message seen through to the end.
struct Turn {
    /// The platform message id (`ServerMsg::Accepted::id`).
    id: String,
    reply_at: Option<Instant>,
}

impl Client {
    async fn connect(socket: &Path) -> Result<Client> {
        let deadline = Instant::now() + WAIT;
        loop {
            match Conn::connect(socket).await {
                Ok(conn) => {
                    return Ok(Client {
                        conn,
                        sent: 0,
                        replies: HashMap::new(),
                    })
                }
                Err(e) if Instant::now() >= deadline => {
                    return Err(e).with_context(|| format!("connecting to {}", socket.display()))
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    }

    /// Sends a chat message; returns its client id.
    async fn send(&mut self, text: &str) -> Result<String> {
        self.sent += 1;
        let cid = format!("bench-{}", self.sent);
        self.conn
            .send(&ClientMsg::Message {
                text: text.to_owned(),
                client_id: Some(cid.clone()),
                key: None,
            })
            .await
            .context("sending a message to the host")?;
        Ok(cid)
    }

    /// The next line from the host, with the instant it was read.
    async fn next(&mut self, deadline: tokio::time::Instant) -> Result<(ServerMsg, Instant)> {
        let m = tokio::time::timeout_at(deadline, self.conn.recv())
            .await
            .map_err(|_| anyhow!("no word from the host within {} s", WAIT.as_secs()))?
            .context("reading from the host")?;
        let at = Instant::now();
        let m = m.context("the host closed the CLI connection")?;
        if let ServerMsg::Message {
            id, in_reply_to, ..
        } = &m
        {
            self.conn
                .send(&ClientMsg::Ack { id: id.clone() })
                .await
                .context("acking a reply")?;
            if let Some(r) = in_reply_to {
                self.replies.entry(r.clone()).or_insert(at);
            }
        }
        Ok((m, at))
    }

    /// Reads until the host reports `sent` settled (answered and delivered).
    async fn await_turn(&mut self, sent: Sent<'_>) -> Result<Turn> {
        let deadline = tokio::time::Instant::now() + WAIT;
        let mut id = match sent {
            Sent::Platform(p) => Some(p.to_owned()),
            Sent::Client(_) => None,
        };
        let ours =
            |c: &Option<String>| matches!(sent, Sent::Client(cid) if c.as_deref() == Some(cid));
        loop {
            match self.next(deadline).await?.0 {
                ServerMsg::Accepted {
                    client_id,
                    id: pid,
                    routed,
                    note,
                } if ours(&client_id) => {
                    if routed == 0 {
                        bail!(
                            "the host routed the message to no agent: {}",
                            note.unwrap_or_default()
                        );
                    }
                    id = Some(pid);
                }
                ServerMsg::Rejected { client_id, error } if ours(&client_id) => {
                    bail!("the host rejected the message: {error}")
                }
                ServerMsg::Settled { ids, .. } => {
                    if let Some(id) = id.as_ref().filter(|id| ids.contains(id)) {
                        return Ok(Turn {
                            id: id.clone(),
                            reply_at: self.replies.remove(id),
                        });
                    }
                }
                ServerMsg::Superseded => bail!("another client took over the CLI conversation"),
                _ => {}
            }
        }
    }
}

// ---------------------------------------------------------------------------
// A host with a warm session

struct WarmHost {
    handle: HostHandle,
    client: Client,
    session: SessionInfo,
}

impl WarmHost {
    /// Starts a host in `dir` and answers one message, which creates the
    /// session and leaves its runner alive.
    async fn start(b: &Bench, dir: &Path, kind: Kind) -> Result<WarmHost> {
        Self::start_with(b.host_config(dir, kind)).await
    }

    async fn start_with(cfg: HostConfig) -> Result<WarmHost> {
        let handle = pinch_host::start(cfg).await.context("starting the host")?;
        match Self::warm(&handle).await {
            Ok((client, session)) => Ok(WarmHost {
                handle,
                client,
                session,
            }),
            Err(e) => {
                let _ = handle.shutdown().await;
                Err(e)
            }
        }
    }

    async fn warm(handle: &HostHandle) -> Result<(Client, SessionInfo)> {
        let mut client = Client::connect(&handle.cli_socket).await?;
        let cid = client.send("warm up").await?;
        client
            .await_turn(Sent::Client(&cid))
            .await
            .context("warming the session up")?;
        let session = handle
            .sessions()
            .await
            .into_iter()
            .next()
            .context("the warm-up message created no session")?;
        Ok((client, session))
    }

    async fn info(&self) -> Result<SessionInfo> {
        let id = &self.session.id;
        self.handle
            .sessions()
            .await
            .into_iter()
            .find(|s| s.id == *id)
            .with_context(|| format!("session {id} is gone"))
    }

    /// Stops the session's runner and waits until the host has seen it exit.
    async fn stop_runner(&self) -> Result<()> {
        self.handle.stop_runner(&self.session.id).await;
        let deadline = Instant::now() + WAIT;
        while self.info().await?.runner_id.is_some() {
            if Instant::now() >= deadline {
                bail!("the runner did not stop within {} s", WAIT.as_secs());
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        Ok(())
    }

    async fn shutdown(self) -> Result<()> {
        drop(self.client);
        self.handle
            .shutdown()
            .await
            .context("shutting the host down")
    }
}

/// Runs `f` against a warm host in a fresh data dir, shutting the host down
/// whatever `f` returns.
async fn with_warm_host<T>(
    b: &Bench,
    tag: &str,
    kind: Kind,
    f: impl AsyncFnOnce(&mut WarmHost) -> Result<T>,
) -> Result<T> {
    let dir = b.temp_dir(tag)?;
    let mut host = WarmHost::start(b, dir.path(), kind).await?;
    let res = f(&mut host).await;
    let down = host.shutdown().await;
    let v = res?;
    down?;
    Ok(v)
}

// ---------------------------------------------------------------------------
// Seeing a runner's claim

/// Sees rows appear in a session's `processing_ack` (a runner's claim): a
/// check on a fresh read-only connection whenever inotify reports a commit
/// in `out/`, and at least every [`RECHECK`].
///
/// The watcher must not slow what it measures. A reader's shared lock taken
/// while the runner commits makes the runner's commit wait on SQLite's busy
/// handler, which sleeps 1, 2, 5… ms (measured: a plain 2 ms polling reader
/// added ~2.5 ms to P1's median). So a check is skipped while
/// `outbound.db-journal` exists (with `journal_mode=DELETE` the runner is
/// then inside a write transaction), and only removals count as commit
/// events (the journal's unlink is the commit point). The journal is probed
/// with `stat`, never opened: opening and closing a database file in this
/// process would drop the POSIX locks of the host's own connections to it.
struct ClaimWatch {
    db: PathBuf,
    journal: PathBuf,
    events: mpsc::Receiver<notify::Result<notify::Event>>,
    _watcher: notify::RecommendedWatcher,
}

impl ClaimWatch {
    fn new(dir: &SessionDir) -> Result<ClaimWatch> {
        use notify::Watcher;
        let (tx, events) = mpsc::channel();
        let mut w = notify::recommended_watcher(tx).context("starting an inotify watcher")?;
        w.watch(&dir.out_dir(), notify::RecursiveMode::NonRecursive)
            .with_context(|| format!("watching {}", dir.out_dir().display()))?;
        let db = dir.outbound_db();
        let journal = db.with_file_name(format!("{}-journal", pinch_proto::layout::OUTBOUND_DB));
        Ok(ClaimWatch {
            db,
            journal,
            events,
            _watcher: w,
        })
    }

    fn drain(&self) {
        while self.events.try_recv().is_ok() {}
    }

    /// Blocks until `found` returns a value; returns it with the instant it
    /// was first seen.
    fn wait<T>(
        &self,
        mut found: impl FnMut(&Connection) -> Result<Option<T>>,
    ) -> Result<(Instant, T)> {
        let deadline = Instant::now() + WAIT;
        loop {
            if !self.journal.exists() {
                let conn = open_reader(&self.db, BUSY)?;
                if let Some(v) = found(&conn)? {
                    return Ok((Instant::now(), v));
                }
            }
            if Instant::now() >= deadline {
                bail!(
                    "no claim appeared in {} within {} s",
                    self.db.display(),
                    WAIT.as_secs()
                );
            }
            self.next_commit();
        }
    }

    /// Waits for a commit event in `out/`, at most [`RECHECK`].
    fn next_commit(&self) {
        let until = Instant::now() + RECHECK;
        while let Ok(ev) = self
            .events
            .recv_timeout(until.saturating_duration_since(Instant::now()))
        {
            if ev.is_ok_and(|e| matches!(e.kind, notify::EventKind::Remove(_))) {
                return;
            }
        }
    }
}

fn ack_exists(conn: &Connection, id: &str) -> Result<Option<()>> {
    Ok(outbound::has_ack(conn, id)?.then_some(()))
}

fn ack_ids(conn: &Connection) -> Result<HashSet<String>> {
    Ok(rows::acks(conn)?
        .into_iter()
        .map(|a| a.message_id)
        .collect())
}

// ---------------------------------------------------------------------------
// Inbound rows written by the bench (as the host's router writes them)

fn chat_row(pmid: &str, text: &str) -> NewInbound {
    NewInbound {
        id: format!("{pmid}:main"),
        kind: "chat".into(),
        timestamp: pinch_proto::time::now(),
        trigger: true,
        platform_id: Some(pinch_channels::cli_socket::PLATFORM_ID.into()),
        channel_type: Some(pinch_channels::cli_socket::CHANNEL_TYPE.into()),
        content: InContent::Chat(ChatIn {
            text: text.to_owned(),
            sender: Some("bench".into()),
            sender_id: Some("cli:bench".into()),
            is_mention: true,
            platform_message_id: Some(pmid.to_owned()),
            ..Default::default()
        })
        .to_json(),
        ..Default::default()
    }
}

/// Commits one row into `inbound_db` in its own transaction; returns the
/// instant right after the commit.
fn commit_row(inbound_db: &Path, row: &NewInbound, out_max: i64) -> Result<Instant> {
    let mut conn = open_writer(inbound_db, BUSY)?;
    let tx = write_tx(&mut conn)?;
    rows::insert_inbound(&tx, row, out_max)?
        .with_context(|| format!("row {} already exists", row.id))?;
    tx.commit()
        .with_context(|| format!("committing to {}", inbound_db.display()))?;
    Ok(Instant::now())
}

// ---------------------------------------------------------------------------
// P1 and P2

impl Bench {
    /// P1 and P2 on one warm host (P2's baseline is P1, so P1 is measured
    /// whenever P2 is, and listed only when asked for).
    async fn p1_p2(&self, kind: Kind, show_p1: bool, want_p2: bool) -> Result<Vec<Row>> {
        let n = self.n(50);
        eprintln!(
            "pinch bench: P1{} with {} ({n} iterations)…",
            if want_p2 { "+P2" } else { "" },
            kind.as_str()
        );
        let (p1, p2) = with_warm_host(self, "p1", kind, async |h: &mut WarmHost| {
            let p1 = Summary::of(p1_samples(h, n).await?);
            let p2 = if want_p2 {
                Some(Summary::of(p2_samples(h, n).await?))
            } else {
                None
            };
            Ok((p1, p2))
        })
        .await?;
        let base = Summary::of(p1_baseline(self, n)?);
        let mut rows = Vec::new();
        if show_p1 {
            rows.push(Row {
                fig: Fig::P1,
                sandbox: kind,
                measured: Measured::Latency(p1),
                baseline: Some(Baseline {
                    what: "commit + fresh read".into(),
                    summary: base,
                    per_s: None,
                }),
                notes: vec![],
            });
        }
        if let Some(p2) = p2 {
            rows.push(Row {
                fig: Fig::P2,
                sandbox: kind,
                measured: Measured::Latency(p2),
                baseline: Some(Baseline {
                    what: "P1".into(),
                    summary: p1,
                    per_s: None,
                }),
                notes: vec![],
            });
        }
        Ok(rows)
    }
}

/// P1: rows committed straight into the warm session's `inbound.db`.
async fn p1_samples(h: &mut WarmHost, n: usize) -> Result<Vec<Duration>> {
    let dir = SessionDir(h.session.dir.clone());
    let watch = ClaimWatch::new(&dir)?;
    let tag = random_hex(4);
    let mut samples = Vec::with_capacity(n);
    for i in 0..n {
        tokio::time::sleep(GAP).await;
        let pmid = format!("bench-{tag}-{i}");
        let row = chat_row(&pmid, &format!("p1 {i}"));
        let out_max = pinch_proto::seq::other_max(&dir.outbound_db(), "messages_out");
        watch.drain();
        let t0 = commit_row(&dir.inbound_db(), &row, out_max)?;
        let (t1, ()) = watch.wait(|c| ack_exists(c, &row.id))?;
        samples.push(t1 - t0);
        h.client
            .await_turn(Sent::Platform(&pmid))
            .await
            .with_context(|| format!("waiting for {} to be answered", row.id))?;
    }
    Ok(samples)
}

/// P1's baseline: one commit of such a row plus a fresh-connection read of
/// it, on a file of its own.
fn p1_baseline(b: &Bench, n: usize) -> Result<Vec<Duration>> {
    let dir = b.temp_dir("p1-baseline")?;
    let db = dir.path().join(pinch_proto::layout::INBOUND_DB);
    pinch_proto::schema::migrate_inbound(&open_writer(&db, BUSY)?)?;
    let mut samples = Vec::with_capacity(n);
    for i in 0..n {
        let row = chat_row(&format!("base-{i}"), "baseline");
        let t0 = Instant::now();
        commit_row(&db, &row, 0)?;
        let found = rows::inbound_by_ids(&open_reader(&db, BUSY)?, std::slice::from_ref(&row.id))?;
        samples.push(t0.elapsed());
        if found.len() != 1 {
            bail!("the baseline row {} was not read back", row.id);
        }
    }
    Ok(samples)
}

/// P2: messages through the CLI socket to the warm session.
async fn p2_samples(h: &mut WarmHost, n: usize) -> Result<Vec<Duration>> {
    let mut samples = Vec::with_capacity(n);
    for i in 0..n {
        tokio::time::sleep(GAP).await;
        let t0 = Instant::now();
        let cid = h.client.send(&format!("p2 {i}")).await?;
        let turn = h.client.await_turn(Sent::Client(&cid)).await?;
        let at = turn
            .reply_at
            .with_context(|| format!("{} settled without a reply", turn.id))?;
        samples.push(at - t0);
    }
    Ok(samples)
}

// ---------------------------------------------------------------------------
// TOOL

/// The model calls `shell echo` on every bench message, then answers with
/// the result.
const TOOL_SCRIPT: &str = r#"
[[rule]]
contains = "bench-tool"
tool = "shell"
args = { command = "echo pong" }

[[rule]]
after_tool = "shell"
reply = "{tool_result}"
"#;

impl Bench {
    async fn tool(&self, kind: Kind) -> Result<Row> {
        let n = self.n(50);
        eprintln!("pinch bench: TOOL with {} ({n} iterations)…", kind.as_str());
        let dir = self.temp_dir("tool")?;
        let mut cfg = self.host_config(dir.path(), kind);
        cfg.provider.script = Some(TOOL_SCRIPT.into());
        let mut h = WarmHost::start_with(cfg).await?;
        let res = async {
            let plain = p2_samples(&mut h, n).await?;
            let mut samples = Vec::with_capacity(n);
            for i in 0..n {
                tokio::time::sleep(GAP).await;
                let t0 = Instant::now();
                let cid = h.client.send(&format!("bench-tool {i}")).await?;
                let turn = h.client.await_turn(Sent::Client(&cid)).await?;
                let at = turn
                    .reply_at
                    .with_context(|| format!("{} settled without a reply", turn.id))?;
                samples.push(at - t0);
            }
            Ok::<_, anyhow::Error>((samples, plain))
        }
        .await;
        let down = h.shutdown().await;
        let (samples, plain) = res?;
        down?;
        Ok(Row {
            fig: Fig::Tool,
            sandbox: kind,
            measured: Measured::Latency(Summary::of(samples)),
            baseline: Some(Baseline {
                what: "P2".into(),
                summary: Summary::of(plain),
                per_s: None,
            }),
            notes: vec![],
        })
    }
}

// ---------------------------------------------------------------------------
// P3

impl Bench {
    async fn p3(&self, kind: Kind) -> Result<Row> {
        let n = self.n(20);
        eprintln!("pinch bench: P3 with {} ({n} iterations)…", kind.as_str());
        let samples = with_warm_host(self, "p3", kind, async |h: &mut WarmHost| {
            p3_samples(h, n).await
        })
        .await?;
        let (what, base) = spawn_baseline(kind, n)?;
        Ok(Row {
            fig: Fig::P3,
            sandbox: kind,
            measured: Measured::Latency(Summary::of(samples)),
            baseline: Some(Baseline {
                what: what.into(),
                summary: Summary::of(base),
                per_s: None,
            }),
            notes: vec![],
        })
    }
}

async fn p3_samples(h: &mut WarmHost, n: usize) -> Result<Vec<Duration>> {
    let dir = SessionDir(h.session.dir.clone());
    let watch = ClaimWatch::new(&dir)?;
    let mut samples = Vec::with_capacity(n);
    for i in 0..n {
        h.stop_runner().await?;
        tokio::time::sleep(GAP).await;
        // The message's row id is only known from the host's `accepted`
        // line, which is read after the claim: watch for any new claim.
        let before = ack_ids(&open_reader(&dir.outbound_db(), BUSY)?)?;
        watch.drain();
        let t0 = Instant::now();
        let cid = h.client.send(&format!("p3 {i}")).await?;
        let (t1, claimed) =
            watch.wait(|c| Ok(ack_ids(c)?.into_iter().find(|id| !before.contains(id))))?;
        let turn = h.client.await_turn(Sent::Client(&cid)).await?;
        let expected = format!("{}:main", turn.id);
        if claimed != expected {
            bail!("the new runner's first claim was {claimed}, not the message sent ({expected})");
        }
        samples.push(t1 - t0);
    }
    Ok(samples)
}

// ---------------------------------------------------------------------------
// P9

impl Bench {
    async fn p9(&self, kind: Kind) -> Result<Row> {
        let n = self.n(20);
        eprintln!("pinch bench: P9 with {} ({n} iterations)…", kind.as_str());
        let dir = self.temp_dir("p9")?;
        let mut cfg = self.host_config(dir.path(), kind);
        // Every turn takes a while, so the kill lands mid-turn; the killed
        // message is retried at once (no backoff) and no budget applies, so
        // what is measured is noticing the exit and starting a replacement.
        cfg.provider.script =
            Some("[[rule]]\ncontains = \"p9\"\nreply = \"ok\"\ndelay_ms = 400\n".into());
        cfg.retry_base = Duration::ZERO;
        cfg.budget.budget = usize::MAX / 2;
        cfg.budget.delays = vec![Duration::ZERO];
        let mut h = WarmHost::start_with(cfg).await?;
        let res = p9_samples(&mut h, n).await;
        let down = h.shutdown().await;
        let samples = res?;
        down?;
        Ok(Row {
            fig: Fig::P9,
            sandbox: kind,
            measured: Measured::Latency(Summary::of(samples)),
            baseline: None,
            notes: vec![
                "compare with P3 (a cold start without the crash) in the same table".into(),
            ],
        })
    }
}

async fn p9_samples(h: &mut WarmHost, n: usize) -> Result<Vec<Duration>> {
    let dir = SessionDir(h.session.dir.clone());
    let watch = ClaimWatch::new(&dir)?;
    let mut samples = Vec::with_capacity(n);
    for i in 0..n {
        let before = ack_ids(&open_reader(&dir.outbound_db(), BUSY)?)?;
        watch.drain();
        let cid = h.client.send(&format!("p9 {i}")).await?;
        let (_, id) =
            watch.wait(|c| Ok(ack_ids(c)?.into_iter().find(|id| !before.contains(id))))?;
        let old = runner_of_claim(&dir, &id)?.context("the claim vanished")?;
        let pid = h
            .info()
            .await?
            .runner_pid
            .context("no live runner to kill")?;
        watch.drain();
        let t0 = Instant::now();
        // SAFETY: kill(2) of the runner (or its bwrap) the host reports live.
        unsafe {
            libc::kill(pid as i32, libc::SIGKILL);
        }
        let (t1, ()) = watch.wait(|c| {
            let r: Option<String> = outbound::ack_runner(c, &id)?;
            Ok(r.filter(|r| *r != old).map(|_| ()))
        })?;
        samples.push(t1 - t0);
        h.client.await_turn(Sent::Client(&cid)).await?;
        tokio::time::sleep(GAP).await;
    }
    Ok(samples)
}

fn runner_of_claim(dir: &SessionDir, id: &str) -> Result<Option<String>> {
    let c = open_reader(&dir.outbound_db(), BUSY)?;
    Ok(outbound::ack_runner(&c, id)?)
}

/// P3's baseline: spawning and reaping the bare sandbox around `/bin/true`.
#[allow(clippy::disallowed_methods)] // bench measures bare bwrap/docker/process starts and runs the pinch binary it benchmarks
fn spawn_baseline(kind: Kind, n: usize) -> Result<(&'static str, Vec<Duration>)> {
    let (what, mut cmd) = match kind {
        Kind::Bwrap => {
            let bwrap = sandbox::find_bwrap().context("bwrap is not on PATH")?;
            let mut c = Command::new(bwrap);
            c.args([
                "--unshare-user",
                "--unshare-pid",
                "--unshare-net",
                "--die-with-parent",
                "--cap-drop",
                "ALL",
                "--ro-bind",
                "/usr",
                "/usr",
                "--symlink",
                "usr/lib",
                "/lib",
                "--symlink",
                "usr/lib64",
                "/lib64",
                "--symlink",
                "usr/bin",
                "/bin",
                "--proc",
                "/proc",
                "--dev",
                "/dev",
                "/bin/true",
            ]);
            ("bare bwrap … /bin/true", c)
        }
        Kind::Process => ("bare /bin/true", Command::new("/bin/true")),
        Kind::Docker => {
            // The same image the host runs runners in (built if missing).
            let docker = pinch_host::docker::find_docker().context("docker is not on PATH")?;
            let tmp = tempfile::tempdir()?;
            let mut d = pinch_host::docker::Docker::new(docker.clone(), sandbox::Limits::default());
            let exe = std::env::current_exe()?;
            d.prepare_image(&exe, tmp.path(), tmp.path())
                .map_err(|e| anyhow!(e))?;
            let mut c = Command::new(docker);
            c.args([
                "run",
                "--rm",
                "--network",
                "none",
                "--mount",
                "type=bind,source=/usr,target=/usr,readonly",
                &d.image,
                "/bin/true",
            ]);
            // The docker client needs its environment (HOME, DOCKER_HOST).
            let mut samples = Vec::with_capacity(n);
            c.stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            for _ in 0..n {
                let t0 = Instant::now();
                let st = c.status().context("running docker run")?;
                samples.push(t0.elapsed());
                if !st.success() {
                    bail!("bare docker run failed ({st})");
                }
            }
            return Ok(("bare `docker run --network none … /bin/true`", samples));
        }
    };
    cmd.env_clear()
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let t0 = Instant::now();
        let st = cmd.status().with_context(|| format!("running {what}"))?;
        samples.push(t0.elapsed());
        if !st.success() {
            bail!("{what} failed ({st})");
        }
    }
    Ok((what, samples))
}

// ---------------------------------------------------------------------------
// P4

/// Conversations (and so sessions) P4 spreads its messages over.
const P4_SESSIONS: usize = 100;
/// Messages P4 routes by default (after one warm-up message per session).
const P4_MESSAGES: usize = 10_000;
/// Messages in flight per session in P4's saturated round.
const P4_IN_FLIGHT: usize = 10;

impl Bench {
    async fn p4(&self, kind: Kind) -> Result<Row> {
        use pinch_channels::fake::FakeChannel;
        use pinch_channels::{AckOutcome, Capabilities, InboundEvent};
        use std::sync::{Arc, OnceLock};
        let n = self.n(P4_MESSAGES).max(P4_SESSIONS);
        eprintln!("pinch bench: P4 ({n} messages over {P4_SESSIONS} sessions)…");
        let dir = self.temp_dir("p4")?;
        let data = dir.path().join("data");
        std::fs::create_dir_all(&data).with_context(|| format!("creating {}", data.display()))?;
        {
            let mut c = Central::open(&DataDir::new(&data).central_db())?;
            c.bootstrap("bench")?;
            c.seed_bench_rooms(P4_SESSIONS)?;
        }
        let mut cfg = self.host_config(&data, kind);
        cfg.max_concurrent_runners = 0;
        cfg.boot_breaker = false;
        let cell: Arc<OnceLock<Arc<FakeChannel>>> = Arc::default();
        let c2 = cell.clone();
        cfg.extra_channels.push(Arc::new(move |tx| {
            let ch = FakeChannel::new(
                "bench",
                Capabilities {
                    buttons: true,
                    max_text: 4096,
                    ..Default::default()
                },
                tx,
            );
            c2.set(ch.clone()).ok();
            ch
        }));
        let host = pinch_host::start(cfg).await?;
        let ch = cell
            .get()
            .context("the bench channel was not built")?
            .clone();
        let ev = |room: usize, k: usize| InboundEvent {
            channel_type: "bench".into(),
            platform_id: format!("room{room}"),
            message_id: format!("m{room}-{k}"),
            sender_id: format!("u{room}"),
            sender_name: Some(format!("user {room}")),
            text: format!("message {k} in room {room}"),
            is_mention: false,
            is_group: true,
            ..Default::default()
        };
        let check = |out: AckOutcome, what: &str| -> Result<()> {
            match out {
                AckOutcome::Stored { routed: 1, .. } => Ok(()),
                other => bail!("{what} was not routed to exactly one agent: {other:?}"),
            }
        };
        // Warm-up: one message per room creates its session (not timed).
        for room in 0..P4_SESSIONS {
            check(ch.send(ev(room, 0)).await, "a warm-up message")?;
        }
        let per_room = n / P4_SESSIONS;
        // Two loads: one message in flight per session (latency-bound), then
        // P4_IN_FLIGHT per session (a burst: the host saturated).
        let mut rates = Vec::new();
        for (round, in_flight) in [(1usize, 1usize), (2, P4_IN_FLIGHT)] {
            let t0 = Instant::now();
            let mut tasks = tokio::task::JoinSet::new();
            for room in 0..P4_SESSIONS {
                for lane in 0..in_flight {
                    let ch = ch.clone();
                    let evs: Vec<InboundEvent> = (0..per_room)
                        .filter(|k| k % in_flight == lane)
                        .map(|k| ev(room, round * per_room + k + 1))
                        .collect();
                    tasks.spawn(async move {
                        for e in evs {
                            match ch.send(e).await {
                                AckOutcome::Stored { routed: 1, .. } => {}
                                other => {
                                    return Err(anyhow!(
                                        "a message was not routed to exactly one agent: {other:?}"
                                    ))
                                }
                            }
                        }
                        Ok(())
                    });
                }
            }
            while let Some(r) = tasks.join_next().await {
                r.context("a sender task panicked")??;
            }
            rates.push((in_flight, t0.elapsed()));
        }
        let elapsed = rates[1].1;
        let routed = per_room * P4_SESSIONS;
        let sessions = host.sessions().await;
        host.shutdown().await?;
        // Every message is in its session's inbound.db, once.
        let mut stored = 0usize;
        for s in &sessions {
            let c = open_reader(&SessionDir(s.dir.clone()).inbound_db(), BUSY)?;
            stored += inbound::count_chat(&c)? as usize;
        }
        let expected = 2 * routed + P4_SESSIONS;
        if sessions.len() != P4_SESSIONS || stored != expected {
            bail!("expected {P4_SESSIONS} sessions holding {expected} messages, found {} sessions holding {stored}", sessions.len());
        }
        let per_s = routed as f64 / elapsed.as_secs_f64();
        // Baseline: the same number of single-row commits into 100 fresh
        // inbound.db files with the protocol's pragmas, connections kept open.
        let base_dir = self.temp_dir("p4-raw")?;
        let mut conns = Vec::with_capacity(P4_SESSIONS);
        for i in 0..P4_SESSIONS {
            let d = base_dir.path().join(format!("s{i}"));
            std::fs::create_dir_all(&d)?;
            let c = open_writer(&d.join("inbound.db"), BUSY)?;
            pinch_proto::schema::migrate_inbound(&c)?;
            conns.push(c);
        }
        let t0 = Instant::now();
        for k in 0..per_room {
            for (i, c) in conns.iter_mut().enumerate() {
                let tx = write_tx(c)?;
                let row = NewInbound {
                    id: format!("r{i}-{k}"),
                    kind: "chat".into(),
                    timestamp: pinch_proto::time::now(),
                    trigger: true,
                    content: format!(r#"{{"text":"message {k} in room {i}"}}"#),
                    ..Default::default()
                };
                rows::insert_inbound(&tx, &row, 0)?;
                tx.commit()?;
            }
        }
        let base = routed as f64 / t0.elapsed().as_secs_f64();
        Ok(Row {
            fig: Fig::P4,
            sandbox: kind,
            measured: Measured::Throughput { n: routed, per_s },
            baseline: Some(Baseline { what: "raw inserts".into(), summary: Summary::of(vec![Duration::ZERO]), per_s: Some(base) }),
            notes: vec![
                format!("{P4_IN_FLIGHT} messages in flight per session (figure): {routed} messages in {:.2} s", elapsed.as_secs_f64()),
                format!(
                    "1 message in flight per session: {:.0}/s ({routed} messages in {:.2} s)",
                    routed as f64 / rates[0].1.as_secs_f64(),
                    rates[0].1.as_secs_f64()
                ),
                format!("all {expected} messages (with one warm-up per session) found once in their sessions' inbound.db afterwards"),
            ],
        })
    }
}

// ---------------------------------------------------------------------------
// P6

impl Bench {
    #[allow(clippy::disallowed_methods)] // bench measures bare bwrap/docker/process starts and runs the pinch binary it benchmarks
    async fn p6(&self, kind: Kind) -> Result<Row> {
        eprintln!(
            "pinch bench: P6 (`pinch host --sandbox {}`, {P6_SESSIONS} idle sessions)…",
            kind.as_str()
        );
        let dir = self.temp_dir("p6")?;
        seed_idle_sessions(dir.path(), P6_SESSIONS)?;
        let config = dir.path().join("pinch.toml");
        // CLI + web chat (the web listener on a free loopback port).
        std::fs::write(&config, "[provider]\ndefault = \"scripted\"\n[http]\nlisten = \"127.0.0.1:0\"\n[web]\nenabled = true\n").with_context(|| format!("writing {}", config.display()))?;
        let log_path = dir.path().join("host.log");
        let log = std::fs::File::create(&log_path)
            .with_context(|| format!("creating {}", log_path.display()))?;
        let mut child = Command::new(&self.exe)
            .arg("--data-dir")
            .arg(dir.path())
            .arg("--config")
            .arg(&config)
            .args(["host", "--sandbox", kind.as_str()])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {} host", self.exe.display()))?;
        let socket = DataDir::new(dir.path()).cli_socket();
        let measured = async {
            let client = connect_to_child(&socket, &mut child, &log_path).await?;
            tokio::time::sleep(P6_IDLE).await;
            let mem = ProcMem::read(child.id())?;
            drop(client);
            Ok::<_, anyhow::Error>(mem)
        }
        .await;
        terminate(&mut child)?;
        let mem = measured?;
        let notes = vec![
            mem.detail(),
            "channels: CLI and web chat (listener on a loopback port, no browser connected)".into(),
        ];
        Ok(Row {
            fig: Fig::P6,
            sandbox: kind,
            measured: Measured::Memory(mem),
            baseline: None,
            notes,
        })
    }
}

/// A data dir with `n` sessions of agent `main` and no runner, as the host
/// would have left them.
fn seed_idle_sessions(dir: &Path, n: usize) -> Result<()> {
    let data = DataDir::new(dir);
    let mut central = Central::open(&data.central_db())?;
    central.bootstrap("bench")?;
    for i in 0..n {
        let id = format!("sbench{i:02}");
        pinch_host::session::create_folder(&data, "main", &id)?;
        let row = SessionRow {
            id,
            agent_group_id: "main".into(),
            messaging_group_id: Some("mg-cli-local".into()),
            thread_id: Some(format!("t{i}")),
            folder: "main".into(),
        };
        central.insert_session(&row, "scripted")?;
    }
    Ok(())
}

/// Connects to the daemon's CLI socket once it serves, failing early (with
/// its log) if it exits first.
async fn connect_to_child(socket: &Path, child: &mut Child, log: &Path) -> Result<Client> {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(st) = child.try_wait()? {
            bail!(
                "the host exited ({st}) before serving its socket; its log:\n{}",
                tail(log)
            );
        }
        if socket.exists() {
            if let Ok(conn) = Conn::connect(socket).await {
                return Ok(Client {
                    conn,
                    sent: 0,
                    replies: HashMap::new(),
                });
            }
        }
        if Instant::now() >= deadline {
            bail!(
                "the host did not serve {} within {} s; its log:\n{}",
                socket.display(),
                WAIT.as_secs(),
                tail(log)
            );
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// SIGTERM, then SIGKILL if the daemon has not exited after 15 s.
fn terminate(child: &mut Child) -> Result<()> {
    // SAFETY: kill(2) on our own child, not yet reaped.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if child.try_wait()?.is_some() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    eprintln!("pinch bench: the P6 host ignored SIGTERM for 15 s; killing it");
    child.kill()?;
    child.wait()?;
    Ok(())
}

fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

// ---------------------------------------------------------------------------
// P7

impl Bench {
    async fn p7(&self, kind: Kind) -> Result<Row> {
        eprintln!("pinch bench: P7 with {}…", kind.as_str());
        let (mem, mut notes) = with_warm_host(self, "p7", kind, async |h: &mut WarmHost| {
            tokio::time::sleep(P7_IDLE).await;
            let pid = h
                .info()
                .await?
                .runner_pid
                .context("the warm session has no runner")?;
            runner_mem(kind, pid)
        })
        .await?;
        notes.insert(0, mem.detail());
        Ok(Row {
            fig: Fig::P7,
            sandbox: kind,
            measured: Measured::Memory(mem),
            baseline: None,
            notes,
        })
    }
}

/// The runner's memory; for bwrap also what its supervisor processes use.
/// `pid` is what the host spawned (the runner itself, or the outer bwrap).
fn runner_mem(kind: Kind, pid: u32) -> Result<(ProcMem, Vec<String>)> {
    match kind {
        Kind::Process => Ok((ProcMem::read(pid)?, vec![])),
        Kind::Docker => bail!("the runner's memory is measured for bwrap and process only (a container's processes are not children of the host)"),
        Kind::Bwrap => {
            let tree = descendants(pid);
            let runner = *tree
                .iter()
                .find(|p| comm(**p).as_deref() == Some("pinch"))
                .with_context(|| format!("no `pinch` process under bwrap (pid {pid})"))?;
            let helpers: Vec<u32> = std::iter::once(pid).chain(tree).filter(|p| *p != runner).collect();
            let helper_kb: u64 = helpers.iter().filter_map(|p| ProcMem::read(*p).ok()).map(|m| m.rss_kb).sum();
            let note = format!("plus {} bwrap supervisor process(es): {} RSS", helpers.len(), mib(helper_kb));
            Ok((ProcMem::read(runner)?, vec![note]))
        }
    }
}

// ---------------------------------------------------------------------------
// /proc

/// Memory figures of a process from `/proc/<pid>/status`, in kB.
#[derive(Clone, Copy, Debug, Default)]
struct ProcMem {
    rss_kb: u64,
    hwm_kb: u64,
    anon_kb: u64,
    file_kb: u64,
    threads: u64,
}

impl ProcMem {
    fn read(pid: u32) -> Result<ProcMem> {
        let path = format!("/proc/{pid}/status");
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
        let mut m = ProcMem::default();
        for line in text.lines() {
            let Some((key, value)) = line.split_once(':') else {
                continue;
            };
            let number = || {
                value
                    .split_whitespace()
                    .next()
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0)
            };
            match key {
                "VmRSS" => m.rss_kb = number(),
                "VmHWM" => m.hwm_kb = number(),
                "RssAnon" => m.anon_kb = number(),
                "RssFile" => m.file_kb = number(),
                "Threads" => m.threads = number(),
                _ => {}
            }
        }
        if m.rss_kb == 0 {
            bail!("{path} has no VmRSS (is the process a zombie?)");
        }
        Ok(m)
    }

    fn detail(&self) -> String {
        format!(
            "VmHWM {}; RssAnon {}, RssFile {}; {} threads",
            mib(self.hwm_kb),
            mib(self.anon_kb),
            mib(self.file_kb),
            self.threads
        )
    }
}

fn mib(kb: u64) -> String {
    format!("{:.2} MiB", kb as f64 / 1024.0)
}

pub(crate) fn comm(pid: u32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .ok()
        .map(|s| s.trim().to_owned())
}

fn parent(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) state ppid …": comm may hold spaces and parentheses.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// Every process below `root`, breadth first.
pub(crate) fn descendants(root: u32) -> Vec<u32> {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if let Some(ppid) = parent(pid) {
            children.entry(ppid).or_default().push(pid);
        }
    }
    let mut out = Vec::new();
    let mut queue = VecDeque::from([root]);
    while let Some(p) = queue.pop_front() {
        for &c in children.get(&p).into_iter().flatten() {
            out.push(c);
            queue.push_back(c);
        }
    }
    out
}

// ---------------------------------------------------------------------------
// The report

struct Machine {
    when: String,
    kernel: String,
    cpus: usize,
    cpu_model: String,
    build: &'static str,
    sandboxes: Vec<&'static str>,
}

impl Machine {
    fn describe(sandboxes: &[Kind]) -> Machine {
        let cpu_model = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|s| {
                s.lines().find_map(|l| {
                    l.strip_prefix("model name")
                        .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
                })
            })
            .unwrap_or_else(|| "unknown CPU".into());
        Machine {
            when: jiff::Timestamp::now()
                .strftime("%Y-%m-%d %H:%M UTC")
                .to_string(),
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .map(|s| s.trim().to_owned())
                .unwrap_or_default(),
            cpus: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(0),
            cpu_model,
            build: if cfg!(debug_assertions) {
                "debug"
            } else {
                "release"
            },
            sandboxes: sandboxes.iter().map(|k| k.as_str()).collect(),
        }
    }
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1e3)
}

fn print_table(m: &Machine, rows: &[Row]) {
    println!(
        "pinch bench · {} · pinch {} ({} build) · Linux {} · {} CPUs ({}) · scripted provider",
        m.when,
        env!("CARGO_PKG_VERSION"),
        m.build,
        m.kernel,
        m.cpus,
        m.cpu_model
    );
    if m.build == "debug" {
        println!(
            "note: a debug build; quote numbers from a release build (`cargo build --release`)"
        );
    }
    println!();
    let header = [
        "fig",
        "sandbox",
        "measures",
        "n",
        "median",
        "p95",
        "baseline",
        "baseline median",
        "baseline p95",
        "ratio",
        "target",
    ];
    let mut cells: Vec<Vec<String>> = vec![header.iter().map(|s| s.to_string()).collect()];
    for r in rows {
        let (n, median, p95) = match &r.measured {
            Measured::Latency(s) => (s.n.to_string(), ms(s.median), ms(s.p95)),
            Measured::Memory(mem) => ("1".into(), mib(mem.rss_kb), "—".into()),
            Measured::Throughput { n, per_s } => {
                (n.to_string(), format!("{per_s:.0}/s"), "—".into())
            }
        };
        let (bw, bm, bp) = match &r.baseline {
            Some(Baseline {
                what,
                per_s: Some(b),
                ..
            }) => (what.clone(), format!("{b:.0}/s"), "—".into()),
            Some(b) => (b.what.clone(), ms(b.summary.median), ms(b.summary.p95)),
            None => ("—".into(), "—".into(), "—".into()),
        };
        let ratio = r.ratio().map_or_else(|| "—".into(), |x| format!("{x:.2}×"));
        cells.push(vec![
            r.fig.id().into(),
            r.sandbox.as_str().into(),
            r.fig.label().into(),
            n,
            median,
            p95,
            bw,
            bm,
            bp,
            ratio,
            r.fig.target(r.sandbox).into(),
        ]);
    }
    let widths: Vec<usize> = (0..header.len())
        .map(|c| {
            cells
                .iter()
                .map(|row| row[c].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    // Numbers right-aligned, text left-aligned.
    let right = |c: usize| matches!(c, 3 | 4 | 5 | 7 | 8 | 9);
    let mut out = std::io::stdout().lock();
    for row in &cells {
        let line: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(c, s)| {
                let pad = " ".repeat(widths[c] - s.chars().count());
                if right(c) {
                    format!("{pad}{s}")
                } else {
                    format!("{s}{pad}")
                }
            })
            .collect();
        let _ = writeln!(out, "{}", line.join("  ").trim_end());
    }
    let _ = writeln!(out);
    let mut seen = HashSet::new();
    for r in rows {
        if seen.insert(r.fig) {
            let _ = writeln!(out, "{}  {}", r.fig.id(), r.fig.measures());
            if let Some(b) = &r.baseline {
                let _ = writeln!(out, "    baseline: {}", baseline_meaning(r.fig, &b.what));
            }
        }
        for note in &r.notes {
            let _ = writeln!(out, "    {} ({}): {note}", r.fig.id(), r.sandbox.as_str());
        }
    }
    let _ = writeln!(out, "Latencies: median = p50 and p95 by nearest rank over n runs; ratio = median / baseline median.");
    let _ = writeln!(
        out,
        "Throughput (P4): messages per second in the median column; ratio = rate / baseline rate."
    );
}

fn baseline_meaning(fig: Fig, what: &str) -> String {
    match fig {
        Fig::P1 => "one SQLite commit of such a row into an inbound.db of its own, plus a fresh read-only connection reading it back".into(),
        Fig::P2 => "P1 on the same host (the claim is the part of a reply the runner loop owns)".into(),
        Fig::P3 => format!("{what}: spawning and reaping the bare sandbox, same flags as TARGETS.md"),
        Fig::P4 => "the same number of one-row commits (the messages_in insert alone) into 100 inbound.db files with the protocol's pragmas, connections kept open, one thread".into(),
        _ => what.into(),
    }
}

fn report_json(m: &Machine, rows: &[Row]) -> serde_json::Value {
    use serde_json::json;
    let summary = |s: &Summary| json!({"n": s.n, "median_ms": s.median.as_secs_f64() * 1e3, "p95_ms": s.p95.as_secs_f64() * 1e3});
    let figures: Vec<serde_json::Value> = rows
        .iter()
        .map(|r| {
            let mut v = json!({
                "figure": r.fig.id(),
                "sandbox": r.sandbox.as_str(),
                "measures": r.fig.measures(),
                "target": r.fig.target(r.sandbox),
                "notes": r.notes,
            });
            match &r.measured {
                Measured::Latency(s) => v["latency"] = summary(s),
                Measured::Throughput { n, per_s } => {
                    v["throughput"] = json!({"n": n, "per_second": per_s})
                }
                Measured::Memory(mem) => {
                    v["memory"] = json!({
                        "rss_mib": mem.rss_kb as f64 / 1024.0,
                        "hwm_mib": mem.hwm_kb as f64 / 1024.0,
                        "rss_anon_mib": mem.anon_kb as f64 / 1024.0,
                        "rss_file_mib": mem.file_kb as f64 / 1024.0,
                        "threads": mem.threads,
                    })
                }
            }
            if let Some(Baseline {
                what,
                per_s: Some(b),
                ..
            }) = &r.baseline
            {
                v["baseline"] = json!({"per_second": b, "what": baseline_meaning(r.fig, what)});
            } else if let Some(b) = &r.baseline {
                let mut bv = summary(&b.summary);
                bv["what"] = json!(baseline_meaning(r.fig, &b.what));
                v["baseline"] = bv;
            }
            if let Some(x) = r.ratio() {
                v["ratio"] = json!(x);
            }
            v
        })
        .collect();
    json!({
        "machine": {
            "date": m.when,
            "pinch_version": env!("CARGO_PKG_VERSION"),
            "build": m.build,
            "kernel": m.kernel,
            "cpus": m.cpus,
            "cpu_model": m.cpu_model,
            "sandboxes": m.sandboxes,
            "provider": "scripted",
        },
        "figures": figures,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let ms = |v: &[u64]| {
            v.iter()
                .map(|x| Duration::from_millis(*x))
                .collect::<Vec<_>>()
        };
        let s = Summary::of(ms(&[5, 1, 4, 2, 3]));
        assert_eq!(
            (s.median, s.p95),
            (Duration::from_millis(3), Duration::from_millis(5))
        );
        let s = Summary::of(ms(&(1..=100).collect::<Vec<_>>()));
        assert_eq!(
            (s.median, s.p95),
            (Duration::from_millis(50), Duration::from_millis(95))
        );
        let s = Summary::of(ms(&[7]));
        assert_eq!(
            (s.median, s.p95),
            (Duration::from_millis(7), Duration::from_millis(7))
        );
    }

    #[test]
    fn parent_of_self_is_our_parent() {
        assert_eq!(
            parent(std::process::id()),
            Some(std::os::unix::process::parent_id())
        );
        assert!(descendants(std::os::unix::process::parent_id()).contains(&std::process::id()));
    }
}

// ---------------------------------------------------------------------------
// P10: the local model on this machine's CPU

/// `pinch bench p10`: load time, time to first token and generation speed
/// of the local model (SmolLM2-135M-Instruct Q4_1 by default), in-process,
/// greedy. Build with `--release`: a debug build measures the debug build.
#[derive(clap::Args)]
pub struct P10Args {
    /// The GGUF file (default: the configured local model, else $PINCH_HOME/models/).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Generations to measure (the median is reported).
    #[arg(long, default_value_t = 5)]
    iterations: usize,
    /// Tokens to generate per iteration.
    #[arg(long, default_value_t = 128)]
    tokens: u32,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Convert the Q4_1 weights to Q8_0 at load (candle's AVX2 Q8_0 kernels) instead of running them as stored.
    #[arg(long)]
    requantize: bool,
}

pub fn p10(default_model: PathBuf, args: P10Args) -> Result<i32> {
    let path = args.model.unwrap_or(default_model);
    if !path.is_file() {
        bail!(
            "no model at {}: run `pinch model fetch` first (or pass --model <file.gguf>)",
            path.display()
        );
    }
    let iterations = args.iterations.max(1);
    let mut opts = pinch_local::Options::new(&path);
    opts.max_tokens = args.tokens.max(2);
    opts.requantize = args.requantize;
    // Loads: the first is cold-ish (page cache may already hold the file), keep the median.
    let mut loads = Vec::new();
    let mut model = None;
    for _ in 0..3 {
        let m = pinch_local::Local::load(&opts).map_err(|e| anyhow!("{e}"))?;
        loads.push(m.load_time());
        model = Some(m);
    }
    let mut model = model.expect("loaded at least once");
    let req = pinch_providers::TurnRequest {
        system: "You are a helpful assistant.".into(),
        prompt: "Tell me a long story about a dragon who learns to bake bread, with many details."
            .into(),
        ..Default::default()
    };
    let prompt = model.render(&req).map_err(|e| anyhow!("{e}"))?;
    eprintln!(
        "pinch bench: P10 with {} ({iterations} iterations, up to {} tokens, {} threads)…",
        path.display(),
        opts.max_tokens,
        candle_threads()
    );
    let mut runs = Vec::new();
    for _ in 0..iterations {
        let (_, stats) = model
            .generate(&prompt, opts.max_tokens as usize, &mut |_| {})
            .map_err(|e| anyhow!("{e}"))?;
        runs.push(stats);
    }
    let med = |mut xs: Vec<f64>| -> f64 {
        xs.sort_by(|a, b| a.total_cmp(b));
        xs[xs.len() / 2]
    };
    let load_ms = med(loads.iter().map(|d| d.as_secs_f64() * 1e3).collect());
    let ttft_ms = med(runs
        .iter()
        .map(|s| s.first_token.as_secs_f64() * 1e3)
        .collect());
    let tps = med(runs.iter().map(|s| s.tokens_per_s()).collect());
    let new_tokens = med(runs.iter().map(|s| s.new_tokens as f64).collect());
    let debug = cfg!(debug_assertions);
    if args.json {
        let v = serde_json::json!({
            "figure": "P10", "model": path.display().to_string(), "threads": candle_threads(),
            "load_ms": load_ms, "prompt_tokens": prompt.len(), "first_token_ms": ttft_ms,
            "new_tokens": new_tokens, "tokens_per_s": tps, "target_tokens_per_s": 30, "debug_build": debug, "requantized_q8_0": opts.requantize,
        });
        println!("{v}");
    } else {
        println!(
            "P10  local model (greedy, CPU, {} threads, {}){}",
            candle_threads(),
            if opts.requantize {
                "Q4_1 → Q8_0 at load"
            } else {
                "Q4_1 as stored"
            },
            if debug {
                "  [DEBUG BUILD: use --release]"
            } else {
                ""
            }
        );
        println!("  model            {}", path.display());
        println!("  load             {load_ms:8.1} ms   (median of 3)");
        println!(
            "  first token      {ttft_ms:8.1} ms   ({} prompt tokens)",
            prompt.len()
        );
        println!("  generation       {tps:8.1} tok/s ({new_tokens:.0} tokens, median of {iterations})   target ≥ 30 tok/s");
    }
    Ok(0)
}

/// Threads candle's CPU kernels use (RAYON_NUM_THREADS, else all cores).
fn candle_threads() -> usize {
    std::env::var("RAYON_NUM_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        })
}
