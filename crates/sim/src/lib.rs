//! Offline capacity planning: replays a load trace (demand, and optionally memory and CPU per
//! member) through Cairn's own engine, and through a reactive baseline with the Kubernetes HPA's
//! rules, on one simulated clock and one queueing model of members, and reports what each would
//! have cost and where demand went unserved.
//!
//! The Cairn side has no decision code of its own: every size change comes out of
//! `cairn_engine::Engine` as an `Event` with a `Decision`, fed the same observations, through the
//! same calls, as the live control plane feeds it. Time is a simulated clock: nothing here
//! sleeps, reads the wall clock, touches files or the network; callers hand in text and get
//! figures, series and SVG text back.

mod blueprint;
mod cairn;
mod hpa;
mod queue;
mod svg;
mod trace;

use serde::Serialize;

pub use blueprint::{app_from_blueprint, scaled_cluster};
pub use cairn::{CairnRun, Input, simulate_cairn};
pub use hpa::{HpaRules, HpaTargets, MetricSums, hpa_recommendation, simulate_hpa};
pub use queue::{Second, serve};
pub use svg::chart;
pub use trace::{Demand, Load, Point, Trace, TraceError, Window, parse_trace};

/// How members behave in the simulation; the same for every policy compared.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Model {
    /// Requests per second one Active member serves.
    pub capacity_rps: f64,
    /// Seconds one request takes once a member serves it.
    pub service_time_s: f64,
    /// From the request to start a member until it is healthy and takes traffic.
    pub start_delay_ms: u64,
}

impl Default for Model {
    fn default() -> Self {
        Model {
            capacity_rps: 10.0,
            service_time_s: 1.0,
            start_delay_ms: 10_000,
        }
    }
}

impl Model {
    pub fn check(&self) -> Result<(), SimError> {
        if !(self.capacity_rps.is_finite() && self.capacity_rps > 0.0) {
            return Err(SimError::Model(format!(
                "capacity must be a positive number of requests per second, not {}",
                self.capacity_rps
            )));
        }
        if !(self.service_time_s.is_finite() && self.service_time_s > 0.0) {
            return Err(SimError::Model(format!(
                "service time must be a positive number of seconds, not {}",
                self.service_time_s
            )));
        }
        Ok(())
    }
}

/// One simulated second of one policy.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Sample {
    /// Seconds since the start of the trace.
    pub t: u64,
    /// Requests per second asked for.
    pub demand: f64,
    /// Requests per second the Active members can serve.
    pub capacity: f64,
    /// Members that exist, whether starting, Active or draining: what is paid for.
    pub members: u32,
}

/// A change of the scaled cluster's desired size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct SizeChange {
    /// Seconds since the start of the trace.
    pub t: u64,
    pub from: u32,
    pub to: u32,
}

/// What a run cost and how well it served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct Totals {
    /// Seconds in which demand exceeded the Active members' capacity.
    pub demand_exceeded_s: u64,
    /// Sum over seconds of the members that existed in that second.
    pub member_seconds: u64,
    /// Changes of the desired size.
    pub scaling_actions: u32,
    /// Members asked to start: the churn behind the actions.
    pub members_started: u32,
    pub peak_members: u32,
    pub simulated_s: u64,
}

/// One policy's replay of a trace.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Run {
    pub policy: String,
    pub totals: Totals,
    pub changes: Vec<SizeChange>,
    pub series: Vec<Sample>,
}

impl Run {
    fn new(policy: &str, seconds: usize) -> Run {
        Run {
            policy: policy.to_string(),
            totals: Totals::default(),
            changes: Vec::new(),
            series: Vec::with_capacity(seconds),
        }
    }

    /// Counts one simulated second.
    fn record(&mut self, sample: Sample) {
        let totals = &mut self.totals;
        totals.simulated_s += 1;
        if sample.demand > sample.capacity {
            totals.demand_exceeded_s += 1;
        }
        totals.member_seconds += u64::from(sample.members);
        totals.peak_members = totals.peak_members.max(sample.members);
        self.series.push(sample);
    }

    fn change(&mut self, t: u64, from: u32, to: u32) {
        self.totals.scaling_actions += 1;
        self.changes.push(SizeChange { t, from, to });
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SimError {
    #[error("{0}")]
    Trace(#[from] TraceError),
    #[error("{0}")]
    Blueprint(String),
    #[error("invalid model: {0}")]
    Model(String),
    #[error("invalid window: {0}")]
    Window(String),
    #[error("application has no cluster {0}")]
    NoCluster(String),
    #[error("{0}")]
    AmbiguousCluster(String),
    #[error("cluster {alias} has no Active member {waited_s} s after deployment")]
    NeverActive { alias: String, waited_s: u64 },
    #[error("the engine refused the application: {0}")]
    Engine(#[from] cairn_engine::EngineError),
}
