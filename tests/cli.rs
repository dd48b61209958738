//! The `tokengate` command as an operator uses it.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_tokengate");

fn check(config: &str) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("proxy.toml");
    std::fs::write(&path, config).unwrap();
    let out = Command::new(BIN)
        .args(["check-config", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_shipped_proxy_toml_is_valid() {
    let out = Command::new(BIN)
        .args([
            "check-config",
            "--config",
            concat!(env!("CARGO_MANIFEST_DIR"), "/proxy.toml"),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_shipped_proxy_toml_documents_every_key() {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/proxy.toml")).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let mut keys = 0;
    for (i, line) in lines.iter().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with('[') {
            continue;
        }
        keys += 1;
        let key = line.split('=').next().unwrap().trim();
        // A comment right above, or above a run of keys it describes together.
        let mut j = i;
        while j > 0
            && !lines[j - 1].trim().is_empty()
            && !lines[j - 1].trim_start().starts_with('#')
        {
            j -= 1;
        }
        assert!(
            j > 0 && lines[j - 1].trim_start().starts_with('#'),
            "key `{key}` has no comment above it"
        );
    }
    assert_eq!(keys, 43, "every key of SPEC §7 is in the shipped file");
}

#[test]
fn check_config_names_an_unknown_key_with_its_line() {
    let (ok, err) = check("[server]\nlisten = \"127.0.0.1:8443\"\nlisen = \"x\"\n");
    assert!(!ok);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains(":3: unknown key `lisen` in [server]"), "{err}");
}

#[test]
fn check_config_names_a_wrong_type_with_its_line() {
    let (ok, err) = check("[auth]\nmax_failed_attempts = \"three\"\n");
    assert!(!ok);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains(":2: [auth] max_failed_attempts: invalid type: string \"three\""),
        "{err}"
    );
}

#[test]
fn check_config_names_a_bad_url_with_its_line() {
    let (ok, err) = check("[upstream]\nproduct = \"jira\"\nurl = \"jira.example.com:8080\"\n");
    assert!(!ok);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains(":3: [upstream] url:"), "{err}");
}

#[test]
fn check_config_reports_all_problems_of_a_file_one_line_each() {
    let (ok, err) = check(
        "[server]\nbogus = 1\n[auth]\nlockout_seconds = -5\n[upstream]\nurl = \"ftp://jira\"\n[upstream.credentials]\nmode = \"basic\"\n",
    );
    assert!(!ok);
    let lines: Vec<&str> = err.lines().collect();
    assert!(
        lines.iter().any(|l| l.contains(":2: unknown key `bogus`")),
        "{err}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains(":4: [auth] lockout_seconds")),
        "{err}"
    );
    assert!(
        lines.iter().any(|l| l.contains(":6: [upstream] url")),
        "{err}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("mode \"basic\" needs a username")),
        "{err}"
    );
}

#[test]
fn check_config_reports_a_missing_secret_variable() {
    let (ok, err) = check(
        "[upstream.credentials]\nmode = \"bearer\"\ntoken_env = \"TOKENGATE_TEST_SURELY_UNSET_VAR\"\n",
    );
    assert!(!ok);
    assert!(err.contains(":3: [upstream.credentials] token_env: environment variable TOKENGATE_TEST_SURELY_UNSET_VAR is not set"), "{err}");
}

#[test]
fn help_and_version_read_well() {
    let out = Command::new(BIN).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for word in ["serve", "check-config", "demo", "Jira"] {
        assert!(help.contains(word), "{help}");
    }
    let out = Command::new(BIN).arg("--version").output().unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .starts_with(concat!("tokengate ", env!("CARGO_PKG_VERSION")))
    );
}

#[test]
fn the_demo_serves_a_token_round_trip() {
    let mut child = Command::new(BIN)
        .args(["demo", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut gateway = None;
    while Instant::now() < deadline {
        let Some(Ok(line)) = lines.next() else { break };
        if let Some(url) = line.trim().strip_prefix("gateway:") {
            gateway = Some(url.trim().to_string());
            break;
        }
    }
    let gateway = gateway.expect("the demo prints the gateway URL");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let result = rt.block_on(async {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder().no_proxy().build().unwrap();
        let created: serde_json::Value = http
            .post(format!(
                "{gateway}/rest/de.resolution.apitokenauth/latest/user/token"
            ))
            .basic_auth("alice", Some("alice"))
            .json(&serde_json::json!({"tokenDescription": "demo"}))
            .send()
            .await?
            .json()
            .await?;
        let token = created["plainTextToken"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let me: serde_json::Value = http
            .get(format!("{gateway}/rest/api/2/myself"))
            .bearer_auth(&token)
            .send()
            .await?
            .json()
            .await?;
        Ok::<_, reqwest::Error>(me)
    });
    // Stop the demo the way Ctrl-C would, so it removes its temporary store.
    let _ = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status();
    let waited = Instant::now();
    while waited.elapsed() < Duration::from_secs(10) {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let status = child.try_wait().unwrap();
    if status.is_none() {
        let _ = child.kill();
    }
    let me = result.unwrap();
    assert_eq!(me["name"], "alice");
    assert_eq!(me["key"], "JIRAUSER10100");
    assert!(
        status.is_some_and(|s| s.success()),
        "the demo stops cleanly on Ctrl-C"
    );
}
