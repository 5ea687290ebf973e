//! Agent-to-agent (SPEC §7.5) through a real host and real runners: a
//! question to a helper agent and its answer back in the asking session
//! (the return path), a refused destination, and a three-agent cycle
//! stopped and told to the agent that would close it (R11).

use std::time::Duration;

use crate::common::*;
use pinch_host::db::central::Central;

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
contains = "send the report"
tool = "write_file"
args = { path = "report.txt", content = "the numbers: 4 8 15 16 23 42" }

[[rule]]
after_tool = "write_file"
tool = "send_file"
args = { to = "helper", path = "report.txt", text = "please read the attached report" }

[[rule]]
after_tool = "send_file"
reply = "send_file said: {tool_result} error={tool_error}"

[[rule]]
contains = "please read the attached report"
tool = "read_file"
args = { path = "{inbox_path}" }

[[rule]]
after_tool = "read_file"
reply = "helper read: {tool_result}"

[[rule]]
contains = "helper read:"
reply = "relayed: {text}"

[[rule]]
contains = "create a researcher"
tool = "create_agent"
args = { name = "researcher", instructions = "You research things and answer in one line." }

[[rule]]
contains = "create a writer"
tool = "create_agent"
args = { name = "writer", instructions = "You write." }

[[rule]]
after_tool = "create_agent"
reply = "create_agent said: {tool_result} error={tool_error}"

[[rule]]
contains = "ask the researcher"
tool = "send_message"
args = { to = "researcher", text = "what is 6 times 7?" }

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
            c.conn
                .execute(
                    "INSERT INTO agent_configs (agent_group_id, updated_at) VALUES (?1, 'x')",
                    [g],
                )
                .unwrap();
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
    let Ok(dirs) = std::fs::read_dir(data.join("sessions").join(ag)) else {
        return out;
    };
    // Skip folders still being created (`.tmp-…`).
    for d in dirs
        .flatten()
        .filter(|d| !d.file_name().to_string_lossy().starts_with('.'))
    {
        let c = ledger_db(&d.path());
        let mut s = c
            .prepare("SELECT status, last_error FROM delivered")
            .unwrap();
        out.extend(
            s.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
                .unwrap()
                .map(Result::unwrap),
        );
    }
    out
}

#[test]
fn a_helper_answers_and_the_reply_returns_to_the_asking_session() {
    let tmp = tempfile::tempdir().unwrap();
    seed(
        tmp.path(),
        &[
            ("main", &[("helper", "helper")]),
            ("helper", &[("parent", "main")]),
        ],
    );
    let cfg = with_script(host_config(tmp.path(), any_sandbox()), SCRIPT);
    let rt = rt();
    let host = rt.block_on(pinch_host::start(cfg.clone())).unwrap();
    let mut c = Client::connect(&host.cli_socket);
    let first = c.ask("please ask the helper");
    assert!(
        first
            .iter()
            .any(|t| t.contains("send_message said") && t.contains("error=false")),
        "{first:?}"
    );
    // The helper's answer wakes the asking (terminal) session, whose answer
    // goes to the terminal.
    read_until(&mut c, first, "the helper's answer", |t| {
        t.contains("the helper answered: 42")
    });
    let sessions = rt.block_on(host.sessions());
    let main: Vec<_> = sessions
        .iter()
        .filter(|s| s.agent_group_id == "main")
        .collect();
    assert_eq!(
        main.len(),
        1,
        "the answer came back to the session that asked: {sessions:?}"
    );
    let helper: Vec<_> = sessions
        .iter()
        .filter(|s| s.agent_group_id == "helper")
        .collect();
    assert_eq!(helper.len(), 1);
    // The helper's inbound row carries the return path and the hop count.
    let hc = inbound(&helper[0].dir);
    let (content, source): (String, String) = hc
        .query_row(
            "SELECT content, source_session_id FROM messages_in WHERE kind = 'chat'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(source, main[0].id);
    assert!(
        content.contains("\"hops\":1") && content.contains("\"chain\":[\"main\"]"),
        "{content}"
    );
    // Not a destination: refused, and the agent is told.
    let refused = c.ask("now ask a stranger");
    assert!(
        refused
            .iter()
            .any(|t| t.contains("error=true") && t.contains("stranger")),
        "{refused:?}"
    );
    rt.block_on(host.shutdown()).unwrap();
}

#[test]
fn a_three_agent_cycle_is_stopped_and_told() {
    let tmp = tempfile::tempdir().unwrap();
    seed(
        tmp.path(),
        &[
            ("main", &[("b", "bee")]),
            ("bee", &[("c", "cee")]),
            ("cee", &[("a", "main")]),
        ],
    );
    let cfg = with_script(host_config(tmp.path(), any_sandbox()), SCRIPT);
    let rt = rt();
    let host = rt.block_on(pinch_host::start(cfg.clone())).unwrap();
    let mut c = Client::connect(&host.cli_socket);
    c.ask("start the relay");
    // main → bee → cee go through; cee → main would close the cycle.
    wait_for(
        "cee's message to main refused",
        Duration::from_secs(30),
        || {
            ledger(&cfg.data_dir, "cee")
                .iter()
                .any(|(st, e)| st == "failed" && e.as_deref().is_some_and(|e| e.contains("cycle")))
        },
    );
    let refusal = ledger(&cfg.data_dir, "cee")
        .into_iter()
        .find(|(st, _)| st == "failed")
        .unwrap()
        .1
        .unwrap();
    assert!(refusal.contains("main → bee"), "{refusal}");
    // cee is told (a deliver-failed action_result in its inbound).
    let sessions = rt.block_on(host.sessions());
    let cee = sessions
        .iter()
        .find(|s| s.agent_group_id == "cee")
        .expect("cee has a session");
    let told = |dir: &std::path::Path| -> Vec<String> {
        let c = inbound(dir);
        let mut s = c
            .prepare("SELECT content FROM messages_in WHERE id LIKE 'deliver-failed:%'")
            .unwrap();
        let v = s
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        v
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !told(&cee.dir).iter().any(|t| t.contains("cycle")) {
        assert!(
            std::time::Instant::now() < deadline,
            "cee was not told; its deliver-failed rows: {:?}; ledger {:?}",
            told(&cee.dir),
            ledger(&cfg.data_dir, "cee")
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // main never got "relay three".
    let main = sessions
        .iter()
        .find(|s| s.agent_group_id == "main")
        .unwrap();
    let n: i64 = inbound(&main.dir)
        .query_row(
            "SELECT count(*) FROM messages_in WHERE content LIKE '%relay three%'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(n, 0);
    rt.block_on(host.shutdown()).unwrap();
}

/// Reads until a delivered text satisfies `want` (acking each).
fn read_until(
    c: &mut Client,
    mut seen: Vec<String>,
    what: &str,
    want: impl Fn(&str) -> bool,
) -> Vec<String> {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !seen.iter().any(|t| want(t)) {
        assert!(std::time::Instant::now() < deadline, "{what}: {seen:?}");
        match c.recv() {
            Some(pinch_channels::cli_socket::ServerMsg::Message { id, text, .. }) => {
                c.send(&pinch_channels::cli_socket::ClientMsg::Ack { id });
                seen.push(text);
            }
            Some(_) => {}
            None => panic!("host closed"),
        }
    }
    seen
}

/// SPEC §7.5/§7.8: a file an agent sends another lands in the target's
/// inbox (a copy; the target reads it), and a compromised runner's hostile
/// rows — a traversal name, a symlink to a host file, a row folder that is
/// a symlink — are refused: nothing outside the inbox is read or written,
/// and the sender is told why.
#[test]
fn files_go_to_the_targets_inbox_and_never_escape() {
    let tmp = tempfile::tempdir().unwrap();
    seed(
        tmp.path(),
        &[
            ("main", &[("helper", "helper")]),
            ("helper", &[("parent", "main")]),
        ],
    );
    let cfg = with_script(host_config(tmp.path(), any_sandbox()), SCRIPT);
    let rt = rt();
    let host = rt.block_on(pinch_host::start(cfg.clone())).unwrap();
    let mut c = Client::connect(&host.cli_socket);
    let first = c.ask("please send the report to the helper");
    assert!(
        first
            .iter()
            .any(|t| t.contains("send_file said: sent report.txt") && t.contains("error=false")),
        "{first:?}"
    );
    let seen = read_until(&mut c, first, "the helper's reading comes back", |t| {
        t.contains("relayed: helper read:")
    });
    assert!(
        seen.iter()
            .any(|t| t.contains("the numbers: 4 8 15 16 23 42")),
        "the helper read the file's content: {seen:?}"
    );

    let sessions = rt.block_on(host.sessions());
    let main = sessions
        .iter()
        .find(|s| s.agent_group_id == "main")
        .unwrap()
        .clone();
    let helper = sessions
        .iter()
        .find(|s| s.agent_group_id == "helper")
        .unwrap()
        .clone();
    // The copy sits in the helper's inbox and the row lists it.
    let content: String = inbound(&helper.dir).query_row("SELECT content FROM messages_in WHERE kind = 'chat' AND content LIKE '%attached report%'", [], |r| r.get(0)).unwrap();
    let v: serde_json::Value = serde_json::from_str(&content).unwrap();
    let att = &v["attachments"][0];
    assert_eq!(att["name"], "report.txt");
    let shown = att["path"].as_str().unwrap();
    let rel = shown
        .strip_prefix("/workspace/inbox/")
        .expect("an inbox path");
    assert_eq!(
        std::fs::read_to_string(helper.dir.join("inbox").join(rel)).unwrap(),
        "the numbers: 4 8 15 16 23 42"
    );

    // A compromised runner in main writes hostile rows of its own.
    let outside = tmp.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    std::fs::write(outside.join("secret.txt"), "TOPSECRET").unwrap();
    let outbox = main.dir.join("outbox");
    std::fs::create_dir(outbox.join("evil-link")).unwrap();
    std::os::unix::fs::symlink(
        outside.join("secret.txt"),
        outbox.join("evil-link/notes.txt"),
    )
    .unwrap();
    std::os::unix::fs::symlink(&outside, outbox.join("evil-dir")).unwrap();
    std::fs::create_dir(outbox.join("evil-name")).unwrap();
    let hostile = [
        (
            "evil-name",
            "../../../../../outside/secret.txt",
            "not a plain file name",
        ),
        ("evil-link", "notes.txt", "symlink"),
        ("evil-dir", "secret.txt", "symlink"),
    ];
    {
        let mut o = pinch_proto::open::open_writer(
            &main.dir.join("out/outbound.db"),
            Duration::from_secs(5),
        )
        .unwrap();
        let in_max: i64 = inbound(&main.dir)
            .query_row("SELECT coalesce(max(seq), 0) FROM messages_in", [], |r| {
                r.get(0)
            })
            .unwrap();
        let tx = pinch_proto::open::write_tx(&mut o).unwrap();
        for (id, name, _) in hostile {
            let row = pinch_proto::rows::NewOutbound {
                id: id.into(),
                timestamp: pinch_proto::time::now(),
                kind: "chat".into(),
                channel_type: Some("agent".into()),
                platform_id: Some("helper".into()),
                content: serde_json::json!({"text": "take this", "files": [name]}).to_string(),
                ..Default::default()
            };
            pinch_proto::rows::insert_outbound(&tx, &row, in_max).unwrap();
        }
        tx.commit().unwrap();
    }
    let status = |id: &str| -> Option<(String, Option<String>)> {
        ledger_db(&main.dir)
            .query_row(
                "SELECT status, last_error FROM delivered WHERE message_out_id = ?1",
                [id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .ok()
    };
    for (id, _, why) in hostile {
        wait_for(
            &format!("the host refuses {id}"),
            Duration::from_secs(30),
            || status(id).is_some_and(|(s, _)| s == "failed"),
        );
        let (_, e) = status(id).unwrap();
        assert!(e.as_deref().is_some_and(|e| e.contains(why)), "{id}: {e:?}");
    }
    // Nothing was copied anywhere: no inbox holds the secret, and no file
    // appeared outside the data dir's session folders.
    let data_real = std::fs::canonicalize(&cfg.data_dir).unwrap();
    for p in walk(&cfg.data_dir) {
        // (walk follows the planted folder link out; those are the originals)
        let inside = std::fs::canonicalize(&p).is_ok_and(|r| r.starts_with(&data_real));
        if inside && p.is_file() {
            let bytes = std::fs::read(&p).unwrap_or_default();
            assert!(
                !bytes.windows(9).any(|w| w == b"TOPSECRET"),
                "the secret was copied to {p:?}"
            );
        }
    }
    assert_eq!(
        std::fs::read_dir(&outside).unwrap().count(),
        1,
        "nothing written beside the secret"
    );
    let n: i64 = inbound(&helper.dir)
        .query_row(
            "SELECT count(*) FROM messages_in WHERE content LIKE '%take this%'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(n, 0, "no hostile message reached the helper");
    // The sender is told (deliver-failed rows name the reason).
    wait_for("main is told", Duration::from_secs(30), || {
        let c = inbound(&main.dir);
        let n: i64 = c
            .query_row(
                "SELECT count(*) FROM messages_in WHERE id LIKE 'deliver-failed:evil-%'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        n == 3
    });
    rt.block_on(host.shutdown()).unwrap();
}

/// SPEC §7.5, lesson 50: `create_agent` runs at once for a group with
/// `can_create_agents` (main, by bootstrap) — group, folder, AGENT.md,
/// destinations both ways, and the new agent answers through them — and
/// without the flag it waits for an approval card; clicking Create makes it.
#[test]
fn create_agent_needs_the_flag_or_an_approval() {
    let tmp = tempfile::tempdir().unwrap();
    seed(tmp.path(), &[("main", &[])]);
    let cfg = with_script(host_config(tmp.path(), any_sandbox()), SCRIPT);
    let rt = rt();
    let host = rt.block_on(pinch_host::start(cfg.clone())).unwrap();
    let mut c = Client::connect(&host.cli_socket);
    let made = c.ask("please create a researcher");
    assert!(
        made.iter().any(|t| t.contains("create_agent said:")
            && t.contains("\"destination\":\"researcher\"")
            && t.contains("error=false")),
        "{made:?}"
    );
    let db = || pinch_proto::rusqlite::Connection::open(cfg.data_dir.join("pinch.db")).unwrap();
    let dests = |ag: &str| -> Vec<(String, String)> {
        let c = db();
        let mut s = c.prepare("SELECT local_name, target_id FROM agent_destinations WHERE agent_group_id = ?1 AND target_type = 'agent' ORDER BY local_name").unwrap();
        let v = s
            .query_map([ag], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        v
    };
    assert_eq!(
        dests("main"),
        vec![("researcher".to_owned(), "researcher".to_owned())]
    );
    assert_eq!(
        dests("researcher"),
        vec![("parent".to_owned(), "main".to_owned())]
    );
    let md = std::fs::read_to_string(cfg.data_dir.join("groups/researcher/AGENT.md")).unwrap();
    assert!(
        md.contains("You research things and answer in one line."),
        "{md}"
    );
    // The new agent is reachable at once (main's live session was re-projected).
    let first = c.ask("now ask the researcher");
    read_until(&mut c, first, "the researcher's answer comes back", |t| {
        t.contains("the helper answered: 42")
    });

    // Without the flag: approval-pending, and a card for the owner.
    db().execute(
        "UPDATE agent_configs SET can_create_agents = 0 WHERE agent_group_id = 'main'",
        [],
    )
    .unwrap();
    let id = c.say("please create a writer", "w");
    let (mut pending, mut card) = (false, None);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !(pending && card.is_some()) {
        assert!(
            std::time::Instant::now() < deadline,
            "pending={pending} card={card:?}"
        );
        if let pinch_channels::cli_socket::ServerMsg::Message {
            id, text, buttons, ..
        } = c.recv().expect("host closed")
        {
            c.send(&pinch_channels::cli_socket::ClientMsg::Ack { id });
            if text.contains("create_agent said: approval-pending") {
                pending = true;
            }
            if !buttons.is_empty() {
                assert!(
                    text.contains("\"writer\"") && text.contains("You write."),
                    "{text}"
                );
                card = Some(buttons);
            }
        }
    }
    let _ = id;
    let gone = db()
        .query_row(
            "SELECT count(*) FROM agent_groups WHERE id = 'writer'",
            [],
            |r| r.get::<_, i64>(0),
        )
        .unwrap();
    assert_eq!(gone, 0, "nothing is created before the approval");
    let create = card
        .unwrap()
        .into_iter()
        .find(|b| b.label == "Create")
        .expect("a Create button");
    c.send(&pinch_channels::cli_socket::ClientMsg::Click {
        callback: create.callback,
    });
    // The rows commit first, then the folder and its AGENT.md are written.
    wait_for("the writer exists", Duration::from_secs(30), || {
        db().query_row(
            "SELECT count(*) FROM agent_groups WHERE id = 'writer'",
            [],
            |r| r.get::<_, i64>(0),
        )
        .unwrap()
            == 1
            && cfg.data_dir.join("groups/writer/AGENT.md").exists()
    });
    assert!(
        std::fs::read_to_string(cfg.data_dir.join("groups/writer/AGENT.md"))
            .unwrap()
            .contains("You write.")
    );
    assert_eq!(
        dests("writer"),
        vec![("parent".to_owned(), "main".to_owned())]
    );
    // main is told the outcome.
    let sessions = rt.block_on(host.sessions());
    let main = sessions
        .iter()
        .find(|s| s.agent_group_id == "main")
        .unwrap();
    wait_for(
        "main gets the approval's result",
        Duration::from_secs(30),
        || {
            let n: i64 = inbound(&main.dir)
            .query_row("SELECT count(*) FROM messages_in WHERE id LIKE 'approval-result:%' AND content LIKE '%writer%'", [], |r| r.get(0))
            .unwrap();
            n == 1
        },
    );
    // …and its turn on it answers the terminal (read, so that delivery is
    // not left waiting for an ack when the host shuts down).
    read_until(&mut c, Vec::new(), "main's turn on the result", |_| true);
    rt.block_on(host.shutdown()).unwrap();
}

/// The issue's end-to-end case: through the `pinch chat` binary, the main
/// agent creates a second agent, and the two hold a conversation — two
/// rounds of question and answer, each answer returning to the terminal
/// conversation that asked (`/wait` lines wait for answers that arrive
/// after their line's turn).
#[test]
fn two_agents_converse_through_pinch_chat() {
    let tmp = tempfile::tempdir().unwrap();
    let script = tmp.path().join("script.toml");
    std::fs::write(
        &script,
        r#"
[[rule]]
contains = "make a poet"
tool = "create_agent"
args = { name = "poet", instructions = "You write very short poems." }

[[rule]]
after_tool = "create_agent"
reply = "made: {tool_result}"

[[rule]]
contains = "ask the poet for a haiku"
tool = "send_message"
args = { to = "poet", text = "please write a haiku about tea" }

[[rule]]
contains = "ask the poet to shorten it"
tool = "send_message"
args = { to = "poet", text = "shorter please" }

[[rule]]
after_tool = "send_message"
reply = "asked the poet"

[[rule]]
contains = "haiku about tea"
reply = "steam curls from the cup / leaves unfold in quiet heat / the kettle sings on"

[[rule]]
contains = "shorter please"
reply = "tea, steam, quiet"

[[rule]]
contains = "steam"
reply = "the poet says: {text}"
"#,
    )
    .unwrap();
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
    let sandbox = if any_sandbox() == pinch_host::sandbox::Choice::Bwrap {
        "bwrap"
    } else {
        "process"
    };
    let out = pinch_chat(
        &["--sandbox", sandbox, "--timeout", "30", "--data-dir", data.to_str().unwrap()],
        &[("PINCH_CONFIG", &cfg)],
        "make a poet\nask the poet for a haiku\n/wait the poet says:\nask the poet to shorten it\n/wait tea, steam, quiet\n",
    );
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "stdout:\n{stdout}\nstderr:\n{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    let at = |needle: &str| {
        lines
            .iter()
            .position(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("{needle:?} missing from:\n{stdout}"))
    };
    assert!(at("made: {") < at("asked the poet"));
    assert!(at("the poet says: steam curls from the cup") > at("asked the poet"));
    assert!(at("the poet says: tea, steam, quiet") > at("the poet says: steam curls"));
    // Both agents' sessions hold the exchange; the poet's two questions
    // came from main with the return path set.
    let c = pinch_proto::rusqlite::Connection::open(data.join("pinch.db")).unwrap();
    let poet_dir: String = c
        .query_row(
            "SELECT id FROM sessions WHERE agent_group_id = 'poet'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let n: i64 = inbound(&data.join("sessions/poet").join(&poet_dir))
        .query_row("SELECT count(*) FROM messages_in WHERE kind = 'chat' AND source_session_id IS NOT NULL", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 2, "{stdout}");
}

/// Two agents that answer each other: each "rally" makes the agent send
/// one to its partner, and its turn's own reply says so too (also a
/// "rally", so a batch of both keeps going).
const RALLY: &str = r#"
[[rule]]
contains = "rally"
tool = "send_message"
args = { to = "partner", text = "rally" }

[[rule]]
after_tool = "send_message"
reply = "rally sent: error={tool_error}"
"#;

/// Every agent-to-agent row in the inbound of `ag`'s sessions: (the
/// sending agent, its hop count).
fn a2a_rows(data: &std::path::Path, ag: &str) -> Vec<(String, u32)> {
    let mut out = Vec::new();
    let Ok(dirs) = std::fs::read_dir(data.join("sessions").join(ag)) else {
        return out;
    };
    for d in dirs
        .flatten()
        .filter(|d| !d.file_name().to_string_lossy().starts_with('.'))
    {
        if !d.path().join("in/inbound.db").exists() {
            continue;
        }
        let c = inbound(&d.path());
        let mut s = c
            .prepare("SELECT content FROM messages_in WHERE id LIKE 'a2a:%'")
            .unwrap();
        for content in s.query_map([], |r| r.get::<_, String>(0)).unwrap() {
            let v: serde_json::Value = serde_json::from_str(&content.unwrap()).unwrap();
            out.push((
                v["sender_id"].as_str().unwrap_or_default().to_owned(),
                v["a2a"]["hops"].as_u64().expect("an a2a row has hops") as u32,
            ));
        }
    }
    out
}

/// The deliver-failed notes (`action_result`s) in `ag`'s sessions.
fn told(data: &std::path::Path, ag: &str) -> Vec<String> {
    let mut out = Vec::new();
    for d in std::fs::read_dir(data.join("sessions").join(ag))
        .into_iter()
        .flatten()
        .flatten()
        .filter(|d| !d.file_name().to_string_lossy().starts_with('.'))
    {
        let c = inbound(&d.path());
        let mut s = c
            .prepare("SELECT content FROM messages_in WHERE id LIKE 'deliver-failed:%'")
            .unwrap();
        out.extend(s.query_map([], |r| r.get(0)).unwrap().map(Result::unwrap));
    }
    out
}

/// R11 end to end: two agents answering each other are not a cycle (a
/// reply to the agent that asked is the return path), so the rally goes
/// back and forth until the hop limit refuses the ninth hop — and the
/// agent that sent it is told. Nothing past hop 8 is ever delivered.
#[test]
fn two_agents_answering_each_other_are_stopped_by_the_hop_limit_and_told() {
    let tmp = tempfile::tempdir().unwrap();
    seed(
        tmp.path(),
        &[
            ("main", &[("partner", "bee")]),
            ("bee", &[("partner", "main")]),
        ],
    );
    let cfg = with_script(host_config(tmp.path(), any_sandbox()), RALLY);
    let data = cfg.data_dir.clone();
    let rt = rt();
    let host = rt.block_on(pinch_host::start(cfg)).unwrap();
    let mut c = Client::connect(&host.cli_socket);
    c.ask("start the rally");
    let hop_refusal = |(st, e): &(String, Option<String>)| {
        st == "failed"
            && e.as_deref()
                .is_some_and(|e| e.contains("hops; the limit is 8"))
    };
    wait_for(
        "a message of the rally refused by the hop limit",
        Duration::from_secs(60),
        || {
            ledger(&data, "main").iter().any(hop_refusal)
                || ledger(&data, "bee").iter().any(hop_refusal)
        },
    );
    // The agent whose message was refused is told why (an action_result
    // in its own inbound, not a message to anyone).
    let refused_by = if ledger(&data, "main").iter().any(hop_refusal) {
        "main"
    } else {
        "bee"
    };
    wait_for("the sender told", Duration::from_secs(30), || {
        told(&data, refused_by)
            .iter()
            .any(|t| t.contains("the limit is 8"))
    });
    // A barrier: the user's next message is answered after everything
    // before it; by then the rally has stopped.
    let after = c.ask("a barrier, no ball");
    assert!(!after.is_empty(), "the barrier was answered");
    let rows: Vec<(String, u32)> = [a2a_rows(&data, "main"), a2a_rows(&data, "bee")].concat();
    let top = rows.iter().map(|(_, h)| *h).max().unwrap_or(0);
    assert_eq!(
        top, 8,
        "the rally went back and forth up to the limit and no further: {rows:?}"
    );
    // Both directions carried it (replies, not new requests, after the first).
    for (from, to) in [("agent:main", "bee"), ("agent:bee", "main")] {
        let n = a2a_rows(&data, to)
            .iter()
            .filter(|(s, _)| s == from)
            .count();
        assert!(n >= 3, "{from} → {to}: {n} messages in {rows:?}");
    }
    // Bounded: at most two rallies (the first answer and its reply) of 8.
    assert!(rows.len() <= 16, "{} messages: {rows:?}", rows.len());
    rt.block_on(host.shutdown()).unwrap();
}
