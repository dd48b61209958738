//! What every step of a request may need to know about it: who the client is
//! (behind trusted proxies, the address they vouch for) and the request id
//! that ties its log lines and audit events together.

use std::net::IpAddr;

use http::header::{HOST, HeaderName, HeaderValue};
use http::{HeaderMap, Request, Uri};

use crate::net::{TrustedProxies, X_FORWARDED_HOST, X_FORWARDED_PROTO};
use crate::server::ConnInfo;

pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Per-request facts every step may need.
pub struct RequestCtx {
    pub client_ip: IpAddr,
    pub request_id: HeaderValue,
    pub scheme: &'static str,
    pub trusted_peer: bool,
    /// The socket peer, ready for `X-Forwarded-For`.
    pub peer_ip_header: HeaderValue,
}

impl RequestCtx {
    /// The context of a request that came on `conn` with `headers`.
    pub fn new(headers: &HeaderMap, conn: &ConnInfo, trusted: &TrustedProxies) -> RequestCtx {
        let peer = conn.peer.ip();
        let trusted_peer = trusted.contains(peer);
        let client_ip = if trusted_peer {
            trusted.client_ip(peer, headers)
        } else {
            crate::net::canonical(peer)
        };
        RequestCtx {
            client_ip,
            request_id: request_id(headers.get(&X_REQUEST_ID)),
            scheme: conn.scheme(),
            trusted_peer,
            peer_ip_header: conn.peer_ip_header.clone(),
        }
    }

    pub fn request_id(&self) -> &str {
        self.request_id.to_str().unwrap_or("-")
    }

    /// Where the client reached tokengate, `scheme://host[:port]` and any
    /// path prefix: `server.public_url` when set, else the scheme and host the
    /// client used (a trusted proxy's `X-Forwarded-Proto/-Host`, else this
    /// connection's scheme and the `Host` header or HTTP/2 authority). Empty
    /// when the request names no host at all.
    pub fn public_base<B>(&self, req: &Request<B>, public_url: Option<&str>) -> String {
        if let Some(url) = public_url {
            return url.to_string();
        }
        let headers = req.headers();
        let forwarded = |name: &HeaderName| {
            self.trusted_peer
                .then(|| headers.get(name).and_then(|v| v.to_str().ok()))
                .flatten()
                .and_then(|v| v.split(',').next())
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        let scheme = forwarded(&X_FORWARDED_PROTO).unwrap_or_else(|| self.scheme.to_string());
        let host = forwarded(&X_FORWARDED_HOST)
            .or_else(|| {
                headers
                    .get(HOST)
                    .and_then(|h| h.to_str().ok())
                    .map(str::to_string)
            })
            .or_else(|| req.uri().authority().map(|a| a.as_str().to_string()))
            .filter(|h| !h.is_empty());
        match host {
            Some(host) => format!("{scheme}://{host}"),
            None => String::new(),
        }
    }
}

/// Do two URLs (or `Origin` values) name the same origin: scheme, host and
/// port, letter case ignored and a default port the same as none?
pub fn same_origin(a: &str, b: &str) -> bool {
    fn origin(text: &str) -> Option<(String, String, u16)> {
        let uri: Uri = text.parse().ok()?;
        let scheme = uri.scheme_str()?.to_ascii_lowercase();
        let authority = uri.authority()?;
        if authority.as_str().contains('@') {
            return None;
        }
        let port = match (authority.port_u16(), scheme.as_str()) {
            (Some(p), _) => p,
            (None, "http") => 80,
            (None, "https") => 443,
            (None, _) => return None,
        };
        Some((scheme, authority.host().to_ascii_lowercase(), port))
    }
    match (origin(a), origin(b)) {
        (Some(a), Some(b)) => a == b,
        _ => false,
    }
}

/// An incoming `X-Request-Id` is kept when it is short and plain; else a new one.
fn request_id(incoming: Option<&HeaderValue>) -> HeaderValue {
    if let Some(v) = incoming {
        let b = v.as_bytes();
        if !b.is_empty()
            && b.len() <= 128
            && b.iter()
                .all(|c| c.is_ascii_alphanumeric() || b"-_.:".contains(c))
        {
            return v.clone();
        }
    }
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let random: [u8; 16] = rand::random();
    let mut id = [0u8; 32];
    for (i, b) in random.iter().enumerate() {
        id[2 * i] = HEX[usize::from(b >> 4)];
        id[2 * i + 1] = HEX[usize::from(b & 15)];
    }
    HeaderValue::from_bytes(&id).unwrap_or(HeaderValue::from_static("0"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_compare_by_scheme_host_and_port() {
        assert!(same_origin(
            "http://127.0.0.1:8443",
            "http://127.0.0.1:8443"
        ));
        assert!(same_origin(
            "https://Jira.Example.com",
            "https://jira.example.com:443/jira"
        ));
        assert!(same_origin(
            "http://jira.example.com:80",
            "http://jira.example.com"
        ));
        assert!(!same_origin(
            "http://jira.example.com",
            "https://jira.example.com"
        ));
        assert!(!same_origin(
            "http://127.0.0.1:8443",
            "http://127.0.0.1:8444"
        ));
        assert!(!same_origin(
            "http://evil.example.com",
            "http://jira.example.com"
        ));
        assert!(!same_origin("null", "http://jira.example.com"));
        assert!(!same_origin("", ""));
        assert!(!same_origin(
            "http://a@jira.example.com",
            "http://jira.example.com"
        ));
    }
}
