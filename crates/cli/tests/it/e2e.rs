//! A message all the way through: CLI socket → host → inbound.db → runner in
//! a real sandbox → outbound.db → delivery → CLI socket, with both DBs'
//! rows checked afterwards.

use std::collections::HashSet;
use std::time::Duration;

use crate::common::*;
use pinch_host::sandbox::Choice;

fn through_sandbox(choice: Choice) {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = host_config(tmp.path(), choice);
    let rt = rt();
    let host = rt.block_on(pinch_host::start(cfg)).unwrap();
    let mut c = Client::connect(&host.cli_socket);
    assert_eq!(
        c.hello,
        pinch_channels::cli_socket::ServerMsg::Hello {
            user: "tester".into(),
            about: Some("agent `main` · the scripted provider (tests and demos, no model)".into()),
        }
    );

    let id = c.say("hello sandbox", "c1");
    let replies = c.until_settled(&id);
    assert_eq!(
        replies,
        vec!["Hello from pinch! You said: hello sandbox".to_string()]
    );
    let replies = c.ask("second");
    assert_eq!(
        replies,
        vec!["Hello from pinch! You said: second".to_string()]
    );

    let sessions = rt.block_on(host.sessions());
    assert_eq!(sessions.len(), 1);
    let s = &sessions[0];
    assert_eq!(s.agent_group_id, "main");
    // The runner really runs under the chosen backend.
    let pid = s.runner_pid.expect("runner alive while warm");
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap();
    match choice {
        Choice::Bwrap => assert_eq!(comm.trim(), "bwrap"),
        // The host's child is the `docker run` client.
        Choice::Docker => assert_eq!(comm.trim(), "docker"),
        _ => assert_eq!(comm.trim(), "pinch"),
    }
    rt.block_on(host.shutdown()).unwrap();

    // inbound.db: both messages, even seqs, completed by ack sync, ledger.
    let dir = &s.dir;
    let inb = inbound(dir);
    let ins: Vec<(String, i64, String, i64)> = inb
        .prepare(
            "SELECT id, seq, status, trigger FROM messages_in WHERE kind = 'chat' ORDER BY seq",
        )
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(ins.len(), 2);
    assert_eq!(ins[0].0, format!("{id}:main"));
    for (_, seq, status, trigger) in &ins {
        assert_eq!(seq % 2, 0, "host seqs are even");
        assert_eq!(status, "completed", "ack synced into messages_in");
        assert_eq!(*trigger, 1);
    }
    let out = outbound(dir);
    let outs: Vec<(String, i64, String, String)> = out
        .prepare("SELECT id, seq, in_reply_to, content FROM messages_out ORDER BY seq")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(outs.len(), 2);
    for (i, (oid, seq, reply_to, content)) in outs.iter().enumerate() {
        assert_eq!(seq % 2, 1, "runner seqs are odd");
        assert!(*seq > ins[i].1, "a reply is numbered after what it answers");
        assert_eq!(reply_to, &ins[i].0);
        assert!(content.contains("You said"));
        let (status, pmid, attempts): (String, Option<String>, i64) = ledger_db(dir)
            .query_row("SELECT status, platform_message_id, attempts FROM delivered WHERE message_out_id = ?1", [oid], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .unwrap();
        assert_eq!(status, "delivered");
        assert_eq!(pmid.as_deref(), Some(oid.as_str()));
        assert_eq!(attempts, 1);
    }
    let all: Vec<i64> = ins
        .iter()
        .map(|r| r.1)
        .chain(outs.iter().map(|r| r.1))
        .collect();
    assert_eq!(
        all.iter().collect::<HashSet<_>>().len(),
        all.len(),
        "no seq used twice"
    );
    // The acks: completed ones are pruned once synced, never left processing.
    let processing: i64 = out
        .query_row(
            "SELECT count(*) FROM processing_ack WHERE status = 'processing'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(processing, 0);
    // The runner was told where to reply and what its destinations are.
    let route: String = inb
        .query_row(
            "SELECT platform_id FROM session_routing WHERE id = 1",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(route, "local");
    let dest: String = inb
        .query_row("SELECT name FROM destinations", [], |r| r.get(0))
        .unwrap();
    assert_eq!(dest, "terminal");
    // Session DBs never use WAL (lesson 1).
    for db in ["in/inbound.db", "out/outbound.db"] {
        let mode: String = pinch_proto::rusqlite::Connection::open(dir.join(db))
            .unwrap()
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "delete", "{db}");
    }
    // The runner's log was captured and says it ran.
    let logs: Vec<_> = std::fs::read_dir(tmp.path().join("data/logs/runners").join(&s.id))
        .unwrap()
        .flatten()
        .collect();
    assert_eq!(logs.len(), 1);
    let log = std::fs::read_to_string(logs[0].path()).unwrap();
    assert!(log.contains("runner started"), "{log}");
    assert!(log.contains("asked to stop by the host"), "{log}");
}

#[test]
fn message_through_bwrap_sandbox_and_back() {
    if bwrap_or_skip() {
        through_sandbox(Choice::Bwrap);
    }
}

#[test]
fn message_through_docker_sandbox_and_back() {
    if docker_or_skip() {
        through_sandbox(Choice::Docker);
    }
}

#[test]
fn message_through_process_backend_and_back() {
    through_sandbox(Choice::Process);
}

#[test]
fn hundred_concurrent_messages_one_spawn_all_answered_in_order() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = host_config(tmp.path(), Choice::Process);
    let rt = rt();
    let host = rt.block_on(pinch_host::start(cfg)).unwrap();
    let mut c = Client::connect(&host.cli_socket);
    for i in 0..100 {
        c.send_text(&format!("m{i}"), &format!("c{i}"));
    }
    let mut accepted = Vec::new();
    let mut settled = HashSet::new();
    let mut texts = Vec::new();
    while settled.len() < 100 {
        match c.recv().expect("host closed") {
            pinch_channels::cli_socket::ServerMsg::Accepted { id, .. } => accepted.push(id),
            pinch_channels::cli_socket::ServerMsg::Settled { ids, .. } => settled.extend(ids),
            pinch_channels::cli_socket::ServerMsg::Message { id, text, .. } => {
                texts.push(text);
                c.send(&pinch_channels::cli_socket::ClientMsg::Ack { id });
            }
            _ => {}
        }
    }
    assert_eq!(accepted.len(), 100);
    assert_eq!(settled, accepted.iter().cloned().collect::<HashSet<_>>());
    assert_eq!(host.stats.spawns(), 1, "100 wakes, one runner");
    // Every message was answered (batched up to 10 per turn), oldest first.
    let echoed: Vec<String> = texts
        .iter()
        .flat_map(|t| {
            t.trim_start_matches("Hello from pinch! You said: ")
                .lines()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(
        echoed,
        (0..100).map(|i| format!("m{i}")).collect::<Vec<_>>()
    );
    rt.block_on(host.shutdown()).unwrap();
}

#[test]
fn exit_is_noticed_and_runner_respawns_on_new_work() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = host_config(tmp.path(), Choice::Process);
    cfg.runner.idle_exit_ms = 300; // exits idle quickly
    let rt = rt();
    let host = rt.block_on(pinch_host::start(cfg)).unwrap();
    let mut c = Client::connect(&host.cli_socket);
    assert_eq!(c.ask("one").len(), 1);
    wait_for("idle exit noticed", Duration::from_secs(10), || {
        host.stats.exits() == 1
    });
    let s = rt.block_on(host.sessions());
    assert_eq!(
        s[0].runner_id, None,
        "exit noticed from the child, runner state cleared"
    );
    assert_eq!(c.ask("two").len(), 1);
    assert_eq!(host.stats.spawns(), 2);
    rt.block_on(host.shutdown()).unwrap();
    let db = pinch_proto::rusqlite::Connection::open(tmp.path().join("data/pinch.db")).unwrap();
    let causes: Vec<String> = db
        .prepare("SELECT cause FROM runner_exits ORDER BY rowid")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(causes, vec!["idle".to_string(), "shutdown".to_string()]);
}

/// Issue 18: the CLI socket's greeting says whom `pinch chat` talks to,
/// for its one-line banner: the agent and its model.
#[test]
fn the_greeting_names_the_agent_and_its_model() {
    use std::io::BufRead;
    let tmp = tempfile::tempdir().unwrap();
    let rt = rt();
    let host = rt
        .block_on(pinch_host::start(host_config(tmp.path(), Choice::Process)))
        .unwrap();
    let s = std::os::unix::net::UnixStream::connect(&host.cli_socket).unwrap();
    let mut line = String::new();
    std::io::BufReader::new(s).read_line(&mut line).unwrap();
    let hello: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(hello["type"], "hello", "{line}");
    assert_eq!(
        hello["about"], "agent `main` · the scripted provider (tests and demos, no model)",
        "{line}"
    );
    rt.block_on(host.shutdown()).unwrap();
}
