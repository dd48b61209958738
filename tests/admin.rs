//! The admin listener (health, readiness, metrics) and request ids.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use reqwest::Method;

#[tokio::test]
async fn healthz_and_readyz_answer_on_the_admin_listener() {
    let s = JiraSetup::with_admin().await;
    let admin = |method, path| s.http.request(method, s.admin_url(path)).answer();
    assert_eq!(admin(Method::GET, "/healthz").await.status(), 200);
    let (status, v) = status_and_json(admin(Method::GET, "/readyz").await).await;
    assert_eq!(status, 200);
    assert_eq!(v["ready"], true);
    assert_eq!(v["store"], "ok");
    assert_eq!(v["upstream"], "ok");
    assert_eq!(admin(Method::POST, "/healthz").await.status(), 405);
    assert_eq!(admin(Method::GET, "/other").await.status(), 404);
    // The admin endpoints are not on the public listener: there they are forwarded.
    s.sim.clear_seen();
    let resp = s.anonymous().fetch("/metrics").await;
    assert_eq!(resp.status(), 404, "the upstream's answer");
    assert_eq!(s.sim.seen().len(), 1);
}

#[tokio::test]
async fn readyz_is_503_while_the_upstream_is_unreachable() {
    let (gw, _dir) = gateway_for(&format!("http://{}", closed_port().await), |c| {
        c.server.admin_listen = "127.0.0.1:0".into()
    })
    .await;
    let admin = Remote::at(format!("http://{}", gw.admin_addr().unwrap()));
    let (status, v) = status_and_json(admin.anonymous().fetch("/readyz").await).await;
    assert_eq!(status, 503);
    assert_eq!(v["ready"], false);
    assert_eq!(v["store"], "ok");
    assert!(v["upstream"].as_str().unwrap().contains("connect"), "{v}");
    // /healthz still says the process is up.
    assert_eq!(admin.anonymous().fetch("/healthz").await.status(), 200);
    gw.stop().await;
}

/// Label values that may appear, per label name; anything else is unbounded.
fn allowed(label: &str, value: &str) -> bool {
    match label {
        "route" => ["proxy", "api"].contains(&value),
        "status" => value.len() == 3 && value.bytes().all(|b| b.is_ascii_digit()),
        "result" => [
            "ok",
            "invalid",
            "expired",
            "wrong_user",
            "locked",
            "throttled",
            "read_only",
            "password_passthrough",
            "password_refused",
            "anonymous",
            "other_scheme",
            "other_scheme_refused",
            "store_unavailable",
            "ip_not_allowed",
        ]
        .contains(&value),
        "kind" => ["connect", "broken", "timeout", "credentials_rejected"].contains(&value),
        "cause" => ["notify", "reconnect", "stale"].contains(&value),
        // A worker's number: `server.workers` is at most 256.
        "worker" => value.parse::<u16>().is_ok_and(|n| n < 256),
        "op" => [
            "lookup",
            "get",
            "list",
            "filter",
            "count",
            "insert",
            "update",
            "delete",
            "delete_user",
            "record_access",
            "settle",
            "rotate",
            "notice",
        ]
        .contains(&value),
        "within" => ["7d", "30d"].contains(&value),
        "channel" => ["webhook", "mail"].contains(&value),
        "event" => ["created", "expiry"].contains(&value),
        "outcome" => ["sent", "failed", "skipped", "dropped"].contains(&value),
        "le" => true,
        _ => false,
    }
}

/// The metrics after one of each kind of traffic: a token, an unknown
/// token, an anonymous call, a password, four bad tokens given with bob's
/// name (three lock him out, the fourth meets the lock) and another scheme.
/// Returns the metrics text and the token used.
async fn metrics_after_traffic() -> (String, String) {
    let s = JiraSetup::with_admin().await;
    let token = s.token_for("alice").await;
    s.with_token(&token).myself().await;
    s.with_token(UNKNOWN_TOKEN).myself().await;
    s.anonymous().fetch("/rest/api/2/serverInfo").await;
    s.as_user("bob", "bob").myself().await;
    for _ in 0..4 {
        s.as_user("bob", UNKNOWN_TOKEN).myself().await;
    }
    s.with_authorization("Negotiate abc").fetch("/x").await;
    let resp = s.http.get(s.admin_url("/metrics")).answer().await;
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .contains("openmetrics")
    );
    (resp.text().await.unwrap(), token)
}

#[tokio::test]
async fn metrics_have_the_spec_names() {
    let (text, _) = metrics_after_traffic().await;
    for name in [
        "tokengate_requests_total{",
        "tokengate_auth_decisions_total{",
        "tokengate_upstream_duration_seconds_bucket{",
        "tokengate_tokens ",
        "tokengate_lockouts_total ",
        "tokengate_in_flight_requests ",
        "tokengate_ready ",
        "tokengate_last_access_pending ",
        "tokengate_last_access_flush_age_seconds ",
    ] {
        assert!(text.contains(name), "{name} missing:\n{text}");
    }
}

#[tokio::test]
async fn metrics_count_each_kind_of_authentication_tokens_lockouts_and_api_calls() {
    let (text, _) = metrics_after_traffic().await;
    for result in [
        "ok",
        "invalid",
        "anonymous",
        "password_passthrough",
        "locked",
        "other_scheme",
    ] {
        assert!(
            text.contains(&format!(
                "tokengate_auth_decisions_total{{result=\"{result}\"}}"
            )),
            "{result}:\n{text}"
        );
    }
    assert!(text.contains("tokengate_tokens 1\n"), "{text}");
    assert!(text.contains("tokengate_lockouts_total 1\n"), "{text}");
    assert!(
        text.contains("tokengate_requests_total{route=\"api\",status=\"200\"}"),
        "{text}"
    );
}

#[tokio::test]
async fn metric_labels_come_from_fixed_sets_and_name_no_one() {
    let (text, token) = metrics_after_traffic().await;
    // Every label value comes from a fixed set: no names, keys, paths or ids.
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some(labels) = line
            .split_once('{')
            .and_then(|(_, r)| r.split_once('}'))
            .map(|(l, _)| l)
        else {
            continue;
        };
        for pair in labels.split(',') {
            let (k, v) = pair.split_once('=').unwrap();
            assert!(
                allowed(k, v.trim_matches('"')),
                "unbounded label {k}={v} in {line}"
            );
        }
    }
    for secret_or_name in ["alice", "bob", "JIRAUSER", "/rest", &token] {
        assert!(
            !text.contains(secret_or_name),
            "{secret_or_name} in the metrics"
        );
    }
}

#[tokio::test]
async fn request_ids_are_kept_or_made_passed_upstream_and_returned() {
    let s = JiraSetup::jira().await;
    let resp = s
        .anonymous()
        .header("x-request-id", "ci-run-42.step-7")
        .fetch("/rest/api/2/serverInfo?rid=1")
        .await;
    assert_eq!(resp.headers()["x-request-id"], "ci-run-42.step-7");
    let seen = s.seen_at("/rest/api/2/serverInfo?rid=1").unwrap();
    assert_eq!(values(&seen.headers, "x-request-id"), ["ci-run-42.step-7"]);

    let resp = s.anonymous().fetch("/rest/api/2/serverInfo?rid=2").await;
    let made = resp.headers()["x-request-id"].to_str().unwrap().to_string();
    assert_eq!(made.len(), 32);
    assert!(made.bytes().all(|b| b.is_ascii_hexdigit()));
    let seen = s.seen_at("/rest/api/2/serverInfo?rid=2").unwrap();
    assert_eq!(values(&seen.headers, "x-request-id"), [made]);

    // An unusable id (too long, odd characters) is replaced.
    let resp = s
        .anonymous()
        .header("x-request-id", "x".repeat(300))
        .fetch("/rest/api/2/serverInfo?rid=3")
        .await;
    assert_eq!(resp.headers()["x-request-id"].len(), 32);
    // Answers of tokengate's own carry one too.
    let resp = s.anonymous().api(Method::GET, "/user/token").answer().await;
    assert_eq!(resp.status(), 401);
    assert!(resp.headers().contains_key("x-request-id"));
}

/// The sum of `tokengate_open_connections` over the workers, and how many
/// workers it names.
async fn open_connections(s: &JiraSetup) -> (u64, usize) {
    let text = s.metrics_text().await;
    let values: Vec<u64> = text
        .lines()
        .filter(|l| l.starts_with("tokengate_open_connections{worker="))
        .map(|l| l.rsplit(' ').next().unwrap().parse().unwrap())
        .collect();
    (values.iter().sum(), values.len())
}

#[tokio::test]
async fn open_connections_are_counted_by_worker_until_they_close() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let s = JiraSetup::jira_with(|c| {
        c.server.admin_listen = "127.0.0.1:0".into();
        c.server.workers = 2;
    })
    .await;
    let (before, _) = open_connections(&s).await;
    let mut held = Vec::new();
    for _ in 0..6 {
        let mut c = tokio::net::TcpStream::connect(s.gw.addr()).await.unwrap();
        c.write_all(b"GET /rest/api/2/serverInfo HTTP/1.1\r\nHost: jira\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 12];
        c.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"HTTP/1.1 200");
        held.push(c);
    }
    let (open, workers) = open_connections(&s).await;
    assert_eq!(workers, 2, "one series per worker");
    assert_eq!(open, before + 6);
    drop(held);
    let mut now = open;
    for _ in 0..100 {
        (now, _) = open_connections(&s).await;
        if now == before {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(now, before, "closed connections are no longer counted");
}
