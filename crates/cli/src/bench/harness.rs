//! The measuring tools: a CLI client that acks every reply, a host with a
//! warm session, a watcher of a session's `out/` that sees a runner's claim,
//! and inbound rows written as the host's router writes them.

use super::*;

// ---------------------------------------------------------------------------
// The CLI client

/// The bench's end of the CLI socket. Every reply is acked the moment it is
/// read (the host holds a delivery until its ack, and retries after 10 s).
pub(super) struct Client {
    pub(super) conn: Conn,
    pub(super) sent: u64,
    /// When the first reply to each platform message id arrived.
    pub(super) replies: HashMap<String, Instant>,
}

/// What the bench sent: a CLI message (known by its client id until the
/// host accepts it) or a row written straight into `inbound.db` (known by
/// its platform message id).
pub(super) enum Sent<'a> {
    Client(&'a str),
    Platform(&'a str),
}

/// One message seen through to the end.
pub(super) struct Turn {
    /// The platform message id (`ServerMsg::Accepted::id`).
    pub(super) id: String,
    pub(super) reply_at: Option<Instant>,
}

impl Client {
    pub(super) async fn connect(socket: &Path) -> Result<Client> {
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
    pub(super) async fn send(&mut self, text: &str) -> Result<String> {
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
    pub(super) async fn next(
        &mut self,
        deadline: tokio::time::Instant,
    ) -> Result<(ServerMsg, Instant)> {
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
    pub(super) async fn await_turn(&mut self, sent: Sent<'_>) -> Result<Turn> {
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
                    ..
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

pub(super) struct WarmHost {
    pub(super) handle: HostHandle,
    pub(super) client: Client,
    pub(super) session: SessionInfo,
}

impl WarmHost {
    /// Starts a host in `dir` and answers one message, which creates the
    /// session and leaves its runner alive.
    pub(super) async fn start(b: &Bench, dir: &Path, kind: Kind) -> Result<WarmHost> {
        Self::start_with(b.host_config(dir, kind)).await
    }

    pub(super) async fn start_with(cfg: HostConfig) -> Result<WarmHost> {
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

    pub(super) async fn warm(handle: &HostHandle) -> Result<(Client, SessionInfo)> {
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

    pub(super) async fn info(&self) -> Result<SessionInfo> {
        let id = &self.session.id;
        self.handle
            .sessions()
            .await
            .into_iter()
            .find(|s| s.id == *id)
            .with_context(|| format!("session {id} is gone"))
    }

    /// Stops the session's runner and waits until the host has seen it exit.
    pub(super) async fn stop_runner(&self) -> Result<()> {
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

    pub(super) async fn shutdown(self) -> Result<()> {
        drop(self.client);
        self.handle
            .shutdown()
            .await
            .context("shutting the host down")
    }
}

/// Runs `f` against a warm host in a fresh data dir, shutting the host down
/// whatever `f` returns.
pub(super) async fn with_warm_host<T>(
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
pub(super) struct ClaimWatch {
    pub(super) db: PathBuf,
    pub(super) journal: PathBuf,
    pub(super) events: mpsc::Receiver<notify::Result<notify::Event>>,
    pub(super) _watcher: notify::RecommendedWatcher,
}

impl ClaimWatch {
    pub(super) fn new(dir: &SessionDir) -> Result<ClaimWatch> {
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

    pub(super) fn drain(&self) {
        while self.events.try_recv().is_ok() {}
    }

    /// Blocks until `found` returns a value; returns it with the instant it
    /// was first seen.
    pub(super) fn wait<T>(
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
    pub(super) fn next_commit(&self) {
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

pub(super) fn ack_exists(conn: &Connection, id: &str) -> Result<Option<()>> {
    Ok(outbound::has_ack(conn, id)?.then_some(()))
}

pub(super) fn ack_ids(conn: &Connection) -> Result<HashSet<String>> {
    Ok(rows::acks(conn)?
        .into_iter()
        .map(|a| a.message_id)
        .collect())
}

// ---------------------------------------------------------------------------
// Inbound rows written by the bench (as the host's router writes them)

pub(super) fn chat_row(pmid: &str, text: &str) -> NewInbound {
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
pub(super) fn commit_row(inbound_db: &Path, row: &NewInbound, out_max: i64) -> Result<Instant> {
    let mut conn = open_writer(inbound_db, BUSY)?;
    let tx = write_tx(&mut conn)?;
    rows::insert_inbound(&tx, row, out_max)?
        .with_context(|| format!("row {} already exists", row.id))?;
    tx.commit()
        .with_context(|| format!("committing to {}", inbound_db.display()))?;
    Ok(Instant::now())
}
