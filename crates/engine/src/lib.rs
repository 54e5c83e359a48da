//! Cairn's decision logic: the monitor tree application → group instances → clusters → members,
//! startup orders, termination behaviours, placement over partitions.
//!
//! The engine is plain code over the model, the observations fed to it and an injected clock:
//! no I/O, no threads, no async. The control plane feeds it inputs and carries out the actions it
//! returns; simulation feeds it the same inputs at any speed.

pub mod autoscale;
mod placement;
mod reconcile;
pub mod state;
pub mod view;

use std::collections::BTreeMap;

use cairn_model::{AppSpec, Cartridge, DomainMapping};
use serde::{Deserialize, Serialize};

pub use state::{Member, MemberStatus, Millis, State, Status};
pub use view::{AppView, ClusterRoute};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EngineConfig {
    /// A member not Active this long after it was created is faulted.
    pub start_timeout_ms: u64,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            start_timeout_ms: 60_000,
        }
    }
}

/// What the engine asks the runtime side to do.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Action {
    StartMember(Box<StartMember>),
    StopMember(StopMember),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StartMember {
    pub member_id: String,
    pub application: String,
    pub cluster: String,
    pub cartridge: Cartridge,
    pub network_partition: String,
    pub partition: String,
    /// The clusters this member's cluster waits for, with their Active members' endpoints.
    pub dependencies: Vec<DependencyEndpoints>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DependencyEndpoints {
    /// The cluster's alias.
    pub alias: String,
    /// Port mapping name to the `host:port` of every Active member.
    pub ports: BTreeMap<String, Vec<String>>,
    /// Port mapping name to the load balancer's (declared) proxy port.
    pub proxy_ports: BTreeMap<String, u16>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StopMember {
    pub member_id: String,
    pub application: String,
    pub cluster: String,
    pub reason: String,
}

/// What the runtime side reports about a member.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Observation {
    /// Its process runs with these ports (port mapping name to `host:port`).
    Started {
        member_id: String,
        pid: u32,
        host: String,
        ports: BTreeMap<String, String>,
    },
    /// Its health check passed.
    Healthy { member_id: String },
    /// Its health check failed past the threshold, or it could not be started.
    Unhealthy { member_id: String, reason: String },
    /// Its process is gone; `killed` when SIGKILL ended it, which only the kernel or a person
    /// sends, so its death says nothing of whether its program can run.
    Exited {
        member_id: String,
        reason: String,
        killed: bool,
    },
    /// Load figures; each source reports the ones it measures.
    Load {
        member_id: String,
        in_flight: Option<f64>,
        cpu_percent: Option<f64>,
        memory_percent: Option<f64>,
    },
}

impl Observation {
    pub fn member_id(&self) -> &str {
        match self {
            Observation::Started { member_id, .. }
            | Observation::Healthy { member_id }
            | Observation::Unhealthy { member_id, .. }
            | Observation::Exited { member_id, .. }
            | Observation::Load { member_id, .. } => member_id,
        }
    }
}

/// Something that happened, for the event log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub at: Millis,
    pub application: String,
    /// What it is about: `member <id>`, `cluster <alias>`, `group <instance id>`, `application`.
    pub subject: String,
    pub message: String,
    /// For scaling decisions: the sizes, the reason and the figures behind it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision: Option<autoscale::Decision>,
}

/// The actions to carry out and the events to record after one step.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Output {
    pub actions: Vec<Action>,
    pub events: Vec<Event>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EngineError {
    #[error("application {0} is already deployed")]
    AlreadyDeployed(String),
    #[error("application {0} is not deployed")]
    NotDeployed(String),
    #[error("application {application} has no cluster {alias}")]
    NoCluster { application: String, alias: String },
    #[error("cluster {alias} takes {}, not {asked}", member_range(*.min, *.max))]
    OutOfRange {
        alias: String,
        min: u32,
        max: u32,
        asked: u32,
    },
}

fn member_range(min: u32, max: u32) -> String {
    match (min, max) {
        (1, 1) => "1 member".into(),
        (min, max) if min == max => format!("{min} members"),
        (min, max) => format!("{min} to {max} members"),
    }
}

/// A member with where it belongs.
#[derive(Debug, Clone, Copy)]
pub struct MemberRef<'a> {
    pub application: &'a str,
    pub cluster: &'a str,
    pub cartridge: &'a Cartridge,
    pub member: &'a Member,
}

/// The engine: state plus the functions that move it.
#[derive(Debug, Clone, Default)]
pub struct Engine {
    config: EngineConfig,
    state: State,
}

impl Engine {
    pub fn new(config: EngineConfig) -> Engine {
        Engine {
            config,
            state: State::default(),
        }
    }

    /// Rebuilds an engine from persisted state.
    pub fn restore(config: EngineConfig, mut state: State) -> Engine {
        for app in state.apps.values_mut() {
            reconcile::recount_group_instances(app);
        }
        Engine { config, state }
    }

    /// Takes up the restored state at `now`: members that were still starting get a whole
    /// start timeout from now, since the time the platform was down is not theirs.
    pub fn resume(&mut self, now: Millis) {
        for app in self.state.apps.values_mut() {
            reconcile::restart_start_clocks(app, now);
        }
    }

    pub fn state(&self) -> &State {
        &self.state
    }

    pub fn is_deployed(&self, application: &str) -> bool {
        self.state.apps.contains_key(application)
    }

    pub fn deploy(&mut self, spec: AppSpec, now: Millis) -> Result<Output, EngineError> {
        if self.state.apps.contains_key(&spec.id) {
            return Err(EngineError::AlreadyDeployed(spec.id));
        }
        let id = spec.id.clone();
        let app = reconcile::new_app(spec, now);
        self.state.apps.insert(id.clone(), app);
        let mut out = Output::default();
        out.events.push(Event {
            at: now,
            application: id.clone(),
            subject: "application".into(),
            message: "deployed".into(),
            decision: None,
        });
        self.reconcile_app(&id, now, &mut out);
        Ok(out)
    }

    pub fn undeploy(&mut self, application: &str, now: Millis) -> Result<Output, EngineError> {
        let Some(app) = self.state.apps.get_mut(application) else {
            return Err(EngineError::NotDeployed(application.to_string()));
        };
        let mut out = Output::default();
        if !app.undeploying {
            app.undeploying = true;
            out.events.push(Event {
                at: now,
                application: application.to_string(),
                subject: "application".into(),
                message: "undeploying in reverse dependency order".into(),
                decision: None,
            });
        }
        self.reconcile_app(application, now, &mut out);
        Ok(out)
    }

    /// Replaces a deployed application's domain mappings, by cluster alias; the load balancer
    /// routes by them from the next route table on.
    pub fn set_domain_mappings(
        &mut self,
        application: &str,
        mappings: BTreeMap<String, Vec<DomainMapping>>,
        now: Millis,
    ) -> Result<Output, EngineError> {
        let Some(app) = self.state.apps.get_mut(application) else {
            return Err(EngineError::NotDeployed(application.to_string()));
        };
        let mut out = Output::default();
        if app.spec.domain_mappings != mappings {
            let count: usize = mappings.values().map(Vec::len).sum();
            app.spec.domain_mappings = mappings;
            out.events.push(Event {
                at: now,
                application: application.to_string(),
                subject: "application".into(),
                message: format!("domain mappings changed: {count} now"),
                decision: None,
            });
        }
        Ok(out)
    }

    /// Applies one observation; a member the engine does not know is stopped.
    pub fn observe(&mut self, observation: Observation, now: Millis) -> Output {
        let mut out = Output::default();
        let Some(app_id) =
            reconcile::apply_observation(&mut self.state, &observation, now, &mut out)
        else {
            if let Observation::Started { member_id, .. } = &observation {
                out.actions.push(Action::StopMember(StopMember {
                    member_id: member_id.clone(),
                    application: String::new(),
                    cluster: String::new(),
                    reason: "unknown member".into(),
                }));
            }
            return out;
        };
        self.reconcile_app(&app_id, now, &mut out);
        out
    }

    /// Sets a cluster's size by hand and suspends its autoscaling; `None` resumes autoscaling.
    pub fn scale(
        &mut self,
        application: &str,
        alias: &str,
        size: Option<u32>,
        now: Millis,
    ) -> Result<Output, EngineError> {
        let Some(app) = self.state.apps.get_mut(application) else {
            return Err(EngineError::NotDeployed(application.to_string()));
        };
        let Some((min, max)) = reconcile::cluster_bounds(&app.spec.root, alias) else {
            return Err(EngineError::NoCluster {
                application: application.to_string(),
                alias: alias.to_string(),
            });
        };
        if let Some(asked) = size.filter(|n| !(min..=max).contains(n)) {
            return Err(EngineError::OutOfRange {
                alias: alias.to_string(),
                min,
                max,
                asked,
            });
        }
        let mut out = Output::default();
        reconcile::set_manual(app, alias, size, now, &mut out);
        self.reconcile_app(application, now, &mut out);
        Ok(out)
    }

    /// Records load figures without a pass: the next `tick` or `observe_batch` samples them, so
    /// figures from several sources are sampled together at the caller's pace.
    pub fn record(&mut self, observation: Observation, now: Millis) {
        let mut out = Output::default();
        reconcile::apply_observations(&mut self.state, vec![observation], now, &mut out);
    }

    /// Applies many observations, then lets time pass: one pass per application for the lot.
    pub fn observe_batch(
        &mut self,
        observations: impl IntoIterator<Item = Observation>,
        now: Millis,
    ) -> Output {
        let mut out = Output::default();
        reconcile::apply_observations(
            &mut self.state,
            observations.into_iter().collect(),
            now,
            &mut out,
        );
        let tick = self.tick(now);
        out.actions.extend(tick.actions);
        out.events.extend(tick.events);
        out
    }

    /// Lets time pass: start timeouts, and anything that waits for time.
    pub fn tick(&mut self, now: Millis) -> Output {
        let mut out = Output::default();
        let ids: Vec<String> = self.state.apps.keys().cloned().collect();
        for id in ids {
            self.reconcile_app(&id, now, &mut out);
        }
        out
    }

    /// The runtime view of one application.
    pub fn view(&self, application: &str) -> Option<AppView> {
        self.state.apps.get(application).map(view::app_view)
    }

    /// Every cluster's Active members, for the load balancer.
    pub fn routes(&self) -> Vec<ClusterRoute> {
        self.state.apps.values().flat_map(view::routes).collect()
    }

    /// Every member the engine knows, with its cluster's cartridge, for recovery after a restart.
    pub fn members(&self) -> Vec<MemberRef<'_>> {
        let mut all = Vec::new();
        for app in self.state.apps.values() {
            view::visit_members(&app.spec.root, &app.root, &mut |cluster, member| {
                all.push(MemberRef {
                    application: &app.spec.id,
                    cluster: &cluster.alias,
                    cartridge: &cluster.cartridge,
                    member,
                })
            });
        }
        all
    }

    fn reconcile_app(&mut self, id: &str, now: Millis, out: &mut Output) {
        let Some(app) = self.state.apps.get_mut(id) else {
            return;
        };
        let mut ctx = reconcile::Ctx {
            now,
            config: &self.config,
            next_member: &mut self.state.next_member,
            group_instance_numbers: BTreeMap::new(),
            out,
        };
        let finished = reconcile::reconcile_app(app, &mut ctx);
        if finished {
            self.state.apps.remove(id);
            out.events.push(Event {
                at: now,
                application: id.to_string(),
                subject: "application".into(),
                message: "undeployed: every member terminated".into(),
                decision: None,
            });
        }
    }
}

#[cfg(test)]
mod tests;
