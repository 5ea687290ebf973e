//! The admin socket (`run/admin.sock`, 0600; SPEC §10): one JSON line in,
//! one JSON line out per connection. Requests are handed to the main loop,
//! which alone touches the central DB.
//!
//! Each connection's peer is checked with `SO_PEERCRED`
//! ([`pinch_channels::peer`]): the host's uid (or root) and the host's own
//! pid, net and mount namespaces, so no sandboxed process is served.
//!
//! Request: `{"id": "...", "command": "<resource>-<verb>", "args": {...}}`.
//! Response: `{"id", "ok": true, "data": ...}` or
//! `{"id", "ok": false, "error": {"code", "message"}}`.
//! This first version serves `sessions-list`, `sessions-get`,
//! `sessions-resume` and `host-status`; the full resource set comes with the
//! admin work.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixListener;
use tokio::sync::{mpsc, oneshot};

#[derive(Debug, Deserialize)]
pub struct Request {
    #[serde(default)]
    pub id: Value,
    pub command: String,
    #[serde(default)]
    pub args: Value,
}

#[derive(Debug, Serialize)]
pub struct ErrorBody {
    pub code: &'static str,
    pub message: String,
}

pub type Reply = Result<Value, ErrorBody>;

pub fn err(code: &'static str, message: impl Into<String>) -> ErrorBody {
    ErrorBody {
        code,
        message: message.into(),
    }
}

/// Binds the socket and forwards each request to `tx`.
pub fn serve(
    path: &Path,
    tx: mpsc::UnboundedSender<(Request, oneshot::Sender<Reply>)>,
) -> std::io::Result<()> {
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                format!("{} is in use", path.display()),
            ));
        }
        std::fs::remove_file(path)?;
    }
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    tokio::spawn(async move {
        loop {
            let stream = match listener.accept().await {
                Ok((s, _)) => s,
                Err(e) => {
                    // Out of fds: wait instead of spinning on the error.
                    tracing::warn!("admin socket accept failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            };
            // The kernel's account of the peer, not the path it used: an
            // agent that reached this socket is still refused (issue 14).
            if let Err(e) = pinch_channels::peer::check_stream(&stream) {
                tracing::warn!("admin socket: refused a connection: {e}");
                let mut s = stream;
                let msg = serde_json::json!({"id": null, "ok": false, "error": {"code": "forbidden", "message": format!("the admin socket serves the owner's own processes only: {e}")}});
                let _ = s.write_all(format!("{msg}\n").as_bytes()).await;
                continue;
            }
            let tx = tx.clone();
            tokio::spawn(async move {
                let (r, mut w) = stream.into_split();
                let mut line = String::new();
                let mut r = BufReader::new(r).take(1 << 20);
                if r.read_line(&mut line).await.is_err() {
                    return;
                }
                let out = match serde_json::from_str::<Request>(line.trim()) {
                    Err(e) => {
                        serde_json::json!({"id": null, "ok": false, "error": {"code": "invalid-args", "message": format!("not a request ({e}); send {{\"id\":…,\"command\":\"sessions-list\",\"args\":{{}}}}")}})
                    }
                    Ok(req) => {
                        let id = req.id.clone();
                        let (otx, orx) = oneshot::channel();
                        if tx.send((req, otx)).is_err() {
                            serde_json::json!({"id": id, "ok": false, "error": {"code": "transport-error", "message": "the host is shutting down"}})
                        } else {
                            match orx.await {
                                Ok(Ok(data)) => {
                                    serde_json::json!({"id": id, "ok": true, "data": data})
                                }
                                Ok(Err(e)) => {
                                    serde_json::json!({"id": id, "ok": false, "error": e})
                                }
                                Err(_) => {
                                    serde_json::json!({"id": id, "ok": false, "error": {"code": "transport-error", "message": "the host dropped the request"}})
                                }
                            }
                        }
                    }
                };
                let mut s = out.to_string();
                s.push('\n');
                let _ = w.write_all(s.as_bytes()).await;
            });
        }
    });
    Ok(())
}
