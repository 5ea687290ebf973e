//! The requests that raise approval cards (SPEC §7.1, §7.2): a
//! conversation pinch has just met, to be connected by an owner, and an
//! unknown sender, to be let in by an approver of the agent group.

use anyhow::Result;
use pinch_channels::InboundEvent;
use serde_json::json;

use crate::db::central::MessagingGroup;
use crate::db::permissions::ApprovalOption;
use crate::main_loop::Host;

/// Most agent groups a registration card offers to connect.
const MAX_CONNECT_OPTIONS: usize = 7;

fn opt(label: impl Into<String>, value: impl Into<String>) -> ApprovalOption {
    ApprovalOption {
        label: label.into(),
        value: value.into(),
    }
}

impl Host {
    /// Asks the owner to connect a conversation pinch has just met (once
    /// per conversation while the request is open).
    pub(in crate::main_loop) fn request_registration(
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
    pub(in crate::main_loop) fn request_sender_approval(
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
}

fn clip(s: &str, n: usize) -> String {
    match s.char_indices().nth(n) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_owned(),
    }
}
