//! Slack's payloads pinch reads, as types: Socket Mode envelopes, the
//! `events_api` message event, `block_actions`, and the Web API answers
//! (`auth.test`, `apps.connections.open`, `chat.postMessage`,
//! `conversations.open`, `files.getUploadURLExternal`). Only the fields
//! pinch uses; unknown fields ignored (Slack adds them), odd optional parts
//! read as absent ([`lenient`]). Rich-text `blocks` stay JSON: they nest
//! arbitrarily, and only a `user` element naming pinch matters.
//! Turning an event into an [`InboundEvent`] is pure here (the caller
//! downloads the files), so the recorded payloads under
//! `tests/fixtures/slack/` test it.

use serde::Deserialize;
use serde_json::Value;

use crate::platform::lenient;
use crate::InboundEvent;

use super::CHANNEL_TYPE;

/// Every Web API answer's status.
#[derive(Debug, Default, Deserialize)]
pub(super) struct Status {
    #[serde(default)]
    pub ok: bool,
    pub error: Option<String>,
}

/// `auth.test`.
#[derive(Debug, Default, Deserialize)]
pub(super) struct AuthTest {
    pub user_id: Option<String>,
}

/// `apps.connections.open`.
#[derive(Debug, Default, Deserialize)]
pub(super) struct ConnectionsOpen {
    pub url: Option<String>,
}

/// `chat.postMessage`.
#[derive(Debug, Default, Deserialize)]
pub(super) struct Posted {
    pub ts: Option<String>,
}

/// `conversations.open`.
#[derive(Debug, Default, Deserialize)]
pub(super) struct Opened {
    #[serde(default, deserialize_with = "lenient")]
    pub channel: Option<Id>,
}

/// `files.getUploadURLExternal`.
#[derive(Debug, Default, Deserialize)]
pub(super) struct UploadUrl {
    pub upload_url: Option<String>,
    pub file_id: Option<String>,
}

/// `{"id": …}` (a channel, a user).
#[derive(Debug, Default, Deserialize)]
pub(super) struct Id {
    pub id: Option<String>,
}

/// One Socket Mode frame: `hello`, `disconnect`, or an envelope to ack.
#[derive(Debug, Default, Deserialize)]
pub(super) struct Envelope {
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub envelope_id: Option<String>,
    pub reason: Option<String>,
    #[serde(default)]
    pub payload: Value,
}

impl Envelope {
    /// `payload` as `T` (a default `T` when it has another shape).
    pub fn payload<T: serde::de::DeserializeOwned + Default>(&self) -> T {
        serde_json::from_value(self.payload.clone()).unwrap_or_default()
    }
}

/// An `events_api` envelope's payload (the event callback).
#[derive(Debug, Default, Deserialize)]
pub(super) struct EventCallback {
    pub event_id: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    pub event: Option<Event>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
pub(super) struct File {
    pub name: Option<String>,
    pub mimetype: Option<String>,
    #[serde(default)]
    pub size: u64,
    pub url_private_download: Option<String>,
    pub url_private: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct Profile {
    pub display_name: Option<String>,
    pub real_name: Option<String>,
}

/// An event; pinch reads `message` events only.
#[derive(Debug, Default, Deserialize)]
pub(super) struct Event {
    #[serde(rename = "type", default)]
    pub kind: String,
    pub subtype: Option<String>,
    pub bot_id: Option<String>,
    pub user: Option<String>,
    pub channel: Option<String>,
    pub channel_type: Option<String>,
    pub ts: Option<String>,
    pub thread_ts: Option<String>,
    pub text: Option<String>,
    #[serde(default)]
    pub blocks: Value,
    #[serde(default, deserialize_with = "lenient")]
    pub files: Option<Vec<File>>,
    #[serde(default, deserialize_with = "lenient")]
    pub user_profile: Option<Profile>,
}

impl Event {
    /// The event for the host (without the files' bytes) and the files to
    /// download; `None` for what pinch skips: other event types
    /// (`app_mention` duplicates a message), bots (and itself), edits,
    /// deletions and joins, and messages with neither text nor files.
    pub fn to_event(&self, me: &str) -> Option<(InboundEvent, Vec<File>)> {
        if self.kind != "message" {
            return None;
        }
        let user = self.user.as_deref()?;
        if self.bot_id.is_some() || user == me {
            return None;
        }
        if !matches!(
            self.subtype.as_deref(),
            None | Some("file_share") | Some("thread_broadcast")
        ) {
            return None;
        }
        let channel = self.channel.as_deref()?;
        let ts = self.ts.as_deref()?;
        let is_group = self.channel_type.as_deref() != Some("im");
        let text = self.text.clone().unwrap_or_default();
        let mentioned = !me.is_empty()
            && (mentions_in_blocks(&self.blocks, me) || text.contains(&format!("<@{me}>")));
        let files = self.files.clone().unwrap_or_default();
        if text.is_empty() && files.is_empty() {
            return None;
        }
        let profile = self.user_profile.as_ref();
        let ev = InboundEvent {
            channel_type: CHANNEL_TYPE.into(),
            platform_id: channel.to_owned(),
            thread_id: self.thread_ts.clone(),
            message_id: format!("{channel}-{ts}"),
            sender_id: user.to_owned(),
            sender_name: profile
                .and_then(|p| p.display_name.clone())
                .filter(|n| !n.is_empty())
                .or(profile.and_then(|p| p.real_name.clone())),
            text,
            is_mention: !is_group || mentioned,
            is_group,
            attachments: Vec::new(),
            webhook: None,
            edit_of: None,
        };
        Some((ev, files))
    }
}

/// An `interactive` envelope's payload (`block_actions`: a button press).
#[derive(Debug, Default, Deserialize)]
pub(super) struct Interactive {
    #[serde(rename = "type", default)]
    pub kind: String,
    #[serde(default, deserialize_with = "lenient")]
    pub channel: Option<Id>,
    #[serde(default, deserialize_with = "lenient")]
    pub container: Option<Container>,
    #[serde(default, deserialize_with = "lenient")]
    pub message: Option<Threaded>,
    #[serde(default, deserialize_with = "lenient")]
    pub user: Option<Id>,
    #[serde(default, deserialize_with = "lenient")]
    pub actions: Option<Vec<Action>>,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct Container {
    pub channel_id: Option<String>,
    pub thread_ts: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct Threaded {
    pub thread_ts: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct Action {
    pub value: Option<String>,
}

impl Interactive {
    /// The conversation and thread the pressed button sat in.
    pub fn place(&self) -> Option<(String, Option<String>)> {
        let channel = self
            .channel
            .as_ref()
            .and_then(|c| c.id.clone())
            .or(self.container.as_ref().and_then(|c| c.channel_id.clone()))?;
        let thread = self
            .message
            .as_ref()
            .and_then(|m| m.thread_ts.clone())
            .or(self.container.as_ref().and_then(|c| c.thread_ts.clone()));
        Some((channel, thread))
    }
}

/// Whether rich-text `blocks` (any JSON) hold a `user` element naming `me`.
pub(super) fn mentions_in_blocks(blocks: &Value, me: &str) -> bool {
    match blocks {
        Value::Object(o) => {
            (o.get("type").and_then(Value::as_str) == Some("user")
                && o.get("user_id").and_then(Value::as_str) == Some(me))
                || o.values().any(|x| mentions_in_blocks(x, me))
        }
        Value::Array(a) => a.iter().any(|x| mentions_in_blocks(x, me)),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    //! The recorded payloads in `tests/fixtures/slack/`, shaped as Slack
    //! documents them, through the parser.
    use super::*;

    const ME: &str = "UPINCHBOT";

    fn frames() -> Vec<Envelope> {
        serde_json::from_str(include_str!("../../tests/fixtures/slack/socket_mode.json"))
            .expect("a list of Socket Mode frames")
    }

    fn event(e: &Envelope) -> Option<(InboundEvent, Vec<File>)> {
        e.payload::<EventCallback>().event?.to_event(ME)
    }

    #[test]
    fn envelopes_and_message_events() {
        let f = frames();
        assert_eq!(f[0].kind.as_deref(), Some("hello"));
        assert!(f[0].envelope_id.is_none());
        // A DM.
        assert_eq!(f[1].envelope_id.as_deref(), Some("env-0001"));
        let cb: EventCallback = f[1].payload();
        assert_eq!(cb.event_id.as_deref(), Some("Ev0001"));
        let (dm, files) = event(&f[1]).unwrap();
        assert!(files.is_empty());
        assert_eq!(
            dm,
            InboundEvent {
                channel_type: "slack".into(),
                platform_id: "D0000DM".into(),
                message_id: "D0000DM-1764900000.000100".into(),
                sender_id: "UANN".into(),
                sender_name: Some("Ann".into()),
                text: "hello there".into(),
                is_mention: true,
                is_group: false,
                ..Default::default()
            }
        );
        // In a channel, a thread reply naming pinch in its rich text.
        let (ev, _) = event(&f[2]).unwrap();
        assert!(ev.is_group && ev.is_mention);
        assert_eq!(ev.thread_id.as_deref(), Some("1764900000.000200"));
        assert_eq!(
            ev.sender_name.as_deref(),
            Some("Bob Real"),
            "an empty display name: the real name"
        );
        // `<@BOT>` markup only, with a file and unknown fields.
        let (ev, files) = event(&f[3]).unwrap();
        assert!(ev.is_mention);
        assert_eq!(files.len(), 1);
        assert_eq!(files[0].name.as_deref(), Some("notes.txt"));
        assert_eq!(files[0].size, 23);
        // In a channel, naming nobody: not a mention.
        let (ev, _) = event(&f[4]).unwrap();
        assert!(ev.is_group && !ev.is_mention);
        // An edit, a bot, pinch itself, an app_mention (duplicates a
        // message), a file-less empty message: skipped.
        for (i, e) in f.iter().enumerate().take(10).skip(5) {
            assert!(event(e).is_none(), "frame {i}");
        }
        // A button press in a thread.
        assert_eq!(f[10].kind.as_deref(), Some("interactive"));
        let p: Interactive = f[10].payload();
        assert_eq!(p.kind, "block_actions");
        assert_eq!(
            p.place(),
            Some(("C0000GEN".to_owned(), Some("1764900000.000200".to_owned())))
        );
        assert_eq!(p.user.unwrap().id.as_deref(), Some("UANN"));
        assert_eq!(p.actions.unwrap()[0].value.as_deref(), Some("q:1:r"));
        // A slash command (acked, not handled) and a disconnect.
        assert_eq!(f[11].kind.as_deref(), Some("slash_commands"));
        assert_eq!(
            (f[12].kind.as_deref(), f[12].reason.as_deref()),
            (Some("disconnect"), Some("refresh_requested"))
        );
    }

    #[test]
    fn web_api_answers() {
        let a: Value =
            serde_json::from_str(include_str!("../../tests/fixtures/slack/web_api.json")).unwrap();
        let read = |k: &str| a[k].clone();
        let s: Status = serde_json::from_value(read("auth.test")).unwrap();
        assert!(s.ok);
        let t: AuthTest = serde_json::from_value(read("auth.test")).unwrap();
        assert_eq!(t.user_id.as_deref(), Some(ME));
        let o: ConnectionsOpen = serde_json::from_value(read("apps.connections.open")).unwrap();
        assert!(o.url.unwrap().starts_with("wss://"));
        let p: Posted = serde_json::from_value(read("chat.postMessage")).unwrap();
        assert_eq!(p.ts.as_deref(), Some("1764900100.000300"));
        let c: Opened = serde_json::from_value(read("conversations.open")).unwrap();
        assert_eq!(c.channel.unwrap().id.as_deref(), Some("D0000DM"));
        let u: UploadUrl = serde_json::from_value(read("files.getUploadURLExternal")).unwrap();
        assert_eq!(u.file_id.as_deref(), Some("F0000REPORT"));
        let e: Status = serde_json::from_value(read("error")).unwrap();
        assert_eq!(
            (e.ok, e.error.as_deref()),
            (false, Some("channel_not_found"))
        );
    }

    #[test]
    fn mentions_are_found_in_nested_blocks() {
        let b = serde_json::json!([{"type": "rich_text", "elements": [{"type": "rich_text_section", "elements": [{"type": "user", "user_id": "UBOT"}]}]}]);
        assert!(mentions_in_blocks(&b, "UBOT"));
        assert!(!mentions_in_blocks(&b, "UOTHER"));
    }
}
