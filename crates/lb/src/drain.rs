//! Closing a listener's connections: first each after what it is serving, then, once a grace
//! period is over, whatever it is doing, so a stream that never ends cannot hold a shutdown.

use std::time::Duration;

use tokio::sync::watch;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Phase {
    Serving,
    Draining,
    Closing,
}

/// The listener's side: tells its connections to drain, then to close.
pub(crate) struct Drain {
    phase: watch::Sender<Phase>,
    grace: Duration,
}

/// A connection's side of its listener's [`Drain`].
#[derive(Clone)]
pub(crate) struct DrainSignal(watch::Receiver<Phase>);

impl Drain {
    pub(crate) fn new(grace: Duration) -> Drain {
        Drain {
            phase: watch::channel(Phase::Serving).0,
            grace,
        }
    }

    pub(crate) fn signal(&self) -> DrainSignal {
        DrainSignal(self.phase.subscribe())
    }

    /// Tells every connection to close after its current request, and waits until all have;
    /// past the grace period, tells the rest to close at once and waits for that.
    pub(crate) async fn shutdown(self) {
        // Nobody left to tell when every connection is already gone.
        let _ = self.phase.send(Phase::Draining);
        if tokio::time::timeout(self.grace, self.phase.closed())
            .await
            .is_ok()
        {
            return;
        }
        tracing::info!(
            open = self.phase.receiver_count(),
            "connections still busy after {} s of draining; closing them",
            self.grace.as_secs_f64()
        );
        let _ = self.phase.send(Phase::Closing);
        self.phase.closed().await;
    }
}

impl DrainSignal {
    /// Resolves once connections are to take no new request; a listener that is gone counts.
    pub(crate) async fn draining(&mut self) {
        let _ = self.0.wait_for(|phase| *phase >= Phase::Draining).await;
    }

    /// Resolves once connections are to close whatever they are doing.
    pub(crate) async fn closing(&mut self) {
        let _ = self.0.wait_for(|phase| *phase >= Phase::Closing).await;
    }
}
