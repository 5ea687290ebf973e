//! Commands heading a batch (SPEC §5.2): answered by the runner without
//! the model, acked with their reply. `/clear` and `/compact` change the
//! conversation; `/context`, `/cost` and `/files` only report. Any other
//! `/word` is ordinary text for the model.

use std::path::Path;

use pinch_proto::runner_config::RunnerConfig;
use pinch_proto::rusqlite::Connection;
use pinch_proto::ProtoError;

use crate::compact;
use crate::history::{self, Live};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    Clear,
    Compact,
    Context,
    Cost,
    Files,
}

impl Command {
    /// The command a message's first word names, if any.
    pub fn parse(text: &str) -> Option<Command> {
        Some(match text.split_whitespace().next()? {
            "/clear" => Command::Clear,
            "/compact" => Command::Compact,
            "/context" => Command::Context,
            "/cost" => Command::Cost,
            "/files" => Command::Files,
            _ => return None,
        })
    }
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// `/context`: how full the context window is, turns, compactions.
pub fn context(
    out: &Connection,
    continuation: &str,
    system: &str,
    window: u32,
) -> Result<String, ProtoError> {
    let live = Live::load(out, continuation)?;
    let h = live.history();
    let reported = history::usage_get(out, &history::usage_key(continuation))?.last_input_tokens;
    let tokens = compact::estimate_tokens(system, &h, "", reported);
    let mut s = if window > 0 {
        format!(
            "Context: about {tokens} of {window} tokens ({} %); compaction starts at {} %.",
            tokens * 100 / u64::from(window),
            compact::THRESHOLD_PERCENT
        )
    } else {
        format!("Context: about {tokens} tokens (the provider states no window).")
    };
    let sent = live.messages().len();
    s.push_str(&format!(
        "\nConversation: {} so far, {} sent with each request.",
        plural(live.turns, "turn", "turns"),
        plural(sent, "message", "messages")
    ));
    match &live.summary {
        Some(sum) => s.push_str(&format!(
            "\nCompacted {}; the latest summary replaced {} (archived in {}).",
            plural(live.compactions, "time", "times"),
            plural(sum.messages, "message", "messages"),
            sum.archive
        )),
        None => s.push_str("\nNot compacted."),
    }
    Ok(s)
}

/// `/cost`: tokens used by this conversation and by the whole session.
pub fn cost(out: &Connection, continuation: &str) -> Result<String, ProtoError> {
    let c = history::usage_get(out, &history::usage_key(continuation))?;
    let t = history::usage_get(out, history::SESSION_USAGE)?;
    Ok(format!(
        "Tokens used (as the provider reported them):\nThis conversation: {} in, {} out over {} ({}).\nThis session: {} in, {} out over {} ({}).",
        c.input_tokens,
        c.output_tokens,
        plural(c.turns as usize, "turn", "turns"),
        plural(c.calls as usize, "model call", "model calls"),
        t.input_tokens,
        t.output_tokens,
        plural(t.turns as usize, "turn", "turns"),
        plural(t.calls as usize, "model call", "model calls"),
    ))
}

fn entries(dir: &Path) -> std::io::Result<Vec<std::fs::DirEntry>> {
    let mut v: Vec<_> = std::fs::read_dir(dir)?.collect::<Result<_, _>>()?;
    v.sort_by_key(|e| e.file_name());
    Ok(v)
}

fn human_size(n: u64) -> String {
    match n {
        n if n < 1024 => format!("{n} B"),
        n if n < 1024 * 1024 => format!("{:.1} KiB", n as f64 / 1024.0),
        n => format!("{:.1} MiB", n as f64 / (1024.0 * 1024.0)),
    }
}

/// `/files`: the workspace's top-level entries (hidden ones counted), and
/// how many items the inbox and outbox hold.
pub fn files(cfg: &RunnerConfig) -> String {
    let mut s = String::from("Workspace (/workspace/agent):");
    match entries(&cfg.paths.workspace_dir) {
        Err(e) => s.push_str(&format!(" cannot be listed ({e})")),
        Ok(list) => {
            let mut hidden = 0;
            let mut shown = 0;
            for e in list {
                let name = e.file_name().to_string_lossy().into_owned();
                if name.starts_with('.') {
                    hidden += 1;
                    continue;
                }
                shown += 1;
                // symlink_metadata: a link is shown as a link, never followed.
                match e.path().symlink_metadata() {
                    Ok(md) if md.is_dir() => s.push_str(&format!("\n- {name}/")),
                    Ok(md) if md.file_type().is_symlink() => {
                        s.push_str(&format!("\n- {name} (link)"))
                    }
                    Ok(md) => s.push_str(&format!("\n- {name} ({})", human_size(md.len()))),
                    Err(_) => s.push_str(&format!("\n- {name}")),
                }
            }
            if shown == 0 {
                s.push_str(" empty");
            }
            if hidden > 0 {
                s.push_str(&format!(
                    "\n({} not shown)",
                    plural(hidden, "hidden entry", "hidden entries")
                ));
            }
        }
    }
    let count = |d: &Path| {
        entries(d)
            .map(|v| v.len().to_string())
            .unwrap_or_else(|e| format!("unknown ({e})"))
    };
    s.push_str(&format!(
        "\nInbox: {} (files people sent, one folder per message). Outbox: {} (files you sent, one folder per message).",
        count(&cfg.paths.inbox_dir),
        count(&cfg.paths.outbox_dir)
    ));
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tools::testing::Env;

    #[test]
    fn commands_are_first_words_only() {
        assert_eq!(Command::parse("/compact"), Some(Command::Compact));
        assert_eq!(Command::parse("  /cost please"), Some(Command::Cost));
        assert_eq!(Command::parse("/costs"), None);
        assert_eq!(
            Command::parse("/weather today"),
            None,
            "unknown commands go to the model"
        );
        assert_eq!(Command::parse("what is /files"), None);
        assert_eq!(Command::parse(""), None);
    }

    #[test]
    fn files_lists_the_top_level_and_counts_boxes() {
        let env = Env::new();
        let ws = &env.cfg.paths.workspace_dir;
        std::fs::write(ws.join("notes.txt"), "hello").unwrap();
        std::fs::create_dir_all(ws.join("conversations/deep")).unwrap();
        std::fs::create_dir_all(ws.join(".home")).unwrap();
        std::os::unix::fs::symlink("/etc", ws.join("etc-link")).unwrap();
        std::fs::create_dir_all(env.cfg.paths.inbox_dir.join("12")).unwrap();
        std::fs::create_dir_all(env.cfg.paths.outbox_dir.join("out-1")).unwrap();
        std::fs::create_dir_all(env.cfg.paths.outbox_dir.join("out-2")).unwrap();
        let s = files(&env.cfg);
        assert!(s.contains("- notes.txt (5 B)"), "{s}");
        assert!(s.contains("- conversations/"), "{s}");
        assert!(!s.contains("deep"), "top level only: {s}");
        assert!(s.contains("- etc-link (link)"), "{s}");
        assert!(s.contains("(1 hidden entry not shown)"), "{s}");
        assert!(s.contains("Inbox: 1 ") && s.contains("Outbox: 2 "), "{s}");
    }

    #[test]
    fn cost_and_context_read_the_state() {
        let env = Env::new();
        let mut out = env.out();
        let tx = pinch_proto::open::write_tx(&mut out).unwrap();
        history::append(
            &tx,
            "c1",
            &[("user", &"u".repeat(400)), ("assistant", &"a".repeat(400))],
            "t",
        )
        .unwrap();
        let mut spent = history::Spent::default();
        spent.add(pinch_providers::Usage {
            input_tokens: 120,
            output_tokens: 30,
        });
        history::usage_record(&tx, "c1", &spent, true, "t").unwrap();
        tx.commit().unwrap();
        let c = cost(&out, "c1").unwrap();
        assert!(
            c.contains("This conversation: 120 in, 30 out over 1 turn (1 model call)"),
            "{c}"
        );
        let x = context(&out, "c1", "", 1000).unwrap();
        assert!(
            x.starts_with("Context: about 200 of 1000 tokens (20 %)"),
            "{x}"
        );
        assert!(x.contains("1 turn so far, 2 messages sent"), "{x}");
        assert!(x.contains("Not compacted."), "{x}");
    }
}
