//! The schema and its versions.
//!
//! Migrations are numbered SQL scripts, applied in order, each in its own
//! transaction together with its row in `tokengate_schema`. All of it runs
//! under one advisory lock on a connection of its own: ten gateways starting
//! at once migrate once, the others wait and find the work done. The lock is
//! a session lock, so a gateway that dies half-way lets go of it with its
//! connection.
//!
//! A database migrated by a newer tokengate is refused: this binary would
//! not know what the newer columns and rows mean.

use std::time::Duration;

use super::connect::{MIGRATE_NAME, Target};
use super::describe;
use crate::store::StoreError;

/// The schema version this binary writes and understands.
pub const SCHEMA_VERSION: i32 = 2;

/// Version → script; in order, without gaps, the last one `SCHEMA_VERSION`.
const MIGRATIONS: &[(i32, &str)] = &[(1, include_str!("v1.sql")), (2, include_str!("v2.sql"))];

/// The advisory lock every migration runs under ("tokengat"). Advisory
/// locks belong to one database, so other applications' keys in other
/// databases do not matter.
const MIGRATION_LOCK: i64 = 0x746f_6b65_6e67_6174;

/// How long a gateway waits for another one's migration.
const LOCK_WAIT: Duration = Duration::from_secs(120);

fn failed(what: &str, e: &tokio_postgres::Error) -> StoreError {
    StoreError::Unavailable(format!("{what}: {}", describe(e)))
}

fn newer(db: i32) -> StoreError {
    StoreError::Incompatible(format!(
        "the database schema is version {db}, newer than this tokengate binary understands \
         (version {SCHEMA_VERSION}); run a newer tokengate"
    ))
}

/// Brings the schema up to [`SCHEMA_VERSION`]; the versions before and after.
pub(super) async fn migrate(target: &Target) -> Result<(i32, i32), StoreError> {
    let (mut client, connection) = target
        .named(MIGRATE_NAME)
        .unlimited()
        .connect()
        .await
        .map_err(|e| failed("cannot connect to PostgreSQL", &e))?;
    let driver = tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %describe(&e), "the migration connection ended");
        }
    });
    let outcome = migrate_on(&mut client).await;
    // Closing the session also releases the advisory lock.
    drop(client);
    let _ = driver.await;
    outcome
}

async fn migrate_on(client: &mut tokio_postgres::Client) -> Result<(i32, i32), StoreError> {
    client
        .batch_execute(&format!(
            "SET lock_timeout = {}; SELECT pg_advisory_lock({MIGRATION_LOCK}); SET lock_timeout = 0",
            LOCK_WAIT.as_millis()
        ))
        .await
        .map_err(|e| {
            failed(
                "waiting for another gateway's schema migration (advisory lock) failed",
                &e,
            )
        })?;
    // Created only when missing: a role that may not create tables can run
    // a gateway on a schema an owner migrated.
    let exists: bool = client
        .query_one("SELECT to_regclass('tokengate_schema') IS NOT NULL", &[])
        .await
        .map_err(|e| failed("reading the schema version failed", &e))?
        .get(0);
    if !exists {
        client
            .batch_execute(
                "CREATE TABLE tokengate_schema (
                    version    int         PRIMARY KEY,
                    applied_at timestamptz NOT NULL DEFAULT now()
                )",
            )
            .await
            .map_err(|e| failed("creating tokengate_schema failed", &e))?;
    }
    let before: i32 = client
        .query_one(
            "SELECT coalesce(max(version), 0) FROM tokengate_schema",
            &[],
        )
        .await
        .map_err(|e| failed("reading the schema version failed", &e))?
        .get(0);
    if before > SCHEMA_VERSION {
        return Err(newer(before));
    }
    for &(version, script) in MIGRATIONS.iter().filter(|(v, _)| *v > before) {
        let what = format!("migrating the database schema to version {version} failed");
        let tx = client.transaction().await.map_err(|e| failed(&what, &e))?;
        tx.batch_execute(script)
            .await
            .map_err(|e| failed(&what, &e))?;
        tx.execute(
            "INSERT INTO tokengate_schema (version) VALUES ($1)",
            &[&version],
        )
        .await
        .map_err(|e| failed(&what, &e))?;
        tx.commit().await.map_err(|e| failed(&what, &e))?;
        tracing::info!(version, "database schema migrated");
    }
    let after: i32 = client
        .query_one(
            "SELECT coalesce(max(version), 0) FROM tokengate_schema",
            &[],
        )
        .await
        .map_err(|e| failed("reading the schema version failed", &e))?
        .get(0);
    if after > SCHEMA_VERSION {
        return Err(newer(after));
    }
    let _ = client
        .batch_execute(&format!("SELECT pg_advisory_unlock({MIGRATION_LOCK})"))
        .await;
    Ok((before, after))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_are_numbered_in_order_up_to_the_schema_version() {
        for (i, (version, _)) in MIGRATIONS.iter().enumerate() {
            assert_eq!(*version, i as i32 + 1);
        }
        assert_eq!(MIGRATIONS.last().map(|m| m.0), Some(SCHEMA_VERSION));
    }
}
