//! The built-in workload: a small HTTP/1.1 server that cartridges run as their members, for demos,
//! tests, benchmarks and Stratos `mock` cartridges.
//!
//! It answers `/healthz`, serves a configurable response (size, latency, CPU burn) on every other
//! path, holds a memory ballast, and reports its own in-flight requests on `/inflight`.
//! It must stay self-contained: no calls to the control plane, no traffic beyond its own sockets.

mod config;
mod server;

use std::net::SocketAddr;

pub use config::{
    MAX_BALLAST_MB, MAX_CPU_MS, MAX_LATENCY_MS, MAX_RESPONSE_BYTES, NamedPort, ResponseShape,
    WorkloadConfig,
};
pub use server::Workload;

/// Why the workload could not start.
#[derive(Debug, thiserror::Error)]
pub enum WorkloadError {
    #[error("{variable}={value:?}: {reason}")]
    InvalidVariable {
        variable: &'static str,
        value: String,
        reason: String,
    },
    #[error("no port to listen on: set CAIRN_PORTS (name=port,...) or PORT")]
    NoPorts,
    #[error("cannot listen on {addr} (port {name}): {source}")]
    Bind {
        name: String,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot allocate a ballast of {mb} MiB")]
    Ballast { mb: u64 },
    #[error("cannot watch for SIGTERM: {0}")]
    Signal(std::io::Error),
}

/// Serves until SIGTERM or Ctrl-C, then lets in-flight requests finish and returns.
pub async fn serve(config: WorkloadConfig) -> Result<(), WorkloadError> {
    let workload = Workload::bind(config).await?;
    workload.announce();
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(WorkloadError::Signal)?;
    workload
        .run_until(async move {
            tokio::select! {
                _ = terminate.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        })
        .await;
    Ok(())
}
