//! Every curl example of the seed document (`shared/seed/api-token-authentication-rest-api.txt`),
//! run with the curl binary as written, against the gateway in front of the
//! simulated Jira — with `user:password` and with `user:token`.
//!
//! Two liberties: `<your-jira-or-confluence>` is the gateway's address over
//! plain HTTP, and the stray words `POST`/`GET` that the seed puts before the
//! URL are left out (curl takes them for host names and would try to resolve
//! them, which these tests must not). `| python -mjson.tool` is replaced by
//! parsing the JSON here. `-s -w` are added to read the status code.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use serde_json::Value;

async fn curl(args: &[&str]) -> (u16, Value) {
    let out = tokio::process::Command::new("curl")
        .args(["-sS", "--noproxy", "*", "-w", "\n%{http_code}"])
        .args(args)
        .output()
        .await
        .expect("curl is installed (.ci/run installs it)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    let code: u16 = code
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("curl output: {text}"));
    (
        code,
        serde_json::from_str(body).unwrap_or(Value::String(body.to_string())),
    )
}

/// `curl -v -u <caller> -d <json> [-X <method>] <url> --header "Content-Type: application/json"`,
/// the seed's form for a call with a body.
async fn curl_json(caller: &str, json: &str, method: Option<&str>, url: &str) -> (u16, Value) {
    let mut args = vec!["-v", "-u", caller, "-d", json];
    if let Some(method) = method {
        args.extend(["-X", method]);
    }
    args.extend([url, "--header", "Content-Type: application/json"]);
    curl(&args).await
}

/// `curl -v -u <caller> [-X <method>] <url>`, the seed's form for a call without a body.
async fn curl_as(caller: &str, method: Option<&str>, url: &str) -> (u16, Value) {
    let mut args = vec!["-v", "-u", caller];
    if let Some(method) = method {
        args.extend(["-X", method]);
    }
    args.push(url);
    curl(&args).await
}

fn api(s: &JiraSetup) -> String {
    format!("{}{API}", s.base)
}

/// The seed's user examples, for one caller (`user:password` or `user:token`).
async fn user_examples(s: &JiraSetup, caller: &str) {
    let api = api(s);
    // Create a new token.
    let (code, v) = curl_json(
        caller,
        r#"{"tokenDescription":"Automation token"}"#,
        None,
        &format!("{api}/user/token"),
    )
    .await;
    assert_eq!(code, 200, "{v}");
    assert!(v["plainTextToken"].as_str().unwrap().starts_with("tg_"));
    let id = v["id"].as_u64().unwrap();

    // ... with an expiration period of one month.
    let (code, v) = curl_json(
        caller,
        r#"{"tokenDescription":"one month", "tokenValidityTimeInMonths" : 1}"#,
        None,
        &format!("{api}/user/token"),
    )
    .await;
    assert_eq!(code, 200, "{v}");
    assert_eq!(
        v["tokenExpirationDateTimeMillis"],
        tokengate::api::validity::add_months(T0, 1).unwrap()
    );

    // Update a token description.
    let (code, v) = curl_json(
        caller,
        r#"{"tokenDescription":"Updated token description"}"#,
        Some("PATCH"),
        &format!("{api}/user/token/{id}"),
    )
    .await;
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["description"], "Updated token description");

    // List all tokens (trailing slash as in the seed).
    let (code, v) = curl_as(caller, None, &format!("{api}/user/token/")).await;
    assert_eq!(code, 200, "{v}");
    let list = v.as_array().unwrap();
    let listed = list.iter().find(|t| t["id"] == id).unwrap();
    assert_eq!(listed["description"], "Updated token description");
    for field in ["created", "description", "id", "lastAccessed"] {
        assert!(listed.get(field).is_some(), "{field}");
    }

    // Delete a token.
    let (code, v) = curl_as(caller, Some("DELETE"), &format!("{api}/user/token/{id}")).await;
    assert_eq!((code, v), (200, Value::Bool(true)));
}

#[tokio::test]
async fn user_examples_with_a_password() {
    let s = JiraSetup::jira().await;
    user_examples(&s, "alice:alice").await;
}

#[tokio::test]
async fn user_examples_with_a_token() {
    let s = JiraSetup::jira().await;
    let token = s.token_for("alice").await;
    user_examples(&s, &format!("alice:{token}")).await;
}

/// The seed's administrator examples, for one admin caller.
async fn admin_examples(s: &JiraSetup, caller: &str) {
    let api = api(s);
    // Create tokens for other users.
    let (code, v) = curl_json(
        caller,
        r#"{"tokenDescription":"token for another user", "tokenForUserKey":"JIRAUSER10100"}"#,
        None,
        &format!("{api}/user/token"),
    )
    .await;
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["tokenForUserKey"], "JIRAUSER10100");
    assert_eq!(
        v["tokenExpirationDateTimeMillis"],
        tokengate::api::validity::add_months(T0, 6).unwrap(),
        "the default"
    );

    // "... adjusted to the value set in the system wide settings ... where only 6 are allowed."
    let (code, v) = curl_json(caller, r#"{"tokenDescription":"token for another user", "tokenForUserKey":"JIRAUSER10100","tokenValidityTimeInMonths":12}"#, None, &format!("{api}/user/token"))
    .await;
    assert_eq!(code, 200, "{v}");
    assert_eq!(
        v["tokenExpirationDateTimeMillis"],
        tokengate::api::validity::add_months(T0, 6).unwrap(),
        "cut down to 6"
    );

    // Filter user tokens, as written (a date in 2023: nothing that valid is that old here).
    let (code, v) = curl_as(
        caller,
        None,
        &format!("{api}/user/tokensByFilter?notValidAfter=1688918956972"),
    )
    .await;
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["total"], 0);
    assert_eq!(v["limit"], 50);
    assert_eq!(v["paginationLinks"]["baseUrl"], s.base);
    // -1 returns all tokens; the paged example.
    let (code, v) = curl_as(
        caller,
        None,
        &format!("{api}/user/tokensByFilter?notValidAfter=-1"),
    )
    .await;
    assert_eq!(code, 200);
    let total = v["total"].as_u64().unwrap();
    assert!(total >= 2);
    let (code, v) = curl_as(
        caller,
        None,
        &format!("{api}/user/tokensByFilter?page=0&limit=1&notValidAfter=-1"),
    )
    .await;
    assert_eq!(code, 200);
    assert_eq!(v["content"].as_array().unwrap().len(), 1);
    assert_eq!(v["totalPages"], total);
    assert_eq!(
        v["paginationLinks"]["nextPage"],
        format!("{api}/user/tokensByFilter?page=1&limit=1&notValidAfter=-1")
    );

    // Get the user key for a user, from Jira itself through the gateway.
    let (code, v) = curl_as(
        caller,
        None,
        &format!("{}/rest/api/2/user?username=alice", s.base),
    )
    .await;
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["key"], "JIRAUSER10100");

    // Delete all tokens for a user, by user key.
    let (code, v) = curl_as(
        caller,
        Some("DELETE"),
        &format!("{api}/user/token/deleteAllFor/JIRAUSER10100"),
    )
    .await;
    assert_eq!(code, 200, "{v}");
    assert!(v.as_u64().unwrap() >= 2);
}

async fn seed_setup() -> JiraSetup {
    JiraSetup::jira_with(|c| {
        c.tokens.max_validity_months = 6;
        c.tokens.default_validity_months = 6;
    })
    .await
}

#[tokio::test]
async fn admin_examples_with_a_password() {
    let s = seed_setup().await;
    admin_examples(&s, "admin:admin").await;
}

#[tokio::test]
async fn admin_examples_with_a_token() {
    let s = seed_setup().await;
    let token = s.token_for("admin").await;
    admin_examples(&s, &format!("admin:{token}")).await;
}

#[tokio::test]
async fn non_admins_get_403_from_admin_endpoints() {
    let s = seed_setup().await;
    let api = api(&s);
    let (code, _) = curl_as(
        "alice:alice",
        Some("DELETE"),
        &format!("{api}/user/token/deleteAllFor/JIRAUSER10000"),
    )
    .await;
    assert_eq!(code, 403);
    let (code, _) = curl_as(
        "alice:alice",
        None,
        &format!("{api}/user/tokensByFilter?notValidAfter=1688918956972"),
    )
    .await;
    assert_eq!(code, 403);
}

#[tokio::test]
async fn confluence_user_key_example() {
    let s = JiraSetup::confluence().await;
    let (code, v) = curl_as(
        "admin:admin",
        None,
        &format!("{}/rest/api/user?username=alice", s.base),
    )
    .await;
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["userKey"], "JIRAUSER10100");
    assert_eq!(v["type"], "known");
}

#[tokio::test]
async fn error_codes_table_of_the_seed() {
    // Regular endpoints: wrong or expired token → 401 whether passwords are allowed or not;
    // a regular password with password Basic auth disabled → 401.
    for allow in [true, false] {
        let s = JiraSetup::jira_with(|c| c.tokens.allow_password_basic_auth = allow).await;
        let token = s.token_for("alice").await;
        let me = format!("{}/rest/api/2/myself", s.base);
        let (code, _) = curl(&["-u", "alice:tg_000000000000000000000000000000000000", &me]).await;
        assert_eq!(code, 401);
        s.clock.advance_ms(200 * 24 * 3600 * 1000);
        let (code, _) = curl(&["-u", &format!("alice:{token}"), &me]).await;
        assert_eq!(code, 401, "expired");
        let (code, _) = curl(&["-u", "bob:bob", &me]).await;
        assert_eq!(code, if allow { 200 } else { 401 });
    }
}
