//! What tokengate knows about header names, for the proxy that rewrites
//! headers and the configuration checks that refuse a header it cannot
//! send: the hop-by-hop names, the names it manages itself, and the one
//! normal form in which names compare.

/// RFC 9110 §7.6.1:
///
/// > Intermediaries MUST parse a received Connection header field before a
/// > message is forwarded and, for each connection-option in this field,
/// > remove any header or trailer field(s) from the message with the same
/// > name as the connection-option, and then remove the Connection header
/// > field itself (or replace it with the intermediary's own control options
/// > for the forwarded message).
/// >
/// > Furthermore, intermediaries SHOULD remove or replace fields that are
/// > known to require removal before forwarding, whether or not they appear
/// > as a connection-option, after applying those fields' semantics. This
/// > includes but is not limited to: Proxy-Connection, Keep-Alive, TE,
/// > Transfer-Encoding, Upgrade.
///
/// `Proxy-Authorization` and `Proxy-Authenticate` are meant for this hop
/// only as well, and `Expect` has been answered by our own server already.
///
/// `name` is lower case, as `HeaderName` keeps it.
pub fn is_hop_by_hop(name: &str) -> bool {
    matches!(
        name,
        "connection"
            | "proxy-connection"
            | "keep-alive"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "proxy-authorization"
            | "proxy-authenticate"
            | "expect"
    )
}

/// Header names tokengate manages itself on a forwarded request, so that
/// none can be the identity or secret header of `[upstream.credentials]`:
/// the hop-by-hop headers, the credentials it swaps (`Authorization`,
/// `Cookie`), the message's framing (`Host`, `Content-Length`,
/// `Content-Type`) and the origin headers it states (`X-Forwarded-*`,
/// `Forwarded`). `name` is in the normal form of [`normalize_header_name`].
pub fn is_reserved(name: &str) -> bool {
    is_hop_by_hop(name)
        || matches!(
            name,
            "authorization"
                | "cookie"
                | "host"
                | "content-length"
                | "content-type"
                | "x-forwarded-for"
                | "x-forwarded-proto"
                | "x-forwarded-host"
                | "forwarded"
        )
}

/// Header names compare case-insensitively, and proxies in front of Jira treat
/// `_` and `.` like `-` (`X_Remote_User`, `x.remote.user`): one normal form.
pub fn normalize_header_name(name: &str) -> String {
    name.bytes()
        .map(|b| match b {
            b'_' | b'.' => '-',
            b => b.to_ascii_lowercase() as char,
        })
        .collect()
}
