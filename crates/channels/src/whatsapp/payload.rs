//! The Cloud API's webhook payloads pinch reads, as types: only the fields
//! it uses, unknown fields ignored (Meta adds them), odd optional parts
//! read as absent ([`lenient`]). Turning a message into an
//! [`InboundEvent`] or a [`Click`] is pure here (media are downloaded by
//! the caller), so the recorded-style payloads under
//! `tests/fixtures/whatsapp/` test it directly.

use serde::Deserialize;

use crate::platform::lenient;
use crate::{Click, InboundEvent};

use super::CHANNEL_TYPE;

/// A webhook POST's body: `{"object": "whatsapp_business_account",
/// "entry": [{"changes": [{"field": "messages", "value": …}]}]}`.
#[derive(Debug, Default, Deserialize)]
pub(super) struct Notification {
    #[serde(default)]
    pub entry: Vec<Entry>,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct Entry {
    #[serde(default)]
    pub changes: Vec<Change>,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct Change {
    #[serde(default)]
    pub field: String,
    #[serde(default, deserialize_with = "lenient")]
    pub value: Option<Value>,
}

/// A change's value: the messages (and the senders' profiles) for one
/// business number; `statuses` (sent/delivered/read receipts) are not
/// read.
#[derive(Debug, Default, Deserialize)]
pub(super) struct Value {
    #[serde(default, deserialize_with = "lenient")]
    pub metadata: Option<Metadata>,
    #[serde(default, deserialize_with = "lenient")]
    pub contacts: Option<Vec<Contact>>,
    /// Each message read on its own, so one odd message does not drop
    /// the others.
    #[serde(default, deserialize_with = "lenient")]
    pub messages: Option<Vec<serde_json::Value>>,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct Metadata {
    pub phone_number_id: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct Contact {
    pub wa_id: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    pub profile: Option<Profile>,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct Profile {
    pub name: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct Message {
    /// The sender's WhatsApp id (their phone number, digits only).
    #[serde(default)]
    pub from: String,
    /// `wamid.…`, stable across Meta's redeliveries.
    #[serde(default)]
    pub id: String,
    /// Unix seconds, as a string.
    #[serde(default, deserialize_with = "lenient")]
    pub timestamp: Option<String>,
    #[serde(rename = "type", default)]
    pub kind: String,
    #[serde(default, deserialize_with = "lenient")]
    pub text: Option<Text>,
    #[serde(default, deserialize_with = "lenient")]
    pub image: Option<Media>,
    #[serde(default, deserialize_with = "lenient")]
    pub document: Option<Media>,
    #[serde(default, deserialize_with = "lenient")]
    pub audio: Option<Media>,
    #[serde(default, deserialize_with = "lenient")]
    pub voice: Option<Media>,
    #[serde(default, deserialize_with = "lenient")]
    pub video: Option<Media>,
    #[serde(default, deserialize_with = "lenient")]
    pub interactive: Option<Interactive>,
    #[serde(default, deserialize_with = "lenient")]
    pub button: Option<TemplateButton>,
    #[serde(default, deserialize_with = "lenient")]
    pub context: Option<Context>,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct Text {
    #[serde(default)]
    pub body: String,
}

/// An image, document, audio, voice note or video: fetched by its `id`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
pub(super) struct Media {
    #[serde(default)]
    pub id: String,
    pub mime_type: Option<String>,
    pub filename: Option<String>,
    pub caption: Option<String>,
    /// An audio message recorded in the app (a voice note).
    #[serde(default, deserialize_with = "lenient")]
    pub voice: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct Interactive {
    #[serde(default, deserialize_with = "lenient")]
    pub button_reply: Option<Reply>,
    #[serde(default, deserialize_with = "lenient")]
    pub list_reply: Option<Reply>,
}

/// The reply button or list row the user chose: `id` is what pinch set.
#[derive(Debug, Default, Deserialize)]
pub(super) struct Reply {
    #[serde(default)]
    pub id: String,
    pub title: Option<String>,
}

/// A template's quick-reply button (pinch's template has no payload of
/// its own: the pressed text is a message).
#[derive(Debug, Default, Deserialize)]
pub(super) struct TemplateButton {
    pub text: Option<String>,
    pub payload: Option<String>,
}

/// The message this one answers.
#[derive(Debug, Default, Deserialize)]
pub(super) struct Context {
    pub id: Option<String>,
}

/// The media `GET /{version}/{media id}` describes.
#[derive(Debug, Default, Deserialize)]
pub(super) struct MediaInfo {
    pub url: Option<String>,
    pub file_size: Option<u64>,
}

/// A media file to fetch, with the name to give it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct MediaRef {
    pub id: String,
    pub name: String,
    pub mime: Option<String>,
}

/// What one webhook message is to pinch.
#[derive(Debug, PartialEq)]
pub(super) enum Inbound {
    /// A message for the host, with the media to download into it.
    Message(Box<InboundEvent>, Vec<MediaRef>),
    /// A reply button or list row pressed under pinch's message.
    Click(Click),
    /// Nothing pinch keeps (a reaction, an unsupported type), and why.
    Skip(String),
}

impl Value {
    /// The profile name WhatsApp reports for `wa_id`.
    pub fn name_of(&self, wa_id: &str) -> Option<String> {
        self.contacts
            .iter()
            .flatten()
            .find(|c| c.wa_id.as_deref() == Some(wa_id))
            .and_then(|c| c.profile.as_ref()?.name.clone())
            .filter(|n| !n.is_empty())
    }
}

impl Message {
    /// The sender's send time (Unix seconds), when the payload has one.
    pub fn sent_at(&self) -> Option<i64> {
        self.timestamp.as_deref()?.trim().parse().ok()
    }

    /// What the message is to pinch. The Cloud API is one-to-one with the
    /// business number (no groups): the conversation is the sender's
    /// `wa_id`, and every message is addressed to pinch.
    pub fn to_inbound(&self, sender_name: Option<String>) -> Inbound {
        if self.from.is_empty() || self.id.is_empty() {
            return Inbound::Skip("a message without a sender or an id".into());
        }
        if let Some(i) = &self.interactive {
            if let Some(r) = i.button_reply.as_ref().or(i.list_reply.as_ref()) {
                if !r.id.is_empty() {
                    return Inbound::Click(Click {
                        channel_type: CHANNEL_TYPE.into(),
                        platform_id: self.from.clone(),
                        thread_id: None,
                        user_id: self.from.clone(),
                        callback: r.id.clone(),
                    });
                }
            }
        }
        let mut files = Vec::new();
        let mut caption = None;
        for (kind, m) in [
            ("image", &self.image),
            ("document", &self.document),
            ("audio", &self.audio),
            ("voice", &self.voice),
            ("video", &self.video),
        ] {
            let Some(m) = m else { continue };
            if m.id.is_empty() {
                continue;
            }
            caption = caption.or(m.caption.clone());
            let voice = kind == "voice" || m.voice == Some(true);
            let name = m
                .filename
                .clone()
                .filter(|n| !n.is_empty())
                .unwrap_or_else(|| unnamed(kind, voice, m.mime_type.as_deref()));
            files.push(MediaRef {
                id: m.id.clone(),
                name,
                mime: m.mime_type.clone(),
            });
        }
        let text = match self.kind.as_str() {
            "text" => self.text.as_ref().map(|t| t.body.clone()),
            "button" => self
                .button
                .as_ref()
                .and_then(|b| b.text.clone().or(b.payload.clone())),
            // A reply whose id pinch does not know, read as its title.
            "interactive" => self.interactive.as_ref().and_then(|i| {
                i.button_reply
                    .as_ref()
                    .or(i.list_reply.as_ref())
                    .and_then(|r| r.title.clone())
            }),
            "reaction" => return Inbound::Skip("a reaction".into()),
            _ => None,
        }
        .or(caption)
        .unwrap_or_default();
        if text.is_empty() && files.is_empty() {
            return Inbound::Skip(format!(
                "a message of type {:?} with no text and no file",
                self.kind
            ));
        }
        let ev = InboundEvent {
            channel_type: CHANNEL_TYPE.into(),
            platform_id: self.from.clone(),
            thread_id: None,
            message_id: self.id.clone(),
            sender_id: self.from.clone(),
            sender_name,
            text,
            is_mention: true,
            is_group: false,
            attachments: Vec::new(),
            webhook: None,
            edit_of: None,
        };
        Inbound::Message(Box::new(ev), files)
    }

    /// The id of the message this one answers (WhatsApp's reply-to).
    #[cfg_attr(not(test), allow(dead_code))]
    pub fn reply_to(&self) -> Option<&str> {
        self.context.as_ref()?.id.as_deref()
    }
}

/// A name for a file WhatsApp sends without one (all but documents): the
/// kind and an extension from its type (transcription APIs read the
/// format from it; a voice note is OGG/Opus).
fn unnamed(kind: &str, voice: bool, mime: Option<&str>) -> String {
    if voice {
        return "voice.ogg".into();
    }
    let mime = mime.unwrap_or_default();
    let base = mime.split(';').next().unwrap_or_default().trim();
    let ext = match base {
        "image/jpeg" => "jpg",
        "image/png" => "png",
        "image/webp" => "webp",
        "audio/ogg" => "ogg",
        "audio/mpeg" => "mp3",
        "audio/mp4" | "audio/aac" => "m4a",
        "audio/amr" => "amr",
        "video/mp4" => "mp4",
        "video/3gpp" => "3gp",
        "application/pdf" => "pdf",
        "text/plain" => "txt",
        _ => "bin",
    };
    format!("{kind}.{ext}")
}

#[cfg(test)]
mod tests {
    //! The recorded-style payloads in `tests/fixtures/whatsapp/`, shaped as
    //! the Cloud API documents them, through the parser.
    use super::*;

    fn inbound(json: &str) -> Vec<Inbound> {
        let n: Notification = serde_json::from_str(json).expect("a notification");
        let mut out = Vec::new();
        for e in &n.entry {
            for c in &e.changes {
                let Some(v) = &c.value else { continue };
                for m in v.messages.iter().flatten() {
                    let m: Message = serde_json::from_value(m.clone()).unwrap_or_default();
                    out.push(m.to_inbound(v.name_of(&m.from)));
                }
            }
        }
        out
    }

    #[test]
    fn a_text_message_with_its_sender_and_reply_context() {
        let json = include_str!("../../tests/fixtures/whatsapp/text.json");
        let n: Notification = serde_json::from_str(json).unwrap();
        let v = n.entry[0].changes[0].value.as_ref().unwrap();
        assert_eq!(n.entry[0].changes[0].field, "messages");
        assert_eq!(
            v.metadata.as_ref().unwrap().phone_number_id.as_deref(),
            Some("106540352242922")
        );
        let m: Message = serde_json::from_value(v.messages.as_ref().unwrap()[0].clone()).unwrap();
        assert_eq!(m.sent_at(), Some(1_733_400_000));
        assert_eq!(m.reply_to(), Some("wamid.PREVIOUS=="));
        let all = inbound(json);
        assert_eq!(
            all[0],
            Inbound::Message(
                Box::new(InboundEvent {
                    channel_type: "whatsapp".into(),
                    platform_id: "4915112345678".into(),
                    message_id: "wamid.HBgNNDkxNTExMjM0NTY3OBUCABIYFDNBMEU=".into(),
                    sender_id: "4915112345678".into(),
                    sender_name: Some("Ann Lee".into()),
                    text: "hello there".into(),
                    is_mention: true,
                    is_group: false,
                    ..Default::default()
                }),
                Vec::new()
            )
        );
    }

    #[test]
    fn media_clicks_reactions_and_odd_shapes() {
        let all = inbound(include_str!("../../tests/fixtures/whatsapp/kinds.json"));
        assert_eq!(all.len(), 9, "{all:#?}");
        // An image with a caption: the caption is the text.
        let Inbound::Message(ev, files) = &all[0] else {
            panic!("{:?}", all[0])
        };
        assert_eq!(ev.text, "read the attachment please");
        assert_eq!(
            files,
            &[MediaRef {
                id: "media-img-1".into(),
                name: "image.jpg".into(),
                mime: Some("image/jpeg".into())
            }]
        );
        // A document keeps its name; no caption, no text.
        let Inbound::Message(ev, files) = &all[1] else {
            panic!("{:?}", all[1])
        };
        assert_eq!(
            (ev.text.as_str(), files[0].name.as_str()),
            ("", "notes.txt")
        );
        // A voice note (audio with voice: true) is voice.ogg.
        let Inbound::Message(_, files) = &all[2] else {
            panic!("{:?}", all[2])
        };
        assert_eq!(files[0].name, "voice.ogg");
        // A reply button and a list row are clicks carrying pinch's id.
        for (i, id) in [(3, "q:1:r"), (4, "q:1:b")] {
            let Inbound::Click(c) = &all[i] else {
                panic!("{:?}", all[i])
            };
            assert_eq!(
                (
                    c.callback.as_str(),
                    c.platform_id.as_str(),
                    c.user_id.as_str()
                ),
                (id, "4915112345678", "4915112345678")
            );
        }
        // A template's quick reply is its text.
        let Inbound::Message(ev, _) = &all[5] else {
            panic!("{:?}", all[5])
        };
        assert_eq!(ev.text, "Continue");
        // A reaction and a sticker-less unsupported message are skipped.
        assert!(matches!(&all[6], Inbound::Skip(w) if w == "a reaction"));
        assert!(matches!(&all[7], Inbound::Skip(_)), "{:?}", all[7]);
        // Unknown fields and a context of the wrong shape: still read.
        let Inbound::Message(ev, _) = &all[8] else {
            panic!("{:?}", all[8])
        };
        assert_eq!(ev.text, "still here");
        assert_eq!(ev.sender_name, None, "no contact for this sender");
    }

    #[test]
    fn statuses_are_not_messages() {
        let all = inbound(include_str!("../../tests/fixtures/whatsapp/statuses.json"));
        assert!(all.is_empty(), "{all:?}");
    }

    #[test]
    fn unnamed_files_get_an_extension_from_their_type() {
        assert_eq!(unnamed("image", false, Some("image/png")), "image.png");
        assert_eq!(
            unnamed("audio", false, Some("audio/ogg; codecs=opus")),
            "audio.ogg"
        );
        assert_eq!(unnamed("audio", true, None), "voice.ogg");
        assert_eq!(unnamed("video", false, None), "video.bin");
    }
}
