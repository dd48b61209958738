//! Where a token may be used from: `allowedIps`, as stored and shown
//! ([`AllowedIps`]: networks in their canonical CIDR form), and as the token
//! hot path checks it ([`AllowedNets`]: each network as address bits and a
//! mask, so that a check is a few integer comparisons and no allocation).

use std::net::IpAddr;
use std::sync::Arc;

use ipnet::{IpNet, Ipv4Net};

/// The most networks one token may list.
pub const MAX_ALLOWED_IPS: usize = 32;

/// A token's `allowedIps`: networks, each truncated to its prefix
/// (`10.1.2.3/8` is `10.0.0.0/8`), IPv4-mapped IPv6 ones as IPv4, in the
/// order given, without repeats. Empty: from anywhere.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowedIps(Vec<IpNet>);

impl AllowedIps {
    /// The networks as they are stored (already canonical).
    pub fn from_nets(nets: impl IntoIterator<Item = IpNet>) -> AllowedIps {
        let mut out: Vec<IpNet> = Vec::new();
        for net in nets.into_iter().map(canonical_net) {
            if !out.contains(&net) {
                out.push(net);
            }
        }
        AllowedIps(out)
    }

    /// Reads one entry: an address (`192.0.2.7`, `2001:db8::1`) or a network
    /// in CIDR notation (`192.0.2.0/24`, `2001:db8::/32`). `None` if it is
    /// neither.
    pub fn parse_entry(text: &str) -> Option<IpNet> {
        let text = text.trim();
        let net = match text.parse::<IpNet>() {
            Ok(net) => net,
            // `IpNet` wants a prefix length; an address alone is one host.
            Err(_) if !text.contains('/') => IpNet::from(text.parse::<IpAddr>().ok()?),
            Err(_) => return None,
        };
        Some(canonical_net(net))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn iter(&self) -> impl Iterator<Item = &IpNet> {
        self.0.iter()
    }

    /// Each network as text, `192.0.2.0/24` (an address alone: `/32`, `/128`).
    pub fn to_strings(&self) -> Vec<String> {
        self.0.iter().map(IpNet::to_string).collect()
    }

    /// Does the list allow `ip`? (The hot path uses [`AllowedNets`].)
    pub fn permits(&self, ip: IpAddr) -> bool {
        self.nets().permits(ip)
    }

    /// The form the token hot path checks.
    pub fn nets(&self) -> AllowedNets {
        match self.0.as_slice() {
            [] => AllowedNets::Anywhere,
            [one] => AllowedNets::One(Net::of(*one)),
            many => {
                let (mut v4, mut v6) = (Vec::new(), Vec::new());
                for net in many {
                    match Net::of(*net) {
                        Net::V4(n) => v4.push(n),
                        Net::V6(n) => v6.push(n),
                    }
                }
                AllowedNets::Many {
                    v4: v4.into(),
                    v6: v6.into(),
                }
            }
        }
    }
}

/// `::ffff:a.b.c.d/n` (n ≥ 96) is the IPv4 network `a.b.c.d/(n-96)`: the
/// client addresses it is compared with are IPv4 for IPv4 clients. Host bits
/// are cleared.
fn canonical_net(net: IpNet) -> IpNet {
    if let IpNet::V6(v6) = net
        && v6.prefix_len() >= 96
        && let Some(v4) = v6.network().to_ipv4_mapped()
        && let Ok(n) = Ipv4Net::new(v4, v6.prefix_len() - 96)
    {
        return IpNet::V4(n.trunc());
    }
    net.trunc()
}

/// An IPv4 network as the hot path compares it: an address's bits under
/// `mask` equal `bits`. Eight bytes, so 32 of them fill four cache lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct V4Net {
    bits: u32,
    mask: u32,
}

/// The same for IPv6.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct V6Net {
    bits: u128,
    mask: u128,
}

/// One network of either family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Net {
    V4(V4Net),
    V6(V6Net),
}

impl Net {
    fn of(net: IpNet) -> Net {
        match net {
            IpNet::V4(n) => {
                let mask = u32::from(n.netmask());
                Net::V4(V4Net {
                    bits: u32::from(n.network()) & mask,
                    mask,
                })
            }
            IpNet::V6(n) => {
                let mask = u128::from(n.netmask());
                Net::V6(V6Net {
                    bits: u128::from(n.network()) & mask,
                    mask,
                })
            }
        }
    }
}

impl V4Net {
    #[inline]
    fn contains(&self, address: u32) -> bool {
        address & self.mask == self.bits
    }
}

impl V6Net {
    #[inline]
    fn contains(&self, address: u128) -> bool {
        address & self.mask == self.bits
    }
}

/// The token hot path's form of `allowedIps`, kept in the cached entry:
/// anywhere (the usual case) costs one branch, and one network (a CI
/// runner's address or network) is read from the entry itself — with a
/// million tokens the entry is often not in the processor's cache, and a
/// second allocation would be a second miss. Longer lists are kept by
/// family, so an IPv4 client reads only the IPv4 networks at eight bytes
/// each (the whole list of 32 in four cache lines), shared, not copied,
/// between the cache and each request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum AllowedNets {
    #[default]
    Anywhere,
    One(Net),
    Many {
        v4: Arc<[V4Net]>,
        v6: Arc<[V6Net]>,
    },
}

impl AllowedNets {
    /// May a client at `ip` (canonical: an IPv4 client as IPv4) use the
    /// token? No allocation, no lock.
    #[inline]
    pub fn permits(&self, ip: IpAddr) -> bool {
        match (self, ip) {
            (AllowedNets::Anywhere, _) => true,
            (AllowedNets::One(Net::V4(net)), IpAddr::V4(a)) => net.contains(u32::from(a)),
            (AllowedNets::One(Net::V6(net)), IpAddr::V6(a)) => net.contains(u128::from(a)),
            (AllowedNets::One(_), _) => false,
            (AllowedNets::Many { v4, .. }, IpAddr::V4(a)) => {
                let a = u32::from(a);
                v4.iter().any(|n| n.contains(a))
            }
            (AllowedNets::Many { v6, .. }, IpAddr::V6(a)) => {
                let a = u128::from(a);
                v6.iter().any(|n| n.contains(a))
            }
        }
    }

    /// Anywhere?
    pub fn is_unrestricted(&self) -> bool {
        matches!(self, AllowedNets::Anywhere)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed(entries: &[&str]) -> AllowedIps {
        AllowedIps::from_nets(entries.iter().map(|e| AllowedIps::parse_entry(e).unwrap()))
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn addresses_and_networks_of_both_families() {
        let a = allowed(&["127.0.0.2", "10.1.2.3/8", "2001:db8:aa::/48", "::1"]);
        assert_eq!(
            a.to_strings(),
            ["127.0.0.2/32", "10.0.0.0/8", "2001:db8:aa::/48", "::1/128"]
        );
        for yes in ["127.0.0.2", "10.255.0.1", "2001:db8:aa:ffff::7", "::1"] {
            assert!(a.permits(ip(yes)), "{yes}");
        }
        for no in ["127.0.0.1", "11.0.0.1", "2001:db8:ab::1", "::2", "0.0.0.0"] {
            assert!(!a.permits(ip(no)), "{no}");
        }
        assert!(AllowedIps::default().permits(ip("203.0.113.9")));
        assert!(AllowedIps::default().nets().is_unrestricted());
    }

    #[test]
    fn ipv6_cidrs_parse_at_every_prefix_and_mapped_ipv4_is_ipv4() {
        for (text, inside, outside) in [
            ("2001:db8::/32", "2001:db8:ffff::1", "2001:db9::1"),
            ("2001:db8::/128", "2001:db8::", "2001:db8::1"),
            ("::/0", "fe80::1", "192.0.2.1"),
            ("fe80::1:2:3:4/64", "fe80::9", "fe81::9"),
            ("[2001:db8::1]", "2001:db8::1", "2001:db8::2"),
        ] {
            let Some(net) = AllowedIps::parse_entry(text.trim_matches(['[', ']'])) else {
                panic!("{text} parses");
            };
            let a = AllowedIps::from_nets([net]);
            assert!(a.permits(ip(inside)), "{text} ∋ {inside}");
            assert!(!a.permits(ip(outside)), "{text} ∌ {outside}");
        }
        let mapped = allowed(&["::ffff:192.0.2.0/120"]);
        assert_eq!(mapped.to_strings(), ["192.0.2.0/24"]);
        assert!(mapped.permits(ip("192.0.2.200")));
        for bad in [
            "",
            "2001:db8::/129",
            "10.0.0.0/33",
            "host.example",
            "1.2.3",
            "::g",
            "1.2.3.4/",
        ] {
            assert!(AllowedIps::parse_entry(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn long_lists_of_both_families_check_each_family() {
        let mut entries: Vec<String> = (0..30).map(|i| format!("10.{i}.0.0/16")).collect();
        entries.push("2001:db8:aa::/48".into());
        entries.push("::ffff:192.0.2.0/120".into());
        let refs: Vec<&str> = entries.iter().map(String::as_str).collect();
        let a = allowed(&refs);
        assert_eq!(a.len(), MAX_ALLOWED_IPS);
        let AllowedNets::Many { v4, v6 } = a.nets() else {
            panic!("32 networks are a list");
        };
        assert_eq!((v4.len(), v6.len()), (31, 1));
        for yes in ["10.0.0.1", "10.29.255.255", "192.0.2.9", "2001:db8:aa::1"] {
            assert!(a.permits(ip(yes)), "{yes}");
        }
        for no in [
            "10.30.0.1",
            "192.0.3.1",
            "2001:db8:ab::1",
            "::ffff:10.0.0.1",
        ] {
            assert!(!a.permits(ip(no)), "{no}");
        }
        let only_v6 = allowed(&["2001:db8::/32", "fe80::/10"]);
        assert!(!only_v6.permits(ip("10.0.0.1")));
        assert!(only_v6.permits(ip("fe80::1")));
    }

    #[test]
    fn repeats_are_kept_once() {
        assert_eq!(allowed(&["10.0.0.1/8", "10.0.0.0/8"]).len(), 1);
    }
}
