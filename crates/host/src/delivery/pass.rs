//! One delivery pass: `messages_out` and `processing_ack` read in one
//! transaction, then each row in order: checked against the ledger and the
//! host's records ([`Task::step`]), carried out by the main loop (a host
//! action or a message to another agent, [`Task::carry_out`]) or sent to its
//! channel (`send.rs`); then terminal acks copied into `messages_in.status`
//! and finished messages announced as settled (`acks.rs`).

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Context, Result};
use pinch_policy::address::{self, Claim, Decision, Target};
use pinch_proto::open::open_agent_reader;
use pinch_proto::rows::{self, status, LedgerRow, OutboundRow};
use pinch_proto::time;

use crate::event::Event;
use crate::ledger::Ledger;
use crate::session::BUSY;

use super::grants::Grants;
use super::inbound::Inbound;
use super::{Task, RETRY_DELAYS};

/// A place rows go to (channel type and platform id, `agent` and a group,
/// or the host): rows to one place keep their order.
pub(super) type Key = (String, String);

/// What became of one row in a pass.
pub(super) enum Step {
    /// Terminal now (delivered, failed or refused, here or before).
    Done,
    /// Waits (its backoff, its `deliver_after`, its channel away); later
    /// rows to the same place wait behind it.
    Wait(Key),
    /// Behind an earlier row to its place that waits.
    Behind,
    /// The main loop did not answer in time: no more rows this pass (acks
    /// are still synced).
    Break,
    /// The host is stopping, or a question's record could not be made yet:
    /// the pass ends here.
    Stop,
}

/// What one pass's rows share.
pub(super) struct Pass<'a> {
    pub(super) inbound: Inbound,
    pub(super) ledger: &'a mut Ledger,
    pub(super) grants: Grants,
    held: HashSet<Key>,
    now: jiff::Timestamp,
}

impl Task {
    pub(super) async fn pass_with(&mut self, ledger: &mut Ledger) -> Result<()> {
        let out_path = self.dir.outbound_db();
        if !out_path.exists() {
            return Ok(());
        }
        let read_at = std::time::Instant::now();
        let (out_rows, acks, progress) = {
            let mut c = open_agent_reader(&out_path, BUSY)?;
            let tx = c.transaction().context("begin outbound read")?;
            let out_rows = rows::outbound_after(&tx, self.watermark)?;
            let acks = rows::acks(&tx)?;
            let progress = pinch_proto::outbound::progress(&tx)?;
            (out_rows, acks, progress)
        };
        if let Some(last) = out_rows.last() {
            self.shared.out_max.fetch_max(last.seq, Ordering::Relaxed);
        }
        // Never created here: a vanished inbound.db is the main loop's to
        // notice and report (session_check), not to be silently remade.
        let inbound = Inbound::open(self.dir.inbound_db())?;
        // The host's own records of where this session may send (issue 14):
        // its conversation and its agent group's destinations, both
        // projected by the host into inbound.db, which the sandbox sees
        // read-only. Nothing in a row's address columns is trusted.
        let grants = Grants::read(&inbound, &self.agent_group)?;
        let mut p = Pass {
            inbound,
            ledger,
            grants,
            held: HashSet::new(),
            now: jiff::Timestamp::now(),
        };
        // While every row so far is terminal, the watermark follows; a row
        // that waits holds back only later rows to the same place, so one
        // unreachable user or a callback that is down never stops the
        // session's other replies.
        let mut contiguous = true;
        let mut blocked = false;
        for row in &out_rows {
            match self.step(row, &mut p).await? {
                Step::Done => {
                    if contiguous {
                        self.watermark = row.seq;
                    }
                }
                Step::Wait(key) => {
                    p.held.insert(key);
                    contiguous = false;
                    blocked = true;
                }
                Step::Behind => {
                    contiguous = false;
                    blocked = true;
                }
                Step::Break => {
                    blocked = true;
                    break;
                }
                Step::Stop => return Ok(()),
            }
        }
        self.sync_acks(&mut p.inbound, &acks)?;
        if !blocked {
            self.announce_settled();
        }
        if let (Some(hub), Some(now)) = (
            self.live.clone(),
            self.live_now(&p.inbound, &acks, progress),
        ) {
            hub.working(&self.session_id, now, read_at).await;
        }
        Ok(())
    }

    /// The turns the session's runner has in flight and what it does (its
    /// claims and `container_state`, as this pass read them), for the live
    /// view (decision 0048). `None`: nothing to say (no live runner: its
    /// exit ended the view; or the rows could not be read).
    fn live_now(
        &self,
        inbound: &pinch_proto::rusqlite::Connection,
        acks: &[rows::AckRow],
        progress: Option<pinch_proto::outbound::Progress>,
    ) -> Option<Vec<crate::live::Working>> {
        self.live.as_ref()?;
        let runner = self.shared.runner.lock().unwrap().clone()?;
        let ids: Vec<String> = acks
            .iter()
            .filter(|a| a.status == status::PROCESSING && a.runner_id == runner)
            .map(|a| a.message_id.clone())
            .collect();
        let mut now = Vec::new();
        if !ids.is_empty() {
            let p = progress.filter(|p| p.runner_id.as_deref() == Some(runner.as_str()));
            let state = crate::live::state_text(p.as_ref().and_then(|p| p.current_tool.as_deref()));
            let since_ms = p
                .as_ref()
                .and_then(|p| p.turn_started_at.as_deref())
                .and_then(|t| time::parse(t).ok())
                .map_or_else(
                    || jiff::Timestamp::now().as_millisecond(),
                    |t| t.as_millisecond(),
                );
            match rows::inbound_by_ids(inbound, &ids) {
                Ok(found) => {
                    for r in found {
                        if let Some(target) = crate::live::Target::of_row(&r) {
                            now.push(crate::live::Working {
                                id: r.id,
                                target,
                                state: state.clone(),
                                since_ms,
                            });
                        }
                    }
                }
                Err(e) => {
                    tracing::debug!("the live view skipped a pass: {e}");
                    return None;
                }
            }
        }
        Some(now)
    }

    /// Decides and carries out one row.
    async fn step(&mut self, row: &OutboundRow, p: &mut Pass<'_>) -> Result<Step> {
        let prev = p.ledger.get(&row.id)?;
        if prev
            .as_ref()
            .is_some_and(|l| l.status == status::DELIVERED || l.status == status::FAILED)
        {
            return Ok(Step::Done);
        }
        let attempts = prev.as_ref().map_or(0, |l| l.attempts);
        if let Some((pid, n)) = self.unrecorded.get(&row.id).cloned() {
            p.ledger.put(&LedgerRow {
                message_out_id: row.id.clone(),
                platform_message_id: Some(pid),
                status: status::DELIVERED.into(),
                attempts: n,
                last_error: None,
            })?;
            self.unrecorded.remove(&row.id);
            return Ok(Step::Done);
        }
        // An action for the host (admin request, task, …): the session is
        // the host's record, the row's address plays no part.
        let target = if row.kind == "system" {
            None
        } else {
            let claim = Claim {
                channel_type: row.channel_type.as_deref(),
                platform_id: row.platform_id.as_deref(),
                thread_id: row.thread_id.as_deref(),
            };
            let (decision, answered_row) =
                p.grants
                    .decide(&p.inbound, &claim, row.in_reply_to.as_deref())?;
            match decision {
                Decision::Allowed(t) => Some((t, answered_row)),
                Decision::Refused(why) => {
                    self.refuse(&mut p.inbound, p.ledger, row, attempts, &why)?;
                    return Ok(Step::Done);
                }
            }
        };
        let key = match &target {
            None => (String::new(), "host".to_owned()),
            Some((Target::Agent(ag), _)) => (address::AGENT.to_owned(), ag.clone()),
            Some((Target::Channel(p), _)) => (p.channel_type.clone(), p.platform_id.clone()),
        };
        if p.held.contains(&key) {
            // An earlier row to this place waits: keep the order.
            return Ok(Step::Behind);
        }
        if let Some(at) = self.retry_at.get(&row.id) {
            if *at > std::time::Instant::now() {
                // Its backoff runs (a poke is already due then).
                return Ok(Step::Wait(key));
            }
            self.retry_at.remove(&row.id);
        }
        if let Some(after) = row.deliver_after.as_deref() {
            if !time::is_due(Some(after), p.now) {
                if let Ok(t) = time::parse(after) {
                    let ms = (t.as_millisecond() - p.now.as_millisecond()).max(0) as u64;
                    self.poke_later(Duration::from_millis(ms));
                }
                return Ok(Step::Wait(key));
            }
        }
        match target {
            None => {
                let (done, outcome) = tokio::sync::oneshot::channel();
                let ev = Event::AgentAction {
                    session_id: self.session_id.clone(),
                    out_id: row.id.clone(),
                    content: row.content.clone(),
                    done,
                };
                self.carry_out(row, attempts, ev, outcome, p).await
            }
            // A message to another agent (SPEC §7.5: destination and loop
            // checks, then the target session's inbound.db).
            Some((Target::Agent(ag), _)) if row.kind == "chat" => {
                let (done, outcome) = tokio::sync::oneshot::channel();
                // The decided target, not the claim (they are equal: the decision matches exactly).
                let row_to = OutboundRow {
                    channel_type: Some(address::AGENT.into()),
                    platform_id: Some(ag),
                    thread_id: None,
                    ..row.clone()
                };
                let ev = Event::AgentMessage {
                    session_id: self.session_id.clone(),
                    row: row_to,
                    done,
                };
                self.carry_out(row, attempts, ev, outcome, p).await
            }
            Some((Target::Agent(_), _)) => {
                self.fail(
                    &mut p.inbound,
                    p.ledger,
                    &row.id,
                    attempts,
                    "only chat messages go between agents",
                )?;
                Ok(Step::Done)
            }
            Some((Target::Channel(place), answered_row)) => {
                self.send_to_channel(row, attempts, place, answered_row, key, p)
                    .await
            }
        }
    }

    /// A row the main loop carries out; its answer (Ok: the record for the
    /// ledger) decides the row.
    async fn carry_out(
        &mut self,
        row: &OutboundRow,
        attempts: i64,
        ev: Event,
        outcome: tokio::sync::oneshot::Receiver<Result<String, String>>,
        p: &mut Pass<'_>,
    ) -> Result<Step> {
        if self.events.send(ev).is_err() {
            return Ok(Step::Stop); // the host is stopping
        }
        match tokio::time::timeout(Duration::from_secs(10), outcome).await {
            Ok(Ok(Ok(record))) => {
                p.ledger.put(&LedgerRow {
                    message_out_id: row.id.clone(),
                    platform_message_id: Some(record),
                    status: status::DELIVERED.into(),
                    attempts: attempts + 1,
                    last_error: None,
                })?;
            }
            Ok(Ok(Err(reason))) => {
                self.fail(&mut p.inbound, p.ledger, &row.id, attempts + 1, &reason)?
            }
            _ => {
                // No answer in time: retried (both handlers are idempotent per row).
                self.poke_later(RETRY_DELAYS[0]);
                return Ok(Step::Break);
            }
        }
        Ok(Step::Done)
    }
}
