//! The bridge protocol: newline-delimited JSON over the bridge's stdio
//! (decision 0055). pinch writes one [`Start`] line, then commands; the
//! bridge writes events. Everything the bridge says is read as hostile
//! (it relays the network): lines are bounded, ids and JIDs are checked
//! before they reach a path or an address, media names are the bridge's
//! own plain file names inside the media folder.

use serde::{Deserialize, Serialize};

use crate::{InboundAttachment, InboundEvent};

/// The longest line either side writes (a message's text is at most
/// 64 KiB on WhatsApp; media travel as files, never inline).
pub const MAX_LINE: usize = 256 << 10;

/// The first line pinch writes: where the bridge keeps its state, and how.
#[derive(Clone, Debug, Serialize)]
pub struct Start {
    pub op: &'static str,
    /// The session keys (Baileys' multi-file auth state), 0700.
    pub session: String,
    /// Inbound media files and outbound files handed over, 0700.
    pub media: String,
    /// Inbound messages not yet acked by pinch, replayed on start.
    pub spool: String,
    /// The largest media file downloaded (bytes).
    pub max_bytes: u64,
    /// How often the bridge says it is alive (ms): the stall watchdog's
    /// sign of life.
    pub alive_ms: u64,
    /// Pairing: print QR codes until linked, then exit.
    pub link: bool,
    /// Mark a message read (blue ticks) once pinch has stored it.
    pub read_receipts: bool,
}

/// A command from pinch. `id` pairs it with its [`Event::Result`].
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Command {
    Send {
        id: String,
        to: String,
        /// pinch's id for this message (the same on a retry, so the
        /// recipient sees one message).
        msg_id: String,
        text: String,
        /// The id of the message this answers (quoted if the bridge still
        /// holds it).
        #[serde(skip_serializing_if = "Option::is_none")]
        quote: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        file: Option<OutMedia>,
    },
    React {
        id: String,
        to: String,
        msg: String,
        emoji: String,
    },
    Typing {
        id: String,
        to: String,
    },
    /// pinch stored this inbound message: drop it from the spool, send the
    /// read receipt. No answer.
    Ack {
        chat: String,
        msg: String,
    },
}

/// A file handed to the bridge: `file` is a plain name in the media folder.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct OutMedia {
    pub file: String,
    pub name: String,
    pub mime: String,
}

/// An event from the bridge.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(tag = "ev", rename_all = "snake_case")]
pub enum Event {
    /// Pairing: the text to show as a QR code (it changes every ~20 s).
    Qr {
        code: String,
    },
    /// Logged in and connected as `me`.
    Connected {
        #[serde(default)]
        me: String,
    },
    /// Still there (the stall watchdog's tick).
    Alive,
    Message(Box<WireMessage>),
    /// A user's reaction (dropped by pinch, logged).
    Reaction {
        chat: String,
        #[serde(default)]
        msg: String,
        #[serde(default)]
        emoji: String,
    },
    /// The answer to a command.
    Result {
        id: String,
        ok: bool,
        #[serde(default)]
        msg_id: Option<String>,
        #[serde(default)]
        error: Option<String>,
        /// The failure will not go away by trying again.
        #[serde(default)]
        permanent: bool,
    },
    /// WhatsApp removed this linked device: the session is void.
    LoggedOut {
        #[serde(default)]
        reason: String,
    },
    /// The connection closed; the bridge exits and pinch starts it again.
    Closed {
        #[serde(default)]
        reason: String,
    },
    /// Something the bridge could not do (logged).
    Error {
        message: String,
    },
}

/// An inbound message as the bridge relays it.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
pub struct WireMessage {
    pub chat: String,
    pub id: String,
    /// The author (the participant in a group, the chat in a DM).
    pub sender: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub text: String,
    /// pinch's account is @-mentioned, or the message quotes one of ours.
    #[serde(default)]
    pub mentioned: bool,
    #[serde(default)]
    pub quoted: Option<String>,
    #[serde(default)]
    pub media: Option<InMedia>,
}

/// A downloaded media file: `file` in the media folder (`None` when it
/// was larger than the limit and not downloaded).
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
pub struct InMedia {
    #[serde(default)]
    pub file: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub mime: Option<String>,
    #[serde(default)]
    pub size: u64,
}

/// One line from the bridge: `None` for a line that is not an event pinch
/// knows (logged by the caller, skipped).
pub fn parse(line: &[u8]) -> Result<Event, String> {
    crate::platform::json_lossy::<Event>("whatsapp-web bridge", line)
        .map_err(|e| format!("not a bridge event ({e})"))
}

/// A WhatsApp JID pinch will address: `user@server` with a known server,
/// short, of plain characters (never a path, never a second line).
pub fn valid_jid(j: &str) -> bool {
    let Some((user, server)) = j.split_once('@') else {
        return false;
    };
    j.len() <= 128
        && !user.is_empty()
        && matches!(
            server,
            "s.whatsapp.net" | "g.us" | "lid" | "c.us" | "broadcast" | "newsletter"
        )
        && user
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b':' | b'_'))
}

/// A message id as WhatsApp makes them (hex and letters, bounded).
pub fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// A file name the bridge gave a file in the media folder: plain, no
/// separators, no leading dot.
pub fn valid_file(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 100
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// A group chat (its JID's server).
pub fn is_group(jid: &str) -> bool {
    jid.ends_with("@g.us")
}

/// The inbound event for a message; `Err` says why it is dropped. The
/// attachment's bytes are read by the caller.
pub fn inbound(m: &WireMessage, channel_type: &str) -> Result<InboundEvent, String> {
    if !valid_jid(&m.chat) || !valid_jid(&m.sender) {
        return Err(format!("odd chat or sender ({:?}, {:?})", m.chat, m.sender));
    }
    if !valid_id(&m.id) {
        return Err(format!("odd message id {:?}", m.id));
    }
    let group = is_group(&m.chat);
    let attachments = m
        .media
        .iter()
        .map(|md| InboundAttachment {
            name: md
                .name
                .as_deref()
                .map(plain_name)
                .filter(|n| !n.is_empty())
                .unwrap_or_else(|| "file".into()),
            mime: md.mime.clone().filter(|m| m.len() <= 100),
            size: md.size,
            data: None,
        })
        .collect();
    Ok(InboundEvent {
        channel_type: channel_type.into(),
        platform_id: m.chat.clone(),
        thread_id: None,
        message_id: m.id.clone(),
        sender_id: m.sender.clone(),
        sender_name: m
            .name
            .as_deref()
            .map(|n| n.chars().take(64).collect::<String>())
            .filter(|n| !n.trim().is_empty()),
        text: m.text.clone(),
        is_mention: !group || m.mentioned,
        is_group: group,
        attachments,
        ..Default::default()
    })
}

/// The last path component of a name a user chose, control characters
/// dropped, bounded (the host checks it again before saving).
fn plain_name(n: &str) -> String {
    let last = n.rsplit(['/', '\\']).next().unwrap_or("");
    last.chars()
        .filter(|c| !c.is_control())
        .take(120)
        .collect::<String>()
        .trim_start_matches('.')
        .to_owned()
}

/// The WhatsApp message id for part `part` of pinch's outbound row `row`:
/// the same on every retry (WhatsApp ids are chosen by the sender, and a
/// recipient shows one message per id), in the shape WhatsApp Web uses
/// (`3EB0` and hex).
pub fn message_id(row: &str, part: usize) -> String {
    let d = ring::digest::digest(
        &ring::digest::SHA256,
        format!("pinch:{row}:{part}").as_bytes(),
    );
    format!("3EB0{}", crate::http::hex(&d.as_ref()[..10]).to_uppercase())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn events_parse_and_unknown_ones_are_errors() {
        let e = parse(br#"{"ev":"qr","code":"2@abc"}"#).unwrap();
        assert_eq!(
            e,
            Event::Qr {
                code: "2@abc".into()
            }
        );
        let e = parse(br#"{"ev":"message","chat":"123@g.us","id":"ABC","sender":"49@s.whatsapp.net","text":"hi","mentioned":true,"extra":1}"#).unwrap();
        let Event::Message(m) = e else { panic!() };
        let ev = inbound(&m, "whatsapp_web").unwrap();
        assert!(ev.is_group && ev.is_mention);
        assert_eq!(ev.sender_id, "49@s.whatsapp.net");
        assert!(parse(br#"{"ev":"launch_missiles"}"#).is_err());
        assert!(parse(b"not json").is_err());
        let e =
            parse(br#"{"ev":"result","id":"1","ok":false,"error":"no","permanent":true}"#).unwrap();
        assert!(matches!(
            e,
            Event::Result {
                permanent: true,
                ..
            }
        ));
    }

    #[test]
    fn a_dm_is_a_mention_and_a_group_needs_one() {
        let mut m = WireMessage {
            chat: "4915@s.whatsapp.net".into(),
            id: "3EB0AA".into(),
            sender: "4915@s.whatsapp.net".into(),
            ..Default::default()
        };
        assert!(inbound(&m, "w").unwrap().is_mention);
        m.chat = "1203@g.us".into();
        assert!(!inbound(&m, "w").unwrap().is_mention);
    }

    #[test]
    fn hostile_ids_and_names_never_become_paths_or_addresses() {
        for j in [
            "../x@s.whatsapp.net",
            "a@evil.com",
            "@g.us",
            "a\n@g.us",
            "a/b@lid",
        ] {
            assert!(!valid_jid(j), "{j}");
        }
        assert!(valid_jid("12036302@g.us") && valid_jid("49151:3@s.whatsapp.net"));
        for f in ["../x", ".hidden", "a/b", "", "a\0b"] {
            assert!(!valid_file(f), "{f:?}");
        }
        assert!(valid_file("in-0a1b2c.bin"));
        let m = WireMessage {
            chat: "1@s.whatsapp.net".into(),
            id: "X1".into(),
            sender: "1@s.whatsapp.net".into(),
            media: Some(InMedia {
                name: Some("../../etc/..passwd".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(inbound(&m, "w").unwrap().attachments[0].name, "passwd");
    }

    #[test]
    fn outbound_ids_are_stable_per_row_and_part() {
        assert_eq!(message_id("r1", 0), message_id("r1", 0));
        assert_ne!(message_id("r1", 0), message_id("r1", 1));
        assert_ne!(message_id("r1", 0), message_id("r2", 0));
        assert!(valid_id(&message_id("r1", 0)));
    }

    proptest! {
        #[test]
        fn no_line_panics_the_parser(b in proptest::collection::vec(any::<u8>(), 0..300)) {
            if let Ok(Event::Message(m)) = parse(&b) {
                let _ = inbound(&m, "w");
            }
        }

        #[test]
        fn an_accepted_jid_has_no_path_or_line_characters(s in "\\PC{0,40}") {
            if valid_jid(&s) {
                prop_assert!(!s.contains('/') && !s.contains('\n') && !s.contains(".."));
            }
        }
    }
}
