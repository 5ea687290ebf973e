//! One row sent to its channel: rendered for the channel's capabilities,
//! its question's record made before its buttons go out, its outbox files
//! checked and held, sent (or an edit, or a reaction), and the result
//! recorded in the ledger or retried after its backoff.

use std::os::fd::AsRawFd;

use anyhow::Result;
use pinch_channels::{Address, Button, DeliverError, OutFile, Outgoing};
use pinch_policy::address::Place;
use pinch_proto::rows::{status, InboundRow, LedgerRow, OutboundRow};
use pinch_proto::time;

use super::pass::{Key, Pass, Step};
use super::render::{render, Op, Question};
use super::{Task, MAX_ATTEMPTS, RETRY_DELAYS};

/// Outbox files checked and held open for one send.
struct Files {
    /// The sealed copies, open until the call returns.
    held: Vec<std::fs::File>,
    files: Vec<OutFile>,
    /// Those refused, to tell the agent.
    refused: Vec<serde_json::Value>,
}

/// What a send's record needs besides the channel's answer.
struct Sent {
    answered_row: Option<InboundRow>,
    /// Outbox files refused, to tell the agent once the row is delivered.
    refused: Vec<serde_json::Value>,
    key: Key,
}

impl Task {
    /// Sends `row` to `place`, its decided address.
    pub(super) async fn send_to_channel(
        &mut self,
        row: &OutboundRow,
        attempts: i64,
        place: Place,
        answered_row: Option<InboundRow>,
        key: Key,
        p: &mut Pass<'_>,
    ) -> Result<Step> {
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
                self.fail(&mut p.inbound, p.ledger, &row.id, attempts, &reason)?;
                return Ok(Step::Done);
            }
        };
        let Some(channel) = self.channels.get(&addr.channel_type).cloned() else {
            let reason = format!(
                "no {:?} channel is running in this host; the message cannot be delivered",
                addr.channel_type
            );
            self.fail(&mut p.inbound, p.ledger, &row.id, attempts, &reason)?;
            return Ok(Step::Done);
        };
        // No `sending` commit before a first attempt: a row without a
        // terminal entry is (re)sent on every pass and at boot anyway, so
        // it would add an fsync to every reply and change nothing
        // (decision 0005). Retries record `sending` with their count.
        let buttons = match &rendered.question {
            None => Vec::new(),
            Some(q) => match self.record_question(q, row, &addr).await {
                Some(b) => b,
                None => return Ok(Step::Stop),
            },
        };
        let (mut text, buttons) = if buttons.is_empty() || caps.buttons {
            (rendered.text, buttons)
        } else {
            // No buttons here: numbered choices, answered by number (the router's interceptor).
            (
                pinch_channels::numbered_fallback(&rendered.text, &buttons),
                Vec::new(),
            )
        };
        let Files {
            held,
            files,
            refused,
        } = self.outbox_files(&row.id, &rendered.files, &mut text);
        // A message an edit or a reaction points at must be one of this
        // conversation's (the platform id comes from the host's records).
        let result = match rendered.op {
            Op::Send => None,
            Op::Edit { seq } => {
                match self.platform_message_id_of(&p.inbound, p.ledger, &p.grants, seq, &place) {
                    Ok(Some(pid)) => Some(
                        pinch_channels::guarded(
                            channel.channel_type(),
                            channel.edit(&addr, &pid, &text),
                        )
                        .await
                        .map(|()| pid),
                    ),
                    // Not (yet) delivered, or not ours: a correction message.
                    _ => {
                        text = format!("(correction to message {seq}) {text}");
                        None
                    }
                }
            }
            Op::React { seq, ref emoji } => {
                match self.platform_message_id_of(&p.inbound, p.ledger, &p.grants, seq, &place) {
                    Ok(Some(pid)) => Some(
                        pinch_channels::guarded(
                            channel.channel_type(),
                            channel.react(&addr, &pid, emoji),
                        )
                        .await
                        .map(|()| pid),
                    ),
                    Ok(None) => Some(Err(DeliverError::Permanent(format!(
                        "message {seq} has no platform message in this conversation to react to"
                    )))),
                    Err(e) => Some(Err(DeliverError::Retryable(format!(
                        "looking up message {seq}: {e:#}"
                    )))),
                }
            }
        };
        let result = match result {
            Some(r) => r,
            None => {
                let msg = Outgoing {
                    id: row.id.clone(),
                    text,
                    buttons,
                    in_reply_to: reply_reference(answered_row.as_ref(), &place),
                    files,
                };
                pinch_channels::guarded(channel.channel_type(), channel.deliver(&addr, &msg)).await
            }
        };
        drop(held);
        let after = Sent {
            answered_row,
            refused,
            key,
        };
        self.record_send(row, attempts, after, result, p)
    }

    /// Tells the main loop about a question and waits for its record, so no
    /// click can beat it; its buttons, or `None` when the host is stopping
    /// or the record failed (retried on a later pass).
    // `&mut`: a `&Task` held across the wait would make the future not
    // `Send` (the task holds the ledger's connection).
    async fn record_question(
        &mut self,
        q: &Question,
        row: &OutboundRow,
        addr: &Address,
    ) -> Option<Vec<Button>> {
        let hid = pinch_proto::runner_config::random_hex(4);
        let buttons = q
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
                jiff::Timestamp::now() + jiff::SignedDuration::from_secs(q.timeout_s as i64),
            ),
        };
        let (done, recorded) = tokio::sync::oneshot::channel();
        if self
            .events
            .send(crate::event::Event::QuestionAsked(pending, done))
            .is_err()
        {
            return None; // the host is stopping
        }
        // Bounded: at shutdown the main loop no longer reads events.
        let ok = matches!(
            tokio::time::timeout(std::time::Duration::from_secs(5), recorded).await,
            Ok(Ok(true))
        );
        if !ok {
            self.poke_later(RETRY_DELAYS[0]);
            return None;
        }
        Some(buttons)
    }

    /// Outbox files are untrusted (the runner wrote them): each is opened
    /// beneath the outbox's descriptor (never by path) and copied, at most
    /// its checked size, into a sealed anonymous file held open for the
    /// call, so the channel reads exactly what was checked; one that fails
    /// is named in `text` instead and told to the agent.
    fn outbox_files(&self, out_id: &str, names: &[String], text: &mut String) -> Files {
        let mut f = Files {
            held: Vec::new(),
            files: Vec::new(),
            refused: Vec::new(),
        };
        for name in names {
            let checked = crate::outbox::open_checked(&self.dir.outbox(), out_id, name).and_then(
                |(mut file, size)| {
                    crate::outbox::snapshot(
                        &mut file,
                        size,
                        &self.dir.outbox().join(out_id).join(name),
                    )
                    .map(|s| (s, size))
                },
            );
            match checked {
                Ok((file, size)) => {
                    f.files.push(OutFile {
                        name: name.clone(),
                        path: format!("/proc/self/fd/{}", file.as_raw_fd()).into(),
                        size,
                    });
                    f.held.push(file);
                }
                Err(e) => {
                    tracing::warn!(id = %out_id, file = %name, "outbox file refused: {e}");
                    text.push_str(&format!("\n[file {name} not sent: {e}]"));
                    f.refused
                        .push(serde_json::json!({"file": name, "error": e.to_string()}));
                }
            }
        }
        f
    }

    /// Records what the channel answered: delivered, waiting for the
    /// channel, retried after its backoff, or failed for good.
    fn record_send(
        &mut self,
        row: &OutboundRow,
        attempts: i64,
        sent: Sent,
        result: Result<String, DeliverError>,
        p: &mut Pass<'_>,
    ) -> Result<Step> {
        let Sent {
            answered_row,
            refused,
            key,
        } = sent;
        match result {
            Ok(pid) => {
                self.unrecorded
                    .insert(row.id.clone(), (pid.clone(), attempts + 1));
                p.ledger.put(&LedgerRow {
                    message_out_id: row.id.clone(),
                    platform_message_id: Some(pid),
                    status: status::DELIVERED.into(),
                    attempts: attempts + 1,
                    last_error: None,
                })?;
                self.unrecorded.remove(&row.id);
                if !refused.is_empty() {
                    self.tell_files_refused(&mut p.inbound, &row.id, refused);
                }
                if let Ok(t) = time::parse(&row.timestamp) {
                    let secs = (jiff::Timestamp::now().as_millisecond() - t.as_millisecond())
                        as f64
                        / 1000.0;
                    crate::metrics::METRICS.delivered(secs);
                }
                // How long the person waited: their message stored → this reply.
                if let Some(t) = answered_row
                    .as_ref()
                    .filter(|r| r.kind == "chat")
                    .and_then(|r| time::parse(&r.timestamp).ok())
                {
                    let secs = (jiff::Timestamp::now().as_millisecond() - t.as_millisecond())
                        as f64
                        / 1000.0;
                    crate::metrics::METRICS.replied(secs);
                }
                // If what this answers was already finished (its ack synced
                // by an earlier pass, or a previous life of the host),
                // announce it now: the in-memory notice may be gone.
                if let Some(r) = &answered_row {
                    self.settle_if_finished(p.inbound.current()?, &r.id)?;
                }
                Ok(Step::Done)
            }
            Err(DeliverError::Unavailable(why)) => {
                tracing::debug!(id = %row.id, "channel unavailable, delivery resumes when it is back: {why}");
                Ok(Step::Wait(key))
            }
            Err(DeliverError::Retryable(why)) => {
                let n = attempts + 1;
                if n >= MAX_ATTEMPTS {
                    self.fail(&mut p.inbound, p.ledger, &row.id, n, &why)?;
                    return Ok(Step::Done);
                }
                tracing::warn!(id = %row.id, attempt = n, "delivery failed, will retry: {why}");
                p.ledger.put(&LedgerRow {
                    message_out_id: row.id.clone(),
                    platform_message_id: None,
                    status: status::SENDING.into(),
                    attempts: n,
                    last_error: Some(why),
                })?;
                let delay = RETRY_DELAYS[(n as usize - 1).min(RETRY_DELAYS.len() - 1)];
                self.retry_at
                    .insert(row.id.clone(), std::time::Instant::now() + delay);
                self.poke_later(delay);
                Ok(Step::Wait(key))
            }
            Err(DeliverError::Permanent(why)) => {
                self.fail(&mut p.inbound, p.ledger, &row.id, attempts + 1, &why)?;
                Ok(Step::Done)
            }
        }
    }
}

/// The platform reply reference: the platform id of the answered message
/// the host stored (its row id is `<platform message id>:<agent group>`),
/// and only within its conversation.
fn reply_reference(answered_row: Option<&InboundRow>, place: &Place) -> Option<String> {
    answered_row
        .filter(|r| {
            r.channel_type.as_deref() == Some(place.channel_type.as_str())
                && r.platform_id.as_deref() == Some(place.platform_id.as_str())
        })
        .map(|r| {
            r.id.rsplit_once(':')
                .map_or(r.id.as_str(), |(p, _)| p)
                .to_owned()
        })
}
