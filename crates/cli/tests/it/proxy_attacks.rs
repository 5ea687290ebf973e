//! Issue 14, break 4 and "also found": the credential proxy attacked the
//! way a hostile agent would, from a shell inside the session's real bwrap
//! sandbox (`Bwrap::command_with` with the runner's mounts; python3 from
//! the bound `/usr` talks to `/pinch/run/llm.sock`), against a real host
//! running in this process (so `/proc/self` is the host's) and a real
//! local HTTP server standing in for the model API.
//!
//! - a flood of thousands of idle connections: the host keeps a bounded
//!   number of descriptors, answers the rest with a reason, and still
//!   replies to a chat message while the flood is held open;
//! - many large bodies at once: the host's memory does not grow with them
//!   (bodies are streamed, connections capped);
//! - request smuggling (bare LF in a header or the target, duplicate
//!   `Content-Length`, folded lines, paths outside the allowlist…): each
//!   is refused with 400/403 and the upstream never sees it, nor the key
//!   anywhere but in the one header the proxy adds.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::common::*;
use pinch_host::proxy::{Secret, Upstream};
use pinch_host::sandbox::{Bwrap, Choice};

const KEY: &str = "sk-host-only-9b2e";

/// The tests measure this process (its fds, its memory): one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// What the fake model API saw: each request's head, and its body when
/// small (large bodies are counted and dropped, never held).
#[derive(Clone, Debug)]
struct Seen {
    head: String,
    body: Vec<u8>,
    body_len: u64,
}

/// A fake OpenAI-compatible API on loopback: reads each request (body
/// streamed through a fixed buffer), records it, answers a small JSON.
fn fake_upstream() -> (u16, Arc<Mutex<Vec<Seen>>>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let s2 = seen.clone();
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(mut c) = conn else { continue };
            let seen = s2.clone();
            std::thread::spawn(move || {
                let mut r = BufReader::new(c.try_clone().unwrap());
                let (mut head, mut len) = (String::new(), 0u64);
                loop {
                    // Lines split on LF alone, as a lenient server would.
                    let mut line = String::new();
                    if r.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" || line == "\n" {
                        break;
                    }
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        len = v.trim().parse().unwrap_or(0);
                    }
                    head.push_str(&line);
                }
                let (mut body, mut got) = (Vec::new(), 0u64);
                let mut buf = vec![0u8; 64 * 1024];
                while got < len {
                    let want = buf.len().min((len - got) as usize);
                    let Ok(n) = r.read(&mut buf[..want]) else {
                        break;
                    };
                    if n == 0 {
                        break;
                    }
                    if body.len() < 64 * 1024 {
                        body.extend_from_slice(&buf[..n]);
                    }
                    got += n as u64;
                }
                seen.lock().unwrap().push(Seen {
                    head,
                    body,
                    body_len: got,
                });
                let reply = "{\"choices\":[{\"message\":{\"content\":\"ok from the fake\"}}]}";
                let _ = write!(c, "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{reply}", reply.len());
            });
        }
    });
    (port, seen)
}

/// A host with the `openai` route to `port`, one session with a runner,
/// and a way to run commands inside that session's sandbox.
struct Scene {
    rt: tokio::runtime::Runtime,
    host: Option<pinch_host::HostHandle>,
    client: Client,
    socket: PathBuf,
    bwrap: Bwrap,
    mounts: pinch_host::sandbox::Mounts,
    _tmp: tempfile::TempDir,
}

impl Scene {
    fn new(port: u16, tune: impl FnOnce(&mut pinch_host::HostConfig)) -> Scene {
        let tmp = tempfile::tempdir().unwrap();
        let mut cfg = host_config(tmp.path(), Choice::Bwrap);
        cfg.proxy_upstreams = vec![Upstream::new(
            "openai",
            format!("http://127.0.0.1:{port}/v1"),
            Some(("authorization".into(), Secret::new(format!("Bearer {KEY}")))),
        )];
        tune(&mut cfg);
        let rt = rt();
        let host = rt.block_on(pinch_host::start(cfg)).unwrap();
        let mut client = Client::connect(&host.cli_socket);
        assert_eq!(client.ask("spawn a runner").len(), 1);
        let s = rt.block_on(host.sessions()).remove(0);
        let data = tmp.path().join("data");
        let mounts = session_mounts(&data, &s);
        let socket = data.join("run/proxy").join(&s.id).join("llm.sock");
        assert!(socket.exists(), "the session's proxy socket");
        let bwrap = Bwrap::new(pinch_host::sandbox::find_bwrap().unwrap());
        Scene {
            rt,
            host: Some(host),
            client,
            socket,
            bwrap,
            mounts,
            _tmp: tmp,
        }
    }

    /// Starts `python3 -c script args…` inside the session's sandbox.
    fn python(&self, script: &str, args: &[&str]) -> Child {
        let env = [("PATH".to_string(), "/usr/bin:/bin".to_string())];
        let mut argv = vec!["/usr/bin/python3", "-c", script];
        argv.extend_from_slice(args);
        let mut cmd = self
            .bwrap
            .command_with(Path::new(PINCH), &self.mounts, &env, &argv)
            .unwrap();
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd.spawn().unwrap()
    }

    fn shutdown(mut self) {
        let host = self.host.take().unwrap();
        self.rt.block_on(host.shutdown()).unwrap();
    }
}

/// One request from this process (a legitimate client) on the socket;
/// returns the whole response.
fn legit_request(socket: &Path) -> String {
    let mut u = UnixStream::connect(socket).unwrap();
    u.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    // A refused connection is answered and closed at once: the write may
    // then fail, the answer is still there to read.
    let _ = write!(u, "POST /openai/chat/completions HTTP/1.1\r\nhost: proxy\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{{}}");
    let mut out = String::new();
    let _ = u.read_to_string(&mut out);
    out
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

fn status_kb(field: &str) -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// Opens `n` connections and holds them, sending nothing; waits until the
/// host has answered every one it will not keep (or 30 s), prints a JSON
/// summary, then holds everything until stdin closes.
const FLOOD: &str = r#"
import json, resource, select, socket, sys, time
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
n, keep = int(sys.argv[1]), int(sys.argv[2])
held, failed = [], None
for i in range(n):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(5)
    try:
        s.connect('/pinch/run/llm.sock')
    except OSError as e:
        failed = str(e)
        break
    held.append(s)
p, byfd = select.poll(), {}
for s in held:
    p.register(s, select.POLLIN)
    byfd[s.fileno()] = s
answers, still_open, deadline = {}, len(held), time.time() + 30
while still_open > keep and time.time() < deadline:
    for fd, _ in p.poll(200):
        p.unregister(fd)
        still_open -= 1
        try:
            data = byfd[fd].recv(4096).decode(errors='replace')
        except OSError as e:
            data = 'error ' + str(e)
        key = data.split('\r\n')[0] + ' | ' + data.split('\r\n\r\n')[-1].strip()
        answers[key] = answers.get(key, 0) + 1
print(json.dumps({'held': len(held), 'failed': failed, 'open': still_open, 'answers': answers}), flush=True)
sys.stdin.read()
"#;

/// (a) Thousands of idle connections from inside the sandbox: the host's
/// descriptors stay bounded, the connections it cannot keep are answered
/// 503 with the reason, a chat message is answered while the flood is
/// held, and the proxy serves again once it ends.
#[test]
fn an_idle_connection_flood_leaves_the_host_responsive_and_its_fds_bounded() {
    let _serial = serial();
    if !bwrap_or_skip() {
        return;
    }
    let (port, seen) = fake_upstream();
    let mut scene = Scene::new(port, |_| {});
    let per_session = 32;
    // The legitimate path works before the flood.
    assert!(legit_request(&scene.socket).starts_with("HTTP/1.1 200"));
    let baseline = open_fds();

    let n = 3000;
    let mut flood = scene.python(FLOOD, &[&n.to_string(), &per_session.to_string()]);
    let mut line = String::new();
    BufReader::new(flood.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    let report: serde_json::Value = serde_json::from_str(line.trim()).unwrap_or_else(|e| {
        let mut err = String::new();
        let _ = flood.stderr.as_mut().unwrap().read_to_string(&mut err);
        panic!("flood report {line:?}: {e}; {err}")
    });
    eprintln!("flood: {report}");
    let during = open_fds();
    assert_eq!(
        report["held"], n,
        "every connect went through (the backlog never blocked): {report}"
    );
    assert!(
        report["open"].as_u64().unwrap() <= per_session,
        "the host keeps at most the per-session cap open: {report}"
    );
    let answers = report["answers"].as_object().unwrap();
    let refused: u64 = answers
        .iter()
        .filter(|(k, _)| k.starts_with("HTTP/1.1 503") && k.contains("per-session limit"))
        .map(|(_, v)| v.as_u64().unwrap())
        .sum();
    assert!(
        refused >= n - per_session,
        "the rest were told why: {report}"
    );
    assert!(
        during <= baseline + per_session as usize + 16,
        "host fds grew from {baseline} to {during} under the flood"
    );

    // The host still answers a chat message while the flood is held.
    let reply = scene.client.ask("are you still there?");
    assert_eq!(reply.len(), 1, "{reply:?}");
    // A connection beyond the cap is told why, not left hanging.
    let out = legit_request(&scene.socket);
    assert!(
        out.starts_with("HTTP/1.1 503") && out.contains("max_connections_per_session"),
        "{out}"
    );
    assert!(open_fds() <= baseline + per_session as usize + 16);

    // The flood ends: the slots come back.
    drop(flood.stdin.take());
    flood.wait().unwrap();
    wait_for("the proxy to serve again", Duration::from_secs(30), || {
        legit_request(&scene.socket).starts_with("HTTP/1.1 200")
    });
    assert!(
        seen.lock()
            .unwrap()
            .iter()
            .all(|s| s.head.starts_with("POST /v1/chat/completions ")),
        "only legitimate requests went upstream"
    );
    scene.shutdown();
}

/// Sends `n` requests at once, each with a `size`-byte body (sent in 1 MiB
/// pieces of one shared buffer); prints a JSON count of the answers.
const BIG_BODIES: &str = r#"
import json, socket, sys, threading
n, size = int(sys.argv[1]), int(sys.argv[2])
piece = b'x' * (1 << 20)
answers, lock = {}, threading.Lock()
def one():
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(120)
    status = 'none'
    try:
        s.connect('/pinch/run/llm.sock')
        s.sendall(b'POST /openai/chat/completions HTTP/1.1\r\nhost: p\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n' % size)
        left = size
        while left > 0:
            k = min(left, len(piece))
            s.sendall(piece[:k])
            left -= k
    except OSError as e:
        status = 'send: ' + type(e).__name__
    try:
        data = b''
        while True:
            d = s.recv(65536)
            if not d:
                break
            data += d
        status = data.split(b'\r\n')[0].decode(errors='replace') or status
    except OSError as e:
        status = status + ' recv: ' + type(e).__name__
    with lock:
        answers[status] = answers.get(status, 0) + 1
ts = [threading.Thread(target=one) for _ in range(n)]
for t in ts: t.start()
for t in ts: t.join()
print(json.dumps(answers), flush=True)
"#;

/// (b) Many large bodies at once from inside the sandbox: the host's
/// resident memory (this process, whose peak is reset first) grows by
/// far less than the bodies' total; bodies are streamed to the upstream.
#[test]
fn many_large_bodies_do_not_grow_the_host() {
    let _serial = serial();
    if !bwrap_or_skip() {
        return;
    }
    let (port, seen) = fake_upstream();
    let scene = Scene::new(port, |_| {});
    let (n, size) = (48u64, 16u64 * 1024 * 1024);
    // Reset the peak (VmHWM) to the current RSS, then attack.
    std::fs::write("/proc/self/clear_refs", "5").unwrap();
    let before = status_kb("VmRSS:");
    let child = scene.python(BIG_BODIES, &[&n.to_string(), &size.to_string()]);
    let out = child.wait_with_output().unwrap();
    let peak = status_kb("VmHWM:");
    let report = String::from_utf8_lossy(&out.stdout).to_string();
    eprintln!(
        "bodies: {report} {}; host RSS {before} kB, peak {peak} kB",
        String::from_utf8_lossy(&out.stderr)
    );
    let answers: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(report.trim()).unwrap();
    let ok = answers
        .get("HTTP/1.1 200 OK")
        .and_then(|v| v.as_u64())
        .unwrap_or(0);
    assert!(ok >= 1, "bodies within the caps go through: {report}");
    let upstream: Vec<u64> = seen.lock().unwrap().iter().map(|s| s.body_len).collect();
    assert!(
        upstream.iter().filter(|l| **l == size).count() as u64 >= ok,
        "each accepted body reached the upstream whole: {upstream:?}"
    );
    // 48 x 16 MiB = 768 MiB of bodies; a legitimate request is a few MiB.
    let grew_mib = peak.saturating_sub(before) / 1024;
    assert!(
        grew_mib < 128,
        "the host grew by {grew_mib} MiB while {n} bodies of {} MiB were sent",
        size >> 20
    );
    scene.shutdown();
}

/// Sends each raw request (hex-encoded in argv) on its own connection and
/// prints, per request, the response's status line and body as JSON.
const RAW: &str = r#"
import json, socket, sys
out = []
for hexreq in sys.argv[1:]:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(15)
    data = b''
    try:
        s.connect('/pinch/run/llm.sock')
        s.sendall(bytes.fromhex(hexreq))
        while True:
            d = s.recv(65536)
            if not d:
                break
            data += d
    except OSError as e:
        data += ('\r\n\r\n<' + type(e).__name__ + '>').encode()
    text = data.decode(errors='replace')
    out.append(text)
print(json.dumps(out), flush=True)
"#;

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// (c) Smuggling and paths outside the allowlist, sent raw from inside the
/// sandbox: each is refused (400, or 403 for a path), the upstream never
/// sees any of them, and a legitimate request carries the key once, only
/// in the header the proxy adds, with nothing pipelined after its body.
#[test]
fn smuggled_requests_and_unlisted_paths_are_refused() {
    let _serial = serial();
    if !bwrap_or_skip() {
        return;
    }
    let (port, seen) = fake_upstream();
    let scene = Scene::new(port, |_| {});
    let ok = "POST /openai/chat/completions HTTP/1.1\r\nHost: p\r\n";
    let cases: Vec<(&str, String, u16)> = vec![
        ("bare LF in a header value", format!("{ok}X-Note: a\nAuthorization: Bearer smuggled\r\nContent-Length: 2\r\n\r\n{{}}"), 400),
        ("bare LF in the target", "POST /openai/chat/completions\nAuthorization: x HTTP/1.1\r\nHost: p\r\nContent-Length: 2\r\n\r\n{}".into(), 400),
        ("bare LF line ends", "POST /openai/chat/completions HTTP/1.1\nHost: p\nContent-Length: 2\n\n{}".into(), 400),
        ("bare CR in a header value", format!("{ok}X-Note: a\rAuthorization: Bearer smuggled\r\nContent-Length: 2\r\n\r\n{{}}"), 400),
        ("two equal Content-Lengths", format!("{ok}Content-Length: 2\r\nContent-Length: 2\r\n\r\n{{}}"), 400),
        ("two different Content-Lengths", format!("{ok}Content-Length: 2\r\nContent-Length: 60\r\n\r\n{{}}GET /openai/models HTTP/1.1\r\nHost: p\r\n\r\n"), 400),
        ("Content-Length with Transfer-Encoding", format!("{ok}Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"), 400),
        ("a folded header", format!("{ok}X-Note: a\r\n Authorization: Bearer folded\r\nContent-Length: 2\r\n\r\n{{}}"), 400),
        ("absolute-form target", format!("GET http://127.0.0.1:{port}/v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"), 400),
        ("a path outside the allowlist", "POST /openai/files HTTP/1.1\r\nHost: p\r\nContent-Length: 2\r\n\r\n{}".into(), 403),
        ("dot segments", "POST /openai/chat/completions/../../files HTTP/1.1\r\nHost: p\r\nContent-Length: 2\r\n\r\n{}".into(), 403),
        ("an unknown route", "GET /elsewhere/steal HTTP/1.1\r\nHost: p\r\n\r\n".into(), 403),
    ];
    let mut args: Vec<String> = cases
        .iter()
        .map(|(_, req, _)| hex(req.as_bytes()))
        .collect();
    // The legitimate request: a client credential to strip, a second
    // request pipelined after its body (never forwarded).
    let legit = format!("{ok}Authorization: Bearer sandbox-fake\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{{}}GET /openai/models HTTP/1.1\r\nHost: p\r\n\r\n");
    args.push(hex(legit.as_bytes()));
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = scene.python(RAW, &argv).wait_with_output().unwrap();
    let answers: Vec<String> = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    for ((what, _, code), answer) in cases.iter().zip(&answers) {
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {code} ")),
            "{what}: {answer:?}"
        );
        assert!(
            answer.contains("pinch proxy: "),
            "{what}: the reason is given: {answer:?}"
        );
        assert!(!answer.contains(KEY), "{what}: {answer:?}");
    }
    let last = answers.last().unwrap();
    assert!(
        last.starts_with("HTTP/1.1 200") && last.contains("ok from the fake"),
        "{last:?}"
    );
    let seen = seen.lock().unwrap().clone();
    assert_eq!(
        seen.len(),
        1,
        "only the legitimate request reached the upstream: {seen:#?}"
    );
    let req = &seen[0];
    assert!(
        req.head
            .starts_with("POST /v1/chat/completions HTTP/1.1\r\n"),
        "{}",
        req.head
    );
    assert_eq!(req.head.matches(KEY).count(), 1, "{}", req.head);
    assert!(
        req.head
            .contains(&format!("\r\nauthorization: Bearer {KEY}\r\n")),
        "{}",
        req.head
    );
    assert!(
        !req.head.contains("sandbox-fake") && !req.head.to_ascii_lowercase().contains("smuggled"),
        "{}",
        req.head
    );
    assert_eq!(
        req.body, b"{}",
        "exactly the declared body, nothing pipelined after it"
    );
    scene.shutdown();
}
