//! Opening files and folders the agent can write, without ever following a
//! path it could have replaced (issue 14).
//!
//! Everything under a group's workspace, a session's `out/` and `outbox/`,
//! and a read-write extra folder is attacker-controlled: between any check
//! and any use, the agent can swap a folder for a symlink
//! (`renameat2(RENAME_EXCHANGE)`), plant a symlink where the host expects a
//! file, or leave a FIFO that blocks an `open`. So the host never opens such
//! a path by name. It opens a trusted root once ([`Dir::open_trusted`]: the
//! data dir, a session folder — paths only the host can change) and reaches
//! everything beneath it with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS
//! | RESOLVE_NO_MAGICLINKS)`, relative to that descriptor. Where `openat2` is
//! missing (kernels before 5.6, some seccomp'd containers) the same rules
//! hold through a walk of `openat(O_NOFOLLOW | O_DIRECTORY)`, one component
//! at a time. What is read or written is the descriptor that was checked.
//!
//! Rules every call keeps:
//! - the relative path is plain: no absolute path, no `..`, no NUL;
//! - no symlink anywhere beneath the root (`ELOOP` → [`Error::Symlink`]);
//! - files are regular (`O_NONBLOCK` on open, so a FIFO or device never
//!   blocks the host, then `fstat`); folders are folders;
//! - a file the host writes has one link (a hard link to something else is
//!   refused) and is created `O_EXCL` when it must be new.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use rustix::fs::{Mode, OFlags, ResolveFlags};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0} is not a plain relative path (no `/` at the start, no `..`, no NUL); refused")]
    BadPath(PathBuf),
    #[error("{0} is, or passes through, a symbolic link; refused (the host never follows links in folders an agent can write)")]
    Symlink(PathBuf),
    #[error("{0} is not a regular file (a folder, FIFO, socket or device); refused")]
    NotRegular(PathBuf),
    #[error("{0} is not a folder; refused")]
    NotDir(PathBuf),
    #[error("{0} has other hard links; refused")]
    Linked(PathBuf),
    #[error("{0} is missing")]
    Missing(PathBuf),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

impl Error {
    pub(crate) fn from_errno(path: PathBuf, e: rustix::io::Errno) -> Error {
        match e {
            rustix::io::Errno::LOOP | rustix::io::Errno::XDEV => Error::Symlink(path),
            rustix::io::Errno::NOENT => Error::Missing(path),
            rustix::io::Errno::NOTDIR => Error::NotDir(path),
            e => Error::Io {
                path,
                source: e.into(),
            },
        }
    }

    /// The path the error is about.
    pub fn path(&self) -> &Path {
        match self {
            Error::BadPath(p)
            | Error::Symlink(p)
            | Error::NotRegular(p)
            | Error::NotDir(p)
            | Error::Linked(p)
            | Error::Missing(p) => p,
            Error::Io { path, .. } => path,
        }
    }
}

pub type Result<T> = std::result::Result<T, Error>;

/// How [`Dir::create_file`] treats an existing file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Create {
    /// Fail if the name exists (`O_EXCL`).
    New,
    /// Truncate a regular file with one link, or create it.
    Replace,
}

/// An open folder: the anchor of every operation beneath it.
#[derive(Debug)]
pub struct Dir {
    fd: OwnedFd,
    path: PathBuf,
}

/// Checks `rel` is a plain relative path and returns it without `.` parts.
fn plain(rel: &Path) -> Result<PathBuf> {
    let mut out = PathBuf::new();
    for c in rel.components() {
        match c {
            Component::Normal(s) if !s.as_encoded_bytes().contains(&0) => out.push(s),
            Component::CurDir => {}
            _ => return Err(Error::BadPath(rel.to_owned())),
        }
    }
    Ok(out)
}

fn no_openat2() -> &'static std::sync::atomic::AtomicBool {
    static FLAG: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    &FLAG
}

/// Opens `rel` beneath `dir` with `flags` (always `O_CLOEXEC | O_NOFOLLOW`),
/// refusing symlinks at every level.
fn open_beneath(
    dir: BorrowedFd<'_>,
    shown: &Path,
    rel: &Path,
    flags: OFlags,
    mode: Mode,
) -> Result<OwnedFd> {
    let rel = plain(rel)?;
    let flags = flags | OFlags::CLOEXEC | OFlags::NOFOLLOW;
    let target = if rel.as_os_str().is_empty() {
        Path::new(".")
    } else {
        rel.as_path()
    };
    if !no_openat2().load(std::sync::atomic::Ordering::Relaxed) {
        let how = ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS;
        for _ in 0..8 {
            match rustix::fs::openat2(dir, target, flags, mode, how) {
                Ok(fd) => return Ok(fd),
                // A concurrent rename elsewhere in the tree: try again.
                Err(rustix::io::Errno::AGAIN) => continue,
                // No openat2 here (old kernel, a seccomp'd container).
                Err(rustix::io::Errno::NOSYS) | Err(rustix::io::Errno::PERM) => {
                    no_openat2().store(true, std::sync::atomic::Ordering::Relaxed);
                    break;
                }
                Err(e) => return Err(link_or(dir, target.as_os_str(), shown.join(&rel), e)),
            }
        }
    }
    walk(dir, shown, &rel, flags, mode)
}

/// The fallback: one component at a time, each `O_NOFOLLOW`.
fn walk(
    dir: BorrowedFd<'_>,
    shown: &Path,
    rel: &Path,
    flags: OFlags,
    mode: Mode,
) -> Result<OwnedFd> {
    let parts: Vec<&std::ffi::OsStr> = rel.iter().collect();
    let Some((last, inner)) = parts.split_last() else {
        return rustix::fs::openat(dir, ".", flags, mode)
            .map_err(|e| Error::from_errno(shown.to_owned(), e));
    };
    let mut cur: Option<OwnedFd> = None;
    let mut at = shown.to_owned();
    for p in inner {
        at.push(p);
        let base = cur.as_ref().map(|f| f.as_fd()).unwrap_or(dir);
        let next = rustix::fs::openat(
            base,
            *p,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| link_or(base, p, at.clone(), e))?;
        // O_PATH|O_NOFOLLOW on a symlink opens the link itself; O_DIRECTORY
        // refuses it with ENOTDIR. Either way, make sure it is a folder.
        let st = rustix::fs::fstat(&next).map_err(|e| Error::from_errno(at.clone(), e))?;
        if rustix::fs::FileType::from_raw_mode(st.st_mode) != rustix::fs::FileType::Directory {
            return Err(Error::Symlink(at));
        }
        cur = Some(next);
    }
    at.push(last);
    let base = cur.as_ref().map(|f| f.as_fd()).unwrap_or(dir);
    rustix::fs::openat(base, *last, flags, mode).map_err(|e| link_or(base, last, at, e))
}

/// `O_NOFOLLOW | O_DIRECTORY` on a symlink fails with `ENOTDIR`: name it.
fn link_or(
    base: BorrowedFd<'_>,
    name: &std::ffi::OsStr,
    at: PathBuf,
    e: rustix::io::Errno,
) -> Error {
    if e == rustix::io::Errno::NOTDIR {
        if let Ok(st) = rustix::fs::statat(base, name, rustix::fs::AtFlags::SYMLINK_NOFOLLOW) {
            if rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::Symlink {
                return Error::Symlink(at);
            }
        }
    }
    Error::from_errno(at, e)
}

fn file_type(fd: impl AsFd, path: &Path) -> Result<(rustix::fs::FileType, rustix::fs::Stat)> {
    let st = rustix::fs::fstat(fd).map_err(|e| Error::Io {
        path: path.to_owned(),
        source: e.into(),
    })?;
    Ok((rustix::fs::FileType::from_raw_mode(st.st_mode), st))
}

impl Dir {
    /// Opens a folder whose path only the host controls (the data dir, a
    /// session's folder, the config folder). Links in *this* path are the
    /// owner's and are followed; nothing beneath it will be.
    pub fn open_trusted(path: &Path) -> Result<Dir> {
        let fd = rustix::fs::open(
            path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| Error::from_errno(path.to_owned(), e))?;
        Ok(Dir {
            fd,
            path: path.to_owned(),
        })
    }

    /// The path this folder was opened as (for messages only: never open it).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The folder `rel` beneath this one.
    pub fn dir(&self, rel: impl AsRef<Path>) -> Result<Dir> {
        let rel = rel.as_ref();
        let fd = open_beneath(
            self.fd.as_fd(),
            &self.path,
            rel,
            OFlags::RDONLY | OFlags::DIRECTORY,
            Mode::empty(),
        )?;
        Ok(Dir {
            fd,
            path: self.path.join(rel),
        })
    }

    /// `rel` beneath this folder, creating every missing folder with `mode`
    /// (before the umask). An existing component must be a real folder.
    pub fn create_dir_all(&self, rel: impl AsRef<Path>, mode: u32) -> Result<Dir> {
        let rel = plain(rel.as_ref())?;
        let mut cur = self.dir(".")?;
        for part in rel.iter() {
            match rustix::fs::mkdirat(&cur.fd, part, Mode::from_raw_mode(mode)) {
                Ok(()) | Err(rustix::io::Errno::EXIST) => {}
                Err(e) => return Err(Error::from_errno(cur.path.join(part), e)),
            }
            cur = cur.dir(part)?;
        }
        Ok(cur)
    }

    /// Opens the regular file `rel` beneath this folder for reading.
    pub fn open_file(&self, rel: impl AsRef<Path>) -> Result<File> {
        let rel = rel.as_ref();
        let path = self.path.join(rel);
        let fd = open_beneath(
            self.fd.as_fd(),
            &self.path,
            rel,
            OFlags::RDONLY | OFlags::NONBLOCK,
            Mode::empty(),
        )?;
        let (ft, _) = file_type(&fd, &path)?;
        if ft != rustix::fs::FileType::RegularFile {
            return Err(Error::NotRegular(path));
        }
        clear_nonblock(&fd, &path)?;
        Ok(File::from(fd))
    }

    /// Creates (or, with [`Create::Replace`], truncates) the regular file
    /// `rel` beneath this folder, for writing, with `mode` (before the
    /// umask).
    pub fn create_file(&self, rel: impl AsRef<Path>, how: Create, mode: u32) -> Result<File> {
        let rel = rel.as_ref();
        let path = self.path.join(rel);
        let mut flags = OFlags::WRONLY | OFlags::CREATE | OFlags::NONBLOCK;
        if how == Create::New {
            flags |= OFlags::EXCL;
        }
        let fd = open_beneath(
            self.fd.as_fd(),
            &self.path,
            rel,
            flags,
            Mode::from_raw_mode(mode),
        )
        .map_err(|e| match e {
            Error::Io { source, path } if source.raw_os_error() == Some(libc::ENXIO) => {
                Error::NotRegular(path)
            }
            e => e,
        })?;
        let (ft, st) = file_type(&fd, &path)?;
        if ft != rustix::fs::FileType::RegularFile {
            return Err(Error::NotRegular(path));
        }
        if st.st_nlink > 1 {
            return Err(Error::Linked(path));
        }
        if how == Create::Replace {
            rustix::fs::ftruncate(&fd, 0).map_err(|e| Error::Io {
                path: path.clone(),
                source: e.into(),
            })?;
        }
        clear_nonblock(&fd, &path)?;
        Ok(File::from(fd))
    }

    /// Writes `data` to `rel` through a fresh file beside it and a rename,
    /// so readers see the old or the new content, never a part.
    pub fn write_atomic(&self, rel: impl AsRef<Path>, data: &[u8], mode: u32) -> Result<()> {
        use std::io::Write;
        let rel = plain(rel.as_ref())?;
        let name = rel.file_name().ok_or_else(|| Error::BadPath(rel.clone()))?;
        let parent = match rel.parent() {
            Some(p) if !p.as_os_str().is_empty() => self.dir(p)?,
            _ => self.dir(".")?,
        };
        let tmp = format!(
            ".{}.pinch-{}",
            name.to_string_lossy(),
            pinch_proto::runner_config::random_hex(6)
        );
        let mut f = parent.create_file(&tmp, Create::New, mode)?;
        let io = |source| Error::Io {
            path: parent.path.join(name),
            source,
        };
        f.write_all(data).map_err(io)?;
        f.sync_all().map_err(io)?;
        // renameat replaces whatever `name` is (a file, a link) without
        // following it; a folder in the way makes it fail.
        rustix::fs::renameat(&parent.fd, tmp.as_str(), &parent.fd, name).map_err(|e| {
            let _ = rustix::fs::unlinkat(&parent.fd, tmp.as_str(), rustix::fs::AtFlags::empty());
            Error::from_errno(parent.path.join(name), e)
        })
    }

    /// An `O_PATH` descriptor of `rel` beneath this folder (a folder or a
    /// regular file, nothing else), for binding into a sandbox: bwrap's
    /// `--ro-bind-fd`/`--bind-fd` mount exactly this inode.
    pub fn bind_source(&self, rel: impl AsRef<Path>) -> Result<OwnedFd> {
        let rel = rel.as_ref();
        let path = self.path.join(rel);
        let fd = open_beneath(
            self.fd.as_fd(),
            &self.path,
            rel,
            OFlags::PATH,
            Mode::empty(),
        )?;
        match file_type(&fd, &path)?.0 {
            rustix::fs::FileType::Directory | rustix::fs::FileType::RegularFile => Ok(fd),
            rustix::fs::FileType::Symlink => Err(Error::Symlink(path)),
            _ => Err(Error::NotRegular(path)),
        }
    }

    /// Removes the entry `name` (a file or a symlink itself, never what a
    /// link points to) directly in this folder.
    pub fn remove_file(&self, name: &str) -> Result<()> {
        plain(Path::new(name))?;
        rustix::fs::unlinkat(&self.fd, name, rustix::fs::AtFlags::empty())
            .map_err(|e| Error::from_errno(self.path.join(name), e))
    }

    /// Moves the entry `name` of this folder to `to_name` in `to` (one
    /// `renameat`: the entry itself, whatever it is, is moved).
    pub fn rename(&self, name: &str, to: &Dir, to_name: &str) -> Result<()> {
        plain(Path::new(name))?;
        plain(Path::new(to_name))?;
        rustix::fs::renameat(&self.fd, name, &to.fd, to_name)
            .map_err(|e| Error::from_errno(self.path.join(name), e))
    }

    /// `/proc/self/fd/N`: this folder for a program that takes a path and
    /// runs while the descriptor is open (bwrap resolves it to this very
    /// folder, whatever happens to its name meanwhile).
    pub fn proc_path(&self) -> PathBuf {
        PathBuf::from(format!("/proc/self/fd/{}", self.fd.as_raw_fd()))
    }

    /// The folder's owner uid.
    pub fn owner(&self) -> Result<u32> {
        let (_, st) = file_type(&self.fd, &self.path)?;
        Ok(st.st_uid)
    }
}

impl AsFd for Dir {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsRawFd for Dir {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.fd.as_raw_fd()
    }
}

impl From<Dir> for OwnedFd {
    fn from(d: Dir) -> OwnedFd {
        d.fd
    }
}

fn clear_nonblock(fd: &OwnedFd, path: &Path) -> Result<()> {
    let fl = rustix::fs::fcntl_getfl(fd).map_err(|e| Error::Io {
        path: path.to_owned(),
        source: e.into(),
    })?;
    rustix::fs::fcntl_setfl(fd, fl - OFlags::NONBLOCK).map_err(|e| Error::Io {
        path: path.to_owned(),
        source: e.into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::unix::fs::symlink;

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("pinch-safe-fs-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(d.join("root/sub")).unwrap();
        std::fs::write(d.join("secret"), b"host secret").unwrap();
        std::fs::write(d.join("root/sub/ok.txt"), b"fine").unwrap();
        d
    }

    /// Both resolvers (openat2 and the O_NOFOLLOW walk) keep every rule.
    fn each_resolver(f: impl Fn()) {
        no_openat2().store(false, std::sync::atomic::Ordering::Relaxed);
        f();
        no_openat2().store(true, std::sync::atomic::Ordering::Relaxed);
        f();
        no_openat2().store(false, std::sync::atomic::Ordering::Relaxed);
    }

    #[test]
    fn links_anywhere_beneath_the_root_are_refused() {
        let d = tmp("links");
        symlink(d.join("secret"), d.join("root/file-link")).unwrap();
        symlink(&d, d.join("root/dir-link")).unwrap();
        symlink("sub", d.join("root/rel-link")).unwrap();
        each_resolver(|| {
            let root = Dir::open_trusted(&d.join("root")).unwrap();
            let mut s = String::new();
            root.open_file("sub/ok.txt")
                .unwrap()
                .read_to_string(&mut s)
                .unwrap();
            assert_eq!(s, "fine");
            for bad in ["file-link", "dir-link/secret", "rel-link/ok.txt"] {
                assert!(
                    matches!(root.open_file(bad), Err(Error::Symlink(_))),
                    "{bad}: {:?}",
                    root.open_file(bad)
                );
            }
            assert!(matches!(root.dir("dir-link"), Err(Error::Symlink(_))));
            assert!(matches!(
                root.create_file("file-link", Create::Replace, 0o600),
                Err(Error::Symlink(_))
            ));
            assert!(matches!(
                root.create_dir_all("dir-link/x", 0o700),
                Err(Error::Symlink(_))
            ));
            for bad in ["../secret", "/etc/passwd", "sub/../../secret"] {
                assert!(
                    matches!(root.open_file(bad), Err(Error::BadPath(_))),
                    "{bad}"
                );
            }
        });
        assert_eq!(
            std::fs::read(d.join("secret")).unwrap(),
            b"host secret",
            "the link's target is untouched"
        );
        let _ = std::fs::remove_dir_all(d);
    }

    #[test]
    fn fifos_hard_links_and_folders_are_not_files() {
        let d = tmp("fifo");
        let fifo = std::ffi::CString::new(d.join("root/fifo").to_str().unwrap()).unwrap();
        // SAFETY: mkfifo with a valid C string.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
        std::fs::hard_link(d.join("secret"), d.join("root/hard")).unwrap();
        each_resolver(|| {
            let root = Dir::open_trusted(&d.join("root")).unwrap();
            assert!(
                matches!(root.open_file("fifo"), Err(Error::NotRegular(_))),
                "a FIFO never blocks the host"
            );
            assert!(matches!(
                root.create_file("fifo", Create::Replace, 0o600),
                Err(Error::NotRegular(_))
            ));
            assert!(matches!(root.open_file("sub"), Err(Error::NotRegular(_))));
            assert!(matches!(
                root.create_file("hard", Create::Replace, 0o600),
                Err(Error::Linked(_))
            ));
            assert!(matches!(root.open_file("missing"), Err(Error::Missing(_))));
            assert!(matches!(root.dir("sub/ok.txt"), Err(Error::NotDir(_))));
        });
        assert_eq!(std::fs::read(d.join("secret")).unwrap(), b"host secret");
        let _ = std::fs::remove_dir_all(d);
    }

    #[test]
    fn creates_and_replaces_beneath_the_root() {
        let d = tmp("create");
        each_resolver(|| {
            let root = Dir::open_trusted(&d.join("root")).unwrap();
            let inbox = root.create_dir_all("a/b/c", 0o700).unwrap();
            let _ = std::fs::remove_file(d.join("root/a/b/c/n.txt"));
            inbox
                .create_file("n.txt", Create::New, 0o600)
                .unwrap()
                .write_all(b"1")
                .unwrap();
            assert!(
                root.create_file("a/b/c/n.txt", Create::New, 0o600).is_err(),
                "O_EXCL"
            );
            root.create_file("a/b/c/n.txt", Create::Replace, 0o600)
                .unwrap()
                .write_all(b"22")
                .unwrap();
            assert_eq!(std::fs::read(d.join("root/a/b/c/n.txt")).unwrap(), b"22");
            // write_atomic replaces a planted link instead of writing through it.
            let _ = std::fs::remove_file(d.join("root/AGENT.md"));
            symlink(d.join("secret"), d.join("root/AGENT.md")).unwrap();
            root.write_atomic("AGENT.md", b"be kind", 0o600).unwrap();
            assert_eq!(std::fs::read(d.join("root/AGENT.md")).unwrap(), b"be kind");
            assert!(!std::fs::symlink_metadata(d.join("root/AGENT.md"))
                .unwrap()
                .file_type()
                .is_symlink());
        });
        assert_eq!(std::fs::read(d.join("secret")).unwrap(), b"host secret");
        let _ = std::fs::remove_dir_all(d);
    }
}
