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
//! key that is not text), both in `admin/table.rs`, then the handler in the
//! host's module for its resource (`crates/host/src/db/admin/<resource>.rs`).

use serde_json::{Map, Value};

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
        Skills = "skills",
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

/// Who serves a command: the central-DB handlers (`pinch_host::db::admin`)
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

mod args;
mod table;
mod words;

pub use args::{Arg, Args};
pub use table::*;
pub use words::{parse_words, Words};

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

#[cfg(test)]
mod tests;
