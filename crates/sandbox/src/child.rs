//! A local runner's lifecycle: spawn, the liveness pipe, stop and kill,
//! reaping, and its exit status.
//!
//! - **Spawn**: the backend's command, stdin from `/dev/null`, stdout and
//!   stderr to the runner's log, through tokio so the exit is noticed the
//!   moment it happens (a task waits and reaps; no zombie is left whether or
//!   not anyone asks).
//! - **Liveness pipe** (decision 0006): where the backend passes
//!   descriptors, the runner holds the read end on fd [`HOST_FD`] and exits
//!   on EOF, so it never outlives the host's interest in it, whatever happens
//!   to the sandbox's own parent-death signal. The write end lives in the
//!   [`LocalChild`]; [`RunnerHandle::release`] or dropping it closes it.
//! - **Kill**: SIGTERM or SIGKILL to the process the host started, never to
//!   a pid already reaped (it may be someone else's by now), plus what the
//!   backend adds (Docker's containers outlive their `docker run` client).
//! - **Exit**: [`Exit`] (defined with the trait in `backend`), the code or
//!   signal as the host's child reported it (a wrapper's `128 + n` is undone
//!   by `pinch_policy::exit`).

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::{Command, Stdio};

use tokio::sync::watch;

use crate::backend::{Exit, ExitFuture, RunnerHandle, StartError};

/// The fd number the runner finds the liveness pipe on.
pub const HOST_FD: i32 = 3;

/// The variable that tells the runner about [`HOST_FD`].
pub fn host_fd_env() -> (String, String) {
    ("PINCH_HOST_FD".to_owned(), HOST_FD.to_string())
}

/// Whether the runner gets the liveness pipe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Liveness {
    /// On fd [`HOST_FD`] (bwrap, process).
    Pass,
    /// Not at all: it cannot cross into a container; the runner's stop file
    /// and the backend's own kill take its place.
    None,
}

/// What a kill does beyond signalling the local child.
pub type OnKill = Box<dyn Fn() + Send + Sync>;

/// A runner the host started as its own child process.
pub struct LocalChild {
    pid: u32,
    alive: Option<OwnedFd>,
    exit: watch::Receiver<Option<Exit>>,
    on_kill: Option<OnKill>,
}

impl LocalChild {
    fn signal(&self, sig: i32) {
        // Once reaped the pid may be another process's.
        if self.exit.borrow().is_none() {
            signal(self.pid, sig);
        }
    }
}

impl RunnerHandle for LocalChild {
    fn terminate(&self) {
        self.signal(libc::SIGTERM);
    }

    fn kill(&self) {
        self.signal(libc::SIGKILL);
        if let Some(f) = &self.on_kill {
            f();
        }
    }

    fn wait(&self) -> ExitFuture {
        let mut rx = self.exit.clone();
        Box::pin(async move {
            match rx.wait_for(Option::is_some).await {
                Ok(e) => e.unwrap_or_default(),
                // The waiting task is gone without a status (the runtime is
                // shutting down): nothing more will be known.
                Err(_) => Exit::default(),
            }
        })
    }

    fn release(&mut self) {
        self.alive = None;
    }

    fn pid(&self) -> Option<u32> {
        Some(self.pid)
    }
}

/// Spawns `cmd` as a runner: stdin from `/dev/null`, stdout and stderr to
/// `log`, the liveness pipe as `liveness` says. `kind` names the sandbox in
/// errors. Must run inside a tokio runtime (a task waits for the exit).
pub fn spawn(
    mut cmd: Command,
    log: std::fs::File,
    liveness: Liveness,
    kind: &'static str,
    on_kill: Option<OnKill>,
) -> Result<LocalChild, StartError> {
    let pipe = match liveness {
        Liveness::Pass => Some(liveness_pipe().map_err(StartError::Liveness)?),
        Liveness::None => None,
    };
    cmd.stdin(Stdio::null())
        .stdout(log.try_clone().map_err(StartError::Prepare)?)
        .stderr(log);
    if let Some((r, _)) = &pipe {
        use std::os::unix::process::CommandExt;
        let r = r.as_raw_fd();
        // SAFETY: dup2 is async-signal-safe; it clears CLOEXEC on fd 3 only.
        unsafe {
            cmd.pre_exec(move || {
                if r == HOST_FD {
                    // dup2 onto itself would keep close-on-exec set.
                    if libc::fcntl(r, libc::F_SETFD, 0) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                } else if libc::dup2(r, HOST_FD) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    let mut child = tokio::process::Command::from(cmd)
        .kill_on_drop(false)
        .spawn()
        .map_err(|source| StartError::Spawn { kind, source })?;
    // Only the runner holds the read end now.
    let alive = pipe.map(|(_r, w)| w);
    let pid = child.id().unwrap_or(0);
    let (tx, rx) = watch::channel(None);
    tokio::spawn(async move {
        let exit = match child.wait().await {
            Ok(st) => Exit::from(st),
            Err(e) => {
                tracing::error!(pid, "waiting for the runner failed: {e}");
                Exit::default()
            }
        };
        let _ = tx.send(Some(exit));
    });
    Ok(LocalChild {
        pid,
        alive,
        exit: rx,
        on_kill,
    })
}

fn liveness_pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0i32; 2];
    // SAFETY: pipe2 fills two new descriptors we then own.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: both fds were just created and are owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

fn signal(pid: u32, sig: i32) {
    if pid > 0 {
        // SAFETY: plain kill(2) on a child we have not reaped yet.
        unsafe {
            libc::kill(pid as i32, sig);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn log() -> std::fs::File {
        std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/null")
            .unwrap()
    }

    /// The runner sees the pipe on fd 3 and gets EOF once the handle lets
    /// go; the exit is then reported, with its code.
    #[tokio::test]
    async fn the_liveness_pipe_is_on_fd_3_and_closes_with_the_handle() {
        let mut cmd = crate::command::new("/bin/sh");
        // Blocks reading fd 3 until EOF, then exits 7.
        cmd.args(["-c", "cat <&3 >/dev/null; exit 7"]);
        let mut h = spawn(cmd, log(), Liveness::Pass, "test", None).unwrap();
        assert!(h.pid().is_some_and(|p| p > 0));
        let exited = h.wait();
        h.release();
        let e = tokio::time::timeout(Duration::from_secs(20), exited)
            .await
            .expect("the child exits once the pipe is closed");
        assert_eq!(
            e,
            Exit {
                code: Some(7),
                signal: None
            }
        );
        // A second wait sees the same exit.
        assert_eq!(h.wait().await, e);
    }

    /// Kill is SIGKILL, reported as the signal; the backend's own kill runs
    /// too.
    #[tokio::test]
    async fn kill_signals_the_child_and_runs_the_backends_kill() {
        let ran = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let r = ran.clone();
        let mut cmd = crate::command::new("/bin/sh");
        cmd.args(["-c", "exec sleep 600"]);
        let h = spawn(
            cmd,
            log(),
            Liveness::None,
            "test",
            Some(Box::new(move || {
                r.store(true, std::sync::atomic::Ordering::SeqCst)
            })),
        )
        .unwrap();
        h.kill();
        let e = tokio::time::timeout(Duration::from_secs(20), h.wait())
            .await
            .unwrap();
        assert_eq!(e.signal, Some(libc::SIGKILL));
        assert!(ran.load(std::sync::atomic::Ordering::SeqCst));
    }

    #[tokio::test]
    async fn a_missing_program_names_the_sandbox() {
        let cmd = crate::command::new("/nonexistent/pinch-runner");
        let e = spawn(cmd, log(), Liveness::Pass, "bwrap", None)
            .err()
            .unwrap();
        assert!(
            e.to_string().starts_with("starting the bwrap sandbox"),
            "{e}"
        );
    }
}
