//! A webhook receiver for the notice tests: keeps each POST's headers and
//! body, and can answer the next ones 503 (a receiver that is down).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

#[derive(Debug, Clone)]
pub struct Hooked {
    pub headers: HeaderMap,
    pub body: Bytes,
}

#[derive(Default)]
struct State {
    seen: Mutex<Vec<Hooked>>,
    refuse: AtomicU32,
}

pub struct HookReceiver {
    pub addr: SocketAddr,
    state: Arc<State>,
}

impl HookReceiver {
    pub async fn start() -> HookReceiver {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state: Arc<State> = Arc::default();
        let s = state.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let s = s.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<Incoming>| {
                        let s = s.clone();
                        async move {
                            let (parts, body) = req.into_parts();
                            let body = body
                                .collect()
                                .await
                                .map(|b| b.to_bytes())
                                .unwrap_or_default();
                            let refused = s
                                .refuse
                                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                                    n.checked_sub(1)
                                })
                                .is_ok();
                            let status = if refused {
                                StatusCode::SERVICE_UNAVAILABLE
                            } else {
                                s.seen.lock().unwrap().push(Hooked {
                                    headers: parts.headers,
                                    body,
                                });
                                StatusCode::NO_CONTENT
                            };
                            let mut r = Response::new(Full::new(Bytes::new()));
                            *r.status_mut() = status;
                            Ok::<_, Infallible>(r)
                        }
                    });
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        HookReceiver { addr, state }
    }

    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    pub fn refuse_next(&self, n: u32) {
        self.state.refuse.store(n, Ordering::SeqCst);
    }

    pub fn seen(&self) -> Vec<Hooked> {
        self.state.seen.lock().unwrap().clone()
    }
}
