//! An upstream that records every request and echoes what it received.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::TryStreamExt;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::secrets;

pub type BoxBody = http_body_util::combinators::BoxBody<Bytes, std::io::Error>;

/// A request as the echo upstream saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub target: String,
    pub version: http::Version,
    pub headers: HeaderMap,
    pub body_len: u64,
}

/// An upstream that records every request and answers by path:
/// - `/download/<n>`: streams `n` bytes;
/// - `/slow`: answers after 30 s;
/// - `/upgrade` with an `Upgrade` header: `101 Switching Protocols` to the
///   protocol asked for, then echoes bytes;
/// - anything else: JSON describing the request.
pub struct EchoUpstream {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl EchoUpstream {
    pub async fn start() -> EchoUpstream {
        secrets::scan_logs();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let s = seen.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let s = s.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| {
                        let s = s.clone();
                        async move { Ok::<_, Infallible>(echo(req, s).await) }
                    });
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection_with_upgrades(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        EchoUpstream { addr, seen }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    pub fn last(&self) -> Seen {
        self.seen()
            .last()
            .cloned()
            .expect("the upstream saw a request")
    }

    /// The request the upstream saw for `target`, if any.
    pub fn seen_at(&self, target: &str) -> Option<Seen> {
        self.seen().into_iter().find(|r| r.target == target)
    }
}

fn full(b: impl Into<Bytes>) -> BoxBody {
    Full::new(b.into()).map_err(|never| match never {}).boxed()
}

async fn echo(req: Request<Incoming>, seen: Arc<Mutex<Vec<Seen>>>) -> Response<BoxBody> {
    let method = req.method().to_string();
    let target = req
        .uri()
        .path_and_query()
        .map(|p| p.to_string())
        .unwrap_or_default();
    let version = req.version();
    let headers = req.headers().clone();
    let path = req.uri().path().to_string();
    if path == "/upgrade" && req.headers().contains_key("upgrade") {
        let upgrade = headers["upgrade"].clone();
        seen.lock().unwrap().push(Seen {
            method,
            target,
            version,
            headers,
            body_len: 0,
        });
        let mut req = req;
        let on_upgrade = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            if let Ok(upgraded) = on_upgrade.await {
                let mut io = TokioIo::new(upgraded);
                let mut buf = [0u8; 1024];
                loop {
                    match io.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if io.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                        }
                    }
                }
            }
        });
        return Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header("upgrade", upgrade)
            .header("connection", "upgrade")
            .body(full(Bytes::new()))
            .unwrap();
    }
    // Consume the body chunk by chunk, counting, never holding it whole.
    let mut body = req.into_body();
    let mut body_len = 0u64;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(f) => body_len += f.data_ref().map_or(0, |d| d.len() as u64),
            Err(_) => break,
        }
    }
    seen.lock().unwrap().push(Seen {
        method: method.clone(),
        target: target.clone(),
        version,
        headers: headers.clone(),
        body_len,
    });
    if let Some(n) = path.strip_prefix("/download/") {
        let total: u64 = n.parse().unwrap_or(0);
        return Response::builder()
            .header("content-length", total.to_string())
            .body(stream_of(total))
            .unwrap();
    }
    if path == "/slow" {
        tokio::time::sleep(Duration::from_secs(30)).await;
    }
    let hdrs: Vec<(String, String)> = headers
        .iter()
        .map(|(k, v)| {
            (
                k.to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let body = json!({"method": method, "target": target, "headers": hdrs, "bodyLen": body_len});
    Response::builder()
        .header("content-type", "application/json")
        .header("connection", "keep-alive, x-upstream-private")
        .header("x-upstream-private", "hop")
        .header("keep-alive", "timeout=5")
        .body(full(body.to_string()))
        .unwrap()
}

/// `total` bytes in 64 KiB chunks, generated as they are sent.
pub fn stream_of(total: u64) -> BoxBody {
    StreamBody::new(bytes_of(total, b'x').map_ok(Frame::data)).boxed()
}

/// `total` bytes `byte` in 64 KiB chunks, generated as they are sent (an
/// upload that is never held whole).
pub fn bytes_of(
    total: u64,
    byte: u8,
) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> + Send + Sync + 'static {
    const CHUNK: u64 = 64 * 1024;
    let chunk = Bytes::from(vec![byte; CHUNK as usize]);
    futures_util::stream::unfold(0u64, move |sent| {
        let chunk = chunk.clone();
        async move {
            if sent >= total {
                return None;
            }
            let n = CHUNK.min(total - sent);
            Some((Ok(chunk.slice(..n as usize)), sent + n))
        }
    })
}
