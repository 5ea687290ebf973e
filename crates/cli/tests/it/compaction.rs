//! Compaction (SPEC §5.5, lesson 48), the other batch-head commands (§5.2)
//! and late question answers (§7.3), through the real binary: the host runs
//! in-process, runners are real `pinch runner` processes on real SQLite
//! files; the scripted provider stands in for the model.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::common::*;
use pinch_host::sandbox::Choice;

/// The scripted model: answers a summary request with a recognisable
/// summary, `check` with the first history message it was sent, anything
/// else with an echo.
const SCRIPT: &str = r#"
default_reply = "hist {history} said: {text}"

[[rule]]
contains = "Summarise the conversation so far"
reply = "SUMMARY-OF-{history}-MESSAGES"

[[rule]]
equals = "check"
reply = "first=[{history_first}]"
"#;

fn archives(tmp: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = walk(&tmp.join("data"))
        .into_iter()
        .filter(|p| {
            p.parent().is_some_and(|d| d.ends_with("conversations"))
                && p.extension().is_some_and(|x| x == "md")
        })
        .collect();
    v.sort();
    v
}

fn one(mut v: Vec<String>) -> String {
    assert_eq!(v.len(), 1, "expected one reply: {v:?}");
    v.remove(0)
}

fn conversation_rows(dir: &Path, role: &str) -> Vec<String> {
    outbound(dir)
        .prepare("SELECT content FROM conversation WHERE role = ?1 ORDER BY continuation, idx")
        .unwrap()
        .query_map([role], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

/// A conversation that outgrows 80 % of the window is compacted before the
/// turn that would overflow: the older half is archived as a readable file,
/// later requests start from the summary, and so does a respawned runner.
#[test]
fn a_long_conversation_compacts_and_a_respawn_continues_from_the_summary() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = with_script(
        host_config(tmp.path(), Choice::Process),
        // Room for the system prompt and the tool schemas (about 5,000
        // tokens by the chars/4 estimate) and a few long turns.
        &format!("context_window = 12000\n{SCRIPT}"),
    );
    cfg.runner.idle_exit_ms = 300;
    let rt = rt();
    let host = rt.block_on(pinch_host::start(cfg)).unwrap();
    let mut c = Client::connect(&host.cli_socket);
    let filler = "x".repeat(3000);
    let mut sent = 0;
    while archives(tmp.path()).is_empty() {
        sent += 1;
        assert!(
            sent <= 10,
            "no compaction after 9 long messages in a 12000-token window"
        );
        let r = one(c.ask(&format!("m{sent} {filler}")));
        assert!(
            r.contains(&format!("said: m{sent} ")),
            "every turn is still answered: {}",
            &r[..60.min(r.len())]
        );
    }
    assert!(
        sent >= 3,
        "compaction needs an older half to summarise (it came at message {sent})"
    );
    eprintln!("compacted before answering message {sent}");
    let files = archives(tmp.path());
    assert_eq!(files.len(), 1, "{files:?}");
    let name = files[0].file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        name.starts_with("c-") && name.ends_with("-1.md"),
        "conversations/<continuation>-<n>.md: {name}"
    );
    let md = std::fs::read_to_string(&files[0]).unwrap();
    assert!(
        md.contains("SUMMARY-OF-"),
        "the archive names the summary that replaced it"
    );
    assert!(md.contains("m1 xxx"), "the oldest turn is archived");
    assert!(md.contains("said: m1 "), "with the answer to it");
    assert!(
        !md.contains(&format!("m{sent} xxx")),
        "the newest turn stays live, not archived"
    );
    let dir = rt.block_on(host.sessions())[0].dir.clone();
    let summaries = conversation_rows(&dir, "summary");
    assert_eq!(summaries.len(), 1, "{summaries:?}");
    assert!(summaries[0].contains("SUMMARY-OF-"));

    // The next request's history starts with the summary.
    let r = one(c.ask("check"));
    assert!(
        r.starts_with("first=[[Summary of our earlier conversation"),
        "{r}"
    );
    assert!(
        r.contains("SUMMARY-OF-") && r.contains(&format!("conversations/{name}")),
        "{r}"
    );

    // A new runner continues from the summary too.
    wait_for("the runner's idle exit", Duration::from_secs(20), || {
        rt.block_on(host.sessions())[0].runner_pid.is_none()
    });
    let spawns = host.stats.spawns();
    let r = one(c.ask("check"));
    assert_eq!(
        host.stats.spawns(),
        spawns + 1,
        "a respawned runner answered"
    );
    assert!(
        r.starts_with("first=[[Summary of our earlier conversation") && r.contains("SUMMARY-OF-"),
        "{r}"
    );
    rt.block_on(host.shutdown()).unwrap();
}

/// `/compact` on demand, and `/context`, `/cost`, `/files` answered without
/// the model; an unknown `/word` goes to the model.
#[test]
fn commands_heading_a_batch_answer_without_the_model() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = with_script(host_config(tmp.path(), Choice::Process), SCRIPT);
    let rt = rt();
    let host = rt.block_on(pinch_host::start(cfg)).unwrap();
    let mut c = Client::connect(&host.cli_socket);
    assert_eq!(one(c.ask("/compact")), "Nothing to compact yet: the conversation since the last compaction is shorter than one exchange.");
    assert!(one(c.ask("hello one")).ends_with("said: hello one"));
    assert!(one(c.ask("hello two")).ends_with("said: hello two"));

    let ctx = one(c.ask("/context"));
    assert!(
        ctx.starts_with("Context: about ") && ctx.contains(" of 1000000 tokens (0 %)"),
        "{ctx}"
    );
    assert!(
        ctx.contains("2 turns so far, 4 messages sent with each request"),
        "{ctx}"
    );
    assert!(ctx.contains("Not compacted."), "{ctx}");
    let cost = one(c.ask("/cost"));
    assert!(
        cost.contains("This conversation: ") && cost.contains(" out over 2 turns (2 model calls)"),
        "{cost}"
    );
    assert!(
        !cost.contains("This conversation: 0 in"),
        "the provider's usage was recorded: {cost}"
    );

    let r = one(c.ask("/compact"));
    assert!(
        r.starts_with(
            "Compacted: 2 messages summarised; the full text is archived in conversations/c-"
        ),
        "{r}"
    );
    let files = archives(tmp.path());
    assert_eq!(files.len(), 1, "{files:?}");
    let md = std::fs::read_to_string(&files[0]).unwrap();
    assert!(
        md.contains("hello one") && !md.contains("hello two"),
        "the older half is archived:\n{md}"
    );
    assert!(md.contains("SUMMARY-OF-2-MESSAGES"), "{md}");

    let ctx = one(c.ask("/context"));
    assert!(
        ctx.contains("Compacted 1 time; the latest summary replaced 2 messages"),
        "{ctx}"
    );
    let r = one(c.ask("check"));
    assert!(
        r.starts_with("first=[[Summary of our earlier conversation")
            && r.contains("SUMMARY-OF-2-MESSAGES"),
        "{r}"
    );

    let f = one(c.ask("/files"));
    assert!(f.starts_with("Workspace (/workspace/agent):"), "{f}");
    assert!(
        f.contains("\n- AGENT.md (") && f.contains("\n- conversations/"),
        "{f}"
    );
    assert!(f.contains("Inbox: 0 ") && f.contains("Outbox: 0 "), "{f}");

    // Not a command: the model answers it.
    assert!(one(c.ask("/weather in Madrid")).ends_with("said: /weather in Madrid"));
    // Commands were acked with their replies and never reached the history.
    let dir = rt.block_on(host.sessions())[0].dir.clone();
    let users = conversation_rows(&dir, "user");
    assert!(
        users.iter().all(|u| !u.contains("/context")
            && !u.contains("/cost")
            && !u.contains("/files")
            && !u.contains("/compact")),
        "{users:?}"
    );
    let pending: i64 = inbound(&dir)
        .query_row(
            "SELECT count(*) FROM messages_in WHERE status != 'completed'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(pending, 0);
    rt.block_on(host.shutdown()).unwrap();
}

/// An answer whose question's tool gave up (here: its runner was asked to
/// stop) is not lost: it does not wake the model, and the next turn shows
/// it as a `system_response` and acks it.
#[test]
fn a_late_answer_joins_the_next_turn_as_context() {
    use pinch_channels::cli_socket::{ClientMsg, ServerMsg};
    let script = colour_question_script(120);
    let tmp = tempfile::tempdir().unwrap();
    let cfg = with_script(host_config(tmp.path(), Choice::Process), &script);
    let rt = rt();
    let host = rt.block_on(pinch_host::start(cfg)).unwrap();
    let mut c = Client::connect(&host.cli_socket);
    let id = c.say("pick a colour", "q1");
    let (_, buttons) = c.until_buttons();
    // The tool gives up: its runner is asked to stop while it waits.
    let session = rt.block_on(host.sessions())[0].clone();
    assert!(
        rt.block_on(host.stop_runner(&session.id)),
        "a runner was running"
    );
    let replies = c.until_settled(&id);
    assert_eq!(replies.len(), 1, "{replies:?}");
    assert!(
        replies[0].starts_with("tool said: stopped while waiting"),
        "{replies:?}"
    );
    wait_for("the runner's exit", Duration::from_secs(20), || {
        rt.block_on(host.sessions())[0].runner_pid.is_none()
    });

    // The answer comes late.
    c.send(&ClientMsg::Click {
        callback: buttons[1].callback.clone(),
    });
    loop {
        if let ServerMsg::Notice { text } = c.recv().expect("host closed") {
            assert_eq!(text, "Answered: Blue");
            break;
        }
    }
    let answer_status = || {
        inbound(&session.dir)
            .query_row("SELECT status FROM messages_in WHERE kind = 'system' AND content LIKE '%question_response%'", [], |r| r.get::<_, String>(0))
            .unwrap()
    };
    assert_eq!(answer_status(), "pending", "recorded, waiting for a turn");

    let r = one(c.ask("so what now"));
    assert!(r.contains("so what now"), "{r}");
    let users = conversation_rows(&session.dir, "user");
    assert_eq!(
        users.len(),
        2,
        "the answer woke no turn of its own: {users:?}"
    );
    assert!(
        users[1].contains("action=\"question\" status=\"answered\">"),
        "shown as a system_response: {}",
        users[1]
    );
    assert!(users[1].contains("\"value\":\"b\""), "{}", users[1]);
    wait_for("the late answer is acked", Duration::from_secs(10), || {
        answer_status() == "completed"
    });
    rt.block_on(host.shutdown()).unwrap();
}
