//! The in-sandbox egress forwarder (SPEC §8.2): tools expect an HTTP proxy
//! on TCP (`HTTP(S)_PROXY=http://127.0.0.1:3128`), but the only way out of
//! the sandbox is the credential proxy's Unix socket. This listens on
//! loopback and splices each TCP connection to a new connection on that
//! socket, byte for byte; the host's proxy decides what is allowed
//! (`CONNECT` to allowlisted hosts, the model routes) and refuses the rest.
//!
//! Plain threads: one accepting, two per connection (one per direction).
//! No tokio in the runner.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

/// The port tools are told about when it is free (SPEC §8.2).
pub const PREFERRED_PORT: u16 = 3128;

/// What every program the runner starts — a `shell` command, an MCP
/// server, an agent CLI — gets to reach the web through the forwarder at
/// `proxy` (`http://127.0.0.1:PORT`): `HTTP_PROXY` and `HTTPS_PROXY`, in
/// both cases, and `NODE_USE_ENV_PROXY=1` so Node's `fetch` uses them. Loopback is not exempted: an `egress_allow` entry may name
/// one of the host's own ports (`127.0.0.1:8080`), reached only through
/// the proxy; the agent CLI adds its own `NO_PROXY` for its API base URLs.
pub fn proxy_vars(proxy: &str) -> Vec<(&'static str, String)> {
    let p = proxy.trim_end_matches('/');
    let mut v: Vec<(&'static str, String)> =
        ["HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"]
            .into_iter()
            .map(|k| (k, p.to_owned()))
            .collect();
    // Node's built-in fetch reads the two above only when asked (Node ≥ 22.21).
    v.push(("NODE_USE_ENV_PROXY", "1".to_owned()));
    v
}

/// MCP server configurations with [`proxy_vars`] added to each server's
/// environment, unless its entry sets that variable itself (the owner's
/// setting wins). Without a forwarder they are returned as they are.
pub fn with_proxy_env(
    servers: &[pinch_proto::runner_config::McpServerConfig],
    proxy: Option<&String>,
) -> Vec<pinch_proto::runner_config::McpServerConfig> {
    let mut out = servers.to_vec();
    let Some(p) = proxy.filter(|p| !p.is_empty()) else {
        return out;
    };
    for s in &mut out {
        for (k, v) in proxy_vars(p) {
            s.env.entry(k.to_owned()).or_insert(v);
        }
    }
    out
}

/// Starts the forwarder to `proxy_socket` on `127.0.0.1:3128`, or on an
/// ephemeral loopback port if 3128 is taken (e.g. several `process`
/// sandboxes on one host). Returns the address to put in `HTTP(S)_PROXY`.
/// The accepting thread lives as long as the process.
pub fn start(proxy_socket: &Path) -> io::Result<SocketAddr> {
    if !proxy_socket.exists() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("the credential proxy socket {} does not exist: the host starts it before the runner", proxy_socket.display()),
        ));
    }
    let listener = match TcpListener::bind(("127.0.0.1", PREFERRED_PORT)) {
        Ok(l) => l,
        Err(e) => {
            tracing::debug!("port {PREFERRED_PORT} is not available ({e}); the egress forwarder takes an ephemeral port");
            TcpListener::bind(("127.0.0.1", 0))?
        }
    };
    let addr = listener.local_addr()?;
    let socket = proxy_socket.to_owned();
    std::thread::Builder::new()
        .name("egress-accept".into())
        .spawn(move || accept_loop(listener, socket))?;
    tracing::info!(%addr, "egress forwarder listening");
    Ok(addr)
}

fn accept_loop(listener: TcpListener, socket: PathBuf) {
    for conn in listener.incoming() {
        let tcp = match conn {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!("egress forwarder accept failed: {e}");
                continue;
            }
        };
        let socket = socket.clone();
        let spawned = std::thread::Builder::new()
            .name("egress-conn".into())
            .spawn(move || {
                if let Err(e) = forward(tcp, &socket) {
                    tracing::debug!("egress connection ended: {e}");
                }
            });
        if let Err(e) = spawned {
            tracing::warn!("egress forwarder cannot start a thread: {e}");
        }
    }
}

/// Splices one TCP connection to a new connection on the proxy socket until
/// both directions have ended; each side's end of input is passed on as a
/// half-close, so request/response protocols finish cleanly.
fn forward(tcp: TcpStream, socket: &Path) -> io::Result<()> {
    let unix = match UnixStream::connect(socket) {
        Ok(u) => u,
        Err(e) => {
            tracing::warn!(
                "egress forwarder cannot reach the proxy at {}: {e}",
                socket.display()
            );
            let _ = tcp.shutdown(Shutdown::Both);
            return Err(e);
        }
    };
    let (tcp_r, unix_w) = (tcp.try_clone()?, unix.try_clone()?);
    let up = std::thread::Builder::new()
        .name("egress-up".into())
        .spawn(move || {
            let r = copy(tcp_r, &unix_w);
            let _ = unix_w.shutdown(Shutdown::Write);
            r
        })?;
    let down = copy(&unix, &tcp);
    let _ = tcp.shutdown(Shutdown::Write);
    let up = up
        .join()
        .unwrap_or_else(|_| Err(io::Error::other("egress thread panicked")));
    down.and(up).map(|_| ())
}

fn copy(mut from: impl Read, mut to: impl Write) -> io::Result<u64> {
    let mut buf = [0u8; 16 * 1024];
    let mut total = 0u64;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            // The peer resetting ends this direction like an EOF would.
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return Ok(total),
            Err(e) => return Err(e),
        };
        to.write_all(&buf[..n])?;
        total += n as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    /// A stand-in for the proxy: echoes each connection, prefixed.
    fn echo_socket(path: &Path) {
        let l = UnixListener::bind(path).unwrap();
        std::thread::spawn(move || {
            for c in l.incoming() {
                let Ok(mut c) = c else { continue };
                std::thread::spawn(move || {
                    let mut got = Vec::new();
                    c.read_to_end(&mut got).unwrap();
                    c.write_all(b"proxy saw: ").unwrap();
                    c.write_all(&got).unwrap();
                });
            }
        });
    }

    fn roundtrip(addr: SocketAddr, msg: &[u8]) -> io::Result<Vec<u8>> {
        let mut t = TcpStream::connect(addr)?;
        t.write_all(msg)?;
        t.shutdown(Shutdown::Write)?;
        let mut out = Vec::new();
        t.read_to_end(&mut out)?;
        Ok(out)
    }

    #[test]
    fn forwards_each_connection_with_half_close() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("llm.sock");
        echo_socket(&sock);
        let addr = start(&sock).unwrap();
        assert!(addr.ip().is_loopback(), "{addr}");
        // The echo answers only after our EOF reached it: half-close works.
        assert_eq!(roundtrip(addr, b"hello").unwrap(), b"proxy saw: hello");
        // Several at once, each its own proxy connection.
        let handles: Vec<_> = (0..8)
            .map(|i| {
                std::thread::spawn(move || roundtrip(addr, format!("n{i}").as_bytes()).unwrap())
            })
            .collect();
        for (i, h) in handles.into_iter().enumerate() {
            assert_eq!(h.join().unwrap(), format!("proxy saw: n{i}").as_bytes());
        }
        // Larger than one buffer.
        let big = vec![b'x'; 200_000];
        let out = roundtrip(addr, &big).unwrap();
        assert_eq!(out.len(), "proxy saw: ".len() + big.len());
    }

    #[test]
    fn a_taken_port_falls_back_to_an_ephemeral_one() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("llm.sock");
        echo_socket(&sock);
        // Hold 3128 (or find it held by someone else): either way taken.
        let _hold = TcpListener::bind(("127.0.0.1", PREFERRED_PORT));
        let a = start(&sock).unwrap();
        assert_ne!(a.port(), PREFERRED_PORT);
        assert_eq!(roundtrip(a, b"x").unwrap(), b"proxy saw: x");
    }

    #[test]
    fn a_missing_proxy_is_a_clear_error_and_an_outage_is_survived() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("llm.sock");
        let e = start(&sock).unwrap_err();
        assert!(
            e.to_string().contains("llm.sock") && e.to_string().contains("does not exist"),
            "{e}"
        );
        echo_socket(&sock);
        let addr = start(&sock).unwrap();
        // The proxy goes away: the connection is closed, nothing hangs.
        std::fs::remove_file(&sock).unwrap();
        let out = roundtrip(addr, b"lost");
        assert!(out.as_ref().map_or(true, |o| o.is_empty()), "{out:?}");
        // It comes back: the forwarder still serves.
        echo_socket(&sock);
        assert_eq!(roundtrip(addr, b"back").unwrap(), b"proxy saw: back");
    }
}
