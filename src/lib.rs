//! tokengate: an API-token authentication gateway in front of Jira and
//! Confluence Data Center.
//!
//! [`run`] serves until a shutdown future completes; [`start`] returns a
//! handle with the bound addresses, for tests and the demo.
#![forbid(unsafe_code)]

pub mod admin;
pub mod api;
pub mod audit;
pub mod auth;
pub mod body;
pub mod clock;
pub mod config;
pub mod demo;
pub mod error;
pub mod gateway;
pub mod header_names;
mod lifecycle;
pub mod metrics;
pub mod net;
pub mod notify;
pub mod proxy;
pub mod request;
pub mod secret;
pub mod server;
pub mod state;
pub mod store;
pub mod token;
pub mod ui;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::clock::{SharedClock, SystemClock};
use crate::config::{Config, Problem};
use crate::demo::DemoError;
use crate::proxy::ClientSetupError;
use crate::server::TlsSetupError;
use crate::state::{Gateway, LiveError};
use crate::store::{Store, StoreError};

/// Looks up an environment variable (the process environment in production).
pub type EnvLookup = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// What the embedding program may replace: the clock and the environment.
#[derive(Clone)]
pub struct Options {
    pub clock: SharedClock,
    pub env: EnvLookup,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            clock: Arc::new(SystemClock),
            env: Arc::new(|var| std::env::var(var).ok()),
        }
    }
}

/// Why the gateway could not start; each says what to fix.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A setting the gateway cannot use.
    #[error(transparent)]
    Config(#[from] Problem),
    #[error(transparent)]
    Upstream(#[from] ClientSetupError),
    #[error(transparent)]
    Tls(#[from] TlsSetupError),
    #[error(transparent)]
    Live(#[from] LiveError),
    #[error("cannot start a worker thread: {0}")]
    Worker(std::io::Error),
    #[error(transparent)]
    Demo(#[from] DemoError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Opens the token store; called at start and, while it fails, again in the
/// background until it works.
pub type StoreOpener = Arc<
    dyn Fn() -> futures_util::future::BoxFuture<'static, Result<Store, StoreError>> + Send + Sync,
>;

/// The opener of the store `[tokens]` configures: sled at `store_path`, or
/// the PostgreSQL database whose URL is in the variable `postgres_url_env`
/// names (read through `options.env`).
pub fn store_opener(config: &Config, options: &Options) -> Result<StoreOpener, StartError> {
    let configured = store::open::Configured::of(config, &*options.env)?;
    let (clock, max_stale_ms) = (options.clock.clone(), config.tokens.cache_max_stale_ms);
    Ok(Arc::new(move || {
        let (configured, clock) = (configured.clone(), clock.clone());
        Box::pin(async move {
            let backend = configured.open().await?;
            Ok(Store::new(backend, clock, max_stale_ms))
        })
    }))
}

/// A running gateway.
pub struct Running {
    addr: SocketAddr,
    admin_addr: Option<SocketAddr>,
    gateway: Arc<Gateway>,
    env: EnvLookup,
    shutdown: CancellationToken,
    done: Option<tokio::task::JoinHandle<()>>,
}

/// Dropping a running gateway stops it without waiting; [`Running::stop`]
/// waits for the graceful shutdown.
impl Drop for Running {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl Running {
    /// The public listener's address (useful with port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The admin listener's address, when one is configured.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_addr
    }

    /// Applies a reloaded configuration's live settings (token rules, auth
    /// limits, upstream credentials) without dropping connections. Returns the
    /// changed keys that need a restart; on error nothing changes, and the
    /// error says why in one line ([`Gateway::reload`] has it typed).
    pub fn reload(&self, config: &Config) -> Result<Vec<&'static str>, state::LiveError> {
        self.gateway.reload(config, &*self.env)
    }

    /// Stops accepting, lets in-flight requests finish (up to
    /// `shutdown_grace_ms`), writes `lastAccessed` and closes the store.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        let done = self.done.take();
        drop(self);
        if let Some(done) = done {
            let _ = done.await;
        }
    }
}

/// Runs the gateway until `shutdown` completes, then stops it gracefully.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), StartError> {
    let running = start(config, Options::default()).await?;
    shutdown.await;
    tracing::info!("shutting down");
    running.stop().await;
    Ok(())
}

/// Opens the store, binds the listeners and starts serving.
///
/// A store that cannot be opened does not stop the gateway: it serves what
/// needs no store (anonymous and password requests, other schemes), answers
/// 503 to token requests and the management API, reports not ready, and
/// keeps trying to open the store in the background.
pub async fn start(config: Config, options: Options) -> Result<Running, StartError> {
    let opener = store_opener(&config, &options)?;
    start_with_store(config, options, opener).await
}

pub use lifecycle::start_with_store;
