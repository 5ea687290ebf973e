//! Pure decisions of pinch.
//!
//! Every function here takes its inputs (including `now`, where time
//! matters) as parameters and returns a decision value the caller carries
//! out. No IO, no clock, no async, no SQLite: that is what makes these
//! exhaustively testable with tables and properties, and it is enforced by
//! the architecture test (`tests/it/architecture.rs` in the `pinch` crate).

pub mod address;
pub mod admin;
pub mod batch;
pub mod breaker;
pub mod budget;
pub mod choice;
pub mod commands;
pub mod cron;
pub mod exit;
pub mod filename;
pub mod hosts;
pub mod mounts;
pub mod net;
pub mod path;
pub mod rate;
pub mod retry;
pub mod route;
pub mod skills;
pub mod streak;
pub mod sweep;
pub mod wake;
