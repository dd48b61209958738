//! Opening the store that `[tokens]` configures: sled at `store_path`, or
//! the PostgreSQL database whose URL is in the environment variable
//! `postgres_url_env` names.

use std::sync::Arc;

use super::{Backend, PostgresBackend, PostgresSettings, SledBackend, StoreError};
use crate::config::{Config, Problem, StoreBackend};

/// Why the configured store could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// A setting is missing or unusable (the URL's variable is not set).
    #[error(transparent)]
    Config(#[from] Problem),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The connection settings of a PostgreSQL store; the URL is read through
/// `env` and never appears in a message.
pub fn postgres_settings(
    config: &Config,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<PostgresSettings, Problem> {
    let t = &config.tokens;
    let var = t.postgres_url_env.as_str();
    let url = match env(var) {
        Some(url) if !url.trim().is_empty() => url,
        Some(_) => {
            return Err(Problem::at(
                "tokens",
                "postgres_url_env",
                format!("environment variable {var} is empty"),
            ));
        }
        None => {
            return Err(Problem::at(
                "tokens",
                "postgres_url_env",
                format!("environment variable {var} is not set"),
            ));
        }
    };
    let settings = PostgresSettings {
        url,
        ca_file: Some(t.postgres_ca_file.clone()).filter(|p| !p.as_os_str().is_empty()),
        pool_size: t.postgres_pool_size as usize,
    };
    // The URL's form and the CA file, without connecting: a mistake here
    // is a configuration problem, not a database that will come back.
    settings.check().map_err(|e| {
        let key = if e.to_string().contains("CA file") {
            "postgres_ca_file"
        } else {
            "postgres_url_env"
        };
        let reason = match e {
            StoreError::Unavailable(reason) => reason,
            other => other.to_string(),
        };
        Problem::at("tokens", key, format!("{reason} (the URL is in {var})"))
    })?;
    Ok(settings)
}

/// The checks of the configured store that need the environment (the
/// database URL's form) but no connection: `check-config` runs them.
pub fn check(config: &Config, env: &dyn Fn(&str) -> Option<String>) -> Result<(), Problem> {
    match config.tokens.backend {
        StoreBackend::Sled => Ok(()),
        StoreBackend::Postgres => postgres_settings(config, env).map(drop),
    }
}

/// Opens the configured backend (sled: blocking work on the blocking pool).
pub async fn open_backend(
    config: &Config,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Arc<dyn Backend>, OpenError> {
    match config.tokens.backend {
        StoreBackend::Sled => {
            let path = config.tokens.store_path.clone();
            let opened = tokio::task::spawn_blocking(move || SledBackend::open(&path))
                .await
                .map_err(|e| StoreError::Unavailable(format!("open task failed: {e}")))?;
            Ok(Arc::new(opened?))
        }
        StoreBackend::Postgres => {
            let settings = postgres_settings(config, env)?;
            Ok(Arc::new(PostgresBackend::open(&settings).await?))
        }
    }
}
