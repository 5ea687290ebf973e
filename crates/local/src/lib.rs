//! The `local` provider: a small chat model run in-process on the CPU.
//!
//! [`Local`] loads a GGUF file (default SmolLM2-135M-Instruct, Q4_1) with
//! candle's quantized llama and builds its [`Tokenizer`] from the file's
//! own metadata, so one file is the whole model. A turn renders the ChatML
//! template (system, the history that fits, the prompt, any steps), decodes
//! greedily (the same input gives the same reply), stops at `<|im_end|>` or
//! any other control token, and streams each piece of text as it completes.
//!
//! No tools (`Capabilities { tools: false }`): a 135M model cannot follow a
//! tool protocol. No async, no SQLite: the runner calls `turn` on its turn
//! thread like any other provider.

pub mod tokenizer;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use candle_core::quantized::{gguf_file, GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use candle_transformers::models::quantized_llama::{ModelWeights, MAX_SEQ_LEN};
use pinch_providers::{
    Capabilities, ErrorKind, Event, Provider, ProviderError, Step, TurnRequest, TurnResult, Usage,
};

pub use tokenizer::{Tokenizer, Utf8Stream};

/// The default model's file name (in `$PINCH_HOME/models/`).
pub const DEFAULT_MODEL_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
/// Cap on generated tokens per step unless configured.
pub const DEFAULT_MAX_TOKENS: u32 = 512;
/// Context window used unless configured (prompt + reply). The model was
/// trained on 8k, but a 2-core CPU takes seconds per thousand prompt
/// tokens, and candle's rotary tables stop at 4096.
pub const DEFAULT_CONTEXT: u32 = 2048;

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("no local model at {path}: run `pinch model fetch` to download SmolLM2-135M-Instruct, or point provider.local.model at a GGUF file")]
    Missing { path: PathBuf },
    #[error("cannot read the local model {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a usable GGUF model ({reason}); run `pinch model fetch --force` to replace it")]
    Invalid { path: PathBuf, reason: String },
    #[error("the tokenizer in {path}: {source}")]
    Tokenizer {
        path: PathBuf,
        source: tokenizer::TokenizerError,
    },
}

/// How to run the model.
#[derive(Clone, Debug)]
pub struct Options {
    pub path: PathBuf,
    pub max_tokens: u32,
    /// Prompt plus reply, in tokens (capped by the model's own window).
    pub context: u32,
    /// Convert Q4_1 weights to Q8_0 at load (candle has AVX2 kernels for
    /// Q8_0, only scalar code for Q4_1). Off: measured slower here
    /// (`pinch bench p10 --requantize`: 1.5 vs 7.5 tok/s, load 2.9 vs 0.6 s).
    pub requantize: bool,
}

impl Options {
    pub fn new(path: impl Into<PathBuf>) -> Options {
        Options {
            path: path.into(),
            max_tokens: DEFAULT_MAX_TOKENS,
            context: DEFAULT_CONTEXT,
            requantize: false,
        }
    }
}

/// Rewrites the model in memory with its Q4_1 tensors as Q8_0 (8-bit
/// blocks of 32 with one scale: finer than Q4_1's 4 bits, so nothing the
/// model knows is lost; about 1.7× the memory).
fn requantize(
    content: gguf_file::Content,
    file: &mut std::fs::File,
    device: &Device,
) -> candle_core::Result<(gguf_file::Content, std::io::Cursor<Vec<u8>>)> {
    let mut names: Vec<&String> = content.tensor_infos.keys().collect();
    names.sort();
    let mut tensors: Vec<(String, QTensor)> = Vec::with_capacity(names.len());
    for name in names {
        let q = content.tensor(file, name, device)?;
        let q = if q.dtype() == GgmlDType::Q4_1 {
            QTensor::quantize(&q.dequantize(device)?, GgmlDType::Q8_0)?
        } else {
            q
        };
        tensors.push((name.clone(), q));
    }
    let metadata: Vec<(&str, &gguf_file::Value)> = content
        .metadata
        .iter()
        .map(|(k, v)| (k.as_str(), v))
        .collect();
    let refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(n, q)| (n.as_str(), q)).collect();
    let mut mem = std::io::Cursor::new(Vec::new());
    gguf_file::write(&mut mem, &metadata, &refs)?;
    mem.set_position(0);
    let ct = gguf_file::Content::read(&mut mem)?;
    Ok((ct, mem))
}

/// A loaded model, ready for turns.
pub struct Local {
    weights: ModelWeights,
    tok: Tokenizer,
    device: Device,
    context: usize,
    max_tokens: usize,
    im_start: u32,
    im_end: u32,
    load_time: Duration,
    name: String,
}

impl std::fmt::Debug for Local {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Local")
            .field("name", &self.name)
            .field("context", &self.context)
            .field("max_tokens", &self.max_tokens)
            .finish()
    }
}

/// Timings of one generation (for `pinch bench p10` and logs).
#[derive(Clone, Copy, Debug, Default)]
pub struct GenStats {
    pub prompt_tokens: usize,
    pub new_tokens: usize,
    /// Prompt processing up to the first sampled token.
    pub first_token: Duration,
    /// Everything after the first token.
    pub decode: Duration,
}

impl GenStats {
    /// Generation speed after the first token, tokens per second.
    pub fn tokens_per_s(&self) -> f64 {
        let n = self.new_tokens.saturating_sub(1) as f64;
        if self.decode.is_zero() {
            0.0
        } else {
            n / self.decode.as_secs_f64()
        }
    }
}

impl Local {
    pub fn load(opts: &Options) -> Result<Local, LoadError> {
        let started = Instant::now();
        let path = &opts.path;
        let mut file = match std::fs::File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(LoadError::Missing { path: path.clone() })
            }
            Err(e) => {
                return Err(LoadError::Io {
                    path: path.clone(),
                    source: e,
                })
            }
        };
        let invalid = |reason: String| LoadError::Invalid {
            path: path.clone(),
            reason,
        };
        let content = gguf_file::Content::read(&mut file).map_err(|e| invalid(e.to_string()))?;
        let arch = content
            .metadata
            .get("general.architecture")
            .and_then(|v| v.to_string().ok())
            .cloned()
            .unwrap_or_default();
        if arch != "llama" {
            return Err(invalid(format!(
                "architecture {arch:?}; the local provider runs llama-architecture models"
            )));
        }
        let trained_ctx = content
            .metadata
            .get("llama.context_length")
            .and_then(|v| v.to_u32().ok())
            .unwrap_or(2048) as usize;
        let tok = Tokenizer::from_gguf(&content.metadata).map_err(|e| LoadError::Tokenizer {
            path: path.clone(),
            source: e,
        })?;
        let device = Device::Cpu;
        let weights = if opts.requantize
            && content
                .tensor_infos
                .values()
                .any(|t| t.ggml_dtype == GgmlDType::Q4_1)
        {
            let (ct, mut mem) =
                requantize(content, &mut file, &device).map_err(|e| invalid(e.to_string()))?;
            ModelWeights::from_gguf(ct, &mut mem, &device).map_err(|e| invalid(e.to_string()))?
        } else {
            ModelWeights::from_gguf(content, &mut file, &device)
                .map_err(|e| invalid(e.to_string()))?
        };
        let (Some(im_start), Some(im_end)) =
            (tok.token_id("<|im_start|>"), tok.token_id("<|im_end|>"))
        else {
            return Err(invalid(
                "no <|im_start|>/<|im_end|> tokens: not a ChatML chat model".into(),
            ));
        };
        let context = (opts.context.max(64) as usize)
            .min(trained_ctx)
            .min(MAX_SEQ_LEN);
        let max_tokens = (opts.max_tokens.max(1) as usize).min(context / 2);
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "local".into());
        let load_time = started.elapsed();
        tracing::info!(model = %name, context, max_tokens, load_ms = load_time.as_millis() as u64, "local model loaded");
        Ok(Local {
            weights,
            tok,
            device,
            context,
            max_tokens,
            im_start,
            im_end,
            load_time,
            name,
        })
    }

    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tok
    }
    pub fn load_time(&self) -> Duration {
        self.load_time
    }
    pub fn context(&self) -> usize {
        self.context
    }

    /// One ChatML turn: `<|im_start|>role\ncontent<|im_end|>\n`. The content
    /// is plain text: it cannot open or close a turn.
    fn turn_tokens(&self, role: &str, content: &str) -> Vec<u32> {
        let mut t = vec![self.im_start];
        t.extend(self.tok.encode(&format!("{role}\n"), false));
        t.extend(self.tok.encode(content, false));
        t.push(self.im_end);
        t.extend(self.tok.encode("\n", false));
        t
    }

    /// The prompt's tokens: system, the newest history that fits, the batch,
    /// the turn's steps, and the assistant header.
    pub fn render(&self, req: &TurnRequest) -> Result<Vec<u32>, ProviderError> {
        let head = if req.system.trim().is_empty() {
            Vec::new()
        } else {
            self.turn_tokens("system", &req.system)
        };
        // A 135M model copies markup instead of answering it: it gets the
        // plain texts of the batch (or the prompt without its tags).
        let user = if req.texts.iter().any(|t| !t.trim().is_empty()) {
            req.texts.join("\n")
        } else {
            plain(&req.prompt)
        };
        let mut tail = self.turn_tokens("user", &user);
        for step in &req.steps {
            match step {
                Step::Assistant { text, calls } => {
                    let mut s = text.clone();
                    for c in calls {
                        s.push_str(&format!("\n[called {}({})]", c.name, c.arguments));
                    }
                    tail.extend(self.turn_tokens("assistant", &s));
                }
                Step::ToolResult {
                    name,
                    content,
                    is_error,
                    ..
                } => {
                    let what = if *is_error { "failed" } else { "returned" };
                    tail.extend(
                        self.turn_tokens("user", &format!("[tool {name} {what}]\n{content}")),
                    );
                }
                Step::User { text } => tail.extend(self.turn_tokens("user", text)),
            }
        }
        tail.push(self.im_start);
        tail.extend(self.tok.encode("assistant\n", false));
        let budget = self.context - self.max_tokens;
        let fixed = head.len() + tail.len();
        if fixed > budget {
            return Err(ProviderError {
                message: format!(
                    "the prompt needs {fixed} tokens but the local model's window leaves {budget} ({} minus {} for the reply); shorten the agent's instructions or raise provider.local.context",
                    self.context, self.max_tokens
                ),
                retryable: false,
                kind: ErrorKind::BadRequest,
                retry_after: None,
            });
        }
        // History, newest first, while it fits; then back in order.
        let mut kept: Vec<Vec<u32>> = Vec::new();
        let mut used = fixed;
        for (role, text) in req.history.iter().rev() {
            let role = if role == "assistant" {
                "assistant"
            } else {
                "user"
            };
            let t = self.turn_tokens(role, &plain(text));
            if used + t.len() > budget {
                break;
            }
            used += t.len();
            kept.push(t);
        }
        if kept.len() < req.history.len() {
            tracing::debug!(
                dropped = req.history.len() - kept.len(),
                "oldest history dropped to fit the local model's window"
            );
        }
        let mut all = head;
        for t in kept.into_iter().rev() {
            all.extend(t);
        }
        all.extend(tail);
        Ok(all)
    }

    /// Greedy generation from `prompt`, calling `on_text` with each complete
    /// piece of text; returns the whole reply and its timings.
    pub fn generate(
        &mut self,
        prompt: &[u32],
        max_new: usize,
        on_text: &mut dyn FnMut(&str),
    ) -> Result<(String, GenStats), ProviderError> {
        let fail = |e: candle_core::Error| ProviderError {
            message: format!("local model: {e}"),
            retryable: false,
            kind: ErrorKind::Other,
            retry_after: None,
        };
        let started = Instant::now();
        let mut stats = GenStats {
            prompt_tokens: prompt.len(),
            ..Default::default()
        };
        let max_new = max_new.min(self.context.saturating_sub(prompt.len()));
        let mut text = String::new();
        let mut utf8 = Utf8Stream::default();
        let mut pos = 0;
        let mut input: Vec<u32> = prompt.to_vec();
        let mut first_at = None;
        for _ in 0..max_new {
            let x = Tensor::new(input.as_slice(), &self.device)
                .and_then(|t| t.unsqueeze(0))
                .map_err(fail)?;
            let logits = self.weights.forward(&x, pos).map_err(fail)?;
            let logits: Vec<f32> = logits.squeeze(0).and_then(|l| l.to_vec1()).map_err(fail)?;
            pos += input.len();
            let next = argmax(&logits);
            if first_at.is_none() {
                first_at = Some(Instant::now());
                stats.first_token = started.elapsed();
            }
            stats.new_tokens += 1;
            if next == self.im_end || Some(next) == self.tok.eos() || self.tok.is_special(next) {
                break;
            }
            let bytes = self
                .tok
                .token_bytes(next, false)
                .map_err(|e| ProviderError {
                    message: e.to_string(),
                    retryable: false,
                    kind: ErrorKind::Other,
                    retry_after: None,
                })?;
            let piece = utf8.push(&bytes);
            if !piece.is_empty() {
                on_text(&piece);
                text.push_str(&piece);
            }
            input.clear();
            input.push(next);
        }
        let rest = utf8.finish();
        if !rest.is_empty() {
            on_text(&rest);
            text.push_str(&rest);
        }
        stats.decode = first_at.map(|t| t.elapsed()).unwrap_or_default();
        Ok((text, stats))
    }
}

/// Text without the prompt format's tags (SPEC §5.3 escapes `<` in
/// content, so every raw `<…>` is markup), entities decoded, blank lines
/// dropped.
pub fn plain(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find('<') {
        out.push_str(&rest[..i]);
        match rest[i..].find('>') {
            Some(j) => rest = &rest[i + j + 1..],
            None => {
                out.push_str(&rest[i..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    let out = out
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&");
    out.lines()
        .map(str::trim_end)
        .filter(|l| !l.trim().is_empty())
        .collect::<Vec<_>>()
        .join("\n")
}

fn argmax(xs: &[f32]) -> u32 {
    let mut best = 0;
    for (i, x) in xs.iter().enumerate() {
        // Ties go to the lower id, so the choice never depends on order of evaluation.
        if *x > xs[best] {
            best = i;
        }
    }
    best as u32
}

impl Provider for Local {
    fn name(&self) -> &str {
        "local"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            tools: false,
            streaming: true,
            context_window: self.context as u32,
            vision: false,
        }
    }

    fn turn(
        &mut self,
        req: &TurnRequest,
        sink: &mut dyn FnMut(Event),
    ) -> Result<TurnResult, ProviderError> {
        let prompt = self.render(req)?;
        sink(Event::Progress(format!(
            "local model: reading {} prompt tokens",
            prompt.len()
        )));
        let max = self.max_tokens;
        let (text, stats) = self.generate(&prompt, max, &mut |piece| {
            sink(Event::Text(piece.to_owned()))
        })?;
        tracing::info!(
            prompt_tokens = stats.prompt_tokens,
            new_tokens = stats.new_tokens,
            first_token_ms = stats.first_token.as_millis() as u64,
            tokens_per_s = format!("{:.1}", stats.tokens_per_s()),
            "local turn"
        );
        Ok(TurnResult {
            text: text.trim().to_owned(),
            usage: Usage {
                input_tokens: stats.prompt_tokens as u64,
                output_tokens: stats.new_tokens as u64,
            },
            tool_calls: Vec::new(),
        })
    }
}

/// The default model path under a models folder.
pub fn default_model_path(models_dir: &Path) -> PathBuf {
    models_dir.join(DEFAULT_MODEL_FILE)
}

#[cfg(test)]
mod tests {
    #[test]
    fn plain_strips_the_prompt_format() {
        let p = "<context timezone=\"UTC\" now=\"Nov 28, 2026, 4:00 AM\"/>\n<message id=\"2\" from=\"terminal\" time=\"x\">\nis 1 &lt; 2 &amp;&amp; \"ok\"?\n</message>\n";
        assert_eq!(super::plain(p), "is 1 < 2 && \"ok\"?");
        assert_eq!(super::plain("no tags"), "no tags");
    }
}
