//! The resolved application: every reference followed, every default filled in.
//!
//! This is what the engine runs; it is built only by validation, so holding one means it is sound.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::types::{
    AutoscalingPolicy, Cartridge, ComponentRef, DomainMapping, NetworkPartitionPlacement,
    TerminationBehaviour,
};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AppSpec {
    pub id: String,
    pub application_policy: String,
    /// The groups of network partitions the application moves through when it bursts; the first is where it starts.
    pub network_partition_groups: Vec<Vec<String>>,
    /// The application itself as the root group (alias = application id, one instance).
    pub root: GroupSpec,
    /// Extra host names by cluster alias, for the load balancer's Host routing.
    pub domain_mappings: BTreeMap<String, Vec<DomainMapping>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupSpec {
    pub alias: String,
    /// The cartridge group's name; empty for the application root.
    pub name: String,
    pub min_instances: u32,
    pub max_instances: u32,
    pub group_scaling_enabled: bool,
    pub termination: TerminationBehaviour,
    pub children: Vec<ComponentSpec>,
    /// Chains over direct children only, checked acyclic.
    pub startup_orders: Vec<Vec<ComponentRef>>,
    pub scaling_dependents: Vec<Vec<ComponentRef>>,
}

// Boxing the cluster would only make every match clumsier; application trees are small.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ComponentSpec {
    Group(GroupSpec),
    Cluster(ClusterSpec),
}

impl GroupSpec {
    /// Every cluster in the group, at any depth.
    pub fn clusters(&self) -> Vec<&ClusterSpec> {
        let mut out = Vec::new();
        for child in &self.children {
            match child {
                ComponentSpec::Cluster(cluster) => out.push(cluster),
                ComponentSpec::Group(group) => out.extend(group.clusters()),
            }
        }
        out
    }
}

impl ComponentSpec {
    pub fn reference(&self) -> ComponentRef {
        match self {
            ComponentSpec::Group(g) => ComponentRef::Group(g.alias.clone()),
            ComponentSpec::Cluster(c) => ComponentRef::Cartridge(c.alias.clone()),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterSpec {
    /// Unique within the whole application.
    pub alias: String,
    pub cartridge: Cartridge,
    pub min: u32,
    pub max: u32,
    pub autoscaling: AutoscalingPolicy,
    /// The deployment policy's placements, restricted to the application policy's network partitions.
    pub deployment_policy: String,
    pub placements: Vec<NetworkPartitionPlacement>,
}
