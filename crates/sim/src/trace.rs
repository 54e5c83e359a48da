//! Load traces: CSV `t_seconds,rps[,concurrency]`, resampled to one demand value per second.
//!
//! The header is optional; without one the columns are time, requests per second and,
//! optionally, concurrent requests. A header may name the demand columns `rps` and
//! `concurrency` in either order. A row gives its demand as a rate or, when its rate is left
//! empty, as concurrent requests, turned into a rate by Little's law (rate = concurrency /
//! service time). Blank lines and lines starting with `#` are skipped.

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
}

/// A parsed trace: points in strictly increasing time.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Trace {
    pub points: Vec<Point>,
}

/// The part of a trace to replay, and how to read it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Window {
    /// Multiplies every rate.
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

/// Demand per second, ready to replay.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Load {
    /// The trace time of `rps[0]`.
    pub start_s: u64,
    pub rps: Vec<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Column {
    Rate,
    Concurrency,
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
    if !(2..=3).contains(&fields.len()) {
        return Err(format!(
            "expected a header `t_seconds,rps[,concurrency]`, found {} columns",
            fields.len()
        ));
    }
    let mut columns = Vec::new();
    for name in &fields[1..] {
        let column = match name.to_ascii_lowercase().as_str() {
            "rps" => Column::Rate,
            "concurrency" => Column::Concurrency,
            other => {
                return Err(format!(
                    "unknown column `{other}`: expected `rps` or `concurrency`"
                ));
            }
        };
        if columns.contains(&column) {
            return Err(format!("column `{name}` appears twice"));
        }
        columns.push(column);
    }
    Ok(columns)
}

fn data_row(fields: &[&str], columns: &[Column]) -> Result<Point, String> {
    if fields.len() < 2 || fields.len() > columns.len() + 1 {
        return Err(format!(
            "expected {} comma-separated fields, found {}",
            if columns.len() == 1 { "2" } else { "2 or 3" },
            fields.len()
        ));
    }
    let t_seconds = number("t_seconds", fields[0])?;
    let mut rate = None;
    let mut concurrency = None;
    for (field, column) in fields[1..].iter().zip(columns) {
        if field.is_empty() {
            continue;
        }
        match column {
            Column::Rate => rate = Some(number("rps", field)?),
            Column::Concurrency => concurrency = Some(number("concurrency", field)?),
        }
    }
    let demand = match (rate, concurrency) {
        (Some(r), _) => Demand::Rate(r),
        (None, Some(c)) => Demand::Concurrency(c),
        (None, None) => return Err("no rps or concurrency given".into()),
    };
    Ok(Point { t_seconds, demand })
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

    /// Demand for every second of the window: linear between points, held before the first
    /// and after the last.
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
        let rate = |p: &Point| p.demand.rate(window.service_time_s) * window.scale;
        let mut rps = Vec::with_capacity((end - window.from_s) as usize);
        let mut next = 0;
        for second in window.from_s..end {
            let t = second as f64;
            while next < self.points.len() && self.points[next].t_seconds <= t {
                next += 1;
            }
            let value = match (next.checked_sub(1), self.points.get(next)) {
                (Some(i), Some(b)) => {
                    let a = &self.points[i];
                    let f = (t - a.t_seconds) / (b.t_seconds - a.t_seconds);
                    rate(a) + (rate(b) - rate(a)) * f
                }
                (Some(i), None) => rate(&self.points[i]),
                (None, Some(b)) => rate(b),
                (None, None) => 0.0,
            };
            rps.push(value);
        }
        Ok(Load {
            start_s: window.from_s,
            rps,
        })
    }
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
            Err("t.csv:1: unknown column `load`: expected `rps` or `concurrency`"),
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
