//! `send_message`, `send_file`, `edit_message`, `add_reaction`,
//! `send_card`: chat rows in `messages_out`, committed at once (the user
//! sees progress while the turn goes on; decision 0009).
//!
//! `send_file` copies the file (path-checked like the file tools) into
//! `outbox/<out-id>/<basename>`, creating the copy exclusively, and the
//! row's `files` lists the basename: the host finds it in that row's outbox
//! folder.

use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;

use pinch_policy::path::Access;
use pinch_proto::content::ChatOut;
use serde_json::{json, Map, Value};

use super::files::{open_regular, resolve, MAX_FILE_BYTES};
use super::{spec, Args, ToolCtx, ToolError, ToolResult};
use pinch_providers::ToolSpec;

pub fn specs() -> Vec<ToolSpec> {
    let to = json!({"type": "string", "description": "A destination name; omit to write to the conversation you are answering."});
    vec![
        spec(
            "send_message",
            "Send a chat message now, before your turn ends (e.g. progress on a long task). Your final answer is \
             sent anyway; do not repeat it here.",
            json!({"type": "object", "properties": {"to": to, "text": {"type": "string"}}, "required": ["text"]}),
        ),
        spec(
            "send_file",
            "Send a file from your workspace (or inbox) to a conversation, with an optional caption.",
            json!({"type": "object", "properties": {
                "to": to,
                "path": {"type": "string", "description": "The file, relative to your workspace."},
                "text": {"type": "string", "description": "A caption."}
            }, "required": ["path"]}),
        ),
        spec(
            "edit_message",
            "Replace the text of a message you sent earlier, named by its id (seq).",
            json!({"type": "object", "properties": {"seq": {"type": "integer"}, "text": {"type": "string"}}, "required": ["seq", "text"]}),
        ),
        spec(
            "add_reaction",
            "React to a message (by its id/seq) with an emoji.",
            json!({"type": "object", "properties": {"seq": {"type": "integer"}, "emoji": {"type": "string"}}, "required": ["seq", "emoji"]}),
        ),
        spec(
            "send_card",
            "Send a structured card (channels that cannot show cards show fallback_text).",
            json!({"type": "object", "properties": {
                "to": to,
                "card": {"type": "object", "description": "The card: title, body, fields, buttons…"},
                "fallback_text": {"type": "string", "description": "Plain text for channels without cards."}
            }, "required": ["card", "fallback_text"]}),
        ),
    ]
}

pub fn call(ctx: &mut ToolCtx<'_>, name: &str, m: &Map<String, Value>) -> ToolResult {
    match name {
        "send_message" => {
            let a = Args {
                tool: "send_message",
                m,
            };
            let text = a.str("text")?;
            if text.trim().is_empty() {
                return Err(ToolError("send_message: `text` is empty".into()));
            }
            let addr = ctx.address(a.opt_str("to")?)?;
            let (_, seq) = ctx.write_row(
                "chat",
                &addr,
                ChatOut::Text {
                    text: text.to_owned(),
                    files: vec![],
                }
                .to_json(),
            )?;
            Ok(format!("sent (message id {seq})"))
        }
        "send_file" => {
            let a = Args {
                tool: "send_file",
                m,
            };
            send_file(
                ctx,
                a.opt_str("to")?,
                a.str("path")?,
                a.opt_str("text")?.unwrap_or(""),
            )
        }
        "edit_message" => {
            let a = Args {
                tool: "edit_message",
                m,
            };
            let seq = a.i64("seq")?;
            let text = a.str("text")?;
            let own = pinch_proto::outbound::is_chat(ctx.out, seq)
                .map_err(|e| ToolError(format!("internal error reading messages: {e}")))?;
            if !own {
                return Err(ToolError(format!(
                    "message {seq} is not one you sent; you can edit only your own messages"
                )));
            }
            let addr = ctx.address(None)?;
            let (_, s) = ctx.write_row(
                "chat",
                &addr,
                ChatOut::Edit {
                    seq,
                    text: text.to_owned(),
                }
                .to_json(),
            )?;
            Ok(format!("edit requested (id {s})"))
        }
        "add_reaction" => {
            let a = Args {
                tool: "add_reaction",
                m,
            };
            let seq = a.i64("seq")?;
            let emoji = a.str("emoji")?;
            if emoji.trim().is_empty() || emoji.chars().count() > 16 {
                return Err(ToolError("add_reaction: `emoji` must be one emoji".into()));
            }
            if !message_exists(ctx, seq) {
                return Err(ToolError(format!("there is no message with id {seq}")));
            }
            let addr = ctx.address(None)?;
            ctx.write_row(
                "chat",
                &addr,
                ChatOut::Reaction {
                    seq,
                    emoji: emoji.to_owned(),
                }
                .to_json(),
            )?;
            Ok("reaction requested".into())
        }
        _ => {
            let a = Args {
                tool: "send_card",
                m,
            };
            let card = match a.value("card") {
                Some(v @ Value::Object(_)) => v.clone(),
                _ => return Err(ToolError("send_card: `card` must be a JSON object".into())),
            };
            let fallback = a.str("fallback_text")?;
            if fallback.trim().is_empty() {
                return Err(ToolError(
                    "send_card: `fallback_text` is empty; channels without cards show it".into(),
                ));
            }
            let addr = ctx.address(a.opt_str("to")?)?;
            let (_, seq) = ctx.write_row(
                "chat",
                &addr,
                ChatOut::Card {
                    card,
                    fallback_text: fallback.to_owned(),
                }
                .to_json(),
            )?;
            Ok(format!("card sent (message id {seq})"))
        }
    }
}

/// A seq of either side (the agent names messages by seq).
fn message_exists(ctx: &mut ToolCtx<'_>, seq: i64) -> bool {
    let out: bool = pinch_proto::outbound::has_seq(ctx.out, seq).unwrap_or(false);
    if out {
        return true;
    }
    let inbound = ctx.cfg.paths.in_dir.join(pinch_proto::layout::INBOUND_DB);
    pinch_proto::open::open_reader(
        &inbound,
        std::time::Duration::from_millis(ctx.cfg.timings.busy_timeout_ms),
    )
    .ok()
    .and_then(|c| pinch_proto::inbound::has_seq(&c, seq).ok())
    .unwrap_or(false)
}

fn send_file(ctx: &mut ToolCtx<'_>, to: Option<&str>, path: &str, text: &str) -> ToolResult {
    let addr = ctx.address(to)?;
    let r = resolve(ctx.cfg, path, Access::Read)?;
    let shown = r.checked.display();
    if !r.exists {
        return Err(ToolError(format!("{shown} does not exist")));
    }
    let (mut src, len) = open_regular(&r)?;
    if len > MAX_FILE_BYTES {
        return Err(ToolError(format!(
            "{shown} is {len} bytes; files up to {MAX_FILE_BYTES} bytes can be sent"
        )));
    }
    // The checked path's last component: no `/`, `..`, NUL or control characters.
    let base = pinch_policy::path::basename(&r.checked)
        .ok_or_else(|| ToolError(format!("{shown} has no file name")))?
        .to_owned();
    outbox_send(ctx, &addr, &base, &shown, text, |dst| {
        std::io::copy(&mut src, dst)
    })
}

/// Sends a file to `addr`: the file `base` is written by `fill` into a
/// fresh folder of the outbox, then the row that names it (the host
/// delivers it from there). `shown` names the source in errors.
pub(super) fn outbox_send(
    ctx: &mut ToolCtx<'_>,
    addr: &crate::address::Address,
    base: &str,
    shown: &str,
    text: &str,
    fill: impl FnOnce(&mut std::fs::File) -> std::io::Result<u64>,
) -> ToolResult {
    let id = ctx.next_out_id();
    let dir = ctx.cfg.paths.outbox_dir.join(&id);
    std::fs::create_dir(&dir).map_err(|e| ToolError(format!("cannot prepare the outbox: {e}")))?;
    let copied = (|| -> std::io::Result<u64> {
        let mut dst = OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(libc::O_NOFOLLOW)
            .mode(0o644)
            .open(dir.join(base))?;
        fill(&mut dst)
    })();
    if let Err(e) = copied {
        let _ = std::fs::remove_dir_all(&dir);
        return Err(ToolError(format!("copying {shown} into the outbox: {e}")));
    }
    let content = ChatOut::Text {
        text: text.to_owned(),
        files: vec![base.to_owned()],
    }
    .to_json();
    match ctx.write_row_with_id(&id, "chat", addr, content) {
        Ok(seq) => Ok(format!("sent {base} (message id {seq})")),
        Err(e) => {
            let _ = std::fs::remove_dir_all(&dir);
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tools::testing::*;
    use crate::tools::{call as tool_call, Address, ToolCtx};
    use pinch_proto::rows::Destination;

    fn dest(name: &str, pid: &str) -> Destination {
        Destination {
            name: name.into(),
            display_name: None,
            kind: "channel".into(),
            channel_type: Some("cli".into()),
            platform_id: Some(pid.into()),
            agent_group_id: None,
        }
    }

    #[test]
    fn send_message_defaults_to_origin_and_checks_names() {
        let env = Env::new();
        let mut out = env.out();
        let mut ctx = ToolCtx::new(&env.cfg, &mut out, &no_stop);
        ctx.destinations = vec![dest("family", "fam"), dest("work", "wrk")];
        let r = tool_call(&mut ctx, "send_message", r#"{"text": "hi"}"#);
        assert!(
            r.is_error && r.content.contains("family, work"),
            "no origin and two destinations: {}",
            r.content
        );
        ctx.origin = Some(Address {
            channel_type: Some("cli".into()),
            platform_id: Some("local".into()),
            thread_id: None,
        });
        assert!(!tool_call(&mut ctx, "send_message", r#"{"text": "working on it"}"#).is_error);
        assert!(
            !tool_call(
                &mut ctx,
                "send_message",
                r#"{"to": "work", "text": "to work"}"#
            )
            .is_error
        );
        let r = tool_call(&mut ctx, "send_message", r#"{"to": "nope", "text": "x"}"#);
        assert!(
            r.is_error
                && r.content.contains("unknown destination \"nope\"")
                && r.content.contains("family, work"),
            "{}",
            r.content
        );
        let rows = out_rows(&out);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].2.as_deref(), Some("local"));
        assert_eq!(rows[0].3, r#"{"text":"working on it"}"#);
        assert_eq!(rows[1].2.as_deref(), Some("wrk"));
        let seqs: Vec<i64> = out
            .prepare("SELECT seq FROM messages_out")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert!(seqs.iter().all(|s| s % 2 == 1), "runner seqs are odd");
    }

    #[test]
    fn send_file_copies_into_the_outbox() {
        let env = Env::new();
        std::fs::write(env.path("agent/report.txt"), "numbers").unwrap();
        let mut out = env.out();
        let mut ctx = ToolCtx::new(&env.cfg, &mut out, &no_stop);
        ctx.destinations = vec![dest("terminal", "local")];
        let r = tool_call(
            &mut ctx,
            "send_file",
            r#"{"path": "report.txt", "text": "here"}"#,
        );
        assert!(!r.is_error, "{}", r.content);
        let rows = out_rows(&out);
        assert_eq!(rows.len(), 1);
        let id: String = out
            .query_row("SELECT id FROM messages_out", [], |r| r.get(0))
            .unwrap();
        assert_eq!(
            std::fs::read_to_string(env.path(&format!("outbox/{id}/report.txt"))).unwrap(),
            "numbers"
        );
        assert_eq!(
            ChatOut::parse(&rows[0].3).unwrap(),
            ChatOut::Text {
                text: "here".into(),
                files: vec!["report.txt".into()]
            }
        );
    }

    #[test]
    fn send_file_refuses_escapes_and_leaves_nothing() {
        let env = Env::new();
        std::fs::write(env.path("secret"), "s").unwrap();
        std::os::unix::fs::symlink(env.path("secret"), env.path("agent/s")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", env.path("agent/p")).unwrap();
        let mut out = env.out();
        let mut ctx = ToolCtx::new(&env.cfg, &mut out, &no_stop);
        ctx.destinations = vec![dest("terminal", "local")];
        for p in ["../secret", "/etc/passwd", "s", "p", "/workspace/outbox/x"] {
            let r = tool_call(&mut ctx, "send_file", &json!({"path": p}).to_string());
            assert!(
                r.is_error && r.content.contains("path escapes the workspace"),
                "{p}: {}",
                r.content
            );
        }
        assert!(out_rows(&out).is_empty());
        assert_eq!(std::fs::read_dir(env.path("outbox")).unwrap().count(), 0);
    }

    #[test]
    fn edits_reactions_cards() {
        let env = Env::new();
        let mut out = env.out();
        let mut ctx = ToolCtx::new(&env.cfg, &mut out, &no_stop);
        ctx.destinations = vec![dest("terminal", "local")];
        let sent = tool_call(&mut ctx, "send_message", r#"{"text": "draft"}"#);
        let seq: i64 = sent
            .content
            .trim_start_matches("sent (message id ")
            .trim_end_matches(')')
            .parse()
            .unwrap();
        assert!(
            !tool_call(
                &mut ctx,
                "edit_message",
                &json!({"seq": seq, "text": "final"}).to_string()
            )
            .is_error
        );
        let r = tool_call(&mut ctx, "edit_message", r#"{"seq": 9999, "text": "x"}"#);
        assert!(r.is_error && r.content.contains("not one you sent"));
        assert!(
            !tool_call(
                &mut ctx,
                "add_reaction",
                &json!({"seq": seq, "emoji": "👍"}).to_string()
            )
            .is_error
        );
        assert!(tool_call(&mut ctx, "add_reaction", r#"{"seq": 4242, "emoji": "👍"}"#).is_error);
        assert!(
            !tool_call(
                &mut ctx,
                "send_card",
                r#"{"card": {"title": "T"}, "fallback_text": "T"}"#
            )
            .is_error
        );
        assert!(
            tool_call(
                &mut ctx,
                "send_card",
                r#"{"card": "T", "fallback_text": "T"}"#
            )
            .is_error
        );
        let rows: Vec<ChatOut> = out_rows(&out)
            .into_iter()
            .map(|r| ChatOut::parse(&r.3).unwrap())
            .collect();
        assert_eq!(
            rows[1],
            ChatOut::Edit {
                seq,
                text: "final".into()
            }
        );
        assert_eq!(
            rows[2],
            ChatOut::Reaction {
                seq,
                emoji: "👍".into()
            }
        );
        assert_eq!(
            rows[3],
            ChatOut::Card {
                card: json!({"title": "T"}),
                fallback_text: "T".into()
            }
        );
    }
}
