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
pub mod metrics;
pub mod net;
pub mod proxy;
pub mod request;
pub mod secret;
pub mod server;
pub mod state;
pub mod store;
pub mod token;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::policy::Authenticator;
use crate::clock::{SharedClock, SystemClock};
use crate::config::Config;
use crate::metrics::Metrics;
use crate::net::TrustedProxies;
use crate::proxy::Upstream;
use crate::state::{Gateway, Live};
use crate::store::{Store, StoreCell, StoreError};

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

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Config(String),
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
pub type StoreOpener = Arc<dyn Fn() -> Result<Store, StoreError> + Send + Sync>;

/// The first retry of a store that would not open comes after this long;
/// each further one waits twice as long, up to [`STORE_RETRY_MAX`].
const STORE_RETRY_FIRST: Duration = Duration::from_millis(250);
const STORE_RETRY_MAX: Duration = Duration::from_secs(5);

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
    /// changed keys that need a restart; on error nothing changes.
    pub fn reload(&self, config: &Config) -> Result<Vec<&'static str>, String> {
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

fn bind(
    addr: SocketAddr,
    count: usize,
) -> Result<(Vec<std::net::TcpListener>, SocketAddr), StartError> {
    let listeners =
        server::bind(addr, count).map_err(|source| StartError::Bind { addr, source })?;
    let bound = listeners
        .first()
        .map(|l| l.local_addr())
        .transpose()
        .map_err(|source| StartError::Bind { addr, source })?
        .unwrap_or(addr);
    Ok((listeners, bound))
}

/// Opens the store, binds the listeners and starts serving.
///
/// A store that cannot be opened does not stop the gateway: it serves what
/// needs no store (anonymous and password requests, other schemes), answers
/// 503 to token requests and the management API, reports not ready, and
/// keeps trying to open the store in the background.
pub async fn start(config: Config, options: Options) -> Result<Running, StartError> {
    let path = config.tokens.store_path.clone();
    start_with_store(config, options, Arc::new(move || Store::open(&path))).await
}

/// [`start`] with another way of opening the store (tests, other engines).
pub async fn start_with_store(
    config: Config,
    options: Options,
    open_store: StoreOpener,
) -> Result<Running, StartError> {
    let clock = options.clock.clone();
    let client_tls = proxy::client_tls(&config).map_err(StartError::Config)?;
    let upstream = Upstream::with_tls(&config, client_tls.clone()).map_err(StartError::Config)?;
    let live = Live::build(&config, &*options.env, upstream.clone(), clock.clone())
        .map_err(StartError::Config)?;
    let tls = match (
        config.server.tls_cert.as_str(),
        config.server.tls_key.as_str(),
    ) {
        ("", "") => None,
        (cert, key) => Some(server::tls_acceptor(cert, key).map_err(StartError::Config)?),
    };
    let admin_listen = config.admin_listen_addr().map_err(StartError::Config)?;
    let metrics = Arc::new(Metrics::new());
    let mut initial_problem = None;
    let store = match open_store() {
        Ok(store) => {
            let store = Arc::new(store);
            metrics.tokens.set(store.count().unwrap_or(0) as i64);
            Arc::new(StoreCell::open(store))
        }
        Err(e) => {
            initial_problem = Some(e.to_string());
            tracing::error!(
                error = %e,
                store = %config.tokens.store_path.display(),
                "the token store cannot be opened; token requests and the management API get 503 until it opens; retrying in the background"
            );
            Arc::new(StoreCell::closed(&e))
        }
    };
    let workers = config.worker_count();
    // One upstream pool per worker, built before anything listens.
    let worker_upstreams = (0..workers)
        .map(|_| Upstream::with_tls(&config, client_tls.clone()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(StartError::Config)?;
    let (listeners, addr) = bind(config.server.listen, workers)?;
    let admin = admin_listen.map(|a| bind(a, 1)).transpose()?;

    let gateway = Arc::new(Gateway {
        live: ArcSwap::from_pointee(live),
        upstream,
        auth: Authenticator::new(&config, store.clone(), clock.clone(), metrics.clone()),
        store,
        trusted: TrustedProxies::new(config.trusted_proxy_nets()),
        clock,
        metrics,
        public_url: Some(config.server.public_url.trim_end_matches('/').to_string())
            .filter(|u| !u.is_empty()),
        max_api_body: config.server.max_api_body_bytes,
    });

    let limits = server::Limits {
        header_read_timeout: Duration::from_millis(config.server.header_read_timeout_ms),
        idle_timeout: Duration::from_millis(config.server.idle_timeout_ms),
        max_header_bytes: config.server.max_header_bytes,
        min_body_bytes_per_second: config.server.min_body_bytes_per_second,
    };
    let grace = Duration::from_millis(config.server.shutdown_grace_ms);
    let shutdown = CancellationToken::new();
    let connections = TaskTracker::new();
    let readyz = admin.as_ref().map(|(_, a)| format!("http://{a}/readyz"));
    let housekeeping = tokio::spawn(housekeeping(gateway.clone(), shutdown.clone(), readyz));
    let opener = initial_problem.map(|problem| {
        tokio::spawn(keep_opening(
            gateway.clone(),
            open_store,
            problem,
            shutdown.clone(),
        ))
    });
    // The public listener: one thread per worker, each with a single-threaded
    // event loop, its own socket (SO_REUSEPORT) and its own upstream pool, so
    // a request never crosses threads.
    let public_cap = server::ConnectionCap::new(config.server.max_connections);
    let mut threads = Vec::with_capacity(workers);
    for (i, (listener, upstream)) in listeners.into_iter().zip(worker_upstreams).enumerate() {
        let handler = Arc::new(gateway::Worker {
            gateway: gateway.clone(),
            upstream,
        });
        let (tls, stop, cap) = (tls.clone(), shutdown.clone(), public_cap.clone());
        let spawned = std::thread::Builder::new()
            .name(format!("tokengate-worker-{i}"))
            .spawn(move || run_worker(listener, tls, handler, limits, cap, stop, grace));
        match spawned {
            Ok(t) => threads.push(t),
            Err(e) => {
                shutdown.cancel();
                return Err(StartError::Config(format!(
                    "cannot start a worker thread: {e}"
                )));
            }
        }
    }
    let admin_addr = admin.as_ref().map(|(_, a)| *a);
    let admin_task = admin
        .and_then(|(mut sockets, _)| sockets.pop())
        .map(|socket| {
            tokio::spawn(server::serve(
                socket,
                None,
                Arc::new(admin::Admin::new(gateway.clone())),
                limits,
                server::ConnectionCap::new(config.server.max_connections),
                shutdown.clone(),
                connections.clone(),
            ))
        });
    tracing::info!(%addr, admin = ?admin_addr, workers, upstream = %config.upstream.url, "tokengate listening");

    let gw = gateway.clone();
    let stopping = shutdown.clone();
    let done = tokio::spawn(async move {
        stopping.cancelled().await;
        // Each worker returns once its connections are done (or the grace is over).
        let _ = tokio::task::spawn_blocking(move || {
            for t in threads {
                let _ = t.join();
            }
        })
        .await;
        if let Some(admin) = admin_task {
            let _ = admin.await;
        }
        drain(&connections, grace).await;
        let _ = housekeeping.await;
        if let Some(opener) = opener {
            // Returns once an attempt in progress is over: a store it opened is closed below.
            let _ = opener.await;
        }
        let store = gw.store.current();
        drop(gw);
        match store {
            Some(store) => match tokio::task::spawn_blocking(move || store.close()).await {
                Ok(Ok(())) => tracing::info!("store closed"),
                Ok(Err(e)) => tracing::error!(error = %e, "closing the store failed"),
                Err(e) => tracing::error!(error = %e, "closing the store failed"),
            },
            None => tracing::info!("store was never opened; nothing to close"),
        }
    });
    Ok(Running {
        addr,
        admin_addr,
        gateway,
        env: options.env,
        shutdown,
        done: Some(done),
    })
}

/// A worker thread: serves its listener on its own event loop until
/// shutdown, then lets its connections finish for up to `grace`.
fn run_worker(
    listener: std::net::TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    handler: Arc<gateway::Worker>,
    limits: server::Limits,
    cap: server::ConnectionCap,
    shutdown: CancellationToken,
    grace: Duration,
) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "cannot start a worker's event loop");
            shutdown.cancel();
            return;
        }
    };
    runtime.block_on(async move {
        let connections = TaskTracker::new();
        server::serve(
            listener,
            tls,
            handler,
            limits,
            cap,
            shutdown,
            connections.clone(),
        )
        .await;
        drain(&connections, grace).await;
    });
}

/// Lets open connections finish, for up to `grace`.
async fn drain(connections: &TaskTracker, grace: Duration) {
    connections.close();
    if tokio::time::timeout(grace, connections.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            grace_ms = grace.as_millis() as u64,
            "connections still open after the shutdown grace period"
        );
    }
}

/// Retries opening a store that would not open at start, until it opens or
/// the gateway stops. Each new reason is logged once.
async fn keep_opening(
    gw: Arc<Gateway>,
    open_store: StoreOpener,
    first_problem: String,
    shutdown: CancellationToken,
) {
    let mut wait = STORE_RETRY_FIRST;
    let mut last_problem = first_problem;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
        wait = (wait * 2).min(STORE_RETRY_MAX);
        let open = open_store.clone();
        let opened = tokio::task::spawn_blocking(move || open())
            .await
            .unwrap_or_else(|e| Err(StoreError::Unavailable(format!("open task failed: {e}"))));
        match opened {
            Ok(store) => {
                let store = Arc::new(store);
                gw.metrics.tokens.set(store.count().unwrap_or(0) as i64);
                gw.store.set(store);
                tracing::info!(
                    "the token store is open; token requests and the management API are served again"
                );
                // Readiness and its gauge follow at once rather than at the next periodic check.
                tokio::select! {
                    _ = shutdown.cancelled() => {}
                    _ = admin::check(&gw) => {}
                }
                return;
            }
            Err(e) => {
                let problem = e.to_string();
                if last_problem != problem {
                    tracing::error!(error = %e, "the token store still cannot be opened; retrying");
                    gw.store.set_problem(&e);
                } else {
                    tracing::debug!(error = %e, "the token store still cannot be opened");
                }
                last_problem = problem;
            }
        }
    }
}

/// Periodic work: write `lastAccessed`, forget stale failure state, check
/// readiness and log when it changes, naming where `/readyz` is served.
async fn housekeeping(gw: Arc<Gateway>, shutdown: CancellationToken, readyz: Option<String>) {
    let readyz: Arc<str> = readyz
        .unwrap_or_else(|| "no admin listener ([server] admin_listen is empty)".into())
        .into();
    // 0: not checked yet, 1: ready, 2: not ready.
    let last_verdict = Arc::new(std::sync::atomic::AtomicU8::new(0));
    let mut last_flush = tokio::time::Instant::now();
    let mut last_attempt = last_flush;
    let mut last_sweep = tokio::time::Instant::now();
    // Readiness is checked on the first tick and every 10 s, for the `tokengate_ready` gauge.
    let mut last_ready: Option<tokio::time::Instant> = None;
    let mut ready_check: Option<tokio::task::JoinHandle<()>> = None;
    loop {
        let flush_every = Duration::from_millis(gw.live.load().config.tokens.last_access_flush_ms);
        tokio::select! {
            _ = shutdown.cancelled() => {
                // Nothing may hold the gateway (and so the store) after shutdown.
                if let Some(check) = ready_check.take() {
                    check.abort();
                    let _ = check.await;
                }
                return;
            }
            _ = tokio::time::sleep(flush_every.min(Duration::from_secs(1))) => {}
        }
        let now = tokio::time::Instant::now();
        let store = gw.store.current();
        if let Some(store) = store.clone()
            && now.duration_since(last_attempt) >= flush_every
        {
            last_attempt = now;
            match tokio::task::spawn_blocking(move || store.flush_access()).await {
                Ok(Ok(_)) => last_flush = now,
                Ok(Err(e)) => tracing::error!(error = %e, "writing lastAccessed failed"),
                Err(e) => tracing::error!(error = %e, "writing lastAccessed failed"),
            }
        }
        gw.metrics
            .last_access_pending
            .set(store.map_or(0, |s| s.pending_access()) as i64);
        // Age of the last successful write: failing writes make it grow.
        gw.metrics
            .last_access_flush_age
            .set(now.duration_since(last_flush).as_secs_f64());
        if last_ready.is_none_or(|t| now.duration_since(t) >= Duration::from_secs(10)) {
            last_ready = Some(now);
            if ready_check.as_ref().is_none_or(|c| c.is_finished()) {
                let (gw, readyz, last_verdict) = (gw.clone(), readyz.clone(), last_verdict.clone());
                ready_check = Some(tokio::spawn(async move {
                    let r = admin::check(&gw).await;
                    let verdict = if r.ready { 1 } else { 2 };
                    let before = last_verdict.swap(verdict, std::sync::atomic::Ordering::Relaxed);
                    if before != verdict && !r.ready {
                        tracing::warn!(store = %r.store, upstream = %r.upstream, %readyz, "not ready: /readyz answers 503 until this is fixed");
                    } else if before == 2 && r.ready {
                        tracing::info!(%readyz, "ready again");
                    }
                }));
            }
        }
        if now.duration_since(last_sweep) >= Duration::from_secs(30) {
            last_sweep = now;
            gw.auth.sweep(gw.live.load().config.auth.lockout_seconds);
        }
    }
}
