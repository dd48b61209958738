//! Token creation as the API does it — generate (OS CSPRNG), hash, insert,
//! and wait for the durable flush — by one creator and by 16 at once, which
//! share flushes (group commit). The store lives on disk, not tmpfs.
//!
//! `cargo bench --bench create`
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tokengate::store::{NewToken, Scope, Store};
use tokengate::token::TokenFormat;

static USER: AtomicU64 = AtomicU64::new(0);

async fn create_one(store: &Store, format: &TokenFormat) {
    let token = format.generate().unwrap();
    let user = USER.fetch_add(1, Ordering::Relaxed);
    store
        .create(
            NewToken {
                hash: token.hash(),
                description: "bench".into(),
                user_key: format!("JIRAUSER{user}"),
                user_name: format!("user{user}"),
                created_by: "JIRAUSER10000".into(),
                created: 1,
                valid_until: 2,
                scope: Scope::ReadWrite,
                allowed_ips: Default::default(),
            },
            50,
        )
        .await
        .unwrap();
}

fn creation(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let store = Arc::new(Store::open(&dir.path().join("tokens.sled")).unwrap());
    let format = Arc::new(TokenFormat::new("tg"));
    let mut group = c.benchmark_group("create_durable");
    group.throughput(Throughput::Elements(1));
    group.sample_size(10);
    group.bench_function("one_creator", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    create_one(&store, &format).await;
                }
                start.elapsed()
            })
        })
    });
    group.bench_function("16_concurrent_creators", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                let mut tasks = Vec::new();
                for w in 0..16u64 {
                    let n = iters / 16 + u64::from(w < iters % 16);
                    let (store, format) = (store.clone(), format.clone());
                    tasks.push(tokio::spawn(async move {
                        for _ in 0..n {
                            create_one(&store, &format).await;
                        }
                    }));
                }
                for t in tasks {
                    t.await.unwrap();
                }
                start.elapsed().max(Duration::from_nanos(1))
            })
        })
    });
    group.finish();
}

criterion_group!(benches, creation);
criterion_main!(benches);
