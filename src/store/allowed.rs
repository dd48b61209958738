//! Where a token may be used from: `allowedIps`, as stored and shown
//! ([`AllowedIps`]: networks in their canonical CIDR form), and as the token
//! hot path checks it ([`AllowedNets`]: each network as address bits and a
//! mask, so that a check is a few integer comparisons and no allocation).

use ipnet::{IpNet, Ipv4Net};
use std::net::IpAddr;

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

    /// Does the list allow `ip`? Checked as the token hot path checks it
    /// (packed, [`AllowedNets`]); for tools and tests, as it allocates.
    pub fn permits(&self, ip: IpAddr) -> bool {
        self.pack(Boxed).permits(ip)
    }

    /// Builds what `build` makes around this list packed for the hot path:
    /// IPv4 networks first, one word each, then never-matching padding up to
    /// a size in 0, 1, 2, 4, … 128 words, then IPv6 networks, four words
    /// each. A list of more than 128 words (more networks than a token may
    /// have) is packed as allowing no address.
    pub fn pack<B: PackInto>(&self, build: B) -> B::Out {
        let (mut v4, mut v6) = (Vec::new(), Vec::new());
        for net in &self.0 {
            match net {
                IpNet::V4(n) => {
                    let mask = u32::from(n.netmask());
                    v4.push(u64::from(mask) << 32 | u64::from(u32::from(n.network()) & mask));
                }
                IpNet::V6(n) => {
                    let mask = u128::from(n.netmask());
                    let bits = u128::from(n.network()) & mask;
                    v6.extend([high(bits), low(bits), high(mask), low(mask)]);
                }
            }
        }
        let restricted = !self.0.is_empty();
        let words = (&v4[..], &v6[..]);
        match v4.len() + v6.len() {
            0 => build.with(packed::<0>(restricted, words)),
            1 => build.with(packed::<1>(restricted, words)),
            2 => build.with(packed::<2>(restricted, words)),
            3..=4 => build.with(packed::<4>(restricted, words)),
            5..=8 => build.with(packed::<8>(restricted, words)),
            9..=16 => build.with(packed::<16>(restricted, words)),
            17..=32 => build.with(packed::<32>(restricted, words)),
            33..=64 => build.with(packed::<64>(restricted, words)),
            65..=128 => build.with(packed::<128>(restricted, words)),
            _ => build.with(packed::<0>(true, (&[], &[]))),
        }
    }
}

/// An IPv4 word that no address matches: mask 0, bits 1.
const NEVER_V4: u64 = 1;

fn high(x: u128) -> u64 {
    (x >> 64) as u64
}

fn low(x: u128) -> u64 {
    x as u64
}

/// `v4` and `v6` packed in `N` words; `N` ≥ their length (see
/// [`AllowedIps::pack`]).
fn packed<const N: usize>(restricted: bool, (v4, v6): (&[u64], &[u64])) -> AllowedNetsOf<[u64; N]> {
    let mut words = [NEVER_V4; N];
    let v6_at = N.saturating_sub(v6.len());
    for (word, net) in words.iter_mut().zip(v4) {
        *word = *net;
    }
    for (word, net) in words[v6_at..].iter_mut().zip(v6) {
        *word = *net;
    }
    AllowedNetsOf {
        restricted,
        v6_at: v6_at as u8,
        words,
    }
}

/// What [`AllowedIps::pack`] builds around a packed list: its size is a
/// constant, so that the list can live in the same allocation as what holds
/// it (the token's cached entry), which the hot path reads anyway.
pub trait PackInto {
    type Out;
    fn with<const N: usize>(self, nets: AllowedNetsOf<[u64; N]>) -> Self::Out;
}

/// The packed list alone, boxed.
pub struct Boxed;

impl PackInto for Boxed {
    type Out = Box<AllowedNets>;
    fn with<const N: usize>(self, nets: AllowedNetsOf<[u64; N]>) -> Box<AllowedNets> {
        Box::new(nets)
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

/// The token hot path's form of `allowedIps`: [`AllowedNetsOf`] over a slice
/// of words, kept inside the token's cached entry.
pub type AllowedNets = AllowedNetsOf<[u64]>;

/// `allowedIps` packed into words (`W`: an array while it is built, a slice
/// once it is inside the cached entry), so that a check is a few integer
/// comparisons with no allocation, no lock and no pointer to follow: with a
/// million tokens the entry is often not in the processor's cache, and a
/// list in an allocation of its own would be a second miss. An IPv4 network
/// is one word (mask in the high half, network bits in the low), so 32 of
/// them fill four cache lines next to the entry's other fields; an IPv6
/// network is four (bits high and low, mask high and low), after the IPv4
/// ones and their padding.
#[derive(Debug, PartialEq, Eq)]
pub struct AllowedNetsOf<W: ?Sized> {
    /// A list was given; without one, any address is allowed.
    restricted: bool,
    /// Where the IPv6 networks start in `words`.
    v6_at: u8,
    words: W,
}

impl AllowedNets {
    /// May a client at `ip` (canonical: an IPv4 client as IPv4) use the
    /// token?
    #[inline]
    pub fn permits(&self, ip: IpAddr) -> bool {
        if !self.restricted {
            return true;
        }
        let (v4, v6) = self
            .words
            .split_at_checked(usize::from(self.v6_at))
            .unwrap_or((&[], &[]));
        // Every network is compared, without stopping at a match: a loop
        // without branches the compiler vectorizes (32 IPv4 networks in
        // about 8 ns, against 18 to 25 when stopping at the first match).
        match ip {
            IpAddr::V4(a) => {
                let a = u32::from(a);
                v4.iter()
                    .fold(false, |hit, &w| hit | (a & (w >> 32) as u32 == w as u32))
            }
            IpAddr::V6(a) => {
                let a = u128::from(a);
                let (a_high, a_low) = (high(a), low(a));
                v6.chunks_exact(4).fold(false, |hit, net| {
                    hit | match *net {
                        [bits_high, bits_low, mask_high, mask_low] => {
                            a_high & mask_high == bits_high && a_low & mask_low == bits_low
                        }
                        _ => false,
                    }
                })
            }
        }
    }

    /// Anywhere?
    pub fn is_unrestricted(&self) -> bool {
        !self.restricted
    }

    /// How many words the packed list takes, padding included.
    pub fn packed_words(&self) -> usize {
        self.words.len()
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
        assert!(AllowedIps::default().pack(Boxed).is_unrestricted());
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
        let packed = a.pack(Boxed);
        assert_eq!(packed.packed_words(), 64, "31 + 4 words, padded");
        assert_eq!(usize::from(packed.v6_at), 60);
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
    fn padding_matches_no_address() {
        let a = allowed(&["10.0.0.0/8", "11.0.0.0/8", "2001:db8::/32"]);
        assert_eq!(a.pack(Boxed).packed_words(), 8, "2 + 4 words, padded");
        for no in [
            "0.0.0.0",
            "0.0.0.1",
            "255.255.255.255",
            "12.0.0.1",
            "::",
            "::1",
        ] {
            assert!(!a.permits(ip(no)), "{no}");
        }
        assert!(a.permits(ip("11.1.1.1")) && a.permits(ip("2001:db8::9")));
        assert!(allowed(&["0.0.0.0/0", "::/0"]).permits(ip("0.0.0.1")));
    }

    #[test]
    fn a_list_longer_than_any_packing_allows_no_address() {
        // 33 IPv6 networks are 132 words; more than a token may have, but a
        // list that reached the packing anyway must not allow everyone.
        let entries: Vec<String> = (0..33).map(|i| format!("2001:db8:{i:x}::/48")).collect();
        let refs: Vec<&str> = entries.iter().map(String::as_str).collect();
        let a = allowed(&refs);
        assert_eq!(a.len(), 33);
        let packed = a.pack(Boxed);
        assert!(!packed.is_unrestricted());
        for no in ["2001:db8:0::1", "2001:db8:20::1", "10.0.0.1"] {
            assert!(!packed.permits(ip(no)), "{no}");
        }
        let ok: Vec<&str> = refs[..32].to_vec();
        assert!(allowed(&ok).permits(ip("2001:db8:1f::1")));
    }

    #[test]
    fn repeats_are_kept_once() {
        assert_eq!(allowed(&["10.0.0.1/8", "10.0.0.0/8"]).len(), 1);
    }
}
