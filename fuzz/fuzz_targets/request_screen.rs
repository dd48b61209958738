//! What the gateway decides about a request before routing it: where a path
//! goes once read as the upstream (Tomcat) reads it, and whether a query
//! string carries a token.
//!
//! - `classify` never panics; a path that normalises to the management API
//!   is the API's whatever the quick first look thought (the fast path never
//!   lets a spelling through), and a normalised path is in normal form;
//! - every spelling built from the API root by the tricks the upstream undoes
//!   (letter case, `%`-escapes, doubled escapes, `./`, `x/../`, `;params`,
//!   backslashes, doubled slashes) is the API's, or refused, never forwarded;
//! - `in_query` agrees with a plain reading of the rule on any query, and
//!   finds a token however it is `%`-encoded into one.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use tokengate::api::API_ROOT;
use tokengate::api::path::{Target, classify, normalize};
use tokengate::token::{BODY_LEN, TokenFormat};

#[derive(Debug, Arbitrary)]
struct Input {
    /// Any path.
    raw: String,
    /// What follows the API root in the built spelling.
    suffix: String,
    /// One trick per character of the built spelling.
    tricks: Vec<u8>,
    /// Any query string, and where in it a token goes.
    query: String,
    at: u16,
    /// Which characters of that token are `%`-encoded.
    encode: Vec<bool>,
}

fn escape(out: &mut String, c: char) {
    let mut buf = [0u8; 4];
    for b in c.encode_utf8(&mut buf).bytes() {
        out.push_str(&format!("%{b:02X}"));
    }
}

/// The API root plus `suffix`, spelled with one trick per character.
fn spelling(suffix: &str, tricks: &[u8]) -> String {
    let plain = format!("{API_ROOT}/latest/{suffix}");
    let mut out = String::new();
    for (i, c) in plain.chars().enumerate() {
        let t = tricks.get(i).copied().unwrap_or(0);
        match (c, t % 12) {
            (_, 1) => out.push(c.to_ascii_uppercase()),
            (_, 2) => escape(&mut out, c),
            (_, 3) => {
                let mut once = String::new();
                escape(&mut once, c);
                out.push_str(&once.replace('%', "%25"));
            }
            ('/', 4) => out.push_str("/./"),
            ('/', 5) => out.push_str("/zz/../"),
            ('/', 6) => out.push_str(";p=1/"),
            ('/', 7) => out.push('\\'),
            ('/', 8) => out.push_str("//"),
            ('/', 9) => out.push_str("/zz/..;/"),
            _ => out.push(c),
        }
    }
    if !out.starts_with('/') {
        out.insert(0, '/');
    }
    out
}

/// The rule, read plainly: our prefix after a non-alphanumeric (or at the
/// start), then 36 letters or digits.
fn plain_rule(lead: &[u8], text: &[u8]) -> bool {
    (0..text.len()).any(|i| {
        text[i..].starts_with(lead)
            && (i == 0 || !text[i - 1].is_ascii_alphanumeric())
            && text.len() >= i + lead.len() + BODY_LEN
            && text[i + lead.len()..i + lead.len() + BODY_LEN]
                .iter()
                .all(u8::is_ascii_alphanumeric)
    })
}

fn percent_decode(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%'
            && let (Some(h), Some(l)) = (
                b.get(i + 1).copied().and_then(hex),
                b.get(i + 2).copied().and_then(hex),
            )
        {
            out.push((h * 16 + l) as u8);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

fuzz_target!(|input: Input| {
    // Any path.
    let target = classify(&input.raw);
    if input.raw.starts_with(API_ROOT) {
        assert_eq!(target, Target::Api);
    }
    if let Ok(normal) = normalize(&input.raw) {
        assert!(normal.starts_with('/'));
        assert!(!normal.contains("//"), "{normal:?}");
        assert!(!normal.bytes().any(|b| b.is_ascii_uppercase()), "{normal:?}");
        assert!(!normal.split('/').any(|s| s == "." || s == ".."), "{normal:?}");
        if normal.starts_with(API_ROOT) {
            assert_eq!(target, Target::Api, "{:?} normalises to {normal:?}", input.raw);
        }
    }

    // A spelling of the API root (the suffix kept to plain segments, so that
    // it cannot climb out of the API by itself).
    let suffix: String = input
        .suffix
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '/' { c } else { 'x' })
        .collect();
    let spelled = spelling(&suffix, &input.tricks);
    assert_ne!(classify(&spelled), Target::Upstream, "{spelled:?} would be forwarded");

    // Tokens in query strings.
    let format = TokenFormat::new("tg");
    assert_eq!(
        format.in_query(&input.query),
        plain_rule(b"tg_", &percent_decode(&input.query)),
        "{:?}",
        input.query
    );
    if let Ok(token) = format.generate() {
        let mut at = usize::from(input.at) % (input.query.len() + 1);
        while !input.query.is_char_boundary(at) {
            at -= 1;
        }
        let mut encoded = String::new();
        for (i, c) in token.expose().chars().enumerate() {
            if input.encode.get(i).copied().unwrap_or(false) {
                escape(&mut encoded, c);
            } else {
                encoded.push(c);
            }
        }
        let query = format!("{}={encoded}&{}", &input.query[..at], &input.query[at..]);
        assert!(format.in_query(&query), "{query:?}");
    }
});
