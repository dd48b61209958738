//! The token format: `<prefix>_<30 base62 random><6 base62 CRC32>`.
//!
//! The checksum lets tokengate — and secret scanners — reject a mistyped or
//! made-up token without a store lookup. Only the SHA-256 of the whole token is
//! ever stored.

use std::fmt;

use sha2::{Digest, Sha256};

const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
pub const RANDOM_LEN: usize = 30;
pub const CHECKSUM_LEN: usize = 6;
pub const BODY_LEN: usize = RANDOM_LEN + CHECKSUM_LEN;

/// A plain token. It exists once, in the create response; `Debug` redacts it.
pub struct PlainToken(String);

impl PlainToken {
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn hash(&self) -> TokenHash {
        TokenHash::of(&self.0)
    }
}

impl fmt::Debug for PlainToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PlainToken([REDACTED])")
    }
}

/// SHA-256 of a whole token: the key under which the store finds it.
#[derive(Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct TokenHash(pub [u8; 32]);

impl TokenHash {
    pub fn of(token: &str) -> TokenHash {
        TokenHash(Sha256::digest(token.as_bytes()).into())
    }

    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    pub fn from_hex(s: &str) -> Option<TokenHash> {
        // Hex digits only: `from_str_radix` would also take a `+` sign ("+f").
        if s.len() != 64 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let mut out = [0u8; 32];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
        }
        Some(TokenHash(out))
    }
}

impl fmt::Debug for TokenHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A short fingerprint is enough to tell hashes apart in debugging output.
        write!(
            f,
            "TokenHash({:02x}{:02x}{:02x}{:02x}…)",
            self.0[0], self.0[1], self.0[2], self.0[3]
        )
    }
}

/// Knows the configured prefix; generates and checks tokens.
#[derive(Debug, Clone)]
pub struct TokenFormat {
    /// `"<prefix>_"`, ready for `strip_prefix`.
    lead: String,
}

/// Why a token-shaped string is not a token. Only the audit log sees the difference.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Malformed {
    Length,
    Alphabet,
    Checksum,
}

impl TokenFormat {
    pub fn new(prefix: &str) -> Self {
        TokenFormat {
            lead: format!("{prefix}_"),
        }
    }

    /// Length of a token of this format.
    pub fn token_len(&self) -> usize {
        self.lead.len() + BODY_LEN
    }

    /// Whether `s` claims to be a token (carries our prefix). Such strings take
    /// the token path and are never forwarded as passwords.
    pub fn is_token_shaped(&self, s: &str) -> bool {
        s.starts_with(&self.lead)
    }

    /// `s` quoted for an error message, unless it may hold a token (our
    /// prefix anywhere in it): a token pasted into the wrong place is never
    /// echoed back.
    pub fn quoted_unless_token(&self, s: &str) -> String {
        if s.contains(&self.lead) {
            "(not shown: it looks like a token)".to_string()
        } else {
            format!("{s:?}")
        }
    }

    /// Does `text` hold something token-shaped: our prefix, at the start or
    /// after a character that is not a letter or digit, then the 36 letters
    /// and digits of a token (checksum or not: a mistyped token is a secret
    /// too). Used on query strings, where a token would end up in access logs.
    pub fn appears_in(&self, text: &[u8]) -> bool {
        let lead = self.lead.as_bytes();
        let mut from = 0;
        while let Some(found) = text[from..].windows(lead.len()).position(|w| w == lead) {
            let at = from + found;
            let boundary = at == 0 || !text[at - 1].is_ascii_alphanumeric();
            let body = &text[at + lead.len()..];
            if boundary
                && body.len() >= BODY_LEN
                && body[..BODY_LEN].iter().all(u8::is_ascii_alphanumeric)
            {
                return true;
            }
            from = at + 1;
        }
        false
    }

    /// Does a URL query string hold a token, plain or `%`-encoded?
    pub fn in_query(&self, query: &str) -> bool {
        let decoded: std::borrow::Cow<'_, [u8]> =
            percent_encoding::percent_decode_str(query).into();
        self.appears_in(&decoded)
    }

    /// Checks length, alphabet and checksum, touching nothing else.
    pub fn check(&self, s: &str) -> Result<(), Malformed> {
        // The length first: the cheapest test, and most made-up tokens fail it.
        if s.len() != self.token_len() {
            return Err(Malformed::Length);
        }
        let body = s
            .strip_prefix(&self.lead)
            .ok_or(Malformed::Length)?
            .as_bytes();
        let (random, checksum) = body.split_at(RANDOM_LEN);
        // Decoding the six characters is cheaper than encoding the CRC (no
        // divisions); the random part's alphabet is looked at only when the
        // checksum matches, which a made-up string almost never does.
        if decode_checksum(checksum)? != crc32fast::hash(random) {
            return Err(Malformed::Checksum);
        }
        if !random.iter().all(u8::is_ascii_alphanumeric) {
            return Err(Malformed::Alphabet);
        }
        Ok(())
    }

    /// A new token from the operating system's CSPRNG.
    pub fn generate(&self) -> Result<PlainToken, getrandom::Error> {
        let mut random = [0u8; RANDOM_LEN];
        let mut filled = 0;
        let mut pool = [0u8; 64];
        while filled < RANDOM_LEN {
            getrandom::fill(&mut pool)?;
            // Rejection sampling keeps every character equally likely:
            // 248 = 4 * 62, so `b % 62` is uniform for b < 248.
            for &b in pool.iter().filter(|&&b| b < 248) {
                if filled == RANDOM_LEN {
                    break;
                }
                random[filled] = BASE62[usize::from(b % 62)];
                filled += 1;
            }
        }
        let mut token = String::with_capacity(self.token_len());
        token.push_str(&self.lead);
        token.extend(random.iter().map(|&b| b as char));
        token.extend(
            encode_checksum(crc32fast::hash(&random))
                .iter()
                .map(|&b| b as char),
        );
        Ok(PlainToken(token))
    }
}

/// Base62 digit values; 255 marks a byte outside the alphabet.
const DIGITS: [u8; 256] = {
    let mut t = [255u8; 256];
    let mut i = 0;
    while i < 62 {
        t[BASE62[i] as usize] = i as u8;
        i += 1;
    }
    t
};

/// The CRC that six base62 characters spell; `Checksum` when it is above
/// 32 bits, `Alphabet` for a character outside base62.
fn decode_checksum(chars: &[u8]) -> Result<u32, Malformed> {
    let mut value = 0u64;
    for &b in chars {
        let d = DIGITS[usize::from(b)];
        if d == 255 {
            return Err(Malformed::Alphabet);
        }
        value = value * 62 + u64::from(d);
    }
    u32::try_from(value).map_err(|_| Malformed::Checksum)
}

fn encode_checksum(mut crc: u32) -> [u8; CHECKSUM_LEN] {
    let mut out = [b'0'; CHECKSUM_LEN];
    for slot in out.iter_mut().rev() {
        *slot = BASE62[(crc % 62) as usize];
        crc /= 62;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_tokens_have_the_format() {
        let f = TokenFormat::new("tg");
        let t = f.generate().unwrap();
        assert_eq!(t.expose().len(), 39);
        assert!(t.expose().starts_with("tg_"));
        assert_eq!(f.check(t.expose()), Ok(()));
        assert_ne!(f.generate().unwrap().expose(), t.expose());
    }

    #[test]
    fn any_changed_character_fails_the_checksum() {
        let f = TokenFormat::new("tg");
        let t = f.generate().unwrap();
        let s = t.expose().to_string();
        for i in 3..s.len() {
            let mut b = s.clone().into_bytes();
            b[i] = if b[i] == b'a' { b'b' } else { b'a' };
            let changed = String::from_utf8(b).unwrap();
            assert_eq!(f.check(&changed), Err(Malformed::Checksum), "position {i}");
        }
    }

    #[test]
    fn wrong_length_and_alphabet() {
        let f = TokenFormat::new("tg");
        assert_eq!(f.check("tg_short"), Err(Malformed::Length));
        assert_eq!(
            f.check(&format!("tg_{}", "-".repeat(36))),
            Err(Malformed::Alphabet)
        );
        assert_eq!(
            f.check(&format!("xx_{}", "a".repeat(36))),
            Err(Malformed::Length)
        );
        assert!(!f.is_token_shaped("password"));
        assert!(f.is_token_shaped("tg_anything"));
    }

    #[test]
    fn checksum_digits_round_trip() {
        for crc in [0, 1, 61, 62, 3843, u32::MAX / 7, u32::MAX] {
            assert_eq!(decode_checksum(&encode_checksum(crc)), Ok(crc));
        }
        assert_eq!(
            decode_checksum(b"zzzzzz"),
            Err(Malformed::Checksum),
            "above u32::MAX"
        );
        assert_eq!(decode_checksum(b"00-000"), Err(Malformed::Alphabet));
    }

    #[test]
    fn debug_never_shows_the_token() {
        let t = TokenFormat::new("tg").generate().unwrap();
        assert!(!format!("{t:?}").contains(&t.expose()[3..]));
    }

    #[test]
    fn hash_hex_round_trip() {
        let h = TokenHash::of("tg_x");
        assert_eq!(TokenHash::from_hex(&h.to_hex()), Some(h));
        assert_eq!(TokenHash::from_hex("zz"), None);
    }

    /// Found by the `token` fuzz target: `u8::from_str_radix` takes a sign,
    /// so "+9" passed as a byte and a 64-character non-hex string parsed.
    #[test]
    fn hash_hex_refuses_signs() {
        let signed = format!("+9{}", "9".repeat(62));
        assert_eq!(TokenHash::from_hex(&signed), None);
        assert_eq!(TokenHash::from_hex(&"-1".repeat(32)), None);
        let upper = "AB".repeat(32);
        assert_eq!(
            TokenHash::from_hex(&upper).map(|h| h.to_hex()),
            Some(upper.to_lowercase())
        );
    }

    #[test]
    fn a_token_is_found_anywhere_in_a_text() {
        let f = TokenFormat::new("tg");
        let t = f.generate().unwrap();
        let token = t.expose();
        for text in [
            token.to_string(),
            format!("access_token={token}"),
            format!("a=1&b={token}&c=2"),
            format!("x={}", &token[..token.len()]),
        ] {
            assert!(f.appears_in(text.as_bytes()), "{}", text.len());
        }
        for text in [
            "jql=project%3DDEMO",
            "label=tg_short",
            "xtg_000000000000000000000000000000000000",
            "tg_00000000000000000000000000000000000",
            "",
        ] {
            assert!(!f.appears_in(text.as_bytes()), "{text}");
        }
    }
}
