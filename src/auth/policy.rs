//! The authentication policy, decided in one place for every way in (the
//! proxy path and the management API): who presents an `Authorization`
//! header, whether they may go on, and what each failure costs.
//!
//! [`Authenticator::identify`] reads the header, checks a token (checksum,
//! store, expiry, owner), applies lockout and the per-address quota, writes
//! the audit event and the metric of each refusal, and answers
//! `Result<Caller, Refusal>`; the status code of a refusal follows from its
//! variant ([`Refusal::reply`]). The places that enforce the policy (the
//! proxy, the management API) only ask, and say what happened afterwards:
//! a password the upstream refused ([`Authenticator::password_failed`]) or
//! confirmed ([`Authenticator::password_confirmed`]).
//!
//! The rules:
//! - a valid token is never refused because of a lockout: it cannot be
//!   guessed, so refusing it would only let a stranger deny its owner service;
//! - failures count per user *and* client address, against the name the
//!   client gave (Basic), never against a token's owner; while that pair is
//!   locked, password and named-token attempts from the address get the
//!   lockout's 403;
//! - every failure counts toward the address's quota (429 beyond it);
//! - a READ_ONLY token may only read (GET, HEAD, OPTIONS), on the proxy path
//!   and on the management API alike ([`Authenticator::permit`]);
//! - on tokengate's own routes (the management API and the pages), a request
//!   without `Authorization` is the browser's upstream session, from its
//!   `Cookie` ([`Authenticator::identify_own`]); an `Authorization` header
//!   always goes first. A session request that changes something must carry
//!   `X-Atlassian-Token: no-check` and, when the browser names its origin,
//!   come from the public origin: a page elsewhere cannot set that header on
//!   a form, and a script elsewhere cannot send it without the browser
//!   saying where it runs (CSRF).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arc_swap::ArcSwap;
use http::header::{HeaderName, HeaderValue, ORIGIN, RETRY_AFTER, WWW_AUTHENTICATE};
use http::{HeaderMap, Method, Request, StatusCode};

use super::lockout::{FailureOutcome, Locked, Lockout, MIN_COUNTER_TTL_MS};
use super::throttle::IpThrottle;
use super::{Credential, PresentedToken, SessionCookie, TokenRefusal, verify_entry};
use crate::audit;
use crate::clock::SharedClock;
use crate::config::Config;
use crate::error::ErrorReply;
use crate::metrics::{Decision, Metrics};
use crate::request::{RequestCtx, same_origin};
use crate::store::{AuthEntry, Scope, SharedFailures, StoreCell};
use crate::token::TokenFormat;
use crate::token::TokenHash;

static X_SERAPH_LOGIN_REASON: HeaderName = HeaderName::from_static("x-seraph-loginreason");
pub static X_AUTH_DENIED_REASON: HeaderName =
    HeaderName::from_static("x-authentication-denied-reason");
static X_AUSERNAME: HeaderName = HeaderName::from_static("x-ausername");
/// Jira's own CSRF header: `no-check` says a script of the page sent the request.
pub static X_ATLASSIAN_TOKEN: HeaderName = HeaderName::from_static("x-atlassian-token");

/// Who is calling, as far as tokengate can tell by itself.
#[derive(Debug)]
pub enum Caller {
    /// No `Authorization` header.
    Anonymous,
    /// A scheme that is the upstream's business (an Atlassian personal
    /// access token, Kerberos...).
    OtherScheme,
    /// `Basic user:password`, not judged yet: by the upstream on the proxy
    /// path, by the identity check on the management API.
    Password { user: String },
    /// A valid token.
    Token(Arc<AuthEntry>),
    /// No `Authorization`, and cookies that may be a session with the
    /// upstream, not judged yet: the identity check asks the upstream. Only
    /// on tokengate's own routes ([`Authenticator::identify_own`]); on the
    /// proxy path a cookie is the upstream's business.
    Session(SessionCookie),
}

/// Why a request is refused. The reply follows from the variant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The one 401 for every bad token, unreadable header or refused scheme.
    Unauthorized,
    /// No credentials where some are required (the management API).
    CredentialsRequired,
    /// Cookies, but no session the upstream knows (logged out, expired):
    /// no `WWW-Authenticate` challenge, which would make a browser ask for a
    /// password instead of going to the login page.
    SessionEnded,
    /// The user is locked out from this address.
    Locked { retry_after_secs: Option<u64> },
    /// The address used up its quota of failed attempts.
    Throttled { retry_after_secs: u64 },
    /// A READ_ONLY token asked to change something.
    ReadOnly,
    /// The token store is unavailable: fail closed.
    StoreUnavailable,
    /// A session request that changes something without showing it came
    /// from a page of this origin.
    CrossSite,
}

impl Refusal {
    pub fn reply(&self) -> ErrorReply {
        match self {
            Refusal::Unauthorized => unauthorized(),
            Refusal::CredentialsRequired => ErrorReply {
                messages: vec![
                    "Authentication required: use Basic user:password or an API token".into(),
                ],
                ..unauthorized()
            },
            Refusal::SessionEnded => ErrorReply::client(
                StatusCode::UNAUTHORIZED,
                "Not logged in: the session has ended or is not known; log in again",
            )
            .with_header(
                X_SERAPH_LOGIN_REASON.clone(),
                HeaderValue::from_static("AUTHENTICATED_FAILED"),
            ),
            Refusal::Locked { retry_after_secs } => {
                let mut reply = ErrorReply::client(
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
                if let Some(secs) = retry_after_secs {
                    reply = reply.with_header(RETRY_AFTER, HeaderValue::from(*secs));
                }
                reply
            }
            Refusal::Throttled { retry_after_secs } => ErrorReply::client(
                StatusCode::TOO_MANY_REQUESTS,
                "Too many failed login attempts from this address; try again later",
            )
            .with_header(RETRY_AFTER, HeaderValue::from(*retry_after_secs)),
            Refusal::ReadOnly => ErrorReply::client(
                StatusCode::FORBIDDEN,
                "This token is read-only: it may only read (GET, HEAD and OPTIONS), not change anything",
            ),
            Refusal::StoreUnavailable => store_unavailable(),
            Refusal::CrossSite => ErrorReply::client(StatusCode::FORBIDDEN, "XSRF check failed"),
        }
    }

    /// Is this a verdict on the credentials (401, lockout)? Throttling and an
    /// unavailable store say nothing about them.
    pub fn judges_credentials(&self) -> bool {
        !matches!(self, Refusal::Throttled { .. } | Refusal::StoreUnavailable)
    }
}

/// The one 401 for every bad token or refused credential.
fn unauthorized() -> ErrorReply {
    ErrorReply::client(
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
/// (fail closed).
pub fn store_unavailable() -> ErrorReply {
    ErrorReply::ours(
        StatusCode::SERVICE_UNAVAILABLE,
        "The token store is unavailable; please try again later",
    )
    .with_header(RETRY_AFTER, HeaderValue::from_static("5"))
}

/// How long the shared failure count rests after it failed.
const SHARED_REST_MS: u64 = 5_000;

/// The settings a reload may change.
struct Rules {
    max_failed_attempts: u32,
    lockout_seconds: u64,
    allow_password_basic_auth: bool,
    reject_unknown_schemes: bool,
    throttle: Arc<IpThrottle>,
}

/// Decides who may pass; owns the token format, lockout, the per-address
/// quota and the token check against the store.
pub struct Authenticator {
    format: TokenFormat,
    lockout: Lockout,
    /// Until when (epoch ms) the shared failure count is not asked, after
    /// it failed: a password request does not wait for a database that just
    /// did not answer.
    shared_resting_until: AtomicU64,
    rules: ArcSwap<Rules>,
    /// `server.public_url`, whose origin a session request that changes
    /// something must come from (else the scheme and host the client used).
    public_url: Option<String>,
    /// `ui.enabled`: the browser's session is read for the pages' sake;
    /// without them, tokengate's routes take `Authorization` only.
    sessions: bool,
    store: Arc<StoreCell>,
    clock: SharedClock,
    metrics: Arc<Metrics>,
}

impl Authenticator {
    pub fn new(
        config: &Config,
        store: Arc<StoreCell>,
        clock: SharedClock,
        metrics: Arc<Metrics>,
    ) -> Authenticator {
        let throttle = Arc::new(IpThrottle::new(
            config.auth.failures_per_ip_per_minute,
            clock.clone(),
        ));
        Authenticator {
            format: TokenFormat::new(&config.tokens.prefix),
            lockout: Lockout::new(clock.clone()),
            shared_resting_until: AtomicU64::new(0),
            rules: ArcSwap::from_pointee(Rules::of(config, throttle)),
            public_url: Some(config.server.public_url.trim_end_matches('/').to_string())
                .filter(|u| !u.is_empty()),
            sessions: config.ui.enabled,
            store,
            clock,
            metrics,
        }
    }

    /// Takes a reloaded configuration's rules; the address quotas are kept
    /// unless the quota itself changed.
    pub fn reload(&self, config: &Config) {
        let current = self.rules.load();
        let per_minute = config.auth.failures_per_ip_per_minute;
        let throttle = if current.throttle.per_minute() == per_minute {
            current.throttle.clone()
        } else {
            Arc::new(IpThrottle::new(per_minute, self.clock.clone()))
        };
        self.rules.store(Arc::new(Rules::of(config, throttle)));
    }

    pub fn format(&self) -> &TokenFormat {
        &self.format
    }

    /// Step one for every request: an address beyond its quota of failed
    /// attempts is refused everything until the quota refills.
    pub fn admit(&self, at: &RequestCtx) -> Result<(), Refusal> {
        self.rules
            .load()
            .throttle
            .check(at.client_ip)
            .map_err(|secs| {
                self.metrics.decision(Decision::Throttled);
                Refusal::Throttled {
                    retry_after_secs: secs,
                }
            })
    }

    /// Who presents `headers`' `Authorization`, with every failure counted,
    /// audited and in the metrics (what is let through is counted by the
    /// caller, once it knows the request goes on). A valid token's
    /// `lastAccessed` moves to now.
    pub async fn identify(&self, headers: &HeaderMap, at: &RequestCtx) -> Result<Caller, Refusal> {
        let rules = self.rules.load_full();
        match super::credential(headers, &self.format) {
            Credential::None => Ok(Caller::Anonymous),
            Credential::OtherScheme if rules.reject_unknown_schemes => {
                self.metrics.decision(Decision::OtherSchemeRefused);
                audit::auth_failed(at, None, None, "unknown_scheme");
                Err(Refusal::Unauthorized)
            }
            Credential::OtherScheme => Ok(Caller::OtherScheme),
            Credential::Unreadable => {
                self.metrics.decision(Decision::Invalid);
                Err(self
                    .failed(&rules, at, None, None, "unreadable_authorization")
                    .await)
            }
            Credential::Password { user } => {
                if let Some(lock) = self.locked(&user, at).await {
                    return Err(self.refuse_locked(at, &user, None, lock));
                }
                Ok(Caller::Password { user })
            }
            Credential::Token { user, token } => {
                let entry = self
                    .check_token(&rules, user.as_deref(), &token, at)
                    .await?;
                self.store
                    .with(|store| store.touch(entry.id, self.clock.now_ms(), at.client_ip));
                Ok(Caller::Token(entry))
            }
        }
    }

    /// Who calls one of tokengate's own routes (the management API, the
    /// pages): as [`identify`](Self::identify), and when there is no
    /// `Authorization` header and the pages are on, the browser's cookies as
    /// a session for the upstream to judge. `Authorization` always goes first.
    pub async fn identify_own(
        &self,
        headers: &HeaderMap,
        at: &RequestCtx,
    ) -> Result<Caller, Refusal> {
        match self.identify(headers, at).await? {
            Caller::Anonymous if self.sessions => {
                Ok(SessionCookie::of(headers).map_or(Caller::Anonymous, Caller::Session))
            }
            caller => Ok(caller),
        }
    }

    /// May `caller` make `req`? A READ_ONLY token only reads; a browser
    /// session changes something only from a page of the public origin.
    pub fn permit<B>(
        &self,
        caller: &Caller,
        req: &Request<B>,
        at: &RequestCtx,
    ) -> Result<(), Refusal> {
        let reads = matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
        match caller {
            Caller::Token(entry) if entry.scope == Scope::ReadOnly && !reads => {
                self.metrics.decision(Decision::ReadOnly);
                audit::auth_failed(at, None, Some(entry), "read_only_scope");
                Err(Refusal::ReadOnly)
            }
            Caller::Session(_) if !reads && !self.sent_by_own_page(req, at) => {
                audit::auth_failed(at, None, None, "xsrf_check_failed");
                Err(Refusal::CrossSite)
            }
            _ => Ok(()),
        }
    }

    /// Jira's rule for a session request that changes something: the header
    /// `X-Atlassian-Token: no-check`, which a form cannot send and a script
    /// elsewhere cannot send without the browser asking this origin first
    /// (tokengate allows no other origin); and, when the browser names the
    /// origin it comes from, the public origin.
    fn sent_by_own_page<B>(&self, req: &Request<B>, at: &RequestCtx) -> bool {
        let headers = req.headers();
        let no_check = headers
            .get(&X_ATLASSIAN_TOKEN)
            .is_some_and(|v| v.as_bytes().trim_ascii().eq_ignore_ascii_case(b"no-check"));
        let mut origins = headers.get_all(ORIGIN).iter();
        let origin_ok = match (origins.next(), origins.next()) {
            (None, _) => true,
            (Some(origin), None) => origin.to_str().is_ok_and(|origin| {
                same_origin(origin, &at.public_base(req, self.public_url.as_deref()))
            }),
            (Some(_), Some(_)) => false,
        };
        no_check && origin_ok
    }

    /// May a password caller's request be forwarded for the upstream to
    /// judge (`tokens.allow_password_basic_auth`)? The management API always
    /// checks passwords itself and does not ask.
    pub fn forward_password(&self, caller: &Caller, at: &RequestCtx) -> Result<(), Refusal> {
        match caller {
            Caller::Password { user } if !self.rules.load().allow_password_basic_auth => {
                // The password is never looked at: no guessing oracle, not counted.
                self.metrics.decision(Decision::PasswordRefused);
                audit::auth_failed(at, Some(user), None, "password_auth_disabled");
                Err(Refusal::Unauthorized)
            }
            _ => Ok(()),
        }
    }

    /// The upstream (or the identity check) refused `user`'s password.
    pub async fn password_failed(
        &self,
        user: &str,
        at: &RequestCtx,
        reason: &'static str,
    ) -> Refusal {
        self.failed(&self.rules.load_full(), at, Some(user), None, reason)
            .await
    }

    /// `user`'s password login worked: their count from this address starts afresh.
    pub async fn password_confirmed(&self, user: &str, at: &RequestCtx) {
        self.success(user, at).await;
    }

    /// Clears a user's counters and locks from every address (the admin
    /// endpoint), on every gateway when they share a database. True when
    /// there was one.
    pub async fn clear_lockout(&self, user: &str) -> Result<bool, Refusal> {
        let mut cleared = self.lockout.clear(user);
        // Asked even while resting: an admin is told when it did not work.
        let shared = self.store.with(|s| s.backend().shared_failures()).flatten();
        if let Some(shared) = shared {
            match shared.clear(&user.to_lowercase()).await {
                Ok(c) => cleared |= c,
                Err(e) => {
                    tracing::error!(error = %e, "clearing a lockout in the database failed");
                    return Err(Refusal::StoreUnavailable);
                }
            }
        }
        Ok(cleared)
    }

    /// Forgets expired locks, stale counters and refilled quotas.
    pub async fn sweep(&self, lockout_seconds: u64) {
        self.lockout.sweep(lockout_seconds);
        self.rules.load().throttle.sweep();
        if let Some(shared) = self.shared() {
            let ttl = MIN_COUNTER_TTL_MS.max(lockout_seconds.saturating_mul(1000));
            if let Err(e) = shared.sweep(self.clock.now_ms(), ttl).await {
                tracing::warn!(error = %e, "sweeping failed logins in the database failed");
            }
        }
    }

    /// Failed logins counted in the store's database, shared by every
    /// gateway on it; `None`: counted in this process only.
    fn shared(&self) -> Option<Arc<dyn SharedFailures>> {
        if self.clock.now_ms() < self.shared_resting_until.load(Ordering::Relaxed) {
            return None;
        }
        self.store.with(|s| s.backend().shared_failures()).flatten()
    }

    /// The shared count failed: this gateway counts alone for a while.
    fn shared_failed(&self, e: &crate::store::StoreError, at: &RequestCtx) {
        self.shared_resting_until.store(
            self.clock.now_ms().saturating_add(SHARED_REST_MS),
            Ordering::Relaxed,
        );
        tracing::warn!(error = %e, request_id = at.request_id(), "the failed-login count in the database is unavailable; this gateway counts alone for the next 5 s");
    }

    /// Is `user` locked out from the client's address? Asks the shared count
    /// when there is one; while the database does not answer, this
    /// process's own count decides.
    async fn locked(&self, user: &str, at: &RequestCtx) -> Option<Locked> {
        if let Some(shared) = self.shared() {
            let (name, addr) = super::lockout::key(user, at.client_ip);
            match shared.locked(&name, addr, self.clock.now_ms()).await {
                Ok(lock) => return lock.or_else(|| self.lockout.locked(user, at.client_ip)),
                Err(e) => self.shared_failed(&e, at),
            }
        }
        self.lockout.locked(user, at.client_ip)
    }

    async fn success(&self, user: &str, at: &RequestCtx) {
        self.lockout.success(user, at.client_ip);
        if let Some(shared) = self.shared() {
            let (name, addr) = super::lockout::key(user, at.client_ip);
            if let Err(e) = shared.success(&name, addr, self.clock.now_ms()).await {
                self.shared_failed(&e, at);
            }
        }
    }

    async fn count_failure(&self, rules: &Rules, user: &str, at: &RequestCtx) -> FailureOutcome {
        let (max, secs) = (rules.max_failed_attempts, rules.lockout_seconds);
        if let Some(shared) = self.shared() {
            let (name, addr) = super::lockout::key(user, at.client_ip);
            match shared
                .failure(&name, addr, max, secs, self.clock.now_ms())
                .await
            {
                Ok(outcome) => return outcome,
                Err(e) => self.shared_failed(&e, at),
            }
        }
        self.lockout.failure(user, at.client_ip, max, secs)
    }

    /// The token check: one identical 401 for every bad token; a bad token
    /// given with a username meets that user's lock from this address.
    async fn check_token(
        &self,
        rules: &Rules,
        user: Option<&str>,
        token: &PresentedToken<'_>,
        at: &RequestCtx,
    ) -> Result<Arc<AuthEntry>, Refusal> {
        let now = self.clock.now_ms();
        let verified = if self.format.check(token.expose()).is_err() {
            // A malformed token is refused without the store, open or not.
            Err(TokenRefusal::Malformed)
        } else {
            let hash = TokenHash::of(token.expose());
            // A token in use is in memory: no wait, no reference count.
            match self.store.with(|store| store.cached(&hash)) {
                Some(Some(entry)) => verify_entry(Some(entry), user, now, at.client_ip),
                Some(None) => match self.store.get() {
                    Ok(store) => match store.lookup(&hash).await {
                        Ok(found) => verify_entry(found, user, now, at.client_ip),
                        Err(e) => Err(TokenRefusal::Store(e)),
                    },
                    Err(e) => Err(TokenRefusal::Store(e)),
                },
                None => Err(TokenRefusal::Store(self.store.not_open())),
            }
        };
        match verified {
            Ok(entry) => {
                // This process's count only: a database write on every
                // token request would cost the hot path its speed, and a
                // token is not a password login; the shared count resets on
                // a confirmed password login or runs out.
                self.lockout.success(&entry.user_name, at.client_ip);
                Ok(entry)
            }
            Err(TokenRefusal::Store(e)) => {
                self.metrics.decision(Decision::StoreUnavailable);
                if self.store.is_open() {
                    tracing::error!(error = %e, request_id = at.request_id(), "token store lookup failed; token refused with 503");
                } else {
                    // Logged once per change by the task that keeps trying to open it.
                    tracing::debug!(error = %e, request_id = at.request_id(), "token store not open; token refused with 503");
                }
                Err(Refusal::StoreUnavailable)
            }
            Err(refusal @ TokenRefusal::IpNotAllowed(_)) => {
                // A valid token from the wrong place: the per-address quota
                // counts it, the owner's lockout does not (nobody guessed a
                // password or a token; the token's owner is not to blame,
                // and a stranger must not lock them out with it).
                self.metrics.decision(refusal.decision());
                audit::auth_failed(at, user, refusal.entry(), refusal.reason());
                Err(self.address_failed(rules, at))
            }
            Err(refusal) => {
                let entry = refusal.entry();
                if let Some(user) = user
                    && let Some(lock) = self.locked(user, at).await
                {
                    return Err(self.refuse_locked(at, user, entry, lock));
                }
                self.metrics.decision(refusal.decision());
                Err(self.failed(rules, at, user, entry, refusal.reason()).await)
            }
        }
    }

    fn refuse_locked(
        &self,
        at: &RequestCtx,
        user: &str,
        token: Option<&AuthEntry>,
        lock: Locked,
    ) -> Refusal {
        self.metrics.decision(Decision::Locked);
        audit::auth_failed(at, Some(user), token, "locked");
        Refusal::Locked {
            retry_after_secs: lock.retry_after_secs(self.clock.now_ms()),
        }
    }

    /// Counts a failed attempt for `user` (the name the client gave, if
    /// any) from the client's address, and for the address's quota, with its
    /// audit event: 401, or 429 when this failure used up the quota.
    async fn failed(
        &self,
        rules: &Rules,
        at: &RequestCtx,
        user: Option<&str>,
        token: Option<&AuthEntry>,
        reason: &'static str,
    ) -> Refusal {
        audit::auth_failed(at, user, token, reason);
        if let Some(user) = user {
            let outcome = self.count_failure(rules, user, at).await;
            if let FailureOutcome::LockedNow(lock) = outcome {
                self.metrics.lockouts.inc();
                audit::locked_out(at, user, lock.until);
            }
        }
        self.address_failed(rules, at)
    }

    /// Counts a failure for the client address's quota alone: 401, or 429
    /// when this failure used it up.
    fn address_failed(&self, rules: &Rules, at: &RequestCtx) -> Refusal {
        match rules.throttle.failure(at.client_ip) {
            Ok(()) => Refusal::Unauthorized,
            Err(secs) => {
                audit::throttled(at);
                Refusal::Throttled {
                    retry_after_secs: secs,
                }
            }
        }
    }
}

impl Rules {
    fn of(config: &Config, throttle: Arc<IpThrottle>) -> Rules {
        Rules {
            max_failed_attempts: config.auth.max_failed_attempts,
            lockout_seconds: config.auth.lockout_seconds,
            allow_password_basic_auth: config.tokens.allow_password_basic_auth,
            reject_unknown_schemes: config.auth.reject_unknown_schemes,
            throttle,
        }
    }
}

/// Did the upstream say the password login of `user` worked? Jira and
/// Confluence answer `X-Seraph-LoginReason: OK` to a login they accepted and
/// name the logged-in user in `X-AUSERNAME` (`anonymous` when nobody is).
/// Any other answer (a public page's 200, a 404) says nothing either way.
pub fn login_confirmed(headers: &HeaderMap, user: &str) -> bool {
    let text = |name: &HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
    text(&X_SERAPH_LOGIN_REASON).is_some_and(|v| v.trim() == "OK")
        || text(&X_AUSERNAME).is_some_and(|v| v.trim().eq_ignore_ascii_case(user))
}
