//! Pairing: `pinch channels whatsapp link` runs the bridge in link mode
//! and shows its QR codes; the kind's set-up steps.

use std::time::Duration;

use tokio::io::{AsyncWriteExt, BufReader};

use super::setup::{self, Lock};
use super::{bridge, wire, Paths, WaWebConfig};
use crate::kind::Shown;

/// How long a pairing may take in all (QR codes change every ~20 s).
pub const LINK_TIMEOUT: Duration = Duration::from_secs(300);

/// Pairs a new session: runs the bridge in link mode on a fresh folder,
/// calls `show` with each QR code, and once WhatsApp accepted the scan
/// puts the new session in place of the old one (and clears a logout).
/// Returns the account (`me`).
pub async fn link(cfg: &WaWebConfig, mut show: impl FnMut(&str)) -> Result<String, String> {
    let p = &cfg.paths;
    p.create()?;
    let _lock = Lock::take(&p.lock)?.ok_or_else(|| {
        "the running pinch host is using the WhatsApp session; stop it (`pinch service stop`, or Ctrl+C where `pinch host` runs), link, and start it again".to_owned()
    })?;
    let fresh = p.root.join("session.new");
    let _ = std::fs::remove_dir_all(&fresh);
    {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&fresh)
            .map_err(|e| format!("creating {}: {e}", fresh.display()))?;
    }
    let (mut child, start) = bridge::spawn(cfg, &fresh, true)?;
    bridge::log_stderr(&mut child);
    let mut stdin = child.stdin.take().expect("piped");
    stdin
        .write_all(format!("{start}\n").as_bytes())
        .await
        .map_err(|e| format!("the bridge did not take its start line: {e}"))?;
    let mut out = BufReader::new(child.stdout.take().expect("piped"));
    let me = tokio::time::timeout(LINK_TIMEOUT, async {
        loop {
            let line = bridge::read_line(&mut out).await?.ok_or_else(|| {
                "the bridge exited before the pairing finished (see the lines above)".to_owned()
            })?;
            match wire::parse(&line) {
                Ok(wire::Event::Qr { code }) => show(&code),
                Ok(wire::Event::Connected { me }) => return Ok::<_, String>(me),
                Ok(wire::Event::LoggedOut { reason }) | Ok(wire::Event::Closed { reason }) => {
                    return Err(format!("WhatsApp ended the pairing: {reason}"))
                }
                Ok(wire::Event::Error { message }) => eprintln!("bridge: {message}"),
                _ => {}
            }
        }
    })
    .await
    .map_err(|_| "no scan within 5 minutes; run the command again".to_owned())??;
    drop(stdin);
    let _ = tokio::time::timeout(Duration::from_secs(10), child.wait()).await;
    if !fresh.join("creds.json").is_file() {
        return Err("the bridge said it is linked but left no session keys".into());
    }
    let _ = std::fs::remove_dir_all(&p.session);
    std::fs::rename(&fresh, &p.session).map_err(|e| format!("keeping the new session: {e}"))?;
    let _ = std::fs::remove_file(&p.logged_out);
    Ok(me)
}

/// `pinch channels whatsapp link|install [npm]` (the kind's
/// [`crate::kind::SetupStep`]).
pub fn step(
    data_dir: &std::path::Path,
    section: Option<toml::Value>,
    words: &[String],
    show: &mut dyn FnMut(Shown<'_>),
) -> Option<Result<String, String>> {
    let words: Vec<&str> = words.iter().map(String::as_str).collect();
    let (step, rest) = match words.as_slice() {
        ["whatsapp", step, rest @ ..] => (*step, rest),
        _ => return None,
    };
    let configured = section.is_some();
    let run = || -> Result<String, String> {
        let section = super::from_table(section.unwrap_or(toml::Value::Table(Default::default())))?;
        let cfg = section.config(data_dir).map_err(|e| e.to_string())?;
        match (step, rest) {
            ("install", npm) => {
                setup::install(&Paths::new(data_dir), npm.first().copied().unwrap_or("npm"))
            }
            ("link", []) => {
                if cfg.default_bridge {
                    setup::installed(&cfg.paths)?;
                }
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| e.to_string())?;
                show(Shown::Text("Open WhatsApp on your phone: Settings → Linked devices → Link a device, and scan:"));
                let me = rt.block_on(link(&cfg, |code| {
                    show(Shown::Qr(code));
                    show(Shown::Text(
                        "(the code changes every 20 seconds or so; waiting for the scan)",
                    ));
                }))?;
                let mut done = format!(
                    "linked as {me}; the session keys are in {} (keep them private: they are your account)",
                    cfg.paths.session.display()
                );
                if !configured {
                    done.push_str(
                        "\nadd a [whatsapp_web] section to pinch.toml to turn the channel on",
                    );
                }
                Ok(done)
            }
            _ => Err(
                "usage: pinch channels whatsapp link | pinch channels whatsapp install [NPM]"
                    .into(),
            ),
        }
    };
    Some(run())
}
