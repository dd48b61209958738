//! A token's life beyond create and delete, against the simulated Jira:
//!
//! - `allowedIps`: a token for 127.0.0.2 used from 127.0.0.1 gets the
//!   uniform 401 and from 127.0.0.2 works, on the proxy path and the
//!   management API; behind a trusted proxy the `X-Forwarded-For` client
//!   counts, from anyone else it does not; IPv6 networks; the checks of the
//!   field; the refusal costs the address's quota, not the owner's lockout;
//! - `lastAccessedFrom` shows the client of the last use;
//! - rotation: old and new secret both work during the grace, the old one is
//!   refused after it (an injected clock, no sleeping), and without a grace
//!   at once; on PostgreSQL the same across two gateways.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::pg::TestDb;
use common::*;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokengate::clock::ManualClock;
use tokengate::config::StoreBackend;
use tokengate::demo::sim::SimConfig;

/// A client whose connections come from `ip` (a loopback address).
fn from(ip: &str) -> reqwest::Client {
    let _ = client();
    reqwest::Client::builder()
        .no_proxy()
        .local_address(ip.parse::<IpAddr>().unwrap())
        .build()
        .unwrap()
}

/// alice's token with `allowedIps`.
async fn fenced_token(s: &JiraSetup, allowed: Value) -> String {
    let v = s
        .as_user("alice", "alice")
        .create_token(json!({"tokenDescription": "fenced", "allowedIps": allowed}))
        .await;
    v["plainTextToken"].as_str().unwrap().to_string()
}

fn metric(text: &str, line_start: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test]
async fn a_token_for_127_0_0_2_works_from_there_only() {
    let s = JiraSetup::with_admin().await;
    let token = fenced_token(&s, json!(["127.0.0.2/32"])).await;
    let here = s.with_token(&token);
    let there = s.with_token(&token).over(from("127.0.0.2"));

    let refused = here.myself().await;
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    let (_, body) = status_and_json(refused).await;
    assert_eq!(
        error_message(&body),
        "Token is invalid, has been revoked or expired",
        "the uniform 401"
    );
    let allowed = there.myself().await;
    assert_eq!(allowed.status(), StatusCode::OK);
    assert_eq!(allowed.json::<Value>().await.unwrap()["name"], "alice");
    // The management API alike.
    assert_eq!(here.get("/user/token").await.0, StatusCode::UNAUTHORIZED);
    let (status, listed) = there.get("/user/token").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(listed[0]["allowedIps"], json!(["127.0.0.2/32"]));
    assert_eq!(listed[0]["lastAccessedFrom"], "127.0.0.2");
    let (_, v) = s
        .as_user("admin", "admin")
        .get("/user/tokensByFilter?allowedIpsSet=true")
        .await;
    assert_eq!(v["total"], 1);
    assert_eq!(v["content"][0]["allowedIps"], json!(["127.0.0.2/32"]));
    let (_, v) = s
        .as_user("admin", "admin")
        .get("/user/tokensByFilter?allowedIpsSet=false")
        .await;
    assert_eq!(v["total"], 0);

    let metrics = s.metrics_text().await;
    assert_eq!(
        metric(
            &metrics,
            "tokengate_auth_decisions_total{result=\"ip_not_allowed\"}"
        ),
        2.0
    );
}

#[tokio::test]
async fn from_the_wrong_address_the_quota_counts_the_lockout_does_not() {
    let s = JiraSetup::jira_with(|c| {
        c.auth.max_failed_attempts = 2;
        c.auth.failures_per_ip_per_minute = 5;
    })
    .await;
    let token = fenced_token(&s, json!(["127.0.0.2"])).await;
    // Named with the owner's name: still not a failure of alice's.
    for _ in 0..3 {
        let r = s.as_user("alice", &token).myself().await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    }
    let (status, _) = s.as_user("alice", "alice").get("/user/token").await;
    assert_eq!(status, StatusCode::OK, "alice is not locked out");
    let mut throttled = false;
    for _ in 0..3 {
        if s.with_token(&token).myself().await.status() == StatusCode::TOO_MANY_REQUESTS {
            throttled = true;
            break;
        }
    }
    assert!(throttled, "the address used up its quota");
    let there = s.with_token(&token).over(from("127.0.0.2"));
    assert_eq!(
        there.myself().await.status(),
        StatusCode::OK,
        "another address"
    );
}

#[tokio::test]
async fn behind_a_trusted_proxy_the_forwarded_client_counts() {
    let s = JiraSetup::jira_with(|c| c.server.trusted_proxies = vec!["127.0.0.1/32".into()]).await;
    let token = fenced_token(&s, json!(["198.51.100.0/24"])).await;
    let via_proxy = |xff: &str| s.with_token(&token).header("x-forwarded-for", xff);
    assert_eq!(
        via_proxy("198.51.100.20").myself().await.status(),
        StatusCode::OK
    );
    assert_eq!(
        via_proxy("203.0.113.9").myself().await.status(),
        StatusCode::UNAUTHORIZED
    );
    // The right-most untrusted entry: one the client wrote further left is not believed.
    assert_eq!(
        via_proxy("198.51.100.20, 203.0.113.9")
            .myself()
            .await
            .status(),
        StatusCode::UNAUTHORIZED
    );
    // From a peer that is no trusted proxy the header is not believed either.
    let untrusted = s
        .with_token(&token)
        .header("x-forwarded-for", "198.51.100.20")
        .over(from("127.0.0.3"));
    assert_eq!(untrusted.myself().await.status(), StatusCode::UNAUTHORIZED);
    let (_, listed) = via_proxy("198.51.100.20").get("/user/token").await;
    assert_eq!(listed[0]["lastAccessedFrom"], "198.51.100.20");
}

#[tokio::test]
async fn ipv6_networks_and_the_checks_of_the_field() {
    let s = JiraSetup::jira().await;
    let alice = s.as_user("alice", "alice");
    let v = alice
        .create_token(json!({
            "tokenDescription": "v6",
            "allowedIps": ["2001:db8::/32", "2001:DB8:0:1::7", "::ffff:192.0.2.0/120", "fe80::1:2/64"]
        }))
        .await;
    assert_eq!(
        v["allowedIps"],
        json!([
            "2001:db8::/32",
            "2001:db8:0:1::7/128",
            "192.0.2.0/24",
            "fe80::/64"
        ])
    );
    let bad = |allowed: Value| {
        let alice = alice.clone();
        async move {
            let (status, v) = alice
                .post(
                    "/user/token",
                    json!({"tokenDescription": "x", "allowedIps": allowed}),
                )
                .await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
            field_error(&v, "allowedIps").to_string()
        }
    };
    assert!(
        bad(json!(["2001:db8::/129"]))
            .await
            .contains("entry 0 (\"2001:db8::/129\")")
    );
    assert!(
        bad(json!(["10.0.0.0/8", "10.0.0.0/33"]))
            .await
            .contains("entry 1")
    );
    assert!(
        bad(json!(["jira.example.com"]))
            .await
            .contains("not an IP address or CIDR")
    );
    let secretish = bad(json!(["tg_notanaddress"])).await;
    assert!(!secretish.contains("tg_"), "{secretish}");
    assert!(bad(json!("10.0.0.0/8")).await.contains("must be an array"));
    let many: Vec<String> = (0..33).map(|i| format!("10.{i}.0.0/16")).collect();
    assert!(bad(json!(many)).await.contains("at most 32"));
    let (status, _) = alice
        .post(
            "/user/token",
            json!({"tokenDescription": "x", "allowedIps": []}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "empty: anywhere");
    let (status, v) = s
        .as_user("admin", "admin")
        .get("/user/tokensByFilter?allowedIpsSet=maybe")
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(field_error(&v, "allowedIpsSet"), "must be true or false");
}

#[tokio::test]
async fn an_ipv6_client_is_checked_against_ipv6_networks() {
    if std::net::TcpListener::bind("[::1]:0").is_err() {
        eprintln!("SKIPPED: no IPv6 loopback on this machine");
        return;
    }
    let s = JiraSetup::jira_with(|c| c.server.listen = "[::1]:0".parse().unwrap()).await;
    let inside = fenced_token(&s, json!(["::1/128"])).await;
    let outside = fenced_token(&s, json!(["2001:db8::/32", "127.0.0.1"])).await;
    assert_eq!(
        s.with_token(&inside).myself().await.status(),
        StatusCode::OK
    );
    assert_eq!(
        s.with_token(&outside).myself().await.status(),
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn a_rotated_secret_works_during_its_grace_and_is_refused_after_it() {
    let s = JiraSetup::jira().await;
    let old = s.token_for("alice").await;
    let alice = s.with_token(&old);
    // Used (and so cached) before the rotation.
    assert_eq!(alice.myself().await.status(), StatusCode::OK);
    let (_, listed) = alice.get("/user/token").await;
    let (status, v) = alice
        .post("/user/token/1/rotate", json!({"graceSeconds": 300}))
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["id"], 1);
    assert_eq!(v["tokenDescription"], listed[0]["description"]);
    assert_eq!(v["tokenExpirationDateTimeMillis"], listed[0]["validUntil"]);
    assert_eq!(v["tokenForUserKey"], ALICE_KEY);
    let new = v["plainTextToken"].as_str().unwrap().to_string();
    assert_ne!(new, old);
    for (token, name) in [(&old, "old"), (&new, "new")] {
        assert_eq!(
            s.with_token(token).myself().await.status(),
            StatusCode::OK,
            "{name} during the grace"
        );
    }
    s.clock.advance_ms(299_000);
    assert_eq!(s.with_token(&old).myself().await.status(), StatusCode::OK);
    s.clock.advance_ms(1_000);
    assert_eq!(
        s.with_token(&old).myself().await.status(),
        StatusCode::UNAUTHORIZED,
        "after the grace"
    );
    assert_eq!(s.with_token(&new).myself().await.status(), StatusCode::OK);
    let (_, listed) = s.with_token(&new).get("/user/token").await;
    assert_eq!(listed.as_array().unwrap().len(), 1, "the same token");

    // Without a grace (the default), the old secret stops at once.
    let (status, v) = s
        .with_token(&new)
        .post("/user/token/1/rotate", json!({}))
        .await;
    assert_eq!(status, StatusCode::OK);
    let newest = v["plainTextToken"].as_str().unwrap().to_string();
    assert_eq!(
        s.with_token(&new).myself().await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        s.with_token(&newest).myself().await.status(),
        StatusCode::OK
    );
    // Someone else's token is not there for bob; an admin may rotate it.
    let (status, _) = s
        .as_user("bob", "bob")
        .post("/user/token/1/rotate", json!({}))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = s
        .as_user("admin", "admin")
        .post("/user/token/1/rotate", json!({"graceSeconds": 86_400}))
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, v) = s
        .as_user("admin", "admin")
        .post("/user/token/1/rotate", json!({"graceSeconds": -1}))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(field_error(&v, "graceSeconds").contains("0 to 86400"));
}

/// Two gateways on one PostgreSQL database, with one manual clock.
type Node = (tokengate::Running, tempfile::TempDir);

async fn two_nodes(
    db: &TestDb,
    sim: &tokengate::demo::sim::SimUpstream,
) -> (Vec<Node>, Arc<ManualClock>) {
    let clock = ManualClock::new(T0);
    let mut nodes = Vec::new();
    for _ in 0..2 {
        let dir = tempfile::tempdir().unwrap();
        let mut config = header_mode_config(&sim.url(), dir.path());
        config.tokens.backend = StoreBackend::Postgres;
        config.tokens.postgres_url_env = "PG_URL".into();
        let gw = tokengate::start(
            config,
            options(clock.clone(), &[("GW_SECRET", SECRET), ("PG_URL", &db.url)]),
        )
        .await
        .unwrap();
        nodes.push((gw, dir));
    }
    (nodes, clock)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn on_postgres_the_old_secret_is_refused_on_every_node_after_the_grace() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let sim = header_mode_sim(SimConfig::jira()).await;
    let (nodes, clock) = two_nodes(&db, &sim).await;
    let (a, b) = (&nodes[0].0, &nodes[1].0);
    let old = a
        .as_user("alice", "alice")
        .create_token(json!({"tokenDescription": "ci"}))
        .await["plainTextToken"]
        .as_str()
        .unwrap()
        .to_string();
    for node in [a, b] {
        // Cached on both before the rotation.
        assert_eq!(
            node.with_token(&old).myself().await.status(),
            StatusCode::OK
        );
    }
    let (status, v) = a
        .with_token(&old)
        .post("/user/token/1/rotate", json!({"graceSeconds": 60}))
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let new = v["plainTextToken"].as_str().unwrap().to_string();
    for node in [a, b] {
        assert_eq!(
            node.with_token(&old).myself().await.status(),
            StatusCode::OK
        );
        assert_eq!(
            node.with_token(&new).myself().await.status(),
            StatusCode::OK
        );
    }
    clock.advance_ms(60_000);
    for (name, node) in [("A", a), ("B", b)] {
        // B hears of the rotation by notification; its entry for the old
        // secret is read again with the grace end as its expiry.
        let start = Instant::now();
        loop {
            let status = node.with_token(&old).myself().await.status();
            if status == StatusCode::UNAUTHORIZED {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(2),
                "node {name} still takes the old secret: {status}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(
            node.with_token(&new).myself().await.status(),
            StatusCode::OK
        );
    }
}
