//! Authentication on proxied traffic: each row of the SPEC §1 table, the
//! credential swap in all three modes, header spoofing, expiry on an
//! injected clock, scopes, lockout (SPEC §6) and per-IP throttling.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};

use common::*;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokengate::demo::sim::{Seen, SimConfig, SimUser};

static PROBE: AtomicU64 = AtomicU64::new(0);

/// A unique path, so each request can be looked for at the upstream.
fn probe() -> String {
    format!(
        "/rest/api/2/issue/DEMO-1?probe={}",
        PROBE.fetch_add(1, Ordering::Relaxed)
    )
}

fn seen_at(s: &JiraSetup, target: &str) -> Option<Seen> {
    s.sim.seen().into_iter().find(|r| r.target == target)
}

const BAD: &str = "tg_000000000000000000000000000000000000";

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

// ---- the rows of SPEC §1 -------------------------------------------------------

#[tokio::test]
async fn row_token_valid_is_forwarded_as_its_owner() {
    let s = JiraSetup::jira().await;
    let token = s.token_for("alice").await;
    for req in [
        s.http.get(s.url("/rest/api/2/myself")).bearer_auth(&token),
        s.http
            .get(s.url("/rest/api/2/myself"))
            .basic_auth("alice", Some(&token)),
        s.http
            .get(s.url("/rest/api/2/myself"))
            .basic_auth("ALICE", Some(&token)),
    ] {
        let resp = req.send().await.unwrap();
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
    for (name, req) in [
        ("unknown", s.http.get(s.url(&probe())).bearer_auth(BAD)),
        (
            "bad checksum",
            s.http.get(s.url(&probe())).bearer_auth(&wrong_checksum),
        ),
        (
            "too short",
            s.http.get(s.url(&probe())).bearer_auth("tg_short"),
        ),
        (
            "wrong user",
            s.http.get(s.url(&probe())).basic_auth("bob", Some(&token)),
        ),
    ] {
        let url = req.try_clone().unwrap().build().unwrap().url().clone();
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), 401, "{name}");
        let target = format!("{}?{}", url.path(), url.query().unwrap());
        assert!(
            seen_at(&s, &target).is_none(),
            "{name} reached the upstream"
        );
    }
}

#[tokio::test]
async fn every_bad_token_gets_the_same_401() {
    let s = JiraSetup::with(SimConfig::jira(), |c| c.auth.max_failed_attempts = 0).await;
    let token = s.token_for("alice").await;
    let revoked = s.token_for("alice").await;
    let del = s
        .http
        .delete(s.api("/user/token/2"))
        .basic_auth("alice", Some("alice"))
        .send()
        .await
        .unwrap();
    assert_eq!(del.status(), 200);
    let expiring = s
        .create_token(
            "alice",
            "alice",
            json!({"tokenDescription": "x", "tokenExpirationDateTime": "2026-12-01T00:00:00Z"}),
        )
        .await;
    let expiring = expiring["plainTextToken"].as_str().unwrap().to_string();
    s.clock
        .set(tokengate::api::validity::parse_expiry("2026-12-01T00:00:00Z").unwrap());
    let me = s.url("/rest/api/2/myself");
    let mut shapes = Vec::new();
    for req in [
        s.http.get(&me).bearer_auth(BAD),                // unknown
        s.http.get(&me).bearer_auth(&revoked),           // revoked
        s.http.get(&me).bearer_auth(&expiring),          // expired
        s.http.get(&me).basic_auth("bob", Some(&token)), // wrong user
        s.http
            .get(&me)
            .bearer_auth("tg_0000000000000000000000000000000000x1"), // malformed
        s.http.get(&me).basic_auth("alice", Some("tg_")), // malformed, Basic
    ] {
        shapes.push(shape(req.send().await.unwrap()).await);
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
    let path = probe();
    let resp = s
        .http
        .get(s.url(&path))
        .basic_auth("bob", Some("bob"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let seen = seen_at(&s, &path).unwrap();
    assert_eq!(
        values(&seen.headers, "authorization"),
        ["Basic Ym9iOmJvYg=="]
    );
    assert_eq!(seen.user.as_deref(), Some("bob"));
    // Three wrong passwords answered 401 by the upstream lock bob out.
    for _ in 0..3 {
        let resp = s
            .http
            .get(s.url(&probe()))
            .basic_auth("bob", Some("nope"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 401);
    }
    let path = probe();
    let resp = s
        .http
        .get(s.url(&path))
        .basic_auth("bob", Some("bob"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    assert!(
        seen_at(&s, &path).is_none(),
        "a locked user's request is not forwarded"
    );
}

#[tokio::test]
async fn row_password_refused_when_password_basic_auth_is_off() {
    let s = JiraSetup::with(SimConfig::jira(), |c| {
        c.tokens.allow_password_basic_auth = false
    })
    .await;
    let path = probe();
    let resp = s
        .http
        .get(s.url(&path))
        .basic_auth("bob", Some("bob"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    assert!(seen_at(&s, &path).is_none());
    // Tokens still work, and passwords still create them.
    let token = s.token_for("bob").await;
    let resp = s
        .http
        .get(s.url("/rest/api/2/myself"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn row_other_schemes_are_forwarded_unless_refused() {
    let s = JiraSetup::jira().await;
    for auth in [
        "Bearer NjQ0MTc2NTY5NjE4OjPAT",
        "Negotiate YIIGhgYGKwYBBQUCoIIGejCCBnagMDAuBgkqhkiC9xIBAgIGCSqGSIb3EgECAgYKKwYBBAGCNwICHgYKKwYBBAGCNwICCqKCBkAEggY8",
    ] {
        let path = probe();
        s.http
            .get(s.url(&path))
            .header("authorization", auth)
            .send()
            .await
            .unwrap();
        let seen = seen_at(&s, &path).expect("forwarded");
        assert_eq!(values(&seen.headers, "authorization"), [auth]);
    }
    let strict = JiraSetup::with(SimConfig::jira(), |c| c.auth.reject_unknown_schemes = true).await;
    let path = probe();
    let resp = strict
        .http
        .get(strict.url(&path))
        .header("authorization", "Negotiate abc")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    assert!(seen_at(&strict, &path).is_none());
}

#[tokio::test]
async fn row_no_authorization_is_forwarded_with_its_cookies() {
    let s = JiraSetup::jira().await;
    let path = probe();
    let resp = s
        .http
        .get(s.url(&path))
        .header("cookie", "JSESSIONID=abc")
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status(),
        401,
        "the upstream's own answer to an anonymous call"
    );
    let seen = seen_at(&s, &path).unwrap();
    assert_eq!(values(&seen.headers, "cookie"), ["JSESSIONID=abc"]);
    assert_eq!(seen.user, None);
    let resp = s
        .http
        .get(s.url("/rest/api/2/serverInfo"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}

// ---- credential swap --------------------------------------------------------------

fn with_service_account(mut sim: SimConfig) -> SimConfig {
    sim.users
        .push(SimUser::new("svc", "JIRAUSER10900", "svc-pw", false));
    sim.pats.insert("svc-pat".into(), "svc".into());
    sim
}

#[tokio::test]
async fn swap_header_mode_sends_the_owner_and_the_secret_only() {
    let s = JiraSetup::jira().await;
    let token = s.token_for("alice").await;
    let path = probe();
    let resp = s
        .http
        .get(s.url(&path))
        .bearer_auth(&token)
        .header("cookie", "JSESSIONID=stolen")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let seen = seen_at(&s, &path).unwrap();
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
    let resp = s
        .http
        .get(s.url(&path))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let seen = seen_at(&s, &path).unwrap();
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
    let resp = s
        .http
        .get(s.url(&path))
        .basic_auth("alice", Some(&token))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let seen = seen_at(&s, &path).unwrap();
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
    let seen = seen_at(&s, &path).unwrap();
    let identity: Vec<_> = seen
        .headers
        .iter()
        .filter(|(k, _)| tokengate::config::normalize_header_name(k.as_str()) == "x-remote-user")
        .map(|(_, v)| v.to_str().unwrap().to_string())
        .collect();
    assert_eq!(identity, ["alice"]);
    let secrets: Vec<_> = seen
        .headers
        .iter()
        .filter(|(k, _)| tokengate::config::normalize_header_name(k.as_str()) == "x-gateway-secret")
        .map(|(_, v)| v.to_str().unwrap().to_string())
        .collect();
    assert_eq!(secrets, [SECRET]);
    assert!(!seen.headers.contains_key("cookie"));
    // Without credentials: none at all, and the upstream takes the caller as anonymous.
    let path = probe();
    let req = format!("GET {path} HTTP/1.1\r\nHost: h\r\n{spoof}\r\n");
    raw(s.gw.addr(), req.as_bytes()).await;
    let seen = seen_at(&s, &path).unwrap();
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
        .create_token(
            "alice",
            "alice",
            json!({"tokenDescription": "1 month", "tokenValidityTimeInMonths": 1}),
        )
        .await;
    let token = v["plainTextToken"].as_str().unwrap();
    let until = v["tokenExpirationDateTimeMillis"].as_u64().unwrap();
    let call = || {
        s.http
            .get(s.url("/rest/api/2/myself"))
            .bearer_auth(token)
            .send()
    };
    s.clock.set(until - 1);
    assert_eq!(call().await.unwrap().status(), 200);
    s.clock.set(until);
    assert_eq!(call().await.unwrap().status(), 401);
    s.clock.set(until + 86_400_000);
    assert_eq!(call().await.unwrap().status(), 401);
}

#[tokio::test]
async fn read_only_tokens_may_only_get_head_and_options() {
    let s = JiraSetup::jira().await;
    let v = s
        .create_token(
            "alice",
            "alice",
            json!({"tokenDescription": "ro", "tokenScope": 1}),
        )
        .await;
    let token = v["plainTextToken"].as_str().unwrap();
    for method in [
        reqwest::Method::GET,
        reqwest::Method::HEAD,
        reqwest::Method::OPTIONS,
    ] {
        let path = probe();
        let resp = s
            .http
            .request(method.clone(), s.url(&path))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_ne!(resp.status(), 403, "{method}");
        assert!(seen_at(&s, &path).is_some(), "{method} forwarded");
    }
    for method in [
        reqwest::Method::POST,
        reqwest::Method::PUT,
        reqwest::Method::DELETE,
        reqwest::Method::PATCH,
    ] {
        let path = probe();
        let resp = s
            .http
            .request(method.clone(), s.url(&path))
            .bearer_auth(token)
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 403, "{method}");
        let v: Value = resp.json().await.unwrap();
        assert!(
            v["errorMessages"][0]
                .as_str()
                .unwrap()
                .contains("read-only")
        );
        assert!(seen_at(&s, &path).is_none(), "{method} not forwarded");
    }
    let rw = s.token_for("alice").await;
    let resp = s
        .http
        .post(s.url("/rest/api/2/issue/DEMO-1/comment"))
        .bearer_auth(&rw)
        .body("{\"body\":\"hi\"}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
}

// ---- lockout (SPEC §6) ----------------------------------------------------------------

async fn call_as(s: &JiraSetup, user: &str, secret: &str) -> reqwest::Response {
    s.http
        .get(s.url("/rest/api/2/myself"))
        .basic_auth(user, Some(secret))
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn three_failures_lock_a_user_out_from_that_address_but_never_a_valid_token() {
    let s = JiraSetup::jira().await;
    let token = s.token_for("alice").await;
    for _ in 0..3 {
        assert_eq!(call_as(&s, "alice", BAD).await.status(), 401);
    }
    // Passwords, even the right one, and bad tokens given with the name meet the lock.
    for resp in [
        call_as(&s, "alice", "alice").await,
        call_as(&s, "alice", BAD).await,
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
    assert_eq!(call_as(&s, "alice", &token).await.status(), 200);
    let resp = s
        .http
        .get(s.url("/rest/api/2/myself"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    // Other users are not affected.
    let bobs = s.token_for("bob").await;
    assert_eq!(call_as(&s, "bob", &bobs).await.status(), 200);
}

#[tokio::test]
async fn a_success_before_the_limit_resets_the_count() {
    let s = JiraSetup::jira().await;
    let token = s.token_for("alice").await;
    for _ in 0..2 {
        assert_eq!(call_as(&s, "alice", BAD).await.status(), 401);
    }
    assert_eq!(call_as(&s, "alice", &token).await.status(), 200);
    for _ in 0..2 {
        assert_eq!(call_as(&s, "alice", BAD).await.status(), 401);
    }
    assert_eq!(call_as(&s, "alice", &token).await.status(), 200);
}

#[tokio::test]
async fn a_lockout_expires_by_itself() {
    let s = JiraSetup::with(SimConfig::jira(), |c| c.auth.lockout_seconds = 60).await;
    for _ in 0..3 {
        call_as(&s, "alice", BAD).await;
    }
    let resp = call_as(&s, "alice", "alice").await;
    assert_eq!(resp.status(), 403);
    assert_eq!(resp.headers()["retry-after"], "60");
    s.clock.advance_ms(59_000);
    assert_eq!(call_as(&s, "alice", "alice").await.status(), 403);
    s.clock.advance_ms(1_000);
    assert_eq!(call_as(&s, "alice", "alice").await.status(), 200);
}

#[tokio::test]
async fn lockout_seconds_zero_lasts_until_an_admin_clears_it() {
    let s = JiraSetup::with(SimConfig::jira(), |c| c.auth.lockout_seconds = 0).await;
    let token = s.token_for("alice").await;
    for _ in 0..3 {
        call_as(&s, "alice", BAD).await;
    }
    s.clock.advance_ms(365 * 86_400_000);
    let resp = call_as(&s, "alice", "alice").await;
    assert_eq!(resp.status(), 403);
    assert!(
        !resp.headers().contains_key("retry-after"),
        "no end to announce"
    );
    let resp = s
        .http
        .delete(s.api("/admin/failedLogins/JIRAUSER10100"))
        .basic_auth("admin", Some("admin"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    assert_eq!(call_as(&s, "alice", "alice").await.status(), 200);
    // The clock moved a year: the old token expired, a fresh one works.
    assert_eq!(call_as(&s, "alice", &token).await.status(), 401);
    let fresh = s.token_for("alice").await;
    assert_eq!(call_as(&s, "alice", &fresh).await.status(), 200);
}

#[tokio::test]
async fn max_failed_attempts_zero_never_locks() {
    let s = JiraSetup::with(SimConfig::jira(), |c| c.auth.max_failed_attempts = 0).await;
    let token = s.token_for("alice").await;
    for _ in 0..10 {
        assert_eq!(call_as(&s, "alice", BAD).await.status(), 401);
    }
    assert_eq!(call_as(&s, "alice", &token).await.status(), 200);
}

/// A Bearer token names no user: its failures count toward the address's
/// quota only. An expired token retried by a forgotten pipeline locks nobody
/// out (nothing about it is being guessed).
#[tokio::test]
async fn an_expired_bearer_token_locks_nobody_out() {
    let s = JiraSetup::jira().await;
    let v = s
        .create_token(
            "alice",
            "alice",
            json!({"tokenDescription": "short", "tokenValidityTimeInMonths": 1}),
        )
        .await;
    let old = v["plainTextToken"].as_str().unwrap().to_string();
    s.clock
        .set(v["tokenExpirationDateTimeMillis"].as_u64().unwrap());
    let fresh = s.token_for("alice").await;
    for _ in 0..3 {
        let resp = s
            .http
            .get(s.url("/rest/api/2/myself"))
            .bearer_auth(&old)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 401);
    }
    assert_eq!(call_as(&s, "alice", &fresh).await.status(), 200);
    assert_eq!(call_as(&s, "alice", "alice").await.status(), 200);
}

// ---- throttling ---------------------------------------------------------------------

#[tokio::test]
async fn failures_beyond_the_ip_quota_are_throttled_until_it_refills() {
    let s = JiraSetup::with(SimConfig::jira(), |c| {
        c.auth.failures_per_ip_per_minute = 5;
        c.auth.max_failed_attempts = 0;
    })
    .await;
    let token = s.token_for("alice").await;
    for _ in 0..5 {
        let resp = s
            .http
            .get(s.url("/rest/api/2/myself"))
            .bearer_auth(BAD)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 401);
    }
    let resp = s
        .http
        .get(s.url("/rest/api/2/myself"))
        .bearer_auth(BAD)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 429);
    assert_eq!(
        resp.headers()["retry-after"],
        "12",
        "one attempt refills every 60/5 s"
    );
    let path = probe();
    let resp = s
        .http
        .get(s.url(&path))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 429, "everything from the address");
    assert!(seen_at(&s, &path).is_none());
    let resp = s
        .http
        .get(s.api("/user/token"))
        .basic_auth("alice", Some("alice"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 429, "the management API too");
    s.clock.advance_ms(12_000);
    let resp = s
        .http
        .get(s.url("/rest/api/2/myself"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "recovered once the quota refilled");
}

#[tokio::test]
async fn behind_a_trusted_proxy_each_forwarded_client_has_its_own_quota() {
    let s = JiraSetup::with(SimConfig::jira(), |c| {
        c.auth.failures_per_ip_per_minute = 2;
        c.auth.max_failed_attempts = 0;
        c.server.trusted_proxies = vec!["127.0.0.1".into()];
    })
    .await;
    let fail = |xff: &'static str| {
        s.http
            .get(s.url("/rest/api/2/myself"))
            .bearer_auth(BAD)
            .header("x-forwarded-for", xff)
            .send()
    };
    assert_eq!(fail("203.0.113.1").await.unwrap().status(), 401);
    assert_eq!(fail("203.0.113.1").await.unwrap().status(), 401);
    assert_eq!(fail("203.0.113.1").await.unwrap().status(), 429);
    assert_eq!(
        fail("203.0.113.2").await.unwrap().status(),
        401,
        "another client"
    );
    // IPv6 clients are keyed by their /64.
    assert_eq!(fail("2001:db8:1:2::1").await.unwrap().status(), 401);
    assert_eq!(fail("2001:db8:1:2::ffff").await.unwrap().status(), 401);
    assert_eq!(fail("2001:db8:1:2:aaaa::7").await.unwrap().status(), 429);
    assert_eq!(fail("2001:db8:1:3::1").await.unwrap().status(), 401);
}

#[tokio::test]
async fn an_untrusted_client_cannot_dodge_the_quota_with_x_forwarded_for() {
    let s = JiraSetup::with(SimConfig::jira(), |c| {
        c.auth.failures_per_ip_per_minute = 2;
        c.auth.max_failed_attempts = 0;
    })
    .await;
    let mut statuses = Vec::new();
    for i in 0..3 {
        let resp = s
            .http
            .get(s.url("/rest/api/2/myself"))
            .bearer_auth(BAD)
            .header("x-forwarded-for", format!("198.51.100.{i}"))
            .send()
            .await
            .unwrap();
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
    let s = JiraSetup::with(SimConfig::jira(), |c| {
        c.tokens.last_access_flush_ms = 3_600_000
    })
    .await;
    let token = s.token_for("alice").await;
    // Let sled finish writing what the create left behind.
    tokio::time::sleep(std::time::Duration::from_millis(1_500)).await;
    let before = store_files(s.dir.path());
    s.sim.clear_seen();
    let mut paths = Vec::new();
    for _ in 0..200 {
        let path = probe();
        let resp = s
            .http
            .get(s.url(&path))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
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
