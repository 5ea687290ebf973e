//! A session's detail for the dashboard (issue 18): its last turns both
//! ways, the tool calls its runners logged with their durations, the tail
//! of its newest runner log, and (from the central DB, added by the
//! caller) its last exit and cause. Read off the main loop, from the
//! session's files: the DBs read-only (the agent's `outbound.db` through
//! the bounded reader), the log's last 64 KiB only, never following a link.

use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use pinch_proto::content::{ChatIn, ChatOut, InContent};
use serde_json::{json, Value};

use crate::paths::SessionDir;
use crate::session::BUSY;

/// Turns shown.
const TURNS: i64 = 10;
/// Log lines shown.
const LOG_LINES: usize = 40;
/// Tool calls shown.
const TOOL_CALLS: usize = 20;
/// The most of a log read.
const LOG_TAIL: u64 = 64 * 1024;
/// The most of one message's text shown.
const TEXT: usize = 400;

fn cut(s: &str) -> String {
    let mut t: String = s.chars().take(TEXT).collect();
    if s.chars().count() > TEXT {
        t.push('…');
    }
    t
}

/// The newest turns both ways, oldest first: `{at, from, text}`.
fn turns(dir: &SessionDir) -> Vec<Value> {
    let mut v = Vec::new();
    if let Ok(c) = pinch_proto::open::open_reader(&dir.inbound_db(), BUSY) {
        for (at, content) in pinch_proto::inbound::recent_chat(&c, TURNS).unwrap_or_default() {
            if let Ok(InContent::Chat(ChatIn { text, sender, .. })) =
                InContent::parse("chat", &content)
            {
                v.push(json!({"at": at, "from": sender.unwrap_or_else(|| "user".into()), "text": cut(&text)}));
            }
        }
    }
    if let Ok(c) = pinch_proto::open::open_agent_reader(&dir.outbound_db(), BUSY) {
        for r in pinch_proto::outbound::recent_chat(&c, TURNS).unwrap_or_default() {
            let text = match ChatOut::parse(&r.content) {
                Ok(ChatOut::Text { text, .. }) => text,
                Ok(ChatOut::AskQuestion { question, .. }) => question,
                Ok(ChatOut::Card { fallback_text, .. }) => fallback_text,
                _ => continue,
            };
            v.push(json!({"at": r.timestamp, "from": "agent", "text": cut(&text)}));
        }
    }
    v.sort_by(|a, b| a["at"].as_str().cmp(&b["at"].as_str()));
    let skip = v.len().saturating_sub(TURNS as usize);
    v.split_off(skip)
}

/// The session's runner logs, newest first.
fn logs(dir: &Path) -> Vec<PathBuf> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<(std::time::SystemTime, PathBuf)> = rd
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .collect();
    files.sort();
    files.into_iter().rev().map(|(_, p)| p).collect()
}

/// The last [`LOG_TAIL`] bytes of a log (never through a link).
fn tail(path: &Path) -> String {
    let read = || -> std::io::Result<Vec<u8>> {
        let mut f = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(path)?;
        if !f.metadata()?.is_file() {
            return Ok(Vec::new());
        }
        let len = f.metadata()?.len();
        f.seek(SeekFrom::Start(len.saturating_sub(LOG_TAIL)))?;
        let mut b = Vec::new();
        f.take(LOG_TAIL).read_to_end(&mut b)?;
        Ok(b)
    };
    String::from_utf8_lossy(&read().unwrap_or_default()).into_owned()
}

/// A `tool call` line of a runner log: `{at, tool, ms, error}`.
pub fn tool_call(line: &str) -> Option<Value> {
    let (head, rest) = line.split_once(" tool call ")?;
    let at = head.split_whitespace().next().unwrap_or_default();
    let field = |k: &str| {
        rest.split_whitespace()
            .find_map(|t| t.strip_prefix(k)?.strip_prefix('='))
    };
    let tool: String = field("tool")?.chars().take(80).collect();
    Some(json!({
        "at": at,
        "tool": tool,
        "ms": field("ms").and_then(|m| m.parse::<u64>().ok()),
        "error": field("is_error") == Some("true"),
    }))
}

/// The detail of the session in `dir` whose runner logs are in `log_dir`.
pub fn read(dir: &SessionDir, log_dir: &Path) -> Value {
    let logs = logs(log_dir);
    let newest = logs.first().map(|p| tail(p)).unwrap_or_default();
    let mut calls: Vec<Value> = Vec::new();
    for p in logs.iter().take(3) {
        let text = if Some(p) == logs.first() {
            newest.clone()
        } else {
            tail(p)
        };
        let mut these: Vec<Value> = text.lines().filter_map(tool_call).collect();
        these.reverse();
        calls.extend(these);
        if calls.len() >= TOOL_CALLS {
            break;
        }
    }
    calls.truncate(TOOL_CALLS);
    let lines: Vec<&str> = newest.lines().collect();
    let log_tail: Vec<String> = lines[lines.len().saturating_sub(LOG_LINES)..]
        .iter()
        .map(|l| l.chars().take(500).collect())
        .collect();
    json!({
        "turns": turns(dir),
        "tool_calls": calls,
        "log": log_tail,
        "log_file": logs.first().and_then(|p| p.file_name()).map(|n| n.to_string_lossy().into_owned()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tool_call_lines_are_read_and_others_skipped() {
        let l = "2026-12-05T14:55:01.123Z  INFO session{session_id=s1}: pinch_runner::agent: tool call tool=web_fetch is_error=false ms=312";
        assert_eq!(
            tool_call(l),
            Some(
                json!({"at": "2026-12-05T14:55:01.123Z", "tool": "web_fetch", "ms": 312, "error": false})
            )
        );
        let e = "2026-12-05T14:55:02Z  INFO x: tool call tool=shell is_error=true ms=5";
        assert_eq!(tool_call(e).unwrap()["error"], true);
        assert_eq!(
            tool_call("2026-12-05T14:55:02Z  INFO x: claimed batch"),
            None
        );
    }

    #[test]
    fn a_log_that_is_a_link_is_not_followed() {
        let (d, elsewhere) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        std::fs::write(elsewhere.path().join("secret"), "do not show").unwrap();
        std::os::unix::fs::symlink(elsewhere.path().join("secret"), d.path().join("r1.log"))
            .unwrap();
        assert_eq!(tail(&d.path().join("r1.log")), "");
        assert!(logs(d.path()).is_empty(), "a link is not a log");
    }
}
