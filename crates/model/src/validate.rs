//! Checks within one bundle: what can be wrong without looking at other artifacts.

use std::collections::{BTreeMap, BTreeSet};

use crate::diagnostic::{Diagnostic, Diagnostics};
use crate::reader::{Key, Origins};
use crate::types::*;

/// Checks a bundle on its own; locations are paths into the bundle (`$.cartridges[0].port_mappings[1].port`).
///
/// The parsers already run these checks, with lines; this is for bundles built otherwise.
pub fn validate_bundle(bundle: &Bundle) -> Diagnostics {
    Diagnostics(check_bundle(bundle, &Origins::new("bundle")))
}

pub(crate) fn check_bundle(bundle: &Bundle, origins: &Origins) -> Vec<Diagnostic> {
    let mut c = Checks {
        origins,
        problems: Vec::new(),
    };
    let root = Key::new("");
    c.unique_ids(
        &root.field("cartridges"),
        bundle.cartridges.iter().map(|x| &x.kind),
        "cartridge",
        "kind",
    );
    c.unique_ids(
        &root.field("cartridge_groups"),
        bundle.cartridge_groups.iter().map(|x| &x.name),
        "cartridge group",
        "name",
    );
    c.unique_ids(
        &root.field("applications"),
        bundle.applications.iter().map(|x| &x.id),
        "application",
        "id",
    );
    c.unique_ids(
        &root.field("autoscaling_policies"),
        bundle.autoscaling_policies.iter().map(|x| &x.id),
        "autoscaling policy",
        "id",
    );
    c.unique_ids(
        &root.field("deployment_policies"),
        bundle.deployment_policies.iter().map(|x| &x.id),
        "deployment policy",
        "id",
    );
    c.unique_ids(
        &root.field("application_policies"),
        bundle.application_policies.iter().map(|x| &x.id),
        "application policy",
        "id",
    );
    c.unique_ids(
        &root.field("network_partitions"),
        bundle.network_partitions.iter().map(|x| &x.id),
        "network partition",
        "id",
    );
    c.unique_ids(
        &root.field("kubernetes_clusters"),
        bundle.kubernetes_clusters.iter().map(|x| &x.id),
        "kubernetes cluster",
        "id",
    );
    for (i, cartridge) in bundle.cartridges.iter().enumerate() {
        c.cartridge(cartridge, &Key::new(format!("cartridges[{i}]")));
    }
    for (i, group) in bundle.cartridge_groups.iter().enumerate() {
        c.group(group, &Key::new(format!("cartridge_groups[{i}]")));
    }
    for (i, application) in bundle.applications.iter().enumerate() {
        c.application(application, &Key::new(format!("applications[{i}]")));
    }
    for (i, policy) in bundle.autoscaling_policies.iter().enumerate() {
        c.autoscaling_policy(policy, &Key::new(format!("autoscaling_policies[{i}]")));
    }
    for (i, policy) in bundle.deployment_policies.iter().enumerate() {
        c.deployment_policy(policy, &Key::new(format!("deployment_policies[{i}]")));
    }
    for (i, policy) in bundle.application_policies.iter().enumerate() {
        c.application_policy(policy, &Key::new(format!("application_policies[{i}]")));
    }
    for (i, partition) in bundle.network_partitions.iter().enumerate() {
        c.network_partition(partition, &Key::new(format!("network_partitions[{i}]")));
    }
    for (application, mappings) in &bundle.domain_mappings {
        let key = Key::new(format!("domain_mappings[{application}]"));
        for (i, mapping) in mappings.iter().enumerate() {
            let key = key.index(i);
            c.non_empty(
                &mapping.cartridge_alias,
                &key.field("cartridge_alias"),
                "the cartridge alias",
            );
            c.non_empty(
                &mapping.domain_name,
                &key.field("domain_name"),
                "the domain name",
            );
            if !mapping.domain_name.trim().is_empty() && !is_host_name(&mapping.domain_name) {
                c.report(
                    &key.field("domain_name"),
                    format!(
                        "`{}` is not a host name: labels of letters, digits and `-` joined by `.`",
                        mapping.domain_name
                    ),
                );
            }
            if let Some(path) = &mapping.context_path
                && !is_url_path(path)
            {
                c.report(
                    &key.field("context_path"),
                    format!("the context path `{path}` is not a URL path: letters, digits, `/` and `-._~!$&'()*+,;=:@` or `%` with two hex digits"),
                );
            }
        }
    }
    c.problems
}

/// A DNS host name, as the load balancer matches it against a request's `Host`.
fn is_host_name(name: &str) -> bool {
    let name = name.strip_suffix('.').unwrap_or(name);
    name.len() <= 253
        && name.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// The path part of a URL (RFC 3986 path characters), its leading `/` optional since the
/// load balancer adds it; no query or fragment.
fn is_url_path(path: &str) -> bool {
    let bytes = path.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if bytes
                .get(i + 1..i + 3)
                .is_some_and(|hex| hex.iter().all(u8::is_ascii_hexdigit)) =>
            {
                i += 3
            }
            b if b.is_ascii_alphanumeric() || b"/-._~!$&'()*+,;=:@".contains(&b) => i += 1,
            _ => return false,
        }
    }
    true
}

/// A cartridge property that means something to Cairn: its name, whether a value is valid,
/// and what a valid value is.
type PropertyRule = (&'static str, fn(&str) -> bool, &'static str);

const PROPERTY_RULES: [PropertyRule; 3] = [
    (
        RESPONSE_TIMEOUT_PROPERTY,
        |v| parse_positive_whole(v).is_some(),
        "a whole number of milliseconds above 0",
    ),
    (
        CPU_CORES_PROPERTY,
        |v| parse_cores(v).is_some(),
        "a number of cores above 0",
    ),
    (
        MEMORY_LIMIT_PROPERTY,
        |v| parse_positive_whole(v).is_some(),
        "a whole number of MiB above 0",
    ),
];

/// The longest name: member ids add an alias and a number to an application id.
const MAX_NAME: usize = 100;

struct Checks<'o> {
    origins: &'o Origins,
    problems: Vec<Diagnostic>,
}

impl Checks<'_> {
    fn report(&mut self, key: &Key, message: impl Into<String>) {
        self.problems.push(Diagnostic {
            location: self.origins.locate(key),
            message: message.into(),
        });
    }

    fn non_empty(&mut self, value: &str, key: &Key, what: &str) {
        if value.trim().is_empty() {
            self.report(key, format!("{what} is empty"));
        }
    }

    /// A name that becomes part of member ids, file names and URL paths.
    fn name(&mut self, value: &str, key: &Key, what: &str) {
        let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
        if value.is_empty() {
            self.report(key, format!("{what} is empty"));
        } else if value.len() > MAX_NAME || value.starts_with('.') || !value.chars().all(allowed) {
            self.report(
                key,
                format!("{what} `{value}` is not a name: up to {MAX_NAME} letters, digits, `.`, `_` or `-`, not starting with `.`"),
            );
        }
    }

    fn unique_ids<'a>(
        &mut self,
        key: &Key,
        ids: impl Iterator<Item = &'a String>,
        what: &str,
        field: &str,
    ) {
        let mut seen = BTreeSet::new();
        for (i, id) in ids.enumerate() {
            if !seen.insert(id) {
                let place = match field {
                    "" => key.index(i),
                    field => key.index(i).field(field),
                };
                self.report(&place, format!("{what} `{id}` is declared twice"));
            }
        }
    }

    fn cartridge(&mut self, cartridge: &Cartridge, key: &Key) {
        self.name(&cartridge.kind, &key.field("kind"), "the cartridge type");
        let mut names = BTreeSet::new();
        for (j, mapping) in cartridge.port_mappings.iter().enumerate() {
            let key = key.field("port_mappings").index(j);
            if mapping.port == 0 {
                self.report(&key.field("port"), "port 0 is not a usable port");
            }
            if mapping.proxy_port == Some(0) {
                self.report(
                    &key.field("proxy_port"),
                    "proxy port 0 is not a usable port",
                );
            }
            self.non_empty(&mapping.name, &key.field("name"), "the port mapping name");
            if !names.insert(&mapping.name) {
                self.report(
                    &key.field("name"),
                    format!("port mapping name `{}` is used twice", mapping.name),
                );
            }
        }
        for (name, valid, expected) in PROPERTY_RULES {
            if let Some(value) = cartridge.properties.get(name)
                && !valid(value)
            {
                self.report(
                    &key.field("properties").field(name),
                    format!("`{name}` is `{value}`, expected {expected}"),
                );
            }
        }
        if cartridge.command.as_ref().is_some_and(Vec::is_empty) {
            self.report(&key.field("command"), "the command is empty");
        }
        let health = &cartridge.health;
        let health_key = key.field("health");
        if let Some(port) = health.probe.port()
            && !cartridge.port_mappings.iter().any(|p| p.name == port)
        {
            self.report(
                &health_key.field("port"),
                format!("the health check uses port `{port}`, which is not a port mapping of this cartridge"),
            );
        }
        if health.interval_ms == 0 {
            self.report(
                &health_key.field("interval_ms"),
                "the health check interval must be above 0",
            );
        }
        if health.timeout_ms == 0 {
            self.report(
                &health_key.field("timeout_ms"),
                "the health check timeout must be above 0",
            );
        }
        if health.failure_threshold == 0 {
            self.report(
                &health_key.field("failure_threshold"),
                "the health check failure threshold must be at least 1",
            );
        }
    }

    fn group(&mut self, group: &CartridgeGroup, key: &Key) {
        self.name(&group.name, &key.field("name"), "the group name");
        self.unique_ids(
            &key.field("groups"),
            group.groups.iter().map(|g| &g.name),
            "nested group",
            "name",
        );
        self.startup_cycles(&group.dependencies, &key.field("dependencies"));
        for (k, nested) in group.groups.iter().enumerate() {
            self.group(nested, &key.field("groups").index(k));
        }
    }

    fn application(&mut self, application: &Application, key: &Key) {
        self.name(&application.id, &key.field("id"), "the application id");
        let components = &application.components;
        let components_key = key.field("components");
        if components.groups.is_empty() && components.cartridges.is_empty() {
            self.report(&components_key, "the application has no components");
        }
        let mut aliases = BTreeSet::new();
        self.subscriptions(
            &components.groups,
            &components.cartridges,
            &components_key,
            &mut aliases,
        );
        let deps_key = components_key.field("dependencies");
        let children: BTreeSet<ComponentRef> = components
            .groups
            .iter()
            .map(|g| ComponentRef::Group(g.alias.clone()))
            .chain(
                components
                    .cartridges
                    .iter()
                    .map(|c| ComponentRef::Cartridge(c.alias.clone())),
            )
            .collect();
        for (list, field, what) in [
            (
                &components.dependencies.startup_orders,
                "startup_orders",
                "startup order",
            ),
            (
                &components.dependencies.scaling_dependents,
                "scaling_dependents",
                "scaling dependents",
            ),
        ] {
            for (k, chain) in list.iter().enumerate() {
                for (m, reference) in chain.iter().enumerate() {
                    if !children.contains(reference) {
                        self.report(
                            &deps_key.field(field).index(k).index(m),
                            format!("the {what} names `{reference}`, which is not a component of the application"),
                        );
                    }
                }
            }
        }
        self.startup_cycles(&components.dependencies, &deps_key);
    }

    fn subscriptions(
        &mut self,
        groups: &[GroupSubscription],
        cartridges: &[CartridgeSubscription],
        key: &Key,
        aliases: &mut BTreeSet<String>,
    ) {
        for (j, cartridge) in cartridges.iter().enumerate() {
            let key = key.field("cartridges").index(j);
            self.non_empty(
                &cartridge.cartridge,
                &key.field("cartridge"),
                "the cartridge type",
            );
            self.alias(&cartridge.alias, &key, aliases);
            if cartridge.max == 0 {
                self.report(&key.field("max"), "max must be at least 1");
            } else if cartridge.min > cartridge.max {
                self.report(
                    &key.field("max"),
                    format!(
                        "min ({}) is greater than max ({})",
                        cartridge.min, cartridge.max
                    ),
                );
            }
        }
        for (j, group) in groups.iter().enumerate() {
            let key = key.field("groups").index(j);
            self.name(&group.name, &key.field("name"), "the group name");
            self.alias(&group.alias, &key, aliases);
            if group.max_instances == 0 {
                self.report(
                    &key.field("max_instances"),
                    "max instances must be at least 1",
                );
            } else if group.min_instances > group.max_instances {
                self.report(
                    &key.field("max_instances"),
                    format!(
                        "min instances ({}) is greater than max instances ({})",
                        group.min_instances, group.max_instances
                    ),
                );
            }
            self.subscriptions(&group.groups, &group.cartridges, &key, aliases);
        }
    }

    fn alias(&mut self, alias: &str, key: &Key, aliases: &mut BTreeSet<String>) {
        let key = key.field("alias");
        self.name(alias, &key, "the alias");
        if !alias.is_empty() && !aliases.insert(alias.to_string()) {
            self.report(
                &key,
                format!("alias `{alias}` is used twice in the application"),
            );
        }
    }

    fn startup_cycles(&mut self, dependencies: &Dependencies, key: &Key) {
        if let Some(cycle) = startup_cycle(&dependencies.startup_orders) {
            self.report(&key.field("startup_orders"), cycle_message(&cycle));
        }
    }

    fn autoscaling_policy(&mut self, policy: &AutoscalingPolicy, key: &Key) {
        self.non_empty(&policy.id, &key.field("id"), "the policy id");
        if let Some(t) = policy.requests_in_flight
            && !(t > 0.0 && t.is_finite())
        {
            self.report(
                &key.field("requests_in_flight"),
                format!("the requests in flight threshold must be above 0, found {t}"),
            );
        }
        for (value, field, what) in [
            (
                policy.memory_consumption,
                "memory_consumption",
                "memory consumption",
            ),
            (policy.load_average, "load_average", "load average"),
        ] {
            if let Some(t) = value
                && !(t > 0.0 && t <= 100.0)
            {
                self.report(
                    &key.field(field),
                    format!(
                        "the {what} threshold is a percentage above 0 and at most 100, found {t}"
                    ),
                );
            }
        }
        let timing = &policy.timing;
        if !(0.0..1.0).contains(&timing.tolerance) {
            self.report(
                &key.field("tolerance"),
                format!(
                    "the tolerance is a fraction from 0 up to 1, found {}",
                    timing.tolerance
                ),
            );
        }
        if timing.window_ms < 1_000 {
            self.report(
                &key.field("window"),
                format!(
                    "the window must be at least 1s to hold a sample, found {} ms",
                    timing.window_ms
                ),
            );
        }
    }

    fn deployment_policy(&mut self, policy: &DeploymentPolicy, key: &Key) {
        self.non_empty(&policy.id, &key.field("id"), "the policy id");
        let list_key = key.field("network_partitions");
        if policy.network_partitions.is_empty() {
            self.report(
                &list_key,
                "the deployment policy names no network partition",
            );
        }
        self.unique_ids(
            &list_key,
            policy.network_partitions.iter().map(|n| &n.id),
            "network partition",
            "id",
        );
        for (i, placement) in policy.network_partitions.iter().enumerate() {
            let key = list_key.index(i);
            self.non_empty(&placement.id, &key.field("id"), "the network partition id");
            if placement.partitions.is_empty() {
                self.report(
                    &key.field("partitions"),
                    format!("network partition `{}` lists no partition", placement.id),
                );
            }
            self.unique_ids(
                &key.field("partitions"),
                placement.partitions.iter().map(|p| &p.id),
                "partition",
                "id",
            );
            for (j, partition) in placement.partitions.iter().enumerate() {
                let key = key.field("partitions").index(j);
                self.non_empty(&partition.id, &key.field("id"), "the partition id");
                if partition.max == 0 {
                    self.report(&key.field("max"), "the partition max must be at least 1");
                }
            }
        }
    }

    fn application_policy(&mut self, policy: &ApplicationPolicy, key: &Key) {
        self.non_empty(&policy.id, &key.field("id"), "the policy id");
        let list_key = key.field("network_partitions");
        if policy.network_partitions.is_empty() {
            self.report(
                &list_key,
                "the application policy names no network partition",
            );
        }
        self.unique_ids(
            &list_key,
            policy.network_partitions.iter(),
            "network partition",
            "",
        );
        let groups_key = key.field("network_partition_groups");
        let mut grouped = BTreeSet::new();
        for member in policy.network_partition_groups.iter().flatten() {
            if !policy.network_partitions.contains(member) {
                self.report(
                    &groups_key,
                    format!("network partition group member `{member}` is not one of the policy's network partitions"),
                );
            }
            if !grouped.insert(member) {
                self.report(
                    &groups_key,
                    format!("network partition `{member}` is in more than one group"),
                );
            }
        }
    }

    fn network_partition(&mut self, partition: &NetworkPartition, key: &Key) {
        self.non_empty(&partition.id, &key.field("id"), "the network partition id");
        if partition.partitions.is_empty() {
            self.report(
                &key.field("partitions"),
                "the network partition has no partition",
            );
        }
        self.unique_ids(
            &key.field("partitions"),
            partition.partitions.iter().map(|p| &p.id),
            "partition",
            "id",
        );
        for (j, p) in partition.partitions.iter().enumerate() {
            self.non_empty(
                &p.id,
                &key.field("partitions").index(j).field("id"),
                "the partition id",
            );
        }
    }
}

/// A cycle in the startup orders' "starts after" edges, as the components along it.
pub(crate) fn startup_cycle(orders: &[Vec<ComponentRef>]) -> Option<Vec<ComponentRef>> {
    let mut edges: BTreeMap<&ComponentRef, BTreeSet<&ComponentRef>> = BTreeMap::new();
    for chain in orders {
        for pair in chain.windows(2) {
            edges.entry(&pair[0]).or_default().insert(&pair[1]);
        }
    }
    // Iterative depth-first search; 1 = on the current path, 2 = done.
    let mut state: BTreeMap<&ComponentRef, u8> = BTreeMap::new();
    for &start in edges.keys() {
        if state.contains_key(start) {
            continue;
        }
        let mut path: Vec<&ComponentRef> = vec![start];
        let mut pending: Vec<Vec<&ComponentRef>> = vec![
            edges
                .get(start)
                .map(|s| s.iter().copied().collect())
                .unwrap_or_default(),
        ];
        state.insert(start, 1);
        while let Some(next) = pending.last_mut() {
            let Some(node) = next.pop() else {
                pending.pop();
                if let Some(done) = path.pop() {
                    state.insert(done, 2);
                }
                continue;
            };
            match state.get(node) {
                Some(1) => {
                    let from = path.iter().position(|n| *n == node).unwrap_or(0);
                    let mut cycle: Vec<ComponentRef> =
                        path[from..].iter().map(|n| (*n).clone()).collect();
                    cycle.push(node.clone());
                    return Some(cycle);
                }
                Some(_) => {}
                None => {
                    state.insert(node, 1);
                    path.push(node);
                    pending.push(
                        edges
                            .get(node)
                            .map(|s| s.iter().copied().collect())
                            .unwrap_or_default(),
                    );
                }
            }
        }
    }
    None
}

pub(crate) fn cycle_message(cycle: &[ComponentRef]) -> String {
    let names: Vec<String> = cycle.iter().map(ToString::to_string).collect();
    format!("the startup orders form a cycle: {}", names.join(" → "))
}
