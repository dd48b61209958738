//! `tokengate demo`: a simulated Jira on loopback and the gateway in front of
//! it, with its admin listener on a free port and a temporary store, plus a
//! few commands to try.

pub mod sim;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use crate::config::{Config, Product, default_admin_groups};
use crate::{Options, StartError};
use sim::{SimConfig, SimUpstream, TrustedHeader};

const SECRET_VAR: &str = "TOKENGATE_DEMO_GATEWAY_SECRET";
const LOOKUP_VAR: &str = "TOKENGATE_DEMO_LOOKUP_PASSWORD";

/// Why the demo's own parts could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("no randomness: {0}")]
    Randomness(getrandom::Error),
    #[error("cannot start the simulated upstream: {0}")]
    Simulator(std::io::Error),
    #[error("cannot create {}: {source}", dir.display())]
    StoreDir {
        dir: PathBuf,
        source: std::io::Error,
    },
}

/// Runs the demo until `shutdown` completes.
pub async fn run(
    listen: SocketAddr,
    product: Product,
    shutdown: impl Future<Output = ()>,
) -> Result<(), StartError> {
    // The simulated upstream trusts the identity header only together with
    // this secret, as a real header-based SSO set-up should.
    let mut bytes = [0u8; 24];
    getrandom::fill(&mut bytes).map_err(DemoError::Randomness)?;
    let secret: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let sim_config = SimConfig {
        trusted_header: Some(TrustedHeader {
            user_header: "X-Remote-User".into(),
            secret: Some(("X-Gateway-Secret".into(), secret.clone())),
        }),
        ..if product == Product::Jira {
            SimConfig::jira()
        } else {
            SimConfig::confluence()
        }
    };
    let upstream = SimUpstream::start(sim_config)
        .await
        .map_err(DemoError::Simulator)?;

    let store_dir = temp_store_dir()?;
    let mut config = Config::default();
    config.server.listen = listen;
    // A free loopback port: a second demo, or a real gateway on 9090, is no conflict.
    config.server.admin_listen = "127.0.0.1:0".into();
    config.upstream.url = upstream.url();
    config.upstream.product = product;
    config.upstream.lookup_user = "admin".into();
    config.upstream.lookup_password_env = LOOKUP_VAR.into();
    config.upstream.credentials.secret_header_name = "X-Gateway-Secret".into();
    config.upstream.credentials.secret_env = SECRET_VAR.into();
    config.tokens.store_path = store_dir.join("tokens.sled");
    config.auth.admin_groups = default_admin_groups(product);
    let pages = config.ui.root().unwrap_or_default();
    let options = Options {
        env: Arc::new(move |var| match var {
            SECRET_VAR => Some(secret.clone()),
            LOOKUP_VAR => Some("admin".into()),
            _ => None,
        }),
        ..Options::default()
    };
    let running = match crate::start(config, options).await {
        Ok(r) => r,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&store_dir);
            return Err(e);
        }
    };
    print_intro(
        running.addr(),
        running.admin_addr(),
        &upstream.url(),
        product,
        &pages,
    );
    shutdown.await;
    running.stop().await;
    let _ = std::fs::remove_dir_all(&store_dir);
    Ok(())
}

fn temp_store_dir() -> Result<PathBuf, DemoError> {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).map_err(DemoError::Randomness)?;
    let name: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let dir = std::env::temp_dir().join(format!("tokengate-demo-{name}"));
    std::fs::create_dir_all(&dir).map_err(|source| DemoError::StoreDir {
        dir: dir.clone(),
        source,
    })?;
    Ok(dir)
}

fn print_intro(
    addr: SocketAddr,
    admin: Option<SocketAddr>,
    upstream: &str,
    product: Product,
    pages: &str,
) {
    let gw = format!("http://{addr}");
    let admin = admin.map_or_else(|| "off".to_string(), |a| format!("http://{a}"));
    let api = format!("{gw}/rest/de.resolution.apitokenauth/latest");
    let me = match product {
        Product::Jira => "/rest/api/2/myself",
        Product::Confluence => "/rest/api/user/current",
    };
    println!(
        r#"
tokengate demo
  gateway:      {gw}
  token pages:  {gw}{pages}/  (in a browser: log in as alice/alice; admin/admin also sees {gw}{pages}/admin)
  upstream:     {upstream} (a simulated {product:?})
  users:        admin/admin (a system administrator), alice/alice and bob/bob
  health:       {admin}/healthz
  readiness:    {admin}/readyz
  metrics:      {admin}/metrics
  token store:  a temporary directory, removed on exit

The simulated {product:?} trusts X-Remote-User only together with the gateway's
secret X-Gateway-Secret, as a real one should (docs/connecting.md).

Try, in another terminal:

  # 1. alice creates a token with her password (checked by the upstream)
  curl -s -u alice:alice -H 'Content-Type: application/json' \
       -d '{{"tokenDescription":"my first token"}}' {api}/user/token

  # 2. call the upstream with the token instead of the password
  TOKEN=tg_...   # plainTextToken from step 1
  curl -s -H "Authorization: Bearer $TOKEN" {gw}{me}
  curl -s -u alice:$TOKEN {gw}{me}

  # 3. a wrong token gets 401, and is never forwarded
  curl -si -H 'Authorization: Bearer tg_000000000000000000000000000000000000' {gw}{me}

  # 4. list alice's tokens; as admin, filter all tokens
  curl -s -u alice:alice {api}/user/token
  curl -s -u admin:admin "{api}/user/tokensByFilter?notValidAfter=-1"

  # 5. a forged X-Remote-User sent straight to the upstream is not trusted: 401
  curl -si -H 'X-Remote-User: admin' {upstream}{me}

  # 6. what the gateway counted
  curl -s {admin}/metrics | grep tokengate_auth_decisions_total

Press Ctrl-C to stop.
"#
    );
}
