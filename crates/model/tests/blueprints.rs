//! The example blueprints parse, resolve, and mean what their comments say.

use std::path::Path;

use cairn_model::*;

fn example(name: &str) -> (Bundle, AppSpec) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
    let bundle = parse_yaml(name, &text).unwrap_or_else(|e| panic!("{e}"));
    assert!(validate_bundle(&bundle).0.is_empty());
    let mut catalog = Catalog::default();
    catalog.add_bundle(bundle.clone());
    let app = bundle.applications[0].id.clone();
    let policy = bundle.deploy_with.clone().expect("deploy_with");
    let spec = resolve(&catalog, &app, &policy).unwrap_or_else(|e| panic!("{e}"));
    (bundle, spec)
}

fn cluster<'a>(group: &'a GroupSpec, alias: &str) -> Option<&'a ClusterSpec> {
    group.children.iter().find_map(|child| match child {
        ComponentSpec::Cluster(c) if c.alias == alias => Some(c),
        ComponentSpec::Cluster(_) => None,
        ComponentSpec::Group(g) => cluster(g, alias),
    })
}

#[test]
fn minimal_blueprint_gets_every_default() {
    let (bundle, spec) = example("minimal.yaml");
    assert_eq!(bundle.deploy_with.as_deref(), Some("default"));
    assert_eq!(bundle.network_partitions[0].id, "local");
    assert_eq!(bundle.network_partitions[0].partitions[0].id, "local-1");
    assert_eq!(
        spec.network_partition_groups,
        vec![vec!["local".to_string()]]
    );
    let hello = cluster(&spec.root, "hello").expect("hello cluster");
    assert_eq!(hello.cartridge.command, None);
    assert_eq!(hello.cartridge.port_mappings[0].name, "http-8000");
    assert_eq!(hello.cartridge.port_mappings[0].proxy_port, Some(8080));
    assert_eq!(
        hello.cartridge.health.probe,
        Probe::Http {
            port: "http-8000".into(),
            path: "/healthz".into()
        }
    );
    assert_eq!((hello.min, hello.max), (1, 1));
    assert_eq!(hello.autoscaling, AutoscalingPolicy::fallback());
    assert_eq!(hello.deployment_policy, "default");
    assert_eq!(
        hello.placements[0].partitions[0],
        PartitionPlacement {
            id: "local-1".into(),
            max: 100
        }
    );
}

#[test]
fn three_tier_blueprint_is_the_demo() {
    let (bundle, spec) = example("three-tier.yaml");
    let root = &spec.root;
    assert_eq!(root.alias, "shop");
    assert_eq!(root.termination, TerminationBehaviour::TerminateDependents);
    assert_eq!(
        root.startup_orders,
        vec![
            vec![
                ComponentRef::Cartridge("db".into()),
                ComponentRef::Group("backend".into())
            ],
            vec![
                ComponentRef::Group("backend".into()),
                ComponentRef::Cartridge("web".into())
            ],
        ]
    );
    assert_eq!(
        root.scaling_dependents,
        vec![vec![
            ComponentRef::Cartridge("web".into()),
            ComponentRef::Group("backend".into())
        ]]
    );
    let ComponentSpec::Group(backend) = &root.children[0] else {
        panic!("backend group first")
    };
    assert_eq!(
        (
            backend.name.as_str(),
            backend.max_instances,
            backend.group_scaling_enabled
        ),
        ("backend", 2, true)
    );
    assert_eq!(backend.termination, TerminationBehaviour::TerminateAll);
    assert_eq!(
        backend.startup_orders,
        vec![vec![
            ComponentRef::Group("caching".into()),
            ComponentRef::Cartridge("api".into())
        ]]
    );
    let ComponentSpec::Group(caching) = &backend.children[0] else {
        panic!("nested group")
    };
    assert_eq!(caching.name, "cache-tier");

    let api = cluster(root, "api").expect("api");
    assert_eq!(api.cartridge.health.interval_ms, 500);
    assert_eq!(api.autoscaling.requests_in_flight, Some(10.0));
    assert_eq!(api.autoscaling.timing.scale_down_stabilization_ms, 20_000);
    assert_eq!(api.autoscaling.timing.drain_ms, 2_000);
    assert_eq!(api.placements[0].algorithm, PartitionAlgorithm::RoundRobin);
    assert_eq!(api.placements[0].partitions.len(), 2);
    let proxies: Vec<Option<u16>> = ["web", "api", "cache", "db"]
        .iter()
        .map(|a| cluster(root, a).expect("cluster").cartridge.port_mappings[0].proxy_port)
        .collect();
    assert_eq!(proxies, [Some(8080), Some(8081), None, None]);
    for alias in ["web", "api", "cache", "db"] {
        assert_eq!(
            cluster(root, alias).expect("cluster").cartridge.command,
            None
        );
    }
    assert_eq!(
        spec.domain_mappings["web"][0].domain_name,
        "shop.example.test"
    );

    // The group definitions the blueprint implies: backend holding cache-tier.
    assert_eq!(bundle.cartridge_groups.len(), 1);
    assert_eq!(bundle.cartridge_groups[0].cartridges, ["api"]);
    assert_eq!(bundle.cartridge_groups[0].groups[0].name, "cache-tier");
}

#[test]
fn documented_examples_parse_and_resolve() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/blueprint.md");
    let doc = std::fs::read_to_string(path).expect("docs/blueprint.md");
    let blocks: Vec<&str> = doc
        .split("```yaml\n")
        .skip(1)
        .filter_map(|rest| rest.split("```").next())
        .collect();
    assert_eq!(blocks.len(), 2);
    for block in blocks {
        let bundle = parse_yaml("blueprint.md", block).unwrap_or_else(|e| panic!("{e}"));
        let mut catalog = Catalog::default();
        catalog.add_bundle(bundle.clone());
        let policy = bundle.deploy_with.clone().expect("deploy_with");
        resolve(&catalog, &bundle.applications[0].id, &policy).unwrap_or_else(|e| panic!("{e}"));
    }
}
