//! Who is calling, and may they: reading the `Authorization` header, checking
//! tokens, the credential swap, lockout and throttling, and the identity
//! look-ups of management API callers.

pub mod identity;
pub mod lockout;
pub mod policy;
pub mod swap;
pub mod throttle;

use std::borrow::Cow;
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use base64::Engine;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use http::HeaderMap;
use http::header::{AUTHORIZATION, COOKIE, HeaderValue};

use crate::metrics::Decision;
use crate::store::{AuthEntry, StoreError};
use crate::token::TokenFormat;

/// Base64 as browsers and curl send it; padding optional.
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// A token as presented by a client, borrowed from its header where it can
/// be; `Debug` redacts it.
pub struct PresentedToken<'a>(Cow<'a, str>);

impl PresentedToken<'_> {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for PresentedToken<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PresentedToken([REDACTED])")
    }
}

/// The browser's session with the upstream: the request's `Cookie` header
/// (several joined with `; `, as HTTP/2 may split them), sent to the
/// upstream's "who am I" endpoint to learn who is logged in. A cookie is a
/// credential: `Debug` redacts it and the value is marked sensitive.
#[derive(Clone)]
pub struct SessionCookie(HeaderValue);

impl SessionCookie {
    /// The request's cookies, if it sent any.
    pub fn of(headers: &HeaderMap) -> Option<SessionCookie> {
        let mut values = headers.get_all(COOKIE).iter().filter(|v| !v.is_empty());
        let first = values.next()?;
        let mut value = match values.next() {
            None => first.clone(),
            Some(second) => {
                let mut joined = first.as_bytes().to_vec();
                for v in std::iter::once(second).chain(values) {
                    joined.extend_from_slice(b"; ");
                    joined.extend_from_slice(v.as_bytes());
                }
                HeaderValue::from_bytes(&joined).ok()?
            }
        };
        value.set_sensitive(true);
        Some(SessionCookie(value))
    }

    pub fn expose(&self) -> &HeaderValue {
        &self.0
    }
}

impl fmt::Debug for SessionCookie {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SessionCookie([REDACTED])")
    }
}

/// What the `Authorization` header carries: one row of the request flow each.
#[derive(Debug)]
pub enum Credential<'a> {
    /// No `Authorization` header.
    None,
    /// `Bearer <token>` (user `None`) or `Basic user:<token>`.
    Token {
        user: Option<String>,
        token: PresentedToken<'a>,
    },
    /// `Basic user:password` where the password is not token-shaped.
    Password { user: String },
    /// Any other scheme, or a Bearer value that is not ours (an Atlassian
    /// personal access token, say): the upstream's business.
    OtherScheme,
    /// An `Authorization` header that cannot be read (bad Base64, no `:`,
    /// several headers): refused like a bad token.
    Unreadable,
}

/// Reads the `Authorization` header. A Bearer token is borrowed, not copied.
pub fn credential<'a>(headers: &'a HeaderMap, format: &TokenFormat) -> Credential<'a> {
    let mut values = headers.get_all(AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Credential::None;
    };
    if values.next().is_some() {
        return Credential::Unreadable;
    }
    parse_authorization(value, format)
}

fn parse_authorization<'a>(value: &'a HeaderValue, format: &TokenFormat) -> Credential<'a> {
    let bytes = value.as_bytes().trim_ascii();
    let (scheme, rest) = match bytes.iter().position(|&b| b == b' ') {
        Some(i) => (&bytes[..i], bytes[i + 1..].trim_ascii_start()),
        None => (bytes, &b""[..]),
    };
    // The Bearer path is the hot one: bytes are compared as they are, and the
    // token's own characters are checked later by the format.
    if scheme.eq_ignore_ascii_case(b"bearer") {
        return match std::str::from_utf8(rest) {
            Ok(rest) if format.is_token_shaped(rest) => Credential::Token {
                user: None,
                token: PresentedToken(Cow::Borrowed(rest)),
            },
            Ok(_) => Credential::OtherScheme,
            Err(_) => Credential::Unreadable,
        };
    }
    let (Ok(scheme), Ok(rest)) = (std::str::from_utf8(scheme), std::str::from_utf8(rest)) else {
        return Credential::Unreadable;
    };
    if !scheme.eq_ignore_ascii_case("basic") {
        return Credential::OtherScheme;
    }
    let Ok(decoded) = BASE64.decode(rest) else {
        return Credential::Unreadable;
    };
    let Ok(decoded) = String::from_utf8(decoded) else {
        return Credential::Unreadable;
    };
    let Some((user, secret)) = decoded.split_once(':') else {
        return Credential::Unreadable;
    };
    if format.is_token_shaped(secret) {
        Credential::Token {
            user: (!user.is_empty()).then(|| user.to_string()),
            token: PresentedToken(Cow::Owned(secret.to_string())),
        }
    } else if user.is_empty() || user.chars().any(char::is_control) {
        Credential::Unreadable
    } else {
        Credential::Password {
            user: user.to_string(),
        }
    }
}

/// Why a presented token was refused. The client always gets the same 401;
/// the difference goes to the audit log and metrics only.
#[derive(Debug, Clone)]
pub enum TokenRefusal {
    /// Wrong length, alphabet or checksum: the store was not consulted.
    Malformed,
    /// Well-formed but not in the store (never issued, or revoked).
    Unknown,
    Expired(Arc<AuthEntry>),
    /// Basic `user:token` where `user` is not the token's owner.
    WrongUser(Arc<AuthEntry>),
    /// A valid token from a client address outside its `allowedIps`.
    IpNotAllowed(Arc<AuthEntry>),
    /// The store failed: fail closed.
    Store(StoreError),
}

impl TokenRefusal {
    /// Its value of `tokengate_auth_decisions_total{result}`.
    pub fn decision(&self) -> Decision {
        match self {
            TokenRefusal::Malformed | TokenRefusal::Unknown => Decision::Invalid,
            TokenRefusal::Expired(_) => Decision::Expired,
            TokenRefusal::WrongUser(_) => Decision::WrongUser,
            TokenRefusal::IpNotAllowed(_) => Decision::IpNotAllowed,
            TokenRefusal::Store(_) => Decision::StoreUnavailable,
        }
    }

    /// The reason written to the audit log.
    pub fn reason(&self) -> &'static str {
        match self {
            TokenRefusal::Malformed => "malformed_token",
            TokenRefusal::Unknown => "unknown_token",
            // A secret a rotation replaced, after its grace.
            TokenRefusal::Expired(e) if e.superseded => "rotated_token",
            TokenRefusal::Expired(_) => "expired_token",
            TokenRefusal::WrongUser(_) => "wrong_user",
            TokenRefusal::IpNotAllowed(_) => "ip_not_allowed",
            TokenRefusal::Store(_) => "store_unavailable",
        }
    }

    /// The token's entry, when the store knew it.
    pub fn entry(&self) -> Option<&AuthEntry> {
        match self {
            TokenRefusal::Expired(e)
            | TokenRefusal::WrongUser(e)
            | TokenRefusal::IpNotAllowed(e) => Some(e),
            _ => None,
        }
    }
}

/// The token check once the store was asked: known, not expired, for
/// Basic the owner's username (case-insensitive), and a client address
/// (`client_ip`, canonical) inside the token's `allowedIps` if it has any.
/// The checksum was checked before the store was asked, so a malformed token
/// never reaches it.
pub fn verify_entry(
    found: Option<Arc<AuthEntry>>,
    user: Option<&str>,
    now_ms: u64,
    client_ip: IpAddr,
) -> Result<Arc<AuthEntry>, TokenRefusal> {
    let Some(entry) = found else {
        return Err(TokenRefusal::Unknown);
    };
    if entry.is_expired(now_ms) {
        return Err(TokenRefusal::Expired(entry));
    }
    if let Some(user) = user
        && !same_user(user, &entry.user_name)
    {
        return Err(TokenRefusal::WrongUser(entry));
    }
    if !entry.allowed.permits(client_ip) {
        return Err(TokenRefusal::IpNotAllowed(entry));
    }
    Ok(entry)
}

/// Usernames compare case-insensitively, as Jira and Confluence do.
pub fn same_user(a: &str, b: &str) -> bool {
    a.eq_ignore_ascii_case(b)
        || (!a.is_ascii() || !b.is_ascii()) && a.to_lowercase() == b.to_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(auth: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(AUTHORIZATION, HeaderValue::from_str(auth).unwrap());
        h
    }

    fn basic(s: &str) -> String {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(s)
        )
    }

    #[test]
    fn rows_of_the_request_flow() {
        let f = TokenFormat::new("tg");
        assert!(matches!(
            credential(&HeaderMap::new(), &f),
            Credential::None
        ));
        assert!(matches!(
            credential(&headers("Bearer tg_abc"), &f),
            Credential::Token { user: None, .. }
        ));
        match credential(&headers(&basic("alice:tg_abc")), &f) {
            Credential::Token { user, token } => {
                assert_eq!(user.as_deref(), Some("alice"));
                assert_eq!(token.expose(), "tg_abc");
            }
            other => panic!("{other:?}"),
        }
        assert!(
            matches!(credential(&headers(&basic("alice:secret")), &f), Credential::Password { user } if user == "alice")
        );
        assert!(matches!(
            credential(&headers("Bearer NjM4Mz-pat"), &f),
            Credential::OtherScheme
        ));
        assert!(matches!(
            credential(&headers("Negotiate abc"), &f),
            Credential::OtherScheme
        ));
        assert!(matches!(
            credential(&headers("Basic !!!"), &f),
            Credential::Unreadable
        ));
        assert!(matches!(
            credential(&headers(&basic("nocolon")), &f),
            Credential::Unreadable
        ));
        assert!(matches!(
            credential(&headers(&basic(":password")), &f),
            Credential::Unreadable
        ));
        // The password may itself contain ':'.
        assert!(matches!(
            credential(&headers(&basic("bob:a:b")), &f),
            Credential::Password { .. }
        ));
    }

    #[test]
    fn two_authorization_headers_are_unreadable() {
        let f = TokenFormat::new("tg");
        let mut h = headers("Bearer tg_x");
        h.append(AUTHORIZATION, HeaderValue::from_static("Basic eDp5"));
        assert!(matches!(credential(&h, &f), Credential::Unreadable));
    }

    #[test]
    fn presented_token_debug_redacts() {
        let t = PresentedToken(Cow::Borrowed("tg_secret"));
        assert!(!format!("{t:?}").contains("secret"));
    }

    #[test]
    fn a_session_cookie_is_every_cookie_joined_and_never_printed() {
        assert!(SessionCookie::of(&HeaderMap::new()).is_none());
        let mut h = HeaderMap::new();
        h.append(COOKIE, HeaderValue::from_static("JSESSIONID=abc123"));
        h.append(COOKIE, HeaderValue::from_static("seraph=x"));
        let c = SessionCookie::of(&h).unwrap();
        assert_eq!(c.expose().as_bytes(), b"JSESSIONID=abc123; seraph=x");
        assert!(c.expose().is_sensitive());
        assert!(!format!("{c:?}").contains("abc123"));
    }

    #[test]
    fn usernames_compare_case_insensitively() {
        assert!(same_user("Alice", "alice"));
        assert!(same_user("ÄRGER", "ärger"));
        assert!(!same_user("alice", "alicia"));
    }
}
