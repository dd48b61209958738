//! The credential swap: what the upstream receives in place of a
//! valid token. Header values are built once at start-up (and on reload);
//! the per-request username goes through `HeaderValue`, which refuses CR, LF
//! and NUL, so nothing can be injected.

use base64::Engine;
use http::HeaderMap;
use http::header::{AUTHORIZATION, COOKIE, HeaderName, HeaderValue};

use crate::config::{Config, CredentialMode, Secrets};
use crate::proxy::headers::ProtectedNames;
use crate::secret::Secret;

#[derive(Debug, Clone)]
pub struct CredentialSwap {
    identity_header: HeaderName,
    /// `secret_header_name: <secret>` for header-based SSO; value marked sensitive.
    secret: Option<(HeaderName, HeaderValue)>,
    /// Service-account `Authorization` (basic / bearer modes); sensitive.
    authorization: Option<HeaderValue>,
    protected: ProtectedNames,
}

/// Why the credential swap cannot be built from a configuration.
#[derive(Debug, thiserror::Error)]
pub enum SwapError {
    #[error("{0:?} is not a header name")]
    HeaderName(String),
    #[error("a credential contains characters not allowed in a header")]
    Unsendable,
    /// The secret's `*_env` variable was not read (see [`Config::secrets`]).
    #[error("environment variable {0} is not set")]
    MissingSecret(String),
}

/// The username cannot go into a header (a control character).
#[derive(Debug, thiserror::Error)]
#[error("the username cannot be sent in a header")]
pub struct UnsendableUser;

impl CredentialSwap {
    pub fn new(config: &Config, secrets: &Secrets) -> Result<CredentialSwap, SwapError> {
        let c = &config.upstream.credentials;
        let name = |n: &str| {
            HeaderName::from_bytes(n.as_bytes()).map_err(|_| SwapError::HeaderName(n.into()))
        };
        let sensitive = |v: &str| {
            HeaderValue::from_str(v)
                .map(|mut v| {
                    v.set_sensitive(true);
                    v
                })
                .map_err(|_| SwapError::Unsendable)
        };
        let secret = match &*c.secret_header_name {
            "" => None,
            n => Some((
                name(n)?,
                sensitive(required(&secrets.identity_secret, &c.secret_env)?.expose())?,
            )),
        };
        let authorization = match c.mode {
            CredentialMode::Header => None,
            CredentialMode::Basic => {
                let password = required(&secrets.service_password, &c.password_env)?;
                let pair = format!("{}:{}", c.username, password.expose());
                Some(sensitive(&format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(pair)
                ))?)
            }
            CredentialMode::Bearer => {
                let token = required(&secrets.service_token, &c.token_env)?;
                Some(sensitive(&format!("Bearer {}", token.expose()))?)
            }
        };
        Ok(CredentialSwap {
            identity_header: name(&c.header_name)?,
            protected: ProtectedNames::new([c.header_name.as_str(), c.secret_header_name.as_str()]),
            secret,
            authorization,
        })
    }

    /// Header names no client may send upstream, in any spelling.
    pub fn protected(&self) -> &ProtectedNames {
        &self.protected
    }

    pub fn identity_header(&self) -> &HeaderName {
        &self.identity_header
    }

    /// Replaces the client's credentials by ours for `username`. Call after
    /// the hop-by-hop and protected-name stripping of the rewrite, so a
    /// `Connection` header cannot remove what is injected here.
    pub fn apply(&self, headers: &mut HeaderMap, username: &str) -> Result<(), UnsendableUser> {
        let user = HeaderValue::from_str(username)
            .or_else(|_| HeaderValue::from_bytes(username.as_bytes()))
            .map_err(|_| UnsendableUser)?;
        headers.remove(AUTHORIZATION);
        headers.remove(COOKIE);
        self.protected.strip(headers);
        headers.insert(self.identity_header.clone(), user);
        if let Some((name, value)) = &self.secret {
            headers.insert(name.clone(), value.clone());
        }
        if let Some(auth) = &self.authorization {
            headers.insert(AUTHORIZATION, auth.clone());
        }
        Ok(())
    }
}

/// A secret the configuration names, or which variable it should have come from.
fn required<'a>(secret: &'a Option<Secret>, var: &str) -> Result<&'a Secret, SwapError> {
    secret
        .as_ref()
        .ok_or_else(|| SwapError::MissingSecret(var.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn swap(mode: &str, extra: &str, secrets: Secrets) -> CredentialSwap {
        let src = format!("[upstream.credentials]\nmode = \"{mode}\"\n{extra}");
        CredentialSwap::new(&Config::from_toml("test", &src).unwrap(), &secrets).unwrap()
    }

    fn client_headers() -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(AUTHORIZATION, HeaderValue::from_static("Bearer tg_x"));
        h.insert(COOKIE, HeaderValue::from_static("JSESSIONID=1"));
        h.insert("x_remote_user", HeaderValue::from_static("admin"));
        h
    }

    #[test]
    fn header_mode_sends_the_identity_only() {
        let s = swap("header", "", Secrets::default());
        let mut h = client_headers();
        s.apply(&mut h, "alice").unwrap();
        assert_eq!(h.len(), 1);
        assert_eq!(h["x-remote-user"], "alice");
    }

    #[test]
    fn header_mode_with_a_shared_secret() {
        let secrets = Secrets {
            identity_secret: Some(Secret::new("gw-secret")),
            ..Secrets::default()
        };
        let s = swap(
            "header",
            "secret_header_name = \"X-Gateway-Secret\"\nsecret_env = \"S\"\n",
            secrets,
        );
        let mut h = client_headers();
        h.insert("x.gateway.secret", HeaderValue::from_static("forged"));
        s.apply(&mut h, "alice").unwrap();
        assert_eq!(h.get_all("x-gateway-secret").iter().count(), 1);
        assert_eq!(h["x-gateway-secret"], "gw-secret");
        assert!(!h.contains_key("x.gateway.secret"));
    }

    #[test]
    fn basic_mode_sends_the_service_account() {
        let secrets = Secrets {
            service_password: Some(Secret::new("s3cret")),
            ..Secrets::default()
        };
        let s = swap(
            "basic",
            "username = \"svc\"\npassword_env = \"P\"\n",
            secrets,
        );
        let mut h = client_headers();
        s.apply(&mut h, "alice").unwrap();
        assert_eq!(h[AUTHORIZATION], "Basic c3ZjOnMzY3JldA==");
        assert!(h[AUTHORIZATION].is_sensitive());
        assert_eq!(h["x-remote-user"], "alice");
        assert!(!h.contains_key(COOKIE));
    }

    #[test]
    fn bearer_mode_sends_the_service_token() {
        let secrets = Secrets {
            service_token: Some(Secret::new("pat-123")),
            ..Secrets::default()
        };
        let s = swap("bearer", "token_env = \"T\"\n", secrets);
        let mut h = client_headers();
        s.apply(&mut h, "alice").unwrap();
        assert_eq!(h[AUTHORIZATION], "Bearer pat-123");
        assert_eq!(h["x-remote-user"], "alice");
    }

    #[test]
    fn a_username_with_a_newline_is_refused() {
        let s = swap("header", "", Secrets::default());
        let mut h = HeaderMap::new();
        assert!(s.apply(&mut h, "alice\r\nX-Admin: 1").is_err());
        assert!(s.apply(&mut h, "bad\0").is_err());
        assert!(h.is_empty());
    }
}
