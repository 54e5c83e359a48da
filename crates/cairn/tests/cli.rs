//! The CLI against a real server: validation, deploys, the JSON runtime view's shape, logs,
//! bad arguments.

mod support;

use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use support::{BIN, Cairn, members, samples};

fn cairn(args: &[&str], url: Option<&str>) -> (i32, String, String) {
    let mut command = Command::new(BIN);
    command.args(args);
    if let Some(url) = url {
        command.env("CAIRN_URL", url);
    }
    let output = command.output().expect("cairn runs");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).to_string(),
        String::from_utf8_lossy(&output.stderr).to_string(),
    )
}

/// Deploys one of `examples/` and waits for Active; returns what the CLI printed.
fn deploy_example(name: &str, url: &str) -> String {
    let examples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    let blueprint = examples.join(name);
    let args = [
        "deploy",
        blueprint.to_str().unwrap_or(""),
        "--timeout",
        "30",
    ];
    let (code, out, err) = cairn(&args, Some(url));
    assert_eq!(code, 0, "{name}: {out}{err}");
    out
}

#[test]
fn validate_accepts_the_samples_and_points_at_problems() {
    let examples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    let good = [
        examples.join("three-tier.yaml"),
        samples().join("applications/nested/complex-app-with-lb/artifacts/application.json"),
    ];
    let args: Vec<&str> = std::iter::once("validate")
        .chain(good.iter().filter_map(|p| p.to_str()))
        .collect();
    let (code, out, err) = cairn(&args, None);
    assert_eq!(code, 0, "{out}{err}");

    let dir = support::TempDir::new("cli-validate");
    let bad = dir.0.join("bad.yaml");
    std::fs::write(
        &bad,
        "application: x\ncomponents:\n  web:\n    cartridge: nope\n    min: 3\n    max: 1\n    autoscaling_policy: none\n",
    )
    .expect("write");
    let bad = bad.to_str().unwrap_or("");
    let (code, _, err) = cairn(&["validate", bad], None);
    assert_eq!(code, 1, "{err}");
    // The file's own problems and those of its references, all at once, in line order.
    let expected = [
        format!("{bad}:4:16 at $.components.web.cartridge: unknown cartridge type `nope`"),
        format!("{bad}:6:10 at $.components.web.max: min (3) is greater than max (1)"),
        format!(
            "{bad}:7:25 at $.components.web.autoscaling_policy: unknown autoscaling policy `none`"
        ),
        "3 problems".to_string(),
    ];
    assert_eq!(err.lines().collect::<Vec<_>>(), expected);
}

#[test]
fn deploys_are_all_or_nothing_repeatable_and_deletable() {
    let server = Cairn::start("cli-redeploy", &[8080]);
    let url = format!("http://{}", server.api);
    let dir = support::TempDir::new("cli-redeploy");
    let refused = dir.0.join("refused.yaml");
    std::fs::write(
        &refused,
        "application: refused\ncartridges:\n  web:\n    ports: [8000]\ncomponents:\n  web: {}\n  db:\n    cartridge: nope\n",
    )
    .expect("write");
    let refused = refused.to_str().unwrap_or("");
    let (code, _, err) = cairn(&["deploy", refused], Some(&url));
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(&format!(
            "{refused}:8:16 at $.components.db.cartridge: unknown cartridge type `nope`"
        )),
        "{err}"
    );
    // Registering without deploying still refuses what names unregistered artifacts.
    let response = support::client()
        .post(server.url("/v1/blueprints?deploy=false&source=refused.yaml"))
        .body(std::fs::read_to_string(refused).expect("read"))
        .send()
        .expect("native API answers");
    assert_eq!(response.status().as_u16(), 400);
    let body = response.text().unwrap_or_default();
    assert!(
        body.contains(
            "refused.yaml:8:16 at $.components.db.cartridge: unknown cartridge type `nope`"
        ),
        "{body}"
    );
    // A group's cartridges are named once, where the blueprint writes them.
    let grouped = "application: grouped\ncartridges:\n  web:\n    ports: [8000]\ncomponents:\n  tier:\n    components:\n      db:\n        cartridge: nope\n";
    let response = support::client()
        .post(server.url("/v1/blueprints?deploy=false&source=grouped.yaml"))
        .body(grouped)
        .send()
        .expect("native API answers");
    assert_eq!(response.status().as_u16(), 400);
    let body: Value = response.json().unwrap_or(Value::Null);
    let problems: Vec<String> = body["diagnostics"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| p.to_string())
        .collect();
    assert_eq!(problems.len(), 1, "{body}");
    assert!(problems[0].contains("grouped.yaml"), "{body}");
    let (code, out, err) = cairn(&["apps", "--output", "json"], Some(&url));
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), "[]", "nothing registered");

    for round in ["first", "again"] {
        let out = deploy_example("minimal.yaml", &url);
        assert!(out.starts_with("hello Active in "), "{round}: {out}");
    }
    // A change to what the deployed application uses is refused, not silently registered.
    let changed = dir.0.join("changed.yaml");
    let minimal =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/minimal.yaml");
    let text = std::fs::read_to_string(minimal).expect("read the example");
    std::fs::write(&changed, text.replace("port: 8000", "port: 8001")).expect("write");
    let (code, _, err) = cairn(&["deploy", changed.to_str().unwrap_or("")], Some(&url));
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("application hello is deployed: undeploy it before changing it or the artifacts given with it (HTTP 409"),
        "{err}"
    );
    let (code, out, err) = cairn(&["undeploy", "hello"], Some(&url));
    assert_eq!((code, out.as_str()), (0, "hello undeployed\n"), "{err}");
    let (code, out, err) = cairn(&["delete", "hello"], Some(&url));
    assert_eq!((code, out.as_str()), (0, "hello deleted\n"), "{err}");
    let (code, out, err) = cairn(&["apps", "--output", "json"], Some(&url));
    assert_eq!((code, out.trim()), (0, "[]"), "{err}");

    let stratos =
        samples().join("applications/nested/complex-app-with-lb/artifacts/application.json");
    let (code, _, err) = cairn(&["deploy", stratos.to_str().unwrap_or("")], Some(&url));
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("is a Stratos application artifact, not a blueprint"),
        "{err}"
    );
}

#[test]
fn status_json_has_the_documented_shape() {
    let server = Cairn::start("cli", &[8080]);
    let url = format!("http://{}", server.api);
    deploy_example("minimal.yaml", &url);

    // The list says how many members are Active of how many the engine keeps.
    let (code, out, err) = cairn(&["apps", "--output", "json"], Some(&url));
    assert_eq!(code, 0, "{err}");
    let apps: Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(apps[0]["active_members"], 1, "{apps}");
    assert_eq!(apps[0]["wanted_members"], 1, "{apps}");
    let (code, out, err) = cairn(&["apps"], Some(&url));
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("MEMBERS ACTIVE/WANTED") && out.contains("1/1"),
        "{out}"
    );

    let (code, out, err) = cairn(&["status", "hello", "--output", "json"], Some(&url));
    assert_eq!(code, 0, "{err}");
    let view: Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(view["id"], "hello");
    assert_eq!(view["status"], "Active");
    let cluster = &view["clusters"][0];
    for key in ["alias", "cartridge", "status", "min", "max", "members"] {
        assert!(cluster.get(key).is_some(), "cluster has {key}: {cluster}");
    }
    let member = &cluster["members"][0];
    for key in [
        "id",
        "status",
        "network_partition",
        "partition",
        "host",
        "ports",
        "created_at",
        "active_at",
    ] {
        assert!(member.get(key).is_some(), "member has {key}: {member}");
    }
    let created = member["created_at"].as_str().unwrap_or("");
    assert_eq!(
        created.len(),
        "2026-11-22T00:18:06.123Z".len(),
        "RFC 3339 with milliseconds: {created}"
    );
    assert!(
        member["ports"]["http-8000"]
            .as_str()
            .unwrap_or("")
            .starts_with("127.0.0.1:"),
        "{member}"
    );

    let (code, out, _) = cairn(&["apps", "--output", "json"], Some(&url));
    assert_eq!(code, 0);
    let apps: Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(apps[0]["id"], "hello");

    let (code, _, err) = cairn(&["status", "nope"], Some(&url));
    assert_eq!(code, 1);
    assert!(err.contains("application nope not found"), "{err}");

    let (code, _, err) = cairn(&["undeploy", "hello", "--timeout", "20"], Some(&url));
    assert_eq!(code, 0, "{err}");
    assert!(support::member_processes(&server.data_dir).is_empty());
}

#[test]
fn bad_arguments_are_named() {
    // Arguments, and what the error says of them.
    let cases: [(&[&str], &str); 9] = [
        (
            &["apps", "--url", "notaurl"],
            "invalid value 'notaurl' for '--url <URL>'",
        ),
        (
            &["up", "--proxy-threads", "0"],
            "invalid value '0' for '--proxy-threads",
        ),
        (
            &["up", "--proxy-threads", "x"],
            "invalid value 'x' for '--proxy-threads",
        ),
        (
            &["up", "--listen", "nonsense"],
            "invalid value 'nonsense' for '--listen",
        ),
        (
            &["up", "--proxy-bind", "1.2.3"],
            "invalid value '1.2.3' for '--proxy-bind",
        ),
        (
            &["deploy"],
            "required arguments were not provided:\n  <FILE>",
        ),
        (
            &["logs", "app"],
            "required arguments were not provided:\n  <ALIAS>",
        ),
        (
            &["apps", "--output", "yaml"],
            "invalid value 'yaml' for '--output",
        ),
        (&["frobnicate"], "unrecognized subcommand 'frobnicate'"),
    ];
    for (args, expected) in cases {
        let (code, _, err) = cairn(args, None);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(err.contains(expected), "{args:?}: {err}");
    }
}

#[test]
fn an_unreachable_server_is_named() {
    let (code, _, err) = cairn(&["apps"], Some("http://127.0.0.1:9"));
    assert_eq!(code, 1);
    assert!(
        err.contains("cannot reach Cairn at http://127.0.0.1:9"),
        "{err}"
    );
}

#[test]
fn logs_follow_takes_in_new_members_and_ends_with_the_cluster() {
    let server = Cairn::start("cli-logs", &[8080, 8081]);
    let url = format!("http://{}", server.api);
    deploy_example("three-tier.yaml", &url);
    let follow = Command::new(BIN)
        .args(["logs", "shop", "web", "-f"])
        .env("CAIRN_URL", &url)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("cairn logs runs");
    let (code, _, err) = cairn(&["scale", "shop", "web", "2"], Some(&url));
    assert_eq!(code, 0, "{err}");
    server.wait_for(
        "shop",
        "2 web members Active",
        Duration::from_secs(20),
        |v| {
            members(v)
                .iter()
                .filter(|(alias, m)| alias == "web" && m["status"] == "Active")
                .count()
                == 2
        },
    );
    // Its first lines reach the log a moment after it is Active.
    std::thread::sleep(Duration::from_millis(500));
    let (code, _, err) = cairn(&["undeploy", "shop", "--timeout", "30"], Some(&url));
    assert_eq!(code, 0, "{err}");
    let output = wait_with_timeout(follow, Duration::from_secs(10));
    let senders: std::collections::BTreeSet<&str> = output
        .lines()
        .filter_map(|line| line.split(" | ").next())
        .collect();
    assert_eq!(senders.len(), 2, "both members' lines: {output}");
}

/// The stdout of a child that must end by itself within `timeout`.
fn wait_with_timeout(mut child: std::process::Child, timeout: Duration) -> String {
    let deadline = std::time::Instant::now() + timeout;
    while child.try_wait().expect("wait").is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("still running after {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let output = child.wait_with_output().expect("output");
    String::from_utf8_lossy(&output.stdout).to_string()
}

#[test]
fn a_tcp_proxy_port_stays_with_the_application_that_holds_it() {
    let server = Cairn::start("tcp-port-held", &[9400]);
    let port = 9400 + server.offset;
    let blueprint = |app: &str, protocol: &str| {
        format!(
            "application: {app}\ncartridges:\n  db:\n    ports: [{{protocol: {protocol}, port: 5432, proxy_port: 9400}}]\ncomponents:\n  db: {{}}\n"
        )
    };
    let (code, body) = server.post_blueprint(&blueprint("pb", "tcp"));
    assert_eq!(code, 201, "{body}");
    for (app, protocol) in [("pa", "tcp"), ("pc", "http")] {
        let (code, body) = server.post_blueprint(&blueprint(app, protocol));
        assert_eq!(code, 409, "{app}: {body}");
        let expected = format!(
            "{protocol} proxy port {port} of {app}/db is taken by pb/db (tcp): give one of them another proxy port"
        );
        assert_eq!(body["error"], expected, "{app}");
    }
    let (code, out, err) = cairn(
        &["apps", "--output", "json"],
        Some(&format!("http://{}", server.api)),
    );
    assert_eq!(code, 0, "{err}");
    let apps: Value = serde_json::from_str(&out).expect("JSON");
    let ids: Vec<&str> = apps
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| a["id"].as_str())
        .collect();
    assert_eq!(ids, ["pb"], "a refused blueprint registers nothing");

    // The holder may be given again as it is; another one registered without deploying is
    // refused when it is deployed.
    let (code, body) = server.post_blueprint(&blueprint("pb", "tcp"));
    assert_eq!(code, 201, "{body}");
    let registered = support::client()
        .post(server.url("/v1/blueprints?deploy=false"))
        .body(blueprint("pa", "tcp"))
        .send()
        .expect("native API answers");
    assert_eq!(registered.status().as_u16(), 201);
    let deployed = support::client()
        .post(server.url("/v1/applications/pa/deploy"))
        .send()
        .expect("native API answers");
    assert_eq!(deployed.status().as_u16(), 409);
    let body: Value = deployed.json().unwrap_or(Value::Null);
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("is taken by pb/db (tcp)")),
        "{body}"
    );
}
