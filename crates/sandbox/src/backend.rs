//! The backend trait and what the host hands it: which sandbox, the
//! runner's spec, and the handle it gets back.
//!
//! The trait is shaped for a backend that is not a local process: a
//! runner is started from a [`RunnerSpec`] (the session, its mounts, its
//! environment, its limits, where its output goes) and controlled only
//! through its [`RunnerHandle`] (stop, kill, wait, let go). A local pid is
//! an optional accessor for logs and admin replies, never the way in.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;

use pinch_proto::runner_config::{ExtraMount, RunnerPaths};

use crate::bwrap::{find_bwrap, probe_bwrap, Bwrap, INSTALL_BWRAP};
use crate::child::Exit;
use crate::limits::Limits;
use crate::mounts::Mounts;
use crate::process::Process;

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

/// Everything a backend needs to start one session's runner.
pub struct RunnerSpec<'a> {
    pub session_id: &'a str,
    /// The `pinch` binary (bound read-only into bwrap; baked into Docker's
    /// image at prepare; run as is by `process`).
    pub exe: &'a Path,
    pub mounts: &'a Mounts,
    /// The runner's whole environment (nothing of the host's is inherited).
    /// The backend adds `PINCH_HOST_FD` when it passes the liveness pipe.
    pub env: Vec<(String, String)>,
    pub limits: Limits,
    /// Where the runner's stdout and stderr go (its log).
    pub log: std::fs::File,
}

/// Why a runner could not be started.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("creating the liveness pipe: {0}")]
    Liveness(#[source] std::io::Error),
    #[error("preparing the sandbox: {0}")]
    Prepare(#[source] std::io::Error),
    #[error("starting the {kind} sandbox: {source}")]
    Spawn {
        kind: &'static str,
        #[source]
        source: std::io::Error,
    },
}

/// A runner's exit, once it has exited and been reaped.
pub type ExitFuture = Pin<Box<dyn Future<Output = Exit> + Send + 'static>>;

/// A started runner, however and wherever it runs.
///
/// Dropping the handle lets go of the runner's liveness signal (the runner
/// then exits on its own) but neither kills nor waits for it.
pub trait RunnerHandle: Send + Sync {
    /// Asks the runner to stop now (SIGTERM for a local child; the runner's
    /// `in/stop` file is the gentler way and the host's business).
    fn terminate(&self);
    /// Stops the runner and everything it started, without asking.
    fn kill(&self);
    /// Resolves with the exit once the runner has exited and its resources
    /// are reclaimed; may be called any number of times.
    fn wait(&self) -> ExitFuture;
    /// Closes the host's end of the liveness signal (decision 0006).
    fn release(&mut self);
    /// The local process id, where there is one (logs, admin replies).
    fn pid(&self) -> Option<u32> {
        None
    }
}

pub trait Sandbox: Send + Sync {
    fn kind(&self) -> Kind;
    /// The folders as the runner sees them (goes into `runner.json`).
    fn runner_paths(&self, m: &Mounts) -> RunnerPaths;
    /// The local model's path as the runner sees it.
    fn model_path(&self, m: &Mounts, host: &Path) -> PathBuf;
    /// Starts `pinch runner` for this session in this sandbox.
    fn start(&self, spec: RunnerSpec<'_>) -> Result<Box<dyn RunnerHandle>, StartError>;
    /// Once at host start: build what the backend needs (Docker's image)
    /// and clean up after a previous host of this data dir.
    fn prepare(&mut self, _exe: &Path, _data_dir: &Path, _run_dir: &Path) -> Result<(), String> {
        Ok(())
    }
    /// Kills what a dead runner's sandbox left behind under `dir` (a
    /// session's folder, or the sessions folder at start); returns how many.
    fn reap_leftovers(&self, dir: &Path) -> usize {
        crate::child::reap(&dir.to_string_lossy())
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

/// Resolves the user's choice into a working backend, or says what to do.
/// Each runner's limits come with its [`RunnerSpec`]; the backend's own
/// (the defaults) apply to the commands tests build with `command_with`.
pub fn select(choice: Choice) -> Result<Box<dyn Sandbox>, String> {
    match choice {
        Choice::Process => Ok(Box::new(Process)),
        Choice::Docker => {
            let Some(docker) = crate::docker::find_docker() else {
                return Err("docker is not installed: install it (Debian/Ubuntu: `sudo apt-get install -y docker.io`), or use --sandbox bwrap".into());
            };
            crate::docker::probe(&docker)?;
            Ok(Box::new(crate::docker::Docker::new(
                docker,
                Limits::default(),
            )))
        }
        Choice::Bwrap | Choice::Auto => {
            let Some(bwrap) = find_bwrap() else {
                return Err(format!(
                    "bubblewrap (bwrap) is not installed: {INSTALL_BWRAP}"
                ));
            };
            probe_bwrap(&bwrap).map_err(|e| format!("bubblewrap does not work here ({e}): enable unprivileged user namespaces, or {INSTALL_BWRAP}"))?;
            Ok(Box::new(Bwrap::new(bwrap)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
