//! Property tests of the header rewrite of a forwarded request
//! (`Upstream::rewrite` then `CredentialSwap::apply`, as the gateway calls
//! them): whatever headers a client sends — the identity and secret headers
//! in any spelling (case, `_` or `.` for `-`), repeated, named in
//! `Connection`, among arbitrary others — the upstream sees our identity
//! header once, with the token owner's name, and none of the client's
//! secrets.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, LazyLock};

use base64::Engine;
use http::header::{AUTHORIZATION, COOKIE, HeaderName, HeaderValue};
use http::{HeaderMap, Method, Request, Version};
use proptest::prelude::*;
use tokengate::auth::swap::CredentialSwap;
use tokengate::config::{Config, Secrets, normalize_header_name};
use tokengate::proxy::{Origin, Upstream};
use tokengate::secret::Secret;

const IDENTITY: &str = "X-Remote-User";
const SECRET_HEADER: &str = "X-Gateway-Secret";
const SHARED_SECRET: &str = "gw-shared-secret";
const SERVICE_USER: &str = "svc-gateway";
const SERVICE_PASSWORD: &str = "svc-pa55:word";
const SERVICE_TOKEN: &str = "NjM4MzY2NzQ1NjQ5OkH5Jm2x";

/// Cases per property: 500 keeps the four properties to a few seconds in a
/// debug build; `PROPTEST_CASES=20000` runs a longer search.
fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(500)
}

static UPSTREAM: LazyLock<Arc<Upstream>> = LazyLock::new(|| {
    let mut config = Config::default();
    config.upstream.url = "http://jira.internal:8080/jira".into();
    Upstream::new(&config).unwrap()
});

fn swap(mode: &str, extra: &str) -> CredentialSwap {
    let src =
        format!("[upstream.credentials]\nmode = \"{mode}\"\nheader_name = \"{IDENTITY}\"\n{extra}");
    let config = Config::from_toml("props", &src).unwrap();
    let secrets = Secrets {
        identity_secret: Some(Secret::new(SHARED_SECRET)),
        service_password: Some(Secret::new(SERVICE_PASSWORD)),
        service_token: Some(Secret::new(SERVICE_TOKEN)),
        ..Secrets::default()
    };
    CredentialSwap::new(&config, &secrets).unwrap()
}

static HEADER_MODE: LazyLock<CredentialSwap> = LazyLock::new(|| {
    swap(
        "header",
        &format!("secret_header_name = \"{SECRET_HEADER}\"\nsecret_env = \"GW_SECRET\"\n"),
    )
});
static BASIC_MODE: LazyLock<CredentialSwap> = LazyLock::new(|| {
    swap(
        "basic",
        &format!("username = \"{SERVICE_USER}\"\npassword_env = \"GW_PASSWORD\"\n"),
    )
});
static BEARER_MODE: LazyLock<CredentialSwap> =
    LazyLock::new(|| swap("bearer", "token_env = \"GW_TOKEN\"\n"));

/// `name` in any case, each `-` written as `-`, `_` or `.`.
fn spelling(name: &'static str) -> BoxedStrategy<String> {
    let chars: Vec<BoxedStrategy<char>> = name
        .chars()
        .map(|c| match c {
            '-' => prop_oneof![Just('-'), Just('_'), Just('.')].boxed(),
            c => prop_oneof![Just(c.to_ascii_lowercase()), Just(c.to_ascii_uppercase())].boxed(),
        })
        .collect();
    chars.prop_map(|v| v.into_iter().collect()).boxed()
}

/// Names a client might put in `Connection` (or send as headers).
fn interesting_name() -> BoxedStrategy<String> {
    prop_oneof![
        4 => spelling(IDENTITY),
        3 => spelling(SECRET_HEADER),
        2 => spelling("Authorization"),
        2 => spelling("Cookie"),
        1 => spelling("Proxy-Authorization"),
        1 => spelling("Upgrade"),
        1 => spelling("Keep-Alive"),
        1 => spelling("X-Forwarded-For"),
        1 => spelling("Forwarded"),
        // Near misses of the identity header are other headers.
        1 => Just("x-remote-users".to_string()),
        1 => Just("x-remote-use".to_string()),
        1 => "z[a-zA-Z0-9_.-]{0,15}",
    ]
    .boxed()
}

/// Header names that nothing strips: they must arrive unchanged.
fn benign_name() -> BoxedStrategy<String> {
    (0u8..4).prop_map(|i| format!("x-benign-{i}")).boxed()
}

/// Any value `HeaderValue` accepts: visible ASCII, space, tab, obs-text.
fn value() -> BoxedStrategy<Vec<u8>> {
    proptest::collection::vec(
        prop_oneof![8 => 0x20u8..0x7f, 1 => 0x80u8..=0xff, 1 => Just(b'\t')],
        0..24,
    )
    .boxed()
}

fn connection_value() -> BoxedStrategy<Vec<u8>> {
    let option = prop_oneof![
        3 => interesting_name(),
        1 => Just("upgrade".to_string()),
        1 => Just("close".to_string()),
        1 => Just("keep-alive".to_string()),
    ];
    (
        proptest::collection::vec(option, 1..5),
        prop_oneof![Just(","), Just(", "), Just(" ,\t")],
    )
        .prop_map(|(options, sep)| options.join(sep).into_bytes())
        .boxed()
}

/// A client's header list, in order, duplicates allowed.
fn client_headers() -> BoxedStrategy<Vec<(String, Vec<u8>)>> {
    let one = prop_oneof![
        6 => (interesting_name(), value()),
        2 => (benign_name(), value()),
        2 => (Just("connection".to_string()), connection_value()),
        1 => ("[a-zA-Z][a-zA-Z0-9_.-]{0,20}", value()),
    ];
    proptest::collection::vec(one, 0..24).boxed()
}

fn version() -> BoxedStrategy<Version> {
    prop_oneof![
        Just(Version::HTTP_10),
        Just(Version::HTTP_11),
        Just(Version::HTTP_2)
    ]
    .boxed()
}

fn request(headers: &[(String, Vec<u8>)], version: Version) -> Request<()> {
    let mut req = Request::builder()
        .method(Method::POST)
        .uri("/rest/api/2/issue/DEMO-1?expand=names")
        .version(version)
        .body(())
        .unwrap();
    let map = req.headers_mut();
    for (name, value) in headers {
        map.append(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_bytes(value).unwrap(),
        );
    }
    req
}

/// What the upstream receives for a request with a valid token of `owner`.
fn forwarded(
    swap: &CredentialSwap,
    headers: &[(String, Vec<u8>)],
    version: Version,
    trusted_peer: bool,
    owner: Option<&str>,
) -> HeaderMap {
    let mut req = request(headers, version);
    let peer = HeaderValue::from_static("192.0.2.10");
    let origin = Origin {
        peer_ip: &peer,
        trusted_peer,
        scheme: "https",
    };
    UPSTREAM
        .rewrite(&mut req, &origin, swap.protected())
        .unwrap();
    if let Some(owner) = owner {
        swap.apply(req.headers_mut(), owner).unwrap();
    }
    req.into_parts().0.headers
}

/// Every header whose name is `name` in some spelling, as (name, value).
fn spelled_as<'a>(h: &'a HeaderMap, name: &str) -> Vec<(&'a str, &'a [u8])> {
    let wanted = normalize_header_name(name);
    h.iter()
        .filter(|(k, _)| normalize_header_name(k.as_str()) == wanted)
        .map(|(k, v)| (k.as_str(), v.as_bytes()))
        .collect()
}

/// Checks shared by every mode for a request with a valid token.
fn assert_identity_once(h: &HeaderMap, owner: &str) -> Result<(), TestCaseError> {
    let identity = spelled_as(h, IDENTITY);
    prop_assert_eq!(identity.len(), 1, "identity headers: {:?}", identity);
    prop_assert_eq!(identity[0].0, "x-remote-user");
    prop_assert_eq!(identity[0].1, owner.as_bytes());
    prop_assert!(!h.contains_key(COOKIE), "a client Cookie is forwarded");
    prop_assert!(!h.contains_key("proxy-authorization"));
    // The only Connection the upstream sees is ours, for an upgrade.
    for c in h.get_all("connection") {
        prop_assert_eq!(c.as_bytes(), b"upgrade");
    }
    Ok(())
}

/// Headers that nothing strips arrive with every value, in order, unless a
/// `Connection` header named them.
fn assert_benign_kept(h: &HeaderMap, sent: &[(String, Vec<u8>)]) -> Result<(), TestCaseError> {
    let named: Vec<String> = sent
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case("connection"))
        .filter_map(|(_, v)| {
            HeaderValue::from_bytes(v)
                .ok()?
                .to_str()
                .ok()
                .map(str::to_owned)
        })
        .flat_map(|v| {
            v.split(',')
                .map(|o| o.trim().to_ascii_lowercase())
                .collect::<Vec<_>>()
        })
        .collect();
    for i in 0..4 {
        let name = format!("x-benign-{i}");
        let expected: Vec<&[u8]> = if named.contains(&name) {
            Vec::new()
        } else {
            sent.iter()
                .filter(|(k, _)| *k == name)
                .map(|(_, v)| v.as_slice())
                .collect()
        };
        let got: Vec<&[u8]> = h.get_all(&name).iter().map(|v| v.as_bytes()).collect();
        prop_assert_eq!(got, expected, "{}", name);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn header_mode_forwards_one_identity_and_our_secret_only(
        sent in client_headers(),
        version in version(),
        trusted_peer in any::<bool>(),
        owner in "\\PC{1,16}",
    ) {
        let h = forwarded(&HEADER_MODE, &sent, version, trusted_peer, Some(&owner));
        assert_identity_once(&h, &owner)?;
        let secret = spelled_as(&h, SECRET_HEADER);
        prop_assert_eq!(secret.len(), 1, "secret headers: {} of them", secret.len());
        prop_assert_eq!(secret[0].0, "x-gateway-secret");
        prop_assert_eq!(secret[0].1, SHARED_SECRET.as_bytes());
        prop_assert!(!h.contains_key(AUTHORIZATION), "the client's Authorization is forwarded");
        assert_benign_kept(&h, &sent)?;
    }

    #[test]
    fn basic_mode_forwards_exactly_the_service_accounts_authorization(
        sent in client_headers(),
        version in version(),
        trusted_peer in any::<bool>(),
        owner in "\\PC{1,16}",
    ) {
        let h = forwarded(&BASIC_MODE, &sent, version, trusted_peer, Some(&owner));
        assert_identity_once(&h, &owner)?;
        let auth: Vec<&HeaderValue> = h.get_all(AUTHORIZATION).iter().collect();
        let expected = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD
                .encode(format!("{SERVICE_USER}:{SERVICE_PASSWORD}"))
        );
        prop_assert_eq!(auth.len(), 1);
        prop_assert_eq!(auth[0].as_bytes(), expected.as_bytes());
        assert_benign_kept(&h, &sent)?;
    }

    #[test]
    fn bearer_mode_forwards_exactly_the_service_token(
        sent in client_headers(),
        version in version(),
        owner in "\\PC{1,16}",
    ) {
        let h = forwarded(&BEARER_MODE, &sent, version, false, Some(&owner));
        assert_identity_once(&h, &owner)?;
        let auth: Vec<&HeaderValue> = h.get_all(AUTHORIZATION).iter().collect();
        prop_assert_eq!(auth.len(), 1);
        let expected = format!("Bearer {SERVICE_TOKEN}");
        prop_assert_eq!(auth[0].as_bytes(), expected.as_bytes());
    }

    /// A request forwarded without a token (anonymous, a password, another
    /// scheme) keeps its own credentials, but never an identity or secret
    /// header in any spelling.
    #[test]
    fn without_a_token_no_identity_or_secret_header_is_forwarded(
        sent in client_headers(),
        version in version(),
        trusted_peer in any::<bool>(),
    ) {
        let h = forwarded(&HEADER_MODE, &sent, version, trusted_peer, None);
        prop_assert!(spelled_as(&h, IDENTITY).is_empty(), "a client identity header is forwarded");
        prop_assert!(spelled_as(&h, SECRET_HEADER).is_empty(), "a client secret header is forwarded");
        assert_benign_kept(&h, &sent)?;
    }
}

/// The generators do produce the spellings the properties are about (a
/// property over header sets that never hold them would prove nothing).
#[test]
fn generated_header_sets_hold_protected_spellings_and_connection_lists() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let (mut odd_identity, mut named_in_connection) = (0, 0);
    for _ in 0..300 {
        let sent = client_headers().new_tree(&mut runner).unwrap().current();
        for (k, v) in &sent {
            if normalize_header_name(k) == "x-remote-user" && k != "x-remote-user" {
                odd_identity += 1;
            }
            if k == "connection"
                && normalize_header_name(&String::from_utf8_lossy(v)).contains("x-remote-user")
            {
                named_in_connection += 1;
            }
        }
    }
    assert!(
        odd_identity > 100,
        "{odd_identity} unusual identity spellings"
    );
    assert!(
        named_in_connection > 20,
        "{named_in_connection} Connection lists naming it"
    );
}
