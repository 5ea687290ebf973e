//! The channel foundation (SPEC §9.1) through a real host, real session
//! DBs and real runners answering with the scripted provider: two
//! recording fake channels, one with files, edits and reactions (`rich`)
//! and one with none (`plain`), so each capability and its fallback is
//! seen end to end. Also: attachments in (saved into the inbox, read by
//! the agent with read_file; an over-size one noted, the message kept).

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use crate::common::*;
use pinch_channels::fake::{FakeChannel, Sent};
use pinch_channels::{AckOutcome, Capabilities, InboundAttachment, InboundEvent};
use pinch_host::db::central::Central;

const WAIT: Duration = Duration::from_secs(30);

const SCRIPT: &str = r#"
[[rule]]
contains = "send me the report"
tool = "write_file"
args = { path = "report.txt", content = "numbers: 1 2 3" }

[[rule]]
after_tool = "write_file"
tool = "send_file"
args = { path = "report.txt", text = "here it is" }

[[rule]]
after_tool = "send_file"
reply = "report sent"

[[rule]]
contains = "draft please"
tool = "send_message"
args = { text = "draft v1" }

[[rule]]
after_tool = "send_message"
tool = "edit_message"
args = { seq = 3, text = "draft v2" }

[[rule]]
after_tool = "edit_message"
reply = "edited"

[[rule]]
contains = "react to this"
tool = "add_reaction"
args = { seq = 2, emoji = "👍" }

[[rule]]
after_tool = "add_reaction"
reply = "reacted"

[[rule]]
contains = "read the attachment"
tool = "read_file"
args = { path = "{inbox_path}" }

[[rule]]
after_tool = "read_file"
reply = "the file says: {tool_result}"
"#;

struct World {
    rt: tokio::runtime::Runtime,
    host: Option<pinch_host::HostHandle>,
    rich: Arc<FakeChannel>,
    plain: Arc<FakeChannel>,
    data: std::path::PathBuf,
    _tmp: tempfile::TempDir,
}

/// Both fake conversations (`rich`/`c1`, `plain`/`c1`) wired to `main`,
/// open to anyone.
fn world() -> World {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = with_script(host_config(tmp.path(), any_sandbox()), SCRIPT);
    let data = cfg.data_dir.clone();
    std::fs::create_dir_all(&data).unwrap();
    {
        let mut c = Central::open(&data.join("pinch.db")).unwrap();
        c.bootstrap("tester").unwrap();
        for ch in ["rich", "plain"] {
            c.conn
                .execute(
                    "INSERT INTO messaging_groups (id, channel_type, platform_id, name, is_group, unknown_sender_policy, created_at)
                     VALUES (?1, ?2, 'c1', 'x', 0, 'public', '2026-01-01T00:00:00.000Z')",
                    [format!("mg-{ch}"), ch.to_owned()],
                )
                .unwrap();
            c.conn
                .execute(
                    "INSERT INTO wirings (id, messaging_group_id, agent_group_id, engage_mode, engage_pattern, sender_scope, ignored_message_policy, session_mode, priority, created_at)
                     VALUES (?1, ?2, 'main', 'pattern', '.', 'all', 'drop', 'shared', 0, '2026-01-01T00:00:00.000Z')",
                    [format!("w-{ch}"), format!("mg-{ch}")],
                )
                .unwrap();
        }
    }
    let mut cfg = cfg;
    type Slot = Arc<OnceLock<Arc<FakeChannel>>>;
    let (a, b): (Slot, Slot) = Default::default();
    let (a2, b2) = (a.clone(), b.clone());
    cfg.extra_channels.push(Arc::new(move |tx| {
        let caps = Capabilities {
            files: true,
            edit: true,
            reactions: true,
            buttons: true,
            max_text: 4000,
            ..Default::default()
        };
        let ch = FakeChannel::new("rich", caps, tx);
        a2.set(ch.clone()).ok();
        ch
    }));
    cfg.extra_channels.push(Arc::new(move |tx| {
        let ch = FakeChannel::new(
            "plain",
            Capabilities {
                max_text: 4000,
                ..Default::default()
            },
            tx,
        );
        b2.set(ch.clone()).ok();
        ch
    }));
    let rt = rt();
    let host = rt.block_on(pinch_host::start(cfg)).unwrap();
    World {
        rt,
        host: Some(host),
        rich: a.get().unwrap().clone(),
        plain: b.get().unwrap().clone(),
        data,
        _tmp: tmp,
    }
}

fn msg(channel: &str, id: &str, text: &str) -> InboundEvent {
    InboundEvent {
        channel_type: channel.into(),
        platform_id: "c1".into(),
        message_id: id.into(),
        sender_id: "ann".into(),
        sender_name: Some("Ann".into()),
        text: text.into(),
        is_mention: true,
        ..Default::default()
    }
}

impl World {
    fn say(&self, ch: &FakeChannel, ev: InboundEvent) {
        let out = self.rt.block_on(ch.send(ev));
        assert!(
            matches!(out, AckOutcome::Stored { routed: 1, .. }),
            "{out:?}"
        );
    }
    fn wait(&self, ch: &FakeChannel, what: &str, pred: impl FnMut(&Sent) -> bool) -> Sent {
        self.rt
            .block_on(ch.wait_for(WAIT, pred))
            .unwrap_or_else(|| {
                panic!(
                    "timed out waiting for {what}; sent so far: {:#?}",
                    ch.sent()
                )
            })
    }
    /// The one session of a channel's conversation.
    fn session_dir(&self, channel: &str) -> std::path::PathBuf {
        let c = pinch_proto::rusqlite::Connection::open(self.data.join("pinch.db")).unwrap();
        let id: String = c
            .query_row(
                "SELECT id FROM sessions WHERE messaging_group_id = ?1",
                [format!("mg-{channel}")],
                |r| r.get(0),
            )
            .unwrap();
        self.data.join("sessions/main").join(id)
    }
    fn shutdown(mut self) {
        let h = self.host.take().unwrap();
        self.rt.block_on(h.shutdown()).unwrap();
    }
}

#[test]
fn a_file_goes_to_a_files_channel_and_becomes_a_line_elsewhere() {
    let w = world();
    w.say(&w.rich, msg("rich", "r1", "send me the report"));
    let sent = w.wait(
        &w.rich,
        "the file message",
        |s| matches!(s, Sent::Message { msg, .. } if msg.text == "here it is"),
    );
    let Sent::Message {
        msg: out, files, ..
    } = sent
    else {
        unreachable!()
    };
    assert_eq!(out.files.len(), 1, "{out:?}");
    assert_eq!(out.files[0].name, "report.txt");
    assert_eq!(out.files[0].size, 14);
    assert_eq!(
        files,
        vec![("report.txt".to_owned(), b"numbers: 1 2 3".to_vec())],
        "the adapter read the checked file"
    );
    w.wait(&w.rich, "the final answer", |s| s.text() == "report sent");

    w.say(&w.plain, msg("plain", "p1", "send me the report"));
    w.wait(&w.plain, "the file line", |s| {
        s.text() == "here it is\n[files: report.txt]"
    });
    assert!(w
        .plain
        .sent()
        .iter()
        .all(|s| !matches!(s, Sent::Message { files, .. } if !files.is_empty())));
    w.shutdown();
}

#[test]
fn an_edit_uses_the_platform_id_from_the_ledger_or_becomes_a_correction() {
    let w = world();
    w.say(&w.rich, msg("rich", "r1", "draft please"));
    let first = w.wait(&w.rich, "the draft", |s| s.text() == "draft v1");
    let Sent::Message {
        platform_message_id: draft_pid,
        ..
    } = first
    else {
        unreachable!()
    };
    // The scripted edit names seq 3: make sure that is the draft's row.
    let out = outbound(&w.session_dir("rich"));
    let seq: i64 = out
        .query_row(
            "SELECT seq FROM messages_out WHERE content LIKE '%draft v1%'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(seq, 3, "the script's edit targets seq 3");
    let edit = w.wait(&w.rich, "the edit", |s| matches!(s, Sent::Edit { .. }));
    assert_eq!(
        edit,
        Sent::Edit {
            to: edit.to().clone(),
            platform_message_id: draft_pid.clone(),
            text: "draft v2".into()
        }
    );
    w.wait(&w.rich, "the final answer", |s| s.text() == "edited");
    // The ledger records the edit against the draft's platform id.
    let inb = ledger_db(&w.session_dir("rich"));
    let n: i64 = inb
        .query_row("SELECT count(*) FROM delivered WHERE platform_message_id = ?1 AND status = 'delivered'", [&draft_pid], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 2, "the draft and its edit");

    w.say(&w.plain, msg("plain", "p1", "draft please"));
    w.wait(&w.plain, "the correction", |s| {
        s.text() == "(correction to message 3) draft v2"
    });
    assert!(w
        .plain
        .sent()
        .iter()
        .all(|s| !matches!(s, Sent::Edit { .. })));
    w.shutdown();
}

#[test]
fn a_reaction_reaches_a_reactions_channel_and_is_dropped_elsewhere() {
    let w = world();
    w.say(&w.rich, msg("rich", "r-react", "react to this"));
    let r = w.wait(&w.rich, "the reaction", |s| {
        matches!(s, Sent::Reaction { .. })
    });
    assert_eq!(
        r,
        Sent::Reaction {
            to: r.to().clone(),
            platform_message_id: "r-react".into(),
            emoji: "👍".into()
        }
    );
    w.wait(&w.rich, "the final answer", |s| s.text() == "reacted");

    w.say(&w.plain, msg("plain", "p-react", "react to this"));
    w.wait(&w.plain, "the final answer", |s| s.text() == "reacted");
    assert!(
        w.plain
            .sent()
            .iter()
            .all(|s| !matches!(s, Sent::Reaction { .. }) && !s.text().contains("👍")),
        "{:#?}",
        w.plain.sent()
    );
    let inb = ledger_db(&w.session_dir("plain"));
    let err: String = inb
        .query_row(
            "SELECT last_error FROM delivered WHERE status = 'failed'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(err.contains("no reactions"), "{err}");
    w.shutdown();
}

#[test]
fn an_attachment_is_saved_into_the_inbox_and_read_by_the_agent() {
    let w = world();
    let mut ev = msg("rich", "att-1", "read the attachment please");
    ev.attachments = vec![
        InboundAttachment {
            name: "../notes.txt".into(),
            mime: Some("text/plain".into()),
            size: 22,
            data: Some(b"the secret word is plum".to_vec()),
        },
        InboundAttachment {
            name: "huge.bin".into(),
            mime: None,
            size: 30 << 20,
            data: None,
        },
    ];
    w.say(&w.rich, ev);
    let reply = w.wait(&w.rich, "the agent's reading", |s| {
        s.text().starts_with("the file says:")
    });
    assert!(
        reply.text().contains("the secret word is plum"),
        "{}",
        reply.text()
    );
    // The row lists the saved file (sanitised name, inbox path) and notes the other.
    let inb = inbound(&w.session_dir("rich"));
    let content: String = inb
        .query_row(
            "SELECT content FROM messages_in WHERE id = 'att-1:main'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(&content).unwrap();
    let atts = v["attachments"].as_array().unwrap();
    assert_eq!(atts.len(), 1, "{v}");
    assert_eq!(atts[0]["name"], "notes.txt");
    assert_eq!(atts[0]["path"], "/workspace/inbox/att-1/notes.txt");
    assert!(
        v["text"].as_str().unwrap().contains("huge.bin")
            && v["text"]
                .as_str()
                .unwrap()
                .contains("larger than the 25 MiB limit"),
        "{v}"
    );
    assert_eq!(
        std::fs::read(w.session_dir("rich").join("inbox/att-1/notes.txt")).unwrap(),
        b"the secret word is plum"
    );
    w.shutdown();
}
