//! `tokengate store stats|export|import`: a round trip keeps ids and working
//! tokens, import is idempotent, and a store held by a running gateway is
//! refused with a clear message.
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_import_round_trip_keeps_ids_and_working_tokens() {
    let s = JiraSetup::jira().await;
    let alice = s.token_for("alice").await;
    let bob = s.token_for("bob").await;
    s.token_for("alice").await;
    assert_eq!(
        s.as_user("alice", "alice").delete("/user/token/3").await.0,
        200
    );
    let old_store = s.config.tokens.store_path.clone();
    let old_config = config_file(s.dir.path(), &old_store);

    // While the gateway holds the store, the tools refuse it, saying why.
    let (ok, _, err) = tool(&["export"], &old_config, None);
    assert!(!ok);
    assert!(err.contains("in use by another process"), "{err}");

    let JiraSetup {
        gw,
        sim,
        clock,
        dir,
        ..
    } = s;
    gw.stop().await;
    let (ok, exported, err) = tool(&["export"], &old_config, None);
    assert!(ok, "{err}");
    assert!(err.contains("exported 2 tokens"), "{err}");
    let mut lines: Vec<Value> = exported
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
        !exported.contains(&alice) && !exported.contains(&alice[3..]),
        "never a plain token"
    );

    let new_store = dir.path().join("restored.sled");
    let new_config = config_file(dir.path(), &new_store);
    let (ok, _, err) = tool(&["import"], &new_config, Some(&exported));
    assert!(ok, "{err}");
    assert!(
        err.contains("imported 2 tokens; 0 were already there"),
        "{err}"
    );
    let (ok, _, err) = tool(&["import"], &new_config, Some(&exported));
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

    // A bad line is reported by number and nothing is written.
    let empty_store = dir.path().join("untouched.sled");
    let empty_config = config_file(dir.path(), &empty_store);
    let bad = format!(
        "{}\n{}\n{{\"id\": \"seven\"}}\n",
        exported.lines().next().unwrap(),
        exported.lines().nth(1).unwrap()
    );
    let (ok, _, err) = tool(&["import"], &empty_config, Some(&bad));
    assert!(!ok);
    assert!(err.contains("line 3"), "{err}");
    let (_, stats, _) = tool(&["stats"], &empty_config, None);
    assert_eq!(serde_json::from_str::<Value>(&stats).unwrap()["tokens"], 0);

    // The gateway on the restored store: the same tokens work, ids continue.
    let mut config = header_mode_config(&sim.url(), dir.path());
    config.tokens.store_path = new_store;
    let gw = start_with_secret(config, clock).await;
    for (token, name) in [(&alice, "alice"), (&bob, "bob")] {
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
