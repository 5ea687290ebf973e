//! Sending stored host notices (see `crate::db::notices`): one task per channel
//! sends that channel's unsent notices in order and reports each outcome
//! back to the main loop, which alone writes the central DB.

use std::sync::Arc;

use pinch_channels::{Address, Channel, DeliverError};

use super::{Event, Host};
use crate::db::notices::StoredNotice;

impl Host {
    /// Stores a notice, then sends it (and anything older still waiting on
    /// that channel). If it cannot even be stored, it is sent anyway.
    pub(super) fn durable_notice(&self, to: Address, text: String) {
        match self.central.insert_notice(
            &to.channel_type,
            &to.platform_id,
            to.thread_id.as_deref(),
            &text,
        ) {
            Ok(_) => self.flush_notices(Some(&to.channel_type)),
            Err(e) => {
                tracing::error!(channel = %to.channel_type, "cannot store a host notice (sending it once without a record): {e:#}");
                let Some(ch) = self.channels.get(&to.channel_type).cloned() else {
                    return;
                };
                tokio::spawn(async move {
                    if let Err(e) =
                        pinch_channels::guarded(ch.channel_type(), ch.notice(&to, &text)).await
                    {
                        tracing::warn!(channel = %to.channel_type, "could not send a host notice: {e}; it was: {text}");
                    }
                });
            }
        }
    }

    /// Sends the unsent notices of one channel type (or of all), oldest
    /// first, skipping those already on their way.
    pub(super) fn flush_notices(&self, channel_type: Option<&str>) {
        let waiting = match self.central.unsent_notices(channel_type) {
            Ok(w) => w,
            Err(e) => {
                tracing::error!(
                    "cannot read the stored host notices (retried at the next sweep): {e:#}"
                );
                return;
            }
        };
        let mut by_channel: Vec<(Arc<dyn Channel>, Vec<StoredNotice>)> = Vec::new();
        let mut in_flight = self.notices_in_flight.lock().unwrap();
        for n in waiting {
            if in_flight.contains_key(&n.id) {
                // Tried again once that send reports back (notice_sent).
                self.notices_reflush
                    .lock()
                    .unwrap()
                    .insert(n.channel_type.clone());
                continue;
            }
            let Some(ch) = self.channels.get(&n.channel_type).cloned() else {
                // Its channel is not configured (now): kept for when it is.
                continue;
            };
            in_flight.insert(n.id, n.channel_type.clone());
            match by_channel
                .iter_mut()
                .find(|(_, v)| v[0].channel_type == n.channel_type)
            {
                Some((_, v)) => v.push(n),
                None => by_channel.push((ch, vec![n])),
            }
        }
        drop(in_flight);
        for (ch, notices) in by_channel {
            let events = self.events.clone();
            tokio::spawn(async move {
                let mut rest = notices.into_iter();
                for n in rest.by_ref() {
                    let to = Address {
                        channel_type: n.channel_type.clone(),
                        platform_id: n.platform_id.clone(),
                        thread_id: n.thread_id.clone(),
                    };
                    let result =
                        pinch_channels::guarded(ch.channel_type(), ch.notice(&to, &n.text)).await;
                    let stop = matches!(result, Err(DeliverError::Unavailable(_)));
                    let _ = events.send(Event::NoticeSent { notice: n, result });
                    if stop {
                        break;
                    }
                }
                // Nobody there: the rest wait for the next try, untouched.
                for n in rest {
                    let _ = events.send(Event::NoticeSent {
                        notice: n,
                        result: Err(DeliverError::Unavailable("not tried".into())),
                    });
                }
            });
        }
    }

    pub(super) fn notice_sent(&self, notice: StoredNotice, result: Result<(), DeliverError>) {
        let idle = {
            let mut in_flight = self.notices_in_flight.lock().unwrap();
            in_flight.remove(&notice.id);
            !in_flight.values().any(|ct| *ct == notice.channel_type)
        };
        let done = match &result {
            Ok(()) => true,
            Err(DeliverError::Permanent(e)) => {
                tracing::error!(channel = %notice.channel_type, platform_id = %notice.platform_id, "a host notice cannot be delivered ({e}); dropped: {}", notice.text);
                true
            }
            Err(DeliverError::Unavailable(_)) => false,
            Err(DeliverError::Retryable(e)) => {
                tracing::warn!(channel = %notice.channel_type, "a host notice was not delivered ({e}); retried at the next sweep");
                if let Err(e) = self.central.notice_attempt_failed(notice.id, e) {
                    tracing::warn!("cannot count a host notice's try: {e:#}");
                }
                false
            }
        };
        if done {
            if let Err(e) = self.central.notice_done(notice.id) {
                tracing::error!("cannot mark a host notice sent (it may be shown again): {e:#}");
            }
        }
        // A flush skipped this channel while its notices were on their way
        // (a client connected meanwhile): try again now they are back.
        if idle
            && self
                .notices_reflush
                .lock()
                .unwrap()
                .remove(&notice.channel_type)
        {
            self.flush_notices(Some(&notice.channel_type));
        }
    }

    /// A host notice (not an agent reply) to a conversation, e.g. a
    /// quarantine or a message that failed for good.
    pub(super) fn notify_origin(
        &self,
        channel_type: Option<String>,
        platform_id: Option<String>,
        thread_id: Option<String>,
        text: String,
    ) {
        let (Some(ct), Some(pid)) = (channel_type, platform_id) else {
            return;
        };
        // Stored first, so nobody listening now does not lose it (notices.rs).
        self.durable_notice(
            pinch_channels::Address {
                channel_type: ct,
                platform_id: pid,
                thread_id,
            },
            text,
        );
    }
}
