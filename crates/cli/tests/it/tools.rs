//! The agent loop and the built-in tools through the real binary: host,
//! runner in a bwrap sandbox, a scripted model that calls tools, real
//! processes and files (SPEC §5.5, §5.6, §7.8; lessons 13, 20, 32, 33).

use std::path::PathBuf;
use std::time::Duration;

use crate::common::*;
use pinch_host::sandbox::Choice;

/// Scripted model: each trigger phrase calls one tool; after any tool
/// result it answers with the result.
const SCRIPT: &str = r#"
[[rule]]
contains = "run-echo"
tool = "shell"
args = { command = "echo hi-from-shell; pwd" }

[[rule]]
contains = "run-timeout"
tool = "shell"
args = { command = "sleep 300 & echo $! > bg.pid; sleep 300", timeout_s = 1 }

[[rule]]
contains = "check-bg"
tool = "shell"
args = { command = "P=$(cat bg.pid); if [ -d /proc/$P ] && ! grep -q '^State:.*Z' /proc/$P/status; then echo ALIVE; else echo GONE; fi" }

[[rule]]
contains = "make-link"
tool = "shell"
args = { command = "ln -s /etc etc-link && echo linked" }

[[rule]]
contains = "read-etc-link"
tool = "read_file"
args = { path = "etc-link/passwd" }

[[rule]]
contains = "read-dotdot"
tool = "read_file"
args = { path = "../../../etc/passwd" }

[[rule]]
contains = "read-absolute"
tool = "read_file"
args = { path = "/etc/passwd" }

[[rule]]
contains = "make-file"
tool = "write_file"
args = { path = "report.txt", content = "quarterly numbers" }

[[rule]]
contains = "send-it"
tool = "send_file"
args = { path = "report.txt", text = "here you go" }

[[rule]]
contains = "wait-for-go"
tool = "shell"
args = { command = "while [ ! -e go ]; do sleep 0.05; done; echo released", timeout_s = 120 }

[[rule]]
after_tool = "shell"
contains = "one more thing"
reply = "after the wait, the batch was: {text}"

[[rule]]
contains = "loop-forever"
tool = "shell"
args = { command = "echo again" }

[[rule]]
after_tool = "shell"
contains = "loop-forever"
reply = "still looping at step {step}"
tool = "shell"
args = { command = "echo again" }

[[rule]]
contains = "use-skill"
tool = "load_skill"
args = { name = "summarise-web-page" }

[[rule]]
after_tool = "*"
reply = "tool said: {tool_result}"
"#;

struct Setup {
    tmp: tempfile::TempDir,
    rt: tokio::runtime::Runtime,
    host: pinch_host::HostHandle,
    client: Client,
}

fn start(choice: Choice, tune: impl FnOnce(&mut pinch_host::HostConfig)) -> Setup {
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = with_script(host_config(tmp.path(), choice), SCRIPT);
    tune(&mut cfg);
    let rt = rt();
    let host = rt.block_on(pinch_host::start(cfg)).unwrap();
    let client = Client::connect(&host.cli_socket);
    Setup {
        tmp,
        rt,
        host,
        client,
    }
}

impl Setup {
    fn workspace(&self) -> PathBuf {
        let p = self.tmp.path().join("data/groups/main");
        assert!(p.is_dir(), "the main group's folder is {}", p.display());
        p
    }

    fn session_dir(&self) -> PathBuf {
        self.rt.block_on(self.host.sessions())[0].dir.clone()
    }

    fn runner_logs(&self) -> String {
        walk(&self.tmp.path().join("data/logs/runners"))
            .into_iter()
            .filter(|p| p.extension().is_some_and(|x| x == "log"))
            .map(|p| std::fs::read_to_string(p).unwrap())
            .collect()
    }

    fn stop(self) {
        self.rt.block_on(self.host.shutdown()).unwrap();
    }
}

/// Waits until the message `id` (as the CLI channel named it) is in the
/// session's `inbound.db`.
fn wait_in_inbound(dir: &std::path::Path, id: &str) {
    wait_for("the message in inbound.db", Duration::from_secs(30), || {
        inbound(dir)
            .query_row(
                "SELECT count(*) FROM messages_in WHERE id = ?1",
                [format!("{id}:main")],
                |r| r.get::<_, i64>(0),
            )
            .unwrap()
            == 1
    });
}

fn one(replies: Vec<String>) -> String {
    assert_eq!(replies.len(), 1, "{replies:?}");
    replies.into_iter().next().unwrap()
}

#[test]
fn shell_round_trip_reaches_the_user() {
    if !bwrap_or_skip() {
        return;
    }
    let mut s = start(Choice::Bwrap, |_| {});
    let reply = one(s.client.ask("please run-echo"));
    assert_eq!(
        reply,
        "tool said: exit code: 0\nhi-from-shell\n/workspace/agent"
    );
    // The steps were recorded in the conversation; the history a next turn
    // gets stays user prompt + final answer.
    let out = outbound(&s.session_dir());
    let roles: Vec<String> = out
        .prepare("SELECT role FROM conversation ORDER BY idx")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(roles, vec!["step", "step", "user", "assistant"]);
    let step0: String = out
        .query_row("SELECT content FROM conversation WHERE idx = 0", [], |r| {
            r.get(0)
        })
        .unwrap();
    let step0: pinch_providers::Step = serde_json::from_str(&step0).unwrap();
    assert!(
        matches!(step0, pinch_providers::Step::Assistant { ref calls, .. } if calls[0].name == "shell"),
        "{step0:?}"
    );
    assert!(s.runner_logs().contains("tool call"));
    s.stop();
}

#[test]
fn shell_timeout_kills_the_process_group() {
    if !bwrap_or_skip() {
        return;
    }
    let mut s = start(Choice::Bwrap, |_| {});
    let reply = one(s.client.ask("run-timeout"));
    assert!(
        reply.starts_with("tool said: timed out after 1 s"),
        "{reply}"
    );
    // The background sleep the command started died with the group.
    let reply = one(s.client.ask("check-bg"));
    assert_eq!(reply, "tool said: exit code: 0\nGONE");
    s.stop();
}

#[test]
fn path_escapes_are_refused_and_the_turn_completes() {
    if !bwrap_or_skip() {
        return;
    }
    let mut s = start(Choice::Bwrap, |_| {});
    assert_eq!(
        one(s.client.ask("make-link")),
        "tool said: exit code: 0\nlinked"
    );
    for ask in ["read-etc-link", "read-dotdot", "read-absolute"] {
        let reply = one(s.client.ask(ask));
        assert!(
            reply.starts_with("tool said: path escapes the workspace"),
            "{ask}: {reply}"
        );
        assert!(
            !reply.contains("root:"),
            "{ask}: no file content leaked: {reply}"
        );
    }
    // Each turn completed: nothing left claimed.
    let out = outbound(&s.session_dir());
    let processing: i64 = out
        .query_row(
            "SELECT count(*) FROM processing_ack WHERE status = 'processing'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(processing, 0);
    s.stop();
}

#[test]
fn send_file_copies_into_the_outbox_and_the_cli_shows_it() {
    if !bwrap_or_skip() {
        return;
    }
    let mut s = start(Choice::Bwrap, |_| {});
    assert_eq!(
        one(s.client.ask("make-file")),
        "tool said: wrote 17 bytes to /workspace/agent/report.txt"
    );
    assert_eq!(
        std::fs::read_to_string(s.workspace().join("report.txt")).unwrap(),
        "quarterly numbers"
    );
    let replies = s.client.ask("send-it");
    assert_eq!(replies.len(), 2, "{replies:?}");
    assert_eq!(
        replies[0], "here you go\n[files: report.txt]",
        "the file message is delivered first, at once"
    );
    assert!(
        replies[1].starts_with("tool said: sent report.txt (message id "),
        "{}",
        replies[1]
    );
    let out = outbound(&s.session_dir());
    let id: String = out
        .query_row(
            "SELECT id FROM messages_out WHERE content LIKE '%\"files\"%'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let copy = s.session_dir().join("outbox").join(&id).join("report.txt");
    assert_eq!(
        std::fs::read_to_string(&copy).unwrap(),
        "quarterly numbers",
        "{}",
        copy.display()
    );
    s.stop();
}

#[test]
fn follow_up_joins_the_turn_while_a_tool_is_in_flight() {
    if !bwrap_or_skip() {
        return;
    }
    let mut s = start(Choice::Bwrap, |_| {});
    let first = s.client.say("wait-for-go", "a");
    let dir = s.session_dir();
    // container_state shows the shell in flight with its declared timeout.
    let mut seen = None;
    wait_for(
        "the shell tool in container_state",
        Duration::from_secs(60),
        || {
            let out = outbound(&dir);
            seen = out
            .query_row("SELECT current_tool, tool_declared_timeout_ms, tool_started_at FROM container_state WHERE id = 1", [], |r| {
                Ok((r.get::<_, Option<String>>(0)?, r.get::<_, Option<i64>>(1)?, r.get::<_, Option<String>>(2)?))
            })
            .ok();
            // (the model call before it is in flight too, as `model`)
            seen.as_ref()
                .is_some_and(|s| s.0.as_deref() == Some("shell"))
        },
    );
    let (tool, timeout, started) = seen.unwrap();
    assert_eq!(tool.as_deref(), Some("shell"));
    assert_eq!(timeout, Some(120_000));
    assert!(started.is_some());
    // A follow-up arrives mid-turn; the tool is released once it is in inbound.db.
    let second = s.client.say("and one more thing", "b");
    wait_in_inbound(&dir, &second);
    std::fs::write(s.workspace().join("go"), "").unwrap();
    let mut replies = s.client.until_settled(&first);
    replies.extend(s.client.until_settled(&second));
    assert_eq!(
        replies,
        vec!["after the wait, the batch was: wait-for-go\nand one more thing".to_string()],
        "one turn answered both"
    );
    let out = outbound(&dir);
    let tool: Option<String> = out
        .query_row(
            "SELECT current_tool FROM container_state WHERE id = 1",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(tool, None, "cleared after the tool");
    assert!(s.runner_logs().contains("follow-ups joined the turn"));
    s.stop();
}

/// A runner the host asked to stop (as after an approved MCP server)
/// finishes its turn without taking what arrived meanwhile: the next
/// runner answers it.
#[test]
fn a_runner_asked_to_stop_leaves_new_messages_to_the_next_runner() {
    if !bwrap_or_skip() {
        return;
    }
    let mut s = start(Choice::Bwrap, |_| {});
    let first = s.client.say("wait-for-go", "a");
    let dir = s.session_dir();
    wait_for("the shell tool in flight", Duration::from_secs(60), || {
        outbound(&dir)
            .query_row(
                "SELECT current_tool FROM container_state WHERE id = 1",
                [],
                |r| r.get::<_, Option<String>>(0),
            )
            .ok()
            .flatten()
            .as_deref()
            == Some("shell")
    });
    let old = s.rt.block_on(s.host.sessions())[0]
        .runner_id
        .clone()
        .unwrap();
    // What the host's request_stop writes.
    std::fs::write(dir.join("in/stop"), &old).unwrap();
    let second = s.client.say("and one more thing", "b");
    wait_in_inbound(&dir, &second);
    std::fs::write(s.workspace().join("go"), "").unwrap();
    let replies = s.client.until_settled(&first);
    assert!(
        replies.len() == 1 && !replies[0].contains("one more thing"),
        "the stopping runner answered only its own turn: {replies:?}"
    );
    let later = s.client.until_settled(&second);
    assert_eq!(later.len(), 1, "{later:?}");
    let now = s.rt.block_on(s.host.sessions())[0].runner_id.clone();
    assert_ne!(
        now.as_deref(),
        Some(old.as_str()),
        "a new runner answered it"
    );
    assert!(s.runner_logs().contains("wait for the next runner"));
    s.stop();
}

#[test]
fn step_limit_ends_the_turn_with_its_text() {
    let mut s = start(Choice::Process, |c| c.runner.max_steps = 3);
    let reply = one(s.client.ask("loop-forever"));
    assert_eq!(reply, "still looping at step 3");
    assert!(s.runner_logs().contains("step limit reached"));
    // The next message is answered normally: the loop did not wedge the session.
    assert_eq!(
        one(s.client.ask("run-echo")).lines().next(),
        Some("tool said: exit code: 0")
    );
    s.stop();
}

/// A shell command in the sandbox reaches an allowlisted host only through
/// the runner's forwarder and the proxy's CONNECT (SPEC §8.2); going
/// around the proxy fails, and a host off the list is refused.
#[test]
fn shell_reaches_only_allowlisted_hosts_through_the_proxy() {
    if !bwrap_or_skip() {
        return;
    }
    use std::io::{Read, Write};
    let http = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = http.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for c in http.incoming() {
            let Ok(mut c) = c else { continue };
            let mut buf = [0u8; 4096];
            let _ = c.read(&mut buf);
            let _ = c.write_all(
                b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\nconnection: close\r\n\r\negress-ok",
            );
        }
    });
    let other = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let other_port = other.local_addr().unwrap().port();
    let script = format!(
        r#"
[[rule]]
contains = "fetch"
tool = "shell"
args = {{ command = "curl -sS --max-time 10 --proxytunnel http://127.0.0.1:{port}/; echo; curl -sS --max-time 3 --noproxy '*' http://127.0.0.1:{port}/ || echo DIRECT-FAILED; curl -sS --max-time 10 --proxytunnel http://127.0.0.1:{other_port}/ || echo OTHER-REFUSED" }}

[[rule]]
after_tool = "*"
reply = "tool said: {{tool_result}}"
"#
    );
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = with_script(host_config(tmp.path(), Choice::Bwrap), &script);
    cfg.proxy_egress_allow = vec![format!("127.0.0.1:{port}")];
    let rt = rt();
    let host = rt.block_on(pinch_host::start(cfg)).unwrap();
    let mut client = Client::connect(&host.cli_socket);
    let reply = one(client.ask("fetch it"));
    assert!(
        reply.contains("egress-ok"),
        "the allowlisted host answered through the proxy: {reply}"
    );
    assert!(
        reply.contains("DIRECT-FAILED"),
        "no way around the proxy: {reply}"
    );
    assert!(
        reply.contains("OTHER-REFUSED") && reply.contains("403"),
        "a host off the list is refused: {reply}"
    );
    drop(other);
    rt.block_on(host.shutdown()).unwrap();
}

/// ask_user_question end to end (SPEC §7.3): the question reaches the CLI
/// with buttons, a click is recorded once as the answer, the waiting tool
/// returns it and the turn finishes; a second click is told it is too late.
#[test]
fn a_question_is_answered_by_a_click_once() {
    if !bwrap_or_skip() {
        return;
    }
    use pinch_channels::cli_socket::{ClientMsg, ServerMsg};
    let script = colour_question_script(60);
    let tmp = tempfile::tempdir().unwrap();
    let cfg = with_script(host_config(tmp.path(), Choice::Bwrap), &script);
    let rt = rt();
    let host = rt.block_on(pinch_host::start(cfg)).unwrap();
    let mut c = Client::connect(&host.cli_socket);
    let id = c.say("pick a colour", "q1");
    let (text, buttons) = c.until_buttons();
    assert!(text.contains("Which colour?"), "{text}");
    assert!(
        !c.settled.contains(&id),
        "settled before the question was answered"
    );
    assert_eq!(
        buttons.iter().map(|b| b.label.as_str()).collect::<Vec<_>>(),
        ["Red", "Blue"]
    );
    assert!(
        buttons
            .iter()
            .all(|b| b.callback.starts_with("q:") && b.callback.len() <= 64),
        "{buttons:?}"
    );
    c.send(&ClientMsg::Click {
        callback: buttons[1].callback.clone(),
    });
    let mut notices = Vec::new();
    let mut replies = Vec::new();
    loop {
        match c.recv().expect("host closed") {
            ServerMsg::Notice { text } => notices.push(text),
            ServerMsg::Message { id: oid, text, .. } => {
                c.send(&ClientMsg::Ack { id: oid });
                replies.push(text);
            }
            ServerMsg::Settled { ids, .. } if ids.contains(&id) => break,
            _ => {}
        }
    }
    assert_eq!(notices, ["Answered: Blue"]);
    assert_eq!(replies.len(), 1, "{replies:?}");
    assert!(
        replies[0].contains("the user chose: Blue (value b)"),
        "{replies:?}"
    );
    // Too late for a second answer.
    c.send(&ClientMsg::Click {
        callback: buttons[0].callback.clone(),
    });
    loop {
        if let ServerMsg::Notice { text } = c.recv().expect("host closed") {
            assert!(text.contains("already answered"), "{text}");
            break;
        }
    }
    // Exactly one answer row reached the session, and it is acked.
    let dir = rt.block_on(host.sessions())[0].dir.clone();
    let n: i64 = inbound(&dir).query_row("SELECT count(*) FROM messages_in WHERE kind = 'system' AND content LIKE '%question_response%'", [], |r| r.get(0)).unwrap();
    assert_eq!(n, 1);
    wait_for(
        "the answer row is completed",
        Duration::from_secs(10),
        || {
            inbound(&dir)
            .query_row("SELECT status FROM messages_in WHERE kind = 'system' AND content LIKE '%question_response%'", [], |r| r.get::<_, String>(0))
            .is_ok_and(|s| s == "completed")
        },
    );
    rt.block_on(host.shutdown()).unwrap();
}

/// Scripted `pinch chat`: a `/pick N` line right after a line whose turn
/// asks a question answers it, and the session goes on.
#[test]
fn scripted_pinch_chat_answers_a_question_with_pick() {
    let tmp = tempfile::tempdir().unwrap();
    let script = tmp.path().join("script.toml");
    std::fs::write(&script, colour_question_script(60)).unwrap();
    let cfg = tmp.path().join("pinch.toml");
    std::fs::write(
        &cfg,
        format!(
            "[provider]\ndefault = \"scripted\"\n[provider.scripted]\nscript = {:?}\n",
            script.display().to_string()
        ),
    )
    .unwrap();
    let data = tmp.path().join("data");
    let out = pinch_chat(
        &[
            "--sandbox",
            "process",
            "--timeout",
            "30",
            "--data-dir",
            data.to_str().unwrap(),
        ],
        &[("PINCH_CONFIG", &cfg)],
        "pick a colour\n/pick 2\nhello\n",
    );
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stderr}");
    assert!(
        stdout.contains("Which colour?\n  [1] Red\n  [2] Blue"),
        "{stdout}"
    );
    assert!(
        stdout.contains("tool said: the user chose: Blue (value b)\n"),
        "{stdout}"
    );
    assert!(stdout.ends_with("You said: hello\n"), "{stdout}");
    assert!(stderr.contains("Answered: Blue"), "{stderr}");
}

/// A skill shipped in the repository, put in the global folder, is listed
/// to the agent and loaded whole, with its folder, inside the sandbox.
#[test]
fn a_global_skill_is_listed_and_loaded() {
    if !bwrap_or_skip() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let skill = tmp
        .path()
        .join("data/groups/global/skills/summarise-web-page");
    std::fs::create_dir_all(&skill).unwrap();
    let shipped = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../skills/summarise-web-page/SKILL.md");
    std::fs::copy(&shipped, skill.join("SKILL.md")).unwrap();
    let mut cfg = with_script(host_config(tmp.path(), Choice::Bwrap), SCRIPT);
    cfg.runner.idle_exit_ms = 60_000;
    let rt = rt();
    let host = rt.block_on(pinch_host::start(cfg)).unwrap();
    let mut client = Client::connect(&host.cli_socket);
    let reply = one(client.ask("please use-skill"));
    assert!(
        reply.starts_with("tool said: Skill summarise-web-page (folder /workspace/global/skills/summarise-web-page):")
            && reply.contains("# Summarise a web page"),
        "{reply}"
    );
    rt.block_on(host.shutdown()).unwrap();
}
