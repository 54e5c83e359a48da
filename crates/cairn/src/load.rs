//! `cairn load`: a bounded HTTP load generator for targets on this machine, to watch scaling live.
//!
//! Open loop (`--rate`) sends on a fixed schedule whether or not answers come back, with a cap on
//! outstanding requests; closed loop (`--concurrency`) keeps a fixed number of requests going.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use serde::Serialize;
use tokio::sync::Semaphore;

use crate::Output;

/// The longest run `--duration` accepts.
const MAX_DURATION: Duration = Duration::from_secs(3600);
const MAX_RATE: f64 = 100_000.0;
const MAX_CONCURRENCY: usize = 10_000;
const MAX_IN_FLIGHT: usize = 100_000;

#[derive(Args)]
#[command(
    after_help = "A line per second goes to stderr, the summary to stdout. \
    The exit status is 1 when any request failed."
)]
pub struct LoadArgs {
    /// The target; only this machine is accepted: 127.0.0.0/8, ::1 or localhost
    url: String,
    /// Requests per second, sent on schedule whether or not earlier ones have answered
    #[arg(
        long,
        conflicts_with = "concurrency",
        required_unless_present = "concurrency"
    )]
    rate: Option<f64>,
    /// Requests kept going at once, each sent when the one before it has answered
    #[arg(long)]
    concurrency: Option<usize>,
    /// How long to send, such as 500ms, 30s, 5m or 1h (at most 1h)
    #[arg(long, value_parser = parse_duration)]
    duration: Duration,
    /// The Host header, which selects the cluster behind the load balancer
    #[arg(long)]
    host: Option<String>,
    /// Replaces the URL's path
    #[arg(long)]
    path: Option<String>,
    /// Asks the built-in workload to answer after this many milliseconds
    #[arg(long)]
    latency_ms: Option<u64>,
    /// Asks the built-in workload to burn this many milliseconds of CPU per request
    #[arg(long)]
    cpu_ms: Option<u64>,
    /// With --rate, requests due while this many are outstanding are skipped and counted
    #[arg(long, default_value_t = 1000)]
    max_in_flight: usize,
    /// A request without a full answer after this long fails
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    timeout: Duration,
    #[arg(long, short, value_enum, default_value_t = Output::Text)]
    output: Output,
}

/// How requests are paced.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Pace {
    Rate(f64),
    Concurrency(usize),
}

/// Runs the load and prints a line per second and a summary; fails when any request failed.
pub async fn load(args: LoadArgs) -> anyhow::Result<ExitCode> {
    let pace = pace(args.rate, args.concurrency, args.max_in_flight)?;
    let target = target_url(
        &args.url,
        args.path.as_deref(),
        args.latency_ms,
        args.cpu_ms,
    )?;
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(args.timeout)
        .connect_timeout(args.timeout.min(Duration::from_secs(5)))
        .pool_max_idle_per_host(usize::MAX)
        .tcp_nodelay(true)
        .build()
        .context("cannot build an HTTP client")?;
    let mut request = client.get(target.clone());
    if let Some(host) = &args.host {
        request = request.header(reqwest::header::HOST, host);
    }
    let run = Run {
        request: Arc::new(request.build().context("cannot build the request")?),
        client,
        tally: Arc::new(Mutex::new(Tally::default())),
    };
    let start = Instant::now();
    let reporter = tokio::spawn(report_every_second(run.tally.clone(), start));
    match pace {
        Pace::Rate(rate) => {
            open_loop(&run, rate, args.duration, args.max_in_flight, args.timeout).await
        }
        Pace::Concurrency(workers) => closed_loop(&run, workers, args.duration).await,
    }
    reporter.abort();
    let tally = lock(&run.tally).clone();
    let summary = summarise(target.as_str(), pace, &tally, start.elapsed());
    match args.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&summary)?),
        Output::Text => print!("{}", summary_text(&summary)),
    }
    Ok(if summary.failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn pace(
    rate: Option<f64>,
    concurrency: Option<usize>,
    max_in_flight: usize,
) -> anyhow::Result<Pace> {
    if !(1..=MAX_IN_FLIGHT).contains(&max_in_flight) {
        bail!("--max-in-flight {max_in_flight}: expected 1 to {MAX_IN_FLIGHT}");
    }
    match (rate, concurrency) {
        (Some(rate), None) if rate.is_finite() && rate > 0.0 && rate <= MAX_RATE => {
            Ok(Pace::Rate(rate))
        }
        (Some(rate), None) => {
            bail!("--rate {rate}: expected more than 0 and at most {MAX_RATE} requests per second")
        }
        (None, Some(workers)) if (1..=MAX_CONCURRENCY).contains(&workers) => {
            Ok(Pace::Concurrency(workers))
        }
        (None, Some(workers)) => bail!("--concurrency {workers}: expected 1 to {MAX_CONCURRENCY}"),
        _ => bail!("give either --rate or --concurrency"),
    }
}

/// The URL to load: only loopback hosts, with the path replaced and the workload's parameters added.
fn target_url(
    url: &str,
    path: Option<&str>,
    latency_ms: Option<u64>,
    cpu_ms: Option<u64>,
) -> anyhow::Result<reqwest::Url> {
    let mut target = reqwest::Url::parse(url).with_context(|| format!("{url:?} is not a URL"))?;
    if !matches!(target.scheme(), "http" | "https") {
        bail!("{url}: only http and https URLs can be loaded");
    }
    let host = target.host_str().unwrap_or_default();
    if !is_loopback(host) {
        bail!(
            "{url}: load is only sent to this machine (127.0.0.0/8, ::1 or localhost), not to {host:?}"
        );
    }
    if let Some(path) = path {
        target.set_path(path);
    }
    let parameters = [("latency_ms", latency_ms), ("cpu_ms", cpu_ms)];
    for (name, value) in parameters {
        if let Some(value) = value {
            target
                .query_pairs_mut()
                .append_pair(name, &value.to_string());
        }
    }
    Ok(target)
}

/// Whether a URL's host names this machine; IPv6 hosts come in brackets.
fn is_loopback(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    match bare.parse::<IpAddr>() {
        Ok(ip) => ip.is_loopback(),
        Err(_) => bare.eq_ignore_ascii_case("localhost"),
    }
}

/// A duration as [`crate::duration::parse_duration`] reads it, above zero and at most
/// [`MAX_DURATION`].
fn parse_duration(text: &str) -> Result<Duration, String> {
    let duration = crate::duration::parse_duration(text)?;
    if duration > MAX_DURATION {
        return Err(format!("{} is longer than the limit of 1h", text.trim()));
    }
    if duration.is_zero() {
        return Err(format!("{:?}: expected more than zero", text.trim()));
    }
    Ok(duration)
}

/// What a run's requests share.
struct Run {
    client: reqwest::Client,
    request: Arc<reqwest::Request>,
    tally: Arc<Mutex<Tally>>,
}

fn lock(tally: &Mutex<Tally>) -> std::sync::MutexGuard<'_, Tally> {
    tally.lock().unwrap_or_else(|e| e.into_inner())
}

/// Sends request k at k / rate seconds, skipping those due while `max_in_flight` are outstanding.
async fn open_loop(
    run: &Run,
    rate: f64,
    duration: Duration,
    max_in_flight: usize,
    timeout: Duration,
) {
    let permits = Arc::new(Semaphore::new(max_in_flight));
    let start = tokio::time::Instant::now();
    let mut launched: u64 = 0;
    loop {
        let elapsed = start.elapsed();
        if elapsed >= duration {
            break;
        }
        let due = scheduled(elapsed, rate);
        while launched < due {
            launched += 1;
            match permits.clone().try_acquire_owned() {
                Ok(permit) => {
                    let (client, request, tally) =
                        (run.client.clone(), run.request.clone(), run.tally.clone());
                    lock(&tally).sent += 1;
                    tokio::spawn(async move {
                        send(&client, &request, &tally).await;
                        drop(permit);
                    });
                }
                Err(_) => lock(&run.tally).skipped += 1,
            }
        }
        let next = start + Duration::from_secs_f64(launched as f64 / rate);
        tokio::time::sleep_until(next.min(start + duration)).await;
    }
    // Every request ends within its timeout; the margin covers the last one's start-up.
    let all = u32::try_from(max_in_flight).unwrap_or(u32::MAX);
    let _ = tokio::time::timeout(timeout + Duration::from_secs(1), permits.acquire_many(all)).await;
}

/// How many requests are due after `elapsed` when request k goes out at k / rate seconds.
fn scheduled(elapsed: Duration, rate: f64) -> u64 {
    (elapsed.as_secs_f64() * rate).floor() as u64 + 1
}

/// Runs `workers` loops that each send their next request once the previous one has answered.
async fn closed_loop(run: &Run, workers: usize, duration: Duration) {
    let deadline = Instant::now() + duration;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..workers {
        let (client, request, tally) = (run.client.clone(), run.request.clone(), run.tally.clone());
        tasks.spawn(async move {
            while Instant::now() < deadline {
                lock(&tally).sent += 1;
                send(&client, &request, &tally).await;
            }
        });
    }
    while tasks.join_next().await.is_some() {}
}

/// Sends one request, reads its whole answer so the connection is kept, and records the outcome.
async fn send(client: &reqwest::Client, request: &reqwest::Request, tally: &Mutex<Tally>) {
    // Only requests with a streaming body cannot be cloned, and this one has no body.
    let Some(request) = request.try_clone() else {
        lock(tally).record_error("other");
        return;
    };
    let began = Instant::now();
    let outcome = match client.execute(request).await {
        Ok(response) => {
            let status = response.status();
            response.bytes().await.map(|_| status)
        }
        Err(e) => Err(e),
    };
    let mut tally = lock(tally);
    match outcome {
        Ok(status) => tally.record_answer(status.as_u16(), began.elapsed()),
        Err(e) if e.is_timeout() => tally.record_error("timeout"),
        Err(e) if e.is_connect() => tally.record_error("connect"),
        Err(_) => tally.record_error("other"),
    }
}

/// Counts so far, and the latencies of the current second and of the whole run.
#[derive(Debug, Clone, Default)]
struct Tally {
    sent: u64,
    ok: u64,
    failed: u64,
    skipped: u64,
    statuses: BTreeMap<u16, u64>,
    errors: BTreeMap<&'static str, u64>,
    second: Histogram,
    all: Histogram,
}

impl Tally {
    fn record_answer(&mut self, status: u16, latency: Duration) {
        if (200..300).contains(&status) {
            self.ok += 1;
        } else {
            self.failed += 1;
        }
        *self.statuses.entry(status).or_default() += 1;
        self.second.record(latency);
        self.all.record(latency);
    }

    fn record_error(&mut self, kind: &'static str) {
        self.failed += 1;
        *self.errors.entry(kind).or_default() += 1;
    }

    fn in_flight(&self) -> u64 {
        self.sent.saturating_sub(self.ok + self.failed)
    }
}

async fn report_every_second(tally: Arc<Mutex<Tally>>, start: Instant) {
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    ticker.tick().await;
    loop {
        ticker.tick().await;
        let line = {
            let mut tally = lock(&tally);
            let line = live_line(&tally, start.elapsed());
            tally.second = Histogram::default();
            line
        };
        eprintln!("{line}");
    }
}

fn live_line(tally: &Tally, elapsed: Duration) -> String {
    format!(
        "{:>5.0}s  sent {}  ok {}  failed {}  in flight {}  p50 {}  p99 {}",
        elapsed.as_secs_f64(),
        tally.sent,
        tally.ok,
        tally.failed,
        tally.in_flight(),
        format_ms(tally.second.quantile(0.5)),
        format_ms(tally.second.quantile(0.99)),
    )
}

fn format_ms(latency: Option<Duration>) -> String {
    match latency {
        Some(latency) => format!("{:.1} ms", latency.as_secs_f64() * 1000.0),
        None => "-".into(),
    }
}

/// The outcome of a run, as printed.
#[derive(Debug, Clone, PartialEq, Serialize)]
struct Summary {
    url: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    rate: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    concurrency: Option<usize>,
    elapsed_s: f64,
    sent: u64,
    ok: u64,
    failed: u64,
    /// Requests due while the cap on outstanding ones was reached, so never sent.
    skipped: u64,
    /// Answered requests per second over the run.
    answered_per_s: f64,
    /// Quantiles of the answered requests' latencies; absent when none answered.
    latency_ms: Option<Latencies>,
    /// Answers by HTTP status.
    statuses: BTreeMap<u16, u64>,
    /// Requests without an answer, by kind: timeout, connect, other.
    errors: BTreeMap<&'static str, u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
struct Latencies {
    p50: f64,
    p90: f64,
    p99: f64,
    max: f64,
}

fn summarise(url: &str, pace: Pace, tally: &Tally, elapsed: Duration) -> Summary {
    let ms = |q: f64| {
        tally
            .all
            .quantile(q)
            .map(|d| round(d.as_secs_f64() * 1000.0))
    };
    let latency_ms = match (ms(0.5), ms(0.9), ms(0.99), ms(1.0)) {
        (Some(p50), Some(p90), Some(p99), Some(max)) => Some(Latencies { p50, p90, p99, max }),
        _ => None,
    };
    let seconds = elapsed.as_secs_f64();
    Summary {
        url: url.to_string(),
        rate: match pace {
            Pace::Rate(rate) => Some(rate),
            Pace::Concurrency(_) => None,
        },
        concurrency: match pace {
            Pace::Rate(_) => None,
            Pace::Concurrency(workers) => Some(workers),
        },
        elapsed_s: round(seconds),
        sent: tally.sent,
        ok: tally.ok,
        failed: tally.failed,
        skipped: tally.skipped,
        answered_per_s: if seconds > 0.0 {
            round(tally.all.count() as f64 / seconds)
        } else {
            0.0
        },
        latency_ms,
        statuses: tally.statuses.clone(),
        errors: tally.errors.clone(),
    }
}

fn summary_text(summary: &Summary) -> String {
    let mut text = format!(
        "{}: sent {} in {:.1} s, {} ok, {} failed, {} skipped; {:.1} answers/s\n",
        summary.url,
        summary.sent,
        summary.elapsed_s,
        summary.ok,
        summary.failed,
        summary.skipped,
        summary.answered_per_s
    );
    if let Some(l) = &summary.latency_ms {
        text += &format!(
            "latency p50 {:.1} ms  p90 {:.1} ms  p99 {:.1} ms  max {:.1} ms\n",
            l.p50, l.p90, l.p99, l.max
        );
    }
    let counts = |counts: Vec<String>| counts.join(", ");
    if !summary.statuses.is_empty() {
        let statuses = summary
            .statuses
            .iter()
            .map(|(s, n)| format!("{s} ×{n}"))
            .collect();
        text += &format!("statuses: {}\n", counts(statuses));
    }
    if !summary.errors.is_empty() {
        let errors = summary
            .errors
            .iter()
            .map(|(e, n)| format!("{e} ×{n}"))
            .collect();
        text += &format!("errors: {}\n", counts(errors));
    }
    text
}

fn round(value: f64) -> f64 {
    (value * 1000.0).round() / 1000.0
}

/// Latencies in microsecond buckets no wider than 1/32 of their value.
#[derive(Debug, Clone, Default, PartialEq)]
struct Histogram {
    buckets: BTreeMap<u32, u64>,
    max_us: u64,
}

/// Sub-buckets per power of two, and the values below which every microsecond is its own bucket.
const SUB_BUCKETS: u64 = 32;
const EXACT_BELOW: u64 = 2 * SUB_BUCKETS;

impl Histogram {
    fn record(&mut self, latency: Duration) {
        let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        *self.buckets.entry(bucket(us)).or_default() += 1;
        self.max_us = self.max_us.max(us);
    }

    fn count(&self) -> u64 {
        self.buckets.values().sum()
    }

    /// The latency below which a fraction `q` of the recorded ones lie; the maximum at 1.
    fn quantile(&self, q: f64) -> Option<Duration> {
        let count = self.count();
        if count == 0 {
            return None;
        }
        if q >= 1.0 {
            return Some(Duration::from_micros(self.max_us));
        }
        let rank = ((q * count as f64).ceil() as u64).clamp(1, count);
        let mut seen = 0;
        let (index, _) = self.buckets.iter().find(|(_, n)| {
            seen += **n;
            seen >= rank
        })?;
        Some(Duration::from_micros(
            bucket_middle(*index).min(self.max_us),
        ))
    }
}

fn bucket(us: u64) -> u32 {
    if us < EXACT_BELOW {
        return us as u32;
    }
    let power = 63 - us.leading_zeros() as u64;
    let shift = power - 5;
    let mantissa = us >> shift;
    (EXACT_BELOW + (power - 6) * SUB_BUCKETS + (mantissa - SUB_BUCKETS)) as u32
}

fn bucket_middle(index: u32) -> u64 {
    let index = u64::from(index);
    if index < EXACT_BELOW {
        return index;
    }
    let power = 6 + (index - EXACT_BELOW) / SUB_BUCKETS;
    let mantissa = SUB_BUCKETS + (index - EXACT_BELOW) % SUB_BUCKETS;
    let shift = power - 5;
    (mantissa << shift) + (1 << shift) / 2
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_only_loopback_targets() {
        let check = |url: &str, path: Option<&str>, expected: Result<&str, &str>| {
            let actual = target_url(url, path, Some(50), None)
                .map(|u| u.to_string())
                .map_err(|e| e.to_string());
            match (&actual, expected) {
                (Ok(actual), Ok(expected)) => assert_eq!(actual, expected, "{url}"),
                (Err(actual), Err(expected)) => {
                    assert!(actual.contains(expected), "{url}: {actual}")
                }
                _ => panic!("{url}: {actual:?}, expected {expected:?}"),
            }
        };
        check(
            "http://127.0.0.1:8080/",
            None,
            Ok("http://127.0.0.1:8080/?latency_ms=50"),
        );
        check(
            "http://127.1.2.3/a?x=1",
            Some("/b"),
            Ok("http://127.1.2.3/b?x=1&latency_ms=50"),
        );
        check("http://[::1]:9/", None, Ok("http://[::1]:9/?latency_ms=50"));
        check(
            "http://LOCALHOST:9/",
            None,
            Ok("http://localhost:9/?latency_ms=50"),
        );
        check("http://10.0.0.1/", None, Err("only sent to this machine"));
        check("http://example.org/", None, Err("not to \"example.org\""));
        check(
            "http://localhost.example.org/",
            None,
            Err("only sent to this machine"),
        );
        check("http://[::2]/", None, Err("only sent to this machine"));
        check("ftp://127.0.0.1/", None, Err("only http and https"));
        check("127.0.0.1:8080", None, Err("is not a URL"));
    }

    #[test]
    fn parses_durations() {
        let check = |text: &str, expected: Option<Duration>| {
            assert_eq!(parse_duration(text).ok(), expected, "{text}");
        };
        check("500ms", Some(Duration::from_millis(500)));
        check("30s", Some(Duration::from_secs(30)));
        check("1.5m", Some(Duration::from_secs(90)));
        check("1h", Some(Duration::from_secs(3600)));
        check("2h", None);
        assert_eq!(
            parse_duration("61m"),
            Err("61m is longer than the limit of 1h".into())
        );
        check("45", Some(Duration::from_secs(45)));
        check("0s", None);
        check("s", None);
        check("10d", None);
        check("1e9h", None);
        check("", None);
    }

    #[test]
    fn checks_the_pace() {
        let check = |rate: Option<f64>, concurrency: Option<usize>, expected: Option<Pace>| {
            assert_eq!(
                pace(rate, concurrency, 10).ok(),
                expected,
                "{rate:?} {concurrency:?}"
            );
        };
        check(Some(20.0), None, Some(Pace::Rate(20.0)));
        check(None, Some(4), Some(Pace::Concurrency(4)));
        check(Some(0.0), None, None);
        check(Some(f64::INFINITY), None, None);
        check(Some(1e6), None, None);
        check(None, Some(0), None);
        check(None, Some(1_000_000), None);
        check(None, None, None);
        assert!(pace(Some(1.0), None, 0).is_err());
    }

    #[test]
    fn schedules_requests_evenly() {
        let check = |elapsed_ms: u64, rate: f64, expected: u64| {
            assert_eq!(
                scheduled(Duration::from_millis(elapsed_ms), rate),
                expected,
                "{elapsed_ms} ms at {rate}/s"
            );
        };
        check(0, 10.0, 1);
        check(99, 10.0, 1);
        check(100, 10.0, 2);
        check(999, 10.0, 10);
        check(1000, 0.5, 1);
        check(2000, 0.5, 2);
        check(1000, 10_000.0, 10_001);
    }

    #[test]
    fn histogram_quantiles_stay_within_a_bucket() {
        let check = |latencies_us: &[u64], q: f64, expected_us: Option<u64>| {
            let mut histogram = Histogram::default();
            for us in latencies_us {
                histogram.record(Duration::from_micros(*us));
            }
            let actual = histogram.quantile(q).map(|d| d.as_micros() as u64);
            match (actual, expected_us) {
                (Some(actual), Some(expected)) => {
                    let error = actual.abs_diff(expected) as f64 / expected.max(1) as f64;
                    assert!(
                        error <= 1.0 / 32.0,
                        "q{q} of {latencies_us:?}: {actual}, expected {expected}"
                    );
                }
                _ => assert_eq!(actual, expected_us, "q{q} of {latencies_us:?}"),
            }
        };
        let ramp: Vec<u64> = (1..=1000).map(|i| i * 100).collect();
        check(&ramp, 0.5, Some(50_000));
        check(&ramp, 0.99, Some(99_000));
        check(&ramp, 1.0, Some(100_000));
        check(&[7, 7, 7], 0.5, Some(7));
        check(&[1, 2, 3, 4], 0.25, Some(1));
        check(&[u64::MAX / 2], 0.5, Some(u64::MAX / 2));
        check(&[], 0.5, None);
        for us in [0, 1, 63, 64, 65, 1_000, 123_456, 10_000_000] {
            let middle = bucket_middle(bucket(us));
            assert!(
                middle.abs_diff(us) as f64 <= us as f64 / 32.0,
                "{us} → {middle}"
            );
        }
    }

    #[test]
    fn summarises_a_run() {
        let mut tally = Tally {
            sent: 4,
            ..Tally::default()
        };
        tally.record_answer(200, Duration::from_millis(10));
        tally.record_answer(200, Duration::from_millis(10));
        tally.record_answer(503, Duration::from_millis(30));
        tally.record_error("timeout");
        let summary = summarise(
            "http://127.0.0.1:1/",
            Pace::Concurrency(2),
            &tally,
            Duration::from_secs(2),
        );
        assert_eq!(
            (summary.ok, summary.failed, summary.answered_per_s),
            (2, 2, 1.5)
        );
        assert_eq!(summary.statuses, BTreeMap::from([(200, 2), (503, 1)]));
        assert_eq!(summary.errors, BTreeMap::from([("timeout", 1)]));
        assert_eq!(summary.latency_ms.as_ref().map(|l| l.max), Some(30.0));
        assert_eq!(
            summary_text(&summary),
            "http://127.0.0.1:1/: sent 4 in 2.0 s, 2 ok, 2 failed, 0 skipped; 1.5 answers/s\n\
             latency p50 10.1 ms  p90 30.0 ms  p99 30.0 ms  max 30.0 ms\n\
             statuses: 200 ×2, 503 ×1\n\
             errors: timeout ×1\n"
        );
        assert_eq!(tally.in_flight(), 0);
        assert!(
            live_line(&tally, Duration::from_secs(3))
                .contains("sent 4  ok 2  failed 2  in flight 0")
        );
    }
}
