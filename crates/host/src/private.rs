//! The data dir is the owner's alone (issue 14): every directory 0700,
//! every file 0600, whatever the umask the host was started with.
//!
//! New files: the host sets its process umask to `077` before it creates
//! anything ([`restrict_umask`]); runners started by bwrap or as plain
//! processes inherit it (they run as the same user, so nothing they need
//! is lost). Existing installs: [`tighten`] walks the data dir once at
//! start without following symlinks ([`crate::fswalk`]) and clears the
//! group and other bits of whatever has them — it only ever removes
//! permissions, so a hard link an agent planted to some other file of the
//! owner's can at worst make that file private too. Files a Docker runner
//! creates get the container's umask, but sit in directories only the
//! owner can enter.

use std::os::fd::AsRawFd;
use std::path::Path;

use rustix::fs::{FileType, Mode, OFlags};

use crate::fswalk::{self, Bounds};

/// Group and other permission bits.
const OPEN_BITS: u32 = 0o077;

/// Sets the process umask to `077`; returns the previous one.
pub fn restrict_umask() -> u32 {
    rustix::process::umask(Mode::from_raw_mode(OPEN_BITS)).bits()
}

/// What [`tighten`] changed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tightened {
    pub dirs: u64,
    pub files: u64,
    /// Entries that could not be changed (vanished, or not ours).
    pub failed: u64,
    pub walked: fswalk::Walked,
}

/// Clears group/other bits on `root` and everything below it, never
/// following a symlink (the root itself may be one: the owner chose it).
pub fn tighten(root: &Path) -> std::io::Result<Tightened> {
    let mut t = Tightened::default();
    // A data dir is not expected to be this big; the next start continues.
    let bounds = Bounds {
        max_entries: 5_000_000,
        max_depth: 256,
    };
    let walked = fswalk::walk(root, true, bounds, &mut |item| {
        let mode = item.stat.st_mode & 0o7777;
        if mode & OPEN_BITS == 0 {
            return;
        }
        let narrowed = Mode::from_raw_mode(mode & !OPEN_BITS);
        let ok = match (item.dir, item.at) {
            // A directory: its own descriptor, opened with O_NOFOLLOW.
            (Some(fd), _) => rustix::fs::fchmod(fd, narrowed).is_ok(),
            // Anything else: pin the entry with O_PATH | O_NOFOLLOW (no
            // open side effects on a FIFO or device), check it is still
            // what was looked at and not a symlink, then change the
            // pinned inode through its /proc magic link.
            (None, Some((parent, name))) => match rustix::fs::openat(
                parent,
                name,
                OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            ) {
                Ok(fd) => match rustix::fs::fstat(&fd) {
                    Ok(st)
                        if st.st_ino == item.stat.st_ino
                            && st.st_dev == item.stat.st_dev
                            && FileType::from_raw_mode(st.st_mode) != FileType::Symlink =>
                    {
                        rustix::fs::chmod(format!("/proc/self/fd/{}", fd.as_raw_fd()), narrowed)
                            .is_ok()
                    }
                    _ => false,
                },
                Err(_) => false,
            },
            (None, None) => false,
        };
        match (ok, item.is_dir()) {
            (true, true) => t.dirs += 1,
            (true, false) => t.files += 1,
            (false, _) => t.failed += 1,
        }
    })?;
    t.walked = walked;
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(p: &Path) -> u32 {
        std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn clears_group_and_other_bits_and_never_follows_a_symlink() {
        let d = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let victim = outside.path().join("victim");
        std::fs::write(&victim, b"x").unwrap();
        std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o644)).unwrap();
        std::fs::set_permissions(outside.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let r = d.path().join("data");
        std::fs::create_dir_all(r.join("groups/main")).unwrap();
        std::fs::write(r.join("pinch.db"), b"db").unwrap();
        std::fs::write(r.join("groups/main/run.sh"), b"#!/bin/sh").unwrap();
        std::fs::write(r.join("groups/main/private"), b"p").unwrap();
        for (p, m) in [
            ("", 0o755),
            ("groups", 0o755),
            ("groups/main", 0o775),
            ("pinch.db", 0o644),
            ("groups/main/run.sh", 0o755),
            ("groups/main/private", 0o600),
        ] {
            std::fs::set_permissions(r.join(p), std::fs::Permissions::from_mode(m)).unwrap();
        }
        std::os::unix::fs::symlink(&victim, r.join("groups/main/to-file")).unwrap();
        std::os::unix::fs::symlink(outside.path(), r.join("groups/main/to-dir")).unwrap();
        let t = tighten(&r).unwrap();
        assert_eq!((t.dirs, t.files, t.failed), (3, 2, 0), "{t:?}");
        for (p, m) in [
            ("", 0o700),
            ("groups", 0o700),
            ("groups/main", 0o700),
            ("pinch.db", 0o600),
            ("groups/main/run.sh", 0o700),
            ("groups/main/private", 0o600),
        ] {
            assert_eq!(mode(&r.join(p)), m, "{p}");
        }
        assert_eq!(mode(&victim), 0o644, "a symlink's target is never touched");
        assert_eq!(mode(outside.path()), 0o755);
        // Nothing left to do the second time.
        let t = tighten(&r).unwrap();
        assert_eq!((t.dirs, t.files, t.failed), (0, 0, 0));
    }
}
