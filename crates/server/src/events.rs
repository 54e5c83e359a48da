//! The event log: the last events in memory, and a feed for followers.

use std::collections::VecDeque;
use std::sync::Mutex;

use cairn_engine::Event;
use tokio::sync::broadcast;

/// Events kept for readers that ask for history.
const RETAINED: usize = 10_000;

pub struct EventLog {
    recent: Mutex<VecDeque<Event>>,
    feed: broadcast::Sender<Event>,
}

impl Default for EventLog {
    fn default() -> Self {
        EventLog {
            recent: Mutex::new(VecDeque::with_capacity(1024)),
            feed: broadcast::channel(4096).0,
        }
    }
}

impl EventLog {
    pub fn record(&self, events: impl IntoIterator<Item = Event>) {
        let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        for event in events {
            tracing::info!(application = %event.application, subject = %event.subject, "{}", event.message);
            if recent.len() == RETAINED {
                recent.pop_front();
            }
            recent.push_back(event.clone());
            // Nobody following is not an error.
            let _ = self.feed.send(event);
        }
    }

    /// Recorded events, oldest first, optionally of one application only.
    pub fn recent(&self, application: Option<&str>) -> Vec<Event> {
        let recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        recent
            .iter()
            .filter(|e| application.is_none_or(|a| e.application == a))
            .cloned()
            .collect()
    }

    pub fn follow(&self) -> broadcast::Receiver<Event> {
        self.feed.subscribe()
    }
}
