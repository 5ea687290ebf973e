//! The Matrix channel against a real homeserver (Synapse, started by the
//! test on a loopback port, see common/matrix.rs): alice, the owner, talks
//! to pinch from her own client over the client-server API; the real
//! `pinch host` answers with the scripted provider. A reply in the room,
//! a thread, an edit as `m.replace`, a reaction, a file each way, the
//! notice about encryption; invites joined for a known user and rejected
//! for a stranger; a host killed with SIGKILL that loses and repeats
//! nothing; `pinch doctor` with a good and a refused token.

use crate::common::matrix::{Homeserver, User};
use crate::common::platform::{self, daemon, delivered, rows, Platform, Setup, SHARED_RULES, WAIT};
use crate::common::{wait_for, Daemon};
use serde_json::{json, Value};

const TOKEN_ENV: &str = "PINCH_TEST_MATRIX_TOKEN";

fn script() -> String {
    format!("{SHARED_RULES}\n[[rule]]\nreply = \"hi from the agent\"\n")
}

/// The homeserver, pinch's and alice's accounts, and a direct room alice
/// made inviting pinch (before pinch runs: its first sync finds the invite).
struct World {
    hs: Homeserver,
    pinch: User,
    alice: User,
    dm: String,
}

fn world() -> Option<World> {
    let hs = Homeserver::start()?;
    let pinch = hs.register("pinch");
    let alice = hs.register("alice");
    let dm = hs.create_room(&alice, &[&pinch], true);
    Some(World {
        hs,
        pinch,
        alice,
        dm,
    })
}

fn setup(w: &World, token: &str) -> Setup {
    platform::setup(Platform {
        channel: "matrix",
        owner: Some(w.alice.id.as_str()),
        chats: &[("mg-dm", w.dm.as_str(), false, "pattern")],
        script: &script(),
        config: format!(
            "[matrix]\nhomeserver = \"{}\"\nuser_id = \"{}\"\ntoken_env = \"{TOKEN_ENV}\"\nstall_s = 3\n",
            w.hs.url(),
            w.pinch.id
        ),
        env: &[(TOKEN_ENV, token)],
    })
}

/// `pinch host` running, joined to alice's direct room.
fn started() -> Option<(World, Setup, Daemon)> {
    let w = world()?;
    let s = setup(&w, &w.pinch.token.clone());
    let d = daemon(&s);
    wait_joined(&w, &w.dm);
    Some((w, s, d))
}

fn wait_joined(w: &World, room: &str) {
    wait_for("pinch to join the room", WAIT, || {
        w.hs.membership(&w.alice, room, &w.pinch.id).as_deref() == Some("join")
    });
}

/// pinch's reply (`m.in_reply_to`) to the event `id`.
fn reply_to(w: &World, room: &str, id: &str) -> Value {
    w.hs.wait_event(
        &w.alice,
        room,
        &w.pinch.id,
        &format!("the reply to {id}"),
        |e| e["content"]["m.relates_to"]["m.in_reply_to"]["event_id"] == id,
    )
}

fn replies_to(w: &World, room: &str, id: &str) -> usize {
    w.hs.events_from(&w.alice, room, &w.pinch.id, |e| {
        e["content"]["m.relates_to"]["m.in_reply_to"]["event_id"] == id
    })
    .len()
}

fn body(e: &Value) -> &str {
    e["content"]["body"].as_str().unwrap_or_default()
}

#[test]
fn matrix_replies_in_the_room_with_threads_edits_reactions_files_and_an_encryption_notice() {
    let Some((w, s, _d)) = started() else {
        return;
    };
    let (hs, alice, dm) = (&w.hs, &w.alice, &w.dm);

    // First in the session (the script edits message 3, the agent's
    // first): the draft and its edit, an `m.replace` of the sent event.
    hs.say(alice, dm, "draft please");
    let draft = hs.wait_event(alice, dm, &w.pinch.id, "the draft", |e| {
        body(e) == "draft v1"
    });
    let edit = hs.wait_event(alice, dm, &w.pinch.id, "the edit", |e| {
        e["content"]["m.relates_to"]["rel_type"] == "m.replace"
    });
    assert_eq!(
        edit["content"]["m.relates_to"]["event_id"], draft["event_id"],
        "{edit}"
    );
    assert_eq!(
        edit["content"]["m.new_content"]["body"], "draft v2",
        "{edit}"
    );

    let hello = hs.say(alice, dm, "hello there");
    let r = reply_to(&w, dm, &hello);
    assert_eq!(body(&r), "hi from the agent", "{r}");
    assert_eq!(rows(&s.data, &hello), 1);

    // A message in a thread is answered in that thread.
    let content = json!({"msgtype": "m.text", "body": "in a thread",
        "m.relates_to": {"rel_type": "m.thread", "event_id": hello, "is_falling_back": true, "m.in_reply_to": {"event_id": hello}}});
    let threaded = hs.send(alice, dm, "m.room.message", content);
    let r = reply_to(&w, dm, &threaded);
    assert_eq!(r["content"]["m.relates_to"]["rel_type"], "m.thread", "{r}");
    assert_eq!(
        r["content"]["m.relates_to"]["event_id"],
        hello.as_str(),
        "{r}"
    );

    // A reaction: an `m.annotation`.
    hs.say(alice, dm, "react to this");
    let re = hs.wait_event(alice, dm, &w.pinch.id, "the reaction", |e| {
        e["type"] == "m.reaction"
    });
    assert_eq!(
        re["content"]["m.relates_to"]["rel_type"], "m.annotation",
        "{re}"
    );
    assert_eq!(re["content"]["m.relates_to"]["key"], "👍", "{re}");

    // A file in: downloaded (authenticated media), read by the agent.
    let mxc = hs.upload(alice, "notes.txt", b"the secret word is tangerine");
    let file = hs.send(
        alice,
        dm,
        "m.room.message",
        json!({"msgtype": "m.file",
        "body": "read the attachment", "filename": "notes.txt", "url": mxc,
        "info": {"size": 28, "mimetype": "text/plain"}}),
    );
    let r = reply_to(&w, dm, &file);
    assert!(body(&r).contains("the secret word is tangerine"), "{r}");

    // A file out: uploaded, sent as `m.file`, readable by alice.
    hs.say(alice, dm, "send me the report");
    let f = hs.wait_event(alice, dm, &w.pinch.id, "the report file", |e| {
        e["content"]["msgtype"] == "m.file"
    });
    assert_eq!(f["content"]["filename"], "report.txt", "{f}");
    let got = hs.download(alice, f["content"]["url"].as_str().unwrap());
    assert_eq!(got, b"numbers: 1 2 3");

    // An encrypted message: one notice saying pinch cannot read it.
    for i in 0..2 {
        hs.send(alice, dm, "m.room.encrypted", json!({"algorithm": "m.megolm.v1.aes-sha2",
            "ciphertext": format!("AwgAEn{i}"), "sender_key": "k", "device_id": "D", "session_id": "s"}));
    }
    hs.wait_event(alice, dm, &w.pinch.id, "the encryption notice", |e| {
        e["content"]["msgtype"] == "m.notice"
            && body(e).contains("cannot read end-to-end encrypted")
    });
    hs.say(alice, dm, "after the secret");
    wait_for(
        "the message after the encrypted ones answered",
        WAIT,
        || {
            hs.events_from(alice, dm, &w.pinch.id, |e| body(e) == "hi from the agent")
                .len()
                >= 2
        },
    );
    let notices = hs.events_from(alice, dm, &w.pinch.id, |e| {
        body(e).contains("cannot read end-to-end")
    });
    assert_eq!(notices.len(), 1, "told once");
    s.log_lacks(&[&w.pinch.token]);
}

#[test]
fn matrix_joins_invites_from_known_users_and_rejects_strangers() {
    let Some((w, s, _d)) = started() else {
        return;
    };
    // The owner invites pinch into a new group room: joined.
    let bob = w.hs.register("bob");
    let group = w.hs.create_room(&w.alice, &[&w.pinch, &bob], false);
    wait_joined(&w, &group);

    // A stranger's invite is rejected (pinch's membership becomes leave).
    let eve = w.hs.register("eve");
    let spam = w.hs.create_room(&eve, &[&w.pinch], true);
    wait_for("the stranger's invite rejected", WAIT, || {
        w.hs.membership(&eve, &spam, &w.pinch.id).as_deref() == Some("leave")
    });
    wait_for("the reason logged", WAIT, || {
        s.log()
            .contains("rejected the invite: the inviter is not a user pinch knows")
    });

    // The group room, wired to the agent on mentions: bob's message that
    // does not mention pinch is left alone, the one whose `m.mentions`
    // names it is answered (a room of three is a group).
    w.hs.join(&bob, &group);
    wire(&s, "mg-group", &group, "mention");
    let plain = w.hs.say(&bob, &group, "just chatting");
    let asked = w.hs.send(
        &bob,
        &group,
        "m.room.message",
        json!({"msgtype": "m.text",
        "body": "pinch: hello", "m.mentions": {"user_ids": [w.pinch.id]}}),
    );
    let r = reply_to(&w, &group, &asked);
    assert_eq!(body(&r), "hi from the agent", "{r}");
    assert_eq!(replies_to(&w, &group, &plain), 0);
    assert_eq!(rows(&s.data, &plain), 0, "not taken without a mention");
}

/// Wires the room `room` to `main` (a group, `mode`), as the owner would.
fn wire(s: &Setup, id: &str, room: &str, mode: &str) {
    let c = pinch_host::db::central::Central::open(&s.data.join("pinch.db")).unwrap();
    let t = "2026-01-01T00:00:00.000Z";
    c.conn
        .execute(
            "INSERT INTO messaging_groups (id, channel_type, platform_id, name, is_group, unknown_sender_policy, created_at)
             VALUES (?1, 'matrix', ?2, 'group', 1, 'public', ?3)",
            [id, room, t],
        )
        .unwrap();
    c.conn
        .execute(
            "INSERT INTO wirings (id, messaging_group_id, agent_group_id, engage_mode, engage_pattern, sender_scope, ignored_message_policy, session_mode, priority, created_at)
             VALUES (?1, ?2, 'main', ?3, NULL, 'all', 'drop', 'shared', 0, ?4)",
            [&format!("w-{id}"), id, mode, t],
        )
        .unwrap();
}

#[test]
fn matrix_a_killed_host_loses_and_repeats_nothing() {
    let Some((w, s, mut d)) = started() else {
        return;
    };
    let (hs, alice, dm) = (&w.hs, &w.alice, &w.dm);
    let m1 = hs.say(alice, dm, "one");
    reply_to(&w, dm, &m1);
    wait_for("the first reply recorded as delivered", WAIT, || {
        delivered(&s.data) >= 1
    });
    let state = s.data.join("channels/matrix/state.json");
    // The token saved before m2 was sent: a crash that loses the save after
    // m2's commit leaves it so.
    let before_m2 = std::fs::read(&state).unwrap();
    let m2 = hs.say(alice, dm, "two");
    reply_to(&w, dm, &m2);
    wait_for("both replies recorded as delivered", WAIT, || {
        delivered(&s.data) >= 2
    });
    d.0.kill().unwrap();
    d.0.wait().unwrap();
    std::fs::write(&state, &before_m2).unwrap();
    let m3 = hs.say(alice, dm, "three");
    let _d2 = daemon(&s);
    reply_to(&w, dm, &m3);
    wait_for("three replies recorded as delivered", WAIT, || {
        delivered(&s.data) >= 3
    });
    wait_for("the token past m3", WAIT, || {
        std::fs::read(&state).unwrap_or_default() != before_m2
    });
    for id in [&m1, &m2, &m3] {
        assert_eq!(rows(&s.data, id), 1, "{id} stored once");
        assert_eq!(replies_to(&w, dm, id), 1, "{id} answered once");
    }
    // The restart resumed from the saved token: only the first start
    // skipped the rooms' history.
    assert_eq!(s.log().matches("first sync").count(), 1, "{}", s.log());
    let mode = std::fs::metadata(&state).unwrap().permissions();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
        0o600
    );
}

#[test]
fn matrix_doctor_names_the_account_and_a_refused_token() {
    let Some(w) = world() else {
        return;
    };
    let s = setup(&w, &w.pinch.token);
    let lines = platform::doctor_lines(&s, "matrix", TOKEN_ENV, &w.pinch.token);
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("ok") && l.contains("logged in as @pinch:localhost")),
        "{lines:?}"
    );
    let lines = platform::doctor_lines(&s, "matrix", TOKEN_ENV, "syt_not_a_real_token");
    assert!(
        lines.iter().any(|l| l.starts_with("FAIL")
            && l.contains("M_UNKNOWN_TOKEN")
            && l.contains("refused the access token")),
        "{lines:?}"
    );
    assert!(
        lines.iter().all(|l| !l.contains("syt_not_a_real_token")),
        "{lines:?}"
    );
}

/// Matrix's world of the shared channel suite: alice's direct room with
/// pinch on the real Synapse (a message sent while pinch is down waits in
/// the room; pinch's saved sync token picks it up).
struct MxWorld {
    w: World,
    s: Setup,
}

fn mx_world() -> Option<MxWorld> {
    let w = world()?;
    let s = setup(&w, &w.pinch.token.clone());
    Some(MxWorld { w, s })
}

impl crate::common::suite::World for MxWorld {
    fn setup(&self) -> &Setup {
        &self.s
    }

    fn ready(&self) {
        wait_joined(&self.w, &self.w.dm);
    }

    fn say(&self, text: &str, file: Option<(&str, &[u8])>) -> String {
        let (hs, alice, dm) = (&self.w.hs, &self.w.alice, &self.w.dm);
        match file {
            None => hs.say(alice, dm, text),
            Some((name, bytes)) => {
                let mxc = hs.upload(alice, name, bytes);
                // MSC2530: with a `filename`, the body is the caption.
                let content = json!({"msgtype": "m.file", "body": text, "filename": name,
                    "url": mxc, "info": {"mimetype": "text/plain", "size": bytes.len()}});
                hs.send(alice, dm, "m.room.message", content)
            }
        }
    }

    fn replies(&self) -> Vec<crate::common::suite::Reply> {
        let w = &self.w;
        w.hs.events_from(&w.alice, &w.dm, &w.pinch.id, |e| {
            e["type"] == "m.room.message" && e["content"]["m.relates_to"]["rel_type"] != "m.replace"
        })
        .into_iter()
        .map(|e| {
            let c = &e["content"];
            let files = match (c["msgtype"].as_str(), c["url"].as_str()) {
                (Some("m.file" | "m.image" | "m.audio" | "m.video"), Some(mxc)) => {
                    let name = c["filename"].as_str().or(c["body"].as_str());
                    vec![(
                        name.unwrap_or_default().to_owned(),
                        w.hs.download(&w.alice, mxc),
                    )]
                }
                _ => Vec::new(),
            };
            crate::common::suite::Reply {
                text: body(&e).to_owned(),
                files,
            }
        })
        .collect()
    }
}

crate::channel_suite!(mx_world);
