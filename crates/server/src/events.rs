//! The event log: the last events, stored with the engine's state so they outlive a crash, kept
//! in memory for readers, and a feed for followers.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Mutex;

use cairn_engine::Event;
use cairn_store::{Store, StoreError, Txn};
use tokio::sync::broadcast;

/// Events kept for readers that ask for history, in all.
const RETAINED: usize = 10_000;
/// Events kept of one application, so a busy one cannot push out the history of the others.
const RETAINED_PER_APPLICATION: usize = 2_000;
/// Stored events are `events/<sequence number, zero-padded>`, so keys sort as they happened.
const PREFIX: &str = "events/";

pub struct EventLog {
    recent: Mutex<Recent>,
    feed: broadcast::Sender<Event>,
}

struct Recent {
    /// Each kept event with its sequence number, oldest first.
    events: VecDeque<(u64, Event)>,
    /// The sequence number the next event is stored under.
    next: u64,
}

fn key(sequence: u64) -> String {
    format!("{PREFIX}{sequence:020}")
}

/// Which of `events` (oldest first) fall out of retention: the oldest beyond the limit of
/// their application, then the oldest beyond the limit in all.
fn expired<'a>(events: impl DoubleEndedIterator<Item = (u64, &'a str)>) -> BTreeSet<u64> {
    let mut per_application: BTreeMap<&str, usize> = BTreeMap::new();
    let mut kept = 0;
    let mut out = BTreeSet::new();
    for (sequence, application) in events.rev() {
        let count = per_application.entry(application).or_default();
        if *count >= RETAINED_PER_APPLICATION || kept >= RETAINED {
            out.insert(sequence);
        } else {
            *count += 1;
            kept += 1;
        }
    }
    out
}

impl Recent {
    /// What falls out of retention once `events` are added under the next sequence numbers.
    fn expired_with(&self, events: &[Event]) -> BTreeSet<u64> {
        // What is kept is within retention already.
        if events.is_empty() {
            return BTreeSet::new();
        }
        let kept = self
            .events
            .iter()
            .map(|(s, e)| (*s, e.application.as_str()));
        let added = (self.next..).zip(events.iter().map(|e| e.application.as_str()));
        expired(kept.chain(added).collect::<Vec<_>>().into_iter())
    }
}

impl EventLog {
    /// The log as stored, less what is beyond retention (deleted, as an older version kept
    /// more); an event that no longer decodes is left out with a warning.
    pub fn load(store: &dyn Store) -> Result<EventLog, StoreError> {
        let mut events = VecDeque::new();
        let mut next = 0;
        for entry in store.list(PREFIX)?.entries {
            let Some(sequence) = entry
                .key
                .strip_prefix(PREFIX)
                .and_then(|s| s.parse::<u64>().ok())
            else {
                continue;
            };
            next = next.max(sequence + 1);
            match entry.decode_json::<Event>() {
                Ok(event) => events.push_back((sequence, event)),
                Err(e) => tracing::warn!("event log: {e}; left out"),
            }
        }
        let dropped = expired(events.iter().map(|(s, e)| (*s, e.application.as_str())));
        if !dropped.is_empty() {
            let txn = dropped
                .iter()
                .fold(Txn::new(), |txn, s| txn.delete(&key(*s)));
            // Left in the store they only cost space: the log starts all the same.
            if let Err(e) = store.txn(txn) {
                tracing::warn!("event log: cannot delete events beyond retention: {e}");
            }
            events.retain(|(s, _)| !dropped.contains(s));
        }
        Ok(EventLog {
            recent: Mutex::new(Recent { events, next }),
            feed: broadcast::channel(4096).0,
        })
    }

    /// Adds to `txn` the writes that store `events` after the ones recorded so far, and the
    /// deletes of what falls out of retention; [`EventLog::record`] follows once it committed.
    pub fn stage(&self, mut txn: Txn, events: &[Event]) -> Result<Txn, StoreError> {
        let recent = self.lock();
        let expired = recent.expired_with(events);
        for (sequence, event) in (recent.next..).zip(events) {
            if !expired.contains(&sequence) {
                txn = txn.put_json(&key(sequence), event)?;
            }
        }
        for sequence in expired.iter().filter(|s| **s < recent.next) {
            txn = txn.delete(&key(*sequence));
        }
        Ok(txn)
    }

    /// Takes stored `events` into memory and sends them to followers.
    pub fn record(&self, events: impl IntoIterator<Item = Event>) {
        let events: Vec<Event> = events.into_iter().collect();
        let mut recent = self.lock();
        let expired = recent.expired_with(&events);
        for event in events {
            tracing::info!(application = %event.application, subject = %event.subject, "{}", event.message);
            let sequence = recent.next;
            recent.events.push_back((sequence, event.clone()));
            recent.next += 1;
            // Nobody following is not an error.
            let _ = self.feed.send(event);
        }
        recent.events.retain(|(s, _)| !expired.contains(s));
    }

    /// Stores `events` on their own, then records them.
    pub fn store_and_record(
        &self,
        store: &dyn Store,
        events: Vec<Event>,
    ) -> Result<(), StoreError> {
        store.txn(self.stage(Txn::new(), &events)?)?;
        self.record(events);
        Ok(())
    }

    /// Recorded events, oldest first, optionally of one application only.
    pub fn recent(&self, application: Option<&str>) -> Vec<Event> {
        self.lock()
            .events
            .iter()
            .map(|(_, e)| e)
            .filter(|e| application.is_none_or(|a| e.application == a))
            .cloned()
            .collect()
    }

    pub fn follow(&self) -> broadcast::Receiver<Event> {
        self.feed.subscribe()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Recent> {
        self.recent.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_engine::Millis;
    use cairn_store::MemoryStore;

    fn event(application: &str, n: usize) -> Event {
        Event {
            at: Millis(n as u64),
            application: application.into(),
            subject: "application".into(),
            message: format!("event {n}"),
            decision: None,
        }
    }

    /// Per application: how many events are kept, and the oldest and newest message.
    fn kept(log: &EventLog, application: &str) -> (usize, String, String) {
        let recent = log.recent(Some(application));
        let message = |e: Option<&Event>| e.map(|e| e.message.clone()).unwrap_or_default();
        (
            recent.len(),
            message(recent.first()),
            message(recent.last()),
        )
    }

    #[test]
    fn retention_keeps_each_application_its_share_and_survives_a_reload() {
        let store = MemoryStore::new();
        let log = EventLog::load(&store).expect("empty log");
        log.store_and_record(&store, (0..10).map(|n| event("quiet", n)).collect())
            .expect("store");
        // A busy application writes in batches, more than all retention holds.
        for batch in 0..6 {
            let events = (batch * 2_000..(batch + 1) * 2_000)
                .map(|n| event("busy", n))
                .collect();
            log.store_and_record(&store, events).expect("store");
        }
        let busy = (
            RETAINED_PER_APPLICATION,
            format!("event {}", 12_000 - RETAINED_PER_APPLICATION),
            "event 11999".to_string(),
        );
        let quiet = (10, "event 0".to_string(), "event 9".to_string());
        assert_eq!(
            (kept(&log, "busy"), kept(&log, "quiet")),
            (busy.clone(), quiet.clone())
        );
        let again = EventLog::load(&store).expect("load");
        assert_eq!((kept(&again, "busy"), kept(&again, "quiet")), (busy, quiet));
        assert_eq!(
            store.list(PREFIX).expect("list").entries.len(),
            RETAINED_PER_APPLICATION + 10,
            "what falls out is deleted from the store too"
        );

        // Many applications together keep at most RETAINED in all, the newest.
        for app in 0..6 {
            let events = (0..RETAINED_PER_APPLICATION)
                .map(|n| event(&format!("app{app}"), n))
                .collect();
            again.store_and_record(&store, events).expect("store");
        }
        assert_eq!(again.recent(None).len(), RETAINED);
        assert_eq!(store.list(PREFIX).expect("list").entries.len(), RETAINED);
        assert_eq!(kept(&again, "quiet").0, 0, "the oldest went first");
        again
            .store_and_record(&store, vec![event("late", 7)])
            .expect("store");
        let next = 10 + 12_000 + 6 * RETAINED_PER_APPLICATION as u64;
        assert_eq!(
            store
                .get(&key(next))
                .expect("get")
                .map(|e| e.decode_json::<Event>().unwrap()),
            Some(event("late", 7)),
            "a reloaded log goes on after the last stored event"
        );
    }

    #[test]
    fn loading_more_than_retention_deletes_the_rest() {
        let store = MemoryStore::new();
        let stored = RETAINED_PER_APPLICATION + 100;
        let txn = (0..stored).fold(Txn::new(), |txn, n| {
            txn.put_json(&key(n as u64), &event("old", n))
                .expect("encode")
        });
        store.txn(txn).expect("store");
        let log = EventLog::load(&store).expect("load");
        let kept_from = format!("event {}", stored - RETAINED_PER_APPLICATION);
        let last = format!("event {}", stored - 1);
        assert_eq!(
            kept(&log, "old"),
            (RETAINED_PER_APPLICATION, kept_from, last)
        );
        assert_eq!(
            store.list(PREFIX).expect("list").entries.len(),
            RETAINED_PER_APPLICATION
        );
    }
}
