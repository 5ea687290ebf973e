//! `openai`: OpenAI-compatible chat completions (Ollama, vLLM, llama.cpp's
//! server, OpenRouter…), streamed, through the session's credential proxy.
//!
//! The runner has no network: it speaks HTTP/1.1 over the proxy's Unix
//! socket (`POST /openai/chat/completions`), and the proxy adds the key.
//!
//! Messages: the system prompt, earlier turns (`history`), the formatted
//! batch as a user message, then this turn's steps: an assistant message
//! with `tool_calls` per step that called tools, a `role: tool` message per
//! result, a user message per mid-turn follow-up. Tools are offered as
//! `function` tools. The stream's `delta.tool_calls` arrive as fragments
//! keyed by `index` (id and name first, the arguments in pieces) and are
//! assembled here. A stream that ends with neither `[DONE]` nor a
//! `finish_reason` was cut off and is a retryable error.

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

pub struct OpenAi {
    pub socket: PathBuf,
    pub model: String,
    pub timeout: Duration,
    /// The model takes images (`image_url` parts with `data:` URLs).
    pub vision: bool,
}

impl OpenAi {
    /// The request body for `req` (public for tests and debugging).
    pub fn body(&self, req: &TurnRequest) -> Value {
        let mut messages = Vec::new();
        if !req.system.is_empty() {
            messages.push(json!({"role": "system", "content": req.system}));
        }
        for (role, content) in &req.history {
            messages.push(json!({"role": role, "content": content}));
        }
        if self.vision && !req.images.is_empty() {
            let mut parts = vec![json!({"type": "text", "text": req.prompt})];
            parts.extend(req.images.iter().map(image_part));
            messages.push(json!({"role": "user", "content": parts}));
        } else {
            messages.push(json!({"role": "user", "content": req.prompt}));
        }
        // Images a tool showed (`view_image`): a tool message takes only
        // text, so they follow the step's last tool message as a user
        // message (one between tool messages would be refused).
        let mut shown: Vec<Value> = Vec::new();
        for (n, step) in req.steps.iter().enumerate() {
            if matches!(step, Step::Assistant { text, calls } if text.is_empty() && calls.is_empty())
            {
                continue; // an empty assistant message is refused by some servers
            }
            if let (true, Step::ToolResult { name, images, .. }) = (self.vision, step) {
                for i in images {
                    shown.push(
                        json!({"type": "text", "text": format!("[{name} shows {}]", i.name)}),
                    );
                    shown.push(image_part(i));
                }
            }
            let last_result = matches!(step, Step::ToolResult { .. })
                && !matches!(req.steps.get(n + 1), Some(Step::ToolResult { .. }));
            messages.push(match step {
                Step::Assistant { text, calls } => {
                    let mut m = json!({"role": "assistant", "content": if text.is_empty() { Value::Null } else { json!(text) }});
                    if !calls.is_empty() {
                        m["tool_calls"] = calls
                            .iter()
                            .map(|c| json!({"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}))
                            .collect();
                    }
                    m
                }
                // The API has no error flag on a tool message: say it in
                // the content so the model can tell.
                Step::ToolResult { call_id, content, is_error, .. } => {
                    let content = if *is_error { format!("ERROR: {content}") } else { content.clone() };
                    json!({"role": "tool", "tool_call_id": call_id, "content": content})
                }
                Step::User { text } => json!({"role": "user", "content": text}),
            });
            if last_result && !shown.is_empty() {
                messages.push(json!({"role": "user", "content": std::mem::take(&mut shown)}));
            }
        }
        let mut body = json!({
            "model": self.model,
            "messages": messages,
            "stream": true,
            "stream_options": {"include_usage": true},
        });
        if !req.tools.is_empty() {
            body["tools"] = req
                .tools
                .iter()
                .map(|t| json!({"type": "function", "function": {"name": t.name, "description": t.description, "parameters": t.parameters}}))
                .collect();
        }
        body
    }
}

/// An image as an `image_url` part with a `data:` URL.
fn image_part(i: &crate::Image) -> Value {
    let url = format!("data:{};base64,{}", i.media_type, crate::base64(&i.data));
    json!({"type": "image_url", "image_url": {"url": url}})
}

impl Provider for OpenAi {
    fn name(&self) -> &str {
        "openai"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            tools: true,
            streaming: true,
            context_window: 8192,
            vision: self.vision,
        }
    }

    fn turn(
        &mut self,
        req: &TurnRequest,
        sink: &mut dyn FnMut(Event),
    ) -> Result<TurnResult, ProviderError> {
        let body = self.body(req).to_string();
        let mut r = post(
            &self.socket,
            "/openai/chat/completions",
            &[],
            &body,
            self.timeout,
        )
        .and_then(|resp| {
            if resp.status == 200 {
                Ok(resp.body)
            } else {
                Err(status_error(resp))
            }
        })?;
        let mut text = String::new();
        let mut usage = Usage::default();
        let mut calls = Calls::default();
        let (mut line, mut whole) = (String::new(), String::new());
        let (mut saw_data, mut done, mut finished) = (false, false, false);
        loop {
            line.clear();
            let n = r
                .read_line(&mut line)
                .map_err(|e| err(ErrorKind::Timeout, true, format!("reading the stream: {e}")))?;
            if n == 0 {
                break;
            }
            let l = line.trim_end();
            let Some(data) = l.strip_prefix("data:") else {
                if !saw_data {
                    whole.push_str(&line);
                }
                continue;
            };
            saw_data = true;
            let data = data.trim();
            if data == "[DONE]" {
                done = true;
                break;
            }
            let v: Value = serde_json::from_str(data)
                .map_err(|e| err(ErrorKind::Server, true, format!("bad stream event: {e}")))?;
            if v["error"].is_object() {
                return Err(api_error(&v["error"]));
            }
            let choice = &v["choices"][0];
            if let Some(d) = choice["delta"]["content"]
                .as_str()
                .filter(|d| !d.is_empty())
            {
                text.push_str(d);
                sink(Event::Text(d.to_owned()));
            }
            if let Some(frags) = choice["delta"]["tool_calls"].as_array() {
                for (pos, f) in frags.iter().enumerate() {
                    calls.add(f, pos);
                }
            }
            if choice["finish_reason"].is_string() {
                finished = true;
            }
            if let Some(u) = v.get("usage").filter(|u| u.is_object()) {
                usage.input_tokens = u["prompt_tokens"].as_u64().unwrap_or(0);
                usage.output_tokens = u["completion_tokens"].as_u64().unwrap_or(0);
            }
        }
        if !saw_data {
            // A server that ignored `stream: true` answers with one JSON body.
            if whole.trim().is_empty() {
                return Err(err(ErrorKind::Server, true, "the server closed the response without a body (truncated); trying again may help"));
            }
            let v: Value = serde_json::from_str(whole.trim())
                .map_err(|e| err(ErrorKind::Server, true, format!("bad response: {e}")))?;
            if v["error"].is_object() {
                return Err(api_error(&v["error"]));
            }
            let msg = &v["choices"][0]["message"];
            text = msg["content"].as_str().unwrap_or("").to_owned();
            if !text.is_empty() {
                sink(Event::Text(text.clone()));
            }
            for (pos, c) in msg["tool_calls"]
                .as_array()
                .into_iter()
                .flatten()
                .enumerate()
            {
                calls.add(c, pos);
            }
            if let Some(u) = v.get("usage").filter(|u| u.is_object()) {
                usage.input_tokens = u["prompt_tokens"].as_u64().unwrap_or(0);
                usage.output_tokens = u["completion_tokens"].as_u64().unwrap_or(0);
            }
        } else if !done && !finished {
            return Err(err(
                ErrorKind::Server,
                true,
                format!("the stream ended before the model finished (truncated after {} characters); trying again may help", text.len()),
            ));
        }
        let tool_calls = calls.finish();
        for c in &tool_calls {
            sink(Event::ToolCall {
                id: c.id.clone(),
                name: c.name.clone(),
                arguments: c.arguments.clone(),
            });
        }
        Ok(TurnResult {
            text,
            usage,
            tool_calls,
        })
    }
}

/// Tool calls being assembled from `index`-keyed fragments.
#[derive(Default)]
struct Calls(BTreeMap<u64, ToolCall>);

impl Calls {
    /// Adds one fragment (or a whole call, as non-streamed answers and some
    /// servers send); `pos` stands in for a missing `index`.
    fn add(&mut self, f: &Value, pos: usize) {
        let index = f["index"].as_u64().unwrap_or(pos as u64);
        let c = self.0.entry(index).or_insert_with(|| ToolCall {
            id: String::new(),
            name: String::new(),
            arguments: String::new(),
        });
        if let Some(id) = f["id"].as_str().filter(|s| !s.is_empty()) {
            c.id = id.to_owned();
        }
        if let Some(name) = f["function"]["name"].as_str() {
            c.name.push_str(name);
        }
        match &f["function"]["arguments"] {
            Value::String(a) => c.arguments.push_str(a),
            // Some servers send the arguments as an object, not as text.
            v @ Value::Object(_) => c.arguments.push_str(&v.to_string()),
            _ => {}
        }
    }

    fn finish(self) -> Vec<ToolCall> {
        self.0
            .into_iter()
            .map(|(i, mut c)| {
                if c.id.is_empty() {
                    c.id = format!("call_{i}");
                }
                if c.arguments.trim().is_empty() {
                    c.arguments = "{}".into();
                }
                c
            })
            .collect()
    }
}

/// An `error` object in a stream or body, classified by what retrying can do.
fn api_error(e: &Value) -> ProviderError {
    let message = e["message"].as_str().unwrap_or("(no message)").to_owned();
    let kind = e["type"].as_str().unwrap_or("");
    let code = match &e["code"] {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        _ => String::new(),
    };
    let msg = format!("{message} ({})", if code.is_empty() { kind } else { &code });
    if code == "429" || code.contains("rate_limit") || kind.contains("rate_limit") {
        err(ErrorKind::RateLimited, true, msg)
    } else if code == "503" || code == "529" || kind.contains("overloaded") {
        err(ErrorKind::Overloaded, true, msg)
    } else if code == "401"
        || code == "403"
        || kind.contains("authentication")
        || code == "invalid_api_key"
    {
        err(ErrorKind::Auth, false, msg)
    } else if kind.contains("invalid_request") || code == "400" || code == "context_length_exceeded"
    {
        err(ErrorKind::BadRequest, false, msg)
    } else if kind.contains("server_error") || code.starts_with('5') || kind.is_empty() {
        err(ErrorKind::Server, true, msg)
    } else {
        err(ErrorKind::Other, false, msg)
    }
}
