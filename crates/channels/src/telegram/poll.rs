//! Inbound: the `getUpdates` long-poll (or the webhook route), each batch
//! handed to the host in order, the offset moved past it only once every
//! update is acked as stored; clicks answered; files downloaded.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use serde::de::IgnoredAny;
use serde_json::json;

use crate::platform::{json_lossy, Backoff, Watchdog};
use crate::{
    Ack, AckOutcome, ChannelEvent, Click, DeliverError, InboundAttachment, InboundEvent,
    MAX_ATTACHMENT,
};

use super::payload::{CallbackQuery, FileRef, Message, Update};
use super::{TelegramChannel, ACK_WAIT, CHANNEL_TYPE, SECRET_HEADER};

enum Wait {
    Done,
    Ack(tokio::sync::oneshot::Receiver<AckOutcome>),
}

impl TelegramChannel {
    pub(super) async fn register_webhook(self: Arc<Self>) {
        let Some((url, secret)) = self.cfg.webhook.clone() else {
            return;
        };
        let mut backoff = Backoff::default();
        while !self.closed.load(Ordering::SeqCst) {
            let body = json!({"url": url, "secret_token": secret.0, "allowed_updates": ["message", "callback_query"]});
            match self.call::<IgnoredAny>("setWebhook", body).await {
                Ok(_) => {
                    tracing::info!("telegram: webhook registered");
                    return;
                }
                Err(e) => {
                    let d = backoff.failed();
                    tracing::warn!(retry_in_s = d.as_secs(), "telegram: setWebhook failed: {e}");
                    self.sleep(d).await;
                }
            }
        }
    }

    pub(super) async fn sleep(&self, d: Duration) {
        let _ = tokio::time::timeout(d, self.wake.notified()).await;
    }

    /// The long-poll: fetch a batch, hand every update to the host, move
    /// the offset past the batch only when all are stored. A poll that
    /// does not answer within the stall limit is abandoned and the HTTP
    /// client rebuilt (SPEC §9.1 watchdog).
    pub(super) async fn poll_loop(self: Arc<Self>) {
        let mut backoff = Backoff::default();
        let mut offset: i64 = 0;
        let mut webhook_cleared = false;
        let watchdog = Watchdog::new(self.cfg.stall);
        while !self.closed.load(Ordering::SeqCst) {
            if !webhook_cleared {
                // getUpdates is refused while a webhook is set.
                match self
                    .call::<IgnoredAny>("deleteWebhook", json!({"drop_pending_updates": false}))
                    .await
                {
                    Ok(_) => webhook_cleared = true,
                    Err(e) => tracing::warn!(
                        "telegram: deleteWebhook failed (getUpdates may be refused): {e}"
                    ),
                }
            }
            let timeout = self.cfg.poll_timeout();
            let body = json!({"offset": offset, "timeout": timeout, "allowed_updates": ["message", "callback_query"]});
            let req = self
                .http()
                .post(self.url("getUpdates"))
                .json(&body)
                .timeout(Duration::from_secs(timeout) + self.cfg.stall);
            let res = tokio::select! {
                r = self.finish::<Vec<Update>>("getUpdates", req) => Some(r),
                _ = tokio::time::sleep(watchdog.limit) => None,
                _ = self.wake.notified() => continue,
            };
            match res {
                None => {
                    tracing::warn!(
                        stall_s = watchdog.limit.as_secs_f64(),
                        "telegram: the long-poll made no progress; rebuilding the connection"
                    );
                    self.rebuild_client();
                    let d = backoff.failed();
                    self.sleep(d).await;
                }
                Some(Err(e)) => {
                    let d = backoff.failed();
                    tracing::warn!(retry_in_s = d.as_secs(), "telegram: getUpdates failed: {e}");
                    if matches!(e, DeliverError::Permanent(_)) {
                        webhook_cleared = false;
                    }
                    self.sleep(d).await;
                }
                Some(Ok(updates)) => {
                    watchdog.progress();
                    backoff.progress();
                    let (next, all) = self.handle_batch(&updates).await;
                    offset = next.max(offset);
                    if !all {
                        // The host could not store one; fetch it again soon.
                        self.sleep(Duration::from_secs(1)).await;
                    }
                }
            }
        }
    }

    /// Hands a batch to the host (all at once, in order) and waits for the
    /// acks: `(offset to poll from next, whether every update was stored)`.
    async fn handle_batch(&self, updates: &[Update]) -> (i64, bool) {
        let mut pending = Vec::new();
        let mut next = 0;
        for u in updates {
            let id = u.update_id;
            match self.emit(u).await {
                Ok(rx) => pending.push((id, Some(rx))),
                Err(e) => {
                    tracing::warn!(
                        update_id = id,
                        "telegram: update not handed to the host: {e}"
                    );
                    pending.push((id, None));
                    break;
                }
            }
        }
        for (id, rx) in pending {
            let stored = match rx {
                None => false,
                Some(Wait::Done) => true,
                Some(Wait::Ack(rx)) => match crate::http::within(ACK_WAIT, rx).await {
                    Some(Ok(AckOutcome::Stored { .. })) => true,
                    Some(Ok(AckOutcome::Failed(why))) => {
                        tracing::warn!(update_id = id, "telegram: the host did not store an update (will fetch it again): {why}");
                        false
                    }
                    _ => false,
                },
            };
            if !stored {
                return (id, false);
            }
            next = id + 1;
        }
        (next, true)
    }

    /// Turns one update into a host event; `Wait::Done` for updates that
    /// need no commit (skipped, clicks).
    async fn emit(&self, u: &Update) -> Result<Wait, String> {
        if let Some(q) = &u.callback_query {
            self.on_callback(q).await;
            return Ok(Wait::Done);
        }
        let Some(m) = &u.message else {
            return Ok(Wait::Done);
        };
        let Some(ev) = self.to_event(m).await? else {
            return Ok(Wait::Done);
        };
        let (ack, rx) = Ack::new();
        self.events
            .send(ChannelEvent::Message(ev, ack))
            .await
            .map_err(|_| "the host is shutting down".to_owned())?;
        Ok(Wait::Ack(rx))
    }

    async fn on_callback(&self, q: &CallbackQuery) {
        // Answer first so the user's spinner stops, whatever happens next.
        if let Some(id) = &q.id {
            if let Err(e) = self
                .call::<IgnoredAny>("answerCallbackQuery", json!({"callback_query_id": id}))
                .await
            {
                tracing::debug!("telegram: answerCallbackQuery failed: {e}");
            }
        }
        let (Some((chat, thread_id)), Some(data)) = (q.place(), &q.data) else {
            return;
        };
        if q.from.as_ref().is_some_and(|f| f.is_bot) {
            return;
        }
        let click = Click {
            channel_type: CHANNEL_TYPE.into(),
            platform_id: chat.to_string(),
            thread_id,
            user_id: q.from.as_ref().map_or(0, |f| f.id).to_string(),
            callback: data.clone(),
        };
        let _ = self.events.send(ChannelEvent::Click(click)).await;
    }

    /// The host's event for a message, its files downloaded; `Ok(None)`
    /// for what pinch skips.
    async fn to_event(&self, m: &Message) -> Result<Option<InboundEvent>, String> {
        let me = self.me().await.map_err(|e| e.to_string())?;
        let Some((mut ev, files)) = m.to_event(me) else {
            return Ok(None);
        };
        for f in files {
            ev.attachments.push(self.attachment(f).await);
        }
        Ok(Some(ev))
    }

    /// Downloads one file through `getFile` (capped).
    async fn attachment(&self, f: FileRef) -> InboundAttachment {
        let size = f.file.file_size.unwrap_or_default();
        let data = if size > MAX_ATTACHMENT {
            None
        } else {
            self.download(&f.file.file_id).await
        };
        InboundAttachment {
            name: f.name,
            mime: f.file.mime_type,
            size: data.as_ref().map_or(size, |d| d.len() as u64),
            data,
        }
    }
}

/// `POST /telegram` (webhook mode): the secret token checked, the update
/// handed over, 200 only once it is stored.
pub(super) async fn webhook(
    axum::extract::State(ch): axum::extract::State<Arc<TelegramChannel>>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> axum::http::StatusCode {
    use axum::http::StatusCode;
    let Some((_, secret)) = &ch.cfg.webhook else {
        return StatusCode::NOT_FOUND;
    };
    let given = headers
        .get(SECRET_HEADER)
        .map(|v| v.as_bytes())
        .unwrap_or_default();
    if !crate::http::secret_eq(given, secret.0.as_bytes()) {
        tracing::warn!("telegram: webhook POST without the right secret token refused");
        return StatusCode::UNAUTHORIZED;
    }
    let u = match json_lossy::<Update>("telegram webhook", &body) {
        Ok(u) => u,
        Err(e) => {
            tracing::warn!("telegram: a webhook POST that is not an update refused: {e}");
            return StatusCode::BAD_REQUEST;
        }
    };
    let (_, all) = ch.handle_batch(std::slice::from_ref(&u)).await;
    // 503: Telegram delivers the update again later.
    if all {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    }
}
