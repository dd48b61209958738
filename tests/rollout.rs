//! What a person deploying tokengate reads and runs first: the README's
//! commands and configuration, the minimum Rust version, the documents'
//! links, and the validity rule an administrator meets for their own token.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::Command;

use common::process::{run, succeeded};
use common::{ADMIN_KEY, ALICE_KEY, Gateway, JiraSetup, T0};
use serde_json::{Value, json};
use tokengate::api::validity::add_months;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn read(path: &str) -> String {
    std::fs::read_to_string(Path::new(ROOT).join(path)).unwrap()
}

/// The text of a Markdown section: from its heading line to the next heading
/// of the same or a higher level (`#` lines inside code blocks are not headings).
fn section<'a>(doc: &'a str, heading: &str) -> &'a str {
    let level = heading.chars().take_while(|&c| c == '#').count();
    let start = doc
        .find(&format!("\n{heading}\n"))
        .unwrap_or_else(|| panic!("no heading {heading:?}"))
        + heading.len()
        + 2;
    let rest = &doc[start..];
    let mut in_code = false;
    let mut offset = 0;
    for line in rest.split_inclusive('\n') {
        if line.starts_with("```") {
            in_code = !in_code;
        }
        let hashes = line.chars().take_while(|&c| c == '#').count();
        if !in_code && hashes > 0 && hashes <= level && line[hashes..].starts_with(' ') {
            return &rest[..offset];
        }
        offset += line.len();
    }
    rest
}

/// The fenced code blocks of a text with the given language, in order.
fn blocks<'a>(text: &'a str, lang: &str) -> Vec<&'a str> {
    let fence = format!("```{lang}\n");
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find(&fence) {
        let body = &rest[start + fence.len()..];
        let end = body.find("```").expect("a closed code block");
        out.push(&body[..end]);
        rest = &body[end + 3..];
    }
    out
}

#[test]
fn the_readme_minimal_configuration_passes_check_config_without_warnings() {
    let readme = read("README.md");
    let toml = blocks(section(&readme, "### A minimal configuration"), "toml");
    assert_eq!(toml.len(), 1, "one configuration block");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("proxy.toml");
    std::fs::write(&path, toml[0]).unwrap();
    // The variables the block names, set as the README's steps set them.
    let (ok, stderr) = run(
        "check-config",
        &path,
        &[("TOKENGATE_GATEWAY_SECRET", "a-long-random-secret")],
    );
    assert!(ok, "{stderr}");
    assert_eq!(stderr, "", "no warnings");
    // The steps export every variable the block names.
    let steps = section(&readme, "## Running it for real");
    for line in toml[0].lines().filter(|l| l.contains("_env")) {
        let var = line.split('"').nth(1).unwrap();
        assert!(steps.contains(&format!("export {var}=")), "{var}");
    }
}

#[test]
fn every_shipped_deployment_configuration_passes_check_config() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut found = Vec::new();
    let mut stack = vec![root.join("deploy")];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.file_name().is_some_and(|n| n == "proxy.toml") {
                found.push(path);
            }
        }
    }
    assert!(found.len() >= 3, "{found:?}");
    for path in found {
        // The variables the file names, with placeholder values.
        let text = std::fs::read_to_string(&path).unwrap();
        let vars: Vec<String> = text
            .lines()
            .filter(|l| !l.trim_start().starts_with('#') && l.contains("_env"))
            .filter_map(|l| l.split('"').nth(1).map(str::to_string))
            .collect();
        let env: Vec<(&str, &str)> = vars
            .iter()
            .map(|v| {
                let value = if v.contains("POSTGRES") {
                    "postgres://tokengate:placeholder@db:5432/tokengate?sslmode=verify-full"
                } else {
                    "a-long-random-placeholder"
                };
                (v.as_str(), value)
            })
            .collect();
        let (ok, stderr) = run("check-config", &path, &env);
        assert!(ok, "{}: {stderr}", path.display());
    }
}

#[test]
fn the_readme_quick_start_is_two_commands_and_the_second_is_what_ci_runs_last() {
    let readme = read("README.md");
    let quick = section(&readme, "## Quick start");
    let quick = &quick[..quick.find("\n### ").unwrap_or(quick.len())];
    let commands: Vec<&str> = blocks(quick, "sh").iter().map(|b| b.trim()).collect();
    assert_eq!(commands.len(), 2, "{commands:?}");
    assert!(commands.iter().all(|c| !c.contains('\n')), "{commands:?}");
    assert!(commands[0].ends_with("-- demo"), "{commands:?}");
    let ci = read(".ci/run");
    let last = ci
        .lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty() && !l.starts_with('#'))
        .unwrap();
    assert_eq!(commands[1], last);
}

/// `major.minor[.patch]` as numbers, for comparing.
fn version(text: &str) -> (u64, u64, u64) {
    let mut parts = text.split('.').map(|p| p.parse::<u64>().unwrap());
    (
        parts.next().unwrap(),
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
    )
}

#[test]
fn the_minimum_rust_version_covers_every_dependency_and_the_readme_names_it() {
    let manifest = read("Cargo.toml");
    let ours = manifest
        .lines()
        .find_map(|l| l.strip_prefix("rust-version = "))
        .unwrap()
        .trim_matches('"');
    let rustc = Command::new("rustc").arg("-vV").output().unwrap();
    let host = String::from_utf8_lossy(&rustc.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: ").map(str::to_string))
        .unwrap();
    let out = succeeded(
        Command::new(env!("CARGO"))
            .args(["metadata", "--format-version", "1", "--locked", "--offline"])
            .args(["--filter-platform", &host])
            .current_dir(ROOT),
    );
    let metadata: Value = serde_json::from_slice(&out.stdout).unwrap();
    let packages = metadata["packages"].as_array().unwrap();
    let needs = packages
        .iter()
        .filter_map(|p| Some((p["rust_version"].as_str()?, p["name"].as_str()?)))
        .max_by_key(|(v, _)| version(v))
        .unwrap();
    assert!(
        version(ours) >= version(needs.0),
        "rust-version {ours}, but {} needs {}",
        needs.1,
        needs.0
    );
    // Let-chains (`if let … && let …`), used throughout, are stable since 1.88.
    assert!(version(ours) >= (1, 88, 0), "{ours}");
    assert!(
        read("README.md").contains(&format!("Rust toolchain ({ours} or newer")),
        "the README names {ours}"
    );
}

/// The Markdown documents a deploying person reads.
fn documents() -> Vec<String> {
    let mut docs = vec!["README.md".to_string(), "deploy/README.md".to_string()];
    for entry in std::fs::read_dir(Path::new(ROOT).join("docs")).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        if name.ends_with(".md") {
            docs.push(format!("docs/{name}"));
        }
    }
    docs
}

#[test]
fn the_documents_links_resolve() {
    for doc in documents() {
        let text = read(&doc);
        let dir = Path::new(ROOT).join(&doc);
        let dir = dir.parent().unwrap();
        for (i, _) in text.match_indices("](") {
            let target = &text[i + 2..];
            let target = &target[..target.find(')').unwrap()];
            if target.starts_with("http://") || target.starts_with("https://") {
                continue;
            }
            let file = target.split('#').next().unwrap();
            if file.is_empty() {
                continue;
            }
            assert!(dir.join(file).exists(), "{doc}: link to {target}");
        }
    }
}

#[test]
fn the_documents_say_what_token_scopes_mean_and_speak_for_themselves() {
    for doc in documents() {
        let text = read(&doc);
        if text.contains("tokenScope") {
            assert!(
                text.contains("READ_ONLY") && text.contains("READ_WRITE"),
                "{doc} mentions tokenScope without saying what 1 and 2 mean"
            );
        }
        for outside in ["SPEC", "seed document"] {
            assert!(
                !text.contains(outside),
                "{doc} cites {outside:?}, which is not in the repository"
            );
        }
    }
}

#[tokio::test]
async fn an_administrator_asking_too_long_a_validity_for_their_own_token_gets_400_naming_the_maximum()
 {
    let s = JiraSetup::jira().await;
    let admin_token = s.token_for("admin").await;
    let too_long = [
        json!({"tokenDescription": "mine", "tokenValidityTimeInMonths": 24}),
        json!({"tokenDescription": "mine", "tokenExpirationDateTime": "2031-01-01T00:00:00Z"}),
        json!({"tokenDescription": "mine", "tokenForUserKey": ADMIN_KEY, "tokenValidityTimeInMonths": 24}),
        json!({"tokenDescription": "mine", "tokenForUserKey": ADMIN_KEY, "tokenExpirationDateTime": "2031-01-01"}),
    ];
    for body in &too_long {
        for auth in [("admin", "admin"), ("admin", admin_token.as_str())] {
            let (status, v) = s
                .as_user(auth.0, auth.1)
                .post("/user/token", body.clone())
                .await;
            // Not the whole answer: a 200 would hold a token.
            assert_eq!(
                status, 400,
                "{body}: a token of {}",
                v["tokenExpirationDateTime"]
            );
            let errors = &v["errors"];
            assert!(
                errors
                    .as_object()
                    .unwrap()
                    .values()
                    .any(|m| m == "the maximum validity is 12 months"),
                "{body}: {errors}"
            );
        }
    }
    // Only a token made for another user is cut down to the maximum.
    let (status, v) = s.as_user("admin", "admin").post(
        "/user/token",
        json!({"tokenDescription": "for alice", "tokenForUserKey": ALICE_KEY, "tokenValidityTimeInMonths": 24}),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        v["tokenExpirationDateTimeMillis"],
        add_months(T0, 12).unwrap()
    );
    assert_eq!(v["tokenForUserKey"], ALICE_KEY);
}
