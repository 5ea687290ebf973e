//! The agent's `admin` tool (SPEC §10), reaching the host as an
//! `admin_request` `system` row (routed by `agent_actions.rs`): it runs an
//! admin command as the agent's group under its `admin_scope`, parsed and
//! gated by the shared vocabulary (`pinch_policy::admin`, through
//! `crate::db::admin`). Commands that change who may reach what become an
//! approval card first (validated by a dry run that is rolled back), and
//! run once an admin approves — commands beyond the agent's own group or
//! touching a security boundary ([`Gate::Owner`]) only once an owner
//! approves, with global reach for that one command. The answer is an
//! `admin_response` row (the agent's `admin` tool waits for it); the
//! outcome of an approval arrives later as an `action_result` (`trigger=1`).

use pinch_proto::content::{InContent, SystemIn};

use serde_json::{json, Value};

use super::Host;
use crate::admin::{err, ErrorBody, Reply};
use crate::db::admin::{self as admin_cmds, AdminScope, Caller, Gate};
use crate::db::permissions::{Approval, ApprovalOption};

impl Host {
    /// `admin_request`: runs an admin command as the agent's group under
    /// its `admin_scope` and answers with an `admin_response` row.
    pub(super) fn admin_request(
        &mut self,
        session_id: &str,
        out_id: &str,
        v: &Value,
    ) -> Result<(), String> {
        let request_id = v
            .get("request_id")
            .and_then(Value::as_str)
            .filter(|r| !r.is_empty() && r.len() <= 64);
        let Some(request_id) = request_id.map(str::to_owned) else {
            return Err("admin_request needs a request_id of 1 to 64 bytes".into());
        };
        // Idempotent per row: a row delivered twice (a slow main
        // loop, a host crash before the ledger entry) runs once.
        let resp_id = format!("admin-resp:{out_id}");
        if self
            .sessions
            .get(session_id)
            .is_some_and(|s| session_has_row(&s.dir, &resp_id))
        {
            return Ok(());
        }
        let command = v
            .get("command")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let args = v.get("args").cloned().unwrap_or_else(|| json!({}));
        let reply = self.agent_admin(session_id, &request_id, &command, &args);
        if let Err(e) = &reply {
            tracing::info!(session_id = %session_id, command = %command, code = e.code, "agent admin request refused or failed: {}", e.message);
        }
        let (ok, body) = match reply {
            Ok(data) => (true, data),
            Err(e) => (false, json!({"code": e.code, "message": e.message})),
        };
        let content = InContent::System(SystemIn::AdminResponse {
            request_id: request_id.clone(),
            ok,
            body,
        });
        self.system_in(session_id, &resp_id, content, false);
        Ok(())
    }

    fn agent_caller(&self, session_id: &str) -> Result<Caller, ErrorBody> {
        let ag = self
            .sessions
            .get(session_id)
            .map(|s| s.row.agent_group_id.clone())
            .ok_or_else(|| err("not-found", "the session is not active"))?;
        let scope: Option<String> = self
            .central
            .admin_scope(&ag)
            .map_err(|e| err("handler-error", e.to_string()))?;
        Ok(Caller::Agent {
            ag,
            scope: AdminScope::or_disabled(scope.as_deref()),
        })
    }

    fn agent_admin(
        &mut self,
        session_id: &str,
        request_id: &str,
        command: &str,
        args: &Value,
    ) -> Reply {
        let caller = self.agent_caller(session_id)?;
        let Caller::Agent { ag, scope } = caller.clone() else {
            unreachable!("an agent caller")
        };
        if scope == AdminScope::Disabled {
            return Err(err(
                "permission-denied",
                format!("admin commands are disabled for agent group {ag:?}; the owner can enable them with `pinch admin groups config-set {ag} --admin_scope group`"),
            ));
        }
        if let Some(r) = self.agent_session_command(&ag, scope, command, args) {
            return r;
        }
        let gate = admin_cmds::gate(&caller, command, args);
        if gate == Gate::Now {
            return admin_cmds::dispatch(&self.central.conn, &caller, command, args)
                .unwrap_or_else(|| {
                    Err(err(
                        "unknown-command",
                        format!("unknown command {command:?}"),
                    ))
                });
        }
        let who = if gate == Gate::Owner {
            "an owner's"
        } else {
            "an admin's"
        };
        let pending = |id: &str| {
            err(
                "approval-pending",
                format!("{command} needs {who} approval (request {id})."),
            )
        };
        if let Some(id) = self
            .central
            .approval_for_request(session_id, request_id)
            .map_err(|e| err("handler-error", format!("{e:#}")))?
        {
            return Err(pending(&id));
        }
        // Dry run, rolled back: a refused or invalid command is answered now
        // instead of bothering an approver. An owner-gated command is tried
        // with the reach it will run with once approved.
        let runs_as = if gate == Gate::Owner {
            Caller::Agent {
                ag: ag.clone(),
                scope: AdminScope::Global,
            }
        } else {
            caller.clone()
        };
        self.central
            .conn
            .execute_batch("SAVEPOINT agent_dry_run")
            .map_err(|e| err("handler-error", format!("could not check the command: {e}")))?;
        let dry = admin_cmds::dispatch(&self.central.conn, &runs_as, command, args);
        if self
            .central
            .conn
            .execute_batch("ROLLBACK TO agent_dry_run; RELEASE agent_dry_run")
            .is_err()
        {
            // Never leave a transaction open on the central DB.
            let _ = self.central.conn.execute_batch("ROLLBACK");
            return Err(err(
                "handler-error",
                "could not roll back the command's dry run",
            ));
        }
        dry.unwrap_or_else(|| {
            Err(err(
                "unknown-command",
                format!("unknown command {command:?}"),
            ))
        })?;
        // Commands that reach beyond the group, or that an agent with global
        // reach asks for, are for owners alone to approve: a group admin
        // must not be able to approve making themselves owner.
        let owners_only = gate == Gate::Owner || scope == AdminScope::Global;
        let tiers = if owners_only {
            vec![self
                .central
                .approver_tiers(None)
                .map_err(|e| err("handler-error", format!("{e:#}")))?
                .pop()
                .unwrap_or_default()]
        } else {
            self.central
                .approver_tiers(Some(&ag))
                .map_err(|e| err("handler-error", format!("{e:#}")))?
        };
        let Some(first) = tiers.iter().flatten().next().cloned() else {
            return Err(err(
                "handler-error",
                format!("agent group {ag} has no admin or owner to approve {command}"),
            ));
        };
        let shown = args.to_string();
        let shown = if shown.chars().count() > 300 {
            format!("{}…", shown.chars().take(300).collect::<String>())
        } else {
            shown
        };
        let title = format!("Agent {ag} asks to run `{command}` with {shown}");
        let options = vec![
            ApprovalOption {
                label: "Approve".into(),
                value: "approve".into(),
            },
            ApprovalOption {
                label: "Reject".into(),
                value: "reject".into(),
            },
        ];
        let payload = json!({"command": command, "args": args, "owners_only": owners_only, "beyond_scope": gate == Gate::Owner});
        let a: Approval = self.new_approval(
            Some(session_id),
            Some(&ag),
            Some(request_id),
            "admin_command",
            payload,
            title,
            options,
            &first,
        );
        self.central
            .insert_approval(&a)
            .map_err(|e| err("handler-error", format!("{e:#}")))?;
        self.send_agent_card(session_id, &a, tiers);
        tracing::info!(session_id = %session_id, approval = %a.approval_id, command = %command, "agent admin command waits for approval");
        Err(pending(&a.approval_id))
    }

    /// Sends a card an agent's request raised, approvers on the channel of
    /// the session's conversation first.
    pub(super) fn send_agent_card(
        &mut self,
        session_id: &str,
        a: &Approval,
        tiers: Vec<Vec<String>>,
    ) {
        let origin = self
            .sessions
            .get(session_id)
            .and_then(|s| s.row.messaging_group_id.clone())
            .and_then(|mg| self.central.messaging_group_by_id(&mg).ok().flatten())
            .map(|m| m.channel_type)
            .unwrap_or_default();
        self.send_card(a, tiers, &origin);
    }

    /// Session and host commands for an agent: `group` scope sees only its
    /// own group's sessions (a foreign id is `not-found`).
    fn agent_session_command(
        &mut self,
        ag: &str,
        scope: AdminScope,
        command: &str,
        args: &Value,
    ) -> Option<Reply> {
        let own = |r: &Value| scope == AdminScope::Global || r["agent_group"].as_str() == Some(ag);
        match command {
            "sessions-list" => Some(
                self.central
                    .session_states()
                    .map_err(|e| err("handler-error", format!("{e:#}")))
                    .map(|rows| Value::Array(rows.into_iter().filter(own).collect())),
            ),
            "sessions-get" => {
                let id = args.get("id").and_then(Value::as_str).unwrap_or_default();
                Some(
                    self.central
                        .session_states()
                        .map_err(|e| err("handler-error", format!("{e:#}")))
                        .and_then(|rows| {
                            rows.into_iter()
                                .find(|r| r["id"] == id && own(r))
                                .ok_or_else(|| err("not-found", format!("no session {id}")))
                        }),
                )
            }
            c if c.starts_with("sessions-")
                || c.starts_with("host-")
                || c.starts_with("approvals-approve")
                || c.starts_with("approvals-reject") =>
            {
                Some(Err(err(
                    "forbidden",
                    format!("{c} is for the owner (pinch admin), not for agents"),
                )))
            }
            _ => None,
        }
    }

    /// An admin decided an agent's approval-gated command.
    pub(super) fn decide_admin_command(
        &mut self,
        a: &Approval,
        value: &str,
        by: &str,
    ) -> anyhow::Result<String> {
        let command = a.payload["command"].as_str().unwrap_or_default().to_owned();
        let args = a.payload.get("args").cloned().unwrap_or_else(|| json!({}));
        let (status, result, text) = if value == "approve" {
            // It runs as the agent, under its scope as it is now (lowered
            // since the request? then it is refused).
            let r = match a.session_id.as_deref().map(|sid| self.agent_caller(sid)) {
                Some(Ok(Caller::Agent { scope: AdminScope::Disabled, ag })) => {
                    Err(err("permission-denied", format!("admin commands were disabled for agent group {ag:?} before this was approved")))
                }
                Some(Ok(caller)) => {
                    // An owner-approved command beyond the group's scope
                    // runs with global reach (the owner saw exactly these
                    // arguments on the card).
                    let caller = match caller {
                        Caller::Agent { ag, .. } if a.payload["beyond_scope"] == json!(true) => Caller::Agent { ag, scope: AdminScope::Global },
                        c => c,
                    };
                    admin_cmds::dispatch(&self.central.conn, &caller, &command, &args)
                        .unwrap_or_else(|| Err(err("unknown-command", format!("unknown command {command:?}"))))
                }
                Some(Err(e)) => Err(e),
                None => Err(err("handler-error", "the request has no session")),
            };
            if r.is_ok()
                && pinch_policy::admin::Spec::find(&command)
                    .is_some_and(pinch_policy::admin::Spec::reprojects)
            {
                self.reproject_all();
            }
            match r {
                Ok(data) => (
                    "approved",
                    json!({"request_id": a.request_id, "command": command, "ok": true, "data": data}),
                    format!("Approved: {command} ran."),
                ),
                Err(e) => (
                    "approved",
                    json!({"request_id": a.request_id, "command": command, "ok": false, "error": {"code": e.code, "message": e.message}}),
                    format!("Approved, but {command} failed: {}", e.message),
                ),
            }
        } else {
            (
                "rejected",
                json!({"request_id": a.request_id, "command": command, "ok": false, "error": {"code": "rejected", "message": format!("rejected by {by}")}}),
                format!("Rejected: {command} will not run."),
            )
        };
        if !self
            .central
            .decide_approval(&a.approval_id, status, by, Some(&result))?
        {
            return Ok("That request was already decided.".into());
        }
        if let Some(sid) = a.session_id.clone() {
            let content = InContent::System(SystemIn::ActionResult {
                action: "admin_command".into(),
                status: status.into(),
                result,
            });
            self.system_in(
                &sid,
                &format!("approval-result:{}", a.approval_id),
                content,
                true,
            );
        }
        Ok(text)
    }
}

/// Whether the session's `inbound.db` already has a row with this id.
pub(super) fn session_has_row(dir: &crate::paths::SessionDir, id: &str) -> bool {
    let Ok(c) = pinch_proto::open::open_reader(&dir.inbound_db(), crate::session::BUSY) else {
        return false;
    };
    pinch_proto::inbound::has_row(&c, id).unwrap_or(false)
}
