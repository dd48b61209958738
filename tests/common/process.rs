//! The real binary as a child process: `tokengate serve` on a configuration
//! file, its JSON log lines read as they come.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use serde_json::Value;

/// A child process killed when the test ends, however it ends.
pub struct Child(pub std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `tokengate serve --config <config>` with `env` set, `RUST_LOG` unset,
/// stderr piped (read it with [`stderr_lines`]).
pub fn serve(config: &Path, env: &[(&str, &str)]) -> Child {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tokengate"));
    cmd.args(["serve", "--config"])
        .arg(config)
        .env_remove("RUST_LOG")
        .stderr(Stdio::piped())
        .stdout(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    Child(cmd.spawn().unwrap())
}

/// `tokengate <command> --config <config>` with `env` set, run to its end:
/// whether it succeeded, and its stderr.
pub fn run(command: &str, config: &Path, env: &[(&str, &str)]) -> (bool, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tokengate"));
    cmd.args([command, "--config"]).arg(config);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs `cmd` to its end; its output, once it is known to have succeeded
/// (a failure panics with its stderr).
pub fn succeeded(cmd: &mut Command) -> std::process::Output {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The child's stderr, line by line. Every line is read (the pipe never
/// fills up) whether or not anyone still listens; a panic is echoed.
pub fn stderr_lines(child: &mut std::process::Child) -> Receiver<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("panicked") {
                eprintln!("gateway: {line}");
            }
            let _ = tx.send(line);
        }
    });
    rx
}

/// Waits (at most 30 s) for a line holding `needle`; returns it parsed as
/// JSON. Every line read on the way is kept in `seen`.
pub fn wait_for(lines: &Receiver<String>, needle: &str, seen: &mut Vec<String>) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
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

/// Writes a configuration for `tokengate serve` to `path`: listening on
/// port 0 in header mode (the secret from `GW_SECRET`) in front of
/// `upstream_url`, the store at `store_path`, JSON logs; `extra` adds
/// `(table, line)` pairs (`("auth", "max_failed_attempts = 0")`).
pub fn write_config(path: &Path, upstream_url: &str, store_path: &Path, extra: &[(&str, &str)]) {
    let mut tables: Vec<(&str, Vec<String>)> = vec![
        ("server", vec!["listen = \"127.0.0.1:0\"".into()]),
        ("upstream", vec![format!("url = \"{upstream_url}\"")]),
        (
            "upstream.credentials",
            vec![
                "secret_header_name = \"X-Gateway-Secret\"".into(),
                "secret_env = \"GW_SECRET\"".into(),
            ],
        ),
        (
            "tokens",
            vec![format!("store_path = \"{}\"", store_path.display())],
        ),
        ("auth", vec![]),
        ("log", vec!["format = \"json\"".into()]),
        ("notify", vec![]),
    ];
    for (table, line) in extra {
        let (_, lines) = tables
            .iter_mut()
            .find(|(t, _)| t == table)
            .unwrap_or_else(|| panic!("no table [{table}]"));
        lines.push(line.to_string());
    }
    let mut text = String::new();
    for (table, lines) in tables.iter().filter(|(_, l)| !l.is_empty()) {
        text.push_str(&format!("[{table}]\n{}\n", lines.join("\n")));
    }
    std::fs::write(path, text).unwrap();
}

/// Sends SIGTERM to the child.
pub fn terminate(child: &std::process::Child) {
    assert!(
        Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap()
            .success()
    );
}
