//! Cairn's store: the desired state and the record of what runs, as a revisioned key-value store
//! with watches, shaped after etcd so that etcd can later take the embedded backend's place.
//!
//! Keys are `/`-separated strings (`apps/my-app/desired`, `members/<member-id>`); values are
//! bytes, which callers fill with JSON ([`StoreExt`] does the encoding). One global [`Revision`]
//! increases by one on every committed write; every entry records the revision that created it
//! and the one that last changed it. [`Store::txn`] applies a batch all-or-nothing under compare
//! conditions, and [`Store::watch`] replays the changes after a revision, then follows new ones.
//!
//! Backends: [`RedbStore`], embedded and durable in `<data_dir>/cairn.redb`, and [`MemoryStore`],
//! for tests and deterministic simulation.
//!
//! This crate must not interpret values, know the model's types, or talk to the network: it
//! stores bytes under keys and reports changes, nothing else.

mod embedded;
mod error;
mod memory;
mod watch;

use std::collections::HashMap;

use serde::Serialize;
use serde::de::DeserializeOwned;

pub use embedded::{DATABASE_FILE_NAME, RedbStore};
pub use error::{Result, StoreError};
pub use memory::MemoryStore;
pub use watch::Watch;

/// The store's global revision: 0 for an empty store, plus one for every committed write.
pub type Revision = u64;

/// One key's current value and its history in revisions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub key: String,
    pub value: Vec<u8>,
    /// The revision of the write that created the key (after its latest deletion, if any).
    pub create_revision: Revision,
    /// The revision of the write that last changed the key.
    pub mod_revision: Revision,
}

impl Entry {
    /// Decodes the value as JSON.
    pub fn decode_json<T: DeserializeOwned>(&self) -> Result<T> {
        serde_json::from_slice(&self.value).map_err(|source| StoreError::Decode {
            key: self.key.clone(),
            source,
        })
    }
}

/// The entries under a prefix, and the revision they were read at: watching from that revision
/// delivers exactly the changes the listing does not show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listing {
    pub revision: Revision,
    /// Sorted by key.
    pub entries: Vec<Entry>,
}

/// A condition a [`Txn`] checks before it applies its operations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Compare {
    /// The key exists and was last changed at exactly this revision.
    ModRevision { key: String, revision: Revision },
    /// The key does not exist.
    Absent { key: String },
}

/// A change a [`Txn`] makes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Put { key: String, value: Vec<u8> },
    Delete { key: String },
}

/// An atomic batch: if every compare holds, every operation is applied at one new revision;
/// otherwise nothing changes. A key may appear in at most one operation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Txn {
    pub compares: Vec<Compare>,
    pub ops: Vec<Op>,
}

impl Txn {
    pub fn new() -> Txn {
        Txn::default()
    }

    /// Requires `key` to exist with this mod revision.
    pub fn if_mod_revision(mut self, key: &str, revision: Revision) -> Txn {
        self.compares.push(Compare::ModRevision {
            key: key.to_owned(),
            revision,
        });
        self
    }

    /// Requires `key` not to exist.
    pub fn if_absent(mut self, key: &str) -> Txn {
        self.compares.push(Compare::Absent {
            key: key.to_owned(),
        });
        self
    }

    pub fn put(mut self, key: &str, value: impl Into<Vec<u8>>) -> Txn {
        self.ops.push(Op::Put {
            key: key.to_owned(),
            value: value.into(),
        });
        self
    }

    /// Adds a put of `value` encoded as JSON.
    pub fn put_json<T: Serialize + ?Sized>(self, key: &str, value: &T) -> Result<Txn> {
        let value = encode_json(key, value)?;
        Ok(self.put(key, value))
    }

    pub fn delete(mut self, key: &str) -> Txn {
        self.ops.push(Op::Delete {
            key: key.to_owned(),
        });
        self
    }
}

/// What a [`Txn`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TxnOutcome {
    /// Whether every compare held and the operations were applied.
    pub succeeded: bool,
    /// The store's revision after the transaction: the new revision if it changed anything, the
    /// unchanged current revision otherwise (a failed compare, or only deletes of absent keys).
    pub revision: Revision,
}

/// One change delivered by a [`Watch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The key now holds this entry; its `mod_revision` is the change's revision.
    Put(Entry),
    /// The key was deleted at this revision.
    Delete { key: String, revision: Revision },
}

impl Event {
    pub fn key(&self) -> &str {
        match self {
            Event::Put(entry) => &entry.key,
            Event::Delete { key, .. } => key,
        }
    }

    pub fn revision(&self) -> Revision {
        match self {
            Event::Put(entry) => entry.mod_revision,
            Event::Delete { revision, .. } => *revision,
        }
    }
}

/// Tuning shared by the backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreOptions {
    /// How many of the latest revisions the changelog keeps for watches to replay; a watch from
    /// an older revision fails with [`StoreError::Compacted`].
    pub changelog_revisions: u64,
    /// How many commits a watcher may fall behind before it fails with
    /// [`StoreError::WatchLagged`].
    pub watch_capacity: usize,
}

impl Default for StoreOptions {
    fn default() -> StoreOptions {
        StoreOptions {
            changelog_revisions: 10_000,
            watch_capacity: 4_096,
        }
    }
}

/// A revisioned key-value store with watches.
///
/// Writes block until they are durable (for backends that persist), so async callers with many
/// writes should run them on a blocking thread. Prefixes are plain string prefixes: list
/// `apps/my-app/` rather than `apps/my-app`, which also matches `apps/my-app2/...`.
pub trait Store: Send + Sync + 'static {
    fn get(&self, key: &str) -> Result<Option<Entry>>;

    /// Every entry whose key starts with `prefix` (all of them for `""`), sorted by key.
    fn list(&self, prefix: &str) -> Result<Listing>;

    /// Sets `key` to `value` and returns the new revision.
    fn put(&self, key: &str, value: &[u8]) -> Result<Revision>;

    /// Deletes `key`; returns the new revision, or `None` (and changes nothing) if it was absent.
    fn delete(&self, key: &str) -> Result<Option<Revision>>;

    fn txn(&self, txn: Txn) -> Result<TxnOutcome>;

    /// The revision of the latest committed write.
    fn revision(&self) -> Revision;

    /// Every change to a key starting with `prefix` whose revision is greater than `from`, in
    /// revision order: first those already committed, then new ones as they commit.
    fn watch(&self, prefix: &str, from: Revision) -> Watch;
}

/// JSON helpers for every [`Store`], `dyn Store` included.
pub trait StoreExt: Store {
    fn get_json<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>> {
        self.get(key)?.map(|entry| entry.decode_json()).transpose()
    }

    fn put_json<T: Serialize + ?Sized>(&self, key: &str, value: &T) -> Result<Revision> {
        self.put(key, &encode_json(key, value)?)
    }

    /// The decoded values under `prefix`, sorted by key.
    fn list_json<T: DeserializeOwned>(&self, prefix: &str) -> Result<Vec<(String, T)>> {
        self.list(prefix)?
            .entries
            .into_iter()
            .map(|entry| entry.decode_json().map(|value| (entry.key, value)))
            .collect()
    }
}

impl<S: Store + ?Sized> StoreExt for S {}

fn encode_json<T: Serialize + ?Sized>(key: &str, value: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(value).map_err(|source| StoreError::Encode {
        key: key.to_owned(),
        source,
    })
}

/// Rejects keys that cannot be a `/`-separated path.
fn validate_key(key: &str) -> Result<()> {
    let reason = if key.is_empty() {
        "it is empty"
    } else if key.starts_with('/') {
        "it starts with '/'"
    } else if key.ends_with('/') {
        "it ends with '/'"
    } else if key.contains("//") {
        "it has an empty segment"
    } else {
        return Ok(());
    };
    Err(StoreError::InvalidKey {
        key: key.to_owned(),
        reason,
    })
}

/// The revisions a stored key carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct KeyRevisions {
    create: Revision,
    modified: Revision,
}

/// Works out what `txn` does at `revision` given the current state that `lookup` reads: `None`
/// when a compare fails, otherwise the changes to apply, in operation order (possibly none).
fn plan_txn(
    txn: &Txn,
    revision: Revision,
    mut lookup: impl FnMut(&str) -> Result<Option<KeyRevisions>>,
) -> Result<Option<Vec<Event>>> {
    for compare in &txn.compares {
        match compare {
            Compare::ModRevision { key, .. } | Compare::Absent { key } => validate_key(key)?,
        }
    }
    let mut seen = HashMap::new();
    for op in &txn.ops {
        let key = match op {
            Op::Put { key, .. } | Op::Delete { key } => key,
        };
        validate_key(key)?;
        if seen.insert(key.as_str(), ()).is_some() {
            return Err(StoreError::DuplicateKeyInTxn { key: key.clone() });
        }
    }
    for compare in &txn.compares {
        let holds = match compare {
            Compare::ModRevision {
                key,
                revision: expected,
            } => lookup(key)?.is_some_and(|current| current.modified == *expected),
            Compare::Absent { key } => lookup(key)?.is_none(),
        };
        if !holds {
            return Ok(None);
        }
    }
    let mut events = Vec::with_capacity(txn.ops.len());
    for op in &txn.ops {
        match op {
            Op::Put { key, value } => {
                let create_revision = lookup(key)?.map_or(revision, |current| current.create);
                events.push(Event::Put(Entry {
                    key: key.clone(),
                    value: value.clone(),
                    create_revision,
                    mod_revision: revision,
                }));
            }
            Op::Delete { key } => {
                if lookup(key)?.is_some() {
                    events.push(Event::Delete {
                        key: key.clone(),
                        revision,
                    });
                }
            }
        }
    }
    Ok(Some(events))
}

/// What applying a transaction did; `changed` tells a delete of an absent key from a real one.
struct Applied {
    outcome: TxnOutcome,
    changed: bool,
}

impl Applied {
    fn unchanged(succeeded: bool, revision: Revision) -> Applied {
        Applied {
            outcome: TxnOutcome {
                succeeded,
                revision,
            },
            changed: false,
        }
    }

    fn committed(revision: Revision) -> Applied {
        Applied {
            outcome: TxnOutcome {
                succeeded: true,
                revision,
            },
            changed: true,
        }
    }
}

/// The oldest revision a watch may start from once the store is at `revision`.
fn compacted_through(revision: Revision, options: &StoreOptions) -> Revision {
    revision.saturating_sub(options.changelog_revisions)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(txn: Txn, state: &[(&str, Revision, Revision)], expected: Result<Option<Vec<Event>>>) {
        let lookup = |key: &str| {
            Ok(state
                .iter()
                .find(|(stored, _, _)| *stored == key)
                .map(|&(_, create, modified)| KeyRevisions { create, modified }))
        };
        let actual = plan_txn(&txn, 10, lookup);
        assert_eq!(format!("{actual:?}"), format!("{expected:?}"));
    }

    fn put(key: &str, create_revision: Revision) -> Event {
        Event::Put(Entry {
            key: key.to_owned(),
            value: b"v".to_vec(),
            create_revision,
            mod_revision: 10,
        })
    }

    #[test]
    fn plans_transactions() {
        let state = [("a", 3, 7)];
        check(
            Txn::new().put("b", "v"),
            &state,
            Ok(Some(vec![put("b", 10)])),
        );
        check(
            Txn::new().put("a", "v"),
            &state,
            Ok(Some(vec![put("a", 3)])),
        );
        check(
            Txn::new().if_mod_revision("a", 7).put("a", "v"),
            &state,
            Ok(Some(vec![put("a", 3)])),
        );
        check(
            Txn::new().if_mod_revision("a", 6).put("a", "v"),
            &state,
            Ok(None),
        );
        check(
            Txn::new().if_mod_revision("b", 0).put("b", "v"),
            &state,
            Ok(None),
        );
        check(Txn::new().if_absent("a").put("b", "v"), &state, Ok(None));
        check(
            Txn::new().if_absent("b").put("b", "v"),
            &state,
            Ok(Some(vec![put("b", 10)])),
        );
        check(
            Txn::new().delete("a").delete("b"),
            &state,
            Ok(Some(vec![Event::Delete {
                key: "a".to_owned(),
                revision: 10,
            }])),
        );
        check(Txn::new().delete("b"), &state, Ok(Some(vec![])));
        check(
            Txn::new().put("a", "v").delete("a"),
            &state,
            Err(StoreError::DuplicateKeyInTxn {
                key: "a".to_owned(),
            }),
        );
        check(
            Txn::new().if_absent("x/").put("a", "v"),
            &state,
            Err(StoreError::InvalidKey {
                key: "x/".to_owned(),
                reason: "it ends with '/'",
            }),
        );
    }

    #[test]
    fn validates_keys() {
        for key in ["apps/my-app/desired", "members/m-1", "a"] {
            assert!(validate_key(key).is_ok(), "{key}");
        }
        for key in ["", "/apps", "apps/", "apps//x"] {
            assert!(validate_key(key).is_err(), "{key:?}");
        }
    }

    #[test]
    fn handles_cross_threads() {
        fn check_send<T: Send + 'static>() {}
        check_send::<Watch>();
        check_send::<StoreError>();
        check_send::<std::sync::Arc<dyn Store>>();
    }

    #[test]
    fn compacts_only_past_the_retention() {
        let options = StoreOptions {
            changelog_revisions: 100,
            watch_capacity: 1,
        };
        assert_eq!(compacted_through(50, &options), 0);
        assert_eq!(compacted_through(100, &options), 0);
        assert_eq!(compacted_through(250, &options), 150);
    }
}
