//! The admin listener (health, readiness, metrics) and request ids.

mod common;

use common::*;
use serde_json::Value;
use tokengate::demo::sim::SimConfig;

async fn with_admin() -> JiraSetup {
    JiraSetup::with(SimConfig::jira(), |c| {
        c.server.admin_listen = "127.0.0.1:0".into()
    })
    .await
}

fn admin_url(s: &JiraSetup, path: &str) -> String {
    format!(
        "http://{}{path}",
        s.gw.admin_addr().expect("admin listener")
    )
}

#[tokio::test]
async fn healthz_and_readyz_answer_on_the_admin_listener() {
    let s = with_admin().await;
    let resp = s.http.get(admin_url(&s, "/healthz")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let resp = s.http.get(admin_url(&s, "/readyz")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["ready"], true);
    assert_eq!(v["store"], "ok");
    assert_eq!(v["upstream"], "ok");
    assert_eq!(
        s.http
            .post(admin_url(&s, "/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        405
    );
    assert_eq!(
        s.http
            .get(admin_url(&s, "/other"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    // The admin endpoints are not on the public listener: there they are forwarded.
    s.sim.clear_seen();
    let resp = s.http.get(s.url("/metrics")).send().await.unwrap();
    assert_eq!(resp.status(), 404, "the upstream's answer");
    assert_eq!(s.sim.seen().len(), 1);
}

#[tokio::test]
async fn readyz_is_503_while_the_upstream_is_unreachable() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(&format!("http://{}", closed_port().await), dir.path());
    config.server.admin_listen = "127.0.0.1:0".into();
    let gw = start(config).await;
    let resp = client()
        .get(format!("http://{}/readyz", gw.admin_addr().unwrap()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 503);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["ready"], false);
    assert_eq!(v["store"], "ok");
    assert!(v["upstream"].as_str().unwrap().contains("connect"), "{v}");
    // /healthz still says the process is up.
    let resp = client()
        .get(format!("http://{}/healthz", gw.admin_addr().unwrap()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
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
        ]
        .contains(&value),
        "kind" => ["connect", "broken", "timeout", "credentials_rejected"].contains(&value),
        "le" => true,
        _ => false,
    }
}

#[tokio::test]
async fn metrics_have_the_spec_names_and_bounded_labels() {
    let s = with_admin().await;
    let token = s.token_for("alice").await;
    s.http
        .get(s.url("/rest/api/2/myself"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    s.http
        .get(s.url("/rest/api/2/myself"))
        .bearer_auth("tg_000000000000000000000000000000000000")
        .send()
        .await
        .unwrap();
    s.http
        .get(s.url("/rest/api/2/serverInfo"))
        .send()
        .await
        .unwrap();
    s.http
        .get(s.url("/rest/api/2/myself"))
        .basic_auth("bob", Some("bob"))
        .send()
        .await
        .unwrap();
    // Three failures lock bob out; the fourth attempt meets the lock.
    for _ in 0..4 {
        s.http
            .get(s.url("/rest/api/2/myself"))
            .basic_auth("bob", Some("tg_000000000000000000000000000000000000"))
            .send()
            .await
            .unwrap();
    }
    s.http
        .get(s.url("/x"))
        .header("authorization", "Negotiate abc")
        .send()
        .await
        .unwrap();
    let resp = s.http.get(admin_url(&s, "/metrics")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .contains("openmetrics")
    );
    let text = resp.text().await.unwrap();
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
        .http
        .get(s.url("/rest/api/2/serverInfo?rid=1"))
        .header("x-request-id", "ci-run-42.step-7")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["x-request-id"], "ci-run-42.step-7");
    let seen = s
        .sim
        .seen()
        .into_iter()
        .find(|r| r.target.ends_with("rid=1"))
        .unwrap();
    assert_eq!(values(&seen.headers, "x-request-id"), ["ci-run-42.step-7"]);

    let resp = s
        .http
        .get(s.url("/rest/api/2/serverInfo?rid=2"))
        .send()
        .await
        .unwrap();
    let made = resp.headers()["x-request-id"].to_str().unwrap().to_string();
    assert_eq!(made.len(), 32);
    assert!(made.bytes().all(|b| b.is_ascii_hexdigit()));
    let seen = s
        .sim
        .seen()
        .into_iter()
        .find(|r| r.target.ends_with("rid=2"))
        .unwrap();
    assert_eq!(values(&seen.headers, "x-request-id"), [made]);

    // An unusable id (too long, odd characters) is replaced.
    let resp = s
        .http
        .get(s.url("/rest/api/2/serverInfo?rid=3"))
        .header("x-request-id", "x".repeat(300))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["x-request-id"].len(), 32);
    // Answers of tokengate's own carry one too.
    let resp = s.http.get(s.api("/user/token")).send().await.unwrap();
    assert_eq!(resp.status(), 401);
    assert!(resp.headers().contains_key("x-request-id"));
}
