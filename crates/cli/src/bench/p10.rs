//! P10: the local model on this machine's CPU.

use super::*;

/// `pinch bench p10`: load time, time to first token and generation speed
/// of the local model (SmolLM2-135M-Instruct Q4_1 by default), in-process,
/// greedy. Build with `--release`: a debug build measures the debug build.
#[derive(clap::Args)]
pub struct P10Args {
    /// The GGUF file (default: the configured local model, else $PINCH_HOME/models/).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Generations to measure (the median is reported).
    #[arg(long, default_value_t = 5)]
    iterations: usize,
    /// Tokens to generate per iteration.
    #[arg(long, default_value_t = 128)]
    tokens: u32,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Convert the Q4_1 weights to Q8_0 at load (candle's AVX2 Q8_0 kernels) instead of running them as stored.
    #[arg(long)]
    requantize: bool,
}

pub fn p10(default_model: PathBuf, args: P10Args) -> Result<i32> {
    let path = args.model.unwrap_or(default_model);
    if !path.is_file() {
        bail!(
            "no model at {}: run `pinch model fetch` first (or pass --model <file.gguf>)",
            path.display()
        );
    }
    let iterations = args.iterations.max(1);
    let mut opts = pinch_local::Options::new(&path);
    opts.max_tokens = args.tokens.max(2);
    opts.requantize = args.requantize;
    // Loads: the first is cold-ish (page cache may already hold the file), keep the median.
    let mut loads = Vec::new();
    let mut model = None;
    for _ in 0..3 {
        let m = pinch_local::Local::load(&opts).map_err(|e| anyhow!("{e}"))?;
        loads.push(m.load_time());
        model = Some(m);
    }
    let mut model = model.expect("loaded at least once");
    let req = pinch_providers::TurnRequest {
        system: "You are a helpful assistant.".into(),
        prompt: "Tell me a long story about a dragon who learns to bake bread, with many details."
            .into(),
        ..Default::default()
    };
    let prompt = model.render(&req).map_err(|e| anyhow!("{e}"))?;
    eprintln!(
        "pinch bench: P10 with {} ({iterations} iterations, up to {} tokens, {} threads)…",
        path.display(),
        opts.max_tokens,
        candle_threads()
    );
    let mut runs = Vec::new();
    for _ in 0..iterations {
        let (_, stats) = model
            .generate(&prompt, opts.max_tokens as usize, &mut |_| {})
            .map_err(|e| anyhow!("{e}"))?;
        runs.push(stats);
    }
    let med = |mut xs: Vec<f64>| -> f64 {
        xs.sort_by(|a, b| a.total_cmp(b));
        xs[xs.len() / 2]
    };
    let load_ms = med(loads.iter().map(|d| d.as_secs_f64() * 1e3).collect());
    let ttft_ms = med(runs
        .iter()
        .map(|s| s.first_token.as_secs_f64() * 1e3)
        .collect());
    let tps = med(runs.iter().map(|s| s.tokens_per_s()).collect());
    let new_tokens = med(runs.iter().map(|s| s.new_tokens as f64).collect());
    let debug = cfg!(debug_assertions);
    if args.json {
        let v = serde_json::json!({
            "figure": "P10", "model": path.display().to_string(), "threads": candle_threads(),
            "load_ms": load_ms, "prompt_tokens": prompt.len(), "first_token_ms": ttft_ms,
            "new_tokens": new_tokens, "tokens_per_s": tps, "target_tokens_per_s": 30, "debug_build": debug, "requantized_q8_0": opts.requantize,
        });
        println!("{v}");
    } else {
        println!(
            "P10  local model (greedy, CPU, {} threads, {}){}",
            candle_threads(),
            if opts.requantize {
                "Q4_1 → Q8_0 at load"
            } else {
                "Q4_1 as stored"
            },
            if debug {
                "  [DEBUG BUILD: use --release]"
            } else {
                ""
            }
        );
        println!("  model            {}", path.display());
        println!("  load             {load_ms:8.1} ms   (median of 3)");
        println!(
            "  first token      {ttft_ms:8.1} ms   ({} prompt tokens)",
            prompt.len()
        );
        println!("  generation       {tps:8.1} tok/s ({new_tokens:.0} tokens, median of {iterations})   target ≥ 30 tok/s");
    }
    Ok(0)
}

/// Threads candle's CPU kernels use (RAYON_NUM_THREADS, else all cores).
fn candle_threads() -> usize {
    std::env::var("RAYON_NUM_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        })
}
