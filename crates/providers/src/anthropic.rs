//! `anthropic`: the Messages API, streamed, through the credential proxy
//! (`POST /anthropic/v1/messages`; the proxy adds `x-api-key`).
//!
//! Prompt caching: the system prompt is a text block and the last tool
//! carries `cache_control`, so the stable prefix (tools, then system) is
//! cached across turns. Tool use: a `content_block_start` of type
//! `tool_use` opens a call whose input arrives as `input_json_delta`
//! fragments; `content_block_stop` completes it. Steps are replayed as an
//! assistant message (`text` and `tool_use` blocks) followed by a user
//! message of `tool_result` blocks. A stream without `message_stop` was cut
//! off and is a retryable error.

use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::{json, Value};

use crate::http::{err, post, status_error};
use crate::{
    Capabilities, ErrorKind, Event, Provider, ProviderError, Step, ToolCall, TurnRequest,
    TurnResult, Usage,
};

pub const API_VERSION: &str = "2023-06-01";

pub struct Anthropic {
    pub socket: PathBuf,
    pub model: String,
    pub max_tokens: u32,
    pub timeout: Duration,
}

impl Anthropic {
    /// The request body for `req` (public for tests and debugging).
    pub fn body(&self, req: &TurnRequest) -> Value {
        let mut messages: Vec<Value> = req
            .history
            .iter()
            .map(|(role, content)| json!({"role": role, "content": content}))
            .collect();
        let mut content: Vec<Value> = req.images.iter().map(image_block).collect();
        content.push(json!({"type": "text", "text": req.prompt}));
        messages.push(json!({"role": "user", "content": content}));
        for step in &req.steps {
            // Consecutive blocks of one role go into one message (the API
            // wants user and assistant to alternate).
            let (role, block) = match step {
                Step::Assistant { text, calls } => {
                    let mut blocks = Vec::new();
                    if !text.is_empty() {
                        blocks.push(json!({"type": "text", "text": text}));
                    }
                    for c in calls {
                        blocks.push(json!({"type": "tool_use", "id": c.id, "name": c.name, "input": input_object(&c.arguments)}));
                    }
                    for b in blocks {
                        push_block(&mut messages, "assistant", b);
                    }
                    continue;
                }
                Step::ToolResult {
                    call_id,
                    content,
                    is_error,
                    images,
                    ..
                } if !images.is_empty() => {
                    // A result may carry images (`view_image`): text first.
                    let mut blocks = vec![json!({"type": "text", "text": content})];
                    blocks.extend(images.iter().map(image_block));
                    (
                        "user",
                        json!({"type": "tool_result", "tool_use_id": call_id, "content": blocks, "is_error": is_error}),
                    )
                }
                Step::ToolResult {
                    call_id,
                    content,
                    is_error,
                    ..
                } => (
                    "user",
                    json!({"type": "tool_result", "tool_use_id": call_id, "content": content, "is_error": is_error}),
                ),
                Step::User { text } => ("user", json!({"type": "text", "text": text})),
            };
            push_block(&mut messages, role, block);
        }
        let mut body = json!({
            "model": self.model,
            "max_tokens": self.max_tokens,
            "messages": messages,
            "stream": true,
        });
        if !req.system.is_empty() {
            body["system"] = json!([{"type": "text", "text": req.system, "cache_control": {"type": "ephemeral"}}]);
        }
        if !req.tools.is_empty() {
            let mut tools: Vec<Value> =
                req.tools.iter().map(|t| json!({"name": t.name, "description": t.description, "input_schema": t.parameters})).collect();
            if let Some(last) = tools.last_mut() {
                last["cache_control"] = json!({"type": "ephemeral"});
            }
            body["tools"] = Value::Array(tools);
        }
        body
    }
}

/// An image as the API's `image` block (base64 source).
fn image_block(i: &crate::Image) -> Value {
    json!({"type": "image", "source": {"type": "base64", "media_type": i.media_type, "data": crate::base64(&i.data)}})
}

/// Appends `block` to the last message if it has `role`, else starts one.
fn push_block(messages: &mut Vec<Value>, role: &str, block: Value) {
    if let Some(last) = messages.last_mut().filter(|m| m["role"] == role) {
        if let Value::String(s) = &last["content"] {
            last["content"] = json!([{"type": "text", "text": s}]);
        }
        if let Some(a) = last["content"].as_array_mut() {
            a.push(block);
            return;
        }
    }
    messages.push(json!({"role": role, "content": [block]}));
}

/// A call's arguments as the `input` object the API wants back. Arguments
/// that are not a JSON object (the model's mistake, already reported to it
/// as a tool error) are kept as text under one key.
fn input_object(arguments: &str) -> Value {
    match serde_json::from_str::<Value>(arguments) {
        Ok(v @ Value::Object(_)) => v,
        _ => json!({"unparsed_arguments": arguments}),
    }
}

impl Provider for Anthropic {
    fn name(&self) -> &str {
        "anthropic"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            tools: true,
            streaming: true,
            context_window: 200_000,
            vision: true,
        }
    }

    fn turn(
        &mut self,
        req: &TurnRequest,
        sink: &mut dyn FnMut(Event),
    ) -> Result<TurnResult, ProviderError> {
        let body = self.body(req).to_string();
        let resp = post(
            &self.socket,
            "/anthropic/v1/messages",
            &[("anthropic-version", API_VERSION)],
            &body,
            self.timeout,
        )?;
        if resp.status != 200 {
            return Err(status_error(resp));
        }
        let mut r = resp.body;
        let (mut text, mut usage, mut line) = (String::new(), Usage::default(), String::new());
        // Open tool_use blocks by index: (id, name, input JSON so far).
        let mut open: BTreeMap<u64, ToolCall> = BTreeMap::new();
        let mut calls = Vec::new();
        let mut stopped = false;
        loop {
            line.clear();
            if r.read_line(&mut line)
                .map_err(|e| err(ErrorKind::Timeout, true, format!("reading the stream: {e}")))?
                == 0
            {
                break;
            }
            let Some(data) = line.trim_end().strip_prefix("data:") else {
                continue;
            };
            let v: Value = serde_json::from_str(data.trim())
                .map_err(|e| err(ErrorKind::Server, true, format!("bad stream event: {e}")))?;
            let index = v["index"].as_u64().unwrap_or(0);
            match v["type"].as_str() {
                Some("content_block_start") => {
                    let b = &v["content_block"];
                    if b["type"] == "tool_use" {
                        // `input` is usually `{}` here, filled by deltas.
                        let initial = match &b["input"] {
                            Value::Object(o) if !o.is_empty() => b["input"].to_string(),
                            _ => String::new(),
                        };
                        let call = ToolCall {
                            id: b["id"].as_str().unwrap_or("").to_owned(),
                            name: b["name"].as_str().unwrap_or("").to_owned(),
                            arguments: initial,
                        };
                        open.insert(index, call);
                    } else if let Some(t) = b["text"].as_str().filter(|t| !t.is_empty()) {
                        text.push_str(t);
                        sink(Event::Text(t.to_owned()));
                    }
                }
                Some("content_block_delta") => match v["delta"]["type"].as_str() {
                    Some("input_json_delta") => {
                        if let (Some(c), Some(p)) =
                            (open.get_mut(&index), v["delta"]["partial_json"].as_str())
                        {
                            c.arguments.push_str(p);
                        }
                    }
                    _ => {
                        if let Some(t) = v["delta"]["text"].as_str() {
                            text.push_str(t);
                            sink(Event::Text(t.to_owned()));
                        }
                    }
                },
                Some("content_block_stop") => {
                    if let Some(mut c) = open.remove(&index) {
                        if c.arguments.trim().is_empty() {
                            c.arguments = "{}".into();
                        }
                        sink(Event::ToolCall {
                            id: c.id.clone(),
                            name: c.name.clone(),
                            arguments: c.arguments.clone(),
                        });
                        calls.push(c);
                    }
                }
                Some("message_start") => {
                    let u = &v["message"]["usage"];
                    usage.input_tokens = [
                        "input_tokens",
                        "cache_creation_input_tokens",
                        "cache_read_input_tokens",
                    ]
                    .iter()
                    .map(|k| u[k].as_u64().unwrap_or(0))
                    .sum();
                    usage.output_tokens = u["output_tokens"].as_u64().unwrap_or(0);
                }
                Some("message_delta") => {
                    usage.output_tokens = v["usage"]["output_tokens"]
                        .as_u64()
                        .unwrap_or(usage.output_tokens)
                }
                Some("message_stop") => {
                    stopped = true;
                    break;
                }
                Some("error") => return Err(api_error(&v["error"])),
                _ => {}
            }
        }
        if !stopped {
            return Err(err(
                ErrorKind::Server,
                true,
                format!("the stream ended before message_stop (truncated after {} characters); trying again may help", text.len()),
            ));
        }
        Ok(TurnResult {
            text,
            usage,
            tool_calls: calls,
        })
    }
}

/// An `error` event, classified by what retrying can do.
fn api_error(e: &Value) -> ProviderError {
    let kind = e["type"].as_str().unwrap_or("");
    let msg = e["message"].as_str().unwrap_or("").to_owned();
    match kind {
        "overloaded_error" => err(ErrorKind::Overloaded, true, msg),
        "rate_limit_error" => err(ErrorKind::RateLimited, true, msg),
        "api_error" => err(ErrorKind::Server, true, msg),
        "timeout_error" => err(ErrorKind::Timeout, true, msg),
        "authentication_error" | "permission_error" => err(ErrorKind::Auth, false, msg),
        "invalid_request_error" | "not_found_error" | "request_too_large" => {
            err(ErrorKind::BadRequest, false, format!("{kind}: {msg}"))
        }
        _ => err(ErrorKind::Other, false, format!("{kind}: {msg}")),
    }
}
