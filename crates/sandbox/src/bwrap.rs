//! The bubblewrap backend: new user, pid, net, ipc, uts (and cgroup where
//! possible) namespaces; tmpfs root; read-only `/usr`; `--cap-drop ALL`;
//! `--die-with-parent`; `--clearenv`; no network; the mount table bound by
//! descriptor; the [`crate::seccomp`] filter; rlimits and a
//! [`crate::cgroup`] per sandbox.

use std::path::{Path, PathBuf};
use std::process::Command;

use pinch_proto::runner_config::RunnerPaths;

use crate::backend::{sandboxed_paths, Kind, RunnerHandle, RunnerSpec, Sandbox, StartError};
use crate::child::{self, Liveness};
use crate::limits::Limits;
use crate::mounts::{open_binds, Mounts, SANDBOX_EXE};

/// The runner's own command inside a sandbox.
pub(crate) const RUNNER_CMD: [&str; 4] =
    [SANDBOX_EXE, "runner", "--config", "/pinch/in/runner.json"];

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
        self.command_limited(self.limits, exe, m, env, cmd)
    }

    /// [`Bwrap::command_with`] under `limits`.
    fn command_limited(
        &self,
        limits: Limits,
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
        let mut c = crate::command::new(&self.bwrap);
        c.arg("--args")
            .arg(args.as_raw_fd().to_string())
            .arg("--")
            .args(cmd);
        c.env_clear();
        let rlimits = limits.rlimits();
        // The sandbox's own cgroup (pids, memory), joined in the child.
        if limits.cgroup {
            crate::cgroup::sweep();
        }
        let id = pinch_proto::runner_config::random_hex(6);
        let prepared = if limits.cgroup {
            crate::cgroup::prepare(&id, &limits).map(Some)
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
                for r in &rlimits {
                    let lim = libc::rlimit {
                        rlim_cur: r.value,
                        rlim_max: r.value,
                    };
                    if libc::setrlimit(r.resource, &lim) != 0 {
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
        let cmd = RUNNER_CMD;
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

    fn start(&self, spec: RunnerSpec<'_>) -> Result<Box<dyn RunnerHandle>, StartError> {
        let mut env = spec.env;
        env.push(child::host_fd_env());
        let cmd = self
            .command_limited(spec.limits, spec.exe, spec.mounts, &env, &RUNNER_CMD)
            .map_err(StartError::Prepare)?;
        let c = child::spawn(cmd, spec.log, Liveness::Pass, Kind::Bwrap.as_str(), None)?;
        Ok(Box::new(c))
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
    let out = crate::command::new(bwrap)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::process::Process;

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
}
