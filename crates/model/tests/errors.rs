//! Malformed input: every problem is reported, with its exact message and place.

use cairn_model::*;

enum Input {
    Yaml,
    Json(ArtifactKind),
}

/// Parses `text` and asserts the diagnostics, each written as `Display` shows it.
fn check(input: Input, text: &str, expected: &[&str]) {
    let result = match input {
        Input::Yaml => parse_yaml("t", text),
        Input::Json(kind) => parse_stratos(kind, "t", text),
    };
    let got: Vec<String> = match result {
        Ok(bundle) => panic!("parsed, expected errors: {bundle:?}\n{text}"),
        Err(diagnostics) => diagnostics.0.iter().map(ToString::to_string).collect(),
    };
    assert_eq!(got, expected, "\n{text}");
}

use ArtifactKind::*;
use Input::{Json, Yaml};

const CARTRIDGE: &str = r#"{"type": "php", "portMapping": [{"protocol": "http", "port": "8080"}]}"#;

#[test]
fn stratos_json_errors() {
    check(
        Json(Cartridge),
        "{\"type\": \"php\",\n \"portMapping\": [}",
        &["t:2:18: expected a value, found `}`"],
    );
    check(
        Json(Cartridge),
        "{\"portMapping\": []}",
        &["t:1:1: missing field `type`"],
    );
    check(
        Json(Cartridge),
        "[1, 2]",
        &["t:1:1: expected a map, found a list"],
    );
    check(
        Json(Cartridge),
        r#"{"type": "php", "portMapping": "http"}"#,
        &["t:1:32 at $.portMapping: expected a list, found a string"],
    );
    check(
        Json(Cartridge),
        r#"{"type": "php", "portMapping": [{"protocol": "udp", "port": "abc"}, {"protocol": "http", "port": 70000}]}"#,
        &[
            "t:1:46 at $.portMapping[0].protocol: unknown protocol `udp`, expected one of: http, https, tcp",
            "t:1:61 at $.portMapping[0].port: expected a whole number, found `abc`",
            "t:1:98 at $.portMapping[1].port: expected a whole number from 0 to 65535, found `70000`",
        ],
    );
    check(
        Json(Cartridge),
        r#"{"type": "php", "portMapping": [{"protocol": "http", "port": "0"}]}"#,
        &["t:1:62 at $.portMapping[0].port: port 0 is not a usable port"],
    );
    check(
        Json(Cartridge),
        r#"{"type": "php", "portMapping": [{"protocol": "http", "port": 80}, {"name": "http-80", "protocol": "tcp", "port": 81}]}"#,
        &["t:1:76 at $.portMapping[1].name: port mapping name `http-80` is used twice"],
    );
    check(
        Json(Cartridge),
        &CARTRIDGE.replace(
            "}]}",
            r#"}], "property": [{"name": "response_timeout_ms", "value": "0"}]}"#,
        ),
        &[
            "t:1:126 at $.property[0].value: `response_timeout_ms` is `0`, expected a whole number of milliseconds above 0",
        ],
    );
    check(
        Json(Cartridge),
        r#"{"type": "php", "multiTenant": "maybe"}"#,
        &["t:1:32 at $.multiTenant: expected true or false, found `maybe`"],
    );
    check(
        Json(Cartridge),
        &CARTRIDGE.replace("}]}", r#"}], "health": {"http": "/up", "tcp": true}}"#),
        &["t:1:82 at $.health: choose one of `http`, `tcp` and `process`"],
    );
    check(
        Json(Cartridge),
        &CARTRIDGE.replace("}]}", r#"}], "health": {"http": "/up", "port": "admin"}}"#),
        &[
            "t:1:106 at $.health.port: the health check uses port `admin`, which is not a port mapping of this cartridge",
        ],
    );
    check(
        Json(Cartridge),
        &CARTRIDGE.replace("}]}", r#"}], "command": ["run", 7, ["x"]]}"#),
        &["t:1:94 at $.command[2]: expected a string, found a list"],
    );
    check(
        Json(AutoscalingPolicy),
        r#"{"id": "a", "loadThresholds": {"memoryConsumption": {"threshold": 150}, "requestsInFlight": {"threshold": "x"}}}"#,
        &["t:1:107 at $.loadThresholds.requestsInFlight.threshold: expected a number, found `x`"],
    );
    check(
        Json(AutoscalingPolicy),
        r#"{"id": "a", "loadThresholds": {"memoryConsumption": {"threshold": 150}}}"#,
        &[
            "t:1:67 at $.loadThresholds.memoryConsumption.threshold: the memory consumption threshold is a percentage above 0 and at most 100, found 150",
        ],
    );
    check(
        Json(DeploymentPolicy),
        r#"{"id": "d", "networkPartitions": [{"id": "np", "partitionAlgo": "random", "partitions": [{"id": "p"}]}]}"#,
        &[
            "t:1:65 at $.networkPartitions[0].partitionAlgo: unknown partition algorithm `random`, expected one of: one-after-another, round-robin",
            "t:1:90 at $.networkPartitions[0].partitions[0]: missing field `partitionMax`",
        ],
    );
    check(
        Json(DeploymentPolicy),
        r#"{"id": "d", "networkPartitions": []}"#,
        &["t:1:34 at $.networkPartitions: the deployment policy names no network partition"],
    );
    check(
        Json(ApplicationPolicy),
        r#"{"id": "a", "algorithm": "one-after-another", "networkPartitions": ["np1"], "properties": [{"name": "networkPartitionGroups", "value": "np1|np2"}]}"#,
        &[
            "t:1:91 at $.properties: network partition group member `np2` is not one of the policy's network partitions",
        ],
    );
    check(
        Json(CartridgeGroup),
        r#"{"name": "g", "dependencies": {"terminationBehaviour": "terminate-some", "startupOrders": [{"aliases": ["cartridge.a, frontend.b"]}]}}"#,
        &[
            "t:1:105 at $.dependencies.startupOrders[0].aliases[0]: expected `cartridge.<alias>` or `group.<alias>`, found `frontend.b`",
            "t:1:56 at $.dependencies.terminationBehaviour: unknown termination behaviour `terminate-some`, expected one of: terminate-all, terminate-dependents, terminate-none",
        ],
    );
    check(
        Json(CartridgeGroup),
        r#"{"name": "g", "dependencies": {"startupOrders": [{"aliases": ["cartridge.a", "cartridge.b"]}, "cartridge.b,cartridge.a"]}}"#,
        &[
            "t:1:49 at $.dependencies.startupOrders: the startup orders form a cycle: cartridge.a → cartridge.b → cartridge.a",
        ],
    );
    check(
        Json(Application),
        &app(r#""cartridgeMin": 3, "cartridgeMax": 2"#, "", ""),
        &["t:4:103 at $.components.cartridges[0].cartridgeMax: min (3) is greater than max (2)"],
    );
    check(
        Json(Application),
        &app("", r#""groupMinInstances": 2, "groupMaxInstances": 1"#, ""),
        &[
            "t:3:101 at $.components.groups[0].groupMaxInstances: min instances (2) is greater than max instances (1)",
        ],
    );
    check(
        Json(Application),
        &app(
            "",
            "",
            r#""startupOrders": [{"aliases": ["group.g", "cartridge.nope"]}]"#,
        ),
        &[
            "t:5:101 at $.components.dependencies.startupOrders[0].aliases[1]: the startup order names `cartridge.nope`, which is not a component of the application",
        ],
    );
    check(
        Json(Application),
        &app(
            "",
            "",
            r#""scalingDependents": [{"aliases": ["cartridge.c"]}], "startupOrders": [{"aliases": ["cartridge.c, group.g, cartridge.c"]}]"#,
        ),
        &[
            "t:5:129 at $.components.dependencies.startupOrders: the startup orders form a cycle: cartridge.c → group.g → cartridge.c",
        ],
    );
    check(
        Json(Application),
        &app("", "", "").replace(r#""alias": "g""#, r#""alias": "c""#),
        &["t:3:26 at $.components.groups[0].alias: alias `c` is used twice in the application"],
    );
    check(
        Json(Application),
        r#"{"applicationId": "a", "components": {"cartridges": [{"type": "php"}]}}"#,
        &["t:1:54 at $.components.cartridges[0]: missing field `subscribableInfo`"],
    );
    check(
        Json(DomainMappings),
        r#"{"domainMappings": [{"cartridgeAlias": "web"}]}"#,
        &["t:1:21 at $.domainMappings[0]: missing field `domainName`"],
    );
    check(
        Json(DomainMappings),
        "{\"domainMappings\": [\n{\"cartridgeAlias\": \"web\", \"domainName\": \"shop example.com\", \"contextPath\": \"/a?b=1\"}]}",
        &[
            "t:2:41 at $.domainMappings[0].domainName: `shop example.com` is not a host name: labels of letters, digits and `-` joined by `.`",
            "t:2:76 at $.domainMappings[0].contextPath: the context path `/a?b=1` is not a URL path: letters, digits, `/` and `-._~!$&'()*+,;=:@` or `%` with two hex digits",
        ],
    );
}

/// An application with one group `g` and one cartridge `c`, with extra fields spliced in.
fn app(cartridge_extra: &str, group_extra: &str, dependencies: &str) -> String {
    let comma = |s: &str| {
        if s.is_empty() {
            String::new()
        } else {
            format!(", {s}")
        }
    };
    format!(
        "{{\"applicationId\": \"a\", \"components\": {{\n\
         \"groups\": [\n\
         {{\"name\": \"grp\", \"alias\": \"g\", \"deploymentPolicy\": \"d\"{}, \"cartridges\": []}}],\n\
         \"cartridges\": [{{\"type\": \"php\", \"subscribableInfo\": {{\"alias\": \"c\"}}{}}}],\n\
         \"dependencies\": {{\"terminationBehaviour\": \"terminate-all\"{}}}}}}}",
        comma(group_extra),
        comma(cartridge_extra),
        comma(dependencies),
    )
}

const MINIMAL: &str =
    "application: a\ncartridges:\n  web:\n    ports: [8000]\ncomponents:\n  web:\n";

#[test]
fn yaml_blueprint_errors() {
    check(Yaml, "", &["t:1:1: the blueprint is empty"]);
    check(
        Yaml,
        &MINIMAL.replace(
            "    ports: [8000]\n",
            "    ports: [8000]\n    properties:\n      response_timeout_ms: soon\n      cpu_cores: \"-1\"\n      memory_limit_mb: lots\n",
        ),
        &[
            "t:6:28 at $.cartridges.web.properties.response_timeout_ms: `response_timeout_ms` is `soon`, expected a whole number of milliseconds above 0",
            "t:7:18 at $.cartridges.web.properties.cpu_cores: `cpu_cores` is `-1`, expected a number of cores above 0",
            "t:8:24 at $.cartridges.web.properties.memory_limit_mb: `memory_limit_mb` is `lots`, expected a whole number of MiB above 0",
        ],
    );
    check(
        Yaml,
        "application: ../etc\ncartridges:\n  web:\n    ports: [8000]\ncomponents:\n  \"web site\": {cartridge: web}\n",
        &[
            "t:1:14 at $.application: the application id `../etc` is not a name: up to 100 letters, digits, `.`, `_` or `-`, not starting with `.`",
            "t:6:15 at $.components.web site: the alias `web site` is not a name: up to 100 letters, digits, `.`, `_` or `-`, not starting with `.`",
        ],
    );
    check(
        Yaml,
        "cartridges:\n  w:\n    ports: [8000]\n    health: {http: healthz}\n",
        &[
            "t:4:20 at $.cartridges.w.health.http: the health check path `healthz` does not start with `/`",
        ],
    );
    check(
        Yaml,
        "application: a\ncartridges: [1, 2\n",
        &["t:2:13: unclosed bracket '['"],
    );
    check(
        Yaml,
        "application: a\napplication: b\n",
        &["t:2:1: duplicate key `application`"],
    );
    check(Yaml, "- a\n- b\n", &["t:1:1: expected a map, found a list"]);
    check(
        Yaml,
        &format!(
            "{MINIMAL}    domains:\n      - -shop.example.com\n      - {{name: www.example.com, context_path: /a%zz}}\n"
        ),
        &[
            "t:8:9 at $.components.web.domains[0]: `-shop.example.com` is not a host name: labels of letters, digits and `-` joined by `.`",
            "t:9:47 at $.components.web.domains[1].context_path: the context path `/a%zz` is not a URL path: letters, digits, `/` and `-._~!$&'()*+,;=:@` or `%` with two hex digits",
        ],
    );
    check(
        Yaml,
        &MINIMAL
            .replace("  web:\n", "  web:\n    min_instance: 2\n")
            .replacen("    min_instance: 2\n", "", 1),
        &[
            "t:7:5 at $.components.web.min_instance: unknown field `min_instance`, expected one of: cartridge, min, max, autoscaling_policy, deployment_policy, depends_on, domains",
        ],
    );
    check(
        Yaml,
        &format!("{MINIMAL}    min: 3\n    max: 2\n"),
        &["t:8:10 at $.components.web.max: min (3) is greater than max (2)"],
    );
    check(
        Yaml,
        &format!("{MINIMAL}    depends_on: [db]\n"),
        &[
            "t:7:18 at $.components.web.depends_on[0]: unknown component `db` in `depends_on`, expected one of: web",
        ],
    );
    check(
        Yaml,
        &format!(
            "{MINIMAL}    depends_on: [api]\n  api:\n    cartridge: web\n    depends_on: [web]\n"
        ),
        &[
            "t:6:3 at $.components: the startup orders form a cycle: cartridge.api → cartridge.web → cartridge.api",
        ],
    );
    check(
        Yaml,
        &MINIMAL.replace(
            "ports: [8000]",
            "ports: [0, {port: 8001, proxy_port: 70000}]",
        ),
        &[
            "t:4:41 at $.cartridges.web.ports[1].proxy_port: expected a whole number from 0 to 65535, found `70000`",
        ],
    );
    check(
        Yaml,
        &MINIMAL.replace("ports: [8000]", "ports: [0]"),
        &["t:4:13 at $.cartridges.web.ports[0]: port 0 is not a usable port"],
    );
    check(
        Yaml,
        &MINIMAL.replace(
            "ports: [8000]",
            "ports: [8000]\n    health: {interval: fast, tcp: yes}",
        ),
        &[
            "t:5:35 at $.cartridges.web.health.tcp: expected true or false, found `yes`",
            "t:5:24 at $.cartridges.web.health.interval: expected a duration like `500ms` or `2s`, found `fast`",
        ],
    );
    check(
        Yaml,
        "cartridges:\n  web:\ncomponents:\n  web:\n",
        &["t:1:1: missing field `application`"],
    );
    check(
        Yaml,
        &format!("{MINIMAL}deployment_policies:\n  a:\n  b:\n"),
        &[
            "t:6:3 at $.components.web: `web` has no deployment policy: several are declared, so name one with `deployment_policy`",
        ],
    );
    check(
        Yaml,
        &format!("{MINIMAL}deployment_policies:\n  d:\n    network_partitions:\n      cloud:\n"),
        &[
            "t:10:7 at $.deployment_policies.d.network_partitions.cloud: name the partitions of `cloud`: it is not declared in this blueprint",
        ],
    );
    check(
        Yaml,
        "application: a\ncartridges: {web: }\ncomponents:\n  one:\n    components:\n      web:\n  two:\n    group: one\n    components:\n      web2: {cartridge: other}\n",
        &[
            "t:8:5 at $.components.two: group `one` is used twice with different members; give one of them another `group` name",
        ],
    );
    check(
        Yaml,
        &format!("{MINIMAL}autoscaling_policies:\n  default:\n    load_average: 0\n"),
        &[
            "t:9:19 at $.autoscaling_policies.default.load_average: the load average threshold is a percentage above 0 and at most 100, found 0",
        ],
    );
    check(
        Yaml,
        &format!(
            "{MINIMAL}application_policies:\n  p:\n    algorithm: sometimes\n    network_partitions: [local]\n"
        ),
        &[
            "t:9:16 at $.application_policies.p.algorithm: unknown network partition algorithm `sometimes`, expected one of: one-after-another, all-at-once",
        ],
    );
}

/// Resolution errors name the artifact and the path inside it.
fn check_resolve(
    files: &[(ArtifactKind, &str)],
    application: &str,
    policy: &str,
    expected: &[&str],
) {
    let mut catalog = Catalog::default();
    for (kind, text) in files {
        catalog.add_bundle(parse_stratos(*kind, "t", text).unwrap_or_else(|e| panic!("{e}")));
    }
    let got: Vec<String> = match resolve(&catalog, application, policy) {
        Ok(spec) => panic!("resolved: {spec:?}"),
        Err(d) => d.0.iter().map(ToString::to_string).collect(),
    };
    assert_eq!(got, expected);
}

const NP: &str = r#"{"id": "np1", "partitions": [{"id": "p1"}]}"#;
const DP: &str = r#"{"id": "dp", "networkPartitions": [{"id": "np1", "partitionAlgo": "round-robin", "partitions": [{"id": "p1", "partitionMax": 3}]}]}"#;
const AP: &str = r#"{"id": "ap", "algorithm": "all-at-once", "networkPartitions": ["np1"]}"#;
const GROUP: &str = r#"{"name": "grp", "cartridges": ["php"], "dependencies": {"startupOrders": [{"aliases": ["cartridge.c", "cartridge.x"]}]}}"#;

#[test]
fn resolution_errors() {
    let application =
        app("", "", "").replace(r#""deploymentPolicy": "d""#, r#""deploymentPolicy": "dp""#);
    check_resolve(
        &[(Application, &application)],
        "nope",
        "ap",
        &["application nope: unknown application `nope`"],
    );
    check_resolve(
        &[(Application, &application)],
        "a",
        "ap",
        &["application a at $.deploy_with: unknown application policy `ap`"],
    );
    check_resolve(
        &[
            (Application, &application),
            (ApplicationPolicy, AP),
            (NetworkPartition, NP),
            (DeploymentPolicy, DP),
        ],
        "a",
        "ap",
        &[
            "application a at $.components.groups[0].name: unknown cartridge group `grp`",
            "application a at $.components.cartridges[0].cartridge: unknown cartridge type `php`",
            "application a at $.components.cartridges[0].deployment_policy: cartridge `c` has no deployment policy, and no group around it has one",
        ],
    );
    let nested = application.replace(
        r#""cartridges": []}"#,
        r#""cartridges": [{"type": "php", "subscribableInfo": {"alias": "c2"}}, {"type": "tomcat", "subscribableInfo": {"alias": "c3"}}]}"#,
    );
    let dp_elsewhere = DP.replace(r#""id": "p1""#, r#""id": "p9""#);
    check_resolve(
        &[
            (Application, &nested),
            (
                ApplicationPolicy,
                &AP.replace(r#"["np1"]"#, r#"["np1", "np2"]"#),
            ),
            (NetworkPartition, NP),
            (NetworkPartition, &NP.replace("np1", "np2")),
            (DeploymentPolicy, &dp_elsewhere),
            (CartridgeGroup, GROUP),
            (Cartridge, r#"{"type": "php"}"#),
            (Cartridge, r#"{"type": "tomcat"}"#),
        ],
        "a",
        "ap",
        &[
            "deployment policy dp at $.network_partitions[0].partitions[0].id: network partition `np1` has no partition `p9`",
            "application a at $.components.groups[0].cartridges[0].deployment_policy: deployment policy `dp` of cartridge `c2` does not cover network partition `np2` of application policy `ap`",
            "application a at $.components.groups[0].cartridges[1].cartridge: cartridge `tomcat` is not a member of cartridge group `grp`",
            "application a at $.components.groups[0].cartridges[1].deployment_policy: deployment policy `dp` of cartridge `c3` does not cover network partition `np2` of application policy `ap`",
            "cartridge group grp at $.dependencies.startup_orders[0][0]: the startup order names `cartridge.c`, which is not a direct component of group `g`",
            "cartridge group grp at $.dependencies.startup_orders[0][1]: the startup order names `cartridge.x`, which is not a direct component of group `g`",
            "application a at $.components.cartridges[0].deployment_policy: cartridge `c` has no deployment policy, and no group around it has one",
        ],
    );
}

/// The references of one Stratos artifact to artifacts not registered, as `t` and the
/// artifacts of `registered` (each parsed as `r`) leave them.
fn check_references(
    kind: ArtifactKind,
    text: &str,
    registered: &[(ArtifactKind, &str)],
    expected: &[&str],
) {
    let file = check_stratos_artifact(kind, "t", text);
    let mut catalog = Catalog::default();
    for (kind, text) in registered {
        catalog.add_bundle(parse_stratos(*kind, "r", text).unwrap_or_else(|e| panic!("{e}")));
    }
    catalog.add_bundle(file.clone().into_result().unwrap_or_else(|e| panic!("{e}")));
    let got: Vec<String> = file
        .unknown_references(&catalog)
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(got, expected, "\n{text}");
}

#[test]
fn unregistered_references() {
    check_references(
        DeploymentPolicy,
        DP,
        &[],
        &["t:1:43 at $.networkPartitions[0].id: unknown network partition `np1`"],
    );
    check_references(
        DeploymentPolicy,
        &DP.replace(r#""id": "p1""#, r#""id": "p9""#),
        &[(NetworkPartition, NP)],
        &[
            "t:1:104 at $.networkPartitions[0].partitions[0].id: network partition `np1` has no partition `p9`",
        ],
    );
    check_references(DeploymentPolicy, DP, &[(NetworkPartition, NP)], &[]);
    check_references(
        ApplicationPolicy,
        &AP.replace(r#"["np1"]"#, r#"["np1", "np2"]"#),
        &[(NetworkPartition, NP)],
        &["t:1:71 at $.networkPartitions[1]: unknown network partition `np2`"],
    );
    check_references(
        CartridgeGroup,
        r#"{"name": "g", "cartridges": ["php"], "groups": [{"name": "inner", "cartridges": ["php", "esb"]}]}"#,
        &[(Cartridge, r#"{"type": "php"}"#)],
        &["t:1:89 at $.groups[0].cartridges[1]: unknown cartridge type `esb`"],
    );
    // A group subscription holds what the group's definition holds.
    let members = app("", "", "").replace(
        r#""cartridges": []}"#,
        r#""cartridges": [{"type": "tomcat", "subscribableInfo": {"alias": "c2"}}], "groups": [{"name": "inner", "alias": "i"}]}"#,
    );
    check_references(
        Application,
        &members,
        &[
            (Cartridge, r#"{"type": "php"}"#),
            (Cartridge, r#"{"type": "tomcat"}"#),
            (CartridgeGroup, r#"{"name": "grp", "cartridges": ["php"]}"#),
        ],
        &[
            "t:3:149 at $.components.groups[0].groups[0].name: group `inner` is not a nested group of cartridge group `grp`",
            "t:3:80 at $.components.groups[0].cartridges[0].type: cartridge `tomcat` is not a member of cartridge group `grp`",
        ],
    );
    // An application's deployment policy is checked when it is deployed, as in Stratos.
    let nested = app("", "", "").replace(
        r#""cartridges": []}"#,
        r#""cartridges": [{"type": "tomcat", "subscribableInfo": {"alias": "c2", "autoscalingPolicy": "asp"}}]}"#,
    );
    check_references(
        Application,
        &nested,
        &[(Cartridge, r#"{"type": "php"}"#)],
        &[
            "t:3:10 at $.components.groups[0].name: unknown cartridge group `grp`",
            "t:3:80 at $.components.groups[0].cartridges[0].type: unknown cartridge type `tomcat`",
            "t:3:147 at $.components.groups[0].cartridges[0].subscribableInfo.autoscalingPolicy: unknown autoscaling policy `asp`",
        ],
    );
}

/// Which registered artifacts name one, and what a replacement would take from them.
#[test]
fn referrers_and_replacements() {
    let catalog_of = |files: &[(ArtifactKind, &str)]| {
        let mut catalog = Catalog::default();
        for (kind, text) in files {
            catalog.add_bundle(parse_stratos(*kind, "r", text).unwrap_or_else(|e| panic!("{e}")));
        }
        catalog
    };
    // A nested subscription names a group of its parent's definition, not a registered one;
    // an application's deployment policy counts once it is deployed, not before.
    let application = app("", "", "").replace(
        r#""cartridges": []}"#,
        r#""cartridges": [], "groups": [{"name": "inner", "alias": "i"}]}"#,
    );
    let catalog = catalog_of(&[
        (Application, &application),
        (
            CartridgeGroup,
            r#"{"name": "inner", "cartridges": ["php"]}"#,
        ),
        (Cartridge, r#"{"type": "php"}"#),
        (NetworkPartition, NP),
        (DeploymentPolicy, DP),
        (ApplicationPolicy, AP),
    ]);
    let names = |kind, id| -> Vec<String> {
        let found = catalog.referrers(kind, id);
        found.iter().map(|(k, id)| format!("{k} {id}")).collect()
    };
    assert_eq!(names(CartridgeGroup, "grp"), ["application a"]);
    assert!(names(CartridgeGroup, "inner").is_empty());
    assert_eq!(
        names(Cartridge, "php"),
        ["cartridge group inner", "application a"]
    );
    assert!(names(DeploymentPolicy, "d").is_empty());
    assert_eq!(
        names(NetworkPartition, "np1"),
        ["deployment policy dp", "application policy ap"]
    );

    let mut next = catalog.clone();
    next.add_bundle(
        parse_stratos(
            NetworkPartition,
            "r",
            r#"{"id": "np1", "partitions": [{"id": "p2"}]}"#,
        )
        .unwrap_or_else(|e| panic!("{e}")),
    );
    assert_eq!(
        catalog.broken_by(&next),
        ["deployment policy dp naming partition `p1` of network partition `np1`"]
    );
    assert!(catalog.broken_by(&catalog).is_empty());
    // A kubernetes cluster stays while a network partition places partitions on it.
    let kubernetes = catalog_of(&[
        (KubernetesCluster, r#"{"clusterId": "k1"}"#),
        (
            NetworkPartition,
            r#"{"id": "npk", "provider": "kubernetes", "partitions": [{"id": "p1", "property": [{"name": "cluster", "value": "k1"}]}]}"#,
        ),
    ]);
    assert_eq!(
        kubernetes.referrers(KubernetesCluster, "k1"),
        [(NetworkPartition, "npk".to_string())]
    );
    // A group may not lose a member that an application subscribes to inside it.
    let with_member = app("", "", "").replace(
        r#""cartridges": []}"#,
        r#""cartridges": [{"type": "php", "subscribableInfo": {"alias": "c2"}}]}"#,
    );
    let before = catalog_of(&[
        (Application, &with_member),
        (CartridgeGroup, r#"{"name": "grp", "cartridges": ["php"]}"#),
        (Cartridge, r#"{"type": "php"}"#),
    ]);
    let mut next = before.clone();
    next.add_bundle(
        parse_stratos(CartridgeGroup, "r", r#"{"name": "grp", "cartridges": []}"#)
            .unwrap_or_else(|e| panic!("{e}")),
    );
    assert_eq!(
        before.broken_by(&next),
        ["application a naming cartridge `php` as a member of cartridge group `grp`"]
    );
}

/// `deploy_with` may name an application policy registered before; alone, the blueprint
/// cannot be deployed, and says why where it names the policy.
#[test]
fn deploy_with_names_a_policy_from_elsewhere() {
    let file = check_yaml("t", &format!("{MINIMAL}deploy_with: elsewhere\n"));
    let bundle = file.clone().into_result().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(bundle.deploy_with.as_deref(), Some("elsewhere"));
    assert!(
        bundle.application_policies.is_empty(),
        "no default policy is made up beside the one named"
    );
    let mut catalog = Catalog::default();
    catalog.add_bundle(bundle);
    let got: Vec<String> = resolve_in_files(&catalog, "a", "elsewhere", &[file])
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        got,
        ["t:7:14 at $.deploy_with: unknown application policy `elsewhere`"]
    );
}
