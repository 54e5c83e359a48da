//! Keep-alive HTTP/1.1 connections to one backend address, reused across requests.
//!
//! The pool hands out a connection only when it is idle, and it separates "could not
//! connect" (safe to try another backend) from everything that happens after a request
//! was handed to a connection.

use std::cell::Cell;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::net::TcpStream;

use crate::stats::uptime;
use crate::upstream::Connection;

/// Most idle connections kept per backend; more are closed once their response is done.
const MAX_IDLE: usize = 512;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a backend that refused a connection is tried only after the others.
const SUSPECT_FOR_MS: u64 = 1_000;
/// Idle connections older than this are closed rather than reused: a backend closing an idle
/// connection just as a request is written to it would fail that request, so the proxy gives
/// up on idle connections before common keep-alive timeouts (2 to 5 s) run out.
const IDLE_FOR_MS: u64 = 1_500;

thread_local! {
    /// Which of a pool's idle lists this thread uses: a connection stays with the proxy
    /// thread whose runtime it is registered with.
    static IDLE_SLOT: Cell<usize> = const { Cell::new(0) };
}

/// Makes the calling thread use idle list `slot` of every pool.
pub(crate) fn use_idle_slot(slot: usize) {
    IDLE_SLOT.set(slot);
}

/// Idle connections with the uptime (ms) they became idle at, the most recent last.
type IdleList = Vec<(Connection, u64)>;

pub(crate) struct Pool {
    addr: SocketAddr,
    /// One idle list per proxy thread.
    idle: Box<[Mutex<IdleList>]>,
    /// Milliseconds of uptime until which the backend is suspect; 0 when it never was.
    suspect_until_ms: AtomicU64,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum ConnectError {
    #[error("connect to {addr} failed: {source}")]
    Io { addr: SocketAddr, source: io::Error },
    #[error("connect to {addr} timed out after {}s", CONNECT_TIMEOUT.as_secs())]
    TimedOut { addr: SocketAddr },
    #[error("connection to {addr} failed before the request was sent: {source}")]
    Closed { addr: SocketAddr, source: io::Error },
}

impl Pool {
    /// A pool with an idle list for each of `threads` proxy threads.
    pub(crate) fn new(addr: SocketAddr, threads: usize) -> Pool {
        Pool {
            addr,
            idle: (0..threads.max(1)).map(|_| Mutex::default()).collect(),
            suspect_until_ms: AtomicU64::new(0),
        }
    }

    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub(crate) fn is_suspect(&self, now_ms: u64) -> bool {
        now_ms < self.suspect_until_ms.load(Relaxed)
    }

    pub(crate) fn mark_suspect(&self, now_ms: u64) {
        self.suspect_until_ms
            .store(now_ms + SUSPECT_FOR_MS, Relaxed);
    }

    /// The calling thread's idle list.
    fn idle(&self) -> std::sync::MutexGuard<'_, IdleList> {
        let slot = IDLE_SLOT.get() % self.idle.len();
        self.idle[slot]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The most recently used idle connection that is still open and not idle for too long.
    pub(crate) fn take_idle(&self, now_ms: u64) -> Option<Connection> {
        let mut idle = self.idle();
        while let Some((mut connection, since_ms)) = idle.pop() {
            if now_ms.saturating_sub(since_ms) > IDLE_FOR_MS {
                // The ones below were idle even longer.
                idle.clear();
                return None;
            }
            if connection.is_reusable() {
                return Some(connection);
            }
        }
        None
    }

    pub(crate) async fn connect(&self) -> Result<Connection, ConnectError> {
        self.connect_stream().await.map(Connection::new)
    }

    /// A new connection to the backend, with Nagle's algorithm off: what is written is
    /// written whole, so waiting to fill segments would only add latency.
    pub(crate) async fn connect_stream(&self) -> Result<TcpStream, ConnectError> {
        let addr = self.addr;
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
            .await
            .map_err(|_| ConnectError::TimedOut { addr })?
            .map_err(|source| ConnectError::Io { addr, source })?;
        stream
            .set_nodelay(true)
            .map_err(|source| ConnectError::Io { addr, source })?;
        Ok(stream)
    }

    /// Gives back a connection whose response was read to the end.
    pub(crate) fn put(&self, connection: Connection) {
        let since_ms = uptime().as_millis() as u64;
        let mut idle = self.idle();
        if idle.len() < MAX_IDLE {
            idle.push((connection, since_ms));
        }
    }
}
