//! `[signal]` in `pinch.toml`: the account, how to reach signal-cli (a
//! running daemon's `socket` or `tcp`, or `signal_cli` for pinch to start
//! one), and how the adapter is built from it; `pinch doctor`'s check and
//! `pinch channels signal link` use the same daemon.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use crate::kind::{
    self, ChannelKind, ChannelSection, Floor, Host, Probe, SecretEnv, SectionError, ShowLink,
    Starter,
};
use crate::Channel;

use super::daemon::Launch;
use super::rpc::{CallError, Endpoint, Rpc};
use super::{SignalChannel, SignalConfig, CHANNEL_TYPE};

/// The `[signal]` kind, registered in [`crate::KINDS`].
pub const KIND: ChannelKind = ChannelKind::new::<SignalSection>(CHANNEL_TYPE);

/// `[signal]`: a Signal account served by signal-cli.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignalSection {
    /// The account's number, E.164 (`+4915112345678`).
    pub account: String,
    /// A running daemon's Unix socket (`signal-cli daemon --socket PATH`).
    pub socket: Option<PathBuf>,
    /// A running daemon's TCP address (`signal-cli daemon --tcp HOST:PORT`).
    pub tcp: Option<String>,
    /// signal-cli's program: pinch starts `signal-cli daemon` itself and
    /// keeps it running.
    pub signal_cli: Option<PathBuf>,
    /// signal-cli's `--config` folder (default its own,
    /// `~/.local/share/signal-cli`); files people send are read from its
    /// `attachments/`.
    pub config_dir: Option<PathBuf>,
    /// The name of pinch's linked device (default `pinch`).
    pub device_name: Option<String>,
    /// Send read receipts once a message is stored (default true).
    pub read_receipts: Option<bool>,
    /// The stall limit in seconds (default 120).
    pub stall_s: Option<f64>,
}

fn e164(s: &str) -> bool {
    s.strip_prefix('+')
        .is_some_and(|d| (7..=15).contains(&d.len()) && d.bytes().all(|b| b.is_ascii_digit()))
}

impl ChannelSection for SignalSection {
    fn secret_envs(&self) -> Vec<SecretEnv> {
        // The account's keys are signal-cli's, in its own folder.
        Vec::new()
    }

    fn floors(&self) -> Vec<Floor> {
        vec![kind::stall_floor(self.stall_s)]
    }

    fn build(&self, host: &Host) -> Result<Starter, SectionError> {
        let cfg = self.config(host)?;
        Ok(Arc::new(move |tx| {
            let ch = SignalChannel::start(cfg.clone(), tx)?;
            Ok((ch as Arc<dyn Channel>, None))
        }))
    }

    fn probe(&self, host: &Host) -> Option<Probe> {
        let cfg = self.config(host).ok()?;
        Some(Box::pin(async move { probe(&cfg).await }))
    }

    fn link(&self, host: &Host, device_name: Option<&str>, show: ShowLink) -> Option<Probe> {
        let cfg = self.config(host);
        let name = device_name
            .map(str::to_owned)
            .unwrap_or_else(|| self.device_name());
        Some(Box::pin(async move {
            let cfg = cfg.map_err(|e| e.to_string())?;
            let number = link(&cfg, &name, show).await?;
            Ok(format!("pinch is a device of {number} (named {name:?})"))
        }))
    }
}

impl SignalSection {
    /// The name of pinch's linked device.
    pub fn device_name(&self) -> String {
        self.device_name
            .clone()
            .filter(|n| !n.trim().is_empty())
            .unwrap_or_else(|| "pinch".into())
    }

    /// The adapter's configuration, the section checked.
    pub fn config(&self, host: &Host) -> Result<SignalConfig, SectionError> {
        let bad = |p: String| SectionError::new(CHANNEL_TYPE, p);
        let account = self.account.trim().to_owned();
        if !e164(&account) {
            return Err(bad(format!(
                "account {:?} is not a phone number in international form (e.g. \"+4915112345678\")",
                self.account
            )));
        }
        let state_dir = host.data_dir.join("channels").join(CHANNEL_TYPE);
        let given = [
            self.socket.is_some(),
            self.tcp.is_some(),
            self.signal_cli.is_some(),
        ];
        if given.iter().filter(|g| **g).count() != 1 {
            return Err(bad("set exactly one of socket = \"PATH\" (a running `signal-cli daemon --socket`), tcp = \"HOST:PORT\" (`--tcp`), or signal_cli = \"PATH\" (pinch starts signal-cli itself)".into()));
        }
        let signal_data = self.config_dir.clone().or_else(|| {
            (host.env)("XDG_DATA_HOME")
                .filter(|x| !x.is_empty())
                .map(|x| PathBuf::from(x).join("signal-cli"))
                .or_else(|| {
                    (host.env)("HOME").map(|h| PathBuf::from(h).join(".local/share/signal-cli"))
                })
        });
        let mut launch = None;
        let mut local = true;
        let endpoint = if let Some(p) = &self.socket {
            Endpoint::Unix(p.clone())
        } else if let Some(a) = &self.tcp {
            let (h, port) = a.rsplit_once(':').ok_or_else(|| {
                bad(format!(
                    "tcp = {a:?}: give host:port, e.g. \"127.0.0.1:7583\""
                ))
            })?;
            if port.parse::<u16>().is_err() || h.is_empty() {
                return Err(bad(format!(
                    "tcp = {a:?}: give host:port, e.g. \"127.0.0.1:7583\""
                )));
            }
            let h = h.trim_matches(['[', ']']);
            local = h.eq_ignore_ascii_case("localhost")
                || h.parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback());
            Endpoint::Tcp(a.clone())
        } else {
            let exe = self.signal_cli.clone().unwrap_or_default();
            let socket = state_dir.join("signal-cli.sock");
            launch = Some(Launch {
                exe,
                config_dir: self.config_dir.clone(),
                socket: socket.clone(),
            });
            Endpoint::Unix(socket)
        };
        Ok(SignalConfig {
            account,
            endpoint,
            launch,
            // A daemon on another machine keeps its files there.
            attachments_dir: signal_data.filter(|_| local).map(|d| d.join("attachments")),
            state_dir,
            stall: kind::stall(CHANNEL_TYPE, self.stall_s)?,
            read_receipts: self.read_receipts.unwrap_or(true),
        })
    }
}

/// A connection to the configured daemon for a one-off job (doctor,
/// linking): the running one, or — when pinch starts signal-cli and none
/// answers — one started for the job and stopped after it.
pub struct OneOff {
    pub rpc: Arc<Rpc>,
    /// What answered (for messages).
    pub what: String,
    _child: Option<tokio::process::Child>,
}

impl OneOff {
    pub async fn open(cfg: &SignalConfig) -> Result<OneOff, String> {
        let limit = Duration::from_secs(10);
        let quiet: super::rpc::OnNotify = Box::new(|_, _| {});
        match Rpc::connect(&cfg.endpoint, limit, Duration::from_secs(3600), quiet).await {
            Ok(rpc) => {
                return Ok(OneOff {
                    rpc,
                    what: format!("the signal-cli daemon at {}", cfg.endpoint),
                    _child: None,
                });
            }
            Err(e) if cfg.launch.is_none() => {
                return Err(format!("{e}; is `signal-cli daemon` running there?"));
            }
            Err(_) => {}
        }
        let launch = cfg.launch.as_ref().expect("checked above");
        super::spool::private_dir(&cfg.state_dir)
            .map_err(|e| format!("{}: {e}", cfg.state_dir.display()))?;
        let mut child = launch.spawn()?;
        launch
            .wait_ready(&mut child, Duration::from_secs(25))
            .await?;
        let quiet: super::rpc::OnNotify = Box::new(|_, _| {});
        let rpc = Rpc::connect(&cfg.endpoint, limit, Duration::from_secs(3600), quiet).await?;
        Ok(OneOff {
            rpc,
            what: format!(
                "signal-cli ({}) started for this check",
                launch.exe.display()
            ),
            _child: Some(child),
        })
    }
}

/// `pinch doctor`'s check: the daemon answers, and knows the account.
pub async fn probe(cfg: &SignalConfig) -> Result<String, String> {
    let o = OneOff::open(cfg).await?;
    let t = Duration::from_secs(10);
    let version = match o.rpc.call("version", Value::Null, t).await {
        Ok(v) => v
            .get("version")
            .and_then(Value::as_str)
            .unwrap_or("?")
            .to_owned(),
        Err(e) => return Err(format!("{} does not answer: {e}", o.what)),
    };
    let not_linked = || {
        format!(
            "signal-cli {version} answers, but the account {} is not registered or linked there: run `pinch channels signal link` (then scan the code with Signal on your phone: Settings → Linked devices)",
            cfg.account
        )
    };
    let known = match o.rpc.call("listAccounts", Value::Null, t).await {
        Ok(Value::Array(a)) => a.iter().any(|x| {
            x.as_str()
                .or_else(|| x.get("number").and_then(Value::as_str))
                == Some(cfg.account.as_str())
        }),
        // A daemon started for one account (`-a`) has no listAccounts:
        // ask something of the account itself.
        _ => match o
            .rpc
            .call("listGroups", json!({"account": cfg.account}), t)
            .await
        {
            Ok(_) => true,
            Err(CallError::Rpc { code: -32602, .. }) => false,
            Err(e) => return Err(format!("signal-cli {version}: {e}")),
        },
    };
    if !known {
        return Err(not_linked());
    }
    Ok(format!(
        "{} (signal-cli {version}) answers; the account {} is registered",
        o.what, cfg.account
    ))
}

/// Links pinch as a secondary device of the account: `startLink`, `show`
/// gets the `sgnl://linkdevice?…` URI (to print as a QR code), then
/// `finishLink` waits for the phone. Returns the number linked.
pub async fn link(
    cfg: &SignalConfig,
    device_name: &str,
    show: impl FnOnce(&str),
) -> Result<String, String> {
    let o = OneOff::open(cfg).await?;
    let r = o
        .rpc
        .call("startLink", Value::Null, Duration::from_secs(30))
        .await
        .map_err(|e| match e {
            CallError::Rpc { code: -32601, .. } => format!(
                "{} runs for one account (`-a`): linking needs a daemon started without -a",
                o.what
            ),
            e => format!("startLink: {e}"),
        })?;
    let uri = r
        .get("deviceLinkUri")
        .and_then(Value::as_str)
        .filter(|u| u.starts_with("sgnl://linkdevice?") && u.len() <= 2000)
        .ok_or_else(|| {
            format!(
                "startLink answered no device link: {}",
                super::clip(&r.to_string(), 200)
            )
        })?
        .to_owned();
    show(&uri);
    let done = o
        .rpc
        .call(
            "finishLink",
            json!({"deviceLinkUri": uri, "deviceName": device_name}),
            Duration::from_secs(600),
        )
        .await
        .map_err(|e| format!("finishLink: {e}"))?;
    let number = done
        .get("number")
        .and_then(Value::as_str)
        .unwrap_or(&cfg.account)
        .to_owned();
    if number != cfg.account {
        return Err(format!(
            "linked the account {number}, but [signal] account is {}; set account = \"{number}\"",
            cfg.account
        ));
    }
    Ok(number)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(body: &str) -> Result<SignalConfig, SectionError> {
        let v: toml::Table = body.parse().unwrap();
        KIND.parse(toml::Value::Table(v.clone()))
            .map_err(|e| SectionError::new("signal", e.to_string()))?;
        let s: SignalSection = toml::Value::Table(v).try_into().unwrap();
        let env = |v: &str| (v == "HOME").then(|| "/home/ann".to_owned());
        s.config(&Host {
            data_dir: std::path::Path::new("/d"),
            env: &env,
            store: None,
        })
    }

    #[test]
    fn one_way_to_reach_signal_cli_and_a_real_number() {
        let c = section("account = \"+4915112345678\"\nsignal_cli = \"/usr/bin/signal-cli\"\n")
            .unwrap();
        assert_eq!(
            c.endpoint,
            Endpoint::Unix("/d/channels/signal/signal-cli.sock".into())
        );
        assert_eq!(
            c.attachments_dir,
            Some("/home/ann/.local/share/signal-cli/attachments".into())
        );
        assert!(c.launch.is_some() && c.read_receipts);
        let c = section("account = \"+4915112345678\"\ntcp = \"10.0.0.2:7583\"\n").unwrap();
        assert_eq!(
            c.attachments_dir, None,
            "another machine's files are not here"
        );
        let c = section(
            "account = \"+4915112345678\"\nsocket = \"/run/s\"\nconfig_dir = \"/srv/sc\"\n",
        )
        .unwrap();
        assert_eq!(c.attachments_dir, Some("/srv/sc/attachments".into()));
        for (body, want) in [
            (
                "account = \"+4915112345678\"\n",
                "set exactly one of socket",
            ),
            (
                "account = \"+4915112345678\"\nsocket = \"/s\"\ntcp = \"h:1\"\n",
                "set exactly one",
            ),
            (
                "account = \"015112345678\"\nsocket = \"/s\"\n",
                "international form",
            ),
            (
                "account = \"+4915112345678\"\ntcp = \"nohost\"\n",
                "host:port",
            ),
            (
                "account = \"+4915112345678\"\nsocket = \"/s\"\nstall_s = 0\n",
                "stall_s",
            ),
            (
                "account = \"+4915112345678\"\nsockett = \"/s\"\n",
                "unknown field `sockett`",
            ),
        ] {
            let e = section(body).unwrap_err().to_string();
            assert!(e.contains(want), "{body} → {e}");
        }
    }
}
