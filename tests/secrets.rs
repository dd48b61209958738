//! No token, password or `Authorization` value in any log line. Every test
//! binary that starts a gateway logs at `trace` into a scanner
//! (`tests/common/secrets.rs`) that aborts the binary on a leak, so the whole
//! suite is the test; these tests prove the scanner works and sees the
//! gateway's own events, and that error bodies never echo a secret.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::atomic::Ordering;

use common::secrets::{SCANNED, find_secret, scan_logs};
use common::*;
use reqwest::Method;
use serde_json::json;

#[test]
fn the_scanner_recognises_tokens_passwords_and_authorization_values() {
    let token = tokengate::token::TokenFormat::new("tg").generate().unwrap();
    let leaks = [
        format!("checking {}", token.expose()),
        format!("header=\"Basic YWxpY2U6YWxpY2U=\" peer={}", "127.0.0.1"),
        "authorization: Bearer eyJhbGciOi.payload".to_string(),
        format!("secret {SECRET}"),
        "password svc-pw".to_string(),
    ];
    for line in &leaks {
        assert!(find_secret(line).is_some(), "missed a leak in a line");
    }
    let clean = [
        "auth_failed reason=unknown_token user=alice token_id=7 client_ip=127.0.0.1",
        "tokengate_requests_total{route=\"proxy\",status=\"401\"} 3",
        "WWW-Authenticate: Basic realm=\"tokengate\"",
        "request_id=0123456789abcdef0123456789abcdef",
    ];
    for line in clean {
        assert_eq!(find_secret(line), None, "false alarm on {line:?}");
    }
}

#[tokio::test]
async fn the_gateways_trace_events_pass_through_the_scanner() {
    let s = JiraSetup::jira().await;
    let before = SCANNED.load(Ordering::Relaxed);
    let token = s.token_for("alice").await;
    assert_eq!(s.with_token(&token).myself().await.status(), 200);
    let bad = s.as_user("alice", &format!("{token}x")).myself().await;
    assert_eq!(bad.status(), 401);
    assert!(
        SCANNED.load(Ordering::Relaxed) > before + 10,
        "trace-level events of a token round trip reach the scanner"
    );
}

const CANARY: &str = "TOKENGATE_SECRET_SCANNER_CANARY";

#[test]
fn a_leaked_secret_aborts_the_test_binary() {
    if std::env::var_os(CANARY).is_some() {
        scan_logs();
        tracing::info!("Authorization: Basic YWxpY2U6YWxpY2U=");
        return;
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "a_leaked_secret_aborts_the_test_binary",
            "--nocapture",
        ])
        .env(CANARY, "1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the leak went unnoticed");
    assert!(
        stderr.contains("a log line holds an Authorization value"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("YWxpY2U6YWxpY2U="),
        "the report repeats the secret"
    );
}

#[test]
fn a_panic_message_with_a_secret_aborts_the_test_binary() {
    if std::env::var_os(CANARY).is_some() {
        scan_logs();
        panic!("comparing against Bearer abcdefghijklmnop");
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "a_panic_message_with_a_secret_aborts_the_test_binary",
            "--nocapture",
        ])
        .env(CANARY, "1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("a panic message holds an Authorization value"),
        "{stderr}"
    );
    assert!(!stderr.contains("abcdefghijklmnop"), "{stderr}");
}

/// Secrets put where they do not belong — in the path, the query, JSON
/// fields and values, malformed headers — never come back in an answer.
#[tokio::test]
async fn error_answers_never_echo_a_token_or_password() {
    let s = JiraSetup::jira().await;
    let token = s.token_for("alice").await;
    let wrong = format!("{token}x");
    let myself = "/rest/api/2/myself";
    let (by_token, admin) = (s.with_token(&token), s.as_user("admin", "admin"));
    let checks: Vec<(&str, reqwest::RequestBuilder)> = vec![
        (
            "unknown token",
            s.with_token(&token[..token.len() - 1])
                .request(Method::GET, myself),
        ),
        (
            "token too long",
            s.as_user("alice", &wrong).request(Method::GET, myself),
        ),
        (
            "wrong password",
            s.as_user("alice", SECRET).api(Method::GET, "/user/token"),
        ),
        (
            "malformed Authorization",
            s.with_authorization(&format!("Bearer  {token} {token}"))
                .request(Method::GET, myself),
        ),
        (
            "token as an id",
            by_token
                .api(Method::PATCH, &format!("/user/token/{token}"))
                .json(&json!({"tokenDescription": "x"})),
        ),
        (
            "token as an id, delete",
            by_token.api(Method::DELETE, &format!("/user/token/{token}")),
        ),
        (
            "token as a user key",
            admin
                .api(Method::POST, "/user/token")
                .json(&json!({"tokenDescription": "x", "tokenForUserKey": token})),
        ),
        (
            "token as a filter",
            admin.api(
                Method::GET,
                &format!("/user/tokensByFilter?userFilter={token}&limit=x"),
            ),
        ),
        (
            "token in a bad body",
            by_token
                .api(Method::POST, "/user/token")
                .header("content-type", "application/json")
                .body(format!("{{\"tokenDescription\": {token}}}")),
        ),
        (
            "token as a description of the wrong type",
            by_token
                .api(Method::POST, "/user/token")
                .json(&json!({"tokenDescription": [token], "tokenScope": token})),
        ),
        (
            "authTest with a wrong token",
            s.with_token(&wrong).api(Method::GET, "/user/authTest"),
        ),
    ];
    for (what, request) in checks {
        let resp = request.answer().await;
        let status = resp.status();
        // authTest answers 200 with its verdict; everything else is refused.
        assert!(
            status.is_client_error() || what.starts_with("authTest"),
            "{what}: {status}"
        );
        let headers = format!("{:?}", resp.headers());
        let body = resp.text().await.unwrap();
        for text in [&headers, &body] {
            assert!(
                !text.contains(&token[3..]),
                "{what}: the token came back ({status})"
            );
            assert!(
                !text.contains(SECRET),
                "{what}: the password came back ({status})"
            );
            assert_eq!(find_secret(text), None, "{what} ({status})");
        }
    }
}
