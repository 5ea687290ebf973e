//! The data directory layout (SPEC §2.3). Every path pinch uses is built here.

use std::path::{Path, PathBuf};

use pinch_proto::layout;

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
