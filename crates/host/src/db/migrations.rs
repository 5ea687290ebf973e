//! The central DB's migrations, applied in order by [`super::central::Central::migrate`].
//! A shipped migration is never edited; changes come as new, additive ones.

pub const MIGRATIONS: &[(&str, &str)] = &[
    (
        "0001_core",
    "
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE agent_groups (
  id TEXT PRIMARY KEY, name TEXT NOT NULL, folder TEXT NOT NULL UNIQUE, provider TEXT,
  created_at TEXT NOT NULL);
CREATE TABLE agent_configs (
  agent_group_id TEXT PRIMARY KEY REFERENCES agent_groups(id) ON DELETE CASCADE,
  provider TEXT, model TEXT, assistant_name TEXT, batch_size INTEGER,
  mcp_servers TEXT, packages TEXT, extra_mounts TEXT, egress_allow TEXT, sandbox TEXT,
  admin_scope TEXT NOT NULL DEFAULT 'disabled' CHECK (admin_scope IN ('disabled','group','global')),
  can_create_agents INTEGER NOT NULL DEFAULT 0, idle_exit_s INTEGER, claim_stuck_s INTEGER,
  updated_at TEXT NOT NULL);
CREATE TABLE messaging_groups (
  id TEXT PRIMARY KEY, channel_type TEXT NOT NULL, platform_id TEXT NOT NULL, name TEXT,
  is_group INTEGER NOT NULL DEFAULT 0,
  unknown_sender_policy TEXT NOT NULL DEFAULT 'request_approval'
    CHECK (unknown_sender_policy IN ('strict','request_approval','public')),
  denied_at TEXT, created_at TEXT NOT NULL,
  UNIQUE (channel_type, platform_id));
CREATE TABLE wirings (
  id TEXT PRIMARY KEY,
  messaging_group_id TEXT NOT NULL REFERENCES messaging_groups(id) ON DELETE CASCADE,
  agent_group_id TEXT NOT NULL REFERENCES agent_groups(id) ON DELETE CASCADE,
  engage_mode TEXT NOT NULL CHECK (engage_mode IN ('pattern','mention','mention-sticky')),
  engage_pattern TEXT,
  sender_scope TEXT NOT NULL DEFAULT 'known' CHECK (sender_scope IN ('all','known')),
  ignored_message_policy TEXT NOT NULL DEFAULT 'drop' CHECK (ignored_message_policy IN ('drop','accumulate')),
  session_mode TEXT NOT NULL DEFAULT 'shared' CHECK (session_mode IN ('shared','per-thread','agent-shared')),
  priority INTEGER NOT NULL DEFAULT 0, created_at TEXT NOT NULL,
  UNIQUE (messaging_group_id, agent_group_id));
CREATE TABLE users (id TEXT PRIMARY KEY, kind TEXT NOT NULL, display_name TEXT, created_at TEXT NOT NULL);
CREATE TABLE user_roles (
  user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
  role TEXT NOT NULL CHECK (role IN ('owner','admin')),
  agent_group_id TEXT REFERENCES agent_groups(id) ON DELETE CASCADE,
  granted_by TEXT, granted_at TEXT NOT NULL,
  CHECK (role <> 'owner' OR agent_group_id IS NULL));
CREATE UNIQUE INDEX user_roles_key ON user_roles (user_id, role, coalesce(agent_group_id, ''));
CREATE TABLE agent_group_members (
  user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
  agent_group_id TEXT NOT NULL REFERENCES agent_groups(id) ON DELETE CASCADE,
  added_by TEXT, added_at TEXT NOT NULL,
  PRIMARY KEY (user_id, agent_group_id));
CREATE TABLE sessions (
  id TEXT PRIMARY KEY,
  agent_group_id TEXT NOT NULL REFERENCES agent_groups(id),
  messaging_group_id TEXT REFERENCES messaging_groups(id),
  thread_id TEXT, provider TEXT,
  status TEXT NOT NULL DEFAULT 'active' CHECK (status IN ('active','closed')),
  runner_status TEXT NOT NULL DEFAULT 'stopped' CHECK (runner_status IN ('stopped','starting','running','stopping')),
  runner_id TEXT, runner_started_at TEXT, last_active TEXT,
  quarantined_at TEXT, quarantine_reason TEXT, created_at TEXT NOT NULL);
CREATE UNIQUE INDEX sessions_active_key ON sessions
  (agent_group_id, coalesce(messaging_group_id, ''), coalesce(thread_id, '')) WHERE status = 'active';
CREATE TABLE runner_exits (
  session_id TEXT NOT NULL, runner_id TEXT NOT NULL, started_at TEXT, exited_at TEXT NOT NULL,
  exit_code INTEGER, signal INTEGER, cause TEXT NOT NULL, detail TEXT);
CREATE INDEX runner_exits_session ON runner_exits (session_id, exited_at);
CREATE TABLE agent_destinations (
  agent_group_id TEXT NOT NULL REFERENCES agent_groups(id) ON DELETE CASCADE,
  local_name TEXT NOT NULL,
  target_type TEXT NOT NULL CHECK (target_type IN ('channel','agent')),
  target_id TEXT NOT NULL, created_at TEXT NOT NULL,
  PRIMARY KEY (agent_group_id, local_name));
",
), (
    // Questions an agent asked (ask_user_question) and the host delivered
    // with buttons (SPEC §7.3). `question_id` is the host's short id used in
    // the button callbacks (`q:<id>:<index>`, ≤ 64 bytes); the agent's own
    // id stays in `agent_question_id`, so an agent cannot aim its buttons at
    // another session's question.
    "0002_pending_questions",
    "
CREATE TABLE pending_questions (
  question_id TEXT PRIMARY KEY,
  session_id TEXT NOT NULL,
  agent_question_id TEXT NOT NULL,
  message_out_id TEXT NOT NULL,
  channel_type TEXT, platform_id TEXT, thread_id TEXT,
  title TEXT, options_json TEXT NOT NULL,
  expires_at TEXT NOT NULL, created_at TEXT NOT NULL);
CREATE INDEX pending_questions_out ON pending_questions (session_id, message_out_id);
",
), (
    // Permissions and approvals (SPEC §3.1, §7.1, §7.2). One card table for
    // every approval (`pending_approvals`, button callbacks `a:<id>:<n>`);
    // sender and registration requests add their dedupe rows, which point
    // at their card. `dropped_messages` is the drop audit, one row per
    // (conversation, sender, reason, agent) with a count.
    "0003_permissions",
    "
CREATE TABLE user_dms (
  user_id TEXT NOT NULL, channel_type TEXT NOT NULL,
  messaging_group_id TEXT NOT NULL REFERENCES messaging_groups(id) ON DELETE CASCADE,
  resolved_at TEXT NOT NULL,
  PRIMARY KEY (user_id, channel_type));
CREATE TABLE pending_approvals (
  approval_id TEXT PRIMARY KEY,
  session_id TEXT, agent_group_id TEXT, request_id TEXT,
  action TEXT NOT NULL, payload TEXT NOT NULL,
  title TEXT NOT NULL, options_json TEXT NOT NULL,
  approver_user_id TEXT NOT NULL,
  channel_type TEXT, platform_id TEXT, thread_id TEXT, platform_message_id TEXT,
  status TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending','approved','rejected','expired')),
  decided_by TEXT, decided_at TEXT, result TEXT,
  expires_at TEXT NOT NULL, created_at TEXT NOT NULL);
CREATE INDEX pending_approvals_open ON pending_approvals (status, expires_at);
CREATE TABLE pending_sender_approvals (
  id TEXT PRIMARY KEY,
  messaging_group_id TEXT NOT NULL REFERENCES messaging_groups(id) ON DELETE CASCADE,
  agent_group_id TEXT NOT NULL REFERENCES agent_groups(id) ON DELETE CASCADE,
  sender_identity TEXT NOT NULL, sender_name TEXT,
  original_event TEXT NOT NULL, approver_user_id TEXT NOT NULL, approval_id TEXT NOT NULL,
  created_at TEXT NOT NULL,
  UNIQUE (messaging_group_id, sender_identity));
CREATE TABLE pending_channel_approvals (
  messaging_group_id TEXT PRIMARY KEY REFERENCES messaging_groups(id) ON DELETE CASCADE,
  agent_group_id TEXT, original_event TEXT NOT NULL, approver_user_id TEXT NOT NULL, approval_id TEXT NOT NULL,
  awaiting_name_channel TEXT, awaiting_name_platform_id TEXT,
  created_at TEXT NOT NULL);
CREATE TABLE dropped_messages (
  channel_type TEXT NOT NULL, platform_id TEXT NOT NULL,
  user_id TEXT NOT NULL DEFAULT '', sender_name TEXT,
  reason TEXT NOT NULL, messaging_group_id TEXT, agent_group_id TEXT NOT NULL DEFAULT '',
  message_count INTEGER NOT NULL DEFAULT 1, first_seen TEXT NOT NULL, last_seen TEXT NOT NULL,
  PRIMARY KEY (channel_type, platform_id, user_id, reason, agent_group_id));
",
), (
    // Issue 15: the crash budget's abnormal exits, so a restart of the
    // host does not forget them (epoch ms; lifting a quarantine clears them).
    "0004_crash_budget",
    "
CREATE TABLE crash_budget (session_id TEXT NOT NULL, at_ms INTEGER NOT NULL);
CREATE INDEX crash_budget_session ON crash_budget (session_id, at_ms);
",
), (
    // Issue 15: the generation of each session's inbound.db (a random id
    // the host also stores inside the file), so a file that vanished or
    // was swapped is noticed. NULL = not recorded yet (adopted as found).
    "0005_session_db_generation",
    "ALTER TABLE sessions ADD COLUMN inbound_generation TEXT;",
), ("0006_host_notices", HOST_NOTICES), (
    // Issue 16: when an approval's card reached its approver. A card whose
    // approver's channel had no one connected (web chat with no tab open)
    // waits and is sent when the channel is back. Cards addressed before
    // this column existed count as sent, except web chat's: those may be
    // the ones that found no tab, and the page shows a card id once.
    "0007_approval_card_sent",
    "ALTER TABLE pending_approvals ADD COLUMN card_sent_at TEXT;
     UPDATE pending_approvals SET card_sent_at = created_at
       WHERE channel_type IS NOT NULL AND channel_type <> 'web';",
), (
    // Issue 17: an agent group's web policy (`web_fetch` on/off, allowed
    // and denied hosts), a JSON object; NULL = the install's `[web_fetch]`.
    "0008_agent_web_policy",
    "ALTER TABLE agent_configs ADD COLUMN web TEXT;",
)];

/// `host_notices` (see `db::notices`), applied after `0005_session_db_generation` as the migration `0006_host_notices`.
const HOST_NOTICES: &str = "
CREATE TABLE host_notices (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  channel_type TEXT NOT NULL, platform_id TEXT NOT NULL, thread_id TEXT,
  text TEXT NOT NULL, created_at TEXT NOT NULL,
  attempts INTEGER NOT NULL DEFAULT 0, last_error TEXT);
";
