//! The token hot path: read the `Authorization` header, check the checksum,
//! SHA-256, the token from memory (`Store::cached`: tokens in use are
//! cached), expiry, owner and client address (`auth::verify_entry`) — with
//! 1,000 and with 1,000,000 tokens in the store; the same for tokens with
//! `allowedIps` (one network, and 32 where the client is in the last); the
//! address check alone; the rejection of a malformed token; and of an
//! unknown token, which misses the cache and costs one backend lookup. Then,
//! outside criterion, what `allowedIps` adds measured in pairs (see
//! [`paired_added_cost`]).
//!
//! `cargo bench --bench hot_path`
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use http::HeaderMap;
use http::header::{AUTHORIZATION, HeaderValue};
use std::net::IpAddr;
use tokengate::auth::{self, Credential};

use tokengate::store::{AllowedIps, Boxed, Scope, SledBackend, SledEngine, Store, TokenRecord};
use tokengate::token::{TokenFormat, TokenHash};
use tokio::runtime::Runtime;

const T0: u64 = 1_796_000_000_000;

/// The client of every measured request.
const CLIENT: [u8; 4] = [198, 51, 100, 77];

/// `count` networks, of which only the last holds [`CLIENT`].
fn nets(count: u8) -> AllowedIps {
    AllowedIps::from_nets((0..count).map(|i| {
        let entry = if i + 1 == count {
            "198.51.100.0/24".to_string()
        } else {
            format!("10.{i}.0.0/16")
        };
        AllowedIps::parse_entry(&entry).unwrap()
    }))
}

/// A store of `n` tokens, every 250th of which is one of `kept` (with its
/// `allowedIps`).
fn store_with(dir: &std::path::Path, n: u64, kept: &[(TokenHash, AllowedIps)]) -> Store {
    let format = TokenFormat::new("tg");
    let engine = SledEngine::open(&dir.join("tokens.sled")).unwrap();
    let mut batch = Vec::with_capacity(10_000);
    for i in 0..n {
        let (hash, allowed_ips) = match kept.get((i / 250) as usize) {
            Some((h, a)) if i % 250 == 0 => (*h, a.clone()),
            _ => (format.generate().unwrap().hash(), AllowedIps::default()),
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
            allowed_ips,
            last_accessed_from: None,
            previous: None,
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
            auth::verify_entry(found, user.as_deref(), T0, IpAddr::from(CLIENT)).is_ok()
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
        // they sit in memory alike and only the store differs. A third of the
        // kept tokens are unrestricted, a third allow one network, a third 32
        // (the client in the last); the kinds take turns, in the store and in
        // the cache, so that no kind's entries sit in memory better than
        // another's. The rest of the store is unrestricted.
        let per_kind = n.div_ceil(1000) as usize;
        let allowed = [AllowedIps::default(), nets(1), nets(32)];
        let kept: Vec<(String, AllowedIps)> = (0..3 * per_kind)
            .map(|j| {
                let token = format.generate().unwrap().expose().to_string();
                (token, allowed[j % 3].clone())
            })
            .collect();
        let hashes: Vec<(TokenHash, AllowedIps)> = kept
            .iter()
            .map(|(t, a)| (TokenHash::of(t), a.clone()))
            .collect();
        let kinds: Vec<Vec<HeaderMap>> = (0..3)
            .map(|k| {
                kept.iter()
                    .skip(k)
                    .step_by(3)
                    .map(|(t, _)| bearer(t))
                    .collect()
            })
            .collect();
        let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
        let store = store_with(dir.path(), n, &hashes);
        // The first round reads every token from the backend and caches it,
        // as the first request with a token does (the kinds taking turns);
        // the measured ones hit.
        for j in 0..3 * per_kind {
            assert!(verify(&kinds[j % 3][j / 3], &format, &store, &rt));
        }
        assert!(hashes.iter().all(|(h, _)| store.cached(h).is_some()));
        for (name, requests) in [
            "verify_valid_token",
            "verify_valid_token_1_allowed_net",
            "verify_valid_token_32_allowed_nets",
        ]
        .into_iter()
        .zip(&kinds)
        {
            let mut i = 0;
            group.bench_with_input(BenchmarkId::new(name, n), &n, |b, _| {
                b.iter(|| {
                    i = (i + 1) % requests.len();
                    black_box(verify(black_box(&requests[i]), &format, &store, &rt))
                })
            });
        }
        paired_added_cost(&kinds, &format, &store, &rt, n);
        let kept = [kept[0].0.clone()];
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
    // The address check alone, on the packed list as the hot path checks it
    // (boxed here; in the gateway it sits at the end of the cached entry).
    let mut group = c.benchmark_group("allowed_ips_check");
    let client = IpAddr::from(CLIENT);
    for count in [0u8, 1, 4, 32] {
        let allowed = if count == 0 {
            AllowedIps::default()
        } else {
            nets(count)
        }
        .pack(Boxed);
        assert!(allowed.permits(client));
        group.bench_with_input(BenchmarkId::new("nets", count), &count, |b, _| {
            b.iter(|| black_box(black_box(&allowed).permits(black_box(client))))
        });
    }
    group.finish();
}

/// What `allowedIps` adds to a request, measured in pairs: each step of a
/// loop verifies an unrestricted token and one with networks (which one
/// first alternates), each timed on its own, so that drift in the machine
/// (other work, memory traffic), large at a million tokens, hits both alike.
/// Prints the median over rounds of the mean difference per request.
fn paired_added_cost(
    kinds: &[Vec<HeaderMap>],
    format: &TokenFormat,
    store: &Store,
    rt: &Runtime,
    n: u64,
) {
    const ROUNDS: usize = 31;
    const STEPS: usize = 20_000;
    let Some((plain, restricted)) = kinds.split_first() else {
        return;
    };
    for (label, with_nets) in ["1 network", "32 networks"].into_iter().zip(restricted) {
        let mut diffs = Vec::with_capacity(ROUNDS);
        for _ in 0..ROUNDS {
            let (mut a, mut b) = (Duration::ZERO, Duration::ZERO);
            let timed = |h: &HeaderMap, total: &mut Duration| {
                let t = Instant::now();
                black_box(verify(black_box(h), format, store, rt));
                *total += t.elapsed();
            };
            for (step, (x, y)) in plain.iter().zip(with_nets).cycle().take(STEPS).enumerate() {
                if step % 2 == 0 {
                    timed(x, &mut a);
                    timed(y, &mut b);
                } else {
                    timed(y, &mut b);
                    timed(x, &mut a);
                }
            }
            diffs.push((b.as_nanos() as f64 - a.as_nanos() as f64) / STEPS as f64);
        }
        diffs.sort_by(f64::total_cmp);
        println!(
            "allowedIps, {n} tokens, {label}: adds {:.0} ns to a request (median of {ROUNDS} paired rounds of {STEPS}; quartiles {:.0} to {:.0} ns)",
            diffs[ROUNDS / 2],
            diffs[ROUNDS / 4],
            diffs[3 * ROUNDS / 4]
        );
    }
}

criterion_group!(benches, hot_path);
criterion_main!(benches);
