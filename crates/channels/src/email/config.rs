//! `[email]` in `pinch.toml`: the section, its defaults, the variable its
//! password is read from, and how the adapter is built from it.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::kind::{
    self, ChannelKind, ChannelSection, Floor, Host, Probe, SecretEnv, SectionError, Starter,
};
use crate::platform::Secret;
use crate::Channel;

use super::{EmailChannel, EmailConfig, Endpoint, Login, Tls, CHANNEL_TYPE};

const PASSWORD_ENV: &str = "PINCH_EMAIL_PASSWORD";
const DEFAULT_POLL: f64 = 60.0;

/// The `[email]` kind, registered in [`crate::KINDS`].
pub const KIND: ChannelKind = ChannelKind::new::<EmailSection>(CHANNEL_TYPE);

/// `[email]`: a mailbox pinch reads over IMAP and answers from over SMTP.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailSection {
    /// pinch's address (From of its mail; the login unless `username`).
    pub address: String,
    /// The display name on its mail (default none).
    pub name: Option<String>,
    pub username: Option<String>,
    /// The variable holding the password or app password (default
    /// `PINCH_EMAIL_PASSWORD`).
    pub password_env: Option<String>,
    /// Instead of a variable: the name of a secret in pinch's store
    /// (`pinch secrets add NAME --for-channels`, or `pinch secrets oauth`
    /// for OAuth, which logs in with XOAUTH2).
    pub password_secret: Option<String>,
    pub imap_host: String,
    /// Default 993 (implicit TLS), 143 otherwise.
    pub imap_port: Option<u16>,
    /// `implicit` (default), `starttls`, or `none` (loopback only).
    pub imap_tls: Option<Tls>,
    /// Default: `imap_host`.
    pub smtp_host: Option<String>,
    /// Default 465 (implicit TLS), 587 (STARTTLS), 25 otherwise.
    pub smtp_port: Option<u16>,
    pub smtp_tls: Option<Tls>,
    /// The folder read (default `INBOX`).
    pub mailbox: Option<String>,
    /// IDLE when the server offers it (default true); false polls.
    pub idle: Option<bool>,
    /// Seconds between polls without IDLE (default 60).
    pub poll_s: Option<f64>,
    /// The stall limit in seconds (default 120): IDLE is renewed, and any
    /// step of the connection given up, after this long.
    pub stall_s: Option<f64>,
    /// A PEM file of extra certificate authorities to trust (a
    /// self-hosted server with a private CA); the web's roots stay trusted.
    pub ca_file: Option<std::path::PathBuf>,
    /// Only mail whose `Authentication-Results:` from this server (your
    /// provider's, e.g. `mx.google.com`) say its From domain passed.
    pub trusted_authserv_id: Option<String>,
}

fn endpoint(
    host: &str,
    port: Option<u16>,
    tls: Tls,
    ports: [u16; 3],
    key: &str,
) -> Result<Endpoint, SectionError> {
    // `[::1]` as written in URLs: the connection wants the bare address.
    let host = host.trim().trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(SectionError::new(
            CHANNEL_TYPE,
            format!("{key}_host is empty: set the server's name, e.g. imap.example.com"),
        ));
    }
    if tls == Tls::None && !loopback(host) {
        return Err(SectionError::new(
            CHANNEL_TYPE,
            format!("{key}_tls = \"none\" is only allowed to a loopback address ({key}_host is {host:?}): the password and every mail would cross the network in clear; use \"implicit\" or \"starttls\""),
        ));
    }
    let default = match tls {
        Tls::Implicit => ports[0],
        Tls::Starttls => ports[1],
        Tls::None => ports[2],
    };
    Ok(Endpoint {
        host: host.to_owned(),
        port: port.unwrap_or(default),
        tls,
    })
}

fn loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .trim_matches(['[', ']'])
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

impl ChannelSection for EmailSection {
    fn secret_envs(&self) -> Vec<SecretEnv> {
        if self.password_secret.is_some() {
            return Vec::new();
        }
        vec![SecretEnv {
            section: CHANNEL_TYPE,
            key: "password_env",
            var: self
                .password_env
                .clone()
                .unwrap_or_else(|| PASSWORD_ENV.into()),
            hint: "the mailbox's password (an app password where the provider has them)",
        }]
    }

    fn floors(&self) -> Vec<Floor> {
        vec![
            kind::stall_floor(self.stall_s),
            Floor {
                key: "poll_s",
                value: self.poll_s,
                min: 0.1,
                why: "the mailbox is asked for new mail this often when the server has no IDLE",
            },
        ]
    }

    fn build(&self, host: &Host) -> Result<Starter, SectionError> {
        let cfg = self.config(host)?;
        Ok(Arc::new(move |tx| {
            let ch = EmailChannel::start(cfg.clone(), tx)?;
            Ok((ch as Arc<dyn Channel>, None))
        }))
    }

    fn probe(&self, host: &Host) -> Option<Probe> {
        let cfg = self.config(host).ok()?;
        Some(Box::pin(async move { super::probe(&cfg).await }))
    }
}

impl EmailSection {
    /// The adapter's configuration: the section checked, the password read.
    fn config(&self, host: &Host) -> Result<EmailConfig, SectionError> {
        let bad = |p: String| SectionError::new(CHANNEL_TYPE, p);
        let address = self.address.trim().to_ascii_lowercase();
        if address.parse::<lettre::Address>().is_err() {
            return Err(bad(format!(
                "address {:?} is not a mail address (e.g. assistant@example.com)",
                self.address
            )));
        }
        let login = match (&self.password_secret, &self.password_env, &host.store) {
            (Some(_), Some(_), _) => {
                return Err(bad(
                    "password_env and password_secret are both set: keep the one the password is in".into(),
                ))
            }
            (Some(name), None, Some(store)) if !name.trim().is_empty() => Login::Store {
                name: name.trim().to_owned(),
                source: store.clone(),
            },
            (Some(name), None, _) if name.trim().is_empty() => {
                return Err(bad("password_secret is empty: name a secret of `pinch secrets list`".into()))
            }
            (Some(_), None, _) => {
                return Err(bad(
                    "password_secret names a secret, but this command has no secret store to read it from".into(),
                ))
            }
            (None, var, _) => {
                let var = var.as_deref().unwrap_or(PASSWORD_ENV);
                Login::Env(Secret(host.secret(CHANNEL_TYPE, "password_env", var)?))
            }
        };
        let imap_tls = self.imap_tls.unwrap_or(Tls::Implicit);
        let imap = endpoint(
            &self.imap_host,
            self.imap_port,
            imap_tls,
            [993, 143, 143],
            "imap",
        )?;
        let smtp_tls = self.smtp_tls.unwrap_or(Tls::Implicit);
        let smtp_host = self.smtp_host.as_deref().unwrap_or(&self.imap_host);
        let smtp = endpoint(smtp_host, self.smtp_port, smtp_tls, [465, 587, 25], "smtp")?;
        let poll = match self.poll_s {
            None => Duration::from_secs_f64(DEFAULT_POLL),
            Some(v) if v.is_finite() && v >= 0.1 => Duration::from_secs_f64(v),
            Some(v) => {
                return Err(bad(format!(
                    "email.poll_s = {v}: it must be at least 0.1 (seconds)"
                )))
            }
        };
        let ca_pem = match &self.ca_file {
            None => None,
            Some(f) => {
                let pem =
                    std::fs::read(f).map_err(|e| bad(format!("ca_file {}: {e}", f.display())))?;
                let n = super::imap::pem_roots(&pem)
                    .map_err(|e| bad(format!("ca_file {}: {e}", f.display())))?
                    .len();
                if n == 0 {
                    return Err(bad(format!(
                        "ca_file {} holds no PEM certificate",
                        f.display()
                    )));
                }
                Some(pem)
            }
        };
        Ok(EmailConfig {
            ca_pem,
            username: self.username.clone().unwrap_or_else(|| address.clone()),
            address,
            name: self.name.clone().filter(|n| !n.trim().is_empty()),
            login,
            imap,
            smtp,
            mailbox: self.mailbox.clone().unwrap_or_else(|| "INBOX".into()),
            idle: self.idle.unwrap_or(true),
            poll,
            stall: kind::stall(CHANNEL_TYPE, self.stall_s)?,
            trusted_authserv_id: self
                .trusted_authserv_id
                .clone()
                .filter(|s| !s.trim().is_empty()),
            data_dir: host.data_dir.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(extra: &str) -> Result<Starter, SectionError> {
        let v: toml::Table =
            format!("address = \"Me@Example.com\"\nimap_host = \"imap.example.com\"\n{extra}")
                .parse()
                .unwrap();
        let c = KIND
            .parse(toml::Value::Table(v))
            .map_err(|e| SectionError::new("email", e.to_string()))?;
        let env = |v: &str| (v == "PINCH_EMAIL_PASSWORD").then(|| "pw".to_owned());
        c.section.build(&Host {
            data_dir: std::path::Path::new("/tmp"),
            env: &env,
            store: None,
        })
    }

    #[test]
    fn clear_text_is_refused_off_loopback_and_defaults_follow_tls() {
        assert!(section("").is_ok());
        let e = section("imap_tls = \"none\"").err().unwrap().to_string();
        assert!(e.contains("only allowed to a loopback"), "{e}");
        let e = section("smtp_host = \"10.0.0.1\"\nsmtp_tls = \"none\"")
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("smtp_tls"), "{e}");
        assert!(
            loopback("127.0.0.1") && loopback("::1") && loopback("[::1]") && loopback("LOCALHOST")
        );
        assert!(!loopback("mail.example.com") && !loopback("10.0.0.1"));
        let e = endpoint("[::1]", None, Tls::None, [993, 143, 143], "imap").unwrap();
        assert_eq!(e.host, "::1");
        let e = endpoint("h", None, Tls::Starttls, [993, 143, 143], "imap").unwrap();
        assert_eq!(e.port, 143);
        let e = endpoint("h", None, Tls::Implicit, [465, 587, 25], "smtp").unwrap();
        assert_eq!(e.port, 465);
    }

    #[test]
    fn a_bad_address_or_missing_password_names_the_fix() {
        let e = section("password_env = \"NOPE\"")
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("NOPE (named by password_env) is not set"), "{e}");
        let v: toml::Table = "address = \"not an address\"\nimap_host = \"h\"\n"
            .parse()
            .unwrap();
        let c = KIND.parse(toml::Value::Table(v)).unwrap();
        let env = |_: &str| Some("pw".to_owned());
        let e = c
            .section
            .build(&Host {
                data_dir: std::path::Path::new("/tmp"),
                env: &env,
                store: None,
            })
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("is not a mail address"), "{e}");
        let e = section("bogus = 1").err().unwrap().to_string();
        assert!(e.contains("unknown field `bogus`"), "{e}");
        let e = section("password_secret = \"mail\"\npassword_env = \"X\"")
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("both set"), "{e}");
        let e = section("password_secret = \"mail\"")
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("no secret store"), "{e}");
    }
}
