//! The admin vocabulary (SPEC §10): every admin command — its resource,
//! verb, the arguments it takes and their types, who serves it, whether an
//! agent's request needs an approval — in one table, parsed once.
//!
//! Three doors use it: `pinch admin` (CLI words, [`parse_words`]), the
//! admin socket and the agent's `admin` tool (JSON, [`AdminCommand::parse`]).
//! All three end in the same [`AdminCommand`]: the spec of the command and
//! its arguments, aliases folded, the positional id put where it belongs,
//! unknown keys refused naming the accepted ones, and every value checked
//! against the type of its key ([`kind_of`]) — so a bad flag is refused
//! with the flag named before anything runs. The host's handlers read the
//! typed values; the wire format (strings from the CLI, typed JSON from an
//! agent) is unchanged.
//!
//! Adding a command: a row in [`COMMANDS`] (and a [`kind_of`] arm for a new
//! key that is not text), then the handler in the host's module for its
//! resource.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::route::{EngageMode, IgnoredPolicy, SenderScope, SessionMode, UnknownSenderPolicy};

crate::choice! {
    /// The resources, in the order `pinch admin --help` lists them.
    pub enum Resource {
        Groups = "groups",
        MessagingGroups = "messaging-groups",
        Wirings = "wirings",
        Users = "users",
        Roles = "roles",
        Members = "members",
        Destinations = "destinations",
        Sessions = "sessions",
        Tasks = "tasks",
        Approvals = "approvals",
        UserDms = "user-dms",
        DroppedMessages = "dropped-messages",
        Channels = "channels",
        Host = "host",
    }
}

crate::choice! {
    pub enum Verb {
        List = "list",
        Get = "get",
        Create = "create",
        Update = "update",
        Delete = "delete",
        ConfigGet = "config-get",
        ConfigSet = "config-set",
        Restart = "restart",
        Deny = "deny",
        Undeny = "undeny",
        Grant = "grant",
        Revoke = "revoke",
        Add = "add",
        Remove = "remove",
        Stop = "stop",
        Resume = "resume",
        Close = "close",
        Pause = "pause",
        Cancel = "cancel",
        Approve = "approve",
        Reject = "reject",
        Status = "status",
        Version = "version",
    }
}

crate::choice! {
    /// `agent_configs.admin_scope`: what an agent group may do with the
    /// admin commands (SPEC §10).
    pub enum AdminScope {
        Disabled = "disabled",
        Group = "group",
        Global = "global",
    }
}

impl AdminScope {
    /// The stored scope; anything unknown (or absent) is `disabled`.
    pub fn or_disabled(s: Option<&str>) -> AdminScope {
        s.and_then(AdminScope::parse)
            .unwrap_or(AdminScope::Disabled)
    }
}

crate::choice! {
    /// `user_roles.role`.
    pub enum Role {
        Owner = "owner",
        Admin = "admin",
    }
}

crate::choice! {
    /// `agent_destinations.target_type`.
    pub enum TargetType {
        Channel = "channel",
        Agent = "agent",
    }
}

crate::choice! {
    /// `pending_approvals.status`.
    pub enum ApprovalStatus {
        Pending = "pending",
        Approved = "approved",
        Rejected = "rejected",
        Expired = "expired",
    }
}

/// Who serves a command: the central-DB handlers (`pinch_host::admin_cmds`)
/// or the main loop (runtime state: sessions, tasks, the host).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Served {
    Central,
    MainLoop,
}

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

/// One admin command.
#[derive(Debug, PartialEq, Eq)]
pub struct Spec {
    /// `<resource>-<verb>`, the wire name.
    pub name: &'static str,
    pub resource: Resource,
    pub verb: Verb,
    /// The argument keys it accepts (after [`ALIASES`] are folded).
    pub keys: &'static [&'static str],
    /// The positional id is this key (e.g. `roles grant telegram:1`).
    pub id_as: Option<&'static str>,
    /// The CLI refuses it without an id.
    pub needs_id: bool,
    pub served: Served,
}

/// The type of an argument's value. CLI values arrive as text and are
/// converted; an agent's may be typed JSON.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Text; a number is taken as its decimal text.
    Text,
    /// true/false (also 1/0, yes/no).
    Bool,
    /// A whole number; the example is what an error shows.
    Int { example: i64 },
    /// A whole number of at least `min`, or blank/null to clear.
    IntAtLeast { min: i64, example: i64 },
    /// One of a choice list's words.
    Choice(&'static [&'static str]),
    /// A JSON value (text is parsed); blank/null clears.
    Json,
    /// A page size, 1..=[`PAGE`] (default [`PAGE`]).
    Limit,
    /// A page start, ≥ 0 (default 0).
    Offset,
}

/// The type of every argument key (the same key has the same type in
/// every command).
pub fn kind_of(key: &str) -> Kind {
    match key {
        "limit" => Kind::Limit,
        "offset" => Kind::Offset,
        "is_group" | "can_create_agents" => Kind::Bool,
        "priority" => Kind::Int { example: 10 },
        "batch_size" => Kind::IntAtLeast {
            min: 1,
            example: 10,
        },
        "idle_exit_s" => Kind::IntAtLeast {
            min: 1,
            example: 300,
        },
        "claim_stuck_s" => Kind::IntAtLeast {
            min: 1,
            example: 600,
        },
        "mcp_servers" | "packages" | "extra_mounts" | "egress_allow" | "sandbox" => Kind::Json,
        "engage_mode" => Kind::Choice(EngageMode::NAMES),
        "sender_scope" => Kind::Choice(SenderScope::NAMES),
        "ignored_message_policy" => Kind::Choice(IgnoredPolicy::NAMES),
        "session_mode" => Kind::Choice(SessionMode::NAMES),
        "unknown_sender_policy" => Kind::Choice(UnknownSenderPolicy::NAMES),
        "admin_scope" => Kind::Choice(AdminScope::NAMES),
        "role" => Kind::Choice(Role::NAMES),
        "target_type" => Kind::Choice(TargetType::NAMES),
        "status" => Kind::Choice(ApprovalStatus::NAMES),
        _ => Kind::Text,
    }
}

/// Lists page at this many rows (SPEC §10).
pub const PAGE: i64 = 200;

/// `groups-config-set`'s arguments: the group id, then every
/// `agent_configs` column it may set ([`CONFIG_KEYS`]).
pub const CONFIG_SET_KEYS: &[&str] = &[
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
pub const CONFIG_KEYS: &[&str] = CONFIG_SET_KEYS.split_at(1).1;

/// `groups-config-set` keys that are security boundaries: owner's approval.
pub const OWNER_CONFIG_KEYS: &[&str] = &[
    "egress_allow",
    "extra_mounts",
    "sandbox",
    "admin_scope",
    "can_create_agents",
];

/// Other spellings accepted for an argument key → the canonical key.
pub const ALIASES: &[(&str, &str)] = &[
    ("messaging_group", "mg"),
    ("messaging_group_id", "mg"),
    ("agent_group", "ag"),
    ("agent_group_id", "ag"),
    ("user_id", "user"),
    ("target_id", "target"),
    ("local_name", "name"),
];

const fn c(
    name: &'static str,
    resource: Resource,
    verb: Verb,
    keys: &'static [&'static str],
    needs_id: bool,
) -> Spec {
    Spec {
        name,
        resource,
        verb,
        keys,
        id_as: None,
        needs_id,
        served: Served::Central,
    }
}

const fn id_as(mut s: Spec, key: &'static str) -> Spec {
    s.id_as = Some(key);
    s
}

const fn main_loop(mut s: Spec) -> Spec {
    s.served = Served::MainLoop;
    s
}

use Resource as R;
use Verb as V;

/// Every admin command, grouped by resource in the order of
/// [`Resource::ALL`], verbs in the order `pinch admin --help` shows.
pub const COMMANDS: &[Spec] = &[
    c(
        "groups-list",
        R::Groups,
        V::List,
        &["limit", "offset"],
        false,
    ),
    c("groups-get", R::Groups, V::Get, &["id"], true),
    c(
        "groups-create",
        R::Groups,
        V::Create,
        &["id", "name", "folder", "provider"],
        false,
    ),
    c(
        "groups-update",
        R::Groups,
        V::Update,
        &["id", "name", "provider"],
        true,
    ),
    c("groups-delete", R::Groups, V::Delete, &["id"], true),
    c("groups-config-get", R::Groups, V::ConfigGet, &["id"], true),
    c(
        "groups-config-set",
        R::Groups,
        V::ConfigSet,
        CONFIG_SET_KEYS,
        true,
    ),
    main_loop(c("groups-restart", R::Groups, V::Restart, &["id"], true)),
    c(
        "messaging-groups-list",
        R::MessagingGroups,
        V::List,
        &["channel_type", "limit", "offset"],
        false,
    ),
    c(
        "messaging-groups-get",
        R::MessagingGroups,
        V::Get,
        &["id"],
        true,
    ),
    c(
        "messaging-groups-create",
        R::MessagingGroups,
        V::Create,
        &[
            "id",
            "channel_type",
            "platform_id",
            "name",
            "is_group",
            "unknown_sender_policy",
        ],
        false,
    ),
    c(
        "messaging-groups-update",
        R::MessagingGroups,
        V::Update,
        &["id", "name", "is_group", "unknown_sender_policy"],
        true,
    ),
    c(
        "messaging-groups-delete",
        R::MessagingGroups,
        V::Delete,
        &["id"],
        true,
    ),
    c(
        "messaging-groups-deny",
        R::MessagingGroups,
        V::Deny,
        &["id"],
        true,
    ),
    c(
        "messaging-groups-undeny",
        R::MessagingGroups,
        V::Undeny,
        &["id"],
        true,
    ),
    c(
        "wirings-list",
        R::Wirings,
        V::List,
        &["mg", "ag", "limit", "offset"],
        false,
    ),
    c("wirings-get", R::Wirings, V::Get, &["id"], true),
    c(
        "wirings-create",
        R::Wirings,
        V::Create,
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
        false,
    ),
    c(
        "wirings-update",
        R::Wirings,
        V::Update,
        &[
            "id",
            "engage_mode",
            "engage_pattern",
            "sender_scope",
            "ignored_message_policy",
            "session_mode",
            "priority",
        ],
        true,
    ),
    c("wirings-delete", R::Wirings, V::Delete, &["id"], true),
    c(
        "users-list",
        R::Users,
        V::List,
        &["kind", "limit", "offset"],
        false,
    ),
    c("users-get", R::Users, V::Get, &["id"], true),
    c(
        "users-create",
        R::Users,
        V::Create,
        &["id", "kind", "display_name"],
        true,
    ),
    c(
        "users-update",
        R::Users,
        V::Update,
        &["id", "kind", "display_name"],
        true,
    ),
    c("users-delete", R::Users, V::Delete, &["id"], true),
    c(
        "roles-list",
        R::Roles,
        V::List,
        &["user", "role", "ag", "limit", "offset"],
        false,
    ),
    id_as(
        c(
            "roles-grant",
            R::Roles,
            V::Grant,
            &["user", "role", "ag"],
            false,
        ),
        "user",
    ),
    id_as(
        c(
            "roles-revoke",
            R::Roles,
            V::Revoke,
            &["user", "role", "ag"],
            false,
        ),
        "user",
    ),
    id_as(
        c(
            "members-list",
            R::Members,
            V::List,
            &["ag", "limit", "offset"],
            false,
        ),
        "ag",
    ),
    id_as(
        c("members-add", R::Members, V::Add, &["user", "ag"], false),
        "user",
    ),
    id_as(
        c(
            "members-remove",
            R::Members,
            V::Remove,
            &["user", "ag"],
            false,
        ),
        "user",
    ),
    id_as(
        c(
            "destinations-list",
            R::Destinations,
            V::List,
            &["ag", "limit", "offset"],
            false,
        ),
        "ag",
    ),
    id_as(
        c(
            "destinations-add",
            R::Destinations,
            V::Add,
            &["ag", "name", "target_type", "target"],
            false,
        ),
        "ag",
    ),
    id_as(
        c(
            "destinations-remove",
            R::Destinations,
            V::Remove,
            &["ag", "name"],
            false,
        ),
        "ag",
    ),
    main_loop(c(
        "sessions-list",
        R::Sessions,
        V::List,
        &["limit", "offset"],
        false,
    )),
    main_loop(c("sessions-get", R::Sessions, V::Get, &["id"], true)),
    main_loop(c("sessions-stop", R::Sessions, V::Stop, &["id"], true)),
    main_loop(c(
        "sessions-restart",
        R::Sessions,
        V::Restart,
        &["id"],
        true,
    )),
    main_loop(c("sessions-resume", R::Sessions, V::Resume, &["id"], true)),
    main_loop(c("sessions-close", R::Sessions, V::Close, &["id"], true)),
    main_loop(c(
        "tasks-list",
        R::Tasks,
        V::List,
        &["ag", "session", "limit", "offset"],
        false,
    )),
    main_loop(c("tasks-pause", R::Tasks, V::Pause, &["id"], true)),
    main_loop(c("tasks-resume", R::Tasks, V::Resume, &["id"], true)),
    main_loop(c("tasks-cancel", R::Tasks, V::Cancel, &["id"], true)),
    c(
        "approvals-list",
        R::Approvals,
        V::List,
        &["status", "limit", "offset"],
        false,
    ),
    c("approvals-get", R::Approvals, V::Get, &["id"], true),
    main_loop(c(
        "approvals-approve",
        R::Approvals,
        V::Approve,
        &["id", "value"],
        true,
    )),
    main_loop(c(
        "approvals-reject",
        R::Approvals,
        V::Reject,
        &["id"],
        true,
    )),
    c(
        "user-dms-list",
        R::UserDms,
        V::List,
        &["user", "limit", "offset"],
        false,
    ),
    c(
        "dropped-messages-list",
        R::DroppedMessages,
        V::List,
        &["reason", "limit", "offset"],
        false,
    ),
    main_loop(c("channels-status", R::Channels, V::Status, &[], false)),
    main_loop(c("host-status", R::Host, V::Status, &[], false)),
    main_loop(c("host-version", R::Host, V::Version, &[], false)),
];

impl Resource {
    /// Its verbs, in the order of [`COMMANDS`].
    pub fn verbs(self) -> Vec<Verb> {
        COMMANDS
            .iter()
            .filter(|s| s.resource == self)
            .map(|s| s.verb)
            .collect()
    }

    /// Whether an agent under `admin_scope = group` may use this
    /// resource's central-DB commands at all (its own group's rows).
    pub fn open_to_group_scope(self) -> bool {
        matches!(
            self,
            Resource::Groups | Resource::Destinations | Resource::Members
        )
    }
}

impl Spec {
    /// The spec of `<resource>-<verb>`.
    pub fn find(command: &str) -> Option<&'static Spec> {
        COMMANDS.iter().find(|s| s.name == command)
    }

    /// The spec of a resource and verb.
    pub fn of(resource: Resource, verb: Verb) -> Option<&'static Spec> {
        COMMANDS
            .iter()
            .find(|s| s.resource == resource && s.verb == verb)
    }

    /// Whether the host re-projects every session's routing view after it
    /// succeeds (destinations, wirings, conversations, a group deleted).
    pub fn reprojects(&self) -> bool {
        matches!(
            self.resource,
            Resource::Destinations | Resource::Wirings | Resource::MessagingGroups
        ) || (self.resource, self.verb) == (Resource::Groups, Verb::Delete)
    }

    /// Whether it is a list (takes `--limit`/`--offset`).
    pub fn is_list(&self) -> bool {
        self.keys.contains(&"limit")
    }
}

/// Why a request was refused: the admin socket's error code and a message
/// that names the fix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub code: &'static str,
    pub message: String,
}

impl Refusal {
    pub fn invalid(message: impl Into<String>) -> Refusal {
        Refusal {
            code: "invalid-args",
            message: message.into(),
        }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for Refusal {}

/// One typed argument value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Arg {
    /// Given as null (or blank, for numbers and JSON): clear the column.
    Null,
    Text(String),
    Bool(bool),
    Int(i64),
    Json(Value),
}

/// A command's arguments: canonical key → typed value, every key one the
/// command accepts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Args {
    cmd: &'static str,
    m: BTreeMap<&'static str, Arg>,
}

/// One parsed admin command: what to run and with what.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdminCommand {
    pub spec: &'static Spec,
    pub args: Args,
}

impl AdminCommand {
    /// The JSON form (`command` as `<resource>-<verb>`, `args` an object of
    /// strings or typed values): `unknown-command` or `invalid-args`.
    pub fn parse(command: &str, args: &Value) -> Result<AdminCommand, Refusal> {
        let spec = Spec::find(command).ok_or_else(|| Refusal {
            code: "unknown-command",
            message: format!("unknown command {command:?}"),
        })?;
        AdminCommand::with_spec(spec, args)
    }

    /// The arguments of a known command.
    pub fn with_spec(spec: &'static Spec, args: &Value) -> Result<AdminCommand, Refusal> {
        Ok(AdminCommand {
            spec,
            args: Args::new(spec, args)?,
        })
    }

    /// The CLI's words (after `pinch admin`): the usage message, or the
    /// command; `--json` and `--help` are the CLI's and refused here.
    pub fn from_words(words: &[String]) -> Result<AdminCommand, Refusal> {
        match parse_words(words).map_err(Refusal::invalid)? {
            Words::Request { spec, args, json } if !json => {
                AdminCommand::with_spec(spec, &Value::Object(args))
            }
            _ => Err(Refusal::invalid("--json and --help are the CLI's own")),
        }
    }

    pub fn name(&self) -> &'static str {
        self.spec.name
    }

    /// The JSON form of the arguments (canonical keys, typed values);
    /// [`AdminCommand::parse`] of it gives this command back.
    pub fn args_json(&self) -> Value {
        let mut m = Map::new();
        for (k, v) in &self.args.m {
            let v = match v {
                Arg::Null => Value::Null,
                Arg::Text(s) => Value::String(s.clone()),
                Arg::Bool(b) => Value::Bool(*b),
                Arg::Int(n) => Value::from(*n),
                // A JSON string is sent as JSON text so it is not taken
                // for the text of a value.
                Arg::Json(Value::String(s)) => Value::String(Value::String(s.clone()).to_string()),
                Arg::Json(v) => v.clone(),
            };
            m.insert((*k).to_owned(), v);
        }
        Value::Object(m)
    }

    /// CLI words for it (`None` when a value cannot be said in words: a
    /// null text). [`AdminCommand::from_words`] of them gives it back.
    pub fn to_words(&self) -> Option<Vec<String>> {
        let spec = self.spec;
        let mut w = vec![
            spec.resource.as_str().to_owned(),
            spec.verb.as_str().to_owned(),
        ];
        let positional = spec.id_as.unwrap_or("id");
        let mut flags = Vec::new();
        for (k, v) in &self.args.m {
            let text = match v {
                Arg::Null if matches!(kind_of(k), Kind::Text | Kind::Choice(_) | Kind::Bool) => {
                    return None
                }
                Arg::Null => String::new(),
                Arg::Text(s) => s.clone(),
                Arg::Bool(b) => b.to_string(),
                Arg::Int(n) => n.to_string(),
                Arg::Json(v) => v.to_string(),
            };
            let plain_word = !text.is_empty()
                && !text.starts_with('-')
                && !text.contains(char::is_whitespace)
                && text != "help";
            if *k == positional && plain_word {
                w.insert(2, text);
            } else {
                flags.push(format!("--{k}={text}"));
            }
        }
        w.extend(flags);
        Some(w)
    }

    /// The gate of this command asked by an agent of group `own` (see
    /// [`Gate`]): reads and the main loop's commands are `Now`.
    pub fn gate(&self, own: &str) -> Gate {
        let (resource, verb) = (self.spec.resource, self.spec.verb);
        if self.spec.served != Served::Central
            || matches!(verb, Verb::List | Verb::Get | Verb::ConfigGet)
            || matches!(
                resource,
                Resource::Approvals | Resource::UserDms | Resource::DroppedMessages
            )
        {
            return Gate::Now;
        }
        // Read as the handler reads it (a number is its decimal text), so
        // no spelling of another group's id slips past as "own".
        let names_other = |key: &str| {
            self.args
                .opt_str(key)
                .ok()
                .flatten()
                .is_some_and(|v| !v.trim().is_empty() && v != own)
        };
        let beyond = match resource {
            Resource::Groups => {
                matches!(verb, Verb::Create | Verb::Delete)
                    || names_other("id")
                    || OWNER_CONFIG_KEYS.iter().any(|k| self.args.has(k))
            }
            Resource::Members | Resource::Destinations => names_other("ag"),
            _ => true,
        };
        if beyond {
            Gate::Owner
        } else if matches!(
            (resource, verb),
            (Resource::Members, Verb::Add | Verb::Remove)
                | (Resource::Destinations, Verb::Add)
                | (Resource::Groups, Verb::ConfigSet)
        ) {
            Gate::Approval
        } else {
            Gate::Now
        }
    }
}

impl Args {
    /// Folds aliases and the positional id, refuses unknown keys naming
    /// the accepted ones, and types every value by [`kind_of`].
    pub fn new(spec: &'static Spec, raw: &Value) -> Result<Args, Refusal> {
        let cmd = spec.name;
        let invalid = |m: String| Err(Refusal::invalid(m));
        let mut m = match raw {
            Value::Null => Map::new(),
            Value::Object(m) => m.clone(),
            other => return invalid(format!("{cmd}: args must be a JSON object, not {other}")),
        };
        for (alias, key) in ALIASES {
            if let Some(v) = m.remove(*alias) {
                match m.get(*key) {
                    Some(existing) if *existing != v => {
                        return invalid(format!(
                            "{cmd}: --{alias} and --{key} are the same argument; give it once"
                        ))
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
                        return invalid(format!(
                            "{cmd}: the positional id is --{target} here; give it once"
                        ))
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
            return invalid(format!(
                "{cmd}: unknown argument --{}; accepted: {accepted}",
                unknown.join(", --")
            ));
        }
        let mut typed = BTreeMap::new();
        for key in spec.keys {
            if let Some(v) = m.get(*key) {
                typed.insert(*key, typed_value(cmd, key, v)?);
            }
        }
        let args = Args { cmd, m: typed };
        if spec.is_list() {
            args.page()?;
        }
        Ok(args)
    }

    /// The command's wire name (for messages).
    pub fn cmd(&self) -> &'static str {
        self.cmd
    }

    /// Whether the key was given (even as null).
    pub fn has(&self, key: &str) -> bool {
        self.m.contains_key(key)
    }

    /// The typed value of a key.
    pub fn get(&self, key: &str) -> Option<&Arg> {
        self.m.get(key)
    }

    /// A text argument; `null` (and absent) = `None`.
    pub fn opt_str(&self, key: &str) -> Result<Option<String>, Refusal> {
        match self.m.get(key) {
            None | Some(Arg::Null) => Ok(None),
            Some(Arg::Text(s)) => Ok(Some(s.clone())),
            Some(Arg::Int(n)) => Ok(Some(n.to_string())),
            Some(other) => Err(self.wrong_kind(key, other)),
        }
    }

    /// A required, non-blank text argument; the error names it and shows
    /// an example.
    pub fn req_str(&self, key: &str, example: &str) -> Result<String, Refusal> {
        match self.opt_str(key)? {
            Some(s) if !s.trim().is_empty() => Ok(s),
            _ => Err(Refusal::invalid(format!(
                "{} needs --{key} (e.g. {example})",
                self.cmd
            ))),
        }
    }

    /// The row id (`args.id`, the CLI's positional).
    pub fn id(&self, example: &str) -> Result<String, Refusal> {
        match self.opt_str("id")? {
            Some(s) if !s.trim().is_empty() => Ok(s),
            _ => Err(Refusal::invalid(format!(
                "{} needs an id (e.g. {example})",
                self.cmd
            ))),
        }
    }

    /// A nullable text column for an update: absent = leave, `null` or
    /// blank = clear.
    pub fn nullable_str(&self, key: &str) -> Result<Option<Option<String>>, Refusal> {
        if !self.has(key) {
            return Ok(None);
        }
        Ok(Some(self.opt_str(key)?.filter(|s| !s.trim().is_empty())))
    }

    pub fn opt_bool(&self, key: &str) -> Result<Option<bool>, Refusal> {
        match self.m.get(key) {
            None | Some(Arg::Null) => Ok(None),
            Some(Arg::Bool(b)) => Ok(Some(*b)),
            Some(other) => Err(self.wrong_kind(key, other)),
        }
    }

    pub fn opt_int(&self, key: &str) -> Result<Option<i64>, Refusal> {
        match self.m.get(key) {
            None | Some(Arg::Null) => Ok(None),
            Some(Arg::Int(n)) => Ok(Some(*n)),
            Some(other) => Err(self.wrong_kind(key, other)),
        }
    }

    /// A nullable integer column for an update (absent = leave, null/blank
    /// = clear); its minimum was checked when parsed.
    pub fn nullable_int(&self, key: &str) -> Result<Option<Option<i64>>, Refusal> {
        if !self.has(key) {
            return Ok(None);
        }
        Ok(Some(self.opt_int(key)?))
    }

    /// A choice argument as its enum.
    pub fn opt_choice<T: std::str::FromStr>(&self, key: &str) -> Result<Option<T>, Refusal> {
        match self.opt_str(key)? {
            None => Ok(None),
            Some(s) => s.parse::<T>().map(Some).map_err(|_| {
                Refusal::invalid(format!("{}: --{key} {s:?} is not a choice", self.cmd))
            }),
        }
    }

    /// A JSON argument: absent = leave, `Some(None)` = clear.
    pub fn json(&self, key: &str) -> Result<Option<Option<Value>>, Refusal> {
        match self.m.get(key) {
            None => Ok(None),
            Some(Arg::Null) => Ok(Some(None)),
            Some(Arg::Json(v)) => Ok(Some(Some(v.clone()))),
            Some(other) => Err(self.wrong_kind(key, other)),
        }
    }

    /// `limit` (1..=200, default 200) and `offset` (≥ 0, default 0).
    pub fn page(&self) -> Result<(i64, i64), Refusal> {
        let limit = self.opt_int("limit")?.unwrap_or(PAGE);
        if !(1..=PAGE).contains(&limit) {
            return Err(Refusal::invalid(format!(
                "{}: --limit must be between 1 and {PAGE}, e.g. --limit 50",
                self.cmd
            )));
        }
        let offset = self.opt_int("offset")?.unwrap_or(0);
        if offset < 0 {
            return Err(Refusal::invalid(format!(
                "{}: --offset must be 0 or more, e.g. --offset 200",
                self.cmd
            )));
        }
        Ok((limit, offset))
    }

    /// The arguments as a JSON object of canonical keys (what the main
    /// loop's handlers read).
    pub fn to_json(&self) -> Value {
        AdminCommand {
            spec: Spec::find(self.cmd).expect("made from a spec"),
            args: self.clone(),
        }
        .args_json()
    }

    fn wrong_kind(&self, key: &str, v: &Arg) -> Refusal {
        Refusal::invalid(format!(
            "{}: --{key} is read as another type than it was given ({v:?}); this is a bug in the admin table",
            self.cmd
        ))
    }
}

/// Types one value by its key's [`Kind`]; the error names the flag and
/// shows an example.
fn typed_value(cmd: &str, key: &str, v: &Value) -> Result<Arg, Refusal> {
    let invalid = |m: String| Err(Refusal::invalid(m));
    match kind_of(key) {
        Kind::Text | Kind::Choice(_) => {
            let text = match v {
                Value::Null => return Ok(Arg::Null),
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                other => return invalid(format!("{cmd}: --{key} must be text, not {other}")),
            };
            match kind_of(key) {
                Kind::Choice(names) if !names.contains(&text.as_str()) => invalid(format!(
                    "{cmd}: --{key} {text:?} is not one of {} (e.g. --{key} {})",
                    names.join(", "),
                    names[0]
                )),
                _ => Ok(Arg::Text(text)),
            }
        }
        Kind::Bool => {
            let bad = || {
                invalid(format!(
                    "{cmd}: --{key} must be true or false (also 1/0, yes/no), e.g. --{key} true"
                ))
            };
            match v {
                Value::Null => Ok(Arg::Null),
                Value::Bool(b) => Ok(Arg::Bool(*b)),
                Value::Number(n) => match n.as_i64() {
                    Some(0) => Ok(Arg::Bool(false)),
                    Some(1) => Ok(Arg::Bool(true)),
                    _ => bad(),
                },
                Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
                    "true" | "1" | "yes" => Ok(Arg::Bool(true)),
                    "false" | "0" | "no" => Ok(Arg::Bool(false)),
                    _ => bad(),
                },
                _ => bad(),
            }
        }
        Kind::Int { example } => int(cmd, key, v, example),
        Kind::Limit => int(cmd, key, v, 50),
        Kind::Offset => int(cmd, key, v, 200),
        Kind::IntAtLeast { min, example } => {
            let n = int(cmd, key, v, example)?;
            match n {
                Arg::Int(n) if n < min => invalid(format!(
                    "{cmd}: --{key} must be at least {min}, e.g. --{key} {example}"
                )),
                other => Ok(other),
            }
        }
        Kind::Json => match v {
            Value::Null => Ok(Arg::Null),
            Value::String(t) if t.trim().is_empty() => Ok(Arg::Null),
            Value::String(t) => serde_json::from_str::<Value>(t).map(Arg::Json).or_else(|e| {
                invalid(format!(
                    "{cmd}: --{key} is not valid JSON ({e}); quote it for the shell, e.g. --{key} '[]'"
                ))
            }),
            other => Ok(Arg::Json(other.clone())),
        },
    }
}

fn int(cmd: &str, key: &str, v: &Value, example: i64) -> Result<Arg, Refusal> {
    let bad = || {
        Err(Refusal::invalid(format!(
            "{cmd}: --{key} must be a whole number, e.g. --{key} {example}"
        )))
    };
    match v {
        Value::Null => Ok(Arg::Null),
        Value::Number(n) => n.as_i64().map(Arg::Int).map_or_else(bad, Ok),
        Value::String(s) if s.trim().is_empty() => Ok(Arg::Null),
        Value::String(s) => s.trim().parse::<i64>().map(Arg::Int).or_else(|_| bad()),
        _ => bad(),
    }
}

/// The CLI's words parsed: help, or a command with its arguments as the
/// strings given (`-` in a key is `_`; the positional id is `args.id`).
#[derive(Debug, PartialEq)]
pub enum Words {
    Help,
    Request {
        spec: &'static Spec,
        args: Map<String, Value>,
        /// `--json`: print the raw response.
        json: bool,
    },
}

/// Parses the words after `pinch admin`. `Err` is a usage message naming
/// the fix (the values are typed later, by [`AdminCommand::with_spec`]).
pub fn parse_words(words: &[String]) -> Result<Words, String> {
    let mut pos: Vec<&str> = Vec::new();
    let mut args = Map::new();
    let mut json = false;
    let mut i = 0;
    while i < words.len() {
        let w = words[i].as_str();
        i += 1;
        match w {
            "--json" => json = true,
            "--help" | "-h" => return Ok(Words::Help),
            "help" if pos.is_empty() => return Ok(Words::Help),
            _ if w.starts_with("--") => {
                let (key, value) = match w[2..].split_once('=') {
                    Some((k, v)) => (k, v.to_owned()),
                    None => {
                        let k = &w[2..];
                        match words.get(i) {
                            Some(v) if !v.starts_with("--") => {
                                i += 1;
                                (k, v.clone())
                            }
                            _ => return Err(format!("--{k} needs a value (e.g. --{k} VALUE; use --{k}=VALUE for a value that starts with --)")),
                        }
                    }
                };
                if key.is_empty()
                    || !key
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
                {
                    return Err(format!(
                        "{w:?} is not a --key (keys are letters, digits, '-' and '_')"
                    ));
                }
                let key = key.replace('-', "_");
                if args.insert(key.clone(), Value::String(value)).is_some() {
                    return Err(format!("--{key} given twice"));
                }
            }
            // A single-dash word that is not a number (`-5`, a Telegram
            // chat id) is a flag this parser does not have.
            _ if w.len() > 1
                && w.starts_with('-')
                && !w[1..].starts_with(|c: char| c.is_ascii_digit()) =>
            {
                return Err(format!(
                    "unknown flag {w:?}: arguments are --key value (or --key=value), plus --json"
                ));
            }
            _ => pos.push(w),
        }
    }
    let Some(&resource) = pos.first() else {
        return Err(format!(
            "give a resource and a verb, e.g. `pinch admin sessions list`; resources: {}",
            Resource::NAMES.join(", ")
        ));
    };
    let Some(r) = Resource::parse(resource) else {
        return Err(format!(
            "unknown resource {resource:?}; resources: {}",
            Resource::NAMES.join(", ")
        ));
    };
    let verbs = || {
        r.verbs()
            .iter()
            .map(|v| v.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let Some(&verb) = pos.get(1) else {
        return Err(format!("give a verb for {resource}; verbs: {}", verbs()));
    };
    let Some(spec) = Verb::parse(verb).and_then(|v| Spec::of(r, v)) else {
        return Err(format!(
            "unknown verb {verb:?} for {resource}; verbs: {}",
            verbs()
        ));
    };
    if let Some(extra) = pos.get(3) {
        return Err(format!(
            "unexpected argument {extra:?}: give one id, then --key value pairs"
        ));
    }
    if let Some(id) = pos.get(2) {
        if args.contains_key("id") {
            return Err("the id is given twice (positional and --id); give it once".into());
        }
        args.insert("id".into(), Value::String((*id).to_owned()));
    }
    if spec.needs_id && !args.contains_key("id") {
        return Err(format!(
            "{resource} {verb} needs an id: pinch admin {resource} {verb} <id>{}",
            if r == Resource::Sessions {
                " (see `pinch admin sessions list`)"
            } else {
                ""
            }
        ));
    }
    Ok(Words::Request { spec, args, json })
}

#[cfg(test)]
mod tests;
