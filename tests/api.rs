//! The management API (docs/api.md), one test per rule, against the simulated
//! Jira (and Confluence where the products differ).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokengate::api::validity::{add_months, parse_expiry};

/// The fields of a token in a user's list and in an update's answer.
const LISTED_FIELDS: [&str; 8] = [
    "allowedIps",
    "created",
    "description",
    "id",
    "lastAccessed",
    "lastAccessedFrom",
    "tokenScope",
    "validUntil",
];

fn keys(v: &Value) -> Vec<&String> {
    v.as_object().unwrap().keys().collect()
}

// ---- POST /user/token -------------------------------------------------------

#[tokio::test]
async fn create_returns_the_token_once_with_the_documented_fields() {
    let s = JiraSetup::jira().await;
    let alice = s.as_user("alice", "alice");
    let (status, v) = alice
        .post("/user/token", json!({"tokenDescription": "CI pipeline"}))
        .await;
    assert_eq!(status, 200);
    let token = v["plainTextToken"].as_str().unwrap();
    assert!(token.starts_with("tg_") && token.len() == 39, "{token}");
    assert_eq!(v["id"], 1);
    assert_eq!(v["tokenDescription"], "CI pipeline");
    assert_eq!(v["tokenScope"], 2);
    assert_eq!(v["tokenForUserKey"], ALICE_KEY);
    let expected = add_months(T0, 6).unwrap();
    assert_eq!(v["tokenExpirationDateTimeMillis"], expected);
    assert_eq!(
        parse_expiry(v["tokenExpirationDateTime"].as_str().unwrap()),
        Some(expected)
    );
    // The token works, and no listing shows it again.
    let me = s.with_token(token).myself().await;
    assert_eq!(me.json::<Value>().await.unwrap()["name"], "alice");
    let (_, list) = alice.get("/user/token").await;
    assert!(!list.to_string().contains(token));
}

#[tokio::test]
async fn description_is_required_and_one_to_255_characters() {
    let s = JiraSetup::jira().await;
    let alice = s.as_user("alice", "alice");
    for (body, expected) in [
        (json!({}), "is required"),
        (json!({"tokenDescription": ""}), "must not be empty"),
        (json!({"tokenDescription": "   "}), "must not be empty"),
        (json!({"tokenDescription": "x".repeat(256)}), "at most 255"),
        (json!({"tokenDescription": 42}), "must be a string"),
        (
            json!({"tokenDescription": "line\nbreak"}),
            "control characters",
        ),
    ] {
        let (status, v) = alice.post("/user/token", body.clone()).await;
        assert_eq!(status, 400, "{body}");
        assert!(
            field_error(&v, "tokenDescription").contains(expected),
            "{body}: {v}"
        );
    }
    let (status, _) = alice
        .post("/user/token", json!({"tokenDescription": "ü".repeat(255)}))
        .await;
    assert_eq!(status, 200, "255 characters (not bytes) are fine");
}

#[tokio::test]
async fn bad_bodies_get_400_415_413() {
    let s = JiraSetup::jira().await;
    let alice = s.as_user("alice", "alice");
    let send = |body: String, ctype: Option<&'static str>| {
        let mut r = alice.api(Method::POST, "/user/token").body(body);
        if let Some(c) = ctype {
            r = r.header("content-type", c);
        }
        r.json_answer()
    };
    let json_type = Some("application/json");
    let (status, v) = send("{not json".into(), json_type).await;
    assert_eq!(status, 400);
    assert!(error_message(&v).contains("not valid JSON"));
    assert_eq!(send("[1,2]".into(), json_type).await.0, 400);
    let (status, v) = send(
        "{\"tokenDescription\":\"x\",\"admin\":true}".into(),
        json_type,
    )
    .await;
    assert_eq!(status, 400);
    assert!(field_error(&v, "admin").contains("unknown field"));
    let x = "{\"tokenDescription\":\"x\"}";
    assert_eq!(send(x.into(), Some("text/plain")).await.0, 415);
    assert_eq!(send(x.into(), None).await.0, 415);
    assert_eq!(
        send(x.into(), Some("application/json; charset=UTF-8"))
            .await
            .0,
        200
    );
    let big = format!("{{\"tokenDescription\":\"{}\"}}", "x".repeat(70_000));
    let (status, v) = send(big, json_type).await;
    assert_eq!(status, 413);
    assert!(error_message(&v).contains("65536"));
}

/// A client still sending a body too large for the API reads the 413, not a
/// reset connection, and may go on using the connection: the rest of the
/// body (up to 1 MiB) is read and dropped before the answer.
#[tokio::test]
async fn an_oversized_body_still_being_sent_gets_its_413_and_the_connection_stays() {
    use base64::Engine;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let s = JiraSetup::jira().await;
    let auth = base64::engine::general_purpose::STANDARD.encode("alice:alice");
    let body = format!("{{\"tokenDescription\":\"{}\"}}", "x".repeat(300_000));
    let mut c = tokio::net::TcpStream::connect(s.gw.addr()).await.unwrap();
    let head = format!(
        "POST /rest/de.resolution.apitokenauth/latest/user/token HTTP/1.1\r\nHost: jira\r\n\
         Authorization: Basic {auth}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    c.write_all(head.as_bytes()).await.unwrap();
    let (first, rest) = body.as_bytes().split_at(1000);
    c.write_all(first).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    c.write_all(rest).await.unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    let read_until =
        |seen: &[u8], marker: &str| String::from_utf8_lossy(seen).matches(marker).count();
    for _ in 0..100 {
        if read_until(&seen, "HTTP/1.1 ") >= 1 && seen.ends_with(b"}") {
            break;
        }
        let n = tokio::time::timeout(std::time::Duration::from_secs(5), c.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(
            n > 0,
            "connection closed: {}",
            String::from_utf8_lossy(&seen)
        );
        seen.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&seen).to_string();
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    assert!(text.contains("65536"), "{text}");
    // The same connection answers the next request.
    c.write_all(b"GET /rest/api/2/serverInfo HTTP/1.1\r\nHost: jira\r\n\r\n")
        .await
        .unwrap();
    let n = tokio::time::timeout(std::time::Duration::from_secs(5), c.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert!(
        buf[..n].starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&buf[..n])
    );
}

/// A client that waits for `100 Continue` before an oversized body gets the
/// 413 at once, never an invitation to send what would be dropped.
#[tokio::test]
async fn an_oversized_body_behind_expect_100_continue_gets_413_without_continue() {
    use base64::Engine;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let s = JiraSetup::jira().await;
    let auth = base64::engine::general_purpose::STANDARD.encode("alice:alice");
    let mut c = tokio::net::TcpStream::connect(s.gw.addr()).await.unwrap();
    let head = format!(
        "POST /rest/de.resolution.apitokenauth/latest/user/token HTTP/1.1\r\nHost: jira\r\n\
         Authorization: Basic {auth}\r\nContent-Type: application/json\r\nContent-Length: 300000\r\n\
         Expect: 100-continue\r\n\r\n"
    );
    c.write_all(head.as_bytes()).await.unwrap();
    let mut buf = [0u8; 4096];
    let n = tokio::time::timeout(std::time::Duration::from_secs(5), c.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&buf[..n]);
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
}

#[tokio::test]
async fn validity_in_calendar_months_up_to_the_maximum() {
    let s = JiraSetup::jira().await;
    let alice = s.as_user("alice", "alice");
    let (status, v) = alice
        .post(
            "/user/token",
            json!({"tokenDescription": "a", "tokenValidityTimeInMonths": 12}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        v["tokenExpirationDateTimeMillis"],
        add_months(T0, 12).unwrap()
    );
    let (status, v) = alice
        .post(
            "/user/token",
            json!({"tokenDescription": "a", "tokenValidityTimeInMonths": 13}),
        )
        .await;
    assert_eq!(status, 400);
    assert!(
        field_error(&v, "tokenValidityTimeInMonths").contains("12 months"),
        "{v}"
    );
    for bad in [json!(0), json!(-1), json!(1.5), json!("3")] {
        let (status, v) = alice
            .post(
                "/user/token",
                json!({"tokenDescription": "a", "tokenValidityTimeInMonths": bad}),
            )
            .await;
        assert_eq!(status, 400, "{bad}");
        assert!(v["errors"]["tokenValidityTimeInMonths"].is_string());
    }
}

#[tokio::test]
async fn an_explicit_expiry_date_must_be_in_the_future_and_within_the_maximum() {
    let s = JiraSetup::jira().await;
    let alice = s.as_user("alice", "alice");
    let expiring = |at: &str| json!({"tokenDescription": "a", "tokenExpirationDateTime": at});
    let (status, v) = alice
        .post("/user/token", expiring("2027-01-15T08:30:00Z"))
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        v["tokenExpirationDateTimeMillis"],
        parse_expiry("2027-01-15T08:30:00Z").unwrap()
    );
    let (status, v) = alice
        .post("/user/token", expiring("2026-01-01T00:00:00Z"))
        .await;
    assert_eq!(status, 400);
    assert!(field_error(&v, "tokenExpirationDateTime").contains("future"));
    let (status, v) = alice.post("/user/token", expiring("2028-06-01")).await;
    assert_eq!(status, 400);
    assert!(field_error(&v, "tokenExpirationDateTime").contains("12 months"));
    let (status, _) = alice.post("/user/token", expiring("soon")).await;
    assert_eq!(status, 400);
    let (status, v) = alice
        .post(
            "/user/token",
            json!({"tokenDescription": "a", "tokenExpirationDateTime": "2027-01-15", "tokenValidityTimeInMonths": 1}),
        )
        .await;
    assert_eq!(status, 400);
    assert!(field_error(&v, "tokenExpirationDateTime").contains("not both"));
}

#[tokio::test]
async fn unlimited_maximum_and_zero_default_make_tokens_that_never_expire() {
    let s = JiraSetup::jira_with(|c| {
        c.tokens.max_validity_months = 0;
        c.tokens.default_validity_months = 0;
    })
    .await;
    let (status, v) = s
        .as_user("alice", "alice")
        .post("/user/token", json!({"tokenDescription": "forever"}))
        .await;
    assert_eq!(status, 200);
    assert_eq!(v["tokenExpirationDateTimeMillis"], 0);
    assert_eq!(v["tokenExpirationDateTime"], Value::Null);
    s.clock.advance_ms(100 * 365 * 24 * 3600 * 1000);
    let token = v["plainTextToken"].as_str().unwrap();
    assert_eq!(s.with_token(token).myself().await.status(), 200);
}

#[tokio::test]
async fn scope_is_read_write_by_default_read_only_on_request_or_when_forced() {
    let s = JiraSetup::jira().await;
    let alice = s.as_user("alice", "alice");
    let (_, v) = alice
        .post("/user/token", json!({"tokenDescription": "a"}))
        .await;
    assert_eq!(v["tokenScope"], 2);
    let (_, v) = alice
        .post(
            "/user/token",
            json!({"tokenDescription": "a", "tokenScope": 1}),
        )
        .await;
    assert_eq!(v["tokenScope"], 1);
    let (status, v) = alice
        .post(
            "/user/token",
            json!({"tokenDescription": "a", "tokenScope": 3}),
        )
        .await;
    assert_eq!(status, 400);
    assert!(v["errors"]["tokenScope"].is_string());

    let forced = JiraSetup::jira_with(|c| c.tokens.force_read_only = true).await;
    let (_, v) = forced
        .as_user("alice", "alice")
        .post(
            "/user/token",
            json!({"tokenDescription": "a", "tokenScope": 2}),
        )
        .await;
    assert_eq!(v["tokenScope"], 1);
}

#[tokio::test]
async fn only_admins_create_tokens_for_other_users() {
    let s = JiraSetup::jira().await;
    let (alice, admin) = (s.as_user("alice", "alice"), s.as_user("admin", "admin"));
    let (status, v) = alice
        .post(
            "/user/token",
            json!({"tokenDescription": "a", "tokenForUserKey": BOB_KEY}),
        )
        .await;
    assert_eq!(status, 403);
    assert!(error_message(&v).contains("administrators"));
    // Naming yourself is fine.
    let (status, _) = alice
        .post(
            "/user/token",
            json!({"tokenDescription": "a", "tokenForUserKey": ALICE_KEY}),
        )
        .await;
    assert_eq!(status, 200);
    let (status, v) = admin
        .post(
            "/user/token",
            json!({"tokenDescription": "for alice", "tokenForUserKey": ALICE_KEY}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(v["tokenForUserKey"], ALICE_KEY);
    let token = v["plainTextToken"].as_str().unwrap();
    // The token is alice's: it works as alice, with her username, and she sees it.
    let me: Value = s
        .as_user("alice", token)
        .myself()
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(me["name"], "alice");
    let (_, list) = alice.get("/user/token").await;
    assert!(
        list.as_array()
            .unwrap()
            .iter()
            .any(|t| t["description"] == "for alice")
    );
    let (status, v) = admin
        .post(
            "/user/token",
            json!({"tokenDescription": "x", "tokenForUserKey": "JIRAUSER99999"}),
        )
        .await;
    assert_eq!(status, 400);
    assert!(field_error(&v, "tokenForUserKey").contains("JIRAUSER99999"));
}

#[tokio::test]
async fn admins_creating_for_others_get_validity_cut_down_or_defaulted() {
    let s = JiraSetup::jira().await;
    let admin = s.as_user("admin", "admin");
    let (_, v) = admin.post("/user/token", json!({"tokenDescription": "x", "tokenForUserKey": ALICE_KEY, "tokenValidityTimeInMonths": 24})).await;
    assert_eq!(
        v["tokenExpirationDateTimeMillis"],
        add_months(T0, 12).unwrap()
    );
    let (_, v) = admin.post("/user/token", json!({"tokenDescription": "x", "tokenForUserKey": ALICE_KEY, "tokenExpirationDateTime": "2031-01-01T00:00:00Z"})).await;
    assert_eq!(
        v["tokenExpirationDateTimeMillis"],
        add_months(T0, 12).unwrap()
    );
    let (_, v) = admin
        .post(
            "/user/token",
            json!({"tokenDescription": "x", "tokenForUserKey": ALICE_KEY}),
        )
        .await;
    assert_eq!(
        v["tokenExpirationDateTimeMillis"],
        add_months(T0, 6).unwrap()
    );
    // For themselves, admins follow the user rules.
    let (status, _) = admin
        .post(
            "/user/token",
            json!({"tokenDescription": "x", "tokenValidityTimeInMonths": 24}),
        )
        .await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn one_token_more_than_the_maximum_per_user_is_403() {
    let s = JiraSetup::jira_with(|c| c.tokens.max_tokens_per_user = 2).await;
    let alice = s.as_user("alice", "alice");
    let body = json!({"tokenDescription": "a"});
    for _ in 0..2 {
        assert_eq!(alice.post("/user/token", body.clone()).await.0, 200);
    }
    let (status, v) = alice.post("/user/token", body.clone()).await;
    assert_eq!(status, 403);
    assert!(error_message(&v).contains("2 tokens, the maximum"), "{v}");
    assert_eq!(
        s.as_user("bob", "bob").post("/user/token", body).await.0,
        200,
        "per user"
    );
}

// ---- PATCH, GET, DELETE --------------------------------------------------------

#[tokio::test]
async fn the_owner_updates_a_description() {
    let s = JiraSetup::jira().await;
    let alice = s.as_user("alice", "alice");
    alice
        .post("/user/token", json!({"tokenDescription": "old"}))
        .await;
    let (status, v) = alice
        .patch("/user/token/1", json!({"tokenDescription": "new"}))
        .await;
    assert_eq!(status, 200);
    assert_eq!(v["description"], "new");
    assert_eq!(v["id"], 1);
    assert_eq!(keys(&v), LISTED_FIELDS);
    assert_eq!(
        s.as_user("bob", "bob")
            .patch("/user/token/1", json!({"tokenDescription": "mine"}))
            .await
            .0,
        404,
        "not the owner"
    );
    assert_eq!(
        alice
            .patch("/user/token/99", json!({"tokenDescription": "x"}))
            .await
            .0,
        404
    );
    let (status, v) = alice
        .patch("/user/token/abc", json!({"tokenDescription": "x"}))
        .await;
    assert_eq!(status, 400);
    assert!(field_error(&v, "id").contains("abc"));
    assert_eq!(
        alice
            .patch("/user/token/1", json!({"tokenDescription": ""}))
            .await
            .0,
        400
    );
    assert_eq!(
        alice
            .patch(
                "/user/token/1",
                json!({"tokenDescription": "x", "tokenScope": 1})
            )
            .await
            .0,
        400
    );
}

#[tokio::test]
async fn the_list_has_the_callers_tokens_by_id_with_or_without_a_trailing_slash() {
    let s = JiraSetup::jira().await;
    let alice = s.as_user("alice", "alice");
    alice
        .post("/user/token", json!({"tokenDescription": "first"}))
        .await;
    s.as_user("bob", "bob")
        .post("/user/token", json!({"tokenDescription": "bob's"}))
        .await;
    alice
        .post(
            "/user/token",
            json!({"tokenDescription": "second", "tokenScope": 1}),
        )
        .await;
    for path in ["/user/token", "/user/token/"] {
        let (status, v) = alice.get(path).await;
        assert_eq!(status, 200);
        let list = v.as_array().unwrap();
        assert_eq!(list.len(), 2);
        assert_eq!(list[0]["id"], 1);
        assert_eq!(list[1]["id"], 3);
        assert_eq!(list[1]["tokenScope"], 1);
        assert_eq!(keys(&list[0]), LISTED_FIELDS);
        assert_eq!(list[0]["created"], T0);
        assert_eq!(list[0]["lastAccessed"], 0);
    }
}

#[tokio::test]
async fn last_accessed_moves_when_a_token_is_used() {
    let s = JiraSetup::jira().await;
    let token = s.token_for("alice").await;
    s.clock.advance_ms(5_000);
    assert_eq!(s.with_token(&token).myself().await.status(), 200);
    let (_, v) = s.as_user("alice", "alice").get("/user/token").await;
    assert_eq!(v[0]["lastAccessed"], T0 + 5_000);
}

#[tokio::test]
async fn owners_and_admins_delete_tokens_others_get_404() {
    let s = JiraSetup::jira().await;
    let alice = s.as_user("alice", "alice");
    let token = s.token_for("alice").await;
    s.token_for("alice").await;
    assert_eq!(s.as_user("bob", "bob").delete("/user/token/1").await.0, 404);
    assert_eq!(
        alice.delete("/user/token/1").await,
        (StatusCode::OK, json!(true))
    );
    assert_eq!(
        s.with_token(&token).myself().await.status(),
        401,
        "a deleted token stops working at once"
    );
    assert_eq!(alice.delete("/user/token/1").await.0, 404, "already gone");
    assert_eq!(
        s.as_user("admin", "admin").delete("/user/token/2").await,
        (StatusCode::OK, json!(true))
    );
    assert_eq!(alice.delete("/user/token/x").await.0, 400);
}

#[tokio::test]
async fn delete_all_for_a_user_is_admin_only_and_counts() {
    let s = JiraSetup::jira().await;
    for _ in 0..3 {
        s.token_for("alice").await;
    }
    let bobs = s.token_for("bob").await;
    let all_of_alices = format!("/user/token/deleteAllFor/{ALICE_KEY}");
    let (status, _) = s.as_user("alice", "alice").delete(&all_of_alices).await;
    assert_eq!(status, 403);
    let admin = s.as_user("admin", "admin");
    assert_eq!(
        admin.delete(&all_of_alices).await,
        (StatusCode::OK, json!(3))
    );
    assert_eq!(
        admin.delete(&all_of_alices).await,
        (StatusCode::OK, json!(0))
    );
    let (_, list) = s.as_user("alice", "alice").get("/user/token").await;
    assert_eq!(list, json!([]));
    assert_eq!(
        s.with_token(&bobs).myself().await.status(),
        200,
        "other users keep theirs"
    );
}

// ---- tokensByFilter --------------------------------------------------------------

#[tokio::test]
async fn tokens_by_filter_is_admin_only() {
    let s = JiraSetup::jira().await;
    let all = "/user/tokensByFilter?notValidAfter=-1";
    assert_eq!(s.as_user("alice", "alice").get(all).await.0, 403);
    assert_eq!(s.as_user("admin", "admin").get(all).await.0, 200);
}

/// Four tokens behind a public URL, in id order:
/// 1. alice's "Shell Script", 1 month, read-write;
/// 2. alice's "Automation Script", 3 months, read-only;
/// 3. bob's "nightly build", 2 months, read-write;
/// 4. admin's "admin's", 12 months, read-write.
async fn four_tokens() -> JiraSetup {
    let s = JiraSetup::jira_with(|c| {
        c.server.public_url = "https://jira.example.com/".into();
    })
    .await;
    for (user, months, scope, desc) in [
        ("alice", 1, 2, "Shell Script"),
        ("alice", 3, 1, "Automation Script"),
        ("bob", 2, 2, "nightly build"),
        ("admin", 12, 2, "admin's"),
    ] {
        let (status, _) = s.as_user(user, user).post("/user/token", json!({"tokenDescription": desc, "tokenValidityTimeInMonths": months, "tokenScope": scope})).await;
        assert_eq!(status, 200);
    }
    s
}

/// The ids on a page of tokensByFilter.
fn ids(v: &Value) -> Vec<u64> {
    v["content"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_u64().unwrap())
        .collect()
}

/// The next page's link as the public URL spells it.
fn filter_link(query: &str) -> String {
    format!("https://jira.example.com{API}/user/tokensByFilter?{query}")
}

#[tokio::test]
async fn tokens_by_filter_lists_every_token_with_the_documented_fields() {
    let s = four_tokens().await;
    let (status, v) = s
        .as_user("admin", "admin")
        .get("/user/tokensByFilter?notValidAfter=-1")
        .await;
    assert_eq!(status, 200);
    assert_eq!(v["total"], 4);
    assert_eq!(v["totalPages"], 1);
    assert_eq!(v["limit"], 50);
    assert_eq!(v["offset"], 0);
    assert_eq!(v["currentPage"], 0);
    assert_eq!(
        v["paginationLinks"],
        json!({"baseUrl": "https://jira.example.com", "nextPage": "", "previousPage": ""})
    );
    assert_eq!(
        keys(&v["content"][0]),
        [
            "allowedIps",
            "created",
            "description",
            "id",
            "lastAccessed",
            "lastAccessedFrom",
            "tokenCreatedByUserKey",
            "tokenForUserKey",
            "tokenScope",
            "validUntil"
        ]
    );
    assert_eq!(ids(&v), [1, 2, 3, 4]);
}

#[tokio::test]
async fn not_valid_after_keeps_the_tokens_that_expire_by_then() {
    let s = four_tokens().await;
    let cutoff = add_months(T0, 2).unwrap();
    let (_, v) = s
        .as_user("admin", "admin")
        .get(&format!("/user/tokensByFilter?notValidAfter={cutoff}"))
        .await;
    assert_eq!(ids(&v), [1, 3]);
}

#[tokio::test]
async fn pages_link_to_their_neighbours_keeping_the_filters() {
    let s = four_tokens().await;
    let admin = s.as_user("admin", "admin");
    let cutoff = add_months(T0, 2).unwrap();
    let (_, v) = admin
        .get(&format!(
            "/user/tokensByFilter?page=0&limit=1&notValidAfter={cutoff}"
        ))
        .await;
    assert_eq!(ids(&v), [1]);
    assert_eq!(v["total"], 2);
    assert_eq!(v["totalPages"], 2);
    assert_eq!(
        v["paginationLinks"]["nextPage"].as_str().unwrap(),
        filter_link(&format!("page=1&limit=1&notValidAfter={cutoff}"))
    );
    assert_eq!(v["paginationLinks"]["previousPage"], "");
    let (_, v) = admin
        .get(&format!(
            "/user/tokensByFilter?page=1&limit=1&notValidAfter={cutoff}"
        ))
        .await;
    assert_eq!(ids(&v), [3]);
    assert_eq!(v["offset"], 1);
    assert_eq!(v["paginationLinks"]["nextPage"], "");
    assert!(
        v["paginationLinks"]["previousPage"]
            .as_str()
            .unwrap()
            .contains("page=0&limit=1")
    );
    // Without notValidAfter: the user and description filters stay in the link.
    let (_, v) = admin
        .get(&format!(
            "/user/tokensByFilter?limit=1&userFilter={ALICE_KEY}&descriptionFilter=Script"
        ))
        .await;
    assert_eq!(v["total"], 2);
    assert_eq!(
        v["paginationLinks"]["nextPage"],
        filter_link(&format!(
            "page=1&limit=1&userFilter={ALICE_KEY}&descriptionFilter=Script"
        ))
    );
}

#[tokio::test]
async fn user_description_and_scope_filters_narrow_the_list() {
    let s = four_tokens().await;
    let admin = s.as_user("admin", "admin");
    // userFilter (repeatable), descriptionFilter (case-insensitive substring), tokenScope.
    let (_, v) = admin
        .get(&format!(
            "/user/tokensByFilter?notValidAfter=-1&userFilter={ALICE_KEY}&userFilter={BOB_KEY}"
        ))
        .await;
    assert_eq!(ids(&v), [1, 2, 3]);
    let (_, v) = admin
        .get("/user/tokensByFilter?notValidAfter=-1&descriptionFilter=SCRIPT")
        .await;
    assert_eq!(ids(&v), [1, 2]);
    let (_, v) = admin
        .get("/user/tokensByFilter?notValidAfter=-1&tokenScope=1")
        .await;
    assert_eq!(ids(&v), [2]);
    let alices = format!("/user/tokensByFilter?limit=1&notValidAfter=-1&userFilter={ALICE_KEY}");
    let (_, v) = admin
        .get(&format!("{alices}&descriptionFilter=n%20s"))
        .await;
    assert_eq!(v["total"], 1);
    assert!(
        v["paginationLinks"]["baseUrl"]
            .as_str()
            .unwrap()
            .starts_with("https://")
    );
    let (_, v) = admin
        .get(&format!("{alices}&descriptionFilter=Script&tokenScope=2"))
        .await;
    assert_eq!(v["total"], 1);
    let (_, v) = admin
        .get(&format!("{alices}&descriptionFilter=script%20"))
        .await;
    assert_eq!(v["total"], 0);
}

#[tokio::test]
async fn tokens_by_filter_caps_the_limit_and_rejects_bad_parameters() {
    let s = JiraSetup::jira().await;
    let admin = s.as_user("admin", "admin");
    let (_, v) = admin
        .get("/user/tokensByFilter?notValidAfter=-1&limit=500")
        .await;
    assert_eq!(v["limit"], 50);
    for (query, field) in [
        ("limit=0", "limit"),
        ("page=-1", "page"),
        ("notValidAfter=yesterday", "notValidAfter"),
        ("notValidAfter=-2", "notValidAfter"),
        ("tokenScope=7", "tokenScope"),
        ("notvalidafter=1", "notvalidafter"),
    ] {
        let (status, v) = admin.get(&format!("/user/tokensByFilter?{query}")).await;
        assert_eq!(status, 400, "{query}");
        assert!(v["errors"][field].is_string(), "{query}: {v}");
    }
}

#[tokio::test]
async fn base_url_comes_from_the_request_without_public_url() {
    let s = JiraSetup::jira().await;
    let (_, v) = s
        .as_user("admin", "admin")
        .get("/user/tokensByFilter?notValidAfter=-1")
        .await;
    assert_eq!(v["paginationLinks"]["baseUrl"], s.base);
}

// ---- authTest, failedLogins, routing --------------------------------------------

#[tokio::test]
async fn auth_test_reports_success_and_failure_for_get_post_put() {
    let s = JiraSetup::jira().await;
    let token = s.token_for("alice").await;
    for method in [Method::GET, Method::POST, Method::PUT] {
        let (_, ok) = s
            .with_token(&token)
            .api(method.clone(), "/user/authTest")
            .json_answer()
            .await;
        assert_eq!(ok, json!({"isSuccessfulAuthentication": true}), "{method}");
        let (_, ok) = s
            .as_user("bob", "bob")
            .api(method.clone(), "/user/authTest")
            .json_answer()
            .await;
        assert_eq!(ok["isSuccessfulAuthentication"], true);
    }
    let (status, v) = s.with_token(UNKNOWN_TOKEN).get("/user/authTest").await;
    assert_eq!(status, 200);
    assert_eq!(v["isSuccessfulAuthentication"], false);
    assert!(
        v["authenticationFailureDetails"]
            .as_str()
            .unwrap()
            .contains("invalid")
    );
    let (_, v) = s.anonymous().get("/user/authTest").await;
    assert_eq!(v["isSuccessfulAuthentication"], false);
    assert_eq!(s.anonymous().delete("/user/authTest").await.0, 405);
}

#[tokio::test]
async fn an_admin_clears_a_lockout_by_user_key() {
    let s = JiraSetup::jira().await;
    for _ in 0..3 {
        let (status, _) = s.as_user("alice", "wrong").get("/user/token").await;
        assert_eq!(status, 401);
    }
    let alice = s.as_user("alice", "alice");
    let resp = alice.api(Method::GET, "/user/token").answer().await;
    assert_eq!(resp.status(), 403, "locked out after 3 failures");
    assert_eq!(resp.headers()["x-authentication-denied-reason"], "LOCKED");
    assert!(resp.headers().contains_key("retry-after"));
    let clear = format!("/admin/failedLogins/{ALICE_KEY}");
    assert_eq!(s.as_user("bob", "bob").delete(&clear).await.0, 403);
    assert_eq!(s.as_user("admin", "admin").delete(&clear).await.0, 204);
    assert_eq!(alice.get("/user/token").await.0, 200);
}

#[tokio::test]
async fn routes_methods_and_versions() {
    let s = JiraSetup::jira().await;
    let alice = s.as_user("alice", "alice");
    let resp = alice.api(Method::PUT, "/user/token").answer().await;
    assert_eq!(resp.status(), 405);
    assert_eq!(resp.headers()["allow"], "GET, POST");
    let resp = alice.api(Method::GET, "/user/token/1").answer().await;
    assert_eq!(resp.status(), 405);
    assert_eq!(resp.headers()["allow"], "PATCH, DELETE");
    for path in ["/nothing", "/user", "/user/token/1/extra"] {
        let resp = alice.api(Method::GET, path).answer().await;
        assert_eq!(resp.status(), 404, "{path}");
        assert!(
            resp.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("application/json")
        );
    }
    let resp = alice
        .fetch("/rest/de.resolution.apitokenauth/1.0/user/token")
        .await;
    assert_eq!(resp.status(), 200, "1.0 works like latest");
    let resp = s
        .anonymous()
        .fetch("/rest/de.resolution.apitokenauth/2.0/user/token")
        .await;
    assert_eq!(resp.status(), 404);
    // Nothing under the API root reaches the upstream, whatever the spelling.
    s.sim.clear_seen();
    for path in [
        "/rest/de.resolution.apitokenauth/latest/x",
        "/REST/de.resolution.apitokenauth/latest/user/token",
        "//rest/de.resolution.apitokenauth/latest/user/token",
        "/rest/de.resolution.apitokenauth%2Flatest/user/token",
    ] {
        assert_eq!(alice.fetch(path).await.status(), 404, "{path}");
    }
    assert!(s.sim.seen().is_empty(), "{:?}", s.sim.seen());
}

#[tokio::test]
async fn callers_must_authenticate() {
    let s = JiraSetup::jira().await;
    let resp = s.anonymous().api(Method::GET, "/user/token").answer().await;
    assert_eq!(resp.status(), 401);
    assert!(
        resp.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .contains("Basic")
    );
    assert_eq!(s.as_user("alice", "wrong").get("/user/token").await.0, 401);
    assert_eq!(
        s.with_authorization("Negotiate abc")
            .get("/user/token")
            .await
            .0,
        401
    );
}

#[tokio::test]
async fn token_callers_use_the_api_with_bearer_or_basic() {
    let s = JiraSetup::jira().await;
    let token = s.token_for("alice").await;
    assert_eq!(s.with_token(&token).get("/user/token").await.0, 200);
    assert_eq!(s.as_user("alice", &token).get("/user/token").await.0, 200);
    assert_eq!(
        s.as_user("bob", &token).get("/user/token").await.0,
        401,
        "wrong user"
    );
    // An admin with a token is an admin (group membership via the lookup account).
    let admin_token = s.token_for("admin").await;
    let all = "/user/tokensByFilter?notValidAfter=-1";
    assert_eq!(s.with_token(&admin_token).get(all).await.0, 200);
    assert_eq!(s.with_token(&token).get(all).await.0, 403);
}

#[tokio::test]
async fn admin_user_keys_make_admins_without_the_upstream() {
    let s = JiraSetup::jira_with(|c| c.auth.admin_user_keys = vec![BOB_KEY.into()]).await;
    assert_eq!(
        s.as_user("bob", "bob").get("/user/tokensByFilter").await.0,
        200
    );
    assert_eq!(
        s.as_user("alice", "alice")
            .get("/user/tokensByFilter")
            .await
            .0,
        403
    );
}

#[tokio::test]
async fn an_upstream_captcha_is_passed_on_as_403() {
    let mut sim = tokengate::demo::sim::SimConfig::jira();
    sim.captcha_after = Some(1);
    let s = JiraSetup::with(sim, |c| c.auth.max_failed_attempts = 0).await;
    assert_eq!(s.as_user("alice", "wrong").get("/user/token").await.0, 401);
    let resp = s
        .as_user("alice", "alice")
        .api(Method::GET, "/user/token")
        .answer()
        .await;
    assert_eq!(resp.status(), 403);
    assert!(
        resp.headers()["x-authentication-denied-reason"]
            .to_str()
            .unwrap()
            .starts_with("CAPTCHA_CHALLENGE")
    );
}

// ---- Confluence ------------------------------------------------------------------

#[tokio::test]
async fn confluence_checks_passwords_admins_and_user_keys_with_its_own_endpoints() {
    let s = JiraSetup::confluence().await;
    let (alice, admin) = (s.as_user("alice", "alice"), s.as_user("admin", "admin"));
    let current_user = "/rest/api/user/current";
    let (status, v) = alice
        .post("/user/token", json!({"tokenDescription": "c"}))
        .await;
    assert_eq!(status, 200);
    assert_eq!(v["tokenForUserKey"], ALICE_KEY);
    let token = v["plainTextToken"].as_str().unwrap();
    let me: Value = s
        .with_token(token)
        .fetch(current_user)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(me["username"], "alice");
    assert_eq!(s.as_user("alice", "wrong").get("/user/token").await.0, 401);
    // Admin through confluence-administrators membership.
    assert_eq!(admin.get("/user/tokensByFilter").await.0, 200);
    assert_eq!(alice.get("/user/tokensByFilter").await.0, 403);
    let (status, v) = admin
        .post(
            "/user/token",
            json!({"tokenDescription": "for bob", "tokenForUserKey": BOB_KEY}),
        )
        .await;
    assert_eq!(status, 200);
    let me: Value = s
        .with_token(v["plainTextToken"].as_str().unwrap())
        .fetch(current_user)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(me["username"], "bob");
    let seen: Vec<String> = s.sim.seen().iter().map(|r| r.target.clone()).collect();
    assert!(
        seen.iter()
            .any(|t| t.starts_with("/rest/api/user/memberof?key=")),
        "{seen:?}"
    );
    assert!(
        seen.iter().any(|t| t.starts_with("/rest/api/user?key=")),
        "{seen:?}"
    );
}
