//! Replays through the engine under the simulated clock: no sleeps, no wall clock.

use cairn_engine::autoscale::Reason;
use cairn_engine::{Engine, EngineConfig, Millis};
use cairn_model::{AppSpec, ComponentSpec, ScalingTiming};
use cairn_sim::{
    HpaRules, HpaTargets, Input, Load, Model, Window, app_from_blueprint, parse_trace,
    simulate_cairn, simulate_hpa,
};

/// One autoscaled cluster: requests in flight, 7 per member, between 1 and 20 members.
const BLUEPRINT: &str = r#"
application: shop
cartridges:
  web:
    ports:
      - port: 8000
autoscaling_policies:
  default:
    requests_in_flight: 7
deployment_policies:
  default:
    network_partitions:
      local:
        partitions:
          local-1: 100
components:
  web:
    min: 1
    max: 20
"#;

/// Members serve 10 requests/s, each taking a second: 10 in flight at full load, so the
/// threshold of 7 keeps them at 70 %.
const MODEL: Model = Model {
    capacity_rps: 10.0,
    service_time_s: 1.0,
    start_delay_ms: 5_000,
};

fn spec(timing: impl Fn(&mut ScalingTiming)) -> AppSpec {
    let mut spec = app_from_blueprint("shop.yaml", BLUEPRINT).expect("blueprint resolves");
    for child in &mut spec.root.children {
        if let ComponentSpec::Cluster(c) = child {
            timing(&mut c.autoscaling.timing);
        }
    }
    spec
}

fn load(rps: impl IntoIterator<Item = f64>) -> Load {
    Load {
        start_s: 0,
        rps: rps.into_iter().collect(),
        ..Load::default()
    }
}

#[test]
fn a_step_is_met_in_one_decision() {
    // 5 → 60 requests/s at t = 120: 60 / 7 in flight per member needs 9 members at once.
    let step = load((0..600).map(|t| if t < 120 { 5.0 } else { 60.0 }));
    let run = simulate_cairn(spec(|_| {}), "web", &step, &MODEL, None)
        .expect("runs")
        .run;
    let ups: Vec<_> = run.changes.iter().filter(|c| c.to > c.from).collect();
    assert_eq!(ups.len(), 1, "{:?}", run.changes);
    assert_eq!((ups[0].from, ups[0].to), (1, 9), "{:?}", run.changes);
    assert!(ups[0].t <= 122, "decided within two seconds: {:?}", ups[0]);
    let at_size = run.series.iter().find(|s| s.t > 122 && s.capacity >= 90.0);
    assert!(
        at_size.is_some_and(|s| s.t <= 122 + 7),
        "Active after the start-up delay: {at_size:?}"
    );
}

#[test]
fn oscillation_around_the_threshold_does_not_flap() {
    // 30 minutes of ±15 % around 4 members' worth of threshold. Waves up to twice the
    // stabilisation window are held; a slower wave is followed unless the window is longer.
    let check = |period_s: f64, stabilisation_ms: u64| {
        let rps = (0..1800).map(|t| {
            let phase = f64::from(t) / period_s * std::f64::consts::TAU;
            28.0 * (1.0 + 0.15 * phase.sin())
        });
        let spec = spec(|t| {
            if stabilisation_ms > 0 {
                t.scale_down_stabilization_ms = stabilisation_ms;
            }
        });
        let run = simulate_cairn(spec, "web", &load(rps), &MODEL, None)
            .expect("runs")
            .run;
        assert!(
            run.totals.scaling_actions <= 2,
            "period {period_s} s, stabilisation {stabilisation_ms} ms: {:?}",
            run.changes
        );
    };
    for period_s in [20.0, 60.0, 120.0] {
        check(period_s, 0);
    }
    check(300.0, 180_000);
}

/// The first second demand exceeds capacity after `from`, if any.
fn first_shortfall(series: &[cairn_sim::Sample], from: u64) -> Option<u64> {
    series
        .iter()
        .find(|s| s.t >= from && s.demand > s.capacity)
        .map(|s| s.t)
}

#[test]
fn a_ramp_is_met_earlier_with_prediction() {
    // Flat, then rising by 1 request/s every second for five minutes.
    let ramp = load((0..900).map(|t| 5.0 + f64::from(t.clamp(120, 420) - 120)));
    let with = |horizon_ms| {
        simulate_cairn(
            spec(|t| t.prediction_horizon_ms = horizon_ms),
            "web",
            &ramp,
            &MODEL,
            None,
        )
        .expect("runs")
        .run
    };
    let (on, off) = (with(10_000), with(0));
    assert!(
        on.totals.demand_exceeded_s < off.totals.demand_exceeded_s,
        "prediction on {:?} vs off {:?}",
        on.totals,
        off.totals
    );
    let (first_on, first_off) = (
        first_shortfall(&on.series, 0),
        first_shortfall(&off.series, 0),
    );
    assert!(
        first_on.is_none_or(|on| first_off.is_some_and(|off| on >= off)),
        "on {first_on:?} off {first_off:?}"
    );
}

#[test]
fn decisions_are_the_engines_and_replay_identically() {
    let wave = load((0..900).map(|t| 20.0 + 60.0 * (f64::from(t) / 150.0).sin().max(0.0)));
    let mut journal = Vec::new();
    let sim = simulate_cairn(spec(|_| {}), "web", &wave, &MODEL, Some(&mut journal)).expect("runs");
    assert!(sim.run.totals.scaling_actions >= 2, "{:?}", sim.run.changes);
    // Every size change the simulation counted is a decision event the engine emitted.
    let from_events: Vec<(u32, u32)> = sim
        .decisions
        .iter()
        .filter_map(|e| e.decision.as_ref().map(|d| (d.from, d.to)))
        .collect();
    let counted: Vec<(u32, u32)> = sim.run.changes.iter().map(|c| (c.from, c.to)).collect();
    assert_eq!(from_events, counted);
    // The same inputs through a fresh engine, as the control plane calls it, decide the same.
    let mut engine = Engine::new(EngineConfig::default());
    engine.deploy(spec(|_| {}), Millis(0)).expect("deploys");
    let mut decided = Vec::new();
    for input in journal {
        let out = match input {
            Input::Observe(at, observation) => engine.observe(observation, at),
            Input::ObserveBatch(at, observations) => engine.observe_batch(observations, at),
            Input::Scale(at, app, alias, size) => {
                engine.scale(&app, &alias, size, at).expect("scales")
            }
        };
        // The hold at the first second's size before the trace starts is not the autoscaler's.
        decided.extend(out.events.into_iter().filter(|e| {
            e.decision
                .as_ref()
                .is_some_and(|d| d.reason != cairn_engine::autoscale::Reason::Manual)
        }));
    }
    assert_eq!(decided, sim.decisions);
}

#[test]
fn the_baseline_follows_the_hpa_rules() {
    // A step from 1 to 9 members' worth: the HPA doubles at most per 15 s sync.
    let step = load((0..900).map(|t| if t < 100 { 5.0 } else { 60.0 }));
    let targets = HpaTargets {
        in_flight_per_pod: Some(7.0),
        cpu_percent: None,
        memory_percent: None,
    };
    let run = simulate_hpa(1, 20, &targets, &HpaRules::default(), &step, &MODEL).expect("runs");
    let first_up = run.changes.first().copied().expect("scales up");
    assert_eq!(
        (first_up.t, first_up.from, first_up.to),
        (105, 1, 5),
        "{:?}",
        run.changes
    );
    assert!(
        run.changes.iter().all(|c| c.t % 15 == 0),
        "{:?}",
        run.changes
    );
    // Demand drops at 600: scale-down waits for the five-minute window.
    let drop = load((0..1200).map(|t| if t < 600 { 60.0 } else { 5.0 }));
    let run = simulate_hpa(1, 20, &targets, &HpaRules::default(), &drop, &MODEL).expect("runs");
    let down = run
        .changes
        .iter()
        .find(|c| c.to < c.from)
        .expect("scales down");
    assert!(down.t >= 600 + 300, "{:?}", run.changes);
}

#[test]
fn memory_from_the_trace_drives_scaling() {
    // 20 requests/s: 3 members keep in flight under 7 each throughout, while memory per member
    // rises from 30 % to 95 % between 300 s and 600 s against a threshold of 80 %.
    let blueprint = BLUEPRINT.replace(
        "requests_in_flight: 7",
        "requests_in_flight: 7\n    memory_consumption: 80",
    );
    let spec = app_from_blueprint("shop.yaml", &blueprint).expect("blueprint resolves");
    let trace = parse_trace(
        "memory.csv",
        "t_seconds,memory,rps\n0,30,20\n300,30,20\n600,95,20\n",
    )
    .expect("trace");
    let load = trace.load(&Window::default()).expect("load");
    let sim = simulate_cairn(spec.clone(), "web", &load, &MODEL, None).expect("runs");
    let first_up = sim
        .decisions
        .iter()
        .filter_map(|e| e.decision.as_ref())
        .find(|d| d.to > d.from)
        .expect("scales up");
    assert_eq!(first_up.reason, Reason::MemoryConsumption, "{first_up:?}");
    let first_up_t = sim.run.changes.first().map(|c| c.t).expect("a change");
    assert!(
        first_up_t > 300,
        "not before memory rises: {:?}",
        sim.run.changes
    );
    // The same trace without its memory column stays at its size.
    let flat = Load {
        memory_percent: None,
        ..load.clone()
    };
    let still = simulate_cairn(spec, "web", &flat, &MODEL, None).expect("runs");
    assert_eq!(still.run.changes, vec![], "{:?}", still.run.changes);
    // The baseline has a memory target too, and follows it.
    let targets = HpaTargets {
        in_flight_per_pod: Some(7.0),
        cpu_percent: None,
        memory_percent: Some(80.0),
    };
    let hpa = simulate_hpa(1, 20, &targets, &HpaRules::default(), &load, &MODEL).expect("runs");
    assert!(
        hpa.changes.iter().any(|c| c.t > 300 && c.to > c.from),
        "{:?}",
        hpa.changes
    );
}
