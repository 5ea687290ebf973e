//! A runner's log files: what its last error was, whether it named a
//! corrupt inbound view, and keeping only the newest few.

use std::path::{Path, PathBuf};

/// Whether the runner's last log lines name a corrupt inbound view.
pub(super) fn detail_is_corruption(log: &Path) -> bool {
    let Ok(text) = std::fs::read(log) else {
        return false;
    };
    let tail = String::from_utf8_lossy(&text[text.len().saturating_sub(2048)..]).to_string();
    tail.contains("could not be read") || tail.contains("read failed as corrupt")
}

/// The last error the runner's log records: its last `ERROR` line (the
/// text after the level) or a Rust panic message, whichever came later;
/// `None` when the log has neither (then the exit status says it all).
pub(super) fn last_error_line(path: &Path) -> Option<String> {
    use std::io::{Read, Seek, SeekFrom};
    const TAIL: u64 = 64 * 1024;
    let mut f = std::fs::File::open(path).ok()?;
    let len = f.metadata().ok()?.len();
    f.seek(SeekFrom::Start(len.saturating_sub(TAIL))).ok()?;
    let mut text = Vec::new();
    f.take(TAIL).read_to_end(&mut text).ok()?;
    error_in_log(&String::from_utf8_lossy(&text))
}

pub(super) fn error_in_log(text: &str) -> Option<String> {
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    lines.iter().enumerate().rev().find_map(|(i, l)| {
        let msg = if let Some((_, rest)) = l.split_once(" ERROR ") {
            rest.trim().to_owned()
        } else if let Some(rest) = l.strip_prefix("ERROR ") {
            rest.trim().to_owned()
        } else if l.starts_with("thread '") && l.contains("panicked at") {
            // The panic's message is on the next line (Rust ≥ 1.73).
            match lines
                .get(i + 1)
                .filter(|n| l.ends_with(':') && !n.is_empty())
            {
                Some(n) => format!("{l} {n}"),
                None => (*l).to_owned(),
            }
        } else {
            return None;
        };
        (!msg.is_empty()).then(|| msg.chars().take(500).collect())
    })
}

/// Keeps the newest `keep` runner logs of a session.
pub(super) fn prune_logs(dir: &Path, keep: usize) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    let mut files: Vec<(std::time::SystemTime, PathBuf)> = rd
        .flatten()
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .collect();
    files.sort();
    let n = files.len();
    for (_, p) in files.into_iter().take(n.saturating_sub(keep)) {
        let _ = std::fs::remove_file(p);
    }
}

#[cfg(test)]
mod tests {
    use super::error_in_log;

    #[test]
    fn the_last_error_line_is_quoted_not_the_last_line() {
        let log = "2026-12-04T22:57:38.1Z  INFO runner started\n\
                   2026-12-04T22:57:39.1Z ERROR provider: the API key was refused\n\
                   2026-12-04T22:57:39.2Z  INFO exiting\n";
        assert_eq!(
            error_in_log(log).as_deref(),
            Some("provider: the API key was refused")
        );
        let panic =
            "2026-12-04T22:57:38.1Z ERROR old\nthread 'main' panicked at src/x.rs:1:1:\nboom\n";
        assert_eq!(
            error_in_log(panic).as_deref(),
            Some("thread 'main' panicked at src/x.rs:1:1: boom")
        );
        assert_eq!(error_in_log("2026-12-04T22:57:38.1Z  INFO fine\n"), None);
        assert_eq!(error_in_log(""), None);
    }
}
