//! The token store failing: the gateway fails closed (SPEC §2) and never lets
//! a token through unchecked.
//!
//! - A store that cannot be opened at start (a path that cannot be a
//!   directory, a store another process holds) does not stop the gateway:
//!   token requests and the management API get 503 with the Jira error body,
//!   requests that need no store (anonymous, password) are still forwarded,
//!   `/readyz` is 503, the log says why — and once the store can be opened the
//!   gateway serves tokens again without a restart.
//! - A write that fails (insert or flush) is a 503 for that management call,
//!   and nothing of it stays behind, in memory or on disk.
//! - A lookup that fails is a 503, and the upstream never sees the request.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};
use tokengate::demo::sim::{SimConfig, SimUpstream, TrustedHeader};
use tokengate::store::{
    AuthEntry, Backend, Filter, InsertError, NewToken, Page, SledBackend, Store, StoreError,
    TokenRecord,
};
use tokengate::token::{TokenFormat, TokenHash};

const API: &str = "/rest/de.resolution.apitokenauth/latest";

async fn sim() -> SimUpstream {
    let mut config = SimConfig::jira();
    config.trusted_header = Some(TrustedHeader {
        user_header: "X-Remote-User".into(),
        secret: Some(("X-Gateway-Secret".into(), SECRET.into())),
    });
    SimUpstream::start(config).await.unwrap()
}

/// A well-formed token (right prefix and checksum) that no store knows.
fn well_formed_token() -> String {
    TokenFormat::new("tg")
        .generate()
        .unwrap()
        .expose()
        .to_string()
}

/// Asserts the Jira-shaped JSON error body of SPEC §2 with a 503.
async fn assert_store_unavailable(resp: reqwest::Response, what: &str) {
    assert_eq!(resp.status(), 503, "{what}");
    let ct = resp.headers()["content-type"].to_str().unwrap().to_string();
    assert!(ct.starts_with("application/json"), "{what}: {ct}");
    let body: Value = resp.json().await.unwrap();
    assert!(
        body["errorMessages"][0]
            .as_str()
            .unwrap()
            .contains("token store is unavailable"),
        "{what}: {body}"
    );
    assert_eq!(body["errors"], json!({}), "{what}");
}

/// `/readyz` until it answers `want` (answers are cached for a second), at most 5 s.
async fn readiness_until(http: &reqwest::Client, url: &str, want: u16) -> (u16, Value) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let resp = http.get(url).send().await.unwrap();
        let status = resp.status().as_u16();
        let body: Value = resp.json().await.unwrap();
        if status == want || Instant::now() > deadline {
            return (status, body);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

// ---------------------------------------------------------------------------
// The real binary with a store path that cannot be used.

fn stderr_lines(child: &mut std::process::Child) -> std::sync::mpsc::Receiver<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

fn wait_for(
    lines: &std::sync::mpsc::Receiver<String>,
    needle: &str,
    seen: &mut Vec<String>,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match lines.recv_timeout(left) {
            Ok(line) => {
                seen.push(line.clone());
                if line.contains(needle) {
                    return serde_json::from_str(&line).unwrap();
                }
            }
            Err(_) => break,
        }
    }
    panic!("no log line with {needle:?}; lines so far: {seen:#?}");
}

/// Kills the child when the test ends, however it ends.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unusable_store_path_fails_closed_and_recovers_without_a_restart() {
    let sim = sim().await;
    let dir = tempfile::tempdir().unwrap();
    // A file where the store's parent directory should be: sled cannot create it.
    let blocker = dir.path().join("data");
    std::fs::write(&blocker, b"not a directory").unwrap();
    let store_path = blocker.join("tokens.sled");
    let config_path = dir.path().join("proxy.toml");
    std::fs::write(
        &config_path,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n\
             [upstream]\nurl = \"{}\"\n\
             [upstream.credentials]\nsecret_header_name = \"X-Gateway-Secret\"\nsecret_env = \"GW_SECRET\"\n\
             [tokens]\nstore_path = \"{}\"\n[log]\nformat = \"json\"\n",
            sim.url(),
            store_path.display()
        ),
    )
    .unwrap();
    let mut child = Child(
        Command::new(env!("CARGO_BIN_EXE_tokengate"))
            .args(["serve", "--config"])
            .arg(&config_path)
            .env("GW_SECRET", SECRET)
            .env_remove("RUST_LOG")
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let lines = stderr_lines(&mut child.0);
    let mut seen = Vec::new();
    // The log says why, and what it means for requests.
    let failed = wait_for(&lines, "cannot be opened", &mut seen);
    assert_eq!(failed["level"], "ERROR", "{failed}");
    assert!(
        failed["store"].as_str().unwrap().ends_with("tokens.sled"),
        "the log names the store: {failed}"
    );
    assert!(
        failed["error"].as_str().unwrap().contains("cannot open"),
        "{failed}"
    );
    assert!(
        failed["message"].as_str().unwrap().contains("503"),
        "{failed}"
    );
    // ... and it still starts.
    let listening = wait_for(&lines, "tokengate listening", &mut seen);
    let base = format!("http://{}", listening["addr"].as_str().unwrap());
    let admin = listening["admin"]
        .as_str()
        .unwrap()
        .trim_start_matches("Some(")
        .trim_end_matches(')')
        .to_string();
    let http = client();

    // Token requests: 503, never forwarded.
    sim.clear_seen();
    let resp = http
        .get(format!("{base}/rest/api/2/issue/STORE-1"))
        .bearer_auth(well_formed_token())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["retry-after"], "5");
    assert_store_unavailable(resp, "a bearer token").await;
    let resp = http
        .get(format!("{base}/rest/api/2/issue/STORE-2"))
        .basic_auth("alice", Some(well_formed_token()))
        .send()
        .await
        .unwrap();
    assert_store_unavailable(resp, "a Basic user:token").await;
    // A malformed token needs no store to be refused: the usual 401.
    let resp = http
        .get(format!("{base}/rest/api/2/issue/STORE-3"))
        .bearer_auth(format!("tg_{}", "A".repeat(36)))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    assert!(
        sim.seen().iter().all(|s| !s.target.contains("STORE-")),
        "no token request reached the upstream"
    );

    // Requests that need no store are served as usual.
    let resp = http
        .get(format!("{base}/rest/api/2/serverInfo?anonymous"))
        .send()
        .await
        .unwrap();
    assert_ne!(resp.status(), 503);
    assert!(
        sim.seen().iter().any(|s| s.target.ends_with("?anonymous")),
        "anonymous forwarded"
    );
    let me: Value = http
        .get(format!("{base}/rest/api/2/myself"))
        .basic_auth("alice", Some("alice"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me["name"], "alice", "a password request is forwarded");

    // The management API needs the store: 503, for password and token callers.
    let resp = http
        .get(format!("{base}{API}/user/token"))
        .basic_auth("alice", Some("alice"))
        .send()
        .await
        .unwrap();
    assert_store_unavailable(resp, "list").await;
    let resp = http
        .post(format!("{base}{API}/user/token"))
        .basic_auth("alice", Some("alice"))
        .json(&json!({"tokenDescription": "while closed"}))
        .send()
        .await
        .unwrap();
    assert_store_unavailable(resp, "create").await;
    let resp = http
        .delete(format!("{base}{API}/user/token/1"))
        .basic_auth("alice", Some("alice"))
        .send()
        .await
        .unwrap();
    assert_store_unavailable(resp, "delete").await;
    // authTest: a password needs no store; a token gets no verdict, a 503.
    let ok: Value = http
        .get(format!("{base}{API}/user/authTest"))
        .basic_auth("alice", Some("alice"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ok["isSuccessfulAuthentication"], true);
    let resp = http
        .get(format!("{base}{API}/user/authTest"))
        .bearer_auth(well_formed_token())
        .send()
        .await
        .unwrap();
    assert_store_unavailable(resp, "authTest with a token").await;

    // Not ready, and the reason names the store.
    let resp = http
        .get(format!("http://{admin}/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 503);
    let ready: Value = resp.json().await.unwrap();
    assert_eq!(ready["upstream"], "ok");
    assert!(
        ready["store"].as_str().unwrap().contains("not open"),
        "{ready}"
    );
    let metrics = http
        .get(format!("http://{admin}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("tokengate_auth_decisions_total{result=\"store_unavailable\"} 3"),
        "{metrics}"
    );

    // The path becomes usable: the gateway opens the store by itself.
    std::fs::remove_file(&blocker).unwrap();
    let opened = wait_for(&lines, "the token store is open", &mut seen);
    assert_eq!(opened["level"], "INFO");
    let (status, ready) = readiness_until(&http, &format!("http://{admin}/readyz"), 200).await;
    assert_eq!((status, &ready["ready"]), (200, &json!(true)), "{ready}");
    let created: Value = http
        .post(format!("{base}{API}/user/token"))
        .basic_auth("alice", Some("alice"))
        .json(&json!({"tokenDescription": "after recovery"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(created["id"], 1);
    let me: Value = http
        .get(format!("{base}/rest/api/2/myself"))
        .bearer_auth(created["plainTextToken"].as_str().unwrap())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me["name"], "alice", "the new token works");
    assert!(
        store_path.is_dir(),
        "the store was created where configured"
    );
    assert!(
        seen.iter().all(|l| !l.contains("panicked")),
        "no panic in the log"
    );
    assert!(
        child.0.try_wait().unwrap().is_none(),
        "the same process served throughout"
    );

    // A clean stop closes the store it opened late.
    assert!(
        Command::new("kill")
            .args(["-TERM", &child.0.id().to_string()])
            .status()
            .unwrap()
            .success()
    );
    wait_for(&lines, "store closed", &mut seen);
    assert!(child.0.wait().unwrap().success());
}

// ---------------------------------------------------------------------------
// In-process: a store held by someone else, and a backend that fails on demand.

async fn config_for(sim: &SimUpstream, dir: &std::path::Path) -> tokengate::config::Config {
    let mut config = test_config(&sim.url(), dir);
    config.server.admin_listen = "127.0.0.1:0".into();
    config.upstream.credentials.secret_header_name = "X-Gateway-Secret".into();
    config.upstream.credentials.secret_env = "GW_SECRET".into();
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_held_by_another_process_is_taken_over_when_released() {
    secrets::scan_logs();
    let sim = sim().await;
    let dir = tempfile::tempdir().unwrap();
    let config = config_for(&sim, dir.path()).await;
    // Another holder of the store, as an old gateway still shutting down would be.
    let holder = Store::open(&config.tokens.store_path).unwrap();
    let clock = tokengate::clock::ManualClock::new(T0);
    let gw = tokengate::start(config.clone(), options(clock, &[("GW_SECRET", SECRET)]))
        .await
        .expect("the gateway starts although the store is in use");
    let base = format!("http://{}", gw.addr());
    let admin = gw.admin_addr().unwrap();
    let http = client();
    let resp = http
        .post(format!("{base}{API}/user/token"))
        .basic_auth("alice", Some("alice"))
        .json(&json!({"tokenDescription": "x"}))
        .send()
        .await
        .unwrap();
    assert_store_unavailable(resp, "create while held").await;
    let ready: Value = http
        .get(format!("http://{admin}/readyz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        ready["store"]
            .as_str()
            .unwrap()
            .contains("in use by another process"),
        "{ready}"
    );

    holder.close().unwrap();
    drop(holder);
    // Retries back off to at most 5 s: the store is taken within a few seconds.
    let released = Instant::now();
    let created = loop {
        let resp = http
            .post(format!("{base}{API}/user/token"))
            .basic_auth("alice", Some("alice"))
            .json(&json!({"tokenDescription": "after release"}))
            .send()
            .await
            .unwrap();
        if resp.status() == 200 {
            break resp.json::<Value>().await.unwrap();
        }
        assert_eq!(resp.status(), 503);
        assert!(
            released.elapsed() < Duration::from_secs(15),
            "the store was not taken over"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let resp = http
        .get(format!("{base}/rest/api/2/myself"))
        .bearer_auth(created["plainTextToken"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    gw.stop().await;
}

/// A sled backend that fails the chosen operations on demand.
#[derive(Clone)]
struct Faulty {
    inner: Arc<SledBackend>,
    fail_lookup: Arc<AtomicBool>,
    fail_insert: Arc<AtomicBool>,
    fail_flush: Arc<AtomicBool>,
}

fn injected(what: &str) -> StoreError {
    StoreError::Unavailable(format!("injected {what} failure"))
}

impl Faulty {
    fn check(flag: &AtomicBool, what: &str) -> Result<(), StoreError> {
        if flag.load(Ordering::SeqCst) {
            Err(injected(what))
        } else {
            Ok(())
        }
    }
}

impl Backend for Faulty {
    fn lookup(&self, hash: &TokenHash) -> Result<Option<AuthEntry>, StoreError> {
        Faulty::check(&self.fail_lookup, "lookup")?;
        self.inner.lookup(hash)
    }
    fn get(&self, id: u64) -> Result<Option<TokenRecord>, StoreError> {
        self.inner.get(id)
    }
    fn list_user(&self, user_key: &str) -> Result<Vec<TokenRecord>, StoreError> {
        self.inner.list_user(user_key)
    }
    fn filter(&self, filter: &Filter, offset: u64, limit: u64) -> Result<Page, StoreError> {
        self.inner.filter(filter, offset, limit)
    }
    fn insert(&self, token: NewToken, per_user_limit: u32) -> Result<TokenRecord, InsertError> {
        Faulty::check(&self.fail_insert, "insert")?;
        self.inner.insert(token, per_user_limit)
    }
    fn restore(&self, records: &[TokenRecord]) -> Result<u64, StoreError> {
        self.inner.restore(records)
    }
    fn update_description(&self, id: u64, d: &str) -> Result<Option<TokenRecord>, StoreError> {
        self.inner.update_description(id, d)
    }
    fn delete(&self, id: u64) -> Result<Option<TokenRecord>, StoreError> {
        self.inner.delete(id)
    }
    fn delete_user(&self, user_key: &str) -> Result<u64, StoreError> {
        self.inner.delete_user(user_key)
    }
    fn record_access(&self, batch: &[(u64, u64)]) -> Result<(), StoreError> {
        self.inner.record_access(batch)
    }
    fn count(&self) -> Result<u64, StoreError> {
        self.inner.count()
    }
    fn next_id(&self) -> Result<u64, StoreError> {
        self.inner.next_id()
    }
    fn raise_next_id(&self, next: u64) -> Result<(), StoreError> {
        self.inner.raise_next_id(next)
    }
    fn scan(&self, visit: &mut dyn FnMut(TokenRecord) -> bool) -> Result<(), StoreError> {
        self.inner.scan(visit)
    }
    fn flush(&self) -> Result<(), StoreError> {
        Faulty::check(&self.fail_flush, "flush")?;
        self.inner.flush()
    }
}

struct FaultySetup {
    gw: tokengate::Running,
    sim: SimUpstream,
    faults: Faulty,
    base: String,
    admin: std::net::SocketAddr,
    http: reqwest::Client,
    dir: tempfile::TempDir,
}

impl FaultySetup {
    async fn start() -> FaultySetup {
        secrets::scan_logs();
        let sim = sim().await;
        let dir = tempfile::tempdir().unwrap();
        let config = config_for(&sim, dir.path()).await;
        let faults = Faulty {
            inner: Arc::new(SledBackend::open(&config.tokens.store_path).unwrap()),
            fail_lookup: Arc::default(),
            fail_insert: Arc::default(),
            fail_flush: Arc::default(),
        };
        let backend = faults.clone();
        let clock = tokengate::clock::ManualClock::new(T0);
        let gw = tokengate::start_with_store(
            config,
            options(clock, &[("GW_SECRET", SECRET)]),
            Arc::new(move || Ok(Store::with_backend(Arc::new(backend.clone())))),
        )
        .await
        .unwrap();
        FaultySetup {
            base: format!("http://{}", gw.addr()),
            admin: gw.admin_addr().unwrap(),
            gw,
            sim,
            faults,
            http: client(),
            dir,
        }
    }

    async fn create(&self, description: &str) -> reqwest::Response {
        self.http
            .post(format!("{}{API}/user/token", self.base))
            .basic_auth("alice", Some("alice"))
            .json(&json!({"tokenDescription": description}))
            .send()
            .await
            .unwrap()
    }

    async fn listed_ids(&self) -> Vec<u64> {
        let list: Vec<Value> = self
            .http
            .get(format!("{}{API}/user/token", self.base))
            .basic_auth("alice", Some("alice"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        list.iter().map(|t| t["id"].as_u64().unwrap()).collect()
    }

    async fn delete(&self, id: u64) -> reqwest::Response {
        self.http
            .delete(format!("{}{API}/user/token/{id}", self.base))
            .basic_auth("alice", Some("alice"))
            .send()
            .await
            .unwrap()
    }

    async fn myself(&self, token: &str, tag: &str) -> reqwest::Response {
        self.http
            .get(format!("{}/rest/api/2/myself?{tag}", self.base))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
    }

    async fn readiness(&self, want: u16) -> (u16, Value) {
        readiness_until(&self.http, &format!("http://{}/readyz", self.admin), want).await
    }

    /// Stops the gateway, reopens the store on disk, returns its records' ids.
    async fn ids_on_disk(self) -> Vec<u64> {
        let FaultySetup {
            gw, faults, dir, ..
        } = self;
        gw.stop().await;
        let path = dir.path().join("tokens.sled");
        drop(faults);
        // sled lets go of its lock from a background thread: allow it a moment.
        let deadline = Instant::now() + Duration::from_secs(5);
        let reopened = loop {
            match SledBackend::open(&path) {
                Ok(b) => break b,
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("cannot reopen the store: {e}"),
            }
        };
        let mut ids = Vec::new();
        reopened
            .scan(&mut |r| {
                ids.push(r.id);
                true
            })
            .unwrap();
        assert_eq!(
            reopened.count().unwrap(),
            ids.len() as u64,
            "the count agrees"
        );
        ids
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_write_refuses_the_create_with_503_and_keeps_nothing() {
    let s = FaultySetup::start().await;
    let first: Value = s.create("kept").await.json().await.unwrap();
    assert_eq!(first["id"], 1);

    // The engine refuses the insert.
    s.faults.fail_insert.store(true, Ordering::SeqCst);
    assert_store_unavailable(s.create("insert fails").await, "insert fails").await;
    s.faults.fail_insert.store(false, Ordering::SeqCst);

    // The insert works but cannot be made durable: not acknowledged, not kept.
    s.faults.fail_flush.store(true, Ordering::SeqCst);
    assert_store_unavailable(s.create("flush fails").await, "flush fails").await;
    assert_eq!(
        s.listed_ids().await,
        vec![1],
        "nothing half-stored is listed"
    );
    let (status, ready) = s.readiness(503).await;
    assert_eq!(status, 503, "not ready while writes fail: {ready}");
    assert!(
        ready["store"].as_str().unwrap().contains("writes fail"),
        "{ready}"
    );
    // Tokens already stored still work: reads do not need the disk to take writes.
    let token = first["plainTextToken"].as_str().unwrap();
    assert_eq!(s.myself(token, "while-writes-fail").await.status(), 200);

    s.faults.fail_flush.store(false, Ordering::SeqCst);
    let (status, ready) = s.readiness(200).await;
    assert_eq!(status, 200, "ready again once a write works: {ready}");
    let next: Value = s.create("after").await.json().await.unwrap();
    let next_id = next["id"].as_u64().unwrap();
    assert!(next_id > 1, "ids go on: {next_id}");
    assert_eq!(s.listed_ids().await, vec![1, next_id]);
    assert_eq!(
        s.ids_on_disk().await,
        vec![1, next_id],
        "nothing else on disk"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_that_cannot_be_written_is_not_acknowledged_but_the_token_stops_working() {
    let s = FaultySetup::start().await;
    let created: Value = s.create("to delete").await.json().await.unwrap();
    let token = created["plainTextToken"].as_str().unwrap().to_string();
    assert_eq!(s.myself(&token, "before").await.status(), 200);

    s.faults.fail_flush.store(true, Ordering::SeqCst);
    assert_store_unavailable(s.delete(1).await, "delete while writes fail").await;
    // Fail closed: the token whose deletion was asked for never works again.
    assert_eq!(s.myself(&token, "after-failed-delete").await.status(), 401);
    // A retry is not told "no such token" before the deletion is on disk.
    assert_store_unavailable(s.delete(1).await, "retried delete").await;

    s.faults.fail_flush.store(false, Ordering::SeqCst);
    assert_eq!(s.delete(1).await.status(), 404, "gone, and now on disk");
    assert_eq!(s.myself(&token, "after-heal").await.status(), 401);
    assert!(s.listed_ids().await.is_empty());
    assert!(s.ids_on_disk().await.is_empty(), "deleted on disk");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_lookup_refuses_the_token_with_503_and_never_forwards_it() {
    let s = FaultySetup::start().await;
    let created: Value = s.create("looked up").await.json().await.unwrap();
    let token = created["plainTextToken"].as_str().unwrap().to_string();

    s.faults.fail_lookup.store(true, Ordering::SeqCst);
    s.sim.clear_seen();
    assert_store_unavailable(s.myself(&token, "lookup-fails").await, "proxied").await;
    let resp = s
        .http
        .post(format!("{}/rest/api/2/issue?lookup-fails-basic", s.base))
        .basic_auth("alice", Some(&token))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_store_unavailable(resp, "proxied, Basic").await;
    let resp = s
        .http
        .get(format!("{}{API}/user/token", s.base))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_store_unavailable(resp, "management API with a token").await;
    let resp = s
        .http
        .put(format!("{}{API}/user/authTest", s.base))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_store_unavailable(resp, "authTest with a token").await;
    assert!(
        s.sim
            .seen()
            .iter()
            .all(|r| !r.target.contains("lookup-fails")),
        "the upstream never saw a token request: {:?}",
        s.sim.seen().iter().map(|r| &r.target).collect::<Vec<_>>()
    );
    let me = s
        .http
        .get(format!("{}/rest/api/2/myself?password", s.base))
        .basic_auth("alice", Some("alice"))
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), 200, "password requests are unaffected");

    s.faults.fail_lookup.store(false, Ordering::SeqCst);
    let me: Value = s.myself(&token, "healed").await.json().await.unwrap();
    assert_eq!(me["name"], "alice");
    s.gw.stop().await;
}
