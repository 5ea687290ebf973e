//! Model providers.
//!
//! A provider turns one prompt into a stream of [`Event`]s ending in a
//! result. The trait is synchronous with a callback sink: the runner calls it
//! from its turn thread and forwards events (progress keeps the turn alive;
//! text may be streamed to the channel later). Providers that speak HTTP run
//! their own IO inside `turn`; the runner stays free of an async runtime.
//!
//! This crate knows nothing of sessions, SQLite or channels: the runner
//! formats the prompt (SPEC §5.3) and interprets the output convention.

pub mod anthropic;
pub mod http;
pub mod openai;
pub mod scripted;

use std::fmt;

/// What a provider can do.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Capabilities {
    pub tools: bool,
    pub streaming: bool,
    pub context_window: u32,
    /// Takes images with the prompt ([`TurnRequest::images`]).
    pub vision: bool,
}

/// An image sent with the prompt (a photo someone sent): its bytes as
/// read from the inbox and its media type (`image/jpeg`, `image/png`,
/// `image/gif`, `image/webp`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Image {
    pub name: String,
    pub media_type: String,
    pub data: Vec<u8>,
}

/// One turn's input.
#[derive(Clone, Debug, Default)]
pub struct TurnRequest {
    /// The stable system prompt (cached by providers that can).
    pub system: String,
    /// The formatted batch (SPEC §5.3).
    pub prompt: String,
    /// The plain texts of the chat items in the batch, oldest first. Lets
    /// simple providers (scripted) answer without parsing the prompt.
    pub texts: Vec<String>,
    /// Provider conversation id to resume, if any.
    pub continuation: Option<String>,
    /// The continuation was just created (nothing to resume yet).
    pub fresh_continuation: bool,
    /// Earlier turns of this conversation, oldest first: (`user` |
    /// `assistant`, text). Stateless APIs are sent them before `prompt`.
    pub history: Vec<(String, String)>,
    /// Tools the model may call this turn (empty = none offered).
    pub tools: Vec<ToolSpec>,
    /// The earlier steps of this turn, oldest first: what the model said and
    /// called, and each call's result. Empty on a turn's first step. The
    /// provider sends them after `prompt`, in its API's shape.
    pub steps: Vec<Step>,
    /// Images of the batch, sent with `prompt` by providers whose
    /// capabilities say `vision` (the prompt names each file either way).
    pub images: Vec<Image>,
}

/// A tool offered to the model (SPEC §5.6).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ToolSpec {
    pub name: String,
    pub description: String,
    /// A JSON Schema object for the arguments.
    pub parameters: serde_json::Value,
}

/// One call the model asked for.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ToolCall {
    /// The provider's call id (echoed back with the result).
    pub id: String,
    pub name: String,
    /// The arguments as JSON text, exactly as the model produced them (may
    /// be invalid JSON; the runner reports that back as a tool error).
    pub arguments: String,
}

/// A step inside a turn, replayed to the model on the next step.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "step", rename_all = "snake_case")]
pub enum Step {
    /// The model's output at a step that called tools.
    Assistant { text: String, calls: Vec<ToolCall> },
    /// One call's result.
    ToolResult {
        call_id: String,
        name: String,
        content: String,
        is_error: bool,
        /// Images the tool showed the model (`view_image`): sent with the
        /// result for the rest of the turn, never stored with the step.
        #[serde(skip)]
        images: Vec<Image>,
    },
    /// Follow-up messages that arrived mid-turn (SPEC §5.5, lesson 20),
    /// formatted like a prompt.
    User { text: String },
}

/// Token counts, when the provider reports them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    pub input_tokens: u64,
    pub output_tokens: u64,
}

/// Events a provider emits during a turn.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    Text(String),
    ToolCall {
        id: String,
        name: String,
        arguments: String,
    },
    /// Liveness while waiting (retries, slow first token).
    Progress(String),
}

/// The end of a successful turn.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TurnResult {
    pub text: String,
    pub usage: Usage,
    /// Tools the model called at this step. Non-empty = the runner runs
    /// them and calls the provider again with the results appended to
    /// `steps`; empty = the turn's final answer is `text`.
    pub tool_calls: Vec<ToolCall>,
}

/// Why a turn failed, and whether trying again may help.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{kind}: {message}")]
pub struct ProviderError {
    pub message: String,
    pub retryable: bool,
    pub kind: ErrorKind,
    /// How long the API asked to be left alone (`retry-after`, seconds):
    /// the runner waits at least this before trying again (up to its 60 s
    /// cap).
    pub retry_after: Option<std::time::Duration>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    RateLimited,
    Overloaded,
    Server,
    Timeout,
    Auth,
    BadRequest,
    SessionNotFound,
    Other,
}

impl ErrorKind {
    /// Parses the names scripts use (`rate_limited`, `session_not_found`, …).
    pub fn parse(s: &str) -> Option<ErrorKind> {
        Some(match s {
            "rate_limited" => ErrorKind::RateLimited,
            "overloaded" => ErrorKind::Overloaded,
            "server" => ErrorKind::Server,
            "timeout" => ErrorKind::Timeout,
            "auth" => ErrorKind::Auth,
            "bad_request" => ErrorKind::BadRequest,
            "session_not_found" => ErrorKind::SessionNotFound,
            "other" => ErrorKind::Other,
            _ => return None,
        })
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            ErrorKind::RateLimited => "rate limited",
            ErrorKind::Overloaded => "overloaded",
            ErrorKind::Server => "server error",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Auth => "authentication failed",
            ErrorKind::BadRequest => "bad request",
            ErrorKind::SessionNotFound => "session not found",
            ErrorKind::Other => "error",
        };
        f.write_str(s)
    }
}

/// The model provider trait (SPEC §5.5).
pub trait Provider: Send {
    fn name(&self) -> &str;
    fn capabilities(&self) -> Capabilities;
    /// Runs one turn, emitting events to `sink`.
    fn turn(
        &mut self,
        req: &TurnRequest,
        sink: &mut dyn FnMut(Event),
    ) -> Result<TurnResult, ProviderError>;
}

/// Errors building a provider from its settings: configuration problems,
/// which the runner reports with exit 78.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "unknown provider {0:?}: this build knows `scripted`, `openai`, `anthropic` and `local`"
    )]
    Unknown(String),
    #[error("the provider needs {0}")]
    Missing(&'static str),
    #[error("scripted provider script is invalid: {0}")]
    Script(String),
}

/// Provider settings as the runner receives them (no secrets, ever).
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Settings {
    /// `scripted` (more with the providers work).
    pub kind: String,
    /// Scripted: the script's TOML text (embedded so no path has to be
    /// visible inside the sandbox). `None` = the default greeting echo.
    #[serde(default)]
    pub script: Option<String>,
    #[serde(default)]
    pub model: Option<String>,
    /// The credential proxy's socket (HTTP providers reach the API only
    /// through it).
    #[serde(default)]
    pub proxy_socket: Option<std::path::PathBuf>,
    /// The model takes images (`None`: the provider's default).
    #[serde(default)]
    pub vision: Option<bool>,
}

/// Builds the provider the settings name.
pub fn build(settings: &Settings) -> Result<Box<dyn Provider>, ConfigError> {
    match settings.kind.as_str() {
        "scripted" => Ok(Box::new(scripted::Scripted::from_script(
            settings.script.as_deref(),
        )?)),
        "openai" => {
            let socket = settings.proxy_socket.clone().ok_or(ConfigError::Missing(
                "the credential proxy socket (openai talks only through it)",
            ))?;
            let model = settings
                .model
                .clone()
                .ok_or(ConfigError::Missing("provider.openai.model"))?;
            Ok(Box::new(openai::OpenAi {
                socket,
                model,
                timeout: std::time::Duration::from_secs(300),
                vision: settings.vision.unwrap_or(false),
            }))
        }
        "anthropic" => {
            let socket = settings.proxy_socket.clone().ok_or(ConfigError::Missing(
                "the credential proxy socket (anthropic talks only through it)",
            ))?;
            let model = settings
                .model
                .clone()
                .ok_or(ConfigError::Missing("provider.anthropic.model"))?;
            Ok(Box::new(anthropic::Anthropic {
                socket,
                model,
                max_tokens: 4096,
                timeout: std::time::Duration::from_secs(300),
            }))
        }
        other => Err(ConfigError::Unknown(other.to_owned())),
    }
}

/// Standard base64 (with padding) of `data`, for images in API requests.
pub(crate) fn base64(data: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(data)
}
