//! One function per management API operation, each given an
//! authenticated caller; and the replies they share.

use std::collections::BTreeMap;

use http::header::HeaderValue;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;

use crate::audit;
use crate::auth::policy::{Caller, Refusal, store_unavailable};
use crate::error::{ErrorReply, RespBody, empty_response, json_response};
use crate::metrics::Decision;
use crate::request::RequestCtx;
use crate::state::{Gateway, Live};
use crate::store::{InsertError, NewToken, Scope, Store, StoreError};

use super::body;
use super::caller::ApiCaller;
use super::caller::{Denied, authenticate, identity_failed};
use super::types::*;
use super::validity;

pub(super) fn store_failed(e: StoreError) -> ErrorReply {
    tracing::error!(error = %e, "token store failed; management call refused with 503");
    store_unavailable()
}

/// The open store, or 503 (fail closed) while it is not.
pub(super) fn store(gw: &Gateway) -> Result<std::sync::Arc<Store>, ErrorReply> {
    gw.store.get().map_err(|e| {
        tracing::debug!(error = %e, "token store not open; management call refused with 503");
        store_unavailable()
    })
}

pub(super) fn forbidden(message: &str) -> ErrorReply {
    ErrorReply::client(StatusCode::FORBIDDEN, message)
}

pub(super) fn admin_only(caller: &ApiCaller) -> Result<(), ErrorReply> {
    if caller.identity.is_admin {
        Ok(())
    } else {
        Err(forbidden("Only system administrators may do this"))
    }
}

pub(super) fn parse_id(gw: &Gateway, raw: &str) -> Result<u64, ErrorReply> {
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

pub(super) fn no_such_token() -> ErrorReply {
    ErrorReply::client(StatusCode::NOT_FOUND, "No such token")
}

pub(super) async fn list_tokens(
    gw: &Gateway,
    caller: &ApiCaller,
) -> Result<Response<RespBody>, ErrorReply> {
    let tokens = store(gw)?
        .list_user(&caller.identity.key)
        .await
        .map_err(store_failed)?;
    let listed: Vec<Listed> = tokens.into_iter().map(Listed::from).collect();
    Ok(json_response(StatusCode::OK, &listed))
}

pub(super) async fn create_token(
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
        allowed_ips: asked.allowed_ips,
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
    // Queued for the notifier; the answer does not wait for it.
    gw.notices.created(&record);
    let created = Created::of(record, plain.expose().to_string());
    Ok(json_response(StatusCode::OK, &created))
}

pub(super) async fn rotate_token(
    gw: &Gateway,
    req: Request<Incoming>,
    caller: &ApiCaller,
    raw_id: &str,
    ctx: &RequestCtx,
) -> Result<Response<RespBody>, ErrorReply> {
    let id = parse_id(gw, raw_id)?;
    let obj = body::json_object_or_none(req, gw.max_api_body).await?;
    let grace_seconds = parse_rotate(&obj)?;
    let store = store(gw)?;
    let existing = store.get(id).await.map_err(store_failed)?;
    let existing = match existing {
        Some(r) if r.user_key == caller.identity.key || caller.identity.is_admin => r,
        _ => {
            store.settle().await.map_err(store_failed)?;
            return Err(no_such_token());
        }
    };
    let now = gw.clock.now_ms();
    if existing.is_expired(now) {
        return Err(ErrorReply::client(
            StatusCode::BAD_REQUEST,
            "This token has expired; create a new one instead",
        ));
    }
    let plain = gw.auth.format().generate().map_err(|e| {
        tracing::error!(error = %e, "no randomness for a rotated token");
        ErrorReply::ours(
            StatusCode::SERVICE_UNAVAILABLE,
            "Cannot rotate a token right now",
        )
    })?;
    let previous_until = (grace_seconds > 0).then(|| now.saturating_add(grace_seconds * 1000));
    let rotated = store
        .rotate(id, plain.hash(), previous_until)
        .await
        .map_err(store_failed)?
        .ok_or_else(no_such_token)?;
    audit::token_rotated(ctx, &rotated, grace_seconds, &caller.identity.key);
    let answer = Created::of(rotated, plain.expose().to_string());
    Ok(json_response(StatusCode::OK, &answer))
}

pub(super) async fn update_token(
    gw: &Gateway,
    req: Request<Incoming>,
    caller: &ApiCaller,
    raw_id: &str,
    ctx: &RequestCtx,
) -> Result<Response<RespBody>, ErrorReply> {
    let id = parse_id(gw, raw_id)?;
    let obj = body::json_object(req, gw.max_api_body).await?;
    let description = parse_update(&obj)?;
    let owned = store(gw)?.get(id).await.map_err(store_failed)?;
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

pub(super) async fn delete_token(
    gw: &Gateway,
    caller: &ApiCaller,
    raw_id: &str,
    ctx: &RequestCtx,
) -> Result<Response<RespBody>, ErrorReply> {
    let id = parse_id(gw, raw_id)?;
    let store = store(gw)?;
    let existing = store.get(id).await.map_err(store_failed)?;
    match existing {
        Some(r) if r.user_key == caller.identity.key || caller.identity.is_admin => {}
        _ => {
            // After a failed write, a token may be gone from memory but not yet
            // from disk: a retried delete is answered only once that is settled.
            store.settle().await.map_err(store_failed)?;
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

pub(super) async fn delete_all_for(
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

pub(super) async fn tokens_by_filter(
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
    let base = ctx.public_base(req, gw.public_url.as_deref());
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

pub(super) async fn clear_failed_logins(
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
    let refused = |r: Refusal| r.reply();
    let mut cleared = gw.auth.clear_lockout(user_key).await.map_err(refused)?;
    if let Some(name) = &name {
        cleared |= gw.auth.clear_lockout(name).await.map_err(refused)?;
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

pub(super) fn openapi() -> Response<RespBody> {
    let mut resp = Response::new(http_body_util::Either::Right(http_body_util::Full::new(
        bytes::Bytes::from_static(OPENAPI.as_bytes()),
    )));
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json;charset=UTF-8"),
    );
    resp
}

pub(super) async fn auth_test(
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
