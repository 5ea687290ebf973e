//! Discord's payloads pinch reads, as types: gateway frames (HELLO, READY,
//! MESSAGE_CREATE, INTERACTION_CREATE) and REST answers. Only the fields
//! pinch uses; unknown fields ignored (Discord adds them), odd optional
//! parts read as absent ([`lenient`]). Turning a message into an
//! [`InboundEvent`] is pure here (the caller resolves threads and downloads
//! files), so the recorded payloads under `tests/fixtures/discord/` test it.

use serde::Deserialize;
use serde_json::Value;

use crate::platform::lenient;
use crate::InboundEvent;

use super::CHANNEL_TYPE;

/// One gateway frame: `op`, the sequence `s`, the dispatch name `t`, and
/// `d`, whose shape depends on them (read by the types below).
#[derive(Debug, Default, Deserialize)]
pub(super) struct Frame {
    pub op: Option<u64>,
    pub s: Option<u64>,
    pub t: Option<String>,
    #[serde(default)]
    pub d: Value,
}

impl Frame {
    /// `d` as `T`, or `None` when it does not have that shape.
    pub fn data<T: serde::de::DeserializeOwned>(&self) -> Option<T> {
        serde_json::from_value(self.d.clone()).ok()
    }
}

/// HELLO's `d`.
#[derive(Debug, Deserialize)]
pub(super) struct Hello {
    pub heartbeat_interval: Option<u64>,
}

/// READY's `d`.
#[derive(Debug, Default, Deserialize)]
pub(super) struct Ready {
    pub session_id: Option<String>,
    pub resume_gateway_url: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    pub user: Option<User>,
}

/// `GET /gateway/bot`.
#[derive(Debug, Default, Deserialize)]
pub(super) struct GatewayBot {
    pub url: Option<String>,
}

/// `GET /channels/{id}`: threads are types 10-12, with a parent.
#[derive(Debug, Default, Deserialize)]
pub(super) struct ChannelInfo {
    #[serde(rename = "type")]
    pub kind: Option<u64>,
    pub parent_id: Option<String>,
}

impl ChannelInfo {
    /// The parent channel, when this is a thread.
    pub fn thread_parent(self) -> Option<String> {
        matches!(self.kind, Some(10..=12))
            .then_some(self.parent_id)
            .flatten()
    }
}

/// What pinch keeps of an object it created (a message, a DM channel).
#[derive(Debug, Default, Deserialize)]
pub(super) struct Created {
    pub id: Option<String>,
}

/// An error answer's `message`.
#[derive(Debug, Default, Deserialize)]
pub(super) struct ErrorBody {
    pub message: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub(super) struct User {
    #[serde(default)]
    pub id: String,
    pub username: Option<String>,
    pub global_name: Option<String>,
    #[serde(default)]
    pub bot: bool,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
pub(super) struct Attachment {
    pub filename: Option<String>,
    pub content_type: Option<String>,
    #[serde(default)]
    pub size: u64,
    pub url: Option<String>,
}

/// The message a message answers: only who wrote it matters.
#[derive(Clone, Debug, Deserialize)]
pub(super) struct Referenced {
    #[serde(default, deserialize_with = "lenient")]
    pub author: Option<User>,
}

/// A message: MESSAGE_CREATE's `d`, or one of `GET messages`.
#[derive(Clone, Debug, Default, Deserialize)]
pub(super) struct Message {
    #[serde(default)]
    pub id: String,
    pub channel_id: Option<String>,
    pub guild_id: Option<String>,
    pub webhook_id: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    pub author: Option<User>,
    pub content: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    pub mentions: Option<Vec<User>>,
    #[serde(default, deserialize_with = "lenient")]
    pub referenced_message: Option<Box<Referenced>>,
    #[serde(default, deserialize_with = "lenient")]
    pub attachments: Option<Vec<Attachment>>,
}

impl Message {
    /// The event for the host, in the message's own channel (the caller
    /// moves a thread under its parent) and without the files' bytes, and
    /// the files to download; `None` for what pinch skips: bots (and
    /// itself), webhooks, messages with no id or channel, and messages
    /// with neither text nor files.
    pub fn to_event(&self, me: &str) -> Option<(InboundEvent, Vec<Attachment>)> {
        let author = self.author.clone().unwrap_or_default();
        if author.bot || (!me.is_empty() && author.id == me) || self.webhook_id.is_some() {
            return None;
        }
        let channel = self.channel_id.as_deref()?;
        if self.id.is_empty() {
            return None;
        }
        let is_group = self.guild_id.is_some();
        let mentioned = self.mentions.iter().flatten().any(|u| u.id == me);
        let replied = self
            .referenced_message
            .as_ref()
            .and_then(|r| r.author.as_ref())
            .is_some_and(|a| a.id == me);
        let files = self.attachments.clone().unwrap_or_default();
        let text = self.content.clone().unwrap_or_default();
        if text.is_empty() && files.is_empty() {
            return None;
        }
        let ev = InboundEvent {
            channel_type: CHANNEL_TYPE.into(),
            platform_id: channel.to_owned(),
            thread_id: None,
            message_id: self.id.clone(),
            sender_id: author.id.clone(),
            sender_name: author.global_name.or(author.username),
            text,
            is_mention: !is_group || mentioned || replied,
            is_group,
            attachments: Vec::new(),
            webhook: None,
            edit_of: None,
        };
        Some((ev, files))
    }
}

/// INTERACTION_CREATE's `d` (a button press).
#[derive(Debug, Default, Deserialize)]
pub(super) struct Interaction {
    pub id: Option<String>,
    pub token: Option<String>,
    pub channel_id: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    pub data: Option<InteractionData>,
    #[serde(default, deserialize_with = "lenient")]
    pub member: Option<Member>,
    #[serde(default, deserialize_with = "lenient")]
    pub user: Option<User>,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct InteractionData {
    pub custom_id: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct Member {
    #[serde(default, deserialize_with = "lenient")]
    pub user: Option<User>,
}

impl Interaction {
    /// Who pressed: the guild member, else the DM's user.
    pub fn user_id(&self) -> String {
        self.member
            .as_ref()
            .and_then(|m| m.user.as_ref())
            .or(self.user.as_ref())
            .map(|u| u.id.clone())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    //! The recorded payloads in `tests/fixtures/discord/`, shaped as
    //! Discord documents them, through the parser.
    use super::*;

    const ME: &str = "900000000000000001";

    fn frames(json: &str) -> Vec<Frame> {
        serde_json::from_str(json).expect("a list of gateway frames")
    }

    #[test]
    fn hello_ready_and_message_create() {
        let f = frames(include_str!("../../tests/fixtures/discord/gateway.json"));
        assert_eq!(f[0].op, Some(10));
        assert_eq!(
            f[0].data::<Hello>().unwrap().heartbeat_interval,
            Some(41250)
        );
        assert_eq!(
            (f[1].op, f[1].t.as_deref(), f[1].s),
            (Some(0), Some("READY"), Some(1))
        );
        let r: Ready = f[1].data().unwrap();
        assert_eq!(r.session_id.as_deref(), Some("d7a1b2c3e4f5"));
        assert_eq!(r.user.unwrap().id, ME);
        // A DM: no guild, so a mention without being named.
        let m: Message = f[2].data().unwrap();
        let (ev, files) = m.to_event(ME).unwrap();
        assert!(files.is_empty());
        assert_eq!(
            ev,
            InboundEvent {
                channel_type: "discord".into(),
                platform_id: "700000000000000042".into(),
                message_id: "1100000000000000001".into(),
                sender_id: "500000000000000042".into(),
                sender_name: Some("Ann".into()),
                text: "hello there".into(),
                is_mention: true,
                is_group: false,
                ..Default::default()
            }
        );
        // In a guild: named in `mentions`, with an attachment.
        let m: Message = f[3].data().unwrap();
        let (ev, files) = m.to_event(ME).unwrap();
        assert!(ev.is_group && ev.is_mention);
        assert_eq!(
            ev.sender_name.as_deref(),
            Some("bob"),
            "no global name: the username"
        );
        assert_eq!(files.len(), 1);
        assert_eq!(files[0].filename.as_deref(), Some("notes.txt"));
        assert_eq!(files[0].size, 23);
        // A reply to pinch in a thread channel; unknown fields ignored.
        let m: Message = f[4].data().unwrap();
        let (ev, _) = m.to_event(ME).unwrap();
        assert!(ev.is_group && ev.is_mention);
        assert_eq!(
            ev.platform_id, "700000000000000099",
            "the thread, until the caller resolves it"
        );
        // A guild message naming nobody: not a mention.
        let (ev, _) = f[5].data::<Message>().unwrap().to_event(ME).unwrap();
        assert!(ev.is_group && !ev.is_mention);
        // A bot, a webhook, pinch itself, an embed-only message: skipped.
        for (i, frame) in f.iter().enumerate().take(10).skip(6) {
            let m: Message = frame.data().unwrap();
            assert!(m.to_event(ME).is_none(), "frame {i}: {m:?}");
        }
        // An edit is a MESSAGE_UPDATE, not asked for: its name says so.
        assert_eq!(f[10].t.as_deref(), Some("MESSAGE_UPDATE"));
        // A button press, in a guild.
        let i: Interaction = f[11].data().unwrap();
        assert_eq!(i.user_id(), "500000000000000042");
        assert_eq!(i.data.unwrap().custom_id.as_deref(), Some("q:1:r"));
        // Heartbeat ACK, INVALID_SESSION (resumable).
        assert_eq!(f[12].op, Some(11));
        assert_eq!((f[13].op, &f[13].d), (Some(9), &Value::Bool(true)));
    }

    #[test]
    fn rest_answers() {
        let batch: Vec<Message> = serde_json::from_str(include_str!(
            "../../tests/fixtures/discord/channel_messages.json"
        ))
        .unwrap();
        assert_eq!(batch.len(), 2, "newest first, as Discord answers");
        assert_eq!(batch[0].id, "1100000000000000011");
        let (ev, _) = batch[1].to_event(ME).unwrap();
        assert_eq!(ev.text, "sent while pinch was down");
        let thread: ChannelInfo = serde_json::from_str(
            r#"{"id": "7", "type": 11, "parent_id": "6", "guild_id": "1", "name": "t", "member_count": 2}"#,
        )
        .unwrap();
        assert_eq!(thread.thread_parent().as_deref(), Some("6"));
        let text: ChannelInfo =
            serde_json::from_str(r#"{"id": "6", "type": 0, "parent_id": "5"}"#).unwrap();
        assert_eq!(
            text.thread_parent(),
            None,
            "a category is not a thread's parent"
        );
        let e: ErrorBody =
            serde_json::from_str(r#"{"message": "Missing Access", "code": 50001}"#).unwrap();
        assert_eq!(e.message.as_deref(), Some("Missing Access"));
    }
}
