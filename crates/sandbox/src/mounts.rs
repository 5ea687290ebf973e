//! The mount table every backend builds (ARCHITECTURE.md, "Sandbox mount
//! table"): the session's folders and the group's workspace as the runner
//! sees them, and [`open_binds`], which opens each source with no symlink
//! followed beneath its trusted root before anything is mounted.

use std::path::{Path, PathBuf};

/// Where the tools folder (`tools_dir`) appears inside a sandbox.
pub const SANDBOX_TOOLS: &str = "/opt/pinch/tools";

/// Where the runner executable is inside a bwrap sandbox.
pub const SANDBOX_EXE: &str = "/opt/pinch/bin/pinch";

/// Where the models folder appears inside the bwrap sandbox (SPEC §8.1).
pub const SANDBOX_MODELS: &str = "/opt/pinch/models";
/// Where a configured model file outside the models folder appears.
pub const SANDBOX_MODEL_FILE_DIR: &str = "/opt/pinch/model";

/// Where the trust folder appears: the system CA bundle's folder.
pub const SANDBOX_TRUST: &str = "/etc/ssl/certs";

/// Host-side folders a runner needs.
#[derive(Clone, Debug, Default)]
pub struct Mounts {
    pub in_dir: PathBuf,
    pub out_dir: PathBuf,
    pub inbox_dir: PathBuf,
    pub outbox_dir: PathBuf,
    pub agent_dir: PathBuf,
    pub global_dir: PathBuf,
    /// The session's proxy directory (`run/proxy/<session>/`), bound
    /// read-only at `/pinch/run`.
    pub proxy_dir: Option<PathBuf>,
    /// `$PINCH_HOME/models/`, bound read-only at `/opt/pinch/models`.
    pub models_dir: Option<PathBuf>,
    /// A local model file configured outside `models_dir`, bound read-only
    /// by itself at `/opt/pinch/model/<file name>`.
    pub model_file: Option<PathBuf>,
    /// Extra folders the owner allowed (SPEC §7.8), at
    /// `/workspace/extra/<name>`, read-only unless granted read-write.
    pub extra: Vec<pinch_policy::mounts::Granted>,
    /// The group's tools folder (approved packages), read-only at
    /// `/opt/pinch/tools` when it exists (SPEC §7.6). It lives in the data
    /// dir's host-only `tools/<folder>/`, never in the agent's workspace.
    pub tools_dir: Option<PathBuf>,
    /// The host's copy of the group's `AGENT.md` (in the session's
    /// host-only folder), read-only over `/workspace/agent/AGENT.md`.
    pub agent_md: Option<PathBuf>,
    /// The install's trust folder (`<data>/ca/trust/`: the system roots
    /// plus the sandbox CA, decision 0050), read-only over
    /// [`SANDBOX_TRUST`], the system bundle's folder.
    pub trust_dir: Option<PathBuf>,
    /// The data dir: every source beneath it is opened beneath it, with
    /// no symlink at any level (see [`Mounts::binds`]).
    pub data_root: PathBuf,
}

/// How a bind source's path is trusted, and so how it is opened (issue 14).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// Beneath the data dir: opened beneath it, no symlink at any level.
    Data,
    /// An extra folder, stored as its real path: no symlink anywhere from `/`.
    Canonical,
    /// The owner's own setting outside the data dir (the pinch binary, a
    /// model file kept elsewhere): opened as configured.
    Owner,
}

/// One bind of the mount table (the system folders aside).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bind {
    pub src: PathBuf,
    pub dest: String,
    pub rw: bool,
    /// Skipped when the source does not exist (the models and tools
    /// folders); any other failure to open it stops the spawn.
    pub optional: bool,
    pub source: Source,
}

/// A bind whose source is open: what is mounted is this inode, whatever
/// happens to its path after the check.
#[derive(Debug)]
pub struct OpenBind {
    pub fd: std::os::fd::OwnedFd,
    pub bind: Bind,
}

/// Why a bind source was refused.
#[derive(Debug, thiserror::Error)]
#[error("cannot mount {dest} into the sandbox: {source}")]
pub struct BindError {
    pub dest: String,
    #[source]
    pub source: crate::safe_fs::Error,
}

impl Mounts {
    /// The local model's path as a bwrap runner sees it: under
    /// `/opt/pinch/models` when it lives in the models folder, else the
    /// single-file bind (`model_file` must then be set to it).
    pub fn model_path_inside(&self, host: &Path) -> PathBuf {
        if let Some(rel) = self
            .models_dir
            .as_deref()
            .and_then(|d| host.strip_prefix(d).ok())
        {
            return Path::new(SANDBOX_MODELS).join(rel);
        }
        Path::new(SANDBOX_MODEL_FILE_DIR).join(host.file_name().unwrap_or_default())
    }

    fn source_of(&self, p: &Path) -> Source {
        if !self.data_root.as_os_str().is_empty() && p.starts_with(&self.data_root) {
            Source::Data
        } else {
            Source::Owner
        }
    }

    /// The mount table every backend builds, after the system folders
    /// (`/usr`, the libraries, a few files of `/etc`), in mount order.
    /// `exe` is the runner binary for backends that bind it (bwrap).
    ///
    /// No source is a path an agent can write or replace: the session's
    /// folders and the group's workspace are bound as the folders
    /// themselves (their parents are host-only); the tools folder and the
    /// `AGENT.md` copy live in host-only folders; extra folders are real
    /// paths the owner allowed. [`open_binds`] opens each with no symlink
    /// followed beneath its trusted root.
    pub fn binds(&self, exe: Option<&Path>) -> Vec<Bind> {
        let mut v = Vec::new();
        let mut add = |src: &Path, dest: &str, rw: bool, optional: bool, source: Source| {
            v.push(Bind {
                src: src.to_owned(),
                dest: dest.to_owned(),
                rw,
                optional,
                source,
            });
        };
        let src = |p: &Path| self.source_of(p);
        add(&self.in_dir, "/pinch/in", false, false, src(&self.in_dir));
        add(&self.out_dir, "/pinch/out", true, false, src(&self.out_dir));
        add(
            &self.inbox_dir,
            "/workspace/inbox",
            false,
            false,
            src(&self.inbox_dir),
        );
        add(
            &self.outbox_dir,
            "/workspace/outbox",
            true,
            false,
            src(&self.outbox_dir),
        );
        add(
            &self.agent_dir,
            "/workspace/agent",
            true,
            false,
            src(&self.agent_dir),
        );
        add(
            &self.global_dir,
            "/workspace/global",
            false,
            false,
            src(&self.global_dir),
        );
        if let Some(exe) = exe {
            add(exe, SANDBOX_EXE, false, false, Source::Owner);
        }
        if let Some(proxy) = &self.proxy_dir {
            add(proxy, "/pinch/run", false, false, src(proxy));
        }
        if let Some(models) = &self.models_dir {
            add(models, SANDBOX_MODELS, false, true, src(models));
        }
        if let Some(file) = self
            .model_file
            .as_ref()
            .filter(|f| self.models_dir.as_ref().is_none_or(|d| !f.starts_with(d)))
        {
            add(
                file,
                &self.model_path_inside(file).to_string_lossy(),
                false,
                false,
                src(file),
            );
        }
        if let Some(t) = &self.tools_dir {
            add(t, SANDBOX_TOOLS, false, true, src(t));
        }
        if let Some(t) = &self.trust_dir {
            add(t, SANDBOX_TRUST, false, false, src(t));
        }
        for g in &self.extra {
            add(
                &g.host,
                &format!("/workspace/extra/{}", g.name),
                g.read_write,
                false,
                Source::Canonical,
            );
        }
        // The operator's instructions are read-only even inside the rw workspace.
        if let Some(md) = &self.agent_md {
            add(md, "/workspace/agent/AGENT.md", false, false, src(md));
        }
        v
    }
}

/// Opens every source of `binds` the way its [`Source`] says (never
/// following a symlink beneath a trusted root), checks it is a folder or a
/// regular file, and returns the descriptors to mount. Optional sources
/// that are missing are left out.
pub fn open_binds(m: &Mounts, binds: &[Bind]) -> Result<Vec<OpenBind>, BindError> {
    use crate::safe_fs::{Dir, Error};
    let mut data: Option<Dir> = None;
    let mut root: Option<Dir> = None;
    let mut out = Vec::new();
    for b in binds {
        let err = |source: Error| BindError {
            dest: b.dest.clone(),
            source,
        };
        let opened = match b.source {
            Source::Data => {
                if data.is_none() {
                    data = Some(Dir::open_trusted(&m.data_root).map_err(err)?);
                }
                let d = data.as_ref().expect("opened above");
                let rel = b
                    .src
                    .strip_prefix(&m.data_root)
                    .expect("a Data source is beneath the data dir");
                d.bind_source(rel)
            }
            Source::Canonical => {
                if root.is_none() {
                    root = Some(Dir::open_trusted(Path::new("/")).map_err(err)?);
                }
                let rel = b
                    .src
                    .strip_prefix("/")
                    .map_err(|_| err(Error::BadPath(b.src.clone())))?;
                root.as_ref().expect("opened above").bind_source(rel)
            }
            Source::Owner => rustix::fs::open(
                &b.src,
                rustix::fs::OFlags::PATH | rustix::fs::OFlags::CLOEXEC,
                rustix::fs::Mode::empty(),
            )
            .map_err(|e| Error::from_errno(b.src.clone(), e)),
        };
        match opened {
            Ok(fd) => {
                // Well above the fds the spawn itself places (the liveness
                // pipe at 3).
                let fd = rustix::io::fcntl_dupfd_cloexec(&fd, 10).map_err(|e| {
                    err(Error::Io {
                        path: b.src.clone(),
                        source: e.into(),
                    })
                })?;
                out.push(OpenBind {
                    fd,
                    bind: b.clone(),
                });
            }
            Err(Error::Missing(_)) if b.optional => {}
            Err(e) => return Err(err(e)),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_model_in_the_models_folder_is_seen_beneath_it_and_any_other_by_itself() {
        let m = Mounts {
            models_dir: Some("/d/models".into()),
            ..Default::default()
        };
        assert_eq!(
            m.model_path_inside(Path::new("/d/models/x/m.gguf")),
            Path::new("/opt/pinch/models/x/m.gguf")
        );
        assert_eq!(
            m.model_path_inside(Path::new("/srv/m.gguf")),
            Path::new("/opt/pinch/model/m.gguf")
        );
    }

    #[test]
    fn sources_beneath_the_data_dir_are_opened_beneath_it() {
        let m = Mounts {
            in_dir: "/d/s/in".into(),
            out_dir: "/d/s/out".into(),
            data_root: "/d".into(),
            ..Default::default()
        };
        let b = m.binds(Some(Path::new("/usr/bin/pinch")));
        let find = |dest: &str| b.iter().find(|x| x.dest == dest).unwrap().clone();
        assert_eq!(find("/pinch/in").source, Source::Data);
        assert!(!find("/pinch/in").rw && find("/pinch/out").rw);
        assert_eq!(find(SANDBOX_EXE).source, Source::Owner);
    }
}
