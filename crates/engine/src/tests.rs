//! Deterministic scenarios: a fake runtime answers the engine's actions under a manual clock.

use std::collections::BTreeMap;

use cairn_model::{
    AppSpec, AutoscalingPolicy, Cartridge, ClusterSpec, ComponentRef, ComponentSpec, GroupSpec,
    HealthCheck, NetworkPartitionPlacement, PartitionAlgorithm, PartitionPlacement, Probe,
    TerminationBehaviour,
};

use crate::{Action, Engine, EngineConfig, MemberStatus, Millis, Observation, Output, Status};

fn cluster(alias: &str, min: u32) -> ComponentSpec {
    ComponentSpec::Cluster(ClusterSpec {
        alias: alias.into(),
        cartridge: Cartridge {
            kind: "workload".into(),
            host: Some("example.org".into()),
            category: None,
            provider: None,
            display_name: None,
            description: None,
            version: None,
            multi_tenant: false,
            port_mappings: vec![cairn_model::PortMapping {
                name: "http".into(),
                protocol: cairn_model::Protocol::Http,
                port: 8080,
                proxy_port: Some(8280),
            }],
            command: None,
            image: None,
            env: BTreeMap::new(),
            health: HealthCheck {
                probe: Probe::Process,
                interval_ms: 1000,
                timeout_ms: 1000,
                failure_threshold: 3,
            },
            properties: BTreeMap::new(),
        },
        min,
        max: min + 2,
        autoscaling: AutoscalingPolicy {
            id: "default".into(),
            requests_in_flight: None,
            memory_consumption: None,
            load_average: None,
            timing: Default::default(),
        },
        deployment_policy: "dp".into(),
        placements: vec![NetworkPartitionPlacement {
            id: "np1".into(),
            algorithm: PartitionAlgorithm::RoundRobin,
            partitions: vec![
                PartitionPlacement {
                    id: "p1".into(),
                    max: 10,
                },
                PartitionPlacement {
                    id: "p2".into(),
                    max: 10,
                },
            ],
        }],
    })
}

fn group(
    alias: &str,
    termination: TerminationBehaviour,
    children: Vec<ComponentSpec>,
    order: &[&str],
) -> GroupSpec {
    let refs = |names: &[&str]| -> Vec<ComponentRef> {
        names
            .iter()
            .map(|n| {
                children
                    .iter()
                    .map(ComponentSpec::reference)
                    .find(|r| r.alias() == *n)
                    .expect("test alias exists")
            })
            .collect()
    };
    let startup_orders = if order.is_empty() {
        vec![]
    } else {
        vec![refs(order)]
    };
    GroupSpec {
        alias: alias.into(),
        name: alias.into(),
        min_instances: 1,
        max_instances: 1,
        group_scaling_enabled: false,
        termination,
        children,
        startup_orders,
        scaling_dependents: vec![],
    }
}

/// The application as one group of independent components, terminate-none.
fn flat(children: Vec<ComponentSpec>) -> GroupSpec {
    group("app", TerminationBehaviour::TerminateNone, children, &[])
}

fn app(root: GroupSpec) -> AppSpec {
    AppSpec {
        id: "app".into(),
        application_policy: "ap".into(),
        network_partition_groups: vec![vec!["np1".into()]],
        root,
        domain_mappings: BTreeMap::new(),
    }
}

/// Drives the engine like the control plane would, with a runtime that obeys instantly.
struct Sim {
    engine: Engine,
    now: u64,
    /// Members started and not yet stopped, in start order.
    running: Vec<String>,
    started: Vec<String>,
    stopped: Vec<String>,
    /// When false, started members stay Starting until `heal` is called.
    auto_healthy: bool,
    /// Scaling decisions seen, with their subject.
    decisions: Vec<(String, crate::autoscale::Decision)>,
}

impl Sim {
    fn deploy(spec: AppSpec) -> Sim {
        Sim::deploy_with(spec, true)
    }

    fn deploy_with(spec: AppSpec, auto_healthy: bool) -> Sim {
        let mut sim = Sim {
            engine: Engine::new(EngineConfig::default()),
            now: 1_000,
            running: vec![],
            started: vec![],
            stopped: vec![],
            auto_healthy,
            decisions: vec![],
        };
        let out = sim.engine.deploy(spec, Millis(sim.now)).expect("deploys");
        sim.run(out);
        sim
    }

    fn run(&mut self, out: Output) {
        let mut queue: Vec<Observation> = Vec::new();
        for action in out.actions {
            match action {
                Action::StartMember(s) => {
                    self.started.push(s.member_id.clone());
                    self.running.push(s.member_id.clone());
                    queue.push(Observation::Started {
                        member_id: s.member_id.clone(),
                        pid: 1,
                        host: "localhost".into(),
                        ports: BTreeMap::from([("http".into(), "127.0.0.1:1".into())]),
                    });
                    if self.auto_healthy {
                        queue.push(Observation::Healthy {
                            member_id: s.member_id,
                        });
                    }
                }
                Action::StopMember(s) => {
                    if let Some(i) = self.running.iter().position(|m| *m == s.member_id) {
                        self.running.remove(i);
                        self.stopped.push(s.member_id.clone());
                        queue.push(Observation::Exited {
                            member_id: s.member_id,
                            reason: "stopped".into(),
                            killed: false,
                        });
                    }
                }
            }
        }
        for obs in queue {
            self.now += 10;
            let out = self.engine.observe(obs, Millis(self.now));
            self.run(out);
        }
    }

    fn kill(&mut self, member: &str) {
        self.running.retain(|m| m != member);
        self.now += 10;
        let out = self.engine.observe(
            Observation::Exited {
                member_id: member.into(),
                reason: "killed".into(),
                killed: true,
            },
            Millis(self.now),
        );
        self.run(out);
    }

    fn running_in(&self, alias: &str) -> Vec<String> {
        self.running
            .iter()
            .filter(|m| m.split('.').nth(1) == Some(alias))
            .cloned()
            .collect()
    }

    fn status(&self) -> Status {
        self.engine.view("app").expect("deployed").status
    }
}

#[test]
fn startup_order_holds_and_independent_branches_start_together() {
    let root = group(
        "app",
        TerminationBehaviour::TerminateNone,
        vec![cluster("db", 1), cluster("web", 2), cluster("cache", 1)],
        &["db", "web"],
    );
    let mut sim = Sim::deploy(app(root));
    assert_eq!(sim.status(), Status::Active);
    let order: Vec<&str> = sim
        .started
        .iter()
        .map(|m| m.split('.').nth(1).unwrap_or(""))
        .collect();
    assert_eq!(order, ["db", "cache", "web", "web"]);
    // web waited for db: with a runtime that never reports healthy, web is not created at all.
    let root = group(
        "app",
        TerminationBehaviour::TerminateNone,
        vec![cluster("db", 1), cluster("web", 1)],
        &["db", "web"],
    );
    sim = Sim::deploy_with(app(root), false);
    assert_eq!(sim.started.len(), 1);
    assert_eq!(sim.status(), Status::Created);
}

/// Kills `victim`'s member in group `g` = {a, b after a, c}, beside `outside`, and checks which
/// other members were stopped for it.
fn check_termination(termination: TerminationBehaviour, victim: &str, stopped: &[&str]) {
    let inner = group(
        "g",
        termination,
        vec![cluster("a", 1), cluster("b", 1), cluster("c", 1)],
        &["a", "b"],
    );
    let root = flat(vec![ComponentSpec::Group(inner), cluster("outside", 1)]);
    let mut sim = Sim::deploy(app(root));
    let before: Vec<String> = sim.running.clone();
    let dead = sim.running_in(victim)[0].clone();
    sim.kill(&dead);
    let mut restarted: Vec<&str> = sim
        .stopped
        .iter()
        .filter(|m| before.contains(m))
        .filter_map(|m| m.split('.').nth(1))
        .collect();
    restarted.sort_unstable();
    assert_eq!(
        restarted, stopped,
        "{termination:?}: stopped {:?}",
        sim.stopped
    );
    for alias in ["a", "b", "c", "outside"] {
        assert_eq!(
            sim.running_in(alias).len(),
            1,
            "{termination:?}: {alias} runs again"
        );
    }
    assert_eq!(sim.status(), Status::Active);
}

#[test]
fn termination_behaviours_decide_who_else_restarts() {
    check_termination(TerminationBehaviour::TerminateNone, "a", &[]);
    check_termination(TerminationBehaviour::TerminateDependents, "a", &["b"]);
    check_termination(TerminationBehaviour::TerminateDependents, "b", &[]);
    check_termination(TerminationBehaviour::TerminateAll, "b", &["a", "c"]);
}

#[test]
fn undeploy_stops_in_reverse_dependency_order() {
    let root = group(
        "app",
        TerminationBehaviour::TerminateNone,
        vec![cluster("db", 1), cluster("web", 1)],
        &["db", "web"],
    );
    let mut sim = Sim::deploy(app(root));
    let out = sim
        .engine
        .undeploy("app", Millis(sim.now))
        .expect("deployed");
    let first: Vec<String> = out
        .actions
        .iter()
        .filter_map(|a| match a {
            Action::StopMember(s) => Some(s.cluster.clone()),
            Action::StartMember(_) => None,
        })
        .collect();
    assert_eq!(first, ["web"], "db waits until web is gone");
    sim.run(out);
    assert!(sim.running.is_empty());
    assert!(!sim.engine.is_deployed("app"));
}

#[test]
fn members_spread_over_partitions_and_time_out_when_never_healthy() {
    let root = flat(vec![cluster("web", 3)]);
    let mut sim = Sim::deploy(app(root));
    let view = sim.engine.view("app").expect("deployed");
    let partitions: Vec<&str> = view.clusters[0]
        .members
        .iter()
        .map(|m| m.partition.as_str())
        .collect();
    assert_eq!(partitions, ["p1", "p2", "p1"]);
    assert!(
        view.clusters[0]
            .members
            .iter()
            .all(|m| m.status == MemberStatus::Active)
    );

    sim.auto_healthy = false;
    let victim = sim.running_in("web")[0].clone();
    sim.kill(&victim);
    let replacement = sim.running_in("web").last().cloned().expect("replaced");
    let out = sim.engine.tick(Millis(sim.now + 61_000));
    assert!(
        out.actions
            .iter()
            .any(|a| matches!(a, Action::StopMember(s) if s.member_id == replacement))
    );
}

#[test]
fn rfc3339_formats_utc_with_milliseconds() {
    assert_eq!(crate::view::rfc3339(Millis(0)), "1970-01-01T00:00:00.000Z");
    assert_eq!(
        crate::view::rfc3339(Millis(1_795_307_886_123)),
        "2026-11-22T00:38:06.123Z"
    );
    assert_eq!(
        crate::view::rfc3339(Millis(951_782_400_000)),
        "2000-02-29T00:00:00.000Z"
    );
}

/// A cluster with a requests-in-flight threshold, placeable in np1 and np2.
fn scaled(alias: &str, min: u32, max: u32, threshold: f64) -> ComponentSpec {
    let ComponentSpec::Cluster(mut c) = cluster(alias, min) else {
        unreachable!("cluster() builds a cluster")
    };
    c.max = max;
    c.autoscaling.requests_in_flight = Some(threshold);
    c.autoscaling.timing.prediction_horizon_ms = 0;
    c.autoscaling.timing.scale_down_stabilization_ms = 20_000;
    let mut second = c.placements[0].clone();
    second.id = "np2".into();
    c.placements.push(second);
    ComponentSpec::Cluster(c)
}

impl Sim {
    /// Spreads each cluster's total requests in flight evenly over its running members, as the
    /// load balancer would, then lets a second pass.
    fn load(&mut self, loads: &[(&str, f64)]) {
        self.now += 1_000;
        let observations: Vec<Observation> = loads
            .iter()
            .flat_map(|(alias, total)| {
                let running = self.running_in(alias);
                let share = total / running.len().max(1) as f64;
                running.into_iter().map(move |member_id| Observation::Load {
                    member_id,
                    in_flight: Some(share),
                    cpu_percent: None,
                    memory_percent: None,
                })
            })
            .collect();
        let out = self.engine.observe_batch(observations, Millis(self.now));
        self.decisions.extend(
            out.events
                .iter()
                .filter_map(|e| e.decision.clone().map(|d| (e.subject.clone(), d))),
        );
        self.run(out);
    }

    fn partitions_of(&self, alias: &str) -> Vec<String> {
        let view = self.engine.view("app").expect("deployed");
        let mut found = Vec::new();
        fn walk(
            groups: &[crate::view::GroupView],
            clusters: &[crate::view::ClusterView],
            alias: &str,
            found: &mut Vec<String>,
        ) {
            for c in clusters.iter().filter(|c| c.alias == alias) {
                found.extend(c.members.iter().map(|m| m.network_partition.clone()));
            }
            for g in groups {
                for i in &g.instances {
                    walk(&i.groups, &i.clusters, alias, found);
                }
            }
        }
        walk(&view.groups, &view.clusters, alias, &mut found);
        found.sort();
        found
    }
}

#[test]
fn scaling_dependents_scale_by_the_largest_factor() {
    let mut root = flat(vec![scaled("web", 1, 4, 10.0), scaled("api", 1, 4, 10.0)]);
    root.scaling_dependents = vec![vec![
        ComponentRef::Cartridge("web".into()),
        ComponentRef::Cartridge("api".into()),
    ]];
    let mut sim = Sim::deploy(app(root));
    for _ in 0..3 {
        sim.load(&[("web", 30.0), ("api", 0.0)]);
    }
    assert_eq!(sim.running_in("web").len(), 3);
    assert_eq!(
        sim.running_in("api").len(),
        3,
        "api follows web's factor: {:?}",
        sim.decisions
    );
    assert!(
        sim.decisions
            .iter()
            .any(|(s, d)| s == "cluster api" && d.reason == crate::autoscale::Reason::Dependency)
    );
}

#[test]
fn a_group_instance_is_added_when_a_cluster_is_at_max_and_removed_when_idle() {
    let mut inner = group(
        "g",
        TerminationBehaviour::TerminateNone,
        vec![scaled("a", 1, 2, 10.0)],
        &[],
    );
    inner.group_scaling_enabled = true;
    inner.max_instances = 2;
    let root = flat(vec![ComponentSpec::Group(inner)]);
    let mut sim = Sim::deploy(app(root));
    for _ in 0..4 {
        sim.load(&[("a", 100.0)]);
    }
    let view = sim.engine.view("app").expect("deployed");
    assert_eq!(view.groups[0].instances.len(), 2, "{:?}", sim.decisions);
    assert!(
        sim.decisions.iter().any(|(s, d)| s == "group g"
            && d.reason == crate::autoscale::Reason::Group
            && d.to == 2)
    );
    for _ in 0..60 {
        sim.load(&[("a", 0.0)]);
    }
    let view = sim.engine.view("app").expect("deployed");
    assert_eq!(view.groups[0].instances.len(), 1, "{:?}", sim.decisions);
    assert_eq!(sim.running_in("a").len(), 1);
}

#[test]
fn group_instance_ids_are_unique_across_parent_instances() {
    let inner = group(
        "inner",
        TerminationBehaviour::TerminateNone,
        vec![cluster("a", 1)],
        &[],
    );
    let mut outer = group(
        "outer",
        TerminationBehaviour::TerminateNone,
        vec![ComponentSpec::Group(inner)],
        &[],
    );
    outer.min_instances = 2;
    let sim = Sim::deploy(app(flat(vec![ComponentSpec::Group(outer)])));
    let view = sim.engine.view("app").expect("deployed");
    let outer = &view.groups[0];
    let outer_ids: Vec<&str> = outer.instances.iter().map(|i| i.id.as_str()).collect();
    let inner_ids: Vec<&str> = outer
        .instances
        .iter()
        .flat_map(|i| &i.groups[0].instances)
        .map(|i| i.id.as_str())
        .collect();
    assert_eq!(outer_ids, ["outer-1", "outer-2"]);
    assert_eq!(inner_ids, ["inner-1", "inner-2"]);

    // State stored without the numbers still numbers new instances past the live ones.
    let mut state = sim.engine.state().clone();
    for app in state.apps.values_mut() {
        app.group_instance_numbers.clear();
    }
    let restored = Engine::restore(EngineConfig::default(), state);
    let numbers = &restored.state().apps["app"].group_instance_numbers;
    assert_eq!(numbers.get("outer"), Some(&2));
    assert_eq!(numbers.get("inner"), Some(&2));
}

#[test]
fn domain_mappings_change_the_routes_of_a_deployed_application() {
    let mut sim = Sim::deploy(app(flat(vec![cluster("web", 1)])));
    let web_route = |sim: &Sim| -> (Vec<String>, BTreeMap<String, String>) {
        let routes = sim.engine.routes();
        routes
            .iter()
            .find(|r| r.alias == "web")
            .map(|r| (r.hosts.clone(), r.context_paths.clone()))
            .unwrap_or_default()
    };
    assert!(!web_route(&sim).0.contains(&"shop.example.com".to_string()));
    let mapping = cairn_model::DomainMapping {
        cartridge_alias: "web".into(),
        domain_name: "shop.example.com".into(),
        context_path: Some("/shop".into()),
    };
    let mappings = BTreeMap::from([("web".to_string(), vec![mapping])]);
    let out = sim
        .engine
        .set_domain_mappings("app", mappings.clone(), Millis(sim.now))
        .expect("deployed");
    assert_eq!(out.events.len(), 1);
    let (hosts, context_paths) = web_route(&sim);
    assert!(hosts.contains(&"shop.example.com".to_string()));
    assert_eq!(
        context_paths,
        BTreeMap::from([("shop.example.com".to_string(), "/shop".to_string())])
    );
    let again = sim
        .engine
        .set_domain_mappings("app", mappings, Millis(sim.now))
        .expect("deployed");
    assert!(
        again.events.is_empty(),
        "nothing changed: {:?}",
        again.events
    );
    assert!(
        sim.engine
            .set_domain_mappings("other", BTreeMap::new(), Millis(sim.now))
            .is_err()
    );
}

#[test]
fn the_application_bursts_into_the_next_partition_group_and_contracts_back() {
    let root = flat(vec![scaled("web", 1, 2, 10.0)]);
    let mut spec = app(root);
    spec.network_partition_groups = vec![vec!["np1".into()], vec!["np2".into()]];
    let mut sim = Sim::deploy(spec);
    for _ in 0..4 {
        sim.load(&[("web", 50.0)]);
    }
    assert_eq!(
        sim.partitions_of("web"),
        ["np1", "np1", "np2", "np2"],
        "{:?}",
        sim.decisions
    );
    assert!(
        sim.decisions
            .iter()
            .any(|(_, d)| d.reason == crate::autoscale::Reason::Burst && d.to == 2)
    );
    for _ in 0..60 {
        sim.load(&[("web", 0.0)]);
    }
    assert_eq!(sim.partitions_of("web"), ["np1"], "{:?}", sim.decisions);
}

#[test]
fn a_member_that_stops_reporting_is_faulted_and_missing_figures_do_not_scale() {
    let root = flat(vec![scaled("web", 2, 4, 10.0)]);
    let mut sim = Sim::deploy(app(root));
    let members = sim.running_in("web");
    // One member reports usage once and then nothing; the other never reports at all.
    sim.now += 1_000;
    let out = sim.engine.observe(
        Observation::Load {
            member_id: members[0].clone(),
            in_flight: None,
            cpu_percent: Some(1.0),
            memory_percent: Some(1.0),
        },
        Millis(sim.now),
    );
    sim.run(out);
    for _ in 0..20 {
        sim.now += 1_000;
        let out = sim.engine.tick(Millis(sim.now));
        sim.run(out);
    }
    assert!(
        sim.stopped.contains(&members[0]),
        "the quiet member was faulted"
    );
    assert!(
        !sim.stopped.contains(&members[1]),
        "a member that never reported is not faulted for it"
    );
    assert_eq!(
        sim.running_in("web").len(),
        2,
        "replaced, and no scaling on missing figures"
    );
}

#[test]
fn a_member_started_after_it_was_stopped_is_stopped_again() {
    let root = flat(vec![cluster("web", 1)]);
    let mut engine = Engine::new(EngineConfig::default());
    let out = engine.deploy(app(root), Millis(1_000)).expect("deploys");
    let Some(Action::StartMember(start)) = out.actions.first() else {
        panic!("a start: {out:?}")
    };
    let member = start.member_id.clone();
    let out = engine.undeploy("app", Millis(1_010)).expect("deployed");
    assert!(
        out.actions
            .iter()
            .any(|a| matches!(a, Action::StopMember(s) if s.member_id == member))
    );
    // The runtime finished starting it only now: the earlier stop may have found nothing.
    let out = engine.observe(
        Observation::Started {
            member_id: member.clone(),
            pid: 7,
            host: "h".into(),
            ports: BTreeMap::new(),
        },
        Millis(1_020),
    );
    assert!(
        out.actions
            .iter()
            .any(|a| matches!(a, Action::StopMember(s) if s.member_id == member)),
        "{out:?}"
    );
}

/// Runs a one-cluster application for `seconds` of 10 ms ticks; each member, once started,
/// dies `lifetime_ms` later (by SIGKILL if `killed`), after becoming Active if `healthy`.
/// Returns when each member was started.
fn starts_of_members_that_die(
    seconds: u64,
    healthy: bool,
    lifetime_ms: u64,
    killed: bool,
) -> Vec<Millis> {
    let root = flat(vec![cluster("web", 1)]);
    let mut engine = Engine::new(EngineConfig::default());
    let mut out = engine.deploy(app(root), Millis(0)).expect("deploys");
    let mut starts = Vec::new();
    let mut dying: Vec<(Millis, String)> = Vec::new();
    for t in 1..=seconds * 100 {
        let now = Millis(t * 10);
        for action in std::mem::take(&mut out.actions) {
            if let Action::StartMember(s) = action {
                starts.push(now);
                let started = Observation::Started {
                    member_id: s.member_id.clone(),
                    pid: 1,
                    host: "127.0.0.1".into(),
                    ports: BTreeMap::new(),
                };
                out.actions.extend(engine.observe(started, now).actions);
                if healthy {
                    let member_id = s.member_id.clone();
                    let up = engine.observe(Observation::Healthy { member_id }, now);
                    out.actions.extend(up.actions);
                }
                dying.push((Millis(now.0 + lifetime_ms), s.member_id));
            }
        }
        let (due, later) = dying.into_iter().partition(|(at, _)| *at <= now);
        dying = later;
        for (_, member_id) in due {
            let reason = "exit 1".into();
            let exited = Observation::Exited {
                member_id,
                reason,
                killed,
            };
            let died = engine.observe(exited, now);
            out.actions.extend(died.actions);
        }
        out.actions.extend(engine.tick(now).actions);
    }
    starts
}

#[test]
fn members_that_fail_to_start_are_replaced_with_backoff() {
    // (becomes Active, lives for ms, ended by SIGKILL, at most this many starts in ten seconds)
    // A member killed before it became Active (the OOM killer at start) failed to start too.
    let cases = [
        (false, 0, false, 12),
        (true, 0, false, 12),
        (true, 500, false, 14),
        (false, 0, true, 12),
    ];
    for (healthy, lifetime_ms, killed, most) in cases {
        let starts = starts_of_members_that_die(10, healthy, lifetime_ms, killed);
        let case = format!("healthy {healthy}, lifetime {lifetime_ms} ms, killed {killed}");
        assert!(
            (2..=most).contains(&starts.len()),
            "{case}: backed off, not respawned in a loop: {} starts",
            starts.len()
        );
        let gaps: Vec<u64> = starts.windows(2).map(|w| w[1].0 - w[0].0).collect();
        assert!(
            gaps.windows(2).all(|g| g[1] >= g[0]),
            "{case}: waits grow: {gaps:?}"
        );
        assert!(
            gaps[0] <= 20 + lifetime_ms,
            "{case}: first replaced at once: {gaps:?}"
        );
    }
}

#[test]
fn members_that_served_for_long_or_were_killed_are_replaced_at_once_every_time() {
    // (run for s, lives for ms, killed)
    let cases = [(40, 12_000, false), (10, 0, true), (10, 300, true)];
    for (seconds, lifetime_ms, killed) in cases {
        let starts = starts_of_members_that_die(seconds, true, lifetime_ms, killed);
        let gaps: Vec<u64> = starts.windows(2).map(|w| w[1].0 - w[0].0).collect();
        assert!(
            gaps.len() >= 2 && gaps.iter().all(|g| *g <= lifetime_ms + 20),
            "lifetime {lifetime_ms} ms, killed {killed}: no backoff: {gaps:?}"
        );
    }
}

#[test]
fn routes_carry_active_members_hosts_and_the_response_timeout() {
    let ComponentSpec::Cluster(mut web) = cluster("web", 2) else {
        unreachable!("cluster() builds a cluster")
    };
    web.cartridge
        .properties
        .insert("response_timeout_ms".into(), "1500".into());
    let sim = Sim::deploy(app(flat(vec![ComponentSpec::Cluster(web)])));
    let routes = sim.engine.routes();
    assert_eq!(routes.len(), 1);
    let route = &routes[0];
    assert_eq!(route.hosts, ["app.web.example.org"]);
    assert_eq!(route.members.len(), 2);
    assert_eq!(route.response_timeout_ms, Some(1500));
}

#[test]
fn members_still_starting_get_a_whole_start_timeout_after_a_restart() {
    let sim = Sim::deploy_with(app(flat(vec![cluster("web", 1)])), false);
    let member = sim.running_in("web")[0].clone();
    let starting_stopped = |out: &Output| {
        out.actions
            .iter()
            .any(|a| matches!(a, Action::StopMember(s) if s.member_id == member))
    };
    // The platform was down for two minutes while the member was starting.
    let back = sim.now + 120_000;
    let mut engine = Engine::restore(EngineConfig::default(), sim.engine.state().clone());
    engine.resume(Millis(back));
    assert!(!starting_stopped(&engine.tick(Millis(back + 1_000))));
    assert!(starting_stopped(&engine.tick(Millis(back + 61_000))));
}
