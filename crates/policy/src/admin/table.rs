//! The table of every admin command, the type of every argument key, and
//! the key lists they share: the one file a new command's words go in.

use super::{AdminScope, ApprovalStatus, Kind, Resource, Role, Served, Spec, TargetType, Verb};
use crate::route::{EngageMode, IgnoredPolicy, SenderScope, SessionMode, UnknownSenderPolicy};

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
        "mcp_servers" | "packages" | "extra_mounts" | "egress_allow" | "sandbox" | "web" => {
            Kind::Json
        }
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
    "web",
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
    "web",
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
    main_loop(c("groups-skills", R::Groups, V::Skills, &["id"], true)),
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
