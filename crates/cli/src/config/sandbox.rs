//! `[sandbox]`: the backend and the limits every runner's sandbox gets.

use std::path::PathBuf;

use anyhow::Result;
use pinch_host::sandbox::Choice;
use pinch_host::HostConfig;
use serde::Deserialize;

use super::validate::Count;
use super::{Env, Overrides};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SandboxSection {
    pub backend: Option<String>,
    /// Per-process caps inside bwrap (defaults: 4096 MiB private memory,
    /// 1024 MiB files, 4 h CPU, 4096 open files).
    pub memory_mb: Option<u64>,
    pub file_size_mb: Option<u64>,
    pub cpu_s: Option<u64>,
    pub open_files: Option<u64>,
    pub pids: Option<u64>,
    /// Disk quota per session over its writable folders (default 2048 MiB).
    pub disk_mb: Option<u64>,
    /// A cgroup per sandbox for `pids` and total memory (default true).
    pub cgroup: Option<bool>,
    /// The mount allowlist (default: `mount-allowlist.toml` beside the
    /// default `pinch.toml`).
    pub mount_allowlist: Option<PathBuf>,
}

impl SandboxSection {
    /// The floors [`super::validate`] checks.
    pub(super) fn counts(&self) -> Vec<Count<'static>> {
        let stops = "0 would stop every runner";
        vec![
            Count::new("sandbox.memory_mb", self.memory_mb, 1, stops),
            Count::new("sandbox.file_size_mb", self.file_size_mb, 1, stops),
            Count::new("sandbox.cpu_s", self.cpu_s, 1, stops),
            Count::new("sandbox.disk_mb", self.disk_mb, 1, stops),
            Count::new(
                "sandbox.open_files",
                self.open_files,
                64,
                "fewer open files than that and the runner cannot start",
            ),
            Count::new(
                "sandbox.pids",
                self.pids,
                16,
                "fewer processes than that and the runner cannot start",
            ),
        ]
    }

    /// The backend (the `--sandbox` flag beats the file), the limits, the
    /// disk quota and the mount allowlist.
    pub(super) fn apply(&self, c: &mut HostConfig, o: &Overrides, env: &Env) -> Result<()> {
        let backend = o
            .sandbox
            .clone()
            .or_else(|| self.backend.clone())
            .unwrap_or_else(|| "auto".into());
        c.sandbox = backend
            .parse::<Choice>()
            .map_err(|e| anyhow::anyhow!("sandbox: {e}"))?;
        let d = pinch_host::sandbox::Limits::default();
        let positive = |name: &str, v: Option<u64>, default: u64| -> Result<u64> {
            match v {
                Some(0) => anyhow::bail!("[sandbox] {name} = 0 would stop every runner; give a positive number or leave it out for {default}"),
                Some(n) => Ok(n),
                None => Ok(default),
            }
        };
        c.sandbox_limits = pinch_host::sandbox::Limits {
            memory_mb: positive("memory_mb", self.memory_mb, d.memory_mb)?,
            file_size_mb: positive("file_size_mb", self.file_size_mb, d.file_size_mb)?,
            cpu_s: positive("cpu_s", self.cpu_s, d.cpu_s)?,
            open_files: positive("open_files", self.open_files, d.open_files)?.max(64),
            pids: positive("pids", self.pids, d.pids)?.max(16),
            cgroup: self.cgroup.unwrap_or(d.cgroup),
        };
        c.disk_quota_mb = positive("disk_mb", self.disk_mb, c.disk_quota_mb)?;
        c.mount_allowlist = Some(
            self.mount_allowlist
                .clone()
                .unwrap_or_else(|| super::default_mount_allowlist(env)),
        );
        Ok(())
    }
}
