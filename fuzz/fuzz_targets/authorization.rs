//! `auth::credential` on arbitrary `Authorization` header bytes: never a
//! panic, and each kind of credential it returns keeps its promise.
#![no_main]

use base64::Engine;
use http::HeaderMap;
use http::header::{AUTHORIZATION, HeaderValue};
use libfuzzer_sys::fuzz_target;
use tokengate::auth::{Credential, credential};
use tokengate::token::TokenFormat;

fuzz_target!(|data: &[u8]| {
    let format = TokenFormat::new("tg");
    // A NUL byte splits the input into several `Authorization` headers
    // (hyper hands over whatever bytes a header line had, bar CR/LF/NUL).
    let mut headers = HeaderMap::new();
    for part in data.split(|&b| b == 0) {
        let Ok(value) = HeaderValue::from_bytes(part) else {
            return;
        };
        headers.append(AUTHORIZATION, value);
    }
    let count = headers.get_all(AUTHORIZATION).iter().count();
    let cred = credential(&headers, &format);
    // Debug output goes to logs: it must never carry the presented secret.
    let shown = format!("{cred:?}");
    match &cred {
        Credential::None => panic!("None with {count} Authorization header(s)"),
        _ if count > 1 => assert!(matches!(cred, Credential::Unreadable), "{count} headers"),
        Credential::Token { user, token } => {
            let token = token.expose();
            assert!(format.is_token_shaped(token), "token path for a non-token");
            let value = data.trim_ascii();
            if value.len() >= 6 && value[..6].eq_ignore_ascii_case(b"bearer") {
                assert!(user.is_none(), "Bearer never names a user");
                assert!(
                    value.ends_with(token.as_bytes()),
                    "Bearer token is the value's tail"
                );
            } else {
                // Basic: what decodes is `user:token`.
                let encoded = value[5..].trim_ascii();
                let decoded = base64::engine::general_purpose::STANDARD_NO_PAD
                    .decode(
                        encoded
                            .strip_suffix(b"==")
                            .or(encoded.strip_suffix(b"="))
                            .unwrap_or(encoded),
                    )
                    .expect("a Basic token credential decodes");
                let expected = format!("{}:{token}", user.as_deref().unwrap_or(""));
                assert_eq!(decoded, expected.as_bytes());
                if let Some(user) = user {
                    assert!(!user.is_empty() && !user.contains(':'));
                }
            }
            // The user name is shown (it is no secret); nothing else may show the token.
            let rest = shown.replacen(&format!("{user:?}"), "", 1);
            assert!(!rest.contains(token), "Debug shows the token");
        }
        Credential::Password { user } => {
            assert!(!user.is_empty(), "empty user");
            assert!(!user.contains(':'), "user holds the separator");
            assert!(
                !user.chars().any(char::is_control),
                "control character in user"
            );
        }
        Credential::OtherScheme | Credential::Unreadable => {}
    }
});
