//! Streamed reply text (decision 0048): the model's text deltas go to the
//! host as they arrive, on a path apart from `messages_out` — a POST of
//! `{"reply_to", "at", "text"}` to `/_pinch/stream` on the session's proxy
//! socket — so channels can show the reply while it is written. Advisory
//! and lossy: nothing waits for it, a failed POST is dropped, and the final
//! reply row stays the only reply. A thread does the POSTs, so the
//! provider's read loop never waits on the host; text that arrives while a
//! POST is in flight goes in the next one (natural batching).

use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// The host's route on the proxy socket.
pub const STREAM_PATH: &str = "/_pinch/stream";
/// A POST the host has not answered in this long is given up (the text
/// goes in the next one).
const POST_TIMEOUT: Duration = Duration::from_secs(2);
/// After this many failed POSTs in a row the turn's draft is left alone.
const MAX_FAILURES: u32 = 3;
/// The host shows at most this much of a draft; more is not sent.
pub const MAX_DRAFT: usize = 64 * 1024;
/// The most text one POST carries (the rest goes in the next).
const MAX_PIECE: usize = 16 * 1024;

#[derive(Default)]
struct Draft {
    /// The inbound message the reply answers (`messages_in.id`).
    reply_to: String,
    /// Bumped at each provider call: the host's draft starts over.
    generation: u64,
    text: String,
    /// Bytes of `text` the host has.
    sent: usize,
    failures: u32,
    stop: bool,
}

/// The sending side, owned by the runner.
pub struct Streamer {
    shared: Arc<(Mutex<Draft>, Condvar)>,
}

impl Streamer {
    /// Starts the sending thread; `None` without a proxy socket.
    pub fn start(socket: Option<PathBuf>) -> Option<Streamer> {
        let socket = socket?;
        let shared = Arc::new((Mutex::new(Draft::default()), Condvar::new()));
        let s = shared.clone();
        std::thread::Builder::new()
            .name("stream".into())
            .spawn(move || send_loop(&socket, &s))
            .ok()?;
        Some(Streamer { shared })
    }

    /// A provider call for the reply to `reply_to` starts: its text
    /// replaces the draft.
    pub fn begin(&self, reply_to: &str) {
        let mut d = self.shared.0.lock().unwrap();
        d.generation += 1;
        d.reply_to = reply_to.to_owned();
        d.text.clear();
        d.sent = 0;
        d.failures = 0;
    }

    /// The model wrote `delta`.
    pub fn push(&self, delta: &str) {
        let mut d = self.shared.0.lock().unwrap();
        if d.reply_to.is_empty() || d.text.len() + delta.len() > MAX_DRAFT {
            return;
        }
        d.text.push_str(delta);
        self.shared.1.notify_one();
    }
}

impl Drop for Streamer {
    fn drop(&mut self) {
        self.shared.0.lock().unwrap().stop = true;
        self.shared.1.notify_one();
    }
}

fn send_loop(socket: &std::path::Path, shared: &(Mutex<Draft>, Condvar)) {
    let (lock, cv) = shared;
    loop {
        let (generation, body, upto) = {
            let mut d = lock.lock().unwrap();
            while !d.stop && (d.text.len() <= d.sent || d.failures >= MAX_FAILURES) {
                d = cv.wait(d).unwrap();
            }
            if d.stop {
                return;
            }
            let mut end = d.text.len().min(d.sent + MAX_PIECE);
            while !d.text.is_char_boundary(end) {
                end -= 1;
            }
            let body = serde_json::json!({
                "reply_to": d.reply_to, "at": d.sent, "text": &d.text[d.sent..end],
            })
            .to_string();
            (d.generation, body, end)
        };
        let ok = match pinch_providers::http::post(socket, STREAM_PATH, &[], &body, POST_TIMEOUT) {
            Ok(r) => r.status == 204 || r.status == 200,
            Err(_) => false,
        };
        let mut d = lock.lock().unwrap();
        if d.generation != generation {
            continue; // a new call started meanwhile: its text starts at 0
        }
        if ok {
            d.sent = upto;
            d.failures = 0;
        } else {
            d.failures += 1;
            if d.failures == MAX_FAILURES {
                tracing::debug!("the host took no streamed text {MAX_FAILURES} times; this call's draft is left alone");
            }
        }
    }
}
