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
    /// `/opt/pinch/tools` when it exists (SPEC §7.6).
    pub tools_dir: Option<PathBuf>,
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
    /// mount table of [`Bwrap::argv_with`], the seccomp filter
    /// ([`crate::seccomp`], passed to bwrap as an fd it installs just
    /// before exec) and the rlimits. The runner's own command is
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
        let filter = crate::seccomp::memfd()?;
        let fd = filter.as_raw_fd();
        let mut argv = vec!["--seccomp".to_owned(), fd.to_string()];
        argv.extend(self.argv_with(exe, m, env, cmd));
        let mut c = Command::new(&self.bwrap);
        c.args(argv);
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
        // SAFETY: only async-signal-safe calls (write, fcntl, setrlimit)
        // between fork and exec; the closure owns the fds until then.
        unsafe {
            c.pre_exec(move || {
                let _keep = &cgroups;
                crate::cgroup::join(&procs)?;
                // The filter's fd survives exec (only in this child).
                if libc::fcntl(filter.as_raw_fd(), libc::F_SETFD, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
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

    /// The full argv for `pinch runner` in the sandbox.
    pub fn argv(&self, exe: &Path, m: &Mounts, env: &[(String, String)]) -> Vec<String> {
        let cmd = [SANDBOX_EXE, "runner", "--config", "/pinch/in/runner.json"];
        self.argv_with(exe, m, env, &cmd)
    }

    /// The same sandbox around another command (the security tests run a
    /// shell in exactly the runner's sandbox).
    pub fn argv_with(
        &self,
        exe: &Path,
        m: &Mounts,
        env: &[(String, String)],
        cmd: &[&str],
    ) -> Vec<String> {
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
        let p = |x: &Path| x.to_string_lossy().into_owned();
        let binds: [(&str, String, &str); 7] = [
            ("--ro-bind", p(&m.in_dir), "/pinch/in"),
            ("--bind", p(&m.out_dir), "/pinch/out"),
            ("--ro-bind", p(&m.inbox_dir), "/workspace/inbox"),
            ("--bind", p(&m.outbox_dir), "/workspace/outbox"),
            ("--bind", p(&m.agent_dir), "/workspace/agent"),
            ("--ro-bind", p(&m.global_dir), "/workspace/global"),
            ("--ro-bind", p(exe), SANDBOX_EXE),
        ];
        for (flag, host, inside) in binds {
            a.extend([flag.to_string(), host, inside.to_string()]);
        }
        if let Some(proxy) = &m.proxy_dir {
            a.extend(["--ro-bind".into(), p(proxy), "/pinch/run".into()]);
        }
        if let Some(models) = m.models_dir.as_ref().filter(|d| d.is_dir()) {
            a.extend(["--ro-bind".into(), p(models), SANDBOX_MODELS.into()]);
        }
        if let Some(file) = m
            .model_file
            .as_ref()
            .filter(|f| m.models_dir.as_ref().is_none_or(|d| !f.starts_with(d)))
        {
            a.extend(["--ro-bind".into(), p(file), p(&m.model_path_inside(file))]);
        }
        if let Some(t) = m.tools_dir.as_ref().filter(|t| t.is_dir()) {
            a.extend([
                "--ro-bind".into(),
                p(t),
                crate::tools_dir::SANDBOX_TOOLS.into(),
            ]);
        }
        for g in &m.extra {
            let flag = if g.read_write { "--bind" } else { "--ro-bind" };
            a.extend([
                flag.into(),
                p(&g.host),
                format!("/workspace/extra/{}", g.name),
            ]);
        }
        // The operator's instructions are read-only even inside the rw workspace.
        let agent_md = m.agent_dir.join("AGENT.md");
        if agent_md.exists() {
            a.extend([
                "--ro-bind".into(),
                p(&agent_md),
                "/workspace/agent/AGENT.md".into(),
            ]);
        }
        a.extend(["--chdir".into(), "/workspace/agent".into()]);
        for (k, v) in env {
            a.extend(["--setenv".into(), k.clone(), v.clone()]);
        }
        a.push("--".into());
        a.extend(cmd.iter().map(|s| s.to_string()));
        a
    }
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
