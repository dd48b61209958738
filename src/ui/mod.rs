//! tokengate's own pages, under `ui.path` on the public listener, on the
//! same origin as Jira: `{path}/`, the API tokens of whoever is logged in to
//! Jira (or Confluence) in this browser, and `{path}/admin`, every token for
//! administrators. The pages are static files (`assets`); their scripts call
//! the management API with the browser's session, which the API accepts
//! under its CSRF rule (`auth::policy`). `{path}/context` tells the scripts
//! who is logged in and the token rules.
//!
//! Without a session the pages send the browser to the upstream's login page
//! and back. Every answer carries a Content-Security-Policy that allows
//! nothing but this origin's files and no framing; anything that shows
//! tokens or depends on who is asking is `no-store`.

mod assets;

use bytes::Bytes;
use http::header::{
    ALLOW, CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, ETAG, HeaderValue, IF_NONE_MATCH,
    LOCATION, REFERRER_POLICY, X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS,
};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{Either, Full};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde::Serialize;

use crate::api::caller::{ApiCaller, Denied, authenticate};
use crate::api::{API_ROOT, Features, features};
use crate::auth::policy::Refusal;
use crate::config::Product;
use crate::error::{ErrorReply, RespBody, json_response};
use crate::request::RequestCtx;
use crate::state::{Gateway, Live};
use assets::Asset;

/// What a query parameter's value escapes: all but the unreserved characters.
const QUERY_VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Only this origin's files, nothing inline, never in a frame.
const CSP: &str = "default-src 'self'; frame-ancestors 'none'";

/// The part of the pages' path after `ui.path`, as `api::path::under` read it.
enum Page<'a> {
    /// `{path}` itself: sent on to `{path}/`, so relative links work.
    Root,
    /// `{path}/admin/`: sent on to `{path}/admin`, likewise.
    AdminSlash,
    Tokens,
    Admin,
    Context,
    Asset(&'a str),
    Unknown,
}

impl Page<'_> {
    fn of(rest: &str) -> Page<'_> {
        match rest {
            "" => Page::Root,
            "/" => Page::Tokens,
            "/admin" => Page::Admin,
            "/admin/" => Page::AdminSlash,
            "/context" => Page::Context,
            _ => match rest.strip_prefix("/assets/") {
                Some(name) => Page::Asset(name),
                None => Page::Unknown,
            },
        }
    }
}

/// Serves the pages' request for `rest`, the path after `root` (`ui.path`).
pub async fn handle<B>(
    gw: &Gateway,
    req: &Request<B>,
    ctx: &RequestCtx,
    root: &str,
    rest: &str,
) -> Response<RespBody> {
    let mut resp = match serve(gw, req, ctx, root, rest).await {
        Ok(resp) => resp,
        Err(reply) => no_store(reply.into_response()),
    };
    let headers = resp.headers_mut();
    headers.insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    resp
}

async fn serve<B>(
    gw: &Gateway,
    req: &Request<B>,
    ctx: &RequestCtx,
    root: &str,
    rest: &str,
) -> Result<Response<RespBody>, ErrorReply> {
    if !matches!(*req.method(), Method::GET | Method::HEAD) {
        return Err(ErrorReply::client(
            StatusCode::METHOD_NOT_ALLOWED,
            "The pages only answer GET and HEAD",
        )
        .with_header(ALLOW, HeaderValue::from_static("GET, HEAD")));
    }
    match Page::of(rest) {
        Page::Root => Ok(redirect(&format!("{root}/"))),
        Page::AdminSlash => Ok(redirect(&format!("{root}/admin"))),
        Page::Asset(name) => static_asset(req, name),
        Page::Unknown => Err(ErrorReply::client(StatusCode::NOT_FOUND, "No such page")),
        Page::Tokens => {
            let back = format!("{root}/");
            page_for(gw, req, ctx, &back, |_| {
                (StatusCode::OK, &assets::TOKENS_PAGE)
            })
            .await
        }
        Page::Admin => {
            let back = format!("{root}/admin");
            page_for(gw, req, ctx, &back, |caller| {
                if caller.identity.is_admin {
                    (StatusCode::OK, &assets::ADMIN_PAGE)
                } else {
                    (StatusCode::FORBIDDEN, &assets::FORBIDDEN_PAGE)
                }
            })
            .await
        }
        Page::Context => {
            let live = gw.live.load_full();
            // No session: a 401 the script answers by loading the page again
            // (and so going to the login page), never a password prompt.
            let caller = match authenticate(gw, req.headers(), ctx, &live).await {
                Ok(caller) => caller,
                Err(Denied::Policy(Refusal::CredentialsRequired)) => {
                    return Err(Refusal::SessionEnded.reply());
                }
                Err(denied) => return Err(denied.into()),
            };
            let context = context(gw, req, ctx, &live, &caller, root);
            Ok(no_store(json_response(StatusCode::OK, &context)))
        }
    }
}

/// The page `choose` picks for the caller, or without a session, the way to
/// the login page and back to `back`.
async fn page_for<B>(
    gw: &Gateway,
    req: &Request<B>,
    ctx: &RequestCtx,
    back: &str,
    choose: impl FnOnce(&ApiCaller) -> (StatusCode, &'static Asset),
) -> Result<Response<RespBody>, ErrorReply> {
    let live = gw.live.load_full();
    let caller = match authenticate(gw, req.headers(), ctx, &live).await {
        Ok(caller) => caller,
        Err(Denied::Policy(Refusal::CredentialsRequired | Refusal::SessionEnded)) => {
            return Ok(to_login(gw, req, ctx, &live, back));
        }
        Err(denied) => return Err(denied.into()),
    };
    let (status, file) = choose(&caller);
    let mut resp = file_response(file);
    *resp.status_mut() = status;
    Ok(no_store(resp))
}

/// What the scripts need to know: who is logged in, the token rules, what
/// the API offers, and where the upstream is for the `curl` examples.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Context<'a> {
    user: User<'a>,
    /// `jira` or `confluence`.
    product: &'static str,
    base_url: String,
    api_root: String,
    pages_root: &'a str,
    /// The upstream's "who am I" path, for a first `curl` with a new token.
    who_am_i: &'static str,
    tokens: TokenRules,
    features: Features,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct User<'a> {
    key: &'a str,
    name: &'a str,
    admin: bool,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct TokenRules {
    default_validity_months: u32,
    max_validity_months: u32,
    max_tokens_per_user: u32,
    force_read_only: bool,
}

fn context<'a, B>(
    gw: &Gateway,
    req: &Request<B>,
    ctx: &RequestCtx,
    live: &Live,
    caller: &'a ApiCaller,
    root: &'a str,
) -> Context<'a> {
    let t = &live.config.tokens;
    let product = live.config.upstream.product;
    Context {
        user: User {
            key: &caller.identity.key,
            name: &caller.identity.name,
            admin: caller.identity.is_admin,
        },
        product: match product {
            Product::Jira => "jira",
            Product::Confluence => "confluence",
        },
        base_url: ctx.public_base(req, gw.public_url.as_deref()),
        api_root: format!("{API_ROOT}/latest"),
        pages_root: root,
        who_am_i: match product {
            Product::Jira => "/rest/api/2/myself",
            Product::Confluence => "/rest/api/user/current",
        },
        tokens: TokenRules {
            default_validity_months: t.default_validity_months,
            max_validity_months: t.max_validity_months,
            max_tokens_per_user: t.max_tokens_per_user,
            force_read_only: t.force_read_only,
        },
        features: features(),
    }
}

/// 302 to the upstream's login page, which sends the browser back to `back`
/// (a path on this origin) once the user has logged in.
fn to_login<B>(
    gw: &Gateway,
    req: &Request<B>,
    ctx: &RequestCtx,
    live: &Live,
    back: &str,
) -> Response<RespBody> {
    let login = match live.config.upstream.product {
        Product::Jira => "/login.jsp",
        Product::Confluence => "/login.action",
    };
    let base = ctx.public_base(req, gw.public_url.as_deref());
    let back = utf8_percent_encode(back, QUERY_VALUE);
    redirect(&format!("{base}{login}?os_destination={back}"))
}

fn redirect(location: &str) -> Response<RespBody> {
    let mut resp = empty(StatusCode::FOUND);
    if let Ok(v) = HeaderValue::from_str(location) {
        resp.headers_mut().insert(LOCATION, v);
    }
    no_store(resp)
}

/// A file of `{path}/assets/`: revalidated by its `ETag` every time (a new
/// tokengate's files are used at once), 304 when the browser has it.
fn static_asset<B>(req: &Request<B>, name: &str) -> Result<Response<RespBody>, ErrorReply> {
    let (asset, etag) = assets::find(name)
        .ok_or_else(|| ErrorReply::client(StatusCode::NOT_FOUND, "No such file"))?;
    let cached = req
        .headers()
        .get_all(IF_NONE_MATCH)
        .iter()
        .any(|v| assets::none_match(v, etag));
    let mut resp = if cached {
        empty(StatusCode::NOT_MODIFIED)
    } else {
        file_response(asset)
    };
    let headers = resp.headers_mut();
    headers.insert(ETAG, etag.clone());
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Ok(resp)
}

fn file_response(asset: &'static Asset) -> Response<RespBody> {
    let mut resp = Response::new(Either::Right(Full::new(Bytes::from_static(asset.bytes))));
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(asset.content_type));
    resp
}

fn empty(status: StatusCode) -> Response<RespBody> {
    let mut resp = Response::new(Either::Right(Full::new(Bytes::new())));
    *resp.status_mut() = status;
    resp
}

/// Not kept by the browser or any cache: it shows tokens, or depends on who asks.
fn no_store(mut resp: Response<RespBody>) -> Response<RespBody> {
    resp.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}
