//! Opening the store that `[tokens]` configures: sled at `store_path`, or
//! the PostgreSQL database whose URL is in the environment variable
//! `postgres_url_env` names.

use std::path::PathBuf;
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
    Configured::of(config, env).map(drop)
}

/// The store `[tokens]` configures, with what it takes to open it; found
/// once (a setting that cannot work is a problem at once), opened as often
/// as needed (a store that does not open is tried again).
#[derive(Debug, Clone)]
pub enum Configured {
    Sled(PathBuf),
    Postgres(PostgresSettings),
}

impl Configured {
    pub fn of(
        config: &Config,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Configured, Problem> {
        Ok(match config.tokens.backend {
            StoreBackend::Sled => Configured::Sled(config.tokens.store_path.clone()),
            StoreBackend::Postgres => Configured::Postgres(postgres_settings(config, env)?),
        })
    }

    /// Opens it (sled: blocking work on the blocking pool).
    pub async fn open(&self) -> Result<Arc<dyn Backend>, StoreError> {
        match self {
            Configured::Sled(path) => {
                let path = path.clone();
                let opened = tokio::task::spawn_blocking(move || SledBackend::open(&path))
                    .await
                    .map_err(|e| StoreError::Unavailable(format!("open task failed: {e}")))?;
                Ok(Arc::new(opened?))
            }
            Configured::Postgres(settings) => Ok(Arc::new(PostgresBackend::open(settings).await?)),
        }
    }
}

/// Opens the configured backend.
pub async fn open_backend(
    config: &Config,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Arc<dyn Backend>, OpenError> {
    Ok(Configured::of(config, env)?.open().await?)
}
