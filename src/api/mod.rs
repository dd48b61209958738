//! The token-management REST API, served by tokengate itself under
//! `/rest/de.resolution.apitokenauth/{latest|1.0}/`; nothing under that root
//! is ever forwarded.
//!
//! [`handle`] is the way a call goes: route and method, who is calling
//! (`caller`), whether their token's scope allows it, then one function per
//! operation (`handlers`). `routes` is the URL table, `types` the shapes of
//! requests and answers, `body` reads JSON bodies, `validity` works out
//! token lifetimes and `path` decides which request paths are this API's.

mod body;
pub(crate) mod caller;
mod handlers;
pub mod path;
mod routes;
mod types;
pub mod validity;

use std::sync::OnceLock;

use http::header::{ALLOW, CACHE_CONTROL, HeaderValue, X_CONTENT_TYPE_OPTIONS};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;

use crate::auth::policy::Caller;
use crate::error::{ErrorReply, RespBody};
use crate::metrics::Decision;
use crate::request::RequestCtx;
use crate::state::{Gateway, Live};
use caller::authenticate;
pub use handlers::OPENAPI;
use handlers::*;
use routes::{Route, route};

pub const API_ROOT: &str = "/rest/de.resolution.apitokenauth";

/// Serves one management API request.
pub async fn handle(gw: &Gateway, req: Request<Incoming>, ctx: &RequestCtx) -> Response<RespBody> {
    let live = gw.live.load_full();
    let mut resp = match serve(gw, req, ctx, &live).await {
        Ok(resp) => resp,
        Err(reply) => reply.into_response(),
    };
    // An answer may hold a plain token (the create answer) or someone's
    // tokens: no browser or cache keeps it, and none reads it as anything
    // but its type.
    let headers = resp.headers_mut();
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    resp
}

/// What this API offers beyond the original app's, as its OpenAPI document
/// says: the pages show a control only where the API has it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Features {
    /// `POST /user/token/{id}/rotate`.
    pub rotate: bool,
    /// `allowedIps` in the create request.
    pub allowed_ips: bool,
}

pub fn features() -> Features {
    static FEATURES: OnceLock<Features> = OnceLock::new();
    *FEATURES.get_or_init(|| features_of(OPENAPI))
}

fn features_of(openapi: &str) -> Features {
    let doc: serde_json::Value = serde_json::from_str(openapi).unwrap_or_default();
    let rotate = doc["paths"].as_object().is_some_and(|paths| {
        paths
            .iter()
            .any(|(path, item)| path.ends_with("/rotate") && item.get("post").is_some())
    });
    // The create request's schema, inline or by reference.
    let mut schema = &doc["paths"]["/user/token"]["post"]["requestBody"]["content"]["application/json"]
        ["schema"];
    if let Some(name) = schema["$ref"]
        .as_str()
        .and_then(|r| r.strip_prefix("#/components/schemas/"))
    {
        schema = &doc["components"]["schemas"][name];
    }
    Features {
        rotate,
        allowed_ips: schema["properties"].get("allowedIps").is_some(),
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
        .permit(&caller.via, &req, ctx)
        .map_err(|r| r.reply())?;
    if matches!(caller.via, Caller::Token(_)) {
        gw.metrics.decision(Decision::Ok);
    }
    match (route, req.method().clone()) {
        (Route::Tokens, Method::GET) => list_tokens(gw, &caller).await,
        (Route::Tokens, _) => create_token(gw, req, &caller, ctx, live).await,
        (Route::Token(id), Method::PATCH) => update_token(gw, req, &caller, &id, ctx).await,
        (Route::Token(id), _) => delete_token(gw, &caller, &id, ctx).await,
        (Route::Rotate(id), _) => rotate_token(gw, req, &caller, &id, ctx).await,
        (Route::DeleteAllFor(key), _) => delete_all_for(gw, &caller, &key, ctx).await,
        (Route::TokensByFilter, _) => tokens_by_filter(gw, &req, &caller, ctx).await,
        (Route::FailedLogins(key), _) => clear_failed_logins(gw, &caller, &key, ctx).await,
        (Route::AuthTest | Route::OpenApi, _) => Err(ErrorReply::client(
            StatusCode::NOT_FOUND,
            "No such resource",
        )),
    }
}

/// The pure parsing steps of the management API, for the fuzz targets in
/// `fuzz/`; not part of tokengate's interface.
#[doc(hidden)]
pub mod fuzzing {
    use super::body;
    use super::types::{FilterQuery, parse_create, parse_update};
    use super::validity::Requested;
    use crate::error::ErrorReply;
    use serde_json::{Map, Value};

    /// A create request body as `POST /user/token` reads it.
    #[derive(Debug)]
    pub struct Create {
        pub description: String,
        pub requested: Requested,
        pub scope: Option<u8>,
        pub for_user_key: Option<String>,
        pub allowed_ips: Vec<String>,
    }

    pub fn create_body(bytes: &[u8]) -> Result<Create, ErrorReply> {
        let obj: Map<String, Value> = body::parse_object(bytes)?;
        let c = parse_create(&obj)?;
        Ok(Create {
            description: c.description,
            requested: c.requested,
            scope: c.scope.map(|s| s.code()),
            for_user_key: c.for_user_key,
            allowed_ips: c.allowed_ips.to_strings(),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn features_follow_the_openapi_document() {
        assert_eq!(
            features_of(OPENAPI),
            Features {
                rotate: OPENAPI.contains("/rotate"),
                allowed_ips: OPENAPI.contains("\"allowedIps\""),
            }
        );
        let more = r##"{"paths": {"/user/token": {"post": {"requestBody": {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/C"}}}}}},
            "/user/token/{id}/rotate": {"post": {}}},
            "components": {"schemas": {"C": {"properties": {"allowedIps": {}}}}}}"##;
        assert_eq!(
            features_of(more),
            Features {
                rotate: true,
                allowed_ips: true
            }
        );
        assert_eq!(
            features_of("not json"),
            Features {
                rotate: false,
                allowed_ips: false
            }
        );
    }
}
