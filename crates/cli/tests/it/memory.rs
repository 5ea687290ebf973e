//! Long-term memory (issue 17) as a user meets it: a fact told in one
//! conversation is found by the agent from another conversation (a new
//! session) of the same agent after `/clear` and a host restart, and a
//! second agent group does not find it. Real hosts, real runners in the
//! sandbox, the index a real SQLite file in the group's folder.

use std::time::Duration;

use crate::common::*;
use pinch_channels::fake::Sent;
use pinch_channels::AckOutcome;

const WAIT: Duration = Duration::from_secs(30);

const SCRIPT: &str = r#"
[[rule]]
contains = "recall"
tool = "search_memory"
args = { query = "landlord" }

[[rule]]
after_tool = "*"
reply = "memory said: {tool_result}"
"#;

const ROOMS: &[(&str, &str)] = &[("room-a", "main"), ("room-c", "main"), ("room-b", "other")];

/// Starts a host on `dir` (the same data dir each time), sends `text` in
/// `room` and returns the reply's text.
struct Run {
    rt: tokio::runtime::Runtime,
    host: pinch_host::HostHandle,
    chat: std::sync::Arc<pinch_channels::fake::FakeChannel>,
}

impl Run {
    fn start(dir: &std::path::Path) -> Run {
        let mut cfg = with_script(host_config(dir, any_sandbox()), SCRIPT);
        let cell = fake_chat_rooms(&mut cfg, ROOMS);
        let rt = rt();
        let host = rt.block_on(pinch_host::start(cfg)).unwrap();
        let chat = cell.get().unwrap().clone();
        Run { rt, host, chat }
    }

    fn say(&self, room: &str, id: &str, text: &str) -> String {
        let out = self
            .rt
            .block_on(self.chat.send(fake_chat_msg_in(room, id, text)));
        assert!(
            matches!(out, AckOutcome::Stored { routed: 1, .. }),
            "{out:?}"
        );
        let reply = self
            .rt
            .block_on(self.chat.wait_for(WAIT, &|s: &Sent| {
                matches!(s, Sent::Message { to, msg, .. } if to.platform_id == room && msg.in_reply_to.as_deref() == Some(id))
            }))
            .unwrap_or_else(|| panic!("no reply to {id}; sent: {:#?}", self.chat.sent()));
        reply.text().to_owned()
    }

    fn stop(self) {
        self.rt.block_on(self.host.shutdown()).unwrap();
    }
}

#[test]
fn a_fact_told_once_is_found_in_a_new_session_after_clear_and_a_restart_and_not_by_another_agent() {
    let tmp = tempfile::tempdir().unwrap();
    let run = Run::start(tmp.path());
    let said = run.say(
        "room-a",
        "a1",
        "My landlord is Mr Okafor and the rent is due on the third",
    );
    assert!(said.contains("Okafor"), "{said}");
    let cleared = run.say("room-a", "a2", "/clear");
    assert!(cleared.to_lowercase().contains("clear"), "{cleared}");
    run.stop();

    let run = Run::start(tmp.path());
    let found = run.say("room-c", "c1", "recall what I told you");
    assert!(
        found.starts_with("memory said: Memory for \"landlord\", best first:")
            && found.contains("said to you (session ")
            && found.contains("My «landlord» is Mr Okafor"),
        "{found}"
    );
    let other = run.say("room-b", "b1", "recall what I told you");
    assert_eq!(
        other,
        "memory said: Nothing in memory matches \"landlord\"."
    );
    run.stop();
    assert!(tmp
        .path()
        .join("data/groups/main/.pinch/memory.db")
        .is_file());
    assert!(tmp
        .path()
        .join("data/groups/other/.pinch/memory.db")
        .is_file());
}
