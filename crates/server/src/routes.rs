//! From the engine's routes to the load balancer's table.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use cairn_lb::{Backend, ClusterKey, ClusterRoute, RouteTable};
use cairn_model::Protocol;

/// The table for the engine's routes, each proxy port moved by `offset` and by its network
/// partition's own offset; also what could not be routed.
pub fn route_table(
    routes: &[cairn_engine::ClusterRoute],
    offset: u16,
    partition_offsets: &BTreeMap<String, u16>,
) -> (RouteTable, Vec<String>) {
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
            if mapping.protocol == Protocol::Tcp {
                problems.push(format!(
                    "{}/{}: port {} is tcp; the load balancer proxies http only, so proxy port {proxy_port} is not served",
                    route.application, route.alias, mapping.name
                ));
                continue;
            }
            let Some(listen) = proxy_port
                .checked_add(offset)
                .and_then(|p| p.checked_add(own))
            else {
                problems.push(format!(
                    "{}/{}: proxy port {proxy_port} plus offsets {offset} and {own} is beyond 65535",
                    route.application, route.alias
                ));
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
            let listener = table.listeners.entry(listen).or_default();
            // Partitions that share entry points share one route per cluster.
            match listener.clusters.iter_mut().find(|c| c.key == key) {
                Some(existing) => existing.backends.extend(backends),
                None => listener.clusters.push(ClusterRoute {
                    response_timeout_ms: route.response_timeout_ms,
                    ..ClusterRoute::new(key, route.hosts.clone(), backends)
                }),
            }
        }
    }
    (table, problems)
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_model::PortMapping;

    #[test]
    fn shared_proxy_ports_carry_every_cluster_and_tcp_is_reported() {
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
        ];
        let (table, problems) = route_table(&routes, 10_000, &BTreeMap::new());
        assert_eq!(
            table.listeners.keys().copied().collect::<Vec<_>>(),
            [10_080]
        );
        assert_eq!(table.listeners[&10_080].clusters.len(), 2);
        assert_eq!(
            table.listeners[&10_080].clusters[0].backends[0].addr.port(),
            4000
        );
        assert_eq!(problems.len(), 1);
        assert!(problems[0].contains("tcp"), "{}", problems[0]);
    }
}
