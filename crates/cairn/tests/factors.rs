//! The memory and load-average factors, live: memory ballast in a workload member scales its
//! cluster up on memory, CPU burn scales it up on load average, and each event says which.

mod support;

use std::time::Duration;

use serde_json::Value;
use support::{Cairn, Load, active, client, members};

fn blueprint(threshold_key: &str, properties: &str) -> String {
    format!(
        r#"
application: factors
autoscaling_policies:
  one:
    {threshold_key}: 50
    window: 3s
    prediction_horizon: 0s
    scale_down_stabilization: 60s
cartridges:
  w:
    properties: {{{properties}}}
    ports:
      - port: 8000
        proxy_port: 8080
components:
  w: {{min: 1, max: 4, autoscaling_policy: one}}
"#
    )
}

fn first_scale_up(cairn: &Cairn) -> Option<Value> {
    let (_, events) = cairn.get("/v1/events?application=factors");
    events
        .as_array()
        .into_iter()
        .flatten()
        .find(|e| e["decision"]["to"].as_u64() > e["decision"]["from"].as_u64())
        .cloned()
}

#[test]
fn memory_ballast_scales_up_on_memory() {
    let cairn = Cairn::start("memory", &[8080]);
    let (status, body) =
        cairn.post_blueprint(&blueprint("memory_consumption", "memory_limit_mb: \"256\""));
    assert_eq!(status, 201, "{body}");
    let view = cairn.wait_active("factors");
    let member = &members(&view)[0].1;
    let addr = member["ports"]["http-8000"]
        .as_str()
        .expect("member port")
        .to_string();
    let response = client()
        .post(format!("http://{addr}/ballast?mb=200"))
        .send()
        .expect("member answers");
    assert!(response.status().is_success(), "{:?}", response.text());
    cairn.wait_for(
        "factors",
        "scaled up on memory",
        Duration::from_secs(20),
        |v| active(v) >= 2,
    );
    let event = first_scale_up(&cairn).expect("a scale-up event");
    assert_eq!(event["decision"]["reason"], "memory_consumption", "{event}");
    let estimate = &event["decision"]["estimates"][0];
    assert_eq!(estimate["factor"], "memory_consumption");
    assert!(
        estimate["predicted"].as_f64().unwrap_or(0.0) > 50.0,
        "{estimate}"
    );
}

#[test]
fn cpu_burn_scales_up_on_load_average() {
    let cairn = Cairn::start("cpu", &[8080]);
    let (status, body) = cairn.post_blueprint(&blueprint("load_average", "cpu_cores: \"0.25\""));
    assert_eq!(status, 201, "{body}");
    cairn.wait_active("factors");
    let url = format!("http://127.0.0.1:{}/?cpu_ms=200", 8080 + cairn.offset);
    let burners = Load::start(&url, 2, None);
    cairn.wait_for(
        "factors",
        "scaled up on load average",
        Duration::from_secs(20),
        |v| active(v) >= 2,
    );
    burners.finish();
    let event = first_scale_up(&cairn).expect("a scale-up event");
    assert_eq!(event["decision"]["reason"], "load_average", "{event}");
    assert!(
        event["decision"]["estimates"][0]["predicted"]
            .as_f64()
            .unwrap_or(0.0)
            > 50.0,
        "{event}"
    );
}
