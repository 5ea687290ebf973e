//! A fake model API on loopback: the far side of the credential proxy,
//! which the tests cannot reach for real. It speaks the Anthropic Messages
//! API (`POST /v1/messages`, an SSE stream in a chunked body, errors as a
//! status and a JSON error body), answers each request with the next
//! [`Answer`] of its script — after the script, with a complete answer
//! naming the request's number — and records every request: when it
//! arrived, its head and body, and when the client closed a connection it
//! never answered.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Reads one HTTP/1.1 request (head lines, then a content-length body).
pub fn read_request(c: &TcpStream) -> (String, Vec<u8>) {
    let mut r = BufReader::new(c.try_clone().unwrap());
    let (mut head, mut len) = (String::new(), 0usize);
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
            break;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            len = v.trim().parse().unwrap_or(0);
        }
        head.push_str(&line);
    }
    let mut body = vec![0u8; len];
    let _ = r.read_exact(&mut body);
    (head, body)
}

/// How the fake answers one request.
#[derive(Clone, Debug)]
pub enum Answer {
    /// This status with the API's JSON error body, and `retry-after: N`
    /// when given.
    Status {
        code: u16,
        retry_after_s: Option<u64>,
    },
    /// Reads the request, then says nothing until the client closes.
    Silent,
    /// `200`, the stream's headers and its first events (a text delta
    /// carrying this text), then a close mid-stream: no `message_stop`, no
    /// last chunk.
    Truncated(String),
    /// A complete streamed answer with this text.
    Reply(String),
}

/// One request the fake received.
#[derive(Clone, Debug)]
pub struct Seen {
    /// When the fake had read the request, before it answered: later than
    /// the request was sent (by the fake's own scheduling delay), earlier
    /// than anything the answer caused.
    pub at: Instant,
    pub head: String,
    pub body: String,
    pub answer: Answer,
    /// When the client closed a [`Answer::Silent`] connection.
    pub closed_at: Option<Instant>,
}

/// The fake server; it runs until the test process ends.
pub struct FakeApi {
    pub port: u16,
    script: Arc<Mutex<VecDeque<Answer>>>,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl FakeApi {
    /// Starts a fake that answers with `script`, then [`FakeApi::default_reply`].
    pub fn start(script: Vec<Answer>) -> FakeApi {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let api = FakeApi {
            port,
            script: Arc::new(Mutex::new(script.into())),
            seen: Arc::default(),
        };
        let (script, seen) = (api.script.clone(), api.seen.clone());
        std::thread::spawn(move || {
            for conn in l.incoming() {
                let Ok(c) = conn else { continue };
                let (script, seen) = (script.clone(), seen.clone());
                std::thread::spawn(move || serve(c, &script, &seen));
            }
        });
        api
    }

    /// `http://127.0.0.1:<port>`, the upstream's base URL.
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The text of the complete answer to the `n`th request (from 1) once
    /// the script has run out.
    pub fn default_reply(n: usize) -> String {
        format!("the fake model's answer to request {n}")
    }

    /// Every request so far, oldest first.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    pub fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    /// Waits until `n` requests have arrived (a panic after `timeout`);
    /// returns them all.
    pub fn wait_for_requests(&self, n: usize, timeout: Duration) -> Vec<Seen> {
        super::wait_for(&format!("{n} requests at the fake API"), timeout, || {
            self.count() >= n
        });
        self.seen()
    }
}

fn serve(mut c: TcpStream, script: &Mutex<VecDeque<Answer>>, seen: &Mutex<Vec<Seen>>) {
    let (head, body) = read_request(&c);
    let at = Instant::now();
    // The script is consumed in arrival order: numbered under the lock.
    let (n, answer) = {
        let mut seen = seen.lock().unwrap();
        let answer = script
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or_else(|| Answer::Reply(FakeApi::default_reply(seen.len() + 1)));
        seen.push(Seen {
            at,
            head,
            body: String::from_utf8_lossy(&body).into_owned(),
            answer: answer.clone(),
            closed_at: None,
        });
        (seen.len(), answer)
    };
    match answer {
        Answer::Status {
            code,
            retry_after_s,
        } => {
            let kind = match code {
                429 => "rate_limit_error",
                529 => "overloaded_error",
                _ => "api_error",
            };
            let body = serde_json::json!({"type": "error", "error": {"type": kind, "message": format!("fake {code}")}}).to_string();
            let ra = retry_after_s
                .map(|s| format!("retry-after: {s}\r\n"))
                .unwrap_or_default();
            let _ = write!(c, "HTTP/1.1 {code} Fake\r\ncontent-type: application/json\r\ncontent-length: {}\r\n{ra}connection: close\r\n\r\n{body}", body.len());
        }
        Answer::Silent => {
            // Nothing is sent; a read returns when the client gives up.
            let mut buf = [0u8; 256];
            while matches!(c.read(&mut buf), Ok(n) if n > 0) {}
            seen.lock().unwrap()[n - 1].closed_at = Some(Instant::now());
        }
        Answer::Truncated(text) => {
            let _ = write!(c, "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n");
            for e in [
                serde_json::json!({"type": "message_start", "message": {"usage": {"input_tokens": 10, "output_tokens": 1}}}),
                serde_json::json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
                serde_json::json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": text}}),
            ] {
                chunk(&mut c, &e);
            }
            // Then the connection closes: no message_stop, no `0` chunk.
        }
        Answer::Reply(text) => {
            let _ = write!(c, "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n");
            for e in [
                serde_json::json!({"type": "message_start", "message": {"usage": {"input_tokens": 10, "output_tokens": 1}}}),
                serde_json::json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
                serde_json::json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": text}}),
                serde_json::json!({"type": "content_block_stop", "index": 0}),
                serde_json::json!({"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 5}}),
                serde_json::json!({"type": "message_stop"}),
            ] {
                chunk(&mut c, &e);
            }
            let _ = c.write_all(b"0\r\n\r\n");
        }
    }
}

/// One SSE event as one chunk of a chunked body.
fn chunk(c: &mut TcpStream, e: &serde_json::Value) {
    let ev = format!(
        "event: {}\ndata: {e}\n\n",
        e["type"].as_str().unwrap_or("x")
    );
    let _ = write!(c, "{:x}\r\n{ev}\r\n", ev.len());
    let _ = c.flush();
}
