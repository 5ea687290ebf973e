//! The blocking client for external stdio MCP servers (SPEC §5.6).

use std::collections::{HashMap, VecDeque};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pinch_proto::runner_config::{McpServerConfig, MCP_DEFAULT_TIMEOUT_S};
use pinch_providers::ToolSpec;
use rmcp::model::CallToolRequestParams;
use rmcp::service::RunningService;
use rmcp::transport::TokioChildProcess;
use rmcp::{RoleClient, ServiceError, ServiceExt};
use tokio::io::AsyncBufReadExt;

use crate::{content, names, McpError};

/// A tool call's outcome as the model will read it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ToolResultText {
    pub content: String,
    /// The server said the tool failed (its text says why).
    pub is_error: bool,
}

/// Lines of a server's stderr kept for error messages.
const STDERR_TAIL: usize = 5;

type Tail = Arc<Mutex<VecDeque<String>>>;

struct Server {
    name: String,
    timeout: Duration,
    /// `None` once the server has died (its tools then fail with
    /// [`McpError::ServerGone`]).
    client: Option<RunningService<RoleClient, ()>>,
    /// Leader of the server's process group (killed on drop).
    pid: Option<u32>,
    stderr: Tail,
    /// Ends at the server's stderr EOF (waited for when it dies, so its
    /// last words make the error message).
    stderr_reader: Option<tokio::task::JoinHandle<()>>,
    instructions: Option<String>,
}

struct Route {
    server: usize,
    tool: String,
}

/// The running MCP servers of one runner, behind plain blocking calls.
///
/// Owns a tokio runtime with one worker thread (created only when at least
/// one server is configured): the servers' pipes are serviced even while the
/// runner is between calls, and each public method blocks the caller until
/// its answer or its timeout. Dropping it kills every server's process
/// group.
pub struct McpClients {
    rt: Option<tokio::runtime::Runtime>,
    servers: Vec<Server>,
    tools: Vec<ToolSpec>,
    routes: HashMap<String, Route>,
}

struct Started {
    client: RunningService<RoleClient, ()>,
    pid: Option<u32>,
    tools: Vec<rmcp::model::Tool>,
    stderr_reader: Option<tokio::task::JoinHandle<()>>,
}

impl McpClients {
    /// Starts every server (concurrently), handshakes and lists its tools.
    /// A server that fails is left out and reported as `(name, error)`;
    /// that is not fatal (SPEC §5.1). Configurations are taken as valid
    /// (`RunnerConfig::validate` checks them).
    pub fn start(configs: &[McpServerConfig]) -> (McpClients, Vec<(String, McpError)>) {
        let mut me = McpClients {
            rt: None,
            servers: Vec::new(),
            tools: Vec::new(),
            routes: HashMap::new(),
        };
        if configs.is_empty() {
            return (me, Vec::new());
        }
        let rt = match tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .max_blocking_threads(2)
            .thread_name("pinch-mcp")
            .enable_io()
            .enable_time()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => {
                let msg = e.to_string();
                let failed = configs
                    .iter()
                    .map(|c| {
                        (
                            c.name.clone(),
                            McpError::Runtime(std::io::Error::new(e.kind(), msg.clone())),
                        )
                    })
                    .collect();
                return (me, failed);
            }
        };
        let results: Vec<(McpServerConfig, Tail, Result<Started, McpError>)> = rt.block_on(async {
            let mut handles = Vec::new();
            for cfg in configs {
                let tail: Tail = Arc::default();
                let (t, c) = (tail.clone(), cfg.clone());
                handles.push((
                    cfg.clone(),
                    tail,
                    tokio::spawn(async move { start_one(&c, t).await }),
                ));
            }
            let mut out = Vec::new();
            for (cfg, tail, h) in handles {
                let r = match h.await {
                    Ok(r) => r,
                    Err(e) => Err(McpError::Start {
                        server: cfg.name.clone(),
                        detail: format!("start task failed: {e}"),
                    }),
                };
                out.push((cfg, tail, r));
            }
            out
        });
        let mut failed = Vec::new();
        for (cfg, tail, r) in results {
            match r {
                Ok(s) => {
                    let idx = me.servers.len();
                    let count = s.tools.len();
                    for t in s.tools {
                        let exposed = names::unique_tool_name(&cfg.name, &t.name, &|n| {
                            me.routes.contains_key(n)
                        });
                        me.tools.push(ToolSpec {
                            name: exposed.clone(),
                            description: t.description.as_deref().unwrap_or("").to_owned(),
                            parameters: serde_json::Value::Object((*t.input_schema).clone()),
                        });
                        me.routes.insert(
                            exposed,
                            Route {
                                server: idx,
                                tool: t.name.into_owned(),
                            },
                        );
                    }
                    let instructions = s
                        .client
                        .peer_info()
                        .and_then(|i| i.instructions.clone())
                        .filter(|i| !i.trim().is_empty());
                    tracing::info!(server = %cfg.name, tools = count, "MCP server started");
                    me.servers.push(Server {
                        name: cfg.name.clone(),
                        timeout: timeout_of(&cfg),
                        client: Some(s.client),
                        pid: s.pid,
                        stderr: tail,
                        stderr_reader: s.stderr_reader,
                        instructions,
                    });
                }
                Err(e) => {
                    tracing::warn!(server = %cfg.name, "MCP server failed to start: {e}");
                    failed.push((cfg.name.clone(), e));
                }
            }
        }
        me.rt = Some(rt);
        (me, failed)
    }

    /// No server is running.
    pub fn is_empty(&self) -> bool {
        self.servers.is_empty()
    }

    /// The tools of every running server, named `<server>__<tool>`.
    pub fn tools(&self) -> Vec<ToolSpec> {
        self.tools.clone()
    }

    /// Whether `name` is one of [`Self::tools`].
    pub fn has_tool(&self, name: &str) -> bool {
        self.routes.contains_key(name)
    }

    /// The servers' instructions for the system prompt (SPEC §5.1, last
    /// part), one headed block per server that gave some; empty if none.
    pub fn instructions(&self) -> String {
        let mut out = String::new();
        for s in &self.servers {
            if let Some(i) = &s.instructions {
                if !out.is_empty() {
                    out.push('\n');
                }
                out.push_str(&format!(
                    "## MCP server `{}` (tools `{}__*`)\n{}\n",
                    s.name,
                    s.name,
                    i.trim()
                ));
            }
        }
        out
    }

    /// The servers' instructions as (server, text) pairs, in start order;
    /// servers that gave none are left out.
    pub fn instructions_by_server(&self) -> Vec<(String, String)> {
        self.servers
            .iter()
            .filter_map(|s| {
                s.instructions
                    .as_ref()
                    .map(|i| (s.name.clone(), i.trim().to_owned()))
            })
            .collect()
    }

    /// The configured timeout of the server behind tool `name`, for the
    /// runner to declare in `container_state` before calling it.
    pub fn timeout_of(&self, name: &str) -> Option<Duration> {
        self.routes
            .get(name)
            .map(|r| self.servers[r.server].timeout)
    }

    /// Calls tool `name` with `args_json` (a JSON object, or empty for no
    /// arguments), waiting at most `timeout` (default: the server's). A tool
    /// that failed is `Ok` with `is_error`; `Err` means the call itself did
    /// not happen or did not finish (unknown tool, bad arguments, timeout,
    /// server gone, protocol error).
    pub fn call(
        &mut self,
        name: &str,
        args_json: &str,
        timeout: Option<Duration>,
    ) -> Result<ToolResultText, McpError> {
        let route = self
            .routes
            .get(name)
            .ok_or_else(|| McpError::UnknownTool(name.to_owned()))?;
        let args = parse_args(name, args_json)?;
        let rt = self.rt.as_ref().expect("servers imply a runtime");
        let server = &mut self.servers[route.server];
        let timeout = timeout.unwrap_or(server.timeout);
        let Some(client) = &server.client else {
            return Err(McpError::ServerGone {
                server: server.name.clone(),
                detail: "it stopped earlier".into(),
            });
        };
        let mut params = CallToolRequestParams::new(route.tool.clone());
        if let Some(a) = args {
            params = params.with_arguments(a);
        }
        let peer = client.peer().clone();
        let outcome =
            rt.block_on(async { tokio::time::timeout(timeout, peer.call_tool(params)).await });
        match outcome {
            Err(_) => Err(McpError::Timeout {
                server: server.name.clone(),
                tool: route.tool.clone(),
                secs: timeout.as_secs().max(1),
            }),
            Ok(Ok(r)) => Ok(ToolResultText {
                content: content::result_text(&r),
                is_error: r.is_error.unwrap_or(false),
            }),
            Ok(Err(ServiceError::McpError(e))) => Err(McpError::Protocol {
                server: server.name.clone(),
                detail: e.message.to_string(),
            }),
            Ok(Err(e)) => {
                let gone = matches!(
                    e,
                    ServiceError::TransportClosed | ServiceError::TransportSend(_)
                ) || server
                    .client
                    .as_ref()
                    .is_some_and(|c| c.is_transport_closed());
                if gone {
                    // Let the stderr reader collect the last words (bounded:
                    // a grandchild may hold the pipe open).
                    let reader = server.stderr_reader.take();
                    let tail = rt.block_on(async {
                        if let Some(r) = reader {
                            let _ = tokio::time::timeout(Duration::from_secs(1), r).await;
                        }
                        tail_text(&server.stderr)
                    });
                    if let Some(c) = server.client.take() {
                        let _g = rt.enter();
                        drop(c);
                    }
                    tracing::warn!(server = %server.name, "MCP server died during a call");
                    Err(McpError::ServerGone {
                        server: server.name.clone(),
                        detail: format!("it exited during the call ({e}){tail}"),
                    })
                } else {
                    Err(McpError::Protocol {
                        server: server.name.clone(),
                        detail: e.to_string(),
                    })
                }
            }
        }
    }
}

impl Drop for McpClients {
    fn drop(&mut self) {
        let Some(rt) = self.rt.take() else { return };
        for s in &self.servers {
            if let (Some(pid), Some(_)) = (s.pid, &s.client) {
                kill_group(pid);
            }
        }
        let servers = std::mem::take(&mut self.servers);
        // Closing each service reaps its (already killed) child.
        rt.block_on(async {
            for s in servers {
                if let Some(c) = s.client {
                    let _ = tokio::time::timeout(Duration::from_secs(5), c.cancel()).await;
                }
            }
        });
        rt.shutdown_timeout(Duration::from_secs(1));
    }
}

fn kill_group(pid: u32) {
    let Ok(pid) = i32::try_from(pid) else { return };
    // SAFETY: kill(2) with a negative pid signals that process group; the
    // group was created for this server alone (process_group(0) at spawn).
    unsafe {
        libc::kill(-pid, libc::SIGKILL);
    }
}

fn timeout_of(cfg: &McpServerConfig) -> Duration {
    Duration::from_secs(cfg.timeout_s.unwrap_or(MCP_DEFAULT_TIMEOUT_S).max(1))
}

fn parse_args(tool: &str, args_json: &str) -> Result<Option<rmcp::model::JsonObject>, McpError> {
    if args_json.trim().is_empty() {
        return Ok(None);
    }
    match serde_json::from_str::<serde_json::Value>(args_json) {
        Ok(serde_json::Value::Object(o)) => Ok(Some(o)),
        Ok(serde_json::Value::Null) => Ok(None),
        Ok(other) => Err(McpError::BadArguments {
            tool: tool.into(),
            detail: format!("got {other}"),
        }),
        Err(e) => Err(McpError::BadArguments {
            tool: tool.into(),
            detail: format!("invalid JSON: {e}"),
        }),
    }
}

fn tail_text(tail: &Tail) -> String {
    let t = tail.lock().unwrap_or_else(|e| e.into_inner());
    if t.is_empty() {
        String::new()
    } else {
        format!(
            "; its stderr ended: {}",
            t.iter().cloned().collect::<Vec<_>>().join(" | ")
        )
    }
}

async fn start_one(cfg: &McpServerConfig, tail: Tail) -> Result<Started, McpError> {
    let name = cfg.name.clone();
    let err = |detail: String| McpError::Start {
        server: name.clone(),
        detail,
    };
    let mut cmd = tokio::process::Command::new(&cfg.command);
    cmd.args(&cfg.args)
        .envs(&cfg.env)
        .kill_on_drop(true)
        .process_group(0);
    if let Some(cwd) = &cfg.cwd {
        cmd.current_dir(cwd);
    }
    // SAFETY: prctl is async-signal-safe and touches only the child.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong);
            Ok(())
        });
    }
    let (transport, stderr) = TokioChildProcess::builder(cmd)
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            err(format!(
                "running {:?}: {e} (check `command` and PATH inside the sandbox)",
                cfg.command
            ))
        })?;
    let pid = transport.id();
    let reader = stderr.map(|s| {
        let (tail, server) = (tail.clone(), cfg.name.clone());
        tokio::spawn(async move {
            let mut lines = tokio::io::BufReader::new(s).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                tracing::debug!(server = %server, "mcp stderr: {line}");
                let mut t = tail.lock().unwrap_or_else(|e| e.into_inner());
                if t.len() == STDERR_TAIL {
                    t.pop_front();
                }
                t.push_back(line.chars().take(300).collect());
            }
        })
    });
    let timeout = timeout_of(cfg);
    let mut reader = reader;
    let fail = |detail: String, reader: Option<tokio::task::JoinHandle<()>>| async move {
        if let Some(pid) = pid {
            kill_group(pid);
        }
        if let Some(r) = reader {
            let _ = tokio::time::timeout(Duration::from_secs(1), r).await;
        }
        err(format!("{detail}{}", tail_text(&tail)))
    };
    let client = match tokio::time::timeout(timeout, ().serve(transport)).await {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => {
            return Err(fail(format!("the MCP handshake failed: {e}"), reader.take()).await)
        }
        Err(_) => {
            return Err(fail(
                format!("no MCP handshake within {} s", timeout.as_secs()),
                reader.take(),
            )
            .await)
        }
    };
    let has_tools = client
        .peer_info()
        .is_some_and(|i| i.capabilities.tools.is_some());
    let tools = if has_tools {
        match tokio::time::timeout(timeout, client.list_all_tools()).await {
            Ok(Ok(t)) => t,
            Ok(Err(e)) => {
                drop(client);
                return Err(fail(format!("listing its tools failed: {e}"), reader.take()).await);
            }
            Err(_) => {
                drop(client);
                return Err(fail(
                    format!("it did not list its tools within {} s", timeout.as_secs()),
                    reader.take(),
                )
                .await);
            }
        }
    } else {
        Vec::new()
    };
    Ok(Started {
        client,
        pid,
        tools,
        stderr_reader: reader,
    })
}
