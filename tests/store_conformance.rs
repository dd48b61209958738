//! One store, two engines: the same tests on sled and on PostgreSQL, through
//! the `Store` the gateway uses and the `Backend` seam under it. And moving
//! tokens between them with `store export` / `store import` keeps every field.
//!
//! The PostgreSQL half needs a server (see `common::pg`): without it each of
//! its tests prints one "SKIPPED" line, or fails when
//! `TOKENGATE_REQUIRE_POSTGRES=1`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;

use common::pg::TestDb;
use std::net::IpAddr;
use tokengate::store::tools;

use tokengate::store::{
    Access, AllowedIps, Backend, Filter, InsertError, NewToken, PostgresBackend, PostgresSettings,
    Previous, Scope, SledBackend, Store, TokenRecord,
};
use tokengate::token::TokenHash;

/// A store on one engine, and what keeps it alive.
struct Engine {
    store: Arc<Store>,
    _dir: Option<tempfile::TempDir>,
    _db: Option<TestDb>,
}

async fn sled() -> Option<Engine> {
    let dir = tempfile::tempdir().unwrap();
    let backend = SledBackend::open(&dir.path().join("s")).unwrap();
    Some(Engine {
        store: Arc::new(Store::with_backend(Arc::new(backend))),
        _dir: Some(dir),
        _db: None,
    })
}

async fn postgres() -> Option<Engine> {
    let db = TestDb::create().await?;
    let backend = PostgresBackend::open(&settings(&db)).await.unwrap();
    Some(Engine {
        store: Arc::new(Store::with_backend(Arc::new(backend))),
        _dir: None,
        _db: Some(db),
    })
}

fn settings(db: &TestDb) -> PostgresSettings {
    PostgresSettings {
        url: db.url.clone(),
        ca_file: None,
        pool_size: 8,
    }
}

fn new_token(user: &str, seed: &str, valid_until: u64) -> NewToken {
    NewToken {
        hash: TokenHash::of(seed),
        description: format!("Token {seed}"),
        user_key: user.to_string(),
        user_name: user.to_lowercase(),
        created_by: user.to_string(),
        created: 1_000,
        valid_until,
        scope: Scope::ReadWrite,
        allowed_ips: AllowedIps::default(),
    }
}

fn allowed(entries: &[&str]) -> AllowedIps {
    AllowedIps::from_nets(entries.iter().map(|e| AllowedIps::parse_entry(e).unwrap()))
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// Each test, on each engine.
macro_rules! on_both {
    ($($name:ident),* $(,)?) => {
        mod on_sled {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let engine = super::sled().await.unwrap();
                    super::$name(&engine.store).await;
                }
            )*
        }
        mod on_postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let Some(engine) = super::postgres().await else { return };
                    super::$name(&engine.store).await;
                }
            )*
        }
    };
}

on_both!(
    create_lookup_delete_and_ids_never_reused,
    a_deleted_token_never_comes_back_from_the_cache,
    the_per_user_limit_holds_for_concurrent_creators,
    concurrent_creators_get_unique_increasing_ids,
    filters_pages_and_totals,
    the_description_filter_is_a_case_insensitive_substring,
    last_access_is_the_latest_time_and_skips_deleted_tokens,
    descriptions_change_and_users_lose_all_their_tokens,
    restore_keeps_ids_skips_what_exists_and_raises_the_counter,
    scan_goes_by_id_in_pages,
    allowed_ips_are_kept_shown_and_filtered,
    a_rotation_keeps_the_old_secret_for_its_grace_only,
    a_rotation_without_grace_refuses_the_old_secret_at_once,
    a_notice_is_claimed_once_and_let_go_when_it_failed,
);

async fn create_lookup_delete_and_ids_never_reused(store: &Store) {
    let r = store.create(new_token("U1", "a", 5_000), 0).await.unwrap();
    assert_eq!(r.id, 1);
    assert_eq!(r.last_accessed, 0);
    let e = store.lookup(&TokenHash::of("a")).await.unwrap().unwrap();
    assert_eq!(
        (e.id, e.user_key.as_str(), e.user_name.as_str()),
        (1, "U1", "u1")
    );
    assert_eq!(e.valid_until, 5_000);
    assert!(store.lookup(&TokenHash::of("b")).await.unwrap().is_none());
    let got = store.get(1).await.unwrap().unwrap();
    assert_eq!(got, r);
    assert_eq!(store.count().await.unwrap(), 1);
    assert_eq!(store.delete(1).await.unwrap().map(|r| r.id), Some(1));
    assert!(store.delete(1).await.unwrap().is_none(), "deleted once");
    assert!(store.get(1).await.unwrap().is_none());
    assert!(store.lookup(&TokenHash::of("a")).await.unwrap().is_none());
    let r2 = store.create(new_token("U1", "b", 0), 0).await.unwrap();
    assert_eq!(r2.id, 2, "ids are never reused");
    assert_eq!(store.count().await.unwrap(), 1);
    // The same hash twice is refused, nothing written.
    assert!(matches!(
        store.create(new_token("U2", "b", 0), 0).await,
        Err(InsertError::Store(_))
    ));
    assert_eq!(store.count().await.unwrap(), 1);
}

async fn a_deleted_token_never_comes_back_from_the_cache(store: &Store) {
    for (user, seed) in [("U1", "a"), ("U2", "b"), ("U2", "c")] {
        store.create(new_token(user, seed, 0), 0).await.unwrap();
    }
    for seed in ["a", "b", "c"] {
        assert!(store.lookup(&TokenHash::of(seed)).await.unwrap().is_some());
        assert!(
            store.cached(&TokenHash::of(seed)).is_some(),
            "{seed} cached"
        );
    }
    store.delete(1).await.unwrap();
    assert!(store.cached(&TokenHash::of("a")).is_none());
    assert!(store.lookup(&TokenHash::of("a")).await.unwrap().is_none());
    assert_eq!(store.delete_user("U2").await.unwrap(), 2);
    for seed in ["b", "c"] {
        assert!(store.lookup(&TokenHash::of(seed)).await.unwrap().is_none());
    }
}

async fn the_per_user_limit_holds_for_concurrent_creators(store: &Store) {
    let store = Arc::new(store_clone(store));
    let mut tasks = Vec::new();
    for i in 0..16 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            store.0.create(new_token("U", &format!("l{i}"), 0), 5).await
        }));
    }
    let mut ok = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => ok += 1,
            Err(InsertError::LimitReached(5)) => {}
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(ok, 5);
    assert_eq!(store.0.list_user("U").await.unwrap().len(), 5);
    store.0.create(new_token("V", "other", 0), 5).await.unwrap();
    let first = store.0.list_user("U").await.unwrap()[0].id;
    store.0.delete(first).await.unwrap();
    store.0.create(new_token("U", "again", 0), 5).await.unwrap();
}

async fn concurrent_creators_get_unique_increasing_ids(store: &Store) {
    let store = Arc::new(store_clone(store));
    let mut tasks = Vec::new();
    for w in 0..16 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for i in 0..10 {
                let r = store
                    .0
                    .create(new_token("U", &format!("{w}-{i}"), 0), 0)
                    .await
                    .unwrap();
                ids.push(r.id);
            }
            ids
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        let ids = t.await.unwrap();
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "increasing: {ids:?}");
        all.extend(ids);
    }
    let unique: BTreeSet<u64> = all.iter().copied().collect();
    assert_eq!(unique.len(), 160);
    assert_eq!(store.0.count().await.unwrap(), 160);
    let listed: Vec<u64> = store
        .0
        .list_user("U")
        .await
        .unwrap()
        .iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(listed, unique.into_iter().collect::<Vec<_>>(), "by id");
}

async fn filters_pages_and_totals(store: &Store) {
    store.create(new_token("A", "1", 50), 0).await.unwrap();
    store.create(new_token("B", "2", 150), 0).await.unwrap();
    store.create(new_token("A", "3", 0), 0).await.unwrap();
    let mut ro = new_token("C", "4", 100);
    ro.scope = Scope::ReadOnly;
    store.create(ro, 0).await.unwrap();
    let ids = |p: &tokengate::store::Page| p.items.iter().map(|r| r.id).collect::<Vec<_>>();

    let all = store.filter(Filter::default(), 0, 10).await.unwrap();
    assert_eq!((all.total, ids(&all)), (4, vec![1, 2, 3, 4]));
    let page = store.filter(Filter::default(), 1, 2).await.unwrap();
    assert_eq!((page.total, ids(&page)), (4, vec![2, 3]));
    let past = store.filter(Filter::default(), 10, 2).await.unwrap();
    assert_eq!((past.total, ids(&past)), (4, vec![]));

    let soon = Filter {
        not_valid_after: Some(100),
        ..Filter::default()
    };
    let p = store.filter(soon, 0, 10).await.unwrap();
    assert_eq!(
        (p.total, ids(&p)),
        (2, vec![1, 4]),
        "never-expiring never matches"
    );

    let of_a = Filter {
        user_keys: vec!["A".into()],
        ..Filter::default()
    };
    let p = store.filter(of_a, 1, 10).await.unwrap();
    assert_eq!((p.total, ids(&p)), (2, vec![3]));
    let of_a_and_c = Filter {
        user_keys: vec!["A".into(), "C".into()],
        ..Filter::default()
    };
    assert_eq!(store.filter(of_a_and_c, 0, 10).await.unwrap().total, 3);

    let read_only = Filter {
        scope: Some(Scope::ReadOnly),
        ..Filter::default()
    };
    let p = store.filter(read_only, 0, 10).await.unwrap();
    assert_eq!((p.total, ids(&p)), (1, vec![4]));

    let combined = Filter {
        not_valid_after: Some(1_000),
        user_keys: vec!["A".into(), "B".into()],
        ..Filter::default()
    };
    let p = store.filter(combined, 0, 10).await.unwrap();
    assert_eq!((p.total, ids(&p)), (2, vec![1, 2]));
}

async fn the_description_filter_is_a_case_insensitive_substring(store: &Store) {
    for (seed, description) in [
        ("1", "Nightly BUILD"),
        ("2", "deploy 100%"),
        ("3", "a_b c"),
        ("4", "axb c"),
    ] {
        let mut t = new_token("U", seed, 0);
        t.description = description.into();
        store.create(t, 0).await.unwrap();
    }
    let matching = |needle: &str| {
        let filter = Filter {
            description: Some(needle.to_string()),
            ..Filter::default()
        };
        async move {
            store
                .filter(filter, 0, 10)
                .await
                .unwrap()
                .items
                .iter()
                .map(|r| r.id)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(matching("build").await, vec![1]);
    assert_eq!(matching("ly bu").await, vec![1]);
    assert_eq!(matching("100%").await, vec![2], "% is itself");
    assert_eq!(matching("a_b").await, vec![3], "_ is itself");
    assert_eq!(matching(" c").await, vec![3, 4]);
    assert_eq!(matching("nothing").await, Vec::<u64>::new());
}

async fn last_access_is_the_latest_time_and_skips_deleted_tokens(store: &Store) {
    store.create(new_token("A", "1", 0), 0).await.unwrap();
    store.create(new_token("A", "2", 0), 0).await.unwrap();
    let (a, b) = (ip("192.0.2.10"), ip("2001:db8::10"));
    store.touch(1, 500, a);
    store.touch(1, 400, b);
    store.touch(2, 600, b);
    let shown = store.get(1).await.unwrap().unwrap();
    assert_eq!(
        (shown.last_accessed, shown.last_accessed_from),
        (500, Some(a)),
        "the latest use, with its address"
    );
    assert_eq!(
        store.backend().get(1).await.unwrap().unwrap().last_accessed,
        0,
        "not yet written"
    );
    store.delete(2).await.unwrap();
    store.touch(2, 700, a);
    assert_eq!(store.flush_access().await.unwrap(), 2);
    let written = store.backend().get(1).await.unwrap().unwrap();
    assert_eq!(
        (written.last_accessed, written.last_accessed_from),
        (500, Some(a))
    );
    assert!(
        store.backend().get(2).await.unwrap().is_none(),
        "not brought back"
    );
    // An older time (another gateway's) never lowers it, nor changes the address.
    let older = Access {
        id: 1,
        at: 300,
        from: b,
    };
    store.backend().record_access(vec![older]).await.unwrap();
    let written = store.backend().get(1).await.unwrap().unwrap();
    assert_eq!(
        (written.last_accessed, written.last_accessed_from),
        (500, Some(a))
    );
    let newer = Access {
        id: 1,
        at: 900,
        from: b,
    };
    store.backend().record_access(vec![newer]).await.unwrap();
    let written = store.backend().get(1).await.unwrap().unwrap();
    assert_eq!(
        (written.last_accessed, written.last_accessed_from),
        (900, Some(b)),
        "the latest use wins, with its address"
    );
    assert_eq!(store.pending_access(), 0);
}

async fn descriptions_change_and_users_lose_all_their_tokens(store: &Store) {
    store.create(new_token("A", "1", 0), 0).await.unwrap();
    store.create(new_token("B", "2", 0), 0).await.unwrap();
    store.create(new_token("A", "3", 0), 0).await.unwrap();
    let r = store
        .update_description(1, "Renamed")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(r.description, "Renamed");
    assert_eq!(store.get(1).await.unwrap().unwrap().description, "Renamed");
    assert!(store.update_description(99, "x").await.unwrap().is_none());
    assert_eq!(store.delete_user("A").await.unwrap(), 2);
    assert_eq!(store.delete_user("A").await.unwrap(), 0);
    assert!(store.list_user("A").await.unwrap().is_empty());
    assert_eq!(store.count().await.unwrap(), 1);
    let of_a = Filter {
        user_keys: vec!["A".into()],
        ..Filter::default()
    };
    assert_eq!(store.filter(of_a, 0, 10).await.unwrap().total, 0);
}

fn record(id: u64, seed: &str, user: &str) -> TokenRecord {
    TokenRecord {
        id,
        hash: TokenHash::of(seed),
        description: format!("restored {seed}"),
        user_key: user.into(),
        user_name: user.to_lowercase(),
        created_by: "ADMIN".into(),
        created: 10,
        valid_until: 20_000,
        last_accessed: 15,
        scope: Scope::ReadOnly,
        allowed_ips: allowed(&["10.0.0.0/8", "2001:db8::/32"]),
        last_accessed_from: Some(ip("10.1.2.3")),
        previous: Some(Previous {
            hash: TokenHash::of(&format!("{seed} before")),
            until: 19_000,
        }),
    }
}

async fn restore_keeps_ids_skips_what_exists_and_raises_the_counter(store: &Store) {
    let b = store.backend();
    let added = b
        .restore(vec![record(5, "r5", "A"), record(9, "r9", "B")])
        .await
        .unwrap();
    assert_eq!(added, 2);
    assert_eq!(b.get(9).await.unwrap().unwrap(), record(9, "r9", "B"));
    // Again, plus one whose hash exists under another id: nothing new.
    let again = b
        .restore(vec![record(5, "r5", "A"), record(12, "r9", "C")])
        .await
        .unwrap();
    assert_eq!(again, 0);
    assert_eq!(store.count().await.unwrap(), 2);
    b.raise_next_id(40).await.unwrap();
    b.raise_next_id(20).await.unwrap();
    assert!(b.next_id().await.unwrap() >= 40);
    let r = store.create(new_token("A", "new", 0), 0).await.unwrap();
    assert!(r.id >= 40, "{}", r.id);
    assert_eq!(store.list_user("A").await.unwrap().len(), 2);
}

async fn scan_goes_by_id_in_pages(store: &Store) {
    for i in 0..7 {
        store
            .create(new_token("U", &format!("s{i}"), 0), 0)
            .await
            .unwrap();
    }
    store.delete(3).await.unwrap();
    let b = store.backend();
    let first: Vec<u64> = b
        .scan_from(0, 3)
        .await
        .unwrap()
        .iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(first, vec![1, 2, 4]);
    let next: Vec<u64> = b
        .scan_from(4, 3)
        .await
        .unwrap()
        .iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(next, vec![5, 6, 7]);
    assert!(b.scan_from(7, 3).await.unwrap().is_empty());
}

/// A second handle on the same store, for tasks.
struct Shared(Store);

fn store_clone(store: &Store) -> Shared {
    Shared(Store::with_backend(store.backend().clone()))
}

/// sled → PostgreSQL → sled with the store tools: every field, ids and the
/// id counter survive, and an import run twice changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_and_import_move_tokens_between_engines() {
    let Some(pg) = postgres().await else {
        return;
    };
    let from = sled().await.unwrap();
    for (user, seed) in [("A", "1"), ("B", "2"), ("A", "3"), ("C", "4")] {
        from.store
            .create(new_token(user, seed, 9_000), 0)
            .await
            .unwrap();
    }
    from.store.delete(4).await.unwrap();
    from.store.touch(2, 777, ip("192.0.2.77"));
    let previous = Some(5_000 + 9_000);
    from.store
        .rotate(3, TokenHash::of("3 again"), previous)
        .await
        .unwrap()
        .unwrap();
    from.store.flush_access().await.unwrap();
    let mut exported = Vec::new();
    assert_eq!(
        tools::export(&**from.store.backend(), &mut exported)
            .await
            .unwrap(),
        3
    );

    let into: &dyn Backend = &**pg.store.backend();
    let (added, present) = tools::import(into, &mut exported.as_slice()).await.unwrap();
    assert_eq!((added, present), (3, 0));
    let (added, present) = tools::import(into, &mut exported.as_slice()).await.unwrap();
    assert_eq!((added, present), (0, 3), "idempotent");
    for id in 1..=3 {
        assert_eq!(
            into.get(id).await.unwrap(),
            from.store.backend().get(id).await.unwrap(),
            "token {id}"
        );
    }
    let r = pg.store.create(new_token("A", "5", 0), 0).await.unwrap();
    assert_eq!(
        r.id, 5,
        "id 4 was deleted before the export: not handed out again"
    );

    let mut back = Vec::new();
    assert_eq!(tools::export(into, &mut back).await.unwrap(), 4);
    let again = sled().await.unwrap();
    let (added, _) = tools::import(&**again.store.backend(), &mut back.as_slice())
        .await
        .unwrap();
    assert_eq!(added, 4);
    assert_eq!(
        again.store.backend().get(5).await.unwrap(),
        into.get(5).await.unwrap()
    );
    assert_eq!(
        again
            .store
            .lookup(&TokenHash::of("2"))
            .await
            .unwrap()
            .unwrap()
            .id,
        2
    );
}

async fn allowed_ips_are_kept_shown_and_filtered(store: &Store) {
    let mut open = new_token("A", "open", 0);
    open.scope = Scope::ReadOnly;
    store.create(open, 0).await.unwrap();
    let mut fenced = new_token("A", "fenced", 0);
    fenced.allowed_ips = allowed(&["127.0.0.2/32", "2001:db8:1::/48"]);
    let r = store.create(fenced, 0).await.unwrap();
    assert_eq!(
        r.allowed_ips.to_strings(),
        ["127.0.0.2/32", "2001:db8:1::/48"]
    );
    assert_eq!(
        store.get(2).await.unwrap().unwrap().allowed_ips,
        r.allowed_ips
    );
    let e = store
        .lookup(&TokenHash::of("fenced"))
        .await
        .unwrap()
        .unwrap();
    assert!(e.allowed.permits(ip("127.0.0.2")));
    assert!(e.allowed.permits(ip("2001:db8:1:2::3")));
    assert!(!e.allowed.permits(ip("127.0.0.1")));
    let e = store.lookup(&TokenHash::of("open")).await.unwrap().unwrap();
    assert!(e.allowed.permits(ip("203.0.113.1")));
    let ids = |set: Option<bool>, scope: Option<Scope>| async move {
        let f = Filter {
            allowed_ips_set: set,
            scope,
            ..Filter::default()
        };
        let page = store.filter(f, 0, 10).await.unwrap();
        (
            page.total,
            page.items.iter().map(|r| r.id).collect::<Vec<_>>(),
        )
    };
    assert_eq!(ids(Some(true), None).await, (1, vec![2]));
    assert_eq!(ids(Some(false), None).await, (1, vec![1]));
    assert_eq!(ids(None, None).await, (2, vec![1, 2]));
    assert_eq!(ids(Some(true), Some(Scope::ReadOnly)).await, (0, vec![]));
    let of_a = Filter {
        user_keys: vec!["A".into()],
        allowed_ips_set: Some(true),
        ..Filter::default()
    };
    assert_eq!(store.filter(of_a, 0, 10).await.unwrap().total, 1);
}

async fn a_rotation_keeps_the_old_secret_for_its_grace_only(store: &Store) {
    let before = store
        .create(new_token("U", "old", 50_000), 0)
        .await
        .unwrap();
    assert!(store.lookup(&TokenHash::of("old")).await.unwrap().is_some());
    let rotated = store
        .rotate(before.id, TokenHash::of("new"), Some(20_000))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (
            rotated.id,
            &rotated.description,
            rotated.valid_until,
            rotated.scope
        ),
        (
            before.id,
            &before.description,
            before.valid_until,
            before.scope
        )
    );
    assert_eq!(rotated.hash, TokenHash::of("new"));
    assert_eq!(store.get(before.id).await.unwrap().unwrap(), rotated);
    let new = store.lookup(&TokenHash::of("new")).await.unwrap().unwrap();
    assert_eq!(
        (new.id, new.valid_until, new.superseded),
        (before.id, 50_000, false)
    );
    // The old secret: read again (not the entry cached before), with the
    // grace end as its expiry.
    assert!(store.cached(&TokenHash::of("old")).is_none());
    let old = store.lookup(&TokenHash::of("old")).await.unwrap().unwrap();
    assert_eq!(
        (old.id, old.valid_until, old.superseded),
        (before.id, 20_000, true)
    );
    // A second rotation ends the first one's grace at once.
    store
        .rotate(before.id, TokenHash::of("newer"), Some(30_000))
        .await
        .unwrap()
        .unwrap();
    assert!(store.lookup(&TokenHash::of("old")).await.unwrap().is_none());
    let new = store.lookup(&TokenHash::of("new")).await.unwrap().unwrap();
    assert_eq!((new.valid_until, new.superseded), (30_000, true));
    assert_eq!(store.count().await.unwrap(), 1);
    // Deleting the token deletes both secrets.
    store.delete(before.id).await.unwrap().unwrap();
    assert!(store.lookup(&TokenHash::of("new")).await.unwrap().is_none());
    assert!(
        store
            .lookup(&TokenHash::of("newer"))
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        store
            .rotate(before.id, TokenHash::of("x"), None)
            .await
            .unwrap()
            .is_none()
    );
}

async fn a_rotation_without_grace_refuses_the_old_secret_at_once(store: &Store) {
    let r = store.create(new_token("U", "old", 0), 0).await.unwrap();
    store.create(new_token("V", "other", 0), 0).await.unwrap();
    store
        .rotate(r.id, TokenHash::of("new"), None)
        .await
        .unwrap()
        .unwrap();
    assert!(store.lookup(&TokenHash::of("old")).await.unwrap().is_none());
    let new = store.lookup(&TokenHash::of("new")).await.unwrap().unwrap();
    assert_eq!((new.valid_until, new.superseded), (0, false));
    // A secret another token has is refused, and nothing changes.
    assert!(
        store
            .rotate(r.id, TokenHash::of("other"), None)
            .await
            .is_err()
    );
    assert!(store.lookup(&TokenHash::of("new")).await.unwrap().is_some());
    assert_eq!(
        store
            .lookup(&TokenHash::of("other"))
            .await
            .unwrap()
            .unwrap()
            .id,
        2
    );
}

async fn a_notice_is_claimed_once_and_let_go_when_it_failed(store: &Store) {
    let r = store.create(new_token("U", "n", 0), 0).await.unwrap();
    let claim = |notice: &'static str, now: u64| store.claim_notice(r.id, notice, now, now + 600);
    assert!(claim("expiry-14d/mail", 1_000).await.unwrap());
    assert!(!claim("expiry-14d/mail", 1_001).await.unwrap(), "held");
    assert!(
        claim("expiry-14d/webhook", 1_001).await.unwrap(),
        "another channel"
    );
    // Let go after a failure: claimable again.
    store
        .finish_notice(r.id, "expiry-14d/mail", false)
        .await
        .unwrap();
    assert!(claim("expiry-14d/mail", 1_002).await.unwrap());
    store
        .finish_notice(r.id, "expiry-14d/mail", true)
        .await
        .unwrap();
    assert!(!claim("expiry-14d/mail", 1_003).await.unwrap(), "sent");
    assert!(
        !claim("expiry-14d/mail", 99_999).await.unwrap(),
        "sent for good"
    );
    store
        .finish_notice(r.id, "expiry-14d/mail", false)
        .await
        .unwrap();
    assert!(
        !claim("expiry-14d/mail", 99_999).await.unwrap(),
        "a late release does not undo it"
    );
    // The holder died: after its lease another may claim.
    assert!(!claim("expiry-14d/webhook", 1_500).await.unwrap());
    assert!(claim("expiry-14d/webhook", 1_601).await.unwrap());
    // Unknown tokens have nothing to claim; a deleted token's claims go with it.
    assert!(!store.claim_notice(999, "created/mail", 1, 2).await.unwrap());
    store.delete(r.id).await.unwrap();
    assert!(
        !store
            .claim_notice(r.id, "created/mail", 1, 2)
            .await
            .unwrap()
    );
}
