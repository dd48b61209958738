//! The OpenAPI document (`src/api/openapi.json`) stays true: it is what the
//! gateway serves, every documented operation is routed, undocumented methods
//! are 405, and real answers — successes and errors — match the documented
//! status codes and schemas.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use reqwest::Method;
use serde_json::{Value, json};

fn doc() -> Value {
    serde_json::from_str(tokengate::api::OPENAPI).unwrap()
}

fn resolve(doc: &Value, v: &Value) -> Value {
    match v.get("$ref").and_then(Value::as_str) {
        Some(r) => doc
            .pointer(r.trim_start_matches('#'))
            .cloned()
            .unwrap_or(Value::Null),
        None => v.clone(),
    }
}

/// Checks that `status` is documented for the operation and `body` matches its schema.
fn check(doc: &Value, path: &str, method: &str, status: u16, body: &Value) {
    let op = &doc["paths"][path][method];
    assert!(op.is_object(), "{method} {path} is not documented");
    let resp = op["responses"].get(status.to_string()).unwrap_or_else(|| {
        panic!("{method} {path} answered {status}, which is not documented: {body}");
    });
    let resp = resolve(doc, resp);
    let Some(schema) = resp.pointer("/content/application~1json/schema") else {
        assert_eq!(
            body,
            &Value::Null,
            "{method} {path} {status}: no body documented"
        );
        return;
    };
    let mut root = schema.clone();
    root["components"] = doc["components"].clone();
    let validator = jsonschema::validator_for(&root).unwrap();
    let errors: Vec<String> = validator
        .iter_errors(body)
        .map(|e| format!("{e} at {}", e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "{method} {path} {status}: {errors:?}\n{body}"
    );
}

/// `method path` on the management API as `caller` with an optional JSON
/// body: the status and the body, which must be JSON (or empty: `Null`).
async fn call(caller: &Caller, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
    let mut req = caller.api(method, path);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.answer().await;
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (
        status,
        if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap()
        },
    )
}

/// Calls `method path` as `caller` and checks the answer against the
/// document's `documented` path; returns the status.
async fn check_call(
    caller: &Caller,
    method: Method,
    path: &str,
    documented: &str,
    body: Option<Value>,
) -> u16 {
    let (status, v) = call(caller, method.clone(), path, body).await;
    check(
        &doc(),
        documented,
        &method.as_str().to_lowercase(),
        status,
        &v,
    );
    status
}

#[tokio::test]
async fn the_served_document_is_the_repositorys() {
    let s = JiraSetup::jira().await;
    let (status, served) = call(&s.anonymous(), Method::GET, "/openapi.json", None).await;
    assert_eq!(status, 200);
    assert_eq!(served, doc());
    assert_eq!(doc()["openapi"], "3.1.0");
}

#[tokio::test]
async fn documented_operations_are_routed_and_others_are_405() {
    let s = JiraSetup::jira().await;
    let admin = s.as_user("admin", "admin");
    let d = doc();
    let all = ["get", "post", "put", "patch", "delete"];
    for (path, item) in d["paths"].as_object().unwrap() {
        let concrete = path
            .replace("{id}", "1")
            .replace("{userKey}", "JIRAUSER10100");
        for method in all {
            let m = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let (status, _) =
                call(&admin, m, &concrete, Some(json!({"tokenDescription": "x"}))).await;
            if item.get(method).is_some() {
                assert_ne!(status, 405, "{method} {path} is documented but not routed");
            } else {
                assert_eq!(status, 405, "{method} {path} is routed but not documented");
            }
        }
    }
}

#[tokio::test]
async fn creating_a_token_answers_as_documented() {
    let s = JiraSetup::jira().await;
    let alice = s.as_user("alice", "alice");
    let create = |caller: Caller, body: Value| async move {
        check_call(
            &caller,
            Method::POST,
            "/user/token",
            "/user/token",
            Some(body),
        )
        .await
    };
    create(alice.clone(), json!({"tokenDescription": "ci"})).await;
    let status = create(alice.clone(), json!({"tokenDescription": ""})).await;
    assert_eq!(status, 400);
    let status = create(
        alice.clone(),
        json!({"tokenDescription": "x", "tokenForUserKey": "JIRAUSER10000"}),
    )
    .await;
    assert_eq!(status, 403);
    let status = create(s.anonymous(), json!({"tokenDescription": "x"})).await;
    assert_eq!(status, 401);
    let (status, v) = alice
        .api(Method::POST, "/user/token")
        .body("{}")
        .json_answer()
        .await;
    assert_eq!(status, 415);
    check(&doc(), "/user/token", "post", 415, &v);
    let status = create(alice, json!({"tokenDescription": "x".repeat(70_000)})).await;
    assert_eq!(status, 413);
    create(
        s.as_user("admin", "admin"),
        json!({"tokenDescription": "never", "tokenScope": 1}),
    )
    .await;
}

/// alice's token 1 and the admin's token 2 (read-only).
async fn two_tokens() -> JiraSetup {
    let s = JiraSetup::jira().await;
    s.as_user("alice", "alice")
        .create_token(json!({"tokenDescription": "ci"}))
        .await;
    s.as_user("admin", "admin")
        .create_token(json!({"tokenDescription": "never", "tokenScope": 1}))
        .await;
    s
}

#[tokio::test]
async fn listing_and_updating_tokens_answer_as_documented() {
    let s = two_tokens().await;
    let alice = s.as_user("alice", "alice");
    check_call(&alice, Method::GET, "/user/token", "/user/token", None).await;
    let renamed = Some(json!({"tokenDescription": "renamed"}));
    let x = || Some(json!({"tokenDescription": "x"}));
    let one = "/user/token/{id}";
    check_call(&alice, Method::PATCH, "/user/token/1", one, renamed).await;
    let status = check_call(&alice, Method::PATCH, "/user/token/99", one, x()).await;
    assert_eq!(status, 404);
    let status = check_call(&alice, Method::PATCH, "/user/token/abc", one, x()).await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn rotating_a_token_answers_as_documented() {
    let s = two_tokens().await;
    let alice = s.as_user("alice", "alice");
    let rotate = "/user/token/{id}/rotate";
    let grace = Some(json!({"graceSeconds": 60}));
    assert_eq!(
        check_call(&alice, Method::POST, "/user/token/1/rotate", rotate, grace).await,
        200
    );
    let status = check_call(&alice, Method::POST, "/user/token/1/rotate", rotate, None).await;
    assert_eq!(status, 200, "the body is optional");
    let too_long = Some(json!({"graceSeconds": 86_401}));
    let status = check_call(
        &alice,
        Method::POST,
        "/user/token/1/rotate",
        rotate,
        too_long,
    )
    .await;
    assert_eq!(status, 400);
    let status = check_call(&alice, Method::POST, "/user/token/2/rotate", rotate, None).await;
    assert_eq!(status, 404, "the admin's token");
    let fenced = Some(json!({"tokenDescription": "fenced", "allowedIps": ["2001:db8::/32"]}));
    check_call(&alice, Method::POST, "/user/token", "/user/token", fenced).await;
    let filter = "/user/tokensByFilter";
    let admin = s.as_user("admin", "admin");
    let path = "/user/tokensByFilter?allowedIpsSet=true";
    assert_eq!(
        check_call(&admin, Method::GET, path, filter, None).await,
        200
    );
}

#[tokio::test]
async fn tokens_by_filter_answers_as_documented() {
    let s = two_tokens().await;
    let admin = s.as_user("admin", "admin");
    let filter = "/user/tokensByFilter";
    let page = "/user/tokensByFilter?notValidAfter=-1&limit=1";
    check_call(&admin, Method::GET, page, filter, None).await;
    let status = check_call(
        &admin,
        Method::GET,
        "/user/tokensByFilter?limit=0",
        filter,
        None,
    )
    .await;
    assert_eq!(status, 400);
    let alice = s.as_user("alice", "alice");
    let status = check_call(&alice, Method::GET, filter, filter, None).await;
    assert_eq!(status, 403);
}

#[tokio::test]
async fn auth_test_answers_as_documented() {
    let s = two_tokens().await;
    for method in [Method::GET, Method::POST, Method::PUT] {
        for caller in [s.as_user("alice", "alice"), s.anonymous()] {
            let auth_test = "/user/authTest";
            check_call(&caller, method.clone(), auth_test, auth_test, None).await;
        }
    }
}

#[tokio::test]
async fn deleting_tokens_and_clearing_lockouts_answer_as_documented() {
    let s = two_tokens().await;
    let (alice, admin) = (s.as_user("alice", "alice"), s.as_user("admin", "admin"));
    let one = "/user/token/{id}";
    check_call(&alice, Method::DELETE, "/user/token/1", one, None).await;
    let status = check_call(&alice, Method::DELETE, "/user/token/1", one, None).await;
    assert_eq!(status, 404);
    let all_of = "/user/token/deleteAllFor/{userKey}";
    let admins = "/user/token/deleteAllFor/JIRAUSER10000";
    check_call(&admin, Method::DELETE, admins, all_of, None).await;
    let clear = "/admin/failedLogins/{userKey}";
    let alices = "/admin/failedLogins/JIRAUSER10100";
    let status = check_call(&admin, Method::DELETE, alices, clear, None).await;
    assert_eq!(status, 204);
    check_call(&alice, Method::DELETE, alices, clear, None).await;
}

#[test]
fn the_check_catches_an_answer_that_breaks_the_document() {
    let d = doc();
    let wrong_shape = std::panic::catch_unwind(|| {
        check(
            &d,
            "/user/token",
            "get",
            200,
            &json!([{"id": 1, "description": "x"}]),
        );
    });
    assert!(wrong_shape.is_err(), "missing fields pass");
    let extra_field = std::panic::catch_unwind(|| {
        check(
            &d,
            "/user/authTest",
            "get",
            200,
            &json!({"isSuccessfulAuthentication": true, "user": "x"}),
        );
    });
    assert!(extra_field.is_err(), "an undocumented field passes");
    let undocumented_status = std::panic::catch_unwind(|| {
        check(&d, "/user/token", "get", 418, &json!({}));
    });
    assert!(
        undocumented_status.is_err(),
        "an undocumented status passes"
    );
    check(
        &d,
        "/user/authTest",
        "get",
        200,
        &json!({"isSuccessfulAuthentication": false, "authenticationFailureDetails": "x"}),
    );
}
