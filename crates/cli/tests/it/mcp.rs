//! MCP both ways at the binary's edges: `pinch runner mcp` serving a
//! runner's tools over stdio (spoken to with rmcp's client through
//! pinch-mcp), and `[mcp.servers]` / `agent_configs.mcp_servers` reaching
//! `runner.json`.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use crate::common::PINCH;
use pinch_mcp::bridge::BridgeServer;
use pinch_mcp::{McpClients, McpServerConfig};
use pinch_providers::ToolSpec;

fn spec(name: &str, description: &str) -> ToolSpec {
    ToolSpec {
        name: name.into(),
        description: description.into(),
        parameters: serde_json::json!({"type": "object", "properties": {"text": {"type": "string"}}}),
    }
}

#[test]
fn runner_mcp_serves_the_runners_tools_over_stdio() {
    let tmp = tempfile::tempdir().unwrap();
    let sock = tmp.path().join("tools.sock");
    let calls: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let seen = calls.clone();
    let _bridge = BridgeServer::start(
        &sock,
        vec![
            spec("send_message", "Send a chat message."),
            spec("shell", "Run a command."),
        ],
        Some("These are pinch's tools.".into()),
        Box::new(move |name, args| {
            seen.lock()
                .unwrap()
                .push((name.to_owned(), args.to_owned()));
            let v: serde_json::Value = serde_json::from_str(args).unwrap();
            match name {
                "send_message" => (format!("sent: {}", v["text"].as_str().unwrap_or("")), false),
                _ => ("shell is not allowed here".into(), true),
            }
        }),
    )
    .unwrap();

    // The agent CLI's side: an rmcp client spawning `pinch runner mcp`.
    let server = McpServerConfig {
        name: "pinch".into(),
        command: PINCH.into(),
        args: vec![
            "runner".into(),
            "mcp".into(),
            "--socket".into(),
            sock.to_string_lossy().into_owned(),
        ],
        ..Default::default()
    };
    let (mut mcp, failed) = McpClients::start(&[server]);
    assert!(failed.is_empty(), "{failed:?}");
    let tools = mcp.tools();
    let names: Vec<&str> = tools.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["pinch__send_message", "pinch__shell"]);
    assert_eq!(tools[0].description, "Send a chat message.");
    assert_eq!(tools[0].parameters["properties"]["text"]["type"], "string");
    assert!(
        mcp.instructions().contains("These are pinch's tools."),
        "{}",
        mcp.instructions()
    );

    let r = mcp
        .call(
            "pinch__send_message",
            r#"{"text":"hello from the CLI"}"#,
            None,
        )
        .unwrap();
    assert_eq!(
        (r.content.as_str(), r.is_error),
        ("sent: hello from the CLI", false)
    );
    let r = mcp
        .call("pinch__shell", r#"{"text":"rm -rf /"}"#, None)
        .unwrap();
    assert_eq!(
        (r.content.as_str(), r.is_error),
        ("shell is not allowed here", true)
    );
    let calls = calls.lock().unwrap().clone();
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[0].0, "send_message");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&calls[0].1).unwrap(),
        serde_json::json!({"text": "hello from the CLI"})
    );
}

#[test]
fn runner_mcp_without_a_runner_says_so() {
    let out = Command::new(PINCH)
        .args(["runner", "mcp", "--socket", "/nonexistent/tools.sock"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("/nonexistent/tools.sock") && err.contains("is the runner running?"),
        "{err}"
    );
    assert!(
        out.stdout.is_empty(),
        "stdout is the MCP channel: nothing else may go there"
    );
    let out = Command::new(PINCH).arg("runner").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--config"));
}

fn chat(data: &Path, config: &Path, input: &str) {
    let (data, config) = (data.to_str().unwrap(), config.to_str().unwrap());
    let args = [
        "--data-dir",
        data,
        "--config",
        config,
        "--sandbox",
        "process",
        "--timeout",
        "60",
        "--provider",
        "scripted",
    ];
    let out = crate::common::pinch_chat(&args, &[], input);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The configured servers do not exist here: the answer comes first,
    // then (on the first turn of the session only) a note naming each.
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.starts_with(&format!("Hello from pinch! You said: {}", input)),
        "{stdout}"
    );
    for line in stdout.lines().skip(1) {
        assert!(
            line.starts_with("Note from pinch: the MCP server `"),
            "{stdout}"
        );
    }
}

#[test]
fn mcp_servers_from_the_config_file_and_the_group_reach_runner_json() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let cfg = tmp.path().join("pinch.toml");
    std::fs::write(
        &cfg,
        r#"
[mcp.servers.files]
command = "/usr/bin/mcp-files"
args = ["--root", "/workspace/agent"]
env = { FILES_LOG = "warn" }
timeout_s = 20

[mcp.servers.elsewhere]
command = "x"
groups = ["not-main"]
"#,
    )
    .unwrap();
    chat(&data, &cfg, "one\n");
    let rj = crate::common::runner_json(&data);
    assert_eq!(
        rj["mcp_servers"],
        serde_json::json!([{
            "name": "files", "command": "/usr/bin/mcp-files", "args": ["--root", "/workspace/agent"],
            "env": {"FILES_LOG": "warn"}, "cwd": null, "timeout_s": 20
        }]),
        "{rj}"
    );

    // The group's own servers (agent_configs.mcp_servers, SPEC §3.1) join
    // at the next spawn; the same name replaces the file's entry.
    let db = pinch_proto::rusqlite::Connection::open(data.join("pinch.db")).unwrap();
    db.execute(
        "UPDATE agent_configs SET mcp_servers = ?1 WHERE agent_group_id = 'main'",
        [r#"[{"name":"calc","command":"calc-mcp"},{"name":"files","command":"/opt/files2"}]"#],
    )
    .unwrap();
    drop(db);
    chat(&data, &cfg, "two\n");
    let rj = crate::common::runner_json(&data);
    let servers: Vec<(&str, &str)> = rj["mcp_servers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["name"].as_str().unwrap(), s["command"].as_str().unwrap()))
        .collect();
    assert_eq!(servers, [("calc", "calc-mcp"), ("files", "/opt/files2")]);
}

#[test]
fn a_bad_mcp_server_entry_is_a_config_error() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("pinch.toml");
    std::fs::write(&cfg, "[mcp.servers.files]\ncommand = \"\"\n").unwrap();
    let out = Command::new(PINCH)
        .arg("chat")
        .arg("--data-dir")
        .arg(tmp.path().join("d"))
        .arg("--config")
        .arg(&cfg)
        .args(["--provider", "scripted"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("[mcp.servers.files]") && err.contains("command is empty"),
        "{err}"
    );
}

/// The runner offers an external MCP server's tools as `<server>__<tool>`
/// and runs them inside the bwrap sandbox; a server that cannot start is
/// reported and the others still work (SPEC §5.1, §5.6).
#[test]
fn a_sandboxed_runner_calls_an_external_mcp_servers_tools() {
    if !crate::common::bwrap_or_skip() {
        return;
    }
    let server_bin = Path::new(env!("CARGO_BIN_EXE_pinch")).with_file_name("pinch-mcp-test-server");
    assert!(
        server_bin.exists(),
        "{} is missing: build it with `cargo build -p pinch-mcp`",
        server_bin.display()
    );
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    // The agent's folder is /workspace/agent in the sandbox.
    let group = data.join("groups/main");
    std::fs::create_dir_all(&group).unwrap();
    std::fs::copy(&server_bin, group.join("calc-server")).unwrap();
    let script = r#"
[[rule]]
contains = "add please"
tool = "calc__add"
args = { a = 2, b = 40 }

[[rule]]
contains = "break please"
tool = "calc__fail"
args = { message = "no such thing" }

[[rule]]
contains = "web-proxy-variable"
tool = "calc__env"
args = { name = "HTTPS_PROXY" }

[[rule]]
contains = "owner-proxy-variable"
tool = "calc__env"
args = { name = "HTTP_PROXY" }

[[rule]]
after_tool = "*"
reply = "tool said: {tool_result}{tool_error}"
"#;
    let mut cfg = crate::common::with_script(
        crate::common::host_config(tmp.path(), pinch_host::sandbox::Choice::Bwrap),
        script,
    );
    let server = |name: &str, command: &str| pinch_host::config::McpServerEntry {
        server: pinch_proto::runner_config::McpServerConfig {
            name: name.into(),
            command: command.into(),
            ..Default::default()
        },
        groups: None,
    };
    let mut calc = server("calc", "/workspace/agent/calc-server");
    // The owner's own setting for a variable wins over the runner's.
    calc.server
        .env
        .insert("HTTP_PROXY".into(), "http://owner.example:8080".into());
    let mut complains = server("complains", "/workspace/agent/calc-server");
    complains.server.args = vec!["--fail-start".into()];
    cfg.mcp_servers = vec![
        calc,
        server("broken", "/workspace/agent/not-there"),
        complains,
    ];
    let rt = crate::common::rt();
    let host = rt.block_on(pinch_host::start(cfg)).unwrap();
    let mut c = crate::common::Client::connect(&host.cli_socket);
    let reply = c.ask("add please");
    // The answer, then one note per server that failed to start, in its
    // own words (the missing file; the other's stderr).
    assert_eq!(reply.len(), 3, "{reply:?}");
    assert!(reply[0].contains("tool said: 42"), "{reply:?}");
    assert!(
        reply[1].contains("MCP server `broken` could not start")
            && reply[1].contains("not-there")
            && reply[1].contains("pinch doctor"),
        "{reply:?}"
    );
    assert!(
        reply[2].contains("MCP server `complains` could not start")
            && reply[2].contains("test server: missing API token, refusing to start"),
        "{reply:?}"
    );
    // MCP servers reach the web the way shell commands do: through the
    // runner's forwarder to the credential proxy.
    let reply = c.ask("web-proxy-variable");
    assert_eq!(reply.len(), 1, "told once: {reply:?}");
    assert!(
        reply[0].starts_with("tool said: http://127.0.0.1:"),
        "{reply:?}"
    );
    let reply = c.ask("owner-proxy-variable");
    assert_eq!(reply, ["tool said: http://owner.example:8080false"]);
    let reply = c.ask("break please");
    assert!(
        reply[0].contains("no such thing"),
        "the server's error reaches the model: {reply:?}"
    );
    let logs: String = crate::common::walk(&data.join("logs/runners"))
        .into_iter()
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect();
    assert!(
        logs.contains("MCP server unavailable") && logs.contains("broken"),
        "the failed server is reported: {logs}"
    );
    rt.block_on(host.shutdown()).unwrap();
}
