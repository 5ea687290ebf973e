//! The CLI engine (SPEC §5.5) end to end, in a real bwrap sandbox: the
//! runner runs an agent CLI (a fake one, `pinch-fake-agent-cli` from
//! pinch-mcp, copied into the agent's folder so the sandbox can see it) as
//! its provider; the CLI starts `pinch runner mcp` from the MCP config it
//! is given, calls pinch's `shell` and `send_message` through it, talks to
//! a fake model API through the egress forwarder and the credential proxy,
//! and prints its answer. The user gets the message and the answer; the
//! host's key reaches the API and nowhere in the CLI's environment.

use std::io::Write;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

use crate::common::fake_api::read_request;
use crate::common::*;
use pinch_host::proxy::{Secret, Upstream};
use pinch_host::sandbox::Choice;
use pinch_proto::runner_config::{CliEngineSettings, ProviderSettings};

const KEY: &str = "sk-ant-host-only-93d2";

/// The fake agent CLI (a bin of pinch-mcp) next to the pinch binary. A
/// workspace test run (`scripts/test`) builds it with everything else; a
/// run of this crate alone may not have it, so it is built then (slow: a
/// one-package build resolves features differently).
fn fake_cli() -> PathBuf {
    let p = Path::new(PINCH)
        .parent()
        .unwrap()
        .join("pinch-fake-agent-cli");
    if p.exists() {
        return p;
    }
    let out = Command::new(env!("CARGO"))
        .args([
            "build",
            "--quiet",
            "-p",
            "pinch-mcp",
            "--bin",
            "pinch-fake-agent-cli",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("running cargo build for the fake agent CLI");
    assert!(
        out.status.success(),
        "building pinch-fake-agent-cli failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(p.exists(), "{} missing after the build", p.display());
    p
}

/// A fake Anthropic API on loopback: records each request head, answers JSON.
fn fake_anthropic() -> (u16, Arc<Mutex<Vec<String>>>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let s2 = seen.clone();
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(mut c) = conn else { continue };
            let (head, _body) = read_request(&c);
            s2.lock().unwrap().push(head);
            let reply = r#"{"type":"message","content":[{"type":"text","text":"hello from fake anthropic"}]}"#;
            let _ = write!(c, "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{reply}", reply.len());
        }
    });
    (port, seen)
}

#[test]
fn an_agent_cli_uses_pinch_tools_over_mcp_and_never_sees_the_key() {
    if !bwrap_or_skip() {
        return;
    }
    let fake = fake_cli();
    let (port, seen) = fake_anthropic();
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = host_config(tmp.path(), Choice::Bwrap);
    cfg.provider = ProviderSettings {
        kind: "cli".into(),
        cli: Some(CliEngineSettings {
            command: "/workspace/agent/fake-agent-cli".into(),
            args: Some(vec![
                "--mcp-config".into(),
                "{mcp_config}".into(),
                "--system-prompt-file".into(),
                "{system_prompt_file}".into(),
            ]),
            timeout_s: Some(120),
            ..Default::default()
        }),
        ..Default::default()
    };
    cfg.proxy_upstreams = vec![Upstream::new(
        "anthropic",
        format!("http://127.0.0.1:{port}"),
        Some(("x-api-key".into(), Secret::new(KEY.to_owned()))),
    )];
    let rt = rt();
    let host = rt.block_on(pinch_host::start(cfg)).unwrap();
    // The agent's folder is /workspace/agent in the sandbox.
    let agent_dir = tmp.path().join("data/groups/main");
    std::fs::create_dir_all(&agent_dir).unwrap();
    let exe = agent_dir.join("fake-agent-cli");
    std::fs::copy(&fake, &exe).unwrap();
    std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();

    let mut c = Client::connect(&host.cli_socket);
    let replies = c.ask("hello engine");
    assert_eq!(
        replies.len(),
        2,
        "the send_message text, then the answer: {replies:?}"
    );
    assert_eq!(replies[0], "progress from the fake agent CLI");
    let answer = &replies[1];
    assert!(
        answer.starts_with(
            "fake-cli answer: shell said [exit code: 0 | from-cli-engine] (error: false)"
        ),
        "{answer}"
    );
    assert!(answer.contains("send_message error: false"), "{answer}");
    assert!(answer.contains("key is placeholder: yes"), "{answer}");
    assert!(
        answer.contains("hello from fake anthropic"),
        "the API answered through the proxy: {answer}"
    );
    let system_bytes: usize = answer
        .split("system prompt bytes: ")
        .nth(1)
        .and_then(|s| s.split(';').next())
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        system_bytes > 100,
        "the system prompt reached the CLI by file: {answer}"
    );

    // The API saw the host's key, never the placeholder.
    let heads = seen.lock().unwrap().clone();
    assert_eq!(heads.len(), 1, "{heads:?}");
    assert!(heads[0].starts_with("POST /v1/messages "), "{}", heads[0]);
    assert!(
        heads[0].contains(KEY),
        "the proxy injected the key: {}",
        heads[0]
    );
    assert!(
        !heads[0].contains("pinch-placeholder"),
        "the placeholder was stripped: {}",
        heads[0]
    );

    // The CLI's environment: placeholder keys, API base through the
    // forwarder, and the real key nowhere.
    let env = std::fs::read_to_string(agent_dir.join("cli-env.txt")).unwrap();
    assert!(
        !env.contains(KEY),
        "the key leaked into the CLI's environment:\n{env}"
    );
    assert!(
        env.contains("ANTHROPIC_API_KEY=pinch-placeholder\n"),
        "{env}"
    );
    assert!(
        env.lines()
            .any(|l| l.starts_with("ANTHROPIC_BASE_URL=http://127.0.0.1:")
                && l.ends_with("/anthropic")),
        "{env}"
    );
    assert!(
        !env.contains("PINCH_HOST_FD="),
        "the liveness fd is the runner's own: {env}"
    );

    // The CLI was recorded as the tool in flight, and cleared after.
    let s = rt.block_on(host.sessions()).remove(0);
    // The runner's account of the turn (figures for `--no-capture` runs).
    for f in walk(&tmp.path().join("data"))
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
    {
        for l in std::fs::read_to_string(&f)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("agent CLI") || l.contains("turn done"))
        {
            eprintln!("runner log: {l}");
        }
    }
    let out = outbound(&s.dir);
    let tool: Option<String> = out
        .query_row("SELECT current_tool FROM container_state", [], |r| r.get(0))
        .unwrap();
    assert_eq!(tool, None);

    // A CLI that fails is a provider error the user is told about.
    let replies = c.ask("please fail now");
    assert_eq!(replies.len(), 1, "{replies:?}");
    assert!(
        replies[0].contains("could not answer")
            && replies[0].contains("exit code 3")
            && replies[0].contains("failing as asked"),
        "{}",
        replies[0]
    );
    rt.block_on(host.shutdown()).unwrap();
}

/// Claude Code refuses bypass-permissions mode as root unless `IS_SANDBOX=1`
/// (issue 15: `[provider.cli]` flavor `claude` failed when pinch ran as
/// root). A stand-in `claude` with the same guard runs in a real bwrap
/// sandbox with the flavor's own arguments; as root it answers only when the
/// runner told it it is sandboxed.
#[test]
fn the_claude_flavor_runs_as_root_in_the_sandbox() {
    if !bwrap_or_skip() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = host_config(tmp.path(), Choice::Bwrap);
    cfg.provider = ProviderSettings {
        kind: "cli".into(),
        cli: Some(CliEngineSettings {
            command: "/workspace/agent/claude".into(),
            flavor: Some("claude".into()),
            timeout_s: Some(60),
            ..Default::default()
        }),
        ..Default::default()
    };
    let rt = rt();
    let host = rt.block_on(pinch_host::start(cfg)).unwrap();
    let agent_dir = tmp.path().join("data/groups/main");
    std::fs::create_dir_all(&agent_dir).unwrap();
    let exe = agent_dir.join("claude");
    // Claude Code's root guard (cli.js): uid 0, bypass mode, and neither
    // IS_SANDBOX=1 nor CLAUDE_CODE_BUBBLEWRAP=1 → refuse and exit 1.
    std::fs::write(
        &exe,
        r#"#!/bin/sh
cat >/dev/null
case " $* " in *" bypassPermissions "*|*" --dangerously-skip-permissions "*) bypass=1;; *) bypass=0;; esac
if [ "$bypass" = 1 ] && [ "$(id -u)" = 0 ] && [ "$IS_SANDBOX" != 1 ] && [ "$CLAUDE_CODE_BUBBLEWRAP" != 1 ]; then
  echo "--dangerously-skip-permissions cannot be used with root/sudo privileges for security reasons" >&2
  exit 1
fi
echo "claude answered as uid $(id -u)"
"#,
    )
    .unwrap();
    std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut c = Client::connect(&host.cli_socket);
    let replies = c.ask("hello claude");
    let uid = unsafe { libc::getuid() };
    assert_eq!(
        replies,
        [format!("claude answered as uid {uid}")],
        "the root guard let it run"
    );
    rt.block_on(host.shutdown()).unwrap();
}
