//! The checks a typed [`Config`] must pass beyond its types: URLs, paths,
//! ranges and combinations, one function per table, plus the settings that
//! work but are risky ([`Config::warnings`]). Each finding is a [`Problem`]
//! of its table and key; [`load`](super::load) puts it on its line.

use std::fmt::Display;

use http::Uri;
use http::header::HeaderName;

use super::Problem;
use super::schema::{Config, CredentialMode, StoreBackend, port_problem};
use crate::header_names::{is_reserved, normalize_header_name};

impl Config {
    /// Checks that need more than the type: URLs, paths, ranges, combinations.
    pub fn semantic_problems(&self) -> Vec<Problem> {
        let mut out = Vec::new();
        server(self, &mut Table::new("server", &mut out));
        upstream(self, &mut Table::new("upstream", &mut out));
        credentials(self, &mut Table::new("upstream.credentials", &mut out));
        tokens(self, &mut Table::new("tokens", &mut out));
        log(self, &mut Table::new("log", &mut out));
        ui(self, &mut Table::new("ui", &mut out));
        notify(self, &mut Table::new("notify", &mut out));
        out
    }

    /// Settings that work but are risky; `check-config` and `serve` name them.
    pub fn warnings(&self) -> Vec<Problem> {
        let mut out = Vec::new();
        let n = &self.notify;
        if (!n.smtp_url_env.is_empty() || !n.webhook_url.is_empty())
            && self.server.public_url.is_empty()
        {
            out.push(Problem::at(
                "server",
                "public_url",
                "is empty: expiry notices cannot say at which address to make a new token",
            ));
        }
        let c = &self.upstream.credentials;
        let listen = self.server.listen;
        if c.mode == CredentialMode::Header
            && c.secret_header_name.is_empty()
            && !listen.ip().is_loopback()
        {
            out.push(Problem::at(
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
}

/// The problems found in one table.
struct Table<'a> {
    name: &'static str,
    out: &'a mut Vec<Problem>,
}

impl<'a> Table<'a> {
    fn new(name: &'static str, out: &'a mut Vec<Problem>) -> Table<'a> {
        Table { name, out }
    }

    fn bad(&mut self, key: &str, message: impl Into<String>) {
        self.out.push(Problem::at(self.name, key, message));
    }

    fn positive(&mut self, key: &str, value: u64) {
        if value == 0 {
            self.bad(key, "must be greater than 0");
        }
    }

    fn at_least<T: PartialOrd + Display>(&mut self, key: &str, value: T, min: T) {
        if value < min {
            self.bad(key, format!("must be at least {min}"));
        }
    }

    fn at_most<T: PartialOrd + Display>(&mut self, key: &str, value: T, max: T) {
        if value > max {
            self.bad(key, format!("must be at most {max}"));
        }
    }

    fn between<T: PartialOrd + Display>(&mut self, key: &str, value: T, min: T, max: T) {
        if value < min || value > max {
            self.bad(key, format!("must be between {min} and {max}"));
        }
    }

    /// A file named by `key` must exist (it is read at start, but a typo
    /// should show in `check-config`).
    fn readable(&mut self, key: &str, path: &str) {
        if let Err(e) = std::fs::metadata(path) {
            self.bad(key, format!("cannot read {path:?}: {e}"));
        }
    }

    fn push(&mut self, problem: Problem) {
        self.out.push(problem);
    }
}

fn server(c: &Config, t: &mut Table<'_>) {
    let s = &c.server;
    if !s.public_url.is_empty() {
        match s.public_url.parse::<Uri>() {
            Ok(u)
                if matches!(u.scheme_str(), Some("http" | "https")) && u.authority().is_some() =>
            {
                if let Some(Err(e)) = u.authority().map(|a| port_problem(&s.public_url, a)) {
                    t.bad("public_url", e);
                }
            }
            _ => t.bad(
                "public_url",
                format!("{:?} is not an http(s) URL", s.public_url),
            ),
        }
    }
    match (s.tls_cert.is_empty(), s.tls_key.is_empty()) {
        (true, true) => {}
        (false, false) => {
            t.readable("tls_cert", &s.tls_cert);
            t.readable("tls_key", &s.tls_key);
        }
        (true, false) => t.bad("tls_cert", "must be set when tls_key is set"),
        (false, true) => t.bad("tls_key", "must be set when tls_cert is set"),
    }
    if let Err(p) = c.admin_listen_addr() {
        t.push(p);
    }
    for p in &s.trusted_proxies {
        if super::parse_cidr(p).is_none() {
            t.bad(
                "trusted_proxies",
                format!("{p:?} is not an IP address or CIDR"),
            );
        }
    }
    t.positive("header_read_timeout_ms", s.header_read_timeout_ms);
    t.positive("idle_timeout_ms", s.idle_timeout_ms);
    t.between("max_header_bytes", s.max_header_bytes, 1024, 1_048_576);
    t.at_most("workers", s.workers, 256);
    t.between("max_connections", s.max_connections, 1, 1_000_000);
    t.between("max_api_body_bytes", s.max_api_body_bytes, 1024, 16_777_216);
}

fn upstream(c: &Config, t: &mut Table<'_>) {
    let u = &c.upstream;
    if let Err(p) = c.upstream_url() {
        t.push(p);
    }
    t.positive("connect_timeout_ms", u.connect_timeout_ms);
    t.positive("response_timeout_ms", u.response_timeout_ms);
    if !u.ca_file.is_empty() {
        t.readable("ca_file", &u.ca_file);
    }
    if u.lookup_user.is_empty() != u.lookup_password_env.is_empty() {
        t.bad(
            "lookup_password_env",
            "lookup_user and lookup_password_env go together",
        );
    }
    if u.lookup_user.contains(':') {
        t.bad("lookup_user", "must not contain ':'");
    }
}

fn credentials(c: &Config, t: &mut Table<'_>) {
    let c = &c.upstream.credentials;
    if let Err(e) = header_name(&c.header_name) {
        t.bad("header_name", e);
    }
    if c.secret_header_name.is_empty() != c.secret_env.is_empty() {
        t.bad(
            "secret_env",
            "secret_header_name and secret_env go together",
        );
    }
    if !c.secret_header_name.is_empty() {
        if let Err(e) = header_name(&c.secret_header_name) {
            t.bad("secret_header_name", e);
        } else if normalize_header_name(&c.secret_header_name)
            == normalize_header_name(&c.header_name)
        {
            t.bad("secret_header_name", "must differ from header_name");
        }
    }
    match c.mode {
        CredentialMode::Header => {}
        CredentialMode::Basic => {
            if c.username.is_empty() || c.username.contains(':') {
                t.bad("username", "mode \"basic\" needs a username without ':'");
            }
            if c.password_env.is_empty() {
                t.bad("password_env", "mode \"basic\" needs password_env");
            }
        }
        CredentialMode::Bearer => {
            if c.token_env.is_empty() {
                t.bad("token_env", "mode \"bearer\" needs token_env");
            }
        }
    }
}

/// A header the gateway sends upstream: a valid name, and none that the
/// gateway manages itself (in any spelling).
fn header_name(name: &str) -> Result<HeaderName, String> {
    let parsed = HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| format!("{name:?} is not a header name"))?;
    if is_reserved(&normalize_header_name(name)) {
        return Err(format!("{name:?} is a header tokengate manages itself"));
    }
    Ok(parsed)
}

fn tokens(c: &Config, t: &mut Table<'_>) {
    let k = &c.tokens;
    if k.store_path.as_os_str().is_empty() {
        t.bad("store_path", "must not be empty");
    }
    if k.prefix.is_empty()
        || k.prefix.len() > 16
        || !k.prefix.bytes().all(|b| b.is_ascii_alphanumeric())
    {
        t.bad("prefix", "must be 1 to 16 ASCII letters or digits");
    }
    if k.max_validity_months > 0 && k.default_validity_months == 0 {
        t.bad(
            "default_validity_months",
            "0 (never expires) is only allowed when max_validity_months = 0",
        );
    }
    if k.max_validity_months > 0 && k.default_validity_months > k.max_validity_months {
        t.bad(
            "default_validity_months",
            "must not exceed max_validity_months",
        );
    }
    t.at_most("max_validity_months", k.max_validity_months, 1200);
    t.at_most("default_validity_months", k.default_validity_months, 1200);
    t.at_least("last_access_flush_ms", k.last_access_flush_ms, 100);
    if k.backend == StoreBackend::Postgres {
        if k.postgres_url_env.is_empty() {
            t.bad(
                "postgres_url_env",
                "must name the environment variable that holds the database URL (postgres://user:password@host:5432/db) when backend = \"postgres\"",
            );
        }
        if !k.postgres_ca_file.as_os_str().is_empty() && !k.postgres_ca_file.is_file() {
            t.bad(
                "postgres_ca_file",
                format!("{} is not a readable file", k.postgres_ca_file.display()),
            );
        }
        if k.postgres_pool_size == 0 || k.postgres_pool_size > 1000 {
            t.bad("postgres_pool_size", "must be between 1 and 1000");
        }
    }
}

fn notify(c: &Config, t: &mut Table<'_>) {
    let n = &c.notify;
    if n.expiry_days.iter().any(|&d| d == 0 || d > 3650) {
        t.bad("expiry_days", "each must be from 1 to 3650 days");
    }
    t.between(
        "check_interval_seconds",
        n.check_interval_seconds,
        1,
        86_400,
    );
    if !n.webhook_url.is_empty() {
        match n.webhook_url.parse::<Uri>() {
            Ok(u)
                if matches!(u.scheme_str(), Some("http" | "https"))
                    && u.authority().is_some_and(|a| !a.as_str().contains('@')) =>
            {
                if let Some(Err(e)) = u.authority().map(|a| port_problem(&n.webhook_url, a)) {
                    t.bad("webhook_url", e);
                }
            }
            _ => t.bad(
                "webhook_url",
                "must be an http:// or https:// URL with a host and no user name or password",
            ),
        }
    } else if !n.webhook_secret_env.is_empty() {
        t.bad("webhook_secret_env", "is set but webhook_url is empty");
    }
    if !n.smtp_url_env.is_empty() {
        if n.mail_from.trim().is_empty() || !n.mail_from.contains('@') {
            t.bad(
                "mail_from",
                "must be the sender's address (tokengate@example.com, or \"Tokengate <tokengate@example.com>\") when smtp_url_env is set",
            );
        } else if n.mail_from.parse::<lettre::message::Mailbox>().is_err() {
            t.bad(
                "mail_from",
                format!("{:?} is not a mail address", n.mail_from),
            );
        }
        if c.upstream.lookup_user.is_empty() {
            t.bad(
                "smtp_url_env",
                "mail goes to the owner's address, which the upstream tells only the lookup account: set [upstream] lookup_user and lookup_password_env",
            );
        }
    }
}

fn log(c: &Config, t: &mut Table<'_>) {
    if let Err(e) = tracing_subscriber::EnvFilter::try_new(&c.log.level) {
        t.bad(
            "level",
            format!("{:?} is not a log filter: {e}", c.log.level),
        );
    }
}

/// The pages' path is a plain absolute path of its own: tokengate answers
/// everything under it, so it must not take over the upstream's REST API
/// (where its login check and the management API live) or the whole site.
fn ui(c: &Config, t: &mut Table<'_>) {
    let path = c.ui.path.trim_end_matches('/');
    let plain = path.starts_with('/')
        && path[1..].split('/').all(|segment| {
            !segment.is_empty()
                && segment != "."
                && segment != ".."
                && segment
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
        });
    if !plain {
        t.bad(
            "path",
            format!(
                "{:?} is not a path like \"/tokengate\": it must start with '/', not be '/' alone, and hold only letters, digits and -._~ between the slashes",
                c.ui.path
            ),
        );
    } else if path.eq_ignore_ascii_case("/rest")
        || path
            .get(..6)
            .is_some_and(|p| p.eq_ignore_ascii_case("/rest/"))
    {
        t.bad(
            "path",
            format!(
                "{:?} is under /rest, the upstream's REST API; choose a path of its own such as \"/tokengate\"",
                c.ui.path
            ),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(src: &str) -> Vec<String> {
        match Config::from_toml("f", src) {
            Ok(_) => Vec::new(),
            Err(e) => e.problems.iter().map(Problem::to_string).collect(),
        }
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
    fn a_public_url_must_be_an_http_url_with_a_host() {
        for url in ["ftp://jira", "/jira", "https:/jira"] {
            assert_eq!(
                problems(&format!("[server]\npublic_url = \"{url}\"\n")),
                [format!(
                    "[server] public_url: {url:?} is not an http(s) URL"
                )]
            );
        }
        assert!(problems("[server]\npublic_url = \"https://jira.example.com/\"\n").is_empty());
    }

    #[test]
    fn limits_say_their_range() {
        let said =
            |key: &str, value: &str| problems(&format!("[server]\n{key} = {value}\n")).join("\n");
        assert_eq!(
            said("idle_timeout_ms", "0"),
            "[server] idle_timeout_ms: must be greater than 0"
        );
        assert_eq!(
            said("max_header_bytes", "1023"),
            "[server] max_header_bytes: must be between 1024 and 1048576"
        );
        assert_eq!(
            said("workers", "257"),
            "[server] workers: must be at most 256"
        );
        assert_eq!(said("workers", "256"), "");
        assert_eq!(
            problems("[tokens]\nlast_access_flush_ms = 99\n"),
            ["[tokens] last_access_flush_ms: must be at least 100"]
        );
    }

    #[test]
    fn a_header_tokengate_manages_cannot_carry_the_identity() {
        for name in [
            "Authorization",
            "cookie",
            "X_Forwarded_For",
            "Transfer-Encoding",
            "Host",
        ] {
            assert_eq!(
                problems(&format!(
                    "[upstream.credentials]\nheader_name = \"{name}\"\n"
                )),
                [format!(
                    "[upstream.credentials] header_name: {name:?} is a header tokengate manages itself"
                )]
            );
        }
        assert_eq!(
            problems("[upstream.credentials]\nheader_name = \"X Remote\"\n"),
            ["[upstream.credentials] header_name: \"X Remote\" is not a header name"]
        );
        assert!(
            problems("[upstream.credentials]\nheader_name = \"X-Forwarded-User\"\n").is_empty()
        );
    }

    #[test]
    fn header_mode_without_a_secret_on_a_network_listener_is_warned_about() {
        let warnings = |src: &str| -> Vec<String> {
            let checked = Config::check("f", src, &|_| Some("x".into())).unwrap();
            checked.warning_lines().map(|w| w.to_string()).collect()
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
    fn the_pages_path_is_a_plain_path_of_its_own() {
        let said = |path: &str| problems(&format!("[ui]\npath = \"{path}\"\n"));
        for good in ["/tokengate", "/tokengate/", "/x/api-tokens", "/T_1.~"] {
            assert!(said(good).is_empty(), "{good}");
        }
        for bad in [
            "",
            "/",
            "tokengate",
            "/a//b",
            "/a/../b",
            "/a b",
            "/a%2fb",
            "/a;b",
        ] {
            let p = said(bad);
            assert_eq!(p.len(), 1, "{bad}: {p:?}");
            assert!(p[0].starts_with("[ui] path: "), "{p:?}");
        }
        for rest in ["/rest", "/REST/tokens", "/rest/de.resolution.apitokenauth"] {
            assert!(said(rest)[0].contains("under /rest"), "{rest}");
        }
        assert!(problems("[ui]\nenabled = false\n").is_empty());
    }

    #[test]
    fn header_spellings_normalise() {
        assert_eq!(normalize_header_name("X_Remote.User"), "x-remote-user");
    }
}
