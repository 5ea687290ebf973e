//! Voice notes and audio files as text (issue 17, decision 0046): the
//! runner sends an attachment's bytes to the host's route on the proxy
//! socket, and the host posts them to the owner's OpenAI-compatible
//! `/v1/audio/transcriptions` endpoint (OpenAI, Groq, a local whisper.cpp
//! or faster-whisper server) with the key from its own environment. The
//! endpoint is the owner's choice, so no SSRF guard applies; redirects are
//! not followed (one would carry the key elsewhere).

use std::time::Duration;

use serde::Deserialize;

use crate::search::Key;
use crate::{FetchError, GroupPolicy, Web};
use pinch_policy::rate::Bucket;

/// The largest audio file sent: OpenAI's limit (25 MB).
pub const MAX_AUDIO: usize = 25 * 1024 * 1024;
/// Transcriptions in flight across every session (each holds its audio).
pub const IN_FLIGHT: usize = 2;
/// Why a voice note has no transcript when `[voice]` is not set.
pub const NOT_CONFIGURED: &str = "voice notes are not transcribed on this install: the owner can set [voice] url in pinch.toml to an OpenAI-compatible /v1/audio/transcriptions endpoint (OpenAI, Groq, or a local whisper.cpp or faster-whisper server)";
/// The largest answer read from the endpoint.
const MAX_ANSWER: usize = 1024 * 1024;
/// Characters of transcript returned at most (hours of speech).
pub const MAX_TRANSCRIPT: usize = 100_000;

/// The owner's transcription endpoint (`[voice]` in `pinch.toml`).
#[derive(Clone, Debug)]
pub struct Endpoint {
    /// The full URL, e.g. `https://api.openai.com/v1/audio/transcriptions`.
    pub url: String,
    /// The `model` form field (`whisper-1`, `whisper-large-v3`, …).
    pub model: String,
    /// Sent as `Authorization: Bearer`; `None` for a local server.
    pub key: Option<Key>,
    /// An ISO-639-1 hint (`en`, `de`), or the endpoint detects it.
    pub language: Option<String>,
    /// One transcription, upload and answer included.
    pub timeout: Duration,
    /// Transcriptions per agent group per minute.
    pub per_minute: u32,
}

/// The variable an endpoint's key is read from when `key_env` is not set:
/// the provider's usual one for the hosted APIs, none for the rest.
pub fn default_key_env(url: &str) -> Option<&'static str> {
    let host = reqwest::Url::parse(url)
        .ok()?
        .host_str()?
        .to_ascii_lowercase();
    match host.as_str() {
        "api.openai.com" => Some("OPENAI_API_KEY"),
        "api.groq.com" => Some("GROQ_API_KEY"),
        _ => None,
    }
}

/// The file extension the APIs read the format from, by media type
/// (OpenAI decides the format by the file name's extension).
pub fn extension(media_type: &str) -> Option<&'static str> {
    let m = media_type.split(';').next().unwrap_or("").trim();
    Some(match m.to_ascii_lowercase().as_str() {
        "audio/ogg" | "audio/opus" | "application/ogg" => "ogg",
        "audio/mpeg" | "audio/mp3" => "mp3",
        "audio/mp4" | "audio/m4a" | "audio/x-m4a" | "audio/aac" => "m4a",
        "audio/wav" | "audio/x-wav" | "audio/wave" => "wav",
        "audio/webm" | "video/webm" => "webm",
        "audio/flac" | "audio/x-flac" => "flac",
        "video/mp4" => "mp4",
        _ => return None,
    })
}

/// An audio file's media type: by its name's extension, else by its
/// first bytes (a voice note saved without an extension); `None` when it
/// is not audio the endpoints take.
pub fn media_type_of(name: &str, data: &[u8]) -> Option<&'static str> {
    let ext = name.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase());
    let by_name = match ext.as_deref() {
        Some("ogg" | "oga" | "opus") => Some("audio/ogg"),
        Some("mp3" | "mpga" | "mpeg") => Some("audio/mpeg"),
        Some("m4a") => Some("audio/mp4"),
        Some("wav") => Some("audio/wav"),
        Some("webm") => Some("audio/webm"),
        Some("flac") => Some("audio/flac"),
        _ => None,
    };
    by_name.or(if data.starts_with(b"OggS") {
        Some("audio/ogg")
    } else if data.starts_with(b"ID3")
        || data.starts_with(&[0xFF, 0xFB])
        || data.starts_with(&[0xFF, 0xF3])
    {
        Some("audio/mpeg")
    } else if data.len() >= 8 && &data[4..8] == b"ftyp" {
        Some("audio/mp4")
    } else if data.len() >= 12 && &data[..4] == b"RIFF" && &data[8..12] == b"WAVE" {
        Some("audio/wav")
    } else if data.starts_with(&[0x1A, 0x45, 0xDF, 0xA3]) {
        Some("audio/webm")
    } else if data.starts_with(b"fLaC") {
        Some("audio/flac")
    } else {
        None
    })
}

/// The name the file is uploaded under: the sender's when it carries an
/// extension the APIs know, else a plain name with the type's.
pub fn upload_name(name: &str, media_type: &str) -> String {
    const KNOWN: [&str; 10] = [
        "flac", "mp3", "mp4", "mpeg", "mpga", "m4a", "ogg", "oga", "wav", "webm",
    ];
    let ext = name.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase());
    let clean: String = name
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, '.' | '-' | '_'))
        .take(100)
        .collect();
    match ext {
        Some(e) if KNOWN.contains(&e.as_str()) && !clean.is_empty() => clean,
        _ => format!("audio.{}", extension(media_type).unwrap_or("ogg")),
    }
}

impl Web {
    /// Whether voice notes are transcribed for a group under `policy`.
    pub fn voice_on(&self, policy: &GroupPolicy) -> bool {
        self.settings.voice.is_some() && policy.voice.unwrap_or(true)
    }

    /// The endpoint, if `group` may have voice notes transcribed at all
    /// (one is set and the group's policy allows it); nothing is spent.
    pub fn voice_allowed(
        &self,
        group: &str,
        policy: &GroupPolicy,
    ) -> Result<&Endpoint, FetchError> {
        let Some(ep) = &self.settings.voice else {
            return Err(FetchError::Unavailable(NOT_CONFIGURED.into()));
        };
        if !self.voice_on(policy) {
            return Err(FetchError::Refused(format!(
                "voice transcription is off for agent group {group:?}; the owner can turn it on with `pinch admin groups config-set {group} --web '{{\"voice\":true}}'`"
            )));
        }
        Ok(ep)
    }

    /// Whether `group` may have a file transcribed now (the endpoint is
    /// set, the group's policy allows it, and the group's rate allows one
    /// more); decided before the file is read. `Ok`: how long to wait for
    /// a [`Web::voice_slot`].
    pub fn voice_admit(&self, group: &str, policy: &GroupPolicy) -> Result<Duration, FetchError> {
        let ep = self.voice_allowed(group, policy)?;
        let now = i64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(i64::MAX);
        let mut b = self
            .voice_buckets
            .lock()
            .map_err(|_| FetchError::Failed("internal error (rate limiter)".into()))?;
        let bucket = b
            .entry(group.to_owned())
            .or_insert_with(|| Bucket::new(ep.per_minute, now));
        bucket.take(now).map_err(|ms| {
            FetchError::Refused(format!(
                "too many voice notes: this agent group may have {} transcribed a minute ([voice] per_minute); try again in {} s",
                ep.per_minute,
                ms.div_ceil(1000)
            ))
        })?;
        Ok(ep.timeout)
    }

    /// A turn to transcribe: held from before the audio is read until the
    /// answer, so at most [`IN_FLIGHT`] files are in memory. Waits
    /// for one at most `wait`; `None` when none came free (or no endpoint
    /// is configured, which [`Web::transcribe`] then says).
    pub async fn voice_slot(&self, wait: Duration) -> Option<tokio::sync::OwnedSemaphorePermit> {
        let permits = self.transcribing.clone();
        tokio::time::timeout(wait, permits.acquire_owned())
            .await
            .ok()?
            .ok()
    }

    /// Transcribes `audio` (`media_type`, sent as `name`) with the owner's
    /// endpoint: the transcript.
    pub async fn transcribe(
        &self,
        name: &str,
        media_type: &str,
        audio: Vec<u8>,
    ) -> Result<String, FetchError> {
        let Some(ep) = &self.settings.voice else {
            return Err(FetchError::Unavailable(NOT_CONFIGURED.into()));
        };
        if extension(media_type).is_none() {
            return Err(FetchError::Unsupported(format!(
                "{media_type:?} is not an audio type a transcription endpoint takes"
            )));
        }
        if audio.len() > MAX_AUDIO {
            return Err(FetchError::BadRequest(format!(
                "the file is over {} MB, the most a transcription endpoint takes",
                MAX_AUDIO / (1024 * 1024)
            )));
        }
        match tokio::time::timeout(
            ep.timeout,
            run(&self.voice_client, ep, name, media_type, audio),
        )
        .await
        {
            Ok(r) => r,
            Err(_) => Err(FetchError::Service(format!(
                "the transcription took longer than {} s ([voice] timeout_s)",
                ep.timeout.as_secs()
            ))),
        }
    }
}

#[derive(Deserialize)]
struct Answer {
    text: String,
}

/// Posts `audio` to the endpoint; the transcript.
pub(crate) async fn run(
    client: &reqwest::Client,
    ep: &Endpoint,
    name: &str,
    media_type: &str,
    audio: Vec<u8>,
) -> Result<String, FetchError> {
    let failed = |what: String| FetchError::Service(format!("the transcription endpoint {what}"));
    let part = reqwest::multipart::Part::bytes(audio)
        .file_name(upload_name(name, media_type))
        .mime_str(media_type)
        .map_err(|_| FetchError::BadRequest(format!("{media_type:?} is not a media type")))?;
    let mut form = reqwest::multipart::Form::new()
        .text("model", ep.model.clone())
        .text("response_format", "json")
        .part("file", part);
    if let Some(l) = &ep.language {
        form = form.text("language", l.clone());
    }
    let mut req = client.post(&ep.url).multipart(form);
    if let Some(k) = &ep.key {
        req = req.bearer_auth(&k.0);
    }
    let (status, body) = crate::search::send_capped(req, MAX_ANSWER)
        .await
        .map_err(failed)?;
    if !status.is_success() {
        // The body stays in the host's log: an endpoint's error can quote
        // the key (masked or not) or the request's headers.
        let head: String = String::from_utf8_lossy(&body).chars().take(300).collect();
        tracing::warn!(%status, "the transcription endpoint refused a voice note: {head}");
        let hint = match status.as_u16() {
            401 | 403 => " (check [voice] key_env and the key in the host's environment)",
            404 => " (check [voice] url: it must be the full …/v1/audio/transcriptions URL)",
            413 => " (the file is larger than the endpoint takes)",
            429 => " (the endpoint's own rate limit)",
            _ => "",
        };
        return Err(failed(format!(
            "answered {status}{hint}; its message is in the host's log"
        )));
    }
    let a: Answer = serde_json::from_slice(&body).map_err(|e| {
        failed(format!(
            "answered something that is not {{\"text\": …}} ({e})"
        ))
    })?;
    Ok(a.text.trim().chars().take(MAX_TRANSCRIPT).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_keys_and_extensions() {
        assert_eq!(
            default_key_env("https://api.openai.com/v1/audio/transcriptions"),
            Some("OPENAI_API_KEY")
        );
        assert_eq!(
            default_key_env("https://API.groq.com/openai/v1/audio/transcriptions"),
            Some("GROQ_API_KEY")
        );
        assert_eq!(default_key_env("http://127.0.0.1:8080/inference"), None);
        assert_eq!(upload_name("voice", "audio/ogg"), "audio.ogg");
        assert_eq!(upload_name("memo.M4A", "audio/mp4"), "memo.M4A");
        assert_eq!(upload_name("a b/../x.mp3", "audio/mpeg"), "ab..x.mp3");
        assert_eq!(upload_name("x.exe", "audio/x-unknown"), "audio.ogg");
        assert_eq!(extension("audio/ogg; codecs=opus"), Some("ogg"));
        assert_eq!(extension("text/plain"), None);
        assert_eq!(media_type_of("voice.OGG", b""), Some("audio/ogg"));
        assert_eq!(media_type_of("voice", b"OggS\0\x02"), Some("audio/ogg"));
        assert_eq!(
            media_type_of("memo", b"\0\0\0\x20ftypM4A "),
            Some("audio/mp4")
        );
        assert_eq!(
            media_type_of("x", b"RIFF\0\0\0\0WAVEfmt "),
            Some("audio/wav")
        );
        assert_eq!(media_type_of("notes.txt", b"hello"), None);
    }
}
