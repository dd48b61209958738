//! The management API's routes and the methods each takes.

use http::Method;
use percent_encoding::percent_decode_str;

use super::API_ROOT;

pub(super) enum Route {
    Tokens,
    Token(String),
    Rotate(String),
    DeleteAllFor(String),
    TokensByFilter,
    AuthTest,
    FailedLogins(String),
    OpenApi,
}

impl Route {
    pub(super) fn methods(&self) -> &'static [Method] {
        match self {
            Route::Tokens => &[Method::GET, Method::POST],
            Route::Token(_) => &[Method::PATCH, Method::DELETE],
            Route::Rotate(_) => &[Method::POST],
            Route::DeleteAllFor(_) | Route::FailedLogins(_) => &[Method::DELETE],
            Route::TokensByFilter => &[Method::GET],
            Route::AuthTest => &[Method::GET, Method::POST, Method::PUT],
            Route::OpenApi => &[Method::GET, Method::HEAD],
        }
    }
}

pub(super) fn route(path: &str) -> Option<Route> {
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
        ["user", "token", id, "rotate"] => Some(Route::Rotate((*id).to_string())),
        ["user", "tokensByFilter"] | ["user", "tokensByFilter", ""] => Some(Route::TokensByFilter),
        ["user", "authTest"] | ["user", "authTest", ""] => Some(Route::AuthTest),
        ["admin", "failedLogins", key] if !key.is_empty() => decoded(key).map(Route::FailedLogins),
        ["openapi.json"] => Some(Route::OpenApi),
        _ => None,
    }
}
