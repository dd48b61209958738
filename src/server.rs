//! Listening sockets, TLS, connections and their timeouts, graceful shutdown.
//!
//! HTTP/1.1 and HTTP/2 come through hyper-util's auto builder. Two timeouts
//! are enforced per connection by a watchdog rather than by hyper, because
//! hyper's header-read timer also runs while a keep-alive connection is idle,
//! which would make the idle timeout meaningless:
//! - `header_read_timeout_ms`: from the first byte of a request head (or from
//!   the connection's start, for its first request) to the complete head;
//! - `idle_timeout_ms`: a connection with nothing in flight and no new bytes.

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
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::error::RespBody;

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
}

impl ConnInfo {
    pub fn scheme(&self) -> &'static str {
        if self.tls { "https" } else { "http" }
    }
}

/// Per-connection limits from `[server]`.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_header_bytes: usize,
}

/// Loads the listener's certificate chain and key (PEM) into a TLS acceptor
/// that offers HTTP/2 and HTTP/1.1.
pub fn tls_acceptor(cert: &str, key: &str) -> Result<TlsAcceptor, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect::<Result<_, _>>())
        .map_err(|e| format!("[server] tls_cert {cert:?}: {e}"))?;
    if certs.is_empty() {
        return Err(format!("[server] tls_cert {cert:?}: no certificate found"));
    }
    let key =
        PrivateKeyDer::from_pem_file(key).map_err(|e| format!("[server] tls_key {key:?}: {e}"))?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| format!("TLS set-up failed: {e}"))?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .map_err(|e| format!("[server] tls_cert/tls_key: {e}"))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
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
/// task on `tracker` and is asked to finish gracefully at shutdown.
pub async fn serve<H: Handler>(
    listener: std::net::TcpListener,
    tls: Option<TlsAcceptor>,
    handler: Arc<H>,
    limits: Limits,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        // Our watchdog enforces the header timeout; hyper's would also cut idle keep-alive.
        .header_read_timeout(None)
        .max_buf_size(limits.max_header_bytes.max(8192));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX));
    let builder = Arc::new(builder);
    let listener = match TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "cannot register the listening socket");
            return;
        }
    };
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
        let _ = stream.set_nodelay(true);
        let handler = handler.clone();
        let builder = builder.clone();
        let tls = tls.clone();
        let shutdown = shutdown.clone();
        tracker.spawn(async move {
            connection(stream, peer, tls, handler, builder, limits, shutdown).await;
        });
    }
}

async fn connection<H: Handler>(
    stream: TcpStream,
    peer: SocketAddr,
    tls: Option<TlsAcceptor>,
    handler: Arc<H>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    limits: Limits,
    shutdown: CancellationToken,
) {
    let activity = Arc::new(Activity::new());
    let peer_ip = crate::net::canonical(peer.ip());
    let info = Arc::new(ConnInfo {
        peer,
        peer_ip_header: HeaderValue::from_str(&peer_ip.to_string())
            .unwrap_or(HeaderValue::from_static("unknown")),
        tls: tls.is_some(),
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
        Some(acceptor) => {
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
        }
    }
}

async fn drive<H, I>(
    io: WatchedIo<I>,
    info: Arc<ConnInfo>,
    handler: Arc<H>,
    builder: Arc<auto::Builder<TokioExecutor>>,
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
            async move {
                let resp = handler.handle(req, &info).await;
                Ok::<_, Infallible>(resp.map(|body| TrackedBody {
                    inner: body,
                    _guard: guard,
                }))
            }
        })
    };
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    tokio::pin!(conn);
    let watchdog = watchdog(&activity, limits);
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
                conn.as_mut().graceful_shutdown();
                draining = true;
            }
            verdict = &mut watchdog, if !draining => match verdict {
                Verdict::Idle => {
                    conn.as_mut().graceful_shutdown();
                    draining = true;
                }
                Verdict::HeaderTimeout => {
                    tracing::debug!(%peer, "request head not received in time; closing the connection");
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
    fn deadline(&self, limits: &Limits) -> Option<(u64, Verdict)> {
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
            // Busy: look again later; activity only ever moves deadlines out.
            None => limits.idle_timeout.as_millis() as u64,
        };
        tokio::time::sleep(Duration::from_millis(wait.max(1))).await;
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
}

impl Body for TrackedBody {
    type Data = bytes::Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
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
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
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
