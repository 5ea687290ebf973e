//! The admin commands over the central DB (SPEC §10): one dispatch for the
//! owner (the admin socket) and for agents (the `admin` tool, under their
//! group's `admin_scope`). Session and host commands need the main loop's
//! runtime state and live there; everything here is a plain function of the
//! central DB, so it is unit-tested against a real temp `pinch.db`.
//!
//! Shape: [`COMMANDS`] names every command served here with the argument
//! keys it accepts, so an unknown or misspelt key is an `invalid-args`
//! naming the accepted ones. Then the caller's scope is checked (before any
//! argument is looked at, so a refused caller learns nothing), then the
//! handler runs. Rows go out as JSON objects with the column names of the
//! table, `agent_group_id`/`messaging_group_id`/`user_id` shortened to
//! `ag`/`mg`/`user` — the same names the arguments use.
//!
//! Scope rules for agents (SPEC §10): `disabled` refuses everything;
//! `group` allows groups (its own row only), destinations and members of its
//! own group — a foreign id on a read is `not-found` (no existence oracle),
//! on a write `forbidden`, lists are filtered to its own group (fail
//! closed), and it may never change `admin_scope` or `can_create_agents`;
//! `global` reads everything. Which agent commands need an approval first,
//! and whose, is [`gate`]; the main loop turns those into cards, and runs a
//! command an owner approved beyond a `group` scope with global reach.

use pinch_proto::rusqlite::{
    self, types::Value as Sv, types::ValueRef, Connection, OptionalExtension,
};
use serde_json::{json, Map, Value};

use crate::admin::{err, ErrorBody, Reply};

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

impl Caller {
    /// What `granted_by` / `added_by` record.
    fn label(&self) -> String {
        match self {
            Caller::Owner => "owner".into(),
            Caller::Agent { ag, .. } => format!("agent:{ag}"),
        }
    }
}

/// Lists page at this many rows (SPEC §10).
pub const PAGE: i64 = 200;

/// One command served here: its name, the argument keys it accepts (after
/// aliases are folded, see [`ALIASES`]), and what a positional `id` means
/// when the command has no row id of its own.
struct Cmd {
    name: &'static str,
    keys: &'static [&'static str],
    /// `args.id` is taken as this key (e.g. `roles grant telegram:1`).
    id_as: Option<&'static str>,
}

const fn cmd(name: &'static str, keys: &'static [&'static str]) -> Cmd {
    Cmd {
        name,
        keys,
        id_as: None,
    }
}

const fn cmd_id_as(name: &'static str, keys: &'static [&'static str], id_as: &'static str) -> Cmd {
    Cmd {
        name,
        keys,
        id_as: Some(id_as),
    }
}

/// `groups-config-set`'s arguments: the group id, then every
/// `agent_configs` column it may set ([`CONFIG_KEYS`]).
const CONFIG_SET_KEYS: &[&str] = &[
    "id",
    "provider",
    "model",
    "assistant_name",
    "batch_size",
    "mcp_servers",
    "packages",
    "extra_mounts",
    "egress_allow",
    "sandbox",
    "admin_scope",
    "can_create_agents",
    "idle_exit_s",
    "claim_stuck_s",
];
const CONFIG_KEYS: &[&str] = CONFIG_SET_KEYS.split_at(1).1;

/// Every command of this module. Anything else is the main loop's
/// (sessions-*, tasks-*, host-*, approvals-approve/reject) or unknown.
const COMMANDS: &[Cmd] = &[
    cmd("groups-list", &["limit", "offset"]),
    cmd("groups-get", &["id"]),
    cmd("groups-create", &["id", "name", "folder", "provider"]),
    cmd("groups-update", &["id", "name", "provider"]),
    cmd("groups-delete", &["id"]),
    cmd("groups-config-get", &["id"]),
    cmd("groups-config-set", CONFIG_SET_KEYS),
    cmd(
        "messaging-groups-list",
        &["channel_type", "limit", "offset"],
    ),
    cmd("messaging-groups-get", &["id"]),
    cmd(
        "messaging-groups-create",
        &[
            "id",
            "channel_type",
            "platform_id",
            "name",
            "is_group",
            "unknown_sender_policy",
        ],
    ),
    cmd(
        "messaging-groups-update",
        &["id", "name", "is_group", "unknown_sender_policy"],
    ),
    cmd("messaging-groups-delete", &["id"]),
    cmd("messaging-groups-deny", &["id"]),
    cmd("messaging-groups-undeny", &["id"]),
    cmd("wirings-list", &["mg", "ag", "limit", "offset"]),
    cmd("wirings-get", &["id"]),
    cmd(
        "wirings-create",
        &[
            "id",
            "mg",
            "ag",
            "engage_mode",
            "engage_pattern",
            "sender_scope",
            "ignored_message_policy",
            "session_mode",
            "priority",
        ],
    ),
    cmd(
        "wirings-update",
        &[
            "id",
            "engage_mode",
            "engage_pattern",
            "sender_scope",
            "ignored_message_policy",
            "session_mode",
            "priority",
        ],
    ),
    cmd("wirings-delete", &["id"]),
    cmd("users-list", &["kind", "limit", "offset"]),
    cmd("users-get", &["id"]),
    cmd("users-create", &["id", "kind", "display_name"]),
    cmd("users-update", &["id", "kind", "display_name"]),
    cmd("users-delete", &["id"]),
    cmd("roles-list", &["user", "role", "ag", "limit", "offset"]),
    cmd_id_as("roles-grant", &["user", "role", "ag"], "user"),
    cmd_id_as("roles-revoke", &["user", "role", "ag"], "user"),
    cmd_id_as("members-list", &["ag", "limit", "offset"], "ag"),
    cmd_id_as("members-add", &["user", "ag"], "user"),
    cmd_id_as("members-remove", &["user", "ag"], "user"),
    cmd_id_as("destinations-list", &["ag", "limit", "offset"], "ag"),
    cmd_id_as(
        "destinations-add",
        &["ag", "name", "target_type", "target"],
        "ag",
    ),
    cmd_id_as("destinations-remove", &["ag", "name"], "ag"),
    cmd("approvals-list", &["status", "limit", "offset"]),
    cmd("approvals-get", &["id"]),
    cmd("user-dms-list", &["user", "limit", "offset"]),
    cmd("dropped-messages-list", &["reason", "limit", "offset"]),
];

/// The main loop's commands (served in `main_loop.rs`, not here) and the
/// keys each accepts: checked by [`loop_args`] like this module's own, so
/// an unknown key or a bad `--limit` is refused there too.
const LOOP_COMMANDS: &[Cmd] = &[
    cmd("host-status", &[]),
    cmd("host-version", &[]),
    cmd("channels-status", &[]),
    cmd("groups-restart", &["id"]),
    cmd("sessions-list", &["limit", "offset"]),
    cmd("sessions-get", &["id"]),
    cmd("sessions-resume", &["id"]),
    cmd("sessions-stop", &["id"]),
    cmd("sessions-restart", &["id"]),
    cmd("sessions-close", &["id"]),
    cmd("approvals-approve", &["id", "value"]),
    cmd("approvals-reject", &["id"]),
    cmd("tasks-list", &["ag", "session", "limit", "offset"]),
    cmd("tasks-pause", &["id"]),
    cmd("tasks-resume", &["id"]),
    cmd("tasks-cancel", &["id"]),
];

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

/// Checks the arguments of one of the main loop's commands (`None` when the
/// command is not one of them): unknown keys are refused naming the accepted
/// ones, aliases are folded, and lists get their validated page. Returns
/// the folded arguments to use instead of the raw ones.
pub fn loop_args(command: &str, raw: &Value) -> Option<Result<(Value, Option<Page>), ErrorBody>> {
    let spec = LOOP_COMMANDS.iter().find(|c| c.name == command)?;
    Some(Args::new(spec, raw).and_then(|a| {
        let page = if spec.keys.contains(&"limit") {
            let (limit, offset) = a.page()?;
            Some(Page { limit, offset })
        } else {
            None
        };
        Ok((Value::Object(a.m), page))
    }))
}

/// Other spellings accepted for an argument key → the canonical key.
const ALIASES: &[(&str, &str)] = &[
    ("messaging_group", "mg"),
    ("messaging_group_id", "mg"),
    ("agent_group", "ag"),
    ("agent_group_id", "ag"),
    ("user_id", "user"),
    ("target_id", "target"),
    ("local_name", "name"),
];

/// How an agent's command is let through (SPEC §10; issue 14). The owner's
/// commands are never gated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Gate {
    /// Runs at once under the agent's scope: reads, and plain changes to
    /// its own group (its name, its destinations' removal).
    Now,
    /// Changes who may reach the agent's own group (members, destinations,
    /// its config): an approval card to the group's admins first (owners
    /// when the scope is `global`), then it runs under the agent's scope.
    Approval,
    /// Reaches beyond the agent's own group — another group, users, roles,
    /// wirings, conversations — or changes a security boundary of its own
    /// (`egress_allow`, `extra_mounts`, `sandbox`, `admin_scope`,
    /// `can_create_agents`): a card only an owner may approve, and once
    /// approved it runs with the reach of `global` (a `group` agent could
    /// not run it otherwise). Never refused for the scope alone.
    Owner,
}

/// `groups-config-set` keys that are security boundaries: owner's approval.
const OWNER_CONFIG_KEYS: &[&str] = &[
    "egress_allow",
    "extra_mounts",
    "sandbox",
    "admin_scope",
    "can_create_agents",
];

/// The gate of an agent's command (see [`Gate`]); `Now` for the owner, for
/// reads and for commands that are not this module's. Arguments are read
/// the way the handler reads them (aliases folded); arguments the handler
/// would refuse gate as `Now`, so the refusal comes at once.
pub fn gate(caller: &Caller, command: &str, raw: &Value) -> Gate {
    let Caller::Agent { ag, .. } = caller else {
        return Gate::Now;
    };
    let Some(spec) = COMMANDS.iter().find(|c| c.name == command) else {
        return Gate::Now;
    };
    let (resource, verb) = split(command);
    if matches!(verb, "list" | "get" | "config-get")
        || matches!(resource, "approvals" | "user-dms" | "dropped-messages")
    {
        return Gate::Now;
    }
    let Ok(a) = Args::new(spec, raw) else {
        return Gate::Now;
    };
    // Read as the handler reads it (a number is its decimal text), so no
    // spelling of another group's id slips past as "own".
    let names_other = |key: &str| {
        a.opt_str(key)
            .ok()
            .flatten()
            .is_some_and(|v| !v.trim().is_empty() && v != *ag)
    };
    let beyond = match resource {
        "users" | "roles" | "wirings" | "messaging-groups" => true,
        "groups" => {
            matches!(verb, "create" | "delete")
                || names_other("id")
                || OWNER_CONFIG_KEYS.iter().any(|k| a.m.contains_key(*k))
        }
        "members" | "destinations" => names_other("ag"),
        _ => true,
    };
    if beyond {
        Gate::Owner
    } else if matches!(
        command,
        "members-add" | "members-remove" | "destinations-add" | "groups-config-set"
    ) {
        Gate::Approval
    } else {
        Gate::Now
    }
}

/// Runs one central-DB command. `None` = not a command of this module (the
/// main loop serves sessions-*, tasks-*, host-*, approvals-approve/reject).
pub fn dispatch(conn: &Connection, caller: &Caller, command: &str, args: &Value) -> Option<Reply> {
    let spec = COMMANDS.iter().find(|c| c.name == command)?;
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

fn run(conn: &Connection, caller: &Caller, spec: &Cmd, raw: &Value) -> Reply {
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
            let (resource, _) = split(spec.name);
            if !matches!(resource, "groups" | "destinations" | "members") {
                return Err(forbidden(format!(
                    "{}: admin_scope \"group\" of agent group {ag:?} allows only groups, sessions, destinations, members and tasks of its own group",
                    spec.name
                )));
            }
            Some(ag.as_str())
        }
    };
    let a = Args::new(spec, raw)?;
    let c = Ctx {
        conn,
        caller,
        own,
        a,
    };
    match spec.name {
        "groups-list" => c.groups_list(),
        "groups-get" => c.groups_get(),
        "groups-create" => c.groups_create(),
        "groups-update" => c.groups_update(),
        "groups-delete" => c.groups_delete(),
        "groups-config-get" => c.config_get(),
        "groups-config-set" => c.config_set(),
        "messaging-groups-list" => c.mg_list(),
        "messaging-groups-get" => c.mg_get(),
        "messaging-groups-create" => c.mg_create(),
        "messaging-groups-update" => c.mg_update(),
        "messaging-groups-delete" => c.mg_delete(),
        "messaging-groups-deny" => c.mg_deny(true),
        "messaging-groups-undeny" => c.mg_deny(false),
        "wirings-list" => c.wirings_list(),
        "wirings-get" => c.wirings_get(),
        "wirings-create" => c.wirings_create(),
        "wirings-update" => c.wirings_update(),
        "wirings-delete" => c.wirings_delete(),
        "users-list" => c.users_list(),
        "users-get" => c.users_get(),
        "users-create" => c.users_create(),
        "users-update" => c.users_update(),
        "users-delete" => c.users_delete(),
        "roles-list" => c.roles_list(),
        "roles-grant" => c.roles_grant(),
        "roles-revoke" => c.roles_revoke(),
        "members-list" => c.members_list(),
        "members-add" => c.members_add(),
        "members-remove" => c.members_remove(),
        "destinations-list" => c.destinations_list(),
        "destinations-add" => c.destinations_add(),
        "destinations-remove" => c.destinations_remove(),
        "approvals-list" => c.approvals_list(),
        "approvals-get" => c.approvals_get(),
        "user-dms-list" => c.user_dms_list(),
        "dropped-messages-list" => c.dropped_list(),
        other => Err(err("unknown-command", format!("unknown command {other:?}"))),
    }
}

/// `"messaging-groups-create"` → `("messaging-groups", "create")`.
fn split(command: &str) -> (&str, &str) {
    for r in ["messaging-groups", "dropped-messages", "user-dms"] {
        if let Some(v) = command.strip_prefix(r).and_then(|v| v.strip_prefix('-')) {
            return (r, v);
        }
    }
    command.split_once('-').unwrap_or((command, ""))
}

// ---------------------------------------------------------------- arguments

/// The request's arguments: a JSON object whose values may be strings
/// (from the CLI) or typed (from an agent).
struct Args {
    cmd: &'static str,
    m: Map<String, Value>,
}

impl Args {
    fn new(spec: &Cmd, raw: &Value) -> R<Args> {
        let mut m = match raw {
            Value::Null => Map::new(),
            Value::Object(m) => m.clone(),
            other => {
                return Err(invalid(format!(
                    "{}: args must be a JSON object, not {other}",
                    spec.name
                )))
            }
        };
        for (alias, key) in ALIASES {
            if let Some(v) = m.remove(*alias) {
                match m.get(*key) {
                    Some(existing) if *existing != v => {
                        return Err(invalid(format!(
                            "{}: --{alias} and --{key} are the same argument; give it once",
                            spec.name
                        )))
                    }
                    _ => {
                        m.insert((*key).to_owned(), v);
                    }
                }
            }
        }
        if let Some(target) = spec.id_as {
            if let Some(v) = m.remove("id") {
                match m.get(target) {
                    Some(existing) if *existing != v => {
                        return Err(invalid(format!(
                            "{}: the positional id is --{target} here; give it once",
                            spec.name
                        )))
                    }
                    _ => {
                        m.insert(target.to_owned(), v);
                    }
                }
            }
        }
        let mut unknown: Vec<&str> = m
            .keys()
            .map(String::as_str)
            .filter(|k| !spec.keys.contains(k))
            .collect();
        if !unknown.is_empty() {
            unknown.sort();
            let accepted: Vec<String> = spec
                .keys
                .iter()
                .filter(|k| **k != "id")
                .map(|k| format!("--{k}"))
                .collect();
            let accepted = if accepted.is_empty() {
                "none besides the id".to_owned()
            } else {
                accepted.join(", ")
            };
            return Err(invalid(format!(
                "{}: unknown argument --{}; accepted: {accepted}",
                spec.name,
                unknown.join(", --")
            )));
        }
        Ok(Args { cmd: spec.name, m })
    }

    fn has(&self, key: &str) -> bool {
        self.m.contains_key(key)
    }

    /// A text argument: strings as given, numbers as their decimal text;
    /// `null` (and absent) = `None`.
    fn opt_str(&self, key: &str) -> R<Option<String>> {
        match self.m.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(Value::Number(n)) => Ok(Some(n.to_string())),
            Some(other) => Err(invalid(format!(
                "{}: --{key} must be text, not {other}",
                self.cmd
            ))),
        }
    }

    /// A required, non-blank text argument; the error names it and shows
    /// an example.
    fn req_str(&self, key: &str, example: &str) -> R<String> {
        match self.opt_str(key)? {
            Some(s) if !s.trim().is_empty() => Ok(s),
            _ => Err(invalid(format!(
                "{} needs --{key} (e.g. {example})",
                self.cmd
            ))),
        }
    }

    /// The row id (`args.id`, the CLI's positional).
    fn id(&self, example: &str) -> R<String> {
        match self.opt_str("id")? {
            Some(s) if !s.trim().is_empty() => Ok(s),
            _ => Err(invalid(format!(
                "{} needs an id (e.g. {example})",
                self.cmd
            ))),
        }
    }

    /// A nullable text column for an update: absent = leave, `null` or
    /// blank = clear.
    fn nullable_str(&self, key: &str) -> R<Option<Option<String>>> {
        if !self.has(key) {
            return Ok(None);
        }
        Ok(Some(self.opt_str(key)?.filter(|s| !s.trim().is_empty())))
    }

    fn opt_bool(&self, key: &str) -> R<Option<bool>> {
        let bad = || {
            invalid(format!(
                "{}: --{key} must be true or false (also 1/0, yes/no), e.g. --{key} true",
                self.cmd
            ))
        };
        match self.m.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(Value::Number(n)) => match n.as_i64() {
                Some(0) => Ok(Some(false)),
                Some(1) => Ok(Some(true)),
                _ => Err(bad()),
            },
            Some(Value::String(s)) => match s.trim().to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" => Ok(Some(true)),
                "false" | "0" | "no" => Ok(Some(false)),
                _ => Err(bad()),
            },
            Some(_) => Err(bad()),
        }
    }

    fn opt_int(&self, key: &str, example: i64) -> R<Option<i64>> {
        let bad = || {
            invalid(format!(
                "{}: --{key} must be a whole number, e.g. --{key} {example}",
                self.cmd
            ))
        };
        match self.m.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => n.as_i64().map(Some).ok_or_else(bad),
            Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
            Some(Value::String(s)) => s.trim().parse::<i64>().map(Some).map_err(|_| bad()),
            Some(_) => Err(bad()),
        }
    }

    /// A nullable integer column for an update (absent = leave, null/blank
    /// = clear), at least `min`.
    fn nullable_int(&self, key: &str, min: i64, example: i64) -> R<Option<Option<i64>>> {
        if !self.has(key) {
            return Ok(None);
        }
        let v = self.opt_int(key, example)?;
        if let Some(n) = v {
            if n < min {
                return Err(invalid(format!(
                    "{}: --{key} must be at least {min}, e.g. --{key} {example}",
                    self.cmd
                )));
            }
        }
        Ok(Some(v))
    }

    fn opt_choice(&self, key: &str, choices: &[&str]) -> R<Option<String>> {
        match self.opt_str(key)? {
            None => Ok(None),
            Some(s) if choices.contains(&s.as_str()) => Ok(Some(s)),
            Some(s) => Err(invalid(format!(
                "{}: --{key} {s:?} is not one of {} (e.g. --{key} {})",
                self.cmd,
                choices.join(", "),
                choices[0]
            ))),
        }
    }

    /// `limit` (1..=200, default 200) and `offset` (≥ 0, default 0).
    fn page(&self) -> R<(i64, i64)> {
        let limit = self.opt_int("limit", 50)?.unwrap_or(PAGE);
        if !(1..=PAGE).contains(&limit) {
            return Err(invalid(format!(
                "{}: --limit must be between 1 and {PAGE}, e.g. --limit 50",
                self.cmd
            )));
        }
        let offset = self.opt_int("offset", 200)?.unwrap_or(0);
        if offset < 0 {
            return Err(invalid(format!(
                "{}: --offset must be 0 or more, e.g. --offset 200",
                self.cmd
            )));
        }
        Ok((limit, offset))
    }
}

// --------------------------------------------------------------------- SQL

/// A savepoint on a shared connection: a transaction of its own at the top
/// level, and nestable, so the main loop can dry-run a command inside its
/// own savepoint and roll everything back. Rolled back unless committed.
struct Nested<'c> {
    conn: &'c Connection,
    done: bool,
}

impl<'c> Nested<'c> {
    fn begin(conn: &'c Connection) -> rusqlite::Result<Nested<'c>> {
        conn.execute_batch("SAVEPOINT admin_op")?;
        Ok(Nested { conn, done: false })
    }

    fn commit(mut self) -> rusqlite::Result<()> {
        self.done = true;
        self.conn.execute_batch("RELEASE admin_op")
    }
}

impl std::ops::Deref for Nested<'_> {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        self.conn
    }
}

impl Drop for Nested<'_> {
    fn drop(&mut self) {
        if !self.done {
            let _ = self
                .conn
                .execute_batch("ROLLBACK TO admin_op; RELEASE admin_op");
        }
    }
}

trait SqlExt<T> {
    /// SQL failure → `handler-error` (a unique violation → `invalid-args`).
    fn sql(self) -> R<T>;
    /// Same, with a unique violation said by `msg` (what already exists).
    fn exists_as(self, msg: &dyn Fn() -> String) -> R<T>;
}

fn is_unique(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _)
        if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE || f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY)
}

impl<T> SqlExt<T> for rusqlite::Result<T> {
    fn sql(self) -> R<T> {
        self.map_err(|e| {
            if is_unique(&e) {
                invalid(format!("already exists ({e})"))
            } else {
                err("handler-error", e.to_string())
            }
        })
    }
    fn exists_as(self, msg: &dyn Fn() -> String) -> R<T> {
        self.map_err(|e| {
            if is_unique(&e) {
                invalid(msg())
            } else {
                err("handler-error", e.to_string())
            }
        })
    }
}

fn to_json(v: ValueRef<'_>) -> Value {
    match v {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(i) => json!(i),
        ValueRef::Real(f) => json!(f),
        ValueRef::Text(t) => Value::String(String::from_utf8_lossy(t).into_owned()),
        ValueRef::Blob(b) => Value::String(b.iter().map(|x| format!("{x:02x}")).collect()),
    }
}

fn s(v: &str) -> Sv {
    Sv::Text(v.to_owned())
}

fn opt(v: Option<&str>) -> Sv {
    v.map(s).unwrap_or(Sv::Null)
}

/// Every row of a query as JSON objects keyed by column name.
fn rows(conn: &Connection, sql: &str, params: &[Sv]) -> R<Vec<Value>> {
    let mut st = conn.prepare(sql).sql()?;
    let names: Vec<String> = st.column_names().into_iter().map(String::from).collect();
    let mut q = st.query(rusqlite::params_from_iter(params.iter())).sql()?;
    let mut out = Vec::new();
    while let Some(r) = q.next().sql()? {
        let mut m = Map::new();
        for (i, n) in names.iter().enumerate() {
            m.insert(n.clone(), to_json(r.get_ref(i).sql()?));
        }
        out.push(Value::Object(m));
    }
    Ok(out)
}

fn one(conn: &Connection, sql: &str, params: &[Sv]) -> R<Option<Value>> {
    Ok(rows(conn, sql, params)?.into_iter().next())
}

fn exists(conn: &Connection, sql: &str, params: &[Sv]) -> R<bool> {
    conn.query_row(sql, rusqlite::params_from_iter(params.iter()), |_| Ok(()))
        .optional()
        .sql()
        .map(|o| o.is_some())
}

fn count(conn: &Connection, sql: &str, params: &[Sv]) -> R<i64> {
    conn.query_row(sql, rusqlite::params_from_iter(params.iter()), |r| r.get(0))
        .sql()
}

/// A list query with optional `AND` filters, ordered and paged (`order`
/// breaks `created_at` ties by rowid, i.e. insertion order: timestamps are
/// milliseconds).
fn list(
    conn: &Connection,
    a: &Args,
    select: &str,
    filters: &[(&str, Option<Sv>)],
    order: &str,
) -> Reply {
    let (limit, offset) = a.page()?;
    let mut sql = select.to_owned();
    let mut params = Vec::new();
    let mut first = true;
    for (clause, v) in filters {
        if let Some(v) = v {
            sql.push_str(if first { " WHERE " } else { " AND " });
            first = false;
            params.push(v.clone());
            sql.push_str(&clause.replace('?', &format!("?{}", params.len())));
        }
    }
    sql.push_str(&format!(" ORDER BY {order} LIMIT {limit} OFFSET {offset}"));
    Ok(Value::Array(rows(conn, &sql, &params)?))
}

/// `UPDATE table SET col = ?, … WHERE key = ?` from the given changes;
/// returns whether a row matched.
fn update(
    conn: &Connection,
    table: &str,
    key_col: &str,
    key: &str,
    changes: &[(&str, Sv)],
) -> R<bool> {
    let sets: Vec<String> = changes
        .iter()
        .enumerate()
        .map(|(i, (c, _))| format!("{c} = ?{}", i + 1))
        .collect();
    let sql = format!(
        "UPDATE {table} SET {} WHERE {key_col} = ?{}",
        sets.join(", "),
        changes.len() + 1
    );
    let mut params: Vec<Sv> = changes.iter().map(|(_, v)| v.clone()).collect();
    params.push(s(key));
    let n = conn
        .execute(&sql, rusqlite::params_from_iter(params.iter()))
        .sql()?;
    Ok(n > 0)
}

fn now() -> String {
    pinch_proto::time::now()
}

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

/// JSON columns of `agent_configs` and the shape each must have.
fn check_config_json(cmd: &str, key: &str, v: &Value) -> R<()> {
    let shape_err = |want: &str, example: &str| {
        invalid(format!(
            "{cmd}: --{key} must be {want}, e.g. --{key} '{example}'"
        ))
    };
    match key {
        "mcp_servers" => serde_json::from_value::<Vec<pinch_proto::runner_config::McpServerConfig>>(v.clone())
            .map(|_| ())
            .map_err(|e| {
                invalid(format!(
                    "{cmd}: --mcp_servers must be a JSON list of {{name, command, args, env, cwd, timeout_s}} ({e}), e.g. --mcp_servers '[{{\"name\":\"fs\",\"command\":\"mcp-fs\"}}]'"
                ))
            }),
        "egress_allow" => match v.as_array() {
            Some(a) if a.iter().all(Value::is_string) => Ok(()),
            _ => Err(shape_err("a JSON list of host patterns", "[\"api.github.com\", \"*.pypi.org\"]")),
        },
        "packages" => match v.as_array() {
            Some(_) => Ok(()),
            None => Err(shape_err("a JSON list", "[\"ripgrep\"]")),
        },
        "extra_mounts" => match v.as_array() {
            Some(a) => {
                for m in a {
                    let (_, name, _) = crate::mounts::parse_request(m).map_err(|e| invalid(format!("{cmd}: --extra_mounts: {e} (in {m})")))?;
                    pinch_policy::mounts::check_name(&name).map_err(|e| invalid(format!("{cmd}: --extra_mounts: {e} (in {m})")))?;
                }
                Ok(())
            }
            None => Err(shape_err("a JSON list", "[{\"host\":\"~/notes\",\"name\":\"notes\",\"read_write\":false}]")),
        },
        "sandbox" => match v.as_object() {
            // disk_mb 0 or not a whole number fell back to the default silently.
            Some(o) if o.get("disk_mb").is_some_and(|d| d.as_u64().is_none_or(|n| n == 0)) => Err(shape_err(
                "a JSON object whose disk_mb is a whole number of MiB, at least 1",
                "{\"disk_mb\":4096}",
            )),
            Some(_) => Ok(()),
            None => Err(shape_err("a JSON object", "{\"memory_mb\":1024}")),
        },
        _ => Ok(()),
    }
}

const JSON_COLS: [&str; 5] = [
    "mcp_servers",
    "packages",
    "extra_mounts",
    "egress_allow",
    "sandbox",
];

// ----------------------------------------------------------------- handlers

struct Ctx<'a> {
    conn: &'a Connection,
    caller: &'a Caller,
    /// `Some(ag)` for an agent under `admin_scope = group`.
    own: Option<&'a str>,
    a: Args,
}

const GROUP_COLS: &str =
    "g.id, g.name, g.folder, g.provider, c.admin_scope, c.can_create_agents, g.created_at";
const MG_COLS: &str =
    "id, channel_type, platform_id, name, is_group, unknown_sender_policy, denied_at, created_at";
const WIRING_COLS: &str = "id, messaging_group_id AS mg, agent_group_id AS ag, engage_mode, engage_pattern, sender_scope, \
     ignored_message_policy, session_mode, priority, created_at";
const ENGAGE_MODES: [&str; 3] = ["pattern", "mention", "mention-sticky"];
const SENDER_SCOPES: [&str; 2] = ["known", "all"];
const IGNORED: [&str; 2] = ["drop", "accumulate"];
const SESSION_MODES: [&str; 3] = ["shared", "per-thread", "agent-shared"];
const SENDER_POLICIES: [&str; 3] = ["strict", "request_approval", "public"];

impl Ctx<'_> {
    fn cmd(&self) -> &'static str {
        self.a.cmd
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

    // ---- groups

    fn group_row(&self, id: &str) -> R<Option<Value>> {
        one(
            self.conn,
            &format!(
                "SELECT {GROUP_COLS},
                    (SELECT count(*) FROM sessions s WHERE s.agent_group_id = g.id AND s.status = 'active') AS active_sessions,
                    (SELECT count(*) FROM wirings w WHERE w.agent_group_id = g.id) AS wirings
                 FROM agent_groups g LEFT JOIN agent_configs c ON c.agent_group_id = g.id WHERE g.id = ?1"
            ),
            &[s(id)],
        )
    }

    fn groups_list(&self) -> Reply {
        list(
            self.conn,
            &self.a,
            &format!("SELECT {GROUP_COLS} FROM agent_groups g LEFT JOIN agent_configs c ON c.agent_group_id = g.id"),
            &[("g.id = ?", self.own.map(s))],
            "g.created_at, g.rowid",
        )
    }

    fn groups_get(&self) -> Reply {
        let id = self.a.id("pinch admin groups get main")?;
        self.readable_group(&id)?;
        self.group_row(&id)?.ok_or_else(|| self.no_group(&id))
    }

    fn groups_create(&self) -> Reply {
        if self.own.is_some() {
            return Err(forbidden(
                "groups-create: admin_scope \"group\" cannot create agent groups",
            ));
        }
        let cmd = self.cmd();
        let name = self
            .a
            .req_str("name", "pinch admin groups create --name Research")?;
        let name = name.trim().to_owned();
        let folder = match self.a.opt_str("folder")?.filter(|f| !f.is_empty()) {
            Some(f) => f,
            None => {
                let f = sanitize_name(&name, 40);
                if f.is_empty() {
                    return Err(invalid(format!(
                        "{cmd}: the name {name:?} gives no usable folder; give one with --folder (lowercase letters, digits, '-'), e.g. --folder research"
                    )));
                }
                f
            }
        };
        check_folder(cmd, &folder)?;
        let id = self
            .a
            .opt_str("id")?
            .filter(|i| !i.is_empty())
            .unwrap_or_else(|| format!("ag-{folder}"));
        check_id(cmd, "group id", &id, "ag-research")?;
        let provider = self.a.opt_str("provider")?.filter(|p| !p.trim().is_empty());
        if self.group_exists(&id)? {
            return Err(invalid(format!(
                "{cmd}: agent group {id:?} already exists (give another --id)"
            )));
        }
        let tx = Nested::begin(self.conn).sql()?;
        let t = now();
        tx.execute(
            "INSERT INTO agent_groups (id, name, folder, provider, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
            rusqlite::params![id, name, folder, provider, t],
        )
        .exists_as(&|| format!("{cmd}: an agent group with folder {folder:?} already exists (give another --folder)"))?;
        tx.execute(
            "INSERT INTO agent_configs (agent_group_id, admin_scope, can_create_agents, updated_at) VALUES (?1, 'disabled', 0, ?2)",
            rusqlite::params![id, t],
        )
        .sql()?;
        tx.commit().sql()?;
        self.group_row(&id)?.ok_or_else(|| self.no_group(&id))
    }

    fn groups_update(&self) -> Reply {
        let cmd = self.cmd();
        let id = self
            .a
            .id("pinch admin groups update ag-research --name Research")?;
        self.writable_group(&id)?;
        let mut ch: Vec<(&str, Sv)> = Vec::new();
        if self.a.has("name") {
            ch.push((
                "name",
                s(self
                    .a
                    .req_str(
                        "name",
                        "pinch admin groups update ag-research --name Research",
                    )?
                    .trim()),
            ));
        }
        if let Some(p) = self.a.nullable_str("provider")? {
            ch.push(("provider", opt(p.as_deref())));
        }
        if ch.is_empty() {
            return Err(invalid(format!("{cmd} needs something to change: --name or --provider (config: `pinch admin groups config-set`)")));
        }
        if !update(self.conn, "agent_groups", "id", &id, &ch)? {
            return Err(self.no_group(&id));
        }
        self.group_row(&id)?.ok_or_else(|| self.no_group(&id))
    }

    fn groups_delete(&self) -> Reply {
        if self.own.is_some() {
            return Err(forbidden(
                "groups-delete: admin_scope \"group\" cannot delete agent groups",
            ));
        }
        let id = self.a.id("pinch admin groups delete ag-research")?;
        if id == "main" {
            return Err(forbidden("groups-delete: the main agent group cannot be deleted (it is the terminal's agent)"));
        }
        let folder: String = self
            .conn
            .query_row(
                "SELECT folder FROM agent_groups WHERE id = ?1",
                [&id],
                |r| r.get(0),
            )
            .optional()
            .sql()?
            .ok_or_else(|| self.no_group(&id))?;
        self.refuse_active_sessions(
            "agent_group_id",
            &id,
            &format!("groups-delete: agent group {id:?}"),
        )?;
        let tx = Nested::begin(self.conn).sql()?;
        // Closed sessions keep their folders on disk; their rows would
        // block the delete (sessions → agent_groups has no cascade).
        tx.execute("DELETE FROM runner_exits WHERE session_id IN (SELECT id FROM sessions WHERE agent_group_id = ?1)", [&id]).sql()?;
        let closed = tx
            .execute("DELETE FROM sessions WHERE agent_group_id = ?1", [&id])
            .sql()?;
        // Other groups' destinations that name this group would dangle.
        let dests = tx
            .execute(
                "DELETE FROM agent_destinations WHERE target_type = 'agent' AND target_id = ?1",
                [&id],
            )
            .sql()?;
        tx.execute("DELETE FROM agent_groups WHERE id = ?1", [&id])
            .sql()?;
        tx.commit().sql()?;
        Ok(json!({
            "deleted": id,
            "closed_sessions_forgotten": closed,
            "destinations_removed": dests,
            "folder_kept": format!("groups/{folder}"),
        }))
    }

    fn config_row(&self, id: &str) -> R<Option<Value>> {
        let row = one(
            self.conn,
            "SELECT agent_group_id AS ag, provider, model, assistant_name, batch_size, mcp_servers, packages, extra_mounts,
                    egress_allow, sandbox, admin_scope, can_create_agents, idle_exit_s, claim_stuck_s, updated_at
             FROM agent_configs WHERE agent_group_id = ?1",
            &[s(id)],
        )?;
        Ok(row.map(|mut r| {
            for c in JSON_COLS {
                if let Some(text) = r[c].as_str() {
                    if let Ok(v) = serde_json::from_str::<Value>(text) {
                        r[c] = v;
                    }
                }
            }
            r
        }))
    }

    fn config_get(&self) -> Reply {
        let id = self.a.id("pinch admin groups config-get main")?;
        self.readable_group(&id)?;
        match self.config_row(&id)? {
            Some(r) => Ok(r),
            None if self.group_exists(&id)? => {
                Ok(json!({"ag": id, "admin_scope": "disabled", "can_create_agents": 0}))
            }
            None => Err(self.no_group(&id)),
        }
    }

    fn config_set(&self) -> Reply {
        let cmd = self.cmd();
        let id = self
            .a
            .id("pinch admin groups config-set ag-research --model claude-sonnet-4-5")?;
        self.writable_group(&id)?;
        if self.own.is_some() {
            for k in ["admin_scope", "can_create_agents"] {
                if self.a.has(k) {
                    return Err(forbidden(format!(
                        "{cmd}: an agent cannot change its own {k}; only the owner can"
                    )));
                }
            }
        }
        let mut ch: Vec<(&str, Sv)> = Vec::new();
        for k in ["provider", "model", "assistant_name"] {
            if let Some(v) = self.a.nullable_str(k)? {
                ch.push((k, opt(v.as_deref())));
            }
        }
        for (k, min, ex) in [
            ("batch_size", 1, 10),
            ("idle_exit_s", 1, 300),
            ("claim_stuck_s", 1, 600),
        ] {
            if let Some(v) = self.a.nullable_int(k, min, ex)? {
                ch.push((k, v.map(Sv::Integer).unwrap_or(Sv::Null)));
            }
        }
        for k in JSON_COLS {
            if !self.a.has(k) {
                continue;
            }
            let v = match self.a.m.get(k) {
                None | Some(Value::Null) => None,
                Some(Value::String(t)) if t.trim().is_empty() => None,
                Some(Value::String(t)) => Some(
                    serde_json::from_str::<Value>(t)
                        .map_err(|e| invalid(format!("{cmd}: --{k} is not valid JSON ({e}); quote it for the shell, e.g. --{k} '[]'")))?,
                ),
                Some(other) => Some(other.clone()),
            };
            match v {
                None => ch.push((k, Sv::Null)),
                Some(v) => {
                    check_config_json(cmd, k, &v)?;
                    ch.push((k, Sv::Text(v.to_string())));
                }
            }
        }
        if let Some(v) = self
            .a
            .opt_choice("admin_scope", &["disabled", "group", "global"])?
        {
            ch.push(("admin_scope", Sv::Text(v)));
        }
        if let Some(b) = self.a.opt_bool("can_create_agents")? {
            ch.push(("can_create_agents", Sv::Integer(b as i64)));
        }
        if ch.is_empty() {
            let keys: Vec<String> = CONFIG_KEYS.iter().map(|k| format!("--{k}")).collect();
            return Err(invalid(format!(
                "{cmd} needs something to set: one of {}",
                keys.join(", ")
            )));
        }
        self.need_group(&id)?;
        ch.push(("updated_at", Sv::Text(now())));
        let tx = Nested::begin(self.conn).sql()?;
        tx.execute(
            "INSERT OR IGNORE INTO agent_configs (agent_group_id, admin_scope, can_create_agents, updated_at) VALUES (?1, 'disabled', 0, ?2)",
            rusqlite::params![id, now()],
        )
        .sql()?;
        update(&tx, "agent_configs", "agent_group_id", &id, &ch)?;
        tx.commit().sql()?;
        self.config_row(&id)?.ok_or_else(|| self.no_group(&id))
    }

    // ---- messaging groups

    fn mg_list(&self) -> Reply {
        list(
            self.conn,
            &self.a,
            &format!("SELECT {MG_COLS} FROM messaging_groups"),
            &[(
                "channel_type = ?",
                self.a.opt_str("channel_type")?.map(Sv::Text),
            )],
            "created_at, rowid",
        )
    }

    fn mg_get(&self) -> Reply {
        let id = self.a.id("pinch admin messaging-groups get mg-cli-local")?;
        self.need_mg(&id)
    }

    fn mg_create(&self) -> Reply {
        let cmd = self.cmd();
        let ex = "pinch admin messaging-groups create --channel_type telegram --platform_id -1001234 --name family";
        let channel = self.a.req_str("channel_type", ex)?;
        if !channel
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
            || channel.len() > 32
        {
            return Err(invalid(format!("{cmd}: --channel_type {channel:?} must be a lowercase channel name such as telegram, cli or slack")));
        }
        let platform_id = self.a.req_str("platform_id", ex)?;
        let name = self
            .a
            .opt_str("name")?
            .map(|n| n.trim().to_owned())
            .filter(|n| !n.is_empty());
        let is_group = self.a.opt_bool("is_group")?.unwrap_or(false);
        let policy = self
            .a
            .opt_choice("unknown_sender_policy", &SENDER_POLICIES)?
            .unwrap_or_else(|| "request_approval".into());
        let id = match self.a.opt_str("id")?.filter(|i| !i.is_empty()) {
            Some(id) => id,
            None => format!("mg-{channel}-{}", pinch_proto::runner_config::random_hex(4)),
        };
        check_id(cmd, "messaging group id", &id, "mg-telegram-family")?;
        if let Some(existing) = self
            .conn
            .query_row(
                "SELECT id FROM messaging_groups WHERE channel_type = ?1 AND platform_id = ?2",
                [&channel, &platform_id],
                |r| r.get::<_, String>(0),
            )
            .optional()
            .sql()?
        {
            return Err(invalid(format!("{cmd}: the {channel} conversation {platform_id:?} already exists as messaging group {existing:?}")));
        }
        self.conn
            .execute(
                "INSERT INTO messaging_groups (id, channel_type, platform_id, name, is_group, unknown_sender_policy, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                rusqlite::params![id, channel, platform_id, name, is_group as i64, policy, now()],
            )
            .exists_as(&|| format!("{cmd}: messaging group {id:?} already exists"))?;
        self.need_mg(&id)
    }

    fn mg_update(&self) -> Reply {
        let cmd = self.cmd();
        let id = self.a.id(
            "pinch admin messaging-groups update mg-cli-local --unknown_sender_policy strict",
        )?;
        let mut ch: Vec<(&str, Sv)> = Vec::new();
        if let Some(n) = self.a.nullable_str("name")? {
            ch.push(("name", opt(n.as_deref().map(str::trim))));
        }
        if let Some(b) = self.a.opt_bool("is_group")? {
            ch.push(("is_group", Sv::Integer(b as i64)));
        }
        if let Some(p) = self
            .a
            .opt_choice("unknown_sender_policy", &SENDER_POLICIES)?
        {
            ch.push(("unknown_sender_policy", Sv::Text(p)));
        }
        if ch.is_empty() {
            return Err(invalid(format!(
                "{cmd} needs something to change: --name, --is_group or --unknown_sender_policy"
            )));
        }
        if !update(self.conn, "messaging_groups", "id", &id, &ch)? {
            return Err(not_found(format!(
                "no messaging group {id:?} (see `pinch admin messaging-groups list`)"
            )));
        }
        self.need_mg(&id)
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

    fn mg_delete(&self) -> Reply {
        let id = self
            .a
            .id("pinch admin messaging-groups delete mg-telegram-1a2b3c4d")?;
        self.need_mg(&id)?;
        self.refuse_active_sessions(
            "messaging_group_id",
            &id,
            &format!("messaging-groups-delete: {id:?}"),
        )?;
        let tx = Nested::begin(self.conn).sql()?;
        // Closed sessions stay (their history is the agent's); they just
        // lose the link (sessions → messaging_groups has no cascade).
        tx.execute(
            "UPDATE sessions SET messaging_group_id = NULL WHERE messaging_group_id = ?1",
            [&id],
        )
        .sql()?;
        let dests = tx
            .execute(
                "DELETE FROM agent_destinations WHERE target_type = 'channel' AND target_id = ?1",
                [&id],
            )
            .sql()?;
        tx.execute("DELETE FROM messaging_groups WHERE id = ?1", [&id])
            .sql()?;
        tx.commit().sql()?;
        Ok(json!({"deleted": id, "destinations_removed": dests}))
    }

    fn mg_deny(&self, deny: bool) -> Reply {
        let id = self.a.id(if deny {
            "pinch admin messaging-groups deny mg-telegram-1a2b3c4d"
        } else {
            "pinch admin messaging-groups undeny mg-telegram-1a2b3c4d"
        })?;
        self.need_mg(&id)?;
        let v = if deny { Sv::Text(now()) } else { Sv::Null };
        if deny {
            // Keep the first denial's time.
            self.conn
                .execute(
                    "UPDATE messaging_groups SET denied_at = coalesce(denied_at, ?2) WHERE id = ?1",
                    rusqlite::params![id, v],
                )
                .sql()?;
        } else {
            self.conn
                .execute(
                    "UPDATE messaging_groups SET denied_at = NULL WHERE id = ?1",
                    [&id],
                )
                .sql()?;
        }
        self.need_mg(&id)
    }

    // ---- wirings

    fn wiring_row(&self, id: &str) -> R<Value> {
        one(
            self.conn,
            &format!("SELECT {WIRING_COLS} FROM wirings WHERE id = ?1"),
            &[s(id)],
        )?
        .ok_or_else(|| not_found(format!("no wiring {id:?} (see `pinch admin wirings list`)")))
    }

    fn wirings_list(&self) -> Reply {
        let mg = self.a.opt_str("mg")?.map(Sv::Text);
        let ag = self.a.opt_str("ag")?.map(Sv::Text);
        list(
            self.conn,
            &self.a,
            &format!("SELECT {WIRING_COLS} FROM wirings"),
            &[("messaging_group_id = ?", mg), ("agent_group_id = ?", ag)],
            "created_at, rowid",
        )
    }

    fn wirings_get(&self) -> Reply {
        let id = self.a.id("pinch admin wirings get w-main-terminal")?;
        self.wiring_row(&id)
    }

    /// The engage pattern compiles (SPEC §3.1: checked on write).
    fn check_pattern(&self, p: &str) -> R<()> {
        regex::Regex::new(p).map(|_| ()).map_err(|e| {
            invalid(format!("{}: --engage_pattern {p:?} is not a valid regex: {e} (use \".\" to engage on every message)", self.cmd()))
        })
    }

    fn wirings_create(&self) -> Reply {
        let cmd = self.cmd();
        let ex = "pinch admin wirings create --mg mg-telegram-1a2b --ag main --engage_mode mention";
        let mg = self.a.req_str("mg", ex)?;
        let ag = self.a.req_str("ag", ex)?;
        let mode = self
            .a
            .opt_choice("engage_mode", &ENGAGE_MODES)?
            .ok_or_else(|| {
                invalid(format!(
                    "{cmd} needs --engage_mode: pattern, mention or mention-sticky (e.g. {ex})"
                ))
            })?;
        let pattern = self.a.opt_str("engage_pattern")?.filter(|p| !p.is_empty());
        if mode == "pattern" && pattern.is_none() {
            return Err(invalid(format!(
                "{cmd}: --engage_mode pattern needs --engage_pattern (a regex; \".\" = every message), e.g. --engage_pattern '^!ask'"
            )));
        }
        if let Some(p) = &pattern {
            self.check_pattern(p)?;
        }
        let scope = self
            .a
            .opt_choice("sender_scope", &SENDER_SCOPES)?
            .unwrap_or_else(|| "known".into());
        let ignored = self
            .a
            .opt_choice("ignored_message_policy", &IGNORED)?
            .unwrap_or_else(|| "drop".into());
        let session_mode = self
            .a
            .opt_choice("session_mode", &SESSION_MODES)?
            .unwrap_or_else(|| "shared".into());
        let priority = self.a.opt_int("priority", 10)?.unwrap_or(0);
        let mg_row = self.need_mg(&mg)?;
        self.need_group(&ag)?;
        let id = match self.a.opt_str("id")?.filter(|i| !i.is_empty()) {
            Some(id) => id,
            None => format!("w-{ag}-{}", pinch_proto::runner_config::random_hex(3)),
        };
        check_id(cmd, "wiring id", &id, "w-main-family")?;
        if let Some(existing) = self
            .conn
            .query_row(
                "SELECT id FROM wirings WHERE messaging_group_id = ?1 AND agent_group_id = ?2",
                [&mg, &ag],
                |r| r.get::<_, String>(0),
            )
            .optional()
            .sql()?
        {
            return Err(invalid(format!("{cmd}: {mg} is already wired to {ag} (wiring {existing:?}; change it with `pinch admin wirings update {existing}`)")));
        }
        // The destination the agent replies through: the conversation's
        // name, else its platform id, made a plain name.
        let base = mg_row["name"]
            .as_str()
            .or(mg_row["platform_id"].as_str())
            .unwrap_or("");
        let mut local = sanitize_name(base, 40);
        if local.is_empty() {
            local = "channel".into();
        }
        let tx = Nested::begin(self.conn).sql()?;
        tx.execute(
            "INSERT INTO wirings (id, messaging_group_id, agent_group_id, engage_mode, engage_pattern, sender_scope,
               ignored_message_policy, session_mode, priority, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            rusqlite::params![id, mg, ag, mode, pattern, scope, ignored, session_mode, priority, now()],
        )
        .exists_as(&|| format!("{cmd}: wiring {id:?} already exists"))?;
        let added = tx
            .execute(
                "INSERT OR IGNORE INTO agent_destinations (agent_group_id, local_name, target_type, target_id, created_at)
                 VALUES (?1, ?2, 'channel', ?3, ?4)",
                rusqlite::params![ag, local, mg, now()],
            )
            .sql()?;
        tx.commit().sql()?;
        let mut row = self.wiring_row(&id)?;
        row["destination_added"] = if added > 0 { json!(local) } else { Value::Null };
        Ok(row)
    }

    fn wirings_update(&self) -> Reply {
        let cmd = self.cmd();
        let id = self
            .a
            .id("pinch admin wirings update w-main-terminal --engage_mode mention")?;
        let current = self.wiring_row(&id)?;
        let mut ch: Vec<(&str, Sv)> = Vec::new();
        let mode = self.a.opt_choice("engage_mode", &ENGAGE_MODES)?;
        let pattern = self.a.nullable_str("engage_pattern")?;
        let final_mode = mode
            .clone()
            .unwrap_or_else(|| current["engage_mode"].as_str().unwrap_or("").to_owned());
        let final_pattern = match &pattern {
            Some(p) => p.clone(),
            None => current["engage_pattern"].as_str().map(str::to_owned),
        };
        if final_mode == "pattern" && final_pattern.is_none() {
            return Err(invalid(format!(
                "{cmd}: engage_mode pattern needs --engage_pattern (a regex; \".\" = every message), e.g. --engage_pattern '^!ask'"
            )));
        }
        if let Some(Some(p)) = &pattern {
            self.check_pattern(p)?;
        }
        if let Some(m) = mode {
            ch.push(("engage_mode", Sv::Text(m)));
        }
        if let Some(p) = pattern {
            ch.push(("engage_pattern", opt(p.as_deref())));
        }
        for (k, choices) in [
            ("sender_scope", &SENDER_SCOPES[..]),
            ("ignored_message_policy", &IGNORED[..]),
            ("session_mode", &SESSION_MODES[..]),
        ] {
            if let Some(v) = self.a.opt_choice(k, choices)? {
                ch.push((k, Sv::Text(v)));
            }
        }
        if let Some(p) = self.a.opt_int("priority", 10)? {
            ch.push(("priority", Sv::Integer(p)));
        }
        if ch.is_empty() {
            return Err(invalid(format!(
                "{cmd} needs something to change: --engage_mode, --engage_pattern, --sender_scope, --ignored_message_policy, --session_mode or --priority"
            )));
        }
        update(self.conn, "wirings", "id", &id, &ch)?;
        self.wiring_row(&id)
    }

    fn wirings_delete(&self) -> Reply {
        let id = self.a.id("pinch admin wirings delete w-main-terminal")?;
        let w = self.wiring_row(&id)?;
        self.conn
            .execute("DELETE FROM wirings WHERE id = ?1", [&id])
            .sql()?;
        // The destination the wiring added is a permission of its own (the
        // agent may still post there); say so rather than guess.
        let kept: Vec<Value> = rows(
            self.conn,
            "SELECT local_name FROM agent_destinations WHERE agent_group_id = ?1 AND target_type = 'channel' AND target_id = ?2 ORDER BY local_name",
            &[s(w["ag"].as_str().unwrap_or("")), s(w["mg"].as_str().unwrap_or(""))],
        )?
        .into_iter()
        .map(|r| r["local_name"].clone())
        .collect();
        let mut out = json!({"deleted": id});
        if !kept.is_empty() {
            out["destinations_kept"] = Value::Array(kept);
            out["hint"] = json!(format!(
                "{} may still post there; remove with `pinch admin destinations remove {} --name <name>`",
                w["ag"].as_str().unwrap_or(""),
                w["ag"].as_str().unwrap_or("")
            ));
        }
        Ok(out)
    }

    // ---- users

    fn user_row(&self, id: &str) -> R<Value> {
        one(
            self.conn,
            "SELECT id, kind, display_name, created_at FROM users WHERE id = ?1",
            &[s(id)],
        )?
        .ok_or_else(|| not_found(format!("no user {id:?} (see `pinch admin users list`)")))
    }

    /// `channel:handle`, both parts non-empty; returns the channel.
    fn user_kind(&self, id: &str, key: &str) -> R<String> {
        match id.split_once(':') {
            Some((k, rest)) if !k.is_empty() && !rest.is_empty() && !id.chars().any(char::is_whitespace) => Ok(k.to_owned()),
            _ => Err(invalid(format!(
                "{}: --{key} {id:?} must be <channel>:<platform user id>, e.g. telegram:123456789 or cli:alice",
                self.cmd()
            ))),
        }
    }

    /// Creates the user row if it does not exist yet.
    fn ensure_user(&self, conn: &Connection, id: &str, key: &str) -> R<()> {
        let kind = self.user_kind(id, key)?;
        conn.execute("INSERT OR IGNORE INTO users (id, kind, display_name, created_at) VALUES (?1, ?2, NULL, ?3)", rusqlite::params![id, kind, now()])
            .sql()?;
        Ok(())
    }

    fn users_list(&self) -> Reply {
        list(
            self.conn,
            &self.a,
            "SELECT id, kind, display_name, created_at FROM users",
            &[("kind = ?", self.a.opt_str("kind")?.map(Sv::Text))],
            "created_at, rowid",
        )
    }

    fn users_get(&self) -> Reply {
        let id = self.a.id("pinch admin users get telegram:123456789")?;
        let mut u = self.user_row(&id)?;
        u["roles"] = Value::Array(rows(
            self.conn,
            "SELECT role, agent_group_id AS ag FROM user_roles WHERE user_id = ?1 ORDER BY role, ag",
            &[s(&id)],
        )?);
        u["member_of"] = Value::Array(
            rows(self.conn, "SELECT agent_group_id AS ag FROM agent_group_members WHERE user_id = ?1 ORDER BY ag", &[s(&id)])?
                .into_iter()
                .map(|r| r["ag"].clone())
                .collect(),
        );
        Ok(u)
    }

    fn users_create(&self) -> Reply {
        let cmd = self.cmd();
        let id = self
            .a
            .id("pinch admin users create telegram:123456789 --display_name Bob")?;
        let prefix = self.user_kind(&id, "id")?;
        let kind = self
            .a
            .opt_str("kind")?
            .filter(|k| !k.trim().is_empty())
            .unwrap_or(prefix);
        let name = self
            .a
            .opt_str("display_name")?
            .map(|n| n.trim().to_owned())
            .filter(|n| !n.is_empty());
        self.conn
            .execute(
                "INSERT INTO users (id, kind, display_name, created_at) VALUES (?1, ?2, ?3, ?4)",
                rusqlite::params![id, kind, name, now()],
            )
            .exists_as(&|| format!("{cmd}: user {id:?} already exists"))?;
        self.user_row(&id)
    }

    fn users_update(&self) -> Reply {
        let cmd = self.cmd();
        let id = self
            .a
            .id("pinch admin users update telegram:123456789 --display_name Bob")?;
        let mut ch: Vec<(&str, Sv)> = Vec::new();
        if self.a.has("kind") {
            ch.push(("kind", s(self.a.req_str("kind", "--kind telegram")?.trim())));
        }
        if let Some(n) = self.a.nullable_str("display_name")? {
            ch.push(("display_name", opt(n.as_deref().map(str::trim))));
        }
        if ch.is_empty() {
            return Err(invalid(format!(
                "{cmd} needs something to change: --display_name or --kind"
            )));
        }
        if !update(self.conn, "users", "id", &id, &ch)? {
            return Err(not_found(format!(
                "no user {id:?} (see `pinch admin users list`)"
            )));
        }
        self.user_row(&id)
    }

    fn owners(&self) -> R<i64> {
        count(
            self.conn,
            "SELECT count(*) FROM user_roles WHERE role = 'owner'",
            &[],
        )
    }

    fn users_delete(&self) -> Reply {
        let id = self.a.id("pinch admin users delete telegram:123456789")?;
        self.user_row(&id)?;
        let owner = exists(
            self.conn,
            "SELECT 1 FROM user_roles WHERE user_id = ?1 AND role = 'owner'",
            &[s(&id)],
        )?;
        if owner && self.owners()? <= 1 {
            return Err(forbidden(format!(
                "users-delete: {id} is the last owner; grant another owner first (`pinch admin roles grant --user <id> --role owner`)"
            )));
        }
        // Roles and memberships cascade.
        self.conn
            .execute("DELETE FROM users WHERE id = ?1", [&id])
            .sql()?;
        Ok(json!({"deleted": id}))
    }

    // ---- roles

    fn roles_list(&self) -> Reply {
        list(
            self.conn,
            &self.a,
            "SELECT user_id AS user, role, agent_group_id AS ag, granted_by, granted_at FROM user_roles",
            &[
                ("user_id = ?", self.a.opt_str("user")?.map(Sv::Text)),
                ("role = ?", self.a.opt_choice("role", &["owner", "admin"])?.map(Sv::Text)),
                ("agent_group_id = ?", self.a.opt_str("ag")?.map(Sv::Text)),
            ],
            "role DESC, user_id, agent_group_id",
        )
    }

    /// (user, role, ag) of grant/revoke, validated.
    fn role_args(&self, verb: &str) -> R<(String, String, Option<String>)> {
        let cmd = self.cmd();
        let ex =
            format!("pinch admin roles {verb} --user telegram:123456789 --role admin --ag main");
        let user = self.a.req_str("user", &ex)?;
        self.user_kind(&user, "user")?;
        let role = self
            .a
            .opt_choice("role", &["owner", "admin"])?
            .ok_or_else(|| invalid(format!("{cmd} needs --role: owner or admin (e.g. {ex})")))?;
        let ag = self.a.opt_str("ag")?.filter(|a| !a.trim().is_empty());
        if role == "owner" && ag.is_some() {
            return Err(invalid(format!(
                "{cmd}: owner is always global; drop --ag (or use --role admin --ag <group>)"
            )));
        }
        Ok((user, role, ag))
    }

    fn roles_grant(&self) -> Reply {
        let cmd = self.cmd();
        let (user, role, ag) = self.role_args("grant")?;
        if let Some(ag) = &ag {
            self.need_group(ag)?;
        }
        let tx = Nested::begin(self.conn).sql()?;
        self.ensure_user(&tx, &user, "user")?;
        let t = now();
        tx.execute(
            "INSERT INTO user_roles (user_id, role, agent_group_id, granted_by, granted_at) VALUES (?1, ?2, ?3, ?4, ?5)",
            rusqlite::params![user, role, ag, self.caller.label(), t],
        )
        .exists_as(&|| match &ag {
            Some(ag) => format!("{cmd}: the role {role} of {ag} for {user} already exists"),
            None => format!("{cmd}: the role global {role} for {user} already exists"),
        })?;
        // An agent group's admin is also its member (SPEC §3.1).
        if let Some(ag) = &ag {
            tx.execute(
                "INSERT OR IGNORE INTO agent_group_members (user_id, agent_group_id, added_by, added_at) VALUES (?1, ?2, ?3, ?4)",
                rusqlite::params![user, ag, self.caller.label(), t],
            )
            .sql()?;
        }
        tx.commit().sql()?;
        Ok(json!({"user": user, "role": role, "ag": ag, "granted_by": self.caller.label()}))
    }

    fn roles_revoke(&self) -> Reply {
        let cmd = self.cmd();
        let (user, role, ag) = self.role_args("revoke")?;
        if role == "owner" {
            let is_owner = exists(
                self.conn,
                "SELECT 1 FROM user_roles WHERE user_id = ?1 AND role = 'owner'",
                &[s(&user)],
            )?;
            if is_owner && self.owners()? <= 1 {
                return Err(forbidden(format!(
                    "{cmd}: {user} is the last owner; grant another owner first (`pinch admin roles grant --user <id> --role owner`)"
                )));
            }
        }
        let n = self
            .conn
            .execute(
                "DELETE FROM user_roles WHERE user_id = ?1 AND role = ?2 AND coalesce(agent_group_id, '') = coalesce(?3, '')",
                rusqlite::params![user, role, ag],
            )
            .sql()?;
        if n == 0 {
            let what = match &ag {
                Some(ag) => format!("{role} of {ag}"),
                None => format!("global {role}"),
            };
            return Err(not_found(format!(
                "{cmd}: {user} is not {what} (see `pinch admin roles list --user {user}`)"
            )));
        }
        Ok(json!({"user": user, "role": role, "ag": ag, "revoked": true}))
    }

    // ---- members

    fn members_list(&self) -> Reply {
        let ag = self.ag_arg(false, "")?;
        list(
            self.conn,
            &self.a,
            "SELECT user_id AS user, agent_group_id AS ag, added_by, added_at FROM agent_group_members",
            &[("agent_group_id = ?", ag.map(Sv::Text))],
            "agent_group_id, user_id",
        )
    }

    fn members_args(&self, verb: &str) -> R<(String, String)> {
        let ex = format!("pinch admin members {verb} --user telegram:123456789 --ag main");
        let ag = self.ag_arg(true, &ex)?.unwrap_or_default();
        let user = self.a.req_str("user", &ex)?;
        self.user_kind(&user, "user")?;
        Ok((user, ag))
    }

    fn members_add(&self) -> Reply {
        let cmd = self.cmd();
        let (user, ag) = self.members_args("add")?;
        self.need_group(&ag)?;
        let tx = Nested::begin(self.conn).sql()?;
        self.ensure_user(&tx, &user, "user")?;
        tx.execute(
            "INSERT INTO agent_group_members (user_id, agent_group_id, added_by, added_at) VALUES (?1, ?2, ?3, ?4)",
            rusqlite::params![user, ag, self.caller.label(), now()],
        )
        .exists_as(&|| format!("{cmd}: the membership of {user} in {ag} already exists"))?;
        tx.commit().sql()?;
        Ok(json!({"user": user, "ag": ag, "added_by": self.caller.label()}))
    }

    fn members_remove(&self) -> Reply {
        let cmd = self.cmd();
        let (user, ag) = self.members_args("remove")?;
        let n = self
            .conn
            .execute(
                "DELETE FROM agent_group_members WHERE user_id = ?1 AND agent_group_id = ?2",
                rusqlite::params![user, ag],
            )
            .sql()?;
        if n == 0 {
            return Err(not_found(format!(
                "{cmd}: {user} is not a member of {ag} (see `pinch admin members list {ag}`)"
            )));
        }
        let mut out = json!({"user": user, "ag": ag, "removed": true});
        // An admin role still grants access; say so.
        if exists(self.conn, "SELECT 1 FROM user_roles WHERE user_id = ?1 AND (agent_group_id = ?2 OR agent_group_id IS NULL)", &[s(&user), s(&ag)])? {
            out["note"] = json!(format!("{user} still has access to {ag} through a role (see `pinch admin roles list --user {user}`)"));
        }
        Ok(out)
    }

    // ---- destinations

    fn destinations_list(&self) -> Reply {
        let ag = self.ag_arg(false, "")?;
        list(
            self.conn,
            &self.a,
            "SELECT agent_group_id AS ag, local_name AS name, target_type, target_id AS target, created_at FROM agent_destinations",
            &[("agent_group_id = ?", ag.map(Sv::Text))],
            "agent_group_id, local_name",
        )
    }

    fn destinations_add(&self) -> Reply {
        let cmd = self.cmd();
        let ex = "pinch admin destinations add main --name family --target_type channel --target mg-telegram-1a2b3c4d";
        let ag = self.ag_arg(true, ex)?.unwrap_or_default();
        let name = self.a.req_str("name", ex)?;
        let ok = (1..=64).contains(&name.len())
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
        if !ok {
            return Err(invalid(format!("{cmd}: --name {name:?} must be 1 to 64 letters, digits, '_', '-' or '.', e.g. --name family")));
        }
        let kind = self
            .a
            .opt_choice("target_type", &["channel", "agent"])?
            .ok_or_else(|| {
                invalid(format!(
                    "{cmd} needs --target_type: channel or agent (e.g. {ex})"
                ))
            })?;
        let target = self.a.req_str("target", ex)?;
        self.need_group(&ag)?;
        if kind == "channel" {
            self.need_mg(&target)?;
        } else if !self.group_exists(&target)? {
            return Err(self.no_group(&target));
        }
        self.conn
            .execute(
                "INSERT INTO agent_destinations (agent_group_id, local_name, target_type, target_id, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                rusqlite::params![ag, name, kind, target, now()],
            )
            .exists_as(&|| format!("{cmd}: destination {name:?} of {ag} already exists"))?;
        Ok(json!({"ag": ag, "name": name, "target_type": kind, "target": target}))
    }

    fn destinations_remove(&self) -> Reply {
        let cmd = self.cmd();
        let ex = "pinch admin destinations remove main --name family";
        let ag = self.ag_arg(true, ex)?.unwrap_or_default();
        let name = self.a.req_str("name", ex)?;
        let n = self
            .conn
            .execute(
                "DELETE FROM agent_destinations WHERE agent_group_id = ?1 AND local_name = ?2",
                rusqlite::params![ag, name],
            )
            .sql()?;
        if n == 0 {
            return Err(not_found(format!("{cmd}: {ag} has no destination {name:?} (see `pinch admin destinations list {ag}`)")));
        }
        Ok(json!({"ag": ag, "name": name, "removed": true}))
    }

    // ---- approvals, user DMs, drops

    fn approvals_list(&self) -> Reply {
        let status = self
            .a
            .opt_choice("status", &["pending", "approved", "rejected", "expired"])?;
        list(
            self.conn,
            &self.a,
            "SELECT approval_id AS id, agent_group_id AS ag, session_id, action, title, approver_user_id AS approver, status,
                    decided_by, decided_at, expires_at, created_at FROM pending_approvals",
            &[("status = ?", status.map(Sv::Text))],
            "created_at DESC, approval_id",
        )
    }

    fn approvals_get(&self) -> Reply {
        let id = self.a.id("pinch admin approvals get a1b2c3")?;
        let mut row = one(
            self.conn,
            "SELECT approval_id AS id, session_id, agent_group_id AS ag, request_id, action, payload, title, options_json,
                    approver_user_id AS approver, channel_type, platform_id, thread_id, platform_message_id, status,
                    decided_by, decided_at, result, expires_at, created_at
             FROM pending_approvals WHERE approval_id = ?1",
            &[s(&id)],
        )?
        .ok_or_else(|| not_found(format!("no approval {id:?} (see `pinch admin approvals list`)")))?;
        for c in ["payload", "options_json"] {
            if let Some(v) = row[c]
                .as_str()
                .and_then(|t| serde_json::from_str::<Value>(t).ok())
            {
                row[c] = v;
            }
        }
        Ok(row)
    }

    fn user_dms_list(&self) -> Reply {
        list(
            self.conn,
            &self.a,
            "SELECT user_id AS user, channel_type, messaging_group_id AS mg, resolved_at FROM user_dms",
            &[("user_id = ?", self.a.opt_str("user")?.map(Sv::Text))],
            "user_id, channel_type",
        )
    }

    fn dropped_list(&self) -> Reply {
        list(
            self.conn,
            &self.a,
            "SELECT channel_type, platform_id, user_id AS user, sender_name, reason, messaging_group_id AS mg,
                    agent_group_id AS ag, message_count, first_seen, last_seen FROM dropped_messages",
            &[("reason = ?", self.a.opt_str("reason")?.map(Sv::Text))],
            "last_seen DESC, channel_type, platform_id",
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::central::Central;

    fn db() -> (tempfile::TempDir, Central) {
        let d = tempfile::tempdir().unwrap();
        let mut c = Central::open(&d.path().join("pinch.db")).unwrap();
        c.bootstrap("alice").unwrap();
        (d, c)
    }

    fn call(c: &Central, caller: &Caller, cmd: &str, args: Value) -> Reply {
        dispatch(&c.conn, caller, cmd, &args).unwrap_or_else(|| panic!("{cmd} is not served here"))
    }

    fn ok(c: &Central, cmd: &str, args: Value) -> Value {
        call(c, &Caller::Owner, cmd, args)
            .unwrap_or_else(|e| panic!("{cmd}: {}: {}", e.code, e.message))
    }

    fn fails(c: &Central, caller: &Caller, cmd: &str, args: Value) -> ErrorBody {
        match call(c, caller, cmd, args) {
            Ok(v) => panic!("{cmd} should fail, gave {v}"),
            Err(e) => e,
        }
    }

    fn agent(ag: &str, scope: AdminScope) -> Caller {
        Caller::Agent {
            ag: ag.into(),
            scope,
        }
    }

    fn ids(v: &Value, key: &str) -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|r| r[key].as_str().unwrap().to_owned())
            .collect()
    }

    /// main (bootstrap), plus ag-research with a member, a destination, a
    /// messaging group and a wiring.
    fn fixture() -> (tempfile::TempDir, Central) {
        let (d, c) = db();
        ok(&c, "groups-create", json!({"name": "Research"}));
        ok(
            &c,
            "messaging-groups-create",
            json!({"id": "mg-tg-fam", "channel_type": "telegram", "platform_id": "-100", "name": "Family"}),
        );
        ok(
            &c,
            "wirings-create",
            json!({"mg": "mg-tg-fam", "ag": "ag-research", "engage_mode": "mention"}),
        );
        ok(
            &c,
            "members-add",
            json!({"user": "telegram:7", "ag": "ag-research"}),
        );
        ok(
            &c,
            "members-add",
            json!({"user": "telegram:8", "ag": "main"}),
        );
        (d, c)
    }

    #[test]
    fn a_groups_disk_quota_must_be_a_positive_whole_number() {
        let (_d, c) = db();
        for bad in [
            json!({"disk_mb": 0}),
            json!({"disk_mb": "lots"}),
            json!({"disk_mb": -1}),
        ] {
            let e = dispatch(
                &c.conn,
                &Caller::Owner,
                "groups-config-set",
                &json!({"id": "main", "sandbox": bad}),
            )
            .unwrap()
            .unwrap_err();
            assert!(
                e.message
                    .contains("disk_mb is a whole number of MiB, at least 1"),
                "{bad}: {}",
                e.message
            );
        }
        assert!(dispatch(
            &c.conn,
            &Caller::Owner,
            "groups-config-set",
            &json!({"id": "main", "sandbox": {"disk_mb": 1}}),
        )
        .unwrap()
        .is_ok());
    }

    #[test]
    fn the_main_loops_commands_refuse_unknown_keys_and_bad_pages() {
        let e = |cmd: &str, args: Value| loop_args(cmd, &args).unwrap().unwrap_err().message;
        for (cmd, args, says) in [
            (
                "sessions-list",
                json!({"limit": "abc"}),
                "sessions-list: --limit must be a whole number",
            ),
            (
                "sessions-list",
                json!({"limit": "-5"}),
                "sessions-list: --limit must be between 1 and 200",
            ),
            (
                "sessions-list",
                json!({"offset": "-1"}),
                "--offset must be 0 or more",
            ),
            (
                "sessions-list",
                json!({"bogus": "1"}),
                "sessions-list: unknown argument --bogus; accepted: --limit, --offset",
            ),
            (
                "tasks-list",
                json!({"limit": "0"}),
                "tasks-list: --limit must be between 1 and 200",
            ),
            (
                "host-status",
                json!({"x": "1"}),
                "host-status: unknown argument --x; accepted: none besides the id",
            ),
            (
                "sessions-stop",
                json!({"id": "s", "force": "yes"}),
                "unknown argument --force",
            ),
            (
                "approvals-reject",
                json!({"id": "a", "value": "x"}),
                "unknown argument --value",
            ),
        ] {
            let m = e(cmd, args.clone());
            assert!(m.contains(says), "{cmd} {args}: {m}");
        }
        let (args, page) = loop_args(
            "tasks-list",
            &json!({"agent_group": "main", "limit": "2", "offset": "1"}),
        )
        .unwrap()
        .unwrap();
        assert_eq!(args["ag"], "main", "aliases are folded");
        let page = page.unwrap();
        assert_eq!(
            page,
            Page {
                limit: 2,
                offset: 1
            }
        );
        assert_eq!(page.apply(json!([1, 2, 3, 4])), json!([2, 3]));
        let (_, page) = loop_args("sessions-list", &json!({})).unwrap().unwrap();
        assert_eq!(
            page,
            Some(Page {
                limit: PAGE,
                offset: 0
            })
        );
        assert!(
            loop_args("groups-list", &json!({})).is_none(),
            "this module's own"
        );
    }

    #[test]
    fn only_this_modules_commands_are_dispatched() {
        let (_d, c) = db();
        for cmd in [
            "sessions-list",
            "sessions-close",
            "host-status",
            "tasks-list",
            "approvals-approve",
            "groups-restart",
            "nonsense",
        ] {
            assert!(
                dispatch(&c.conn, &Caller::Owner, cmd, &json!({})).is_none(),
                "{cmd}"
            );
        }
        for spec in LOOP_COMMANDS {
            assert!(
                dispatch(&c.conn, &Caller::Owner, spec.name, &json!({})).is_none(),
                "{} is the main loop's",
                spec.name
            );
        }
        // every command in the table has a handler
        for spec in COMMANDS {
            let r = dispatch(&c.conn, &Caller::Owner, spec.name, &json!({})).unwrap();
            if let Err(e) = r {
                assert_ne!(e.code, "unknown-command", "{} has no handler", spec.name);
            }
        }
        let set = COMMANDS
            .iter()
            .find(|c| c.name == "groups-config-set")
            .unwrap();
        assert_eq!(set.keys[0], "id");
        assert_eq!(
            &set.keys[1..],
            CONFIG_KEYS,
            "config-set accepts exactly the config columns"
        );
        let (r, v) = split("messaging-groups-deny");
        assert_eq!((r, v), ("messaging-groups", "deny"));
        assert_eq!(split("groups-config-set"), ("groups", "config-set"));
        assert_eq!(split("dropped-messages-list"), ("dropped-messages", "list"));
    }

    /// (caller, command, args, Ok(()) or Err(code)).
    #[test]
    fn scope_rules() {
        let (_d, c) = fixture();
        let owner = Caller::Owner;
        let off = agent("ag-research", AdminScope::Disabled);
        let grp = agent("ag-research", AdminScope::Group);
        let glob = agent("ag-research", AdminScope::Global);
        let cases: Vec<(&Caller, &str, Value, Result<(), &str>)> = vec![
            (&off, "groups-list", json!({}), Err("permission-denied")),
            (
                &off,
                "groups-get",
                json!({"id": "ag-research"}),
                Err("permission-denied"),
            ),
            (&off, "members-list", json!({}), Err("permission-denied")),
            (&off, "users-list", json!({}), Err("permission-denied")),
            (&grp, "groups-get", json!({"id": "ag-research"}), Ok(())),
            (
                &grp,
                "groups-config-get",
                json!({"id": "ag-research"}),
                Ok(()),
            ),
            (&grp, "groups-get", json!({"id": "main"}), Err("not-found")),
            (
                &grp,
                "groups-config-get",
                json!({"id": "main"}),
                Err("not-found"),
            ),
            (&grp, "groups-get", json!({"id": "nope"}), Err("not-found")),
            (
                &grp,
                "groups-update",
                json!({"id": "main", "name": "x"}),
                Err("forbidden"),
            ),
            (
                &grp,
                "groups-update",
                json!({"id": "ag-research", "name": "Research 2"}),
                Ok(()),
            ),
            (
                &grp,
                "groups-config-set",
                json!({"id": "ag-research", "model": "m1"}),
                Ok(()),
            ),
            (
                &grp,
                "groups-config-set",
                json!({"id": "main", "model": "m1"}),
                Err("forbidden"),
            ),
            (
                &grp,
                "groups-config-set",
                json!({"id": "ag-research", "admin_scope": "global"}),
                Err("forbidden"),
            ),
            (
                &grp,
                "groups-config-set",
                json!({"id": "ag-research", "can_create_agents": "true"}),
                Err("forbidden"),
            ),
            (
                &grp,
                "groups-create",
                json!({"name": "Other"}),
                Err("forbidden"),
            ),
            (
                &grp,
                "groups-delete",
                json!({"id": "ag-research"}),
                Err("forbidden"),
            ),
            (&grp, "wirings-list", json!({}), Err("forbidden")),
            (
                &grp,
                "messaging-groups-get",
                json!({"id": "mg-tg-fam"}),
                Err("forbidden"),
            ),
            (&grp, "users-list", json!({}), Err("forbidden")),
            (
                &grp,
                "roles-grant",
                json!({"user": "telegram:7", "role": "owner"}),
                Err("forbidden"),
            ),
            (&grp, "approvals-list", json!({}), Err("forbidden")),
            (&grp, "dropped-messages-list", json!({}), Err("forbidden")),
            (
                &grp,
                "destinations-list",
                json!({"ag": "main"}),
                Err("forbidden"),
            ),
            (
                &grp,
                "destinations-add",
                json!({"ag": "main", "name": "x", "target_type": "channel", "target": "mg-cli-local"}),
                Err("forbidden"),
            ),
            (
                &grp,
                "destinations-remove",
                json!({"ag": "main", "name": "terminal"}),
                Err("forbidden"),
            ),
            (
                &grp,
                "members-list",
                json!({"ag": "main"}),
                Err("forbidden"),
            ),
            (
                &grp,
                "members-add",
                json!({"ag": "main", "user": "telegram:9"}),
                Err("forbidden"),
            ),
            (&grp, "members-add", json!({"user": "telegram:9"}), Ok(())),
            (
                &grp,
                "destinations-add",
                json!({"name": "notes", "target_type": "agent", "target": "main"}),
                Ok(()),
            ),
            (&glob, "users-list", json!({}), Ok(())),
            (&glob, "groups-get", json!({"id": "main"}), Ok(())),
            (
                &glob,
                "groups-config-set",
                json!({"id": "ag-research", "can_create_agents": "1"}),
                Ok(()),
            ),
            (
                &owner,
                "groups-config-set",
                json!({"id": "ag-research", "admin_scope": "group"}),
                Ok(()),
            ),
            (&owner, "wirings-list", json!({}), Ok(())),
        ];
        for (caller, cmd, args, want) in cases {
            let got = call(&c, caller, cmd, args.clone());
            match (&got, want) {
                (Ok(_), Ok(())) => {}
                (Err(e), Err(code)) if e.code == code => {}
                _ => panic!(
                    "{caller:?} {cmd} {args}: want {want:?}, got {:?}",
                    got.map_err(|e| (e.code, e.message))
                ),
            }
        }
        // disabled: the message says how to enable it
        let e = fails(&c, &off, "groups-list", json!({}));
        assert!(
            e.message
                .contains("pinch admin groups config-set ag-research --admin_scope group"),
            "{}",
            e.message
        );
        // no existence oracle: a foreign group and a missing one read alike
        let foreign = fails(&c, &grp, "groups-get", json!({"id": "main"})).message;
        let missing = fails(&c, &grp, "groups-get", json!({"id": "zzzz"})).message;
        assert_eq!(foreign.replace("main", "X"), missing.replace("zzzz", "X"));
        // lists are filtered to its own group
        assert_eq!(
            ids(&call(&c, &grp, "groups-list", json!({})).unwrap(), "id"),
            ["ag-research"]
        );
        let members = call(&c, &grp, "members-list", json!({})).unwrap();
        assert!(
            ids(&members, "ag").iter().all(|a| a == "ag-research"),
            "{members}"
        );
        assert!(ids(&members, "user").contains(&"telegram:7".to_owned()));
        assert!(
            !ids(&members, "user").contains(&"telegram:8".to_owned()),
            "main's member leaked: {members}"
        );
        let dests = call(&c, &grp, "destinations-list", json!({})).unwrap();
        assert!(
            ids(&dests, "ag").iter().all(|a| a == "ag-research"),
            "{dests}"
        );
        assert!(ids(&dests, "name").contains(&"notes".to_owned()));
        // the owner sees everything
        assert_eq!(
            ids(&ok(&c, "groups-list", json!({})), "id"),
            ["main", "ag-research"]
        );
        assert!(ids(&ok(&c, "members-list", json!({})), "user").contains(&"telegram:8".to_owned()));
        // the scope refusal left nothing behind
        assert_eq!(
            ok(&c, "groups-config-get", json!({"id": "ag-research"}))["admin_scope"],
            "group"
        );
        assert_eq!(ok(&c, "groups-get", json!({"id": "main"}))["name"], "main");
    }

    #[test]
    fn gates_of_agent_commands() {
        use Gate::*;
        for scope in [AdminScope::Group, AdminScope::Global] {
            let a = agent("ag-x", scope);
            let cases: Vec<(&str, Value, Gate)> = vec![
                // reads
                ("groups-list", json!({}), Now),
                ("groups-get", json!({"id": "main"}), Now),
                ("groups-config-get", json!({"id": "ag-x"}), Now),
                ("users-list", json!({}), Now),
                ("roles-list", json!({}), Now),
                ("approvals-get", json!({"id": "x"}), Now),
                // its own group, plain
                ("groups-update", json!({"id": "ag-x", "name": "X"}), Now),
                ("destinations-remove", json!({"name": "notes"}), Now),
                (
                    "destinations-remove",
                    json!({"ag": "ag-x", "name": "notes"}),
                    Now,
                ),
                // its own group, access: the group's admins decide
                ("members-add", json!({"user": "t:1"}), Approval),
                (
                    "members-remove",
                    json!({"user": "t:1", "ag": "ag-x"}),
                    Approval,
                ),
                (
                    "destinations-add",
                    json!({"name": "n", "target_type": "agent", "target": "main"}),
                    Approval,
                ),
                (
                    "groups-config-set",
                    json!({"id": "ag-x", "model": "m"}),
                    Approval,
                ),
                // beyond its group, or a security boundary: owners decide
                (
                    "groups-update",
                    json!({"id": "main", "name": "pwned"}),
                    Owner,
                ),
                ("groups-update", json!({"id": 42, "name": "pwned"}), Owner),
                (
                    "groups-update",
                    json!({"id": "ag-x ", "name": "pwned"}),
                    Owner,
                ),
                ("members-add", json!({"user": "t:1", "ag": 7}), Owner),
                (
                    "groups-config-set",
                    json!({"id": "main", "model": "m"}),
                    Owner,
                ),
                (
                    "groups-config-set",
                    json!({"id": "ag-x", "egress_allow": ["evil.example"]}),
                    Owner,
                ),
                (
                    "groups-config-set",
                    json!({"id": "ag-x", "model": "m", "extra_mounts": "[]"}),
                    Owner,
                ),
                (
                    "groups-config-set",
                    json!({"id": "ag-x", "sandbox": {"disk_mb": 1}}),
                    Owner,
                ),
                (
                    "groups-config-set",
                    json!({"id": "ag-x", "admin_scope": "global"}),
                    Owner,
                ),
                (
                    "groups-config-set",
                    json!({"id": "ag-x", "can_create_agents": true}),
                    Owner,
                ),
                ("groups-create", json!({"name": "Other"}), Owner),
                ("groups-delete", json!({"id": "ag-x"}), Owner),
                (
                    "users-update",
                    json!({"id": "cli:alice", "display_name": "mallory"}),
                    Owner,
                ),
                ("users-create", json!({"id": "t:2", "kind": "t"}), Owner),
                ("users-delete", json!({"id": "t:2"}), Owner),
                (
                    "roles-grant",
                    json!({"user": "t:1", "role": "owner"}),
                    Owner,
                ),
                (
                    "roles-revoke",
                    json!({"user": "t:1", "role": "owner"}),
                    Owner,
                ),
                ("wirings-create", json!({"mg": "m", "ag": "ag-x"}), Owner),
                ("wirings-delete", json!({"id": "w"}), Owner),
                ("messaging-groups-deny", json!({"id": "m"}), Owner),
                ("members-add", json!({"user": "t:1", "ag": "main"}), Owner),
                (
                    "members-add",
                    json!({"user": "t:1", "agent_group_id": "main"}),
                    Owner,
                ),
                (
                    "destinations-remove",
                    json!({"ag": "main", "name": "terminal"}),
                    Owner,
                ),
                // invalid arguments are answered at once (by the handler)
                ("groups-update", json!({"id": "main", "bogus": 1}), Now),
                // not this module's
                ("sessions-close", json!({"id": "s"}), Now),
            ];
            for (cmd, args, want) in cases {
                assert_eq!(gate(&a, cmd, &args), want, "{scope:?} {cmd} {args}");
                assert_eq!(gate(&Caller::Owner, cmd, &args), Now, "owner {cmd}");
            }
        }
    }

    #[test]
    fn groups_create_validates_and_defaults() {
        let (_d, c) = db();
        let g = ok(&c, "groups-create", json!({"name": "My Research!! Lab"}));
        assert_eq!(g["id"], "ag-my-research-lab");
        assert_eq!(g["folder"], "my-research-lab");
        assert_eq!(g["admin_scope"], "disabled");
        assert_eq!(g["can_create_agents"], 0);
        let long = "x".repeat(60);
        assert_eq!(
            ok(&c, "groups-create", json!({"name": long}))["folder"]
                .as_str()
                .unwrap()
                .len(),
            40
        );

        let cases: Vec<(Value, &str, &str)> = vec![
            (json!({}), "invalid-args", "--name"),
            (json!({"name": "  "}), "invalid-args", "--name"),
            (json!({"name": "Global"}), "invalid-args", "reserved"),
            (
                json!({"name": "x", "folder": "global"}),
                "invalid-args",
                "reserved",
            ),
            (
                json!({"name": "x", "folder": ".."}),
                "invalid-args",
                "plain folder",
            ),
            (
                json!({"name": "x", "folder": "a/b"}),
                "invalid-args",
                "plain folder",
            ),
            (
                json!({"name": "x", "folder": "Bad Folder"}),
                "invalid-args",
                "--folder research",
            ),
            (
                json!({"name": "x", "folder": "y".repeat(41)}),
                "invalid-args",
                "1 to 40",
            ),
            (json!({"name": "!!!"}), "invalid-args", "--folder"),
            (json!({"name": "Main"}), "invalid-args", "already exists"),
            (
                json!({"name": "x", "folder": "main", "id": "ag-other"}),
                "invalid-args",
                "folder \"main\" already exists",
            ),
            (
                json!({"name": "x", "id": "../evil"}),
                "invalid-args",
                "group id",
            ),
            (
                json!({"name": "x", "colour": "red"}),
                "invalid-args",
                "unknown argument --colour",
            ),
            (json!("not an object"), "invalid-args", "JSON object"),
        ];
        for (args, code, needle) in cases {
            let e = fails(&c, &Caller::Owner, "groups-create", args.clone());
            assert_eq!(e.code, code, "{args}: {}", e.message);
            assert!(
                e.message.contains(needle),
                "{args}: {:?} lacks {needle:?}",
                e.message
            );
        }
        // "Main" → folder main exists: the id ag-main is free, the folder not
        let n: i64 = c
            .conn
            .query_row("SELECT count(*) FROM agent_groups", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 3, "failed creates left no rows");
        let n: i64 = c
            .conn
            .query_row("SELECT count(*) FROM agent_configs", [], |r| r.get(0))
            .unwrap();
        assert_eq!(
            n, 3,
            "every group has its config row, and a failed create left none"
        );
    }

    #[test]
    fn config_set_validates_types_and_json() {
        let (_d, c) = db();
        ok(&c, "groups-create", json!({"name": "r"}));
        let cfg = ok(
            &c,
            "groups-config-set",
            json!({"id": "ag-r", "batch_size": "5", "can_create_agents": "true", "egress_allow": "[\"api.github.com\"]", "sandbox": {"memory_mb": 512}, "model": "m"}),
        );
        assert_eq!(cfg["batch_size"], 5);
        assert_eq!(cfg["can_create_agents"], 1);
        assert_eq!(cfg["egress_allow"], json!(["api.github.com"]));
        assert_eq!(cfg["sandbox"], json!({"memory_mb": 512}));
        assert_eq!(
            c.egress_allow("ag-r").unwrap(),
            vec!["api.github.com".to_owned()]
        );
        let cfg = ok(
            &c,
            "groups-config-set",
            json!({"id": "ag-r", "can_create_agents": "0", "model": "", "batch_size": null}),
        );
        assert_eq!(cfg["can_create_agents"], 0);
        assert_eq!(cfg["model"], Value::Null);
        assert_eq!(cfg["batch_size"], Value::Null);
        let cases: Vec<(Value, &str, &str)> = vec![
            (
                json!({"id": "ag-r"}),
                "invalid-args",
                "needs something to set",
            ),
            (
                json!({"id": "ag-r", "batch_size": "lots"}),
                "invalid-args",
                "--batch_size must be a whole number",
            ),
            (
                json!({"id": "ag-r", "batch_size": "0"}),
                "invalid-args",
                "at least 1",
            ),
            (
                json!({"id": "ag-r", "can_create_agents": "maybe"}),
                "invalid-args",
                "true or false",
            ),
            (
                json!({"id": "ag-r", "admin_scope": "all"}),
                "invalid-args",
                "disabled, group, global",
            ),
            (
                json!({"id": "ag-r", "egress_allow": "[oops"}),
                "invalid-args",
                "not valid JSON",
            ),
            (
                json!({"id": "ag-r", "egress_allow": "{\"a\":1}"}),
                "invalid-args",
                "host patterns",
            ),
            (
                json!({"id": "ag-r", "mcp_servers": "[{\"name\":\"x\"}]"}),
                "invalid-args",
                "command",
            ),
            (
                json!({"id": "ag-r", "sandbox": "[]"}),
                "invalid-args",
                "JSON object",
            ),
            (json!({"id": "nope", "model": "m"}), "not-found", "nope"),
            (json!({"model": "m"}), "invalid-args", "needs an id"),
        ];
        for (args, code, needle) in cases {
            let e = fails(&c, &Caller::Owner, "groups-config-set", args.clone());
            assert_eq!(e.code, code, "{args}: {}", e.message);
            assert!(
                e.message.contains(needle),
                "{args}: {:?} lacks {needle:?}",
                e.message
            );
        }
    }

    #[test]
    fn wirings_validate_and_add_their_destination() {
        let (_d, c) = db();
        ok(&c, "groups-create", json!({"name": "r"}));
        let mg = ok(
            &c,
            "messaging-groups-create",
            json!({"channel_type": "telegram", "platform_id": "-1001", "is_group": "1"}),
        );
        let mg_id = mg["id"].as_str().unwrap().to_owned();
        assert!(
            mg_id.starts_with("mg-telegram-") && mg_id.len() == "mg-telegram-".len() + 8,
            "{mg_id}"
        );
        assert_eq!(mg["is_group"], 1);
        assert_eq!(mg["unknown_sender_policy"], "request_approval");
        let cases: Vec<(Value, &str, &str)> = vec![
            (
                json!({"ag": "ag-r", "engage_mode": "mention"}),
                "invalid-args",
                "--mg",
            ),
            (
                json!({"mg": mg_id, "engage_mode": "mention"}),
                "invalid-args",
                "--ag",
            ),
            (
                json!({"mg": mg_id, "ag": "ag-r"}),
                "invalid-args",
                "--engage_mode",
            ),
            (
                json!({"mg": mg_id, "ag": "ag-r", "engage_mode": "always"}),
                "invalid-args",
                "pattern, mention, mention-sticky",
            ),
            (
                json!({"mg": mg_id, "ag": "ag-r", "engage_mode": "pattern"}),
                "invalid-args",
                "--engage_pattern",
            ),
            (
                json!({"mg": mg_id, "ag": "ag-r", "engage_mode": "pattern", "engage_pattern": "(unclosed"}),
                "invalid-args",
                "(unclosed",
            ),
            (
                json!({"mg": mg_id, "ag": "ag-r", "engage_mode": "mention", "sender_scope": "some"}),
                "invalid-args",
                "--sender_scope",
            ),
            (
                json!({"mg": mg_id, "ag": "ag-r", "engage_mode": "mention", "priority": "high"}),
                "invalid-args",
                "--priority",
            ),
            (
                json!({"mg": "mg-nope", "ag": "ag-r", "engage_mode": "mention"}),
                "not-found",
                "mg-nope",
            ),
            (
                json!({"mg": mg_id, "ag": "ag-nope", "engage_mode": "mention"}),
                "not-found",
                "ag-nope",
            ),
            (
                json!({"mg": mg_id, "messaging_group": "other", "ag": "ag-r", "engage_mode": "mention"}),
                "invalid-args",
                "give it once",
            ),
        ];
        for (args, code, needle) in cases {
            let e = fails(&c, &Caller::Owner, "wirings-create", args.clone());
            assert_eq!(e.code, code, "{args}: {}", e.message);
            assert!(
                e.message.contains(needle),
                "{args}: {:?} lacks {needle:?}",
                e.message
            );
        }
        let e = fails(
            &c,
            &Caller::Owner,
            "wirings-create",
            json!({"mg": mg_id, "ag": "ag-r", "engage_mode": "pattern", "engage_pattern": "a{2"}),
        );
        assert!(e.message.contains("not a valid regex"), "{}", e.message);

        // aliases, string ints, defaults
        let w = ok(
            &c,
            "wirings-create",
            json!({"messaging_group": mg_id, "agent_group": "ag-r", "engage_mode": "pattern", "engage_pattern": ".", "priority": "3"}),
        );
        assert_eq!(w["priority"], 3);
        assert_eq!(w["sender_scope"], "known");
        assert_eq!(w["ignored_message_policy"], "drop");
        assert_eq!(w["session_mode"], "shared");
        // no name → platform id, sanitized
        assert_eq!(w["destination_added"], "1001");
        let d = c.destinations("ag-r").unwrap();
        assert_eq!(d.len(), 1);
        assert_eq!(
            (d[0].name.as_str(), d[0].platform_id.as_deref()),
            ("1001", Some("-1001"))
        );
        // the router sees it
        assert_eq!(c.wirings(&mg_id).unwrap()[0].agent_group_id, "ag-r");
        let e = fails(
            &c,
            &Caller::Owner,
            "wirings-create",
            json!({"mg": mg_id, "ag": "ag-r", "engage_mode": "mention"}),
        );
        assert!(
            e.code == "invalid-args" && e.message.contains("already wired"),
            "{}",
            e.message
        );

        // a taken local name is left alone (INSERT OR IGNORE)
        ok(
            &c,
            "messaging-groups-create",
            json!({"id": "mg-b", "channel_type": "slack", "platform_id": "C1", "name": "Terminal"}),
        );
        let w2 = ok(
            &c,
            "wirings-create",
            json!({"mg": "mg-b", "ag": "main", "engage_mode": "mention-sticky"}),
        );
        assert_eq!(w2["destination_added"], Value::Null);
        let main = c.destinations("main").unwrap();
        assert_eq!(
            main.iter()
                .find(|d| d.name == "terminal")
                .unwrap()
                .platform_id
                .as_deref(),
            Some("local")
        );

        // update: mode pattern needs a pattern; a bad one names the error
        let wid = w2["id"].as_str().unwrap();
        let e = fails(
            &c,
            &Caller::Owner,
            "wirings-update",
            json!({"id": wid, "engage_mode": "pattern"}),
        );
        assert!(e.message.contains("--engage_pattern"), "{}", e.message);
        let e = fails(
            &c,
            &Caller::Owner,
            "wirings-update",
            json!({"id": wid, "engage_pattern": "[z-a]"}),
        );
        assert!(
            e.message.contains("[z-a]") && e.message.contains("regex"),
            "{}",
            e.message
        );
        let u = ok(
            &c,
            "wirings-update",
            json!({"id": wid, "engage_mode": "pattern", "engage_pattern": "^!ask", "session_mode": "per-thread"}),
        );
        assert_eq!(
            (u["engage_pattern"].as_str(), u["session_mode"].as_str()),
            (Some("^!ask"), Some("per-thread"))
        );
        // filters
        assert_eq!(
            ids(&ok(&c, "wirings-list", json!({"ag": "main"})), "id"),
            ["w-main-terminal", wid]
        );
        assert_eq!(
            ids(&ok(&c, "wirings-list", json!({"mg": "mg-b"})), "id"),
            [wid]
        );
        // delete tells what destinations remain
        let del = ok(&c, "wirings-delete", json!({"id": w["id"]}));
        assert_eq!(del["destinations_kept"], json!(["1001"]));
        assert_eq!(
            fails(&c, &Caller::Owner, "wirings-get", json!({"id": w["id"]})).code,
            "not-found"
        );
    }

    #[test]
    fn messaging_groups_crud_deny_and_unique() {
        let (_d, c) = db();
        let e = fails(
            &c,
            &Caller::Owner,
            "messaging-groups-create",
            json!({"channel_type": "cli", "platform_id": "local"}),
        );
        assert_eq!(e.code, "invalid-args");
        assert!(
            e.message.contains("already exists") && e.message.contains("mg-cli-local"),
            "{}",
            e.message
        );
        let e = fails(
            &c,
            &Caller::Owner,
            "messaging-groups-create",
            json!({"id": "mg-cli-local", "channel_type": "cli", "platform_id": "other"}),
        );
        assert!(
            e.code == "invalid-args" && e.message.contains("already exists"),
            "{}",
            e.message
        );
        let e = fails(
            &c,
            &Caller::Owner,
            "messaging-groups-create",
            json!({"channel_type": "tg", "platform_id": "1", "unknown_sender_policy": "open"}),
        );
        assert!(
            e.message.contains("strict, request_approval, public"),
            "{}",
            e.message
        );
        let e = fails(
            &c,
            &Caller::Owner,
            "messaging-groups-create",
            json!({"channel_type": "tg"}),
        );
        assert!(e.message.contains("--platform_id"), "{}", e.message);
        let mg = ok(
            &c,
            "messaging-groups-create",
            json!({"id": "mg-x", "channel_type": "tg", "platform_id": 42, "unknown_sender_policy": "public"}),
        );
        assert_eq!(mg["platform_id"], "42");
        let d = ok(&c, "messaging-groups-deny", json!({"id": "mg-x"}));
        assert!(d["denied_at"].is_string());
        assert!(c
            .messaging_group("tg", "42")
            .unwrap()
            .unwrap()
            .denied_at
            .is_some());
        assert_eq!(
            ok(&c, "messaging-groups-undeny", json!({"id": "mg-x"}))["denied_at"],
            Value::Null
        );
        assert_eq!(
            ok(
                &c,
                "messaging-groups-update",
                json!({"id": "mg-x", "name": "Chat", "is_group": false})
            )["name"],
            "Chat"
        );
        assert_eq!(
            fails(
                &c,
                &Caller::Owner,
                "messaging-groups-update",
                json!({"id": "mg-nope", "name": "x"})
            )
            .code,
            "not-found"
        );
        ok(
            &c,
            "destinations-add",
            json!({"ag": "main", "name": "chat", "target_type": "channel", "target": "mg-x"}),
        );
        let del = ok(&c, "messaging-groups-delete", json!({"id": "mg-x"}));
        assert_eq!(del["destinations_removed"], 1);
        assert_eq!(
            fails(
                &c,
                &Caller::Owner,
                "messaging-groups-get",
                json!({"id": "mg-x"})
            )
            .code,
            "not-found"
        );
        // with an active session: refused
        c.insert_session(
            &crate::central::SessionRow {
                id: "s1".into(),
                agent_group_id: "main".into(),
                messaging_group_id: Some("mg-cli-local".into()),
                thread_id: None,
                folder: "main".into(),
            },
            "scripted",
        )
        .unwrap();
        let e = fails(
            &c,
            &Caller::Owner,
            "messaging-groups-delete",
            json!({"id": "mg-cli-local"}),
        );
        assert!(
            e.message.contains("s1") && e.message.contains("pinch admin sessions close"),
            "{}",
            e.message
        );
    }

    #[test]
    fn delete_main_and_groups_with_active_sessions_are_refused() {
        let (_d, c) = fixture();
        let e = fails(&c, &Caller::Owner, "groups-delete", json!({"id": "main"}));
        assert_eq!(e.code, "forbidden");
        assert!(e.message.contains("main"));
        let s = |id: &str, status: &str| {
            c.insert_session(
                &crate::central::SessionRow {
                    id: id.into(),
                    agent_group_id: "ag-research".into(),
                    messaging_group_id: Some("mg-tg-fam".into()),
                    thread_id: Some(id.into()),
                    folder: "research".into(),
                },
                "scripted",
            )
            .unwrap();
            c.conn
                .execute(
                    "UPDATE sessions SET status = ?2 WHERE id = ?1",
                    [id, status],
                )
                .unwrap();
        };
        s("s-old", "closed");
        s("s-live", "active");
        c.record_exit("s-old", "r1", "t", Some(0), None, "idle", None)
            .unwrap();
        let e = fails(
            &c,
            &Caller::Owner,
            "groups-delete",
            json!({"id": "ag-research"}),
        );
        assert_eq!(e.code, "forbidden");
        assert!(
            e.message.contains("s-live") && e.message.contains("pinch admin sessions close <id>"),
            "{}",
            e.message
        );
        assert!(!e.message.contains("s-old"));
        c.conn
            .execute(
                "UPDATE sessions SET status = 'closed' WHERE id = 's-live'",
                [],
            )
            .unwrap();
        // another group's destination pointing at it goes too
        ok(
            &c,
            "destinations-add",
            json!({"ag": "main", "name": "research", "target_type": "agent", "target": "ag-research"}),
        );
        let r = ok(&c, "groups-delete", json!({"id": "ag-research"}));
        assert_eq!(r["closed_sessions_forgotten"], 2);
        assert_eq!(r["destinations_removed"], 1);
        assert_eq!(r["folder_kept"], "groups/research");
        for table in [
            "wirings",
            "agent_group_members",
            "agent_configs",
            "agent_destinations",
            "sessions",
        ] {
            let n: i64 = c
                .conn
                .query_row(
                    &format!("SELECT count(*) FROM {table} WHERE agent_group_id = 'ag-research'"),
                    [],
                    |r| r.get(0),
                )
                .unwrap();
            assert_eq!(n, 0, "{table}");
        }
        let n: i64 = c
            .conn
            .query_row(
                "SELECT count(*) FROM agent_destinations WHERE target_id = 'ag-research'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(n, 0);
        assert_eq!(
            fails(
                &c,
                &Caller::Owner,
                "groups-delete",
                json!({"id": "ag-research"})
            )
            .code,
            "not-found"
        );
    }

    #[test]
    fn roles_and_the_last_owner() {
        let (_d, c) = db();
        let e = fails(
            &c,
            &Caller::Owner,
            "roles-revoke",
            json!({"user": "cli:alice", "role": "owner"}),
        );
        assert_eq!(e.code, "forbidden");
        assert!(e.message.contains("last owner"), "{}", e.message);
        let e = fails(
            &c,
            &Caller::Owner,
            "users-delete",
            json!({"id": "cli:alice"}),
        );
        assert!(
            e.code == "forbidden" && e.message.contains("last owner"),
            "{}",
            e.message
        );
        let e = fails(
            &c,
            &Caller::Owner,
            "roles-grant",
            json!({"user": "telegram:1", "role": "owner", "ag": "main"}),
        );
        assert!(
            e.code == "invalid-args" && e.message.contains("always global"),
            "{}",
            e.message
        );
        let e = fails(
            &c,
            &Caller::Owner,
            "roles-grant",
            json!({"user": "bob", "role": "admin"}),
        );
        assert!(
            e.code == "invalid-args" && e.message.contains("telegram:123456789"),
            "{}",
            e.message
        );
        let e = fails(
            &c,
            &Caller::Owner,
            "roles-grant",
            json!({"user": "telegram:1", "role": "god"}),
        );
        assert!(e.message.contains("owner, admin"), "{}", e.message);
        let e = fails(
            &c,
            &Caller::Owner,
            "roles-grant",
            json!({"user": "telegram:1", "role": "admin", "ag": "ag-nope"}),
        );
        assert_eq!(e.code, "not-found");

        // ag admin implies member; the user row is created
        ok(
            &c,
            "roles-grant",
            json!({"id": "telegram:1", "role": "admin", "ag": "main"}),
        );
        assert_eq!(
            ok(&c, "users-get", json!({"id": "telegram:1"}))["kind"],
            "telegram"
        );
        assert_eq!(
            ok(&c, "users-get", json!({"id": "telegram:1"}))["member_of"],
            json!(["main"])
        );
        let e = fails(
            &c,
            &Caller::Owner,
            "roles-grant",
            json!({"user": "telegram:1", "role": "admin", "ag": "main"}),
        );
        assert!(
            e.code == "invalid-args" && e.message.contains("already exists"),
            "{}",
            e.message
        );
        assert_eq!(
            ids(&ok(&c, "roles-list", json!({"ag": "main"})), "user"),
            ["telegram:1"]
        );

        ok(
            &c,
            "roles-grant",
            json!({"user": "telegram:2", "role": "owner"}),
        );
        assert_eq!(
            ok(
                &c,
                "roles-list",
                json!({"role": null, "user": "telegram:2"})
            )[0]["ag"],
            Value::Null
        );
        ok(
            &c,
            "roles-revoke",
            json!({"user": "cli:alice", "role": "owner"}),
        );
        let e = fails(
            &c,
            &Caller::Owner,
            "roles-revoke",
            json!({"user": "telegram:2", "role": "owner"}),
        );
        assert_eq!(e.code, "forbidden");
        let e = fails(
            &c,
            &Caller::Owner,
            "roles-revoke",
            json!({"user": "cli:alice", "role": "owner"}),
        );
        assert_eq!(e.code, "not-found");
        ok(
            &c,
            "roles-revoke",
            json!({"user": "telegram:1", "role": "admin", "ag": "main"}),
        );
        assert!(
            c.has_access("telegram:1", "main").unwrap(),
            "membership outlives the admin role"
        );
    }

    #[test]
    fn members_users_and_destinations() {
        let (_d, c) = db();
        let e = fails(&c, &Caller::Owner, "users-create", json!({"id": "nocolon"}));
        assert!(
            e.code == "invalid-args" && e.message.contains("<channel>:"),
            "{}",
            e.message
        );
        let u = ok(
            &c,
            "users-create",
            json!({"id": "telegram:5", "display_name": "Bob"}),
        );
        assert_eq!(
            (u["kind"].as_str(), u["display_name"].as_str()),
            (Some("telegram"), Some("Bob"))
        );
        let e = fails(
            &c,
            &Caller::Owner,
            "users-create",
            json!({"id": "telegram:5"}),
        );
        assert!(
            e.message.contains("\"telegram:5\" already exists"),
            "{}",
            e.message
        );
        assert_eq!(
            ok(
                &c,
                "users-update",
                json!({"id": "telegram:5", "display_name": "Robert"})
            )["display_name"],
            "Robert"
        );

        let e = fails(
            &c,
            &Caller::Owner,
            "members-add",
            json!({"user": "telegram:6"}),
        );
        assert!(
            e.code == "invalid-args" && e.message.contains("--ag"),
            "{}",
            e.message
        );
        ok(
            &c,
            "members-add",
            json!({"user": "telegram:6", "ag": "main"}),
        );
        assert!(c.has_access("telegram:6", "main").unwrap());
        let e = fails(
            &c,
            &Caller::Owner,
            "members-add",
            json!({"user": "telegram:6", "ag": "main"}),
        );
        assert!(
            e.code == "invalid-args" && e.message.contains("already exists"),
            "{}",
            e.message
        );
        ok(
            &c,
            "members-remove",
            json!({"id": "telegram:6", "ag": "main"}),
        );
        assert!(!c.has_access("telegram:6", "main").unwrap());
        assert_eq!(
            fails(
                &c,
                &Caller::Owner,
                "members-remove",
                json!({"user": "telegram:6", "ag": "main"})
            )
            .code,
            "not-found"
        );
        ok(&c, "users-delete", json!({"id": "telegram:5"}));
        assert_eq!(
            fails(&c, &Caller::Owner, "users-get", json!({"id": "telegram:5"})).code,
            "not-found"
        );

        let e = fails(
            &c,
            &Caller::Owner,
            "destinations-add",
            json!({"ag": "main", "name": "x", "target_type": "channel", "target": "mg-nope"}),
        );
        assert_eq!(e.code, "not-found");
        let e = fails(
            &c,
            &Caller::Owner,
            "destinations-add",
            json!({"ag": "main", "name": "x y", "target_type": "channel", "target": "mg-cli-local"}),
        );
        assert_eq!(e.code, "invalid-args");
        let e = fails(
            &c,
            &Caller::Owner,
            "destinations-add",
            json!({"ag": "main", "name": "x", "target_type": "email", "target": "a"}),
        );
        assert!(e.message.contains("channel, agent"), "{}", e.message);
        let e = fails(
            &c,
            &Caller::Owner,
            "destinations-add",
            json!({"ag": "main", "name": "terminal", "target_type": "agent", "target": "main"}),
        );
        assert!(
            e.code == "invalid-args" && e.message.contains("already exists"),
            "{}",
            e.message
        );
        ok(
            &c,
            "destinations-add",
            json!({"id": "main", "name": "self", "target_type": "agent", "target": "main"}),
        );
        assert_eq!(
            ids(&ok(&c, "destinations-list", json!({"id": "main"})), "name"),
            ["self", "terminal"]
        );
        ok(
            &c,
            "destinations-remove",
            json!({"ag": "main", "local_name": "self"}),
        );
        assert_eq!(
            fails(
                &c,
                &Caller::Owner,
                "destinations-remove",
                json!({"ag": "main", "name": "self"})
            )
            .code,
            "not-found"
        );
    }

    #[test]
    fn lists_page_at_200() {
        let (_d, c) = db();
        for i in 0..250 {
            c.conn
                .execute(
                    "INSERT INTO users (id, kind, created_at) VALUES (?1, 'telegram', ?2)",
                    [
                        format!("telegram:{i:03}"),
                        format!("2030-01-01T00:00:{:02}.{:03}Z", i / 100, i % 100),
                    ],
                )
                .unwrap();
        }
        let all = 251; // with the bootstrap owner
        assert_eq!(
            ok(&c, "users-list", json!({})).as_array().unwrap().len(),
            200
        );
        assert_eq!(
            ok(&c, "users-list", json!({"offset": "200"}))
                .as_array()
                .unwrap()
                .len(),
            all - 200
        );
        let page = ok(&c, "users-list", json!({"limit": "10", "offset": 5}));
        assert_eq!(page.as_array().unwrap().len(), 10);
        assert_eq!(
            page[0]["id"], "telegram:004",
            "ordered by creation; the owner is first"
        );
        assert_eq!(
            ok(&c, "users-list", json!({"kind": "cli"}))
                .as_array()
                .unwrap()
                .len(),
            1
        );
        for bad in [
            json!({"limit": 201}),
            json!({"limit": "0"}),
            json!({"limit": "ten"}),
            json!({"offset": -1}),
        ] {
            let e = fails(&c, &Caller::Owner, "users-list", bad.clone());
            assert_eq!(e.code, "invalid-args", "{bad}");
            assert!(
                e.message.contains("--limit") || e.message.contains("--offset"),
                "{}",
                e.message
            );
        }
    }

    #[test]
    fn audit_and_approval_lists() {
        let (_d, c) = db();
        for (p, last) in [
            ("a", "2030-01-01T00:00:00.000Z"),
            ("b", "2030-01-03T00:00:00.000Z"),
            ("c", "2030-01-02T00:00:00.000Z"),
        ] {
            c.conn
                .execute(
                    "INSERT INTO dropped_messages (channel_type, platform_id, reason, first_seen, last_seen) VALUES ('tg', ?1, 'unknown_sender', ?2, ?2)",
                    [p, last],
                )
                .unwrap();
        }
        assert_eq!(
            ids(&ok(&c, "dropped-messages-list", json!({})), "platform_id"),
            ["b", "c", "a"]
        );
        assert_eq!(
            ok(&c, "dropped-messages-list", json!({"reason": "denied"})),
            json!([])
        );
        c.conn
            .execute(
                "INSERT INTO pending_approvals (approval_id, agent_group_id, action, payload, title, options_json, approver_user_id, expires_at, created_at)
                 VALUES ('ap1', 'main', 'install_packages', '{\"packages\":[\"jq\"]}', 'Install jq?', '[]', 'cli:alice', 'x', 'y')",
                [],
            )
            .unwrap();
        assert_eq!(
            ids(
                &ok(&c, "approvals-list", json!({"status": "pending"})),
                "id"
            ),
            ["ap1"]
        );
        assert_eq!(
            ok(&c, "approvals-list", json!({"status": "approved"})),
            json!([])
        );
        assert_eq!(
            fails(
                &c,
                &Caller::Owner,
                "approvals-list",
                json!({"status": "open"})
            )
            .code,
            "invalid-args"
        );
        assert_eq!(
            ok(&c, "approvals-get", json!({"id": "ap1"}))["payload"],
            json!({"packages": ["jq"]})
        );
        assert_eq!(
            fails(&c, &Caller::Owner, "approvals-get", json!({"id": "ap2"})).code,
            "not-found"
        );
        c.conn
            .execute(
                "INSERT INTO user_dms VALUES ('cli:alice', 'cli', 'mg-cli-local', 'z')",
                [],
            )
            .unwrap();
        assert_eq!(ok(&c, "user-dms-list", json!({}))[0]["mg"], "mg-cli-local");
    }

    #[test]
    fn sanitize_names() {
        // only [a-z0-9-] is kept; anything else separates
        for (raw, want) in [
            ("Family Chat", "family-chat"),
            ("--x--", "x"),
            ("-1001", "1001"),
            ("Ünï €", "n"),
            ("!!!", ""),
            ("a  b", "a-b"),
        ] {
            assert_eq!(sanitize_name(raw, 40), want, "{raw}");
        }
        assert_eq!(
            sanitize_name(&format!("{}-b", "a".repeat(39)), 40),
            "a".repeat(39)
        );
    }
}
