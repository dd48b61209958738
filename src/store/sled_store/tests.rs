//! The sled engine's tests: layout migrations, damaged values, filters and
//! pages, file permissions, and properties of the packed value formats.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;

use super::migrate::{CURRENT_LAYOUT, LAYOUT, OLD_TREES};
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
        allowed_ips: crate::store::AllowedIps::default(),
        last_accessed_from: None,
        previous: None,
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
            .insert(
                r.id.to_be_bytes(),
                postcard::to_allocvec(&RecordV1::from(r)).unwrap(),
            )
            .unwrap();
        if layout == 1 {
            // Layout 1's hash entries are never read, only removed.
            let entry = postcard::to_allocvec(&(r.id, &r.user_key)).unwrap();
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
            let backend = SledEngine::reopen(&path).unwrap();
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
        let backend = SledEngine::open(&path).unwrap();
        backend
            .meta
            .insert(LAYOUT, &(CURRENT_LAYOUT + 1).to_be_bytes())
            .unwrap();
        backend.flush().unwrap();
    }
    assert!(matches!(
        SledEngine::reopen(&path),
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
        let backend = SledEngine::open_trees(&path).unwrap();
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
        old.insert(
            31u64.to_be_bytes(),
            postcard::to_allocvec(&RecordV1::from(&new)).unwrap(),
        )
        .unwrap();
        backend.flush().unwrap();
    }
    let backend = SledEngine::reopen(&path).unwrap();
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
    let backend = SledEngine::open(&dir.path().join("s")).unwrap();
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
    let backend = SledEngine::open(&dir.path().join("s")).unwrap();
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
    let at = |id| crate::store::Access {
        id,
        at: 77,
        from: "192.0.2.1".parse().unwrap(),
    };
    backend.record_access(&[at(3), at(20), at(35)]).unwrap();
    assert_eq!(backend.get(3).unwrap().unwrap().last_accessed, 77);
    assert_eq!(backend.get(35).unwrap().unwrap().last_accessed, 77);
}

#[test]
fn unfiltered_pages_at_any_offset_stay_in_id_order() {
    let dir = tempfile::tempdir().unwrap();
    let backend = SledEngine::open(&dir.path().join("s")).unwrap();
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
    let backend = SledEngine::open(&dir.path().join("s")).unwrap();
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
    let backend = SledEngine::open(&path).unwrap();
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

/// A store of layout 3: the packed trees with records of form 1, as the
/// version before `allowedIps` and rotation wrote them.
fn write_layout_3_store(path: &Path, records: &[TokenRecord]) {
    let engine = SledEngine::open(path).unwrap();
    engine.restore(records).unwrap();
    for r in records {
        let key = block::key(r.id);
        let bytes = engine.records.get(key).unwrap().unwrap();
        let v1 = postcard::to_allocvec(&RecordV1::from(r)).unwrap();
        let block = block::put(&bytes, r.id, &v1).unwrap();
        engine.records.insert(key, block).unwrap();
    }
    engine.meta.insert(LAYOUT, &3u64.to_be_bytes()).unwrap();
    engine.flush().unwrap();
}

#[test]
fn a_store_of_layout_3_opens_and_its_records_change_form_as_they_are_written() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s");
    let records: Vec<TokenRecord> = (1..=40).map(|id| record(id, "U1")).collect();
    write_layout_3_store(&path, &records);
    let engine = SledEngine::reopen(&path).unwrap();
    assert_eq!(u64_of(engine.meta.get(LAYOUT).unwrap()), CURRENT_LAYOUT);
    let raw = engine.records.get(block::key(5)).unwrap().unwrap();
    let payload = block::find(&raw, 5).unwrap().unwrap();
    assert_ne!(payload[0], 0, "records are not rewritten on open");
    for r in &records {
        assert_eq!(engine.get(r.id).unwrap().as_ref(), Some(r));
        let e = engine.lookup(&r.hash).unwrap().unwrap();
        assert_eq!((e.id, e.superseded), (r.id, false));
        assert!(e.allowed.is_empty());
    }
    let unrestricted = Filter {
        allowed_ips_set: Some(false),
        ..Filter::default()
    };
    assert_eq!(engine.filter(&unrestricted, 0, 100).unwrap().total, 40);
    // Written again: form 2, with what form 1 could not hold.
    let at = crate::store::Access {
        id: 5,
        at: 99,
        from: "2001:db8::5".parse().unwrap(),
    };
    engine.record_access(&[at]).unwrap();
    engine
        .rotate(6, TokenHash::of("six again"), Some(5_000))
        .unwrap()
        .unwrap();
    let raw = engine.records.get(block::key(5)).unwrap().unwrap();
    assert_eq!(&block::find(&raw, 5).unwrap().unwrap()[..2], &[0, 2]);
    assert_eq!(
        engine.get(5).unwrap().unwrap().last_accessed_from,
        Some(at.from)
    );
    assert_eq!(
        engine
            .lookup(&records[5].hash)
            .unwrap()
            .unwrap()
            .valid_until,
        5_000
    );
    assert_eq!(
        engine
            .lookup(&TokenHash::of("six again"))
            .unwrap()
            .unwrap()
            .id,
        6
    );
    // The untouched records of the same block still read as they were.
    assert_eq!(engine.get(7).unwrap().as_ref(), Some(&records[6]));
    drop(engine);
    // A binary of layout 3 would now refuse the store.
    let engine = SledEngine::reopen(&path).unwrap();
    assert_eq!(u64_of(engine.meta.get(LAYOUT).unwrap()), 4);
}
