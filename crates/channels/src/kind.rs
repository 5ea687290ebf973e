//! The registry's vocabulary (decision 0036): what a channel kind tells the
//! host so that adding a channel touches only its own file and one entry in
//! [`crate::KINDS`].
//!
//! A kind is a `pinch.toml` section name and a parser for that section; the
//! parsed section ([`ChannelSection`]) knows its defaults, the variables its
//! secrets are read from, its floors (checked with every other setting
//! before anything starts) and how the adapter is built. The host (the
//! `pinch` crate's config loader) takes the registered sections out of the
//! file before the rest is read strictly, and parses each one strictly here.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use crate::{Channel, ChannelEvent};

/// Starts an adapter inside the host's runtime: the channel, and the routes
/// it serves on the shared HTTP listener (if any).
pub type Starter = Arc<
    dyn Fn(
            mpsc::Sender<ChannelEvent>,
        ) -> Result<(Arc<dyn Channel>, Option<crate::http::Router>), String>
        + Send
        + Sync,
>;

/// Reads a section (its name, its value) into the channel's type.
type Parse = fn(&'static str, toml::Value) -> Result<Box<dyn ChannelSection>, toml::de::Error>;

/// A registered channel kind: one `[section]` of `pinch.toml`.
pub struct ChannelKind {
    /// The section name (`telegram` for `[telegram]`); the channel is on
    /// when the section is present.
    pub section: &'static str,
    /// Routes its adapter may serve on the shared HTTP listener, called by
    /// the platform and authenticated by the platform's own secret: the
    /// listener's `Host`/`Origin` guard exempts them (prefixes).
    pub routes: &'static [&'static str],
    /// Its set-up steps run from the terminal (`pinch channels …`), if any.
    pub setup: Option<SetupStep>,
    parse: Parse,
}

/// What a set-up step shows while it runs.
pub enum Shown<'a> {
    /// A line of text.
    Text(&'a str),
    /// Text to show as a QR code (a pairing code).
    Qr(&'a str),
}

/// A channel's set-up step (`pinch channels <words…>`, e.g. `whatsapp
/// link`): given the data dir, the kind's section as the file has it (if
/// any) and the words, `None` when the words are not one of its steps,
/// else what it did or why it failed. Runs in the owner's terminal, not in
/// the host.
pub type SetupStep = fn(
    &Path,
    Option<toml::Value>,
    &[String],
    &mut dyn FnMut(Shown<'_>),
) -> Option<Result<String, String>>;

impl ChannelKind {
    /// The kind whose section is read as `S` (strictly: `S` should be
    /// `#[serde(deny_unknown_fields)]`).
    pub const fn new<S>(section: &'static str) -> ChannelKind
    where
        S: ChannelSection + serde::de::DeserializeOwned,
    {
        ChannelKind {
            section,
            routes: &[],
            setup: None,
            parse: parse_as::<S>,
        }
    }

    /// The same kind, serving `routes` (see [`ChannelKind::routes`]).
    pub const fn serving(self, routes: &'static [&'static str]) -> ChannelKind {
        ChannelKind { routes, ..self }
    }

    /// The same kind, with set-up steps (see [`SetupStep`]).
    pub const fn with_setup(self, setup: SetupStep) -> ChannelKind {
        ChannelKind {
            setup: Some(setup),
            ..self
        }
    }

    /// Reads this kind's section. Errors name the key as the rest of the
    /// file's do (``unknown field `x` … in `telegram` ``).
    pub fn parse(&'static self, value: toml::Value) -> Result<Configured, toml::de::Error> {
        Ok(Configured {
            kind: self,
            section: (self.parse)(self.section, value)?,
        })
    }
}

impl std::fmt::Debug for ChannelKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ChannelKind({})", self.section)
    }
}

fn parse_as<S>(
    name: &'static str,
    value: toml::Value,
) -> Result<Box<dyn ChannelSection>, toml::de::Error>
where
    S: ChannelSection + serde::de::DeserializeOwned,
{
    // Read through a one-entry table so errors carry the section's name.
    let mut t = toml::Table::new();
    t.insert(name.to_owned(), value);
    let mut m: BTreeMap<String, S> = toml::Value::Table(t).try_into()?;
    let s = m.remove(name).expect("the one entry just inserted");
    Ok(Box::new(s))
}

/// A configured channel: its kind and its parsed section.
#[derive(Debug)]
pub struct Configured {
    pub kind: &'static ChannelKind,
    pub section: Box<dyn ChannelSection>,
}

/// A channel's parsed `pinch.toml` section.
pub trait ChannelSection: std::fmt::Debug + Send + Sync + 'static {
    /// The variables its secrets are read from (for `pinch doctor`, which
    /// checks only whether each is set).
    fn secret_envs(&self) -> Vec<SecretEnv>;
    /// Its numeric settings with their floors, checked with every other
    /// setting before anything starts.
    fn floors(&self) -> Vec<Floor> {
        Vec::new()
    }
    /// Whether it needs the shared HTTP listener (a webhook route).
    fn needs_listener(&self) -> bool {
        false
    }
    /// Reads its secrets and checks the section; the adapter starts later,
    /// inside the host's runtime. Secrets are held only by the starter.
    fn build(&self, host: &Host) -> Result<Starter, SectionError>;
    /// A live check for `pinch doctor` (log in, say what answered), for
    /// channels whose usual failure is a wrong server or password; `None`
    /// when there is none or the section does not build (doctor reports
    /// that already).
    fn probe(&self, _host: &Host) -> Option<Probe> {
        None
    }
    /// Links pinch as a device of the user's account (`pinch channels
    /// <section> link`), for channels that join an account that way:
    /// `show` gets the link to present (the CLI prints it as a QR code);
    /// the future ends when the phone has accepted, with what was linked.
    /// `None`: this channel has no such step.
    fn link(&self, _host: &Host, _device_name: Option<&str>, _show: ShowLink) -> Option<Probe> {
        None
    }
}

/// Presents a device link to the user (see [`ChannelSection::link`]).
pub type ShowLink = Box<dyn FnOnce(&str) + Send>;

/// A channel's live check: what worked, or what failed and the fix.
pub type Probe = crate::BoxFuture<'static, Result<String, String>>;

/// What the host gives a channel to build it.
pub struct Host<'a> {
    /// The data dir (a channel keeps its state under `channels/`).
    pub data_dir: &'a Path,
    /// Looks up an environment variable (the host passes its `Env`, so
    /// nothing here reads the process environment).
    pub env: &'a dyn Fn(&str) -> Option<String>,
    /// pinch's sealed secret store (`pinch secrets`), for a section that
    /// names a secret instead of a variable; `None` where there is none.
    pub store: Option<Arc<dyn SecretSource>>,
}

/// A credential a channel logs in with, read from the store at each login
/// (so `pinch secrets rotate` applies at the next one).
#[derive(Clone)]
pub enum Credential {
    /// A password or app password (a plain secret).
    Password(String),
    /// An OAuth 2 access token, minted from the stored refresh token and
    /// refreshed before it expires (SASL XOAUTH2 for mail).
    Bearer(String),
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credential::Password(_) => f.write_str("Password(***)"),
            Credential::Bearer(_) => f.write_str("Bearer(***)"),
        }
    }
}

/// The store as channels see it: a credential by secret name. The error
/// names the secret and the fix (`pinch secrets add NAME --for-channels`).
pub trait SecretSource: Send + Sync + 'static {
    /// The secret `name`'s credential, for `channel` (which the audit
    /// records, with `server`).
    fn credential(
        &self,
        name: &str,
        channel: &'static str,
        server: &str,
    ) -> crate::BoxFuture<'static, Result<Credential, String>>;
}

impl Host<'_> {
    /// The secret in the variable `var` (named by `key`, or its default):
    /// trimmed, and refused when unset or blank.
    pub fn secret(
        &self,
        section: &'static str,
        key: &str,
        var: &str,
    ) -> Result<String, SectionError> {
        (self.env)(var)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
            .ok_or_else(|| SectionError::new(section, format!(
                "the environment variable {var} (named by {key}) is not set; export it, or name another with {key} = \"VAR\""
            )))
    }
}

/// A variable a secret is read from: `[section] key` names it (`var`);
/// `hint` says where the value comes from, for `pinch doctor`'s fix line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecretEnv {
    pub section: &'static str,
    pub key: &'static str,
    pub var: String,
    pub hint: &'static str,
}

/// A number of seconds with its floor: `key` inside the section
/// (`stall_s`), the value set (if any), the least allowed, and why.
#[derive(Clone, Debug, PartialEq)]
pub struct Floor {
    pub key: &'static str,
    pub value: Option<f64>,
    pub min: f64,
    pub why: &'static str,
}

/// A section that cannot be used, with what to do about it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("[{section}]: {problem}")]
pub struct SectionError {
    pub section: &'static str,
    pub problem: String,
}

impl SectionError {
    pub fn new(section: &'static str, problem: impl Into<String>) -> SectionError {
        SectionError {
            section,
            problem: problem.into(),
        }
    }
}

/// SPEC §9.1: a long-poll or socket silent this long is rebuilt (a
/// section's `stall_s` default).
pub const DEFAULT_STALL: Duration = Duration::from_secs(120);

/// Why the stall limit has a floor.
pub const STALL_WHY: &str = "the connection is restarted after this long without a sign of life";

/// The stall watchdog's floor (`stall_s`), for [`ChannelSection::floors`].
pub fn stall_floor(value: Option<f64>) -> Floor {
    Floor {
        key: "stall_s",
        value,
        min: 0.1,
        why: STALL_WHY,
    }
}

/// The stall limit: [`DEFAULT_STALL`] unless set (the
/// floor is checked before building; this refuses what slipped past).
pub fn stall(section: &'static str, v: Option<f64>) -> Result<Duration, SectionError> {
    match v {
        None => Ok(DEFAULT_STALL),
        Some(v) if v.is_finite() && v >= 0.1 => Ok(Duration::from_secs_f64(v)),
        Some(v) => Err(SectionError::new(
            section,
            format!("{section}.stall_s = {v}: it must be at least 0.1 (seconds)"),
        )),
    }
}

/// A platform's API base: the default unless set, `http(s)://` only, with
/// no trailing slash.
pub fn base_url(
    section: &'static str,
    url: Option<&str>,
    default: &str,
) -> Result<String, SectionError> {
    let u = url.unwrap_or(default);
    if !u.starts_with("http://") && !u.starts_with("https://") {
        return Err(SectionError::new(
            section,
            format!("base_url {u:?} must start with http:// or https://"),
        ));
    }
    Ok(u.trim_end_matches('/').to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Demo {
        #[allow(dead_code)]
        stall_s: Option<f64>,
    }

    impl ChannelSection for Demo {
        fn secret_envs(&self) -> Vec<SecretEnv> {
            Vec::new()
        }
        fn build(&self, _: &Host) -> Result<Starter, SectionError> {
            Err(SectionError::new("demo", "not buildable"))
        }
    }

    static DEMO: ChannelKind = ChannelKind::new::<Demo>("demo");

    #[test]
    fn a_section_is_read_strictly_and_errors_name_the_key() {
        let v: toml::Table = "stall_s = 5\n".parse().unwrap();
        assert!(DEMO.parse(toml::Value::Table(v)).is_ok());
        let v: toml::Table = "stall = 5\n".parse().unwrap();
        let e = DEMO.parse(toml::Value::Table(v)).unwrap_err().to_string();
        assert!(
            e.contains("unknown field `stall`") && e.contains("in `demo`"),
            "{e}"
        );
        let v: toml::Table = "stall_s = \"x\"\n".parse().unwrap();
        let e = DEMO.parse(toml::Value::Table(v)).unwrap_err().to_string();
        assert!(e.contains("demo.stall_s"), "{e}");
    }

    #[test]
    fn stall_and_base_url_refuse_what_cannot_work() {
        assert_eq!(stall("x", None).unwrap(), DEFAULT_STALL);
        assert_eq!(stall("x", Some(5.0)).unwrap(), Duration::from_secs(5));
        assert!(stall("x", Some(0.0))
            .unwrap_err()
            .to_string()
            .contains("x.stall_s"));
        assert_eq!(
            base_url("x", Some("http://a/"), "https://d").unwrap(),
            "http://a"
        );
        assert_eq!(base_url("x", None, "https://d").unwrap(), "https://d");
        let e = base_url("x", Some("ftp://a"), "https://d").unwrap_err();
        assert_eq!(
            e.to_string(),
            "[x]: base_url \"ftp://a\" must start with http:// or https://"
        );
    }

    #[test]
    fn a_secret_must_be_set_and_not_blank() {
        let env = |v: &str| match v {
            "SET" => Some(" tok ".to_owned()),
            "BLANK" => Some("  ".to_owned()),
            _ => None,
        };
        let host = Host {
            data_dir: Path::new("/tmp"),
            env: &env,
            store: None,
        };
        assert_eq!(host.secret("x", "token_env", "SET").unwrap(), "tok");
        for var in ["BLANK", "UNSET"] {
            let e = host.secret("x", "token_env", var).unwrap_err().to_string();
            assert!(
                e.contains(&format!("{var} (named by token_env) is not set")),
                "{e}"
            );
        }
    }
}
