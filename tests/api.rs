//! The management API of SPEC §4, one test per rule, against the simulated
//! Jira (and Confluence where the products differ).

mod common;

use common::*;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokengate::api::validity::{add_months, parse_expiry};

const ALICE_KEY: &str = "JIRAUSER10100";
const BOB_KEY: &str = "JIRAUSER10200";

async fn post(s: &JiraSetup, user: &str, pw: &str, body: Value) -> (StatusCode, Value) {
    let resp = s
        .http
        .post(s.api("/user/token"))
        .basic_auth(user, Some(pw))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

async fn get(s: &JiraSetup, path: &str, user: &str, pw: &str) -> (StatusCode, Value) {
    let resp = s
        .http
        .get(s.api(path))
        .basic_auth(user, Some(pw))
        .send()
        .await
        .unwrap();
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

fn field_error<'a>(body: &'a Value, field: &str) -> &'a str {
    body["errors"][field]
        .as_str()
        .unwrap_or_else(|| panic!("no error for {field}: {body}"))
}

// ---- POST /user/token -------------------------------------------------------

#[tokio::test]
async fn create_returns_the_token_once_with_the_documented_fields() {
    let s = JiraSetup::jira().await;
    let (status, v) = post(
        &s,
        "alice",
        "alice",
        json!({"tokenDescription": "CI pipeline"}),
    )
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
    let me = s
        .http
        .get(s.url("/rest/api/2/myself"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(me.json::<Value>().await.unwrap()["name"], "alice");
    let (_, list) = get(&s, "/user/token", "alice", "alice").await;
    assert!(!list.to_string().contains(token));
}

#[tokio::test]
async fn description_is_required_and_one_to_255_characters() {
    let s = JiraSetup::jira().await;
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
        let (status, v) = post(&s, "alice", "alice", body.clone()).await;
        assert_eq!(status, 400, "{body}");
        assert!(
            field_error(&v, "tokenDescription").contains(expected),
            "{body}: {v}"
        );
    }
    let (status, _) = post(
        &s,
        "alice",
        "alice",
        json!({"tokenDescription": "ü".repeat(255)}),
    )
    .await;
    assert_eq!(status, 200, "255 characters (not bytes) are fine");
}

#[tokio::test]
async fn bad_bodies_get_400_415_413() {
    let s = JiraSetup::jira().await;
    let send = |body: &'static str, ctype: Option<&'static str>| {
        let mut r = s
            .http
            .post(s.api("/user/token"))
            .basic_auth("alice", Some("alice"))
            .body(body);
        if let Some(c) = ctype {
            r = r.header("content-type", c);
        }
        r.send()
    };
    let resp = send("{not json", Some("application/json")).await.unwrap();
    assert_eq!(resp.status(), 400);
    let v: Value = resp.json().await.unwrap();
    assert!(
        v["errorMessages"][0]
            .as_str()
            .unwrap()
            .contains("not valid JSON")
    );
    assert_eq!(
        send("[1,2]", Some("application/json"))
            .await
            .unwrap()
            .status(),
        400
    );
    let resp = send(
        "{\"tokenDescription\":\"x\",\"admin\":true}",
        Some("application/json"),
    )
    .await
    .unwrap();
    assert_eq!(resp.status(), 400);
    assert!(field_error(&resp.json().await.unwrap(), "admin").contains("unknown field"));
    assert_eq!(
        send("{\"tokenDescription\":\"x\"}", Some("text/plain"))
            .await
            .unwrap()
            .status(),
        415
    );
    assert_eq!(
        send("{\"tokenDescription\":\"x\"}", None)
            .await
            .unwrap()
            .status(),
        415
    );
    assert_eq!(
        send(
            "{\"tokenDescription\":\"x\"}",
            Some("application/json; charset=UTF-8")
        )
        .await
        .unwrap()
        .status(),
        200
    );
    let big = format!("{{\"tokenDescription\":\"{}\"}}", "x".repeat(70_000));
    let resp = s
        .http
        .post(s.api("/user/token"))
        .basic_auth("alice", Some("alice"))
        .header("content-type", "application/json")
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 413);
    let v: Value = resp.json().await.unwrap();
    assert!(v["errorMessages"][0].as_str().unwrap().contains("65536"));
}

#[tokio::test]
async fn validity_in_calendar_months_up_to_the_maximum() {
    let s = JiraSetup::jira().await;
    let (status, v) = post(
        &s,
        "alice",
        "alice",
        json!({"tokenDescription": "a", "tokenValidityTimeInMonths": 12}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        v["tokenExpirationDateTimeMillis"],
        add_months(T0, 12).unwrap()
    );
    let (status, v) = post(
        &s,
        "alice",
        "alice",
        json!({"tokenDescription": "a", "tokenValidityTimeInMonths": 13}),
    )
    .await;
    assert_eq!(status, 400);
    assert!(
        field_error(&v, "tokenValidityTimeInMonths").contains("12 months"),
        "{v}"
    );
    for bad in [json!(0), json!(-1), json!(1.5), json!("3")] {
        let (status, v) = post(
            &s,
            "alice",
            "alice",
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
    let (status, v) = post(
        &s,
        "alice",
        "alice",
        json!({"tokenDescription": "a", "tokenExpirationDateTime": "2027-01-15T08:30:00Z"}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        v["tokenExpirationDateTimeMillis"],
        parse_expiry("2027-01-15T08:30:00Z").unwrap()
    );
    let (status, v) = post(
        &s,
        "alice",
        "alice",
        json!({"tokenDescription": "a", "tokenExpirationDateTime": "2026-01-01T00:00:00Z"}),
    )
    .await;
    assert_eq!(status, 400);
    assert!(field_error(&v, "tokenExpirationDateTime").contains("future"));
    let (status, v) = post(
        &s,
        "alice",
        "alice",
        json!({"tokenDescription": "a", "tokenExpirationDateTime": "2028-06-01"}),
    )
    .await;
    assert_eq!(status, 400);
    assert!(field_error(&v, "tokenExpirationDateTime").contains("12 months"));
    let (status, _) = post(
        &s,
        "alice",
        "alice",
        json!({"tokenDescription": "a", "tokenExpirationDateTime": "soon"}),
    )
    .await;
    assert_eq!(status, 400);
    let (status, v) = post(
        &s,
        "alice",
        "alice",
        json!({"tokenDescription": "a", "tokenExpirationDateTime": "2027-01-15", "tokenValidityTimeInMonths": 1}),
    )
    .await;
    assert_eq!(status, 400);
    assert!(field_error(&v, "tokenExpirationDateTime").contains("not both"));
}

#[tokio::test]
async fn unlimited_maximum_and_zero_default_make_tokens_that_never_expire() {
    let s = JiraSetup::with(tokengate::demo::sim::SimConfig::jira(), |c| {
        c.tokens.max_validity_months = 0;
        c.tokens.default_validity_months = 0;
    })
    .await;
    let (status, v) = post(&s, "alice", "alice", json!({"tokenDescription": "forever"})).await;
    assert_eq!(status, 200);
    assert_eq!(v["tokenExpirationDateTimeMillis"], 0);
    assert_eq!(v["tokenExpirationDateTime"], Value::Null);
    s.clock.advance_ms(100 * 365 * 24 * 3600 * 1000);
    let token = v["plainTextToken"].as_str().unwrap();
    let me = s
        .http
        .get(s.url("/rest/api/2/myself"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), 200);
}

#[tokio::test]
async fn scope_is_read_write_by_default_read_only_on_request_or_when_forced() {
    let s = JiraSetup::jira().await;
    let (_, v) = post(&s, "alice", "alice", json!({"tokenDescription": "a"})).await;
    assert_eq!(v["tokenScope"], 2);
    let (_, v) = post(
        &s,
        "alice",
        "alice",
        json!({"tokenDescription": "a", "tokenScope": 1}),
    )
    .await;
    assert_eq!(v["tokenScope"], 1);
    let (status, v) = post(
        &s,
        "alice",
        "alice",
        json!({"tokenDescription": "a", "tokenScope": 3}),
    )
    .await;
    assert_eq!(status, 400);
    assert!(v["errors"]["tokenScope"].is_string());

    let forced = JiraSetup::with(tokengate::demo::sim::SimConfig::jira(), |c| {
        c.tokens.force_read_only = true
    })
    .await;
    let (_, v) = post(
        &forced,
        "alice",
        "alice",
        json!({"tokenDescription": "a", "tokenScope": 2}),
    )
    .await;
    assert_eq!(v["tokenScope"], 1);
}

#[tokio::test]
async fn only_admins_create_tokens_for_other_users() {
    let s = JiraSetup::jira().await;
    let (status, v) = post(
        &s,
        "alice",
        "alice",
        json!({"tokenDescription": "a", "tokenForUserKey": BOB_KEY}),
    )
    .await;
    assert_eq!(status, 403);
    assert!(
        v["errorMessages"][0]
            .as_str()
            .unwrap()
            .contains("administrators")
    );
    // Naming yourself is fine.
    let (status, _) = post(
        &s,
        "alice",
        "alice",
        json!({"tokenDescription": "a", "tokenForUserKey": ALICE_KEY}),
    )
    .await;
    assert_eq!(status, 200);
    let (status, v) = post(
        &s,
        "admin",
        "admin",
        json!({"tokenDescription": "for alice", "tokenForUserKey": ALICE_KEY}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(v["tokenForUserKey"], ALICE_KEY);
    let token = v["plainTextToken"].as_str().unwrap();
    // The token is alice's: it works as alice, with her username, and she sees it.
    let me: Value = s
        .http
        .get(s.url("/rest/api/2/myself"))
        .basic_auth("alice", Some(token))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me["name"], "alice");
    let (_, list) = get(&s, "/user/token", "alice", "alice").await;
    assert!(
        list.as_array()
            .unwrap()
            .iter()
            .any(|t| t["description"] == "for alice")
    );
    let (status, v) = post(
        &s,
        "admin",
        "admin",
        json!({"tokenDescription": "x", "tokenForUserKey": "JIRAUSER99999"}),
    )
    .await;
    assert_eq!(status, 400);
    assert!(field_error(&v, "tokenForUserKey").contains("JIRAUSER99999"));
}

#[tokio::test]
async fn admins_creating_for_others_get_validity_cut_down_or_defaulted() {
    let s = JiraSetup::jira().await;
    let (_, v) = post(&s, "admin", "admin", json!({"tokenDescription": "x", "tokenForUserKey": ALICE_KEY, "tokenValidityTimeInMonths": 24})).await;
    assert_eq!(
        v["tokenExpirationDateTimeMillis"],
        add_months(T0, 12).unwrap()
    );
    let (_, v) = post(&s, "admin", "admin", json!({"tokenDescription": "x", "tokenForUserKey": ALICE_KEY, "tokenExpirationDateTime": "2031-01-01T00:00:00Z"})).await;
    assert_eq!(
        v["tokenExpirationDateTimeMillis"],
        add_months(T0, 12).unwrap()
    );
    let (_, v) = post(
        &s,
        "admin",
        "admin",
        json!({"tokenDescription": "x", "tokenForUserKey": ALICE_KEY}),
    )
    .await;
    assert_eq!(
        v["tokenExpirationDateTimeMillis"],
        add_months(T0, 6).unwrap()
    );
    // For themselves, admins follow the user rules.
    let (status, _) = post(
        &s,
        "admin",
        "admin",
        json!({"tokenDescription": "x", "tokenValidityTimeInMonths": 24}),
    )
    .await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn one_token_more_than_the_maximum_per_user_is_403() {
    let s = JiraSetup::with(tokengate::demo::sim::SimConfig::jira(), |c| {
        c.tokens.max_tokens_per_user = 2
    })
    .await;
    for _ in 0..2 {
        assert_eq!(
            post(&s, "alice", "alice", json!({"tokenDescription": "a"}))
                .await
                .0,
            200
        );
    }
    let (status, v) = post(&s, "alice", "alice", json!({"tokenDescription": "a"})).await;
    assert_eq!(status, 403);
    assert!(
        v["errorMessages"][0]
            .as_str()
            .unwrap()
            .contains("2 tokens, the maximum"),
        "{v}"
    );
    assert_eq!(
        post(&s, "bob", "bob", json!({"tokenDescription": "a"}))
            .await
            .0,
        200,
        "per user"
    );
}

// ---- PATCH, GET, DELETE --------------------------------------------------------

async fn patch(s: &JiraSetup, id: &str, user: &str, pw: &str, body: Value) -> (StatusCode, Value) {
    let resp = s
        .http
        .patch(s.api(&format!("/user/token/{id}")))
        .basic_auth(user, Some(pw))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn the_owner_updates_a_description() {
    let s = JiraSetup::jira().await;
    post(&s, "alice", "alice", json!({"tokenDescription": "old"})).await;
    let (status, v) = patch(
        &s,
        "1",
        "alice",
        "alice",
        json!({"tokenDescription": "new"}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(v["description"], "new");
    assert_eq!(v["id"], 1);
    let keys: Vec<&String> = v.as_object().unwrap().keys().collect();
    assert_eq!(
        keys,
        [
            "created",
            "description",
            "id",
            "lastAccessed",
            "tokenScope",
            "validUntil"
        ]
    );
    assert_eq!(
        patch(&s, "1", "bob", "bob", json!({"tokenDescription": "mine"}))
            .await
            .0,
        404,
        "not the owner"
    );
    assert_eq!(
        patch(&s, "99", "alice", "alice", json!({"tokenDescription": "x"}))
            .await
            .0,
        404
    );
    let (status, v) = patch(
        &s,
        "abc",
        "alice",
        "alice",
        json!({"tokenDescription": "x"}),
    )
    .await;
    assert_eq!(status, 400);
    assert!(field_error(&v, "id").contains("abc"));
    assert_eq!(
        patch(&s, "1", "alice", "alice", json!({"tokenDescription": ""}))
            .await
            .0,
        400
    );
    assert_eq!(
        patch(
            &s,
            "1",
            "alice",
            "alice",
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
    post(&s, "alice", "alice", json!({"tokenDescription": "first"})).await;
    post(&s, "bob", "bob", json!({"tokenDescription": "bob's"})).await;
    post(
        &s,
        "alice",
        "alice",
        json!({"tokenDescription": "second", "tokenScope": 1}),
    )
    .await;
    for path in ["/user/token", "/user/token/"] {
        let (status, v) = get(&s, path, "alice", "alice").await;
        assert_eq!(status, 200);
        let list = v.as_array().unwrap();
        assert_eq!(list.len(), 2);
        assert_eq!(list[0]["id"], 1);
        assert_eq!(list[1]["id"], 3);
        assert_eq!(list[1]["tokenScope"], 1);
        let keys: Vec<&String> = list[0].as_object().unwrap().keys().collect();
        assert_eq!(
            keys,
            [
                "created",
                "description",
                "id",
                "lastAccessed",
                "tokenScope",
                "validUntil"
            ]
        );
        assert_eq!(list[0]["created"], T0);
        assert_eq!(list[0]["lastAccessed"], 0);
    }
}

#[tokio::test]
async fn last_accessed_moves_when_a_token_is_used() {
    let s = JiraSetup::jira().await;
    let token = s.token_for("alice").await;
    s.clock.advance_ms(5_000);
    let r = s
        .http
        .get(s.url("/rest/api/2/myself"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (_, v) = get(&s, "/user/token", "alice", "alice").await;
    assert_eq!(v[0]["lastAccessed"], T0 + 5_000);
}

async fn delete(s: &JiraSetup, path: &str, user: &str, pw: &str) -> (StatusCode, Value) {
    let resp = s
        .http
        .delete(s.api(path))
        .basic_auth(user, Some(pw))
        .send()
        .await
        .unwrap();
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn owners_and_admins_delete_tokens_others_get_404() {
    let s = JiraSetup::jira().await;
    let token = s.token_for("alice").await;
    s.token_for("alice").await;
    assert_eq!(delete(&s, "/user/token/1", "bob", "bob").await.0, 404);
    assert_eq!(
        delete(&s, "/user/token/1", "alice", "alice").await,
        (StatusCode::OK, json!(true))
    );
    let r = s
        .http
        .get(s.url("/rest/api/2/myself"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "a deleted token stops working at once");
    assert_eq!(
        delete(&s, "/user/token/1", "alice", "alice").await.0,
        404,
        "already gone"
    );
    assert_eq!(
        delete(&s, "/user/token/2", "admin", "admin").await,
        (StatusCode::OK, json!(true))
    );
    assert_eq!(delete(&s, "/user/token/x", "alice", "alice").await.0, 400);
}

#[tokio::test]
async fn delete_all_for_a_user_is_admin_only_and_counts() {
    let s = JiraSetup::jira().await;
    for _ in 0..3 {
        s.token_for("alice").await;
    }
    let bobs = s.token_for("bob").await;
    let (status, _) = delete(
        &s,
        &format!("/user/token/deleteAllFor/{ALICE_KEY}"),
        "alice",
        "alice",
    )
    .await;
    assert_eq!(status, 403);
    assert_eq!(
        delete(
            &s,
            &format!("/user/token/deleteAllFor/{ALICE_KEY}"),
            "admin",
            "admin"
        )
        .await,
        (StatusCode::OK, json!(3))
    );
    assert_eq!(
        delete(
            &s,
            &format!("/user/token/deleteAllFor/{ALICE_KEY}"),
            "admin",
            "admin"
        )
        .await,
        (StatusCode::OK, json!(0))
    );
    let (_, list) = get(&s, "/user/token", "alice", "alice").await;
    assert_eq!(list, json!([]));
    let r = s
        .http
        .get(s.url("/rest/api/2/myself"))
        .bearer_auth(&bobs)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "other users keep theirs");
}

// ---- tokensByFilter --------------------------------------------------------------

#[tokio::test]
async fn tokens_by_filter_is_admin_only() {
    let s = JiraSetup::jira().await;
    assert_eq!(
        get(
            &s,
            "/user/tokensByFilter?notValidAfter=-1",
            "alice",
            "alice"
        )
        .await
        .0,
        403
    );
    assert_eq!(
        get(
            &s,
            "/user/tokensByFilter?notValidAfter=-1",
            "admin",
            "admin"
        )
        .await
        .0,
        200
    );
}

#[tokio::test]
async fn tokens_by_filter_filters_pages_and_links_keep_the_filters() {
    let s = JiraSetup::with(tokengate::demo::sim::SimConfig::jira(), |c| {
        c.server.public_url = "https://jira.example.com/".into();
    })
    .await;
    for (user, months, scope, desc) in [
        ("alice", 1, 2, "Shell Script"),
        ("alice", 3, 1, "Automation Script"),
        ("bob", 2, 2, "nightly build"),
        ("admin", 12, 2, "admin's"),
    ] {
        let (status, _) = post(&s, user, user, json!({"tokenDescription": desc, "tokenValidityTimeInMonths": months, "tokenScope": scope})).await;
        assert_eq!(status, 200);
    }
    let (status, v) = get(
        &s,
        "/user/tokensByFilter?notValidAfter=-1",
        "admin",
        "admin",
    )
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
    let keys: Vec<&String> = v["content"][0].as_object().unwrap().keys().collect();
    assert_eq!(
        keys,
        [
            "created",
            "description",
            "id",
            "lastAccessed",
            "tokenCreatedByUserKey",
            "tokenForUserKey",
            "tokenScope",
            "validUntil"
        ]
    );
    let ids = |v: &Value| {
        v["content"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["id"].as_u64().unwrap())
            .collect::<Vec<_>>()
    };
    assert_eq!(ids(&v), [1, 2, 3, 4]);

    // notValidAfter: tokens whose validUntil ≤ it.
    let cutoff = add_months(T0, 2).unwrap();
    let (_, v) = get(
        &s,
        &format!("/user/tokensByFilter?notValidAfter={cutoff}"),
        "admin",
        "admin",
    )
    .await;
    assert_eq!(ids(&v), [1, 3]);
    // Paging keeps the filters in the links.
    let (_, v) = get(
        &s,
        &format!("/user/tokensByFilter?page=0&limit=1&notValidAfter={cutoff}"),
        "admin",
        "admin",
    )
    .await;
    assert_eq!(ids(&v), [1]);
    assert_eq!(v["total"], 2);
    assert_eq!(v["totalPages"], 2);
    let next = v["paginationLinks"]["nextPage"].as_str().unwrap();
    assert_eq!(
        next,
        format!(
            "https://jira.example.com/rest/de.resolution.apitokenauth/latest/user/tokensByFilter?page=1&limit=1&notValidAfter={cutoff}"
        )
    );
    assert_eq!(v["paginationLinks"]["previousPage"], "");
    let (_, v) = get(
        &s,
        &format!("/user/tokensByFilter?page=1&limit=1&notValidAfter={cutoff}"),
        "admin",
        "admin",
    )
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

    // userFilter (repeatable), descriptionFilter (case-insensitive substring), tokenScope.
    let (_, v) = get(
        &s,
        &format!(
            "/user/tokensByFilter?notValidAfter=-1&userFilter={ALICE_KEY}&userFilter={BOB_KEY}"
        ),
        "admin",
        "admin",
    )
    .await;
    assert_eq!(ids(&v), [1, 2, 3]);
    let (_, v) = get(
        &s,
        "/user/tokensByFilter?notValidAfter=-1&descriptionFilter=SCRIPT",
        "admin",
        "admin",
    )
    .await;
    assert_eq!(ids(&v), [1, 2]);
    let (_, v) = get(
        &s,
        "/user/tokensByFilter?notValidAfter=-1&tokenScope=1",
        "admin",
        "admin",
    )
    .await;
    assert_eq!(ids(&v), [2]);
    let (_, v) = get(&s, &format!("/user/tokensByFilter?limit=1&notValidAfter=-1&userFilter={ALICE_KEY}&descriptionFilter=n%20s"), "admin", "admin").await;
    assert_eq!(v["total"], 1);
    assert!(
        v["paginationLinks"]["baseUrl"]
            .as_str()
            .unwrap()
            .starts_with("https://")
    );
    let (_, v) = get(&s, &format!("/user/tokensByFilter?limit=1&notValidAfter=-1&userFilter={ALICE_KEY}&descriptionFilter=Script&tokenScope=2"), "admin", "admin").await;
    assert_eq!(v["total"], 1);
    let (_, v) = get(&s, &format!("/user/tokensByFilter?limit=1&notValidAfter=-1&userFilter={ALICE_KEY}&descriptionFilter=script%20"), "admin", "admin").await;
    assert_eq!(v["total"], 0);
    let (_, v) = get(
        &s,
        &format!("/user/tokensByFilter?limit=1&userFilter={ALICE_KEY}&descriptionFilter=Script"),
        "admin",
        "admin",
    )
    .await;
    assert_eq!(v["total"], 2);
    assert_eq!(
        v["paginationLinks"]["nextPage"],
        format!(
            "https://jira.example.com/rest/de.resolution.apitokenauth/latest/user/tokensByFilter?page=1&limit=1&userFilter={ALICE_KEY}&descriptionFilter=Script"
        )
    );
}

#[tokio::test]
async fn tokens_by_filter_caps_the_limit_and_rejects_bad_parameters() {
    let s = JiraSetup::jira().await;
    let (_, v) = get(
        &s,
        "/user/tokensByFilter?notValidAfter=-1&limit=500",
        "admin",
        "admin",
    )
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
        let (status, v) = get(
            &s,
            &format!("/user/tokensByFilter?{query}"),
            "admin",
            "admin",
        )
        .await;
        assert_eq!(status, 400, "{query}");
        assert!(v["errors"][field].is_string(), "{query}: {v}");
    }
}

#[tokio::test]
async fn base_url_comes_from_the_request_without_public_url() {
    let s = JiraSetup::jira().await;
    let (_, v) = get(
        &s,
        "/user/tokensByFilter?notValidAfter=-1",
        "admin",
        "admin",
    )
    .await;
    assert_eq!(v["paginationLinks"]["baseUrl"], s.base);
}

// ---- authTest, failedLogins, routing --------------------------------------------

#[tokio::test]
async fn auth_test_reports_success_and_failure_for_get_post_put() {
    let s = JiraSetup::jira().await;
    let token = s.token_for("alice").await;
    for method in [
        reqwest::Method::GET,
        reqwest::Method::POST,
        reqwest::Method::PUT,
    ] {
        let ok: Value = s
            .http
            .request(method.clone(), s.api("/user/authTest"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(ok, json!({"isSuccessfulAuthentication": true}), "{method}");
        let ok: Value = s
            .http
            .request(method.clone(), s.api("/user/authTest"))
            .basic_auth("bob", Some("bob"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(ok["isSuccessfulAuthentication"], true);
    }
    let resp = s
        .http
        .get(s.api("/user/authTest"))
        .bearer_auth("tg_000000000000000000000000000000000000")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["isSuccessfulAuthentication"], false);
    assert!(
        v["authenticationFailureDetails"]
            .as_str()
            .unwrap()
            .contains("invalid")
    );
    let v: Value = s
        .http
        .get(s.api("/user/authTest"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["isSuccessfulAuthentication"], false);
    assert_eq!(
        s.http
            .delete(s.api("/user/authTest"))
            .send()
            .await
            .unwrap()
            .status(),
        405
    );
}

#[tokio::test]
async fn an_admin_clears_a_lockout_by_user_key() {
    let s = JiraSetup::jira().await;
    for _ in 0..3 {
        let (status, _) = get(&s, "/user/token", "alice", "wrong").await;
        assert_eq!(status, 401);
    }
    let resp = s
        .http
        .get(s.api("/user/token"))
        .basic_auth("alice", Some("alice"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403, "locked out after 3 failures");
    assert_eq!(resp.headers()["x-authentication-denied-reason"], "LOCKED");
    assert!(resp.headers().contains_key("retry-after"));
    assert_eq!(
        delete(
            &s,
            &format!("/admin/failedLogins/{ALICE_KEY}"),
            "bob",
            "bob"
        )
        .await
        .0,
        403
    );
    let resp = s
        .http
        .delete(s.api(&format!("/admin/failedLogins/{ALICE_KEY}")))
        .basic_auth("admin", Some("admin"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    assert_eq!(get(&s, "/user/token", "alice", "alice").await.0, 200);
}

#[tokio::test]
async fn routes_methods_and_versions() {
    let s = JiraSetup::jira().await;
    let resp = s
        .http
        .put(s.api("/user/token"))
        .basic_auth("alice", Some("alice"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 405);
    assert_eq!(resp.headers()["allow"], "GET, POST");
    let resp = s
        .http
        .get(s.api("/user/token/1"))
        .basic_auth("alice", Some("alice"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 405);
    assert_eq!(resp.headers()["allow"], "PATCH, DELETE");
    for path in ["/nothing", "/user", "/user/token/1/extra"] {
        let resp = s
            .http
            .get(s.api(path))
            .basic_auth("alice", Some("alice"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 404, "{path}");
        assert!(
            resp.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("application/json")
        );
    }
    let resp = s
        .http
        .get(format!(
            "{}/rest/de.resolution.apitokenauth/1.0/user/token",
            s.base
        ))
        .basic_auth("alice", Some("alice"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "1.0 works like latest");
    let resp = s
        .http
        .get(format!(
            "{}/rest/de.resolution.apitokenauth/2.0/user/token",
            s.base
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    // Nothing under the API root reaches the upstream, whatever the spelling.
    s.sim.clear_seen();
    for path in [
        "/rest/de.resolution.apitokenauth/latest/x",
        "/REST/de.resolution.apitokenauth/latest/user/token",
        "//rest/de.resolution.apitokenauth/latest/user/token",
        "/rest/de.resolution.apitokenauth%2Flatest/user/token",
    ] {
        let resp = s
            .http
            .get(format!("{}{path}", s.base))
            .basic_auth("alice", Some("alice"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 404, "{path}");
    }
    assert!(s.sim.seen().is_empty(), "{:?}", s.sim.seen());
}

#[tokio::test]
async fn callers_must_authenticate() {
    let s = JiraSetup::jira().await;
    let resp = s.http.get(s.api("/user/token")).send().await.unwrap();
    assert_eq!(resp.status(), 401);
    assert!(
        resp.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .contains("Basic")
    );
    assert_eq!(get(&s, "/user/token", "alice", "wrong").await.0, 401);
    let resp = s
        .http
        .get(s.api("/user/token"))
        .header("authorization", "Negotiate abc")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
}

#[tokio::test]
async fn token_callers_use_the_api_with_bearer_or_basic() {
    let s = JiraSetup::jira().await;
    let token = s.token_for("alice").await;
    let resp = s
        .http
        .get(s.api("/user/token"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let resp = s
        .http
        .get(s.api("/user/token"))
        .basic_auth("alice", Some(&token))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let resp = s
        .http
        .get(s.api("/user/token"))
        .basic_auth("bob", Some(&token))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401, "wrong user");
    // An admin with a token is an admin (group membership via the lookup account).
    let admin_token = s.token_for("admin").await;
    let resp = s
        .http
        .get(s.api("/user/tokensByFilter?notValidAfter=-1"))
        .bearer_auth(&admin_token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let resp = s
        .http
        .get(s.api("/user/tokensByFilter?notValidAfter=-1"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
}

#[tokio::test]
async fn admin_user_keys_make_admins_without_the_upstream() {
    let s = JiraSetup::with(tokengate::demo::sim::SimConfig::jira(), |c| {
        c.auth.admin_user_keys = vec![BOB_KEY.into()]
    })
    .await;
    assert_eq!(get(&s, "/user/tokensByFilter", "bob", "bob").await.0, 200);
    assert_eq!(
        get(&s, "/user/tokensByFilter", "alice", "alice").await.0,
        403
    );
}

#[tokio::test]
async fn an_upstream_captcha_is_passed_on_as_403() {
    let mut sim = tokengate::demo::sim::SimConfig::jira();
    sim.captcha_after = Some(1);
    let s = JiraSetup::with(sim, |c| c.auth.max_failed_attempts = 0).await;
    assert_eq!(get(&s, "/user/token", "alice", "wrong").await.0, 401);
    let resp = s
        .http
        .get(s.api("/user/token"))
        .basic_auth("alice", Some("alice"))
        .send()
        .await
        .unwrap();
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
    let (status, v) = post(&s, "alice", "alice", json!({"tokenDescription": "c"})).await;
    assert_eq!(status, 200);
    assert_eq!(v["tokenForUserKey"], ALICE_KEY);
    let token = v["plainTextToken"].as_str().unwrap();
    let me: Value = s
        .http
        .get(s.url("/rest/api/user/current"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me["username"], "alice");
    assert_eq!(get(&s, "/user/token", "alice", "wrong").await.0, 401);
    // Admin through confluence-administrators membership.
    assert_eq!(
        get(&s, "/user/tokensByFilter", "admin", "admin").await.0,
        200
    );
    assert_eq!(
        get(&s, "/user/tokensByFilter", "alice", "alice").await.0,
        403
    );
    let (status, v) = post(
        &s,
        "admin",
        "admin",
        json!({"tokenDescription": "for bob", "tokenForUserKey": BOB_KEY}),
    )
    .await;
    assert_eq!(status, 200);
    let me: Value = s
        .http
        .get(s.url("/rest/api/user/current"))
        .bearer_auth(v["plainTextToken"].as_str().unwrap())
        .send()
        .await
        .unwrap()
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
