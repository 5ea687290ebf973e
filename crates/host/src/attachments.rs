//! Saving files that arrive with messages into a session's `inbox/`
//! (SPEC §7.8, TARGETS S7): `inbox/<seq>/<safe name>`, shown to the agent
//! as `/workspace/inbox/<seq>/<name>`.
//!
//! The name is sanitised ([`pinch_policy::filename::sanitize`]); the folder
//! is created without following symlinks; the file is created exclusively
//! with `O_NOFOLLOW` (a name taken gets `-1`, `-2`, …); and the result's
//! real path must lie under the inbox's, so nothing is ever written
//! outside it whatever the name or the folder's contents.

use std::fs::{self, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use pinch_policy::filename;

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
    #[error("writing the attachment {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> AttachmentError + '_ {
    move |source| AttachmentError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Writes `bytes` as an attachment of inbound message `seq`; returns the
/// path written (under `inbox`).
pub fn save(
    inbox: &Path,
    seq: i64,
    raw_name: &str,
    bytes: &[u8],
) -> Result<PathBuf, AttachmentError> {
    save_from(inbox, &seq.to_string(), raw_name, &mut &bytes[..])
}

/// Like [`save`] into `inbox/<folder>/` (a name of one plain component,
/// e.g. a forwarded message's), copying from `src`.
pub fn save_from(
    inbox: &Path,
    folder: &str,
    raw_name: &str,
    src: &mut dyn io::Read,
) -> Result<PathBuf, AttachmentError> {
    if folder.is_empty()
        || folder.starts_with('.')
        || folder.contains(['/', '\\'])
        || folder.chars().any(char::is_control)
    {
        return Err(AttachmentError::Escapes(inbox.join(folder)));
    }
    let root_meta =
        fs::symlink_metadata(inbox).map_err(|_| AttachmentError::NoInbox(inbox.to_owned()))?;
    if !root_meta.is_dir() {
        return Err(AttachmentError::NoInbox(inbox.to_owned()));
    }
    let root = fs::canonicalize(inbox).map_err(io_err(inbox))?;
    let dir = inbox.join(folder);
    match fs::symlink_metadata(&dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => return Err(AttachmentError::NotAFolder(dir)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            fs::DirBuilder::new()
                .mode(0o755)
                .create(&dir)
                .map_err(io_err(&dir))?;
        }
        Err(e) => return Err(io_err(&dir)(e)),
    }
    let real_dir = fs::canonicalize(&dir).map_err(io_err(&dir))?;
    if real_dir.parent() != Some(root.as_path()) {
        return Err(AttachmentError::Escapes(real_dir));
    }
    let name = filename::sanitize(raw_name);
    for n in 0..MAX_TRIES {
        let candidate = if n == 0 {
            name.clone()
        } else {
            filename::numbered(&name, n)
        };
        let path = real_dir.join(&candidate);
        let f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path);
        match f {
            Ok(mut f) => {
                let written = io::copy(src, &mut f).and_then(|_| f.sync_all());
                if let Err(e) = written {
                    drop(f);
                    let _ = fs::remove_file(&path);
                    return Err(io_err(&path)(e));
                }
                return Ok(path);
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            // ELOOP: a symlink sits at that name.
            Err(e) if e.raw_os_error() == Some(libc::ELOOP) => continue,
            Err(e) => return Err(io_err(&path)(e)),
        }
    }
    Err(AttachmentError::NoFreeName(name))
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(p, fs::canonicalize(&inbox).unwrap().join("12/passwd"));
        let p = save(&inbox, 12, "a\0b.txt", b"y").unwrap();
        assert!(p.ends_with("12/ab.txt"), "{p:?}");
        let p = save(&inbox, 12, &format!("{}.jpg", "n".repeat(5000)), b"z").unwrap();
        assert!(
            p.file_name().unwrap().len() <= filename::MAX_NAME && p.extension().unwrap() == "jpg"
        );
        // same name twice: the second is numbered, the first is untouched
        let p = save(&inbox, 12, "passwd", b"second").unwrap();
        assert!(p.ends_with("12/passwd-1"), "{p:?}");
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
        assert!(p.ends_with("8/f-1.txt"), "{p:?}");
        assert!(
            everything_under(&outside).is_empty(),
            "nothing written outside: {:?}",
            everything_under(&outside)
        );
        // an inbox that is missing is a clear error
        let e = save(&d.path().join("nope"), 1, "a", b"").unwrap_err();
        assert!(e.to_string().contains("missing"), "{e}");
    }
}
