//! A simulated Jira or Confluence Data Center: enough of their REST API for
//! the demo and the tests — who am I, permissions, user look-ups, a sample
//! issue, the load balancer's `/status` — with Basic passwords, personal
//! access tokens, header-based SSO behind a shared secret, a CAPTCHA after
//! repeated failed logins, and session cookies: as Jira does, a login by
//! password or by trusted header answers with `Set-Cookie: JSESSIONID`, and
//! that cookie alone logs the next request in. A browser logs in on the
//! login page (`/login.jsp` on Jira, `/login.action` on Confluence), which
//! sends it back to `os_destination`.
//!
//! Every request it receives is recorded, so tests can prove what reached
//! the upstream and what did not.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use base64::Engine;
use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde_json::{Value, json};
use subtle::ConstantTimeEq;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::Product;

#[derive(Debug, Clone)]
pub struct SimUser {
    pub name: String,
    pub key: String,
    pub password: String,
    pub display_name: String,
    pub groups: Vec<String>,
    pub sysadmin: bool,
}

impl SimUser {
    pub fn new(name: &str, key: &str, password: &str, sysadmin: bool) -> SimUser {
        let mut groups = vec![
            "jira-software-users".to_string(),
            "confluence-users".to_string(),
        ];
        if sysadmin {
            groups.push("jira-administrators".into());
            groups.push("confluence-administrators".into());
        }
        SimUser {
            name: name.into(),
            key: key.into(),
            password: password.into(),
            display_name: format!("{}{}", name[..1].to_uppercase(), &name[1..]),
            groups,
            sysadmin,
        }
    }
}

impl SimUser {
    /// The user's mail address, as the upstream's user look-up tells it.
    pub fn email(&self) -> String {
        format!("{}@example.com", self.name)
    }
}

/// The users of the demo: `admin`/`admin` (system administrator) and
/// `alice`/`alice`, with user keys that differ from their names.
pub fn demo_users() -> Vec<SimUser> {
    vec![
        SimUser::new("admin", "JIRAUSER10000", "admin", true),
        SimUser::new("alice", "JIRAUSER10100", "alice", false),
        SimUser::new("bob", "JIRAUSER10200", "bob", false),
    ]
}

/// How the simulated product behaves.
#[derive(Debug, Clone)]
pub struct SimConfig {
    pub product: Product,
    pub users: Vec<SimUser>,
    /// Header-based SSO: trust this header's username when `secret` matches.
    pub trusted_header: Option<TrustedHeader>,
    /// Personal access tokens: token → username.
    pub pats: HashMap<String, String>,
    /// Failed password logins before a user must solve a CAPTCHA (403).
    pub captcha_after: Option<u32>,
}

#[derive(Debug, Clone)]
pub struct TrustedHeader {
    pub user_header: String,
    /// `(header name, value)` the gateway must send for the user header to count.
    pub secret: Option<(String, String)>,
}

impl SimConfig {
    pub fn jira() -> SimConfig {
        SimConfig {
            product: Product::Jira,
            users: demo_users(),
            trusted_header: None,
            pats: HashMap::new(),
            captcha_after: None,
        }
    }

    pub fn confluence() -> SimConfig {
        SimConfig {
            product: Product::Confluence,
            ..SimConfig::jira()
        }
    }
}

/// A request as the simulated upstream saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: Method,
    /// Path and query exactly as received.
    pub target: String,
    pub headers: HeaderMap,
    /// Who the upstream took the caller to be.
    pub user: Option<String>,
}

struct State {
    config: SimConfig,
    seen: Mutex<Vec<Seen>>,
    failures: Mutex<HashMap<String, u32>>,
    /// Session id → username.
    sessions: Mutex<HashMap<String, String>>,
}

const MAX_SEEN: usize = 10_000;

/// A running simulated upstream.
pub struct SimUpstream {
    pub addr: SocketAddr,
    state: Arc<State>,
    stop: CancellationToken,
}

impl SimUpstream {
    /// Starts on 127.0.0.1 with a free port.
    pub async fn start(config: SimConfig) -> std::io::Result<SimUpstream> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(State {
            config,
            seen: Mutex::new(Vec::new()),
            failures: Mutex::new(HashMap::new()),
            sessions: Mutex::new(HashMap::new()),
        });
        let stop = CancellationToken::new();
        let (s, st) = (state.clone(), stop.clone());
        tokio::spawn(async move {
            loop {
                let (stream, _) = tokio::select! {
                    _ = st.cancelled() => return,
                    r = listener.accept() => match r { Ok(p) => p, Err(_) => continue },
                };
                let s = s.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| {
                        let s = s.clone();
                        async move { Ok::<_, Infallible>(handle(&s, req).await) }
                    });
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection_with_upgrades(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Ok(SimUpstream { addr, state, stop })
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Everything received so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.state
            .seen
            .lock()
            .map(|s| s.clone())
            .unwrap_or_default()
    }

    pub fn clear_seen(&self) {
        if let Ok(mut s) = self.state.seen.lock() {
            s.clear();
        }
    }
}

impl Drop for SimUpstream {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn json_reply(status: StatusCode, v: Value) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(v.to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/json;charset=UTF-8"),
    );
    r
}

fn jira_error(status: StatusCode, message: &str) -> Response<Full<Bytes>> {
    json_reply(status, json!({"errorMessages": [message], "errors": {}}))
}

enum Who {
    Anonymous,
    /// Logged in by this request's credentials (a new session is made).
    User(SimUser),
    /// Logged in by a session cookie.
    Session(SimUser),
    BadPassword,
    Captcha,
}

/// The user of a `JSESSIONID` cookie, if it names a session.
fn session_user(state: &State, headers: &HeaderMap) -> Option<SimUser> {
    let sessions = state.sessions.lock().unwrap_or_else(|p| p.into_inner());
    let id = headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| c.trim().strip_prefix("JSESSIONID="))?;
    let name = sessions.get(id)?;
    state.config.users.iter().find(|u| &u.name == name).cloned()
}

fn authenticate(state: &State, headers: &HeaderMap) -> Who {
    let cfg = &state.config;
    if let Some(th) = &cfg.trusted_header {
        let secret_ok = match &th.secret {
            None => true,
            Some((name, value)) => headers
                .get(name.as_str())
                .is_some_and(|v| bool::from(v.as_bytes().ct_eq(value.as_bytes()))),
        };
        if secret_ok
            && let Some(name) = headers
                .get(th.user_header.as_str())
                .and_then(|v| v.to_str().ok())
            && let Some(u) = cfg.users.iter().find(|u| u.name.eq_ignore_ascii_case(name))
        {
            return Who::User(u.clone());
        }
    }
    let Some(auth) = headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok()) else {
        return match session_user(state, headers) {
            Some(u) => Who::Session(u),
            None => Who::Anonymous,
        };
    };
    if let Some(token) = auth.strip_prefix("Bearer ") {
        return match cfg.pats.get(token.trim()) {
            Some(name) => cfg
                .users
                .iter()
                .find(|u| &u.name == name)
                .cloned()
                .map(Who::User)
                .unwrap_or(Who::BadPassword),
            None => Who::BadPassword,
        };
    }
    let Some(encoded) = auth.strip_prefix("Basic ") else {
        return Who::Anonymous;
    };
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()
        .and_then(|b| String::from_utf8(b).ok());
    let Some((name, password)) = decoded.as_deref().and_then(|d| d.split_once(':')) else {
        return Who::BadPassword;
    };
    let lname = name.to_lowercase();
    let mut failures = state.failures.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(limit) = cfg.captcha_after
        && failures.get(&lname).copied().unwrap_or(0) >= limit
    {
        return Who::Captcha;
    }
    match cfg.users.iter().find(|u| u.name.to_lowercase() == lname) {
        Some(u) if bool::from(u.password.as_bytes().ct_eq(password.as_bytes())) => {
            failures.remove(&lname);
            Who::User(u.clone())
        }
        _ => {
            *failures.entry(lname).or_insert(0) += 1;
            Who::BadPassword
        }
    }
}

fn query_param(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (percent_encoding::percent_decode_str(k).decode_utf8_lossy() == name).then(|| {
            percent_encoding::percent_decode_str(v)
                .decode_utf8_lossy()
                .into_owned()
        })
    })
}

fn jira_user(u: &SimUser, base: &str, groups: bool) -> Value {
    let mut v = json!({
        "self": format!("{base}/rest/api/2/user?username={}", u.name),
        "key": u.key,
        "name": u.name,
        "emailAddress": u.email(),
        "displayName": u.display_name,
        "active": true,
        "timeZone": "UTC",
        "locale": "en_US",
    });
    if groups {
        v["groups"] = json!({
            "size": u.groups.len(),
            "items": u.groups.iter().map(|g| json!({"name": g})).collect::<Vec<_>>(),
        });
    }
    v
}

fn confluence_user(u: &SimUser, personal: bool) -> Value {
    let mut v = json!({
        "type": "known",
        "username": u.name,
        "userKey": u.key,
        "displayName": u.display_name,
        "_links": {"self": format!("/rest/api/user?key={}", u.key)},
    });
    if personal {
        // As Confluence tells it with expand=details.personal.
        v["details"] = json!({"personal": {"email": u.email()}});
    }
    v
}

async fn handle(state: &State, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    // Read the body so uploads are consumed like a real server would.
    let body = match body.collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => Bytes::new(),
    };
    let body_len = body.len();
    // The load balancer's health check answers before any login is looked
    // at, whatever credentials come with it (as a public page does).
    let who = if parts.uri.path() == "/status" {
        Who::Anonymous
    } else {
        authenticate(state, &parts.headers)
    };
    let user = match &who {
        Who::User(u) | Who::Session(u) => Some(u.clone()),
        _ => None,
    };
    if let Ok(mut seen) = state.seen.lock() {
        if seen.len() >= MAX_SEEN {
            seen.remove(0);
        }
        seen.push(Seen {
            method: parts.method.clone(),
            target: parts
                .uri
                .path_and_query()
                .map(|p| p.as_str().to_string())
                .unwrap_or_default(),
            headers: parts.headers.clone(),
            user: user.as_ref().map(|u| u.name.clone()),
        });
    }
    let mut resp = match who {
        Who::BadPassword => {
            let mut r = jira_error(StatusCode::UNAUTHORIZED, "Login failed");
            r.headers_mut().insert(
                "x-seraph-loginreason",
                HeaderValue::from_static("AUTHENTICATED_FAILED"),
            );
            r
        }
        Who::Captcha => {
            let mut r = jira_error(StatusCode::FORBIDDEN, "CAPTCHA_CHALLENGE");
            r.headers_mut().insert(
                "x-seraph-loginreason",
                HeaderValue::from_static("AUTHENTICATION_DENIED"),
            );
            r.headers_mut().insert(
                "x-authentication-denied-reason",
                HeaderValue::from_static("CAPTCHA_CHALLENGE; login-url=/login.jsp"),
            );
            r
        }
        Who::Anonymous | Who::User(_) | Who::Session(_)
            if parts.uri.path() == login_path(state.config.product) =>
        {
            login_page(state, &parts.method, parts.uri.query(), &body)
        }
        Who::Anonymous | Who::User(_) | Who::Session(_) => {
            route(state, &parts.method, &parts.uri, user.as_ref(), body_len)
        }
    };
    if let Who::User(u) = &who {
        start_session(state, &mut resp, u);
    }
    let name = user
        .as_ref()
        .map(|u| u.name.as_str())
        .unwrap_or("anonymous");
    if let Ok(v) = HeaderValue::from_str(name) {
        resp.headers_mut().insert("x-ausername", v);
    }
    resp
}

/// A login that worked: Seraph says so, and a session starts.
fn start_session(state: &State, resp: &mut Response<Full<Bytes>>, u: &SimUser) {
    resp.headers_mut()
        .insert("x-seraph-loginreason", HeaderValue::from_static("OK"));
    let id = format!("{:032x}", rand::random::<u128>());
    if let Ok(v) = HeaderValue::from_str(&format!("JSESSIONID={id}; Path=/; HttpOnly")) {
        resp.headers_mut().append(http::header::SET_COOKIE, v);
    }
    let mut sessions = state.sessions.lock().unwrap_or_else(|p| p.into_inner());
    if sessions.len() < MAX_SEEN {
        sessions.insert(id, u.name.clone());
    }
}

/// Where the product's login page is.
pub fn login_path(product: Product) -> &'static str {
    match product {
        Product::Jira => "/login.jsp",
        Product::Confluence => "/login.action",
    }
}

/// The login page: a form (GET), and the login it posts (`os_username`,
/// `os_password`, `os_destination`, form-encoded, as on Jira), which starts
/// a session and sends the browser to `os_destination` — a path on this
/// site only, as Jira allows.
fn login_page(
    state: &State,
    method: &Method,
    query: Option<&str>,
    body: &[u8],
) -> Response<Full<Bytes>> {
    let product = state.config.product;
    if *method != Method::POST {
        let destination = query_param(query.unwrap_or(""), "os_destination").unwrap_or_default();
        return login_form(product, &destination, None, StatusCode::OK);
    }
    let form = String::from_utf8_lossy(body).replace('+', " ");
    let field = |name| query_param(&form, name).unwrap_or_default();
    let (name, password, destination) = (
        field("os_username"),
        field("os_password"),
        field("os_destination"),
    );
    let user = state.config.users.iter().find(|u| {
        u.name.eq_ignore_ascii_case(&name)
            && bool::from(u.password.as_bytes().ct_eq(password.as_bytes()))
    });
    let Some(user) = user else {
        return login_form(
            product,
            &destination,
            Some("Sorry, your username and password are incorrect - please try again."),
            StatusCode::UNAUTHORIZED,
        );
    };
    let back = if destination.starts_with('/')
        && !destination.starts_with("//")
        && !destination.contains('\\')
    {
        destination
    } else {
        "/".to_string()
    };
    let mut resp = Response::new(Full::new(Bytes::new()));
    *resp.status_mut() = StatusCode::FOUND;
    if let Ok(v) = HeaderValue::from_str(&back) {
        resp.headers_mut().insert(http::header::LOCATION, v);
    }
    start_session(state, &mut resp, user);
    resp
}

fn login_form(
    product: Product,
    destination: &str,
    error: Option<&str>,
    status: StatusCode,
) -> Response<Full<Bytes>> {
    let escape = |s: &str| {
        s.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('"', "&quot;")
            .replace('\'', "&#39;")
    };
    let title = match product {
        Product::Jira => "Simulated Jira",
        Product::Confluence => "Simulated Confluence",
    };
    let error = error
        .map(|e| format!("<p id=\"login-error\" role=\"alert\">{}</p>", escape(e)))
        .unwrap_or_default();
    let html = format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Log in - {title}</title></head>
<body><main><h1>Log in to the {title}</h1>{error}
<form method="post" action="{action}">
<input type="hidden" name="os_destination" value="{destination}">
<p><label for="login-form-username">Username</label> <input id="login-form-username" name="os_username" autocomplete="username"></p>
<p><label for="login-form-password">Password</label> <input id="login-form-password" name="os_password" type="password" autocomplete="current-password"></p>
<p><button id="login-form-submit" type="submit">Log in</button></p>
</form><p>Users: admin/admin, alice/alice, bob/bob.</p></main></body></html>
"#,
        action = login_path(product),
        destination = escape(destination),
    );
    let mut r = Response::new(Full::new(Bytes::from(html)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/html;charset=UTF-8"),
    );
    r
}

fn route(
    state: &State,
    method: &Method,
    uri: &http::Uri,
    user: Option<&SimUser>,
    body_len: usize,
) -> Response<Full<Bytes>> {
    let cfg = &state.config;
    let path = uri.path();
    let query = uri.query().unwrap_or("");
    let base = "http://jira.example.com";
    let need_login = || {
        jira_error(
            StatusCode::UNAUTHORIZED,
            "You are not authenticated. Authentication required to perform this operation.",
        )
    };
    let find = |by_key: Option<String>, by_name: Option<String>| {
        cfg.users.iter().find(|u| {
            by_key.as_deref().is_some_and(|k| k == u.key)
                || by_name
                    .as_deref()
                    .is_some_and(|n| n.eq_ignore_ascii_case(&u.name))
        })
    };
    match (cfg.product, method.as_str(), path) {
        (_, "GET", "/status") => json_reply(StatusCode::OK, json!({"state": "RUNNING"})),
        (_, "GET", "/" | "/secure/Dashboard.jspa") => {
            let who = user.map_or("nobody (anonymous)", |u| u.name.as_str());
            let mut r = Response::new(Full::new(Bytes::from(format!(
                "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Dashboard</title></head><body><main><h1>Dashboard</h1><p>Logged in as {who}.</p></main></body></html>\n"
            ))));
            r.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static("text/html;charset=UTF-8"),
            );
            r
        }
        (Product::Jira, "GET", "/rest/api/2/serverInfo") => json_reply(
            StatusCode::OK,
            json!({"baseUrl": base, "version": "9.12.0", "deploymentType": "Server", "serverTitle": "Simulated Jira"}),
        ),
        (Product::Jira, "GET", "/rest/api/2/myself") => match user {
            Some(u) => json_reply(StatusCode::OK, jira_user(u, base, true)),
            None => need_login(),
        },
        (Product::Jira, "GET", "/rest/api/2/mypermissions") => {
            let Some(u) = user else { return need_login() };
            let wanted = query_param(query, "permissions").unwrap_or_else(|| "SYSTEM_ADMIN".into());
            let mut perms = serde_json::Map::new();
            for p in wanted.split(',') {
                let have = match p {
                    "SYSTEM_ADMIN" | "ADMINISTER" => u.sysadmin,
                    _ => true,
                };
                perms.insert(
                    p.to_string(),
                    json!({"id": "44", "key": p, "name": p, "type": "GLOBAL", "havePermission": have}),
                );
            }
            json_reply(StatusCode::OK, json!({"permissions": perms}))
        }
        (Product::Jira, "GET", "/rest/api/2/user") => {
            if user.is_none() {
                return need_login();
            }
            let groups = query_param(query, "expand").is_some_and(|e| e.contains("groups"));
            match find(query_param(query, "key"), query_param(query, "username")) {
                Some(u) => json_reply(StatusCode::OK, jira_user(u, base, groups)),
                None => jira_error(StatusCode::NOT_FOUND, "The user does not exist"),
            }
        }
        (Product::Jira, "GET", "/rest/api/2/issue/DEMO-1") => match user {
            Some(_) => json_reply(
                StatusCode::OK,
                json!({"id": "10001", "key": "DEMO-1", "fields": {"summary": "Try tokengate", "status": {"name": "Open"}}}),
            ),
            None => need_login(),
        },
        (Product::Jira, "POST", "/rest/api/2/issue/DEMO-1/comment") => match user {
            Some(u) => json_reply(
                StatusCode::CREATED,
                json!({"id": "10100", "author": {"name": u.name}, "bodyLength": body_len}),
            ),
            None => need_login(),
        },
        (Product::Confluence, "GET", "/rest/api/user/current") => match user {
            Some(u) => json_reply(StatusCode::OK, confluence_user(u, false)),
            None => json_reply(
                StatusCode::OK,
                json!({"type": "anonymous", "displayName": "Anonymous"}),
            ),
        },
        (Product::Confluence, "GET", "/rest/api/user") => {
            if user.is_none() {
                return need_login();
            }
            let personal =
                query_param(query, "expand").is_some_and(|e| e.contains("details.personal"));
            match find(query_param(query, "key"), query_param(query, "username")) {
                Some(u) => json_reply(StatusCode::OK, confluence_user(u, personal)),
                None => jira_error(StatusCode::NOT_FOUND, "No user found"),
            }
        }
        (Product::Confluence, "GET", "/rest/api/user/memberof") => {
            if user.is_none() {
                return need_login();
            }
            match find(query_param(query, "key"), query_param(query, "username")) {
                Some(u) => json_reply(
                    StatusCode::OK,
                    json!({
                        "results": u.groups.iter().map(|g| json!({"type": "group", "name": g})).collect::<Vec<_>>(),
                        "start": 0, "limit": 200, "size": u.groups.len(),
                    }),
                ),
                None => jira_error(StatusCode::NOT_FOUND, "No user found"),
            }
        }
        (Product::Confluence, "GET", "/rest/api/space") => match user {
            Some(_) => json_reply(
                StatusCode::OK,
                json!({"results": [{"key": "DEMO", "name": "Demo space"}], "size": 1}),
            ),
            None => need_login(),
        },
        _ => jira_error(StatusCode::NOT_FOUND, "Not found"),
    }
}
