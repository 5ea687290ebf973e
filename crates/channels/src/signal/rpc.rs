//! A JSON-RPC 2.0 client for signal-cli's daemon (signal-cli-jsonrpc(5)):
//! one request or response per line, over a Unix or TCP socket. Requests
//! carry increasing numeric ids; answers may come in any order (signal-cli
//! handles requests concurrently) and are matched by id. Notifications
//! (`receive`) go to the caller's handler, in order.
//!
//! Everything read is bounded: a line longer than [`MAX_LINE`] is skipped
//! whole, at most [`MAX_PENDING`] requests wait for answers, and every
//! call has a deadline.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::oneshot;

use crate::platform::Watchdog;

/// The longest line read (an envelope with its text and attachment list is
/// a few KiB; attachments themselves are files).
pub const MAX_LINE: usize = 1 << 20;
/// Requests waiting for an answer at once.
pub const MAX_PENDING: usize = 256;

/// Where the daemon listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Endpoint {
    Unix(std::path::PathBuf),
    /// `host:port`.
    Tcp(String),
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Unix(p) => write!(f, "{}", p.display()),
            Endpoint::Tcp(a) => write!(f, "tcp {a}"),
        }
    }
}

/// Why a call failed.
#[derive(Clone, Debug, PartialEq)]
pub enum CallError {
    /// The connection is gone or the answer did not come in time.
    Link(String),
    /// signal-cli answered with a JSON-RPC error.
    Rpc { code: i64, message: String },
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Link(m) => f.write_str(m),
            CallError::Rpc { code, message } => write!(f, "signal-cli: {message} ({code})"),
        }
    }
}

type Pending = Mutex<HashMap<u64, oneshot::Sender<Result<Value, CallError>>>>;

/// One connection to the daemon.
pub struct Rpc {
    writer: tokio::sync::Mutex<Box<dyn AsyncWrite + Send + Unpin>>,
    pending: Pending,
    next: AtomicU64,
    alive: AtomicBool,
    gone: tokio::sync::Notify,
    pub watchdog: Watchdog,
}

/// What the reader does with a notification: `(method, params)`.
pub type OnNotify = Box<dyn FnMut(&str, Value) + Send>;

impl Rpc {
    /// Connects within `limit`; `on_notify` gets each notification. The
    /// reader runs until the connection ends or [`Rpc::shut`].
    pub async fn connect(
        at: &Endpoint,
        limit: Duration,
        stall: Duration,
        on_notify: OnNotify,
    ) -> Result<Arc<Rpc>, String> {
        let (r, w): (
            Box<dyn AsyncRead + Send + Unpin>,
            Box<dyn AsyncWrite + Send + Unpin>,
        ) = match at {
            Endpoint::Unix(p) => {
                let s = tokio::time::timeout(limit, tokio::net::UnixStream::connect(p))
                    .await
                    .map_err(|_| format!("connecting to {}: no answer", p.display()))?
                    .map_err(|e| format!("connecting to {}: {e}", p.display()))?;
                let (r, w) = s.into_split();
                (Box::new(r), Box::new(w))
            }
            Endpoint::Tcp(a) => {
                let s = tokio::time::timeout(limit, tokio::net::TcpStream::connect(a.as_str()))
                    .await
                    .map_err(|_| format!("connecting to {a}: no answer"))?
                    .map_err(|e| format!("connecting to {a}: {e}"))?;
                let (r, w) = s.into_split();
                (Box::new(r), Box::new(w))
            }
        };
        let rpc = Arc::new(Rpc {
            writer: tokio::sync::Mutex::new(w),
            pending: Mutex::new(HashMap::new()),
            next: AtomicU64::new(1),
            alive: AtomicBool::new(true),
            gone: tokio::sync::Notify::new(),
            watchdog: Watchdog::new(stall),
        });
        let reader = rpc.clone();
        tokio::spawn(async move { reader.read(r, on_notify).await });
        Ok(rpc)
    }

    pub fn alive(&self) -> bool {
        self.alive.load(Ordering::SeqCst)
    }

    /// Ends the connection: every waiting call fails, the reader stops.
    pub fn shut(&self, why: &str) {
        if self.alive.swap(false, Ordering::SeqCst) {
            tracing::debug!("signal: connection closed: {why}");
        }
        for (_, tx) in self.pending.lock().unwrap().drain() {
            let _ = tx.send(Err(CallError::Link(format!(
                "signal-cli connection lost: {why}"
            ))));
        }
        self.gone.notify_waiters();
    }

    /// Waits until the connection has ended.
    pub async fn closed(&self) {
        loop {
            let n = self.gone.notified();
            if !self.alive() {
                return;
            }
            n.await;
        }
    }

    async fn read(self: Arc<Self>, r: Box<dyn AsyncRead + Send + Unpin>, mut on_notify: OnNotify) {
        let mut r = BufReader::with_capacity(64 << 10, r);
        let mut line = Vec::new();
        let why = loop {
            if !self.alive() {
                break "closed".to_owned();
            }
            let got = tokio::select! {
                got = read_line(&mut r, &mut line) => got,
                _ = self.gone.notified() => break "closed".to_owned(),
            };
            match got {
                Ok(false) => break "signal-cli closed the connection".to_owned(),
                Err(e) => break format!("reading: {e}"),
                Ok(true) => {}
            }
            self.watchdog.progress();
            if line.is_empty() {
                continue;
            }
            let v: Value = match serde_json::from_str(&crate::platform::lossy("signal-cli", &line))
            {
                Ok(v) => v,
                Err(e) => {
                    tracing::warn!("signal: a line from signal-cli is not JSON ({e}); skipped");
                    continue;
                }
            };
            if let Some(method) = v.get("method").and_then(Value::as_str) {
                let params = v.get("params").cloned().unwrap_or(Value::Null);
                on_notify(method, params);
                continue;
            }
            let Some(id) = v.get("id").and_then(Value::as_u64) else {
                tracing::warn!(
                    "signal: signal-cli answered something that is not ours: {}",
                    super::clip(&v.to_string(), 300)
                );
                continue;
            };
            let Some(tx) = self.pending.lock().unwrap().remove(&id) else {
                continue; // answered after its deadline
            };
            let result = match v.get("error") {
                Some(e) if !e.is_null() => Err(CallError::Rpc {
                    code: e.get("code").and_then(Value::as_i64).unwrap_or(0),
                    message: super::clip(
                        e.get("message").and_then(Value::as_str).unwrap_or("error"),
                        500,
                    ),
                }),
                _ => Ok(v.get("result").cloned().unwrap_or(Value::Null)),
            };
            let _ = tx.send(result);
        };
        self.shut(&why);
    }

    /// Calls `method` with `params`, waiting at most `limit` for the answer.
    pub async fn call(
        &self,
        method: &str,
        params: Value,
        limit: Duration,
    ) -> Result<Value, CallError> {
        if !self.alive() {
            return Err(CallError::Link("signal-cli is not connected".into()));
        }
        let id = self.next.fetch_add(1, Ordering::SeqCst);
        let (tx, rx) = oneshot::channel();
        {
            let mut p = self.pending.lock().unwrap();
            if p.len() >= MAX_PENDING {
                return Err(CallError::Link(format!(
                    "{MAX_PENDING} requests to signal-cli are waiting already"
                )));
            }
            p.insert(id, tx);
        }
        let mut body = json!({"jsonrpc": "2.0", "id": id, "method": method});
        if !params.is_null() {
            body["params"] = params;
        }
        let mut bytes = serde_json::to_vec(&body).unwrap_or_default();
        bytes.push(b'\n');
        let out = tokio::time::timeout(limit, async {
            {
                let mut w = self.writer.lock().await;
                w.write_all(&bytes)
                    .await
                    .map_err(|e| CallError::Link(format!("writing to signal-cli: {e}")))?;
                w.flush()
                    .await
                    .map_err(|e| CallError::Link(format!("writing to signal-cli: {e}")))?;
            }
            rx.await
                .unwrap_or_else(|_| Err(CallError::Link("signal-cli connection lost".into())))
        })
        .await;
        match out {
            Ok(r) => {
                if matches!(&r, Err(CallError::Link(_))) {
                    self.shut("a write failed");
                }
                r
            }
            Err(_) => {
                self.pending.lock().unwrap().remove(&id);
                Err(CallError::Link(format!(
                    "signal-cli did not answer {method} within {limit:?}"
                )))
            }
        }
    }
}

/// Reads one line (without its `\n`) into `out`, at most [`MAX_LINE`]
/// bytes: a longer one is skipped to its end and read as empty.
/// `Ok(false)` at the end of the stream.
async fn read_line<R: tokio::io::AsyncBufRead + Unpin>(
    r: &mut R,
    out: &mut Vec<u8>,
) -> std::io::Result<bool> {
    out.clear();
    let mut too_long = false;
    loop {
        let buf = r.fill_buf().await?;
        if buf.is_empty() {
            return Ok(!out.is_empty() || too_long);
        }
        let (chunk, done) = match buf.iter().position(|&b| b == b'\n') {
            Some(i) => (&buf[..i], Some(i + 1)),
            None => (buf, None),
        };
        if !too_long && out.len() + chunk.len() > MAX_LINE {
            too_long = true;
            out.clear();
            tracing::warn!(
                "signal: a line from signal-cli is longer than {MAX_LINE} bytes; skipped"
            );
        }
        if !too_long {
            out.extend_from_slice(chunk);
        }
        let n = done.unwrap_or(buf.len());
        r.consume(n);
        if done.is_some() {
            if too_long {
                out.clear();
            }
            return Ok(true);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn lines_are_bounded_and_a_long_one_is_skipped_whole() {
        let long = vec![b'x'; MAX_LINE + 10];
        let mut input = b"{\"a\":1}\n".to_vec();
        input.extend_from_slice(&long);
        input.extend_from_slice(b"\n{\"b\":2}");
        let mut r = BufReader::with_capacity(4096, &input[..]);
        let mut line = Vec::new();
        assert!(read_line(&mut r, &mut line).await.unwrap());
        assert_eq!(line, b"{\"a\":1}");
        assert!(read_line(&mut r, &mut line).await.unwrap());
        assert!(line.is_empty(), "the long line is dropped");
        assert!(read_line(&mut r, &mut line).await.unwrap());
        assert_eq!(line, b"{\"b\":2}", "the last line without its newline");
        assert!(!read_line(&mut r, &mut line).await.unwrap());
    }

    #[tokio::test]
    async fn answers_in_any_order_match_their_calls_and_a_silent_daemon_times_out() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        let l = tokio::net::UnixListener::bind(&path).unwrap();
        tokio::spawn(async move {
            let (s, _) = l.accept().await.unwrap();
            let (r, mut w) = s.into_split();
            let mut r = BufReader::new(r);
            let mut got = Vec::new();
            for _ in 0..2 {
                let mut l = String::new();
                r.read_line(&mut l).await.unwrap();
                got.push(serde_json::from_str::<Value>(&l).unwrap());
            }
            // Answer the second first, then a notification, then the first.
            for (i, v) in [(1, &got[1]), (0, &got[0])] {
                let a = if v["method"] == "version" {
                    json!({"jsonrpc":"2.0","result":{"version":"0.13.19"},"id":v["id"]})
                } else {
                    json!({"jsonrpc":"2.0","error":{"code":-32602,"message":"Specified account does not exist"},"id":v["id"]})
                };
                w.write_all(format!("{a}\n").as_bytes()).await.unwrap();
                if i == 1 {
                    w.write_all(
                        b"{\"jsonrpc\":\"2.0\",\"method\":\"receive\",\"params\":{\"x\":1}}\n",
                    )
                    .await
                    .unwrap();
                }
            }
            // A third request is never answered.
            let mut l = String::new();
            r.read_line(&mut l).await.unwrap();
            tokio::time::sleep(Duration::from_secs(5)).await;
        });
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s2 = seen.clone();
        let rpc = Rpc::connect(
            &Endpoint::Unix(path),
            Duration::from_secs(5),
            Duration::from_secs(60),
            Box::new(move |m, p| s2.lock().unwrap().push((m.to_owned(), p))),
        )
        .await
        .unwrap();
        let t = Duration::from_secs(5);
        let (a, b) = tokio::join!(
            rpc.call("version", Value::Null, t),
            rpc.call("listGroups", json!({"account": "+1"}), t)
        );
        assert_eq!(a.unwrap()["version"], "0.13.19");
        assert!(matches!(b, Err(CallError::Rpc { code: -32602, .. })));
        assert_eq!(seen.lock().unwrap()[0].0, "receive");
        let e = rpc
            .call("version", Value::Null, Duration::from_millis(200))
            .await
            .unwrap_err();
        assert!(e.to_string().contains("did not answer version"), "{e}");
        assert!(rpc.pending.lock().unwrap().is_empty());
    }
}
