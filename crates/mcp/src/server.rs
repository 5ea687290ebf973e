//! An MCP server on stdin/stdout exposing a fixed tool list and forwarding
//! each call to a blocking handler (`pinch runner mcp`, SPEC §5.5).

use std::sync::{Arc, Mutex};

use pinch_providers::ToolSpec;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation,
    ListToolsResult, PaginatedRequestParams, ServerCapabilities, ServerConfig, Tool,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData, RoleServer, ServerHandler, ServiceExt};

use crate::McpError;

/// Runs one tool call: `(tool name, arguments as JSON text)` →
/// `(result text, is_error)`. Called on a blocking thread, one call at a
/// time.
pub type Handler = Box<dyn FnMut(&str, &str) -> (String, bool) + Send>;

struct Bridge {
    tools: Vec<Tool>,
    handler: Arc<Mutex<Handler>>,
    instructions: Option<String>,
}

impl ServerHandler for Bridge {
    fn get_info(&self) -> ServerConfig {
        let mut info = ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("pinch", env!("CARGO_PKG_VERSION")));
        if let Some(i) = &self.instructions {
            info = info.with_instructions(i.clone());
        }
        info
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        Ok(ListToolsResult::with_all_items(self.tools.clone()))
    }

    fn get_tool(&self, name: &str) -> Option<Tool> {
        self.tools.iter().find(|t| t.name == name).cloned()
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        if !self.tools.iter().any(|t| t.name == request.name) {
            return Err(ErrorData::invalid_params(
                format!("no tool named {:?}", request.name),
                None,
            ));
        }
        let name = request.name.to_string();
        let args = serde_json::Value::Object(request.arguments.unwrap_or_default()).to_string();
        let handler = self.handler.clone();
        let (text, is_error) = tokio::task::spawn_blocking(move || {
            let mut h = handler.lock().unwrap_or_else(|e| e.into_inner());
            (h)(&name, &args)
        })
        .await
        .map_err(|e| ErrorData::internal_error(format!("the tool handler failed: {e}"), None))?;
        let content = vec![ContentBlock::text(text)];
        Ok(if is_error {
            CallToolResult::error(content)
        } else {
            CallToolResult::success(content)
        }
        .into())
    }
}

/// Serves `tools` over MCP on this process's stdin/stdout until the client
/// closes stdin, forwarding every call to `handler`. Blocks; builds its own
/// single-threaded runtime. Logs must go to stderr (stdout is the protocol).
pub fn serve_stdio(
    tools: Vec<ToolSpec>,
    instructions: Option<String>,
    handler: Handler,
) -> Result<(), McpError> {
    let tools = tools
        .into_iter()
        .map(|t| {
            let schema = match t.parameters {
                serde_json::Value::Object(o) => o,
                _ => serde_json::Map::from_iter([(
                    "type".to_owned(),
                    serde_json::Value::from("object"),
                )]),
            };
            Tool::new(t.name, t.description, Arc::new(schema))
        })
        .collect();
    let bridge = Bridge {
        tools,
        handler: Arc::new(Mutex::new(handler)),
        instructions,
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .max_blocking_threads(2)
        .build()
        .map_err(McpError::Runtime)?;
    rt.block_on(async move {
        let service = bridge
            .serve(rmcp::transport::stdio())
            .await
            .map_err(|e| McpError::Serve(format!("handshake failed: {e}")))?;
        service
            .waiting()
            .await
            .map_err(|e| McpError::Serve(e.to_string()))?;
        Ok(())
    })
}
