//! The storage engine seam: what a backend (sled, embedded; PostgreSQL,
//! shared by several gateways) must do.
//!
//! Every call is asynchronous: a networked engine answers over a connection
//! pool, and the token hot path must never wait for it on a worker's event
//! loop. The hot path reads tokens in use from [`super::HotCache`] and calls
//! the backend only on a miss.
//!
//! Every write is durable when it returns `Ok` (sled: after a flush, shared
//! by concurrent writers; PostgreSQL: after commit), and a write that returns
//! `Err` left nothing behind that anybody could use.

use std::net::IpAddr;
use std::sync::Arc;

use async_trait::async_trait;

use super::{Filter, FoundEntry, HotCache, InsertError, NewToken, Page, StoreError, TokenRecord};
use crate::token::TokenHash;

/// A use of a token, for `lastAccessed` and `lastAccessedFrom`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Access {
    pub id: u64,
    /// Epoch milliseconds.
    pub at: u64,
    /// The client's address.
    pub from: IpAddr,
}

/// A token after a rotation, and the secrets whose cached entries must go
/// (the one replaced, and the one an earlier rotation had kept for its grace).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rotated {
    pub record: TokenRecord,
    pub replaced: Vec<TokenHash>,
}

/// How a backend is doing, for `/readyz`: each part is `"ok"` or why not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    /// `store` (sled) or `database` (PostgreSQL) and its state.
    pub parts: Vec<(&'static str, String)>,
}

impl Health {
    pub fn ok(part: &'static str) -> Health {
        Health {
            parts: vec![(part, "ok".to_string())],
        }
    }

    pub fn is_ok(&self) -> bool {
        self.parts.iter().all(|(_, state)| state == "ok")
    }
}

#[async_trait]
pub trait Backend: Send + Sync + 'static {
    /// `"sled"` or `"postgres"`, for logs.
    fn kind(&self) -> &'static str;

    async fn lookup(&self, hash: &TokenHash) -> Result<Option<FoundEntry>, StoreError>;
    async fn get(&self, id: u64) -> Result<Option<TokenRecord>, StoreError>;
    /// One user's tokens by id ascending.
    async fn list_user(&self, user_key: &str) -> Result<Vec<TokenRecord>, StoreError>;
    /// One page of the tokens matching `filter`, by id ascending, and how
    /// many match in all.
    async fn filter(&self, filter: &Filter, offset: u64, limit: u64) -> Result<Page, StoreError>;
    /// Inserts with the next id (increasing, never reused); refuses when the
    /// owner already has `per_user_limit` tokens (0 = no limit), checked
    /// atomically. Durable on `Ok`; nothing kept on `Err`.
    async fn insert(
        &self,
        token: NewToken,
        per_user_limit: u32,
    ) -> Result<TokenRecord, InsertError>;
    /// Inserts records as they are (import); records whose id or hash
    /// exists already are skipped. Returns how many were new. Durable on `Ok`.
    async fn restore(&self, records: Vec<TokenRecord>) -> Result<u64, StoreError>;
    async fn update_description(
        &self,
        id: u64,
        description: &str,
    ) -> Result<Option<TokenRecord>, StoreError>;
    /// Gives token `id` the secret `new_hash` (id, owner, description, scope
    /// and expiry stay). With `previous_until` the replaced secret keeps
    /// working until then (epoch ms) — any secret an earlier rotation kept
    /// stops at once; with `None` it stops at once. `None` when there is no
    /// such token. Durable on `Ok`; announced to other gateways.
    async fn rotate(
        &self,
        id: u64,
        new_hash: TokenHash,
        previous_until: Option<u64>,
    ) -> Result<Option<Rotated>, StoreError>;
    /// Deletes one token; the deleted record, or `None` when there was none.
    async fn delete(&self, id: u64) -> Result<Option<TokenRecord>, StoreError>;
    /// Deletes all tokens of a user; how many.
    async fn delete_user(&self, user_key: &str) -> Result<u64, StoreError>;
    /// Raises `lastAccessed` of existing records to the given times (the
    /// maximum of stored and new), with `lastAccessedFrom` the address of the
    /// use that wins; unknown ids are skipped.
    async fn record_access(&self, batch: Vec<Access>) -> Result<(), StoreError>;
    /// Claims notice `notice` (`"expiry-14d/mail"`, say) of token `id`,
    /// atomically across every gateway on this store: true when it was never
    /// sent and nobody holds it, or the holder's lease (`lease_until`, epoch
    /// ms) ran out before `now_ms` (it died while sending). False for a
    /// token that does not exist.
    async fn claim_notice(
        &self,
        id: u64,
        notice: &str,
        now_ms: u64,
        lease_until: u64,
    ) -> Result<bool, StoreError>;
    /// Ends a claim: `sent` marks the notice sent for good; otherwise the
    /// claim is let go (unless it was sent), so that it is tried again.
    async fn finish_notice(&self, id: u64, notice: &str, sent: bool) -> Result<(), StoreError>;
    async fn count(&self) -> Result<u64, StoreError>;
    /// The id the next token will get (at least).
    async fn next_id(&self) -> Result<u64, StoreError>;
    /// Makes sure no id below `next` is handed out again (import of a backup).
    async fn raise_next_id(&self, next: u64) -> Result<(), StoreError>;
    /// Up to `limit` records with an id above `after`, ascending (export).
    async fn scan_from(&self, after: u64, limit: usize) -> Result<Vec<TokenRecord>, StoreError>;
    /// Waits until earlier writes are durable, when one of them may have
    /// been applied but not made durable (its call failed).
    async fn settle(&self) -> Result<(), StoreError> {
        Ok(())
    }
    /// Checks that reads and writes work (readiness).
    async fn health(&self) -> Health;
    /// Writes what is pending and lets go of files and connections.
    async fn close(&self) -> Result<(), StoreError>;

    /// Starts telling `cache` about changes made elsewhere (other gateways
    /// on the same database). An embedded engine has no elsewhere.
    fn watch(&self, _cache: Arc<HotCache>) {}

    /// Failed-login counting shared by every gateway on this store, when the
    /// engine has one; otherwise each gateway counts in memory.
    fn shared_failures(&self) -> Option<Arc<dyn SharedFailures>> {
        None
    }
}

/// A user is locked out until `until` (epoch ms), or until an admin clears it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Locked {
    pub until: Option<u64>,
}

impl Locked {
    /// Seconds for `Retry-After`, when the lock ends by itself.
    pub fn retry_after_secs(&self, now_ms: u64) -> Option<u64> {
        self.until
            .map(|u| u.saturating_sub(now_ms).div_ceil(1000).max(1))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureOutcome {
    /// Not counted (lockout is off).
    Ignored,
    /// Counted; this many consecutive failures so far.
    Counted(u32),
    /// This failure reached the limit; the user is now locked.
    LockedNow(Locked),
    /// The user was locked already.
    StillLocked(Locked),
}

/// Failed logins counted for every gateway at once, per (user name in lower
/// case, client address as throttling keys it: IPv4, or IPv6 /64).
///
/// The same rules as the in-memory count: `max_attempts` consecutive
/// failures lock the pair for `lockout_seconds` (0 = until cleared); a lock
/// that ran out starts the count afresh; a confirmed login resets a counter
/// but not a lock; an admin's clear removes every address of the user.
#[async_trait]
pub trait SharedFailures: Send + Sync + 'static {
    async fn locked(
        &self,
        user: &str,
        addr: IpAddr,
        now_ms: u64,
    ) -> Result<Option<Locked>, StoreError>;
    async fn failure(
        &self,
        user: &str,
        addr: IpAddr,
        max_attempts: u32,
        lockout_seconds: u64,
        now_ms: u64,
    ) -> Result<FailureOutcome, StoreError>;
    async fn success(&self, user: &str, addr: IpAddr, now_ms: u64) -> Result<(), StoreError>;
    /// True when the user had a counter or lock.
    async fn clear(&self, user: &str) -> Result<bool, StoreError>;
    /// Forgets locks that ran out and counters older than `counter_ttl_ms`.
    async fn sweep(&self, now_ms: u64, counter_ttl_ms: u64) -> Result<(), StoreError>;
}
