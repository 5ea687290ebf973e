//! Replies as voice (issue 17's optional part, decision 0046): the
//! agent's `send_voice` asks the host, and the host asks the owner's
//! OpenAI-compatible `/v1/audio/speech` endpoint for OGG/Opus audio (the
//! format Telegram plays as a voice note) with the key from its own
//! environment. The owner's key pays for each, so the text is capped and
//! each group has a rate.

use std::time::Duration;

use crate::search::Key;
use crate::{FetchError, GroupPolicy, Web};
use pinch_policy::rate::Bucket;

/// Characters one request may speak (OpenAI's limit).
pub const MAX_INPUT: usize = 4096;
/// The largest audio read back (4,096 characters of speech as Opus is
/// well under 2 MB).
pub const MAX_AUDIO: usize = 10 * 1024 * 1024;

/// The owner's speech endpoint (`[voice] speech_url` and its settings).
#[derive(Clone, Debug)]
pub struct SpeechEndpoint {
    /// The full URL, e.g. `https://api.openai.com/v1/audio/speech`.
    pub url: String,
    /// `tts-1`, `gpt-4o-mini-tts`, or a local server's model.
    pub model: String,
    /// The voice (`alloy`, `nova`, …).
    pub voice: String,
    pub key: Option<Key>,
    pub timeout: Duration,
    /// Requests per agent group per minute.
    pub per_minute: u32,
}

impl Web {
    /// Whether `send_voice` is offered to a group under `policy` (the
    /// same `voice` switch as transcription).
    pub fn speech_on(&self, policy: &GroupPolicy) -> bool {
        self.settings.speech.is_some() && policy.voice.unwrap_or(true)
    }

    /// `text` spoken by the owner's endpoint, as OGG/Opus.
    pub async fn speak(
        &self,
        group: &str,
        policy: &GroupPolicy,
        text: &str,
    ) -> Result<Vec<u8>, FetchError> {
        let Some(ep) = &self.settings.speech else {
            return Err(FetchError::Unavailable(
                "replies as voice are off on this install: the owner can set [voice] speech_url in pinch.toml to an OpenAI-compatible /v1/audio/speech endpoint".into(),
            ));
        };
        if !self.speech_on(policy) {
            return Err(FetchError::Refused(format!(
                "voice is off for agent group {group:?}; the owner can turn it on with `pinch admin groups config-set {group} --web '{{\"voice\":true}}'`"
            )));
        }
        let text = text.trim();
        if text.is_empty() {
            return Err(FetchError::BadRequest("there is no text to speak".into()));
        }
        let n = text.chars().count();
        if n > MAX_INPUT {
            return Err(FetchError::BadRequest(format!(
                "the text is {n} characters; one voice message speaks at most {MAX_INPUT}: send the rest as text or split it"
            )));
        }
        self.speech_token(group, ep.per_minute)?;
        let mut req = self.voice_client.post(&ep.url).json(&serde_json::json!({
            "model": ep.model,
            "input": text,
            "voice": ep.voice,
            "response_format": "opus",
        }));
        if let Some(k) = &ep.key {
            req = req.bearer_auth(&k.0);
        }
        let failed = |what: String| FetchError::Service(format!("the speech endpoint {what}"));
        let call = crate::search::send_capped(req, MAX_AUDIO);
        let (status, body) = match tokio::time::timeout(ep.timeout, call).await {
            Ok(r) => r.map_err(failed)?,
            Err(_) => {
                return Err(failed(format!(
                    "took longer than {} s ([voice] timeout_s)",
                    ep.timeout.as_secs()
                )))
            }
        };
        if !status.is_success() {
            let head: String = String::from_utf8_lossy(&body).chars().take(300).collect();
            tracing::warn!(%status, "the speech endpoint refused: {head}");
            return Err(failed(format!(
                "answered {status}; its message is in the host's log"
            )));
        }
        if !body.starts_with(b"OggS") {
            return Err(failed(
                "answered something that is not OGG audio (does it take response_format \"opus\"?)"
                    .into(),
            ));
        }
        Ok(body)
    }

    fn speech_token(&self, group: &str, per_minute: u32) -> Result<(), FetchError> {
        let now = i64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(i64::MAX);
        let mut b = self
            .speech_buckets
            .lock()
            .map_err(|_| FetchError::Failed("internal error (rate limiter)".into()))?;
        let bucket = b
            .entry(group.to_owned())
            .or_insert_with(|| Bucket::new(per_minute, now));
        bucket.take(now).map_err(|ms| {
            FetchError::Refused(format!(
                "too many voice replies: this agent group may send {per_minute} a minute ([voice] per_minute); try again in {} s",
                ms.div_ceil(1000)
            ))
        })
    }
}
