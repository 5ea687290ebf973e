//! Delivery: `messages_out` rows → channel adapters, recorded in the
//! host's `delivered` ledger (SPEC §4 step 9), which lives in the session's
//! host-only `delivered.db`, not in `inbound.db` (issue 15, [`crate::ledger`]).
//! A pass that fails is retried after a growing pause and its error logged
//! once, not every second.
//!
//! One task per session, so there is exactly one delivery in flight per
//! session (lesson 7: overlapping polls double-sent upstream). It wakes on
//! inotify events of `out/`, on a 1 s poke while a runner lives, on channel
//! availability, and every 60 s regardless. Each pass reads `messages_out`
//! and `processing_ack` in one read transaction, delivers due rows without a
//! terminal ledger entry in seq order (`delivered` is committed after the
//! adapter call, so a crash in between re-sends on boot: at-least-once;
//! `sending` is written only on the retry path, decision 0005), then copies
//! terminal acks into `messages_in.status`.
//!
//! The files, one job each: this one holds the task (its state, its wake
//! loop and the pass's ledger); `pass.rs` the pass itself (rows read, the
//! address decided, each kind carried out, retries scheduled, acks
//! synced); `render.rs` what a channel is sent for a row; `grants.rs` what
//! the host's records grant a session; `outcome.rs` a row failed, refused
//! or settled and who is told; `inbound.rs` the session's `inbound.db` as a
//! pass holds it; `backoff.rs` the pause after a failed pass.

use std::collections::HashMap;
use std::sync::atomic::AtomicI64;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use pinch_channels::{Address, Channel};
use tokio::sync::{watch, Notify};

use crate::ledger::Ledger;
use crate::paths::SessionDir;

mod acks;
mod backoff;
mod grants;
mod inbound;
mod outcome;
mod pass;
mod render;
mod send;

use backoff::Failing;
use inbound::inbound_is_suspect;

/// Attempts before a row is failed (SPEC §6.6).
pub const MAX_ATTEMPTS: i64 = 3;
/// Backoff before the 2nd and 3rd attempts.
pub const RETRY_DELAYS: [Duration; 2] = [Duration::from_secs(2), Duration::from_secs(10)];
/// Pass over every active session at least this often.
pub const SAFETY_PASS: Duration = Duration::from_secs(60);

pub type Channels = HashMap<String, Arc<dyn Channel>>;

/// Shared between the main loop and a session's delivery task.
pub struct Shared {
    pub notify: Notify,
    /// Largest outbound seq seen (the host's seq allocator stays above it).
    pub out_max: AtomicI64,
    /// Ends a failing task's backoff pause: the host repaired a file.
    pub kick: Notify,
    /// The session's live runner (its id), whose claims are the turns in
    /// flight the live view shows.
    pub runner: std::sync::Mutex<Option<String>>,
}

impl Shared {
    pub fn new() -> Arc<Shared> {
        Arc::new(Shared {
            notify: Notify::new(),
            out_max: AtomicI64::new(0),
            kick: Notify::new(),
            runner: std::sync::Mutex::new(None),
        })
    }
}

pub struct Task {
    pub session_id: String,
    pub dir: SessionDir,
    pub channels: Arc<Channels>,
    pub shared: Arc<Shared>,
    watermark: i64,
    /// Inbound rows finished but not yet announced as settled (announced
    /// only when nothing before them is waiting to be delivered).
    /// (`true`: it failed, e.g. the provider did — issue 15.)
    unsettled: Vec<(Address, String, bool)>,
    /// Rows the channel took whose `delivered` entry could not be written
    /// yet (e.g. a full disk): the next pass retries the record, never the send.
    unrecorded: HashMap<String, (String, i64)>,
    /// A row whose send failed retryably is not tried again before this
    /// (its backoff): a pass run earlier by any other poke (the runner's
    /// next write, a sweep) must not spend its attempts at once. In memory:
    /// after a restart the row is tried at once.
    retry_at: HashMap<String, std::time::Instant>,
    /// The host's delivery ledger (`<session>/delivered.db`).
    ledger: Option<Ledger>,
    /// Tells the main loop about questions before their buttons go out, so
    /// a click always finds its `pending_questions` row.
    events: tokio::sync::mpsc::UnboundedSender<crate::event::Event>,
    /// The zone recurring tasks default to (the host's configured zone).
    pub timezone: String,
    /// The session's agent group (the host's record, for address checks).
    pub agent_group: String,
    /// Told what the runner's turns do (decision 0048).
    pub live: Option<Arc<crate::live::LiveHub>>,
}

impl Task {
    pub(crate) fn new(
        session_id: String,
        dir: SessionDir,
        channels: Arc<Channels>,
        shared: Arc<Shared>,
        events: tokio::sync::mpsc::UnboundedSender<crate::event::Event>,
    ) -> Task {
        Task {
            session_id,
            dir,
            channels,
            shared,
            watermark: 0,
            unsettled: Vec::new(),
            unrecorded: HashMap::new(),
            retry_at: HashMap::new(),
            ledger: None,
            events,
            timezone: "UTC".into(),
            agent_group: String::new(),
            live: None,
        }
    }

    pub async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let mut failing = Failing::default();
        loop {
            let backoff = match self.pass().await {
                Ok(()) => failing.ok(&self.session_id),
                Err(e) => {
                    if inbound_is_suspect(&e) {
                        let _ = self
                            .events
                            .send(crate::event::Event::SessionDbFault(self.session_id.clone()));
                    }
                    failing.failed(&self.session_id, &e)
                }
            };
            // While passes fail, the next one runs when the backoff ends or
            // the host repaired a file (`kick`), whichever comes first, and
            // nothing else is waited for: no runner may be writing, so the
            // next notify could be a safety pass away. (Wakes in between are
            // remembered by the Notify, not acted on.)
            if let Some(wait) = backoff {
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = self.shared.kick.notified() => {}
                    _ = stop.changed() => return,
                }
                continue;
            }
            tokio::select! {
                _ = self.shared.notify.notified() => {}
                _ = tokio::time::sleep(SAFETY_PASS) => {}
                _ = stop.changed() => {
                    // One last pass so nothing written before shutdown waits for a restart.
                    let _ = self.pass().await;
                    return;
                }
            }
        }
    }

    fn poke_later(&self, after: Duration) {
        let shared = self.shared.clone();
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            shared.notify.notify_one();
        });
    }

    /// One delivery pass, with the session's ledger (opened on first use,
    /// kept open; reopened after an error).
    async fn pass(&mut self) -> Result<()> {
        let mut ledger = match self.ledger.take() {
            Some(l) => l,
            None => {
                let mut l = Ledger::open(&self.dir)?;
                // Rebuilt (lost or damaged): the conversation is told once.
                if let Some(text) = l.rebuilt.take() {
                    let _ = self.events.send(crate::event::Event::LedgerRebuilt(
                        self.session_id.clone(),
                        text,
                    ));
                }
                l
            }
        };
        let r = self.pass_with(&mut ledger).await;
        if r.is_ok() {
            self.ledger = Some(ledger);
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    use pinch_channels::{Capabilities, DeliverError, Outgoing};
    use pinch_proto::open::{open_existing_writer, write_tx};
    use pinch_proto::rows::{self, status};
    use pinch_proto::time;

    use crate::session::BUSY;

    /// A channel for one test: records what it delivered, and runs `on_send`
    /// during the call (what may happen while a pass awaits a channel).
    struct Probe {
        delivered: Mutex<Vec<String>>,
        sent: Notify,
        on_send: Box<dyn Fn() -> Result<String, DeliverError> + Send + Sync>,
    }

    impl Channel for Probe {
        fn channel_type(&self) -> &'static str {
            "t"
        }
        fn capabilities(&self) -> Capabilities {
            Capabilities::default()
        }
        fn deliver<'a>(
            &'a self,
            _to: &'a Address,
            msg: &'a Outgoing,
        ) -> pinch_channels::BoxFuture<'a, Result<String, DeliverError>> {
            Box::pin(async move {
                let r = (self.on_send)();
                if r.is_ok() {
                    self.delivered.lock().unwrap().push(msg.text.clone());
                    self.sent.notify_one();
                }
                r
            })
        }
        fn notice<'a>(
            &'a self,
            _to: &'a Address,
            _text: &'a str,
        ) -> pinch_channels::BoxFuture<'a, Result<(), DeliverError>> {
            Box::pin(async { Ok(()) })
        }
    }

    type Events = tokio::sync::mpsc::UnboundedReceiver<crate::event::Event>;

    /// A session whose conversation is `t`/`p1`, with one reply `r1` in its
    /// outbound.db, and a delivery task for it over `probe`.
    fn session_with_reply(
        t: &tempfile::TempDir,
        on_send: Box<dyn Fn() -> Result<String, DeliverError> + Send + Sync>,
    ) -> (Task, Arc<Probe>, Events) {
        let data = crate::paths::DataDir::new(t.path());
        let dir = crate::session::create_folder(&data, "ag", "s1").unwrap();
        // As at a session's load: its ledger is made before any runner.
        drop(Ledger::open(&dir).unwrap());
        crate::session::project(
            &dir,
            &[],
            &pinch_proto::rows::Routing {
                channel_type: Some("t".into()),
                platform_id: Some("p1".into()),
                thread_id: None,
            },
        )
        .unwrap();
        let mut c = open_existing_writer(&dir.outbound_db(), BUSY).unwrap();
        let tx = write_tx(&mut c).unwrap();
        rows::insert_outbound(
            &tx,
            &rows::NewOutbound {
                id: "r1".into(),
                timestamp: time::now(),
                kind: "chat".into(),
                content: r#"{"text":"the reply"}"#.into(),
                ..Default::default()
            },
            0,
        )
        .unwrap();
        tx.commit().unwrap();
        let probe = Arc::new(Probe {
            delivered: Mutex::new(Vec::new()),
            sent: Notify::new(),
            on_send,
        });
        let mut channels = Channels::new();
        channels.insert("t".into(), probe.clone() as Arc<dyn Channel>);
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let mut task = Task::new("s1".into(), dir, Arc::new(channels), Shared::new(), tx);
        task.agent_group = "ag".into();
        (task, probe, rx)
    }

    /// Review of issue 15: a failed pass waits out its back-off or a kick
    /// (the host repaired the file), then passes again at once — not after
    /// the next notify, which with no runner alive is the 60 s safety pass.
    /// The wait below is shorter than that pass: before the fix it timed out.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_repair_ends_the_pause_and_the_pending_reply_goes_out_at_once() {
        let t = tempfile::tempdir().unwrap();
        let (task, probe, mut events) = session_with_reply(&t, Box::new(|| Ok("pm1".into())));
        let path = task.dir.inbound_db();
        let good = path.with_extension("good");
        std::fs::rename(&path, &good).unwrap();
        std::fs::write(&path, vec![0xa5u8; 4096]).unwrap();
        let shared = task.shared.clone();
        let (stop_tx, stop) = watch::channel(false);
        let run = tokio::spawn(task.run(stop));
        // The pass failed on the damaged file and asked for a check.
        let asked = tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                match events.recv().await {
                    Some(crate::event::Event::SessionDbFault(id)) => break id,
                    Some(_) => {}
                    None => panic!("the task ended"),
                }
            }
        })
        .await
        .expect("the failing pass reports the damaged file");
        assert_eq!(asked, "s1");
        // The "repair", as the main loop does it: a good file, then a kick.
        std::fs::rename(&good, &path).unwrap();
        shared.kick.notify_one();
        let wait = SAFETY_PASS / 2;
        let sent = tokio::time::timeout(wait, async {
            loop {
                let notified = probe.sent.notified();
                if !probe.delivered.lock().unwrap().is_empty() {
                    break;
                }
                notified.await;
            }
        })
        .await;
        assert!(
            sent.is_ok(),
            "the pending reply was not delivered within {wait:?} of the repair"
        );
        assert_eq!(*probe.delivered.lock().unwrap(), vec!["the reply"]);
        stop_tx.send(true).unwrap();
        run.await.unwrap();
    }

    /// Review of issue 15: the main loop replaces inbound.db (a recovery)
    /// while a pass awaits the channel; the channel then refuses the row for
    /// good. The agent's "delivery failed" note must land in the file now
    /// at the path, not in the one moved aside.
    #[tokio::test]
    async fn a_failure_note_after_the_file_was_replaced_mid_send_reaches_the_new_file() {
        let t = tempfile::tempdir().unwrap();
        let in_path = crate::paths::DataDir::new(t.path())
            .session("ag", "s1")
            .inbound_db();
        let kept = in_path.with_extension("db.corrupt-x");
        let (swap_from, swap_to) = (in_path.clone(), kept.clone());
        let (mut task, _probe, _events) = session_with_reply(
            &t,
            Box::new(move || {
                // What recover_inbound does: the old file aside, a new one
                // (another inode, the same rows) in its place.
                std::fs::rename(&swap_from, &swap_to).unwrap();
                std::fs::copy(&swap_to, &swap_from).unwrap();
                Err(DeliverError::Permanent("no such user".into()))
            }),
        );
        task.pass().await.unwrap();
        let notes = |p: &std::path::Path| -> i64 {
            pinch_proto::open::open_reader(p, BUSY)
                .unwrap()
                .query_row(
                    "SELECT count(*) FROM messages_in WHERE id = 'deliver-failed:r1'",
                    [],
                    |r| r.get(0),
                )
                .unwrap()
        };
        assert_eq!(
            notes(&in_path),
            1,
            "the agent's note is not in the current inbound.db"
        );
        assert_eq!(notes(&kept), 0);
        let l = Ledger::open(&task.dir).unwrap();
        assert_eq!(l.get("r1").unwrap().unwrap().status, status::FAILED);
    }

    /// A send that failed retryably waits out its backoff even when other
    /// pokes (the runner's next write, a sweep) run passes at once: before,
    /// three quick passes spent all three attempts in milliseconds and the
    /// reply failed for good while the callback was briefly down (seen as
    /// a flaky `webhook` test under load).
    #[tokio::test]
    async fn passes_in_quick_succession_do_not_spend_a_rows_retries() {
        let t = tempfile::tempdir().unwrap();
        let tries = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let counted = tries.clone();
        let (mut task, probe, _events) = session_with_reply(
            &t,
            Box::new(move || {
                counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                Err(DeliverError::Retryable("503 Service Unavailable".into()))
            }),
        );
        for _ in 0..5 {
            task.pass().await.unwrap();
        }
        assert_eq!(
            tries.load(std::sync::atomic::Ordering::SeqCst),
            1,
            "the row was tried again before its backoff"
        );
        let l = task.ledger.as_ref().unwrap().get("r1").unwrap().unwrap();
        assert_eq!((l.status.as_str(), l.attempts), (status::SENDING, 1));
        assert!(probe.delivered.lock().unwrap().is_empty());
    }
}
