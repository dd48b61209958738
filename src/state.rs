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
use crate::config::{self, Config, Env, Problem};
use crate::metrics::Metrics;
use crate::net::TrustedProxies;
use crate::proxy::Upstream;
use crate::store::StoreCell;

/// What a reload (SIGHUP) replaces while connections stay up: token rules,
/// upstream credentials and the lookup account (the authentication rules are
/// the [`Authenticator`]'s, reloaded with it).
pub struct Live {
    pub config: Config,
    pub swap: CredentialSwap,
    pub identity: IdentityResolver,
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
            config: config.clone(),
        })
    }
}

/// Keys whose change takes effect only after a restart.
fn restart_only(old: &Config, new: &Config) -> Vec<&'static str> {
    let mut keys = Vec::new();
    let (o, n) = (&old.server, &new.server);
    let server_changed = o.listen != n.listen
        || o.public_url != n.public_url
        || o.tls_cert != n.tls_cert
        || o.tls_key != n.tls_key
        || o.admin_listen != n.admin_listen
        || o.trusted_proxies != n.trusted_proxies
        || o.header_read_timeout_ms != n.header_read_timeout_ms
        || o.min_body_bytes_per_second != n.min_body_bytes_per_second
        || o.idle_timeout_ms != n.idle_timeout_ms
        || o.max_header_bytes != n.max_header_bytes
        || o.max_api_body_bytes != n.max_api_body_bytes
        || o.shutdown_grace_ms != n.shutdown_grace_ms
        || o.workers != n.workers
        || o.max_connections != n.max_connections;
    if server_changed {
        keys.push("[server]");
    }
    let (o, n) = (&old.upstream, &new.upstream);
    let upstream_changed = o.url != n.url
        || o.product != n.product
        || o.connect_timeout_ms != n.connect_timeout_ms
        || o.response_timeout_ms != n.response_timeout_ms
        || o.preserve_host != n.preserve_host
        || o.ca_file != n.ca_file;
    if upstream_changed {
        keys.push("[upstream] url, product, timeouts, preserve_host, ca_file");
    }
    if old.tokens.store_path != new.tokens.store_path {
        keys.push("[tokens] store_path");
    }
    if old.tokens.prefix != new.tokens.prefix {
        keys.push("[tokens] prefix");
    }
    keys
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
