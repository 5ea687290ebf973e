//! Measures MCP tool-call round trips through the blocking facade.
//!
//! `cargo run --release -p pinch-mcp --example mcp_roundtrip -- N TOOL ARGS_JSON COMMAND [ARGS…]`
//! e.g. with the test server:
//! `… -- 500 echo '{"text":"hi"}' target/release/pinch-mcp-test-server`
//! COMMAND `--bridge PINCH` measures the CLI-engine path instead: a
//! [`BridgeServer`] whose handler echoes, served by `PINCH runner mcp`.

use std::time::Instant;

use pinch_mcp::bridge::BridgeServer;
use pinch_mcp::{McpClients, McpServerConfig};

fn main() {
    let mut a = std::env::args().skip(1);
    let usage = "usage: mcp_roundtrip N TOOL ARGS_JSON COMMAND [ARGS…]";
    let n: usize = a.next().and_then(|s| s.parse().ok()).expect(usage);
    let tool = a.next().expect(usage);
    let args_json = a.next().expect(usage);
    let command = a.next().expect(usage);
    let (cfg, _bridge, _dir) = if command == "--bridge" {
        let pinch = a.next().expect("--bridge needs the pinch executable");
        let dir = std::env::temp_dir().join(format!("mcp-roundtrip-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let sock = dir.join("tools.sock");
        let spec = pinch_providers::ToolSpec {
            name: tool.clone(),
            description: "echo".into(),
            parameters: serde_json::json!({"type": "object"}),
        };
        let bridge = BridgeServer::start(
            &sock,
            vec![spec],
            None,
            Box::new(|_, args| (args.to_owned(), false)),
        )
        .expect("bridge");
        let args = vec![
            "runner".into(),
            "mcp".into(),
            "--socket".into(),
            sock.to_string_lossy().into_owned(),
        ];
        (
            McpServerConfig {
                name: "m".into(),
                command: pinch,
                args,
                ..Default::default()
            },
            Some(bridge),
            Some(dir),
        )
    } else {
        (
            McpServerConfig {
                name: "m".into(),
                command,
                args: a.collect(),
                ..Default::default()
            },
            None,
            None,
        )
    };
    let t0 = Instant::now();
    let (mut c, failed) = McpClients::start(&[cfg]);
    let start_ms = t0.elapsed().as_secs_f64() * 1e3;
    assert!(failed.is_empty(), "{failed:?}");
    let name = format!("m__{tool}");
    let mut ms = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let r = c.call(&name, &args_json, None).expect("call");
        ms.push(t.elapsed().as_secs_f64() * 1e3);
        assert!(!r.is_error, "{}", r.content);
    }
    ms.sort_by(|a, b| a.total_cmp(b));
    let pct = |p: f64| ms[((p * ms.len() as f64).ceil() as usize).clamp(1, ms.len()) - 1];
    drop(c);
    drop(_bridge);
    if let Some(d) = &_dir {
        let _ = std::fs::remove_dir_all(d);
    }
    println!("start+handshake+list: {start_ms:.1} ms; {n} calls of {tool}: p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms", pct(0.5), pct(0.99), pct(1.0));
}
