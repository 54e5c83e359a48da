//! What the engine knows: the monitor tree of every deployed application.
//!
//! The state is plain data, serialisable, so the control plane can persist it after every step
//! and rebuild the engine from it after a crash.

use std::collections::BTreeMap;

use cairn_model::AppSpec;

use crate::autoscale::{Estimate, ScalerState};
use serde::{Deserialize, Serialize};

/// Milliseconds since the Unix epoch, from the injected clock.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Millis(pub u64);

impl Millis {
    pub fn saturating_sub(self, other: Millis) -> u64 {
        self.0.saturating_sub(other.0)
    }
}

/// Member lifecycle, with Stratos' names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MemberStatus {
    /// Decided; the runtime has been asked to start it.
    Created,
    /// Its process runs; not yet healthy.
    Starting,
    /// Healthy: counts as capacity and gets traffic.
    Active,
    /// Being stopped: gets no new traffic.
    ReadyToShutDown,
    Terminated,
}

impl MemberStatus {
    /// Whether the member still counts towards its cluster's size.
    pub fn is_live(self) -> bool {
        matches!(
            self,
            MemberStatus::Created | MemberStatus::Starting | MemberStatus::Active
        )
    }
}

/// Cluster, group and application lifecycle, with Stratos' names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Status {
    Created,
    Active,
    Inactive,
    Terminating,
    Terminated,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Member {
    pub id: String,
    pub status: MemberStatus,
    pub network_partition: String,
    pub partition: String,
    pub host: Option<String>,
    /// Port mapping name to `host:port`, once the runtime has assigned them.
    pub ports: BTreeMap<String, String>,
    pub pid: Option<u32>,
    pub created_at: Millis,
    pub active_at: Option<Millis>,
    /// When the member entered its current status.
    pub since: Millis,
    /// The latest load reported for it; reported anew every second, so not stored.
    #[serde(skip)]
    pub load: MemberLoad,
    /// A draining member is stopped at this time, or earlier once it has nothing in flight.
    #[serde(default)]
    pub stop_at: Option<Millis>,
    /// It ended without being asked to.
    #[serde(default)]
    pub faulted: bool,
    /// SIGKILL ended it: something outside killed it, its program did not fail.
    #[serde(default)]
    pub killed: bool,
}

/// The latest value of each load figure and when it was taken; `None` until one is reported.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct MemberLoad {
    pub in_flight: Option<(Millis, f64)>,
    pub cpu_percent: Option<(Millis, f64)>,
    pub memory_percent: Option<(Millis, f64)>,
}

/// Whether a component of a group instance should be running.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Phase {
    /// Waiting for what it depends on; nothing runs.
    Pending,
    /// Kept at its desired size.
    Running,
    /// Being torn down; returns to Pending once nothing of it runs.
    Stopping,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterState {
    pub alias: String,
    pub phase: Phase,
    pub status: Status,
    pub desired: u32,
    pub members: Vec<Member>,
    #[serde(default)]
    pub scaler: ScalerState,
    /// What the autoscaler last saw, for the runtime view.
    #[serde(skip)]
    pub estimates: Vec<Estimate>,
    #[serde(skip)]
    pub sampled_at: Option<Millis>,
    /// Members its own load asks for, before clamping to [min, max]; derived from load, not stored.
    #[serde(skip)]
    pub wanted: Option<u32>,
    /// Its own need over its min, as reported to clusters it scales together with.
    #[serde(skip)]
    pub factor: f64,
    /// The largest factor among the clusters it scales together with, set by its group.
    #[serde(skip)]
    pub dependency_factor: Option<f64>,
    /// Rounds of failed starts in a row: members that failed by themselves before they became
    /// Active or soon after.
    #[serde(default)]
    pub failed_starts: u32,
    /// No new member before this time: failing starts back off.
    #[serde(default)]
    pub retry_at: Option<Millis>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupState {
    pub alias: String,
    pub phase: Phase,
    pub status: Status,
    pub instances: Vec<GroupInstance>,
    /// Since when its newest instance has had no work worth keeping it for; known again within a
    /// window after a restart, so not stored.
    #[serde(skip)]
    pub calm_since: Option<Millis>,
}

// Trees are small; boxing every cluster would cost more than the space it saves.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ChildState {
    Group(GroupState),
    Cluster(ClusterState),
}

impl ChildState {
    pub fn status(&self) -> Status {
        match self {
            ChildState::Group(g) => g.status,
            ChildState::Cluster(c) => c.status,
        }
    }

    pub fn phase(&self) -> Phase {
        match self {
            ChildState::Group(g) => g.phase,
            ChildState::Cluster(c) => c.phase,
        }
    }
}

/// One instance of a group; its children line up index by index with the group spec's children.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupInstance {
    pub id: String,
    pub network_partition: String,
    pub status: Status,
    pub children: Vec<ChildState>,
    /// Set by terminate-all: every child stops, then the instance starts again from scratch.
    pub restarting: bool,
    /// Being removed by group scaling or the end of a burst; gone once torn down.
    #[serde(default)]
    pub retiring: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AppState {
    pub spec: AppSpec,
    pub status: Status,
    pub undeploying: bool,
    pub deployed_at: Millis,
    /// The application itself: one root instance per network partition in use.
    pub root: GroupState,
    /// How many network partition groups past the first the application has burst into.
    #[serde(default)]
    pub burst_level: usize,
    /// The last number given to an instance of each group, by alias, so instance ids are
    /// unique in the application: across parent instances, network partitions and time.
    #[serde(default)]
    pub group_instance_numbers: BTreeMap<String, u32>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct State {
    pub apps: BTreeMap<String, AppState>,
    /// Numbers members across all applications; never reused, so member ids are unique forever.
    pub next_member: u64,
}
