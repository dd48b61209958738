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

use super::{AuthEntry, Backend, Filter, InsertError, NewToken, Page, StoreError, TokenRecord};
use crate::token::TokenHash;

const NEXT_ID: &[u8] = b"next_id";
const COUNT: &[u8] = b"count";
/// Layout of the trees. 1 (implicit): `tokens` (id → record), `hashes`
/// (SHA-256 → entry), `by_user`, `by_expiry`, `counts`; 2: `hash_ids`
/// (SHA-256 → id) instead of `hashes`; 3: the packed trees above. Older
/// layouts are moved into the packed trees on open and their trees dropped;
/// a binary of layout 2 refuses a newer store, one of layout 1 finds no token
/// in it (fail closed either way).
const LAYOUT: &[u8] = b"layout";
const CURRENT_LAYOUT: u64 = 3;
/// Trees of layouts 1 and 2, dropped after migration.
const OLD_TREES: [&str; 5] = ["tokens", "hashes", "hash_ids", "by_user", "counts"];
/// Records moved per transaction by a migration.
const MIGRATION_CHUNK: usize = 1_000;

pub struct SledBackend {
    db: sled::Db,
    records: Tree,
    search: Tree,
    hashes: Tree,
    owners: Tree,
    by_expiry: Tree,
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

/// The value formats of the packed trees. Every function takes the stored
/// bytes (empty for a missing key) and treats them as untrusted: a value
/// that does not parse is reported, never a panic.
mod block {
    /// Entries of 16 consecutive ids share a key of `records` and `search`.
    pub const BITS: u32 = 4;

    pub fn key(id: u64) -> [u8; 8] {
        (id >> BITS).to_be_bytes()
    }

    /// The entries of a block, by id: id (8 bytes), length (4 bytes), the
    /// payload. Yields `(id, payload)`.
    pub fn entries(bytes: &[u8]) -> Entries<'_> {
        Entries { rest: bytes }
    }

    pub struct Entries<'a> {
        rest: &'a [u8],
    }

    impl<'a> Iterator for Entries<'a> {
        type Item = Result<(u64, &'a [u8]), String>;

        fn next(&mut self) -> Option<Self::Item> {
            if self.rest.is_empty() {
                return None;
            }
            let parsed = (|| {
                let (id, rest) = self.rest.split_first_chunk::<8>()?;
                let (len, rest) = rest.split_first_chunk::<4>()?;
                let len = usize::try_from(u32::from_be_bytes(*len)).ok()?;
                let payload = rest.get(..len)?;
                Some((u64::from_be_bytes(*id), payload, rest.get(len..)?))
            })();
            match parsed {
                Some((id, payload, rest)) => {
                    self.rest = rest;
                    Some(Ok((id, payload)))
                }
                None => {
                    self.rest = &[];
                    Some(Err("a truncated block".into()))
                }
            }
        }
    }

    fn push(out: &mut Vec<u8>, id: u64, payload: &[u8]) -> Result<(), String> {
        let len = u32::try_from(payload.len()).map_err(|_| "an entry over 4 GiB".to_string())?;
        out.extend_from_slice(&id.to_be_bytes());
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(payload);
        Ok(())
    }

    /// The payload of `id`, if the block holds it. The whole block is
    /// checked, so that a damaged block fails for every id in it alike
    /// (reads as well as the writes, which rebuild the block).
    pub fn find(bytes: &[u8], id: u64) -> Result<Option<&[u8]>, String> {
        let mut found = None;
        for entry in entries(bytes) {
            let (at, payload) = entry?;
            if at == id {
                found = Some(payload);
            }
        }
        Ok(found)
    }

    /// The block with `payload` put in its place (replacing one of its id).
    pub fn put(bytes: &[u8], id: u64, payload: &[u8]) -> Result<Vec<u8>, String> {
        let mut out = Vec::with_capacity(bytes.len() + payload.len() + 12);
        let mut placed = false;
        for entry in entries(bytes) {
            let (at, other) = entry?;
            if !placed && at >= id {
                push(&mut out, id, payload)?;
                placed = true;
            }
            if at != id {
                push(&mut out, at, other)?;
            }
        }
        if !placed {
            push(&mut out, id, payload)?;
        }
        Ok(out)
    }

    /// The payload of a removed entry, and the block without it.
    pub type Removed<'a> = Option<(&'a [u8], Vec<u8>)>;

    /// The payload of `id` and the block without it.
    pub fn remove(bytes: &[u8], id: u64) -> Result<Removed<'_>, String> {
        let mut out = Vec::with_capacity(bytes.len());
        let mut removed = None;
        for entry in entries(bytes) {
            let (at, payload) = entry?;
            if at == id {
                removed = Some(payload);
            } else {
                push(&mut out, at, payload)?;
            }
        }
        Ok(removed.map(|p| (p, out)))
    }
}

fn decode_record(payload: &[u8]) -> Result<TokenRecord, String> {
    postcard::from_bytes(payload).map_err(|e| e.to_string())
}

fn encode_record(r: &TokenRecord) -> Result<Vec<u8>, String> {
    postcard::to_allocvec(r).map_err(|e| e.to_string())
}

/// The record of `id` in a `records` block.
fn record_in(block: &[u8], id: u64) -> Result<Option<TokenRecord>, StoreError> {
    block::find(block, id)
        .and_then(|p| p.map(decode_record).transpose())
        .map_err(StoreError::Corrupt)
}

/// A `search` entry: what the description and scope filters look at,
/// without reading the record. The scope code, then the description in
/// lower case, as [`Filter::matches`] compares it.
fn search_entry(r: &TokenRecord) -> Vec<u8> {
    let mut e = vec![r.scope.code()];
    e.extend_from_slice(r.description.to_lowercase().as_bytes());
    e
}

/// The `search` block for a `records` block: derived whole on every
/// write, so that it cannot drift from the records (and a damaged one is
/// replaced rather than blocking writes).
fn search_block(records: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    for entry in block::entries(records) {
        let (id, payload) = entry?;
        out = block::put(&out, id, &search_entry(&decode_record(payload)?))?;
    }
    Ok(out)
}

fn search_matches(filter: &Filter, entry: &[u8]) -> bool {
    let Some((&scope, description)) = entry.split_first() else {
        return false;
    };
    if filter.scope.is_some_and(|s| s.code() != scope) {
        return false;
    }
    match &filter.description {
        Some(needle) => std::str::from_utf8(description).is_ok_and(|d| d.contains(needle.as_str())),
        None => true,
    }
}

/// Sorted arrays of fixed-width entries, compared on their first bytes:
/// `hash_index` buckets (SHA-256 ‖ id) and `owners` lists (id).
mod sorted {
    use std::cmp::Ordering;

    /// Where the entry whose first bytes are `key` is, or would go.
    fn position(bytes: &[u8], width: usize, key: &[u8]) -> Result<usize, usize> {
        let (mut low, mut high) = (0, bytes.len() / width);
        while low < high {
            let mid = low + (high - low) / 2;
            let at = bytes
                .get(mid * width..mid * width + key.len())
                .unwrap_or_default();
            match at.cmp(key) {
                Ordering::Less => low = mid + 1,
                Ordering::Greater => high = mid,
                Ordering::Equal => return Ok(mid),
            }
        }
        Err(low)
    }

    /// The entry whose first bytes are `key`.
    pub fn find<'a>(bytes: &'a [u8], width: usize, key: &[u8]) -> Option<&'a [u8]> {
        let i = position(bytes, width, key).ok()?;
        bytes.get(i * width..(i + 1) * width)
    }

    /// `bytes` with `entry` added; `None` if an entry with its key is there.
    pub fn insert(bytes: &[u8], width: usize, key_len: usize, entry: &[u8]) -> Option<Vec<u8>> {
        let i = position(bytes, width, entry.get(..key_len)?).err()?;
        let at = (i * width).min(bytes.len());
        let mut out = Vec::with_capacity(bytes.len() + width);
        out.extend_from_slice(bytes.get(..at)?);
        out.extend_from_slice(entry);
        out.extend_from_slice(bytes.get(at..)?);
        Some(out)
    }

    /// `bytes` without the entry whose first bytes are `key`; `None` if absent.
    pub fn remove(bytes: &[u8], width: usize, key: &[u8]) -> Option<Vec<u8>> {
        let i = position(bytes, width, key).ok()?;
        let mut out = Vec::with_capacity(bytes.len());
        out.extend_from_slice(bytes.get(..i * width)?);
        out.extend_from_slice(bytes.get((i + 1) * width..)?);
        Some(out)
    }
}

/// A `hash_index` entry: SHA-256 ‖ id.
const HASH_ENTRY: usize = 40;

fn bucket_key(hash: &TokenHash) -> [u8; 2] {
    [hash.0[0], hash.0[1]]
}

fn hash_entry(hash: &TokenHash, id: u64) -> [u8; HASH_ENTRY] {
    let mut e = [0u8; HASH_ENTRY];
    e[..32].copy_from_slice(&hash.0);
    e[32..].copy_from_slice(&id.to_be_bytes());
    e
}

/// The id stored for `hash` in its bucket.
fn id_in_bucket(bucket: &[u8], hash: &TokenHash) -> Option<u64> {
    let entry = sorted::find(bucket, HASH_ENTRY, &hash.0)?;
    Some(u64::from_be_bytes(entry.get(32..)?.try_into().ok()?))
}

/// The ids of an `owners` value.
fn owner_ids(bytes: &[u8]) -> impl Iterator<Item = u64> + '_ {
    bytes
        .chunks_exact(8)
        .filter_map(|c| c.try_into().ok().map(u64::from_be_bytes))
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

/// The trees a transaction touches, in the order of [`SledBackend::trees`].
type Tx<'a> = (
    &'a TransactionalTree,
    &'a TransactionalTree,
    &'a TransactionalTree,
    &'a TransactionalTree,
    &'a TransactionalTree,
    &'a TransactionalTree,
);

/// Makes sure the store's directory exists and only its owner can enter it:
/// a new one is created `0700` whatever the umask, so the files sled writes
/// into it, now and later, are out of everyone else's reach. An existing one
/// that others may enter is left as the operator made it, with a warning.
/// True when the directory was created now.
fn private_dir(path: &Path) -> Result<bool, StoreError> {
    let cannot = |e: std::io::Error| {
        StoreError::Unavailable(format!(
            "cannot open {}: cannot create its directory: {e}",
            path.display()
        ))
    };
    if path.exists() {
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            if let Ok(meta) = std::fs::metadata(path)
                && meta.permissions().mode() & 0o077 != 0
            {
                tracing::warn!(
                    store = %path.display(),
                    mode = format!("{:o}", meta.permissions().mode() & 0o777),
                    "the token store's directory is open to other users; make it private with: chmod -R go-rwx {}",
                    path.display()
                );
            }
        }
        return Ok(false);
    }
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        builder.mode(0o700);
        builder.create(path).map_err(cannot)?;
        // `mode` is filtered by the umask: set it outright.
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700)).map_err(cannot)?;
    }
    #[cfg(not(unix))]
    builder.create(path).map_err(cannot)?;
    Ok(true)
}

/// Files of a store just created: `0600`, directories `0700`, whatever the
/// umask made them.
fn private_files(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mut stack = vec![path.to_path_buf()];
        while let Some(dir) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for e in entries.flatten() {
                let (mode, is_dir) = match e.file_type() {
                    Ok(t) if t.is_dir() => (0o700, true),
                    Ok(t) if t.is_file() => (0o600, false),
                    _ => continue,
                };
                if let Err(err) =
                    std::fs::set_permissions(e.path(), std::fs::Permissions::from_mode(mode))
                {
                    tracing::warn!(file = %e.path().display(), error = %err, "cannot make a token store file private");
                }
                if is_dir {
                    stack.push(e.path());
                }
            }
        }
    }
    #[cfg(not(unix))]
    let _ = path;
}

impl SledBackend {
    pub fn open(path: &Path) -> Result<SledBackend, StoreError> {
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
    pub fn reopen(path: &Path) -> Result<SledBackend, StoreError> {
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

    fn open_trees(path: &Path) -> Result<SledBackend, StoreError> {
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
        let backend = SledBackend {
            records: tree("records")?,
            search: tree("search")?,
            hashes: tree("hash_index")?,
            owners: tree("owners")?,
            by_expiry: tree("by_expiry")?,
            meta: tree("meta")?,
            db,
        };
        if created {
            private_files(path);
        }
        Ok(backend)
    }

    /// Brings a store written by an older version to [`CURRENT_LAYOUT`] by
    /// moving the records of the old `tokens` tree into the packed trees,
    /// then dropping the old trees. Also picks up tokens that a binary of
    /// layout 1 (which does not check the layout) added after a rollback.
    /// Returns whether anything was moved.
    ///
    /// The layout is marked first, so a binary of layout 2 refuses a store
    /// that is half moved; each record leaves the old trees in the
    /// transaction that adds it to the new ones, so an interrupted move
    /// resumes where it stopped and a token is never in both layouts (one
    /// deleted by an older binary in between cannot come back).
    fn migrate(&self) -> Result<bool, StoreError> {
        let layout = u64_of(self.meta.get(LAYOUT).map_err(unavailable)?);
        if layout > CURRENT_LAYOUT {
            return Err(StoreError::Corrupt(format!(
                "store layout {layout} is newer than this version understands ({CURRENT_LAYOUT})"
            )));
        }
        if layout != CURRENT_LAYOUT {
            self.set_layout()?;
        }
        let names = self.db.tree_names();
        if !OLD_TREES
            .iter()
            .any(|t| names.iter().any(|n| n == t.as_bytes()))
        {
            return Ok(false);
        }
        let (mut moved, mut skipped) = (0u64, 0u64);
        while let Some((added, taken)) = self.move_old_records(MIGRATION_CHUNK)? {
            if moved + skipped == 0 {
                tracing::info!("moving the store to layout {CURRENT_LAYOUT}; this runs once");
            }
            moved += added;
            skipped += taken - added;
        }
        if skipped > 0 {
            tracing::warn!(
                skipped,
                "old records whose id or hash the store already holds were not moved"
            );
        }
        // Every moved record was counted again on top of the old count.
        let mut count = 0u64;
        for value in self.records.iter().values() {
            for entry in block::entries(&value.map_err(unavailable)?) {
                entry.map_err(StoreError::Corrupt)?;
                count += 1;
            }
        }
        self.meta
            .insert(COUNT, &count.to_be_bytes())
            .map_err(unavailable)?;
        for name in OLD_TREES {
            self.db.drop_tree(name).map_err(unavailable)?;
        }
        self.db.flush().map_err(unavailable)?;
        if moved > 0 {
            tracing::info!(moved, "store moved to layout {CURRENT_LAYOUT}");
        }
        Ok(moved > 0)
    }

    /// Moves up to `limit` records from the old `tokens` tree, taking their
    /// entries out of the old hash indexes in the same transaction. Returns
    /// how many were added and how many were taken, `None` when none are left.
    fn move_old_records(&self, limit: usize) -> Result<Option<(u64, u64)>, StoreError> {
        let open = |name: &str| self.db.open_tree(name).map_err(unavailable);
        let (old, old_entries, old_ids) = (open("tokens")?, open("hashes")?, open("hash_ids")?);
        let mut chunk = Vec::with_capacity(limit);
        for kv in old.iter().take(limit) {
            let (key, value) = kv.map_err(unavailable)?;
            chunk.push((key, decode::<TokenRecord>(&value)?));
        }
        if chunk.is_empty() {
            return Ok(None);
        }
        let (t, s, h, o, e, m) = self.trees();
        let added = (t, s, h, o, e, m, &old, &old_entries, &old_ids)
            .transaction(|trees| {
                let mut added = 0;
                for (key, record) in &chunk {
                    let tx = (&trees.0, &trees.1, &trees.2, &trees.3, &trees.4, &trees.5);
                    if Self::put_in(tx, record)? {
                        added += 1;
                    }
                    trees.6.remove(key)?;
                    trees.7.remove(&record.hash.0)?;
                    trees.8.remove(&record.hash.0)?;
                }
                Ok(added)
            })
            .map_err(store_error)?;
        Ok(Some((added, chunk.len() as u64)))
    }

    fn set_layout(&self) -> Result<(), StoreError> {
        self.meta
            .insert(LAYOUT, &CURRENT_LAYOUT.to_be_bytes())
            .map_err(unavailable)?;
        self.db.flush().map(|_| ()).map_err(unavailable)
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
        let bucket = bucket_key(&r.hash);
        let entries = h.get(bucket)?.unwrap_or_default();
        if let Some(rest) = sorted::remove(&entries, HASH_ENTRY, &r.hash.0) {
            put_or_remove(h, &bucket, rest)?;
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

    /// Writes a new record and its index entries inside a transaction.
    /// Returns false, writing nothing, when its id or hash is taken.
    fn put_in((t, s, h, o, e, m): Tx<'_>, r: &TokenRecord) -> TxResult<bool> {
        let key = block::key(r.id);
        let records = t.get(key)?.unwrap_or_default();
        let bucket = bucket_key(&r.hash);
        let entries = h.get(bucket)?.unwrap_or_default();
        let taken = block::entries(&records).any(|e| e.is_ok_and(|(id, _)| id == r.id));
        let with_hash = sorted::insert(&entries, HASH_ENTRY, 32, &hash_entry(&r.hash, r.id));
        let (false, Some(with_hash)) = (taken, with_hash) else {
            return Ok(false);
        };
        let record = encode_record(r).map_err(tx_corrupt)?;
        let records = block::put(&records, r.id, &record).map_err(tx_corrupt)?;
        write_block(t, s, &key, records)?;
        h.insert(&bucket, with_hash)?;
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
    fn raise_last_access(&self, key: [u8; 8], raises: &[(u64, u64)]) -> Result<(), StoreError> {
        // A transaction or another raise may change the block between the
        // read and the swap; then it is read again.
        for _ in 0..64 {
            let Some(old) = self.records.get(key).map_err(unavailable)? else {
                return Ok(());
            };
            let mut block = old.to_vec();
            let mut raised = false;
            for &(id, at) in raises {
                if let Some(mut r) = record_in(&block, id)?
                    && r.last_accessed < at
                {
                    r.last_accessed = at;
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
                if !visit(decode(bytes)?) {
                    return Ok(());
                }
            }
        }
        Ok(())
    }
}

impl Backend for SledBackend {
    fn lookup(&self, hash: &TokenHash) -> Result<Option<AuthEntry>, StoreError> {
        let Some(bucket) = self.hashes.get(bucket_key(hash)).map_err(unavailable)? else {
            return Ok(None);
        };
        let Some(id) = id_in_bucket(&bucket, hash) else {
            return Ok(None);
        };
        match self.get(id)? {
            Some(r) if r.hash == *hash => Ok(Some(r.auth_entry())),
            Some(_) => Err(StoreError::Corrupt(format!(
                "the hash index points at token {id}, which has another hash"
            ))),
            None => Ok(None),
        }
    }

    fn get(&self, id: u64) -> Result<Option<TokenRecord>, StoreError> {
        match self.records.get(block::key(id)).map_err(unavailable)? {
            Some(bytes) => record_in(&bytes, id),
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

    fn insert(&self, token: NewToken, per_user_limit: u32) -> Result<TokenRecord, InsertError> {
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

    fn restore(&self, records: &[TokenRecord]) -> Result<u64, StoreError> {
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

    fn update_description(
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
        // Several ids per transaction: the user's id list is rewritten once
        // per transaction rather than once per token.
        let mut n = 0;
        for ids in self.user_ids(user_key)?.chunks(256) {
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
        Ok(n)
    }

    fn record_access(&self, batch: &[(u64, u64)]) -> Result<(), StoreError> {
        let mut batch = batch.to_vec();
        batch.sort_unstable();
        for group in batch.chunk_by(|a, b| a.0 >> block::BITS == b.0 >> block::BITS) {
            let key = block::key(group[0].0);
            match self.raise_last_access(key, group) {
                // An unreadable block fails its tokens' look-ups (closed);
                // the times of the other blocks are still recorded.
                Err(StoreError::Corrupt(reason)) => {
                    tracing::warn!(
                        first_id = group[0].0,
                        %reason,
                        "lastAccessed not recorded for an unreadable block"
                    );
                }
                other => other?,
            }
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
        self.walk(0, visit)
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.db.flush().map(|_| ()).map_err(unavailable)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use proptest::prelude::*;

    use super::*;
    use crate::store::Scope;

    fn record(id: u64, user: &str) -> TokenRecord {
        TokenRecord {
            id,
            hash: TokenHash::of(&format!("token {id}")),
            description: format!("token {id}"),
            user_key: user.into(),
            user_name: user.to_lowercase(),
            created_by: user.into(),
            created: id,
            valid_until: if id.is_multiple_of(3) { 0 } else { 1_000 + id },
            last_accessed: 0,
            scope: Scope::ReadWrite,
        }
    }

    /// Writes a store as a binary of layout 1 or 2 did.
    fn write_old_store(path: &Path, layout: u64, records: &[TokenRecord]) {
        let db = sled::open(path).unwrap();
        let tokens = db.open_tree("tokens").unwrap();
        let by_user = db.open_tree("by_user").unwrap();
        let by_expiry = db.open_tree("by_expiry").unwrap();
        let counts = db.open_tree("counts").unwrap();
        let meta = db.open_tree("meta").unwrap();
        for r in records {
            tokens
                .insert(r.id.to_be_bytes(), postcard::to_allocvec(r).unwrap())
                .unwrap();
            if layout == 1 {
                let entry = postcard::to_allocvec(&r.auth_entry()).unwrap();
                db.open_tree("hashes")
                    .unwrap()
                    .insert(r.hash.0, entry)
                    .unwrap();
            } else {
                let ids = db.open_tree("hash_ids").unwrap();
                ids.insert(r.hash.0, &r.id.to_be_bytes()).unwrap();
            }
            let mut user_key = r.user_key.as_bytes().to_vec();
            user_key.push(0xFF);
            user_key.extend_from_slice(&r.id.to_be_bytes());
            by_user.insert(user_key, &[]).unwrap();
            if r.valid_until != 0 {
                by_expiry
                    .insert(expiry_key(r.valid_until, r.id), &[])
                    .unwrap();
            }
            let n = u64_of(counts.get(r.user_key.as_bytes()).unwrap()) + 1;
            counts
                .insert(r.user_key.as_bytes(), &n.to_be_bytes())
                .unwrap();
        }
        meta.insert(COUNT, &(records.len() as u64).to_be_bytes())
            .unwrap();
        meta.insert(NEXT_ID, &100u64.to_be_bytes()).unwrap();
        if layout > 1 {
            meta.insert(LAYOUT, &layout.to_be_bytes()).unwrap();
        }
        db.flush().unwrap();
    }

    #[test]
    fn stores_of_older_layouts_are_moved_to_the_packed_trees_on_open() {
        for layout in [1, 2] {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("s");
            // Ids over several blocks, with gaps, for three users.
            let records: Vec<TokenRecord> = (1..=60)
                .filter(|id| id % 7 != 0)
                .map(|id| record(id, ["U1", "U2", "U3"][(id % 3) as usize]))
                .collect();
            write_old_store(&path, layout, &records);
            for _ in 0..2 {
                let backend = SledBackend::reopen(&path).unwrap();
                assert_eq!(backend.count().unwrap(), records.len() as u64);
                assert_eq!(backend.next_id().unwrap(), 100);
                for r in &records {
                    let entry = backend.lookup(&r.hash).unwrap().expect("found");
                    assert_eq!((entry.id, &entry.user_key), (r.id, &r.user_key));
                    assert_eq!(backend.get(r.id).unwrap().as_ref(), Some(r));
                }
                for user in ["U1", "U2", "U3"] {
                    let want: Vec<&TokenRecord> =
                        records.iter().filter(|r| r.user_key == user).collect();
                    let got = backend.list_user(user).unwrap();
                    assert_eq!(got.iter().collect::<Vec<_>>(), want, "layout {layout}");
                }
                let expiring = Filter {
                    not_valid_after: Some(1_030),
                    ..Filter::default()
                };
                let page = backend.filter(&expiring, 0, 100).unwrap();
                let want = records
                    .iter()
                    .filter(|r| r.valid_until != 0 && r.valid_until <= 1_030)
                    .count();
                assert_eq!(page.total, want as u64);
                let names = backend.db.tree_names();
                for old in OLD_TREES {
                    assert!(!names.iter().any(|n| n == old.as_bytes()), "{old} dropped");
                }
                assert_eq!(u64_of(backend.meta.get(LAYOUT).unwrap()), CURRENT_LAYOUT);
            }
        }
    }

    #[test]
    fn a_store_of_a_newer_layout_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        {
            let backend = SledBackend::open(&path).unwrap();
            backend
                .meta
                .insert(LAYOUT, &(CURRENT_LAYOUT + 1).to_be_bytes())
                .unwrap();
            backend.flush().unwrap();
        }
        assert!(matches!(
            SledBackend::reopen(&path),
            Err(StoreError::Corrupt(m)) if m.contains("newer")
        ));
    }

    #[test]
    fn an_interrupted_move_resumes_and_never_brings_back_what_an_older_binary_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        let records: Vec<TokenRecord> = (1..=30).map(|id| record(id, "U1")).collect();
        write_old_store(&path, 1, &records);
        {
            // The first start stops after moving ten records.
            let backend = SledBackend::open_trees(&path).unwrap();
            backend.set_layout().unwrap();
            assert_eq!(backend.move_old_records(10).unwrap(), Some((10, 10)));
            let old = backend.db.open_tree("tokens").unwrap();
            let old_entries = backend.db.open_tree("hashes").unwrap();
            assert_eq!(old.len(), 20, "moved records left the old tree");
            assert!(old_entries.get(records[0].hash.0).unwrap().is_none());
            // A binary of layout 1 (which ignores the layout) now deletes
            // token 15 and creates token 31, in its own trees.
            old.remove(15u64.to_be_bytes()).unwrap();
            old_entries.remove(records[14].hash.0).unwrap();
            let new = record(31, "U2");
            old.insert(31u64.to_be_bytes(), postcard::to_allocvec(&new).unwrap())
                .unwrap();
            backend.flush().unwrap();
        }
        let backend = SledBackend::reopen(&path).unwrap();
        let ids: Vec<u64> = backend
            .filter(&Filter::default(), 0, 100)
            .unwrap()
            .items
            .iter()
            .map(|r| r.id)
            .collect();
        let want: Vec<u64> = (1..=31).filter(|&id| id != 15).collect();
        assert_eq!(ids, want);
        assert_eq!(backend.count().unwrap(), 30);
        assert!(backend.lookup(&records[14].hash).unwrap().is_none());
        assert_eq!(backend.list_user("U2").unwrap().len(), 1);
    }

    #[test]
    fn hashes_sharing_a_bucket_are_found_and_removed_one_by_one() {
        let dir = tempfile::tempdir().unwrap();
        let backend = SledBackend::open(&dir.path().join("s")).unwrap();
        // Ten hashes with the same first two bytes, inserted out of order.
        let mut records: Vec<TokenRecord> = (1..=10)
            .map(|id| {
                let mut r = record(id, "U1");
                r.hash.0[..2].copy_from_slice(&[0xAB, 0xCD]);
                r.hash.0[31] = (37 * id % 256) as u8;
                r
            })
            .collect();
        records.reverse();
        for r in &records {
            assert_eq!(backend.restore(std::slice::from_ref(r)).unwrap(), 1);
        }
        let bucket = backend.hashes.get([0xAB, 0xCD]).unwrap().unwrap();
        assert_eq!(bucket.len(), 10 * HASH_ENTRY, "one bucket holds them all");
        for r in &records {
            assert_eq!(backend.lookup(&r.hash).unwrap().map(|e| e.id), Some(r.id));
        }
        let mut unknown = records[0].hash;
        unknown.0[30] ^= 1;
        assert!(backend.lookup(&unknown).unwrap().is_none());
        for (i, r) in records.iter().enumerate() {
            backend.delete(r.id).unwrap().expect("deleted");
            assert!(backend.lookup(&r.hash).unwrap().is_none());
            for other in &records[i + 1..] {
                assert_eq!(
                    backend.lookup(&other.hash).unwrap().map(|e| e.id),
                    Some(other.id)
                );
            }
        }
        assert!(
            backend.hashes.get([0xAB, 0xCD]).unwrap().is_none(),
            "empty bucket removed"
        );
        assert!(backend.records.is_empty() && backend.search.is_empty());
    }

    #[test]
    fn a_damaged_block_fails_closed_for_its_tokens_only() {
        let dir = tempfile::tempdir().unwrap();
        let backend = SledBackend::open(&dir.path().join("s")).unwrap();
        let records: Vec<TokenRecord> = (1..=40).map(|id| record(id, "U1")).collect();
        backend.restore(&records).unwrap();
        // Ids 16..=31 share block 1; cut its last entry short.
        let key = block::key(16);
        let mut damaged = backend.records.get(key).unwrap().unwrap().to_vec();
        damaged.truncate(damaged.len() - 3);
        backend.records.insert(key, damaged).unwrap();
        for r in &records {
            let looked_up = backend.lookup(&r.hash);
            if (16..=31).contains(&r.id) {
                assert!(
                    matches!(looked_up, Err(StoreError::Corrupt(_))),
                    "id {}",
                    r.id
                );
                assert!(backend.delete(r.id).is_err());
            } else {
                assert_eq!(looked_up.unwrap().map(|e| e.id), Some(r.id));
            }
        }
        // Times for the readable blocks are still recorded.
        backend
            .record_access(&[(3, 77), (20, 77), (35, 77)])
            .unwrap();
        assert_eq!(backend.get(3).unwrap().unwrap().last_accessed, 77);
        assert_eq!(backend.get(35).unwrap().unwrap().last_accessed, 77);
    }

    #[test]
    fn unfiltered_pages_at_any_offset_stay_in_id_order() {
        let dir = tempfile::tempdir().unwrap();
        let backend = SledBackend::open(&dir.path().join("s")).unwrap();
        let records: Vec<TokenRecord> = (1..=200).map(|id| record(id, "U1")).collect();
        backend.restore(&records).unwrap();
        let gone = |id: u64| (id >= 5 && (id - 5).is_multiple_of(9)) || (48..=63).contains(&id);
        for id in (1..=200).filter(|&id| gone(id)) {
            backend.delete(id).unwrap().expect("deleted");
        }
        assert!(
            backend.records.get(block::key(48)).unwrap().is_none(),
            "a block whose records are all deleted is removed"
        );
        let left: Vec<u64> = (1..=200).filter(|&id| !gone(id)).collect();
        for (offset, limit) in [
            (0, 50),
            (3, 17),
            (15, 1),
            (16, 40),
            (150, 50),
            (178, 5),
            (500, 5),
        ] {
            let page = backend.filter(&Filter::default(), offset, limit).unwrap();
            let got: Vec<u64> = page.items.iter().map(|r| r.id).collect();
            let want: Vec<u64> = left
                .iter()
                .copied()
                .skip(offset as usize)
                .take(limit as usize)
                .collect();
            assert_eq!(got, want, "offset {offset} limit {limit}");
            assert_eq!(page.total, left.len() as u64);
        }
    }

    #[test]
    fn description_and_scope_filters_follow_updates_and_deletes() {
        let dir = tempfile::tempdir().unwrap();
        let backend = SledBackend::open(&dir.path().join("s")).unwrap();
        let mut records: Vec<TokenRecord> = (1..=40).map(|id| record(id, "U1")).collect();
        for r in records.iter_mut().filter(|r| r.id % 4 == 0) {
            r.scope = Scope::ReadOnly;
        }
        backend.restore(&records).unwrap();
        let ids = |description: &str, scope: Option<Scope>| -> (Vec<u64>, u64) {
            let filter = Filter {
                description: Some(description.to_lowercase()),
                scope,
                ..Filter::default()
            };
            let page = backend.filter(&filter, 1, 3).unwrap();
            (page.items.iter().map(|r| r.id).collect(), page.total)
        };
        // "token 1", "token 10".."token 19": the second match onwards.
        assert_eq!(ids("token 1", None), (vec![10, 11, 12], 11));
        assert_eq!(ids("TOKEN 1", Some(Scope::ReadOnly)), (vec![16], 2));
        backend
            .update_description(11, "Deploy Bot")
            .unwrap()
            .expect("updated");
        assert_eq!(ids("token 1", None), (vec![10, 12, 13], 10));
        assert_eq!(ids("deploy", None), (vec![], 1));
        backend.delete(10).unwrap().expect("deleted");
        assert_eq!(ids("token 1", None), (vec![12, 13, 14], 9));
        assert_eq!(
            backend.get(11).unwrap().map(|r| r.description),
            Some("Deploy Bot".to_string())
        );
    }

    #[test]
    fn damaged_values_are_errors_not_panics() {
        let good = block::put(&[], 1, &encode_record(&record(1, "U1")).unwrap()).unwrap();
        for cut in 0..good.len() {
            let bytes = &good[..cut];
            assert!(cut == 0 || block::find(bytes, 1).is_err(), "cut at {cut}");
            assert!(cut == 0 || block::put(bytes, 2, b"x").is_err());
            assert!(cut == 0 || block::remove(bytes, 1).is_err());
        }
        let mut wrong_length = good.clone();
        wrong_length[8..12].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(block::find(&wrong_length, 1).is_err());
        let mut not_a_record = good.clone();
        not_a_record.truncate(14);
        not_a_record[8..12].copy_from_slice(&2u32.to_be_bytes());
        assert!(matches!(
            record_in(&not_a_record, 1),
            Err(StoreError::Corrupt(_))
        ));
        // Odd lengths of a sorted array: no panic, no out-of-range entry.
        for len in 0..50 {
            let bytes = vec![7u8; len];
            let _ = sorted::find(&bytes, HASH_ENTRY, &[7u8; 32]);
            let _ = sorted::remove(&bytes, 8, &[7u8; 8]);
            let _ = sorted::insert(&bytes, 8, 8, &[1u8; 8]);
        }
    }

    proptest! {
        #[test]
        fn a_block_behaves_like_a_map(ops in proptest::collection::vec((0u64..16, any::<bool>()), 0..60)) {
            let mut model = BTreeMap::new();
            let mut bytes = Vec::new();
            for (id, put) in ops {
                if put {
                    let payload = vec![id as u8; model.len()];
                    bytes = block::put(&bytes, id, &payload).unwrap();
                    model.insert(id, payload);
                } else {
                    let removed = block::remove(&bytes, id).unwrap();
                    prop_assert_eq!(removed.as_ref().map(|(p, _)| p.to_vec()), model.get(&id).cloned());
                    if let Some((_, rest)) = removed {
                        bytes = rest;
                    }
                    model.remove(&id);
                }
                let ids: Vec<u64> = block::entries(&bytes).map(|e| e.unwrap().0).collect();
                prop_assert_eq!(ids, model.keys().copied().collect::<Vec<_>>());
                for id in 0..16 {
                    let got = block::find(&bytes, id).unwrap();
                    prop_assert_eq!(got, model.get(&id).map(Vec::as_slice));
                }
            }
        }

        #[test]
        fn a_sorted_array_behaves_like_a_set(ops in proptest::collection::vec((0u64..40, any::<bool>()), 0..80)) {
            let mut model = BTreeSet::new();
            let mut bytes = Vec::new();
            for (id, add) in ops {
                let key = id.to_be_bytes();
                if add {
                    let next = sorted::insert(&bytes, 8, 8, &key);
                    prop_assert_eq!(next.is_some(), model.insert(id));
                    if let Some(next) = next {
                        bytes = next;
                    }
                } else {
                    let next = sorted::remove(&bytes, 8, &key);
                    prop_assert_eq!(next.is_some(), model.remove(&id));
                    if let Some(next) = next {
                        bytes = next;
                    }
                }
                prop_assert_eq!(owner_ids(&bytes).collect::<Vec<_>>(), model.iter().copied().collect::<Vec<_>>());
                prop_assert_eq!(sorted::find(&bytes, 8, &key).is_some(), model.contains(&id));
            }
        }
    }

    #[cfg(unix)]
    #[test]
    fn a_new_store_is_private_whatever_the_umask() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        // The umask is the process's, 022 here as on most hosts: the created
        // directory and files would be 0755/0644 if sled made them alone.
        let path = dir.path().join("deeper").join("s");
        let backend = SledBackend::open(&path).unwrap();
        backend.db.flush().unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o700);
        let mut files = 0;
        for e in std::fs::read_dir(&path).unwrap().flatten() {
            if e.file_type().unwrap().is_file() {
                files += 1;
                assert_eq!(mode(&e.path()), 0o600, "{}", e.path().display());
            }
        }
        assert!(files > 0, "sled wrote files");
    }
}
