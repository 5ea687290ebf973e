//! Agent Skills (issue 17): folders holding a `SKILL.md` — YAML front
//! matter with `name` and `description`, then instructions — the format
//! Claude Code, Codex and others use. Found under the global folder's
//! `skills/` (every agent, read-only) and the agent's own `skills/` (which
//! wins on a name clash). Their names and descriptions are listed in the
//! system prompt; `load_skill` gives one's instructions and its files,
//! whose scripts run with the `shell` tool like any file.
//!
//! Only `name` and `description` are read from the front matter, so it is
//! read by a small reader of plain, quoted and block (`>`, `|`) scalars
//! rather than a YAML library (decision 0044): [`pinch_policy::skills`],
//! shared with the host's `pinch admin groups skills`.

use std::path::{Path, PathBuf};

use pinch_policy::skills::{front_matter, HEAD};
use pinch_proto::runner_config::RunnerConfig;

/// Skills listed at most (the rest are named in a log line).
const MAX_SKILLS: usize = 100;
/// A `SKILL.md` larger than this is not loaded whole.
pub const MAX_BODY: usize = 256 * 1024;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Skill {
    pub name: String,
    pub description: String,
    /// The skill's folder, as the sandbox sees it.
    pub dir: PathBuf,
}

/// The skill folders' parents: the global one first, then the agent's.
fn roots(cfg: &RunnerConfig) -> Vec<PathBuf> {
    let mut r: Vec<PathBuf> = cfg
        .paths
        .global_dir
        .iter()
        .map(|d| d.join("skills"))
        .collect();
    r.push(cfg.paths.workspace_dir.join("skills"));
    r
}

/// Every usable skill, by name; the agent's own replace global ones.
pub fn list(cfg: &RunnerConfig) -> Vec<Skill> {
    let mut out: Vec<Skill> = Vec::new();
    for root in roots(cfg) {
        let Ok(entries) = std::fs::read_dir(&root) else {
            continue;
        };
        let mut dirs: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
        dirs.sort();
        for dir in dirs {
            let file = dir.join("SKILL.md");
            let Ok(head) = read_head(&file) else { continue };
            match front_matter(&head) {
                Ok((name, description)) => {
                    out.retain(|s| s.name != name);
                    out.push(Skill {
                        name,
                        description,
                        dir,
                    });
                }
                Err(why) => tracing::warn!(file = %file.display(), "skill left out: {why}"),
            }
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    if out.len() > MAX_SKILLS {
        tracing::warn!(
            count = out.len(),
            "more than {MAX_SKILLS} skills; the rest are not listed"
        );
        out.truncate(MAX_SKILLS);
    }
    out
}

fn read_head(file: &Path) -> std::io::Result<String> {
    crate::read::text(file, HEAD)
}

/// A skill's instructions and the other files of its folder, for
/// `load_skill`.
pub fn load(cfg: &RunnerConfig, name: &str) -> Result<String, String> {
    let skills = list(cfg);
    let Some(skill) = skills.iter().find(|s| s.name == name) else {
        let names: Vec<&str> = skills.iter().map(|s| s.name.as_str()).collect();
        return Err(if names.is_empty() {
            format!("no skill named {name:?}: there are no skills")
        } else {
            format!(
                "no skill named {name:?}; the skills are: {}",
                names.join(", ")
            )
        });
    };
    let file = skill.dir.join("SKILL.md");
    let mut text = crate::read::text(&file, MAX_BODY + 1)
        .map_err(|e| format!("reading {}: {e}", file.display()))?;
    if text.len() > MAX_BODY {
        let mut end = MAX_BODY;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push_str("\n[SKILL.md is longer; read the rest with read_file]");
    }
    let mut files = Vec::new();
    walk(&skill.dir, &skill.dir, &mut files);
    files.sort();
    let mut out = format!(
        "Skill {} (folder {}):\n\n{}",
        skill.name,
        skill.dir.display(),
        text.trim_end()
    );
    if !files.is_empty() {
        out.push_str(&format!(
            "\n\nFiles in {} (run scripts with the shell tool):\n",
            skill.dir.display()
        ));
        for f in &files {
            out.push_str(&format!("- {f}\n"));
        }
    }
    Ok(out)
}

/// The skill folder's files (not SKILL.md), relative, at most 200, links
/// not followed.
fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        if out.len() >= 200 {
            return;
        }
        let Ok(t) = e.file_type() else { continue };
        let p = e.path();
        if t.is_dir() {
            walk(root, &p, out);
        } else if t.is_file() {
            let rel = p
                .strip_prefix(root)
                .unwrap_or(&p)
                .to_string_lossy()
                .into_owned();
            if rel != "SKILL.md" {
                out.push(rel);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_agents_skills_replace_global_ones_and_load_lists_files() {
        let env = crate::tools::testing::Env::new();
        let mut cfg = env.cfg.clone();
        let global = env.cfg.paths.workspace_dir.parent().unwrap().join("global");
        cfg.paths.global_dir = Some(global.clone());
        let put = |dir: &Path, name: &str, desc: &str| {
            std::fs::create_dir_all(dir.join(name)).unwrap();
            std::fs::write(
                dir.join(name).join("SKILL.md"),
                format!("---\nname: {name}\ndescription: {desc}\n---\n# {name}\nDo the thing.\n"),
            )
            .unwrap();
        };
        put(&global.join("skills"), "brief", "global brief");
        put(&global.join("skills"), "other", "only global");
        put(&cfg.paths.workspace_dir.join("skills"), "brief", "my brief");
        std::fs::create_dir_all(cfg.paths.workspace_dir.join("skills/brief/scripts")).unwrap();
        std::fs::write(
            cfg.paths.workspace_dir.join("skills/brief/scripts/run.sh"),
            "echo hi",
        )
        .unwrap();
        std::fs::create_dir_all(cfg.paths.workspace_dir.join("skills/broken")).unwrap();
        std::fs::write(
            cfg.paths.workspace_dir.join("skills/broken/SKILL.md"),
            "no front matter",
        )
        .unwrap();
        let l = list(&cfg);
        let got: Vec<(&str, &str)> = l
            .iter()
            .map(|s| (s.name.as_str(), s.description.as_str()))
            .collect();
        assert_eq!(got, [("brief", "my brief"), ("other", "only global")]);
        let body = load(&cfg, "brief").unwrap();
        assert!(
            body.contains("# brief\nDo the thing.") && body.contains("- scripts/run.sh"),
            "{body}"
        );
        let e = load(&cfg, "nope").unwrap_err();
        assert!(e.contains("the skills are: brief, other"), "{e}");
    }

    /// The examples shipped in the repository's `skills/` are valid.
    #[test]
    fn the_shipped_skills_parse() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../skills");
        let mut names = Vec::new();
        for e in std::fs::read_dir(&root).unwrap().flatten() {
            let text = std::fs::read_to_string(e.path().join("SKILL.md")).unwrap();
            let (name, description) = front_matter(&text).unwrap();
            assert_eq!(
                e.file_name().to_string_lossy(),
                name,
                "the folder is named after the skill"
            );
            assert!(description.len() > 20);
            names.push(name);
        }
        names.sort();
        assert_eq!(names, ["daily-briefing", "summarise-web-page"]);
    }
}
