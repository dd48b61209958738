//! Test harness: a recording upstream that echoes what it received, the
//! simulated Jira/Confluence of the demo, and the gateway started in-process
//! on port 0 with a temporary store; callers that say who calls and what
//! (`caller`), raw bytes on a socket (`wire`), and the real binary as a child
//! process (`process`).
#![allow(dead_code)]

pub mod caller;
pub mod cut;
pub mod echo;
pub mod hook;
pub mod jira;
pub mod pg;
pub mod process;
pub mod secrets;
pub mod smtp;
pub mod wire;

// Each test binary uses its own part of the harness.
#[allow(unused_imports)]
pub use caller::*;
#[allow(unused_imports)]
pub use echo::*;
#[allow(unused_imports)]
pub use jira::*;
#[allow(unused_imports)]
pub use wire::*;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use base64::Engine;
use http::HeaderMap;
use tokengate::clock::ManualClock;
use tokengate::config::{Config, normalize_header_name};
use tokengate::{Options, Running};
use tokio::net::TcpListener;

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

/// A reqwest client that never uses a proxy from the environment.
pub fn client() -> reqwest::Client {
    // reqwest is built without a crypto provider; the tests use ring, as tokengate does.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder().no_proxy().build().unwrap()
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

/// The values of every header whose name is `name` in some spelling
/// (`X_Remote_User`, `x.remote.user`, ...).
pub fn spelled(headers: &HeaderMap, name: &str) -> Vec<String> {
    let wanted = normalize_header_name(name);
    headers
        .iter()
        .filter(|(k, _)| normalize_header_name(k.as_str()) == wanted)
        .map(|(_, v)| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .collect()
}

/// An `Authorization: Basic` value for `user:secret`.
pub fn basic(user: &str, secret: &str) -> String {
    let pair = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{secret}"));
    format!("Basic {pair}")
}

/// A unique path, so each request can be found at the upstream.
pub fn probe() -> String {
    static PROBE: AtomicU64 = AtomicU64::new(0);
    format!(
        "/rest/api/2/issue/DEMO-1?probe={}",
        PROBE.fetch_add(1, Ordering::Relaxed)
    )
}

/// A gateway in front of `upstream_url` on [`test_config`], tweaked; keep the
/// directory as long as the gateway runs.
pub async fn gateway_for(
    upstream_url: &str,
    tweak: impl FnOnce(&mut Config),
) -> (Running, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(upstream_url, dir.path());
    tweak(&mut config);
    (start(config).await, dir)
}

/// `fields` as an `application/x-www-form-urlencoded` body, as a browser posts a form.
pub fn form_body(fields: &[(&str, &str)]) -> String {
    fields
        .iter()
        .map(|(k, v)| {
            let enc = |s: &str| {
                percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC)
                    .to_string()
            };
            format!("{}={}", enc(k), enc(v))
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// A request builder that posts a form.
pub trait PostForm {
    fn form_fields(self, fields: &[(&str, &str)]) -> Self;
}

impl PostForm for reqwest::RequestBuilder {
    fn form_fields(self, fields: &[(&str, &str)]) -> Self {
        self.header("content-type", "application/x-www-form-urlencoded")
            .body(form_body(fields))
    }
}
