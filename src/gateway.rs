//! The life of a request on the public listener, top to bottom:
//!
//! 1. context: request id, client IP;
//! 2. throttled client → 429;
//! 3. screened: `TRACE`/`CONNECT` → 405, several or broken `Host` → 400, a
//!    token in the query string → 400; the path read as the upstream will
//!    read it: the management API's → served here, never forwarded; under
//!    `ui.path` → tokengate's pages, never forwarded; one that cannot be read
//!    safely → 400;
//! 4. authenticate: who is calling, and may they (token, password, other, none);
//! 5. rewrite: target, hop-by-hop and identity headers, `X-Forwarded-*`, credential swap;
//! 6. forward, streaming both ways;
//! 7. account: failed upstream logins, metrics.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Instant;

use http::header::{ALLOW, HOST, HeaderValue, SET_COOKIE};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;

use crate::api;
use crate::api::path::Target;
use crate::auth::policy::{Caller, login_confirmed};
use crate::body::BodyGap;
use crate::error::{ErrorReply, Fault, RespBody};
use crate::metrics::{Decision, Route};
use crate::proxy::{Origin, ProxyError, Upstream};
pub use crate::request::{RequestCtx, X_REQUEST_ID};
use crate::server::{ConnInfo, Handler};
pub use crate::state::{Gateway, Live};
use crate::ui;

/// One worker's view of the gateway: the shared state, and the worker's own
/// pool of upstream connections (kept on the worker's event loop).
pub struct Worker {
    pub gateway: Arc<Gateway>,
    pub upstream: Arc<Upstream>,
}

impl Handler for Worker {
    async fn handle(&self, req: Request<Incoming>, conn: &ConnInfo) -> Response<RespBody> {
        self.gateway.handle(&self.upstream, req, conn).await
    }
}

impl Gateway {
    /// Steps 1–3, then the proxy path (4–7), the management API or the pages.
    async fn handle(
        &self,
        upstream: &Upstream,
        mut req: Request<Incoming>,
        conn: &ConnInfo,
    ) -> Response<RespBody> {
        let ctx = RequestCtx::new(req.headers(), conn, &self.trusted);
        let _in_flight = self.metrics.in_flight();
        let (route, mut resp) = if let Err(refusal) = self.auth.admit(&ctx) {
            (Route::Proxy, refusal.reply().into_response())
        } else if let Err(refused) = self.screen(&req) {
            (Route::Proxy, refused.into_response())
        } else {
            match api::path::classify(req.uri().path()) {
                Target::Api => {
                    req.extensions_mut().insert(BodyGap(conn.body_pace));
                    (Route::Api, api::handle(self, req, &ctx).await)
                }
                Target::Upstream if let Some((root, rest)) = self.page_of(&req) => (
                    Route::Pages,
                    ui::handle(self, &req, &ctx, root, &rest).await,
                ),
                Target::Upstream => {
                    req.headers_mut()
                        .insert(X_REQUEST_ID.clone(), ctx.request_id.clone());
                    (Route::Proxy, self.proxy(upstream, req, &ctx, conn).await)
                }
                Target::Unsafe => (
                    Route::Proxy,
                    ErrorReply::client(
                        StatusCode::BAD_REQUEST,
                        "The request path cannot be read safely: it climbs above the root or has a broken %-escape",
                    )
                    .into_response(),
                ),
            }
        };
        resp.headers_mut()
            .insert(X_REQUEST_ID.clone(), ctx.request_id.clone());
        self.metrics.request(route, resp.status().as_u16());
        resp
    }

    /// The pages' root and the rest of the path, when `req` is for the pages.
    fn page_of<'r>(&self, req: &'r Request<Incoming>) -> Option<(&str, Cow<'r, str>)> {
        let root = self.pages.as_deref()?;
        api::path::under(req.uri().path(), root).map(|rest| (root, rest))
    }

    /// Step 3's checks of the request line and headers, before anything is
    /// routed: what no route may serve.
    fn screen(&self, req: &Request<Incoming>) -> Result<(), ErrorReply> {
        if matches!(*req.method(), Method::TRACE | Method::CONNECT) {
            // TRACE would echo the swapped-in credentials back; CONNECT asks
            // for a tunnel to anywhere.
            return Err(ErrorReply::client(
                StatusCode::METHOD_NOT_ALLOWED,
                "TRACE and CONNECT are not supported",
            )
            .with_header(
                ALLOW,
                HeaderValue::from_static("GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"),
            ));
        }
        let mut hosts = req.headers().get_all(HOST).iter();
        if let Some(host) = hosts.next() {
            if hosts.next().is_some() {
                return Err(ErrorReply::client(
                    StatusCode::BAD_REQUEST,
                    "The request has more than one Host header",
                ));
            }
            if !valid_host(host.as_bytes()) {
                return Err(ErrorReply::client(
                    StatusCode::BAD_REQUEST,
                    "The Host header is not a valid host name or address",
                ));
            }
        }
        if let Some(query) = req.uri().query()
            && self.auth.format().in_query(query)
        {
            return Err(ErrorReply::client(
                StatusCode::BAD_REQUEST,
                "A token was sent in the URL; send tokens in the Authorization header (Bearer or Basic), never in the query string",
            ));
        }
        Ok(())
    }

    async fn proxy(
        &self,
        upstream: &Upstream,
        mut req: Request<Incoming>,
        ctx: &RequestCtx,
        conn: &ConnInfo,
    ) -> Response<RespBody> {
        // Held across the upstream exchange: an owned snapshot, not a guard.
        let live = self.live.load_full();
        let caller = match self.authenticate(&req, ctx).await {
            Ok(caller) => caller,
            Err(reply) => return reply.into_response(),
        };
        let origin = Origin {
            peer_ip: &ctx.peer_ip_header,
            trusted_peer: ctx.trusted_peer,
            scheme: ctx.scheme,
        };
        let upgrade = match upstream.rewrite(&mut req, &origin, live.swap.protected()) {
            Ok(upgrade) => upgrade,
            Err(e) => return ErrorReply::from(e).into_response(),
        };
        if let Caller::Token(entry) = &caller
            && live
                .swap
                .apply(req.headers_mut(), &entry.user_name)
                .is_err()
        {
            tracing::error!(token_id = entry.id, user_key = %entry.user_key, "token owner's username cannot be sent in a header");
            return ErrorReply::ours(
                StatusCode::INTERNAL_SERVER_ERROR,
                "The token owner cannot be forwarded",
            )
            .into_response();
        }
        let started = Instant::now();
        let forwarded = upstream.forward(req, upgrade, &conn.hold).await;
        self.metrics
            .upstream_duration
            .observe(started.elapsed().as_secs_f64());
        let mut resp = match forwarded {
            Ok(resp) => resp,
            Err(e) => return self.upstream_failed(e, ctx),
        };
        if matches!(caller, Caller::Token(_)) {
            // An upstream session made for a token request would outlive the
            // token's scope, expiry and revocation: it is never handed out.
            resp.headers_mut().remove(SET_COOKIE);
        }
        self.account(&caller, &resp, ctx).await;
        resp
    }

    /// Step 4: who is calling, and may they, as the [`Authenticator`] decides.
    async fn authenticate(
        &self,
        req: &Request<Incoming>,
        ctx: &RequestCtx,
    ) -> Result<Caller, ErrorReply> {
        let caller = self
            .auth
            .identify(req.headers(), ctx)
            .await
            .and_then(|caller| {
                self.auth.forward_password(&caller, ctx)?;
                self.auth.permit(&caller, req, ctx)?;
                Ok(caller)
            })
            .map_err(|refusal| refusal.reply())?;
        self.metrics.decision(match &caller {
            // A session is read only on tokengate's own routes, never here.
            Caller::Anonymous | Caller::Session(_) => Decision::Anonymous,
            Caller::OtherScheme => Decision::OtherScheme,
            Caller::Password { .. } => Decision::PasswordPassthrough,
            Caller::Token(_) => Decision::Ok,
        });
        Ok(caller)
    }

    /// Step 7: what the upstream's answer means for the caller's failure count.
    async fn account(&self, caller: &Caller, resp: &Response<RespBody>, ctx: &RequestCtx) {
        match caller {
            Caller::Password { user } if resp.status() == StatusCode::UNAUTHORIZED => {
                let _ = self
                    .auth
                    .password_failed(user, ctx, "upstream_rejected_password")
                    .await;
            }
            // Only an answer that says the login worked resets the count: a
            // public page answers 200 to any password without looking at it.
            Caller::Password { user } if login_confirmed(resp.headers(), user) => {
                self.auth.password_confirmed(user, ctx).await;
            }
            Caller::Token(entry) if resp.status() == StatusCode::UNAUTHORIZED => {
                // The upstream refused the credentials we swapped in: a configuration problem.
                self.metrics.upstream_error("credentials_rejected");
                tracing::error!(
                    token_id = entry.id,
                    user_key = %entry.user_key,
                    request_id = ctx.request_id(),
                    "the upstream answered 401 to the swapped-in credentials; check [upstream.credentials]"
                );
            }
            _ => {}
        }
    }

    /// The upstream's failures are counted and logged; the client's only answered.
    fn upstream_failed(&self, e: ProxyError, ctx: &RequestCtx) -> Response<RespBody> {
        if e.fault() == Fault::Upstream {
            self.metrics.upstream_error(e.kind());
            tracing::warn!(error = %e, request_id = ctx.request_id(), "upstream request failed");
        } else {
            tracing::debug!(error = %e, request_id = ctx.request_id(), "request could not be forwarded");
        }
        ErrorReply::from(e).into_response()
    }
}

/// A `Host` value as RFC 9112 §3.2 allows it: empty, or host and optional
/// port (no user info, no path).
fn valid_host(value: &[u8]) -> bool {
    value.is_empty()
        || (!value.contains(&b'@')
            && http::uri::Authority::try_from(value)
                .is_ok_and(|a| a.as_str().len() == value.len() && !a.host().is_empty()))
}
