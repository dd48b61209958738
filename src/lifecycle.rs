//! A gateway's life: built (shared state, upstream clients, the store),
//! bound (listeners), served (workers, admin listener, background tasks),
//! and shut down in order. [`crate::start`] and [`crate::run`] are the way in.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::policy::Authenticator;
use crate::config::{Config, StoreBackend};
use crate::metrics::{Metrics, WorkerLabels};
use crate::net::TrustedProxies;
use crate::notify;
use crate::proxy::{self, Upstream};
use crate::state::{Gateway, Live};
use crate::store::{StoreCell, StoreError};
use crate::{Options, Running, StartError, StoreOpener, admin, gateway, server};

/// The first retry of a store that would not open comes after this long;
/// each further one waits twice as long, up to [`STORE_RETRY_MAX`].
const STORE_RETRY_FIRST: Duration = Duration::from_millis(250);
const STORE_RETRY_MAX: Duration = Duration::from_secs(5);

/// [`start`] with another way of opening the store (tests, other engines):
/// build the shared state, bind the listeners, then serve.
pub async fn start_with_store(
    config: Config,
    options: Options,
    open_store: StoreOpener,
) -> Result<Running, StartError> {
    let built = build(&config, &options, &open_store).await?;
    let listeners = Listeners::bind(&config, built.worker_upstreams.len())?;
    serve(&config, options, open_store, built, listeners)
}

/// The shared state, built before anything listens.
struct Built {
    gateway: Arc<Gateway>,
    /// One upstream pool per worker.
    worker_upstreams: Vec<Arc<Upstream>>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    /// Why the store did not open, when it did not.
    store_problem: Option<String>,
    /// Where the management API queues created tokens for the notifier.
    notices: notify::Receiver,
}

/// Builds the gateway's shared state: upstream clients, the settings a
/// reload replaces, the store (or why it is not open), the authentication
/// policy and metrics.
async fn build(
    config: &Config,
    options: &Options,
    open_store: &StoreOpener,
) -> Result<Built, StartError> {
    let clock = options.clock.clone();
    let client_tls = proxy::client_tls(config)?;
    let upstream = Upstream::with_tls(config, client_tls.clone())?;
    let live = Live::build(config, &*options.env, upstream.clone(), clock.clone())?;
    let tls = match (
        config.server.tls_cert.as_str(),
        config.server.tls_key.as_str(),
    ) {
        ("", "") => None,
        (cert, key) => Some(server::tls_acceptor(cert, key)?),
    };
    let metrics = Arc::new(Metrics::new());
    let mut store_problem = None;
    let store = match open_store().await {
        Ok(store) => {
            let store = Arc::new(store);
            store.attach_metrics(metrics.store.clone());
            metrics.tokens.set(store.count().await.unwrap_or(0) as i64);
            Arc::new(StoreCell::open(store))
        }
        // Written by a newer tokengate: waiting would not help.
        Err(e @ StoreError::Incompatible(_)) => return Err(StartError::Store(e)),
        Err(e) => {
            store_problem = Some(e.to_string());
            let store = match config.tokens.backend {
                StoreBackend::Sled => config.tokens.store_path.display().to_string(),
                StoreBackend::Postgres => format!(
                    "the PostgreSQL database in {} ([tokens] postgres_url_env)",
                    config.tokens.postgres_url_env
                ),
            };
            tracing::error!(
                error = %e,
                %store,
                "the token store cannot be opened; token requests and the management API get 503 until it opens; retrying in the background"
            );
            Arc::new(StoreCell::closed(&e))
        }
    };
    let (queue, notices) = notify::Queue::new();
    let worker_upstreams = (0..config.worker_count())
        .map(|_| Upstream::with_tls(config, client_tls.clone()))
        .collect::<Result<Vec<_>, _>>()?;
    let gateway = Arc::new(Gateway {
        live: ArcSwap::from_pointee(live),
        upstream,
        auth: Authenticator::new(config, store.clone(), clock.clone(), metrics.clone()),
        store,
        trusted: TrustedProxies::new(config.trusted_proxy_nets()),
        clock,
        metrics,
        public_url: Some(config.server.public_url.trim_end_matches('/').to_string())
            .filter(|u| !u.is_empty()),
        max_api_body: config.server.max_api_body_bytes,
        pages: config.ui.root(),
        notices: queue,
    });
    Ok(Built {
        gateway,
        worker_upstreams,
        tls,
        store_problem,
        notices,
    })
}

/// The bound sockets: one per worker on the public address, one for the
/// admin listener when there is one.
struct Listeners {
    public: Vec<std::net::TcpListener>,
    addr: SocketAddr,
    admin: Option<(std::net::TcpListener, SocketAddr)>,
}

impl Listeners {
    fn bind(config: &Config, workers: usize) -> Result<Listeners, StartError> {
        let admin_listen = config.admin_listen_addr()?;
        let (public, addr) = bind(config.server.listen, workers)?;
        let admin = match admin_listen {
            Some(a) => {
                let (mut sockets, bound) = bind(a, 1)?;
                sockets.pop().map(|s| (s, bound))
            }
            None => None,
        };
        Ok(Listeners {
            public,
            addr,
            admin,
        })
    }
}

/// Starts the background tasks, the workers and the admin listener.
fn serve(
    config: &Config,
    options: Options,
    open_store: StoreOpener,
    built: Built,
    listeners: Listeners,
) -> Result<Running, StartError> {
    let Built {
        gateway,
        worker_upstreams,
        tls,
        store_problem,
        notices,
    } = built;
    let limits = server::Limits {
        h2c: config.server.h2c,
        header_read_timeout: Duration::from_millis(config.server.header_read_timeout_ms),
        idle_timeout: Duration::from_millis(config.server.idle_timeout_ms),
        max_header_bytes: config.server.max_header_bytes,
        min_body_bytes_per_second: config.server.min_body_bytes_per_second,
    };
    let grace = Duration::from_millis(config.server.shutdown_grace_ms);
    let shutdown = CancellationToken::new();
    let connections = TaskTracker::new();
    let readyz = listeners
        .admin
        .as_ref()
        .map(|(_, a)| format!("http://{a}/readyz"));
    let housekeeping = tokio::spawn(housekeeping(gateway.clone(), shutdown.clone(), readyz));
    let notifier = tokio::spawn(notify::run(gateway.clone(), notices, shutdown.clone()));
    let opener = store_problem.map(|problem| {
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
    let workers = worker_upstreams.len();
    let mut threads = Vec::with_capacity(workers);
    for (i, (listener, upstream)) in listeners
        .public
        .into_iter()
        .zip(worker_upstreams)
        .enumerate()
    {
        let handler = Arc::new(gateway::Worker {
            gateway: gateway.clone(),
            upstream,
        });
        let open = gateway
            .metrics
            .open_connections
            .get_or_create(&WorkerLabels {
                worker: i.to_string(),
            })
            .clone();
        let (tls, stop, cap) = (tls.clone(), shutdown.clone(), public_cap.counted(open));
        let spawned = std::thread::Builder::new()
            .name(format!("tokengate-worker-{i}"))
            .spawn(move || run_worker(listener, tls, handler, limits, cap, stop, grace));
        match spawned {
            Ok(t) => threads.push(t),
            Err(e) => {
                shutdown.cancel();
                return Err(StartError::Worker(e));
            }
        }
    }
    let admin_addr = listeners.admin.as_ref().map(|(_, a)| *a);
    let admin_task = listeners.admin.map(|(socket, _)| {
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
    let addr = listeners.addr;
    tracing::info!(%addr, admin = ?admin_addr, workers, upstream = %config.upstream.url, "tokengate listening");
    let done = tokio::spawn(shut_down(
        Stopping {
            gateway: gateway.clone(),
            threads,
            admin_task,
            connections,
            housekeeping,
            notifier,
            opener,
            grace,
        },
        shutdown.clone(),
    ));
    Ok(Running {
        addr,
        admin_addr,
        gateway,
        env: options.env,
        shutdown,
        done: Some(done),
    })
}

/// What a shutdown waits for, in order.
struct Stopping {
    gateway: Arc<Gateway>,
    threads: Vec<std::thread::JoinHandle<()>>,
    admin_task: Option<tokio::task::JoinHandle<()>>,
    connections: TaskTracker,
    housekeeping: tokio::task::JoinHandle<()>,
    notifier: tokio::task::JoinHandle<()>,
    opener: Option<tokio::task::JoinHandle<()>>,
    grace: Duration,
}

/// Once `shutdown` fires: the workers finish their connections (up to the
/// grace), then the admin listener's, then the background tasks stop, and
/// the store is closed last (which writes `lastAccessed`).
async fn shut_down(s: Stopping, shutdown: CancellationToken) {
    shutdown.cancelled().await;
    let threads = s.threads;
    // Each worker returns once its connections are done (or the grace is over).
    let _ = tokio::task::spawn_blocking(move || {
        for t in threads {
            let _ = t.join();
        }
    })
    .await;
    if let Some(admin) = s.admin_task {
        let _ = admin.await;
    }
    drain(&s.connections, s.grace).await;
    let _ = s.housekeeping.await;
    let _ = s.notifier.await;
    if let Some(opener) = s.opener {
        // Returns once an attempt in progress is over: a store it opened is closed below.
        let _ = opener.await;
    }
    let store = s.gateway.store.current();
    drop(s.gateway);
    match store {
        Some(store) => match store.close().await {
            Ok(()) => tracing::info!("store closed"),
            Err(e) => tracing::error!(error = %e, "closing the store failed"),
        },
        None => tracing::info!("store was never opened; nothing to close"),
    }
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
        match open_store().await {
            Ok(store) => {
                let store = Arc::new(store);
                store.attach_metrics(gw.metrics.store.clone());
                gw.metrics
                    .tokens
                    .set(store.count().await.unwrap_or(0) as i64);
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
            match store.flush_access().await {
                Ok(_) => last_flush = now,
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
            // Other gateways on a shared database create and delete tokens too.
            if let Some(store) = gw.store.current()
                && store.backend().kind() != "sled"
                && let Ok(n) = store.count().await
            {
                gw.metrics.tokens.set(n as i64);
            }
            gw.auth
                .sweep(gw.live.load().config.auth.lockout_seconds)
                .await;
        }
    }
}
