//! A row's or a message's end, and who is told: a row failed for good
//! (the agent's note, then the ledger), refused for its address, sent with
//! some files left out, a failed inbound message told to its sender, and a
//! finished message queued to be announced as settled.

use std::sync::atomic::Ordering;

use anyhow::Result;
use pinch_channels::Address;
use pinch_policy::address;
use pinch_proto::content::{ChatIn, InContent, SystemIn};
use pinch_proto::open::{open_agent_reader, write_tx};
use pinch_proto::rows::{self, status, LedgerRow, NewInbound, OutboundRow};
use pinch_proto::time;

use crate::ledger::Ledger;
use crate::session::BUSY;

use super::inbound::Inbound;
use super::Task;

impl Task {
    /// Tells the sender, once (the status changes once), that a message
    /// failed, unless the agent already answered it (e.g. "could not answer").
    pub(super) fn tell_failures(
        &self,
        inbound: &pinch_proto::rusqlite::Connection,
        failed: &[(String, String)],
    ) -> Result<()> {
        let out = open_agent_reader(&self.dir.outbound_db(), BUSY)?;
        for (id, reason) in failed {
            let answered = pinch_proto::outbound::answered(&out, id).unwrap_or(false);
            if answered {
                continue;
            }
            for r in rows::inbound_by_ids(inbound, std::slice::from_ref(id))? {
                let (Some(ct), Some(pid)) = (r.channel_type, r.platform_id) else {
                    continue;
                };
                // Stored and sent by the main loop, so it waits for a
                // sender who is not connected now (issue 15).
                let to = Address {
                    channel_type: ct,
                    platform_id: pid,
                    thread_id: r.thread_id,
                };
                let text = format!("Sorry, I could not process a message: {reason}.");
                let _ = self.events.send(crate::event::Event::Notice { to, text });
            }
        }
        Ok(())
    }

    pub(super) fn settle_if_finished(
        &mut self,
        inbound: &pinch_proto::rusqlite::Connection,
        id: &str,
    ) -> Result<()> {
        for r in rows::inbound_by_ids(inbound, &[id.to_owned()])? {
            if r.status == status::PENDING {
                continue;
            }
            if let Ok(InContent::Chat(ChatIn {
                platform_message_id: Some(p),
                ..
            })) = InContent::parse(&r.kind, &r.content)
            {
                let addr = Address {
                    channel_type: r.channel_type.unwrap_or_default(),
                    platform_id: r.platform_id.unwrap_or_default(),
                    thread_id: r.thread_id,
                };
                self.unsettled.push((addr, p, r.status == status::FAILED));
            }
        }
        Ok(())
    }

    /// Refuses a row whose address the host's records do not grant: logged
    /// with the claim, counted in the drop audit, failed for good and told
    /// to the agent (issue 14). Nothing is sent anywhere.
    pub(super) fn refuse(
        &self,
        inbound: &mut Inbound,
        ledger: &mut Ledger,
        row: &OutboundRow,
        attempts: i64,
        why: &str,
    ) -> Result<()> {
        let q = |s: &Option<String>| s.as_deref().map(address::quote).unwrap_or_default();
        let claimed = format!(
            "{}/{}{}",
            q(&row.channel_type),
            q(&row.platform_id),
            row.thread_id
                .as_ref()
                .map(|t| format!(" thread {}", address::quote(t)))
                .unwrap_or_default()
        );
        tracing::warn!(session_id = %self.session_id, id = %row.id, claimed = %claimed, "outbound row refused, its address is not granted to this session: {why}");
        let _ = self.events.send(crate::event::Event::AddressRefused {
            session_id: self.session_id.clone(),
            agent_group: self.agent_group.clone(),
            claimed,
        });
        self.fail(
            inbound,
            ledger,
            &row.id,
            attempts,
            &format!("not delivered: {why}"),
        )
    }

    /// The message went out but some of its files did not (the reader saw
    /// the note in the text): the agent is told which and why, once.
    pub(super) fn tell_files_refused(
        &self,
        inbound: &mut Inbound,
        out_id: &str,
        refused: Vec<serde_json::Value>,
    ) {
        let out_max = self.shared.out_max.load(Ordering::Relaxed);
        let note = InContent::System(SystemIn::ActionResult {
            action: "deliver".into(),
            status: "files_not_sent".into(),
            result: serde_json::json!({"message_out_id": out_id, "files_not_sent": refused}),
        });
        let row = NewInbound {
            id: format!("files-not-sent:{out_id}"),
            kind: "system".into(),
            timestamp: time::now(),
            trigger: false,
            content: note.to_json(),
            ..Default::default()
        };
        let written = inbound
            .current()
            .and_then(|c| Ok(write_tx(c)?))
            .and_then(|tx| {
                rows::insert_inbound(&tx, &row, out_max)?;
                tx.commit()?;
                Ok(())
            });
        if let Err(e) = written {
            tracing::warn!(id = %out_id, "could not tell the agent which files were not sent: {e:#}");
        }
    }

    /// Marks a row failed and tells the agent, once (SPEC §4 step 9).
    pub(super) fn fail(
        &self,
        inbound: &mut Inbound,
        ledger: &mut Ledger,
        out_id: &str,
        attempts: i64,
        reason: &str,
    ) -> Result<()> {
        tracing::warn!(id = %out_id, "delivery failed for good: {reason}");
        let out_max = self.shared.out_max.load(Ordering::Relaxed);
        crate::metrics::METRICS
            .delivery_failures
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // The agent's note first (its id makes a repeat a no-op), then the
        // host's ledger: a crash in between fails the row again, never
        // leaves it failed without the note. The note goes into the file
        // at the path now: the main loop may have replaced it (a
        // recovery) while this pass awaited a channel.
        let tx = write_tx(inbound.current()?)?;
        let note = InContent::System(SystemIn::ActionResult {
            action: "deliver".into(),
            status: "failed".into(),
            result: serde_json::json!({"message_out_id": out_id, "error": reason}),
        });
        rows::insert_inbound(
            &tx,
            &NewInbound {
                id: format!("deliver-failed:{out_id}"),
                kind: "system".into(),
                timestamp: time::now(),
                trigger: false,
                content: note.to_json(),
                ..Default::default()
            },
            out_max,
        )?;
        tx.commit()?;
        ledger.put(&LedgerRow {
            message_out_id: out_id.to_owned(),
            platform_message_id: None,
            status: status::FAILED.into(),
            attempts,
            last_error: Some(reason.to_owned()),
        })
    }
}
