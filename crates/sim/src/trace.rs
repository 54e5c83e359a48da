//! Load traces: CSV `t_seconds,rps[,concurrency][,memory][,cpu]`, resampled to one value per
//! second.
//!
//! The header is optional; without one the columns are time, requests per second and,
//! optionally, concurrent requests. After `t_seconds` a header names its columns in any order:
//! `rps` and `concurrency` for demand (at least one of them), and optionally `memory` (memory
//! consumption as a percentage of a member's limit) and `cpu` (load average as a percentage of a
//! member's CPU share), both per member. A row gives its demand as a rate or, when its rate is
//! left empty, as concurrent requests, turned into a rate by Little's law (rate = concurrency /
//! service time). `memory` and `cpu` may be left empty in a row; each is resampled over the rows
//! that give it. Blank lines and lines starting with `#` are skipped.

use serde::Serialize;

use crate::SimError;

/// A problem with one line of a trace.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{file}:{line}: {reason}")]
pub struct TraceError {
    pub file: String,
    /// One-based; zero when the problem is the file as a whole.
    pub line: usize,
    pub reason: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub enum Demand {
    /// Requests per second.
    Rate(f64),
    /// Requests in flight at once.
    Concurrency(f64),
}

impl Demand {
    fn rate(self, service_time_s: f64) -> f64 {
        match self {
            Demand::Rate(r) => r,
            Demand::Concurrency(c) => c / service_time_s,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Point {
    pub t_seconds: f64,
    pub demand: Demand,
    /// Memory consumption per member, percent of its limit.
    pub memory_percent: Option<f64>,
    /// Load average per member, percent of its CPU share.
    pub cpu_percent: Option<f64>,
}

/// A parsed trace: points in strictly increasing time.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Trace {
    pub points: Vec<Point>,
}

/// The part of a trace to replay, and how to read it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Window {
    /// Multiplies every rate; memory and CPU percentages are per member and stay as given.
    pub scale: f64,
    /// First second replayed, in the trace's time.
    pub from_s: u64,
    /// Second after the last one replayed; `None`, or a time past it, runs to the trace's end.
    pub to_s: Option<u64>,
    /// Turns concurrency rows into rates.
    pub service_time_s: f64,
}

impl Default for Window {
    fn default() -> Self {
        Window {
            scale: 1.0,
            from_s: 0,
            to_s: None,
            service_time_s: 1.0,
        }
    }
}

/// Demand per second, ready to replay; the optional series are as long as `rps`.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct Load {
    /// The trace time of `rps[0]`.
    pub start_s: u64,
    pub rps: Vec<f64>,
    /// Memory consumption per member each second, percent of its limit, when the trace gives it.
    pub memory_percent: Option<Vec<f64>>,
    /// Load average per member each second, percent of its CPU share, when the trace gives it.
    pub cpu_percent: Option<Vec<f64>>,
}

impl Load {
    /// Memory consumption per member in second `k` of the load, when the trace gives it.
    pub fn memory_percent_at(&self, k: usize) -> Option<f64> {
        self.memory_percent.as_ref()?.get(k).copied()
    }

    /// Load average per member in second `k` of the load, when the trace gives it.
    pub fn cpu_percent_at(&self, k: usize) -> Option<f64> {
        self.cpu_percent.as_ref()?.get(k).copied()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Column {
    Rate,
    Concurrency,
    Memory,
    Cpu,
}

impl Column {
    fn name(self) -> &'static str {
        match self {
            Column::Rate => "rps",
            Column::Concurrency => "concurrency",
            Column::Memory => "memory",
            Column::Cpu => "cpu",
        }
    }
}

/// Parses a trace; `file` names it in errors.
pub fn parse_trace(file: &str, text: &str) -> Result<Trace, TraceError> {
    let error = |line: usize, reason: String| TraceError {
        file: file.to_string(),
        line,
        reason,
    };
    let mut columns = vec![Column::Rate, Column::Concurrency];
    let mut points: Vec<Point> = Vec::new();
    let mut seen_row = false;
    for (index, raw) in text.lines().enumerate() {
        let line = index + 1;
        let row = raw.trim();
        if row.is_empty() || row.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = row.split(',').map(str::trim).collect();
        let first_row = !seen_row;
        seen_row = true;
        if first_row && fields[0].parse::<f64>().is_err() {
            columns = header(&fields).map_err(|reason| error(line, reason))?;
            continue;
        }
        let point = data_row(&fields, &columns).map_err(|reason| error(line, reason))?;
        if let Some(last) = points.last()
            && point.t_seconds <= last.t_seconds
        {
            return Err(error(
                line,
                format!(
                    "t_seconds must increase: {} comes after {}",
                    point.t_seconds, last.t_seconds
                ),
            ));
        }
        points.push(point);
    }
    if points.is_empty() {
        return Err(error(0, "no samples".into()));
    }
    Ok(Trace { points })
}

fn header(fields: &[&str]) -> Result<Vec<Column>, String> {
    if !(2..=5).contains(&fields.len()) {
        return Err(format!(
            "expected a header `t_seconds,rps[,concurrency][,memory][,cpu]`, found {} columns",
            fields.len()
        ));
    }
    let mut columns = Vec::new();
    for name in &fields[1..] {
        let column = match name.to_ascii_lowercase().as_str() {
            "rps" => Column::Rate,
            "concurrency" => Column::Concurrency,
            "memory" => Column::Memory,
            "cpu" => Column::Cpu,
            other => {
                return Err(format!(
                    "unknown column `{other}`: expected `rps`, `concurrency`, `memory` or `cpu`"
                ));
            }
        };
        if columns.contains(&column) {
            return Err(format!("column `{name}` appears twice"));
        }
        columns.push(column);
    }
    if !columns.contains(&Column::Rate) && !columns.contains(&Column::Concurrency) {
        return Err("no `rps` or `concurrency` column".into());
    }
    Ok(columns)
}

fn data_row(fields: &[&str], columns: &[Column]) -> Result<Point, String> {
    if fields.len() < 2 || fields.len() > columns.len() + 1 {
        let expected = match columns.len() {
            1 => "2".to_string(),
            2 => "2 or 3".to_string(),
            n => format!("2 to {}", n + 1),
        };
        return Err(format!(
            "expected {expected} comma-separated fields, found {}",
            fields.len()
        ));
    }
    let t_seconds = number("t_seconds", fields[0])?;
    let (mut rate, mut concurrency, mut memory_percent, mut cpu_percent) = (None, None, None, None);
    for (field, column) in fields[1..].iter().zip(columns) {
        if field.is_empty() {
            continue;
        }
        let value = Some(number(column.name(), field)?);
        match column {
            Column::Rate => rate = value,
            Column::Concurrency => concurrency = value,
            Column::Memory => memory_percent = value,
            Column::Cpu => cpu_percent = value,
        }
    }
    let demand = match (rate, concurrency) {
        (Some(r), _) => Demand::Rate(r),
        (None, Some(c)) => Demand::Concurrency(c),
        (None, None) => return Err("no rps or concurrency given".into()),
    };
    Ok(Point {
        t_seconds,
        demand,
        memory_percent,
        cpu_percent,
    })
}

fn number(name: &str, text: &str) -> Result<f64, String> {
    let value: f64 = text
        .parse()
        .map_err(|_| format!("{name} `{text}` is not a number"))?;
    if !value.is_finite() || value < 0.0 {
        return Err(format!(
            "{name} must be a finite number of at least 0, not {text}"
        ));
    }
    Ok(value)
}

impl Trace {
    /// The time after the last point: one more step of the trace's last interval.
    pub fn end_s(&self) -> f64 {
        match self.points.as_slice() {
            [.., a, b] => b.t_seconds + (b.t_seconds - a.t_seconds),
            [only] => only.t_seconds + 1.0,
            [] => 0.0,
        }
    }

    /// Demand, and memory and CPU where the trace gives them, for every second of the window:
    /// linear between points, held before the first and after the last.
    pub fn load(&self, window: &Window) -> Result<Load, SimError> {
        if !(window.scale.is_finite() && window.scale >= 0.0) {
            return Err(SimError::Window(format!(
                "scale must be a finite number of at least 0, not {}",
                window.scale
            )));
        }
        if !(window.service_time_s.is_finite() && window.service_time_s > 0.0) {
            return Err(SimError::Window(format!(
                "service time must be positive, not {}",
                window.service_time_s
            )));
        }
        let trace_end = self.end_s().ceil() as u64;
        let end = window.to_s.map_or(trace_end, |to| to.min(trace_end));
        if window.from_s >= end {
            return Err(SimError::Window(format!(
                "from {} s is not before the end at {end} s",
                window.from_s
            )));
        }
        let series = |value: &dyn Fn(&Point) -> Option<f64>| {
            let samples: Vec<(f64, f64)> = self
                .points
                .iter()
                .filter_map(|p| Some((p.t_seconds, value(p)?)))
                .collect();
            (!samples.is_empty()).then(|| resample(&samples, window.from_s, end))
        };
        let rps = series(&|p| Some(p.demand.rate(window.service_time_s) * window.scale))
            .unwrap_or_default();
        Ok(Load {
            start_s: window.from_s,
            rps,
            memory_percent: series(&|p| p.memory_percent),
            cpu_percent: series(&|p| p.cpu_percent),
        })
    }
}

/// One value per second in `[from_s, end)` from `(time, value)` samples in increasing time:
/// linear between samples, held before the first and after the last.
fn resample(samples: &[(f64, f64)], from_s: u64, end: u64) -> Vec<f64> {
    let mut values = Vec::with_capacity(end.saturating_sub(from_s) as usize);
    let mut next = 0;
    for second in from_s..end {
        let t = second as f64;
        while next < samples.len() && samples[next].0 <= t {
            next += 1;
        }
        let value = match (next.checked_sub(1).map(|i| samples[i]), samples.get(next)) {
            (Some((ta, a)), Some(&(tb, b))) => {
                let f = (t - ta) / (tb - ta);
                a + (b - a) * f
            }
            (Some((_, a)), None) => a,
            (None, Some(&(_, b))) => b,
            (None, None) => 0.0,
        };
        values.push(value);
    }
    values
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str, expected: Result<Vec<(f64, Demand)>, &str>) {
        let got = parse_trace("t.csv", text)
            .map(|t| {
                t.points
                    .into_iter()
                    .map(|p| (p.t_seconds, p.demand))
                    .collect::<Vec<_>>()
            })
            .map_err(|e| e.to_string());
        assert_eq!(got, expected.map_err(str::to_string), "{text:?}");
    }

    /// Memory and CPU percent of one row.
    type Usage = (Option<f64>, Option<f64>);

    /// Memory and CPU percent of each row.
    fn check_usage(text: &str, expected: Result<Vec<Usage>, &str>) {
        let got = parse_trace("t.csv", text)
            .map(|t| {
                t.points
                    .into_iter()
                    .map(|p| (p.memory_percent, p.cpu_percent))
                    .collect::<Vec<_>>()
            })
            .map_err(|e| e.to_string());
        assert_eq!(got, expected.map_err(str::to_string), "{text:?}");
    }

    #[test]
    fn parses_memory_and_cpu_in_any_order() {
        check_usage(
            "t_seconds,rps,memory,cpu\n0,1,40,55.5\n1,1,,\n",
            Ok(vec![(Some(40.0), Some(55.5)), (None, None)]),
        );
        check_usage(
            "t_seconds,cpu,concurrency,memory\n0,120,3,90\n1,80,3\n",
            Ok(vec![(Some(90.0), Some(120.0)), (None, Some(80.0))]),
        );
        check_usage("0,1,2\n", Ok(vec![(None, None)]));
        check(
            "t_seconds,memory,rps\n0,50,4\n",
            Ok(vec![(0.0, Demand::Rate(4.0))]),
        );
        check_usage(
            "t_seconds,rps,memory\n0,1,50\n1,1,-3\n",
            Err("t.csv:3: memory must be a finite number of at least 0, not -3"),
        );
        check_usage(
            "t_seconds,cpu,rps\n0,high,1\n",
            Err("t.csv:2: cpu `high` is not a number"),
        );
        check_usage(
            "t_seconds,rps,cpu\n0,1,inf\n",
            Err("t.csv:2: cpu must be a finite number of at least 0, not inf"),
        );
        check_usage(
            "t_seconds,memory,cpu\n0,1,2\n",
            Err("t.csv:1: no `rps` or `concurrency` column"),
        );
        check_usage(
            "t_seconds,rps,memory,memory\n",
            Err("t.csv:1: column `memory` appears twice"),
        );
        check_usage(
            "t_seconds,rps,memory,cpu\n0,1,2,3,4\n",
            Err("t.csv:2: expected 2 to 4 comma-separated fields, found 5"),
        );
        check_usage(
            "t_seconds,rps,concurrency,memory,cpu,disk\n",
            Err(
                "t.csv:1: expected a header `t_seconds,rps[,concurrency][,memory][,cpu]`, found 6 columns",
            ),
        );
        check_usage(
            "0,1,2,50\n",
            Err("t.csv:1: expected 2 or 3 comma-separated fields, found 4"),
        );
    }

    #[test]
    fn resamples_memory_and_cpu_over_the_rows_that_give_them() {
        let text = "t_seconds,rps,memory,cpu\n0,10,20,\n10,10,,\n20,10,60,90\n";
        let trace = parse_trace("t.csv", text).expect("trace");
        let load = trace
            .load(&Window {
                scale: 2.0,
                ..Window::default()
            })
            .expect("load");
        assert_eq!(load.rps, vec![20.0; 30]);
        let memory = load.memory_percent.expect("memory");
        assert_eq!(
            (memory[0], memory[10], memory[15], memory[29]),
            (20.0, 40.0, 50.0, 60.0)
        );
        assert_eq!(load.cpu_percent, Some(vec![90.0; 30]));
        let plain = parse_trace("p.csv", "0,1\n").expect("trace");
        let load = plain.load(&Window::default()).expect("load");
        assert_eq!((load.memory_percent, load.cpu_percent), (None, None));
    }

    #[test]
    fn parses_rows_and_names_bad_lines() {
        use Demand::{Concurrency, Rate};
        check(
            "t_seconds,rps\n0,1.5\n60,2\n",
            Ok(vec![(0.0, Rate(1.5)), (60.0, Rate(2.0))]),
        );
        check(
            "0,1\r\n\n# gap\n5,3\n",
            Ok(vec![(0.0, Rate(1.0)), (5.0, Rate(3.0))]),
        );
        check(
            "t_seconds,concurrency\n0,4\n",
            Ok(vec![(0.0, Concurrency(4.0))]),
        );
        check(
            "0,,7\n1,2,7\n",
            Ok(vec![(0.0, Concurrency(7.0)), (1.0, Rate(2.0))]),
        );
        check(
            "t_seconds,rps\n0,1\n0,2\n",
            Err("t.csv:3: t_seconds must increase: 0 comes after 0"),
        );
        check("0,abc\n", Err("t.csv:1: rps `abc` is not a number"));
        check(
            "0,1\n1,-2\n",
            Err("t.csv:2: rps must be a finite number of at least 0, not -2"),
        );
        check(
            "0,1,2,3\n",
            Err("t.csv:1: expected 2 or 3 comma-separated fields, found 4"),
        );
        check(
            "t_seconds,rps\n5\n",
            Err("t.csv:2: expected 2 comma-separated fields, found 1"),
        );
        check(
            "t,load\n",
            Err("t.csv:1: unknown column `load`: expected `rps`, `concurrency`, `memory` or `cpu`"),
        );
        check("0,\n", Err("t.csv:1: no rps or concurrency given"));
        check("t_seconds,rps\n", Err("t.csv:0: no samples"));
    }

    #[test]
    fn resamples_to_seconds_within_the_window() {
        let trace = parse_trace("t.csv", "0,10\n10,20\n20,0,\n").expect("trace");
        let load = |from_s, to_s, scale| {
            trace
                .load(&Window {
                    scale,
                    from_s,
                    to_s,
                    service_time_s: 0.5,
                })
                .map(|l| (l.start_s, l.rps))
        };
        let (start, rps) = load(0, None, 1.0).expect("load");
        assert_eq!((start, rps.len()), (0, 30));
        assert_eq!(
            (rps[0], rps[5], rps[10], rps[15], rps[29]),
            (10.0, 15.0, 20.0, 10.0, 0.0)
        );
        let (start, rps) = load(4, Some(6), 100.0).expect("load");
        assert_eq!((start, rps), (4, vec![1400.0, 1500.0]));
        assert!(load(6, Some(6), 1.0).is_err());
        assert_eq!(load(25, Some(1_000_000_000), 1.0).map(|l| l.1.len()), Ok(5));
        assert!(load(40, None, 1.0).is_err());
        let concurrency = parse_trace("c.csv", "t_seconds,concurrency\n0,3\n").expect("trace");
        let rps = concurrency
            .load(&Window {
                service_time_s: 0.5,
                ..Window::default()
            })
            .expect("load")
            .rps;
        assert_eq!(rps, vec![6.0]);
    }
}
