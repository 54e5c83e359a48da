//! From the engine's routes to the load balancer's table.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use cairn_lb::{
    Backend, ClusterKey, ClusterRoute, LbError, ListenerProtocol, ListenerRoute, RouteTable,
};
use cairn_model::{AppSpec, Protocol};

/// Something of an application's routes that the load balancer does not serve.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct RoutingProblem {
    pub application: String,
    pub message: String,
}

/// Where the load balancer listens for a proxy port, after Cairn's offset and the network
/// partition's own; none beyond 65535.
fn listen_port(proxy_port: u16, offset: u16, own: u16) -> Option<u16> {
    proxy_port.checked_add(offset)?.checked_add(own)
}

/// A port the load balancer listens on for one cluster of an application.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyPort {
    pub listen: u16,
    pub application: String,
    pub alias: String,
    pub protocol: Protocol,
}

/// The ports an application's clusters ask the load balancer for, in every network partition
/// they are placed in.
pub fn proxy_ports(
    spec: &AppSpec,
    offset: u16,
    partition_offsets: &BTreeMap<String, u16>,
) -> Vec<ProxyPort> {
    let mut out = Vec::new();
    for cluster in spec.root.clusters() {
        for placement in &cluster.placements {
            let own = partition_offsets.get(&placement.id).copied().unwrap_or(0);
            for mapping in &cluster.cartridge.port_mappings {
                let Some(proxy_port) = mapping.proxy_port else {
                    continue;
                };
                out.extend(
                    listen_port(proxy_port, offset, own).map(|listen| ProxyPort {
                        listen,
                        application: spec.id.clone(),
                        alias: cluster.alias.clone(),
                        protocol: mapping.protocol,
                    }),
                );
            }
        }
    }
    out
}

/// A port of `wanted` that a cluster of another application holds already, where the two
/// cannot share it: either speaks tcp, which has no host names to tell clusters apart.
pub fn port_clash<'a>(
    wanted: &'a [ProxyPort],
    held: &'a [ProxyPort],
) -> Option<(&'a ProxyPort, &'a ProxyPort)> {
    wanted.iter().find_map(|want| {
        let clash = held.iter().find(|have| {
            have.listen == want.listen
                && have.application != want.application
                && (have.protocol == Protocol::Tcp || want.protocol == Protocol::Tcp)
        })?;
        Some((want, clash))
    })
}

/// The table for the engine's routes, each proxy port moved by `offset` and by its network
/// partition's own offset; also what could not be routed.
pub fn route_table(
    routes: &[cairn_engine::ClusterRoute],
    offset: u16,
    partition_offsets: &BTreeMap<String, u16>,
) -> (RouteTable, Vec<RoutingProblem>) {
    let mut table = RouteTable::default();
    let mut problems = Vec::new();
    for route in routes {
        let own = partition_offsets
            .get(&route.network_partition)
            .copied()
            .unwrap_or(0);
        for mapping in &route.port_mappings {
            let Some(proxy_port) = mapping.proxy_port else {
                continue;
            };
            let Some(listen) = listen_port(proxy_port, offset, own) else {
                problems.push(RoutingProblem {
                    application: route.application.clone(),
                    message: format!(
                        "{}/{}: proxy port {proxy_port} plus offsets {offset} and {own} is beyond 65535, so it is not served",
                        route.application, route.alias
                    ),
                });
                continue;
            };
            let backend = |draining: bool| {
                move |(member, ports): &(String, BTreeMap<String, String>)| {
                    let addr: SocketAddr = ports.get(&mapping.name)?.parse().ok()?;
                    Some(Backend {
                        draining,
                        ..Backend::new(member.clone(), addr)
                    })
                }
            };
            let backends: Vec<Backend> = route
                .members
                .iter()
                .filter_map(backend(false))
                .chain(route.draining.iter().filter_map(backend(true)))
                .collect();
            let key = ClusterKey::new(&route.application, &route.alias);
            let protocol = match mapping.protocol {
                Protocol::Tcp => ListenerProtocol::Tcp,
                Protocol::Http | Protocol::Https => ListenerProtocol::Http,
            };
            let listener = table
                .listeners
                .entry(listen)
                .or_insert_with(|| ListenerRoute {
                    protocol,
                    ..ListenerRoute::default()
                });
            if listener.protocol != protocol {
                problems.push(RoutingProblem {
                    application: route.application.clone(),
                    message: format!(
                        "{key}: port {} is {protocol} but proxy port {listen} already serves {}, so it is not served there",
                        mapping.name, listener.protocol
                    ),
                });
                continue;
            }
            // Partitions that share entry points share one route per cluster.
            match listener.clusters.iter_mut().find(|c| c.key == key) {
                Some(existing) => existing.backends.extend(backends),
                None => listener.clusters.push(ClusterRoute {
                    context_paths: route.context_paths.clone(),
                    response_timeout_ms: route.response_timeout_ms,
                    ..ClusterRoute::new(key, route.hosts.clone(), backends)
                }),
            }
        }
    }
    (table, problems)
}

/// What the load balancer refused of `table`, by the applications it concerns (an application
/// may come more than once; the caller keeps a set).
pub fn lb_problems(error: &LbError, table: &RouteTable) -> Vec<RoutingProblem> {
    let keys: Vec<&ClusterKey> = match error {
        LbError::Several(errors) => {
            return errors.iter().flat_map(|e| lb_problems(e, table)).collect();
        }
        LbError::Bind { port, .. } => table
            .listeners
            .get(port)
            .map(|l| l.clusters.iter().map(|c| &c.key).collect())
            .unwrap_or_default(),
        LbError::DuplicateHost { first, second, .. } => vec![first, second],
        LbError::NoHostNames { cluster, .. } | LbError::ContextPath { cluster, .. } => {
            vec![cluster]
        }
        LbError::SharedTcpPort { refused, .. } => vec![refused],
        LbError::ShutDown => Vec::new(),
    };
    let message = match error {
        LbError::Bind { .. } => format!("{error}; trying again every {} s", REBIND.as_secs()),
        _ => error.to_string(),
    };
    keys.into_iter()
        .map(|key| RoutingProblem {
            application: key.application.clone(),
            message: message.clone(),
        })
        .collect()
}

/// How long after a port could not be bound it is tried again.
pub const REBIND: std::time::Duration = std::time::Duration::from_secs(5);

/// Whether some port of the table could not be bound.
pub fn bind_failed(error: &LbError) -> bool {
    match error {
        LbError::Bind { .. } => true,
        LbError::Several(errors) => errors.iter().any(bind_failed),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_model::PortMapping;

    #[test]
    fn shared_proxy_ports_carry_every_cluster_and_tcp_ports_one() {
        let mapping = |name: &str, protocol, proxy| PortMapping {
            name: name.into(),
            protocol,
            port: 8080,
            proxy_port: Some(proxy),
        };
        let route = |alias: &str, mappings| cairn_engine::ClusterRoute {
            application: "app".into(),
            alias: alias.into(),
            network_partition: "np".into(),
            hosts: vec![format!("app.{alias}.example.org")],
            context_paths: BTreeMap::new(),
            port_mappings: mappings,
            members: vec![(
                format!("app.{alias}.1"),
                BTreeMap::from([("http".to_string(), "127.0.0.1:4000".to_string())]),
            )],
            draining: vec![],
            response_timeout_ms: None,
        };
        let routes = vec![
            route(
                "a",
                vec![
                    mapping("http", Protocol::Http, 80),
                    mapping("ssh", Protocol::Tcp, 22),
                ],
            ),
            route("b", vec![mapping("http", Protocol::Http, 80)]),
            route("c", vec![mapping("redis", Protocol::Tcp, 80)]),
        ];
        let (table, problems) = route_table(&routes, 10_000, &BTreeMap::new());
        assert_eq!(
            table.listeners.keys().copied().collect::<Vec<_>>(),
            [10_022, 10_080]
        );
        let (ssh, web) = (&table.listeners[&10_022], &table.listeners[&10_080]);
        assert_eq!(
            (ssh.protocol, ssh.clusters.len()),
            (ListenerProtocol::Tcp, 1)
        );
        assert_eq!(
            (web.protocol, web.clusters.len()),
            (ListenerProtocol::Http, 2)
        );
        assert_eq!(web.clusters[0].backends[0].addr.port(), 4000);
        assert_eq!(
            problems,
            [RoutingProblem {
                application: "app".into(),
                message: "app/c: port redis is tcp but proxy port 10080 already serves http, so it is not served there".into(),
            }]
        );
    }
}
