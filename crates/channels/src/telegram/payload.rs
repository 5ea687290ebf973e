//! The Bot API's payloads pinch reads, as types: only the fields it uses,
//! unknown fields ignored (Telegram adds them), odd optional parts read as
//! absent ([`lenient`]). Turning a message into an [`InboundEvent`] is
//! pure here (the files are downloaded by the caller), so the recorded
//! payloads under `tests/fixtures/telegram/` test it directly.

use serde::Deserialize;

use crate::platform::lenient;
use crate::InboundEvent;

use super::CHANNEL_TYPE;

/// Every Bot API answer: `{"ok": …, "result": …, "description": …}`.
#[derive(Debug, Default, Deserialize)]
pub(super) struct Answer<T> {
    #[serde(default)]
    pub ok: bool,
    pub result: Option<T>,
    pub description: Option<String>,
}

/// `getMe`.
#[derive(Debug, Default, Deserialize)]
pub(super) struct Me {
    #[serde(default)]
    pub id: i64,
    #[serde(default)]
    pub username: String,
}

/// The part of a sent message pinch keeps (`sendMessage`, `sendDocument`).
#[derive(Debug, Deserialize)]
pub(super) struct Sent {
    pub message_id: Option<i64>,
}

/// `getFile`.
#[derive(Debug, Deserialize)]
pub(super) struct FileInfo {
    pub file_path: Option<String>,
}

/// One of `getUpdates`' results (or a webhook POST's body). Only
/// `message` and `callback_query` are asked for; anything else (an
/// `edited_message`, …) has neither and is skipped.
#[derive(Debug, Default, Deserialize)]
pub(super) struct Update {
    #[serde(default)]
    pub update_id: i64,
    #[serde(default, deserialize_with = "lenient")]
    pub message: Option<Message>,
    #[serde(default, deserialize_with = "lenient")]
    pub callback_query: Option<CallbackQuery>,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct User {
    #[serde(default)]
    pub id: i64,
    #[serde(default)]
    pub is_bot: bool,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub username: Option<String>,
}

#[derive(Debug, Deserialize)]
pub(super) struct Chat {
    pub id: i64,
    #[serde(rename = "type")]
    pub kind: Option<String>,
}

#[derive(Debug, Deserialize)]
pub(super) struct Entity {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, deserialize_with = "lenient")]
    pub offset: Option<u64>,
    #[serde(default, deserialize_with = "lenient")]
    pub length: Option<u64>,
    #[serde(default, deserialize_with = "lenient")]
    pub user: Option<User>,
}

/// A file of any kind (`document`, `audio`, one size of a `photo`, …).
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
pub(super) struct File {
    #[serde(default)]
    pub file_id: String,
    pub file_name: Option<String>,
    pub file_size: Option<u64>,
    pub mime_type: Option<String>,
}

/// The message a message answers: only who wrote it matters.
#[derive(Debug, Deserialize)]
pub(super) struct Replied {
    #[serde(default, deserialize_with = "lenient")]
    pub from: Option<User>,
}

#[derive(Debug, Deserialize)]
pub(super) struct Message {
    pub message_id: i64,
    pub chat: Chat,
    #[serde(default, deserialize_with = "lenient")]
    pub from: Option<User>,
    pub text: Option<String>,
    pub caption: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    pub entities: Option<Vec<Entity>>,
    #[serde(default, deserialize_with = "lenient")]
    pub caption_entities: Option<Vec<Entity>>,
    #[serde(default, deserialize_with = "lenient")]
    pub reply_to_message: Option<Replied>,
    #[serde(default)]
    pub is_topic_message: bool,
    pub message_thread_id: Option<i64>,
    #[serde(default, deserialize_with = "lenient")]
    pub document: Option<File>,
    #[serde(default, deserialize_with = "lenient")]
    pub audio: Option<File>,
    #[serde(default, deserialize_with = "lenient")]
    pub video: Option<File>,
    #[serde(default, deserialize_with = "lenient")]
    pub voice: Option<File>,
    #[serde(default, deserialize_with = "lenient")]
    pub animation: Option<File>,
    #[serde(default, deserialize_with = "lenient")]
    pub photo: Option<Vec<File>>,
}

/// The message a button sat under (a callback query's `message`).
#[derive(Debug, Deserialize)]
pub(super) struct ButtonMessage {
    pub chat: Chat,
    #[serde(default)]
    pub is_topic_message: bool,
    pub message_thread_id: Option<i64>,
}

#[derive(Debug, Deserialize)]
pub(super) struct CallbackQuery {
    pub id: Option<String>,
    pub data: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    pub from: Option<User>,
    #[serde(default, deserialize_with = "lenient")]
    pub message: Option<ButtonMessage>,
}

/// A file to fetch through `getFile`, with the name to give it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct FileRef {
    pub file: File,
    pub name: String,
}

/// A forum topic's id, when the message is in one.
pub(super) fn topic(is_topic_message: bool, thread: Option<i64>) -> Option<String> {
    is_topic_message
        .then_some(thread)
        .flatten()
        .map(|t| t.to_string())
}

impl CallbackQuery {
    /// The click's conversation and topic, when it has one.
    pub fn place(&self) -> Option<(i64, Option<String>)> {
        let m = self.message.as_ref()?;
        Some((m.chat.id, topic(m.is_topic_message, m.message_thread_id)))
    }
}

impl Message {
    /// The event for the host (without the files' bytes) and the files to
    /// download; `None` for what pinch skips: bots (and itself), messages
    /// with no sender, service messages and stickers (no text, no file).
    pub fn to_event(&self, me: &Me) -> Option<(InboundEvent, Vec<FileRef>)> {
        let from = self.from.as_ref()?;
        if from.is_bot || from.id == me.id {
            return None;
        }
        let chat = self.chat.id;
        let is_group = self.chat.kind.as_deref() != Some("private");
        let text = self
            .text
            .as_deref()
            .or(self.caption.as_deref())
            .unwrap_or_default()
            .to_owned();
        let entities = self
            .entities
            .as_ref()
            .or(self.caption_entities.as_ref())
            .map(Vec::as_slice)
            .unwrap_or_default();
        let mentioned = entities.iter().any(|e| match e.kind.as_str() {
            "mention" => utf16_slice(&text, e.offset, e.length).is_some_and(|s| {
                !me.username.is_empty() && s.eq_ignore_ascii_case(&format!("@{}", me.username))
            }),
            "text_mention" => e.user.as_ref().is_some_and(|u| u.id == me.id),
            _ => false,
        });
        let replied = self
            .reply_to_message
            .as_ref()
            .and_then(|r| r.from.as_ref())
            .is_some_and(|u| u.id == me.id);
        let files = self.files();
        if text.is_empty() && files.is_empty() {
            return None;
        }
        let name = [from.first_name.as_deref(), from.last_name.as_deref()]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join(" ");
        let ev = InboundEvent {
            channel_type: CHANNEL_TYPE.into(),
            platform_id: chat.to_string(),
            thread_id: topic(self.is_topic_message, self.message_thread_id),
            message_id: format!("{chat}.{}", self.message_id),
            sender_id: from.id.to_string(),
            sender_name: if name.is_empty() {
                from.username.clone()
            } else {
                Some(name)
            },
            text,
            is_mention: !is_group || mentioned || replied,
            is_group,
            attachments: Vec::new(),
            webhook: None,
            edit_of: None,
        };
        Some((ev, files))
    }

    /// The message's files: `document`, audio, video, voice, animation,
    /// and the largest `photo` size.
    fn files(&self) -> Vec<FileRef> {
        let mut out = Vec::new();
        for (kind, f) in [
            ("document", &self.document),
            ("audio", &self.audio),
            ("video", &self.video),
            ("voice", &self.voice),
            ("animation", &self.animation),
        ] {
            if let Some(f) = f {
                // A voice note has no name; it is OGG/Opus, and the
                // transcription APIs read the format from the extension.
                let unnamed = match kind {
                    "voice" => "voice.ogg",
                    other => other,
                };
                out.push(FileRef {
                    name: f.file_name.clone().unwrap_or_else(|| unnamed.to_owned()),
                    file: f.clone(),
                });
            }
        }
        if let Some(p) = self.photo.as_ref().and_then(|p| p.last()) {
            out.push(FileRef {
                file: p.clone(),
                name: "photo.jpg".into(),
            });
        }
        out
    }
}

/// The entity's text: offsets and lengths are in UTF-16 units.
pub(super) fn utf16_slice(text: &str, offset: Option<u64>, length: Option<u64>) -> Option<String> {
    let (o, l) = (
        usize::try_from(offset?).ok()?,
        usize::try_from(length?).ok()?,
    );
    let units: Vec<u16> = text.encode_utf16().collect();
    units
        .get(o..o.checked_add(l)?)
        .map(String::from_utf16_lossy)
}

#[cfg(test)]
mod tests {
    //! The recorded payloads in `tests/fixtures/telegram/`, shaped as the
    //! Bot API documents them, through the parser.
    use super::*;

    fn me() -> Me {
        Me {
            id: 999,
            username: "pinch_bot".into(),
        }
    }

    fn updates(json: &str) -> Vec<Update> {
        let a: Answer<Vec<Update>> = serde_json::from_str(json).expect("a getUpdates answer");
        assert!(a.ok);
        a.result.expect("a result")
    }

    fn events(json: &str) -> Vec<Option<(InboundEvent, Vec<FileRef>)>> {
        updates(json)
            .iter()
            .map(|u| u.message.as_ref().and_then(|m| m.to_event(&me())))
            .collect()
    }

    #[test]
    fn a_private_message_and_a_group_mention() {
        let e = events(include_str!(
            "../../tests/fixtures/telegram/get_updates.json"
        ));
        assert_eq!(e.len(), 6, "{e:?}");
        let (dm, files) = e[0].clone().expect("the DM");
        assert!(files.is_empty());
        assert_eq!(
            dm,
            InboundEvent {
                channel_type: "telegram".into(),
                platform_id: "42".into(),
                thread_id: None,
                message_id: "42.101".into(),
                sender_id: "42".into(),
                sender_name: Some("Ann Lee".into()),
                text: "hello there".into(),
                is_mention: true,
                is_group: false,
                ..Default::default()
            }
        );
        // "😀 @pinch_bot …": the entity's offset counts UTF-16 units.
        let (g, _) = e[1].clone().expect("the mention");
        assert_eq!(
            (g.platform_id.as_str(), g.is_group, g.is_mention),
            ("-100777", true, true)
        );
        assert_eq!(
            g.sender_name.as_deref(),
            Some("bob_b"),
            "no first name: the username"
        );
        // A mention of another bot is not a mention of pinch.
        let (other, _) = e[2].clone().expect("another mention");
        assert!(other.is_group && !other.is_mention);
        // A reply to pinch's message, in a forum topic.
        let (reply, _) = e[3].clone().expect("the reply");
        assert!(reply.is_mention);
        assert_eq!(reply.thread_id.as_deref(), Some("7"));
        // A bot's message and a sticker (no text, no file) are skipped.
        assert!(e[4].is_none() && e[5].is_none(), "{e:?}");
    }

    #[test]
    fn files_captions_edits_and_unknown_fields() {
        let u = updates(include_str!(
            "../../tests/fixtures/telegram/edge_cases.json"
        ));
        // A document with a caption that mentions pinch via text_mention.
        let (ev, files) = u[0].message.as_ref().unwrap().to_event(&me()).unwrap();
        assert_eq!(ev.text, "read this please");
        assert!(ev.is_mention && ev.is_group);
        assert_eq!(
            files.len(),
            2,
            "the document and the largest photo: {files:?}"
        );
        assert_eq!(files[0].name, "notes.txt");
        assert_eq!(files[0].file.file_size, Some(23));
        assert_eq!(files[1].name, "photo.jpg");
        assert_eq!(files[1].file.file_id, "p-big");
        // An edited message is neither a message nor a click: skipped.
        assert!(u[1].message.is_none() && u[1].callback_query.is_none());
        assert_eq!(u[1].update_id, 902);
        // A click, with a topic.
        let q = u[2].callback_query.as_ref().expect("the click");
        assert_eq!(q.data.as_deref(), Some("q:1:r"));
        assert_eq!(q.place(), Some((-100777, Some("7".to_owned()))));
        // Unknown fields everywhere, an entity with a string offset, a
        // `from` of the wrong shape inside the reply: still parsed.
        let (ev, _) = u[3].message.as_ref().unwrap().to_event(&me()).unwrap();
        assert_eq!(ev.text, "@pinch_bot still here");
        assert!(!ev.is_mention, "the odd entity is not a mention");
        assert!(ev.is_group);
        // No sender (a channel post shape): skipped.
        assert!(u[4].message.as_ref().unwrap().to_event(&me()).is_none());
    }

    /// A voice note (Bot API `Voice`: no file name) is `voice.ogg`, the
    /// name a transcription API reads the format from.
    #[test]
    fn a_voice_note_is_named_for_its_format() {
        let e = events(
            r#"{"ok":true,"result":[{"update_id":5,"message":{"message_id":9,"date":1,
              "chat":{"id":42,"type":"private"},"from":{"id":42,"is_bot":false,"first_name":"Ann"},
              "voice":{"file_id":"v1","file_unique_id":"u1","duration":3,"mime_type":"audio/ogg","file_size":5120}}}]}"#,
        );
        let (_, files) = e[0].clone().expect("the voice note");
        assert_eq!(files.len(), 1, "{files:?}");
        assert_eq!(files[0].name, "voice.ogg");
        assert_eq!(files[0].file.mime_type.as_deref(), Some("audio/ogg"));
    }

    #[test]
    fn entity_slices() {
        assert_eq!(
            utf16_slice("😀 @pinch_bot hi", Some(3), Some(10)).as_deref(),
            Some("@pinch_bot")
        );
        assert_eq!(utf16_slice("short", Some(3), Some(10)), None);
        assert_eq!(utf16_slice("short", None, Some(1)), None);
    }
}

/// Telegram's entity offsets come from the platform: any offset and length
/// over any text (emoji, surrogate pairs, out of range, not numbers) give
/// the slice or `None`, never a panic.
#[cfg(test)]
mod proptests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn entity_slices_never_panic_and_are_in_range(
            text in ".{0,60}",
            offset in proptest::option::of(0u64..200),
            length in proptest::option::of(0u64..200),
            junk in "[a-z]{0,3}",
        ) {
            let units = text.encode_utf16().count() as u64;
            // A field that is not a number reads as absent.
            let read = |n: Option<u64>| -> Option<u64> {
                let v = n.map(serde_json::Value::from).unwrap_or(serde_json::Value::from(junk.clone()));
                let e: Entity = serde_json::from_value(serde_json::json!({"type": "mention", "offset": v, "length": 1})).unwrap();
                e.offset
            };
            let got = utf16_slice(&text, read(offset), read(length));
            match (offset, length) {
                (Some(o), Some(l)) if o + l <= units => {
                    let s = got.expect("in range");
                    prop_assert_eq!(s.encode_utf16().count() as u64, l);
                }
                _ => prop_assert!(got.is_none()),
            }
        }
    }
}
