//! Artifacts written back in Stratos 4.1's JSON shape, whichever syntax they were declared in,
//! so Stratos clients reading the API see the documents they would have posted.
//!
//! What reads back through [`crate::parse_stratos`] is what was written, except the settings
//! Stratos has no field for: an autoscaling policy's timing and a network partition's proxy
//! port offset.

use serde_json::{Map, Value, json};

use crate::catalog::Catalog;
use crate::stratos::{
    NETWORK_PARTITION_ALGORITHMS, PARTITION_ALGORITHMS, PROTOCOLS, TERMINATION_BEHAVIOURS,
};
use crate::types::*;

impl Catalog {
    /// Every artifact of a kind by id, as Stratos' API answers it. Kubernetes clusters are
    /// kept as they were written and signups in Cairn's own shape; an application's domain
    /// mappings come as the bean list Stratos answers a GET with (a POST wraps them in
    /// `domainMappings`).
    pub fn stratos_documents(&self, kind: ArtifactKind) -> Vec<(String, Value)> {
        fn each<T>(
            map: &std::collections::BTreeMap<String, T>,
            document: impl Fn(&T) -> Value,
        ) -> Vec<(String, Value)> {
            map.iter()
                .map(|(id, artifact)| (id.clone(), document(artifact)))
                .collect()
        }
        fn serialized<T: serde::Serialize>(x: &T) -> Value {
            serde_json::to_value(x).unwrap_or(Value::Null)
        }
        match kind {
            ArtifactKind::Cartridge => each(&self.cartridges, cartridge),
            ArtifactKind::CartridgeGroup => each(&self.cartridge_groups, group),
            ArtifactKind::Application => each(&self.applications, application),
            ArtifactKind::AutoscalingPolicy => each(&self.autoscaling_policies, autoscaling_policy),
            ArtifactKind::DeploymentPolicy => each(&self.deployment_policies, deployment_policy),
            ArtifactKind::ApplicationPolicy => each(&self.application_policies, application_policy),
            ArtifactKind::NetworkPartition => each(&self.network_partitions, network_partition),
            ArtifactKind::KubernetesCluster => each(&self.kubernetes_clusters, |k| k.raw.clone()),
            ArtifactKind::DomainMappings => each(&self.domain_mappings, |m| domain_mappings(m)),
            ArtifactKind::ApplicationSignup => each(&self.artifact_repositories, serialized),
        }
    }
}

/// Stratos' DomainMappingBean list.
fn domain_mappings(mappings: &[DomainMapping]) -> Value {
    let beans = mappings.iter().map(|mapping| {
        let mut bean = Map::new();
        bean.insert(
            "cartridgeAlias".into(),
            mapping.cartridge_alias.clone().into(),
        );
        bean.insert("domainName".into(), mapping.domain_name.clone().into());
        put_some(&mut bean, "contextPath", mapping.context_path.clone());
        Value::Object(bean)
    });
    Value::Array(beans.collect())
}

/// The name Stratos writes for a value of one of its enumerations.
fn name<T: PartialEq + Copy>(table: &[(&'static str, T)], value: T) -> &'static str {
    table
        .iter()
        .find(|(_, v)| *v == value)
        .map_or("", |(name, _)| name)
}

/// Adds `key` only when there is a value, as Stratos leaves optional fields out.
fn put_some(map: &mut Map<String, Value>, key: &str, value: Option<impl Into<Value>>) {
    if let Some(value) = value {
        map.insert(key.to_string(), value.into());
    }
}

fn property_list(properties: &std::collections::BTreeMap<String, String>) -> Value {
    properties
        .iter()
        .map(|(name, value)| json!({"name": name, "value": value}))
        .collect()
}

fn cartridge(c: &Cartridge) -> Value {
    let port_mappings: Vec<Value> = c
        .port_mappings
        .iter()
        .map(|p| {
            json!({
                "name": p.name,
                "protocol": name(&PROTOCOLS, p.protocol),
                "port": p.port,
                // Stratos writes 0 for a port that is not proxied.
                "proxyPort": p.proxy_port.unwrap_or(0),
            })
        })
        .collect();
    let mut map = Map::new();
    map.insert("type".into(), c.kind.clone().into());
    put_some(&mut map, "host", c.host.clone());
    put_some(&mut map, "category", c.category.clone());
    put_some(&mut map, "provider", c.provider.clone());
    put_some(&mut map, "displayName", c.display_name.clone());
    put_some(&mut map, "description", c.description.clone());
    put_some(&mut map, "version", c.version.clone());
    map.insert("multiTenant".into(), c.multi_tenant.into());
    map.insert("portMapping".into(), port_mappings.into());
    put_some(&mut map, "command", c.command.clone());
    put_some(&mut map, "image", c.image.clone());
    if !c.env.is_empty() {
        map.insert("env".into(), json!(c.env));
    }
    map.insert("health".into(), health(&c.health));
    if !c.properties.is_empty() {
        map.insert("property".into(), property_list(&c.properties));
    }
    Value::Object(map)
}

fn health(h: &HealthCheck) -> Value {
    let mut map = match &h.probe {
        Probe::Process => json!({"process": true}),
        Probe::Tcp { port } => json!({"tcp": true, "port": port}),
        Probe::Http { port, path } => json!({"http": path, "port": port}),
    };
    if let Value::Object(map) = &mut map {
        map.insert("intervalMs".into(), h.interval_ms.into());
        map.insert("timeoutMs".into(), h.timeout_ms.into());
        map.insert("failureThreshold".into(), h.failure_threshold.into());
    }
    map
}

fn group(g: &CartridgeGroup) -> Value {
    json!({
        "name": g.name,
        "cartridges": g.cartridges,
        "groups": g.groups.iter().map(group).collect::<Vec<_>>(),
        "dependencies": dependencies(&g.dependencies),
        "groupScalingEnabled": g.group_scaling_enabled,
    })
}

fn dependencies(d: &Dependencies) -> Value {
    let orders = |lists: &[Vec<ComponentRef>]| -> Vec<Value> {
        lists
            .iter()
            .map(|list| {
                let aliases: Vec<String> = list.iter().map(ToString::to_string).collect();
                json!({"aliases": aliases})
            })
            .collect()
    };
    json!({
        "startupOrders": orders(&d.startup_orders),
        "scalingDependents": orders(&d.scaling_dependents),
        "terminationBehaviour": name(&TERMINATION_BEHAVIOURS, d.termination_behaviour),
    })
}

fn application(a: &Application) -> Value {
    let mut map = Map::new();
    map.insert("applicationId".into(), a.id.clone().into());
    put_some(&mut map, "alias", a.alias.clone());
    map.insert("multiTenant".into(), a.multi_tenant.into());
    let mut components = subscriptions(&a.components.groups, &a.components.cartridges);
    components.insert(
        "dependencies".into(),
        dependencies(&a.components.dependencies),
    );
    map.insert("components".into(), Value::Object(components));
    Value::Object(map)
}

fn subscriptions(
    groups: &[GroupSubscription],
    cartridges: &[CartridgeSubscription],
) -> Map<String, Value> {
    let mut map = Map::new();
    map.insert(
        "groups".into(),
        groups.iter().map(group_subscription).collect(),
    );
    map.insert(
        "cartridges".into(),
        cartridges.iter().map(cartridge_subscription).collect(),
    );
    map
}

fn group_subscription(g: &GroupSubscription) -> Value {
    let mut map = Map::new();
    map.insert("name".into(), g.name.clone().into());
    map.insert("alias".into(), g.alias.clone().into());
    map.insert("groupMinInstances".into(), g.min_instances.into());
    map.insert("groupMaxInstances".into(), g.max_instances.into());
    map.insert("groupScalingEnabled".into(), g.group_scaling_enabled.into());
    put_some(&mut map, "deploymentPolicy", g.deployment_policy.clone());
    map.extend(subscriptions(&g.groups, &g.cartridges));
    Value::Object(map)
}

fn cartridge_subscription(c: &CartridgeSubscription) -> Value {
    let mut info = Map::new();
    info.insert("alias".into(), c.alias.clone().into());
    put_some(&mut info, "autoscalingPolicy", c.autoscaling_policy.clone());
    put_some(&mut info, "deploymentPolicy", c.deployment_policy.clone());
    json!({
        "type": c.cartridge,
        "cartridgeMin": c.min,
        "cartridgeMax": c.max,
        "subscribableInfo": info,
    })
}

fn autoscaling_policy(p: &AutoscalingPolicy) -> Value {
    let mut thresholds = Map::new();
    let factors = [
        ("requestsInFlight", p.requests_in_flight),
        ("memoryConsumption", p.memory_consumption),
        ("loadAverage", p.load_average),
    ];
    for (factor, threshold) in factors {
        put_some(
            &mut thresholds,
            factor,
            threshold.map(|t| json!({"threshold": t})),
        );
    }
    json!({"id": p.id, "loadThresholds": thresholds})
}

fn deployment_policy(p: &DeploymentPolicy) -> Value {
    let placements: Vec<Value> = p
        .network_partitions
        .iter()
        .map(|np| {
            let partitions: Vec<Value> = np
                .partitions
                .iter()
                .map(|part| json!({"id": part.id, "partitionMax": part.max}))
                .collect();
            json!({
                "id": np.id,
                "partitionAlgo": name(&PARTITION_ALGORITHMS, np.algorithm),
                "partitions": partitions,
            })
        })
        .collect();
    json!({"id": p.id, "networkPartitions": placements})
}

fn application_policy(p: &ApplicationPolicy) -> Value {
    let mut properties = p.properties.clone();
    // Groups other than the algorithm's own only survive as the property Stratos reads them from.
    if p.network_partition_groups != p.algorithm.default_groups(&p.network_partitions) {
        let groups: Vec<String> = p
            .network_partition_groups
            .iter()
            .map(|group| group.join("|"))
            .collect();
        properties.insert("networkPartitionGroups".into(), groups.join(","));
    }
    let mut map = Map::new();
    map.insert("id".into(), p.id.clone().into());
    map.insert(
        "algorithm".into(),
        name(&NETWORK_PARTITION_ALGORITHMS, p.algorithm).into(),
    );
    map.insert("networkPartitions".into(), json!(p.network_partitions));
    if !properties.is_empty() {
        map.insert("properties".into(), property_list(&properties));
    }
    Value::Object(map)
}

fn network_partition(np: &NetworkPartition) -> Value {
    let partitions: Vec<Value> = np
        .partitions
        .iter()
        .map(|part| json!({"id": part.id, "property": property_list(&part.properties)}))
        .collect();
    let mut map = Map::new();
    map.insert("id".into(), np.id.clone().into());
    put_some(&mut map, "provider", np.provider.clone());
    map.insert("partitions".into(), partitions.into());
    Value::Object(map)
}
