//! What `proxy.toml` may say: one type per table, each with its defaults,
//! and the parsed forms of the settings written as text (URLs, addresses,
//! networks) that validation and start-up both use.

use std::net::SocketAddr;
use std::path::PathBuf;

use http::Uri;
use ipnet::IpNet;
use serde::Deserialize;

use super::Problem;
use crate::secret::Secret;

// `PartialEq` lets a reload compare whole tables (`state::restart_only`);
// `Serialize`, in tests only, lets a test visit every key.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: ServerConfig,
    pub upstream: UpstreamConfig,
    pub tokens: TokensConfig,
    pub auth: AuthConfig,
    pub log: LogConfig,
    pub ui: UiConfig,
    pub notify: NotifyConfig,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub public_url: String,
    pub tls_cert: String,
    pub tls_key: String,
    pub admin_listen: String,
    pub trusted_proxies: Vec<String>,
    pub header_read_timeout_ms: u64,
    /// The slowest a request body may arrive, counted over each
    /// `header_read_timeout_ms` the gateway waits for it; 0 = no minimum.
    pub min_body_bytes_per_second: u64,
    pub idle_timeout_ms: u64,
    pub max_header_bytes: usize,
    pub max_api_body_bytes: usize,
    pub shutdown_grace_ms: u64,
    /// Threads serving the public listener, each with its own event loop and
    /// upstream connections; 0 = one per CPU core.
    pub workers: usize,
    /// Connections each listener serves at once, over all its workers; more
    /// wait in the kernel's accept queue until one closes.
    pub max_connections: usize,
    /// Whether a listener without TLS also takes HTTP/2 sent with prior
    /// knowledge (h2c). Off: it speaks HTTP/1.1 only, one protocol fewer to
    /// attack and no protocol detection per connection. With TLS, HTTP/2 is
    /// offered by ALPN either way.
    pub h2c: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8443)),
            public_url: String::new(),
            tls_cert: String::new(),
            tls_key: String::new(),
            admin_listen: "127.0.0.1:9090".into(),
            trusted_proxies: Vec::new(),
            header_read_timeout_ms: 10_000,
            min_body_bytes_per_second: 500,
            idle_timeout_ms: 75_000,
            max_header_bytes: 16_384,
            max_api_body_bytes: 65_536,
            shutdown_grace_ms: 30_000,
            workers: 0,
            max_connections: 10_000,
            h2c: false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
#[serde(rename_all = "lowercase")]
pub enum Product {
    Jira,
    Confluence,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
#[serde(deny_unknown_fields, default)]
pub struct UpstreamConfig {
    pub url: String,
    pub product: Product,
    pub connect_timeout_ms: u64,
    pub response_timeout_ms: u64,
    pub preserve_host: bool,
    pub ca_file: String,
    pub lookup_user: String,
    pub lookup_password_env: String,
    pub credentials: CredentialsConfig,
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        Self {
            url: "http://127.0.0.1:8080".into(),
            product: Product::Jira,
            connect_timeout_ms: 5_000,
            response_timeout_ms: 60_000,
            preserve_host: false,
            ca_file: String::new(),
            lookup_user: String::new(),
            lookup_password_env: String::new(),
            credentials: CredentialsConfig::default(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
#[serde(rename_all = "lowercase")]
pub enum CredentialMode {
    Header,
    Basic,
    Bearer,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
#[serde(deny_unknown_fields, default)]
pub struct CredentialsConfig {
    pub mode: CredentialMode,
    pub header_name: String,
    pub secret_header_name: String,
    pub secret_env: String,
    pub username: String,
    pub password_env: String,
    pub token_env: String,
}

impl Default for CredentialsConfig {
    fn default() -> Self {
        Self {
            mode: CredentialMode::Header,
            header_name: "X-Remote-User".into(),
            secret_header_name: String::new(),
            secret_env: String::new(),
            username: String::new(),
            password_env: String::new(),
            token_env: String::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
#[serde(deny_unknown_fields, default)]
pub struct TokensConfig {
    pub backend: StoreBackend,
    pub store_path: PathBuf,
    pub prefix: String,
    pub default_validity_months: u32,
    pub max_validity_months: u32,
    pub max_tokens_per_user: u32,
    pub force_read_only: bool,
    pub allow_password_basic_auth: bool,
    pub last_access_flush_ms: u64,
    pub postgres_url_env: String,
    pub postgres_ca_file: PathBuf,
    pub postgres_pool_size: u32,
    pub cache_max_stale_ms: u64,
}

/// Where tokens are kept: an embedded sled store (one gateway), or a
/// PostgreSQL database shared by several gateways.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
#[serde(rename_all = "lowercase")]
pub enum StoreBackend {
    Sled,
    Postgres,
}

impl Default for TokensConfig {
    fn default() -> Self {
        Self {
            backend: StoreBackend::Sled,
            postgres_url_env: String::new(),
            postgres_ca_file: PathBuf::new(),
            postgres_pool_size: 16,
            cache_max_stale_ms: 30_000,
            store_path: PathBuf::from("data/tokens.sled"),
            prefix: "tg".into(),
            default_validity_months: 6,
            max_validity_months: 12,
            max_tokens_per_user: 50,
            force_read_only: false,
            allow_password_basic_auth: true,
            last_access_flush_ms: 5_000,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    pub max_failed_attempts: u32,
    pub lockout_seconds: u64,
    pub failures_per_ip_per_minute: u32,
    pub admin_user_keys: Vec<String>,
    pub admin_groups: Vec<String>,
    pub identity_cache_seconds: u64,
    pub reject_unknown_schemes: bool,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            max_failed_attempts: 3,
            lockout_seconds: 900,
            failures_per_ip_per_minute: 30,
            admin_user_keys: Vec::new(),
            admin_groups: default_admin_groups(Product::Jira),
            identity_cache_seconds: 60,
            reject_unknown_schemes: false,
        }
    }
}

/// Administrators' groups when `auth.admin_groups` is not set: the product's
/// own administrators group.
pub fn default_admin_groups(product: Product) -> Vec<String> {
    match product {
        Product::Jira => vec!["jira-administrators".into()],
        Product::Confluence => vec!["confluence-administrators".into()],
    }
}

/// Notices to token owners: before a token expires, and when one is made
/// for their account.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
#[serde(deny_unknown_fields, default)]
pub struct NotifyConfig {
    /// A notice this many days before `validUntil`; empty = none.
    pub expiry_days: Vec<u32>,
    /// A notice when a token is created for the owner's account.
    pub on_create: bool,
    /// JSON POST of each notice here; empty = no webhook.
    pub webhook_url: String,
    /// The variable holding the webhook's HMAC-SHA256 key; empty = unsigned.
    pub webhook_secret_env: String,
    /// The variable holding `smtp://user:pass@host:587` (STARTTLS) or
    /// `smtps://user:pass@host:465` (TLS); empty = no mail.
    pub smtp_url_env: String,
    pub mail_from: String,
    /// How often tokens are checked for coming expiry.
    pub check_interval_seconds: u64,
}

impl Default for NotifyConfig {
    fn default() -> Self {
        Self {
            expiry_days: vec![14, 3, 1],
            on_create: true,
            webhook_url: String::new(),
            webhook_secret_env: String::new(),
            smtp_url_env: String::new(),
            mail_from: String::new(),
            check_interval_seconds: 3600,
        }
    }
}

/// How mail reaches the SMTP server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpTls {
    /// `smtp://`: plain connection, then STARTTLS (required).
    StartTls,
    /// `smtps://`: TLS from the first byte.
    Implicit,
}

/// `[notify] smtp_url_env`'s URL taken apart. `Debug` never shows the password.
#[derive(Clone, PartialEq, Eq)]
pub struct SmtpUrl {
    pub tls: SmtpTls,
    pub host: String,
    pub port: u16,
    pub user: Option<String>,
    pub password: Option<Secret>,
}

impl std::fmt::Debug for SmtpUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpUrl")
            .field("tls", &self.tls)
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "[REDACTED]"))
            .finish()
    }
}

impl SmtpUrl {
    /// Reads `smtp://[user[:password]@]host[:port]` (port 587, STARTTLS) or
    /// `smtps://…` (port 465, TLS); user and password percent-encoded. The
    /// error says what is wrong without repeating the URL (it holds the
    /// password).
    pub fn parse(url: &str) -> Result<SmtpUrl, String> {
        let url = url.trim();
        let (tls, rest, default_port) = if let Some(rest) = strip_scheme(url, "smtp://") {
            (SmtpTls::StartTls, rest, 587)
        } else if let Some(rest) = strip_scheme(url, "smtps://") {
            (SmtpTls::Implicit, rest, 465)
        } else {
            return Err(
                "is not an SMTP URL: it must start with smtp:// (STARTTLS, port 587) or smtps:// (TLS, port 465)"
                    .into(),
            );
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains(['/', '?', '#']) {
            return Err(
                "has a path or query; only smtp(s)://user:password@host:port is read".into(),
            );
        }
        let (userinfo, hostport) = match rest.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, rest),
        };
        let decode = |s: &str| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8()
                .map(|c| c.into_owned())
                .map_err(|_| {
                    "has a user name or password that is not UTF-8 once %-decoded".to_string()
                })
        };
        let (user, password) = match userinfo {
            None => (None, None),
            Some(info) => {
                let (user, password) = match info.split_once(':') {
                    Some((u, p)) => (u, Some(p)),
                    None => (info, None),
                };
                let user = decode(user)?;
                if user.is_empty() {
                    return Err("has a password but no user name".into());
                }
                (
                    Some(user),
                    password.map(decode).transpose()?.map(Secret::new),
                )
            }
        };
        let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
            let (host, after) = v6
                .split_once(']')
                .ok_or("has an IPv6 address without its closing ]")?;
            (host.to_string(), after.strip_prefix(':'))
        } else {
            match hostport.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), Some(p)),
                None => (hostport.to_string(), None),
            }
        };
        if host.is_empty() || host.contains(|c: char| c.is_whitespace() || c.is_control()) {
            return Err("has no host name".into());
        }
        let port = match port {
            None => default_port,
            Some(p) => match p.parse::<u16>() {
                Ok(n) if n > 0 => n,
                _ => return Err("has a port that is not a number from 1 to 65535".into()),
            },
        };
        Ok(SmtpUrl {
            tls,
            host,
            port,
            user,
            password,
        })
    }
}

fn strip_scheme<'a>(url: &'a str, scheme: &str) -> Option<&'a str> {
    url.get(..scheme.len())
        .filter(|s| s.eq_ignore_ascii_case(scheme))
        .map(|_| &url[scheme.len()..])
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    pub format: LogFormat,
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            level: "info".into(),
        }
    }
}

/// tokengate's own pages (the tokens of the browser's user, and an admin
/// console), served on the public listener under `path`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
#[serde(deny_unknown_fields, default)]
pub struct UiConfig {
    pub enabled: bool,
    /// Where the pages are: `/tokengate` serves `/tokengate/` and
    /// `/tokengate/admin`; never forwarded while `enabled`.
    pub path: String,
}

impl Default for UiConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            path: "/tokengate".into(),
        }
    }
}

impl UiConfig {
    /// The pages' root without a trailing `/`, when they are served.
    pub fn root(&self) -> Option<String> {
        self.enabled
            .then(|| self.path.trim_end_matches('/').to_string())
    }
}

/// The upstream base URL taken apart once, for building requests cheaply.
#[derive(Debug, Clone)]
pub struct UpstreamUrl {
    pub scheme: http::uri::Scheme,
    pub authority: http::uri::Authority,
    /// Path prefix without a trailing slash ("" or "/jira").
    pub path_prefix: String,
}

impl Config {
    /// `upstream.url` taken apart; the problem says what is wrong with it.
    pub fn upstream_url(&self) -> Result<UpstreamUrl, Problem> {
        let raw = &self.upstream.url;
        parse_upstream_url(raw).map_err(|message| Problem::at("upstream", "url", message))
    }

    /// `server.admin_listen` parsed; `None` when it is empty (admin listener off).
    pub fn admin_listen_addr(&self) -> Result<Option<SocketAddr>, Problem> {
        let raw = self.server.admin_listen.trim();
        if raw.is_empty() {
            return Ok(None);
        }
        let addr: SocketAddr = raw.parse().map_err(|_| {
            Problem::at(
                "server",
                "admin_listen",
                format!("{raw:?} is not an address like 127.0.0.1:9090"),
            )
        })?;
        Ok(Some(addr))
    }

    /// How many workers serve the public listener.
    pub fn worker_count(&self) -> usize {
        match self.server.workers {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        }
    }

    /// `server.trusted_proxies` as networks (invalid entries were rejected by validation).
    pub fn trusted_proxy_nets(&self) -> Vec<IpNet> {
        self.server
            .trusted_proxies
            .iter()
            .filter_map(|p| parse_cidr(p))
            .collect()
    }
}

fn parse_upstream_url(raw: &str) -> Result<UpstreamUrl, String> {
    let uri: Uri = raw
        .parse()
        .map_err(|e| format!("{raw:?} is not a URL: {e}"))?;
    let scheme = match uri.scheme_str() {
        Some("http" | "https") => uri.scheme().cloned(),
        Some(other) => return Err(format!("{raw:?}: scheme {other:?} is not http or https")),
        None => None,
    }
    .ok_or_else(|| format!("{raw:?} needs a scheme, http:// or https://"))?;
    let authority = uri
        .authority()
        .cloned()
        .ok_or_else(|| format!("{raw:?} has no host"))?;
    if authority.as_str().contains('@') {
        return Err(format!(
            "{raw:?}: credentials in the URL are not allowed; use [upstream.credentials]"
        ));
    }
    if authority.host().is_empty() {
        return Err(format!("{raw:?} has no host"));
    }
    port_problem(raw, &authority)?;
    if uri.query().is_some() {
        return Err(format!("{raw:?}: a query string is not allowed"));
    }
    let path_prefix = uri.path().trim_end_matches('/').to_string();
    Ok(UpstreamUrl {
        scheme,
        authority,
        path_prefix,
    })
}

/// A port written in a URL must be 1 to 65535: `http::Uri` takes any digits,
/// and a URL it accepted would otherwise only fail at the first connection.
pub(super) fn port_problem(raw: &str, authority: &http::uri::Authority) -> Result<(), String> {
    let text = authority.as_str();
    // After an IPv6 literal's ']', or anywhere in a name or IPv4 address.
    let after_host = text.rfind(']').map_or(text, |i| &text[i + 1..]);
    let Some((_, port)) = after_host.rsplit_once(':') else {
        return Ok(());
    };
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok(()),
        _ if port.is_empty() => Err(format!("{raw:?}: the port after ':' is missing")),
        _ => Err(format!("{raw:?}: port {port} is not between 1 and 65535")),
    }
}

/// An IP address (taken as a single host) or a CIDR.
pub fn parse_cidr(s: &str) -> Option<IpNet> {
    let s = s.trim();
    s.parse::<IpNet>()
        .ok()
        .or_else(|| s.parse::<std::net::IpAddr>().ok().map(IpNet::from))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_prefix_trimmed() {
        let mut c = Config::default();
        c.upstream.url = "https://jira.example.com/jira/".into();
        let u = c.upstream_url().unwrap();
        assert_eq!(u.path_prefix, "/jira");
        assert_eq!(u.authority.as_str(), "jira.example.com");
    }

    #[test]
    fn smtp_urls_are_read_and_their_errors_never_repeat_them() {
        let u = SmtpUrl::parse("smtp://mailer%40corp:p%3Ass@mail.example.com").unwrap();
        assert_eq!(
            (u.tls, u.host.as_str(), u.port),
            (SmtpTls::StartTls, "mail.example.com", 587)
        );
        assert_eq!(u.user.as_deref(), Some("mailer@corp"));
        assert_eq!(u.password.as_ref().map(Secret::expose), Some("p:ss"));
        assert!(!format!("{u:?}").contains("p:ss"));
        let u = SmtpUrl::parse("SMTPS://[::1]:2465/").unwrap();
        assert_eq!(
            (u.tls, u.host.as_str(), u.port, u.user),
            (SmtpTls::Implicit, "::1", 2465, None)
        );
        for bad in [
            "http://u:hunter2@mail",
            "smtp://u:hunter2@",
            "smtp://u:hunter2@mail:99999",
            "smtp://u:hunter2@mail:x",
            "smtp://:hunter2@mail",
            "smtp://u:hunter2@mail/path",
            "hunter2",
        ] {
            let e = SmtpUrl::parse(bad).unwrap_err();
            assert!(!e.contains("hunter2"), "{bad}: {e}");
        }
    }

    #[test]
    fn a_bad_admin_listen_address_names_its_key() {
        let mut c = Config::default();
        c.server.admin_listen = "localhost".into();
        let p = c.admin_listen_addr().unwrap_err();
        assert_eq!(
            (p.table.as_str(), p.key.as_str()),
            ("server", "admin_listen")
        );
        c.server.admin_listen = " ".into();
        assert_eq!(c.admin_listen_addr().unwrap(), None);
    }
}
