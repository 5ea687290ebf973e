//! S8 and SPEC §7.1–§7.2 end to end: a real host with a recording fake
//! channel (cards, buttons, notices recorded), real session DBs and real
//! runners answering with the scripted provider. Unknown conversations and
//! senders, the approver's card, a wrong clicker refused and audited,
//! allow/deny, expiry, numbered answers on a channel without buttons, the
//! command gate, and per-thread sessions in a threaded group.

use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use crate::common::*;
use pinch_channels::fake::{FakeChannel, Sent};
use pinch_channels::{AckOutcome, Capabilities, Click, InboundEvent};
use pinch_host::db::central::Central;

const WAIT: Duration = Duration::from_secs(20);

struct World {
    rt: tokio::runtime::Runtime,
    host: Option<pinch_host::HostHandle>,
    /// Threads, buttons, DMs.
    chat: Arc<FakeChannel>,
    /// No threads, no buttons (numbered answers).
    plain: Arc<FakeChannel>,
    db: std::path::PathBuf,
    _tmp: tempfile::TempDir,
}

/// A host whose owners are `cli:tester`, `chat:owner` and `plain:boss`;
/// `seed` runs on the central DB before the host starts.
fn world(tweak: impl FnOnce(&mut pinch_host::HostConfig), seed: impl FnOnce(&Central)) -> World {
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = host_config(tmp.path(), any_sandbox());
    tweak(&mut cfg);
    let db = cfg.data_dir.join("pinch.db");
    std::fs::create_dir_all(&cfg.data_dir).unwrap();
    {
        let mut c = Central::open(&db).unwrap();
        c.bootstrap("tester").unwrap();
        for u in ["chat:owner", "plain:boss"] {
            c.conn.execute("INSERT INTO users (id, kind, created_at) VALUES (?1, 'x', '2026-01-01T00:00:00.000Z')", [u]).unwrap();
            c.conn
                .execute("INSERT INTO user_roles (user_id, role, agent_group_id, granted_at) VALUES (?1, 'owner', NULL, '2026-01-01T00:00:00.000Z')", [u])
                .unwrap();
        }
        seed(&c);
    }
    let chat_cell: Arc<OnceLock<Arc<FakeChannel>>> = Arc::default();
    let plain_cell: Arc<OnceLock<Arc<FakeChannel>>> = Arc::default();
    let (a, b) = (chat_cell.clone(), plain_cell.clone());
    cfg.extra_channels.push(Arc::new(move |tx| {
        let ch = FakeChannel::new(
            "chat",
            Capabilities {
                threads: true,
                buttons: true,
                open_dm: true,
                max_text: 4000,
                ..Default::default()
            },
            tx,
        );
        a.set(ch.clone()).ok();
        ch
    }));
    cfg.extra_channels.push(Arc::new(move |tx| {
        let ch = FakeChannel::new(
            "plain",
            Capabilities {
                open_dm: true,
                max_text: 4000,
                ..Default::default()
            },
            tx,
        );
        b.set(ch.clone()).ok();
        ch
    }));
    let rt = rt();
    let host = rt.block_on(pinch_host::start(cfg)).unwrap();
    World {
        rt,
        host: Some(host),
        chat: chat_cell.get().unwrap().clone(),
        plain: plain_cell.get().unwrap().clone(),
        db,
        _tmp: tmp,
    }
}

impl World {
    fn say(&self, ch: &FakeChannel, ev: InboundEvent) -> AckOutcome {
        self.rt.block_on(ch.send(ev))
    }
    fn click(&self, ch: &FakeChannel, platform_id: &str, user: &str, callback: &str) {
        self.rt.block_on(ch.click(Click {
            channel_type: ch_name(ch),
            platform_id: platform_id.into(),
            thread_id: None,
            user_id: user.into(),
            callback: callback.into(),
        }))
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
    fn central(&self) -> pinch_proto::rusqlite::Connection {
        pinch_proto::rusqlite::Connection::open(&self.db).unwrap()
    }
    fn count(&self, sql: &str, p: &[&dyn pinch_proto::rusqlite::ToSql]) -> i64 {
        self.central().query_row(sql, p, |r| r.get(0)).unwrap()
    }
    fn shutdown(mut self) {
        let h = self.host.take().unwrap();
        self.rt.block_on(h.shutdown()).unwrap();
    }
}

fn ch_name(ch: &FakeChannel) -> String {
    use pinch_channels::Channel;
    ch.channel_type().to_owned()
}

fn msg(
    channel: &str,
    chat: &str,
    id: &str,
    sender: &str,
    text: &str,
    mention: bool,
    group: bool,
) -> InboundEvent {
    InboundEvent {
        channel_type: channel.into(),
        platform_id: chat.into(),
        thread_id: None,
        message_id: id.into(),
        sender_id: sender.into(),
        sender_name: Some(sender.to_uppercase()),
        text: text.into(),
        is_mention: mention,
        is_group: group,
        ..Default::default()
    }
}

/// The buttons of a card message.
fn buttons(s: &Sent) -> Vec<(String, String)> {
    match s {
        Sent::Message { msg, .. } => msg
            .buttons
            .iter()
            .map(|b| (b.label.clone(), b.callback.clone()))
            .collect(),
        _ => vec![],
    }
}

fn is_card(s: &Sent) -> bool {
    s.text().starts_with("Approval needed")
}

/// Rows stored for an agent group, over all its sessions.
fn stored_texts(data: &Path, ag: &str) -> Vec<String> {
    let mut out = Vec::new();
    let Ok(dirs) = std::fs::read_dir(data.join("sessions").join(ag)) else {
        return out;
    };
    for d in dirs {
        let d = d.unwrap().path();
        let c = inbound(&d);
        let mut s = c
            .prepare("SELECT content FROM messages_in WHERE kind = 'chat' ORDER BY seq")
            .unwrap();
        for t in s.query_map([], |r| r.get::<_, String>(0)).unwrap() {
            let v: serde_json::Value = serde_json::from_str(&t.unwrap()).unwrap();
            out.push(v["text"].as_str().unwrap_or_default().to_owned());
        }
    }
    out
}

#[test]
fn registration_card_wrong_clicker_refused_owner_connects_and_message_is_answered() {
    let w = world(|_| {}, |_| {});
    // A mention in a group pinch has never seen.
    let out = w.say(
        &w.chat,
        msg(
            "chat",
            "grp1",
            "m1",
            "alice",
            "@pinch what's up",
            true,
            true,
        ),
    );
    assert!(
        matches!(&out, AckOutcome::Stored { routed: 0, note: Some(n), handled: true } if n.contains("owner has been asked")),
        "{out:?}"
    );
    // The card goes to the owner on the origin's channel, by DM, with buttons.
    let card = w.wait(&w.chat, "the registration card", is_card);
    assert_eq!(card.to().platform_id, "dm-owner");
    let b = buttons(&card);
    let labels: Vec<&str> = b.iter().map(|(l, _)| l.as_str()).collect();
    assert_eq!(labels, ["Connect to main", "New agent", "Reject"]);
    assert!(b.iter().all(|(_, cb)| cb.len() <= 64));
    // Chatter in the same group does not ask again.
    w.say(
        &w.chat,
        msg("chat", "grp1", "m2", "alice", "@pinch hello?", true, true),
    );
    // The decision is made before the ack: a second request would be a
    // second approval row by now (no wait needed, nothing left to race).
    assert_eq!(w.count("SELECT count(*) FROM pending_approvals", &[]), 1);
    assert_eq!(
        w.chat.sent().iter().filter(|s| is_card(s)).count(),
        1,
        "one card per conversation"
    );

    // A stranger presses the owner's button: refused visibly, audited, nothing changes.
    w.click(&w.chat, "grp1", "mallory", &b[0].1);
    let refusal = w.wait(
        &w.chat,
        "the refusal",
        |s| matches!(s, Sent::Notice { text, .. } if text.starts_with("Refused")),
    );
    assert_eq!(refusal.to().platform_id, "grp1");
    assert_eq!(w.count("SELECT count(*) FROM dropped_messages WHERE reason = 'not_approver' AND user_id = 'chat:mallory'", &[]), 1);
    assert_eq!(w.count("SELECT count(*) FROM wirings w JOIN messaging_groups m ON m.id = w.messaging_group_id WHERE m.platform_id = 'grp1'", &[]), 0);

    // The owner connects it to `main`: wired, the sender is a member, the
    // held message is replayed and answered in the group.
    w.click(&w.chat, "dm-owner", "owner", &b[0].1);
    w.wait(&w.chat, "the owner's confirmation", |s| {
        s.text().starts_with("Connected to main")
    });
    let reply = w.wait(&w.chat, "the agent's reply in the group", |s| matches!(s, Sent::Message { to, msg, .. } if to.platform_id == "grp1" && msg.text.contains("what's up")));
    assert!(reply.text().starts_with("Hello from pinch!"));
    assert_eq!(w.count("SELECT count(*) FROM agent_group_members WHERE user_id = 'chat:alice' AND agent_group_id = 'main'", &[]), 1);
    let mode: String = w
        .central()
        .query_row("SELECT engage_mode FROM wirings w JOIN messaging_groups m ON m.id = w.messaging_group_id WHERE m.platform_id = 'grp1'", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "mention-sticky");
    // A second click on the decided card is told so.
    w.click(&w.chat, "dm-owner", "owner", &b[2].1);
    w.wait(&w.chat, "already decided", |s| {
        s.text().contains("already approved")
    });
    // The conversation audit recorded the unwired mentions.
    assert!(w.count("SELECT message_count FROM dropped_messages WHERE reason = 'no_agent_wired' AND platform_id = 'grp1'", &[]) >= 1);
    w.shutdown();
}

fn wired_group(c: &Central, policy: &str) {
    c.conn
        .execute(
            "INSERT INTO messaging_groups (id, channel_type, platform_id, name, is_group, unknown_sender_policy, created_at)
             VALUES ('mg-g', 'chat', 'grp', 'team', 1, ?1, '2026-01-01T00:00:00.000Z')",
            [policy],
        )
        .unwrap();
    c.conn
        .execute(
            "INSERT INTO wirings (id, messaging_group_id, agent_group_id, engage_mode, engage_pattern, sender_scope, ignored_message_policy, session_mode, priority, created_at)
             VALUES ('w-g', 'mg-g', 'main', 'mention', NULL, 'known', 'drop', 'shared', 0, '2026-01-01T00:00:00.000Z')",
            [],
        )
        .unwrap();
}

#[test]
fn unknown_sender_gets_one_card_allow_replays_deny_remembers() {
    let w = world(|_| {}, |c| wired_group(c, "request_approval"));
    let out = w.say(
        &w.chat,
        msg("chat", "grp", "b1", "bob", "@pinch hi from bob", true, true),
    );
    assert!(
        matches!(&out, AckOutcome::Stored { routed: 0, note: Some(n), handled: true } if n.contains("asked to let you in")),
        "{out:?}"
    );
    let card = w.wait(&w.chat, "the sender card", is_card);
    assert!(card.text().contains("chat:bob"), "{}", card.text());
    assert_eq!(card.to().platform_id, "dm-owner");
    w.say(
        &w.chat,
        msg("chat", "grp", "b2", "bob", "@pinch again", true, true),
    );
    // Decided before the ack: a second request would be a row by now.
    assert_eq!(w.count("SELECT count(*) FROM pending_approvals", &[]), 1);
    assert_eq!(
        w.chat.sent().iter().filter(|s| is_card(s)).count(),
        1,
        "deduplicated per sender"
    );
    assert!(
        stored_texts(w.db.parent().unwrap(), "main").is_empty(),
        "nothing stored before approval"
    );
    assert_eq!(w.count("SELECT message_count FROM dropped_messages WHERE reason = 'unknown_sender' AND user_id = 'chat:bob'", &[]), 2);

    let b = buttons(&card);
    assert_eq!(
        b.iter().map(|(l, _)| l.as_str()).collect::<Vec<_>>(),
        ["Allow", "Deny"]
    );
    w.click(&w.chat, "dm-owner", "owner", &b[0].1);
    w.wait(&w.chat, "bob's first message answered", |s| matches!(s, Sent::Message { to, msg, .. } if to.platform_id == "grp" && msg.text.contains("hi from bob")));
    assert_eq!(
        w.count(
            "SELECT count(*) FROM agent_group_members WHERE user_id = 'chat:bob'",
            &[]
        ),
        1
    );

    // Carol is denied: no store, and her next message asks nobody again.
    w.say(
        &w.chat,
        msg("chat", "grp", "c1", "carol", "@pinch let me in", true, true),
    );
    let card = w.wait(&w.chat, "carol's card", |s| {
        is_card(s) && s.text().contains("chat:carol")
    });
    w.click(&w.chat, "dm-owner", "owner", &buttons(&card)[1].1);
    w.wait(&w.chat, "denied", |s| s.text().starts_with("Denied"));
    w.say(
        &w.chat,
        msg("chat", "grp", "c2", "carol", "@pinch please", true, true),
    );
    // Decided before the ack: a new request would be a row by now.
    assert_eq!(
        w.count(
            "SELECT count(*) FROM pending_approvals WHERE title LIKE '%chat:carol%'",
            &[]
        ),
        1
    );
    assert_eq!(
        w.chat
            .sent()
            .iter()
            .filter(|s| is_card(s) && s.text().contains("chat:carol"))
            .count(),
        1
    );
    let texts = stored_texts(w.db.parent().unwrap(), "main");
    assert!(
        !texts
            .iter()
            .any(|t| t.contains("let me in") || t.contains("please")),
        "{texts:?}"
    );
    w.shutdown();
}

#[test]
fn strict_policy_drops_and_audits_without_asking() {
    let w = world(|_| {}, |c| wired_group(c, "strict"));
    let out = w.say(
        &w.chat,
        msg("chat", "grp", "d1", "dave", "@pinch hello", true, true),
    );
    assert!(
        matches!(&out, AckOutcome::Stored { routed: 0, note: Some(n), handled: false } if n.contains("not allowed")),
        "{out:?}"
    );
    // Decided before the ack: no approval was asked for.
    assert_eq!(w.count("SELECT count(*) FROM pending_approvals", &[]), 0);
    assert!(w.chat.sent().iter().all(|s| !is_card(s)));
    assert_eq!(w.count("SELECT count(*) FROM dropped_messages WHERE reason = 'unknown_sender' AND user_id = 'chat:dave'", &[]), 1);
    w.shutdown();
}

#[test]
fn approvals_expire_and_the_request_can_be_made_again() {
    let w = world(
        |c| {
            c.approval_ttl = Duration::from_secs(1);
            c.sweep_interval = Duration::from_millis(300);
        },
        |c| wired_group(c, "request_approval"),
    );
    w.say(
        &w.chat,
        msg("chat", "grp", "e1", "erin", "@pinch hi", true, true),
    );
    let card = w.wait(&w.chat, "erin's card", is_card);
    w.wait(&w.chat, "the expiry notice", |s| {
        s.text().starts_with("Expired without a decision")
    });
    assert_eq!(
        w.count(
            "SELECT count(*) FROM pending_approvals WHERE status = 'expired'",
            &[]
        ),
        1
    );
    // A late click is told; a new message asks again.
    w.click(&w.chat, "dm-owner", "owner", &buttons(&card)[0].1);
    w.wait(&w.chat, "late click told", |s| {
        s.text().contains("already expired")
    });
    w.say(
        &w.chat,
        msg("chat", "grp", "e2", "erin", "@pinch hi again", true, true),
    );
    w.rt.block_on(
        w.chat
            .wait_for(WAIT, |s| is_card(s) && s.text().contains("hi again")),
    )
    .expect("a second card");
    assert_eq!(
        w.count(
            "SELECT count(*) FROM agent_group_members WHERE user_id = 'chat:erin'",
            &[]
        ),
        0
    );
    w.shutdown();
}

#[test]
fn numbered_answers_on_a_channel_without_buttons() {
    let w = world(|_| {}, |_| {});
    // A DM on the button-less channel: the card goes to the owner there, as text.
    w.say(
        &w.plain,
        msg("plain", "dm-zed", "z1", "zed", "hello?", false, false),
    );
    let card = w.wait(&w.plain, "the numbered card", is_card);
    assert_eq!(card.to().platform_id, "dm-boss");
    assert!(buttons(&card).is_empty());
    assert!(
        card.text().contains("\n1. Connect to main") && card.text().contains("\n3. Reject"),
        "{}",
        card.text()
    );
    // The boss answers "3" (Reject) in the DM: the interceptor takes it.
    let out = w.say(
        &w.plain,
        msg("plain", "dm-boss", "k1", "boss", " 3 ", false, false),
    );
    assert!(
        matches!(&out, AckOutcome::Stored { routed: 0, note: Some(n), handled: true } if n.contains("answer")),
        "{out:?}"
    );
    w.wait(&w.plain, "rejected", |s| s.text().starts_with("Rejected"));
    let denied: Option<String> = w
        .central()
        .query_row(
            "SELECT denied_at FROM messaging_groups WHERE platform_id = 'dm-zed'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(denied.is_some());
    let out = w.say(
        &w.plain,
        msg("plain", "dm-zed", "z2", "zed", "hello??", false, false),
    );
    assert!(
        matches!(&out, AckOutcome::Stored { routed: 0, note: Some(n), handled: false } if n.contains("denied")),
        "{out:?}"
    );
    w.shutdown();
}

#[test]
fn new_agent_by_registration_takes_its_name_from_the_owners_next_message() {
    let w = world(|_| {}, |_| {});
    w.say(
        &w.chat,
        msg("chat", "dm-yan", "y1", "yan", "hi there", false, false),
    );
    let card = w.wait(&w.chat, "the card", is_card);
    let b = buttons(&card);
    let new = b.iter().find(|(l, _)| l == "New agent").unwrap().1.clone();
    w.click(&w.chat, "dm-owner", "owner", &new);
    w.wait(&w.chat, "asked for a name", |s| {
        s.text().contains("next message")
    });
    w.say(
        &w.chat,
        msg(
            "chat",
            "dm-owner",
            "n1",
            "owner",
            "Travel Helper",
            false,
            false,
        ),
    );
    w.wait(&w.chat, "created", |s| {
        s.text().contains("Created the agent")
    });
    w.wait(&w.chat, "yan answered by the new agent", |s| matches!(s, Sent::Message { to, msg, .. } if to.platform_id == "dm-yan" && msg.text.contains("hi there")));
    let (ag, pattern): (String, String) = w
        .central()
        .query_row("SELECT w.agent_group_id, w.engage_pattern FROM wirings w JOIN messaging_groups m ON m.id = w.messaging_group_id WHERE m.platform_id = 'dm-yan'", [], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap();
    assert_eq!((ag.as_str(), pattern.as_str()), ("travel-helper", "."));
    assert!(w
        .db
        .parent()
        .unwrap()
        .join("groups/travel-helper/AGENT.md")
        .exists());
    w.shutdown();
}

#[test]
fn command_gate_help_filtered_and_admin_only() {
    let w = world(
        |_| {},
        |c| {
            wired_group(c, "strict");
            c.conn
                .execute(
                    "INSERT INTO users (id, kind, created_at) VALUES ('chat:mia', 'chat', 'x')",
                    [],
                )
                .unwrap();
            c.conn.execute("INSERT INTO agent_group_members (user_id, agent_group_id, added_at) VALUES ('chat:mia', 'main', 'x')", []).unwrap();
        },
    );
    let out = w.say(
        &w.chat,
        msg("chat", "grp", "h1", "mia", "/help", true, true),
    );
    // Answered by the host: handled, not a failure.
    assert!(
        matches!(&out, AckOutcome::Stored { routed: 0, note: Some(n), handled: true } if n.contains("/help")),
        "{out:?}"
    );
    w.wait(
        &w.chat,
        "help",
        |s| matches!(s, Sent::Notice { text, .. } if text.contains("/compact")),
    );
    let out = w.say(
        &w.chat,
        msg("chat", "grp", "h2", "mia", "/login now", true, true),
    );
    assert!(matches!(&out, AckOutcome::Stored { routed: 0, .. }));
    let out = w.say(
        &w.chat,
        msg("chat", "grp", "h3", "mia", "/clear", true, true),
    );
    assert!(
        matches!(&out, AckOutcome::Stored { routed: 0, note: Some(n), handled: false } if n == "permission denied"),
        "{out:?}"
    );
    w.wait(
        &w.chat,
        "permission denied via the adapter",
        |s| matches!(s, Sent::Notice { text, .. } if text.starts_with("permission denied: /clear")),
    );
    // The owner may; the runner answers /clear itself.
    w.say(
        &w.chat,
        msg("chat", "grp", "h4", "owner", "/clear", true, true),
    );
    w.wait(
        &w.chat,
        "the runner's /clear answer",
        |s| matches!(s, Sent::Message { to, .. } if to.platform_id == "grp"),
    );
    let texts = stored_texts(w.db.parent().unwrap(), "main");
    assert_eq!(
        texts,
        vec!["/clear".to_string()],
        "only the owner's command was stored"
    );
    assert_eq!(w.count("SELECT count(*) FROM dropped_messages WHERE reason IN ('filtered_command', 'permission_denied')", &[]), 2);
    w.shutdown();
}

#[test]
fn threaded_group_gets_a_session_per_thread_and_sticky_follow_ups() {
    let w = world(
        |_| {},
        |c| {
            wired_group(c, "strict");
            c.conn
                .execute(
                    "UPDATE wirings SET engage_mode = 'mention-sticky' WHERE id = 'w-g'",
                    [],
                )
                .unwrap();
            c.conn
                .execute(
                    "INSERT INTO users (id, kind, created_at) VALUES ('chat:mia', 'chat', 'x')",
                    [],
                )
                .unwrap();
            c.conn.execute("INSERT INTO agent_group_members (user_id, agent_group_id, added_at) VALUES ('chat:mia', 'main', 'x')", []).unwrap();
        },
    );
    let in_thread = |id: &str, thread: &str, text: &str, mention: bool| InboundEvent {
        thread_id: Some(thread.into()),
        ..msg("chat", "grp", id, "mia", text, mention, true)
    };
    // No mention, no session yet: not engaged.
    let out = w.say(&w.chat, in_thread("t0", "th-a", "chatter", false));
    assert!(
        matches!(out, AckOutcome::Stored { routed: 0, .. }),
        "{out:?}"
    );
    w.say(&w.chat, in_thread("t1", "th-a", "@pinch alpha", true));
    w.say(&w.chat, in_thread("t2", "th-b", "@pinch beta", true));
    w.wait(&w.chat, "alpha answered in its thread", |s| matches!(s, Sent::Message { to, msg, .. } if to.thread_id.as_deref() == Some("th-a") && msg.text.contains("alpha")));
    w.wait(&w.chat, "beta answered in its thread", |s| matches!(s, Sent::Message { to, msg, .. } if to.thread_id.as_deref() == Some("th-b") && msg.text.contains("beta")));
    // Sticky: the thread's session is active, so a follow-up without a mention engages.
    let out = w.say(&w.chat, in_thread("t3", "th-a", "and more", false));
    assert!(
        matches!(out, AckOutcome::Stored { routed: 1, .. }),
        "{out:?}"
    );
    w.wait(&w.chat, "the sticky follow-up answered", |s| {
        s.text().contains("and more")
    });
    assert_eq!(
        w.count(
            "SELECT count(*) FROM sessions WHERE messaging_group_id = 'mg-g' AND status = 'active'",
            &[]
        ),
        2
    );
    let threads: Vec<String> = {
        let c = w.central();
        let mut s = c.prepare("SELECT thread_id FROM sessions WHERE messaging_group_id = 'mg-g' ORDER BY thread_id").unwrap();
        let v = s
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        v
    };
    assert_eq!(threads, ["th-a", "th-b"]);
    w.shutdown();
}

const ADMIN_SCRIPT: &str = r#"
[[rule]]
contains = "admin-list"
tool = "admin"
args = { command = "members-list", args = { ag = "main" } }

[[rule]]
contains = "admin-wirings"
tool = "admin"
args = { command = "wirings-list" }

[[rule]]
contains = "admin-add"
tool = "admin"
args = { command = "members-add", args = { user = "chat:zoe", ag = "main" } }

[[rule]]
contains = "admin-promote"
tool = "admin"
args = { command = "roles-grant", args = { user = "chat:gadmin", role = "owner" } }

[[rule]]
after_tool = "*"
reply = "admin said: {tool_result} error={tool_error}"
"#;

/// S8, the agent's side: an agent calling admin commands through its
/// session DB is refused while its scope is `disabled`, kept to its own
/// group under `group`, and an access change waits for an admin's card —
/// which a stranger cannot approve — before it runs and the agent is told.
#[test]
fn agent_admin_commands_are_scoped_and_access_changes_wait_for_approval() {
    let w = world(
        |c| c.provider.script = Some(ADMIN_SCRIPT.into()),
        |c| {
            wired_group(c, "strict");
            c.conn.execute("UPDATE wirings SET engage_mode = 'pattern', engage_pattern = '.' WHERE id = 'w-g'", []).unwrap();
            c.conn.execute("UPDATE agent_configs SET admin_scope = 'disabled' WHERE agent_group_id = 'main'", []).unwrap();
            c.conn
                .execute(
                    "INSERT INTO users (id, kind, created_at) VALUES ('chat:gadmin', 'chat', 'x')",
                    [],
                )
                .unwrap();
            c.conn.execute("INSERT INTO user_roles (user_id, role, agent_group_id, granted_at) VALUES ('chat:gadmin', 'admin', 'main', 'x')", []).unwrap();
        },
    );
    let say =
        |id: &str, text: &str| w.say(&w.chat, msg("chat", "grp", id, "owner", text, false, true));
    let reply_to = |w: &World, what: &str| -> String {
        w.wait(&w.chat, what, |s| matches!(s, Sent::Message { to, msg, .. } if to.platform_id == "grp" && msg.text.starts_with("admin said") && msg.in_reply_to.as_deref() == Some(what)))
            .text()
            .to_owned()
    };
    say("a1", "admin-list please");
    let r = reply_to(&w, "a1");
    assert!(
        r.contains("permission-denied")
            && r.contains("--admin_scope group")
            && r.contains("error=true"),
        "{r}"
    );

    // The owner enables group scope with the admin CLI.
    let out = std::process::Command::new(PINCH)
        .args([
            "admin",
            "groups",
            "config-set",
            "main",
            "--admin_scope",
            "group",
            "--data-dir",
        ])
        .arg(w.db.parent().unwrap())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    say("a2", "admin-list please");
    let r = reply_to(&w, "a2");
    assert!(r.contains("error=false"), "{r}");
    say("a3", "admin-wirings please");
    let r = reply_to(&w, "a3");
    assert!(r.contains("forbidden") && r.contains("error=true"), "{r}");

    // An access change: approval-pending, a card for the group's admin.
    say("a4", "admin-add zoe");
    let r = reply_to(&w, "a4");
    assert!(
        r.contains("approval-pending") && r.contains("error=false"),
        "{r}"
    );
    let card = w.wait(&w.chat, "the admin-command card", |s| {
        is_card(s) && s.text().contains("members-add")
    });
    assert_eq!(
        card.to().platform_id,
        "dm-gadmin",
        "group admins come before owners"
    );
    assert_eq!(
        w.count(
            "SELECT count(*) FROM agent_group_members WHERE user_id = 'chat:zoe'",
            &[]
        ),
        0,
        "nothing runs before approval"
    );
    let b = buttons(&card);
    w.click(&w.chat, "grp", "mallory", &b[0].1);
    w.wait(
        &w.chat,
        "the stranger refused",
        |s| matches!(s, Sent::Notice { text, .. } if text.starts_with("Refused")),
    );
    assert_eq!(
        w.count(
            "SELECT count(*) FROM agent_group_members WHERE user_id = 'chat:zoe'",
            &[]
        ),
        0
    );
    w.click(&w.chat, "dm-gadmin", "gadmin", &b[0].1);
    w.wait(&w.chat, "approved", |s| {
        s.text().starts_with("Approved: members-add ran")
    });
    assert_eq!(w.count("SELECT count(*) FROM agent_group_members WHERE user_id = 'chat:zoe' AND agent_group_id = 'main'", &[]), 1);
    // The agent is told: an action_result row, taken by its next turn.
    let data = w.db.parent().unwrap().join("sessions/main");
    let sdir = std::fs::read_dir(&data)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    wait_for("the agent's turn on the approval result", WAIT, || {
        inbound(&sdir)
            .query_row(
                "SELECT status FROM messages_in WHERE id LIKE 'approval-result:%'",
                [],
                |r| r.get::<_, String>(0),
            )
            .is_ok_and(|s| s == "completed")
    });
    let content: String = inbound(&sdir)
        .query_row(
            "SELECT content FROM messages_in WHERE id LIKE 'approval-result:%'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(
        content.contains("\"status\":\"approved\"") && content.contains("\"ok\":true"),
        "{content}"
    );

    // With global scope, a command that could make someone owner is for
    // owners alone to approve: the group's own admin is refused.
    let out = std::process::Command::new(PINCH)
        .args([
            "admin",
            "groups",
            "config-set",
            "main",
            "--admin_scope",
            "global",
            "--data-dir",
        ])
        .arg(w.db.parent().unwrap())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    say("a5", "admin-promote gadmin");
    let r = reply_to(&w, "a5");
    assert!(r.contains("approval-pending"), "{r}");
    let card = w.wait(&w.chat, "the owner-only card", |s| {
        is_card(s) && s.text().contains("roles-grant")
    });
    let b = buttons(&card);
    w.click(&w.chat, "dm-gadmin", "gadmin", &b[0].1);
    w.wait(&w.chat, "the group admin refused", |s| matches!(s, Sent::Notice { to, text, .. } if to.platform_id == "dm-gadmin" && text.starts_with("Refused: only an owner")));
    assert_eq!(
        w.count(
            "SELECT count(*) FROM user_roles WHERE user_id = 'chat:gadmin' AND role = 'owner'",
            &[]
        ),
        0
    );
    w.click(&w.chat, "dm-owner", "owner", &b[1].1);
    w.wait(&w.chat, "rejected by the owner", |s| {
        s.text().starts_with("Rejected: roles-grant")
    });
    assert_eq!(
        w.count(
            "SELECT count(*) FROM user_roles WHERE user_id = 'chat:gadmin' AND role = 'owner'",
            &[]
        ),
        0
    );
    w.shutdown();
}

const SCOPE_SCRIPT: &str = r#"
[[rule]]
contains = "admin-own"
tool = "admin"
args = { command = "groups-update", args = { id = "main", name = "Main HQ" } }

[[rule]]
contains = "admin-rename-user"
tool = "admin"
args = { command = "users-update", args = { id = "chat:owner", display_name = "pwned" } }

[[rule]]
contains = "admin-egress"
tool = "admin"
args = { command = "groups-config-set", args = { id = "main", egress_allow = ["evil.example"] } }

[[rule]]
after_tool = "*"
reply = "admin said: {tool_result} error={tool_error}"
"#;

/// Issue 14: the bootstrap `main` agent (default scope, now `group`) manages
/// its own group at once, but renaming a user or widening its own egress —
/// what a prompt-injected agent did under the old `global` default — waits
/// for an owner's card: nothing changes before, a group admin cannot
/// approve it, and the owner's approval runs exactly what the card showed.
#[test]
fn main_agent_manages_its_group_but_users_and_egress_wait_for_the_owner() {
    let w = world(
        |c| c.provider.script = Some(SCOPE_SCRIPT.into()),
        |c| {
            wired_group(c, "strict");
            c.conn.execute("UPDATE wirings SET engage_mode = 'pattern', engage_pattern = '.' WHERE id = 'w-g'", []).unwrap();
            c.conn
                .execute(
                    "INSERT INTO users (id, kind, created_at) VALUES ('chat:gadmin', 'chat', 'x')",
                    [],
                )
                .unwrap();
            c.conn.execute("INSERT INTO user_roles (user_id, role, agent_group_id, granted_at) VALUES ('chat:gadmin', 'admin', 'main', 'x')", []).unwrap();
        },
    );
    let scope: String = w
        .central()
        .query_row(
            "SELECT admin_scope FROM agent_configs WHERE agent_group_id = 'main'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(scope, "group", "the bootstrap default");
    let say =
        |id: &str, text: &str| w.say(&w.chat, msg("chat", "grp", id, "owner", text, false, true));
    let reply_to = |w: &World, what: &str| -> String {
        w.wait(&w.chat, what, |s| matches!(s, Sent::Message { to, msg, .. } if to.platform_id == "grp" && msg.text.starts_with("admin said") && msg.in_reply_to.as_deref() == Some(what)))
            .text()
            .to_owned()
    };
    let user_name = |w: &World| -> Option<String> {
        w.central()
            .query_row(
                "SELECT display_name FROM users WHERE id = 'chat:owner'",
                [],
                |r| r.get(0),
            )
            .unwrap()
    };
    let egress = |w: &World| -> Option<String> {
        w.central()
            .query_row(
                "SELECT egress_allow FROM agent_configs WHERE agent_group_id = 'main'",
                [],
                |r| r.get(0),
            )
            .unwrap()
    };

    // Its own group: at once.
    say("s1", "admin-own please");
    let r = reply_to(&w, "s1");
    assert!(r.contains("error=false") && r.contains("Main HQ"), "{r}");
    assert_eq!(
        w.count(
            "SELECT count(*) FROM agent_groups WHERE id = 'main' AND name = 'Main HQ'",
            &[]
        ),
        1
    );

    // A user and its own egress: a card each, nothing changed.
    say("s2", "admin-rename-user please");
    let r = reply_to(&w, "s2");
    assert!(
        r.contains("approval-pending") && r.contains("an owner's approval"),
        "{r}"
    );
    say("s3", "admin-egress please");
    let r = reply_to(&w, "s3");
    assert!(
        r.contains("approval-pending") && r.contains("an owner's approval"),
        "{r}"
    );
    let rename = w.wait(&w.chat, "the rename card", |s| {
        is_card(s) && s.text().contains("users-update")
    });
    let widen = w.wait(&w.chat, "the egress card", |s| {
        is_card(s) && s.text().contains("egress_allow") && s.text().contains("evil.example")
    });
    assert_eq!(
        rename.to().platform_id,
        "dm-owner",
        "owners decide, not the group's admin"
    );
    assert_eq!(user_name(&w), None);
    assert_eq!(egress(&w), None);

    // The group's own admin cannot approve either.
    let (rb, eb) = (buttons(&rename), buttons(&widen));
    w.click(&w.chat, "dm-gadmin", "gadmin", &eb[0].1);
    w.wait(&w.chat, "the group admin refused", |s| matches!(s, Sent::Notice { to, text, .. } if to.platform_id == "dm-gadmin" && text.starts_with("Refused: only an owner")));
    assert_eq!(egress(&w), None);

    // The owner approves: exactly what the card showed runs, and the agent is told.
    w.click(&w.chat, "dm-owner", "owner", &rb[0].1);
    w.wait(&w.chat, "rename approved", |s| {
        s.text().starts_with("Approved: users-update ran")
    });
    assert_eq!(user_name(&w).as_deref(), Some("pwned"));
    w.click(&w.chat, "dm-owner", "owner", &eb[0].1);
    w.wait(&w.chat, "egress approved", |s| {
        s.text().starts_with("Approved: groups-config-set ran")
    });
    assert_eq!(egress(&w).as_deref(), Some("[\"evil.example\"]"));
    let by: String = w
        .central()
        .query_row(
            "SELECT decided_by FROM pending_approvals WHERE payload LIKE '%users-update%'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(by, "chat:owner");
    w.shutdown();
}

/// SPEC §9.1 fallback for questions: on a channel without buttons the
/// agent's question arrives as numbered text and the user answers "2".
#[test]
fn a_question_on_a_channel_without_buttons_is_answered_by_number() {
    let w = world(
        |c| c.provider.script = Some(colour_question_script(60)),
        |c| {
            c.conn
                .execute(
                    "INSERT INTO messaging_groups (id, channel_type, platform_id, name, is_group, unknown_sender_policy, created_at)
                     VALUES ('mg-p', 'plain', 'room', 'room', 0, 'strict', 'x')",
                    [],
                )
                .unwrap();
            c.conn
                .execute(
                    "INSERT INTO wirings (id, messaging_group_id, agent_group_id, engage_mode, engage_pattern, sender_scope, ignored_message_policy, session_mode, priority, created_at)
                     VALUES ('w-p', 'mg-p', 'main', 'pattern', '.', 'known', 'drop', 'shared', 0, 'x')",
                    [],
                )
                .unwrap();
        },
    );
    w.say(
        &w.plain,
        msg("plain", "room", "q1", "boss", "pick a colour", true, false),
    );
    let q = w.wait(&w.plain, "the numbered question", |s| {
        s.text().contains("Which colour?")
    });
    assert!(buttons(&q).is_empty());
    assert!(
        q.text().contains("\n1. Red") && q.text().contains("\n2. Blue"),
        "{}",
        q.text()
    );
    let out = w.say(
        &w.plain,
        msg("plain", "room", "q2", "boss", "2", true, false),
    );
    assert!(
        matches!(&out, AckOutcome::Stored { routed: 0, note: Some(n), handled: true } if n.contains("answer")),
        "{out:?}"
    );
    w.wait(&w.plain, "the tool's result in the reply", |s| {
        s.text()
            .contains("tool said: the user chose: Blue (value b)")
    });
    // A number when nothing is open is ordinary text for the agent.
    let out = w.say(
        &w.plain,
        msg("plain", "room", "q3", "boss", "7", true, false),
    );
    assert!(
        matches!(&out, AckOutcome::Stored { routed: 1, .. }),
        "{out:?}"
    );
    w.shutdown();
}
