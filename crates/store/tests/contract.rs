//! The `Store` contract, written once and run against every backend.

mod support;

use std::ops::Deref;
use std::sync::Arc;
use std::time::Duration;

use cairn_store::{
    DATABASE_FILE_NAME, Entry, Event, MemoryStore, RedbStore, Revision, Store, StoreError,
    StoreExt, StoreOptions, Txn, TxnOutcome, Watch,
};
use serde::{Deserialize, Serialize};
use support::TempDir;

/// A store under test, with whatever must outlive it.
struct Opened {
    store: Arc<dyn Store>,
    _dir: Option<TempDir>,
}

impl Deref for Opened {
    type Target = dyn Store;

    fn deref(&self) -> &(dyn Store + 'static) {
        &*self.store
    }
}

type Open = fn(StoreOptions) -> Opened;

fn open_memory(options: StoreOptions) -> Opened {
    Opened {
        store: Arc::new(MemoryStore::with_options(options)),
        _dir: None,
    }
}

fn open_redb(options: StoreOptions) -> Opened {
    let dir = TempDir::new("contract");
    let store = RedbStore::open_with(dir.path(), options).expect("store opens");
    Opened {
        store: Arc::new(store),
        _dir: Some(dir),
    }
}

macro_rules! contract {
    ($($name:ident),* $(,)?) => {
        mod memory {
            $(#[test] fn $name() { super::$name(super::open_memory) })*
        }
        mod redb {
            $(#[test] fn $name() { super::$name(super::open_redb) })*
        }
    };
}

contract!(
    puts_gets_and_deletes,
    lists_by_prefix,
    tracks_create_and_mod_revisions,
    rejects_invalid_keys,
    applies_txn_all_or_nothing,
    txn_compare_failure_changes_nothing,
    serialises_concurrent_compare_and_swap,
    encodes_json,
    watch_replays_then_follows,
    watch_wakes_on_a_commit_from_another_thread,
    watch_from_a_listing_misses_nothing,
    watch_from_a_compacted_revision_fails,
    lagging_watch_fails,
    watch_ends_when_the_store_closes,
);

fn options() -> StoreOptions {
    StoreOptions::default()
}

fn entry(key: &str, value: &str, create_revision: Revision, mod_revision: Revision) -> Entry {
    Entry {
        key: key.to_owned(),
        value: value.as_bytes().to_vec(),
        create_revision,
        mod_revision,
    }
}

fn put_event(key: &str, value: &str, create_revision: Revision, revision: Revision) -> Event {
    Event::Put(entry(key, value, create_revision, revision))
}

fn delete_event(key: &str, revision: Revision) -> Event {
    Event::Delete {
        key: key.to_owned(),
        revision,
    }
}

fn keys(store: &dyn Store, prefix: &str) -> Vec<String> {
    let listing = store.list(prefix).expect("list");
    listing.entries.into_iter().map(|entry| entry.key).collect()
}

/// Waits a bounded time for the watch's next change.
fn next(watch: &mut Watch) -> Result<Event, StoreError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime builds");
    let waited = runtime
        .block_on(async { tokio::time::timeout(Duration::from_secs(5), watch.next()).await });
    waited.expect("a change arrives within 5 s")
}

/// Takes every pending change and checks that nothing else is pending.
fn check_pending(watch: &mut Watch, expected: &[Event]) {
    let mut actual = Vec::new();
    while let Some(delivery) = watch.try_next() {
        actual.push(delivery.expect("change"));
    }
    assert_eq!(actual, expected);
}

fn puts_gets_and_deletes(open: Open) {
    let store = open(options());
    assert_eq!(store.revision(), 0);
    assert_eq!(store.get("apps/a/desired").expect("get"), None);

    assert_eq!(store.put("apps/a/desired", b"one").expect("put"), 1);
    assert_eq!(store.put("apps/b/desired", b"two").expect("put"), 2);
    assert_eq!(store.revision(), 2);
    let expected = entry("apps/a/desired", "one", 1, 1);
    assert_eq!(store.get("apps/a/desired").expect("get"), Some(expected));

    assert_eq!(store.delete("apps/a/desired").expect("delete"), Some(3));
    assert_eq!(store.get("apps/a/desired").expect("get"), None);
    assert_eq!(store.delete("apps/a/desired").expect("delete"), None);
    assert_eq!(
        store.revision(),
        3,
        "deleting an absent key commits nothing"
    );
}

fn lists_by_prefix(open: Open) {
    let store = open(options());
    for key in ["apps/a", "apps/a/x", "apps/ab", "apps/b", "members/m1", "z"] {
        store.put(key, b"v").expect("put");
    }
    let listing = store.list("apps/").expect("list");
    assert_eq!(listing.revision, 6);
    assert_eq!(
        keys(&*store, "apps/"),
        ["apps/a", "apps/a/x", "apps/ab", "apps/b"]
    );
    assert_eq!(keys(&*store, "apps/a/"), ["apps/a/x"]);
    assert_eq!(keys(&*store, "apps/a"), ["apps/a", "apps/a/x", "apps/ab"]);
    assert_eq!(keys(&*store, "nothing/"), Vec::<String>::new());
    assert_eq!(keys(&*store, "").len(), 6);
}

fn tracks_create_and_mod_revisions(open: Open) {
    let store = open(options());
    store.put("k", b"1").expect("put");
    store.put("other", b"x").expect("put");
    store.put("k", b"2").expect("put");
    assert_eq!(store.get("k").expect("get"), Some(entry("k", "2", 1, 3)));
    store.delete("k").expect("delete");
    store.put("k", b"3").expect("put");
    assert_eq!(
        store.get("k").expect("get"),
        Some(entry("k", "3", 5, 5)),
        "a key created again starts a new life"
    );
}

fn rejects_invalid_keys(open: Open) {
    let store = open(options());
    for key in ["", "/apps", "apps/", "apps//a"] {
        let error = store.put(key, b"v").expect_err("invalid key");
        assert!(matches!(&error, StoreError::InvalidKey { key: named, .. } if named == key));
        assert!(error.to_string().contains(&format!("{key:?}")), "{error}");
    }
    assert_eq!(store.revision(), 0);
}

fn applies_txn_all_or_nothing(open: Open) {
    let store = open(options());
    store.put("a", b"1").expect("put");
    let txn = Txn::new()
        .if_mod_revision("a", 1)
        .if_absent("b")
        .put("b", "2")
        .put("c", "3")
        .delete("a")
        .delete("never-existed");
    let outcome = store.txn(txn).expect("txn");
    assert_eq!(
        outcome,
        TxnOutcome {
            succeeded: true,
            revision: 2
        }
    );
    assert_eq!(keys(&*store, ""), ["b", "c"]);
    assert_eq!(store.get("c").expect("get"), Some(entry("c", "3", 2, 2)));

    let duplicate = store.txn(Txn::new().put("d", "1").delete("d"));
    assert!(matches!(duplicate, Err(StoreError::DuplicateKeyInTxn { key }) if key == "d"));
    let outcome = store.txn(Txn::new().delete("nothing")).expect("txn");
    assert_eq!(
        outcome,
        TxnOutcome {
            succeeded: true,
            revision: 2
        }
    );
}

fn txn_compare_failure_changes_nothing(open: Open) {
    let store = open(options());
    store.put("a", b"1").expect("put");
    store.put("b", b"1").expect("put");
    let mut watch = store.watch("", store.revision());
    let failing = [
        Txn::new().if_mod_revision("a", 2),
        Txn::new().if_mod_revision("missing", 0),
        Txn::new().if_absent("b"),
        Txn::new().if_mod_revision("a", 1).if_absent("b"),
    ];
    for txn in failing {
        let txn = txn.put("a", "changed").delete("b").put("new", "x");
        let outcome = store.txn(txn).expect("txn");
        assert_eq!(
            outcome,
            TxnOutcome {
                succeeded: false,
                revision: 2
            }
        );
    }
    assert_eq!(store.revision(), 2);
    assert_eq!(store.get("a").expect("get"), Some(entry("a", "1", 1, 1)));
    assert_eq!(keys(&*store, ""), ["a", "b"]);
    check_pending(&mut watch, &[]);
}

fn serialises_concurrent_compare_and_swap(open: Open) {
    const WRITERS: u64 = 3;
    const INCREMENTS: u64 = 15;
    let store = open(options());
    store.put_json("counter", &0u64).expect("put");
    let threads: Vec<_> = (0..WRITERS)
        .map(|_| {
            let store = Arc::clone(&store.store);
            std::thread::spawn(move || {
                for _ in 0..INCREMENTS {
                    loop {
                        let current = store.get("counter").expect("get").expect("counter");
                        let value: u64 = current.decode_json().expect("decode");
                        let txn = Txn::new()
                            .if_mod_revision("counter", current.mod_revision)
                            .put_json("counter", &(value + 1))
                            .expect("encode");
                        if store.txn(txn).expect("txn").succeeded {
                            break;
                        }
                    }
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().expect("writer thread");
    }
    let total: u64 = store.get_json("counter").expect("get").expect("counter");
    assert_eq!(total, WRITERS * INCREMENTS);
    assert_eq!(store.revision(), 1 + WRITERS * INCREMENTS);
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Desired {
    name: String,
    replicas: u32,
}

fn encodes_json(open: Open) {
    let store = open(options());
    let desired = Desired {
        name: "my-app".to_owned(),
        replicas: 2,
    };
    store
        .put_json("apps/my-app/desired", &desired)
        .expect("put");
    let read: Option<Desired> = store.get_json("apps/my-app/desired").expect("get");
    assert_eq!(read, Some(desired));
    let listed: Vec<(String, Desired)> = store.list_json("apps/").expect("list");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].0, "apps/my-app/desired");

    store.put("apps/broken/desired", b"{not json").expect("put");
    let error = store
        .get_json::<Desired>("apps/broken/desired")
        .expect_err("undecodable");
    assert!(error.to_string().contains("apps/broken/desired"), "{error}");
    assert!(store.list_json::<Desired>("apps/").is_err());
}

fn watch_replays_then_follows(open: Open) {
    let store = open(options());
    store.put("apps/a", b"1").expect("put");
    store.put("members/m1", b"up").expect("put");
    store.put("apps/b", b"1").expect("put");
    store.put("apps/a", b"2").expect("put");

    let mut watch = store.watch("apps/", 1);
    assert_eq!(watch.prefix(), "apps/");
    check_pending(
        &mut watch,
        &[
            put_event("apps/b", "1", 3, 3),
            put_event("apps/a", "2", 1, 4),
        ],
    );

    store.put("members/m2", b"up").expect("put");
    let txn = Txn::new()
        .put("apps/c", "1")
        .delete("apps/a")
        .put("members/m3", "up");
    store.txn(txn).expect("txn");
    store.delete("apps/b").expect("delete");
    assert_eq!(
        next(&mut watch).expect("change"),
        put_event("apps/c", "1", 6, 6)
    );
    check_pending(
        &mut watch,
        &[delete_event("apps/a", 6), delete_event("apps/b", 7)],
    );

    let mut from_the_future = store.watch("apps/", 8);
    store.put("apps/d", b"1").expect("put");
    store.put("apps/e", b"1").expect("put");
    check_pending(&mut from_the_future, &[put_event("apps/e", "1", 9, 9)]);
}

fn watch_wakes_on_a_commit_from_another_thread(open: Open) {
    let store = open(options());
    let mut watch = store.watch("apps/", 0);
    let writer = {
        let store = Arc::clone(&store.store);
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            store.put("apps/late", b"1").expect("put");
        })
    };
    assert_eq!(
        next(&mut watch).expect("change"),
        put_event("apps/late", "1", 1, 1)
    );
    writer.join().expect("writer thread");
}

fn watch_from_a_listing_misses_nothing(open: Open) {
    let store = open(options());
    let writer = {
        let store = Arc::clone(&store.store);
        std::thread::spawn(move || {
            for n in 0..30 {
                store.put(&format!("items/{n:02}"), b"v").expect("put");
            }
        })
    };
    std::thread::sleep(Duration::from_millis(5));
    let listing = store.list("items/").expect("list");
    let mut seen: Vec<String> = listing.entries.into_iter().map(|entry| entry.key).collect();
    let mut watch = store.watch("items/", listing.revision);
    while seen.len() < 30 {
        let event = next(&mut watch).expect("change");
        assert!(
            !seen.contains(&event.key().to_owned()),
            "{event:?} seen twice"
        );
        seen.push(event.key().to_owned());
    }
    writer.join().expect("writer thread");
    check_pending(&mut watch, &[]);
}

fn watch_from_a_compacted_revision_fails(open: Open) {
    let store = open(StoreOptions {
        changelog_revisions: 5,
        ..options()
    });
    for n in 0..12 {
        store.put(&format!("k/{n}"), b"v").expect("put");
    }
    let mut watch = store.watch("k/", 6);
    let error = next(&mut watch).expect_err("compacted");
    assert!(
        matches!(
            error,
            StoreError::Compacted {
                from: 6,
                compacted: 7,
                ..
            }
        ),
        "{error:?}"
    );
    assert!(matches!(
        next(&mut watch),
        Err(StoreError::WatchClosed { .. })
    ));

    let mut watch = store.watch("k/", 7);
    let replayed: Vec<Revision> = (0..5)
        .map(|_| next(&mut watch).expect("change").revision())
        .collect();
    assert_eq!(replayed, [8, 9, 10, 11, 12]);
}

fn lagging_watch_fails(open: Open) {
    let store = open(StoreOptions {
        watch_capacity: 4,
        ..options()
    });
    let mut watch = store.watch("", 0);
    for n in 0..10 {
        store.put(&format!("k/{n}"), b"v").expect("put");
    }
    let error = next(&mut watch).expect_err("lagged");
    assert!(
        matches!(error, StoreError::WatchLagged { missed: 6, .. }),
        "{error:?}"
    );
    assert!(error.to_string().contains("re-list"), "{error}");
    assert!(matches!(
        next(&mut watch),
        Err(StoreError::WatchClosed { .. })
    ));
}

fn watch_ends_when_the_store_closes(open: Open) {
    let store = open(options());
    store.put("k", b"v").expect("put");
    let mut watch = store.watch("", 0);
    drop(store);
    assert_eq!(
        next(&mut watch).expect("replayed"),
        put_event("k", "v", 1, 1)
    );
    assert!(matches!(
        next(&mut watch),
        Err(StoreError::WatchClosed { .. })
    ));
}

#[test]
fn redb_reopen_keeps_everything() {
    let dir = TempDir::new("reopen");
    {
        let store = RedbStore::open(dir.path()).expect("store opens");
        store.put("apps/a", b"1").expect("put");
        store.put("apps/b", b"1").expect("put");
        store.put("apps/a", b"2").expect("put");
        store.delete("apps/b").expect("delete");
    }
    let store = RedbStore::open(dir.path()).expect("store reopens");
    assert_eq!(store.revision(), 4);
    assert_eq!(keys(&store, ""), ["apps/a"]);
    assert_eq!(
        store.get("apps/a").expect("get"),
        Some(entry("apps/a", "2", 1, 3))
    );
    assert_eq!(store.put("apps/c", b"1").expect("put"), 5);

    let mut watch = store.watch("apps/", 2);
    check_pending(
        &mut watch,
        &[
            put_event("apps/a", "2", 1, 3),
            delete_event("apps/b", 4),
            put_event("apps/c", "1", 5, 5),
        ],
    );
}

#[test]
fn redb_refuses_a_second_open_of_the_same_data_dir() {
    let dir = TempDir::new("locked");
    let first = RedbStore::open(dir.path()).expect("store opens");
    let expected = dir.path().join(DATABASE_FILE_NAME);
    assert_eq!(first.path(), expected);
    match RedbStore::open(dir.path()) {
        Err(StoreError::AlreadyOpen { path }) => assert_eq!(path, expected),
        Err(other) => panic!("expected AlreadyOpen, got {other}"),
        Ok(_) => panic!("a second open succeeded"),
    }
    drop(first);
    RedbStore::open(dir.path()).expect("store opens once released");
}

#[test]
fn redb_names_the_path_when_the_data_dir_cannot_be_created() {
    let dir = TempDir::new("blocked");
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"").expect("file is writable");
    let error = RedbStore::open(file.join("data")).expect_err("data dir under a file");
    assert!(
        matches!(error, StoreError::CreateDataDir { .. }),
        "{error:?}"
    );
    assert!(
        error.to_string().contains(&file.display().to_string()),
        "{error}"
    );
}
