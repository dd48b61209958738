//! Callers of a gateway, so that a test says who calls and what, and reads
//! like a sentence:
//!
//! ```ignore
//! let (status, v) = s.as_user("alice", "alice").post("/user/token", json!({...})).await;
//! let resp = s.with_token(&token).myself().await;
//! let resp = s.anonymous().header("x-request-id", "ci-1").fetch("/rest/api/2/serverInfo").await;
//! ```
//!
//! `get`, `post`, `patch` and `delete` speak to the management API (paths
//! below `/rest/de.resolution.apitokenauth/latest`) and answer the status
//! and the JSON body; `fetch`, `myself` and `request` go through the gateway
//! to the upstream (paths from the root) and answer the whole response.

use std::future::Future;

use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde_json::Value;

use super::client;

/// The management API's root, as the gateway serves it.
pub const API: &str = "/rest/de.resolution.apitokenauth/latest";

/// A user that exists in the simulated Jira and Confluence: alice, JIRAUSER10100.
pub const ALICE_KEY: &str = "JIRAUSER10100";
/// bob, JIRAUSER10200.
pub const BOB_KEY: &str = "JIRAUSER10200";
/// admin, JIRAUSER10000: a Jira and Confluence administrator.
pub const ADMIN_KEY: &str = "JIRAUSER10000";
/// A well-formed token that no store holds.
pub const UNKNOWN_TOKEN: &str = "tg_000000000000000000000000000000000000";

/// Something with a listener to call: the simulated-Jira setup, a gateway
/// started in-process, or one at an address (a child process).
pub trait Gateway {
    /// `http://host:port` of the listener.
    fn base(&self) -> String;

    /// The client the callers use.
    fn http(&self) -> reqwest::Client {
        client()
    }

    /// A caller with `Authorization: Basic user:password` (a token in place
    /// of the password works too).
    fn as_user(&self, user: &str, password: &str) -> Caller {
        self.caller(Credentials::Basic(user.into(), password.into()))
    }

    /// A caller with `Authorization: Bearer token`.
    fn with_token(&self, token: &str) -> Caller {
        self.caller(Credentials::Bearer(token.into()))
    }

    /// A caller that sends `Authorization: value` as it is.
    fn with_authorization(&self, value: &str) -> Caller {
        self.caller(Credentials::Raw(value.into()))
    }

    /// A caller without an `Authorization` header.
    fn anonymous(&self) -> Caller {
        self.caller(Credentials::None)
    }

    fn caller(&self, credentials: Credentials) -> Caller {
        Caller {
            http: self.http(),
            base: self.base(),
            credentials,
            headers: Vec::new(),
        }
    }
}

impl Gateway for tokengate::Running {
    fn base(&self) -> String {
        format!("http://{}", self.addr())
    }
}

/// A gateway known by its address (a child process, a restart).
#[derive(Clone)]
pub struct Remote {
    pub base: String,
    pub http: reqwest::Client,
}

impl Remote {
    /// `base` is `http://host:port`.
    pub fn at(base: impl Into<String>) -> Remote {
        Remote::with_client(base, client())
    }

    pub fn with_client(base: impl Into<String>, http: reqwest::Client) -> Remote {
        Remote {
            base: base.into(),
            http,
        }
    }
}

impl Gateway for Remote {
    fn base(&self) -> String {
        self.base.clone()
    }
    fn http(&self) -> reqwest::Client {
        self.http.clone()
    }
}

/// What a caller puts in `Authorization`.
#[derive(Clone, Debug)]
pub enum Credentials {
    None,
    Basic(String, String),
    Bearer(String),
    Raw(String),
}

/// Someone calling a gateway: who (the credentials) and how (extra headers,
/// the client).
#[derive(Clone)]
pub struct Caller {
    http: reqwest::Client,
    base: String,
    credentials: Credentials,
    headers: Vec<(String, String)>,
}

impl Caller {
    /// Sends `name: value` with every request.
    pub fn header(mut self, name: &str, value: impl Into<String>) -> Caller {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Calls with another client (HTTP/2, another source address).
    pub fn over(mut self, http: reqwest::Client) -> Caller {
        self.http = http;
        self
    }

    /// A request for `path` from the gateway's root, with the caller's
    /// credentials and headers.
    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        req = match &self.credentials {
            Credentials::None => req,
            Credentials::Basic(user, password) => req.basic_auth(user, Some(password)),
            Credentials::Bearer(token) => req.bearer_auth(token),
            Credentials::Raw(value) => req.header("authorization", value),
        };
        for (name, value) in &self.headers {
            req = req.header(name, value);
        }
        req
    }

    /// A request for `path` below the management API's root.
    pub fn api(&self, method: Method, path: &str) -> RequestBuilder {
        self.request(method, &format!("{API}{path}"))
    }

    /// `GET` on the management API.
    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.api(Method::GET, path).json_answer().await
    }

    /// `POST` of `body` as JSON on the management API.
    pub async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.api(Method::POST, path).json(&body).json_answer().await
    }

    /// `PATCH` of `body` as JSON on the management API.
    pub async fn patch(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.api(Method::PATCH, path)
            .json(&body)
            .json_answer()
            .await
    }

    /// `DELETE` on the management API.
    pub async fn delete(&self, path: &str) -> (StatusCode, Value) {
        self.api(Method::DELETE, path).json_answer().await
    }

    /// `GET path` through the gateway: the whole response.
    pub async fn fetch(&self, path: &str) -> Response {
        self.request(Method::GET, path).answer().await
    }

    /// `GET /rest/api/2/myself` through the gateway (who Jira takes the caller for).
    pub async fn myself(&self) -> Response {
        self.fetch("/rest/api/2/myself").await
    }

    /// A token made by this caller with `body`; panics unless the answer is 200.
    pub async fn create_token(&self, body: Value) -> Value {
        let (status, v) = self.post("/user/token", body).await;
        assert_eq!(status, 200, "create token: {v}");
        v
    }
}

/// Sending a request in one word.
pub trait Answer {
    /// Sends the request; the response (a transport error panics).
    fn answer(self) -> impl Future<Output = Response>;
    /// Sends the request; the status and the JSON body (see [`status_and_json`]).
    fn json_answer(self) -> impl Future<Output = (StatusCode, Value)>;
}

impl Answer for RequestBuilder {
    async fn answer(self) -> Response {
        self.send().await.unwrap()
    }
    async fn json_answer(self) -> (StatusCode, Value) {
        status_and_json(self.answer().await).await
    }
}

/// The status and the body: its JSON, `Null` when empty, the text as a JSON
/// string when it is not JSON.
pub async fn status_and_json(resp: Response) -> (StatusCode, Value) {
    let status = resp.status();
    let text = resp.text().await.unwrap();
    if text.is_empty() {
        return (status, Value::Null);
    }
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// A client that speaks HTTP/2 from the first byte (prior knowledge, no TLS).
pub fn http2_client() -> reqwest::Client {
    let _ = client();
    reqwest::Client::builder()
        .no_proxy()
        .http2_prior_knowledge()
        .build()
        .unwrap()
}

/// The first `errorMessages` entry of a Jira-shaped error body.
pub fn error_message(body: &Value) -> &str {
    body["errorMessages"][0]
        .as_str()
        .unwrap_or_else(|| panic!("no error message: {body}"))
}

/// The error a Jira-shaped body gives for `field`.
pub fn field_error<'a>(body: &'a Value, field: &str) -> &'a str {
    body["errors"][field]
        .as_str()
        .unwrap_or_else(|| panic!("no error for {field}: {body}"))
}
