//! `pinch bench`: the docs/targets.md figures, measured on this machine.
//!
//! Every figure runs against a real host (the code `pinch host` runs, or the
//! `pinch host` binary itself for P6) in a fresh temporary data dir, with the
//! scripted provider, and is printed beside a baseline measured in the same
//! run and the ratio between the two. Nothing here asserts a timing: the
//! machines are shared and noisy, so the bench measures and reports.
//!
//! Shape: [`run`] resolves the arguments into a plan (here); the measuring
//! tools (a CLI client that acks every reply, a warm host, a watcher of a
//! session's `out/` that sees a runner's claim) are in `harness`; one
//! function per figure in `latency` (P1/P2, TOOL, P3, P9), `load` (P4, P6;
//! P4's channel adapter in `channel`) and `memory` (P7, with the `/proc`
//! readers), `stream` (P12: streamed text through web chat and the CLI socket), `secrets` (P15: a
//! request with a secret injected); the report (table or JSON)
//! in `report`; the local model's P10 in `p10`.
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
mod channel;
mod harness;
mod latency;
mod load;
mod memory;
mod p10;
mod recall;
mod report;
mod secrets;
mod stream;
mod web;

use memory::ProcMem;
pub(crate) use memory::{comm, descendants};
pub use p10::{p10, P10Args};
use report::{print_table, report_json, Machine};

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

/// A docs/targets.md figure.
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
    /// The provider's first token → first text in web chat (issue 18).
    P12,
    /// The same in `pinch chat` (the CLI socket).
    P12Cli,
    /// `web_fetch` through the host against a direct curl (issue 17).
    P13,
    /// `search_memory` over 100,000 stored turns (issue 17).
    P14,
    /// An HTTPS request with a secret injected by the proxy (issue 19).
    P15,
}

impl Fig {
    const ALL: [Fig; 13] = [
        Fig::P1,
        Fig::P2,
        Fig::P3,
        Fig::P4,
        Fig::P6,
        Fig::P7,
        Fig::P9,
        Fig::Tool,
        Fig::P12,
        Fig::P12Cli,
        Fig::P13,
        Fig::P14,
        Fig::P15,
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
            Fig::P12 => "P12",
            Fig::P12Cli => "P12-CLI",
            Fig::P13 => "P13",
            Fig::P14 => "P14",
            Fig::P15 => "P15",
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
            Fig::P12 => "first token → text in web chat",
            Fig::P12Cli => "first token → text in pinch chat",
            Fig::P13 => "web_fetch through the host, 20 KB page",
            Fig::P14 => "search_memory over 100,000 turns",
            Fig::P15 => "HTTPS request, secret injected",
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
                        (t0 just before the kill; t1 when a claim by a new runner id appears; exit noticed from the child, not a sweep; \
                        includes the 500 ms floor every respawn waits, decision 0024)",
            Fig::Tool => "one tool round trip, warm session: message sent on the CLI → scripted model calls `shell` (`echo`) → \
                          sh runs in the sandbox → result → model → reply printed (t0 before the socket write; t1 when the reply line is read)",
            Fig::P12 => "a fake OpenAI-compatible model on loopback (reached through the session's credential proxy like a real one) writes its \
                         first token 50 ms after the request and the rest 150 ms later → the first `draft` frame a web chat WebSocket client \
                         reads (t0 when the model has written its first token; t1 when the frame is read); baseline: the model's own \
                         first-token time as a direct client sees it (request sent → first event read)",
            Fig::P12Cli => "as P12, the first `draft` line a `pinch chat` client reads on the CLI socket",
            Fig::P13 => "what the web_fetch tool does: POST /_pinch/web/fetch on a session's proxy socket → the host fetches a 20 KB HTML page \
                           from a loopback server (guard, resolver, HTML → Markdown; no cache) → JSON answer read whole; baseline: `curl` of \
                           the same page (a GET read whole when curl is missing) (t0 before connecting or starting curl; t1 at the end)",
            Fig::P14 => "one search_memory query (three words, those in over 5 % of turns left out: turns with all, then with any, ranked by bm25, best 5 with snippets) \
                            on the group's FTS5 index holding 100,000 turns of 8–47 made-up words with a skewed word frequency; baseline: \
                            a LIKE '%word%' scan of every turn in a plain table of the same texts (t0 before the query; t1 after the last row)",
            Fig::P15 => "one GET to a loopback HTTPS API through a session's credential proxy: CONNECT on the proxy socket (as the sandbox's \
                         forwarder sends it) → TLS to the proxy under the install's CA → the proxy finds the host's secret in the store, \
                         puts the token in, opens verified TLS to the API, relays the 200, audits the use (t0 before connecting; t1 when \
                         the answer is read whole); baseline: the same GET on a fresh TLS connection straight to the API, alternating",
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
            (Fig::P9, _) => "≤ 600 ms (100 + 500 floor)",
            (Fig::Tool, _) => "none (reported in issue 4; baseline P2)",
            (Fig::P12 | Fig::P12Cli, _) => "p95 ≤ 30 ms",
            (Fig::P13, _) => "≤ 1.5× a direct fetch",
            (Fig::P14, _) => "p95 ≤ 20 ms",
            (Fig::P15, _) => "≤ 2 ms added at the median",
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
            if want(Fig::P12) || want(Fig::P12Cli) {
                rows.extend(
                    self.p12(kind)
                        .await
                        .with_context(|| format!("P12 ({})", kind.as_str()))?
                        .into_iter()
                        .filter(|r| want(r.fig)),
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
        // The index is a file the runner reads: no host, no sandbox, once.
        if want(Fig::P14) {
            rows.push(self.recall().context("P14")?);
        }
        // The injection is the host's: its sandbox does not matter, once.
        if want(Fig::P15) {
            rows.push(self.secrets(sandboxes[0]).await.context("P15")?);
        }
        // The fetch is the host's: its sandbox does not matter, once.
        if want(Fig::P13) {
            rows.push(self.fetch(sandboxes[0]).await.context("P13")?);
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
}
