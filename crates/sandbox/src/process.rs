//! The `process` backend: no isolation at all, for development only (a
//! loud warning at every spawn). The runner sees the host's own paths.

use std::path::{Path, PathBuf};
use std::process::Command;

use pinch_proto::runner_config::{ExtraMount, RunnerPaths};

use crate::backend::{Kind, RunnerHandle, RunnerSpec, Sandbox, StartError};
use crate::child::{self, Liveness};
use crate::mounts::Mounts;

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

    fn start(&self, spec: RunnerSpec<'_>) -> Result<Box<dyn RunnerHandle>, StartError> {
        let mut env = spec.env;
        env.push(child::host_fd_env());
        let cmd = Process::command(spec.exe, spec.mounts, &env);
        tracing::warn!("starting a runner WITHOUT a sandbox (--sandbox process): development only");
        let c = child::spawn(cmd, spec.log, Liveness::Pass, Kind::Process.as_str(), None)?;
        Ok(Box::new(c))
    }
}

impl Process {
    /// `pinch runner` with the host's paths and only `env`, dying with the host.
    fn command(exe: &Path, m: &Mounts, env: &[(String, String)]) -> Command {
        use std::os::unix::process::CommandExt;
        let mut c = crate::command::new(exe);
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
        c
    }
}
