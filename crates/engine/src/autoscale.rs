//! The autoscaler: per cluster and factor, a windowed average with its first and second
//! derivative, a prediction at the policy's horizon, the members each factor needs, and the
//! decision — up at once, down one step at a time after the need stayed lower for a while.
//!
//! Units: values are per cluster (requests in flight summed over members; load average and
//! memory as the mean percentage over members), time in seconds for derivatives.

use std::collections::VecDeque;

use cairn_model::{AutoscalingPolicy, ScalingTiming};
use serde::{Deserialize, Serialize};

use crate::state::Millis;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Factor {
    RequestsInFlight,
    MemoryConsumption,
    LoadAverage,
}

impl Factor {
    pub const ALL: [Factor; 3] = [
        Factor::RequestsInFlight,
        Factor::MemoryConsumption,
        Factor::LoadAverage,
    ];

    pub fn threshold(self, policy: &AutoscalingPolicy) -> Option<f64> {
        match self {
            Factor::RequestsInFlight => policy.requests_in_flight,
            Factor::MemoryConsumption => policy.memory_consumption,
            Factor::LoadAverage => policy.load_average,
        }
    }
}

/// Why a cluster's size changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    RequestsInFlight,
    MemoryConsumption,
    LoadAverage,
    /// The need fell below the cluster's min.
    Min,
    /// A cluster it scales together with needed more.
    Dependency,
    /// Set by hand.
    Manual,
    /// A cluster at its max needed more: a new group instance.
    Group,
    /// The application was at its max: it expands into the next network partition group.
    Burst,
}

impl From<Factor> for Reason {
    fn from(f: Factor) -> Reason {
        match f {
            Factor::RequestsInFlight => Reason::RequestsInFlight,
            Factor::MemoryConsumption => Reason::MemoryConsumption,
            Factor::LoadAverage => Reason::LoadAverage,
        }
    }
}

/// What one factor says about a cluster now.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Estimate {
    pub factor: Factor,
    /// The windowed average.
    pub average: f64,
    /// The latest sample.
    pub latest: f64,
    /// First derivative, per second.
    pub gradient: f64,
    /// Second derivative, per second squared.
    pub acceleration: f64,
    /// `average + u·t + ½·a·t²`, never below the latest sample.
    pub predicted: f64,
    pub threshold: f64,
    /// Members this factor needs, within [min, max].
    pub required: u32,
    /// Members this factor needs, before clamping: above max means the cluster is short.
    pub wanted: u32,
}

/// A change of a cluster's desired size, with everything behind it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    pub from: u32,
    pub to: u32,
    pub reason: Reason,
    pub estimates: Vec<Estimate>,
}

/// Samples of one factor, oldest first.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Series(VecDeque<(Millis, f64)>);

/// The autoscaler's memory for one cluster.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ScalerState {
    pub requests_in_flight: Series,
    pub memory_consumption: Series,
    pub load_average: Series,
    /// Recent recommendations, for the scale-down stabilization window.
    pub recommendations: VecDeque<(Millis, u32)>,
    pub last_scale_up: Option<Millis>,
    pub last_scale_down: Option<Millis>,
    /// Set by `cairn scale`: autoscaling is suspended while it is.
    pub manual: bool,
}

impl ScalerState {
    fn series_mut(&mut self, factor: Factor) -> &mut Series {
        match factor {
            Factor::RequestsInFlight => &mut self.requests_in_flight,
            Factor::MemoryConsumption => &mut self.memory_consumption,
            Factor::LoadAverage => &mut self.load_average,
        }
    }

    pub fn series(&self, factor: Factor) -> &Series {
        match factor {
            Factor::RequestsInFlight => &self.requests_in_flight,
            Factor::MemoryConsumption => &self.memory_consumption,
            Factor::LoadAverage => &self.load_average,
        }
    }

    /// Adds a sample and forgets what fell out of the window.
    pub fn record(&mut self, factor: Factor, at: Millis, value: f64, timing: &ScalingTiming) {
        if !value.is_finite() {
            return;
        }
        let series = &mut self.series_mut(factor).0;
        series.push_back((at, value));
        while series
            .front()
            .is_some_and(|(t, _)| at.saturating_sub(*t) > timing.window_ms)
        {
            series.pop_front();
        }
    }
}

/// The sizes a decision starts from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sizes {
    pub active: u32,
    /// Members created or starting: capacity soon, not yet.
    pub pending: u32,
    pub desired: u32,
    pub min: u32,
    pub max: u32,
}

/// Average, derivatives and prediction of one series; `None` without samples.
pub fn estimate(series: &Series, horizon_ms: u64) -> Option<(f64, f64, f64, f64, f64)> {
    let samples = &series.0;
    let (&(t0, _), &(_, latest)) = (samples.front()?, samples.back()?);
    let n = samples.len() as f64;
    let average = samples.iter().map(|(_, v)| v).sum::<f64>() / n;
    // Least-squares fit of v = c + u·x + ½·a·x² with x in seconds from the first sample.
    let points: Vec<(f64, f64)> = samples
        .iter()
        .map(|(t, v)| (t.saturating_sub(t0) as f64 / 1000.0, *v))
        .collect();
    let (gradient, acceleration) = fit(&points);
    // Derivatives at the newest sample, not at the window's start.
    let x_last = points.last().map(|p| p.0).unwrap_or(0.0);
    let gradient_now = gradient + acceleration * x_last;
    let t = horizon_ms as f64 / 1000.0;
    let predicted = if horizon_ms == 0 {
        average
    } else {
        average + gradient_now * t + 0.5 * acceleration * t * t
    };
    Some((
        average,
        latest,
        gradient_now,
        acceleration,
        predicted.max(latest).max(0.0),
    ))
}

/// Gradient and second derivative of the best quadratic (or line, with few points) through the points.
fn fit(points: &[(f64, f64)]) -> (f64, f64) {
    let n = points.len() as f64;
    if points.len() < 2 {
        return (0.0, 0.0);
    }
    let mean_x = points.iter().map(|p| p.0).sum::<f64>() / n;
    let mean_y = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = points.iter().map(|p| (p.0 - mean_x).powi(2)).sum();
    if sxx == 0.0 {
        return (0.0, 0.0);
    }
    let sxy: f64 = points.iter().map(|p| (p.0 - mean_x) * (p.1 - mean_y)).sum();
    let linear = sxy / sxx;
    if points.len() < 4 {
        return (linear, 0.0);
    }
    // Quadratic term from the normal equations, on centred x for stability.
    let (mut s2, mut s3, mut s4, mut sy2) = (0.0, 0.0, 0.0, 0.0);
    for &(x, y) in points {
        let d = x - mean_x;
        s2 += d * d;
        s3 += d * d * d;
        s4 += d * d * d * d;
        sy2 += d * d * (y - mean_y);
    }
    let s2_mean = s2 / n;
    // Solve [[s2, s3], [s3, s4 - s2·s2/n]] · [b, c] = [sxy, sy2] for y ≈ m + b·d + c·(d² − s2/n).
    let a11 = s2;
    let a12 = s3;
    let a22 = s4 - s2 * s2_mean;
    let det = a11 * a22 - a12 * a12;
    if det.abs() < 1e-9 {
        return (linear, 0.0);
    }
    let b = (sxy * a22 - a12 * sy2) / det;
    let c = (a11 * sy2 - a12 * sxy) / det;
    // y = m + b·(x − x̄) + c·(x − x̄)² + …: gradient at x̄ is b, second derivative 2c; the
    // caller moves the gradient to the newest point, so return it at x = 0.
    let gradient_at_zero = b - 2.0 * c * mean_x;
    (gradient_at_zero, 2.0 * c)
}

/// Members one factor needs, before clamping.
fn required(factor: Factor, predicted: f64, threshold: f64, sizes: Sizes, tolerance: f64) -> u32 {
    let active = sizes.active.max(1) as f64;
    let needed = match factor {
        Factor::RequestsInFlight => predicted / threshold,
        // Stratos multiplied by min; the load is spread over the Active members, so they count.
        Factor::LoadAverage => active * predicted / threshold,
        Factor::MemoryConsumption => {
            if predicted <= threshold || sizes.max <= sizes.min {
                return sizes.min;
            }
            let per_member = (100.0 - threshold) / f64::from(sizes.max - sizes.min);
            f64::from(sizes.min) + (predicted - threshold) / per_member
        }
    };
    // Within the tolerance band around what runs now, keep what runs.
    if factor != Factor::MemoryConsumption && (needed / active - 1.0).abs() <= tolerance {
        return sizes.active.max(sizes.min);
    }
    let needed = needed.ceil();
    if needed <= 0.0 {
        0
    } else {
        needed.min(f64::from(u32::MAX)) as u32
    }
}

/// Every factor's estimate for a cluster, with the members it needs.
pub fn estimates(state: &ScalerState, policy: &AutoscalingPolicy, sizes: Sizes) -> Vec<Estimate> {
    let timing = &policy.timing;
    Factor::ALL
        .iter()
        .filter_map(|&factor| {
            let threshold = factor.threshold(policy).filter(|t| *t > 0.0)?;
            let (average, latest, gradient, acceleration, predicted) =
                estimate(state.series(factor), timing.prediction_horizon_ms)?;
            let wanted = required(factor, predicted, threshold, sizes, timing.tolerance);
            let required = wanted.clamp(sizes.min, sizes.max.max(sizes.min));
            Some(Estimate {
                factor,
                average,
                latest,
                gradient,
                acceleration,
                predicted,
                threshold,
                required,
                wanted,
            })
        })
        .collect()
}

/// The cluster's need: the largest over factors, within [min, max], and why.
pub fn need(estimates: &[Estimate], sizes: Sizes) -> (u32, Reason) {
    let top = estimates
        .iter()
        .max_by_key(|e| (e.required, std::cmp::Reverse(e.factor)));
    match top {
        Some(e) if e.required > sizes.min => (e.required, e.factor.into()),
        _ => (sizes.min, Reason::Min),
    }
}

/// Decides the desired size from a need: up at once, down one step once the need stayed lower
/// for the stabilization window and the cooldown has passed.
pub fn decide(
    state: &mut ScalerState,
    timing: &ScalingTiming,
    now: Millis,
    sizes: Sizes,
    need: (u32, Reason),
    estimates: Vec<Estimate>,
) -> Option<Decision> {
    let (wanted, reason) = need;
    state.recommendations.push_back((now, wanted));
    while state
        .recommendations
        .front()
        .is_some_and(|(t, _)| now.saturating_sub(*t) > timing.scale_down_stabilization_ms)
    {
        state.recommendations.pop_front();
    }
    if state.manual {
        return None;
    }
    let since = |t: Option<Millis>| t.map_or(u64::MAX, |t| now.saturating_sub(t));
    if wanted > sizes.desired {
        if since(state.last_scale_up) < timing.scale_up_cooldown_ms {
            return None;
        }
        state.last_scale_up = Some(now);
        return Some(Decision {
            from: sizes.desired,
            to: wanted,
            reason,
            estimates,
        });
    }
    // The highest need over the window is what the cluster may shrink to.
    let stable = state
        .recommendations
        .iter()
        .map(|(_, r)| *r)
        .max()
        .unwrap_or(wanted);
    let window_full = state.recommendations.front().is_some_and(|(t, _)| {
        now.saturating_sub(*t) >= timing.scale_down_stabilization_ms.saturating_sub(1_000)
    });
    if stable >= sizes.desired || !window_full {
        return None;
    }
    if since(state.last_scale_down) < timing.scale_down_cooldown_ms
        || since(state.last_scale_up) < timing.scale_down_cooldown_ms
    {
        return None;
    }
    state.last_scale_down = Some(now);
    Some(Decision {
        from: sizes.desired,
        to: sizes.desired - 1,
        reason,
        estimates,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(rif: f64, horizon_ms: u64) -> AutoscalingPolicy {
        AutoscalingPolicy {
            id: "p".into(),
            requests_in_flight: Some(rif),
            memory_consumption: Some(80.0),
            load_average: Some(70.0),
            timing: ScalingTiming {
                prediction_horizon_ms: horizon_ms,
                ..ScalingTiming::default()
            },
        }
    }

    fn series(values: &[(u64, f64)]) -> Series {
        Series(values.iter().map(|&(t, v)| (Millis(t), v)).collect())
    }

    #[test]
    fn derivatives_have_units_per_second() {
        // v = 2 + 3t: gradient 3 per second, no curvature.
        let line: Vec<(u64, f64)> = (0..10).map(|s| (s * 1000, 2.0 + 3.0 * s as f64)).collect();
        let (average, latest, u, a, predicted) = estimate(&series(&line), 10_000).expect("samples");
        assert!((average - 15.5).abs() < 1e-9);
        assert_eq!(latest, 29.0);
        assert!((u - 3.0).abs() < 1e-6, "{u}");
        assert!(a.abs() < 1e-6, "{a}");
        assert!((predicted - (15.5 + 30.0)).abs() < 1e-6, "{predicted}");
        // v = t²: second derivative 2 per second squared, gradient 2t at the newest sample.
        let parabola: Vec<(u64, f64)> = (0..10).map(|s| (s * 1000, (s * s) as f64)).collect();
        let (_, _, u, a, _) = estimate(&series(&parabola), 0).expect("samples");
        assert!((a - 2.0).abs() < 1e-6, "{a}");
        assert!((u - 18.0).abs() < 1e-6, "{u}");
    }

    fn sizes(active: u32, desired: u32) -> Sizes {
        Sizes {
            active,
            pending: 0,
            desired,
            min: 1,
            max: 10,
        }
    }

    fn check_required(factor: Factor, predicted: f64, threshold: f64, active: u32, expected: u32) {
        assert_eq!(
            required(factor, predicted, threshold, sizes(active, active), 0.1),
            expected,
            "{factor:?} {predicted}/{threshold} with {active}"
        );
    }

    #[test]
    fn members_needed_per_factor() {
        check_required(Factor::RequestsInFlight, 95.0, 20.0, 1, 5);
        check_required(Factor::RequestsInFlight, 41.0, 20.0, 2, 2);
        check_required(Factor::LoadAverage, 140.0, 70.0, 2, 4);
        check_required(Factor::MemoryConsumption, 50.0, 80.0, 3, 1);
        // Above the threshold: min + (p − t) / ((100 − t) / (max − min)) = 1 + 10 / (20 / 9).
        check_required(Factor::MemoryConsumption, 90.0, 80.0, 3, 6);
    }

    #[test]
    fn scales_up_at_once_and_down_one_step_after_stabilization() {
        let p = policy(10.0, 0);
        let mut state = ScalerState::default();
        let mut desired = 1;
        let mut decisions = Vec::new();
        for s in 0..200u64 {
            let now = Millis(s * 1000);
            let load = if s < 20 { 75.0 } else { 5.0 };
            state.record(Factor::RequestsInFlight, now, load, &p.timing);
            let sz = Sizes {
                active: desired,
                pending: 0,
                desired,
                min: 1,
                max: 10,
            };
            let est = estimates(&state, &p, sz);
            if let Some(d) = decide(&mut state, &p.timing, now, sz, need(&est, sz), est) {
                decisions.push((s, d.from, d.to));
                desired = d.to;
            }
        }
        assert_eq!(decisions[0], (0, 1, 8), "{decisions:?}");
        let downs: Vec<_> = decisions.iter().filter(|d| d.2 < d.1).collect();
        assert!(downs.iter().all(|d| d.1 - d.2 == 1), "{decisions:?}");
        assert!(
            downs.first().is_some_and(|d| d.0 >= 20 + 59),
            "stabilized first: {decisions:?}"
        );
        assert_eq!(desired, 1, "{decisions:?}");
    }
}
