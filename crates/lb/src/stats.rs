//! Request counters kept in atomics so the proxy's hot path never takes a lock,
//! and the snapshots `LoadBalancer::stats` hands out.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use hyper::StatusCode;
use serde::{Deserialize, Serialize};

use crate::table::ClusterKey;

/// How many complete seconds the request rate is averaged over.
pub const RATE_WINDOW_SECS: u64 = 10;

/// What the load balancer has counted, per cluster and per member.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
pub struct LbStats {
    /// Clusters of the current route table, ordered by key.
    pub clusters: Vec<ClusterStats>,
}

impl LbStats {
    pub fn cluster(&self, key: &ClusterKey) -> Option<&ClusterStats> {
        self.clusters.iter().find(|cluster| &cluster.key == key)
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct ClusterStats {
    pub key: ClusterKey,
    pub requests: RequestStats,
    /// Members of the current route table, ordered by id.
    pub members: Vec<MemberStats>,
}

impl ClusterStats {
    pub fn member(&self, member_id: &str) -> Option<&MemberStats> {
        self.members
            .iter()
            .find(|member| member.member_id == member_id)
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct MemberStats {
    pub member_id: String,
    pub requests: RequestStats,
}

/// Counters since the cluster or member first appeared in a route table.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
pub struct RequestStats {
    /// Requests received and not yet answered to the end of the response body.
    pub in_flight: u64,
    pub total: u64,
    /// Responses from members by status class; the proxy's own 502 and 503 count as failures.
    pub status_2xx: u64,
    pub status_3xx: u64,
    pub status_4xx: u64,
    pub status_5xx: u64,
    /// Requests the proxy could not complete: no member reachable, or a member failed mid-exchange.
    pub failures: u64,
    /// Requests per second averaged over the last `RATE_WINDOW_SECS` complete seconds.
    pub per_second: f64,
}

/// Time since the first call, shared by every counter of the process.
pub(crate) fn uptime() -> Duration {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed()
}

/// [`uptime`] in milliseconds, read anew: one attempt of a request may start seconds after
/// the request did, and connection ages and suspicion go by the time of the attempt.
pub(crate) fn uptime_ms() -> u64 {
    uptime().as_millis() as u64
}

/// The live counters of one cluster or one member.
#[derive(Default)]
pub(crate) struct Counters {
    in_flight: AtomicU64,
    total: AtomicU64,
    by_class: [AtomicU64; 4],
    failures: AtomicU64,
    rate: RateRing,
}

impl Counters {
    pub(crate) fn begin(&self, second: u64) {
        self.in_flight.fetch_add(1, Relaxed);
        self.total.fetch_add(1, Relaxed);
        self.rate.record(second);
    }

    /// Undoes `begin` for a request that never reached its target.
    pub(crate) fn retract(&self) {
        self.total.fetch_sub(1, Relaxed);
    }

    pub(crate) fn end(&self) {
        self.in_flight.fetch_sub(1, Relaxed);
    }

    pub(crate) fn response(&self, status: StatusCode) {
        if let Some(counter) = (status.as_u16() / 100)
            .checked_sub(2)
            .and_then(|class| self.by_class.get(usize::from(class)))
        {
            counter.fetch_add(1, Relaxed);
        }
    }

    pub(crate) fn failure(&self) {
        self.failures.fetch_add(1, Relaxed);
    }

    pub(crate) fn snapshot(&self, second: u64) -> RequestStats {
        let [status_2xx, status_3xx, status_4xx, status_5xx] = self
            .by_class
            .each_ref()
            .map(|counter| counter.load(Relaxed));
        RequestStats {
            in_flight: self.in_flight.load(Relaxed),
            total: self.total.load(Relaxed),
            status_2xx,
            status_3xx,
            status_4xx,
            status_5xx,
            failures: self.failures.load(Relaxed),
            per_second: self.rate.per_second(second),
        }
    }
}

const RING_LEN: u64 = 16;
const COUNT_BITS: u32 = 40;
const COUNT_MASK: u64 = (1 << COUNT_BITS) - 1;
const STAMP_MASK: u64 = (1 << (64 - COUNT_BITS)) - 1;

/// Requests per second for the last few seconds: each bucket packs the second
/// it counts (high bits) with its count (low bits) so one atomic suffices.
#[derive(Default)]
struct RateRing {
    buckets: [AtomicU64; RING_LEN as usize],
}

impl RateRing {
    fn bucket(&self, second: u64) -> &AtomicU64 {
        &self.buckets[(second % RING_LEN) as usize]
    }

    fn record(&self, second: u64) {
        let stamp = second & STAMP_MASK;
        let bucket = self.bucket(second);
        let mut current = bucket.load(Relaxed);
        loop {
            if current >> COUNT_BITS == stamp {
                bucket.fetch_add(1, Relaxed);
                return;
            }
            let fresh = (stamp << COUNT_BITS) | 1;
            match bucket.compare_exchange_weak(current, fresh, Relaxed, Relaxed) {
                Ok(_) => return,
                Err(actual) => current = actual,
            }
        }
    }

    fn per_second(&self, second: u64) -> f64 {
        let counted: u64 = (1..=RATE_WINDOW_SECS)
            .filter_map(|age| {
                let past = second.checked_sub(age)?;
                let value = self.bucket(past).load(Relaxed);
                (value >> COUNT_BITS == past & STAMP_MASK).then_some(value & COUNT_MASK)
            })
            .sum();
        counted as f64 / RATE_WINDOW_SECS as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records requests at the given seconds and checks the rate seen at `now`.
    fn check(recorded: &[(u64, u64)], now: u64, expected: f64) {
        let ring = RateRing::default();
        for &(second, count) in recorded {
            for _ in 0..count {
                ring.record(second);
            }
        }
        assert_eq!(
            ring.per_second(now),
            expected,
            "recorded {recorded:?}, now {now}"
        );
    }

    #[test]
    fn rate_over_the_last_complete_seconds() {
        check(&[], 0, 0.0);
        check(&[(0, 50)], 0, 0.0);
        check(&[(0, 50)], 1, 5.0);
        check(&[(100, 30), (105, 70)], 106, 10.0);
        check(&[(100, 30), (105, 70)], 110, 10.0);
        check(&[(100, 30), (105, 70)], 111, 7.0);
        check(&[(100, 30), (116, 20)], 117, 2.0);
        check(&[(100, 30)], 116 + 100, 0.0);
    }

    #[test]
    fn status_classes() {
        let counters = Counters::default();
        for status in [101, 200, 204, 301, 404, 418, 502, 503, 504] {
            counters.response(StatusCode::from_u16(status).expect("valid status"));
        }
        let stats = counters.snapshot(0);
        let classes = [
            stats.status_2xx,
            stats.status_3xx,
            stats.status_4xx,
            stats.status_5xx,
        ];
        assert_eq!(classes, [2, 1, 2, 3]);
    }
}
