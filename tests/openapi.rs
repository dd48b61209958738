//! The OpenAPI document (`src/api/openapi.json`) stays true: it is what the
//! gateway serves, every documented operation is routed, undocumented methods
//! are 405, and real answers — successes and errors — match the documented
//! status codes and schemas.

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

async fn call(
    s: &JiraSetup,
    method: Method,
    path: &str,
    auth: Option<(&str, &str)>,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = s.http.request(method, s.api(path));
    if let Some((u, p)) = auth {
        req = req.basic_auth(u, Some(p));
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.unwrap();
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

#[tokio::test]
async fn the_served_document_is_the_repositorys() {
    let s = JiraSetup::jira().await;
    let (status, served) = call(&s, Method::GET, "/openapi.json", None, None).await;
    assert_eq!(status, 200);
    assert_eq!(served, doc());
    assert_eq!(doc()["openapi"], "3.1.0");
}

#[tokio::test]
async fn documented_operations_are_routed_and_others_are_405() {
    let s = JiraSetup::jira().await;
    let d = doc();
    let all = ["get", "post", "put", "patch", "delete"];
    for (path, item) in d["paths"].as_object().unwrap() {
        let concrete = path
            .replace("{id}", "1")
            .replace("{userKey}", "JIRAUSER10100");
        for method in all {
            let m = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let (status, _) = call(
                &s,
                m,
                &concrete,
                Some(("admin", "admin")),
                Some(json!({"tokenDescription": "x"})),
            )
            .await;
            if item.get(method).is_some() {
                assert_ne!(status, 405, "{method} {path} is documented but not routed");
            } else {
                assert_eq!(status, 405, "{method} {path} is routed but not documented");
            }
        }
    }
}

#[tokio::test]
async fn answers_match_the_documented_schemas() {
    let s = JiraSetup::jira().await;
    let d = doc();
    let alice = Some(("alice", "alice"));
    let admin = Some(("admin", "admin"));

    let (st, v) = call(
        &s,
        Method::POST,
        "/user/token",
        alice,
        Some(json!({"tokenDescription": "ci"})),
    )
    .await;
    check(&d, "/user/token", "post", st, &v);
    let (st, v) = call(
        &s,
        Method::POST,
        "/user/token",
        alice,
        Some(json!({"tokenDescription": ""})),
    )
    .await;
    assert_eq!(st, 400);
    check(&d, "/user/token", "post", st, &v);
    let (st, v) = call(
        &s,
        Method::POST,
        "/user/token",
        alice,
        Some(json!({"tokenDescription": "x", "tokenForUserKey": "JIRAUSER10000"})),
    )
    .await;
    assert_eq!(st, 403);
    check(&d, "/user/token", "post", st, &v);
    let (st, v) = call(
        &s,
        Method::POST,
        "/user/token",
        None,
        Some(json!({"tokenDescription": "x"})),
    )
    .await;
    assert_eq!(st, 401);
    check(&d, "/user/token", "post", st, &v);
    let resp = s
        .http
        .post(s.api("/user/token"))
        .basic_auth("alice", Some("alice"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 415);
    check(&d, "/user/token", "post", 415, &resp.json().await.unwrap());
    let big = json!({"tokenDescription": "x".repeat(70_000)});
    let (st, v) = call(&s, Method::POST, "/user/token", alice, Some(big)).await;
    assert_eq!(st, 413);
    check(&d, "/user/token", "post", st, &v);
    let (st, v) = call(
        &s,
        Method::POST,
        "/user/token",
        admin,
        Some(json!({"tokenDescription": "never", "tokenScope": 1})),
    )
    .await;
    check(&d, "/user/token", "post", st, &v);

    let (st, v) = call(&s, Method::GET, "/user/token", alice, None).await;
    check(&d, "/user/token", "get", st, &v);
    let (st, v) = call(
        &s,
        Method::PATCH,
        "/user/token/1",
        alice,
        Some(json!({"tokenDescription": "renamed"})),
    )
    .await;
    check(&d, "/user/token/{id}", "patch", st, &v);
    let (st, v) = call(
        &s,
        Method::PATCH,
        "/user/token/99",
        alice,
        Some(json!({"tokenDescription": "x"})),
    )
    .await;
    assert_eq!(st, 404);
    check(&d, "/user/token/{id}", "patch", st, &v);
    let (st, v) = call(
        &s,
        Method::PATCH,
        "/user/token/abc",
        alice,
        Some(json!({"tokenDescription": "x"})),
    )
    .await;
    assert_eq!(st, 400);
    check(&d, "/user/token/{id}", "patch", st, &v);

    let (st, v) = call(
        &s,
        Method::GET,
        "/user/tokensByFilter?notValidAfter=-1&limit=1",
        admin,
        None,
    )
    .await;
    check(&d, "/user/tokensByFilter", "get", st, &v);
    let (st, v) = call(&s, Method::GET, "/user/tokensByFilter?limit=0", admin, None).await;
    assert_eq!(st, 400);
    check(&d, "/user/tokensByFilter", "get", st, &v);
    let (st, v) = call(&s, Method::GET, "/user/tokensByFilter", alice, None).await;
    assert_eq!(st, 403);
    check(&d, "/user/tokensByFilter", "get", st, &v);

    for m in [
        (Method::GET, "get"),
        (Method::POST, "post"),
        (Method::PUT, "put"),
    ] {
        let (st, v) = call(&s, m.0.clone(), "/user/authTest", alice, None).await;
        check(&d, "/user/authTest", m.1, st, &v);
        let (st, v) = call(&s, m.0, "/user/authTest", None, None).await;
        check(&d, "/user/authTest", m.1, st, &v);
    }

    let (st, v) = call(&s, Method::DELETE, "/user/token/1", alice, None).await;
    check(&d, "/user/token/{id}", "delete", st, &v);
    let (st, v) = call(&s, Method::DELETE, "/user/token/1", alice, None).await;
    assert_eq!(st, 404);
    check(&d, "/user/token/{id}", "delete", st, &v);
    let (st, v) = call(
        &s,
        Method::DELETE,
        "/user/token/deleteAllFor/JIRAUSER10000",
        admin,
        None,
    )
    .await;
    check(&d, "/user/token/deleteAllFor/{userKey}", "delete", st, &v);
    let (st, v) = call(
        &s,
        Method::DELETE,
        "/admin/failedLogins/JIRAUSER10100",
        admin,
        None,
    )
    .await;
    assert_eq!(st, 204);
    check(&d, "/admin/failedLogins/{userKey}", "delete", st, &v);
    let (st, v) = call(
        &s,
        Method::DELETE,
        "/admin/failedLogins/JIRAUSER10100",
        alice,
        None,
    )
    .await;
    check(&d, "/admin/failedLogins/{userKey}", "delete", st, &v);
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
