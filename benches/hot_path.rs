//! The token hot path: read the `Authorization` header, check the checksum,
//! SHA-256, the token from memory (`Store::cached`: tokens in use are
//! cached), expiry and owner (`auth::verify_entry`) — with 1,000 and with
//! 1,000,000 tokens in the store; the rejection of a malformed token; and of
//! an unknown token, which misses the cache and costs one backend lookup.
//!
//! `cargo bench --bench hot_path`
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::sync::Arc;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use http::HeaderMap;
use http::header::{AUTHORIZATION, HeaderValue};
use tokengate::auth::{self, Credential};
use tokengate::store::{Scope, SledBackend, SledEngine, Store, TokenRecord};
use tokengate::token::{TokenFormat, TokenHash};
use tokio::runtime::Runtime;

const T0: u64 = 1_796_000_000_000;

/// A store of `n` tokens, every 1000th of which is one of `kept`.
fn store_with(dir: &std::path::Path, n: u64, kept: &[TokenHash]) -> Store {
    let format = TokenFormat::new("tg");
    let engine = SledEngine::open(&dir.join("tokens.sled")).unwrap();
    let mut batch = Vec::with_capacity(10_000);
    for i in 0..n {
        let hash = match kept.get((i / 1000) as usize) {
            Some(h) if i % 1000 == 0 => *h,
            _ => format.generate().unwrap().hash(),
        };
        batch.push(TokenRecord {
            id: i + 1,
            hash,
            description: format!("token {i}"),
            user_key: format!("JIRAUSER{}", 20_000 + i % 1000),
            user_name: format!("user{}", i % 1000),
            created_by: "JIRAUSER10000".into(),
            created: T0,
            valid_until: T0 + 86_400_000,
            last_accessed: 0,
            scope: Scope::ReadWrite,
        });
        if batch.len() == batch.capacity() {
            engine.restore(&batch).unwrap();
            batch.clear();
        }
    }
    engine.restore(&batch).unwrap();
    engine.flush().unwrap();
    // Let sled's background work after a bulk load settle before measuring.
    std::thread::sleep(std::time::Duration::from_secs(10));
    Store::with_backend(Arc::new(SledBackend::new(Arc::new(engine))))
}

fn bearer(token: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(
        AUTHORIZATION,
        HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
    );
    h
}

/// What the gateway does per token request before forwarding: a token in
/// use comes from memory without waiting; only a miss asks the backend
/// (here through `rt`, which the measured hits never enter).
fn verify(headers: &HeaderMap, format: &TokenFormat, store: &Store, rt: &Runtime) -> bool {
    match auth::credential(headers, format) {
        Credential::Token { user, token } => {
            if format.check(token.expose()).is_err() {
                return false;
            }
            let hash = TokenHash::of(token.expose());
            let found = match store.cached(&hash) {
                Some(entry) => Some(entry),
                None => rt.block_on(store.lookup(&hash)).unwrap(),
            };
            auth::verify_entry(found, user.as_deref(), T0).is_ok()
        }
        _ => false,
    }
}

fn hot_path(c: &mut Criterion) {
    let format = TokenFormat::new("tg");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let sizes: Vec<u64> = std::env::var("TOKENGATE_BENCH_SIZES")
        .ok()
        .map(|v| v.split(',').filter_map(|s| s.parse().ok()).collect())
        .unwrap_or_else(|| vec![1_000, 1_000_000]);
    let mut group = c.benchmark_group("hot_path");
    group.throughput(Throughput::Elements(1));
    for &n in &sizes {
        // The requests are made before the bulk load, so that at every size
        // they sit in memory alike and only the store differs.
        let kept: Vec<String> = (0..n.div_ceil(1000))
            .map(|_| format.generate().unwrap().expose().to_string())
            .collect();
        let requests: Vec<HeaderMap> = kept.iter().map(|t| bearer(t)).collect();
        let hashes: Vec<TokenHash> = kept.iter().map(|t| TokenHash::of(t)).collect();
        let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
        let store = store_with(dir.path(), n, &hashes);
        // The first round reads every token from the backend and caches it,
        // as the first request with a token does; the measured ones hit.
        assert!(requests.iter().all(|h| verify(h, &format, &store, &rt)));
        assert!(hashes.iter().all(|h| store.cached(h).is_some()));
        let mut i = 0;
        group.bench_with_input(BenchmarkId::new("verify_valid_token", n), &n, |b, _| {
            b.iter(|| {
                i = (i + 1) % requests.len();
                black_box(verify(black_box(&requests[i]), &format, &store, &rt))
            })
        });
        let mut bad = kept[0].clone();
        bad.replace_range(10..11, if &bad[10..11] == "a" { "b" } else { "a" });
        let malformed = bearer(&bad);
        assert!(!verify(&malformed, &format, &store, &rt));
        group.bench_with_input(BenchmarkId::new("reject_malformed_token", n), &n, |b, _| {
            b.iter(|| black_box(verify(black_box(&malformed), &format, &store, &rt)))
        });
        let unknown = bearer(format.generate().unwrap().expose());
        group.bench_with_input(BenchmarkId::new("reject_unknown_token", n), &n, |b, _| {
            b.iter(|| black_box(verify(black_box(&unknown), &format, &store, &rt)))
        });
    }
    group.finish();
}

criterion_group!(benches, hot_path);
criterion_main!(benches);
