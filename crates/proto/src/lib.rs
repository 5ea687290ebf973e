//! The session contract between the pinch host and a runner.
//!
//! Host and runner share nothing but two SQLite files per session:
//! `in/inbound.db` (written only by the host, mounted read-only in the
//! sandbox) and `out/outbound.db` (written only by the runner). This crate is
//! the one place that knows their shape:
//!
//! - [`schema`]: the DDL of both files as column lists, so the same list both
//!   creates a table and lazily adds columns a newer version introduced.
//! - [`open`]: the only functions that open a session DB, with the pragmas the
//!   invariants demand (rollback journal, `synchronous=FULL`, `mmap_size=0`,
//!   a busy timeout, read-only unless writing).
//! - [`rows`]: typed rows and the queries both sides run.
//! - [`tasks`], [`inbound`], [`outbound`], [`progress`], [`conversation`],
//!   [`ledger`]: the rest of the statements on session tables (task
//!   actions; the other statements on `inbound.db`; the reads of
//!   `outbound.db`; the runner's `container_state` and `conversation`
//!   writes; the host's delivery ledger file). Every SQL statement on a session table lives in
//!   this crate as a named function (decision 0034; the architecture test
//!   `sql_lives_behind_its_door` enforces it).
//! - [`content`]: the JSON content kinds; unknown kinds are preserved.
//! - [`seq`]: the even/odd seq allocators.
//! - [`time`]: one UTC text format and one comparison rule.
//! - [`error`]: the error type, and the corruption classification the
//!   runner's streak rule depends on.
//!
//! Invariant: no async runtime here; every function is a plain blocking call
//! that a runner thread or a host task may make.

pub mod content;
pub mod conversation;
pub mod error;
pub mod inbound;
pub mod ledger;
pub mod memory;
pub mod open;
pub mod outbound;
pub mod progress;
pub mod rows;
pub mod runner_config;
pub mod schema;
pub mod seq;
pub mod tasks;
pub mod time;

pub use error::{is_corruption, is_unusable_view, ProtoError};
/// Re-exported so host and runner use the one bundled SQLite this crate pins.
pub use rusqlite;

/// File names inside a session folder. Paths are relative to the session dir.
pub mod layout {
    pub const IN_DIR: &str = "in";
    pub const OUT_DIR: &str = "out";
    pub const INBOX_DIR: &str = "inbox";
    pub const OUTBOX_DIR: &str = "outbox";
    pub const INBOUND_DB: &str = "inbound.db";
    pub const OUTBOUND_DB: &str = "outbound.db";
    pub const HEARTBEAT: &str = "heartbeat";
    pub const RUNNER_JSON: &str = "runner.json";
    /// `in/stop`: the host asks the runner whose id it contains to exit 0.
    /// A file, not a signal, so it works the same through every sandbox.
    pub const STOP: &str = "stop";

    /// Whether a file event in a session directory means "the other side
    /// may have committed", for the inotify wake-ups of both sides.
    ///
    /// Our own reads (access events) never count, or every poll would
    /// trigger the next (an idle runner burned a core that way). In
    /// rollback-journal mode a commit ends when the `-journal` file is
    /// deleted: waking on its creation or on writes to the DB file would read
    /// mid-transaction and collide with the writer. Heartbeat touches never
    /// count; any other file (`stop`, `runner.json`) counts on any change.
    pub fn is_commit_hint(file_name: &str, db_name: &str, access: bool, removed: bool) -> bool {
        if access || file_name == HEARTBEAT || file_name == db_name {
            return false;
        }
        if file_name.strip_suffix("-journal") == Some(db_name) {
            return removed;
        }
        true
    }
}
