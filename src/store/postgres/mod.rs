//! The PostgreSQL engine: several gateways share one database.
//!
//! Tables (the schema is in `v1.sql`, its versions in [`schema`]):
//! - `tokengate_tokens`: one row per token, `id` the primary key; unique on
//!   `hash` (the hot path's lookup on a cache miss), indexed by
//!   `(user_key, id)` (a user's tokens in id order) and `(valid_until, id)`
//!   for tokens that expire (`valid_until > 0`)
//! - `tokengate_token_ids`: the sequence of token ids, shared by every
//!   gateway: increasing, never reused
//! - `tokengate_users`: user key → how many tokens the user has. An insert
//!   counts up its owner's row and so holds that row's lock until it
//!   commits: the per-user limit holds however many gateways create at once
//! - `tokengate_counts`: how many tokens there are, in 16 rows (`id % 16`)
//!   so that concurrent writers seldom wait for the same row; an unfiltered
//!   listing sums them instead of counting a million rows
//! - `tokengate_failed_logins`: see [`failures`]
//! - `tokengate_notices`: the expiry and creation notices claimed and sent,
//!   one row per (token, notice), gone with the token (schema version 2)
//! - `tokengate_schema`: the versions applied
//!
//! Since version 2 a token row also holds its `allowed_ips`, the address of
//! its last use, and the secret a rotation replaced while its grace lasts
//! (`previous_hash`, unique too, and `previous_until`): a lookup by hash
//! finds either secret.
//!
//! Every write is one statement or one transaction and keeps the user rows
//! and the counts right in the same; `Ok` means committed. Row locks are
//! taken in one order — token rows by id, then user rows, then count rows
//! by shard — so writers on several gateways may wait for each other but
//! never deadlock. Deletes, description changes and user deletions announce
//! themselves to the other gateways (see [`listen`]).
//!
//! Filters: an unfiltered page, or one of a user's tokens, reads an index in
//! id order and takes its total from the counts; the expiry filter reads its
//! index. A description filter (`lower(description) LIKE '%…%'`) reads every
//! row: it is an administrator's search, not a hot path. Lower-casing
//! follows the database's `LC_CTYPE`; with the `C` locale only ASCII letters
//! are lower-cased.
//!
//! Times and ids are `bigint`: a time beyond `i64::MAX` ms (292 million
//! years) is stored as `i64::MAX`.

use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Pool, PoolError, RecyclingMethod, Runtime};
use tokio_postgres::Row;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;

mod connect;
mod failures;
mod listen;
mod schema;
#[cfg(test)]
mod tests;

use crate::store::backend::{Access, Rotated};
use crate::store::backend::{Backend, Health, SharedFailures};
use crate::store::cache::HotCache;
use crate::store::{
    AllowedIps, Filter, FoundEntry, InsertError, NewToken, Page, Previous, Scope, StoreError,
    TokenRecord, earlier_expiry,
};
use crate::token::TokenHash;
use connect::Target;
use failures::PgFailures;
use listen::Listener;

/// Where the database is. `Debug` does not show the URL: it holds the password.
#[derive(Clone)]
pub struct PostgresSettings {
    /// `postgres://user:password@host:5432/database?sslmode=verify-full`, or
    /// libpq's key=value form.
    pub url: String,
    /// Roots for `sslmode=verify-ca|verify-full`; the system's when `None`.
    pub ca_file: Option<PathBuf>,
    /// Connections in the pool (the listener has one more of its own).
    pub pool_size: usize,
}

impl fmt::Debug for PostgresSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresSettings")
            .field("url", &"[REDACTED]")
            .field("ca_file", &self.ca_file)
            .field("pool_size", &self.pool_size)
            .finish()
    }
}

impl PostgresSettings {
    /// Checks what can be checked without connecting (`check-config`): the
    /// URL parses, its `sslmode` is known, and the roots that verification
    /// needs can be read. The message never shows the URL.
    pub fn check(&self) -> Result<(), StoreError> {
        Target::new(self).map(|_| ())
    }
}

/// How long a request waits for a pooled connection, and how long opening
/// one may take: an unreachable database fails requests quickly.
const POOL_WAIT: Duration = Duration::from_secs(5);
const POOL_CREATE: Duration = Duration::from_secs(5);
/// How long the readiness check waits for the database.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(5);

/// Rows per statement when importing or recording access times.
const RESTORE_CHUNK: usize = 1_000;
const ACCESS_CHUNK: usize = 5_000;

/// Brings the database schema up to [`schema::SCHEMA_VERSION`] (`tokengate store
/// migrate`); the versions before and after. [`PostgresBackend::open`]
/// does the same.
pub async fn migrate(settings: &PostgresSettings) -> Result<(i32, i32), StoreError> {
    schema::migrate(&Target::new(settings)?).await
}

pub struct PostgresBackend {
    pool: Pool,
    /// For the listener's own connection.
    target: Target,
    /// This backend's name in notifications (random): its own are skipped.
    node: Arc<str>,
    /// Where the listener runs; `watch` may be called outside the runtime.
    runtime: tokio::runtime::Handle,
    listener: Mutex<Option<Listener>>,
    failures: Arc<PgFailures>,
}

impl fmt::Debug for PostgresBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresBackend")
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

// ---------------------------------------------------------------------------
// Errors and conversions

/// A tokio-postgres error in a few words. Its messages never hold the
/// connection settings; a server error's detail (which may quote row
/// values) is left out.
fn describe(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return format!("{} {}: {}", db.severity(), db.code().code(), db.message());
    }
    match std::error::Error::source(e) {
        Some(source) => format!("{e}: {source}"),
        None => e.to_string(),
    }
}

fn unavailable(e: tokio_postgres::Error) -> StoreError {
    StoreError::Unavailable(format!("PostgreSQL: {}", describe(&e)))
}

fn pool_error(e: PoolError) -> StoreError {
    StoreError::Unavailable(match e {
        PoolError::Timeout(deadpool_postgres::TimeoutType::Wait) => format!(
            "PostgreSQL: every pooled connection stayed busy for {} s",
            POOL_WAIT.as_secs()
        ),
        PoolError::Timeout(_) => format!(
            "PostgreSQL: no connection within {} s",
            POOL_CREATE.as_secs()
        ),
        PoolError::Backend(e) => format!("PostgreSQL: {}", describe(&e)),
        PoolError::Closed => "PostgreSQL: the store is closed".to_string(),
        other => format!("PostgreSQL: {other}"),
    })
}

fn corrupt(id: i64, what: impl fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("token {id}: {what}"))
}

/// A u64 (epoch ms, count) as a `bigint`, saturating.
fn db_int(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// An id as a `bigint`; `None` for one that cannot be stored (so is not there).
fn db_id(id: u64) -> Option<i64> {
    i64::try_from(id).ok()
}

fn shard(id: i64) -> i16 {
    // 0..16: fits.
    id.rem_euclid(16) as i16
}

/// The columns of a [`TokenRecord`], in [`record`]'s order
/// ([`RECORD_COLUMNS`] of them).
macro_rules! record_columns {
    () => {
        "id, hash, description, user_key, user_name, created_by, created, valid_until, \
         last_accessed, scope, allowed_ips::text[] AS allowed_ips, last_accessed_from, \
         previous_hash, previous_until"
    };
}

/// How many columns [`record_columns`] names.
const RECORD_COLUMNS: usize = 14;

/// The payload of a change notification (see [`listen`]): `$node` names
/// the sending backend, `$token` the token's hash hex or `'all'`.
macro_rules! notify {
    ($node:literal, $token:literal) => {
        concat!(
            "pg_notify('tokengate_events', json_build_object(",
            "'at', (extract(epoch FROM clock_timestamp()) * 1000)::bigint, ",
            "'node', ",
            $node,
            "::text, 'token', ",
            $token,
            ")::text)"
        )
    };
}

fn record(row: &Row) -> Result<TokenRecord, StoreError> {
    let id: i64 = row.try_get(0).map_err(|e| corrupt(0, describe(&e)))?;
    let bad = |e: tokio_postgres::Error| corrupt(id, describe(&e));
    let hash: &[u8] = row.try_get(1).map_err(bad)?;
    let hash = <[u8; 32]>::try_from(hash)
        .map_err(|_| corrupt(id, format!("a hash of {} bytes", hash.len())))?;
    let scope: i16 = row.try_get(9).map_err(bad)?;
    let allowed: Vec<String> = row.try_get(10).map_err(bad)?;
    let previous_hash: Option<&[u8]> = row.try_get(12).map_err(bad)?;
    let previous_until: Option<i64> = row.try_get(13).map_err(bad)?;
    let previous = match (previous_hash, previous_until) {
        (Some(hash), Some(until)) => Some(Previous {
            hash: TokenHash(
                <[u8; 32]>::try_from(hash)
                    .map_err(|_| corrupt(id, format!("a previous hash of {} bytes", hash.len())))?,
            ),
            until: ms(until),
        }),
        _ => None,
    };
    Ok(TokenRecord {
        id: u64::try_from(id).map_err(|_| corrupt(id, "a negative id"))?,
        hash: TokenHash(hash),
        description: row.try_get(2).map_err(bad)?,
        user_key: row.try_get(3).map_err(bad)?,
        user_name: row.try_get(4).map_err(bad)?,
        created_by: row.try_get(5).map_err(bad)?,
        created: ms(row.try_get(6).map_err(bad)?),
        valid_until: ms(row.try_get(7).map_err(bad)?),
        last_accessed: ms(row.try_get(8).map_err(bad)?),
        scope: Scope::from_code(i64::from(scope))
            .ok_or_else(|| corrupt(id, format!("scope {scope}")))?,
        allowed_ips: allowed_ips(id, &allowed)?,
        last_accessed_from: row.try_get(11).map_err(bad)?,
        previous,
    })
}

/// `allowed_ips` as read (`cidr[]` as text).
fn allowed_ips(id: i64, texts: &[String]) -> Result<AllowedIps, StoreError> {
    let mut nets = Vec::with_capacity(texts.len());
    for text in texts {
        nets.push(
            AllowedIps::parse_entry(text)
                .ok_or_else(|| corrupt(id, format!("allowed_ips holds {text:?}")))?,
        );
    }
    Ok(AllowedIps::from_nets(nets))
}

/// `allowedIps` as a `cidr[]` literal for a `text` parameter.
fn cidr_array(allowed: &AllowedIps) -> String {
    format!("{{{}}}", allowed.to_strings().join(","))
}

fn ms(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// `needle` as a LIKE pattern matching any text that contains it.
fn contains_pattern(needle: &str) -> String {
    let mut pattern = String::with_capacity(needle.len() + 2);
    pattern.push('%');
    for c in needle.chars() {
        if matches!(c, '%' | '_' | '\\') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('%');
    pattern
}

// ---------------------------------------------------------------------------
// Statements

/// By the current secret, or by the previous one while a rotation keeps it.
const LOOKUP: &str = "
SELECT id, user_key, user_name, valid_until, scope, allowed_ips::text[], hash = $1, previous_until
FROM tokengate_tokens WHERE hash = $1 OR previous_hash = $1";

const GET: &str = concat!(
    "SELECT ",
    record_columns!(),
    " FROM tokengate_tokens WHERE id = $1"
);

const LIST_USER: &str = concat!(
    "SELECT ",
    record_columns!(),
    " FROM tokengate_tokens WHERE user_key = $1 ORDER BY id"
);

const SCAN_FROM: &str = concat!(
    "SELECT ",
    record_columns!(),
    " FROM tokengate_tokens WHERE id > $1 ORDER BY id LIMIT $2"
);

const COUNT: &str = "SELECT coalesce(sum(n), 0)::bigint FROM tokengate_counts";

const USER_TOTAL: &str =
    "SELECT coalesce(sum(tokens), 0)::bigint FROM tokengate_users WHERE user_key = ANY($1)";

/// Counts up the owner's row — only while under the limit ($2, 0 = none):
/// `ON CONFLICT DO UPDATE … WHERE` leaves the row as it is (but locked)
/// when the user has enough, and then nothing is inserted and no row comes
/// back. The token takes the next id; its count shard is counted up.
const INSERT: &str = "
WITH owner AS (
    INSERT INTO tokengate_users AS u (user_key, tokens) VALUES ($1, 1)
    ON CONFLICT (user_key) DO UPDATE SET tokens = u.tokens + 1
        WHERE $2::bigint = 0 OR u.tokens < $2::bigint
    RETURNING u.tokens
), token AS (
    INSERT INTO tokengate_tokens
        (id, hash, description, user_key, user_name, created_by, created, valid_until, scope,
         allowed_ips)
    SELECT nextval('tokengate_token_ids'), $3, $4, $1, $5, $6, $7, $8, $9, $10::text::cidr[]
    FROM owner
    RETURNING id
), counted AS (
    UPDATE tokengate_counts AS c SET n = c.n + 1 FROM token WHERE c.shard = token.id % 16
)
SELECT id FROM token";

/// Deletes a token and counts down its owner and its shard (the shard
/// after the owner: the lock order). Announced to the other gateways.
const DELETE: &str = concat!(
    "
WITH gone AS (
    DELETE FROM tokengate_tokens WHERE id = $1 RETURNING ",
    record_columns!(),
    "
), owner AS (
    UPDATE tokengate_users AS u SET tokens = u.tokens - 1
    FROM gone WHERE u.user_key = gone.user_key
    RETURNING gone.id
), counted AS (
    UPDATE tokengate_counts AS c SET n = c.n - 1 FROM owner WHERE c.shard = owner.id % 16
)
SELECT gone.*, ",
    notify!("$2", "encode(gone.hash, 'hex')"),
    ", CASE WHEN gone.previous_hash IS NULL THEN NULL ELSE ",
    notify!("$2", "encode(gone.previous_hash, 'hex')"),
    " END FROM gone"
);

const UPDATE_DESCRIPTION: &str = concat!(
    "
WITH changed AS (
    UPDATE tokengate_tokens SET description = $2 WHERE id = $1 RETURNING ",
    record_columns!(),
    "
)
SELECT changed.*, ",
    notify!("$3", "encode(changed.hash, 'hex')"),
    " FROM changed"
);

/// A user's tokens, locked in id order, then deleted.
const DELETE_USER_TOKENS: &str = "
DELETE FROM tokengate_tokens WHERE id = ANY(ARRAY(
    SELECT id FROM tokengate_tokens WHERE user_key = $1 ORDER BY id FOR UPDATE))
RETURNING id";

const COUNT_DOWN_USER: &str = "UPDATE tokengate_users SET tokens = tokens - $2 WHERE user_key = $1";

/// Adds deltas to count shards, locking them in shard order.
const ADJUST_COUNTS: &str = "
UPDATE tokengate_counts AS c SET n = c.n + d.delta
FROM (SELECT l.shard, d.delta FROM tokengate_counts AS l
      JOIN unnest($1::smallint[], $2::bigint[]) AS d(shard, delta) ON d.shard = l.shard
      ORDER BY l.shard FOR UPDATE OF l) AS d
WHERE c.shard = d.shard";

const NOTIFY_ALL: &str = concat!("SELECT ", notify!("$1", "'all'"));

/// A new secret for a token: the current one becomes the previous one
/// while `$3` (its grace end) is given, else goes; an earlier previous one
/// goes either way. Both replaced secrets are announced.
const ROTATE: &str = concat!(
    "
WITH prior AS (
    SELECT id, hash, previous_hash FROM tokengate_tokens WHERE id = $1 FOR UPDATE
), changed AS (
    UPDATE tokengate_tokens AS t SET hash = $2,
        previous_hash = CASE WHEN $3::bigint IS NULL THEN NULL ELSE prior.hash END,
        previous_until = $3::bigint
    FROM prior WHERE t.id = prior.id
    RETURNING ",
    "t.id, t.hash, t.description, t.user_key, t.user_name, t.created_by, t.created, \
     t.valid_until, t.last_accessed, t.scope, t.allowed_ips::text[] AS allowed_ips, \
     t.last_accessed_from, t.previous_hash, t.previous_until, \
     prior.hash AS replaced, prior.previous_hash AS replaced_previous",
    "
)
SELECT changed.*, ",
    notify!("$4", "encode(changed.replaced, 'hex')"),
    ", CASE WHEN changed.replaced_previous IS NULL THEN NULL ELSE ",
    notify!("$4", "encode(changed.replaced_previous, 'hex')"),
    " END FROM changed"
);

/// Claims a notice: a new row, or one whose holder's lease ran out and
/// that was never sent. Nothing for a token that does not exist.
const CLAIM_NOTICE: &str = "
INSERT INTO tokengate_notices AS n (token_id, notice, lease_until)
SELECT $1, $2, $4 WHERE EXISTS (SELECT 1 FROM tokengate_tokens WHERE id = $1)
ON CONFLICT (token_id, notice) DO UPDATE SET lease_until = excluded.lease_until
    WHERE NOT n.sent AND n.lease_until <= $3
RETURNING 1";

const NOTICE_SENT: &str =
    "UPDATE tokengate_notices SET sent = true WHERE token_id = $1 AND notice = $2";

const NOTICE_RELEASED: &str =
    "DELETE FROM tokengate_notices WHERE token_id = $1 AND notice = $2 AND NOT sent";

/// Raises `lastAccessed`, with the address of the use that wins. The rows
/// are locked in id order first: two gateways recording the same popular
/// tokens at once then wait for each other instead of deadlocking.
const RECORD_ACCESS: &str = "
UPDATE tokengate_tokens AS t SET last_accessed = GREATEST(t.last_accessed, v.at),
    last_accessed_from = CASE WHEN v.at > t.last_accessed THEN v.from_ip
                              ELSE t.last_accessed_from END
FROM (SELECT l.id, v.at, v.from_ip FROM tokengate_tokens AS l
      JOIN unnest($1::bigint[], $2::bigint[], $3::inet[]) AS v(id, at, from_ip) ON v.id = l.id
      WHERE l.last_accessed < v.at
      ORDER BY l.id FOR UPDATE OF l) AS v
WHERE t.id = v.id";

/// The id `nextval` hands out next.
const NEXT_ID: &str =
    "SELECT CASE WHEN is_called THEN last_value + 1 ELSE last_value END FROM tokengate_token_ids";

/// Every insert holds a lock on the table that this conflicts with, from
/// before its `nextval` until it commits: the sequence stands still while
/// it is read and raised.
const LOCK_INSERTS: &str = "LOCK TABLE tokengate_tokens IN SHARE ROW EXCLUSIVE MODE";

const RAISE_NEXT_ID: &str = "
SELECT setval('tokengate_token_ids', $1, false) FROM tokengate_token_ids
WHERE CASE WHEN is_called THEN last_value + 1 ELSE last_value END < $1";

/// Inserts what is new and counts it for its owners and shards.
const RESTORE: &str = "
WITH added AS (
    INSERT INTO tokengate_tokens (id, hash, description, user_key, user_name, created_by,
                                  created, valid_until, last_accessed, scope, allowed_ips,
                                  last_accessed_from, previous_hash, previous_until)
    SELECT r.id, r.hash, r.description, r.user_key, r.user_name, r.created_by, r.created,
           r.valid_until, r.last_accessed, r.scope, r.allowed_ips::cidr[], r.last_accessed_from,
           r.previous_hash, r.previous_until
    FROM unnest($1::bigint[], $2::bytea[], $3::text[], $4::text[], $5::text[],
                $6::text[], $7::bigint[], $8::bigint[], $9::bigint[], $10::smallint[],
                $11::text[], $12::inet[], $13::bytea[], $14::bigint[])
         AS r(id, hash, description, user_key, user_name, created_by, created, valid_until,
              last_accessed, scope, allowed_ips, last_accessed_from, previous_hash,
              previous_until)
    ON CONFLICT DO NOTHING
    RETURNING id, user_key
), owners AS (
    INSERT INTO tokengate_users AS u (user_key, tokens)
    SELECT user_key, count(*) FROM added GROUP BY user_key
    ON CONFLICT (user_key) DO UPDATE SET tokens = u.tokens + excluded.tokens
), counted AS (
    UPDATE tokengate_counts AS c SET n = c.n + a.n
    FROM (SELECT id % 16 AS shard, count(*) AS n FROM added GROUP BY 1) AS a
    WHERE c.shard = a.shard
)
SELECT count(*), coalesce(max(id), 0) FROM added";

const HEALTH: &str = "SELECT pg_is_in_recovery(), current_setting('transaction_read_only') = 'on'";

// ---------------------------------------------------------------------------

impl PostgresBackend {
    /// Connects, brings the schema up to date (or refuses a newer one) and
    /// sets up the pool. Call [`Backend::watch`] to hear about other
    /// gateways' changes.
    pub async fn open(settings: &PostgresSettings) -> Result<PostgresBackend, StoreError> {
        let target = Target::new(settings)?;
        schema::migrate(&target).await?;
        let manager = Manager::from_config(
            target.config().clone(),
            target.tls().clone(),
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(settings.pool_size.max(1))
            .wait_timeout(Some(POOL_WAIT))
            .create_timeout(Some(POOL_CREATE))
            .recycle_timeout(Some(POOL_CREATE))
            .runtime(Runtime::Tokio1)
            .build()
            .map_err(|e| StoreError::Unavailable(format!("PostgreSQL connection pool: {e}")))?;
        let node: [u8; 8] = rand::random();
        let node: String = node.iter().map(|b| format!("{b:02x}")).collect();
        Ok(PostgresBackend {
            failures: Arc::new(PgFailures::new(pool.clone())),
            pool,
            target,
            node: node.into(),
            runtime: tokio::runtime::Handle::current(),
            listener: Mutex::new(None),
        })
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        self.pool.get().await.map_err(pool_error)
    }

    async fn query(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, StoreError> {
        let client = self.client().await?;
        let statement = client.prepare_cached(sql).await.map_err(unavailable)?;
        client.query(&statement, params).await.map_err(unavailable)
    }

    async fn query_opt(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<Row>, StoreError> {
        let client = self.client().await?;
        let statement = client.prepare_cached(sql).await.map_err(unavailable)?;
        client
            .query_opt(&statement, params)
            .await
            .map_err(unavailable)
    }

    async fn query_one(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Row, StoreError> {
        let client = self.client().await?;
        let statement = client.prepare_cached(sql).await.map_err(unavailable)?;
        client
            .query_one(&statement, params)
            .await
            .map_err(unavailable)
    }

    fn listener(&self) -> std::sync::MutexGuard<'_, Option<Listener>> {
        self.listener.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Why the database cannot serve reads and writes, if it cannot.
    async fn database_problem(&self) -> Option<String> {
        let checked = tokio::time::timeout(HEALTH_TIMEOUT, self.query_one(HEALTH, &[])).await;
        match checked {
            Ok(Ok(row)) => {
                let (standby, read_only): (bool, bool) = (row.get(0), row.get(1));
                if standby {
                    Some("the server is a standby (read-only)".to_string())
                } else if read_only {
                    Some("the session is read-only (default_transaction_read_only)".to_string())
                } else {
                    None
                }
            }
            Ok(Err(StoreError::Unavailable(reason))) => Some(reason),
            Ok(Err(e)) => Some(e.to_string()),
            Err(_) => Some(format!("no answer within {} s", HEALTH_TIMEOUT.as_secs())),
        }
    }

    /// Raises the sequence inside `tx`, which holds [`LOCK_INSERTS`].
    async fn raise_in(
        tx: &deadpool_postgres::Transaction<'_>,
        next: u64,
    ) -> Result<(), StoreError> {
        let statement = tx
            .prepare_cached(RAISE_NEXT_ID)
            .await
            .map_err(unavailable)?;
        tx.query(&statement, &[&db_int(next)])
            .await
            .map_err(unavailable)?;
        Ok(())
    }
}

impl Drop for PostgresBackend {
    fn drop(&mut self) {
        if let Some(listener) = self.listener().take() {
            listener.cancel();
        }
    }
}

#[async_trait]
impl Backend for PostgresBackend {
    fn kind(&self) -> &'static str {
        "postgres"
    }

    async fn lookup(&self, hash: &TokenHash) -> Result<Option<FoundEntry>, StoreError> {
        let Some(row) = self.query_opt(LOOKUP, &[&&hash.0[..]]).await? else {
            return Ok(None);
        };
        let id: i64 = row.get(0);
        let scope: i16 = row.get(4);
        let allowed: Vec<String> = row.get(5);
        let current: bool = row.get(6);
        let previous_until: Option<i64> = row.get(7);
        let valid_until = ms(row.get(3));
        Ok(Some(FoundEntry {
            id: u64::try_from(id).map_err(|_| corrupt(id, "a negative id"))?,
            user_key: row.get(1),
            user_name: row.get(2),
            // Found by the previous secret: it works until its grace ends.
            valid_until: if current {
                valid_until
            } else {
                earlier_expiry(valid_until, previous_until.map_or(1, ms).max(1))
            },
            scope: Scope::from_code(i64::from(scope))
                .ok_or_else(|| corrupt(id, format!("scope {scope}")))?,
            allowed: allowed_ips(id, &allowed)?,
            superseded: !current,
        }))
    }

    async fn get(&self, id: u64) -> Result<Option<TokenRecord>, StoreError> {
        let Some(id) = db_id(id) else {
            return Ok(None);
        };
        self.query_opt(GET, &[&id])
            .await?
            .as_ref()
            .map(record)
            .transpose()
    }

    async fn list_user(&self, user_key: &str) -> Result<Vec<TokenRecord>, StoreError> {
        self.query(LIST_USER, &[&user_key])
            .await?
            .iter()
            .map(record)
            .collect()
    }

    async fn filter(&self, filter: &Filter, offset: u64, limit: u64) -> Result<Page, StoreError> {
        let not_after = filter.not_valid_after.map(db_int);
        let mut keys: Vec<&str> = filter.user_keys.iter().map(String::as_str).collect();
        keys.sort_unstable();
        keys.dedup();
        let pattern = filter.description.as_deref().map(contains_pattern);
        let scope = filter.scope.map(|s| i16::from(s.code()));

        let mut conditions: Vec<String> = Vec::new();
        let mut params: Vec<&(dyn ToSql + Sync)> = Vec::new();
        if let Some(ms) = &not_after {
            params.push(ms);
            conditions.push(format!(
                "valid_until > 0 AND valid_until <= ${}",
                params.len()
            ));
        }
        match keys.as_slice() {
            [] => {}
            // One user: the (user_key, id) index gives the order.
            [one] => {
                params.push(one);
                conditions.push(format!("user_key = ${}", params.len()));
            }
            _ => {
                params.push(&keys);
                conditions.push(format!("user_key = ANY(${})", params.len()));
            }
        }
        if let Some(pattern) = &pattern {
            params.push(pattern);
            conditions.push(format!(
                "lower(description) LIKE ${} ESCAPE '\\'",
                params.len()
            ));
        }
        if let Some(scope) = &scope {
            params.push(scope);
            conditions.push(format!("scope = ${}", params.len()));
        }
        match filter.allowed_ips_set {
            Some(true) => conditions.push("cardinality(allowed_ips) > 0".into()),
            Some(false) => conditions.push("cardinality(allowed_ips) = 0".into()),
            None => {}
        }
        let condition = if conditions.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", conditions.join(" AND "))
        };

        let (offset, limit) = (db_int(offset), db_int(limit));
        let page_sql = |extra: &str| {
            format!(
                concat!(
                    "SELECT ",
                    record_columns!(),
                    "{} FROM tokengate_tokens{} ORDER BY id LIMIT ${} OFFSET ${}"
                ),
                extra,
                condition,
                params.len() + 1,
                params.len() + 2
            )
        };
        let mut with_page = params.clone();
        with_page.push(&limit);
        with_page.push(&offset);
        let client = self.client().await?;

        if pattern.is_some() && limit > 0 {
            // A description filter reads every row: once, counting the
            // matches on the way. A page past the end has no row to carry
            // the total; it is counted below.
            let statement = client
                .prepare_cached(&page_sql(", count(*) OVER ()"))
                .await
                .map_err(unavailable)?;
            let rows = client
                .query(&statement, &with_page)
                .await
                .map_err(unavailable)?;
            if let Some(first) = rows.first() {
                let total: i64 = first.try_get(RECORD_COLUMNS).map_err(unavailable)?;
                return Ok(Page {
                    items: rows.iter().map(record).collect::<Result<_, _>>()?,
                    total: ms(total),
                });
            }
        }

        // The total, without counting rows when a count is kept.
        let only_users = not_after.is_none()
            && pattern.is_none()
            && scope.is_none()
            && filter.allowed_ips_set.is_none();
        let total = async {
            let row = if conditions.is_empty() {
                let statement = client.prepare_cached(COUNT).await?;
                client.query_one(&statement, &[]).await?
            } else if only_users {
                let statement = client.prepare_cached(USER_TOTAL).await?;
                client.query_one(&statement, &[&keys]).await?
            } else {
                let sql = format!("SELECT count(*) FROM tokengate_tokens{condition}");
                let statement = client.prepare_cached(&sql).await?;
                client.query_one(&statement, &params).await?
            };
            Ok::<i64, tokio_postgres::Error>(row.get(0))
        };
        let items = async {
            if limit == 0 || pattern.is_some() {
                return Ok(Vec::new());
            }
            let statement = client.prepare_cached(&page_sql("")).await?;
            client.query(&statement, &with_page).await
        };
        // Both on one connection, sent without waiting for each other.
        let (total, rows) = futures_util::future::try_join(total, items)
            .await
            .map_err(unavailable)?;
        Ok(Page {
            items: rows.iter().map(record).collect::<Result<_, _>>()?,
            total: ms(total),
        })
    }

    async fn insert(
        &self,
        token: NewToken,
        per_user_limit: u32,
    ) -> Result<TokenRecord, InsertError> {
        let client = self.client().await?;
        let statement = client.prepare_cached(INSERT).await.map_err(unavailable)?;
        let row = client
            .query_opt(
                &statement,
                &[
                    &token.user_key,
                    &i64::from(per_user_limit),
                    &&token.hash.0[..],
                    &token.description,
                    &token.user_name,
                    &token.created_by,
                    &db_int(token.created),
                    &db_int(token.valid_until),
                    &i16::from(token.scope.code()),
                    &cidr_array(&token.allowed_ips),
                ],
            )
            .await
            .map_err(|e| match e.code() {
                // A hash that is there already (as in sled: not expected
                // of a random token).
                Some(&SqlState::UNIQUE_VIOLATION) => {
                    StoreError::Corrupt("token hash or id already present".into())
                }
                _ => unavailable(e),
            })?;
        let Some(row) = row else {
            return Err(InsertError::LimitReached(per_user_limit));
        };
        let id: i64 = row.get(0);
        Ok(TokenRecord {
            id: u64::try_from(id).map_err(|_| corrupt(id, "a negative id"))?,
            hash: token.hash,
            description: token.description,
            user_key: token.user_key,
            user_name: token.user_name,
            created_by: token.created_by,
            created: token.created,
            valid_until: token.valid_until,
            last_accessed: 0,
            scope: token.scope,
            allowed_ips: token.allowed_ips,
            last_accessed_from: None,
            previous: None,
        })
    }

    async fn restore(&self, records: Vec<TokenRecord>) -> Result<u64, StoreError> {
        if records.is_empty() {
            return Ok(0);
        }
        if let Some(r) = records.iter().find(|r| r.id == 0 || db_id(r.id).is_none()) {
            return Err(StoreError::Unavailable(format!(
                "token id {} cannot be stored (1 to {})",
                r.id,
                i64::MAX
            )));
        }
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(unavailable)?;
        // Alone among writers: nothing to order locks against, and the
        // sequence can be raised safely below.
        tx.batch_execute(LOCK_INSERTS).await.map_err(unavailable)?;
        let statement = tx.prepare_cached(RESTORE).await.map_err(unavailable)?;
        let mut added = 0u64;
        let mut max_id = 0i64;
        for chunk in records.chunks(RESTORE_CHUNK) {
            let ids: Vec<i64> = chunk.iter().map(|r| db_int(r.id)).collect();
            let hashes: Vec<&[u8]> = chunk.iter().map(|r| &r.hash.0[..]).collect();
            let descriptions: Vec<&str> = chunk.iter().map(|r| r.description.as_str()).collect();
            let user_keys: Vec<&str> = chunk.iter().map(|r| r.user_key.as_str()).collect();
            let user_names: Vec<&str> = chunk.iter().map(|r| r.user_name.as_str()).collect();
            let created_by: Vec<&str> = chunk.iter().map(|r| r.created_by.as_str()).collect();
            let created: Vec<i64> = chunk.iter().map(|r| db_int(r.created)).collect();
            let valid_until: Vec<i64> = chunk.iter().map(|r| db_int(r.valid_until)).collect();
            let accessed: Vec<i64> = chunk.iter().map(|r| db_int(r.last_accessed)).collect();
            let scopes: Vec<i16> = chunk.iter().map(|r| i16::from(r.scope.code())).collect();
            let allowed: Vec<String> = chunk.iter().map(|r| cidr_array(&r.allowed_ips)).collect();
            let from: Vec<Option<std::net::IpAddr>> =
                chunk.iter().map(|r| r.last_accessed_from).collect();
            let previous_hashes: Vec<Option<&[u8]>> = chunk
                .iter()
                .map(|r| r.previous.as_ref().map(|p| &p.hash.0[..]))
                .collect();
            let previous_until: Vec<Option<i64>> = chunk
                .iter()
                .map(|r| r.previous.map(|p| db_int(p.until)))
                .collect();
            let row = tx
                .query_one(
                    &statement,
                    &[
                        &ids,
                        &hashes,
                        &descriptions,
                        &user_keys,
                        &user_names,
                        &created_by,
                        &created,
                        &valid_until,
                        &accessed,
                        &scopes,
                        &allowed,
                        &from,
                        &previous_hashes,
                        &previous_until,
                    ],
                )
                .await
                .map_err(unavailable)?;
            added += ms(row.get(0));
            max_id = max_id.max(ids.iter().copied().max().unwrap_or(0));
        }
        // Past every id in the input, new or not: an id that was deleted
        // after the export is not handed out again either.
        Self::raise_in(&tx, ms(max_id).saturating_add(1)).await?;
        tx.commit().await.map_err(unavailable)?;
        Ok(added)
    }

    async fn update_description(
        &self,
        id: u64,
        description: &str,
    ) -> Result<Option<TokenRecord>, StoreError> {
        let Some(id) = db_id(id) else {
            return Ok(None);
        };
        let node: &str = &self.node;
        self.query_opt(UPDATE_DESCRIPTION, &[&id, &description, &node])
            .await?
            .as_ref()
            .map(record)
            .transpose()
    }

    async fn rotate(
        &self,
        id: u64,
        new_hash: TokenHash,
        previous_until: Option<u64>,
    ) -> Result<Option<Rotated>, StoreError> {
        let Some(id) = db_id(id) else {
            return Ok(None);
        };
        let node: &str = &self.node;
        let until = previous_until.map(db_int);
        let client = self.client().await?;
        let statement = client.prepare_cached(ROTATE).await.map_err(unavailable)?;
        let row = client
            .query_opt(&statement, &[&id, &&new_hash.0[..], &until, &node])
            .await
            .map_err(|e| match e.code() {
                Some(&SqlState::UNIQUE_VIOLATION) => {
                    StoreError::Corrupt("token hash already present".into())
                }
                _ => unavailable(e),
            })?;
        let Some(row) = row else {
            return Ok(None);
        };
        let hash_at = |i: usize| -> Result<Option<TokenHash>, StoreError> {
            let bytes: Option<&[u8]> = row.try_get(i).map_err(unavailable)?;
            Ok(bytes
                .and_then(|b| <[u8; 32]>::try_from(b).ok())
                .map(TokenHash))
        };
        let replaced = [hash_at(RECORD_COLUMNS)?, hash_at(RECORD_COLUMNS + 1)?]
            .into_iter()
            .flatten()
            .collect();
        Ok(Some(Rotated {
            record: record(&row)?,
            replaced,
        }))
    }

    async fn claim_notice(
        &self,
        id: u64,
        notice: &str,
        now_ms: u64,
        lease_until: u64,
    ) -> Result<bool, StoreError> {
        let Some(id) = db_id(id) else {
            return Ok(false);
        };
        let client = self.client().await?;
        let statement = client
            .prepare_cached(CLAIM_NOTICE)
            .await
            .map_err(unavailable)?;
        let claimed = client
            .query_opt(
                &statement,
                &[&id, &notice, &db_int(now_ms), &db_int(lease_until)],
            )
            .await;
        match claimed {
            Ok(row) => Ok(row.is_some()),
            // The token was deleted meanwhile: nothing to send.
            Err(e) if e.code() == Some(&SqlState::FOREIGN_KEY_VIOLATION) => Ok(false),
            Err(e) => Err(unavailable(e)),
        }
    }

    async fn finish_notice(&self, id: u64, notice: &str, sent: bool) -> Result<(), StoreError> {
        let Some(id) = db_id(id) else {
            return Ok(());
        };
        let sql = if sent { NOTICE_SENT } else { NOTICE_RELEASED };
        self.query(sql, &[&id, &notice]).await.map(drop)
    }

    async fn delete(&self, id: u64) -> Result<Option<TokenRecord>, StoreError> {
        let Some(id) = db_id(id) else {
            return Ok(None);
        };
        let node: &str = &self.node;
        self.query_opt(DELETE, &[&id, &node])
            .await?
            .as_ref()
            .map(record)
            .transpose()
    }

    async fn delete_user(&self, user_key: &str) -> Result<u64, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(unavailable)?;
        let statement = tx
            .prepare_cached(DELETE_USER_TOKENS)
            .await
            .map_err(unavailable)?;
        let ids: Vec<i64> = tx
            .query(&statement, &[&user_key])
            .await
            .map_err(unavailable)?
            .iter()
            .map(|row| row.get(0))
            .collect();
        if ids.is_empty() {
            return Ok(0);
        }
        let n = ids.len() as i64;
        let statement = tx
            .prepare_cached(COUNT_DOWN_USER)
            .await
            .map_err(unavailable)?;
        tx.execute(&statement, &[&user_key, &n])
            .await
            .map_err(unavailable)?;
        let mut per_shard = [0i64; 16];
        for &id in &ids {
            per_shard[shard(id) as usize] -= 1;
        }
        let (shards, deltas): (Vec<i16>, Vec<i64>) = (0i16..)
            .zip(per_shard)
            .filter(|&(_, delta)| delta != 0)
            .unzip();
        let statement = tx
            .prepare_cached(ADJUST_COUNTS)
            .await
            .map_err(unavailable)?;
        tx.execute(&statement, &[&shards, &deltas])
            .await
            .map_err(unavailable)?;
        let node: &str = &self.node;
        let statement = tx.prepare_cached(NOTIFY_ALL).await.map_err(unavailable)?;
        tx.query(&statement, &[&node]).await.map_err(unavailable)?;
        tx.commit().await.map_err(unavailable)?;
        Ok(ids.len() as u64)
    }

    async fn record_access(&self, mut batch: Vec<Access>) -> Result<(), StoreError> {
        // One use per id, the latest; ids that cannot exist are dropped.
        batch.retain(|a| db_id(a.id).is_some());
        batch.sort_unstable_by_key(|a| (a.id, a.at));
        batch.reverse();
        batch.dedup_by_key(|a| a.id);
        batch.reverse();
        if batch.is_empty() {
            return Ok(());
        }
        let client = self.client().await?;
        let statement = client
            .prepare_cached(RECORD_ACCESS)
            .await
            .map_err(unavailable)?;
        for chunk in batch.chunks(ACCESS_CHUNK) {
            let ids: Vec<i64> = chunk.iter().map(|a| db_int(a.id)).collect();
            let times: Vec<i64> = chunk.iter().map(|a| db_int(a.at)).collect();
            let from: Vec<std::net::IpAddr> = chunk.iter().map(|a| a.from).collect();
            client
                .execute(&statement, &[&ids, &times, &from])
                .await
                .map_err(unavailable)?;
        }
        Ok(())
    }

    async fn count(&self) -> Result<u64, StoreError> {
        let row = self.query_one(COUNT, &[]).await?;
        Ok(ms(row.get(0)))
    }

    async fn next_id(&self) -> Result<u64, StoreError> {
        let row = self.query_one(NEXT_ID, &[]).await?;
        Ok(ms(row.get(0)).max(1))
    }

    async fn raise_next_id(&self, next: u64) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(unavailable)?;
        tx.batch_execute(LOCK_INSERTS).await.map_err(unavailable)?;
        Self::raise_in(&tx, next).await?;
        tx.commit().await.map_err(unavailable)
    }

    async fn scan_from(&self, after: u64, limit: usize) -> Result<Vec<TokenRecord>, StoreError> {
        let Some(after) = db_id(after) else {
            return Ok(Vec::new());
        };
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.query(SCAN_FROM, &[&after, &limit])
            .await?
            .iter()
            .map(record)
            .collect()
    }

    async fn health(&self) -> Health {
        let database = self
            .database_problem()
            .await
            .unwrap_or_else(|| "ok".to_string());
        let notifications = match self.listener().as_ref() {
            Some(listener) => listener.state(),
            None => "not listening: not started".to_string(),
        };
        Health {
            parts: vec![("database", database), ("notifications", notifications)],
        }
    }

    async fn close(&self) -> Result<(), StoreError> {
        let listener = self.listener().take();
        if let Some(listener) = listener {
            listener.stop().await;
        }
        self.pool.close();
        Ok(())
    }

    fn watch(&self, cache: Arc<HotCache>) {
        let mut slot = self.listener();
        if let Some(previous) = slot.take() {
            previous.cancel();
        }
        *slot = Some(Listener::start(
            &self.runtime,
            self.target.clone(),
            self.node.clone(),
            cache,
        ));
    }

    fn shared_failures(&self) -> Option<Arc<dyn SharedFailures>> {
        Some(self.failures.clone())
    }
}
