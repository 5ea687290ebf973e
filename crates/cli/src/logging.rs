//! Logging: `tracing` to stderr (host, runner) or to `logs/host.log` (the
//! embedded host of `pinch chat`, so the terminal stays a chat).

use std::path::Path;

use anyhow::{Context, Result};
use tracing_subscriber::EnvFilter;

fn filter(var: &str, default: &str) -> EnvFilter {
    EnvFilter::try_from_env(var).unwrap_or_else(|_| EnvFilter::new(default))
}

pub fn init_stderr(ansi: bool, var: &str, default: &str) {
    if json_wanted() {
        let _ = tracing_subscriber::fmt()
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .with_writer(std::io::stderr)
            .with_env_filter(filter(var, default))
            .try_init();
        return;
    }
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .with_env_filter(filter(var, default))
        .with_target(false)
        .try_init();
}

/// JSON lines instead of human text: `pinch host --log-json` or
/// `PINCH_LOG_FORMAT=json` (one object per event, with the session span's
/// fields, for log shippers).
pub fn json_wanted() -> bool {
    std::env::var("PINCH_LOG_FORMAT").is_ok_and(|v| v.eq_ignore_ascii_case("json"))
}

pub fn init_file(path: &Path) -> Result<()> {
    let f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("opening the log file {}", path.display()))?;
    let _ = tracing_subscriber::fmt()
        .with_writer(std::sync::Mutex::new(f))
        .with_ansi(false)
        .with_env_filter(filter("PINCH_LOG", "info"))
        .with_target(false)
        .try_init();
    Ok(())
}
