//! The prompt format (SPEC §5.3): a batch of rows as XML-ish text.

use jiff::{tz::TimeZone, Timestamp};
use pinch_proto::content::{InContent, SystemIn};
use pinch_proto::rows::{Destination, InboundRow};

/// Escapes `& < >`, and in attributes also `" '`.
fn escape(s: &str, attr: bool) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' if attr => o.push_str("&quot;"),
            '\'' if attr => o.push_str("&apos;"),
            c => o.push(c),
        }
    }
    o
}

pub fn escape_attr(s: &str) -> String {
    escape(s, true)
}

pub fn escape_text(s: &str) -> String {
    escape(s, false)
}

/// "Nov 27, 2026, 9:14 PM" in `tz`.
pub fn human_time(ts: Timestamp, tz: &TimeZone) -> String {
    ts.to_zoned_datetime(tz.clone())
        .strftime("%b %-d, %Y, %-I:%M %p")
        .to_string()
}

/// The destination name a row came from, else `unknown:<channel>:<platform>`.
pub fn origin_name(row: &InboundRow, dests: &[Destination]) -> String {
    let ct = row.channel_type.as_deref().unwrap_or("");
    let pid = row.platform_id.as_deref().unwrap_or("");
    let found = dests.iter().find(|d| {
        if ct == "agent" {
            d.kind == "agent" && d.agent_group_id.as_deref() == Some(pid)
        } else {
            d.kind == "channel"
                && d.channel_type.as_deref() == Some(ct)
                && d.platform_id.as_deref() == Some(pid)
        }
    });
    match found {
        Some(d) => d.name.clone(),
        None => format!("unknown:{ct}:{pid}"),
    }
}

/// One parsed row of a batch.
pub struct Item<'a> {
    pub row: &'a InboundRow,
    pub content: &'a InContent,
}

/// Formats a batch. `now` and `tz` render the context line.
pub fn format_batch(
    items: &[Item<'_>],
    dests: &[Destination],
    tz_name: &str,
    tz: &TimeZone,
    now: Timestamp,
) -> String {
    let mut out = format!(
        "<context timezone=\"{}\" now=\"{}\"/>\n",
        escape_attr(tz_name),
        escape_attr(&human_time(now, tz))
    );
    let many = items.len() > 1;
    if many {
        out.push_str("<messages>\n");
    }
    for it in items {
        out.push_str(&format_item(it, dests, tz));
        out.push('\n');
    }
    if many {
        out.push_str("</messages>\n");
    }
    out
}

fn format_item(it: &Item<'_>, dests: &[Destination], tz: &TimeZone) -> String {
    let row = it.row;
    let from = escape_attr(&origin_name(row, dests));
    let time = pinch_proto::time::parse(&row.timestamp)
        .map(|t| escape_attr(&human_time(t, tz)))
        .unwrap_or_else(|_| escape_attr(&row.timestamp));
    let id = row.seq;
    match it.content {
        InContent::Chat(c) => {
            let mut attrs = format!("id=\"{id}\" from=\"{from}\"");
            if let Some(s) = c.sender.as_deref().or(c.sender_id.as_deref()) {
                attrs.push_str(&format!(" sender=\"{}\"", escape_attr(s)));
            }
            attrs.push_str(&format!(" time=\"{time}\""));
            if c.edit_of.is_some() {
                attrs.push_str(" kind=\"edit\"");
            }
            let mut body = String::new();
            if let Some(r) = &c.reply_to {
                let who = r.sender.as_deref().unwrap_or("unknown");
                body.push_str(&format!(
                    "<quoted_message from=\"{}\">{}</quoted_message>\n",
                    escape_attr(who),
                    escape_text(r.text.as_deref().unwrap_or(""))
                ));
            }
            body.push_str(&escape_text(&c.text));
            for a in &c.attachments {
                body.push_str(&format!("\n[{}: {} — saved to {}]", attachment_kind(a.mime.as_deref()), escape_text(&a.name), escape_text(&a.path)));
            }
            format!("<message {attrs}>\n{body}\n</message>")
        }
        InContent::Task(t) => {
            format!("<task id=\"{id}\" from=\"{from}\" time=\"{time}\">\nInstructions: {}\n</task>", escape_text(&t.prompt))
        }
        InContent::Webhook(w) => format!(
            "<webhook id=\"{id}\" from=\"{from}\" source=\"{}\" event=\"{}\">{}</webhook>",
            escape_attr(&w.source),
            escape_attr(&w.event),
            escape_text(&w.payload.to_string())
        ),
        InContent::System(SystemIn::ActionResult { action, status, result }) => format!(
            "<system_response id=\"{id}\" action=\"{}\" status=\"{}\">{}</system_response>",
            escape_attr(action),
            escape_attr(status),
            escape_text(&result.to_string())
        ),
        // An answer no tool waits for any more (SPEC §7.3).
        InContent::System(SystemIn::QuestionResponse { question_id, value, .. }) => format!(
            "<system_response id=\"{id}\" action=\"question\" status=\"answered\">{}</system_response>",
            escape_text(&serde_json::json!({"question_id": question_id, "value": value}).to_string())
        ),
        InContent::System(SystemIn::Note { text }) => {
            format!("<system_response id=\"{id}\" action=\"note\">{}</system_response>", escape_text(text))
        }
        InContent::System(other) => format!(
            "<system_response id=\"{id}\">{}</system_response>",
            escape_text(&other.to_value().to_string())
        ),
        InContent::Unknown { kind, .. } => format!("<unknown id=\"{id}\" kind=\"{}\"/>", escape_attr(kind)),
    }
}

fn attachment_kind(mime: Option<&str>) -> &'static str {
    match mime.and_then(|m| m.split('/').next()) {
        Some("image") => "image",
        Some("audio") => "audio",
        Some("video") => "video",
        _ => "file",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pinch_proto::content::{ChatIn, ReplyTo};

    fn row(seq: i64, ts: &str) -> InboundRow {
        InboundRow {
            id: format!("m{seq}"),
            seq,
            kind: "chat".into(),
            timestamp: ts.into(),
            status: "pending".into(),
            process_after: None,
            recurrence: None,
            series_id: None,
            tries: 0,
            trigger: true,
            platform_id: Some("local".into()),
            channel_type: Some("cli".into()),
            thread_id: None,
            content: String::new(),
            source_session_id: None,
            on_wake: false,
        }
    }

    #[test]
    fn golden_batch() {
        let dests = vec![Destination {
            name: "terminal".into(),
            display_name: None,
            kind: "channel".into(),
            channel_type: Some("cli".into()),
            platform_id: Some("local".into()),
            agent_group_id: None,
        }];
        let r1 = row(12, "2026-11-27T20:13:00.000Z");
        let mut r2 = row(14, "2026-11-27T20:14:00.000Z");
        r2.platform_id = Some("elsewhere".into());
        let c1 = InContent::Chat(ChatIn {
            text: "a < b & \"c\"".into(),
            sender: Some("Al\"ice".into()),
            reply_to: Some(ReplyTo {
                id: "8".into(),
                sender: Some("Bob".into()),
                text: Some("quoted".into()),
            }),
            ..Default::default()
        });
        let c2 = InContent::Chat(ChatIn {
            text: "second".into(),
            ..Default::default()
        });
        let tz = TimeZone::get("Europe/Madrid").unwrap();
        let now: Timestamp = "2026-11-27T20:14:30Z".parse().unwrap();
        let got = format_batch(
            &[
                Item {
                    row: &r1,
                    content: &c1,
                },
                Item {
                    row: &r2,
                    content: &c2,
                },
            ],
            &dests,
            "Europe/Madrid",
            &tz,
            now,
        );
        let want = "<context timezone=\"Europe/Madrid\" now=\"Nov 27, 2026, 9:14 PM\"/>
<messages>
<message id=\"12\" from=\"terminal\" sender=\"Al&quot;ice\" time=\"Nov 27, 2026, 9:13 PM\">
<quoted_message from=\"Bob\">quoted</quoted_message>
a &lt; b &amp; \"c\"
</message>
<message id=\"14\" from=\"unknown:cli:elsewhere\" time=\"Nov 27, 2026, 9:14 PM\">
second
</message>
</messages>
";
        assert_eq!(got, want);
    }

    #[test]
    fn a_late_answer_is_a_system_response() {
        let mut r = row(7, "2026-11-27T20:13:00.000Z");
        r.kind = "system".into();
        r.trigger = false;
        let c = InContent::System(SystemIn::QuestionResponse {
            question_id: "ab12".into(),
            value: "<red>".into(),
            user_id: None,
        });
        let got = format_batch(
            &[Item {
                row: &r,
                content: &c,
            }],
            &[],
            "UTC",
            &TimeZone::UTC,
            "2026-11-27T20:14:00Z".parse().unwrap(),
        );
        assert!(
            got.contains("<system_response id=\"7\" action=\"question\" status=\"answered\">{\"question_id\":\"ab12\",\"value\":\"&lt;red&gt;\"}</system_response>"),
            "{got}"
        );
    }

    #[test]
    fn single_item_stands_alone() {
        let r = row(2, "2026-11-27T20:13:00.000Z");
        let c = InContent::Chat(ChatIn {
            text: "hi".into(),
            ..Default::default()
        });
        let got = format_batch(
            &[Item {
                row: &r,
                content: &c,
            }],
            &[],
            "UTC",
            &TimeZone::UTC,
            "2026-11-27T20:14:00Z".parse().unwrap(),
        );
        assert!(!got.contains("<messages>"));
        assert!(got.contains("<message id=\"2\" from=\"unknown:cli:local\" time=\"Nov 27, 2026, 8:13 PM\">\nhi\n</message>"));
    }

    #[test]
    fn a_correction_is_marked_as_an_edit() {
        let r = row(3, "2026-11-27T20:13:00.000Z");
        let c = InContent::Chat(ChatIn {
            text: "meet at 6, not 5".into(),
            edit_of: Some("web-ann-1".into()),
            ..Default::default()
        });
        let got = format_batch(
            &[Item {
                row: &r,
                content: &c,
            }],
            &[],
            "UTC",
            &TimeZone::UTC,
            "2026-11-27T20:14:00Z".parse().unwrap(),
        );
        assert!(
            got.contains(
                "time=\"Nov 27, 2026, 8:13 PM\" kind=\"edit\">\nmeet at 6, not 5\n</message>"
            ),
            "{got}"
        );
    }
}
