//! The token store failing: the gateway fails closed and never lets
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
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use common::process::{Child, serve, stderr_lines, terminate, wait_for, write_config};
use common::*;
use reqwest::Method;
use serde_json::{Value, json};
use tokengate::demo::sim::{SimConfig, SimUpstream};
use tokengate::store::{
    Access, Backend, Filter, FoundEntry, Health, InsertError, NewToken, Page, Rotated, SledBackend,
    SledEngine, Store, StoreError, TokenRecord,
};
use tokengate::token::{TokenFormat, TokenHash};

/// A well-formed token (right prefix and checksum) that no store knows.
fn well_formed_token() -> String {
    TokenFormat::new("tg")
        .generate()
        .unwrap()
        .expose()
        .to_string()
}

/// Asserts the Jira-shaped JSON error body with a 503.
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
async fn readiness_until(admin: &Remote, want: u16) -> (u16, Value) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (status, body) = admin
            .anonymous()
            .request(Method::GET, "/readyz")
            .json_answer()
            .await;
        if status == want || Instant::now() > deadline {
            return (status.as_u16(), body);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A POST of a token creation as alice: the whole response.
async fn create_as_alice(gw: &impl Gateway, description: &str) -> reqwest::Response {
    gw.as_user("alice", "alice")
        .api(Method::POST, "/user/token")
        .json(&json!({"tokenDescription": description}))
        .answer()
        .await
}

// ---------------------------------------------------------------------------
// The real binary with a store path that cannot be used.

/// The real binary started on a store path that cannot be a directory: a
/// file stands where the store's parent directory should be.
struct ClosedStore {
    sim: SimUpstream,
    child: Child,
    lines: Receiver<String>,
    /// The log lines read so far.
    seen: Vec<String>,
    /// The log line that says the store cannot be opened.
    failed: Value,
    gw: Remote,
    admin: Remote,
    /// The file in the way; removing it makes the path usable.
    blocker: PathBuf,
    store_path: PathBuf,
    _dir: tempfile::TempDir,
}

impl ClosedStore {
    /// Starts the binary and waits until it says the store cannot be
    /// opened, then (and only then) that it listens.
    async fn start() -> ClosedStore {
        let sim = header_mode_sim(SimConfig::jira()).await;
        let dir = tempfile::tempdir().unwrap();
        let blocker = dir.path().join("data");
        std::fs::write(&blocker, b"not a directory").unwrap();
        let store_path = blocker.join("tokens.sled");
        let config_path = dir.path().join("proxy.toml");
        write_config(
            &config_path,
            &sim.url(),
            &store_path,
            &[("server", "admin_listen = \"127.0.0.1:0\"")],
        );
        let mut child = serve(&config_path, &[("GW_SECRET", SECRET)]);
        let lines = stderr_lines(&mut child.0);
        let mut seen = Vec::new();
        let failed = wait_for(&lines, "cannot be opened", &mut seen);
        let listening = wait_for(&lines, "tokengate listening", &mut seen);
        let admin = listening["admin"]
            .as_str()
            .unwrap()
            .trim_start_matches("Some(")
            .trim_end_matches(')')
            .to_string();
        ClosedStore {
            sim,
            child,
            lines,
            seen,
            failed,
            gw: Remote::at(format!("http://{}", listening["addr"].as_str().unwrap())),
            admin: Remote::at(format!("http://{admin}")),
            blocker,
            store_path,
            _dir: dir,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unusable_store_path_is_logged_with_its_reason_and_the_gateway_still_starts() {
    let s = ClosedStore::start().await;
    // The log says why, and what it means for requests.
    let failed = &s.failed;
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
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_requests_get_503_and_never_reach_the_upstream_while_the_store_is_closed() {
    let s = ClosedStore::start().await;
    s.sim.clear_seen();
    let resp =
        s.gw.with_token(&well_formed_token())
            .fetch("/rest/api/2/issue/STORE-1")
            .await;
    assert_eq!(resp.headers()["retry-after"], "5");
    assert_store_unavailable(resp, "a bearer token").await;
    let resp =
        s.gw.as_user("alice", &well_formed_token())
            .fetch("/rest/api/2/issue/STORE-2")
            .await;
    assert_store_unavailable(resp, "a Basic user:token").await;
    // A malformed token needs no store to be refused: the usual 401.
    let malformed = format!("tg_{}", "A".repeat(36));
    let resp =
        s.gw.with_token(&malformed)
            .fetch("/rest/api/2/issue/STORE-3")
            .await;
    assert_eq!(resp.status(), 401);
    assert!(
        s.sim.seen().iter().all(|s| !s.target.contains("STORE-")),
        "no token request reached the upstream"
    );
    // authTest gets no verdict on a token, a 503.
    let resp =
        s.gw.with_token(&well_formed_token())
            .api(Method::GET, "/user/authTest")
            .answer()
            .await;
    assert_store_unavailable(resp, "authTest with a token").await;
    // Each of the three is counted.
    let metrics = s
        .admin
        .anonymous()
        .fetch("/metrics")
        .await
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("tokengate_auth_decisions_total{result=\"store_unavailable\"} 3"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_that_need_no_store_are_forwarded_while_it_is_closed() {
    let s = ClosedStore::start().await;
    let resp =
        s.gw.anonymous()
            .fetch("/rest/api/2/serverInfo?anonymous")
            .await;
    assert_ne!(resp.status(), 503);
    assert!(
        s.sim
            .seen()
            .iter()
            .any(|s| s.target.ends_with("?anonymous")),
        "anonymous forwarded"
    );
    let me: Value =
        s.gw.as_user("alice", "alice")
            .myself()
            .await
            .json()
            .await
            .unwrap();
    assert_eq!(me["name"], "alice", "a password request is forwarded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_management_api_answers_503_while_the_store_is_closed() {
    let s = ClosedStore::start().await;
    let alice = s.gw.as_user("alice", "alice");
    let resp = alice.api(Method::GET, "/user/token").answer().await;
    assert_store_unavailable(resp, "list").await;
    assert_store_unavailable(create_as_alice(&s.gw, "while closed").await, "create").await;
    let resp = alice.api(Method::DELETE, "/user/token/1").answer().await;
    assert_store_unavailable(resp, "delete").await;
    // authTest: a password needs no store.
    let (_, ok) = alice.get("/user/authTest").await;
    assert_eq!(ok["isSuccessfulAuthentication"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_is_503_and_names_the_closed_store() {
    let s = ClosedStore::start().await;
    let (status, ready) = s
        .admin
        .anonymous()
        .request(Method::GET, "/readyz")
        .json_answer()
        .await;
    assert_eq!(status, 503);
    assert_eq!(ready["upstream"], "ok");
    assert!(
        ready["store"].as_str().unwrap().contains("not open"),
        "{ready}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_the_path_is_usable_the_store_opens_without_a_restart() {
    let mut s = ClosedStore::start().await;
    std::fs::remove_file(&s.blocker).unwrap();
    let opened = wait_for(&s.lines, "the token store is open", &mut s.seen);
    assert_eq!(opened["level"], "INFO");
    let (status, ready) = readiness_until(&s.admin, 200).await;
    assert_eq!((status, &ready["ready"]), (200, &json!(true)), "{ready}");
    let created: Value = create_as_alice(&s.gw, "after recovery")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(created["id"], 1);
    let me: Value =
        s.gw.with_token(created["plainTextToken"].as_str().unwrap())
            .myself()
            .await
            .json()
            .await
            .unwrap();
    assert_eq!(me["name"], "alice", "the new token works");
    assert!(
        s.store_path.is_dir(),
        "the store was created where configured"
    );
    assert!(
        s.seen.iter().all(|l| !l.contains("panicked")),
        "no panic in the log"
    );
    assert!(
        s.child.0.try_wait().unwrap().is_none(),
        "the same process served throughout"
    );

    // A clean stop closes the store it opened late.
    terminate(&s.child.0);
    wait_for(&s.lines, "store closed", &mut s.seen);
    assert!(s.child.0.wait().unwrap().success());
}

// ---------------------------------------------------------------------------
// In-process: a store held by someone else, and a backend that fails on demand.

/// [`header_mode_config`] with an admin listener.
fn config_for(sim: &SimUpstream, dir: &std::path::Path) -> tokengate::config::Config {
    let mut config = header_mode_config(&sim.url(), dir);
    config.server.admin_listen = "127.0.0.1:0".into();
    config
}

fn admin_of(gw: &tokengate::Running) -> Remote {
    Remote::at(format!("http://{}", gw.admin_addr().unwrap()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_held_by_another_process_is_taken_over_when_released() {
    let sim = header_mode_sim(SimConfig::jira()).await;
    let dir = tempfile::tempdir().unwrap();
    let config = config_for(&sim, dir.path());
    // Another holder of the store, as an old gateway still shutting down would be.
    let holder = Store::open(&config.tokens.store_path).unwrap();
    let gw = start_with_secret(config.clone(), tokengate::clock::ManualClock::new(T0)).await;
    assert_store_unavailable(create_as_alice(&gw, "x").await, "create while held").await;
    let (_, ready) = admin_of(&gw)
        .anonymous()
        .request(Method::GET, "/readyz")
        .json_answer()
        .await;
    assert!(
        ready["store"]
            .as_str()
            .unwrap()
            .contains("in use by another process"),
        "{ready}"
    );

    holder.close().await.unwrap();
    drop(holder);
    // Retries back off to at most 5 s: the store is taken within a few seconds.
    let released = Instant::now();
    let created = loop {
        let resp = create_as_alice(&gw, "after release").await;
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
    let resp = gw
        .with_token(created["plainTextToken"].as_str().unwrap())
        .myself()
        .await;
    assert_eq!(resp.status(), 200);
    gw.stop().await;
}

/// A sled backend that fails the chosen operations on demand.
///
/// A failing flush is what `SledBackend` meets when the disk stops taking
/// writes: the write is applied, then the call fails. As `SledBackend` does,
/// a creation is taken back (nothing is kept on `Err`), and after a failed
/// write the next `settle` or readiness check tries a flush again: until one
/// works, readiness says writes fail and a retried delete is not answered.
#[derive(Clone)]
struct Faulty {
    inner: Arc<SledBackend>,
    fail_lookup: Arc<AtomicBool>,
    fail_insert: Arc<AtomicBool>,
    fail_flush: Arc<AtomicBool>,
    /// Why the last flush failed; `None` once one works again.
    write_error: Arc<Mutex<Option<String>>>,
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

    /// The flush that makes a write durable: fails while `fail_flush` is
    /// set; remembered for `settle` and `health`.
    fn flush(&self) -> Result<(), StoreError> {
        let outcome = Faulty::check(&self.fail_flush, "flush");
        *self.write_error.lock().unwrap() = outcome.as_ref().err().map(ToString::to_string);
        outcome
    }

    fn write_failed(&self) -> bool {
        self.write_error.lock().unwrap().is_some()
    }

    /// A write the inner backend applied, then the flush.
    fn written<T>(&self, applied: Result<T, StoreError>) -> Result<T, StoreError> {
        let value = applied?;
        self.flush()?;
        Ok(value)
    }
}

#[async_trait]
impl Backend for Faulty {
    fn kind(&self) -> &'static str {
        self.inner.kind()
    }
    async fn lookup(&self, hash: &TokenHash) -> Result<Option<FoundEntry>, StoreError> {
        Faulty::check(&self.fail_lookup, "lookup")?;
        self.inner.lookup(hash).await
    }
    async fn get(&self, id: u64) -> Result<Option<TokenRecord>, StoreError> {
        self.inner.get(id).await
    }
    async fn list_user(&self, user_key: &str) -> Result<Vec<TokenRecord>, StoreError> {
        self.inner.list_user(user_key).await
    }
    async fn filter(&self, filter: &Filter, offset: u64, limit: u64) -> Result<Page, StoreError> {
        self.inner.filter(filter, offset, limit).await
    }
    async fn insert(
        &self,
        token: NewToken,
        per_user_limit: u32,
    ) -> Result<TokenRecord, InsertError> {
        Faulty::check(&self.fail_insert, "insert")?;
        let record = self.inner.insert(token, per_user_limit).await?;
        if let Err(e) = self.flush() {
            // Not acknowledged, so taken back, as `SledBackend` does.
            self.inner.engine().delete(record.id)?;
            return Err(e.into());
        }
        Ok(record)
    }
    async fn restore(&self, records: Vec<TokenRecord>) -> Result<u64, StoreError> {
        self.written(self.inner.restore(records).await)
    }
    async fn update_description(
        &self,
        id: u64,
        d: &str,
    ) -> Result<Option<TokenRecord>, StoreError> {
        self.written(self.inner.update_description(id, d).await)
    }
    async fn delete(&self, id: u64) -> Result<Option<TokenRecord>, StoreError> {
        self.written(self.inner.delete(id).await)
    }
    async fn delete_user(&self, user_key: &str) -> Result<u64, StoreError> {
        self.written(self.inner.delete_user(user_key).await)
    }
    async fn record_access(&self, batch: Vec<Access>) -> Result<(), StoreError> {
        self.written(self.inner.record_access(batch).await)
    }
    async fn rotate(
        &self,
        id: u64,
        new_hash: TokenHash,
        previous_until: Option<u64>,
    ) -> Result<Option<Rotated>, StoreError> {
        self.written(self.inner.rotate(id, new_hash, previous_until).await)
    }
    async fn claim_notice(
        &self,
        id: u64,
        notice: &str,
        now_ms: u64,
        lease_until: u64,
    ) -> Result<bool, StoreError> {
        self.written(
            self.inner
                .claim_notice(id, notice, now_ms, lease_until)
                .await,
        )
    }
    async fn finish_notice(&self, id: u64, notice: &str, sent: bool) -> Result<(), StoreError> {
        self.written(self.inner.finish_notice(id, notice, sent).await)
    }
    async fn count(&self) -> Result<u64, StoreError> {
        self.inner.count().await
    }
    async fn next_id(&self) -> Result<u64, StoreError> {
        self.inner.next_id().await
    }
    async fn raise_next_id(&self, next: u64) -> Result<(), StoreError> {
        self.written(self.inner.raise_next_id(next).await)
    }
    async fn scan_from(&self, after: u64, limit: usize) -> Result<Vec<TokenRecord>, StoreError> {
        self.inner.scan_from(after, limit).await
    }
    async fn settle(&self) -> Result<(), StoreError> {
        if self.write_failed() {
            self.flush()?;
        }
        self.inner.settle().await
    }
    async fn health(&self) -> Health {
        if self.write_failed()
            && let Err(e) = self.flush()
        {
            return Health {
                parts: vec![("store", format!("writes fail: {e}"))],
            };
        }
        self.inner.health().await
    }
    async fn close(&self) -> Result<(), StoreError> {
        self.inner.close().await
    }
}

struct FaultySetup {
    gw: tokengate::Running,
    sim: SimUpstream,
    faults: Faulty,
    admin: Remote,
    dir: tempfile::TempDir,
}

impl FaultySetup {
    async fn start() -> FaultySetup {
        let sim = header_mode_sim(SimConfig::jira()).await;
        let dir = tempfile::tempdir().unwrap();
        let config = config_for(&sim, dir.path());
        let faults = Faulty {
            inner: Arc::new(SledBackend::open(&config.tokens.store_path).unwrap()),
            fail_lookup: Arc::default(),
            fail_insert: Arc::default(),
            fail_flush: Arc::default(),
            write_error: Arc::default(),
        };
        let backend = faults.clone();
        let gw = start_with_store(
            config,
            Arc::new(move || {
                let backend = backend.clone();
                Box::pin(async move { Ok(Store::with_backend(Arc::new(backend))) })
            }),
        )
        .await;
        FaultySetup {
            admin: admin_of(&gw),
            gw,
            sim,
            faults,
            dir,
        }
    }

    async fn create(&self, description: &str) -> reqwest::Response {
        create_as_alice(&self.gw, description).await
    }

    async fn listed_ids(&self) -> Vec<u64> {
        let (_, list) = self.gw.as_user("alice", "alice").get("/user/token").await;
        list.as_array()
            .unwrap()
            .iter()
            .map(|t| t["id"].as_u64().unwrap())
            .collect()
    }

    async fn delete(&self, id: u64) -> reqwest::Response {
        self.gw
            .as_user("alice", "alice")
            .api(Method::DELETE, &format!("/user/token/{id}"))
            .answer()
            .await
    }

    async fn myself(&self, token: &str, tag: &str) -> reqwest::Response {
        self.gw
            .with_token(token)
            .fetch(&format!("/rest/api/2/myself?{tag}"))
            .await
    }

    async fn readiness(&self, want: u16) -> (u16, Value) {
        readiness_until(&self.admin, want).await
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
            match SledEngine::open(&path) {
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
    let resp =
        s.gw.as_user("alice", &token)
            .request(Method::POST, "/rest/api/2/issue?lookup-fails-basic")
            .json(&json!({}))
            .answer()
            .await;
    assert_store_unavailable(resp, "proxied, Basic").await;
    let by_token = s.gw.with_token(&token);
    let resp = by_token.api(Method::GET, "/user/token").answer().await;
    assert_store_unavailable(resp, "management API with a token").await;
    let resp = by_token.api(Method::PUT, "/user/authTest").answer().await;
    assert_store_unavailable(resp, "authTest with a token").await;
    assert!(
        s.sim
            .seen()
            .iter()
            .all(|r| !r.target.contains("lookup-fails")),
        "the upstream never saw a token request: {:?}",
        s.sim.seen().iter().map(|r| &r.target).collect::<Vec<_>>()
    );
    let me =
        s.gw.as_user("alice", "alice")
            .fetch("/rest/api/2/myself?password")
            .await;
    assert_eq!(me.status(), 200, "password requests are unaffected");

    s.faults.fail_lookup.store(false, Ordering::SeqCst);
    let me: Value = s.myself(&token, "healed").await.json().await.unwrap();
    assert_eq!(me["name"], "alice");
    s.gw.stop().await;
}
