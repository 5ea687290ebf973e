//! The conversation record in `out/outbound.db` (`conversation`), what of
//! it is sent back to stateless APIs, and the token usage kept in
//! `session_state`.
//!
//! Roles: `user` (a turn's prompt, follow-ups included), `assistant` (its
//! final answer), `step` (JSON of a tool step: the record of the work, not
//! history), and `summary` (a compaction point: JSON [`Summary`]). The
//! history of a request is the newest summary (as a first user/assistant
//! pair) plus the `user`/`assistant` rows from its `keep_from` on; rows
//! before `keep_from` are archived in the workspace's `conversations/`.

use pinch_proto::conversation;
use pinch_proto::rusqlite::{Connection, Transaction};
use pinch_proto::ProtoError;
use serde::{Deserialize, Serialize};

/// A compaction point, stored as a `conversation` row with role `summary`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub summary: String,
    /// The first `idx` still sent after this summary.
    pub keep_from: i64,
    /// The archive file, relative to the workspace.
    pub archive: String,
    /// How many user/assistant messages this compaction summarised.
    pub messages: usize,
}

/// One row of the conversation.
pub use pinch_proto::conversation::{append, Row};

/// The live part of a conversation: the newest summary, if any, and every
/// row after its `keep_from` (steps included; [`Live::messages`] filters).
#[derive(Clone, Debug, Default)]
pub struct Live {
    pub summary: Option<Summary>,
    pub rows: Vec<Row>,
    /// Compactions so far.
    pub compactions: usize,
    /// User messages (turns) in the whole conversation, archived ones too.
    pub turns: usize,
}

impl Live {
    pub fn load(out: &Connection, continuation: &str) -> Result<Live, ProtoError> {
        let conversation::Counts {
            summaries: compactions,
            user_messages: turns,
            last_summary: last,
        } = conversation::counts(out, continuation)?;
        let summary = match last {
            None => None,
            Some(text) => match serde_json::from_str::<Summary>(&text) {
                Ok(s) => Some(s),
                Err(e) => {
                    tracing::warn!(
                        continuation,
                        "a compaction summary row is unreadable, ignoring it: {e}"
                    );
                    None
                }
            },
        };
        let from = summary.as_ref().map_or(i64::MIN, |s| s.keep_from);
        let rows = conversation::rows_from(out, continuation, from)?;
        Ok(Live {
            summary,
            rows,
            compactions: compactions as usize,
            turns: turns as usize,
        })
    }

    /// The user/assistant rows, oldest first.
    pub fn messages(&self) -> Vec<&Row> {
        self.rows
            .iter()
            .filter(|r| r.role == "user" || r.role == "assistant")
            .collect()
    }

    /// What a stateless API is sent before the prompt: the summary as a
    /// first exchange, then the messages since, starting with a `user`
    /// message (APIs want alternation).
    pub fn history(&self) -> Vec<(String, String)> {
        let mut h = Vec::new();
        if let Some(s) = &self.summary {
            h.extend(summary_pair(s));
        }
        let msgs = self.messages();
        let start = msgs
            .iter()
            .position(|r| r.role == "user")
            .unwrap_or(msgs.len());
        h.extend(
            msgs[start..]
                .iter()
                .map(|r| (r.role.clone(), r.content.clone())),
        );
        h
    }
}

/// How a summary is shown to the model: a user message carrying it and a
/// short assistant acknowledgement, so the system prompt stays the same
/// across compactions (it is the part providers cache).
pub fn summary_pair(s: &Summary) -> [(String, String); 2] {
    [
        (
            "user".into(),
            format!(
                "[Summary of our earlier conversation; the full text is archived in your workspace at {}]\n{}",
                s.archive,
                s.summary.trim()
            ),
        ),
        ("assistant".into(), "Noted: I will continue from this summary.".into()),
    ]
}

/// Drops the oldest messages after the summary until the history fits
/// `max_chars` (a safety net for when compaction could not run), keeping
/// it starting with a `user` message.
pub fn fit(
    mut h: Vec<(String, String)>,
    has_summary: bool,
    max_chars: usize,
) -> Vec<(String, String)> {
    let keep = if has_summary { 2 } else { 0 };
    let size = |h: &[(String, String)]| h.iter().map(|(_, t)| t.len()).sum::<usize>();
    let mut dropped = 0;
    while size(&h) > max_chars && h.len() > keep {
        h.remove(keep);
        dropped += 1;
        while h.get(keep).is_some_and(|(r, _)| r != "user") {
            h.remove(keep);
            dropped += 1;
        }
    }
    if dropped > 0 {
        tracing::warn!(dropped, "history too long for the context window even after compaction; oldest messages left out");
    }
    h
}

/// Token usage as the provider reported it, kept in `session_state` under
/// `usage:<continuation>` and `usage:session` (JSON).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageTotals {
    pub turns: u64,
    pub calls: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// Input tokens of the newest call (what the context held then); 0 =
    /// unknown, e.g. right after a compaction.
    pub last_input_tokens: u64,
}

pub const SESSION_USAGE: &str = "usage:session";

pub fn usage_key(continuation: &str) -> String {
    format!("usage:{continuation}")
}

pub fn usage_get(out: &Connection, key: &str) -> Result<UsageTotals, ProtoError> {
    Ok(pinch_proto::rows::state_get(out, key)?
        .and_then(|v| serde_json::from_str(&v).ok())
        .unwrap_or_default())
}

/// Usage of one turn or one compaction: the calls made and their sum.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Spent {
    pub calls: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub last_input_tokens: u64,
}

impl Spent {
    pub fn add(&mut self, u: pinch_providers::Usage) {
        self.calls += 1;
        self.input_tokens += u.input_tokens;
        self.output_tokens += u.output_tokens;
        self.last_input_tokens = u.input_tokens;
    }
}

/// Adds `spent` to the conversation's and the session's totals. A turn
/// counts one turn; a compaction (`turn = false`) forgets the context size.
pub fn usage_record(
    tx: &Transaction<'_>,
    continuation: &str,
    spent: &Spent,
    turn: bool,
    now: &str,
) -> Result<(), ProtoError> {
    for key in [usage_key(continuation), SESSION_USAGE.to_owned()] {
        let mut u = usage_get(tx, &key)?;
        u.turns += u64::from(turn);
        u.calls += spent.calls;
        u.input_tokens += spent.input_tokens;
        u.output_tokens += spent.output_tokens;
        u.last_input_tokens = if turn { spent.last_input_tokens } else { 0 };
        let v = serde_json::to_string(&u).expect("usage serialises");
        pinch_proto::rows::state_put(tx, &key, &v, now)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tools::testing::Env;

    fn put(out: &mut Connection, c: &str, msgs: &[(&str, &str)]) -> i64 {
        let tx = pinch_proto::open::write_tx(out).unwrap();
        let i = append(&tx, c, msgs, "2026-01-01T00:00:00.000Z").unwrap();
        tx.commit().unwrap();
        i
    }

    #[test]
    fn history_starts_at_the_summary_and_skips_steps() {
        let env = Env::new();
        let mut out = env.out();
        put(
            &mut out,
            "c1",
            &[
                ("user", "u1"),
                ("step", "{}"),
                ("assistant", "a1"),
                ("user", "u2"),
                ("assistant", "a2"),
            ],
        );
        let live = Live::load(&out, "c1").unwrap();
        assert_eq!(
            live.history(),
            vec![
                ("user".into(), "u1".into()),
                ("assistant".into(), "a1".into()),
                ("user".into(), "u2".into()),
                ("assistant".into(), "a2".into())
            ]
        );
        assert_eq!((live.turns, live.compactions), (2, 0));
        let s = Summary {
            summary: "S".into(),
            keep_from: 3,
            archive: "conversations/c1-1.md".into(),
            messages: 2,
        };
        put(
            &mut out,
            "c1",
            &[("summary", &serde_json::to_string(&s).unwrap())],
        );
        put(&mut out, "c1", &[("user", "u3"), ("assistant", "a3")]);
        let live = Live::load(&out, "c1").unwrap();
        let h = live.history();
        assert_eq!(h.len(), 6, "{h:?}");
        assert!(h[0].1.contains("S") && h[0].1.contains("conversations/c1-1.md"));
        assert_eq!(h[2].1, "u2");
        assert_eq!(h[5].1, "a3");
        assert_eq!((live.turns, live.compactions), (3, 1));
        // Another conversation is separate.
        assert!(Live::load(&out, "c2").unwrap().history().is_empty());
    }

    #[test]
    fn fit_keeps_the_summary_and_alternation() {
        let h: Vec<(String, String)> = [
            ("user", "S"),
            ("assistant", "ok"),
            ("user", "aaaa"),
            ("assistant", "bbbb"),
            ("user", "cc"),
            ("assistant", "dd"),
        ]
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
        let f = fit(h.clone(), true, 10);
        assert_eq!(
            f.iter().map(|(_, t)| t.as_str()).collect::<Vec<_>>(),
            ["S", "ok", "cc", "dd"]
        );
        assert_eq!(fit(h.clone(), false, 1000), h);
    }

    #[test]
    fn usage_adds_up_per_conversation_and_session() {
        let env = Env::new();
        let mut out = env.out();
        let mut spent = Spent::default();
        spent.add(pinch_providers::Usage {
            input_tokens: 100,
            output_tokens: 10,
        });
        spent.add(pinch_providers::Usage {
            input_tokens: 150,
            output_tokens: 5,
        });
        for c in ["c1", "c1", "c2"] {
            let tx = pinch_proto::open::write_tx(&mut out).unwrap();
            usage_record(&tx, c, &spent, true, "t").unwrap();
            tx.commit().unwrap();
        }
        let c1 = usage_get(&out, &usage_key("c1")).unwrap();
        assert_eq!(
            c1,
            UsageTotals {
                turns: 2,
                calls: 4,
                input_tokens: 500,
                output_tokens: 30,
                last_input_tokens: 150
            }
        );
        assert_eq!(usage_get(&out, SESSION_USAGE).unwrap().input_tokens, 750);
        let tx = pinch_proto::open::write_tx(&mut out).unwrap();
        usage_record(&tx, "c1", &Spent::default(), false, "t").unwrap();
        tx.commit().unwrap();
        assert_eq!(
            usage_get(&out, &usage_key("c1")).unwrap().last_input_tokens,
            0,
            "a compaction forgets the context size"
        );
    }
}
