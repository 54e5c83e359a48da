//! Autoscaling on real processes: slow requests well above the requests-in-flight threshold
//! grow a cluster to its max; when the load stops it shrinks back to its min after the
//! stabilization window, draining members so that no request fails.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{Cairn, client, members};

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

struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    failures: Arc<std::sync::Mutex<Vec<String>>>,
    workers: Vec<JoinHandle<()>>,
}

/// `workers` clients sending requests that each take `latency_ms`, bounded to a minute.
fn load(url: String, workers: usize, latency_ms: u64) -> Load {
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(std::sync::Mutex::new(Vec::new()));
    let workers = (0..workers)
        .map(|_| {
            let (url, stop, ok, failures) =
                (url.clone(), stop.clone(), ok.clone(), failures.clone());
            std::thread::spawn(move || {
                let http = client();
                let deadline = Instant::now() + Duration::from_secs(60);
                while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                    match http.get(format!("{url}?latency_ms={latency_ms}")).send() {
                        Ok(r) if r.status() == 200 => {
                            ok.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(r) => failures
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .push(format!("HTTP {}", r.status())),
                        Err(e) => failures
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .push(e.to_string()),
                    }
                }
            })
        })
        .collect();
    Load {
        stop,
        ok,
        failures,
        workers,
    }
}

impl Load {
    fn finish(self) -> (u64, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        for w in self.workers {
            let _ = w.join();
        }
        let failures = self
            .failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        (self.ok.load(Ordering::Relaxed), failures)
    }
}

fn active(view: &Value) -> usize {
    members(view)
        .iter()
        .filter(|(_, m)| m["status"] == "Active")
        .count()
}

#[test]
fn requests_in_flight_scale_a_cluster_up_to_max_and_back_to_min_without_failures() {
    let cairn = Cairn::start("autoscale", &[8080]);
    let (status, body) = cairn.post_blueprint(BLUEPRINT);
    assert_eq!(status, 201, "{body}");
    cairn.wait_active("scaling");
    let url = format!("http://127.0.0.1:{}/", 8080 + cairn.offset);

    let heavy = load(url.clone(), 12, 400);
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
    let light = load(url, 1, 20);
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
    assert_eq!(refused.status(), 409);
    let text = refused.text().unwrap_or_default();
    assert!(text.contains("between 1 and 4"), "{text}");
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
