//! The token-management REST API (SPEC §4), served by tokengate itself under
//! `/rest/de.resolution.apitokenauth/{latest|1.0}/`. Nothing under that root
//! is ever forwarded.

mod body;
pub mod path;
pub mod validity;

use std::collections::BTreeMap;

use http::header::{ALLOW, AUTHORIZATION, HOST, HeaderValue};
use http::{HeaderMap, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use percent_encoding::{NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};
use serde::Serialize;
use serde_json::{Map, Value};

use crate::audit;
use crate::auth::identity::{Creds, Identity, IdentityError};
use crate::auth::policy::{Caller, Refusal, store_unavailable};
use crate::error::{ErrorReply, RespBody, empty_response, json_response};
use crate::metrics::Decision;
use crate::proxy::headers::{X_FORWARDED_HOST, X_FORWARDED_PROTO};
use crate::request::RequestCtx;
use crate::state::{Gateway, Live};
use crate::store::{Filter, InsertError, NewToken, Scope, Store, StoreError, TokenRecord};
use validity::Requested;

pub const API_ROOT: &str = "/rest/de.resolution.apitokenauth";
const MAX_PAGE_LIMIT: u64 = 50;

/// A management API caller.
struct ApiCaller {
    identity: Identity,
    /// The caller's own `Authorization`, when they came with a password.
    password_auth: Option<HeaderValue>,
    /// How they came: a token or a password.
    via: Caller,
}

/// Why a management API caller is turned away: the authentication policy's
/// refusal, or what the upstream said about who they are.
enum Denied {
    Policy(Refusal),
    Identity(ErrorReply),
}

impl From<Denied> for ErrorReply {
    fn from(d: Denied) -> ErrorReply {
        match d {
            Denied::Policy(r) => r.reply(),
            Denied::Identity(reply) => reply,
        }
    }
}

impl ApiCaller {
    fn creds(&self) -> Creds<'_> {
        match &self.password_auth {
            Some(h) => Creds::Caller(h),
            None => Creds::Lookup,
        }
    }
}

enum Route {
    Tokens,
    Token(String),
    DeleteAllFor(String),
    TokensByFilter,
    AuthTest,
    FailedLogins(String),
    OpenApi,
}

impl Route {
    fn methods(&self) -> &'static [Method] {
        match self {
            Route::Tokens => &[Method::GET, Method::POST],
            Route::Token(_) => &[Method::PATCH, Method::DELETE],
            Route::DeleteAllFor(_) | Route::FailedLogins(_) => &[Method::DELETE],
            Route::TokensByFilter => &[Method::GET],
            Route::AuthTest => &[Method::GET, Method::POST, Method::PUT],
            Route::OpenApi => &[Method::GET, Method::HEAD],
        }
    }
}

fn route(path: &str) -> Option<Route> {
    let rest = path.strip_prefix(API_ROOT)?.strip_prefix('/')?;
    let (version, rest) = rest.split_once('/').unwrap_or((rest, ""));
    if version != "latest" && version != "1.0" {
        return None;
    }
    let segments: Vec<&str> = rest.split('/').collect();
    let decoded = |s: &str| {
        percent_decode_str(s)
            .decode_utf8()
            .ok()
            .map(|c| c.into_owned())
    };
    match segments.as_slice() {
        ["user", "token"] | ["user", "token", ""] => Some(Route::Tokens),
        ["user", "token", "deleteAllFor", key] if !key.is_empty() => {
            decoded(key).map(Route::DeleteAllFor)
        }
        ["user", "token", id] => Some(Route::Token((*id).to_string())),
        ["user", "tokensByFilter"] | ["user", "tokensByFilter", ""] => Some(Route::TokensByFilter),
        ["user", "authTest"] | ["user", "authTest", ""] => Some(Route::AuthTest),
        ["admin", "failedLogins", key] if !key.is_empty() => decoded(key).map(Route::FailedLogins),
        ["openapi.json"] => Some(Route::OpenApi),
        _ => None,
    }
}

/// Serves one management API request.
pub async fn handle(gw: &Gateway, req: Request<Incoming>, ctx: &RequestCtx) -> Response<RespBody> {
    let live = gw.live.load_full();
    match serve(gw, req, ctx, &live).await {
        Ok(resp) => resp,
        Err(reply) => reply.into_response(),
    }
}

async fn serve(
    gw: &Gateway,
    req: Request<Incoming>,
    ctx: &RequestCtx,
    live: &Live,
) -> Result<Response<RespBody>, ErrorReply> {
    let Some(route) = route(req.uri().path()) else {
        return Err(ErrorReply::client(
            StatusCode::NOT_FOUND,
            "No such resource",
        ));
    };
    if !route.methods().contains(req.method()) {
        let allow = route
            .methods()
            .iter()
            .map(Method::as_str)
            .collect::<Vec<_>>()
            .join(", ");
        // The method is not quoted back: it is the client's text, and could be anything.
        return Err(ErrorReply::client(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("This method is not allowed here; allowed: {allow}"),
        )
        .with_header(
            ALLOW,
            HeaderValue::from_str(&allow).unwrap_or(HeaderValue::from_static("GET")),
        ));
    }
    match route {
        Route::AuthTest => return Ok(auth_test(gw, &req, ctx, live).await),
        Route::OpenApi => return Ok(openapi()),
        _ => {}
    }
    let caller = authenticate(gw, req.headers(), ctx, live).await?;
    gw.auth
        .permit(&caller.via, req.method(), ctx)
        .map_err(|r| r.reply())?;
    if matches!(caller.via, Caller::Token(_)) {
        gw.metrics.decision(Decision::Ok);
    }
    match (route, req.method().clone()) {
        (Route::Tokens, Method::GET) => list_tokens(gw, &caller),
        (Route::Tokens, _) => create_token(gw, req, &caller, ctx, live).await,
        (Route::Token(id), Method::PATCH) => update_token(gw, req, &caller, &id, ctx).await,
        (Route::Token(id), _) => delete_token(gw, &caller, &id, ctx).await,
        (Route::DeleteAllFor(key), _) => delete_all_for(gw, &caller, &key, ctx).await,
        (Route::TokensByFilter, _) => tokens_by_filter(gw, &req, &caller, ctx).await,
        (Route::FailedLogins(key), _) => clear_failed_logins(gw, &caller, &key, ctx).await,
        (Route::AuthTest | Route::OpenApi, _) => Err(ErrorReply::client(
            StatusCode::NOT_FOUND,
            "No such resource",
        )),
    }
}

/// Who is calling: a token (Basic `user:token` or Bearer), as the
/// authentication policy decides, or a password, checked against the
/// upstream. Failures count like on proxied requests.
async fn authenticate(
    gw: &Gateway,
    headers: &HeaderMap,
    ctx: &RequestCtx,
    live: &Live,
) -> Result<ApiCaller, Denied> {
    match gw.auth.identify(headers, ctx).map_err(Denied::Policy)? {
        Caller::Anonymous => Err(Denied::Policy(Refusal::CredentialsRequired)),
        Caller::OtherScheme => {
            audit::auth_failed(ctx, None, None, "unsupported_scheme_on_api");
            Err(Denied::Policy(Refusal::Unauthorized))
        }
        Caller::Token(entry) => {
            let is_admin = live
                .identity
                .token_owner_is_admin(&entry.user_key, &live.config.auth)
                .await
                .map_err(|e| Denied::Identity(identity_failed(e, ctx)))?;
            Ok(ApiCaller {
                identity: Identity {
                    key: entry.user_key.clone(),
                    name: entry.user_name.clone(),
                    is_admin,
                },
                password_auth: None,
                via: Caller::Token(entry),
            })
        }
        Caller::Password { user } => {
            let header = headers
                .get(AUTHORIZATION)
                .cloned()
                .ok_or(Denied::Policy(Refusal::Unauthorized))?;
            match live.identity.by_password(&header, &live.config.auth).await {
                Ok(identity) => {
                    gw.auth.password_confirmed(&user, ctx);
                    Ok(ApiCaller {
                        identity: (*identity).clone(),
                        password_auth: Some(header),
                        via: Caller::Password { user },
                    })
                }
                Err(IdentityError::BadCredentials) => Err(Denied::Policy(gw.auth.password_failed(
                    &user,
                    ctx,
                    "wrong_password",
                ))),
                Err(e) => Err(Denied::Identity(identity_failed(e, ctx))),
            }
        }
    }
}

fn identity_failed(e: IdentityError, ctx: &RequestCtx) -> ErrorReply {
    match e {
        IdentityError::BadCredentials => Refusal::Unauthorized.reply(),
        IdentityError::Denied { reason } => {
            let mut reply =
                ErrorReply::client(StatusCode::FORBIDDEN, "The upstream denied the login");
            if let Ok(v) = HeaderValue::from_str(&reason) {
                reply = reply.with_header(
                    http::header::HeaderName::from_static("x-authentication-denied-reason"),
                    v,
                );
            }
            reply
        }
        IdentityError::NoLookupAccount => ErrorReply::client(
            StatusCode::BAD_REQUEST,
            "Looking up other users needs Basic user:password here, or upstream.lookup_user in the gateway's configuration",
        ),
        IdentityError::Upstream(e) => {
            tracing::warn!(error = %e, request_id = ctx.request_id(), "identity look-up failed");
            ErrorReply::from(e)
        }
        IdentityError::Unexpected(what) => {
            tracing::warn!(
                what,
                request_id = ctx.request_id(),
                "unexpected identity answer from the upstream"
            );
            ErrorReply::upstream(
                StatusCode::BAD_GATEWAY,
                "The upstream gave an unexpected answer",
            )
        }
    }
}

fn store_failed(e: StoreError) -> ErrorReply {
    tracing::error!(error = %e, "token store failed; management call refused with 503");
    store_unavailable()
}

/// The open store, or 503 (fail closed) while it is not.
fn store(gw: &Gateway) -> Result<std::sync::Arc<Store>, ErrorReply> {
    gw.store.get().map_err(|e| {
        tracing::debug!(error = %e, "token store not open; management call refused with 503");
        store_unavailable()
    })
}

fn forbidden(message: &str) -> ErrorReply {
    ErrorReply::client(StatusCode::FORBIDDEN, message)
}

fn admin_only(caller: &ApiCaller) -> Result<(), ErrorReply> {
    if caller.identity.is_admin {
        Ok(())
    } else {
        Err(forbidden("Only system administrators may do this"))
    }
}

fn parse_id(gw: &Gateway, raw: &str) -> Result<u64, ErrorReply> {
    if raw.is_empty() || !raw.bytes().all(|b| b.is_ascii_digit()) {
        let mut f = BTreeMap::new();
        f.insert(
            "id".to_string(),
            format!(
                "{} is not a token id (a whole number)",
                gw.auth.format().quoted_unless_token(raw)
            ),
        );
        return Err(ErrorReply::fields(f));
    }
    // A number beyond any id is simply not a token that exists.
    raw.parse::<u64>().map_err(|_| no_such_token())
}

fn no_such_token() -> ErrorReply {
    ErrorReply::client(StatusCode::NOT_FOUND, "No such token")
}

/// A token as `GET /user/token` lists it.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Listed {
    created: u64,
    description: String,
    id: u64,
    last_accessed: u64,
    valid_until: u64,
    token_scope: u8,
}

impl From<TokenRecord> for Listed {
    fn from(r: TokenRecord) -> Listed {
        Listed {
            created: r.created,
            description: r.description,
            id: r.id,
            last_accessed: r.last_accessed,
            valid_until: r.valid_until,
            token_scope: r.scope.code(),
        }
    }
}

/// A token as `tokensByFilter` shows it.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Filtered {
    created: u64,
    description: String,
    id: u64,
    last_accessed: u64,
    token_created_by_user_key: String,
    token_for_user_key: String,
    valid_until: u64,
    token_scope: u8,
}

impl From<TokenRecord> for Filtered {
    fn from(r: TokenRecord) -> Filtered {
        Filtered {
            created: r.created,
            description: r.description,
            id: r.id,
            last_accessed: r.last_accessed,
            token_created_by_user_key: r.created_by,
            token_for_user_key: r.user_key,
            valid_until: r.valid_until,
            token_scope: r.scope.code(),
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Created {
    id: u64,
    plain_text_token: String,
    token_description: String,
    token_expiration_date_time: Option<String>,
    token_expiration_date_time_millis: u64,
    token_scope: u8,
    token_for_user_key: String,
}

fn list_tokens(gw: &Gateway, caller: &ApiCaller) -> Result<Response<RespBody>, ErrorReply> {
    let tokens = store(gw)?
        .list_user(&caller.identity.key)
        .map_err(store_failed)?;
    let listed: Vec<Listed> = tokens.into_iter().map(Listed::from).collect();
    Ok(json_response(StatusCode::OK, &listed))
}

/// What a create request asked for, validated.
struct CreateRequest {
    description: String,
    requested: Requested,
    scope: Option<Scope>,
    for_user_key: Option<String>,
}

fn parse_create(obj: &Map<String, Value>) -> Result<CreateRequest, ErrorReply> {
    let mut errors = BTreeMap::new();
    body::unknown_fields(
        obj,
        &[
            "tokenDescription",
            "tokenValidityTimeInMonths",
            "tokenExpirationDateTime",
            "tokenScope",
            "tokenForUserKey",
        ],
        &mut errors,
    );
    let description = body::description(obj, &mut errors);
    let months = body::optional_int(obj, "tokenValidityTimeInMonths", 1, 1200, &mut errors);
    let until = match obj.get("tokenExpirationDateTime") {
        None => None,
        Some(Value::String(s)) => match validity::parse_expiry(s) {
            Some(ms) => Some(ms),
            None => {
                errors.insert(
                    "tokenExpirationDateTime".into(),
                    "must be an ISO 8601 date-time such as 2027-01-31T12:00:00Z, or a date such as 2027-01-31".into(),
                );
                None
            }
        },
        Some(_) => {
            errors.insert("tokenExpirationDateTime".into(), "must be a string".into());
            None
        }
    };
    let scope = body::optional_int(obj, "tokenScope", 1, 2, &mut errors)
        .and_then(|c| Scope::from_code(c as i64));
    let for_user_key = match obj.get("tokenForUserKey") {
        None => None,
        Some(Value::String(s)) if !s.trim().is_empty() && s.len() <= 255 => Some(s.clone()),
        Some(_) => {
            errors.insert(
                "tokenForUserKey".into(),
                "must be a non-empty user key".into(),
            );
            None
        }
    };
    if months.is_some() && until.is_some() {
        errors.insert(
            "tokenExpirationDateTime".into(),
            "give either tokenValidityTimeInMonths or tokenExpirationDateTime, not both".into(),
        );
    }
    if !errors.is_empty() {
        return Err(ErrorReply::fields(errors));
    }
    let requested = match (months, until) {
        (Some(m), _) => Requested::Months(m as u32),
        (None, Some(u)) => Requested::Until(u),
        (None, None) => Requested::Default,
    };
    Ok(CreateRequest {
        description: description.unwrap_or_default(),
        requested,
        scope,
        for_user_key,
    })
}

async fn create_token(
    gw: &Gateway,
    req: Request<Incoming>,
    caller: &ApiCaller,
    ctx: &RequestCtx,
    live: &Live,
) -> Result<Response<RespBody>, ErrorReply> {
    let obj = body::json_object(req, gw.max_api_body).await?;
    let asked = parse_create(&obj)?;
    // For whom: the caller, or (admins only) the user named by key.
    let (user_key, user_name, for_other) = match asked.for_user_key {
        Some(key) if key != caller.identity.key => {
            admin_only(caller).map_err(|_| {
                forbidden("Only system administrators may create tokens for other users")
            })?;
            let name = live
                .identity
                .username_for_key(&key, caller.creds())
                .await
                .map_err(|e| identity_failed(e, ctx))?;
            let Some(name) = name else {
                let mut f = BTreeMap::new();
                f.insert(
                    "tokenForUserKey".to_string(),
                    format!(
                        "no user with the key {}",
                        gw.auth.format().quoted_unless_token(&key)
                    ),
                );
                return Err(ErrorReply::fields(f));
            };
            // Another spelling of the caller's own key is still their own token:
            // the user rules of validity apply, filed under the caller's key.
            if name.eq_ignore_ascii_case(&caller.identity.name) {
                (
                    caller.identity.key.clone(),
                    caller.identity.name.clone(),
                    false,
                )
            } else {
                (key, name, true)
            }
        }
        _ => (
            caller.identity.key.clone(),
            caller.identity.name.clone(),
            false,
        ),
    };
    if user_name.chars().any(char::is_control) {
        return Err(ErrorReply::client(
            StatusCode::BAD_REQUEST,
            "This username cannot be used with tokens",
        ));
    }
    let now = gw.clock.now_ms();
    let valid_until = validity::valid_until(now, asked.requested, &live.config.tokens, for_other)
        .map_err(|r| {
        let mut f = BTreeMap::new();
        f.insert(r.field.to_string(), r.message);
        ErrorReply::fields(f)
    })?;
    let scope = if live.config.tokens.force_read_only {
        Scope::ReadOnly
    } else {
        asked.scope.unwrap_or(Scope::ReadWrite)
    };
    let plain = gw.auth.format().generate().map_err(|e| {
        tracing::error!(error = %e, "no randomness for a new token");
        ErrorReply::ours(
            StatusCode::SERVICE_UNAVAILABLE,
            "Cannot create a token right now",
        )
    })?;
    let new = NewToken {
        hash: plain.hash(),
        description: asked.description,
        user_key: user_key.clone(),
        user_name,
        created_by: caller.identity.key.clone(),
        created: now,
        valid_until,
        scope,
    };
    let record = match store(gw)?
        .create(new, live.config.tokens.max_tokens_per_user)
        .await
    {
        Ok(r) => r,
        Err(InsertError::LimitReached(n)) => {
            return Err(forbidden(&format!(
                "The user already has {n} tokens, the maximum; delete one first"
            )));
        }
        Err(InsertError::Store(e)) => return Err(store_failed(e)),
    };
    gw.metrics.tokens.inc();
    audit::token_created(ctx, &record, &caller.identity.key);
    let created = Created {
        id: record.id,
        plain_text_token: plain.expose().to_string(),
        token_description: record.description,
        token_expiration_date_time: (record.valid_until != 0)
            .then(|| validity::format_ms(record.valid_until))
            .flatten(),
        token_expiration_date_time_millis: record.valid_until,
        token_scope: record.scope.code(),
        token_for_user_key: record.user_key,
    };
    Ok(json_response(StatusCode::OK, &created))
}

async fn update_token(
    gw: &Gateway,
    req: Request<Incoming>,
    caller: &ApiCaller,
    raw_id: &str,
    ctx: &RequestCtx,
) -> Result<Response<RespBody>, ErrorReply> {
    let id = parse_id(gw, raw_id)?;
    let obj = body::json_object(req, gw.max_api_body).await?;
    let description = parse_update(&obj)?;
    let owned = store(gw)?.get(id).map_err(store_failed)?;
    match owned {
        Some(r) if r.user_key == caller.identity.key => {}
        _ => return Err(no_such_token()),
    }
    let updated = store(gw)?
        .update_description(id, &description)
        .await
        .map_err(store_failed)?
        .ok_or_else(no_such_token)?;
    audit::token_updated(ctx, id, &caller.identity.key);
    Ok(json_response(StatusCode::OK, &Listed::from(updated)))
}

/// The new description of an update request, validated.
fn parse_update(obj: &Map<String, Value>) -> Result<String, ErrorReply> {
    let mut errors = BTreeMap::new();
    body::unknown_fields(obj, &["tokenDescription"], &mut errors);
    let description = body::description(obj, &mut errors);
    if !errors.is_empty() {
        return Err(ErrorReply::fields(errors));
    }
    Ok(description.unwrap_or_default())
}

async fn delete_token(
    gw: &Gateway,
    caller: &ApiCaller,
    raw_id: &str,
    ctx: &RequestCtx,
) -> Result<Response<RespBody>, ErrorReply> {
    let id = parse_id(gw, raw_id)?;
    let store = store(gw)?;
    let existing = store.get(id).map_err(store_failed)?;
    match existing {
        Some(r) if r.user_key == caller.identity.key || caller.identity.is_admin => {}
        _ => {
            // After a failed write, a token may be gone from memory but not yet
            // from disk: a retried delete is answered only once that is settled.
            if store.write_problem().is_some() {
                store.sync().await.map_err(store_failed)?;
            }
            return Err(no_such_token());
        }
    }
    let deleted = store
        .delete(id)
        .await
        .map_err(store_failed)?
        .ok_or_else(no_such_token)?;
    gw.metrics.tokens.dec();
    audit::token_deleted(ctx, id, &deleted.user_key, &caller.identity.key);
    Ok(json_response(StatusCode::OK, &true))
}

async fn delete_all_for(
    gw: &Gateway,
    caller: &ApiCaller,
    user_key: &str,
    ctx: &RequestCtx,
) -> Result<Response<RespBody>, ErrorReply> {
    admin_only(caller)?;
    let n = store(gw)?
        .delete_user(user_key)
        .await
        .map_err(store_failed)?;
    gw.metrics.tokens.dec_by(n as i64);
    audit::tokens_deleted_for_user(ctx, user_key, n, &caller.identity.key);
    Ok(json_response(StatusCode::OK, &n))
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PageLinks {
    base_url: String,
    next_page: String,
    previous_page: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PageOut {
    content: Vec<Filtered>,
    current_page: u64,
    limit: u64,
    offset: u64,
    pagination_links: PageLinks,
    total: u64,
    total_pages: u64,
}

/// `tokensByFilter` query parameters, validated.
struct FilterQuery {
    not_valid_after: Option<i64>,
    page: u64,
    limit: u64,
    users: Vec<String>,
    description: Option<String>,
    scope: Option<Scope>,
}

impl FilterQuery {
    fn parse(query: Option<&str>) -> Result<FilterQuery, ErrorReply> {
        let mut q = FilterQuery {
            not_valid_after: None,
            page: 0,
            limit: MAX_PAGE_LIMIT,
            users: Vec::new(),
            description: None,
            scope: None,
        };
        let mut errors = BTreeMap::new();
        for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let k = form_decode(k);
            let v = form_decode(v);
            let mut number = |field: &str, min: i64| -> Option<i64> {
                match whole_number(&v) {
                    Some(n) if n >= min => Some(n),
                    _ => {
                        errors.insert(field.to_string(), format!("must be a whole number ≥ {min}"));
                        None
                    }
                }
            };
            match k.as_str() {
                "notValidAfter" => q.not_valid_after = number("notValidAfter", -1),
                "page" => q.page = number("page", 0).unwrap_or(0) as u64,
                "limit" => q.limit = (number("limit", 1).unwrap_or(1) as u64).min(MAX_PAGE_LIMIT),
                "userFilter" if !v.is_empty() => q.users.push(v),
                "userFilter" => {}
                "descriptionFilter" => q.description = (!v.is_empty()).then_some(v),
                "tokenScope" => match number("tokenScope", 1).and_then(Scope::from_code) {
                    Some(s) => q.scope = Some(s),
                    None => {
                        errors.insert(
                            "tokenScope".into(),
                            "must be 1 (read-only) or 2 (read-write)".into(),
                        );
                    }
                },
                other => {
                    errors.insert(other.to_string(), "unknown query parameter".into());
                }
            }
        }
        if errors.is_empty() {
            Ok(q)
        } else {
            Err(ErrorReply::fields(errors))
        }
    }

    /// Where the page starts; 400 when that is beyond any number a JSON
    /// client reads exactly (2^53 − 1), instead of an offset that wrapped.
    fn offset(&self) -> Result<u64, ErrorReply> {
        const MAX_SAFE: u64 = (1 << 53) - 1;
        match self.page.checked_mul(self.limit) {
            Some(offset) if offset <= MAX_SAFE => Ok(offset),
            _ => {
                let mut f = BTreeMap::new();
                f.insert(
                    "page".to_string(),
                    format!("is too large: page × limit must be at most {MAX_SAFE}"),
                );
                Err(ErrorReply::fields(f))
            }
        }
    }

    fn filter(&self) -> Filter {
        Filter {
            not_valid_after: self.not_valid_after.filter(|&n| n >= 0).map(|n| n as u64),
            user_keys: self.users.clone(),
            description: self.description.as_ref().map(|d| d.to_lowercase()),
            scope: self.scope,
        }
    }

    /// The query string of another page with the same filters.
    fn link(&self, base: &str, path: &str, page: u64) -> String {
        let enc = |s: &str| utf8_percent_encode(s, NON_ALPHANUMERIC).to_string();
        let mut url = format!("{base}{path}?page={page}&limit={}", self.limit);
        if let Some(n) = self.not_valid_after {
            url.push_str(&format!("&notValidAfter={n}"));
        }
        for u in &self.users {
            url.push_str(&format!("&userFilter={}", enc(u)));
        }
        if let Some(d) = &self.description {
            url.push_str(&format!("&descriptionFilter={}", enc(d)));
        }
        if let Some(s) = self.scope {
            url.push_str(&format!("&tokenScope={}", s.code()));
        }
        url
    }
}

/// The pure parsing steps of the management API, for the fuzz targets in
/// `fuzz/`; not part of tokengate's interface.
#[doc(hidden)]
pub mod fuzzing {
    use super::{FilterQuery, Map, Requested, Value, body, parse_create, parse_update};
    use crate::error::ErrorReply;

    /// A create request body as `POST /user/token` reads it.
    #[derive(Debug)]
    pub struct Create {
        pub description: String,
        pub requested: Requested,
        pub scope: Option<u8>,
        pub for_user_key: Option<String>,
    }

    pub fn create_body(bytes: &[u8]) -> Result<Create, ErrorReply> {
        let obj: Map<String, Value> = body::parse_object(bytes)?;
        let c = parse_create(&obj)?;
        Ok(Create {
            description: c.description,
            requested: c.requested,
            scope: c.scope.map(|s| s.code()),
            for_user_key: c.for_user_key,
        })
    }

    /// The new description of an update request body.
    pub fn update_body(bytes: &[u8]) -> Result<String, ErrorReply> {
        parse_update(&body::parse_object(bytes)?)
    }

    /// `tokensByFilter` query parameters as read.
    #[derive(Debug, PartialEq, Eq)]
    pub struct Query {
        pub not_valid_after: Option<i64>,
        pub page: u64,
        pub limit: u64,
        pub users: Vec<String>,
        pub description: Option<String>,
        pub scope: Option<u8>,
    }

    /// The parsed query and the query string (no `?`) of the pagination link
    /// to `page` with the same filters.
    pub fn filter_query(query: Option<&str>, page: u64) -> Result<(Query, String), ErrorReply> {
        let q = FilterQuery::parse(query)?;
        let link = q.link("", "", page);
        let link = link.strip_prefix('?').unwrap_or(&link).to_string();
        Ok((
            Query {
                not_valid_after: q.not_valid_after,
                page: q.page,
                limit: q.limit,
                users: q.users,
                description: q.description,
                scope: q.scope.map(|s| s.code()),
            },
            link,
        ))
    }
}

/// A whole number; one too large for 64 bits counts as the largest (a page
/// beyond the last, a limit to be capped, a date after every token).
fn whole_number(text: &str) -> Option<i64> {
    let t = text.trim();
    let digits = t.strip_prefix('-').unwrap_or(t);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    match t.parse::<i64>() {
        Ok(n) => Some(n),
        Err(_) if t.starts_with('-') => Some(i64::MIN),
        Err(_) => Some(i64::MAX),
    }
}

fn form_decode(s: &str) -> String {
    percent_decode_str(&s.replace('+', " "))
        .decode_utf8_lossy()
        .into_owned()
}

/// `paginationLinks.baseUrl`: `server.public_url`, else `scheme://Host` as the
/// client (or a trusted proxy in front) sees it.
fn base_url(gw: &Gateway, headers: &HeaderMap, ctx: &RequestCtx) -> String {
    if let Some(url) = &gw.public_url {
        return url.clone();
    }
    let forwarded = |name| {
        ctx.trusted_peer
            .then(|| {
                headers
                    .get(name)
                    .and_then(|v: &HeaderValue| v.to_str().ok())
            })
            .flatten()
            .and_then(|v: &str| v.split(',').next())
            .map(|v| v.trim().to_string())
    };
    let scheme = forwarded(&X_FORWARDED_PROTO).unwrap_or_else(|| ctx.scheme.to_string());
    let host = forwarded(&X_FORWARDED_HOST).or_else(|| {
        headers
            .get(HOST)
            .and_then(|h| h.to_str().ok())
            .map(str::to_string)
    });
    match host {
        Some(host) => format!("{scheme}://{host}"),
        None => String::new(),
    }
}

async fn tokens_by_filter(
    gw: &Gateway,
    req: &Request<Incoming>,
    caller: &ApiCaller,
    ctx: &RequestCtx,
) -> Result<Response<RespBody>, ErrorReply> {
    admin_only(caller)?;
    let q = FilterQuery::parse(req.uri().query())?;
    let offset = q.offset()?;
    let page = store(gw)?
        .filter(q.filter(), offset, q.limit)
        .await
        .map_err(store_failed)?;
    let base = base_url(gw, req.headers(), ctx);
    let path = req.uri().path();
    let total_pages = page.total.div_ceil(q.limit);
    let next_page = if q.page + 1 < total_pages {
        q.link(&base, path, q.page + 1)
    } else {
        String::new()
    };
    let previous_page = if q.page > 0 {
        q.link(&base, path, (q.page - 1).min(total_pages.saturating_sub(1)))
    } else {
        String::new()
    };
    let out = PageOut {
        content: page.items.into_iter().map(Filtered::from).collect(),
        current_page: q.page,
        limit: q.limit,
        offset,
        pagination_links: PageLinks {
            base_url: base,
            next_page,
            previous_page,
        },
        total: page.total,
        total_pages,
    };
    Ok(json_response(StatusCode::OK, &out))
}

async fn clear_failed_logins(
    gw: &Gateway,
    caller: &ApiCaller,
    user_key: &str,
    ctx: &RequestCtx,
) -> Result<Response<RespBody>, ErrorReply> {
    admin_only(caller)?;
    // Lockout is counted per username; the endpoint takes the user key.
    let name = match gw
        .live
        .load()
        .identity
        .username_for_key(user_key, caller.creds())
        .await
    {
        Ok(name) => name,
        Err(e) => {
            tracing::debug!(error = %e, "user key look-up for a lockout reset failed; clearing by key only");
            None
        }
    };
    let mut cleared = gw.auth.clear_lockout(user_key);
    if let Some(name) = &name {
        cleared |= gw.auth.clear_lockout(name);
    }
    audit::lockout_cleared(
        ctx,
        user_key,
        name.as_deref(),
        cleared,
        &caller.identity.key,
    );
    Ok(empty_response(StatusCode::NO_CONTENT))
}

/// The OpenAPI 3.1 document of this API (kept true by `tests/openapi.rs`).
pub const OPENAPI: &str = include_str!("openapi.json");

fn openapi() -> Response<RespBody> {
    let mut resp = Response::new(http_body_util::Either::Right(http_body_util::Full::new(
        bytes::Bytes::from_static(OPENAPI.as_bytes()),
    )));
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json;charset=UTF-8"),
    );
    resp
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct AuthTestOut {
    is_successful_authentication: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    authentication_failure_details: Option<String>,
}

async fn auth_test(
    gw: &Gateway,
    req: &Request<Incoming>,
    ctx: &RequestCtx,
    live: &Live,
) -> Response<RespBody> {
    let failed = |reply: ErrorReply| AuthTestOut {
        is_successful_authentication: false,
        authentication_failure_details: Some(reply.messages.join("; ")),
    };
    let out = match authenticate(gw, req.headers(), ctx, live).await {
        Ok(caller) => {
            if matches!(caller.via, Caller::Token(_)) {
                gw.metrics.decision(Decision::Ok);
            }
            AuthTestOut {
                is_successful_authentication: true,
                authentication_failure_details: None,
            }
        }
        // Throttled, or the store unavailable: no verdict on the credentials.
        Err(Denied::Policy(r)) if !r.judges_credentials() => return r.reply().into_response(),
        // A lockout is told like any failure: authTest never says whether
        // a named user is locked.
        Err(Denied::Policy(Refusal::Locked { .. })) => failed(Refusal::Unauthorized.reply()),
        Err(denied) => failed(denied.into()),
    };
    json_response(StatusCode::OK, &out)
}
