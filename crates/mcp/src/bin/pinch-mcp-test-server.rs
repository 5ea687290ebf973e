//! A small real MCP server for pinch's tests (stdio, rmcp's server side).
//!
//! Tools: `echo(text)`, `add(a, b)`, `sleep(seconds)`, `fail(message)` (a
//! tool error), `crash()` (exits mid-call), `picture()` (image content),
//! `spawn_sleeper()` (starts a grandchild `sleep`, returns its pid), `pid()`,
//! `env(name)` (the variable's value in the server's environment, or `unset`).
//! Flags: `--fail-start` (complain on stderr, exit 3 before the handshake),
//! `--instructions TEXT`.

use std::sync::Arc;

use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, ListToolsResult,
    PaginatedRequestParams, ServerCapabilities, ServerConfig, Tool,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData, RoleServer, ServerHandler, ServiceExt};
use serde_json::{json, Value};

struct TestServer {
    instructions: Option<String>,
}

fn tool(name: &'static str, description: &'static str, schema: Value) -> Tool {
    let Value::Object(o) = schema else {
        unreachable!("schemas are objects")
    };
    Tool::new(name, description, Arc::new(o))
}

fn tools() -> Vec<Tool> {
    let none = json!({"type": "object", "properties": {}});
    vec![
        tool(
            "echo",
            "Echoes its text.",
            json!({"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]}),
        ),
        tool(
            "add",
            "Adds two numbers.",
            json!({"type": "object", "properties": {"a": {"type": "number"}, "b": {"type": "number"}}, "required": ["a", "b"]}),
        ),
        tool(
            "sleep",
            "Sleeps, then says so.",
            json!({"type": "object", "properties": {"seconds": {"type": "number"}}}),
        ),
        tool(
            "fail",
            "Always fails with the message.",
            json!({"type": "object", "properties": {"message": {"type": "string"}}}),
        ),
        tool(
            "crash",
            "Exits the server in the middle of the call.",
            none.clone(),
        ),
        tool("picture", "Returns a tiny image.", none.clone()),
        tool(
            "spawn_sleeper",
            "Starts a long sleep child; returns its pid.",
            none.clone(),
        ),
        tool("pid", "This server's pid.", none),
        tool(
            "env",
            "One variable of this server's environment.",
            json!({"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}),
        ),
    ]
}

fn text(s: impl Into<String>) -> Result<CallToolResponse, ErrorData> {
    Ok(CallToolResult::success(vec![ContentBlock::text(s)]).into())
}

impl ServerHandler for TestServer {
    fn get_info(&self) -> ServerConfig {
        let info = ServerConfig::new(ServerCapabilities::builder().enable_tools().build());
        match &self.instructions {
            Some(i) => info.with_instructions(i.clone()),
            None => info,
        }
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        Ok(ListToolsResult::with_all_items(tools()))
    }

    #[allow(clippy::disallowed_methods)] // a test server that starts a process to prove cancellation
    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let args = Value::Object(request.arguments.unwrap_or_default());
        match request.name.as_ref() {
            "echo" => text(args["text"].as_str().unwrap_or_default()),
            "add" => match (args["a"].as_f64(), args["b"].as_f64()) {
                (Some(a), Some(b)) => text(format!("{}", a + b)),
                _ => Err(ErrorData::invalid_params("add needs numbers a and b", None)),
            },
            "sleep" => {
                let s = args["seconds"].as_f64().unwrap_or(1.0);
                tokio::time::sleep(std::time::Duration::from_secs_f64(s)).await;
                text(format!("slept {s} s"))
            }
            "fail" => Ok(CallToolResult::error(vec![ContentBlock::text(
                args["message"].as_str().unwrap_or("failed"),
            )])
            .into()),
            "crash" => {
                eprintln!("test server: crashing on purpose");
                std::process::exit(9);
            }
            "picture" => Ok(CallToolResult::success(vec![
                ContentBlock::text("a dot:"),
                ContentBlock::image("iVBORw0KGgo=", "image/png"),
            ])
            .into()),
            "spawn_sleeper" => {
                let child = std::process::Command::new("sleep")
                    .arg("1000")
                    .spawn()
                    .map_err(|e| ErrorData::internal_error(e.to_string(), None))?;
                text(child.id().to_string())
            }
            "pid" => text(std::process::id().to_string()),
            "env" => text(
                std::env::var(args["name"].as_str().unwrap_or_default())
                    .unwrap_or_else(|_| "unset".into()),
            ),
            other => Err(ErrorData::invalid_params(
                format!("unknown tool {other}"),
                None,
            )),
        }
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let mut instructions = None;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--fail-start" => {
                eprintln!("test server: missing API token, refusing to start");
                std::process::exit(3);
            }
            "--instructions" => instructions = args.next(),
            other => {
                eprintln!("unknown flag {other}");
                std::process::exit(2);
            }
        }
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let service = TestServer { instructions }
            .serve(rmcp::transport::stdio())
            .await
            .expect("handshake");
        let _ = service.waiting().await;
    });
}
