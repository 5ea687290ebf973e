//! The Docker sandbox backend (SPEC §8; issue 8): for parity with
//! NanoClaw and for hosts where bubblewrap is not available.
//!
//! - **The image** is built locally from the running `pinch` binary, no
//!   registry: a tiny root filesystem (mount points, the host's
//!   merged-`/usr` symlinks, `/opt/pinch/bin/pinch`) imported with
//!   `docker import`, tagged `pinch-runner:<version>-<binary hash>` and
//!   labelled with the install id (a hash of the data dir). It holds no
//!   tools of its own: like bwrap, the host's `/usr` is bound read-only.
//! - **The container**: `--network none` (the model and egress go through
//!   the per-session proxy socket in a bound directory), read-only root,
//!   `--cap-drop ALL`, `no-new-privileges`, pinch's own seccomp profile (the
//!   same deny list as bwrap's filter), memory, pids and rlimits from
//!   [`Limits`], the invoking user's uid/gid, and the same mount table as
//!   bwrap (directory binds only for the databases).
//! - **Lifetime**: the host's child is the `docker run` client, which
//!   forwards SIGTERM to the runner; SIGKILL cannot be forwarded, so kills
//!   also `docker kill` the session's containers (by label), and a host
//!   start removes containers a previous host of this data dir left. The
//!   liveness pipe (decision 0006) cannot cross into a container; the
//!   runner's stop file and these kills take its place.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use pinch_proto::runner_config::RunnerPaths;

use crate::backend::{Kind, RunnerHandle, RunnerSpec, Sandbox, StartError};
use crate::bwrap::RUNNER_CMD;
use crate::child::{self, Liveness};
use crate::limits::Limits;
use crate::mounts::{Bind, Mounts};

#[derive(Clone)]
pub struct Docker {
    pub docker: PathBuf,
    pub limits: Limits,
    /// Label value shared by this install's image and containers.
    pub install: String,
    /// The image tag, once [`Docker::prepare`] ran.
    pub image: String,
    /// Our seccomp profile (JSON), written at prepare.
    pub seccomp_profile: Option<PathBuf>,
}

/// Finds `docker` on PATH.
pub fn find_docker() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("docker"))
        .find(|p| p.is_file())
}

/// Whether the daemon answers; the reason when it does not.
pub fn probe(docker: &Path) -> Result<(), String> {
    let out = crate::command::new(docker)
        .args(["version", "--format", "{{.Server.Version}}"])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", docker.display()))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "the Docker daemon does not answer ({}): start it (`sudo systemctl start docker`, or `sudo dockerd &`) and make sure your user may use it",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// A short stable id for an install: FNV-1a of the data dir's path.
pub fn install_id(data_dir: &Path) -> String {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in data_dir.to_string_lossy().bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    format!("{h:016x}")
}

fn hash_file(p: &Path) -> std::io::Result<String> {
    use std::io::Read;
    let mut f = std::fs::File::open(p)?;
    let mut h: u64 = 0xcbf29ce484222325;
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        for b in &buf[..n] {
            h ^= *b as u64;
            h = h.wrapping_mul(0x100000001b3);
        }
    }
    Ok(format!("{:08x}", h as u32 ^ (h >> 32) as u32))
}

/// Docker's seccomp profile format for pinch's deny list: allow by
/// default; the listed calls, and `clone` with any namespace flag, fail
/// with EPERM; `clone3` with ENOSYS (libc falls back to `clone`).
pub fn seccomp_profile() -> String {
    let names: Vec<&str> = crate::seccomp::denied().iter().map(|(n, _)| *n).collect();
    let mut syscalls =
        vec![serde_json::json!({"names": names, "action": "SCMP_ACT_ERRNO", "errnoRet": 1})];
    for flag in crate::seccomp::CLONE_NS_FLAGS {
        syscalls.push(serde_json::json!({"names": ["clone"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1, "args": [{"index": 0, "value": flag, "valueTwo": flag, "op": "SCMP_CMP_MASKED_EQ"}]}));
    }
    syscalls
        .push(serde_json::json!({"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38}));
    serde_json::json!({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": syscalls}).to_string()
}

impl Docker {
    pub fn new(docker: PathBuf, limits: Limits) -> Docker {
        Docker {
            docker,
            limits,
            install: String::new(),
            image: String::new(),
            seccomp_profile: None,
        }
    }

    fn docker(&self) -> Command {
        let mut c = crate::command::new(&self.docker);
        c.stdin(Stdio::null());
        c
    }

    /// Kills the session's containers (a SIGKILL of the `docker run`
    /// client does not reach them).
    pub fn kill_session(&self, session_id: &str) {
        let ids = self.container_ids(&format!("label=pinch.session={session_id}"));
        let ids: Vec<String> = ids.into_iter().collect();
        if ids.is_empty() {
            return;
        }
        let docker = self.docker.clone();
        let install = self.install.clone();
        std::thread::spawn(move || {
            let _ = crate::command::new(docker)
                .args(["kill"])
                .args(&ids)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            tracing::debug!(install = %install, "killed the session's containers");
        });
    }

    /// Builds the image from `exe` unless this version of it exists, and
    /// writes the seccomp profile under `run_dir`.
    pub fn prepare_image(
        &mut self,
        exe: &Path,
        data_dir: &Path,
        run_dir: &Path,
    ) -> Result<(), String> {
        self.install = install_id(data_dir);
        let hash = hash_file(exe).map_err(|e| format!("reading {}: {e}", exe.display()))?;
        self.image = format!("pinch-runner:{}-{hash}", env!("CARGO_PKG_VERSION"));
        let profile = run_dir.join("docker-seccomp.json");
        std::fs::write(&profile, seccomp_profile())
            .map_err(|e| format!("writing {}: {e}", profile.display()))?;
        self.seccomp_profile = Some(profile);
        let exists = self
            .docker()
            .args(["image", "inspect", "--format", "{{.Id}}", &self.image])
            .output()
            .is_ok_and(|o| o.status.success());
        if exists {
            return Ok(());
        }
        let r = &run_dir.join("docker-image-root");
        let _ = std::fs::remove_dir_all(r);
        std::fs::create_dir_all(r).map_err(|e| format!("a folder for the image: {e}"))?;
        struct Cleanup<'a>(&'a Path);
        impl Drop for Cleanup<'_> {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(self.0);
            }
        }
        let _cleanup = Cleanup(r);
        for d in [
            "opt/pinch/bin",
            "opt/pinch/models",
            "opt/pinch/model",
            "opt/pinch/tools",
            "pinch/in",
            "pinch/out",
            "pinch/run",
            "workspace/agent",
            "workspace/inbox",
            "workspace/outbox",
            "workspace/global",
            "workspace/extra",
            "usr",
            "tmp",
            "proc",
            "dev",
            "sys",
            "etc",
        ] {
            std::fs::create_dir_all(r.join(d)).map_err(|e| e.to_string())?;
        }
        for d in ["bin", "sbin", "lib", "lib32", "lib64", "libx32"] {
            let host = Path::new("/").join(d);
            match std::fs::symlink_metadata(&host) {
                Ok(md) if md.file_type().is_symlink() => {
                    if let Ok(target) = std::fs::read_link(&host) {
                        std::os::unix::fs::symlink(target, r.join(d)).map_err(|e| e.to_string())?;
                    }
                }
                Ok(md) if md.is_dir() => {
                    std::fs::create_dir_all(r.join(d)).map_err(|e| e.to_string())?
                }
                _ => {}
            }
        }
        for f in [
            "etc/ld.so.cache",
            "etc/localtime",
            "etc/passwd",
            "etc/group",
            "etc/nsswitch.conf",
        ] {
            std::fs::write(r.join(f), b"").map_err(|e| e.to_string())?;
        }
        std::fs::copy(exe, r.join("opt/pinch/bin/pinch"))
            .map_err(|e| format!("copying {}: {e}", exe.display()))?;
        let tar = crate::command::new("tar")
            .arg("-C")
            .arg(r)
            .args(["-c", "."])
            .stderr(Stdio::inherit())
            .output()
            .map_err(|e| format!("running tar: {e}"))?;
        if !tar.status.success() {
            return Err("tar failed while building the runner image".into());
        }
        // stderr is drained while the image goes in (it can be large: a
        // chatty daemon would otherwise fill the pipe and both sides wait).
        let out = crate::command::output_with_input(
            self.docker().args([
                "import",
                "--change",
                &format!("LABEL pinch.install={}", self.install),
                "-",
                &self.image,
            ]),
            &tar.stdout,
        )
        .map_err(|e| format!("running docker import: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "docker import failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        tracing::info!(image = %self.image, "built the runner image");
        Ok(())
    }

    /// Removes this install's containers (what a previous host left).
    pub fn reap(&self) -> usize {
        let ids = self.container_ids(&format!("label=pinch.install={}", self.install));
        if !ids.is_empty() {
            let _ = self
                .docker()
                .args(["rm", "-f"])
                .args(&ids)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        ids.len()
    }

    fn container_ids(&self, filter: &str) -> Vec<String> {
        self.docker()
            .args(["ps", "-aq", "--filter", filter])
            .output()
            .map(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .split_whitespace()
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The `docker run` arguments (after `docker`).
    pub fn argv_with(
        &self,
        exe: &Path,
        m: &Mounts,
        env: &[(String, String)],
        cmd: &[&str],
        name: &str,
        session: &str,
    ) -> Vec<String> {
        let _ = exe; // the image carries the binary it was built from
        self.run_args(&m.binds(None), env, cmd, name, session)
    }

    /// `docker run` arguments for a mount table (the system folders first).
    fn run_args(
        &self,
        binds: &[Bind],
        env: &[(String, String)],
        cmd: &[&str],
        name: &str,
        session: &str,
    ) -> Vec<String> {
        let mut a: Vec<String> = vec!["run".into(), "--rm".into(), "--name".into(), name.into()];
        let l = &self.limits;
        let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
        let s = |x: &str| x.to_owned();
        a.extend([
            s("--label"),
            format!("pinch.install={}", self.install),
            s("--label"),
            format!("pinch.session={session}"),
            s("--network"),
            s("none"),
            s("--read-only"),
            s("--cap-drop"),
            s("ALL"),
            s("--security-opt"),
            s("no-new-privileges"),
        ]);
        a.extend(l.docker_args());
        a.extend([
            s("--user"),
            format!("{uid}:{gid}"),
            s("--hostname"),
            s("pinch"),
            s("--tmpfs"),
            s("/tmp:rw,nosuid,nodev,size=512m"),
            s("--workdir"),
            s("/workspace/agent"),
        ]);
        if let Some(p) = &self.seccomp_profile {
            a.extend([s("--security-opt"), format!("seccomp={}", p.display())]);
        }
        let mut bind = |src: &Path, dst: &str, ro: bool| {
            a.push("--mount".into());
            a.push(format!(
                "type=bind,source={},target={dst}{}",
                src.display(),
                if ro { ",readonly" } else { "" }
            ));
        };
        bind(Path::new("/usr"), "/usr", true);
        for d in ["bin", "sbin", "lib", "lib32", "lib64", "libx32"] {
            let host = Path::new("/").join(d);
            if std::fs::symlink_metadata(&host).is_ok_and(|md| md.is_dir()) {
                bind(&host, &format!("/{d}"), true);
            }
        }
        for f in [
            "/etc/ld.so.cache",
            "/etc/localtime",
            "/etc/passwd",
            "/etc/group",
            "/etc/nsswitch.conf",
        ] {
            if Path::new(f).exists() {
                bind(Path::new(f), f, true);
            }
        }
        for b in binds {
            bind(&b.src, &b.dest, !b.rw);
        }
        for (k, v) in env {
            a.extend([s("--env"), format!("{k}={v}")]);
        }
        a.push(self.image.clone());
        a.extend(cmd.iter().map(|x| x.to_string()));
        a
    }

    /// The container around `cmd` (the tests run a shell in exactly the
    /// runner's container).
    ///
    /// Every source is opened first ([`crate::mounts::open_binds`]: no
    /// symlink beneath its trusted root, a folder or a regular file) and
    /// refused otherwise. Docker then binds it by path — its runtime cannot
    /// mount a descriptor from another mount namespace — which is sound
    /// because no source lies where an agent can write or replace a
    /// component of its path (ARCHITECTURE.md, "Mounts").
    pub fn command_with(
        &self,
        exe: &Path,
        m: &Mounts,
        env: &[(String, String)],
        cmd: &[&str],
    ) -> std::io::Result<Command> {
        let _ = exe;
        let session = env
            .iter()
            .find(|(k, _)| k == "PINCH_SESSION_ID")
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| "none".into());
        let name = format!(
            "pinch-{session}-{}",
            pinch_proto::runner_config::random_hex(4)
        );
        let opened = crate::mounts::open_binds(m, &m.binds(None))
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        let binds: Vec<Bind> = opened.into_iter().map(|o| o.bind).collect();
        // `--mount` is comma-separated: a source with `,` or `"` could add
        // options of its own.
        if let Some(b) = binds
            .iter()
            .find(|b| b.src.to_string_lossy().contains([',', '"', '\n']))
        {
            return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{} contains `,`, `\"` or a newline, which a Docker mount cannot carry; rename it or use --sandbox bwrap", b.src.display())));
        }
        let mut c = crate::command::new(&self.docker);
        c.args(self.run_args(&binds, env, cmd, &name, &session));
        // The docker client needs its own environment (DOCKER_HOST, HOME for
        // its config); the container's comes only from --env.
        Ok(c)
    }
}

impl Sandbox for Docker {
    fn kind(&self) -> Kind {
        Kind::Docker
    }

    fn runner_paths(&self, m: &Mounts) -> RunnerPaths {
        crate::backend::sandboxed_paths(m)
    }

    fn model_path(&self, m: &Mounts, host: &Path) -> PathBuf {
        m.model_path_inside(host)
    }

    /// The liveness pipe cannot cross into a container: the runner gets no
    /// descriptor, and a kill also kills the session's containers.
    fn start(&self, spec: RunnerSpec<'_>) -> Result<Box<dyn RunnerHandle>, StartError> {
        let this = Docker {
            limits: spec.limits,
            ..self.clone()
        };
        let cmd = this
            .command_with(spec.exe, spec.mounts, &spec.env, &RUNNER_CMD)
            .map_err(StartError::Prepare)?;
        let session = spec.session_id.to_owned();
        let c = child::spawn(
            cmd,
            spec.log,
            Liveness::None,
            Kind::Docker.as_str(),
            Some(Box::new(move || this.kill_session(&session))),
        )?;
        Ok(Box::new(c))
    }

    fn prepare(&mut self, exe: &Path, data_dir: &Path, run_dir: &Path) -> Result<(), String> {
        self.prepare_image(exe, data_dir, run_dir)?;
        let n = self.reap();
        if n > 0 {
            tracing::warn!(
                count = n,
                "removed runner containers left by a previous host of this data dir"
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_seccomp_profile_denies_the_same_calls() {
        let v: serde_json::Value = serde_json::from_str(&seccomp_profile()).unwrap();
        assert_eq!(v["defaultAction"], "SCMP_ACT_ALLOW");
        let names = v["syscalls"][0]["names"].as_array().unwrap();
        assert_eq!(names.len(), crate::seccomp::denied().len());
        assert!(names.iter().any(|n| n == "ptrace") && names.iter().any(|n| n == "unshare"));
        assert_eq!(
            v["syscalls"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|s| s["names"][0] == "clone")
                .count(),
            7
        );
    }

    #[test]
    fn the_run_line() {
        let mut d = Docker::new("/usr/bin/docker".into(), Limits::default());
        d.install = "abc".into();
        d.image = "pinch-runner:t".into();
        let m = Mounts {
            in_dir: "/d/s/in".into(),
            out_dir: "/d/s/out".into(),
            agent_dir: "/d/g/main".into(),
            ..Default::default()
        };
        let a = d
            .argv_with(
                Path::new("/p"),
                &m,
                &[("TZ".into(), "UTC".into())],
                &["/opt/pinch/bin/pinch", "runner"],
                "pinch-s1-x",
                "s1",
            )
            .join(" ");
        for want in [
            "run --rm --name pinch-s1-x",
            "--label pinch.install=abc --label pinch.session=s1",
            "--network none --read-only --cap-drop ALL --security-opt no-new-privileges",
            "--memory 4096m",
            "--pids-limit 512",
            "--mount type=bind,source=/d/s/in,target=/pinch/in,readonly",
            "--mount type=bind,source=/d/s/out,target=/pinch/out ",
            "--env TZ=UTC pinch-runner:t /opt/pinch/bin/pinch runner",
        ] {
            assert!(a.contains(want), "{want:?} missing in {a}");
        }
        assert_eq!(install_id(Path::new("/a")), install_id(Path::new("/a")));
        assert_ne!(install_id(Path::new("/a")), install_id(Path::new("/b")));
    }
}
