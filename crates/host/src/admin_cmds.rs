//! The admin commands over the central DB (SPEC §10): one dispatch for the
//! owner (the admin socket) and for agents (the `admin` tool, under their
//! group's `admin_scope`). Session and host commands need the main loop's
//! runtime state and live there; everything here is a plain function of the
//! central DB, so it is unit-tested against a real temp `pinch.db`.

use pinch_proto::rusqlite::Connection;
use serde_json::Value;

use crate::admin::{err, Reply};

/// `agent_configs.admin_scope` of the calling agent group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AdminScope {
    Disabled,
    Group,
    Global,
}

impl AdminScope {
    pub fn parse(s: &str) -> AdminScope {
        match s {
            "group" => AdminScope::Group,
            "global" => AdminScope::Global,
            _ => AdminScope::Disabled,
        }
    }
}

/// Who is asking.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Caller {
    /// The admin socket (mode 0600: the owner).
    Owner,
    /// An agent group, through its session DB.
    Agent { ag: String, scope: AdminScope },
}

/// Runs one central-DB command. `None` = not a command of this module (the
/// main loop serves sessions-*, host-*, approvals-approve/reject).
pub fn dispatch(conn: &Connection, caller: &Caller, command: &str, args: &Value) -> Option<Reply> {
    let _ = (conn, caller, args);
    match command {
        _ => None,
    }
}

#[allow(dead_code)]
fn unknown(command: &str) -> Reply {
    Err(err("unknown-command", format!("unknown command {command:?}")))
}
