//! Agent-to-agent messages (SPEC §7.5): a chat row an agent addressed to
//! another agent group goes, if that group is one of its destinations (or
//! itself), into a session of the target — the session that asked, for a
//! reply (`source_session_id`, lesson 35), else the target's newest, else a
//! new one — with the sender's session as its return path.
//!
//! Files the sender attached (its `outbox/<row id>/`) are opened beneath
//! the outbox's descriptor with [`outbox::open_checked`] (never by path:
//! the sender can swap its folders for links at any moment) and copied from
//! that descriptor, at most the checked size, into the target's
//! `inbox/a2a-<session>-<row id>/` (names sanitised, exclusive create
//! beneath the inbox's descriptor, no links followed; SPEC §7.8), listed
//! as the message's attachments.
//!
//! Loop protection (lesson 42): the content carries `a2a{hops, chain}`;
//! each hop adds one and the sender. A new message (not a reply to the
//! agent that asked) to an agent already in the chain is a cycle and is
//! refused, whatever its length; more than [`MAX_HOPS`] hops is refused;
//! at most [`PAIR_LIMIT`] messages per ordered pair per [`PAIR_WINDOW`].
//! Refusals are logged and told to the sender (the delivery fails with the
//! reason, which reaches the agent as an `action_result`).

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use pinch_proto::content::{A2a, Attachment, ChatIn, ChatOut, InContent};
use pinch_proto::open::open_reader;
use pinch_proto::rows::{self, NewInbound, OutboundRow};
use pinch_proto::time;

use super::Host;
use crate::{attachments, outbox, session};

pub const MAX_HOPS: u32 = 8;
pub const PAIR_LIMIT: usize = 20;
pub const PAIR_WINDOW: Duration = Duration::from_secs(600);
/// Most files in one message between agents.
pub const MAX_FILES: usize = 10;

impl Host {
    /// Ok: the target session id (the delivery's record).
    pub(super) fn agent_message(
        &mut self,
        from_sid: &str,
        row: &OutboundRow,
    ) -> Result<String, String> {
        let refuse = |why: String| {
            tracing::warn!(session_id = %from_sid, message = %row.id, "agent-to-agent message refused: {why}");
            Err(why)
        };
        let Some(from) = self.sessions.get(from_sid) else {
            return Err("the sending session is not active".into());
        };
        let from_ag = from.row.agent_group_id.clone();
        let from_dir = from.dir.clone();
        let Some(target_ag) = row.platform_id.clone().filter(|t| !t.is_empty()) else {
            return Err("a message to an agent needs the agent group id".into());
        };
        let allowed = target_ag == from_ag
            || self
                .central
                .destinations(&from_ag)
                .map_err(|e| format!("reading destinations: {e:#}"))?
                .iter()
                .any(|d| {
                    d.kind == "agent" && d.agent_group_id.as_deref() == Some(target_ag.as_str())
                });
        if !allowed {
            return refuse(format!(
                "agent group {target_ag:?} is not one of your destinations"
            ));
        }
        let (text, files) = match ChatOut::parse(&row.content) {
            Ok(ChatOut::Text { text, files }) => (text, files),
            Ok(_) => return refuse("only plain text messages go between agents (no edits, reactions, questions or cards)".into()),
            Err(e) => return refuse(format!("the message is not valid JSON: {e}")),
        };
        if files.len() > MAX_FILES {
            return refuse(format!(
                "{} files in one message; at most {MAX_FILES} go to another agent at once",
                files.len()
            ));
        }
        // Every file is checked (and opened) before anything is delivered.
        let mut opened = Vec::with_capacity(files.len());
        for name in &files {
            match outbox::open_checked(&from_dir.outbox(), &row.id, name) {
                Ok((f, size)) => opened.push((name.clone(), f, size)),
                Err(e) => return refuse(format!("file {name:?}: {e}")),
            }
        }
        // What this answers (the turn's trigger), for the chain and the return path.
        let asked = row.in_reply_to.as_ref().and_then(|id| {
            let c = open_reader(&from_dir.inbound_db(), session::BUSY).ok()?;
            rows::inbound_by_ids(&c, std::slice::from_ref(id))
                .ok()?
                .into_iter()
                .next()
        });
        let (hops, chain, asked_by) = match asked
            .as_ref()
            .map(|r| InContent::parse(&r.kind, &r.content))
        {
            Some(Ok(InContent::Chat(ChatIn {
                a2a: Some(a),
                sender_id,
                ..
            }))) => (a.hops, a.chain, sender_id),
            _ => (0, Vec::new(), None),
        };
        // Answering the agent whose message started this turn.
        let is_reply = asked_by.as_deref() == Some(format!("agent:{target_ag}").as_str());
        if !is_reply && (chain.contains(&target_ag) || target_ag == from_ag && hops > 0) {
            return refuse(format!("a cycle: {target_ag} is already in this conversation's chain ({}); reply to the agent that asked instead", chain.join(" → ")));
        }
        if hops + 1 > MAX_HOPS {
            return refuse(format!(
                "this conversation between agents has gone {hops} hops; the limit is {MAX_HOPS}"
            ));
        }
        if !self.a2a_sends.admit(&from_ag, &target_ag, Instant::now()) {
            return refuse(format!("{from_ag} has sent {target_ag} {PAIR_LIMIT} messages in the last {} minutes; wait before sending more", PAIR_WINDOW.as_secs() / 60));
        }
        let mut chain = chain;
        chain.push(from_ag.clone());
        // The target session: the one that asked (a reply), else the newest.
        let back = asked
            .as_ref()
            .filter(|_| is_reply)
            .and_then(|r| r.source_session_id.clone())
            .filter(|s| {
                self.sessions
                    .get(s)
                    .is_some_and(|rt| !rt.closed && rt.row.agent_group_id == target_ag)
            });
        let target_sid = match back {
            Some(s) => s,
            None => match self
                .central
                .newest_session(&target_ag)
                .map_err(|e| format!("{e:#}"))?
            {
                Some(r) => {
                    let id = r.id.clone();
                    if !self.sessions.contains_key(&id) {
                        self.load_session(r).map_err(|e| format!("{e:#}"))?;
                    }
                    id
                }
                None => self
                    .session_in(&target_ag, None, None)
                    .map_err(|e| format!("could not start a session of {target_ag}: {e:#}"))?,
            },
        };
        let Some(t) = self.sessions.get(&target_sid) else {
            return Err("the target session vanished".into());
        };
        let id = format!("a2a:{from_sid}:{}", row.id);
        // Delivered already (a host crash before the ledger entry): once.
        if super::agent_admin::session_has_row(&t.dir, &id) {
            return Ok(format!("session:{target_sid}"));
        }
        // Files go into the target's inbox (read-only in its sandbox) under
        // a folder of this message, names sanitised, never through a link.
        let folder = format!("a2a-{from_sid}-{}", row.id);
        let inbox = t.dir.inbox();
        let folder_path = inbox.join(&folder);
        let clean = |p: &std::path::Path| {
            if std::fs::symlink_metadata(p).is_ok_and(|m| m.is_dir()) {
                let _ = std::fs::remove_dir_all(p);
            }
        };
        // Left by a delivery that crashed before its commit.
        clean(&folder_path);
        let mut attachments = Vec::with_capacity(opened.len());
        for (name, mut f, size) in opened {
            // From the checked descriptor, never more than the checked size.
            match attachments::save_from(&inbox, &folder, &name, &mut f, size) {
                Ok(s) => attachments.push(Attachment {
                    path: format!("/workspace/inbox/{}", s.rel),
                    name: s.name,
                    mime: None,
                    size: s.size,
                }),
                Err(e) => {
                    clean(&folder_path);
                    return refuse(format!("could not copy {name:?} to {target_ag}: {e}"));
                }
            }
        }
        let content = InContent::Chat(ChatIn {
            text,
            attachments,
            sender: Some(from_ag.clone()),
            sender_id: Some(format!("agent:{from_ag}")),
            is_mention: true,
            a2a: Some(A2a {
                hops: hops + 1,
                chain,
            }),
            ..Default::default()
        });
        // A new request is answered to the agent that sent it (its address
        // is the row's); a reply is read in the asking session, whose own
        // answer then goes to its usual conversation (no address).
        let (channel_type, platform_id) = if is_reply {
            (None, None)
        } else {
            (Some("agent".to_owned()), Some(from_ag.clone()))
        };
        let new = NewInbound {
            id,
            kind: "chat".into(),
            timestamp: time::now(),
            trigger: true,
            channel_type,
            platform_id,
            content: content.to_json(),
            source_session_id: Some(from_sid.to_owned()),
            ..Default::default()
        };
        let out_max = t.shared.out_max.load(std::sync::atomic::Ordering::Relaxed);
        if let Err(e) = session::write_inbound(&t.dir, &[new], out_max) {
            clean(&folder_path);
            return Err(format!("{e:#}"));
        }
        tracing::info!(from = %from_ag, to = %target_ag, target_session = %target_sid, hops = hops + 1, reply = is_reply, "agent-to-agent message delivered");
        self.try_wake(&target_sid);
        Ok(format!("session:{target_sid}"))
    }
}

/// The per-ordered-pair rate limit: at most [`PAIR_LIMIT`] messages from
/// one agent group to another in any [`PAIR_WINDOW`].
#[derive(Debug, Default)]
pub(crate) struct PairLimiter(HashMap<(String, String), VecDeque<Instant>>);

impl PairLimiter {
    /// Counts a message `from` → `to` at `now` if the pair is under the
    /// limit; false (and nothing counted) if not.
    pub(crate) fn admit(&mut self, from: &str, to: &str, now: Instant) -> bool {
        let sent = self.0.entry((from.to_owned(), to.to_owned())).or_default();
        while sent
            .front()
            .is_some_and(|t| now.duration_since(*t) >= PAIR_WINDOW)
        {
            sent.pop_front();
        }
        if sent.len() >= PAIR_LIMIT {
            return false;
        }
        sent.push_back(now);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn twenty_per_ordered_pair_per_window() {
        let mut l = PairLimiter::default();
        let t0 = Instant::now();
        for i in 0..PAIR_LIMIT {
            assert!(
                l.admit("a", "b", t0 + Duration::from_secs(i as u64)),
                "message {i}"
            );
        }
        assert!(
            !l.admit("a", "b", t0 + Duration::from_secs(30)),
            "the 21st within 10 minutes"
        );
        // Other pairs, including the reverse direction, are counted apart.
        assert!(l.admit("b", "a", t0 + Duration::from_secs(30)));
        assert!(l.admit("a", "c", t0 + Duration::from_secs(30)));
        // A refusal counts nothing; once the first message is 10 minutes
        // old, one more fits, and only one.
        assert!(!l.admit("a", "b", t0 + PAIR_WINDOW - Duration::from_millis(1)));
        assert!(l.admit("a", "b", t0 + PAIR_WINDOW));
        assert!(!l.admit("a", "b", t0 + PAIR_WINDOW));
        assert!(l.admit("a", "b", t0 + PAIR_WINDOW + Duration::from_secs(1)));
    }
}
