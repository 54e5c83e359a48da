//! The queueing model: a cluster's Active members as one fluid queue, one second at a time.
//!
//! Each member serves up to `capacity_rps` requests per second and a request takes
//! `service_time_s` once served, so a member works on up to `capacity_rps · service_time_s`
//! requests at once. In a second with demand λ and n Active members:
//!
//! - the requests wanting service are λ plus the backlog left from earlier seconds;
//! - `served = min(λ + backlog, n · capacity)`; the rest is the new backlog (nothing is dropped);
//! - requests in flight = `served · service_time` (Little's law for those being served) plus
//!   the backlog (queued requests are in flight too, as the load balancer counts them);
//! - utilisation = `served / (n · capacity)`, reported as each member's CPU percentage.
//!
//! The load balancer spreads requests evenly, so every Active member reports an equal share.
//! This is deterministic and smooth on purpose: the trace supplies the variation.

use crate::Model;

/// What one second looked like for the cluster.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Second {
    pub served: f64,
    /// Requests still waiting at the end of the second.
    pub backlog: f64,
    /// Requests in flight over the whole cluster.
    pub in_flight: f64,
    /// Served over capacity, 0 to 1; zero without members.
    pub utilisation: f64,
}

/// Runs one second of the queue.
pub fn serve(backlog: f64, demand_rps: f64, active: u32, model: &Model) -> Second {
    let capacity = f64::from(active) * model.capacity_rps;
    let wanting = demand_rps + backlog;
    let served = wanting.min(capacity);
    let backlog = wanting - served;
    Second {
        served,
        backlog,
        in_flight: served * model.service_time_s + backlog,
        utilisation: if capacity > 0.0 {
            served / capacity
        } else {
            0.0
        },
    }
}

/// Members that serve `demand_rps` at the given thresholds without a queue, within [min, max]:
/// where a replay starts, so it measures the policy rather than a cold start.
pub(crate) fn steady_members(
    in_flight_per_member: Option<f64>,
    cpu_percent: Option<f64>,
    demand_rps: f64,
    model: &Model,
    (min, max): (u32, u32),
) -> u32 {
    let by_in_flight = in_flight_per_member.map(|t| demand_rps * model.service_time_s / t);
    let by_cpu = cpu_percent.map(|t| demand_rps / model.capacity_rps * 100.0 / t);
    let needed = [by_in_flight, by_cpu]
        .into_iter()
        .flatten()
        .filter(|n| n.is_finite())
        .fold(0.0, f64::max)
        .ceil()
        .min(f64::from(u32::MAX)) as u32;
    needed.clamp(min, max.max(min))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(backlog: f64, demand: f64, active: u32, expected: (f64, f64, f64, f64)) {
        let model = Model {
            capacity_rps: 10.0,
            service_time_s: 0.5,
            start_delay_ms: 0,
        };
        let s = serve(backlog, demand, active, &model);
        assert_eq!(
            (s.served, s.backlog, s.in_flight, s.utilisation),
            expected,
            "backlog {backlog} demand {demand} members {active}"
        );
    }

    #[test]
    fn serves_up_to_capacity_and_queues_the_rest() {
        check(0.0, 15.0, 2, (15.0, 0.0, 7.5, 0.75));
        check(0.0, 30.0, 2, (20.0, 10.0, 20.0, 1.0));
        check(10.0, 15.0, 2, (20.0, 5.0, 15.0, 1.0));
        check(4.0, 0.0, 0, (0.0, 4.0, 4.0, 0.0));
    }
}
