//! A request (or a relayed tcp connection) counted in flight in its cluster and member for as
//! long as it lasts, whichever way it ends.

use std::sync::Arc;

use crate::routing::ClusterTarget;
use crate::stats::Counters;

/// Counts a request in its cluster from routing until it is done.
pub(crate) struct ClusterFlight(pub(crate) Arc<ClusterTarget>);

impl ClusterFlight {
    pub(crate) fn begin(cluster: Arc<ClusterTarget>, second: u64) -> ClusterFlight {
        cluster.shared.counters.begin(second);
        ClusterFlight(cluster)
    }
}

impl Drop for ClusterFlight {
    fn drop(&mut self) {
        self.0.shared.counters.end();
    }
}

/// Counts a request in the member it was sent to until it is done.
pub(crate) struct MemberFlight(pub(crate) Arc<Counters>);

impl MemberFlight {
    pub(crate) fn begin(counters: Arc<Counters>, second: u64) -> MemberFlight {
        counters.begin(second);
        MemberFlight(counters)
    }

    /// Takes back a request that never reached the member.
    pub(crate) fn cancel(self) {
        self.0.retract();
    }
}

impl Drop for MemberFlight {
    fn drop(&mut self) {
        self.0.end();
    }
}
