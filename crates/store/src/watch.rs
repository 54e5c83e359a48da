//! Delivery of changes to watchers: a replay read from a backend's changelog, then the live
//! commits from a broadcast channel, with the overlap between the two removed by revision.

use std::collections::VecDeque;
use std::sync::Arc;

use tokio::sync::broadcast;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};

use crate::{Event, Result, Revision, StoreError};

/// The changes of one committed write, in operation order, all at `revision`.
#[derive(Debug)]
pub(crate) struct Commit {
    pub(crate) revision: Revision,
    pub(crate) events: Vec<Event>,
}

/// The sending side every backend keeps: it must publish commits in revision order.
pub(crate) struct Hub {
    sender: broadcast::Sender<Arc<Commit>>,
}

impl Hub {
    pub(crate) fn new(capacity: usize) -> Hub {
        let (sender, _) = broadcast::channel(capacity.max(1));
        Hub { sender }
    }

    pub(crate) fn subscribe(&self) -> broadcast::Receiver<Arc<Commit>> {
        self.sender.subscribe()
    }

    pub(crate) fn publish(&self, commit: Commit) {
        // Having no watcher is not an error: the changelog keeps the history.
        let _ = self.sender.send(Arc::new(commit));
    }
}

/// What a backend read from its changelog when a watch started.
pub(crate) struct Replay {
    /// The changes after the watch's `from`, already filtered by prefix.
    pub(crate) events: Vec<Event>,
    /// The store's revision when the changelog was read.
    pub(crate) revision: Revision,
}

/// A stream of the changes under a prefix, from [`crate::Store::watch`].
///
/// Events come in revision order, each exactly once. A watcher that falls more than
/// [`crate::StoreOptions::watch_capacity`] commits behind gets [`StoreError::WatchLagged`], and
/// one that asked for a compacted revision gets [`StoreError::Compacted`]: either way it should
/// re-list and watch again from the listing's revision. After an error the watch is spent and
/// returns [`StoreError::WatchClosed`].
pub struct Watch {
    prefix: String,
    ready: VecDeque<Event>,
    /// Live commits at or below this revision were already covered by the replay.
    replayed_through: Revision,
    live: broadcast::Receiver<Arc<Commit>>,
    failure: Option<StoreError>,
    spent: bool,
}

impl Watch {
    /// Starts a watch; `live` must have subscribed before the backend read `replay`, so that no
    /// commit falls between the two.
    pub(crate) fn new(
        prefix: &str,
        from: Revision,
        live: broadcast::Receiver<Arc<Commit>>,
        replay: Result<Replay>,
    ) -> Watch {
        let (ready, replayed_through, failure) = match replay {
            Ok(replay) => (replay.events.into(), replay.revision.max(from), None),
            Err(error) => (VecDeque::new(), from, Some(error)),
        };
        Watch {
            prefix: prefix.to_owned(),
            ready,
            replayed_through,
            live,
            failure,
            spent: false,
        }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The next change, waiting for one to commit if none is pending.
    pub async fn next(&mut self) -> Result<Event> {
        loop {
            if let Some(delivery) = self.take_ready() {
                return delivery;
            }
            let received = self.live.recv().await;
            self.absorb(received);
        }
    }

    /// The next change if one is pending, without waiting.
    pub fn try_next(&mut self) -> Option<Result<Event>> {
        loop {
            if let Some(delivery) = self.take_ready() {
                return Some(delivery);
            }
            let received = match self.live.try_recv() {
                Ok(commit) => Ok(commit),
                Err(TryRecvError::Empty) => return None,
                Err(TryRecvError::Lagged(missed)) => Err(RecvError::Lagged(missed)),
                Err(TryRecvError::Closed) => Err(RecvError::Closed),
            };
            self.absorb(received);
        }
    }

    fn take_ready(&mut self) -> Option<Result<Event>> {
        if let Some(event) = self.ready.pop_front() {
            return Some(Ok(event));
        }
        if let Some(error) = self.failure.take() {
            self.spent = true;
            return Some(Err(error));
        }
        if self.spent {
            return Some(Err(StoreError::WatchClosed {
                prefix: self.prefix.clone(),
            }));
        }
        None
    }

    fn absorb(&mut self, received: std::result::Result<Arc<Commit>, RecvError>) {
        match received {
            Ok(commit) if commit.revision > self.replayed_through => {
                let matching = commit.events.iter();
                let matching = matching.filter(|event| event.key().starts_with(&self.prefix));
                self.ready.extend(matching.cloned());
            }
            Ok(_) => {}
            Err(RecvError::Lagged(missed)) => {
                self.failure = Some(StoreError::WatchLagged {
                    prefix: self.prefix.clone(),
                    missed,
                });
            }
            Err(RecvError::Closed) => self.spent = true,
        }
    }
}

impl std::fmt::Debug for Watch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watch")
            .field("prefix", &self.prefix)
            .field("pending", &self.ready.len())
            .field("replayed_through", &self.replayed_through)
            .field("spent", &self.spent)
            .finish()
    }
}
