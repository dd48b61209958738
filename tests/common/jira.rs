//! The gateway in header mode in front of the simulated Jira (or Confluence)
//! of the demo.

use std::sync::Arc;

use serde_json::json;
use tokengate::Running;
use tokengate::clock::ManualClock;
use tokengate::config::Config;
use tokengate::demo::sim::{Seen, SimConfig, SimUpstream, SimUser, TrustedHeader};

use super::caller::Gateway;
use super::{PostForm, client, options, secrets, test_config};

/// 2026-11-30T00:00:00Z: the manual clock's start.
pub const T0: u64 = 1_796_000_000_000;

/// The shared secret between the gateway and the simulated Jira.
pub const SECRET: &str = "s3cret-between-gateway-and-jira";

/// The simulated product, trusting `X-Remote-User` only with `X-Gateway-Secret: SECRET`.
pub async fn header_mode_sim(mut sim: SimConfig) -> SimUpstream {
    secrets::scan_logs();
    sim.trusted_header = Some(TrustedHeader {
        user_header: "X-Remote-User".into(),
        secret: Some(("X-Gateway-Secret".into(), SECRET.into())),
    });
    SimUpstream::start(sim).await.unwrap()
}

/// [`test_config`] in header mode: the shared secret from `GW_SECRET`.
pub fn header_mode_config(upstream_url: &str, dir: &std::path::Path) -> Config {
    let mut config = test_config(upstream_url, dir);
    config.upstream.credentials.secret_header_name = "X-Gateway-Secret".into();
    config.upstream.credentials.secret_env = "GW_SECRET".into();
    config
}

/// Starts a gateway on `config` with `GW_SECRET` set and a manual clock.
pub async fn start_with_secret(config: Config, clock: Arc<ManualClock>) -> Running {
    secrets::scan_logs();
    tokengate::start(config, options(clock, &[("GW_SECRET", SECRET)]))
        .await
        .expect("gateway starts")
}

/// Starts a gateway on `config` with `GW_SECRET` set, a manual clock and the
/// store `open` makes.
pub async fn start_with_store(config: Config, open: tokengate::StoreOpener) -> Running {
    secrets::scan_logs();
    tokengate::start_with_store(
        config,
        options(ManualClock::new(T0), &[("GW_SECRET", SECRET)]),
        open,
    )
    .await
    .expect("gateway starts")
}

/// A service account `svc` (password `svc-pw`, personal access token
/// `svc-pat`) for the basic and bearer credential modes.
pub fn with_service_account(mut sim: SimConfig) -> SimConfig {
    sim.users
        .push(SimUser::new("svc", "JIRAUSER10900", "svc-pw", false));
    sim.pats.insert("svc-pat".into(), "svc".into());
    sim
}

/// A gateway in front of the simulated Jira (or Confluence) in header mode,
/// with a shared secret, a lookup account, a manual clock.
pub struct JiraSetup {
    pub gw: Running,
    /// The configuration the gateway started with.
    pub config: Config,
    pub sim: SimUpstream,
    pub clock: Arc<ManualClock>,
    pub dir: tempfile::TempDir,
    pub base: String,
    pub http: reqwest::Client,
}

impl JiraSetup {
    pub async fn jira() -> JiraSetup {
        JiraSetup::with(SimConfig::jira(), |_| {}).await
    }

    pub async fn confluence() -> JiraSetup {
        JiraSetup::with(SimConfig::confluence(), |c| {
            c.upstream.product = tokengate::config::Product::Confluence;
        })
        .await
    }

    /// The simulated Jira with its configuration tweaked.
    pub async fn jira_with(tweak: impl FnOnce(&mut Config)) -> JiraSetup {
        JiraSetup::with(SimConfig::jira(), tweak).await
    }

    /// The simulated Jira with an admin listener on port 0.
    pub async fn with_admin() -> JiraSetup {
        JiraSetup::jira_with(|c| c.server.admin_listen = "127.0.0.1:0".into()).await
    }

    pub async fn with(sim: SimConfig, tweak: impl FnOnce(&mut Config)) -> JiraSetup {
        JiraSetup::with_env(sim, &[], tweak).await
    }

    /// [`JiraSetup::with`], with more environment variables for the gateway.
    pub async fn with_env(
        sim: SimConfig,
        env: &[(&str, &str)],
        tweak: impl FnOnce(&mut Config),
    ) -> JiraSetup {
        let sim = header_mode_sim(sim).await;
        let dir = tempfile::tempdir().unwrap();
        let mut config = header_mode_config(&sim.url(), dir.path());
        config.upstream.lookup_user = "admin".into();
        config.upstream.lookup_password_env = "LOOKUP_PW".into();
        config.auth.admin_groups = vec![
            "jira-administrators".into(),
            "confluence-administrators".into(),
        ];
        tweak(&mut config);
        let clock = ManualClock::new(T0);
        let gw = tokengate::start(
            config.clone(),
            options(
                clock.clone(),
                &[
                    &[
                        ("GW_SECRET", SECRET),
                        ("LOOKUP_PW", "admin"),
                        ("SVC_PW", "svc-pw"),
                        ("SVC_PAT", "svc-pat"),
                    ],
                    env,
                ]
                .concat(),
            ),
        )
        .await
        .expect("gateway starts");
        let base = format!("http://{}", gw.addr());
        JiraSetup {
            gw,
            config,
            sim,
            clock,
            dir,
            base,
            http: client(),
        }
    }

    pub fn api(&self, path: &str) -> String {
        format!("{}{}{path}", self.base, super::caller::API)
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// `http://<admin listener><path>`.
    pub fn admin_url(&self, path: &str) -> String {
        format!(
            "http://{}{path}",
            self.gw.admin_addr().expect("admin listener")
        )
    }

    /// What the admin listener's `/metrics` shows now.
    pub async fn metrics_text(&self) -> String {
        let resp = self.http.get(self.admin_url("/metrics")).send().await;
        resp.unwrap().text().await.unwrap()
    }

    /// The request the simulated product saw for `target`, if any.
    pub fn seen_at(&self, target: &str) -> Option<Seen> {
        self.sim.seen().into_iter().find(|r| r.target == target)
    }

    /// A fresh token for `user` (whose password is the username, as in the demo).
    pub async fn token_for(&self, user: &str) -> String {
        let v = self
            .as_user(user, user)
            .create_token(json!({"tokenDescription": format!("token of {user}")}))
            .await;
        v["plainTextToken"].as_str().unwrap().to_string()
    }
}

impl JiraSetup {
    /// Logs `user` (password = username) in on the product's login page,
    /// through the gateway as a browser would: the `Cookie` value of the
    /// session it starts (`JSESSIONID=...`).
    pub async fn session(&self, user: &str) -> String {
        let login = tokengate::demo::sim::login_path(self.config.upstream.product);
        let resp = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap()
            .post(self.url(login))
            .form_fields(&[
                ("os_username", user),
                ("os_password", user),
                ("os_destination", "/"),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 302, "the login of {user}");
        let set = resp.headers()["set-cookie"].to_str().unwrap();
        set.split(';').next().unwrap().to_string()
    }

    /// A caller with `user`'s browser session and no `Authorization`.
    pub async fn in_browser(&self, user: &str) -> super::caller::Caller {
        let cookie = self.session(user).await;
        self.anonymous().header("cookie", cookie)
    }
}

impl Gateway for JiraSetup {
    fn base(&self) -> String {
        self.base.clone()
    }
    fn http(&self) -> reqwest::Client {
        self.http.clone()
    }
}
