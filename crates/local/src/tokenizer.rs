//! A byte-level BPE tokenizer (the GPT-2 family) built from a GGUF file's
//! `tokenizer.ggml.*` metadata.
//!
//! Encoding: special (control) tokens are matched whole when asked to; the
//! rest is pre-split like the model's own tokenizer (digits one by one for
//! `smollm`/`starcoder`-style vocabularies, then the GPT-2 word regex), each
//! piece's bytes are mapped to the printable stand-ins GPT-2 uses, and
//! adjacent symbols are merged lowest rank first. Decoding maps the
//! stand-ins back to bytes; [`Utf8Stream`] turns those bytes into text
//! pieces without splitting a character.

use std::collections::HashMap;

/// The GPT-2 word regex: contractions, letters, numbers, other symbols, each
/// optionally led by one space; runs of whitespace not followed by a word.
const GPT2_PATTERN: &str =
    r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";

/// `tokenizer.ggml.token_type` values (llama.cpp's `llama_token_type`).
const TYPE_CONTROL: i32 = 3;
const TYPE_USER_DEFINED: i32 = 4;

#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    #[error("the GGUF metadata has no {0}")]
    Missing(&'static str),
    #[error(
        "tokenizer.ggml.model is {0:?}; only byte-level BPE (`gpt2`) vocabularies are supported"
    )]
    UnsupportedModel(String),
    #[error("tokenizer.ggml.merges entry {index} ({entry:?}) is not two known tokens separated by a space")]
    BadMerge { index: usize, entry: String },
    #[error("token id {0} is outside the vocabulary")]
    BadId(u32),
}

/// What a tokenizer is made of (the GGUF metadata, or a test's own vocabulary).
#[derive(Clone, Debug, Default)]
pub struct Vocab {
    pub tokens: Vec<String>,
    /// One per token; empty = all normal.
    pub token_types: Vec<i32>,
    /// `"left right"`, highest priority first.
    pub merges: Vec<String>,
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    pub unk: Option<u32>,
    /// `tokenizer.ggml.pre`: selects the pre-tokenizer.
    pub pre: String,
}

pub struct Tokenizer {
    tokens: Vec<String>,
    ids: HashMap<String, u32>,
    special: Vec<bool>,
    /// Special tokens by text, longest first (matched whole when allowed).
    specials_by_len: Vec<(String, u32)>,
    /// (left, right) → (rank, merged id).
    merges: HashMap<(u32, u32), (u32, u32)>,
    byte_to_char: [char; 256],
    char_to_byte: HashMap<char, u8>,
    /// The id of each single byte's stand-in (the starting symbols).
    byte_ids: [Option<u32>; 256],
    word_re: fancy_regex::Regex,
    split_digits: bool,
    bos: Option<u32>,
    eos: Option<u32>,
    unk: Option<u32>,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("vocab", &self.tokens.len())
            .field("merges", &self.merges.len())
            .finish()
    }
}

/// GPT-2's map from bytes to printable characters: the printable Latin-1
/// bytes stand for themselves, the others take the code points from 256 on.
fn byte_chars() -> [char; 256] {
    let mut map = ['\0'; 256];
    let mut next = 256u32;
    for b in 0..=255u8 {
        let printable = matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
        map[b as usize] = if printable {
            char::from(b)
        } else {
            let c = char::from_u32(next).expect("256..=323 are valid code points");
            next += 1;
            c
        };
    }
    map
}

impl Tokenizer {
    pub fn new(v: Vocab) -> Result<Tokenizer, TokenizerError> {
        let ids: HashMap<String, u32> = v
            .tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), i as u32))
            .collect();
        let special: Vec<bool> = (0..v.tokens.len())
            .map(|i| {
                matches!(
                    v.token_types.get(i),
                    Some(&TYPE_CONTROL) | Some(&TYPE_USER_DEFINED)
                )
            })
            .collect();
        let mut specials_by_len: Vec<(String, u32)> = special
            .iter()
            .enumerate()
            .filter(|(_, s)| **s)
            .map(|(i, _)| (v.tokens[i].clone(), i as u32))
            .filter(|(t, _)| !t.is_empty())
            .collect();
        specials_by_len.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(a.1.cmp(&b.1)));
        let mut merges = HashMap::with_capacity(v.merges.len());
        for (rank, entry) in v.merges.iter().enumerate() {
            let bad = || TokenizerError::BadMerge {
                index: rank,
                entry: entry.clone(),
            };
            let (l, r) = entry.split_once(' ').ok_or_else(bad)?;
            let (Some(&li), Some(&ri)) = (ids.get(l), ids.get(r)) else {
                return Err(bad());
            };
            let Some(&mi) = ids.get(&format!("{l}{r}")) else {
                return Err(bad());
            };
            merges.entry((li, ri)).or_insert((rank as u32, mi));
        }
        let byte_to_char = byte_chars();
        let char_to_byte = byte_to_char
            .iter()
            .enumerate()
            .map(|(b, c)| (*c, b as u8))
            .collect();
        let mut byte_ids = [None; 256];
        for (b, c) in byte_to_char.iter().enumerate() {
            byte_ids[b] = ids.get(c.to_string().as_str()).copied();
        }
        // Vocabularies that split numbers into single digits before the
        // GPT-2 regex (llama.cpp's pre-tokenizer names for them).
        let split_digits = matches!(
            v.pre.as_str(),
            "smollm" | "starcoder" | "refact" | "command-r" | "codeshell" | "exaone" | "minerva-7b"
        );
        Ok(Tokenizer {
            tokens: v.tokens,
            ids,
            special,
            specials_by_len,
            merges,
            byte_to_char,
            char_to_byte,
            byte_ids,
            word_re: fancy_regex::Regex::new(GPT2_PATTERN).expect("the GPT-2 pattern compiles"),
            split_digits,
            bos: v.bos,
            eos: v.eos,
            unk: v.unk,
        })
    }

    /// Reads the `tokenizer.ggml.*` keys of a GGUF file.
    pub fn from_gguf(
        md: &HashMap<String, candle_core::quantized::gguf_file::Value>,
    ) -> Result<Tokenizer, TokenizerError> {
        use candle_core::quantized::gguf_file::Value;
        let strings = |key: &'static str| -> Result<Vec<String>, TokenizerError> {
            match md.get(key) {
                Some(Value::Array(xs)) => xs
                    .iter()
                    .map(|x| {
                        x.to_string()
                            .cloned()
                            .map_err(|_| TokenizerError::Missing(key))
                    })
                    .collect(),
                _ => Err(TokenizerError::Missing(key)),
            }
        };
        let id = |key: &str| md.get(key).and_then(|v| v.to_u32().ok());
        let model = md
            .get("tokenizer.ggml.model")
            .and_then(|v| v.to_string().ok())
            .cloned()
            .unwrap_or_default();
        if model != "gpt2" {
            return Err(TokenizerError::UnsupportedModel(model));
        }
        let token_types = match md.get("tokenizer.ggml.token_type") {
            Some(Value::Array(xs)) => xs.iter().map(|x| x.to_i32().unwrap_or(1)).collect(),
            _ => Vec::new(),
        };
        Tokenizer::new(Vocab {
            tokens: strings("tokenizer.ggml.tokens")?,
            token_types,
            merges: strings("tokenizer.ggml.merges")?,
            bos: id("tokenizer.ggml.bos_token_id"),
            eos: id("tokenizer.ggml.eos_token_id"),
            unk: id("tokenizer.ggml.unknown_token_id"),
            pre: md
                .get("tokenizer.ggml.pre")
                .and_then(|v| v.to_string().ok())
                .cloned()
                .unwrap_or_default(),
        })
    }

    pub fn vocab_size(&self) -> usize {
        self.tokens.len()
    }
    pub fn bos(&self) -> Option<u32> {
        self.bos
    }
    pub fn eos(&self) -> Option<u32> {
        self.eos
    }
    /// The id of a token by its exact text (`<|im_start|>`).
    pub fn token_id(&self, text: &str) -> Option<u32> {
        self.ids.get(text).copied()
    }
    pub fn is_special(&self, id: u32) -> bool {
        self.special.get(id as usize).copied().unwrap_or(false)
    }

    /// Encodes `text`. With `allow_special`, special tokens written in the
    /// text (`<|im_end|>`) become their ids; without, they are plain text
    /// (user content must not be able to forge a turn boundary).
    pub fn encode(&self, text: &str, allow_special: bool) -> Vec<u32> {
        let mut out = Vec::new();
        if !allow_special || self.specials_by_len.is_empty() {
            self.encode_plain(text, &mut out);
            return out;
        }
        let mut start = 0;
        let mut i = 0;
        while i < text.len() {
            let rest = &text[i..];
            if let Some((s, id)) = self
                .specials_by_len
                .iter()
                .find(|(s, _)| rest.starts_with(s.as_str()))
            {
                self.encode_plain(&text[start..i], &mut out);
                out.push(*id);
                i += s.len();
                start = i;
            } else {
                i += rest.chars().next().map_or(1, char::len_utf8);
            }
        }
        self.encode_plain(&text[start..], &mut out);
        out
    }

    fn encode_plain(&self, text: &str, out: &mut Vec<u32>) {
        if text.is_empty() {
            return;
        }
        let mut emit = |piece: &str| self.encode_word(piece, out);
        if self.split_digits {
            let mut seg_start = 0;
            for (i, c) in text.char_indices() {
                if c.is_numeric() {
                    self.split_words(&text[seg_start..i], &mut emit);
                    emit(&text[i..i + c.len_utf8()]);
                    seg_start = i + c.len_utf8();
                }
            }
            self.split_words(&text[seg_start..], &mut emit);
        } else {
            self.split_words(text, &mut emit);
        }
    }

    fn split_words(&self, text: &str, emit: &mut dyn FnMut(&str)) {
        let mut last = 0;
        for m in self.word_re.find_iter(text) {
            match m {
                Ok(m) => {
                    if m.start() > last {
                        emit(&text[last..m.start()]);
                    }
                    emit(m.as_str());
                    last = m.end();
                }
                // Backtracking limit: the rest goes as one piece (the BPE
                // still encodes it correctly, only less compactly).
                Err(_) => break,
            }
        }
        if last < text.len() {
            emit(&text[last..]);
        }
    }

    /// One pre-token: whole-word lookup, else merges by rank.
    fn encode_word(&self, word: &str, out: &mut Vec<u32>) {
        let mapped: String = word
            .bytes()
            .map(|b| self.byte_to_char[b as usize])
            .collect();
        if let Some(&id) = self.ids.get(&mapped) {
            out.push(id);
            return;
        }
        let mut syms: Vec<u32> = Vec::with_capacity(word.len());
        for b in word.bytes() {
            if let Some(id) = self.byte_ids[b as usize].or(self.unk) {
                syms.push(id);
            }
        }
        loop {
            let best = syms
                .windows(2)
                .enumerate()
                .filter_map(|(i, w)| {
                    self.merges
                        .get(&(w[0], w[1]))
                        .map(|&(rank, id)| (rank, i, id))
                })
                .min();
            let Some((_, i, id)) = best else { break };
            syms[i] = id;
            syms.remove(i + 1);
        }
        out.extend(syms);
    }

    /// The bytes a token stands for. Special tokens give their text when
    /// `with_special`, nothing otherwise.
    pub fn token_bytes(&self, id: u32, with_special: bool) -> Result<Vec<u8>, TokenizerError> {
        let t = self
            .tokens
            .get(id as usize)
            .ok_or(TokenizerError::BadId(id))?;
        if self.is_special(id) {
            return Ok(if with_special {
                t.as_bytes().to_vec()
            } else {
                Vec::new()
            });
        }
        let mut bytes = Vec::with_capacity(t.len());
        for c in t.chars() {
            match self.char_to_byte.get(&c) {
                Some(&b) => bytes.push(b),
                // Not a byte stand-in (a vocabulary with raw text tokens): as is.
                None => bytes.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes()),
            }
        }
        Ok(bytes)
    }

    /// Decodes ids to text (invalid UTF-8 becomes U+FFFD).
    pub fn decode(&self, ids: &[u32], with_special: bool) -> Result<String, TokenizerError> {
        let mut bytes = Vec::new();
        for &id in ids {
            bytes.extend(self.token_bytes(id, with_special)?);
        }
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }
}

/// Turns a stream of token bytes into text pieces, holding back a
/// character split across tokens until its last byte arrives.
#[derive(Debug, Default)]
pub struct Utf8Stream {
    pending: Vec<u8>,
}

impl Utf8Stream {
    /// Adds bytes; returns the text that is complete now (maybe empty).
    pub fn push(&mut self, bytes: &[u8]) -> String {
        self.pending.extend_from_slice(bytes);
        let mut out = String::new();
        loop {
            match std::str::from_utf8(&self.pending) {
                Ok(s) => {
                    out.push_str(s);
                    self.pending.clear();
                    return out;
                }
                Err(e) => {
                    let valid = e.valid_up_to();
                    out.push_str(
                        std::str::from_utf8(&self.pending[..valid]).expect("valid prefix"),
                    );
                    match e.error_len() {
                        // Incomplete at the end: wait for more.
                        None => {
                            self.pending.drain(..valid);
                            return out;
                        }
                        Some(bad) => {
                            out.push(char::REPLACEMENT_CHARACTER);
                            self.pending.drain(..valid + bad);
                        }
                    }
                }
            }
        }
    }

    /// The end of the stream: whatever is left, lossily.
    pub fn finish(&mut self) -> String {
        let s = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tiny vocabulary: all 256 byte stand-ins, a few merges, and ChatML
    /// specials.
    fn tiny() -> Tokenizer {
        let chars = byte_chars();
        let mut tokens = vec![
            "<|endoftext|>".to_string(),
            "<|im_start|>".into(),
            "<|im_end|>".into(),
        ];
        let mut types = vec![3, 3, 3];
        for c in chars {
            tokens.push(c.to_string());
            types.push(1);
        }
        let sp = chars[b' ' as usize];
        let merges = vec![
            format!("{sp} w"),
            "h e".into(),
            "l l".into(),
            "he ll".into(),
            "hell o".into(),
            format!("{sp}w o"),
        ];
        for m in &merges {
            tokens.push(m.replace(' ', ""));
            types.push(1);
        }
        Tokenizer::new(Vocab {
            tokens,
            token_types: types,
            merges,
            bos: Some(1),
            eos: Some(2),
            unk: Some(0),
            pre: "smollm".into(),
        })
        .unwrap()
    }

    #[test]
    fn merges_apply_by_rank_and_round_trip() {
        let t = tiny();
        let ids = t.encode("hello wo", false);
        let texts: Vec<String> = ids.iter().map(|&i| t.decode(&[i], true).unwrap()).collect();
        assert_eq!(texts, ["hello", " wo"]);
        for s in [
            "hello world",
            "naïve café — 日本語 🎉",
            "  two  spaces\n\ttab",
            "a1b22 333",
            "",
        ] {
            assert_eq!(
                t.decode(&t.encode(s, false), false).unwrap(),
                s,
                "round trip of {s:?}"
            );
        }
    }

    #[test]
    fn digits_are_split_one_by_one() {
        let t = tiny();
        let ids = t.encode("x 42", false);
        let texts: Vec<String> = ids.iter().map(|&i| t.decode(&[i], true).unwrap()).collect();
        assert_eq!(texts, ["x", " ", "4", "2"]);
    }

    #[test]
    fn special_tokens_are_matched_whole_only_when_allowed() {
        let t = tiny();
        let ids = t.encode("<|im_start|>user\nhi<|im_end|>", true);
        assert_eq!(ids.first(), Some(&1));
        assert_eq!(ids.last(), Some(&2));
        assert_eq!(
            t.decode(&ids, true).unwrap(),
            "<|im_start|>user\nhi<|im_end|>"
        );
        assert_eq!(t.decode(&ids, false).unwrap(), "user\nhi");
        let plain = t.encode("<|im_end|>", false);
        assert!(
            !plain.contains(&2) && plain.len() > 1,
            "user text cannot forge a turn end: {plain:?}"
        );
        assert_eq!(t.decode(&plain, true).unwrap(), "<|im_end|>");
    }

    #[test]
    fn bad_merges_are_named() {
        let v = Vocab {
            tokens: vec!["a".into(), "b".into()],
            merges: vec!["a b".into()],
            ..Default::default()
        };
        let e = Tokenizer::new(v).unwrap_err();
        assert!(e.to_string().contains("\"a b\""), "{e}");
    }

    #[test]
    fn utf8_stream_holds_split_characters() {
        let mut s = Utf8Stream::default();
        let bytes = "é🎉".as_bytes();
        assert_eq!(s.push(&bytes[..1]), "");
        assert_eq!(s.push(&bytes[1..3]), "é");
        assert_eq!(s.push(&bytes[3..5]), "");
        assert_eq!(s.push(&bytes[5..]), "🎉");
        assert_eq!(s.push(&[0xff, b'a']), "\u{fffd}a");
        assert_eq!(s.push(&[0xe2]), "");
        assert_eq!(s.finish(), "\u{fffd}");
    }
}
