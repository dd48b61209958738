//! [`SledBackend`]: the sled engine behind the asynchronous [`Backend`]
//! seam, with what durability on sled takes: group commit (a write is
//! acknowledged only after a flush that several writers may share) and the
//! undo of a creation whose flush failed.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use async_trait::async_trait;
use tokio::sync::watch;

use super::SledEngine;
use crate::store::{
    Access, Backend, Filter, FoundEntry, Health, InsertError, NewToken, Page, Rotated, StoreError,
    TokenRecord,
};
use crate::token::TokenHash;

pub struct SledBackend {
    engine: Arc<SledEngine>,
    commit: GroupCommit,
    /// Why the last flush failed; `None` once one succeeds again.
    write_error: Mutex<Option<String>>,
}

impl SledBackend {
    /// Opens (or creates) the store at `path`.
    pub fn open(path: &Path) -> Result<SledBackend, StoreError> {
        Ok(SledBackend::new(Arc::new(SledEngine::open(path)?)))
    }

    pub fn new(engine: Arc<SledEngine>) -> SledBackend {
        SledBackend {
            commit: GroupCommit::start(engine.clone()),
            engine,
            write_error: Mutex::new(None),
        }
    }

    /// The synchronous engine (offline tools, tests).
    pub fn engine(&self) -> &Arc<SledEngine> {
        &self.engine
    }

    /// Remembers whether the last flush worked (for readiness).
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

    /// Waits until every change made so far is on disk.
    async fn durable(&self) -> Result<(), StoreError> {
        let outcome = self.commit.durable().await;
        self.note_write(outcome)
    }

    /// Runs a blocking engine call on the blocking pool.
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&SledEngine) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let engine = self.engine.clone();
        tokio::task::spawn_blocking(move || f(&engine))
            .await
            .map_err(|e| StoreError::Unavailable(format!("store task failed: {e}")))?
    }
}

#[async_trait]
impl Backend for SledBackend {
    fn kind(&self) -> &'static str {
        "sled"
    }

    // Reads are served from sled's memory and are quick: on the caller's thread.
    async fn lookup(&self, hash: &TokenHash) -> Result<Option<FoundEntry>, StoreError> {
        self.engine.lookup(hash)
    }

    async fn get(&self, id: u64) -> Result<Option<TokenRecord>, StoreError> {
        self.engine.get(id)
    }

    async fn list_user(&self, user_key: &str) -> Result<Vec<TokenRecord>, StoreError> {
        self.engine.list_user(user_key)
    }

    async fn filter(&self, filter: &Filter, offset: u64, limit: u64) -> Result<Page, StoreError> {
        // May scan.
        let filter = filter.clone();
        self.blocking(move |e| e.filter(&filter, offset, limit))
            .await
    }

    async fn insert(
        &self,
        token: NewToken,
        per_user_limit: u32,
    ) -> Result<TokenRecord, InsertError> {
        let record = self.engine.insert(token, per_user_limit)?;
        if let Err(e) = self.durable().await {
            // Not acknowledged, so not kept: nobody has the plain token, and a
            // record that reappeared later would be a token nobody asked for.
            if let Err(undo) = self.engine.delete(record.id) {
                tracing::error!(error = %undo, token_id = record.id, "could not take back a token whose creation failed");
            }
            return Err(InsertError::Store(e));
        }
        Ok(record)
    }

    async fn restore(&self, records: Vec<TokenRecord>) -> Result<u64, StoreError> {
        let added = self.blocking(move |e| e.restore(&records)).await?;
        self.durable().await?;
        Ok(added)
    }

    async fn update_description(
        &self,
        id: u64,
        description: &str,
    ) -> Result<Option<TokenRecord>, StoreError> {
        let r = self.engine.update_description(id, description)?;
        self.durable().await?;
        Ok(r)
    }

    async fn rotate(
        &self,
        id: u64,
        new_hash: TokenHash,
        previous_until: Option<u64>,
    ) -> Result<Option<Rotated>, StoreError> {
        let r = self.engine.rotate(id, new_hash, previous_until)?;
        // As with a delete: on failure the old secret is already refused
        // here (or kept only for its grace), but the caller is not told.
        self.durable().await?;
        Ok(r)
    }

    async fn claim_notice(
        &self,
        id: u64,
        notice: &str,
        now_ms: u64,
        lease_until: u64,
    ) -> Result<bool, StoreError> {
        let claimed = self.engine.claim_notice(id, notice, now_ms, lease_until)?;
        if claimed {
            // Sent at most once across restarts: the claim is on disk first.
            self.durable().await?;
        }
        Ok(claimed)
    }

    async fn finish_notice(&self, id: u64, notice: &str, sent: bool) -> Result<(), StoreError> {
        self.engine.finish_notice(id, notice, sent)?;
        self.durable().await
    }

    async fn delete(&self, id: u64) -> Result<Option<TokenRecord>, StoreError> {
        let r = self.engine.delete(id)?;
        // On failure the token stays deleted in memory (fail closed: it never
        // authenticates again here), but the caller is not told it is gone.
        self.durable().await?;
        Ok(r)
    }

    async fn delete_user(&self, user_key: &str) -> Result<u64, StoreError> {
        let user_key = user_key.to_string();
        let n = self.blocking(move |e| e.delete_user(&user_key)).await?;
        self.durable().await?;
        Ok(n)
    }

    async fn record_access(&self, batch: Vec<Access>) -> Result<(), StoreError> {
        let outcome = self
            .blocking(move |e| {
                e.record_access(&batch)?;
                e.flush()
            })
            .await;
        self.note_write(outcome)
    }

    async fn count(&self) -> Result<u64, StoreError> {
        self.engine.count()
    }

    async fn next_id(&self) -> Result<u64, StoreError> {
        self.engine.next_id()
    }

    async fn raise_next_id(&self, next: u64) -> Result<(), StoreError> {
        self.engine.raise_next_id(next)?;
        self.durable().await
    }

    async fn scan_from(&self, after: u64, limit: usize) -> Result<Vec<TokenRecord>, StoreError> {
        self.blocking(move |e| {
            let mut out = Vec::new();
            if limit == 0 {
                return Ok(out);
            }
            e.scan_after(after, &mut |r| {
                out.push(r);
                out.len() < limit
            })?;
            Ok(out)
        })
        .await
    }

    async fn settle(&self) -> Result<(), StoreError> {
        let failing = self.write_error.lock().map(|w| w.is_some()).unwrap_or(true);
        if failing {
            self.durable().await
        } else {
            Ok(())
        }
    }

    async fn health(&self) -> Health {
        let state = match self.engine.count() {
            Err(e) => e.to_string(),
            // After a failed write, ready again only once a write works.
            Ok(_) if self.write_error.lock().map(|w| w.is_some()).unwrap_or(true) => {
                let outcome = self.blocking(|e| e.flush()).await;
                match self.note_write(outcome) {
                    Ok(()) => "ok".to_string(),
                    Err(e) => format!("writes fail: {e}"),
                }
            }
            Ok(_) => "ok".to_string(),
        };
        Health {
            parts: vec![("store", state)],
        }
    }

    async fn close(&self) -> Result<(), StoreError> {
        let flushed = self.blocking(|e| e.flush()).await;
        self.commit.stop();
        flushed
    }
}

impl Drop for SledBackend {
    fn drop(&mut self) {
        self.commit.stop();
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
    fn start(engine: Arc<SledEngine>) -> GroupCommit {
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
            .spawn(move || flusher(s, engine));
        let thread = match thread {
            Ok(thread) => Some(thread),
            Err(e) => {
                // No flusher, no durable write: every write fails.
                tracing::error!(error = %e, "cannot start the store's flusher thread");
                shared.stopping.store(true, Ordering::SeqCst);
                None
            }
        };
        GroupCommit {
            shared,
            thread: Mutex::new(thread),
        }
    }

    async fn durable(&self) -> Result<(), StoreError> {
        if self.shared.stopping.load(Ordering::SeqCst) {
            return Err(StoreError::Unavailable("the store is closed".into()));
        }
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
        // A writer that got past the check in `durable` before the stop is
        // answered, not left waiting for a flush that will not come.
        self.shared.flushed.send_replace(Flushed {
            seq: u64::MAX,
            error: Some("the store is closed".into()),
        });
    }
}

fn flusher(shared: Arc<CommitShared>, engine: Arc<SledEngine>) {
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
        let error = engine.flush().err().map(|e| e.to_string());
        shared.flushed.send_replace(Flushed { seq: target, error });
    }
}
