//! `pinch admin groups skills <id>`: the Agent Skills an agent group sees
//! (decision 0044) — the global `groups/global/skills/` and the group's
//! own `skills/` (which wins on a name clash), each folder's `SKILL.md`
//! front matter read as the runner reads it ([`pinch_policy::skills`]).
//! The agent can write its own folder, so everything beneath the groups
//! folder is opened beneath a directory descriptor ([`crate::safe_fs`]):
//! no link is followed, no FIFO waited on, at most [`MAX_LISTED`]
//! folders and [`pinch_policy::skills::HEAD`] bytes of each file read.

use std::io::Read;
use std::path::Path;

use serde_json::{json, Value};

use crate::safe_fs::Dir;

/// Skill folders looked at per root.
pub const MAX_LISTED: usize = 200;

/// One row; every row has every key, so a table shows each column.
fn row(scope: &str, folder: &str, skill: Option<(String, String)>, error: Option<String>) -> Value {
    let (name, description) = skill.map_or((None, None), |(n, d)| (Some(n), Some(d)));
    json!({
        "name": name,
        "scope": scope,
        "shadowed": false,
        "folder": folder,
        "description": description,
        "error": error,
    })
}

/// The skills of the group in `folder`, as JSON rows: `name`, `scope`
/// (`global`/`agent`), `shadowed` (a global skill the agent's own
/// replaces), `folder` (as the agent sees it), `description`, and `error`
/// for a folder whose `SKILL.md` cannot be used.
pub fn list(groups_dir: &Path, folder: &str) -> Result<Vec<Value>, String> {
    let root = Dir::open_trusted(groups_dir).map_err(|e| e.to_string())?;
    let mut rows = Vec::new();
    for (scope, base, shown) in [
        ("global", "global".to_owned(), "/workspace/global/skills"),
        ("agent", folder.to_owned(), "/workspace/agent/skills"),
    ] {
        let dir = match root.dir(&base).and_then(|d| d.dir("skills")) {
            Ok(d) => d,
            Err(crate::safe_fs::Error::Missing(_)) => continue,
            Err(e) => {
                rows.push(row(scope, shown, None, Some(e.to_string())));
                continue;
            }
        };
        // The descriptor's own listing: the folder opened above, whatever
        // its name now points at.
        let mut names: Vec<String> = match std::fs::read_dir(dir.proc_path()) {
            // At most MAX_LISTED entries are looked at, whatever they are.
            Ok(rd) => rd
                .take(MAX_LISTED)
                .flatten()
                .filter_map(|e| e.file_name().into_string().ok())
                .filter(|n| !n.starts_with('.'))
                .collect(),
            Err(e) => {
                rows.push(row(scope, shown, None, Some(e.to_string())));
                continue;
            }
        };
        names.sort();
        for name in names {
            let at = format!("{shown}/{name}");
            let read = dir.dir(&name).and_then(|d| d.open_file("SKILL.md"));
            let row = match read {
                Err(crate::safe_fs::Error::Missing(_) | crate::safe_fs::Error::NotDir(_)) => {
                    continue
                }
                Err(e) => row(scope, &at, None, Some(e.to_string())),
                Ok(f) => {
                    let mut head = Vec::new();
                    match f
                        .take(pinch_policy::skills::HEAD as u64)
                        .read_to_end(&mut head)
                    {
                        Err(e) => row(scope, &at, None, Some(e.to_string())),
                        Ok(_) => {
                            match pinch_policy::skills::front_matter(&String::from_utf8_lossy(
                                &head,
                            )) {
                                Ok((n, d)) => row(scope, &at, Some((n, d)), None),
                                Err(why) => row(scope, &at, None, Some(why)),
                            }
                        }
                    }
                }
            };
            rows.push(row);
        }
    }
    // The agent's own skill replaces a global one of the same name.
    let own: Vec<String> = rows
        .iter()
        .filter(|r| r["scope"] == "agent")
        .filter_map(|r| r["name"].as_str().map(str::to_owned))
        .collect();
    for r in rows.iter_mut() {
        if r["scope"] == "global"
            && r["name"]
                .as_str()
                .is_some_and(|n| own.iter().any(|o| o == n))
        {
            r["shadowed"] = json!(true);
        }
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn skill(dir: &Path, name: &str, description: &str) {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(
            dir.join("SKILL.md"),
            format!("---\nname: {name}\ndescription: {description}\n---\nBody\n"),
        )
        .unwrap();
    }

    #[test]
    fn global_and_own_skills_are_listed_and_traps_refused() {
        let t = tempfile::tempdir().unwrap();
        let g = t.path();
        skill(
            &g.join("global/skills/briefing"),
            "daily-briefing",
            "Global brief.",
        );
        skill(
            &g.join("global/skills/web"),
            "summarise-web-page",
            "Summarise.",
        );
        skill(
            &g.join("main/skills/brief"),
            "daily-briefing",
            "My own brief.",
        );
        std::fs::create_dir_all(g.join("main/skills/broken")).unwrap();
        std::fs::write(g.join("main/skills/broken/SKILL.md"), "no front matter").unwrap();
        // The agent's traps: a link to a host file, a FIFO, a link as the
        // skills folder of another group.
        std::fs::create_dir_all(g.join("main/skills/link")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", g.join("main/skills/link/SKILL.md")).unwrap();
        std::fs::create_dir_all(g.join("main/skills/fifo")).unwrap();
        let fifo = std::ffi::CString::new(
            g.join("main/skills/fifo/SKILL.md")
                .as_os_str()
                .as_encoded_bytes(),
        )
        .unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
        std::fs::create_dir_all(g.join("other")).unwrap();
        std::os::unix::fs::symlink(g.join("main/skills"), g.join("other/skills")).unwrap();

        let rows = list(g, "main").unwrap();
        let by = |folder: &str| {
            rows.iter()
                .find(|r| r["folder"] == folder)
                .unwrap_or_else(|| panic!("{folder} in {rows:#?}"))
                .clone()
        };
        let global = by("/workspace/global/skills/briefing");
        assert_eq!(global["name"], "daily-briefing");
        assert_eq!(global["shadowed"], true);
        assert_eq!(by("/workspace/global/skills/web")["shadowed"], false);
        assert_eq!(
            by("/workspace/agent/skills/brief")["description"],
            "My own brief."
        );
        assert!(by("/workspace/agent/skills/broken")["error"]
            .as_str()
            .unwrap()
            .contains("must start with"));
        assert!(by("/workspace/agent/skills/link")["error"]
            .as_str()
            .unwrap()
            .contains("symbolic link"));
        assert!(by("/workspace/agent/skills/fifo")["error"]
            .as_str()
            .unwrap()
            .contains("not a regular file"));
        let other = list(g, "other").unwrap();
        assert!(
            other.iter().any(|r| r["scope"] == "agent"
                && r["error"]
                    .as_str()
                    .is_some_and(|e| e.contains("symbolic link"))),
            "{other:#?}"
        );
        assert_eq!(list(g, "nobody").unwrap().len(), 2, "global ones only");
    }
}
