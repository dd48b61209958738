//! Error responses in the shape Jira clients already parse:
//! `{"errorMessages": [...], "errors": {...}}`, always `application/json`.
//!
//! Each layer has its own error enum; each converts into an [`ErrorReply`]
//! whose status follows from the variant, and says whose fault it is.

use std::collections::BTreeMap;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderName, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::{Either, Full};
use serde::Serialize;

pub use crate::body::RespBody;

/// Whose fault an error is, said where the error is made (as pingora's
/// `Error::new_down/new_up/new_in`); the status class and the log level
/// follow from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Bad input or credentials: 4xx, logged at debug at most.
    Client,
    /// The upstream was unreachable, slow or broken: 502/504, a warning.
    Upstream,
    /// Ours (the store, a bug): 5xx, an error.
    Ours,
}

impl Fault {
    pub fn level(self) -> tracing::Level {
        match self {
            Fault::Client => tracing::Level::DEBUG,
            Fault::Upstream => tracing::Level::WARN,
            Fault::Ours => tracing::Level::ERROR,
        }
    }
}

/// An error response about to be sent.
#[derive(Debug, Clone)]
pub struct ErrorReply {
    pub status: StatusCode,
    pub fault: Fault,
    pub messages: Vec<String>,
    pub fields: BTreeMap<String, String>,
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    #[serde(rename = "errorMessages")]
    messages: &'a [String],
    errors: &'a BTreeMap<String, String>,
}

impl ErrorReply {
    /// The client's fault: a 4xx `status`.
    pub fn client(status: StatusCode, message: impl Into<String>) -> ErrorReply {
        debug_assert!(status.is_client_error(), "{status}");
        ErrorReply::made(status, Fault::Client, message)
    }

    /// The upstream's fault: 502 or 504.
    pub fn upstream(status: StatusCode, message: impl Into<String>) -> ErrorReply {
        debug_assert!(status.is_server_error(), "{status}");
        ErrorReply::made(status, Fault::Upstream, message)
    }

    /// Ours: 500 or 503.
    pub fn ours(status: StatusCode, message: impl Into<String>) -> ErrorReply {
        debug_assert!(status.is_server_error(), "{status}");
        ErrorReply::made(status, Fault::Ours, message)
    }

    fn made(status: StatusCode, fault: Fault, message: impl Into<String>) -> ErrorReply {
        ErrorReply {
            status,
            fault,
            messages: vec![message.into()],
            fields: BTreeMap::new(),
            headers: Vec::new(),
        }
    }

    /// A 400 about fields: messages go into `errors` by field name.
    pub fn fields(fields: BTreeMap<String, String>) -> ErrorReply {
        ErrorReply {
            status: StatusCode::BAD_REQUEST,
            fault: Fault::Client,
            messages: Vec::new(),
            fields,
            headers: Vec::new(),
        }
    }

    pub fn with_header(mut self, name: HeaderName, value: HeaderValue) -> ErrorReply {
        self.headers.push((name, value));
        self
    }

    pub fn into_response(self) -> Response<RespBody> {
        let body = ErrorBody {
            messages: &self.messages,
            errors: &self.fields,
        };
        let mut resp = json_response(self.status, &body);
        for (name, value) in self.headers {
            resp.headers_mut().append(name, value);
        }
        resp
    }
}

/// A JSON response of tokengate's own.
pub fn json_response<T: Serialize + ?Sized>(status: StatusCode, value: &T) -> Response<RespBody> {
    // Serialising our own plain structs cannot fail; fall back to an empty object anyway.
    let bytes = serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec());
    let mut resp = Response::new(Either::Right(Full::new(Bytes::from(bytes))));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/json;charset=UTF-8"),
    );
    resp
}

/// An empty response of tokengate's own.
pub fn empty_response(status: StatusCode) -> Response<RespBody> {
    let mut resp = Response::new(Either::Right(Full::new(Bytes::new())));
    *resp.status_mut() = status;
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn body_has_the_jira_shape() {
        let mut fields = BTreeMap::new();
        fields.insert(
            "tokenDescription".to_string(),
            "must not be empty".to_string(),
        );
        let resp = ErrorReply::fields(fields).into_response();
        assert_eq!(resp.status(), 400);
        assert!(
            resp.headers()[CONTENT_TYPE]
                .to_str()
                .unwrap()
                .starts_with("application/json")
        );
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["errorMessages"], serde_json::json!([]));
        assert_eq!(v["errors"]["tokenDescription"], "must not be empty");
    }

    #[test]
    fn the_fault_is_the_makers_and_sets_the_log_level() {
        let mine = ErrorReply::ours(StatusCode::SERVICE_UNAVAILABLE, "store");
        assert_eq!(mine.fault, Fault::Ours);
        assert_eq!(mine.fault.level(), tracing::Level::ERROR);
        let theirs = ErrorReply::upstream(StatusCode::BAD_GATEWAY, "down");
        assert_eq!(theirs.fault.level(), tracing::Level::WARN);
        let yours = ErrorReply::client(StatusCode::NOT_FOUND, "no");
        assert_eq!(yours.fault, Fault::Client);
    }
}
