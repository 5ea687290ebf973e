//! Shared helpers for the integration tests: real `pinch` binary, real
//! SQLite files in temp dirs, real sandboxes.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use pinch_channels::cli_socket::{ClientMsg, ServerMsg};
use pinch_host::sandbox::Choice;
use pinch_host::HostConfig;

pub mod fake_api;
pub mod https;
pub mod mail;
pub mod matrix;
pub mod platform;
pub mod signal;
pub mod suite;

pub const PINCH: &str = env!("CARGO_BIN_EXE_pinch");

/// bwrap is required unless PINCH_TEST_NO_BWRAP=1 (then bwrap tests are
/// skipped with a printed note): a missing sandbox must fail CI, not pass it.
pub fn bwrap_or_skip() -> bool {
    if pinch_host::sandbox::select(Choice::Bwrap).is_ok() {
        return true;
    }
    if std::env::var("PINCH_TEST_NO_BWRAP").as_deref() == Ok("1") {
        eprintln!("note: bubblewrap unavailable and PINCH_TEST_NO_BWRAP=1: skipping");
        return false;
    }
    panic!("bubblewrap is not installed or does not work: apt-get install -y bubblewrap (or set PINCH_TEST_NO_BWRAP=1)");
}

/// bwrap when it works here, else the process backend: for tests of
/// routing, scheduling and messaging, where the sandbox is not what is
/// tested (sandbox tests use [`bwrap_or_skip`], which fails CI without it).
pub fn any_sandbox() -> Choice {
    // scripts/test runs some suites again with PINCH_TEST_SANDBOX=docker.
    if std::env::var("PINCH_TEST_SANDBOX").as_deref() == Ok("docker") {
        assert!(
            docker_or_skip() || std::env::var("PINCH_TEST_REQUIRE_DOCKER").as_deref() != Ok("1"),
            "docker required"
        );
        if docker_or_skip() {
            return Choice::Docker;
        }
    }
    if pinch_host::sandbox::select(Choice::Bwrap).is_ok() {
        Choice::Bwrap
    } else {
        Choice::Process
    }
}

pub fn host_config(dir: &Path, sandbox: Choice) -> HostConfig {
    let mut c = HostConfig::new(dir.join("data"));
    c.sandbox = sandbox;
    c.runner_exe = PathBuf::from(PINCH);
    c.login = "tester".into();
    c.runner.idle_exit_ms = 60_000;
    c.runner_log = "debug".into();
    c
}

pub fn with_script(mut c: HostConfig, script: &str) -> HostConfig {
    c.provider.script = Some(script.to_owned());
    c
}

pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// A blocking CLI-socket client.
pub struct Client {
    r: BufReader<UnixStream>,
    pub w: UnixStream,
    pub hello: ServerMsg,
    seen: Vec<ServerMsg>,
    /// Every id the host reported settled on this connection.
    pub settled: std::collections::HashSet<String>,
    /// The live view's frames (`Working`, `Draft`, `Idle`; decision 0048),
    /// set aside by `recv` so tests of replies read only replies.
    pub live: Vec<ServerMsg>,
}

/// Whether a frame is the live view's (advisory, never a reply).
pub fn is_live(m: &ServerMsg) -> bool {
    matches!(
        m,
        ServerMsg::Working { .. } | ServerMsg::Draft { .. } | ServerMsg::Idle { .. }
    )
}

impl Client {
    pub fn connect(path: &Path) -> Client {
        let deadline = Instant::now() + Duration::from_secs(10);
        let s = loop {
            match UnixStream::connect(path) {
                Ok(s) => break s,
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => panic!("connect {}: {e}", path.display()),
            }
        };
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let w = s.try_clone().unwrap();
        let mut c = Client {
            r: BufReader::new(s),
            w,
            hello: ServerMsg::Superseded,
            seen: Vec::new(),
            settled: Default::default(),
            live: Vec::new(),
        };
        c.hello = c.recv().expect("hello");
        c
    }

    pub fn send(&mut self, m: &ClientMsg) {
        let mut s = serde_json::to_string(m).unwrap();
        s.push('\n');
        self.w.write_all(s.as_bytes()).unwrap();
    }

    pub fn send_text(&mut self, text: &str, cid: &str) {
        self.send(&ClientMsg::Message {
            text: text.into(),
            client_id: Some(cid.into()),
            key: None,
        });
    }

    /// The next frame that is not the live view's (those go to `live`).
    pub fn recv(&mut self) -> Option<ServerMsg> {
        loop {
            match self.recv_any()? {
                m if is_live(&m) => self.live.push(m),
                m => return Some(m),
            }
        }
    }

    /// The next frame of any kind.
    pub fn recv_any(&mut self) -> Option<ServerMsg> {
        let mut line = String::new();
        match self.r.read_line(&mut line) {
            Ok(0) => None,
            Ok(_) => {
                Some(serde_json::from_str(line.trim()).unwrap_or_else(|e| panic!("{e}: {line:?}")))
            }
            Err(e) => panic!("reading from host: {e}"),
        }
    }

    /// Sends and waits for `accepted`; returns the platform message id.
    pub fn say(&mut self, text: &str, cid: &str) -> String {
        self.send_text(text, cid);
        loop {
            match self.recv().expect("host closed") {
                ServerMsg::Accepted {
                    client_id: Some(c),
                    id,
                    routed,
                    ..
                } if c == cid => {
                    assert!(routed > 0, "message was not routed");
                    return id;
                }
                ServerMsg::Rejected {
                    client_id: Some(c),
                    error,
                } if c == cid => panic!("rejected: {error}"),
                other => self.stash(other),
            }
        }
    }

    /// The next line if one arrives within `d` (`None`: none did, or the
    /// host closed). The usual 30 s timeout applies again afterwards.
    pub fn recv_within(&mut self, d: Duration) -> Option<ServerMsg> {
        let until = Instant::now() + d;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            match self.recv_any_within(left.max(Duration::from_millis(1)))? {
                m if is_live(&m) => self.live.push(m),
                m => return Some(m),
            }
        }
    }

    /// The next frame of any kind within `d`.
    pub fn recv_any_within(&mut self, d: Duration) -> Option<ServerMsg> {
        self.w.set_read_timeout(Some(d)).unwrap();
        let mut line = String::new();
        let got = self.r.read_line(&mut line);
        self.w
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        match got {
            Ok(0) => None,
            Ok(_) => {
                Some(serde_json::from_str(line.trim()).unwrap_or_else(|e| panic!("{e}: {line:?}")))
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                None
            }
            Err(e) => panic!("reading from host: {e}"),
        }
    }

    /// What `say` and the like set aside while waiting (and forgets it).
    pub fn take_seen(&mut self) -> Vec<ServerMsg> {
        std::mem::take(&mut self.seen)
    }

    fn stash(&mut self, m: ServerMsg) {
        if let ServerMsg::Message { id, .. } = &m {
            self.send(&ClientMsg::Ack { id: id.clone() });
        }
        self.seen.push(m);
    }

    /// Reads until `id` is settled; returns the reply texts received meanwhile
    /// (acked), including any stashed earlier. Anything else read (notices,
    /// and what was stashed after the settle) is kept for the next reader.
    pub fn until_settled(&mut self, id: &str) -> Vec<String> {
        let mut texts: Vec<String> = Vec::new();
        let mut pending: std::collections::VecDeque<ServerMsg> =
            std::mem::take(&mut self.seen).into();
        if pending.is_empty() && self.settled.contains(id) {
            return texts;
        }
        let mut kept = Vec::new();
        loop {
            let m = match pending.pop_front() {
                Some(m) => m,
                None => self.recv().expect("host closed while waiting"),
            };
            match m {
                ServerMsg::Message { id: oid, text, .. } => {
                    texts.push(text);
                    self.send(&ClientMsg::Ack { id: oid });
                }
                ServerMsg::Settled { ids, .. } => self.settled.extend(ids),
                other => kept.push(other),
            }
            if self.settled.contains(id) {
                kept.extend(pending);
                self.seen = kept;
                return texts;
            }
        }
    }

    /// One round: send, then the replies until settled.
    pub fn ask(&mut self, text: &str) -> Vec<String> {
        let id = self.say(text, "q");
        self.until_settled(&id)
    }

    /// A barrier: a message the host refuses at once without storing it
    /// (its key is invalid), so it triggers nothing. Returns everything the
    /// host sent on this connection before the refusal — including what
    /// was set aside earlier — acking messages. "Told once" is counted on
    /// this, not by stopping at the first notice: a second one sent before
    /// the barrier is seen.
    pub fn until_barrier(&mut self) -> Vec<ServerMsg> {
        let cid = "barrier";
        self.send(&ClientMsg::Message {
            text: "a barrier".into(),
            client_id: Some(cid.into()),
            key: Some("not a valid key!".into()),
        });
        let mut got = std::mem::take(&mut self.seen);
        loop {
            match self.recv().expect("host closed before the barrier") {
                ServerMsg::Rejected {
                    client_id: Some(c),
                    error,
                } if c == cid => {
                    assert!(error.contains("message key"), "{error}");
                    return got;
                }
                m => {
                    match &m {
                        ServerMsg::Message { id, .. } => {
                            self.send(&ClientMsg::Ack { id: id.clone() })
                        }
                        ServerMsg::Settled { ids, .. } => self.settled.extend(ids.iter().cloned()),
                        _ => {}
                    }
                    got.push(m);
                }
            }
        }
    }

    /// [`Client::until_settled`], then on to a [`Client::until_barrier`]: the
    /// replies to `id` and any that came after it was settled (a repeat).
    pub fn settled_then_barrier(&mut self, id: &str) -> Vec<String> {
        let mut texts = self.until_settled(id);
        texts.extend(message_texts(&self.until_barrier()));
        texts
    }
}

/// The texts of the messages among `msgs`.
pub fn message_texts(msgs: &[ServerMsg]) -> Vec<String> {
    msgs.iter()
        .filter_map(|m| match m {
            ServerMsg::Message { text, .. } => Some(text.clone()),
            _ => None,
        })
        .collect()
}

/// The texts of the notices among `msgs`.
pub fn notice_texts(msgs: &[ServerMsg]) -> Vec<String> {
    msgs.iter()
        .filter_map(|m| match m {
            ServerMsg::Notice { text } => Some(text.clone()),
            _ => None,
        })
        .collect()
}

pub fn inbound(dir: &Path) -> pinch_proto::rusqlite::Connection {
    pinch_proto::open::open_reader(&dir.join("in/inbound.db"), Duration::from_secs(5)).unwrap()
}

/// The host's delivery ledger of the session folder `dir`
/// (`delivered.db`, issue 15), read-only; waits for the file to exist.
pub fn ledger_db(dir: &Path) -> pinch_proto::rusqlite::Connection {
    let p = dir.join("delivered.db");
    let open = || {
        let c = pinch_proto::rusqlite::Connection::open_with_flags(
            &p,
            pinch_proto::rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )
        .ok()?;
        c.busy_timeout(Duration::from_secs(5)).ok()?;
        Some(c)
    };
    // The file appears a moment before its table (the host creates both).
    wait_for(
        "the delivery ledger and its table",
        Duration::from_secs(10),
        || {
            open().is_some_and(|c| {
                c.query_row(
                    "SELECT 1 FROM sqlite_master WHERE name = 'delivered'",
                    [],
                    |_| Ok(()),
                )
                .is_ok()
            })
        },
    );
    open().expect("the ledger opens")
}

pub fn outbound(dir: &Path) -> pinch_proto::rusqlite::Connection {
    pinch_proto::open::open_reader(&dir.join("out/outbound.db"), Duration::from_secs(5)).unwrap()
}

pub fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Mounts a tmpfs (needs root; CI runs as root). Without root the test
/// fails unless PINCH_TEST_NO_ROOT=1 (then it is skipped with a note).
pub fn mount_tmpfs(at: &Path, opts: &str) -> bool {
    std::fs::create_dir_all(at).unwrap();
    let ok = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", opts, "tmpfs"])
        .arg(at)
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !ok {
        assert!(
            unsafe { libc::geteuid() } != 0,
            "running as root but mount failed"
        );
        assert!(
            std::env::var("PINCH_TEST_NO_ROOT").as_deref() == Ok("1"),
            "this test mounts a tmpfs and needs root (or set PINCH_TEST_NO_ROOT=1 to skip it)"
        );
        eprintln!("note: not root and PINCH_TEST_NO_ROOT=1: skipping");
    }
    ok
}

/// Every file below `p`.
pub fn walk(p: &Path) -> Vec<PathBuf> {
    let mut v = Vec::new();
    if let Ok(rd) = std::fs::read_dir(p) {
        for e in rd.flatten() {
            v.push(e.path());
            if e.path().is_dir() {
                v.extend(walk(&e.path()));
            }
        }
    }
    v
}

/// POSTs `body` to `path` on a session's proxy socket `sock`, as the
/// sandbox can: the whole answer (status line, head and body).
pub fn post_to_proxy(sock: &Path, path: &str, body: &str) -> String {
    use std::io::{Read, Write};
    let mut u = std::os::unix::net::UnixStream::connect(sock).unwrap();
    write!(
        u,
        "POST {path} HTTP/1.1\r\nhost: p\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut answer = String::new();
    u.read_to_string(&mut answer).unwrap();
    answer
}

/// The files below `dir` that contain `secret` (a key that must never have
/// left the host's memory: in runner.json, a session DB, a log).
pub fn files_holding(dir: &Path, secret: &str) -> Vec<PathBuf> {
    walk(dir)
        .into_iter()
        .filter(|f| {
            std::fs::read(f).is_ok_and(|b| b.windows(secret.len()).any(|w| w == secret.as_bytes()))
        })
        .collect()
}

/// A scripted model that asks "Which colour?" (Red = `r`, Blue = `b`) when a
/// message mentions "colour", and reports the tool's result after it.
/// `{timeout}` is the question's timeout in seconds.
pub fn colour_question_script(timeout_s: u64) -> String {
    format!(
        r#"
[[rule]]
contains = "colour"
tool = "ask_user_question"
args = {{ title = "Paint", question = "Which colour?", options = [{{ label = "Red", value = "r" }}, {{ label = "Blue", value = "b" }}], timeout_s = {timeout_s} }}

[[rule]]
after_tool = "*"
reply = "tool said: {{tool_result}}"
"#
    )
}

impl Client {
    /// Acks messages until one arrives with buttons; returns its text and
    /// buttons.
    pub fn until_buttons(&mut self) -> (String, Vec<pinch_channels::cli_socket::WireButton>) {
        loop {
            match self
                .recv()
                .expect("host closed while waiting for a question")
            {
                ServerMsg::Message {
                    id, text, buttons, ..
                } => {
                    self.send(&ClientMsg::Ack { id });
                    if !buttons.is_empty() {
                        return (text, buttons);
                    }
                }
                ServerMsg::Settled { ids, .. } => self.settled.extend(ids),
                _ => {}
            }
        }
    }
}

/// Runs `pinch chat ARGS` with `input` on stdin, isolated from the caller's
/// model keys; returns its output.
pub fn pinch_chat(args: &[&str], envs: &[(&str, &Path)], input: &str) -> std::process::Output {
    pinch_chat_bytes(args, envs, input.as_bytes())
}

/// [`pinch_chat`] with any bytes on stdin (e.g. invalid UTF-8).
pub fn pinch_chat_bytes(
    args: &[&str],
    envs: &[(&str, &Path)],
    input: &[u8],
) -> std::process::Output {
    use std::process::{Command, Stdio};
    let mut c = Command::new(PINCH);
    c.arg("chat").args(args);
    for (k, v) in envs {
        c.env(k, v);
    }
    let mut child = c
        .env_remove("ANTHROPIC_API_KEY")
        .env_remove("OPENAI_API_KEY")
        .env_remove("OPENAI_BASE_URL")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}

/// A daemon killed when the test ends, even by a panic.
pub struct Daemon(pub std::process::Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl std::ops::Deref for Daemon {
    type Target = std::process::Child;
    fn deref(&self) -> &std::process::Child {
        &self.0
    }
}

impl std::ops::DerefMut for Daemon {
    fn deref_mut(&mut self) -> &mut std::process::Child {
        &mut self.0
    }
}

pub fn start_daemon(data: &std::path::Path, cfg: &std::path::Path, sandbox: &str) -> Daemon {
    Daemon(
        std::process::Command::new(PINCH)
            .args(["host", "--data-dir"])
            .arg(data)
            .arg("--config")
            .arg(cfg)
            .args(["--sandbox", sandbox, "--provider", "scripted"])
            .env("PINCH_LOG", "debug")
            .env_remove("ANTHROPIC_API_KEY")
            .env_remove("OPENAI_API_KEY")
            .env_remove("OPENAI_BASE_URL")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(
                std::fs::File::create(data.with_extension(format!("log-{}", std::process::id())))
                    .unwrap(),
            )
            .spawn()
            .unwrap(),
    )
}

/// Whether a Docker daemon answers here. With PINCH_TEST_REQUIRE_DOCKER=1
/// (CI, which starts dockerd) its absence fails the test instead.
pub fn docker_or_skip() -> bool {
    if pinch_host::docker::find_docker().is_some_and(|d| pinch_host::docker::probe(&d).is_ok()) {
        return true;
    }
    if std::env::var("PINCH_TEST_REQUIRE_DOCKER").as_deref() == Ok("1") {
        panic!("PINCH_TEST_REQUIRE_DOCKER=1 but no Docker daemon answers: start dockerd");
    }
    eprintln!("note: no Docker daemon here: skipping a docker test");
    false
}

/// The mounts of a session's runner sandbox (what a shell the agent runs
/// sees), for attacks run from inside a real sandbox with
/// `Bwrap::command_with`.
pub fn session_mounts(data: &Path, s: &pinch_host::SessionInfo) -> pinch_host::sandbox::Mounts {
    pinch_host::sandbox::Mounts {
        in_dir: s.dir.join("in"),
        out_dir: s.dir.join("out"),
        inbox_dir: s.dir.join("inbox"),
        outbox_dir: s.dir.join("outbox"),
        agent_dir: data.join("groups").join(&s.agent_group_id),
        global_dir: data.join("groups/global"),
        proxy_dir: Some(data.join("run/proxy").join(&s.id)),
        data_root: data.to_owned(),
        ..Default::default()
    }
}

/// A web-chat WebSocket of `user`, authenticated as an API client would be
/// (`Authorization: Bearer <token>`; the token is never in a URL).
pub async fn web_socket(
    addr: std::net::SocketAddr,
    token: &str,
    user: &str,
) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut req = format!("ws://{addr}/ws?user={user}")
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    tokio_tungstenite::connect_async(req).await.unwrap().0
}

/// One conversation (`chat`/`room-a`, owner `chat:owner`) wired to `main`
/// on a [`pinch_channels::fake::FakeChannel`] added to `cfg`; the cell
/// holds the channel once the host has started. Idempotent on the central
/// DB, so a test can start a second host on the same data dir with a new
/// channel (one per host start).
pub fn fake_chat(
    cfg: &mut HostConfig,
) -> std::sync::Arc<std::sync::OnceLock<std::sync::Arc<pinch_channels::fake::FakeChannel>>> {
    fake_chat_rooms(cfg, &[("room-a", "main")])
}

/// [`fake_chat`] with several rooms, each wired to an agent group (made
/// with its own folder when it is not `main`): e.g. two agents, or two
/// conversations (two sessions) of one agent.
pub fn fake_chat_rooms(
    cfg: &mut HostConfig,
    rooms: &[(&str, &str)],
) -> std::sync::Arc<std::sync::OnceLock<std::sync::Arc<pinch_channels::fake::FakeChannel>>> {
    use pinch_channels::fake::FakeChannel;
    use std::sync::{Arc, OnceLock};
    let data = cfg.data_dir.clone();
    std::fs::create_dir_all(&data).unwrap();
    {
        let mut c = pinch_host::db::central::Central::open(&data.join("pinch.db")).unwrap();
        c.bootstrap(&cfg.login).unwrap();
        let t = "2026-01-01T00:00:00.000Z";
        c.conn
            .execute(
                "INSERT OR IGNORE INTO users (id, kind, created_at) VALUES ('chat:owner', 'chat', ?1)",
                [t],
            )
            .unwrap();
        c.conn.execute("INSERT OR IGNORE INTO user_roles (user_id, role, agent_group_id, granted_at) VALUES ('chat:owner', 'owner', NULL, ?1)", [t]).unwrap();
        for (room, ag) in rooms {
            if *ag != "main" {
                c.conn.execute("INSERT OR IGNORE INTO agent_groups (id, name, folder, created_at) VALUES (?1, ?1, ?1, ?2)", [ag, &t]).unwrap();
                c.conn
                    .execute(
                        "INSERT OR IGNORE INTO agent_configs (agent_group_id, updated_at) VALUES (?1, ?2)",
                        [ag, &t],
                    )
                    .unwrap();
            }
            let mg = format!("mg-{}", room.trim_start_matches("room-"));
            c.conn
                .execute(
                    "INSERT OR IGNORE INTO messaging_groups (id, channel_type, platform_id, name, is_group, unknown_sender_policy, created_at)
                     VALUES (?1, 'chat', ?2, ?2, 0, 'strict', ?3)",
                    [mg.as_str(), room, t],
                )
                .unwrap();
            c.conn
                .execute(
                    "INSERT OR IGNORE INTO wirings (id, messaging_group_id, agent_group_id, engage_mode, engage_pattern, sender_scope, ignored_message_policy, session_mode, priority, created_at)
                     VALUES (?1, ?2, ?3, 'pattern', '.', 'known', 'drop', 'shared', 0, ?4)",
                    [format!("w-{mg}").as_str(), mg.as_str(), ag, t],
                )
                .unwrap();
        }
    }
    let cell: Arc<OnceLock<Arc<FakeChannel>>> = Arc::default();
    let c2 = cell.clone();
    cfg.extra_channels.push(Arc::new(move |tx| {
        let ch = FakeChannel::new(
            "chat",
            pinch_channels::Capabilities {
                max_text: 4000,
                ..Default::default()
            },
            tx,
        );
        c2.set(ch.clone()).ok();
        ch
    }));
    cell
}

/// A message from the owner in `room` (see [`fake_chat_rooms`]).
pub fn fake_chat_msg_in(room: &str, id: &str, text: &str) -> pinch_channels::InboundEvent {
    pinch_channels::InboundEvent {
        channel_type: "chat".into(),
        platform_id: room.into(),
        message_id: id.into(),
        sender_id: "owner".into(),
        sender_name: Some("Owner".into()),
        text: text.into(),
        ..Default::default()
    }
}

/// A message from the owner in `room-a` (see [`fake_chat`]).
pub fn fake_chat_msg(id: &str, text: &str) -> pinch_channels::InboundEvent {
    fake_chat_msg_in("room-a", id, text)
}

/// A host whose scripted model takes 1.5 s over a message with "slow" (a
/// turn long enough to freeze the runner in), with a 100 ms heartbeat, an
/// 800 ms heartbeat ceiling, short stop and retry delays, and the sweep
/// every `sweep_interval`.
pub fn slow_turn_config(dir: &Path, sweep_interval: Duration) -> HostConfig {
    let mut cfg = with_script(
        host_config(dir, Choice::Process),
        "[[rule]]\ncontains = \"slow\"\nreply = \"slow: {text}\"\ndelay_ms = 1500\n",
    );
    cfg.runner.heartbeat_ms = 100;
    cfg.stuck.heartbeat_ceiling = Duration::from_millis(800);
    cfg.sweep_interval = sweep_interval;
    cfg.stop_grace = Duration::from_millis(300);
    cfg.retry_base = Duration::from_millis(300);
    cfg
}

/// How many claims (`processing_ack` rows) the runner of the session
/// folder `dir` holds for `message_id`.
pub fn count_ack(dir: &Path, message_id: &str) -> i64 {
    outbound(dir)
        .query_row(
            "SELECT count(*) FROM processing_ack WHERE message_id = ?1",
            [message_id],
            |r| r.get(0),
        )
        .unwrap()
}

/// A host of [`slow_turn_config`] and a user who said "slow and then
/// frozen" (message `id`), which the runner of session `s` has claimed.
/// (Fields drop in this order, the runtime last.)
pub struct SlowTurn {
    pub s: pinch_host::SessionInfo,
    pub id: String,
    pub c: Client,
    pub host: pinch_host::HostHandle,
    pub rt: tokio::runtime::Runtime,
}

/// Starts a [`slow_turn_config`] host (sweep every `sweep_interval`), says
/// something slow and waits until the runner has claimed it.
pub fn slow_turn_claimed(dir: &Path, sweep_interval: Duration) -> SlowTurn {
    let rt = rt();
    let host = rt
        .block_on(pinch_host::start(slow_turn_config(dir, sweep_interval)))
        .unwrap();
    let mut c = Client::connect(&host.cli_socket);
    let id = c.say("slow and then frozen", "c1");
    let s = rt.block_on(host.sessions()).remove(0);
    wait_for("the claim", Duration::from_secs(10), || {
        count_ack(&s.dir, &format!("{id}:main")) == 1
    });
    SlowTurn { s, id, c, host, rt }
}

impl SlowTurn {
    /// Freezes the runner mid-turn; returns the replies the user got by the
    /// time the message is settled and up to a barrier after it (so a
    /// repeated answer is seen).
    pub fn freeze_until_settled(&mut self) -> Vec<String> {
        freeze_runner(&self.s);
        self.c.settled_then_barrier(&self.id)
    }
}

/// Freezes the session's runner (SIGSTOP): alive, but silent.
pub fn freeze_runner(s: &pinch_host::SessionInfo) {
    let pid = s.runner_pid.unwrap();
    unsafe {
        libc::kill(pid as i32, libc::SIGSTOP);
    }
}

/// `pinch --data-dir DATA ARGS`, isolated from the caller's model keys,
/// configuration and home.
pub fn pinch(args: &[&str], data: &Path) -> std::process::Command {
    let mut c = std::process::Command::new(PINCH);
    c.arg("--data-dir")
        .arg(data)
        .args(args)
        .env("PINCH_CONFIG", "/dev/null")
        .env_remove("ANTHROPIC_API_KEY")
        .env_remove("OPENAI_API_KEY")
        .env_remove("OPENAI_BASE_URL")
        .env_remove("PINCH_HOME");
    c
}

/// A loopback TCP port free a moment ago (for a listener a child process
/// opens itself).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `pid` and its children (a sandbox's runner is bwrap's child).
pub fn process_tree(pid: u32) -> Vec<u32> {
    let children = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|x| x.parse().ok()))
        .filter(|p: &u32| {
            std::fs::read_to_string(format!("/proc/{p}/stat"))
                .is_ok_and(|st| st.split_whitespace().nth(3) == Some(&pid.to_string()))
        });
    std::iter::once(pid).chain(children).collect()
}

/// The one session's `in/runner.json` under `data`, parsed.
pub fn runner_json(data: &Path) -> serde_json::Value {
    let sessions: Vec<PathBuf> = walk(&data.join("sessions"))
        .into_iter()
        .filter(|p| p.ends_with("in/runner.json"))
        .collect();
    assert_eq!(sessions.len(), 1, "{sessions:?}");
    serde_json::from_str(&std::fs::read_to_string(&sessions[0]).unwrap()).unwrap()
}

/// Processes below `pid` (children, grandchildren, …).
pub fn descendants(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let mut todo = vec![pid];
    while let Some(p) = todo.pop() {
        let Ok(rd) = std::fs::read_dir(format!("/proc/{p}/task")) else {
            continue;
        };
        for t in rd.flatten() {
            let kids = std::fs::read_to_string(t.path().join("children")).unwrap_or_default();
            for k in kids.split_whitespace().filter_map(|k| k.parse().ok()) {
                out.push(k);
                todo.push(k);
            }
        }
    }
    out
}

/// The pid of the session's runner process itself (`pinch` below the
/// sandbox's supervisor), once its `n`th spawn is up.
pub fn runner_process(rt: &tokio::runtime::Runtime, host: &pinch_host::HostHandle, n: u64) -> u32 {
    let mut runner = None;
    wait_for("the runner process", Duration::from_secs(30), || {
        let Some(s) = rt.block_on(host.sessions()).pop() else {
            return false;
        };
        let Some(outer) = s.runner_pid.filter(|_| host.stats.spawns() == n) else {
            return false;
        };
        runner = std::iter::once(outer).chain(descendants(outer)).rfind(|p| {
            std::fs::read_to_string(format!("/proc/{p}/comm")).is_ok_and(|c| c.trim() == "pinch")
        });
        runner.is_some()
    });
    runner.unwrap()
}
