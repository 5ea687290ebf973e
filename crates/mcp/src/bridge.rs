//! The runner ↔ `pinch runner mcp` link (SPEC §5.5, CLI engine).
//!
//! An external agent CLI in the sandbox starts `pinch runner mcp --socket
//! PATH` as its MCP server; that process owns no tools, it forwards each
//! request over a Unix socket (in a tmpfs/run dir) to the runner, which runs
//! its tool registry. Wire format: one JSON object per line each way.
//!
//! ```text
//! → {"op":"list"}                                ← {"tools":[ToolSpec…],"instructions":"…"|null}
//! → {"op":"call","name":"…","args":{…}}          ← {"content":"…","is_error":false}
//! anything else                                   ← {"error":"…"}
//! ```
//!
//! Requests on one connection are answered in order; connections are served
//! concurrently, tool calls one at a time (the handler sits behind a mutex).

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use pinch_providers::ToolSpec;
use serde::{Deserialize, Serialize};

use crate::{Handler, McpError};

/// Longest request line accepted (arguments are model output, not files).
const MAX_LINE: u64 = 8 * 1024 * 1024;

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
enum Request {
    List,
    Call {
        name: String,
        #[serde(default)]
        args: serde_json::Value,
    },
}

/// An answer. On the wire its keys say which it is (see the module docs):
/// `tools` (with `instructions`), `content` with `is_error`, or `error`.
#[derive(Debug)]
enum Response {
    Tools {
        tools: Vec<ToolSpec>,
        instructions: Option<String>,
    },
    Result {
        content: String,
        is_error: bool,
    },
    Error {
        error: String,
    },
}

impl Serialize for Response {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        match self {
            Response::Tools {
                tools,
                instructions,
            } => {
                let mut m = s.serialize_map(Some(2))?;
                m.serialize_entry("tools", tools)?;
                m.serialize_entry("instructions", instructions)?;
                m.end()
            }
            Response::Result { content, is_error } => {
                let mut m = s.serialize_map(Some(2))?;
                m.serialize_entry("content", content)?;
                m.serialize_entry("is_error", is_error)?;
                m.end()
            }
            Response::Error { error } => {
                let mut m = s.serialize_map(Some(1))?;
                m.serialize_entry("error", error)?;
                m.end()
            }
        }
    }
}

/// Every key an answer may have; which are present decides the kind.
#[derive(Deserialize)]
struct WireResponse {
    tools: Option<Vec<ToolSpec>>,
    #[serde(default)]
    instructions: Option<String>,
    content: Option<String>,
    is_error: Option<bool>,
    error: Option<String>,
}

impl<'de> Deserialize<'de> for Response {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let w = WireResponse::deserialize(d)?;
        match w {
            WireResponse {
                tools: Some(tools),
                instructions,
                ..
            } => Ok(Response::Tools {
                tools,
                instructions,
            }),
            WireResponse {
                content: Some(content),
                is_error: Some(is_error),
                ..
            } => Ok(Response::Result { content, is_error }),
            WireResponse {
                error: Some(error), ..
            } => Ok(Response::Error { error }),
            _ => Err(serde::de::Error::custom(
                "an answer needs `tools` (a list), `content` with `is_error`, or `error`",
            )),
        }
    }
}

struct Shared {
    tools: Vec<ToolSpec>,
    instructions: Option<String>,
    handler: Mutex<Handler>,
}

/// The runner's end: listens on a Unix socket (mode 0600) and answers
/// `list` and `call` on background threads until dropped, which stops
/// accepting and removes the socket file.
pub struct BridgeServer {
    path: PathBuf,
    /// A handle on the listening socket, shut down on drop to end `accept`
    /// (works even if the socket file was removed meanwhile).
    listener: UnixListener,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl BridgeServer {
    /// Binds `path` (a stale socket there is replaced; any other file is
    /// an error) and starts serving `tools` with `handler`.
    pub fn start(
        path: &Path,
        tools: Vec<ToolSpec>,
        instructions: Option<String>,
        handler: Handler,
    ) -> Result<BridgeServer, McpError> {
        match std::fs::symlink_metadata(path) {
            Ok(m) if m.file_type().is_socket() => std::fs::remove_file(path).map_err(|e| {
                McpError::Bridge(format!("removing the stale socket {}: {e}", path.display()))
            })?,
            Ok(_) => {
                return Err(McpError::Bridge(format!(
                    "{} exists and is not a socket; choose another path",
                    path.display()
                )))
            }
            Err(_) => {}
        }
        let listener = UnixListener::bind(path)
            .map_err(|e| McpError::Bridge(format!("binding {}: {e}", path.display())))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| McpError::Bridge(format!("restricting {}: {e}", path.display())))?;
        let handle = listener
            .try_clone()
            .map_err(|e| McpError::Bridge(format!("cloning the listener: {e}")))?;
        let shared = Arc::new(Shared {
            tools,
            instructions,
            handler: Mutex::new(handler),
        });
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let thread = std::thread::Builder::new()
            .name("mcp-bridge".into())
            .spawn(move || {
                for conn in listener.incoming() {
                    if stop2.load(Ordering::SeqCst) {
                        break;
                    }
                    match conn {
                        Ok(s) => {
                            let shared = shared.clone();
                            let _ = std::thread::Builder::new()
                                .name("mcp-bridge-conn".into())
                                .spawn(move || serve_conn(s, &shared));
                        }
                        Err(e) => {
                            tracing::warn!("mcp bridge accept failed: {e}");
                            std::thread::sleep(std::time::Duration::from_millis(50));
                        }
                    }
                }
            })
            .map_err(|e| McpError::Bridge(format!("starting the bridge thread: {e}")))?;
        tracing::info!(socket = %path.display(), "mcp bridge listening");
        Ok(BridgeServer {
            path: path.to_owned(),
            listener: handle,
            stop,
            thread: Some(thread),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for BridgeServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag: on Linux, shutting a
        // listening socket down fails a blocked accept(2) at once.
        // SAFETY: shutdown(2) on a socket fd we own; no memory involved.
        unsafe {
            libc::shutdown(
                std::os::fd::AsRawFd::as_raw_fd(&self.listener),
                libc::SHUT_RDWR,
            );
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

fn serve_conn(stream: UnixStream, shared: &Shared) {
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream);
    loop {
        let mut line = String::new();
        match (&mut reader).take(MAX_LINE).read_line(&mut line) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) => {
                tracing::debug!("mcp bridge read failed: {e}");
                return;
            }
        }
        if !line.ends_with('\n') && line.len() as u64 >= MAX_LINE {
            let _ = write_line(
                &mut writer,
                &Response::Error {
                    error: format!("request longer than {MAX_LINE} bytes"),
                },
            );
            return;
        }
        let resp = match serde_json::from_str::<Request>(line.trim()) {
            Ok(Request::List) => Response::Tools { tools: shared.tools.clone(), instructions: shared.instructions.clone() },
            Ok(Request::Call { name, args }) => {
                if !shared.tools.iter().any(|t| t.name == name) {
                    Response::Error { error: format!("no tool named {name:?}") }
                } else {
                    let args = if args.is_null() { "{}".to_owned() } else { args.to_string() };
                    let mut h = shared.handler.lock().unwrap_or_else(|e| e.into_inner());
                    let (content, is_error) = (h)(&name, &args);
                    Response::Result { content, is_error }
                }
            }
            Err(e) => Response::Error { error: format!("bad request ({e}); expected {{\"op\":\"list\"}} or {{\"op\":\"call\",\"name\":…,\"args\":{{…}}}}") },
        };
        if write_line(&mut writer, &resp).is_err() {
            return;
        }
    }
}

fn write_line<T: Serialize>(w: &mut UnixStream, v: &T) -> std::io::Result<()> {
    let mut s = serde_json::to_string(v).map_err(std::io::Error::other)?;
    s.push('\n');
    w.write_all(s.as_bytes())?;
    w.flush()
}

/// The `pinch runner mcp` end: one connection, blocking requests.
pub struct BridgeClient {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl BridgeClient {
    pub fn connect(path: &Path) -> Result<BridgeClient, McpError> {
        let s = UnixStream::connect(path).map_err(|e| {
            McpError::Bridge(format!(
                "connecting to the runner's tool socket {}: {e} (is the runner running?)",
                path.display()
            ))
        })?;
        let writer = s.try_clone().map_err(|e| McpError::Bridge(e.to_string()))?;
        Ok(BridgeClient {
            reader: BufReader::new(s),
            writer,
        })
    }

    fn request(&mut self, req: &Request) -> Result<Response, McpError> {
        write_line(&mut self.writer, req)
            .map_err(|e| McpError::Bridge(format!("sending to the runner: {e}")))?;
        let mut line = String::new();
        let n = self
            .reader
            .read_line(&mut line)
            .map_err(|e| McpError::Bridge(format!("reading from the runner: {e}")))?;
        if n == 0 {
            return Err(McpError::Bridge("the runner closed the tool socket".into()));
        }
        serde_json::from_str(&line)
            .map_err(|e| McpError::Bridge(format!("bad answer from the runner: {e}")))
    }

    /// The tools the runner offers, and instructions for them.
    pub fn list(&mut self) -> Result<(Vec<ToolSpec>, Option<String>), McpError> {
        match self.request(&Request::List)? {
            Response::Tools {
                tools,
                instructions,
            } => Ok((tools, instructions)),
            Response::Error { error } => Err(McpError::Bridge(error)),
            other => Err(McpError::Bridge(format!(
                "unexpected answer to list: {other:?}"
            ))),
        }
    }

    /// Runs one tool in the runner: `(content, is_error)`.
    pub fn call(&mut self, name: &str, args_json: &str) -> Result<(String, bool), McpError> {
        let args: serde_json::Value = if args_json.trim().is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_str(args_json).map_err(|e| McpError::BadArguments {
                tool: name.into(),
                detail: e.to_string(),
            })?
        };
        match self.request(&Request::Call {
            name: name.into(),
            args,
        })? {
            Response::Result { content, is_error } => Ok((content, is_error)),
            Response::Error { error } => Err(McpError::Bridge(error)),
            other => Err(McpError::Bridge(format!(
                "unexpected answer to call: {other:?}"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str) -> ToolSpec {
        ToolSpec {
            name: name.into(),
            description: format!("{name} tool"),
            parameters: serde_json::json!({"type": "object"}),
        }
    }

    /// The answers' wire shapes (module docs), both ways.
    #[test]
    fn answers_on_the_wire() {
        let spec_json = r#"{"name":"t","description":"t tool","parameters":{"type":"object"}}"#;
        for (answer, wire) in [
            (
                Response::Tools {
                    tools: vec![spec("t")],
                    instructions: None,
                },
                format!(r#"{{"tools":[{spec_json}],"instructions":null}}"#),
            ),
            (
                Response::Tools {
                    tools: vec![],
                    instructions: Some("use t".into()),
                },
                r#"{"tools":[],"instructions":"use t"}"#.to_owned(),
            ),
            (
                Response::Result {
                    content: "ok".into(),
                    is_error: true,
                },
                r#"{"content":"ok","is_error":true}"#.to_owned(),
            ),
            (
                Response::Error { error: "no".into() },
                r#"{"error":"no"}"#.to_owned(),
            ),
        ] {
            assert_eq!(serde_json::to_string(&answer).unwrap(), wire);
            let back: Response = serde_json::from_str(&wire).unwrap();
            assert_eq!(format!("{back:?}"), format!("{answer:?}"), "{wire}");
        }
        // `instructions` may be left out; unknown keys are ignored.
        let r: Response = serde_json::from_str(r#"{"tools":[],"extra":1}"#).unwrap();
        assert!(matches!(
            r,
            Response::Tools {
                instructions: None,
                ..
            }
        ));
        for bad in [r#"{"content":"x"}"#, r#"{}"#, r#"{"is_error":false}"#] {
            let e = serde_json::from_str::<Response>(bad)
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("`content` with `is_error`, or `error`"),
                "{bad}: {e}"
            );
        }
        let e = serde_json::from_str::<Response>(r#"{"tools":5}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("invalid type: integer `5`"), "{e}");
    }

    #[test]
    fn list_call_errors_and_cleanup_over_a_real_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tools.sock");
        let handler: Handler = Box::new(|name, args| {
            let v: serde_json::Value = serde_json::from_str(args).unwrap();
            (format!("{name} got {}", v["x"]), v["x"] == 0)
        });
        let server = BridgeServer::start(
            &path,
            vec![spec("shell"), spec("send_message")],
            Some("use them".into()),
            handler,
        )
        .unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);

        let mut c = BridgeClient::connect(&path).unwrap();
        let (tools, instr) = c.list().unwrap();
        assert_eq!(
            tools.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(),
            ["shell", "send_message"]
        );
        assert_eq!(instr.as_deref(), Some("use them"));
        assert_eq!(
            c.call("shell", r#"{"x": 7}"#).unwrap(),
            ("shell got 7".to_owned(), false)
        );
        assert_eq!(
            c.call("shell", r#"{"x": 0}"#).unwrap(),
            ("shell got 0".to_owned(), true)
        );
        let e = c.call("nope", "{}").unwrap_err().to_string();
        assert!(e.contains("no tool named \"nope\""), "{e}");
        let e = c.call("shell", "{not json").unwrap_err().to_string();
        assert!(e.contains("arguments for shell"), "{e}");

        // A malformed line gets an error naming the expected shape.
        let mut raw = UnixStream::connect(&path).unwrap();
        raw.write_all(b"{\"op\":\"dance\"}\n").unwrap();
        let mut line = String::new();
        BufReader::new(raw).read_line(&mut line).unwrap();
        assert!(
            line.contains("unknown variant `dance`")
                && line.contains(r#"expected {\"op\":\"list\"}"#),
            "{line}"
        );

        drop(server);
        assert!(!path.exists(), "socket removed on drop");
        assert!(BridgeClient::connect(&path).is_err());

        // Dropping stops it even when the socket file is already gone.
        let server =
            BridgeServer::start(&path, vec![], None, Box::new(|_, _| (String::new(), false)))
                .unwrap();
        std::fs::remove_file(&path).unwrap();
        drop(server);
    }

    #[test]
    fn refuses_to_replace_a_regular_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, "x").unwrap();
        let e = BridgeServer::start(&path, vec![], None, Box::new(|_, _| (String::new(), false)))
            .err()
            .unwrap();
        assert!(e.to_string().contains("not a socket"), "{e}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "x");
    }
}
