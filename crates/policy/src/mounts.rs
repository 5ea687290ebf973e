//! Extra folders for an agent (SPEC §7.8, lesson 38): which host folders
//! an agent group may see at `/workspace/extra/<name>`, decided against
//! the owner's allowlist (`~/.config/pinch/mount-allowlist.toml`, outside
//! the data dir and never mounted itself).
//!
//! The pure half: the host resolves the requested path to its real path
//! (symlinks followed) first, so a link that leads out of an allowed root
//! is judged by where it leads. Rules:
//! - the real path must lie inside an allowed root (component-wise);
//! - no component of it may match a blocked pattern (defaults below, plus
//!   the allowlist's own) — `.ssh`, credentials, shell rc files…;
//! - it may neither be inside pinch's data dir or config folder nor contain
//!   them (mounting `~` would expose both);
//! - the name is one plain component: no `/`, `..`, `:`, leading `.`,
//!   control characters, at most 64 bytes;
//! - read-write only if both the request and the root allow it.

use std::path::{Component, Path, PathBuf};

/// Names never mounted, wherever they appear in the path.
pub const DEFAULT_BLOCKED: &[&str] = &[
    ".ssh",
    ".gnupg",
    ".gpg",
    ".aws",
    ".azure",
    ".gcloud",
    ".kube",
    ".docker",
    "credentials",
    ".env",
    ".netrc",
    ".npmrc",
    ".pypirc",
    "id_rsa",
    "id_ed25519",
    "private_key",
    ".secret",
    ".bashrc",
    ".bash_profile",
    ".profile",
    ".zshrc",
    ".zprofile",
    ".config/pinch",
    ".local/bin",
];

/// One allowed root, already resolved to its real path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AllowedRoot {
    pub path: PathBuf,
    pub read_write: bool,
}

/// The owner's allowlist, roots resolved.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Allowlist {
    pub roots: Vec<AllowedRoot>,
    /// Extra blocked patterns (same matching as [`DEFAULT_BLOCKED`]).
    pub blocked: Vec<String>,
}

/// A mount as granted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Granted {
    pub host: PathBuf,
    pub name: String,
    pub read_write: bool,
}

/// Whether `pattern` matches at some position of `parts`: a pattern is one
/// or more `/`-separated names, each either literal or with `*` wildcards.
fn matches_at(parts: &[&str], pattern: &str) -> bool {
    let pat: Vec<&str> = pattern.split('/').filter(|p| !p.is_empty()).collect();
    if pat.is_empty() || pat.len() > parts.len() {
        return false;
    }
    parts
        .windows(pat.len())
        .any(|w| w.iter().zip(&pat).all(|(name, p)| glob(p, name)))
}

/// `*` matches any run of characters; everything else literally.
fn glob(p: &str, s: &str) -> bool {
    match p.split_once('*') {
        None => p == s,
        Some((head, rest)) => {
            let Some(after) = s.strip_prefix(head) else {
                return false;
            };
            (0..=after.len())
                .filter(|i| after.is_char_boundary(*i))
                .any(|i| glob(rest, &after[i..]))
        }
    }
}

/// Checks a mount name (what the agent sees under `/workspace/extra`).
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 64 {
        return Err(format!("the mount name {name:?} must be 1 to 64 bytes"));
    }
    if name.starts_with('.')
        || name.contains(['/', '\\', ':'])
        || name.chars().any(char::is_control)
    {
        return Err(format!("the mount name {name:?} must be one plain name (no `/`, `:`, leading `.` or control characters)"));
    }
    Ok(())
}

/// Decides one requested mount. `real` is the requested folder's real
/// path; `protected` are pinch's own folders (data dir, config dir), real
/// paths too.
pub fn decide(
    real: &Path,
    name: &str,
    read_write: bool,
    allow: &Allowlist,
    protected: &[PathBuf],
) -> Result<Granted, String> {
    check_name(name)?;
    if !real.is_absolute()
        || real
            .components()
            .any(|c| matches!(c, Component::ParentDir | Component::CurDir))
    {
        return Err(format!(
            "{} is not a resolved absolute path",
            real.display()
        ));
    }
    let parts: Vec<&str> = real
        .components()
        .filter_map(|c| c.as_os_str().to_str())
        .filter(|c| *c != "/")
        .collect();
    for pat in DEFAULT_BLOCKED
        .iter()
        .copied()
        .chain(allow.blocked.iter().map(String::as_str))
    {
        if matches_at(&parts, pat) {
            return Err(format!(
                "{} matches the blocked pattern {pat:?}; such folders are never mounted",
                real.display()
            ));
        }
    }
    for p in protected {
        if real.starts_with(p) || p.starts_with(real) {
            return Err(format!(
                "{} overlaps pinch's own folder {}; it is never mounted",
                real.display(),
                p.display()
            ));
        }
    }
    let Some(root) = allow
        .roots
        .iter()
        .filter(|r| real.starts_with(&r.path))
        .max_by_key(|r| r.path.components().count())
    else {
        if allow.roots.is_empty() {
            return Err("no folders are allowed for mounting: add allowed_roots to ~/.config/pinch/mount-allowlist.toml".into());
        }
        return Err(format!(
            "{} is not inside an allowed root ({}); add one to ~/.config/pinch/mount-allowlist.toml",
            real.display(),
            allow.roots.iter().map(|r| r.path.display().to_string()).collect::<Vec<_>>().join(", ")
        ));
    };
    Ok(Granted {
        host: real.to_owned(),
        name: name.to_owned(),
        read_write: read_write && root.read_write,
    })
}

/// Splits `granted` into what may be mounted and what is refused because
/// it lies inside another read-write grant: the agent can replace such a
/// folder (through the read-write one) between the host's check and the
/// mount, and it sees it through the outer folder anyway (issue 14).
pub fn refuse_nested(granted: Vec<Granted>) -> (Vec<Granted>, Vec<String>) {
    let rw: Vec<(PathBuf, String)> = granted
        .iter()
        .filter(|g| g.read_write)
        .map(|g| (g.host.clone(), g.name.clone()))
        .collect();
    let (mut ok, mut refused) = (Vec::new(), Vec::new());
    for g in granted {
        match rw.iter().find(|(outer, _)| g.host != *outer && g.host.starts_with(outer)) {
            Some((outer, name)) => refused.push(format!(
                "{} lies inside the read-write folder {} ({name:?}), where the agent could replace it; it is visible there already",
                g.host.display(),
                outer.display()
            )),
            None => ok.push(g),
        }
    }
    (ok, refused)
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_folder_inside_a_read_write_one_is_refused() {
        use super::{refuse_nested, Granted};
        let g = |h: &str, n: &str, rw| Granted {
            host: h.into(),
            name: n.into(),
            read_write: rw,
        };
        let (ok, refused) = refuse_nested(vec![
            g("/h/proj", "proj", true),
            g("/h/proj/docs", "docs", false),
            g("/h/ref", "ref", false),
            g("/h/ref/sub", "sub", false),
            g("/h/project2", "p2", false),
        ]);
        assert_eq!(
            ok.iter().map(|g| g.name.as_str()).collect::<Vec<_>>(),
            ["proj", "ref", "sub", "p2"]
        );
        assert_eq!(refused.len(), 1);
        assert!(
            refused[0].contains("/h/proj/docs") && refused[0].contains("\"proj\""),
            "{refused:?}"
        );
    }

    use super::*;
    use proptest::prelude::*;

    fn allow() -> Allowlist {
        Allowlist {
            roots: vec![
                AllowedRoot {
                    path: "/home/me/projects".into(),
                    read_write: true,
                },
                AllowedRoot {
                    path: "/srv/notes".into(),
                    read_write: false,
                },
            ],
            blocked: vec!["*.pem".into(), "secret-*".into()],
        }
    }

    fn protected() -> Vec<PathBuf> {
        vec![
            "/home/me/.local/share/pinch".into(),
            "/home/me/.config/pinch".into(),
        ]
    }

    #[test]
    // The expected `read_write` values read as a column beside the inputs.
    #[allow(clippy::bool_assert_comparison)]
    fn table() {
        let a = allow();
        let ok = |p: &str, n: &str, rw: bool| decide(Path::new(p), n, rw, &a, &protected());
        assert_eq!(
            ok("/home/me/projects/site", "site", true)
                .unwrap()
                .read_write,
            true
        );
        assert_eq!(
            ok("/srv/notes", "notes", true).unwrap().read_write,
            false,
            "rw only if the root allows it too"
        );
        assert_eq!(
            ok("/home/me/projects/site", "site", false)
                .unwrap()
                .read_write,
            false
        );
        for (p, n, why) in [
            ("/home/me/projects2", "p", "not inside an allowed root"),
            ("/home/me", "home", "overlaps pinch"),
            ("/etc", "etc", "not inside"),
            ("/home/me/projects/.ssh", "k", "blocked pattern \".ssh\""),
            ("/home/me/projects/app/.env", "e", "\".env\""),
            ("/home/me/projects/keys/server.pem", "k", "\"*.pem\""),
            ("/home/me/projects/secret-plans", "s", "\"secret-*\""),
            ("/home/me/projects/site", "../x", "plain name"),
            ("/home/me/projects/site", "a:b", "plain name"),
            ("/home/me/projects/site", ".hidden", "plain name"),
            ("/home/me/projects/site", "", "1 to 64"),
            ("relative/path", "r", "resolved absolute"),
            ("/home/me/projects/../../etc", "r", "resolved absolute"),
        ] {
            let e = ok(p, n, false).unwrap_err();
            assert!(e.contains(why), "{p} {n}: {e}");
        }
        // pinch's own folders, inside or around.
        let mut wide = allow();
        wide.roots.push(AllowedRoot {
            path: "/home".into(),
            read_write: true,
        });
        let e = decide(Path::new("/home/me"), "home", true, &wide, &protected()).unwrap_err();
        assert!(e.contains("overlaps pinch's own folder"), "{e}");
        let e = decide(
            Path::new("/home/me/.local/share/pinch/groups"),
            "g",
            true,
            &wide,
            &protected(),
        )
        .unwrap_err();
        assert!(e.contains("overlaps"), "{e}");
        // .config/pinch and .local/bin, as two-name patterns.
        let e = decide(
            Path::new("/home/other/.config/pinch"),
            "c",
            false,
            &wide,
            &[],
        )
        .unwrap_err();
        assert!(e.contains(".config/pinch"), "{e}");
        assert!(decide(
            Path::new("/home/other/.config/other"),
            "c",
            false,
            &wide,
            &[]
        )
        .is_ok());
        // No allowlist at all.
        assert!(decide(
            Path::new("/srv/notes"),
            "n",
            false,
            &Allowlist::default(),
            &[]
        )
        .unwrap_err()
        .contains("no folders are allowed"));
    }

    #[test]
    fn the_deepest_root_decides_rw() {
        let a = Allowlist {
            roots: vec![
                AllowedRoot {
                    path: "/data".into(),
                    read_write: true,
                },
                AllowedRoot {
                    path: "/data/archive".into(),
                    read_write: false,
                },
            ],
            blocked: vec![],
        };
        assert!(
            !decide(Path::new("/data/archive/2020"), "a", true, &a, &[])
                .unwrap()
                .read_write
        );
        assert!(
            decide(Path::new("/data/live"), "l", true, &a, &[])
                .unwrap()
                .read_write
        );
    }

    proptest! {
        /// Whatever the path, a grant lies inside an allowed root, and no
        /// component of it is a blocked name.
        #[test]
        fn grants_are_inside_roots_and_never_blocked(parts in proptest::collection::vec("(home|me|projects|srv|notes|\\.ssh|\\.env|x|credentials|a\\.pem)", 1..6), rw: bool) {
            let p = PathBuf::from(format!("/{}", parts.join("/")));
            if let Ok(g) = decide(&p, "m", rw, &allow(), &protected()) {
                prop_assert!(allow().roots.iter().any(|r| g.host.starts_with(&r.path)));
                prop_assert!(!parts.iter().any(|c| DEFAULT_BLOCKED.contains(&c.as_str()) || c.ends_with(".pem")));
                prop_assert!(!g.read_write || rw);
            }
        }
    }
}
