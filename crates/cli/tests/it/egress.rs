//! Egress through the credential proxy (SPEC §8.2): `CONNECT host:port` to
//! an allowlisted host is spliced to a real TCP connection (TLS would run
//! end to end); anything else gets 403. The allowlist is the host's
//! `proxy.egress_allow` plus the agent group's `agent_configs.egress_allow`.
//! The last test does it from inside a real bwrap sandbox, where direct
//! network does not work.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crate::common::*;
use pinch_host::sandbox::{Bwrap, Choice, Mounts};

/// A TCP echo server on loopback; counts the connections it accepted.
fn echo_server() -> (u16, Arc<AtomicUsize>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let accepted = Arc::new(AtomicUsize::new(0));
    let a2 = accepted.clone();
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(c) = conn else { continue };
            a2.fetch_add(1, Ordering::SeqCst);
            std::thread::spawn(move || {
                let mut w = c.try_clone().unwrap();
                let mut r = c;
                let _ = std::io::copy(&mut r, &mut w);
            });
        }
    });
    (port, accepted)
}

/// Starts a host, makes it spawn a runner (which starts the session's
/// proxy), and returns the proxy socket and the session.
fn with_session_proxy<T>(
    cfg: pinch_host::HostConfig,
    f: impl FnOnce(&Path, &pinch_host::SessionInfo) -> T,
) -> T {
    let data = cfg.data_dir.clone();
    let rt = rt();
    let host = rt.block_on(pinch_host::start(cfg)).unwrap();
    let mut c = Client::connect(&host.cli_socket);
    assert_eq!(c.ask("spawn a runner").len(), 1);
    let s = rt.block_on(host.sessions()).remove(0);
    let sock = data.join("run/proxy").join(&s.id).join("llm.sock");
    assert!(sock.exists(), "the session's proxy socket");
    let out = f(&sock, &s);
    rt.block_on(host.shutdown()).unwrap();
    out
}

/// Sends `CONNECT target` plus `early` bytes; returns the response head
/// and the open stream.
fn connect(sock: &Path, target: &str, early: &[u8]) -> (String, BufReader<UnixStream>) {
    let mut u = UnixStream::connect(sock).unwrap();
    write!(u, "CONNECT {target} HTTP/1.1\r\nhost: {target}\r\n\r\n").unwrap();
    u.write_all(early).unwrap();
    let mut r = BufReader::new(u);
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).unwrap() == 0 || line == "\r\n" {
            break;
        }
        head.push_str(&line);
    }
    (head, r)
}

#[test]
fn an_allowed_connect_is_spliced_both_ways() {
    let (port, accepted) = echo_server();
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = host_config(tmp.path(), Choice::Process);
    cfg.proxy_egress_allow = vec![format!("127.0.0.1:{port}")];
    with_session_proxy(cfg, |sock, _| {
        // Bytes sent right behind the head (a TLS client hello would be)
        // must not be lost.
        let (head, mut r) = connect(sock, &format!("127.0.0.1:{port}"), b"early ");
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        r.get_mut().write_all(b"ping\n").unwrap();
        let mut got = vec![0u8; "early ping\n".len()];
        r.read_exact(&mut got).unwrap();
        assert_eq!(String::from_utf8_lossy(&got), "early ping\n");
        // The client closing its side ends the tunnel.
        r.get_mut().shutdown(std::net::Shutdown::Write).unwrap();
        let mut rest = Vec::new();
        r.read_to_end(&mut rest).unwrap();
        assert!(rest.is_empty(), "{rest:?}");
    });
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
}

#[test]
fn hosts_off_the_list_get_403_and_the_groups_list_adds_to_the_hosts() {
    let (host_port, _) = echo_server();
    let (group_port, group_accepted) = echo_server();
    let (denied_port, denied_accepted) = echo_server();
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = host_config(tmp.path(), Choice::Process);
    cfg.proxy_egress_allow = vec![format!("127.0.0.1:{host_port}")];
    // First boot creates the central DB; then the main group gets its own
    // entry, read when the next host starts the session's proxy.
    with_session_proxy(cfg.clone(), |sock, _| {
        let (head, _) = connect(sock, &format!("127.0.0.1:{group_port}"), b"");
        assert!(head.starts_with("HTTP/1.1 403"), "not yet allowed: {head}");
    });
    let db = pinch_proto::rusqlite::Connection::open(cfg.data_dir.join("pinch.db")).unwrap();
    let n = db
        .execute(
            "UPDATE agent_configs SET egress_allow = ?1 WHERE agent_group_id = 'main'",
            [format!("[\"127.0.0.1:{group_port}\"]")],
        )
        .unwrap();
    assert_eq!(n, 1);
    drop(db);
    with_session_proxy(cfg, |sock, _| {
        for port in [host_port, group_port] {
            let (head, mut r) = connect(sock, &format!("127.0.0.1:{port}"), b"hi\n");
            assert!(head.starts_with("HTTP/1.1 200"), "{port}: {head}");
            let mut line = String::new();
            r.read_line(&mut line).unwrap();
            assert_eq!(line, "hi\n");
        }
        for target in [
            format!("127.0.0.1:{denied_port}"),
            "evil.example.com:443".to_owned(),
            format!("localhost:{host_port}"),
        ] {
            let (head, mut r) = connect(sock, &target, b"");
            assert!(head.starts_with("HTTP/1.1 403"), "{target}: {head}");
            let mut body = String::new();
            r.read_to_string(&mut body).unwrap();
            assert!(
                body.contains(&target) && body.contains("egress_allow"),
                "the refusal names the host and the fix: {body}"
            );
        }
        for bad in ["no-port-here", "host\x1b[2J:443"] {
            let (head, _) = connect(sock, bad, b"");
            assert!(head.starts_with("HTTP/1.1 400"), "{bad:?}: {head}");
        }
    });
    assert_eq!(
        group_accepted.load(Ordering::SeqCst),
        1,
        "only the allowed attempt reached the group's host"
    );
    assert_eq!(
        denied_accepted.load(Ordering::SeqCst),
        0,
        "a refused CONNECT never opens a connection"
    );
}

#[test]
fn an_allowed_connect_works_from_inside_bwrap_while_direct_network_does_not() {
    if !bwrap_or_skip() {
        return;
    }
    let (port, accepted) = echo_server();
    let (denied_port, denied_accepted) = echo_server();
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = host_config(tmp.path(), Choice::Bwrap);
    cfg.proxy_egress_allow = vec![format!("127.0.0.1:{port}")];
    let data = cfg.data_dir.clone();
    with_session_proxy(cfg, |_, s| {
        let mounts = Mounts {
            in_dir: s.dir.join("in"),
            out_dir: s.dir.join("out"),
            inbox_dir: s.dir.join("inbox"),
            outbox_dir: s.dir.join("outbox"),
            agent_dir: data.join("groups/main"),
            global_dir: data.join("groups/global"),
            proxy_dir: Some(data.join("run/proxy").join(&s.id)),
            data_root: data.clone(),
            ..Default::default()
        };
        let bwrap = Bwrap::new(pinch_host::sandbox::find_bwrap().unwrap());
        let sh = |script: &str| -> String {
            let env = [("PATH".to_string(), "/usr/bin:/bin".to_string())];
            let out = bwrap
                .command_with(Path::new(PINCH), &mounts, &env, &["/bin/sh", "-c", script])
                .unwrap()
                .output()
                .unwrap();
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        };
        // perl (perl-base) is what a minimal /usr has that speaks AF_UNIX.
        let tunnel = |target: &str| sh(&PERL_CONNECT.replace("TARGET", target));
        let out = tunnel(&format!("127.0.0.1:{port}"));
        assert!(out.contains("HEAD:HTTP/1.1 200"), "{out}");
        assert!(out.contains("ECHO:ping-from-sandbox"), "{out}");
        let out = tunnel(&format!("127.0.0.1:{denied_port}"));
        assert!(out.contains("HEAD:HTTP/1.1 403"), "{out}");
        // Direct network: nothing, not even the allowed host on loopback.
        let out = sh(&format!("curl -s -m 3 -o /dev/null -w '%{{http_code}}' http://127.0.0.1:{port}/; echo \" exit=$?\""));
        assert!(
            out.contains("000") && !out.contains("exit=0"),
            "direct network worked: {out}"
        );
    });
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        1,
        "exactly the tunnelled connection reached the host"
    );
    assert_eq!(denied_accepted.load(Ordering::SeqCst), 0);
}

/// Opens a CONNECT tunnel through `/pinch/run/llm.sock`, prints the status
/// line, sends a line through the tunnel and prints what comes back.
const PERL_CONNECT: &str = r#"perl -MIO::Socket::UNIX -e '
my $s = IO::Socket::UNIX->new(Peer => "/pinch/run/llm.sock") or die "unix: $!\n";
syswrite($s, "CONNECT TARGET HTTP/1.1\r\nHost: TARGET\r\n\r\n");
my $head = "";
while ($head !~ /\r\n\r\n/) { my $n = sysread($s, my $b, 1); last unless $n; $head .= $b; }
my ($status) = split /\r\n/, $head;
print "HEAD:$status\n";
exit 0 unless $status =~ / 200 /;
syswrite($s, "ping-from-sandbox\n");
my $got = "";
while (length($got) < 18) { my $n = sysread($s, my $b, 64); last unless $n; $got .= $b; }
print "ECHO:$got";
'"#;

/// The runner's in-sandbox forwarder in front of the real proxy: curl with
/// `HTTPS_PROXY`-style settings (`-x`, tunnelling) reaches an allowlisted
/// HTTP server through TCP → forwarder → proxy socket → CONNECT → server,
/// and a host off the list fails with the proxy's 403.
#[test]
fn curl_through_the_runners_forwarder_and_the_proxy() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(mut c) = conn else { continue };
            let mut r = BufReader::new(c.try_clone().unwrap());
            let mut first = String::new();
            let _ = r.read_line(&mut first);
            loop {
                let mut line = String::new();
                if r.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
            }
            let body = format!("tunnelled: {}", first.trim());
            let _ = write!(
                c,
                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = host_config(tmp.path(), Choice::Process);
    cfg.proxy_egress_allow = vec![format!("127.0.0.1:{port}")];
    with_session_proxy(cfg, |sock, _| {
        let fwd = pinch_runner::egress::start(sock).unwrap();
        let curl = |url: &str| {
            let out = Command::new("curl")
                .args([
                    "-s",
                    "-S",
                    "-m",
                    "10",
                    "--proxytunnel",
                    "-x",
                    &format!("http://{fwd}"),
                    url,
                ])
                .env_remove("http_proxy")
                .env_remove("https_proxy")
                .env_remove("HTTPS_PROXY")
                .env_remove("ALL_PROXY")
                .output()
                .unwrap();
            (
                out.status.success(),
                format!(
                    "{}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                ),
            )
        };
        let (ok, out) = curl(&format!("http://127.0.0.1:{port}/hello"));
        assert!(ok && out == "tunnelled: GET /hello HTTP/1.1", "{out}");
        let (ok, out) = curl("http://example.invalid:443/");
        assert!(!ok && out.contains("403"), "refused by the proxy: {out}");
    });
}

/// TLS runs end to end through the tunnel: curl verifies the server's
/// certificate itself (the test CA), and the server sees no credential.
#[test]
fn tls_runs_end_to_end_through_a_connect_tunnel() {
    let (server_cfg, _, pem) = crate::common::https::self_signed(&["localhost"]);
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let heads: Arc<std::sync::Mutex<Vec<String>>> = Arc::default();
    let h2 = heads.clone();
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(tcp) = conn else { continue };
            let mut s = rustls::StreamOwned::new(
                rustls::ServerConnection::new(server_cfg.clone()).unwrap(),
                tcp,
            );
            let mut head = Vec::new();
            let mut b = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") {
                if s.read(&mut b).unwrap_or(0) == 0 {
                    break;
                }
                head.push(b[0]);
            }
            h2.lock()
                .unwrap()
                .push(String::from_utf8_lossy(&head).to_string());
            let body = "secret-free over tls";
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            s.conn.send_close_notify();
            let _ = s.flush();
        }
    });
    let tmp = tempfile::tempdir().unwrap();
    let ca = tmp.path().join("ca.pem");
    std::fs::write(&ca, pem).unwrap();
    let mut cfg = host_config(tmp.path(), Choice::Process);
    cfg.proxy_egress_allow = vec![format!("localhost:{port}")];
    cfg.proxy_upstreams = vec![pinch_host::proxy::Upstream::new(
        "openai",
        "http://127.0.0.1:9",
        Some((
            "authorization".into(),
            pinch_host::proxy::Secret::new("Bearer sk-never-in-a-tunnel"),
        )),
    )];
    with_session_proxy(cfg, |sock, _| {
        let fwd = pinch_runner::egress::start(sock).unwrap();
        let out = Command::new("curl")
            .args(["-s", "-S", "-m", "10", "--cacert"])
            .arg(&ca)
            .args([
                "-x",
                &format!("http://{fwd}"),
                &format!("https://localhost:{port}/v1/x"),
            ])
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success() && text == "secret-free over tls",
            "{text}"
        );
    });
    let head = heads.lock().unwrap().last().cloned().unwrap();
    assert!(head.starts_with("GET /v1/x HTTP/1.1"), "{head}");
    assert!(
        !head.to_ascii_lowercase().contains("authorization") && !head.contains("sk-never"),
        "no credential in a tunnel: {head}"
    );
}
