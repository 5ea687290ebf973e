//! A fake signal-cli daemon: JSON-RPC 2.0 over a real Unix socket, one JSON
//! object per line, as signal-cli-jsonrpc(5) documents it and signal-cli
//! 0.13 answers (checked against the real program: answers in any order,
//! `-32602 "Specified account does not exist"` for an account it does not
//! have, `-32601` for an unknown method, `receive` notifications wrapped in
//! `{"subscription", "result"}` after `subscribeReceive`). Every request is
//! recorded; envelopes pushed while nobody is subscribed wait, as Signal's
//! server keeps them for a daemon in `--receive-mode manual`.
//!
//! And a fake `signal-cli` program: a Python relay that opens the
//! `--socket` pinch gives it and forwards each connection to the fake
//! daemon, recording its pid and arguments, so a test can see pinch start
//! it, kill it, and see pinch start it again.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;

use super::platform::Calls;

pub struct FakeSignal {
    pub account: String,
    pub socket: PathBuf,
    pub calls: Arc<Calls>,
    state: Arc<State>,
    rt: tokio::runtime::Runtime,
    server: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

#[derive(Default)]
struct State {
    linked: AtomicBool,
    next_ts: AtomicU64,
    /// Subscribed connections' writers.
    subs: Mutex<Vec<mpsc::UnboundedSender<String>>>,
    /// Envelopes waiting for a subscriber.
    held: Mutex<Vec<Value>>,
    /// Every connection's writer (to close them all).
    conns: Mutex<Vec<mpsc::UnboundedSender<String>>>,
}

/// The line that ends a connection's writer.
const CLOSE: &str = "\u{0}close";

impl FakeSignal {
    /// A daemon for `account` (linked or not) on `dir/fake-signal.sock`.
    pub fn start(dir: &Path, account: &str, linked: bool) -> FakeSignal {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let state = Arc::new(State::default());
        state.linked.store(linked, Ordering::SeqCst);
        state.next_ts.store(1_700_000_100_000, Ordering::SeqCst);
        let f = FakeSignal {
            account: account.to_owned(),
            socket: dir.join("fake-signal.sock"),
            calls: Arc::new(Calls::default()),
            state,
            rt,
            server: Mutex::new(None),
        };
        f.listen();
        f
    }

    /// Starts listening (again).
    pub fn listen(&self) {
        let _ = std::fs::remove_file(&self.socket);
        let l = self
            .rt
            .block_on(async { tokio::net::UnixListener::bind(&self.socket) })
            .unwrap();
        let (calls, state, account) =
            (self.calls.clone(), self.state.clone(), self.account.clone());
        let h = self.rt.spawn(async move {
            loop {
                let Ok((s, _)) = l.accept().await else { return };
                let (calls, state, account) = (calls.clone(), state.clone(), account.clone());
                tokio::spawn(async move { serve(s, calls, state, account).await });
            }
        });
        *self.server.lock().unwrap() = Some(h);
    }

    /// The daemon dies: the socket goes, every connection is closed.
    pub fn die(&self) {
        if let Some(h) = self.server.lock().unwrap().take() {
            h.abort();
        }
        let _ = std::fs::remove_file(&self.socket);
        for c in self.state.conns.lock().unwrap().drain(..) {
            let _ = c.send(CLOSE.into());
        }
        self.state.subs.lock().unwrap().clear();
    }

    /// Signal delivers `envelope` to the account (now if a client is
    /// subscribed, else when one subscribes).
    pub fn push(&self, envelope: Value) {
        let subs = self.state.subs.lock().unwrap();
        if subs.is_empty() {
            self.state.held.lock().unwrap().push(envelope);
            return;
        }
        let line = notification(&self.account, &envelope);
        for s in subs.iter() {
            let _ = s.send(line.clone());
        }
    }

    /// Whether some client is subscribed now.
    pub fn subscribed(&self) -> bool {
        !self.state.subs.lock().unwrap().is_empty()
    }

    pub fn linked(&self) -> bool {
        self.state.linked.load(Ordering::SeqCst)
    }

    /// The params of every call to `method`, in order.
    pub fn params(&self, method: &str) -> Vec<Value> {
        self.calls.bodies(method)
    }
}

fn notification(account: &str, envelope: &Value) -> String {
    json!({"jsonrpc": "2.0", "method": "receive",
        "params": {"subscription": 0, "result": {"envelope": envelope, "account": account}}})
    .to_string()
}

async fn serve(s: tokio::net::UnixStream, calls: Arc<Calls>, state: Arc<State>, account: String) {
    let (r, mut w) = s.into_split();
    let (tx, mut rx) = mpsc::unbounded_channel::<String>();
    state.conns.lock().unwrap().push(tx.clone());
    tokio::spawn(async move {
        while let Some(l) = rx.recv().await {
            if l == CLOSE || w.write_all(format!("{l}\n").as_bytes()).await.is_err() {
                let _ = w.shutdown().await;
                return;
            }
        }
    });
    let mut lines = BufReader::new(r).lines();
    while let Ok(Some(l)) = lines.next_line().await {
        let Ok(v) = serde_json::from_str::<Value>(&l) else {
            let _ = tx.send(json!({"jsonrpc":"2.0","error":{"code":-32700,"message":"Unrecognized token","data":null},"id":null}).to_string());
            continue;
        };
        let method = v["method"].as_str().unwrap_or_default().to_owned();
        let params = v.get("params").cloned().unwrap_or(Value::Null);
        // signal-cli reads the files during the send (pinch removes them
        // after): the record keeps what they held.
        let mut recorded = params.clone();
        if let Some(paths) = params.get("attachments").and_then(Value::as_array) {
            recorded["contents"] = paths
                .iter()
                .map(|p| {
                    std::fs::read_to_string(p.as_str().unwrap_or_default())
                        .unwrap_or_else(|e| format!("<unreadable: {e}>"))
                })
                .collect();
        }
        let linked = state.linked.load(Ordering::SeqCst);
        let for_account = params.get("account").and_then(Value::as_str);
        let no_account = for_account.is_some_and(|a| a != account || !linked);
        let ts = || state.next_ts.fetch_add(1, Ordering::SeqCst);
        let answer: Result<Value, (i64, &str)> = match method.as_str() {
            "version" => Ok(json!({"version": "0.13.19"})),
            "listAccounts" => Ok(if linked {
                json!([{"number": account}])
            } else {
                json!([])
            }),
            _ if no_account => Err((-32602, "Specified account does not exist")),
            "subscribeReceive" => Ok(json!(0)),
            "send" => {
                let to = params.get("recipient").cloned().unwrap_or(Value::Null);
                Ok(
                    json!({"timestamp": ts(), "results": [{"recipientAddress": {"number": to.get(0)}, "type": "SUCCESS"}]}),
                )
            }
            "sendReaction" | "sendTyping" | "sendReceipt" => {
                Ok(json!({"timestamp": ts(), "results": []}))
            }
            "listGroups" => Ok(json!([])),
            "startLink" => Ok(
                json!({"deviceLinkUri": "sgnl://linkdevice?uuid=Fake-Uuid_0123&pub_key=BcdEfg%2Bhij"}),
            ),
            "finishLink" => {
                state.linked.store(true, Ordering::SeqCst);
                Ok(json!({"number": account}))
            }
            _ => Err((-32601, "Method not implemented")),
        };
        if method == "send" {
            if let Ok(r) = &answer {
                recorded["_timestamp"] = r["timestamp"].clone();
            }
        }
        calls.push(method.as_str(), recorded);
        let id = v.get("id").cloned().unwrap_or(Value::Null);
        let line = match answer {
            Ok(r) => json!({"jsonrpc": "2.0", "result": r, "id": id}),
            Err((code, m)) => {
                json!({"jsonrpc": "2.0", "error": {"code": code, "message": m, "data": null}, "id": id})
            }
        };
        let _ = tx.send(line.to_string());
        if method == "subscribeReceive" && !no_account {
            state.subs.lock().unwrap().push(tx.clone());
            for e in state.held.lock().unwrap().drain(..) {
                let _ = tx.send(notification(&account, &e));
            }
        }
    }
    state.subs.lock().unwrap().retain(|s| !s.same_channel(&tx));
}

/// Writes the fake `signal-cli` program into `dir`: it records `<pid>
/// <args>` in `dir/fake-signal-cli.runs`, opens the `--socket` it is given
/// and relays each connection to `upstream`.
pub fn fake_program(dir: &Path, upstream: &Path) -> PathBuf {
    let exe = dir.join("signal-cli");
    let runs = dir.join("fake-signal-cli.runs");
    std::fs::write(
        &exe,
        format!(
            r#"#!/usr/bin/env python3
import os, socket, sys, threading
args = sys.argv[1:]
with open({runs:?}, "a") as f:
    f.write(str(os.getpid()) + " " + " ".join(args) + "\n")
path = args[args.index("--socket") + 1]
try:
    os.unlink(path)
except FileNotFoundError:
    pass
srv = socket.socket(socket.AF_UNIX)
srv.bind(path)
srv.listen(8)
print("INFO  SocketHandler - Started JSON-RPC server on " + path, file=sys.stderr, flush=True)
def pipe(a, b):
    try:
        while True:
            d = a.recv(65536)
            if not d:
                break
            b.sendall(d)
    except OSError:
        pass
    for s in (a, b):
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
while True:
    c, _ = srv.accept()
    u = socket.socket(socket.AF_UNIX)
    u.connect({upstream:?})
    threading.Thread(target=pipe, args=(c, u), daemon=True).start()
    threading.Thread(target=pipe, args=(u, c), daemon=True).start()
"#,
            runs = runs.to_str().unwrap(),
            upstream = upstream.to_str().unwrap(),
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
    exe
}

/// The fake program's runs so far: (pid, arguments).
pub fn runs(dir: &Path) -> Vec<(i32, String)> {
    std::fs::read_to_string(dir.join("fake-signal-cli.runs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let (pid, args) = l.split_once(' ')?;
            Some((pid.parse().ok()?, args.to_owned()))
        })
        .collect()
}
