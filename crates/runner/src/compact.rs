//! Compaction (SPEC §5.5, lesson 48; decision 0011).
//!
//! When the next request would fill [`THRESHOLD_PERCENT`] of the provider's
//! context window, or on `/compact`, the older half of the live
//! conversation is summarised by the provider (one call, no tools), written
//! out as a readable file `conversations/<continuation>-<n>.md` in the
//! workspace, and replaced by the summary: a `conversation` row with role
//! `summary` whose `keep_from` says where the still-sent rows begin. A
//! respawned runner reads the same row, so it continues from the summary.
//! `MEMORY.md` stays in the system prompt throughout. Compaction acks
//! nothing; the turn that triggered it goes on with the shorter history.

use pinch_proto::open::write_tx;
use pinch_proto::{time, ProtoError};
use pinch_providers::TurnRequest;

use crate::history::{self, Live, Row, Summary};
use crate::{tools, Runner};

/// Compact when the estimated request reaches this share of the window.
pub const THRESHOLD_PERCENT: u64 = 80;

/// The request sent (as the prompt) to get a summary. Scripted test
/// providers match on its first words.
pub const SUMMARY_REQUEST: &str = "Summarise the conversation so far for your own later use. Keep what you will need to \
go on: who is involved, what was asked and decided, facts learned, files made, open tasks and promises. Plain text, \
at most 300 words, no preamble.";

/// What a compaction did.
#[derive(Clone, Debug, PartialEq)]
pub struct Compacted {
    /// User/assistant messages summarised.
    pub messages: usize,
    /// The archive, relative to the workspace.
    pub archive: String,
}

/// Tokens the request would hold: characters / 4 of everything sent, or,
/// if larger, what the provider reported for its newest call plus the new
/// prompt (a report includes that turn's tool steps, so it errs early).
pub fn estimate_tokens(
    system: &str,
    history: &[(String, String)],
    prompt: &str,
    reported_last_input: u64,
) -> u64 {
    let chars = system.len() + prompt.len() + history.iter().map(|(_, t)| t.len()).sum::<usize>();
    let by_chars = chars as u64 / 4;
    let by_report = if reported_last_input > 0 {
        reported_last_input + prompt.len() as u64 / 4
    } else {
        0
    };
    by_chars.max(by_report)
}

pub fn over_threshold(tokens: u64, window: u32) -> bool {
    window > 0 && tokens * 100 >= u64::from(window) * THRESHOLD_PERCENT
}

/// Where the older half ends: the index (into `msgs`) of the first message
/// kept, always a `user` message or `msgs.len()` (everything summarised).
fn split_point(msgs: &[&Row]) -> usize {
    let mut i = msgs.len() / 2;
    while i < msgs.len() && msgs[i].role != "user" {
        i += 1;
    }
    i
}

/// A readable Markdown rendering of archived rows.
fn render_archive(continuation: &str, n: usize, summary: &str, rows: &[Row]) -> String {
    let mut s = format!(
        "# Conversation {continuation}, part {n}\n\nArchived {} when the conversation was compacted. It went on from this summary:\n\n",
        time::now()
    );
    for l in summary.trim().lines() {
        s.push_str(&format!("> {l}\n"));
    }
    s.push_str("\n---\n");
    for r in rows {
        match r.role.as_str() {
            "user" => s.push_str(&format!(
                "\n## Messages ({})\n\n{}\n",
                r.created_at,
                r.content.trim_end()
            )),
            "assistant" => s.push_str(&format!(
                "\n## You answered ({})\n\n{}\n",
                r.created_at,
                r.content.trim_end()
            )),
            _ => match serde_json::from_str::<pinch_providers::Step>(&r.content) {
                Ok(pinch_providers::Step::Assistant { text, calls }) => {
                    if !text.trim().is_empty() {
                        s.push_str(&format!("\n### You said\n\n{}\n", text.trim_end()));
                    }
                    for c in calls {
                        s.push_str(&format!(
                            "\n### Tool call `{}`\n\n```json\n{}\n```\n",
                            c.name, c.arguments
                        ));
                    }
                }
                Ok(pinch_providers::Step::ToolResult {
                    name,
                    content,
                    is_error,
                    ..
                }) => {
                    let what = if is_error { "error" } else { "result" };
                    s.push_str(&format!(
                        "\n### Tool {what} `{name}`\n\n```\n{}\n```\n",
                        content.trim_end()
                    ));
                }
                Ok(pinch_providers::Step::User { text }) => s.push_str(&format!(
                    "\n### Messages during the work\n\n{}\n",
                    text.trim_end()
                )),
                Err(_) => s.push_str(&format!("\n### Step\n\n{}\n", r.content)),
            },
        }
    }
    s
}

impl Runner {
    /// Compacts `continuation`: summarises its older half and archives it.
    /// `Ok(Ok(None))` = too little to compact (fewer than `min_messages`
    /// user/assistant messages since the last compaction). `Ok(Err(why))` =
    /// the provider failed or the archive could not be written; the
    /// conversation stays as it was.
    pub(crate) fn compact(
        &mut self,
        continuation: &str,
        system: &str,
        min_messages: usize,
    ) -> Result<Result<Option<Compacted>, String>, ProtoError> {
        let live = Live::load(&self.out, continuation)?;
        let msgs = live.messages();
        if msgs.len() < min_messages.max(2) {
            return Ok(Ok(None));
        }
        let split = split_point(&msgs);
        let keep_from = match msgs.get(split) {
            Some(r) => r.idx,
            None => live.rows.last().map_or(0, |r| r.idx + 1),
        };
        let mut older: Vec<(String, String)> = Vec::new();
        if let Some(s) = &live.summary {
            older.extend(history::summary_pair(s));
        }
        older.extend(
            msgs[..split]
                .iter()
                .map(|r| (r.role.clone(), r.content.clone())),
        );
        let req = TurnRequest {
            system: system.to_owned(),
            prompt: SUMMARY_REQUEST.to_owned(),
            texts: vec![SUMMARY_REQUEST.to_owned()],
            history: older,
            ..Default::default()
        };
        tracing::info!(
            continuation,
            messages = split,
            "compacting: summarising the older half of the conversation"
        );
        let before = self.spent;
        let summary = match self.provider_turn(&req) {
            Ok(r) if !r.text.trim().is_empty() => r.text,
            Ok(_) => return Ok(Err("the model returned an empty summary".into())),
            Err(e) => return Ok(Err(format!("the model provider failed ({e})"))),
        };
        let spent = history::Spent {
            calls: self.spent.calls - before.calls,
            input_tokens: self.spent.input_tokens - before.input_tokens,
            output_tokens: self.spent.output_tokens - before.output_tokens,
            last_input_tokens: 0,
        };
        self.spent = before;
        let n = live.compactions + 1;
        let archive = format!("conversations/{continuation}-{n}.md");
        let archived: Vec<Row> = live
            .rows
            .iter()
            .filter(|r| r.idx < keep_from)
            .cloned()
            .collect();
        let text = render_archive(continuation, n, &summary, &archived);
        // Written before the summary row commits: a runner killed between
        // the two rewrites the same file at its next compaction.
        if let Err(e) = tools::files::write_file(&self.cfg, &archive, &text) {
            // An existing file from such a crash: replace it.
            let _ = std::fs::remove_file(self.cfg.paths.workspace_dir.join(&archive));
            if let Err(e2) = tools::files::write_file(&self.cfg, &archive, &text) {
                return Ok(Err(format!(
                    "cannot write the archive {archive} in the workspace ({e}; then {e2})"
                )));
            }
        }
        let row = Summary {
            summary,
            keep_from,
            archive: archive.clone(),
            messages: split,
        };
        let now = time::now();
        let tx = write_tx(&mut self.out)?;
        history::append(
            &tx,
            continuation,
            &[(
                "summary",
                &serde_json::to_string(&row).expect("summary serialises"),
            )],
            &now,
        )?;
        history::usage_record(&tx, continuation, &spent, false, &now)?;
        tx.commit()
            .map_err(ProtoError::sqlite("commit compaction"))?;
        tracing::info!(continuation, messages = split, %archive, "compacted");
        Ok(Ok(Some(Compacted {
            messages: split,
            archive,
        })))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(idx: i64, role: &str) -> Row {
        Row {
            idx,
            role: role.into(),
            content: format!("{role} {idx}"),
            created_at: "t".into(),
        }
    }

    #[test]
    fn the_older_half_ends_before_a_user_message() {
        let rows: Vec<Row> = vec![
            row(0, "user"),
            row(2, "assistant"),
            row(3, "user"),
            row(5, "assistant"),
        ];
        let refs: Vec<&Row> = rows.iter().collect();
        assert_eq!(split_point(&refs), 2);
        assert_eq!(
            split_point(&refs[..2]),
            2,
            "one exchange is summarised whole"
        );
        let six: Vec<Row> = (0..6)
            .map(|i| row(i, if i % 2 == 0 { "user" } else { "assistant" }))
            .collect();
        let refs: Vec<&Row> = six.iter().collect();
        assert_eq!(split_point(&refs), 4, "three exchanges: the first two go");
    }

    #[test]
    fn threshold_is_eighty_percent_by_chars_or_report() {
        let h = vec![("user".to_string(), "x".repeat(400))];
        assert_eq!(estimate_tokens("", &h, "", 0), 100);
        assert!(!over_threshold(79, 100));
        assert!(over_threshold(80, 100));
        assert!(!over_threshold(80, 0), "no window known: never");
        assert_eq!(
            estimate_tokens("", &h, &"y".repeat(40), 500),
            510,
            "a larger report wins"
        );
    }

    #[test]
    fn the_archive_is_readable() {
        let step = serde_json::to_string(&pinch_providers::Step::ToolResult {
            call_id: "1".into(),
            name: "shell".into(),
            content: "done".into(),
            is_error: false,
            images: Vec::new(),
        })
        .unwrap();
        let rows = vec![
            Row {
                idx: 0,
                role: "user".into(),
                content: "hello there".into(),
                created_at: "T0".into(),
            },
            Row {
                idx: 1,
                role: "step".into(),
                content: step,
                created_at: "T1".into(),
            },
            Row {
                idx: 2,
                role: "assistant".into(),
                content: "hi!".into(),
                created_at: "T2".into(),
            },
        ];
        let md = render_archive("c-1", 1, "They said hello.", &rows);
        assert!(md.starts_with("# Conversation c-1, part 1"));
        assert!(md.contains("> They said hello."));
        assert!(md.contains("## Messages (T0)\n\nhello there"));
        assert!(md.contains("### Tool result `shell`"));
        assert!(md.contains("## You answered (T2)\n\nhi!"));
    }
}
