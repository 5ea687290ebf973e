//! Routing one inbound event (SPEC §4 steps 2–6): the interceptor, the
//! facts the pure plan (`pinch_policy::route::plan`) needs, and carrying
//! the plan out — stores, audits, notices, approval requests.

use anyhow::Result;
use pinch_channels::{Address, Capabilities, InboundEvent, MAX_ATTACHMENT};
use pinch_policy::commands;
use pinch_policy::route::{
    self, DropReason, EngageMode, IgnoredPolicy, Plan, SenderScope, SessionKey, SessionMode, Take,
    UnknownSenderPolicy,
};
use pinch_proto::content::{Attachment, ChatIn, InContent, WebhookIn};
use pinch_proto::rows::NewInbound;
use pinch_proto::time;
use regex::Regex;

use super::Host;

/// What routing did: the sessions it is stored in (written at the next
/// flush), a note for the sender when none took it, and the sessions to
/// wake once it is committed.
pub(crate) type Routed = (Vec<String>, Option<Note>, Vec<String>);

/// Why no agent took a message, for its sender.
#[derive(Debug)]
pub(crate) struct Note {
    pub(crate) text: String,
    /// Nothing went wrong: the host answered it itself (`/help`) or holds
    /// it for an approval.
    pub(crate) handled: bool,
}

impl Note {
    fn dropped(text: &str) -> Option<Note> {
        Some(Note {
            text: text.to_owned(),
            handled: false,
        })
    }

    fn handled(text: &str) -> Option<Note> {
        Some(Note {
            text: text.to_owned(),
            handled: true,
        })
    }
}

/// `<channel>:<id>`, unless the id already carries this channel's prefix.
/// (SPEC §4 keeps any id with a `:`; a platform whose user ids contain `:`
/// could then claim another channel's identity, e.g. `cli:<owner>`.)
pub(crate) fn user_id_of(channel_type: &str, sender_id: &str) -> String {
    match sender_id
        .strip_prefix(channel_type)
        .and_then(|r| r.strip_prefix(':'))
    {
        Some(_) => sender_id.to_owned(),
        None => format!("{channel_type}:{sender_id}"),
    }
}

impl Host {
    pub(super) fn caps(&self, channel_type: &str) -> Capabilities {
        self.channels
            .get(channel_type)
            .map(|c| c.capabilities())
            .unwrap_or_default()
    }

    /// Sends a host notice to a conversation (never through `outbound.db`;
    /// stored until the channel takes it, `notices.rs`).
    pub(super) fn notice(&self, to: Address, text: String) {
        self.durable_notice(to, text);
    }

    /// Shows "typing…" where the channel has it (best effort, once per
    /// message that wakes an agent; the platforms show it for 5-10 s).
    fn typing(&self, to: Address) {
        if let Some(ch) = self
            .channels
            .get(&to.channel_type)
            .filter(|c| c.capabilities().typing)
            .cloned()
        {
            tokio::spawn(async move {
                if let Err(e) = ch.typing(&to).await {
                    tracing::debug!(channel = %to.channel_type, "typing indicator not shown: {e}");
                }
            });
        }
    }

    fn regex(&mut self, p: &str) -> Option<Regex> {
        self.regexes
            .entry(p.to_owned())
            .or_insert_with(|| {
                Regex::new(p)
                    .map_err(|e| tracing::error!(pattern = %p, "bad engage pattern: {e}"))
                    .ok()
            })
            .clone()
    }

    pub(super) fn route(&mut self, ev: &InboundEvent) -> Result<Routed> {
        let caps = self.caps(&ev.channel_type);
        // (b) thread-less adapters have no threads
        let mut ev = ev.clone();
        if !caps.threads {
            ev.thread_id = None;
        }
        let user_id = user_id_of(&ev.channel_type, &ev.sender_id);
        // (a) the interceptor: awaited answers never reach an agent
        if let Some(done) = self.intercept(&ev, &user_id, caps)? {
            return Ok(done);
        }
        let addr = Address {
            channel_type: ev.channel_type.clone(),
            platform_id: ev.platform_id.clone(),
            thread_id: ev.thread_id.clone(),
        };
        let msg = route::Message {
            text: &ev.text,
            files: !ev.attachments.is_empty(),
            is_mention: ev.is_mention,
            is_group: ev.is_group,
            thread_id: ev.thread_id.as_deref(),
            threaded_adapter: caps.threads,
        };
        let mg = self
            .central
            .messaging_group(&ev.channel_type, &ev.platform_id)?;
        let wirings = match &mg {
            Some(m) => self.central.wirings(&m.id)?,
            None => Vec::new(),
        };
        // (e) the sender (a write only the first time)
        if !self.central.user_exists(&user_id)? {
            self.central
                .upsert_user(&user_id, &ev.channel_type, ev.sender_name.as_deref())?;
        }
        // Facts per wiring.
        let mut patterns = Vec::with_capacity(wirings.len());
        for w in &wirings {
            patterns.push(match (&w.engage_pattern, w.engage_mode.as_str()) {
                (Some(p), "pattern") => self.regex(p),
                _ => None,
            });
        }
        let mut facts = Vec::with_capacity(wirings.len());
        for (w, pattern) in wirings.iter().zip(&patterns) {
            let mode = EngageMode::parse(&w.engage_mode).unwrap_or(EngageMode::Mention);
            let session_mode = SessionMode::parse(&w.session_mode).unwrap_or(SessionMode::Shared);
            let (access, admin) = self.central.sender_rights(&user_id, &w.agent_group_id)?;
            let sticky_active =
                mode == EngageMode::MentionSticky && ev.is_group && !ev.is_mention && {
                    let thread = match route::session_key(session_mode, &msg) {
                        SessionKey::Conversation { thread } => thread,
                        SessionKey::AgentShared => None,
                    };
                    let last = self.central.session_last_active(
                        &w.agent_group_id,
                        &w.messaging_group_id,
                        thread.as_deref(),
                    )?;
                    let window = jiff::SignedDuration::try_from(self.cfg.sticky_window)
                        .unwrap_or(jiff::SignedDuration::ZERO);
                    last.and_then(|t| time::parse(&t).ok())
                        .is_some_and(|t| t + window >= jiff::Timestamp::now())
                };
            facts.push(route::Wiring {
                mode,
                pattern: pattern.as_ref(),
                scope: SenderScope::parse(&w.sender_scope).unwrap_or(SenderScope::Known),
                ignored: IgnoredPolicy::parse(&w.ignored_message_policy)
                    .unwrap_or(IgnoredPolicy::Drop),
                session_mode,
                sender_access: access,
                sender_admin: admin,
                sticky_active,
            });
        }
        let conv = mg.as_ref().map(|m| route::Conversation {
            denied: m.denied_at.is_some(),
            policy: UnknownSenderPolicy::parse(&m.unknown_sender_policy)
                .unwrap_or(UnknownSenderPolicy::Strict),
        });
        let plan = route::plan(conv, &msg, &facts);
        drop(facts);
        let audit = |host: &Host, reason: DropReason, mg: Option<&str>, ag: Option<&str>| {
            if let Err(e) = host.central.audit_drop(
                &ev.channel_type,
                &ev.platform_id,
                Some(&user_id),
                ev.sender_name.as_deref(),
                reason.as_str(),
                mg,
                ag,
            ) {
                tracing::warn!("could not record a dropped message in the audit: {e:#}");
            }
        };
        match plan {
            Plan::Ignore => {
                tracing::debug!(channel = %ev.channel_type, platform_id = %ev.platform_id, "chatter in an unknown conversation ignored");
                Ok((
                    vec![],
                    Note::dropped("this conversation is not connected to any agent"),
                    vec![],
                ))
            }
            Plan::CreateAndRegister => {
                let m = self.central.create_messaging_group(
                    &ev.channel_type,
                    &ev.platform_id,
                    None,
                    ev.is_group,
                )?;
                tracing::info!(channel = %ev.channel_type, platform_id = %ev.platform_id, mg = %m.id, "new conversation; asking the owner to register it");
                audit(self, DropReason::NoAgentWired, Some(&m.id), None);
                self.ask_registration(&m, &ev, &user_id);
                Ok((vec![], Note::handled("this conversation is not connected to an agent yet; the owner has been asked"), vec![]))
            }
            Plan::Denied => {
                audit(
                    self,
                    DropReason::Denied,
                    mg.as_ref().map(|m| m.id.as_str()),
                    None,
                );
                Ok((
                    vec![],
                    Note::dropped("this conversation was denied by the owner"),
                    vec![],
                ))
            }
            Plan::Unwired { register } => {
                let m = mg.expect("unwired implies a known conversation");
                audit(self, DropReason::NoAgentWired, Some(&m.id), None);
                if register {
                    self.ask_registration(&m, &ev, &user_id);
                    Ok((vec![], Note::handled("this conversation is not connected to an agent yet; the owner has been asked"), vec![]))
                } else {
                    Ok((
                        vec![],
                        Note::dropped("this conversation is not connected to any agent"),
                        vec![],
                    ))
                }
            }
            Plan::Help => {
                self.notice(addr, commands::HELP.to_owned());
                Ok((
                    vec![],
                    Note::handled("answered by the host (/help)"),
                    vec![],
                ))
            }
            Plan::Filtered => {
                let word = commands::command_word(&ev.text).unwrap_or_default();
                audit(
                    self,
                    DropReason::Command,
                    mg.as_ref().map(|m| m.id.as_str()),
                    None,
                );
                tracing::info!(command = %word, "filtered command dropped");
                Ok((
                    vec![],
                    Note::dropped(&format!("{word} is not available here")),
                    vec![],
                ))
            }
            Plan::Fanout {
                takes,
                ask_sender_approval,
            } => {
                let m = mg.expect("fan-out implies a known conversation");
                let mut woken = Vec::new();
                let mut stored = Vec::new();
                let mut reasons = Vec::new();
                let mut errors: Vec<anyhow::Error> = Vec::new();
                for (w, take) in wirings.iter().zip(takes) {
                    match take {
                        Take::Store { trigger, session } => {
                            match self.store_one(w, &ev, &user_id, session, trigger) {
                                Ok(sid) => {
                                    stored.push(sid.clone());
                                    if trigger {
                                        if self.sessions.get(&sid).is_some_and(|s| s.quarantined) {
                                            self.lift_quarantine(&sid, "a new message arrived");
                                        }
                                        woken.push(sid);
                                    }
                                }
                                Err(e) => {
                                    tracing::error!(wiring = %w.id, "could not store the message for this agent: {e:#}");
                                    errors.push(e);
                                }
                            }
                        }
                        Take::Drop(reason) => {
                            tracing::info!(wiring = %w.id, reason = reason.as_str(), "message not taken by this agent");
                            audit(self, reason, Some(&m.id), Some(&w.agent_group_id));
                            if reason == DropReason::PermissionDenied {
                                let word = commands::command_word(&ev.text).unwrap_or_default();
                                self.notice(addr.clone(), format!("permission denied: {word} needs an owner or admin of this agent"));
                            }
                            reasons.push(reason);
                        }
                    }
                }
                if let Some(i) = ask_sender_approval {
                    if let Err(e) =
                        self.request_sender_approval(&m, &wirings[i].agent_group_id, &ev, &user_id)
                    {
                        tracing::error!(mg = %m.id, sender = %user_id, "could not ask for the sender's approval: {e:#}");
                    }
                }
                // Any agent missing it: fail the event so the platform
                // redelivers (rows already queued are idempotent by id).
                if let Some(e) = errors.into_iter().next() {
                    return Err(e);
                }
                if !woken.is_empty() {
                    self.typing(Address {
                        channel_type: ev.channel_type.clone(),
                        platform_id: ev.platform_id.clone(),
                        thread_id: ev.thread_id.clone(),
                    });
                }
                if stored.is_empty() {
                    if reasons.contains(&DropReason::UnknownSender) && ask_sender_approval.is_some()
                    {
                        return Ok((vec![], Note::handled("you are not known to this agent yet; its owner has been asked to let you in"), woken));
                    }
                    let note = if reasons.contains(&DropReason::UnknownSender)
                        || reasons.contains(&DropReason::SenderScope)
                    {
                        "you are not allowed to talk to this agent"
                    } else if reasons.contains(&DropReason::PermissionDenied) {
                        "permission denied"
                    } else if reasons.contains(&DropReason::BadPattern) {
                        "the agent's engage pattern is invalid; the owner can fix it with `pinch admin wirings update`"
                    } else {
                        "no agent engaged with this message"
                    };
                    return Ok((vec![], Note::dropped(note), woken));
                }
                Ok((stored, None, woken))
            }
        }
    }

    /// Asks the owner to register a conversation; a failure is logged (the
    /// message itself is handled: failing it would make the platform
    /// redeliver it into the same failure).
    fn ask_registration(
        &mut self,
        m: &crate::db::central::MessagingGroup,
        ev: &InboundEvent,
        user_id: &str,
    ) {
        if let Err(e) = self.request_registration(m, ev, user_id) {
            tracing::error!(mg = %m.id, "could not ask the owner to register this conversation: {e:#}");
        }
    }

    /// Stores one inbound event for one wiring, in the session the plan
    /// chose (queued: committed by the next [`Host::flush`]); returns the
    /// session id.
    fn store_one(
        &mut self,
        w: &crate::db::central::WiringRow,
        ev: &InboundEvent,
        user_id: &str,
        key: SessionKey,
        trigger: bool,
    ) -> Result<String> {
        let mg_id = w.messaging_group_id.as_str();
        let sid = match key {
            SessionKey::Conversation { thread } => {
                self.session_for(&w.agent_group_id, mg_id, thread.as_deref())?
            }
            SessionKey::AgentShared => match self.central.newest_session(&w.agent_group_id)? {
                Some(row) => {
                    let id = row.id.clone();
                    if !self.sessions.contains_key(&id) {
                        self.load_session(row)?;
                    }
                    id
                }
                None => self.session_for(&w.agent_group_id, mg_id, None)?,
            },
        };
        let (kind, content) = match &ev.webhook {
            Some(h) => (
                "webhook",
                InContent::Webhook(WebhookIn {
                    source: h.source.clone(),
                    event: h.event.clone(),
                    payload: h.payload.clone(),
                }),
            ),
            None => {
                let (attachments, notes) = self.save_attachments(&sid, ev);
                let mut text = ev.text.clone();
                for n in notes {
                    if !text.is_empty() {
                        text.push('\n');
                    }
                    text.push_str(&n);
                }
                let content = InContent::Chat(ChatIn {
                    text,
                    sender: ev.sender_name.clone(),
                    sender_id: Some(user_id.to_owned()),
                    is_mention: ev.is_mention,
                    platform_message_id: Some(ev.message_id.clone()),
                    attachments,
                    edit_of: ev.edit_of.clone(),
                    ..Default::default()
                });
                ("chat", content)
            }
        };
        let row = NewInbound {
            id: format!("{}:{}", ev.message_id, w.agent_group_id),
            kind: kind.into(),
            timestamp: time::now(),
            process_after: None,
            trigger,
            platform_id: Some(ev.platform_id.clone()),
            channel_type: Some(ev.channel_type.clone()),
            thread_id: ev.thread_id.clone(),
            content: content.to_json(),
            source_session_id: None,
            on_wake: false,
            recurrence: None,
            series_id: None,
        };
        self.pending_writes.push((sid.clone(), row));
        Ok(sid)
    }

    /// Saves a message's files into a session's inbox (`inbox/<message
    /// id>/<name>`, before the row commits: a crash in between leaves a
    /// file without a row, never a row without its file); returns what the
    /// row lists and notes for the text about files not saved.
    fn save_attachments(&self, sid: &str, ev: &InboundEvent) -> (Vec<Attachment>, Vec<String>) {
        let mut saved = Vec::new();
        let mut notes = Vec::new();
        if ev.attachments.is_empty() {
            return (saved, notes);
        }
        let Some(s) = self.sessions.get(sid) else {
            notes.push(format!(
                "[{} attachment(s) not saved: the session is not loaded]",
                ev.attachments.len()
            ));
            return (saved, notes);
        };
        let inbox = s.dir.inbox();
        for a in &ev.attachments {
            let data = match &a.data {
                Some(d) if (d.len() as u64) <= MAX_ATTACHMENT => d,
                Some(d) => {
                    notes.push(format!(
                        "[attachment {} ({} bytes) not saved: larger than the {} MiB limit]",
                        a.name,
                        d.len(),
                        MAX_ATTACHMENT >> 20
                    ));
                    continue;
                }
                None if a.size > MAX_ATTACHMENT => {
                    notes.push(format!(
                        "[attachment {} ({} bytes) not saved: larger than the {} MiB limit]",
                        a.name,
                        a.size,
                        MAX_ATTACHMENT >> 20
                    ));
                    continue;
                }
                None => {
                    notes.push(format!("[attachment {} not kept: the message waited for an approval; ask the sender to send it again]", a.name));
                    continue;
                }
            };
            match crate::attachments::save_from(
                &inbox,
                &pinch_policy::filename::sanitize(&ev.message_id),
                &a.name,
                &mut &data[..],
                data.len() as u64,
            ) {
                Ok(s) => {
                    saved.push(Attachment {
                        name: s.name,
                        mime: a.mime.clone(),
                        size: s.size,
                        path: format!("/workspace/inbox/{}", s.rel),
                    });
                }
                Err(e) => {
                    tracing::warn!(message = %ev.message_id, "could not save an attachment: {e}");
                    notes.push(format!("[attachment {} not saved: {e}]", a.name));
                }
            }
        }
        (saved, notes)
    }

    /// Runs a held event through the router again (after an approval) and
    /// wakes what it reached.
    pub(super) fn replay(&mut self, ev: &InboundEvent) {
        match self.route(ev) {
            Ok((stored, note, woken)) => {
                tracing::info!(routed = stored.len(), message = %ev.message_id, "held message replayed");
                self.pending_acks.push(super::PendingAck {
                    ack: None,
                    stored,
                    note,
                    woken,
                });
            }
            Err(e) => {
                tracing::error!(message = %ev.message_id, "could not replay a held message: {e:#}")
            }
        }
    }

    /// Step (a): a new agent's name the owner was asked for, or a numbered
    /// answer to a card on a channel without buttons.
    fn intercept(
        &mut self,
        ev: &InboundEvent,
        user_id: &str,
        caps: Capabilities,
    ) -> Result<Option<Routed>> {
        if let Some((mg_id, approver, event, approval_id)) = self
            .central
            .awaiting_name(&ev.channel_type, &ev.platform_id)?
        {
            if user_id == approver || self.central.is_owner(user_id)? {
                let name = ev.text.trim();
                let reply = self.register_new_agent(&approval_id, &mg_id, name, &event, user_id);
                let to = Address {
                    channel_type: ev.channel_type.clone(),
                    platform_id: ev.platform_id.clone(),
                    thread_id: ev.thread_id.clone(),
                };
                let text = match reply {
                    Ok(t) => t,
                    Err(e) => format!("Could not create the agent: {e:#}. Send another name."),
                };
                self.notice(to, text);
                return Ok(Some((
                    vec![],
                    Note::handled("taken as the new agent's name"),
                    vec![],
                )));
            }
        }
        if caps.buttons {
            return Ok(None);
        }
        let Ok(n) = ev.text.trim().parse::<usize>() else {
            return Ok(None);
        };
        if !(1..=10).contains(&n) {
            return Ok(None);
        }
        // A bare number answers a card or question only when exactly one is
        // open here (this conversation and thread, unexpired, one this
        // sender may decide, with that many options); otherwise it is
        // ordinary text for the agent.
        let now = time::now();
        let mut open: Vec<(String, usize)> = Vec::new();
        if ev.thread_id.is_none() {
            for a in self
                .central
                .open_approvals_in(&ev.channel_type, &ev.platform_id, &now)?
            {
                let owners_only = a
                    .payload
                    .get("owners_only")
                    .and_then(serde_json::Value::as_bool)
                    .unwrap_or(false);
                if self
                    .central
                    .may_decide(user_id, a.agent_group_id.as_deref(), owners_only)?
                {
                    open.push((format!("a:{}", a.approval_id), a.options.len()));
                }
            }
        }
        for (qid, count) in self.central.open_questions_in(
            &ev.channel_type,
            &ev.platform_id,
            ev.thread_id.as_deref(),
            &now,
        )? {
            open.push((format!("q:{qid}"), count));
        }
        let callback = match open.as_slice() {
            [(prefix, count)] if n <= *count => format!("{prefix}:{}", n - 1),
            [] | [_] => return Ok(None),
            _ => {
                tracing::info!(channel = %ev.channel_type, open = open.len(), "a bare number with several cards open here is passed on as text");
                return Ok(None);
            }
        };
        self.on_click(pinch_channels::Click {
            channel_type: ev.channel_type.clone(),
            platform_id: ev.platform_id.clone(),
            thread_id: ev.thread_id.clone(),
            user_id: ev.sender_id.clone(),
            callback,
        });
        Ok(Some((
            vec![],
            Note::handled("taken as your answer to the open question"),
            vec![],
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::user_id_of;

    #[test]
    fn user_ids_take_this_channels_prefix_only() {
        assert_eq!(user_id_of("telegram", "4242"), "telegram:4242");
        assert_eq!(user_id_of("telegram", "telegram:4242"), "telegram:4242");
        // An id with a colon cannot claim another channel's identity.
        assert_eq!(user_id_of("matrix", "cli:root"), "matrix:cli:root");
        assert_eq!(
            user_id_of("matrix", "@bob:example.org"),
            "matrix:@bob:example.org"
        );
        assert_eq!(user_id_of("cli", "root"), "cli:root");
    }
}
