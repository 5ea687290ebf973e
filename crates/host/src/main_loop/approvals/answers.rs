//! Clicks and decisions (SPEC §7.1–§7.3): a button press (or a numbered
//! answer) answers a question or decides an approval; only the approver,
//! an admin of the group or an owner may decide, anyone else is refused
//! visibly and audited; a decision is carried out by its action, and a
//! registration's new agent is created once its name arrives.

use anyhow::{Context, Result};
use pinch_channels::{Address, Click, InboundEvent};
use pinch_proto::content::{InContent, SystemIn};
use pinch_proto::rows::NewInbound;
use pinch_proto::time;
use serde_json::json;

use crate::db::permissions::Approval;
use crate::main_loop::routing::user_id_of;
use crate::main_loop::Host;
use crate::session;

impl Host {
    /// A button press (or a numbered answer): `q:<id>:<n>` answers a
    /// question, `a:<id>:<n>` decides an approval. The clicker always gets
    /// an answer.
    pub(in crate::main_loop) fn on_click(&mut self, c: Click) {
        let addr = Address {
            channel_type: c.channel_type.clone(),
            platform_id: c.platform_id.clone(),
            thread_id: c.thread_id.clone(),
        };
        let mut parts = c.callback.splitn(3, ':');
        let res = match (parts.next(), parts.next(), parts.next()) {
            (Some("q"), Some(id), Some(idx)) => self.answer_question(&c, id, idx),
            (Some("a"), Some(id), Some(idx)) => self.answer_approval(&c, id, idx),
            _ => {
                tracing::info!(callback = %c.callback, "button press with an unknown callback");
                Ok("That button is not one pinch knows (it may be from an older version).".into())
            }
        };
        let reply = res.unwrap_or_else(|e| {
            tracing::error!(callback = %c.callback, "could not handle a button press: {e:#}");
            format!("That choice could not be recorded ({e:#}); please try again.")
        });
        self.notice(addr, reply);
    }

    fn answer_question(&mut self, c: &Click, qid: &str, idx: &str) -> Result<String> {
        let Some(q) = self.central.pending_question(qid)? else {
            return Ok("That question was already answered or has expired.".into());
        };
        if time::parse(&q.expires_at).is_ok_and(|t| t <= jiff::Timestamp::now()) {
            self.central
                .delete_pending_questions(&q.session_id, &q.message_out_id)?;
            return Ok("That question has expired.".into());
        }
        let options: Vec<pinch_proto::content::OptionItem> =
            serde_json::from_str(&q.options_json).context("stored options are not valid JSON")?;
        let Some(choice) = idx.parse::<usize>().ok().and_then(|i| options.get(i)) else {
            return Ok(format!(
                "That choice is not one of the {} options.",
                options.len()
            ));
        };
        let Some(s) = self.sessions.get(&q.session_id) else {
            return Ok("The conversation that asked this is no longer active.".into());
        };
        let user_id = user_id_of(&c.channel_type, &c.user_id);
        if !self
            .central
            .sender_rights(&user_id, &s.row.agent_group_id)?
            .0
        {
            tracing::warn!(user = %user_id, question = %q.question_id, "button press refused: the user has no access to this agent");
            return Ok("Only members of this agent's group can answer its questions.".into());
        }
        let content = InContent::System(SystemIn::QuestionResponse {
            question_id: q.agent_question_id.clone(),
            value: choice.value.clone(),
            user_id: Some(user_id),
        });
        let row = NewInbound {
            id: format!("qr:{}:{}", q.session_id, q.message_out_id),
            kind: "system".into(),
            timestamp: time::now(),
            trigger: false,
            platform_id: q.platform_id.clone(),
            channel_type: q.channel_type.clone(),
            thread_id: q.thread_id.clone(),
            content: content.to_json(),
            ..Default::default()
        };
        let out_max = s.shared.out_max.load(std::sync::atomic::Ordering::Relaxed);
        session::write_inbound(&s.dir, &[row], out_max)
            .with_context(|| format!("writing {}", s.dir.inbound_db().display()))?;
        self.central
            .delete_pending_questions(&q.session_id, &q.message_out_id)?;
        tracing::info!(session_id = %q.session_id, question = %q.agent_question_id, "question answered");
        Ok(format!("Answered: {}", choice.label))
    }

    fn answer_approval(&mut self, c: &Click, id: &str, idx: &str) -> Result<String> {
        let Some(a) = self.central.approval(id)? else {
            return Ok("That request is not known (it may have been removed).".into());
        };
        if a.status != "pending" {
            return Ok(format!("That request was already {}.", a.status));
        }
        let clicker = user_id_of(&c.channel_type, &c.user_id);
        let owners_only = a
            .payload
            .get("owners_only")
            .and_then(serde_json::Value::as_bool)
            .unwrap_or(false);
        if !self
            .central
            .may_decide(&clicker, a.agent_group_id.as_deref(), owners_only)?
        {
            tracing::warn!(approval = %id, user = %clicker, approver = %a.approver_user_id, "approval click refused: not an owner or an admin of the group");
            if let Err(e) = self.central.audit_drop(
                &c.channel_type,
                &c.platform_id,
                Some(&clicker),
                None,
                "not_approver",
                None,
                a.agent_group_id.as_deref(),
            ) {
                tracing::warn!("could not audit a refused click: {e:#}");
            }
            let who = if owners_only || a.agent_group_id.is_none() {
                "an owner"
            } else {
                "an admin of this agent or an owner"
            };
            return Ok(format!("Refused: only {who} may decide this request."));
        }
        if time::parse(&a.expires_at).is_ok_and(|t| t <= jiff::Timestamp::now()) {
            self.expire(&a);
            return Ok("That request has expired.".into());
        }
        let Some(choice) = idx
            .parse::<usize>()
            .ok()
            .and_then(|i| a.options.get(i))
            .cloned()
        else {
            return Ok(format!(
                "That choice is not one of the {} options.",
                a.options.len()
            ));
        };
        let to = Address {
            channel_type: c.channel_type.clone(),
            platform_id: c.platform_id.clone(),
            thread_id: c.thread_id.clone(),
        };
        self.decide(&a, &choice.value, &clicker, Some(to))
    }

    /// Carries out a decision (a click, or `pinch admin approvals
    /// approve|reject`). `reply_to`: where the decider is, for follow-ups
    /// such as asking a new agent's name.
    pub(in crate::main_loop) fn decide(
        &mut self,
        a: &Approval,
        value: &str,
        by: &str,
        reply_to: Option<Address>,
    ) -> Result<String> {
        match a.action.as_str() {
            "sender" => {
                let mg = a.payload["mg"].as_str().unwrap_or_default().to_owned();
                let ag = a.payload["ag"].as_str().unwrap_or_default().to_owned();
                let sender = a.payload["sender"].as_str().unwrap_or_default().to_owned();
                if value == "allow" {
                    let ev = self.held_event(true, &a.approval_id)?;
                    // Status, membership and the request go together; the held
                    // message is kept in the decision's result.
                    let result = json!({"held": ev});
                    let decided = self.central.atomically(|c| {
                        if !c.decide_approval(&a.approval_id, "approved", by, Some(&result))? {
                            return Ok(false);
                        }
                        c.add_member(&sender, &ag, by)?;
                        c.delete_sender_request(&a.approval_id)?;
                        Ok(true)
                    })?;
                    if !decided {
                        return Ok("That request was already decided.".into());
                    }
                    tracing::info!(approval = %a.approval_id, sender = %sender, agent_group = %ag, by = %by, "sender allowed");
                    if let Some(ev) = ev {
                        self.replay(&ev);
                    }
                    Ok(format!("Allowed: {sender} can now talk to {ag}."))
                } else {
                    // The request row stays: a denied sender is not asked about again.
                    if !self
                        .central
                        .decide_approval(&a.approval_id, "rejected", by, None)?
                    {
                        return Ok("That request was already decided.".into());
                    }
                    tracing::info!(approval = %a.approval_id, sender = %sender, mg = %mg, by = %by, "sender denied");
                    Ok(format!("Denied: {sender} will not reach {ag} (allow later with `pinch admin members add {sender} --ag {ag}`)."))
                }
            }
            "register" => {
                let mg_id = a.payload["mg"].as_str().unwrap_or_default().to_owned();
                let sender = a.payload["sender"].as_str().unwrap_or_default().to_owned();
                if value == "reject" {
                    let decided = self.central.atomically(|c| {
                        if !c.decide_approval(&a.approval_id, "rejected", by, None)? {
                            return Ok(false);
                        }
                        c.deny_messaging_group(&mg_id)?;
                        c.delete_channel_request(&a.approval_id)?;
                        Ok(true)
                    })?;
                    if !decided {
                        return Ok("That request was already decided.".into());
                    }
                    return Ok("Rejected: pinch will ignore that conversation (undo with `pinch admin messaging-groups undeny`).".into());
                }
                if value == "new" {
                    let Some(to) = reply_to else {
                        return Ok("Creating a new agent needs its name: use `pinch admin groups create` and then approve with connect:<id>.".into());
                    };
                    self.central.set_awaiting_name(
                        &a.approval_id,
                        &to.channel_type,
                        &to.platform_id,
                    )?;
                    return Ok("Send the new agent's name as your next message here.".into());
                }
                let Some(ag) = value.strip_prefix("connect:") else {
                    return Ok(format!("{value:?} is not a registration choice."));
                };
                let ev = self.held_event(false, &a.approval_id)?;
                let mg = self
                    .central
                    .messaging_group_by_id(&mg_id)?
                    .context("the conversation was deleted")?;
                let result = json!({"agent_group": ag, "held": ev});
                let decided = self.central.atomically(|c| {
                    if !c.decide_approval(&a.approval_id, "approved", by, Some(&result))? {
                        return Ok(false);
                    }
                    c.wire_registered(&mg, ag)?;
                    c.add_member(&sender, ag, by)?;
                    c.delete_channel_request(&a.approval_id)?;
                    Ok(true)
                })?;
                if !decided {
                    return Ok("That request was already decided.".into());
                }
                self.reproject_all();
                if let Some(ev) = ev {
                    self.replay(&ev);
                }
                Ok(format!("Connected to {ag}."))
            }
            "admin_command" => self.decide_admin_command(a, value, by),
            "create_agent" => self.decide_create_agent(a, value, by),
            "install_packages" | "add_mcp_server" => self.decide_self_mod(a, value, by),
            "secret_use" => self.decide_secret_use(a, value, by),
            other => Ok(format!(
                "This request's action {other:?} is not one this host knows."
            )),
        }
    }

    /// The held event of a sender (`sender`) or registration request.
    fn held_event(&self, sender: bool, approval_id: &str) -> Result<Option<InboundEvent>> {
        match self.central.held_event(sender, approval_id)? {
            None => Ok(None),
            Some(r) => Ok(Some(
                serde_json::from_str(&r).context("the held message is unreadable")?,
            )),
        }
    }

    /// The owner typed the new agent's name: create it, connect the
    /// conversation, replay the held message.
    pub(in crate::main_loop) fn register_new_agent(
        &mut self,
        approval_id: &str,
        mg_id: &str,
        name: &str,
        event: &str,
        by: &str,
    ) -> Result<String> {
        let ev: InboundEvent =
            serde_json::from_str(event).context("the held message is unreadable")?;
        let mg = self
            .central
            .messaging_group_by_id(mg_id)?
            .context("the conversation was deleted")?;
        let sender = user_id_of(&ev.channel_type, &ev.sender_id);
        // All or nothing, and only while the request is still open (a
        // redelivered name message finds it decided and creates nothing).
        let created = self.central.atomically(|c| {
            if c.approval(approval_id)?
                .is_none_or(|a| a.status != "pending")
            {
                return Ok(None);
            }
            let ag = c.create_agent_group(name)?;
            if !c.decide_approval(
                approval_id,
                "approved",
                by,
                Some(&json!({"agent_group": ag, "created": true, "held": ev})),
            )? {
                anyhow::bail!("the request was decided meanwhile");
            }
            c.wire_registered(&mg, &ag)?;
            c.add_member(&sender, &ag, by)?;
            c.delete_channel_request(approval_id)?;
            Ok(Some(ag))
        })?;
        let Some(ag) = created else {
            return Ok("That request was already decided.".into());
        };
        let folder = self
            .central
            .agent_folder(&ag)?
            .context("the new group has no folder")?;
        crate::main_loop::ensure_group_folder(&self.data, &folder)?;
        tracing::info!(agent_group = %ag, mg = %mg_id, by = %by, "new agent created by registration");
        self.reproject_all();
        self.replay(&ev);
        Ok(format!(
            "Created the agent {name:?} ({ag}) and connected the conversation."
        ))
    }
}
