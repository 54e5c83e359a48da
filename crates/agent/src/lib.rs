//! Runs members on one host through a runtime, checks their health, and reports what it sees
//! as the engine's observations, among them each member's CPU and memory use.
//!
//! The agent decides nothing: it starts and stops what it is told to and reports facts.

mod health;
pub mod metrics;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cairn_engine::{Observation, StartMember, StopMember};
use cairn_runtime::{Adoption, MemberSpec, PortRequest, RunningMember, Runtime};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

pub use health::probe;

#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// The name members' `host` field shows.
    pub host: String,
    pub log_dir: PathBuf,
    /// What a cartridge without a command runs: the built-in workload.
    pub workload_command: Vec<String>,
    /// How long a stopping member gets between SIGTERM and SIGKILL.
    pub stop_grace: Duration,
    /// Added to declared proxy ports, as the load balancer does.
    pub proxy_port_offset: u16,
}

/// A handle on the host's members; cheap to clone.
pub struct Agent<R: Runtime> {
    inner: Arc<Inner<R>>,
}

impl<R: Runtime> Clone for Agent<R> {
    fn clone(&self) -> Self {
        Agent {
            inner: self.inner.clone(),
        }
    }
}

struct Inner<R> {
    runtime: R,
    config: AgentConfig,
    observations: mpsc::UnboundedSender<Observation>,
    /// Health watchers by member id.
    watchers: Mutex<HashMap<String, JoinHandle<()>>>,
    /// Starts under way by member id: a stop waits for the start, or it would find nothing to stop.
    starting: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Members whose process runs as far as the agent knows: started or adopted, not yet exited.
    running: Mutex<std::collections::HashSet<String>>,
    /// The members whose CPU and memory use is sampled.
    sampled: metrics::SampledMembers,
}

impl<R: Runtime> Agent<R> {
    /// Starts the agent; observations arrive on the returned receiver.
    pub fn new(
        runtime: R,
        config: AgentConfig,
    ) -> (Agent<R>, mpsc::UnboundedReceiver<Observation>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut exits = runtime.exits();
        let sampled = metrics::SampledMembers::default();
        tokio::spawn(metrics::sample(sampled.clone(), tx.clone()));
        let agent = Agent {
            inner: Arc::new(Inner {
                runtime,
                config,
                observations: tx,
                watchers: Mutex::new(HashMap::new()),
                starting: Mutex::new(HashMap::new()),
                running: Mutex::new(std::collections::HashSet::new()),
                sampled,
            }),
        };
        let forward = agent.clone();
        tokio::spawn(async move {
            while let Some(exit) = exits.recv().await {
                lock(&forward.inner.running).remove(&exit.member_id);
                forward.forget(&exit.member_id);
                forward.report(Observation::Exited {
                    member_id: exit.member_id.clone(),
                    reason: exit.status.to_string(),
                    killed: exit.status.is_sigkill(),
                });
            }
        });
        (agent, rx)
    }

    pub fn config(&self) -> &AgentConfig {
        &self.inner.config
    }

    /// Starts a member in the background; its progress arrives as observations.
    pub fn start(&self, action: StartMember) {
        let agent = self.clone();
        let gate = Arc::new(tokio::sync::Mutex::new(()));
        // Taken before the task runs, so a stop issued right after this call always waits for it.
        let Ok(held) = gate.clone().try_lock_owned() else {
            return;
        };
        lock(&self.inner.starting).insert(action.member_id.clone(), gate);
        tokio::spawn(async move {
            let _held = held;
            let id = action.member_id.clone();
            let share = share(&action);
            let spec = agent.member_spec(&action, &share);
            let result = agent.inner.runtime.start(spec).await;
            lock(&agent.inner.starting).remove(&id);
            match result {
                Ok(running) => agent.started(&action, running, share),
                Err(e) => agent.report(Observation::Exited {
                    member_id: id,
                    reason: format!("could not start: {e}"),
                    killed: false,
                }),
            }
        });
    }

    /// Waits until a start of this member that is under way has finished.
    async fn started_or_failed(&self, member_id: &str) {
        let gate = lock(&self.inner.starting).get(member_id).cloned();
        if let Some(gate) = gate {
            let _ = gate.lock().await;
        }
    }

    /// Stops a member in the background; its exit arrives as an observation.
    pub fn stop(&self, action: StopMember) {
        self.forget(&action.member_id);
        let agent = self.clone();
        tokio::spawn(async move {
            agent.started_or_failed(&action.member_id).await;
            agent.forget(&action.member_id);
            if !lock(&agent.inner.running).contains(&action.member_id) {
                // No process to stop and so no exit to come: say so, or the engine waits on it.
                agent.report(Observation::Exited {
                    member_id: action.member_id.clone(),
                    reason: "not running when asked to stop".into(),
                    killed: false,
                });
                return;
            }
            let grace = agent.inner.config.stop_grace;
            if let Err(e) = agent.inner.runtime.stop(&action.member_id, grace).await {
                tracing::warn!(member = %action.member_id, "stop failed: {e}");
            }
        });
    }

    /// Stops a member and waits until it has exited.
    pub async fn stop_now(&self, member_id: &str) {
        self.started_or_failed(member_id).await;
        self.forget(member_id);
        if let Err(e) = self
            .inner
            .runtime
            .stop(member_id, self.inner.config.stop_grace)
            .await
        {
            tracing::warn!(member = %member_id, "stop failed: {e}");
        }
    }

    /// Takes over a member that ran before the control plane restarted; false if it is gone.
    pub async fn adopt(
        &self,
        record: &RunningMember,
        health: &cairn_model::HealthCheck,
        active: bool,
    ) -> bool {
        if self.inner.runtime.adopt(record).await != Adoption::Adopted {
            return false;
        }
        lock(&self.inner.running).insert(record.member_id.clone());
        self.watch(
            &record.member_id,
            health.clone(),
            record.ports.clone(),
            active,
        );
        self.sample(
            &record.member_id,
            record.pid,
            metrics::share_of_process(record.pid),
        );
        true
    }

    /// Stops every process of ours that is not in `keep`: leftovers of a crash.
    pub async fn kill_orphans(&self, keep: &[String]) -> Vec<String> {
        self.inner.runtime.kill_orphans(keep).await
    }

    fn started(&self, action: &StartMember, running: RunningMember, share: metrics::Share) {
        lock(&self.inner.running).insert(running.member_id.clone());
        let ports = running
            .ports
            .iter()
            .map(|(name, addr)| (name.clone(), addr.to_string()))
            .collect();
        self.report(Observation::Started {
            member_id: running.member_id.clone(),
            pid: running.pid,
            host: self.inner.config.host.clone(),
            ports,
        });
        self.sample(&running.member_id, running.pid, share);
        self.watch(
            &running.member_id,
            action.cartridge.health.clone(),
            running.ports,
            false,
        );
    }

    fn sample(&self, member_id: &str, pid: u32, share: metrics::Share) {
        let mut sampled = self.inner.sampled.lock().unwrap_or_else(|e| e.into_inner());
        sampled.insert(member_id.to_string(), metrics::Sampled { pid, share });
    }

    fn watch(
        &self,
        member_id: &str,
        check: cairn_model::HealthCheck,
        ports: BTreeMap<String, SocketAddr>,
        active: bool,
    ) {
        let tx = self.inner.observations.clone();
        let id = member_id.to_string();
        let handle = tokio::spawn(health::watch(id.clone(), check, ports, active, tx));
        let mut watchers = self
            .inner
            .watchers
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(old) = watchers.insert(id, handle) {
            old.abort();
        }
    }

    fn forget(&self, member_id: &str) {
        let mut watchers = self
            .inner
            .watchers
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(handle) = watchers.remove(member_id) {
            handle.abort();
        }
        drop(watchers);
        let mut sampled = self.inner.sampled.lock().unwrap_or_else(|e| e.into_inner());
        sampled.remove(member_id);
    }

    fn report(&self, observation: Observation) {
        // The receiver only goes away when the control plane shuts down.
        let _ = self.inner.observations.send(observation);
    }

    fn member_spec(&self, action: &StartMember, share: &metrics::Share) -> MemberSpec {
        let config = &self.inner.config;
        let cartridge = &action.cartridge;
        let command = cartridge
            .command
            .clone()
            .unwrap_or_else(|| config.workload_command.clone());
        let mut env = cartridge.env.clone();
        env.insert(
            "CAIRN_NETWORK_PARTITION".into(),
            action.network_partition.clone(),
        );
        env.insert("CAIRN_PARTITION".into(), action.partition.clone());
        env.extend(dependency_env(
            &action.dependencies,
            config.proxy_port_offset,
        ));
        env.extend(metrics::share_env(share));
        MemberSpec {
            member_id: action.member_id.clone(),
            application: action.application.clone(),
            cluster: action.cluster.clone(),
            command,
            env,
            ports: cartridge
                .port_mappings
                .iter()
                .map(|p| PortRequest {
                    name: p.name.clone(),
                    port: p.port,
                })
                .collect(),
            log_dir: config.log_dir.clone(),
        }
    }
}

/// The member's CPU share and memory limit from its cartridge's properties; defaults where a
/// property does not parse.
fn share(action: &StartMember) -> metrics::Share {
    let properties = &action.cartridge.properties;
    metrics::parse_share(properties, metrics::CPU_CORES_PROPERTY, metrics::MEMORY_LIMIT_PROPERTY)
        .unwrap_or_else(|e| {
            tracing::warn!(member = %action.member_id, "cartridge {}: {e}; using the default share", action.cartridge.kind);
            metrics::Share::default()
        })
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// The environment that tells a member where the clusters it depends on are.
pub fn dependency_env(
    deps: &[cairn_engine::DependencyEndpoints],
    proxy_port_offset: u16,
) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    let aliases: Vec<&str> = deps.iter().map(|d| d.alias.as_str()).collect();
    if !aliases.is_empty() {
        env.insert("CAIRN_DEPENDS_ON".into(), aliases.join(","));
    }
    for dep in deps {
        for (port, addrs) in &dep.ports {
            env.insert(
                format!("CAIRN_DEP_{}_{}", env_name(&dep.alias), env_name(port)),
                addrs.join(","),
            );
        }
        for (port, proxy) in &dep.proxy_ports {
            let listen = proxy.saturating_add(proxy_port_offset);
            env.insert(
                format!(
                    "CAIRN_DEP_{}_{}_PROXY",
                    env_name(&dep.alias),
                    env_name(port)
                ),
                format!("127.0.0.1:{listen}"),
            );
        }
    }
    env
}

/// `my-db.http` → `MY_DB_HTTP`: upper case, anything else than letters and digits becomes `_`.
pub fn env_name(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_engine::DependencyEndpoints;

    #[test]
    fn dependency_env_names_every_endpoint() {
        let deps = vec![DependencyEndpoints {
            alias: "my-db".into(),
            ports: BTreeMap::from([(
                "http-80".into(),
                vec!["127.0.0.1:4000".into(), "127.0.0.1:4001".into()],
            )]),
            proxy_ports: BTreeMap::from([("http-80".into(), 8280)]),
        }];
        let env = dependency_env(&deps, 10_000);
        assert_eq!(env["CAIRN_DEPENDS_ON"], "my-db");
        assert_eq!(
            env["CAIRN_DEP_MY_DB_HTTP_80"],
            "127.0.0.1:4000,127.0.0.1:4001"
        );
        assert_eq!(env["CAIRN_DEP_MY_DB_HTTP_80_PROXY"], "127.0.0.1:18280");
    }
}
