//! `pinch admin repair` and `pinch admin restore [BACKUP]`: offline recovery
//! of the central DB (issue 15), run with the host stopped. The work is in
//! `pinch_host::repair`; this prints its report. Exit codes: 0 done, 1 it
//! could not (the error names the file and the fix), 2 usage.

use std::path::PathBuf;

/// The offline verbs, when `words` start with one of them.
pub fn is_offline(words: &[String]) -> bool {
    matches!(
        words.first().map(String::as_str),
        Some("repair" | "restore")
    )
}

pub const HELP: &str = "
With the host stopped (no socket needed):
  pinch admin repair [--force]    rebuild pinch.db's sessions from the session folders
                                  (--force: even when pinch.db looks healthy)
  pinch admin restore [BACKUP]    put a backup (default: the newest in <data>/backups) in place
Both keep the current pinch.db aside as pinch.db.damaged-<time> and print what they rebuilt.
";

pub fn run(data_dir: PathBuf, login: &str, words: &[String]) -> i32 {
    let data = pinch_host::paths::DataDir::new(data_dir);
    let rest: Vec<&str> = words[1..].iter().map(String::as_str).collect();
    let res = match (words[0].as_str(), rest.as_slice()) {
        ("repair", []) => pinch_host::repair::repair(&data, login, false),
        ("repair", ["--force"]) => pinch_host::repair::repair(&data, login, true),
        ("restore", []) => pinch_host::repair::restore(&data, None),
        ("restore", [b]) if !b.starts_with('-') => {
            pinch_host::repair::restore(&data, Some(std::path::Path::new(b)))
        }
        (verb, _) => {
            eprintln!("pinch admin {verb}: unexpected arguments {rest:?}{HELP}");
            return 2;
        }
    };
    match res {
        Ok(report) => {
            print!("{report}");
            println!("start the host again: pinch host (or pinch chat)");
            0
        }
        Err(e) => {
            eprintln!("pinch admin {}: {e:#}", words[0]);
            1
        }
    }
}
