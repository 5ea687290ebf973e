//! Issue 14: a per-session disk quota, enforced by the host. An agent
//! whose shell writes past its quota (5 MB here) is stopped, the agent
//! finds a note saying what uses the space, the conversation is told once
//! what the owner can do, another agent's session keeps answering
//! meanwhile, and once the files are gone the session answers again.
//! Real host, real runners in the sandbox, real files.

use std::time::Duration;

use crate::common::*;
use pinch_channels::fake::Sent;
use pinch_channels::AckOutcome;

const WAIT: Duration = Duration::from_secs(30);

/// `fill-disk` writes 8 MB once (a marker keeps a retry of the same
/// message from writing again) and then idles in the tool, so only the
/// host can end the turn.
const SCRIPT: &str = r#"
[[rule]]
contains = "fill-disk"
tool = "shell"
args = { command = "if [ -e once ]; then echo skipped; else touch once; head -c 8388608 /dev/zero > big.bin; sleep 120; fi", timeout_s = 150 }

[[rule]]
after_tool = "*"
reply = "shell said: {tool_result}"
"#;

#[test]
fn a_session_over_its_disk_quota_is_stopped_told_once_and_runs_again_once_there_is_room() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = with_script(host_config(tmp.path(), any_sandbox()), SCRIPT);
    cfg.disk_quota_mb = 5;
    cfg.disk_check = Duration::from_millis(200);
    cfg.stop_grace = Duration::from_secs(1);
    let data = cfg.data_dir.clone();
    // Two agents, each in its own conversation on a fake channel.
    let cell = fake_chat_rooms(&mut cfg, &[("room-a", "main"), ("room-b", "other")]);
    let rt = rt();
    let host = rt.block_on(pinch_host::start(cfg)).unwrap();
    let chat = cell.get().unwrap().clone();
    let say = |room: &str, id: &str, text: &str| {
        let out = rt.block_on(chat.send(fake_chat_msg_in(room, id, text)));
        assert!(
            matches!(out, AckOutcome::Stored { routed: 1, .. }),
            "{out:?}"
        );
    };
    let wait = |what: &str, pred: &dyn Fn(&Sent) -> bool| -> Sent {
        rt.block_on(chat.wait_for(WAIT, pred))
            .unwrap_or_else(|| panic!("timed out waiting for {what}; sent: {:#?}", chat.sent()))
    };
    let paused = |s: &Sent| matches!(s, Sent::Notice { to, text } if to.platform_id == "room-a" && text.starts_with("The assistant is paused"));
    let main_session = || {
        rt.block_on(host.sessions())
            .into_iter()
            .find(|s| s.agent_group_id == "main")
    };

    // The agent fills its workspace past the quota: stopped, told once.
    say("room-a", "a1", "fill-disk please");
    let notice = wait("the quota notice", &paused);
    let text = notice.text().to_owned();
    assert!(
        text.contains("of its 5.0 MB disk quota") && text.contains("/workspace/agent/big.bin"),
        "{text}"
    );
    assert!(
        text.contains("pinch admin groups config-set main --sandbox"),
        "the owner's fix is named: {text}"
    );
    wait_for("the runner stopped", WAIT, || {
        main_session().is_some_and(|s| s.runner_id.is_none())
    });
    let sdir = main_session().unwrap().dir;
    let note: String = inbound(&sdir)
        .query_row(
            "SELECT content FROM messages_in WHERE id LIKE 'disk-quota:%'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(
        note.contains("/workspace/agent/big.bin") && note.contains("Delete files"),
        "the agent is told what uses the space: {note}"
    );

    // Another agent answers meanwhile.
    say("room-b", "b1", "hello other");
    wait(
        "the other agent's reply",
        &|s| matches!(s, Sent::Message { to, msg, .. } if to.platform_id == "room-b" && msg.text.contains("hello other")),
    );

    // A new message while over the quota: kept, not run, no second notice.
    say("room-a", "a2", "are you there");
    say("room-b", "b2", "still fine");
    wait(
        "the other agent's second reply",
        &|s| matches!(s, Sent::Message { to, msg, .. } if to.platform_id == "room-b" && msg.text.contains("still fine")),
    );
    assert!(
        main_session().is_some_and(|s| s.runner_id.is_none()),
        "not started while over its quota"
    );

    // The owner deletes the file: the next message runs the session again.
    let big = data.join("groups/main/big.bin");
    assert!(big.exists());
    std::fs::remove_file(&big).unwrap();
    say("room-a", "a3", "hello again");
    // (Its batch holds the stopped message too, whose retry now skips.)
    wait(
        "the main agent's reply after cleaning up",
        &|s| matches!(s, Sent::Message { to, .. } if to.platform_id == "room-a"),
    );
    let notices = chat.sent().iter().filter(|s| paused(s)).count();
    assert_eq!(notices, 1, "the conversation is told once");
    rt.block_on(host.shutdown()).unwrap();
}
