//! The baseline: the Kubernetes Horizontal Pod Autoscaler's rules with its default behaviour,
//! on the same queueing model and the same start-up delay as the Cairn side.
//!
//! Every sync period the HPA computes, per metric, `ceil(current × metric / target)` over the
//! ready pods, keeps the size when the ratio is within the tolerance, counts pods without a
//! metric as 0 on a scale-up and as on target on a scale-down, and takes the largest over
//! metrics. It never scales up by more than max(4 pods, 100 %) per period and scales down only
//! to the highest recommendation of the stabilisation window. There is no prediction. The
//! metrics are those of the last simulated second: fresher than metrics-server's, which favours
//! the baseline. CPU is the trace's per-pod figure where it gives one, else the queue's
//! utilisation; memory is the trace's per-pod figure, and without one the memory metric is
//! skipped.

use cairn_model::AutoscalingPolicy;
use serde::Serialize;

use crate::{Load, Model, Run, Sample, SimError, queue};

/// The HPA's defaults (`--horizontal-pod-autoscaler-sync-period`, `-tolerance`, and the
/// default `behavior`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct HpaRules {
    pub sync_period_s: u64,
    pub tolerance: f64,
    pub scale_down_window_s: u64,
    /// A scale-up adds at most the larger of this many pods …
    pub scale_up_pods: u32,
    /// … and this percentage of the current pods, per sync period.
    pub scale_up_percent: u32,
}

impl Default for HpaRules {
    fn default() -> Self {
        HpaRules {
            sync_period_s: 15,
            tolerance: 0.1,
            scale_down_window_s: 300,
            scale_up_pods: 4,
            scale_up_percent: 100,
        }
    }
}

/// The HPA's metric targets, taken from a Cairn policy's thresholds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct HpaTargets {
    /// A pods metric with an average-value target: requests in flight per pod.
    pub in_flight_per_pod: Option<f64>,
    /// A resource metric with a utilisation target: CPU percent.
    pub cpu_percent: Option<f64>,
    /// A resource metric with a utilisation target: memory percent of the pod's limit.
    pub memory_percent: Option<f64>,
}

impl HpaTargets {
    /// The policy's requests-in-flight, load-average and memory-consumption thresholds.
    pub fn from_policy(policy: &AutoscalingPolicy) -> HpaTargets {
        let positive = |v: Option<f64>| v.filter(|t| *t > 0.0);
        HpaTargets {
            in_flight_per_pod: positive(policy.requests_in_flight),
            cpu_percent: positive(policy.load_average),
            memory_percent: positive(policy.memory_consumption),
        }
    }
}

/// Each metric summed over the ready pods.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
pub struct MetricSums {
    pub in_flight: f64,
    pub cpu_percent: f64,
    /// `None` when no pod reports memory: the metric is skipped, as the HPA skips a missing one.
    pub memory_percent: Option<f64>,
}

/// Pods a metric asks for: `sum` is the metric summed over the `ready` pods, `missing` pods
/// report nothing yet, `current` is the replica count.
fn metric_replicas(
    current: u32,
    ready: u32,
    missing: u32,
    sum: f64,
    target: f64,
    tolerance: f64,
) -> u32 {
    if ready == 0 {
        return current;
    }
    let ratio = sum / f64::from(ready) / target;
    if missing == 0 {
        if (ratio - 1.0).abs() <= tolerance {
            return current;
        }
        return ceil_pods(ratio * f64::from(ready));
    }
    let all = f64::from(ready + missing);
    let assumed = if ratio < 1.0 {
        f64::from(missing) * target
    } else {
        0.0
    };
    let rebalanced = (sum + assumed) / all / target;
    let flipped = (ratio < 1.0 && rebalanced > 1.0) || (ratio > 1.0 && rebalanced < 1.0);
    if (rebalanced - 1.0).abs() <= tolerance || flipped {
        return current;
    }
    let pods = ceil_pods(rebalanced * all);
    if (rebalanced < 1.0 && pods > current) || (rebalanced > 1.0 && pods < current) {
        return current;
    }
    pods
}

fn ceil_pods(value: f64) -> u32 {
    value.ceil().clamp(0.0, f64::from(u32::MAX)) as u32
}

/// The HPA's unstabilised recommendation: the largest over its metrics, `current` without any.
pub fn hpa_recommendation(
    targets: &HpaTargets,
    rules: &HpaRules,
    current: u32,
    ready: u32,
    sums: &MetricSums,
) -> u32 {
    let missing = current.saturating_sub(ready);
    let per_metric = [
        (targets.in_flight_per_pod, Some(sums.in_flight)),
        (targets.cpu_percent, Some(sums.cpu_percent)),
        (targets.memory_percent, sums.memory_percent),
    ];
    per_metric
        .into_iter()
        .filter_map(|(target, sum)| {
            let (target, sum) = (target?, sum?);
            Some(metric_replicas(
                current,
                ready,
                missing,
                sum,
                target,
                rules.tolerance,
            ))
        })
        .max()
        .unwrap_or(current)
}

/// A pod of the baseline: created at a time, ready once its start-up delay passed.
struct Pod {
    ready_at: u64,
    ready: bool,
}

/// Replays `load` under the HPA's rules for a deployment with `[min, max]` replicas, starting
/// with the pods the first second's demand needs at the targets, all ready.
pub fn simulate_hpa(
    min: u32,
    max: u32,
    targets: &HpaTargets,
    rules: &HpaRules,
    load: &Load,
    model: &Model,
) -> Result<Run, SimError> {
    model.check()?;
    let mut run = Run::new("hpa", load.rps.len());
    let first = load.rps.first().copied().unwrap_or(0.0);
    let initial = queue::steady_members(
        targets.in_flight_per_pod,
        targets.cpu_percent,
        first,
        model,
        (min, max),
    );
    let mut pods: Vec<Pod> = (0..initial)
        .map(|_| Pod {
            ready_at: 0,
            ready: true,
        })
        .collect();
    // (time in ms, recommendation), for the scale-down stabilisation window.
    let mut recommendations: Vec<(u64, u32)> = Vec::new();
    let mut backlog = 0.0;
    let period = rules.sync_period_s.max(1);
    for (k, &demand) in load.rps.iter().enumerate() {
        let ready = pods.iter().filter(|p| p.ready).count() as u32;
        let second = queue::serve(backlog, demand, ready, model);
        backlog = second.backlog;
        let t = load.start_s + k as u64;
        run.record(Sample {
            t,
            demand,
            capacity: f64::from(ready) * model.capacity_rps,
            members: pods.len() as u32,
        });
        // The same clock as the Cairn side: readiness half a second before the second ends.
        let now = (k as u64 + 1) * 1000;
        for p in &mut pods {
            p.ready = p.ready || now - 500 >= p.ready_at;
        }
        if !(k as u64 + 1).is_multiple_of(period) {
            continue;
        }
        let current = pods.len() as u32;
        let ready = pods.iter().filter(|p| p.ready).count() as u32;
        // The ready pods hold every request in flight and report the same CPU and memory.
        let per_pod_cpu = load.cpu_percent_at(k).unwrap_or(second.utilisation * 100.0);
        let sums = MetricSums {
            in_flight: second.in_flight,
            cpu_percent: per_pod_cpu * f64::from(ready),
            memory_percent: load.memory_percent_at(k).map(|m| m * f64::from(ready)),
        };
        let recommended =
            hpa_recommendation(targets, rules, current, ready, &sums).clamp(min, max.max(min));
        recommendations.retain(|(at, _)| now - at < rules.scale_down_window_s * 1000);
        recommendations.push((now, recommended));
        let highest_recent = recommendations
            .iter()
            .map(|(_, r)| *r)
            .max()
            .unwrap_or(recommended);
        let mut desired = if recommended > current {
            recommended
        } else {
            highest_recent.min(current)
        };
        let up_limit = current
            .saturating_add(rules.scale_up_pods)
            .max(current.saturating_mul(100 + rules.scale_up_percent) / 100);
        desired = desired.min(up_limit).clamp(min, max.max(min));
        if desired == current {
            continue;
        }
        run.change(t + 1, current, desired);
        if desired > current {
            run.totals.members_started += desired - current;
            pods.extend((current..desired).map(|_| Pod {
                ready_at: now + model.start_delay_ms,
                ready: false,
            }));
        } else {
            // Pods not yet ready go first, newest first.
            pods.sort_by_key(|p| (p.ready, std::cmp::Reverse(p.ready_at)));
            pods.drain(..(current - desired) as usize);
        }
    }
    Ok(run)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(current: u32, ready: u32, in_flight_sum: f64, cpu_sum: f64, expected: u32) {
        check_memory(current, ready, in_flight_sum, cpu_sum, None, expected);
    }

    fn check_memory(
        current: u32,
        ready: u32,
        in_flight_sum: f64,
        cpu_sum: f64,
        memory_sum: Option<f64>,
        expected: u32,
    ) {
        let targets = HpaTargets {
            in_flight_per_pod: Some(10.0),
            cpu_percent: Some(70.0),
            memory_percent: Some(80.0),
        };
        let sums = MetricSums {
            in_flight: in_flight_sum,
            cpu_percent: cpu_sum,
            memory_percent: memory_sum,
        };
        let got = hpa_recommendation(&targets, &HpaRules::default(), current, ready, &sums);
        assert_eq!(got, expected, "{current} pods, {ready} ready, {sums:?}");
    }

    #[test]
    fn recommends_like_the_hpa() {
        // Within 10 % of the target: no change.
        check(4, 4, 42.0, 4.0 * 70.0, 4);
        // In flight 25 per pod: ceil(4 × 2.5).
        check(4, 4, 100.0, 4.0 * 70.0, 10);
        // CPU at 100 % against 70: ceil(4 × 100/70).
        check(4, 4, 40.0, 400.0, 6);
        // Below target: down to ceil(4 × 0.5).
        check(4, 4, 20.0, 4.0 * 35.0, 2);
        // Two pods still starting count as 0 on the way up: ceil(100 / 10).
        check(6, 4, 100.0, 4.0 * 70.0, 10);
        // … and as on target on the way down: (20 + 2·10)/6 per pod ⇒ ceil(6 × 0.67) = 4.
        check(6, 4, 20.0, 0.0, 4);
        // CPU over target until the starting pods count: the direction flips, so no change.
        check(6, 4, 20.0, 4.0 * 80.0, 6);
        // No ready pod: no metrics, no change.
        check(3, 0, 0.0, 0.0, 3);
        // Memory at 96 % against 80, the rest on target: ceil(4 × 1.2).
        check_memory(4, 4, 40.0, 4.0 * 70.0, Some(4.0 * 96.0), 5);
        // Memory low, the rest on target: the largest recommendation keeps 4.
        check_memory(4, 4, 40.0, 4.0 * 70.0, Some(4.0 * 20.0), 4);
    }
}
