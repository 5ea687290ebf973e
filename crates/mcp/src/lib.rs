//! MCP both ways, over the official `rmcp` SDK, behind a blocking API.
//!
//! - [`McpClients`]: the runner's client for external stdio MCP servers
//!   (SPEC §5.6). Start them all, offer their tools as `<server>__<tool>`,
//!   forward calls with a timeout, kill them on drop.
//! - [`serve_stdio`]: an MCP server on stdin/stdout exposing given tools and
//!   forwarding each call to a handler: `pinch runner mcp`, the bridge an
//!   external agent CLI uses to reach pinch's tools (SPEC §5.5, CLI engine).
//! - [`bridge`]: JSON lines over a Unix socket between `pinch runner mcp`
//!   (inside the sandbox, started by the agent CLI) and the runner process,
//!   which executes its tool registry.
//!
//! The runner is synchronous (no async runtime, SPEC P7); rmcp is async. So
//! this crate owns its tokio runtime privately: the runner calls plain
//! functions, and tokio reaches the runner's dependency tree only through
//! this crate (decision 0010). With no MCP server configured, no runtime is
//! created.

pub mod bridge;
mod client;
mod content;
mod names;
mod server;

pub use client::{McpClients, ToolResultText};
pub use names::tool_name;
pub use pinch_proto::runner_config::McpServerConfig;
pub use server::{serve_stdio, Handler};

/// What can go wrong talking MCP. Each message names the server or tool and
/// reads well to a model (tool errors are shown to it).
#[derive(Debug, thiserror::Error)]
pub enum McpError {
    #[error("no MCP tool named {0:?} (the tools offered this turn are the only ones)")]
    UnknownTool(String),
    #[error("arguments for {tool} must be a JSON object: {detail}")]
    BadArguments { tool: String, detail: String },
    #[error(
        "MCP server {server:?} did not answer {tool} within {secs} s (the call was cancelled)"
    )]
    Timeout {
        server: String,
        tool: String,
        secs: u64,
    },
    #[error("MCP server {server:?} is not running: {detail}")]
    ServerGone { server: String, detail: String },
    #[error("MCP server {server:?} failed the call: {detail}")]
    Protocol { server: String, detail: String },
    #[error("could not start MCP server {server:?}: {detail}")]
    Start { server: String, detail: String },
    #[error("starting the MCP runtime: {0}")]
    Runtime(#[source] std::io::Error),
    #[error("MCP bridge: {0}")]
    Bridge(String),
    #[error("MCP stdio server: {0}")]
    Serve(String),
}
