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
    /// `ok`, or why the token store cannot be used.
    pub store: String,
    /// PostgreSQL only: the database, and whether other gateways' changes
    /// arrive (`ok`, or why not: this gateway then reads tokens from the
    /// database rather than trusting its cache).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub notifications: Option<String>,
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
    let (mut database, mut notifications) = (None, None);
    let store = match gw.store.get() {
        Err(e) => e.to_string(),
        Ok(store) => {
            let health = store.health().await;
            let mut store_state = "ok".to_string();
            for (part, state) in health.parts {
                match part {
                    "database" => {
                        if state != "ok" {
                            store_state = format!("database: {state}");
                        }
                        database = Some(state);
                    }
                    // Not listening degrades (tokens are read from the
                    // database) but does not make the gateway wrong.
                    "notifications" => notifications = Some(state),
                    _ if state != "ok" => store_state = state,
                    _ => {}
                }
            }
            store_state
        }
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
        database,
        notifications,
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
