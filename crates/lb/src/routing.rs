//! The route table compiled for the hot path: ports to clusters, host names to clusters,
//! and the order in which a request tries a cluster's backends.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::time::Duration;

use crate::LbError;
use crate::pool::Pool;
use crate::stats::{ClusterStats, Counters, LbStats, MemberStats};
use crate::table::{ClusterKey, ClusterRoute, ListenerProtocol, RouteTable};

/// State of a cluster that outlives route tables: counters and the round-robin position.
pub(crate) struct ClusterShared {
    pub(crate) key: ClusterKey,
    pub(crate) counters: Counters,
    pub(crate) next: AtomicUsize,
}

/// A cluster as served on one port.
pub(crate) struct ClusterTarget {
    pub(crate) shared: Arc<ClusterShared>,
    pub(crate) backends: Box<[BackendTarget]>,
    pub(crate) response_timeout: Duration,
}

pub(crate) struct BackendTarget {
    pub(crate) member_id: Box<str>,
    pub(crate) draining: bool,
    pub(crate) counters: Arc<Counters>,
    pub(crate) pool: Arc<Pool>,
}

/// Context paths by lower-case host name.
type ContextPaths = HashMap<Box<str>, Arc<str>>;

pub(crate) enum PortRoute {
    /// Every request goes to one cluster, whatever its host.
    Single {
        cluster: Arc<ClusterTarget>,
        context_paths: ContextPaths,
    },
    /// Every connection is relayed as it is to one member.
    Tcp(Arc<ClusterTarget>),
    /// Keys are lower-case host names.
    ByHost(HashMap<Box<str>, HostTarget>),
}

/// The cluster a host name picks on a shared port, and its context path.
pub(crate) struct HostTarget {
    cluster: Arc<ClusterTarget>,
    context_path: Option<Arc<str>>,
}

/// Where a request goes: the cluster, and a path to put in front of the request's own.
pub(crate) struct Routed<'t> {
    pub(crate) cluster: &'t Arc<ClusterTarget>,
    pub(crate) context_path: Option<&'t Arc<str>>,
}

/// Why a request found no cluster.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Unrouted<'a> {
    PortNotServed,
    NoHost,
    UnknownHost(&'a str),
}

#[derive(Default)]
pub(crate) struct CompiledTable {
    /// Sorted by port.
    ports: Vec<(u16, PortRoute)>,
    clusters: BTreeMap<ClusterKey, ClusterEntry>,
    pools: HashMap<SocketAddr, Arc<Pool>>,
}

struct ClusterEntry {
    shared: Arc<ClusterShared>,
    members: BTreeMap<String, Arc<Counters>>,
}

impl CompiledTable {
    /// Compiles `table`, carrying counters and connection pools over from `previous`
    /// so a publish never resets them; conflicts are reported and the first claim wins.
    /// New pools keep idle connections apart for each of `threads` proxy threads.
    pub(crate) fn compile(
        table: &RouteTable,
        previous: &CompiledTable,
        threads: usize,
    ) -> (CompiledTable, Vec<LbError>) {
        let mut compiled = CompiledTable::default();
        let mut problems = Vec::new();
        for (&port, listener) in &table.listeners {
            let targets: Vec<(&ClusterRoute, Arc<ClusterTarget>)> = listener
                .clusters
                .iter()
                .map(|route| (route, Arc::new(compiled.target(route, previous, threads))))
                .collect();
            let route = match (listener.protocol, <[_; 1]>::try_from(targets)) {
                (ListenerProtocol::Http, Ok([(route, cluster)])) => PortRoute::Single {
                    context_paths: context_paths(route, &mut problems),
                    cluster,
                },
                (ListenerProtocol::Http, Err(targets)) => {
                    PortRoute::ByHost(by_host(port, targets, &mut problems))
                }
                (ListenerProtocol::Tcp, Ok([(_, target)])) => PortRoute::Tcp(target),
                (ListenerProtocol::Tcp, Err(targets)) => {
                    let mut targets = targets.into_iter();
                    let Some((served, target)) = targets.next() else {
                        continue;
                    };
                    problems.extend(targets.map(|(refused, _)| LbError::SharedTcpPort {
                        port,
                        served: served.key.clone(),
                        refused: refused.key.clone(),
                    }));
                    PortRoute::Tcp(target)
                }
            };
            compiled.ports.push((port, route));
        }
        (compiled, problems)
    }

    fn target(
        &mut self,
        route: &ClusterRoute,
        previous: &CompiledTable,
        threads: usize,
    ) -> ClusterTarget {
        let entry = self.clusters.entry(route.key.clone()).or_insert_with(|| {
            let shared = previous.clusters.get(&route.key).map_or_else(
                || {
                    Arc::new(ClusterShared {
                        key: route.key.clone(),
                        counters: Counters::default(),
                        next: AtomicUsize::new(0),
                    })
                },
                |entry| Arc::clone(&entry.shared),
            );
            ClusterEntry {
                shared,
                members: BTreeMap::new(),
            }
        });
        let previous_members = previous
            .clusters
            .get(&route.key)
            .map(|entry| &entry.members);
        let backends = route
            .backends
            .iter()
            .map(|backend| {
                let counters = entry
                    .members
                    .entry(backend.member_id.clone())
                    .or_insert_with(|| {
                        previous_members
                            .and_then(|members| members.get(&backend.member_id))
                            .map_or_else(Arc::default, Arc::clone)
                    });
                let pool = self.pools.entry(backend.addr).or_insert_with(|| {
                    previous
                        .pools
                        .get(&backend.addr)
                        .map_or_else(|| Arc::new(Pool::new(backend.addr, threads)), Arc::clone)
                });
                BackendTarget {
                    member_id: backend.member_id.as_str().into(),
                    draining: backend.draining,
                    counters: Arc::clone(counters),
                    pool: Arc::clone(pool),
                }
            })
            .collect();
        ClusterTarget {
            shared: Arc::clone(&entry.shared),
            backends,
            response_timeout: route.response_timeout(),
        }
    }

    pub(crate) fn ports(&self) -> impl Iterator<Item = u16> + '_ {
        self.ports.iter().map(|(port, _)| *port)
    }

    /// The cluster a tcp port relays its connections to; `None` for a port that speaks HTTP.
    pub(crate) fn tcp_route(&self, port: u16) -> Option<&Arc<ClusterTarget>> {
        let index = self
            .ports
            .binary_search_by_key(&port, |(port, _)| *port)
            .ok()?;
        match &self.ports[index].1 {
            PortRoute::Tcp(target) => Some(target),
            PortRoute::Single { .. } | PortRoute::ByHost(_) => None,
        }
    }

    /// Picks the cluster for a request that arrived on `port` for `host`.
    pub(crate) fn route<'h>(
        &self,
        port: u16,
        host: Option<&'h str>,
    ) -> Result<Routed<'_>, Unrouted<'h>> {
        let index = self
            .ports
            .binary_search_by_key(&port, |(port, _)| *port)
            .map_err(|_| Unrouted::PortNotServed)?;
        match &self.ports[index].1 {
            PortRoute::Single {
                cluster,
                context_paths,
            } => {
                let context_path = match host {
                    Some(host) if !context_paths.is_empty() => by_host_name(context_paths, host),
                    _ => None,
                };
                Ok(Routed {
                    cluster,
                    context_path,
                })
            }
            // The port turned to tcp after this connection was accepted as HTTP.
            PortRoute::Tcp(_) => Err(Unrouted::PortNotServed),
            PortRoute::ByHost(hosts) => {
                let host = host.ok_or(Unrouted::NoHost)?;
                let target = by_host_name(hosts, host).ok_or(Unrouted::UnknownHost(host))?;
                Ok(Routed {
                    cluster: &target.cluster,
                    context_path: target.context_path.as_ref(),
                })
            }
        }
    }

    pub(crate) fn stats(&self, second: u64) -> LbStats {
        let clusters = self
            .clusters
            .values()
            .map(|entry| ClusterStats {
                key: entry.shared.key.clone(),
                requests: entry.shared.counters.snapshot(second),
                members: entry
                    .members
                    .iter()
                    .map(|(member_id, counters)| MemberStats {
                        member_id: member_id.clone(),
                        requests: counters.snapshot(second),
                    })
                    .collect(),
            })
            .collect();
        LbStats { clusters }
    }
}

fn by_host(
    port: u16,
    targets: Vec<(&ClusterRoute, Arc<ClusterTarget>)>,
    problems: &mut Vec<LbError>,
) -> HashMap<Box<str>, HostTarget> {
    let mut hosts: HashMap<Box<str>, HostTarget> = HashMap::new();
    for (route, cluster) in targets {
        if route.hosts.is_empty() {
            problems.push(LbError::NoHostNames {
                port,
                cluster: route.key.clone(),
            });
        }
        let mut context_paths = context_paths(route, problems);
        for host in &route.hosts {
            let host = normalize_host(host).to_ascii_lowercase();
            match hosts.get(host.as_str()) {
                Some(first) if first.cluster.shared.key != route.key => {
                    problems.push(LbError::DuplicateHost {
                        port,
                        host,
                        first: first.cluster.shared.key.clone(),
                        second: route.key.clone(),
                    })
                }
                Some(_) => {}
                None => {
                    let target = HostTarget {
                        cluster: Arc::clone(&cluster),
                        context_path: context_paths.remove(host.as_str()),
                    };
                    hosts.insert(host.into_boxed_str(), target);
                }
            }
        }
    }
    hosts
}

/// A map keyed by lower-case host name, looked up without case.
fn by_host_name<'m, V>(map: &'m HashMap<Box<str>, V>, host: &str) -> Option<&'m V> {
    if host.bytes().any(|byte| byte.is_ascii_uppercase()) {
        map.get(host.to_ascii_lowercase().as_str())
    } else {
        map.get(host)
    }
}

/// A cluster's context paths that can be used, as `/a/b` without a trailing slash, by
/// lower-case host name; the others are reported.
fn context_paths(route: &ClusterRoute, problems: &mut Vec<LbError>) -> ContextPaths {
    // `None` for a host whose context path is `/`, so a second one for it still conflicts.
    let mut paths: HashMap<Box<str>, Option<Arc<str>>> = HashMap::new();
    for (host, path) in &route.context_paths {
        let problem = |reason| LbError::ContextPath {
            cluster: route.key.clone(),
            host: host.clone(),
            path: path.clone(),
            reason,
        };
        let name = normalize_host(host).to_ascii_lowercase();
        if !route
            .hosts
            .iter()
            .any(|known| normalize_host(known).eq_ignore_ascii_case(&name))
        {
            problems.push(problem("is for a host the cluster does not answer to"));
            continue;
        }
        let trimmed = path.trim_matches('/');
        let prefix = format!("/{trimmed}");
        let prefix = match prefix.parse::<hyper::http::uri::PathAndQuery>() {
            _ if trimmed.is_empty() => None,
            Ok(parsed) if parsed.query().is_none() && parsed.as_str() == prefix => {
                Some(Arc::from(prefix))
            }
            _ => {
                problems.push(problem("is not a URL path"));
                continue;
            }
        };
        match paths.get(name.as_str()) {
            Some(first) if *first != prefix => {
                problems.push(problem("differs from another for the same host"))
            }
            Some(_) => {}
            None => {
                paths.insert(name.into_boxed_str(), prefix);
            }
        }
    }
    paths
        .into_iter()
        .filter_map(|(name, prefix)| Some((name, prefix?)))
        .collect()
}

/// The host name of a `Host` header or URI authority: without port and trailing dot.
pub(crate) fn normalize_host(authority: &str) -> &str {
    let host = match authority.strip_prefix('[') {
        Some(rest) => rest
            .find(']')
            .map_or(authority, |end| &authority[..end + 2]),
        None => authority.split(':').next().unwrap_or(authority),
    };
    host.strip_suffix('.').unwrap_or(host)
}

/// The order in which a request tries backends: round robin, each at most once, draining
/// ones never, and the ones suspect when the request began only after all others.
///
/// Passing over an unusable backend advances the cluster's counter again, so the others
/// share its requests evenly instead of its successor taking them all. Suspicion is read
/// once up front so a backend this request marks is not tried twice; it is tracked for
/// the first 128 backends, later ones always count as healthy.
pub(crate) fn attempt_order<'b>(
    next: &AtomicUsize,
    backends: &'b [BackendTarget],
    now_ms: u64,
) -> impl Iterator<Item = &'b BackendTarget> {
    let suspects = backends
        .iter()
        .take(128)
        .enumerate()
        .filter(|(_, backend)| backend.pool.is_suspect(now_ms))
        .fold(0u128, |mask, (index, _)| mask | 1 << index);
    let is_suspect = move |index: usize| index < 128 && suspects & (1 << index) != 0;
    let len = backends.len();
    let usable = move |index: usize| !backends[index].draining && !is_suspect(index);
    let mut start = next.fetch_add(1, Relaxed);
    for _ in 1..len {
        if usable(start % len) {
            break;
        }
        start = next.fetch_add(1, Relaxed);
    }
    let rotated = move || {
        (0..len)
            .map(move |offset| start.wrapping_add(offset) % len)
            .filter(|&index| !backends[index].draining)
    };
    let healthy = rotated().filter(move |&index| !is_suspect(index));
    let suspect = rotated().filter(move |&index| is_suspect(index));
    healthy.chain(suspect).map(|index| &backends[index])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::{Backend, ListenerRoute};

    fn check_host(authority: &str, expected: &str) {
        assert_eq!(
            normalize_host(authority),
            expected,
            "authority {authority:?}"
        );
    }

    #[test]
    fn host_without_port() {
        check_host("example.com", "example.com");
        check_host("example.com:8080", "example.com");
        check_host("Example.COM.:80", "Example.COM");
        check_host("127.0.0.1:80", "127.0.0.1");
        check_host("[::1]:8080", "[::1]");
        check_host("[::1]", "[::1]");
        check_host("[::1", "[::1");
        check_host("", "");
    }

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    fn cluster(alias: &str, hosts: &[&str], ports: &[u16]) -> ClusterRoute {
        ClusterRoute::new(
            ClusterKey::new("app", alias),
            hosts.iter().map(|host| host.to_string()).collect(),
            ports
                .iter()
                .map(|&port| Backend::new(format!("{alias}-{port}"), addr(port)))
                .collect(),
        )
    }

    fn table(listeners: Vec<(u16, Vec<ClusterRoute>)>) -> RouteTable {
        RouteTable {
            listeners: listeners
                .into_iter()
                .map(|(port, clusters)| (port, ListenerRoute::http(clusters)))
                .collect(),
        }
    }

    /// The alias and context path a request is routed to, or why it is not.
    type Expected<'a> = Result<(&'a str, Option<&'a str>), Unrouted<'a>>;

    /// Routes `(port, host)` and checks the alias and context path picked, or the reason
    /// none was.
    fn check_route(compiled: &CompiledTable, port: u16, host: Option<&str>, expected: Expected) {
        let routed = compiled.route(port, host).map(|routed| {
            (
                routed.cluster.shared.key.alias.as_str(),
                routed.context_path.map(|path| &**path),
            )
        });
        assert_eq!(routed, expected, "port {port}, host {host:?}");
    }

    #[test]
    fn routes_by_port_then_host() {
        let routes = table(vec![
            (
                80,
                vec![
                    cluster("web", &["web.example.com", "WWW.example.com"], &[1]),
                    cluster("api", &["api.example.com"], &[2]),
                ],
            ),
            (8080, vec![cluster("admin", &[], &[3])]),
            (9000, vec![]),
        ]);
        let (compiled, problems) = CompiledTable::compile(&routes, &CompiledTable::default(), 1);
        assert!(problems.is_empty(), "{problems:?}");
        check_route(&compiled, 80, Some("web.example.com"), Ok(("web", None)));
        check_route(&compiled, 80, Some("www.Example.com"), Ok(("web", None)));
        check_route(&compiled, 80, Some("api.example.com"), Ok(("api", None)));
        check_route(
            &compiled,
            80,
            Some("other.example.com"),
            Err(Unrouted::UnknownHost("other.example.com")),
        );
        check_route(&compiled, 80, None, Err(Unrouted::NoHost));
        check_route(&compiled, 8080, Some("anything"), Ok(("admin", None)));
        check_route(&compiled, 8080, None, Ok(("admin", None)));
        check_route(
            &compiled,
            9000,
            Some("web.example.com"),
            Err(Unrouted::UnknownHost("web.example.com")),
        );
        check_route(
            &compiled,
            81,
            Some("web.example.com"),
            Err(Unrouted::PortNotServed),
        );
        assert_eq!(compiled.ports().collect::<Vec<_>>(), [80, 8080, 9000]);
    }

    #[test]
    fn reports_conflicts_and_keeps_the_first_claim() {
        let routes = table(vec![(
            80,
            vec![
                cluster("web", &["shared.example.com"], &[1]),
                cluster("api", &["Shared.example.com"], &[2]),
                cluster("hidden", &[], &[3]),
            ],
        )]);
        let (compiled, problems) = CompiledTable::compile(&routes, &CompiledTable::default(), 1);
        let messages: Vec<String> = problems.iter().map(ToString::to_string).collect();
        assert_eq!(
            messages,
            [
                "port 80: host shared.example.com is claimed by both app/web and app/api",
                "port 80: cluster app/hidden shares the port with other clusters but answers to no host name",
            ]
        );
        check_route(&compiled, 80, Some("shared.example.com"), Ok(("web", None)));
    }

    #[test]
    fn context_paths_go_with_their_host_names() {
        let with_paths = |mut route: ClusterRoute, paths: &[(&str, &str)]| {
            route.context_paths = paths
                .iter()
                .map(|(host, path)| (host.to_string(), path.to_string()))
                .collect();
            route
        };
        let web = cluster(
            "web",
            &["shop.example.com", "WWW.example.com", "web.example.com"],
            &[1],
        );
        let api = cluster("api", &["api.example.com"], &[2]);
        let routes = table(vec![
            (
                80,
                vec![
                    with_paths(
                        web.clone(),
                        &[
                            ("shop.example.com", "/abc/app/"),
                            ("www.example.com", "abc"),
                            ("WWW.example.com.", "/abc/"),
                            ("web.example.com", "/"),
                            ("web.example.com.", "/other"),
                        ],
                    ),
                    with_paths(
                        api.clone(),
                        &[("api.example.com", "/a b"), ("other.example.com", "/x")],
                    ),
                ],
            ),
            (8080, vec![with_paths(web, &[("shop.example.com", "/abc")])]),
        ]);
        let (compiled, problems) = CompiledTable::compile(&routes, &CompiledTable::default(), 1);
        let messages: Vec<String> = problems.iter().map(ToString::to_string).collect();
        assert_eq!(
            messages,
            [
                "cluster app/web: the context path \"/other\" for host web.example.com. differs from another for the same host, so it is not used",
                "cluster app/api: the context path \"/a b\" for host api.example.com is not a URL path, so it is not used",
                "cluster app/api: the context path \"/x\" for host other.example.com is for a host the cluster does not answer to, so it is not used",
            ]
        );
        let cases: [(u16, Option<&str>, Expected); 8] = [
            (80, Some("shop.example.com"), Ok(("web", Some("/abc/app")))),
            (80, Some("Shop.Example.com"), Ok(("web", Some("/abc/app")))),
            (80, Some("www.example.com"), Ok(("web", Some("/abc")))),
            (80, Some("web.example.com"), Ok(("web", None))),
            (80, Some("api.example.com"), Ok(("api", None))),
            (8080, Some("shop.example.com"), Ok(("web", Some("/abc")))),
            (8080, Some("web.example.com"), Ok(("web", None))),
            (8080, None, Ok(("web", None))),
        ];
        for (port, host, expected) in cases {
            check_route(&compiled, port, host, expected);
        }
    }

    #[test]
    fn counters_and_pools_survive_a_publish() {
        let first = table(vec![(80, vec![cluster("web", &[], &[1, 2])])]);
        let (old, _) = CompiledTable::compile(&first, &CompiledTable::default(), 1);
        old.clusters[&ClusterKey::new("app", "web")]
            .shared
            .counters
            .begin(0);
        let second = table(vec![
            (80, vec![cluster("web", &[], &[2, 3])]),
            (81, vec![cluster("web", &[], &[2])]),
        ]);
        let (new, _) = CompiledTable::compile(&second, &old, 1);
        let stats = new.stats(0);
        let web = stats
            .cluster(&ClusterKey::new("app", "web"))
            .expect("cluster web");
        assert_eq!(web.requests.total, 1);
        let members: Vec<&str> = web
            .members
            .iter()
            .map(|member| member.member_id.as_str())
            .collect();
        assert_eq!(members, ["web-2", "web-3"]);
        assert!(Arc::ptr_eq(&old.pools[&addr(2)], &new.pools[&addr(2)]));
        assert_eq!(new.pools.len(), 2);
    }

    fn targets(backends: &[(u16, bool, bool)], now_ms: u64) -> Vec<BackendTarget> {
        backends
            .iter()
            .map(|&(port, draining, suspect)| {
                let pool = Arc::new(Pool::new(addr(port), 1));
                if suspect {
                    pool.mark_suspect(now_ms);
                }
                BackendTarget {
                    member_id: port.to_string().into(),
                    draining,
                    counters: Arc::default(),
                    pool,
                }
            })
            .collect()
    }

    /// Checks which backends (by port, draining, suspect) a request tries when the cluster's
    /// counter stands at `next`.
    fn check_order(backends: &[(u16, bool, bool)], next: usize, expected: &[u16]) {
        let now_ms = 10_000;
        let targets = targets(backends, now_ms);
        let order: Vec<u16> = attempt_order(&AtomicUsize::new(next), &targets, now_ms)
            .map(|backend| backend.pool.addr().port())
            .collect();
        assert_eq!(order, expected, "backends {backends:?}, next {next}");
    }

    #[test]
    fn attempt_order_rotates_and_skips() {
        let healthy = (1, false, false);
        check_order(&[], 0, &[]);
        check_order(
            &[healthy, (2, false, false), (3, false, false)],
            0,
            &[1, 2, 3],
        );
        check_order(
            &[healthy, (2, false, false), (3, false, false)],
            4,
            &[2, 3, 1],
        );
        check_order(&[healthy, (2, true, false), (3, false, false)], 1, &[3, 1]);
        check_order(
            &[(1, false, true), (2, false, false), (3, false, false)],
            0,
            &[2, 3, 1],
        );
        check_order(
            &[(1, false, true), (2, true, true), (3, false, true)],
            1,
            &[1, 3],
        );
        check_order(&[(1, true, false)], 0, &[]);
    }

    #[test]
    fn skipped_backends_share_their_requests_evenly() {
        let now_ms = 10_000;
        let targets = targets(
            &[
                (1, false, false),
                (2, false, true),
                (3, false, false),
                (4, true, false),
            ],
            now_ms,
        );
        let next = AtomicUsize::new(0);
        let mut firsts = BTreeMap::new();
        for _ in 0..300 {
            let first = attempt_order(&next, &targets, now_ms)
                .next()
                .expect("a usable backend");
            *firsts.entry(first.pool.addr().port()).or_insert(0) += 1;
        }
        assert_eq!(firsts, BTreeMap::from([(1, 150), (3, 150)]));
    }

    #[test]
    fn a_backend_marked_during_the_request_is_not_tried_twice() {
        let now_ms = 10_000;
        let targets = targets(&[(1, false, false), (2, false, true)], now_ms);
        let tried: Vec<u16> = attempt_order(&AtomicUsize::new(0), &targets, now_ms)
            .inspect(|backend| backend.pool.mark_suspect(now_ms))
            .map(|backend| backend.pool.addr().port())
            .collect();
        assert_eq!(tried, [1, 2]);
    }
}
