//! Voice notes and audio files, transcribed before the turn (issue 17,
//! decision 0046): for each audio attachment of a chat message the runner
//! names the file to the host's route on the proxy socket; the host reads
//! its own copy from the session's inbox and asks the owner's
//! transcription endpoint. The transcript is added to
//! the message's text with a marker, so the prompt, the stored
//! conversation and the memory index all carry it; the audio stays in the
//! inbox. A note that cannot be transcribed is named with the reason.

use std::io::Read;
use std::time::Duration;

use pinch_proto::content::{Attachment, InContent};
use pinch_proto::runner_config::RunnerConfig;

use crate::plan::Row;
use crate::Runner;

/// The host's route.
pub const TRANSCRIBE_PATH: &str = "/_pinch/voice/transcribe";
/// The in-flight name the host's stuck check sees while one is transcribed.
const IN_FLIGHT: &str = "transcribe_voice";

/// The media type of an audio file the endpoints take, from its MIME type
/// or name.
pub fn audio_type(mime: Option<&str>, name: &str) -> Option<&'static str> {
    let (m, ext) = crate::vision::type_hints(mime, name);
    match (m.as_deref(), ext.as_deref()) {
        (Some("audio/ogg" | "audio/opus" | "application/ogg"), _)
        | (_, Some("ogg" | "oga" | "opus")) => Some("audio/ogg"),
        (Some("audio/mpeg" | "audio/mp3"), _) | (_, Some("mp3" | "mpga" | "mpeg")) => {
            Some("audio/mpeg")
        }
        (Some("audio/mp4" | "audio/m4a" | "audio/x-m4a" | "audio/aac"), _) | (_, Some("m4a")) => {
            Some("audio/mp4")
        }
        (Some("audio/wav" | "audio/x-wav" | "audio/wave"), _) | (_, Some("wav")) => {
            Some("audio/wav")
        }
        (Some("audio/webm"), _) => Some("audio/webm"),
        (Some("audio/flac" | "audio/x-flac"), _) | (_, Some("flac")) => Some("audio/flac"),
        _ => None,
    }
}

impl Runner {
    /// Adds a transcript (or the reason there is none) to every chat
    /// message of `rows` that carries audio. While the host transcribes,
    /// the runner declares it in flight (bounded by `voice_ms`), so the
    /// host's stuck check waits for it.
    pub(crate) fn transcribe(&mut self, rows: &mut [Row<'_>]) {
        let mut marked = false;
        for (_, content) in rows.iter_mut() {
            let InContent::Chat(chat) = content else {
                continue;
            };
            let mut lines = Vec::new();
            for a in &chat.attachments {
                if audio_type(a.mime.as_deref(), &a.name).is_none() {
                    continue;
                }
                if !self.cfg.web.voice {
                    lines.push(format!(
                        "[voice note {}: not transcribed — {}]",
                        a.name,
                        not_configured()
                    ));
                    continue;
                }
                // Declared afresh for each file: each may take the
                // whole bound.
                {
                    marked = true;
                    let wait = self.cfg.timings.voice_ms;
                    let _ = pinch_proto::progress::set_tool(
                        &self.out,
                        &self.cfg.runner_id,
                        Some((IN_FLIGHT, i64::try_from(wait).unwrap_or(i64::MAX))),
                        &pinch_proto::time::now(),
                    );
                }
                lines.push(match transcribe_one(&self.cfg, a) {
                    Ok(t) if t.trim().is_empty() => {
                        format!("[voice note {}: transcribed, no words in it]", a.name)
                    }
                    Ok(t) => {
                        tracing::info!(file = %a.name, chars = t.chars().count(), "voice note transcribed");
                        format!("[voice note {}, transcribed]: {}", a.name, t.trim())
                    }
                    Err(why) => {
                        tracing::warn!(file = %a.name, "voice note not transcribed: {why}");
                        format!("[voice note {} could not be transcribed: {why}]", a.name)
                    }
                });
            }
            for l in lines {
                if !chat.text.is_empty() {
                    chat.text.push('\n');
                }
                chat.text.push_str(&l);
            }
        }
        if marked {
            // The model call that follows is declared afresh.
            let _ = pinch_proto::progress::set_tool(
                &self.out,
                &self.cfg.runner_id,
                None,
                &pinch_proto::time::now(),
            );
            self.model_marked = false;
        }
    }
}

/// Why voice notes have no transcript on an install without `[voice]`.
fn not_configured() -> &'static str {
    "this install has no transcription endpoint; the owner can set [voice] url in pinch.toml"
}

/// One file's transcript from the host, or why not. The host reads the
/// file from its own copy of the inbox: the runner only names it.
fn transcribe_one(cfg: &RunnerConfig, a: &Attachment) -> Result<String, String> {
    let Some(socket) = cfg.proxy_socket.as_deref() else {
        return Err("this runner has no credential proxy to ask".into());
    };
    let body = serde_json::json!({ "path": a.path }).to_string();
    let resp = pinch_providers::http::post(
        socket,
        TRANSCRIBE_PATH,
        &[],
        &body,
        Duration::from_millis(cfg.timings.voice_ms),
    )
    .map_err(|e| e.message)?;
    let status = resp.status;
    let mut text = String::new();
    resp.body
        .take(2 * 1024 * 1024)
        .read_to_string(&mut text)
        .map_err(|e| format!("reading the host's answer: {e}"))?;
    let v: serde_json::Value = serde_json::from_str(&text).map_err(|_| {
        let head: String = text.chars().take(300).collect();
        format!("the host answered {status}: {head}")
    })?;
    if status != 200 {
        return Err(v["error"].as_str().unwrap_or("no reason given").to_owned());
    }
    v["text"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| "the host's answer has no text".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audio_types_from_mime_or_name() {
        assert_eq!(audio_type(Some("audio/ogg"), "voice"), Some("audio/ogg"));
        assert_eq!(audio_type(None, "Memo.M4A"), Some("audio/mp4"));
        assert_eq!(
            audio_type(Some("audio/ogg; codecs=opus"), "x"),
            Some("audio/ogg")
        );
        assert_eq!(
            audio_type(Some("application/octet-stream"), "a.mp3"),
            Some("audio/mpeg")
        );
        assert_eq!(audio_type(Some("image/png"), "a.png"), None);
        assert_eq!(audio_type(Some("video/mp4"), "clip.mp4"), None);
    }
}
