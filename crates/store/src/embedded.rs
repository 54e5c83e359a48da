//! The embedded backend on redb: entries, a bounded changelog for watches and the revision
//! counters live in one database file, changed together in one redb write transaction per
//! commit.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use redb::{
    Database, DatabaseError, Durability, ReadTransaction, ReadableDatabase, ReadableTable,
    TableDefinition, WriteTransaction,
};

use crate::watch::{Commit, Hub, Replay, Watch};
use crate::{
    Applied, Entry, Event, KeyRevisions, Listing, Result, Revision, Store, StoreError,
    StoreOptions, Txn, TxnOutcome, compacted_through, plan_txn,
};

/// The file the embedded store keeps in its data directory.
pub const DATABASE_FILE_NAME: &str = "cairn.redb";

/// key -> (create revision, mod revision, value)
const ENTRIES: TableDefinition<&str, (u64, u64, &[u8])> = TableDefinition::new("entries");
/// (revision, position in its commit)
type ChangePosition = (u64, u64);
/// (key, value or `None` for a delete, create revision)
type ChangeRecord<'a> = (&'a str, Option<&'a [u8]>, u64);
const CHANGELOG: TableDefinition<ChangePosition, ChangeRecord> = TableDefinition::new("changelog");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const META_REVISION: &str = "revision";
/// Changes at or below this revision are gone from the changelog.
const META_COMPACTED: &str = "compacted";

/// The embedded [`Store`], in `<data_dir>/cairn.redb`.
///
/// Durability: every write commits with redb's [`Durability::Immediate`], which fsyncs before
/// the commit returns, so a write that returned `Ok` survives the process being killed (`kill
/// -9`) at any moment, and a commit cut short leaves the previous state (redb repairs the file
/// when it is next opened). Only one handle may have a data directory open at a time, in this
/// process or another: the second open fails with [`StoreError::AlreadyOpen`].
pub struct RedbStore {
    db: Database,
    path: PathBuf,
    options: StoreOptions,
    /// Held across commit and publish, so watchers receive commits in revision order.
    writer: Mutex<()>,
    revision: AtomicU64,
    hub: Hub,
}

impl RedbStore {
    /// Opens the store in `data_dir`, creating the directory and the database if needed.
    pub fn open(data_dir: impl AsRef<Path>) -> Result<RedbStore> {
        RedbStore::open_with(data_dir, StoreOptions::default())
    }

    pub fn open_with(data_dir: impl AsRef<Path>, options: StoreOptions) -> Result<RedbStore> {
        let data_dir = data_dir.as_ref();
        std::fs::create_dir_all(data_dir).map_err(|source| StoreError::CreateDataDir {
            path: data_dir.to_path_buf(),
            source,
        })?;
        let path = data_dir.join(DATABASE_FILE_NAME);
        let db = match Database::create(&path) {
            Ok(db) => db,
            Err(DatabaseError::DatabaseAlreadyOpen) => {
                return Err(StoreError::AlreadyOpen { path });
            }
            Err(source) => return Err(backend_error(&path, "open", source)),
        };
        let revision = create_tables(&db).map_err(|source| backend_error(&path, "open", source))?;
        Ok(RedbStore {
            db,
            path,
            hub: Hub::new(options.watch_capacity),
            options,
            writer: Mutex::new(()),
            revision: AtomicU64::new(revision),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn fail<E: Into<redb::Error>>(&self, operation: &'static str) -> impl FnOnce(E) -> StoreError {
        move |source| backend_error(&self.path, operation, source)
    }

    fn apply(&self, txn: &Txn) -> Result<Applied> {
        // The guard protects no data, so a poisoned lock is still usable.
        let _writer = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        let current = self.revision.load(Ordering::SeqCst);
        let revision = current + 1;
        let mut write = self.db.begin_write().map_err(self.fail("begin write"))?;
        write
            .set_durability(Durability::Immediate)
            .map_err(self.fail("set durability"))?;
        let Some(events) = self.plan_into(&write, txn, revision)? else {
            return Ok(Applied::unchanged(false, current));
        };
        if events.is_empty() {
            return Ok(Applied::unchanged(true, current));
        }
        record_commit(&write, &events, revision, &self.options).map_err(self.fail("write"))?;
        write.commit().map_err(self.fail("commit"))?;
        self.revision.store(revision, Ordering::SeqCst);
        self.hub.publish(Commit { revision, events });
        Ok(Applied::committed(revision))
    }

    /// Plans `txn` against the entries table and, if it goes ahead, applies it there.
    fn plan_into(
        &self,
        write: &WriteTransaction,
        txn: &Txn,
        revision: Revision,
    ) -> Result<Option<Vec<Event>>> {
        let mut entries = write
            .open_table(ENTRIES)
            .map_err(self.fail("open entries"))?;
        let lookup = |key: &str| {
            let found = entries.get(key).map_err(self.fail("read"))?;
            Ok(found.map(|stored| {
                let (create, modified, _) = stored.value();
                KeyRevisions { create, modified }
            }))
        };
        let Some(events) = plan_txn(txn, revision, lookup)? else {
            return Ok(None);
        };
        for event in &events {
            match event {
                Event::Put(entry) => {
                    let stored = (entry.create_revision, entry.mod_revision, &entry.value[..]);
                    entries.insert(entry.key.as_str(), stored).map(drop)
                }
                Event::Delete { key, .. } => entries.remove(key.as_str()).map(drop),
            }
            .map_err(self.fail("write"))?;
        }
        Ok(Some(events))
    }

    fn read(&self) -> Result<ReadTransaction> {
        self.db.begin_read().map_err(self.fail("begin read"))
    }

    fn replay(&self, prefix: &str, from: Revision) -> Result<Replay> {
        let read = self.read()?;
        let (revision, compacted) = read_counters(&read).map_err(self.fail("read"))?;
        if from < compacted {
            return Err(StoreError::Compacted {
                prefix: prefix.to_owned(),
                from,
                compacted,
            });
        }
        let events = read_changelog(&read, prefix, from).map_err(self.fail("read changelog"))?;
        Ok(Replay { events, revision })
    }
}

impl Store for RedbStore {
    fn get(&self, key: &str) -> Result<Option<Entry>> {
        let read = self.read()?;
        let entries = read
            .open_table(ENTRIES)
            .map_err(self.fail("open entries"))?;
        let found = entries.get(key).map_err(self.fail("read"))?;
        Ok(found.map(|stored| decode_entry(key, stored.value())))
    }

    fn list(&self, prefix: &str) -> Result<Listing> {
        let read = self.read()?;
        let (revision, _) = read_counters(&read).map_err(self.fail("read"))?;
        let entries = read_prefix(&read, prefix).map_err(self.fail("list"))?;
        Ok(Listing { revision, entries })
    }

    fn put(&self, key: &str, value: &[u8]) -> Result<Revision> {
        Ok(self.apply(&Txn::new().put(key, value))?.outcome.revision)
    }

    fn delete(&self, key: &str) -> Result<Option<Revision>> {
        let applied = self.apply(&Txn::new().delete(key))?;
        Ok(applied.changed.then_some(applied.outcome.revision))
    }

    fn txn(&self, txn: Txn) -> Result<TxnOutcome> {
        Ok(self.apply(&txn)?.outcome)
    }

    fn revision(&self) -> Revision {
        self.revision.load(Ordering::SeqCst)
    }

    fn watch(&self, prefix: &str, from: Revision) -> Watch {
        // Subscribing before the replay is read means no commit falls between the two.
        let live = self.hub.subscribe();
        Watch::new(prefix, from, live, self.replay(prefix, from))
    }
}

impl std::fmt::Debug for RedbStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedbStore")
            .field("path", &self.path)
            .field("revision", &self.revision())
            .finish()
    }
}

fn backend_error(
    path: &Path,
    operation: &'static str,
    source: impl Into<redb::Error>,
) -> StoreError {
    StoreError::Backend {
        path: path.to_path_buf(),
        operation,
        source: Box::new(source.into()),
    }
}

/// Creates the tables of a new database and returns the stored revision.
fn create_tables(db: &Database) -> Result<Revision, redb::Error> {
    let write = db.begin_write()?;
    write.open_table(ENTRIES)?;
    write.open_table(CHANGELOG)?;
    let revision = write
        .open_table(META)?
        .get(META_REVISION)?
        .map_or(0, |stored| stored.value());
    write.commit()?;
    Ok(revision)
}

/// Appends a commit's events to the changelog, drops what falls out of the retention, and
/// advances the counters.
fn record_commit(
    write: &WriteTransaction,
    events: &[Event],
    revision: Revision,
    options: &StoreOptions,
) -> Result<(), redb::Error> {
    let mut changelog = write.open_table(CHANGELOG)?;
    for (position, event) in (0u64..).zip(events) {
        let record = match event {
            Event::Put(entry) => (
                entry.key.as_str(),
                Some(&entry.value[..]),
                entry.create_revision,
            ),
            Event::Delete { key, .. } => (key.as_str(), None, 0),
        };
        changelog.insert((revision, position), record)?;
    }
    let compacted = compacted_through(revision, options);
    changelog.retain_in(..=(compacted, u64::MAX), |_, _| false)?;
    let mut meta = write.open_table(META)?;
    meta.insert(META_REVISION, revision)?;
    meta.insert(META_COMPACTED, compacted)?;
    Ok(())
}

/// The store's revision and the revision the changelog is compacted through.
fn read_counters(read: &ReadTransaction) -> Result<(Revision, Revision), redb::Error> {
    let meta = read.open_table(META)?;
    let revision = meta.get(META_REVISION)?.map_or(0, |stored| stored.value());
    let compacted = meta.get(META_COMPACTED)?.map_or(0, |stored| stored.value());
    Ok((revision, compacted))
}

fn read_prefix(read: &ReadTransaction, prefix: &str) -> Result<Vec<Entry>, redb::Error> {
    let entries = read.open_table(ENTRIES)?;
    let mut found = Vec::new();
    for item in entries.range(prefix..)? {
        let (key, stored) = item?;
        let key = key.value();
        if !key.starts_with(prefix) {
            break;
        }
        found.push(decode_entry(key, stored.value()));
    }
    Ok(found)
}

fn read_changelog(
    read: &ReadTransaction,
    prefix: &str,
    from: Revision,
) -> Result<Vec<Event>, redb::Error> {
    let changelog = read.open_table(CHANGELOG)?;
    let mut events = Vec::new();
    for item in changelog.range((from.saturating_add(1), 0)..)? {
        let (position, record) = item?;
        let (revision, _) = position.value();
        let (key, value, create_revision) = record.value();
        if !key.starts_with(prefix) {
            continue;
        }
        events.push(match value {
            Some(value) => Event::Put(Entry {
                key: key.to_owned(),
                value: value.to_vec(),
                create_revision,
                mod_revision: revision,
            }),
            None => Event::Delete {
                key: key.to_owned(),
                revision,
            },
        });
    }
    Ok(events)
}

fn decode_entry(key: &str, (create_revision, mod_revision, value): (u64, u64, &[u8])) -> Entry {
    Entry {
        key: key.to_owned(),
        value: value.to_vec(),
        create_revision,
        mod_revision,
    }
}
