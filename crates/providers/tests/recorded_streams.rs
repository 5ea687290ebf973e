//! The HTTP providers against recorded API streams.
//!
//! A real HTTP/1.1 server on a Unix socket (what the credential proxy is to
//! the runner) replays the files in `fixtures/` (each API's wire format:
//! SSE event streams and JSON error bodies) and records every request. The
//! tests assert on what the provider parsed and on what it sent, above all
//! on the second step of a tool round trip, where the calls and their
//! results must be replayed in the API's shape.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pinch_providers::anthropic::Anthropic;
use pinch_providers::openai::OpenAi;
use pinch_providers::{ErrorKind, Event, Provider, Step, ToolCall, ToolSpec, TurnRequest};
use serde_json::{json, Value};

/// One canned answer: status, fixture file, and whether to send the body
/// chunked (split at odd places, as proxies and servers do).
#[derive(Clone)]
struct Reply {
    status: u16,
    fixture: &'static str,
    chunked: bool,
}

fn ok(fixture: &'static str) -> Reply {
    Reply {
        status: 200,
        fixture,
        chunked: true,
    }
}

/// A request as the server saw it.
#[derive(Clone, Debug)]
struct Seen {
    path: String,
    headers: Vec<(String, String)>,
    body: Value,
}

impl Seen {
    fn header(&self, k: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(h, _)| h == k)
            .map(|(_, v)| v.as_str())
    }
}

struct FakeApi {
    socket: PathBuf,
    seen: Arc<Mutex<Vec<Seen>>>,
    _dir: tempfile::TempDir,
}

fn fixture(name: &str) -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("fixture {}: {e}", p.display()))
}

impl FakeApi {
    /// Serves `replies` in order, one per connection.
    fn start(replies: Vec<Reply>) -> FakeApi {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("llm.sock");
        let listener = UnixListener::bind(&socket).unwrap();
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let s2 = seen.clone();
        std::thread::spawn(move || {
            for reply in replies {
                let Ok((c, _)) = listener.accept() else {
                    return;
                };
                let mut r = BufReader::new(c.try_clone().unwrap());
                let mut request_line = String::new();
                r.read_line(&mut request_line).unwrap();
                let path = request_line
                    .split_whitespace()
                    .nth(1)
                    .unwrap_or("")
                    .to_owned();
                let mut headers = Vec::new();
                loop {
                    let mut line = String::new();
                    if r.read_line(&mut line).unwrap() == 0 || line == "\r\n" {
                        break;
                    }
                    if let Some((k, v)) = line.split_once(':') {
                        headers.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
                    }
                }
                let len: usize = headers
                    .iter()
                    .find(|(k, _)| k == "content-length")
                    .map(|(_, v)| v.parse().unwrap())
                    .unwrap_or(0);
                let mut body = vec![0u8; len];
                r.read_exact(&mut body).unwrap();
                let body = serde_json::from_slice(&body).expect("the provider sent JSON");
                s2.lock().unwrap().push(Seen {
                    path,
                    headers,
                    body,
                });
                let text = fixture(reply.fixture);
                let ctype = if reply.fixture.ends_with(".sse") {
                    "text/event-stream"
                } else {
                    "application/json"
                };
                let reason = if reply.status == 200 { "OK" } else { "Error" };
                let mut c = c;
                // A client may hang up once it has the last event it needs
                // (before the terminating chunk): not an error of the test.
                let sent = (|| -> std::io::Result<()> {
                    if reply.chunked {
                        write!(c, "HTTP/1.1 {} {reason}\r\ncontent-type: {ctype}\r\ntransfer-encoding: chunked\r\n\r\n", reply.status)?;
                        for piece in text.as_bytes().chunks(61) {
                            write!(c, "{:x}\r\n", piece.len())?;
                            c.write_all(piece)?;
                            c.write_all(b"\r\n")?;
                        }
                        // A cut-off stream ends without the last chunk.
                        if !reply.fixture.contains("truncated") {
                            c.write_all(b"0\r\n\r\n")?;
                        }
                    } else {
                        write!(c, "HTTP/1.1 {} {reason}\r\ncontent-type: {ctype}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n", reply.status, text.len())?;
                        c.write_all(text.as_bytes())?;
                    }
                    Ok(())
                })();
                if let Err(e) = sent {
                    eprintln!("fake API: the client closed the connection early ({e})");
                }
            }
        });
        FakeApi {
            socket,
            seen,
            _dir: dir,
        }
    }

    fn requests(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

fn openai(api: &FakeApi) -> OpenAi {
    OpenAi {
        socket: api.socket.clone(),
        model: "gpt-4o-mini".into(),
        timeout: Duration::from_secs(30),
        vision: false,
    }
}

fn anthropic(api: &FakeApi) -> Anthropic {
    Anthropic {
        socket: api.socket.clone(),
        model: "claude-sonnet-4-5".into(),
        max_tokens: 1024,
        timeout: Duration::from_secs(30),
    }
}

fn tools() -> Vec<ToolSpec> {
    vec![
        ToolSpec {
            name: "read_file".into(),
            description: "Read a file in the workspace".into(),
            parameters: json!({"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]}),
        },
        ToolSpec {
            name: "shell".into(),
            description: "Run a shell command in the sandbox".into(),
            parameters: json!({"type": "object", "properties": {"command": {"type": "string"}}, "required": ["command"]}),
        },
    ]
}

fn request(prompt: &str) -> TurnRequest {
    TurnRequest {
        system: "You are pinch.".into(),
        prompt: prompt.into(),
        texts: vec![prompt.into()],
        ..Default::default()
    }
}

/// Runs a turn, collecting the events.
fn run(
    p: &mut dyn Provider,
    req: &TurnRequest,
) -> (
    Result<pinch_providers::TurnResult, pinch_providers::ProviderError>,
    Vec<Event>,
) {
    let mut events = Vec::new();
    let r = p.turn(req, &mut |e| events.push(e));
    (r, events)
}

fn texts(events: &[Event]) -> String {
    events
        .iter()
        .filter_map(|e| {
            if let Event::Text(t) = e {
                Some(t.as_str())
            } else {
                None
            }
        })
        .collect()
}

fn tool_events(events: &[Event]) -> Vec<(String, String, String)> {
    events
        .iter()
        .filter_map(|e| {
            if let Event::ToolCall {
                id,
                name,
                arguments,
            } = e
            {
                Some((id.clone(), name.clone(), arguments.clone()))
            } else {
                None
            }
        })
        .collect()
}

/// The steps a runner appends after the first step of the round trip.
fn round_trip_steps(calls: &[ToolCall], text: &str) -> Vec<Step> {
    vec![
        Step::Assistant {
            text: text.into(),
            calls: calls.to_vec(),
        },
        Step::ToolResult {
            call_id: calls[0].id.clone(),
            name: calls[0].name.clone(),
            content: "buy milk".into(),
            is_error: false,
            images: Vec::new(),
        },
        Step::ToolResult {
            call_id: calls[1].id.clone(),
            name: calls[1].name.clone(),
            content: "date: command not found".into(),
            is_error: true,
            images: Vec::new(),
        },
        Step::User {
            text: "[follow-up] and thanks!".into(),
        },
    ]
}

// ---------------------------------------------------------------- openai

#[test]
fn openai_plain_text_reply() {
    let api = FakeApi::start(vec![ok("openai_text.sse")]);
    let (r, events) = run(&mut openai(&api), &request("hello"));
    let r = r.unwrap();
    assert_eq!(r.text, "Hello there! How can I help?");
    assert_eq!(texts(&events), r.text, "the text was streamed as it came");
    assert!(r.tool_calls.is_empty() && tool_events(&events).is_empty());
    assert_eq!(
        (r.usage.input_tokens, r.usage.output_tokens),
        (412, 9),
        "usage from the include_usage chunk"
    );
    let req = &api.requests()[0];
    assert_eq!(req.path, "/openai/chat/completions");
    assert_eq!(req.body["model"], "gpt-4o-mini");
    assert_eq!(req.body["stream"], true);
    assert_eq!(req.body["stream_options"], json!({"include_usage": true}));
    assert!(
        req.body.get("tools").is_none(),
        "no tools offered when there are none: {}",
        req.body
    );
    assert_eq!(
        req.body["messages"],
        json!([{"role": "system", "content": "You are pinch."}, {"role": "user", "content": "hello"}])
    );
}

#[test]
fn openai_tool_round_trip() {
    let api = FakeApi::start(vec![
        ok("openai_tool_call.sse"),
        Reply {
            status: 200,
            fixture: "openai_tool_answer.sse",
            chunked: false,
        },
    ]);
    let mut p = openai(&api);
    assert!(p.capabilities().tools);
    let mut req = request("what do my notes say, and what time is it?");
    req.history = vec![
        ("user".into(), "earlier question".into()),
        ("assistant".into(), "earlier answer".into()),
    ];
    req.tools = tools();

    // Step 1: the model calls two tools, their fragments interleaved by index.
    let (r, events) = run(&mut p, &req);
    let r = r.unwrap();
    assert_eq!(r.text, "");
    assert_eq!(
        r.tool_calls,
        vec![
            ToolCall {
                id: "call_Qx9fA2".into(),
                name: "read_file".into(),
                arguments: r#"{"path": "notes.md"}"#.into()
            },
            ToolCall {
                id: "call_Vb3kP0".into(),
                name: "shell".into(),
                arguments: r#"{"command": "date -u"}"#.into()
            },
        ]
    );
    assert_eq!(
        tool_events(&events),
        r.tool_calls
            .iter()
            .map(|c| (c.id.clone(), c.name.clone(), c.arguments.clone()))
            .collect::<Vec<_>>(),
        "one ToolCall event per completed call"
    );
    assert_eq!((r.usage.input_tokens, r.usage.output_tokens), (530, 41));
    let first = &api.requests()[0];
    assert_eq!(
        first.body["tools"],
        json!([
            {"type": "function", "function": {"name": "read_file", "description": "Read a file in the workspace", "parameters": tools()[0].parameters}},
            {"type": "function", "function": {"name": "shell", "description": "Run a shell command in the sandbox", "parameters": tools()[1].parameters}},
        ])
    );

    // Step 2: the calls and results are replayed; the model answers.
    req.steps = round_trip_steps(&r.tool_calls, "");
    // A step that said nothing and called nothing is not replayed.
    req.steps.insert(
        0,
        Step::Assistant {
            text: String::new(),
            calls: Vec::new(),
        },
    );
    let (r2, events2) = run(&mut p, &req);
    let r2 = r2.unwrap();
    assert_eq!(r2.text, "Your notes say: buy milk. It is 2026-11-28.");
    assert!(r2.tool_calls.is_empty());
    assert_eq!(texts(&events2), r2.text);
    let second = &api.requests()[1];
    let m = second.body["messages"].as_array().unwrap();
    assert_eq!(m.len(), 8, "{}", second.body);
    assert_eq!(m[0]["role"], "system");
    assert_eq!(
        (m[1]["content"].as_str(), m[2]["role"].as_str()),
        (Some("earlier question"), Some("assistant"))
    );
    assert_eq!(
        m[3],
        json!({"role": "user", "content": "what do my notes say, and what time is it?"})
    );
    assert_eq!(
        m[4],
        json!({"role": "assistant", "content": null, "tool_calls": [
            {"id": "call_Qx9fA2", "type": "function", "function": {"name": "read_file", "arguments": "{\"path\": \"notes.md\"}"}},
            {"id": "call_Vb3kP0", "type": "function", "function": {"name": "shell", "arguments": "{\"command\": \"date -u\"}"}},
        ]})
    );
    assert_eq!(
        m[5],
        json!({"role": "tool", "tool_call_id": "call_Qx9fA2", "content": "buy milk"})
    );
    assert_eq!(
        m[6],
        json!({"role": "tool", "tool_call_id": "call_Vb3kP0", "content": "ERROR: date: command not found"})
    );
    assert_eq!(
        m[7],
        json!({"role": "user", "content": "[follow-up] and thanks!"})
    );
    assert_eq!(
        second.body["tools"], first.body["tools"],
        "tools are offered at every step"
    );
}

#[test]
fn openai_error_event_is_a_retryable_server_error() {
    let api = FakeApi::start(vec![ok("openai_error.sse")]);
    let e = run(&mut openai(&api), &request("hi")).0.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Server, "{e}");
    assert!(e.retryable);
    assert!(e.message.contains("The server had an error"), "{e}");
}

#[test]
fn openai_truncated_stream_is_retryable() {
    let api = FakeApi::start(vec![ok("openai_truncated.sse")]);
    let (r, events) = run(&mut openai(&api), &request("tell me a long story"));
    let e = r.unwrap_err();
    assert!(
        e.retryable && matches!(e.kind, ErrorKind::Server | ErrorKind::Timeout),
        "{e:?}"
    );
    assert!(e.message.contains("truncated"), "{e}");
    assert_eq!(
        texts(&events),
        "The first part of a long answer that never",
        "what came was streamed"
    );
}

#[test]
fn openai_429_then_success() {
    let api = FakeApi::start(vec![
        Reply {
            status: 429,
            fixture: "openai_429.json",
            chunked: false,
        },
        ok("openai_text.sse"),
    ]);
    let mut p = openai(&api);
    let e = run(&mut p, &request("hello")).0.unwrap_err();
    assert_eq!(e.kind, ErrorKind::RateLimited);
    assert!(
        e.retryable && e.message.contains("Rate limit reached"),
        "{e}"
    );
    let r = run(&mut p, &request("hello")).0.unwrap();
    assert_eq!(r.text, "Hello there! How can I help?");
    let reqs = api.requests();
    assert_eq!(reqs.len(), 2);
    assert_eq!(
        reqs[0].body, reqs[1].body,
        "the retry sends the same request"
    );
}

#[test]
fn openai_non_streamed_answer_with_tool_calls() {
    // Some servers ignore `stream: true` when tools are offered.
    let api = FakeApi::start(vec![Reply {
        status: 200,
        fixture: "openai_nonstream_tool_call.json",
        chunked: false,
    }]);
    let mut req = request("read my notes");
    req.tools = tools();
    let (r, events) = run(&mut openai(&api), &req);
    let r = r.unwrap();
    assert_eq!(
        r.tool_calls,
        vec![ToolCall {
            id: "call_7hq2m1".into(),
            name: "read_file".into(),
            arguments: r#"{"path":"notes.md"}"#.into()
        }]
    );
    assert_eq!(tool_events(&events).len(), 1);
    assert!(
        texts(&events).is_empty(),
        "an empty content is not a text event"
    );
    assert_eq!((r.usage.input_tokens, r.usage.output_tokens), (300, 22));
}

// ------------------------------------------------------------- anthropic

#[test]
fn anthropic_plain_text_reply() {
    let api = FakeApi::start(vec![ok("anthropic_text.sse")]);
    let (r, events) = run(&mut anthropic(&api), &request("hello"));
    let r = r.unwrap();
    assert_eq!(r.text, "Hello! What can I do for you today?");
    assert_eq!(texts(&events), r.text);
    assert!(r.tool_calls.is_empty());
    assert_eq!(
        (r.usage.input_tokens, r.usage.output_tokens),
        (18 + 1250, 12),
        "cached input counts as input"
    );
    let req = &api.requests()[0];
    assert_eq!(req.path, "/anthropic/v1/messages");
    assert_eq!(req.header("anthropic-version"), Some("2023-06-01"));
    assert_eq!(
        req.header("x-api-key"),
        None,
        "the runner never holds a key"
    );
    assert_eq!(
        req.body["system"],
        json!([{"type": "text", "text": "You are pinch.", "cache_control": {"type": "ephemeral"}}])
    );
    assert!(req.body.get("tools").is_none());
    assert_eq!(req.body["max_tokens"], 1024);
    assert_eq!(
        req.body["messages"],
        json!([{"role": "user", "content": [{"type": "text", "text": "hello"}]}])
    );
}

#[test]
fn anthropic_tool_round_trip() {
    let api = FakeApi::start(vec![
        ok("anthropic_tool_call.sse"),
        Reply {
            status: 200,
            fixture: "anthropic_tool_answer.sse",
            chunked: false,
        },
    ]);
    let mut p = anthropic(&api);
    assert!(p.capabilities().tools);
    let mut req = request("what do my notes say, and what time is it?");
    req.tools = tools();

    let (r, events) = run(&mut p, &req);
    let r = r.unwrap();
    assert_eq!(r.text, "Let me read your notes first.");
    assert_eq!(
        r.tool_calls,
        vec![
            ToolCall {
                id: "toolu_01A8vGm3sN".into(),
                name: "read_file".into(),
                arguments: r#"{"path": "notes.md"}"#.into()
            },
            ToolCall {
                id: "toolu_01Hc2LwQ9e".into(),
                name: "shell".into(),
                arguments: r#"{"command": "date -u"}"#.into()
            },
        ]
    );
    assert_eq!(tool_events(&events).len(), 2);
    assert_eq!(texts(&events), "Let me read your notes first.");
    let first = &api.requests()[0];
    assert_eq!(
        first.body["tools"],
        json!([
            {"name": "read_file", "description": "Read a file in the workspace", "input_schema": tools()[0].parameters},
            {"name": "shell", "description": "Run a shell command in the sandbox", "input_schema": tools()[1].parameters,
             "cache_control": {"type": "ephemeral"}},
        ]),
        "cache_control on the last tool caches tools and system together"
    );

    req.steps = round_trip_steps(&r.tool_calls, &r.text);
    let (r2, _) = run(&mut p, &req);
    let r2 = r2.unwrap();
    assert_eq!(
        r2.text,
        "Your notes say: buy milk. The clock was not available."
    );
    assert!(r2.tool_calls.is_empty());
    let second = &api.requests()[1];
    assert_eq!(
        second.body["messages"],
        json!([
            {"role": "user", "content": [{"type": "text", "text": "what do my notes say, and what time is it?"}]},
            {"role": "assistant", "content": [
                {"type": "text", "text": "Let me read your notes first."},
                {"type": "tool_use", "id": "toolu_01A8vGm3sN", "name": "read_file", "input": {"path": "notes.md"}},
                {"type": "tool_use", "id": "toolu_01Hc2LwQ9e", "name": "shell", "input": {"command": "date -u"}},
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_01A8vGm3sN", "content": "buy milk", "is_error": false},
                {"type": "tool_result", "tool_use_id": "toolu_01Hc2LwQ9e", "content": "date: command not found", "is_error": true},
                {"type": "text", "text": "[follow-up] and thanks!"},
            ]},
        ])
    );
}

#[test]
fn anthropic_replays_unparseable_arguments_as_an_object() {
    let api = FakeApi::start(vec![ok("anthropic_text.sse")]);
    let mut req = request("x");
    let bad = ToolCall {
        id: "toolu_1".into(),
        name: "shell".into(),
        arguments: "{\"command\": ".into(),
    };
    req.steps = vec![
        Step::Assistant {
            text: String::new(),
            calls: vec![bad],
        },
        Step::ToolResult {
            call_id: "toolu_1".into(),
            name: "shell".into(),
            content: "arguments are not valid JSON".into(),
            is_error: true,
            images: Vec::new(),
        },
    ];
    run(&mut anthropic(&api), &req).0.unwrap();
    let body = &api.requests()[0].body;
    assert_eq!(
        body["messages"][1]["content"][0]["input"],
        json!({"unparsed_arguments": "{\"command\": "})
    );
}

#[test]
fn anthropic_error_event_is_classified() {
    let api = FakeApi::start(vec![ok("anthropic_error.sse")]);
    let (r, events) = run(&mut anthropic(&api), &request("hi"));
    let e = r.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Overloaded);
    assert!(e.retryable);
    assert_eq!(texts(&events), "Sure");
}

#[test]
fn anthropic_truncated_stream_is_retryable() {
    let api = FakeApi::start(vec![ok("anthropic_truncated.sse")]);
    let e = run(&mut anthropic(&api), &request("tell me a long story"))
        .0
        .unwrap_err();
    assert!(
        e.retryable && matches!(e.kind, ErrorKind::Server | ErrorKind::Timeout),
        "{e:?}"
    );
    assert!(e.message.contains("truncated"), "{e}");
}

#[test]
fn anthropic_429_and_529_then_success() {
    let api = FakeApi::start(vec![
        Reply {
            status: 429,
            fixture: "anthropic_429.json",
            chunked: false,
        },
        Reply {
            status: 529,
            fixture: "anthropic_529.json",
            chunked: true,
        },
        ok("anthropic_text.sse"),
    ]);
    let mut p = anthropic(&api);
    let e = run(&mut p, &request("hello")).0.unwrap_err();
    assert_eq!(e.kind, ErrorKind::RateLimited);
    assert!(e.retryable && e.message.contains("rate limit"), "{e}");
    let e = run(&mut p, &request("hello")).0.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Overloaded);
    assert!(e.retryable, "{e}");
    let r = run(&mut p, &request("hello")).0.unwrap();
    assert_eq!(r.text, "Hello! What can I do for you today?");
    assert_eq!(api.requests().len(), 3);
}

// ---------------------------------------------------------------- vision

/// A photo sent with the prompt: the bytes as a PNG would have them.
fn photo() -> pinch_providers::Image {
    let mut data = b"\x89PNG\r\n\x1a\n".to_vec();
    data.extend((0..3000u32).map(|i| (i * 7 % 251) as u8));
    pinch_providers::Image {
        name: "receipt.png".into(),
        media_type: "image/png".into(),
        data,
    }
}

fn unbase64(s: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.decode(s).unwrap()
}

/// The endpoint receives the image as the API's own block: Anthropic an
/// `image` block with base64 `source` before the text; OpenAI an
/// `image_url` part with a `data:` URL after it (only when the model is
/// said to take images).
#[test]
fn images_reach_both_apis_in_their_shapes() {
    let mut req = request("what is on this receipt?");
    req.images = vec![photo()];

    let api = FakeApi::start(vec![ok("anthropic_text.sse")]);
    run(&mut anthropic(&api), &req).0.unwrap();
    let content = &api.requests()[0].body["messages"][0]["content"];
    assert_eq!(content[0]["type"], "image");
    assert_eq!(content[0]["source"]["type"], "base64");
    assert_eq!(content[0]["source"]["media_type"], "image/png");
    assert_eq!(
        unbase64(content[0]["source"]["data"].as_str().unwrap()),
        photo().data
    );
    assert_eq!(
        content[1],
        json!({"type": "text", "text": "what is on this receipt?"})
    );

    let api = FakeApi::start(vec![ok("openai_text.sse")]);
    let mut seeing = openai(&api);
    seeing.vision = true;
    run(&mut seeing, &req).0.unwrap();
    let content = &api.requests()[0].body["messages"][1]["content"];
    assert_eq!(
        content[0],
        json!({"type": "text", "text": "what is on this receipt?"})
    );
    assert_eq!(content[1]["type"], "image_url");
    let url = content[1]["image_url"]["url"].as_str().unwrap();
    let b64 = url.strip_prefix("data:image/png;base64,").expect(url);
    assert_eq!(unbase64(b64), photo().data);

    // A model not said to take images gets the text alone.
    let api = FakeApi::start(vec![ok("openai_text.sse")]);
    run(&mut openai(&api), &req).0.unwrap();
    assert_eq!(
        api.requests()[0].body["messages"][1]["content"],
        "what is on this receipt?"
    );
}

/// An image a tool showed (`view_image`) goes back with its result:
/// Anthropic inside the `tool_result` block after its text; OpenAI (whose
/// tool messages take only text) as a user message after the step's last
/// tool message, named — never between two tool messages.
#[test]
fn a_tool_results_images_reach_both_apis_in_their_shapes() {
    let mut req = request("look at the chart");
    let calls = vec![
        ToolCall {
            id: "call_1".into(),
            name: "view_image".into(),
            arguments: r#"{"path":"chart.png"}"#.into(),
        },
        ToolCall {
            id: "call_2".into(),
            name: "shell".into(),
            arguments: r#"{"command":"ls"}"#.into(),
        },
    ];
    req.steps = vec![
        Step::Assistant {
            text: String::new(),
            calls: calls.clone(),
        },
        Step::ToolResult {
            call_id: "call_1".into(),
            name: "view_image".into(),
            content: "Showing chart.png".into(),
            is_error: false,
            images: vec![photo()],
        },
        Step::ToolResult {
            call_id: "call_2".into(),
            name: "shell".into(),
            content: "chart.png".into(),
            is_error: false,
            images: Vec::new(),
        },
    ];

    let api = FakeApi::start(vec![ok("anthropic_text.sse")]);
    run(&mut anthropic(&api), &req).0.unwrap();
    let msgs = api.requests()[0].body["messages"].clone();
    let result = &msgs[2]["content"][0];
    assert_eq!(result["type"], "tool_result");
    assert_eq!(result["tool_use_id"], "call_1");
    assert_eq!(
        result["content"][0],
        json!({"type": "text", "text": "Showing chart.png"})
    );
    assert_eq!(result["content"][1]["type"], "image");
    assert_eq!(
        unbase64(result["content"][1]["source"]["data"].as_str().unwrap()),
        photo().data
    );
    assert_eq!(msgs[2]["content"][1]["content"], "chart.png");

    let api = FakeApi::start(vec![ok("openai_text.sse")]);
    let mut seeing = openai(&api);
    seeing.vision = true;
    run(&mut seeing, &req).0.unwrap();
    let msgs = api.requests()[0].body["messages"].clone();
    let roles: Vec<&str> = msgs
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["role"].as_str().unwrap())
        .collect();
    assert_eq!(
        roles,
        ["system", "user", "assistant", "tool", "tool", "user"],
        "{msgs:#}"
    );
    let shown = &msgs[5]["content"];
    assert_eq!(
        shown[0],
        json!({"type": "text", "text": "[view_image shows receipt.png]"})
    );
    let url = shown[1]["image_url"]["url"].as_str().unwrap();
    assert_eq!(
        unbase64(url.strip_prefix("data:image/png;base64,").expect(url)),
        photo().data
    );
    // A model not said to take images: no image message at all.
    let api = FakeApi::start(vec![ok("openai_text.sse")]);
    run(&mut openai(&api), &req).0.unwrap();
    assert_eq!(
        api.requests()[0].body["messages"].as_array().unwrap().len(),
        5
    );
}
