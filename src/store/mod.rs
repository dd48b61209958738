//! Token records and where they live.
//!
//! [`Backend`] is the small storage trait (sled today, a clustered engine
//! later); [`Store`] wraps a backend with what every engine needs the same
//! way: group commit (writes are acknowledged only after a flush that several
//! writers may share) and `lastAccessed` kept in memory and written in batches.

mod sled_store;
pub mod tools;

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use dashmap::DashMap;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::token::TokenHash;

pub use sled_store::SledBackend;

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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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
}

impl TokenRecord {
    pub fn auth_entry(&self) -> AuthEntry {
        AuthEntry {
            id: self.id,
            user_key: self.user_key.clone(),
            user_name: self.user_name.clone(),
            valid_until: self.valid_until,
            scope: self.scope,
        }
    }

    /// Expired at `now_ms`? See [`expired`].
    pub fn is_expired(&self, now_ms: u64) -> bool {
        expired(self.valid_until, now_ms)
    }
}

/// A token is valid while `validUntil` > now; 0 means it never expires.
pub fn expired(valid_until: u64, now_ms: u64) -> bool {
    valid_until != 0 && valid_until <= now_ms
}

/// What the token hot path needs, stored under the token's hash so that a
/// request costs one lookup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthEntry {
    pub id: u64,
    pub user_key: String,
    pub user_name: String,
    pub valid_until: u64,
    pub scope: Scope,
}

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
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum InsertError {
    #[error("the user already has {0} tokens, the maximum")]
    LimitReached(u32),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The storage engine. Calls are synchronous and must be quick, except
/// `flush` (durability) and `filter` (may scan), which callers keep off the
/// async threads.
pub trait Backend: Send + Sync + 'static {
    fn lookup(&self, hash: &TokenHash) -> Result<Option<AuthEntry>, StoreError>;
    fn get(&self, id: u64) -> Result<Option<TokenRecord>, StoreError>;
    /// One user's tokens by id ascending, through the owner index.
    fn list_user(&self, user_key: &str) -> Result<Vec<TokenRecord>, StoreError>;
    fn filter(&self, filter: &Filter, offset: u64, limit: u64) -> Result<Page, StoreError>;
    /// Inserts with the next id; refuses when the owner already has
    /// `per_user_limit` tokens (0 = no limit), checked atomically.
    fn insert(&self, token: NewToken, per_user_limit: u32) -> Result<TokenRecord, InsertError>;
    /// Inserts records as they are (import), in one transaction; records
    /// whose id or hash exists already are skipped. Returns how many were new.
    fn restore(&self, records: &[TokenRecord]) -> Result<u64, StoreError>;
    fn update_description(
        &self,
        id: u64,
        description: &str,
    ) -> Result<Option<TokenRecord>, StoreError>;
    fn delete(&self, id: u64) -> Result<Option<TokenRecord>, StoreError>;
    fn delete_user(&self, user_key: &str) -> Result<u64, StoreError>;
    /// Raises `lastAccessed` of existing records; deleted ids are skipped.
    fn record_access(&self, batch: &[(u64, u64)]) -> Result<(), StoreError>;
    fn count(&self) -> Result<u64, StoreError>;
    /// The id the next token will get.
    fn next_id(&self) -> Result<u64, StoreError>;
    /// Makes sure no id below `next` is handed out again (import of a backup).
    fn raise_next_id(&self, next: u64) -> Result<(), StoreError>;
    /// Every record by id ascending, for export.
    fn scan(&self, visit: &mut dyn FnMut(TokenRecord) -> bool) -> Result<(), StoreError>;
    /// Makes every write so far durable.
    fn flush(&self) -> Result<(), StoreError>;
}

/// How many token entries the hot-path cache holds: the tokens in active use.
const HOT_ENTRIES: usize = 100_000;

/// The store as the gateway uses it.
pub struct Store {
    backend: Arc<dyn Backend>,
    commit: GroupCommit,
    /// `lastAccessed` not yet written: id → epoch ms. Touched on every token
    /// request, so hashed with foldhash rather than SipHash.
    access: DashMap<u64, u64, foldhash::fast::RandomState>,
    /// Entries of recently used tokens. sled caches whole leaf pages, so with
    /// a million tokens the active ones, spread over every page, would evict
    /// each other; this keeps a lookup of an active token in memory.
    hot: quick_cache::sync::Cache<TokenHash, Arc<AuthEntry>>,
    /// Bumped by every deletion; see [`Store::lookup`].
    removals: AtomicU64,
    /// Why the last write to disk failed; `None` once one succeeds again.
    write_error: Mutex<Option<String>>,
}

impl Store {
    /// Opens (or creates) the sled store at `path`.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        Ok(Store::with_backend(Arc::new(SledBackend::open(path)?)))
    }

    pub fn with_backend(backend: Arc<dyn Backend>) -> Store {
        Store {
            commit: GroupCommit::start(backend.clone()),
            backend,
            access: DashMap::with_hasher(foldhash::fast::RandomState::default()),
            hot: quick_cache::sync::Cache::new(HOT_ENTRIES),
            removals: AtomicU64::new(0),
            write_error: Mutex::new(None),
        }
    }

    /// Remembers whether the last write to disk worked (for readiness, and
    /// so that a retried delete is not answered before it is on disk).
    fn note_write<T>(&self, outcome: Result<T, StoreError>) -> Result<T, StoreError> {
        let mut last = self.write_error.lock().unwrap_or_else(|p| p.into_inner());
        match &outcome {
            Ok(_) => {
                if last.take().is_some() {
                    tracing::info!("writing to the token store works again");
                }
            }
            Err(e) => {
                if last.is_none() {
                    tracing::error!(error = %e, "writing to the token store failed; changes are refused with 503 until it works again");
                }
                *last = Some(e.to_string());
            }
        }
        outcome
    }

    /// Why the last write to disk failed, while no write has worked since.
    pub fn write_problem(&self) -> Option<String> {
        self.write_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Waits until every change made so far is on disk.
    pub async fn sync(&self) -> Result<(), StoreError> {
        let outcome = self.commit.durable().await;
        self.note_write(outcome)
    }

    /// Tries to write what is pending (readiness, after a failed write).
    /// Blocking: call from a blocking context.
    pub fn probe_write(&self) -> Result<(), StoreError> {
        let outcome = self.backend.flush();
        self.note_write(outcome)
    }

    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.backend
    }

    /// The token hot path: a lookup by hash, from memory for tokens in use;
    /// no write.
    ///
    /// A deleted token must never come back from the cache. Deletion removes
    /// the record, then bumps `removals`, then evicts the entry; a lookup that
    /// read the store keeps its entry only if no deletion counted in between,
    /// checked again after inserting, so any interleaving ends with the entry
    /// gone.
    pub fn lookup(&self, hash: &TokenHash) -> Result<Option<Arc<AuthEntry>>, StoreError> {
        if let Some(entry) = self.hot.get(hash) {
            return Ok(Some(entry));
        }
        let before = self.removals.load(Ordering::SeqCst);
        let Some(entry) = self.backend.lookup(hash)?.map(Arc::new) else {
            return Ok(None);
        };
        if self.removals.load(Ordering::SeqCst) == before {
            self.hot.insert(*hash, entry.clone());
            if self.removals.load(Ordering::SeqCst) != before {
                self.hot.remove(hash);
            }
        }
        Ok(Some(entry))
    }

    fn forget(&self, hash: Option<&TokenHash>) {
        self.removals.fetch_add(1, Ordering::SeqCst);
        match hash {
            Some(h) => {
                self.hot.remove(h);
            }
            None => self.hot.clear(),
        }
    }

    /// Notes a successful use; written by [`Store::flush_access`].
    pub fn touch(&self, id: u64, now_ms: u64) {
        self.access
            .entry(id)
            .and_modify(|t| *t = (*t).max(now_ms))
            .or_insert(now_ms);
    }

    fn with_access(&self, mut r: TokenRecord) -> TokenRecord {
        if let Some(t) = self.access.get(&r.id) {
            r.last_accessed = r.last_accessed.max(*t);
        }
        r
    }

    pub fn get(&self, id: u64) -> Result<Option<TokenRecord>, StoreError> {
        Ok(self.backend.get(id)?.map(|r| self.with_access(r)))
    }

    pub fn list_user(&self, user_key: &str) -> Result<Vec<TokenRecord>, StoreError> {
        let list = self.backend.list_user(user_key)?;
        Ok(list.into_iter().map(|r| self.with_access(r)).collect())
    }

    /// May scan; runs on the blocking pool.
    pub async fn filter(
        self: &Arc<Self>,
        filter: Filter,
        offset: u64,
        limit: u64,
    ) -> Result<Page, StoreError> {
        let this = self.clone();
        let page = tokio::task::spawn_blocking(move || this.backend.filter(&filter, offset, limit))
            .await
            .map_err(|e| StoreError::Unavailable(format!("filter task failed: {e}")))??;
        Ok(Page {
            items: page
                .items
                .into_iter()
                .map(|r| self.with_access(r))
                .collect(),
            total: page.total,
        })
    }

    pub fn count(&self) -> Result<u64, StoreError> {
        self.backend.count()
    }

    /// Creates a token; returns once it is on disk.
    pub async fn create(
        &self,
        token: NewToken,
        per_user_limit: u32,
    ) -> Result<TokenRecord, InsertError> {
        let record = self.backend.insert(token, per_user_limit)?;
        if let Err(e) = self.sync().await {
            // Not acknowledged, so not kept: nobody has the plain token, and a
            // record that reappeared later would be a token nobody asked for.
            if let Err(undo) = self.backend.delete(record.id) {
                tracing::error!(error = %undo, token_id = record.id, "could not take back a token whose creation failed");
            }
            self.forget(Some(&record.hash));
            return Err(InsertError::Store(e));
        }
        Ok(record)
    }

    /// Changes a description; returns once it is on disk.
    pub async fn update_description(
        &self,
        id: u64,
        description: &str,
    ) -> Result<Option<TokenRecord>, StoreError> {
        let r = self.backend.update_description(id, description)?;
        self.sync().await?;
        Ok(r.map(|r| self.with_access(r)))
    }

    /// Deletes a token; returns once the deletion is on disk.
    pub async fn delete(&self, id: u64) -> Result<Option<TokenRecord>, StoreError> {
        let r = self.backend.delete(id)?;
        if let Some(r) = &r {
            self.forget(Some(&r.hash));
        }
        self.access.remove(&id);
        // On failure the token stays deleted in memory (fail closed: it never
        // authenticates again here), but the caller is not told it is gone.
        self.sync().await?;
        Ok(r)
    }

    /// Deletes all tokens of a user; returns once on disk.
    pub async fn delete_user(&self, user_key: &str) -> Result<u64, StoreError> {
        let deleted = self.backend.delete_user(user_key);
        // Rare (an admin's call): start the cache afresh, also when the
        // backend failed part-way — what it did delete must stay deleted.
        self.forget(None);
        let n = deleted?;
        self.sync().await?;
        Ok(n)
    }

    /// Writes the `lastAccessed` values gathered since the last call. Returns
    /// how many were written. Blocking: call from a blocking context.
    pub fn flush_access(&self) -> Result<usize, StoreError> {
        let batch: Vec<(u64, u64)> = self.access.iter().map(|e| (*e.key(), *e.value())).collect();
        if batch.is_empty() {
            return Ok(0);
        }
        self.backend.record_access(&batch)?;
        self.note_write(self.backend.flush())?;
        // Drop only what was written; a newer touch stays for the next round.
        for (id, t) in &batch {
            self.access.remove_if(id, |_, v| *v <= *t);
        }
        Ok(batch.len())
    }

    /// Pending `lastAccessed` updates (for the flush-lag metric).
    pub fn pending_access(&self) -> usize {
        self.access.len()
    }

    /// Writes what is pending and stops the flusher thread.
    pub fn close(&self) -> Result<(), StoreError> {
        self.flush_access()?;
        self.backend.flush()?;
        self.commit.stop();
        Ok(())
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        self.commit.stop();
    }
}

/// The gateway's store, which may not be open (yet): a store that cannot be
/// opened at start (locked by another process, permissions, corruption) is
/// retried in the background while token requests and the management API
/// fail closed with 503.
pub struct StoreCell {
    current: arc_swap::ArcSwapOption<Store>,
    /// Why it is not open, while it is not.
    problem: Mutex<String>,
}

impl StoreCell {
    pub fn open(store: Arc<Store>) -> StoreCell {
        StoreCell {
            current: arc_swap::ArcSwapOption::from(Some(store)),
            problem: Mutex::new(String::new()),
        }
    }

    pub fn closed(problem: &StoreError) -> StoreCell {
        StoreCell {
            current: arc_swap::ArcSwapOption::empty(),
            problem: Mutex::new(problem.to_string()),
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

/// Group commit: a writer applies its change, takes a sequence number and
/// waits until a flush that started after its write has finished. One
/// flusher thread runs flushes back to back, so concurrent writers share them.
struct GroupCommit {
    shared: Arc<CommitShared>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

struct CommitShared {
    written: AtomicU64,
    wanted: Mutex<bool>,
    wake: Condvar,
    stopping: AtomicBool,
    flushed: watch::Sender<Flushed>,
}

#[derive(Debug, Clone)]
struct Flushed {
    /// Every write numbered up to `seq` was covered by the flush.
    seq: u64,
    error: Option<String>,
}

impl GroupCommit {
    fn start(backend: Arc<dyn Backend>) -> GroupCommit {
        let (flushed, _) = watch::channel(Flushed {
            seq: 0,
            error: None,
        });
        let shared = Arc::new(CommitShared {
            written: AtomicU64::new(0),
            wanted: Mutex::new(false),
            wake: Condvar::new(),
            stopping: AtomicBool::new(false),
            flushed,
        });
        let s = shared.clone();
        let thread = std::thread::Builder::new()
            .name("tokengate-flush".into())
            .spawn(move || flusher(s, backend))
            .ok();
        GroupCommit {
            shared,
            thread: Mutex::new(thread),
        }
    }

    async fn durable(&self) -> Result<(), StoreError> {
        let seq = self.shared.written.fetch_add(1, Ordering::SeqCst) + 1;
        let mut rx = self.shared.flushed.subscribe();
        {
            let mut wanted = self.shared.wanted.lock().unwrap_or_else(|p| p.into_inner());
            *wanted = true;
        }
        self.shared.wake.notify_one();
        let outcome = rx
            .wait_for(|f| f.seq >= seq)
            .await
            .map_err(|_| StoreError::Unavailable("the flusher has stopped".into()))?
            .clone();
        match outcome.error {
            None => Ok(()),
            Some(e) => Err(StoreError::Unavailable(e)),
        }
    }

    fn stop(&self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        self.shared.wake.notify_one();
        let handle = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(handle) = handle {
            let _ = handle.join();
        }
    }
}

fn flusher(shared: Arc<CommitShared>, backend: Arc<dyn Backend>) {
    loop {
        {
            let mut wanted = shared.wanted.lock().unwrap_or_else(|p| p.into_inner());
            while !*wanted && !shared.stopping.load(Ordering::SeqCst) {
                wanted = shared.wake.wait(wanted).unwrap_or_else(|p| p.into_inner());
            }
            if !*wanted {
                return;
            }
            *wanted = false;
        }
        // Everything numbered up to `target` was written before this load.
        let target = shared.written.load(Ordering::SeqCst);
        let error = backend.flush().err().map(|e| e.to_string());
        shared.flushed.send_replace(Flushed { seq: target, error });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let e = store.lookup(&TokenHash::of("a")).unwrap().unwrap();
        assert_eq!(e.id, 1);
        assert_eq!(e.user_key, "U1");
        assert!(store.delete(1).await.unwrap().is_some());
        assert!(store.lookup(&TokenHash::of("a")).unwrap().is_none());
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
            assert!(store.lookup(&TokenHash::of(seed)).unwrap().is_some());
            assert!(
                store.lookup(&TokenHash::of(seed)).unwrap().is_some(),
                "from the cache"
            );
        }
        store.delete(1).await.unwrap();
        assert!(store.lookup(&TokenHash::of("a")).unwrap().is_none());
        store.delete_user("U2").await.unwrap();
        assert!(store.lookup(&TokenHash::of("b")).unwrap().is_none());
        assert!(store.lookup(&TokenHash::of("c")).unwrap().is_none());
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
                    std::thread::spawn(move || {
                        while !stop.load(Ordering::Relaxed) {
                            let _ = store.lookup(&TokenHash::of(&seed));
                        }
                    })
                })
                .collect();
            store.delete(r.id).await.unwrap();
            for _ in 0..200 {
                assert!(
                    store.lookup(&TokenHash::of(&seed)).unwrap().is_none(),
                    "round {round}"
                );
            }
            stop.store(true, Ordering::Relaxed);
            for l in lookers {
                l.join().unwrap();
            }
            assert!(
                store.lookup(&TokenHash::of(&seed)).unwrap().is_none(),
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
        assert_eq!(store.count().unwrap(), 160);
        let mut ids: Vec<u64> = store.list_user("U").unwrap().iter().map(|r| r.id).collect();
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
        store.touch(1, 500);
        store.touch(2, 600);
        assert_eq!(
            store.get(1).unwrap().unwrap().last_accessed,
            500,
            "shown before the flush"
        );
        assert_eq!(
            store.backend().get(1).unwrap().unwrap().last_accessed,
            0,
            "not yet written"
        );
        store.delete(2).await.unwrap();
        store.touch(2, 700);
        assert_eq!(store.flush_access().unwrap(), 2);
        assert_eq!(store.backend().get(1).unwrap().unwrap().last_accessed, 500);
        assert!(
            store.backend().get(2).unwrap().is_none(),
            "a deleted token is not brought back"
        );
        assert_eq!(store.pending_access(), 0);
    }
}
