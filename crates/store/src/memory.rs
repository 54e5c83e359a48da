//! The in-memory backend: the same contract as the embedded one, without persistence, for
//! tests and deterministic simulation.

use std::collections::{BTreeMap, VecDeque};
use std::ops::Bound;
use std::sync::{Mutex, MutexGuard, PoisonError};

use crate::watch::{Commit, Hub, Replay, Watch};
use crate::{
    Applied, Entry, Event, KeyRevisions, Listing, Result, Revision, Store, StoreError,
    StoreOptions, Txn, TxnOutcome, compacted_through, plan_txn,
};

/// A [`Store`] held in memory; everything is lost when it is dropped.
pub struct MemoryStore {
    state: Mutex<State>,
    hub: Hub,
    options: StoreOptions,
}

#[derive(Default)]
struct State {
    entries: BTreeMap<String, Entry>,
    revision: Revision,
    /// Every change after `compacted`, in revision order.
    changelog: VecDeque<Event>,
    compacted: Revision,
}

impl MemoryStore {
    pub fn new() -> MemoryStore {
        MemoryStore::with_options(StoreOptions::default())
    }

    pub fn with_options(options: StoreOptions) -> MemoryStore {
        MemoryStore {
            state: Mutex::new(State::default()),
            hub: Hub::new(options.watch_capacity),
            options,
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Mutations below cannot panic half-way, so a poisoned state is still consistent.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn apply(&self, txn: &Txn) -> Result<Applied> {
        let mut state = self.state();
        let revision = state.revision + 1;
        let lookup = |key: &str| {
            Ok(state.entries.get(key).map(|entry| KeyRevisions {
                create: entry.create_revision,
                modified: entry.mod_revision,
            }))
        };
        let Some(events) = plan_txn(txn, revision, lookup)? else {
            return Ok(Applied::unchanged(false, state.revision));
        };
        if events.is_empty() {
            return Ok(Applied::unchanged(true, state.revision));
        }
        for event in &events {
            match event {
                Event::Put(entry) => state.entries.insert(entry.key.clone(), entry.clone()),
                Event::Delete { key, .. } => state.entries.remove(key),
            };
        }
        state.revision = revision;
        state.changelog.extend(events.iter().cloned());
        state.compacted = compacted_through(revision, &self.options);
        while state
            .changelog
            .front()
            .is_some_and(|event| event.revision() <= state.compacted)
        {
            state.changelog.pop_front();
        }
        // Published under the lock so that watchers see commits in revision order.
        self.hub.publish(Commit { revision, events });
        Ok(Applied::committed(revision))
    }
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore")
            .field("revision", &self.revision())
            .finish()
    }
}

impl Default for MemoryStore {
    fn default() -> MemoryStore {
        MemoryStore::new()
    }
}

impl Store for MemoryStore {
    fn get(&self, key: &str) -> Result<Option<Entry>> {
        Ok(self.state().entries.get(key).cloned())
    }

    fn list(&self, prefix: &str) -> Result<Listing> {
        let state = self.state();
        let entries = state
            .entries
            .range::<str, _>((Bound::Included(prefix), Bound::Unbounded))
            .take_while(|(key, _)| key.starts_with(prefix))
            .map(|(_, entry)| entry.clone())
            .collect();
        Ok(Listing {
            revision: state.revision,
            entries,
        })
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
        self.state().revision
    }

    fn watch(&self, prefix: &str, from: Revision) -> Watch {
        let state = self.state();
        let live = self.hub.subscribe();
        let replay = if from < state.compacted {
            Err(StoreError::Compacted {
                prefix: prefix.to_owned(),
                from,
                compacted: state.compacted,
            })
        } else {
            let events = state
                .changelog
                .iter()
                .filter(|event| event.revision() > from && event.key().starts_with(prefix))
                .cloned()
                .collect();
            Ok(Replay {
                events,
                revision: state.revision,
            })
        };
        Watch::new(prefix, from, live, replay)
    }
}
