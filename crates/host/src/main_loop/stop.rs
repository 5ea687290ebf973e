//! Stop (decision 0048): a user cancels the agent's turn in a conversation
//! (web chat's Stop button, Ctrl+C in `pinch chat`). The messages of that
//! conversation the live runner holds are cancelled in `inbound.db` (so no
//! runner takes them again), the runner is killed at once (a model call
//! cannot be interrupted any other way; being asked, the kill counts
//! against no crash budget), the live view ends, and the conversation is
//! told. Whoever may write in the conversation may stop its turn: the
//! channel authenticated them (web chat: the owner's sign-in; `pinch chat`:
//! the owner's socket).

use pinch_channels::Address;

use super::Host;
use crate::session;

/// The notice after a stop.
pub(super) const STOPPED: &str =
    "Stopped. The agent's turn was cancelled; send a new message when you are ready.";
/// The notice when nothing was in flight.
pub(super) const NOTHING: &str =
    "Nothing to stop: the agent is not working on a message of this conversation.";

impl Host {
    pub(super) fn on_stop(&mut self, to: Address, sender: String) {
        let mut stopped_any = false;
        // Only sessions that can hold this conversation's messages: its own,
        // and agent-shared ones (no conversation of their own).
        let mg = self
            .central
            .messaging_group(&to.channel_type, &to.platform_id)
            .ok()
            .flatten()
            .map(|m| m.id);
        let ids: Vec<String> = self
            .sessions
            .iter()
            .filter(|(_, s)| s.runner.is_some())
            .filter(|(_, s)| s.row.messaging_group_id.is_none() || s.row.messaging_group_id == mg)
            .map(|(id, _)| id.clone())
            .collect();
        for id in ids {
            let Some(s) = self.sessions.get(&id) else {
                continue;
            };
            let dir = s.dir.clone();
            let claims = match session::orphan_claims(&dir, None) {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(session_id = %id, "stop: cannot read the runner's claims: {e:#}");
                    continue;
                }
            };
            let mine: Vec<String> = claims
                .into_iter()
                .filter(|o| {
                    o.channel_type.as_deref() == Some(to.channel_type.as_str())
                        && o.platform_id.as_deref() == Some(to.platform_id.as_str())
                })
                .map(|o| o.id)
                .collect();
            if mine.is_empty() {
                continue;
            }
            if let Err(e) = cancel(&dir, &mine) {
                tracing::error!(session_id = %id, "stop: cannot cancel the messages: {e:#}");
                continue;
            }
            tracing::info!(session_id = %id, %sender, count = mine.len(), "the user stopped the turn; killing the runner");
            if let Some(live) = self.sessions.get_mut(&id).and_then(|s| s.runner.as_mut()) {
                live.stop_requested_at
                    .get_or_insert_with(std::time::Instant::now);
                live.stopped_by_user = true;
                live.child.kill();
            }
            let (hub, sid) = (self.live.clone(), id.clone());
            tokio::spawn(async move { hub.gone(&sid, &mine).await });
            stopped_any = true;
        }
        let text = if stopped_any { STOPPED } else { NOTHING };
        self.notify_origin(
            Some(to.channel_type),
            Some(to.platform_id),
            to.thread_id,
            text.into(),
        );
    }
}

/// Cancels the still-pending rows `ids` in one transaction.
fn cancel(dir: &crate::paths::SessionDir, ids: &[String]) -> anyhow::Result<()> {
    let mut conn = pinch_proto::open::open_existing_writer(&dir.inbound_db(), session::BUSY)?;
    let tx = pinch_proto::open::write_tx(&mut conn)?;
    for id in ids {
        pinch_proto::inbound::cancel_pending(&tx, id)?;
    }
    tx.commit()?;
    Ok(())
}
