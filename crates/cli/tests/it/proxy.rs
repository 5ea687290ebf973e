//! The credential proxy, attacked and used from inside a real bwrap sandbox
//! (docs/targets.md S2, S3): the only way out is the session's proxy socket; a
//! model API route reaches its upstream with the host's key injected and
//! the sandbox's own credential stripped; anything else is refused; the key
//! is nowhere the agent can see.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};

use crate::common::fake_api::read_request;
use crate::common::*;
use pinch_host::proxy::{Secret, Upstream};
use pinch_host::sandbox::{Bwrap, Choice, Mounts};

const KEY: &str = "sk-host-only-4f1c";

/// Runs a scripted `pinch chat` with one line, the key in `key_var` and no
/// other provider variables; returns its stdout (asserting success).
fn chat_once(tmp: &Path, cfg: &Path, sandbox: &str, key_var: &str, line: &str) -> String {
    let mut child = Command::new(PINCH)
        .args([
            "chat",
            "--timeout",
            "30",
            "--sandbox",
            sandbox,
            "--data-dir",
        ])
        .arg(tmp.join("data"))
        .arg("--config")
        .arg(cfg)
        .env_remove("OPENAI_API_KEY")
        .env_remove("OPENAI_BASE_URL")
        .env_remove("ANTHROPIC_API_KEY")
        .env(key_var, KEY)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{line}\n").as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// A fake model API on loopback: records each request, answers JSON.
fn fake_upstream() -> (u16, Arc<Mutex<Vec<String>>>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let s2 = seen.clone();
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(mut c) = conn else { continue };
            let (mut head, body) = read_request(&c);
            head.push_str(&String::from_utf8_lossy(&body));
            s2.lock().unwrap().push(head);
            let reply = "{\"choices\":[{\"message\":{\"content\":\"hi from the fake\"}}]}";
            let _ = write!(c, "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{reply}", reply.len());
        }
    });
    (port, seen)
}

#[test]
fn s2_s3_only_the_proxy_is_reachable_and_it_holds_the_key() {
    if !bwrap_or_skip() {
        return;
    }
    let (port, seen) = fake_upstream();
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = host_config(tmp.path(), Choice::Bwrap);
    cfg.proxy_upstreams = vec![Upstream::new(
        "openai",
        format!("http://127.0.0.1:{port}/v1"),
        Some(("authorization".into(), Secret::new(format!("Bearer {KEY}")))),
    )];
    let rt = rt();
    let host = rt.block_on(pinch_host::start(cfg)).unwrap();
    let mut c = Client::connect(&host.cli_socket);
    assert_eq!(c.ask("spawn a runner").len(), 1);
    let s = rt.block_on(host.sessions()).remove(0);
    let data = tmp.path().join("data");
    let proxy_dir = data.join("run/proxy").join(&s.id);
    assert!(
        proxy_dir.join("llm.sock").exists(),
        "the session's proxy socket"
    );

    // A shell in exactly the runner's sandbox.
    let mounts = Mounts {
        in_dir: s.dir.join("in"),
        out_dir: s.dir.join("out"),
        inbox_dir: s.dir.join("inbox"),
        outbox_dir: s.dir.join("outbox"),
        agent_dir: data.join("groups/main"),
        global_dir: data.join("groups/global"),
        proxy_dir: Some(proxy_dir),
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
    let curl = "curl -s -m 5 --unix-socket /pinch/run/llm.sock";
    // The model route works, with the sandbox's own credential replaced.
    let out = sh(&format!("{curl} -H 'Authorization: Bearer sandbox-fake' -H 'content-type: application/json' -d '{{\"model\":\"m\"}}' http://proxy/openai/chat/completions"));
    assert!(out.contains("hi from the fake"), "{out}");
    let req = seen.lock().unwrap().last().cloned().unwrap();
    assert!(
        req.starts_with("POST /v1/chat/completions HTTP/1.1"),
        "{req}"
    );
    assert!(
        req.contains(&format!("authorization: Bearer {KEY}")),
        "the host's key was injected: {req}"
    );
    assert!(
        !req.contains("sandbox-fake"),
        "the sandbox's credential was stripped: {req}"
    );
    assert!(req.ends_with("{\"model\":\"m\"}"), "{req}");
    // Anything else through the proxy is refused.
    let out = sh(&format!(
        "{curl} -w ' %{{http_code}}' http://proxy/elsewhere/steal"
    ));
    assert!(out.ends_with(" 403"), "{out}");
    // No direct network: not the fake upstream on loopback, not the world.
    let out = sh(&format!("curl -s -m 3 -o /dev/null -w '%{{http_code}}' http://127.0.0.1:{port}/v1/models; echo \" exit=$?\""));
    assert!(
        out.contains("000") && !out.contains("exit=0"),
        "direct network worked: {out}"
    );
    // S3: the key is not in the runner's environment, its config or its files.
    for pid in process_tree(s.runner_pid.unwrap()) {
        let env = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
        assert!(
            !String::from_utf8_lossy(&env).contains(KEY),
            "key in the environment of {pid}"
        );
    }
    let out = sh(&format!("grep -rl '{KEY}' /pinch /workspace /tmp /proc/self/environ 2>/dev/null; env | grep -c '{KEY}'"));
    assert_eq!(
        out.trim(),
        "0",
        "the key is visible inside the sandbox: {out}"
    );
    rt.block_on(host.shutdown()).unwrap();
}

/// A fake OpenAI-compatible server that streams its answer as SSE in a
/// chunked body, the way real servers do.
fn fake_openai_streaming() -> (u16, Arc<Mutex<Vec<String>>>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let s2 = seen.clone();
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(mut c) = conn else { continue };
            let (mut head, body) = read_request(&c);
            let req: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            head.push_str(&String::from_utf8_lossy(&body));
            s2.lock().unwrap().push(head);
            let _ = write!(c, "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n");
            let asked = req["messages"]
                .as_array()
                .and_then(|m| m.last())
                .and_then(|m| m["content"].as_str())
                .unwrap_or("")
                .to_owned();
            let words = [
                "Streamed ",
                "hello ",
                "from ",
                &format!("model {}", req["model"].as_str().unwrap_or("?")),
            ];
            for w in words {
                let ev = format!(
                    "data: {}\n\n",
                    serde_json::json!({"choices": [{"delta": {"content": w}}]})
                );
                let _ = write!(c, "{:x}\r\n{ev}\r\n", ev.len());
            }
            let tail = format!(
                "data: {}\n\ndata: [DONE]\n\n",
                serde_json::json!({"choices": [{"delta": {"content": if asked.contains("hello") { "!" } else { "?" }}}]})
            );
            let _ = write!(c, "{:x}\r\n{tail}\r\n0\r\n\r\n", tail.len());
        }
    });
    (port, seen)
}

/// `pinch chat` with the `openai` provider: the runner in bwrap streams the
/// answer through the proxy; the key comes from the host's environment.
#[test]
fn pinch_chat_with_an_openai_compatible_server_through_the_proxy() {
    let sandbox = if pinch_host::sandbox::select(Choice::Bwrap).is_ok() {
        "bwrap"
    } else {
        "process"
    };
    let (port, seen) = fake_openai_streaming();
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("pinch.toml");
    std::fs::write(&cfg, format!("[provider]\ndefault = \"openai\"\n[provider.openai]\nbase_url = \"http://127.0.0.1:{port}/v1\"\nmodel = \"tiny-test\"\n")).unwrap();
    let stdout = chat_once(tmp.path(), &cfg, sandbox, "OPENAI_API_KEY", "hello model");
    assert_eq!(stdout, "Streamed hello from model tiny-test!\n");
    let req = seen.lock().unwrap().last().cloned().unwrap();
    assert!(req.starts_with("POST /v1/chat/completions"), "{req}");
    assert!(
        req.contains(&format!("authorization: Bearer {KEY}")),
        "{req}"
    );
    assert!(
        req.contains("hello model"),
        "the formatted batch was sent: {req}"
    );
    // The system prompt carries the convention and the operator's AGENT.md.
    let body: serde_json::Value = serde_json::from_str(&req[req.find('{').unwrap()..]).unwrap();
    assert_eq!(body["messages"][0]["role"], "system", "{body}");
    let sys = body["messages"][0]["content"].as_str().unwrap();
    assert!(
        sys.contains("<message to=")
            && sys.contains("You are a helpful personal assistant")
            && sys.contains("- terminal (channel)"),
        "{sys}"
    );
    // The key never reached the sandbox's configuration.
    for f in walk(&tmp.path().join("data")) {
        if f.file_name().is_some_and(|n| n == "runner.json") {
            assert!(!std::fs::read_to_string(&f).unwrap().contains(KEY));
        }
    }
}

/// `https://` upstreams: the proxy speaks TLS (rustls), verifying the
/// server against its roots; here a test CA added as an extra root.
#[test]
fn the_proxy_reaches_https_upstreams_and_verifies_them() {
    use std::os::unix::net::UnixStream;
    let (server_cfg, cert_der, _) = crate::common::https::self_signed(&["localhost"]);
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let s2 = seen.clone();
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(tcp) = conn else { continue };
            let tls = rustls::ServerConnection::new(server_cfg.clone()).unwrap();
            let mut s = rustls::StreamOwned::new(tls, tcp);
            let mut head = Vec::new();
            let mut b = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") {
                if s.read(&mut b).unwrap_or(0) == 0 {
                    break;
                }
                head.push(b[0]);
            }
            // Read the request body too: closing with unread bytes makes
            // the kernel send a reset, which can destroy the answer in
            // flight (a flake seen once in CI).
            let text = String::from_utf8_lossy(&head).to_string();
            let len = text
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                })
                .unwrap_or(0);
            let mut body_in = vec![0u8; len];
            let _ = s.read_exact(&mut body_in);
            s2.lock().unwrap().push(text);
            let body = "{\"ok\":\"over tls\"}";
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
    let mut cfg = host_config(tmp.path(), Choice::Process);
    cfg.proxy_upstreams = vec![Upstream::new(
        "openai",
        format!("https://localhost:{port}/v1"),
        Some(("authorization".into(), Secret::new(format!("Bearer {KEY}")))),
    )];
    let rt = rt();
    let ask = |cfg: pinch_host::HostConfig| -> String {
        let host = rt.block_on(pinch_host::start(cfg)).unwrap();
        let mut c = Client::connect(&host.cli_socket);
        assert_eq!(c.ask("spawn").len(), 1);
        let s = rt.block_on(host.sessions()).remove(0);
        let sock = tmp
            .path()
            .join("data/run/proxy")
            .join(&s.id)
            .join("llm.sock");
        let mut u = UnixStream::connect(&sock).unwrap();
        write!(
            u,
            "POST /openai/models HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\n{{}}"
        )
        .unwrap();
        let mut out = String::new();
        u.read_to_string(&mut out).unwrap();
        rt.block_on(host.shutdown()).unwrap();
        out
    };
    // Without the test CA the upstream is refused: verification is real.
    let out = ask(cfg.clone());
    assert!(
        out.starts_with("HTTP/1.1 502") && out.contains("TLS to upstream openai failed"),
        "{out}"
    );
    cfg.proxy_extra_roots = vec![cert_der];
    let out = ask(cfg);
    assert!(
        out.starts_with("HTTP/1.1 200") && out.ends_with("{\"ok\":\"over tls\"}"),
        "{out}"
    );
    let req = seen.lock().unwrap().last().cloned().unwrap();
    assert!(
        req.starts_with("POST /v1/models HTTP/1.1")
            && req.contains(&format!("authorization: Bearer {KEY}")),
        "{req}"
    );
}

/// `pinch chat` with the `anthropic` provider against a fake Messages API
/// streaming SSE events; the proxy adds `x-api-key`.
#[test]
fn pinch_chat_with_the_anthropic_messages_api_through_the_proxy() {
    let sandbox = if pinch_host::sandbox::select(Choice::Bwrap).is_ok() {
        "bwrap"
    } else {
        "process"
    };
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let s2 = seen.clone();
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(mut c) = conn else { continue };
            let (mut head, body) = read_request(&c);
            head.push_str(&String::from_utf8_lossy(&body));
            s2.lock().unwrap().push(head);
            let events = [
                r#"{"type":"message_start","message":{"usage":{"input_tokens":12}}}"#,
                r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Claude-ish "}}"#,
                r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"says hi"}}"#,
                r#"{"type":"message_delta","usage":{"output_tokens":4}}"#,
                r#"{"type":"message_stop"}"#,
            ];
            let _ = write!(
                c,
                "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n"
            );
            for e in events {
                let kind = e.split('"').nth(3).unwrap_or("x");
                let _ = write!(c, "event: {kind}\ndata: {e}\n\n");
            }
        }
    });
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("pinch.toml");
    std::fs::write(&cfg, format!("[provider]\ndefault = \"anthropic\"\n[provider.anthropic]\nbase_url = \"http://127.0.0.1:{port}\"\nmodel = \"claude-test\"\n")).unwrap();
    let stdout = chat_once(
        tmp.path(),
        &cfg,
        sandbox,
        "ANTHROPIC_API_KEY",
        "hello claude",
    );
    assert_eq!(stdout, "Claude-ish says hi\n");
    let req = seen.lock().unwrap().last().cloned().unwrap();
    assert!(req.starts_with("POST /v1/messages HTTP/1.1"), "{req}");
    assert!(
        req.contains(&format!("x-api-key: {KEY}")) && req.contains("anthropic-version: 2023-06-01"),
        "{req}"
    );
    assert!(
        req.contains("\"model\":\"claude-test\"") && req.contains("hello claude"),
        "{req}"
    );
}
