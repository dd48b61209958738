//! The `tokengate` command as an operator uses it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader};

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tokengate::config::Config;

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
    for (i, line) in lines.iter().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with('[') {
            continue;
        }
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
    // Every key the parser knows (it lists them for an unknown one) is in the
    // file: set to its default, or shown commented out where the default
    // depends on another key.
    let mut keys = 0;
    for table in tables() {
        let refused = Config::from_toml("probe", &format!("[{table}]\nno_such_key = 1\n"))
            .unwrap_err()
            .to_string();
        let (_, expected) = refused.split_once("expected").unwrap();
        for key in expected.split('`').skip(1).step_by(2) {
            if tables().contains(&format!("{table}.{key}").as_str()) {
                continue;
            }
            keys += 1;
            let shown = lines.iter().any(|l| {
                let l = l.trim();
                let l = l.strip_prefix("# ").unwrap_or(l);
                l.starts_with(&format!("{key} = "))
            });
            assert!(shown, "[{table}] {key} is not in the shipped proxy.toml");
        }
    }
    assert!(keys >= 45, "{keys} keys found");
    assert!(
        text.contains("\n# admin_groups = [\"jira-administrators\"]\n"),
        "admin_groups, whose default depends on the product, is shown commented out"
    );
}

fn tables() -> [&'static str; 8] {
    [
        "server",
        "upstream",
        "upstream.credentials",
        "tokens",
        "auth",
        "log",
        "ui",
        "notify",
    ]
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
fn check_config_refuses_a_port_out_of_range() {
    let (ok, err) = check("[upstream]\nurl = \"https://jira.example.com:99999\"\n");
    assert!(!ok);
    assert!(
        err.contains(":2: [upstream] url: \"https://jira.example.com:99999\": port 99999 is not between 1 and 65535"),
        "{err}"
    );
}

#[test]
fn check_config_reports_a_missing_secret_together_with_a_typo_and_a_bad_url() {
    let (ok, err) = check(
        "[upstream]\nurl = \"https://jira.example.com:99999\"\n\
         [upstream.credentials]\nmode = \"bearer\"\ntoken_env = \"TOKENGATE_TEST_SURELY_UNSET_VAR\"\ntokn = 1\n",
    );
    assert!(!ok);
    assert_eq!(err.lines().count(), 3, "{err}");
    assert!(err.contains(":2: [upstream] url:"), "{err}");
    assert!(err.contains(":6: unknown key `tokn`"), "{err}");
    assert!(
        err.contains(":5: [upstream.credentials] token_env: environment variable TOKENGATE_TEST_SURELY_UNSET_VAR is not set"),
        "{err}"
    );
}

#[test]
fn check_config_warns_about_header_mode_without_a_secret_on_a_network_listener() {
    let (ok, err) =
        check("[server]\nlisten = \"0.0.0.0:8443\"\n[upstream.credentials]\nmode = \"header\"\n");
    assert!(ok, "a warning is not an error: {err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains(":3: warning: [upstream.credentials] secret_header_name: mode \"header\" without a shared secret"),
        "{err}"
    );
    let (ok, err) = check("[server]\nlisten = \"127.0.0.1:8443\"\n");
    assert!(ok && err.is_empty(), "loopback only: no warning: {err}");
}

#[test]
fn serve_refuses_a_missing_secret_with_exit_code_2_before_listening() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("proxy.toml");
    std::fs::write(
        &path,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"\"\n[tokens]\nstore_path = \"{}\"\n\
             [upstream.credentials]\nsecret_header_name = \"X-Gateway-Secret\"\nsecret_env = \"TOKENGATE_TEST_SURELY_UNSET_VAR\"\n",
            dir.path().join("tokens.sled").display()
        ),
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains(":8: [upstream.credentials] secret_env: environment variable TOKENGATE_TEST_SURELY_UNSET_VAR is not set"),
        "{err}"
    );
}

#[test]
fn a_listener_in_use_is_named_once_with_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let path = dir.path().join("proxy.toml");
    std::fs::write(
        &path,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:{port}\"\n[tokens]\nstore_path = \"{}\"\n",
            dir.path().join("tokens.sled").display()
        ),
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&path)
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert_eq!(
        err.matches("in use").count(),
        1,
        "the reason is printed once: {err}"
    );
    assert!(
        err.contains(&format!(
            "cannot listen on 127.0.0.1:{port} (the admin listener"
        )),
        "{err}"
    );
    assert!(err.contains("[server] admin_listen"), "{err}");
}

#[test]
fn store_commands_explain_their_config_option() {
    for command in ["stats", "export", "import", "migrate"] {
        let out = Command::new(BIN)
            .args(["store", command, "--help"])
            .output()
            .unwrap();
        let help = String::from_utf8_lossy(&out.stdout);
        assert!(
            help.contains("Configuration file; its [tokens] table names the store"),
            "{command}: {help}"
        );
    }
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
        // Everything logged, so that the scan below sees every line.
        .env("RUST_LOG", "trace")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let logs = stderr_lines(&mut child);
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut banner = Vec::new();
    while Instant::now() < deadline {
        let Some(Ok(line)) = lines.next() else { break };
        if line.starts_with("Try,") {
            break;
        }
        banner.push(line);
    }
    let field = |name: &str| {
        banner
            .iter()
            .find_map(|l| l.trim().strip_prefix(name).map(|v| v.trim().to_string()))
            .unwrap_or_else(|| panic!("the demo prints {name} {banner:?}"))
    };
    let gateway = field("gateway:");
    let users = field("users:");
    for user in ["admin/admin", "alice/alice", "bob/bob"] {
        assert!(users.contains(user), "{users}");
    }
    let (health, metrics) = (field("health:"), field("metrics:"));
    let pages = field("token pages:");
    let pages = pages.split_whitespace().next().unwrap().to_string();
    assert_eq!(pages, format!("{gateway}/tokengate/"));
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
        let health = http.get(&health).send().await?.status();
        // The pages: to the simulated Jira's login page, and with its session, the page.
        let browser = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let to_login = browser.get(&pages).send().await?;
        let login = browser
            .post(format!("{gateway}/login.jsp"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body("os_username=alice&os_password=alice&os_destination=%2Ftokengate%2F")
            .send()
            .await?;
        let cookie = login.headers()["set-cookie"].to_str().unwrap_or_default();
        let cookie = cookie.split(';').next().unwrap_or_default().to_string();
        let page = browser
            .get(&pages)
            .header("cookie", cookie)
            .send()
            .await?
            .status();
        let pages_seen = (to_login.headers()["location"].clone(), login.status(), page);
        let metrics = http.get(&metrics).send().await?.text().await?;
        Ok::<_, reqwest::Error>((me, health, metrics, pages_seen))
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
    let mut scanned = 0;
    let drained = Instant::now();
    while let Some(left) = Duration::from_secs(5).checked_sub(drained.elapsed()) {
        let Ok(line) = logs.recv_timeout(left) else {
            break;
        };
        scanned += 1;
        assert_eq!(
            common::secrets::find_secret(&line),
            None,
            "a secret in the demo's log, line {scanned}"
        );
    }
    assert!(
        scanned > 20,
        "the demo logged at trace level ({scanned} lines)"
    );
    let (me, health, metrics, (to_login, login, page)) = result.unwrap();
    assert_eq!(
        to_login,
        format!("{gateway}/login.jsp?os_destination=%2Ftokengate%2F").as_str()
    );
    assert_eq!(
        (login.as_u16(), page.as_u16()),
        (302, 200),
        "logged in, the page"
    );
    assert_eq!(health, 200, "the demo's admin listener answers /healthz");
    assert!(
        metrics.contains("tokengate_auth_decisions_total{result=\"ok\"} 1"),
        "{metrics}"
    );
    assert_eq!(me["name"], "alice");
    assert_eq!(me["key"], "JIRAUSER10100");
    assert!(
        status.is_some_and(|s| s.success()),
        "the demo stops cleanly on Ctrl-C"
    );
}

/// Lines of a child's stderr, read in the background.
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

fn wait_for(lines: &std::sync::mpsc::Receiver<String>, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match lines.recv_timeout(left) {
            Ok(line) if line.contains(needle) => return line,
            Ok(_) => {}
            Err(_) => break,
        }
    }
    panic!("no log line with {needle:?}");
}

fn serve_config(dir: &std::path::Path, upstream_port: u16, allow_passwords: bool) -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"\"\n[upstream]\nurl = \"http://127.0.0.1:{upstream_port}\"\n\
         [tokens]\nstore_path = \"{}\"\nallow_password_basic_auth = {allow_passwords}\n[log]\nformat = \"json\"\n",
        dir.join("tokens.sled").display()
    )
}

fn signal(child: &std::process::Child, sig: &str) {
    assert!(
        Command::new("kill")
            .args([sig, &child.id().to_string()])
            .status()
            .unwrap()
            .success()
    );
}

#[test]
fn sighup_reloads_the_file_and_keeps_the_running_configuration_when_it_is_bad() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("proxy.toml");
    // Nothing listens upstream: forwarded requests get 502, refused ones 401.
    let upstream_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    std::fs::write(&path, serve_config(dir.path(), upstream_port, true)).unwrap();
    let mut child = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&path)
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let lines = stderr_lines(&mut child);
    let listening: serde_json::Value =
        serde_json::from_str(&wait_for(&lines, "tokengate listening")).unwrap();
    let addr = listening["addr"].as_str().unwrap().to_string();
    let status = || {
        let out = Command::new("curl")
            .args([
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "--noproxy",
                "*",
                "-u",
                "bob:bob",
            ])
            .arg(format!("http://{addr}/rest/api/2/myself"))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert_eq!(status(), "502");

    std::fs::write(&path, "[server]\nlisten = \"127.0.0.1:0\"\nbogus = 1\n").unwrap();
    signal(&child, "-HUP");
    let rejected = wait_for(&lines, "reload rejected");
    assert!(rejected.contains("unknown key `bogus`"), "{rejected}");
    assert_eq!(status(), "502", "the running configuration stays");

    std::fs::write(&path, serve_config(dir.path(), upstream_port, false)).unwrap();
    signal(&child, "-HUP");
    wait_for(&lines, "configuration reloaded");
    assert_eq!(status(), "401", "passwords are refused now");

    signal(&child, "-TERM");
    wait_for(&lines, "store closed");
    assert!(child.wait().unwrap().success());
}
