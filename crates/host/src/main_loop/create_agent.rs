//! `create_agent` (SPEC §7.5, lesson 50): an agent asks for a new agent
//! group. A group with `can_create_agents` gets it at once; any other waits
//! for an approval card (the group's admins, then global admins, then
//! owners) — upstream ran it unchecked. Creating means: the group and its
//! config, its folder with `AGENT.md` holding the given instructions, and
//! two destinations — `<new name>` for the asker and `parent` for the new
//! agent — re-projected into live sessions. The answer is an
//! `admin_response` (the tool waits for it); an approval's outcome arrives
//! later as an `action_result`.

use pinch_proto::content::{InContent, SystemIn};

use serde_json::{json, Value};

use super::Host;
use crate::admin::{err, ErrorBody, Reply};
use crate::db::permissions::ApprovalOption;

/// Longest instructions accepted (the runner checks the same).
const MAX_INSTRUCTIONS: usize = 64 * 1024;

impl Host {
    pub(super) fn create_agent_request(
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
            return Err("create_agent needs a request_id of 1 to 64 bytes".into());
        };
        let resp_id = format!("admin-resp:{out_id}");
        if self
            .sessions
            .get(session_id)
            .is_some_and(|s| super::agent_admin::session_has_row(&s.dir, &resp_id))
        {
            return Ok(());
        }
        let reply = self.create_agent_reply(session_id, &request_id, v);
        match &reply {
            Ok(d) => {
                tracing::info!(session_id = %session_id, created = %d, "agent created by an agent")
            }
            Err(e) => {
                tracing::info!(session_id = %session_id, code = e.code, "create_agent refused or pending: {}", e.message)
            }
        }
        let (ok, body) = match reply {
            Ok(data) => (true, data),
            Err(e) => (false, json!({"code": e.code, "message": e.message})),
        };
        let content = InContent::System(SystemIn::AdminResponse {
            request_id,
            ok,
            body,
        });
        self.system_in(session_id, &resp_id, content, false);
        Ok(())
    }

    fn create_agent_reply(&mut self, session_id: &str, request_id: &str, v: &Value) -> Reply {
        let ag = self
            .sessions
            .get(session_id)
            .map(|s| s.row.agent_group_id.clone())
            .ok_or_else(|| err("not-found", "the session is not active"))?;
        let name = v
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .trim()
            .to_owned();
        let instructions = v
            .get("instructions")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        validate(&name, &instructions)?;
        let allowed: bool = self
            .central
            .can_create_agents(&ag)
            .map_err(|e| err("handler-error", e.to_string()))?;
        if allowed {
            return self.create_agent_now(&ag, &name, &instructions);
        }
        let pending = |id: &str| {
            err(
                "approval-pending",
                format!("creating agent {name:?} needs an admin's approval (request {id})."),
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
                format!("agent group {ag} has no admin or owner to approve a new agent"),
            ));
        };
        let shown: String = instructions.chars().take(300).collect();
        let more = if instructions.chars().count() > 300 {
            "…"
        } else {
            ""
        };
        let title = format!("Agent {ag} asks to create a new agent {name:?} with these instructions:\n{shown}{more}");
        let options = vec![
            ApprovalOption {
                label: "Create".into(),
                value: "approve".into(),
            },
            ApprovalOption {
                label: "Reject".into(),
                value: "reject".into(),
            },
        ];
        let payload = json!({"name": name, "instructions": instructions});
        let a = self.new_approval(
            Some(session_id),
            Some(&ag),
            Some(request_id),
            "create_agent",
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

    /// Creates the group, its folder and `AGENT.md`, and the two-way
    /// destinations; re-projects. Returns what the agent is told.
    fn create_agent_now(&mut self, parent: &str, name: &str, instructions: &str) -> Reply {
        let (ag, local) = self
            .central
            .atomically(|c| create_rows(c, parent, name))
            .map_err(|e| err("invalid-args", format!("{e:#}")))?;
        self.finish_agent(parent, &ag, &local, name, instructions)
    }

    /// The folder half, after the rows are committed.
    fn finish_agent(
        &mut self,
        parent: &str,
        ag: &str,
        local: &str,
        name: &str,
        instructions: &str,
    ) -> Reply {
        let folder = self
            .central
            .agent_folder(ag)
            .ok()
            .flatten()
            .unwrap_or_else(|| ag.to_owned());
        let dir = self.data.group_dir(&folder);
        // The group folder is the agent's (rw in its sandbox): reached
        // beneath the data dir's descriptor, no link followed, AGENT.md
        // replaced by a rename, never written through what is there.
        let written = crate::safe_fs::Dir::open_trusted(self.data.root())
            .and_then(|root| {
                root.create_dir_all(std::path::Path::new("groups").join(&folder), 0o755)
            })
            .and_then(|d| {
                let body = if instructions.trim().is_empty() {
                    "You are a helpful assistant. Answer briefly.".to_owned()
                } else {
                    instructions.trim().to_owned()
                };
                d.write_atomic(
                    "AGENT.md",
                    format!("# Instructions\n\n{body}\n").as_bytes(),
                    0o644,
                )
            });
        if let Err(e) = written
            .map_err(anyhow::Error::from)
            .and_then(|_| super::ensure_group_folder(&self.data, &folder).map(|_| ()))
        {
            // The group exists; its folder is made again at its first spawn,
            // but without the instructions: say so.
            tracing::error!(agent_group = %ag, "could not write the new agent's folder: {e:#}");
            return Err(err("handler-error", format!("agent {ag} was created, but its AGENT.md could not be written ({e:#}); set its instructions by editing {}", dir.join("AGENT.md").display())));
        }
        self.reproject_all();
        tracing::info!(parent = %parent, agent_group = %ag, destination = %local, "agent created");
        Ok(
            json!({"agent_group": ag, "name": name, "destination": local, "message": format!("created agent {name:?}; send it messages with send_message(to: \"{local}\"); it answers you as \"parent\"")}),
        )
    }

    /// An admin decided a `create_agent` card. The decision and the new
    /// rows commit together: a crash between them cannot leave an approved
    /// request without its agent, and a second click creates nothing.
    pub(super) fn decide_create_agent(
        &mut self,
        a: &crate::db::permissions::Approval,
        value: &str,
        by: &str,
    ) -> anyhow::Result<String> {
        let name = a.payload["name"].as_str().unwrap_or_default().to_owned();
        let instructions = a.payload["instructions"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let parent = a.agent_group_id.clone().unwrap_or_default();
        let (status, result, text) = if value == "approve" {
            let id = a.approval_id.clone();
            let made = self.central.atomically(|c| {
                if !c.decide_approval(&id, "approved", by, None)? {
                    return Ok(None);
                }
                anyhow::ensure!(!parent.is_empty(), "the request has no agent group");
                create_rows(c, &parent, &name).map(Some)
            });
            match made {
                Ok(None) => return Ok("That request was already decided.".into()),
                Ok(Some((ag, local))) => {
                    match self.finish_agent(&parent, &ag, &local, &name, &instructions) {
                        Ok(data) => (
                            "approved",
                            json!({"request_id": a.request_id, "ok": true, "data": data}),
                            format!("Approved: agent {name:?} created."),
                        ),
                        Err(ErrorBody { code, message }) => (
                            "approved",
                            json!({"request_id": a.request_id, "ok": false, "error": {"code": code, "message": message}}),
                            format!("Approved, but: {message}"),
                        ),
                    }
                }
                Err(e) => {
                    // Nothing was kept (the decision rolled back with the
                    // rows): record it as approved-but-failed.
                    if !self
                        .central
                        .decide_approval(&a.approval_id, "approved", by, None)?
                    {
                        return Ok("That request was already decided.".into());
                    }
                    let message = format!("{e:#}");
                    (
                        "approved",
                        json!({"request_id": a.request_id, "ok": false, "error": {"code": "invalid-args", "message": message}}),
                        format!("Approved, but creating {name:?} failed: {message}"),
                    )
                }
            }
        } else {
            if !self
                .central
                .decide_approval(&a.approval_id, "rejected", by, None)?
            {
                return Ok("That request was already decided.".into());
            }
            (
                "rejected",
                json!({"request_id": a.request_id, "ok": false, "error": {"code": "rejected", "message": format!("rejected by {by}")}}),
                format!("Rejected: agent {name:?} will not be created."),
            )
        };
        if let Some(sid) = a.session_id.clone() {
            let content = InContent::System(SystemIn::ActionResult {
                action: "create_agent".into(),
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

/// The group, its config, and the destinations both ways, in the caller's
/// transaction. Returns (new group id, the asker's name for it).
fn create_rows(
    c: &mut crate::db::central::Central,
    parent: &str,
    name: &str,
) -> anyhow::Result<(String, String)> {
    let ag = c.create_agent_group(name)?;
    let t = pinch_proto::time::now();
    // The asker's name for it: the new id, or with a suffix if the asker
    // already uses that name for another destination.
    let mut local = ag.clone();
    let mut n = 1;
    while c.has_destination(parent, &local)? {
        n += 1;
        local = format!("{ag}-{n}");
    }
    c.link_child_agent(parent, &local, &ag, &t)?;
    Ok((ag, local))
}

fn validate(name: &str, instructions: &str) -> Result<(), ErrorBody> {
    if name.is_empty()
        || name.chars().count() > 32
        || !name.chars().any(|c| c.is_ascii_alphanumeric())
    {
        return Err(err(
            "invalid-args",
            format!("`name` must be 1 to 32 characters with a letter or digit, got {name:?}"),
        ));
    }
    if name.chars().any(char::is_control) {
        return Err(err(
            "invalid-args",
            "`name` must not contain control characters",
        ));
    }
    if instructions.len() > MAX_INSTRUCTIONS {
        return Err(err(
            "invalid-args",
            format!(
                "`instructions` is {} bytes; at most {MAX_INSTRUCTIONS}",
                instructions.len()
            ),
        ));
    }
    Ok(())
}
