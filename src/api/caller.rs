//! Who calls the management API (and tokengate's pages): a token, a
//! password or the browser's upstream session, as the authentication policy
//! and the upstream say.

use http::header::{AUTHORIZATION, HeaderValue};
use http::{HeaderMap, StatusCode};

use crate::audit;
use crate::auth::SessionCookie;
use crate::auth::identity::{Creds, Identity, IdentityError};
use crate::auth::policy::{Caller, Refusal};
use crate::error::ErrorReply;
use crate::request::RequestCtx;
use crate::state::{Gateway, Live};

/// A management API caller.
pub(crate) struct ApiCaller {
    pub(crate) identity: Identity,
    /// The caller's own credentials for look-ups of other users, when the
    /// upstream takes them (a password, a session).
    own: Option<Own>,
    /// How they came: a token, a password or a session.
    pub(crate) via: Caller,
}

/// Credentials of the caller's own that the upstream accepts.
enum Own {
    Password(HeaderValue),
    Session(SessionCookie),
}

/// Why a management API caller is turned away: the authentication policy's
/// refusal, or what the upstream said about who they are.
pub(crate) enum Denied {
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
    pub(super) fn creds(&self) -> Creds<'_> {
        match &self.own {
            Some(Own::Password(h)) => Creds::Caller(h),
            Some(Own::Session(cookie)) => Creds::Session(cookie),
            None => Creds::Lookup,
        }
    }
}

/// Who is calling: a token (Basic `user:token` or Bearer), as the
/// authentication policy decides, or a password or the browser's session,
/// checked against the upstream. Failed passwords count like on proxied
/// requests; a session the upstream does not know is no credential
/// (`SessionEnded`), and no failed attempt: it is the upstream's own random
/// id, not something a person guesses.
pub(crate) async fn authenticate(
    gw: &Gateway,
    headers: &HeaderMap,
    ctx: &RequestCtx,
    live: &Live,
) -> Result<ApiCaller, Denied> {
    match gw
        .auth
        .identify_own(headers, ctx)
        .await
        .map_err(Denied::Policy)?
    {
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
                own: None,
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
                    gw.auth.password_confirmed(&user, ctx).await;
                    Ok(ApiCaller {
                        identity: (*identity).clone(),
                        own: Some(Own::Password(header)),
                        via: Caller::Password { user },
                    })
                }
                Err(IdentityError::BadCredentials) => Err(Denied::Policy(
                    gw.auth.password_failed(&user, ctx, "wrong_password").await,
                )),
                Err(e) => Err(Denied::Identity(identity_failed(e, ctx))),
            }
        }
        Caller::Session(cookie) => {
            match live.identity.by_session(&cookie, &live.config.auth).await {
                Ok(identity) => Ok(ApiCaller {
                    identity: (*identity).clone(),
                    own: Some(Own::Session(cookie.clone())),
                    via: Caller::Session(cookie),
                }),
                Err(IdentityError::BadCredentials) => Err(Denied::Policy(Refusal::SessionEnded)),
                Err(e) => Err(Denied::Identity(identity_failed(e, ctx))),
            }
        }
    }
}

pub(crate) fn identity_failed(e: IdentityError, ctx: &RequestCtx) -> ErrorReply {
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
