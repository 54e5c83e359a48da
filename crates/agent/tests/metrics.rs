//! Real processes started through the agent report their CPU and memory use.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::Duration;

use cairn_agent::{Agent, AgentConfig};
use cairn_engine::{Observation, StartMember};
use cairn_model::{Cartridge, HealthCheck, Probe};
use cairn_runtime::ProcessRuntime;
use tokio::sync::mpsc::UnboundedReceiver;

/// A directory removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let dir =
            std::env::temp_dir().join(format!("cairn-agent-{name}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn agent(dir: &TempDir) -> (Agent<ProcessRuntime>, UnboundedReceiver<Observation>) {
    Agent::new(
        ProcessRuntime::new(dir.0.clone()),
        AgentConfig {
            host: "localhost".into(),
            log_dir: dir.0.join("logs"),
            workload_command: vec!["false".into()],
            stop_grace: Duration::from_millis(200),
            proxy_port_offset: 0,
        },
    )
}

/// A member that runs `script` under `sh`, with the given cartridge properties.
fn start(member_id: &str, script: &str, properties: &[(&str, &str)]) -> StartMember {
    StartMember {
        member_id: member_id.into(),
        application: "app".into(),
        cluster: "c".into(),
        cartridge: Cartridge {
            kind: "shell".into(),
            host: None,
            category: None,
            provider: None,
            display_name: None,
            description: None,
            version: None,
            multi_tenant: false,
            port_mappings: Vec::new(),
            command: Some(vec!["sh".into(), "-c".into(), script.into()]),
            image: None,
            env: BTreeMap::new(),
            health: HealthCheck {
                probe: Probe::Process,
                interval_ms: 1000,
                timeout_ms: 1000,
                failure_threshold: 3,
            },
            properties: properties
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        },
        network_partition: "np".into(),
        partition: "p".into(),
        dependencies: Vec::new(),
    }
}

/// The latest (cpu_percent, memory_percent) per member, read until `done` holds or the time is up.
async fn watch_load(
    observations: &mut UnboundedReceiver<Observation>,
    within: Duration,
    done: impl Fn(&HashMap<String, (Option<f64>, Option<f64>)>) -> bool,
) -> HashMap<String, (Option<f64>, Option<f64>)> {
    let mut latest: HashMap<String, (Option<f64>, Option<f64>)> = HashMap::new();
    let deadline = tokio::time::Instant::now() + within;
    while !done(&latest) {
        let next = tokio::time::timeout_at(deadline, observations.recv()).await;
        match next {
            Ok(Some(Observation::Load {
                member_id,
                cpu_percent,
                memory_percent,
                ..
            })) => {
                let entry = latest.entry(member_id).or_default();
                entry.0 = cpu_percent.or(entry.0);
                entry.1 = memory_percent.or(entry.1);
            }
            Ok(Some(Observation::Exited {
                member_id, reason, ..
            })) => {
                panic!("{member_id} exited: {reason}")
            }
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => break,
        }
    }
    latest
}

#[tokio::test]
async fn busy_member_reports_cpu_use_of_its_share() {
    let dir = TempDir::new("cpu");
    let (agent, mut observations) = agent(&dir);
    // A quarter core as the share keeps the test meaningful on a host busy with other work.
    let share = [("cpu_cores", "0.25")];
    // The loop ends by itself should the test fail before it stops the member.
    let busy = "end=$(($(date +%s) + 30)); while [ $(date +%s) -lt $end ]; do i=0; while [ $i -lt 10000 ]; do i=$((i + 1)); done; done";
    agent.start(start("busy", busy, &share));
    agent.start(start("idle", "sleep 30", &share));
    let cpu = |latest: &HashMap<String, (Option<f64>, Option<f64>)>, id: &str| {
        latest.get(id).and_then(|load| load.0)
    };
    let loaded = |latest: &HashMap<String, (Option<f64>, Option<f64>)>| {
        cpu(latest, "busy").is_some_and(|c| c > 50.0) && cpu(latest, "idle").is_some()
    };
    let latest = watch_load(&mut observations, Duration::from_secs(10), loaded).await;
    agent.stop_now("busy").await;
    agent.stop_now("idle").await;
    assert!(
        loaded(&latest),
        "no cpu_percent above 50 of a quarter core within 10 s: {latest:?}"
    );
    let idle = cpu(&latest, "idle").unwrap_or(f64::MAX);
    assert!(
        idle < 20.0,
        "a sleeping shell uses {idle}% of a quarter core"
    );
}

#[tokio::test]
async fn ballast_shows_as_memory_use_of_the_limit() {
    let dir = TempDir::new("memory");
    let (agent, mut observations) = agent(&dir);
    let limit = [("memory_limit_mb", "128")];
    // GNU tail keeps the last 64 MiB of its input in memory until the input ends.
    let ballast = "{ head -c 67108864 /dev/zero; sleep 30; } | tail -c 67108864 > /dev/null";
    agent.start(start("ballast", ballast, &limit));
    agent.start(start("idle", "sleep 30", &limit));
    let memory = |latest: &HashMap<String, (Option<f64>, Option<f64>)>, id: &str| {
        latest.get(id).and_then(|load| load.1)
    };
    let loaded = |latest: &HashMap<String, (Option<f64>, Option<f64>)>| {
        memory(latest, "ballast").is_some_and(|m| m > 40.0) && memory(latest, "idle").is_some()
    };
    let latest = watch_load(&mut observations, Duration::from_secs(10), loaded).await;
    agent.stop_now("ballast").await;
    agent.stop_now("idle").await;
    assert!(
        loaded(&latest),
        "no memory_percent above 40 of 128 MiB within 10 s: {latest:?}"
    );
    let idle = memory(&latest, "idle").unwrap_or(f64::MAX);
    assert!(idle < 10.0, "an idle shell uses {idle}% of 128 MiB");
}
