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
//! stream_ms = 0              # > 0: the reply streams word by word, this far apart
//!
//! [[rule]]
//! contains = "fail"
//! error = "simulated outage"
//! retryable = true
//!
//! [[rule]]
//! contains = "poison"
//! exit_code = 1              # the whole runner process dies mid-turn (fault tests;
//!                            # only with the `test-support` feature, else refused)
//! ```
//!
//! Rules may call tools (the runner runs them and calls again):
//!
//! ```toml
//! [[rule]]
//! contains = "run ls"
//! tool = "shell"                 # the call; `reply` may add text beside it
//! args = { command = "ls" }      # the arguments (any TOML table → JSON)
//!
//! [[rule]]
//! after_tool = "shell"           # fires on the step after a shell result
//! reply = "ls said: {tool_result}"
//! ```
//!
//! On a turn's first step only rules without `after_tool` match; on a step
//! after tool results only rules whose `after_tool` names the last result's
//! tool (or is `"*"`), also checked against `contains`/`equals` on the
//! newest text (follow-ups that joined the turn count). No match after a
//! tool result: the default reply. `{tool_result}` is the last result's
//! content, `{tool_error}` `true` or `false`, `{step}` the step number
//! (1 = the first call). In a tool's string arguments, `{inbox_path}` is
//! the first `/workspace/inbox/…` path in the prompt (an attachment
//! the runner announced), so a script can read a file it was sent.
//!
//! The first matching rule (against the newest text) wins. With no script,
//! or no matching rule, the default greets and echoes. `{continuation}` in a
//! reply is the conversation id, `{history}` the number of earlier messages
//! the runner sent along, `{history_first}` the first of them (after a
//! compaction: the summary). `context_window = N` sets the window the
//! provider claims (the runner compacts at 80 % of it). With `reject_unknown_continuations = true`
//! the provider behaves like a real API after a restart: resuming a
//! conversation this process has not seen fails with `session_not_found`.

use std::time::Duration;

use serde::Deserialize;

use crate::{
    Capabilities, ConfigError, ErrorKind, Event, Provider, ProviderError, Step, ToolCall,
    TurnRequest, TurnResult, Usage,
};

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
    /// The context window the provider claims (tokens), so tests can make
    /// the runner compact a short conversation. Default 1 000 000.
    #[serde(default)]
    pub context_window: Option<u32>,
    /// Claim to take images (`vision = true`); `{images}` in a reply lists
    /// the ones received (`name media_type bytes`, comma-separated).
    #[serde(default)]
    pub vision: Option<bool>,
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
    /// Streams the reply word by word, this long between words (as a
    /// model writes), instead of all at once.
    #[serde(default)]
    pub stream_ms: u64,
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
    /// Call this tool (the step's result asks the runner to run it).
    #[serde(default)]
    pub tool: Option<String>,
    /// The tool's arguments.
    #[serde(default)]
    pub args: Option<toml::Table>,
    /// Match only on the step after a result of this tool (`*` = any).
    #[serde(default)]
    pub after_tool: Option<String>,
}

impl Rule {
    fn matches(&self, text: &str, last_tool: Option<&str>) -> bool {
        let step_ok = match (self.after_tool.as_deref(), last_tool) {
            (None, None) => true,
            (Some(want), Some(got)) => want == "*" || want == got,
            _ => false,
        };
        step_ok
            && self.equals.as_deref().is_none_or(|e| text.trim() == e)
            && self.contains.as_deref().is_none_or(|c| text.contains(c))
    }
}

pub struct Scripted {
    script: Script,
    /// Conversations started or resumed in this process.
    known: std::collections::HashSet<String>,
    /// Calls matched per rule (for `fail_times`).
    calls: Vec<u32>,
    /// Tool calls made (for call ids).
    tool_calls: u64,
}

impl Scripted {
    pub fn from_script(toml_text: Option<&str>) -> Result<Self, ConfigError> {
        let script = match toml_text {
            None => Script::default(),
            Some(t) => {
                toml::from_str::<Script>(t).map_err(|e| ConfigError::Script(e.to_string()))?
            }
        };
        for (i, r) in script.rules.iter().enumerate() {
            if r.reply.is_none() && r.error.is_none() && r.exit_code.is_none() && r.tool.is_none() {
                return Err(ConfigError::Script(format!(
                    "rule {} has none of `reply`, `error`, `exit_code`, `tool`",
                    i + 1
                )));
            }
            if r.exit_code.is_some() && !cfg!(feature = "test-support") {
                return Err(ConfigError::Script(format!(
                    "rule {}: `exit_code` (a crash on demand, for fault tests) exists only in test builds \
                     (the pinch-providers `test-support` feature); remove it",
                    i + 1
                )));
            }
            if r.args.is_some() && r.tool.is_none() {
                return Err(ConfigError::Script(format!(
                    "rule {} has `args` but no `tool`",
                    i + 1
                )));
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
        Ok(Scripted {
            script,
            known: Default::default(),
            calls,
            tool_calls: 0,
        })
    }
}

impl Provider for Scripted {
    fn name(&self) -> &str {
        "scripted"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            tools: true,
            streaming: false,
            context_window: self.script.context_window.unwrap_or(1_000_000),
            vision: self.script.vision.unwrap_or(false),
        }
    }

    fn turn(
        &mut self,
        req: &TurnRequest,
        sink: &mut dyn FnMut(Event),
    ) -> Result<TurnResult, ProviderError> {
        if let Some(c) = &req.continuation {
            if self.script.reject_unknown_continuations
                && !req.fresh_continuation
                && !self.known.contains(c)
            {
                return Err(ProviderError {
                    message: format!("conversation {c} not found"),
                    retryable: false,
                    kind: ErrorKind::SessionNotFound,
                    retry_after: None,
                });
            }
        }
        let newest = req.texts.last().map(String::as_str).unwrap_or("");
        let joined = req.texts.join("\n");
        let last_result = req.steps.iter().rev().find_map(|s| match s {
            Step::ToolResult {
                name,
                content,
                is_error,
                ..
            } => Some((name.as_str(), content.as_str(), *is_error)),
            _ => None,
        });
        let step = 1 + req
            .steps
            .iter()
            .filter(|s| matches!(s, Step::Assistant { .. }))
            .count();
        let idx = self
            .script
            .rules
            .iter()
            .position(|r| r.matches(newest, last_result.map(|l| l.0)));
        if let Some(i) = idx {
            self.calls[i] += 1;
        }
        let rule = idx.map(|i| &self.script.rules[i]);
        if let Some(r) = rule {
            if r.delay_ms > 0 {
                sink(Event::Progress(format!("scripted delay {} ms", r.delay_ms)));
                std::thread::sleep(Duration::from_millis(r.delay_ms));
            }
            // A crash on demand, for fault-injection tests (refused when the
            // script is read in a build without them).
            #[cfg(feature = "test-support")]
            if let Some(code) = r.exit_code {
                std::process::exit(code);
            }
            let failing = r
                .fail_times
                .is_none_or(|n| self.calls[idx.expect("matched")] <= n);
            if let (Some(msg), true) = (&r.error, failing) {
                let kind = r
                    .error_kind
                    .as_deref()
                    .and_then(ErrorKind::parse)
                    .unwrap_or(ErrorKind::Other);
                return Err(ProviderError {
                    message: msg.clone(),
                    retryable: r.retryable,
                    kind,
                    retry_after: None,
                });
            }
        }
        let calling = rule.and_then(|r| {
            r.tool
                .as_ref()
                .map(|t| (t, r.args.clone().unwrap_or_default()))
        });
        let template = match (rule.and_then(|r| r.reply.as_deref()), &calling) {
            (Some(t), _) => t,
            (None, Some(_)) => "",
            (None, None) => self
                .script
                .default_reply
                .as_deref()
                .unwrap_or(DEFAULT_REPLY),
        };
        let text = template
            .replace("{text}", &joined)
            .replace(
                "{continuation}",
                req.continuation.as_deref().unwrap_or("none"),
            )
            .replace("{history}", &req.history.len().to_string())
            .replace(
                "{history_first}",
                req.history.first().map(|(_, t)| t.as_str()).unwrap_or(""),
            )
            .replace("{tool_result}", last_result.map(|l| l.1).unwrap_or(""))
            .replace(
                "{tool_error}",
                if last_result.is_some_and(|l| l.2) {
                    "true"
                } else {
                    "false"
                },
            )
            .replace("{step}", &step.to_string())
            .replace(
                "{images}",
                &req.images
                    .iter()
                    .chain(req.steps.iter().flat_map(|s| match s {
                        Step::ToolResult { images, .. } => images.as_slice(),
                        _ => &[],
                    }))
                    .map(|i| format!("{} {} {}", i.name, i.media_type, i.data.len()))
                    .collect::<Vec<_>>()
                    .join(", "),
            );
        let mut tool_calls = Vec::new();
        if let Some((name, args)) = calling {
            if !req.tools.iter().any(|t| &t.name == name) {
                return Err(ProviderError {
                    message: format!(
                        "the script calls tool {name:?}, which the runner did not offer"
                    ),
                    retryable: false,
                    kind: ErrorKind::BadRequest,
                    retry_after: None,
                });
            }
            self.tool_calls += 1;
            let args = fill_inbox_path(serde_json::to_value(&args).unwrap_or_default(), {
                let p = first_inbox_path(&req.prompt);
                if p.is_empty() {
                    first_inbox_path(&joined)
                } else {
                    p
                }
            });
            let arguments = serde_json::to_string(&args).unwrap_or_else(|_| "{}".into());
            sink(Event::ToolCall {
                id: format!("call-{}", self.tool_calls),
                name: name.clone(),
                arguments: arguments.clone(),
            });
            tool_calls.push(ToolCall {
                id: format!("call-{}", self.tool_calls),
                name: name.clone(),
                arguments,
            });
        }
        if let Some(c) = &req.continuation {
            self.known.insert(c.clone());
        }
        match rule.map_or(0, |r| r.stream_ms) {
            _ if text.is_empty() => {}
            0 => sink(Event::Text(text.clone())),
            ms => {
                for (i, word) in text.split_inclusive(' ').enumerate() {
                    if i > 0 {
                        std::thread::sleep(Duration::from_millis(ms));
                    }
                    sink(Event::Text(word.to_owned()));
                }
            }
        }
        // Usage like an API reports it: everything sent, at ~4 chars a token.
        let sent = req.system.len()
            + req.prompt.len()
            + req.history.iter().map(|(_, t)| t.len()).sum::<usize>()
            + req
                .steps
                .iter()
                .map(|s| serde_json::to_string(s).map(|j| j.len()).unwrap_or(0))
                .sum::<usize>();
        Ok(TurnResult {
            usage: Usage {
                input_tokens: sent as u64 / 4,
                output_tokens: text.len() as u64 / 4,
            },
            text,
            tool_calls,
        })
    }
}

/// The first `/workspace/inbox/…` path in `text` (up to whitespace or `]`).
fn first_inbox_path(text: &str) -> &str {
    match text.find("/workspace/inbox/") {
        Some(i) => {
            let rest = &text[i..];
            &rest[..rest
                .find(|c: char| c.is_whitespace() || c == ']')
                .unwrap_or(rest.len())]
        }
        None => "",
    }
}

fn fill_inbox_path(v: serde_json::Value, path: &str) -> serde_json::Value {
    use serde_json::Value;
    match v {
        Value::String(s) => Value::String(s.replace("{inbox_path}", path)),
        Value::Array(a) => Value::Array(a.into_iter().map(|x| fill_inbox_path(x, path)).collect()),
        Value::Object(m) => Value::Object(
            m.into_iter()
                .map(|(k, x)| (k, fill_inbox_path(x, path)))
                .collect(),
        ),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_code_is_refused_outside_test_builds() {
        let r = Scripted::from_script(Some("[[rule]]\ncontains = \"x\"\nexit_code = 3\n"));
        if cfg!(feature = "test-support") {
            assert!(r.is_ok(), "{:?}", r.err());
        } else {
            let e = r.err().expect("refused").to_string();
            assert!(e.contains("rule 1") && e.contains("test-support"), "{e}");
        }
    }

    fn ask(p: &mut Scripted, texts: &[&str]) -> Result<String, ProviderError> {
        let req = TurnRequest {
            texts: texts.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        };
        p.turn(&req, &mut |_| {}).map(|r| r.text)
    }

    #[test]
    fn default_greets_and_echoes() {
        let mut p = Scripted::from_script(None).unwrap();
        assert_eq!(
            ask(&mut p, &["hi there"]).unwrap(),
            "Hello from pinch! You said: hi there"
        );
        assert_eq!(
            ask(&mut p, &["a", "b"]).unwrap(),
            "Hello from pinch! You said: a\nb"
        );
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
        assert_eq!(
            ask(&mut p, &["other"]).unwrap(),
            "Hello from pinch! You said: other"
        );
    }

    #[test]
    fn rules_call_tools_and_see_results() {
        let mut p = Scripted::from_script(Some(
            r#"
            [[rule]]
            contains = "run ls"
            tool = "shell"
            args = { command = "ls -l", timeout_s = 5 }
            [[rule]]
            after_tool = "shell"
            reply = "step {step}: {tool_result} (error: {tool_error})"
            "#,
        ))
        .unwrap();
        let tools = vec![crate::ToolSpec {
            name: "shell".into(),
            description: String::new(),
            parameters: serde_json::json!({}),
        }];
        let mut req = TurnRequest {
            texts: vec!["please run ls".into()],
            tools,
            ..Default::default()
        };
        let r = p.turn(&req, &mut |_| {}).unwrap();
        assert_eq!(r.text, "");
        assert_eq!(r.tool_calls.len(), 1);
        assert_eq!(r.tool_calls[0].name, "shell");
        let args: serde_json::Value = serde_json::from_str(&r.tool_calls[0].arguments).unwrap();
        assert_eq!(
            args,
            serde_json::json!({"command": "ls -l", "timeout_s": 5})
        );
        req.steps.push(Step::Assistant {
            text: r.text,
            calls: r.tool_calls.clone(),
        });
        req.steps.push(Step::ToolResult {
            call_id: r.tool_calls[0].id.clone(),
            name: "shell".into(),
            content: "a b".into(),
            is_error: false,
            images: Vec::new(),
        });
        let r = p.turn(&req, &mut |_| {}).unwrap();
        assert!(
            r.tool_calls.is_empty(),
            "the step after the result does not call again"
        );
        assert_eq!(r.text, "step 2: a b (error: false)");
        // Tools not offered (a provider without tools): the script says so.
        let req = TurnRequest {
            texts: vec!["run ls".into()],
            ..Default::default()
        };
        assert_eq!(
            p.turn(&req, &mut |_| {}).unwrap_err().kind,
            ErrorKind::BadRequest
        );
    }

    #[test]
    fn window_and_history_placeholders() {
        let mut p = Scripted::from_script(Some(
            "context_window = 300\ndefault_reply = \"{history}: {history_first}\"\n",
        ))
        .unwrap();
        assert_eq!(p.capabilities().context_window, 300);
        let history = vec![
            ("user".to_string(), "SUMMARY".to_string()),
            ("assistant".to_string(), "ok".to_string()),
        ];
        let req = TurnRequest {
            texts: vec!["x".into()],
            history,
            system: "s".repeat(40),
            ..Default::default()
        };
        let r = p.turn(&req, &mut |_| {}).unwrap();
        assert_eq!(r.text, "2: SUMMARY");
        assert_eq!(
            r.usage.input_tokens,
            (40 + 7 + 2) / 4,
            "usage counts everything sent"
        );
        assert_eq!(
            Scripted::from_script(None)
                .unwrap()
                .capabilities()
                .context_window,
            1_000_000
        );
    }

    #[test]
    fn bad_scripts_are_config_errors() {
        assert!(Scripted::from_script(Some("[[rule]]\nargs = { a = 1 }\nreply = 'x'\n")).is_err());
        assert!(Scripted::from_script(Some("[[rule]]\ncontains = 'x'\n")).is_err());
        assert!(Scripted::from_script(Some("[[rule]]\nreplie = 'x'\n")).is_err());
        assert!(Scripted::from_script(Some("not toml [")).is_err());
    }
}
