//! `openai`: OpenAI-compatible chat completions (Ollama, vLLM, llama.cpp's
//! server, OpenRouter…), streamed, through the session's credential proxy.
//!
//! The runner has no network: it speaks HTTP/1.1 over the proxy's Unix
//! socket (`POST /openai/chat/completions`), and the proxy adds the key.
//! This first version sends the system prompt and the formatted batch as
//! one user message (no tool calls yet) and reads the streamed deltas.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::{json, Value};

use crate::{Capabilities, ErrorKind, Event, Provider, ProviderError, TurnRequest, TurnResult, Usage};

pub struct OpenAi {
    pub socket: PathBuf,
    pub model: String,
    pub timeout: Duration,
}

fn err(kind: ErrorKind, retryable: bool, message: impl Into<String>) -> ProviderError {
    ProviderError { message: message.into(), retryable, kind }
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
        messages.push(json!({"role": "user", "content": req.prompt}));
        let body = json!({"model": self.model, "messages": messages, "stream": true}).to_string();
        let mut s = UnixStream::connect(&self.socket)
            .map_err(|e| err(ErrorKind::Other, true, format!("cannot reach the credential proxy at {}: {e}", self.socket.display())))?;
        s.set_read_timeout(Some(self.timeout)).ok();
        write!(
            s,
            "POST /openai/chat/completions HTTP/1.1\r\nhost: proxy\r\ncontent-type: application/json\r\naccept: text/event-stream\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        )
        .map_err(|e| err(ErrorKind::Other, true, format!("writing to the proxy: {e}")))?;
        let mut r = BufReader::new(s);
        let (status, chunked) = read_head(&mut r)?;
        let mut body_reader: Box<dyn BufRead> = if chunked { Box::new(BufReader::new(Chunked { inner: r, left: 0, done: false })) } else { Box::new(r) };
        if status != 200 {
            let mut text = String::new();
            let _ = body_reader.read_to_string(&mut text);
            let text: String = text.chars().take(300).collect();
            return Err(match status {
                429 => err(ErrorKind::RateLimited, true, text),
                401 | 403 => err(ErrorKind::Auth, false, format!("HTTP {status}: {text}")),
                400 | 404 | 422 => err(ErrorKind::BadRequest, false, format!("HTTP {status}: {text}")),
                529 | 503 => err(ErrorKind::Overloaded, true, format!("HTTP {status}: {text}")),
                _ => err(ErrorKind::Server, status >= 500, format!("HTTP {status}: {text}")),
            });
        }
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
        Ok(TurnResult { text, usage })
    }
}

/// Reads the status line and headers; returns (status, chunked).
fn read_head(r: &mut impl BufRead) -> Result<(u16, bool), ProviderError> {
    let mut line = String::new();
    r.read_line(&mut line).map_err(|e| err(ErrorKind::Timeout, true, format!("reading the response: {e}")))?;
    let status: u16 = line.split_whitespace().nth(1).and_then(|s| s.parse().ok()).ok_or_else(|| err(ErrorKind::Server, true, format!("not an HTTP response: {line:?}")))?;
    let mut chunked = false;
    loop {
        line.clear();
        if r.read_line(&mut line).map_err(|e| err(ErrorKind::Timeout, true, e.to_string()))? == 0 || line == "\r\n" || line == "\n" {
            break;
        }
        let l = line.to_ascii_lowercase();
        if l.starts_with("transfer-encoding:") && l.contains("chunked") {
            chunked = true;
        }
    }
    Ok((status, chunked))
}

/// Decodes `Transfer-Encoding: chunked`.
struct Chunked<R> {
    inner: R,
    left: usize,
    done: bool,
}

impl<R: BufRead> Read for Chunked<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.done {
            return Ok(0);
        }
        if self.left == 0 {
            let mut size = String::new();
            if self.inner.read_line(&mut size)? == 0 {
                self.done = true;
                return Ok(0);
            }
            let size = size.trim();
            if size.is_empty() {
                // the CRLF after a chunk
                return self.read(buf);
            }
            let n = usize::from_str_radix(size.split(';').next().unwrap_or("0"), 16)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
            if n == 0 {
                self.done = true;
                return Ok(0);
            }
            self.left = n;
        }
        let want = buf.len().min(self.left);
        let got = self.inner.read(&mut buf[..want])?;
        if got == 0 {
            self.done = true;
        }
        self.left -= got;
        Ok(got)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunked_decoding() {
        let raw = b"5\r\nhello\r\n7;x=y\r\n, world\r\n0\r\n\r\n";
        let mut c = Chunked { inner: BufReader::new(&raw[..]), left: 0, done: false };
        let mut s = String::new();
        c.read_to_string(&mut s).unwrap();
        assert_eq!(s, "hello, world");
    }
}
