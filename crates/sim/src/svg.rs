//! A hand-written SVG chart of runs: one panel per policy, on shared axes.

use std::fmt::Write;

use crate::{Run, Sample};

const WIDTH: f64 = 1000.0;
const PANEL: f64 = 220.0;
const GAP: f64 = 64.0;
const LEFT: f64 = 64.0;
const RIGHT: f64 = 64.0;
const TOP: f64 = 52.0;
const BOTTOM: f64 = 36.0;

/// Demand, capacity and members over time for each run; `capacity_rps` (per member) puts
/// members on the same scale as requests per second.
pub fn chart(runs: &[&Run], capacity_rps: f64) -> String {
    let height = TOP + runs.len() as f64 * (PANEL + GAP) - GAP + BOTTOM;
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" font-size="11">
<rect width="100%" height="100%" fill="white"/>
"#
    );
    legend(&mut svg);
    let samples = runs.iter().flat_map(|r| r.series.iter());
    let top = samples
        .map(|s| {
            s.demand
                .max(s.capacity)
                .max(f64::from(s.members) * capacity_rps)
        })
        .fold(0.0, f64::max);
    let y_max = nice_ceiling(top);
    for (i, run) in runs.iter().enumerate() {
        let y0 = TOP + i as f64 * (PANEL + GAP);
        panel(&mut svg, run, y0, y_max, capacity_rps);
    }
    svg.push_str("</svg>\n");
    svg
}

fn legend(svg: &mut String) {
    let items = [
        ("#cfe0f5", "#3d7cc9", "", "demand (requests/s)"),
        (
            "none",
            "#2a9d4b",
            "",
            "capacity of Active members (requests/s)",
        ),
        (
            "none",
            "#e07b00",
            r#" stroke-dasharray="5 3""#,
            "members, starting and draining included (right axis)",
        ),
    ];
    let mut x = LEFT;
    for (fill, stroke, dash, label) in items {
        let _ = writeln!(
            svg,
            r#"<rect x="{x}" y="14" width="18" height="10" fill="{fill}" stroke="{stroke}" stroke-width="2"{dash}/><text x="{}" y="23">{label}</text>"#,
            x + 24.0
        );
        x += 36.0 + label.len() as f64 * 6.0;
    }
}

/// One column of the plot: demand at its highest, capacity at its lowest, so shortfalls show.
#[derive(Clone, Copy)]
struct Column {
    t: u64,
    demand: f64,
    capacity: f64,
    members: u32,
}

fn columns(series: &[Sample], width: usize) -> Vec<Column> {
    let per = series.len().div_ceil(width.max(1)).max(1);
    series
        .chunks(per)
        .map(|chunk| Column {
            t: chunk[0].t,
            demand: chunk.iter().map(|s| s.demand).fold(0.0, f64::max),
            capacity: chunk
                .iter()
                .map(|s| s.capacity)
                .fold(f64::INFINITY, f64::min),
            members: chunk.iter().map(|s| s.members).max().unwrap_or(0),
        })
        .collect()
}

fn panel(svg: &mut String, run: &Run, y0: f64, y_max: f64, capacity_rps: f64) {
    let plot_w = WIDTH - LEFT - RIGHT;
    let (Some(first), Some(last)) = (run.series.first(), run.series.last()) else {
        return;
    };
    let (t0, t1) = (first.t, last.t.max(first.t + 1));
    let x = |t: u64| LEFT + (t - t0) as f64 / (t1 - t0) as f64 * plot_w;
    let y = |v: f64| y0 + PANEL - (v / y_max).min(1.0) * PANEL;
    let totals = &run.totals;
    let _ = writeln!(
        svg,
        r#"<text x="{LEFT}" y="{}" font-size="13" font-weight="bold">{}: {} s demand exceeded, {} member-seconds, {} scaling actions, peak {} members</text>"#,
        y0 - 8.0,
        escape(&run.policy),
        totals.demand_exceeded_s,
        totals.member_seconds,
        totals.scaling_actions,
        totals.peak_members
    );
    let _ = writeln!(
        svg,
        r##"<rect x="{LEFT}" y="{y0}" width="{plot_w}" height="{PANEL}" fill="none" stroke="#999"/>"##
    );
    for i in 0..=4 {
        let v = y_max * f64::from(i) / 4.0;
        let yy = y(v);
        let _ = writeln!(
            svg,
            r##"<line x1="{LEFT}" y1="{yy:.1}" x2="{}" y2="{yy:.1}" stroke="#eee"/><text x="{}" y="{:.1}" text-anchor="end">{}</text><text x="{}" y="{:.1}">{}</text>"##,
            LEFT + plot_w,
            LEFT - 6.0,
            yy + 4.0,
            label(v),
            LEFT + plot_w + 6.0,
            yy + 4.0,
            label(v / capacity_rps)
        );
    }
    let step = time_step(t1 - t0);
    let mut tick = t0.div_ceil(step) * step;
    while tick <= t1 {
        let xx = x(tick);
        let _ = writeln!(
            svg,
            r##"<line x1="{xx:.1}" y1="{}" x2="{xx:.1}" y2="{}" stroke="#999"/><text x="{xx:.1}" y="{}" text-anchor="middle">{}</text>"##,
            y0 + PANEL,
            y0 + PANEL + 4.0,
            y0 + PANEL + 16.0,
            clock(tick, t1 >= 86_400)
        );
        tick += step;
    }
    let cols = columns(&run.series, plot_w as usize);
    let mut demand = format!("M{:.1},{:.1}", x(t0), y(0.0));
    let mut capacity = String::new();
    let mut members = String::new();
    for (i, c) in cols.iter().enumerate() {
        let xx = x(c.t);
        let next = cols.get(i + 1).map_or(x(t1), |n| x(n.t));
        let _ = write!(
            demand,
            " L{xx:.1},{:.1} L{next:.1},{:.1}",
            y(c.demand),
            y(c.demand)
        );
        let command = if i == 0 { 'M' } else { 'L' };
        let yc = y(c.capacity);
        let _ = write!(capacity, "{command}{xx:.1},{yc:.1} L{next:.1},{yc:.1} ");
        let ym = y(f64::from(c.members) * capacity_rps);
        let _ = write!(members, "{command}{xx:.1},{ym:.1} L{next:.1},{ym:.1} ");
    }
    let _ = write!(demand, " L{:.1},{:.1} Z", x(t1), y(0.0));
    let _ = writeln!(
        svg,
        r##"<path d="{demand}" fill="#cfe0f5" stroke="#3d7cc9" stroke-width="1"/>
<path d="{capacity}" fill="none" stroke="#2a9d4b" stroke-width="1.5"/>
<path d="{members}" fill="none" stroke="#e07b00" stroke-width="1.2" stroke-dasharray="5 3"/>"##
    );
}

/// The smallest 1, 2 or 5 times a power of ten at or above `v`.
fn nice_ceiling(v: f64) -> f64 {
    if !(v.is_finite() && v > 0.0) {
        return 1.0;
    }
    let power = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * power)
        .find(|c| *c >= v)
        .unwrap_or(10.0 * power)
}

/// A tick spacing giving at most about ten ticks.
fn time_step(span_s: u64) -> u64 {
    const STEPS: [u64; 11] = [
        10, 30, 60, 300, 600, 1_800, 3_600, 7_200, 21_600, 43_200, 86_400,
    ];
    STEPS
        .into_iter()
        .find(|s| span_s / s <= 10)
        .unwrap_or(86_400 * span_s.div_ceil(86_400 * 10))
}

/// A trace time as `h:mm`, or as `dN hh:mm` (days counted from 1) when the chart reaches a
/// second day.
fn clock(t: u64, days: bool) -> String {
    let (h, m, s) = (t / 3600, t / 60 % 60, t % 60);
    match (days, s) {
        (true, _) => format!("d{} {:02}:{m:02}", t / 86_400 + 1, h % 24),
        (false, 0) => format!("{h}:{m:02}"),
        (false, _) => format!("{h}:{m:02}:{s:02}"),
    }
}

fn label(v: f64) -> String {
    if v >= 10.0 || v == v.round() {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Run, Totals};

    #[test]
    fn draws_one_panel_per_run_with_bounded_size() {
        let series: Vec<Sample> = (0..86_400u64)
            .map(|t| Sample {
                t,
                demand: (t % 600) as f64,
                capacity: 300.0,
                members: 3,
            })
            .collect();
        let run = |policy: &str| Run {
            policy: policy.into(),
            totals: Totals::default(),
            changes: Vec::new(),
            series: series.clone(),
        };
        let (a, b) = (run("cairn <p>"), run("hpa"));
        let svg = chart(&[&a, &b], 100.0);
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>\n"));
        assert_eq!(svg.matches("member-seconds").count(), 2);
        assert!(svg.contains("cairn &lt;p&gt;:"));
        assert!(svg.contains(">12:00<"), "hour ticks");
        assert_eq!(clock(1_072_140, true), "d13 09:49");
        assert_eq!(clock(90, false), "0:01:30");
        assert!(svg.len() < 400_000, "{} bytes", svg.len());
        assert_eq!(
            (nice_ceiling(0.0), nice_ceiling(620.0), nice_ceiling(7.0)),
            (1.0, 1000.0, 10.0)
        );
    }
}
