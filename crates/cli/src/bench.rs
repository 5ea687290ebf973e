//! `pinch bench`.
use std::path::PathBuf;

use anyhow::Result;

#[derive(clap::Args)]
pub struct BenchArgs {}

pub fn run(_data_dir: Option<PathBuf>, _args: BenchArgs) -> Result<i32> {
    anyhow::bail!("not yet")
}
