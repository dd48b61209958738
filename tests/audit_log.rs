//! Audit events in the JSON log (SPEC §8): one per token create, update,
//! delete, delete-all, lockout, lockout clear and failed authentication, with
//! user key, token id, client IP, reason and request id — and no secret in
//! any log line. Its own test binary: it installs the global log subscriber.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};

use common::*;
use serde_json::{Value, json};
use tokengate::demo::sim::{SimConfig, SimUser};

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

#[tokio::test]
async fn audit_events_carry_who_what_where_and_never_a_secret() {
    let logs = Captured::default();
    let writer = logs.clone();
    tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_env_filter("info")
        .with_writer(move || writer.clone())
        .init();

    let mut sim = SimConfig::jira();
    sim.users.push(SimUser::new(
        "carol",
        "JIRAUSER10300",
        CAROL_PASSWORD,
        false,
    ));
    let s = JiraSetup::with(sim, |_| {}).await;
    let created = s
        .create_token(
            "carol",
            CAROL_PASSWORD,
            json!({"tokenDescription": "audit"}),
        )
        .await;
    let token = created["plainTextToken"].as_str().unwrap().to_string();
    let id = created["id"].as_u64().unwrap();
    let api = |p: &str| s.api(p);
    let resp = s
        .http
        .patch(api(&format!("/user/token/{id}")))
        .basic_auth("carol", Some(CAROL_PASSWORD))
        .header("x-request-id", "patch-1")
        .json(&json!({"tokenDescription": "renamed"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    // Failures: a well-formed but unknown token for carol (3 times: lockout), a wrong
    // password, a malformed bearer token.
    let unknown = tokengate::token::TokenFormat::new("tg").generate().unwrap();
    for i in 0..3 {
        s.http
            .get(s.url("/rest/api/2/myself"))
            .basic_auth("carol", Some(unknown.expose()))
            .header("x-request-id", format!("fail-{i}"))
            .send()
            .await
            .unwrap();
    }
    s.http
        .get(api("/user/token"))
        .basic_auth("bob", Some("not-bobs-password"))
        .send()
        .await
        .unwrap();
    s.http
        .get(s.url("/rest/api/2/myself"))
        .bearer_auth(&token[..20])
        .send()
        .await
        .unwrap();
    // carol's token given with bob's name: two people, both named.
    s.http
        .get(s.url("/rest/api/2/myself"))
        .basic_auth("bob", Some(&token))
        .send()
        .await
        .unwrap();
    let resp = s
        .http
        .delete(api("/admin/failedLogins/JIRAUSER10300"))
        .basic_auth("admin", Some("admin"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    let resp = s
        .http
        .delete(api(&format!("/user/token/{id}")))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    s.token_for("alice").await;
    let resp = s
        .http
        .delete(api("/user/token/deleteAllFor/JIRAUSER10100"))
        .basic_auth("admin", Some("admin"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    s.gw.stop().await;

    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("every line is JSON"))
        .collect();
    let audit: Vec<&Value> = lines.iter().filter(|l| l["target"] == "audit").collect();
    let event = |name: &str| -> Vec<&Value> {
        audit
            .iter()
            .copied()
            .filter(|l| l["event"] == name)
            .collect()
    };

    let created = event("token_created");
    assert_eq!(created.len(), 2);
    assert_eq!(created[0]["token_id"], id);
    assert_eq!(created[0]["user_key"], "JIRAUSER10300");
    assert_eq!(created[0]["client_ip"], "127.0.0.1");
    assert!(created[0]["request_id"].as_str().unwrap().len() == 32);

    let updated = event("token_updated");
    assert_eq!(updated.len(), 1);
    assert_eq!(updated[0]["request_id"], "patch-1");
    assert_eq!(updated[0]["token_id"], id);

    let failed = event("auth_failed");
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
    let wrong_user = failed[5];
    assert_eq!(wrong_user["claimed_user"], "bob");
    assert_eq!(wrong_user["token_owner_key"], "JIRAUSER10300");
    assert_eq!(wrong_user["token_id"], id);
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

    let lockouts = event("lockout");
    assert_eq!(lockouts.len(), 1);
    assert_eq!(lockouts[0]["user"], "carol");
    assert_eq!(lockouts[0]["request_id"], "fail-2");
    let cleared = event("lockout_cleared");
    assert_eq!(cleared.len(), 1);
    assert_eq!(cleared[0]["user_key"], "JIRAUSER10300");
    assert_eq!(cleared[0]["user"], "carol");
    assert_eq!(cleared[0]["by_user_key"], "JIRAUSER10000");
    let deleted = event("token_deleted");
    assert_eq!(deleted.len(), 1);
    assert_eq!(deleted[0]["token_id"], id);
    let all = event("tokens_deleted_for_user");
    assert_eq!(all.len(), 1);
    assert_eq!(all[0]["user_key"], "JIRAUSER10100");
    assert_eq!(all[0]["count"], 1);

    // No secret anywhere in the log: tokens, passwords, the gateway secret, Authorization values.
    for secret in [
        token.as_str(),
        &token[3..],
        unknown.expose(),
        CAROL_PASSWORD,
        "not-bobs-password",
        SECRET,
        "Basic ",
        "Bearer ",
    ] {
        assert!(
            !text.contains(secret),
            "a secret ({}…) is in the log",
            &secret[..4.min(secret.len())]
        );
    }
}
