//! P12 (issue 18): the provider's first token → the first text a user sees,
//! in web chat (a WebSocket client, as the page) and in `pinch chat` (the
//! CLI socket), with a fake streaming model on loopback that the host's
//! proxy reaches like a real OpenAI-compatible server. The model waits
//! [`THINK`] before its first token, records when it wrote it, and sends
//! the rest [`TAIL`] later, so the first text seen is the streamed draft,
//! never the final reply. Baseline: the model's own first-token time, as a
//! client talking to it directly sees it, in the same run.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

use futures_util::{SinkExt, StreamExt};

use super::harness::WarmHost;
use super::*;

/// The fake model's time to its first token.
const THINK: Duration = Duration::from_millis(50);
/// Its time from the first token to the rest.
const TAIL: Duration = Duration::from_millis(150);

/// When the model wrote each first token, in order.
type Firsts = Arc<Mutex<VecDeque<Instant>>>;

fn chunk(w: &mut TcpStream, data: &str) -> std::io::Result<()> {
    write!(w, "{:x}\r\n{data}\r\n", data.len())?;
    w.flush()
}

fn event(content: &str, finish: Option<&str>) -> String {
    let v = serde_json::json!({"choices": [{"index": 0, "delta": {"content": content}, "finish_reason": finish}]});
    format!("data: {v}\n\n")
}

/// Answers every request on one connection (the proxy may keep it open).
fn answer(c: TcpStream, firsts: &Firsts) -> std::io::Result<()> {
    let mut r = BufReader::new(c.try_clone()?);
    let mut w = c;
    loop {
        let mut len = 0usize;
        loop {
            let mut line = String::new();
            if r.read_line(&mut line)? == 0 {
                return Ok(());
            }
            if line == "\r\n" {
                break;
            }
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                len = v.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0u8; len];
        r.read_exact(&mut body)?;
        std::thread::sleep(THINK);
        w.write_all(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n")?;
        chunk(&mut w, &event("Streamed", None))?;
        firsts.lock().unwrap().push_back(Instant::now());
        std::thread::sleep(TAIL);
        chunk(&mut w, &event(" text, then the rest.", Some("stop")))?;
        chunk(&mut w, "data: [DONE]\n\n")?;
        w.write_all(b"0\r\n\r\n")?;
        w.flush()?;
    }
}

fn serve_model() -> Result<(u16, Firsts)> {
    let l = TcpListener::bind("127.0.0.1:0").context("binding the fake model")?;
    let port = l.local_addr()?.port();
    let firsts: Firsts = Arc::default();
    let f = firsts.clone();
    std::thread::spawn(move || {
        for c in l.incoming().flatten() {
            let f = f.clone();
            std::thread::spawn(move || answer(c, &f));
        }
    });
    Ok((port, firsts))
}

/// The model's first-token time as a direct client sees it: request sent →
/// first event read.
fn direct_first_token(port: u16) -> Result<Duration> {
    let mut c = TcpStream::connect(("127.0.0.1", port))?;
    let body = r#"{"model":"fake","stream":true,"messages":[]}"#;
    let t0 = Instant::now();
    write!(
        c,
        "POST /v1/chat/completions HTTP/1.1\r\nhost: m\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )?;
    let mut r = BufReader::new(c);
    let mut line = String::new();
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 {
            bail!("the fake model closed before its first token");
        }
        if line.starts_with("data:") {
            return Ok(t0.elapsed());
        }
    }
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn web_socket(addr: std::net::SocketAddr, token: &str) -> Result<Ws> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut req = format!("ws://{addr}/ws").into_client_request()?;
    req.headers_mut()
        .insert("authorization", format!("Bearer {token}").parse()?);
    Ok(tokio_tungstenite::connect_async(req).await?.0)
}

/// The next JSON frame of the web chat socket, with when it was read.
async fn frame(ws: &mut Ws) -> Result<(serde_json::Value, Instant)> {
    loop {
        let m = tokio::time::timeout(WAIT, ws.next())
            .await
            .map_err(|_| anyhow!("no web chat frame within {} s", WAIT.as_secs()))?
            .context("the web chat socket closed")??;
        if let tokio_tungstenite::tungstenite::Message::Text(t) = m {
            return Ok((serde_json::from_str(&t)?, Instant::now()));
        }
    }
}

/// One web chat turn: the first draft's arrival, then on to the reply and
/// the end of the turn (its `idle`).
async fn web_turn(ws: &mut Ws, n: usize) -> Result<Instant> {
    let cid = format!("p12-{n}");
    let msg =
        serde_json::json!({"type": "message", "text": format!("stream {n}"), "client_id": cid});
    ws.send(tokio_tungstenite::tungstenite::Message::Text(
        msg.to_string().into(),
    ))
    .await?;
    let mut first = None;
    let (mut replied, mut idle) = (false, false);
    while !(replied && idle) {
        let (v, at) = frame(ws).await?;
        match v["type"].as_str().unwrap_or("") {
            "draft" => {
                first.get_or_insert(at);
            }
            "message" => replied = true,
            "idle" => idle = true,
            "rejected" => bail!("web chat refused the message: {v}"),
            _ => {}
        }
    }
    first.context("the reply came with no streamed draft before it")
}

/// One `pinch chat` turn: the first draft's arrival, then on to the end.
async fn cli_turn(h: &mut WarmHost, n: usize) -> Result<Instant> {
    h.client.send(&format!("stream {n}")).await?;
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut first = None;
    loop {
        let (m, at) = h.client.next(deadline).await?;
        match m {
            ServerMsg::Draft { .. } => {
                first.get_or_insert(at);
            }
            ServerMsg::Idle { .. } => break,
            ServerMsg::Rejected { error, .. } => bail!("the host refused the message: {error}"),
            _ => {}
        }
    }
    first.context("the reply came with no streamed draft before it")
}

fn gap(firsts: &Firsts, seen: Instant) -> Result<Duration> {
    let t0 = firsts
        .lock()
        .unwrap()
        .pop_front()
        .context("the fake model recorded no first token for this turn")?;
    Ok(seen.saturating_duration_since(t0))
}

impl Bench {
    pub(super) async fn p12(&self, kind: Kind) -> Result<Vec<Row>> {
        let n = self.n(30);
        eprintln!("pinch bench: P12 ({n} turns in web chat and in pinch chat)…");
        let (port, firsts) = serve_model()?;
        let dir = self.temp_dir("stream")?;
        let mut cfg = self.host_config(dir.path(), kind);
        cfg.provider = ProviderSettings {
            kind: "openai".into(),
            model: Some("fake-streaming-model".into()),
            ..Default::default()
        };
        cfg.proxy_upstreams = vec![pinch_host::proxy::Upstream::new(
            "openai",
            format!("http://127.0.0.1:{port}/v1"),
            None,
        )];
        cfg.http = Some(pinch_host::config::HttpSettings::local(
            "127.0.0.1:0".parse()?,
            true,
        ));
        let data = cfg.data_dir.clone();
        let mut h = WarmHost::start_with(cfg).await?;
        let res = async {
            firsts.lock().unwrap().clear();
            let addr = h
                .handle
                .http_addr
                .context("the host has no HTTP listener")?;
            let token = pinch_host::web_token(&data)?;
            let mut ws = web_socket(addr, &token).await?;
            // hello, history; then one unmeasured turn (its runner starts cold).
            frame(&mut ws).await?;
            frame(&mut ws).await?;
            web_turn(&mut ws, 0).await?;
            firsts.lock().unwrap().clear();
            let (mut web, mut cli, mut direct) = (Vec::new(), Vec::new(), Vec::new());
            for i in 1..=n {
                let seen = web_turn(&mut ws, i).await?;
                web.push(gap(&firsts, seen)?);
                tokio::time::sleep(GAP).await;
                let seen = cli_turn(&mut h, i).await?;
                cli.push(gap(&firsts, seen)?);
                tokio::time::sleep(GAP).await;
                direct.push(tokio::task::spawn_blocking(move || direct_first_token(port)).await??);
                firsts.lock().unwrap().clear();
            }
            Ok::<_, anyhow::Error>((web, cli, direct))
        }
        .await;
        let down = h.shutdown().await;
        let (web, cli, direct) = res?;
        down?;
        let baseline = || Baseline {
            what: format!("model's own first token ({} ms think)", THINK.as_millis()),
            summary: Summary::of(direct.clone()),
            per_s: None,
        };
        Ok(vec![
            Row {
                fig: Fig::P12,
                sandbox: kind,
                measured: Measured::Latency(Summary::of(web)),
                baseline: Some(baseline()),
                notes: vec![],
            },
            Row {
                fig: Fig::P12Cli,
                sandbox: kind,
                measured: Measured::Latency(Summary::of(cli)),
                baseline: Some(baseline()),
                notes: vec![],
            },
        ])
    }
}
