//! The Cairn side: the engine itself, with a simulated runtime and load balancer around it.
//!
//! The calls are the live control plane's: lifecycle reports go through `Engine::observe` as
//! they happen, and every member's load goes through one `Engine::observe_batch` per second.
//! Lifecycle reports land half a second before each load batch, so the engine samples each
//! cluster exactly once per simulated second, at the batch, as it does live.

use std::collections::BTreeMap;

use cairn_engine::{
    Action, Engine, EngineConfig, Event, MemberStatus, Millis, Observation, Output,
};
use cairn_model::AppSpec;
use serde::Serialize;

use crate::{Load, Model, Run, Sample, SimError, queue, scaled_cluster};

/// The longest wait for the scaled cluster's first members before the trace starts.
const WARM_UP_LIMIT_S: u64 = 3_600;

/// One call into the engine, as made; replaying them into a fresh engine that deployed the
/// same application at time zero reproduces the run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum Input {
    Observe(Millis, Observation),
    ObserveBatch(Millis, Vec<Observation>),
    /// Application, cluster and size, as `Engine::scale` takes them.
    Scale(Millis, String, String, Option<u32>),
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CairnRun {
    pub run: Run,
    /// The scaled cluster's decision events, verbatim from the engine.
    pub decisions: Vec<Event>,
}

/// A member's process in the simulated runtime.
#[derive(Debug)]
struct Process {
    /// Whether it belongs to the scaled cluster.
    scaled: bool,
    ready_at: Millis,
    started: bool,
    healthy: bool,
}

/// Everything around the engine: processes, the calls made, the decisions seen.
struct World<'a> {
    engine: Engine,
    alias: String,
    subject: String,
    start_delay_ms: u64,
    processes: BTreeMap<String, Process>,
    /// Stopped processes whose exit is reported next.
    exiting: Vec<String>,
    next_pid: u32,
    journal: Option<&'a mut Vec<Input>>,
    decisions: Vec<Event>,
    /// The scaled cluster's Active and draining members, as of the last change.
    routed: (Vec<String>, Vec<String>),
    /// Members of the scaled cluster asked to start.
    started: u32,
    /// Set when the engine reported anything: every change of a member's status comes with an
    /// event or an action, so without one the routed members are as they were.
    changed: bool,
}

impl World<'_> {
    fn observe(&mut self, observation: Observation, now: Millis) {
        if let Some(journal) = self.journal.as_deref_mut() {
            journal.push(Input::Observe(now, observation.clone()));
        }
        let out = self.engine.observe(observation, now);
        self.apply(out, now);
    }

    /// Holds the scaled cluster at `size`, or hands it back to the autoscaler.
    fn scale(&mut self, app: &str, size: Option<u32>, now: Millis) -> Result<(), SimError> {
        if let Some(journal) = self.journal.as_deref_mut() {
            journal.push(Input::Scale(now, app.to_string(), self.alias.clone(), size));
        }
        let out = self.engine.scale(app, &self.alias, size, now)?;
        self.apply(out, now);
        Ok(())
    }

    fn observe_batch(&mut self, observations: Vec<Observation>, now: Millis) {
        if let Some(journal) = self.journal.as_deref_mut() {
            journal.push(Input::ObserveBatch(now, observations.clone()));
        }
        let out = self.engine.observe_batch(observations, now);
        self.apply(out, now);
    }

    /// Carries out the engine's actions and keeps the scaled cluster's decisions.
    fn apply(&mut self, out: Output, now: Millis) {
        self.changed |= !(out.actions.is_empty() && out.events.is_empty());
        for action in out.actions {
            match action {
                Action::StartMember(start) => {
                    let scaled = start.cluster == self.alias;
                    self.started += u32::from(scaled);
                    self.processes.insert(
                        start.member_id,
                        Process {
                            scaled,
                            ready_at: Millis(now.0 + self.start_delay_ms),
                            started: false,
                            healthy: false,
                        },
                    );
                }
                Action::StopMember(stop) => {
                    if self.processes.remove(&stop.member_id).is_some() {
                        self.exiting.push(stop.member_id);
                    }
                }
            }
        }
        self.decisions.extend(
            out.events
                .into_iter()
                .filter(|e| e.decision.is_some() && e.subject == self.subject),
        );
    }

    /// Reports processes that started, became healthy or exited since the last call.
    fn lifecycle(&mut self, now: Millis) {
        let mut due = Vec::new();
        for (id, p) in &mut self.processes {
            if !p.started {
                p.started = true;
                self.next_pid += 1;
                due.push(Observation::Started {
                    member_id: id.clone(),
                    pid: self.next_pid,
                    host: "sim".into(),
                    ports: BTreeMap::new(),
                });
            }
            if !p.healthy && now >= p.ready_at {
                p.healthy = true;
                due.push(Observation::Healthy {
                    member_id: id.clone(),
                });
            }
        }
        for id in std::mem::take(&mut self.exiting) {
            due.push(Observation::Exited {
                member_id: id,
                reason: "stopped".into(),
                killed: false,
            });
        }
        for observation in due {
            self.observe(observation, now);
        }
    }

    /// The scaled cluster's members the engine routes to, and those it drains.
    fn routed(&mut self) -> &(Vec<String>, Vec<String>) {
        if !std::mem::take(&mut self.changed) {
            return &self.routed;
        }
        let (active, draining) = &mut self.routed;
        active.clear();
        draining.clear();
        for m in self.engine.members() {
            if m.cluster != self.alias {
                continue;
            }
            match m.member.status {
                MemberStatus::Active => active.push(m.member.id.clone()),
                // Until it is stopped; then only its exit is left to report.
                MemberStatus::ReadyToShutDown if self.processes.contains_key(&m.member.id) => {
                    draining.push(m.member.id.clone())
                }
                _ => {}
            }
        }
        &self.routed
    }

    fn members(&self) -> u32 {
        self.processes.values().filter(|p| p.scaled).count() as u32
    }
}

/// Replays `load` on cluster `alias` of the application, deployed into a fresh engine.
///
/// Every Active member reports an equal share of the requests in flight, the trace's CPU
/// percent or else the queue's utilisation as its load average, and the trace's memory percent
/// when it gives one.
///
/// Before the trace's first second the scaled cluster is held at the members the first
/// second's demand needs at the policy's thresholds until they are Active, then handed back to
/// the autoscaler; `journal`, when given, receives every call made into the engine.
pub fn simulate_cairn(
    spec: AppSpec,
    alias: &str,
    load: &Load,
    model: &Model,
    journal: Option<&mut Vec<Input>>,
) -> Result<CairnRun, SimError> {
    model.check()?;
    let cluster = scaled_cluster(&spec, Some(alias))?;
    let policy = &cluster.autoscaling;
    let first = load.rps.first().copied().unwrap_or(0.0);
    let initial = queue::steady_members(
        policy.requests_in_flight.filter(|t| *t > 0.0),
        policy.load_average.filter(|t| *t > 0.0),
        first,
        model,
        (cluster.min, cluster.max),
    );
    let name = format!("cairn ({})", policy.id);
    let app = spec.id.clone();
    let config = EngineConfig {
        start_timeout_ms: EngineConfig::default()
            .start_timeout_ms
            .max(model.start_delay_ms.saturating_mul(2)),
    };
    let mut world = World {
        engine: Engine::new(config),
        alias: alias.to_string(),
        subject: format!("cluster {alias}"),
        start_delay_ms: model.start_delay_ms,
        processes: BTreeMap::new(),
        exiting: Vec::new(),
        next_pid: 0,
        journal,
        decisions: Vec::new(),
        routed: (Vec::new(), Vec::new()),
        started: 0,
        changed: true,
    };
    let out = world.engine.deploy(spec, Millis(0))?;
    world.apply(out, Millis(0));
    world.scale(&app, Some(initial), Millis(0))?;
    let mut base = 0;
    while world.routed().0.len() < initial as usize {
        if base >= WARM_UP_LIMIT_S * 1000 {
            return Err(SimError::NeverActive {
                alias: alias.to_string(),
                waited_s: WARM_UP_LIMIT_S,
            });
        }
        base += 1000;
        world.lifecycle(Millis(base - 500));
        world.observe_batch(Vec::new(), Millis(base));
    }
    world.scale(&app, None, Millis(base))?;
    world.decisions.clear();
    world.started = 0;
    let mut run = Run::new(&name, load.rps.len());
    let mut backlog = 0.0;
    for (k, &demand) in load.rps.iter().enumerate() {
        let (active, draining) = world.routed().clone();
        let second = queue::serve(backlog, demand, active.len() as u32, model);
        backlog = second.backlog;
        let t = load.start_s + k as u64;
        run.record(Sample {
            t,
            demand,
            capacity: active.len() as f64 * model.capacity_rps,
            members: world.members(),
        });
        let now = base + (k as u64 + 1) * 1000;
        let seen = world.decisions.len();
        world.lifecycle(Millis(now - 500));
        let share = second.in_flight / active.len().max(1) as f64;
        let cpu = load.cpu_percent_at(k).unwrap_or(second.utilisation * 100.0);
        let memory = load.memory_percent_at(k);
        let report =
            |member_id: String, in_flight: f64, cpu: f64, memory: Option<f64>| Observation::Load {
                member_id,
                in_flight: Some(in_flight),
                cpu_percent: Some(cpu),
                memory_percent: memory,
            };
        let mut loads: Vec<Observation> = active
            .into_iter()
            .map(|id| report(id, share, cpu, memory))
            .collect();
        // The queue belongs to the routed members: a draining one holds no requests, so it is stopped.
        loads.extend(draining.into_iter().map(|id| report(id, 0.0, 0.0, None)));
        world.observe_batch(loads, Millis(now));
        for event in &world.decisions[seen..] {
            if let Some(d) = &event.decision {
                run.change(t + 1, d.from, d.to);
            }
        }
    }
    run.totals.members_started = world.started;
    Ok(CairnRun {
        run,
        decisions: world.decisions,
    })
}
