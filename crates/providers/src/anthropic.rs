//! `anthropic`: the Messages API, streamed, through the credential proxy
//! (`POST /anthropic/v1/messages`; the proxy adds `x-api-key`). The stable
//! system prompt is marked for prompt caching.

use std::io::BufRead;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::{json, Value};

use crate::http::{err, post, status_error};
use crate::{Capabilities, ErrorKind, Event, Provider, ProviderError, TurnRequest, TurnResult, Usage};

pub const API_VERSION: &str = "2023-06-01";

pub struct Anthropic {
    pub socket: PathBuf,
    pub model: String,
    pub max_tokens: u32,
    pub timeout: Duration,
}

impl Provider for Anthropic {
    fn name(&self) -> &str {
        "anthropic"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities { tools: false, streaming: true, context_window: 200_000 }
    }

    fn turn(&mut self, req: &TurnRequest, sink: &mut dyn FnMut(Event)) -> Result<TurnResult, ProviderError> {
        let mut messages: Vec<Value> = req.history.iter().map(|(role, content)| json!({"role": role, "content": content})).collect();
        messages.push(json!({"role": "user", "content": req.prompt}));
        let mut body = json!({
            "model": self.model,
            "max_tokens": self.max_tokens,
            "messages": messages,
            "stream": true,
        });
        if !req.system.is_empty() {
            body["system"] = json!([{"type": "text", "text": req.system, "cache_control": {"type": "ephemeral"}}]);
        }
        let (status, mut r) = post(&self.socket, "/anthropic/v1/messages", &[("anthropic-version", API_VERSION)], &body.to_string(), self.timeout)?;
        if status != 200 {
            return Err(status_error(status, r));
        }
        let (mut text, mut usage, mut line) = (String::new(), Usage::default(), String::new());
        loop {
            line.clear();
            if r.read_line(&mut line).map_err(|e| err(ErrorKind::Timeout, true, format!("reading the stream: {e}")))? == 0 {
                break;
            }
            let Some(data) = line.trim_end().strip_prefix("data:") else { continue };
            let v: Value = serde_json::from_str(data.trim()).map_err(|e| err(ErrorKind::Server, true, format!("bad stream event: {e}")))?;
            match v["type"].as_str() {
                Some("content_block_delta") => {
                    if let Some(t) = v["delta"]["text"].as_str() {
                        text.push_str(t);
                        sink(Event::Text(t.to_owned()));
                    }
                }
                Some("message_start") => usage.input_tokens = v["message"]["usage"]["input_tokens"].as_u64().unwrap_or(0),
                Some("message_delta") => usage.output_tokens = v["usage"]["output_tokens"].as_u64().unwrap_or(usage.output_tokens),
                Some("message_stop") => break,
                Some("error") => {
                    let kind = v["error"]["type"].as_str().unwrap_or("");
                    let msg = v["error"]["message"].as_str().unwrap_or("").to_owned();
                    return Err(match kind {
                        "overloaded_error" => err(ErrorKind::Overloaded, true, msg),
                        "rate_limit_error" => err(ErrorKind::RateLimited, true, msg),
                        "api_error" => err(ErrorKind::Server, true, msg),
                        _ => err(ErrorKind::Other, false, format!("{kind}: {msg}")),
                    });
                }
                _ => {}
            }
        }
        Ok(TurnResult { text, usage, tool_calls: Vec::new() })
    }
}
