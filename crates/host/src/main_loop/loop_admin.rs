//! The admin commands the main loop serves itself (`host-*`, `sessions-*`,
//! `groups-restart`, `groups-skills`, `approvals-*`, `tasks-*`): they act on live runner
//! state. Every other command goes to `admin_cmds::dispatch` over the
//! central DB, and a change to routing re-projects every session.

use pinch_proto::runner_config::VERSION;
use pinch_proto::time;

use super::Host;

impl Host {
    /// The main loop's own commands get their arguments checked (unknown
    /// keys, `--limit`/`--offset`) and their lists paged first.
    pub(super) fn admin(&mut self, mut req: crate::admin::Request) -> crate::admin::Reply {
        let page = match crate::db::admin::loop_args(&req.command, &req.args) {
            Some(checked) => {
                let (args, page) = checked?;
                req.args = args;
                page
            }
            None => None,
        };
        let reply = self.admin_command(req);
        match page {
            Some(p) => reply.map(|v| p.apply(v)),
            None => reply,
        }
    }

    pub(super) fn admin_command(&mut self, req: crate::admin::Request) -> crate::admin::Reply {
        use crate::admin::err;
        let arg = |k: &str| req.args.get(k).and_then(|v| v.as_str()).map(str::to_owned);
        let handler = |e: anyhow::Error| err("handler-error", format!("{e:#}"));
        match req.command.as_str() {
            "host-status" => Ok(serde_json::json!({
                "version": env!("CARGO_PKG_VERSION"),
                "data_dir": self.data.root(),
                "sandbox": self.sandbox.kind().as_str(),
                "sessions": self.sessions.len(),
                "live_runners": self.live_count(),
            })),
            "host-version" => Ok(
                serde_json::json!({"version": env!("CARGO_PKG_VERSION"), "runner_protocol": VERSION}),
            ),
            "channels-status" => {
                let mut names: Vec<&String> = self.channels.keys().collect();
                names.sort();
                Ok(serde_json::Value::Array(
                    names
                        .into_iter()
                        .map(|n| {
                            let c = self.channels[n].capabilities();
                            serde_json::json!({
                                "channel": n, "running": true, "threads": c.threads, "buttons": c.buttons, "edit": c.edit,
                                "reactions": c.reactions, "typing": c.typing, "files": c.files, "open_dm": c.open_dm, "max_text": c.max_text,
                            })
                        })
                        .collect(),
                ))
            }
            "groups-restart" => {
                // Stops the group's live runners; the next message (or due
                // work, at the sweep) starts fresh ones with the current config.
                let id = arg("id").ok_or_else(|| {
                    err(
                        "invalid-args",
                        "groups-restart needs a group id: pinch admin groups restart <id>",
                    )
                })?;
                if self.central.agent_folder(&id).map_err(handler)?.is_none() {
                    return Err(err("not-found", format!("no agent group {id}")));
                }
                let ids: Vec<String> = self
                    .sessions
                    .iter()
                    .filter(|(_, s)| s.row.agent_group_id == id && !s.closed)
                    .map(|(k, _)| k.clone())
                    .collect();
                let mut stopped = Vec::new();
                for sid in ids {
                    if self.request_stop(&sid) {
                        stopped.push(sid.clone());
                    }
                    self.try_wake(&sid);
                }
                Ok(serde_json::json!({"id": id, "stopped": stopped}))
            }
            "groups-skills" => {
                // The skills the group's agent sees, read from its folder
                // beneath a directory descriptor (the agent can write it).
                let id = arg("id").ok_or_else(|| {
                    err(
                        "invalid-args",
                        "groups-skills needs a group id: pinch admin groups skills <id>",
                    )
                })?;
                let folder = self
                    .central
                    .agent_folder(&id)
                    .map_err(handler)?
                    .ok_or_else(|| err("not-found", format!("no agent group {id}")))?;
                crate::skills::list(&self.data.groups_dir(), &folder)
                    .map(serde_json::Value::Array)
                    .map_err(|e| err("handler-error", e))
            }
            "sessions-list" => {
                let mut rows = self.central.session_states().map_err(handler)?;
                for r in rows.iter_mut() {
                    let live = r["id"]
                        .as_str()
                        .and_then(|id| self.sessions.get(id))
                        .and_then(|s| s.runner.as_ref())
                        .map(|l| l.pid);
                    r["runner_pid"] = live.into();
                }
                Ok(serde_json::Value::Array(rows))
            }
            "sessions-get" => {
                let id =
                    arg("id").ok_or_else(|| err("invalid-args", "sessions-get needs args.id"))?;
                let rows = self.central.session_states().map_err(handler)?;
                rows.into_iter()
                    .find(|r| r["id"] == id.as_str())
                    .ok_or_else(|| err("not-found", format!("no session {id}")))
            }
            "sessions-resume" => {
                let id = arg("id")
                    .ok_or_else(|| err("invalid-args", "sessions-resume needs args.id"))?;
                if !self.sessions.contains_key(&id) {
                    return Err(err("not-found", format!("no active session {id}")));
                }
                let was = self.sessions.get(&id).is_some_and(|s| s.quarantined);
                self.lift_quarantine(&id, "pinch admin sessions resume");
                self.try_wake(&id);
                Ok(serde_json::json!({"id": id, "was_quarantined": was}))
            }
            "sessions-stop" | "sessions-restart" => {
                let id = arg("id").ok_or_else(|| {
                    err(
                        "invalid-args",
                        format!(
                            "{} needs a session id: pinch admin sessions {} <id>",
                            req.command,
                            &req.command[9..]
                        ),
                    )
                })?;
                if !self.sessions.contains_key(&id) {
                    return Err(err("not-found", format!("no active session {id}")));
                }
                let was_running = self.request_stop(&id);
                if req.command == "sessions-restart" {
                    // The next wake (a message, or the sweep with due work) spawns afresh.
                    self.try_wake(&id);
                }
                Ok(serde_json::json!({"id": id, "was_running": was_running}))
            }
            "sessions-close" => {
                let id = arg("id").ok_or_else(|| {
                    err(
                        "invalid-args",
                        "sessions-close needs a session id: pinch admin sessions close <id>",
                    )
                })?;
                if !self.sessions.contains_key(&id) {
                    return Err(err("not-found", format!("no active session {id}")));
                }
                let was_running = self.request_stop(&id);
                self.central.close_session(&id).map_err(handler)?;
                if let Some(s) = self.sessions.get_mut(&id) {
                    s.closed = true;
                }
                Ok(serde_json::json!({"id": id, "closed": true, "was_running": was_running}))
            }
            "approvals-approve" | "approvals-reject" => {
                let id = arg("id").ok_or_else(|| {
                    err(
                        "invalid-args",
                        format!(
                            "{} needs an approval id: pinch admin approvals {} <id>",
                            req.command,
                            &req.command[10..]
                        ),
                    )
                })?;
                let a = self
                    .central
                    .approval(&id)
                    .map_err(handler)?
                    .ok_or_else(|| err("not-found", format!("no approval {id}")))?;
                if a.status != "pending" {
                    return Err(err(
                        "invalid-args",
                        format!("approval {id} is already {}", a.status),
                    ));
                }
                if time::parse(&a.expires_at).is_ok_and(|t| t <= jiff::Timestamp::now()) {
                    self.expire(&a);
                    return Err(err("invalid-args", format!("approval {id} has expired")));
                }
                let value = if req.command == "approvals-approve" {
                    match arg("value") {
                        Some(v) => v,
                        None if a.action == "register" => {
                            return Err(err("invalid-args", format!("a registration needs --value connect:<agent group id> (or `new`); options: {}", a.options.iter().map(|o| o.value.as_str()).collect::<Vec<_>>().join(", "))))
                        }
                        None => a.options.first().map(|o| o.value.clone()).unwrap_or_default(),
                    }
                } else {
                    a.options
                        .last()
                        .map(|o| o.value.clone())
                        .unwrap_or_default()
                };
                if !a.options.iter().any(|o| o.value == value) {
                    return Err(err(
                        "invalid-args",
                        format!(
                            "{value:?} is not an option of approval {id}; options: {}",
                            a.options
                                .iter()
                                .map(|o| o.value.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    ));
                }
                let by = format!("cli:{}", self.cfg.login);
                let text = self.decide(&a, &value, &by, None).map_err(handler)?;
                Ok(serde_json::json!({"id": id, "value": value, "result": text}))
            }
            "tasks-list" => {
                // Optional filters: --ag <group>, --session <id>.
                let (ag, sid) = (arg("ag"), arg("session"));
                let mut out = Vec::new();
                let mut ids: Vec<&String> = self.sessions.keys().collect();
                ids.sort();
                for id in ids {
                    let s = &self.sessions[id];
                    if s.closed
                        || ag.as_ref().is_some_and(|a| *a != s.row.agent_group_id)
                        || sid.as_ref().is_some_and(|x| x != id)
                    {
                        continue;
                    }
                    for mut t in crate::tasks::live(&s.dir).map_err(handler)? {
                        t["session"] = id.clone().into();
                        t["agent_group"] = s.row.agent_group_id.clone().into();
                        out.push(t);
                    }
                }
                out.sort_by(|a, b| a["next"].as_str().cmp(&b["next"].as_str()));
                Ok(serde_json::Value::Array(out))
            }
            "tasks-pause" | "tasks-resume" | "tasks-cancel" => {
                let verb = &req.command[6..];
                let id = arg("id").ok_or_else(|| err("invalid-args", format!("tasks-{verb} needs a task id or series id: pinch admin tasks {verb} <id> (see `pinch admin tasks list`)")))?;
                let holder = self
                    .sessions
                    .iter()
                    .filter(|(_, s)| !s.closed)
                    .find(|(_, s)| crate::tasks::holds(&s.dir, &id).unwrap_or(false))
                    .map(|(k, _)| k.clone());
                let Some(sid) = holder else {
                    return Err(err("not-found", format!("no live task has the id or series id {id:?} (see `pinch admin tasks list`)")));
                };
                let s = &self.sessions[&sid];
                let out_max = s.shared.out_max.load(std::sync::atomic::Ordering::Relaxed);
                let action = format!("{verb}_task");
                let done = crate::tasks::apply(
                    &s.dir,
                    &action,
                    &serde_json::json!({"id": id}),
                    &self.cfg.timezone,
                    out_max,
                )
                .map_err(|e| {
                    let m = format!("{e:#}");
                    // "no paused task has the id …" and the like.
                    err(
                        if m.starts_with("no ") {
                            "not-found"
                        } else {
                            "handler-error"
                        },
                        m,
                    )
                })?;
                tracing::info!(session_id = %sid, task = %id, action = %action, "task changed by the owner");
                if let Some(due) = done.wake_at {
                    self.wake_at(&sid, due.as_millisecond());
                }
                let mut r = done.result;
                r["session"] = sid.into();
                Ok(r)
            }
            other => {
                let reply = crate::db::admin::dispatch(&self.central.conn, &crate::db::admin::Caller::Owner, other, &req.args)
                    .unwrap_or_else(|| Err(err("unknown-command", format!("unknown command {other:?}; run `pinch admin --help` for the resources and verbs"))));
                if reply.is_ok()
                    && (other.starts_with("destinations-")
                        || other.starts_with("wirings-")
                        || other.starts_with("messaging-groups-")
                        || other == "groups-delete")
                {
                    self.reproject_all();
                }
                reply
            }
        }
    }
}
