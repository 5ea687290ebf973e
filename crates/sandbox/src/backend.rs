//! The backend trait and what the host hands it: which sandbox, the
//! runner's spec, and the handle it gets back (`select` picks the backend).
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

use crate::limits::Limits;
use crate::mounts::Mounts;

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

/// How a runner exited, as the host's own child reported it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Exit {
    pub code: Option<i32>,
    pub signal: Option<i32>,
}

impl From<std::process::ExitStatus> for Exit {
    fn from(st: std::process::ExitStatus) -> Self {
        use std::os::unix::process::ExitStatusExt;
        Exit {
            code: st.code(),
            signal: st.signal(),
        }
    }
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
        crate::reap::reap(&dir.to_string_lossy())
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
