//! Which addresses the host may fetch for an agent (`web_fetch`, decision
//! 0042): the public internet only. Loopback, private, link-local (where
//! cloud metadata answers, 169.254.169.254), CGNAT, multicast, reserved
//! and documentation ranges are refused, and so is an IPv6 address that
//! carries one of them inside (IPv4-mapped, NAT64, 6to4). An owner may
//! still allow a host by name or address (`[web_fetch] allow_private`); that is
//! decided by the caller, not here.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Why `ip` is not a public address, or `None` when it is one.
pub fn not_public(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => not_public_v4(v4),
        IpAddr::V6(v6) => not_public_v6(v6),
    }
}

fn in_v4(ip: Ipv4Addr, net: [u8; 4], bits: u32) -> bool {
    let mask = u32::MAX.checked_shl(32 - bits).unwrap_or(0);
    u32::from(ip) & mask == u32::from(Ipv4Addr::from(net)) & mask
}

fn not_public_v4(ip: Ipv4Addr) -> Option<&'static str> {
    const RANGES: &[([u8; 4], u32, &str)] = &[
        ([0, 0, 0, 0], 8, "a \"this network\" address (0.0.0.0/8)"),
        ([10, 0, 0, 0], 8, "a private address (10.0.0.0/8)"),
        (
            [100, 64, 0, 0],
            10,
            "a carrier-grade NAT address (100.64.0.0/10)",
        ),
        ([127, 0, 0, 0], 8, "a loopback address (127.0.0.0/8)"),
        (
            [169, 254, 0, 0],
            16,
            "a link-local address (169.254.0.0/16, where cloud metadata answers)",
        ),
        ([172, 16, 0, 0], 12, "a private address (172.16.0.0/12)"),
        (
            [192, 0, 0, 0],
            24,
            "a protocol-assignment address (192.0.0.0/24)",
        ),
        ([192, 0, 2, 0], 24, "a documentation address (192.0.2.0/24)"),
        (
            [192, 88, 99, 0],
            24,
            "a 6to4 relay address (192.88.99.0/24)",
        ),
        ([192, 168, 0, 0], 16, "a private address (192.168.0.0/16)"),
        (
            [198, 18, 0, 0],
            15,
            "a benchmarking address (198.18.0.0/15)",
        ),
        (
            [198, 51, 100, 0],
            24,
            "a documentation address (198.51.100.0/24)",
        ),
        (
            [203, 0, 113, 0],
            24,
            "a documentation address (203.0.113.0/24)",
        ),
        ([224, 0, 0, 0], 4, "a multicast address (224.0.0.0/4)"),
        (
            [240, 0, 0, 0],
            4,
            "a reserved or broadcast address (240.0.0.0/4)",
        ),
    ];
    RANGES
        .iter()
        .find(|(net, bits, _)| in_v4(ip, *net, *bits))
        .map(|(_, _, why)| *why)
}

fn not_public_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let s = ip.segments();
    let embedded_v4 = |hi: u16, lo: u16| Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo));
    if ip.is_unspecified() {
        return Some("the unspecified address (::)");
    }
    if ip.is_loopback() {
        return Some("a loopback address (::1)");
    }
    // Forms that carry an IPv4 address: judged by the address they carry.
    if let Some(v4) = ip.to_ipv4_mapped() {
        return not_public_v4(v4).or(None);
    }
    if s[..6] == [0; 6] {
        // IPv4-compatible (deprecated, ::a.b.c.d).
        return not_public_v4(embedded_v4(s[6], s[7]))
            .or(Some("an IPv4-compatible address (::/96)"));
    }
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return not_public_v4(embedded_v4(s[6], s[7]));
    }
    if s[0] == 0x2002 {
        return not_public_v4(embedded_v4(s[1], s[2]));
    }
    let first = s[0];
    if first & 0xfe00 == 0xfc00 {
        return Some("a unique local address (fc00::/7)");
    }
    if first & 0xffc0 == 0xfe80 {
        return Some("a link-local address (fe80::/10)");
    }
    if first & 0xffc0 == 0xfec0 {
        return Some("a site-local address (fec0::/10)");
    }
    if first & 0xff00 == 0xff00 {
        return Some("a multicast address (ff00::/8)");
    }
    if s[0] == 0x64 && s[1] == 0xff9b && s[2] == 1 {
        return Some("a local-use NAT64 address (64:ff9b:1::/48)");
    }
    if s[0] == 0x2001 && s[1] == 0x0db8 {
        return Some("a documentation address (2001:db8::/32)");
    }
    if s[0] == 0x3fff && s[1] & 0xf000 == 0 {
        return Some("a documentation address (3fff::/20)");
    }
    if s[0] == 0x2001 && s[1] < 0x0200 {
        return Some("a protocol-assignment address (2001::/23)");
    }
    if first & 0xe000 != 0x2000 {
        return Some("an address outside global unicast (2000::/3)");
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(s: &str) -> Option<&'static str> {
        not_public(s.parse().unwrap())
    }

    #[test]
    fn private_and_special_addresses_are_refused() {
        for (ip, why) in [
            ("127.0.0.1", "loopback"),
            ("127.255.0.9", "loopback"),
            ("0.0.0.0", "this network"),
            ("10.1.2.3", "private"),
            ("172.16.0.1", "private"),
            ("172.31.255.255", "private"),
            ("192.168.1.10", "private"),
            ("100.64.0.1", "carrier-grade"),
            ("100.127.255.254", "carrier-grade"),
            ("169.254.169.254", "metadata"),
            ("224.0.0.1", "multicast"),
            ("255.255.255.255", "broadcast"),
            ("192.0.0.192", "protocol"),
            ("198.18.0.1", "benchmarking"),
            ("::", "unspecified"),
            ("::1", "loopback"),
            ("::ffff:127.0.0.1", "loopback"),
            ("::ffff:169.254.169.254", "metadata"),
            ("::127.0.0.1", "loopback"),
            ("::8.8.8.8", "IPv4-compatible"),
            ("64:ff9b::10.0.0.1", "private"),
            ("2002:7f00:1::", "loopback"),
            ("2002:c0a8:0101::1", "private"),
            ("fd00:ec2::254", "unique local"),
            ("fc00::1", "unique local"),
            ("fe80::1", "link-local"),
            ("fec0::1", "site-local"),
            ("ff02::1", "multicast"),
            ("2001:db8::1", "documentation"),
            ("2001:0:4136:e378::1", "protocol"),
            ("64:ff9b:1::1", "NAT64"),
            ("100::1", "global unicast"),
        ] {
            let got = check(ip);
            assert!(got.is_some_and(|w| w.contains(why)), "{ip}: {got:?}");
        }
    }

    #[test]
    fn public_addresses_pass() {
        for ip in [
            "8.8.8.8",
            "1.1.1.1",
            "172.15.255.255",
            "172.32.0.0",
            "100.63.255.255",
            "100.128.0.0",
            "169.253.0.1",
            "93.184.215.14",
            "2606:4700::1111",
            "2001:4860:4860::8888",
            "::ffff:8.8.8.8",
            "64:ff9b::8.8.8.8",
            "2002:0808:0808::1",
        ] {
            assert_eq!(check(ip), None, "{ip}");
        }
    }

    /// Every IPv4 address and its IPv4-mapped IPv6 form get the same answer.
    #[test]
    fn mapped_forms_agree_with_their_ipv4_address() {
        let mut x: u32 = 0x9e37_79b9;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            let v4 = Ipv4Addr::from(x);
            assert_eq!(
                not_public(IpAddr::V4(v4)),
                not_public(IpAddr::V6(v4.to_ipv6_mapped())),
                "{v4}"
            );
        }
    }
}
