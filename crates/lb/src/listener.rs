//! Accepting client connections on one port and serving them over HTTP/1.1 keep-alive, or,
//! on a tcp port, relaying each one to a member.

use std::convert::Infallible;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use hyper::body::Incoming;
use hyper::header::HeaderValue;
use hyper::server::conn::http1;
use hyper::service::{HttpService, service_fn};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::runtime::Handle;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::drain::{Drain, DrainSignal};
use crate::proxy::{ConnContext, ProxyBody, handle};
use crate::routing::CompiledTable;
use crate::tcp;

/// Clients that send no complete request head within this time are disconnected.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Connections the kernel queues before they are accepted, for bursts of new clients.
const ACCEPT_BACKLOG: u32 = 1024;
/// Pause after a failed accept (such as running out of file descriptors) before the next one.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

pub(crate) struct RunningListener {
    runtime: Handle,
    stop: oneshot::Sender<()>,
    accepting: JoinHandle<Drain>,
}

impl RunningListener {
    /// Stops accepting and releases the port; the returned task ends once the open
    /// connections have drained.
    pub(crate) async fn close(self) -> Option<JoinHandle<()>> {
        // The accept loop may have ended already, in which case nobody listens for the signal.
        let _ = self.stop.send(());
        let connections = self.accepting.await.ok()?;
        Some(self.runtime.spawn(connections.shutdown()))
    }
}

/// A listening socket on `port`; `shared` lets other sockets of this process listen on the
/// same port, one per proxy thread, with the kernel spreading connections over them.
pub(crate) fn bind(ip: IpAddr, port: u16, shared: bool) -> io::Result<TcpListener> {
    let addr = SocketAddr::new(ip, port);
    let socket = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    // A port released by an earlier table can be bound again while its old connections linger.
    socket.set_reuseaddr(true)?;
    if shared {
        socket.set_reuseport(true)?;
    }
    socket.bind(addr)?;
    socket.listen(ACCEPT_BACKLOG)
}

pub(crate) fn spawn(
    runtime: &Handle,
    listener: TcpListener,
    port: u16,
    table: Arc<ArcSwap<CompiledTable>>,
    drain_grace: Duration,
) -> RunningListener {
    let (stop, stopped) = oneshot::channel();
    let drain = Drain::new(drain_grace);
    let accepting = runtime.spawn(accept_loop(listener, port, table, drain, stopped));
    RunningListener {
        runtime: runtime.clone(),
        stop,
        accepting,
    }
}

async fn accept_loop(
    listener: TcpListener,
    port: u16,
    table: Arc<ArcSwap<CompiledTable>>,
    drain: Drain,
    mut stopped: oneshot::Receiver<()>,
) -> Drain {
    let mut builder = http1::Builder::new();
    // Copying small heads and bodies into one buffer is cheaper than a vectored write.
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .writev(false);
    loop {
        let accepted = tokio::select! {
            biased;
            _ = &mut stopped => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(port, %error, "accepting a connection failed");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        // Responses are written whole, so Nagle's algorithm would only add latency.
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(port, %peer, %error, "cannot disable nagle on a client connection");
        }
        if let Some(cluster) = table.load().tcp_route(port) {
            tokio::spawn(tcp::relay(stream, Arc::clone(cluster), drain.signal()));
            continue;
        }
        let context = Arc::new(ConnContext {
            table: Arc::clone(&table),
            port,
            client_ip: client_ip_header(peer.ip()),
            drain: drain.signal(),
        });
        let service = service_fn(move |request| {
            let context = Arc::clone(&context);
            async move { Ok::<_, Infallible>(handle(&context, request).await) }
        });
        let connection = builder
            .serve_connection(TokioIo::new(stream), service)
            .with_upgrades();
        let draining = drain.signal();
        tokio::spawn(async move {
            if let Err(error) = serve(connection, draining).await {
                tracing::debug!(port, %peer, %error, "client connection ended with an error");
            }
        });
    }
    drain
}

/// Serves a connection until it closes, closing it after its current request once draining
/// starts, or at once when the drain's grace period is over.
async fn serve<S>(
    connection: http1::UpgradeableConnection<TokioIo<TcpStream>, S>,
    mut drain: DrainSignal,
) -> hyper::Result<()>
where
    S: HttpService<Incoming, ResBody = ProxyBody>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut connection = pin!(connection);
    tokio::select! {
        served = connection.as_mut() => return served,
        _ = drain.draining() => {}
    }
    connection.as_mut().graceful_shutdown();
    tokio::select! {
        served = connection.as_mut() => served,
        _ = drain.closing() => Ok(()),
    }
}

fn client_ip_header(ip: IpAddr) -> HeaderValue {
    let ip = ip.to_canonical();
    HeaderValue::try_from(ip.to_string()).unwrap_or_else(|_| HeaderValue::from_static("unknown"))
}
