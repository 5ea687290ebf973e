//! Inbound work, one at a time in arrival order (so the gateway task never
//! waits on the host): messages (threads resolved to their parent, files
//! downloaded, the host's ack, then the cursor), catching up after a fresh
//! IDENTIFY, and button presses.

use std::sync::Arc;

use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::platform::{url_segment, Backoff};
use crate::{Ack, AckOutcome, ChannelEvent, Click, InboundAttachment, MAX_ATTACHMENT};

use super::payload::{Attachment, ChannelInfo, Interaction, Message};
use super::{snowflake_lt, snowflake_newer, DiscordChannel, Inbound, ACK_WAIT, CHANNEL_TYPE};

impl DiscordChannel {
    pub(super) async fn inbound_loop(self: Arc<Self>, mut rx: mpsc::UnboundedReceiver<Inbound>) {
        while let Some(v) = rx.recv().await {
            match v {
                Inbound::Interaction(i) => self.on_interaction(&i).await,
                Inbound::CatchUp { channel, after } => self.catch_up(&channel, &after).await,
                Inbound::Message(m) => self.on_message(&m).await,
            }
        }
    }

    async fn catch_up(&self, channel: &str, after: &str) {
        let mut after = after.to_owned();
        loop {
            let path = format!("/channels/{channel}/messages?after={after}&limit=100");
            let mut batch: Vec<Message> = match self
                .send("GET messages", self.req(reqwest::Method::GET, &path))
                .await
            {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(channel, "discord: catching up failed, messages sent while disconnected may be missing: {e}");
                    return;
                }
            };
            let n = batch.len();
            // Newest first: oldest first for the host.
            batch.sort_by(|a, b| snowflake_lt(&a.id, &b.id));
            for mut m in batch {
                m.channel_id.get_or_insert_with(|| channel.to_owned());
                self.on_message(&m).await;
                if !m.id.is_empty() {
                    after = m.id;
                }
            }
            if n < 100 {
                return;
            }
        }
    }

    async fn on_message(&self, m: &Message) {
        let me = self.me.lock().unwrap().clone().unwrap_or_default();
        let Some((mut ev, files)) = m.to_event(&me) else {
            return;
        };
        let channel = ev.platform_id.clone();
        let id = ev.message_id.clone();
        (ev.platform_id, ev.thread_id) = self.place(&channel).await;
        for a in files {
            ev.attachments.push(self.attachment(a).await);
        }
        // Discord does not redeliver: retry the hand-over a few times.
        for attempt in 0..5u32 {
            let (ack, rx) = Ack::new();
            if self
                .events
                .send(ChannelEvent::Message(ev.clone(), ack))
                .await
                .is_err()
            {
                return;
            }
            match crate::http::within(ACK_WAIT, rx).await {
                Some(Ok(AckOutcome::Stored { .. })) => {
                    self.cursors.advance(&channel, &id, snowflake_newer);
                    return;
                }
                other => {
                    tracing::warn!(
                        message_id = id,
                        attempt,
                        "discord: the host did not store a message ({other:?}); retrying"
                    );
                    self.sleep(Backoff::delay(attempt)).await;
                }
            }
        }
        tracing::error!(message_id = id, "discord: a message could not be stored after 5 attempts; it will be fetched again after the next reconnect");
    }

    /// Downloads one attachment (capped).
    async fn attachment(&self, a: Attachment) -> InboundAttachment {
        let data = match &a.url {
            Some(url) if a.size <= MAX_ATTACHMENT => {
                crate::platform::download_capped(self.client.get(url), &self.cfg.token.0)
                    .await
                    .unwrap_or_else(|e| {
                        tracing::warn!(
                    "discord: downloading an attachment failed, it is noted but not kept: {e}"
                );
                        None
                    })
            }
            _ => None,
        };
        InboundAttachment {
            name: a.filename.unwrap_or_else(|| "file".into()),
            mime: a.content_type,
            size: a.size,
            data,
        }
    }

    async fn on_interaction(&self, i: &Interaction) {
        // Acknowledge (type 6: update the message later, no visible reply).
        if let (Some(id), Some(tok)) = (&i.id, &i.token) {
            let req = self
                .req(
                    reqwest::Method::POST,
                    &format!("/interactions/{id}/{}/callback", url_segment(tok)),
                )
                .json(&json!({"type": 6}));
            if let Err(e) = self.send::<Value>("interaction callback", req).await {
                tracing::debug!("discord: interaction callback failed: {e}");
            }
        }
        let (Some(channel), Some(custom)) = (
            &i.channel_id,
            i.data.as_ref().and_then(|d| d.custom_id.as_ref()),
        ) else {
            return;
        };
        let (platform_id, thread_id) = self.place(channel).await;
        let click = Click {
            channel_type: CHANNEL_TYPE.into(),
            platform_id,
            thread_id,
            user_id: i.user_id(),
            callback: custom.clone(),
        };
        let _ = self.events.send(ChannelEvent::Click(click)).await;
    }

    /// A channel id → (`platform_id`, `thread_id`): a thread is its parent
    /// channel plus the thread's id. Looked up once per channel.
    async fn place(&self, channel: &str) -> (String, Option<String>) {
        if let Some(p) = self.parents.lock().unwrap().get(channel).cloned() {
            return p.map_or_else(
                || (channel.to_owned(), None),
                |p| (p, Some(channel.to_owned())),
            );
        }
        let parent = match self
            .send::<ChannelInfo>(
                "GET channel",
                self.req(reqwest::Method::GET, &format!("/channels/{channel}")),
            )
            .await
        {
            Ok(c) => c.thread_parent(),
            Err(e) => {
                tracing::debug!(
                    "discord: channel lookup failed, treating it as a plain channel: {e}"
                );
                return (channel.to_owned(), None);
            }
        };
        self.parents
            .lock()
            .unwrap()
            .insert(channel.to_owned(), parent.clone());
        parent.map_or_else(
            || (channel.to_owned(), None),
            |p| (p, Some(channel.to_owned())),
        )
    }
}
