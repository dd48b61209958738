//! The bodies a request and its answer travel in, in one place: the
//! client's request body on its way upstream (cut off when it stalls or
//! trickles), the upstream's response body (which gives its connection back
//! to the pool when it ends), and what tokengate answers with.
//!
//! Nothing here knows of tokens, routes or the server's connections: every
//! other layer may use these types without depending on each other.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{Either, Full};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::http1::SendRequest;

/// What tokengate answers with: a streamed upstream body or one of its own.
pub type RespBody = Either<UpstreamBody, Full<Bytes>>;

/// Body of a request sent upstream: the client's, streamed (and cut off when
/// it stalls), or one of ours.
pub type ReqBody = Either<StallGuard<Incoming>, Full<Bytes>>;

/// How a request body must keep arriving.
#[derive(Debug, Clone, Copy)]
pub struct BodyPace {
    /// The longest pause (`header_read_timeout_ms`).
    pub gap: Duration,
    /// The slowest rate in bytes per second, counted over each `gap` spent
    /// waiting for the client (`min_body_bytes_per_second`); 0 = none.
    pub min_rate: u64,
}

/// The error of a request body that the client did not keep sending.
#[derive(Debug, thiserror::Error)]
pub enum BodyStalled {
    #[error("the client sent no request body bytes for {0} ms")]
    Paused(u128),
    #[error("the client sent its request body slower than {0} bytes per second")]
    TooSlow(u64),
}

impl BodyStalled {
    /// Is `e`, or one of its sources, a stalled request body?
    pub fn is_cause_of(e: &(dyn std::error::Error + 'static)) -> bool {
        let mut next = Some(e);
        while let Some(err) = next {
            if err.is::<BodyStalled>() {
                return true;
            }
            next = err.source();
        }
        false
    }
}

/// How a request body must keep arriving ([`ConnInfo::body_pace`]), put in a
/// request's extensions by a handler that reads its body; only those pay for
/// the extension map.
#[derive(Debug, Clone, Copy)]
pub struct BodyGap(pub BodyPace);

/// A request body that fails with [`BodyStalled`] when, once asked for its
/// next bytes, the client sends none for `gap`, or when it sends fewer than
/// `min_rate` bytes per second over a `gap` of waiting for it (a body
/// trickled in just under the pause limit). The clocks run only while the
/// reader waits for the client, never while the reader itself is slow.
pub struct StallGuard<B> {
    inner: B,
    pace: BodyPace,
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    progress: Arc<BodyProgress>,
    /// Since when the reader waits for the client, if it does.
    waiting_since: Option<Instant>,
    /// Time spent waiting for the client in the current window, and the bytes
    /// that came in it.
    waited: Duration,
    window_bytes: u64,
}

/// When a request body last moved: each frame read from the client, and its
/// end, count. Read by the proxy's response timer.
#[derive(Debug)]
pub struct BodyProgress {
    start: Instant,
    /// Milliseconds after `start` of the last frame.
    last_ms: AtomicU64,
}

impl BodyProgress {
    /// The instant the body last moved (or the request started).
    pub fn last(&self) -> Instant {
        self.start + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }

    fn moved(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }
}

impl<B: Body> StallGuard<B> {
    pub fn new(inner: B, pace: BodyPace) -> StallGuard<B> {
        StallGuard {
            inner,
            pace,
            waiting_since: None,
            waited: Duration::ZERO,
            window_bytes: 0,
            timer: None,
            progress: Arc::new(BodyProgress {
                start: Instant::now(),
                last_ms: AtomicU64::new(0),
            }),
        }
    }

    /// When the client's body last moved.
    pub fn progress(&self) -> Arc<BodyProgress> {
        self.progress.clone()
    }
}

impl<B> Body for StallGuard<B>
where
    B: Body<Data = bytes::Bytes> + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Data = bytes::Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                this.timer = None;
                this.progress.moved();
                if let Some(since) = this.waiting_since.take() {
                    this.waited += since.elapsed();
                }
                if let Some(Ok(f)) = &frame
                    && let Some(data) = f.data_ref()
                {
                    this.window_bytes += data.len() as u64;
                }
                let min_rate = this.pace.min_rate;
                if min_rate > 0 && this.waited >= this.pace.gap {
                    let waited_ms = this.waited.as_millis() as u64;
                    if this.window_bytes.saturating_mul(1000) < min_rate.saturating_mul(waited_ms) {
                        return Poll::Ready(Some(Err(Box::new(BodyStalled::TooSlow(min_rate)))));
                    }
                    this.waited = Duration::ZERO;
                    this.window_bytes = 0;
                }
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
            Poll::Pending => {
                if this.waiting_since.is_none() {
                    this.waiting_since = Some(Instant::now());
                }
                let gap = this.pace.gap;
                let timer = this
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(gap)));
                match timer.as_mut().poll(cx) {
                    Poll::Ready(()) => {
                        Poll::Ready(Some(Err(Box::new(BodyStalled::Paused(gap.as_millis())))))
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Where a leased upstream connection goes back to (the worker's pool).
pub trait ConnHome: Send + Sync {
    fn put_back(self: Arc<Self>, tx: SendRequest<ReqBody>);
}

/// An upstream connection in use by one exchange.
pub struct Lease {
    tx: SendRequest<ReqBody>,
    home: Arc<dyn ConnHome>,
}

impl Lease {
    pub fn new(tx: SendRequest<ReqBody>, home: Arc<dyn ConnHome>) -> Lease {
        Lease { tx, home }
    }

    /// Gives the connection back for the next exchange.
    pub fn release(self) {
        self.home.put_back(self.tx);
    }
}

/// The body of an upstream response; gives its connection back to the pool
/// once it has ended. Dropped before its end, it closes the connection. (After
/// a `101`, it holds the connection until the upgrade has taken it over.)
pub struct UpstreamBody {
    inner: Incoming,
    lease: Option<Lease>,
}

impl UpstreamBody {
    pub fn new(inner: Incoming, lease: Option<Lease>) -> UpstreamBody {
        UpstreamBody { inner, lease }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(_))) => {
                if this.inner.is_end_stream()
                    && let Some(lease) = this.lease.take()
                {
                    lease.release();
                }
            }
            Poll::Ready(None) => {
                if let Some(lease) = this.lease.take() {
                    lease.release();
                }
            }
            Poll::Ready(Some(Err(_))) => this.lease = None,
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
