//! Authentication on proxied traffic: each kind of credential (the table in
//! docs/design.md), the credential swap in all three modes, header spoofing,
//! expiry on an injected clock, scopes, lockout and per-IP throttling.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokengate::demo::sim::SimConfig;

/// What a 401 looks like, without what legitimately differs per response.
async fn shape(resp: reqwest::Response) -> (StatusCode, Vec<(String, String)>, String) {
    let status = resp.status();
    let mut headers: Vec<(String, String)> = resp
        .headers()
        .iter()
        .filter(|(k, _)| !matches!(k.as_str(), "date" | "x-request-id"))
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap().to_string()))
        .collect();
    headers.sort();
    (status, headers, resp.text().await.unwrap())
}

// ---- each kind of credential ----------------------------------------------------

#[tokio::test]
async fn row_token_valid_is_forwarded_as_its_owner() {
    let s = JiraSetup::jira().await;
    let token = s.token_for("alice").await;
    for caller in [
        s.with_token(&token),
        s.as_user("alice", &token),
        s.as_user("ALICE", &token),
    ] {
        let resp = caller.myself().await;
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.json::<Value>().await.unwrap()["name"], "alice");
    }
}

#[tokio::test]
async fn row_token_invalid_is_401_and_never_forwarded() {
    let s = JiraSetup::jira().await;
    let token = s.token_for("alice").await;
    let mut wrong_checksum = token.clone();
    wrong_checksum.replace_range(5..6, if &token[5..6] == "a" { "b" } else { "a" });
    for (name, caller) in [
        ("unknown", s.with_token(UNKNOWN_TOKEN)),
        ("bad checksum", s.with_token(&wrong_checksum)),
        ("too short", s.with_token("tg_short")),
        ("wrong user", s.as_user("bob", &token)),
    ] {
        let path = probe();
        assert_eq!(caller.fetch(&path).await.status(), 401, "{name}");
        assert!(s.seen_at(&path).is_none(), "{name} reached the upstream");
    }
}

#[tokio::test]
async fn every_bad_token_gets_the_same_401() {
    let s = JiraSetup::jira_with(|c| c.auth.max_failed_attempts = 0).await;
    let token = s.token_for("alice").await;
    let revoked = s.token_for("alice").await;
    let alice = s.as_user("alice", "alice");
    assert_eq!(alice.delete("/user/token/2").await.0, 200);
    let expiring = alice
        .create_token(
            json!({"tokenDescription": "x", "tokenExpirationDateTime": "2026-12-01T00:00:00Z"}),
        )
        .await;
    let expiring = expiring["plainTextToken"].as_str().unwrap().to_string();
    s.clock
        .set(tokengate::api::validity::parse_expiry("2026-12-01T00:00:00Z").unwrap());
    let mut shapes = Vec::new();
    for caller in [
        s.with_token(UNKNOWN_TOKEN),                             // unknown
        s.with_token(&revoked),                                  // revoked
        s.with_token(&expiring),                                 // expired
        s.as_user("bob", &token),                                // wrong user
        s.with_token("tg_0000000000000000000000000000000000x1"), // malformed
        s.as_user("alice", "tg_"),                               // malformed, Basic
    ] {
        shapes.push(shape(caller.myself().await).await);
    }
    let first = &shapes[0];
    assert_eq!(first.0, 401);
    assert!(
        first
            .1
            .contains(&("x-seraph-loginreason".into(), "AUTHENTICATED_FAILED".into()))
    );
    assert!(first.1.contains(&(
        "www-authenticate".into(),
        "Basic realm=\"tokengate\", Bearer realm=\"tokengate\"".into()
    )));
    assert_eq!(
        first.2,
        r#"{"errorMessages":["Token is invalid, has been revoked or expired"],"errors":{}}"#
    );
    for (i, other) in shapes.iter().enumerate() {
        assert_eq!(other, first, "case {i} differs");
    }
}

#[tokio::test]
async fn row_password_is_forwarded_unchanged_and_upstream_401_counts() {
    let s = JiraSetup::jira().await;
    let bob = s.as_user("bob", "bob");
    let path = probe();
    assert_eq!(bob.fetch(&path).await.status(), 200);
    let seen = s.seen_at(&path).unwrap();
    assert_eq!(
        values(&seen.headers, "authorization"),
        ["Basic Ym9iOmJvYg=="]
    );
    assert_eq!(seen.user.as_deref(), Some("bob"));
    // Three wrong passwords answered 401 by the upstream lock bob out.
    for _ in 0..3 {
        assert_eq!(s.as_user("bob", "nope").fetch(&probe()).await.status(), 401);
    }
    let path = probe();
    assert_eq!(bob.fetch(&path).await.status(), 403);
    assert!(
        s.seen_at(&path).is_none(),
        "a locked user's request is not forwarded"
    );
}

#[tokio::test]
async fn row_password_refused_when_password_basic_auth_is_off() {
    let s = JiraSetup::jira_with(|c| c.tokens.allow_password_basic_auth = false).await;
    let path = probe();
    assert_eq!(s.as_user("bob", "bob").fetch(&path).await.status(), 401);
    assert!(s.seen_at(&path).is_none());
    // Tokens still work, and passwords still create them.
    let token = s.token_for("bob").await;
    assert_eq!(s.with_token(&token).myself().await.status(), 200);
}

#[tokio::test]
async fn row_other_schemes_are_forwarded_unless_refused() {
    let s = JiraSetup::jira().await;
    for auth in [
        "Bearer NjQ0MTc2NTY5NjE4OjPAT",
        "Negotiate YIIGhgYGKwYBBQUCoIIGejCCBnagMDAuBgkqhkiC9xIBAgIGCSqGSIb3EgECAgYKKwYBBAGCNwICHgYKKwYBBAGCNwICCqKCBkAEggY8",
    ] {
        let path = probe();
        s.with_authorization(auth).fetch(&path).await;
        let seen = s.seen_at(&path).expect("forwarded");
        assert_eq!(values(&seen.headers, "authorization"), [auth]);
    }
    let strict = JiraSetup::jira_with(|c| c.auth.reject_unknown_schemes = true).await;
    let path = probe();
    let resp = strict
        .with_authorization("Negotiate abc")
        .fetch(&path)
        .await;
    assert_eq!(resp.status(), 401);
    assert!(strict.seen_at(&path).is_none());
}

#[tokio::test]
async fn row_no_authorization_is_forwarded_with_its_cookies() {
    let s = JiraSetup::jira().await;
    let path = probe();
    let resp = s
        .anonymous()
        .header("cookie", "JSESSIONID=abc")
        .fetch(&path)
        .await;
    assert_eq!(
        resp.status(),
        401,
        "the upstream's own answer to an anonymous call"
    );
    let seen = s.seen_at(&path).unwrap();
    assert_eq!(values(&seen.headers, "cookie"), ["JSESSIONID=abc"]);
    assert_eq!(seen.user, None);
    let resp = s.anonymous().fetch("/rest/api/2/serverInfo").await;
    assert_eq!(resp.status(), 200);
}

// ---- credential swap --------------------------------------------------------------

#[tokio::test]
async fn swap_header_mode_sends_the_owner_and_the_secret_only() {
    let s = JiraSetup::jira().await;
    let token = s.token_for("alice").await;
    let path = probe();
    let resp = s
        .with_token(&token)
        .header("cookie", "JSESSIONID=stolen")
        .fetch(&path)
        .await;
    assert_eq!(resp.status(), 200);
    let seen = s.seen_at(&path).unwrap();
    assert_eq!(values(&seen.headers, "x-remote-user"), ["alice"]);
    assert_eq!(values(&seen.headers, "x-gateway-secret"), [SECRET]);
    assert!(!seen.headers.contains_key("authorization"));
    assert!(!seen.headers.contains_key("cookie"));
}

#[tokio::test]
async fn swap_basic_mode_sends_the_service_account_and_the_owner() {
    let s = JiraSetup::with(with_service_account(SimConfig::jira()), |c| {
        c.upstream.credentials.mode = tokengate::config::CredentialMode::Basic;
        c.upstream.credentials.username = "svc".into();
        c.upstream.credentials.password_env = "SVC_PW".into();
        c.upstream.credentials.secret_header_name = String::new();
        c.upstream.credentials.secret_env = String::new();
    })
    .await;
    let token = s.token_for("alice").await;
    let path = probe();
    assert_eq!(s.with_token(&token).fetch(&path).await.status(), 200);
    let seen = s.seen_at(&path).unwrap();
    assert_eq!(
        values(&seen.headers, "authorization"),
        ["Basic c3ZjOnN2Yy1wdw=="]
    );
    assert_eq!(values(&seen.headers, "x-remote-user"), ["alice"]);
    assert_eq!(seen.user.as_deref(), Some("svc"));
}

#[tokio::test]
async fn swap_bearer_mode_sends_the_service_pat_and_the_owner() {
    let s = JiraSetup::with(with_service_account(SimConfig::jira()), |c| {
        c.upstream.credentials.mode = tokengate::config::CredentialMode::Bearer;
        c.upstream.credentials.token_env = "SVC_PAT".into();
        c.upstream.credentials.secret_header_name = String::new();
        c.upstream.credentials.secret_env = String::new();
    })
    .await;
    let token = s.token_for("alice").await;
    let path = probe();
    assert_eq!(s.as_user("alice", &token).fetch(&path).await.status(), 200);
    let seen = s.seen_at(&path).unwrap();
    assert_eq!(values(&seen.headers, "authorization"), ["Bearer svc-pat"]);
    assert_eq!(values(&seen.headers, "x-remote-user"), ["alice"]);
    assert_eq!(seen.user.as_deref(), Some("svc"));
}

#[tokio::test]
async fn spoofed_identity_headers_in_any_spelling_never_reach_the_upstream() {
    let s = JiraSetup::jira().await;
    let token = s.token_for("alice").await;
    let spoof = "X-Remote-User: admin\r\nx-remote-user: admin\r\nX_Remote_User: admin\r\nx.remote.user: admin\r\n\
                 X-REMOTE-USER: admin\r\nX-Gateway-Secret: forged\r\nx_gateway_secret: forged\r\n\
                 Connection: close, X-Remote-User, X-Gateway-Secret\r\nCookie: JSESSIONID=admin-session\r\n";
    // With a token: exactly one identity header, ours, and the real secret.
    let path = probe();
    let req =
        format!("GET {path} HTTP/1.1\r\nHost: h\r\nAuthorization: Bearer {token}\r\n{spoof}\r\n");
    let resp = raw(s.gw.addr(), req.as_bytes()).await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    let seen = s.seen_at(&path).unwrap();
    assert_eq!(spelled(&seen.headers, "x-remote-user"), ["alice"]);
    assert_eq!(spelled(&seen.headers, "x-gateway-secret"), [SECRET]);
    assert!(!seen.headers.contains_key("cookie"));
    // Without credentials: none at all, and the upstream takes the caller as anonymous.
    let path = probe();
    let req = format!("GET {path} HTTP/1.1\r\nHost: h\r\n{spoof}\r\n");
    raw(s.gw.addr(), req.as_bytes()).await;
    let seen = s.seen_at(&path).unwrap();
    for (k, _) in seen.headers.iter() {
        let n = tokengate::config::normalize_header_name(k.as_str());
        assert!(
            n != "x-remote-user" && n != "x-gateway-secret",
            "{k} reached the upstream"
        );
    }
    assert_eq!(seen.user, None);
}

// ---- expiry, scope ---------------------------------------------------------------

#[tokio::test]
async fn a_token_is_valid_while_valid_until_is_in_the_future() {
    let s = JiraSetup::jira().await;
    let v = s
        .as_user("alice", "alice")
        .create_token(json!({"tokenDescription": "1 month", "tokenValidityTimeInMonths": 1}))
        .await;
    let token = s.with_token(v["plainTextToken"].as_str().unwrap());
    let until = v["tokenExpirationDateTimeMillis"].as_u64().unwrap();
    s.clock.set(until - 1);
    assert_eq!(token.myself().await.status(), 200);
    s.clock.set(until);
    assert_eq!(token.myself().await.status(), 401);
    s.clock.set(until + 86_400_000);
    assert_eq!(token.myself().await.status(), 401);
}

#[tokio::test]
async fn read_only_tokens_may_only_get_head_and_options() {
    let s = JiraSetup::jira().await;
    let v = s
        .as_user("alice", "alice")
        .create_token(json!({"tokenDescription": "ro", "tokenScope": 1}))
        .await;
    let read_only = s.with_token(v["plainTextToken"].as_str().unwrap());
    for method in [Method::GET, Method::HEAD, Method::OPTIONS] {
        let path = probe();
        let resp = read_only.request(method.clone(), &path).answer().await;
        assert_ne!(resp.status(), 403, "{method}");
        assert!(s.seen_at(&path).is_some(), "{method} forwarded");
    }
    for method in [Method::POST, Method::PUT, Method::DELETE, Method::PATCH] {
        let path = probe();
        let (status, v) = read_only
            .request(method.clone(), &path)
            .body("{}")
            .json_answer()
            .await;
        assert_eq!(status, 403, "{method}");
        assert!(error_message(&v).contains("read-only"));
        assert!(s.seen_at(&path).is_none(), "{method} not forwarded");
    }
    let rw = s.token_for("alice").await;
    let resp = s
        .with_token(&rw)
        .request(Method::POST, "/rest/api/2/issue/DEMO-1/comment")
        .body("{\"body\":\"hi\"}")
        .answer()
        .await;
    assert_eq!(resp.status(), 201);
}

// ---- lockout ----------------------------------------------------------------------------

/// `GET /rest/api/2/myself` as `user:secret`: its status.
async fn myself_as(s: &JiraSetup, user: &str, secret: &str) -> StatusCode {
    s.as_user(user, secret).myself().await.status()
}

#[tokio::test]
async fn three_failures_lock_a_user_out_from_that_address_but_never_a_valid_token() {
    let s = JiraSetup::jira().await;
    let token = s.token_for("alice").await;
    for _ in 0..3 {
        assert_eq!(myself_as(&s, "alice", UNKNOWN_TOKEN).await, 401);
    }
    // Passwords, even the right one, and bad tokens given with the name meet the lock.
    for resp in [
        s.as_user("alice", "alice").myself().await,
        s.as_user("alice", UNKNOWN_TOKEN).myself().await,
    ] {
        assert_eq!(resp.status(), 403);
        assert_eq!(
            resp.headers()["x-seraph-loginreason"],
            "AUTHENTICATION_DENIED"
        );
        assert_eq!(resp.headers()["x-authentication-denied-reason"], "LOCKED");
        assert_eq!(resp.headers()["retry-after"], "900");
        let v: Value = resp.json().await.unwrap();
        assert!(v["errorMessages"][0].as_str().unwrap().contains("locked"));
    }
    // A valid token cannot be guessed: it is never refused for a lockout.
    assert_eq!(myself_as(&s, "alice", &token).await, 200);
    assert_eq!(s.with_token(&token).myself().await.status(), 200);
    // Other users are not affected.
    let bobs = s.token_for("bob").await;
    assert_eq!(myself_as(&s, "bob", &bobs).await, 200);
}

#[tokio::test]
async fn a_success_before_the_limit_resets_the_count() {
    let s = JiraSetup::jira().await;
    let token = s.token_for("alice").await;
    for _ in 0..2 {
        assert_eq!(myself_as(&s, "alice", UNKNOWN_TOKEN).await, 401);
    }
    assert_eq!(myself_as(&s, "alice", &token).await, 200);
    for _ in 0..2 {
        assert_eq!(myself_as(&s, "alice", UNKNOWN_TOKEN).await, 401);
    }
    assert_eq!(myself_as(&s, "alice", &token).await, 200);
}

#[tokio::test]
async fn a_lockout_expires_by_itself() {
    let s = JiraSetup::jira_with(|c| c.auth.lockout_seconds = 60).await;
    for _ in 0..3 {
        myself_as(&s, "alice", UNKNOWN_TOKEN).await;
    }
    let resp = s.as_user("alice", "alice").myself().await;
    assert_eq!(resp.status(), 403);
    assert_eq!(resp.headers()["retry-after"], "60");
    s.clock.advance_ms(59_000);
    assert_eq!(myself_as(&s, "alice", "alice").await, 403);
    s.clock.advance_ms(1_000);
    assert_eq!(myself_as(&s, "alice", "alice").await, 200);
}

#[tokio::test]
async fn lockout_seconds_zero_lasts_until_an_admin_clears_it() {
    let s = JiraSetup::jira_with(|c| c.auth.lockout_seconds = 0).await;
    let token = s.token_for("alice").await;
    for _ in 0..3 {
        myself_as(&s, "alice", UNKNOWN_TOKEN).await;
    }
    s.clock.advance_ms(365 * 86_400_000);
    let resp = s.as_user("alice", "alice").myself().await;
    assert_eq!(resp.status(), 403);
    assert!(
        !resp.headers().contains_key("retry-after"),
        "no end to announce"
    );
    let (status, _) = s
        .as_user("admin", "admin")
        .delete(&format!("/admin/failedLogins/{ALICE_KEY}"))
        .await;
    assert_eq!(status, 204);
    assert_eq!(myself_as(&s, "alice", "alice").await, 200);
    // The clock moved a year: the old token expired, a fresh one works.
    assert_eq!(myself_as(&s, "alice", &token).await, 401);
    let fresh = s.token_for("alice").await;
    assert_eq!(myself_as(&s, "alice", &fresh).await, 200);
}

#[tokio::test]
async fn max_failed_attempts_zero_never_locks() {
    let s = JiraSetup::jira_with(|c| c.auth.max_failed_attempts = 0).await;
    let token = s.token_for("alice").await;
    for _ in 0..10 {
        assert_eq!(myself_as(&s, "alice", UNKNOWN_TOKEN).await, 401);
    }
    assert_eq!(myself_as(&s, "alice", &token).await, 200);
}

/// A Bearer token names no user: its failures count toward the address's
/// quota only. An expired token retried by a forgotten pipeline locks nobody
/// out (nothing about it is being guessed).
#[tokio::test]
async fn an_expired_bearer_token_locks_nobody_out() {
    let s = JiraSetup::jira().await;
    let v = s
        .as_user("alice", "alice")
        .create_token(json!({"tokenDescription": "short", "tokenValidityTimeInMonths": 1}))
        .await;
    let old = v["plainTextToken"].as_str().unwrap().to_string();
    s.clock
        .set(v["tokenExpirationDateTimeMillis"].as_u64().unwrap());
    let fresh = s.token_for("alice").await;
    for _ in 0..3 {
        assert_eq!(s.with_token(&old).myself().await.status(), 401);
    }
    assert_eq!(myself_as(&s, "alice", &fresh).await, 200);
    assert_eq!(myself_as(&s, "alice", "alice").await, 200);
}

// ---- throttling ---------------------------------------------------------------------

#[tokio::test]
async fn failures_beyond_the_ip_quota_are_throttled_until_it_refills() {
    let s = JiraSetup::jira_with(|c| {
        c.auth.failures_per_ip_per_minute = 5;
        c.auth.max_failed_attempts = 0;
    })
    .await;
    let token = s.token_for("alice").await;
    let unknown = s.with_token(UNKNOWN_TOKEN);
    for _ in 0..5 {
        assert_eq!(unknown.myself().await.status(), 401);
    }
    let resp = unknown.myself().await;
    assert_eq!(resp.status(), 429);
    assert_eq!(
        resp.headers()["retry-after"],
        "12",
        "one attempt refills every 60/5 s"
    );
    let path = probe();
    assert_eq!(
        s.with_token(&token).fetch(&path).await.status(),
        429,
        "everything from the address"
    );
    assert!(s.seen_at(&path).is_none());
    assert_eq!(
        s.as_user("alice", "alice").get("/user/token").await.0,
        429,
        "the management API too"
    );
    s.clock.advance_ms(12_000);
    assert_eq!(
        s.with_token(&token).myself().await.status(),
        200,
        "recovered once the quota refilled"
    );
}

#[tokio::test]
async fn behind_a_trusted_proxy_each_forwarded_client_has_its_own_quota() {
    let s = JiraSetup::jira_with(|c| {
        c.auth.failures_per_ip_per_minute = 2;
        c.auth.max_failed_attempts = 0;
        c.server.trusted_proxies = vec!["127.0.0.1".into()];
    })
    .await;
    let fail = |xff: &'static str| {
        let caller = s.with_token(UNKNOWN_TOKEN).header("x-forwarded-for", xff);
        async move { caller.myself().await.status() }
    };
    assert_eq!(fail("203.0.113.1").await, 401);
    assert_eq!(fail("203.0.113.1").await, 401);
    assert_eq!(fail("203.0.113.1").await, 429);
    assert_eq!(fail("203.0.113.2").await, 401, "another client");
    // IPv6 clients are keyed by their /64.
    assert_eq!(fail("2001:db8:1:2::1").await, 401);
    assert_eq!(fail("2001:db8:1:2::ffff").await, 401);
    assert_eq!(fail("2001:db8:1:2:aaaa::7").await, 429);
    assert_eq!(fail("2001:db8:1:3::1").await, 401);
}

#[tokio::test]
async fn an_untrusted_client_cannot_dodge_the_quota_with_x_forwarded_for() {
    let s = JiraSetup::jira_with(|c| {
        c.auth.failures_per_ip_per_minute = 2;
        c.auth.max_failed_attempts = 0;
    })
    .await;
    let mut statuses = Vec::new();
    for i in 0..3 {
        let resp = s
            .with_token(UNKNOWN_TOKEN)
            .header("x-forwarded-for", format!("198.51.100.{i}"))
            .myself()
            .await;
        statuses.push(resp.status().as_u16());
    }
    assert_eq!(statuses, [401, 401, 429]);
}

// ---- the hot path ----------------------------------------------------------------------

fn store_files(dir: &std::path::Path) -> Vec<(std::path::PathBuf, u64, std::time::SystemTime)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let m = e.metadata().unwrap();
            if m.is_dir() {
                stack.push(e.path());
            } else {
                out.push((e.path(), m.len(), m.modified().unwrap()));
            }
        }
    }
    out.sort();
    out
}

#[tokio::test]
async fn the_token_hot_path_writes_nothing_and_asks_the_upstream_nothing() {
    let s = JiraSetup::jira_with(|c| c.tokens.last_access_flush_ms = 3_600_000).await;
    let token = s.token_for("alice").await;
    // Let sled finish writing what the create left behind.
    tokio::time::sleep(std::time::Duration::from_millis(1_500)).await;
    let before = store_files(s.dir.path());
    s.sim.clear_seen();
    let caller = s.with_token(&token);
    let mut paths = Vec::new();
    for _ in 0..200 {
        let path = probe();
        assert_eq!(caller.fetch(&path).await.status(), 200);
        paths.push(path);
    }
    tokio::time::sleep(std::time::Duration::from_millis(1_500)).await;
    let seen: Vec<String> = s.sim.seen().into_iter().map(|r| r.target).collect();
    assert_eq!(
        seen, paths,
        "the upstream saw the forwarded requests and nothing else"
    );
    assert_eq!(store_files(s.dir.path()), before, "no store file changed");
}
