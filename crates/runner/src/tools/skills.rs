//! `load_skill(name)`: a skill's instructions and files (`crate::skills`).

use serde_json::{json, Map, Value};

use super::{spec, Args, ToolCtx, ToolError, ToolResult};
use pinch_providers::ToolSpec;

pub fn specs() -> Vec<ToolSpec> {
    vec![spec(
        "load_skill",
        "Load one of your skills (listed under Skills in your instructions): its full instructions and the files in its \
         folder. Load a skill before doing the task it describes, then follow it.",
        json!({
            "type": "object",
            "properties": {"name": {"type": "string", "description": "The skill's name, as listed."}},
            "required": ["name"]
        }),
    )]
}

pub fn call(ctx: &mut ToolCtx<'_>, _: &str, m: &Map<String, Value>) -> ToolResult {
    let a = Args {
        tool: "load_skill",
        m,
    };
    let name = a.str("name")?.trim();
    crate::skills::load(ctx.cfg, name).map_err(|e| ToolError(format!("load_skill: {e}")))
}
