//! `pinch channels <channel> <verb>`: set-up steps a channel needs once,
//! outside the host. Today `link`: pinch joins the user's account as a
//! secondary device, the way a desktop app is linked, by a QR code the
//! phone scans (`pinch channels signal link`). Each channel says through
//! its section whether it has the step (`ChannelSection::link`).

use std::path::PathBuf;

use anyhow::{anyhow, Result};
use clap::{Args, Subcommand};

use crate::config::{self, Env};

#[derive(Args)]
pub struct ChannelsArgs {
    /// The channel's section in pinch.toml (`signal`).
    channel: String,
    #[command(subcommand)]
    verb: Verb,
}

#[derive(Subcommand)]
enum Verb {
    /// Link pinch to your account as a secondary device: scan the QR code
    /// it shows with the app on your phone (Signal: Settings → Linked devices → +).
    Link {
        /// The device name your phone lists (default: the section's device_name, else "pinch").
        #[arg(long)]
        name: Option<String>,
    },
}

pub fn run(
    data_dir: Option<PathBuf>,
    config_path: Option<PathBuf>,
    args: ChannelsArgs,
    env: &Env,
) -> Result<i32> {
    let file = config::load_file(config_path.as_deref(), env)
        .map_err(|e| crate::ConfigError(format!("{e:#}")))?;
    let data_dir = data_dir
        .or_else(|| file.data_dir.clone())
        .unwrap_or_else(|| config::default_data_dir(env));
    let Verb::Link { name } = args.verb;
    let ch = &args.channel;
    let section = file
        .channels
        .iter()
        .find(|c| c.kind.section == ch.as_str())
        .ok_or_else(|| {
            crate::ConfigError(format!(
                "there is no [{ch}] section in the configuration: add one first (see the README)"
            ))
        })?;
    let lookup = |var: &str| env.get(var).map(str::to_owned);
    let host = pinch_channels::kind::Host {
        data_dir: &data_dir,
        env: &lookup,
        store: None,
    };
    let show: pinch_channels::kind::ShowLink = Box::new(|uri: &str| {
        println!("Scan this with the app on your phone (Signal: Settings → Linked devices → +):\n");
        println!("{}", crate::qr::terminal(uri));
        println!("\nor open: {uri}\nWaiting for the phone…");
    });
    let job = section
        .section
        .link(&host, name.as_deref(), show)
        .ok_or_else(|| anyhow!("[{ch}] has no device to link"))?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let done = rt.block_on(job).map_err(|e| anyhow!("{ch}: {e}"))?;
    println!("Linked: {done}. Start (or restart) `pinch host` to receive its messages.");
    Ok(0)
}
