//! `[proxy]`: what the per-session credential proxy lets out, and its
//! connection limits.

use anyhow::{bail, Result};
use pinch_host::HostConfig;
use serde::Deserialize;

use super::secs;
use super::validate::{Count, Origin, Secs};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxySection {
    /// Hosts sandboxes may `CONNECT` to (TLS end to end, no credentials):
    /// `host`, `host:port`, `*.domain` (port 443 unless given). A list, or
    /// a comma-separated string (`PINCH__PROXY__EGRESS_ALLOW=a.com,b.org`).
    pub egress_allow: Option<HostList>,
    /// Connections one sandbox may hold open to its proxy (default 32).
    pub max_connections_per_session: Option<usize>,
    /// Connections all sandboxes together may hold (default 256; never
    /// more than a quarter of the host's open-file limit).
    pub max_connections: Option<usize>,
    /// Seconds from connecting to the end of the request head (default 10).
    pub header_timeout_s: Option<f64>,
    /// Seconds of client silence mid-body or mid-response (default 60).
    pub idle_timeout_s: Option<f64>,
    /// Seconds of upstream silence, and of an egress tunnel (default 300).
    pub upstream_timeout_s: Option<f64>,
}

/// `egress_allow`: a list of hosts, or (from the variable) one
/// comma-separated string. Anything else is refused naming the key and
/// the shape it needs.
#[derive(Debug)]
pub enum HostList {
    List(Vec<String>),
    Csv(String),
}

const HOST_LIST_SHAPE: &str =
    "a list of hosts, e.g. egress_allow = [\"api.github.com\", \"*.pypi.org\"]";

impl<'de> Deserialize<'de> for HostList {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Shape;
        impl<'de> serde::de::Visitor<'de> for Shape {
            type Value = HostList;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(HOST_LIST_SHAPE)
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<HostList, E> {
                Ok(HostList::Csv(s.to_owned()))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<HostList, A::Error> {
                let mut v = Vec::new();
                loop {
                    match seq.next_element::<String>() {
                        Ok(Some(x)) => v.push(x),
                        Ok(None) => return Ok(HostList::List(v)),
                        Err(_) => {
                            return Err(serde::de::Error::custom(format!(
                                "every entry must be a host name in quotes: {HOST_LIST_SHAPE}"
                            )))
                        }
                    }
                }
            }
        }
        d.deserialize_any(Shape)
    }
}

impl HostList {
    pub(super) fn entries(&self) -> Vec<String> {
        match self {
            HostList::List(v) => v.clone(),
            HostList::Csv(s) => s
                .split(',')
                .map(str::trim)
                .filter(|x| !x.is_empty())
                .map(str::to_owned)
                .collect(),
        }
    }
}

impl ProxySection {
    /// The floors [`super::validate`] checks.
    pub(super) fn secs(&self) -> Vec<Secs<'static>> {
        vec![
            Secs::new(
                "proxy.header_timeout_s",
                self.header_timeout_s,
                0.1,
                "0 would cut every connection to the credential proxy",
            ),
            Secs::new(
                "proxy.idle_timeout_s",
                self.idle_timeout_s,
                0.1,
                "0 would cut every connection to the credential proxy",
            ),
            Secs::new(
                "proxy.upstream_timeout_s",
                self.upstream_timeout_s,
                0.1,
                "0 would cut every call to the model",
            ),
        ]
    }

    pub(super) fn counts(&self) -> Vec<Count<'static>> {
        let u = |v: Option<usize>| v.map(|x| x as u64);
        vec![
            Count::new(
                "proxy.max_connections_per_session",
                u(self.max_connections_per_session),
                1,
                "0 would cut the sandbox off from its model",
            ),
            Count::new(
                "proxy.max_connections",
                u(self.max_connections),
                1,
                "0 would cut every sandbox off from its model",
            ),
        ]
    }

    /// Checks beyond the floors: in the file, the list is a list.
    pub(super) fn problems(&self, o: &Origin) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(HostList::Csv(s)) = &self.egress_allow {
            if !o.env.contains_key("proxy.egress_allow") {
                out.push(format!(
                    "{}: proxy.egress_allow = {s:?} is a string; give a list of hosts, e.g. egress_allow = [\"api.github.com\", \"*.pypi.org\"] \
                     (a comma-separated string is only for the PINCH__PROXY__EGRESS_ALLOW variable)",
                    o.path.display()
                ));
            }
        }
        out
    }

    /// The connection limits, the timeouts and the egress allowlist.
    pub(super) fn apply(&self, c: &mut HostConfig) -> Result<()> {
        for (key, v) in [
            (
                "max_connections_per_session",
                self.max_connections_per_session,
            ),
            ("max_connections", self.max_connections),
        ] {
            if v == Some(0) {
                bail!("proxy.{key} must be at least 1");
            }
        }
        let lim = &mut c.proxy_limits;
        lim.per_session = self.max_connections_per_session.unwrap_or(lim.per_session);
        lim.total = self.max_connections.unwrap_or(lim.total);
        for (key, v, slot) in [
            (
                "proxy.header_timeout_s",
                self.header_timeout_s,
                &mut lim.header_timeout,
            ),
            (
                "proxy.idle_timeout_s",
                self.idle_timeout_s,
                &mut lim.idle_timeout,
            ),
            (
                "proxy.upstream_timeout_s",
                self.upstream_timeout_s,
                &mut lim.upstream_timeout,
            ),
        ] {
            if let Some(v) = v {
                if v == 0.0 {
                    bail!("{key} must be more than 0 seconds");
                }
                *slot = secs(key, v)?;
            }
        }
        if let Some(list) = &self.egress_allow {
            let entries = list.entries();
            pinch_host::proxy::EgressAllow::parse(&entries)
                .map_err(|e| anyhow::anyhow!("proxy.{e}"))?;
            c.proxy_egress_allow = entries;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::*;
    use super::super::*;
    use super::HostList;
    #[allow(unused_imports)]
    use super::*;

    #[test]
    fn egress_allow_from_file_and_env() {
        let text = "[proxy]\negress_allow = [\"api.github.com\", \"*.pypi.org:443\"]\n";
        let c = resolve_str(text).unwrap();
        assert_eq!(c.proxy_egress_allow, ["api.github.com", "*.pypi.org:443"]);
        let env = env_of(&[(
            "PINCH__PROXY__EGRESS_ALLOW",
            "a.example.com, b.example.org:8443",
        )]);
        let f = parse("/etc/pinch.toml".into(), Some(text), &env).unwrap();
        let c = resolve("/tmp/x".into(), &f, &scripted(), &env).unwrap();
        assert_eq!(
            c.proxy_egress_allow,
            ["a.example.com", "b.example.org:8443"],
            "env beats the file"
        );
        let e = resolve_str("[proxy]\negress_allow = [\"x.com:https\"]\n").unwrap_err();
        assert!(
            e.to_string()
                .contains("proxy.egress_allow entry \"x.com:https\""),
            "{e}"
        );
    }

    /// The shapes `egress_allow` takes, and the errors for the rest.
    #[test]
    fn egress_allow_shapes() {
        for (toml, want) in [
            ("egress_allow = []", Ok(vec![])),
            (
                "egress_allow = [\"a.com\", \"*.b.org\"]",
                Ok(vec!["a.com", "*.b.org"]),
            ),
            // The variable's form (validate refuses it in the file).
            (
                "egress_allow = \"a.com, b.org\"",
                Ok(vec!["a.com", "b.org"]),
            ),
            (
                "egress_allow = 5",
                Err("a list of hosts, e.g. egress_allow = ["),
            ),
            (
                "egress_allow = true",
                Err("a list of hosts, e.g. egress_allow = ["),
            ),
            (
                "egress_allow = [\"a.com\", 5]",
                Err("every entry must be a host name in quotes"),
            ),
            ("egress_allow = { a = 1 }", Err("a list of hosts")),
        ] {
            let r: Result<FileConfig, _> =
                toml::Value::Table(format!("[proxy]\n{toml}\n").parse().unwrap()).try_into();
            match (r, want) {
                (Ok(f), Ok(hosts)) => {
                    let got = f.proxy.egress_allow.as_ref().map(HostList::entries);
                    assert_eq!(
                        got,
                        Some(hosts.iter().map(|h| h.to_string()).collect()),
                        "{toml}"
                    );
                }
                (Err(e), Err(says)) => {
                    let e = e.to_string();
                    assert!(
                        e.contains(says) && e.contains("egress_allow"),
                        "{toml}: {e}"
                    );
                }
                (r, want) => panic!("{toml}: got {r:?}, want {want:?}"),
            }
        }
    }
}
