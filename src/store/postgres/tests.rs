//! Against a real PostgreSQL: `TOKENGATE_TEST_POSTGRES` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`). Each test gets a fresh
//! database, dropped when it ends (also when it fails). When no server
//! answers, the tests skip with one line on stderr, unless
//! `TOKENGATE_REQUIRE_POSTGRES=1`: then they fail.
//!
//! Two backends on one database stand for two gateways.

use std::io::Write;
use std::net::IpAddr;
use std::sync::{Arc, Once};
use std::time::{Duration, Instant};

use super::*;
use crate::clock::ManualClock;
use crate::store::backend::{FailureOutcome, Locked};

const DEFAULT_SERVER: &str = "postgres://postgres@127.0.0.1:5432/postgres";

fn server_url() -> String {
    std::env::var("TOKENGATE_TEST_POSTGRES").unwrap_or_else(|_| DEFAULT_SERVER.to_string())
}

/// `url` without its password, for messages.
fn without_password(url: &str) -> String {
    if let Some(after) = url.find("://").map(|i| i + 3) {
        let authority_end = url[after..]
            .find(['/', '?'])
            .map_or(url.len(), |i| after + i);
        if let Some(at) = url[after..authority_end].rfind('@').map(|i| after + i)
            && let Some(colon) = url[after..at].find(':').map(|i| after + i)
        {
            return format!("{}{}", &url[..colon], &url[at..]);
        }
        return url.to_string();
    }
    url.split_whitespace()
        .filter(|w| !w.starts_with("password="))
        .collect::<Vec<_>>()
        .join(" ")
}

/// `url` pointing at database `db`.
fn with_database(url: &str, db: &str) -> String {
    let Some(after) = url.find("://").map(|i| i + 3) else {
        return format!("{url} dbname={db}");
    };
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, format!("?{query}")),
        None => (url, String::new()),
    };
    let root = match base[after..].find('/') {
        Some(i) => &base[..after + i],
        None => base,
    };
    format!("{root}/{db}{query}")
}

async fn connect(url: &str) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

/// A database for one test.
struct TestDb {
    server: String,
    name: String,
    url: String,
}

impl TestDb {
    /// `None` (after one line on stderr) when no server answers.
    async fn create() -> Option<TestDb> {
        let server = server_url();
        let admin = match tokio::time::timeout(Duration::from_secs(5), connect(&server)).await {
            Ok(Ok(client)) => client,
            outcome => {
                if std::env::var("TOKENGATE_REQUIRE_POSTGRES").is_ok_and(|v| v == "1") {
                    panic!(
                        "PostgreSQL not reachable at {} ({}) and TOKENGATE_REQUIRE_POSTGRES=1",
                        without_password(&server),
                        match outcome {
                            Ok(Err(e)) => describe(&e),
                            _ => "no answer within 5 s".to_string(),
                        }
                    );
                }
                static SKIPPED: Once = Once::new();
                SKIPPED.call_once(|| {
                    // Past the test harness's capture: a skip must be seen.
                    let _ = writeln!(
                        std::io::stderr(),
                        "SKIPPED: PostgreSQL not reachable at {}; set TOKENGATE_TEST_POSTGRES or \
                         start PostgreSQL to run the PostgreSQL tests",
                        without_password(&server)
                    );
                });
                return None;
            }
        };
        let name = format!("tg_test_{:016x}", rand::random::<u64>());
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .unwrap();
        Some(TestDb {
            url: with_database(&server, &name),
            server,
            name,
        })
    }

    fn settings(&self) -> PostgresSettings {
        PostgresSettings {
            url: self.url.clone(),
            ca_file: None,
            pool_size: 8,
        }
    }

    async fn open(&self) -> PostgresBackend {
        PostgresBackend::open(&self.settings()).await.unwrap()
    }

    /// A plain connection to the test's database, for checks.
    async fn sql(&self) -> tokio_postgres::Client {
        connect(&self.url).await.unwrap()
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let (server, name) = (self.server.clone(), self.name.clone());
        // Drop runs inside the test's runtime: the database goes from a
        // thread with a runtime of its own.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                if let Ok(admin) = connect(&server).await {
                    let _ = admin
                        .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .await;
                }
            });
        });
        let _ = dropped.join();
    }
}

/// Skips the test when no server answers.
macro_rules! test_db {
    () => {
        match TestDb::create().await {
            Some(db) => db,
            None => return,
        }
    };
}

fn new_token(user: &str, seed: &str, valid_until: u64) -> NewToken {
    NewToken {
        hash: TokenHash::of(seed),
        description: format!("token {seed}"),
        user_key: user.to_string(),
        user_name: user.to_lowercase(),
        created_by: user.to_string(),
        created: 1,
        valid_until,
        scope: Scope::ReadWrite,
        allowed_ips: Default::default(),
    }
}

fn ids(records: &[TokenRecord]) -> Vec<u64> {
    records.iter().map(|r| r.id).collect()
}

/// Polls `done` until it holds, for at most `limit`.
async fn eventually(what: &str, limit: Duration, done: impl Fn() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < limit, "not within {limit:?}: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The kept counts agree with the rows.
async fn assert_counts_right(db: &TestDb, backend: &PostgresBackend) {
    let sql = db.sql().await;
    let rows: i64 = sql
        .query_one("SELECT count(*) FROM tokengate_tokens", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(backend.count().await.unwrap(), rows as u64, "count");
    let wrong: i64 = sql
        .query_one(
            "SELECT count(*) FROM tokengate_users u FULL JOIN
               (SELECT user_key, count(*) AS n FROM tokengate_tokens GROUP BY user_key) t
               USING (user_key)
             WHERE coalesce(u.tokens, 0) <> coalesce(t.n, 0)",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(wrong, 0, "per-user counts");
}

fn cache() -> Arc<HotCache> {
    Arc::new(HotCache::new(ManualClock::new(1_000_000), 60_000))
}

fn cache_entry(cache: &HotCache, record: &TokenRecord) {
    cache.insert_unless_evicted(
        &record.hash,
        record.auth_entry().into_entry(),
        cache.generation(),
    );
}

// ---------------------------------------------------------------------------
// Schema

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn gateways_starting_at_once_migrate_once() {
    let db = test_db!();
    let opening: Vec<_> = (0..8)
        .map(|_| {
            let settings = db.settings();
            tokio::spawn(async move { PostgresBackend::open(&settings).await.map(|_| ()) })
        })
        .collect();
    for task in opening {
        task.await.unwrap().unwrap();
    }
    let versions: i64 = db
        .sql()
        .await
        .query_one("SELECT count(*) FROM tokengate_schema", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(versions, i64::from(schema::SCHEMA_VERSION));
    assert_eq!(
        migrate(&db.settings()).await.unwrap(),
        (schema::SCHEMA_VERSION, schema::SCHEMA_VERSION),
        "nothing left to do"
    );
}

#[tokio::test]
async fn migrate_reports_the_versions() {
    let db = test_db!();
    assert_eq!(migrate(&db.settings()).await.unwrap(), (0, 2));
    assert_eq!(migrate(&db.settings()).await.unwrap(), (2, 2));
}

#[tokio::test]
async fn a_newer_schema_is_refused() {
    let db = test_db!();
    db.open().await;
    db.sql()
        .await
        .batch_execute("INSERT INTO tokengate_schema (version) VALUES (3)")
        .await
        .unwrap();
    let e = PostgresBackend::open(&db.settings()).await.unwrap_err();
    assert!(matches!(e, StoreError::Incompatible(_)), "{e:?}");
    let message = e.to_string();
    assert!(
        message.contains("version 3") && message.contains("(version 2)"),
        "{message}"
    );
    assert!(matches!(
        migrate(&db.settings()).await,
        Err(StoreError::Incompatible(_))
    ));
}

#[tokio::test]
async fn an_unreachable_database_fails_quickly_without_showing_the_password() {
    let settings = PostgresSettings {
        url: "postgres://someone:pw-XYZZY@127.0.0.1:1/tokens".into(),
        ca_file: None,
        pool_size: 2,
    };
    let start = Instant::now();
    let e = PostgresBackend::open(&settings).await.unwrap_err();
    assert!(start.elapsed() < Duration::from_secs(10));
    assert!(matches!(e, StoreError::Unavailable(_)), "{e:?}");
    assert!(!e.to_string().contains("XYZZY"), "{e}");
    assert!(!format!("{settings:?}").contains("XYZZY"));
}

#[tokio::test]
async fn a_refused_login_does_not_show_the_password() {
    let db = test_db!();
    let Some(after) = db.url.find("://").map(|i| i + 3) else {
        return;
    };
    let host = db.url[after..]
        .find('@')
        .map_or(&db.url[after..], |at| &db.url[after + at + 1..]);
    let settings = PostgresSettings {
        url: format!("{}nobody_here:pw-XYZZY@{host}", &db.url[..after]),
        ca_file: None,
        pool_size: 2,
    };
    let e = PostgresBackend::open(&settings).await.unwrap_err();
    assert!(matches!(e, StoreError::Unavailable(_)), "{e:?}");
    assert!(!e.to_string().contains("XYZZY"), "{e}");
}

/// `url` with one more query parameter.
fn with_param(url: &str, param: &str) -> String {
    if url.contains("://") {
        let separator = if url.contains('?') { '&' } else { '?' };
        format!("{url}{separator}{param}")
    } else {
        format!("{url} {param}")
    }
}

#[tokio::test]
async fn tls_as_sslmode_asks() {
    let db = test_db!();
    let sql = db.sql().await;
    let ssl: String = sql.query_one("SHOW ssl", &[]).await.unwrap().get(0);
    if ssl != "on" {
        return;
    }
    let settings = |mode: &str, ca_file: Option<std::path::PathBuf>| PostgresSettings {
        url: with_param(&db.url, &format!("sslmode={mode}")),
        ca_file,
        pool_size: 2,
    };
    let over_tls = "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()";
    // require: TLS, whatever the certificate.
    let pg = PostgresBackend::open(&settings("require", None))
        .await
        .unwrap();
    assert!(pg.query_one(over_tls, &[]).await.unwrap().get::<_, bool>(0));

    // verify-full against roots that did not sign the server's certificate.
    let dir = tempfile::tempdir().unwrap();
    let stranger = dir.path().join("stranger.pem");
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = params
        .self_signed(&rcgen::KeyPair::generate().unwrap())
        .unwrap();
    std::fs::write(&stranger, ca.pem()).unwrap();
    let e = PostgresBackend::open(&settings("verify-full", Some(stranger.clone())))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("TLS"), "{e}");
    let e = PostgresBackend::open(&settings("require", Some(stranger)))
        .await
        .unwrap_err();
    assert!(
        e.to_string().contains("TLS"),
        "require with a CA file verifies: {e}"
    );

    // The server's own certificate as the root, where the test may read it:
    // verify-ca takes it whatever host the URL names.
    let Ok(row) = sql
        .query_one("SELECT pg_read_file(current_setting('ssl_cert_file'))", &[])
        .await
    else {
        return;
    };
    let own = dir.path().join("server.pem");
    std::fs::write(&own, row.get::<_, String>(0)).unwrap();
    let pg = PostgresBackend::open(&settings("verify-ca", Some(own)))
        .await
        .unwrap();
    assert!(pg.query_one(over_tls, &[]).await.unwrap().get::<_, bool>(0));
}

// ---------------------------------------------------------------------------
// Tokens

#[tokio::test]
async fn create_lookup_update_delete() {
    let db = test_db!();
    let pg = db.open().await;
    assert_eq!(pg.kind(), "postgres");
    assert_eq!(pg.next_id().await.unwrap(), 1);
    let r = pg.insert(new_token("U1", "a", 100), 0).await.unwrap();
    assert_eq!(r.id, 1);
    assert_eq!(pg.next_id().await.unwrap(), 2);
    let e = pg.lookup(&TokenHash::of("a")).await.unwrap().unwrap();
    assert_eq!(e, r.auth_entry());
    assert!(pg.lookup(&TokenHash::of("nope")).await.unwrap().is_none());
    assert_eq!(pg.get(1).await.unwrap().unwrap(), r);
    assert!(pg.get(u64::MAX).await.unwrap().is_none());

    let changed = pg
        .update_description(1, "new words")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(changed.description, "new words");
    assert_eq!(pg.get(1).await.unwrap().unwrap().description, "new words");
    assert!(pg.update_description(7, "x").await.unwrap().is_none());

    let gone = pg.delete(1).await.unwrap().unwrap();
    assert_eq!(gone.id, 1);
    assert_eq!(gone.description, "new words");
    assert!(pg.delete(1).await.unwrap().is_none());
    assert!(pg.lookup(&TokenHash::of("a")).await.unwrap().is_none());
    let r2 = pg.insert(new_token("U1", "b", 100), 0).await.unwrap();
    assert_eq!(r2.id, 2, "ids are never reused");
    assert_counts_right(&db, &pg).await;
}

#[tokio::test]
async fn a_hash_that_exists_is_refused() {
    let db = test_db!();
    let pg = db.open().await;
    pg.insert(new_token("U1", "a", 0), 0).await.unwrap();
    let e = pg.insert(new_token("U2", "a", 0), 0).await.unwrap_err();
    assert!(
        matches!(e, InsertError::Store(StoreError::Corrupt(_))),
        "{e:?}"
    );
    assert_counts_right(&db, &pg).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_per_user_limit_holds_for_concurrent_creators_on_two_gateways() {
    let db = test_db!();
    let nodes = Arc::new([db.open().await, db.open().await]);
    let creators: Vec<_> = (0..16)
        .map(|i| {
            let nodes = nodes.clone();
            tokio::spawn(async move {
                nodes[i % 2]
                    .insert(new_token("U", &format!("t{i}"), 0), 5)
                    .await
            })
        })
        .collect();
    let mut created = 0;
    for task in creators {
        match task.await.unwrap() {
            Ok(_) => created += 1,
            Err(InsertError::LimitReached(5)) => {}
            Err(e) => panic!("{e:?}"),
        }
    }
    assert_eq!(created, 5);
    assert_eq!(nodes[0].list_user("U").await.unwrap().len(), 5);
    assert_counts_right(&db, &nodes[0]).await;
    // Room again after a delete; other users are not limited by U.
    let first = nodes[0].list_user("U").await.unwrap()[0].id;
    nodes[1].delete(first).await.unwrap();
    nodes[0]
        .insert(new_token("U", "again", 0), 5)
        .await
        .unwrap();
    nodes[0]
        .insert(new_token("V", "other", 0), 5)
        .await
        .unwrap();
    assert!(matches!(
        nodes[1].insert(new_token("U", "too many", 0), 5).await,
        Err(InsertError::LimitReached(5))
    ));
    assert_counts_right(&db, &nodes[0]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ids_are_unique_and_increasing_across_gateways() {
    let db = test_db!();
    let nodes = Arc::new([db.open().await, db.open().await]);
    let creators: Vec<_> = (0..16)
        .map(|w| {
            let nodes = nodes.clone();
            tokio::spawn(async move {
                let mut ids = Vec::new();
                for i in 0..10 {
                    let user = format!("U{}", w % 3);
                    let r = nodes[(w + i) % 2]
                        .insert(new_token(&user, &format!("{w}-{i}"), 0), 0)
                        .await
                        .unwrap();
                    ids.push(r.id);
                }
                ids
            })
        })
        .collect();
    let mut all = Vec::new();
    for task in creators {
        let ids = task.await.unwrap();
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
        all.extend(ids);
    }
    all.sort_unstable();
    all.dedup();
    assert_eq!(all.len(), 160);
    assert!(nodes[1].next_id().await.unwrap() > *all.last().unwrap());
    assert_eq!(nodes[1].count().await.unwrap(), 160);
    assert_counts_right(&db, &nodes[0]).await;
}

#[tokio::test]
async fn filter_by_each_index_with_pages_and_totals() {
    let db = test_db!();
    let pg = db.open().await;
    pg.insert(new_token("A", "1", 50), 0).await.unwrap();
    pg.insert(new_token("B", "2", 150), 0).await.unwrap();
    pg.insert(new_token("A", "3", 0), 0).await.unwrap();
    let mut read_only = new_token("C", "4", 100);
    read_only.scope = Scope::ReadOnly;
    pg.insert(read_only, 0).await.unwrap();

    let all = pg.filter(&Filter::default(), 0, 10).await.unwrap();
    assert_eq!((all.total, ids(&all.items)), (4, vec![1, 2, 3, 4]));
    let page = pg.filter(&Filter::default(), 1, 2).await.unwrap();
    assert_eq!((page.total, ids(&page.items)), (4, vec![2, 3]));
    let none = pg.filter(&Filter::default(), 0, 0).await.unwrap();
    assert_eq!((none.total, none.items.len()), (4, 0));
    let past = pg.filter(&Filter::default(), 10, 10).await.unwrap();
    assert_eq!((past.total, past.items.len()), (4, 0));

    let soon = Filter {
        not_valid_after: Some(100),
        ..Filter::default()
    };
    let p = pg.filter(&soon, 0, 10).await.unwrap();
    assert_eq!(
        (p.total, ids(&p.items)),
        (2, vec![1, 4]),
        "never-expiring never match"
    );

    let of_a = Filter {
        user_keys: vec!["A".into()],
        ..Filter::default()
    };
    let p = pg.filter(&of_a, 1, 10).await.unwrap();
    assert_eq!((p.total, ids(&p.items)), (2, vec![3]));
    let of_a_and_c = Filter {
        user_keys: vec!["C".into(), "A".into(), "C".into(), "nobody".into()],
        ..Filter::default()
    };
    let p = pg.filter(&of_a_and_c, 0, 10).await.unwrap();
    assert_eq!((p.total, ids(&p.items)), (3, vec![1, 3, 4]));

    let described = Filter {
        description: Some("n 2".into()),
        ..Filter::default()
    };
    let p = pg.filter(&described, 0, 10).await.unwrap();
    assert_eq!((p.total, ids(&p.items)), (1, vec![2]));
    let p = pg.filter(&described, 5, 10).await.unwrap();
    assert_eq!(
        (p.total, p.items.len()),
        (1, 0),
        "past the end, still counted"
    );
    let p = pg.filter(&described, 0, 0).await.unwrap();
    assert_eq!((p.total, p.items.len()), (1, 0));
    let by_case = Filter {
        description: Some("token".into()),
        ..Filter::default()
    };
    pg.update_description(3, "TOKEN in capitals").await.unwrap();
    assert_eq!(pg.filter(&by_case, 0, 10).await.unwrap().total, 4);

    let read_only = Filter {
        scope: Some(Scope::ReadOnly),
        ..Filter::default()
    };
    let p = pg.filter(&read_only, 0, 10).await.unwrap();
    assert_eq!((p.total, ids(&p.items)), (1, vec![4]));

    let combined = Filter {
        not_valid_after: Some(200),
        user_keys: vec!["A".into(), "B".into()],
        description: Some("token".into()),
        scope: Some(Scope::ReadWrite),
        allowed_ips_set: Some(false),
    };
    let p = pg.filter(&combined, 0, 1).await.unwrap();
    assert_eq!((p.total, ids(&p.items)), (2, vec![1]));

    // The same answers as the filter's own rule, record by record.
    let everything = pg.scan_from(0, 100).await.unwrap();
    for filter in [
        soon, of_a, of_a_and_c, described, by_case, read_only, combined,
    ] {
        let expected: Vec<u64> = everything
            .iter()
            .filter(|r| filter.matches(r))
            .map(|r| r.id)
            .collect();
        let p = pg.filter(&filter, 0, 100).await.unwrap();
        assert_eq!(ids(&p.items), expected, "{filter:?}");
        assert_eq!(p.total, expected.len() as u64, "{filter:?}");
    }
}

#[tokio::test]
async fn like_metacharacters_in_a_description_filter_match_themselves() {
    let db = test_db!();
    let pg = db.open().await;
    for (i, description) in [
        "50% off",
        "5000 off",
        "a_b",
        "axb",
        r"back\slash",
        "backxslash",
    ]
    .iter()
    .enumerate()
    {
        let mut t = new_token("U", &i.to_string(), 0);
        t.description = description.to_string();
        pg.insert(t, 0).await.unwrap();
    }
    let matching = |needle: &str| {
        let filter = Filter {
            description: Some(needle.to_string()),
            ..Filter::default()
        };
        let pg = &pg;
        async move {
            let p = pg.filter(&filter, 0, 10).await.unwrap();
            assert_eq!(p.total, p.items.len() as u64);
            p.items
                .into_iter()
                .map(|r| r.description)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(matching("%").await, vec!["50% off"]);
    assert_eq!(matching("0% ").await, vec!["50% off"]);
    assert_eq!(matching("_").await, vec!["a_b"]);
    assert_eq!(matching("a_b").await, vec!["a_b"]);
    assert_eq!(matching("\\").await, vec![r"back\slash"]);
    assert_eq!(matching(r"k\s").await, vec![r"back\slash"]);
    assert_eq!(matching("").await.len(), 6);
}

#[tokio::test]
async fn list_user_and_scan_from_go_by_id() {
    let db = test_db!();
    let pg = db.open().await;
    for i in 0..5 {
        let user = if i % 2 == 0 { "even" } else { "odd" };
        pg.insert(new_token(user, &i.to_string(), 0), 0)
            .await
            .unwrap();
    }
    assert_eq!(ids(&pg.list_user("even").await.unwrap()), vec![1, 3, 5]);
    assert!(pg.list_user("nobody").await.unwrap().is_empty());
    assert_eq!(ids(&pg.scan_from(0, 2).await.unwrap()), vec![1, 2]);
    assert_eq!(ids(&pg.scan_from(2, 10).await.unwrap()), vec![3, 4, 5]);
    assert!(pg.scan_from(5, 10).await.unwrap().is_empty());
    assert!(pg.scan_from(u64::MAX, 10).await.unwrap().is_empty());
}

#[tokio::test]
async fn record_access_keeps_the_latest_time() {
    let db = test_db!();
    let pg = db.open().await;
    pg.insert(new_token("A", "1", 0), 0).await.unwrap();
    pg.insert(new_token("A", "2", 0), 0).await.unwrap();
    let (a, b): (std::net::IpAddr, std::net::IpAddr) =
        ("192.0.2.1".parse().unwrap(), "2001:db8::2".parse().unwrap());
    let used = |id, at, from| Access { id, at, from };
    pg.record_access(vec![
        used(1, 500, a),
        used(1, 300, b),
        used(2, 100, b),
        used(999, 5, a),
        used(u64::MAX, 5, a),
    ])
    .await
    .unwrap();
    let seen = |r: TokenRecord| (r.last_accessed, r.last_accessed_from);
    assert_eq!(seen(pg.get(1).await.unwrap().unwrap()), (500, Some(a)));
    assert_eq!(seen(pg.get(2).await.unwrap().unwrap()), (100, Some(b)));
    pg.record_access(vec![used(1, 400, b), used(2, 700, a)])
        .await
        .unwrap();
    assert_eq!(
        seen(pg.get(1).await.unwrap().unwrap()),
        (500, Some(a)),
        "never lowered, the address with it"
    );
    assert_eq!(seen(pg.get(2).await.unwrap().unwrap()), (700, Some(a)));
    pg.record_access(Vec::new()).await.unwrap();
    assert!(
        pg.get(999).await.unwrap().is_none(),
        "unknown ids are not created"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn gateways_recording_the_same_tokens_at_once_do_not_deadlock() {
    let db = test_db!();
    let nodes = Arc::new([db.open().await, db.open().await]);
    for i in 0..200 {
        nodes[0]
            .insert(new_token("A", &i.to_string(), 0), 0)
            .await
            .unwrap();
    }
    let writers: Vec<_> = (0..8u64)
        .map(|w| {
            let nodes = nodes.clone();
            tokio::spawn(async move {
                for round in 0..5u64 {
                    let from = std::net::IpAddr::from([192, 0, 2, w as u8]);
                    let mut batch: Vec<Access> = (1..=200)
                        .map(|id| Access {
                            id,
                            at: 1000 * round + w + id,
                            from,
                        })
                        .collect();
                    if w % 2 == 1 {
                        batch.reverse();
                    }
                    nodes[(w % 2) as usize].record_access(batch).await.unwrap();
                }
            })
        })
        .collect();
    for task in writers {
        task.await.unwrap();
    }
    let r = nodes[1].get(200).await.unwrap().unwrap();
    assert_eq!(r.last_accessed, 4000 + 7 + 200);
}

#[tokio::test]
async fn delete_user_removes_every_token_of_the_user() {
    let db = test_db!();
    let pg = db.open().await;
    for i in 0..40 {
        let user = if i % 4 == 0 { "keep" } else { "gone" };
        pg.insert(new_token(user, &i.to_string(), 0), 0)
            .await
            .unwrap();
    }
    assert_eq!(pg.delete_user("gone").await.unwrap(), 30);
    assert_eq!(pg.delete_user("gone").await.unwrap(), 0);
    assert!(pg.list_user("gone").await.unwrap().is_empty());
    assert_eq!(pg.list_user("keep").await.unwrap().len(), 10);
    assert_eq!(pg.count().await.unwrap(), 10);
    let of_gone = Filter {
        user_keys: vec!["gone".into()],
        ..Filter::default()
    };
    assert_eq!(pg.filter(&of_gone, 0, 10).await.unwrap().total, 0);
    assert_counts_right(&db, &pg).await;
}

#[tokio::test]
async fn restore_skips_what_exists_and_raises_the_id_counter() {
    let db = test_db!();
    let pg = db.open().await;
    let record = |id: u64, seed: &str, user: &str| TokenRecord {
        id,
        hash: TokenHash::of(seed),
        description: format!("restored {seed}"),
        user_key: user.into(),
        user_name: user.to_lowercase(),
        created_by: "admin".into(),
        created: 10,
        valid_until: 0,
        last_accessed: 77,
        scope: Scope::ReadOnly,
        allowed_ips: Default::default(),
        last_accessed_from: None,
        previous: None,
    };
    assert_eq!(
        pg.restore(vec![record(5, "a", "A"), record(9, "b", "B")])
            .await
            .unwrap(),
        2
    );
    assert_eq!(pg.get(5).await.unwrap().unwrap(), record(5, "a", "A"));
    assert!(pg.next_id().await.unwrap() >= 10);
    let added = pg
        .restore(vec![
            record(5, "a", "A"),     // there already
            record(12, "b", "C"),    // its hash is there already
            record(9, "other", "B"), // its id is there already
            record(20, "d", "A"),
            record(20, "e", "A"), // the same id twice in one import
        ])
        .await
        .unwrap();
    assert_eq!(added, 1);
    assert_eq!(ids(&pg.list_user("A").await.unwrap()), vec![5, 20]);
    assert!(pg.get(12).await.unwrap().is_none());
    assert!(pg.next_id().await.unwrap() >= 21);
    let r = pg.insert(new_token("A", "new", 0), 0).await.unwrap();
    assert_eq!(r.id, 21);
    assert_eq!(pg.count().await.unwrap(), 4);
    assert_counts_right(&db, &pg).await;
    assert_eq!(pg.restore(Vec::new()).await.unwrap(), 0);
}

#[tokio::test]
async fn raise_next_id_never_lowers_it() {
    let db = test_db!();
    let pg = db.open().await;
    pg.raise_next_id(100).await.unwrap();
    assert_eq!(pg.next_id().await.unwrap(), 100);
    assert_eq!(pg.insert(new_token("A", "1", 0), 0).await.unwrap().id, 100);
    assert_eq!(pg.next_id().await.unwrap(), 101);
    pg.raise_next_id(50).await.unwrap();
    pg.raise_next_id(101).await.unwrap();
    assert_eq!(pg.next_id().await.unwrap(), 101);
    assert_eq!(pg.insert(new_token("A", "2", 0), 0).await.unwrap().id, 101);
}

// ---------------------------------------------------------------------------
// Notifications and health

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_gateways_changes_evict_from_the_cache() {
    let db = test_db!();
    let (a, b) = (db.open().await, db.open().await);
    let b_cache = cache();
    b.watch(b_cache.clone());
    eventually("B listens", Duration::from_secs(5), || {
        b_cache.is_listening()
    })
    .await;
    assert_eq!(
        b.health().await.parts,
        vec![
            ("database", "ok".to_string()),
            ("notifications", "ok".to_string())
        ]
    );

    let one = a.insert(new_token("U", "one", 0), 0).await.unwrap();
    let two = a.insert(new_token("U", "two", 0), 0).await.unwrap();
    let three = a.insert(new_token("V", "three", 0), 0).await.unwrap();
    for r in [&one, &two, &three] {
        cache_entry(&b_cache, r);
    }
    a.update_description(one.id, "changed").await.unwrap();
    eventually(
        "a changed description evicts",
        Duration::from_secs(2),
        || b_cache.get(&one.hash).is_none(),
    )
    .await;
    assert!(
        b_cache.get(&two.hash).is_some(),
        "only the changed token goes"
    );

    a.delete(two.id).await.unwrap();
    eventually("a delete evicts", Duration::from_secs(2), || {
        b_cache.get(&two.hash).is_none()
    })
    .await;
    assert!(b_cache.get(&three.hash).is_some());

    a.delete_user("nobody").await.unwrap();
    a.delete_user("U").await.unwrap();
    eventually(
        "a user's deletion evicts everything",
        Duration::from_secs(2),
        || b_cache.get(&three.hash).is_none(),
    )
    .await;
    b.close().await.unwrap();
    assert!(!b_cache.is_listening(), "a closed backend hears nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_listening_connection_is_noticed_and_replaced() {
    let db = test_db!();
    let (a, b) = (db.open().await, db.open().await);
    let b_cache = cache();
    assert_eq!(
        b.health().await.parts[1],
        ("notifications", "not listening: not started".to_string())
    );
    b.watch(b_cache.clone());
    eventually("B listens", Duration::from_secs(5), || {
        b_cache.is_listening()
    })
    .await;
    let kept = a.insert(new_token("U", "kept", 0), 0).await.unwrap();
    cache_entry(&b_cache, &kept);

    let sql = db.sql().await;
    let ended = sql
        .query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
             WHERE datname = $1 AND application_name = 'tokengate-listen'",
            &[&db.name],
        )
        .await
        .unwrap();
    assert_eq!(ended.len(), 1, "one listening connection");
    eventually("the loss is noticed", Duration::from_secs(2), || {
        !b_cache.is_listening()
    })
    .await;
    assert!(b_cache.get(&kept.hash).is_none(), "the cache was dropped");
    eventually("listening again", Duration::from_secs(5), || {
        b_cache.is_listening()
    })
    .await;
    assert_eq!(
        b.health().await.parts[1],
        ("notifications", "ok".to_string())
    );

    // And it works: a change on A reaches B's cache.
    cache_entry(&b_cache, &kept);
    a.delete(kept.id).await.unwrap();
    eventually(
        "evicted after the reconnect",
        Duration::from_secs(2),
        || b_cache.get(&kept.hash).is_none(),
    )
    .await;
}

#[tokio::test]
async fn health_and_close() {
    let db = test_db!();
    let pg = db.open().await;
    let health = pg.health().await;
    assert_eq!(health.parts[0], ("database", "ok".to_string()));
    assert!(!health.is_ok(), "not listening yet");
    pg.close().await.unwrap();
    let health = pg.health().await;
    assert_ne!(health.parts[0].1, "ok");
    assert!(matches!(pg.count().await, Err(StoreError::Unavailable(_))));
}

// ---------------------------------------------------------------------------
// Shared failed-login counts

const HOME: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1));
const ELSEWHERE: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(198, 51, 100, 7));

#[tokio::test]
async fn failures_lock_across_gateways_and_clear_from_either() {
    let db = test_db!();
    let (a, b) = (db.open().await, db.open().await);
    let (fa, fb) = (a.shared_failures().unwrap(), b.shared_failures().unwrap());
    let now = 1_000_000;
    assert_eq!(
        fa.failure("alice", HOME, 3, 60, now).await.unwrap(),
        FailureOutcome::Counted(1)
    );
    assert_eq!(
        fb.failure("alice", HOME, 3, 60, now).await.unwrap(),
        FailureOutcome::Counted(2)
    );
    let locked = Locked {
        until: Some(now + 60_000),
    };
    assert_eq!(
        fa.failure("alice", HOME, 3, 60, now).await.unwrap(),
        FailureOutcome::LockedNow(locked)
    );
    assert_eq!(fb.locked("alice", HOME, now).await.unwrap(), Some(locked));
    assert_eq!(
        fb.failure("alice", HOME, 3, 60, now + 1).await.unwrap(),
        FailureOutcome::StillLocked(locked)
    );
    assert!(
        fb.locked("alice", ELSEWHERE, now).await.unwrap().is_none(),
        "per address"
    );
    assert!(fb.locked("bob", HOME, now).await.unwrap().is_none());
    assert!(fb.clear("ALICE").await.unwrap());
    assert!(!fb.clear("alice").await.unwrap());
    assert!(fa.locked("alice", HOME, now).await.unwrap().is_none());
}

#[tokio::test]
async fn a_lock_runs_out_and_the_count_starts_afresh() {
    let db = test_db!();
    let pg = db.open().await;
    let f = pg.shared_failures().unwrap();
    let now = 5_000_000;
    for _ in 0..2 {
        f.failure("carol", HOME, 3, 60, now).await.unwrap();
    }
    assert!(matches!(
        f.failure("carol", HOME, 3, 60, now).await.unwrap(),
        FailureOutcome::LockedNow(_)
    ));
    assert!(
        f.locked("carol", HOME, now + 59_999)
            .await
            .unwrap()
            .is_some()
    );
    assert!(
        f.locked("carol", HOME, now + 60_000)
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(
        f.failure("carol", HOME, 3, 60, now + 60_000).await.unwrap(),
        FailureOutcome::Counted(1),
        "afresh"
    );
}

#[tokio::test]
async fn success_resets_a_counter_but_not_a_lock() {
    let db = test_db!();
    let pg = db.open().await;
    let f = pg.shared_failures().unwrap();
    let v6: IpAddr = "2001:db8:1:2::".parse().unwrap();
    f.failure("bob", v6, 3, 0, 10).await.unwrap();
    f.failure("bob", v6, 3, 0, 10).await.unwrap();
    f.success("bob", v6, 11).await.unwrap();
    assert_eq!(
        f.failure("bob", v6, 3, 0, 12).await.unwrap(),
        FailureOutcome::Counted(1)
    );
    f.failure("bob", v6, 3, 0, 12).await.unwrap();
    assert_eq!(
        f.failure("bob", v6, 3, 0, 12).await.unwrap(),
        FailureOutcome::LockedNow(Locked { until: None }),
        "0 = until an admin clears it"
    );
    f.success("bob", v6, 13).await.unwrap();
    assert_eq!(
        f.locked("bob", v6, u64::MAX).await.unwrap(),
        Some(Locked { until: None })
    );
    assert_eq!(
        f.failure("bob", v6, 3, 0, 14).await.unwrap(),
        FailureOutcome::StillLocked(Locked { until: None })
    );
    assert!(f.clear("bob").await.unwrap());
    assert!(f.locked("bob", v6, 15).await.unwrap().is_none());
}

#[tokio::test]
async fn zero_attempts_means_off_and_one_locks_at_once() {
    let db = test_db!();
    let pg = db.open().await;
    let f = pg.shared_failures().unwrap();
    for _ in 0..5 {
        assert_eq!(
            f.failure("x", HOME, 0, 60, 1).await.unwrap(),
            FailureOutcome::Ignored
        );
    }
    assert!(!f.clear("x").await.unwrap(), "nothing was written");
    assert_eq!(
        f.failure("y", HOME, 1, 60, 1).await.unwrap(),
        FailureOutcome::LockedNow(Locked {
            until: Some(60_001)
        })
    );
}

#[tokio::test]
async fn sweep_forgets_run_out_locks_and_old_counters() {
    let db = test_db!();
    let pg = db.open().await;
    let f = pg.shared_failures().unwrap();
    f.failure("old", HOME, 3, 60, 1_000).await.unwrap();
    f.failure("recent", HOME, 3, 60, 500_000).await.unwrap();
    f.failure("ran-out", HOME, 1, 60, 1_000).await.unwrap();
    f.failure("locked", HOME, 1, 600, 500_000).await.unwrap();
    f.failure("forever", HOME, 1, 0, 1_000).await.unwrap();
    f.sweep(600_000, 500_000).await.unwrap();
    for (user, kept) in [
        ("old", false),
        ("recent", true),
        ("ran-out", false),
        ("locked", true),
        ("forever", true),
    ] {
        assert_eq!(f.clear(user).await.unwrap(), kept, "{user}");
    }
    // A counter stamped ahead of this clock is kept.
    f.failure("ahead", HOME, 3, 60, 10_000).await.unwrap();
    f.sweep(5_000, 1_000).await.unwrap();
    assert!(f.clear("ahead").await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_failures_on_two_gateways_lock_once() {
    let db = test_db!();
    let nodes = Arc::new([db.open().await, db.open().await]);
    let attempts: Vec<_> = (0..20)
        .map(|i| {
            let nodes = nodes.clone();
            tokio::spawn(async move {
                let f = nodes[i % 2].shared_failures().unwrap();
                f.failure("dave", HOME, 5, 60, 1_000).await.unwrap()
            })
        })
        .collect();
    let mut counted = Vec::new();
    let (mut locked_now, mut still) = (0, 0);
    for task in attempts {
        match task.await.unwrap() {
            FailureOutcome::Counted(n) => counted.push(n),
            FailureOutcome::LockedNow(_) => locked_now += 1,
            FailureOutcome::StillLocked(_) => still += 1,
            FailureOutcome::Ignored => panic!("ignored"),
        }
    }
    counted.sort_unstable();
    assert_eq!(counted, vec![1, 2, 3, 4]);
    assert_eq!((locked_now, still), (1, 15));
}

#[tokio::test]
async fn a_database_of_schema_1_moves_to_2_and_its_tokens_work() {
    let db = test_db!();
    let sql = db.sql().await;
    // As a binary of schema version 1 left it, with one token.
    sql.batch_execute(include_str!("v1.sql")).await.unwrap();
    sql.batch_execute(
        "CREATE TABLE tokengate_schema (version int PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now());
         INSERT INTO tokengate_schema (version) VALUES (1);
         SELECT nextval('tokengate_token_ids');
         INSERT INTO tokengate_users VALUES ('A', 1);
         UPDATE tokengate_counts SET n = 1 WHERE shard = 1;",
    )
    .await
    .unwrap();
    let hash = TokenHash::of("from version 1");
    sql.execute(
        "INSERT INTO tokengate_tokens VALUES (1, $1, 'old one', 'A', 'a', 'A', 10, 0, 5, 2)",
        &[&&hash.0[..]],
    )
    .await
    .unwrap();
    assert_eq!(migrate(&db.settings()).await.unwrap(), (1, 2));
    let pg = db.open().await;
    let e = pg.lookup(&hash).await.unwrap().unwrap();
    assert_eq!((e.id, e.user_name.as_str(), e.superseded), (1, "a", false));
    assert!(e.allowed.is_empty());
    let r = pg.get(1).await.unwrap().unwrap();
    assert_eq!(
        (
            r.description.as_str(),
            r.last_accessed,
            r.last_accessed_from
        ),
        ("old one", 5, None)
    );
    assert!(r.allowed_ips.is_empty() && r.previous.is_none());
    let rotated = pg
        .rotate(1, TokenHash::of("new"), Some(1_000))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(rotated.replaced, vec![hash]);
    assert_eq!(pg.lookup(&hash).await.unwrap().unwrap().valid_until, 1_000);
    assert_counts_right(&db, &pg).await;
}
