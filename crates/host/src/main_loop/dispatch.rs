//! Each event to its handler: the one `match` over [`Event`].

use pinch_channels::{AckOutcome, ChannelEvent};

use super::{Event, Host, PendingAck};
use crate::{Control, SessionInfo};

impl Host {
    pub(super) fn handle(&mut self, ev: Event) {
        match ev {
            Event::Channel(ChannelEvent::Message(ev, ack)) => {
                if self.shutting_down {
                    ack.complete(AckOutcome::Failed(
                        "the host is shutting down; send again in a moment".into(),
                    ));
                    return;
                }
                let outcome = match self.route(&ev) {
                    Ok((stored, note, woken)) => {
                        crate::metrics::METRICS
                            .messages_in
                            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        self.pending_acks.push(PendingAck {
                            ack: Some(ack),
                            stored,
                            note,
                            woken,
                        });
                        return;
                    }
                    Err(e) => {
                        tracing::error!(channel = %ev.channel_type, "could not store an inbound message: {e:#}");
                        AckOutcome::Failed(format!("could not store the message: {e:#}"))
                    }
                };
                ack.complete(outcome);
            }
            Event::Channel(ChannelEvent::Click(c)) => self.on_click(c),
            Event::SecretUse(q) => self.on_secret_use(q),
            Event::Channel(ChannelEvent::Stop { to, sender }) => self.on_stop(to, sender),
            Event::Channel(ChannelEvent::Conversations {
                channel_type,
                reply,
            }) => {
                let list = self
                    .central
                    .conversations_of(&channel_type)
                    .unwrap_or_else(|e| {
                        tracing::warn!("could not list the conversations of {channel_type}: {e:#}");
                        Vec::new()
                    });
                let _ = reply.send(list);
            }
            Event::Channel(ChannelEvent::Known {
                channel_type,
                user,
                reply,
            }) => {
                let known = self
                    .central
                    .is_known(&format!("{channel_type}:{user}"))
                    .unwrap_or_else(|e| {
                        tracing::warn!(
                            "could not look up whether {channel_type}:{user} is known: {e:#}"
                        );
                        false
                    });
                let _ = reply.send(known);
            }
            Event::Channel(ChannelEvent::History { to, limit, reply }) => {
                let mg = self
                    .central
                    .messaging_group(&to.channel_type, &to.platform_id)
                    .ok()
                    .flatten();
                let dirs = match &mg {
                    Some(mg) => self
                        .central
                        .session_dirs_of(&mg.id, &self.data)
                        .unwrap_or_else(|e| {
                            tracing::warn!(
                                "could not list a conversation's sessions for its history: {e:#}"
                            );
                            Vec::new()
                        }),
                    None => Vec::new(),
                };
                // Messages waiting for an approval are part of it, as such.
                let held = mg
                    .map(|mg| self.central.held_in(&mg.id).unwrap_or_default())
                    .unwrap_or_default();
                // Questions still waiting keep their buttons in the history.
                let waiting = self
                    .central
                    .waiting_questions(&to.channel_type, &to.platform_id, &pinch_proto::time::now())
                    .unwrap_or_else(|e| {
                        tracing::warn!("could not read the waiting questions for a history: {e:#}");
                        Default::default()
                    });
                // The reads run off the main loop.
                tokio::task::spawn_blocking(move || {
                    let _ = reply.send(crate::history::read(&dirs, &to, limit, &waiting, &held));
                });
            }
            Event::ApprovalAddressed {
                approval_id,
                approver,
                channel_type,
                platform_id,
                opened,
                done,
            } => {
                let _ = done.send(self.record_card_address(
                    &approval_id,
                    &approver,
                    &channel_type,
                    &platform_id,
                    opened,
                ));
            }
            Event::AgentAction {
                session_id,
                out_id,
                content,
                done,
            } => {
                let _ = done.send(
                    self.agent_action(&session_id, &out_id, &content)
                        .map(|()| "host".to_owned()),
                );
            }
            Event::AgentMessage {
                session_id,
                row,
                done,
            } => {
                let _ = done.send(self.agent_message(&session_id, &row));
            }
            Event::AddressRefused {
                session_id,
                agent_group,
                claimed,
            } => {
                // One audit row per session (the claim is the agent's text:
                // kept as the latest example, never as a key, so forged rows
                // cannot grow the central DB).
                if let Err(e) = self.central.audit_drop(
                    "outbound",
                    &session_id,
                    Some(&format!("agent:{agent_group}")),
                    Some(&claimed),
                    "address_refused",
                    None,
                    Some(&agent_group),
                ) {
                    tracing::warn!(session_id = %session_id, "could not record a refused address in the audit: {e:#}");
                }
            }
            Event::ApprovalCardSent {
                approval_id,
                channel_type,
            } => {
                if let Err(e) = self.central.approval_card_sent(&approval_id) {
                    // Harmless: the card may be sent once more.
                    tracing::warn!(approval = %approval_id, "could not record that the approval card was sent: {e:#}");
                }
                self.card_back(&approval_id, Some(&channel_type));
            }
            Event::ApprovalCardWaits {
                approval_id,
                approver,
                channel_type,
                platform_id,
                try_again,
            } => self.card_waits(
                &approval_id,
                &approver,
                &channel_type,
                &platform_id,
                try_again,
            ),
            Event::ApprovalUndeliverable { approval_id, why } => {
                self.card_back(&approval_id, None);
                tracing::error!(approval = %approval_id, "no approver could be reached ({why}); decide it with `pinch admin approvals approve {approval_id}` or `… reject {approval_id}`");
            }
            Event::QuestionAsked(q, done) => {
                let ok = match self.central.insert_pending_question(&q) {
                    Ok(()) => true,
                    Err(e) => {
                        tracing::error!(session_id = %q.session_id, "could not record a pending question (its delivery is retried): {e:#}");
                        false
                    }
                };
                let _ = done.send(ok);
            }
            Event::NoticeSent { notice, result } => self.notice_sent(notice, result),
            Event::Notice { to, text } | Event::Channel(ChannelEvent::Notice { to, text }) => {
                self.durable_notice(to, text)
            }
            Event::Channel(ChannelEvent::Available { channel_type }) => {
                // Stored notices first: they are older than any reply.
                self.flush_notices(Some(&channel_type));
                self.send_waiting_cards(&channel_type);
                for s in self.sessions.values() {
                    s.shared.notify.notify_one();
                }
            }
            Event::RunnerExited {
                session_id,
                runner_id,
                code,
                signal,
            } => self.on_exit(&session_id, &runner_id, code, signal),
            Event::WakeAt(id, due_ms) => self.wake_at(&id, due_ms),
            Event::SessionDbFault(id) => self.check_inbound_deep(&id),
            Event::LedgerRebuilt(id, text) => self.tell_ledger_rebuilt(&id, text),
            Event::OutboundChecked { session_id, result } => {
                self.outbound_checked(&session_id, result)
            }
            Event::Wake(id) => {
                if let Some(s) = self.sessions.get_mut(&id) {
                    s.wake_scheduled = false;
                }
                self.try_wake(&id);
            }
            Event::ToolsInstalled { approval, result } => self.tools_installed(&approval, result),
            Event::DiskChecked {
                session_id,
                runner_id,
                usage,
            } => self.disk_checked(&session_id, runner_id, usage),
            Event::StuckCheck {
                session_id,
                runner_id,
            } => self.stuck_check(&session_id, &runner_id),
            Event::StopDeadline {
                session_id,
                runner_id,
            } => {
                if let Some(l) = self
                    .sessions
                    .get(&session_id)
                    .and_then(|s| s.runner.as_ref())
                {
                    if l.runner_id == runner_id {
                        tracing::warn!(session_id = %session_id, runner_id = %runner_id, "runner did not stop within the grace, killing it");
                        l.child.kill();
                    }
                }
            }
            Event::Control(Control::Sessions(tx)) => {
                let list = self
                    .sessions
                    .values()
                    .map(|s| SessionInfo {
                        id: s.row.id.clone(),
                        agent_group_id: s.row.agent_group_id.clone(),
                        dir: s.dir.root().to_owned(),
                        runner_id: s.runner.as_ref().map(|l| l.runner_id.clone()),
                        runner_pid: s.runner.as_ref().map(|l| l.pid),
                    })
                    .collect();
                let _ = tx.send(list);
            }
            Event::Control(Control::StopRunner(id, tx)) => {
                let _ = tx.send(self.request_stop(&id));
            }
            Event::Admin(req, reply) => {
                let _ = reply.send(self.admin(req));
            }
            Event::Shutdown => {}
        }
    }
}
