//! `proxy.toml`: the typed configuration, its defaults, and the validation that
//! `tokengate check-config` and start-up share.
//!
//! Parsing collects *every* problem of a file (unknown key, wrong type, bad
//! value, and with [`Config::check`] a missing secret), each with its line, so
//! an operator fixes a file in one round. Secrets never live in the file: keys
//! ending in `_env` name an environment variable, read by [`Config::secrets`].

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use http::Uri;
use http::header::HeaderName;
use ipnet::IpNet;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use toml::Spanned;
use toml::de::{DeTable, DeValue};

use crate::secret::Secret;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: ServerConfig,
    pub upstream: UpstreamConfig,
    pub tokens: TokensConfig,
    pub auth: AuthConfig,
    pub log: LogConfig,
}

#[derive(Debug, Clone, Deserialize)]
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
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Product {
    Jira,
    Confluence,
}

#[derive(Debug, Clone, Deserialize)]
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
#[serde(rename_all = "lowercase")]
pub enum CredentialMode {
    Header,
    Basic,
    Bearer,
}

#[derive(Debug, Clone, Deserialize)]
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

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TokensConfig {
    pub store_path: PathBuf,
    pub prefix: String,
    pub default_validity_months: u32,
    pub max_validity_months: u32,
    pub max_tokens_per_user: u32,
    pub force_read_only: bool,
    pub allow_password_basic_auth: bool,
    pub last_access_flush_ms: u64,
}

impl Default for TokensConfig {
    fn default() -> Self {
        Self {
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

#[derive(Debug, Clone, Deserialize)]
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Deserialize)]
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

/// One thing wrong with a configuration file, with the line it is on when known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub line: Option<usize>,
    pub message: String,
}

/// Every problem found in one configuration source.
#[derive(Debug, Clone)]
pub struct ConfigError {
    pub source_name: String,
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            match p.line {
                Some(line) => write!(f, "{}:{}: {}", self.source_name, line, p.message)?,
                None => write!(f, "{}: {}", self.source_name, p.message)?,
            }
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// A file that passed [`Config::check`], with what is allowed but risky.
#[derive(Debug, Clone)]
pub struct Checked {
    pub config: Config,
    /// One line each, `file:line: warning: [table] key: message`.
    pub warnings: Vec<String>,
}

/// The environment a check reads secrets from.
pub type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

/// The upstream base URL taken apart once, for building requests cheaply.
#[derive(Debug, Clone)]
pub struct UpstreamUrl {
    pub scheme: http::uri::Scheme,
    pub authority: http::uri::Authority,
    /// Path prefix without a trailing slash ("" or "/jira").
    pub path_prefix: String,
}

/// Secrets named by `*_env` keys, read from the environment.
#[derive(Debug, Clone, Default)]
pub struct Secrets {
    pub lookup_password: Option<Secret>,
    pub identity_secret: Option<Secret>,
    pub service_password: Option<Secret>,
    pub service_token: Option<Secret>,
}

impl Config {
    /// Reads and validates a configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let (name, src) = read_source(path)?;
        Config::from_toml(&name, &src)
    }

    /// Parses and validates TOML text, collecting every problem.
    pub fn from_toml(source_name: &str, src: &str) -> Result<Config, ConfigError> {
        Config::parse(source_name, src, None).map(|checked| checked.config)
    }

    /// Reads a file as `check-config` and `serve` do: every problem of
    /// [`Config::from_toml`] and every missing secret together, plus warnings.
    pub fn check_file(path: &Path, env: Env<'_>) -> Result<Checked, ConfigError> {
        let (name, src) = read_source(path)?;
        Config::check(&name, &src, env)
    }

    /// [`Config::check_file`] on text.
    pub fn check(source_name: &str, src: &str, env: Env<'_>) -> Result<Checked, ConfigError> {
        Config::parse(source_name, src, Some(env))
    }

    fn parse(source_name: &str, src: &str, env: Option<Env<'_>>) -> Result<Checked, ConfigError> {
        let fail = |problems| ConfigError {
            source_name: source_name.to_string(),
            problems,
        };
        let doc = match DeTable::parse(src) {
            Ok(doc) => doc,
            Err(e) => {
                let line = e.span().map(|s| line_of(src, s.start));
                return Err(fail(vec![Problem {
                    line,
                    message: format!("not valid TOML: {}", e.message()),
                }]));
            }
        };
        let (mut problems, bad_keys) = check_keys_and_types(src, doc.get_ref());
        // Keys already reported are dropped, so the remaining checks still run on the rest.
        let mut clean = doc.get_ref().clone();
        for (section, key) in &bad_keys {
            remove_key(&mut clean, section, key);
        }
        let groups_given =
            lookup_table(&clean, "auth").is_some_and(|t| t.get("admin_groups").is_some());
        let mut config =
            match Config::deserialize(toml::de::Deserializer::from(Spanned::new(0..0, clean))) {
                Ok(c) => c,
                Err(e) => {
                    problems.push(Problem {
                        line: e.span().map(|s| line_of(src, s.start)),
                        message: e.message().to_string(),
                    });
                    return Err(fail(problems));
                }
            };
        if !groups_given {
            config.auth.admin_groups = default_admin_groups(config.upstream.product);
        }
        let at = |(table, key, message): (&str, &str, String)| Problem {
            line: locate(src, doc.get_ref(), table, key),
            message: format!("{}: {message}", key_label(table, key)),
        };
        problems.extend(config.semantic_problems().into_iter().map(at));
        if let Some(env) = env
            && let Err(missing) = config.secrets_with(env)
        {
            problems.extend(missing.into_iter().map(at));
        }
        if !problems.is_empty() {
            return Err(fail(problems));
        }
        let warnings = config
            .warnings()
            .into_iter()
            .map(|(table, key, message)| {
                // A warning may be about a key left at its default: then the table's line.
                let line = locate(src, doc.get_ref(), table, key).or_else(|| {
                    let (parent, name) = table.rsplit_once('.').unwrap_or(("", table));
                    match parent {
                        "" => doc.get_ref().get_key_value(name),
                        parent => lookup_table(doc.get_ref(), parent)?.get_key_value(name),
                    }
                    .map(|(k, _)| line_of(src, k.span().start))
                });
                let label = key_label(table, key);
                match line {
                    Some(line) => format!("{source_name}:{line}: warning: {label}: {message}"),
                    None => format!("{source_name}: warning: {label}: {message}"),
                }
            })
            .collect();
        Ok(Checked { config, warnings })
    }

    /// Settings that work but are risky; `check-config` and `serve` name them.
    /// Returns `(table, key, message)` triples.
    pub fn warnings(&self) -> Vec<(&'static str, &'static str, String)> {
        let mut out = Vec::new();
        let c = &self.upstream.credentials;
        let listen = self.server.listen;
        if c.mode == CredentialMode::Header
            && c.secret_header_name.is_empty()
            && !listen.ip().is_loopback()
        {
            out.push((
                "upstream.credentials",
                "secret_header_name",
                format!(
                    "mode \"header\" without a shared secret, and the gateway listens on {listen} \
                     (not loopback only): the upstream takes anyone who reaches it and sends \
                     {} for that user. Set secret_header_name and secret_env and make the \
                     upstream check the secret, or let nothing but tokengate reach the upstream \
                     (firewall, or an authenticator that trusts only tokengate's address)",
                    c.header_name
                ),
            ));
        }
        out
    }

    /// Checks that need more than the type: URLs, paths, ranges, combinations.
    /// Returns `(table, key, message)` triples.
    pub fn semantic_problems(&self) -> Vec<(&'static str, &'static str, String)> {
        let mut out = Vec::new();
        let mut bad = |t, k, m: String| out.push((t, k, m));
        let s = &self.server;
        if !s.public_url.is_empty() {
            match s.public_url.parse::<Uri>() {
                Ok(u)
                    if matches!(u.scheme_str(), Some("http" | "https"))
                        && u.authority().is_some() =>
                {
                    if let Some(Err(e)) = u.authority().map(|a| port_problem(&s.public_url, a)) {
                        bad("server", "public_url", e);
                    }
                }
                _ => bad(
                    "server",
                    "public_url",
                    format!("{:?} is not an http(s) URL", s.public_url),
                ),
            }
        }
        match (s.tls_cert.is_empty(), s.tls_key.is_empty()) {
            (true, true) => {}
            (false, false) => {
                for (key, path) in [("tls_cert", &s.tls_cert), ("tls_key", &s.tls_key)] {
                    if let Err(e) = std::fs::metadata(path) {
                        bad("server", key, format!("cannot read {path:?}: {e}"));
                    }
                }
            }
            (true, false) => bad(
                "server",
                "tls_cert",
                "must be set when tls_key is set".into(),
            ),
            (false, true) => bad(
                "server",
                "tls_key",
                "must be set when tls_cert is set".into(),
            ),
        }
        if let Err(e) = self.admin_listen_addr() {
            bad("server", "admin_listen", e);
        }
        for p in &s.trusted_proxies {
            if parse_cidr(p).is_none() {
                bad(
                    "server",
                    "trusted_proxies",
                    format!("{p:?} is not an IP address or CIDR"),
                );
            }
        }
        if s.header_read_timeout_ms == 0 {
            bad(
                "server",
                "header_read_timeout_ms",
                "must be greater than 0".into(),
            );
        }
        if s.idle_timeout_ms == 0 {
            bad("server", "idle_timeout_ms", "must be greater than 0".into());
        }
        if !(1024..=1_048_576).contains(&s.max_header_bytes) {
            bad(
                "server",
                "max_header_bytes",
                "must be between 1024 and 1048576".into(),
            );
        }
        if s.workers > 256 {
            bad("server", "workers", "must be at most 256".into());
        }
        if !(1..=1_000_000).contains(&s.max_connections) {
            bad(
                "server",
                "max_connections",
                "must be between 1 and 1000000".into(),
            );
        }
        if !(1024..=16_777_216).contains(&s.max_api_body_bytes) {
            bad(
                "server",
                "max_api_body_bytes",
                "must be between 1024 and 16777216".into(),
            );
        }

        let u = &self.upstream;
        if let Err(e) = self.upstream_url() {
            bad("upstream", "url", e);
        }
        if u.connect_timeout_ms == 0 {
            bad(
                "upstream",
                "connect_timeout_ms",
                "must be greater than 0".into(),
            );
        }
        if u.response_timeout_ms == 0 {
            bad(
                "upstream",
                "response_timeout_ms",
                "must be greater than 0".into(),
            );
        }
        if !u.ca_file.is_empty()
            && let Err(e) = std::fs::metadata(&u.ca_file)
        {
            bad(
                "upstream",
                "ca_file",
                format!("cannot read {:?}: {e}", u.ca_file),
            );
        }
        if u.lookup_user.is_empty() != u.lookup_password_env.is_empty() {
            bad(
                "upstream",
                "lookup_password_env",
                "lookup_user and lookup_password_env go together".into(),
            );
        }
        if u.lookup_user.contains(':') {
            bad("upstream", "lookup_user", "must not contain ':'".into());
        }

        let c = &u.credentials;
        if let Err(e) = header_name(&c.header_name) {
            bad("upstream.credentials", "header_name", e);
        }
        if c.secret_header_name.is_empty() != c.secret_env.is_empty() {
            bad(
                "upstream.credentials",
                "secret_env",
                "secret_header_name and secret_env go together".into(),
            );
        }
        if !c.secret_header_name.is_empty() {
            if let Err(e) = header_name(&c.secret_header_name) {
                bad("upstream.credentials", "secret_header_name", e);
            } else if normalize_header_name(&c.secret_header_name)
                == normalize_header_name(&c.header_name)
            {
                bad(
                    "upstream.credentials",
                    "secret_header_name",
                    "must differ from header_name".into(),
                );
            }
        }
        match c.mode {
            CredentialMode::Header => {}
            CredentialMode::Basic => {
                if c.username.is_empty() || c.username.contains(':') {
                    bad(
                        "upstream.credentials",
                        "username",
                        "mode \"basic\" needs a username without ':'".into(),
                    );
                }
                if c.password_env.is_empty() {
                    bad(
                        "upstream.credentials",
                        "password_env",
                        "mode \"basic\" needs password_env".into(),
                    );
                }
            }
            CredentialMode::Bearer => {
                if c.token_env.is_empty() {
                    bad(
                        "upstream.credentials",
                        "token_env",
                        "mode \"bearer\" needs token_env".into(),
                    );
                }
            }
        }
        let t = &self.tokens;
        if t.store_path.as_os_str().is_empty() {
            bad("tokens", "store_path", "must not be empty".into());
        }
        if t.prefix.is_empty()
            || t.prefix.len() > 16
            || !t.prefix.bytes().all(|b| b.is_ascii_alphanumeric())
        {
            bad(
                "tokens",
                "prefix",
                "must be 1 to 16 ASCII letters or digits".into(),
            );
        }
        if t.max_validity_months > 0 && t.default_validity_months == 0 {
            bad(
                "tokens",
                "default_validity_months",
                "0 (never expires) is only allowed when max_validity_months = 0".into(),
            );
        }
        if t.max_validity_months > 0 && t.default_validity_months > t.max_validity_months {
            bad(
                "tokens",
                "default_validity_months",
                "must not exceed max_validity_months".into(),
            );
        }
        if t.max_validity_months > 1200 {
            bad(
                "tokens",
                "max_validity_months",
                "must be at most 1200".into(),
            );
        }
        if t.default_validity_months > 1200 {
            bad(
                "tokens",
                "default_validity_months",
                "must be at most 1200".into(),
            );
        }
        if t.last_access_flush_ms < 100 {
            bad(
                "tokens",
                "last_access_flush_ms",
                "must be at least 100".into(),
            );
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log.level) {
            bad(
                "log",
                "level",
                format!("{:?} is not a log filter: {e}", self.log.level),
            );
        }
        out
    }

    fn secret_vars(&self) -> Vec<((&'static str, &'static str), &str)> {
        let u = &self.upstream;
        let c = &u.credentials;
        let mut v = Vec::new();
        if !u.lookup_password_env.is_empty() {
            v.push((
                ("upstream", "lookup_password_env"),
                u.lookup_password_env.as_str(),
            ));
        }
        if !c.secret_env.is_empty() {
            v.push((
                ("upstream.credentials", "secret_env"),
                c.secret_env.as_str(),
            ));
        }
        if c.mode == CredentialMode::Basic && !c.password_env.is_empty() {
            v.push((
                ("upstream.credentials", "password_env"),
                c.password_env.as_str(),
            ));
        }
        if c.mode == CredentialMode::Bearer && !c.token_env.is_empty() {
            v.push((("upstream.credentials", "token_env"), c.token_env.as_str()));
        }
        v
    }

    /// Reads the secrets named by `*_env` keys through `env` (the process
    /// environment in production). Every missing or unusable variable is a
    /// `(table, key, message)` problem.
    pub fn secrets_with(
        &self,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Secrets, Vec<(&'static str, &'static str, String)>> {
        let mut problems = Vec::new();
        let mut found = std::collections::HashMap::new();
        for ((table, key), var) in self.secret_vars() {
            match env(var) {
                Some(v) if v.is_empty() => {
                    problems.push((table, key, format!("environment variable {var} is empty")))
                }
                Some(v) if v.bytes().any(|b| b < 0x20 || b == 0x7f) => problems.push((
                    table,
                    key,
                    format!("environment variable {var} contains control characters"),
                )),
                Some(v) => {
                    found.insert(key, Secret::new(v));
                }
                None => {
                    problems.push((table, key, format!("environment variable {var} is not set")))
                }
            }
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(Secrets {
            lookup_password: found.remove("lookup_password_env"),
            identity_secret: found.remove("secret_env"),
            service_password: found.remove("password_env"),
            service_token: found.remove("token_env"),
        })
    }

    /// [`Config::secrets_with`] on the process environment.
    pub fn secrets(&self) -> Result<Secrets, Vec<(&'static str, &'static str, String)>> {
        self.secrets_with(&|var| std::env::var(var).ok())
    }

    /// Line of a key in the source text, for messages about it.
    pub fn line_of_key(src: &str, table: &str, key: &str) -> Option<usize> {
        let doc = DeTable::parse(src).ok()?;
        locate(src, doc.get_ref(), table, key)
    }

    /// `upstream.url` taken apart; the error says what is wrong with it.
    pub fn upstream_url(&self) -> Result<UpstreamUrl, String> {
        let raw = &self.upstream.url;
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

    /// `server.admin_listen` parsed; `None` when it is empty (admin listener off).
    pub fn admin_listen_addr(&self) -> Result<Option<SocketAddr>, String> {
        let raw = self.server.admin_listen.trim();
        if raw.is_empty() {
            return Ok(None);
        }
        let addr: SocketAddr = raw
            .parse()
            .map_err(|_| format!("{raw:?} is not an address like 127.0.0.1:9090"))?;
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

/// A configuration file's name (for messages) and text.
fn read_source(path: &Path) -> Result<(String, String), ConfigError> {
    let name = path.display().to_string();
    match std::fs::read_to_string(path) {
        Ok(src) => Ok((name, src)),
        Err(e) => Err(ConfigError {
            source_name: name,
            problems: vec![Problem {
                line: None,
                message: format!("cannot read the file: {e}"),
            }],
        }),
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

/// A port written in a URL must be 1 to 65535: `http::Uri` takes any digits,
/// and a URL it accepted would otherwise only fail at the first connection.
fn port_problem(raw: &str, authority: &http::uri::Authority) -> Result<(), String> {
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

/// Header names compare case-insensitively, and proxies in front of Jira treat
/// `_` and `.` like `-` (`X_Remote_User`, `x.remote.user`): one normal form.
pub fn normalize_header_name(name: &str) -> String {
    name.bytes()
        .map(|b| match b {
            b'_' | b'.' => '-',
            b => b.to_ascii_lowercase() as char,
        })
        .collect()
}

const RESERVED_HEADERS: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "cookie",
    "host",
    "connection",
    "keep-alive",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
    "content-type",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "forwarded",
];

fn header_name(name: &str) -> Result<HeaderName, String> {
    let parsed = HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| format!("{name:?} is not a header name"))?;
    if RESERVED_HEADERS.contains(&normalize_header_name(name).as_str()) {
        return Err(format!("{name:?} is a header tokengate manages itself"));
    }
    Ok(parsed)
}

fn key_label(table: &str, key: &str) -> String {
    format!("[{table}] {key}")
}

fn line_of(src: &str, offset: usize) -> usize {
    src.as_bytes()[..offset.min(src.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

type CheckFn = fn(DeTable<'_>) -> Result<(), toml::de::Error>;

fn check_as<T: DeserializeOwned>(table: DeTable<'_>) -> Result<(), toml::de::Error> {
    T::deserialize(toml::de::Deserializer::from(Spanned::new(0..0, table))).map(|_| ())
}

/// The tables of the file and the type that checks each; a nested table is
/// checked on its own, not as a key of its parent.
const SECTIONS: &[(&str, CheckFn)] = &[
    ("server", check_as::<ServerConfig>),
    ("upstream", check_as::<UpstreamConfig>),
    ("upstream.credentials", check_as::<CredentialsConfig>),
    ("tokens", check_as::<TokensConfig>),
    ("auth", check_as::<AuthConfig>),
    ("log", check_as::<LogConfig>),
];

/// Checks each key on its own, so that one file yields all its unknown keys and
/// type errors instead of the first only. Also returns the offending
/// `(table, key)` pairs (table "" for the top level).
fn check_keys_and_types(src: &str, doc: &DeTable<'_>) -> (Vec<Problem>, Vec<(String, String)>) {
    let mut problems = Vec::new();
    let mut bad = Vec::new();
    let known_top: Vec<&str> = SECTIONS
        .iter()
        .filter(|(n, _)| !n.contains('.'))
        .map(|(n, _)| *n)
        .collect();
    for (key, value) in doc.iter() {
        let name: &str = key.get_ref();
        if !known_top.contains(&name) {
            problems.push(Problem {
                line: Some(line_of(src, key.span().start)),
                message: format!(
                    "unknown table or key `{name}` (known tables: {})",
                    known_top.join(", ")
                ),
            });
            bad.push((String::new(), name.to_string()));
        } else if !value.get_ref().is_table() {
            problems.push(Problem {
                line: Some(line_of(src, key.span().start)),
                message: format!("`{name}` must be a table, [{name}]"),
            });
            bad.push((String::new(), name.to_string()));
        }
    }
    for (section, check) in SECTIONS {
        let Some(table) = lookup_table(doc, section) else {
            continue;
        };
        let nested: Vec<&str> = SECTIONS
            .iter()
            .filter_map(|(n, _)| n.strip_prefix(section).and_then(|r| r.strip_prefix('.')))
            .collect();
        for (key, value) in table.iter() {
            let name: &str = key.get_ref();
            if nested.contains(&name) && value.get_ref().is_table() {
                continue;
            }
            let mut single = DeTable::new();
            single.insert(key.clone(), value.clone());
            if let Err(e) = check(single) {
                let message = e.message();
                let message = if message.starts_with("unknown field") {
                    let expected = message
                        .split_once(", expected")
                        .map(|(_, r)| r.trim())
                        .unwrap_or("");
                    format!("unknown key `{name}` in [{section}] (expected {expected})")
                } else {
                    format!("{}: {message}", key_label(section, name))
                };
                problems.push(Problem {
                    line: Some(line_of(src, key.span().start)),
                    message,
                });
                bad.push((section.to_string(), name.to_string()));
            }
        }
    }
    (problems, bad)
}

fn remove_key(doc: &mut DeTable<'_>, section: &str, key: &str) {
    let mut table = doc;
    if !section.is_empty() {
        for part in section.split('.') {
            match table.get_mut(part).map(|v| v.get_mut()) {
                Some(DeValue::Table(t)) => table = t,
                _ => return,
            }
        }
    }
    table.remove(key);
}

fn lookup_table<'a, 'i>(doc: &'a DeTable<'i>, dotted: &str) -> Option<&'a DeTable<'i>> {
    let mut table = doc;
    for part in dotted.split('.') {
        match table.get(part).map(|v| v.get_ref()) {
            Some(DeValue::Table(t)) => table = t,
            _ => return None,
        }
    }
    Some(table)
}

fn locate(src: &str, doc: &DeTable<'_>, table: &str, key: &str) -> Option<usize> {
    let t = lookup_table(doc, table)?;
    t.iter()
        .find(|(k, _)| {
            let name: &str = k.get_ref();
            name == key
        })
        .map(|(k, _)| line_of(src, k.span().start))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        let c = Config::from_toml("empty", "").unwrap();
        assert_eq!(c.server.listen.port(), 8443);
        assert_eq!(c.tokens.prefix, "tg");
        assert_eq!(c.auth.admin_groups, vec!["jira-administrators".to_string()]);
    }

    #[test]
    fn admin_groups_default_by_product_and_an_explicit_list_wins() {
        let groups = |src: &str| Config::from_toml("f", src).unwrap().auth.admin_groups;
        assert_eq!(
            groups("[upstream]\nproduct = \"confluence\"\n"),
            vec!["confluence-administrators".to_string()]
        );
        assert_eq!(
            groups("[upstream]\nproduct = \"jira\"\n"),
            vec!["jira-administrators".to_string()]
        );
        assert_eq!(
            groups(
                "[upstream]\nproduct = \"confluence\"\n[auth]\nadmin_groups = [\"wiki-admins\"]\n"
            ),
            vec!["wiki-admins".to_string()]
        );
        assert!(groups("[auth]\nadmin_groups = []\n").is_empty());
    }

    #[test]
    fn a_port_out_of_range_is_a_problem() {
        for url in [
            "https://jira.example.com:99999",
            "https://jira.example.com:0",
            "https://jira.example.com:/jira",
        ] {
            let err =
                Config::from_toml("f", &format!("[upstream]\nurl = \"{url}\"\n")).unwrap_err();
            assert!(err.to_string().contains("f:2: [upstream] url:"), "{err}");
        }
        let err =
            Config::from_toml("f", "[server]\npublic_url = \"https://jira:70000\"\n").unwrap_err();
        assert!(err.to_string().contains("port 70000"), "{err}");
        assert!(Config::from_toml("f", "[upstream]\nurl = \"https://[::1]:8443/jira\"\n").is_ok());
    }

    #[test]
    fn a_missing_secret_is_reported_with_every_other_problem() {
        let src = "[upstream]\nurl = \"https://jira:99999\"\nbogus = 1\n[upstream.credentials]\nsecret_header_name = \"X-S\"\nsecret_env = \"UNSET_VAR\"\n";
        let err = Config::check("f", src, &|_| None).unwrap_err();
        let text = err.to_string();
        assert_eq!(err.problems.len(), 3, "{text}");
        assert!(text.contains("f:2: [upstream] url:"), "{text}");
        assert!(text.contains("f:3: unknown key `bogus`"), "{text}");
        assert!(
            text.contains(
                "f:6: [upstream.credentials] secret_env: environment variable UNSET_VAR is not set"
            ),
            "{text}"
        );
    }

    #[test]
    fn header_mode_without_a_secret_on_a_network_listener_is_warned_about() {
        let warnings = |src: &str| {
            Config::check("f", src, &|_| Some("x".into()))
                .unwrap()
                .warnings
        };
        let open = "[server]\nlisten = \"0.0.0.0:8443\"\n";
        let w = warnings(open);
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(
            w[0].starts_with("f: warning: [upstream.credentials] secret_header_name:"),
            "{w:?}"
        );
        let w = warnings(&format!(
            "{open}[upstream.credentials]\nmode = \"header\"\n"
        ));
        // The key is not in the file: its table's line.
        assert!(w[0].starts_with("f:3: warning:"), "{w:?}");
        assert!(warnings("[server]\nlisten = \"127.0.0.1:8443\"\n").is_empty());
        assert!(warnings("[server]\nlisten = \"[::1]:8443\"\n").is_empty());
        assert!(
            warnings(&format!(
                "{open}[upstream.credentials]\nsecret_header_name = \"X-S\"\nsecret_env = \"S\"\n"
            ))
            .is_empty()
        );
        assert!(
            warnings(&format!(
                "{open}[upstream.credentials]\nmode = \"bearer\"\ntoken_env = \"T\"\n"
            ))
            .is_empty()
        );
    }

    #[test]
    fn every_problem_reported_with_its_line() {
        let src = "[server]\nlisten = \"127.0.0.1:1\"\nbogus = 1\nidle_timeout_ms = \"x\"\n[upstream]\nurl = \"ftp://x\"\n";
        let err = Config::from_toml("f.toml", src).unwrap_err();
        let text = err.to_string();
        assert_eq!(err.problems.len(), 3, "{text}");
        assert!(
            text.contains("f.toml:3: unknown key `bogus` in [server]"),
            "{text}"
        );
        assert!(
            text.contains("f.toml:4: [server] idle_timeout_ms: invalid type"),
            "{text}"
        );
        assert!(
            text.contains("f.toml:6: [upstream] url: \"ftp://x\": scheme \"ftp\""),
            "{text}"
        );
    }

    #[test]
    fn nested_table_keys_checked() {
        let err = Config::from_toml(
            "f",
            "[upstream.credentials]\nmode = \"magic\"\nextra = true\n",
        )
        .unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("f:2: [upstream.credentials] mode: unknown variant `magic`"),
            "{text}"
        );
        assert!(
            text.contains("f:3: unknown key `extra` in [upstream.credentials]"),
            "{text}"
        );
    }

    #[test]
    fn header_spellings_normalise() {
        assert_eq!(normalize_header_name("X_Remote.User"), "x-remote-user");
    }

    #[test]
    fn upstream_prefix_trimmed() {
        let mut c = Config::default();
        c.upstream.url = "https://jira.example.com/jira/".into();
        let u = c.upstream_url().unwrap();
        assert_eq!(u.path_prefix, "/jira");
        assert_eq!(u.authority.as_str(), "jira.example.com");
    }
}
