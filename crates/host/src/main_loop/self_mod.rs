//! Self-modification (SPEC §7.6): an agent asks for packages
//! (`install_packages`) or an MCP server (`add_mcp_server`). Both always
//! need an admin's approval (a card to the group's admins, then global
//! admins, then owners); the tool answers `approval-pending`.
//!
//! Once approved: the group's config (`packages` / `mcp_servers`) is
//! updated in the same transaction as the decision; packages are installed
//! into the group's tools folder off the main loop (`crate::tools_dir`, in
//! an installer sandbox of its own); then the session is told (an
//! `action_result`) and the group's live runners are stopped so the next
//! spawn has the new tools or server — a runner past its first poll never
//! reloads its config (lesson 34).

use pinch_proto::content::{InContent, SystemIn};

use serde_json::{json, Value};

use super::{Event, Host};
use crate::admin::{err, Reply};
use crate::db::agents::ConfigList;
use crate::db::permissions::{Approval, ApprovalOption};

pub(super) const ACTIONS: &[&str] = &["install_packages", "add_mcp_server"];

impl Host {
    pub(super) fn self_mod_request(
        &mut self,
        session_id: &str,
        out_id: &str,
        action: &str,
        v: &Value,
    ) -> Result<(), String> {
        let request_id = v
            .get("request_id")
            .and_then(Value::as_str)
            .filter(|r| !r.is_empty() && r.len() <= 64);
        let Some(request_id) = request_id.map(str::to_owned) else {
            return Err(format!("{action} needs a request_id of 1 to 64 bytes"));
        };
        let resp_id = format!("admin-resp:{out_id}");
        if self
            .sessions
            .get(session_id)
            .is_some_and(|s| super::agent_admin::session_has_row(&s.dir, &resp_id))
        {
            return Ok(());
        }
        let reply = self.self_mod_card(session_id, &request_id, action, v);
        if let Err(e) = &reply {
            tracing::info!(session_id = %session_id, action, code = e.code, "{}", e.message);
        }
        let (ok, body) = match reply {
            Ok(data) => (true, data),
            Err(e) => (false, json!({"code": e.code, "message": e.message})),
        };
        self.system_in(
            session_id,
            &resp_id,
            InContent::System(SystemIn::AdminResponse {
                request_id,
                ok,
                body,
            }),
            false,
        );
        Ok(())
    }

    fn self_mod_card(
        &mut self,
        session_id: &str,
        request_id: &str,
        action: &str,
        v: &Value,
    ) -> Reply {
        let ag = self
            .sessions
            .get(session_id)
            .map(|s| s.row.agent_group_id.clone())
            .ok_or_else(|| err("not-found", "the session is not active"))?;
        let (payload, title) = match action {
            "install_packages" => {
                let manager = v
                    .get("manager")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned();
                let packages: Vec<String> = v
                    .get("packages")
                    .and_then(Value::as_array)
                    .map(|a| {
                        a.iter()
                            .filter_map(|p| p.as_str().map(str::to_owned))
                            .collect()
                    })
                    .unwrap_or_default();
                if packages.is_empty() || packages.len() > crate::tools_dir::MAX_PACKAGES {
                    return Err(err(
                        "invalid-args",
                        format!("give 1 to {} packages", crate::tools_dir::MAX_PACKAGES),
                    ));
                }
                for p in &packages {
                    crate::tools_dir::check_package(&manager, p)
                        .map_err(|e| err("invalid-args", e))?;
                }
                (
                    json!({"manager": manager, "packages": packages}),
                    format!(
                        "Agent {ag} asks to install with {manager}: {}",
                        packages.join(", ")
                    ),
                )
            }
            _ => {
                let server: pinch_proto::runner_config::McpServerConfig =
                    serde_json::from_value(v.get("server").cloned().unwrap_or(Value::Null))
                        .map_err(|e| {
                            err(
                                "invalid-args",
                                format!("the server must be {{name, command, args, env}}: {e}"),
                            )
                        })?;
                let problems = server.problems();
                if !problems.is_empty() {
                    return Err(err("invalid-args", problems.join("; ")));
                }
                if self
                    .central
                    .agent_mcp_servers(&ag)
                    .map_err(|e| err("handler-error", format!("{e:#}")))?
                    .iter()
                    .any(|s| s.name == server.name)
                {
                    return Err(err(
                        "invalid-args",
                        format!(
                            "agent group {ag} already has an MCP server named {:?}",
                            server.name
                        ),
                    ));
                }
                let title = format!(
                    "Agent {ag} asks to add the MCP server {:?}: {} {}",
                    server.name,
                    server.command,
                    server.args.join(" ")
                );
                (json!({"server": server}), title)
            }
        };
        let pending = |id: &str| {
            err(
                "approval-pending",
                format!("{action} needs an admin's approval (request {id})."),
            )
        };
        if let Some(id) = self
            .central
            .approval_for_request(session_id, request_id)
            .map_err(|e| err("handler-error", format!("{e:#}")))?
        {
            return Err(pending(&id));
        }
        let tiers = self
            .central
            .approver_tiers(Some(&ag))
            .map_err(|e| err("handler-error", format!("{e:#}")))?;
        let Some(first) = tiers.iter().flatten().next().cloned() else {
            return Err(err(
                "handler-error",
                format!("agent group {ag} has no admin or owner to approve this"),
            ));
        };
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
        let a = self.new_approval(
            Some(session_id),
            Some(&ag),
            Some(request_id),
            action,
            payload,
            title,
            options,
            &first,
        );
        self.central
            .insert_approval(&a)
            .map_err(|e| err("handler-error", format!("{e:#}")))?;
        self.send_agent_card(session_id, &a, tiers);
        Err(pending(&a.approval_id))
    }

    /// An admin decided an `install_packages` / `add_mcp_server` card.
    pub(super) fn decide_self_mod(
        &mut self,
        a: &Approval,
        value: &str,
        by: &str,
    ) -> anyhow::Result<String> {
        let ag = a.agent_group_id.clone().unwrap_or_default();
        if value != "approve" {
            if !self
                .central
                .decide_approval(&a.approval_id, "rejected", by, None)?
            {
                return Ok("That request was already decided.".into());
            }
            self.self_mod_result(a, "rejected", json!({"request_id": a.request_id, "ok": false, "error": {"code": "rejected", "message": format!("rejected by {by}")}}));
            return Ok(format!("Rejected: {} will not happen.", a.action));
        }
        // The config change commits with the decision.
        let (action, payload, id) = (a.action.clone(), a.payload.clone(), a.approval_id.clone());
        let decided = self.central.atomically(|c| {
            if !c.decide_approval(&id, "approved", by, None)? {
                return Ok(false);
            }
            let col = if action == "add_mcp_server" {
                ConfigList::McpServers
            } else {
                ConfigList::Packages
            };
            let cur: Option<String> = c.config_list(&ag, col)?;
            let mut list: Vec<Value> = cur
                .as_deref()
                .and_then(|j| serde_json::from_str(j).ok())
                .unwrap_or_default();
            if action == "add_mcp_server" {
                list.push(payload["server"].clone());
            } else {
                for p in payload["packages"].as_array().into_iter().flatten() {
                    let entry = json!({"manager": payload["manager"], "name": p});
                    if !list.contains(&entry) {
                        list.push(entry);
                    }
                }
            }
            let n = c.set_config_list(
                &ag,
                col,
                &Value::Array(list).to_string(),
                &pinch_proto::time::now(),
            )?;
            anyhow::ensure!(n == 1, "agent group {ag} has no config row");
            Ok(true)
        })?;
        if !decided {
            return Ok("That request was already decided.".into());
        }
        if a.action == "add_mcp_server" {
            let name = a.payload["server"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            self.self_mod_result(a, "approved", json!({"request_id": a.request_id, "ok": true, "data": {"server": name, "note": "the server starts with your next turn"}}));
            self.restart_group(&ag);
            return Ok(format!(
                "Approved: MCP server {name:?} added; the agent restarts with it."
            ));
        }
        // Install off the main loop; the outcome comes back as an event.
        let folder = self
            .central
            .agent_folder(&ag)?
            .unwrap_or_else(|| ag.clone());
        let data_root = self.data.root().to_owned();
        let manager = a.payload["manager"].as_str().unwrap_or_default().to_owned();
        let packages: Vec<String> = a.payload["packages"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| p.as_str().map(str::to_owned))
            .collect();
        let sandboxed = self.sandbox.kind() != crate::sandbox::Kind::Process;
        let (events, approval) = (self.events.clone(), a.clone());
        tracing::info!(agent_group = %ag, manager = %manager, packages = ?packages, "installing approved packages");
        tokio::task::spawn_blocking(move || {
            let result =
                crate::tools_dir::install(&data_root, &folder, &manager, &packages, sandboxed);
            let _ = events.send(Event::ToolsInstalled {
                approval: Box::new(approval),
                result,
            });
        });
        Ok("Approved: installing; the agent is told when it is done.".into())
    }

    /// The installer finished (see [`Host::decide_self_mod`]).
    pub(super) fn tools_installed(&mut self, a: &Approval, result: Result<String, String>) {
        let ag = a.agent_group_id.clone().unwrap_or_default();
        match result {
            Ok(tail) => {
                tracing::info!(agent_group = %ag, "packages installed");
                self.self_mod_result(a, "approved", json!({"request_id": a.request_id, "ok": true, "data": {"installed": a.payload["packages"], "manager": a.payload["manager"], "output": tail, "note": "on PATH (and PYTHONPATH) from your next turn"}}));
                self.restart_group(&ag);
            }
            Err(e) => {
                tracing::warn!(agent_group = %ag, "installing approved packages failed: {e}");
                self.self_mod_result(a, "approved", json!({"request_id": a.request_id, "ok": false, "error": {"code": "handler-error", "message": e}}));
            }
        }
    }

    fn self_mod_result(&mut self, a: &Approval, status: &str, result: Value) {
        if let Some(sid) = a.session_id.clone() {
            let content = InContent::System(SystemIn::ActionResult {
                action: a.action.clone(),
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
    }

    /// Stops the group's live runners; their next spawn reads the new config.
    fn restart_group(&mut self, ag: &str) {
        let ids: Vec<String> = self
            .sessions
            .iter()
            .filter(|(_, s)| s.row.agent_group_id == ag && s.runner.is_some())
            .map(|(k, _)| k.clone())
            .collect();
        for id in ids {
            self.request_stop(&id);
            self.try_wake(&id);
        }
    }
}
