//! Tokens, ids, descriptions and lastAccessed survive a clean restart, and
//! the id counter never goes back.

mod common;

use common::*;
use serde_json::{Value, json};
use tokengate::demo::sim::{SimConfig, SimUpstream, TrustedHeader};

async fn gateway(
    sim: &SimUpstream,
    dir: &std::path::Path,
    clock: std::sync::Arc<tokengate::clock::ManualClock>,
) -> tokengate::Running {
    let mut config = test_config(&sim.url(), dir);
    config.upstream.credentials.secret_header_name = "X-Gateway-Secret".into();
    config.upstream.credentials.secret_env = "GW_SECRET".into();
    // A long flush interval: lastAccessed must be written at shutdown, not by the timer.
    config.tokens.last_access_flush_ms = 3_600_000;
    secrets::scan_logs();
    tokengate::start(config, options(clock, &[("GW_SECRET", SECRET)]))
        .await
        .unwrap()
}

async fn create(base: &str, desc: &str) -> Value {
    client()
        .post(format!(
            "{base}/rest/de.resolution.apitokenauth/latest/user/token"
        ))
        .basic_auth("alice", Some("alice"))
        .json(&json!({"tokenDescription": desc}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

async fn list(base: &str) -> Vec<Value> {
    client()
        .get(format!(
            "{base}/rest/de.resolution.apitokenauth/latest/user/token"
        ))
        .basic_auth("alice", Some("alice"))
        .send()
        .await
        .unwrap()
        .json::<Vec<Value>>()
        .await
        .unwrap()
}

#[tokio::test]
async fn tokens_survive_a_clean_restart_and_ids_never_go_back() {
    let mut sim_config = SimConfig::jira();
    sim_config.trusted_header = Some(TrustedHeader {
        user_header: "X-Remote-User".into(),
        secret: Some(("X-Gateway-Secret".into(), SECRET.into())),
    });
    let sim = SimUpstream::start(sim_config).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let clock = tokengate::clock::ManualClock::new(T0);

    let gw = gateway(&sim, dir.path(), clock.clone()).await;
    let base = format!("http://{}", gw.addr());
    let a = create(&base, "kept").await;
    let b = create(&base, "renamed later").await;
    let c = create(&base, "deleted, with the highest id").await;
    assert_eq!(
        (a["id"].as_u64(), b["id"].as_u64(), c["id"].as_u64()),
        (Some(1), Some(2), Some(3))
    );
    let token_a = a["plainTextToken"].as_str().unwrap().to_string();
    clock.advance_ms(1_234);
    let used = client()
        .get(format!("{base}/rest/api/2/myself"))
        .bearer_auth(&token_a)
        .send()
        .await
        .unwrap();
    assert_eq!(used.status(), 200);
    let renamed = client()
        .patch(format!(
            "{base}/rest/de.resolution.apitokenauth/latest/user/token/2"
        ))
        .basic_auth("alice", Some("alice"))
        .json(&json!({"tokenDescription": "renamed"}))
        .send()
        .await
        .unwrap();
    assert_eq!(renamed.status(), 200);
    let deleted = client()
        .delete(format!(
            "{base}/rest/de.resolution.apitokenauth/latest/user/token/3"
        ))
        .basic_auth("alice", Some("alice"))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 200);
    let before = list(&base).await;
    gw.stop().await;

    let gw = gateway(&sim, dir.path(), clock.clone()).await;
    let base = format!("http://{}", gw.addr());
    let after = list(&base).await;
    assert_eq!(
        after, before,
        "ids, descriptions, dates and lastAccessed are as they were"
    );
    assert_eq!(after[0]["lastAccessed"], T0 + 1_234);
    assert_eq!(after[1]["description"], "renamed");
    let me: Value = client()
        .get(format!("{base}/rest/api/2/myself"))
        .bearer_auth(&token_a)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me["name"], "alice", "the token still works");
    gw.stop().await;

    // A second restart without new tokens, then a create: the deleted id 3 is not reused.
    let gw = gateway(&sim, dir.path(), clock.clone()).await;
    let base = format!("http://{}", gw.addr());
    assert_eq!(create(&base, "new").await["id"], 4);
    gw.stop().await;
}
