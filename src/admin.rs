//! The admin listener (`server.admin_listen`), never the public one:
//! `/healthz` (the process answers), `/readyz` (store open and writable,
//! upstream reachable, else 503) and `/metrics` (Prometheus text).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use serde::Serialize;

use crate::error::{ErrorReply, RespBody, json_response};
use crate::server::{ConnInfo, Handler};
use crate::state::Gateway;

/// How long a readiness answer is reused, so probes cannot hammer the upstream.
const READY_CACHE: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Serialize)]
pub struct Readiness {
    pub ready: bool,
    pub store: String,
    pub upstream: String,
}

pub struct Admin {
    gateway: Arc<Gateway>,
    last: Mutex<Option<(Instant, Readiness)>>,
}

impl Admin {
    pub fn new(gateway: Arc<Gateway>) -> Admin {
        Admin {
            gateway,
            last: Mutex::new(None),
        }
    }

    /// Checks the store and the upstream; reuses an answer younger than a second.
    pub async fn readiness(&self) -> Readiness {
        if let Some((at, r)) = self.last.lock().ok().and_then(|l| l.clone())
            && at.elapsed() < READY_CACHE
        {
            return r;
        }
        let r = check(&self.gateway).await;
        if let Ok(mut last) = self.last.lock() {
            *last = Some((Instant::now(), r.clone()));
        }
        r
    }
}

/// The readiness checks themselves; also run periodically for the `tokengate_ready` gauge.
pub async fn check(gw: &Gateway) -> Readiness {
    let store = match gw.store.get() {
        Err(e) => e.to_string(),
        Ok(store) => match store.count() {
            Err(e) => e.to_string(),
            // After a failed write, ready again only once a write works.
            Ok(_) if store.write_problem().is_some() => {
                match tokio::task::spawn_blocking(move || store.probe_write()).await {
                    Ok(Ok(())) => "ok".to_string(),
                    Ok(Err(e)) => format!("writes fail: {e}"),
                    Err(e) => format!("writes fail: {e}"),
                }
            }
            Ok(_) => "ok".to_string(),
        },
    };
    let upstream = match gw.upstream.probe().await {
        Ok(_) => "ok".to_string(),
        Err(e) => e.to_string(),
    };
    let ready = store == "ok" && upstream == "ok";
    gw.metrics.ready.set(i64::from(ready));
    Readiness {
        ready,
        store,
        upstream,
    }
}

impl Handler for Admin {
    async fn handle(&self, req: Request<Incoming>, _conn: &ConnInfo) -> Response<RespBody> {
        let get = matches!(*req.method(), Method::GET | Method::HEAD);
        match (get, req.uri().path()) {
            (true, "/healthz") => {
                json_response(StatusCode::OK, &serde_json::json!({"status": "ok"}))
            }
            (true, "/readyz") => {
                let r = self.readiness().await;
                let status = if r.ready {
                    StatusCode::OK
                } else {
                    StatusCode::SERVICE_UNAVAILABLE
                };
                json_response(status, &r)
            }
            (true, "/metrics") => {
                let mut resp = Response::new(Either::Right(Full::new(Bytes::from(
                    self.gateway.metrics.encode(),
                ))));
                resp.headers_mut().insert(
                    CONTENT_TYPE,
                    HeaderValue::from_static(
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    ),
                );
                resp
            }
            (false, "/healthz" | "/readyz" | "/metrics") => ErrorReply::client(
                StatusCode::METHOD_NOT_ALLOWED,
                "Only GET and HEAD are allowed here",
            )
            .into_response(),
            _ => ErrorReply::client(StatusCode::NOT_FOUND, "No such resource").into_response(),
        }
    }
}
