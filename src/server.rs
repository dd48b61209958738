//! Listening sockets, TLS, connections and their timeouts, graceful shutdown.
//!
//! A listener without TLS speaks HTTP/1.1 through hyper's HTTP/1 server
//! ([`Codec::Http1`]); with TLS, or with `h2c`, HTTP/1.1 and HTTP/2 come
//! through hyper-util's auto builder ([`Codec::Auto`]). Two timeouts
//! are enforced per connection by a watchdog rather than by hyper, because
//! hyper's header-read timer also runs while a keep-alive connection is idle,
//! which would make the idle timeout meaningless:
//! - `header_read_timeout_ms`: from the first byte of a request head (or from
//!   the connection's start, for its first request) to the complete head;
//! - `idle_timeout_ms`: a connection with nothing in flight and no new bytes,
//!   and a response the client stops reading (no byte accepted by the socket
//!   for that long: the connection is dropped).
//!
//! A request body that stalls for `header_read_timeout_ms`, or arrives slower
//! than `min_body_bytes_per_second`, ends with [`BodyStalled`] (see
//! [`StallGuard`]). An HTTP/2 client that stops reading blocks a stream
//! through flow control, not the socket: a response body it has not taken
//! for `idle_timeout_ms` ends the connection too. `max_connections` caps the
//! connections a listener serves at once ([`ConnectionCap`]), WebSocket
//! tunnels included (they hold their connection's slot, see [`ConnHold`]):
//! beyond it, new connections wait (in the kernel's accept queue) until one
//! closes.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http::header::HeaderValue;
use http::{Request, Response};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use prometheus_client::metrics::gauge::Gauge;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::body::{BodyPace, RespBody};

/// Something that answers requests; the gateway and the admin endpoints.
pub trait Handler: Send + Sync + 'static {
    fn handle(
        &self,
        req: Request<Incoming>,
        conn: &ConnInfo,
    ) -> impl Future<Output = Response<RespBody>> + Send;
}

/// What a handler knows about the connection a request came on.
#[derive(Debug)]
pub struct ConnInfo {
    pub peer: SocketAddr,
    /// The peer's IP, ready for `X-Forwarded-For`.
    pub peer_ip_header: HeaderValue,
    pub tls: bool,
    /// How a request body must keep arriving, for the handlers that read
    /// bodies (see [`BodyGap`]).
    pub body_pace: BodyPace,
    /// For work that outlives the HTTP exchange on this connection.
    pub hold: ConnHold,
}

/// A connection's slot under `max_connections` and the tracker its listener
/// drains at shutdown. A WebSocket tunnel outlives the HTTP exchange that
/// opened it; run with [`ConnHold::spawn`], it keeps the slot until it ends
/// and is given the shutdown grace like any connection.
#[derive(Clone)]
pub struct ConnHold {
    slot: Option<Arc<Slot>>,
    tracker: TaskTracker,
}

/// A taken slot of [`ConnectionCap`], counted in the listener's open
/// connections gauge (if it has one) while it is held.
struct Slot {
    _permit: OwnedSemaphorePermit,
    open: Option<Gauge>,
}

impl Slot {
    fn new(permit: OwnedSemaphorePermit, open: Option<Gauge>) -> Slot {
        if let Some(g) = &open {
            g.inc();
        }
        Slot {
            _permit: permit,
            open,
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(g) = &self.open {
            g.dec();
        }
    }
}

impl std::fmt::Debug for ConnHold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ConnHold")
    }
}

impl ConnHold {
    /// A hold on nothing: for requests made outside a listener (tests).
    pub fn detached() -> ConnHold {
        ConnHold {
            slot: None,
            tracker: TaskTracker::new(),
        }
    }

    /// Runs `task` as part of this connection: it holds the slot and is
    /// waited for (up to the grace) at shutdown, then dropped.
    pub fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        let slot = self.slot.clone();
        self.tracker.spawn(async move {
            task.await;
            drop(slot);
        });
    }
}

impl ConnInfo {
    pub fn scheme(&self) -> &'static str {
        if self.tls { "https" } else { "http" }
    }
}

/// Per-connection limits from `[server]`.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// A listener without TLS also takes HTTP/2 with prior knowledge.
    pub h2c: bool,
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_header_bytes: usize,
    pub min_body_bytes_per_second: u64,
}

impl Limits {
    pub fn body_pace(&self) -> BodyPace {
        BodyPace {
            gap: self.header_read_timeout,
            min_rate: self.min_body_bytes_per_second,
        }
    }
}

/// The HTTP codec of a listener: HTTP/1.1 only (a plain listener, the
/// default), or HTTP/1.1 and HTTP/2 (with TLS, or with `h2c`).
pub enum Codec {
    Auto(auto::Builder<TokioExecutor>),
    Http1(http1::Builder),
}

impl Codec {
    fn new(http2: bool, limits: Limits) -> Codec {
        let max_buf = limits.max_header_bytes.max(8192);
        if !http2 {
            let mut b = http1::Builder::new();
            b.timer(TokioTimer::new())
                // Our watchdog enforces the header timeout; hyper's would also cut idle keep-alive.
                .header_read_timeout(None)
                .max_buf_size(max_buf);
            return Codec::Http1(b);
        }
        let mut b = auto::Builder::new(TokioExecutor::new());
        b.http1()
            .timer(TokioTimer::new())
            .header_read_timeout(None)
            .max_buf_size(max_buf);
        b.http2()
            .timer(TokioTimer::new())
            .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX));
        Codec::Auto(b)
    }
}

/// How many connections a listener serves at once, shared by all the
/// workers that accept on it. A connection accepted while every slot is taken
/// waits, unserved, until one frees; meanwhile its worker accepts nothing more,
/// so later connections wait in the kernel's accept queue (as with HAProxy's
/// `maxconn` and nginx's `worker_connections`).
#[derive(Debug, Clone)]
pub struct ConnectionCap {
    slots: Arc<Semaphore>,
    max: usize,
    /// The connections one worker holds open (`tokengate_open_connections`).
    open: Option<Gauge>,
}

impl ConnectionCap {
    pub fn new(max: usize) -> ConnectionCap {
        let max = max.clamp(1, Semaphore::MAX_PERMITS);
        ConnectionCap {
            slots: Arc::new(Semaphore::new(max)),
            max,
            open: None,
        }
    }

    /// The same slots, for a worker whose open connections `open` counts.
    pub fn counted(&self, open: Gauge) -> ConnectionCap {
        ConnectionCap {
            open: Some(open),
            ..self.clone()
        }
    }
}

/// Loads the listener's certificate chain and key (PEM) into a TLS acceptor
/// that offers HTTP/2 and HTTP/1.1.
pub fn tls_acceptor(cert: &str, key: &str) -> Result<TlsAcceptor, TlsSetupError> {
    let cert_error = |source| TlsSetupError::Cert {
        path: cert.into(),
        source,
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect::<Result<_, _>>())
        .map_err(cert_error)?;
    if certs.is_empty() {
        return Err(TlsSetupError::NoCert { path: cert.into() });
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|source| TlsSetupError::Key {
        path: key.into(),
        source,
    })?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(TlsSetupError::Tls)?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .map_err(TlsSetupError::Pair)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Why the listener's certificate and key cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    #[error("[server] tls_cert {path:?}: {source}")]
    Cert {
        path: String,
        source: rustls_pki_types::pem::Error,
    },
    #[error("[server] tls_cert {path:?}: no certificate found")]
    NoCert { path: String },
    #[error("[server] tls_key {path:?}: {source}")]
    Key {
        path: String,
        source: rustls_pki_types::pem::Error,
    },
    #[error("TLS set-up failed: {0}")]
    Tls(rustls::Error),
    #[error("[server] tls_cert/tls_key: {0}")]
    Pair(rustls::Error),
}

/// Binds `count` listening sockets to one address with `SO_REUSEPORT`, so
/// that the kernel spreads connections over the workers. Each worker turns
/// its socket into a tokio listener on its own runtime.
///
/// `SO_REUSEPORT` alone would let a second gateway (same user) join a port
/// that is already served and silently take half of its connections, so a
/// plain socket first claims the address: it fails with "address in use"
/// when anything listens there, and it picks the port when `addr` has port 0.
pub fn bind(addr: SocketAddr, count: usize) -> io::Result<Vec<std::net::TcpListener>> {
    let socket = |reuse_port: bool| -> io::Result<socket2::Socket> {
        let s = socket2::Socket::new(
            socket2::Domain::for_address(addr),
            socket2::Type::STREAM,
            None,
        )?;
        // Lets a restart bind while old connections sit in TIME_WAIT; never
        // lets two listeners share the port.
        s.set_reuse_address(true)?;
        #[cfg(unix)]
        if reuse_port {
            s.set_reuse_port(true)?;
        }
        Ok(s)
    };
    let claim = socket(false)?;
    claim.bind(&addr.into())?;
    let addr = claim
        .local_addr()?
        .as_socket()
        .ok_or_else(|| io::Error::other("listener address is not an IP address"))?;
    drop(claim);
    let mut sockets = Vec::with_capacity(count);
    for _ in 0..count.max(1) {
        let s = socket(true)?;
        s.set_nonblocking(true)?;
        s.bind(&addr.into())?;
        s.listen(1024)?;
        sockets.push(s.into());
    }
    Ok(sockets)
}

/// Accepts connections until `shutdown` fires; each connection runs as a
/// task on `tracker` and is asked to finish gracefully at shutdown. A
/// connection is served only with a slot of `cap`, held until it closes.
pub async fn serve<H: Handler>(
    listener: std::net::TcpListener,
    tls: Option<TlsAcceptor>,
    handler: Arc<H>,
    limits: Limits,
    cap: ConnectionCap,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) {
    let builder = Arc::new(Codec::new(tls.is_some() || limits.h2c, limits));
    let listener = match TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "cannot register the listening socket");
            return;
        }
    };
    let mut last_full_warning: Option<Instant> = None;
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                // Out of file descriptors and the like: wait instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let slot = match cap.slots.clone().try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) => {
                if last_full_warning.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
                    last_full_warning = Some(Instant::now());
                    tracing::warn!(
                        max_connections = cap.max,
                        "connection limit reached; new connections wait until one closes"
                    );
                }
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    slot = cap.slots.clone().acquire_owned() => match slot {
                        Ok(slot) => slot,
                        Err(_) => break,
                    },
                }
            }
        };
        let _ = stream.set_nodelay(true);
        let handler = handler.clone();
        let builder = builder.clone();
        let tls = tls.clone();
        let shutdown = shutdown.clone();
        let hold = ConnHold {
            slot: Some(Arc::new(Slot::new(slot, cap.open.clone()))),
            tracker: tracker.clone(),
        };
        tracker.spawn(async move {
            connection(stream, peer, tls, handler, builder, limits, shutdown, hold).await;
        });
    }
}

#[allow(clippy::too_many_arguments)]
async fn connection<H: Handler>(
    stream: TcpStream,
    peer: SocketAddr,
    tls: Option<TlsAcceptor>,
    handler: Arc<H>,
    builder: Arc<Codec>,
    limits: Limits,
    shutdown: CancellationToken,
    hold: ConnHold,
) {
    let activity = Arc::new(Activity::new());
    let peer_ip = crate::net::canonical(peer.ip());
    let info = Arc::new(ConnInfo {
        peer,
        peer_ip_header: HeaderValue::from_str(&peer_ip.to_string())
            .unwrap_or(HeaderValue::from_static("unknown")),
        tls: tls.is_some(),
        body_pace: limits.body_pace(),
        hold,
    });
    match tls {
        None => {
            drive(
                WatchedIo::new(stream, activity.clone()),
                info,
                handler,
                builder,
                limits,
                shutdown,
                activity,
            )
            .await
        }
        // Boxed: the handshake and the TLS stream make this branch's state
        // several KB larger than the plain one (the task measured 10.4 KB
        // with it inline), and inline every connection's task would be that
        // size, plain ones too.
        Some(acceptor) => {
            Box::pin(async move {
                let handshake =
                    tokio::time::timeout(limits.header_read_timeout, acceptor.accept(stream));
                match handshake.await {
                    Ok(Ok(tls_stream)) => {
                        if tls_stream.get_ref().1.alpn_protocol() == Some(b"h2") {
                            activity.h2.store(true, Ordering::Relaxed);
                        }
                        let io = WatchedIo::new(tls_stream, activity.clone());
                        drive(io, info, handler, builder, limits, shutdown, activity).await
                    }
                    Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                    Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                }
            })
            .await
        }
    }
}

async fn drive<H, I>(
    io: WatchedIo<I>,
    info: Arc<ConnInfo>,
    handler: Arc<H>,
    builder: Arc<Codec>,
    limits: Limits,
    shutdown: CancellationToken,
    activity: Arc<Activity>,
) where
    H: Handler,
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let peer = info.peer;
    let service = {
        let activity = activity.clone();
        service_fn(move |req: Request<Incoming>| {
            let handler = handler.clone();
            let info = info.clone();
            let guard = InFlight::begin(activity.clone());
            let activity = activity.clone();
            async move {
                // Boxed: hyper keeps a box the size of this future for the
                // connection's whole life (HTTP/1's in-flight slot), so with
                // the handler's ~4 KB future inline an idle keep-alive
                // connection would hold it; boxed, it is freed with the request.
                let resp = Box::pin(handler.handle(req, &info)).await;
                // Only HTTP/2 needs to know who a response body waits on: over
                // HTTP/1 a client that stops reading blocks the socket itself.
                let pending = (activity.h2.load(Ordering::Relaxed) && !resp.body().is_end_stream())
                    .then(|| Handed::new(activity));
                Ok::<_, Infallible>(resp.map(|body| TrackedBody {
                    inner: body,
                    _guard: guard,
                    handed: pending,
                }))
            }
        })
    };
    match &*builder {
        Codec::Auto(b) => {
            let conn = b.serve_connection_with_upgrades(TokioIo::new(io), service);
            run_connection(
                conn,
                |c| c.graceful_shutdown(),
                peer,
                limits,
                shutdown,
                &activity,
            )
            .await
        }
        Codec::Http1(b) => {
            let conn = b
                .serve_connection(TokioIo::new(io), service)
                .with_upgrades();
            run_connection(
                conn,
                |c| c.graceful_shutdown(),
                peer,
                limits,
                shutdown,
                &activity,
            )
            .await
        }
    }
}

/// Serves a connection until it ends, shutdown asks it to finish, or the
/// watchdog gives up on it. `graceful` asks the codec to finish the request
/// in progress and close.
async fn run_connection<C, E>(
    conn: C,
    graceful: impl Fn(Pin<&mut C>),
    peer: SocketAddr,
    limits: Limits,
    shutdown: CancellationToken,
    activity: &Activity,
) where
    C: Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    tokio::pin!(conn);
    let watchdog = watchdog(activity, limits);
    tokio::pin!(watchdog);
    let mut draining = false;
    loop {
        tokio::select! {
            done = conn.as_mut() => {
                if let Err(e) = done {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
                break;
            }
            _ = shutdown.cancelled(), if !draining => {
                graceful(conn.as_mut());
                draining = true;
            }
            verdict = &mut watchdog, if !draining => match verdict {
                Verdict::Idle => {
                    graceful(conn.as_mut());
                    draining = true;
                }
                Verdict::HeaderTimeout => {
                    tracing::debug!(%peer, "request head not received in time; closing the connection");
                    break;
                }
                Verdict::WriteStalled => {
                    tracing::debug!(%peer, "the client stopped reading its response; closing the connection");
                    break;
                }
            },
        }
    }
}

/// What the watchdog decided about a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Idle,
    HeaderTimeout,
    /// A write to the client has waited for the socket for `idle_timeout`.
    WriteStalled,
}

const NONE: u64 = u64::MAX;

/// Timestamps (ms since the connection opened) and counters the watchdog reads.
struct Activity {
    opened: Instant,
    in_flight: AtomicU32,
    served_any: AtomicBool,
    idle_since: AtomicU64,
    head_started: AtomicU64,
    h2: AtomicBool,
    first_read_seen: AtomicBool,
    /// Since when a write to the client waits for the socket (NONE: it does not).
    write_blocked_since: AtomicU64,
    write_blocked: tokio::sync::Notify,
    /// HTTP/2 response bodies whose last frame was handed to the client's
    /// stream and that have not been asked for the next one since: they wait
    /// on the client's flow-control window, not on the upstream.
    handed_bodies: AtomicU32,
    /// When a response body of this connection last moved (ms).
    body_moved: AtomicU64,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            opened: Instant::now(),
            in_flight: AtomicU32::new(0),
            served_any: AtomicBool::new(false),
            idle_since: AtomicU64::new(0),
            head_started: AtomicU64::new(NONE),
            h2: AtomicBool::new(false),
            first_read_seen: AtomicBool::new(false),
            write_blocked_since: AtomicU64::new(NONE),
            write_blocked: tokio::sync::Notify::new(),
            handed_bodies: AtomicU32::new(0),
            body_moved: AtomicU64::new(0),
        }
    }

    fn now_ms(&self) -> u64 {
        self.opened.elapsed().as_millis() as u64
    }

    fn on_read(&self, bytes: &[u8]) {
        if !self.first_read_seen.swap(true, Ordering::Relaxed)
            && bytes.starts_with(b"PRI * HTTP/2.0")
        {
            self.h2.store(true, Ordering::Relaxed);
        }
        if self.in_flight.load(Ordering::Acquire) == 0
            && self.head_started.load(Ordering::Relaxed) == NONE
        {
            self.head_started.store(self.now_ms(), Ordering::Relaxed);
        }
    }

    /// When the connection is due for a verdict, if nothing changes until then.
    /// Records whether a write to the client made progress (or failed,
    /// which ends the connection anyway).
    fn on_write<T>(&self, polled: &Poll<io::Result<T>>) {
        match polled {
            Poll::Pending => {
                if self.write_blocked_since.load(Ordering::Relaxed) == NONE {
                    self.write_blocked_since
                        .store(self.now_ms(), Ordering::Relaxed);
                    // The one event that moves a deadline in: wake the watchdog.
                    self.write_blocked.notify_one();
                }
            }
            Poll::Ready(_) => self.write_blocked_since.store(NONE, Ordering::Relaxed),
        }
    }

    fn deadline(&self, limits: &Limits) -> Option<(u64, Verdict)> {
        let blocked = self.write_blocked_since.load(Ordering::Relaxed);
        if blocked != NONE {
            return Some((
                blocked.saturating_add(limits.idle_timeout.as_millis() as u64),
                Verdict::WriteStalled,
            ));
        }
        if self.handed_bodies.load(Ordering::Acquire) > 0 {
            // Every response body of the connection has stood still while
            // one waits on the client: the client stopped reading.
            return Some((
                self.body_moved
                    .load(Ordering::Relaxed)
                    .saturating_add(limits.idle_timeout.as_millis() as u64),
                Verdict::WriteStalled,
            ));
        }
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        let header = limits.header_read_timeout.as_millis() as u64;
        if !self.served_any.load(Ordering::Acquire) {
            return Some((header, Verdict::HeaderTimeout));
        }
        let head = self.head_started.load(Ordering::Relaxed);
        if head != NONE && !self.h2.load(Ordering::Relaxed) {
            return Some((head.saturating_add(header), Verdict::HeaderTimeout));
        }
        let idle = self.idle_since.load(Ordering::Relaxed);
        Some((
            idle.saturating_add(limits.idle_timeout.as_millis() as u64),
            Verdict::Idle,
        ))
    }
}

async fn watchdog(activity: &Activity, limits: Limits) -> Verdict {
    loop {
        let now = activity.now_ms();
        let wait = match activity.deadline(&limits) {
            Some((at, verdict)) if at <= now => return verdict,
            Some((at, _)) => at - now,
            // Busy: look again later; activity only ever moves deadlines out,
            // except a write that blocks, which wakes the watchdog.
            None => limits.idle_timeout.as_millis() as u64,
        };
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(wait.max(1))) => {}
            _ = activity.write_blocked.notified() => {}
        }
    }
}

/// Counts a request as in flight from its head until its response body is
/// finished or dropped.
struct InFlight(Arc<Activity>);

impl InFlight {
    fn begin(activity: Arc<Activity>) -> InFlight {
        activity.in_flight.fetch_add(1, Ordering::AcqRel);
        activity.served_any.store(true, Ordering::Release);
        activity.head_started.store(NONE, Ordering::Relaxed);
        InFlight(activity)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle_since.store(self.0.now_ms(), Ordering::Relaxed);
            self.0.head_started.store(NONE, Ordering::Relaxed);
        }
    }
}

/// A response body that ends the request's in-flight count when done.
pub struct TrackedBody {
    inner: RespBody,
    _guard: InFlight,
    /// HTTP/2 only: whether the body waits on the client.
    handed: Option<Handed>,
}

/// An HTTP/2 response body's part in [`Activity::handed_bodies`]: counted
/// from the moment a frame is handed over until the body is asked for the
/// next one (hyper asks only once the client's window has room).
struct Handed {
    activity: Arc<Activity>,
    counted: bool,
}

impl Handed {
    fn new(activity: Arc<Activity>) -> Handed {
        Handed {
            activity,
            counted: false,
        }
    }

    /// The body is asked for its next frame: it no longer waits on the client.
    fn asked(&mut self) {
        self.activity
            .body_moved
            .store(self.activity.now_ms(), Ordering::Relaxed);
        if std::mem::take(&mut self.counted) {
            self.activity.handed_bodies.fetch_sub(1, Ordering::AcqRel);
        }
    }

    /// A frame went to the client's stream; the next move is the client's.
    fn handed(&mut self) {
        if !self.counted {
            self.counted = true;
            if self.activity.handed_bodies.fetch_add(1, Ordering::AcqRel) == 0 {
                self.activity
                    .body_moved
                    .store(self.activity.now_ms(), Ordering::Relaxed);
                self.activity.write_blocked.notify_one();
            }
        }
    }
}

impl Drop for Handed {
    fn drop(&mut self) {
        if self.counted {
            self.activity.handed_bodies.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

impl Body for TrackedBody {
    type Data = bytes::Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        let Some(handed) = &mut this.handed else {
            return Pin::new(&mut this.inner).poll_frame(cx);
        };
        handed.asked();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(_))) if !this.inner.is_end_stream() => handed.handed(),
            Poll::Ready(_) => this.handed = None,
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A socket that tells the watchdog when bytes arrive.
struct WatchedIo<I> {
    inner: I,
    activity: Arc<Activity>,
}

impl<I> WatchedIo<I> {
    fn new(inner: I, activity: Arc<Activity>) -> Self {
        WatchedIo { inner, activity }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for WatchedIo<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled
            && buf.filled().len() > before
        {
            self.activity.on_read(&buf.filled()[before..]);
        }
        polled
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for WatchedIo<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.activity.on_write(&polled);
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.inner).poll_flush(cx);
        // A flush that waits is blocked too; one that is done proves nothing
        // (a TCP flush is always done), only accepted bytes do.
        if polled.is_pending() {
            self.activity.on_write(&polled);
        }
        polled
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.activity.on_write(&polled);
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod bind_tests {
    use super::bind;

    #[test]
    fn workers_share_one_port_that_a_second_gateway_cannot_join() {
        let first = bind("127.0.0.1:0".parse().unwrap(), 3).unwrap();
        assert_eq!(first.len(), 3);
        let addr = first[0].local_addr().unwrap();
        assert!(first.iter().all(|l| l.local_addr().unwrap() == addr));
        let second = bind(addr, 2);
        assert_eq!(
            second.map(|_| ()).unwrap_err().kind(),
            std::io::ErrorKind::AddrInUse
        );
        drop(first);
        let again = bind(addr, 1).unwrap();
        assert_eq!(again[0].local_addr().unwrap(), addr);
    }
}
