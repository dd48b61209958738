//! Cluster mode: two gateway processes (the real binary) on one PostgreSQL
//! database, in front of one simulated Jira.
//!
//! - a token made on node A works on node B; deleted (or deleted with all of
//!   its owner's) on A, it is refused on B within a second;
//! - failed logins count cluster-wide: three wrong passwords spread over A
//!   and B lock the user out on both; an admin's reset on B clears A;
//! - ids are unique and the per-user limit holds under 16 concurrent creators
//!   spread over both nodes;
//! - B loses its listening connection: it recovers, and a revocation it did
//!   not hear of is honoured within `cache_max_stale_ms`;
//! - B's database unreachable: token requests and the management API get
//!   503 in Jira's error shape, password and anonymous requests are still
//!   forwarded, `/readyz` says why, and all is well again when it returns;
//! - kill -9 of a node while 16 clients create tokens on both: every
//!   acknowledged token is there;
//! - a missing URL variable, a URL that is not one, and a database that
//!   refuses the login are errors that name the key and never the password;
//!   a schema newer than the binary stops it, naming both versions.
//!
//! They need PostgreSQL (see `common::pg`): without it they print one
//! "SKIPPED" line each, or fail when `TOKENGATE_REQUIRE_POSTGRES=1`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::cut::Cuttable;
use common::pg::TestDb;
use common::process::{Child, run, serve, stderr_lines, wait_for, write_config};
use common::{Gateway, Remote, SECRET, error_message, header_mode_sim};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokengate::demo::sim::{SimConfig, SimUpstream};

const URL_VAR: &str = "TG_TEST_PG_URL";

/// One gateway process on the shared database.
struct Node {
    child: Child,
    at: Remote,
    admin: String,
    /// Its log lines, as they come.
    _lines: Receiver<String>,
}

impl Node {
    /// Starts `tokengate serve` on a configuration in `dir` with the
    /// database at `db_url`; `extra` adds configuration lines.
    fn start(
        dir: &Path,
        name: &str,
        sim: &SimUpstream,
        db_url: &str,
        extra: &[(&str, &str)],
    ) -> Node {
        let config = dir.join(format!("{name}.toml"));
        let mut lines = vec![
            ("server", "admin_listen = \"127.0.0.1:0\""),
            ("tokens", "backend = \"postgres\""),
        ];
        let url_key = format!("postgres_url_env = \"{URL_VAR}\"");
        lines.push(("tokens", &url_key));
        lines.extend_from_slice(extra);
        write_config(
            &config,
            &sim.url(),
            &dir.join(format!("{name}.sled")),
            &lines,
        );
        let mut child = serve(&config, &[("GW_SECRET", SECRET), (URL_VAR, db_url)]);
        let lines = echo_errors(stderr_lines(&mut child.0), name);
        let listening = wait_for(&lines, "tokengate listening", &mut Vec::new());
        let base = format!("http://{}", listening["addr"].as_str().unwrap());
        let admin = listening["admin"]
            .as_str()
            .unwrap()
            .trim_start_matches("Some(")
            .trim_end_matches(')')
            .to_string();
        Node {
            child,
            at: Remote::with_client(base, http()),
            admin: format!("http://{admin}"),
            _lines: lines,
        }
    }

    async fn readyz(&self) -> (StatusCode, Value) {
        let resp = self
            .at
            .http
            .get(format!("{}/readyz", self.admin))
            .send()
            .await
            .unwrap();
        let status = resp.status();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    /// Whether, within `limit`, `/readyz` says the node is receiving changes
    /// from other gateways (`listening`) or is not (`!listening`).
    async fn notifications_within(&self, limit: Duration, listening: bool) -> bool {
        within(limit, || async {
            (self.readyz().await.1["notifications"] == "ok") == listening
        })
        .await
        .is_some()
    }

    async fn metrics(&self) -> String {
        self.at
            .http
            .get(format!("{}/metrics", self.admin))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// The status a proxied request with `token` gets.
    async fn token_status(&self, token: &str) -> StatusCode {
        self.at.with_token(token).myself().await.status()
    }
}

/// Passes `lines` on, echoing a node's warnings and errors (they explain
/// a failing test).
fn echo_errors(lines: Receiver<String>, name: &str) -> Receiver<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    let name = name.to_string();
    std::thread::spawn(move || {
        for line in lines {
            if line.contains("\"level\":\"ERROR\"") || line.contains("\"level\":\"WARN\"") {
                eprintln!("node {name}: {line}");
            }
            let _ = tx.send(line);
        }
    });
    rx
}

fn http() -> reqwest::Client {
    let _ = common::client();
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(15))
        .build()
        .unwrap()
}

/// Polls until `check` holds, at most `limit`; how long it took.
async fn within<F, Fut>(limit: Duration, mut check: F) -> Option<Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    for _ in 0..10_000 {
        if check().await {
            return Some(start.elapsed());
        }
        if start.elapsed() > limit {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    None
}

/// The value of one metric sample, 0 when absent.
fn sample(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

struct Cluster {
    db: TestDb,
    sim: SimUpstream,
    dir: tempfile::TempDir,
}

impl Cluster {
    async fn new() -> Option<Cluster> {
        let db = TestDb::create().await?;
        let sim = header_mode_sim(SimConfig::jira()).await;
        Some(Cluster {
            db,
            sim,
            dir: tempfile::tempdir().unwrap(),
        })
    }

    fn node(&self, name: &str, extra: &[(&str, &str)]) -> Node {
        Node::start(self.dir.path(), name, &self.sim, &self.db.url, extra)
    }

    /// A node whose database connections pass through `relay`.
    fn node_through(&self, name: &str, relay: &Cuttable, extra: &[(&str, &str)]) -> Node {
        let url = relayed(&self.db.url, relay);
        Node::start(self.dir.path(), name, &self.sim, &url, extra)
    }
}

/// `url` with its host and port replaced by the relay's.
fn relayed(url: &str, relay: &Cuttable) -> String {
    url.replacen("127.0.0.1:5432", &relay.addr.to_string(), 1)
        .replacen("localhost:5432", &relay.addr.to_string(), 1)
}

async fn relay_to_db(db: &TestDb) -> Cuttable {
    let config: tokio_postgres::Config = db.url.parse().unwrap();
    let port = config.get_ports().first().copied().unwrap_or(5432);
    assert!(
        db.url.contains(&format!("127.0.0.1:{port}"))
            || db.url.contains(&format!("localhost:{port}")),
        "the relay tests need the database on 127.0.0.1:5432 or localhost:5432"
    );
    Cuttable::start(format!("127.0.0.1:{port}").parse().unwrap()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tokens_made_on_one_node_work_on_the_other_and_revocations_reach_it_within_a_second() {
    let Some(c) = Cluster::new().await else {
        return;
    };
    let (a, b) = (c.node("a", &[]), c.node("b", &[]));
    for node in [&a, &b] {
        let (status, ready) = node.readyz().await;
        assert_eq!(status, 200, "{ready}");
        assert_eq!(ready["database"], "ok", "{ready}");
    }
    let alice_a = a.at.as_user("alice", "alice");
    let alice_b = b.at.as_user("alice", "alice");

    // Made on A, works on B; renamed on B, listed so on A.
    let t = alice_a
        .create_token(json!({"tokenDescription": "ci"}))
        .await;
    let (token, id) = (
        t["plainTextToken"].as_str().unwrap(),
        t["id"].as_u64().unwrap(),
    );
    assert_eq!(b.token_status(token).await, 200);
    let (status, _) = alice_b
        .patch(
            &format!("/user/token/{id}"),
            json!({"tokenDescription": "renamed"}),
        )
        .await;
    assert_eq!(status, 200);
    let (_, listed) = alice_a.get("/user/token").await;
    assert_eq!(listed[0]["description"], "renamed", "{listed}");

    // Deleted on A: B, which has it cached, refuses it within a second.
    assert_eq!(b.token_status(token).await, 200);
    let (status, body) = alice_a.delete(&format!("/user/token/{id}")).await;
    assert_eq!((status, body), (StatusCode::OK, json!(true)));
    let took = within(Duration::from_secs(1), || async {
        b.token_status(token).await == 401
    })
    .await;
    assert!(
        took.is_some(),
        "B still accepts a token deleted on A after 1 s"
    );

    // All of bob's tokens deleted by an admin on B: A refuses each.
    let bob_b = b.at.as_user("bob", "bob");
    let mut bobs = Vec::new();
    for i in 0..3 {
        let t = bob_b
            .create_token(json!({"tokenDescription": format!("bob {i}")}))
            .await;
        bobs.push(t["plainTextToken"].as_str().unwrap().to_string());
    }
    for t in &bobs {
        assert_eq!(a.token_status(t).await, 200);
    }
    let (status, n) =
        b.at.as_user("admin", "admin")
            .delete("/user/token/deleteAllFor/JIRAUSER10200")
            .await;
    assert_eq!((status, n), (StatusCode::OK, json!(3)));
    for t in &bobs {
        let took = within(Duration::from_secs(1), || async {
            a.token_status(t).await == 401
        })
        .await;
        assert!(
            took.is_some(),
            "A still accepts a token deleted on B after 1 s"
        );
    }
    let m = a.metrics().await;
    assert!(
        sample(&m, "tokengate_cache_invalidations_total{cause=\"notify\"}") >= 1.0,
        "{m}"
    );
    assert!(m.contains("tokengate_notify_lag_seconds_count"), "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn wrong_passwords_on_both_nodes_lock_the_user_on_both_and_a_reset_on_either_clears_it() {
    let Some(c) = Cluster::new().await else {
        return;
    };
    let (a, b) = (c.node("a", &[]), c.node("b", &[]));
    for node in [&a, &b, &a] {
        let resp = node.at.as_user("alice", "wrong").myself().await;
        assert_eq!(resp.status(), 401);
    }
    for node in [&a, &b] {
        let resp = node.at.as_user("alice", "alice").myself().await;
        assert_eq!(resp.status(), 403, "locked on every node");
        assert_eq!(resp.headers()["x-authentication-denied-reason"], "LOCKED");
    }
    // Someone else is not affected.
    assert_eq!(b.at.as_user("bob", "bob").myself().await.status(), 200);
    let (status, _) =
        b.at.as_user("admin", "admin")
            .delete("/admin/failedLogins/JIRAUSER10100")
            .await;
    assert_eq!(status, 204);
    assert_eq!(a.at.as_user("alice", "alice").myself().await.status(), 200);
    assert_eq!(b.at.as_user("alice", "alice").myself().await.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixteen_creators_over_two_nodes_get_unique_ids_and_the_limit_holds() {
    let Some(c) = Cluster::new().await else {
        return;
    };
    let limit = [("tokens", "max_tokens_per_user = 40")];
    let (a, b) = (c.node("a", &limit), c.node("b", &limit));
    let nodes = Arc::new([a.at.clone(), b.at.clone()]);
    let ids = Arc::new(Mutex::new(Vec::new()));
    let refused = Arc::new(Mutex::new(0));
    let mut tasks = Vec::new();
    for i in 0..16 {
        let (nodes, ids, refused) = (nodes.clone(), ids.clone(), refused.clone());
        tasks.push(tokio::spawn(async move {
            let node = &nodes[i % 2];
            // Each creator asks for four tokens for alice and two for admin:
            // 64 for alice, 40 allowed; 32 for admin, all allowed.
            for n in 0..6 {
                let user = if n % 3 == 2 { "admin" } else { "alice" };
                let (status, body) = node
                    .as_user(user, user)
                    .post(
                        "/user/token",
                        json!({"tokenDescription": format!("c{i} n{n}")}),
                    )
                    .await;
                match status.as_u16() {
                    200 => ids.lock().unwrap().push(body["id"].as_u64().unwrap()),
                    403 => {
                        assert_eq!(user, "alice", "{body}");
                        *refused.lock().unwrap() += 1;
                    }
                    other => panic!("{other}: {body}"),
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let ids = ids.lock().unwrap().clone();
    let unique: BTreeSet<u64> = ids.iter().copied().collect();
    assert_eq!(unique.len(), ids.len(), "an id was handed out twice");
    assert_eq!(*refused.lock().unwrap(), 24);
    assert_eq!(ids.len(), 72);
    let (_, alice) = b.at.as_user("alice", "alice").get("/user/token").await;
    assert_eq!(alice.as_array().unwrap().len(), 40);
    let (_, page) =
        a.at.as_user("admin", "admin")
            .get("/user/tokensByFilter?notValidAfter=-1&limit=50")
            .await;
    assert_eq!(page["total"], 72, "{page}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_that_lost_its_notifications_honours_a_revocation_within_cache_max_stale_ms() {
    let Some(c) = Cluster::new().await else {
        return;
    };
    let relay = relay_to_db(&c.db).await;
    let a = c.node("a", &[]);
    let b = c.node_through("b", &relay, &[("tokens", "cache_max_stale_ms = 1500")]);
    // B listens before it first reads the token: a read while it does not
    // yet listen would be dropped when it starts to, and B's cache would be
    // empty when the listening connection is killed below.
    assert!(
        b.notifications_within(Duration::from_secs(10), true).await,
        "B never listened: {}",
        b.readyz().await.1
    );
    let alice = a.at.as_user("alice", "alice");
    let t = alice.create_token(json!({"tokenDescription": "x"})).await;
    let (token, id) = (
        t["plainTextToken"].as_str().unwrap(),
        t["id"].as_u64().unwrap(),
    );
    assert_eq!(b.token_status(token).await, 200);

    // B's listening connection is killed, and B cannot open a new one; its
    // pool's connections stay.
    relay.refuse_new();
    let admin = c.db.client().await;
    let killed = admin
        .query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
             WHERE datname = current_database() AND application_name LIKE '%listen%'
               AND client_port IS NOT NULL",
            &[],
        )
        .await
        .unwrap();
    assert!(!killed.is_empty(), "no listening connection found");
    assert!(
        b.notifications_within(Duration::from_secs(5), false).await,
        "B did not notice it stopped listening"
    );
    // B read the token again (its cache was dropped) ...
    assert_eq!(b.token_status(token).await, 200);
    // ... and does not hear of its deletion on A, yet refuses it once its
    // copy is older than cache_max_stale_ms.
    let (status, _) = alice.delete(&format!("/user/token/{id}")).await;
    assert_eq!(status, 200);
    let deleted_at = Instant::now();
    let took = within(Duration::from_millis(1500 + 1000), || async {
        b.token_status(token).await == 401
    })
    .await;
    assert!(
        took.is_some(),
        "B accepted the token 2.5 s after its deletion"
    );
    assert!(deleted_at.elapsed() < Duration::from_millis(3000));
    let m = b.metrics().await;
    assert!(
        sample(
            &m,
            "tokengate_cache_invalidations_total{cause=\"reconnect\"}"
        ) >= 1.0,
        "{m}"
    );

    // Let B connect again: it listens again, and hears of changes again.
    relay.mend();
    assert!(
        b.notifications_within(Duration::from_secs(15), true).await,
        "B did not listen again: {}",
        b.readyz().await.1
    );
    let t2 = alice.create_token(json!({"tokenDescription": "y"})).await;
    let (token2, id2) = (
        t2["plainTextToken"].as_str().unwrap(),
        t2["id"].as_u64().unwrap(),
    );
    assert_eq!(b.token_status(token2).await, 200);
    alice.delete(&format!("/user/token/{id2}")).await;
    let took = within(Duration::from_secs(1), || async {
        b.token_status(token2).await == 401
    })
    .await;
    assert!(took.is_some(), "after reconnecting B missed a revocation");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_its_database_a_node_fails_closed_for_tokens_and_still_forwards_the_rest() {
    let Some(c) = Cluster::new().await else {
        return;
    };
    let relay = relay_to_db(&c.db).await;
    let b = c.node_through("b", &relay, &[("tokens", "cache_max_stale_ms = 0")]);
    let alice = b.at.as_user("alice", "alice");
    let t = alice.create_token(json!({"tokenDescription": "x"})).await;
    let token = t["plainTextToken"].as_str().unwrap().to_string();
    assert_eq!(b.token_status(&token).await, 200);
    let ids = |list: Value| -> Vec<u64> {
        list.as_array()
            .unwrap()
            .iter()
            .map(|t| t["id"].as_u64().unwrap())
            .collect()
    };
    let (_, before) = alice.get("/user/token").await;

    relay.cut();
    let refused = within(Duration::from_secs(10), || async {
        b.token_status(&token).await == 503
    })
    .await;
    assert!(
        refused.is_some(),
        "a token is not refused with 503 without the database"
    );
    let resp = b.at.with_token(&token).myself().await;
    assert_eq!(resp.status(), 503);
    let body: Value = resp.json().await.unwrap();
    assert!(!error_message(&body).is_empty(), "{body}");
    // The management API fails closed too, and writes nothing.
    let (status, body) = alice
        .post(
            "/user/token",
            json!({"tokenDescription": "during the outage"}),
        )
        .await;
    assert_eq!(status, 503, "{body}");
    assert!(body["errorMessages"].is_array(), "{body}");
    // Password and anonymous requests do not need the store.
    assert_eq!(alice.myself().await.status(), 200);
    assert_eq!(b.at.anonymous().fetch("/status").await.status(), 200);
    let (status, ready) = b.readyz().await;
    assert_eq!(status, 503, "{ready}");
    assert_ne!(ready["database"], "ok", "{ready}");

    relay.mend();
    let back = within(Duration::from_secs(20), || async {
        b.readyz().await.0 == 200
    })
    .await;
    assert!(back.is_some(), "not ready again: {}", b.readyz().await.1);
    assert_eq!(b.token_status(&token).await, 200);
    let (_, after) = alice.get("/user/token").await;
    assert_eq!(
        ids(after),
        ids(before),
        "nothing was written during the outage"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_of_a_node_during_sixteen_creators_loses_no_acknowledged_token() {
    let Some(c) = Cluster::new().await else {
        return;
    };
    let a = c.node("a", &[("tokens", "max_tokens_per_user = 0")]);
    let b = c.node("b", &[("tokens", "max_tokens_per_user = 0")]);
    let acked = Arc::new(Mutex::new(Vec::<(u64, String)>::new()));
    let mut tasks = Vec::new();
    for i in 0..16 {
        let at = if i % 2 == 0 {
            a.at.clone()
        } else {
            b.at.clone()
        };
        let acked = acked.clone();
        tasks.push(tokio::spawn(async move {
            let caller = at.as_user("alice", "alice");
            for n in 0..200 {
                let sent = caller
                    .api(reqwest::Method::POST, "/user/token")
                    .json(&json!({"tokenDescription": format!("c{i} n{n}")}))
                    .send()
                    .await;
                let Ok(resp) = sent else {
                    // Node A is gone: its clients stop.
                    return;
                };
                if resp.status() != 200 {
                    return;
                }
                let Ok(v) = resp.json::<Value>().await else {
                    return;
                };
                acked.lock().unwrap().push((
                    v["id"].as_u64().unwrap(),
                    v["plainTextToken"].as_str().unwrap().to_string(),
                ));
            }
        }));
    }
    // Kill A once some tokens are acknowledged.
    let started = within(Duration::from_secs(20), || async {
        acked.lock().unwrap().len() >= 60
    })
    .await;
    assert!(started.is_some(), "the creators do not get going");
    let mut a = a;
    a.child.0.kill().unwrap();
    a.child.0.wait().unwrap();
    for t in tasks {
        t.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    let (_, listed) = b.at.as_user("alice", "alice").get("/user/token").await;
    let listed: BTreeSet<u64> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_u64().unwrap())
        .collect();
    for (id, _) in &acked {
        assert!(listed.contains(id), "acknowledged token {id} is gone");
    }
    // A sample of them still authenticates, on the node that lives.
    for (_, token) in acked.iter().step_by(25) {
        assert_eq!(b.token_status(token).await, 200);
    }
    // A node started again on the database goes on with higher ids.
    let a2 = c.node("a2", &[("tokens", "max_tokens_per_user = 0")]);
    let t = a2
        .at
        .as_user("alice", "alice")
        .create_token(json!({"tokenDescription": "after"}))
        .await;
    let max = acked.iter().map(|(id, _)| *id).max().unwrap();
    assert!(t["id"].as_u64().unwrap() > max);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_settings_that_cannot_work_are_named_without_the_password() {
    let Some(c) = Cluster::new().await else {
        return;
    };
    let dir = c.dir.path();
    let config = dir.join("n.toml");
    write_config(
        &config,
        &c.sim.url(),
        &dir.join("n.sled"),
        &[
            ("tokens", "backend = \"postgres\""),
            ("tokens", "postgres_url_env = \"TG_TEST_PG_URL\""),
        ],
    );
    // The variable is not set.
    let (ok, out) = run("check-config", &config, &[("GW_SECRET", SECRET)]);
    assert!(!ok);
    assert!(
        out.contains("postgres_url_env") && out.contains(URL_VAR),
        "{out}"
    );
    // Not a URL: named, not echoed.
    let (ok, out) = run(
        "check-config",
        &config,
        &[
            ("GW_SECRET", SECRET),
            (URL_VAR, "postgres://u:pw-XYZZY@[nonsense"),
        ],
    );
    assert!(!ok, "{out}");
    assert!(out.contains("postgres_url_env"), "{out}");
    assert!(!out.contains("XYZZY"), "the password is shown: {out}");
    // A user the database does not know: the gateway starts, fails closed,
    // and says why, naming the key and not the password.
    let wrong = c.db.url.replacen(
        "postgres://postgres@",
        "postgres://nobody_here:pw-XYZZY@",
        1,
    );
    let mut child = serve(&config, &[("GW_SECRET", SECRET), (URL_VAR, &wrong)]);
    let lines = stderr_lines(&mut child.0);
    let mut seen = Vec::new();
    let line = wait_for(&lines, "cannot be opened", &mut seen);
    let text = line.to_string();
    assert!(text.contains("postgres_url_env"), "{text}");
    assert!(!text.contains("XYZZY"), "the password is logged: {text}");
    drop(child);
    for l in seen {
        assert!(!l.contains("XYZZY"), "the password is logged: {l}");
    }

    // A schema newer than this binary: the gateway does not start.
    let a = c.node("a", &[]);
    drop(a);
    c.db.client()
        .await
        .batch_execute("INSERT INTO tokengate_schema (version, applied_at) VALUES (999, now())")
        .await
        .unwrap();
    let mut child = serve(&config, &[("GW_SECRET", SECRET), (URL_VAR, &c.db.url)]);
    let status = wait_exit(&mut child.0, Duration::from_secs(30));
    assert!(
        matches!(status, Some(s) if !s.success()),
        "started on a newer schema"
    );
    let mut err = String::new();
    use std::io::Read;
    child
        .0
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(err.contains("999") && err.contains("version 2"), "{err}");
}

fn wait_exit(child: &mut std::process::Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}
