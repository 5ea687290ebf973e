//! What a channel is sent for one outbound row: the text, a question's
//! buttons, files, an edit or a reaction, with text fallbacks where the
//! channel lacks a capability (SPEC §9.1).

use anyhow::Result;
use pinch_channels::{Address, Capabilities};
use pinch_proto::content::ChatOut;

/// What a channel is sent for one outbound row.
#[derive(Debug, PartialEq)]
pub(super) struct Rendered {
    pub(super) text: String,
    pub(super) question: Option<Question>,
    /// Outbox file names to attach (only for channels with `files`).
    pub(super) files: Vec<String>,
    pub(super) op: Op,
}

/// How the row is carried out.
#[derive(Debug, PartialEq)]
pub(super) enum Op {
    /// A new message.
    Send,
    /// Replace the text of the message with this seq (channels with `edit`).
    Edit { seq: i64 },
    /// React to the message with this seq (channels with `reactions`).
    React { seq: i64, emoji: String },
}

#[derive(Debug, PartialEq)]
pub(super) struct Question {
    pub(super) agent_question_id: String,
    pub(super) title: String,
    pub(super) labels: Vec<String>,
    pub(super) options_json: String,
    pub(super) timeout_s: u64,
}

/// Longest question a host keeps open (a day, like approvals).
const MAX_QUESTION_S: u64 = 24 * 3600;

/// Renders an outbound row for a channel with these capabilities (text
/// fallbacks where it lacks one, SPEC §9.1), or says why it cannot be
/// delivered. Outbound rows are untrusted input.
pub(super) fn render(
    kind: &str,
    content: &str,
    addr: &Address,
    caps: Capabilities,
) -> Result<Rendered, String> {
    if addr.channel_type == "agent" {
        return Err("only chat messages go between agents".into());
    }
    if addr.channel_type.is_empty() || addr.platform_id.is_empty() {
        return Err("the row has no address and the session has no default route".into());
    }
    let plain = |text: String| {
        Ok(Rendered {
            text,
            question: None,
            files: Vec::new(),
            op: Op::Send,
        })
    };
    match kind {
        "chat" => match ChatOut::parse(content)
            .map_err(|e| format!("content is not valid JSON: {e}"))?
        {
            ChatOut::Text { text, files } if files.is_empty() => plain(text),
            ChatOut::Text { text, files } if caps.files => Ok(Rendered {
                text,
                question: None,
                files,
                op: Op::Send,
            }),
            ChatOut::Text { text, files } => {
                plain(format!("{text}\n[files: {}]", files.join(", ")))
            }
            ChatOut::Edit { seq, text } if caps.edit => Ok(Rendered {
                text,
                question: None,
                files: Vec::new(),
                op: Op::Edit { seq },
            }),
            ChatOut::Edit { seq, text } => plain(format!("(correction to message {seq}) {text}")),
            ChatOut::Reaction { seq, emoji } if caps.reactions && !emoji.is_empty() => {
                Ok(Rendered {
                    text: String::new(),
                    question: None,
                    files: Vec::new(),
                    op: Op::React { seq, emoji },
                })
            }
            ChatOut::Reaction { .. } => Err("dropped: this channel has no reactions".into()),
            ChatOut::AskQuestion {
                question_id,
                title,
                question,
                options,
                timeout_s,
            } => {
                if options.is_empty() || options.len() > 10 {
                    return Err(format!(
                        "a question needs 1 to 10 options, this one has {}",
                        options.len()
                    ));
                }
                if question_id.is_empty() || question_id.len() > 64 {
                    return Err("a question needs a question_id of 1 to 64 bytes".into());
                }
                let options_json = serde_json::to_string(&options).map_err(|e| e.to_string())?;
                Ok(Rendered {
                    files: Vec::new(),
                    op: Op::Send,
                    text: if title.is_empty() {
                        question
                    } else {
                        format!("{title}\n{question}")
                    },
                    question: Some(Question {
                        agent_question_id: question_id,
                        title,
                        labels: options.iter().map(|o| o.label.clone()).collect(),
                        options_json,
                        timeout_s: timeout_s.clamp(1, MAX_QUESTION_S),
                    }),
                })
            }
            ChatOut::Card { fallback_text, .. } => plain(fallback_text),
            ChatOut::Unknown(v) => Err(format!(
                "unknown chat content shape: {}",
                truncate(&v.to_string(), 200)
            )),
        },
        "system" => Err("system actions from agents are not handled yet".into()),
        other => Err(format!("unknown outbound kind {other:?}")),
    }
}

fn truncate(s: &str, n: usize) -> &str {
    match s.char_indices().nth(n) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr() -> Address {
        Address {
            channel_type: "x".into(),
            platform_id: "p".into(),
            thread_id: None,
        }
    }
    #[test]
    fn render_uses_capabilities_and_falls_back_to_text() {
        let none = Capabilities::default();
        let all = Capabilities {
            files: true,
            edit: true,
            reactions: true,
            ..Default::default()
        };
        let file = r#"{"text":"see","files":["a.txt","b.png"]}"#;
        let r = render("chat", file, &addr(), all).unwrap();
        assert_eq!(
            (r.text.as_str(), r.files.clone(), &r.op),
            (
                "see",
                vec!["a.txt".to_owned(), "b.png".to_owned()],
                &Op::Send
            )
        );
        let r = render("chat", file, &addr(), none).unwrap();
        assert_eq!(
            (r.text.as_str(), r.files.len()),
            ("see\n[files: a.txt, b.png]", 0)
        );

        let edit = r#"{"operation":"edit","seq":7,"text":"fixed"}"#;
        assert_eq!(
            render("chat", edit, &addr(), all).unwrap().op,
            Op::Edit { seq: 7 }
        );
        let r = render("chat", edit, &addr(), none).unwrap();
        assert_eq!(
            (r.text.as_str(), &r.op),
            ("(correction to message 7) fixed", &Op::Send)
        );

        let react = r#"{"operation":"reaction","seq":4,"emoji":"👍"}"#;
        assert_eq!(
            render("chat", react, &addr(), all).unwrap().op,
            Op::React {
                seq: 4,
                emoji: "👍".into()
            }
        );
        assert!(render("chat", react, &addr(), none)
            .unwrap_err()
            .contains("no reactions"));
        // An empty emoji is dropped even where reactions exist.
        assert!(render(
            "chat",
            r#"{"operation":"reaction","seq":4,"emoji":""}"#,
            &addr(),
            all
        )
        .is_err());
    }
}
