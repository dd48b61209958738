//! Reloading the configuration: live settings change without dropping
//! connections; a bad configuration is rejected and the running one kept.

mod common;

use std::time::Duration;

use common::*;
use tokengate::demo::sim::SimConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn exchange(s: &mut tokio::net::TcpStream, request: &str) -> String {
    s.write_all(request.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 65536];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[tokio::test]
async fn a_good_reload_takes_effect_on_open_connections() {
    let s = JiraSetup::with(SimConfig::jira(), |_| {}).await;
    let bob = "Authorization: Basic Ym9iOmJvYg==\r\n";
    let mut conn = tokio::net::TcpStream::connect(s.gw.addr()).await.unwrap();
    let before = exchange(
        &mut conn,
        &format!("GET /rest/api/2/myself HTTP/1.1\r\nHost: h\r\n{bob}\r\n"),
    )
    .await;
    assert!(before.starts_with("HTTP/1.1 200"), "{before}");

    let mut changed = s.config.clone();
    changed.tokens.allow_password_basic_auth = false;
    changed.auth.max_failed_attempts = 1;
    changed.server.idle_timeout_ms = 1_234;
    let restart = s.gw.reload(&changed).unwrap();
    assert_eq!(restart, ["[server]"], "server keys need a restart");

    // The same keep-alive connection, now under the new rules.
    let after = exchange(
        &mut conn,
        &format!("GET /rest/api/2/myself HTTP/1.1\r\nHost: h\r\n{bob}\r\n"),
    )
    .await;
    assert!(after.starts_with("HTTP/1.1 401"), "{after}");
    let token = s.token_for("bob").await;
    let ok = exchange(
        &mut conn,
        &format!(
            "GET /rest/api/2/myself HTTP/1.1\r\nHost: h\r\nAuthorization: Bearer {token}\r\n\r\n"
        ),
    )
    .await;
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
    // max_failed_attempts = 1: one bad token locks alice out now.
    let resp = s
        .http
        .get(s.url("/rest/api/2/myself"))
        .basic_auth("alice", Some("tg_000000000000000000000000000000000000"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let resp = s
        .http
        .get(s.api("/user/token"))
        .basic_auth("alice", Some("alice"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
}

#[tokio::test]
async fn upstream_credentials_change_live() {
    let s = JiraSetup::jira().await;
    let token = s.token_for("alice").await;
    let mut changed = s.config.clone();
    changed.upstream.credentials.header_name = "X-Forwarded-User".into();
    s.gw.reload(&changed).unwrap();
    let resp = s
        .http
        .get(s.url("/rest/api/2/serverInfo?after-reload"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let seen = s
        .sim
        .seen()
        .into_iter()
        .find(|r| r.target.ends_with("after-reload"))
        .unwrap();
    assert_eq!(values(&seen.headers, "x-forwarded-user"), ["alice"]);
    assert!(!seen.headers.contains_key("x-remote-user"));
}

#[tokio::test]
async fn a_bad_reload_is_rejected_and_the_running_configuration_stays() {
    let s = JiraSetup::jira().await;
    let mut broken = s.config.clone();
    broken.tokens.allow_password_basic_auth = false;
    broken.upstream.credentials.secret_env = "TOKENGATE_TEST_VARIABLE_NOBODY_SET".into();
    let err = s.gw.reload(&broken).unwrap_err();
    assert!(err.contains("TOKENGATE_TEST_VARIABLE_NOBODY_SET"), "{err}");
    let resp = s
        .http
        .get(s.url("/rest/api/2/myself"))
        .basic_auth("bob", Some("bob"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "passwords are still allowed");
}
