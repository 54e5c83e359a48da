//! Health checks: TCP connects and HTTP GETs against a member's ports.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use cairn_engine::Observation;
use cairn_model::{HealthCheck, Probe};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

/// How often a starting member is probed: it becomes Active as soon as it answers.
const STARTING_PROBE_INTERVAL: Duration = Duration::from_millis(25);
/// Past this a starting member is no longer probed.
const STARTING_DEADLINE: Duration = Duration::from_secs(120);

/// Probes a member until it is healthy, then at the check's interval until it fails past the
/// threshold; reports Healthy once and Unhealthy once.
pub(crate) async fn watch(
    member_id: String,
    check: HealthCheck,
    ports: BTreeMap<String, SocketAddr>,
    already_active: bool,
    tx: mpsc::UnboundedSender<Observation>,
) {
    let timeout = Duration::from_millis(check.timeout_ms.max(1));
    if !already_active {
        let deadline = tokio::time::Instant::now() + STARTING_DEADLINE;
        while let Err(_reason) = probe(&check.probe, &ports, timeout).await {
            // The engine faults a member this late anyway; the watcher must not outlive it.
            if tokio::time::Instant::now() > deadline {
                return;
            }
            tokio::time::sleep(STARTING_PROBE_INTERVAL).await;
        }
        if tx
            .send(Observation::Healthy {
                member_id: member_id.clone(),
            })
            .is_err()
        {
            return;
        }
    }
    let interval = Duration::from_millis(check.interval_ms.max(10));
    let mut failures = 0;
    loop {
        tokio::time::sleep(interval).await;
        match probe(&check.probe, &ports, timeout).await {
            Ok(()) => failures = 0,
            Err(reason) => {
                failures += 1;
                if failures >= check.failure_threshold.max(1) {
                    let reason = format!("health check failed {failures} times in a row: {reason}");
                    let _ = tx.send(Observation::Unhealthy { member_id, reason });
                    return;
                }
            }
        }
    }
}

/// One probe; the error says what failed.
pub async fn probe(
    probe: &Probe,
    ports: &BTreeMap<String, SocketAddr>,
    timeout: Duration,
) -> Result<(), String> {
    let addr = |name: &str| {
        ports
            .get(name)
            .copied()
            .ok_or_else(|| format!("no port named {name}"))
    };
    match probe {
        Probe::Process => Ok(()),
        Probe::Tcp { port } => {
            let addr = addr(port)?;
            connect(addr, timeout).await.map(drop)
        }
        Probe::Http { port, path } => {
            let addr = addr(port)?;
            tokio::time::timeout(timeout, http_get(addr, path))
                .await
                .map_err(|_| {
                    format!(
                        "GET {path} on {addr}: no answer within {} ms",
                        timeout.as_millis()
                    )
                })?
        }
    }
}

async fn connect(addr: SocketAddr, timeout: Duration) -> Result<TcpStream, String> {
    match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Ok(Ok(stream)) => Ok(stream),
        Ok(Err(e)) => Err(format!("connect to {addr}: {e}")),
        Err(_) => Err(format!(
            "connect to {addr}: no answer within {} ms",
            timeout.as_millis()
        )),
    }
}

async fn http_get(addr: SocketAddr, path: &str) -> Result<(), String> {
    let mut stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect to {addr}: {e}"))?;
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: cairn-health\r\nConnection: close\r\n\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| format!("GET {path} on {addr}: {e}"))?;
    let mut head = [0u8; 16];
    let mut read = 0;
    while read < 12 {
        let n = stream
            .read(&mut head[read..])
            .await
            .map_err(|e| format!("GET {path} on {addr}: {e}"))?;
        if n == 0 {
            return Err(format!(
                "GET {path} on {addr}: connection closed before a status line"
            ));
        }
        read += n;
    }
    // "HTTP/1.1 200 ": the status code is bytes 9..12.
    let status = std::str::from_utf8(&head[9..12]).unwrap_or("");
    match status.as_bytes().first() {
        Some(b'2') | Some(b'3') => Ok(()),
        _ => Err(format!("GET {path} on {addr} answered {status}")),
    }
}
