//! `tokengate store stats|export|import`: a round trip keeps ids and working
//! tokens, import is idempotent, and a store held by a running gateway is
//! refused with a clear message. Each case starts from the same store, made
//! through a gateway.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;

use common::*;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_tokengate");

fn config_file(dir: &std::path::Path, store: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join(format!(
        "proxy-{}.toml",
        store.file_name().unwrap().to_string_lossy()
    ));
    std::fs::write(
        &path,
        format!("[tokens]\nstore_path = \"{}\"\n", store.display()),
    )
    .unwrap();
    path
}

fn tool(args: &[&str], config: &std::path::Path, stdin: Option<&str>) -> (bool, String, String) {
    use std::io::Write;
    let mut child = Command::new(BIN)
        .arg("store")
        .args(args)
        .arg("--config")
        .arg(config)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let input = stdin.unwrap_or("").to_string();
    let mut pipe = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        let _ = pipe.write_all(input.as_bytes());
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A gateway on a store of three tokens: alice's 1, bob's 2, and alice's 3,
/// deleted. Returns the setup and the two live tokens, alice's and bob's.
async fn two_tokens_and_a_deleted_one() -> (JiraSetup, String, String) {
    let s = JiraSetup::jira().await;
    let alice = s.token_for("alice").await;
    let bob = s.token_for("bob").await;
    s.token_for("alice").await;
    assert_eq!(
        s.as_user("alice", "alice").delete("/user/token/3").await.0,
        200
    );
    (s, alice, bob)
}

/// That store exported once its gateway stopped.
struct Exported {
    sim: tokengate::demo::sim::SimUpstream,
    clock: std::sync::Arc<tokengate::clock::ManualClock>,
    dir: tempfile::TempDir,
    alice: String,
    bob: String,
    /// The export's standard output and standard error.
    exported: String,
    err: String,
}

async fn exported() -> Exported {
    let (s, alice, bob) = two_tokens_and_a_deleted_one().await;
    let config = config_file(s.dir.path(), &s.config.tokens.store_path);
    let JiraSetup {
        gw,
        sim,
        clock,
        dir,
        ..
    } = s;
    gw.stop().await;
    let (ok, exported, err) = tool(&["export"], &config, None);
    assert!(ok, "{err}");
    Exported {
        sim,
        clock,
        dir,
        alice,
        bob,
        exported,
        err,
    }
}

impl Exported {
    /// Imports the export into a new store `restored.sled`; its path and configuration.
    fn import(&self) -> (std::path::PathBuf, std::path::PathBuf) {
        let new_store = self.dir.path().join("restored.sled");
        let new_config = config_file(self.dir.path(), &new_store);
        let (ok, _, err) = tool(&["import"], &new_config, Some(&self.exported));
        assert!(ok, "{err}");
        assert!(
            err.contains("imported 2 tokens; 0 were already there"),
            "{err}"
        );
        (new_store, new_config)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tools_refuse_a_store_a_running_gateway_holds_saying_why() {
    let (s, _, _) = two_tokens_and_a_deleted_one().await;
    let config = config_file(s.dir.path(), &s.config.tokens.store_path);
    let (ok, _, err) = tool(&["export"], &config, None);
    assert!(!ok);
    assert!(err.contains("in use by another process"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_writes_the_next_id_and_each_live_token_by_its_hash_never_the_token() {
    let e = exported().await;
    assert!(e.err.contains("exported 2 tokens"), "{}", e.err);
    let mut lines: Vec<Value> = e
        .exported
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let header = lines.remove(0);
    assert_eq!(
        header,
        serde_json::json!({"tokengateExport": 1, "nextId": 4})
    );
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["id"], 1);
    assert_eq!(lines[1]["id"], 2);
    assert_eq!(lines[0]["sha256"].as_str().unwrap().len(), 64);
    assert_eq!(lines[1]["tokenForUserKey"], "JIRAUSER10200");
    assert!(
        !e.exported.contains(&e.alice) && !e.exported.contains(&e.alice[3..]),
        "never a plain token"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_is_idempotent_and_stats_count_what_it_wrote() {
    let e = exported().await;
    let (_, new_config) = e.import();
    let (ok, _, err) = tool(&["import"], &new_config, Some(&e.exported));
    assert!(ok, "{err}");
    assert!(
        err.contains("imported 0 tokens; 2 were already there"),
        "idempotent: {err}"
    );
    let (ok, stats, _) = tool(&["stats"], &new_config, None);
    assert!(ok);
    let stats: Value = serde_json::from_str(&stats).unwrap();
    assert_eq!(stats["tokens"], 2);
    assert_eq!(stats["users"], 2);
    assert_eq!(stats["highestId"], 2);
    assert!(stats["bytesOnDisk"].as_u64().unwrap() > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_line_is_reported_by_number_and_nothing_is_written() {
    let e = exported().await;
    let empty_store = e.dir.path().join("untouched.sled");
    let empty_config = config_file(e.dir.path(), &empty_store);
    let bad = format!(
        "{}\n{}\n{{\"id\": \"seven\"}}\n",
        e.exported.lines().next().unwrap(),
        e.exported.lines().nth(1).unwrap()
    );
    let (ok, _, err) = tool(&["import"], &empty_config, Some(&bad));
    assert!(!ok);
    assert!(err.contains("line 3"), "{err}");
    let (_, stats, _) = tool(&["stats"], &empty_config, None);
    assert_eq!(serde_json::from_str::<Value>(&stats).unwrap()["tokens"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_the_restored_store_the_same_tokens_work_and_ids_continue() {
    let e = exported().await;
    let (new_store, _) = e.import();
    let mut config = header_mode_config(&e.sim.url(), e.dir.path());
    config.tokens.store_path = new_store;
    let gw = start_with_secret(config, e.clock.clone()).await;
    for (token, name) in [(&e.alice, "alice"), (&e.bob, "bob")] {
        let me: Value = gw.with_token(token).myself().await.json().await.unwrap();
        assert_eq!(me["name"], name);
    }
    let (_, created) = gw
        .as_user("alice", "alice")
        .post(
            "/user/token",
            serde_json::json!({"tokenDescription": "after restore"}),
        )
        .await;
    assert_eq!(
        created["id"], 4,
        "id 3 was deleted before the export: it is not handed out again"
    );
    gw.stop().await;
}
