//! Inbound: the `/sync` long-poll. Each batch's invites answered by the
//! sender policy, its messages handed to the host in order (their files
//! downloaded), and its `next_batch` saved only once every message is
//! acked as stored. A sync that does not answer within the stall limit is
//! abandoned and the HTTP client rebuilt; failures wait the shared backoff.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use crate::platform::{url_segment, Backoff, Watchdog};
use crate::{Ack, AckOutcome, ChannelEvent, DeliverError, InboundAttachment, InboundEvent};

use super::payload::{self, Invite, Item, Msg, Room, MAX_EVENTS};
use super::{MatrixChannel, ACK_WAIT, CHANNEL_TYPE, MAX_REMEMBERED};

/// What a room member is told once when pinch meets encryption.
pub const ENCRYPTED_NOTICE: &str = "pinch cannot read end-to-end encrypted messages (its Matrix channel has no encryption support). Write to it in a room without encryption.";

/// The inline `/sync` filter: room messages, encrypted events (to say
/// they cannot be read) and memberships; nothing else.
fn filter() -> String {
    json!({
        "presence": {"types": []},
        "account_data": {"types": []},
        "room": {
            "timeline": {"limit": MAX_EVENTS, "types": ["m.room.message", "m.room.encrypted", "m.room.member"]},
            "state": {"types": [], "lazy_load_members": true},
            "ephemeral": {"types": []},
            "account_data": {"types": []}
        }
    })
    .to_string()
}

impl MatrixChannel {
    async fn sleep(&self, d: Duration) {
        let _ = tokio::time::timeout(d, self.wake.notified()).await;
    }

    pub(super) async fn sync_loop(self: Arc<Self>) {
        let mut backoff = Backoff::default();
        let watchdog = Watchdog::new(self.cfg.stall);
        let filter = url_segment(&filter());
        while !self.closed() {
            let since = self.state.lock().unwrap().next_batch.clone();
            let timeout = self.cfg.poll_timeout();
            let mut path = format!(
                "/_matrix/client/v3/sync?filter={filter}&timeout={}",
                if since.is_some() {
                    timeout.as_millis()
                } else {
                    0
                }
            );
            if let Some(s) = &since {
                path.push_str(&format!("&since={}", url_segment(s)));
            }
            let req = self
                .http()
                .get(self.url(&path))
                .timeout(timeout + self.cfg.stall);
            let res = tokio::select! {
                r = super::api::finish(&self.cfg.token.0, "/sync", req) => Some(r),
                _ = tokio::time::sleep(watchdog.limit) => None,
                _ = self.wake.notified() => continue,
            };
            match res {
                None => {
                    tracing::warn!(
                        stall_s = watchdog.limit.as_secs_f64(),
                        "matrix: /sync made no progress; rebuilding the connection"
                    );
                    self.rebuild_client();
                    let d = backoff.failed();
                    self.sleep(d).await;
                }
                Some(Err(e)) => {
                    let d = backoff.failed();
                    tracing::warn!(retry_in_s = d.as_secs(), "matrix: /sync failed: {e}");
                    self.sleep(d).await;
                }
                Some(Ok(v)) => {
                    watchdog.progress();
                    backoff.progress();
                    let Some(batch) = payload::batch(&v, &self.cfg.user_id) else {
                        let d = backoff.failed();
                        tracing::warn!(
                            retry_in_s = d.as_secs(),
                            "matrix: a /sync answer without next_batch"
                        );
                        self.sleep(d).await;
                        continue;
                    };
                    let mut all = self.invites(&batch.invites).await;
                    // The first start: the timelines are history.
                    if since.is_some() {
                        all &= self.rooms(&batch.rooms).await;
                    } else {
                        tracing::info!("matrix: first sync; the rooms' history is left alone");
                    }
                    if all {
                        self.update(|s| s.next_batch = Some(batch.next_batch));
                    } else {
                        // The host could not store one: sync the batch again.
                        self.sleep(Duration::from_secs(1)).await;
                    }
                }
            }
        }
    }

    /// Joins the rooms known users invited pinch to and rejects the rest;
    /// `false` when one should be tried again (the batch is synced again).
    async fn invites(&self, invites: &[Invite]) -> bool {
        let mut all = true;
        for inv in invites {
            let room = url_segment(&inv.room_id);
            let known = match &inv.inviter {
                Some(u) => self.known(u).await,
                None => Some(false),
            };
            let Some(known) = known else {
                return false;
            };
            let inviter = inv.inviter.as_deref().unwrap_or("an unknown user");
            let (path, did) = if known {
                (format!("/_matrix/client/v3/rooms/{room}/join"), "joined")
            } else {
                (format!("/_matrix/client/v3/rooms/{room}/leave"), "rejected")
            };
            match self
                .call(reqwest::Method::POST, &path, Some(json!({})))
                .await
            {
                Ok(_) if known => {
                    tracing::info!(room = %inv.room_id, inviter, "matrix: {did} the room (the inviter is a user pinch knows)")
                }
                Ok(_) => {
                    tracing::info!(room = %inv.room_id, inviter, "matrix: {did} the invite: the inviter is not a user pinch knows (an owner, admin or member of an agent); add them to let them invite pinch")
                }
                Err(DeliverError::Permanent(e)) => {
                    tracing::warn!(room = %inv.room_id, "matrix: the invite could not be {did}: {e}")
                }
                Err(e) => {
                    tracing::warn!(room = %inv.room_id, "matrix: the invite could not be {did} (will try again): {e}");
                    all = false;
                }
            }
        }
        all
    }

    /// Whether the host knows `user`; `None` when it did not say.
    async fn known(&self, user: &str) -> Option<bool> {
        let (reply, rx) = tokio::sync::oneshot::channel();
        let ask = ChannelEvent::Known {
            channel_type: CHANNEL_TYPE.into(),
            user: user.to_owned(),
            reply,
        };
        self.events.send(ask).await.ok()?;
        crate::http::within(ACK_WAIT, rx).await?.ok()
    }

    /// Hands each room's messages to the host, in order, and waits for
    /// the acks: whether every one was stored.
    async fn rooms(&self, rooms: &[Room]) -> bool {
        let mut pending = Vec::new();
        'rooms: for r in rooms {
            if let Some(n) = r.joined {
                self.remember_members(&r.room_id, n);
            }
            if r.limited && !r.events.contains(&Item::OwnJoin) {
                tracing::warn!(room = %r.room_id, "matrix: more events arrived than one sync carries; the older ones are not read (decision 0053)");
            }
            // What came before pinch's join is history.
            let start = r
                .events
                .iter()
                .rposition(|e| *e == Item::OwnJoin)
                .map_or(0, |i| i + 1);
            for e in &r.events[start..] {
                match e {
                    Item::Message(m) => match self.emit(&r.room_id, m).await {
                        Ok(rx) => pending.push((m.event_id.clone(), rx)),
                        Err(e) => {
                            tracing::warn!(event = %m.event_id, "matrix: message not handed to the host: {e}");
                            return false;
                        }
                    },
                    Item::Encrypted { event_id, sender } => {
                        self.encrypted(&r.room_id, event_id, sender).await;
                    }
                    Item::OwnJoin | Item::Other => {}
                }
                if self.closed() {
                    break 'rooms;
                }
            }
        }
        let mut all = !self.closed();
        for (id, rx) in pending {
            match crate::http::within(ACK_WAIT, rx).await {
                Some(Ok(AckOutcome::Stored { .. })) => {}
                Some(Ok(AckOutcome::Failed(why))) => {
                    tracing::warn!(event = %id, "matrix: the host did not store a message (will sync it again): {why}");
                    all = false;
                }
                _ => all = false,
            }
        }
        all
    }

    fn remember_members(&self, room: &str, n: u64) {
        let mut m = self.members.lock().unwrap();
        if m.len() >= MAX_REMEMBERED * 10 {
            m.clear();
        }
        m.insert(room.to_owned(), n);
    }

    /// The room's joined members: as the sync said, else asked once.
    async fn member_count(&self, room: &str) -> Option<u64> {
        if let Some(n) = self.members.lock().unwrap().get(room) {
            return Some(*n);
        }
        let path = format!(
            "/_matrix/client/v3/rooms/{}/joined_members",
            url_segment(room)
        );
        let v = self.call(reqwest::Method::GET, &path, None).await.ok()?;
        let n = v["joined"].as_object()?.len() as u64;
        self.remember_members(room, n);
        Some(n)
    }

    async fn emit(
        &self,
        room: &str,
        m: &Msg,
    ) -> Result<tokio::sync::oneshot::Receiver<AckOutcome>, String> {
        // Two members: pinch and one user. A count that did not come is
        // taken as a group (a mention needed), never as a direct chat.
        let is_group = self.member_count(room).await.is_none_or(|n| n > 2);
        let mut ev = InboundEvent {
            channel_type: CHANNEL_TYPE.into(),
            platform_id: room.to_owned(),
            thread_id: m.thread_id.clone(),
            message_id: m.event_id.clone(),
            sender_id: m.sender.clone(),
            sender_name: None,
            text: m.text.clone(),
            is_mention: !is_group || m.mentions_me,
            is_group,
            edit_of: m.edit_of.clone(),
            ..Default::default()
        };
        if let Some(f) = &m.file {
            let data = self.download(f).await;
            ev.attachments.push(InboundAttachment {
                name: f.name.clone(),
                mime: f.mime.clone(),
                size: data
                    .as_ref()
                    .map_or(f.size.unwrap_or_default(), |d| d.len() as u64),
                data,
            });
        }
        let (ack, rx) = Ack::new();
        self.events
            .send(ChannelEvent::Message(ev, ack))
            .await
            .map_err(|_| "the host is shutting down".to_owned())?;
        Ok(rx)
    }

    /// An encrypted event: the room is told once that pinch cannot read
    /// it (the owner sees the warning in the log).
    async fn encrypted(&self, room: &str, event_id: &str, sender: &str) {
        let told = self
            .state
            .lock()
            .unwrap()
            .encrypted_told
            .iter()
            .any(|r| r == room);
        tracing::warn!(room, event = event_id, sender, "matrix: an end-to-end encrypted message cannot be read (no encryption support, decision 0053); it is skipped");
        if told {
            return;
        }
        let content = json!({"msgtype": "m.notice", "body": ENCRYPTED_NOTICE});
        let txn = super::txn_of("encrypted", &[room]);
        match self.send_event(room, "m.room.message", &txn, content).await {
            Ok(_) => self.update(|s| {
                s.encrypted_told.push_back(room.to_owned());
                while s.encrypted_told.len() > MAX_REMEMBERED {
                    s.encrypted_told.pop_front();
                }
            }),
            Err(e) => tracing::warn!(
                room,
                "matrix: could not tell the room about encryption: {e}"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    #[test]
    fn the_filter_asks_only_for_what_pinch_reads() {
        let f: Value = serde_json::from_str(&filter()).unwrap();
        assert_eq!(f["room"]["timeline"]["limit"], MAX_EVENTS);
        assert_eq!(f["presence"]["types"], json!([]));
    }
}
