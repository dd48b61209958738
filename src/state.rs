//! What the gateway shares between all connections and workers: the
//! settings a reload replaces ([`Live`]), the store, the authentication
//! policy, metrics, and the reload itself. The request flow that uses it is
//! in `gateway`; the management API reads it too.

use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::auth::identity::{IdentityResolver, ResolverError};
use crate::auth::policy::Authenticator;
use crate::auth::swap::{CredentialSwap, SwapError};
use crate::clock::SharedClock;
use crate::config::{self, Config, CredentialMode, Env, Problem};
use crate::metrics::Metrics;
use crate::net::TrustedProxies;
use crate::notify;
use crate::proxy::Upstream;
use crate::store::StoreCell;

/// What a reload (SIGHUP) replaces while connections stay up: token rules,
/// upstream credentials, the lookup account and the notices (the
/// authentication rules are the [`Authenticator`]'s, reloaded with it).
pub struct Live {
    pub config: Config,
    pub swap: CredentialSwap,
    pub identity: IdentityResolver,
    pub notify: Arc<notify::Settings>,
}

/// Why the settings a reload replaces cannot be built from a configuration.
#[derive(Debug, thiserror::Error)]
pub enum LiveError {
    /// Secrets named by `*_env` keys that are missing or unusable.
    #[error("{}", config::one_line(.0))]
    Secrets(Vec<Problem>),
    #[error(transparent)]
    Credentials(#[from] SwapError),
    #[error(transparent)]
    Identity(#[from] ResolverError),
    #[error(transparent)]
    Notify(#[from] notify::ChannelSetupError),
}

impl Live {
    pub fn build(
        config: &Config,
        env: Env<'_>,
        upstream: Arc<Upstream>,
        clock: SharedClock,
    ) -> Result<Live, LiveError> {
        let secrets = config.secrets_with(env).map_err(LiveError::Secrets)?;
        Ok(Live {
            swap: CredentialSwap::new(config, &secrets)?,
            identity: IdentityResolver::new(config, &secrets, upstream, clock)?,
            notify: Arc::new(notify::Settings::new(config, &secrets)?),
            config: config.clone(),
        })
    }
}

/// What of `config` only a restart applies: `config` with every setting a
/// reload applies (the list here) blanked. Every other field stays, so a
/// field added to any table needs a restart until it is made live and
/// blanked here.
fn restart_part(config: &Config) -> Config {
    let mut c = config.clone();
    // The lookup account and the upstream credentials: rebuilt in `Live`.
    let u = &mut c.upstream;
    u.lookup_user.clear();
    u.lookup_password_env.clear();
    let cr = &mut u.credentials;
    cr.mode = CredentialMode::Header;
    for text in [
        &mut cr.header_name,
        &mut cr.secret_header_name,
        &mut cr.secret_env,
        &mut cr.username,
        &mut cr.password_env,
        &mut cr.token_env,
    ] {
        text.clear();
    }
    // Token rules: read from `Live`'s configuration where they are used.
    let t = &mut c.tokens;
    t.default_validity_months = 0;
    t.max_validity_months = 0;
    t.max_tokens_per_user = 0;
    t.force_read_only = false;
    t.allow_password_basic_auth = false;
    t.last_access_flush_ms = 0;
    // The authentication rules (`Authenticator::reload`), and the admin and
    // identity settings read from `Live`'s configuration.
    let a = &mut c.auth;
    a.max_failed_attempts = 0;
    a.lockout_seconds = 0;
    a.failures_per_ip_per_minute = 0;
    a.admin_user_keys.clear();
    a.admin_groups.clear();
    a.identity_cache_seconds = 0;
    a.reject_unknown_schemes = false;
    // The log level: the command's reload changes the filter.
    c.log.level.clear();
    // Notices: the notifier reads `Live`'s settings at every step.
    c.notify = crate::config::NotifyConfig::default();
    c
}

/// The changes from `old` to `new` that take effect only after a restart,
/// one label a table, naming the table's keys that need one.
fn restart_only(old: &Config, new: &Config) -> Vec<&'static str> {
    let (o, n) = (restart_part(old), restart_part(new));
    [
        (o.server != n.server, "[server]"),
        (
            o.upstream != n.upstream,
            "[upstream] url, product, connect_timeout_ms, response_timeout_ms, preserve_host, ca_file",
        ),
        (
            o.tokens != n.tokens,
            "[tokens] backend, store_path, prefix, postgres_url_env, postgres_ca_file, postgres_pool_size, cache_max_stale_ms",
        ),
        (o.auth != n.auth, "[auth]"),
        (o.log != n.log, "[log] format"),
        (o.ui != n.ui, "[ui]"),
    ]
    .into_iter()
    .filter_map(|(changed, label)| changed.then_some(label))
    .collect()
}

/// Everything a request needs, shared by all connections.
pub struct Gateway {
    pub(crate) live: ArcSwap<Live>,
    /// For the gateway's own calls (identity look-ups, readiness); each
    /// worker forwards through its own pool (`gateway::Worker`).
    pub(crate) upstream: Arc<Upstream>,
    /// The token store; while it is not open, token requests and the
    /// management API get 503 and everything else is forwarded as usual.
    pub(crate) store: Arc<StoreCell>,
    /// Who may pass: tokens, lockout, the per-address quota.
    pub(crate) auth: Authenticator,
    pub(crate) trusted: TrustedProxies,
    pub(crate) clock: SharedClock,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) public_url: Option<String>,
    pub(crate) max_api_body: usize,
    /// `ui.path` without its trailing `/`, while the pages are served.
    pub(crate) pages: Option<String>,
    /// Created tokens, for the notifier's creation notices.
    pub(crate) notices: notify::Queue,
}

impl Gateway {
    /// Applies a new configuration's live settings; returns the changed keys
    /// that need a restart. On error the running settings stay.
    pub fn reload(&self, config: &Config, env: Env<'_>) -> Result<Vec<&'static str>, LiveError> {
        let current = self.live.load_full();
        let live = Live::build(config, env, self.upstream.clone(), self.clock.clone())?;
        let restart = restart_only(&current.config, config);
        self.auth.reload(config);
        self.live.store(Arc::new(live));
        Ok(restart)
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use toml::{Table, Value};

    use super::*;

    /// Settings a reload applies, as the README lists them: `table.key`, or
    /// `table.*` for all of a table.
    const LIVE: &[&str] = &[
        "upstream.lookup_user",
        "upstream.lookup_password_env",
        "upstream.credentials.*",
        "tokens.default_validity_months",
        "tokens.max_validity_months",
        "tokens.max_tokens_per_user",
        "tokens.force_read_only",
        "tokens.allow_password_basic_auth",
        "tokens.last_access_flush_ms",
        "auth.*",
        "log.level",
        "notify.*",
    ];

    fn is_live(table: &str, key: &str) -> bool {
        LIVE.contains(&format!("{table}.{key}").as_str())
            || LIVE.contains(&format!("{table}.*").as_str())
    }

    /// Values of another type's worth to try for `v`: the first that the
    /// configuration types take is used.
    fn others(v: &Value) -> Vec<Value> {
        match v {
            Value::Integer(i) => vec![Value::Integer(i + 1)],
            Value::Boolean(b) => vec![Value::Boolean(!b)],
            Value::Array(a) => vec![
                Value::Array([a.clone(), vec!["x".into()]].concat()),
                Value::Array([a.clone(), vec![Value::Integer(7)]].concat()),
            ],
            Value::String(s) => {
                let mut tries = Vec::new();
                if let Ok(mut addr) = s.parse::<SocketAddr>() {
                    addr.set_port(addr.port() + 1);
                    tries.push(addr.to_string());
                }
                tries.push(format!("{s}x"));
                // The variants of the enumerations (product, mode, format).
                let words = [
                    "jira",
                    "confluence",
                    "header",
                    "basic",
                    "bearer",
                    "text",
                    "json",
                    "sled",
                    "postgres",
                ];
                tries.extend(words.iter().filter(|w| *w != s).map(|w| w.to_string()));
                tries.into_iter().map(Value::String).collect()
            }
            other => panic!("no other value for {other}"),
        }
    }

    /// Every key of every table of `config` (found through the types, not a
    /// list), each with `config` changed in that key alone.
    fn each_key_changed(config: &Config) -> Vec<(String, String, Config)> {
        fn visit(
            whole: &Table,
            path: &mut Vec<String>,
            table: &Table,
            out: &mut Vec<(String, String, Config)>,
        ) {
            for (key, value) in table {
                path.push(key.clone());
                if let Value::Table(inner) = value {
                    visit(whole, path, inner, out);
                } else {
                    let changed = others(value)
                        .into_iter()
                        .find_map(|other| {
                            let mut doc = whole.clone();
                            let (last, tables) = path.split_last().unwrap();
                            let mut t = &mut doc;
                            for name in tables {
                                t = t.get_mut(name).unwrap().as_table_mut().unwrap();
                            }
                            t.insert(last.clone(), other);
                            doc.try_into::<Config>().ok()
                        })
                        .unwrap_or_else(|| panic!("no other value for {path:?}"));
                    let dotted = path[..path.len() - 1].join(".");
                    out.push((dotted, key.clone(), changed));
                }
                path.pop();
            }
        }
        let whole = Table::try_from(config).unwrap();
        let mut out = Vec::new();
        visit(&whole, &mut Vec::new(), &whole, &mut out);
        out
    }

    #[test]
    fn a_change_to_any_server_key_needs_a_restart() {
        let old = Config::default();
        let server: Vec<_> = each_key_changed(&old)
            .into_iter()
            .filter(|(table, _, _)| table == "server")
            .collect();
        assert!(server.len() >= 14, "{} [server] keys", server.len());
        for (_, key, new) in server {
            assert_ne!(old, new, "{key}");
            assert_eq!(restart_only(&old, &new), ["[server]"], "[server] {key}");
        }
    }

    #[test]
    fn every_key_is_live_or_named_as_needing_a_restart() {
        let old = Config::default();
        let changes = each_key_changed(&old);
        assert!(changes.len() >= 45, "{} keys", changes.len());
        for (table, key, new) in changes {
            let restart = restart_only(&old, &new);
            if is_live(&table, &key) {
                assert!(restart.is_empty(), "[{table}] {key} is live: {restart:?}");
                continue;
            }
            let whole_table = format!("[{table}]");
            let names_it = restart.len() == 1
                && (restart[0] == whole_table
                    || (restart[0].starts_with(&format!("{whole_table} "))
                        && restart[0].split([' ', ',']).any(|word| word == key)));
            assert!(names_it, "[{table}] {key} needs a restart: {restart:?}");
        }
    }
}
