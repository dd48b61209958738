//! Who the client is: the socket peer, or behind trusted proxies the
//! right-most untrusted `X-Forwarded-For` entry; and the key that failure
//! throttling counts per client.

use std::net::{IpAddr, Ipv6Addr};

use http::HeaderMap;
use http::header::HeaderName;
use ipnet::IpNet;

/// The chain of addresses a request came through, as proxies in front tell it.
pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// The scheme and host the client used, as a proxy in front tells them.
pub static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// `server.trusted_proxies`.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    pub fn new(nets: Vec<IpNet>) -> Self {
        TrustedProxies(nets)
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.0.iter().any(|n| n.contains(&ip))
    }

    /// The client's address: the peer itself unless it is a trusted
    /// proxy; then the right-most `X-Forwarded-For` entry that is not a
    /// trusted proxy (entries further left could be made up by the client).
    pub fn client_ip(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = canonical(peer);
        if !self.contains(peer) {
            return peer;
        }
        let mut client = peer;
        let entries: Vec<&str> = headers
            .get_all(&X_FORWARDED_FOR)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .collect();
        for entry in entries.iter().rev() {
            match parse_forwarded_ip(entry) {
                Some(ip) if self.contains(ip) => client = ip,
                Some(ip) => return ip,
                // Garbage in the chain: stop believing it here.
                None => return client,
            }
        }
        client
    }
}

/// An `X-Forwarded-For` entry: `1.2.3.4`, `1.2.3.4:5678`, `2001:db8::1`, `[2001:db8::1]:443`.
fn parse_forwarded_ip(entry: &str) -> Option<IpAddr> {
    let e = entry.trim();
    if let Ok(ip) = e.parse::<IpAddr>() {
        return Some(canonical(ip));
    }
    if let Some(rest) = e.strip_prefix('[') {
        return rest
            .split(']')
            .next()?
            .parse::<IpAddr>()
            .ok()
            .map(canonical);
    }
    let (host, _port) = e.rsplit_once(':')?;
    host.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4)
}

/// IPv4-mapped IPv6 addresses are IPv4 clients.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

/// The throttling key of a client: the IPv4 address, or the IPv6 /64 (one
/// end site usually holds a whole /64).
pub fn throttle_key(ip: IpAddr) -> IpAddr {
    match canonical(ip) {
        IpAddr::V6(v6) => {
            let s = v6.segments();
            IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn trusted() -> TrustedProxies {
        TrustedProxies::new(vec![
            "10.0.0.0/8".parse().unwrap(),
            "::1/128".parse().unwrap(),
        ])
    }

    fn xff(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(X_FORWARDED_FOR.clone(), HeaderValue::from_str(v).unwrap());
        h
    }

    #[test]
    fn untrusted_peer_is_the_client() {
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        assert_eq!(trusted().client_ip(ip, &xff("1.2.3.4")), ip);
    }

    #[test]
    fn rightmost_untrusted_entry_behind_trusted_proxies() {
        let peer: IpAddr = "10.1.1.1".parse().unwrap();
        let got = trusted().client_ip(peer, &xff("6.6.6.6, 198.51.100.9, 10.2.2.2"));
        assert_eq!(got, "198.51.100.9".parse::<IpAddr>().unwrap());
        assert_eq!(trusted().client_ip(peer, &HeaderMap::new()), peer);
        assert_eq!(
            trusted().client_ip(peer, &xff("[2001:db8::1]:443")),
            "2001:db8::1".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            trusted().client_ip(peer, &xff("junk, 10.3.3.3")),
            "10.3.3.3".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn ipv6_keyed_by_64_and_mapped_v4_is_v4() {
        let a = throttle_key("2001:db8:1:2:aaaa::1".parse().unwrap());
        let b = throttle_key("2001:db8:1:2:bbbb::9".parse().unwrap());
        let c = throttle_key("2001:db8:1:3::1".parse().unwrap());
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(
            throttle_key("::ffff:192.0.2.1".parse().unwrap()),
            "192.0.2.1".parse::<IpAddr>().unwrap()
        );
    }
}
