//! Minimal proxies in front of one backend, to find which part of an HTTP proxy lengthens the
//! latency tail. Unless said otherwise, each client connection is paired with a backend
//! connection of its own.
//!
//! Usage: `relays MODE PORT BACKEND_PORT`, MODE one of
//! - `epoll`: raw level-triggered epoll, bytes passed on as they are read;
//! - `epoll-pooled`: the work of `pooled` (heads parsed and written again, backend connections
//!   shared, the most recently idle first) on that raw epoll loop instead of tokio;
//! - `epoll-batched`: `epoll-pooled` writing only once every socket of a batch of events was
//!   read, in HAProxy's order;
//! - `tokio`: a current_thread tokio runtime, a task per connection, bytes passed on;
//! - `httparse`: the same, with request and response heads parsed and written again;
//! - `pooled`: `httparse` with backend connections shared by all clients, the most recently
//!   idle one taken first, as Cairn's member pool does;
//! - `burn`: `pooled` spending 3 µs more CPU on each request;
//! - `hyper`: `httparse` with hyper's HTTP/1.1 server on the client side.
//!
//! They serve requests without bodies and responses with a `Content-Length`, which is what the
//! benchmark sends and gets; anything else ends the connection.

use std::cell::RefCell;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Mutex;

type Error = Box<dyn std::error::Error + Send + Sync>;

fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [mode, port, backend] = args.as_slice() else {
        return Err(
            "usage: relays epoll|epoll-pooled|epoll-batched|tokio|httparse|pooled|burn|hyper PORT BACKEND_PORT"
                .into(),
        );
    };
    let (port, backend): (u16, u16) = (port.parse()?, backend.parse()?);
    if mode == "epoll" {
        return epoll(port, backend);
    }
    if mode == "epoll-pooled" || mode == "epoll-batched" {
        return epoll_pooled(port, backend, mode == "epoll-batched");
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = TcpListener::bind(("127.0.0.1", port)).await?;
        loop {
            let (client, _) = listener.accept().await?;
            let server = TcpStream::connect(("127.0.0.1", backend)).await?;
            client.set_nodelay(true)?;
            server.set_nodelay(true)?;
            // A connection that fails just ends.
            match mode.as_str() {
                "tokio" => drop(tokio::spawn(pass_bytes(client, server))),
                "httparse" => drop(tokio::spawn(parse_heads(client, Backend::Own(server)))),
                "pooled" => drop(tokio::spawn(parse_heads(
                    client,
                    Backend::Pooled(backend, 0),
                ))),
                "burn" => drop(tokio::spawn(parse_heads(
                    client,
                    Backend::Pooled(backend, 3),
                ))),
                "hyper" => drop(tokio::spawn(hyper_server(client, server))),
                _ => return Err(format!("unknown mode {mode}").into()),
            }
        }
    })
}

/// An epoll instance watching sockets for input, each under a key of the caller's.
struct Epoll(i32);

impl Epoll {
    fn new() -> Epoll {
        // SAFETY: plain epoll calls on a descriptor this value owns for as long as it lives.
        Epoll(unsafe { libc::epoll_create1(0) })
    }

    fn watch(&self, fd: i32, key: u64) {
        let mut event = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: key,
        };
        // SAFETY: as above, on a socket its caller keeps open while it is watched.
        unsafe { libc::epoll_ctl(self.0, libc::EPOLL_CTL_ADD, fd, &mut event) };
    }

    /// Waits for sockets with input; their events fill the front of `events`.
    fn wait<'a>(&self, events: &'a mut [libc::epoll_event]) -> &'a [libc::epoll_event] {
        let room = i32::try_from(events.len()).unwrap_or(i32::MAX);
        // SAFETY: as above; `events` has room for the count passed.
        let ready = unsafe { libc::epoll_wait(self.0, events.as_mut_ptr(), room, -1) };
        &events[..usize::try_from(ready).unwrap_or(0)]
    }
}

/// One epoll loop for every connection: what a socket has to read goes to its peer at once.
fn epoll(port: u16, backend: u16) -> Result<(), Error> {
    let listener = std::net::TcpListener::bind(("127.0.0.1", port))?;
    listener.set_nonblocking(true)?;
    // Even slots are clients, odd ones their backends; a slot's peer is `slot ^ 1`.
    let mut sockets: Vec<Option<std::net::TcpStream>> = Vec::new();
    let epoll = Epoll::new();
    epoll.watch(listener.as_raw_fd(), u64::MAX);
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 256];
    let mut buffer = vec![0u8; 16 * 1024];
    loop {
        for event in epoll.wait(&mut events) {
            if event.u64 == u64::MAX {
                while let Ok((client, _)) = listener.accept() {
                    let server = std::net::TcpStream::connect(("127.0.0.1", backend))?;
                    for socket in [&client, &server] {
                        socket.set_nonblocking(true)?;
                        socket.set_nodelay(true)?;
                        epoll.watch(socket.as_raw_fd(), sockets.len() as u64);
                        sockets.push(None);
                    }
                    let slot = sockets.len() - 2;
                    sockets[slot] = Some(client);
                    sockets[slot + 1] = Some(server);
                }
                continue;
            }
            let slot = event.u64 as usize;
            let read = match sockets[slot]
                .as_mut()
                .map(|socket| socket.read(&mut buffer))
            {
                Some(Ok(read)) if read > 0 => read,
                Some(Err(error)) if error.kind() == std::io::ErrorKind::WouldBlock => continue,
                _ => {
                    sockets[slot] = None;
                    sockets[slot ^ 1] = None;
                    continue;
                }
            };
            if let Some(peer) = sockets[slot ^ 1].as_mut() {
                let _ = peer.write_all(&buffer[..read]);
            }
        }
    }
}

/// A socket of the `epoll-pooled` loop and what it has read.
struct Peer {
    socket: std::net::TcpStream,
    read: Vec<u8>,
    /// For a client, the backend serving its request; for a backend, the client it serves.
    partner: Option<usize>,
    is_client: bool,
}

/// One epoll loop for every connection, clients and a shared pool of backend connections:
/// a complete request head is parsed, written again with forwarding headers and sent on the
/// most recently idle backend connection; a complete response goes back to its client.
fn epoll_pooled(port: u16, backend: u16, batched: bool) -> Result<(), Error> {
    let listener = std::net::TcpListener::bind(("127.0.0.1", port))?;
    listener.set_nonblocking(true)?;
    let mut peers: Vec<Option<Peer>> = Vec::new();
    let mut idle: Vec<usize> = Vec::new();
    let epoll = Epoll::new();
    let add = |peers: &mut Vec<Option<Peer>>, socket: std::net::TcpStream, is_client: bool| {
        socket.set_nonblocking(true)?;
        socket.set_nodelay(true)?;
        epoll.watch(socket.as_raw_fd(), peers.len() as u64);
        peers.push(Some(Peer {
            socket,
            read: Vec::with_capacity(4096),
            partner: None,
            is_client,
        }));
        Ok::<usize, Error>(peers.len() - 1)
    };
    epoll.watch(listener.as_raw_fd(), u64::MAX);
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 256];
    let mut buffer = vec![0u8; 16 * 1024];
    let mut head = Vec::new();
    // With `batched`, what each socket is to be sent, written once every ready socket was read.
    let mut pending: Vec<(usize, Vec<u8>)> = Vec::new();
    loop {
        for (slot, bytes) in pending.drain(..) {
            if let Some(peer) = peers[slot].as_mut() {
                let _ = peer.socket.write_all(&bytes);
            }
        }
        for event in epoll.wait(&mut events) {
            if event.u64 == u64::MAX {
                while let Ok((client, _)) = listener.accept() {
                    add(&mut peers, client, true)?;
                }
                continue;
            }
            let slot = event.u64 as usize;
            let Some(peer) = peers[slot].as_mut() else {
                continue;
            };
            match peer.socket.read(&mut buffer) {
                Ok(read) if read > 0 => peer.read.extend_from_slice(&buffer[..read]),
                Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => continue,
                _ => {
                    peers[slot] = None;
                    continue;
                }
            }
            let Some(end) = peer.read.windows(4).position(|w| w == b"\r\n\r\n") else {
                continue;
            };
            let end = end + 4;
            if peer.is_client {
                forward_head(&peer.read[..end], &mut head)?;
                peer.read.drain(..end);
                let server = match idle.pop() {
                    Some(server) => server,
                    None => {
                        let socket = std::net::TcpStream::connect(("127.0.0.1", backend))?;
                        add(&mut peers, socket, false)?
                    }
                };
                if let Some(client) = peers[slot].as_mut() {
                    client.partner = Some(server);
                }
                if let Some(server_peer) = peers[server].as_mut() {
                    server_peer.partner = Some(slot);
                    if batched {
                        pending.push((server, head.clone()));
                    } else {
                        server_peer.socket.write_all(&head)?;
                    }
                }
                continue;
            }
            let length = body_length(&peer.read[..end])?;
            if peer.read.len() < end + length {
                continue;
            }
            let response: Vec<u8> = peer.read.drain(..end + length).collect();
            let client = peer.partner.take();
            idle.push(slot);
            if let Some(client_slot) = client
                && let Some(client) = peers[client_slot].as_mut()
            {
                client.partner = None;
                if batched {
                    pending.push((client_slot, response));
                } else {
                    let _ = client.socket.write_all(&response);
                }
            }
        }
    }
}

/// Request bytes to the backend, response bytes back, in turn.
async fn pass_bytes(mut client: TcpStream, mut server: TcpStream) -> Result<(), Error> {
    let mut buffer = vec![0u8; 16 * 1024];
    loop {
        let read = client.read(&mut buffer).await?;
        if read == 0 {
            return Ok(());
        }
        server.write_all(&buffer[..read]).await?;
        let read = server.read(&mut buffer).await?;
        if read == 0 {
            return Ok(());
        }
        client.write_all(&buffer[..read]).await?;
    }
}

/// Writes into `head` the request head `request` again, in origin form with forwarding headers.
fn forward_head(request: &[u8], head: &mut Vec<u8>) -> Result<(), Error> {
    head.clear();
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut parsed = httparse::Request::new(&mut headers);
    parsed.parse(request)?;
    for part in [
        parsed.method.unwrap_or("GET"),
        " ",
        parsed.path.unwrap_or("/"),
    ] {
        head.extend_from_slice(part.as_bytes());
    }
    head.extend_from_slice(b" HTTP/1.1\r\n");
    for header in parsed.headers.iter() {
        for part in [header.name.as_bytes(), b": ", header.value, b"\r\n"] {
            head.extend_from_slice(part);
        }
    }
    head.extend_from_slice(b"x-forwarded-for: 127.0.0.1\r\nx-forwarded-proto: http\r\n\r\n");
    Ok(())
}

/// The `Content-Length` of the response head `response`.
fn body_length(response: &[u8]) -> Result<usize, Error> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut parsed = httparse::Response::new(&mut headers);
    parsed.parse(response)?;
    let header = parsed
        .headers
        .iter()
        .find(|header| header.name.eq_ignore_ascii_case("content-length"))
        .ok_or("no content-length")?;
    Ok(std::str::from_utf8(header.value)?.trim().parse()?)
}

/// Reads until `buffer` holds a whole head; returns its length.
async fn read_head(stream: &mut TcpStream, buffer: &mut Vec<u8>) -> Result<usize, Error> {
    loop {
        if let Some(end) = buffer.windows(4).position(|window| window == b"\r\n\r\n") {
            return Ok(end + 4);
        }
        if stream.read_buf(buffer).await? == 0 {
            return Err("closed".into());
        }
    }
}

/// Reads a response with a `Content-Length` into `buffer`; returns the length of head and body.
async fn read_response(stream: &mut TcpStream, buffer: &mut Vec<u8>) -> Result<usize, Error> {
    let end = read_head(stream, buffer).await?;
    let length = body_length(&buffer[..end])?;
    while buffer.len() < end + length {
        if stream.read_buf(buffer).await? == 0 {
            return Err("closed".into());
        }
    }
    Ok(end + length)
}

/// Where a relay sends its requests.
enum Backend {
    /// A connection of the client's own.
    Own(TcpStream),
    /// The most recently idle connection to this port, with the microseconds of CPU to spend
    /// on each request.
    Pooled(u16, u64),
}

thread_local! {
    /// Idle backend connections of the `pooled` relays, the most recent last.
    static POOL: RefCell<Vec<TcpStream>> = const { RefCell::new(Vec::new()) };
}

/// Request heads parsed and written again with forwarding headers; response heads parsed for
/// their length, head and body written back in one write.
async fn parse_heads(mut client: TcpStream, mut backend: Backend) -> Result<(), Error> {
    let (mut request, mut response, mut head) = (Vec::new(), Vec::new(), Vec::new());
    loop {
        let end = read_head(&mut client, &mut request).await?;
        forward_head(&request[..end], &mut head)?;
        request.drain(..end);
        let length = match &mut backend {
            Backend::Own(server) => {
                server.write_all(&head).await?;
                read_response(server, &mut response).await?
            }
            Backend::Pooled(port, burn_us) => {
                let mut server = match POOL.with(|pool| pool.borrow_mut().pop()) {
                    Some(server) => server,
                    None => {
                        let server = TcpStream::connect(("127.0.0.1", *port)).await?;
                        server.set_nodelay(true)?;
                        server
                    }
                };
                server.write_all(&head).await?;
                let length = read_response(&mut server, &mut response).await?;
                POOL.with(|pool| pool.borrow_mut().push(server));
                let start = Instant::now();
                while start.elapsed() < Duration::from_micros(*burn_us) {
                    std::hint::spin_loop();
                }
                length
            }
        };
        client.write_all(&response[..length]).await?;
        response.drain(..length);
    }
}

/// hyper's HTTP/1.1 server for the client; the backend written and read by hand.
async fn hyper_server(client: TcpStream, server: TcpStream) -> Result<(), Error> {
    let server = Arc::new(Mutex::new((server, Vec::new())));
    let service = service_fn(move |request: Request<Incoming>| {
        let server = Arc::clone(&server);
        async move {
            let host = request.headers().get("host").and_then(|h| h.to_str().ok());
            let head = format!(
                "{} {} HTTP/1.1\r\nhost: {}\r\nx-forwarded-for: 127.0.0.1\r\n\r\n",
                request.method(),
                request.uri().path(),
                host.unwrap_or("")
            );
            let mut guard = server.lock().await;
            let (stream, buffer) = &mut *guard;
            stream.write_all(head.as_bytes()).await?;
            buffer.clear();
            let length = read_response(stream, buffer)
                .await
                .map_err(std::io::Error::other)?;
            let end = buffer
                .windows(4)
                .position(|w| w == b"\r\n\r\n")
                .map_or(0, |end| end + 4);
            let body = Bytes::copy_from_slice(&buffer[end..length]);
            Ok::<_, std::io::Error>(Response::new(Full::new(body)))
        }
    });
    hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(client), service)
        .await?;
    Ok(())
}
