//! `cairn load` against a tiny HTTP server in the test, and its refusals.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_cairn");

/// What the server saw: each request's target and Host header.
type Seen = Arc<Mutex<Vec<(String, String)>>>;

/// An HTTP/1.1 server on a free loopback port that answers 200 on keep-alive connections,
/// or 503 for targets containing `fail`.
fn serve() -> (SocketAddr, Seen) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    let addr = listener.local_addr().expect("local addr");
    let seen = Seen::default();
    let record = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let record = record.clone();
            std::thread::spawn(move || answer(stream, &record));
        }
    });
    (addr, seen)
}

fn answer(stream: TcpStream, seen: &Mutex<Vec<(String, String)>>) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(20)));
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream);
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
            return;
        }
        let target = request_line
            .split_whitespace()
            .nth(1)
            .unwrap_or("")
            .to_string();
        let mut host = String::new();
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':')
                && name.eq_ignore_ascii_case("host")
            {
                host = value.trim().to_string();
            }
        }
        let status = if target.contains("fail") {
            "503 Service Unavailable"
        } else {
            "200 OK"
        };
        seen.lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((target, host));
        let response = format!("HTTP/1.1 {status}\r\nContent-Length: 2\r\n\r\nok");
        if writer.write_all(response.as_bytes()).is_err() {
            return;
        }
    }
}

/// Runs `cairn` with a time limit; returns its exit code, stdout and stderr.
fn cairn(args: &[&str]) -> (i32, String, String) {
    let mut child = Command::new(BIN)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cairn runs");
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().expect("wait on cairn").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("cairn {args:?} ran past 30 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let output = child.wait_with_output().expect("cairn output");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).to_string(),
        String::from_utf8_lossy(&output.stderr).to_string(),
    )
}

fn number(summary: &Value, key: &str) -> u64 {
    summary.get(key).and_then(Value::as_u64).unwrap_or(u64::MAX)
}

#[test]
fn open_loop_sends_at_the_rate_with_the_workload_parameters() {
    let (addr, seen) = serve();
    let url = format!("http://{addr}/ignored");
    let args = [
        "load",
        &url,
        "--rate",
        "40",
        "--duration",
        "2s",
        "--host",
        "app.web.example.org",
        "--path",
        "/work",
        "--latency-ms",
        "5",
        "--cpu-ms",
        "1",
        "--output",
        "json",
    ];
    let (code, out, err) = cairn(&args);
    assert_eq!(code, 0, "{out}{err}");
    let summary: Value = serde_json::from_str(&out).expect("a JSON summary");
    // 2 s at 40/s is 80 requests, one per 25 ms from the start.
    assert_eq!(number(&summary, "sent"), 80, "{summary}");
    assert_eq!(number(&summary, "ok"), 80, "{summary}");
    assert_eq!(number(&summary, "failed"), 0, "{summary}");
    assert!(summary["latency_ms"]["p99"].as_f64().is_some(), "{summary}");
    assert!(
        err.lines().any(|l| l.contains("sent") && l.contains("p99")),
        "no live line in {err}"
    );
    let seen = seen.lock().unwrap_or_else(|e| e.into_inner()).clone();
    assert_eq!(seen.len(), 80);
    assert!(
        seen.iter()
            .all(|(target, host)| target == "/work?latency_ms=5&cpu_ms=1"
                && host == "app.web.example.org"),
        "{:?}",
        seen.first()
    );
}

#[test]
fn closed_loop_counts_failed_answers_and_fails() {
    let (addr, _seen) = serve();
    let url = format!("http://{addr}/fail");
    let (code, out, err) = cairn(&["load", &url, "--concurrency", "3", "--duration", "500ms"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.contains(" 0 ok") && out.contains("statuses: 503 ×"),
        "{out}"
    );
}

#[test]
fn refuses_other_hosts_and_long_runs() {
    let check = |args: &[&str], expected: &str| {
        let (code, out, err) = cairn(args);
        assert_ne!(code, 0, "{args:?}: {out}");
        assert!(err.contains(expected), "{args:?}: {err}");
    };
    check(
        &[
            "load",
            "http://10.1.2.3/",
            "--rate",
            "1",
            "--duration",
            "1s",
        ],
        "only sent to this machine (127.0.0.0/8, ::1 or localhost)",
    );
    check(
        &[
            "load",
            "http://127.0.0.1:9/",
            "--rate",
            "1",
            "--duration",
            "2h",
        ],
        "2h is longer than the limit of 1h",
    );
    check(
        &[
            "load",
            "http://127.0.0.1:9/",
            "--rate",
            "1",
            "--concurrency",
            "2",
            "--duration",
            "1s",
        ],
        "cannot be used with",
    );
    check(
        &["load", "http://127.0.0.1:9/", "--duration", "1s"],
        "--rate",
    );
}
