//! `search_memory(query, limit)` and `remember(note)`: long-term memory
//! (issue 17). Every turn of the agent group is indexed as it commits
//! (`crate::memory`); `remember` appends a dated line to `MEMORY.md`
//! (which is also in every system prompt), and the notes are indexed when
//! they change, so a search finds turns and notes together.

use std::hash::{Hash, Hasher};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;

use pinch_proto::memory;
use pinch_proto::open::write_tx;
use pinch_proto::rusqlite::Connection;
use serde_json::{json, Map, Value};

use super::{spec, Args, ToolCtx, ToolError, ToolResult};
use pinch_providers::ToolSpec;

const NOTES: &str = "MEMORY.md";
/// Notes lines indexed at most (a MEMORY.md longer than this is cut).
const MAX_NOTES: usize = 5_000;
const MAX_NOTE: usize = 2_000;
/// MEMORY.md is read up to this much.
const MAX_NOTES_BYTES: usize = 4 * 1024 * 1024;

pub fn specs() -> Vec<ToolSpec> {
    vec![
        spec(
            "search_memory",
            "Search everything said in your earlier conversations (every session of yours, also before /clear) and your \
             notes (MEMORY.md). Returns the best-matching passages with their dates. Use the words the person would have \
             used.",
            json!({
                "type": "object",
                "properties": {
                    "query": {"type": "string", "description": "Words to look for, e.g. \"landlord rent increase\"."},
                    "limit": {"type": "integer", "minimum": 1, "maximum": 20, "default": 5}
                },
                "required": ["query"]
            }),
        ),
        spec(
            "remember",
            "Keep a note for the long term: appended, dated, to MEMORY.md in your workspace (which you see in every \
             conversation) and found later by search_memory. One fact per note.",
            json!({
                "type": "object",
                "properties": {"note": {"type": "string", "description": "The fact, in one or two sentences."}},
                "required": ["note"]
            }),
        ),
    ]
}

pub fn call(ctx: &mut ToolCtx<'_>, name: &str, m: &Map<String, Value>) -> ToolResult {
    let mem = match ctx.memory.take() {
        Some(Ok(mem)) => mem,
        Some(Err(why)) => {
            return Err(ToolError(format!(
                "long-term memory is unavailable in this runner: {why}"
            )))
        }
        None => {
            return Err(ToolError(
                "long-term memory is unavailable here (no index was opened)".into(),
            ))
        }
    };
    let r = match name {
        "remember" => remember(ctx, mem, m),
        _ => search(ctx, mem, m),
    };
    ctx.memory = Some(Ok(mem));
    r
}

fn remember(ctx: &ToolCtx<'_>, mem: &mut Connection, m: &Map<String, Value>) -> ToolResult {
    let a = Args {
        tool: "remember",
        m,
    };
    let note: String = a
        .str("note")?
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    if note.is_empty() {
        return Err(ToolError("remember: the note is empty".into()));
    }
    if note.chars().count() > MAX_NOTE {
        return Err(ToolError(format!(
            "remember: a note is at most {MAX_NOTE} characters; keep one fact per note"
        )));
    }
    let day = jiff::Timestamp::now()
        .to_zoned_datetime(ctx.tz.clone())
        .date();
    let path = ctx.cfg.paths.workspace_dir.join(NOTES);
    let needs_newline = crate::read::regular(&path, MAX_NOTES_BYTES)
        .map(|b| !b.is_empty() && !b.ends_with(b"\n"))
        .unwrap_or(false);
    let line = format!("{}- {day}: {note}\n", if needs_newline { "\n" } else { "" });
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(&path)
        .map_err(|e| ToolError(format!("remember: cannot write {NOTES}: {e}")))?;
    f.write_all(line.as_bytes())
        .map_err(|e| ToolError(format!("remember: cannot write {NOTES}: {e}")))?;
    sync_notes(ctx, mem).map_err(|e| {
        ToolError(format!(
            "remember: the note was written but not indexed: {e}"
        ))
    })?;
    Ok(format!("Remembered (in {NOTES}): - {day}: {note}"))
}

/// Indexes MEMORY.md's lines again if the file changed since the last time.
fn sync_notes(ctx: &ToolCtx<'_>, mem: &mut Connection) -> Result<(), pinch_proto::ProtoError> {
    let text = crate::read::text(&ctx.cfg.paths.workspace_dir.join(NOTES), MAX_NOTES_BYTES)
        .unwrap_or_default();
    let mut h = std::collections::hash_map::DefaultHasher::new();
    text.hash(&mut h);
    let hash = format!("{:016x}", h.finish());
    let notes: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .take(MAX_NOTES)
        .collect();
    let tx = write_tx(mem)?;
    if memory::sync_notes(&tx, &hash, &notes, &pinch_proto::time::now())? {
        tx.commit()
            .map_err(pinch_proto::ProtoError::sqlite("indexing the notes"))?;
    }
    Ok(())
}

fn search(ctx: &ToolCtx<'_>, mem: &mut Connection, m: &Map<String, Value>) -> ToolResult {
    let a = Args {
        tool: "search_memory",
        m,
    };
    let query = a.str("query")?.trim().to_owned();
    let limit = a.opt_u64("limit")?.unwrap_or(5).clamp(1, 20) as usize;
    if let Err(e) = sync_notes(ctx, mem) {
        tracing::warn!("search_memory: the notes could not be indexed again: {e}");
    }
    let hits =
        memory::search(mem, &query, limit).map_err(|e| ToolError(format!("search_memory: {e}")))?;
    if hits.is_empty() {
        return Ok(format!("Nothing in memory matches {query:?}."));
    }
    let mut out = format!("Memory for {query:?}, best first:\n");
    for (i, h) in hits.iter().enumerate() {
        let day = h.at.get(..10).unwrap_or(&h.at);
        let who = match (h.source.as_str(), h.role.as_str()) {
            ("note", _) => "your notes".to_owned(),
            (_, "user") if h.session_id == ctx.cfg.session_id => {
                "said to you in this conversation".to_owned()
            }
            (_, "user") => format!("said to you (session {})", h.session_id),
            (_, _) if h.session_id == ctx.cfg.session_id => {
                "you said in this conversation".to_owned()
            }
            _ => format!("you said (session {})", h.session_id),
        };
        out.push_str(&format!("\n{}. {day}, {who}: {}\n", i + 1, h.snippet));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::super::testing;
    use super::*;

    #[test]
    fn remember_then_search_finds_the_note_and_turns() {
        let env = testing::Env::new();
        let mut out = env.out();
        let busy = std::time::Duration::from_secs(2);
        let mut mem = crate::memory::open(
            &out,
            &env.cfg.paths.workspace_dir,
            &env.cfg.session_id,
            busy,
        )
        .unwrap();
        let tx = write_tx(&mut mem).unwrap();
        memory::index(
            &tx,
            "old-session",
            "turn",
            "user",
            "2026-10-01T08:00:00.000Z",
            "my landlord is Mr Okafor",
        )
        .unwrap();
        tx.commit().unwrap();
        let mut ctx = ToolCtx::new(&env.cfg, &mut out, &testing::no_stop);
        ctx.memory = Some(Ok(&mut mem));
        let r = super::super::call(
            &mut ctx,
            "remember",
            r#"{"note":"Rent   rises to 900 in January"}"#,
        );
        assert!(
            !r.is_error && r.content.contains(": Rent rises to 900 in January"),
            "{r:?}"
        );
        let notes = std::fs::read_to_string(env.cfg.paths.workspace_dir.join("MEMORY.md")).unwrap();
        assert!(
            notes.starts_with("- 20") && notes.ends_with(": Rent rises to 900 in January\n"),
            "{notes}"
        );
        let r = super::super::call(&mut ctx, "search_memory", r#"{"query":"landlord rent"}"#);
        assert!(
            r.content.contains(
                "2026-10-01, said to you (session old-session): my «landlord» is Mr Okafor"
            ),
            "{}",
            r.content
        );
        assert!(
            r.content.contains("your notes: - 20") && r.content.contains("«Rent» rises"),
            "{}",
            r.content
        );
        let r = super::super::call(&mut ctx, "search_memory", r#"{"query":"zebra"}"#);
        assert_eq!(r.content, "Nothing in memory matches \"zebra\".");
    }

    #[test]
    fn without_an_index_the_tools_say_so() {
        let env = testing::Env::new();
        let mut out = env.out();
        let mut ctx = ToolCtx::new(&env.cfg, &mut out, &testing::no_stop);
        let r = super::super::call(&mut ctx, "search_memory", r#"{"query":"x"}"#);
        assert!(
            r.is_error && r.content.contains("long-term memory is unavailable"),
            "{r:?}"
        );
    }
}
