//! The end of a pass: the runner's terminal acks copied into
//! `messages_in.status` (SPEC §6.2 step 1), a recurring task's next
//! occurrence scheduled in the same commit, senders told of failures, and
//! finished messages announced to their channels as settled.

use std::collections::HashMap;
use std::sync::atomic::Ordering;

use anyhow::{Context, Result};
use pinch_channels::Address;
use pinch_proto::content::{ChatIn, InContent};
use pinch_proto::open::write_tx;
use pinch_proto::rows::{self, status, AckRow};

use super::inbound::Inbound;
use super::Task;

impl Task {
    /// Copies terminal acks into `messages_in.status` and queues the
    /// messages they finish for [`Task::announce_settled`].
    pub(super) fn sync_acks(&mut self, inbound: &mut Inbound, acks: &[AckRow]) -> Result<()> {
        let terminal: Vec<&AckRow> = acks
            .iter()
            .filter(|a| a.status == status::COMPLETED || a.status == status::FAILED)
            .collect();
        if terminal.is_empty() {
            return Ok(());
        }
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
        // After the commit nothing may fail the pass: these rows are no
        // longer pending, so nothing would come back for them.
        if !failed.is_empty() {
            if let Err(e) = self.tell_failures(inbound, &failed) {
                tracing::warn!("could not tell senders about failed messages: {e:#}");
            }
        }
        let finished = if changed.is_empty() {
            Ok(Vec::new())
        } else {
            rows::inbound_by_ids(inbound, &changed)
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
        Ok(())
    }

    /// Tells each channel which of its messages are finished (called only
    /// when nothing before them waits to be delivered).
    pub(super) fn announce_settled(&mut self) {
        if self.unsettled.is_empty() {
            return;
        }
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
}
