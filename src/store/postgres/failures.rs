//! Failed logins counted in the database, for every gateway at once: one
//! row per (user name in lower case, client address as throttling keys it)
//! in `tokengate_failed_logins`.
//!
//! The rules are those of the in-memory count (`auth::lockout`): a lock
//! holds while `locked_until` > now (`i64::MAX`: until cleared); a failure
//! while locked changes nothing; a lock that ran out starts the count afresh
//! at 1; the failure that reaches `max_attempts` locks. Each failure is one
//! atomic statement, so two gateways counting the same user never lose a
//! failure or lock twice.
//!
//! The one difference: a failure while locked does not touch the row (the
//! in-memory count notes its time, which matters there only for choosing
//! what to forget when full; a table is not full).

use std::net::IpAddr;

use async_trait::async_trait;
use deadpool_postgres::Pool;

use super::{db_int, pool_error, unavailable};
use crate::store::StoreError;
use crate::store::backend::{FailureOutcome, Locked, SharedFailures};

/// `locked_until` of a lock that lasts until an admin clears it.
const UNTIL_CLEARED: i64 = i64::MAX;

/// Counts a failure unless the pair is locked. Returns the row as it is
/// now: `counted` true when this failure was counted, false (and the row
/// from the statement's snapshot) when it is locked.
///
/// `ON CONFLICT DO UPDATE … WHERE` leaves a locked row as it is; the row
/// is then read for the lock's end. That read sees the statement's snapshot,
/// which may predate a lock another gateway committed while this statement
/// waited for it; then it shows no current lock and the statement is run
/// again (see [`PgFailures::failure`]).
const FAILURE: &str = "
WITH counted AS (
    INSERT INTO tokengate_failed_logins AS f (user_name, addr, failures, locked_until, last_failure)
    VALUES ($1, $2, 1, CASE WHEN 1 >= $3 THEN $4::bigint END, $5)
    ON CONFLICT (user_name, addr) DO UPDATE SET
        failures = CASE WHEN f.locked_until IS NULL THEN f.failures + 1 ELSE 1 END,
        locked_until = CASE
            WHEN (CASE WHEN f.locked_until IS NULL THEN f.failures + 1 ELSE 1 END) >= $3
            THEN $4::bigint
        END,
        last_failure = $5
    WHERE f.locked_until IS NULL OR f.locked_until <= $5
    RETURNING true AS counted, failures, locked_until
)
SELECT counted, failures, locked_until FROM counted
UNION ALL
SELECT false, failures, locked_until FROM tokengate_failed_logins
WHERE user_name = $1 AND addr = $2 AND NOT EXISTS (SELECT 1 FROM counted)";

pub(super) struct PgFailures {
    pool: Pool,
}

impl PgFailures {
    pub(super) fn new(pool: Pool) -> PgFailures {
        PgFailures { pool }
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        self.pool.get().await.map_err(pool_error)
    }
}

/// A time as stored; below [`UNTIL_CLEARED`], which is later than any time.
fn at(ms: u64) -> i64 {
    db_int(ms).min(UNTIL_CLEARED - 1)
}

fn locked(until: i64) -> Locked {
    Locked {
        until: (until != UNTIL_CLEARED).then(|| u64::try_from(until).unwrap_or(0)),
    }
}

#[async_trait]
impl SharedFailures for PgFailures {
    async fn locked(
        &self,
        user: &str,
        addr: IpAddr,
        now_ms: u64,
    ) -> Result<Option<Locked>, StoreError> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(
                "SELECT locked_until FROM tokengate_failed_logins
                 WHERE user_name = $1 AND addr = $2 AND locked_until > $3",
            )
            .await
            .map_err(unavailable)?;
        let row = client
            .query_opt(&statement, &[&user.to_lowercase(), &addr, &at(now_ms)])
            .await
            .map_err(unavailable)?;
        Ok(row.map(|r| locked(r.get(0))))
    }

    async fn failure(
        &self,
        user: &str,
        addr: IpAddr,
        max_attempts: u32,
        lockout_seconds: u64,
        now_ms: u64,
    ) -> Result<FailureOutcome, StoreError> {
        if max_attempts == 0 {
            return Ok(FailureOutcome::Ignored);
        }
        let now = at(now_ms);
        let until = if lockout_seconds == 0 {
            UNTIL_CLEARED
        } else {
            // A finite lock stays finite, however long.
            at(now_ms.saturating_add(lockout_seconds.saturating_mul(1000)))
        };
        let max = i32::try_from(max_attempts).unwrap_or(i32::MAX);
        let user = user.to_lowercase();
        let client = self.client().await?;
        let statement = client.prepare_cached(FAILURE).await.map_err(unavailable)?;
        // Twice at most in practice: a retry sees the lock that made the
        // first attempt's snapshot stale.
        for _ in 0..5 {
            let row = client
                .query_opt(&statement, &[&user, &addr, &max, &until, &now])
                .await
                .map_err(unavailable)?;
            let Some(row) = row else { continue };
            let counted: bool = row.get(0);
            let failures: i32 = row.get(1);
            let locked_until: Option<i64> = row.get(2);
            return Ok(match (counted, locked_until) {
                (true, Some(t)) => FailureOutcome::LockedNow(locked(t)),
                (true, None) => FailureOutcome::Counted(u32::try_from(failures).unwrap_or(0)),
                (false, Some(t)) if t > now => FailureOutcome::StillLocked(locked(t)),
                (false, _) => continue,
            });
        }
        Err(StoreError::Unavailable(
            "a failed login could not be counted: the row kept changing".into(),
        ))
    }

    async fn success(&self, user: &str, addr: IpAddr, now_ms: u64) -> Result<(), StoreError> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(
                "DELETE FROM tokengate_failed_logins
                 WHERE user_name = $1 AND addr = $2
                   AND (locked_until IS NULL OR locked_until <= $3)",
            )
            .await
            .map_err(unavailable)?;
        client
            .execute(&statement, &[&user.to_lowercase(), &addr, &at(now_ms)])
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn clear(&self, user: &str) -> Result<bool, StoreError> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached("DELETE FROM tokengate_failed_logins WHERE user_name = $1")
            .await
            .map_err(unavailable)?;
        let n = client
            .execute(&statement, &[&user.to_lowercase()])
            .await
            .map_err(unavailable)?;
        Ok(n > 0)
    }

    async fn sweep(&self, now_ms: u64, counter_ttl_ms: u64) -> Result<(), StoreError> {
        let client = self.client().await?;
        // `$1 - last_failure` is negative for a failure stamped ahead of
        // this gateway's clock: kept, as in memory.
        let statement = client
            .prepare_cached(
                "DELETE FROM tokengate_failed_logins
                 WHERE (locked_until IS NOT NULL AND locked_until <= $1)
                    OR (locked_until IS NULL AND $1 - last_failure >= $2)",
            )
            .await
            .map_err(unavailable)?;
        client
            .execute(&statement, &[&at(now_ms), &db_int(counter_ttl_ms)])
            .await
            .map_err(unavailable)?;
        Ok(())
    }
}
