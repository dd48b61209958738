//! Header rewriting for forwarded requests and responses: hop-by-hop
//! stripping, identity-header protection and `X-Forwarded-*`.

use http::HeaderMap;
use http::header::{self, HeaderName, HeaderValue};

use crate::header_names::{is_hop_by_hop, normalize_header_name};

/// A `Connection` option (any case) that names a hop-by-hop header.
fn is_hop_by_hop_option(option: &str) -> bool {
    let mut lower = [0u8; 24];
    match lower.get_mut(..option.len()) {
        Some(buf) => {
            buf.copy_from_slice(option.as_bytes());
            buf.make_ascii_lowercase();
            std::str::from_utf8(buf).is_ok_and(is_hop_by_hop)
        }
        None => false,
    }
}

/// Headers removed from every forwarded request, whoever the peer is:
/// - `Forwarded` (RFC 7239): tokengate states the client's origin in
///   `X-Forwarded-*` only and does not maintain a `Forwarded`
///   chain, so one passed on would be a second, unchecked account of it;
/// - path overrides (`X-Original-URL`, `X-Rewrite-URL`, `X-Original-URI`),
///   which some Java and IIS stacks route by instead of the request line: the
///   upstream must act on the path tokengate judged (its own API paths are
///   never forwarded), and tokengate forwards the path byte for byte, so no
///   proxy in front of it needs them;
/// - method overrides (`X-HTTP-Method-Override` and kin): a READ_ONLY token
///   is checked against the request's method, which must be the one the
///   upstream acts on.
static NEVER_FORWARDED: [HeaderName; 7] = [
    header::FORWARDED,
    HeaderName::from_static("x-original-url"),
    HeaderName::from_static("x-rewrite-url"),
    HeaderName::from_static("x-original-uri"),
    HeaderName::from_static("x-http-method-override"),
    HeaderName::from_static("x-http-method"),
    HeaderName::from_static("x-method-override"),
];

/// Headers that say who the client is or where the request came from. From a
/// peer that is not a trusted proxy they are never believed, so they are
/// removed (and the `X-Forwarded-*` trio set by us).
static UNTRUSTED_ORIGIN_HEADERS: [HeaderName; 7] = [
    HeaderName::from_static("x-real-ip"),
    HeaderName::from_static("x-client-ip"),
    HeaderName::from_static("true-client-ip"),
    HeaderName::from_static("x-forwarded-port"),
    HeaderName::from_static("x-forwarded-prefix"),
    HeaderName::from_static("x-forwarded-server"),
    HeaderName::from_static("x-forwarded-ssl"),
];

pub use crate::net::{X_FORWARDED_FOR, X_FORWARDED_HOST, X_FORWARDED_PROTO};
static X_FORWARDED: [HeaderName; 3] = [
    HeaderName::from_static("x-forwarded-for"),
    HeaderName::from_static("x-forwarded-proto"),
    HeaderName::from_static("x-forwarded-host"),
];

/// Removes hop-by-hop headers, including those the `Connection` header names.
/// Returns the `Upgrade` value when the message asked for a protocol upgrade
/// (`Connection: upgrade` and an `Upgrade` header).
pub fn strip_hop_by_hop(headers: &mut HeaderMap) -> Option<HeaderValue> {
    let mut wants_upgrade = false;
    // Does `Connection` name a header beyond the hop-by-hop ones (usually
    // it says only `keep-alive`, `close` or `upgrade`)?
    let mut names_others = false;
    for option in connection_options(headers) {
        if option.eq_ignore_ascii_case("upgrade") {
            wants_upgrade = true;
        } else if !is_hop_by_hop_option(option) {
            names_others = true;
        }
    }
    let upgrade = if wants_upgrade {
        headers.get(header::UPGRADE).cloned()
    } else {
        None
    };
    if names_others {
        // Header names are lower case; an option matches one in any case.
        let named = |name: &HeaderName| {
            *name != header::UPGRADE
                && connection_options(headers).any(|o| o.eq_ignore_ascii_case(name.as_str()))
        };
        let doomed: Vec<HeaderName> = headers
            .keys()
            .filter(|k| is_hop_by_hop(k.as_str()) || named(k))
            .cloned()
            .collect();
        for name in doomed {
            headers.remove(name);
        }
    } else {
        remove_where(headers, |name| is_hop_by_hop(name.as_str()));
    }
    upgrade
}

/// The options of the `Connection` header(s), trimmed; values that are not
/// text are skipped.
fn connection_options(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
}

/// Removes the headers whose name `doomed` picks: one pass over the names
/// present (a request has a handful), instead of a lookup per listed name.
fn remove_where(headers: &mut HeaderMap, doomed: impl Fn(&HeaderName) -> bool) {
    let names: Vec<HeaderName> = headers.keys().filter(|k| doomed(k)).cloned().collect();
    for name in names {
        headers.remove(name);
    }
}

/// Joins several `Cookie` fields into one, separated by `; ` (RFC 9113
/// §8.2.3: an HTTP/2 client may send each cookie as its own field, which an
/// HTTP/1.1 upstream must receive as one header).
pub fn join_cookies(headers: &mut HeaderMap) {
    let mut values = headers.get_all(header::COOKIE).iter();
    let (Some(first), Some(_)) = (values.next(), values.next()) else {
        return;
    };
    let mut joined = first.as_bytes().to_vec();
    for v in headers.get_all(header::COOKIE).iter().skip(1) {
        joined.extend_from_slice(b"; ");
        joined.extend_from_slice(v.as_bytes());
    }
    if let Ok(value) = HeaderValue::from_bytes(&joined) {
        headers.insert(header::COOKIE, value);
    }
}

/// Marks a message as a protocol upgrade again after stripping.
pub fn set_upgrade(headers: &mut HeaderMap, protocol: HeaderValue) {
    headers.insert(header::UPGRADE, protocol);
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
}

/// Header names (in the normal form of [`normalize_header_name`]) that
/// a client must never send upstream: the identity and secret headers that
/// tokengate itself injects.
#[derive(Debug, Clone, Default)]
pub struct ProtectedNames {
    normalized: Vec<String>,
}

impl ProtectedNames {
    pub fn new<'a>(names: impl IntoIterator<Item = &'a str>) -> ProtectedNames {
        ProtectedNames {
            normalized: names
                .into_iter()
                .filter(|n| !n.is_empty())
                .map(normalize_header_name)
                .collect(),
        }
    }

    fn covers(&self, name: &str) -> bool {
        self.normalized.iter().any(|n| same_normalized(name, n))
    }

    /// Removes every spelling (case, `_`, `.`) of the protected names.
    pub fn strip(&self, headers: &mut HeaderMap) {
        if !self.normalized.is_empty() {
            remove_where(headers, |k| self.covers(k.as_str()));
        }
    }
}

/// `name` (already lower case, as `HeaderName` keeps it) equals `normalized`
/// once `_` and `.` are read as `-`; no allocation.
fn same_normalized(name: &str, normalized: &str) -> bool {
    name.len() == normalized.len()
        && name.bytes().zip(normalized.bytes()).all(|(a, b)| {
            let a = match a {
                b'_' | b'.' => b'-',
                a => a.to_ascii_lowercase(),
            };
            a == b
        })
}

/// `name` is one of `list` (lower case, `-`-separated) in some spelling.
fn spelled_like(name: &HeaderName, list: &[HeaderName]) -> bool {
    list.iter()
        .any(|n| same_normalized(name.as_str(), n.as_str()))
}

/// A quick first look for [`set_forwarded`]: every name of
/// [`NEVER_FORWARDED`], [`UNTRUSTED_ORIGIN_HEADERS`] and [`X_FORWARDED`]
/// starts with one of these letters (a test checks it), and `_` or `.` never
/// stand for a first letter, so most header names are passed at once.
fn may_be_origin_header(name: &HeaderName) -> bool {
    matches!(name.as_str().as_bytes().first(), Some(b'x' | b'f' | b't'))
}

/// Sets `X-Forwarded-For/-Proto/-Host`. From a trusted proxy the
/// chain is extended and its proto/host kept; from anyone else they are
/// replaced and other origin headers dropped. `Forwarded`, path and method
/// overrides are dropped from everyone ([`NEVER_FORWARDED`]).
pub fn set_forwarded(
    headers: &mut HeaderMap,
    peer_ip: &HeaderValue,
    trusted_peer: bool,
    scheme: &'static str,
    client_host: Option<HeaderValue>,
) {
    if trusted_peer {
        remove_where(headers, |name| {
            may_be_origin_header(name) && spelled_like(name, &NEVER_FORWARDED)
        });
        let mut chain = Vec::new();
        for v in headers.get_all(&X_FORWARDED_FOR) {
            if !chain.is_empty() {
                chain.extend_from_slice(b", ");
            }
            chain.extend_from_slice(v.as_bytes());
        }
        let value = if chain.is_empty() {
            peer_ip.clone()
        } else {
            chain.extend_from_slice(b", ");
            chain.extend_from_slice(peer_ip.as_bytes());
            HeaderValue::from_bytes(&chain).unwrap_or_else(|_| peer_ip.clone())
        };
        headers.insert(X_FORWARDED_FOR.clone(), value);
        if !headers.contains_key(&X_FORWARDED_PROTO) {
            headers.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static(scheme));
        }
        if !headers.contains_key(&X_FORWARDED_HOST)
            && let Some(host) = client_host
        {
            headers.insert(X_FORWARDED_HOST.clone(), host);
        }
    } else {
        // Any spelling (`X_Forwarded_For`, `x.original.url`): some servers
        // read `_` and `-` alike.
        remove_where(headers, |name| {
            may_be_origin_header(name)
                && (spelled_like(name, &NEVER_FORWARDED)
                    || spelled_like(name, &UNTRUSTED_ORIGIN_HEADERS)
                    || spelled_like(name, &X_FORWARDED))
        });
        headers.insert(X_FORWARDED_FOR.clone(), peer_ip.clone());
        headers.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static(scheme));
        match client_host {
            Some(host) => headers.insert(X_FORWARDED_HOST.clone(), host),
            None => headers.remove(&X_FORWARDED_HOST),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::header_names::is_reserved;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    static HOP_BY_HOP: [HeaderName; 10] = [
        header::CONNECTION,
        HeaderName::from_static("proxy-connection"),
        HeaderName::from_static("keep-alive"),
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
        header::PROXY_AUTHORIZATION,
        header::PROXY_AUTHENTICATE,
        header::EXPECT,
    ];

    #[test]
    fn the_hop_by_hop_match_is_the_list() {
        for name in &HOP_BY_HOP {
            assert!(is_hop_by_hop(name.as_str()), "{name}");
            assert!(is_hop_by_hop_option(&name.as_str().to_ascii_uppercase()));
        }
        let listed = |n: &str| HOP_BY_HOP.iter().any(|h| h == n);
        for name in [
            "host",
            "accept",
            "connections",
            "tee",
            "x-upgrade",
            "close",
            "",
        ] {
            assert_eq!(is_hop_by_hop(name), listed(name), "{name}");
            assert!(!is_hop_by_hop_option(name), "{name}");
        }
        assert!(!is_hop_by_hop_option("proxy-authorization-and-much-more"));
    }

    #[test]
    fn the_headers_stripped_or_set_on_every_request_are_reserved() {
        let every_request = HOP_BY_HOP.iter().chain(&X_FORWARDED);
        for name in every_request.chain([&header::FORWARDED]) {
            assert!(is_reserved(name.as_str()), "{name}");
        }
    }

    #[test]
    fn origin_header_lists_start_with_the_letters_checked_first() {
        for name in NEVER_FORWARDED
            .iter()
            .chain(&UNTRUSTED_ORIGIN_HEADERS)
            .chain(&X_FORWARDED)
        {
            assert!(may_be_origin_header(name), "{name}");
        }
    }

    #[test]
    fn connection_options_are_matched_in_any_case() {
        let mut h = map(&[
            ("connection", "Keep-Alive, X-Secret-Thing,, upgrade"),
            ("x-secret-thing", "1"),
            ("upgrade", "websocket"),
            ("keep-alive", "timeout=5"),
            ("accept", "*/*"),
        ]);
        assert_eq!(
            strip_hop_by_hop(&mut h),
            Some(HeaderValue::from_static("websocket"))
        );
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("accept"));
        // Options that name only hop-by-hop headers: a header named like
        // another option is kept.
        let mut h = map(&[
            ("connection", "keep-alive"),
            ("keep-alive", "timeout=5"),
            ("close", "x"),
            ("accept", "*/*"),
        ]);
        assert_eq!(strip_hop_by_hop(&mut h), None);
        assert_eq!(h.len(), 2);
        assert!(h.contains_key("close"));
        // `close` names a header too.
        let mut h = map(&[("connection", "Close"), ("close", "x"), ("accept", "*/*")]);
        assert_eq!(strip_hop_by_hop(&mut h), None);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("accept"));
    }

    #[test]
    fn connection_named_headers_are_removed() {
        let mut h = map(&[
            ("connection", "close, X-Secret-Thing"),
            ("x-secret-thing", "1"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers"),
            ("accept", "*/*"),
        ]);
        assert_eq!(strip_hop_by_hop(&mut h), None);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("accept"));
    }

    #[test]
    fn upgrade_is_reported() {
        let mut h = map(&[("connection", "Upgrade"), ("upgrade", "websocket")]);
        assert_eq!(
            strip_hop_by_hop(&mut h),
            Some(HeaderValue::from_static("websocket"))
        );
        assert!(h.is_empty());
        // An Upgrade header without Connection: upgrade is not a request to upgrade.
        let mut h = map(&[("upgrade", "websocket")]);
        assert_eq!(strip_hop_by_hop(&mut h), None);
    }

    #[test]
    fn every_spelling_of_a_protected_name_is_stripped() {
        let names = ProtectedNames::new(["X-Remote-User"]);
        let mut h = map(&[
            ("x-remote-user", "a"),
            ("X_Remote_User", "b"),
            ("x.remote.user", "c"),
            ("x-remote_user", "d"),
            ("x-remote-users", "keep"),
        ]);
        names.strip(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-remote-users"));
    }

    #[test]
    fn forwarded_from_untrusted_peer_is_replaced() {
        let mut h = map(&[
            ("x-forwarded-for", "6.6.6.6"),
            ("x_forwarded_for", "6.6.6.6"),
            ("x-forwarded-proto", "https"),
            ("X.Forwarded.Host", "evil.example"),
            ("forwarded", "for=6.6.6.6"),
            ("x-original-url", "/admin"),
        ]);
        set_forwarded(
            &mut h,
            &HeaderValue::from_static("10.0.0.1"),
            false,
            "http",
            None,
        );
        assert_eq!(h["x-forwarded-for"], "10.0.0.1");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert!(!h.contains_key("forwarded"));
        assert!(!h.contains_key("x-original-url"));
        assert!(!h.contains_key("x-forwarded-host"));
        assert!(!h.contains_key("x_forwarded_for"));
        assert!(!h.contains_key("x.forwarded.host"));
        assert_eq!(h.len(), 2);
    }

    #[test]
    fn forwarded_from_trusted_peer_is_extended() {
        let mut h = map(&[
            ("x-forwarded-for", "1.1.1.1"),
            ("x-forwarded-for", "2.2.2.2"),
            ("x-forwarded-proto", "https"),
        ]);
        set_forwarded(
            &mut h,
            &HeaderValue::from_static("10.0.0.1"),
            true,
            "http",
            Some(HeaderValue::from_static("jira.example.com")),
        );
        assert_eq!(h["x-forwarded-for"], "1.1.1.1, 2.2.2.2, 10.0.0.1");
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(h["x-forwarded-host"], "jira.example.com");
    }

    #[test]
    fn forwarded_and_path_overrides_are_dropped_even_from_a_trusted_peer() {
        for trusted in [false, true] {
            let mut h = map(&[
                ("forwarded", "for=6.6.6.6;proto=https"),
                ("Forwarded", "for=7.7.7.7"),
                ("x-original-url", "/secure/admin"),
                ("X-Rewrite-URL", "/secure/admin"),
                ("x-original-uri", "/secure/admin"),
                ("X_Original_URL", "/secure/admin"),
                ("x.rewrite.url", "/secure/admin"),
                ("x-real-ip", "1.1.1.1"),
                ("X-HTTP-Method-Override", "DELETE"),
                ("x_http_method", "PUT"),
                ("X-Method-Override", "POST"),
            ]);
            set_forwarded(
                &mut h,
                &HeaderValue::from_static("10.0.0.1"),
                trusted,
                "http",
                None,
            );
            for name in [
                "forwarded",
                "x-original-url",
                "x-rewrite-url",
                "x-original-uri",
                "x_original_url",
                "x.rewrite.url",
                "x-http-method-override",
                "x_http_method",
                "x-method-override",
            ] {
                assert!(!h.contains_key(name), "{name} kept (trusted: {trusted})");
            }
            // Other origin headers are a trusted proxy's to set.
            assert_eq!(h.contains_key("x-real-ip"), trusted);
        }
    }
}
