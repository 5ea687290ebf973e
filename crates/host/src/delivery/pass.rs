//! One delivery pass: `messages_out` and `processing_ack` read in one
//! transaction, each row checked against the ledger and the host's
//! records, carried out by kind (to the main loop, or rendered and sent to
//! its channel, with its question's record first and its files checked),
//! retried after its backoff or failed, then terminal acks copied into
//! `messages_in.status` and finished messages announced as settled.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Context, Result};
use pinch_channels::{Address, Button, DeliverError, OutFile, Outgoing};
use pinch_policy::address::{self, Claim, Decision, Target};
use pinch_proto::content::{ChatIn, InContent};
use pinch_proto::open::{open_agent_reader, write_tx};
use pinch_proto::rows::{self, status, LedgerRow, OutboundRow};
use pinch_proto::time;

use crate::ledger::Ledger;
use crate::session::BUSY;

use super::grants::Grants;
use super::inbound::Inbound;
use super::render::{render, Op};
use super::{Task, MAX_ATTEMPTS, RETRY_DELAYS};

impl Task {
    pub(super) async fn pass_with(&mut self, ledger: &mut Ledger) -> Result<()> {
        let out_path = self.dir.outbound_db();
        if !out_path.exists() {
            return Ok(());
        }
        let (out_rows, acks) = {
            let mut c = open_agent_reader(&out_path, BUSY)?;
            let tx = c.transaction().context("begin outbound read")?;
            let out_rows = rows::outbound_after(&tx, self.watermark)?;
            let acks = rows::acks(&tx)?;
            (out_rows, acks)
        };
        if let Some(last) = out_rows.last() {
            self.shared.out_max.fetch_max(last.seq, Ordering::Relaxed);
        }
        // Never created here: a vanished inbound.db is the main loop's to
        // notice and report (session_check), not to be silently remade.
        let mut inbound = Inbound::open(self.dir.inbound_db())?;
        // The host's own records of where this session may send (issue 14):
        // its conversation and its agent group's destinations, both
        // projected by the host into inbound.db, which the sandbox sees
        // read-only. Nothing in a row's address columns is trusted.
        let grants = Grants::read(&inbound, &self.agent_group)?;
        let mut blocked = false;
        // While every row so far is terminal, the watermark follows; a row
        // that waits holds back only later rows to the same conversation
        // (`held`), so one unreachable user or a callback that is down never
        // stops the session's other replies.
        let mut contiguous = true;
        let mut held: std::collections::HashSet<(String, String)> = Default::default();
        let now = jiff::Timestamp::now();
        for row in &out_rows {
            macro_rules! finished {
                () => {
                    if contiguous {
                        self.watermark = row.seq;
                    }
                    continue
                };
            }
            macro_rules! wait {
                ($key:expr) => {{
                    held.insert($key);
                    contiguous = false;
                    blocked = true;
                    continue;
                }};
            }
            let prev = ledger.get(&row.id)?;
            if prev
                .as_ref()
                .is_some_and(|l| l.status == status::DELIVERED || l.status == status::FAILED)
            {
                finished!();
            }
            let attempts = prev.as_ref().map_or(0, |l| l.attempts);
            if let Some((pid, n)) = self.unrecorded.get(&row.id).cloned() {
                put(
                    ledger,
                    &LedgerRow {
                        message_out_id: row.id.clone(),
                        platform_message_id: Some(pid),
                        status: status::DELIVERED.into(),
                        attempts: n,
                        last_error: None,
                    },
                )?;
                self.unrecorded.remove(&row.id);
                finished!();
            }
            // An action for the host (admin request, task, …): the session
            // is the host's record, the row's address plays no part.
            let target = if row.kind == "system" {
                None
            } else {
                let claim = Claim {
                    channel_type: row.channel_type.as_deref(),
                    platform_id: row.platform_id.as_deref(),
                    thread_id: row.thread_id.as_deref(),
                };
                let (decision, answered_row) =
                    grants.decide(&inbound, &claim, row.in_reply_to.as_deref())?;
                match decision {
                    Decision::Allowed(t) => Some((t, answered_row)),
                    Decision::Refused(why) => {
                        self.refuse(&mut inbound, ledger, row, attempts, &why)?;
                        finished!();
                    }
                }
            };
            // Rows to one place keep their order; places do not wait for each other.
            let key = match &target {
                None => (String::new(), "host".to_owned()),
                Some((Target::Agent(ag), _)) => (address::AGENT.to_owned(), ag.clone()),
                Some((Target::Channel(p), _)) => (p.channel_type.clone(), p.platform_id.clone()),
            };
            if held.contains(&key) {
                // An earlier row to this place waits: keep the order.
                contiguous = false;
                blocked = true;
                continue;
            }
            if let Some(at) = self.retry_at.get(&row.id) {
                if *at > std::time::Instant::now() {
                    // Its backoff runs (a poke is already due then).
                    wait!(key);
                }
                self.retry_at.remove(&row.id);
            }
            if let Some(after) = row.deliver_after.as_deref() {
                if !time::is_due(Some(after), now) {
                    if let Ok(t) = time::parse(after) {
                        let ms = (t.as_millisecond() - now.as_millisecond()).max(0) as u64;
                        self.poke_later(Duration::from_millis(ms));
                    }
                    wait!(key);
                }
            }
            // Rows the host itself carries out, in the main loop: a message
            // to another agent (SPEC §7.5: destination and loop checks, then
            // the target session's inbound.db) or an action for the host
            // (admin request, task, …). Ok = the record for the ledger.
            let to_host = match &target {
                None => {
                    let (done, outcome) = tokio::sync::oneshot::channel();
                    Some((
                        crate::event::Event::AgentAction {
                            session_id: self.session_id.clone(),
                            out_id: row.id.clone(),
                            content: row.content.clone(),
                            done,
                        },
                        outcome,
                    ))
                }
                Some((Target::Agent(ag), _)) if row.kind == "chat" => {
                    let (done, outcome) = tokio::sync::oneshot::channel();
                    // The decided target, not the claim (they are equal: the decision matches exactly).
                    let row = OutboundRow {
                        channel_type: Some(address::AGENT.into()),
                        platform_id: Some(ag.clone()),
                        thread_id: None,
                        ..row.clone()
                    };
                    Some((
                        crate::event::Event::AgentMessage {
                            session_id: self.session_id.clone(),
                            row,
                            done,
                        },
                        outcome,
                    ))
                }
                Some((Target::Agent(_), _)) => {
                    self.fail(
                        &mut inbound,
                        ledger,
                        &row.id,
                        attempts,
                        "only chat messages go between agents",
                    )?;
                    finished!();
                }
                Some((Target::Channel(_), _)) => None,
            };
            if let Some((ev, outcome)) = to_host {
                if self.events.send(ev).is_err() {
                    return Ok(()); // the host is stopping
                }
                match tokio::time::timeout(Duration::from_secs(10), outcome).await {
                    Ok(Ok(Ok(record))) => {
                        put(
                            ledger,
                            &LedgerRow {
                                message_out_id: row.id.clone(),
                                platform_message_id: Some(record),
                                status: status::DELIVERED.into(),
                                attempts: attempts + 1,
                                last_error: None,
                            },
                        )?;
                    }
                    Ok(Ok(Err(reason))) => {
                        self.fail(&mut inbound, ledger, &row.id, attempts + 1, &reason)?
                    }
                    _ => {
                        // No answer in time: retried (both handlers are idempotent per row).
                        self.poke_later(RETRY_DELAYS[0]);
                        blocked = true;
                        break;
                    }
                }
                finished!();
            }
            let Some((Target::Channel(place), answered_row)) = target else {
                unreachable!("agents and host actions are handled above")
            };
            let addr = Address {
                channel_type: place.channel_type.clone(),
                platform_id: place.platform_id.clone(),
                thread_id: place.thread_id.clone(),
            };
            let caps = self
                .channels
                .get(&addr.channel_type)
                .map(|c| c.capabilities())
                .unwrap_or_default();
            let rendered = match render(row.kind.as_str(), &row.content, &addr, caps) {
                Ok(t) => t,
                Err(reason) => {
                    self.fail(&mut inbound, ledger, &row.id, attempts, &reason)?;
                    finished!();
                }
            };
            let Some(channel) = self.channels.get(&addr.channel_type).cloned() else {
                let reason = format!(
                    "no {:?} channel is running in this host; the message cannot be delivered",
                    addr.channel_type
                );
                self.fail(&mut inbound, ledger, &row.id, attempts, &reason)?;
                finished!();
            };
            // No `sending` commit before a first attempt: a row without a
            // terminal entry is (re)sent on every pass and at boot anyway, so
            // it would add an fsync to every reply and change nothing
            // (decision 0005). Retries record `sending` with their count.
            let mut buttons = Vec::new();
            if let Some(q) = &rendered.question {
                let hid = pinch_proto::runner_config::random_hex(4);
                buttons = q
                    .labels
                    .iter()
                    .enumerate()
                    .map(|(i, l)| Button {
                        label: l.clone(),
                        callback: format!("q:{hid}:{i}"),
                    })
                    .collect();
                let pending = crate::db::central::PendingQuestion {
                    question_id: hid,
                    session_id: self.session_id.clone(),
                    agent_question_id: q.agent_question_id.clone(),
                    message_out_id: row.id.clone(),
                    channel_type: Some(addr.channel_type.clone()),
                    platform_id: Some(addr.platform_id.clone()),
                    thread_id: addr.thread_id.clone(),
                    title: q.title.clone(),
                    options_json: q.options_json.clone(),
                    expires_at: time::format(
                        jiff::Timestamp::now()
                            + jiff::SignedDuration::from_secs(q.timeout_s as i64),
                    ),
                };
                let (done, recorded) = tokio::sync::oneshot::channel();
                if self
                    .events
                    .send(crate::event::Event::QuestionAsked(pending, done))
                    .is_err()
                {
                    return Ok(()); // the host is stopping
                }
                // Buttons go out only once their record exists, so no click
                // can beat it; a failed record is retried on a later pass.
                // (Bounded: at shutdown the main loop no longer reads events.)
                let ok = matches!(
                    tokio::time::timeout(Duration::from_secs(5), recorded).await,
                    Ok(Ok(true))
                );
                if !ok {
                    self.poke_later(RETRY_DELAYS[0]);
                    return Ok(());
                }
            }
            let (mut text, buttons) = if buttons.is_empty() || caps.buttons {
                (rendered.text, buttons)
            } else {
                // No buttons here: numbered choices, answered by number (the router's interceptor).
                (
                    pinch_channels::numbered_fallback(&rendered.text, &buttons),
                    Vec::new(),
                )
            };
            // Outbox files are untrusted (the runner wrote them): each is
            // opened beneath the outbox's descriptor (never by path) and
            // copied, at most its checked size, into a sealed anonymous
            // file held open for the call, so the channel reads exactly
            // what was checked; one that fails is named in the text instead
            // and told to the agent.
            let mut held_files = Vec::new();
            let mut files = Vec::new();
            let mut refused = Vec::new();
            for name in &rendered.files {
                let checked = crate::outbox::open_checked(&self.dir.outbox(), &row.id, name)
                    .and_then(|(mut f, size)| {
                        crate::outbox::snapshot(
                            &mut f,
                            size,
                            &self.dir.outbox().join(&row.id).join(name),
                        )
                        .map(|s| (s, size))
                    });
                match checked {
                    Ok((f, size)) => {
                        files.push(OutFile {
                            name: name.clone(),
                            path: format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&f))
                                .into(),
                            size,
                        });
                        held_files.push(f);
                    }
                    Err(e) => {
                        tracing::warn!(id = %row.id, file = %name, "outbox file refused: {e}");
                        text.push_str(&format!("\n[file {name} not sent: {e}]"));
                        refused.push(serde_json::json!({"file": name, "error": e.to_string()}));
                    }
                }
            }
            // A message an edit or a reaction points at must be one of this
            // conversation's (the platform id comes from the host's records).
            let result = match rendered.op {
                Op::Send => None,
                Op::Edit { seq } => {
                    match self.platform_message_id_of(&inbound, ledger, &grants, seq, &place) {
                        Ok(Some(pid)) => Some(channel.edit(&addr, &pid, &text).await.map(|()| pid)),
                        // Not (yet) delivered, or not ours: a correction message.
                        _ => {
                            text = format!("(correction to message {seq}) {text}");
                            None
                        }
                    }
                }
                Op::React { seq, ref emoji } => match self
                    .platform_message_id_of(&inbound, ledger, &grants, seq, &place)
                {
                    Ok(Some(pid)) => Some(channel.react(&addr, &pid, emoji).await.map(|()| pid)),
                    Ok(None) => Some(Err(DeliverError::Permanent(format!(
                        "message {seq} has no platform message in this conversation to react to"
                    )))),
                    Err(e) => Some(Err(DeliverError::Retryable(format!(
                        "looking up message {seq}: {e:#}"
                    )))),
                },
            };
            let result = match result {
                Some(r) => r,
                None => {
                    // The platform reply reference comes from the answered
                    // message the host stored, and only within its conversation.
                    let in_reply_to = answered_row
                        .as_ref()
                        .filter(|r| {
                            r.channel_type.as_deref() == Some(place.channel_type.as_str())
                                && r.platform_id.as_deref() == Some(place.platform_id.as_str())
                        })
                        .map(|r| {
                            r.id.rsplit_once(':')
                                .map_or(r.id.as_str(), |(p, _)| p)
                                .to_owned()
                        });
                    let msg = Outgoing {
                        id: row.id.clone(),
                        text,
                        buttons,
                        in_reply_to,
                        files,
                    };
                    channel.deliver(&addr, &msg).await
                }
            };
            drop(held_files);
            match result {
                Ok(pid) => {
                    self.unrecorded
                        .insert(row.id.clone(), (pid.clone(), attempts + 1));
                    put(
                        ledger,
                        &LedgerRow {
                            message_out_id: row.id.clone(),
                            platform_message_id: Some(pid),
                            status: status::DELIVERED.into(),
                            attempts: attempts + 1,
                            last_error: None,
                        },
                    )?;
                    self.unrecorded.remove(&row.id);
                    if !refused.is_empty() {
                        self.tell_files_refused(&mut inbound, &row.id, refused);
                    }
                    if let Ok(t) = time::parse(&row.timestamp) {
                        let secs = (jiff::Timestamp::now().as_millisecond() - t.as_millisecond())
                            as f64
                            / 1000.0;
                        crate::metrics::METRICS.delivered(secs);
                    }
                    // If what this answers was already finished (its ack synced
                    // by an earlier pass, or a previous life of the host),
                    // announce it now: the in-memory notice may be gone.
                    if let Some(r) = answered_row.as_ref() {
                        self.settle_if_finished(inbound.current()?, &r.id)?;
                    }
                    finished!();
                }
                Err(DeliverError::Unavailable(why)) => {
                    tracing::debug!(id = %row.id, "channel unavailable, delivery resumes when it is back: {why}");
                    wait!(key);
                }
                Err(DeliverError::Retryable(why)) => {
                    let n = attempts + 1;
                    if n >= MAX_ATTEMPTS {
                        self.fail(&mut inbound, ledger, &row.id, n, &why)?;
                        finished!();
                    }
                    tracing::warn!(id = %row.id, attempt = n, "delivery failed, will retry: {why}");
                    put(
                        ledger,
                        &LedgerRow {
                            message_out_id: row.id.clone(),
                            platform_message_id: None,
                            status: status::SENDING.into(),
                            attempts: n,
                            last_error: Some(why),
                        },
                    )?;
                    let delay = RETRY_DELAYS[(n as usize - 1).min(RETRY_DELAYS.len() - 1)];
                    self.retry_at
                        .insert(row.id.clone(), std::time::Instant::now() + delay);
                    self.poke_later(delay);
                    wait!(key);
                }
                Err(DeliverError::Permanent(why)) => {
                    self.fail(&mut inbound, ledger, &row.id, attempts + 1, &why)?;
                    finished!();
                }
            }
        }
        // Ack sync: terminal acks → messages_in.status (SPEC §6.2 step 1).
        let terminal: Vec<&rows::AckRow> = acks
            .iter()
            .filter(|a| a.status == status::COMPLETED || a.status == status::FAILED)
            .collect();
        if !terminal.is_empty() {
            let tx = write_tx(inbound.current()?)?;
            let mut changed = Vec::new();
            let mut failed = Vec::new();
            let mut next_due: Vec<jiff::Timestamp> = Vec::new();
            for a in &terminal {
                let pending = pinch_proto::inbound::is_pending(&tx, &a.message_id).unwrap_or(false);
                if pending && rows::set_inbound_status(&tx, &a.message_id, &a.status)? {
                    // A recurring task's next occurrence commits with this
                    // status change: each slot exactly once (SPEC §7.4).
                    if let Some(due) = crate::tasks::schedule_next(
                        &tx,
                        &a.message_id,
                        &self.timezone,
                        self.shared.out_max.load(Ordering::Relaxed),
                    )? {
                        next_due.push(due);
                    }
                    if a.status == status::FAILED {
                        tracing::warn!(id = %a.message_id, reason = a.reason.as_deref().unwrap_or(""), "inbound message failed");
                        failed.push((
                            a.message_id.clone(),
                            a.reason.clone().unwrap_or_else(|| "no reason given".into()),
                        ));
                    }
                    changed.push(a.message_id.clone());
                }
            }
            tx.commit().context("committing ack sync")?;
            for due in next_due {
                let _ = self.events.send(crate::event::Event::WakeAt(
                    self.session_id.clone(),
                    due.as_millisecond(),
                ));
            }
            // After the commit nothing may abort the pass: these rows are no
            // longer pending, so nothing would come back for them.
            if !failed.is_empty() {
                if let Err(e) = self.tell_failures(&inbound, &failed) {
                    tracing::warn!("could not tell senders about failed messages: {e:#}");
                }
            }
            let finished = if changed.is_empty() {
                Ok(Vec::new())
            } else {
                rows::inbound_by_ids(&inbound, &changed)
            };
            match finished {
                Err(e) => {
                    tracing::warn!("could not read finished messages to announce them: {e:#}")
                }
                Ok(finished) => {
                    for r in finished {
                        let pmid = match InContent::parse(&r.kind, &r.content) {
                            Ok(InContent::Chat(ChatIn {
                                platform_message_id: Some(p),
                                ..
                            })) => p,
                            _ => continue,
                        };
                        let addr = Address {
                            channel_type: r.channel_type.unwrap_or_default(),
                            platform_id: r.platform_id.unwrap_or_default(),
                            thread_id: r.thread_id,
                        };
                        let failed = r.status == status::FAILED;
                        self.unsettled.push((addr, pmid, failed));
                    }
                }
            }
        }
        if !blocked && !self.unsettled.is_empty() {
            type Settled = (Vec<String>, Vec<String>);
            let mut by_addr: HashMap<Address, Settled> = HashMap::new();
            for (a, id, failed) in self.unsettled.drain(..) {
                let e = by_addr.entry(a).or_default();
                if failed {
                    e.1.push(id.clone());
                }
                e.0.push(id);
            }
            for (a, (ids, failed)) in by_addr {
                if let Some(ch) = self.channels.get(&a.channel_type) {
                    ch.settled_with(&a, &ids, &failed);
                }
            }
        }
        Ok(())
    }
}

fn put(ledger: &mut Ledger, e: &LedgerRow) -> Result<()> {
    ledger.put(e)
}
