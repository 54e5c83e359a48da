//! The event log: the last events, stored with the engine's state so they outlive a crash, kept
//! in memory for readers, and a feed for followers.

use std::collections::VecDeque;
use std::sync::Mutex;

use cairn_engine::Event;
use cairn_store::{Store, StoreError, Txn};
use tokio::sync::broadcast;

/// Events kept for readers that ask for history.
const RETAINED: u64 = 10_000;
/// Stored events are `events/<sequence number, zero-padded>`, so keys sort as they happened.
const PREFIX: &str = "events/";

pub struct EventLog {
    recent: Mutex<Recent>,
    feed: broadcast::Sender<Event>,
}

struct Recent {
    events: VecDeque<Event>,
    /// The sequence number the next event is stored under.
    next: u64,
}

fn key(sequence: u64) -> String {
    format!("{PREFIX}{sequence:020}")
}

impl EventLog {
    /// The log as stored; an event that no longer decodes is left out with a warning.
    pub fn load(store: &dyn Store) -> Result<EventLog, StoreError> {
        let mut events = VecDeque::new();
        let mut next = 0;
        for entry in store.list(PREFIX)?.entries {
            if let Some(sequence) = entry
                .key
                .strip_prefix(PREFIX)
                .and_then(|s| s.parse::<u64>().ok())
            {
                next = next.max(sequence + 1);
            }
            match entry.decode_json::<Event>() {
                Ok(event) => events.push_back(event),
                Err(e) => tracing::warn!("event log: {e}; left out"),
            }
        }
        Ok(EventLog {
            recent: Mutex::new(Recent { events, next }),
            feed: broadcast::channel(4096).0,
        })
    }

    /// Adds to `txn` the writes that store `events` after the ones recorded so far, and the
    /// deletes of what falls out of retention; [`EventLog::record`] follows once it committed.
    pub fn stage(&self, mut txn: Txn, events: &[Event]) -> Result<Txn, StoreError> {
        let next = self.lock().next;
        for (sequence, event) in (next..).zip(events) {
            txn = txn.put_json(&key(sequence), event)?;
            if let Some(expired) = sequence.checked_sub(RETAINED) {
                txn = txn.delete(&key(expired));
            }
        }
        Ok(txn)
    }

    /// Takes stored `events` into memory and sends them to followers.
    pub fn record(&self, events: impl IntoIterator<Item = Event>) {
        let mut recent = self.lock();
        for event in events {
            tracing::info!(application = %event.application, subject = %event.subject, "{}", event.message);
            if recent.events.len() as u64 >= RETAINED {
                recent.events.pop_front();
            }
            recent.events.push_back(event.clone());
            recent.next += 1;
            // Nobody following is not an error.
            let _ = self.feed.send(event);
        }
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

    fn event(n: u64) -> Event {
        Event {
            at: Millis(n),
            application: "app".into(),
            subject: "application".into(),
            message: format!("event {n}"),
            decision: None,
        }
    }

    #[test]
    fn stored_events_come_back_and_retention_holds() {
        let store = MemoryStore::new();
        let log = EventLog::load(&store).expect("empty log");
        let first: Vec<Event> = (0..RETAINED).map(event).collect();
        log.store_and_record(&store, first).expect("store");
        log.store_and_record(&store, vec![event(RETAINED), event(RETAINED + 1)])
            .expect("store");
        let again = EventLog::load(&store).expect("load");
        let messages = |log: &EventLog| {
            let recent = log.recent(Some("app"));
            (
                recent.len() as u64,
                recent[0].message.clone(),
                recent.last().unwrap().message.clone(),
            )
        };
        let expected = (
            RETAINED,
            "event 2".to_string(),
            format!("event {}", RETAINED + 1),
        );
        assert_eq!(messages(&log), expected);
        assert_eq!(messages(&again), expected);
        again
            .store_and_record(&store, vec![event(7)])
            .expect("store");
        assert_eq!(
            store
                .get(&key(RETAINED + 2))
                .expect("get")
                .map(|e| e.decode_json::<Event>().unwrap()),
            Some(event(7)),
            "a reloaded log goes on after the last stored event"
        );
    }
}
