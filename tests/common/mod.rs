//! Test harness: a recording upstream that echoes what it received, the
//! simulated Jira/Confluence of the demo, and the gateway started in-process
//! on port 0 with a temporary store.
#![allow(dead_code)]

pub mod secrets;

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde_json::{Value, json};
use tokengate::clock::ManualClock;
use tokengate::config::Config;
use tokengate::demo::sim::{SimConfig, SimUpstream};
use tokengate::{Options, Running};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

pub type BoxBody = http_body_util::combinators::BoxBody<Bytes, std::io::Error>;

/// A request as the echo upstream saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub target: String,
    pub version: http::Version,
    pub headers: HeaderMap,
    pub body_len: u64,
}

/// An upstream that records every request and answers by path:
/// - `/download/<n>`: streams `n` bytes;
/// - `/slow`: answers after 30 s;
/// - `/upgrade` with an `Upgrade` header: `101 Switching Protocols` to the
///   protocol asked for, then echoes bytes;
/// - anything else: JSON describing the request.
pub struct EchoUpstream {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl EchoUpstream {
    pub async fn start() -> EchoUpstream {
        secrets::scan_logs();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let s = seen.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let s = s.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| {
                        let s = s.clone();
                        async move { Ok::<_, Infallible>(echo(req, s).await) }
                    });
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection_with_upgrades(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        EchoUpstream { addr, seen }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    pub fn last(&self) -> Seen {
        self.seen()
            .last()
            .cloned()
            .expect("the upstream saw a request")
    }
}

fn full(b: impl Into<Bytes>) -> BoxBody {
    Full::new(b.into()).map_err(|never| match never {}).boxed()
}

async fn echo(req: Request<Incoming>, seen: Arc<Mutex<Vec<Seen>>>) -> Response<BoxBody> {
    let method = req.method().to_string();
    let target = req
        .uri()
        .path_and_query()
        .map(|p| p.to_string())
        .unwrap_or_default();
    let version = req.version();
    let headers = req.headers().clone();
    let path = req.uri().path().to_string();
    if path == "/upgrade" && req.headers().contains_key("upgrade") {
        let upgrade = headers["upgrade"].clone();
        seen.lock().unwrap().push(Seen {
            method,
            target,
            version,
            headers,
            body_len: 0,
        });
        let mut req = req;
        let on_upgrade = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            if let Ok(upgraded) = on_upgrade.await {
                let mut io = TokioIo::new(upgraded);
                let mut buf = [0u8; 1024];
                loop {
                    match io.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if io.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                        }
                    }
                }
            }
        });
        return Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header("upgrade", upgrade)
            .header("connection", "upgrade")
            .body(full(Bytes::new()))
            .unwrap();
    }
    // Consume the body chunk by chunk, counting, never holding it whole.
    let mut body = req.into_body();
    let mut body_len = 0u64;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(f) => body_len += f.data_ref().map_or(0, |d| d.len() as u64),
            Err(_) => break,
        }
    }
    seen.lock().unwrap().push(Seen {
        method: method.clone(),
        target: target.clone(),
        version,
        headers: headers.clone(),
        body_len,
    });
    if let Some(n) = path.strip_prefix("/download/") {
        let total: u64 = n.parse().unwrap_or(0);
        return Response::builder()
            .header("content-length", total.to_string())
            .body(stream_of(total))
            .unwrap();
    }
    if path == "/slow" {
        tokio::time::sleep(Duration::from_secs(30)).await;
    }
    let hdrs: Vec<(String, String)> = headers
        .iter()
        .map(|(k, v)| {
            (
                k.to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let body = json!({"method": method, "target": target, "headers": hdrs, "bodyLen": body_len});
    Response::builder()
        .header("content-type", "application/json")
        .header("connection", "keep-alive, x-upstream-private")
        .header("x-upstream-private", "hop")
        .header("keep-alive", "timeout=5")
        .body(full(body.to_string()))
        .unwrap()
}

/// `total` bytes in 64 KiB chunks, generated as they are sent.
pub fn stream_of(total: u64) -> BoxBody {
    const CHUNK: u64 = 64 * 1024;
    let chunk = Bytes::from(vec![b'x'; CHUNK as usize]);
    let stream = futures_util::stream::unfold(0u64, move |sent| {
        let chunk = chunk.clone();
        async move {
            if sent >= total {
                return None;
            }
            let n = CHUNK.min(total - sent);
            Some((
                Ok::<_, std::io::Error>(Frame::data(chunk.slice(..n as usize))),
                sent + n,
            ))
        }
    });
    StreamBody::new(stream).boxed()
}

/// A configuration for tests: port 0, no admin listener, a store in `dir`.
pub fn test_config(upstream_url: &str, dir: &std::path::Path) -> Config {
    let mut c = Config::default();
    c.server.listen = "127.0.0.1:0".parse().unwrap();
    c.server.admin_listen = String::new();
    c.upstream.url = upstream_url.to_string();
    c.upstream.connect_timeout_ms = 2_000;
    c.upstream.response_timeout_ms = 10_000;
    c.tokens.store_path = dir.join("tokens.sled");
    c.server.shutdown_grace_ms = 2_000;
    c
}

/// Options with a manual clock and a fixed environment.
pub fn options(clock: Arc<ManualClock>, env: &[(&str, &str)]) -> Options {
    let env: HashMap<String, String> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Options {
        clock,
        env: Arc::new(move |k| env.get(k).cloned()),
    }
}

pub async fn start(config: Config) -> Running {
    secrets::scan_logs();
    tokengate::start(config, Options::default())
        .await
        .expect("gateway starts")
}

/// 2026-11-30T00:00:00Z: the manual clock's start.
pub const T0: u64 = 1_796_000_000_000;

/// A gateway in front of the simulated Jira (or Confluence) in header mode,
/// with a shared secret, a lookup account, a manual clock.
pub struct JiraSetup {
    pub gw: Running,
    /// The configuration the gateway started with.
    pub config: Config,
    pub sim: SimUpstream,
    pub clock: Arc<ManualClock>,
    pub dir: tempfile::TempDir,
    pub base: String,
    pub http: reqwest::Client,
}

pub const SECRET: &str = "s3cret-between-gateway-and-jira";

impl JiraSetup {
    pub async fn jira() -> JiraSetup {
        JiraSetup::with(SimConfig::jira(), |_| {}).await
    }

    pub async fn confluence() -> JiraSetup {
        JiraSetup::with(SimConfig::confluence(), |c| {
            c.upstream.product = tokengate::config::Product::Confluence;
        })
        .await
    }

    pub async fn with(mut sim: SimConfig, tweak: impl FnOnce(&mut Config)) -> JiraSetup {
        secrets::scan_logs();
        sim.trusted_header = Some(tokengate::demo::sim::TrustedHeader {
            user_header: "X-Remote-User".into(),
            secret: Some(("X-Gateway-Secret".into(), SECRET.into())),
        });
        let sim = SimUpstream::start(sim).await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mut config = test_config(&sim.url(), dir.path());
        config.upstream.credentials.secret_header_name = "X-Gateway-Secret".into();
        config.upstream.credentials.secret_env = "GW_SECRET".into();
        config.upstream.lookup_user = "admin".into();
        config.upstream.lookup_password_env = "LOOKUP_PW".into();
        config.auth.admin_groups = vec![
            "jira-administrators".into(),
            "confluence-administrators".into(),
        ];
        tweak(&mut config);
        let clock = ManualClock::new(T0);
        let gw = tokengate::start(
            config.clone(),
            options(
                clock.clone(),
                &[
                    ("GW_SECRET", SECRET),
                    ("LOOKUP_PW", "admin"),
                    ("SVC_PW", "svc-pw"),
                    ("SVC_PAT", "svc-pat"),
                ],
            ),
        )
        .await
        .expect("gateway starts");
        let base = format!("http://{}", gw.addr());
        JiraSetup {
            gw,
            config,
            sim,
            clock,
            dir,
            base,
            http: client(),
        }
    }

    pub fn api(&self, path: &str) -> String {
        format!("{}/rest/de.resolution.apitokenauth/latest{path}", self.base)
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Creates a token as `user:password`; returns the whole create response.
    pub async fn create_token(&self, user: &str, password: &str, body: Value) -> Value {
        let resp = self
            .http
            .post(self.api("/user/token"))
            .basic_auth(user, Some(password))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "create token: {:?}", resp.text().await);
        resp.json().await.unwrap()
    }

    /// A fresh token for `user` (whose password is the username, as in the demo).
    pub async fn token_for(&self, user: &str) -> String {
        let v = self
            .create_token(
                user,
                user,
                json!({"tokenDescription": format!("token of {user}")}),
            )
            .await;
        v["plainTextToken"].as_str().unwrap().to_string()
    }
}

/// A reqwest client that never uses a proxy from the environment.
pub fn client() -> reqwest::Client {
    // reqwest is built without a crypto provider; the tests use ring, as tokengate does.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder().no_proxy().build().unwrap()
}

/// Sends raw bytes, returns everything the server sent until it closed.
pub async fn raw(addr: SocketAddr, request: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(request).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// An address nothing listens on.
pub async fn closed_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let a = l.local_addr().unwrap();
    drop(l);
    a
}

/// The header values of `name` in a recorded request.
pub fn values(headers: &HeaderMap, name: &str) -> Vec<String> {
    headers
        .get_all(name)
        .iter()
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .collect()
}
