//! Cairn's data plane: an HTTP/1.1 reverse proxy that serves the route table the engine
//! publishes, swapping it atomically so requests in flight are never disturbed, and
//! counting requests per cluster and member (in flight, totals, status classes, rate)
//! for the autoscaler and the dashboard.
//!
//! Requests are balanced round robin over a cluster's members; a member that refuses
//! connections is skipped, and draining members get no new requests. A request goes to
//! another member when nothing of it reached the first one, or, when it is idempotent and has
//! no body, when the first one failed before answering.
//!
//! This crate decides nothing: it never chooses members, never reads the store and never
//! talks to agents. It only proxies what the route table says.

mod deadline;
mod downstream;
mod drain;
mod flight;
mod framing;
mod head;
mod listener;
mod pool;
mod proxy;
mod rewrite;
mod routing;
mod stats;
mod table;
mod tcp;
mod upstream;

use std::collections::BTreeMap;
use std::io;
use std::net::IpAddr;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::runtime::Handle;
use tokio::sync::oneshot;

use crate::listener::RunningListener;
use crate::routing::CompiledTable;
pub use crate::stats::{ClusterStats, LbStats, MemberStats, RATE_WINDOW_SECS, RequestStats};
pub use crate::table::{
    Backend, ClusterKey, ClusterRoute, DEFAULT_RESPONSE_TIMEOUT, ListenerProtocol, ListenerRoute,
    RouteTable,
};

#[derive(Debug, thiserror::Error)]
pub enum LbError {
    #[error("cannot listen on port {port}: {source}")]
    Bind { port: u16, source: std::io::Error },
    #[error("port {port}: host {host} is claimed by both {first} and {second}")]
    DuplicateHost {
        port: u16,
        host: String,
        first: ClusterKey,
        second: ClusterKey,
    },
    #[error(
        "port {port}: cluster {cluster} shares the port with other clusters but answers to no host name"
    )]
    NoHostNames { port: u16, cluster: ClusterKey },
    #[error("tcp port {port} carries no host name, so it serves {served} only, not {refused}")]
    SharedTcpPort {
        port: u16,
        served: ClusterKey,
        refused: ClusterKey,
    },
    #[error(
        "cluster {cluster}: the context path {path:?} for host {host} {reason}, so it is not used"
    )]
    ContextPath {
        cluster: ClusterKey,
        host: String,
        path: String,
        reason: &'static str,
    },
    #[error("{}", join_messages(.0))]
    Several(Vec<LbError>),
    #[error("the load balancer is shut down")]
    ShutDown,
}

fn join_messages(problems: &[LbError]) -> String {
    problems
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// A handle on the proxy; clones share the same listeners, table and counters.
#[derive(Clone)]
pub struct LoadBalancer {
    inner: Arc<Inner>,
}

struct Inner {
    bind: IpAddr,
    table: Arc<ArcSwap<CompiledTable>>,
    /// Per port, a listener on each proxy thread (or one on the publisher's runtime).
    listeners: Mutex<BTreeMap<u16, Vec<RunningListener>>>,
    /// Serialises publishes and shutdown so listeners are opened and closed in order.
    publishing: tokio::sync::Mutex<()>,
    shut_down: AtomicBool,
    drain_grace: Duration,
    /// The proxy's own threads; without any, its tasks run on the publisher's runtime.
    threads: Vec<ProxyThread>,
}

/// A thread running a single-threaded runtime for the proxy alone, so requests do not queue
/// behind the control plane's work; it ends when the last handle on the proxy is dropped.
struct ProxyThread {
    runtime: Handle,
    _stop: oneshot::Sender<()>,
}

impl ProxyThread {
    /// Starts the `index`th proxy thread.
    fn start(index: usize) -> io::Result<ProxyThread> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = oneshot::channel::<()>();
        std::thread::Builder::new()
            .name(format!("cairn-proxy-{index}"))
            .spawn(move || {
                pool::use_idle_slot(index);
                // Returns when the sender is dropped, which drops the runtime and its tasks.
                let _ = runtime.block_on(stopped);
            })?;
        Ok(ProxyThread {
            runtime: handle,
            _stop: stop,
        })
    }
}

/// How long connections of a closed port may go on with what they serve before they are closed.
pub const DEFAULT_DRAIN_GRACE: Duration = Duration::from_secs(30);

impl LoadBalancer {
    /// A load balancer that will listen on `bind` once a table is published.
    pub fn new(bind: IpAddr) -> LoadBalancer {
        LoadBalancer::with_drain_grace(bind, DEFAULT_DRAIN_GRACE)
    }

    /// Like [`LoadBalancer::new`]; a port that closes (at shutdown, or when a table no longer
    /// has it) lets its connections finish for up to `drain_grace`, then closes them.
    pub fn with_drain_grace(bind: IpAddr, drain_grace: Duration) -> LoadBalancer {
        LoadBalancer::with_threads(bind, drain_grace, Vec::new())
    }

    /// Like [`LoadBalancer::with_drain_grace`], serving on `threads` threads of its own,
    /// each with a single-threaded runtime and its own listening socket on every port
    /// (`SO_REUSEPORT`, so the kernel spreads new connections over them), the way HAProxy
    /// runs with `nbthread`: the control plane's work never delays a request, and a
    /// connection's work never hops between threads.
    pub fn on_own_threads(
        bind: IpAddr,
        drain_grace: Duration,
        threads: NonZeroUsize,
    ) -> io::Result<LoadBalancer> {
        let threads = (0..threads.get())
            .map(ProxyThread::start)
            .collect::<io::Result<Vec<_>>>()?;
        Ok(LoadBalancer::with_threads(bind, drain_grace, threads))
    }

    fn with_threads(
        bind: IpAddr,
        drain_grace: Duration,
        threads: Vec<ProxyThread>,
    ) -> LoadBalancer {
        LoadBalancer {
            inner: Arc::new(Inner {
                bind,
                table: Arc::new(ArcSwap::from_pointee(CompiledTable::default())),
                listeners: Mutex::new(BTreeMap::new()),
                publishing: tokio::sync::Mutex::new(()),
                shut_down: AtomicBool::new(false),
                drain_grace,
                threads,
            }),
        }
    }

    /// Makes `table` the one every new request is routed by, opens listeners for its new
    /// ports and closes the ones for ports it no longer has (their open connections finish
    /// what they are serving). Problems (a port that cannot be bound, conflicting host names)
    /// are returned, and everything else in the table still takes effect; a port that could
    /// not be bound is tried again on the next publish.
    pub async fn publish(&self, table: RouteTable) -> Result<(), LbError> {
        let _publishing = self.inner.publishing.lock().await;
        if self.inner.shut_down.load(Ordering::Acquire) {
            return Err(LbError::ShutDown);
        }
        let threads = self.inner.threads.len();
        let (compiled, mut problems) =
            CompiledTable::compile(&table, &self.inner.table.load(), threads);
        let wanted: Vec<u16> = compiled.ports().collect();
        self.inner.table.store(Arc::new(compiled));

        let gone: Vec<RunningListener> = {
            let mut listeners = self.inner.listeners();
            let ports: Vec<u16> = listeners
                .keys()
                .copied()
                .filter(|port| wanted.binary_search(port).is_err())
                .collect();
            ports
                .iter()
                .filter_map(|port| listeners.remove(port))
                .flatten()
                .collect()
        };
        for listener in gone {
            // Its connections drain on their own; the port is free already.
            drop(listener.close().await);
        }

        for port in wanted {
            if self.inner.listeners().contains_key(&port) {
                continue;
            }
            match self.inner.listen(port) {
                Ok(running) => {
                    self.inner.listeners().insert(port, running);
                }
                Err((source, opened)) => {
                    for listener in opened {
                        drop(listener.close().await);
                    }
                    problems.push(LbError::Bind { port, source });
                }
            }
        }

        match problems.len() {
            0 => Ok(()),
            1 => Err(problems.remove(0)),
            _ => Err(LbError::Several(problems)),
        }
    }

    /// Counters of the clusters and members in the current table.
    pub fn stats(&self) -> LbStats {
        self.inner.table.load().stats(stats::uptime().as_secs())
    }

    /// Ports with a running listener, ascending.
    pub fn listening_ports(&self) -> Vec<u16> {
        self.inner.listeners().keys().copied().collect()
    }

    /// Stops accepting on every port, lets open connections finish the requests they are
    /// serving, and returns once they have closed. Later publishes fail.
    pub async fn shutdown(&self) {
        let _publishing = self.inner.publishing.lock().await;
        self.inner.shut_down.store(true, Ordering::Release);
        let listeners = std::mem::take(&mut *self.inner.listeners());
        let mut draining = Vec::with_capacity(listeners.len());
        for listener in listeners.into_values().flatten() {
            draining.extend(listener.close().await);
        }
        for drained in draining {
            // A drain task only fails when its runtime is going away, and then nothing is left to wait for.
            let _ = drained.await;
        }
        self.inner.table.store(Arc::new(CompiledTable::default()));
    }
}

impl Inner {
    /// The runtimes the proxy's tasks run on: one per proxy thread, or the caller's.
    fn runtimes(&self) -> Vec<Handle> {
        if self.threads.is_empty() {
            return vec![Handle::current()];
        }
        self.threads
            .iter()
            .map(|thread| thread.runtime.clone())
            .collect()
    }

    /// Opens `port` on every runtime; on failure, the error and the listeners opened so far.
    fn listen(&self, port: u16) -> Result<Vec<RunningListener>, (io::Error, Vec<RunningListener>)> {
        let runtimes = self.runtimes();
        let shared = runtimes.len() > 1;
        if shared {
            listener::check_free(self.bind, port).map_err(|error| (error, Vec::new()))?;
        }
        let mut opened = Vec::with_capacity(runtimes.len());
        for runtime in runtimes {
            // The listening socket belongs to the runtime that serves it.
            let bound = {
                let _entered = runtime.enter();
                listener::bind(self.bind, port, shared)
            };
            match bound {
                Ok(bound) => {
                    let table = Arc::clone(&self.table);
                    opened.push(listener::spawn(
                        &runtime,
                        bound,
                        port,
                        table,
                        self.drain_grace,
                    ));
                }
                Err(error) => return Err((error, opened)),
            }
        }
        Ok(opened)
    }

    fn listeners(&self) -> MutexGuard<'_, BTreeMap<u16, Vec<RunningListener>>> {
        self.listeners
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}
