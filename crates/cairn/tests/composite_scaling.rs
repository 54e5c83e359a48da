//! Scaling beyond one cluster, live on real processes: scaling dependents follow each other,
//! a group instance is added when a cluster is at its max, and the application bursts into the
//! next network partition group and contracts back.

mod support;

use std::time::Duration;

use serde_json::Value;
use support::{Cairn, Load, members};

const POLICY: &str = r#"
autoscaling_policies:
  fast:
    requests_in_flight: 2
    window: 3s
    prediction_horizon: 0s
    scale_down_stabilization: 4s
    scale_down_cooldown: 1s
    drain: 500ms
"#;

fn decisions(cairn: &Cairn, app: &str) -> Vec<Value> {
    let (_, events) = cairn.get(&format!("/v1/events?application={app}"));
    events
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| !e["decision"].is_null())
        .cloned()
        .collect()
}

fn count(view: &Value, alias: &str) -> usize {
    members(view)
        .iter()
        .filter(|(a, m)| a == alias && m["status"] == "Active")
        .count()
}

#[test]
fn scaling_dependents_follow_the_busiest() {
    let cairn = Cairn::start("dependents", &[8080]);
    let blueprint = format!(
        r#"
application: deps
{POLICY}
scaling_dependents:
  - [web, api]
cartridges:
  web:
    ports: [{{port: 8000, proxy_port: 8080}}]
  api:
    ports: [{{port: 8000}}]
components:
  web: {{min: 1, max: 4, autoscaling_policy: fast}}
  api: {{min: 1, max: 4, autoscaling_policy: fast}}
"#
    );
    let (status, body) = cairn.post_blueprint(&blueprint);
    assert_eq!(status, 201, "{body}");
    cairn.wait_active("deps");
    let traffic = Load::start(
        &format!("http://127.0.0.1:{}/?latency_ms=400", 8080 + cairn.offset),
        6,
        None,
    );
    let view = cairn.wait_for(
        "deps",
        "api follows web to 3",
        Duration::from_secs(20),
        |v| count(v, "web") >= 3 && count(v, "api") >= 3,
    );
    traffic.finish();
    assert!(count(&view, "api") <= count(&view, "web"), "{view}");
    let reasons: Vec<Value> = decisions(&cairn, "deps")
        .iter()
        .filter(|e| e["subject"] == "cluster api")
        .map(|e| e["decision"]["reason"].clone())
        .collect();
    assert!(
        reasons.contains(&Value::from("dependency")),
        "api scaled as a dependent: {reasons:?}"
    );
}

#[test]
fn a_cluster_at_its_max_adds_a_group_instance() {
    let cairn = Cairn::start("group-scaling", &[8081]);
    let blueprint = format!(
        r#"
application: grouped
{POLICY}
cartridges:
  svc:
    ports: [{{port: 8000, proxy_port: 8081}}]
components:
  tier:
    group_scaling: true
    min_instances: 1
    max_instances: 2
    components:
      svc: {{min: 1, max: 2, autoscaling_policy: fast}}
"#
    );
    let (status, body) = cairn.post_blueprint(&blueprint);
    assert_eq!(status, 201, "{body}");
    cairn.wait_active("grouped");
    let traffic = Load::start(
        &format!("http://127.0.0.1:{}/?latency_ms=400", 8081 + cairn.offset),
        12,
        None,
    );
    let view = cairn.wait_for(
        "grouped",
        "two group instances with 2 members each",
        Duration::from_secs(25),
        |v| v["groups"][0]["instances"].as_array().map_or(0, Vec::len) == 2 && count(v, "svc") == 4,
    );
    traffic.finish();
    let ids: Vec<&str> = view["groups"][0]["instances"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| i["id"].as_str())
        .collect();
    assert_eq!(ids, ["tier-1", "tier-2"], "{view}");
    let group = decisions(&cairn, "grouped")
        .into_iter()
        .find(|e| e["decision"]["reason"] == "group")
        .expect("a group scaling event");
    assert_eq!(group["decision"]["to"], 2, "{group}");
    cairn.wait_for(
        "grouped",
        "back to one instance",
        Duration::from_secs(30),
        |v| {
            v["groups"][0]["instances"].as_array().map_or(0, Vec::len) == 1 && members(v).len() == 1
        },
    );
}

#[test]
fn the_application_bursts_into_the_next_partition_group_and_back() {
    let cairn = Cairn::start("burst", &[8082, 8083]);
    let blueprint = format!(
        r#"
application: bursty
{POLICY}
network_partitions:
  onprem:
    partitions: [onprem-1]
  cloud:
    partitions: [cloud-1]
    proxy_port_offset: 1
deployment_policies:
  both:
    network_partitions:
      onprem: {{partitions: {{onprem-1: 10}}}}
      cloud: {{partitions: {{cloud-1: 10}}}}
application_policies:
  burst:
    network_partitions: [onprem, cloud]
    network_partition_groups:
      - [onprem]
      - [cloud]
cartridges:
  web:
    ports: [{{port: 8000, proxy_port: 8082}}]
components:
  web: {{min: 1, max: 2, autoscaling_policy: fast, deployment_policy: both}}
"#
    );
    let (status, body) = cairn.post_blueprint(&blueprint);
    assert_eq!(status, 201, "{body}");
    cairn.wait_active("bursty");
    let partitions = |v: &Value| -> Vec<String> {
        let mut p: Vec<String> = members(v)
            .iter()
            .filter(|(_, m)| m["status"] == "Active")
            .map(|(_, m)| m["network_partition"].as_str().unwrap_or("").to_string())
            .collect();
        p.sort();
        p
    };
    let traffic = Load::start(
        &format!("http://127.0.0.1:{}/?latency_ms=400", 8082 + cairn.offset),
        12,
        None,
    );
    let view = cairn.wait_for(
        "bursty",
        "members in the cloud partition",
        Duration::from_secs(25),
        |v| {
            partitions(v).iter().filter(|p| *p == "cloud").count() >= 1
                && partitions(v).iter().filter(|p| *p == "onprem").count() == 2
        },
    );
    traffic.finish();
    assert!(partitions(&view).contains(&"cloud".to_string()), "{view}");
    // The burst partition has its own entry point, one port up, serving its own members.
    let cloud = support::client()
        .get(format!("http://127.0.0.1:{}/", 8083 + cairn.offset))
        .send()
        .expect("the cloud entry point answers");
    let member = cloud.headers()["x-cairn-member"]
        .to_str()
        .unwrap_or("")
        .to_string();
    let cloud_members: Vec<String> = members(&view)
        .iter()
        .filter(|(_, m)| m["network_partition"] == "cloud")
        .map(|(_, m)| m["id"].as_str().unwrap_or("").to_string())
        .collect();
    assert!(
        cloud_members.contains(&member),
        "{member} is not one of {cloud_members:?}"
    );
    let burst = decisions(&cairn, "bursty")
        .into_iter()
        .find(|e| e["decision"]["reason"] == "burst")
        .expect("a burst event");
    assert!(
        burst["message"].as_str().unwrap_or("").contains("cloud"),
        "{burst}"
    );
    cairn.wait_for(
        "bursty",
        "contracted back to onprem",
        Duration::from_secs(30),
        |v| partitions(v) == ["onprem"] && members(v).len() == 1,
    );
}
