//! The live view of a conversation (decision 0048): what the agent is doing
//! (`Working`, from the host's own reading of the runner's claims and
//! `container_state`) and its reply as the model streams it (`Draft`, from
//! the runner's `POST /_pinch/stream`), sent to the channels as
//! [`pinch_channels::Live`]. Nothing here is stored or ever a reply: the
//! final `messages_out` row is. A turn that ends, is stopped, or whose
//! runner dies gets `Idle`, so a channel drops its draft; a crash mid-stream
//! therefore leaves the retry's draft and then exactly the final reply.
//!
//! The agent is hostile: a draft goes only to the conversation of an
//! inbound row of its own session that is not finished (the host's records
//! decide the address), at most [`MAX_DRAFT`] bytes, at most
//! [`PIECES_PER_MINUTE`] pieces a minute; a piece that does not continue
//! the draft where the host has it is refused (the runner then stops
//! streaming that call; the final row is unaffected).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pinch_channels::{Address, Live};
use pinch_policy::rate::Bucket;

/// The channels by type (the host's table; spelt out here so the live
/// view does not depend on delivery, which depends on it).
type Channels = HashMap<String, Arc<dyn pinch_channels::Channel>>;

/// The most of one reply's draft the host keeps and shows.
pub const MAX_DRAFT: usize = 64 * 1024;
/// A draft is sent to its channel at most this often (the newest text
/// wins; the last piece goes out when the pause ends), so a fast stream
/// costs a channel a bounded number of renders and frames.
pub const DRAFT_EVERY: Duration = Duration::from_millis(50);
/// Turns in flight shown per session at most.
const MAX_WORKING: usize = 32;
/// Streamed pieces one session may send a minute (the runner sends one
/// POST at a time with whatever arrived meanwhile, so a fast model makes
/// fewer, larger pieces).
pub const PIECES_PER_MINUTE: u32 = 6_000;
/// Finished turns remembered per session (their late pieces are refused).
const FINISHED_KEPT: usize = 64;
/// Longest state text shown (it names a tool, which the agent chose).
const MAX_STATE: usize = 80;

/// Where a turn's live view goes: the conversation of the inbound row it
/// answers, and that row's platform message id (what the final reply's
/// `in_reply_to` names, so a channel replaces the draft with it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub addr: Address,
    pub key: Option<String>,
}

impl Target {
    /// The target of an inbound row (`None`: it has no conversation).
    pub fn of_row(r: &pinch_proto::rows::InboundRow) -> Option<Target> {
        Some(Target {
            addr: Address {
                channel_type: r.channel_type.clone()?,
                platform_id: r.platform_id.clone()?,
                thread_id: r.thread_id.clone(),
            },
            key: Some(
                r.id.rsplit_once(':')
                    .map_or(r.id.as_str(), |(p, _)| p)
                    .to_owned(),
            ),
        })
    }
}

/// One turn the host saw in flight: the inbound id it answers, where it
/// goes, what it does now and since when (epoch ms).
#[derive(Clone, Debug, PartialEq)]
pub struct Working {
    pub id: String,
    pub target: Target,
    pub state: String,
    pub since_ms: i64,
}

/// Why a streamed piece was not taken (the proxy answers its status).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    TooFast,
    Finished,
    Gap,
    TooLong,
}

impl Refusal {
    pub fn status(self) -> u16 {
        match self {
            Refusal::TooFast => 429,
            Refusal::Finished | Refusal::Gap => 409,
            Refusal::TooLong => 413,
        }
    }
    pub fn message(self) -> String {
        match self {
            Refusal::TooFast => format!("more than {PIECES_PER_MINUTE} streamed pieces a minute"),
            Refusal::Finished => "that message's turn is over".into(),
            Refusal::Gap => "the piece does not continue the draft where the host has it".into(),
            Refusal::TooLong => format!("a draft is at most {MAX_DRAFT} bytes"),
        }
    }
}

struct Draft {
    target: Target,
    text: String,
    started: Instant,
    /// When the channels were last sent this draft, and how much of the
    /// text they have (`None`: it started over since).
    sent_at: Option<Instant>,
    sent_len: Option<usize>,
    /// A send is scheduled for the end of the pause.
    flush_due: bool,
}

#[derive(Default)]
struct SessionLive {
    drafts: HashMap<String, Draft>,
    working: HashMap<String, Working>,
    finished: VecDeque<String>,
    bucket: Option<Bucket>,
}

impl SessionLive {
    fn finish(&mut self, id: &str) {
        if !self.finished.iter().any(|f| f == id) {
            if self.finished.len() >= FINISHED_KEPT {
                self.finished.pop_front();
            }
            self.finished.push_back(id.to_owned());
        }
    }
}

pub struct LiveHub {
    channels: Arc<Channels>,
    sessions: Mutex<HashMap<String, SessionLive>>,
    epoch: Instant,
}

/// The draft as the channels get it now (and recorded as sent).
fn take_draft(d: &mut Draft, now: Instant) -> (Address, Live) {
    let same = d.sent_len.unwrap_or(0).min(d.text.len());
    d.sent_at = Some(now);
    d.sent_len = Some(d.text.len());
    d.flush_due = false;
    (
        d.target.addr.clone(),
        Live::Draft {
            reply_to: d.target.key.clone(),
            text: Arc::from(d.text.as_str()),
            same,
        },
    )
}

/// A tool name as shown: printable, short.
fn clean(s: &str) -> String {
    let t: String = s.chars().filter(|c| !c.is_control()).collect();
    let mut out: String = t.chars().take(MAX_STATE).collect();
    if t.chars().count() > MAX_STATE {
        out.push('…');
    }
    out
}

/// What `container_state` says the turn does: the model call (`model`),
/// a tool, or nothing named yet.
pub fn state_text(current_tool: Option<&str>) -> String {
    match current_tool {
        Some("model") => "thinking".into(),
        Some(t) if !t.is_empty() => format!("running {}", clean(t)),
        _ => "working".into(),
    }
}

impl LiveHub {
    pub fn new(channels: Arc<Channels>) -> Arc<LiveHub> {
        Arc::new(LiveHub {
            channels,
            sessions: Mutex::new(HashMap::new()),
            epoch: Instant::now(),
        })
    }

    async fn send(&self, actions: Vec<(Address, Live)>) {
        for (to, live) in actions {
            if let Some(ch) = self.channels.get(&to.channel_type) {
                ch.live(&to, &live).await;
            }
        }
    }

    /// Admits one streamed piece of `session` (its rate), before anything
    /// is looked up for it.
    pub fn admit(&self, session: &str) -> Result<(), Refusal> {
        let mut all = self.sessions.lock().unwrap();
        let s = all.entry(session.to_owned()).or_default();
        let now_ms = self.epoch.elapsed().as_millis() as i64;
        s.bucket
            .get_or_insert_with(|| Bucket::new(PIECES_PER_MINUTE, now_ms))
            .take(now_ms)
            .map_err(|_| Refusal::TooFast)
    }

    /// A streamed piece of the reply to the inbound row `id` (whose
    /// conversation is `target`): `text` at byte `at` of the draft (`0`
    /// starts it over). A runner streams one model call at a time, so a
    /// session has one draft: a piece for another row ends the old one.
    /// The channels get the draft at most every [`DRAFT_EVERY`].
    pub async fn piece(
        self: &Arc<Self>,
        session: &str,
        id: &str,
        target: Target,
        at: usize,
        text: &str,
    ) -> Result<(), Refusal> {
        let (mut actions, send_now) = {
            let mut all = self.sessions.lock().unwrap();
            let s = all.entry(session.to_owned()).or_default();
            if s.finished.iter().any(|f| f == id) {
                return Err(Refusal::Finished);
            }
            let mut actions = Vec::new();
            let others: Vec<String> = s.drafts.keys().filter(|k| *k != id).cloned().collect();
            for o in others {
                if let Some(d) = s.drafts.remove(&o) {
                    actions.push((
                        d.target.addr,
                        Live::Idle {
                            reply_to: d.target.key,
                        },
                    ));
                }
            }
            let d = s.drafts.entry(id.to_owned()).or_insert_with(|| Draft {
                target: target.clone(),
                text: String::new(),
                started: Instant::now(),
                sent_at: None,
                sent_len: None,
                flush_due: false,
            });
            if at == 0 {
                d.text.clear();
                d.sent_len = None;
            } else if at != d.text.len() {
                return Err(Refusal::Gap);
            }
            if d.text.len() + text.len() > MAX_DRAFT {
                return Err(Refusal::TooLong);
            }
            d.text.push_str(text);
            let now = Instant::now();
            let wait = d
                .sent_at
                .map(|t| DRAFT_EVERY.saturating_sub(now.duration_since(t)))
                .unwrap_or_default();
            if wait.is_zero() {
                actions.push(take_draft(d, now));
                (actions, None)
            } else if d.flush_due {
                (actions, Some(Duration::ZERO))
            } else {
                d.flush_due = true;
                (actions, Some(wait))
            }
        };
        match send_now {
            // A send is already scheduled: it takes this text too.
            Some(w) if w.is_zero() => {}
            Some(wait) => {
                let (hub, session, id) = (self.clone(), session.to_owned(), id.to_owned());
                tokio::spawn(async move {
                    tokio::time::sleep(wait).await;
                    hub.flush(&session, &id).await;
                });
            }
            None => {}
        }
        self.send(std::mem::take(&mut actions)).await;
        Ok(())
    }

    /// Sends a draft whose pause ended, if it still stands.
    async fn flush(&self, session: &str, id: &str) {
        let action = {
            let mut all = self.sessions.lock().unwrap();
            let Some(d) = all.get_mut(session).and_then(|s| s.drafts.get_mut(id)) else {
                return;
            };
            if !d.flush_due {
                return;
            }
            take_draft(d, Instant::now())
        };
        self.send(vec![action]).await;
    }

    /// The turns a delivery pass saw in flight (read at `read_at`): new or
    /// changed ones are told `Working`; the ones gone are over (`Idle`,
    /// their drafts dropped, later pieces refused). A draft that started
    /// after the pass read its rows is not judged by it.
    pub async fn working(&self, session: &str, mut now: Vec<Working>, read_at: Instant) {
        now.truncate(MAX_WORKING);
        let actions = {
            let mut all = self.sessions.lock().unwrap();
            if now.is_empty() && !all.contains_key(session) {
                return;
            }
            let s = all.entry(session.to_owned()).or_default();
            let mut actions = Vec::new();
            for w in &now {
                if s.working.get(&w.id).map(|o| &o.state) != Some(&w.state) {
                    actions.push((
                        w.target.addr.clone(),
                        Live::Working {
                            reply_to: w.target.key.clone(),
                            state: w.state.clone(),
                            since_ms: w.since_ms,
                        },
                    ));
                }
            }
            let ids: std::collections::HashSet<&str> = now.iter().map(|w| w.id.as_str()).collect();
            let in_flight = |id: &str| ids.contains(id);
            let mut over: Vec<(String, Target)> = s
                .working
                .values()
                .filter(|w| !in_flight(&w.id))
                .map(|w| (w.id.clone(), w.target.clone()))
                .collect();
            for (id, d) in &s.drafts {
                if !in_flight(id) && d.started < read_at && !over.iter().any(|(o, _)| o == id) {
                    over.push((id.clone(), d.target.clone()));
                }
            }
            drop(ids);
            for (id, t) in over {
                s.drafts.remove(&id);
                s.finish(&id);
                actions.push((t.addr, Live::Idle { reply_to: t.key }));
            }
            s.working = now.into_iter().map(|w| (w.id.clone(), w)).collect();
            actions
        };
        self.send(actions).await;
    }

    /// The session's runner is gone (it exited, was stopped or killed):
    /// every draft and indicator of its turns ends. A stopped turn's
    /// messages (`stopped`) are finished; the others may be tried again
    /// and stream anew.
    pub async fn gone(&self, session: &str, stopped: &[String]) {
        let actions = {
            let mut all = self.sessions.lock().unwrap();
            let Some(s) = all.get_mut(session) else {
                return;
            };
            let mut targets: Vec<(String, Target)> =
                s.working.drain().map(|(id, w)| (id, w.target)).collect();
            for (id, d) in s.drafts.drain() {
                if !targets.iter().any(|(t, _)| *t == id) {
                    targets.push((id, d.target));
                }
            }
            for id in stopped {
                s.finish(id);
            }
            targets
                .into_iter()
                .map(|(_, t)| (t.addr, Live::Idle { reply_to: t.key }))
                .collect()
        };
        self.send(actions).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> Target {
        Target {
            addr: Address {
                channel_type: "web".into(),
                platform_id: "owner".into(),
                thread_id: None,
            },
            key: Some("m1".into()),
        }
    }

    fn hub() -> Arc<LiveHub> {
        LiveHub::new(Arc::new(HashMap::new()))
    }

    #[tokio::test]
    async fn pieces_continue_the_draft_or_start_it_over() {
        let h = hub();
        assert_eq!(h.piece("s", "m1:g", target(), 0, "Hel").await, Ok(()));
        assert_eq!(h.piece("s", "m1:g", target(), 3, "lo").await, Ok(()));
        // A lost piece leaves a gap: refused, never shown out of place.
        assert_eq!(
            h.piece("s", "m1:g", target(), 9, "x").await,
            Err(Refusal::Gap)
        );
        assert_eq!(h.piece("s", "m1:g", target(), 0, "Again").await, Ok(()));
        assert_eq!(h.piece("s", "m1:g", target(), 5, "!").await, Ok(()));
        let big = "x".repeat(MAX_DRAFT);
        assert_eq!(
            h.piece("s", "m1:g", target(), 6, &big).await,
            Err(Refusal::TooLong)
        );
    }

    #[tokio::test]
    async fn a_finished_turn_takes_no_more_pieces_and_a_dead_runners_can_stream_again() {
        let h = hub();
        let w = Working {
            id: "m1:g".into(),
            target: target(),
            state: "thinking".into(),
            since_ms: 1,
        };
        h.working("s", vec![w.clone()], Instant::now()).await;
        h.piece("s", "m1:g", target(), 0, "partial").await.unwrap();
        // The runner died: the retry streams again from the start.
        h.gone("s", &[]).await;
        assert_eq!(h.piece("s", "m1:g", target(), 0, "again").await, Ok(()));
        // The turn ends (no claim in flight any more): later pieces are late.
        h.working("s", vec![], Instant::now()).await;
        assert_eq!(
            h.piece("s", "m1:g", target(), 5, " more").await,
            Err(Refusal::Finished)
        );
        // A stopped turn is finished too.
        h.piece("s", "m2:g", target(), 0, "x").await.unwrap();
        h.gone("s", &["m2:g".into()]).await;
        assert_eq!(
            h.piece("s", "m2:g", target(), 0, "y").await,
            Err(Refusal::Finished)
        );
    }

    #[tokio::test]
    async fn a_draft_newer_than_the_pass_is_not_judged_by_it() {
        let h = hub();
        let read_at = Instant::now();
        h.piece("s", "m1:g", target(), 0, "early").await.unwrap();
        // The pass read its rows before the claim it would have seen.
        h.working("s", vec![], read_at).await;
        assert_eq!(h.piece("s", "m1:g", target(), 5, " on").await, Ok(()));
    }

    #[tokio::test]
    async fn pieces_are_rate_limited_per_session() {
        let h = hub();
        let started = Instant::now();
        let tries = 3 * PIECES_PER_MINUTE as usize;
        let taken = (0..tries).filter(|_| h.admit("s").is_ok()).count();
        // A full bucket, then the rate (per second) for the time it took.
        let refill = started.elapsed().as_secs_f64() * f64::from(PIECES_PER_MINUTE) / 60.0;
        assert!(taken < tries, "some were refused");
        assert!(
            (taken as f64) <= f64::from(PIECES_PER_MINUTE) + refill + 1.0,
            "took {taken} in {:?}",
            started.elapsed()
        );
        // Another session has its own budget.
        assert_eq!(h.admit("t"), Ok(()));
    }

    #[tokio::test]
    async fn a_session_has_one_draft_and_a_fast_stream_is_sent_at_a_bounded_rate() {
        let h = hub();
        h.piece("s", "m1:g", target(), 0, "old").await.unwrap();
        h.piece("s", "m2:g", target(), 0, "new").await.unwrap();
        let drafts = h.sessions.lock().unwrap()["s"].drafts.len();
        assert_eq!(drafts, 1, "the old draft ended");
        // 100 pieces at once: the first goes out, the rest wait for the
        // pause and go out together.
        for i in 0..100 {
            let at = h.sessions.lock().unwrap()["s"].drafts["m2:g"].text.len();
            h.piece("s", "m2:g", target(), at, &i.to_string())
                .await
                .unwrap();
        }
        let d = &h.sessions.lock().unwrap()["s"].drafts["m2:g"];
        assert!(d.flush_due, "one send scheduled for the end of the pause");
    }

    #[test]
    fn states_name_the_work_in_printable_words() {
        assert_eq!(state_text(Some("model")), "thinking");
        assert_eq!(state_text(None), "working");
        assert_eq!(state_text(Some("web_fetch")), "running web_fetch");
        let odd = state_text(Some(&format!("a\u{1b}[2J{}", "x".repeat(200))));
        assert!(
            !odd.contains('\u{1b}') && odd.chars().count() <= MAX_STATE + 9,
            "{odd}"
        );
    }
}
