//! `openai`: OpenAI-compatible chat completions (Ollama, vLLM, llama.cpp's
//! server, OpenRouter…), streamed, through the session's credential proxy.
//!
//! The runner has no network: it speaks HTTP/1.1 over the proxy's Unix
//! socket (`POST /openai/chat/completions`), and the proxy adds the key.
//! This first version sends the system prompt and the formatted batch as
//! one user message (no tool calls yet) and reads the streamed deltas.

use std::io::BufRead;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::{json, Value};

use crate::http::{err, post, status_error};
use crate::{Capabilities, ErrorKind, Event, Provider, ProviderError, TurnRequest, TurnResult, Usage};

pub struct OpenAi {
    pub socket: PathBuf,
    pub model: String,
    pub timeout: Duration,
}

impl Provider for OpenAi {
    fn name(&self) -> &str {
        "openai"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities { tools: false, streaming: true, context_window: 8192 }
    }

    fn turn(&mut self, req: &TurnRequest, sink: &mut dyn FnMut(Event)) -> Result<TurnResult, ProviderError> {
        let mut messages = Vec::new();
        if !req.system.is_empty() {
            messages.push(json!({"role": "system", "content": req.system}));
        }
        for (role, content) in &req.history {
            messages.push(json!({"role": role, "content": content}));
        }
        messages.push(json!({"role": "user", "content": req.prompt}));
        let body = json!({"model": self.model, "messages": messages, "stream": true}).to_string();
        let mut body_reader = post(&self.socket, "/openai/chat/completions", &[], &body, self.timeout)
            .and_then(|(status, r)| if status == 200 { Ok(r) } else { Err(status_error(status, r)) })?;
        let mut text = String::new();
        let mut usage = Usage::default();
        let mut line = String::new();
        let mut whole = String::new();
        loop {
            line.clear();
            let n = body_reader.read_line(&mut line).map_err(|e| err(ErrorKind::Timeout, true, format!("reading the stream: {e}")))?;
            if n == 0 {
                break;
            }
            let l = line.trim_end();
            let Some(data) = l.strip_prefix("data:") else {
                whole.push_str(&line);
                continue;
            };
            let data = data.trim();
            if data == "[DONE]" {
                break;
            }
            let v: Value = serde_json::from_str(data).map_err(|e| err(ErrorKind::Server, true, format!("bad stream event: {e}")))?;
            if let Some(d) = v["choices"][0]["delta"]["content"].as_str() {
                text.push_str(d);
                sink(Event::Text(d.to_owned()));
            }
            if let Some(u) = v.get("usage").filter(|u| u.is_object()) {
                usage.input_tokens = u["prompt_tokens"].as_u64().unwrap_or(0);
                usage.output_tokens = u["completion_tokens"].as_u64().unwrap_or(0);
            }
        }
        // A server that ignored `stream: true` answers with one JSON body.
        if text.is_empty() && !whole.trim().is_empty() {
            let v: Value = serde_json::from_str(whole.trim()).map_err(|e| err(ErrorKind::Server, true, format!("bad response: {e}")))?;
            text = v["choices"][0]["message"]["content"].as_str().unwrap_or("").to_owned();
            sink(Event::Text(text.clone()));
        }
        Ok(TurnResult { text, usage, tool_calls: Vec::new() })
    }
}

