//! `send_voice(text, to)`: a reply as a voice message (issue 17's
//! optional part, decision 0046). The host speaks the text with the
//! owner's OpenAI-compatible speech endpoint (its route on the proxy
//! socket; the sandbox has no network and never sees the key) and answers
//! OGG/Opus audio; it goes out as `voice.ogg` like any file, which
//! Telegram shows as a voice note. Offered when the install has
//! `[voice] speech_url` and the group's policy allows voice.

use std::io::{Read, Write};
use std::time::Duration;

use serde_json::{json, Map, Value};

use super::{spec, Args, ToolCtx, ToolError, ToolResult};
use pinch_providers::ToolSpec;

/// The host's route.
pub const SPEAK_PATH: &str = "/_pinch/voice/speak";
/// The largest audio read from the host.
const MAX_AUDIO: u64 = 10 * 1024 * 1024;

pub fn specs() -> Vec<ToolSpec> {
    vec![spec(
        "send_voice",
        "Send a voice message: the text is spoken (by the speech service the owner set up) and sent as audio. Use it \
         when the person asked for a voice reply or sent you voice notes and would rather listen; at most 4,096 \
         characters, written as it should be said (no Markdown).",
        json!({
            "type": "object",
            "properties": {
                "to": {"type": "string", "description": "A destination name; omit to answer the conversation you are answering."},
                "text": {"type": "string", "description": "What to say."}
            },
            "required": ["text"]
        }),
    )]
}

pub fn call(ctx: &mut ToolCtx<'_>, _: &str, m: &Map<String, Value>) -> ToolResult {
    let a = Args {
        tool: "send_voice",
        m,
    };
    let text = a.str("text")?;
    let addr = ctx.address(a.opt_str("to")?)?;
    let audio = speak(ctx, text).map_err(|why| ToolError(format!("send_voice: {why}")))?;
    super::messages::outbox_send(ctx, &addr, "voice.ogg", "the voice message", "", |dst| {
        dst.write_all(&audio).map(|()| audio.len() as u64)
    })
}

/// The host's audio for `text`, or why not.
fn speak(ctx: &mut ToolCtx<'_>, text: &str) -> Result<Vec<u8>, String> {
    let Some(socket) = ctx.cfg.proxy_socket.clone() else {
        return Err("not available: this runner has no credential proxy to ask".into());
    };
    let wait = ctx.cfg.timings.voice_ms;
    ctx.set_tool_in_flight(Some(("send_voice", wait)));
    let r = pinch_providers::http::post(
        &socket,
        SPEAK_PATH,
        &[],
        &json!({ "text": text }).to_string(),
        Duration::from_millis(wait),
    );
    ctx.set_tool_in_flight(None);
    let resp = r.map_err(|e| e.message)?;
    let status = resp.status;
    let mut body = Vec::new();
    resp.body
        .take(MAX_AUDIO + 1)
        .read_to_end(&mut body)
        .map_err(|e| format!("reading the host's answer: {e}"))?;
    if status != 200 {
        let v: Value = serde_json::from_slice(&body).unwrap_or_default();
        return Err(v["error"]
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| format!("the host answered {status}")));
    }
    if body.len() as u64 > MAX_AUDIO || !body.starts_with(b"OggS") {
        return Err("the host's answer is not OGG audio of a usable size".into());
    }
    Ok(body)
}
