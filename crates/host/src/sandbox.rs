//! Sandbox backends: how a runner process is isolated (SPEC §8).
//!
//! The host is the only spawner of runners, and this module builds every
//! runner command. A backend maps the session's folders to the runner's
//! view (the mount table) and produces the command line; the supervisor
//! spawns it, captures its output and watches its exit.
//!
//! - `bwrap`: bubblewrap. New user, pid, net, ipc, uts (and cgroup where
//!   possible) namespaces; tmpfs root; read-only `/usr`; `--cap-drop ALL`;
//!   `--die-with-parent`; `--clearenv`; no network. `in/` is a read-only
//!   **directory** bind and `out/` read-write: never single-file binds, which
//!   hide SQLite's `-journal` and tear databases.
//! - `process`: no isolation at all, for development; loud warning per spawn.
//!
//! Docker comes with the hardening work; the trait does not change for it.

use std::path::{Path, PathBuf};
use std::process::Command;

use pinch_proto::runner_config::{ExtraMount, RunnerPaths};

/// Where the runner executable is inside a bwrap sandbox.
pub const SANDBOX_EXE: &str = "/opt/pinch/bin/pinch";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Bwrap,
    Docker,
    Process,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Bwrap => "bwrap",
            Kind::Docker => "docker",
            Kind::Process => "process",
        }
    }

    /// Whether runners see the in-sandbox paths (`/pinch/…`, `/workspace/…`).
    pub fn isolated(self) -> bool {
        self != Kind::Process
    }
}

/// The user's choice (`--sandbox`, `[sandbox] backend`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Choice {
    Auto,
    Bwrap,
    Docker,
    Process,
}

impl std::str::FromStr for Choice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Choice::Auto),
            "bwrap" => Ok(Choice::Bwrap),
            "process" => Ok(Choice::Process),
            "docker" => Ok(Choice::Docker),
            other => Err(format!(
                "unknown sandbox {other:?}: expected auto, bwrap, docker or process"
            )),
        }
    }
}

/// Where the models folder appears inside the bwrap sandbox (SPEC §8.1).
pub const SANDBOX_MODELS: &str = "/opt/pinch/models";
/// Where a configured model file outside the models folder appears.
pub const SANDBOX_MODEL_FILE_DIR: &str = "/opt/pinch/model";

/// Host-side folders a runner needs.
#[derive(Clone, Debug, Default)]
pub struct Mounts {
    pub in_dir: PathBuf,
    pub out_dir: PathBuf,
    pub inbox_dir: PathBuf,
    pub outbox_dir: PathBuf,
    pub agent_dir: PathBuf,
    pub global_dir: PathBuf,
    /// The session's proxy directory (`run/proxy/<session>/`), bound
    /// read-only at `/pinch/run`.
    pub proxy_dir: Option<PathBuf>,
    /// `$PINCH_HOME/models/`, bound read-only at `/opt/pinch/models`.
    pub models_dir: Option<PathBuf>,
    /// A local model file configured outside `models_dir`, bound read-only
    /// by itself at `/opt/pinch/model/<file name>`.
    pub model_file: Option<PathBuf>,
    /// Extra folders the owner allowed (SPEC §7.8), at
    /// `/workspace/extra/<name>`, read-only unless granted read-write.
    pub extra: Vec<pinch_policy::mounts::Granted>,
    /// The group's tools folder (approved packages), read-only at
    /// `/opt/pinch/tools` when it exists (SPEC §7.6). It lives in the data
    /// dir's host-only `tools/<folder>/`, never in the agent's workspace.
    pub tools_dir: Option<PathBuf>,
    /// The host's copy of the group's `AGENT.md` (in the session's
    /// host-only folder), read-only over `/workspace/agent/AGENT.md`.
    pub agent_md: Option<PathBuf>,
    /// The data dir: every source beneath it is opened beneath it, with
    /// no symlink at any level (see [`Mounts::binds`]).
    pub data_root: PathBuf,
}

/// How a bind source's path is trusted, and so how it is opened (issue 14).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// Beneath the data dir: opened beneath it, no symlink at any level.
    Data,
    /// An extra folder, stored as its real path: no symlink anywhere from `/`.
    Canonical,
    /// The owner's own setting outside the data dir (the pinch binary, a
    /// model file kept elsewhere): opened as configured.
    Owner,
}

/// One bind of the mount table (the system folders aside).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bind {
    pub src: PathBuf,
    pub dest: String,
    pub rw: bool,
    /// Skipped when the source does not exist (the models and tools
    /// folders); any other failure to open it stops the spawn.
    pub optional: bool,
    pub source: Source,
}

/// A bind whose source is open: what is mounted is this inode, whatever
/// happens to its path after the check.
#[derive(Debug)]
pub struct OpenBind {
    pub fd: std::os::fd::OwnedFd,
    pub bind: Bind,
}

/// Why a bind source was refused.
#[derive(Debug, thiserror::Error)]
#[error("cannot mount {dest} into the sandbox: {source}")]
pub struct BindError {
    pub dest: String,
    #[source]
    pub source: crate::safe_fs::Error,
}

impl Mounts {
    /// The local model's path as a bwrap runner sees it: under
    /// `/opt/pinch/models` when it lives in the models folder, else the
    /// single-file bind (`model_file` must then be set to it).
    pub fn model_path_inside(&self, host: &Path) -> PathBuf {
        if let Some(rel) = self
            .models_dir
            .as_deref()
            .and_then(|d| host.strip_prefix(d).ok())
        {
            return Path::new(SANDBOX_MODELS).join(rel);
        }
        Path::new(SANDBOX_MODEL_FILE_DIR).join(host.file_name().unwrap_or_default())
    }

    fn source_of(&self, p: &Path) -> Source {
        if !self.data_root.as_os_str().is_empty() && p.starts_with(&self.data_root) {
            Source::Data
        } else {
            Source::Owner
        }
    }

    /// The mount table every backend builds, after the system folders
    /// (`/usr`, the libraries, a few files of `/etc`), in mount order.
    /// `exe` is the runner binary for backends that bind it (bwrap).
    ///
    /// No source is a path an agent can write or replace: the session's
    /// folders and the group's workspace are bound as the folders
    /// themselves (their parents are host-only); the tools folder and the
    /// `AGENT.md` copy live in host-only folders; extra folders are real
    /// paths the owner allowed. [`open_binds`] opens each with no symlink
    /// followed beneath its trusted root.
    pub fn binds(&self, exe: Option<&Path>) -> Vec<Bind> {
        let mut v = Vec::new();
        let mut add = |src: &Path, dest: &str, rw: bool, optional: bool, source: Source| {
            v.push(Bind {
                src: src.to_owned(),
                dest: dest.to_owned(),
                rw,
                optional,
                source,
            });
        };
        let src = |p: &Path| self.source_of(p);
        add(&self.in_dir, "/pinch/in", false, false, src(&self.in_dir));
        add(&self.out_dir, "/pinch/out", true, false, src(&self.out_dir));
        add(
            &self.inbox_dir,
            "/workspace/inbox",
            false,
            false,
            src(&self.inbox_dir),
        );
        add(
            &self.outbox_dir,
            "/workspace/outbox",
            true,
            false,
            src(&self.outbox_dir),
        );
        add(
            &self.agent_dir,
            "/workspace/agent",
            true,
            false,
            src(&self.agent_dir),
        );
        add(
            &self.global_dir,
            "/workspace/global",
            false,
            false,
            src(&self.global_dir),
        );
        if let Some(exe) = exe {
            add(exe, SANDBOX_EXE, false, false, Source::Owner);
        }
        if let Some(proxy) = &self.proxy_dir {
            add(proxy, "/pinch/run", false, false, src(proxy));
        }
        if let Some(models) = &self.models_dir {
            add(models, SANDBOX_MODELS, false, true, src(models));
        }
        if let Some(file) = self
            .model_file
            .as_ref()
            .filter(|f| self.models_dir.as_ref().is_none_or(|d| !f.starts_with(d)))
        {
            add(
                file,
                &self.model_path_inside(file).to_string_lossy(),
                false,
                false,
                src(file),
            );
        }
        if let Some(t) = &self.tools_dir {
            add(t, crate::tools_dir::SANDBOX_TOOLS, false, true, src(t));
        }
        for g in &self.extra {
            add(
                &g.host,
                &format!("/workspace/extra/{}", g.name),
                g.read_write,
                false,
                Source::Canonical,
            );
        }
        // The operator's instructions are read-only even inside the rw workspace.
        if let Some(md) = &self.agent_md {
            add(md, "/workspace/agent/AGENT.md", false, false, src(md));
        }
        v
    }
}

/// Opens every source of `binds` the way its [`Source`] says (never
/// following a symlink beneath a trusted root), checks it is a folder or a
/// regular file, and returns the descriptors to mount. Optional sources
/// that are missing are left out.
pub fn open_binds(m: &Mounts, binds: &[Bind]) -> Result<Vec<OpenBind>, BindError> {
    use crate::safe_fs::{Dir, Error};
    let mut data: Option<Dir> = None;
    let mut root: Option<Dir> = None;
    let mut out = Vec::new();
    for b in binds {
        let err = |source: Error| BindError {
            dest: b.dest.clone(),
            source,
        };
        let opened = match b.source {
            Source::Data => {
                if data.is_none() {
                    data = Some(Dir::open_trusted(&m.data_root).map_err(err)?);
                }
                let d = data.as_ref().expect("opened above");
                let rel = b
                    .src
                    .strip_prefix(&m.data_root)
                    .expect("a Data source is beneath the data dir");
                d.bind_source(rel)
            }
            Source::Canonical => {
                if root.is_none() {
                    root = Some(Dir::open_trusted(Path::new("/")).map_err(err)?);
                }
                let rel = b
                    .src
                    .strip_prefix("/")
                    .map_err(|_| err(Error::BadPath(b.src.clone())))?;
                root.as_ref().expect("opened above").bind_source(rel)
            }
            Source::Owner => rustix::fs::open(
                &b.src,
                rustix::fs::OFlags::PATH | rustix::fs::OFlags::CLOEXEC,
                rustix::fs::Mode::empty(),
            )
            .map_err(|e| Error::from_errno(b.src.clone(), e)),
        };
        match opened {
            Ok(fd) => {
                // Well above the fds the spawn itself places (the liveness
                // pipe at 3).
                let fd = rustix::io::fcntl_dupfd_cloexec(&fd, 10).map_err(|e| {
                    err(Error::Io {
                        path: b.src.clone(),
                        source: e.into(),
                    })
                })?;
                out.push(OpenBind {
                    fd,
                    bind: b.clone(),
                });
            }
            Err(Error::Missing(_)) if b.optional => {}
            Err(e) => return Err(err(e)),
        }
    }
    Ok(out)
}

pub trait Sandbox: Send + Sync {
    fn kind(&self) -> Kind;
    /// The folders as the runner sees them (goes into `runner.json`).
    fn runner_paths(&self, m: &Mounts) -> RunnerPaths;
    /// The local model's path as the runner sees it.
    fn model_path(&self, m: &Mounts, host: &Path) -> PathBuf;
    /// The command that starts `pinch runner` for these mounts.
    fn command(&self, exe: &Path, m: &Mounts, env: &[(String, String)])
        -> std::io::Result<Command>;
    /// Whether file descriptors reach the runner (the liveness pipe,
    /// decision 0006); a container's runner does not get them.
    fn passes_fds(&self) -> bool {
        true
    }
    /// Kills what a SIGKILL of the spawned process does not reach (a
    /// container outlives its `docker run` client).
    fn kill_session(&self, _session_id: &str) {}
    /// Once at host start: build what the backend needs (Docker's image)
    /// and clean up after a previous host of this data dir.
    fn prepare(&mut self, _exe: &Path, _data_dir: &Path, _run_dir: &Path) -> Result<(), String> {
        Ok(())
    }
}

/// The folders as a runner inside bwrap or Docker sees them.
pub fn sandboxed_paths(m: &Mounts) -> RunnerPaths {
    RunnerPaths {
        in_dir: "/pinch/in".into(),
        out_dir: "/pinch/out".into(),
        inbox_dir: "/workspace/inbox".into(),
        outbox_dir: "/workspace/outbox".into(),
        workspace_dir: "/workspace/agent".into(),
        global_dir: Some("/workspace/global".into()),
        extra: m
            .extra
            .iter()
            .map(|g| ExtraMount {
                name: g.name.clone(),
                path: format!("/workspace/extra/{}", g.name).into(),
                read_write: g.read_write,
            })
            .collect(),
    }
}

/// Per-process resource limits every bwrap runner (and whatever it starts)
/// gets as rlimits, inherited across fork and exec (SPEC §8; issue 8).
/// Memory is `RLIMIT_DATA` (private writable memory: heap, anonymous
/// mappings), not `RLIMIT_AS`, which breaks runtimes that reserve large
/// address ranges they never touch (V8, Go); files mapped read-only, like a
/// local model, do not count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Private writable memory per process, MiB.
    pub memory_mb: u64,
    /// Largest file a process may write, MiB (`EFBIG` beyond).
    pub file_size_mb: u64,
    /// CPU seconds per process (SIGXCPU, then SIGKILL a second later).
    pub cpu_s: u64,
    /// Open files per process.
    pub open_files: u64,
    /// Processes and threads in the whole sandbox (cgroup `pids.max`; the
    /// sandbox's total memory is capped at `memory_mb` the same way).
    pub pids: u64,
    /// Put each sandbox in cgroups of its own for `pids` and the total
    /// memory. Joining costs ~7 ms per cgroup v1 hierarchy on each cold
    /// start (the kernel's migration lock); `false` keeps the rlimits only.
    pub cgroup: bool,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory_mb: 4096,
            file_size_mb: 1024,
            cpu_s: 4 * 3600,
            open_files: 4096,
            pids: 512,
            cgroup: true,
        }
    }
}

impl Limits {
    /// (resource, soft = hard value) pairs; core dumps are always off.
    fn rlimits(&self) -> [(libc::__rlimit_resource_t, u64); 5] {
        [
            (libc::RLIMIT_DATA, self.memory_mb.saturating_mul(1 << 20)),
            (
                libc::RLIMIT_FSIZE,
                self.file_size_mb.saturating_mul(1 << 20),
            ),
            (libc::RLIMIT_CPU, self.cpu_s),
            (libc::RLIMIT_NOFILE, self.open_files),
            (libc::RLIMIT_CORE, 0),
        ]
    }
}

/// bubblewrap.
pub struct Bwrap {
    pub bwrap: PathBuf,
    pub limits: Limits,
}

impl Bwrap {
    pub fn new(bwrap: PathBuf) -> Bwrap {
        Bwrap {
            bwrap,
            limits: Limits::default(),
        }
    }

    /// The hardened sandbox around `cmd`, as a command ready to spawn: the
    /// mount table of [`Mounts::binds`] with every source opened by
    /// [`open_binds`] and mounted by descriptor (`--ro-bind-fd`,
    /// `--bind-fd`: bwrap mounts the inode that was checked, not a path an
    /// agent could swap meanwhile), the seccomp filter ([`crate::seccomp`],
    /// an fd bwrap installs just before exec) and the rlimits. bwrap reads
    /// its options from a memfd (`--args`), so no host path appears in the
    /// sandbox's `/proc/1/cmdline`. The runner's own command is
    /// [`Sandbox::command`]; tests run other commands in exactly this box.
    pub fn command_with(
        &self,
        exe: &Path,
        m: &Mounts,
        env: &[(String, String)],
        cmd: &[&str],
    ) -> std::io::Result<Command> {
        use std::os::fd::AsRawFd;
        use std::os::unix::process::CommandExt;
        let opened =
            open_binds(m, &m.binds(Some(exe))).map_err(|e| std::io::Error::other(e.to_string()))?;
        let filter = crate::seccomp::memfd()?;
        let table: Vec<[String; 3]> = opened
            .iter()
            .map(|o| {
                [
                    if o.bind.rw {
                        "--bind-fd"
                    } else {
                        "--ro-bind-fd"
                    }
                    .to_owned(),
                    o.fd.as_raw_fd().to_string(),
                    o.bind.dest.clone(),
                ]
            })
            .collect();
        let mut opts = vec!["--seccomp".to_owned(), filter.as_raw_fd().to_string()];
        opts.extend(self.options(env, &table));
        let args = args_memfd(&opts)?;
        let mut c = Command::new(&self.bwrap);
        c.arg("--args")
            .arg(args.as_raw_fd().to_string())
            .arg("--")
            .args(cmd);
        c.env_clear();
        let limits = self.limits.rlimits();
        // The sandbox's own cgroup (pids, memory), joined in the child.
        if self.limits.cgroup {
            crate::cgroup::sweep();
        }
        let id = pinch_proto::runner_config::random_hex(6);
        let prepared = if self.limits.cgroup {
            crate::cgroup::prepare(
                &id,
                crate::cgroup::Caps {
                    pids: self.limits.pids,
                    memory_mb: self.limits.memory_mb,
                },
            )
            .map(Some)
        } else {
            Ok(None)
        };
        let cgroups = match prepared {
            Ok(p) => p,
            Err(e) => {
                static WARNED: std::sync::atomic::AtomicBool =
                    std::sync::atomic::AtomicBool::new(false);
                if !WARNED.swap(true, std::sync::atomic::Ordering::Relaxed) {
                    tracing::warn!("sandboxes run without a process and memory cap (cgroups are not usable here: {e}); rlimits still apply. `pinch doctor` explains");
                }
                None
            }
        };
        let procs: Vec<std::os::fd::RawFd> = cgroups
            .iter()
            .flat_map(|p| p.procs.iter().map(|f| f.as_raw_fd()))
            .collect();
        // The fds bwrap reads: the filter, the options, every bind source.
        let mut pass: Vec<std::os::fd::RawFd> = vec![filter.as_raw_fd(), args.as_raw_fd()];
        pass.extend(opened.iter().map(|o| o.fd.as_raw_fd()));
        // SAFETY: only async-signal-safe calls (write, fcntl, setrlimit)
        // between fork and exec; the closure owns the fds until then.
        unsafe {
            c.pre_exec(move || {
                let _keep = (&cgroups, &filter, &args, &opened);
                crate::cgroup::join(&procs)?;
                // These fds survive exec (only in this child); bwrap closes
                // the bind sources once mounted.
                for fd in &pass {
                    if libc::fcntl(*fd, libc::F_SETFD, 0) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                for (res, v) in limits {
                    let r = libc::rlimit {
                        rlim_cur: v,
                        rlim_max: v,
                    };
                    if libc::setrlimit(res, &r) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        Ok(c)
    }

    /// The runner's argv in its path form (what [`Bwrap::command_with`]
    /// mounts by descriptor), for tests and documentation.
    pub fn argv(&self, exe: &Path, m: &Mounts, env: &[(String, String)]) -> Vec<String> {
        let cmd = [SANDBOX_EXE, "runner", "--config", "/pinch/in/runner.json"];
        let table: Vec<[String; 3]> = m
            .binds(Some(exe))
            .into_iter()
            .map(|b| {
                [
                    if b.rw { "--bind" } else { "--ro-bind" }.to_owned(),
                    b.src.to_string_lossy().into_owned(),
                    b.dest,
                ]
            })
            .collect();
        let mut a = self.options(env, &table);
        a.push("--".into());
        a.extend(cmd.iter().map(|s| s.to_string()));
        a
    }

    /// bwrap's options: namespaces, the system folders, the mount `table`
    /// (flag, source, destination), the working folder and `env`.
    fn options(&self, env: &[(String, String)], table: &[[String; 3]]) -> Vec<String> {
        let mut a: Vec<String> = Vec::new();
        let mut push = |xs: &[&str]| a.extend(xs.iter().map(|s| s.to_string()));
        push(&[
            "--unshare-user",
            "--unshare-pid",
            "--unshare-net",
            "--unshare-ipc",
            "--unshare-uts",
            "--unshare-cgroup-try",
            "--die-with-parent",
            "--new-session",
            "--cap-drop",
            "ALL",
            "--clearenv",
            "--hostname",
            "pinch",
            "--tmpfs",
            "/",
            "--ro-bind",
            "/usr",
            "/usr",
        ]);
        // Merged-/usr systems have symlinks; older ones real directories.
        for d in ["bin", "sbin", "lib", "lib32", "lib64", "libx32"] {
            let host = Path::new("/").join(d);
            match std::fs::symlink_metadata(&host) {
                Ok(md) if md.file_type().is_symlink() => {
                    if let Ok(target) = std::fs::read_link(&host) {
                        a.extend([
                            "--symlink".into(),
                            target.to_string_lossy().into_owned(),
                            host.to_string_lossy().into_owned(),
                        ]);
                    }
                }
                Ok(md) if md.is_dir() => {
                    let h = host.to_string_lossy().into_owned();
                    a.extend(["--ro-bind".into(), h.clone(), h]);
                }
                _ => {}
            }
        }
        let mut push = |xs: &[&str]| a.extend(xs.iter().map(|s| s.to_string()));
        push(&["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"]);
        // A minimal /etc: the dynamic linker cache, zone info, resolver-free.
        for f in [
            "/etc/ld.so.cache",
            "/etc/localtime",
            "/etc/passwd",
            "/etc/group",
            "/etc/nsswitch.conf",
        ] {
            push(&["--ro-bind-try", f, f]);
        }
        for row in table {
            a.extend(row.iter().cloned());
        }
        a.extend(["--chdir".into(), "/workspace/agent".into()]);
        for (k, v) in env {
            a.extend(["--setenv".into(), k.clone(), v.clone()]);
        }
        a
    }
}

/// bwrap's options as NUL-terminated strings in a sealed memfd.
fn args_memfd(opts: &[String]) -> std::io::Result<std::os::fd::OwnedFd> {
    use std::io::{Seek, Write};
    let fd = rustix::fs::memfd_create(
        "pinch-bwrap-args",
        rustix::fs::MemfdFlags::CLOEXEC | rustix::fs::MemfdFlags::ALLOW_SEALING,
    )?;
    let mut f = std::fs::File::from(fd);
    for o in opts {
        if o.contains('\0') {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("a sandbox argument contains NUL: {o:?}"),
            ));
        }
        f.write_all(o.as_bytes())?;
        f.write_all(b"\0")?;
    }
    f.seek(std::io::SeekFrom::Start(0))?;
    let fd = std::os::fd::OwnedFd::from(f);
    rustix::fs::fcntl_add_seals(
        &fd,
        rustix::fs::SealFlags::SHRINK
            | rustix::fs::SealFlags::GROW
            | rustix::fs::SealFlags::WRITE
            | rustix::fs::SealFlags::SEAL,
    )?;
    Ok(fd)
}

impl Sandbox for Bwrap {
    fn kind(&self) -> Kind {
        Kind::Bwrap
    }

    fn runner_paths(&self, m: &Mounts) -> RunnerPaths {
        sandboxed_paths(m)
    }

    fn model_path(&self, m: &Mounts, host: &Path) -> PathBuf {
        m.model_path_inside(host)
    }

    fn command(
        &self,
        exe: &Path,
        m: &Mounts,
        env: &[(String, String)],
    ) -> std::io::Result<Command> {
        self.command_with(
            exe,
            m,
            env,
            &[SANDBOX_EXE, "runner", "--config", "/pinch/in/runner.json"],
        )
    }
}

/// No isolation (development only).
pub struct Process;

impl Sandbox for Process {
    fn kind(&self) -> Kind {
        Kind::Process
    }

    fn runner_paths(&self, m: &Mounts) -> RunnerPaths {
        RunnerPaths {
            in_dir: m.in_dir.clone(),
            out_dir: m.out_dir.clone(),
            inbox_dir: m.inbox_dir.clone(),
            outbox_dir: m.outbox_dir.clone(),
            workspace_dir: m.agent_dir.clone(),
            global_dir: Some(m.global_dir.clone()),
            extra: m
                .extra
                .iter()
                .map(|g| ExtraMount {
                    name: g.name.clone(),
                    path: g.host.clone(),
                    read_write: g.read_write,
                })
                .collect(),
        }
    }

    fn model_path(&self, _m: &Mounts, host: &Path) -> PathBuf {
        host.to_owned()
    }

    fn command(
        &self,
        exe: &Path,
        m: &Mounts,
        env: &[(String, String)],
    ) -> std::io::Result<Command> {
        use std::os::unix::process::CommandExt;
        let mut c = Command::new(exe);
        c.arg("runner")
            .arg("--config")
            .arg(m.in_dir.join(pinch_proto::layout::RUNNER_JSON));
        c.current_dir(&m.agent_dir);
        c.env_clear();
        c.envs(env.iter().map(|(k, v)| (k, v)));
        // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            c.pre_exec(|| {
                // Die with the host like bwrap's --die-with-parent.
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        Ok(c)
    }
}

/// Finds `bwrap` on PATH.
pub fn find_bwrap() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("bwrap"))
        .find(|p| p.is_file())
}

/// Runs a trivial sandbox to prove bubblewrap works here (user namespaces
/// enabled, setuid or not). Returns the reason when it does not.
pub fn probe_bwrap(bwrap: &Path) -> Result<(), String> {
    let out = Command::new(bwrap)
        .args([
            "--unshare-user",
            "--unshare-pid",
            "--unshare-net",
            "--die-with-parent",
            "--cap-drop",
            "ALL",
            "--ro-bind",
            "/",
            "/",
            "--proc",
            "/proc",
            "--dev",
            "/dev",
            "true",
        ])
        .env_clear()
        .output()
        .map_err(|e| format!("cannot run {}: {e}", bwrap.display()))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{} failed ({}): {}",
            bwrap.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// How to get bubblewrap, for error messages.
pub const INSTALL_BWRAP: &str = "install bubblewrap (Debian/Ubuntu: `sudo apt-get install -y bubblewrap`; \
Fedora: `sudo dnf install bubblewrap`), or run without isolation for development only with `--sandbox process`";

/// Resolves the user's choice into a working backend, or says what to do.
pub fn select(choice: Choice) -> Result<Box<dyn Sandbox>, String> {
    select_with(choice, Limits::default())
}

/// [`select`] with the configured resource limits.
pub fn select_with(choice: Choice, limits: Limits) -> Result<Box<dyn Sandbox>, String> {
    match choice {
        Choice::Process => Ok(Box::new(Process)),
        Choice::Docker => {
            let Some(docker) = crate::docker::find_docker() else {
                return Err("docker is not installed: install it (Debian/Ubuntu: `sudo apt-get install -y docker.io`), or use --sandbox bwrap".into());
            };
            crate::docker::probe(&docker)?;
            Ok(Box::new(crate::docker::Docker::new(docker, limits)))
        }
        Choice::Bwrap | Choice::Auto => {
            let Some(bwrap) = find_bwrap() else {
                return Err(format!(
                    "bubblewrap (bwrap) is not installed: {INSTALL_BWRAP}"
                ));
            };
            probe_bwrap(&bwrap).map_err(|e| format!("bubblewrap does not work here ({e}): enable unprivileged user namespaces, or {INSTALL_BWRAP}"))?;
            Ok(Box::new(Bwrap { bwrap, limits }))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mounts() -> Mounts {
        Mounts {
            in_dir: "/d/s/in".into(),
            out_dir: "/d/s/out".into(),
            inbox_dir: "/d/s/inbox".into(),
            outbox_dir: "/d/s/outbox".into(),
            agent_dir: "/d/groups/main".into(),
            global_dir: "/d/groups/global".into(),
            proxy_dir: Some("/d/run/proxy/s1".into()),
            ..Default::default()
        }
    }

    /// The models folder is read-only at /opt/pinch/models; a model kept
    /// elsewhere is bound by itself, and runner.json names the inside path.
    #[test]
    fn the_local_model_is_bound_read_only_and_named_as_seen_inside() {
        let tmp = std::env::temp_dir().join(format!("pinch-sandbox-models-{}", std::process::id()));
        std::fs::create_dir_all(&tmp).unwrap();
        let b = Bwrap::new("/usr/bin/bwrap".into());
        let mut m = mounts();
        m.models_dir = Some(tmp.clone());
        let inside = b.model_path(&m, &tmp.join("m.gguf"));
        assert_eq!(inside, Path::new("/opt/pinch/models/m.gguf"));
        let joined = b.argv(Path::new("/p"), &m, &[]).join(" ");
        assert!(
            joined.contains(&format!("--ro-bind {} /opt/pinch/models", tmp.display())),
            "{joined}"
        );
        m.model_file = Some("/srv/llm/other.gguf".into());
        assert_eq!(
            b.model_path(&m, Path::new("/srv/llm/other.gguf")),
            Path::new("/opt/pinch/model/other.gguf")
        );
        let joined = b.argv(Path::new("/p"), &m, &[]).join(" ");
        assert!(
            joined.contains("--ro-bind /srv/llm/other.gguf /opt/pinch/model/other.gguf"),
            "{joined}"
        );
        assert_eq!(
            Process.model_path(&m, Path::new("/srv/llm/other.gguf")),
            Path::new("/srv/llm/other.gguf")
        );
        let _ = std::fs::remove_dir_all(tmp);
    }

    /// The mount table: directories only, `in/` read-only, `out/` rw.
    #[test]
    fn bwrap_argv_binds_directories_with_the_right_modes() {
        let b = Bwrap::new("/usr/bin/bwrap".into());
        let a = b.argv(
            Path::new("/usr/local/bin/pinch"),
            &mounts(),
            &[("TZ".into(), "UTC".into())],
        );
        let joined = a.join(" ");
        for must in [
            "--unshare-user",
            "--unshare-pid",
            "--unshare-net",
            "--unshare-ipc",
            "--unshare-uts",
            "--die-with-parent",
            "--cap-drop ALL",
            "--clearenv",
            "--tmpfs /",
            "--ro-bind /usr /usr",
            "--ro-bind /d/s/in /pinch/in",
            "--bind /d/s/out /pinch/out",
            "--ro-bind /d/s/inbox /workspace/inbox",
            "--bind /d/s/outbox /workspace/outbox",
            "--ro-bind /usr/local/bin/pinch /opt/pinch/bin/pinch",
            "--setenv TZ UTC",
            "--ro-bind /d/run/proxy/s1 /pinch/run",
            "-- /opt/pinch/bin/pinch runner --config /pinch/in/runner.json",
        ] {
            assert!(joined.contains(must), "missing {must:?} in {joined}");
        }
        assert!(!joined.contains("--share-net"));
        assert!(
            !joined.contains("inbound.db"),
            "never a single-file bind of a session DB"
        );
        assert!(!joined.contains("outbound.db"));
    }

    #[test]
    fn choice_parsing_names_the_fix() {
        assert_eq!("bwrap".parse::<Choice>().unwrap(), Choice::Bwrap);
        assert_eq!("docker".parse::<Choice>().unwrap(), Choice::Docker);
        assert!("lxc"
            .parse::<Choice>()
            .unwrap_err()
            .contains("expected auto, bwrap, docker or process"));
    }
}
