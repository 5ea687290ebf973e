//! Issue 14: a per-session disk quota, enforced by the host. An agent
//! whose shell writes past its quota (5 MB here) is stopped, the agent
//! finds a note saying what uses the space, the conversation is told once
//! what the owner can do, another agent's session keeps answering
//! meanwhile, and once the files are gone the session answers again.
//! Real host, real runners in the sandbox, real files.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use crate::common::*;
use pinch_channels::fake::{FakeChannel, Sent};
use pinch_channels::{AckOutcome, Capabilities, InboundEvent};
use pinch_host::db::central::Central;

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

fn msg(chat: &str, id: &str, text: &str) -> InboundEvent {
    InboundEvent {
        channel_type: "chat".into(),
        platform_id: chat.into(),
        message_id: id.into(),
        sender_id: "owner".into(),
        sender_name: Some("Owner".into()),
        text: text.into(),
        ..Default::default()
    }
}

#[test]
fn a_session_over_its_disk_quota_is_stopped_told_once_and_runs_again_once_there_is_room() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = with_script(host_config(tmp.path(), any_sandbox()), SCRIPT);
    cfg.disk_quota_mb = 5;
    cfg.disk_check = Duration::from_millis(200);
    cfg.stop_grace = Duration::from_secs(1);
    let data = cfg.data_dir.clone();
    std::fs::create_dir_all(&data).unwrap();
    {
        // Two agents, each in its own conversation on a fake channel.
        let mut c = Central::open(&data.join("pinch.db")).unwrap();
        c.bootstrap("tester").unwrap();
        let t = "2026-01-01T00:00:00.000Z";
        c.conn
            .execute(
                "INSERT INTO users (id, kind, created_at) VALUES ('chat:owner', 'chat', ?1)",
                [t],
            )
            .unwrap();
        c.conn.execute("INSERT INTO user_roles (user_id, role, agent_group_id, granted_at) VALUES ('chat:owner', 'owner', NULL, ?1)", [t]).unwrap();
        c.conn.execute("INSERT INTO agent_groups (id, name, folder, created_at) VALUES ('other', 'other', 'other', ?1)", [t]).unwrap();
        c.conn
            .execute(
                "INSERT INTO agent_configs (agent_group_id, updated_at) VALUES ('other', ?1)",
                [t],
            )
            .unwrap();
        for (mg, room, ag) in [("mg-a", "room-a", "main"), ("mg-b", "room-b", "other")] {
            c.conn
                .execute(
                    "INSERT INTO messaging_groups (id, channel_type, platform_id, name, is_group, unknown_sender_policy, created_at)
                     VALUES (?1, 'chat', ?2, ?2, 0, 'strict', ?3)",
                    [mg, room, t],
                )
                .unwrap();
            c.conn
                .execute(
                    "INSERT INTO wirings (id, messaging_group_id, agent_group_id, engage_mode, engage_pattern, sender_scope, ignored_message_policy, session_mode, priority, created_at)
                     VALUES (?1, ?2, ?3, 'pattern', '.', 'known', 'drop', 'shared', 0, ?4)",
                    [&format!("w-{mg}"), mg, ag, t],
                )
                .unwrap();
        }
    }
    let cell: Arc<OnceLock<Arc<FakeChannel>>> = Arc::default();
    let c2 = cell.clone();
    cfg.extra_channels.push(Arc::new(move |tx| {
        let ch = FakeChannel::new(
            "chat",
            Capabilities {
                max_text: 4000,
                ..Default::default()
            },
            tx,
        );
        c2.set(ch.clone()).ok();
        ch
    }));
    let rt = rt();
    let host = rt.block_on(pinch_host::start(cfg)).unwrap();
    let chat = cell.get().unwrap().clone();
    let say = |room: &str, id: &str, text: &str| {
        let out = rt.block_on(chat.send(msg(room, id, text)));
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
