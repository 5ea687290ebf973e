//! `read_file`, `write_file`, `edit_file`, and the path resolution every
//! file-touching tool uses (SPEC §7.8, lessons 32).
//!
//! Two halves: [`pinch_policy::path::check`] refuses what is wrong on its
//! face (absolute paths outside the roots, `..`, NUL and control
//! characters); [`resolve`] then walks the real folders component by
//! component with `lstat`, following a symlink only when its `realpath`
//! stays inside the root's `realpath`. New files are created with
//! `O_EXCL | O_NOFOLLOW`, existing ones opened with `O_NOFOLLOW`, so a
//! symlink planted after the check is not followed at the last step.

use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use pinch_policy::path::{check_file, Access, Checked, Root};
use serde_json::{json, Map, Value};

use super::{spec, Args, ToolCtx, ToolError, ToolResult};
use pinch_proto::runner_config::RunnerConfig;
use pinch_providers::ToolSpec;

/// Largest file the tools read or edit.
pub const MAX_FILE_BYTES: u64 = 16 * 1024 * 1024;
/// Largest text returned by one `read_file`.
pub const READ_CAP: usize = 64 * 1024;
const DEFAULT_LINES: u64 = 2000;

pub fn specs() -> Vec<ToolSpec> {
    let path_desc =
        "A path relative to your workspace (/workspace/agent), e.g. notes/todo.md. For reading, \
                     /workspace/inbox/... (attachments) and /workspace/global/... also work.";
    vec![
        spec(
            "read_file",
            "Read a text file (or list a folder). Returns numbered lines; use offset and limit for long files.",
            json!({
                "type": "object",
                "properties": {
                    "path": {"type": "string", "description": path_desc},
                    "offset": {"type": "integer", "minimum": 1, "description": "First line to return (1-based). Default 1."},
                    "limit": {"type": "integer", "minimum": 1, "description": "Most lines to return. Default 2000."}
                },
                "required": ["path"]
            }),
        ),
        spec(
            "write_file",
            "Create or overwrite a file in your workspace with the given content (folders are created as needed).",
            json!({
                "type": "object",
                "properties": {
                    "path": {"type": "string", "description": "A path relative to your workspace."},
                    "content": {"type": "string", "description": "The whole new content of the file."}
                },
                "required": ["path", "content"]
            }),
        ),
        spec(
            "edit_file",
            "Replace one exact piece of text in a workspace file. `old` must occur exactly once; include enough \
             surrounding text to make it unique.",
            json!({
                "type": "object",
                "properties": {
                    "path": {"type": "string", "description": "A path relative to your workspace."},
                    "old": {"type": "string", "description": "The exact text to replace (must occur once)."},
                    "new": {"type": "string", "description": "The replacement text."}
                },
                "required": ["path", "old", "new"]
            }),
        ),
    ]
}

pub fn call(ctx: &mut ToolCtx<'_>, name: &str, m: &Map<String, Value>) -> ToolResult {
    match name {
        "read_file" => {
            let a = Args {
                tool: "read_file",
                m,
            };
            read_file(
                ctx.cfg,
                a.str("path")?,
                a.opt_u64("offset")?,
                a.opt_u64("limit")?,
            )
        }
        "write_file" => {
            let a = Args {
                tool: "write_file",
                m,
            };
            write_file(ctx.cfg, a.str("path")?, a.str("content")?)
        }
        _ => {
            let a = Args {
                tool: "edit_file",
                m,
            };
            edit_file(ctx.cfg, a.str("path")?, a.str("old")?, a.str("new")?)
        }
    }
}

/// A path resolved against the real folders.
#[derive(Debug)]
pub struct Resolved {
    pub checked: Checked,
    /// The real path: canonical when it exists; else the canonical deepest
    /// existing folder plus the missing names.
    pub real: PathBuf,
    pub exists: bool,
}

fn root_dir(cfg: &RunnerConfig, root: Root) -> Result<PathBuf, ToolError> {
    match root {
        Root::Workspace => Ok(cfg.paths.workspace_dir.clone()),
        Root::Inbox => Ok(cfg.paths.inbox_dir.clone()),
        Root::Global => cfg
            .paths
            .global_dir
            .clone()
            .ok_or_else(|| ToolError("there is no global folder in this setup".into())),
        Root::Extra => Err(ToolError(format!(
            "/workspace/extra holds: {}",
            extra_names(cfg)
        ))),
    }
}

fn extra_names(cfg: &RunnerConfig) -> String {
    if cfg.paths.extra.is_empty() {
        "nothing (the owner has shared no extra folders)".into()
    } else {
        cfg.paths
            .extra
            .iter()
            .map(|e| {
                format!(
                    "{}{}",
                    e.name,
                    if e.read_write { "" } else { " (read-only)" }
                )
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// The folder a checked path starts from and how many of its components
/// that folder already accounts for (an extra mount's name).
fn base_of(
    cfg: &RunnerConfig,
    checked: &Checked,
    access: Access,
) -> Result<(PathBuf, usize), ToolError> {
    if checked.root != Root::Extra {
        return root_dir(cfg, checked.root).map(|d| (d, 0));
    }
    let name = checked
        .components
        .first()
        .map(String::as_str)
        .unwrap_or_default();
    let Some(m) = cfg.paths.extra.iter().find(|e| e.name == name) else {
        return Err(ToolError(format!(
            "there is no extra folder {name:?}; /workspace/extra holds: {}",
            extra_names(cfg)
        )));
    };
    if access == Access::Write && !m.read_write {
        return Err(ToolError(format!("/workspace/extra/{name} is read-only; write inside your workspace (a relative path) instead")));
    }
    Ok((m.path.clone(), 1))
}

/// Checks and resolves `path` for `access`.
pub fn resolve(cfg: &RunnerConfig, path: &str, access: Access) -> Result<Resolved, ToolError> {
    let checked = check_file(path, access)?;
    let (dir, skip) = base_of(cfg, &checked, access)?;
    if skip == checked.components.len() {
        return Err(ToolError(format!(
            "{} names a folder itself, not a file inside it",
            checked.display()
        )));
    }
    let root = std::fs::canonicalize(&dir).map_err(|e| {
        ToolError(format!(
            "the folder {} is not available: {e}",
            checked.display()
        ))
    })?;
    let shown = checked.display();
    let mut cur = root.clone();
    for (i, comp) in checked.components.iter().enumerate().skip(skip) {
        let next = cur.join(comp);
        match std::fs::symlink_metadata(&next) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut real = next;
                for c in &checked.components[i + 1..] {
                    real.push(c);
                }
                return Ok(Resolved { checked, real, exists: false });
            }
            Err(e) => return Err(ToolError(format!("cannot look at {shown}: {e}"))),
            Ok(md) if md.file_type().is_symlink() => match std::fs::canonicalize(&next) {
                Ok(target) if target.starts_with(&root) => cur = target,
                Ok(_) => {
                    return Err(ToolError(format!(
                        "path escapes the workspace: {shown} goes through a symlink that leads outside {}; refused",
                        checked.root.sandbox_path()
                    )))
                }
                Err(_) => {
                    return Err(ToolError(format!(
                        "{shown} goes through a symlink whose target does not exist or cannot be followed; refused"
                    )))
                }
            },
            Ok(md) => {
                if !md.is_dir() && i + 1 < checked.components.len() {
                    return Err(ToolError(format!("{shown}: {comp} is a file, not a folder")));
                }
                cur = next;
            }
        }
    }
    Ok(Resolved {
        checked,
        real: cur,
        exists: true,
    })
}

/// Opens an existing file for reading, refusing what is not a regular file
/// (opened non-blocking, so a FIFO put there never holds the tool).
pub fn open_regular(r: &Resolved) -> Result<(std::fs::File, u64), ToolError> {
    let shown = r.checked.display();
    let f = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(&r.real)
        .map_err(|e| ToolError(format!("cannot open {shown}: {e}")))?;
    let md = f
        .metadata()
        .map_err(|e| ToolError(format!("cannot stat {shown}: {e}")))?;
    if !md.is_file() {
        return Err(ToolError(format!("{shown} is not a regular file")));
    }
    Ok((f, md.len()))
}

fn read_bytes(r: &Resolved) -> Result<Vec<u8>, ToolError> {
    let (f, len) = open_regular(r)?;
    if len > MAX_FILE_BYTES {
        return Err(ToolError(format!(
            "{} is {len} bytes; the file tools handle up to {MAX_FILE_BYTES}; use the shell (head, grep, sed -n) for parts of it",
            r.checked.display()
        )));
    }
    let mut buf = Vec::with_capacity(len as usize);
    f.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut buf)
        .map_err(|e| ToolError(format!("reading {}: {e}", r.checked.display())))?;
    Ok(buf)
}

pub fn read_file(
    cfg: &RunnerConfig,
    path: &str,
    offset: Option<u64>,
    limit: Option<u64>,
) -> ToolResult {
    // The root folder itself may be listed.
    let r = match pinch_policy::path::check(path, Access::Read)? {
        c if c.components.is_empty() => {
            let dir = root_dir(cfg, c.root)?;
            return list_dir(&dir, &c.display());
        }
        c if c.root == Root::Extra && c.components.len() == 1 => {
            let (dir, _) = base_of(cfg, &c, Access::Read)?;
            return list_dir(&dir, &c.display());
        }
        _ => resolve(cfg, path, Access::Read)?,
    };
    let shown = r.checked.display();
    if !r.exists {
        return Err(ToolError(format!("{shown} does not exist")));
    }
    if r.real.is_dir() {
        return list_dir(&r.real, &shown);
    }
    let bytes = read_bytes(&r)?;
    let text = String::from_utf8_lossy(&bytes);
    let first = offset.unwrap_or(1).max(1);
    let limit = limit.unwrap_or(DEFAULT_LINES).max(1);
    let total = text.lines().count() as u64;
    if first > total.max(1) {
        return Err(ToolError(format!(
            "{shown} has {total} lines; offset {first} is past the end"
        )));
    }
    let mut out = String::new();
    let mut last = first - 1;
    for (i, line) in text
        .lines()
        .enumerate()
        .skip((first - 1) as usize)
        .take(limit as usize)
    {
        let l = format!("{:>6}\t{line}\n", i + 1);
        if out.len() + l.len() > READ_CAP {
            out.push_str(&format!(
                "[stopped at {READ_CAP} bytes; continue with offset {}]\n",
                i + 1
            ));
            return Ok(out);
        }
        out.push_str(&l);
        last = i as u64 + 1;
    }
    if last < total {
        out.push_str(&format!(
            "[lines {first}-{last} of {total}; continue with offset {}]\n",
            last + 1
        ));
    }
    if matches!(text, std::borrow::Cow::Owned(_)) {
        out.push_str("[the file is not valid UTF-8; invalid bytes are shown as \u{FFFD}]\n");
    }
    Ok(out)
}

fn list_dir(dir: &Path, shown: &str) -> ToolResult {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map_err(|e| ToolError(format!("cannot list {shown}: {e}")))?
        .flatten()
        .map(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                format!("{n}/")
            } else {
                n
            }
        })
        .collect();
    names.sort();
    Ok(format!(
        "{shown} is a folder with {} entries:\n{}",
        names.len(),
        names.join("\n")
    ))
}

/// Writes `content` to a resolved workspace path: existing regular files
/// are truncated (never through a symlink), new ones created exclusively.
fn write_resolved(r: &Resolved, content: &[u8]) -> Result<(), ToolError> {
    let shown = r.checked.display();
    let mut f = if r.exists {
        if r.real.is_dir() {
            return Err(ToolError(format!("{shown} is a folder")));
        }
        OpenOptions::new()
            .write(true)
            .truncate(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&r.real)
    } else {
        if let Some(parent) = r.real.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| ToolError(format!("cannot create the folders for {shown}: {e}")))?;
        }
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(libc::O_NOFOLLOW)
            .mode(0o644)
            .open(&r.real)
    }
    .map_err(|e| ToolError(format!("cannot write {shown}: {e}")))?;
    f.write_all(content)
        .map_err(|e| ToolError(format!("writing {shown}: {e}")))?;
    Ok(())
}

pub fn write_file(cfg: &RunnerConfig, path: &str, content: &str) -> ToolResult {
    let r = resolve(cfg, path, Access::Write)?;
    write_resolved(&r, content.as_bytes())?;
    Ok(format!(
        "wrote {} bytes to {}",
        content.len(),
        r.checked.display()
    ))
}

pub fn edit_file(cfg: &RunnerConfig, path: &str, old: &str, new: &str) -> ToolResult {
    let r = resolve(cfg, path, Access::Write)?;
    let shown = r.checked.display();
    if !r.exists {
        return Err(ToolError(format!(
            "{shown} does not exist; create it with write_file"
        )));
    }
    if old.is_empty() {
        return Err(ToolError(
            "edit_file: `old` is empty; give the exact text to replace".into(),
        ));
    }
    let bytes = read_bytes(&r)?;
    let text = String::from_utf8(bytes)
        .map_err(|_| ToolError(format!("{shown} is not UTF-8 text; edit it with the shell")))?;
    match text.matches(old).count() {
        0 => Err(ToolError(format!("the text in `old` was not found in {shown}; read the file and copy the text exactly"))),
        1 => {
            let edited = text.replacen(old, new, 1);
            write_resolved(&r, edited.as_bytes())?;
            Ok(format!("edited {shown}"))
        }
        n => Err(ToolError(format!(
            "the text in `old` occurs {n} times in {shown}; include more surrounding text so it matches exactly once"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tools::testing::*;
    use crate::tools::{call as tool_call, ToolCtx};
    use std::os::unix::fs::symlink;

    fn run(env: &Env, name: &str, args: serde_json::Value) -> crate::tools::ToolOutput {
        let mut out = env.out();
        let mut ctx = ToolCtx::new(&env.cfg, &mut out, &no_stop);
        tool_call(&mut ctx, name, &args.to_string())
    }

    #[test]
    fn write_read_edit_round_trip() {
        let env = Env::new();
        let w = run(
            &env,
            "write_file",
            json!({"path": "notes/todo.md", "content": "one\ntwo\nthree\n"}),
        );
        assert!(!w.is_error, "{}", w.content);
        assert_eq!(
            std::fs::read_to_string(env.path("agent/notes/todo.md")).unwrap(),
            "one\ntwo\nthree\n"
        );
        let r = run(
            &env,
            "read_file",
            json!({"path": "/workspace/agent/notes/todo.md", "offset": 2, "limit": 1}),
        );
        assert_eq!(
            r.content,
            "     2\ttwo\n[lines 2-2 of 3; continue with offset 3]\n"
        );
        let e = run(
            &env,
            "edit_file",
            json!({"path": "notes/todo.md", "old": "two", "new": "2"}),
        );
        assert!(!e.is_error, "{}", e.content);
        assert_eq!(
            std::fs::read_to_string(env.path("agent/notes/todo.md")).unwrap(),
            "one\n2\nthree\n"
        );
        let overwrite = run(
            &env,
            "write_file",
            json!({"path": "notes/todo.md", "content": "x"}),
        );
        assert!(!overwrite.is_error);
        assert_eq!(
            std::fs::read_to_string(env.path("agent/notes/todo.md")).unwrap(),
            "x"
        );
        let ls = run(&env, "read_file", json!({"path": "."}));
        assert!(ls.content.contains("notes/"), "{}", ls.content);
    }

    #[test]
    fn edit_needs_exactly_one_match() {
        let env = Env::new();
        std::fs::write(env.path("agent/a.txt"), "x y x").unwrap();
        let e = run(
            &env,
            "edit_file",
            json!({"path": "a.txt", "old": "x", "new": "z"}),
        );
        assert!(
            e.is_error && e.content.contains("occurs 2 times"),
            "{}",
            e.content
        );
        let e = run(
            &env,
            "edit_file",
            json!({"path": "a.txt", "old": "q", "new": "z"}),
        );
        assert!(
            e.is_error && e.content.contains("not found"),
            "{}",
            e.content
        );
        assert_eq!(
            std::fs::read_to_string(env.path("agent/a.txt")).unwrap(),
            "x y x",
            "unchanged"
        );
    }

    #[test]
    fn extra_folders_by_name_read_only_unless_granted() {
        let mut env = Env::new();
        std::fs::create_dir_all(env.path("ro")).unwrap();
        std::fs::create_dir_all(env.path("rw")).unwrap();
        std::fs::write(env.path("ro/a.txt"), "from ro").unwrap();
        env.cfg.paths.extra = vec![
            pinch_proto::runner_config::ExtraMount {
                name: "notes".into(),
                path: env.path("ro"),
                read_write: false,
            },
            pinch_proto::runner_config::ExtraMount {
                name: "site".into(),
                path: env.path("rw"),
                read_write: true,
            },
        ];
        assert!(run(
            &env,
            "read_file",
            json!({"path": "/workspace/extra/notes/a.txt"})
        )
        .content
        .contains("from ro"));
        assert!(
            run(&env, "read_file", json!({"path": "/workspace/extra/notes"}))
                .content
                .contains("a.txt"),
            "a mount lists"
        );
        let w = run(
            &env,
            "write_file",
            json!({"path": "/workspace/extra/notes/b.txt", "content": "x"}),
        );
        assert!(
            w.is_error && w.content.contains("read-only"),
            "{}",
            w.content
        );
        let w = run(
            &env,
            "write_file",
            json!({"path": "/workspace/extra/site/b.txt", "content": "x"}),
        );
        assert!(!w.is_error, "{}", w.content);
        assert_eq!(std::fs::read_to_string(env.path("rw/b.txt")).unwrap(), "x");
        let r = run(
            &env,
            "read_file",
            json!({"path": "/workspace/extra/nope/a.txt"}),
        );
        assert!(
            r.is_error && r.content.contains("notes (read-only), site"),
            "{}",
            r.content
        );
        // A link inside a mount that leads out of it is refused.
        std::os::unix::fs::symlink(env.path("agent"), env.path("ro/out")).unwrap();
        let r = run(
            &env,
            "read_file",
            json!({"path": "/workspace/extra/notes/out/x"}),
        );
        assert!(r.is_error && r.content.contains("escapes"), "{}", r.content);
    }

    #[test]
    fn reads_inbox_and_global_but_never_writes_them() {
        let env = Env::new();
        std::fs::create_dir_all(env.path("inbox/12")).unwrap();
        std::fs::write(env.path("inbox/12/cat.txt"), "meow").unwrap();
        std::fs::write(env.path("global/AGENT.md"), "be kind").unwrap();
        assert!(run(
            &env,
            "read_file",
            json!({"path": "/workspace/inbox/12/cat.txt"})
        )
        .content
        .contains("meow"));
        assert!(run(
            &env,
            "read_file",
            json!({"path": "/workspace/global/AGENT.md"})
        )
        .content
        .contains("be kind"));
        let w = run(
            &env,
            "write_file",
            json!({"path": "/workspace/inbox/12/cat.txt", "content": "woof"}),
        );
        assert!(
            w.is_error && w.content.contains("read-only"),
            "{}",
            w.content
        );
        assert_eq!(
            std::fs::read_to_string(env.path("inbox/12/cat.txt")).unwrap(),
            "meow"
        );
    }

    #[test]
    fn escapes_are_refused_with_a_readable_error() {
        let env = Env::new();
        std::fs::write(env.path("secret.txt"), "outside").unwrap();
        symlink("/etc", env.path("agent/etc-link")).unwrap();
        symlink(env.path("secret.txt"), env.path("agent/leak.txt")).unwrap();
        symlink("/nonexistent/target", env.path("agent/dangling")).unwrap();
        std::fs::create_dir(env.path("agent/sub")).unwrap();
        symlink("..", env.path("agent/sub/up")).unwrap();
        symlink("../..", env.path("agent/sub/out")).unwrap();
        for (name, args, want) in [
            (
                "read_file",
                json!({"path": "../secret.txt"}),
                "path escapes the workspace",
            ),
            (
                "read_file",
                json!({"path": "/etc/passwd"}),
                "path escapes the workspace",
            ),
            (
                "read_file",
                json!({"path": "etc-link/passwd"}),
                "path escapes the workspace",
            ),
            (
                "read_file",
                json!({"path": "leak.txt"}),
                "path escapes the workspace",
            ),
            (
                "read_file",
                json!({"path": "sub/up/../secret.txt"}),
                "path escapes the workspace",
            ),
            (
                "read_file",
                json!({"path": "sub/out/secret.txt"}),
                "path escapes the workspace",
            ),
            (
                "write_file",
                json!({"path": "sub/out/new.txt", "content": "x"}),
                "path escapes the workspace",
            ),
            ("read_file", json!({"path": "a\u{0}b"}), "NUL"),
            (
                "write_file",
                json!({"path": "leak.txt", "content": "pwned"}),
                "path escapes the workspace",
            ),
            (
                "write_file",
                json!({"path": "etc-link/evil", "content": "pwned"}),
                "path escapes the workspace",
            ),
            (
                "write_file",
                json!({"path": "dangling", "content": "pwned"}),
                "symlink",
            ),
            (
                "edit_file",
                json!({"path": "leak.txt", "old": "outside", "new": "pwned"}),
                "path escapes the workspace",
            ),
        ] {
            let r = run(&env, name, args.clone());
            assert!(r.is_error, "{name} {args}: {}", r.content);
            assert!(r.content.contains(want), "{name} {args}: {}", r.content);
        }
        assert_eq!(
            std::fs::read_to_string(env.path("secret.txt")).unwrap(),
            "outside"
        );
        assert!(!std::path::Path::new("/etc/evil").exists());
        assert!(!std::path::Path::new("/nonexistent/target").exists());
    }

    #[test]
    fn symlinks_inside_the_workspace_are_followed() {
        let env = Env::new();
        std::fs::create_dir(env.path("agent/real")).unwrap();
        std::fs::write(env.path("agent/real/f.txt"), "inside").unwrap();
        symlink(env.path("agent/real"), env.path("agent/alias")).unwrap();
        let r = run(&env, "read_file", json!({"path": "alias/f.txt"}));
        assert!(!r.is_error && r.content.contains("inside"), "{}", r.content);
        let w = run(
            &env,
            "write_file",
            json!({"path": "alias/new.txt", "content": "n"}),
        );
        assert!(!w.is_error, "{}", w.content);
        assert_eq!(
            std::fs::read_to_string(env.path("agent/real/new.txt")).unwrap(),
            "n"
        );
    }
}
