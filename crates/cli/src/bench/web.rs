//! P13: `web_fetch`'s round trip through the host against a direct `curl`
//! of the same loopback page (issue 17, decision 0042).

use std::io::{Read, Write as _};
use std::net::{TcpListener, TcpStream};
use std::os::unix::net::UnixStream;

use super::harness::WarmHost;
use super::*;

/// A 20 KB article-like page: headings, paragraphs, links, a script.
fn page() -> Vec<u8> {
    let mut body = String::from("<!doctype html><html><head><title>Bench page</title><script>var x = 1;</script></head><body><h1>Bench</h1>");
    while body.len() < 20_000 {
        body.push_str("<h2>Section</h2><p>Some <b>bold</b> words and <a href=\"/next\">a link</a> in a paragraph of ordinary length.</p>");
    }
    body.push_str("</body></html>");
    let mut resp = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: text/html; charset=utf-8\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    resp.extend_from_slice(body.as_bytes());
    resp
}

/// Serves [`page`] to every connection, a thread each; returns the port.
fn serve_page() -> Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0").context("binding the bench's page server")?;
    let port = l.local_addr()?.port();
    let resp = page();
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            let resp = resp.clone();
            std::thread::spawn(move || {
                let mut s = s;
                let mut buf = [0u8; 4096];
                let mut head = Vec::new();
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = s.write_all(&resp);
            });
        }
    });
    Ok(port)
}

/// The baseline: `curl` fetching the page (what an agent with network
/// would run), or, without curl, a GET over TCP read whole.
#[allow(clippy::disallowed_methods)] // the bench's own baseline program, not a sandboxed one
fn fetch_directly(port: u16, curl: bool) -> Result<()> {
    if !curl {
        return direct_get(port).map(drop);
    }
    let st = Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            &format!("http://127.0.0.1:{port}/page"),
        ])
        .status()
        .context("running curl")?;
    if !st.success() {
        bail!("curl could not fetch the bench page ({st})");
    }
    Ok(())
}

/// GET the page over TCP and read it whole.
fn direct_get(port: u16) -> Result<usize> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    write!(
        s,
        "GET /page HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\nconnection: close\r\n\r\n"
    )?;
    let mut out = Vec::new();
    s.read_to_end(&mut out)?;
    Ok(out.len())
}

/// What the `web_fetch` tool does: POST to the host's route on the proxy
/// socket and read the JSON answer whole.
fn through_host(sock: &Path, port: u16) -> Result<usize> {
    let body = format!(r#"{{"url":"http://127.0.0.1:{port}/page"}}"#);
    let mut s =
        UnixStream::connect(sock).with_context(|| format!("connecting to {}", sock.display()))?;
    write!(
        s,
        "POST /_pinch/web/fetch HTTP/1.1\r\nhost: proxy\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut out = Vec::new();
    s.read_to_end(&mut out)?;
    if !out.starts_with(b"HTTP/1.1 200") {
        bail!(
            "the host did not fetch the page: {}",
            String::from_utf8_lossy(&out[..out.len().min(300)])
        );
    }
    Ok(out.len())
}

impl Bench {
    pub(super) async fn fetch(&self, kind: Kind) -> Result<Row> {
        let n = self.n(50);
        eprintln!("pinch bench: P13 ({n} iterations)…");
        #[allow(clippy::disallowed_methods)] // probing for the baseline program
        let curl = Command::new("curl")
            .arg("--version")
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        let port = serve_page()?;
        let dir = self.temp_dir("fetch")?;
        let mut cfg = self.host_config(dir.path(), kind);
        // The page is on loopback: allowed the way an owner would; no
        // cache and no rate limit, so every fetch is a real one.
        cfg.web.allow_private = pinch_policy::hosts::HostPatterns::parse_as(
            &[format!("127.0.0.1:{port}")],
            "web_fetch.allow_private",
            None,
        )
        .map_err(anyhow::Error::msg)?;
        cfg.web.cache_ttl = Duration::ZERO;
        cfg.web.per_minute = u32::MAX;
        let data = cfg.data_dir.clone();
        let h = WarmHost::start_with(cfg).await?;
        let sock = data.join("run/proxy").join(&h.session.id).join("llm.sock");
        let res = tokio::task::spawn_blocking(move || {
            let (mut direct, mut host) = (Vec::with_capacity(n), Vec::with_capacity(n));
            // One of each first, unmeasured: connections and code warm.
            fetch_directly(port, curl)?;
            through_host(&sock, port)?;
            for _ in 0..n {
                let t0 = Instant::now();
                fetch_directly(port, curl)?;
                direct.push(t0.elapsed());
                let t0 = Instant::now();
                through_host(&sock, port)?;
                host.push(t0.elapsed());
            }
            Ok::<_, anyhow::Error>((host, direct))
        })
        .await
        .context("the P13 driver thread")?;
        let down = h.shutdown().await;
        let (host, direct) = res?;
        down?;
        Ok(Row {
            fig: Fig::P13,
            sandbox: kind,
            measured: Measured::Latency(Summary::of(host)),
            baseline: Some(Baseline {
                what: if curl {
                    "curl of the page"
                } else {
                    "direct GET (no curl)"
                }
                .into(),
                summary: Summary::of(direct),
                per_s: None,
            }),
            notes: vec![],
        })
    }
}
