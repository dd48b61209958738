//! Which request paths are the management API's, read as the upstream will
//! read them.
//!
//! Jira and Confluence run on Tomcat, which decodes `%`-escapes, drops `;`
//! path parameters from each segment and resolves `.` and `..` segments
//! before it routes. If tokengate compared the raw path only,
//! `/rest/./de.resolution.apitokenauth/…`, `/x/../rest/…`, `/rest;x=1/…`,
//! `/rest/%2e/…` or `/rest\de…` would pass as "not ours", be forwarded, and
//! land on the management API's real path upstream, where the original app
//! may still be installed. So a path is normalised first, the way the
//! upstream would, and routed by what it becomes:
//! - escapes decoded (repeatedly, so a double-encoded spelling is caught too),
//!   `\` read as `/`;
//! - `;…` removed from every segment;
//! - empty and `.` segments dropped, `..` removes the segment before it;
//! - letters compared in any case.
//!
//! A path that cannot be normalised safely (a `..` above the root, a `%` not
//! followed by two hex digits) is refused with 400: no upstream would serve
//! it as written either.

use std::borrow::Cow;

use super::API_ROOT;

/// Where a request path goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// The management API (some spelling of its root): served here, never forwarded.
    Api,
    /// Anything else: forwarded byte for byte.
    Upstream,
    /// Cannot be normalised safely: 400, never forwarded.
    Unsafe,
}

/// Why a path cannot be normalised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unsafe {
    /// `%` not followed by two hex digits.
    BadEscape,
    /// A `..` segment above the root.
    AboveRoot,
}

/// How many rounds of `%`-decoding are applied at most; a spelling that is
/// still changing after that is refused.
const MAX_DECODE_ROUNDS: usize = 3;

/// Where `path` (the request target's path, without the query) goes.
pub fn classify(path: &str) -> Target {
    if path.starts_with(API_ROOT) {
        return Target::Api;
    }
    if !needs_normalising(path) {
        return Target::Upstream;
    }
    match normalize(path) {
        Ok(normal) if normal.starts_with(API_ROOT) => Target::Api,
        Ok(_) => Target::Upstream,
        Err(_) => Target::Unsafe,
    }
}

/// Could the upstream read `path` as something other than its bytes say, or
/// does it name the API in another letter case? Most paths are plain and
/// skip the slow path.
fn needs_normalising(path: &str) -> bool {
    reads_otherwise(path)
        || path
            .as_bytes()
            .windows(12)
            .any(|w| w[0] | 0x20 == b'a' && w.eq_ignore_ascii_case(b"apitokenauth"))
}

/// Could the upstream read `path` as something other than its bytes say?
fn reads_otherwise(path: &str) -> bool {
    path.bytes().any(|c| matches!(c, b'%' | b';' | b'\\'))
        || path.contains("//")
        || path.contains("/.")
}

/// What follows `root` in `path` (`""`, or from a `/` on) when the upstream
/// would read `path` as `root` or a path under it, letter case ignored as
/// for the API's root: the pages' row of the request flow. `root` is a plain
/// path without a trailing `/`.
pub fn under<'a>(path: &'a str, root: &str) -> Option<Cow<'a, str>> {
    fn rest<'p>(path: &'p str, root: &str) -> Option<&'p str> {
        let head = path.get(..root.len())?;
        let tail = &path[root.len()..];
        (head.eq_ignore_ascii_case(root) && (tail.is_empty() || tail.starts_with('/')))
            .then_some(tail)
    }
    if !reads_otherwise(path) {
        return rest(path, root).map(Cow::Borrowed);
    }
    let normal = normalize(path).ok()?;
    rest(&normal, root).map(|r| Cow::Owned(r.to_string()))
}

/// `path` as the upstream will route it: decoded, parameters dropped, dot
/// segments resolved, lower case, always starting with `/`.
pub fn normalize(path: &str) -> Result<String, Unsafe> {
    let mut text: Cow<'_, [u8]> = Cow::Borrowed(path.as_bytes());
    // The first round is the upstream's own: a bad escape there is a bad
    // request. What it decodes to may hold a literal `%` (`100%25` is
    // "100%"); later rounds decode only what still reads as an escape.
    if text.contains(&b'%') {
        text = Cow::Owned(decode(&text, true)?);
    }
    let mut rounds = 1;
    while text.contains(&b'%') {
        let next = decode(&text, false)?;
        if next == *text {
            break;
        }
        if rounds == MAX_DECODE_ROUNDS {
            return Err(Unsafe::BadEscape);
        }
        text = Cow::Owned(next);
        rounds += 1;
    }
    let mut segments: Vec<Vec<u8>> = Vec::new();
    for raw in text.split(|&c| c == b'/' || c == b'\\') {
        let segment = match raw.iter().position(|&c| c == b';') {
            Some(i) => &raw[..i],
            None => raw,
        };
        match segment {
            b"" | b"." => {}
            b".." => {
                if segments.pop().is_none() {
                    return Err(Unsafe::AboveRoot);
                }
            }
            s => segments.push(s.to_ascii_lowercase()),
        }
    }
    let mut out = String::with_capacity(text.len() + 1);
    for s in &segments {
        out.push('/');
        out.push_str(&String::from_utf8_lossy(s));
    }
    if out.is_empty() {
        out.push('/');
    }
    Ok(out)
}

/// One round of `%`-decoding; `strict`: a `%` that starts no escape is an
/// error, else it stays as it is.
fn decode(bytes: &[u8], strict: bool) -> Result<Vec<u8>, Unsafe> {
    let hex = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            match (
                bytes.get(i + 1).copied().and_then(hex),
                bytes.get(i + 2).copied().and_then(hex),
            ) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 3;
                }
                _ if strict => return Err(Unsafe::BadEscape),
                _ => {
                    out.push(b'%');
                    i += 1;
                }
            }
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_spelling_of_the_api_root_is_the_api() {
        for path in [
            "/rest/de.resolution.apitokenauth/latest/user/token",
            "/rest/./de.resolution.apitokenauth/latest/user/token",
            "/x/../rest/de.resolution.apitokenauth/latest/user/token",
            "/rest;x=1/de.resolution.apitokenauth/latest/user/token",
            "/rest/%2e/de.resolution.apitokenauth/latest/user/token",
            "/rest/%2E%2E/rest/de.resolution.apitokenauth/latest",
            "/rest\\de.resolution.apitokenauth/latest/user/token",
            "/rest/de.resolution.apitokenauth;jsessionid=1/latest",
            "/REST/De.Resolution.ApiTokenAuth/latest/user/token",
            "//rest//de.resolution.apitokenauth/latest",
            "/rest/de.resolution.apitokenauth%2Flatest/user/token",
            "/rest/de.resolution.apitoken%61uth/latest",
            "/rest/de.resolution.apitoken%2561uth/latest",
            "/foo/..;/rest/de.resolution.apitokenauth/latest",
            "/rest/x/%2e%2e/de.resolution.apitokenauth/latest",
        ] {
            assert_eq!(classify(path), Target::Api, "{path}");
        }
    }

    #[test]
    fn ordinary_paths_go_upstream_untouched() {
        for path in [
            "/",
            "/rest/api/2/myself",
            "/browse/DEMO-1",
            "/rest/api/2/search;jsessionid=abc",
            "/secure/../rest/api/2/myself",
            "/.well-known/security.txt",
            "/rest/de.resolution.other/latest",
            "/download/attachments/1/a%20b.png",
            "/display/DEMO/100%25+done",
            "/display/DEMO/100%25%25",
        ] {
            assert_eq!(classify(path), Target::Upstream, "{path}");
        }
    }

    #[test]
    fn what_cannot_be_normalised_is_refused() {
        assert_eq!(classify("/../rest/api/2/myself"), Target::Unsafe);
        assert_eq!(classify("/a/%2e%2e/%2e%2e/etc"), Target::Unsafe);
        assert_eq!(classify("/browse/DEMO-1%"), Target::Unsafe);
        assert_eq!(classify("/browse/%zz"), Target::Unsafe);
        assert_eq!(
            classify("/a/%2525252e"),
            Target::Unsafe,
            "still changing after three rounds"
        );
    }

    #[test]
    fn the_pages_are_found_in_any_spelling() {
        let under = |p| under(p, "/tokengate").map(|r| r.into_owned());
        assert_eq!(under("/tokengate").as_deref(), Some(""));
        assert_eq!(under("/tokengate/").as_deref(), Some("/"));
        assert_eq!(under("/tokengate/admin").as_deref(), Some("/admin"));
        assert_eq!(under("/TokenGate/admin").as_deref(), Some("/admin"));
        assert_eq!(under("/x/../tokengate/admin").as_deref(), Some("/admin"));
        assert_eq!(under("/tokengate;a=b/admin").as_deref(), Some("/admin"));
        assert_eq!(under("/%74okengate/assets/x").as_deref(), Some("/assets/x"));
        assert_eq!(under("//tokengate").as_deref(), Some(""));
        for other in [
            "/",
            "/tokengates",
            "/tokengat",
            "/rest/api/2/myself",
            "/x/tokengate",
            "/../tokengate",
        ] {
            assert_eq!(under(other), None, "{other}");
        }
    }

    #[test]
    fn normalising_twice_changes_nothing() {
        for path in ["/a/./b/../c;x/%2e/D", "/", "//", "/a\\b", "/%41"] {
            let once = normalize(path).unwrap();
            assert_eq!(normalize(&once).unwrap(), once, "{path}");
        }
        assert_eq!(normalize("/a/./b/../c;x/%2e/D").unwrap(), "/a/c/d");
    }
}
