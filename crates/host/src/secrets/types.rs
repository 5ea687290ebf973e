//! The store's vocabulary (decision 0050): how a secret is injected, when
//! the owner is asked, a secret's binding and value, an audited use, and
//! the checks every binding passes.

use pinch_policy::hosts::HostPatterns;
use serde::{Deserialize, Serialize};

use super::Error;

/// How a secret goes into a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Form {
    /// `Authorization: Bearer <value>`.
    Bearer,
    /// `Authorization: Basic base64(<value>)`; the value is `user:password`.
    Basic,
    /// `<name>: <value>`.
    Header(String),
    /// `?<name>=<value>` added to the query.
    Query(String),
}

impl Form {
    /// `bearer`, `basic`, `header:<Name>`, `query:<name>`.
    pub fn parse(s: &str) -> Result<Form, Error> {
        let token = |n: &str| {
            !n.is_empty()
                && n.len() <= 64
                && n.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        };
        let bad = || {
            Error::Invalid(format!("injection form {s:?} is not one of: bearer, basic, header:<Name> (e.g. header:X-Api-Key), query:<name> (e.g. query:key)"))
        };
        match s.split_once(':') {
            None if s.eq_ignore_ascii_case("bearer") => Ok(Form::Bearer),
            None if s.eq_ignore_ascii_case("basic") => Ok(Form::Basic),
            Some((k, n)) if k.eq_ignore_ascii_case("header") && token(n) => {
                let lower = n.to_ascii_lowercase();
                if matches!(
                    lower.as_str(),
                    "host" | "content-length" | "transfer-encoding" | "connection"
                ) {
                    return Err(bad());
                }
                Ok(Form::Header(lower))
            }
            Some((k, n)) if k.eq_ignore_ascii_case("query") && token(n) => {
                Ok(Form::Query(n.to_owned()))
            }
            _ => Err(bad()),
        }
    }

    pub fn as_string(&self) -> String {
        match self {
            Form::Bearer => "bearer".into(),
            Form::Basic => "basic".into(),
            Form::Header(n) => format!("header:{n}"),
            Form::Query(n) => format!("query:{n}"),
        }
    }

    /// The request header this form writes (the client's own is dropped).
    pub fn header(&self) -> Option<&str> {
        match self {
            Form::Bearer | Form::Basic => Some("authorization"),
            Form::Header(n) => Some(n),
            Form::Query(_) => None,
        }
    }
}

/// When the owner is asked before a use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Approve {
    /// The first use by each agent group (until the owner allows always).
    First,
    /// Every use, whatever was allowed before.
    Every,
    /// Never: binding the secret to the group is the approval.
    Never,
}

impl Approve {
    pub fn parse(s: &str) -> Result<Approve, Error> {
        match s {
            "first" => Ok(Approve::First),
            "every" => Ok(Approve::Every),
            "never" => Ok(Approve::Never),
            _ => Err(Error::Invalid(format!(
                "approve {s:?} is not one of: first (ask on each group's first use), every (ask on every use), never"
            ))),
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Approve::First => "first",
            Approve::Every => "every",
            Approve::Never => "never",
        }
    }
}

/// A secret's binding: everything but its value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Binding {
    pub name: String,
    pub form: Form,
    /// Host patterns (`api.github.com`, `*.googleapis.com`, `host:port`;
    /// port 443 when none is given).
    pub hosts: Vec<String>,
    /// Agent group ids that may use it.
    pub groups: Vec<String>,
    pub approve: Approve,
    /// `token` or `oauth`.
    pub kind: String,
    pub created_at: String,
    pub rotated_at: Option<String>,
    pub last_used_at: Option<String>,
}

impl Binding {
    pub fn matches(&self, host: &str, port: u16) -> bool {
        HostPatterns::parse_as(&self.hosts, "hosts", Some(443)).is_ok_and(|p| p.allows(host, port))
    }
    pub fn allows_group(&self, group: &str) -> bool {
        self.groups.iter().any(|g| g == group)
    }
}

/// An OAuth 2 credential: what mints access tokens.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct OAuthValue {
    pub refresh_token: String,
    pub client_id: String,
    #[serde(default)]
    pub client_secret: Option<String>,
    pub token_url: String,
    #[serde(default)]
    pub scope: Option<String>,
}

/// A secret's value (sealed at rest). `Debug` never shows it.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Value {
    Token {
        value: String,
    },
    #[serde(rename = "oauth")]
    OAuth(OAuthValue),
}

impl std::fmt::Debug for Value {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Value::Token { .. } => f.write_str("Token(***)"),
            Value::OAuth(_) => f.write_str("OAuth(***)"),
        }
    }
}

impl Value {
    pub(super) fn kind(&self) -> &'static str {
        match self {
            Value::Token { .. } => "token",
            Value::OAuth(_) => "oauth",
        }
    }
}

/// A new secret's binding, as `pinch secrets add` gives it.
#[derive(Clone, Debug)]
pub struct NewSecret {
    pub name: String,
    pub form: Form,
    pub hosts: Vec<String>,
    pub groups: Vec<String>,
    pub approve: Approve,
}

/// One audited use.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Use {
    pub at: String,
    pub agent_group: String,
    pub session: String,
    pub secret: String,
    pub method: String,
    pub host: String,
    /// The path without its query (a query may carry the secret).
    pub path: String,
    /// The upstream's status, or the proxy's own refusal.
    pub status: u16,
    /// `injected`, `denied`, `not_approved`, `upstream_failed`.
    pub outcome: String,
}

/// Checks a secret's name: 1–64 of `A-Z a-z 0-9 _ . -`.
pub fn check_name(name: &str) -> Result<(), Error> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "secret name {name:?} must be 1–64 letters, digits, '-', '_' or '.'"
        )))
    }
}

/// A query-parameter secret is never bound to a wildcard: every name under
/// a shared suffix (`*.storage.googleapis.com`, `*.run.app`) may be
/// someone else's server, whose logs would keep the URL with the key.
pub fn check_form_hosts(form: &Form, hosts: &[String]) -> Result<(), Error> {
    if matches!(form, Form::Query(_)) && hosts.iter().any(|h| h.trim_start().starts_with("*.")) {
        return Err(Error::Invalid("a query-parameter secret must name its hosts exactly (no *.): URLs are logged by every server that gets them, and a wildcard may cover servers that are not the service's".into()));
    }
    Ok(())
}

/// Checks a binding's hosts and groups. Neither (`--for-channels`): a
/// secret only pinch's own channels read, never injected or offered.
pub fn check_binding(hosts: &[String], groups: &[String]) -> Result<(), Error> {
    if hosts.is_empty() && groups.is_empty() {
        return Ok(());
    }
    if hosts.is_empty() {
        return Err(Error::Invalid(
            "a secret needs at least one host it is injected for: --host api.github.com".into(),
        ));
    }
    HostPatterns::parse_as(hosts, "host", Some(443)).map_err(Error::Invalid)?;
    if groups.is_empty() {
        return Err(Error::Invalid(
            "a secret needs at least one agent group that may use it: --group main".into(),
        ));
    }
    Ok(())
}
