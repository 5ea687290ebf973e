//! `admin(command, args)` (SPEC §10): the agent's way to the admin
//! commands. It writes a `system` row `{action: "admin_request",
//! request_id, command, args}`; the host runs it as this agent group under
//! its `admin_scope` and answers with an `admin_response` row, which this
//! tool waits for (30 s). Commands that change who may reach what need an
//! admin's approval: the answer is then `approval-pending`, and the outcome
//! arrives later as a system response.

use std::time::Duration;

use pinch_proto::content::SystemIn;
use serde_json::{json, Map, Value};

use super::questions::{wait_for_reply, Waiting};
use super::{spec, Args, ToolCtx, ToolError, ToolResult};
use pinch_providers::ToolSpec;

pub const TIMEOUT: Duration = Duration::from_secs(30);

/// The key a waiting admin call is known by (shared set with questions).
pub fn waiting_key(request_id: &str) -> String {
    format!("admin:{request_id}")
}

pub fn specs() -> Vec<ToolSpec> {
    vec![
        spec(
            "install_packages",
            "Ask for packages to be installed for you (pip or npm; an admin approves each request). They land on your PATH \
             (python packages on PYTHONPATH) from your next turn; the answer is `approval-pending`, the outcome arrives later.",
            json!({
                "type": "object",
                "properties": {
                    "manager": {"type": "string", "enum": ["pip", "npm"]},
                    "packages": {"type": "array", "items": {"type": "string"}, "description": "Names, optionally with a version (requests==2.32.3, left-pad@1.3.0)."}
                },
                "required": ["manager", "packages"]
            }),
        ),
        spec(
            "add_mcp_server",
            "Ask for an MCP server to be added to your tools (an admin approves it); its tools appear as <name>__<tool> from \
             your next turn. The command must exist inside your sandbox.",
            json!({
                "type": "object",
                "properties": {
                    "name": {"type": "string", "description": "Prefix of its tools: letters, digits, - and _."},
                    "command": {"type": "string"},
                    "args": {"type": "array", "items": {"type": "string"}},
                    "env": {"type": "object", "description": "Plain settings only, no secrets."}
                },
                "required": ["name", "command"]
            }),
        ),
        spec(
            "create_agent",
            "Create a new agent (its own workspace and instructions) you can then message by its name with \
             send_message; it can answer you as `parent`. Needs the owner's permission: without it the answer is \
             `approval-pending` and the outcome arrives later.",
            json!({
                "type": "object",
                "properties": {
                    "name": {"type": "string", "description": "A short name, e.g. \"researcher\" (letters, digits, -)."},
                    "instructions": {"type": "string", "description": "Its AGENT.md: who it is and what it does."}
                },
                "required": ["name", "instructions"]
            }),
        ),
        spec(
        "admin",
        "Run a pinch admin command as this agent (if the owner allowed it): e.g. command \"sessions-list\", \
         \"members-list\" with args {\"ag\": \"<your group>\"}, \"destinations-list\". Commands that change access need an \
         admin's approval and answer `approval-pending`; the outcome arrives later.",
        json!({
            "type": "object",
            "properties": {
                "command": {"type": "string", "description": "<resource>-<verb>, e.g. sessions-list"},
                "args": {"type": "object", "description": "The command's arguments."}
            },
            "required": ["command"]
        }),
    ),
    ]
}

/// Runs the group's tool `name`.
pub fn dispatch(ctx: &mut ToolCtx<'_>, name: &str, m: &Map<String, Value>) -> ToolResult {
    match name {
        "create_agent" => create_agent(ctx, m),
        "install_packages" => install_packages(ctx, m),
        "add_mcp_server" => add_mcp_server(ctx, m),
        _ => call(ctx, m),
    }
}

pub fn call(ctx: &mut ToolCtx<'_>, m: &Map<String, Value>) -> ToolResult {
    let a = Args { tool: "admin", m };
    let command = a.str("command")?.trim().to_owned();
    if command.is_empty() || !command.contains('-') {
        return Err(ToolError(format!("admin: `command` must look like <resource>-<verb> (e.g. sessions-list), got {command:?}")));
    }
    let args = match a.value("args") {
        None => json!({}),
        Some(v @ Value::Object(_)) => v.clone(),
        Some(other) => {
            return Err(ToolError(format!(
                "admin: `args` must be an object, got {other}"
            )))
        }
    };
    let request_id = format!("adm-{}", pinch_proto::runner_config::random_hex(6));
    let body = json!({"action": "admin_request", "request_id": request_id, "command": command, "args": args});
    ask_host(ctx, &request_id, body)
}

/// Longest `instructions` for a new agent (its AGENT.md).
pub const MAX_INSTRUCTIONS: usize = 64 * 1024;

/// `create_agent(name, instructions)` (SPEC §7.5): a `system` row
/// `{action: "create_agent", …}`; the host creates it at once for a group
/// allowed to (`can_create_agents`), else asks an admin (lesson 50).
pub fn create_agent(ctx: &mut ToolCtx<'_>, m: &Map<String, Value>) -> ToolResult {
    let a = Args {
        tool: "create_agent",
        m,
    };
    let name = a.str("name")?.trim().to_owned();
    let instructions = a.str("instructions")?.to_owned();
    if name.is_empty()
        || name.chars().count() > 32
        || !name.chars().any(|c| c.is_ascii_alphanumeric())
    {
        return Err(ToolError(format!(
            "create_agent: `name` must be 1 to 32 characters with a letter or digit, got {name:?}"
        )));
    }
    if instructions.len() > MAX_INSTRUCTIONS {
        return Err(ToolError(format!(
            "create_agent: `instructions` is {} bytes; at most {MAX_INSTRUCTIONS}",
            instructions.len()
        )));
    }
    let request_id = format!("adm-{}", pinch_proto::runner_config::random_hex(6));
    let body = json!({"action": "create_agent", "request_id": request_id, "name": name, "instructions": instructions});
    ask_host(ctx, &request_id, body)
}

/// `install_packages(manager, packages)` (SPEC §7.6): always an approval.
pub fn install_packages(ctx: &mut ToolCtx<'_>, m: &Map<String, Value>) -> ToolResult {
    let a = Args {
        tool: "install_packages",
        m,
    };
    let manager = a.str("manager")?.trim().to_owned();
    if manager != "pip" && manager != "npm" {
        return Err(ToolError(format!(
            "install_packages: `manager` must be pip or npm, got {manager:?}"
        )));
    }
    let packages: Vec<String> = match a.value("packages") {
        Some(Value::Array(v))
            if !v.is_empty() && v.len() <= 20 && v.iter().all(Value::is_string) =>
        {
            v.iter()
                .filter_map(|p| p.as_str().map(|s| s.trim().to_owned()))
                .collect()
        }
        _ => {
            return Err(ToolError(
                "install_packages: `packages` must be a list of 1 to 20 names".into(),
            ))
        }
    };
    let request_id = format!("adm-{}", pinch_proto::runner_config::random_hex(6));
    let body = json!({"action": "install_packages", "request_id": request_id, "manager": manager, "packages": packages});
    ask_host(ctx, &request_id, body)
}

/// `add_mcp_server(name, command, args, env)` (SPEC §7.6): always an approval.
pub fn add_mcp_server(ctx: &mut ToolCtx<'_>, m: &Map<String, Value>) -> ToolResult {
    let a = Args {
        tool: "add_mcp_server",
        m,
    };
    let name = a.str("name")?.trim().to_owned();
    let command = a.str("command")?.trim().to_owned();
    let args = match a.value("args") {
        None => json!([]),
        Some(Value::Array(v)) if v.iter().all(Value::is_string) => Value::Array(v.clone()),
        Some(_) => {
            return Err(ToolError(
                "add_mcp_server: `args` must be a list of strings".into(),
            ))
        }
    };
    let env = match a.value("env") {
        None => json!({}),
        Some(Value::Object(o)) if o.values().all(Value::is_string) => Value::Object(o.clone()),
        Some(_) => {
            return Err(ToolError(
                "add_mcp_server: `env` must be an object of strings".into(),
            ))
        }
    };
    let request_id = format!("adm-{}", pinch_proto::runner_config::random_hex(6));
    let body = json!({"action": "add_mcp_server", "request_id": request_id, "server": {"name": name, "command": command, "args": args, "env": env}});
    ask_host(ctx, &request_id, body)
}

/// Writes the request row and waits for the host's `admin_response`.
fn ask_host(ctx: &mut ToolCtx<'_>, request_id: &str, body: Value) -> ToolResult {
    let request_id = request_id.to_owned();
    let addr = ctx.origin_address();
    let waiting = Waiting::new(&waiting_key(&request_id));
    ctx.write_row("system", &addr, body.to_string())?;
    let tool = match body["action"].as_str() {
        Some("create_agent") => "create_agent",
        Some("install_packages") => "install_packages",
        Some("add_mcp_server") => "add_mcp_server",
        _ => "admin",
    };
    ctx.set_tool_in_flight(Some((tool, TIMEOUT.as_millis() as u64)));
    let r = wait_for_reply(ctx, TIMEOUT, |s| match s {
        SystemIn::AdminResponse {
            request_id: r,
            ok,
            body,
        } if *r == request_id => Some((*ok, body.clone())),
        _ => None,
    });
    ctx.set_tool_in_flight(None);
    drop(waiting);
    match r? {
        Some((true, data)) => Ok(data.to_string()),
        Some((false, err)) => {
            let code = err.get("code").and_then(Value::as_str).unwrap_or("error");
            let msg = err.get("message").and_then(Value::as_str).unwrap_or("");
            if code == "approval-pending" {
                Ok(format!(
                    "approval-pending: {msg} The outcome arrives later as a system response."
                ))
            } else {
                Err(ToolError(format!("{code}: {msg}")))
            }
        }
        None if (ctx.should_stop)() => Err(ToolError(
            "stopped while waiting for the host (the runner is shutting down)".into(),
        )),
        None => Err(ToolError(format!(
            "the host did not answer within {} s",
            TIMEOUT.as_secs()
        ))),
    }
}
