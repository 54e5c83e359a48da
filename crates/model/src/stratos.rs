//! Stratos 4.1 JSON artifacts: one file, one artifact, in Stratos' camelCase vocabulary.
//!
//! Stratos writes numbers and booleans as strings as often as not, and its files carry many
//! fields Cairn has no use for (`iaasProvider`, `artifactRepository`, ...): both are accepted.
//! A field Cairn reads must still have a sensible type.

use crate::check::CheckedFile;
use crate::diagnostic::{Diagnostic, Diagnostics, Location};
use crate::reader::{At, Key, Reader};
use crate::tree::{Node, Value};
use crate::types::*;

/// Parses one Stratos JSON artifact of the given kind and checks it on its own.
///
/// Domain mappings do not name their application; they land under the empty application id
/// (see [`parse_domain_mappings`]).
pub fn parse_stratos(kind: ArtifactKind, source: &str, text: &str) -> Result<Bundle, Diagnostics> {
    check_stratos_artifact(kind, source, text).into_result()
}

/// Checks one Stratos JSON artifact of the given kind on its own, keeping what could be read.
pub fn check_stratos_artifact(kind: ArtifactKind, source: &str, text: &str) -> CheckedFile {
    match read_json(source, text) {
        Ok(root) => read_artifact(kind, source, &root, ""),
        Err(problems) => CheckedFile::failed(source, problems),
    }
}

/// Parses a file of any Stratos artifact kind, guessing the kind from its keys.
pub fn parse_stratos_any(source: &str, text: &str) -> Result<(ArtifactKind, Bundle), Diagnostics> {
    let root = read_json(source, text)?;
    let kind = kind_of(source, &root)?;
    Ok((kind, read_artifact(kind, source, &root, "").into_result()?))
}

/// Checks a file of any Stratos artifact kind on its own, keeping what could be read of it.
pub fn check_stratos(source: &str, text: &str) -> CheckedFile {
    let read = read_json(source, text).and_then(|root| {
        let kind = kind_of(source, &root)?;
        Ok(read_artifact(kind, source, &root, ""))
    });
    read.unwrap_or_else(|problems| CheckedFile::failed(source, problems))
}

fn kind_of(source: &str, root: &Node) -> Result<ArtifactKind, Diagnostics> {
    detect_kind(root).ok_or_else(|| {
        Diagnostics(vec![Diagnostic {
            location: Location {
                source: source.to_string(),
                line: Some(root.position),
                path: "$".into(),
            },
            message: "cannot tell which kind of Stratos artifact this is".into(),
        }])
    })
}

/// Parses Stratos' `{"domainMappings": [...]}` for the application it was posted to.
pub fn parse_domain_mappings(
    application_id: &str,
    source: &str,
    text: &str,
) -> Result<Bundle, Diagnostics> {
    let root = read_json(source, text)?;
    read_artifact(ArtifactKind::DomainMappings, source, &root, application_id).into_result()
}

/// Guesses an artifact's kind from its keys, for files of unknown kind.
pub fn detect_stratos_kind(value: &serde_json::Value) -> Option<ArtifactKind> {
    let object = value.as_object()?;
    kind_from_keys(|key| object.get(key).is_some_and(|v| !v.is_null()))
}

fn detect_kind(root: &Node) -> Option<ArtifactKind> {
    let at = At::root(root);
    if !at.is_map() {
        return None;
    }
    kind_from_keys(|key| at.has(key))
}

fn kind_from_keys(has: impl Fn(&str) -> bool) -> Option<ArtifactKind> {
    let kind = if has("applicationId") {
        ArtifactKind::Application
    } else if has("loadThresholds") {
        ArtifactKind::AutoscalingPolicy
    } else if has("domainMappings") {
        ArtifactKind::DomainMappings
    } else if has("artifactRepositories") {
        ArtifactKind::ApplicationSignup
    } else if has("clusterId") || has("kubernetesMaster") {
        ArtifactKind::KubernetesCluster
    } else if has("type") {
        ArtifactKind::Cartridge
    } else if has("networkPartitions") && has("algorithm") {
        ArtifactKind::ApplicationPolicy
    } else if has("networkPartitions") {
        ArtifactKind::DeploymentPolicy
    } else if has("partitions") {
        ArtifactKind::NetworkPartition
    } else if has("name") {
        ArtifactKind::CartridgeGroup
    } else {
        return None;
    };
    Some(kind)
}

fn read_json(source: &str, text: &str) -> Result<Node, Diagnostics> {
    crate::json::parse(text).map_err(|e| {
        Diagnostics(vec![Diagnostic {
            location: Location {
                source: source.to_string(),
                line: Some(e.position),
                path: String::new(),
            },
            message: e.message,
        }])
    })
}

fn read_artifact(
    kind: ArtifactKind,
    source: &str,
    root: &Node,
    application_id: &str,
) -> CheckedFile {
    let mut r = Reader::new(source);
    let at = At::root(root);
    let mut bundle = Bundle::default();
    if r.object(&at) {
        fill(&mut r, &at, kind, application_id, &mut bundle);
    }
    r.finish(bundle)
}

fn fill(r: &mut Reader, at: &At, kind: ArtifactKind, application_id: &str, bundle: &mut Bundle) {
    match kind {
        ArtifactKind::Cartridge => {
            bundle
                .cartridges
                .extend(cartridge(r, at, &Key::new("cartridges[0]")))
        }
        ArtifactKind::CartridgeGroup => {
            bundle
                .cartridge_groups
                .extend(group(r, at, &Key::new("cartridge_groups[0]")))
        }
        ArtifactKind::Application => {
            bundle
                .applications
                .extend(application(r, at, &Key::new("applications[0]")))
        }
        ArtifactKind::AutoscalingPolicy => bundle.autoscaling_policies.extend(autoscaling_policy(
            r,
            at,
            &Key::new("autoscaling_policies[0]"),
        )),
        ArtifactKind::DeploymentPolicy => bundle.deployment_policies.extend(deployment_policy(
            r,
            at,
            &Key::new("deployment_policies[0]"),
        )),
        ArtifactKind::ApplicationPolicy => bundle.application_policies.extend(application_policy(
            r,
            at,
            &Key::new("application_policies[0]"),
        )),
        ArtifactKind::NetworkPartition => bundle.network_partitions.extend(network_partition(
            r,
            at,
            &Key::new("network_partitions[0]"),
        )),
        ArtifactKind::KubernetesCluster => {
            let key = Key::new("kubernetes_clusters[0]");
            let id = r.required_string(at, "clusterId", &key.field("id"));
            let description = r.field_string(at, "description", &key.field("description"));
            if let Some(id) = id {
                bundle.kubernetes_clusters.push(KubernetesCluster {
                    id,
                    description,
                    raw: at.node.to_json(),
                });
            }
        }
        ArtifactKind::DomainMappings => {
            let key = Key::new(format!("domain_mappings[{application_id}]"));
            let Some(list) = r.required(at, "domainMappings") else {
                return;
            };
            r.origins.record(&key, &list);
            let mappings = r
                .list(&list)
                .iter()
                .enumerate()
                .filter_map(|(i, item)| domain_mapping(r, item, &key.index(i)))
                .collect();
            bundle
                .domain_mappings
                .insert(application_id.to_string(), mappings);
        }
        ArtifactKind::ApplicationSignup => {
            let Some(list) = r.required(at, "artifactRepositories") else {
                return;
            };
            let key = Key::new("artifact_repositories");
            r.origins.record(&key, &list);
            for (i, item) in r.list(&list).iter().enumerate() {
                let key = key.index(i);
                if !r.object(item) {
                    continue;
                }
                let alias = r.field_string(item, "alias", &key.field("alias"));
                let repo_url = r.required_string(item, "repoUrl", &key.field("repo_url"));
                let private_repo = r
                    .field_bool(item, "privateRepo", &key.field("private_repo"))
                    .unwrap_or(false);
                if let Some(repo_url) = repo_url {
                    bundle.artifact_repositories.push(ArtifactRepository {
                        alias,
                        repo_url,
                        private_repo,
                    });
                }
            }
        }
    }
}

fn domain_mapping(r: &mut Reader, at: &At, key: &Key) -> Option<DomainMapping> {
    if !r.open(at, key) {
        return None;
    }
    let cartridge_alias = r.required_string(at, "cartridgeAlias", &key.field("cartridge_alias"));
    let domain_name = r.required_string(at, "domainName", &key.field("domain_name"));
    let context_path = r.field_string(at, "contextPath", &key.field("context_path"));
    Some(DomainMapping {
        cartridge_alias: cartridge_alias?,
        domain_name: domain_name?,
        context_path,
    })
}

pub(crate) const PROTOCOLS: [(&str, Protocol); 3] = [
    ("http", Protocol::Http),
    ("https", Protocol::Https),
    ("tcp", Protocol::Tcp),
];

pub(crate) const PARTITION_ALGORITHMS: [(&str, PartitionAlgorithm); 2] = [
    ("one-after-another", PartitionAlgorithm::OneAfterAnother),
    ("round-robin", PartitionAlgorithm::RoundRobin),
];

pub(crate) const NETWORK_PARTITION_ALGORITHMS: [(&str, NetworkPartitionAlgorithm); 2] = [
    (
        "one-after-another",
        NetworkPartitionAlgorithm::OneAfterAnother,
    ),
    ("all-at-once", NetworkPartitionAlgorithm::AllAtOnce),
];

pub(crate) const TERMINATION_BEHAVIOURS: [(&str, TerminationBehaviour); 3] = [
    ("terminate-all", TerminationBehaviour::TerminateAll),
    (
        "terminate-dependents",
        TerminationBehaviour::TerminateDependents,
    ),
    ("terminate-none", TerminationBehaviour::TerminateNone),
];

fn cartridge(r: &mut Reader, at: &At, key: &Key) -> Option<Cartridge> {
    r.origins.record(key, at);
    let kind = r.required_string(at, "type", &key.field("kind"));
    let mut port_mappings = Vec::new();
    for (item, item_key) in r.field_list(at, "portMapping", &key.field("port_mappings")) {
        port_mappings.extend(port_mapping(r, &item, &item_key));
    }
    let health = match at.get("health") {
        Some(health_at) => {
            let fields = health_fields(r, &health_at, &key.field("health"));
            build_health(r, &health_at, fields, &port_mappings)
        }
        None => HealthCheck::for_ports(&port_mappings),
    };
    let command = at
        .get("command")
        .map(|c| r.strings(&c, &key.field("command")));
    let env = match at.get("env") {
        Some(env) => r.string_map(&env, &key.field("env")),
        None => Default::default(),
    };
    let mut properties = Default::default();
    if let Some(list) = at.get("property") {
        properties = property_list(r, &list, &key.field("properties"));
    }
    Some(Cartridge {
        kind: kind?,
        host: r.field_string(at, "host", &key.field("host")),
        category: r.field_string(at, "category", &key.field("category")),
        provider: r.field_string(at, "provider", &key.field("provider")),
        display_name: r.field_string(at, "displayName", &key.field("display_name")),
        description: r.field_string(at, "description", &key.field("description")),
        version: r.field_string(at, "version", &key.field("version")),
        multi_tenant: r
            .field_bool(at, "multiTenant", &key.field("multi_tenant"))
            .unwrap_or(false),
        port_mappings,
        command,
        image: r.field_string(at, "image", &key.field("image")),
        env,
        health,
        properties,
    })
}

fn port_mapping(r: &mut Reader, at: &At, key: &Key) -> Option<PortMapping> {
    if !r.open(at, key) {
        return None;
    }
    let protocol = r
        .required(at, "protocol")
        .and_then(|p| r.choice(&p, &key.field("protocol"), "protocol", &PROTOCOLS));
    let port = r
        .required(at, "port")
        .and_then(|p| r.u16(&p, &key.field("port")));
    let proxy_port = at
        .get("proxyPort")
        .and_then(|p| r.u16(&p, &key.field("proxy_port")));
    let name = r.field_string(at, "name", &key.field("name"));
    let (protocol, port) = (protocol?, port?);
    Some(PortMapping {
        name: name.unwrap_or_else(|| PortMapping::default_name(protocol, port)),
        protocol,
        port,
        // Stratos writes proxyPort 0 for a port that is not proxied.
        proxy_port: proxy_port.filter(|p| *p != 0),
    })
}

/// The health check fields either syntax reads, before defaults apply.
#[derive(Debug, Default)]
pub(crate) struct HealthFields {
    pub http: Option<String>,
    pub tcp: bool,
    pub process: bool,
    pub port: Option<String>,
    pub interval_ms: Option<u64>,
    pub timeout_ms: Option<u64>,
    pub failure_threshold: Option<u32>,
}

fn health_fields(r: &mut Reader, at: &At, key: &Key) -> HealthFields {
    if !r.open(at, key) {
        return HealthFields::default();
    }
    HealthFields {
        http: r.field_string(at, "http", &key.field("http")),
        tcp: r.field_bool(at, "tcp", &key.field("tcp")).unwrap_or(false),
        process: r
            .field_bool(at, "process", &key.field("process"))
            .unwrap_or(false),
        port: r.field_string(at, "port", &key.field("port")),
        interval_ms: at
            .get("intervalMs")
            .and_then(|v| r.whole(&v, &key.field("interval_ms"), u64::MAX)),
        timeout_ms: at
            .get("timeoutMs")
            .and_then(|v| r.whole(&v, &key.field("timeout_ms"), u64::MAX)),
        failure_threshold: r.field_u32(at, "failureThreshold", &key.field("failure_threshold")),
    }
}

/// Applies the defaults: the probe follows the port mappings unless one is chosen.
pub(crate) fn build_health(
    r: &mut Reader,
    at: &At,
    fields: HealthFields,
    ports: &[PortMapping],
) -> HealthCheck {
    let chosen =
        usize::from(fields.http.is_some()) + usize::from(fields.tcp) + usize::from(fields.process);
    if chosen > 1 {
        r.error(at, "choose one of `http`, `tcp` and `process`");
    }
    let named = fields.port.clone();
    let probe = if let Some(path) = fields.http {
        if !path.starts_with('/') {
            let place = at.get("http").unwrap_or_else(|| at.clone());
            r.error(
                &place,
                format!("the health check path `{path}` does not start with `/`"),
            );
        }
        let port = named.or_else(|| {
            ports
                .iter()
                .find(|p| matches!(p.protocol, Protocol::Http | Protocol::Https))
                .map(|p| p.name.clone())
        });
        match port {
            Some(port) => Probe::Http { port, path },
            None => {
                r.error(at, "an http health check needs an http port mapping");
                Probe::Process
            }
        }
    } else if fields.tcp {
        match named.or_else(|| ports.first().map(|p| p.name.clone())) {
            Some(port) => Probe::Tcp { port },
            None => {
                r.error(at, "a tcp health check needs a port mapping");
                Probe::Process
            }
        }
    } else if fields.process {
        Probe::Process
    } else if let Some(port) = named {
        match ports.iter().find(|p| p.name == port) {
            Some(p) if p.protocol != Protocol::Tcp => Probe::Http {
                port,
                path: "/healthz".into(),
            },
            _ => Probe::Tcp { port },
        }
    } else {
        Probe::for_ports(ports)
    };
    HealthCheck {
        probe,
        interval_ms: fields
            .interval_ms
            .unwrap_or(HealthCheck::DEFAULT_INTERVAL_MS),
        timeout_ms: fields.timeout_ms.unwrap_or(HealthCheck::DEFAULT_TIMEOUT_MS),
        failure_threshold: fields
            .failure_threshold
            .unwrap_or(HealthCheck::DEFAULT_FAILURE_THRESHOLD),
    }
}

/// Stratos' `[{"name": ..., "value": ...}]` property lists.
fn property_list(r: &mut Reader, at: &At, key: &Key) -> std::collections::BTreeMap<String, String> {
    r.origins.record(key, at);
    let mut out = std::collections::BTreeMap::new();
    for item in r.list(at) {
        if !r.object(&item) {
            continue;
        }
        let Some(name) = r.required_string(&item, "name", key) else {
            continue;
        };
        let value = r
            .field_string(&item, "value", &key.field(&name))
            .unwrap_or_default();
        out.insert(name, value);
    }
    out
}

fn group(r: &mut Reader, at: &At, key: &Key) -> Option<CartridgeGroup> {
    if !r.open(at, key) {
        return None;
    }
    let name = r.required_string(at, "name", &key.field("name"));
    let cartridges = r.field_strings(at, "cartridges", &key.field("cartridges"));
    let mut groups = Vec::new();
    for (item, item_key) in r.field_list(at, "groups", &key.field("groups")) {
        groups.extend(group(r, &item, &item_key));
    }
    let dependencies = match at.get("dependencies") {
        Some(deps) => dependencies(r, &deps, &key.field("dependencies")),
        None => Dependencies::default(),
    };
    let group_scaling_enabled = r
        .field_bool(
            at,
            "groupScalingEnabled",
            &key.field("group_scaling_enabled"),
        )
        .unwrap_or(false);
    Some(CartridgeGroup {
        name: name?,
        cartridges,
        groups,
        dependencies,
        group_scaling_enabled,
    })
}

fn dependencies(r: &mut Reader, at: &At, key: &Key) -> Dependencies {
    if !r.open(at, key) {
        return Dependencies::default();
    }
    let mut startup_orders = Vec::new();
    for (item, item_key) in r.field_list(at, "startupOrders", &key.field("startup_orders")) {
        startup_orders.push(alias_list(r, &item, &item_key));
    }
    let mut scaling_dependents = Vec::new();
    for (item, item_key) in r.field_list(at, "scalingDependents", &key.field("scaling_dependents"))
    {
        scaling_dependents.push(alias_list(r, &item, &item_key));
    }
    let termination_behaviour = at
        .get("terminationBehaviour")
        .and_then(|t| {
            r.choice(
                &t,
                &key.field("termination_behaviour"),
                "termination behaviour",
                &TERMINATION_BEHAVIOURS,
            )
        })
        .unwrap_or_default();
    Dependencies {
        startup_orders,
        scaling_dependents,
        termination_behaviour,
    }
}

/// `{"aliases": ["cartridge.a", "group.b, cartridge.c"]}`, or the older plain string form.
fn alias_list(r: &mut Reader, at: &At, key: &Key) -> Vec<ComponentRef> {
    r.origins.record(key, at);
    let texts: Vec<At> = match &at.node.value {
        Value::Map(_) => match r.required(at, "aliases") {
            Some(aliases) => r.list(&aliases),
            None => Vec::new(),
        },
        Value::String(_) | Value::Plain(_) => vec![at.clone()],
        _ => {
            r.error(
                at,
                format!(
                    "expected a map with `aliases`, found {}",
                    at.node.value.kind_name()
                ),
            );
            Vec::new()
        }
    };
    let mut refs = Vec::new();
    for text_at in texts {
        let Some(text) = r.string(&text_at, key) else {
            continue;
        };
        for piece in text.split(',') {
            match ComponentRef::parse(piece) {
                Ok(reference) => {
                    r.origins.record(&key.index(refs.len()), &text_at);
                    refs.push(reference);
                }
                Err(message) => r.error(&text_at, message),
            }
        }
    }
    refs
}

fn application(r: &mut Reader, at: &At, key: &Key) -> Option<Application> {
    r.origins.record(key, at);
    let id = r.required_string(at, "applicationId", &key.field("id"));
    let alias = r.field_string(at, "alias", &key.field("alias"));
    let multi_tenant = r
        .field_bool(at, "multiTenant", &key.field("multi_tenant"))
        .unwrap_or(false);
    let components_key = key.field("components");
    let mut components = Components::default();
    if let Some(c) = at.get("components")
        && r.object(&c)
    {
        r.origins.record(&components_key, &c);
        let (groups, cartridges) = subscriptions(r, &c, &components_key);
        components.groups = groups;
        components.cartridges = cartridges;
        if let Some(deps) = c.get("dependencies") {
            components.dependencies = dependencies(r, &deps, &components_key.field("dependencies"));
        }
    }
    Some(Application {
        id: id?,
        alias,
        multi_tenant,
        components,
    })
}

fn subscriptions(
    r: &mut Reader,
    at: &At,
    key: &Key,
) -> (Vec<GroupSubscription>, Vec<CartridgeSubscription>) {
    let mut groups = Vec::new();
    for (item, item_key) in r.field_list(at, "groups", &key.field("groups")) {
        groups.extend(group_subscription(r, &item, &item_key));
    }
    let mut cartridges = Vec::new();
    for (item, item_key) in r.field_list(at, "cartridges", &key.field("cartridges")) {
        cartridges.extend(cartridge_subscription(r, &item, &item_key));
    }
    (groups, cartridges)
}

fn group_subscription(r: &mut Reader, at: &At, key: &Key) -> Option<GroupSubscription> {
    if !r.open(at, key) {
        return None;
    }
    let name = r.required_string(at, "name", &key.field("name"));
    let alias = r.required_string(at, "alias", &key.field("alias"));
    let min_instances = r
        .field_u32(at, "groupMinInstances", &key.field("min_instances"))
        .unwrap_or(1);
    let max_instances = r
        .field_u32(at, "groupMaxInstances", &key.field("max_instances"))
        .unwrap_or(min_instances.max(1));
    let group_scaling_enabled = r
        .field_bool(
            at,
            "groupScalingEnabled",
            &key.field("group_scaling_enabled"),
        )
        .unwrap_or(false);
    let deployment_policy = r.field_string(at, "deploymentPolicy", &key.field("deployment_policy"));
    let (groups, cartridges) = subscriptions(r, at, key);
    Some(GroupSubscription {
        name: name?,
        alias: alias?,
        min_instances,
        max_instances,
        group_scaling_enabled,
        deployment_policy,
        groups,
        cartridges,
    })
}

fn cartridge_subscription(r: &mut Reader, at: &At, key: &Key) -> Option<CartridgeSubscription> {
    if !r.open(at, key) {
        return None;
    }
    let cartridge = r.required_string(at, "type", &key.field("cartridge"));
    let min = r
        .field_u32(at, "cartridgeMin", &key.field("min"))
        .unwrap_or(1);
    let max = r
        .field_u32(at, "cartridgeMax", &key.field("max"))
        .unwrap_or(min.max(1));
    let info = r.required(at, "subscribableInfo");
    let info = info.filter(|i| r.object(i));
    let mut alias = None;
    let mut autoscaling_policy = None;
    let mut deployment_policy = None;
    if let Some(info) = &info {
        alias = r.required_string(info, "alias", &key.field("alias"));
        autoscaling_policy =
            r.field_string(info, "autoscalingPolicy", &key.field("autoscaling_policy"));
        deployment_policy =
            r.field_string(info, "deploymentPolicy", &key.field("deployment_policy"));
    }
    Some(CartridgeSubscription {
        cartridge: cartridge?,
        alias: alias?,
        min,
        max,
        autoscaling_policy,
        deployment_policy,
    })
}

fn autoscaling_policy(r: &mut Reader, at: &At, key: &Key) -> Option<AutoscalingPolicy> {
    r.origins.record(key, at);
    let id = r.required_string(at, "id", &key.field("id"));
    let mut policy = AutoscalingPolicy {
        id: String::new(),
        requests_in_flight: None,
        memory_consumption: None,
        load_average: None,
        timing: ScalingTiming::default(),
    };
    if let Some(thresholds) = at.get("loadThresholds")
        && r.object(&thresholds)
    {
        let threshold = |r: &mut Reader, name: &str, field: &str| {
            let factor = thresholds.get(name)?;
            if !r.object(&factor) {
                return None;
            }
            let value = r.required(&factor, "threshold")?;
            r.float(&value, &key.field(field))
        };
        policy.requests_in_flight = threshold(r, "requestsInFlight", "requests_in_flight");
        policy.memory_consumption = threshold(r, "memoryConsumption", "memory_consumption");
        policy.load_average = threshold(r, "loadAverage", "load_average");
    }
    policy.id = id?;
    Some(policy)
}

fn deployment_policy(r: &mut Reader, at: &At, key: &Key) -> Option<DeploymentPolicy> {
    r.origins.record(key, at);
    let id = r.required_string(at, "id", &key.field("id"));
    let mut network_partitions = Vec::new();
    if r.required(at, "networkPartitions").is_some() {
        for (item, item_key) in
            r.field_list(at, "networkPartitions", &key.field("network_partitions"))
        {
            network_partitions.extend(placement(r, &item, &item_key));
        }
    }
    Some(DeploymentPolicy {
        id: id?,
        network_partitions,
    })
}

fn placement(r: &mut Reader, at: &At, key: &Key) -> Option<NetworkPartitionPlacement> {
    if !r.open(at, key) {
        return None;
    }
    let id = r.required_string(at, "id", &key.field("id"));
    let algorithm = match r.required(at, "partitionAlgo") {
        Some(a) => r.choice(
            &a,
            &key.field("algorithm"),
            "partition algorithm",
            &PARTITION_ALGORITHMS,
        ),
        None => None,
    };
    let mut partitions = Vec::new();
    for (item, item_key) in r.field_list(at, "partitions", &key.field("partitions")) {
        if !r.open(&item, &item_key) {
            continue;
        }
        let id = r.required_string(&item, "id", &item_key.field("id"));
        let max = r
            .required(&item, "partitionMax")
            .and_then(|m| r.u32(&m, &item_key.field("max")));
        if let (Some(id), Some(max)) = (id, max) {
            partitions.push(PartitionPlacement { id, max });
        }
    }
    Some(NetworkPartitionPlacement {
        id: id?,
        algorithm: algorithm?,
        partitions,
    })
}

fn application_policy(r: &mut Reader, at: &At, key: &Key) -> Option<ApplicationPolicy> {
    r.origins.record(key, at);
    let id = r.required_string(at, "id", &key.field("id"));
    let algorithm = r.required(at, "algorithm").and_then(|a| {
        r.choice(
            &a,
            &key.field("algorithm"),
            "network partition algorithm",
            &NETWORK_PARTITION_ALGORITHMS,
        )
    });
    let network_partitions = match r.required(at, "networkPartitions") {
        Some(list) => r.strings(&list, &key.field("network_partitions")),
        None => Vec::new(),
    };
    let mut properties = match at.get("properties") {
        Some(list) => property_list(r, &list, &key.field("properties")),
        None => Default::default(),
    };
    let groups_key = key.field("network_partition_groups");
    // The groups live in `network_partition_groups`; the property that carried them is spent.
    let mut written = None;
    for name in ["networkPartitionGroups", "network-partition-groups"] {
        written = written.or(properties.remove(name));
    }
    if written.is_some()
        && let Some(origin) = at.get("properties")
    {
        r.origins.record(&groups_key, &origin);
    }
    let algorithm = algorithm?;
    let network_partition_groups = match written {
        Some(text) => ApplicationPolicy::parse_partition_groups(&text),
        None => algorithm.default_groups(&network_partitions),
    };
    Some(ApplicationPolicy {
        id: id?,
        algorithm,
        network_partitions,
        network_partition_groups,
        properties,
    })
}

fn network_partition(r: &mut Reader, at: &At, key: &Key) -> Option<NetworkPartition> {
    r.origins.record(key, at);
    let id = r.required_string(at, "id", &key.field("id"));
    let provider = r.field_string(at, "provider", &key.field("provider"));
    let mut partitions = Vec::new();
    if r.required(at, "partitions").is_some() {
        for (item, item_key) in r.field_list(at, "partitions", &key.field("partitions")) {
            if !r.open(&item, &item_key) {
                continue;
            }
            let id = r.required_string(&item, "id", &item_key.field("id"));
            let properties = match item.get("property") {
                Some(list) => property_list(r, &list, &item_key.field("properties")),
                None => Default::default(),
            };
            if let Some(id) = id {
                partitions.push(Partition { id, properties });
            }
        }
    }
    Some(NetworkPartition {
        id: id?,
        provider,
        partitions,
        proxy_port_offset: 0,
    })
}
