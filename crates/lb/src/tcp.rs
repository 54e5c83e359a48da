//! A tcp port: each connection relayed as it is to one member of the port's cluster.

use std::sync::Arc;

use tokio::io::copy_bidirectional;
use tokio::net::TcpStream;

use crate::drain::DrainSignal;
use crate::flight::{ClusterFlight, MemberFlight};
use crate::routing::{ClusterTarget, attempt_order};
use crate::stats::{uptime, uptime_ms};

/// Connects the client to the first member that accepts, round robin, and relays bytes both
/// ways until either side closes or the listener's drain closes it; the connection counts as a request
/// in flight meanwhile. A client no member accepts is closed.
pub(crate) async fn relay(
    mut client: TcpStream,
    cluster: Arc<ClusterTarget>,
    mut drain: DrainSignal,
) {
    let now = uptime();
    let (second, now_ms) = (now.as_secs(), now.as_millis() as u64);
    let cluster = ClusterFlight::begin(cluster, second);
    let mut connected = None;
    for backend in attempt_order(&cluster.0.shared.next, &cluster.0.backends, now_ms) {
        let member = MemberFlight::begin(Arc::clone(&backend.counters), second);
        match backend.pool.connect_stream().await {
            Ok(stream) => {
                connected = Some((stream, member));
                break;
            }
            Err(error) => {
                member.cancel();
                backend.pool.mark_suspect(uptime_ms());
                tracing::debug!(member = %backend.member_id, %error, "member unreachable, trying the next one");
            }
        }
    }
    let Some((mut member_stream, member)) = connected else {
        cluster.0.shared.counters.failure();
        tracing::debug!(cluster = %cluster.0.shared.key, "no member accepted a tcp connection");
        return;
    };
    tokio::select! {
        relayed = copy_bidirectional(&mut client, &mut member_stream) => {
            if let Err(error) = relayed {
                member.0.failure();
                tracing::debug!(cluster = %cluster.0.shared.key, %error, "tcp relay ended with an error");
            }
        }
        // A relayed stream has no request to finish, so it lasts until the grace period ends.
        _ = drain.closing() => {}
    }
}
