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
use std::time::Instant;

use pinch_channels::{Address, Live};
use pinch_policy::rate::Bucket;

/// The channels by type (the host's table; spelt out here so the live
/// view does not depend on delivery, which depends on it).
type Channels = HashMap<String, Arc<dyn pinch_channels::Channel>>;

/// The most of one reply's draft the host keeps and shows.
pub const MAX_DRAFT: usize = 256 * 1024;
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

    /// A streamed piece of the reply to the inbound row `id` (whose
    /// conversation is `target`): `text` at byte `at` of the draft (`0`
    /// starts it over).
    pub async fn piece(
        &self,
        session: &str,
        id: &str,
        target: Target,
        at: usize,
        text: &str,
    ) -> Result<(), Refusal> {
        let action = {
            let mut all = self.sessions.lock().unwrap();
            let s = all.entry(session.to_owned()).or_default();
            if s.finished.iter().any(|f| f == id) {
                return Err(Refusal::Finished);
            }
            let now_ms = self.epoch.elapsed().as_millis() as i64;
            s.bucket
                .get_or_insert_with(|| Bucket::new(PIECES_PER_MINUTE, now_ms))
                .take(now_ms)
                .map_err(|_| Refusal::TooFast)?;
            let d = s.drafts.entry(id.to_owned()).or_insert_with(|| Draft {
                target: target.clone(),
                text: String::new(),
                started: Instant::now(),
            });
            let same = if at == 0 {
                d.text.clear();
                0
            } else if at == d.text.len() {
                at
            } else {
                return Err(Refusal::Gap);
            };
            if same + text.len() > MAX_DRAFT {
                return Err(Refusal::TooLong);
            }
            d.text.push_str(text);
            (
                d.target.addr.clone(),
                Live::Draft {
                    reply_to: d.target.key.clone(),
                    text: Arc::from(d.text.as_str()),
                    same,
                },
            )
        };
        self.send(vec![action]).await;
        Ok(())
    }

    /// The turns a delivery pass saw in flight (read at `read_at`): new or
    /// changed ones are told `Working`; the ones gone are over (`Idle`,
    /// their drafts dropped, later pieces refused). A draft that started
    /// after the pass read its rows is not judged by it.
    pub async fn working(&self, session: &str, now: Vec<Working>, read_at: Instant) {
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
            let in_flight = |id: &str| now.iter().any(|w| w.id == id);
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

    /// Forgets a session (closed or deleted).
    pub fn forget(&self, session: &str) {
        self.sessions.lock().unwrap().remove(session);
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
        let mut taken = 0;
        for i in 0..tries {
            if h.piece("s", "m1:g", target(), 0, &i.to_string())
                .await
                .is_ok()
            {
                taken += 1;
            }
        }
        // A full bucket, then the rate (per second) for the time it took.
        let refill = started.elapsed().as_secs_f64() * f64::from(PIECES_PER_MINUTE) / 60.0;
        assert!(taken < tries, "some were refused");
        assert!(
            (taken as f64) <= f64::from(PIECES_PER_MINUTE) + refill + 1.0,
            "took {taken} in {:?}",
            started.elapsed()
        );
        // Another session has its own budget.
        assert_eq!(h.piece("t", "m1:g", target(), 0, "x").await, Ok(()));
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
