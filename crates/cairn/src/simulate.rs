//! `cairn simulate`: replays a load trace offline through the engine and an HPA baseline, and
//! prints what each would have cost and how often demand went unserved.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use cairn_sim::{HpaRules, HpaTargets, Model, Run, Window};
use clap::Args;
use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};
use serde::Serialize;

use crate::Output;
use crate::duration::parse_duration;

#[derive(Args)]
#[command(
    after_help = "Durations take ms, s, m, h or d (seconds without a unit), such as 10s or 12d. \
    Both policies start with the members the first second needs, on the same queueing model."
)]
pub struct SimulateArgs {
    /// A YAML blueprint; the scaled cluster's autoscaling policy is the one replayed
    file: PathBuf,
    /// A CSV trace: `t_seconds,rps[,concurrency]`, header optional; a header may add `memory` and
    /// `cpu` (percent per member) and order the columns after `t_seconds` freely
    #[arg(long)]
    trace: PathBuf,
    /// Multiplies every rate of the trace
    #[arg(long, default_value_t = 1.0)]
    scale: f64,
    /// Requests per second one member serves
    #[arg(long, default_value_t = 10.0)]
    capacity: f64,
    /// How long one request takes once served
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    service_time: Duration,
    /// From asking for a member until it takes traffic
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    start_delay: Duration,
    /// Where in the trace to start
    #[arg(long, default_value = "0", value_parser = parse_duration)]
    from: Duration,
    /// Where in the trace to stop (default: its end)
    #[arg(long, value_parser = parse_duration)]
    to: Option<Duration>,
    /// Writes a chart of demand, capacity and members over time for both policies
    #[arg(long)]
    svg: Option<PathBuf>,
    /// The cluster the trace loads (default: the one that can scale and takes outside traffic)
    #[arg(long)]
    cluster: Option<String>,
    #[arg(long, short, value_enum, default_value_t = Output::Text)]
    output: Output,
}

/// One policy's figures, with how fast it replayed.
#[derive(Serialize)]
struct PolicyReport<'a> {
    policy: &'a str,
    #[serde(flatten)]
    totals: &'a cairn_sim::Totals,
    wall_ms: f64,
    simulated_s_per_wall_s: f64,
}

#[derive(Serialize)]
struct Report<'a> {
    cluster: &'a str,
    trace: String,
    scale: f64,
    from_s: u64,
    model: Model,
    policies: Vec<PolicyReport<'a>>,
    svg: Option<String>,
}

pub fn simulate(args: SimulateArgs) -> anyhow::Result<ExitCode> {
    let spec = cairn_sim::app_from_blueprint(&name(&args.file), &read(&args.file)?)?;
    let cluster = cairn_sim::scaled_cluster(&spec, args.cluster.as_deref())?.clone();
    let trace = cairn_sim::parse_trace(&name(&args.trace), &read(&args.trace)?)?;
    let model = Model {
        capacity_rps: args.capacity,
        service_time_s: args.service_time.as_secs_f64(),
        start_delay_ms: args.start_delay.as_millis().try_into().unwrap_or(u64::MAX),
    };
    let load = trace.load(&Window {
        scale: args.scale,
        from_s: args.from.as_secs(),
        to_s: args.to.map(|d| d.as_secs()),
        service_time_s: model.service_time_s,
    })?;
    let started = Instant::now();
    let cairn = cairn_sim::simulate_cairn(spec, &cluster.alias, &load, &model, None)?.run;
    let cairn_wall = started.elapsed();
    let started = Instant::now();
    let targets = HpaTargets::from_policy(&cluster.autoscaling);
    let hpa = cairn_sim::simulate_hpa(
        cluster.min,
        cluster.max,
        &targets,
        &HpaRules::default(),
        &load,
        &model,
    )?;
    let hpa_wall = started.elapsed();
    if let Some(path) = &args.svg {
        std::fs::write(path, cairn_sim::chart(&[&cairn, &hpa], model.capacity_rps))
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    let report = Report {
        cluster: &cluster.alias,
        trace: name(&args.trace),
        scale: args.scale,
        from_s: load.start_s,
        model,
        policies: vec![policy(&cairn, cairn_wall), policy(&hpa, hpa_wall)],
        svg: args.svg.as_deref().map(name),
    };
    match args.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        Output::Text => print_text(&report, &cluster.autoscaling, &targets),
    }
    Ok(ExitCode::SUCCESS)
}

fn policy(run: &Run, wall: Duration) -> PolicyReport<'_> {
    let seconds = wall.as_secs_f64();
    PolicyReport {
        policy: &run.policy,
        totals: &run.totals,
        wall_ms: seconds * 1000.0,
        simulated_s_per_wall_s: if seconds > 0.0 {
            run.totals.simulated_s as f64 / seconds
        } else {
            f64::INFINITY
        },
    }
}

fn print_text(report: &Report<'_>, policy: &cairn_model::AutoscalingPolicy, targets: &HpaTargets) {
    let model = &report.model;
    let simulated = report.policies.first().map_or(0, |p| p.totals.simulated_s);
    println!(
        "{} s of {} (x{}, from {} s) on cluster {}: {} requests/s per member, {} s per request, {} s to start",
        simulated,
        report.trace,
        report.scale,
        report.from_s,
        report.cluster,
        model.capacity_rps,
        model.service_time_s,
        model.start_delay_ms as f64 / 1000.0
    );
    let timing = &policy.timing;
    println!(
        "cairn policy {}: window {} s, prediction horizon {} s, scale-down stabilisation {} s",
        policy.id,
        timing.window_ms as f64 / 1000.0,
        timing.prediction_horizon_ms as f64 / 1000.0,
        timing.scale_down_stabilization_ms as f64 / 1000.0
    );
    let target =
        |v: Option<f64>, unit: &str| v.map_or("none".to_string(), |v| format!("{v}{unit}"));
    println!(
        "hpa: sync 15 s, tolerance 10 %, scale-down window 300 s, up by max(4, 100 %); targets: in flight {}, cpu {}, memory {}",
        target(targets.in_flight_per_pod, " per pod"),
        target(targets.cpu_percent, " %"),
        target(targets.memory_percent, " %")
    );
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED);
    table.set_header([
        "POLICY",
        "DEMAND EXCEEDED (S)",
        "MEMBER-SECONDS",
        "SCALING ACTIONS",
        "MEMBERS STARTED",
        "PEAK MEMBERS",
        "SIMULATED S PER WALL S",
    ]);
    for p in &report.policies {
        table.add_row([
            p.policy.to_string(),
            p.totals.demand_exceeded_s.to_string(),
            p.totals.member_seconds.to_string(),
            p.totals.scaling_actions.to_string(),
            p.totals.members_started.to_string(),
            p.totals.peak_members.to_string(),
            format!("{:.0}", p.simulated_s_per_wall_s),
        ]);
    }
    println!("{table}");
    if let Some(svg) = &report.svg {
        println!("chart: {svg}");
    }
}

fn name(path: &Path) -> String {
    path.display().to_string()
}

fn read(path: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
}
