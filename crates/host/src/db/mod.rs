//! The central DB `pinch.db` behind one door (issue 16, decision 0034):
//! every SQL statement on a central table lives in this folder. Callers
//! elsewhere in the host (routing, permissions, repair, notices, the admin
//! commands) call the named methods of [`central::Central`] or the
//! functions here, and never write SQL of their own on these tables; the
//! architecture test (`crates/cli/tests/it/architecture.rs`) enforces it.
//!
//! - [`central`]: opening, checking and migrating the file; bootstrap;
//!   messaging groups, wirings, users, pending questions.
//! - [`migrations`]: the named, additive migrations (the schema).
//! - [`sessions`]: session rows, runner state, exits, crash budget, quarantine.
//! - [`agents`]: an agent group's settings and destinations.
//! - [`permissions`], [`approvals`]: roles, members, DMs, the drop audit;
//!   approval cards and the sender/channel requests.
//! - [`notices`]: host notices waiting for their channel.
//! - [`repair`]: the statements `pinch admin repair` uses to rebuild rows.
//! - [`fixtures`]: the rows `pinch bench` seeds (P4), not used by the host.

pub mod admin;
pub mod agents;
pub mod approvals;
pub mod central;
pub mod fixtures;
pub mod migrations;
pub mod notices;
pub mod permissions;
pub mod repair;
pub mod sessions;
