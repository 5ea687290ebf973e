//! Clicks, questions and approvals (SPEC §7.1–§7.3): one card primitive
//! (`pending_approvals`, buttons `a:<id>:<n>`) used for sender approval,
//! channel registration and agents' admin commands; the approver chosen
//! and reached by DM; only the approver, an admin of the group or an owner
//! may decide, anyone else is refused visibly and audited; cards expire.

use anyhow::{Context, Result};
use pinch_channels::{numbered_fallback, Address, Button, Click, InboundEvent, Outgoing};
use pinch_proto::content::{InContent, SystemIn};
use pinch_proto::rows::NewInbound;
use pinch_proto::runner_config::random_hex;
use pinch_proto::time;
use serde_json::json;

use super::routing::user_id_of;
use super::{Event, Host};
use crate::db::central::MessagingGroup;
use crate::db::permissions::{Approval, ApprovalOption};
use crate::session;

/// Most agent groups a registration card offers to connect.
const MAX_CONNECT_OPTIONS: usize = 7;

fn opt(label: impl Into<String>, value: impl Into<String>) -> ApprovalOption {
    ApprovalOption {
        label: label.into(),
        value: value.into(),
    }
}

impl Host {
    /// A button press (or a numbered answer): `q:<id>:<n>` answers a
    /// question, `a:<id>:<n>` decides an approval. The clicker always gets
    /// an answer.
    pub(super) fn on_click(&mut self, c: Click) {
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

    /// Asks the owner to connect a conversation pinch has just met (once
    /// per conversation while the request is open).
    pub(super) fn request_registration(
        &mut self,
        mg: &MessagingGroup,
        ev: &InboundEvent,
        sender: &str,
    ) -> Result<()> {
        if self.central.channel_request(&mg.id)?.is_some() {
            return Ok(());
        }
        let mut options: Vec<ApprovalOption> = self
            .central
            .agent_groups()?
            .into_iter()
            .take(MAX_CONNECT_OPTIONS)
            .map(|(id, name)| opt(format!("Connect to {name}"), format!("connect:{id}")))
            .collect();
        options.push(opt("New agent", "new"));
        options.push(opt("Reject", "reject"));
        let place = if ev.is_group {
            format!(
                "the group {} on {}",
                mg.name.as_deref().unwrap_or(&mg.platform_id),
                mg.channel_type
            )
        } else {
            format!("a direct message on {}", mg.channel_type)
        };
        let who = ev.sender_name.clone().unwrap_or_else(|| sender.to_owned());
        let title = format!("{who} ({sender}) wrote to pinch in {place}: {:?}. Connect this conversation to an agent?", clip(&ev.text, 200));
        // Registration is the owner's call.
        let owners = self.central.approver_tiers(None)?.pop().unwrap_or_default();
        let Some(first) = owners.first().cloned() else {
            anyhow::bail!("there is no owner to ask; grant one with `pinch admin roles grant --user <id> --role owner`");
        };
        let a = self.new_approval(
            None,
            None,
            None,
            "register",
            json!({"mg": mg.id, "sender": sender}),
            title,
            options,
            &first,
        );
        self.central.insert_approval(&a)?;
        self.central.insert_channel_request(
            &mg.id,
            &serde_json::to_string(ev)?,
            &first,
            &a.approval_id,
        )?;
        self.send_card(&a, vec![owners], &ev.channel_type);
        Ok(())
    }

    /// Asks an approver to let an unknown sender in (one card per sender
    /// and conversation; a denied sender is not asked about again).
    pub(super) fn request_sender_approval(
        &mut self,
        mg: &MessagingGroup,
        ag: &str,
        ev: &InboundEvent,
        sender: &str,
    ) -> Result<()> {
        if self.central.sender_request(&mg.id, sender)?.is_some() {
            return Ok(());
        }
        let tiers = self.central.approver_tiers(Some(ag))?;
        let Some(first) = tiers.iter().flatten().next().cloned() else {
            anyhow::bail!("agent group {ag} has no admin or owner to ask");
        };
        let who = ev.sender_name.clone().unwrap_or_else(|| sender.to_owned());
        let ag_name = self
            .central
            .agent_groups()?
            .into_iter()
            .find(|(id, _)| id == ag)
            .map_or(ag.to_owned(), |(_, n)| n);
        let place = mg
            .name
            .clone()
            .unwrap_or_else(|| format!("{} {}", mg.channel_type, mg.platform_id));
        let title = format!(
            "{who} ({sender}) wants to talk to {ag_name} in {place}: {:?}",
            clip(&ev.text, 200)
        );
        let options = vec![opt("Allow", "allow"), opt("Deny", "deny")];
        let a = self.new_approval(
            None,
            Some(ag),
            None,
            "sender",
            json!({"mg": mg.id, "ag": ag, "sender": sender}),
            title,
            options,
            &first,
        );
        self.central.insert_approval(&a)?;
        self.central.insert_sender_request(
            &mg.id,
            ag,
            sender,
            ev.sender_name.as_deref(),
            &serde_json::to_string(ev)?,
            &first,
            &a.approval_id,
        )?;
        self.send_card(&a, tiers, &ev.channel_type);
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn new_approval(
        &self,
        session_id: Option<&str>,
        ag: Option<&str>,
        request_id: Option<&str>,
        action: &str,
        payload: serde_json::Value,
        title: String,
        options: Vec<ApprovalOption>,
        approver: &str,
    ) -> Approval {
        let ttl = jiff::SignedDuration::try_from(self.cfg.approval_ttl)
            .unwrap_or(jiff::SignedDuration::from_hours(24));
        Approval {
            approval_id: random_hex(4),
            session_id: session_id.map(str::to_owned),
            agent_group_id: ag.map(str::to_owned),
            request_id: request_id.map(str::to_owned),
            action: action.to_owned(),
            payload,
            title,
            options,
            approver_user_id: approver.to_owned(),
            channel_type: None,
            platform_id: None,
            status: "pending".into(),
            expires_at: time::format(jiff::Timestamp::now() + ttl),
        }
    }

    /// Sends a card to the first approver reachable by DM: tier by tier,
    /// those on the origin's channel first. The address is recorded (main
    /// loop) before the card goes out, so a click always finds it.
    pub(super) fn send_card(&self, a: &Approval, tiers: Vec<Vec<String>>, origin_channel: &str) {
        let mut candidates: Vec<(String, String, Option<String>)> = Vec::new();
        for tier in tiers {
            let (mut near, far): (Vec<String>, Vec<String>) = tier
                .into_iter()
                .partition(|u| u.split(':').next() == Some(origin_channel));
            near.extend(far);
            for u in near {
                let Some(ch) = u.split_once(':').map(|(c, _)| c.to_owned()) else {
                    continue;
                };
                if !self.channels.contains_key(&ch) {
                    continue;
                }
                let cached = self.central.user_dm(&u, &ch).ok().flatten();
                candidates.push((u, ch, cached));
            }
        }
        let channels = self.channels.clone();
        let events = self.events.clone();
        let id = a.approval_id.clone();
        let buttons: Vec<Button> = a
            .options
            .iter()
            .enumerate()
            .map(|(i, o)| Button {
                label: o.label.clone(),
                callback: format!("a:{id}:{i}"),
            })
            .collect();
        let text = format!("Approval needed: {}", a.title);
        tokio::spawn(async move {
            let mut why = String::from("no approver has a DM on a running channel");
            for (user, ch_type, cached) in candidates {
                let ch = channels
                    .get(&ch_type)
                    .expect("filtered to running channels")
                    .clone();
                let local = user.split_once(':').map_or(user.as_str(), |(_, l)| l);
                let (pid, opened) = match cached {
                    Some(p) => (p, false),
                    None => match ch.open_dm(local).await {
                        Ok(Some(p)) => (p, true),
                        Ok(None) => continue,
                        Err(e) => {
                            why = format!("opening a DM with {user}: {e}");
                            continue;
                        }
                    },
                };
                let (done, recorded) = tokio::sync::oneshot::channel();
                let ev = Event::ApprovalAddressed {
                    approval_id: id.clone(),
                    approver: user.clone(),
                    channel_type: ch_type.clone(),
                    platform_id: pid.clone(),
                    opened,
                    done,
                };
                if events.send(ev).is_err() {
                    return;
                }
                if !matches!(
                    tokio::time::timeout(std::time::Duration::from_secs(5), recorded).await,
                    Ok(Ok(true))
                ) {
                    why = format!("could not record the card's address for {user}");
                    continue;
                }
                let caps = ch.capabilities();
                let msg = Outgoing {
                    id: format!("approval-{id}"),
                    text: if caps.buttons {
                        text.clone()
                    } else {
                        numbered_fallback(&text, &buttons)
                    },
                    in_reply_to: None,
                    buttons: if caps.buttons {
                        buttons.clone()
                    } else {
                        Vec::new()
                    },
                    files: Vec::new(),
                };
                let to = Address {
                    channel_type: ch_type.clone(),
                    platform_id: pid,
                    thread_id: None,
                };
                match ch.deliver(&to, &msg).await {
                    Ok(_) => {
                        tracing::info!(approval = %id, approver = %user, "approval card sent");
                        return;
                    }
                    Err(e) => {
                        tracing::warn!(approval = %id, approver = %user, "could not send the approval card: {e}");
                        why = format!("sending to {user}: {e}");
                    }
                }
            }
            let _ = events.send(Event::ApprovalUndeliverable {
                approval_id: id,
                why,
            });
        });
    }

    pub(super) fn record_card_address(
        &mut self,
        id: &str,
        approver: &str,
        channel_type: &str,
        platform_id: &str,
        opened: bool,
    ) -> bool {
        let res = (|| -> Result<()> {
            if opened {
                self.central
                    .set_user_dm(approver, channel_type, platform_id)?;
            }
            self.central
                .address_approval(id, approver, channel_type, platform_id)
        })();
        match res {
            Ok(()) => true,
            Err(e) => {
                tracing::error!(approval = %id, "could not record where an approval card goes: {e:#}");
                false
            }
        }
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
    pub(super) fn decide(
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
                    let ev = self.held_event("pending_sender_approvals", &a.approval_id)?;
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
                let ev = self.held_event("pending_channel_approvals", &a.approval_id)?;
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
            other => Ok(format!(
                "This request's action {other:?} is not one this host knows."
            )),
        }
    }

    /// The held event of a sender or registration request.
    fn held_event(&self, table: &str, approval_id: &str) -> Result<Option<InboundEvent>> {
        use pinch_proto::rusqlite::OptionalExtension;
        let raw: Option<String> = self
            .central
            .conn
            .query_row(
                &format!("SELECT original_event FROM {table} WHERE approval_id = ?1"),
                [approval_id],
                |r| r.get(0),
            )
            .optional()?;
        match raw {
            None => Ok(None),
            Some(r) => Ok(Some(
                serde_json::from_str(&r).context("the held message is unreadable")?,
            )),
        }
    }

    /// The owner typed the new agent's name: create it, connect the
    /// conversation, replay the held message.
    pub(super) fn register_new_agent(
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
        super::ensure_group_folder(&self.data, &folder)?;
        tracing::info!(agent_group = %ag, mg = %mg_id, by = %by, "new agent created by registration");
        self.reproject_all();
        self.replay(&ev);
        Ok(format!(
            "Created the agent {name:?} ({ag}) and connected the conversation."
        ))
    }

    /// Expires one approval: the request is forgotten (a later message asks
    /// again), the card's conversation is told, an agent that asked gets an
    /// `action_result`.
    pub(super) fn expire(&mut self, a: &Approval) {
        match self
            .central
            .decide_approval(&a.approval_id, "expired", "expiry", None)
        {
            Ok(true) => {}
            Ok(false) => return,
            Err(e) => {
                tracing::error!(approval = %a.approval_id, "could not expire an approval: {e:#}");
                return;
            }
        }
        tracing::info!(approval = %a.approval_id, action = %a.action, "approval expired");
        let _ = self.central.delete_sender_request(&a.approval_id);
        let _ = self.central.delete_channel_request(&a.approval_id);
        if let (Some(ch), Some(pid)) = (&a.channel_type, &a.platform_id) {
            self.notice(
                Address {
                    channel_type: ch.clone(),
                    platform_id: pid.clone(),
                    thread_id: None,
                },
                format!("Expired without a decision: {}", a.title),
            );
        }
        if let Some(sid) = a.session_id.clone() {
            let content = InContent::System(SystemIn::ActionResult {
                action: a.action.clone(),
                status: "expired".into(),
                result: json!({"request_id": a.request_id, "approval_id": a.approval_id, "error": "nobody decided within the approval time"}),
            });
            self.system_in(
                &sid,
                &format!("approval-expired:{}", a.approval_id),
                content,
                true,
            );
        }
    }

    /// The sweep's pass over approvals past their time.
    pub(super) fn expire_approvals(&mut self) {
        let due = match self.central.expired_approvals(&time::now()) {
            Ok(d) => d,
            Err(e) => {
                tracing::error!("could not read expired approvals: {e:#}");
                return;
            }
        };
        for a in due {
            self.expire(&a);
        }
    }

    /// Writes a system row into a session's `inbound.db` (and wakes it if
    /// `trigger`). Logged, not returned: the callers are event handlers.
    pub(super) fn system_in(
        &mut self,
        session_id: &str,
        id: &str,
        content: InContent,
        trigger: bool,
    ) {
        let Some(s) = self.sessions.get(session_id) else {
            tracing::warn!(session_id = %session_id, "a system message for a session that is not active was dropped");
            return;
        };
        let row = NewInbound {
            id: id.to_owned(),
            kind: "system".into(),
            timestamp: time::now(),
            trigger,
            content: content.to_json(),
            ..Default::default()
        };
        let out_max = s.shared.out_max.load(std::sync::atomic::Ordering::Relaxed);
        if let Err(e) = session::write_inbound(&s.dir, &[row], out_max) {
            tracing::error!(session_id = %session_id, "could not write a system message: {e:#}");
            return;
        }
        if trigger {
            self.try_wake(session_id);
        }
    }
}

fn clip(s: &str, n: usize) -> String {
    match s.char_indices().nth(n) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_owned(),
    }
}
