//! Traffic through Cairn's load balancer to real members: even spread, Host routing on a shared
//! port, and no failed request while a member is killed under steady load.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use support::{Cairn, Load, client, members};

const BLUEPRINT: &str = r#"
application: lb
cartridges:
  web:
    host: example.test
    ports:
      - port: 8000
        proxy_port: 8080
  admin:
    host: example.test
    ports:
      - port: 8000
        proxy_port: 8080
components:
  web:
    min: 3
    max: 3
  admin:
    min: 1
    max: 1
"#;

fn start() -> Cairn {
    let cairn = Cairn::start("lb", &[8080]);
    let (status, body) = cairn.post_blueprint(BLUEPRINT);
    assert_eq!(status, 201, "{body}");
    cairn.wait_active("lb");
    cairn
}

fn proxy(cairn: &Cairn) -> String {
    format!("http://127.0.0.1:{}/", 8080 + cairn.offset)
}

#[test]
fn requests_spread_evenly_and_host_names_pick_the_cluster() {
    let cairn = start();
    let http = client();
    let mut by_member: BTreeMap<String, u32> = BTreeMap::new();
    for _ in 0..300 {
        let response = http
            .get(proxy(&cairn))
            .header("Host", "lb.web.example.test")
            .send()
            .expect("proxy answers");
        assert_eq!(response.status(), 200);
        let member = response.headers()["x-cairn-member"]
            .to_str()
            .unwrap_or("")
            .to_string();
        *by_member.entry(member).or_default() += 1;
    }
    assert_eq!(by_member.len(), 3, "{by_member:?}");
    for (member, count) in &by_member {
        assert!(
            (90..=110).contains(count),
            "{member} got {count} of 300: {by_member:?}"
        );
        assert!(member.starts_with("lb.web."), "{member}");
    }
    let admin = http
        .get(proxy(&cairn))
        .header("Host", "lb.admin.example.test:8080")
        .send()
        .expect("proxy answers");
    assert_eq!(admin.status(), 200);
    assert!(
        admin.headers()["x-cairn-member"]
            .to_str()
            .unwrap_or("")
            .starts_with("lb.admin.")
    );
    let unknown = http
        .get(proxy(&cairn))
        .header("Host", "nobody.example.test")
        .send()
        .expect("proxy answers");
    assert_eq!(unknown.status(), 404);
    let text = unknown.text().unwrap_or_default();
    assert!(text.contains("nobody.example.test"), "{text}");
}

#[test]
fn killing_a_member_under_steady_load_fails_no_request() {
    let cairn = start();
    let url = proxy(&cairn);
    let load = Load::start(&url, 4, Some("lb.web.example.test"));
    std::thread::sleep(Duration::from_millis(700));
    let view = cairn.view("lb").expect("deployed");
    let victim = members(&view)
        .into_iter()
        .find(|(alias, _)| alias == "web")
        .map(|(_, m)| m["id"].as_str().unwrap_or("").to_string())
        .expect("a web member");
    let before = load.ok();
    support::kill9(support::pid_of(&cairn.data_dir, &victim).expect("victim runs"));
    cairn.wait_for(
        "lb",
        "the killed member replaced",
        Duration::from_secs(10),
        |v| {
            let web: Vec<_> = members(v).into_iter().filter(|(a, _)| a == "web").collect();
            web.len() == 3
                && web
                    .iter()
                    .all(|(_, m)| m["status"] == "Active" && m["id"] != victim.as_str())
        },
    );
    std::thread::sleep(Duration::from_millis(500));
    let (total, failures) = load.finish();
    assert!(
        failures.is_empty(),
        "{} of {} requests failed: {:?}",
        failures.len(),
        total,
        &failures[..failures.len().min(5)]
    );
    assert!(
        total > before + 100,
        "load kept flowing after the kill: {before} then {total}"
    );
}

#[test]
fn a_taken_proxy_port_is_told_in_the_events_and_served_once_it_is_free() {
    let cairn = Cairn::start("lb-taken", &[8080]);
    let port = 8080 + cairn.offset;
    let holder = std::net::TcpListener::bind(("127.0.0.1", port)).expect("take the proxy port");
    let (status, body) = cairn.post_blueprint(BLUEPRINT);
    assert_eq!(status, 201, "{body}");
    cairn.wait_active("lb");
    let said = |what: &str| {
        let (_, events) = cairn.get("/v1/events?application=lb");
        events.as_array().is_some_and(|events| {
            events.iter().any(|e| {
                e["subject"] == "load balancer"
                    && e["message"].as_str().is_some_and(|m| m.starts_with(what))
            })
        })
    };
    let taken = format!("cannot listen on port {port}");
    wait_until("the taken port in the events", || said(&taken));
    drop(holder);
    wait_until("the port served again", || {
        client()
            .get(proxy(&cairn))
            .header("Host", "lb.web.example.test")
            .send()
            .is_ok_and(|r| r.status() == 200)
    });
    assert!(said(&format!("resolved: {taken}")), "the end is told too");

    // What was told is stored as it was told, none of it written over: it survives a crash.
    let events = |cairn: &Cairn| {
        let (_, events) = cairn.get("/v1/events?application=lb");
        events.as_array().cloned().unwrap_or_default()
    };
    let before = events(&cairn);
    let mut cairn = cairn;
    cairn.kill9();
    cairn.launch();
    let after = events(&cairn);
    assert!(
        after.len() >= before.len() && after[..before.len()] == before[..],
        "before the crash:\n{before:#?}\nafter it:\n{after:#?}"
    );
}

/// Polls `check` for up to 15 s (the proxy retries a taken port every 5 s).
fn wait_until(what: &str, check: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while !check() {
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: not within 15 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
