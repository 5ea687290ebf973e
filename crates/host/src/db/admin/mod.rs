//! The admin commands over the central DB (SPEC §10): one dispatch for the
//! owner (the admin socket) and for agents (the `admin` tool, under their
//! group's `admin_scope`). Session and host commands need the main loop's
//! runtime state and live there; everything here is a plain function of the
//! central DB, so it is unit-tested against a real temp `pinch.db`.
//!
//! Shape: what a command is — its resource, verb, the argument keys it
//! accepts and their types, and whether an agent's request needs an
//! approval — is the shared vocabulary, [`pinch_policy::admin`]; a request
//! is parsed there once into an [`AdminCommand`] (an unknown or misspelt
//! key is an `invalid-args` naming the accepted ones). Here the caller's
//! scope is checked first (before any argument is looked at, so a refused
//! caller learns nothing), then the resource's handler runs: one module per
//! resource (`groups.rs`, `wirings.rs`, …). Rows go out as JSON objects
//! with the column names of the table, `agent_group_id`/
//! `messaging_group_id`/`user_id` shortened to `ag`/`mg`/`user` — the same
//! names the arguments use.
//!
//! Scope rules for agents (SPEC §10): `disabled` refuses everything;
//! `group` allows groups (its own row only), destinations and members of its
//! own group — a foreign id on a read is `not-found` (no existence oracle),
//! on a write `forbidden`, lists are filtered to its own group (fail
//! closed), and it may never change `admin_scope` or `can_create_agents`;
//! `global` reads everything. Which agent commands need an approval first,
//! and whose, is [`gate`]; the main loop turns those into cards, and runs a
//! command an owner approved beyond a `group` scope with global reach.

use pinch_policy::admin::{AdminCommand, Args, Refusal, Resource, Served, Spec};
use pinch_proto::rusqlite::Connection;
use serde_json::Value;

use crate::admin::{err, ErrorBody, Reply};

mod approvals;
mod audit;
mod destinations;
mod groups;
mod members;
mod messaging_groups;
mod roles;
mod sql;
mod users;
mod wirings;

use sql::*;

pub use pinch_policy::admin::{AdminScope, Gate, PAGE};

/// Who is asking.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Caller {
    /// The admin socket (mode 0600: the owner).
    Owner,
    /// An agent group, through its session DB.
    Agent { ag: String, scope: AdminScope },
}

impl Caller {
    /// What `granted_by` / `added_by` record.
    fn label(&self) -> String {
        match self {
            Caller::Owner => "owner".into(),
            Caller::Agent { ag, .. } => format!("agent:{ag}"),
        }
    }
}

/// A list's page: `limit` rows from `offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    pub limit: i64,
    pub offset: i64,
}

impl Page {
    /// The page's rows of a list reply (other replies unchanged).
    pub fn apply(self, v: Value) -> Value {
        match v {
            Value::Array(rows) => Value::Array(
                rows.into_iter()
                    .skip(self.offset as usize)
                    .take(self.limit as usize)
                    .collect(),
            ),
            other => other,
        }
    }
}

impl From<Refusal> for ErrorBody {
    fn from(r: Refusal) -> ErrorBody {
        err(r.code, r.message)
    }
}

/// A command the main loop serves.
fn loop_spec(command: &str) -> Option<&'static Spec> {
    Spec::find(command).filter(|s| s.served == Served::MainLoop)
}

/// A command served here.
fn central_spec(command: &str) -> Option<&'static Spec> {
    Spec::find(command).filter(|s| s.served == Served::Central)
}

/// Checks the arguments of one of the main loop's commands (`None` when the
/// command is not one of them): unknown keys are refused naming the accepted
/// ones, aliases are folded, values typed, and lists get their validated
/// page. Returns the folded arguments to use instead of the raw ones.
pub fn loop_args(command: &str, raw: &Value) -> Option<Result<(Value, Option<Page>), ErrorBody>> {
    let spec = loop_spec(command)?;
    Some(
        AdminCommand::with_spec(spec, raw)
            .map_err(ErrorBody::from)
            .and_then(|c| {
                let page = if spec.is_list() {
                    let (limit, offset) = c.args.page()?;
                    Some(Page { limit, offset })
                } else {
                    None
                };
                Ok((c.args.to_json(), page))
            }),
    )
}

/// The gate of an agent's command (see [`Gate`]); `Now` for the owner, for
/// reads and for commands that are not this module's. Arguments are read
/// the way the handler reads them (aliases folded); arguments the handler
/// would refuse gate as `Now`, so the refusal comes at once.
pub fn gate(caller: &Caller, command: &str, raw: &Value) -> Gate {
    let Caller::Agent { ag, .. } = caller else {
        return Gate::Now;
    };
    let Some(spec) = central_spec(command) else {
        return Gate::Now;
    };
    match AdminCommand::with_spec(spec, raw) {
        Ok(c) => c.gate(ag),
        Err(_) => Gate::Now,
    }
}

/// Runs one central-DB command. `None` = not a command of this module (the
/// main loop serves sessions-*, tasks-*, host-*, approvals-approve/reject).
pub fn dispatch(conn: &Connection, caller: &Caller, command: &str, args: &Value) -> Option<Reply> {
    let spec = central_spec(command)?;
    Some(run(conn, caller, spec, args))
}

type R<T> = Result<T, ErrorBody>;

fn invalid(m: impl Into<String>) -> ErrorBody {
    err("invalid-args", m)
}
fn not_found(m: impl Into<String>) -> ErrorBody {
    err("not-found", m)
}
fn forbidden(m: impl Into<String>) -> ErrorBody {
    err("forbidden", m)
}

fn run(conn: &Connection, caller: &Caller, spec: &'static Spec, raw: &Value) -> Reply {
    let own = match caller {
        Caller::Owner | Caller::Agent { scope: AdminScope::Global, .. } => None,
        Caller::Agent { ag, scope: AdminScope::Disabled } => {
            return Err(err(
                "permission-denied",
                format!(
                    "admin commands are disabled for agent group {ag:?}; the owner can enable them with `pinch admin groups config-set {ag} --admin_scope group`"
                ),
            ))
        }
        Caller::Agent { ag, scope: AdminScope::Group } => {
            if !spec.resource.open_to_group_scope() {
                return Err(forbidden(format!(
                    "{}: admin_scope \"group\" of agent group {ag:?} allows only groups, sessions, destinations, members and tasks of its own group",
                    spec.name
                )));
            }
            Some(ag.as_str())
        }
    };
    let command = AdminCommand::with_spec(spec, raw)?;
    let c = Ctx {
        conn,
        caller,
        own,
        a: command.args,
    };
    match spec.resource {
        Resource::Groups => c.groups(spec.verb),
        Resource::MessagingGroups => c.messaging_groups(spec.verb),
        Resource::Wirings => c.wirings(spec.verb),
        Resource::Users => c.users(spec.verb),
        Resource::Roles => c.roles(spec.verb),
        Resource::Members => c.members(spec.verb),
        Resource::Destinations => c.destinations(spec.verb),
        Resource::Approvals => c.approvals(spec.verb),
        Resource::UserDms => c.user_dms(spec.verb),
        Resource::DroppedMessages => c.dropped_messages(spec.verb),
        Resource::Sessions | Resource::Tasks | Resource::Channels | Resource::Host => {
            Err(c.unserved())
        }
    }
}

// ------------------------------------------------------------------ checks

/// A folder or destination name made from free text: lowercase
/// `[a-z0-9-]`, runs of anything else become one `-`, at most `max` chars.
pub fn sanitize_name(raw: &str, max: usize) -> String {
    let mut out = String::new();
    for ch in raw.chars().flat_map(char::to_lowercase) {
        if ch.is_ascii_lowercase() || ch.is_ascii_digit() {
            out.push(ch);
        } else if !out.ends_with('-') && !out.is_empty() {
            out.push('-');
        }
    }
    let mut out: String = out.chars().take(max).collect();
    while out.ends_with('-') {
        out.pop();
    }
    out
}

/// A valid agent-group folder: `[a-z0-9-]`, 1..=40 chars, not `global`.
fn check_folder(cmd: &str, folder: &str) -> R<()> {
    let fix = "use lowercase letters, digits and '-', 1 to 40 characters, e.g. --folder research";
    if folder == "global" {
        return Err(invalid(format!(
            "{cmd}: folder \"global\" is reserved (it is the folder every agent shares); {fix}"
        )));
    }
    if folder.contains("..") || folder.contains('/') {
        return Err(invalid(format!(
            "{cmd}: folder {folder:?} is not a plain folder name; {fix}"
        )));
    }
    let ok = (1..=40).contains(&folder.len())
        && folder
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if !ok {
        return Err(invalid(format!(
            "{cmd}: folder {folder:?} is not allowed; {fix}"
        )));
    }
    Ok(())
}

/// A row id used in paths or callbacks: `[A-Za-z0-9_.:-]`, 1..=64, not
/// `.`/`..`.
fn check_id(cmd: &str, what: &str, id: &str, example: &str) -> R<()> {
    let ok = (1..=64).contains(&id.len())
        && id != "."
        && id != ".."
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':'));
    if !ok {
        return Err(invalid(format!("{cmd}: {what} {id:?} must be 1 to 64 letters, digits, '_', '-', '.' or ':' (e.g. --id {example})")));
    }
    Ok(())
}

// ----------------------------------------------------------------- handlers

/// One command being handled: the connection, who asks, and its typed
/// arguments. Each resource's module adds its handlers to it.
struct Ctx<'a> {
    conn: &'a Connection,
    caller: &'a Caller,
    /// `Some(ag)` for an agent under `admin_scope = group`.
    own: Option<&'a str>,
    a: Args,
}

const MG_COLS: &str =
    "id, channel_type, platform_id, name, is_group, unknown_sender_policy, denied_at, created_at";

impl Ctx<'_> {
    fn cmd(&self) -> &'static str {
        self.a.cmd()
    }

    fn no_group(&self, id: &str) -> ErrorBody {
        not_found(format!(
            "no agent group {id:?} (see `pinch admin groups list`)"
        ))
    }

    /// A group-scoped agent may read only its own group: anything else
    /// reads as absent.
    fn readable_group(&self, id: &str) -> R<()> {
        match self.own {
            Some(own) if own != id => Err(self.no_group(id)),
            _ => Ok(()),
        }
    }

    /// A group-scoped agent may change only its own group's things.
    fn writable_group(&self, id: &str) -> R<()> {
        match self.own {
            Some(own) if own != id => Err(forbidden(format!(
                "{}: admin_scope \"group\" of agent group {own:?} covers only its own group",
                self.cmd()
            ))),
            _ => Ok(()),
        }
    }

    fn group_exists(&self, id: &str) -> R<bool> {
        exists(
            self.conn,
            "SELECT 1 FROM agent_groups WHERE id = ?1",
            &[s(id)],
        )
    }

    fn need_group(&self, id: &str) -> R<()> {
        if self.group_exists(id)? {
            Ok(())
        } else {
            Err(self.no_group(id))
        }
    }

    fn need_mg(&self, id: &str) -> R<Value> {
        one(
            self.conn,
            &format!("SELECT {MG_COLS} FROM messaging_groups WHERE id = ?1"),
            &[s(id)],
        )?
        .ok_or_else(|| {
            not_found(format!(
                "no messaging group {id:?} (see `pinch admin messaging-groups list`)"
            ))
        })
    }

    /// The `ag` argument of destinations/members: a group-scoped agent
    /// defaults to (and is held to) its own group.
    fn ag_arg(&self, required: bool, example: &str) -> R<Option<String>> {
        let ag = self.a.opt_str("ag")?.filter(|v| !v.trim().is_empty());
        match (ag, self.own) {
            (Some(ag), _) => {
                self.writable_group(&ag)?;
                Ok(Some(ag))
            }
            (None, Some(own)) => Ok(Some(own.to_owned())),
            (None, None) if required => Err(invalid(format!(
                "{} needs --ag (e.g. {example})",
                self.cmd()
            ))),
            (None, None) => Ok(None),
        }
    }

    /// `forbidden` while sessions linked by `column` (`agent_group_id` or
    /// `messaging_group_id`) to `id` are active; `what` starts the message.
    fn refuse_active_sessions(&self, column: &str, id: &str, what: &str) -> R<()> {
        let sql = format!(
            "SELECT id FROM sessions WHERE {column} = ?1 AND status = 'active' ORDER BY id"
        );
        let active: Vec<String> = rows(self.conn, &sql, &[s(id)])?
            .into_iter()
            .filter_map(|r| r["id"].as_str().map(str::to_owned))
            .collect();
        if active.is_empty() {
            return Ok(());
        }
        Err(forbidden(format!(
            "{what} has {} active session(s): {}; close them first (`pinch admin sessions close <id>`)",
            active.len(),
            active.join(", ")
        )))
    }

    /// A command of the table its resource's module has no handler for.
    fn unserved(&self) -> ErrorBody {
        err(
            "unknown-command",
            format!("unknown command {:?}", self.cmd()),
        )
    }
}

#[cfg(test)]
mod tests;
