//! `pinch channels <channel> <step>`: set-up steps a channel needs once,
//! run in the owner's terminal, outside the host. Two shapes, each owned by
//! its channel:
//! - a kind's own steps (`ChannelKind::setup`): `pinch channels whatsapp
//!   link` pairs WhatsApp Web by the QR code it shows, `… whatsapp install`
//!   installs its bridge;
//! - `pinch channels <section> link` for a configured section that links as
//!   a secondary device (`ChannelSection::link`): `pinch channels signal
//!   link`.

use std::path::PathBuf;

use anyhow::{anyhow, Result};
use clap::Args;
use pinch_channels::kind::Shown;

use crate::config::{self, Env};

#[derive(Args)]
pub struct ChannelsArgs {
    /// The channel and the step: `signal link`, `whatsapp link`, `whatsapp install [NPM]`.
    #[arg(required = true)]
    words: Vec<String>,
    /// `signal link`: the device name your phone lists (default: the section's device_name, else "pinch").
    #[arg(long)]
    name: Option<String>,
}

pub fn run(
    data_dir: Option<PathBuf>,
    config_path: Option<PathBuf>,
    args: ChannelsArgs,
    env: &Env,
) -> Result<i32> {
    let file = config::load_file(config_path.as_deref(), env);
    let data_dir = data_dir
        .or_else(|| file.as_ref().ok().and_then(|f| f.data_dir.clone()))
        .unwrap_or_else(|| config::default_data_dir(env));
    // A kind's own steps read their section from the file as written (the
    // step may be what makes the rest of it usable).
    let path = config_path.unwrap_or_else(|| config::default_config_path(env));
    let table = std::fs::read_to_string(&path)
        .ok()
        .and_then(|t| t.parse::<toml::Table>().ok());
    let mut show = |s: Shown<'_>| match s {
        Shown::Text(t) => println!("{t}"),
        Shown::Qr(code) => println!("\n{}", crate::qr::terminal(code)),
    };
    for kind in pinch_channels::KINDS {
        let Some(step) = kind.setup else { continue };
        let section = table.as_ref().and_then(|t| t.get(kind.section)).cloned();
        if let Some(r) = step(&data_dir, section, &args.words, &mut show) {
            let done = r.map_err(|e| anyhow!("{e}"))?;
            println!("{done}");
            return Ok(0);
        }
    }
    let [ch, verb] = args.words.as_slice() else {
        return Err(unknown(&args.words));
    };
    if verb != "link" {
        return Err(unknown(&args.words));
    }
    let file = file.map_err(|e| crate::ConfigError(format!("{e:#}")))?;
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
        .link(&host, args.name.as_deref(), show)
        .ok_or_else(|| anyhow!("[{ch}] has no device to link"))?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let done = rt.block_on(job).map_err(|e| anyhow!("{ch}: {e}"))?;
    println!("Linked: {done}. Start (or restart) `pinch host` to receive its messages.");
    Ok(0)
}

fn unknown(words: &[String]) -> anyhow::Error {
    anyhow!(
        "no channel has the step `{}`; the steps are `pinch channels signal link`, `pinch channels whatsapp link` and `pinch channels whatsapp install`",
        words.join(" ")
    )
}
