//! Many sessions: P4 (routing throughput) and P6 (a host with idle
//! sessions), with the child-process helpers P6 uses.

use super::harness::Client;
use super::memory::ProcMem;
use super::*;

// ---------------------------------------------------------------------------
// P4

/// Conversations (and so sessions) P4 spreads its messages over.
const P4_SESSIONS: usize = 100;
/// Messages P4 routes by default (after one warm-up message per session).
const P4_MESSAGES: usize = 10_000;
/// Messages in flight per session in P4's saturated round.
const P4_IN_FLIGHT: usize = 10;

impl Bench {
    pub(super) async fn p4(&self, kind: Kind) -> Result<Row> {
        use super::channel::BenchChannel;
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
        let cell: Arc<OnceLock<Arc<BenchChannel>>> = Arc::default();
        let c2 = cell.clone();
        cfg.extra_channels.push(Arc::new(move |tx| {
            let ch = BenchChannel::new(
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
    pub(super) async fn p6(&self, kind: Kind) -> Result<Row> {
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
