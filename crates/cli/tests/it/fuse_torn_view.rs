//! R1 as the real failure looks (SPEC §5.7, nanoclaw PR #2597): the host's
//! `inbound.db` stays healthy and only the *sandbox's view* of it is torn.
//!
//! A read-only passthrough FUSE filesystem (the `fuser` crate, served from
//! this test process) sits between the session's real `in/` and the sandbox,
//! through the host's `in_dir_view` hook: every runner spawn gets a fresh
//! mount. The first mount is "latched torn": while the fault switch is on,
//! every read of `inbound.db` that touches bytes 0..100 (the header) comes
//! back with those bytes garbled, while the file on disk is never touched.
//! Later mounts are healthy, as a fresh VM mount would be.
//!
//! It proves, end to end with the real binary and a real sandbox:
//! - the runner behind the torn view exits 75 after the real streak (10
//!   corruption errors, 500 ms pacing), recorded as cause `corruption`;
//! - the host's own `PRAGMA integrity_check` on the real file says `ok`
//!   throughout (a background thread checks every 50 ms) and at the end;
//! - the respawned runner, with a fresh and healthy mount, answers the
//!   pending message exactly once.
//!
//! Needs root and /dev/fuse; without them it fails unless
//! PINCH_TEST_NO_ROOT=1. `scripts/deps` installs fuse3 (fusermount3), which the
//! mounts use for `auto_unmount`, so a killed test leaves no mount behind.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, UNIX_EPOCH};

use crate::common::*;
use fuser::{
    AccessFlags, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, INodeNo, LockOwner,
    MountOption, OpenAccMode, OpenFlags, ReplyAttr, ReplyData, ReplyDirectory, ReplyEmpty,
    ReplyEntry, ReplyOpen, Request, SessionACL,
};
use pinch_host::sandbox::Choice;

const TEXT: &str = "hello torn world";
const REPLY: &str = "Hello from pinch! You said: hello torn world";
/// No kernel caching of entries or attributes: every lookup reaches us.
const TTL: Duration = Duration::ZERO;
/// The SQLite header: 100 bytes at offset 0.
const HEADER: u64 = 100;

/// A read-only passthrough of one flat directory (a session's `in/`).
struct View {
    real: PathBuf,
    /// The fault switch; `None` for a healthy mount.
    torn: Option<Arc<AtomicBool>>,
    torn_reads: Arc<AtomicUsize>,
    /// ino = index + 2 (1 is the root); names are stable for the mount's life.
    names: Mutex<Vec<OsString>>,
    /// fh → (real file, is `inbound.db`).
    open: Mutex<HashMap<u64, (std::fs::File, bool)>>,
    next_fh: AtomicU64,
}

impl View {
    fn ino_of(&self, name: &OsStr) -> INodeNo {
        let mut names = self.names.lock().unwrap();
        let i = names.iter().position(|n| n == name).unwrap_or_else(|| {
            names.push(name.to_owned());
            names.len() - 1
        });
        INodeNo(i as u64 + 2)
    }

    fn path_of(&self, ino: INodeNo) -> Option<PathBuf> {
        match u64::from(ino) {
            1 => Some(self.real.clone()),
            n => self
                .names
                .lock()
                .unwrap()
                .get(n as usize - 2)
                .map(|name| self.real.join(name)),
        }
    }
}

fn attr(ino: INodeNo, md: &std::fs::Metadata) -> FileAttr {
    let t = |s: i64, ns: i64| UNIX_EPOCH + Duration::new(s.max(0) as u64, ns as u32);
    FileAttr {
        ino,
        size: md.size(),
        blocks: md.blocks(),
        atime: t(md.atime(), md.atime_nsec()),
        mtime: t(md.mtime(), md.mtime_nsec()),
        ctime: t(md.ctime(), md.ctime_nsec()),
        crtime: t(md.mtime(), md.mtime_nsec()),
        kind: FileType::from_std(md.file_type()).unwrap_or(FileType::RegularFile),
        perm: (md.mode() & 0o7777) as u16,
        nlink: md.nlink() as u32,
        uid: md.uid(),
        gid: md.gid(),
        rdev: md.rdev() as u32,
        flags: 0,
        blksize: md.blksize() as u32,
    }
}

impl Filesystem for View {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        if parent != INodeNo::ROOT {
            return reply.error(Errno::ENOENT);
        }
        match std::fs::symlink_metadata(self.real.join(name)) {
            Ok(md) => reply.entry(&TTL, &attr(self.ino_of(name), &md), fuser::Generation(0)),
            Err(e) => reply.error(e.into()),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, fh: Option<FileHandle>, reply: ReplyAttr) {
        // An open file answers for itself (SQLite fstats its descriptor).
        let by_fh = fh.and_then(|fh| {
            self.open
                .lock()
                .unwrap()
                .get(&fh.0)
                .map(|(f, _)| f.metadata())
        });
        let md = match by_fh {
            Some(md) => md,
            None => match self.path_of(ino) {
                Some(p) => std::fs::symlink_metadata(p),
                None => return reply.error(Errno::ENOENT),
            },
        };
        match md {
            Ok(md) => reply.attr(&TTL, &attr(ino, &md)),
            Err(e) => reply.error(e.into()),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        if flags.acc_mode() != OpenAccMode::O_RDONLY {
            return reply.error(Errno::EROFS);
        }
        let Some(path) = self.path_of(ino) else {
            return reply.error(Errno::ENOENT);
        };
        match std::fs::File::open(&path) {
            Ok(f) => {
                let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
                let inbound = path.file_name() == Some(OsStr::new("inbound.db"));
                self.open.lock().unwrap().insert(fh, (f, inbound));
                // Direct IO: no page cache, every read reaches `read` below.
                reply.opened(FileHandle(fh), FopenFlags::FOPEN_DIRECT_IO);
            }
            Err(e) => reply.error(e.into()),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn read(
        &self,
        _: &Request,
        _: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _: OpenFlags,
        _: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let open = self.open.lock().unwrap();
        let Some((file, inbound)) = open.get(&fh.0) else {
            return reply.error(Errno::EBADF);
        };
        let mut buf = vec![0u8; size as usize];
        let mut n = 0;
        while n < buf.len() {
            match file.read_at(&mut buf[n..], offset + n as u64) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) => return reply.error(e.into()),
            }
        }
        let torn = *inbound && self.torn.as_ref().is_some_and(|t| t.load(Ordering::SeqCst));
        if torn && offset < HEADER && n > 0 {
            let end = ((HEADER - offset) as usize).min(n);
            buf[..end].fill(0x5a);
            self.torn_reads.fetch_add(1, Ordering::Relaxed);
        }
        reply.data(&buf[..n]);
    }

    #[allow(clippy::too_many_arguments)]
    fn release(
        &self,
        _: &Request,
        _: INodeNo,
        fh: FileHandle,
        _: OpenFlags,
        _: Option<LockOwner>,
        _: bool,
        reply: ReplyEmpty,
    ) {
        self.open.lock().unwrap().remove(&fh.0);
        reply.ok();
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        if ino != INodeNo::ROOT {
            return reply.error(Errno::ENOTDIR);
        }
        let mut entries = vec![
            (INodeNo::ROOT, FileType::Directory, OsString::from(".")),
            (INodeNo::ROOT, FileType::Directory, "..".into()),
        ];
        let mut real: Vec<_> = match std::fs::read_dir(&self.real) {
            Ok(rd) => rd.flatten().collect(),
            Err(e) => return reply.error(e.into()),
        };
        real.sort_by_key(|e| e.file_name());
        for e in real {
            let kind = e
                .file_type()
                .ok()
                .and_then(FileType::from_std)
                .unwrap_or(FileType::RegularFile);
            entries.push((self.ino_of(&e.file_name()), kind, e.file_name()));
        }
        for (i, (ino, kind, name)) in entries.into_iter().enumerate().skip(offset as usize) {
            if reply.add(ino, i as u64 + 1, kind, name) {
                break;
            }
        }
        reply.ok();
    }

    fn access(&self, _req: &Request, _ino: INodeNo, _mask: AccessFlags, reply: ReplyEmpty) {
        reply.ok(); // a read-only mount: the kernel refuses writes itself
    }
}

/// The mounts made for the spawns, in order; dropping one unmounts it.
struct Views {
    root: PathBuf,
    torn: Arc<AtomicBool>,
    torn_reads: Arc<AtomicUsize>,
    mounts: Mutex<Vec<(PathBuf, fuser::BackgroundSession)>>,
    errors: Mutex<Vec<String>>,
}

impl Views {
    /// The `in_dir_view` hook: a fresh mount per spawn; only the first is torn.
    fn mount_next(&self, real: &Path) -> std::io::Result<PathBuf> {
        let mut mounts = self.mounts.lock().unwrap();
        let at = self.root.join(format!("view-{}", mounts.len()));
        std::fs::create_dir_all(&at).unwrap();
        let fs = View {
            real: real.to_owned(),
            torn: mounts.is_empty().then(|| self.torn.clone()),
            torn_reads: self.torn_reads.clone(),
            names: Mutex::default(),
            open: Mutex::default(),
            next_fh: AtomicU64::new(1),
        };
        let mut cfg = fuser::Config::default();
        cfg.mount_options = vec![
            MountOption::RO,
            MountOption::FSName("pinch-torn-view".into()),
        ];
        // auto_unmount (through fusermount3) unmounts even if this process is killed.
        if Path::new("/usr/bin/fusermount3").exists() || Path::new("/bin/fusermount3").exists() {
            cfg.mount_options.push(MountOption::AutoUnmount);
        }
        cfg.acl = SessionACL::All; // allow_other: the sandbox is another user namespace
        match fuser::spawn_mount(fs, &at, &cfg) {
            Ok(s) => mounts.push((at.clone(), s)),
            Err(e) => {
                self.errors
                    .lock()
                    .unwrap()
                    .push(format!("mounting {}: {e}", at.display()));
                return Err(e); // a failed spawn for the host; the assertions below fail the test
            }
        }
        Ok(at)
    }

    fn unmount_all(&self) {
        for (at, s) in self
            .mounts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
        {
            drop(s); // unmounts
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(&at)
                .stderr(std::process::Stdio::null())
                .status();
        }
    }
}

/// Unmounts everything even when the test panics.
struct Unmount(Arc<Views>);
impl Drop for Unmount {
    fn drop(&mut self) {
        self.0.unmount_all();
    }
}

fn mounted_under(dir: &Path) -> Vec<String> {
    let d = dir.to_string_lossy().into_owned();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(&d))
        .map(str::to_owned)
        .collect()
}

/// The host's view: the real file, read-only, checked by SQLite itself.
fn integrity(db: &Path) -> Result<(), String> {
    let conn =
        pinch_proto::open::open_reader(db, Duration::from_secs(5)).map_err(|e| e.to_string())?;
    let ok: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .map_err(|e| e.to_string())?;
    if ok == "ok" {
        Ok(())
    } else {
        Err(ok)
    }
}

fn central(tmp: &Path) -> pinch_proto::rusqlite::Connection {
    pinch_proto::rusqlite::Connection::open(tmp.join("data/pinch.db")).unwrap()
}

#[test]
fn r1_torn_fuse_view_exit_75_host_file_ok_fresh_mount_answers_once() {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if !Path::new("/dev/fuse").exists() || !root {
        assert!(
            std::env::var("PINCH_TEST_NO_ROOT").as_deref() == Ok("1"),
            "this test needs root and /dev/fuse for a FUSE mount (root: {root}); set PINCH_TEST_NO_ROOT=1 to skip it"
        );
        eprintln!("note: no root or /dev/fuse and PINCH_TEST_NO_ROOT=1: skipping");
        return;
    }
    // bwrap binds the FUSE mount like any directory (--ro-bind); allow_other
    // lets the sandbox's user namespace through. Process only where bwrap is
    // explicitly unavailable (PINCH_TEST_NO_BWRAP=1).
    let choice = if bwrap_or_skip() {
        Choice::Bwrap
    } else {
        Choice::Process
    };
    let tmp = tempfile::tempdir().unwrap();
    let views = Arc::new(Views {
        root: tmp.path().join("views"),
        torn: Arc::new(AtomicBool::new(true)), // the first mount is torn from its first read
        torn_reads: Arc::default(),
        mounts: Mutex::default(),
        errors: Mutex::default(),
    });
    let guard = Unmount(views.clone());
    let mut cfg = host_config(tmp.path(), choice);
    let v = views.clone();
    cfg.in_dir_view = Some(Arc::new(move |real: &Path| v.mount_next(real)));
    cfg.runner.poll_idle_ms = 100; // inotify does not cross FUSE
    cfg.runner.corruption_streak = 10; // the real rule: 10 in a row,
    cfg.runner.corruption_pacing_ms = 500; // 500 ms apart (~5 s)
    cfg.budget.delays = vec![Duration::from_millis(200)];
    cfg.budget.budget = 20;

    let rt = rt();
    let host = rt.block_on(pinch_host::start(cfg)).unwrap();
    let mut c = Client::connect(&host.cli_socket);
    let t0 = Instant::now();
    let id = c.say(TEXT, "c1");
    let sdir = rt.block_on(host.sessions()).remove(0).dir;
    let db = sdir.join("in/inbound.db");
    let (mounted, errors) = (
        || !views.mounts.lock().unwrap().is_empty(),
        || views.errors.lock().unwrap().clone(),
    );
    wait_for("the first FUSE mount", Duration::from_secs(10), || {
        mounted() || !errors().is_empty()
    });
    assert!(
        errors().is_empty(),
        "as root the FUSE mount must succeed: {:?}",
        errors()
    );

    // The host's view, throughout: the real file is never corrupt.
    let done = Arc::new(AtomicBool::new(false));
    let checker = {
        let (db, done) = (db.clone(), done.clone());
        std::thread::spawn(move || {
            let (mut checks, mut failures) = (0u32, Vec::new());
            while !done.load(Ordering::SeqCst) {
                if let Err(e) = integrity(&db) {
                    failures.push(e);
                }
                checks += 1;
                std::thread::sleep(Duration::from_millis(50));
            }
            (checks, failures)
        })
    };

    let causes = || -> Vec<String> {
        let conn = central(tmp.path());
        let mut st = conn
            .prepare("SELECT cause FROM runner_exits ORDER BY rowid")
            .unwrap();
        st.query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    };
    wait_for(
        "the torn view's runner to exit 75",
        Duration::from_secs(30),
        || causes().iter().any(|c| c == "corruption"),
    );
    let exited = t0.elapsed();
    let texts = c.until_settled(&id);
    let answered = t0.elapsed();
    std::thread::sleep(Duration::from_secs(1)); // room for a duplicate to show up
                                                // The next round's replies would carry a late duplicate along with them.
    let later = c.ask("anything else?");

    done.store(true, Ordering::SeqCst);
    let (checks, failures) = checker.join().unwrap();
    let spawns = host.stats.spawns();
    rt.block_on(host.shutdown()).unwrap();
    integrity(&db).expect("the host's file at the end");
    let detail: String = central(tmp.path())
        .query_row(
            "SELECT detail FROM runner_exits WHERE cause = 'corruption' ORDER BY rowid LIMIT 1",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let produced: i64 = outbound(&sdir)
        .query_row(
            "SELECT count(*) FROM messages_out WHERE content LIKE ?1",
            [format!("%{REPLY}%")],
            |r| r.get(0),
        )
        .unwrap();
    let mounts = views.mounts.lock().unwrap().len();
    eprintln!(
        "{choice:?}: exit 75 after {exited:?}, answered after {answered:?}; {spawns} spawns, {mounts} mounts, {} torn reads, \
         {checks} host integrity checks; exit line: {detail}",
        views.torn_reads.load(Ordering::Relaxed)
    );

    assert!(
        errors().is_empty(),
        "as root the FUSE mounts must succeed: {:?}",
        errors()
    );
    assert!(
        views.torn_reads.load(Ordering::Relaxed) > 0,
        "the first mount served torn pages"
    );
    assert!(
        failures.is_empty(),
        "the host's inbound.db must stay ok: {failures:?}"
    );
    assert!(checks >= 10, "checked throughout: {checks}");
    assert!(
        detail.contains("exiting 75"),
        "the runner's exit line is the recorded detail: {detail}"
    );
    assert!(
        spawns >= 2 && mounts >= 2,
        "respawned with a fresh mount: {spawns} spawns, {mounts} mounts"
    );
    assert_eq!(
        texts.iter().filter(|t| t.contains(REPLY)).count(),
        1,
        "answered exactly once: {texts:?}"
    );
    assert!(
        !later.iter().any(|t| t.contains(REPLY)),
        "no late duplicate: {later:?}"
    );
    assert_eq!(produced, 1, "the runner wrote the reply once");
    assert!(
        causes().iter().filter(|c| *c == "corruption").count() == 1,
        "one torn exit: {:?}",
        causes()
    );

    drop(guard);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !mounted_under(tmp.path()).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        mounted_under(tmp.path()).is_empty(),
        "mounts left behind: {:?}",
        mounted_under(tmp.path())
    );
}
