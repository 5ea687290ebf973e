//! `ask_user_question(title, question, options, timeout_s=300)` (SPEC §7.3).
//!
//! Writes an `ask_question` chat row with a fresh short question id (the
//! host turns options into buttons `q:<id>:<index>`, ≤ 64 bytes), then
//! waits: `inbound.db` is polled read-only every 250 ms for a
//! `question_response` with that id, which is acked here. The heartbeat
//! thread keeps beating; `container_state` shows the tool in flight with
//! its timeout. No answer in time → a plain "no answer" result, never a
//! hang (lesson 33).

use std::time::{Duration, Instant};

use pinch_proto::content::{ChatOut, InContent, OptionItem, SystemIn};
use pinch_proto::rows::{self, status};
use pinch_proto::time;
use serde_json::{json, Map, Value};

use super::{spec, Args, ToolCtx, ToolError, ToolResult};
use pinch_providers::ToolSpec;

/// Questions whose tool is waiting for the answer right now (by the
/// agent's question id). An answer to any other question is late: the
/// runner shows it in the next turn instead (SPEC §7.3). A set rather than
/// a flag so tools run from other threads (an MCP bridge) are covered.
static WAITING: std::sync::Mutex<std::collections::BTreeSet<String>> =
    std::sync::Mutex::new(std::collections::BTreeSet::new());

/// Whether a tool is waiting for this question's answer right now.
pub fn is_waiting(question_id: &str) -> bool {
    WAITING
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .contains(question_id)
}

/// Marks a question (or, with a prefix, another tool reply) as waited for
/// until dropped.
pub(crate) struct Waiting(String);

impl Waiting {
    pub(crate) fn new(id: &str) -> Waiting {
        WAITING
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.to_owned());
        Waiting(id.to_owned())
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        WAITING
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.0);
    }
}

pub const DEFAULT_TIMEOUT_S: u64 = 300;
pub const MAX_TIMEOUT_S: u64 = 3600;
const POLL: Duration = Duration::from_millis(250);

pub fn specs() -> Vec<ToolSpec> {
    vec![spec(
        "ask_user_question",
        "Ask the user a multiple-choice question and wait for the answer (buttons where the channel has them). \
         Returns the chosen value, or says that no answer came in time.",
        json!({
            "type": "object",
            "properties": {
                "title": {"type": "string"},
                "question": {"type": "string"},
                "options": {"type": "array", "minItems": 1, "maxItems": 10, "items": {"anyOf": [
                    {"type": "string"},
                    {"type": "object", "properties": {"label": {"type": "string"}, "value": {"type": "string"}}, "required": ["label"]}
                ]}, "description": "The choices: strings, or {label, value}."},
                "timeout_s": {"type": "integer", "minimum": 1, "maximum": MAX_TIMEOUT_S, "default": DEFAULT_TIMEOUT_S}
            },
            "required": ["title", "question", "options"]
        }),
    )]
}

fn options(v: Option<&Value>) -> Result<Vec<OptionItem>, ToolError> {
    let Some(Value::Array(items)) = v else {
        return Err(ToolError(
            "ask_user_question: `options` must be a list of strings or {label, value} objects"
                .into(),
        ));
    };
    if items.is_empty() || items.len() > 10 {
        return Err(ToolError(format!(
            "ask_user_question: give 1 to 10 options, not {}",
            items.len()
        )));
    }
    items
        .iter()
        .map(|i| match i {
            Value::String(s) if !s.trim().is_empty() => Ok(OptionItem {
                label: s.clone(),
                value: s.clone(),
                selected_label: None,
            }),
            Value::Object(o) => {
                let label = o
                    .get("label")
                    .and_then(Value::as_str)
                    .filter(|l| !l.trim().is_empty());
                let label = label.ok_or_else(|| {
                    ToolError("ask_user_question: every option needs a non-empty `label`".into())
                })?;
                let value = o.get("value").and_then(Value::as_str).unwrap_or(label);
                Ok(OptionItem {
                    label: label.to_owned(),
                    value: value.to_owned(),
                    selected_label: None,
                })
            }
            other => Err(ToolError(format!(
                "ask_user_question: option {other} is neither a string nor {{label, value}}"
            ))),
        })
        .collect()
}

pub fn call(ctx: &mut ToolCtx<'_>, m: &Map<String, Value>) -> ToolResult {
    let a = Args {
        tool: "ask_user_question",
        m,
    };
    let title = a.str("title")?.to_owned();
    let question = a.str("question")?.to_owned();
    let options = options(a.value("options"))?;
    let timeout_s = a.opt_u64("timeout_s")?.unwrap_or(DEFAULT_TIMEOUT_S);
    if timeout_s == 0 || timeout_s > MAX_TIMEOUT_S {
        return Err(ToolError(format!(
            "ask_user_question: timeout_s must be between 1 and {MAX_TIMEOUT_S}, got {timeout_s}"
        )));
    }
    let addr = ctx.address(None)?;
    let question_id = pinch_proto::runner_config::random_hex(4);
    let row = ChatOut::AskQuestion {
        question_id: question_id.clone(),
        title,
        question,
        options: options.clone(),
        timeout_s,
    };
    ctx.write_row("chat", &addr, row.to_json())?;
    ctx.set_tool_in_flight(Some(("ask_user_question", timeout_s * 1000)));
    let waiting = Waiting::new(&question_id);
    let r = wait_for_answer(ctx, &question_id, Duration::from_secs(timeout_s));
    drop(waiting);
    ctx.set_tool_in_flight(None);
    match r? {
        Some(value) => {
            let label = options
                .iter()
                .find(|o| o.value == value)
                .map(|o| o.label.as_str())
                .unwrap_or(value.as_str());
            Ok(if label == value {
                format!("the user chose: {value}")
            } else {
                format!("the user chose: {label} (value {value})")
            })
        }
        None if (ctx.should_stop)() => Err(ToolError(
            "stopped while waiting for the answer (the runner is shutting down)".into(),
        )),
        None => Err(ToolError(format!("no answer within {timeout_s} s"))),
    }
}

/// Polls for the response; acks it when found. `None` = timed out or asked
/// to stop.
fn wait_for_answer(
    ctx: &mut ToolCtx<'_>,
    question_id: &str,
    timeout: Duration,
) -> Result<Option<String>, ToolError> {
    wait_for_reply(ctx, timeout, |s| match s {
        SystemIn::QuestionResponse {
            question_id: q,
            value,
            ..
        } if q == question_id => Some(value.clone()),
        _ => None,
    })
}

/// Polls `inbound.db` (read-only, every 250 ms) for the system row `pick`
/// accepts, acks it and returns what `pick` made of it. `None` = timed out
/// or asked to stop.
pub(crate) fn wait_for_reply<T>(
    ctx: &mut ToolCtx<'_>,
    timeout: Duration,
    pick: impl Fn(&SystemIn) -> Option<T>,
) -> Result<Option<T>, ToolError> {
    let path = ctx.cfg.paths.in_dir.join(pinch_proto::layout::INBOUND_DB);
    let busy = Duration::from_millis(ctx.cfg.timings.busy_timeout_ms);
    let deadline = Instant::now() + timeout;
    loop {
        if (ctx.should_stop)() {
            return Ok(None);
        }
        match pinch_proto::open::open_reader(&path, busy).and_then(|c| rows::pending_inbound(&c)) {
            Ok(pending) => {
                let hit =
                    pending
                        .iter()
                        .find_map(|r| match InContent::parse(&r.kind, &r.content) {
                            Ok(InContent::System(s)) => pick(&s).map(|v| (r.id.clone(), v)),
                            _ => None,
                        });
                if let Some((id, value)) = hit {
                    let now = time::now();
                    let tx = pinch_proto::open::write_tx(ctx.out)?;
                    rows::ack(&tx, &id, status::COMPLETED, &ctx.cfg.runner_id, &now, None)?;
                    tx.commit()
                        .map_err(|e| ToolError(format!("internal error acking the reply: {e}")))?;
                    ctx.acked.push(id);
                    return Ok(Some(value));
                }
            }
            Err(e) => tracing::warn!("polling for the reply failed (will retry): {e}"),
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(None);
        }
        std::thread::sleep(POLL.min(left));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tools::testing::*;
    use crate::tools::{call as tool_call, Address, ToolCtx};

    fn ctx_origin(ctx: &mut ToolCtx<'_>) {
        ctx.origin = Some(Address {
            channel_type: Some("cli".into()),
            platform_id: Some("local".into()),
            thread_id: None,
        });
    }

    #[test]
    fn waits_for_the_matching_answer_and_acks_it() {
        let env = Env::new();
        let in_path = env.cfg.paths.in_dir.join("inbound.db");
        let out_path = env.cfg.paths.out_dir.join("outbound.db");
        // The "host": waits for the question row, then answers it.
        let host = std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(20);
            let qid = loop {
                let c = pinch_proto::open::open_reader(&out_path, Duration::from_secs(5)).unwrap();
                let q: Option<String> = c
                    .query_row("SELECT content FROM messages_out", [], |r| r.get(0))
                    .ok();
                if let Some(ChatOut::AskQuestion { question_id, .. }) =
                    q.map(|q| ChatOut::parse(&q).unwrap())
                {
                    break question_id;
                }
                assert!(Instant::now() < deadline, "no question row");
                std::thread::sleep(Duration::from_millis(20));
            };
            let mut w = pinch_proto::open::open_writer(&in_path, Duration::from_secs(5)).unwrap();
            let tx = pinch_proto::open::write_tx(&mut w).unwrap();
            for (id, q) in [("other", "zzzz"), ("answer", qid.as_str())] {
                let content = InContent::System(SystemIn::QuestionResponse {
                    question_id: q.into(),
                    value: "b".into(),
                    user_id: None,
                });
                let row = rows::NewInbound {
                    id: id.into(),
                    kind: "system".into(),
                    timestamp: time::now(),
                    content: content.to_json(),
                    ..Default::default()
                };
                rows::insert_inbound(&tx, &row, 0).unwrap();
            }
            tx.commit().unwrap();
        });
        let mut out = env.out();
        let mut ctx = ToolCtx::new(&env.cfg, &mut out, &no_stop);
        ctx_origin(&mut ctx);
        let r = tool_call(
            &mut ctx,
            "ask_user_question",
            r#"{"title": "Lunch", "question": "Which?", "options": ["a", {"label": "Bee", "value": "b"}], "timeout_s": 60}"#,
        );
        host.join().unwrap();
        assert_eq!(r.content, "the user chose: Bee (value b)");
        assert_eq!(ctx.acked, vec!["answer".to_string()]);
        assert!(
            !is_waiting(&ask_id(ctx.out)),
            "nobody waits once the tool returned"
        );
        let st: String = out
            .query_row(
                "SELECT status FROM processing_ack WHERE message_id = 'answer'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(st, "completed");
        let other: i64 = out
            .query_row(
                "SELECT count(*) FROM processing_ack WHERE message_id = 'other'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(other, 0, "another question's answer is left alone");
    }

    fn ask_id(out: &pinch_proto::rusqlite::Connection) -> String {
        let q: String = out
            .query_row(
                "SELECT content FROM messages_out WHERE content LIKE '%ask_question%'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        match ChatOut::parse(&q).unwrap() {
            ChatOut::AskQuestion { question_id, .. } => question_id,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn times_out_with_a_plain_result() {
        let env = Env::new();
        let mut out = env.out();
        let mut ctx = ToolCtx::new(&env.cfg, &mut out, &no_stop);
        ctx_origin(&mut ctx);
        let r = tool_call(
            &mut ctx,
            "ask_user_question",
            r#"{"title": "T", "question": "Q?", "options": ["x"], "timeout_s": 1}"#,
        );
        assert!(r.is_error);
        assert_eq!(r.content, "no answer within 1 s");
        let bad = tool_call(
            &mut ctx,
            "ask_user_question",
            r#"{"title": "T", "question": "Q?", "options": []}"#,
        );
        assert!(bad.is_error && bad.content.contains("1 to 10"));
        let tool: Option<String> = out
            .query_row("SELECT current_tool FROM container_state", [], |r| r.get(0))
            .unwrap();
        assert_eq!(tool, None);
    }
}
