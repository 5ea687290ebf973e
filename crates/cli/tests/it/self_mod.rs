//! Self-modification (SPEC §7.6, issue 8) through a real host and real
//! bwrap runners: an agent asks for a pip package and for an MCP server;
//! nothing changes until an admin clicks Approve on the card; then the
//! package is installed into the group's tools folder (by an installer in a
//! sandbox of its own, from a package index served by the test) and the
//! MCP server is added, and the agent uses both in its next turn. A
//! rejected request changes nothing.

use std::path::Path;
use std::time::Duration;

use crate::common::*;
use pinch_channels::cli_socket::{ClientMsg, ServerMsg};

const SCRIPT: &str = r#"
[[rule]]
contains = "install the demo"
tool = "install_packages"
args = { manager = "pip", packages = ["pinchdemo"] }

[[rule]]
contains = "add the calculator"
tool = "add_mcp_server"
args = { name = "calc", command = "/workspace/agent/calc-server" }

[[rule]]
contains = "use the demo"
tool = "shell"
args = { command = "python3 -c 'import pinchdemo; print(pinchdemo.VALUE)'" }

[[rule]]
contains = "add please"
tool = "calc__add"
args = { a = 2, b = 40 }

[[rule]]
after_tool = "*"
reply = "tool said: {tool_result} error={tool_error}"
"#;

/// Reads until a card arrives (returns its buttons) and a text containing
/// `want` has been seen.
fn card_and(c: &mut Client, want: &str) -> Vec<pinch_channels::cli_socket::WireButton> {
    let (mut seen, mut card) = (false, None);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !(seen && card.is_some()) {
        assert!(
            std::time::Instant::now() < deadline,
            "seen={seen} card={card:?}"
        );
        if let Some(ServerMsg::Message {
            id, text, buttons, ..
        }) = c.recv()
        {
            c.send(&ClientMsg::Ack { id });
            seen |= text.contains(want);
            if !buttons.is_empty() {
                card = Some(buttons);
            }
        }
    }
    card.unwrap()
}

fn result_row(dir: &Path, action: &str) -> Option<String> {
    inbound(dir)
        .query_row(
            "SELECT content FROM messages_in WHERE id LIKE 'approval-result:%' AND content LIKE ?1",
            [format!("%{action}%")],
            |r| r.get(0),
        )
        .ok()
}

/// A one-package pip index in `dir`, served on loopback; returns its URL.
fn serve_index(dir: &Path) -> (std::process::Child, String) {
    let py = r#"
import base64, hashlib, os, sys, zipfile
d = sys.argv[1]
files = {
    "pinchdemo/__init__.py": b"VALUE = 'pinchdemo works'\n",
    "pinchdemo-1.0.dist-info/METADATA": b"Metadata-Version: 2.1\nName: pinchdemo\nVersion: 1.0\n",
    "pinchdemo-1.0.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: pinch-test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
}
record = ""
for name, data in files.items():
    h = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    record += f"{name},sha256={h},{len(data)}\n"
record += "pinchdemo-1.0.dist-info/RECORD,,\n"
whl = os.path.join(d, "pinchdemo-1.0-py3-none-any.whl")
with zipfile.ZipFile(whl, "w") as z:
    for name, data in files.items():
        z.writestr(name, data)
    z.writestr("pinchdemo-1.0.dist-info/RECORD", record)
os.makedirs(os.path.join(d, "simple", "pinchdemo"), exist_ok=True)
with open(os.path.join(d, "simple", "pinchdemo", "index.html"), "w") as f:
    f.write('<html><body><a href="../../pinchdemo-1.0-py3-none-any.whl">pinchdemo-1.0-py3-none-any.whl</a></body></html>')
"#;
    let st = std::process::Command::new("/usr/bin/python3")
        .args(["-c", py])
        .arg(dir)
        .status()
        .unwrap();
    assert!(st.success());
    let port = free_port();
    let child = std::process::Command::new("/usr/bin/python3")
        .args([
            "-m",
            "http.server",
            "--bind",
            "127.0.0.1",
            &port.to_string(),
            "--directory",
        ])
        .arg(dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_for("the index server", Duration::from_secs(10), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    (child, format!("http://127.0.0.1:{port}/simple"))
}

#[test]
fn an_approved_package_and_mcp_server_arrive_with_the_next_turn() {
    if !bwrap_or_skip() {
        return;
    }
    if !Path::new("/usr/bin/python3").exists()
        || std::process::Command::new("/usr/bin/python3")
            .args(["-m", "pip", "--version"])
            .output()
            .map_or(true, |o| !o.status.success())
    {
        panic!(
            "this test needs /usr/bin/python3 with pip (scripts/deps --test installs python3-pip)"
        );
    }
    let tmp = tempfile::tempdir().unwrap();
    let index_dir = tmp.path().join("index");
    std::fs::create_dir_all(&index_dir).unwrap();
    let (mut index, url) = serve_index(&index_dir);
    // The installer passes the host's pip settings on (an index mirror).
    std::env::set_var("PIP_INDEX_URL", &url);
    std::env::set_var("PIP_TRUSTED_HOST", "127.0.0.1");
    let cfg = with_script(
        host_config(tmp.path(), pinch_host::sandbox::Choice::Bwrap),
        SCRIPT,
    );
    let server_bin = Path::new(PINCH).with_file_name("pinch-mcp-test-server");
    let group = cfg.data_dir.join("groups/main");
    std::fs::create_dir_all(&group).unwrap();
    std::fs::copy(&server_bin, group.join("calc-server")).unwrap();
    let rt = rt();
    let host = rt.block_on(pinch_host::start(cfg.clone())).unwrap();
    let mut c = Client::connect(&host.cli_socket);

    // The package: approval-pending, a card, nothing installed yet.
    c.say("please install the demo", "p1");
    let buttons = card_and(&mut c, "tool said: approval-pending");
    let tools = cfg.data_dir.join("tools/main");
    assert!(!tools.exists(), "nothing installed before the approval");
    let approve = buttons
        .iter()
        .find(|b| b.label == "Approve")
        .unwrap()
        .callback
        .clone();
    c.send(&ClientMsg::Click { callback: approve });
    let session = rt
        .block_on(host.sessions())
        .into_iter()
        .find(|s| s.agent_group_id == "main")
        .unwrap();
    wait_for(
        "the installation's result",
        Duration::from_secs(300),
        || result_row(&session.dir, "install_packages").is_some(),
    );
    let r = result_row(&session.dir, "install_packages").unwrap();
    assert!(r.contains("\"ok\":true"), "{r}");
    assert!(
        tools.join("python/pinchdemo/__init__.py").exists(),
        "installed in the host-only tools folder"
    );
    assert!(
        !group.join(".tools").exists(),
        "never inside the agent's workspace"
    );
    // The agent's next turn has it.
    let replies = c.ask("now use the demo");
    assert!(
        replies
            .iter()
            .any(|t| t.contains("pinchdemo works") && t.contains("error=false")),
        "{replies:?}"
    );

    // The MCP server: approved, then its tools are offered.
    c.say("please add the calculator", "m1");
    let buttons = card_and(&mut c, "tool said: approval-pending");
    let approve = buttons
        .iter()
        .find(|b| b.label == "Approve")
        .unwrap()
        .callback
        .clone();
    c.send(&ClientMsg::Click { callback: approve });
    wait_for("the server added", Duration::from_secs(30), || {
        result_row(&session.dir, "add_mcp_server").is_some()
    });
    let db = pinch_proto::rusqlite::Connection::open(cfg.data_dir.join("pinch.db")).unwrap();
    let servers: String = db
        .query_row(
            "SELECT mcp_servers FROM agent_configs WHERE agent_group_id = 'main'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(
        servers.contains("\"calc\"") && servers.contains("calc-server"),
        "{servers}"
    );
    let replies = c.ask("add please");
    assert!(
        replies.iter().any(|t| t.contains("tool said: 42")),
        "{replies:?}"
    );
    rt.block_on(host.shutdown()).unwrap();
    let _ = index.kill();
    let _ = index.wait();
}

#[test]
fn a_rejected_request_changes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = with_script(host_config(tmp.path(), any_sandbox()), SCRIPT);
    let rt = rt();
    let host = rt.block_on(pinch_host::start(cfg.clone())).unwrap();
    let mut c = Client::connect(&host.cli_socket);
    c.say("please install the demo", "p1");
    let buttons = card_and(&mut c, "tool said: approval-pending");
    let reject = buttons
        .iter()
        .find(|b| b.label == "Reject")
        .unwrap()
        .callback
        .clone();
    c.send(&ClientMsg::Click { callback: reject });
    let session = rt
        .block_on(host.sessions())
        .into_iter()
        .find(|s| s.agent_group_id == "main")
        .unwrap();
    wait_for(
        "the rejection reaches the agent",
        Duration::from_secs(30),
        || result_row(&session.dir, "install_packages").is_some_and(|r| r.contains("rejected")),
    );
    let db = pinch_proto::rusqlite::Connection::open(cfg.data_dir.join("pinch.db")).unwrap();
    let packages: Option<String> = db
        .query_row(
            "SELECT packages FROM agent_configs WHERE agent_group_id = 'main'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(
        packages.as_ref().is_none_or(|p| !p.contains("pinchdemo")),
        "{packages:?}"
    );
    assert!(!cfg.data_dir.join("tools/main").exists());
    // The agent's turn on the rejection answers the terminal (read it, so
    // that delivery is not left waiting for an ack at shutdown).
    loop {
        if let Some(ServerMsg::Message { id, .. }) = c.recv() {
            c.send(&ClientMsg::Ack { id });
            break;
        }
    }
    rt.block_on(host.shutdown()).unwrap();
}
