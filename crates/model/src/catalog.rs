//! Registered artifacts by id, and resolution of an application against them.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::diagnostic::{Diagnostic, Diagnostics, Location};
use crate::references;
use crate::spec::{AppSpec, ClusterSpec, ComponentSpec, GroupSpec};
use crate::types::*;
use crate::validate::{cycle_message, startup_cycle};

/// Every registered artifact, by id (cartridges by type, groups by name).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Catalog {
    pub cartridges: BTreeMap<String, Cartridge>,
    pub cartridge_groups: BTreeMap<String, CartridgeGroup>,
    pub applications: BTreeMap<String, Application>,
    pub autoscaling_policies: BTreeMap<String, AutoscalingPolicy>,
    pub deployment_policies: BTreeMap<String, DeploymentPolicy>,
    pub application_policies: BTreeMap<String, ApplicationPolicy>,
    pub network_partitions: BTreeMap<String, NetworkPartition>,
    pub kubernetes_clusters: BTreeMap<String, KubernetesCluster>,
    /// By application id.
    pub domain_mappings: BTreeMap<String, Vec<DomainMapping>>,
    /// By application id: what Stratos' application signup registered.
    pub artifact_repositories: BTreeMap<String, Vec<ArtifactRepository>>,
}

impl Catalog {
    /// Adds or replaces every artifact of the bundle. A bundle's artifact repositories name no
    /// application, so they are left out: use [`Catalog::add_signup`].
    pub fn add_bundle(&mut self, bundle: Bundle) {
        fn put<T>(map: &mut BTreeMap<String, T>, items: Vec<T>, id: impl Fn(&T) -> String) {
            for item in items {
                map.insert(id(&item), item);
            }
        }
        put(&mut self.cartridges, bundle.cartridges, |x| x.kind.clone());
        put(&mut self.cartridge_groups, bundle.cartridge_groups, |x| {
            x.name.clone()
        });
        put(&mut self.applications, bundle.applications, |x| {
            x.id.clone()
        });
        put(
            &mut self.autoscaling_policies,
            bundle.autoscaling_policies,
            |x| x.id.clone(),
        );
        put(
            &mut self.deployment_policies,
            bundle.deployment_policies,
            |x| x.id.clone(),
        );
        put(
            &mut self.application_policies,
            bundle.application_policies,
            |x| x.id.clone(),
        );
        put(
            &mut self.network_partitions,
            bundle.network_partitions,
            |x| x.id.clone(),
        );
        put(
            &mut self.kubernetes_clusters,
            bundle.kubernetes_clusters,
            |x| x.id.clone(),
        );
        self.domain_mappings.extend(bundle.domain_mappings);
    }

    pub fn add_signup(&mut self, application_id: &str, repositories: Vec<ArtifactRepository>) {
        self.artifact_repositories
            .insert(application_id.to_string(), repositories);
    }

    pub fn cartridge(&self, kind: &str) -> Option<&Cartridge> {
        self.cartridges.get(kind)
    }

    pub fn cartridge_group(&self, name: &str) -> Option<&CartridgeGroup> {
        self.cartridge_groups.get(name)
    }

    pub fn application(&self, id: &str) -> Option<&Application> {
        self.applications.get(id)
    }

    pub fn autoscaling_policy(&self, id: &str) -> Option<&AutoscalingPolicy> {
        self.autoscaling_policies.get(id)
    }

    pub fn deployment_policy(&self, id: &str) -> Option<&DeploymentPolicy> {
        self.deployment_policies.get(id)
    }

    pub fn application_policy(&self, id: &str) -> Option<&ApplicationPolicy> {
        self.application_policies.get(id)
    }

    pub fn network_partition(&self, id: &str) -> Option<&NetworkPartition> {
        self.network_partitions.get(id)
    }

    pub fn kubernetes_cluster(&self, id: &str) -> Option<&KubernetesCluster> {
        self.kubernetes_clusters.get(id)
    }

    /// Whether an artifact of this kind and id is registered (domain mappings and signups by application id).
    pub fn contains(&self, kind: ArtifactKind, id: &str) -> bool {
        match kind {
            ArtifactKind::Cartridge => self.cartridges.contains_key(id),
            ArtifactKind::CartridgeGroup => self.cartridge_groups.contains_key(id),
            ArtifactKind::Application => self.applications.contains_key(id),
            ArtifactKind::AutoscalingPolicy => self.autoscaling_policies.contains_key(id),
            ArtifactKind::DeploymentPolicy => self.deployment_policies.contains_key(id),
            ArtifactKind::ApplicationPolicy => self.application_policies.contains_key(id),
            ArtifactKind::NetworkPartition => self.network_partitions.contains_key(id),
            ArtifactKind::KubernetesCluster => self.kubernetes_clusters.contains_key(id),
            ArtifactKind::DomainMappings => self.domain_mappings.contains_key(id),
            ArtifactKind::ApplicationSignup => self.artifact_repositories.contains_key(id),
        }
    }

    /// Whether the artifact of this kind and id is the same here and in `other`, both
    /// registered as the same or both missing.
    pub fn same_artifact(&self, other: &Catalog, kind: ArtifactKind, id: &str) -> bool {
        fn same<T: PartialEq>(a: &BTreeMap<String, T>, b: &BTreeMap<String, T>, id: &str) -> bool {
            a.get(id) == b.get(id)
        }
        match kind {
            ArtifactKind::Cartridge => same(&self.cartridges, &other.cartridges, id),
            ArtifactKind::CartridgeGroup => {
                same(&self.cartridge_groups, &other.cartridge_groups, id)
            }
            ArtifactKind::Application => same(&self.applications, &other.applications, id),
            ArtifactKind::AutoscalingPolicy => {
                same(&self.autoscaling_policies, &other.autoscaling_policies, id)
            }
            ArtifactKind::DeploymentPolicy => {
                same(&self.deployment_policies, &other.deployment_policies, id)
            }
            ArtifactKind::ApplicationPolicy => {
                same(&self.application_policies, &other.application_policies, id)
            }
            ArtifactKind::NetworkPartition => {
                same(&self.network_partitions, &other.network_partitions, id)
            }
            ArtifactKind::KubernetesCluster => {
                same(&self.kubernetes_clusters, &other.kubernetes_clusters, id)
            }
            ArtifactKind::DomainMappings => same(&self.domain_mappings, &other.domain_mappings, id),
            ArtifactKind::ApplicationSignup => same(
                &self.artifact_repositories,
                &other.artifact_repositories,
                id,
            ),
        }
    }

    /// Removes one artifact; says whether it was there. Check [`Catalog::referrers`] first.
    pub fn remove(&mut self, kind: ArtifactKind, id: &str) -> bool {
        match kind {
            ArtifactKind::Cartridge => self.cartridges.remove(id).is_some(),
            ArtifactKind::CartridgeGroup => self.cartridge_groups.remove(id).is_some(),
            ArtifactKind::Application => {
                // Mappings belong to the application: a new one of the same id starts without them.
                self.domain_mappings.remove(id);
                self.applications.remove(id).is_some()
            }
            ArtifactKind::AutoscalingPolicy => self.autoscaling_policies.remove(id).is_some(),
            ArtifactKind::DeploymentPolicy => self.deployment_policies.remove(id).is_some(),
            ArtifactKind::ApplicationPolicy => self.application_policies.remove(id).is_some(),
            ArtifactKind::NetworkPartition => self.network_partitions.remove(id).is_some(),
            ArtifactKind::KubernetesCluster => self.kubernetes_clusters.remove(id).is_some(),
            ArtifactKind::DomainMappings => self.domain_mappings.remove(id).is_some(),
            ArtifactKind::ApplicationSignup => self.artifact_repositories.remove(id).is_some(),
        }
    }

    /// The registered artifacts that name this one, which must go or change before it does:
    /// the references Stratos holds artifacts to (see [`crate::CheckedFile::unknown_references`]).
    pub fn referrers(&self, kind: ArtifactKind, id: &str) -> Vec<(ArtifactKind, String)> {
        references::referrers(self, kind, id)
    }

    /// What replacing this catalog with `next` would leave naming what `next` lacks, each as
    /// the artifact and what it names.
    pub fn broken_by(&self, next: &Catalog) -> Vec<String> {
        references::broken(self, next)
    }

    /// The applications that use this artifact, directly or through policies and partitions.
    pub fn applications_using(&self, kind: ArtifactKind, id: &str) -> Vec<String> {
        let mut out = BTreeSet::new();
        for application in self.applications.values() {
            let uses = match kind {
                ArtifactKind::NetworkPartition => self
                    .deployment_policies
                    .values()
                    .filter(|p| p.network_partitions.iter().any(|n| n.id == id))
                    .any(|p| application_names(application, ArtifactKind::DeploymentPolicy, &p.id)),
                ArtifactKind::KubernetesCluster => self
                    .network_partitions
                    .values()
                    .filter(|n| uses_kubernetes_cluster(n, id))
                    .flat_map(|n| {
                        self.deployment_policies
                            .values()
                            .filter(|p| p.network_partitions.iter().any(|x| x.id == n.id))
                    })
                    .any(|p| application_names(application, ArtifactKind::DeploymentPolicy, &p.id)),
                ArtifactKind::DomainMappings | ArtifactKind::ApplicationSignup => {
                    application.id == id
                }
                _ => application_names(application, kind, id),
            };
            if uses {
                out.insert(application.id.clone());
            }
        }
        out.into_iter().collect()
    }
}

fn uses_kubernetes_cluster(partition: &NetworkPartition, id: &str) -> bool {
    partition
        .partitions
        .iter()
        .any(|p| p.properties.get("cluster").is_some_and(|c| c == id))
}

/// Whether the application's components name the artifact directly.
fn application_names(application: &Application, kind: ArtifactKind, id: &str) -> bool {
    let (cartridges, groups) = application.subscriptions();
    let in_cartridges = cartridges.iter().any(|c| match kind {
        ArtifactKind::Cartridge => c.cartridge == id,
        ArtifactKind::AutoscalingPolicy => c.autoscaling_policy.as_deref() == Some(id),
        ArtifactKind::DeploymentPolicy => c.deployment_policy.as_deref() == Some(id),
        _ => false,
    });
    in_cartridges
        || groups.iter().any(|g| match kind {
            ArtifactKind::CartridgeGroup => g.name == id,
            ArtifactKind::DeploymentPolicy => g.deployment_policy.as_deref() == Some(id),
            _ => false,
        })
}

/// The references of `bundle`'s artifacts that `catalog` cannot follow; see
/// [`crate::CheckedFile::unknown_references`].
pub(crate) fn unknown_references(catalog: &Catalog, bundle: &Bundle) -> Vec<Diagnostic> {
    references::unknown(catalog, references::of_bundle(bundle))
}

/// The artifact a resolution problem is in, as its diagnostics name it.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Source<'a> {
    Application(&'a str),
    ApplicationPolicy(&'a str),
    DomainMappings(&'a str),
    CartridgeGroup(&'a str),
    DeploymentPolicy(&'a str),
}

impl fmt::Display for Source<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Application(id) => write!(f, "application {id}"),
            Source::ApplicationPolicy(id) => write!(f, "application policy {id}"),
            Source::DomainMappings(id) => write!(f, "domain mappings of {id}"),
            Source::CartridgeGroup(name) => write!(f, "cartridge group {name}"),
            Source::DeploymentPolicy(id) => write!(f, "deployment policy {id}"),
        }
    }
}

/// Follows every reference of the application and fills in every default.
pub fn resolve(
    catalog: &Catalog,
    application_id: &str,
    application_policy_id: &str,
) -> Result<AppSpec, Diagnostics> {
    let app_source = Source::Application(application_id).to_string();
    let Some(application) = catalog.applications.get(application_id) else {
        return Err(single(
            &app_source,
            "$",
            format!("unknown application `{application_id}`"),
        ));
    };
    let Some(policy) = catalog.application_policies.get(application_policy_id) else {
        return Err(single(
            &app_source,
            "$.deploy_with",
            format!("unknown application policy `{application_policy_id}`"),
        ));
    };
    let mut r = Resolver {
        catalog,
        policy,
        app_source,
        problems: Vec::new(),
        aliases: BTreeSet::new(),
        checked_policies: BTreeSet::new(),
    };
    let policy_references = references::of_application_policy(policy);
    r.problems
        .extend(references::unknown(catalog, policy_references));
    let components = &application.components;
    let children = r.children(
        &components.groups,
        &components.cartridges,
        None,
        None,
        "$.components",
    );
    let (app_source, deps) = (r.app_source.clone(), &components.dependencies);
    r.dependencies(
        deps,
        &children,
        &app_source,
        "$.components.dependencies",
        "the application",
    );
    let root = GroupSpec {
        alias: application.id.clone(),
        name: String::new(),
        min_instances: 1,
        max_instances: 1,
        group_scaling_enabled: false,
        termination: deps.termination_behaviour,
        children,
        startup_orders: deps.startup_orders.clone(),
        scaling_dependents: deps.scaling_dependents.clone(),
    };
    let mappings_source = Source::DomainMappings(application_id).to_string();
    let mappings = catalog
        .domain_mappings
        .get(application_id)
        .map_or(&[][..], Vec::as_slice);
    for (i, mapping) in mappings.iter().enumerate() {
        if !r.clusters_has(&root, &mapping.cartridge_alias) {
            r.report(
                &mappings_source,
                format!("$.domain_mappings[{i}].cartridge_alias"),
                mapping.unknown_alias_message(),
            );
        }
    }
    if !r.problems.is_empty() {
        return Err(Diagnostics(r.problems));
    }
    let network_partition_groups = if policy.network_partition_groups.is_empty() {
        policy.algorithm.default_groups(&policy.network_partitions)
    } else {
        policy.network_partition_groups.clone()
    };
    Ok(AppSpec {
        id: application.id.clone(),
        application_policy: policy.id.clone(),
        network_partition_groups,
        root,
        domain_mappings: DomainMapping::by_alias(mappings),
    })
}

fn single(source: &str, path: &str, message: String) -> Diagnostics {
    Diagnostics(vec![problem(source, path.to_string(), message)])
}

fn problem(source: &str, path: String, message: String) -> Diagnostic {
    Diagnostic {
        location: Location {
            source: source.to_string(),
            line: None,
            path,
        },
        message,
    }
}

struct Resolver<'c> {
    catalog: &'c Catalog,
    policy: &'c ApplicationPolicy,
    app_source: String,
    problems: Vec<Diagnostic>,
    aliases: BTreeSet<String>,
    checked_policies: BTreeSet<String>,
}

impl<'c> Resolver<'c> {
    fn report(&mut self, source: &str, path: String, message: String) {
        self.problems.push(problem(source, path, message));
    }

    fn report_app(&mut self, path: String, message: String) {
        let source = self.app_source.clone();
        self.report(&source, path, message);
    }

    fn clusters_has(&self, group: &GroupSpec, alias: &str) -> bool {
        group.children.iter().any(|child| match child {
            ComponentSpec::Cluster(c) => c.alias == alias,
            ComponentSpec::Group(g) => self.clusters_has(g, alias),
        })
    }

    fn alias(&mut self, alias: &str, path: &str) {
        if !self.aliases.insert(alias.to_string()) {
            self.report_app(
                format!("{path}.alias"),
                format!("alias `{alias}` is used twice in the application"),
            );
        }
    }

    fn children(
        &mut self,
        groups: &[GroupSubscription],
        cartridges: &[CartridgeSubscription],
        definition: Option<&'c CartridgeGroup>,
        deployment_policy: Option<&str>,
        path: &str,
    ) -> Vec<ComponentSpec> {
        let mut out = Vec::new();
        for (k, group) in groups.iter().enumerate() {
            let path = format!("{path}.groups[{k}]");
            out.extend(
                self.group(group, definition, deployment_policy, &path)
                    .map(ComponentSpec::Group),
            );
        }
        for (j, cartridge) in cartridges.iter().enumerate() {
            let path = format!("{path}.cartridges[{j}]");
            if let Some(parent) = definition
                && !parent.cartridges.contains(&cartridge.cartridge)
            {
                self.report_app(
                    format!("{path}.cartridge"),
                    format!(
                        "cartridge `{}` is not a member of cartridge group `{}`",
                        cartridge.cartridge, parent.name
                    ),
                );
            }
            out.extend(
                self.cluster(cartridge, deployment_policy, &path)
                    .map(ComponentSpec::Cluster),
            );
        }
        out
    }

    fn group(
        &mut self,
        subscription: &GroupSubscription,
        parent: Option<&'c CartridgeGroup>,
        inherited_policy: Option<&str>,
        path: &str,
    ) -> Option<GroupSpec> {
        self.alias(&subscription.alias, path);
        let name = &subscription.name;
        let definition = match parent {
            Some(parent) => {
                let nested = parent.groups.iter().find(|g| g.name == *name);
                if nested.is_none() {
                    self.report_app(
                        format!("{path}.name"),
                        format!(
                            "group `{name}` is not a nested group of cartridge group `{}`",
                            parent.name
                        ),
                    );
                }
                nested
            }
            None => {
                let found = self.catalog.cartridge_groups.get(name);
                if found.is_none() {
                    self.report_app(
                        format!("{path}.name"),
                        format!("unknown cartridge group `{name}`"),
                    );
                }
                found
            }
        };
        let deployment_policy = subscription
            .deployment_policy
            .as_deref()
            .or(inherited_policy);
        let children = self.children(
            &subscription.groups,
            &subscription.cartridges,
            definition,
            deployment_policy,
            path,
        );
        let definition = definition?;
        let source = Source::CartridgeGroup(&definition.name).to_string();
        let deps = &definition.dependencies;
        self.dependencies(
            deps,
            &children,
            &source,
            "$.dependencies",
            &format!("group `{}`", subscription.alias),
        );
        Some(GroupSpec {
            alias: subscription.alias.clone(),
            name: name.clone(),
            min_instances: subscription.min_instances,
            max_instances: subscription.max_instances,
            group_scaling_enabled: subscription.group_scaling_enabled
                || definition.group_scaling_enabled,
            termination: deps.termination_behaviour,
            children,
            startup_orders: deps.startup_orders.clone(),
            scaling_dependents: deps.scaling_dependents.clone(),
        })
    }

    fn dependencies(
        &mut self,
        deps: &Dependencies,
        children: &[ComponentSpec],
        source: &str,
        path: &str,
        owner: &str,
    ) {
        let present: BTreeSet<ComponentRef> =
            children.iter().map(ComponentSpec::reference).collect();
        for (list, field, what) in [
            (&deps.startup_orders, "startup_orders", "startup order"),
            (
                &deps.scaling_dependents,
                "scaling_dependents",
                "scaling dependents",
            ),
        ] {
            for (k, chain) in list.iter().enumerate() {
                for (m, reference) in chain.iter().enumerate() {
                    if !present.contains(reference) {
                        self.report(
                            source,
                            format!("{path}.{field}[{k}][{m}]"),
                            format!("the {what} names `{reference}`, which is not a direct component of {owner}"),
                        );
                    }
                }
            }
        }
        if let Some(cycle) = startup_cycle(&deps.startup_orders) {
            self.report(
                source,
                format!("{path}.startup_orders"),
                cycle_message(&cycle),
            );
        }
    }

    fn cluster(
        &mut self,
        subscription: &CartridgeSubscription,
        inherited_policy: Option<&str>,
        path: &str,
    ) -> Option<ClusterSpec> {
        let alias = &subscription.alias;
        self.alias(alias, path);
        let cartridge = self.catalog.cartridges.get(&subscription.cartridge);
        if cartridge.is_none() {
            self.report_app(
                format!("{path}.cartridge"),
                format!("unknown cartridge type `{}`", subscription.cartridge),
            );
        }
        let autoscaling = match &subscription.autoscaling_policy {
            Some(id) => {
                let found = self.catalog.autoscaling_policies.get(id).cloned();
                if found.is_none() {
                    self.report_app(
                        format!("{path}.autoscaling_policy"),
                        format!("unknown autoscaling policy `{id}`"),
                    );
                }
                found
            }
            None => Some(AutoscalingPolicy::fallback()),
        };
        let Some(policy_id) = subscription
            .deployment_policy
            .as_deref()
            .or(inherited_policy)
        else {
            self.report_app(
                format!("{path}.deployment_policy"),
                format!(
                    "cartridge `{alias}` has no deployment policy, and no group around it has one"
                ),
            );
            return None;
        };
        let Some(policy) = self.catalog.deployment_policies.get(policy_id) else {
            self.report_app(
                format!("{path}.deployment_policy"),
                format!("unknown deployment policy `{policy_id}` for cartridge `{alias}`"),
            );
            return None;
        };
        self.check_deployment_policy(policy);
        for np in &self.policy.network_partitions {
            if !policy.network_partitions.iter().any(|p| p.id == *np) {
                self.report_app(
                    format!("{path}.deployment_policy"),
                    format!(
                        "deployment policy `{policy_id}` of cartridge `{alias}` does not cover network partition `{np}` of application policy `{}`",
                        self.policy.id
                    ),
                );
            }
        }
        let placements = policy
            .network_partitions
            .iter()
            .filter(|p| self.policy.network_partitions.contains(&p.id))
            .cloned()
            .collect();
        Some(ClusterSpec {
            alias: alias.clone(),
            cartridge: cartridge?.clone(),
            min: subscription.min,
            max: subscription.max,
            autoscaling: autoscaling?,
            deployment_policy: policy_id.to_string(),
            placements,
        })
    }

    /// Checks a deployment policy's partitions once per policy.
    fn check_deployment_policy(&mut self, policy: &DeploymentPolicy) {
        if self.checked_policies.insert(policy.id.clone()) {
            let found = references::unknown(self.catalog, references::of_deployment_policy(policy));
            self.problems.extend(found);
        }
    }
}
