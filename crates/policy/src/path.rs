//! Lexical path safety for the agent's file tools (SPEC §7.8, lesson 32).
//!
//! The pure half: a path string the model wrote is classified into one of
//! the roots it may use and a list of plain components, or refused with a
//! reason the model can read. No filesystem access here: the runner then
//! resolves symlinks against the real directories (`realpath` containment).
//!
//! The naming rule (decision 0009): a relative path is inside the agent's
//! workspace (`/workspace/agent`). The inbox and the global folder are
//! reachable by their absolute in-sandbox paths, `/workspace/inbox/…` and
//! `/workspace/global/…`, read-only; `/workspace/agent/…` also names the
//! workspace. Any other absolute path, any `..` component, NUL or control
//! characters are refused.

use std::fmt;

/// A folder the tools may reach.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Root {
    /// `/workspace/agent`, read-write.
    Workspace,
    /// `/workspace/inbox`, read-only (attachments).
    Inbox,
    /// `/workspace/global`, read-only (shared instructions).
    Global,
    /// `/workspace/extra/<name>/…`: folders the owner allowed (SPEC §7.8);
    /// the first component is the mount's name. Writable only where that
    /// mount is (the runner checks; the sandbox enforces).
    Extra,
}

impl Root {
    /// The in-sandbox path of the root.
    pub fn sandbox_path(self) -> &'static str {
        match self {
            Root::Workspace => "/workspace/agent",
            Root::Inbox => "/workspace/inbox",
            Root::Global => "/workspace/global",
            Root::Extra => "/workspace/extra",
        }
    }

    pub fn writable(self) -> bool {
        matches!(self, Root::Workspace | Root::Extra)
    }
}

/// What the caller will do with the path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
}

/// A path that passed the lexical checks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checked {
    pub root: Root,
    /// Plain components below the root (no `.`, `..`, or empty ones). Empty
    /// = the root itself.
    pub components: Vec<String>,
}

impl Checked {
    /// The components joined with `/` (empty for the root itself).
    pub fn relative(&self) -> String {
        self.components.join("/")
    }

    /// How the model should see this path in messages.
    pub fn display(&self) -> String {
        if self.components.is_empty() {
            self.root.sandbox_path().to_owned()
        } else {
            format!("{}/{}", self.root.sandbox_path(), self.relative())
        }
    }
}

/// Longest path accepted, in bytes.
pub const MAX_PATH_BYTES: usize = 4096;
/// Longest single name accepted, in bytes.
pub const MAX_NAME_BYTES: usize = 255;

/// Why a path was refused. The `Display` text is sent to the model.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PathError {
    Empty,
    Nul,
    Control { path: String },
    TooLong { bytes: usize },
    NameTooLong { name: String },
    ParentComponent { path: String },
    AbsoluteOutside { path: String },
    ReadOnly { path: String, root: Root },
    IsRoot { path: String },
}

impl fmt::Display for PathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PathError::Empty => f.write_str("the path is empty: give a file path relative to your workspace, e.g. notes/todo.md"),
            PathError::Nul => f.write_str("the path contains a NUL byte, which no file name may contain"),
            PathError::Control { path } => write!(f, "the path {path:?} contains control characters; file names must be printable"),
            PathError::TooLong { bytes } => write!(f, "the path is {bytes} bytes long; the limit is {MAX_PATH_BYTES}"),
            PathError::NameTooLong { name } => {
                write!(f, "the name {:?}… is longer than {MAX_NAME_BYTES} bytes", name.chars().take(40).collect::<String>())
            }
            PathError::ParentComponent { path } => write!(
                f,
                "path escapes the workspace: {path:?} contains `..`; use a path inside your workspace without `..`"
            ),
            PathError::AbsoluteOutside { path } => write!(
                f,
                "path escapes the workspace: {path:?} is absolute and outside the folders you may use; use a path relative \
                 to your workspace (/workspace/agent), /workspace/inbox/… and /workspace/global/… for reading, or \
                 /workspace/extra/<name>/… for folders the owner shared"
            ),
            PathError::ReadOnly { path, root } => write!(
                f,
                "{path:?} is in {}, which is read-only; write inside your workspace (a relative path) instead",
                root.sandbox_path()
            ),
            PathError::IsRoot { path } => write!(f, "{path:?} names a folder itself, not a file inside it"),
        }
    }
}

impl std::error::Error for PathError {}

/// Classifies `path` (as the model wrote it) or refuses it.
pub fn check(path: &str, access: Access) -> Result<Checked, PathError> {
    if path.is_empty() {
        return Err(PathError::Empty);
    }
    if path.contains('\0') {
        return Err(PathError::Nul);
    }
    if path.chars().any(char::is_control) {
        return Err(PathError::Control {
            path: path.to_owned(),
        });
    }
    if path.len() > MAX_PATH_BYTES {
        return Err(PathError::TooLong { bytes: path.len() });
    }
    let parts: Vec<&str> = path
        .split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect();
    if parts.contains(&"..") {
        return Err(PathError::ParentComponent {
            path: path.to_owned(),
        });
    }
    if let Some(long) = parts.iter().find(|c| c.len() > MAX_NAME_BYTES) {
        return Err(PathError::NameTooLong {
            name: (*long).to_owned(),
        });
    }
    let (root, rest) = if path.starts_with('/') {
        let root = match parts.as_slice() {
            ["workspace", "agent", ..] => Root::Workspace,
            ["workspace", "inbox", ..] => Root::Inbox,
            ["workspace", "global", ..] => Root::Global,
            ["workspace", "extra", ..] => Root::Extra,
            _ => {
                return Err(PathError::AbsoluteOutside {
                    path: path.to_owned(),
                })
            }
        };
        (root, &parts[2..])
    } else {
        (Root::Workspace, &parts[..])
    };
    if access == Access::Write && !root.writable() {
        return Err(PathError::ReadOnly {
            path: path.to_owned(),
            root,
        });
    }
    Ok(Checked {
        root,
        components: rest.iter().map(|s| (*s).to_owned()).collect(),
    })
}

/// Like [`check`], and the path must name something below its root (a
/// file), not the root folder itself.
pub fn check_file(path: &str, access: Access) -> Result<Checked, PathError> {
    let c = check(path, access)?;
    if c.components.is_empty() {
        return Err(PathError::IsRoot {
            path: path.to_owned(),
        });
    }
    Ok(c)
}

/// A file name for something the agent sends (basename only): the last
/// component of a checked path, already free of `/`, `..`, NUL and control
/// characters.
pub fn basename(c: &Checked) -> Option<&str> {
    c.components.last().map(String::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ok(p: &str) -> (Root, String) {
        let c = check(p, Access::Read).unwrap_or_else(|e| panic!("{p}: {e}"));
        (c.root, c.relative())
    }

    #[test]
    fn relative_paths_are_in_the_workspace() {
        assert_eq!(ok("notes.md"), (Root::Workspace, "notes.md".into()));
        assert_eq!(ok("./a//b/./c.txt"), (Root::Workspace, "a/b/c.txt".into()));
        assert_eq!(
            ok("inbox/x"),
            (Root::Workspace, "inbox/x".into()),
            "relative inbox is a workspace folder"
        );
        assert_eq!(ok("."), (Root::Workspace, "".into()));
    }

    #[test]
    fn absolute_sandbox_roots() {
        assert_eq!(
            ok("/workspace/agent/a.txt"),
            (Root::Workspace, "a.txt".into())
        );
        assert_eq!(
            ok("/workspace/inbox/12/cat.jpg"),
            (Root::Inbox, "12/cat.jpg".into())
        );
        assert_eq!(
            ok("/workspace/global/AGENT.md"),
            (Root::Global, "AGENT.md".into())
        );
    }

    #[test]
    fn refusals() {
        type Case = (&'static str, fn(&PathError) -> bool);
        let cases: &[Case] = &[
            ("", |e| matches!(e, PathError::Empty)),
            ("a\0b", |e| matches!(e, PathError::Nul)),
            ("a\nb", |e| matches!(e, PathError::Control { .. })),
            ("a\u{1b}[31m", |e| matches!(e, PathError::Control { .. })),
            ("../x", |e| matches!(e, PathError::ParentComponent { .. })),
            ("a/../../x", |e| {
                matches!(e, PathError::ParentComponent { .. })
            }),
            ("a/..", |e| matches!(e, PathError::ParentComponent { .. })),
            ("/workspace/agent/../inbox/x", |e| {
                matches!(e, PathError::ParentComponent { .. })
            }),
            ("/etc/passwd", |e| {
                matches!(e, PathError::AbsoluteOutside { .. })
            }),
            ("/workspace", |e| {
                matches!(e, PathError::AbsoluteOutside { .. })
            }),
            ("/workspace/outbox/x", |e| {
                matches!(e, PathError::AbsoluteOutside { .. })
            }),
            ("/workspace/agentx/y", |e| {
                matches!(e, PathError::AbsoluteOutside { .. })
            }),
            ("/", |e| matches!(e, PathError::AbsoluteOutside { .. })),
        ];
        for (p, want) in cases {
            let e = check(p, Access::Read).expect_err(p);
            assert!(want(&e), "{p:?}: {e:?}");
        }
        let long = "a".repeat(300);
        assert!(matches!(
            check(&long, Access::Read),
            Err(PathError::NameTooLong { .. })
        ));
        let deep = "ab/".repeat(2000);
        assert!(matches!(
            check(&deep, Access::Read),
            Err(PathError::TooLong { .. })
        ));
    }

    #[test]
    fn messages_say_escape() {
        assert!(check("../x", Access::Read)
            .unwrap_err()
            .to_string()
            .starts_with("path escapes the workspace"));
        assert!(check("/etc/passwd", Access::Read)
            .unwrap_err()
            .to_string()
            .starts_with("path escapes the workspace"));
    }

    #[test]
    fn writes_only_in_the_workspace() {
        assert!(check("/workspace/agent/a", Access::Write).is_ok());
        assert!(matches!(
            check("/workspace/inbox/a", Access::Write),
            Err(PathError::ReadOnly {
                root: Root::Inbox,
                ..
            })
        ));
        assert!(matches!(
            check("/workspace/global/a", Access::Write),
            Err(PathError::ReadOnly {
                root: Root::Global,
                ..
            })
        ));
        assert!(matches!(
            check_file("/workspace/inbox", Access::Read),
            Err(PathError::IsRoot { .. })
        ));
        assert!(matches!(
            check_file(".", Access::Write),
            Err(PathError::IsRoot { .. })
        ));
    }

    proptest! {
        /// Whatever the input, an accepted path's components are plain
        /// names: joined below a root they can never leave it lexically.
        #[test]
        fn accepted_components_are_plain(p in "(/|\\.\\.|\\.|a|b|workspace|agent|inbox|global|\\x00|\\n| ){0,12}") {
            if let Ok(c) = check(&p, Access::Read) {
                for comp in &c.components {
                    prop_assert!(!comp.is_empty() && comp != "." && comp != "..");
                    prop_assert!(!comp.contains('/') && !comp.chars().any(char::is_control));
                }
                prop_assert!(!p.split('/').any(|s| s == ".."));
                prop_assert!(!c.display().contains("/../") && c.display().starts_with(c.root.sandbox_path()));
            }
        }

        #[test]
        fn any_parent_component_is_refused(a in "[a-z/]{0,8}", b in "[a-z/]{0,8}") {
            let p = format!("{a}/../{b}");
            prop_assert!(check(&p, Access::Read).is_err());
        }

        #[test]
        fn arbitrary_strings_never_panic(p in any::<String>()) {
            let _ = check(&p, Access::Read);
            let _ = check_file(&p, Access::Write);
        }
    }
}
