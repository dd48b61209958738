//! `Config::from_toml` on arbitrary text: never a panic; a refusal names at
//! least one problem with a line inside the text; an accepted config is one
//! the gateway can start from (its URL, listener address, proxies, header
//! names and token prefix all usable).
#![no_main]

use libfuzzer_sys::fuzz_target;
use tokengate::auth::swap::CredentialSwap;
use tokengate::config::{Config, Secrets};
use tokengate::secret::Secret;
use tokengate::token::TokenFormat;

fuzz_target!(|text: &str| {
    match Config::from_toml("fuzz.toml", text) {
        Err(e) => {
            assert!(!e.problems.is_empty(), "refused without a problem");
            let lines = text.split('\n').count();
            for p in &e.problems {
                assert!(!p.message.is_empty());
                // A problem about a key says which table the key is in.
                assert!(p.key.is_empty() || !p.table.is_empty(), "{p:?}");
                if let Some(line) = p.line {
                    assert!((1..=lines).contains(&line), "line {line} of {lines}");
                }
            }
            assert!(!e.to_string().is_empty());
        }
        Ok(config) => {
            assert!(config.semantic_problems().is_empty());
            let url = config.upstream_url().expect("accepted upstream.url");
            assert!(!url.authority.host().is_empty());
            // The upstream's `Host` header is built from it at start-up.
            assert!(http::HeaderValue::from_str(url.authority.as_str()).is_ok());
            config.admin_listen_addr().expect("accepted admin_listen");
            assert_eq!(
                config.trusted_proxy_nets().len(),
                config.server.trusted_proxies.len()
            );
            let secrets = Secrets {
                lookup_password: Some(Secret::new("p")),
                identity_secret: Some(Secret::new("s")),
                service_password: Some(Secret::new("p")),
                service_token: Some(Secret::new("t")),
                postgres_url: None,
                smtp_url: None,
                webhook_secret: None,
            };
            if let Err(e) = CredentialSwap::new(&config, &secrets) {
                panic!("accepted config has unusable credentials: {e}");
            }
            let format = TokenFormat::new(&config.tokens.prefix);
            let token = format.generate().expect("randomness");
            assert_eq!(format.check(token.expose()), Ok(()));
        }
    }
});
