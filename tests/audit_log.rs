//! Audit events in the JSON log: one per token create, update,
//! delete, delete-all, lockout, lockout clear and failed authentication, with
//! user key, token id, client IP, reason and request id — and no secret in
//! any log line. Its own test binary: it installs the global log subscriber.
//!
//! One scenario runs once and its log is kept; each case reads one kind of
//! event from it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};

use common::*;
use reqwest::Method;
use serde_json::{Value, json};
use tokengate::demo::sim::{SimConfig, SimUser};
use tokio::sync::OnceCell;

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

const CAROL_PASSWORD: &str = "Carol-Pa55word-7f3a";
const CAROL_KEY: &str = "JIRAUSER10300";

/// The log of the scenario, and what it needs to know about it.
struct Scenario {
    /// Every log line, as written.
    text: String,
    /// The lines of target `audit`, parsed.
    audit: Vec<Value>,
    /// carol's token and its id.
    token: String,
    id: u64,
    /// The well-formed token nobody has, given with carol's name.
    unknown: String,
}

impl Scenario {
    fn event(&self, name: &str) -> Vec<&Value> {
        self.audit.iter().filter(|l| l["event"] == name).collect()
    }
}

/// The scenario's log, once for the whole binary.
async fn scenario() -> &'static Scenario {
    static SCENARIO: OnceCell<Scenario> = OnceCell::const_new();
    SCENARIO.get_or_init(run).await
}

/// carol makes a token and renames it; an unknown token given with her
/// name three times locks her out; a wrong password, a malformed token and
/// her token given with bob's name fail; an admin clears her lockout; she
/// deletes her token with itself; an admin deletes all of alice's.
async fn run() -> Scenario {
    let logs = Captured::default();
    let writer = logs.clone();
    tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_env_filter("info")
        .with_writer(move || writer.clone())
        .init();

    let mut sim = SimConfig::jira();
    sim.users
        .push(SimUser::new("carol", CAROL_KEY, CAROL_PASSWORD, false));
    let s = JiraSetup::with(sim, |_| {}).await;
    let carol = s.as_user("carol", CAROL_PASSWORD);
    let admin = s.as_user("admin", "admin");
    let created = carol
        .create_token(json!({"tokenDescription": "audit"}))
        .await;
    let token = created["plainTextToken"].as_str().unwrap().to_string();
    let id = created["id"].as_u64().unwrap();
    let (status, _) = carol
        .clone()
        .header("x-request-id", "patch-1")
        .patch(
            &format!("/user/token/{id}"),
            json!({"tokenDescription": "renamed"}),
        )
        .await;
    assert_eq!(status, 200);
    // Failures: a well-formed but unknown token for carol (3 times: lockout), a wrong
    // password, a malformed bearer token.
    let unknown = tokengate::token::TokenFormat::new("tg").generate().unwrap();
    for i in 0..3 {
        s.as_user("carol", unknown.expose())
            .header("x-request-id", format!("fail-{i}"))
            .myself()
            .await;
    }
    s.as_user("bob", "not-bobs-password")
        .api(Method::GET, "/user/token")
        .answer()
        .await;
    s.with_token(&token[..20]).myself().await;
    // carol's token given with bob's name: two people, both named.
    s.as_user("bob", &token).myself().await;
    let (status, _) = admin
        .delete(&format!("/admin/failedLogins/{CAROL_KEY}"))
        .await;
    assert_eq!(status, 204);
    let (status, _) = s
        .with_token(&token)
        .delete(&format!("/user/token/{id}"))
        .await;
    assert_eq!(status, 200);
    s.token_for("alice").await;
    let (status, _) = admin
        .delete(&format!("/user/token/deleteAllFor/{ALICE_KEY}"))
        .await;
    assert_eq!(status, 200);
    s.gw.stop().await;

    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    let audit = text
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).expect("every line is JSON"))
        .filter(|l| l["target"] == "audit")
        .collect();
    Scenario {
        text,
        audit,
        token,
        id,
        unknown: unknown.expose().to_string(),
    }
}

#[tokio::test]
async fn a_created_token_is_audited_with_its_owner_client_ip_and_request_id() {
    let a = scenario().await;
    let created = a.event("token_created");
    assert_eq!(created.len(), 2);
    assert_eq!(created[0]["token_id"], a.id);
    assert_eq!(created[0]["user_key"], CAROL_KEY);
    assert_eq!(created[0]["client_ip"], "127.0.0.1");
    assert!(created[0]["request_id"].as_str().unwrap().len() == 32);
}

#[tokio::test]
async fn an_update_is_audited_with_the_callers_request_id() {
    let a = scenario().await;
    let updated = a.event("token_updated");
    assert_eq!(updated.len(), 1);
    assert_eq!(updated[0]["request_id"], "patch-1");
    assert_eq!(updated[0]["token_id"], a.id);
}

#[tokio::test]
async fn every_failed_authentication_is_audited_with_its_reason_and_who_was_claimed() {
    let a = scenario().await;
    let failed = a.event("auth_failed");
    let reasons: Vec<&str> = failed
        .iter()
        .map(|l| l["reason"].as_str().unwrap())
        .collect();
    assert_eq!(
        reasons,
        [
            "unknown_token",
            "unknown_token",
            "unknown_token",
            "wrong_password",
            "malformed_token",
            "wrong_user"
        ]
    );
    assert_eq!(failed[0]["claimed_user"], "carol");
    assert_eq!(
        failed[0]["token_owner_key"], "",
        "nobody owns an unknown token"
    );
    assert_eq!(failed[0]["request_id"], "fail-0");
    assert_eq!(failed[0]["client_ip"], "127.0.0.1");
    for f in &failed {
        for field in [
            "reason",
            "claimed_user",
            "token_owner_key",
            "token_id",
            "client_ip",
            "request_id",
        ] {
            assert!(f.get(field).is_some(), "{field} missing in {f}");
        }
    }
}

#[tokio::test]
async fn a_token_given_with_another_name_audits_both_the_claimed_user_and_the_owner() {
    let a = scenario().await;
    let wrong_user = a.event("auth_failed")[5];
    assert_eq!(wrong_user["reason"], "wrong_user");
    assert_eq!(wrong_user["claimed_user"], "bob");
    assert_eq!(wrong_user["token_owner_key"], CAROL_KEY);
    assert_eq!(wrong_user["token_id"], a.id);
}

#[tokio::test]
async fn a_lockout_and_its_clearing_are_audited() {
    let a = scenario().await;
    let lockouts = a.event("lockout");
    assert_eq!(lockouts.len(), 1);
    assert_eq!(lockouts[0]["user"], "carol");
    assert_eq!(lockouts[0]["request_id"], "fail-2");
    let cleared = a.event("lockout_cleared");
    assert_eq!(cleared.len(), 1);
    assert_eq!(cleared[0]["user_key"], CAROL_KEY);
    assert_eq!(cleared[0]["user"], "carol");
    assert_eq!(cleared[0]["by_user_key"], ADMIN_KEY);
}

#[tokio::test]
async fn a_delete_and_a_delete_of_all_a_users_tokens_are_audited() {
    let a = scenario().await;
    let deleted = a.event("token_deleted");
    assert_eq!(deleted.len(), 1);
    assert_eq!(deleted[0]["token_id"], a.id);
    let all = a.event("tokens_deleted_for_user");
    assert_eq!(all.len(), 1);
    assert_eq!(all[0]["user_key"], ALICE_KEY);
    assert_eq!(all[0]["count"], 1);
}

#[tokio::test]
async fn no_log_line_holds_a_secret() {
    let a = scenario().await;
    // Tokens, passwords, the gateway secret, Authorization values.
    for secret in [
        a.token.as_str(),
        &a.token[3..],
        &a.unknown,
        CAROL_PASSWORD,
        "not-bobs-password",
        SECRET,
        "Basic ",
        "Bearer ",
    ] {
        assert!(
            !a.text.contains(secret),
            "a secret ({}…) is in the log",
            &secret[..4.min(secret.len())]
        );
    }
}
