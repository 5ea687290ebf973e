//! JSON content kinds (SPEC §3.2).
//!
//! A row's `kind` column picks the family; `content` holds the JSON. Parsing
//! never fails on a kind it does not know: it returns an `Unknown`/`Other`
//! variant carrying the raw JSON, so a newer host can hand an older runner
//! (or the reverse) something it does not understand and the receiver can
//! fail that one row with a reason instead of the whole loop. Only JSON that
//! does not parse at all is an error.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::ProtoError;

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Attachment {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mime: Option<String>,
    #[serde(default)]
    pub size: u64,
    /// Path as the agent sees it (under `/workspace/inbox`).
    pub path: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ReplyTo {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sender: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
}

/// Agent-to-agent loop accounting carried in the content (0 hops for humans).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct A2a {
    pub hops: u32,
    #[serde(default)]
    pub chain: Vec<String>,
}

/// `kind = chat` inbound.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ChatIn {
    #[serde(default)]
    pub text: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sender: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sender_id: Option<String>,
    #[serde(default)]
    pub is_mention: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform_message_id: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attachments: Vec<Attachment>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<ReplyTo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub a2a: Option<A2a>,
    /// The platform id of the sender's earlier message this one corrects
    /// (decision 0049).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub edit_of: Option<String>,
}

/// `kind = task` inbound.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TaskIn {
    pub prompt: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub script: Option<String>,
    /// IANA zone the recurrence runs in (the user's zone when scheduled).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
}

/// `kind = webhook` inbound.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct WebhookIn {
    pub source: String,
    #[serde(default)]
    pub event: String,
    #[serde(default)]
    pub payload: Value,
}

/// `kind = system` inbound, discriminated by `type`.
#[derive(Clone, Debug, PartialEq)]
pub enum SystemIn {
    QuestionResponse {
        question_id: String,
        value: String,
        user_id: Option<String>,
    },
    AdminResponse {
        request_id: String,
        ok: bool,
        body: Value,
    },
    ActionResult {
        action: String,
        status: String,
        result: Value,
    },
    Note {
        text: String,
    },
    /// A system type this version does not know, kept whole.
    Other(Value),
}

impl SystemIn {
    /// Replies that belong to a waiting tool, never to a batch.
    pub fn is_tool_reply(&self) -> bool {
        matches!(
            self,
            SystemIn::QuestionResponse { .. } | SystemIn::AdminResponse { .. }
        )
    }

    fn from_value(v: Value) -> SystemIn {
        let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_owned);
        match v.get("type").and_then(Value::as_str) {
            Some("question_response") => SystemIn::QuestionResponse {
                question_id: s("question_id").unwrap_or_default(),
                value: s("value").unwrap_or_default(),
                user_id: s("user_id"),
            },
            Some("admin_response") => SystemIn::AdminResponse {
                request_id: s("request_id").unwrap_or_default(),
                ok: v.get("ok").and_then(Value::as_bool).unwrap_or(false),
                body: v
                    .get("data")
                    .or_else(|| v.get("error"))
                    .cloned()
                    .unwrap_or(Value::Null),
            },
            Some("action_result") => SystemIn::ActionResult {
                action: s("action").unwrap_or_default(),
                status: s("status").unwrap_or_default(),
                result: v.get("result").cloned().unwrap_or(Value::Null),
            },
            Some("note") => SystemIn::Note {
                text: s("text").unwrap_or_default(),
            },
            _ => SystemIn::Other(v),
        }
    }

    pub fn to_value(&self) -> Value {
        use serde_json::json;
        match self {
            SystemIn::QuestionResponse {
                question_id,
                value,
                user_id,
            } => {
                json!({"type": "question_response", "question_id": question_id, "value": value, "user_id": user_id})
            }
            SystemIn::AdminResponse {
                request_id,
                ok,
                body,
            } => {
                let key = if *ok { "data" } else { "error" };
                json!({"type": "admin_response", "request_id": request_id, "ok": ok, key: body})
            }
            SystemIn::ActionResult {
                action,
                status,
                result,
            } => {
                json!({"type": "action_result", "action": action, "status": status, "result": result})
            }
            SystemIn::Note { text } => json!({"type": "note", "text": text}),
            SystemIn::Other(v) => v.clone(),
        }
    }
}

/// Inbound content of any kind.
#[derive(Clone, Debug, PartialEq)]
pub enum InContent {
    Chat(ChatIn),
    Task(TaskIn),
    Webhook(WebhookIn),
    System(SystemIn),
    /// A `kind` this version does not know, kept with its raw JSON.
    Unknown {
        kind: String,
        raw: Value,
    },
}

impl InContent {
    /// Parses a row's `kind` and `content`. Invalid JSON is an error; an
    /// unknown kind is not.
    pub fn parse(kind: &str, content: &str) -> Result<InContent, ProtoError> {
        let v: Value = serde_json::from_str(content)?;
        Ok(match kind {
            "chat" => InContent::Chat(serde_json::from_value(v)?),
            "task" => InContent::Task(serde_json::from_value(v)?),
            "webhook" => InContent::Webhook(serde_json::from_value(v)?),
            "system" => InContent::System(SystemIn::from_value(v)),
            other => InContent::Unknown {
                kind: other.to_owned(),
                raw: v,
            },
        })
    }

    pub fn kind(&self) -> &str {
        match self {
            InContent::Chat(_) => "chat",
            InContent::Task(_) => "task",
            InContent::Webhook(_) => "webhook",
            InContent::System(_) => "system",
            InContent::Unknown { kind, .. } => kind,
        }
    }

    /// The JSON for the `content` column.
    pub fn to_json(&self) -> String {
        let v = match self {
            InContent::Chat(c) => serde_json::to_value(c),
            InContent::Task(c) => serde_json::to_value(c),
            InContent::Webhook(c) => serde_json::to_value(c),
            InContent::System(s) => Ok(s.to_value()),
            InContent::Unknown { raw, .. } => Ok(raw.clone()),
        };
        v.expect("content types serialise").to_string()
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct OptionItem {
    pub label: String,
    pub value: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selected_label: Option<String>,
}

/// Outbound `chat` content, discriminated by `operation` or `type`.
#[derive(Clone, Debug, PartialEq)]
pub enum ChatOut {
    Text {
        text: String,
        files: Vec<String>,
    },
    Edit {
        seq: i64,
        text: String,
    },
    Reaction {
        seq: i64,
        emoji: String,
    },
    AskQuestion {
        question_id: String,
        title: String,
        question: String,
        options: Vec<OptionItem>,
        timeout_s: u64,
    },
    Card {
        card: Value,
        fallback_text: String,
    },
    /// A shape this version does not know, kept whole.
    Unknown(Value),
}

impl ChatOut {
    pub fn parse(content: &str) -> Result<ChatOut, ProtoError> {
        let v: Value = serde_json::from_str(content)?;
        Ok(Self::from_value(v))
    }

    fn from_value(v: Value) -> ChatOut {
        let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_owned);
        if let Some(op) = v.get("operation").and_then(Value::as_str) {
            let seq = v.get("seq").and_then(Value::as_i64);
            return match (op, seq) {
                ("edit", Some(seq)) => ChatOut::Edit {
                    seq,
                    text: s("text").unwrap_or_default(),
                },
                ("reaction", Some(seq)) => ChatOut::Reaction {
                    seq,
                    emoji: s("emoji").unwrap_or_default(),
                },
                _ => ChatOut::Unknown(v),
            };
        }
        match v.get("type").and_then(Value::as_str) {
            Some("ask_question") => ChatOut::AskQuestion {
                question_id: s("question_id").unwrap_or_default(),
                title: s("title").unwrap_or_default(),
                question: s("question").unwrap_or_default(),
                options: v
                    .get("options")
                    .cloned()
                    .and_then(|o| serde_json::from_value(o).ok())
                    .unwrap_or_default(),
                timeout_s: v.get("timeout_s").and_then(Value::as_u64).unwrap_or(300),
            },
            Some("card") => ChatOut::Card {
                card: v.get("card").cloned().unwrap_or(Value::Null),
                fallback_text: s("fallback_text").unwrap_or_default(),
            },
            Some(_) => ChatOut::Unknown(v),
            None => match v.get("text").and_then(Value::as_str) {
                Some(text) => ChatOut::Text {
                    text: text.to_owned(),
                    files: v
                        .get("files")
                        .and_then(Value::as_array)
                        .map(|a| {
                            a.iter()
                                .filter_map(|f| f.as_str().map(str::to_owned))
                                .collect()
                        })
                        .unwrap_or_default(),
                },
                None => ChatOut::Unknown(v),
            },
        }
    }

    pub fn to_json(&self) -> String {
        use serde_json::json;
        let v = match self {
            ChatOut::Text { text, files } if files.is_empty() => json!({"text": text}),
            ChatOut::Text { text, files } => json!({"text": text, "files": files}),
            ChatOut::Edit { seq, text } => json!({"operation": "edit", "seq": seq, "text": text}),
            ChatOut::Reaction { seq, emoji } => {
                json!({"operation": "reaction", "seq": seq, "emoji": emoji})
            }
            ChatOut::AskQuestion {
                question_id,
                title,
                question,
                options,
                timeout_s,
            } => json!({
                "type": "ask_question", "question_id": question_id, "title": title,
                "question": question, "options": options, "timeout_s": timeout_s}),
            ChatOut::Card {
                card,
                fallback_text,
            } => json!({"type": "card", "card": card, "fallback_text": fallback_text}),
            ChatOut::Unknown(v) => v.clone(),
        };
        v.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn chat_round_trip() {
        let c = InContent::Chat(ChatIn {
            text: "hi".into(),
            sender: Some("Alice".into()),
            attachments: vec![Attachment {
                name: "a.png".into(),
                mime: None,
                size: 3,
                path: "/workspace/inbox/2/a.png".into(),
            }],
            ..Default::default()
        });
        let back = InContent::parse("chat", &c.to_json()).unwrap();
        assert_eq!(back, c);
    }

    #[test]
    fn unknown_kinds_are_preserved_not_failed() {
        let raw = r#"{"foo": [1, 2], "bar": "x"}"#;
        let c = InContent::parse("hologram", raw).unwrap();
        assert_eq!(
            c,
            InContent::Unknown {
                kind: "hologram".into(),
                raw: serde_json::from_str(raw).unwrap()
            }
        );
        assert_eq!(c.kind(), "hologram");
        assert_eq!(
            serde_json::from_str::<Value>(&c.to_json()).unwrap(),
            serde_json::from_str::<Value>(raw).unwrap()
        );

        let s = InContent::parse("system", r#"{"type": "teleport", "where": "mars"}"#).unwrap();
        assert!(matches!(s, InContent::System(SystemIn::Other(_))));
        let o = ChatOut::parse(r#"{"type": "hologram", "x": 1}"#).unwrap();
        assert!(matches!(o, ChatOut::Unknown(_)));
    }

    #[test]
    fn invalid_json_is_an_error() {
        assert!(InContent::parse("chat", "{not json").is_err());
        assert!(ChatOut::parse("").is_err());
    }

    #[test]
    fn system_kinds() {
        let q = InContent::parse(
            "system",
            r#"{"type":"question_response","question_id":"q1","value":"yes"}"#,
        )
        .unwrap();
        match &q {
            InContent::System(s) => assert!(s.is_tool_reply()),
            _ => panic!(),
        }
        let n = InContent::parse(
            "system",
            &InContent::System(SystemIn::Note { text: "n".into() }).to_json(),
        )
        .unwrap();
        assert_eq!(n, InContent::System(SystemIn::Note { text: "n".into() }));
    }

    #[test]
    fn out_shapes() {
        let cases = [
            ChatOut::Text {
                text: "hi".into(),
                files: vec![],
            },
            ChatOut::Text {
                text: "see".into(),
                files: vec!["a.txt".into()],
            },
            ChatOut::Edit {
                seq: 5,
                text: "fixed".into(),
            },
            ChatOut::Reaction {
                seq: 4,
                emoji: "👍".into(),
            },
            ChatOut::Card {
                card: json!({"title": "t"}),
                fallback_text: "t".into(),
            },
        ];
        for c in cases {
            assert_eq!(ChatOut::parse(&c.to_json()).unwrap(), c);
        }
    }
}
