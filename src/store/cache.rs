//! The tokens in use, in memory: the token hot path reads them without
//! asking the backend.
//!
//! An entry must never outlive its token. Changes made by this gateway evict
//! their entries directly; changes made by other gateways on the same
//! database arrive as notifications ([`HotCache::notified`]). While the
//! notifications are not arriving (the listening connection was lost) the
//! cache cannot know what changed elsewhere: it is dropped whole, and until
//! notifications flow again an entry counts only while it is younger than
//! `cache_max_stale_ms`; older ones are read again from the backend.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use crate::clock::SharedClock;
use crate::metrics::StoreMetrics;
use crate::token::TokenHash;

use super::AuthEntry;

/// How many token entries the cache holds: the tokens in active use.
const HOT_ENTRIES: usize = 100_000;

/// Why entries left the cache (`tokengate_cache_invalidations_total{cause}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// Another gateway changed or deleted the token.
    Notify,
    /// Notifications were lost; everything goes.
    Reconnect,
    /// Older than `cache_max_stale_ms` while notifications were lost.
    Stale,
}

impl Cause {
    pub fn label(self) -> &'static str {
        match self {
            Cause::Notify => "notify",
            Cause::Reconnect => "reconnect",
            Cause::Stale => "stale",
        }
    }
}

/// What another gateway changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// This token was changed or deleted.
    Token(TokenHash),
    /// Many tokens changed (a user's tokens deleted): forget everything.
    All,
}

#[derive(Clone)]
struct Cached {
    entry: Arc<AuthEntry>,
    /// When it was read from the backend, epoch ms.
    read_ms: u64,
}

pub struct HotCache {
    entries: quick_cache::sync::Cache<TokenHash, Cached>,
    /// Bumped by every eviction; see [`HotCache::insert_unless_evicted`].
    removals: AtomicU64,
    /// Are changes made elsewhere arriving? Always for an embedded store.
    listening: AtomicBool,
    max_stale_ms: u64,
    clock: SharedClock,
    metrics: OnceLock<Arc<StoreMetrics>>,
}

impl HotCache {
    pub fn new(clock: SharedClock, max_stale_ms: u64) -> HotCache {
        HotCache {
            entries: quick_cache::sync::Cache::new(HOT_ENTRIES),
            removals: AtomicU64::new(0),
            listening: AtomicBool::new(true),
            max_stale_ms,
            clock,
            metrics: OnceLock::new(),
        }
    }

    pub(super) fn attach_metrics(&self, metrics: Arc<StoreMetrics>) {
        let _ = self.metrics.set(metrics);
    }

    fn count(&self, cause: Cause, n: u64) {
        if let Some(m) = self.metrics.get() {
            m.invalidation(cause.label(), n);
        }
    }

    /// The entry for `hash`, when cached and still trustworthy.
    pub fn get(&self, hash: &TokenHash) -> Option<Arc<AuthEntry>> {
        let cached = self.entries.get(hash)?;
        if !self.listening.load(Ordering::Relaxed)
            && self.clock.now_ms().saturating_sub(cached.read_ms) > self.max_stale_ms
        {
            self.evict(hash, Cause::Stale);
            return None;
        }
        Some(cached.entry)
    }

    /// The eviction count before a backend read; see [`Self::insert_unless_evicted`].
    pub(super) fn generation(&self) -> u64 {
        self.removals.load(Ordering::SeqCst)
    }

    /// Caches an entry read from the backend when `generation` was current,
    /// unless an eviction happened since: the read may predate the change
    /// that evicted. Checked again after inserting, so any interleaving with
    /// an eviction ends with the entry gone.
    pub(super) fn insert_unless_evicted(
        &self,
        hash: &TokenHash,
        entry: Arc<AuthEntry>,
        generation: u64,
    ) {
        if self.removals.load(Ordering::SeqCst) != generation {
            return;
        }
        let read_ms = self.clock.now_ms();
        self.entries.insert(*hash, Cached { entry, read_ms });
        if self.removals.load(Ordering::SeqCst) != generation {
            self.entries.remove(hash);
        }
    }

    /// Forgets one token (changed or deleted here).
    pub fn forget(&self, hash: &TokenHash) {
        self.removals.fetch_add(1, Ordering::SeqCst);
        self.entries.remove(hash);
    }

    /// Forgets every token (many changed here).
    pub fn forget_all(&self) {
        self.removals.fetch_add(1, Ordering::SeqCst);
        self.entries.clear();
    }

    fn evict(&self, hash: &TokenHash, cause: Cause) {
        self.removals.fetch_add(1, Ordering::SeqCst);
        if self.entries.remove(hash).is_some() {
            self.count(cause, 1);
        }
    }

    fn evict_all(&self, cause: Cause) {
        self.removals.fetch_add(1, Ordering::SeqCst);
        let n = self.entries.len() as u64;
        self.entries.clear();
        self.count(cause, n);
    }

    /// Another gateway changed something; `committed_ms` is when it
    /// committed (its clock), for `tokengate_notify_lag_seconds`.
    pub fn notified(&self, change: Change, committed_ms: u64) {
        match change {
            Change::Token(hash) => self.evict(&hash, Cause::Notify),
            Change::All => self.evict_all(Cause::Notify),
        }
        if let Some(m) = self.metrics.get() {
            let lag_ms = self.clock.now_ms().saturating_sub(committed_ms);
            m.notify_lag.observe(lag_ms as f64 / 1000.0);
        }
    }

    /// Whether changes made elsewhere are arriving. Losing them drops the
    /// whole cache (what changed meanwhile is unknown); from then until they
    /// arrive again, entries older than `cache_max_stale_ms` are read again.
    pub fn set_listening(&self, listening: bool) {
        let was = self.listening.swap(listening, Ordering::SeqCst);
        if was != listening {
            // Lost: what changes elsewhere is unknown from now on. Back:
            // what was read while not listening may predate a change that
            // was never announced.
            self.evict_all(Cause::Reconnect);
        }
    }

    pub fn is_listening(&self) -> bool {
        self.listening.load(Ordering::Relaxed)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::store::{FoundEntry, Scope};

    fn entry(id: u64) -> Arc<AuthEntry> {
        FoundEntry {
            id,
            user_key: "u".into(),
            user_name: "u".into(),
            valid_until: 0,
            scope: Scope::ReadWrite,
            allowed: Default::default(),
            superseded: false,
        }
        .into_entry()
    }

    #[test]
    fn an_eviction_during_a_read_keeps_the_read_out() {
        let cache = HotCache::new(ManualClock::new(0), 1000);
        let h = TokenHash::of("a");
        let generation = cache.generation();
        cache.notified(Change::Token(h), 0);
        cache.insert_unless_evicted(&h, entry(1), generation);
        assert!(cache.get(&h).is_none());
        let generation = cache.generation();
        cache.insert_unless_evicted(&h, entry(1), generation);
        assert_eq!(cache.get(&h).map(|e| e.id), Some(1));
    }

    #[test]
    fn without_notifications_old_entries_are_read_again() {
        let clock = ManualClock::new(10_000);
        let cache = HotCache::new(clock.clone(), 1000);
        let (a, b) = (TokenHash::of("a"), TokenHash::of("b"));
        cache.insert_unless_evicted(&a, entry(1), cache.generation());
        cache.set_listening(false);
        assert!(cache.get(&a).is_none(), "dropped when notifications stop");
        cache.insert_unless_evicted(&b, entry(2), cache.generation());
        clock.advance_ms(1000);
        assert!(cache.get(&b).is_some(), "young enough");
        clock.advance_ms(1);
        assert!(cache.get(&b).is_none(), "too old while not listening");
        cache.insert_unless_evicted(&b, entry(2), cache.generation());
        cache.set_listening(true);
        assert!(cache.get(&b).is_none(), "dropped when notifications resume");
        cache.insert_unless_evicted(&b, entry(2), cache.generation());
        clock.advance_ms(60_000);
        assert!(cache.get(&b).is_some(), "kept while listening");
    }
}
