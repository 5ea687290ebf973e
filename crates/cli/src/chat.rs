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

use std::io::{IsTerminal, Write};
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use pinch_channels::cli_socket::{ClientMsg, ServerMsg, WireButton};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;

pub struct Conn {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
    line: String,
    /// The buttons of the latest reply that had some (pressable once).
    buttons: Vec<WireButton>,
    /// Replies printed since the last message line was sent (for `/wait`).
    printed: Vec<String>,
}

impl Conn {
    pub async fn connect(path: &Path) -> std::io::Result<Conn> {
        let s = UnixStream::connect(path).await?;
        let (r, w) = s.into_split();
        let mut c = Conn {
            reader: BufReader::new(r),
            writer: w,
            line: String::new(),
            buttons: Vec::new(),
            printed: Vec::new(),
        };
        match c.recv().await? {
            Some(ServerMsg::Hello { .. }) => Ok(c),
            other => Err(std::io::Error::other(format!(
                "unexpected greeting from the host: {other:?}"
            ))),
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
        loop {
            self.line.clear();
            if self.reader.read_line(&mut self.line).await? == 0 {
                return Ok(None);
            }
            let l = self.line.trim();
            if l.is_empty() {
                continue;
            }
            return serde_json::from_str(l)
                .map(Some)
                .map_err(|e| std::io::Error::other(format!("bad line from host: {e}")));
        }
    }
}

fn print_reply(text: &str) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{text}")?;
    out.flush()
}

/// Scripted mode: returns the process exit code.
pub async fn scripted(socket: &Path, input: Vec<String>, timeout: Duration) -> Result<i32> {
    let mut conn = Conn::connect(socket)
        .await
        .with_context(|| format!("connecting to {}", socket.display()))?;
    let mut failures = 0;
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
        let cid = format!("c{n}");
        conn.printed.clear();
        conn.send(&ClientMsg::Message {
            text: text.clone(),
            client_id: Some(cid.clone()),
        })
        .await
        .context("sending to the host")?;
        // Wait for the host to store it.
        let id = loop {
            let m = tokio::time::timeout(timeout, conn.recv()).await;
            match m {
                Err(_) => bail!(
                    "timed out after {} s waiting for the host to accept a message",
                    timeout.as_secs()
                ),
                Ok(Err(e)) => return Err(e).context("reading from the host"),
                Ok(Ok(None)) => bail!(
                    "the host went away before confirming the message; it may not have been stored"
                ),
                Ok(Ok(Some(m))) => match handle_common(&mut conn, m).await? {
                    Some(ServerMsg::Accepted {
                        client_id: Some(c),
                        id,
                        routed,
                        note,
                    }) if c == cid => {
                        if routed == 0 {
                            eprintln!(
                                "pinch: not delivered to any agent: {}",
                                note.unwrap_or_default()
                            );
                            failures += 1;
                            break None;
                        }
                        break Some(id);
                    }
                    Some(ServerMsg::Rejected {
                        client_id: Some(c),
                        error,
                    }) if c == cid => {
                        eprintln!("pinch: the host rejected the message: {error}");
                        failures += 1;
                        break None;
                    }
                    _ => {}
                },
            }
        };
        let Some(id) = id else { continue };
        // Print replies until it is settled.
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let m = tokio::time::timeout_at(deadline, conn.recv()).await;
            match m {
                Err(_) => bail!(
                    "timed out after {} s waiting for the reply to line {}",
                    timeout.as_secs(),
                    n + 1
                ),
                Ok(Ok(Some(m))) => {
                    if let Some(ServerMsg::Settled { ids }) = handle_common(&mut conn, m).await? {
                        if ids.contains(&id) {
                            break;
                        }
                    }
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
                    conn = reconnect(socket, deadline).await?;
                }
            }
        }
    }
    Ok(if failures > 0 { 1 } else { 0 })
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
    let deadline = tokio::time::Instant::now() + timeout;
    while !conn.printed.iter().any(|t| t.contains(want)) {
        match tokio::time::timeout_at(deadline, conn.recv()).await {
            Err(_) => bail!(
                "no reply containing {want:?} within {} s",
                timeout.as_secs()
            ),
            Ok(Ok(Some(m))) => {
                handle_common(conn, m).await?;
            }
            Ok(Ok(None)) | Ok(Err(_)) => *conn = reconnect(socket, deadline).await?,
        }
    }
    Ok(())
}

async fn reconnect(socket: &Path, deadline: tokio::time::Instant) -> Result<Conn> {
    eprintln!("pinch: lost the connection to the host, reconnecting…");
    loop {
        if let Ok(c) = Conn::connect(socket).await {
            return Ok(c);
        }
        if tokio::time::Instant::now() >= deadline {
            bail!("the host did not come back before the timeout");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
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

/// Prints replies (and acks them), notices; returns anything else.
async fn handle_common(conn: &mut Conn, m: ServerMsg) -> Result<Option<ServerMsg>> {
    match m {
        ServerMsg::Message {
            id, text, buttons, ..
        } => {
            let mut text = text;
            for (i, b) in buttons.iter().enumerate() {
                text.push_str(&format!("\n  [{}] {}", i + 1, b.label));
            }
            if !buttons.is_empty() {
                text.push_str("\n  (answer with /pick N)");
                conn.buttons = buttons;
            }
            print_reply(&text).context("writing to stdout")?;
            conn.printed.push(text);
            conn.send(&ClientMsg::Ack { id })
                .await
                .context("acknowledging a reply")?;
            Ok(None)
        }
        ServerMsg::Notice { text } => {
            eprintln!("pinch: {text}");
            Ok(None)
        }
        ServerMsg::Superseded => {
            bail!("another `pinch chat` took over this conversation; its replies go there now")
        }
        other => Ok(Some(other)),
    }
}

/// Interactive mode: lines from the terminal, replies as they come.
pub async fn interactive(socket: &Path, banner: &str) -> Result<i32> {
    let mut conn = Conn::connect(socket)
        .await
        .with_context(|| format!("connecting to {}", socket.display()))?;
    eprintln!("{banner}");
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Option<String>>(16);
    std::thread::spawn(move || {
        let stdin = std::io::stdin();
        let mut line = String::new();
        loop {
            line.clear();
            match stdin.read_line(&mut line) {
                Ok(0) | Err(_) => {
                    let _ = tx.blocking_send(None);
                    return;
                }
                Ok(_) => {
                    if tx.blocking_send(Some(line.trim_end().to_owned())).is_err() {
                        return;
                    }
                }
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
    let mut n = 0u64;
    loop {
        tokio::select! {
            line = rx.recv() => match line.flatten() {
                None => return Ok(0),
                Some(l) if l.trim().is_empty() => prompt(),
                Some(l) if !conn.buttons.is_empty() && parse_pick(&l, false).is_some() || l.trim_start().starts_with("/pick") => {
                    match parse_pick(&l, false) {
                        Some(k) => if let Err(e) = conn.pick(k).await { eprintln!("({e:#})") },
                        None => eprintln!("(usage: /pick N)"),
                    }
                    prompt();
                }
                Some(l) => {
                    n += 1;
                    conn.send(&ClientMsg::Message { text: l, client_id: Some(format!("i{n}")) }).await.context("sending to the host")?;
                }
            },
            m = conn.recv() => match m {
                Ok(Some(ServerMsg::Accepted { routed: 0, note, .. })) => {
                    eprintln!("(not delivered to any agent: {})", note.unwrap_or_default());
                    prompt();
                }
                Ok(Some(ServerMsg::Rejected { error, .. })) => {
                    eprintln!("(rejected: {error})");
                    prompt();
                }
                Ok(Some(ServerMsg::Settled { .. })) => prompt(),
                Ok(Some(m)) => {
                    handle_common(&mut conn, m).await?;
                }
                Ok(None) | Err(_) => {
                    conn = reconnect(socket, tokio::time::Instant::now() + Duration::from_secs(30)).await?;
                }
            }
        }
    }
}
