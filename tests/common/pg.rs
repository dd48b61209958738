//! A fresh PostgreSQL database for a test, dropped when the test ends.
//!
//! The server is `TOKENGATE_TEST_POSTGRES` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`). When it does not answer,
//! a test skips with one loud line, unless `TOKENGATE_REQUIRE_POSTGRES=1`
//! (CI sets it): then it fails.

use std::sync::atomic::{AtomicU64, Ordering};

const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// The server's URL for tests.
pub fn server_url() -> String {
    std::env::var("TOKENGATE_TEST_POSTGRES").unwrap_or_else(|_| DEFAULT_URL.to_string())
}

/// Where `url` points, without its password, for messages.
pub fn shown(url: &str) -> String {
    match url.parse::<tokio_postgres::Config>() {
        Ok(c) => format!(
            "{} at {:?} port {:?}, database {}",
            c.get_user().unwrap_or("?"),
            c.get_hosts(),
            c.get_ports(),
            c.get_dbname().unwrap_or("?")
        ),
        Err(_) => "(an unreadable URL)".to_string(),
    }
}

fn required() -> bool {
    std::env::var("TOKENGATE_REQUIRE_POSTGRES").is_ok_and(|v| v == "1")
}

/// A database that exists for one test.
pub struct TestDb {
    /// The URL of the test's database.
    pub url: String,
    pub name: String,
    server: String,
}

async fn connect(url: &str) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
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

impl TestDb {
    /// Creates a fresh database; `None` (after one loud line) when no
    /// server answers and none is required.
    pub async fn create() -> Option<TestDb> {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let server = server_url();
        let admin = match tokio::time::timeout(std::time::Duration::from_secs(5), connect(&server))
            .await
        {
            Ok(Ok(c)) => c,
            outcome => {
                let why = match outcome {
                    Ok(Err(e)) => e.to_string(),
                    _ => "no answer within 5 s".to_string(),
                };
                if required() {
                    panic!(
                        "PostgreSQL is required (TOKENGATE_REQUIRE_POSTGRES=1) but {} does not answer: {why}",
                        shown(&server)
                    );
                }
                eprintln!(
                    "SKIPPED: PostgreSQL not reachable at {} ({why}); start PostgreSQL or set TOKENGATE_TEST_POSTGRES=postgres://user@host:port/db to run the PostgreSQL tests",
                    shown(&server)
                );
                return None;
            }
        };
        let name = format!(
            "tg_it_{}_{}_{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed),
            rand_suffix()
        );
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .unwrap_or_else(|e| panic!("cannot create the test database: {e}"));
        Some(TestDb {
            url: with_db(&server, &name),
            name,
            server,
        })
    }

    /// A client on the test's database.
    pub async fn client(&self) -> tokio_postgres::Client {
        connect(&self.url).await.unwrap()
    }
}

fn rand_suffix() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    u64::from(t)
}

impl Drop for TestDb {
    fn drop(&mut self) {
        // Dropped from a thread of its own: the test's runtime may be
        // shutting down, or this may run inside it.
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
            eprintln!("could not drop the test database {}", self.name);
        }
    }
}
