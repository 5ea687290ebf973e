//! Logging: `tracing` to stderr (host, runner) or to `logs/host.log` (the
//! embedded host of `pinch chat`, so the terminal stays a chat).

use std::path::Path;

use anyhow::{Context, Result};
use tracing_subscriber::EnvFilter;

fn filter(var: &str, default: &str) -> EnvFilter {
    EnvFilter::try_from_env(var).unwrap_or_else(|_| EnvFilter::new(default))
}

pub fn init_stderr(ansi: bool, var: &str, default: &str) {
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .with_env_filter(filter(var, default))
        .with_target(false)
        .try_init();
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
