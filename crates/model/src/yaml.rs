//! Cairn's native YAML blueprint: one hand-written file holds a whole application.
//!
//! The format is documented in `docs/blueprint.md`. Maps are keyed by name or alias, keys are
//! snake_case, unknown keys are errors (a typo must not pass silently), and what a small
//! application does not need has a default: a local network partition, a deployment policy
//! over it, an application policy over it.

use std::collections::BTreeMap;

use crate::check::CheckedFile;
use crate::diagnostic::{Diagnostic, Diagnostics, Location};
use crate::reader::{At, Key, Reader};
use crate::stratos::{
    HealthFields, NETWORK_PARTITION_ALGORITHMS, PARTITION_ALGORITHMS, PROTOCOLS,
    TERMINATION_BEHAVIOURS, build_health,
};
use crate::tree::Value;
use crate::types::*;

/// The id of every policy a blueprint gets when it declares none.
const DEFAULT_POLICY: &str = "default";
/// The network partition a blueprint gets when it declares none.
const LOCAL_NETWORK_PARTITION: &str = "local";
const LOCAL_PARTITION: &str = "local-1";
/// A partition's max when a blueprint does not say.
const DEFAULT_PARTITION_MAX: u32 = 100;

const TOP_KEYS: &[&str] = &[
    "application",
    "alias",
    "multi_tenant",
    "termination",
    "scaling_dependents",
    "cartridges",
    "components",
    "network_partitions",
    "deployment_policies",
    "autoscaling_policies",
    "application_policies",
    "deploy_with",
];
const CARTRIDGE_KEYS: &[&str] = &[
    "host",
    "category",
    "provider",
    "display_name",
    "description",
    "version",
    "multi_tenant",
    "ports",
    "command",
    "image",
    "env",
    "health",
    "properties",
];
const PORT_KEYS: &[&str] = &["name", "protocol", "port", "proxy_port"];
const HEALTH_KEYS: &[&str] = &[
    "http",
    "tcp",
    "process",
    "port",
    "interval",
    "timeout",
    "failure_threshold",
];
const CARTRIDGE_COMPONENT_KEYS: &[&str] = &[
    "cartridge",
    "min",
    "max",
    "autoscaling_policy",
    "deployment_policy",
    "depends_on",
    "domains",
];
const GROUP_COMPONENT_KEYS: &[&str] = &[
    "group",
    "min_instances",
    "max_instances",
    "group_scaling",
    "deployment_policy",
    "termination",
    "depends_on",
    "scaling_dependents",
    "components",
];

/// Parses a blueprint and checks it on its own; `deploy_with` names the application policy.
pub fn parse_yaml(source: &str, text: &str) -> Result<Bundle, Diagnostics> {
    check_yaml(source, text).into_result()
}

/// Checks a blueprint on its own, keeping what could be read of it.
pub fn check_yaml(source: &str, text: &str) -> CheckedFile {
    let root = match crate::yaml_tree::parse(text) {
        Ok(Some(root)) => root,
        Ok(None) => {
            return CheckedFile::failed(source, one(source, (1, 1), "the blueprint is empty"));
        }
        Err(e) => return CheckedFile::failed(source, one(source, e.position, e.message)),
    };
    let mut r = Reader::new(source);
    let at = At::root(&root);
    let mut bundle = Bundle::default();
    if r.object(&at) {
        blueprint(&mut r, &at, &mut bundle);
    }
    r.finish(bundle)
}

fn one(source: &str, position: (usize, usize), message: impl Into<String>) -> Diagnostics {
    Diagnostics(vec![Diagnostic {
        location: Location {
            source: source.to_string(),
            line: Some(position),
            path: String::new(),
        },
        message: message.into(),
    }])
}

/// The entries of a map keyed by name; a null value reads as an empty map.
fn named<'n>(r: &mut Reader, at: &At<'n>) -> Vec<(String, At<'n>)> {
    r.map(at, None)
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
}

fn is_null(at: &At) -> bool {
    at.node.value == Value::Null
}

fn blueprint(r: &mut Reader, at: &At, bundle: &mut Bundle) {
    r.map(at, Some(TOP_KEYS));
    if let Some(list) = at.get("cartridges") {
        r.origins.record(&Key::new("cartridges"), &list);
        for (kind, item) in named(r, &list) {
            let key = Key::new("cartridges").index(bundle.cartridges.len());
            bundle.cartridges.extend(cartridge(r, &item, kind, &key));
        }
    }
    if let Some(list) = at.get("network_partitions") {
        for (id, item) in named(r, &list) {
            let key = Key::new("network_partitions").index(bundle.network_partitions.len());
            bundle
                .network_partitions
                .extend(network_partition(r, &item, id, &key));
        }
    }
    if let Some(list) = at.get("autoscaling_policies") {
        for (id, item) in named(r, &list) {
            let key = Key::new("autoscaling_policies").index(bundle.autoscaling_policies.len());
            bundle
                .autoscaling_policies
                .extend(autoscaling_policy(r, &item, id, &key));
        }
    }
    let application_id = at
        .get("application")
        .and_then(|a| r.string(&a, &Key::new("applications[0].id")));
    if application_id.is_none() && at.has("components") {
        r.error(at, "missing field `application`");
    }
    let declares_application = application_id.is_some();
    if declares_application && bundle.network_partitions.is_empty() {
        bundle.network_partitions.push(NetworkPartition {
            id: LOCAL_NETWORK_PARTITION.into(),
            provider: Some("local".into()),
            partitions: vec![Partition {
                id: LOCAL_PARTITION.into(),
                properties: BTreeMap::new(),
            }],
            proxy_port_offset: 0,
        });
    }
    if let Some(list) = at.get("deployment_policies") {
        for (id, item) in named(r, &list) {
            let key = Key::new("deployment_policies").index(bundle.deployment_policies.len());
            let policy = deployment_policy(r, &item, id, &key, &bundle.network_partitions);
            bundle.deployment_policies.extend(policy);
        }
    } else if declares_application {
        bundle.deployment_policies.push(DeploymentPolicy {
            id: DEFAULT_POLICY.into(),
            network_partitions: bundle
                .network_partitions
                .iter()
                .map(|np| all_partitions(np, PartitionAlgorithm::OneAfterAnother))
                .collect(),
        });
    }
    if let Some(list) = at.get("application_policies") {
        for (id, item) in named(r, &list) {
            let key = Key::new("application_policies").index(bundle.application_policies.len());
            bundle
                .application_policies
                .extend(application_policy(r, &item, id, &key));
        }
    } else if declares_application && names_default_policy(at) {
        let network_partitions: Vec<String> = bundle
            .network_partitions
            .iter()
            .map(|np| np.id.clone())
            .collect();
        let algorithm = NetworkPartitionAlgorithm::OneAfterAnother;
        bundle.application_policies.push(ApplicationPolicy {
            id: DEFAULT_POLICY.into(),
            algorithm,
            network_partition_groups: algorithm.default_groups(&network_partitions),
            network_partitions,
            properties: BTreeMap::new(),
        });
    }
    let Some(application_id) = application_id else {
        return;
    };
    bundle.deploy_with = deploy_with(r, at, &bundle.application_policies);
    let defaults = PolicyDefaults {
        deployment: default_id(bundle.deployment_policies.iter().map(|p| &p.id)),
        autoscaling: default_id(bundle.autoscaling_policies.iter().map(|p| &p.id)),
    };
    let app_key = Key::new("applications[0]");
    r.origins.record(&app_key, at);
    let components_key = app_key.field("components");
    let mut domains = Domains {
        key: Key::new(format!("domain_mappings[{application_id}]")),
        mappings: Vec::new(),
    };
    let mut level = Level::default();
    if let Some(components) = at.get("components") {
        r.origins.record(&components_key, &components);
        level = components_level(
            r,
            &components,
            &components_key,
            &defaults,
            true,
            &mut domains,
        );
    } else {
        r.error(at, "missing field `components`");
    }
    let deps_key = components_key.field("dependencies");
    let scaling_dependents = at
        .get("scaling_dependents")
        .map(|s| {
            alias_lists(
                r,
                &s,
                &level.siblings,
                &deps_key.field("scaling_dependents"),
            )
        })
        .unwrap_or_default();
    let termination_behaviour = at
        .get("termination")
        .and_then(|t| {
            r.choice(
                &t,
                &deps_key.field("termination_behaviour"),
                "termination behaviour",
                &TERMINATION_BEHAVIOURS,
            )
        })
        .unwrap_or_default();
    for (group, location) in level.definitions {
        add_definition(r, &mut bundle.cartridge_groups, group, location);
    }
    bundle.applications.push(Application {
        id: application_id.clone(),
        alias: at
            .get("alias")
            .and_then(|a| r.string(&a, &app_key.field("alias"))),
        multi_tenant: at
            .get("multi_tenant")
            .and_then(|m| r.boolean(&m, &app_key.field("multi_tenant")))
            .unwrap_or(false),
        components: Components {
            groups: level.groups,
            cartridges: level.cartridges,
            dependencies: Dependencies {
                startup_orders: level.startup_orders,
                scaling_dependents,
                termination_behaviour,
            },
        },
    });
    if !domains.mappings.is_empty() {
        bundle
            .domain_mappings
            .insert(application_id, domains.mappings);
    }
}

/// The policy components get when they name none: the one called `default`, or the only one.
fn default_id<'a>(mut ids: impl Iterator<Item = &'a String> + Clone) -> Option<String> {
    if let Some(id) = ids.clone().find(|id| *id == DEFAULT_POLICY) {
        return Some(id.clone());
    }
    match (ids.next(), ids.next()) {
        (Some(only), None) => Some(only.clone()),
        _ => None,
    }
}

struct PolicyDefaults {
    deployment: Option<String>,
    autoscaling: Option<String>,
}

/// Whether the application deploys with the `default` policy, said or left unsaid: the one the
/// blueprint makes up when it declares none.
fn names_default_policy(at: &At) -> bool {
    at.get("deploy_with")
        .is_none_or(|named| named.node.value.scalar_text().as_deref() == Some(DEFAULT_POLICY))
}

fn deploy_with(r: &mut Reader, at: &At, policies: &[ApplicationPolicy]) -> Option<String> {
    // A policy the blueprint does not declare may be registered already; resolution tells.
    if let Some(named) = at.get("deploy_with") {
        return r.string(&named, &Key::new("applications[0]").field("deploy_with"));
    }
    let chosen = default_id(policies.iter().map(|p| &p.id));
    if chosen.is_none() && policies.len() > 1 {
        r.error(at, "several application policies are declared: name the one to deploy with in `deploy_with`");
    } else if chosen.is_none() && r.problems.is_empty() {
        r.error(at, "no application policy is declared to deploy with");
    }
    chosen
}

fn all_partitions(
    np: &NetworkPartition,
    algorithm: PartitionAlgorithm,
) -> NetworkPartitionPlacement {
    NetworkPartitionPlacement {
        id: np.id.clone(),
        algorithm,
        partitions: np
            .partitions
            .iter()
            .map(|p| PartitionPlacement {
                id: p.id.clone(),
                max: DEFAULT_PARTITION_MAX,
            })
            .collect(),
    }
}

fn cartridge(r: &mut Reader, at: &At, kind: String, key: &Key) -> Option<Cartridge> {
    r.origins.record(key, at);
    r.origins.record(&key.field("kind"), at);
    let fields = if is_null(at) {
        Vec::new()
    } else {
        r.map(at, Some(CARTRIDGE_KEYS))
    };
    let get = |name: &str| {
        fields
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.clone())
            .filter(|v| !is_null(v))
    };
    let mut port_mappings = Vec::new();
    if let Some(ports) = get("ports") {
        r.origins.record(&key.field("port_mappings"), &ports);
        for (j, item) in r.list(&ports).iter().enumerate() {
            port_mappings.extend(port_mapping(r, item, &key.field("port_mappings").index(j)));
        }
    }
    let health = match get("health") {
        Some(health_at) => {
            let fields = health_fields(r, &health_at, &key.field("health"));
            build_health(r, &health_at, fields, &port_mappings)
        }
        None => HealthCheck::for_ports(&port_mappings),
    };
    let text = |r: &mut Reader, name: &str, field: &str| {
        get(name).and_then(|v| r.string(&v, &key.field(field)))
    };
    Some(Cartridge {
        host: text(r, "host", "host"),
        category: text(r, "category", "category"),
        provider: text(r, "provider", "provider"),
        display_name: text(r, "display_name", "display_name"),
        description: text(r, "description", "description"),
        version: text(r, "version", "version"),
        multi_tenant: get("multi_tenant")
            .and_then(|v| r.boolean(&v, &key.field("multi_tenant")))
            .unwrap_or(false),
        command: get("command").map(|c| r.strings(&c, &key.field("command"))),
        image: text(r, "image", "image"),
        env: get("env")
            .map(|e| r.string_map(&e, &key.field("env")))
            .unwrap_or_default(),
        properties: get("properties")
            .map(|p| r.string_map(&p, &key.field("properties")))
            .unwrap_or_default(),
        kind,
        port_mappings,
        health,
    })
}

fn port_mapping(r: &mut Reader, at: &At, key: &Key) -> Option<PortMapping> {
    r.origins.record(key, at);
    if !at.is_map() {
        // `- 8080` is short for an unproxied http port.
        let port = r.u16(at, &key.field("port"))?;
        return Some(PortMapping {
            name: PortMapping::default_name(Protocol::Http, port),
            protocol: Protocol::Http,
            port,
            proxy_port: None,
        });
    }
    r.map(at, Some(PORT_KEYS));
    let protocol = match at.get("protocol") {
        Some(p) => r.choice(&p, &key.field("protocol"), "protocol", &PROTOCOLS),
        None => Some(Protocol::Http),
    };
    let port = r
        .required(at, "port")
        .and_then(|p| r.u16(&p, &key.field("port")));
    let proxy_port = at
        .get("proxy_port")
        .and_then(|p| r.u16(&p, &key.field("proxy_port")));
    let name = at
        .get("name")
        .and_then(|n| r.string(&n, &key.field("name")));
    let (protocol, port) = (protocol?, port?);
    Some(PortMapping {
        name: name.unwrap_or_else(|| PortMapping::default_name(protocol, port)),
        protocol,
        port,
        proxy_port,
    })
}

fn health_fields(r: &mut Reader, at: &At, key: &Key) -> HealthFields {
    r.origins.record(key, at);
    if r.map(at, Some(HEALTH_KEYS)).is_empty() && !at.is_map() {
        return HealthFields::default();
    }
    HealthFields {
        http: at
            .get("http")
            .and_then(|v| r.string(&v, &key.field("http"))),
        tcp: at
            .get("tcp")
            .and_then(|v| r.boolean(&v, &key.field("tcp")))
            .unwrap_or(false),
        process: at
            .get("process")
            .and_then(|v| r.boolean(&v, &key.field("process")))
            .unwrap_or(false),
        port: at
            .get("port")
            .and_then(|v| r.string(&v, &key.field("port"))),
        interval_ms: at
            .get("interval")
            .and_then(|v| duration(r, &v, &key.field("interval_ms"))),
        timeout_ms: at
            .get("timeout")
            .and_then(|v| duration(r, &v, &key.field("timeout_ms"))),
        failure_threshold: at
            .get("failure_threshold")
            .and_then(|v| r.u32(&v, &key.field("failure_threshold"))),
    }
}

/// `500ms`, `2s`, `1.5s`, `1m`; a bare number is milliseconds.
fn duration(r: &mut Reader, at: &At, key: &Key) -> Option<u64> {
    let text = r.string(at, key)?;
    let text = text.trim();
    let (number, unit_ms) = if let Some(n) = text.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1000.0)
    } else if let Some(n) = text.strip_suffix('m') {
        (n, 60_000.0)
    } else {
        (text, 1.0)
    };
    match number.trim().parse::<f64>() {
        Ok(n) if n.is_finite() && n >= 0.0 && n * unit_ms < 1e15 => {
            Some((n * unit_ms).round() as u64)
        }
        _ => {
            r.error(
                at,
                format!("expected a duration like `500ms` or `2s`, found `{text}`"),
            );
            None
        }
    }
}

fn network_partition(r: &mut Reader, at: &At, id: String, key: &Key) -> Option<NetworkPartition> {
    r.origins.record(key, at);
    r.origins.record(&key.field("id"), at);
    if is_null(at) {
        r.error(at, "missing field `partitions`");
        return None;
    }
    r.map(at, Some(&["provider", "partitions", "proxy_port_offset"]));
    let provider = at
        .get("provider")
        .and_then(|p| r.string(&p, &key.field("provider")));
    let proxy_port_offset = at
        .get("proxy_port_offset")
        .and_then(|p| r.u16(&p, &key.field("proxy_port_offset")))
        .unwrap_or(0);
    let mut partitions = Vec::new();
    if let Some(list) = r.required(at, "partitions") {
        let list_key = key.field("partitions");
        r.origins.record(&list_key, &list);
        if matches!(list.node.value, Value::Seq(_)) {
            for (j, item) in r.list(&list).iter().enumerate() {
                if let Some(id) = r.string(item, &list_key.index(j).field("id")) {
                    partitions.push(Partition {
                        id,
                        properties: BTreeMap::new(),
                    });
                }
            }
        } else {
            for (pid, item) in named(r, &list) {
                let item_key = list_key.index(partitions.len());
                r.origins.record(&item_key, &item);
                r.origins.record(&item_key.field("id"), &item);
                let mut properties = BTreeMap::new();
                if !is_null(&item) {
                    r.map(&item, Some(&["properties"]));
                    if let Some(p) = item.get("properties") {
                        properties = r.string_map(&p, &item_key.field("properties"));
                    }
                }
                partitions.push(Partition {
                    id: pid,
                    properties,
                });
            }
        }
    }
    Some(NetworkPartition {
        id,
        provider,
        partitions,
        proxy_port_offset,
    })
}

fn autoscaling_policy(r: &mut Reader, at: &At, id: String, key: &Key) -> Option<AutoscalingPolicy> {
    r.origins.record(key, at);
    r.origins.record(&key.field("id"), at);
    let mut policy = AutoscalingPolicy {
        id,
        requests_in_flight: None,
        memory_consumption: None,
        load_average: None,
        timing: ScalingTiming::default(),
    };
    if is_null(at) {
        return Some(policy);
    }
    r.map(
        at,
        Some(&[
            "requests_in_flight",
            "memory_consumption",
            "load_average",
            "window",
            "prediction_horizon",
            "scale_down_stabilization",
            "scale_up_cooldown",
            "scale_down_cooldown",
            "tolerance",
            "drain",
        ]),
    );
    let threshold =
        |r: &mut Reader, name: &str| at.get(name).and_then(|v| r.float(&v, &key.field(name)));
    policy.requests_in_flight = threshold(r, "requests_in_flight");
    policy.memory_consumption = threshold(r, "memory_consumption");
    policy.load_average = threshold(r, "load_average");
    let timing = &mut policy.timing;
    for (name, slot) in [
        ("window", &mut timing.window_ms),
        ("prediction_horizon", &mut timing.prediction_horizon_ms),
        (
            "scale_down_stabilization",
            &mut timing.scale_down_stabilization_ms,
        ),
        ("scale_up_cooldown", &mut timing.scale_up_cooldown_ms),
        ("scale_down_cooldown", &mut timing.scale_down_cooldown_ms),
        ("drain", &mut timing.drain_ms),
    ] {
        if let Some(ms) = at.get(name).and_then(|v| duration(r, &v, &key.field(name))) {
            *slot = ms;
        }
    }
    if let Some(tolerance) = threshold(r, "tolerance") {
        timing.tolerance = tolerance;
    }
    Some(policy)
}

fn deployment_policy(
    r: &mut Reader,
    at: &At,
    id: String,
    key: &Key,
    declared: &[NetworkPartition],
) -> Option<DeploymentPolicy> {
    r.origins.record(key, at);
    r.origins.record(&key.field("id"), at);
    let list = if is_null(at) {
        None
    } else {
        r.map(at, Some(&["network_partitions"]));
        at.get("network_partitions")
    };
    let Some(list) = list else {
        let network_partitions = declared
            .iter()
            .map(|np| all_partitions(np, PartitionAlgorithm::OneAfterAnother))
            .collect();
        return Some(DeploymentPolicy {
            id,
            network_partitions,
        });
    };
    let list_key = key.field("network_partitions");
    r.origins.record(&list_key, &list);
    let mut network_partitions = Vec::new();
    for (np_id, item) in named(r, &list) {
        let item_key = list_key.index(network_partitions.len());
        r.origins.record(&item_key, &item);
        r.origins.record(&item_key.field("id"), &item);
        let mut algorithm = PartitionAlgorithm::OneAfterAnother;
        let mut partitions = None;
        if !is_null(&item) {
            r.map(&item, Some(&["algorithm", "partitions"]));
            if let Some(a) = item.get("algorithm") {
                algorithm = r
                    .choice(
                        &a,
                        &item_key.field("algorithm"),
                        "partition algorithm",
                        &PARTITION_ALGORITHMS,
                    )
                    .unwrap_or(algorithm);
            }
            if let Some(p) = item.get("partitions") {
                partitions = Some(partition_maxima(r, &p, &item_key.field("partitions")));
            }
        }
        let partitions = match partitions {
            Some(p) => p,
            None => {
                match declared.iter().find(|np| np.id == np_id) {
                    Some(np) => all_partitions(np, algorithm).partitions,
                    None => {
                        r.error(&item, format!("name the partitions of `{np_id}`: it is not declared in this blueprint"));
                        Vec::new()
                    }
                }
            }
        };
        network_partitions.push(NetworkPartitionPlacement {
            id: np_id,
            algorithm,
            partitions,
        });
    }
    Some(DeploymentPolicy {
        id,
        network_partitions,
    })
}

/// `{local-1: 10}` or `{local-1: {max: 10}}`; a null max is the default.
fn partition_maxima(r: &mut Reader, at: &At, key: &Key) -> Vec<PartitionPlacement> {
    r.origins.record(key, at);
    let mut out = Vec::new();
    for (id, item) in named(r, at) {
        let item_key = key.index(out.len());
        r.origins.record(&item_key, &item);
        r.origins.record(&item_key.field("id"), &item);
        let max = if is_null(&item) {
            Some(DEFAULT_PARTITION_MAX)
        } else if item.is_map() {
            r.map(&item, Some(&["max"]));
            match item.get("max") {
                Some(m) => r.u32(&m, &item_key.field("max")),
                None => Some(DEFAULT_PARTITION_MAX),
            }
        } else {
            r.u32(&item, &item_key.field("max"))
        };
        if let Some(max) = max {
            out.push(PartitionPlacement { id, max });
        }
    }
    out
}

fn application_policy(r: &mut Reader, at: &At, id: String, key: &Key) -> Option<ApplicationPolicy> {
    r.origins.record(key, at);
    r.origins.record(&key.field("id"), at);
    if is_null(at) {
        r.error(at, "missing field `network_partitions`");
        return None;
    }
    r.map(
        at,
        Some(&[
            "algorithm",
            "network_partitions",
            "network_partition_groups",
            "properties",
        ]),
    );
    let algorithm = match at.get("algorithm") {
        Some(a) => r.choice(
            &a,
            &key.field("algorithm"),
            "network partition algorithm",
            &NETWORK_PARTITION_ALGORITHMS,
        )?,
        None => NetworkPartitionAlgorithm::OneAfterAnother,
    };
    let network_partitions = match r.required(at, "network_partitions") {
        Some(list) => r.strings(&list, &key.field("network_partitions")),
        None => Vec::new(),
    };
    let groups_key = key.field("network_partition_groups");
    let network_partition_groups = match at.get("network_partition_groups") {
        Some(groups) => {
            let items = r.list(&groups);
            items
                .iter()
                .enumerate()
                .map(|(k, g)| {
                    r.origins.record(&groups_key, g);
                    r.strings(g, &groups_key.index(k))
                })
                .collect()
        }
        None => algorithm.default_groups(&network_partitions),
    };
    let properties = at
        .get("properties")
        .map(|p| r.string_map(&p, &key.field("properties")))
        .unwrap_or_default();
    Some(ApplicationPolicy {
        id,
        algorithm,
        network_partitions,
        network_partition_groups,
        properties,
    })
}

/// One level of the component tree, converted.
#[derive(Default)]
struct Level {
    groups: Vec<GroupSubscription>,
    cartridges: Vec<CartridgeSubscription>,
    /// Cartridge group definitions of the groups at this level.
    definitions: Vec<(CartridgeGroup, Location)>,
    startup_orders: Vec<Vec<ComponentRef>>,
    siblings: BTreeMap<String, ComponentRef>,
}

fn add_definition(
    r: &mut Reader,
    into: &mut Vec<CartridgeGroup>,
    group: CartridgeGroup,
    location: Location,
) {
    match into.iter().find(|g| g.name == group.name) {
        Some(existing) if *existing == group => {}
        Some(_) => r.report(
            location,
            format!(
                "group `{}` is used twice with different members; give one of them another `group` name",
                group.name
            ),
        ),
        None => into.push(group),
    }
}

fn components_level(
    r: &mut Reader,
    at: &At,
    key: &Key,
    defaults: &PolicyDefaults,
    top: bool,
    domains: &mut Domains,
) -> Level {
    let mut level = Level::default();
    let entries = named(r, at);
    if entries.is_empty() && at.is_map() {
        r.error(at, "no components");
    }
    for (alias, item) in &entries {
        let is_group = item.has("components") || item.has("group");
        let reference = if is_group {
            ComponentRef::Group(alias.clone())
        } else {
            ComponentRef::Cartridge(alias.clone())
        };
        level.siblings.insert(alias.clone(), reference);
    }
    for (alias, item) in &entries {
        let this = level.siblings[alias].clone();
        let deps_key = key.field("dependencies").field("startup_orders");
        if let Some(list) = item.get("depends_on") {
            for dependency in r.list(&list) {
                let Some(before) =
                    sibling(r, &dependency, &level.siblings, "depends_on", &Key::new(""))
                else {
                    continue;
                };
                if before == this {
                    r.error(&dependency, format!("`{alias}` cannot depend on itself"));
                    continue;
                }
                r.origins
                    .record(&deps_key.index(level.startup_orders.len()), &dependency);
                level.startup_orders.push(vec![before, this.clone()]);
            }
        }
        let deployment_policy = |r: &mut Reader, item: &At, field: &Key| -> Option<String> {
            if let Some(named) = item.get("deployment_policy") {
                return r.string(&named, field);
            }
            if !top {
                return None;
            }
            if defaults.deployment.is_none() {
                r.error(
                    item,
                    format!("`{alias}` has no deployment policy: several are declared, so name one with `deployment_policy`"),
                );
            }
            defaults.deployment.clone()
        };
        if let ComponentRef::Cartridge(_) = this {
            let ckey = key.field("cartridges").index(level.cartridges.len());
            r.origins.record(&ckey, item);
            r.origins.record(&ckey.field("alias"), item);
            if !is_null(item) {
                r.map(item, Some(CARTRIDGE_COMPONENT_KEYS));
            }
            let cartridge = item
                .get("cartridge")
                .and_then(|c| r.string(&c, &ckey.field("cartridge")))
                .unwrap_or_else(|| alias.clone());
            let min = item
                .get("min")
                .and_then(|m| r.u32(&m, &ckey.field("min")))
                .unwrap_or(1);
            let max = item
                .get("max")
                .and_then(|m| r.u32(&m, &ckey.field("max")))
                .unwrap_or(min.max(1));
            let autoscaling_policy = match item.get("autoscaling_policy") {
                Some(a) => r.string(&a, &ckey.field("autoscaling_policy")),
                None => defaults.autoscaling.clone(),
            };
            let deployment_policy = deployment_policy(r, item, &ckey.field("deployment_policy"));
            if let Some(list) = item.get("domains") {
                for domain in r.list(&list) {
                    let key = domains.key.index(domains.mappings.len());
                    domains
                        .mappings
                        .extend(domain_mapping(r, &domain, alias, &key));
                }
            }
            level.cartridges.push(CartridgeSubscription {
                cartridge,
                alias: alias.clone(),
                min,
                max,
                autoscaling_policy,
                deployment_policy,
            });
            continue;
        }
        let gkey = key.field("groups").index(level.groups.len());
        r.origins.record(&gkey, item);
        r.origins.record(&gkey.field("alias"), item);
        r.map(item, Some(GROUP_COMPONENT_KEYS));
        let name = item
            .get("group")
            .and_then(|g| r.string(&g, &gkey.field("name")))
            .unwrap_or_else(|| alias.clone());
        let min_instances = item
            .get("min_instances")
            .and_then(|m| r.u32(&m, &gkey.field("min_instances")))
            .unwrap_or(1);
        let max_instances = item
            .get("max_instances")
            .and_then(|m| r.u32(&m, &gkey.field("max_instances")))
            .unwrap_or(min_instances.max(1));
        let group_scaling = item
            .get("group_scaling")
            .and_then(|g| r.boolean(&g, &gkey.field("group_scaling_enabled")))
            .unwrap_or(false);
        let deployment_policy = deployment_policy(r, item, &gkey.field("deployment_policy"));
        let termination_behaviour = item
            .get("termination")
            .and_then(|t| {
                r.choice(
                    &t,
                    &gkey.field("termination"),
                    "termination behaviour",
                    &TERMINATION_BEHAVIOURS,
                )
            })
            .unwrap_or_default();
        let Some(children_at) = r.required(item, "components") else {
            continue;
        };
        let child = components_level(r, &children_at, &gkey, defaults, false, domains);
        let scaling_dependents = item
            .get("scaling_dependents")
            .map(|s| {
                alias_lists(
                    r,
                    &s,
                    &child.siblings,
                    &gkey.field("dependencies").field("scaling_dependents"),
                )
            })
            .unwrap_or_default();
        let mut cartridges: Vec<String> = Vec::new();
        for c in &child.cartridges {
            if !cartridges.contains(&c.cartridge) {
                cartridges.push(c.cartridge.clone());
            }
        }
        let mut nested = Vec::new();
        for (definition, location) in child.definitions {
            add_definition(r, &mut nested, definition, location);
        }
        let definition = CartridgeGroup {
            name: name.clone(),
            cartridges,
            groups: nested,
            dependencies: Dependencies {
                startup_orders: child.startup_orders,
                scaling_dependents,
                termination_behaviour,
            },
            group_scaling_enabled: group_scaling,
        };
        level.definitions.push((definition, r.locate(item)));
        level.groups.push(GroupSubscription {
            name,
            alias: alias.clone(),
            min_instances,
            max_instances,
            group_scaling_enabled: group_scaling,
            deployment_policy,
            groups: child.groups,
            cartridges: child.cartridges,
        });
    }
    if let Some(cycle) = crate::validate::startup_cycle(&level.startup_orders) {
        r.error(at, crate::validate::cycle_message(&cycle));
    }
    level
}

/// A sibling named by alias, or by Stratos' `cartridge.x` / `group.x`.
fn sibling(
    r: &mut Reader,
    at: &At,
    siblings: &BTreeMap<String, ComponentRef>,
    field: &str,
    key: &Key,
) -> Option<ComponentRef> {
    let text = r.string(at, key)?;
    let text = text.trim();
    let found = match ComponentRef::parse(text) {
        Ok(reference) => siblings.values().find(|s| **s == reference).cloned(),
        Err(_) => siblings.get(text).cloned(),
    };
    if found.is_none() {
        let names: Vec<&str> = siblings.keys().map(String::as_str).collect();
        r.error(
            at,
            format!(
                "unknown component `{text}` in `{field}`, expected one of: {}",
                names.join(", ")
            ),
        );
    }
    found
}

fn alias_lists(
    r: &mut Reader,
    at: &At,
    siblings: &BTreeMap<String, ComponentRef>,
    key: &Key,
) -> Vec<Vec<ComponentRef>> {
    let mut out = Vec::new();
    for (k, list) in r.list(at).iter().enumerate() {
        r.origins.record(&key.index(k), list);
        let refs = r
            .list(list)
            .iter()
            .filter_map(|item| sibling(r, item, siblings, "scaling_dependents", &Key::new("")))
            .collect();
        out.push(refs);
    }
    out
}

/// The domain mappings a blueprint's components declare, and the key they are checked under.
struct Domains {
    key: Key,
    mappings: Vec<DomainMapping>,
}

fn domain_mapping(r: &mut Reader, at: &At, alias: &str, key: &Key) -> Option<DomainMapping> {
    let name_key = key.field("domain_name");
    if !at.is_map() {
        return Some(DomainMapping {
            cartridge_alias: alias.to_string(),
            domain_name: r.string(at, &name_key)?,
            context_path: None,
        });
    }
    r.map(at, Some(&["name", "context_path"]));
    let domain_name = r.required(at, "name").and_then(|n| r.string(&n, &name_key));
    let context_path = at
        .get("context_path")
        .and_then(|c| r.string(&c, &key.field("context_path")));
    Some(DomainMapping {
        cartridge_alias: alias.to_string(),
        domain_name: domain_name?,
        context_path,
    })
}
