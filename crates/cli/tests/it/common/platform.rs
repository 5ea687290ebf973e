//! What the fake-platform suites (Telegram, Discord, Slack, the generic
//! webhook) share: a data dir whose owner talks to `main` in a DM and a
//! group of one platform, the real `pinch host` daemon configured to reach
//! the fake at its `base_url`, a recorder of the calls the fake received,
//! the socket-drop switch of the gateway fakes, and the counts a killed
//! host must keep (rows stored, replies delivered). Each suite keeps only
//! its platform's wire format.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use pinch_host::db::central::Central;
use serde_json::Value;

use super::{any_sandbox, inbound, ledger_db, wait_for, Daemon, PINCH};

/// How long a platform suite waits for anything observable.
pub const WAIT: Duration = Duration::from_secs(60);

/// The scripted rules every platform suite drives the agent with (a draft
/// and its edit, a reaction, a question card, a file each way); a suite
/// appends its own rules and its default reply.
pub const SHARED_RULES: &str = r#"
[[rule]]
contains = "draft please"
tool = "send_message"
args = { text = "draft v1" }

[[rule]]
after_tool = "send_message"
tool = "edit_message"
args = { seq = 3, text = "draft v2" }

[[rule]]
after_tool = "edit_message"
reply = "edited"

[[rule]]
contains = "react to this"
tool = "add_reaction"
args = { seq = 2, emoji = "👍" }

[[rule]]
after_tool = "add_reaction"
reply = "reacted"

[[rule]]
contains = "colour"
tool = "ask_user_question"
args = { title = "Paint", question = "Which colour?", options = [{ label = "Red", value = "r" }, { label = "Blue", value = "b" }], timeout_s = 120 }

[[rule]]
after_tool = "ask_user_question"
reply = "you chose: {tool_result}"

[[rule]]
contains = "read the attachment"
tool = "read_file"
args = { path = "{inbox_path}" }

[[rule]]
after_tool = "read_file"
reply = "the file says: {tool_result}"

[[rule]]
contains = "send me the report"
tool = "write_file"
args = { path = "report.txt", content = "numbers: 1 2 3" }

[[rule]]
after_tool = "write_file"
tool = "send_file"
args = { path = "report.txt", text = "here it is" }

[[rule]]
after_tool = "send_file"
reply = "report sent"

[[rule]]
contains = "mojibake"
reply = "echo: {text}"

[[rule]]
contains = "suite-"
reply = "suite echo: {text}"
"#;

/// Where a fake platform puts bytes that are not UTF-8 on the wire: every
/// occurrence in a body or frame it sends is replaced by [`invalid_utf8`].
pub const BAD_UTF8: &str = "<bad-utf8>";

/// What U+FFFD replacement makes of [`BAD_UTF8`]'s bytes (a lone 0xFF,
/// then a two-byte sequence cut short).
pub const REPLACED: &str = "\u{FFFD}\u{FFFD}";

/// Asserts that the echo of a message sent as `caf{BAD_UTF8} ok` carries its
/// text (in `field`) with the bad bytes replaced.
pub fn assert_replaced(echo: &serde_json::Value, field: &str) {
    assert!(
        echo[field]
            .as_str()
            .is_some_and(|t| t.contains(&format!("caf{REPLACED} ok"))),
        "{echo}"
    );
}

/// `wire` with every [`BAD_UTF8`] replaced by bytes that are not UTF-8.
pub fn invalid_utf8(wire: &[u8]) -> Vec<u8> {
    let marker = BAD_UTF8.as_bytes();
    let mut out = Vec::with_capacity(wire.len());
    let mut i = 0;
    while i < wire.len() {
        if wire[i..].starts_with(marker) {
            out.extend_from_slice(&[0xFF, 0xC3]);
            i += marker.len();
        } else {
            out.push(wire[i]);
            i += 1;
        }
    }
    out
}

/// One platform's test world.
pub struct Platform<'a> {
    /// `channel_type` (`telegram`, `discord`, …).
    pub channel: &'a str,
    /// The platform user id of the owner (`None`: no owner is seeded).
    pub owner: Option<&'a str>,
    /// Conversations wired to `main`: (messaging group id, platform id,
    /// is a group, engage mode).
    pub chats: &'a [(&'a str, &'a str, bool, &'a str)],
    /// The scripted model's rules.
    pub script: &'a str,
    /// The configuration after `[provider.scripted]` and `[host]`.
    pub config: String,
    /// The daemon's environment (the platform's secrets).
    pub env: &'a [(&'a str, &'a str)],
}

/// A data dir and configuration file for [`daemon`].
pub struct Setup {
    pub _tmp: tempfile::TempDir,
    pub data: PathBuf,
    pub cfg: PathBuf,
    pub env: Vec<(String, String)>,
}

impl Setup {
    /// The daemon's log so far (stderr, appended across restarts).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.data.with_extension("log")).unwrap_or_default()
    }

    /// Fails if any of `secrets` is in the daemon's log.
    pub fn log_lacks(&self, secrets: &[&str]) {
        let log = self.log();
        for s in secrets {
            assert!(!log.contains(s), "{s} leaked into the log");
        }
    }
}

pub fn setup(p: Platform) -> Setup {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    {
        let t = "2026-01-01T00:00:00.000Z";
        let mut c = Central::open(&data.join("pinch.db")).unwrap();
        c.bootstrap("tester").unwrap();
        if let Some(owner) = p.owner {
            let id = format!("{}:{owner}", p.channel);
            c.conn
                .execute(
                    "INSERT INTO users (id, kind, display_name, created_at) VALUES (?1, ?2, 'Ann', ?3)",
                    [&id, p.channel, t],
                )
                .unwrap();
            c.conn
                .execute(
                    "INSERT INTO user_roles (user_id, role, agent_group_id, granted_by, granted_at) VALUES (?1, 'owner', NULL, 'test', ?2)",
                    [&id, t],
                )
                .unwrap();
        }
        for (id, chat, is_group, mode) in p.chats {
            c.conn
                .execute(
                    "INSERT INTO messaging_groups (id, channel_type, platform_id, name, is_group, unknown_sender_policy, created_at)
                     VALUES (?1, ?2, ?3, 'x', ?4, 'public', ?5)",
                    pinch_proto::rusqlite::params![id, p.channel, chat, is_group, t],
                )
                .unwrap();
            c.conn
                .execute(
                    "INSERT INTO wirings (id, messaging_group_id, agent_group_id, engage_mode, engage_pattern, sender_scope, ignored_message_policy, session_mode, priority, created_at)
                     VALUES (?1, ?2, 'main', ?3, '.', 'all', 'drop', 'shared', 0, ?4)",
                    [&format!("w-{id}"), *id, *mode, t],
                )
                .unwrap();
        }
    }
    let script_path = tmp.path().join("script.toml");
    std::fs::write(&script_path, p.script).unwrap();
    let cfg = tmp.path().join("pinch.toml");
    std::fs::write(
        &cfg,
        format!(
            "[provider.scripted]\nscript = {script_path:?}\n[host]\nboot_breaker = false\n{}",
            p.config
        ),
    )
    .unwrap();
    Setup {
        data,
        cfg,
        env: p
            .env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        _tmp: tmp,
    }
}

/// `pinch host` on the setup, its stderr appended to `<data>.log`.
pub fn daemon(s: &Setup) -> Daemon {
    let mut d = std::process::Command::new(PINCH);
    d.args(["host", "--data-dir"])
        .arg(&s.data)
        .arg("--config")
        .arg(&s.cfg)
        .args([
            "--sandbox",
            if any_sandbox() == pinch_host::sandbox::Choice::Bwrap {
                "bwrap"
            } else {
                "process"
            },
            "--provider",
            "scripted",
        ])
        .env("PINCH_LOG", "debug")
        .envs(s.env.iter().map(|(k, v)| (k, v)))
        .env_remove("ANTHROPIC_API_KEY")
        .env_remove("OPENAI_API_KEY")
        .env_remove("OPENAI_BASE_URL")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(s.data.with_extension("log"))
                .unwrap(),
        );
    Daemon(d.spawn().unwrap())
}

/// `SELECT count(*)` of `sql` (one parameter, `arg`) summed over the
/// session folders of `main`, each opened with `open`.
fn over_sessions(
    data: &Path,
    open: fn(&Path) -> pinch_proto::rusqlite::Connection,
    sql: &str,
    arg: &str,
) -> i64 {
    let mut n = 0;
    for d in std::fs::read_dir(data.join("sessions/main"))
        .into_iter()
        .flatten()
    {
        n += open(&d.unwrap().path())
            .query_row(sql, [arg], |r| r.get::<_, i64>(0))
            .unwrap();
    }
    n
}

/// Inbound rows stored for the platform message `message_id` (all
/// sessions of `main`): a message must be one row, whatever was retried.
pub fn rows(data: &Path, message_id: &str) -> i64 {
    over_sessions(
        data,
        inbound,
        "SELECT count(*) FROM messages_in WHERE id = ?1",
        &format!("{message_id}:main"),
    )
}

/// Replies the host's ledgers record as delivered (all sessions of `main`).
pub fn delivered(data: &Path) -> i64 {
    over_sessions(
        data,
        ledger_db,
        "SELECT count(*) FROM delivered WHERE status = ?1",
        "delivered",
    )
}

/// Every call a fake platform received: (method or path, body).
#[derive(Default)]
pub struct Calls(Mutex<Vec<(String, Value)>>);

impl Calls {
    pub fn push(&self, what: impl Into<String>, body: Value) {
        self.0.lock().unwrap().push((what.into(), body));
    }

    /// The calls whose name satisfies `name`, in order.
    pub fn named(&self, name: impl Fn(&str) -> bool) -> Vec<(String, Value)> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|(m, _)| name(m))
            .cloned()
            .collect()
    }

    /// The bodies of the calls to `method`, in order.
    pub fn bodies(&self, method: &str) -> Vec<Value> {
        self.named(|m| m == method)
            .into_iter()
            .map(|(_, v)| v)
            .collect()
    }
}

/// Waits until `find` finds something; returns it.
pub fn wait_found<T>(what: &str, mut find: impl FnMut() -> Option<T>) -> T {
    let mut found = None;
    wait_for(what, WAIT, || {
        found = find();
        found.is_some()
    });
    found.unwrap()
}

/// Closes every open socket of a gateway fake (a watch, so no session
/// misses it).
pub struct Drops(pub tokio::sync::watch::Sender<u64>);

impl Default for Drops {
    fn default() -> Self {
        Drops(tokio::sync::watch::channel(0).0)
    }
}

impl Drops {
    pub fn drop_all(&self) {
        self.0.send_modify(|n| *n += 1);
    }
}

/// Serves `app` on a free loopback port (on the current runtime).
pub async fn serve(app: axum::Router) -> SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    addr
}

/// The reasons of the replies the host's ledgers record as failed (all
/// sessions of `main`), for a channel that refuses a delivery for good.
pub fn failed_deliveries(data: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for d in std::fs::read_dir(data.join("sessions/main"))
        .into_iter()
        .flatten()
    {
        let c = ledger_db(&d.unwrap().path());
        let mut st = c
            .prepare("SELECT coalesce(last_error, '') FROM delivered WHERE status = 'failed'")
            .unwrap();
        out.extend(
            st.query_map([], |r| r.get::<_, String>(0))
                .unwrap()
                .map(Result::unwrap),
        );
    }
    out
}

/// Waits until the daemon's HTTP listener on `port` (its `[http] listen`)
/// accepts connections, for suites that post webhooks to it.
pub fn wait_listener(port: u16) {
    wait_for("the HTTP listener", WAIT, || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
}

/// `pinch doctor` on the setup, its environment with `var` set to
/// `value`: the lines about `[section]`.
pub fn doctor_lines(s: &Setup, section: &str, var: &str, value: &str) -> Vec<String> {
    let o = std::process::Command::new(PINCH)
        .arg("doctor")
        .arg("--data-dir")
        .arg(&s.data)
        .arg("--config")
        .arg(&s.cfg)
        .envs(s.env.iter().map(|(k, v)| (k, v)))
        .env(var, value)
        .output()
        .unwrap();
    let tag = format!("[{section}]");
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter(|l| l.contains(&tag))
        .map(|l| l.trim().to_owned())
        .collect()
}
