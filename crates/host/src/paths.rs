//! The data directory layout (SPEC §2.3). Every path pinch uses is built here.

use std::path::{Path, PathBuf};

use pinch_proto::layout;

/// Session ids are `s` and this many hex digits (`main_loop`).
pub const SESSION_ID_HEX: usize = 12;
/// The longest path a Unix socket address holds (108 with the NUL).
pub const SUN_PATH_MAX: usize = 107;

#[derive(Clone, Debug)]
pub struct DataDir {
    root: PathBuf,
}

impl DataDir {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        DataDir { root: root.into() }
    }
    pub fn root(&self) -> &Path {
        &self.root
    }
    pub fn central_db(&self) -> PathBuf {
        self.root.join("pinch.db")
    }
    pub fn run_dir(&self) -> PathBuf {
        self.root.join("run")
    }
    pub fn lock_file(&self) -> PathBuf {
        self.run_dir().join("host.lock")
    }
    pub fn admin_socket(&self) -> PathBuf {
        self.run_dir().join("admin.sock")
    }
    pub fn cli_socket(&self) -> PathBuf {
        self.run_dir().join("cli.sock")
    }
    /// Rolling online backups of the central DB (`pinch.db.<UTC time>`).
    pub fn backups_dir(&self) -> PathBuf {
        self.root.join("backups")
    }
    pub fn logs_dir(&self) -> PathBuf {
        self.root.join("logs")
    }
    pub fn runner_logs(&self, session_id: &str) -> PathBuf {
        self.logs_dir().join("runners").join(session_id)
    }
    pub fn groups_dir(&self) -> PathBuf {
        self.root.join("groups")
    }
    pub fn group_dir(&self, folder: &str) -> PathBuf {
        self.groups_dir().join(folder)
    }
    /// Local model files (`pinch model fetch`), read-only in sandboxes.
    pub fn models_dir(&self) -> PathBuf {
        self.root.join("models")
    }
    /// Packages the owner approved for a group (SPEC §7.6), host-only:
    /// never inside the group's workspace, where the agent could replace
    /// it (issue 14).
    pub fn tools_dir(&self, folder: &str) -> PathBuf {
        self.root.join("tools").join(folder)
    }
    /// A credential proxy's socket (`run/proxy/<session>/llm.sock`).
    pub fn proxy_socket(&self, session_id: &str) -> PathBuf {
        self.run_dir()
            .join("proxy")
            .join(session_id)
            .join("llm.sock")
    }
    /// Every Unix socket the host binds, the per-session one with the
    /// longest session id, as bound (the data dir as given).
    pub fn socket_paths(&self) -> Vec<PathBuf> {
        let longest_id = "s".to_owned() + &"f".repeat(SESSION_ID_HEX);
        vec![
            self.admin_socket(),
            self.cli_socket(),
            self.proxy_socket(&longest_id),
        ]
    }
    /// Refuses a data dir whose socket paths do not fit a Unix socket
    /// address (`sun_path`, 107 bytes and a NUL): otherwise the host would
    /// start, accept messages, and fail every runner spawn (issue 15).
    pub fn check_socket_paths(&self) -> Result<(), String> {
        for p in self.socket_paths() {
            let n = p.as_os_str().len();
            if n > SUN_PATH_MAX {
                return Err(format!(
                    "the data dir {} is too deep for pinch's Unix sockets: {} would be {n} bytes, over the {SUN_PATH_MAX}-byte limit of a socket path (sun_path); use a data dir at most {} bytes long (--data-dir or PINCH_HOME, e.g. ~/.local/share/pinch)",
                    self.root.display(),
                    p.display(),
                    self.root.as_os_str().len() - (n - SUN_PATH_MAX),
                ));
            }
        }
        Ok(())
    }
    pub fn sessions_dir(&self) -> PathBuf {
        self.root.join("sessions")
    }
    pub fn session(&self, ag_id: &str, session_id: &str) -> SessionDir {
        SessionDir(self.sessions_dir().join(ag_id).join(session_id))
    }
}

/// One session's folder.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SessionDir(pub PathBuf);

impl SessionDir {
    pub fn root(&self) -> &Path {
        &self.0
    }
    pub fn in_dir(&self) -> PathBuf {
        self.0.join(layout::IN_DIR)
    }
    pub fn out_dir(&self) -> PathBuf {
        self.0.join(layout::OUT_DIR)
    }
    pub fn inbox(&self) -> PathBuf {
        self.0.join(layout::INBOX_DIR)
    }
    pub fn outbox(&self) -> PathBuf {
        self.0.join(layout::OUTBOX_DIR)
    }
    pub fn inbound_db(&self) -> PathBuf {
        self.in_dir().join(layout::INBOUND_DB)
    }
    pub fn outbound_db(&self) -> PathBuf {
        self.out_dir().join(layout::OUTBOUND_DB)
    }
    pub fn heartbeat(&self) -> PathBuf {
        self.out_dir().join(layout::HEARTBEAT)
    }
    pub fn runner_json(&self) -> PathBuf {
        self.in_dir().join(layout::RUNNER_JSON)
    }
    /// The host's copy of the group's `AGENT.md` for this session's
    /// sandbox (the session folder itself is never bound into one).
    pub fn agent_md(&self) -> PathBuf {
        self.0.join("AGENT.md")
    }
    /// Written by the host to ask a runner to stop gracefully.
    pub fn stop_file(&self) -> PathBuf {
        self.in_dir().join(pinch_proto::layout::STOP)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_paths_over_sun_path_are_refused_naming_the_longest() {
        // Exactly fits: 107 bytes for the proxy socket.
        let fixed = "/run/proxy/s000000000000/llm.sock".len();
        let ok = DataDir::new("/".to_owned() + &"d".repeat(SUN_PATH_MAX - fixed - 1));
        assert_eq!(
            ok.socket_paths().iter().map(|p| p.as_os_str().len()).max(),
            Some(SUN_PATH_MAX)
        );
        ok.check_socket_paths().unwrap();
        let long = DataDir::new("/".to_owned() + &"d".repeat(SUN_PATH_MAX - fixed));
        let e = long.check_socket_paths().unwrap_err();
        assert!(e.contains("llm.sock") && e.contains("108 bytes"), "{e}");
        assert!(
            e.contains(&format!("at most {} bytes", SUN_PATH_MAX - fixed)),
            "{e}"
        );
    }
}
