//! The approval card primitive (SPEC §7.1): one `pending_approvals` row
//! with buttons `a:<id>:<n>`, sent by DM to the first approver reachable
//! tier by tier, its address recorded before it goes out, and expired when
//! nobody decides in time.

use anyhow::Result;
use pinch_channels::{numbered_fallback, Address, Button, Capabilities, DeliverError, Outgoing};
use pinch_proto::content::{InContent, SystemIn};
use pinch_proto::runner_config::random_hex;
use pinch_proto::time;
use serde_json::json;

use crate::db::permissions::{Approval, ApprovalOption};
use crate::main_loop::{Event, Host};

impl Host {
    #[allow(clippy::too_many_arguments)]
    pub(in crate::main_loop) fn new_approval(
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
    pub(in crate::main_loop) fn send_card(
        &self,
        a: &Approval,
        tiers: Vec<Vec<String>>,
        origin_channel: &str,
    ) {
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
        let a = a.clone();
        // Until it reports back, a channel coming back leaves it alone.
        self.cards_in_flight.lock().unwrap().insert(id.clone());
        tokio::spawn(async move {
            let mut why = String::from("no approver has a DM on a running channel");
            // The first approver found with nobody connected on their
            // channel: the card waits there if nobody else can be reached.
            let mut waits: Option<(String, String, String)> = None;
            for (user, ch_type, cached) in candidates {
                let ch = channels
                    .get(&ch_type)
                    .expect("filtered to running channels")
                    .clone();
                let local = user.split_once(':').map_or(user.as_str(), |(_, l)| l);
                let (pid, opened) = match cached {
                    Some(p) => (p, false),
                    None => {
                        match pinch_channels::guarded(ch.channel_type(), ch.open_dm(local)).await {
                            Ok(Some(p)) => (p, true),
                            Ok(None) => continue,
                            Err(e) => {
                                why = format!("opening a DM with {user}: {e}");
                                continue;
                            }
                        }
                    }
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
                let to = Address {
                    channel_type: ch_type.clone(),
                    platform_id: pid.clone(),
                    thread_id: None,
                };
                match pinch_channels::guarded(
                    ch.channel_type(),
                    ch.deliver(&to, &card_message(&a, ch.capabilities())),
                )
                .await
                {
                    Ok(_) => {
                        tracing::info!(approval = %id, approver = %user, "approval card sent");
                        let _ = events.send(Event::ApprovalCardSent {
                            approval_id: id,
                            channel_type: ch_type,
                        });
                        return;
                    }
                    Err(DeliverError::Unavailable(e)) => {
                        tracing::info!(approval = %id, approver = %user, "nobody is connected for the approval card: {e}");
                        waits.get_or_insert((user, ch_type, pid));
                    }
                    Err(e) => {
                        tracing::warn!(approval = %id, approver = %user, "could not send the approval card: {e}");
                        why = format!("sending to {user}: {e}");
                    }
                }
            }
            let ev = match waits {
                Some((approver, channel_type, platform_id)) => Event::ApprovalCardWaits {
                    approval_id: id,
                    approver,
                    channel_type,
                    platform_id,
                    try_again: true,
                },
                None => Event::ApprovalUndeliverable {
                    approval_id: id,
                    why,
                },
            };
            let _ = events.send(ev);
        });
    }

    /// A card whose approver had nobody connected: it stays addressed to
    /// them (the last address tried may have been another approver's) and
    /// is sent when their channel is back ([`Host::send_waiting_cards`]).
    /// After a first send (`try_again`) it is tried once more at once: the
    /// approver may have connected while the row named someone else, and
    /// that `Available` found nothing to send.
    pub(in crate::main_loop) fn card_waits(
        &mut self,
        id: &str,
        approver: &str,
        channel_type: &str,
        platform_id: &str,
        try_again: bool,
    ) {
        match self
            .central
            .address_approval(id, approver, channel_type, platform_id)
        {
            Ok(()) => {
                tracing::info!(approval = %id, approver, channel = channel_type, "the approval card waits until the approver is connected")
            }
            Err(e) => {
                tracing::error!(approval = %id, "could not record where a waiting approval card goes (decide it with `pinch admin approvals approve {id}` or `… reject {id}`): {e:#}")
            }
        }
        self.card_back(id, Some(channel_type));
        if try_again {
            self.send_waiting_cards(channel_type);
        }
    }

    /// A card's send reported back (sent, waiting, or nobody reachable;
    /// what it changed is recorded before this): if its channel came back
    /// meanwhile, the cards waiting there are sent now.
    pub(in crate::main_loop) fn card_back(&self, id: &str, channel_type: Option<&str>) {
        self.cards_in_flight.lock().unwrap().remove(id);
        if let Some(ct) = channel_type {
            if self.cards_resend.lock().unwrap().remove(ct) {
                self.send_waiting_cards(ct);
            }
        }
    }

    /// Sends the cards that waited for `channel_type` to be back (a web
    /// chat tab opened); each is marked sent when the channel takes it.
    pub(in crate::main_loop) fn send_waiting_cards(&self, channel_type: &str) {
        let Some(ch) = self.channels.get(channel_type).cloned() else {
            return;
        };
        let cards = match self
            .central
            .unsent_approval_cards(channel_type, &time::format(jiff::Timestamp::now()))
        {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(
                    "could not read the approval cards waiting for {channel_type}: {e:#}"
                );
                return;
            }
        };
        let cards: Vec<_> = {
            let mut in_flight = self.cards_in_flight.lock().unwrap();
            cards
                .into_iter()
                .filter(|a| {
                    if in_flight.contains(&a.approval_id) {
                        // Sent again, if still waiting, once it is back.
                        self.cards_resend
                            .lock()
                            .unwrap()
                            .insert(channel_type.to_owned());
                        return false;
                    }
                    in_flight.insert(a.approval_id.clone());
                    true
                })
                .collect()
        };
        if cards.is_empty() {
            return;
        }
        let events = self.events.clone();
        tokio::spawn(async move {
            for a in cards {
                // (The query read only cards addressed on this channel.)
                let ct = a.channel_type.clone().unwrap_or_default();
                let pid = a.platform_id.clone().unwrap_or_default();
                let to = Address {
                    channel_type: ct.clone(),
                    platform_id: pid.clone(),
                    thread_id: None,
                };
                let ev = match pinch_channels::guarded(
                    ch.channel_type(),
                    ch.deliver(&to, &card_message(&a, ch.capabilities())),
                )
                .await
                {
                    Ok(_) => {
                        tracing::info!(approval = %a.approval_id, approver = %a.approver_user_id, "waiting approval card sent");
                        Event::ApprovalCardSent {
                            approval_id: a.approval_id,
                            channel_type: ct,
                        }
                    }
                    // Gone again, or failing: it waits for the next time.
                    Err(e) => {
                        tracing::info!(approval = %a.approval_id, "the waiting approval card was not sent: {e}");
                        Event::ApprovalCardWaits {
                            approval_id: a.approval_id,
                            approver: a.approver_user_id,
                            channel_type: ct,
                            platform_id: pid,
                            try_again: false,
                        }
                    }
                };
                let _ = events.send(ev);
            }
        });
    }

    pub(in crate::main_loop) fn record_card_address(
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
    /// Expires one approval: the request is forgotten (a later message asks
    /// again), the card's conversation is told, an agent that asked gets an
    /// `action_result`.
    pub(in crate::main_loop) fn expire(&mut self, a: &Approval) {
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
    pub(in crate::main_loop) fn expire_approvals(&mut self) {
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
}

/// The card for `a` as a channel with `caps` shows it: buttons
/// `a:<id>:<n>`, or numbered choices where the channel has no buttons.
fn card_message(a: &Approval, caps: Capabilities) -> Outgoing {
    let id = &a.approval_id;
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
    let (text, buttons) = if caps.buttons {
        (text, buttons)
    } else {
        (numbered_fallback(&text, &buttons), Vec::new())
    };
    Outgoing {
        id: format!("approval-{id}"),
        text,
        in_reply_to: None,
        buttons,
        files: Vec::new(),
    }
}
