//! One warm session: P1 and P2 (reply latency), TOOL, P3 and P9, with the
//! spawn baselines they are compared to.

use super::harness::{
    ack_exists, ack_ids, chat_row, commit_row, with_warm_host, ClaimWatch, Sent, WarmHost,
};
use super::*;

// ---------------------------------------------------------------------------
// P1 and P2

impl Bench {
    /// P1 and P2 on one warm host (P2's baseline is P1, so P1 is measured
    /// whenever P2 is, and listed only when asked for).
    pub(super) async fn p1_p2(&self, kind: Kind, show_p1: bool, want_p2: bool) -> Result<Vec<Row>> {
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
    pub(super) async fn tool(&self, kind: Kind) -> Result<Row> {
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
    pub(super) async fn p3(&self, kind: Kind) -> Result<Row> {
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
    pub(super) async fn p9(&self, kind: Kind) -> Result<Row> {
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
