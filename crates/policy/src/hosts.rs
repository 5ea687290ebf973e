//! Host patterns: the lists an owner writes to say which hosts something
//! may reach — the credential proxy's `CONNECT` allowlist (SPEC §8.2,
//! `egress_allow`) and `web_fetch`'s per-group allow/deny lists and the
//! install's `allow_private` (decision 0042).

/// One entry: an exact host or a `*.suffix` pattern, and a port (`None`:
/// any port).
#[derive(Clone, Debug, PartialEq, Eq)]
struct HostRule {
    /// Lowercase, no trailing dot. For a pattern: the suffix with its dot
    /// (`.example.com`).
    host: String,
    wildcard: bool,
    port: Option<u16>,
}

/// A list of host patterns. Entries: `api.github.com`, `host:port`,
/// `*.example.com` (any subdomain, not `example.com` itself; list that too
/// if wanted), `[::1]:8443` for an IPv6 literal. Names compare
/// case-insensitively, ignoring a trailing dot. An entry without a port
/// takes the list's default port ([`HostPatterns::parse`]). Empty = none.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HostPatterns(Vec<HostRule>);

/// The `CONNECT` allowlist: entries without a port mean 443.
pub type EgressAllow = HostPatterns;

impl HostPatterns {
    /// Parses `egress_allow` entries (port 443 when none is given); the
    /// error names the bad entry and the accepted forms.
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> Result<HostPatterns, String> {
        Self::parse_as(entries, "egress_allow", Some(443))
    }

    /// Parses the entries of the setting `key`; an entry without a port
    /// matches `default_port` (`None`: any port).
    pub fn parse_as<S: AsRef<str>>(
        entries: &[S],
        key: &str,
        default_port: Option<u16>,
    ) -> Result<HostPatterns, String> {
        let mut rules = Vec::new();
        let when_none = match default_port {
            Some(p) => format!("port {p} when none is given"),
            None => "any port when none is given".to_owned(),
        };
        for e in entries {
            let raw = e.as_ref().trim();
            let bad = |why: &str| {
                format!("{key} entry {raw:?} {why}: use `host`, `host:port`, `*.domain` or `*.domain:port` ({when_none})")
            };
            let (host, port) = split_host_port(raw).ok_or_else(|| bad("has an invalid port"))?;
            let host = host.trim_end_matches('.').to_ascii_lowercase();
            let (wildcard, host) = match host.strip_prefix("*.") {
                Some(rest) => (true, format!(".{rest}")),
                None => (false, host),
            };
            let name = host.trim_start_matches('.');
            if name.is_empty()
                || name.contains('*')
                || name.contains('/')
                || name.chars().any(char::is_whitespace)
            {
                return Err(bad("is not a host name"));
            }
            rules.push(HostRule {
                host,
                wildcard,
                port: port.or(default_port),
            });
        }
        Ok(HostPatterns(rules))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Adds another list's entries (host-wide plus the agent group's).
    pub fn extend(&mut self, other: HostPatterns) {
        self.0.extend(other.0);
    }

    /// Whether an entry matches `host:port` (for an allowlist: whether it
    /// may be reached).
    pub fn allows(&self, host: &str, port: u16) -> bool {
        self.matching(host)
            .any(|r| r.port.is_none_or(|p| p == port))
    }

    /// Whether an entry names `host`, whatever its port.
    pub fn names_host(&self, host: &str) -> bool {
        self.matching(host).next().is_some()
    }

    fn matching<'a>(&'a self, host: &str) -> impl Iterator<Item = &'a HostRule> + 'a {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        let host = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
            Some(inner) => inner.to_owned(),
            None => host,
        };
        self.0.iter().filter(move |r| {
            if r.wildcard {
                host.ends_with(&r.host) && host.len() > r.host.len()
            } else {
                host == r.host
            }
        })
    }
}

/// `host`, `host:port`, `[v6]`, `[v6]:port` → (host without brackets,
/// port). `None` when a port is present but not a number in 1..=65535.
pub fn split_host_port(s: &str) -> Option<(&str, Option<u16>)> {
    let parse_port = |p: &str| p.parse::<u16>().ok().filter(|p| *p != 0);
    if let Some(rest) = s.strip_prefix('[') {
        let (h, tail) = rest.split_once(']')?;
        return match tail.strip_prefix(':') {
            Some(p) => Some((h, Some(parse_port(p)?))),
            None if tail.is_empty() => Some((h, None)),
            None => None,
        };
    }
    match s.rsplit_once(':') {
        // A bare IPv6 literal has several colons and no port.
        Some((h, _)) if h.contains(':') => Some((s, None)),
        Some((h, p)) => Some((h, Some(parse_port(p)?))),
        None => Some((s, None)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn egress_allowlist_matching() {
        let a = EgressAllow::parse(&[
            "api.github.com",
            "*.PyPI.org",
            "files.example.net:8443",
            "127.0.0.1:7000",
            "[::1]:9000",
            "dot.example.com.",
        ])
        .unwrap();
        let cases = [
            ("api.github.com", 443, true),
            ("API.GitHub.com.", 443, true),
            ("api.github.com", 80, false),
            ("github.com", 443, false),
            ("evilapi.github.com", 443, false),
            ("upload.pypi.org", 443, true),
            ("a.b.pypi.org", 443, true),
            ("pypi.org", 443, false),
            ("notpypi.org", 443, false),
            ("files.example.net", 8443, true),
            ("files.example.net", 443, false),
            ("127.0.0.1", 7000, true),
            ("127.0.0.1", 7001, false),
            ("::1", 9000, true),
            ("dot.example.com", 443, true),
        ];
        for (host, port, want) in cases {
            assert_eq!(a.allows(host, port), want, "{host}:{port}");
        }
        assert!(
            !EgressAllow::default().allows("api.github.com", 443),
            "empty = no egress"
        );
        // Without a default port an entry matches any port; with one, that
        // port. Bracketed IPv6 hosts (a URL's form) match too.
        let any = HostPatterns::parse_as(&["docs.rs", "[::1]", "*.lan:8080"], "k", None).unwrap();
        for (host, port, want) in [
            ("docs.rs", 80, true),
            ("docs.rs", 443, true),
            ("[::1]", 3000, true),
            ("::1", 1, true),
            ("nas.lan", 8080, true),
            ("nas.lan", 80, false),
        ] {
            assert_eq!(any.allows(host, port), want, "{host}:{port}");
        }
    }

    #[test]
    fn bad_egress_entries_name_the_entry() {
        for bad in [
            "host:http",
            "host:0",
            "host:70000",
            "",
            "*",
            "a/b",
            "*.*.x",
            "[::1]x",
        ] {
            let e = EgressAllow::parse(&[bad]).unwrap_err();
            assert!(
                e.contains(&format!("{bad:?}")) && e.contains("host:port"),
                "{bad}: {e}"
            );
        }
        let e = HostPatterns::parse_as(&["a b"], "web.allow_private", None).unwrap_err();
        assert!(
            e.contains("web.allow_private entry") && e.contains("any port"),
            "{e}"
        );
        assert_eq!(split_host_port("[::1]:443"), Some(("::1", Some(443))));
        assert_eq!(
            split_host_port("example.com:8080"),
            Some(("example.com", Some(8080)))
        );
    }
}
