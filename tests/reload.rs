//! Reloading the configuration: live settings change without dropping
//! connections; a bad configuration is rejected and the running one kept.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;

/// `GET /rest/api/2/myself` over HTTP/1.1, keep-alive, with `auth` (a whole header line).
fn myself_with(auth: &str) -> String {
    format!("GET /rest/api/2/myself HTTP/1.1\r\nHost: h\r\n{auth}\r\n")
}

#[tokio::test]
async fn a_good_reload_takes_effect_on_open_connections() {
    let s = JiraSetup::jira().await;
    let bob = myself_with("Authorization: Basic Ym9iOmJvYg==\r\n");
    let mut conn = tokio::net::TcpStream::connect(s.gw.addr()).await.unwrap();
    let before = roundtrip(&mut conn, bob.as_bytes()).await;
    assert!(before.starts_with("HTTP/1.1 200"), "{before}");

    let mut changed = s.config.clone();
    changed.tokens.allow_password_basic_auth = false;
    changed.auth.max_failed_attempts = 1;
    changed.server.idle_timeout_ms = 1_234;
    let restart = s.gw.reload(&changed).unwrap();
    assert_eq!(restart, ["[server]"], "server keys need a restart");

    // The same keep-alive connection, now under the new rules.
    let after = roundtrip(&mut conn, bob.as_bytes()).await;
    assert!(after.starts_with("HTTP/1.1 401"), "{after}");
    let token = s.token_for("bob").await;
    let with_token = myself_with(&format!("Authorization: Bearer {token}\r\n"));
    let ok = roundtrip(&mut conn, with_token.as_bytes()).await;
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
    // max_failed_attempts = 1: one bad token locks alice out now.
    assert_eq!(
        s.as_user("alice", UNKNOWN_TOKEN).myself().await.status(),
        401
    );
    assert_eq!(s.as_user("alice", "alice").get("/user/token").await.0, 403);
}

#[tokio::test]
async fn upstream_credentials_change_live() {
    let s = JiraSetup::jira().await;
    let token = s.token_for("alice").await;
    let mut changed = s.config.clone();
    changed.upstream.credentials.header_name = "X-Forwarded-User".into();
    s.gw.reload(&changed).unwrap();
    let path = "/rest/api/2/serverInfo?after-reload";
    assert_eq!(s.with_token(&token).fetch(path).await.status(), 200);
    let seen = s.seen_at(path).unwrap();
    assert_eq!(values(&seen.headers, "x-forwarded-user"), ["alice"]);
    assert!(!seen.headers.contains_key("x-remote-user"));
}

#[tokio::test]
async fn a_bad_reload_is_rejected_and_the_running_configuration_stays() {
    let s = JiraSetup::jira().await;
    let mut broken = s.config.clone();
    broken.tokens.allow_password_basic_auth = false;
    broken.upstream.credentials.secret_env = "TOKENGATE_TEST_VARIABLE_NOBODY_SET".into();
    let err = s.gw.reload(&broken).unwrap_err().to_string();
    assert!(err.contains("TOKENGATE_TEST_VARIABLE_NOBODY_SET"), "{err}");
    assert_eq!(
        s.as_user("bob", "bob").myself().await.status(),
        200,
        "passwords are still allowed"
    );
}
