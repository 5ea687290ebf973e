//! `pinch chat`: the terminal client of the CLI channel.
//!
//! Interactive when stdin is a terminal. Scriptable otherwise: each input
//! line is sent in turn, its replies are printed on stdout, and the next
//! line goes once the host reports the previous one settled (answered and
//! delivered); the process exits when the last one has. Every printed reply
//! is acknowledged to the host only after it is written, so a client that
//! dies mid-reply loses nothing: the host re-delivers to the next client.
//!
//! A reply with buttons (an agent's question) is printed with numbered
//! choices; `/pick N` (or a bare `N` in interactive mode) presses one. In
//! scripted mode a `/pick N` line right after a line that gets a question
//! answers it while that line's turn is still waiting.
//!
//! Replies that come later than their line's turn (an answer another agent
//! sends back, a scheduled task) are printed whenever they arrive; in
//! scripted mode a `/wait TEXT` line waits (up to the timeout) until a reply
//! containing TEXT has been printed since the last message line was sent.
//!
//! Faults (issue 15): input that is not UTF-8 has its bad bytes replaced
//! (U+FFFD, said once on stderr with the line number) and the rest is sent;
//! a read error is reported, never taken for the end of input. Each message
//! carries a key unique to this run and line, so when the host goes away
//! before confirming one, the client waits for it to come back (bounded by
//! `--timeout`) and sends it again without storing it twice; lines never
//! confirmed are listed at the end (exit 1). A line over the socket's 1 MiB
//! limit is refused here with that reason. A turn the agent could not
//! answer (its provider failed) makes the exit status 1.

use std::collections::{BTreeMap, HashSet};
use std::io::{IsTerminal, Write};
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use pinch_channels::cli_socket::{ClientMsg, ServerMsg, WireButton, MAX_LINE};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;
use tokio::time::Instant;

pub use crate::chat_input::{read_all, Lines};

/// A message line as sent: refused here when it would exceed the host's
/// line limit (the host would refuse it anyway).
fn message(text: String, client_id: String, key: String) -> Result<ClientMsg, String> {
    let m = ClientMsg::Message {
        text,
        client_id: Some(client_id),
        key: Some(key),
    };
    let len = serde_json::to_string(&m).map(|s| s.len() + 1).unwrap_or(0);
    if len > MAX_LINE {
        return Err(format!(
            "line longer than 1 MiB ({len} bytes as sent, limit {MAX_LINE}); not sent — split it"
        ));
    }
    Ok(m)
}

pub struct Conn {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
    /// The host's one line about the agent and its model.
    about: Option<String>,
    line: String,
    /// The buttons of the latest reply that had some (pressable once).
    buttons: Vec<WireButton>,
    /// Replies printed since the last message line was sent (for `/wait`).
    printed: Vec<String>,
    /// Every message id the host reported settled, and those that failed
    /// (kept across reconnects: a settle may come before a resend's answer).
    settled: HashSet<String>,
    failed: HashSet<String>,
    /// What a terminal shows while the agent works (streamed text only on a TTY).
    live: crate::spinner::LiveView,
}

/// A greeted connection: its halves and what the host's `Hello` said of
/// whom it talks to.
type Greeted = (BufReader<OwnedReadHalf>, OwnedWriteHalf, Option<String>);

async fn open(path: &Path) -> std::io::Result<Greeted> {
    greet(UnixStream::connect(path).await?).await
}

async fn greet(s: UnixStream) -> std::io::Result<Greeted> {
    let (r, w) = s.into_split();
    let mut reader = BufReader::new(r);
    let mut line = String::new();
    match read_msg(&mut reader, &mut line).await? {
        Some(ServerMsg::Hello { about, .. }) => Ok((reader, w, about)),
        other => Err(std::io::Error::other(format!(
            "unexpected greeting from the host: {other:?}"
        ))),
    }
}

async fn read_msg(
    reader: &mut BufReader<OwnedReadHalf>,
    line: &mut String,
) -> std::io::Result<Option<ServerMsg>> {
    loop {
        line.clear();
        if reader.read_line(line).await? == 0 {
            return Ok(None);
        }
        let l = line.trim();
        if l.is_empty() {
            continue;
        }
        return serde_json::from_str(l)
            .map(Some)
            .map_err(|e| std::io::Error::other(format!("bad line from host: {e}")));
    }
}

impl Conn {
    pub async fn connect(path: &Path) -> std::io::Result<Conn> {
        Conn::with(open(path).await?)
    }

    /// Uses a connection already made (the one that found the host
    /// running: a probe that hung up would be a client the host greets and
    /// sends waiting notices to).
    pub async fn connected(
        path: &Path,
        s: Option<std::os::unix::net::UnixStream>,
    ) -> std::io::Result<Conn> {
        let Some(s) = s else {
            return Conn::connect(path).await;
        };
        s.set_nonblocking(true)?;
        Conn::with(greet(UnixStream::from_std(s)?).await?)
    }

    fn with((reader, writer, about): Greeted) -> std::io::Result<Conn> {
        Ok(Conn {
            reader,
            writer,
            about,
            line: String::new(),
            buttons: Vec::new(),
            printed: Vec::new(),
            settled: HashSet::new(),
            failed: HashSet::new(),
            live: Default::default(),
        })
    }

    /// Connects again (the host restarted), retrying with backoff until
    /// `deadline`; what this client knows is kept.
    async fn reopen(&mut self, socket: &Path, deadline: Instant) -> Result<()> {
        let mut delay = Duration::from_millis(100);
        loop {
            if let Ok((r, w, about)) = open(socket).await {
                self.reader = r;
                self.writer = w;
                self.about = about;
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "the host did not come back (nothing answers on {})",
                    socket.display()
                );
            }
            tokio::time::sleep(delay.min(deadline.saturating_duration_since(Instant::now()))).await;
            delay = (delay * 2).min(Duration::from_secs(2));
        }
    }

    pub async fn send(&mut self, m: &ClientMsg) -> std::io::Result<()> {
        let mut s = serde_json::to_string(m).expect("client messages serialise");
        s.push('\n');
        self.writer.write_all(s.as_bytes()).await
    }

    /// Presses button `n` (1-based) of the latest question, if there is one.
    pub async fn pick(&mut self, n: usize) -> Result<()> {
        if self.buttons.is_empty() {
            bail!("there is no question to answer");
        }
        let Some(b) = self.buttons.get(n.wrapping_sub(1)).cloned() else {
            bail!("choose a number from 1 to {}", self.buttons.len());
        };
        self.buttons.clear();
        self.send(&ClientMsg::Click {
            callback: b.callback,
        })
        .await
        .context("sending the choice to the host")
    }

    /// The next message; `None` at EOF.
    pub async fn recv(&mut self) -> std::io::Result<Option<ServerMsg>> {
        read_msg(&mut self.reader, &mut self.line).await
    }
}

fn print_reply(text: &str) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{text}")?;
    out.flush()
}

/// How the host answered a message line.
enum Sent {
    Accepted(String),
    /// Not stored or not routed; already said on stderr.
    Refused,
    /// The host never confirmed it (gone, or silent until the timeout).
    Unconfirmed(String),
}

/// Sends a message line until the host confirms it: when the connection is
/// lost first, waits for the host to come back (up to `timeout`) and sends
/// it again — its key makes the host store it once.
async fn send_confirmed(
    conn: &mut Conn,
    socket: &Path,
    msg: &ClientMsg,
    line_no: usize,
    timeout: Duration,
) -> Result<Sent> {
    let ClientMsg::Message {
        client_id: Some(cid),
        ..
    } = msg
    else {
        unreachable!("message lines have a client id")
    };
    loop {
        let lost = match conn.send(msg).await {
            Err(e) => e.to_string(),
            Ok(()) => loop {
                match tokio::time::timeout(timeout, conn.recv()).await {
                    Err(_) => {
                        return Ok(Sent::Unconfirmed(format!(
                            "the host did not confirm it within {} s",
                            timeout.as_secs()
                        )))
                    }
                    Ok(Err(e)) => break e.to_string(),
                    Ok(Ok(None)) => break "the host closed the connection".into(),
                    Ok(Ok(Some(m))) => match handle_common(conn, m).await? {
                        Some(ServerMsg::Accepted {
                            client_id: Some(c),
                            id,
                            routed,
                            note,
                            handled,
                        }) if c == *cid => {
                            if routed == 0 {
                                let what = if handled {
                                    ""
                                } else {
                                    "not delivered to any agent: "
                                };
                                eprintln!(
                                    "pinch: line {line_no}: {what}{}",
                                    note.unwrap_or_default()
                                );
                                return Ok(Sent::Refused);
                            }
                            return Ok(Sent::Accepted(id));
                        }
                        Some(ServerMsg::Rejected { client_id, error })
                            if client_id.is_none() || client_id.as_ref() == Some(cid) =>
                        {
                            eprintln!("pinch: line {line_no}: the host rejected it: {error}");
                            return Ok(Sent::Refused);
                        }
                        _ => {}
                    },
                }
            },
        };
        eprintln!(
            "pinch: lost the host before it confirmed line {line_no} ({lost}); waiting up to {} s for it to come back…",
            timeout.as_secs()
        );
        if let Err(e) = conn.reopen(socket, Instant::now() + timeout).await {
            return Ok(Sent::Unconfirmed(format!("{e:#}")));
        }
        eprintln!("pinch: reconnected; sending line {line_no} again (the host stores it once)");
    }
}

/// Scripted mode: returns the process exit code.
pub async fn scripted(
    socket: &Path,
    first: Option<std::os::unix::net::UnixStream>,
    input: Vec<String>,
    input_error: Option<String>,
    timeout: Duration,
) -> Result<i32> {
    let mut conn = Conn::connected(socket, first)
        .await
        .with_context(|| format!("connecting to {}", socket.display()))?;
    // Keys unique to this run and line: a resend is stored once, another
    // run's line 3 is a new message.
    let run = pinch_proto::runner_config::random_hex(6);
    let mut failures = 0;
    let mut unconfirmed: Vec<usize> = Vec::new();
    let mut input: std::collections::VecDeque<(usize, String)> =
        input.into_iter().enumerate().collect();
    while let Some((n, text)) = input.pop_front() {
        if text.trim().is_empty() {
            continue;
        }
        if let Some(k) = parse_pick(&text, true) {
            // A question whose turn already settled (e.g. the tool timed out).
            if let Err(e) = conn.pick(k).await {
                eprintln!("pinch: line {}: {e:#}", n + 1);
                failures += 1;
            }
            continue;
        }
        if let Some(want) = text.trim().strip_prefix("/wait ") {
            if let Err(e) = wait_for_reply(&mut conn, socket, want.trim(), timeout).await {
                eprintln!("pinch: line {}: {e:#}", n + 1);
                failures += 1;
            }
            continue;
        }
        let msg = match message(text, format!("c{n}"), format!("{run}-{}", n + 1)) {
            Ok(m) => m,
            Err(e) => {
                eprintln!("pinch: line {}: {e}", n + 1);
                failures += 1;
                continue;
            }
        };
        conn.printed.clear();
        let id = match send_confirmed(&mut conn, socket, &msg, n + 1, timeout).await? {
            Sent::Accepted(id) => id,
            Sent::Refused => {
                failures += 1;
                continue;
            }
            Sent::Unconfirmed(why) => {
                eprintln!("pinch: line {}: {why}", n + 1);
                // The host is gone: the message lines left are not sent.
                unconfirmed.push(n + 1);
                unconfirmed.extend(
                    input
                        .iter()
                        .filter(|(_, t)| !t.trim().is_empty())
                        .map(|(m, _)| m + 1),
                );
                break;
            }
        };
        // Print replies until it is settled.
        let deadline = Instant::now() + timeout;
        while !conn.settled.contains(&id) {
            let m = tokio::time::timeout_at(deadline, conn.recv()).await;
            match m {
                Err(_) => bail!(
                    "timed out after {} s waiting for the reply to line {}",
                    timeout.as_secs(),
                    n + 1
                ),
                Ok(Ok(Some(m))) => {
                    handle_common(&mut conn, m).await?;
                    // The turn asked a question: the next line may answer it.
                    if !conn.buttons.is_empty() {
                        if let Some(k) = input.front().and_then(|(_, t)| parse_pick(t, true)) {
                            let (m, _) = input.pop_front().expect("peeked");
                            if let Err(e) = conn.pick(k).await {
                                eprintln!("pinch: line {}: {e:#}", m + 1);
                                failures += 1;
                            }
                        }
                    }
                }
                Ok(Ok(None)) | Ok(Err(_)) => {
                    // The host restarted: reconnect and keep waiting; the
                    // pending reply is delivered to the new connection.
                    eprintln!("pinch: lost the connection to the host, reconnecting…");
                    conn.reopen(socket, deadline)
                        .await
                        .context("waiting for the reply")?;
                }
            }
        }
        if conn.failed.contains(&id) {
            eprintln!(
                "pinch: line {}: the agent could not answer it (see the reply above)",
                n + 1
            );
            failures += 1;
        }
    }
    if !unconfirmed.is_empty() {
        let list: Vec<String> = unconfirmed.iter().map(|n| n.to_string()).collect();
        eprintln!(
            "pinch: the host did not confirm line{} {}: {} may not have been stored; send {} again",
            if list.len() == 1 { "" } else { "s" },
            list.join(", "),
            if list.len() == 1 { "it" } else { "they" },
            if list.len() == 1 { "it" } else { "them" },
        );
    }
    if let Some(e) = input_error {
        eprintln!("pinch: {e}; the lines after it were not read");
        failures += 1;
    }
    Ok(if failures > 0 || !unconfirmed.is_empty() {
        1
    } else {
        0
    })
}

/// `/wait TEXT`: prints replies until one containing `want` has been
/// printed since the last message line.
async fn wait_for_reply(
    conn: &mut Conn,
    socket: &Path,
    want: &str,
    timeout: Duration,
) -> Result<()> {
    if want.is_empty() {
        bail!("/wait needs the text to wait for, e.g. `/wait done`");
    }
    let deadline = Instant::now() + timeout;
    while !conn.printed.iter().any(|t| t.contains(want)) {
        match tokio::time::timeout_at(deadline, conn.recv()).await {
            Err(_) => bail!(
                "no reply containing {want:?} within {} s",
                timeout.as_secs()
            ),
            Ok(Ok(Some(m))) => {
                handle_common(conn, m).await?;
            }
            Ok(Ok(None)) | Ok(Err(_)) => {
                eprintln!("pinch: lost the connection to the host, reconnecting…");
                conn.reopen(socket, deadline).await?
            }
        }
    }
    Ok(())
}

/// `/pick N` (or, when `strict` is false, a bare number) → N.
fn parse_pick(line: &str, strict: bool) -> Option<usize> {
    let l = line.trim();
    let n = match l.strip_prefix("/pick") {
        Some(rest) => rest.trim(),
        None if !strict => l,
        None => return None,
    };
    n.parse().ok()
}

/// Prints replies (and acks them), notices; records settled ids; returns
/// anything else (settles too).
async fn handle_common(conn: &mut Conn, m: ServerMsg) -> Result<Option<ServerMsg>> {
    match m {
        ServerMsg::Message {
            id,
            text,
            buttons,
            in_reply_to,
        } => {
            let mut text = text;
            for (i, b) in buttons.iter().enumerate() {
                text.push_str(&format!("\n  [{}] {}", i + 1, b.label));
            }
            if !buttons.is_empty() {
                text.push_str("\n  (answer with /pick N)");
                conn.buttons = buttons;
            }
            print_reply(conn.live.reply(in_reply_to.as_deref(), &text))
                .context("writing to stdout")?;
            conn.printed.push(text);
            // Lost with the connection: the host sends it again.
            let _ = conn.send(&ClientMsg::Ack { id }).await;
            Ok(None)
        }
        ServerMsg::Notice { text } => {
            eprintln!("pinch: {text}");
            Ok(None)
        }
        ServerMsg::Superseded => {
            bail!("another `pinch chat` took over this conversation; its replies go there now")
        }
        ServerMsg::Settled { ids, failed } => {
            conn.failed.extend(failed.iter().cloned());
            conn.settled.extend(ids.iter().cloned());
            Ok(Some(ServerMsg::Settled { ids, failed }))
        }
        m if conn.live.take(&m) => Ok(None),
        other => Ok(Some(other)),
    }
}

/// What the terminal-reading thread sends.
enum Typed {
    Line(usize, String),
    End,
    Failed(String),
}

/// Interactive mode: lines from the terminal, replies as they come.
pub async fn interactive(
    socket: &Path,
    first: Option<std::os::unix::net::UnixStream>,
    banner: &str,
) -> Result<i32> {
    let mut conn = Conn::connected(socket, first)
        .await
        .with_context(|| format!("connecting to {}", socket.display()))?;
    // One line: whom you talk to (the host says), then `banner`.
    let who = conn.about.as_deref().unwrap_or("agent `main`");
    eprintln!("pinch chat — {who}{banner}");
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Typed>(16);
    std::thread::spawn(move || {
        let mut lines = Lines::new(std::io::stdin().lock());
        loop {
            let t = match lines.next_line() {
                Ok(Some((n, l))) => Typed::Line(n, l),
                Ok(None) => Typed::End,
                Err(e) => Typed::Failed(format!("reading the terminal failed: {e}")),
            };
            let last = !matches!(t, Typed::Line(..));
            if tx.blocking_send(t).is_err() || last {
                return;
            }
        }
    });
    let is_tty = std::io::stdout().is_terminal();
    let prompt = || {
        if is_tty {
            eprint!("› ");
            let _ = std::io::stderr().flush();
        }
    };
    prompt();
    let run = pinch_proto::runner_config::random_hex(6);
    // Sent but not yet confirmed, by client id: sent again after a reconnect.
    let mut unconfirmed: BTreeMap<usize, ClientMsg> = BTreeMap::new();
    // Client ids of the lines whose turn failed, by message id.
    let mut lines_of: std::collections::HashMap<String, usize> = Default::default();
    // While the agent works on a line (accepted, not yet settled), a
    // spinner on the terminal says so, and its reply prints as it streams;
    // never when output is not a TTY. Ctrl+C then stops the turn.
    conn.live = crate::spinner::LiveView::new(is_tty);
    let mut tick = tokio::time::interval(Duration::from_millis(120));
    loop {
        tokio::select! {
            _ = tick.tick(), if conn.live.working.is_some() => conn.live.tick(),
            _ = tokio::signal::ctrl_c() => {
                if conn.live.working.is_none() {
                    return Ok(130);
                }
                conn.live.clear();
                eprintln!("(stopping…)");
                let _ = conn.send(&ClientMsg::Stop).await;
            }
            typed = rx.recv() => match typed.unwrap_or(Typed::End) {
                Typed::End => return Ok(0),
                Typed::Failed(e) => {
                    eprintln!("pinch: {e}");
                    return Ok(1);
                }
                Typed::Line(_, l) if l.trim().is_empty() => prompt(),
                Typed::Line(_, l) if !conn.buttons.is_empty() && parse_pick(&l, false).is_some() || l.trim_start().starts_with("/pick") => {
                    match parse_pick(&l, false) {
                        Some(k) => if let Err(e) = conn.pick(k).await { eprintln!("({e:#})") },
                        None => eprintln!("(usage: /pick N)"),
                    }
                    prompt();
                }
                Typed::Line(n, l) => match message(l, format!("i{n}"), format!("{run}-{n}")) {
                    Err(e) => {
                        eprintln!("({e})");
                        prompt();
                    }
                    Ok(m) => {
                        unconfirmed.insert(n, m.clone());
                        // A failed write shows up as a lost connection below.
                        let _ = conn.send(&m).await;
                    }
                },
            },
            m = conn.recv() => {
                conn.live.clear();
                match m {
                Ok(Some(ServerMsg::Accepted { routed, note, client_id, id, handled })) => {
                    if routed > 0 {
                        conn.live.working.get_or_insert_with(std::time::Instant::now);
                    }
                    if let Some(n) = client_id.as_deref().and_then(|c| c.strip_prefix('i')).and_then(|n| n.parse().ok()) {
                        unconfirmed.remove(&n);
                        lines_of.insert(id, n);
                    }
                    if routed == 0 {
                        // Answered by the host or held: news, not a failure.
                        if handled {
                            eprintln!("({})", note.unwrap_or_default());
                        } else {
                            eprintln!("(not delivered to any agent: {})", note.unwrap_or_default());
                        }
                        prompt();
                    }
                }
                Ok(Some(ServerMsg::Rejected { error, client_id })) => {
                    if let Some(n) = client_id.as_deref().and_then(|c| c.strip_prefix('i')).and_then(|n| n.parse::<usize>().ok()) {
                        unconfirmed.remove(&n);
                    }
                    eprintln!("(rejected: {error})");
                    prompt();
                }
                Ok(Some(m)) => {
                    if let Some(ServerMsg::Settled { failed, .. }) = handle_common(&mut conn, m).await? {
                        conn.live.settled();
                        if failed.iter().any(|id| lines_of.contains_key(id)) {
                            eprintln!("(the agent could not answer that)");
                        }
                        prompt();
                    }
                }
                Ok(None) | Err(_) => {
                    eprintln!("pinch: lost the connection to the host, reconnecting…");
                    conn.reopen(socket, Instant::now() + Duration::from_secs(30)).await?;
                    for m in unconfirmed.values() {
                        let _ = conn.send(m).await;
                    }
                }
                }
            }
        }
    }
}
