//! Agent-to-agent (SPEC §7.5) through a real host and real runners: a
//! question to a helper agent and its answer back in the asking session
//! (the return path), a refused destination, and a three-agent cycle
//! stopped and told to the agent that would close it (R11).

mod common;

use std::time::Duration;

use common::*;
use pinch_host::central::Central;

const SCRIPT: &str = r#"
[[rule]]
contains = "ask the helper"
tool = "send_message"
args = { to = "helper", text = "what is 6 times 7?" }

[[rule]]
contains = "what is 6 times 7"
reply = "42, says the helper"

[[rule]]
contains = "42, says the helper"
reply = "the helper answered: 42"

[[rule]]
contains = "ask a stranger"
tool = "send_message"
args = { to = "stranger", text = "hello?" }

[[rule]]
contains = "start the relay"
tool = "send_message"
args = { to = "b", text = "relay one" }

[[rule]]
contains = "relay one"
tool = "send_message"
args = { to = "c", text = "relay two" }

[[rule]]
contains = "relay two"
tool = "send_message"
args = { to = "a", text = "relay three" }

[[rule]]
after_tool = "send_message"
reply = "send_message said: {tool_result} error={tool_error}"
"#;

/// Agent groups and their agent destinations: (group, [(local name, target)]).
fn seed(dir: &std::path::Path, groups: &[(&str, &[(&str, &str)])]) {
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    let mut c = Central::open(&data.join("pinch.db")).unwrap();
    c.bootstrap("tester").unwrap();
    for (g, _) in groups {
        if *g != "main" {
            c.conn.execute("INSERT INTO agent_groups (id, name, folder, created_at) VALUES (?1, ?1, ?1, 'x')", [g]).unwrap();
            c.conn.execute("INSERT INTO agent_configs (agent_group_id, updated_at) VALUES (?1, 'x')", [g]).unwrap();
        }
    }
    for (g, dests) in groups {
        for (name, target) in *dests {
            c.conn
                .execute(
                    "INSERT INTO agent_destinations (agent_group_id, local_name, target_type, target_id, created_at) VALUES (?1, ?2, 'agent', ?3, 'x')",
                    [g, name, target],
                )
                .unwrap();
        }
    }
}

fn ledger(data: &std::path::Path, ag: &str) -> Vec<(String, Option<String>)> {
    let mut out = Vec::new();
    let Ok(dirs) = std::fs::read_dir(data.join("sessions").join(ag)) else { return out };
    // Skip folders still being created (`.tmp-…`).
    for d in dirs.flatten().filter(|d| !d.file_name().to_string_lossy().starts_with('.')) {
        let c = inbound(&d.path());
        let mut s = c.prepare("SELECT status, last_error FROM delivered").unwrap();
        out.extend(s.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).unwrap().map(Result::unwrap));
    }
    out
}

#[test]
fn a_helper_answers_and_the_reply_returns_to_the_asking_session() {
    let tmp = tempfile::tempdir().unwrap();
    seed(tmp.path(), &[("main", &[("helper", "helper")]), ("helper", &[("parent", "main")])]);
    let cfg = with_script(host_config(tmp.path(), any_sandbox()), SCRIPT);
    let rt = rt();
    let host = rt.block_on(pinch_host::start(cfg.clone())).unwrap();
    let mut c = Client::connect(&host.cli_socket);
    let first = c.ask("please ask the helper");
    assert!(first.iter().any(|t| t.contains("send_message said") && t.contains("error=false")), "{first:?}");
    // The helper's answer wakes the asking (terminal) session, whose answer
    // goes to the terminal.
    let mut seen = first.clone();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !seen.iter().any(|t| t.contains("the helper answered: 42")) {
        assert!(std::time::Instant::now() < deadline, "{seen:?}");
        match c.recv() {
            Some(pinch_channels::cli_socket::ServerMsg::Message { id, text, .. }) => {
                c.send(&pinch_channels::cli_socket::ClientMsg::Ack { id });
                seen.push(text);
            }
            Some(_) => {}
            None => panic!("host closed"),
        }
    }
    let sessions = rt.block_on(host.sessions());
    let main: Vec<_> = sessions.iter().filter(|s| s.agent_group_id == "main").collect();
    assert_eq!(main.len(), 1, "the answer came back to the session that asked: {sessions:?}");
    let helper: Vec<_> = sessions.iter().filter(|s| s.agent_group_id == "helper").collect();
    assert_eq!(helper.len(), 1);
    // The helper's inbound row carries the return path and the hop count.
    let hc = inbound(&helper[0].dir);
    let (content, source): (String, String) = hc.query_row("SELECT content, source_session_id FROM messages_in WHERE kind = 'chat'", [], |r| Ok((r.get(0)?, r.get(1)?))).unwrap();
    assert_eq!(source, main[0].id);
    assert!(content.contains("\"hops\":1") && content.contains("\"chain\":[\"main\"]"), "{content}");
    // Not a destination: refused, and the agent is told.
    let refused = c.ask("now ask a stranger");
    assert!(refused.iter().any(|t| t.contains("error=true") && t.contains("stranger")), "{refused:?}");
    rt.block_on(host.shutdown()).unwrap();
}

#[test]
fn a_three_agent_cycle_is_stopped_and_told() {
    let tmp = tempfile::tempdir().unwrap();
    seed(tmp.path(), &[("main", &[("b", "bee")]), ("bee", &[("c", "cee")]), ("cee", &[("a", "main")])]);
    let cfg = with_script(host_config(tmp.path(), any_sandbox()), SCRIPT);
    let rt = rt();
    let host = rt.block_on(pinch_host::start(cfg.clone())).unwrap();
    let mut c = Client::connect(&host.cli_socket);
    c.ask("start the relay");
    // main → bee → cee go through; cee → main would close the cycle.
    wait_for("cee's message to main refused", Duration::from_secs(30), || {
        ledger(&cfg.data_dir, "cee").iter().any(|(st, e)| st == "failed" && e.as_deref().is_some_and(|e| e.contains("cycle")))
    });
    let refusal = ledger(&cfg.data_dir, "cee").into_iter().find(|(st, _)| st == "failed").unwrap().1.unwrap();
    assert!(refusal.contains("main → bee"), "{refusal}");
    // cee is told (a deliver-failed action_result in its inbound).
    let sessions = rt.block_on(host.sessions());
    let cee = sessions.iter().find(|s| s.agent_group_id == "cee").expect("cee has a session");
    let told = |dir: &std::path::Path| -> Vec<String> {
        let c = inbound(dir);
        let mut s = c.prepare("SELECT content FROM messages_in WHERE id LIKE 'deliver-failed:%'").unwrap();
        let v = s.query_map([], |r| r.get(0)).unwrap().map(Result::unwrap).collect();
        v
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !told(&cee.dir).iter().any(|t| t.contains("cycle")) {
        assert!(std::time::Instant::now() < deadline, "cee was not told; its deliver-failed rows: {:?}; ledger {:?}", told(&cee.dir), ledger(&cfg.data_dir, "cee"));
        std::thread::sleep(Duration::from_millis(50));
    }
    // main never got "relay three".
    let main = sessions.iter().find(|s| s.agent_group_id == "main").unwrap();
    let n: i64 = inbound(&main.dir).query_row("SELECT count(*) FROM messages_in WHERE content LIKE '%relay three%'", [], |r| r.get(0)).unwrap();
    assert_eq!(n, 0);
    rt.block_on(host.shutdown()).unwrap();
}
