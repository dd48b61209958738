//! kill -9 in the middle of the work: nothing acknowledged is lost.
//!
//! The real binary runs in front of the simulated Jira. Sixteen clients, one
//! user each, create tokens and delete some of their earlier ones through the
//! management API; at a random moment the process gets SIGKILL and is started
//! again on the same store. Then:
//! - every create that was acknowledged (200 with a token received) is listed
//!   and its token authenticates a proxied request;
//! - every delete that was acknowledged (200 `true`) stays deleted: the id is
//!   not listed and the token gets 401;
//! - ids never go back: a new create gets an id above every acknowledged one.
//!
//! Twenty rounds; requests in flight at the kill may have happened or not,
//! and the next round learns which from the listing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::process::{Child, serve, stderr_lines, wait_for, write_config};
use common::{Answer, Gateway, Remote, SECRET, header_mode_sim};
use reqwest::Method;
use serde_json::{Value, json};
use tokengate::demo::sim::{SimConfig, SimUser};

const CLIENTS: usize = 16;
const ROUNDS: usize = 20;

fn user(i: usize) -> (String, String) {
    (format!("user{i:02}"), format!("KEY{i:02}"))
}

/// What the clients were told, per user.
#[derive(Default)]
struct Acked {
    /// Acknowledged creates still believed live: id → token.
    live: BTreeMap<u64, String>,
    /// Acknowledged deletes: id → token.
    deleted: BTreeMap<u64, String>,
    /// Deletes sent but not answered: id → token; happened or not.
    in_doubt: BTreeMap<u64, String>,
    /// Ids created (acknowledged) in the current round.
    new_this_round: BTreeSet<u64>,
    deleted_this_round: BTreeSet<u64>,
}

#[derive(Default)]
struct Totals {
    /// Acknowledged in the current round's load.
    round_creates: u64,
    round_deletes: u64,
    creates: u64,
    deletes: u64,
    creates_in_doubt: u64,
    deletes_in_doubt: u64,
    highest_id: u64,
}

/// The real binary, and where it listens.
struct Process {
    child: Child,
    at: Remote,
}

fn start_gateway(config: &std::path::Path) -> Process {
    let mut child = serve(config, &[("GW_SECRET", SECRET)]);
    // Every line is read (the pipe never fills up); panics are echoed.
    let lines = stderr_lines(&mut child.0);
    let listening = wait_for(&lines, "tokengate listening", &mut Vec::new());
    let base = format!("http://{}", listening["addr"].as_str().unwrap());
    Process {
        child,
        at: Remote::with_client(base, http()),
    }
}

fn http() -> reqwest::Client {
    let _ = common::client();
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// One client's load: create, and every third time delete an earlier token,
/// until `stop`. Records only what was acknowledged.
async fn client_load(
    gw: Remote,
    i: usize,
    state: Arc<Mutex<Acked>>,
    stop: Arc<AtomicBool>,
    totals: Arc<Mutex<Totals>>,
) {
    let (name, _) = user(i);
    let caller = gw.as_user(&name, &name);
    let mut n = 0u64;
    while !stop.load(Ordering::SeqCst) && n < 100_000 {
        n += 1;
        let victim = if n.is_multiple_of(3) {
            let mut s = state.lock().unwrap();
            let pick = s
                .live
                .keys()
                .nth(rand::random::<u32>() as usize % s.live.len().max(1))
                .copied();
            pick.and_then(|id| s.live.remove(&id).map(|t| (id, t)))
                .inspect(|(id, t)| {
                    s.in_doubt.insert(*id, t.clone());
                })
        } else {
            None
        };
        if let Some((id, token)) = victim {
            let resp = caller
                .api(Method::DELETE, &format!("/user/token/{id}"))
                .send()
                .await;
            let acked = match resp {
                Ok(r) if r.status() == 200 => r.json::<Value>().await.ok() == Some(json!(true)),
                Ok(r) if r.status() == 503 || r.status().is_success() => false,
                Ok(r) => panic!("delete {id}: unexpected {}", r.status()),
                Err(_) => false,
            };
            if acked {
                let mut s = state.lock().unwrap();
                s.in_doubt.remove(&id);
                s.deleted.insert(id, token);
                s.deleted_this_round.insert(id);
                let mut t = totals.lock().unwrap();
                t.deletes += 1;
                t.round_deletes += 1;
            }
            continue;
        }
        let resp = caller
            .api(Method::POST, "/user/token")
            .json(&json!({"tokenDescription": format!("{name} #{n}")}))
            .send()
            .await;
        // A create that never connected certainly did not happen.
        let mut sent = true;
        let created = match resp {
            Ok(r) if r.status() == 200 => r.json::<Value>().await.ok(),
            Ok(r) if r.status() == 503 => None,
            Ok(r) => panic!("create: unexpected {}", r.status()),
            Err(e) => {
                sent = !e.is_connect();
                None
            }
        };
        match created {
            Some(v) => {
                let id = v["id"].as_u64().unwrap();
                let token = v["plainTextToken"].as_str().unwrap().to_string();
                let mut s = state.lock().unwrap();
                let mut t = totals.lock().unwrap();
                assert!(
                    !s.live.contains_key(&id) && !s.deleted.contains_key(&id),
                    "id {id} handed out twice"
                );
                s.live.insert(id, token);
                s.new_this_round.insert(id);
                t.creates += 1;
                t.round_creates += 1;
                t.highest_id = t.highest_id.max(id);
            }
            None if sent => totals.lock().unwrap().creates_in_doubt += 1,
            None => {}
        }
    }
}

/// Tokens by id.
type Tokens = Vec<(u64, String)>;

/// Checks one user's acknowledged state against the listed ids, settles the
/// deletes in doubt, and returns this round's live and deleted tokens.
fn settle(
    s: &mut Acked,
    listed: &BTreeSet<u64>,
    totals: &Mutex<Totals>,
    round: usize,
    name: &str,
) -> (Tokens, Tokens) {
    for id in s.live.keys() {
        assert!(
            listed.contains(id),
            "round {round}: acknowledged create {id} of {name} is lost after kill -9"
        );
    }
    for id in s.deleted.keys() {
        assert!(
            !listed.contains(id),
            "round {round}: acknowledged delete {id} of {name} came back after kill -9"
        );
    }
    // This round's tokens are used; earlier rounds' were used in theirs.
    let fresh = s
        .new_this_round
        .iter()
        .filter_map(|id| s.live.get(id).map(|t| (*id, t.clone())))
        .collect();
    let gone = s
        .deleted_this_round
        .iter()
        .map(|id| (*id, s.deleted[id].clone()))
        .collect();
    // Deletes in doubt: whatever the store says they are now.
    for (id, token) in std::mem::take(&mut s.in_doubt) {
        totals.lock().unwrap().deletes_in_doubt += 1;
        if listed.contains(&id) {
            s.live.insert(id, token);
        } else {
            s.deleted.insert(id, token);
        }
    }
    s.new_this_round.clear();
    s.deleted_this_round.clear();
    (fresh, gone)
}

/// After a restart: checks every user's acknowledged state against the
/// gateway, settles what was in doubt, starts a new round.
async fn verify(gw: &Remote, states: &[Arc<Mutex<Acked>>], totals: &Mutex<Totals>, round: usize) {
    for (i, state) in states.iter().enumerate() {
        let (name, _) = user(i);
        let (status, list) = gw.as_user(&name, &name).get("/user/token").await;
        assert_eq!(status, 200, "round {round}: list of {name}");
        let listed: BTreeSet<u64> = list
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["id"].as_u64().unwrap())
            .collect();
        let (fresh, gone) = settle(&mut state.lock().unwrap(), &listed, totals, round, &name);
        for (id, token) in fresh {
            let resp = gw.with_token(&token).myself().await;
            assert_eq!(
                resp.status(),
                200,
                "round {round}: acknowledged token {id} of {name} does not work after kill -9"
            );
            let me: Value = resp.json().await.unwrap();
            assert_eq!(me["name"], name.as_str());
        }
        for (id, token) in gone {
            let resp = gw.with_token(&token).myself().await;
            assert_eq!(
                resp.status(),
                401,
                "round {round}: deleted token {id} of {name} works after kill -9"
            );
        }
    }
    // Ids never go back.
    let (name, _) = user(0);
    let created: Value = gw
        .as_user(&name, &name)
        .api(Method::POST, "/user/token")
        .json(&json!({"tokenDescription": "after the kill"}))
        .answer()
        .await
        .json()
        .await
        .unwrap();
    let id = created["id"].as_u64().unwrap();
    {
        let mut t = totals.lock().unwrap();
        assert!(
            id > t.highest_id,
            "round {round}: new id {id} is not above the acknowledged {}",
            t.highest_id
        );
        t.highest_id = id;
        t.creates += 1;
    }
    states[0]
        .lock()
        .unwrap()
        .live
        .insert(id, created["plainTextToken"].as_str().unwrap().to_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_creates_and_deletes_survive_kill_9_and_ids_never_go_back() {
    let started = Instant::now();
    let mut sim_config = SimConfig::jira();
    sim_config.users = (0..CLIENTS)
        .map(|i| {
            let (name, key) = user(i);
            SimUser::new(&name, &key, &name, false)
        })
        .collect();
    let sim = header_mode_sim(sim_config).await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("proxy.toml");
    write_config(
        &config,
        &sim.url(),
        &dir.path().join("tokens.sled"),
        &[
            ("server", "admin_listen = \"\""),
            ("tokens", "max_tokens_per_user = 0"),
            ("auth", "failures_per_ip_per_minute = 1000000"),
            ("log", "level = \"info\""),
        ],
    );

    let states: Vec<Arc<Mutex<Acked>>> = (0..CLIENTS).map(|_| Arc::default()).collect();
    let totals = Arc::new(Mutex::new(Totals::default()));
    let mut gw = start_gateway(&config);
    let mut load_time = Duration::ZERO;
    for round in 1..=ROUNDS {
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "round {round}: out of time"
        );
        {
            let mut t = totals.lock().unwrap();
            t.round_creates = 0;
            t.round_deletes = 0;
        }
        let stop = Arc::new(AtomicBool::new(false));
        let clients: Vec<_> = states
            .iter()
            .enumerate()
            .map(|(i, state)| {
                tokio::spawn(client_load(
                    gw.at.clone(),
                    i,
                    state.clone(),
                    stop.clone(),
                    totals.clone(),
                ))
            })
            .collect();
        // A random moment in the middle of the load: once the round has had
        // a create and a delete acknowledged (an fsync can take a second on a
        // busy disk), 0.3–1 s more.
        let load_started = Instant::now();
        loop {
            let (creates, deletes) = {
                let t = totals.lock().unwrap();
                (t.round_creates, t.round_deletes)
            };
            if creates > 0 && deletes > 0 {
                break;
            }
            assert!(
                load_started.elapsed() < Duration::from_secs(20),
                "round {round}: nothing acknowledged in 20 s ({creates} creates, {deletes} deletes)"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let after = Duration::from_millis(300 + u64::from(rand::random::<u32>() % 700));
        tokio::time::sleep(after).await;
        gw.child.0.kill().unwrap(); // SIGKILL
        gw.child.0.wait().unwrap();
        load_time += load_started.elapsed();
        stop.store(true, Ordering::SeqCst);
        for c in clients {
            c.await.unwrap();
        }
        gw = start_gateway(&config);
        verify(&gw.at, &states, &totals, round).await;
    }
    let t = totals.lock().unwrap();
    let live: usize = states.iter().map(|s| s.lock().unwrap().live.len()).sum();
    eprintln!(
        "{ROUNDS} kills in {:.1} s ({:.1} s of load): {} creates and {} deletes acknowledged, \
         {} creates and {} deletes in flight at a kill, {live} tokens live, highest id {}",
        started.elapsed().as_secs_f64(),
        load_time.as_secs_f64(),
        t.creates,
        t.deletes,
        t.creates_in_doubt,
        t.deletes_in_doubt,
        t.highest_id
    );
    assert!(
        t.creates >= 2 * ROUNDS as u64 && t.deletes >= ROUNDS as u64,
        "every round had acknowledged work: {} creates, {} deletes",
        t.creates,
        t.deletes
    );
}
