//! The sled engine.
//!
//! Trees (all keys big-endian so that byte order is numeric order):
//! - `records`:    id >> 4 → the records of those 16 ids ([`block`])
//! - `search`:     id >> 4 → scope and lower-case description of those ids
//!   (the description and scope filters scan this, not the records)
//! - `hash_index`: first two bytes of the SHA-256 → (SHA-256 ‖ id)* sorted
//!   (the store's hot-path cache keeps used tokens in memory)
//! - `owners`:     user key → the user's ids, 8 bytes each, ascending
//! - `by_expiry`:  validUntil ‖ id → () (never-expiring tokens are not indexed)
//! - `meta`:       `next_id`, `count`, `layout`
//! - `notices`:    id ‖ notice name → lease end (epoch ms, 8 bytes), or
//!   [`NOTICE_SENT`] once sent: which expiry and creation notices went out
//!
//! A rotated token's previous secret, while its grace lasts, has its own
//! entry in `hash_index`, pointing at the same id.
//!
//! Records and index entries are packed several to a key because sled 0.34
//! splits a leaf page at 16 keys and keeps bookkeeping for every page in
//! memory: one key per token and index (layout 2) held 120 MB of heap at a
//! million tokens, packed (layout 3) about a third of that (README, "A
//! million tokens").
//!
//! Every change touches its record and indexes in one transaction.

use std::path::Path;

use sled::transaction::{ConflictableTransactionError, TransactionError, TransactionalTree};
use sled::{Transactional, Tree};

mod backend;
mod codec;
mod files;
mod migrate;
#[cfg(test)]
mod tests;

use super::{
    Access, Filter, FoundEntry, InsertError, NewToken, Page, Previous, Rotated, StoreError,
    TokenRecord,
};
pub use backend::SledBackend;
use codec::*;
use files::{private_dir, private_files};

use crate::token::TokenHash;

const NEXT_ID: &[u8] = b"next_id";
const COUNT: &[u8] = b"count";
/// The value of a notice in `notices` once it was sent.
const NOTICE_SENT: &[u8] = b"sent";
/// The sled engine itself: synchronous calls, quick except `flush` and
/// `filter`. [`SledBackend`] is what the gateway uses.
pub struct SledEngine {
    db: sled::Db,
    records: Tree,
    search: Tree,
    hashes: Tree,
    owners: Tree,
    by_expiry: Tree,
    meta: Tree,
    notices: Tree,
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

fn corrupt(e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(e.to_string())
}

/// Which of our own errors a transaction aborted with.
enum Abort {
    Limit(u32),
    Corrupt(String),
}

type TxResult<T> = Result<T, ConflictableTransactionError<Abort>>;

fn tx_corrupt(message: impl Into<String>) -> ConflictableTransactionError<Abort> {
    ConflictableTransactionError::Abort(Abort::Corrupt(message.into()))
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

/// Stores `value` under `key`, or removes the key when `value` is empty.
fn put_or_remove(tree: &TransactionalTree, key: &[u8], value: Vec<u8>) -> TxResult<()> {
    if value.is_empty() {
        tree.remove(key)?;
    } else {
        tree.insert(key, value)?;
    }
    Ok(())
}

/// Stores a `records` block and the `search` block derived from it.
fn write_block(
    records: &TransactionalTree,
    search: &TransactionalTree,
    key: &[u8],
    block: Vec<u8>,
) -> TxResult<()> {
    put_or_remove(search, key, search_block(&block).map_err(tx_corrupt)?)?;
    put_or_remove(records, key, block)
}

fn add(tree: &TransactionalTree, key: &[u8], delta: i64) -> TxResult<u64> {
    let current = u64_of(tree.get(key)?);
    let next = current.saturating_add_signed(delta);
    tree.insert(key, &next.to_be_bytes())?;
    Ok(next)
}

/// The trees a transaction touches, in the order of [`SledEngine::trees`].
type Tx<'a> = (
    &'a TransactionalTree,
    &'a TransactionalTree,
    &'a TransactionalTree,
    &'a TransactionalTree,
    &'a TransactionalTree,
    &'a TransactionalTree,
);

impl SledEngine {
    pub fn open(path: &Path) -> Result<SledEngine, StoreError> {
        let backend = Self::open_trees(path)?;
        if backend.migrate()? {
            // Moving read every page of the old trees into memory; a fresh
            // start holds only what the packed trees need.
            drop(backend);
            return Self::reopen(path);
        }
        Ok(backend)
    }

    /// Opens a store this process has just closed: sled's background
    /// writers may hold its file lock for a moment after the close.
    pub fn reopen(path: &Path) -> Result<SledEngine, StoreError> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            match Self::open(path) {
                Err(StoreError::InUse(_)) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                opened => return opened,
            }
        }
    }

    fn open_trees(path: &Path) -> Result<SledEngine, StoreError> {
        let created = private_dir(path)?;
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
        let backend = SledEngine {
            records: tree("records")?,
            search: tree("search")?,
            hashes: tree("hash_index")?,
            owners: tree("owners")?,
            by_expiry: tree("by_expiry")?,
            meta: tree("meta")?,
            notices: tree("notices")?,
            db,
        };
        if created {
            private_files(path);
        }
        Ok(backend)
    }

    /// Records of `ids` that exist, by id; each block is read once.
    fn records_by_ids(
        &self,
        ids: impl IntoIterator<Item = u64>,
    ) -> Result<Vec<TokenRecord>, StoreError> {
        let mut ids: Vec<u64> = ids.into_iter().collect();
        ids.sort_unstable();
        ids.dedup();
        let mut out = Vec::with_capacity(ids.len());
        let mut current: Option<(u64, Option<sled::IVec>)> = None;
        for id in ids {
            let key = id >> block::BITS;
            if current.as_ref().is_none_or(|(k, _)| *k != key) {
                let bytes = self.records.get(key.to_be_bytes()).map_err(unavailable)?;
                current = Some((key, bytes));
            }
            if let Some((_, Some(bytes))) = &current
                && let Some(r) = record_in(bytes, id)?
            {
                out.push(r);
            }
        }
        Ok(out)
    }

    fn user_ids(&self, user_key: &str) -> Result<Vec<u64>, StoreError> {
        let ids = self.owners.get(user_key).map_err(unavailable)?;
        Ok(ids.map(|b| owner_ids(&b).collect()).unwrap_or_default())
    }

    /// Removes a record and its index entries inside a transaction.
    fn remove_in((t, s, h, o, e, m): Tx<'_>, id: u64) -> TxResult<Option<TokenRecord>> {
        let key = block::key(id);
        let Some(bytes) = t.get(key)? else {
            return Ok(None);
        };
        let Some((payload, rest)) = block::remove(&bytes, id).map_err(tx_corrupt)? else {
            return Ok(None);
        };
        let r = decode_record(payload).map_err(tx_corrupt)?;
        write_block(t, s, &key, rest)?;
        for hash in std::iter::once(r.hash).chain(r.previous.map(|p| p.hash)) {
            Self::unindex_hash(h, &hash)?;
        }
        let ids = o.get(r.user_key.as_bytes())?.unwrap_or_default();
        if let Some(rest) = sorted::remove(&ids, 8, &id.to_be_bytes()) {
            put_or_remove(o, r.user_key.as_bytes(), rest)?;
        }
        if r.valid_until != 0 {
            e.remove(&expiry_key(r.valid_until, id))?;
        }
        add(m, COUNT, -1)?;
        Ok(Some(r))
    }

    /// Takes `hash`'s entry out of the hash index, if it is there.
    fn unindex_hash(h: &TransactionalTree, hash: &TokenHash) -> TxResult<()> {
        let bucket = bucket_key(hash);
        let entries = h.get(bucket)?.unwrap_or_default();
        if let Some(rest) = sorted::remove(&entries, HASH_ENTRY, &hash.0) {
            put_or_remove(h, &bucket, rest)?;
        }
        Ok(())
    }

    /// Points `hash` at `id` in the hash index; false, writing nothing, when
    /// the hash is there already.
    fn index_hash(h: &TransactionalTree, hash: &TokenHash, id: u64) -> TxResult<bool> {
        let bucket = bucket_key(hash);
        let entries = h.get(bucket)?.unwrap_or_default();
        match sorted::insert(&entries, HASH_ENTRY, 32, &hash_entry(hash, id)) {
            Some(with_hash) => {
                h.insert(&bucket, with_hash)?;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Writes a new record and its index entries inside a transaction.
    /// Returns false, writing nothing, when its id or a hash is taken.
    fn put_in((t, s, h, o, e, m): Tx<'_>, r: &TokenRecord) -> TxResult<bool> {
        let key = block::key(r.id);
        let records = t.get(key)?.unwrap_or_default();
        let taken = block::entries(&records).any(|e| e.is_ok_and(|(id, _)| id == r.id));
        let hashes: Vec<TokenHash> = std::iter::once(r.hash)
            .chain(r.previous.map(|p| p.hash))
            .collect();
        for hash in &hashes {
            let entries = h.get(bucket_key(hash))?.unwrap_or_default();
            if taken || sorted::find(&entries, HASH_ENTRY, &hash.0).is_some() {
                return Ok(false);
            }
        }
        if hashes.len() == 2 && hashes[0] == hashes[1] {
            return Ok(false);
        }
        let record = encode_record(r).map_err(tx_corrupt)?;
        let records = block::put(&records, r.id, &record).map_err(tx_corrupt)?;
        write_block(t, s, &key, records)?;
        for hash in &hashes {
            Self::index_hash(h, hash, r.id)?;
        }
        let ids = o.get(r.user_key.as_bytes())?.unwrap_or_default();
        if let Some(with_id) = sorted::insert(&ids, 8, 8, &r.id.to_be_bytes()) {
            o.insert(r.user_key.as_bytes(), with_id)?;
        }
        if r.valid_until != 0 {
            e.insert(&expiry_key(r.valid_until, r.id), &[])?;
        }
        add(m, COUNT, 1)?;
        let next = u64_of(m.get(NEXT_ID)?).max(1);
        if r.id >= next {
            m.insert(NEXT_ID, &r.id.saturating_add(1).to_be_bytes())?;
        }
        Ok(true)
    }

    fn trees(&self) -> (&Tree, &Tree, &Tree, &Tree, &Tree, &Tree) {
        (
            &self.records,
            &self.search,
            &self.hashes,
            &self.owners,
            &self.by_expiry,
            &self.meta,
        )
    }

    /// Raises `lastAccessed` of records of one block (`raises` holds ids of
    /// that block with times); deleted ids are skipped, and the block is
    /// written only if a time was raised. `lastAccessed` is not in `search`.
    fn raise_last_access(&self, key: [u8; 8], raises: &[Access]) -> Result<(), StoreError> {
        // A transaction or another raise may change the block between the
        // read and the swap; then it is read again.
        for _ in 0..64 {
            let Some(old) = self.records.get(key).map_err(unavailable)? else {
                return Ok(());
            };
            let mut block = old.to_vec();
            let mut raised = false;
            for &Access { id, at, from } in raises {
                if let Some(mut r) = record_in(&block, id)?
                    && r.last_accessed < at
                {
                    (r.last_accessed, r.last_accessed_from) = (at, Some(from));
                    let record = encode_record(&r).map_err(StoreError::Corrupt)?;
                    block = block::put(&block, id, &record).map_err(StoreError::Corrupt)?;
                    raised = true;
                }
            }
            if !raised {
                return Ok(());
            }
            match self.records.compare_and_swap(key, Some(old), Some(block)) {
                Ok(Ok(())) => return Ok(()),
                Ok(Err(_)) => continue,
                Err(e) => return Err(unavailable(e)),
            }
        }
        Err(StoreError::Unavailable(
            "lastAccessed not recorded: the block kept changing".into(),
        ))
    }

    /// Every record by id ascending, `skip` of them passed over without
    /// being decoded.
    fn walk(
        &self,
        mut skip: u64,
        visit: &mut dyn FnMut(TokenRecord) -> bool,
    ) -> Result<(), StoreError> {
        for value in self.records.iter().values() {
            let value = value.map_err(unavailable)?;
            for entry in block::entries(&value) {
                let (_, bytes) = entry.map_err(StoreError::Corrupt)?;
                if skip > 0 {
                    skip -= 1;
                    continue;
                }
                if !visit(decode_record(bytes).map_err(StoreError::Corrupt)?) {
                    return Ok(());
                }
            }
        }
        Ok(())
    }
}

impl SledEngine {
    pub fn lookup(&self, hash: &TokenHash) -> Result<Option<FoundEntry>, StoreError> {
        let Some(bucket) = self.hashes.get(bucket_key(hash)).map_err(unavailable)? else {
            return Ok(None);
        };
        let Some(id) = id_in_bucket(&bucket, hash) else {
            return Ok(None);
        };
        match self.get(id)? {
            Some(r) => match r.entry_for(hash) {
                Some(entry) => Ok(Some(entry)),
                None => Err(StoreError::Corrupt(format!(
                    "the hash index points at token {id}, which has another hash"
                ))),
            },
            None => Ok(None),
        }
    }

    pub fn get(&self, id: u64) -> Result<Option<TokenRecord>, StoreError> {
        match self.records.get(block::key(id)).map_err(unavailable)? {
            Some(bytes) => record_in(&bytes, id),
            None => Ok(None),
        }
    }

    pub fn list_user(&self, user_key: &str) -> Result<Vec<TokenRecord>, StoreError> {
        let ids = self.user_ids(user_key)?;
        self.records_by_ids(ids)
    }

    pub fn filter(&self, filter: &Filter, offset: u64, limit: u64) -> Result<Page, StoreError> {
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
        let needs_records = filter.description.is_some()
            || filter.scope.is_some()
            || filter.allowed_ips_set.is_some();
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
                if limit > 0 {
                    self.walk(offset as u64, &mut |r| {
                        items.push(r);
                        items.len() < limit
                    })?;
                }
                Ok(Page { items, total })
            }
            // Description or scope alone: a scan of `search`, which is
            // much smaller than the records.
            None => {
                let mut total = 0u64;
                let mut ids = Vec::new();
                for value in self.search.iter().values() {
                    let value = value.map_err(unavailable)?;
                    for entry in block::entries(&value) {
                        let (id, entry) = entry.map_err(StoreError::Corrupt)?;
                        if search_matches(filter, entry) {
                            if total >= offset as u64 && ids.len() < limit {
                                ids.push(id);
                            }
                            total += 1;
                        }
                    }
                }
                let items = self.records_by_ids(ids)?;
                Ok(Page { items, total })
            }
        }
    }

    pub fn insert(&self, token: NewToken, per_user_limit: u32) -> Result<TokenRecord, InsertError> {
        self.trees()
            .transaction(|trees| {
                let (_, _, _, o, _, m) = trees;
                let owned = o
                    .get(token.user_key.as_bytes())?
                    .map_or(0, |ids| ids.len() / 8);
                if per_user_limit > 0 && owned >= per_user_limit as usize {
                    return Err(ConflictableTransactionError::Abort(Abort::Limit(
                        per_user_limit,
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
                    allowed_ips: token.allowed_ips.clone(),
                    last_accessed_from: None,
                    previous: None,
                };
                if !Self::put_in(
                    (&trees.0, &trees.1, &trees.2, &trees.3, &trees.4, &trees.5),
                    &record,
                )? {
                    return Err(tx_corrupt("token hash or id already present"));
                }
                Ok(record)
            })
            .map_err(tx_error)
    }

    pub fn restore(&self, records: &[TokenRecord]) -> Result<u64, StoreError> {
        self.trees()
            .transaction(|trees| {
                let mut added = 0;
                for record in records {
                    if Self::put_in(
                        (&trees.0, &trees.1, &trees.2, &trees.3, &trees.4, &trees.5),
                        record,
                    )? {
                        added += 1;
                    }
                }
                Ok(added)
            })
            .map_err(store_error)
    }

    pub fn update_description(
        &self,
        id: u64,
        description: &str,
    ) -> Result<Option<TokenRecord>, StoreError> {
        (&self.records, &self.search)
            .transaction(|(t, s)| {
                let key = block::key(id);
                let Some(bytes) = t.get(key)? else {
                    return Ok(None);
                };
                let Some(payload) = block::find(&bytes, id).map_err(tx_corrupt)? else {
                    return Ok(None);
                };
                let mut r = decode_record(payload).map_err(tx_corrupt)?;
                r.description = description.to_string();
                let record = encode_record(&r).map_err(tx_corrupt)?;
                write_block(
                    t,
                    s,
                    &key,
                    block::put(&bytes, id, &record).map_err(tx_corrupt)?,
                )?;
                Ok(Some(r))
            })
            .map_err(store_error)
    }

    pub fn rotate(
        &self,
        id: u64,
        new_hash: TokenHash,
        previous_until: Option<u64>,
    ) -> Result<Option<Rotated>, StoreError> {
        (&self.records, &self.search, &self.hashes)
            .transaction(|(t, s, h)| {
                let key = block::key(id);
                let Some(bytes) = t.get(key)? else {
                    return Ok(None);
                };
                let Some(payload) = block::find(&bytes, id).map_err(tx_corrupt)? else {
                    return Ok(None);
                };
                let mut r = decode_record(payload).map_err(tx_corrupt)?;
                let replaced: Vec<TokenHash> = std::iter::once(r.hash)
                    .chain(r.previous.map(|p| p.hash))
                    .collect();
                if let Some(p) = r.previous {
                    Self::unindex_hash(h, &p.hash)?;
                }
                if previous_until.is_none() {
                    Self::unindex_hash(h, &r.hash)?;
                }
                if replaced.contains(&new_hash) || !Self::index_hash(h, &new_hash, id)? {
                    return Err(tx_corrupt("token hash already present"));
                }
                r.previous = previous_until.map(|until| Previous {
                    hash: r.hash,
                    until,
                });
                r.hash = new_hash;
                let record = encode_record(&r).map_err(tx_corrupt)?;
                write_block(
                    t,
                    s,
                    &key,
                    block::put(&bytes, id, &record).map_err(tx_corrupt)?,
                )?;
                Ok(Some(Rotated {
                    record: r,
                    replaced,
                }))
            })
            .map_err(store_error)
    }

    pub fn delete(&self, id: u64) -> Result<Option<TokenRecord>, StoreError> {
        let deleted = self
            .trees()
            .transaction(|trees| {
                Self::remove_in(
                    (&trees.0, &trees.1, &trees.2, &trees.3, &trees.4, &trees.5),
                    id,
                )
            })
            .map_err(store_error)?;
        if deleted.is_some() {
            self.forget_notices(id);
        }
        Ok(deleted)
    }

    /// Drops the notices of a deleted token (a claim of an id that no
    /// longer exists would never be looked at again).
    fn forget_notices(&self, id: u64) {
        for key in self.notices.scan_prefix(id.to_be_bytes()).keys().flatten() {
            let _ = self.notices.remove(key);
        }
    }

    fn notice_key(id: u64, notice: &str) -> Vec<u8> {
        let mut key = id.to_be_bytes().to_vec();
        key.extend_from_slice(notice.as_bytes());
        key
    }

    pub fn claim_notice(
        &self,
        id: u64,
        notice: &str,
        now_ms: u64,
        lease_until: u64,
    ) -> Result<bool, StoreError> {
        if self.get(id)?.is_none() {
            return Ok(false);
        }
        let key = Self::notice_key(id, notice);
        let lease = lease_until.to_be_bytes();
        // One process holds a sled store, but its gateway may claim from
        // several tasks: compare-and-swap, read again when it lost a race.
        for _ in 0..64 {
            let current = self.notices.get(&key).map_err(unavailable)?;
            let free = match &current {
                None => true,
                Some(v) if v.as_ref() == NOTICE_SENT => false,
                Some(v) => u64_of(Some(v.clone())) <= now_ms,
            };
            if !free {
                return Ok(false);
            }
            match self
                .notices
                .compare_and_swap(&key, current, Some(&lease[..]))
            {
                Ok(Ok(())) => return Ok(true),
                Ok(Err(_)) => continue,
                Err(e) => return Err(unavailable(e)),
            }
        }
        Ok(false)
    }

    pub fn finish_notice(&self, id: u64, notice: &str, sent: bool) -> Result<(), StoreError> {
        let key = Self::notice_key(id, notice);
        if sent {
            self.notices.insert(key, NOTICE_SENT).map_err(unavailable)?;
        } else {
            self.notices
                .fetch_and_update(key, |v| match v {
                    Some(v) if v == NOTICE_SENT => Some(v.to_vec()),
                    _ => None,
                })
                .map_err(unavailable)?;
        }
        Ok(())
    }

    pub fn delete_user(&self, user_key: &str) -> Result<u64, StoreError> {
        // Several ids per transaction: the user's id list is rewritten once
        // per transaction rather than once per token.
        let mut n = 0;
        let all = self.user_ids(user_key)?;
        for ids in all.chunks(256) {
            n += self
                .trees()
                .transaction(|trees| {
                    let mut n = 0;
                    for &id in ids {
                        let tx = (&trees.0, &trees.1, &trees.2, &trees.3, &trees.4, &trees.5);
                        if Self::remove_in(tx, id)?.is_some() {
                            n += 1;
                        }
                    }
                    Ok(n)
                })
                .map_err(store_error)?;
        }
        for id in all {
            self.forget_notices(id);
        }
        Ok(n)
    }

    pub fn record_access(&self, batch: &[Access]) -> Result<(), StoreError> {
        let mut batch = batch.to_vec();
        batch.sort_unstable_by_key(|a| (a.id, a.at));
        for group in batch.chunk_by(|a, b| a.id >> block::BITS == b.id >> block::BITS) {
            let key = block::key(group[0].id);
            match self.raise_last_access(key, group) {
                // An unreadable block fails its tokens' look-ups (closed);
                // the times of the other blocks are still recorded.
                Err(StoreError::Corrupt(reason)) => {
                    tracing::warn!(
                        first_id = group[0].id,
                        %reason,
                        "lastAccessed not recorded for an unreadable block"
                    );
                }
                other => other?,
            }
        }
        Ok(())
    }

    pub fn count(&self) -> Result<u64, StoreError> {
        Ok(u64_of(self.meta.get(COUNT).map_err(unavailable)?))
    }

    pub fn next_id(&self) -> Result<u64, StoreError> {
        Ok(u64_of(self.meta.get(NEXT_ID).map_err(unavailable)?).max(1))
    }

    pub fn raise_next_id(&self, next: u64) -> Result<(), StoreError> {
        self.meta
            .fetch_and_update(NEXT_ID, |old| {
                let current = u64_of(old.map(sled::IVec::from)).max(1);
                Some(current.max(next).to_be_bytes().to_vec())
            })
            .map(|_| ())
            .map_err(unavailable)
    }

    pub fn scan(&self, visit: &mut dyn FnMut(TokenRecord) -> bool) -> Result<(), StoreError> {
        self.walk(0, visit)
    }

    /// Records with an id above `after`, by id ascending.
    pub fn scan_after(
        &self,
        after: u64,
        visit: &mut dyn FnMut(TokenRecord) -> bool,
    ) -> Result<(), StoreError> {
        let from = block::key(after.saturating_add(1));
        for value in self.records.range(from..).values() {
            let value = value.map_err(unavailable)?;
            for entry in block::entries(&value) {
                let (id, bytes) = entry.map_err(StoreError::Corrupt)?;
                if id > after && !visit(decode_record(bytes).map_err(StoreError::Corrupt)?) {
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    pub fn flush(&self) -> Result<(), StoreError> {
        self.db.flush().map(|_| ()).map_err(unavailable)
    }
}
