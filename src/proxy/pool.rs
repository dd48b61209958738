//! A keep-alive pool of HTTP/1.1 connections to the one upstream, built on
//! hyper's connection API.
//!
//! Each worker has its own pool on its own single-threaded event loop, and
//! every connection goes to the same place, so this needs none of a general
//! client's machinery (pool keys, waiters, connection races, a task per
//! request to watch for the connection's return). A request takes the most
//! recently used idle connection, or opens one; the connection comes back
//! when the response body has ended (or at once, for a response without a
//! body), and is closed instead when the body is dropped before its end, when
//! the exchange failed, or when the upstream switched protocols.
//!
//! Idle connections are capped in number and closed after [`IDLE_TIMEOUT`]
//! without use, by a sweeper task that runs only while some are idle.

use std::future::poll_fn;

use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};

use std::time::Duration;

use http::{Request, Response, StatusCode, Uri};
use hyper::body::{Body, Incoming};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use tower_service::Service;

use crate::body::{ConnHome, Lease, ReqBody, UpstreamBody};

/// How long a connection may stay idle in the pool.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Idle connections are checked this many times per [`IDLE_TIMEOUT`]; one
/// idle for that many checks is closed (so after 45 to 60 s without use).
const SWEEPS_PER_TIMEOUT: u32 = 4;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Why a request got no response head.
#[derive(Debug)]
pub enum SendError {
    /// No connection could be opened (DNS, TCP, TLS).
    Connect(BoxError),
    /// The exchange on an open connection failed.
    Request(hyper::Error),
}

/// Connections to the upstream: how to open one, and those idle.
pub struct Pool {
    connector: HttpsConnector<HttpConnector>,
    /// Where the connector connects: the upstream's scheme and authority.
    target: Uri,
    shared: Arc<Shared>,
}

/// The part a response body needs to give its connection back.
struct Shared {
    idle: Mutex<Idle>,
    max_idle: usize,
    sweep_every: Duration,
}

struct Idle {
    /// Most recently returned last.
    conns: Vec<IdleConn>,
    /// Advanced by the sweeper every `sweep_every`.
    epoch: u32,
    sweeping: bool,
}

struct IdleConn {
    tx: SendRequest<ReqBody>,
    /// The sweeper's epoch when it was returned.
    since: u32,
}

impl ConnHome for Shared {
    fn put_back(self: Arc<Self>, tx: SendRequest<ReqBody>) {
        self.put(tx);
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Idle> {
        // Nothing panics while holding it; should something, the list is still sound.
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes the most recently returned connection that can take a request.
    fn checkout(&self) -> Option<SendRequest<ReqBody>> {
        let mut idle = self.lock();
        while let Some(conn) = idle.conns.pop() {
            if conn.tx.is_ready() {
                return Some(conn.tx);
            }
            // Closed by the upstream meanwhile: dropped.
        }
        None
    }

    /// Gives back a connection whose exchange is over.
    fn put(self: &Arc<Self>, tx: SendRequest<ReqBody>) {
        if tx.is_ready() {
            self.idle(tx);
        } else if !tx.is_closed() {
            // The connection has not yet taken note of the response's end
            // (rare: it does so before handing over the last bytes). Waits
            // for it on the event loop, or closes it when there is none.
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                let shared = Arc::downgrade(self);
                let mut tx = tx;
                rt.spawn(async move {
                    if tx.ready().await.is_ok()
                        && let Some(shared) = shared.upgrade()
                    {
                        shared.idle(tx);
                    }
                });
            }
        }
    }

    fn idle(self: &Arc<Self>, tx: SendRequest<ReqBody>) {
        let mut idle = self.lock();
        if idle.conns.len() >= self.max_idle {
            return;
        }
        let since = idle.epoch;
        idle.conns.push(IdleConn { tx, since });
        if !idle.sweeping
            && let Ok(rt) = tokio::runtime::Handle::try_current()
        {
            idle.sweeping = true;
            rt.spawn(sweep(Arc::downgrade(self), self.sweep_every));
        }
    }
}

/// Closes connections idle for [`IDLE_TIMEOUT`]; ends when none is idle (or
/// the pool is gone).
async fn sweep(shared: Weak<Shared>, every: Duration) {
    loop {
        tokio::time::sleep(every).await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let mut idle = shared.lock();
        idle.epoch = idle.epoch.wrapping_add(1);
        let epoch = idle.epoch;
        idle.conns
            .retain(|c| epoch.wrapping_sub(c.since) < SWEEPS_PER_TIMEOUT && !c.tx.is_closed());
        if idle.conns.is_empty() {
            idle.sweeping = false;
            return;
        }
    }
}

impl Pool {
    pub fn new(connector: HttpsConnector<HttpConnector>, target: Uri, max_idle: usize) -> Pool {
        Pool {
            connector,
            target,
            shared: Arc::new(Shared {
                idle: Mutex::new(Idle {
                    conns: Vec::new(),
                    epoch: 0,
                    sweeping: false,
                }),
                max_idle: max_idle.max(1),
                sweep_every: IDLE_TIMEOUT / SWEEPS_PER_TIMEOUT,
            }),
        }
    }

    /// Opens a connection; its I/O runs as a task on the current event loop
    /// until the upstream closes it, the pool drops it, or it is upgraded.
    async fn connect(&self) -> Result<SendRequest<ReqBody>, SendError> {
        let mut connector = self.connector.clone();
        poll_fn(|cx| connector.poll_ready(cx))
            .await
            .map_err(SendError::Connect)?;
        let io = connector
            .call(self.target.clone())
            .await
            .map_err(SendError::Connect)?;
        let (tx, conn) = http1::Builder::new()
            .handshake(io)
            .await
            .map_err(SendError::Request)?;
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(error = %e, "upstream connection ended with an error");
            }
        });
        Ok(tx)
    }

    /// Sends a request (origin-form target, `Host` set) on an idle connection
    /// or a new one. A request that a reused connection closed before taking
    /// it is sent again, as nothing of it reached the upstream.
    pub async fn send(
        &self,
        mut req: Request<ReqBody>,
    ) -> Result<Response<UpstreamBody>, SendError> {
        loop {
            let (mut tx, reused) = match self.shared.checkout() {
                Some(tx) => (tx, true),
                // Rare, and a large future: boxed, so that every request's is small.
                None => (Box::pin(self.connect()).await?, false),
            };
            match tx.try_send_request(req).await {
                Ok(resp) => return Ok(self.lease(tx, resp)),
                Err(mut e) => match e.take_message() {
                    Some(unsent) if reused => req = unsent,
                    _ => return Err(SendError::Request(e.into_error())),
                },
            }
        }
    }

    fn lease(&self, tx: SendRequest<ReqBody>, resp: Response<Incoming>) -> Response<UpstreamBody> {
        let lease = Lease::new(tx, self.shared.clone());
        if resp.body().is_end_stream() && resp.status() != StatusCode::SWITCHING_PROTOCOLS {
            // Nothing will read this body: the connection is free now.
            lease.release();
            return resp.map(|inner| UpstreamBody::new(inner, None));
        }
        resp.map(|inner| UpstreamBody::new(inner, Some(lease)))
    }
}
