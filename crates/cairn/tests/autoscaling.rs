//! Autoscaling on real processes: slow requests well above the requests-in-flight threshold
//! grow a cluster to its max; when the load stops it shrinks back to its min after the
//! stabilization window, draining members so that no request fails.

mod support;

use std::time::Duration;

use serde_json::Value;
use support::{Cairn, Load, active, client, members};

const BLUEPRINT: &str = r#"
application: scaling
autoscaling_policies:
  fast:
    requests_in_flight: 2
    window: 3s
    prediction_horizon: 2s
    scale_down_stabilization: 4s
    scale_down_cooldown: 1s
    drain: 1s
cartridges:
  web:
    ports:
      - port: 8000
        proxy_port: 8080
components:
  web:
    min: 1
    max: 4
    autoscaling_policy: fast
"#;

#[test]
fn requests_in_flight_scale_a_cluster_up_to_max_and_back_to_min_without_failures() {
    let cairn = Cairn::start("autoscale", &[8080]);
    let (status, body) = cairn.post_blueprint(BLUEPRINT);
    assert_eq!(status, 201, "{body}");
    cairn.wait_active("scaling");
    let url = format!("http://127.0.0.1:{}/", 8080 + cairn.offset);

    let heavy = Load::start(&format!("{url}?latency_ms=400"), 12, None);
    let grown = cairn.wait_for(
        "scaling",
        "4 Active members",
        Duration::from_secs(20),
        |v| active(v) == 4,
    );
    let (served, failures) = heavy.finish();
    assert!(
        failures.is_empty(),
        "{} of {served} failed while scaling up: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    let cluster = &grown["clusters"][0];
    assert_eq!(cluster["desired"], 4, "{cluster}");
    let rif = cluster["observations"]
        .as_array()
        .and_then(|o| o.iter().find(|e| e["factor"] == "requests_in_flight"))
        .cloned()
        .unwrap_or(Value::Null);
    assert!(
        rif["average"].as_f64().unwrap_or(0.0) > 2.0,
        "the view shows what drove it: {cluster}"
    );

    // A trickle keeps flowing through the scale-down: none of it may fail.
    let light = Load::start(&format!("{url}?latency_ms=20"), 1, None);
    cairn.wait_for(
        "scaling",
        "back to 1 member",
        Duration::from_secs(30),
        |v| members(v).len() == 1 && active(v) == 1,
    );
    let (served, failures) = light.finish();
    assert!(
        failures.is_empty(),
        "{} of {served} failed while scaling down: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert!(served > 20, "the trickle kept flowing: {served}");

    let (_, events) = cairn.get("/v1/events?application=scaling");
    let decisions: Vec<&Value> = events
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| !e["decision"].is_null())
        .collect();
    let up = decisions
        .iter()
        .find(|e| e["decision"]["to"].as_u64() > e["decision"]["from"].as_u64())
        .expect("a scale-up event");
    assert_eq!(up["decision"]["reason"], "requests_in_flight", "{up}");
    assert!(up["decision"]["estimates"][0]["threshold"] == 2.0, "{up}");
    let downs: Vec<_> = decisions
        .iter()
        .filter(|e| e["decision"]["to"].as_u64() < e["decision"]["from"].as_u64())
        .collect();
    assert!(
        downs
            .iter()
            .all(|e| e["decision"]["from"].as_u64().unwrap_or(0)
                - e["decision"]["to"].as_u64().unwrap_or(0)
                == 1),
        "one step at a time: {downs:?}"
    );
}

#[test]
fn manual_scale_holds_the_size_until_autoscaling_resumes() {
    let cairn = Cairn::start("manual", &[8080]);
    let (status, body) = cairn.post_blueprint(BLUEPRINT);
    assert_eq!(status, 201, "{body}");
    cairn.wait_active("scaling");
    let http = client();
    let scale = |size: u32| {
        http.post(cairn.url("/v1/applications/scaling/clusters/web/scale"))
            .json(&serde_json::json!({ "size": size }))
            .send()
            .expect("API answers")
    };
    let refused = scale(9);
    assert_eq!(refused.status(), 400);
    let text = refused.text().unwrap_or_default();
    assert!(text.contains("takes 1 to 4 members, not 9"), "{text}");
    assert!(text.contains(r#""path":"$.size""#), "{text}");
    // Bodies that are not {"size": N} are named by place and reason.
    let cases = [
        (
            r#"{"size": "x"}"#,
            "$.size",
            [1, 12],
            "invalid type: string \"x\", expected u32",
        ),
        (
            r#"{"size": 2, "instance": "i"}"#,
            "$.instance",
            [1, 22],
            "unknown field `instance`, expected `size`",
        ),
    ];
    for (body, path, line, reason) in cases {
        let refused = http
            .post(cairn.url("/v1/applications/scaling/clusters/web/scale"))
            .body(body)
            .send()
            .expect("API answers");
        assert_eq!(refused.status(), 400, "{body}");
        let answer: serde_json::Value = refused.json().expect("JSON");
        let problem = &answer["diagnostics"][0];
        assert_eq!(problem["location"]["path"], path, "{body}: {answer}");
        assert_eq!(
            problem["location"]["line"],
            serde_json::json!(line),
            "{body}: {answer}"
        );
        let message = problem["message"].as_str().unwrap_or("");
        assert!(message.starts_with(reason), "{body}: {answer}");
    }
    assert_eq!(scale(3).status(), 202);
    let view = cairn.wait_for(
        "scaling",
        "3 Active members",
        Duration::from_secs(10),
        |v| active(v) == 3,
    );
    assert_eq!(view["clusters"][0]["autoscaling"], false);
    // Idle, yet held at 3 well past the stabilization window.
    std::thread::sleep(Duration::from_secs(6));
    assert_eq!(active(&cairn.view("scaling").expect("deployed")), 3);
    let resumed = http
        .post(cairn.url("/v1/applications/scaling/clusters/web/autoscale"))
        .json(&serde_json::json!({ "enabled": true }))
        .send()
        .expect("API answers");
    assert_eq!(resumed.status(), 202);
    cairn.wait_for(
        "scaling",
        "back to 1 once autoscaled",
        Duration::from_secs(20),
        |v| members(v).len() == 1,
    );
}
