//! Saving files that arrive with messages into a session's `inbox/`
//! (SPEC §7.8, TARGETS S7): `inbox/<seq>/<safe name>`, shown to the agent
//! as `/workspace/inbox/<seq>/<name>`.
//!
//! The inbox is read-only inside the sandbox, but it is written the way
//! every host write near an agent is (issue 14): never by path. The inbox
//! is opened once as a trusted folder (it sits in the host's session
//! folder), the message folder is made and opened beneath that descriptor,
//! and the file is created beneath the folder's descriptor, exclusively
//! (`O_EXCL`; a name taken gets `-1`, `-2`, …), with no symlink followed
//! at any level ([`crate::safe_fs`]). The name is sanitised
//! ([`pinch_policy::filename::sanitize`]); at most `max` bytes are copied.

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use pinch_policy::filename;

use crate::safe_fs::{self, Create, Dir};

/// Most tries at a free name before giving up.
const MAX_TRIES: u32 = 100;

#[derive(Debug, thiserror::Error)]
pub enum AttachmentError {
    #[error("the inbox folder {0} is missing or not a folder")]
    NoInbox(PathBuf),
    #[error("{0} is a symlink or not a folder; refusing to write an attachment through it")]
    NotAFolder(PathBuf),
    #[error("the attachment would land outside the inbox ({0}); refused")]
    Escapes(PathBuf),
    #[error("no free name for {0:?} after {MAX_TRIES} tries")]
    NoFreeName(String),
    #[error("{name:?} is larger than the {max} bytes it was checked at (it changed while being copied); not saved")]
    TooLarge { name: String, max: u64 },
    #[error("writing the attachment {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

/// A saved attachment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Saved {
    /// `<folder>/<name>` beneath the inbox (the agent sees
    /// `/workspace/inbox/<rel>`).
    pub rel: String,
    /// The file name it was saved under.
    pub name: String,
    pub size: u64,
}

/// Writes `bytes` as an attachment of inbound message `seq` (the tests'
/// shorthand for [`save_from`]).
#[cfg(test)]
pub fn save(
    inbox: &Path,
    seq: i64,
    raw_name: &str,
    bytes: &[u8],
) -> Result<Saved, AttachmentError> {
    save_from(
        inbox,
        &seq.to_string(),
        raw_name,
        &mut &bytes[..],
        bytes.len() as u64,
    )
}

/// Saves an attachment into `inbox/<folder>/` (a name of one plain component,
/// e.g. a forwarded message's), copying at most `max` bytes from `src`
/// (more is an error: nothing half-saved is kept).
pub fn save_from(
    inbox: &Path,
    folder: &str,
    raw_name: &str,
    src: &mut dyn Read,
    max: u64,
) -> Result<Saved, AttachmentError> {
    if folder.is_empty()
        || folder.starts_with('.')
        || folder.contains(['/', '\\'])
        || folder.chars().any(char::is_control)
    {
        return Err(AttachmentError::Escapes(inbox.join(folder)));
    }
    let root = Dir::open_trusted(inbox).map_err(|_| AttachmentError::NoInbox(inbox.to_owned()))?;
    let dir = root.create_dir_all(folder, 0o755).map_err(|e| match e {
        safe_fs::Error::Symlink(p) | safe_fs::Error::NotDir(p) | safe_fs::Error::NotRegular(p) => {
            AttachmentError::NotAFolder(p)
        }
        safe_fs::Error::Io { path, source } => AttachmentError::Io { path, source },
        e => AttachmentError::Io {
            path: e.path().to_owned(),
            source: io::Error::other(e.to_string()),
        },
    })?;
    let name = filename::sanitize(raw_name);
    for n in 0..MAX_TRIES {
        let candidate = if n == 0 {
            name.clone()
        } else {
            filename::numbered(&name, n)
        };
        let path = inbox.join(folder).join(&candidate);
        let mut f = match dir.create_file(&candidate, Create::New, 0o644) {
            Ok(f) => f,
            // Taken (by a file, a link or anything else): the next name.
            Err(safe_fs::Error::Io { source, .. })
                if source.kind() == io::ErrorKind::AlreadyExists =>
            {
                continue
            }
            Err(safe_fs::Error::Symlink(_)) => continue,
            Err(safe_fs::Error::Io { path, source }) => {
                return Err(AttachmentError::Io { path, source })
            }
            Err(e) => {
                return Err(AttachmentError::Io {
                    path,
                    source: io::Error::other(e.to_string()),
                })
            }
        };
        let written = io::copy(&mut (&mut *src).take(max), &mut f).and_then(|n| {
            let mut more = [0u8; 1];
            let over = src.read(&mut more)? != 0;
            f.flush()?;
            f.sync_all()?;
            Ok((n, over))
        });
        let undo = || {
            let _ = rustix::fs::unlinkat(&dir, candidate.as_str(), rustix::fs::AtFlags::empty());
        };
        return match written {
            Ok((size, false)) => Ok(Saved {
                rel: format!("{folder}/{candidate}"),
                name: candidate,
                size,
            }),
            Ok((_, true)) => {
                undo();
                Err(AttachmentError::TooLarge {
                    name: raw_name.to_owned(),
                    max,
                })
            }
            Err(e) => {
                undo();
                Err(AttachmentError::Io { path, source: e })
            }
        };
    }
    Err(AttachmentError::NoFreeName(name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn everything_under(p: &Path) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for e in fs::read_dir(p).unwrap() {
            let e = e.unwrap().path();
            if fs::symlink_metadata(&e).unwrap().is_dir() {
                out.extend(everything_under(&e));
            }
            out.push(e);
        }
        out
    }

    #[test]
    fn hostile_names_stay_in_the_message_folder() {
        let d = tempfile::tempdir().unwrap();
        let inbox = d.path().join("inbox");
        fs::create_dir(&inbox).unwrap();
        let p = save(&inbox, 12, "../../etc/passwd", b"x").unwrap();
        assert_eq!(
            p,
            Saved {
                rel: "12/passwd".into(),
                name: "passwd".into(),
                size: 1
            }
        );
        let p = save(&inbox, 12, "a\0b.txt", b"y").unwrap();
        assert_eq!(p.rel, "12/ab.txt");
        let p = save(&inbox, 12, &format!("{}.jpg", "n".repeat(5000)), b"z").unwrap();
        assert!(
            p.name.len() <= filename::MAX_NAME && p.name.ends_with(".jpg"),
            "{p:?}"
        );
        // same name twice: the second is numbered, the first is untouched
        let p = save(&inbox, 12, "passwd", b"second").unwrap();
        assert_eq!((p.rel.as_str(), p.size), ("12/passwd-1", 6));
        assert_eq!(fs::read(inbox.join("12/passwd")).unwrap(), b"x");
        assert!(
            fs::read_dir(d.path()).unwrap().count() == 1,
            "nothing next to the inbox"
        );
    }

    #[test]
    fn symlinks_are_never_followed() {
        let d = tempfile::tempdir().unwrap();
        let inbox = d.path().join("inbox");
        let outside = d.path().join("outside");
        fs::create_dir(&inbox).unwrap();
        fs::create_dir(&outside).unwrap();
        // a message folder that is a symlink out of the inbox
        std::os::unix::fs::symlink(&outside, inbox.join("7")).unwrap();
        assert!(matches!(
            save(&inbox, 7, "f.txt", b"x"),
            Err(AttachmentError::NotAFolder(_))
        ));
        // a file name that is a symlink out: skipped, not written through
        fs::create_dir(inbox.join("8")).unwrap();
        std::os::unix::fs::symlink(outside.join("target"), inbox.join("8/f.txt")).unwrap();
        let p = save(&inbox, 8, "f.txt", b"x").unwrap();
        assert_eq!(p.rel, "8/f-1.txt");
        assert!(
            everything_under(&outside).is_empty(),
            "nothing written outside: {:?}",
            everything_under(&outside)
        );
        // an inbox that is missing is a clear error
        let e = save(&d.path().join("nope"), 1, "a", b"").unwrap_err();
        assert!(e.to_string().contains("missing"), "{e}");
    }

    /// A source longer than it was checked at (an agent appending to the
    /// file it sent) is not copied on: nothing half-saved stays.
    #[test]
    fn at_most_max_bytes_are_copied() {
        let d = tempfile::tempdir().unwrap();
        let inbox = d.path().join("inbox");
        fs::create_dir(&inbox).unwrap();
        let e = save_from(&inbox, "m1", "grew.txt", &mut &b"0123456789"[..], 4).unwrap_err();
        assert!(
            matches!(e, AttachmentError::TooLarge { max: 4, .. })
                && e.to_string().contains("changed while being copied"),
            "{e}"
        );
        assert_eq!(
            fs::read_dir(inbox.join("m1")).unwrap().count(),
            0,
            "the partial file is removed"
        );
        let ok = save_from(&inbox, "m1", "exact.txt", &mut &b"0123"[..], 4).unwrap();
        assert_eq!(
            (ok.size, fs::read(inbox.join(&ok.rel)).unwrap()),
            (4, b"0123".to_vec())
        );
    }
}
