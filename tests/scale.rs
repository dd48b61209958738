//! 100,000 tokens in the store: one user's list and tokensByFilter pages are
//! correct (how fast they are is measured by `cargo bench --bench store`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use tokengate::store::{Scope, SledEngine, TokenRecord};
use tokengate::token::TokenHash;

const USERS: u64 = 1_000;
const PER_USER: u64 = 100;

/// Fills a store directly, a thousand records per transaction, as an import would.
fn fill(path: &std::path::Path) {
    let engine = SledEngine::open(path).unwrap();
    let records: Vec<TokenRecord> = (0..USERS * PER_USER)
        .map(|i| {
            let user = i % USERS;
            let (key, name) = if user == 7 {
                (ALICE_KEY.to_string(), "alice".to_string())
            } else {
                (format!("JIRAUSER{}", 20_000 + user), format!("user{user}"))
            };
            TokenRecord {
                id: i + 1,
                hash: TokenHash::of(&format!("token-{i}")),
                description: format!("token {i} of {name}"),
                user_key: key,
                user_name: name,
                created_by: "JIRAUSER10000".into(),
                created: T0 - 1_000_000 + i,
                // Spread over a year; every tenth token never expires.
                valid_until: if i % 10 == 0 {
                    0
                } else {
                    T0 + (i % 365) * 86_400_000
                },
                last_accessed: 0,
                scope: if i % 2 == 0 {
                    Scope::ReadWrite
                } else {
                    Scope::ReadOnly
                },
                allowed_ips: Default::default(),
                last_accessed_from: None,
                previous: None,
            }
        })
        .collect();
    for chunk in records.chunks(1_000) {
        assert_eq!(engine.restore(chunk).unwrap(), chunk.len() as u64);
    }
    engine.flush().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_users_list_and_filter_pages_with_100k_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("tokens.sled");
    let path = store.clone();
    tokio::task::spawn_blocking(move || fill(&path))
        .await
        .unwrap();

    let s = JiraSetup::jira_with(|c| c.tokens.store_path = store).await;
    let (_, list) = s.as_user("alice", "alice").get("/user/token").await;
    let list = list.as_array().unwrap();
    assert_eq!(list.len() as u64, PER_USER);
    let ids: Vec<u64> = list.iter().map(|t| t["id"].as_u64().unwrap()).collect();
    let expected: Vec<u64> = (0..PER_USER).map(|n| n * USERS + 8).collect();
    assert_eq!(ids, expected, "alice's tokens, by id");

    let admin = s.as_user("admin", "admin");
    let page = |q: String| {
        let admin = &admin;
        async move { admin.get(&format!("/user/tokensByFilter?{q}")).await.1 }
    };
    let all = page("notValidAfter=-1&page=3&limit=50".into()).await;
    assert_eq!(all["total"], USERS * PER_USER);
    assert_eq!(all["totalPages"], USERS * PER_USER / 50);
    assert_eq!(all["content"][0]["id"], 151);
    assert_eq!(all["content"].as_array().unwrap().len(), 50);

    // Tokens expiring within 30 days: validUntil = T0 + d days for d = i % 365 in 1..=30, i % 10 != 0.
    let cutoff = T0 + 30 * 86_400_000;
    let expected_total = (0..USERS * PER_USER)
        .filter(|i| i % 10 != 0 && i % 365 <= 30)
        .count() as u64;
    let soon = page(format!("notValidAfter={cutoff}&limit=50")).await;
    assert_eq!(soon["total"], expected_total);
    let first = soon["content"][0]["validUntil"].as_u64().unwrap();
    assert!(first <= cutoff && first != 0);

    let alices = page(format!(
        "notValidAfter=-1&userFilter={ALICE_KEY}&tokenScope=2&limit=50"
    ))
    .await;
    assert_eq!(alices["total"], 0, "alice's ids are all odd: read-only");
    let alices = page(format!(
        "notValidAfter=-1&userFilter={ALICE_KEY}&tokenScope=1&limit=50"
    ))
    .await;
    assert_eq!(alices["total"], PER_USER);
    assert_eq!(alices["totalPages"], 2);
    assert_eq!(alices["content"][0]["tokenForUserKey"], ALICE_KEY);
}
