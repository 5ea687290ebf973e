//! The address check (issue 14): what the host's records grant one
//! session, and the platform message an edit or a reaction points at,
//! found only within the conversation the row may reach.

use anyhow::Result;
use pinch_policy::address::{self, Claim, Decision, Place, Records, Target};
use pinch_proto::content::{ChatIn, InContent};
use pinch_proto::open::open_agent_reader;
use pinch_proto::rows::{self, status, InboundRow};

use crate::ledger::Ledger;
use crate::session::BUSY;

use super::Task;

impl Task {
    /// The platform's id of the message with this seq, if it is a message
    /// of the conversation `place` is in: an outbound row's from the
    /// ledger (odd seqs; its address decided again from the host's
    /// records), an inbound chat's from its content (even; the address
    /// the host stored). `None`: unknown, not delivered, or elsewhere.
    pub(super) fn platform_message_id_of(
        &self,
        inbound: &pinch_proto::rusqlite::Connection,
        ledger: &Ledger,
        grants: &Grants,
        seq: i64,
        place: &Place,
    ) -> Result<Option<String>> {
        let here = |ct: Option<&str>, pid: Option<&str>| {
            ct == Some(place.channel_type.as_str()) && pid == Some(place.platform_id.as_str())
        };
        if seq % 2 != 0 {
            let out = open_agent_reader(&self.dir.outbound_db(), BUSY)?;
            let edited = pinch_proto::outbound::address_by_seq(&out, seq)?;
            let Some((id, ct, pid, thread, in_reply_to)) = edited else {
                return Ok(None);
            };
            let claim = Claim {
                channel_type: ct.as_deref(),
                platform_id: pid.as_deref(),
                thread_id: thread.as_deref(),
            };
            match grants.decide(inbound, &claim, in_reply_to.as_deref())?.0 {
                Decision::Allowed(Target::Channel(p))
                    if here(Some(&p.channel_type), Some(&p.platform_id)) => {}
                _ => return Ok(None),
            }
            return Ok(ledger
                .get(&id)?
                .filter(|l| l.status == status::DELIVERED)
                .and_then(|l| l.platform_message_id));
        }
        let row = pinch_proto::inbound::by_seq(inbound, seq)?;
        Ok(match row {
            Some((k, c, ct, pid)) if here(ct.as_deref(), pid.as_deref()) => {
                match InContent::parse(&k, &c) {
                    Ok(InContent::Chat(ChatIn {
                        platform_message_id,
                        ..
                    })) => platform_message_id,
                    _ => None,
                }
            }
            _ => None,
        })
    }
}

/// What the host's records grant one session, read once per pass from
/// its inbound.db (the host's projection of the central DB; the sandbox
/// sees it read-only).
pub(super) struct Grants {
    agent_group: String,
    conversation: Option<Place>,
    channels: Vec<Place>,
    agents: Vec<String>,
}

impl Grants {
    pub(super) fn read(
        inbound: &pinch_proto::rusqlite::Connection,
        agent_group: &str,
    ) -> Result<Grants> {
        let routing = rows::routing(inbound)?;
        let conversation = routing.as_ref().and_then(|r| {
            Place::from_parts(
                r.channel_type.as_deref(),
                r.platform_id.as_deref(),
                r.thread_id.as_deref(),
            )
        });
        let mut channels = Vec::new();
        let mut agents = Vec::new();
        for d in rows::destinations(inbound)? {
            if d.kind == address::AGENT {
                agents.extend(d.agent_group_id);
            } else if let Some(p) =
                Place::from_parts(d.channel_type.as_deref(), d.platform_id.as_deref(), None)
            {
                channels.push(p);
            }
        }
        Ok(Grants {
            agent_group: agent_group.to_owned(),
            conversation,
            channels,
            agents,
        })
    }

    /// Where a row claiming `claim` and answering `in_reply_to` may go,
    /// with the answered inbound row (the host's, when the id names one).
    pub(super) fn decide(
        &self,
        inbound: &pinch_proto::rusqlite::Connection,
        claim: &Claim<'_>,
        in_reply_to: Option<&str>,
    ) -> Result<(Decision, Option<InboundRow>)> {
        let answered_row = match in_reply_to {
            Some(id) => rows::inbound_by_ids(inbound, &[id.to_owned()])?
                .into_iter()
                .next(),
            None => None,
        };
        let answered = answered_row.as_ref().and_then(|r| {
            Place::from_parts(
                r.channel_type.as_deref(),
                r.platform_id.as_deref(),
                r.thread_id.as_deref(),
            )
        });
        let records = Records {
            agent_group: &self.agent_group,
            conversation: self.conversation.as_ref(),
            answered: answered.as_ref(),
            channels: &self.channels,
            agents: &self.agents,
        };
        Ok((address::decide(claim, &records), answered_row))
    }
}
