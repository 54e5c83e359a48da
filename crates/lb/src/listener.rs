//! Accepting client connections on one port and serving them over HTTP/1.1 keep-alive, or,
//! on a tcp port, relaying each one to a member.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::runtime::Handle;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::downstream::{self, ConnState};
use crate::drain::{Drain, DrainSignal};
use crate::proxy::ConnContext;
use crate::routing::CompiledTable;
use crate::tcp;

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
    let socket = unbound_socket(addr)?;
    if shared {
        socket.set_reuseport(true)?;
    }
    socket.bind(addr)?;
    socket.listen(ACCEPT_BACKLOG)
}

/// Fails as binding would when another socket listens on `port`. Sockets that share a port
/// (`SO_REUSEPORT`) would share it with any other program of the same user that asks to,
/// so the port is checked with an exclusive bind before they take it.
pub(crate) fn check_free(ip: IpAddr, port: u16) -> io::Result<()> {
    let addr = SocketAddr::new(ip, port);
    unbound_socket(addr)?.bind(addr)
}

fn unbound_socket(addr: SocketAddr) -> io::Result<TcpSocket> {
    let socket = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    // A port released by an earlier table can be bound again while its old connections linger.
    socket.set_reuseaddr(true)?;
    Ok(socket)
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
        let context = ConnContext {
            table: Arc::clone(&table),
            port,
            client_ip: peer.ip().to_canonical().to_string(),
        };
        tokio::spawn(serve(stream, context, drain.signal(), peer));
    }
    drain
}

/// Serves a connection until it closes: once draining starts, an idle connection closes at
/// once and a busy one after its current response; all close when the grace period is over.
async fn serve(stream: TcpStream, context: ConnContext, mut drain: DrainSignal, peer: SocketAddr) {
    let state = ConnState::default();
    let mut served = pin!(downstream::serve(stream, &context, &state));
    let served = tokio::select! {
        served = served.as_mut() => served,
        _ = drain.draining() => {
            if state.is_idle() {
                return;
            }
            state.close_after_current();
            tokio::select! {
                served = served => served,
                _ = drain.closing() => return,
            }
        }
    };
    if let Err(error) = served {
        tracing::debug!(port = context.port, %peer, %error, "client connection ended with an error");
    }
}
