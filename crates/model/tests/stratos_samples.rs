//! Every Stratos sample parses, and each sample application resolves against what its deploy script posts.

use std::path::{Path, PathBuf};

use cairn_model::*;

fn samples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/stratos-samples")
}

fn json_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            json_files(&path, out);
        } else if path.extension().is_some_and(|x| x == "json") {
            out.push(path);
        }
    }
}

fn kind_of(relative: &str) -> ArtifactKind {
    let top = relative.split('/').next().unwrap_or_default();
    match top {
        "cartridges" => ArtifactKind::Cartridge,
        "cartridge-groups" => ArtifactKind::CartridgeGroup,
        "autoscaling-policies" => ArtifactKind::AutoscalingPolicy,
        "deployment-policies" => ArtifactKind::DeploymentPolicy,
        "application-policies" => ArtifactKind::ApplicationPolicy,
        "network-partitions" => ArtifactKind::NetworkPartition,
        "kubernetes-clusters" => ArtifactKind::KubernetesCluster,
        "applications" if relative.ends_with("application-signup.json") => {
            ArtifactKind::ApplicationSignup
        }
        "applications" if relative.ends_with("domain-mappings.json") => {
            ArtifactKind::DomainMappings
        }
        "applications" => ArtifactKind::Application,
        other => panic!("unexpected sample directory {other}"),
    }
}

fn load(relative: &str) -> Bundle {
    let path = samples().join(relative);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{relative}: {e}"));
    parse_stratos(kind_of(relative), relative, &text).unwrap_or_else(|e| panic!("{e}"))
}

/// Every sample file, by its path under the samples directory.
fn sample_files() -> Vec<String> {
    let root = samples();
    let mut files = Vec::new();
    json_files(&root, &mut files);
    files
        .iter()
        .map(|path| {
            path.strip_prefix(&root)
                .expect("under root")
                .to_string_lossy()
                .replace('\\', "/")
        })
        .collect()
}

#[test]
fn every_sample_parses_and_its_kind_is_detected() {
    let files = sample_files();
    assert!(files.len() > 60, "found only {} samples", files.len());
    for relative in files {
        let text = std::fs::read_to_string(samples().join(&relative)).expect("readable");
        let kind = kind_of(&relative);
        let bundle = parse_stratos(kind, &relative, &text).unwrap_or_else(|e| panic!("{e}"));
        assert_ne!(bundle, Bundle::default(), "{relative} gave nothing");
        let (detected, again) =
            parse_stratos_any(&relative, &text).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((detected, &again), (kind, &bundle), "{relative}");
        assert!(validate_bundle(&bundle).0.is_empty(), "{relative}");
    }
}

#[test]
fn sample_details_survive_parsing() {
    let php = &load("cartridges/mock/php.json").cartridges[0];
    assert_eq!(php.kind, "php");
    assert!(!php.multi_tenant);
    assert_eq!(php.port_mappings[1].protocol, Protocol::Tcp);
    assert_eq!(php.port_mappings[1].proxy_port, Some(8222));
    assert_eq!(php.command, None);
    assert_eq!(
        php.health,
        HealthCheck {
            probe: Probe::Http {
                port: "http-80".into(),
                path: "/healthz".into()
            },
            interval_ms: 1000,
            timeout_ms: 1000,
            failure_threshold: 3,
        }
    );
    let tomcat = &load("cartridges/mock/tomcat.json").cartridges[0];
    assert_eq!(tomcat.port_mappings[1].name, "http-8080");

    let policy = &load("application-policies/application-policy-3.json").application_policies[0];
    assert_eq!(
        policy.network_partition_groups,
        vec![
            vec![
                "network-partition-1".to_string(),
                "network-partition-2".into()
            ],
            vec!["network-partition-3".into()],
            vec!["network-partition-4".into(), "network-partition-5".into()],
        ]
    );
    let policy = &load("application-policies/application-policy-2.json").application_policies[0];
    assert_eq!(
        policy.network_partition_groups,
        vec![vec!["network-partition-3".to_string()]]
    );

    let app = &load(
        "applications/complex/php-tomcat-group-postgres-mysql-group-esb/artifacts/application.json",
    )
    .applications[0];
    assert_eq!(
        app.components.dependencies.scaling_dependents,
        vec![vec![
            ComponentRef::Group("my-appgroup".into()),
            ComponentRef::Cartridge("my-esb".into())
        ]]
    );
    let nested = &load("cartridge-groups/n-level-nesting.json").cartridge_groups[0];
    assert_eq!(
        nested.groups[0].groups[0].groups[0].groups[0].groups[0].name,
        "level-five-group"
    );

    let scaling = &load("autoscaling-policies/autoscaling-policy-c2.json").autoscaling_policies[0];
    assert_eq!(scaling.memory_consumption, Some(5.0));

    let text = std::fs::read_to_string(
        samples().join("applications/simple/single-cartridge-app/artifacts/domain-mappings.json"),
    )
    .expect("readable");
    let mappings = parse_domain_mappings("single-cartridge-app", "domain-mappings.json", &text)
        .expect("parses");
    assert_eq!(
        mappings.domain_mappings["single-cartridge-app"][0].domain_name,
        "abc.com"
    );
}

struct Deploy {
    application: &'static str,
    files: &'static [&'static str],
}

const DEPLOYS: &[Deploy] = &[
    Deploy {
        application: "simple/single-cartridge-app",
        files: &[
            "autoscaling-policies/autoscaling-policy-1.json",
            "network-partitions/mock/network-partition-1.json",
            "deployment-policies/deployment-policy-1.json",
            "cartridges/mock/php.json",
            "application-policies/application-policy-1.json",
        ],
    },
    Deploy {
        application: "simple/single-group-app",
        files: &[
            "autoscaling-policies/autoscaling-policy-1.json",
            "network-partitions/mock/network-partition-1.json",
            "network-partitions/mock/network-partition-2.json",
            "deployment-policies/deployment-policy-1.json",
            "cartridges/mock/tomcat.json",
            "cartridges/mock/esb.json",
            "cartridges/mock/php.json",
            "cartridge-groups/esb-php-group.json",
            "application-policies/application-policy-1.json",
        ],
    },
    Deploy {
        application: "complex/php-tomcat-group-postgres-mysql-group-esb",
        files: &[
            "autoscaling-policies/autoscaling-policy-1.json",
            "network-partitions/mock/network-partition-1.json",
            "network-partitions/mock/network-partition-2.json",
            "deployment-policies/deployment-policy-1.json",
            "deployment-policies/deployment-policy-2.json",
            "cartridges/mock/mysql.json",
            "cartridges/mock/postgres.json",
            "cartridges/mock/esb.json",
            "cartridges/mock/tomcat.json",
            "cartridges/mock/php.json",
            "cartridge-groups/app-group.json",
            "cartridge-groups/db-group.json",
            "application-policies/application-policy-1.json",
        ],
    },
    Deploy {
        application: "nested/complex-app-with-lb",
        files: &[
            "autoscaling-policies/autoscaling-policy-1.json",
            "network-partitions/mock/network-partition-1.json",
            "deployment-policies/deployment-policy-1.json",
            "cartridges/mock/stratos-lb.json",
            "cartridges/mock/tomcat.json",
            "cartridges/mock/tomcat1.json",
            "cartridges/mock/tomcat2.json",
            "cartridge-groups/group6c3.json",
            "cartridge-groups/group8c.json",
            "application-policies/application-policy-1.json",
        ],
    },
];

fn deploy(d: &Deploy) -> AppSpec {
    let mut catalog = Catalog::default();
    for file in d.files {
        catalog.add_bundle(load(file));
    }
    let app = load(&format!(
        "applications/{}/artifacts/application.json",
        d.application
    ));
    let id = app.applications[0].id.clone();
    catalog.add_bundle(app);
    resolve(&catalog, &id, "application-policy-1")
        .unwrap_or_else(|e| panic!("{}: {e}", d.application))
}

fn clusters(group: &GroupSpec, out: &mut Vec<String>) {
    for child in &group.children {
        match child {
            ComponentSpec::Cluster(c) => out.push(c.alias.clone()),
            ComponentSpec::Group(g) => clusters(g, out),
        }
    }
}

#[test]
fn sample_applications_resolve() {
    let specs: Vec<AppSpec> = DEPLOYS.iter().map(deploy).collect();
    let aliases: Vec<Vec<String>> = specs
        .iter()
        .map(|s| {
            let mut out = Vec::new();
            clusters(&s.root, &mut out);
            out
        })
        .collect();
    assert_eq!(aliases[0], ["my-php"]);
    assert_eq!(aliases[1], ["my-esb", "my-php", "my-tomcat"]);
    assert_eq!(
        aliases[2],
        ["my-tomcat", "my-php", "my-postgres", "my-mysql", "my-esb"]
    );
    assert_eq!(
        aliases[3],
        [
            "my-tomcat1-group7",
            "my-tomcat2-group6",
            "my-tomcat1-group9",
            "my-tomcat2-group8",
            "my-stratos-lb",
            "my-tomcat"
        ]
    );
    for spec in &specs {
        assert_eq!(
            spec.network_partition_groups,
            vec![vec!["network-partition-1".to_string()]]
        );
    }

    // The nested group inherits group6's deployment policy and takes its dependencies from group6's definition.
    let lb = &specs[3];
    let ComponentSpec::Group(group6) = &lb.root.children[0] else {
        panic!("group6 first")
    };
    let ComponentSpec::Group(group7) = &group6.children[0] else {
        panic!("group7 nested")
    };
    assert_eq!(group7.termination, TerminationBehaviour::TerminateAll);
    let ComponentSpec::Cluster(tomcat1) = &group7.children[0] else {
        panic!("cluster")
    };
    assert_eq!(tomcat1.deployment_policy, "deployment-policy-1");
    assert_eq!(tomcat1.placements[0].id, "network-partition-1");
    assert_eq!(lb.root.termination, TerminationBehaviour::TerminateAll);
    assert_eq!(lb.root.startup_orders[0].len(), 4);

    let complex = &specs[2];
    let ComponentSpec::Group(app_group) = &complex.root.children[0] else {
        panic!("group")
    };
    assert_eq!(
        app_group.startup_orders,
        vec![vec![
            ComponentRef::Cartridge("my-php".into()),
            ComponentRef::Cartridge("my-tomcat".into())
        ]]
    );
    assert!(app_group.group_scaling_enabled);
    assert_eq!(app_group.max_instances, 2);
}

#[test]
fn in_use_artifacts_are_known() {
    let d = &DEPLOYS[2];
    let mut catalog = Catalog::default();
    for file in d.files {
        catalog.add_bundle(load(file));
    }
    catalog.add_bundle(load(&format!(
        "applications/{}/artifacts/application.json",
        d.application
    )));
    let users = |kind, id| catalog.applications_using(kind, id);
    assert_eq!(users(ArtifactKind::Cartridge, "mysql"), ["my-compositeapp"]);
    assert_eq!(
        users(ArtifactKind::CartridgeGroup, "db-group"),
        ["my-compositeapp"]
    );
    assert_eq!(
        users(ArtifactKind::DeploymentPolicy, "deployment-policy-1"),
        ["my-compositeapp"]
    );
    assert_eq!(
        users(ArtifactKind::NetworkPartition, "network-partition-1"),
        ["my-compositeapp"]
    );
    assert!(users(ArtifactKind::DeploymentPolicy, "deployment-policy-2").is_empty());
    assert!(users(ArtifactKind::NetworkPartition, "network-partition-2").is_empty());
    assert_eq!(
        catalog.referrers(ArtifactKind::Cartridge, "php"),
        [
            (ArtifactKind::CartridgeGroup, "app-group".to_string()),
            (ArtifactKind::Application, "my-compositeapp".to_string())
        ]
    );
    assert_eq!(
        catalog.referrers(ArtifactKind::NetworkPartition, "network-partition-2"),
        [(
            ArtifactKind::DeploymentPolicy,
            "deployment-policy-2".to_string()
        )]
    );
    assert!(catalog.remove(ArtifactKind::Application, "my-compositeapp"));
    assert!(
        catalog
            .applications_using(ArtifactKind::Cartridge, "mysql")
            .is_empty()
    );
    assert!(!catalog.remove(ArtifactKind::Application, "my-compositeapp"));
}

/// Every artifact of `catalog` written in Stratos' shape reads back as it was.
fn check_written_back(catalog: &Catalog) {
    // Kubernetes clusters and signups are kept as written or in Cairn's shape, and domain
    // mappings come in the shape of Stratos' GET, which its POST does not take.
    let kinds = ArtifactKind::ALL.into_iter().filter(|kind| {
        !matches!(
            kind,
            ArtifactKind::KubernetesCluster
                | ArtifactKind::DomainMappings
                | ArtifactKind::ApplicationSignup
        )
    });
    let mut again = Catalog::default();
    for kind in kinds {
        for (id, document) in catalog.stratos_documents(kind) {
            let text = document.to_string();
            let bundle = parse_stratos(kind, &id, &text).unwrap_or_else(|e| panic!("{e}\n{text}"));
            again.add_bundle(bundle);
        }
    }
    assert_eq!(again.cartridges, catalog.cartridges);
    assert_eq!(again.cartridge_groups, catalog.cartridge_groups);
    assert_eq!(again.applications, catalog.applications);
    assert_eq!(again.autoscaling_policies, catalog.autoscaling_policies);
    assert_eq!(again.deployment_policies, catalog.deployment_policies);
    assert_eq!(again.application_policies, catalog.application_policies);
    assert_eq!(again.network_partitions, catalog.network_partitions);
}

#[test]
fn samples_written_back_in_stratos_shape_read_the_same() {
    let mut catalog = Catalog::default();
    for relative in sample_files() {
        // Samples reuse ids for different variants, so each is checked on its own.
        let mut one = Catalog::default();
        one.add_bundle(load(&relative));
        check_written_back(&one);
        catalog.add_bundle(load(&relative));
    }
    check_written_back(&catalog);
}

#[test]
fn blueprints_written_back_in_stratos_shape_read_the_same() {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    for name in ["minimal.yaml", "three-tier.yaml"] {
        let text = std::fs::read_to_string(examples.join(name)).expect("readable");
        let mut bundle = parse_yaml(name, &text).unwrap_or_else(|e| panic!("{e}"));
        // Stratos' shape has no field for these, so they read back as the defaults.
        for policy in &mut bundle.autoscaling_policies {
            policy.timing = ScalingTiming::default();
        }
        for partition in &mut bundle.network_partitions {
            partition.proxy_port_offset = 0;
        }
        // Bursting groups other than the algorithm's own travel as a property.
        for policy in &mut bundle.application_policies {
            policy.network_partitions = vec!["np1".into(), "np2".into(), "np3".into()];
            policy.network_partition_groups =
                vec![vec!["np1".into()], vec!["np2".into(), "np3".into()]];
        }
        let mut catalog = Catalog::default();
        catalog.add_bundle(bundle);
        check_written_back(&catalog);
    }
}
