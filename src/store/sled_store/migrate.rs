//! Moving a store written by an older version to the current layout.

use sled::Transactional;

use super::codec::{RecordV1, block, decode, u64_of};
use super::{COUNT, SledEngine, StoreError, TokenRecord, store_error, unavailable};

/// Layout of the trees. 1 (implicit): `tokens` (id → record), `hashes`
/// (SHA-256 → entry), `by_user`, `by_expiry`, `counts`; 2: `hash_ids`
/// (SHA-256 → id) instead of `hashes`; 3: the packed trees above; 4: the
/// same trees, records of form 2 (`allowedIps`, `lastAccessedFrom`, a
/// rotated secret's grace) besides those of form 1, a hash index that may
/// hold a token's previous secret too, and the `notices` tree. Layouts 1
/// and 2 are moved into the packed trees on open and their trees dropped; a
/// store of layout 3 is only marked 4 (its records are read as they are and
/// take form 2 when they are next written). A binary of layout 2 or 3
/// refuses a newer store, one of layout 1 finds no token in it (fail closed
/// either way).
pub(super) const LAYOUT: &[u8] = b"layout";
pub(super) const CURRENT_LAYOUT: u64 = 4;
/// Trees of layouts 1 and 2, dropped after migration.
pub(super) const OLD_TREES: [&str; 5] = ["tokens", "hashes", "hash_ids", "by_user", "counts"];
/// Records moved per transaction by a migration.
pub(super) const MIGRATION_CHUNK: usize = 1_000;

impl SledEngine {
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
    pub(super) fn migrate(&self) -> Result<bool, StoreError> {
        let layout = u64_of(self.meta.get(LAYOUT).map_err(unavailable)?);
        if layout > CURRENT_LAYOUT {
            return Err(StoreError::Corrupt(format!(
                "store layout {layout} is newer than this version understands ({CURRENT_LAYOUT})"
            )));
        }
        if layout != CURRENT_LAYOUT {
            self.set_layout()?;
            if layout == 3 {
                tracing::info!(
                    "store layout 3 marked as layout {CURRENT_LAYOUT}: records are read as they are and take the new form when they change"
                );
            }
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
    pub(super) fn move_old_records(&self, limit: usize) -> Result<Option<(u64, u64)>, StoreError> {
        let open = |name: &str| self.db.open_tree(name).map_err(unavailable);
        let (old, old_entries, old_ids) = (open("tokens")?, open("hashes")?, open("hash_ids")?);
        let mut chunk = Vec::with_capacity(limit);
        for kv in old.iter().take(limit) {
            let (key, value) = kv.map_err(unavailable)?;
            chunk.push((key, TokenRecord::from(decode::<RecordV1>(&value)?)));
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

    pub(super) fn set_layout(&self) -> Result<(), StoreError> {
        self.meta
            .insert(LAYOUT, &CURRENT_LAYOUT.to_be_bytes())
            .map_err(unavailable)?;
        self.db.flush().map(|_| ()).map_err(unavailable)
    }
}
