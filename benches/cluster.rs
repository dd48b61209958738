//! Cluster mode on PostgreSQL: what a gateway node pays for sharing its
//! tokens through a database. Prints its figures and exits; not a criterion
//! benchmark (most figures are latencies of single events, quoted as p50/p99).
//!
//! - `cold`: a token looked up for the first time on a node (cache miss, one
//!   PostgreSQL round trip) against the same token again (cache hit), at the
//!   store level (`Store::lookup` on a fresh `Store` over `PostgresBackend`,
//!   also with the pool's connection driven by another thread's event loop)
//!   and end to end (each token sent once, then again, through an in-process
//!   gateway in front of the simulated Jira);
//! - `revoke`: revocation between two nodes (two `Store`s, each with its own
//!   `PostgresBackend`: pool and `LISTEN` connection): node B has a token
//!   cached, node A deletes it, and the time from the delete's return (and
//!   from its call) until B no longer has it, over 1,000 revocations;
//! - `create`: 16 concurrent creators spread over two nodes, through the
//!   management API of two in-process gateways (Bearer tokens), in
//!   alternating rounds with 16 tasks on two `Store`s (no HTTP).
//!
//! Each part runs on a database of its own, created for it and dropped after.
//! The million-token figures (pages, start-up, memory) are `benches/cluster_scale.sh`;
//! requests/s against sled is `benches/cluster_load.sh`.
//!
//! ```sh
//! cargo bench --bench cluster
//! TOKENGATE_BENCH_ONLY=revoke cargo bench --bench cluster     # one part (cold, revoke, create)
//! TOKENGATE_BENCH_POSTGRES=postgres://user@host:5432/postgres cargo bench --bench cluster
//! ```
//!
//! `TOKENGATE_BENCH_POSTGRES` is the server (default
//! `postgres://postgres@127.0.0.1:5432/postgres`; its user must be allowed to
//! create databases). When it does not answer, one line says so and the
//! program exits 0. Sizes: `COLD_TOKENS` (default 2000), `E2E_TOKENS` (1000),
//! `REVOCATIONS` (1000), `CREATE_SECONDS` (5) and `CREATE_ROUNDS` (3).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokengate::clock::SystemClock;
use tokengate::config::{Config, StoreBackend};
use tokengate::demo::sim::{SimConfig, SimUpstream, TrustedHeader};
use tokengate::store::{
    AllowedIps, NewToken, PostgresBackend, PostgresSettings, Scope, Store, TokenRecord,
};
use tokengate::token::{TokenFormat, TokenHash};
use tokengate::{Options, Running};

const DEFAULT_SERVER: &str = "postgres://postgres@127.0.0.1:5432/postgres";
/// The variable the in-process gateways read the database URL from.
const URL_VAR: &str = "TOKENGATE_BENCH_PG_URL";
/// The secret between the gateways and the simulated Jira (header mode).
const SECRET: &str = "bench-secret-between-gateway-and-jira";
const API: &str = "/rest/de.resolution.apitokenauth/latest";
/// As `Config::default()`: the stale limit of a gateway's cache.
const MAX_STALE_MS: u64 = 30_000;

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn wanted(part: &str) -> bool {
    match std::env::var("TOKENGATE_BENCH_ONLY") {
        Ok(only) if !only.trim().is_empty() => only.split(',').any(|p| p.trim() == part),
        _ => true,
    }
}

// ---------------------------------------------------------------------------
// Databases

/// Where `url` points, without a password.
fn shown(url: &str) -> String {
    match url.parse::<tokio_postgres::Config>() {
        Ok(c) => format!(
            "user {} at {:?} port {:?}",
            c.get_user().unwrap_or("?"),
            c.get_hosts(),
            c.get_ports()
        ),
        Err(_) => "(an unreadable URL)".to_string(),
    }
}

/// `url` with its database name replaced by `db`.
fn with_db(url: &str, db: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, format!("?{q}")),
        None => (url, String::new()),
    };
    let after_scheme = base.find("://").map_or(0, |i| i + 3);
    let root = match base[after_scheme..].find('/') {
        Some(i) => &base[..after_scheme + i],
        None => base,
    };
    format!("{root}/{db}{query}")
}

async fn connect(url: &str) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

/// A database for one part of the run, dropped with this value.
struct BenchDb {
    url: String,
    name: String,
    server: String,
}

impl BenchDb {
    async fn create(server: &str) -> BenchDb {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let name = format!(
            "tg_bench_{}_{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let admin = connect(server).await.expect("connect to PostgreSQL");
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .unwrap_or_else(|e| panic!("cannot create the database {name}: {e}"));
        BenchDb {
            url: with_db(server, &name),
            name,
            server: server.to_string(),
        }
    }
}

impl Drop for BenchDb {
    fn drop(&mut self) {
        // From a thread of its own: this may run inside a runtime.
        let (server, name) = (self.server.clone(), self.name.clone());
        let dropped = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            rt.block_on(async {
                let admin = connect(&server).await.ok()?;
                admin
                    .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .await
                    .ok()
            })
        })
        .join();
        if !matches!(dropped, Ok(Some(()))) {
            eprintln!("could not drop the benchmark database {}", self.name);
        }
    }
}

fn settings(url: &str) -> PostgresSettings {
    PostgresSettings {
        url: url.to_string(),
        ca_file: None,
        // As `[tokens] postgres_pool_size`'s default.
        pool_size: 16,
    }
}

/// A node's store: its own pool and `LISTEN` connection, the gateway's
/// stale limit. Returns once it listens.
async fn node(url: &str) -> Arc<Store> {
    let backend = PostgresBackend::open(&settings(url))
        .await
        .expect("open the PostgreSQL store");
    let store = Arc::new(Store::new(
        Arc::new(backend),
        Arc::new(SystemClock),
        MAX_STALE_MS,
    ));
    let start = Instant::now();
    while !store.cache().is_listening() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the node does not listen for changes after 10 s"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    store
}

fn record(id: u64, hash: TokenHash, user: u64) -> TokenRecord {
    TokenRecord {
        id,
        hash,
        description: format!("bench token {id}"),
        user_key: format!("JIRAUSER{}", 20_000 + user),
        user_name: format!("user{user}"),
        created_by: "JIRAUSER10000".into(),
        created: 1_796_000_000_000,
        valid_until: 0,
        last_accessed: 0,
        scope: Scope::ReadWrite,
        allowed_ips: AllowedIps::default(),
        last_accessed_from: None,
        previous: None,
    }
}

/// Stores `records` as they are (the import path), in one transaction.
async fn seed(url: &str, records: Vec<TokenRecord>) {
    let backend = PostgresBackend::open(&settings(url))
        .await
        .expect("open the PostgreSQL store");
    let n = records.len() as u64;
    let store = Store::with_backend(Arc::new(backend));
    assert_eq!(store.backend().restore(records).await.unwrap(), n);
    store.close().await.unwrap();
}

// ---------------------------------------------------------------------------
// Figures

/// Nearest-rank percentile of sorted samples.
fn pct(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// `label  n  p50  p99  max`, in µs.
fn row_us(label: &str, samples: &mut [Duration]) {
    samples.sort_unstable();
    println!(
        "  {label:<34} {:>6} {:>10.1} {:>10.1} {:>10.1}",
        samples.len(),
        us(pct(samples, 0.50)),
        us(pct(samples, 0.99)),
        us(*samples.last().unwrap_or(&Duration::ZERO)),
    );
}

fn header_us() {
    println!(
        "  {:<34} {:>6} {:>10} {:>10} {:>10}",
        "", "n", "p50 µs", "p99 µs", "max µs"
    );
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n == 0 {
        0.0
    } else if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

// ---------------------------------------------------------------------------
// Gateways

/// The simulated Jira, trusting `X-Remote-User` with the shared secret.
async fn sim() -> SimUpstream {
    let mut config = SimConfig::jira();
    config.trusted_header = Some(TrustedHeader {
        user_header: "X-Remote-User".into(),
        secret: Some(("X-Gateway-Secret".into(), SECRET.into())),
    });
    SimUpstream::start(config).await.unwrap()
}

/// A gateway on the database at `db_url` in front of `sim` (header mode),
/// with an admin listener; returns once `/readyz` says it is ready and
/// listening for changes.
async fn gateway(
    sim: &SimUpstream,
    db_url: &str,
    dir: &std::path::Path,
    tweak: impl FnOnce(&mut Config),
) -> Running {
    let mut c = Config::default();
    c.server.listen = "127.0.0.1:0".parse().unwrap();
    c.server.admin_listen = "127.0.0.1:0".into();
    c.upstream.url = sim.url();
    c.upstream.credentials.secret_header_name = "X-Gateway-Secret".into();
    c.upstream.credentials.secret_env = "GW_SECRET".into();
    c.tokens.backend = StoreBackend::Postgres;
    c.tokens.postgres_url_env = URL_VAR.into();
    // Not used on PostgreSQL.
    c.tokens.store_path = dir.join("unused.sled");
    tweak(&mut c);
    let env: HashMap<String, String> = [
        (URL_VAR.to_string(), db_url.to_string()),
        ("GW_SECRET".to_string(), SECRET.to_string()),
    ]
    .into();
    let options = Options {
        clock: Arc::new(SystemClock),
        env: Arc::new(move |k| env.get(k).cloned()),
    };
    let running = tokengate::start(c, options).await.expect("gateway starts");
    let readyz = format!("http://{}/readyz", running.admin_addr().unwrap());
    let http = client();
    let start = Instant::now();
    loop {
        if let Ok(resp) = http.get(&readyz).send().await
            && resp.status() == 200
            && let Ok(body) = resp.json::<Value>().await
            && body["notifications"] == "ok"
        {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "the gateway is not ready after 15 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    running
}

fn client() -> reqwest::Client {
    // reqwest is built without a crypto provider; tokengate uses ring.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

// ---------------------------------------------------------------------------
// cold: a cache miss against a hit

fn cold_store_level(server: &str) {
    let n = env_num("COLD_TOKENS", 2_000);
    // One event loop for the caller and the pool's connection, as on a
    // gateway worker.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let db = BenchDb::create(server).await;
        let hash = |i: u64| TokenHash::of(&format!("cold-{i}"));
        seed(
            &db.url,
            (1..=n).map(|i| record(i, hash(i), i % 100)).collect(),
        )
        .await;
        let store = node(&db.url).await;
        // The pool's connection and its prepared statement.
        for i in 0..50 {
            store
                .lookup(&TokenHash::of(&format!("warm-{i}")))
                .await
                .unwrap();
        }
        let (mut miss, mut hit, mut unknown) = (Vec::new(), Vec::new(), Vec::new());
        for i in 1..=n {
            let h = hash(i);
            assert!(store.cached(&h).is_none());
            let t = Instant::now();
            let found = store.lookup(&h).await.unwrap();
            miss.push(t.elapsed());
            assert_eq!(found.map(|e| e.id), Some(i));
            let t = Instant::now();
            let found = store.lookup(&h).await.unwrap();
            hit.push(t.elapsed());
            assert!(found.is_some());
            let u = TokenHash::of(&format!("unknown-{i}"));
            let t = Instant::now();
            assert!(store.lookup(&u).await.unwrap().is_none());
            unknown.push(t.elapsed());
        }
        store.close().await.unwrap();

        // Again on another fresh Store, whose pooled connection was opened
        // by another thread's event loop and so is driven there: as when a
        // gateway worker takes a connection that another worker (or the
        // main loop) opened. Each lookup then crosses threads twice.
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let url = db.url.clone();
        let other = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let store = node(&url).await;
                for i in 0..50 {
                    store
                        .lookup(&TokenHash::of(&format!("warm-{i}")))
                        .await
                        .unwrap();
                }
                let _ = ready_tx.send(store.clone());
                let _ = stop_rx.await;
                store.close().await.unwrap();
            });
        });
        let elsewhere = ready_rx.await.unwrap();
        let mut crossed = Vec::new();
        for i in 1..=n {
            let h = hash(i);
            let t = Instant::now();
            let found = elsewhere.lookup(&h).await.unwrap();
            crossed.push(t.elapsed());
            assert_eq!(found.map(|e| e.id), Some(i));
        }
        drop(elsewhere);
        let _ = stop_tx.send(());
        other.join().unwrap();

        println!(
            "cold miss vs hit, store level: Store::lookup on a fresh Store over PostgresBackend, \
             {n} tokens each looked up once (miss), again at once (hit), and an unknown token, \
             in turn; current-thread runtime, which also drives the pool's connection; then the \
             misses again on a Store whose connection another thread's event loop drives"
        );
        header_us();
        row_us("first lookup (miss: PostgreSQL)", &mut miss);
        row_us("second lookup (hit: memory)", &mut hit);
        row_us("unknown token (always PostgreSQL)", &mut unknown);
        row_us("miss, connection on another thread", &mut crossed);
    });
}

fn cold_end_to_end(server: &str) {
    let n = env_num("E2E_TOKENS", 1_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let db = BenchDb::create(server).await;
        let dir = tempfile::tempdir().unwrap();
        let format = TokenFormat::new("tg");
        // n + 1 tokens of alice (a user of the simulated Jira); the last
        // one warms the connections.
        let tokens: Vec<String> = (0..=n)
            .map(|_| format.generate().unwrap().expose().to_string())
            .collect();
        let records = tokens
            .iter()
            .zip(1..)
            .map(|(t, id)| TokenRecord {
                user_key: "JIRAUSER10100".into(),
                user_name: "alice".into(),
                ..record(id, TokenHash::of(t), 0)
            })
            .collect();
        seed(&db.url, records).await;
        let sim = sim().await;
        let gw = gateway(&sim, &db.url, dir.path(), |_| {}).await;
        let url = format!("http://{}/rest/api/2/issue/DEMO-1", gw.addr());
        let http = client();
        let get = |token: &str| {
            let req = http.get(&url).bearer_auth(token);
            async move {
                let t = Instant::now();
                let resp = req.send().await.unwrap();
                let status = resp.status();
                resp.bytes().await.unwrap();
                assert_eq!(status, 200);
                t.elapsed()
            }
        };
        let (warm, measured) = tokens.split_last().unwrap();
        for _ in 0..200 {
            get(warm).await;
        }
        let (mut miss, mut hit) = (Vec::new(), Vec::new());
        for token in measured {
            miss.push(get(token).await);
            hit.push(get(token).await);
        }
        println!(
            "cold miss vs hit, end to end: GET /rest/api/2/issue/DEMO-1 with a Bearer token through \
             an in-process gateway (PostgreSQL backend) in front of the simulated Jira, one \
             keep-alive connection; {n} tokens each sent once (miss), then again (hit)"
        );
        header_us();
        let (mut m, mut h) = (miss.clone(), hit.clone());
        row_us("first request (miss)", &mut miss);
        row_us("second request (hit)", &mut hit);
        m.sort_unstable();
        h.sort_unstable();
        println!(
            "  what a miss adds: {:.1} µs at p50, {:.1} µs at p99",
            us(pct(&m, 0.5)) - us(pct(&h, 0.5)),
            us(pct(&m, 0.99)) - us(pct(&h, 0.99))
        );
        gw.stop().await;
    });
}

// ---------------------------------------------------------------------------
// revoke: a deletion on node A, seen on node B

fn revocation(server: &str) {
    let n = env_num("REVOCATIONS", 1_000);
    // The nodes' connections and listeners run on the runtime's threads; the
    // main thread deletes and watches B's cache without taking a worker.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let db = rt.block_on(BenchDb::create(server));
    let (a, b) = rt.block_on(async { (node(&db.url).await, node(&db.url).await) });
    let format = TokenFormat::new("tg");
    let mut made = Vec::new();
    for i in 0..n {
        let token = format.generate().unwrap();
        let r = rt
            .block_on(a.create(
                NewToken {
                    hash: token.hash(),
                    description: format!("revocation {i}"),
                    user_key: format!("JIRAUSER{}", 20_000 + i % 100),
                    user_name: format!("user{}", i % 100),
                    created_by: "JIRAUSER10000".into(),
                    created: 1,
                    valid_until: 0,
                    scope: Scope::ReadWrite,
                    allowed_ips: AllowedIps::default(),
                },
                0,
            ))
            .unwrap();
        made.push((r.id, r.hash));
    }
    let bound = Duration::from_secs(5);
    let (mut from_return, mut from_call, mut deletes) = (Vec::new(), Vec::new(), Vec::new());
    let (mut at_return, mut late, mut not_listening) = (0u64, 0u64, 0u64);
    for (id, hash) in made {
        assert!(rt.block_on(b.lookup(&hash)).unwrap().is_some());
        assert!(b.cached(&hash).is_some(), "B has it cached");
        if !b.cache().is_listening() {
            not_listening += 1;
        }
        // Watches B's cache from before the delete, on a thread of its own.
        let watcher = {
            let b = b.clone();
            std::thread::spawn(move || {
                let start = Instant::now();
                loop {
                    if b.cached(&hash).is_none() {
                        return Some(Instant::now());
                    }
                    if start.elapsed() > bound {
                        return None;
                    }
                    std::thread::sleep(Duration::from_micros(20));
                }
            })
        };
        let t = Instant::now();
        assert!(rt.block_on(a.delete(id)).unwrap().is_some());
        let returned = Instant::now();
        deletes.push(returned - t);
        match watcher.join().unwrap() {
            Some(gone) => {
                if gone <= returned {
                    at_return += 1;
                }
                from_return.push(gone.saturating_duration_since(returned));
                from_call.push(gone - t);
            }
            None => {
                late += 1;
                from_return.push(bound);
                from_call.push(bound);
            }
        }
    }
    let over_1s = from_return
        .iter()
        .filter(|d| **d > Duration::from_secs(1))
        .count();
    println!(
        "revocation propagation: two nodes (two Stores, each with its own pool and LISTEN \
         connection) on one database; {n} times: B looks the token up (cached), A deletes it; \
         a thread polls B's cache every ~20 µs from before the delete"
    );
    println!(
        "  {:<34} {:>6} {:>10} {:>10} {:>10}",
        "", "n", "p50 ms", "p99 ms", "max ms"
    );
    for (label, samples) in [
        ("delete returned on A → gone on B", &mut from_return),
        ("delete called on A → gone on B", &mut from_call),
        ("the delete on A (commit)", &mut deletes),
    ] {
        samples.sort_unstable();
        println!(
            "  {label:<34} {:>6} {:>10.3} {:>10.3} {:>10.3}",
            samples.len(),
            ms(pct(samples, 0.5)),
            ms(pct(samples, 0.99)),
            ms(*samples.last().unwrap())
        );
    }
    println!(
        "  gone on B before the delete returned on A: {at_return} (counted as 0); over 1 s: \
         {over_1s}; not gone within {} s: {late}; B not listening before a delete: {not_listening}",
        bound.as_secs()
    );
    rt.block_on(async {
        a.close().await.unwrap();
        b.close().await.unwrap();
    });
    drop(db);
}

// ---------------------------------------------------------------------------
// create: 16 concurrent creators on two nodes

const CREATORS: usize = 16;

/// Runs `CREATORS` loops of `one` for `seconds`; creations/s, per-creation
/// latencies, failures.
async fn creators<F, Fut>(seconds: u64, one: F) -> (f64, Vec<Duration>, u64)
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let one = Arc::new(one);
    let stop = Arc::new(AtomicBool::new(false));
    let failed = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let tasks: Vec<_> = (0..CREATORS)
        .map(|k| {
            let (one, stop, failed) = (one.clone(), stop.clone(), failed.clone());
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    let t = Instant::now();
                    if one(k, i).await {
                        latencies.push(t.elapsed());
                    } else {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                    i += 1;
                }
                latencies
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let elapsed = start.elapsed();
    let rate = all.len() as f64 / elapsed.as_secs_f64();
    (rate, all, failed.load(Ordering::Relaxed))
}

fn concurrent_creators(server: &str) {
    let seconds = env_num("CREATE_SECONDS", 5);
    let rounds = env_num("CREATE_ROUNDS", 3);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let db = BenchDb::create(server).await;
        let dir = tempfile::tempdir().unwrap();
        let format = Arc::new(TokenFormat::new("tg"));
        // A Bearer token for each creator, each of its own user.
        let tokens: Vec<String> = (0..CREATORS)
            .map(|_| format.generate().unwrap().expose().to_string())
            .collect();
        let records = tokens
            .iter()
            .zip(1u64..)
            .map(|(t, id)| TokenRecord {
                user_key: format!("JIRAUSER{}", 30_000 + id),
                user_name: format!("creator{id}"),
                ..record(id, TokenHash::of(t), 0)
            })
            .collect();
        seed(&db.url, records).await;
        let sim = sim().await;
        // No per-user limit: each creator makes thousands.
        let no_limit = |c: &mut Config| c.tokens.max_tokens_per_user = 0;
        let gws = [
            gateway(&sim, &db.url, dir.path(), no_limit).await,
            gateway(&sim, &db.url, dir.path(), no_limit).await,
        ];
        let urls: Arc<Vec<String>> = Arc::new(
            gws.iter()
                .map(|g| format!("http://{}{API}/user/token", g.addr()))
                .collect(),
        );
        let stores = Arc::new([node(&db.url).await, node(&db.url).await]);
        let http = client();
        let tokens = Arc::new(tokens);

        let api_round = || {
            let (http, urls, tokens) = (http.clone(), urls.clone(), tokens.clone());
            creators(seconds, move |k, i| {
                let req = http
                    .post(&urls[k % 2])
                    .bearer_auth(&tokens[k])
                    .json(&serde_json::json!({ "tokenDescription": format!("bench {k}-{i}") }));
                async move {
                    match req.send().await {
                        Ok(resp) if resp.status() == 200 => {
                            let body: Value = resp.json().await.unwrap_or(Value::Null);
                            body["plainTextToken"].is_string()
                        }
                        _ => false,
                    }
                }
            })
        };
        let store_round = || {
            let (stores, format) = (stores.clone(), format.clone());
            creators(seconds, move |k, i| {
                let (stores, format) = (stores.clone(), format.clone());
                async move {
                    let token = format.generate().unwrap();
                    stores[k % 2]
                        .create(
                            NewToken {
                                hash: token.hash(),
                                description: format!("bench {k}-{i}"),
                                user_key: format!("JIRAUSER{}", 30_001 + k),
                                user_name: format!("creator{}", k + 1),
                                created_by: format!("JIRAUSER{}", 30_001 + k),
                                created: 1,
                                valid_until: 0,
                                scope: Scope::ReadWrite,
                                allowed_ips: AllowedIps::default(),
                            },
                            0,
                        )
                        .await
                        .is_ok()
                }
            })
        };
        // Connections, prepared statements, allocator.
        let _ = creators(1, {
            let (http, urls, tokens) = (http.clone(), urls.clone(), tokens.clone());
            move |k, _| {
                let req = http
                    .post(&urls[k % 2])
                    .bearer_auth(&tokens[k])
                    .json(&serde_json::json!({ "tokenDescription": "warm-up" }));
                async move { req.send().await.is_ok_and(|r| r.status() == 200) }
            }
        })
        .await;

        println!(
            "{CREATORS} concurrent creators spread over two nodes, {seconds} s rounds, \
             alternating: [api] POST {API}/user/token with a Bearer token through the management \
             API of two in-process gateways (PostgreSQL backend, 8 creators each); [store] \
             Store::create on two Stores (8 tasks each), no HTTP"
        );
        println!(
            "  {:<6} {:<6} {:>12} {:>10} {:>10} {:>8}",
            "round", "path", "creates/s", "p50 ms", "p99 ms", "failed"
        );
        let (mut api_rates, mut store_rates) = (Vec::new(), Vec::new());
        let (mut api_lat, mut store_lat) = (Vec::new(), Vec::new());
        let mut made = 0u64;
        for round in 1..=rounds {
            for path in ["api", "store"] {
                let (rate, mut lat, failed) = if path == "api" {
                    api_round().await
                } else {
                    store_round().await
                };
                made += lat.len() as u64;
                lat.sort_unstable();
                println!(
                    "  {round:<6} {path:<6} {rate:>12.0} {:>10.2} {:>10.2} {failed:>8}",
                    ms(pct(&lat, 0.5)),
                    ms(pct(&lat, 0.99))
                );
                if path == "api" {
                    api_rates.push(rate);
                    api_lat.extend(lat);
                } else {
                    store_rates.push(rate);
                    store_lat.extend(lat);
                }
            }
        }
        api_lat.sort_unstable();
        store_lat.sort_unstable();
        println!(
            "  median creates/s: api {:.0} (p50 {:.2} ms, p99 {:.2} ms over all rounds), \
             store {:.0} (p50 {:.2} ms, p99 {:.2} ms)",
            median(&mut api_rates),
            ms(pct(&api_lat, 0.5)),
            ms(pct(&api_lat, 0.99)),
            median(&mut store_rates),
            ms(pct(&store_lat, 0.5)),
            ms(pct(&store_lat, 0.99)),
        );
        // Every acknowledged creation is there, each with its own id, and
        // the kept count agrees.
        let check = connect(&db.url).await.unwrap();
        let row = check
            .query_one(
                "SELECT count(*), count(*) FILTER (WHERE description <> 'warm-up'), \
                 count(DISTINCT id), (SELECT sum(n) FROM tokengate_counts)::bigint \
                 FROM tokengate_tokens",
                &[],
            )
            .await
            .unwrap();
        let (rows, measured, ids, counted): (i64, i64, i64, i64) =
            (row.get(0), row.get(1), row.get(2), row.get(3));
        let ok = measured == made as i64 + CREATORS as i64 && ids == rows && counted == rows;
        println!(
            "  check {}: {made} acknowledged + {CREATORS} creators' own = {measured} rows besides \
             the warm-up's; {rows} rows, {ids} distinct ids, kept count {counted}",
            if ok { "ok" } else { "FAILED" }
        );
        // Every creation updates a row of each: what that leaves behind.
        for row in check
            .query(
                "SELECT relname::text, pg_relation_size(relid), n_live_tup, n_dead_tup, \
                 autovacuum_count FROM pg_stat_user_tables \
                 WHERE relname IN ('tokengate_counts', 'tokengate_users') ORDER BY relname",
                &[],
            )
            .await
            .unwrap()
        {
            let (name, bytes, live, dead, vacuums): (String, i64, i64, i64, i64) =
                (row.get(0), row.get(1), row.get(2), row.get(3), row.get(4));
            println!(
                "  {name}: {live} rows in {} kB, {dead} dead row versions, autovacuumed {vacuums} times",
                bytes / 1024
            );
        }
        for gw in gws {
            gw.stop().await;
        }
        for s in stores.iter() {
            s.close().await.unwrap();
        }
    });
}

fn main() {
    let server =
        std::env::var("TOKENGATE_BENCH_POSTGRES").unwrap_or_else(|_| DEFAULT_SERVER.to_string());
    let reachable = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            match tokio::time::timeout(Duration::from_secs(5), connect(&server)).await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err("no answer within 5 s".to_string()),
            }
        });
    if let Err(why) = reachable {
        println!(
            "SKIPPED: the cluster benchmarks need PostgreSQL, and none answers ({}: {why}); \
             start it or set TOKENGATE_BENCH_POSTGRES=postgres://user@host:port/db",
            shown(&server)
        );
        return;
    }
    let settings = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let c = connect(&server).await.unwrap();
            let row = c
                .query_one(
                    "SELECT current_setting('server_version'), current_setting('fsync'), \
                     current_setting('synchronous_commit'), current_setting('shared_buffers')",
                    &[],
                )
                .await
                .unwrap();
            let v: [String; 4] = [row.get(0), row.get(1), row.get(2), row.get(3)];
            v
        });
    println!(
        "cluster benchmarks on PostgreSQL {} ({}; fsync {}, synchronous_commit {}, \
         shared_buffers {}), {} cores",
        settings[0],
        shown(&server),
        settings[1],
        settings[2],
        settings[3],
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    if wanted("cold") {
        println!();
        cold_store_level(&server);
        println!();
        cold_end_to_end(&server);
    }
    if wanted("revoke") {
        println!();
        revocation(&server);
    }
    if wanted("create") {
        println!();
        concurrent_creators(&server);
    }
}
