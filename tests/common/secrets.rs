//! Every test binary that starts a gateway or a simulated upstream logs
//! everything, at `trace` for every crate, into a scanner that aborts the
//! test binary when a line holds a token, a password, an `Authorization`
//! value or a session cookie; panic messages are scanned the same way. The lines themselves are
//! dropped after the scan.

use std::io::Write;

use base64::Engine;
use std::sync::Once;
use std::sync::atomic::{AtomicU64, Ordering};

/// Secrets the tests hand to gateways and simulated upstreams (passwords that
/// are not also user names, shared secrets, service credentials).
pub const KNOWN_SECRETS: &[&str] = &[
    super::SECRET,
    "svc-pw",
    "svc-pat",
    "Carol-Pa55word-7f3a",
    // The notice tests' mail password and webhook key.
    "Mail-Pa55-9c1e",
    "hook-key-4f0a",
];

/// Lines scanned so far in this test binary.
pub static SCANNED: AtomicU64 = AtomicU64::new(0);

/// Installs the scanning subscriber once per test binary (a binary that
/// installs its own subscriber first keeps it).
pub fn scan_logs() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // Panic messages too: a panic that would print a secret aborts instead.
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let payload = info.payload();
            let message = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            if let Some(what) = find_secret(&message) {
                let at = info.location().map(|l| l.to_string()).unwrap_or_default();
                eprintln!("a panic message holds {what}: {at}");
                std::process::abort();
            }
            previous(info);
        }));
        let _ = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(|| Scanner)
            .try_init();
    });
}

struct Scanner;

impl Write for Scanner {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        SCANNED.fetch_add(1, Ordering::Relaxed);
        let line = String::from_utf8_lossy(buf);
        if let Some(what) = find_secret(&line) {
            // Say where (time, level, target), never the line: it holds the secret.
            let head: Vec<&str> = line.split_whitespace().take(3).collect();
            eprintln!("a log line holds {what}: {}", head.join(" "));
            std::process::abort();
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// What kind of secret `text` holds, if any.
pub fn find_secret(text: &str) -> Option<&'static str> {
    if KNOWN_SECRETS.iter().any(|s| text.contains(s)) {
        return Some("a known test secret");
    }
    if has_token(text) {
        return Some("a token");
    }
    for (at, _) in text.match_indices("Basic ") {
        // A Basic value is base64 of `user:secret`.
        let value: String = text[at + 6..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || "+/=".contains(*c))
            .collect();
        let decoded = base64::engine::general_purpose::STANDARD.decode(value.as_bytes());
        if decoded.is_ok_and(|d| d.contains(&b':')) {
            return Some("an Authorization value");
        }
    }
    for (at, _) in text.match_indices("JSESSIONID=") {
        // The simulated upstream's sessions are 32 hex digits.
        let value = &text[at + 11..];
        if value.bytes().take_while(u8::is_ascii_hexdigit).count() >= 16 {
            return Some("a session cookie");
        }
    }
    for (at, _) in text.match_indices("Bearer ") {
        let value = &text[at + 7..];
        let len = value
            .bytes()
            .take_while(|b| b.is_ascii_alphanumeric() || b"+/-._~".contains(b))
            .count();
        if len >= 8 {
            return Some("an Authorization value");
        }
    }
    None
}

/// `<letters>_` followed by 36 base62 characters: the shape of a token.
fn has_token(text: &str) -> bool {
    let bytes = text.as_bytes();
    for (at, _) in text.match_indices('_') {
        let prefix = bytes[..at]
            .iter()
            .rev()
            .take_while(|b| b.is_ascii_alphanumeric())
            .count();
        let body = bytes[at + 1..]
            .iter()
            .take_while(|b| b.is_ascii_alphanumeric())
            .count();
        if prefix > 0 && body == 36 {
            return true;
        }
    }
    false
}
