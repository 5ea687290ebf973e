//! signal-cli's `receive` notification (signal-cli-jsonrpc(5); the
//! envelope's fields as signal-cli's JSON output names them) read into an
//! [`InboundEvent`]. Pure: no I/O; the attachments are read later from
//! signal-cli's attachments folder by their checked ids.
//!
//! Ids: a Signal message is known by its author and its sent timestamp
//! (reactions, quotes, receipts and edits all name a message that way), so
//! the platform message id is `<author>:<timestamp>`; the author is the
//! sender's ACI (UUID) when signal-cli gives it, its number otherwise. A
//! redelivered envelope has the same id, which the host stores once.

use serde::Deserialize;
use serde_json::Value;

use crate::platform::lenient;
use crate::InboundEvent;

/// The longest text kept from one message (characters); Signal's own
/// limit for a long message is far below.
pub const MAX_TEXT: usize = 64_000;
/// Attachments taken from one message.
pub const MAX_FILES: usize = 16;
/// The prefix of a group conversation's platform id.
pub const GROUP: &str = "group:";

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Envelope {
    #[serde(default, deserialize_with = "lenient")]
    pub source: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    pub source_number: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    pub source_uuid: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    pub source_name: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    pub timestamp: Option<u64>,
    #[serde(default, deserialize_with = "lenient")]
    pub data_message: Option<DataMessage>,
    #[serde(default, deserialize_with = "lenient")]
    pub edit_message: Option<EditMessage>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DataMessage {
    #[serde(default, deserialize_with = "lenient")]
    pub timestamp: Option<u64>,
    #[serde(default, deserialize_with = "lenient")]
    pub message: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    pub attachments: Option<Vec<Value>>,
    #[serde(default, deserialize_with = "lenient")]
    pub group_info: Option<GroupInfo>,
    #[serde(default, deserialize_with = "lenient")]
    pub quote: Option<Quote>,
    #[serde(default, deserialize_with = "lenient")]
    pub mentions: Option<Vec<Value>>,
    #[serde(default, deserialize_with = "lenient")]
    pub reaction: Option<Value>,
    #[serde(default, deserialize_with = "lenient")]
    pub remote_delete: Option<Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EditMessage {
    #[serde(default, deserialize_with = "lenient")]
    pub target_sent_timestamp: Option<u64>,
    #[serde(default, deserialize_with = "lenient")]
    pub data_message: Option<DataMessage>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GroupInfo {
    #[serde(default, deserialize_with = "lenient")]
    pub group_id: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    pub group_name: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Quote {
    #[serde(default, deserialize_with = "lenient")]
    pub author_number: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    pub author: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    pub text: Option<String>,
}

/// An attachment as signal-cli announced it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FileRef {
    /// signal-cli's id: the file's name in its attachments folder
    /// (checked by [`safe_id`] before any use).
    pub id: String,
    pub name: String,
    pub mime: Option<String>,
    pub size: u64,
}

/// A message for the host, with what the adapter needs around it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Incoming {
    /// Without attachment bytes (read by the adapter).
    pub event: InboundEvent,
    pub files: Vec<FileRef>,
    /// Whom a read receipt goes to and for which timestamp.
    pub author: String,
    pub timestamp: u64,
}

/// The `receive` notification's envelope and the account it is for, in
/// either shape signal-cli sends: `{"envelope", "account"}` (receiving
/// on start or on connection) or `{"subscription", "result": {…}}`
/// (`--receive-mode=manual` after `subscribeReceive`).
pub fn unwrap(params: &Value) -> Option<(&Value, Option<&str>)> {
    let inner = match params.get("result") {
        Some(r) if r.is_object() => r,
        _ => params,
    };
    let env = inner.get("envelope")?;
    Some((env, inner.get("account").and_then(Value::as_str)))
}

/// An attachment id safe to name a file in signal-cli's folder: letters,
/// digits, `-`, `_` and dots (not first), at most 128 bytes. Anything else
/// (a `/`, `..`, a NUL) is refused: the id comes off the wire.
pub fn safe_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && !id.starts_with('.')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

fn clip(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => s[..i].to_owned(),
        None => s.to_owned(),
    }
}

/// Reads an envelope for `account` (its number). `None`: nothing for the
/// agent (typing, receipts, reactions, sync messages of the account's own
/// phone, deletions, empty messages) — said in `why` for the log.
pub fn read(env: &Value, account: &str) -> Result<Incoming, &'static str> {
    let e: Envelope =
        serde_json::from_value(env.clone()).map_err(|_| "not an envelope signal-cli sends")?;
    let author = e
        .source_uuid
        .clone()
        .or_else(|| e.source_number.clone())
        .or_else(|| e.source.clone())
        .filter(|a| !a.is_empty() && a.len() <= 100)
        .ok_or("no sender")?;
    if e.source_number.as_deref() == Some(account) {
        return Err("sent by this account (another of its devices)");
    }
    let (data, edit_of) = match (e.data_message, e.edit_message) {
        (Some(d), _) => (d, None),
        (
            None,
            Some(EditMessage {
                target_sent_timestamp: Some(t),
                data_message: Some(d),
            }),
        ) => (d, Some(format!("{author}:{t}"))),
        _ => return Err("no message (typing, a receipt, a sync or call message)"),
    };
    if data.reaction.is_some() {
        return Err("a reaction (not passed to the agent)");
    }
    if data.remote_delete.is_some() {
        return Err("a deletion");
    }
    let timestamp = data.timestamp.or(e.timestamp).ok_or("no timestamp")?;
    let files: Vec<FileRef> = data
        .attachments
        .unwrap_or_default()
        .iter()
        .take(MAX_FILES)
        .filter_map(|a| {
            let id = a.get("id")?.as_str()?.to_owned();
            let name = a
                .get("filename")
                .and_then(Value::as_str)
                .map(|n| n.rsplit(['/', '\\']).next().unwrap_or(n))
                .filter(|n| !n.is_empty() && !n.starts_with('.'))
                .map(|n| clip(n, 120))
                .unwrap_or_else(|| {
                    if safe_id(&id) {
                        id.clone()
                    } else {
                        "attachment".into()
                    }
                });
            Some(FileRef {
                name,
                mime: a
                    .get("contentType")
                    .and_then(Value::as_str)
                    .map(|m| clip(m, 100)),
                size: a.get("size").and_then(Value::as_u64).unwrap_or(0),
                id,
            })
        })
        .collect();
    let mut text = clip(data.message.as_deref().unwrap_or(""), MAX_TEXT);
    if text.trim().is_empty() && files.is_empty() {
        return Err("empty (a sticker, a contact or a group update)");
    }
    let group = data
        .group_info
        .as_ref()
        .and_then(|g| g.group_id.clone())
        .filter(|g| !g.is_empty() && g.len() <= 100);
    let quote_is_ours = data.quote.as_ref().is_some_and(|q| {
        q.author_number.as_deref() == Some(account) || q.author.as_deref() == Some(account)
    });
    if let Some(q) = data.quote.as_ref().and_then(|q| q.text.as_deref()) {
        if !q.trim().is_empty() {
            text = format!("[in reply to: {}]\n{text}", clip(q, 200));
        }
    }
    let mentioned = data
        .mentions
        .unwrap_or_default()
        .iter()
        .any(|m| m.get("number").and_then(Value::as_str) == Some(account));
    let is_group = group.is_some();
    let event = InboundEvent {
        channel_type: super::CHANNEL_TYPE.into(),
        platform_id: match &group {
            Some(g) => format!("{GROUP}{g}"),
            None => author.clone(),
        },
        thread_id: None,
        message_id: format!("{author}:{timestamp}"),
        sender_id: author.clone(),
        sender_name: e
            .source_name
            .filter(|n| !n.trim().is_empty())
            .map(|n| clip(&n, 100))
            .or(e.source_number),
        text,
        is_mention: !is_group || mentioned || quote_is_ours,
        is_group,
        attachments: Vec::new(),
        webhook: None,
        edit_of,
    };
    Ok(Incoming {
        event,
        files,
        author,
        timestamp,
    })
}

/// Splits a platform message id `<author>:<timestamp>` (the author may be
/// a UUID or a number; the timestamp is after the last colon).
pub fn split_id(id: &str) -> Option<(&str, u64)> {
    let (a, t) = id.rsplit_once(':')?;
    Some((a, t.parse().ok()?)).filter(|(a, _)| !a.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const ME: &str = "+15550001111";

    fn dm(extra: Value) -> Value {
        let mut d = json!({"timestamp": 1700000000123u64, "message": "hello", "expiresInSeconds": 0,
            "viewOnce": false, "mentions": [], "attachments": [], "contacts": []});
        for (k, v) in extra.as_object().unwrap() {
            d[k] = v.clone();
        }
        json!({"source": "+15550002222", "sourceNumber": "+15550002222",
            "sourceUuid": "a1b2c3d4-0000-4000-8000-000000000001", "sourceName": "Ann",
            "sourceDevice": 1, "timestamp": 1700000000123u64, "dataMessage": d})
    }

    #[test]
    fn a_direct_message_is_a_mention_keyed_by_author_and_timestamp() {
        let i = read(&dm(json!({})), ME).unwrap();
        assert_eq!(i.event.platform_id, "a1b2c3d4-0000-4000-8000-000000000001");
        assert_eq!(
            i.event.message_id,
            "a1b2c3d4-0000-4000-8000-000000000001:1700000000123"
        );
        assert_eq!(i.event.sender_name.as_deref(), Some("Ann"));
        assert!(i.event.is_mention && !i.event.is_group);
        assert_eq!(i.timestamp, 1700000000123);
        assert_eq!(
            split_id(&i.event.message_id),
            Some(("a1b2c3d4-0000-4000-8000-000000000001", 1700000000123))
        );
        assert_eq!(split_id("+4917:12"), Some(("+4917", 12)));
        assert_eq!(split_id("nope"), None);
    }

    #[test]
    fn a_group_message_mentions_pinch_only_when_it_says_so() {
        let g = json!({"groupInfo": {"groupId": "Pmpi+EfPWmsx/iomLe9Nx2XF9HOE483p6iKiFj65iMwI=", "type": "DELIVER"}});
        let i = read(&dm(g.clone()), ME).unwrap();
        assert_eq!(
            i.event.platform_id,
            "group:Pmpi+EfPWmsx/iomLe9Nx2XF9HOE483p6iKiFj65iMwI="
        );
        assert!(i.event.is_group && !i.event.is_mention);
        let mut m = g.clone();
        m["mentions"] = json!([{"name": ME, "number": ME, "uuid": "u", "start": 0, "length": 1}]);
        assert!(read(&dm(m), ME).unwrap().event.is_mention);
        let mut q = g;
        q["quote"] = json!({"id": 5, "author": ME, "authorNumber": ME, "text": "earlier answer"});
        let i = read(&dm(q), ME).unwrap();
        assert!(i.event.is_mention, "a reply to pinch");
        assert!(i
            .event
            .text
            .starts_with("[in reply to: earlier answer]\nhello"));
    }

    #[test]
    fn edits_files_and_what_is_not_for_the_agent() {
        let env = json!({"sourceNumber": "+1555", "timestamp": 9, "editMessage": {"targetSentTimestamp": 5,
            "dataMessage": {"timestamp": 9, "message": "fixed"}}});
        let i = read(&env, ME).unwrap();
        assert_eq!(i.event.edit_of.as_deref(), Some("+1555:5"));
        assert_eq!(i.event.message_id, "+1555:9");
        let f = read(
            &dm(json!({"message": null, "attachments": [
                {"contentType": "text/plain", "filename": "../../etc/passwd", "id": "Mnq2QxGl9FZrkCbmLEsC.txt", "size": 12},
                {"contentType": "image/png", "id": "../x", "size": 3}]})),
            ME,
        )
        .unwrap();
        assert_eq!(f.files[0].name, "passwd");
        assert!(safe_id(&f.files[0].id) && !safe_id(&f.files[1].id));
        for bad in ["", ".", "..", ".hidden", "a/b", "a\0b", &"x".repeat(129)] {
            assert!(!safe_id(bad), "{bad:?}");
        }
        for (env, why) in [
            (
                json!({"sourceNumber": "+1", "timestamp": 1, "typingMessage": {"action": "STARTED", "timestamp": 1}}),
                "no message",
            ),
            (
                json!({"sourceNumber": "+1", "timestamp": 1, "receiptMessage": {"when": 1, "isRead": true, "timestamps": [1]}}),
                "no message",
            ),
            (
                dm(
                    json!({"message": null, "reaction": {"emoji": "👍", "targetAuthor": ME, "targetSentTimestamp": 1, "isRemove": false}}),
                ),
                "a reaction",
            ),
            (dm(json!({"message": "  "})), "empty"),
            (
                json!({"sourceNumber": ME, "timestamp": 1, "dataMessage": {"timestamp": 1, "message": "x"}}),
                "sent by this account",
            ),
            (
                json!({"timestamp": 1, "dataMessage": {"timestamp": 1, "message": "x"}}),
                "no sender",
            ),
        ] {
            assert!(read(&env, ME).unwrap_err().starts_with(why), "{env}");
        }
    }

    #[test]
    fn both_notification_shapes_unwrap() {
        let e = json!({"sourceNumber": "+1"});
        let on_start = json!({"envelope": e, "account": ME});
        let manual = json!({"subscription": 0, "result": {"envelope": e, "account": ME}});
        assert_eq!(unwrap(&on_start), Some((&e, Some(ME))));
        assert_eq!(unwrap(&manual), Some((&e, Some(ME))));
        assert_eq!(unwrap(&json!({"x": 1})), None);
    }

    proptest::proptest! {
        #[test]
        fn any_envelope_reads_without_panic(s in ".{0,300}", t in proptest::num::u64::ANY) {
            let env = json!({"sourceNumber": s, "sourceUuid": s, "timestamp": t,
                "dataMessage": {"timestamp": t, "message": s, "attachments": [{"id": s, "filename": s}],
                "groupInfo": {"groupId": s}, "quote": {"text": s}}});
            if let Ok(i) = read(&env, ME) {
                proptest::prop_assert!(i.event.text.chars().count() <= MAX_TEXT + 220);
                for f in &i.files {
                    proptest::prop_assert!(!f.name.contains('/'));
                }
            }
            let _ = split_id(&s);
            let _ = safe_id(&s);
        }
    }
}
