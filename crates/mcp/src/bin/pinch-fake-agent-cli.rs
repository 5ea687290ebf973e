//! A stand-in for an agent CLI (Claude Code and the like) in pinch's tests
//! of the CLI engine. Not shipped for use; built by the tests.
//!
//! `pinch-fake-agent-cli --mcp-config FILE [--system-prompt-file FILE]`:
//! reads the prompt on stdin; starts the `pinch` MCP server named in FILE
//! (`{"mcpServers":{"pinch":{"command":…,"args":[…]}}}`) with rmcp's client
//! (through pinch-mcp); lists its tools; calls `shell` with
//! `echo from-cli-engine` and `send_message`; if `ANTHROPIC_BASE_URL` is
//! set, POSTs one request to `$ANTHROPIC_BASE_URL/v1/messages` with the key
//! it was given; writes its whole environment to `cli-env.txt` in its
//! working directory; prints a final answer with what it saw.
//! A prompt containing `please fail` makes it exit 3 with a message on
//! stderr.

use std::io::{Read, Write};

use pinch_mcp::{McpClients, McpServerConfig};

fn main() {
    match run() {
        Ok(answer) => println!("{answer}"),
        Err(e) => {
            eprintln!("fake agent cli: {e}");
            std::process::exit(3);
        }
    }
}

fn run() -> Result<String, String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let flag = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let config = flag("--mcp-config").ok_or("give --mcp-config FILE")?;
    let mut prompt = String::new();
    std::io::stdin()
        .read_to_string(&mut prompt)
        .map_err(|e| format!("reading stdin: {e}"))?;
    if prompt.contains("please fail") {
        return Err("failing as asked".into());
    }
    let system = match flag("--system-prompt-file") {
        Some(p) => std::fs::read_to_string(&p).map_err(|e| format!("reading {p}: {e}"))?,
        None => String::new(),
    };
    let env: Vec<(String, String)> = std::env::vars().collect();
    let dump: String = env.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
    std::fs::write("cli-env.txt", dump).map_err(|e| format!("writing cli-env.txt: {e}"))?;

    let text = std::fs::read_to_string(&config).map_err(|e| format!("reading {config}: {e}"))?;
    let v: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("parsing {config}: {e}"))?;
    let s = &v["mcpServers"]["pinch"];
    let server = McpServerConfig {
        name: "pinch".into(),
        command: s["command"]
            .as_str()
            .ok_or("mcpServers.pinch.command missing")?
            .into(),
        args: s["args"]
            .as_array()
            .ok_or("mcpServers.pinch.args missing")?
            .iter()
            .filter_map(|a| a.as_str().map(str::to_owned))
            .collect(),
        ..Default::default()
    };
    let (mut mcp, failed) = McpClients::start(&[server]);
    if let Some(f) = failed.first() {
        return Err(format!("the pinch MCP server did not start: {f:?}"));
    }
    let names: Vec<String> = mcp.tools().iter().map(|t| t.name.clone()).collect();
    let shell = mcp
        .call(
            "pinch__shell",
            r#"{"command": "echo from-cli-engine"}"#,
            None,
        )
        .map_err(|e| e.to_string())?;
    let sent = mcp
        .call(
            "pinch__send_message",
            r#"{"text": "progress from the fake agent CLI"}"#,
            None,
        )
        .map_err(|e| e.to_string())?;
    drop(mcp);

    let key = std::env::var("ANTHROPIC_API_KEY").unwrap_or_default();
    let api = match std::env::var("ANTHROPIC_BASE_URL") {
        Ok(base) => post(&base, &key).unwrap_or_else(|e| format!("request failed: {e}")),
        Err(_) => "no ANTHROPIC_BASE_URL".into(),
    };
    Ok(format!(
        "fake-cli answer: shell said [{}] (error: {}); send_message error: {}; tools: {}; key is placeholder: {}; \
         prompt bytes: {}; system prompt bytes: {}; api said [{}]",
        shell.content.trim().replace('\n', " | "),
        shell.is_error,
        sent.is_error,
        names.len(),
        if key == "pinch-placeholder" { "yes" } else { "no" },
        prompt.len(),
        system.len(),
        api.trim()
    ))
}

/// One HTTP/1.1 POST to `<base>/v1/messages` (base `http://host:port/prefix`).
fn post(base: &str, key: &str) -> Result<String, String> {
    let rest = base
        .strip_prefix("http://")
        .ok_or("ANTHROPIC_BASE_URL is not http://")?;
    let (addr, prefix) = rest
        .split_once('/')
        .map(|(a, p)| (a, format!("/{p}")))
        .unwrap_or((rest, String::new()));
    let body = r#"{"model":"fake","max_tokens":16,"messages":[{"role":"user","content":"hi"}]}"#;
    let mut s =
        std::net::TcpStream::connect(addr).map_err(|e| format!("connecting to {addr}: {e}"))?;
    write!(
        s,
        "POST {prefix}/v1/messages HTTP/1.1\r\nhost: {addr}\r\nx-api-key: {key}\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .map_err(|e| e.to_string())?;
    let mut resp = String::new();
    s.read_to_string(&mut resp).map_err(|e| e.to_string())?;
    Ok(resp
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or(resp))
}
