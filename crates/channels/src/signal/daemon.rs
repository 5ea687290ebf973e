//! The signal-cli daemon pinch starts itself (`[signal] signal_cli`):
//! `signal-cli [--config DIR] daemon --socket <data>/channels/signal/
//! signal-cli.sock --receive-mode manual`, in multi-account mode (so that
//! linking works through it, and an account not yet linked does not make
//! it exit), its stderr logged line by line, restarted with the shared
//! backoff whenever it exits, stopped with pinch (and, through
//! `PR_SET_PDEATHSIG`, when pinch is killed).

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncBufReadExt;

use crate::platform::Backoff;

/// How to start signal-cli.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Launch {
    pub exe: PathBuf,
    /// signal-cli's `--config` (its accounts and attachments); `None`:
    /// its own default.
    pub config_dir: Option<PathBuf>,
    pub socket: PathBuf,
}

impl Launch {
    /// Starts it (a stale socket file removed first); its stderr is logged.
    pub fn spawn(&self) -> Result<tokio::process::Child, String> {
        let _ = std::fs::remove_file(&self.socket);
        // The user's own program, run as pinch itself runs (it holds the
        // account's keys, not an agent's work): not one of the programs the
        // host starts for agents through the sandbox crate.
        #[allow(clippy::disallowed_methods)]
        let mut std_cmd = std::process::Command::new(&self.exe);
        crate::helper_env(&mut std_cmd);
        let mut c = tokio::process::Command::from(std_cmd);
        if let Some(d) = &self.config_dir {
            c.arg("--config").arg(d);
        }
        c.arg("daemon")
            .arg("--socket")
            .arg(&self.socket)
            .arg("--receive-mode")
            .arg("manual")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        // SAFETY: prctl is async-signal-safe; nothing else runs between
        // fork and exec.
        unsafe {
            c.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                Ok(())
            });
        }
        let mut child = c.spawn().map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                format!(
                    "[signal] signal_cli = {:?}: no such program; install signal-cli (https://github.com/AsamK/signal-cli, it needs Java 21) and give its path, or connect to a running daemon with socket = \"…\" or tcp = \"host:port\"",
                    self.exe
                )
            } else {
                format!("[signal] starting {:?}: {e}", self.exe)
            }
        })?;
        if let Some(err) = child.stderr.take() {
            tokio::spawn(async move {
                let mut lines = tokio::io::BufReader::new(err).lines();
                while let Ok(Some(l)) = lines.next_line().await {
                    tracing::info!("signal-cli: {}", super::clip(&l, 2000));
                }
            });
        }
        Ok(child)
    }

    /// Waits until the daemon's socket accepts connections (at most
    /// `limit`; signal-cli takes a few seconds to start its JVM).
    pub async fn wait_ready(
        &self,
        child: &mut tokio::process::Child,
        limit: Duration,
    ) -> Result<(), String> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if tokio::net::UnixStream::connect(&self.socket).await.is_ok() {
                return Ok(());
            }
            if let Ok(Some(st)) = child.try_wait() {
                return Err(format!(
                    "signal-cli exited at start ({st}); its log says why"
                ));
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(format!(
                    "signal-cli did not open {} within {limit:?}",
                    self.socket.display()
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Keeps signal-cli running until `stop` fires: started again with the
/// shared backoff whenever it exits (a missing program is said once per
/// attempt, clearly).
pub async fn supervise(launch: Launch, stop: Arc<tokio::sync::Notify>, closed: impl Fn() -> bool) {
    let mut backoff = Backoff::default();
    while !closed() {
        match launch.spawn() {
            Ok(mut child) => {
                backoff.connected();
                tracing::info!(
                    pid = child.id(),
                    "signal: started signal-cli ({})",
                    launch.exe.display()
                );
                tokio::select! {
                    st = child.wait() => {
                        let st = st.map(|s| s.to_string()).unwrap_or_else(|e| e.to_string());
                        tracing::warn!("signal: signal-cli exited ({st})");
                    }
                    _ = stop.notified() => {
                        let _ = child.kill().await;
                        return;
                    }
                }
            }
            Err(e) => tracing::error!("signal: {e}"),
        }
        if closed() {
            return;
        }
        let d = backoff.failed();
        tracing::warn!("signal: starting signal-cli again in {d:?}");
        tokio::select! {
            _ = tokio::time::sleep(d) => {}
            _ = stop.notified() => return,
        }
    }
}
