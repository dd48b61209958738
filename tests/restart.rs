//! Tokens, ids, descriptions and lastAccessed survive a clean restart, and
//! the id counter never goes back.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use serde_json::{Value, json};
use tokengate::demo::sim::{SimConfig, SimUpstream};

async fn gateway(
    sim: &SimUpstream,
    dir: &std::path::Path,
    clock: std::sync::Arc<tokengate::clock::ManualClock>,
) -> tokengate::Running {
    let mut config = header_mode_config(&sim.url(), dir);
    // A long flush interval: lastAccessed must be written at shutdown, not by the timer.
    config.tokens.last_access_flush_ms = 3_600_000;
    start_with_secret(config, clock).await
}

async fn create(gw: &tokengate::Running, desc: &str) -> Value {
    gw.as_user("alice", "alice")
        .create_token(json!({"tokenDescription": desc}))
        .await
}

async fn list(gw: &tokengate::Running) -> Vec<Value> {
    let (_, list) = gw.as_user("alice", "alice").get("/user/token").await;
    list.as_array().unwrap().clone()
}

#[tokio::test]
async fn tokens_survive_a_clean_restart_and_ids_never_go_back() {
    let sim = header_mode_sim(SimConfig::jira()).await;
    let dir = tempfile::tempdir().unwrap();
    let clock = tokengate::clock::ManualClock::new(T0);

    let gw = gateway(&sim, dir.path(), clock.clone()).await;
    let alice = gw.as_user("alice", "alice");
    let a = create(&gw, "kept").await;
    let b = create(&gw, "renamed later").await;
    let c = create(&gw, "deleted, with the highest id").await;
    assert_eq!(
        (a["id"].as_u64(), b["id"].as_u64(), c["id"].as_u64()),
        (Some(1), Some(2), Some(3))
    );
    let token_a = a["plainTextToken"].as_str().unwrap().to_string();
    clock.advance_ms(1_234);
    assert_eq!(gw.with_token(&token_a).myself().await.status(), 200);
    let (renamed, _) = alice
        .patch("/user/token/2", json!({"tokenDescription": "renamed"}))
        .await;
    assert_eq!(renamed, 200);
    assert_eq!(alice.delete("/user/token/3").await.0, 200);
    let before = list(&gw).await;
    gw.stop().await;

    let gw = gateway(&sim, dir.path(), clock.clone()).await;
    let after = list(&gw).await;
    assert_eq!(
        after, before,
        "ids, descriptions, dates and lastAccessed are as they were"
    );
    assert_eq!(after[0]["lastAccessed"], T0 + 1_234);
    assert_eq!(after[1]["description"], "renamed");
    let me: Value = gw.with_token(&token_a).myself().await.json().await.unwrap();
    assert_eq!(me["name"], "alice", "the token still works");
    gw.stop().await;

    // A second restart without new tokens, then a create: the deleted id 3 is not reused.
    let gw = gateway(&sim, dir.path(), clock.clone()).await;
    assert_eq!(create(&gw, "new").await["id"], 4);
    gw.stop().await;
}
