//! Who a management API caller is, asked of the upstream: the
//! password check, the browser session check, admin status and user-key
//! look-ups, for Jira and for Confluence. Answers are cached for
//! `identity_cache_seconds`, keyed by a salted SHA-256 of the credentials
//! (the `Authorization` value, or the `Cookie` header) — never the password
//! or cookie itself.

use std::sync::Arc;

use base64::Engine;
use http::header::{AUTHORIZATION, COOKIE, HeaderValue};
use http::{HeaderMap, StatusCode};
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::SessionCookie;
use crate::clock::SharedClock;
use crate::config::{AuthConfig, Config, Product, Secrets};
use crate::proxy::{Fetched, ProxyError, Upstream};

/// A management API caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub key: String,
    pub name: String,
    pub is_admin: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("the upstream refused the username or password")]
    BadCredentials,
    /// A 403 with `X-Authentication-Denied-Reason` (a CAPTCHA, say): passed on.
    #[error("the upstream denied the login ({reason})")]
    Denied { reason: String },
    #[error("looking up other users with a token needs upstream.lookup_user")]
    NoLookupAccount,
    #[error(transparent)]
    Upstream(#[from] ProxyError),
    #[error("unexpected answer from the upstream: {0}")]
    Unexpected(String),
}

/// Why the resolver cannot be built from a configuration.
#[derive(Debug, thiserror::Error)]
pub enum ResolverError {
    #[error("upstream.lookup_user cannot be sent in a header")]
    UnsendableLookupUser,
    /// The lookup password's variable was not read (see [`Config::secrets`]).
    #[error("upstream.lookup_password_env is not set")]
    MissingLookupPassword,
    #[error("no randomness: {0}")]
    Randomness(getrandom::Error),
}

/// Whose credentials a look-up uses.
#[derive(Debug, Clone, Copy)]
pub enum Creds<'a> {
    /// The caller's own `Authorization` (password callers).
    Caller(&'a HeaderValue),
    /// The caller's browser session with the upstream (its cookies).
    Session(&'a SessionCookie),
    /// The configured lookup account (token callers).
    Lookup,
}

pub struct IdentityResolver {
    upstream: Arc<Upstream>,
    product: Product,
    lookup: Option<HeaderValue>,
    cache: quick_cache::sync::Cache<[u8; 32], (u64, Arc<Identity>)>,
    admin_cache: quick_cache::sync::Cache<[u8; 32], (u64, bool)>,
    salt: [u8; 32],
    clock: SharedClock,
}

impl IdentityResolver {
    pub fn new(
        config: &Config,
        secrets: &Secrets,
        upstream: Arc<Upstream>,
        clock: SharedClock,
    ) -> Result<IdentityResolver, ResolverError> {
        let lookup = match (&*config.upstream.lookup_user, &secrets.lookup_password) {
            ("", _) => None,
            (user, Some(pw)) => {
                let encoded = base64::engine::general_purpose::STANDARD
                    .encode(format!("{user}:{}", pw.expose()));
                let mut v = HeaderValue::from_str(&format!("Basic {encoded}"))
                    .map_err(|_| ResolverError::UnsendableLookupUser)?;
                v.set_sensitive(true);
                Some(v)
            }
            (_, None) => return Err(ResolverError::MissingLookupPassword),
        };
        let mut salt = [0u8; 32];
        getrandom::fill(&mut salt).map_err(ResolverError::Randomness)?;
        Ok(IdentityResolver {
            upstream,
            product: config.upstream.product,
            lookup,
            cache: quick_cache::sync::Cache::new(10_000),
            admin_cache: quick_cache::sync::Cache::new(10_000),
            salt,
            clock,
        })
    }

    fn cache_key(&self, kind: &[u8], material: &[u8]) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(self.salt);
        h.update(kind);
        h.update([0]);
        h.update(material);
        h.finalize().into()
    }

    fn headers(&self, creds: Creds<'_>) -> Result<HeaderMap, IdentityError> {
        let mut h = HeaderMap::new();
        match creds {
            Creds::Caller(v) => h.insert(AUTHORIZATION, v.clone()),
            Creds::Session(cookie) => h.insert(COOKIE, cookie.expose().clone()),
            Creds::Lookup => h.insert(
                AUTHORIZATION,
                self.lookup.clone().ok_or(IdentityError::NoLookupAccount)?,
            ),
        };
        Ok(h)
    }

    async fn get_json(&self, path: &str, creds: Creds<'_>) -> Result<Option<Value>, IdentityError> {
        let Fetched {
            status,
            headers,
            body,
        } = self.upstream.fetch(path, self.headers(creds)?).await?;
        match status {
            s if s.is_success() => serde_json::from_slice(&body)
                .map(Some)
                .map_err(|e| IdentityError::Unexpected(format!("{path}: {e}"))),
            StatusCode::UNAUTHORIZED => Err(IdentityError::BadCredentials),
            StatusCode::FORBIDDEN => match headers.get("x-authentication-denied-reason") {
                Some(reason) => Err(IdentityError::Denied {
                    reason: String::from_utf8_lossy(reason.as_bytes()).into_owned(),
                }),
                None => Err(IdentityError::Unexpected(format!("{path}: 403"))),
            },
            StatusCode::NOT_FOUND => Ok(None),
            s => Err(IdentityError::Unexpected(format!("{path}: {s}"))),
        }
    }

    /// Checks a `Basic user:password` caller against the upstream and learns
    /// their key, name and admin status.
    pub async fn by_password(
        &self,
        authorization: &HeaderValue,
        auth: &AuthConfig,
    ) -> Result<Arc<Identity>, IdentityError> {
        let key = self.cache_key(b"password", authorization.as_bytes());
        self.who(key, Creds::Caller(authorization), auth).await
    }

    /// Asks the upstream who is logged in with the browser's cookies, with
    /// the same endpoints a password is checked with; a session the upstream
    /// does not know is [`IdentityError::BadCredentials`].
    pub async fn by_session(
        &self,
        cookie: &SessionCookie,
        auth: &AuthConfig,
    ) -> Result<Arc<Identity>, IdentityError> {
        let key = self.cache_key(b"session", cookie.expose().as_bytes());
        self.who(key, Creds::Session(cookie), auth).await
    }

    /// Who `creds` are (key, name, admin status), cached under `key`.
    async fn who(
        &self,
        key: [u8; 32],
        creds: Creds<'_>,
        auth: &AuthConfig,
    ) -> Result<Arc<Identity>, IdentityError> {
        let now = self.clock.now_ms();
        if let Some((expires, id)) = self.cache.get(&key)
            && expires > now
        {
            return Ok(id);
        }
        let (user_key, name) = match self.product {
            Product::Jira => {
                let me = self
                    .get_json("/rest/api/2/myself", creds)
                    .await?
                    .ok_or_else(|| IdentityError::Unexpected("/rest/api/2/myself: 404".into()))?;
                (text(&me, "key")?, text(&me, "name")?)
            }
            Product::Confluence => {
                let me = self
                    .get_json("/rest/api/user/current", creds)
                    .await?
                    .ok_or_else(|| {
                        IdentityError::Unexpected("/rest/api/user/current: 404".into())
                    })?;
                if me.get("type").and_then(Value::as_str) != Some("known") {
                    return Err(IdentityError::BadCredentials);
                }
                (text(&me, "userKey")?, text(&me, "username")?)
            }
        };
        let is_admin = if auth.admin_user_keys.contains(&user_key) {
            true
        } else {
            match self.product {
                Product::Jira => {
                    let p = self
                        .get_json("/rest/api/2/mypermissions?permissions=SYSTEM_ADMIN", creds)
                        .await?;
                    p.as_ref()
                        .and_then(|p| p.pointer("/permissions/SYSTEM_ADMIN/havePermission"))
                        .and_then(Value::as_bool)
                        .unwrap_or(false)
                }
                Product::Confluence => self.in_admin_group(&user_key, creds, auth).await?,
            }
        };
        let identity = Arc::new(Identity {
            key: user_key,
            name,
            is_admin,
        });
        if auth.identity_cache_seconds > 0 {
            let expires = now.saturating_add(auth.identity_cache_seconds.saturating_mul(1000));
            self.cache.insert(key, (expires, identity.clone()));
        }
        Ok(identity)
    }

    /// Admin status of a token's owner: `admin_user_keys`, or group
    /// membership asked with the lookup account. Without a lookup account,
    /// only `admin_user_keys` count.
    pub async fn token_owner_is_admin(
        &self,
        user_key: &str,
        auth: &AuthConfig,
    ) -> Result<bool, IdentityError> {
        if auth.admin_user_keys.iter().any(|k| k == user_key) {
            return Ok(true);
        }
        if self.lookup.is_none() {
            return Ok(false);
        }
        let key = self.cache_key(b"admin", user_key.as_bytes());
        let now = self.clock.now_ms();
        if let Some((expires, is_admin)) = self.admin_cache.get(&key)
            && expires > now
        {
            return Ok(is_admin);
        }
        let is_admin = self.in_admin_group(user_key, Creds::Lookup, auth).await?;
        if auth.identity_cache_seconds > 0 {
            let expires = now.saturating_add(auth.identity_cache_seconds.saturating_mul(1000));
            self.admin_cache.insert(key, (expires, is_admin));
        }
        Ok(is_admin)
    }

    async fn in_admin_group(
        &self,
        user_key: &str,
        creds: Creds<'_>,
        auth: &AuthConfig,
    ) -> Result<bool, IdentityError> {
        let k = utf8_percent_encode(user_key, NON_ALPHANUMERIC);
        let groups: Vec<String> = match self.product {
            Product::Jira => {
                let u = self
                    .get_json(&format!("/rest/api/2/user?key={k}&expand=groups"), creds)
                    .await?;
                names_at(u.as_ref(), "/groups/items")
            }
            Product::Confluence => {
                let m = self
                    .get_json(&format!("/rest/api/user/memberof?key={k}"), creds)
                    .await?;
                names_at(m.as_ref(), "/results")
            }
        };
        Ok(groups
            .iter()
            .any(|g| auth.admin_groups.iter().any(|a| a.eq_ignore_ascii_case(g))))
    }

    /// The username of a user key, or `None` when the upstream knows no such user.
    pub async fn username_for_key(
        &self,
        user_key: &str,
        creds: Creds<'_>,
    ) -> Result<Option<String>, IdentityError> {
        let k = utf8_percent_encode(user_key, NON_ALPHANUMERIC);
        let (path, field) = match self.product {
            Product::Jira => (format!("/rest/api/2/user?key={k}"), "name"),
            Product::Confluence => (format!("/rest/api/user?key={k}"), "username"),
        };
        match self.get_json(&path, creds).await? {
            Some(u) => text(&u, field).map(Some),
            None => Ok(None),
        }
    }
}

impl IdentityResolver {
    /// The mail address of a user key, asked with the lookup account (Jira:
    /// `emailAddress` of `/rest/api/2/user`; Confluence: the personal
    /// details of `/rest/api/user`). `None` when the user is unknown or the
    /// upstream tells no address (Jira hides it from whoever may not see it).
    pub async fn email_for_key(&self, user_key: &str) -> Result<Option<String>, IdentityError> {
        let k = utf8_percent_encode(user_key, NON_ALPHANUMERIC);
        let (path, pointers): (String, &[&str]) = match self.product {
            Product::Jira => (format!("/rest/api/2/user?key={k}"), &["/emailAddress"]),
            Product::Confluence => (
                format!("/rest/api/user?key={k}&expand=details.personal"),
                &["/details/personal/email", "/email"],
            ),
        };
        let Some(user) = self.get_json(&path, Creds::Lookup).await? else {
            return Ok(None);
        };
        Ok(pointers
            .iter()
            .filter_map(|p| user.pointer(p).and_then(Value::as_str))
            .map(str::trim)
            .find(|a| a.contains('@'))
            .map(str::to_string))
    }
}

fn text(v: &Value, field: &str) -> Result<String, IdentityError> {
    v.get(field)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .ok_or_else(|| IdentityError::Unexpected(format!("no {field:?} in the answer")))
}

fn names_at(v: Option<&Value>, pointer: &str) -> Vec<String> {
    v.and_then(|v| v.pointer(pointer))
        .and_then(Value::as_array)
        .map(|items| {
            items
                .iter()
                .filter_map(|g| g.get("name").and_then(Value::as_str).map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}
