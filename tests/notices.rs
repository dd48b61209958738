//! Expiry and creation notices (`[notify]`) reach real receivers:
//!
//! - an SMTP server (`common::smtp`, with STARTTLS and a login) gets exactly
//!   one mail per threshold, though the gateway restarts between checks and
//!   the server refuses the first attempt; the mail names the token and the
//!   way to a new one and holds no secret;
//! - TLS from the first byte (`smtps://`) works too;
//! - a webhook gets the documented body, whose `X-Tokengate-Signature`
//!   verifies, and is tried again when it fails;
//! - two gateways on one PostgreSQL database send each notice once;
//! - a wrong `smtp_url_env` is a start-up error naming the key, never the
//!   password.
//!
//! Time is a manual clock: the notifier checks when it moved.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::hook::HookReceiver;
use common::pg::TestDb;
use common::smtp::{SmtpServer, SmtpTlsMode};
use common::*;
use serde_json::{Value, json};
use tokengate::clock::ManualClock;
use tokengate::config::{Config, StoreBackend};
use tokengate::demo::sim::{SimConfig, SimUpstream};

const DAY: u64 = 86_400_000;
const MAIL_PW: &str = "Mail-Pa55-9c1e";

/// Waits until `check` holds, up to 10 s.
async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(start.elapsed() < Duration::from_secs(10), "{what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Lets the notifier run a few checks (1 s each, on the manual clock).
async fn a_few_checks(clock: &ManualClock) {
    for _ in 0..4 {
        clock.advance_ms(1_100);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

fn mail_config(c: &mut Config, dir: &Path, smtp: &SmtpServer) {
    let ca = dir.join("smtp-ca.pem");
    std::fs::write(&ca, &smtp.ca_pem).unwrap();
    c.upstream.ca_file = ca.display().to_string();
    c.server.public_url = "https://gw.example.com/".into();
    c.notify.smtp_url_env = "SMTP_URL".into();
    c.notify.mail_from = "Tokengate <tokengate@example.com>".into();
    c.notify.check_interval_seconds = 1;
}

/// A gateway in header mode in front of `sim`, with the lookup account, on
/// `dir`'s store and `clock`.
async fn gateway(
    sim: &SimUpstream,
    dir: &Path,
    clock: Arc<ManualClock>,
    env: &[(&str, &str)],
    tweak: impl FnOnce(&mut Config),
) -> tokengate::Running {
    let mut config = header_mode_config(&sim.url(), dir);
    config.upstream.lookup_user = "admin".into();
    config.upstream.lookup_password_env = "LOOKUP_PW".into();
    tweak(&mut config);
    let env = [&[("GW_SECRET", SECRET), ("LOOKUP_PW", "admin")], env].concat();
    tokengate::start(config, options(clock, &env))
        .await
        .unwrap()
}

async fn alices_token(gw: &tokengate::Running, months: u32) -> (u64, u64) {
    let v = gw
        .as_user("alice", "alice")
        .create_token(
            json!({"tokenDescription": "nightly build", "tokenValidityTimeInMonths": months}),
        )
        .await;
    (
        v["id"].as_u64().unwrap(),
        v["tokenExpirationDateTimeMillis"].as_u64().unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_mail_per_threshold_across_restarts_and_a_refused_first_attempt() {
    let smtp = SmtpServer::start(SmtpTlsMode::StartTls, "mailer", MAIL_PW).await;
    smtp.refuse_next(1);
    let sim = header_mode_sim(SimConfig::jira()).await;
    let dir = tempfile::tempdir().unwrap();
    let url = format!("smtp://mailer:{MAIL_PW}@127.0.0.1:{}", smtp.addr.port());
    let env = [("SMTP_URL", url.as_str())];
    let clock = ManualClock::new(T0);
    let store_dir = dir.path().to_path_buf();
    let tweak = |c: &mut Config| {
        mail_config(c, &store_dir, &smtp);
        c.notify.on_create = false;
        c.server.admin_listen = "127.0.0.1:0".into();
    };
    let gw = gateway(&sim, dir.path(), clock.clone(), &env, tweak).await;
    let (id, valid_until) = alices_token(&gw, 1).await;
    a_few_checks(&clock).await;
    assert!(smtp.mails().is_empty(), "nothing due a month ahead");

    // The 14-day threshold: the first attempt is refused, the retry (30 s
    // later) delivers.
    clock.set(valid_until - 14 * DAY + 3_600_000);
    eventually("the first attempt", || smtp.refused() == 1).await;
    a_few_checks(&clock).await;
    assert!(smtp.mails().is_empty(), "not before the retry is due");
    clock.advance_ms(30_000);
    eventually("the 14-day mail", || smtp.mails().len() == 1).await;
    let mail = &smtp.mails()[0];
    assert!(mail.tls, "sent after STARTTLS");
    assert_eq!(mail.to, ["alice@example.com"]);
    assert_eq!(mail.from, "tokengate@example.com");
    let text = mail.data.replace("=\r\n", "");
    assert!(
        text.contains("Subject: Your API token \"nightly build\" expires in 13 days"),
        "{text}"
    );
    assert!(text.contains(&format!("(id {id}) expires on")), "{text}");
    assert!(
        text.contains("token page: https://gw.example.com/tokengate/"),
        "the token pages' address: {text}"
    );
    assert!(
        text.contains("https://gw.example.com/rest/de.resolution.apitokenauth/latest/user/token"),
        "{text}"
    );
    assert!(!text.contains("tg_"), "no token in a mail: {text}");
    let admin = format!("http://{}/metrics", gw.admin_addr().unwrap());
    let text = client()
        .get(admin)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains(
            "tokengate_notifications_total{channel=\"mail\",event=\"expiry\",outcome=\"sent\"} 1"
        ),
        "{text}"
    );
    assert!(
        text.contains(
            "tokengate_notifications_total{channel=\"mail\",event=\"expiry\",outcome=\"failed\"} 1"
        ),
        "{text}"
    );
    assert!(
        text.contains("tokengate_tokens_expiring{within=\"30d\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("tokengate_tokens_expiring{within=\"7d\"} 0"),
        "{text}"
    );

    // A restart, then more checks: the 14-day notice is not sent again.
    gw.stop().await;
    let gw = gateway(&sim, dir.path(), clock.clone(), &env, tweak).await;
    a_few_checks(&clock).await;
    assert_eq!(smtp.mails().len(), 1, "sent once across a restart");

    clock.set(valid_until - 3 * DAY + 60_000);
    eventually("the 3-day mail", || smtp.mails().len() == 2).await;
    gw.stop().await;
    let gw = gateway(&sim, dir.path(), clock.clone(), &env, tweak).await;
    a_few_checks(&clock).await;
    clock.set(valid_until - DAY + 60_000);
    eventually("the 1-day mail", || smtp.mails().len() == 3).await;
    a_few_checks(&clock).await;
    gw.stop().await;
    let gw = gateway(&sim, dir.path(), clock.clone(), &env, tweak).await;
    a_few_checks(&clock).await;
    let subjects: Vec<String> = smtp
        .mails()
        .iter()
        .map(|m| {
            m.data
                .lines()
                .find(|l| l.starts_with("Subject:"))
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    assert_eq!(subjects.len(), 3, "one mail per threshold: {subjects:?}");
    assert!(subjects[1].ends_with("expires in 2 days"), "{subjects:?}");
    assert!(subjects[2].ends_with("expires in 23 hours"), "{subjects:?}");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mail_over_tls_from_the_first_byte_and_a_creation_notice() {
    let smtp = SmtpServer::start(SmtpTlsMode::Implicit, "mailer", MAIL_PW).await;
    let sim = header_mode_sim(SimConfig::confluence()).await;
    let dir = tempfile::tempdir().unwrap();
    let url = format!("smtps://mailer:{MAIL_PW}@127.0.0.1:{}", smtp.addr.port());
    let store_dir = dir.path().to_path_buf();
    let gw = gateway(
        &sim,
        dir.path(),
        ManualClock::new(T0),
        &[("SMTP_URL", url.as_str())],
        |c| {
            mail_config(c, &store_dir, &smtp);
            c.upstream.product = tokengate::config::Product::Confluence;
            c.auth.admin_groups = vec!["confluence-administrators".into()];
        },
    )
    .await;
    // An administrator makes a token for bob: bob hears of it.
    let v = gw
        .as_user("admin", "admin")
        .create_token(json!({"tokenDescription": "made for bob", "tokenForUserKey": BOB_KEY}))
        .await;
    eventually("the creation mail", || smtp.mails().len() == 1).await;
    let mail = &smtp.mails()[0];
    assert!(mail.tls);
    assert_eq!(
        mail.to,
        ["bob@example.com"],
        "Confluence's personal details"
    );
    let text = mail.data.replace("=\r\n", "");
    assert!(text.contains("was created for your account bob"), "{text}");
    assert!(text.contains(&format!("(id {})", v["id"])), "{text}");
    assert!(
        text.contains("by the administrator JIRAUSER10000"),
        "{text}"
    );
    assert!(!text.contains(v["plainTextToken"].as_str().unwrap()));
    gw.stop().await;
}

/// The webhook bodies seen, parsed, after checking each signature.
fn signed_bodies(hook: &HookReceiver, key: &str) -> Vec<Value> {
    hook.seen()
        .iter()
        .map(|h| {
            let sig = h.headers["x-tokengate-signature"].to_str().unwrap();
            assert_eq!(sig, tokengate::notify::signature(key.as_bytes(), &h.body));
            // And by hand, with the hmac crate directly.
            use hmac::{KeyInit, Mac};
            let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key.as_bytes()).unwrap();
            mac.update(&h.body);
            let hex: String = mac
                .finalize()
                .into_bytes()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            assert_eq!(sig, hex);
            assert_eq!(h.headers["content-type"], "application/json");
            serde_json::from_slice(&h.body).unwrap()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_gets_a_signed_body_and_is_tried_again_when_it_fails() {
    let hook = HookReceiver::start().await;
    hook.refuse_next(1);
    let sim = header_mode_sim(SimConfig::jira()).await;
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let key = "hook-key-4f0a";
    let gw = gateway(&sim, dir.path(), clock.clone(), &[("HOOK_KEY", key)], |c| {
        c.notify.webhook_url = hook.url();
        c.notify.webhook_secret_env = "HOOK_KEY".into();
        c.notify.check_interval_seconds = 1;
    })
    .await;
    let (id, valid_until) = alices_token(&gw, 1).await;
    // The first call is refused; 30 s later it goes through.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(hook.seen().is_empty());
    clock.advance_ms(30_000);
    eventually("the creation notice", || hook.seen().len() == 1).await;
    clock.set(valid_until - 14 * DAY + 1);
    eventually("the expiry notice", || hook.seen().len() == 2).await;
    a_few_checks(&clock).await;
    let bodies = signed_bodies(&hook, key);
    assert_eq!(bodies.len(), 2, "{bodies:?}");
    for (body, event) in bodies.iter().zip(["token_created", "token_expiring"]) {
        let fields: Vec<&str> = body
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            fields,
            [
                "description",
                "event",
                "text",
                "tokenId",
                "userKey",
                "userName",
                "validUntil"
            ]
        );
        assert_eq!(body["event"], event);
        assert_eq!(body["tokenId"], id);
        assert_eq!(body["userKey"], ALICE_KEY);
        assert_eq!(body["userName"], "alice");
        assert_eq!(body["description"], "nightly build");
        assert_eq!(body["validUntil"], valid_until);
    }
    assert!(
        bodies[1]["text"].as_str().unwrap().contains("expires on"),
        "{}",
        bodies[1]
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_gateways_on_postgresql_send_each_notice_once() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let hook = HookReceiver::start().await;
    let sim = header_mode_sim(SimConfig::jira()).await;
    let clock = ManualClock::new(T0);
    let mut nodes = Vec::new();
    for _ in 0..2 {
        let dir = tempfile::tempdir().unwrap();
        let gw = gateway(
            &sim,
            dir.path(),
            clock.clone(),
            &[("PG_URL", db.url.as_str())],
            |c| {
                c.tokens.backend = StoreBackend::Postgres;
                c.tokens.postgres_url_env = "PG_URL".into();
                c.notify.webhook_url = hook.url();
                c.notify.check_interval_seconds = 1;
                c.notify.on_create = false;
            },
        )
        .await;
        nodes.push((gw, dir));
    }
    let mut expiries = Vec::new();
    for (gw, _) in &nodes {
        expiries.push(alices_token(gw, 1).await.1);
    }
    let last = *expiries.iter().max().unwrap();
    clock.set(last - 14 * DAY + 1);
    eventually("both expiry notices", || hook.seen().len() >= 2).await;
    a_few_checks(&clock).await;
    a_few_checks(&clock).await;
    let bodies: Vec<Value> = hook
        .seen()
        .iter()
        .map(|h| {
            assert!(
                !h.headers.contains_key("x-tokengate-signature"),
                "no key, no signature"
            );
            serde_json::from_slice(&h.body).unwrap()
        })
        .collect();
    let mut ids: Vec<u64> = bodies
        .iter()
        .map(|b| b["tokenId"].as_u64().unwrap())
        .collect();
    ids.sort_unstable();
    assert_eq!(ids, [1, 2], "each token's notice once, from either node");
}

#[test]
fn a_wrong_smtp_url_env_is_a_start_up_error_without_the_password() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("proxy.toml");
    process::write_config(
        &config,
        "http://127.0.0.1:9",
        &dir.path().join("tokens.sled"),
        &[
            ("upstream", "lookup_user = \"svc\""),
            ("upstream", "lookup_password_env = \"LOOKUP_PW\""),
            ("notify", "smtp_url_env = \"TG_SMTP_URL\""),
            ("notify", "mail_from = \"tokengate@example.com\""),
        ],
    );
    let base = [("GW_SECRET", SECRET), ("LOOKUP_PW", "x")];
    for command in ["check-config", "serve"] {
        let (ok, err) = process::run(command, &config, &base);
        assert!(!ok, "{command} with the variable unset");
        assert!(
            err.contains("[notify] smtp_url_env: environment variable TG_SMTP_URL is not set"),
            "{command}: {err}"
        );
        for (url, says) in [
            ("smtp://mailer:Hunter2-XYZZY@mail.example.com:99999", "port"),
            ("http://mailer:Hunter2-XYZZY@mail.example.com", "smtp://"),
            ("smtp://mailer:Hunter2-XYZZY@", "no host"),
        ] {
            let env = [&base[..], &[("TG_SMTP_URL", url)]].concat();
            let (ok, err) = process::run(command, &config, &env);
            assert!(!ok, "{command} {url}");
            assert!(
                err.contains("[notify] smtp_url_env: environment variable TG_SMTP_URL")
                    && err.contains(says),
                "{command}: {err}"
            );
            assert!(
                !err.contains("Hunter2-XYZZY"),
                "{command} shows the password: {err}"
            );
        }
    }
    let env = [
        &base[..],
        &[("TG_SMTP_URL", "smtp://mailer:pw@mail.example.com")],
    ]
    .concat();
    let (ok, err) = process::run("check-config", &config, &env);
    assert!(ok, "{err}");
}
