//! `pinch channels <channel> <step>`: a channel's set-up steps run in the
//! owner's terminal (`pinch channels whatsapp link` pairs WhatsApp Web
//! and shows its QR code; `… install` installs its bridge). Each step
//! belongs to its channel's kind (`ChannelKind::setup`); this only finds
//! it and shows what it shows.

use std::path::Path;

use clap::Args;
use pinch_channels::kind::Shown;

#[derive(Args)]
pub struct ChannelsArgs {
    /// The channel and the step: `whatsapp link`, `whatsapp install [NPM]`.
    #[arg(required = true)]
    words: Vec<String>,
}

/// Runs the step; `file` is the configuration file's table (each kind
/// gets its own section of it).
pub fn run(
    args: ChannelsArgs,
    data_dir: &Path,
    file: Option<toml::Table>,
) -> Result<String, String> {
    let mut show = |s: Shown<'_>| match s {
        Shown::Text(t) => println!("{t}"),
        Shown::Qr(code) => println!("\n{}", crate::qr::terminal(code)),
    };
    for kind in pinch_channels::KINDS {
        let Some(step) = kind.setup else { continue };
        let section = file.as_ref().and_then(|t| t.get(kind.section)).cloned();
        if let Some(r) = step(data_dir, section, &args.words, &mut show) {
            return r;
        }
    }
    Err(format!(
        "no channel has the step `{}`; the steps are `pinch channels whatsapp link` and `pinch channels whatsapp install`",
        args.words.join(" ")
    ))
}
