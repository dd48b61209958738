//! Token records and where they live.
//!
//! [`Backend`] is the storage engine seam: sled (embedded, one gateway) or
//! PostgreSQL (several gateways on one database). [`Store`] wraps a backend
//! with what every engine needs the same way: the tokens in use cached in
//! memory ([`HotCache`]), so the token hot path does not wait for the
//! engine, and `lastAccessed` kept in memory and written in batches.

mod allowed;
mod backend;
mod cache;
pub mod open;
mod postgres;
mod sled_store;
pub mod tools;

use std::net::IpAddr;
use std::path::Path;
use std::sync::{Arc, OnceLock};

use dashmap::DashMap;
use serde::{Deserialize, Serialize};

use crate::clock::{SharedClock, SystemClock};
use crate::metrics::StoreMetrics;
use crate::token::TokenHash;

pub use allowed::{AllowedIps, AllowedNets, AllowedNetsOf, Boxed, MAX_ALLOWED_IPS, PackInto};
pub use backend::{Access, Backend, FailureOutcome, Health, Locked, Rotated, SharedFailures};
pub use cache::{Cause, Change, HotCache};
pub use postgres::{PostgresBackend, PostgresSettings, migrate as postgres_migrate};
pub use sled_store::{SledBackend, SledEngine};

/// `tokenScope`: 1 = READ_ONLY, 2 = READ_WRITE.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Scope {
    ReadOnly,
    ReadWrite,
}

impl Scope {
    pub fn code(self) -> u8 {
        match self {
            Scope::ReadOnly => 1,
            Scope::ReadWrite => 2,
        }
    }

    pub fn from_code(code: i64) -> Option<Scope> {
        match code {
            1 => Some(Scope::ReadOnly),
            2 => Some(Scope::ReadWrite),
            _ => None,
        }
    }
}

/// A stored token. Never holds the plain token, only its hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRecord {
    pub id: u64,
    pub hash: TokenHash,
    pub description: String,
    /// `tokenForUserKey`
    pub user_key: String,
    /// `tokenForUserName`
    pub user_name: String,
    /// `tokenCreatedByUserKey`
    pub created_by: String,
    /// Epoch milliseconds.
    pub created: u64,
    /// Epoch milliseconds; 0 = never expires.
    pub valid_until: u64,
    /// Epoch milliseconds; 0 = never used.
    pub last_accessed: u64,
    pub scope: Scope,
    /// Where the token may be used from; empty = anywhere.
    pub allowed_ips: AllowedIps,
    /// The client address of the latest use, beside `last_accessed`.
    pub last_accessed_from: Option<IpAddr>,
    /// The secret a rotation replaced, while its grace lasts.
    pub previous: Option<Previous>,
}

/// The secret before a rotation: it keeps working until `until`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Previous {
    pub hash: TokenHash,
    /// Epoch milliseconds: refused from then on.
    pub until: u64,
}

impl TokenRecord {
    /// What the hot path needs when the token is presented by its current secret.
    pub fn auth_entry(&self) -> FoundEntry {
        FoundEntry {
            id: self.id,
            user_key: self.user_key.clone(),
            user_name: self.user_name.clone(),
            valid_until: self.valid_until,
            scope: self.scope,
            allowed: self.allowed_ips.clone(),
            superseded: false,
        }
    }

    /// What the hot path needs for `hash`: the current secret, or the
    /// previous one with its grace end as its expiry (so that an entry
    /// cached for it cannot outlive the grace); `None` for any other hash.
    pub fn entry_for(&self, hash: &TokenHash) -> Option<FoundEntry> {
        if self.hash == *hash {
            return Some(self.auth_entry());
        }
        let previous = self.previous.filter(|p| p.hash == *hash)?;
        Some(FoundEntry {
            valid_until: earlier_expiry(self.valid_until, previous.until),
            superseded: true,
            ..self.auth_entry()
        })
    }

    /// Expired at `now_ms`? See [`expired`].
    pub fn is_expired(&self, now_ms: u64) -> bool {
        expired(self.valid_until, now_ms)
    }
}

/// The earlier of two expiry times where 0 means never.
pub fn earlier_expiry(a: u64, b: u64) -> u64 {
    match (a, b) {
        (0, b) => b,
        (a, 0) => a,
        (a, b) => a.min(b),
    }
}

/// A token is valid while `validUntil` > now; 0 means it never expires.
pub fn expired(valid_until: u64, now_ms: u64) -> bool {
    valid_until != 0 && valid_until <= now_ms
}

/// What a backend finds under a token's hash; the store packs it into the
/// [`AuthEntry`] the hot path reads ([`FoundEntry::into_entry`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundEntry {
    pub id: u64,
    pub user_key: String,
    pub user_name: String,
    /// When this secret stops working: the token's expiry, or for a secret
    /// a rotation replaced the end of its grace, whichever comes first.
    pub valid_until: u64,
    pub scope: Scope,
    /// The client addresses the token works from; empty = anywhere.
    pub allowed: AllowedIps,
    /// Found by a secret that a rotation replaced.
    pub superseded: bool,
}

impl FoundEntry {
    /// The entry the cache keeps and the hot path reads: one allocation,
    /// the token's `allowedIps` inside it.
    pub fn into_entry(mut self) -> Arc<AuthEntry> {
        let allowed = std::mem::take(&mut self.allowed);
        allowed.pack(self)
    }
}

impl PackInto for FoundEntry {
    type Out = Arc<AuthEntry>;
    fn with<const N: usize>(self, allowed: AllowedNetsOf<[u64; N]>) -> Arc<AuthEntry> {
        Arc::new(AuthEntryOf {
            id: self.id,
            user_key: self.user_key,
            user_name: self.user_name,
            valid_until: self.valid_until,
            scope: self.scope,
            superseded: self.superseded,
            allowed,
        })
    }
}

/// What the token hot path needs, stored under the token's hash so that a
/// request costs one lookup: a [`FoundEntry`] with its `allowedIps` packed
/// into the same allocation (`N`: an array of words while it is built, a
/// slice once it is shared as an [`AuthEntry`]).
#[derive(Debug, PartialEq, Eq)]
pub struct AuthEntryOf<N: ?Sized> {
    pub id: u64,
    pub user_key: String,
    pub user_name: String,
    /// See [`FoundEntry::valid_until`].
    pub valid_until: u64,
    pub scope: Scope,
    /// Found by a secret that a rotation replaced.
    pub superseded: bool,
    /// The client addresses the token works from.
    pub allowed: AllowedNetsOf<N>,
}

/// A cached token entry, as the hot path reads it.
pub type AuthEntry = AuthEntryOf<[u64]>;

impl AuthEntry {
    /// Expired at `now_ms`? See [`expired`].
    pub fn is_expired(&self, now_ms: u64) -> bool {
        expired(self.valid_until, now_ms)
    }
}

/// A token to be created; the store assigns the id.
#[derive(Debug, Clone)]
pub struct NewToken {
    pub hash: TokenHash,
    pub description: String,
    pub user_key: String,
    pub user_name: String,
    pub created_by: String,
    pub created: u64,
    pub valid_until: u64,
    pub scope: Scope,
    pub allowed_ips: AllowedIps,
}

/// The filters of `tokensByFilter`.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Tokens whose `validUntil` ≤ this (never-expiring tokens never match); `None` = all.
    pub not_valid_after: Option<u64>,
    /// Owners (user keys); empty = everyone.
    pub user_keys: Vec<String>,
    /// Substring of the description, compared case-insensitively; give it in lower case.
    pub description: Option<String>,
    pub scope: Option<Scope>,
    /// Only tokens with (`true`) or without (`false`) `allowedIps`.
    pub allowed_ips_set: Option<bool>,
}

impl Filter {
    pub fn matches(&self, r: &TokenRecord) -> bool {
        if let Some(limit) = self.not_valid_after
            && (r.valid_until == 0 || r.valid_until > limit)
        {
            return false;
        }
        if !self.user_keys.is_empty() && !self.user_keys.contains(&r.user_key) {
            return false;
        }
        if let Some(scope) = self.scope
            && r.scope != scope
        {
            return false;
        }
        if let Some(needle) = &self.description
            && !r.description.to_lowercase().contains(needle.as_str())
        {
            return false;
        }
        if let Some(set) = self.allowed_ips_set
            && r.allowed_ips.is_empty() == set
        {
            return false;
        }
        true
    }
}

/// One page of a filtered listing, and how many match in all.
#[derive(Debug, Clone, Default)]
pub struct Page {
    pub items: Vec<TokenRecord>,
    pub total: u64,
}

/// The store failed; requests that need it fail closed with 503.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("token store unavailable: {0}")]
    Unavailable(String),
    #[error("token store holds a record it cannot read: {0}")]
    Corrupt(String),
    #[error(
        "the token store at {0} is in use by another process (a running gateway?); stop it first"
    )]
    InUse(String),
    /// The store was written by a newer tokengate (or is not a token store
    /// at all): starting would risk it, so the gateway does not start.
    #[error("{0}")]
    Incompatible(String),
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum InsertError {
    #[error("the user already has {0} tokens, the maximum")]
    LimitReached(u32),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The store as the gateway uses it.
pub struct Store {
    backend: Arc<dyn Backend>,
    cache: Arc<HotCache>,
    /// `lastAccessed` not yet written: id → epoch ms and the client address
    /// of that use. Touched on every token request, so hashed with foldhash
    /// rather than SipHash.
    access: DashMap<u64, (u64, IpAddr), foldhash::fast::RandomState>,
    metrics: OnceLock<Arc<StoreMetrics>>,
}

impl Store {
    /// Opens (or creates) the sled store at `path`.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        Ok(Store::with_backend(Arc::new(SledBackend::open(path)?)))
    }

    /// A store on `backend`, on the system clock; entries never go stale.
    pub fn with_backend(backend: Arc<dyn Backend>) -> Store {
        Store::new(backend, Arc::new(SystemClock), u64::MAX)
    }

    /// A store on `backend`. While changes made elsewhere are not arriving,
    /// cached tokens older than `max_stale_ms` are read again.
    pub fn new(backend: Arc<dyn Backend>, clock: SharedClock, max_stale_ms: u64) -> Store {
        let cache = Arc::new(HotCache::new(clock, max_stale_ms));
        backend.watch(cache.clone());
        Store {
            backend,
            cache,
            access: DashMap::with_hasher(foldhash::fast::RandomState::default()),
            metrics: OnceLock::new(),
        }
    }

    /// Counts store errors and cache invalidations in `metrics`.
    pub fn attach_metrics(&self, metrics: Arc<StoreMetrics>) {
        self.cache.attach_metrics(metrics.clone());
        let _ = self.metrics.set(metrics);
    }

    /// Counts a failed call in `tokengate_store_errors_total{op}`.
    fn counted<T, E>(&self, op: &'static str, outcome: Result<T, E>) -> Result<T, E> {
        if outcome.is_err()
            && let Some(m) = self.metrics.get()
        {
            m.error(op);
        }
        outcome
    }

    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.backend
    }

    pub fn cache(&self) -> &Arc<HotCache> {
        &self.cache
    }

    /// The token hot path when the token is in use: from memory, no wait.
    pub fn cached(&self, hash: &TokenHash) -> Option<Arc<AuthEntry>> {
        self.cache.get(hash)
    }

    /// A lookup by hash: from memory for tokens in use, else from the
    /// backend (and then cached). No write.
    pub async fn lookup(&self, hash: &TokenHash) -> Result<Option<Arc<AuthEntry>>, StoreError> {
        if let Some(entry) = self.cache.get(hash) {
            return Ok(Some(entry));
        }
        let generation = self.cache.generation();
        let found = self.counted("lookup", self.backend.lookup(hash).await)?;
        let Some(entry) = found.map(FoundEntry::into_entry) else {
            return Ok(None);
        };
        self.cache
            .insert_unless_evicted(hash, entry.clone(), generation);
        Ok(Some(entry))
    }

    /// Notes a successful use from `from`; written by [`Store::flush_access`].
    /// The latest use wins, with its address.
    pub fn touch(&self, id: u64, now_ms: u64, from: IpAddr) {
        self.access
            .entry(id)
            .and_modify(|seen| {
                if now_ms >= seen.0 {
                    *seen = (now_ms, from);
                }
            })
            .or_insert((now_ms, from));
    }

    fn with_access(&self, mut r: TokenRecord) -> TokenRecord {
        if let Some(seen) = self.access.get(&r.id)
            && seen.0 > r.last_accessed
        {
            (r.last_accessed, r.last_accessed_from) = (seen.0, Some(seen.1));
        }
        r
    }

    pub async fn get(&self, id: u64) -> Result<Option<TokenRecord>, StoreError> {
        let r = self.counted("get", self.backend.get(id).await)?;
        Ok(r.map(|r| self.with_access(r)))
    }

    pub async fn list_user(&self, user_key: &str) -> Result<Vec<TokenRecord>, StoreError> {
        let list = self.counted("list", self.backend.list_user(user_key).await)?;
        Ok(list.into_iter().map(|r| self.with_access(r)).collect())
    }

    pub async fn filter(
        &self,
        filter: Filter,
        offset: u64,
        limit: u64,
    ) -> Result<Page, StoreError> {
        let page = self.counted("filter", self.backend.filter(&filter, offset, limit).await)?;
        Ok(Page {
            items: page
                .items
                .into_iter()
                .map(|r| self.with_access(r))
                .collect(),
            total: page.total,
        })
    }

    pub async fn count(&self) -> Result<u64, StoreError> {
        self.counted("count", self.backend.count().await)
    }

    /// Creates a token; returns once it is durable.
    pub async fn create(
        &self,
        token: NewToken,
        per_user_limit: u32,
    ) -> Result<TokenRecord, InsertError> {
        let hash = token.hash;
        let outcome = self.backend.insert(token, per_user_limit).await;
        if matches!(outcome, Err(InsertError::Store(_))) {
            // Whatever the backend read of this hash before is not to be trusted.
            self.cache.forget(&hash);
        }
        self.counted("insert", outcome)
    }

    /// Changes a description; returns once it is durable.
    pub async fn update_description(
        &self,
        id: u64,
        description: &str,
    ) -> Result<Option<TokenRecord>, StoreError> {
        let r = self.counted(
            "update",
            self.backend.update_description(id, description).await,
        )?;
        Ok(r.map(|r| self.with_access(r)))
    }

    /// Deletes a token; returns once the deletion is durable.
    pub async fn delete(&self, id: u64) -> Result<Option<TokenRecord>, StoreError> {
        let outcome = self.backend.delete(id).await;
        match &outcome {
            Ok(Some(r)) => {
                self.cache.forget(&r.hash);
                if let Some(p) = r.previous {
                    self.cache.forget(&p.hash);
                }
            }
            Ok(None) => {}
            // Whether it is gone is unknown: nothing cached is trusted.
            Err(_) => self.cache.forget_all(),
        }
        self.access.remove(&id);
        self.counted("delete", outcome)
    }

    /// Gives a token a new secret (`new_hash`); the old one keeps working
    /// until `previous_until` (epoch ms), or stops at once with `None`.
    /// Returns once durable, with every cached entry of the old secrets gone.
    pub async fn rotate(
        &self,
        id: u64,
        new_hash: TokenHash,
        previous_until: Option<u64>,
    ) -> Result<Option<TokenRecord>, StoreError> {
        let outcome = self.backend.rotate(id, new_hash, previous_until).await;
        match &outcome {
            // Read again on their next use: the replaced secret then comes
            // back with its grace end as its expiry.
            Ok(Some(rotated)) => rotated.replaced.iter().for_each(|h| self.cache.forget(h)),
            Ok(None) => {}
            // Whether the old secret still works is unknown: nothing cached is trusted.
            Err(_) => self.cache.forget_all(),
        }
        let rotated = self.counted("rotate", outcome)?;
        Ok(rotated.map(|r| self.with_access(r.record)))
    }

    /// Claims the notice `notice` of token `id` for this gateway until
    /// `lease_until` (epoch ms): true when nobody sent it and nobody else is
    /// sending it. See [`Backend::claim_notice`].
    pub async fn claim_notice(
        &self,
        id: u64,
        notice: &str,
        now_ms: u64,
        lease_until: u64,
    ) -> Result<bool, StoreError> {
        self.counted(
            "notice",
            self.backend
                .claim_notice(id, notice, now_ms, lease_until)
                .await,
        )
    }

    /// A claimed notice was sent (`true`: never again) or not (`false`: the
    /// claim is let go, to be tried again).
    pub async fn finish_notice(&self, id: u64, notice: &str, sent: bool) -> Result<(), StoreError> {
        self.counted("notice", self.backend.finish_notice(id, notice, sent).await)
    }

    /// Deletes all tokens of a user; returns once durable.
    pub async fn delete_user(&self, user_key: &str) -> Result<u64, StoreError> {
        let deleted = self.backend.delete_user(user_key).await;
        // Rare (an admin's call): start the cache afresh, also when the
        // backend failed part-way — what it did delete must stay deleted.
        self.cache.forget_all();
        self.counted("delete_user", deleted)
    }

    /// Writes the `lastAccessed` values gathered since the last call. Returns
    /// how many were written.
    pub async fn flush_access(&self) -> Result<usize, StoreError> {
        let batch: Vec<Access> = self
            .access
            .iter()
            .map(|e| Access {
                id: *e.key(),
                at: e.value().0,
                from: e.value().1,
            })
            .collect();
        if batch.is_empty() {
            return Ok(0);
        }
        self.counted(
            "record_access",
            self.backend.record_access(batch.clone()).await,
        )?;
        // Drop only what was written; a newer touch stays for the next round.
        for a in &batch {
            self.access.remove_if(&a.id, |_, v| v.0 <= a.at);
        }
        Ok(batch.len())
    }

    /// Pending `lastAccessed` updates (for the flush-lag metric).
    pub fn pending_access(&self) -> usize {
        self.access.len()
    }

    /// Waits until earlier writes are durable, where one may have been
    /// applied while making it durable failed (a retried delete is answered
    /// only once that is settled).
    pub async fn settle(&self) -> Result<(), StoreError> {
        self.counted("settle", self.backend.settle().await)
    }

    /// How the backend is doing (readiness).
    pub async fn health(&self) -> Health {
        self.backend.health().await
    }

    /// Writes what is pending and closes the backend.
    pub async fn close(&self) -> Result<(), StoreError> {
        let flushed = self.flush_access().await;
        let closed = self.backend.close().await;
        flushed.and(closed)
    }
}

/// The gateway's store, which may not be open (yet): a store that cannot be
/// opened at start (locked by another process, permissions, corruption, a
/// database that does not answer) is retried in the background while token
/// requests and the management API fail closed with 503.
pub struct StoreCell {
    current: arc_swap::ArcSwapOption<Store>,
    /// Why it is not open, while it is not.
    problem: std::sync::Mutex<String>,
}

impl StoreCell {
    pub fn open(store: Arc<Store>) -> StoreCell {
        StoreCell {
            current: arc_swap::ArcSwapOption::from(Some(store)),
            problem: std::sync::Mutex::new(String::new()),
        }
    }

    pub fn closed(problem: &StoreError) -> StoreCell {
        StoreCell {
            current: arc_swap::ArcSwapOption::empty(),
            problem: std::sync::Mutex::new(problem.to_string()),
        }
    }

    /// The open store, or why there is none.
    pub fn get(&self) -> Result<Arc<Store>, StoreError> {
        self.current.load_full().ok_or_else(|| self.not_open())
    }

    /// The error for a request that needs the store while it is not open.
    pub fn not_open(&self) -> StoreError {
        StoreError::Unavailable(format!(
            "not open ({})",
            self.problem.lock().unwrap_or_else(|p| p.into_inner())
        ))
    }

    pub fn current(&self) -> Option<Arc<Store>> {
        self.current.load_full()
    }

    /// Runs `f` on the open store without taking a reference count (the
    /// token hot path, shared by all workers); `None` while it is not open.
    pub fn with<R>(&self, f: impl FnOnce(&Store) -> R) -> Option<R> {
        self.current.load().as_deref().map(f)
    }

    pub fn is_open(&self) -> bool {
        self.current.load().is_some()
    }

    /// Records why opening failed (the store stays closed).
    pub fn set_problem(&self, problem: &StoreError) {
        *self.problem.lock().unwrap_or_else(|p| p.into_inner()) = problem.to_string();
    }

    /// Installs the store once it opened.
    pub fn set(&self, store: Arc<Store>) {
        self.current.store(Some(store));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};

    fn new_token(user: &str, hash_seed: &str, valid_until: u64) -> NewToken {
        NewToken {
            hash: TokenHash::of(hash_seed),
            description: format!("token {hash_seed}"),
            user_key: user.to_string(),
            user_name: user.to_lowercase(),
            created_by: user.to_string(),
            created: 1,
            valid_until,
            scope: Scope::ReadWrite,
            allowed_ips: AllowedIps::default(),
        }
    }

    fn temp_store() -> (tempfile::TempDir, Arc<Store>) {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(&dir.path().join("s")).unwrap());
        (dir, store)
    }

    #[tokio::test]
    async fn create_lookup_delete() {
        let (_dir, store) = temp_store();
        let r = store.create(new_token("U1", "a", 100), 0).await.unwrap();
        assert_eq!(r.id, 1);
        let e = store.lookup(&TokenHash::of("a")).await.unwrap().unwrap();
        assert_eq!(e.id, 1);
        assert_eq!(e.user_key, "U1");
        assert!(store.delete(1).await.unwrap().is_some());
        assert!(store.lookup(&TokenHash::of("a")).await.unwrap().is_none());
        assert!(store.delete(1).await.unwrap().is_none());
        let r2 = store.create(new_token("U1", "b", 100), 0).await.unwrap();
        assert_eq!(r2.id, 2, "ids are never reused");
    }

    #[tokio::test]
    async fn a_deleted_token_never_comes_back_from_the_cache() {
        let (_dir, store) = temp_store();
        store.create(new_token("U1", "a", 0), 0).await.unwrap();
        store.create(new_token("U2", "b", 0), 0).await.unwrap();
        store.create(new_token("U2", "c", 0), 0).await.unwrap();
        for seed in ["a", "b", "c"] {
            assert!(store.lookup(&TokenHash::of(seed)).await.unwrap().is_some());
            assert!(
                store.lookup(&TokenHash::of(seed)).await.unwrap().is_some(),
                "from the cache"
            );
        }
        store.delete(1).await.unwrap();
        assert!(store.lookup(&TokenHash::of("a")).await.unwrap().is_none());
        store.delete_user("U2").await.unwrap();
        assert!(store.lookup(&TokenHash::of("b")).await.unwrap().is_none());
        assert!(store.lookup(&TokenHash::of("c")).await.unwrap().is_none());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn lookups_racing_a_delete_never_bring_the_token_back() {
        let (_dir, store) = temp_store();
        for round in 0..100 {
            let seed = format!("race-{round}");
            let r = store.create(new_token("U", &seed, 0), 0).await.unwrap();
            let stop = Arc::new(AtomicBool::new(false));
            let lookers: Vec<_> = (0..2)
                .map(|_| {
                    let (store, stop, seed) = (store.clone(), stop.clone(), seed.clone());
                    tokio::spawn(async move {
                        while !stop.load(Ordering::Relaxed) {
                            let _ = store.lookup(&TokenHash::of(&seed)).await;
                            tokio::task::yield_now().await;
                        }
                    })
                })
                .collect();
            store.delete(r.id).await.unwrap();
            for _ in 0..200 {
                assert!(
                    store.lookup(&TokenHash::of(&seed)).await.unwrap().is_none(),
                    "round {round}"
                );
            }
            stop.store(true, Ordering::Relaxed);
            for l in lookers {
                l.await.unwrap();
            }
            assert!(
                store.lookup(&TokenHash::of(&seed)).await.unwrap().is_none(),
                "round {round}"
            );
        }
    }

    #[tokio::test]
    async fn per_user_limit_is_enforced() {
        let (_dir, store) = temp_store();
        for i in 0..3 {
            store
                .create(new_token("U1", &format!("t{i}"), 0), 3)
                .await
                .unwrap();
        }
        let err = store.create(new_token("U1", "t3", 0), 3).await.unwrap_err();
        assert!(matches!(err, InsertError::LimitReached(3)));
        store.create(new_token("U2", "other", 0), 3).await.unwrap();
        store.delete(1).await.unwrap();
        store.create(new_token("U1", "t4", 0), 3).await.unwrap();
    }

    #[tokio::test]
    async fn concurrent_writers_share_flushes() {
        let (_dir, store) = temp_store();
        let mut tasks = Vec::new();
        for w in 0..16 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0..10 {
                    store
                        .create(new_token("U", &format!("{w}-{i}"), 0), 0)
                        .await
                        .unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(store.count().await.unwrap(), 160);
        let mut ids: Vec<u64> = store
            .list_user("U")
            .await
            .unwrap()
            .iter()
            .map(|r| r.id)
            .collect();
        ids.dedup();
        assert_eq!(ids.len(), 160);
        assert_eq!(ids, (1..=160).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn filter_by_each_index() {
        let (_dir, store) = temp_store();
        store.create(new_token("A", "1", 50), 0).await.unwrap();
        store.create(new_token("B", "2", 150), 0).await.unwrap();
        store.create(new_token("A", "3", 0), 0).await.unwrap();
        let all = store.filter(Filter::default(), 0, 10).await.unwrap();
        assert_eq!((all.total, all.items.len()), (3, 3));
        let soon = Filter {
            not_valid_after: Some(100),
            ..Filter::default()
        };
        let p = store.filter(soon, 0, 10).await.unwrap();
        assert_eq!(p.items.iter().map(|r| r.id).collect::<Vec<_>>(), vec![1]);
        let of_a = Filter {
            user_keys: vec!["A".into()],
            ..Filter::default()
        };
        let p = store.filter(of_a, 1, 10).await.unwrap();
        assert_eq!(p.total, 2);
        assert_eq!(p.items.iter().map(|r| r.id).collect::<Vec<_>>(), vec![3]);
        let described = Filter {
            description: Some("n 2".into()),
            ..Filter::default()
        };
        assert_eq!(store.filter(described, 0, 10).await.unwrap().total, 1);
    }

    #[tokio::test]
    async fn last_access_is_batched_and_survives_deletes() {
        let (_dir, store) = temp_store();
        store.create(new_token("A", "1", 0), 0).await.unwrap();
        store.create(new_token("A", "2", 0), 0).await.unwrap();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        store.touch(1, 500, ip);
        store.touch(2, 600, ip);
        assert_eq!(
            store.get(1).await.unwrap().unwrap().last_accessed,
            500,
            "shown before the flush"
        );
        assert_eq!(
            store.backend().get(1).await.unwrap().unwrap().last_accessed,
            0,
            "not yet written"
        );
        store.delete(2).await.unwrap();
        store.touch(2, 700, ip);
        assert_eq!(store.flush_access().await.unwrap(), 2);
        let written = store.backend().get(1).await.unwrap().unwrap();
        assert_eq!(
            (written.last_accessed, written.last_accessed_from),
            (500, Some(ip))
        );
        assert!(
            store.backend().get(2).await.unwrap().is_none(),
            "a deleted token is not brought back"
        );
        assert_eq!(store.pending_access(), 0);
    }
}
