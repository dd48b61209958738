//! The sled engine.
//!
//! Trees (all keys big-endian so that byte order is numeric order):
//! - `tokens`:    id → record
//! - `hash_ids`:  SHA-256 → id (the store's hot-path cache keeps used tokens in memory)
//! - `by_user`:   user key ‖ 0xFF ‖ id → () (0xFF never occurs in UTF-8)
//! - `by_expiry`: validUntil ‖ id → () (never-expiring tokens are not indexed)
//! - `counts`:    user key → number of tokens (atomic per-user limit)
//! - `meta`:      `next_id`, `count`
//!
//! Every change touches its record and indexes in one transaction.

use std::path::Path;

use sled::transaction::{ConflictableTransactionError, TransactionError, TransactionalTree};
use sled::{Transactional, Tree};

use super::{AuthEntry, Backend, Filter, InsertError, NewToken, Page, StoreError, TokenRecord};
use crate::token::TokenHash;

const NEXT_ID: &[u8] = b"next_id";
const COUNT: &[u8] = b"count";
/// Layout of the trees. 1 (implicit): a `hashes` tree mapped SHA-256 to an
/// `AuthEntry`; 2: `hash_ids` maps it to the id. Migration empties `hashes`,
/// so a binary of layout 1 started on a layout-2 store finds no token and
/// refuses them all (fail closed) instead of misreading ids as entries.
const LAYOUT: &[u8] = b"layout";
const CURRENT_LAYOUT: u64 = 2;

pub struct SledBackend {
    db: sled::Db,
    tokens: Tree,
    hashes: Tree,
    by_user: Tree,
    by_expiry: Tree,
    counts: Tree,
    meta: Tree,
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

fn corrupt(e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(e.to_string())
}

fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, StoreError> {
    postcard::from_bytes(bytes).map_err(corrupt)
}

fn u64_of(bytes: Option<sled::IVec>) -> u64 {
    bytes
        .and_then(|b| <[u8; 8]>::try_from(b.as_ref()).ok())
        .map(u64::from_be_bytes)
        .unwrap_or(0)
}

fn user_prefix(user_key: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(user_key.len() + 9);
    k.extend_from_slice(user_key.as_bytes());
    k.push(0xFF);
    k
}

fn user_index_key(user_key: &str, id: u64) -> Vec<u8> {
    let mut k = user_prefix(user_key);
    k.extend_from_slice(&id.to_be_bytes());
    k
}

fn expiry_key(valid_until: u64, id: u64) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&valid_until.to_be_bytes());
    k[8..].copy_from_slice(&id.to_be_bytes());
    k
}

fn id_of_index_key(key: &[u8]) -> Option<u64> {
    let tail = key.get(key.len().checked_sub(8)?..)?;
    Some(u64::from_be_bytes(tail.try_into().ok()?))
}

/// Which of our own errors a transaction aborted with.
enum Abort {
    Limit(u32),
    Corrupt(String),
}

type TxResult<T> = Result<T, ConflictableTransactionError<Abort>>;

fn tx_decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> TxResult<T> {
    postcard::from_bytes(bytes)
        .map_err(|e| ConflictableTransactionError::Abort(Abort::Corrupt(e.to_string())))
}

fn tx_encode<T: serde::Serialize>(v: &T) -> TxResult<Vec<u8>> {
    postcard::to_allocvec(v)
        .map_err(|e| ConflictableTransactionError::Abort(Abort::Corrupt(e.to_string())))
}

fn tx_error(e: TransactionError<Abort>) -> InsertError {
    match e {
        TransactionError::Abort(Abort::Limit(n)) => InsertError::LimitReached(n),
        TransactionError::Abort(Abort::Corrupt(m)) => InsertError::Store(StoreError::Corrupt(m)),
        TransactionError::Storage(e) => InsertError::Store(unavailable(e)),
    }
}

fn store_error(e: TransactionError<Abort>) -> StoreError {
    match tx_error(e) {
        InsertError::Store(e) => e,
        InsertError::LimitReached(_) => StoreError::Corrupt("unexpected limit".into()),
    }
}

fn add(tree: &TransactionalTree, key: &[u8], delta: i64) -> TxResult<u64> {
    let current = u64_of(tree.get(key)?);
    let next = current.saturating_add_signed(delta);
    tree.insert(key, &next.to_be_bytes())?;
    Ok(next)
}

impl SledBackend {
    pub fn open(path: &Path) -> Result<SledBackend, StoreError> {
        let db = sled::Config::new()
            .path(path)
            // Tokens in use are cached by the store itself; sled's own page
            // cache stays small instead of the 1 GiB it would take by default.
            .cache_capacity(32 * 1024 * 1024)
            .open()
            .map_err(|e| match e {
                // sled holds an exclusive file lock while a store is open.
                sled::Error::Io(io) if io.to_string().contains("could not acquire lock") => {
                    StoreError::InUse(path.display().to_string())
                }
                e => StoreError::Unavailable(format!("cannot open {}: {e}", path.display())),
            })?;
        let tree = |name: &str| db.open_tree(name).map_err(unavailable);
        let backend = SledBackend {
            tokens: tree("tokens")?,
            hashes: tree("hash_ids")?,
            by_user: tree("by_user")?,
            by_expiry: tree("by_expiry")?,
            counts: tree("counts")?,
            meta: tree("meta")?,
            db,
        };
        backend.migrate()?;
        Ok(backend)
    }

    /// Brings a store written by an older version to [`CURRENT_LAYOUT`].
    /// Idempotent: an interrupted migration is redone on the next open.
    fn migrate(&self) -> Result<(), StoreError> {
        let layout = u64_of(self.meta.get(LAYOUT).map_err(unavailable)?);
        if layout > CURRENT_LAYOUT {
            return Err(StoreError::Corrupt(format!(
                "store layout {layout} is newer than this version understands ({CURRENT_LAYOUT})"
            )));
        }
        // Layout 1, or tokens an older binary added after a rollback: the
        // old tree is rebuilt into `hash_ids` from the records, then emptied.
        let old = self.db.open_tree("hashes").map_err(unavailable)?;
        let rebuild = layout < 2 || !old.is_empty();
        if rebuild {
            for kv in self.tokens.iter().values() {
                let r: TokenRecord = decode(&kv.map_err(unavailable)?)?;
                self.hashes
                    .insert(r.hash.0, &r.id.to_be_bytes())
                    .map_err(unavailable)?;
            }
            old.clear().map_err(unavailable)?;
        }
        if rebuild || layout != CURRENT_LAYOUT {
            self.meta
                .insert(LAYOUT, &CURRENT_LAYOUT.to_be_bytes())
                .map_err(unavailable)?;
            self.db.flush().map_err(unavailable)?;
        }
        Ok(())
    }

    fn records_by_ids(
        &self,
        ids: impl IntoIterator<Item = u64>,
    ) -> Result<Vec<TokenRecord>, StoreError> {
        let mut out = Vec::new();
        for id in ids {
            if let Some(r) = self.get(id)? {
                out.push(r);
            }
        }
        Ok(out)
    }

    fn user_ids(&self, user_key: &str) -> Result<Vec<u64>, StoreError> {
        self.by_user
            .scan_prefix(user_prefix(user_key))
            .keys()
            .map(|k| {
                k.map_err(unavailable)
                    .map(|k| id_of_index_key(&k).unwrap_or(0))
            })
            .collect()
    }

    /// Removes a record and its index entries inside a transaction.
    fn remove_in(
        (t, h, u, e, c, m): (
            &TransactionalTree,
            &TransactionalTree,
            &TransactionalTree,
            &TransactionalTree,
            &TransactionalTree,
            &TransactionalTree,
        ),
        id: u64,
    ) -> TxResult<Option<TokenRecord>> {
        let Some(bytes) = t.remove(&id.to_be_bytes())? else {
            return Ok(None);
        };
        let r: TokenRecord = tx_decode(&bytes)?;
        h.remove(&r.hash.0)?;
        u.remove(user_index_key(&r.user_key, id))?;
        if r.valid_until != 0 {
            e.remove(&expiry_key(r.valid_until, id))?;
        }
        if add(c, r.user_key.as_bytes(), -1)? == 0 {
            c.remove(r.user_key.as_bytes())?;
        }
        add(m, COUNT, -1)?;
        Ok(Some(r))
    }

    /// Writes a record and its index entries inside a transaction.
    #[allow(clippy::type_complexity)]
    fn put_in(
        (t, h, u, e, c, m): (
            &TransactionalTree,
            &TransactionalTree,
            &TransactionalTree,
            &TransactionalTree,
            &TransactionalTree,
            &TransactionalTree,
        ),
        r: &TokenRecord,
    ) -> TxResult<()> {
        t.insert(&r.id.to_be_bytes(), tx_encode(r)?)?;
        h.insert(&r.hash.0, &r.id.to_be_bytes())?;
        u.insert(user_index_key(&r.user_key, r.id), &[])?;
        if r.valid_until != 0 {
            e.insert(&expiry_key(r.valid_until, r.id), &[])?;
        }
        add(c, r.user_key.as_bytes(), 1)?;
        add(m, COUNT, 1)?;
        let next = u64_of(m.get(NEXT_ID)?).max(1);
        if r.id >= next {
            m.insert(NEXT_ID, &(r.id + 1).to_be_bytes())?;
        }
        Ok(())
    }

    fn trees(&self) -> (&Tree, &Tree, &Tree, &Tree, &Tree, &Tree) {
        (
            &self.tokens,
            &self.hashes,
            &self.by_user,
            &self.by_expiry,
            &self.counts,
            &self.meta,
        )
    }
}

impl Backend for SledBackend {
    fn lookup(&self, hash: &TokenHash) -> Result<Option<AuthEntry>, StoreError> {
        let Some(id) = self.hashes.get(hash.0).map_err(unavailable)? else {
            return Ok(None);
        };
        let id = <[u8; 8]>::try_from(id.as_ref())
            .map(u64::from_be_bytes)
            .map_err(|_| StoreError::Corrupt("a hash entry without an id".into()))?;
        Ok(self.get(id)?.map(|r| r.auth_entry()))
    }

    fn get(&self, id: u64) -> Result<Option<TokenRecord>, StoreError> {
        match self.tokens.get(id.to_be_bytes()).map_err(unavailable)? {
            Some(bytes) => decode(&bytes).map(Some),
            None => Ok(None),
        }
    }

    fn list_user(&self, user_key: &str) -> Result<Vec<TokenRecord>, StoreError> {
        let ids = self.user_ids(user_key)?;
        self.records_by_ids(ids)
    }

    fn filter(&self, filter: &Filter, offset: u64, limit: u64) -> Result<Page, StoreError> {
        // Candidates come from the most selective index; the rest of the
        // filter is applied to the records themselves.
        let candidates: Option<Vec<u64>> = if !filter.user_keys.is_empty() {
            let mut ids = Vec::new();
            for key in &filter.user_keys {
                ids.extend(self.user_ids(key)?);
            }
            Some(ids)
        } else if let Some(limit_ms) = filter.not_valid_after {
            let end = expiry_key(limit_ms, u64::MAX);
            let ids: Result<Vec<u64>, StoreError> = self
                .by_expiry
                .range(..=end)
                .keys()
                .map(|k| {
                    k.map_err(unavailable)
                        .map(|k| id_of_index_key(&k).unwrap_or(0))
                })
                .collect();
            Some(ids?)
        } else {
            None
        };
        let offset = usize::try_from(offset).unwrap_or(usize::MAX);
        let limit = usize::try_from(limit).unwrap_or(usize::MAX);
        let needs_records = filter.description.is_some() || filter.scope.is_some();
        match candidates {
            Some(mut ids) => {
                ids.sort_unstable();
                ids.dedup();
                if needs_records
                    || (filter.not_valid_after.is_some() && !filter.user_keys.is_empty())
                {
                    let matching: Vec<TokenRecord> = self
                        .records_by_ids(ids)?
                        .into_iter()
                        .filter(|r| filter.matches(r))
                        .collect();
                    let total = matching.len() as u64;
                    let items = matching.into_iter().skip(offset).take(limit).collect();
                    Ok(Page { items, total })
                } else {
                    let total = ids.len() as u64;
                    let items = self.records_by_ids(ids.into_iter().skip(offset).take(limit))?;
                    Ok(Page { items, total })
                }
            }
            None if !needs_records => {
                let total = self.count()?;
                let mut items = Vec::new();
                for kv in self.tokens.iter().values().skip(offset).take(limit) {
                    items.push(decode(&kv.map_err(unavailable)?)?);
                }
                Ok(Page { items, total })
            }
            None => {
                let mut total = 0u64;
                let mut items = Vec::new();
                for kv in self.tokens.iter().values() {
                    let r: TokenRecord = decode(&kv.map_err(unavailable)?)?;
                    if filter.matches(&r) {
                        if total >= offset as u64 && items.len() < limit {
                            items.push(r);
                        }
                        total += 1;
                    }
                }
                Ok(Page { items, total })
            }
        }
    }

    fn insert(&self, token: NewToken, per_user_limit: u32) -> Result<TokenRecord, InsertError> {
        self.trees()
            .transaction(|trees| {
                let (_, h, _, _, c, m) = trees;
                let owned = u64_of(c.get(token.user_key.as_bytes())?);
                if per_user_limit > 0 && owned >= u64::from(per_user_limit) {
                    return Err(ConflictableTransactionError::Abort(Abort::Limit(
                        per_user_limit,
                    )));
                }
                if h.get(token.hash.0)?.is_some() {
                    return Err(ConflictableTransactionError::Abort(Abort::Corrupt(
                        "token hash already present".into(),
                    )));
                }
                let id = u64_of(m.get(NEXT_ID)?).max(1);
                let record = TokenRecord {
                    id,
                    hash: token.hash,
                    description: token.description.clone(),
                    user_key: token.user_key.clone(),
                    user_name: token.user_name.clone(),
                    created_by: token.created_by.clone(),
                    created: token.created,
                    valid_until: token.valid_until,
                    last_accessed: 0,
                    scope: token.scope,
                };
                Self::put_in(
                    (&trees.0, &trees.1, &trees.2, &trees.3, &trees.4, &trees.5),
                    &record,
                )?;
                Ok(record)
            })
            .map_err(tx_error)
    }

    fn restore(&self, records: &[TokenRecord]) -> Result<u64, StoreError> {
        self.trees()
            .transaction(|trees| {
                let mut added = 0;
                for record in records {
                    if trees.0.get(record.id.to_be_bytes())?.is_some()
                        || trees.1.get(record.hash.0)?.is_some()
                    {
                        continue;
                    }
                    Self::put_in(
                        (&trees.0, &trees.1, &trees.2, &trees.3, &trees.4, &trees.5),
                        record,
                    )?;
                    added += 1;
                }
                Ok(added)
            })
            .map_err(store_error)
    }

    fn update_description(
        &self,
        id: u64,
        description: &str,
    ) -> Result<Option<TokenRecord>, StoreError> {
        let mut bad = None;
        let updated = self
            .tokens
            .update_and_fetch(id.to_be_bytes(), |old| {
                let old = old?;
                match postcard::from_bytes::<TokenRecord>(old) {
                    Ok(mut r) => {
                        r.description = description.to_string();
                        match postcard::to_allocvec(&r) {
                            Ok(v) => Some(v),
                            Err(e) => {
                                bad = Some(e.to_string());
                                Some(old.to_vec())
                            }
                        }
                    }
                    Err(e) => {
                        bad = Some(e.to_string());
                        Some(old.to_vec())
                    }
                }
            })
            .map_err(unavailable)?;
        if let Some(e) = bad {
            return Err(StoreError::Corrupt(e));
        }
        updated.map(|b| decode(&b)).transpose()
    }

    fn delete(&self, id: u64) -> Result<Option<TokenRecord>, StoreError> {
        self.trees()
            .transaction(|trees| {
                Self::remove_in(
                    (&trees.0, &trees.1, &trees.2, &trees.3, &trees.4, &trees.5),
                    id,
                )
            })
            .map_err(store_error)
    }

    fn delete_user(&self, user_key: &str) -> Result<u64, StoreError> {
        let mut n = 0;
        for id in self.user_ids(user_key)? {
            if self.delete(id)?.is_some() {
                n += 1;
            }
        }
        Ok(n)
    }

    fn record_access(&self, batch: &[(u64, u64)]) -> Result<(), StoreError> {
        for &(id, at) in batch {
            self.tokens
                .update_and_fetch(id.to_be_bytes(), |old| {
                    let old = old?;
                    match postcard::from_bytes::<TokenRecord>(old) {
                        Ok(mut r) if r.last_accessed < at => {
                            r.last_accessed = at;
                            postcard::to_allocvec(&r)
                                .ok()
                                .or_else(|| Some(old.to_vec()))
                        }
                        _ => Some(old.to_vec()),
                    }
                })
                .map_err(unavailable)?;
        }
        Ok(())
    }

    fn count(&self) -> Result<u64, StoreError> {
        Ok(u64_of(self.meta.get(COUNT).map_err(unavailable)?))
    }

    fn next_id(&self) -> Result<u64, StoreError> {
        Ok(u64_of(self.meta.get(NEXT_ID).map_err(unavailable)?).max(1))
    }

    fn raise_next_id(&self, next: u64) -> Result<(), StoreError> {
        self.meta
            .fetch_and_update(NEXT_ID, |old| {
                let current = u64_of(old.map(sled::IVec::from)).max(1);
                Some(current.max(next).to_be_bytes().to_vec())
            })
            .map(|_| ())
            .map_err(unavailable)
    }

    fn scan(&self, visit: &mut dyn FnMut(TokenRecord) -> bool) -> Result<(), StoreError> {
        for kv in self.tokens.iter().values() {
            if !visit(decode(&kv.map_err(unavailable)?)?) {
                break;
            }
        }
        Ok(())
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.db.flush().map(|_| ()).map_err(unavailable)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{NewToken, Scope};

    #[test]
    fn a_store_of_the_first_layout_is_migrated_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        let hash = TokenHash::of("seed");
        {
            let backend = SledBackend::open(&path).unwrap();
            let new = NewToken {
                hash,
                description: "old".into(),
                user_key: "U1".into(),
                user_name: "u1".into(),
                created_by: "U1".into(),
                created: 1,
                valid_until: 0,
                scope: Scope::ReadWrite,
            };
            let r = backend.insert(new, 0).map_err(|_| "insert").unwrap();
            // What layout 1 kept: the whole entry under the hash in
            // `hashes`, no `hash_ids`, no marker.
            let old = postcard::to_allocvec(&r.auth_entry()).unwrap();
            backend
                .db
                .open_tree("hashes")
                .unwrap()
                .insert(hash.0, old)
                .unwrap();
            backend.hashes.clear().unwrap();
            backend.meta.remove(LAYOUT).unwrap();
            backend.db.flush().unwrap();
        }
        let backend = SledBackend::open(&path).unwrap();
        let entry = backend
            .lookup(&hash)
            .unwrap()
            .expect("found after migration");
        assert_eq!((entry.id, entry.user_key.as_str()), (1, "U1"));
        assert_eq!(u64_of(backend.meta.get(LAYOUT).unwrap()), CURRENT_LAYOUT);
        assert!(
            backend.db.open_tree("hashes").unwrap().is_empty(),
            "an older binary started on this store finds no token to misread"
        );
    }
}
