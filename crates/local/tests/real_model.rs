//! Against the real SmolLM2 file: known token ids, ChatML rendering and a
//! greedy reply. The file is found at `PINCH_TEST_MODEL` or in
//! `~/.cache/pinch/models/` (`scripts/deps --test` puts it there); these
//! tests fail, not skip, when it is missing.

use std::path::PathBuf;

use pinch_local::{Local, Options, DEFAULT_MODEL_FILE};
use pinch_providers::{Event, Provider, TurnRequest};

fn model_path() -> PathBuf {
    if let Some(p) = std::env::var_os("PINCH_TEST_MODEL").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| "/root".into());
    let p = home.join(".cache/pinch/models").join(DEFAULT_MODEL_FILE);
    assert!(
        p.is_file(),
        "the test model is missing: run `scripts/deps --test` (it fetches {DEFAULT_MODEL_FILE} into ~/.cache/pinch/models) or set PINCH_TEST_MODEL to the file"
    );
    p
}

fn load(max_tokens: u32) -> Local {
    let mut o = Options::new(model_path());
    o.max_tokens = max_tokens;
    Local::load(&o).expect("loading the test model")
}

#[test]
fn known_token_ids() {
    let m = load(8);
    let t = m.tokenizer();
    assert_eq!(t.vocab_size(), 49152);
    assert_eq!(
        (
            t.token_id("<|endoftext|>"),
            t.token_id("<|im_start|>"),
            t.token_id("<|im_end|>")
        ),
        (Some(0), Some(1), Some(2))
    );
    let id = |s: &str| {
        t.token_id(s)
            .unwrap_or_else(|| panic!("{s:?} is in the vocabulary"))
    };
    // Whole words are single tokens, a leading space is part of the word (Ġ).
    assert_eq!(
        t.encode("Hello world", false),
        vec![id("Hello"), id("Ġworld")]
    );
    // Digits one at a time (SmolLM's pre-tokenizer), the space on its own.
    assert_eq!(
        t.encode("in 2024", false),
        vec![id("in"), id("Ġ"), id("2"), id("0"), id("2"), id("4")]
    );
    let chat = t.encode("<|im_start|>user\nHi<|im_end|>\n", true);
    assert_eq!(chat, vec![1, id("user"), id("Ċ"), id("Hi"), 2, id("Ċ")]);
    for s in [
        "The quick brown fox jumps over the lazy dog.",
        "naïve café — 日本語 🎉\n\n  x",
        "fn main() { println!(\"{}\", 1 + 2); }",
    ] {
        assert_eq!(t.decode(&t.encode(s, false), false).unwrap(), s);
    }
}

#[test]
fn answers_a_prompt_greedily_and_streams_it() {
    let mut m = load(24);
    let req = TurnRequest {
        system: "You are a helpful assistant.".into(),
        prompt: "What is the capital of France?".into(),
        history: vec![
            ("user".into(), "Hi".into()),
            ("assistant".into(), "Hello! How can I help?".into()),
        ],
        ..Default::default()
    };
    let mut streamed = String::new();
    let r = m
        .turn(&req, &mut |e| {
            if let Event::Text(t) = e {
                streamed.push_str(&t)
            }
        })
        .unwrap();
    assert_eq!(
        streamed.trim(),
        r.text,
        "the streamed pieces add up to the reply"
    );
    assert!(r.text.contains("Paris"), "a sane answer: {:?}", r.text);
    assert!(r.usage.output_tokens >= 1 && r.usage.output_tokens <= 24);
    let again = m.turn(&req, &mut |_| {}).unwrap();
    assert_eq!(again.text, r.text, "greedy decoding is deterministic");
}

#[test]
fn oldest_history_is_dropped_to_fit_and_an_oversized_prompt_is_an_error() {
    let mut o = Options::new(model_path());
    o.context = 256;
    o.max_tokens = 64;
    let m = Local::load(&o).unwrap();
    let long = "word ".repeat(60);
    let req = TurnRequest {
        prompt: "Say hi.".into(),
        history: (0..10)
            .map(|i| {
                (
                    if i % 2 == 0 { "user" } else { "assistant" }.to_string(),
                    format!("{i} {long}"),
                )
            })
            .collect(),
        ..Default::default()
    };
    let toks = m.render(&req).unwrap();
    assert!(toks.len() <= 256 - 64, "{} tokens", toks.len());
    let text = m.tokenizer().decode(&toks, true).unwrap();
    assert!(
        text.contains("9 word") && !text.contains("0 word"),
        "the newest history is kept: {text}"
    );
    let e = m
        .render(&TurnRequest {
            prompt: long.repeat(4),
            ..Default::default()
        })
        .unwrap_err();
    assert!(e.message.contains("provider.local.context"), "{e}");
}

#[test]
fn a_missing_file_names_the_fetch_command() {
    let e = Local::load(&Options::new("/nonexistent/model.gguf")).unwrap_err();
    let s = e.to_string();
    assert!(
        s.contains("/nonexistent/model.gguf") && s.contains("pinch model fetch"),
        "{s}"
    );
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.gguf");
    std::fs::write(&bad, b"not a gguf file at all").unwrap();
    let s = Local::load(&Options::new(&bad)).unwrap_err().to_string();
    assert!(s.contains("bad.gguf") && s.contains("--force"), "{s}");
}

/// An independent implementation (Hugging Face `tokenizers`, already in the
/// tree through candle-core) built from the same GGUF vocabulary, with
/// SmolLM2's pre-tokenizer (single digits, then GPT-2 byte level), agrees
/// with ours on mixed text.
#[test]
fn agrees_with_the_reference_bpe() {
    use candle_core::quantized::gguf_file::{Content, Value};
    use tokenizers::models::bpe::BPE;
    use tokenizers::pre_tokenizers::{
        byte_level::ByteLevel, digits::Digits, sequence::Sequence, PreTokenizerWrapper,
    };
    let mut f = std::fs::File::open(model_path()).unwrap();
    let md = Content::read(&mut f).unwrap().metadata;
    let strings = |k: &str| -> Vec<String> {
        let Some(Value::Array(xs)) = md.get(k) else {
            panic!("{k}")
        };
        xs.iter().map(|x| x.to_string().unwrap().clone()).collect()
    };
    let tokens = strings("tokenizer.ggml.tokens");
    let vocab: tokenizers::models::bpe::Vocab = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), i as u32))
        .collect();
    let merges: Vec<(String, String)> = strings("tokenizer.ggml.merges")
        .iter()
        .map(|m| {
            let (a, b) = m.split_once(' ').unwrap();
            (a.to_owned(), b.to_owned())
        })
        .collect();
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .build()
        .unwrap();
    let mut reference = tokenizers::Tokenizer::new(bpe);
    reference.with_pre_tokenizer(Some(PreTokenizerWrapper::Sequence(Sequence::new(vec![
        PreTokenizerWrapper::Digits(Digits::new(true)),
        PreTokenizerWrapper::ByteLevel(ByteLevel::new(false, true, true)),
    ]))));
    let ours = Local::load(&Options::new(model_path())).unwrap();
    let text = "Hello, world! It's 2024-11-28 and we've got 3.14159 reasons.\n\n  Indented   code:\tfn f(x: u32) -> u32 { x * 2 }\n\
                Ünïcödé: naïve café, 日本語のテキスト, emoji 🎉🚀, Ελληνικά, русский.\r\n'll 're 've 'd 'm 's 't\n   \n";
    for line in text.split_inclusive('\n').chain([text]) {
        let want = reference.encode(line, false).unwrap().get_ids().to_vec();
        assert_eq!(
            ours.tokenizer().encode(line, false),
            want,
            "tokens of {line:?}"
        );
    }
}
