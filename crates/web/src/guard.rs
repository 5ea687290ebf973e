//! The SSRF guard: which URLs and addresses a fetch may reach. Checked for
//! the first URL and again for every redirect hop ([`check_hop`]), and at
//! name resolution ([`GuardedResolver`]): the connection goes only to the
//! addresses the guard returned, so a name cannot resolve to a public
//! address when checked and a private one when connected.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use pinch_policy::hosts::HostPatterns;
use pinch_policy::net::not_public;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::Url;

use crate::GroupPolicy;

/// The addresses of this machine's own interfaces (a public address on the
/// host's interface is reached over loopback, past a firewall's `-i lo`
/// rule: to `web_fetch` it is the host itself). Read with `getifaddrs`,
/// again at most every 30 s.
pub(crate) fn is_own_address(ip: IpAddr) -> bool {
    static CACHE: std::sync::Mutex<Option<(std::time::Instant, Vec<IpAddr>)>> =
        std::sync::Mutex::new(None);
    let Ok(mut c) = CACHE.lock() else {
        return false;
    };
    let fresh = c
        .as_ref()
        .is_some_and(|(at, _)| at.elapsed() < std::time::Duration::from_secs(30));
    if !fresh {
        *c = Some((std::time::Instant::now(), interface_addresses()));
    }
    c.as_ref().is_some_and(|(_, v)| v.contains(&ip))
}

fn interface_addresses() -> Vec<IpAddr> {
    let mut out = Vec::new();
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list we free below; each
    // entry's address is read only as the family it declares.
    unsafe {
        if libc::getifaddrs(&mut head) != 0 {
            return out;
        }
        let mut cur = head;
        while !cur.is_null() {
            let a = (*cur).ifa_addr;
            if !a.is_null() {
                match i32::from((*a).sa_family) {
                    libc::AF_INET => {
                        let s = &*(a as *const libc::sockaddr_in);
                        out.push(IpAddr::from(u32::from_be(s.sin_addr.s_addr).to_be_bytes()));
                    }
                    libc::AF_INET6 => {
                        let s = &*(a as *const libc::sockaddr_in6);
                        out.push(IpAddr::from(s.sin6_addr.s6_addr));
                    }
                    _ => {}
                }
            }
            cur = (*cur).ifa_next;
        }
        libc::freeifaddrs(head);
    }
    out
}

/// Why `ip` may not be fetched, or `None`: not public, or this machine's.
pub(crate) fn refused_address(ip: IpAddr) -> Option<&'static str> {
    not_public(ip).or_else(|| is_own_address(ip).then_some("an address of this machine"))
}

/// A refusal raised inside the resolver, found again in reqwest's error
/// chain so the agent reads the reason and not "error sending request".
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct Refused(pub(crate) String);

const HOW_TO_ALLOW: &str =
    "the owner can allow a private host with [web_fetch] allow_private in pinch.toml";

/// Checks one URL before it is requested: the scheme, credentials, the
/// group's deny and allow lists, the owner's private allowances, and an
/// address written in the URL itself (which never reaches the resolver).
pub(crate) fn check_hop(
    url: &Url,
    group: &GroupPolicy,
    allow_private: &HostPatterns,
) -> Result<(), String> {
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "{} URLs are not fetched: only http and https",
            url.scheme()
        ));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("URLs with a user name or password are not fetched".to_owned());
    }
    let Some(host) = url.host_str() else {
        return Err(format!("{url} has no host"));
    };
    let port = url.port_or_known_default().unwrap_or(0);
    if group.deny.allows(host, port) {
        return Err(format!(
            "{host} is on this agent group's web deny list (agent_configs.web.deny)"
        ));
    }
    if !group.allow.is_empty() && !group.allow.allows(host, port) {
        return Err(format!(
            "{host} is not on this agent group's web allow list (agent_configs.web.allow)"
        ));
    }
    if allow_private.names_host(host) && !allow_private.allows(host, port) {
        return Err(format!(
            "{host} is allowed by [web_fetch] allow_private on another port, not on {port}"
        ));
    }
    let ip = match url.host() {
        Some(url::Host::Ipv4(v4)) => Some(IpAddr::V4(v4)),
        Some(url::Host::Ipv6(v6)) => Some(IpAddr::V6(v6)),
        _ => None,
    };
    if let Some(ip) = ip {
        if let Some(why) = refused_address(ip) {
            if !allow_private.allows(host, port) {
                return Err(format!("{host} is {why}: refused ({HOW_TO_ALLOW})"));
            }
        }
    }
    Ok(())
}

/// Resolves names with the system resolver and keeps only public
/// addresses, unless the owner allowed the name (`[web_fetch] allow_private`).
pub(crate) struct GuardedResolver {
    pub(crate) allow_private: Arc<HostPatterns>,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_owned();
        let allowed = self.allow_private.names_host(&host);
        Box::pin(async move {
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await
                .map_err(|e| Refused(format!("{host} could not be resolved ({e})")))?
                .collect();
            if allowed {
                return Ok(Box::new(addrs.into_iter()) as Addrs);
            }
            let (public, private): (Vec<_>, Vec<_>) = addrs
                .into_iter()
                .partition(|a| refused_address(a.ip()).is_none());
            match (public.is_empty(), private.first()) {
                (false, _) => Ok(Box::new(public.into_iter()) as Addrs),
                (true, Some(a)) => {
                    // The address is the owner's to see, not the agent's
                    // (it would map the internal network).
                    tracing::info!(%host, address = %a.ip(), "web_fetch refused a name that resolves to a non-public address");
                    let why = refused_address(a.ip()).unwrap_or("not public");
                    let kind = why.split(" (").next().unwrap_or(why);
                    Err(Box::new(Refused(format!(
                        "{host} resolves only to non-public addresses ({kind}): refused ({HOW_TO_ALLOW})"
                    ))) as _)
                }
                (true, None) => Err(Box::new(Refused(format!("{host} has no address"))) as _),
            }
        })
    }
}

/// The guard's reason inside a reqwest error, if it was the guard.
pub(crate) fn refusal_in(e: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(r) = err.downcast_ref::<Refused>() {
            return Some(r.0.clone());
        }
        cur = err.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hop(url: &str, group: &GroupPolicy, private: &[&str]) -> Result<(), String> {
        let allow = HostPatterns::parse_as(private, "web.allow_private", None).unwrap();
        check_hop(&Url::parse(url).unwrap(), group, &allow)
    }

    #[test]
    fn addresses_in_urls_are_checked_in_every_spelling() {
        let g = GroupPolicy::default();
        for url in [
            "http://127.0.0.1/",
            "http://127.1/",
            "http://2130706433/",
            "http://0x7f.0.0.1/",
            "http://0177.0.0.1/",
            "http://[::1]:8080/",
            "http://[::ffff:127.0.0.1]/",
            "http://169.254.169.254/latest/meta-data/",
            "http://[fd00:ec2::254]/",
            "http://10.0.0.1/",
            "http://0.0.0.0:7878/",
        ] {
            let e = hop(url, &g, &[]).unwrap_err();
            assert!(
                e.contains("refused") && e.contains("allow_private"),
                "{url}: {e}"
            );
        }
        assert!(hop("http://93.184.215.14/", &g, &[]).is_ok());
        assert!(hop("https://example.com/a?b", &g, &[]).is_ok());
    }

    #[test]
    fn schemes_credentials_and_lists() {
        let g = GroupPolicy::default();
        for (url, want) in [
            ("file:///etc/passwd", "only http and https"),
            ("ftp://example.com/x", "only http and https"),
            ("gopher://example.com/", "only http and https"),
            ("http://user:pw@example.com/", "user name or password"),
        ] {
            let e = hop(url, &g, &[]).unwrap_err();
            assert!(e.contains(want), "{url}: {e}");
        }
        let g = GroupPolicy::from_json(Some(
            r#"{"allow":["*.example.com","docs.rs"],"deny":["bad.example.com"]}"#,
        ))
        .unwrap();
        assert!(hop("https://docs.rs/x", &g, &[]).is_ok());
        assert!(hop("https://a.example.com/", &g, &[]).is_ok());
        assert!(hop("https://bad.example.com/", &g, &[])
            .unwrap_err()
            .contains("deny list"));
        assert!(hop("https://other.org/", &g, &[])
            .unwrap_err()
            .contains("allow list"));
    }

    /// Every address on this machine's interfaces is refused, public ones
    /// included (reached over loopback, past the firewall).
    #[test]
    fn this_machines_own_addresses_are_refused() {
        let own = interface_addresses();
        assert!(own.iter().any(|a| a.is_loopback()), "{own:?}");
        for a in own {
            assert!(is_own_address(a) && refused_address(a).is_some(), "{a}");
        }
        assert_eq!(refused_address("93.184.215.14".parse().unwrap()), None);
    }

    /// A list written in Unicode matches the punycode host `url` gives.
    #[test]
    fn unicode_entries_match_their_ascii_hosts() {
        let g = GroupPolicy::from_json(Some(r#"{"deny":["bücher.example","*.例え.jp:8443"]}"#))
            .unwrap();
        assert!(hop("https://bücher.example/", &g, &[])
            .unwrap_err()
            .contains("deny list"));
        assert!(hop("https://a.例え.jp:8443/", &g, &[])
            .unwrap_err()
            .contains("deny list"));
        assert!(hop("https://a.例え.jp/", &g, &[]).is_ok(), "another port");
        assert_eq!(
            crate::ascii_hosts(&["docs.rs", "[::1]:80", "x:y"]),
            ["docs.rs", "[::1]:80", "x:y"]
        );
    }

    #[test]
    fn the_owner_allows_private_hosts_by_name_and_port() {
        let g = GroupPolicy::default();
        assert!(hop("http://127.0.0.1:8080/", &g, &["127.0.0.1:8080"]).is_ok());
        let e = hop("http://127.0.0.1:8081/", &g, &["127.0.0.1:8080"]).unwrap_err();
        assert!(e.contains("another port"), "{e}");
        assert!(hop("http://nas.lan/", &g, &["nas.lan"]).is_ok());
        assert!(hop("http://[::1]:9/", &g, &["[::1]"]).is_ok());
    }
}
