//! What every step of a request may need to know about it: who the client is
//! (behind trusted proxies, the address they vouch for) and the request id
//! that ties its log lines and audit events together.

use std::net::IpAddr;

use http::HeaderMap;
use http::header::{HeaderName, HeaderValue};

use crate::net::TrustedProxies;
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
