//! Read-only projections of the state: the runtime view and the load balancer's routes.

use std::collections::BTreeMap;

use cairn_model::{ClusterSpec, ComponentSpec, GroupSpec, PortMapping};
use serde::{Deserialize, Serialize};

use crate::autoscale::Estimate;
use crate::state::{
    AppState, ChildState, GroupInstance, GroupState, Member, MemberStatus, Millis, Status,
};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AppView {
    pub id: String,
    pub status: Status,
    pub groups: Vec<GroupView>,
    pub clusters: Vec<ClusterView>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupView {
    pub alias: String,
    pub status: Status,
    pub instances: Vec<GroupInstanceView>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupInstanceView {
    pub id: String,
    pub status: Status,
    pub network_partition: String,
    pub groups: Vec<GroupView>,
    pub clusters: Vec<ClusterView>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterView {
    pub alias: String,
    pub cartridge: String,
    pub status: Status,
    pub min: u32,
    pub max: u32,
    /// The size the engine keeps it at, summed over group instances.
    pub desired: u32,
    /// False while a size set by hand holds.
    pub autoscaling: bool,
    /// What the autoscaler last saw per factor: averages, predictions, thresholds, members needed.
    pub observations: Vec<Estimate>,
    pub members: Vec<MemberView>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemberView {
    pub id: String,
    pub status: MemberStatus,
    pub network_partition: String,
    pub partition: String,
    pub host: Option<String>,
    pub ports: BTreeMap<String, String>,
    /// RFC 3339 with milliseconds, UTC.
    pub created_at: String,
    pub active_at: Option<String>,
}

/// One cluster's Active members and where the load balancer should expose them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterRoute {
    pub application: String,
    pub alias: String,
    /// Each network partition has its own entry points: one route per partition in use.
    pub network_partition: String,
    /// Host names the cluster answers to on a shared proxy port.
    pub hosts: Vec<String>,
    /// Domain mappings' context paths, by domain name: requests for the domain get the
    /// path in front of theirs.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub context_paths: BTreeMap<String, String>,
    pub port_mappings: Vec<PortMapping>,
    /// Active members: id and port mapping name to `host:port`.
    pub members: Vec<(String, BTreeMap<String, String>)>,
    /// Members draining before they stop: no new requests, their own finish.
    pub draining: Vec<(String, BTreeMap<String, String>)>,
    /// The cartridge's `response_timeout_ms` property: how long a member may take to answer.
    pub response_timeout_ms: Option<u64>,
}

pub(crate) fn app_view(app: &AppState) -> AppView {
    let (groups, clusters) = children_view(&app.spec.root, &app.root.instances);
    AppView {
        id: app.spec.id.clone(),
        status: app.status,
        groups,
        clusters,
    }
}

/// Views of a group's children, merged over the given instances of it.
fn children_view(
    spec: &GroupSpec,
    instances: &[GroupInstance],
) -> (Vec<GroupView>, Vec<ClusterView>) {
    let mut groups = Vec::new();
    let mut clusters = Vec::new();
    for (i, child) in spec.children.iter().enumerate() {
        let states = instances.iter().map(|inst| &inst.children[i]);
        match child {
            ComponentSpec::Group(gs) => {
                let mut status = None;
                let mut views = Vec::new();
                for state in states {
                    if let ChildState::Group(g) = state {
                        status = Some(worst(status, g.status));
                        views.extend(g.instances.iter().map(|gi| instance_view(gs, gi)));
                    }
                }
                groups.push(GroupView {
                    alias: gs.alias.clone(),
                    status: status.unwrap_or(Status::Created),
                    instances: views,
                });
            }
            ComponentSpec::Cluster(cs) => {
                let mut status = None;
                let mut members = Vec::new();
                let mut desired = 0;
                let mut autoscaling = true;
                let mut observations = Vec::new();
                for state in states {
                    if let ChildState::Cluster(c) = state {
                        status = Some(worst(status, c.status));
                        members.extend(c.members.iter().map(member_view));
                        desired += c.desired;
                        autoscaling &= !c.scaler.manual;
                        if observations.is_empty() {
                            observations = c.estimates.clone();
                        }
                    }
                }
                clusters.push(ClusterView {
                    alias: cs.alias.clone(),
                    cartridge: cs.cartridge.kind.clone(),
                    status: status.unwrap_or(Status::Created),
                    min: cs.min,
                    max: cs.max,
                    desired,
                    autoscaling,
                    observations,
                    members,
                });
            }
        }
    }
    (groups, clusters)
}

fn instance_view(spec: &GroupSpec, inst: &GroupInstance) -> GroupInstanceView {
    let (groups, clusters) = children_view(spec, std::slice::from_ref(inst));
    GroupInstanceView {
        id: inst.id.clone(),
        status: inst.status,
        network_partition: inst.network_partition.clone(),
        groups,
        clusters,
    }
}

/// Of two statuses, the one an operator should see for the whole.
fn worst(a: Option<Status>, b: Status) -> Status {
    let rank = |s: Status| match s {
        Status::Active => 0,
        Status::Terminated => 1,
        Status::Created => 2,
        Status::Terminating => 3,
        Status::Inactive => 4,
    };
    match a {
        Some(a) if rank(a) >= rank(b) => a,
        _ => b,
    }
}

fn member_view(m: &Member) -> MemberView {
    MemberView {
        id: m.id.clone(),
        status: m.status,
        network_partition: m.network_partition.clone(),
        partition: m.partition.clone(),
        host: m.host.clone(),
        ports: m.ports.clone(),
        created_at: rfc3339(m.created_at),
        active_at: m.active_at.map(rfc3339),
    }
}

pub(crate) fn routes(app: &AppState) -> Vec<ClusterRoute> {
    let mut by_partition: BTreeMap<&str, Vec<GroupInstance>> = BTreeMap::new();
    for inst in &app.root.instances {
        by_partition
            .entry(&inst.network_partition)
            .or_default()
            .push(inst.clone());
    }
    let mut out = Vec::new();
    for (partition, instances) in by_partition {
        collect_routes(app, partition, &app.spec.root, &instances, &mut out);
    }
    out
}

fn collect_routes(
    app: &AppState,
    partition: &str,
    spec: &GroupSpec,
    instances: &[GroupInstance],
    out: &mut Vec<ClusterRoute>,
) {
    for (i, child) in spec.children.iter().enumerate() {
        match child {
            ComponentSpec::Group(gs) => {
                for inst in instances {
                    if let ChildState::Group(g) = &inst.children[i] {
                        collect_routes(app, partition, gs, &g.instances, out);
                    }
                }
            }
            ComponentSpec::Cluster(cs) => {
                if !cs
                    .cartridge
                    .port_mappings
                    .iter()
                    .any(|p| p.proxy_port.is_some())
                {
                    continue;
                }
                let clusters: Vec<&crate::state::ClusterState> = instances
                    .iter()
                    .filter_map(|inst| match &inst.children[i] {
                        ChildState::Cluster(c) => Some(c),
                        ChildState::Group(_) => None,
                    })
                    .collect();
                let pick =
                    |keep: &dyn Fn(&Member) -> bool| -> Vec<(String, BTreeMap<String, String>)> {
                        clusters
                            .iter()
                            .flat_map(|c| c.members.iter())
                            .filter(|m| keep(m))
                            .map(|m| (m.id.clone(), m.ports.clone()))
                            .collect()
                    };
                let members = pick(&|m| m.status == MemberStatus::Active);
                let draining =
                    pick(&|m| m.status == MemberStatus::ReadyToShutDown && m.stop_at.is_some());
                let mut hosts = Vec::new();
                if let Some(host) = &cs.cartridge.host {
                    hosts.push(format!("{}.{}.{}", app.spec.id, cs.alias, host));
                }
                let mappings = app
                    .spec
                    .domain_mappings
                    .get(&cs.alias)
                    .map_or(&[][..], Vec::as_slice);
                hosts.extend(mappings.iter().map(|d| d.domain_name.clone()));
                let context_paths = mappings
                    .iter()
                    .filter_map(|d| Some((d.domain_name.clone(), d.context_path.clone()?)))
                    .collect();
                out.push(ClusterRoute {
                    application: app.spec.id.clone(),
                    alias: cs.alias.clone(),
                    network_partition: partition.to_string(),
                    hosts,
                    context_paths,
                    port_mappings: cs.cartridge.port_mappings.clone(),
                    members,
                    draining,
                    response_timeout_ms: cs.cartridge.response_timeout_ms(),
                });
            }
        }
    }
}

pub(crate) fn visit_members<'a>(
    spec: &'a GroupSpec,
    group: &'a GroupState,
    f: &mut impl FnMut(&'a ClusterSpec, &'a Member),
) {
    for inst in &group.instances {
        for (child_spec, child) in spec.children.iter().zip(&inst.children) {
            match (child_spec, child) {
                (ComponentSpec::Cluster(cs), ChildState::Cluster(c)) => {
                    c.members.iter().for_each(|m| f(cs, m))
                }
                (ComponentSpec::Group(gs), ChildState::Group(g)) => visit_members(gs, g, f),
                _ => {}
            }
        }
    }
}

/// Formats a time as RFC 3339 in UTC with milliseconds, e.g. `2026-11-22T00:18:06.123Z`.
pub fn rfc3339(at: Millis) -> String {
    let secs = at.0 / 1000;
    let ms = at.0 % 1000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (h, m, s) = (rem / 3600, rem % 3600 / 60, rem % 60);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}.{ms:03}Z")
}
