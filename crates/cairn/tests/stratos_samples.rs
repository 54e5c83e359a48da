//! Stratos' sample applications, driven with curl exactly as Stratos' own scripts drive them,
//! against a real `cairn up`: every one reaches Active with its startup orders honoured, then
//! undeploys and its artifacts delete cleanly so the next sample can post them again.

mod support;

use serde_json::Value;
use support::{Cairn, client, members, samples};

struct Sample {
    application: &'static str,
    /// `(collection, file under stratos-samples)` in the scripts' order.
    posts: &'static [(&'static str, &'static str)],
    /// `(before, after)`: `after` starts only once `before` is Active.
    orders: &'static [(&'static str, &'static str)],
    /// Components with no order between them, whose start-up windows overlap.
    parallel: &'static [(&'static str, &'static str)],
}

const SAMPLES: &[Sample] = &[
    Sample {
        application: "single-cartridge-app",
        posts: &[
            (
                "autoscalingPolicies",
                "autoscaling-policies/autoscaling-policy-1.json",
            ),
            (
                "networkPartitions",
                "network-partitions/mock/network-partition-1.json",
            ),
            (
                "deploymentPolicies",
                "deployment-policies/deployment-policy-1.json",
            ),
            ("cartridges", "cartridges/mock/php.json"),
            (
                "applicationPolicies",
                "application-policies/application-policy-1.json",
            ),
            (
                "applications",
                "applications/simple/single-cartridge-app/artifacts/application.json",
            ),
        ],
        orders: &[],
        parallel: &[],
    },
    Sample {
        application: "cartridge-group-app",
        posts: &[
            (
                "autoscalingPolicies",
                "autoscaling-policies/autoscaling-policy-1.json",
            ),
            (
                "networkPartitions",
                "network-partitions/mock/network-partition-1.json",
            ),
            (
                "networkPartitions",
                "network-partitions/mock/network-partition-2.json",
            ),
            (
                "deploymentPolicies",
                "deployment-policies/deployment-policy-1.json",
            ),
            ("cartridges", "cartridges/mock/tomcat.json"),
            ("cartridges", "cartridges/mock/esb.json"),
            ("cartridges", "cartridges/mock/php.json"),
            ("cartridgeGroups", "cartridge-groups/esb-php-group.json"),
            (
                "applicationPolicies",
                "application-policies/application-policy-1.json",
            ),
            (
                "applications",
                "applications/simple/single-group-app/artifacts/application.json",
            ),
        ],
        orders: &[("my-esb", "my-php")],
        parallel: &[("my-tomcat", "my-esb-php-group")],
    },
    Sample {
        application: "my-compositeapp",
        posts: &[
            (
                "autoscalingPolicies",
                "autoscaling-policies/autoscaling-policy-1.json",
            ),
            (
                "networkPartitions",
                "network-partitions/mock/network-partition-1.json",
            ),
            (
                "networkPartitions",
                "network-partitions/mock/network-partition-2.json",
            ),
            (
                "deploymentPolicies",
                "deployment-policies/deployment-policy-1.json",
            ),
            (
                "deploymentPolicies",
                "deployment-policies/deployment-policy-2.json",
            ),
            ("cartridges", "cartridges/mock/mysql.json"),
            ("cartridges", "cartridges/mock/postgres.json"),
            ("cartridges", "cartridges/mock/esb.json"),
            ("cartridges", "cartridges/mock/tomcat.json"),
            ("cartridges", "cartridges/mock/php.json"),
            ("cartridgeGroups", "cartridge-groups/app-group.json"),
            ("cartridgeGroups", "cartridge-groups/db-group.json"),
            (
                "applicationPolicies",
                "application-policies/application-policy-1.json",
            ),
            (
                "applications",
                "applications/complex/php-tomcat-group-postgres-mysql-group-esb/artifacts/application.json",
            ),
        ],
        orders: &[
            ("my-dbgroup", "my-appgroup"),
            ("my-dbgroup", "my-esb"),
            ("my-php", "my-tomcat"),
        ],
        parallel: &[("my-appgroup", "my-esb"), ("my-postgres", "my-mysql")],
    },
    Sample {
        application: "complex-app-with-lb",
        posts: &[
            (
                "autoscalingPolicies",
                "autoscaling-policies/autoscaling-policy-1.json",
            ),
            (
                "networkPartitions",
                "network-partitions/mock/network-partition-1.json",
            ),
            (
                "deploymentPolicies",
                "deployment-policies/deployment-policy-1.json",
            ),
            ("cartridges", "cartridges/mock/stratos-lb.json"),
            ("cartridges", "cartridges/mock/tomcat.json"),
            ("cartridges", "cartridges/mock/tomcat1.json"),
            ("cartridges", "cartridges/mock/tomcat2.json"),
            ("cartridgeGroups", "cartridge-groups/group6c3.json"),
            ("cartridgeGroups", "cartridge-groups/group8c.json"),
            (
                "applicationPolicies",
                "application-policies/application-policy-1.json",
            ),
            (
                "applications",
                "applications/nested/complex-app-with-lb/artifacts/application.json",
            ),
        ],
        orders: &[
            ("my-tomcat", "my-stratos-lb"),
            ("my-stratos-lb", "my-group6"),
            ("my-group6", "my-group8"),
        ],
        parallel: &[("my-tomcat2-group6", "my-group7")],
    },
];

#[test]
fn every_stratos_sample_deploys_through_the_stratos_api_in_script_order() {
    let cairn = Cairn::start("stratos", &[80, 8222, 8280, 8281]);
    for sample in SAMPLES {
        run_sample(&cairn, sample);
    }
}

/// Posts a sample's artifacts in its scripts' order.
fn post_artifacts(cairn: &Cairn, sample: &Sample) {
    let app = sample.application;
    for (collection, file) in sample.posts {
        let (code, body) = cairn.stratos_curl("POST", collection, Some(&samples().join(file)));
        assert_eq!(
            code,
            201,
            "{app}: POST {collection} {file}: {body}\n{}",
            cairn.output()
        );
    }
}

fn run_sample(cairn: &Cairn, sample: &Sample) {
    let app = sample.application;
    post_artifacts(cairn, sample);
    let (code, body) = cairn.stratos_curl(
        "POST",
        &format!("applications/{app}/deploy/application-policy-1"),
        None,
    );
    assert_eq!(code, 202, "{app}: deploy: {body}");
    // Deployed as soon as that is answered: the application cannot be deleted from under it.
    let (code, body) = cairn.stratos_curl("DELETE", &format!("applications/{app}"), None);
    assert_eq!(code, 409, "{app}: DELETE right after deploy: {body}");
    let view = cairn.wait_active(app);

    let (code, runtime) = cairn.stratos_curl("GET", &format!("applications/{app}/runtime"), None);
    assert_eq!(code, 200, "{app}: runtime: {runtime}");
    let runtime: Value = serde_json::from_str(&runtime).expect("runtime is JSON");
    assert_eq!(runtime["status"], "Active", "{app}: {runtime}");

    for (before, after) in sample.orders {
        let ready = window(&view, before).1;
        let started = window(&view, after).0;
        assert!(
            ready <= started,
            "{app}: {after} started at {started}, before {before} was Active at {ready}"
        );
    }
    for (a, b) in sample.parallel {
        let (a_start, a_active) = window(&view, a);
        let (b_start, b_active) = window(&view, b);
        assert!(
            a_start <= b_active && b_start <= a_active,
            "{app}: {a} [{a_start}, {a_active}] and {b} [{b_start}, {b_active}] should overlap"
        );
    }

    // php's tcp port mapping is relayed connection by connection to a member.
    if sample
        .posts
        .iter()
        .any(|(_, file)| file.ends_with("php.json"))
    {
        let answer = tcp_round_trip(8222 + cairn.offset, b"GET /healthz HTTP/1.0\r\n\r\n");
        assert!(
            answer.starts_with("HTTP/1.0 200") || answer.starts_with("HTTP/1.1 200"),
            "{app}: through tcp proxy port 8222: {answer:?}"
        );
    }

    // What a deployed application uses cannot be deleted from under it.
    for path in [
        format!("applications/{app}"),
        "applicationPolicies/application-policy-1".into(),
        "cartridges/php".into(),
    ] {
        if path.ends_with("php") && !sample.posts.iter().any(|(_, f)| f.ends_with("php.json")) {
            continue;
        }
        let (code, body) = cairn.stratos_curl("DELETE", &path, None);
        assert_eq!(code, 409, "{app}: DELETE {path} while deployed: {body}");
        assert!(
            body.contains(app),
            "{app}: the refusal names the application: {body}"
        );
    }

    let (code, body) = cairn.stratos_curl("POST", &format!("applications/{app}/undeploy"), None);
    assert_eq!(code, 202, "{app}: undeploy: {body}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while cairn.view(app).is_some() {
        assert!(
            std::time::Instant::now() < deadline,
            "{app}: still deployed 10 s after undeploy"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(
        support::member_processes(&cairn.data_dir).is_empty(),
        "{app}: members left after undeploy"
    );
    // The scripts' order, in which nothing is deleted while another artifact names it.
    let (code, body) = cairn.stratos_curl("DELETE", &format!("applications/{app}"), None);
    assert_eq!(code, 200, "{app}: DELETE application: {body}");
    for kind in [
        "cartridgeGroups",
        "cartridges",
        "autoscalingPolicies",
        "deploymentPolicies",
        "applicationPolicies",
        "networkPartitions",
    ] {
        for (collection, file) in sample.posts.iter().filter(|(c, _)| *c == kind) {
            let id = artifact_id(collection, &samples().join(file));
            let (code, body) = cairn.stratos_curl("DELETE", &format!("{collection}/{id}"), None);
            assert_eq!(code, 200, "{app}: DELETE {collection}/{id}: {body}");
        }
    }
}

/// Writes `request` on a new connection to `port` and reads until the other side closes.
fn tcp_round_trip(port: u16, request: &[u8]) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port))
        .unwrap_or_else(|error| panic!("connect to port {port}: {error}"));
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .expect("read timeout");
    stream.write_all(request).expect("send the request");
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).expect("read the answer");
    String::from_utf8_lossy(&answer).into_owned()
}

/// When a component started (first member created) and became Active (its last member that
/// counts became Active), as RFC 3339 strings, which order like the times they name.
fn window(view: &Value, alias: &str) -> (String, String) {
    let scope = find(view, alias).unwrap_or_else(|| panic!("no {alias} in {view}"));
    let all = members(&scope);
    assert!(!all.is_empty(), "{alias} has no members");
    let start = all
        .iter()
        .map(|(_, m)| m["created_at"].as_str().unwrap_or("").to_string())
        .min();
    let active = all
        .iter()
        .map(|(_, m)| m["active_at"].as_str().unwrap_or("~").to_string())
        .max();
    (start.unwrap_or_default(), active.unwrap_or_default())
}

/// The cluster or group with this alias, as a view node that [`members`] can walk.
fn find(node: &Value, alias: &str) -> Option<Value> {
    for c in node["clusters"].as_array().into_iter().flatten() {
        if c["alias"] == alias {
            return Some(serde_json::json!({"clusters": [c]}));
        }
    }
    for g in node["groups"].as_array().into_iter().flatten() {
        if g["alias"] == alias {
            return Some(serde_json::json!({"groups": [g]}));
        }
        for i in g["instances"].as_array().into_iter().flatten() {
            if let Some(found) = find(i, alias) {
                return Some(found);
            }
        }
    }
    None
}

fn artifact_id(collection: &str, file: &std::path::Path) -> String {
    let text = std::fs::read_to_string(file).expect("sample readable");
    let key = match collection {
        "cartridges" => "\"type\"",
        "cartridgeGroups" => "\"name\"",
        _ => "\"id\"",
    };
    // The samples are not all strict JSON, so the id is read as text: the first `"key": "value"`.
    let at = text.find(key).expect("id key present") + key.len();
    let rest = &text[at..];
    let open = rest.find('"').expect("id value") + 1;
    let close = rest[open..].find('"').expect("id value end") + open;
    rest[open..close].to_string()
}

#[test]
fn artifacts_from_a_blueprint_read_in_stratos_shape() {
    let cairn = Cairn::start("blueprint-in-stratos-shape", &[8080]);
    let examples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    let yaml = std::fs::read_to_string(examples.join("minimal.yaml")).expect("example");
    // What the blueprint replaces is read as the blueprint has it, not as posted before.
    let dir = support::TempDir::new("blueprint-in-stratos-shape");
    let earlier = dir.0.join("hello.json");
    std::fs::write(
        &earlier,
        r#"{"type": "hello", "portMapping": [{"protocol": "http", "port": 9999}]}"#,
    )
    .expect("write");
    let (status, body) = cairn.stratos_curl("POST", "cartridges", Some(&earlier));
    assert_eq!(status, 201, "{body}");
    let (status, body) = cairn.post_blueprint(&yaml);
    assert_eq!(status, 201, "{body}");
    let read = |path: &str| -> Value {
        let (status, text) = cairn.stratos_curl("GET", path, None);
        assert_eq!(status, 200, "GET {path}: {text}");
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("GET {path}: {e}: {text}"))
    };
    let cartridge = read("cartridges/hello");
    assert_eq!(cartridge["type"], "hello", "{cartridge}");
    assert_eq!(cartridge["portMapping"][0]["port"], 8000, "{cartridge}");
    assert_eq!(
        cartridge["portMapping"][0]["proxyPort"], 8080,
        "{cartridge}"
    );
    let application = read("applications/hello");
    assert_eq!(application["applicationId"], "hello", "{application}");
    let subscription = &application["components"]["cartridges"][0];
    assert_eq!(subscription["type"], "hello", "{application}");
    assert_eq!(
        subscription["subscribableInfo"]["alias"], "hello",
        "{application}"
    );
    let policies = read("deploymentPolicies");
    assert!(
        policies[0]["networkPartitions"][0]["partitionAlgo"].is_string(),
        "{policies}"
    );
}

#[test]
fn domain_mappings_are_added_read_and_removed() {
    let cairn = Cairn::start("domain-mappings", &[8280, 8222]);
    let sample_file =
        samples().join("applications/simple/single-cartridge-app/artifacts/domain-mappings.json");
    let (code, body) = cairn.stratos_curl(
        "POST",
        "applications/single-cartridge-app/domainMappings",
        Some(&sample_file),
    );
    assert_eq!(code, 404, "no such application yet: {body}");
    post_artifacts(&cairn, &SAMPLES[0]);
    let path = "applications/single-cartridge-app/domainMappings";
    let (code, body) = cairn.stratos_curl("GET", path, None);
    assert_eq!(code, 404, "no mappings yet: {body}");

    let (code, body) = cairn.stratos_curl("POST", path, Some(&sample_file));
    assert_eq!(code, 201, "{body}");
    let second = cairn.data_dir.join("second-mapping.json");
    let text = r#"{"domainMappings": [{"cartridgeAlias": "my-php", "domainName": "xyz.com"}]}"#;
    std::fs::write(&second, text).expect("mapping file");
    let (code, body) = cairn.stratos_curl("POST", path, Some(&second));
    assert_eq!(code, 201, "{body}");
    // A mapping to an alias the application lacks is told where the body has it.
    let wrong = cairn.data_dir.join("wrong-mapping.json");
    let text = r#"{"domainMappings": [{"cartridgeAlias": "my-php", "domainName": "a.com"}, {"cartridgeAlias": "nope", "domainName": "b.com"}]}"#;
    std::fs::write(&wrong, text).expect("mapping file");
    let (code, body) = cairn.stratos_curl("POST", path, Some(&wrong));
    assert_eq!(code, 400, "{body}");
    assert!(
        body.contains(
            "request body at $.domainMappings[1].cartridgeAlias: domain `b.com` is mapped to `nope`"
        ),
        "{body}"
    );
    let (code, body) = cairn.stratos_curl("GET", path, None);
    assert_eq!(code, 200, "{body}");
    let mappings: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(
        mappings,
        serde_json::json!([
            {"cartridgeAlias": "my-php", "domainName": "abc.com", "contextPath": "/abc/app"},
            {"cartridgeAlias": "my-php", "domainName": "xyz.com"},
        ])
    );

    let (code, body) = cairn.stratos_curl("DELETE", &format!("{path}/abc.com"), None);
    assert_eq!(code, 200, "{body}");
    let (code, body) = cairn.stratos_curl("DELETE", &format!("{path}/abc.com"), None);
    assert_eq!(code, 404, "{body}");
    let (_, body) = cairn.stratos_curl("GET", path, None);
    let mappings: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(
        mappings,
        serde_json::json!([{"cartridgeAlias": "my-php", "domainName": "xyz.com"}])
    );

    let unknown = cairn.data_dir.join("unknown-alias.json");
    let text = r#"{"domainMappings": [{"cartridgeAlias": "nope", "domainName": "n.com"}]}"#;
    std::fs::write(&unknown, text).expect("mapping file");
    let (code, body) = cairn.stratos_curl("POST", path, Some(&unknown));
    assert_eq!(code, 400, "{body}");
    assert!(
        body.contains("`nope`, which is not a cartridge alias"),
        "{body}"
    );

    // A deployed application's load balancer takes mappings at once.
    let (code, body) = cairn.stratos_curl(
        "POST",
        "applications/single-cartridge-app/deploy/application-policy-1",
        None,
    );
    assert_eq!(code, 202, "{body}");
    cairn.wait_active("single-cartridge-app");
    let (code, body) = cairn.stratos_curl("POST", path, Some(&sample_file));
    assert_eq!(code, 201, "{body}");
    let (_, events) = cairn.get("/v1/events?application=single-cartridge-app");
    assert!(
        events
            .to_string()
            .contains("domain mappings changed: 2 now"),
        "{events}"
    );
    // abc.com has the context path /abc/app, xyz.com none.
    let proxy = format!("http://127.0.0.1:{}/index.php?page=2", 8280 + cairn.offset);
    for (host, asked) in [
        ("abc.com", "/abc/app/index.php?page=2"),
        ("xyz.com", "/index.php?page=2"),
    ] {
        let response = client()
            .get(&proxy)
            .header("host", host)
            .send()
            .expect("request through the proxy");
        assert_eq!(response.status(), 200, "{host}");
        assert_eq!(response.headers()["x-cairn-path"], asked, "{host}");
    }
}

#[test]
fn answers_follow_stratos_status_codes() {
    let cairn = Cairn::start("stratos-status-codes", &[80, 8222]);
    let app = "single-cartridge-app";
    let (code, body) = cairn.stratos_curl("GET", "applications", None);
    assert_eq!(code, 404, "an empty collection: {body}");
    let (code, body) = cairn.stratos_curl("POST", &format!("applications/{app}/undeploy"), None);
    assert_eq!(code, 404, "undeploy of an unknown application: {body}");
    post_artifacts(&cairn, &SAMPLES[0]);
    let (code, body) = cairn.stratos_curl("GET", &format!("applications/{app}/runtime"), None);
    assert_eq!(code, 404, "runtime of an application not deployed: {body}");
    let file =
        samples().join("applications/simple/single-cartridge-app/artifacts/application.json");
    let (code, body) = cairn.stratos_curl("PUT", "applications", Some(&file));
    assert_eq!(code, 201, "an updated application: {body}");
    assert!(body.contains("application updated successfully"), "{body}");
    let file = samples().join("autoscaling-policies/autoscaling-policy-1.json");
    let (code, body) = cairn.stratos_curl("PUT", "autoscalingPolicies", Some(&file));
    assert_eq!(code, 200, "an updated policy: {body}");
    let (code, body) = cairn.stratos_curl("PUT", "autoscalingPolicies/other", Some(&file));
    assert_eq!(
        code, 400,
        "a body that is not the artifact of the path: {body}"
    );
    assert!(
        body.contains(
            "the body is autoscaling policy autoscaling-policy-1, not other as the path says"
        ),
        "{body}"
    );
    let (code, body) = cairn.stratos_curl(
        "POST",
        "applications/nope/deploy/application-policy-1",
        None,
    );
    assert_eq!(code, 404, "deploy of an unknown application: {body}");
    let (code, body) = cairn.stratos_curl("GET", "nothingHere", None);
    assert_eq!(code, 404, "{body}");
    assert!(body.contains(r#""statusCode":404"#), "{body}");
    let (code, body) = cairn.stratos_curl("PATCH", "applications", None);
    assert_eq!(code, 405, "{body}");
    assert!(body.contains(r#""statusCode":405"#), "{body}");
    let (code, body) = cairn.stratos_curl("GET", "applications", None);
    assert_eq!(code, 200, "{body}");

    // A created artifact is answered with where to read it, its id escaped in the URL.
    let stratos = reqwest::blocking::Client::builder()
        .danger_accept_invalid_certs(true)
        .build()
        .expect("https client");
    let partition = r#"{"id": "np 2/b", "provider": "mock", "partitions": [{"id": "p1"}]}"#;
    let created = stratos
        .post(format!("https://{}/api/networkPartitions", cairn.stratos))
        .basic_auth("admin", Some("admin"))
        .header("content-type", "application/json")
        .body(partition)
        .send()
        .expect("POST over https");
    assert_eq!(created.status(), 201);
    let refused = stratos
        .get(format!("https://{}/api/networkPartitions", cairn.stratos))
        .basic_auth("admin", Some("wrong"))
        .send()
        .expect("GET over https");
    assert_eq!(refused.status(), 401);
    let reason = refused.text().unwrap_or_default();
    assert!(reason.contains("wrong user or password"), "{reason}");
    let location = created.headers()["location"].to_str().expect("ASCII");
    assert_eq!(
        location,
        format!("https://{}/api/networkPartitions/np%202%2Fb", cairn.stratos)
    );
    let read = stratos
        .get(location)
        .basic_auth("admin", Some("admin"))
        .send()
        .expect("GET the location");
    assert_eq!(read.status(), 200);
    let read: Value = read.json().expect("JSON");
    assert_eq!(read["id"], "np 2/b");
}

#[test]
fn references_to_unregistered_artifacts_are_refused_both_ways() {
    let cairn = Cairn::start("stratos-references", &[80]);
    let post = |collection: &str, file: &str| {
        cairn.stratos_curl("POST", collection, Some(&samples().join(file)))
    };
    let refused = [
        (
            "deploymentPolicies",
            "deployment-policies/deployment-policy-1.json",
            // curl's `-d @file` sends the file as one line.
            "request body:1:87 at $.networkPartitions[0].id: unknown network partition `network-partition-1`",
        ),
        (
            "applicationPolicies",
            "application-policies/application-policy-1.json",
            "at $.networkPartitions[0]: unknown network partition `network-partition-1`",
        ),
        (
            "cartridgeGroups",
            "cartridge-groups/esb-php-group.json",
            "unknown cartridge type `esb`",
        ),
        (
            "applications",
            "applications/simple/single-cartridge-app/artifacts/application.json",
            "unknown cartridge type `php`",
        ),
        (
            "applications",
            "applications/simple/single-cartridge-app/artifacts/application.json",
            "unknown autoscaling policy `autoscaling-policy-1`",
        ),
    ];
    for (collection, file, problem) in refused {
        let (code, body) = post(collection, file);
        assert_eq!(code, 400, "POST {collection} {file}: {body}");
        assert!(body.contains(problem), "POST {collection} {file}: {body}");
    }
    let (code, body) = cairn.stratos_curl("GET", "deploymentPolicies", None);
    assert_eq!(code, 404, "a refused artifact is not registered: {body}");

    for (collection, file) in &SAMPLES[0].posts[..5] {
        let (code, body) = post(collection, file);
        assert_eq!(code, 201, "POST {collection} {file}: {body}");
    }
    // A replacement may not take away what another artifact names, nor name what is missing.
    let dir = support::TempDir::new("stratos-references");
    let put = |collection: &str, name: &str, json: &str| {
        let file = dir.0.join(name);
        std::fs::write(&file, json).expect("write");
        cairn.stratos_curl("PUT", collection, Some(&file))
    };
    let (code, body) = put(
        "networkPartitions",
        "np.json",
        r#"{"id": "network-partition-1", "provider": "mock", "partitions": [{"id": "partition-2"}]}"#,
    );
    assert_eq!(code, 409, "a partition taken away: {body}");
    assert!(
        body.contains("it would leave deployment policy deployment-policy-1 naming partition `partition-1` of network partition `network-partition-1`, which it takes away"),
        "{body}"
    );
    let (code, body) = put(
        "deploymentPolicies",
        "dp.json",
        r#"{"id": "deployment-policy-1", "networkPartitions": [{"id": "network-partition-9", "partitionAlgo": "round-robin", "partitions": [{"id": "p", "partitionMax": 2}]}]}"#,
    );
    assert_eq!(code, 400, "a replacement naming what is missing: {body}");
    assert!(
        body.contains("unknown network partition `network-partition-9`"),
        "{body}"
    );

    // What a registered artifact names cannot be deleted from under it, deployed or not.
    let (code, body) = cairn.stratos_curl("DELETE", "networkPartitions/network-partition-1", None);
    assert_eq!(code, 409, "{body}");
    assert!(
        body.contains("is used by deployment policy deployment-policy-1, application policy application-policy-1: delete or change those first"),
        "{body}"
    );
    let (code, body) = post(SAMPLES[0].posts[5].0, SAMPLES[0].posts[5].1);
    assert_eq!(code, 201, "{body}");
    for path in ["cartridges/php", "autoscalingPolicies/autoscaling-policy-1"] {
        let (code, body) = cairn.stratos_curl("DELETE", path, None);
        assert_eq!(code, 409, "DELETE {path}: {body}");
        assert!(
            body.contains(
                "is used by application single-cartridge-app: delete or change that first"
            ),
            "DELETE {path}: {body}"
        );
    }
    // An application's deployment policy is checked when it is deployed, as in Stratos, and
    // the problem is told in the words of the documents posted.
    let (code, body) = cairn.stratos_curl("DELETE", "deploymentPolicies/deployment-policy-1", None);
    assert_eq!(code, 200, "{body}");
    let (code, body) = cairn.stratos_curl(
        "POST",
        "applications/single-cartridge-app/deploy/application-policy-1",
        None,
    );
    assert_eq!(code, 400, "{body}");
    assert!(
        body.contains("application single-cartridge-app at $.components.cartridges[0].subscribableInfo.deploymentPolicy: unknown deployment policy `deployment-policy-1`"),
        "{body}"
    );
    for path in ["applications/single-cartridge-app", "cartridges/php"] {
        let (code, body) = cairn.stratos_curl("DELETE", path, None);
        assert_eq!(code, 200, "DELETE {path}: {body}");
    }
}
