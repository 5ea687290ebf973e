//! Doctor's lines on what the agent reaches through the host (decisions
//! 0042 and 0046): `web_fetch`, the search backend and the transcription
//! endpoint. Optional features that are off are said plainly, with the
//! setting that turns them on; a configured service that cannot be reached
//! is a warning.

use pinch_host::HostConfig;

use super::{ok, reachable, warn, Check};

pub(super) fn checks(cfg: &HostConfig) -> Vec<Check> {
    let w = &cfg.web;
    let mut out = vec![ok(
        "web",
        if w.fetch {
            "web_fetch is on: agents read pages through the host (private addresses refused)"
        } else {
            "web_fetch is off ([web_fetch] enabled = false)"
        },
    )];
    match &w.search {
        None => out.push(ok(
            "web",
            "no search backend: web_search is not offered (set [web_search] backend = \"searxng\", \"brave\" or \"tavily\")",
        )),
        Some(b) => out.push(ok("web", format!("web_search asks {}", b.name()))),
    }
    match &w.voice {
        None => out.push(ok(
            "voice",
            "voice notes reach the agent as files only: transcribing them needs an endpoint, and pinch ships no offline \
             speech model. Set [voice] url to an OpenAI-compatible /v1/audio/transcriptions URL (OpenAI or Groq with \
             their key, or a local whisper.cpp or faster-whisper server)",
        )),
        Some(v) => match reachable(&v.url) {
            Ok(()) => out.push(ok(
                "voice",
                format!(
                    "voice notes are transcribed by {} (model {}{})",
                    v.url,
                    v.model,
                    if v.key.is_some() { ", key set" } else { "" }
                ),
            )),
            Err(e) => out.push(warn(
                "voice",
                format!("the transcription endpoint {} cannot be reached: {e}", v.url),
                "start the server, or correct [voice] url in pinch.toml; until then voice notes reach the agent untranscribed, with the reason",
            )),
        },
    }
    match &w.speech {
        None => out.push(ok(
            "voice",
            "replies as voice are off (set [voice] speech_url to an OpenAI-compatible /v1/audio/speech URL to offer send_voice)",
        )),
        Some(sp) => match reachable(&sp.url) {
            Ok(()) => out.push(ok(
                "voice",
                format!("voice replies are spoken by {} (model {}, voice {})", sp.url, sp.model, sp.voice),
            )),
            Err(e) => out.push(warn(
                "voice",
                format!("the speech endpoint {} cannot be reached: {e}", sp.url),
                "start the server, or correct [voice] speech_url in pinch.toml; until then send_voice says it failed",
            )),
        },
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn voice_without_an_endpoint_is_said_and_an_unreachable_one_warned() {
        let mut cfg = HostConfig::new("/tmp/x".into());
        let lines = checks(&cfg);
        let voice = lines.iter().find(|c| c.area == "voice").unwrap();
        assert!(
            matches!(voice.level, super::super::Level::Ok)
                && voice.what.contains("needs an endpoint")
                && voice.what.contains("[voice] url"),
            "{voice:?}"
        );
        // A port nothing listens on.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        cfg.web.voice = Some(pinch_web::voice::Endpoint {
            url: format!("http://127.0.0.1:{port}/v1/audio/transcriptions"),
            model: "whisper-1".into(),
            key: None,
            language: None,
            timeout: std::time::Duration::from_secs(5),
            per_minute: 10,
        });
        let lines = checks(&cfg);
        let voice = lines.iter().find(|c| c.area == "voice").unwrap();
        assert!(
            matches!(voice.level, super::super::Level::Warn)
                && voice.what.contains("cannot be reached"),
            "{voice:?}"
        );
    }
}
