//! A bounded walk of a directory tree that never follows a symbolic link
//! (issue 14): every directory is opened relative to its parent's
//! descriptor with `O_NOFOLLOW | O_DIRECTORY`, every entry is looked at
//! with `fstatat(AT_SYMLINK_NOFOLLOW)`, and symlinks are never entered nor
//! reported. Agents write into the folders walked here (their workspace,
//! their outbox), so a symlink or a swapped directory planted there must
//! not lead the host anywhere else, and a tree of millions of entries must
//! not hold the host: the walk stops after `max_entries` and below
//! `max_depth`, and says so.
//!
//! Open descriptors are bounded by the depth: a directory is opened when it
//! is taken from the stack, and a parent stays open only while children of
//! it wait there (in a depth-first walk those are the current path's
//! ancestors).

use std::ffi::{CStr, CString, OsStr};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use rustix::fs::{AtFlags, FileType, Mode, OFlags, Stat};

/// How far a walk may go.
#[derive(Clone, Copy, Debug)]
pub struct Bounds {
    /// Entries looked at (files, directories, symlinks, anything) before
    /// the walk stops.
    pub max_entries: u64,
    /// Directories deeper than this (the root is 0) are not entered.
    pub max_depth: usize,
}

/// One entry (never a symlink).
pub struct Item<'a> {
    /// The path below the root (empty for the root itself).
    pub rel: &'a Path,
    /// Its `lstat`.
    pub stat: &'a Stat,
    /// A directory's own descriptor (opened without following links).
    pub dir: Option<BorrowedFd<'a>>,
    /// The parent directory's descriptor and the entry's name in it (`None`
    /// for the root).
    pub at: Option<(BorrowedFd<'a>, &'a CStr)>,
}

impl Item<'_> {
    pub fn is_dir(&self) -> bool {
        self.dir.is_some()
    }
}

/// What a walk saw.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Walked {
    /// Entries looked at (symlinks included).
    pub entries: u64,
    /// Stopped at `max_entries`, or skipped directories below `max_depth`.
    pub truncated: bool,
    /// Entries that vanished or could not be opened meanwhile (skipped).
    pub errors: u64,
}

/// Walks `root` (itself opened with `O_NOFOLLOW` when `follow_root` is
/// false), calling `f` for the root and every entry below it that is not a
/// symlink, parents before children.
pub fn walk(
    root: &Path,
    follow_root: bool,
    bounds: Bounds,
    f: &mut dyn FnMut(&Item<'_>),
) -> std::io::Result<Walked> {
    let mut flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
    if !follow_root {
        flags |= OFlags::NOFOLLOW;
    }
    let fd = rustix::fs::open(root, flags, Mode::empty())?;
    let stat = rustix::fs::fstat(&fd)?;
    let mut w = Walked {
        entries: 1,
        ..Walked::default()
    };
    f(&Item {
        rel: Path::new(""),
        stat: &stat,
        dir: Some(fd.as_fd()),
        at: None,
    });
    // (parent, name, path below the root, depth)
    let mut stack: Vec<(Rc<OwnedFd>, CString, PathBuf, usize)> = Vec::new();
    let root_fd = Rc::new(fd);
    push_children(&root_fd, Path::new(""), 1, bounds, &mut stack, &mut w, f);
    while let Some((parent, name, rel, depth)) = stack.pop() {
        if w.entries >= bounds.max_entries {
            w.truncated = true;
            break;
        }
        let dir = match rustix::fs::openat(
            &*parent,
            &name,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        ) {
            Ok(d) => d,
            Err(_) => {
                // Replaced by a symlink or a file, removed, or unreadable.
                w.errors += 1;
                continue;
            }
        };
        drop(parent);
        let Ok(stat) = rustix::fs::fstat(&dir) else {
            w.errors += 1;
            continue;
        };
        let dir = Rc::new(dir);
        f(&Item {
            rel: &rel,
            stat: &stat,
            dir: Some(dir.as_fd()),
            at: None,
        });
        push_children(&dir, &rel, depth + 1, bounds, &mut stack, &mut w, f);
    }
    Ok(w)
}

/// Reports the non-directory entries of `dir` and stacks its directories.
fn push_children(
    dir: &Rc<OwnedFd>,
    rel: &Path,
    depth: usize,
    bounds: Bounds,
    stack: &mut Vec<(Rc<OwnedFd>, CString, PathBuf, usize)>,
    w: &mut Walked,
    f: &mut dyn FnMut(&Item<'_>),
) {
    let Ok(entries) = rustix::fs::Dir::read_from(&**dir) else {
        w.errors += 1;
        return;
    };
    for e in entries {
        if w.entries >= bounds.max_entries {
            w.truncated = true;
            return;
        }
        let Ok(e) = e else {
            w.errors += 1;
            return;
        };
        let name = e.file_name();
        if name.to_bytes() == b"." || name.to_bytes() == b".." {
            continue;
        }
        w.entries += 1;
        let Ok(stat) = rustix::fs::statat(&**dir, name, AtFlags::SYMLINK_NOFOLLOW) else {
            w.errors += 1;
            continue;
        };
        let child = rel.join(OsStr::from_bytes(name.to_bytes()));
        match FileType::from_raw_mode(stat.st_mode) {
            FileType::Symlink => {}
            FileType::Directory if depth > bounds.max_depth => w.truncated = true,
            // Counted when it is opened (by descriptor, not by this lstat).
            FileType::Directory => stack.push((dir.clone(), name.to_owned(), child, depth)),
            _ => f(&Item {
                rel: &child,
                stat: &stat,
                dir: None,
                at: Some((dir.as_fd(), name)),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WIDE: Bounds = Bounds {
        max_entries: 1_000_000,
        max_depth: 64,
    };

    #[test]
    fn never_follows_symlinks_and_stops_at_its_bounds() {
        let d = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), b"x").unwrap();
        let r = d.path().join("root");
        std::fs::create_dir_all(r.join("a/b")).unwrap();
        std::fs::write(r.join("a/b/f"), b"hello").unwrap();
        std::fs::write(r.join("top"), b"hi").unwrap();
        std::os::unix::fs::symlink(outside.path(), r.join("a/link-dir")).unwrap();
        std::os::unix::fs::symlink(outside.path().join("secret"), r.join("link-file")).unwrap();
        let mut seen = Vec::new();
        let w = walk(&r, false, WIDE, &mut |i| seen.push(i.rel.to_owned())).unwrap();
        seen.sort();
        let want: Vec<PathBuf> = ["", "a", "a/b", "a/b/f", "top"]
            .iter()
            .map(PathBuf::from)
            .collect();
        assert_eq!(seen, want);
        assert_eq!(w.entries, 7, "the root, 4 entries, 2 symlinks looked at");
        assert!(!w.truncated);
        // The root itself as a symlink is refused unless the caller trusts it.
        let link_root = d.path().join("link-root");
        std::os::unix::fs::symlink(&r, &link_root).unwrap();
        assert!(walk(&link_root, false, WIDE, &mut |_| {}).is_err());
        assert!(walk(&link_root, true, WIDE, &mut |_| {}).is_ok());
        // Bounds.
        let mut n = 0;
        let w = walk(
            &r,
            false,
            Bounds {
                max_entries: 3,
                max_depth: 64,
            },
            &mut |_| n += 1,
        )
        .unwrap();
        assert!(w.truncated && w.entries <= 3, "{w:?}");
        let mut deep = Vec::new();
        let w = walk(
            &r,
            false,
            Bounds {
                max_entries: 100,
                max_depth: 1,
            },
            &mut |i| deep.push(i.rel.to_owned()),
        )
        .unwrap();
        assert!(w.truncated);
        assert!(!deep.contains(&PathBuf::from("a/b/f")), "{deep:?}");
    }
}
