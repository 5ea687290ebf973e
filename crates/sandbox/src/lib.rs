//! Sandboxes: how a runner process is isolated and run (SPEC §8).
//!
//! The host asks a backend for "a runner for this session, with these
//! mounts and limits" ([`Sandbox::start`] with a [`RunnerSpec`]) and gets
//! back a [`RunnerHandle`]: stop it, kill it, wait for its exit, let go of
//! it. Nothing outside this crate builds a sandbox's command line, and the
//! handle does not assume a local process (a backend that runs the runner
//! elsewhere, say a Kubernetes pod per session, implements the same two
//! traits; a local pid is only an optional accessor).
//!
//! - [`bwrap`]: bubblewrap. New user, pid, net, ipc, uts (and cgroup where
//!   possible) namespaces; tmpfs root; read-only `/usr`; `--cap-drop ALL`;
//!   `--die-with-parent`; `--clearenv`; no network; the [`seccomp`] filter,
//!   rlimits and a [`cgroup`] per sandbox. `in/` is a read-only
//!   **directory** bind and `out/` read-write: never single-file binds, which
//!   hide SQLite's `-journal` and tear databases.
//! - [`docker`]: the same mount table and limits in a container.
//! - [`process`]: no isolation at all, for development; loud warning per spawn.
//!
//! Beside them: the mount table every backend shares ([`mounts`]), opened
//! through [`safe_fs`] (no symlink followed beneath a trusted root); the
//! tools folder and its installer sandbox ([`tools_dir`]); a local child's
//! lifecycle — spawn, liveness pipe, kill, reap, exit status ([`child`]);
//! and [`command::new`], the one door to `std::process::Command::new`.

pub mod backend;
pub mod bwrap;
pub mod cgroup;
pub mod child;
pub mod command;
pub mod docker;
pub mod limits;
pub mod mounts;
pub mod process;
pub mod reap;
pub mod safe_fs;
pub mod seccomp;
pub mod select;
pub mod tools_dir;

pub use backend::{
    sandboxed_paths, Choice, Exit, Kind, RunnerHandle, RunnerSpec, Sandbox, StartError,
};
pub use bwrap::{find_bwrap, probe_bwrap, Bwrap, INSTALL_BWRAP};
pub use limits::Limits;
pub use mounts::{
    open_binds, Bind, BindError, Mounts, OpenBind, Source, SANDBOX_EXE, SANDBOX_MODELS,
    SANDBOX_MODEL_FILE_DIR,
};
pub use process::Process;
pub use select::select;
