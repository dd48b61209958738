//! The audit log: one event per token created, changed or deleted, per
//! lockout and lockout cleared, and per failed authentication, each with the
//! client's address and the request id. One function per event, so each
//! event's fields are written once. Never a token or a password: events take
//! ids, keys and names only.
//!
//! Events go to the `audit` tracing target, in the configured log format.

use crate::request::RequestCtx;
use crate::store::{AuthEntry, TokenRecord};

/// A failed authentication. `claimed_user` is the name the client gave
/// (Basic), `token` the presented token's entry when the store knew it: on a
/// wrong-user token they are different people, and the event names both.
pub fn auth_failed(
    at: &RequestCtx,
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
        client_ip = %at.client_ip,
        request_id = at.request_id(),
        "authentication failed"
    );
}

/// `user` reached the failure limit from the client's address.
pub fn locked_out(at: &RequestCtx, user: &str, until_ms: Option<u64>) {
    tracing::warn!(
        target: "audit",
        event = "lockout",
        reason = "max_failed_attempts",
        user,
        until_ms,
        client_ip = %at.client_ip,
        request_id = at.request_id(),
        "user locked out from this address after repeated failed attempts"
    );
}

/// The client's address used up its quota of failed attempts.
pub fn throttled(at: &RequestCtx) {
    tracing::warn!(
        target: "audit",
        event = "throttled",
        reason = "failures_per_ip_per_minute",
        client_ip = %at.client_ip,
        request_id = at.request_id(),
        "client throttled after repeated failed attempts"
    );
}

pub fn token_created(at: &RequestCtx, token: &TokenRecord, by_user_key: &str) {
    tracing::info!(
        target: "audit",
        event = "token_created",
        token_id = token.id,
        user_key = %token.user_key,
        by_user_key,
        valid_until = token.valid_until,
        scope = token.scope.code(),
        allowed_ips = token.allowed_ips.len(),
        client_ip = %at.client_ip,
        request_id = at.request_id(),
        "token created"
    );
}

pub fn token_updated(at: &RequestCtx, token_id: u64, user_key: &str) {
    tracing::info!(
        target: "audit",
        event = "token_updated",
        token_id,
        user_key,
        client_ip = %at.client_ip,
        request_id = at.request_id(),
        "token description changed"
    );
}

/// A token got a new secret; the old one works for `grace_seconds` more.
pub fn token_rotated(at: &RequestCtx, token: &TokenRecord, grace_seconds: u64, by_user_key: &str) {
    tracing::info!(
        target: "audit",
        event = "token_rotated",
        token_id = token.id,
        user_key = %token.user_key,
        by_user_key,
        grace_seconds,
        client_ip = %at.client_ip,
        request_id = at.request_id(),
        "token rotated"
    );
}

pub fn token_deleted(at: &RequestCtx, token_id: u64, owner_key: &str, by_user_key: &str) {
    tracing::info!(
        target: "audit",
        event = "token_deleted",
        token_id,
        user_key = owner_key,
        by_user_key,
        client_ip = %at.client_ip,
        request_id = at.request_id(),
        "token deleted"
    );
}

pub fn tokens_deleted_for_user(at: &RequestCtx, user_key: &str, count: u64, by_user_key: &str) {
    tracing::info!(
        target: "audit",
        event = "tokens_deleted_for_user",
        user_key,
        count,
        by_user_key,
        client_ip = %at.client_ip,
        request_id = at.request_id(),
        "all tokens of a user deleted"
    );
}

pub fn lockout_cleared(
    at: &RequestCtx,
    user_key: &str,
    user: Option<&str>,
    was_locked: bool,
    by_user_key: &str,
) {
    tracing::info!(
        target: "audit",
        event = "lockout_cleared",
        user_key,
        user = user.unwrap_or(""),
        was_locked,
        by_user_key,
        client_ip = %at.client_ip,
        request_id = at.request_id(),
        "failed-login counter cleared"
    );
}
