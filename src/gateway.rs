//! The life of a request on the public listener, top to bottom (SPEC §1):
//!
//! 1. context: request id, client IP;
//! 2. throttled client → 429;
//! 3. screened: `TRACE`/`CONNECT` → 405, several or broken `Host` → 400, a
//!    token in the query string → 400; the path read as the upstream will
//!    read it: the management API's → served here, never forwarded; one that
//!    cannot be read safely → 400;
//! 4. authenticate: who is calling, and may they (token, password, other, none);
//! 5. rewrite: target, hop-by-hop and identity headers, `X-Forwarded-*`, credential swap;
//! 6. forward, streaming both ways;
//! 7. account: failed upstream logins, metrics.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use http::header::{
    ALLOW, HOST, HeaderName, HeaderValue, RETRY_AFTER, SET_COOKIE, WWW_AUTHENTICATE,
};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;

use crate::api;
use crate::api::path::Target;
use crate::auth::identity::IdentityResolver;
use crate::auth::lockout::{FailureOutcome, Locked, Lockout};
use crate::auth::swap::CredentialSwap;
use crate::auth::throttle::IpThrottle;
use crate::auth::{self, Credential, TokenRefusal};
use crate::clock::SharedClock;
use crate::config::Config;
use crate::error::{ErrorReply, RespBody};
use crate::metrics::{Decision, Metrics, Route};
use crate::net::TrustedProxies;
use crate::proxy::{Origin, ProxyError, Upstream};
use crate::server::{BodyGap, ConnInfo, Handler};
use crate::store::{AuthEntry, Scope, StoreCell};
use crate::token::TokenFormat;

pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
static X_SERAPH_LOGIN_REASON: HeaderName = HeaderName::from_static("x-seraph-loginreason");
static X_AUTH_DENIED_REASON: HeaderName = HeaderName::from_static("x-authentication-denied-reason");
static X_AUSERNAME: HeaderName = HeaderName::from_static("x-ausername");

/// What a reload (SIGHUP) replaces while connections stay up: token rules,
/// auth limits, upstream credentials and the lookup account.
pub struct Live {
    pub config: Config,
    pub swap: CredentialSwap,
    pub identity: IdentityResolver,
    pub throttle: Arc<IpThrottle>,
}

impl Live {
    pub fn build(
        config: &Config,
        env: &dyn Fn(&str) -> Option<String>,
        upstream: Arc<Upstream>,
        clock: SharedClock,
        previous: Option<&Live>,
    ) -> Result<Live, String> {
        let secrets = config.secrets_with(env).map_err(|problems| {
            problems
                .into_iter()
                .map(|(t, k, m)| format!("[{t}] {k}: {m}"))
                .collect::<Vec<_>>()
                .join("; ")
        })?;
        let per_minute = config.auth.failures_per_ip_per_minute;
        // Keep the throttling state unless its quota changed.
        let throttle = match previous {
            Some(p) if p.config.auth.failures_per_ip_per_minute == per_minute => p.throttle.clone(),
            _ => Arc::new(IpThrottle::new(per_minute, clock.clone())),
        };
        Ok(Live {
            swap: CredentialSwap::new(config, &secrets)?,
            identity: IdentityResolver::new(config, &secrets, upstream, clock)?,
            throttle,
            config: config.clone(),
        })
    }
}

/// Keys whose change takes effect only after a restart.
fn restart_only(old: &Config, new: &Config) -> Vec<&'static str> {
    let mut keys = Vec::new();
    let (o, n) = (&old.server, &new.server);
    let server_changed = o.listen != n.listen
        || o.public_url != n.public_url
        || o.tls_cert != n.tls_cert
        || o.tls_key != n.tls_key
        || o.admin_listen != n.admin_listen
        || o.trusted_proxies != n.trusted_proxies
        || o.header_read_timeout_ms != n.header_read_timeout_ms
        || o.min_body_bytes_per_second != n.min_body_bytes_per_second
        || o.idle_timeout_ms != n.idle_timeout_ms
        || o.max_header_bytes != n.max_header_bytes
        || o.max_api_body_bytes != n.max_api_body_bytes
        || o.shutdown_grace_ms != n.shutdown_grace_ms
        || o.workers != n.workers
        || o.max_connections != n.max_connections;
    if server_changed {
        keys.push("[server]");
    }
    let (o, n) = (&old.upstream, &new.upstream);
    let upstream_changed = o.url != n.url
        || o.product != n.product
        || o.connect_timeout_ms != n.connect_timeout_ms
        || o.response_timeout_ms != n.response_timeout_ms
        || o.preserve_host != n.preserve_host
        || o.ca_file != n.ca_file;
    if upstream_changed {
        keys.push("[upstream] url, product, timeouts, preserve_host, ca_file");
    }
    if old.tokens.store_path != new.tokens.store_path {
        keys.push("[tokens] store_path");
    }
    if old.tokens.prefix != new.tokens.prefix {
        keys.push("[tokens] prefix");
    }
    keys
}

/// Everything a request needs, shared by all connections.
pub struct Gateway {
    pub(crate) live: ArcSwap<Live>,
    /// For the gateway's own calls (identity look-ups, readiness); each
    /// worker forwards through its own [`Worker::upstream`].
    pub(crate) upstream: Arc<Upstream>,
    /// The token store; while it is not open, token requests and the
    /// management API get 503 and everything else is forwarded as usual.
    pub(crate) store: StoreCell,
    pub(crate) format: TokenFormat,
    pub(crate) lockout: Lockout,
    pub(crate) trusted: TrustedProxies,
    pub(crate) clock: SharedClock,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) public_url: Option<String>,
    pub(crate) max_api_body: usize,
}

/// Per-request facts every step may need.
pub struct RequestCtx {
    pub client_ip: IpAddr,
    pub request_id: HeaderValue,
    pub scheme: &'static str,
    pub trusted_peer: bool,
    /// The socket peer, ready for `X-Forwarded-For`.
    pub peer_ip_header: HeaderValue,
}

impl RequestCtx {
    pub fn request_id(&self) -> &str {
        self.request_id.to_str().unwrap_or("-")
    }
}

/// Who a forwarded request is sent as.
enum Caller {
    /// No credentials, or another scheme: forwarded as it came.
    Unchanged,
    /// `Basic user:password`: forwarded as it came; an upstream 401 counts.
    Password { user: String },
    /// A valid token: forwarded with the upstream credentials for its owner.
    Token(Arc<AuthEntry>),
}

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
    /// Steps 1–3, then the proxy path (4–7) or the management API.
    async fn handle(
        &self,
        upstream: &Upstream,
        mut req: Request<Incoming>,
        conn: &ConnInfo,
    ) -> Response<RespBody> {
        let ctx = self.context(&req, conn);
        self.metrics.in_flight.inc();
        let (route, mut resp) = if let Err(retry) = self.live.load().throttle.check(ctx.client_ip) {
            self.metrics.decision(Decision::Throttled);
            (Route::Proxy, throttled(retry).into_response())
        } else if let Err(refused) = self.screen(&req) {
            (Route::Proxy, refused.into_response())
        } else {
            match api::path::classify(req.uri().path()) {
                Target::Api => {
                    req.extensions_mut().insert(BodyGap(conn.body_pace));
                    (Route::Api, api::handle(self, req, &ctx).await)
                }
                Target::Upstream => {
                    req.headers_mut()
                        .insert(X_REQUEST_ID.clone(), ctx.request_id.clone());
                    (Route::Proxy, self.proxy(upstream, req, &ctx, conn).await)
                }
                Target::Unsafe => (
                    Route::Proxy,
                    ErrorReply::new(
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
        self.metrics.in_flight.dec();
        resp
    }

    /// Applies a new configuration's live settings; returns the changed keys
    /// that need a restart. On error the running settings stay.
    pub fn reload(
        &self,
        config: &Config,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Vec<&'static str>, String> {
        let current = self.live.load_full();
        let live = Live::build(
            config,
            env,
            self.upstream.clone(),
            self.clock.clone(),
            Some(&current),
        )?;
        let restart = restart_only(&current.config, config);
        self.live.store(Arc::new(live));
        Ok(restart)
    }

    /// Step 3's checks of the request line and headers, before anything is
    /// routed: what no route may serve.
    fn screen(&self, req: &Request<Incoming>) -> Result<(), ErrorReply> {
        if matches!(*req.method(), Method::TRACE | Method::CONNECT) {
            // TRACE would echo the swapped-in credentials back; CONNECT asks
            // for a tunnel to anywhere.
            return Err(ErrorReply::new(
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
                return Err(ErrorReply::new(
                    StatusCode::BAD_REQUEST,
                    "The request has more than one Host header",
                ));
            }
            if !valid_host(host.as_bytes()) {
                return Err(ErrorReply::new(
                    StatusCode::BAD_REQUEST,
                    "The Host header is not a valid host name or address",
                ));
            }
        }
        if let Some(query) = req.uri().query()
            && self.format.in_query(query)
        {
            return Err(ErrorReply::new(
                StatusCode::BAD_REQUEST,
                "A token was sent in the URL; send tokens in the Authorization header (Bearer or Basic), never in the query string",
            ));
        }
        Ok(())
    }

    fn context(&self, req: &Request<Incoming>, conn: &ConnInfo) -> RequestCtx {
        let peer = conn.peer.ip();
        let trusted_peer = self.trusted.contains(peer);
        let client_ip = if trusted_peer {
            self.trusted.client_ip(peer, req.headers())
        } else {
            crate::net::canonical(peer)
        };
        RequestCtx {
            client_ip,
            request_id: request_id(req.headers().get(&X_REQUEST_ID)),
            scheme: conn.scheme(),
            trusted_peer,
            peer_ip_header: conn.peer_ip_header.clone(),
        }
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
        let caller = match self.authenticate(&req, ctx, &live) {
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
            return ErrorReply::new(
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
        self.account(&caller, &resp, ctx, &live);
        resp
    }

    /// Step 4: the rows of SPEC §1 for a request to be forwarded.
    fn authenticate(
        &self,
        req: &Request<Incoming>,
        ctx: &RequestCtx,
        live: &Live,
    ) -> Result<Caller, ErrorReply> {
        match auth::credential(req.headers(), &self.format) {
            Credential::None => {
                self.metrics.decision(Decision::Anonymous);
                Ok(Caller::Unchanged)
            }
            Credential::OtherScheme if live.config.auth.reject_unknown_schemes => {
                self.metrics.decision(Decision::OtherSchemeRefused);
                audit_failure(ctx, None, None, "unknown_scheme");
                Err(unauthorized())
            }
            Credential::OtherScheme => {
                self.metrics.decision(Decision::OtherScheme);
                Ok(Caller::Unchanged)
            }
            Credential::Unreadable => {
                self.metrics.decision(Decision::Invalid);
                Err(self.failed(ctx, live, None, None, "unreadable_authorization"))
            }
            Credential::Password { user } => {
                if !live.config.tokens.allow_password_basic_auth {
                    // The password is never looked at, so this is no guessing oracle: not counted.
                    self.metrics.decision(Decision::PasswordRefused);
                    audit_failure(ctx, Some(&user), None, "password_auth_disabled");
                    return Err(unauthorized());
                }
                if let Some(lock) = self.lockout.locked(&user, ctx.client_ip) {
                    self.metrics.decision(Decision::Locked);
                    audit_failure(ctx, Some(&user), None, "locked");
                    return Err(locked(lock, self.clock.now_ms()));
                }
                self.metrics.decision(Decision::PasswordPassthrough);
                Ok(Caller::Password { user })
            }
            Credential::Token { user, token } => {
                let entry = self.check_token(user.as_deref(), &token, ctx, live)?;
                let read_only_ok =
                    matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
                if entry.scope == Scope::ReadOnly && !read_only_ok {
                    self.metrics.decision(Decision::ReadOnly);
                    audit_failure(ctx, user.as_deref(), Some(&entry), "read_only_scope");
                    return Err(ErrorReply::new(
                        StatusCode::FORBIDDEN,
                        "This token is read-only: only GET, HEAD and OPTIONS requests are allowed",
                    ));
                }
                self.metrics.decision(Decision::Ok);
                self.touch(&entry);
                Ok(Caller::Token(entry))
            }
        }
    }

    /// The token path shared by proxied and API requests: verify, count
    /// failures. One identical 401 for every bad token. A valid token is never
    /// refused for a lockout (it cannot be guessed, so refusing it would only
    /// let a stranger deny its owner service); a bad one with a username
    /// counts against that user from this address, and while that is locked
    /// the answer is the lockout's 403.
    pub(crate) fn check_token(
        &self,
        user: Option<&str>,
        token: &auth::PresentedToken<'_>,
        ctx: &RequestCtx,
        live: &Live,
    ) -> Result<Arc<AuthEntry>, ErrorReply> {
        let now = self.clock.now_ms();
        let verified = match self
            .store
            .with(|store| auth::verify_token(store, &self.format, user, token, now))
        {
            Some(verified) => verified,
            // A malformed token is refused without the store, open or not.
            None if self.format.check(token.expose()).is_err() => Err(TokenRefusal::Malformed),
            None => Err(TokenRefusal::Store(self.store.not_open())),
        };
        match verified {
            Ok(entry) => {
                self.lockout.success(&entry.user_name, ctx.client_ip);
                Ok(entry)
            }
            Err(TokenRefusal::Store(e)) => {
                self.metrics.decision(Decision::StoreUnavailable);
                if self.store.is_open() {
                    tracing::error!(error = %e, request_id = ctx.request_id(), "token store lookup failed; token refused with 503");
                } else {
                    // Logged once per change by the task that keeps trying to open it.
                    tracing::debug!(error = %e, request_id = ctx.request_id(), "token store not open; token refused with 503");
                }
                Err(store_unavailable())
            }
            Err(refusal) => {
                let entry = refusal.entry();
                // Counted against the user named in Basic, never against the
                // owner of a token someone else presents: a Bearer failure
                // counts toward the address's quota only.
                if let Some(lock) = user.and_then(|u| self.lockout.locked(u, ctx.client_ip)) {
                    self.metrics.decision(Decision::Locked);
                    audit_failure(ctx, user, entry, "locked");
                    return Err(locked(lock, now));
                }
                self.metrics.decision(refusal.decision());
                Err(self.failed(ctx, live, user, entry, refusal.reason()))
            }
        }
    }

    /// Notes a successful token use (`lastAccessed`, written in batches).
    pub(crate) fn touch(&self, entry: &AuthEntry) {
        self.store
            .with(|store| store.touch(entry.id, self.clock.now_ms()));
    }

    /// Counts a failed attempt for `user` (the name the client gave, when it
    /// gave one) from the client's address, and for the address's quota, with
    /// its audit event; returns the reply: 401, or 429 when this failure used
    /// up the address's quota. `entry` is the token's, when the store knew it.
    pub(crate) fn failed(
        &self,
        ctx: &RequestCtx,
        live: &Live,
        user: Option<&str>,
        entry: Option<&AuthEntry>,
        reason: &'static str,
    ) -> ErrorReply {
        audit_failure(ctx, user, entry, reason);
        if let Some(user) = user {
            let auth = &live.config.auth;
            let outcome = self.lockout.failure(
                user,
                ctx.client_ip,
                auth.max_failed_attempts,
                auth.lockout_seconds,
            );
            if let FailureOutcome::LockedNow(lock) = outcome {
                self.metrics.lockouts.inc();
                tracing::warn!(
                    target: "audit",
                    event = "lockout",
                    reason = "max_failed_attempts",
                    user,
                    until_ms = lock.until,
                    client_ip = %ctx.client_ip,
                    request_id = ctx.request_id(),
                    "user locked out from this address after repeated failed attempts"
                );
            }
        }
        match live.throttle.failure(ctx.client_ip) {
            Ok(()) => unauthorized(),
            Err(retry) => {
                tracing::warn!(
                    target: "audit",
                    event = "throttled",
                    reason = "failures_per_ip_per_minute",
                    client_ip = %ctx.client_ip,
                    request_id = ctx.request_id(),
                    "client throttled after repeated failed attempts"
                );
                throttled(retry)
            }
        }
    }

    /// Step 7: what the upstream's answer means for the caller's failure count.
    fn account(&self, caller: &Caller, resp: &Response<RespBody>, ctx: &RequestCtx, live: &Live) {
        match caller {
            Caller::Password { user } if resp.status() == StatusCode::UNAUTHORIZED => {
                let _ = self.failed(ctx, live, Some(user), None, "upstream_rejected_password");
            }
            // Only an answer that says the login worked resets the count: a
            // public page answers 200 to any password without looking at it.
            Caller::Password { user } if login_confirmed(resp.headers(), user) => {
                self.lockout.success(user, ctx.client_ip);
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

    fn upstream_failed(&self, e: ProxyError, ctx: &RequestCtx) -> Response<RespBody> {
        let kind = match &e {
            ProxyError::Connect(_) => "connect",
            ProxyError::Broken(_) => "broken",
            ProxyError::Timeout(_) => "timeout",
            ProxyError::BadTarget(_) => "bad_target",
            ProxyError::ClientStalled(_) => "client_stalled",
        };
        if !matches!(e, ProxyError::BadTarget(_) | ProxyError::ClientStalled(_)) {
            self.metrics.upstream_error(kind);
            tracing::warn!(error = %e, request_id = ctx.request_id(), "upstream request failed");
        }
        ErrorReply::from(e).into_response()
    }
}

/// An incoming `X-Request-Id` is kept when it is short and plain; else a new one.
fn request_id(incoming: Option<&HeaderValue>) -> HeaderValue {
    if let Some(v) = incoming {
        let b = v.as_bytes();
        if !b.is_empty()
            && b.len() <= 128
            && b.iter()
                .all(|c| c.is_ascii_alphanumeric() || b"-_.:".contains(c))
        {
            return v.clone();
        }
    }
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let random: [u8; 16] = rand::random();
    let mut id = [0u8; 32];
    for (i, b) in random.iter().enumerate() {
        id[2 * i] = HEX[usize::from(b >> 4)];
        id[2 * i + 1] = HEX[usize::from(b & 15)];
    }
    HeaderValue::from_bytes(&id).unwrap_or(HeaderValue::from_static("0"))
}

/// Did the upstream say the password login of `user` worked? Jira and
/// Confluence answer `X-Seraph-LoginReason: OK` to a login they accepted and
/// name the logged-in user in `X-AUSERNAME` (`anonymous` when nobody is).
fn login_confirmed(headers: &http::HeaderMap, user: &str) -> bool {
    let text = |name: &HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
    text(&X_SERAPH_LOGIN_REASON).is_some_and(|v| v.trim() == "OK")
        || text(&X_AUSERNAME).is_some_and(|v| v.trim().eq_ignore_ascii_case(user))
}

/// A `Host` value as RFC 9112 §3.2 allows it: empty, or host and optional
/// port (no user info, no path).
fn valid_host(value: &[u8]) -> bool {
    value.is_empty()
        || (!value.contains(&b'@')
            && http::uri::Authority::try_from(value)
                .is_ok_and(|a| a.as_str().len() == value.len() && !a.host().is_empty()))
}

/// One audit event per failed authentication (SPEC §8); never a secret.
/// `claimed_user` is the name the client gave (Basic), `token_owner_key` the
/// owner of the presented token when the store knew it: on a wrong-user
/// token they are different people, and the event says both.
pub(crate) fn audit_failure(
    ctx: &RequestCtx,
    claimed_user: Option<&str>,
    token: Option<&AuthEntry>,
    reason: &'static str,
) {
    tracing::info!(
        target: "audit",
        event = "auth_failed",
        reason,
        claimed_user = claimed_user.unwrap_or(""),
        token_owner_key = token.map_or("", |t| t.user_key.as_str()),
        token_id = token.map_or(0, |t| t.id),
        client_ip = %ctx.client_ip,
        request_id = ctx.request_id(),
        "authentication failed"
    );
}

/// The one 401 for every bad token or refused credential (SPEC §1).
pub(crate) fn unauthorized() -> ErrorReply {
    ErrorReply::new(
        StatusCode::UNAUTHORIZED,
        "Token is invalid, has been revoked or expired",
    )
    .with_header(
        WWW_AUTHENTICATE,
        HeaderValue::from_static("Basic realm=\"tokengate\", Bearer realm=\"tokengate\""),
    )
    .with_header(
        X_SERAPH_LOGIN_REASON.clone(),
        HeaderValue::from_static("AUTHENTICATED_FAILED"),
    )
}

/// The 503 of a request that needs the token store while it is unavailable
/// (SPEC §2: fail closed).
pub(crate) fn store_unavailable() -> ErrorReply {
    ErrorReply::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "The token store is unavailable; please try again later",
    )
    .with_header(RETRY_AFTER, HeaderValue::from_static("5"))
}

pub(crate) fn locked(lock: Locked, now_ms: u64) -> ErrorReply {
    let mut reply = ErrorReply::new(
        StatusCode::FORBIDDEN,
        "This user is locked out after too many failed login attempts",
    )
    .with_header(
        X_SERAPH_LOGIN_REASON.clone(),
        HeaderValue::from_static("AUTHENTICATION_DENIED"),
    )
    .with_header(
        X_AUTH_DENIED_REASON.clone(),
        HeaderValue::from_static("LOCKED"),
    );
    if let Some(secs) = lock.retry_after_secs(now_ms) {
        reply = reply.with_header(RETRY_AFTER, HeaderValue::from(secs));
    }
    reply
}

pub(crate) fn throttled(retry_after_secs: u64) -> ErrorReply {
    ErrorReply::new(
        StatusCode::TOO_MANY_REQUESTS,
        "Too many failed login attempts from this address; try again later",
    )
    .with_header(RETRY_AFTER, HeaderValue::from(retry_after_secs))
}
