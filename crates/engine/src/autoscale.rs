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

impl Factor {
    /// In words, as events say it.
    pub fn name(self) -> &'static str {
        match self {
            Factor::RequestsInFlight => "requests in flight",
            Factor::MemoryConsumption => "memory consumption",
            Factor::LoadAverage => "load average",
        }
    }
}

impl Reason {
    /// In words, as events say it.
    pub fn name(self) -> &'static str {
        match self {
            Reason::RequestsInFlight => "requests in flight",
            Reason::MemoryConsumption => "memory consumption",
            Reason::LoadAverage => "load average",
            Reason::Min => "min",
            Reason::Dependency => "dependency",
            Reason::Manual => "manual",
            Reason::Group => "group",
            Reason::Burst => "burst",
        }
    }
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
    /// `average + u·t + ½·a·t²` when both halves of the window rise, else the latest sample;
    /// never below the latest sample.
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
    // Samples and recommendations refill within a window after a restart, so they are not stored.
    #[serde(skip)]
    pub requests_in_flight: Series,
    #[serde(skip)]
    pub memory_consumption: Series,
    #[serde(skip)]
    pub load_average: Series,
    /// Recent recommendations, for the scale-down stabilization window.
    #[serde(skip)]
    pub recommendations: VecDeque<(Millis, u32)>,
    pub last_scale_up: Option<Millis>,
    pub last_scale_down: Option<Millis>,
    /// Set by `cairn scale`: autoscaling is suspended while it is.
    pub manual: bool,
    /// When members of the cluster were last seen starting.
    #[serde(default)]
    pub last_pending: Option<Millis>,
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
    let points: Vec<(f64, f64)> = samples
        .iter()
        .map(|(t, v)| (t.saturating_sub(t0) as f64 / 1000.0, *v))
        .collect();
    let (gradient_now, acceleration, rising) = derivatives(&points);
    let t = horizon_ms as f64 / 1000.0;
    // Only a rise the whole window shows is extrapolated; anything else stays where it is now.
    let predicted = if rising && horizon_ms > 0 {
        // No steeper than the window itself rose: a wave's upswing is not a surge.
        let lowest = samples.iter().map(|(_, v)| *v).fold(latest, f64::min);
        let span = points.last().map_or(0.0, |p| p.0).max(1.0);
        let ceiling = latest + (latest - lowest) * t / span;
        (average + gradient_now * t + 0.5 * acceleration * t * t).min(ceiling)
    } else {
        latest
    };
    Some((
        average,
        latest,
        gradient_now,
        acceleration,
        predicted.max(latest).max(0.0),
    ))
}

/// Gradient at the newest point, second derivative (x in seconds), and whether both halves of
/// the window rise.
///
/// Each half of the window gets a robust slope, the median of its pairwise slopes, so a single
/// jump or outlier does not read as a trend; the second derivative is the change between the
/// halves' slopes. When both halves rise, the gradient is carried to the newest point along
/// that change; otherwise it is the newest half's slope: a fall that slows down is levelling
/// off, not turning into a surge.
fn derivatives(points: &[(f64, f64)]) -> (f64, f64, bool) {
    if points.len() < 4 {
        return (median_slope(points).unwrap_or(0.0), 0.0, false);
    }
    let (first, second) = points.split_at(points.len() / 2);
    let (Some(s1), Some(s2)) = (median_slope(first), median_slope(second)) else {
        return (0.0, 0.0, false);
    };
    let centre = |half: &[(f64, f64)]| half.iter().map(|p| p.0).sum::<f64>() / half.len() as f64;
    let (c1, c2) = (centre(first), centre(second));
    let acceleration = (s2 - s1) / (c2 - c1);
    if !acceleration.is_finite() {
        return (s2, 0.0, false);
    }
    if s1 > 0.0 && s2 > 0.0 {
        let x_last = points.last().map_or(c2, |p| p.0);
        return (s2 + acceleration * (x_last - c2), acceleration, true);
    }
    (s2, acceleration, false)
}

/// The median of the slopes between every two points at different times.
fn median_slope(points: &[(f64, f64)]) -> Option<f64> {
    let mut slopes = Vec::with_capacity(points.len() * points.len().saturating_sub(1) / 2);
    for (i, a) in points.iter().enumerate() {
        for b in &points[i + 1..] {
            if b.0 != a.0 {
                slopes.push((b.1 - a.1) / (b.0 - a.0));
            }
        }
    }
    if slopes.is_empty() {
        return None;
    }
    let mid = slopes.len() / 2;
    let (_, &mut upper, _) = slopes.select_nth_unstable_by(mid, f64::total_cmp);
    if slopes.len() % 2 == 1 {
        return Some(upper);
    }
    let lower = slopes[..mid]
        .iter()
        .copied()
        .fold(f64::NEG_INFINITY, f64::max);
    Some((lower + upper) / 2.0)
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

/// The most one decision multiplies a cluster's Active members by.
const MAX_GROWTH: u32 = 10;

/// Every factor's estimate for a cluster, with the members it needs.
pub fn estimates(state: &ScalerState, policy: &AutoscalingPolicy, sizes: Sizes) -> Vec<Estimate> {
    let timing = &policy.timing;
    Factor::ALL
        .iter()
        .filter_map(|&factor| {
            let threshold = factor.threshold(policy).filter(|t| *t > 0.0)?;
            let (average, latest, gradient, acceleration, predicted) =
                estimate(state.series(factor), timing.prediction_horizon_ms)?;
            let mut wanted = required(factor, predicted, threshold, sizes, timing.tolerance);
            if gradient < 0.0 {
                // A figure on its way down asks for no more members than serve now.
                wanted = wanted.min(sizes.active.max(sizes.min));
            }
            // Far above the threshold a figure measures a queue more than the members it
            // needs, so one decision grows the cluster at most this many times over.
            wanted = wanted.min(sizes.active.max(1).saturating_mul(MAX_GROWTH));
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
    estimates: &[Estimate],
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
    if sizes.pending > 0 {
        state.last_pending = Some(now);
    }
    if state.manual {
        return None;
    }
    let since = |t: Option<Millis>| t.map_or(u64::MAX, |t| now.saturating_sub(t));
    if wanted > sizes.desired {
        // Starting members are capacity the figures cannot show yet, and until a window has
        // passed the figures still hold the time before they served: deciding again on them
        // would count the same load twice.
        if since(state.last_pending) < timing.window_ms
            || since(state.last_scale_up) < timing.scale_up_cooldown_ms
        {
            return None;
        }
        state.last_scale_up = Some(now);
        return Some(Decision {
            from: sizes.desired,
            to: wanted,
            reason,
            estimates: estimates.to_vec(),
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
        estimates: estimates.to_vec(),
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
            if let Some(d) = decide(&mut state, &p.timing, now, sz, need(&est, sz), &est) {
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
