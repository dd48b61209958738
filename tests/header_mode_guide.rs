//! docs/connecting.md's header mode, followed on the simulated Jira: the
//! gateway runs with the guide's own configuration block, the simulated Jira
//! is set up as the guide tells a Jira admin (trust `X-Remote-User` only with
//! the secret), and then a token reaches Jira as its owner while a forged
//! header, straight to Jira or through the gateway, does not.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use common::{Gateway, Remote, values};
use tokengate::config::Config;
use tokengate::demo::sim::{SimConfig, SimUpstream, TrustedHeader};

const SECRET: &str = "a-long-random-secret-shared-with-jira";

/// The guide's configuration block for tokengate's side of header mode.
fn guide_config() -> String {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/connecting.md"))
        .unwrap();
    let heading = "### tokengate's side\n";
    let after = &doc[doc.find(heading).expect("the guide's heading") + heading.len()..];
    let start = after.find("```toml\n").expect("a toml block") + "```toml\n".len();
    let block = &after[start..];
    block[..block.find("```").unwrap()].to_string()
}

#[tokio::test]
async fn the_header_mode_guide_works_on_the_simulated_jira() {
    common::secrets::scan_logs();
    let env = |var: &str| (var == "TOKENGATE_GATEWAY_SECRET").then(|| SECRET.to_string());
    let checked = Config::check("docs/connecting.md", &guide_config(), &env)
        .unwrap_or_else(|e| panic!("the guide's block passes check-config: {e}"));
    assert!(checked.warnings.is_empty(), "{:?}", checked.warnings);
    let mut config = checked.config;
    let creds = config.upstream.credentials.clone();
    assert_eq!(creds.mode, tokengate::config::CredentialMode::Header);

    // Jira's side, as the guide describes it: the identity header counts only
    // together with the secret header carrying the shared secret.
    let sim = SimUpstream::start(SimConfig {
        trusted_header: Some(TrustedHeader {
            user_header: creds.header_name.clone(),
            secret: Some((creds.secret_header_name.clone(), SECRET.into())),
        }),
        ..SimConfig::jira()
    })
    .await
    .unwrap();

    // Only where this machine differs from the guide's example hosts.
    let dir = tempfile::tempdir().unwrap();
    config.upstream.url = sim.url();
    config.server.listen = "127.0.0.1:0".parse().unwrap();
    config.server.admin_listen = String::new();
    config.tokens.store_path = dir.path().join("tokens.sled");
    let gw = tokengate::start(
        config,
        tokengate::Options {
            env: Arc::new(move |var| env(var)),
            ..tokengate::Options::default()
        },
    )
    .await
    .expect("the gateway starts with the guide's configuration");
    let myself = "/rest/api/2/myself";

    // alice makes a token with her password, then calls Jira with it: Jira sees alice.
    let created = gw
        .as_user("alice", "alice")
        .create_token(serde_json::json!({"tokenDescription": "header mode"}))
        .await;
    let token = created["plainTextToken"].as_str().unwrap().to_string();
    sim.clear_seen();
    let resp = gw
        .with_token(&token)
        // A client's attempt to be someone else on the way is removed.
        .header("X-Remote-User", "admin")
        .fetch(myself)
        .await;
    assert_eq!(resp.status(), 200);
    let me: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(me["name"], "alice");
    let seen = sim.seen();
    let last = seen.last().unwrap();
    assert_eq!(last.user.as_deref(), Some("alice"), "Jira took it as alice");
    assert_eq!(values(&last.headers, &creds.header_name), vec!["alice"]);

    // The same header sent straight to Jira, without the secret or with a wrong
    // one: not trusted, the request is anonymous and gets Jira's 401.
    let jira = Remote::at(sim.url());
    for secret in [None, Some("guessed")] {
        sim.clear_seen();
        let mut direct = jira.anonymous().header(&creds.header_name, "admin");
        if let Some(secret) = secret {
            direct = direct.header(&creds.secret_header_name, secret);
        }
        let resp = direct.fetch(myself).await;
        assert_eq!(resp.status(), 401, "secret {secret:?}");
        assert_eq!(sim.seen().last().unwrap().user, None, "secret {secret:?}");
    }

    // A forged header through the gateway, without a token, never reaches Jira.
    sim.clear_seen();
    let resp = gw
        .anonymous()
        .header("x_remote_user", "admin")
        .header("X-Remote-User", "admin")
        .fetch(myself)
        .await;
    assert_eq!(resp.status(), 401);
    let seen = sim.seen();
    let last = seen.last().unwrap();
    assert_eq!(last.user, None);
    assert!(values(&last.headers, &creds.header_name).is_empty());
    gw.stop().await;
}
