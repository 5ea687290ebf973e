//! The scripted provider: deterministic replies from a rule file.
//!
//! Used by tests and benchmarks (and by `pinch chat` until a real model is
//! configured). A script is TOML:
//!
//! ```toml
//! [[rule]]
//! contains = "ping"          # or: equals = "...", or neither (matches all)
//! reply = "pong: {text}"     # {text} = the batch's texts joined by newlines
//! delay_ms = 0               # sleep before answering (emits progress)
//!
//! [[rule]]
//! contains = "fail"
//! error = "simulated outage"
//! retryable = true
//!
//! [[rule]]
//! contains = "poison"
//! exit_code = 1              # the whole runner process dies mid-turn (fault tests)
//! ```
//!
//! The first matching rule (against the newest text) wins. With no script,
//! or no matching rule, the default greets and echoes. `{continuation}` in a
//! reply is the conversation id, `{history}` the number of earlier messages
//! the runner sent along. With `reject_unknown_continuations = true`
//! the provider behaves like a real API after a restart: resuming a
//! conversation this process has not seen fails with `session_not_found`.

use std::time::Duration;

use serde::Deserialize;

use crate::{Capabilities, ConfigError, ErrorKind, Event, Provider, ProviderError, TurnRequest, TurnResult, Usage};

/// The reply when no rule matches: a greeting that echoes.
pub const DEFAULT_REPLY: &str = "Hello from pinch! You said: {text}";

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Script {
    #[serde(default, rename = "rule")]
    pub rules: Vec<Rule>,
    /// Replaces [`DEFAULT_REPLY`].
    #[serde(default)]
    pub default_reply: Option<String>,
    /// Resuming a conversation not started in this process fails.
    #[serde(default)]
    pub reject_unknown_continuations: bool,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    #[serde(default)]
    pub contains: Option<String>,
    #[serde(default)]
    pub equals: Option<String>,
    #[serde(default)]
    pub reply: Option<String>,
    #[serde(default)]
    pub delay_ms: u64,
    #[serde(default)]
    pub error: Option<String>,
    #[serde(default)]
    pub retryable: bool,
    /// Fault injection: the process exits with this code mid-turn.
    #[serde(default)]
    pub exit_code: Option<i32>,
    /// The kind of `error` (`session_not_found`, `rate_limited`, …).
    #[serde(default)]
    pub error_kind: Option<String>,
    /// With `error`: fail only the first N calls this rule matches (in this
    /// process), then answer with `reply` (or the default).
    #[serde(default)]
    pub fail_times: Option<u32>,
}

impl Rule {
    fn matches(&self, text: &str) -> bool {
        self.equals.as_deref().is_none_or(|e| text.trim() == e) && self.contains.as_deref().is_none_or(|c| text.contains(c))
    }
}

pub struct Scripted {
    script: Script,
    /// Conversations started or resumed in this process.
    known: std::collections::HashSet<String>,
    /// Calls matched per rule (for `fail_times`).
    calls: Vec<u32>,
}

impl Scripted {
    pub fn from_script(toml_text: Option<&str>) -> Result<Self, ConfigError> {
        let script = match toml_text {
            None => Script::default(),
            Some(t) => toml::from_str::<Script>(t).map_err(|e| ConfigError::Script(e.to_string()))?,
        };
        for (i, r) in script.rules.iter().enumerate() {
            if r.reply.is_none() && r.error.is_none() && r.exit_code.is_none() {
                return Err(ConfigError::Script(format!("rule {} has none of `reply`, `error`, `exit_code`", i + 1)));
            }
            if let Some(k) = &r.error_kind {
                if ErrorKind::parse(k).is_none() {
                    return Err(ConfigError::Script(format!(
                        "rule {}: unknown error_kind {k:?} (rate_limited, overloaded, server, timeout, auth, bad_request, session_not_found, other)",
                        i + 1
                    )));
                }
            }
        }
        let calls = vec![0; script.rules.len()];
        Ok(Scripted { script, known: Default::default(), calls })
    }
}

impl Provider for Scripted {
    fn name(&self) -> &str {
        "scripted"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities { tools: false, streaming: false, context_window: 1_000_000 }
    }

    fn turn(&mut self, req: &TurnRequest, sink: &mut dyn FnMut(Event)) -> Result<TurnResult, ProviderError> {
        if let Some(c) = &req.continuation {
            if self.script.reject_unknown_continuations && !req.fresh_continuation && !self.known.contains(c) {
                return Err(ProviderError {
                    message: format!("conversation {c} not found"),
                    retryable: false,
                    kind: ErrorKind::SessionNotFound,
                });
            }
        }
        let newest = req.texts.last().map(String::as_str).unwrap_or("");
        let joined = req.texts.join("\n");
        let idx = self.script.rules.iter().position(|r| r.matches(newest));
        if let Some(i) = idx {
            self.calls[i] += 1;
        }
        let rule = idx.map(|i| &self.script.rules[i]);
        if let Some(r) = rule {
            if r.delay_ms > 0 {
                sink(Event::Progress(format!("scripted delay {} ms", r.delay_ms)));
                std::thread::sleep(Duration::from_millis(r.delay_ms));
            }
            if let Some(code) = r.exit_code {
                // A crash on demand, for fault-injection tests.
                std::process::exit(code);
            }
            let failing = r.fail_times.is_none_or(|n| self.calls[idx.expect("matched")] <= n);
            if let (Some(msg), true) = (&r.error, failing) {
                let kind = r.error_kind.as_deref().and_then(ErrorKind::parse).unwrap_or(ErrorKind::Other);
                return Err(ProviderError { message: msg.clone(), retryable: r.retryable, kind });
            }
        }
        let template = rule
            .and_then(|r| r.reply.as_deref())
            .or(self.script.default_reply.as_deref())
            .unwrap_or(DEFAULT_REPLY);
        let text = template
            .replace("{text}", &joined)
            .replace("{continuation}", req.continuation.as_deref().unwrap_or("none"))
            .replace("{history}", &req.history.len().to_string());
        if let Some(c) = &req.continuation {
            self.known.insert(c.clone());
        }
        sink(Event::Text(text.clone()));
        Ok(TurnResult {
            usage: Usage { input_tokens: req.prompt.len() as u64 / 4, output_tokens: text.len() as u64 / 4 },
            text,
            tool_calls: Vec::new(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ask(p: &mut Scripted, texts: &[&str]) -> Result<String, ProviderError> {
        let req = TurnRequest { texts: texts.iter().map(|s| s.to_string()).collect(), ..Default::default() };
        p.turn(&req, &mut |_| {}).map(|r| r.text)
    }

    #[test]
    fn default_greets_and_echoes() {
        let mut p = Scripted::from_script(None).unwrap();
        assert_eq!(ask(&mut p, &["hi there"]).unwrap(), "Hello from pinch! You said: hi there");
        assert_eq!(ask(&mut p, &["a", "b"]).unwrap(), "Hello from pinch! You said: a\nb");
    }

    #[test]
    fn rules_match_in_order() {
        let mut p = Scripted::from_script(Some(
            r#"
            [[rule]]
            equals = "ping"
            reply = "pong"
            [[rule]]
            contains = "boom"
            error = "simulated"
            retryable = true
            "#,
        ))
        .unwrap();
        assert_eq!(ask(&mut p, &["ping"]).unwrap(), "pong");
        let e = ask(&mut p, &["a boom"]).unwrap_err();
        assert!(e.retryable);
        assert_eq!(ask(&mut p, &["other"]).unwrap(), "Hello from pinch! You said: other");
    }

    #[test]
    fn bad_scripts_are_config_errors() {
        assert!(Scripted::from_script(Some("[[rule]]\ncontains = 'x'\n")).is_err());
        assert!(Scripted::from_script(Some("[[rule]]\nreplie = 'x'\n")).is_err());
        assert!(Scripted::from_script(Some("not toml [")).is_err());
    }
}
