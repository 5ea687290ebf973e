//! `[voice]`: the OpenAI-compatible transcription endpoint voice notes and
//! audio files are turned into text with before a turn (decision 0046).
//! Its key is read from the host's environment here and never written
//! anywhere else.

use anyhow::{bail, Result};
use pinch_host::HostConfig;
use pinch_web::search::Key;
use pinch_web::speech::SpeechEndpoint;
use pinch_web::voice::{default_key_env, Endpoint};
use serde::Deserialize;

use super::env::Env;
use super::secs;
use super::validate::{Count, Secs};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VoiceSection {
    /// The full endpoint URL, e.g.
    /// `https://api.openai.com/v1/audio/transcriptions` or a local
    /// whisper.cpp / faster-whisper server's.
    pub url: Option<String>,
    /// The `model` field (default `whisper-1`).
    pub model: Option<String>,
    /// The variable holding the API key (default `OPENAI_API_KEY` for
    /// api.openai.com, `GROQ_API_KEY` for api.groq.com, none otherwise).
    pub key_env: Option<String>,
    /// A language hint (ISO-639-1, e.g. `en`); default: detected.
    pub language: Option<String>,
    /// Seconds for one transcription (default 120).
    pub timeout_s: Option<f64>,
    /// Transcriptions (and voice replies) per agent group per minute
    /// (default 10): the key pays for each.
    pub per_minute: Option<u64>,
    /// Replies as voice: the full URL of an OpenAI-compatible
    /// `/v1/audio/speech` endpoint (off when absent).
    pub speech_url: Option<String>,
    /// The speech `model` (default `tts-1`).
    pub speech_model: Option<String>,
    /// The speech `voice` (default `alloy`).
    pub speech_voice: Option<String>,
}

impl VoiceSection {
    pub(super) fn secs(&self) -> Vec<Secs<'static>> {
        vec![Secs::new(
            "voice.timeout_s",
            self.timeout_s,
            1.0,
            "a transcription takes seconds",
        )]
    }

    pub(super) fn counts(&self) -> Vec<Count<'static>> {
        vec![Count::new(
            "voice.per_minute",
            self.per_minute,
            1,
            "to turn voice off for a group, set its --web '{\"voice\":false}'",
        )]
    }

    pub(super) fn apply(&self, c: &mut HostConfig, env: &Env) -> Result<()> {
        let timeout = match self.timeout_s {
            Some(v) => secs("voice.timeout_s", v)?,
            None => std::time::Duration::from_secs(120),
        };
        let per_minute = self
            .per_minute
            .map_or(10, |n| u32::try_from(n).unwrap_or(u32::MAX));
        if let Some(url) = self.speech_url.as_deref().map(str::trim) {
            c.web.speech = Some(SpeechEndpoint {
                url: url.to_owned(),
                model: self.speech_model.clone().unwrap_or_else(|| "tts-1".into()),
                voice: self.speech_voice.clone().unwrap_or_else(|| "alloy".into()),
                key: self.key(url, "voice.speech_url", env)?,
                timeout,
                per_minute,
            });
        } else if self.speech_model.is_some() || self.speech_voice.is_some() {
            bail!("[voice] has speech_model or speech_voice but no speech_url: add speech_url = \"https://api.openai.com/v1/audio/speech\" (or your own server's)");
        }
        let Some(url) = self.url.as_deref().map(str::trim) else {
            if self.model.is_some() || self.language.is_some() {
                bail!("[voice] has model or language but no url: add url = \"https://api.openai.com/v1/audio/transcriptions\" (or your own server's)");
            }
            if self.key_env.is_some() && self.speech_url.is_none() {
                bail!("[voice] has key_env but no url or speech_url");
            }
            return Ok(());
        };
        let key = self.key(url, "voice.url", env)?;
        if let Some(l) = &self.language {
            if l.len() > 8 || !l.chars().all(|c| c.is_ascii_alphabetic() || c == '-') {
                bail!("voice.language = {l:?} is not a language code (e.g. \"en\")");
            }
        }
        c.web.voice = Some(Endpoint {
            url: url.to_owned(),
            model: self.model.clone().unwrap_or_else(|| "whisper-1".into()),
            key,
            language: self.language.clone(),
            timeout,
            per_minute,
        });
        Ok(())
    }

    /// The key for `url` (the setting `what`), from `key_env` or the
    /// provider's usual variable; checked to travel encrypted.
    fn key(&self, url: &str, what: &str, env: &Env) -> Result<Option<Key>> {
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            bail!("{what} = {url:?} must start with http:// or https://");
        }
        let key = match self.key_env.as_deref().or_else(|| default_key_env(url)) {
            None => None,
            Some(var) => match env.non_empty(var) {
                Some(k) => Some(Key::new(k)),
                None => bail!("{what} = {url:?} needs its API key in the environment variable {var}: export {var}=… where pinch runs (never in a file), or set voice.key_env"),
            },
        };
        if key.is_some() && url.starts_with("http://") && !loopback(url) {
            bail!("{what} = {url:?} would send the API key unencrypted: use https://, or http:// only to a server on this machine (127.0.0.1, ::1, localhost)");
        }
        Ok(key)
    }
}

/// Whether an `http://` URL's host is this machine (a loopback address
/// or `localhost`).
fn loopback(url: &str) -> bool {
    let rest = url.strip_prefix("http://").unwrap_or("");
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host_port = authority.rsplit('@').next().unwrap_or("");
    let host = match host_port.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => host_port.split(':').next().unwrap_or(""),
    };
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|a| a.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::super::tests::*;
    use super::super::*;

    fn with_env(text: &str, vars: &[(&str, &str)]) -> Result<HostConfig> {
        resolve("/tmp/x".into(), &file_of(text), &scripted(), &env_of(vars))
    }

    #[test]
    fn endpoints_keys_and_their_errors() {
        assert!(with_env("", &[]).unwrap().web.voice.is_none());
        let openai = "[voice]\nurl = \"https://api.openai.com/v1/audio/transcriptions\"\n";
        let e = with_env(openai, &[]).unwrap_err().to_string();
        assert!(e.contains("OPENAI_API_KEY") && e.contains("export"), "{e}");
        let c = with_env(openai, &[("OPENAI_API_KEY", "sk-voice")]).unwrap();
        let v = c.web.voice.as_ref().unwrap();
        assert_eq!((v.model.as_str(), v.timeout.as_secs()), ("whisper-1", 120));
        assert!(v.key.is_some());
        assert!(
            !format!("{v:?}").contains("sk-voice"),
            "the key never prints"
        );
        let c = with_env(
            "[voice]\nurl = \"http://127.0.0.1:8080/v1/audio/transcriptions\"\nmodel = \"base.en\"\nlanguage = \"en\"\ntimeout_s = 30\n",
            &[],
        )
        .unwrap();
        let v = c.web.voice.as_ref().unwrap();
        assert!(v.key.is_none(), "a local server needs no key");
        assert_eq!(v.timeout.as_secs(), 30);
        let e = with_env("[voice]\nmodel = \"x\"\n", &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("no url"), "{e}");
        // Replies as voice alone, keyed like OpenAI's.
        let c = with_env(
            "[voice]\nspeech_url = \"https://api.openai.com/v1/audio/speech\"\nspeech_voice = \"nova\"\n",
            &[("OPENAI_API_KEY", "sk-speech")],
        )
        .unwrap();
        let sp = c.web.speech.as_ref().unwrap();
        assert_eq!((sp.model.as_str(), sp.voice.as_str()), ("tts-1", "nova"));
        assert!(sp.key.is_some() && c.web.voice.is_none());
        let e = with_env("[voice]\nspeech_voice = \"nova\"\n", &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("no speech_url"), "{e}");
        let e = with_env("[voice]\nurl = \"ftp://x\"\n", &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("http://"), "{e}");
        let e = with_env("[voice]\nurl = \"http://x/t\"\nkey_env = \"MY_KEY\"\n", &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("MY_KEY"), "{e}");
        let e = with_env(
            "[voice]\nurl = \"http://whisper.lan/v1/audio/transcriptions\"\nkey_env = \"K\"\n",
            &[("K", "k")],
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("unencrypted"), "{e}");
        for ok in [
            "http://127.0.0.1:8080/t",
            "http://[::1]:8080/t",
            "http://localhost/t",
        ] {
            let text = format!("[voice]\nurl = \"{ok}\"\nkey_env = \"K\"\nper_minute = 3\n");
            let c = with_env(&text, &[("K", "k")]).unwrap();
            assert_eq!(c.web.voice.as_ref().unwrap().per_minute, 3);
        }
        let e = with_env("[voice]\nurl = \"http://x/t\"\ntimeout_s = 0\n", &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("voice.timeout_s"), "{e}");
    }
}
