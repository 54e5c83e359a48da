//! The HTTP side of the workload: listeners, request handling, counters and ballast.

use std::convert::Infallible;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{ALLOW, CONTENT_TYPE, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::config::{MAX_BALLAST_MB, MAX_CPU_MS, MAX_LATENCY_MS, MAX_RESPONSE_BYTES};
use crate::{ResponseShape, WorkloadConfig, WorkloadError};

/// How long shutdown waits for in-flight requests before closing their connections.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
const MIB: u64 = 1024 * 1024;

/// A workload whose ports are bound, ready to serve.
pub struct Workload {
    listeners: Vec<(Arc<str>, TcpListener)>,
    state: Arc<State>,
}

struct State {
    member_id: String,
    defaults: ResponseShape,
    started: Instant,
    unhealthy_after: Option<Duration>,
    in_flight: AtomicU64,
    served: AtomicU64,
    ballast: Mutex<Vec<u8>>,
    ballast_mb: AtomicU64,
}

impl Workload {
    /// Binds every configured port and allocates the ballast.
    pub async fn bind(config: WorkloadConfig) -> Result<Workload, WorkloadError> {
        let mut listeners = Vec::with_capacity(config.ports.len());
        for port in &config.ports {
            let addr = SocketAddr::new(config.bind, port.port);
            let listener = TcpListener::bind(addr)
                .await
                .map_err(|source| WorkloadError::Bind {
                    name: port.name.clone(),
                    addr,
                    source,
                })?;
            listeners.push((Arc::from(port.name.as_str()), listener));
        }
        let state = Arc::new(State {
            member_id: config.member_id,
            defaults: config.response,
            started: Instant::now(),
            unhealthy_after: config.unhealthy_after,
            in_flight: AtomicU64::new(0),
            served: AtomicU64::new(0),
            ballast: Mutex::new(Vec::new()),
            ballast_mb: AtomicU64::new(0),
        });
        let mb = config.ballast_mb;
        if mb > 0 && !set_ballast_blocking(&state, mb).await {
            return Err(WorkloadError::Ballast { mb });
        }
        Ok(Workload { listeners, state })
    }

    /// The bound address of every port, by port-mapping name.
    pub fn local_addrs(&self) -> Vec<(String, SocketAddr)> {
        self.listeners
            .iter()
            .filter_map(|(name, listener)| Some((name.to_string(), listener.local_addr().ok()?)))
            .collect()
    }

    /// Prints the one start line to stdout; stdout may be closed, so write errors are ignored.
    pub fn announce(&self) {
        let addrs: Vec<String> = self
            .local_addrs()
            .iter()
            .map(|(name, addr)| format!("{name}={addr}"))
            .collect();
        let line = format!(
            "workload {} listening on {}\n",
            self.state.member_id,
            addrs.join(", ")
        );
        let mut stdout = std::io::stdout().lock();
        let _ = stdout
            .write_all(line.as_bytes())
            .and_then(|()| stdout.flush());
    }

    /// Serves until `shutdown` completes, then stops accepting and drains open connections.
    pub async fn run_until(self, shutdown: impl Future<Output = ()>) {
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut accepting = JoinSet::new();
        for (name, listener) in self.listeners {
            accepting.spawn(accept_loop(
                listener,
                name,
                self.state.clone(),
                stop_rx.clone(),
            ));
        }
        shutdown.await;
        let _ = stop_tx.send(true);
        while accepting.join_next().await.is_some() {}
    }
}

async fn accept_loop(
    listener: TcpListener,
    port: Arc<str>,
    state: Arc<State>,
    mut stop: watch::Receiver<bool>,
) {
    let graceful = GracefulShutdown::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let _ = stream.set_nodelay(true);
                    let state = state.clone();
                    let port = port.clone();
                    let service = service_fn(move |request| {
                        handle(request, state.clone(), port.clone())
                    });
                    let connection =
                        http1::Builder::new().serve_connection(TokioIo::new(stream), service);
                    let connection = graceful.watch(connection);
                    tokio::spawn(async move {
                        let _ = connection.await;
                    });
                }
                // Accept fails transiently (out of file descriptors, aborted handshakes): back off.
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            },
            _ = stop.changed() => break,
        }
    }
    drop(listener);
    let _ = tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown()).await;
}

async fn handle(
    request: Request<Incoming>,
    state: Arc<State>,
    port: Arc<str>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let query = request.uri().query();
    // What the member was asked for, after the load balancer's rewriting.
    let asked = request
        .uri()
        .path_and_query()
        .and_then(|path| HeaderValue::from_str(path.as_str()).ok());
    let mut response = match (request.method(), request.uri().path()) {
        (_, "/healthz") => health(&state),
        (_, "/inflight") => inflight(&state),
        (&Method::POST, "/ballast") => ballast(&state, query).await,
        (_, "/ballast") => {
            let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "use POST /ballast?mb=N\n");
            response
                .headers_mut()
                .insert(ALLOW, HeaderValue::from_static("POST"));
            response
        }
        _ => work(&state, &port, query).await,
    };
    if let Ok(member) = HeaderValue::from_str(&state.member_id) {
        response.headers_mut().insert("x-cairn-member", member);
    }
    if let Some(asked) = asked {
        response.headers_mut().insert("x-cairn-path", asked);
    }
    Ok(response)
}

fn health(state: &State) -> Response<Full<Bytes>> {
    match state.unhealthy_after {
        Some(after) if state.started.elapsed() >= after => {
            text(StatusCode::SERVICE_UNAVAILABLE, "unhealthy\n")
        }
        _ => text(StatusCode::OK, "ok\n"),
    }
}

fn inflight(state: &State) -> Response<Full<Bytes>> {
    let report = serde_json::json!({
        "member": state.member_id,
        "in_flight": state.in_flight.load(Ordering::Relaxed),
        "served": state.served.load(Ordering::Relaxed),
        "ballast_mb": state.ballast_mb.load(Ordering::Relaxed),
    });
    json(StatusCode::OK, &report)
}

async fn ballast(state: &Arc<State>, query: Option<&str>) -> Response<Full<Bytes>> {
    let mb = match query_number(query, "mb", MAX_BALLAST_MB) {
        Ok(Some(mb)) => mb,
        Ok(None) => return text(StatusCode::BAD_REQUEST, "missing query parameter mb\n"),
        Err(message) => return text(StatusCode::BAD_REQUEST, &message),
    };
    if !set_ballast_blocking(state, mb).await {
        let message = format!("cannot allocate a ballast of {mb} MiB\n");
        return text(StatusCode::INSUFFICIENT_STORAGE, &message);
    }
    json(StatusCode::OK, &serde_json::json!({ "ballast_mb": mb }))
}

/// Replaces the ballast on a blocking thread; false when the memory cannot be had.
async fn set_ballast_blocking(state: &Arc<State>, mb: u64) -> bool {
    let state = state.clone();
    tokio::task::spawn_blocking(move || set_ballast(&state, mb))
        .await
        .unwrap_or(false)
}

fn set_ballast(state: &State, mb: u64) -> bool {
    let mut ballast = state.ballast.lock().unwrap_or_else(PoisonError::into_inner);
    // Free the old ballast first so the process never holds both.
    *ballast = Vec::new();
    state.ballast_mb.store(0, Ordering::Relaxed);
    let Some(bytes) = mb
        .checked_mul(MIB)
        .and_then(|bytes| usize::try_from(bytes).ok())
    else {
        return false;
    };
    let mut memory = Vec::new();
    if memory.try_reserve_exact(bytes).is_err() {
        return false;
    }
    // A non-zero fill writes every page, so the ballast is resident rather than merely reserved.
    memory.resize(bytes, 1);
    *ballast = memory;
    state.ballast_mb.store(mb, Ordering::Relaxed);
    true
}

async fn work(state: &Arc<State>, port: &str, query: Option<&str>) -> Response<Full<Bytes>> {
    let shape = match request_shape(query, state.defaults) {
        Ok(shape) => shape,
        Err(message) => return text(StatusCode::BAD_REQUEST, &message),
    };
    let _in_flight = InFlight::enter(state.clone());
    if !shape.cpu.is_zero() {
        let cpu = shape.cpu;
        let _ = tokio::task::spawn_blocking(move || burn_cpu(cpu)).await;
    }
    if !shape.latency.is_zero() {
        tokio::time::sleep(shape.latency).await;
    }
    state.served.fetch_add(1, Ordering::Relaxed);
    let mut body = format!("member {} port {port}\n", state.member_id).into_bytes();
    let size = usize::try_from(shape.bytes)
        .unwrap_or(usize::MAX)
        .max(body.len());
    body.resize(size, b'.');
    let mut response = Response::new(Full::new(Bytes::from(body)));
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    response
}

/// Counts a request as in flight for as long as it lives, including when the client goes away.
struct InFlight(Arc<State>);

impl InFlight {
    fn enter(state: Arc<State>) -> InFlight {
        state.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(state)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

fn burn_cpu(duration: Duration) {
    let start = Instant::now();
    let mut spin: u64 = 0;
    while start.elapsed() < duration {
        spin = std::hint::black_box(spin.wrapping_mul(31).wrapping_add(7));
    }
}

/// The request's shape: the defaults, overridden by `bytes`, `latency_ms` and `cpu_ms`.
fn request_shape(query: Option<&str>, defaults: ResponseShape) -> Result<ResponseShape, String> {
    let mut shape = defaults;
    if let Some(bytes) = query_number(query, "bytes", MAX_RESPONSE_BYTES)? {
        shape.bytes = bytes;
    }
    if let Some(ms) = query_number(query, "latency_ms", MAX_LATENCY_MS)? {
        shape.latency = Duration::from_millis(ms);
    }
    if let Some(ms) = query_number(query, "cpu_ms", MAX_CPU_MS)? {
        shape.cpu = Duration::from_millis(ms);
    }
    Ok(shape)
}

/// The last value of query parameter `name`, if present, as a number no larger than `max`.
fn query_number(query: Option<&str>, name: &str, max: u64) -> Result<Option<u64>, String> {
    let value = query
        .into_iter()
        .flat_map(|query| query.split('&'))
        .map(|pair| pair.split_once('=').unwrap_or((pair, "")))
        .filter(|(key, _)| *key == name)
        .map(|(_, value)| value)
        .next_back();
    let Some(value) = value else { return Ok(None) };
    match value.parse::<u64>() {
        Ok(number) if number <= max => Ok(Some(number)),
        Ok(_) => Err(format!(
            "query parameter {name}={value}: must be at most {max}\n"
        )),
        Err(_) => Err(format!(
            "query parameter {name}={value:?}: expected a non-negative whole number\n"
        )),
    }
}

fn text(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::copy_from_slice(body.as_bytes())));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    response
}

fn json(status: StatusCode, value: &serde_json::Value) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(value.to_string())));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(query: Option<&str>, expected: Result<(u64, u64, u64), &str>) {
        let defaults = ResponseShape {
            bytes: 10,
            latency: Duration::from_millis(20),
            cpu: Duration::ZERO,
        };
        let actual = request_shape(query, defaults).map(|shape| {
            (
                shape.bytes,
                shape.latency.as_millis() as u64,
                shape.cpu.as_millis() as u64,
            )
        });
        assert_eq!(actual, expected.map_err(str::to_owned), "query {query:?}");
    }

    #[test]
    fn query_overrides_defaults() {
        check(None, Ok((10, 20, 0)));
        check(Some(""), Ok((10, 20, 0)));
        check(Some("bytes=5&cpu_ms=3"), Ok((5, 20, 3)));
        check(Some("latency_ms=0&other=x&flag"), Ok((10, 0, 0)));
        check(Some("bytes=1&bytes=2"), Ok((2, 20, 0)));
        check(
            Some("latency_ms=soon"),
            Err("query parameter latency_ms=\"soon\": expected a non-negative whole number\n"),
        );
        check(
            Some("cpu_ms=60001"),
            Err("query parameter cpu_ms=60001: must be at most 60000\n"),
        );
        check(
            Some("bytes"),
            Err("query parameter bytes=\"\": expected a non-negative whole number\n"),
        );
    }
}
