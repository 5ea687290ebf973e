//! The blocking MCP client against a real MCP server process
//! (`pinch-mcp-test-server`, rmcp's server side over stdio).

use std::time::Duration;

use pinch_mcp::{McpClients, McpError, McpServerConfig};

const SERVER: &str = env!("CARGO_BIN_EXE_pinch-mcp-test-server");

fn cfg(name: &str, args: &[&str]) -> McpServerConfig {
    McpServerConfig {
        name: name.into(),
        command: SERVER.into(),
        args: args.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

/// Gone, or a zombie waiting for a reaper that is not ours.
fn dead(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(s) => s
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z')),
    }
}

fn wait_dead(pid: u32) -> bool {
    // Generous: only catches a process that was never killed.
    for _ in 0..200 {
        if dead(pid) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

#[test]
fn lists_calls_and_maps_results() {
    let (mut c, failed) =
        McpClients::start(&[cfg("calc", &["--instructions", "Use calc for arithmetic."])]);
    assert!(failed.is_empty(), "{failed:?}");
    let names: Vec<String> = c.tools().into_iter().map(|t| t.name).collect();
    for n in [
        "calc__echo",
        "calc__add",
        "calc__sleep",
        "calc__fail",
        "calc__crash",
        "calc__picture",
    ] {
        assert!(names.iter().any(|x| x == n), "{n} missing from {names:?}");
    }
    let add = c
        .tools()
        .into_iter()
        .find(|t| t.name == "calc__add")
        .unwrap();
    assert_eq!(add.description, "Adds two numbers.");
    assert_eq!(add.parameters["required"], serde_json::json!(["a", "b"]));
    assert!(
        c.instructions().contains("## MCP server `calc`")
            && c.instructions().contains("Use calc for arithmetic.")
    );

    let r = c
        .call("calc__echo", r#"{"text":"hi there"}"#, None)
        .unwrap();
    assert_eq!((r.content.as_str(), r.is_error), ("hi there", false));
    let r = c.call("calc__add", r#"{"a":2,"b":40}"#, None).unwrap();
    assert_eq!(r.content, "42");
    let r = c.call("calc__picture", "", None).unwrap();
    assert_eq!(r.content, "a dot:\n[image: image/png, 8 bytes, not shown]");

    // A tool error is a result the model reads, not a failed call.
    let r = c
        .call("calc__fail", r#"{"message":"disk on fire"}"#, None)
        .unwrap();
    assert_eq!((r.content.as_str(), r.is_error), ("disk on fire", true));
    // A protocol error (the server refused the arguments) names the server.
    let e = c.call("calc__add", r#"{"a":"x"}"#, None).unwrap_err();
    assert!(
        matches!(e, McpError::Protocol { .. }) && e.to_string().contains("add needs numbers"),
        "{e}"
    );
    // Our own checks, before anything is sent.
    assert!(matches!(
        c.call("calc__nope", "{}", None),
        Err(McpError::UnknownTool(_))
    ));
    let e = c.call("calc__echo", "[1]", None).unwrap_err();
    assert!(matches!(e, McpError::BadArguments { .. }), "{e}");
    assert_eq!(c.timeout_of("calc__echo"), Some(Duration::from_secs(60)));
}

#[test]
fn a_slow_call_times_out_and_the_server_stays_usable() {
    let mut conf = cfg("slow", &[]);
    conf.timeout_s = Some(1);
    let (mut c, failed) = McpClients::start(&[conf]);
    assert!(failed.is_empty(), "{failed:?}");
    assert_eq!(c.timeout_of("slow__sleep"), Some(Duration::from_secs(1)));
    let e = c
        .call("slow__sleep", r#"{"seconds":30}"#, None)
        .unwrap_err();
    assert!(matches!(e, McpError::Timeout { .. }), "{e}");
    assert!(
        e.to_string().contains("did not answer sleep within 1 s"),
        "{e}"
    );
    // An explicit timeout overrides the server's.
    let r = c
        .call(
            "slow__sleep",
            r#"{"seconds":0.05}"#,
            Some(Duration::from_secs(30)),
        )
        .unwrap();
    assert_eq!(r.content, "slept 0.05 s");
    let r = c
        .call("slow__echo", r#"{"text":"still here"}"#, None)
        .unwrap();
    assert_eq!(r.content, "still here");
}

#[test]
fn failing_servers_are_reported_and_the_others_work() {
    let missing = McpServerConfig {
        name: "ghost".into(),
        command: "/nonexistent/mcp-server".into(),
        ..Default::default()
    };
    let (mut c, failed) =
        McpClients::start(&[cfg("bad", &["--fail-start"]), missing, cfg("good", &[])]);
    assert_eq!(failed.len(), 2, "{failed:?}");
    let (name, e) = &failed[0];
    assert_eq!(name, "bad");
    let msg = e.to_string();
    assert!(msg.contains("could not start MCP server \"bad\""), "{msg}");
    assert!(
        msg.contains("missing API token"),
        "the server's stderr is quoted: {msg}"
    );
    let (name, e) = &failed[1];
    assert_eq!(name, "ghost");
    assert!(e.to_string().contains("/nonexistent/mcp-server"), "{e}");
    assert!(c.tools().iter().all(|t| t.name.starts_with("good__")));
    assert_eq!(
        c.call("good__add", r#"{"a":1,"b":1}"#, None)
            .unwrap()
            .content,
        "2"
    );
}

#[test]
fn programs_that_do_not_speak_mcp_fail_to_start_within_the_timeout() {
    let silent = McpServerConfig {
        name: "silent".into(),
        command: "sleep".into(),
        args: vec!["1000".into()],
        timeout_s: Some(1),
        ..Default::default()
    };
    let quits = McpServerConfig {
        name: "quits".into(),
        command: "true".into(),
        ..Default::default()
    };
    let (c, failed) = McpClients::start(&[silent, quits]);
    assert!(c.is_empty());
    let msgs: Vec<String> = failed.iter().map(|(n, e)| format!("{n}: {e}")).collect();
    assert!(
        msgs[0].starts_with("silent: ") && msgs[0].contains("no MCP handshake within 1 s"),
        "{msgs:?}"
    );
    assert!(
        msgs[1].starts_with("quits: ") && msgs[1].contains("handshake failed"),
        "{msgs:?}"
    );
}

#[test]
fn a_crash_mid_call_is_reported_and_later_calls_fail_fast() {
    let (mut c, failed) = McpClients::start(&[cfg("c", &[]), cfg("d", &[])]);
    assert!(failed.is_empty(), "{failed:?}");
    let e = c.call("c__crash", "{}", None).unwrap_err();
    assert!(matches!(e, McpError::ServerGone { .. }), "{e}");
    assert!(e.to_string().contains("\"c\" is not running"), "{e}");
    assert!(
        e.to_string().contains("crashing on purpose"),
        "its stderr is quoted: {e}"
    );
    let e = c.call("c__echo", r#"{"text":"x"}"#, None).unwrap_err();
    assert!(matches!(e, McpError::ServerGone { .. }), "{e}");
    // The other server is unaffected.
    assert_eq!(
        c.call("d__echo", r#"{"text":"ok"}"#, None).unwrap().content,
        "ok"
    );
}

#[test]
fn dropping_the_clients_kills_servers_and_their_children() {
    let (mut c, failed) = McpClients::start(&[cfg("k", &[])]);
    assert!(failed.is_empty(), "{failed:?}");
    let server: u32 = c
        .call("k__pid", "{}", None)
        .unwrap()
        .content
        .parse()
        .unwrap();
    let grandchild: u32 = c
        .call("k__spawn_sleeper", "{}", None)
        .unwrap()
        .content
        .parse()
        .unwrap();
    assert!(!dead(server) && !dead(grandchild));
    drop(c);
    assert!(wait_dead(server), "server {server} survived the drop");
    assert!(
        wait_dead(grandchild),
        "the server's child {grandchild} survived the drop"
    );
}

#[test]
fn no_servers_no_runtime_no_tools() {
    let (c, failed) = McpClients::start(&[]);
    assert!(
        failed.is_empty() && c.is_empty() && c.tools().is_empty() && c.instructions().is_empty()
    );
}
