//! No token, password or `Authorization` value in any log line. Every test
//! binary that starts a gateway logs at `trace` into a scanner
//! (`tests/common/secrets.rs`) that aborts the binary on a leak, so the whole
//! suite is the test; these tests prove the scanner works and sees the
//! gateway's own events.

mod common;

use std::sync::atomic::Ordering;

use common::secrets::{SCANNED, find_secret, scan_logs};
use common::*;

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
    let resp = s
        .http
        .get(s.url("/rest/api/2/myself"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let bad = s
        .http
        .get(s.url("/rest/api/2/myself"))
        .basic_auth("alice", Some(format!("{token}x")))
        .send()
        .await
        .unwrap();
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
