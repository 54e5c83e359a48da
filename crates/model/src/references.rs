//! What artifacts name of each other where Stratos holds them to it: an artifact is registered
//! only when what it names is, and removed only when nothing names it.
//!
//! Those references are the network partitions (and their partitions) of deployment and
//! application policies, the cartridges of cartridge groups, and the cartridges, cartridge
//! groups (with the cartridges and nested groups taken from their definitions) and autoscaling
//! policies of applications. An application's deployment policies are left to
//! [`crate::resolve`], as Stratos leaves them to its deployment.

use std::collections::BTreeSet;

use crate::catalog::Catalog;
use crate::diagnostic::{Diagnostic, Location};
use crate::types::*;

/// What a reference names.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Target {
    Artifact(ArtifactKind, String),
    Partition {
        network_partition: String,
        partition: String,
    },
    /// A cartridge, or a nested group, of a registered group's definition: `groups` is the
    /// registered group's name, then the nested groups' names down to the one meant.
    Member {
        groups: Vec<String>,
        member: Member,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Member {
    Cartridge(String),
    Group(String),
}

/// One artifact naming another, or a partition of one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Reference {
    pub from: (ArtifactKind, String),
    /// Where in `from`, as resolution writes paths (`$.network_partitions[0].id`).
    pub path: String,
    pub target: Target,
}

impl Reference {
    /// The referring artifact as diagnostics name it (`deployment policy dp`).
    pub fn source(&self) -> String {
        format!("{} {}", self.from.0.name(), self.from.1)
    }
}

impl Target {
    fn is_in(&self, catalog: &Catalog) -> bool {
        match self {
            Target::Artifact(kind, id) => catalog.contains(*kind, id),
            Target::Partition {
                network_partition,
                partition,
            } => catalog
                .network_partitions
                .get(network_partition)
                .is_some_and(|n| n.partitions.iter().any(|p| p.id == *partition)),
            Target::Member { groups, member } => {
                definition(catalog, groups).is_some_and(|g| match member {
                    Member::Cartridge(kind) => g.cartridges.contains(kind),
                    Member::Group(name) => g.groups.iter().any(|n| n.name == *name),
                })
            }
        }
    }

    fn describe(&self) -> String {
        match self {
            Target::Artifact(ArtifactKind::Cartridge, id) => format!("cartridge type `{id}`"),
            Target::Artifact(kind, id) => format!("{} `{id}`", kind.name()),
            Target::Partition {
                network_partition,
                partition,
            } => format!("partition `{partition}` of network partition `{network_partition}`"),
            Target::Member { groups, member } => {
                let group = groups.last().map_or("", String::as_str);
                match member {
                    Member::Cartridge(kind) => {
                        format!("cartridge `{kind}` as a member of cartridge group `{group}`")
                    }
                    Member::Group(name) => {
                        format!("group `{name}` as a nested group of cartridge group `{group}`")
                    }
                }
            }
        }
    }
}

/// The definition of a registered group, or of a group nested in it, by its names.
fn definition<'c>(catalog: &'c Catalog, groups: &[String]) -> Option<&'c CartridgeGroup> {
    let (top, nested) = groups.split_first()?;
    let mut group = catalog.cartridge_groups.get(top)?;
    for name in nested {
        group = group.groups.iter().find(|g| g.name == *name)?;
    }
    Some(group)
}

/// What each artifact of `bundle` names. A group that one of the bundle's applications
/// subscribes to is left to that application, which names the same cartridges where they are
/// written (a blueprint makes its groups from its application's components).
pub(crate) fn of_bundle(bundle: &Bundle) -> Vec<Reference> {
    let subscribed: BTreeSet<&str> = bundle
        .applications
        .iter()
        .flat_map(|a| a.components.groups.iter().map(|g| g.name.as_str()))
        .collect();
    let groups = bundle
        .cartridge_groups
        .iter()
        .filter(|g| !subscribed.contains(g.name.as_str()));
    collect(
        bundle.deployment_policies.iter(),
        bundle.application_policies.iter(),
        groups,
        bundle.applications.iter(),
    )
}

/// What each artifact of `catalog` names.
pub(crate) fn of_catalog(catalog: &Catalog) -> Vec<Reference> {
    let mut out = collect(
        catalog.deployment_policies.values(),
        catalog.application_policies.values(),
        catalog.cartridge_groups.values(),
        catalog.applications.values(),
    );
    out.extend(
        catalog
            .network_partitions
            .values()
            .flat_map(of_network_partition),
    );
    out
}

/// The kubernetes clusters a network partition's partitions name (property `cluster`). They
/// keep a cluster from being deleted, but are not checked when a network partition is added,
/// as no member runs on kubernetes yet.
fn of_network_partition(network: &NetworkPartition) -> Vec<Reference> {
    let from = (ArtifactKind::NetworkPartition, network.id.clone());
    let partitions = network.partitions.iter().enumerate();
    partitions
        .filter_map(|(i, partition)| {
            Some(Reference {
                from: from.clone(),
                path: format!("$.partitions[{i}].properties.cluster"),
                target: Target::Artifact(
                    ArtifactKind::KubernetesCluster,
                    partition.properties.get("cluster")?.clone(),
                ),
            })
        })
        .collect()
}

fn collect<'a>(
    deployment_policies: impl Iterator<Item = &'a DeploymentPolicy>,
    application_policies: impl Iterator<Item = &'a ApplicationPolicy>,
    groups: impl Iterator<Item = &'a CartridgeGroup>,
    applications: impl Iterator<Item = &'a Application>,
) -> Vec<Reference> {
    let mut out = Vec::new();
    deployment_policies.for_each(|p| out.extend(of_deployment_policy(p)));
    application_policies.for_each(|p| out.extend(of_application_policy(p)));
    for group in groups {
        let from = (ArtifactKind::CartridgeGroup, group.name.clone());
        group_cartridges(&from, group, "$", &mut out);
    }
    for application in applications {
        let from = (ArtifactKind::Application, application.id.clone());
        let components = &application.components;
        for (k, group) in components.groups.iter().enumerate() {
            out.push(Reference {
                from: from.clone(),
                path: format!("$.components.groups[{k}].name"),
                target: Target::Artifact(ArtifactKind::CartridgeGroup, group.name.clone()),
            });
        }
        let (groups, cartridges) = (&components.groups, &components.cartridges);
        subscriptions(&from, &[], groups, cartridges, "$.components", &mut out);
    }
    out
}

pub(crate) fn of_deployment_policy(policy: &DeploymentPolicy) -> Vec<Reference> {
    let from = (ArtifactKind::DeploymentPolicy, policy.id.clone());
    let mut out = Vec::new();
    for (i, placement) in policy.network_partitions.iter().enumerate() {
        out.push(Reference {
            from: from.clone(),
            path: format!("$.network_partitions[{i}].id"),
            target: Target::Artifact(ArtifactKind::NetworkPartition, placement.id.clone()),
        });
        for (j, partition) in placement.partitions.iter().enumerate() {
            out.push(Reference {
                from: from.clone(),
                path: format!("$.network_partitions[{i}].partitions[{j}].id"),
                target: Target::Partition {
                    network_partition: placement.id.clone(),
                    partition: partition.id.clone(),
                },
            });
        }
    }
    out
}

pub(crate) fn of_application_policy(policy: &ApplicationPolicy) -> Vec<Reference> {
    let from = (ArtifactKind::ApplicationPolicy, policy.id.clone());
    let network_partitions = policy.network_partitions.iter().enumerate();
    network_partitions
        .map(|(i, id)| Reference {
            from: from.clone(),
            path: format!("$.network_partitions[{i}]"),
            target: Target::Artifact(ArtifactKind::NetworkPartition, id.clone()),
        })
        .collect()
}

fn group_cartridges(
    from: &(ArtifactKind, String),
    group: &CartridgeGroup,
    path: &str,
    out: &mut Vec<Reference>,
) {
    for (i, kind) in group.cartridges.iter().enumerate() {
        out.push(Reference {
            from: from.clone(),
            path: format!("{path}.cartridges[{i}]"),
            target: Target::Artifact(ArtifactKind::Cartridge, kind.clone()),
        });
    }
    for (k, nested) in group.groups.iter().enumerate() {
        group_cartridges(from, nested, &format!("{path}.groups[{k}]"), out);
    }
}

/// The cartridge types, group members and autoscaling policies of subscriptions at every depth,
/// inside the group whose definition `within` names (none at the top).
fn subscriptions(
    from: &(ArtifactKind, String),
    within: &[String],
    groups: &[GroupSubscription],
    cartridges: &[CartridgeSubscription],
    path: &str,
    out: &mut Vec<Reference>,
) {
    let member = |member: Member, path: String| Reference {
        from: from.clone(),
        path,
        target: Target::Member {
            groups: within.to_vec(),
            member,
        },
    };
    for (k, group) in groups.iter().enumerate() {
        let path = format!("{path}.groups[{k}]");
        if !within.is_empty() {
            out.push(member(
                Member::Group(group.name.clone()),
                format!("{path}.name"),
            ));
        }
        let inner = [within, std::slice::from_ref(&group.name)].concat();
        subscriptions(from, &inner, &group.groups, &group.cartridges, &path, out);
    }
    for (j, cartridge) in cartridges.iter().enumerate() {
        let path = format!("{path}.cartridges[{j}]");
        out.push(Reference {
            from: from.clone(),
            path: format!("{path}.cartridge"),
            target: Target::Artifact(ArtifactKind::Cartridge, cartridge.cartridge.clone()),
        });
        if !within.is_empty() {
            let kind = cartridge.cartridge.clone();
            out.push(member(Member::Cartridge(kind), format!("{path}.cartridge")));
        }
        if let Some(id) = &cartridge.autoscaling_policy {
            out.push(Reference {
                from: from.clone(),
                path: format!("{path}.autoscaling_policy"),
                target: Target::Artifact(ArtifactKind::AutoscalingPolicy, id.clone()),
            });
        }
    }
}

/// The references `catalog` cannot follow, as problems of the artifacts that make them; a part
/// of a network partition or group that is missing itself goes unmentioned.
pub(crate) fn unknown(catalog: &Catalog, references: Vec<Reference>) -> Vec<Diagnostic> {
    references
        .into_iter()
        .filter(|r| !r.target.is_in(catalog))
        .filter_map(|r| {
            let message = match &r.target {
                Target::Partition {
                    network_partition,
                    partition,
                } => {
                    let network = catalog.network_partitions.get(network_partition)?;
                    format!(
                        "network partition `{}` has no partition `{partition}`",
                        network.id
                    )
                }
                Target::Member { groups, member } => {
                    let group = &definition(catalog, groups)?.name;
                    match member {
                        Member::Cartridge(kind) => format!(
                            "cartridge `{kind}` is not a member of cartridge group `{group}`"
                        ),
                        Member::Group(name) => format!(
                            "group `{name}` is not a nested group of cartridge group `{group}`"
                        ),
                    }
                }
                target => format!("unknown {}", target.describe()),
            };
            Some(Diagnostic {
                location: Location {
                    source: r.source(),
                    line: None,
                    path: r.path,
                },
                message,
            })
        })
        .collect()
}

/// The artifacts of `catalog` that name the artifact, each once, in the catalog's order.
pub(crate) fn referrers(
    catalog: &Catalog,
    kind: ArtifactKind,
    id: &str,
) -> Vec<(ArtifactKind, String)> {
    let target = Target::Artifact(kind, id.to_string());
    let mut out: Vec<(ArtifactKind, String)> = Vec::new();
    for reference in of_catalog(catalog) {
        if reference.target == target && !out.contains(&reference.from) {
            out.push(reference.from);
        }
    }
    out
}

/// What `next` would leave unfollowable that `before` could follow: each as the referring
/// artifact and what it names (``deployment policy dp naming partition `p1` of network
/// partition `np1` ``).
pub(crate) fn broken(before: &Catalog, next: &Catalog) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for reference in of_catalog(next) {
        if reference.target.is_in(before) && !reference.target.is_in(next) {
            let line = format!(
                "{} naming {}",
                reference.source(),
                reference.target.describe()
            );
            if !out.contains(&line) {
                out.push(line);
            }
        }
    }
    out
}
