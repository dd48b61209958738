//! The token format (`<prefix>_<30 base62><6 base62 CRC32>`):
//! `TokenFormat::check` agrees with an independent reading of the spec on
//! arbitrary strings, accepts every token built by the spec, and refuses
//! each such token with any one character changed.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use tokengate::token::{BODY_LEN, RANDOM_LEN, TokenFormat, TokenHash};

const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

#[derive(Debug, Arbitrary)]
struct Input {
    /// Picks a prefix (config allows 1 to 16 ASCII letters or digits).
    prefix: Vec<u8>,
    /// Any string presented as a token.
    raw: String,
    /// The random part of a well-formed token, read as base62 digits.
    random: [u8; RANDOM_LEN],
    /// Which character of the well-formed token to change, and to what.
    position: u8,
    replacement: char,
}

fn prefix_of(seed: &[u8]) -> String {
    let len = 1 + seed.first().map_or(1, |&b| usize::from(b) % 16);
    let p: String = (0..len)
        .map(|i| char::from(BASE62[usize::from(seed.get(i + 1).copied().unwrap_or(b't')) % 62]))
        .collect();
    p
}

/// The spec's value of six base62 digits, if they are digits.
fn base62_value(digits: &[u8]) -> Option<u64> {
    digits.iter().try_fold(0u64, |acc, &d| {
        let v = BASE62.iter().position(|&c| c == d)?;
        Some(acc * 62 + v as u64)
    })
}

/// The spec, read independently of `src/token.rs`.
fn spec_accepts(prefix: &str, s: &str) -> bool {
    let Some(body) = s.strip_prefix(prefix).and_then(|r| r.strip_prefix('_')) else {
        return false;
    };
    let body = body.as_bytes();
    if body.len() != BODY_LEN || !body.iter().all(u8::is_ascii_alphanumeric) {
        return false;
    }
    let (random, checksum) = body.split_at(RANDOM_LEN);
    base62_value(checksum) == Some(u64::from(crc32fast::hash(random)))
}

fn spec_token(prefix: &str, random: &[u8; RANDOM_LEN]) -> String {
    let random: Vec<u8> = random
        .iter()
        .map(|&b| BASE62[usize::from(b) % 62])
        .collect();
    let mut crc = crc32fast::hash(&random);
    let mut checksum = [0u8; 6];
    for slot in checksum.iter_mut().rev() {
        *slot = BASE62[(crc % 62) as usize];
        crc /= 62;
    }
    format!(
        "{prefix}_{}{}",
        String::from_utf8_lossy(&random),
        String::from_utf8_lossy(&checksum)
    )
}

fuzz_target!(|input: Input| {
    let prefix = prefix_of(&input.prefix);
    let format = TokenFormat::new(&prefix);

    // Arbitrary strings: same verdict as the spec; Ok is repeatable.
    let verdict = format.check(&input.raw);
    assert_eq!(
        verdict.is_ok(),
        spec_accepts(&prefix, &input.raw),
        "check disagrees with the spec: {verdict:?}"
    );
    if verdict.is_ok() {
        assert!(format.is_token_shaped(&input.raw));
        assert_eq!(input.raw.len(), format.token_len());
        assert!(format.check(&input.raw).is_ok());
    }

    // A token built by the spec passes, and so do its hash's hex form.
    let token = spec_token(&prefix, &input.random);
    assert_eq!(
        format.check(&token),
        Ok(()),
        "a well-formed token is refused"
    );
    let hash = TokenHash::of(&token);
    assert_eq!(TokenHash::from_hex(&hash.to_hex()), Some(hash));

    // One character changed (anywhere after the prefix, to anything else): refused.
    let lead = prefix.len() + 1;
    let at = lead + usize::from(input.position) % BODY_LEN;
    let old = char::from(token.as_bytes()[at]);
    if input.replacement != old {
        let mut changed = String::with_capacity(token.len() + 4);
        changed.push_str(&token[..at]);
        changed.push(input.replacement);
        changed.push_str(&token[at + 1..]);
        assert!(
            format.check(&changed).is_err(),
            "a token with position {at} changed still passes"
        );
    }

    // Hex of arbitrary text: never a panic, and what parses prints back.
    if let Some(h) = TokenHash::from_hex(&input.raw) {
        assert_eq!(h.to_hex(), input.raw.to_ascii_lowercase());
    }
});
