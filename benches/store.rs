//! Management queries on a large store: one user's tokens and tokensByFilter
//! pages, with 100,000 tokens (as in `tests/scale.rs`).
//!
//! `cargo bench --bench store`; `TOKENGATE_BENCH_TOKENS=1000000` for a million.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use tokengate::store::{Filter, Scope, SledEngine, TokenRecord};
use tokengate::token::TokenHash;

const T0: u64 = 1_796_000_000_000;
const USERS: u64 = 1_000;

fn tokens() -> u64 {
    std::env::var("TOKENGATE_BENCH_TOKENS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000)
}

/// The synchronous sled engine, filled directly: its queries are what the
/// asynchronous `SledBackend` runs for the management API.
fn filled(dir: &std::path::Path, n: u64) -> SledEngine {
    let engine = SledEngine::open(&dir.join("tokens.sled")).unwrap();
    let mut batch = Vec::with_capacity(1_000);
    for i in 0..n {
        batch.push(TokenRecord {
            id: i + 1,
            hash: TokenHash::of(&format!("token-{i}")),
            description: format!("token {i} of user {}", i % USERS),
            user_key: format!("JIRAUSER{}", 20_000 + i % USERS),
            user_name: format!("user{}", i % USERS),
            created_by: "JIRAUSER10000".into(),
            created: T0 + i,
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
        });
        if batch.len() == 1_000 {
            engine.restore(&batch).unwrap();
            batch.clear();
        }
    }
    engine.restore(&batch).unwrap();
    engine.flush().unwrap();
    engine
}

fn management_queries(c: &mut Criterion) {
    let n = tokens();
    let dir = tempfile::tempdir().unwrap();
    let store = filled(dir.path(), n);
    let mut group = c.benchmark_group(format!("store_{n}_tokens"));
    group.bench_function("list_one_user", |b| {
        b.iter(|| black_box(store.list_user(black_box("JIRAUSER20007")).unwrap()))
    });
    group.bench_function("filter_all_page_0", |b| {
        b.iter(|| black_box(store.filter(&Filter::default(), 0, 50).unwrap()))
    });
    group.bench_function("filter_all_page_100", |b| {
        b.iter(|| black_box(store.filter(&Filter::default(), 5_000, 50).unwrap()))
    });
    let soon = Filter {
        not_valid_after: Some(T0 + 7 * 86_400_000),
        ..Filter::default()
    };
    group.bench_function("filter_expiring_within_7_days", |b| {
        b.iter(|| black_box(store.filter(&soon, 0, 50).unwrap()))
    });
    let one_user = Filter {
        user_keys: vec!["JIRAUSER20007".into()],
        scope: Some(Scope::ReadOnly),
        ..Filter::default()
    };
    group.bench_function("filter_one_user_and_scope", |b| {
        b.iter(|| black_box(store.filter(&one_user, 0, 50).unwrap()))
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20);
    targets = management_queries
}
criterion_main!(benches);
