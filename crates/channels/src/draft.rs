//! A streamed reply on a chat platform (decision 0048): the draft is a
//! message the adapter sends and then edits, at most once per
//! [`EVERY`] (the rate Telegram, Discord and Slack all tolerate for edits
//! of one message), with the newest text. A reply quicker than
//! [`AFTER`] never makes a draft: it arrives as one message, as before.
//! The final reply takes the draft's place — the draft is edited into it
//! when it fits in one message and has no buttons or files, else the draft
//! is deleted and the reply sent as usual — so the conversation ends with
//! exactly one reply. A draft whose turn was abandoned (the runner died,
//! the user stopped it) is deleted.
//!
//! No timer: an update that comes within [`EVERY`] of the last edit is
//! kept and shown with the next update after it, or replaced by the final
//! reply. Updates for one draft are serialised (a lock per draft), so the
//! final reply never races the draft's first send.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use crate::{Address, BoxFuture, DeliverError, Live, Outgoing};

/// A reply streams this long before its draft appears.
pub const AFTER: Duration = Duration::from_secs(1);
/// At most one edit of a draft this often.
pub const EVERY: Duration = Duration::from_secs(1);
/// What a draft's text ends with while the model writes.
pub const WRITING: &str = " …";
/// Finished drafts remembered (their late pieces are ignored).
const FINISHED_KEPT: usize = 64;

/// What a platform does for drafts (ids as its `deliver` returns them).
/// A draft is edited as any message the adapter sent ([`Channel::edit`]).
pub trait DraftOps: crate::Channel {
    /// The longest text one message holds (in the platform's units,
    /// counted as `chars` here, which is never more).
    fn draft_max(&self) -> usize;
    fn send_draft<'a>(
        &'a self,
        to: &'a Address,
        key: &'a str,
        text: &'a str,
    ) -> BoxFuture<'a, Result<String, DeliverError>>;
    fn edit_draft<'a>(
        &'a self,
        to: &'a Address,
        id: &'a str,
        text: &'a str,
    ) -> BoxFuture<'a, Result<(), DeliverError>> {
        self.edit(to, id, text)
    }
    fn delete_draft<'a>(
        &'a self,
        to: &'a Address,
        id: &'a str,
    ) -> BoxFuture<'a, Result<(), DeliverError>>;
}

#[derive(Default)]
struct Draft {
    first_seen: Option<Instant>,
    /// The draft message, once sent.
    msg: Option<String>,
    last_edit: Option<Instant>,
    /// The text shown (without [`WRITING`]).
    shown: String,
    /// Its reply arrived or its turn ended: nothing more is sent or edited
    /// (an update that waited for the lock meanwhile does nothing).
    closed: bool,
}

type Key = (String, Option<String>, String);

/// The drafts of one adapter.
#[derive(Default)]
pub struct Drafts {
    all: Mutex<HashMap<Key, Arc<tokio::sync::Mutex<Draft>>>>,
    finished: Mutex<VecDeque<Key>>,
}

fn key(to: &Address, reply_to: &str) -> Key {
    (
        to.platform_id.clone(),
        to.thread_id.clone(),
        reply_to.to_owned(),
    )
}

/// The text a draft shows: cut to fit with room for [`WRITING`].
fn shown(text: &str, max: usize) -> String {
    let room = max.saturating_sub(WRITING.chars().count() + 1);
    let mut t: String = text.chars().take(room).collect();
    if text.chars().count() > room {
        t.push('…');
    }
    t
}

impl Drafts {
    fn slot(&self, k: &Key, create: bool) -> Option<Arc<tokio::sync::Mutex<Draft>>> {
        if self.finished.lock().unwrap().contains(k) {
            return None;
        }
        let mut all = self.all.lock().unwrap();
        match all.get(k) {
            Some(d) => Some(d.clone()),
            None if create => Some(all.entry(k.clone()).or_default().clone()),
            None => None,
        }
    }

    fn finish(&self, k: &Key) {
        self.all.lock().unwrap().remove(k);
        let mut f = self.finished.lock().unwrap();
        if f.len() >= FINISHED_KEPT {
            f.pop_front();
        }
        f.push_back(k.clone());
    }

    /// Takes a live update for `to` (drafts and abandoned turns; the
    /// working state is left to the typing indicator).
    pub async fn live(&self, ops: &dyn DraftOps, to: &Address, live: &Live) {
        match live {
            Live::Draft {
                reply_to: Some(r),
                text,
                ..
            } => {
                let Some(slot) = self.slot(&key(to, r), true) else {
                    return;
                };
                let mut d = slot.lock().await;
                if d.closed {
                    return;
                }
                let now = Instant::now();
                let first = *d.first_seen.get_or_insert(now);
                let text = shown(text, ops.draft_max());
                if text.trim().is_empty() || text == d.shown {
                    return;
                }
                match d.msg.clone() {
                    None if now.duration_since(first) >= AFTER => {
                        let body = format!("{text}{WRITING}");
                        match ops.send_draft(to, r, &body).await {
                            Ok(id) => {
                                d.msg = Some(id);
                                d.last_edit = Some(now);
                                d.shown = text;
                            }
                            Err(e) => tracing::debug!("a draft could not be sent: {e}"),
                        }
                    }
                    Some(id) if d.last_edit.is_none_or(|t| now.duration_since(t) >= EVERY) => {
                        let body = format!("{text}{WRITING}");
                        match ops.edit_draft(to, &id, &body).await {
                            Ok(()) => {
                                d.last_edit = Some(now);
                                d.shown = text;
                            }
                            Err(e) => tracing::debug!("a draft could not be edited: {e}"),
                        }
                    }
                    _ => {}
                }
            }
            Live::Idle { reply_to: Some(r) } => {
                let k = key(to, r);
                let Some(slot) = self.slot(&k, false) else {
                    return;
                };
                let mut d = slot.lock().await;
                d.closed = true;
                self.finish(&k);
                if let Some(id) = &d.msg {
                    if let Err(e) = ops.delete_draft(to, id).await {
                        tracing::debug!("an abandoned draft could not be deleted: {e}");
                    }
                }
            }
            _ => {}
        }
    }

    /// The final reply `msg` arrives: `Some(id)` when its draft became it
    /// (edited into its text; nothing else to send), `None` when it is to
    /// be sent as usual (no draft, or one that could not take it and was
    /// deleted).
    pub async fn finish_with(
        &self,
        ops: &dyn DraftOps,
        to: &Address,
        msg: &Outgoing,
    ) -> Option<String> {
        let r = msg.in_reply_to.as_deref()?;
        let k = key(to, r);
        let slot = self.slot(&k, false)?;
        let mut d = slot.lock().await;
        d.closed = true;
        self.finish(&k);
        let id = d.msg.clone()?;
        let fits = msg.buttons.is_empty()
            && msg.files.is_empty()
            && !msg.text.trim().is_empty()
            && msg.text.chars().count() <= ops.draft_max();
        if fits && ops.edit_draft(to, &id, &msg.text).await.is_ok() {
            return Some(id);
        }
        if let Err(e) = ops.delete_draft(to, &id).await {
            tracing::debug!("a draft could not be deleted before its reply: {e}");
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A platform that records what it was asked.
    #[derive(Default)]
    struct Rec {
        calls: Mutex<Vec<String>>,
    }

    impl crate::Channel for Rec {
        fn channel_type(&self) -> &'static str {
            "rec"
        }
        fn capabilities(&self) -> crate::Capabilities {
            crate::Capabilities::default()
        }
        fn deliver<'a>(
            &'a self,
            _to: &'a Address,
            _msg: &'a Outgoing,
        ) -> BoxFuture<'a, Result<String, DeliverError>> {
            Box::pin(async { Ok(String::new()) })
        }
        fn notice<'a>(
            &'a self,
            _to: &'a Address,
            _text: &'a str,
        ) -> BoxFuture<'a, Result<(), DeliverError>> {
            Box::pin(async { Ok(()) })
        }
    }

    impl DraftOps for Rec {
        fn draft_max(&self) -> usize {
            40
        }
        fn send_draft<'a>(
            &'a self,
            _to: &'a Address,
            _key: &'a str,
            text: &'a str,
        ) -> BoxFuture<'a, Result<String, DeliverError>> {
            self.calls.lock().unwrap().push(format!("send {text}"));
            Box::pin(async { Ok("m1".to_owned()) })
        }
        fn edit_draft<'a>(
            &'a self,
            _to: &'a Address,
            id: &'a str,
            text: &'a str,
        ) -> BoxFuture<'a, Result<(), DeliverError>> {
            self.calls.lock().unwrap().push(format!("edit {id} {text}"));
            Box::pin(async { Ok(()) })
        }
        fn delete_draft<'a>(
            &'a self,
            _to: &'a Address,
            id: &'a str,
        ) -> BoxFuture<'a, Result<(), DeliverError>> {
            self.calls.lock().unwrap().push(format!("delete {id}"));
            Box::pin(async { Ok(()) })
        }
    }

    fn to() -> Address {
        Address {
            channel_type: "telegram".into(),
            platform_id: "42".into(),
            thread_id: None,
        }
    }

    fn draft(t: &str) -> Live {
        Live::Draft {
            reply_to: Some("7".into()),
            text: Arc::from(t),
            same: 0,
        }
    }

    fn reply(text: &str) -> Outgoing {
        Outgoing {
            id: "out-1".into(),
            text: text.into(),
            in_reply_to: Some("7".into()),
            buttons: vec![],
            files: vec![],
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_reply_drafts_edits_at_most_once_a_second_and_becomes_the_reply() {
        let (rec, d) = (Rec::default(), Drafts::default());
        d.live(&rec, &to(), &draft("Once")).await;
        assert!(rec.calls.lock().unwrap().is_empty(), "not before a second");
        tokio::time::advance(AFTER).await;
        d.live(&rec, &to(), &draft("Once upon")).await;
        d.live(&rec, &to(), &draft("Once upon a")).await;
        tokio::time::advance(EVERY).await;
        d.live(&rec, &to(), &draft("Once upon a time")).await;
        assert_eq!(
            d.finish_with(&rec, &to(), &reply("Once upon a time."))
                .await,
            Some("m1".into())
        );
        assert_eq!(
            *rec.calls.lock().unwrap(),
            vec![
                "send Once upon …",
                "edit m1 Once upon a time …",
                "edit m1 Once upon a time."
            ]
        );
        // Late pieces change nothing.
        tokio::time::advance(EVERY).await;
        d.live(&rec, &to(), &draft("late")).await;
        assert_eq!(rec.calls.lock().unwrap().len(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn a_quick_reply_makes_no_draft_and_an_abandoned_draft_is_deleted() {
        let (rec, d) = (Rec::default(), Drafts::default());
        d.live(&rec, &to(), &draft("Hi")).await;
        assert_eq!(d.finish_with(&rec, &to(), &reply("Hi there")).await, None);
        assert!(rec.calls.lock().unwrap().is_empty());
        // Another turn's draft, abandoned by a dying runner.
        let other = |t: &str| Live::Draft {
            reply_to: Some("8".into()),
            text: Arc::from(t),
            same: 0,
        };
        d.live(&rec, &to(), &other("half")).await;
        tokio::time::advance(AFTER).await;
        d.live(&rec, &to(), &other("half a reply")).await;
        d.live(
            &rec,
            &to(),
            &Live::Idle {
                reply_to: Some("8".into()),
            },
        )
        .await;
        assert_eq!(
            *rec.calls.lock().unwrap(),
            vec!["send half a reply …", "delete m1"]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_reply_the_draft_cannot_hold_replaces_it() {
        let (rec, d) = (Rec::default(), Drafts::default());
        d.live(&rec, &to(), &draft("a")).await;
        tokio::time::advance(AFTER).await;
        d.live(&rec, &to(), &draft("a long answer")).await;
        let long = "x".repeat(100);
        assert_eq!(d.finish_with(&rec, &to(), &reply(&long)).await, None);
        let calls = rec.calls.lock().unwrap();
        assert_eq!(calls.last().unwrap(), "delete m1", "{calls:?}");
        // A draft cut to the platform's size while it streams.
        let cut = shown(&"y".repeat(100), 40);
        assert_eq!(cut.chars().count(), 40 - WRITING.chars().count());
    }
}
