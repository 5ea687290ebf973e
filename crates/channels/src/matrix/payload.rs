//! The parts of a `/sync` answer pinch reads, as plain data: pure, so the
//! parsing of what a homeserver (and every other party in a room) sends is
//! tested without one. Each event is read on its own from JSON: one event
//! of an odd shape is skipped, never the batch.

use serde_json::Value;

/// Events read per room and batch (the filter asks for this many; a
/// homeserver that sends more has the rest ignored).
pub const MAX_EVENTS: usize = 100;
/// The longest text kept from one event (a homeserver caps events at
/// 64 KiB; this bounds what a hostile one could send).
pub const MAX_BODY: usize = 65_536;

/// One `/sync` answer.
#[derive(Debug, Default, PartialEq)]
pub struct Batch {
    pub next_batch: String,
    pub invites: Vec<Invite>,
    pub rooms: Vec<Room>,
}

/// An invite to a room.
#[derive(Debug, Default, PartialEq)]
pub struct Invite {
    pub room_id: String,
    /// Who sent it (the sender of pinch's `invite` membership event).
    pub inviter: Option<String>,
}

/// A joined room's part of a batch.
#[derive(Debug, Default, PartialEq)]
pub struct Room {
    pub room_id: String,
    /// `m.joined_member_count` when the batch says it.
    pub joined: Option<u64>,
    /// The homeserver left out older events (`timeline.limited`).
    pub limited: bool,
    pub events: Vec<Item>,
}

/// A room event as pinch sees it.
#[derive(Debug, PartialEq)]
pub enum Item {
    Message(Box<Msg>),
    /// An end-to-end encrypted event pinch cannot read.
    Encrypted {
        event_id: String,
        sender: String,
    },
    /// pinch's own membership became `join` here (what came before it in
    /// the timeline is history from before pinch was in the room).
    OwnJoin,
    /// Anything else (reactions, state, other members, redactions).
    Other,
}

/// A message from someone else.
#[derive(Debug, Default, PartialEq)]
pub struct Msg {
    pub event_id: String,
    pub sender: String,
    pub text: String,
    /// The thread's root event (`m.thread`).
    pub thread_id: Option<String>,
    /// The message this replaces (`m.replace`): a correction.
    pub edit_of: Option<String>,
    pub file: Option<Media>,
    /// pinch's user id is in its `m.mentions` (or, from clients older than
    /// intentional mentions, in a link of its formatted body).
    pub mentions_me: bool,
}

/// A file on the homeserver (`mxc://server/media_id`).
#[derive(Debug, Default, PartialEq, Eq, Clone)]
pub struct Media {
    pub server: String,
    pub media_id: String,
    pub name: String,
    pub mime: Option<String>,
    pub size: Option<u64>,
}

/// Reads a `/sync` answer; `me` is pinch's user id. `None` without a
/// `next_batch` (nothing can move on from such an answer).
pub fn batch(v: &Value, me: &str) -> Option<Batch> {
    let next_batch = v["next_batch"].as_str()?.to_owned();
    let mut out = Batch {
        next_batch,
        ..Default::default()
    };
    if let Some(invites) = v["rooms"]["invite"].as_object() {
        for (room_id, r) in invites {
            let inviter = r["invite_state"]["events"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|e| {
                    e["type"] == "m.room.member"
                        && e["state_key"] == me
                        && e["content"]["membership"] == "invite"
                })
                .and_then(|e| e["sender"].as_str())
                .map(str::to_owned);
            out.invites.push(Invite {
                room_id: room_id.clone(),
                inviter,
            });
        }
    }
    if let Some(joined) = v["rooms"]["join"].as_object() {
        for (room_id, r) in joined {
            let events = r["timeline"]["events"]
                .as_array()
                .into_iter()
                .flatten()
                .take(MAX_EVENTS)
                .map(|e| item(e, me))
                .collect();
            out.rooms.push(Room {
                room_id: room_id.clone(),
                joined: r["summary"]["m.joined_member_count"].as_u64(),
                limited: r["timeline"]["limited"] == true,
                events,
            });
        }
    }
    Some(out)
}

/// One timeline event.
pub fn item(e: &Value, me: &str) -> Item {
    let (Some(kind), Some(sender), Some(event_id)) = (
        e["type"].as_str(),
        e["sender"].as_str(),
        e["event_id"].as_str(),
    ) else {
        return Item::Other;
    };
    match kind {
        "m.room.member" => {
            let joined = e["state_key"] == me
                && e["content"]["membership"] == "join"
                && e["unsigned"]["prev_content"]["membership"] != "join";
            if joined {
                Item::OwnJoin
            } else {
                Item::Other
            }
        }
        "m.room.encrypted" if sender != me => Item::Encrypted {
            event_id: event_id.to_owned(),
            sender: sender.to_owned(),
        },
        "m.room.message" if sender != me => match message(e, me) {
            Some(m) => Item::Message(Box::new(m)),
            None => Item::Other,
        },
        _ => Item::Other,
    }
}

fn message(e: &Value, me: &str) -> Option<Msg> {
    let c = &e["content"];
    let rel = &c["m.relates_to"];
    let (content, edit_of) = if rel["rel_type"] == "m.replace" {
        // The new text is in `m.new_content` (`body` is a "* …" fallback).
        let target = rel["event_id"].as_str()?.to_owned();
        (&c["m.new_content"], Some(target))
    } else {
        (c, None)
    };
    let msgtype = content["msgtype"].as_str()?;
    // Other bots talk in notices; answering them makes loops.
    if msgtype == "m.notice" {
        return None;
    }
    let body = bounded(content["body"].as_str().unwrap_or_default());
    let thread_id = (rel["rel_type"] == "m.thread")
        .then(|| rel["event_id"].as_str().map(str::to_owned))
        .flatten();
    let replying = rel["m.in_reply_to"]["event_id"].is_string();
    let mut text = if replying && edit_of.is_none() {
        strip_reply_fallback(&body)
    } else {
        body.clone()
    };
    let mut file = None;
    if matches!(msgtype, "m.file" | "m.image" | "m.audio" | "m.video") {
        let (server, media_id) = mxc(content["url"].as_str().unwrap_or_default())?;
        // MSC2530: with a `filename`, a `body` that differs is a caption.
        let name = content["filename"].as_str().map(bounded);
        let caption = match &name {
            Some(n) if *n != body => text.clone(),
            _ => String::new(),
        };
        file = Some(Media {
            server,
            media_id,
            name: plain_name(name.as_deref().unwrap_or(&body)),
            mime: content["info"]["mimetype"].as_str().map(bounded),
            size: content["info"]["size"].as_u64(),
        });
        text = caption;
    }
    let mentions_me = c["m.mentions"]["user_ids"]
        .as_array()
        .is_some_and(|ids| ids.iter().any(|i| i == me))
        || c["formatted_body"]
            .as_str()
            .is_some_and(|f| f.contains(&format!("https://matrix.to/#/{me}")));
    Some(Msg {
        event_id: e["event_id"].as_str()?.to_owned(),
        sender: e["sender"].as_str()?.to_owned(),
        text,
        thread_id,
        edit_of,
        file,
        mentions_me,
    })
}

/// At most [`MAX_BODY`] bytes of `s`, cut at a character boundary.
fn bounded(s: &str) -> String {
    let mut end = s.len().min(MAX_BODY);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

/// A reply's body without the quoted fallback older clients put first
/// (`> <@user:server> their text` lines, then an empty line).
pub fn strip_reply_fallback(body: &str) -> String {
    if !body.starts_with("> ") {
        return body.to_owned();
    }
    let mut lines = body.lines();
    for l in lines.by_ref() {
        if l.is_empty() {
            return lines.collect::<Vec<_>>().join("\n");
        }
        if !l.starts_with('>') {
            return body.to_owned();
        }
    }
    String::new()
}

/// `mxc://<server>/<media id>`, both parts checked: a server name (host
/// characters, a port) and a media id (`A-Z a-z 0-9 _ -`), so neither can
/// turn into another path when put into a URL.
pub fn mxc(url: &str) -> Option<(String, String)> {
    let rest = url.strip_prefix("mxc://")?;
    let (server, id) = rest.split_once('/')?;
    let server_ok = !server.is_empty()
        && server.len() <= 255
        && server
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
        && server.bytes().any(|b| b.is_ascii_alphanumeric());
    let id_ok = !id.is_empty()
        && id.len() <= 255
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    (server_ok && id_ok).then(|| (server.to_owned(), id.to_owned()))
}

/// A file name to show: its last path part, without control characters,
/// at most 200 characters, `file` when nothing is left. The host checks
/// names again before it saves anything.
pub fn plain_name(name: &str) -> String {
    let last = name.rsplit(['/', '\\']).next().unwrap_or_default();
    let clean: String = last.chars().filter(|c| !c.is_control()).take(200).collect();
    let clean = clean.trim().trim_start_matches('.').to_owned();
    if clean.is_empty() {
        "file".into()
    } else {
        clean
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const ME: &str = "@pinch:example.org";

    fn msg(content: Value) -> Value {
        json!({"type": "m.room.message", "sender": "@ann:example.org", "event_id": "$e1", "content": content})
    }

    #[test]
    fn a_batch_gives_invites_with_their_inviter_and_rooms_in_order() {
        let v = json!({"next_batch": "s9", "rooms": {
            "invite": {"!r2:x": {"invite_state": {"events": [
                {"type": "m.room.name", "state_key": "", "sender": "@ann:x", "content": {"name": "n"}},
                {"type": "m.room.member", "state_key": ME, "sender": "@ann:x", "content": {"membership": "invite"}}
            ]}}},
            "join": {"!r1:x": {"summary": {"m.joined_member_count": 2}, "timeline": {"events": [
                msg(json!({"msgtype": "m.text", "body": "hi"})),
                {"type": "m.room.message", "sender": ME, "event_id": "$mine", "content": {"msgtype": "m.text", "body": "me"}},
                {"type": "m.room.encrypted", "sender": "@ann:x", "event_id": "$enc", "content": {}},
                {"type": "m.reaction", "sender": "@ann:x", "event_id": "$r", "content": {}},
                "not an event"
            ]}}}
        }});
        let b = batch(&v, ME).unwrap();
        assert_eq!(b.next_batch, "s9");
        assert_eq!(
            b.invites,
            vec![Invite {
                room_id: "!r2:x".into(),
                inviter: Some("@ann:x".into())
            }]
        );
        let r = &b.rooms[0];
        assert_eq!((r.room_id.as_str(), r.joined), ("!r1:x", Some(2)));
        assert!(matches!(&r.events[0], Item::Message(m) if m.text == "hi" && m.event_id == "$e1"));
        assert_eq!(r.events[1], Item::Other, "pinch's own message is skipped");
        assert!(matches!(&r.events[2], Item::Encrypted { event_id, .. } if event_id == "$enc"));
        assert_eq!(r.events[3], Item::Other);
        assert_eq!(r.events[4], Item::Other);
        assert!(batch(&json!({"rooms": {}}), ME).is_none());
    }

    #[test]
    fn threads_edits_replies_mentions_and_notices() {
        let m = |c: Value| match item(&msg(c), ME) {
            Item::Message(m) => Some(*m),
            _ => None,
        };
        let t = m(json!({"msgtype": "m.text", "body": "in thread",
            "m.relates_to": {"rel_type": "m.thread", "event_id": "$root", "is_falling_back": true, "m.in_reply_to": {"event_id": "$root"}}})).unwrap();
        assert_eq!(t.thread_id.as_deref(), Some("$root"));
        assert_eq!(t.text, "in thread");
        let e = m(json!({"msgtype": "m.text", "body": "* fixed",
            "m.new_content": {"msgtype": "m.text", "body": "fixed"},
            "m.relates_to": {"rel_type": "m.replace", "event_id": "$old"}}))
        .unwrap();
        assert_eq!(
            (e.text.as_str(), e.edit_of.as_deref()),
            ("fixed", Some("$old"))
        );
        let r = m(
            json!({"msgtype": "m.text", "body": "> <@p:x> earlier\n> more\n\nmy answer",
            "m.relates_to": {"m.in_reply_to": {"event_id": "$p"}}}),
        )
        .unwrap();
        assert_eq!(r.text, "my answer");
        let men = m(json!({"msgtype": "m.text", "body": "hey", "m.mentions": {"user_ids": [ME]}}))
            .unwrap();
        assert!(men.mentions_me);
        let old = m(
            json!({"msgtype": "m.text", "body": "pinch: hey", "format": "org.matrix.custom.html",
            "formatted_body": format!("<a href=\"https://matrix.to/#/{ME}\">pinch</a>: hey")}),
        )
        .unwrap();
        assert!(old.mentions_me);
        assert!(
            !m(json!({"msgtype": "m.text", "body": "@pinch:example.org?"}))
                .unwrap()
                .mentions_me,
            "not a text match"
        );
        assert!(m(json!({"msgtype": "m.notice", "body": "a bot"})).is_none());
        assert!(m(json!({"body": "no msgtype"})).is_none());
        let own_join = json!({"type": "m.room.member", "state_key": ME, "sender": ME, "event_id": "$j", "content": {"membership": "join"}});
        assert_eq!(item(&own_join, ME), Item::OwnJoin);
        let rename = json!({"type": "m.room.member", "state_key": ME, "sender": ME, "event_id": "$j", "content": {"membership": "join"}, "unsigned": {"prev_content": {"membership": "join"}}});
        assert_eq!(
            item(&rename, ME),
            Item::Other,
            "a profile change is not a join"
        );
    }

    #[test]
    fn files_keep_a_plain_name_and_a_caption() {
        let f = |c: Value| match item(&msg(c), ME) {
            Item::Message(m) => Some(*m),
            _ => None,
        };
        let a = f(
            json!({"msgtype": "m.file", "body": "read this", "filename": "../../etc/passwd",
            "url": "mxc://example.org/AbC_d-9", "info": {"size": 12, "mimetype": "text/plain"}}),
        )
        .unwrap();
        let file = a.file.unwrap();
        assert_eq!(
            (
                file.server.as_str(),
                file.media_id.as_str(),
                file.name.as_str()
            ),
            ("example.org", "AbC_d-9", "passwd")
        );
        assert_eq!(
            (file.size, file.mime.as_deref()),
            (Some(12), Some("text/plain"))
        );
        assert_eq!(a.text, "read this");
        let b =
            f(json!({"msgtype": "m.image", "body": "cat.png", "url": "mxc://h:8448/x"})).unwrap();
        assert_eq!(
            (b.text.as_str(), b.file.unwrap().name.as_str()),
            ("", "cat.png")
        );
        assert!(f(json!({"msgtype": "m.file", "body": "x", "url": "mxc://h/../../x"})).is_none());
        assert!(
            f(json!({"msgtype": "m.file", "body": "x", "file": {"url": "mxc://h/enc"}})).is_none(),
            "an encrypted file has no url"
        );
    }

    #[test]
    fn mxc_and_names_refuse_what_could_become_a_path() {
        assert_eq!(mxc("mxc://a.b/c"), Some(("a.b".into(), "c".into())));
        for bad in [
            "mxc://a/b/c",
            "mxc://a/",
            "mxc:///b",
            "http://a/b",
            "mxc://a?x/b",
            "mxc://a/b%2F",
            "mxc://../b",
            "mxc://./b",
        ] {
            assert_eq!(mxc(bad), None, "{bad}");
        }
        assert_eq!(plain_name("a\\b\\c.txt"), "c.txt");
        assert_eq!(plain_name(".."), "file");
        assert_eq!(plain_name("x\u{0}y"), "xy");
        assert_eq!(plain_name(&"n".repeat(500)).len(), 200);
    }

    proptest::proptest! {
        #[test]
        fn any_event_reads_without_panicking(body in ".{0,200}", kind in "[a-z.]{0,20}", rel in "[a-z.]{0,12}") {
            let e = json!({"type": kind, "sender": "@a:b", "event_id": "$x", "content": {
                "msgtype": "m.text", "body": body.clone(), "m.relates_to": {"rel_type": rel, "event_id": "$y"}}});
            let _ = item(&e, ME);
            let _ = strip_reply_fallback(&body);
            let _ = mxc(&body);
            proptest::prop_assert!(!plain_name(&body).contains('/'));
        }
    }
}
