//! The client side of a proxied connection: HTTP/1.1 requests read and responses written
//! directly on the accepted socket, one after another, inside the connection's own task.
//!
//! Each request is parsed out of one read buffer, its body is read from the socket only as
//! the member side asks for it, and a response head goes out in the same write as whatever
//! of its body is ready, so a small exchange costs one read and one write on each side.

use std::borrow::Cow;
use std::io;
use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use hyper::{Method, StatusCode, Uri, Version};
use tokio::io::{AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::deadline::Deadline;
use crate::framing::{
    BodyDecoder, Decoded, FramingError, MAX_HEAD, MAX_HEADERS, has_no_body, keeps_alive,
    push_chunk, push_content_length, push_header,
};
use crate::head::{Head, Layout, Name, span_of};
use crate::proxy::{
    ConnContext, ProxyBody, ProxyResponse, ResponseHeaders, handle, local_response,
};
use crate::upstream::poll_read_into;

/// Clients that send no complete request head within this time are disconnected; it also
/// bounds how long an idle keep-alive connection is kept.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Bytes asked of a client's socket per read: enough for most request heads, and what an
/// idle connection keeps.
const READ_CHUNK: usize = 8 * 1024;
/// How long a client may take none of its response before it is given up on, as nginx's
/// `send_timeout`.
const SEND_TIMEOUT: Duration = Duration::from_secs(60);
/// Response bytes gathered before they are written, when more of the body is ready at once.
const WRITE_BATCH: usize = 64 * 1024;
/// What is read and dropped of a request body nobody read, before the connection closes,
/// so the client sees the response instead of a reset.
const LINGER_BYTES: usize = 1024 * 1024;
const LINGER_TIME: Duration = Duration::from_secs(2);
/// Buffer capacity a connection keeps between requests.
const KEPT_CAPACITY: usize = 16 * 1024;

const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// Whether a connection is between requests, with nothing of the next one read, and
/// whether it is to close after the response under way; shared with the listener, which
/// closes idle connections at once when it drains.
#[derive(Default)]
pub(crate) struct ConnState {
    idle: AtomicBool,
    closing: AtomicBool,
}

impl ConnState {
    pub(crate) fn is_idle(&self) -> bool {
        self.idle.load(Relaxed)
    }

    /// Makes the connection close once the response under way is written.
    pub(crate) fn close_after_current(&self) {
        self.closing.store(true, Relaxed);
    }
}

/// Why a client connection ended other than by the client closing it between requests.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ClientError {
    #[error("reading a request failed: {0}")]
    Read(io::Error),
    #[error("writing a response failed: {0}")]
    Write(io::Error),
    #[error("the client sent a bad request: {0}")]
    BadRequest(String),
    #[error("the client sent no complete request head within {} s", HEADER_READ_TIMEOUT.as_secs())]
    HeadTimedOut,
    #[error("the client took none of its response for {} s", SEND_TIMEOUT.as_secs())]
    SendTimedOut,
    #[error("the response body failed: {0}")]
    ResponseBody(crate::upstream::UpstreamError),
    #[error("the switched-protocol tunnel failed: {0}")]
    Tunnel(io::Error),
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum ClientBodyError {
    #[error("{0}")]
    Read(io::Error),
    #[error("the client sent an invalid chunked body: {0}")]
    InvalidChunk(&'static str),
    #[error("the client closed the connection before the end of the request body")]
    Closed,
}

impl From<FramingError> for ClientBodyError {
    fn from(error: FramingError) -> ClientBodyError {
        match error {
            FramingError::InvalidChunk(reason) => ClientBodyError::InvalidChunk(reason),
            FramingError::Closed => ClientBodyError::Closed,
        }
    }
}

/// A request the client may not send: answered with `status` and `reason`, then closed.
#[derive(Debug, PartialEq, Eq)]
struct BadRequest {
    status: StatusCode,
    reason: String,
}

impl BadRequest {
    fn new(status: StatusCode, reason: impl Into<String>) -> BadRequest {
        BadRequest {
            status,
            reason: reason.into(),
        }
    }
}

/// A request as the client sent it: its method, version, target and headers.
pub(crate) struct ClientRequest {
    pub(crate) method: Method,
    pub(crate) version: Version,
    pub(crate) head: Head,
    /// The target without its fragment, which is not sent on: in origin form (`/path?query`),
    /// absolute form (`http://host/path`), or `*`.
    target: Uri,
}

impl ClientRequest {
    /// The host the request asks for, as written: the authority of an absolute-form target,
    /// else the `Host` header.
    pub(crate) fn host(&self) -> Option<&str> {
        self.authority()
            .or_else(|| std::str::from_utf8(self.head.value(Name::Host)?).ok())
    }

    /// The authority of an absolute-form target, which becomes the request's `Host`.
    pub(crate) fn authority(&self) -> Option<&str> {
        self.target.authority().map(|authority| authority.as_str())
    }

    /// The path and query to send on, which start with `/` (a bare query gets one), or `*`.
    pub(crate) fn origin_target(&self) -> Cow<'_, str> {
        match self
            .target
            .path_and_query()
            .map_or("", |target| target.as_str())
        {
            "" => Cow::Borrowed("/"),
            target if target.starts_with('?') => Cow::Owned(format!("/{target}")),
            target => Cow::Borrowed(target),
        }
    }

    /// The path of the target, without its query.
    pub(crate) fn path(&self) -> &str {
        self.target.path()
    }
}

/// A parsed request head and what it says about the connection.
struct RequestHead {
    request: ClientRequest,
    body: BodyDecoder,
    keep_alive: bool,
    expects_continue: bool,
}

/// The accepted socket, what was read from it and not used yet, and the body being read.
struct ClientIo {
    stream: TcpStream,
    buffer: BytesMut,
    body: BodyDecoder,
    /// Bytes of `100 Continue` still to write before the body is read, once it is asked for.
    continue_left: usize,
    out: Vec<u8>,
    /// Set the first time the client's socket is full.
    send_deadline: Option<Deadline>,
}

/// Serves requests on `stream` until the client closes it, a request or response fails, or
/// `state` asks for the connection to close.
pub(crate) async fn serve(
    stream: TcpStream,
    context: &ConnContext,
    state: &ConnState,
) -> Result<(), ClientError> {
    let mut io = ClientIo {
        stream,
        buffer: BytesMut::new(),
        body: BodyDecoder::empty(),
        continue_left: 0,
        out: Vec::new(),
        send_deadline: None,
    };
    // When the next request head must be in.
    let mut head_deadline = Deadline::new(Instant::now() + HEADER_READ_TIMEOUT);
    loop {
        state.idle.store(io.buffer.is_empty(), Relaxed);
        head_deadline.set(Instant::now() + HEADER_READ_TIMEOUT);
        let head = tokio::select! {
            biased;
            head = io.read_head(state) => Ok(head),
            () = std::future::poll_fn(|cx| head_deadline.poll_reached(cx)) => Err(()),
        };
        let head = match head {
            Ok(Ok(Some(head))) => head,
            Ok(Ok(None)) => return Ok(()),
            Ok(Err(Ok(bad))) => {
                io.refuse(bad.status, &bad.reason).await?;
                return Err(ClientError::BadRequest(bad.reason));
            }
            Ok(Err(Err(error))) => return Err(ClientError::Read(error)),
            Err(_) if io.buffer.is_empty() => return Ok(()),
            Err(_) => {
                let reason = "no complete request head arrived in time";
                io.refuse(StatusCode::REQUEST_TIMEOUT, reason).await?;
                return Err(ClientError::HeadTimedOut);
            }
        };
        state.idle.store(false, Relaxed);
        let RequestHead {
            request,
            body,
            keep_alive,
            expects_continue,
        } = head;
        let method_is_head = request.method == Method::HEAD;
        io.body = body;
        io.continue_left = if expects_continue { CONTINUE.len() } else { 0 };
        let ClientIo {
            stream,
            buffer,
            body,
            continue_left,
            ..
        } = &mut io;
        let stream = &*stream;
        let body = ClientBody {
            stream,
            buffer,
            body,
            continue_left,
        };
        // A client that goes away takes its request with it, and the member connection too.
        let response = tokio::select! {
            biased;
            response = handle(context, &request, body) => response,
            () = client_gone(stream) => return Ok(()),
        };
        let body_read = io.skip_buffered_body();
        let close = !keep_alive || !body_read || state.closing.load(Relaxed);
        if io
            .respond(response, request.version, method_is_head, close)
            .await?
            || close
        {
            if !body_read {
                io.linger().await;
            }
            return Ok(());
        }
    }
}

impl ClientIo {
    /// Reads until a whole request head is buffered; `None` when the client closed the
    /// connection before starting another request.
    async fn read_head(
        &mut self,
        state: &ConnState,
    ) -> Result<Option<RequestHead>, Result<BadRequest, io::Error>> {
        loop {
            if !self.buffer.is_empty()
                && let Some(head) = parse_request(&mut self.buffer).map_err(Ok)?
            {
                return Ok(Some(head));
            }
            let read = std::future::poll_fn(|cx| {
                poll_read_into(&mut self.stream, cx, &mut self.buffer, READ_CHUNK)
            })
            .await
            .map_err(Err)?;
            // A request has begun, which draining lets finish.
            state.idle.store(false, Relaxed);
            if read == 0 {
                return match self.buffer.is_empty() {
                    true => Ok(None),
                    false => Err(Ok(BadRequest::new(
                        StatusCode::BAD_REQUEST,
                        "the connection closed in the middle of a request head",
                    ))),
                };
            }
        }
    }

    /// Answers a request that is not served with `status` and `reason`, then closes.
    async fn refuse(&mut self, status: StatusCode, reason: &str) -> Result<(), ClientError> {
        let response = local_response(status, format!("{reason}\n"));
        self.respond(response, Version::HTTP_11, false, true)
            .await?;
        self.linger().await;
        Ok(())
    }

    /// Drops what is already read of a request body the proxy did not need, such as one
    /// sent with a request answered locally; whether the body is now behind.
    fn skip_buffered_body(&mut self) -> bool {
        loop {
            match self.body.decode(&mut self.buffer) {
                Ok(Decoded::Done) => return true,
                Ok(Decoded::Data(_)) => {}
                Ok(Decoded::NeedMore) | Err(_) => return false,
            }
        }
    }

    /// Writes `response` for a request of `version`; `true` when the connection cannot carry
    /// another request after it (a tunnel, or a body delimited by closing).
    async fn respond(
        &mut self,
        response: ProxyResponse,
        version: Version,
        method_is_head: bool,
        mut close: bool,
    ) -> Result<bool, ClientError> {
        if self.continue_left < CONTINUE.len() {
            // A `100 Continue` begun is finished, or the final response would run into it.
            std::future::poll_fn(|cx| poll_continue(&self.stream, &mut self.continue_left, cx))
                .await
                .map_err(ClientError::Write)?;
        }
        self.continue_left = 0;
        let ProxyResponse {
            status,
            headers,
            mut body,
        } = response;
        let bodiless = has_no_body(method_is_head, status);
        let length = body.exact_length().filter(|_| !bodiless);
        let unknown_length = !bodiless && length.is_none();
        let chunked = unknown_length && version == Version::HTTP_11;
        // An HTTP/1.0 client learns where a body of unknown length ends by the close.
        close |= unknown_length && !chunked;
        let mut out = std::mem::take(&mut self.out);
        out.clear();
        encode_head(&mut out, status, &headers, bodiless);
        if let Some(length) = length {
            push_content_length(&mut out, length);
        }
        if chunked {
            push_header(&mut out, b"transfer-encoding", b"chunked");
        }
        if status == StatusCode::SWITCHING_PROTOCOLS {
            // The connection options announcing the switch are among the response's headers.
        } else if close {
            push_header(&mut out, b"connection", b"close");
        } else if version == Version::HTTP_10 {
            push_header(&mut out, b"connection", b"keep-alive");
        }
        out.extend_from_slice(b"\r\n");
        if let Some(tunnel) = body.take_tunnel() {
            let written = self.write_out(&mut out).await;
            self.out = out;
            written?;
            let client_early = self.buffer.split().freeze();
            tunnel
                .run(&mut self.stream, client_early)
                .await
                .map_err(ClientError::Tunnel)?;
            return Ok(true);
        }
        let written = self
            .write_body(&mut out, &mut body, chunked, bodiless)
            .await;
        // What a large response or head grew is not kept for the next request.
        if out.capacity() > KEPT_CAPACITY {
            out = Vec::new();
        }
        if self.buffer.is_empty() && self.buffer.capacity() > KEPT_CAPACITY {
            self.buffer = BytesMut::new();
        }
        self.out = out;
        written.map(|()| close)
    }

    /// Appends the body to `out` as it becomes ready, writing whenever it has to wait for
    /// more or has gathered a batch, and writes the rest at the end.
    async fn write_body(
        &mut self,
        out: &mut Vec<u8>,
        body: &mut ProxyBody,
        chunked: bool,
        bodiless: bool,
    ) -> Result<(), ClientError> {
        while !bodiless && !body.is_end_stream() {
            let polled = std::future::poll_fn(|cx| Poll::Ready(body.poll_data(cx))).await;
            let data = match polled {
                Poll::Ready(data) => data,
                Poll::Pending => {
                    self.write_out(out).await?;
                    std::future::poll_fn(|cx| body.poll_data(cx)).await
                }
            };
            let Some(data) = data else { break };
            let data = data.map_err(ClientError::ResponseBody)?;
            if data.is_empty() {
                continue;
            }
            if chunked {
                push_chunk(out, &data);
            } else {
                out.extend_from_slice(&data);
            }
            if out.len() >= WRITE_BATCH {
                self.write_out(out).await?;
            }
        }
        if chunked {
            out.extend_from_slice(b"0\r\n\r\n");
        }
        self.write_out(out).await
    }

    /// Writes `out` whole; a client that takes none of it for `SEND_TIMEOUT` is given up on,
    /// so one that stops reading cannot hold its connection and its member's for ever. The
    /// timer is set only once the socket is full.
    async fn write_out(&mut self, out: &mut Vec<u8>) -> Result<(), ClientError> {
        let mut written = 0;
        while written < out.len() {
            match self.stream.try_write(&out[written..]) {
                Ok(0) => return Err(ClientError::Write(io::ErrorKind::WriteZero.into())),
                Ok(count) => written += count,
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                    let deadline = self
                        .send_deadline
                        .get_or_insert_with(|| Deadline::new(Instant::now()));
                    deadline.set(Instant::now() + SEND_TIMEOUT);
                    tokio::select! {
                        biased;
                        writable = self.stream.writable() => writable.map_err(ClientError::Write)?,
                        () = std::future::poll_fn(|cx| deadline.poll_reached(cx)) => {
                            return Err(ClientError::SendTimedOut);
                        }
                    }
                }
                Err(error) => return Err(ClientError::Write(error)),
            }
        }
        out.clear();
        Ok(())
    }

    /// Closes the sending side, then reads and drops what the client still sends, for a
    /// bounded time and amount, so its unread request body does not reset the connection
    /// before it read the response.
    async fn linger(&mut self) {
        if self.stream.shutdown().await.is_err() {
            return;
        }
        let mut dropped = 0;
        let drain = async {
            while dropped < LINGER_BYTES {
                self.buffer.clear();
                match std::future::poll_fn(|cx| {
                    poll_read_into(&mut self.stream, cx, &mut self.buffer, READ_CHUNK)
                })
                .await
                {
                    Ok(0) | Err(_) => return,
                    Ok(read) => dropped += read,
                }
            }
        };
        let _ = tokio::time::timeout(LINGER_TIME, drain).await;
    }
}

/// Writes what is left of `100 Continue`, when the client waits for it to send its body.
fn poll_continue(
    stream: &TcpStream,
    left: &mut usize,
    cx: &mut Context<'_>,
) -> Poll<io::Result<()>> {
    while *left > 0 {
        ready!(stream.poll_write_ready(cx))?;
        match stream.try_write(&CONTINUE[CONTINUE.len() - *left..]) {
            Ok(0) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
            Ok(written) => *left -= written,
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
            Err(error) => return Poll::Ready(Err(error)),
        }
    }
    Poll::Ready(Ok(()))
}

/// Reads what the client sent into `buffer` through a shared handle on its socket, which a
/// watch for the client going away holds too; 0 means the client closed the connection.
fn poll_read_shared(
    stream: &TcpStream,
    cx: &mut Context<'_>,
    buffer: &mut BytesMut,
) -> Poll<io::Result<usize>> {
    buffer.reserve(READ_CHUNK);
    loop {
        ready!(stream.poll_read_ready(cx))?;
        match stream.try_read_buf(buffer) {
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
            read => return Poll::Ready(read),
        }
    }
}

/// Resolves once the client closes its connection, or it fails, while its request is under
/// way; anything it sends meanwhile (the body, a pipelined request) means it is still there.
async fn client_gone(stream: &TcpStream) {
    let mut probe = [0u8; 1];
    let mut probe = ReadBuf::new(&mut probe);
    if let Ok(1..) = std::future::poll_fn(|cx| stream.poll_peek(cx, &mut probe)).await {
        std::future::pending::<()>().await;
    }
}

/// The body of the request being served, read from the client as it is asked for.
pub(crate) struct ClientBody<'a> {
    stream: &'a TcpStream,
    buffer: &'a mut BytesMut,
    body: &'a mut BodyDecoder,
    continue_left: &'a mut usize,
}

impl ClientBody<'_> {
    /// Whether the request has no body, or all of it was read.
    pub(crate) fn is_done(&self) -> bool {
        self.body.is_done()
    }

    /// The bytes still to come, when the request says how many.
    pub(crate) fn length(&self) -> Option<u64> {
        self.body.remaining()
    }

    /// The next piece of the body; `None` at its end.
    pub(crate) fn poll_data(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, ClientBodyError>>> {
        loop {
            match self.body.decode(self.buffer) {
                Ok(Decoded::Data(data)) => return Poll::Ready(Some(Ok(data))),
                Ok(Decoded::Done) => return Poll::Ready(None),
                Ok(Decoded::NeedMore) => {}
                Err(error) => return Poll::Ready(Some(Err(error.into()))),
            }
            // The client sends the body only once told to, and only when it was not sent yet.
            if let Err(error) = ready!(poll_continue(self.stream, self.continue_left, cx)) {
                return Poll::Ready(Some(Err(ClientBodyError::Read(error))));
            }
            match ready!(poll_read_shared(self.stream, cx, self.buffer)) {
                Ok(0) => {
                    let ended = self.body.end_of_stream().map_err(ClientBodyError::from);
                    if let Err(error) = ended {
                        return Poll::Ready(Some(Err(error)));
                    }
                }
                Ok(_) => {}
                Err(error) => return Poll::Ready(Some(Err(ClientBodyError::Read(error)))),
            }
        }
    }
}

/// Parses a complete request head off the front of `buffer`, or returns `None` when more
/// is needed.
fn parse_request(buffer: &mut BytesMut) -> Result<Option<RequestHead>, BadRequest> {
    let bad = |reason: String| BadRequest::new(StatusCode::BAD_REQUEST, reason);
    let too_large = || {
        BadRequest::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            format!("the request head is larger than {MAX_HEAD} bytes"),
        )
    };
    let mut slots = [const { MaybeUninit::uninit() }; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut []);
    let length = match request.parse_with_uninit_headers(buffer, &mut slots) {
        Ok(httparse::Status::Complete(length)) if length <= MAX_HEAD => length,
        Ok(httparse::Status::Complete(_)) => return Err(too_large()),
        Ok(httparse::Status::Partial) if buffer.len() >= MAX_HEAD => return Err(too_large()),
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(BadRequest::new(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                format!("the request has more than {MAX_HEADERS} headers"),
            ));
        }
        Err(httparse::Error::Version) => {
            return Err(BadRequest::new(
                StatusCode::HTTP_VERSION_NOT_SUPPORTED,
                "only HTTP/1.0 and HTTP/1.1 are served",
            ));
        }
        Err(error) => return Err(bad(format!("invalid request head: {error}"))),
    };
    let method = request.method.unwrap_or_default();
    let method = Method::from_bytes(method.as_bytes())
        .map_err(|_| bad(format!("invalid method {method:?}")))?;
    if method == Method::CONNECT {
        return Err(BadRequest::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "CONNECT is not served: requests go to the cluster's members",
        ));
    }
    let version = match request.version {
        Some(0) => Version::HTTP_10,
        _ => Version::HTTP_11,
    };
    let target = span_of(buffer, request.path.unwrap_or_default().as_bytes());
    let layout = Layout::of(buffer, request.headers);
    let head = Head::take(buffer, length, layout);
    let target = head.slice(target);
    // An authority alone names a target only for CONNECT, refused above.
    let target = Uri::from_maybe_shared(target.clone())
        .ok()
        .filter(|uri| uri.path_and_query().is_some())
        .ok_or_else(|| {
            let target = String::from_utf8_lossy(&target);
            bad(format!("the request target {target:?} is not a URI"))
        })?;
    // RFC 9112 section 3.2: routing by one Host while the member reads another is unsafe.
    match head.values(Name::Host).count() {
        0 if version == Version::HTTP_11 => {
            return Err(bad(
                "an HTTP/1.1 request must have a host header".to_string()
            ));
        }
        0 | 1 => {}
        _ => return Err(bad("the request has more than one host header".to_string())),
    }
    let body = BodyDecoder::for_request(version, &head)
        .map_err(|error| BadRequest::new(error.status(), error.to_string()))?;
    let expects_continue = match head.value(Name::Expect) {
        None => false,
        Some(value) if value.eq_ignore_ascii_case(b"100-continue") => {
            version == Version::HTTP_11 && !body.is_done()
        }
        Some(value) => {
            let value = String::from_utf8_lossy(value);
            return Err(BadRequest::new(
                StatusCode::EXPECTATION_FAILED,
                format!("the expectation {value:?} is not supported, only 100-continue"),
            ));
        }
    };
    Ok(Some(RequestHead {
        keep_alive: keeps_alive(version, &head),
        request: ClientRequest {
            method,
            version,
            head,
            target,
        },
        body,
        expects_continue,
    }))
}

/// The request `bytes` begin with, `None` when incomplete, or why it is refused; for tests of
/// what is done with requests.
#[cfg(test)]
pub(crate) fn parse_client_request(bytes: &[u8]) -> Result<Option<ClientRequest>, String> {
    let parsed = parse_request(&mut BytesMut::from(bytes)).map_err(|bad| bad.reason)?;
    Ok(parsed.map(|parsed| parsed.request))
}

/// The status line and headers; framing headers are left to the caller, except that the
/// answer to a HEAD and a 304 keep the `Content-Length` a GET would have had.
fn encode_head(out: &mut Vec<u8>, status: StatusCode, headers: &ResponseHeaders, bodiless: bool) {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("Unknown").as_bytes());
    out.extend_from_slice(b"\r\n");
    // RFC 9110 section 8.6: a 1xx or 204 has no `Content-Length`.
    let keeps_length = bodiless && !status.is_informational() && status != StatusCode::NO_CONTENT;
    headers.encode(out, keeps_length);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parses `head` and checks the outcome: the method, target and body framing of a
    /// request, or the status and reason of a refusal.
    fn check(head: &str, expected: Result<&str, (u16, &str)>) {
        let mut buffer = BytesMut::from(head);
        let parsed = parse_request(&mut buffer).map(|parsed| {
            let parsed = parsed.unwrap_or_else(|| panic!("incomplete: {head:?}"));
            let body = match parsed.body.remaining() {
                Some(0) => "no body".to_string(),
                Some(length) => format!("{length} bytes"),
                None => "chunked".to_string(),
            };
            let continues = if parsed.expects_continue {
                ", continue"
            } else {
                ""
            };
            let close = if parsed.keep_alive { "" } else { ", close" };
            let request = &parsed.request;
            let to = request
                .authority()
                .map_or(String::new(), |authority| format!(" to {authority}"));
            format!(
                "{} {}{to} {:?}, {body}{continues}{close}",
                request.method,
                request.origin_target(),
                request.version
            )
        });
        let parsed = parsed.map_err(|bad| (bad.status.as_u16(), bad.reason));
        let expected = expected
            .map(str::to_string)
            .map_err(|(s, r)| (s, r.to_string()));
        assert_eq!(parsed, expected, "{head:?}");
    }

    #[test]
    fn request_heads() {
        check(
            "GET /a?b HTTP/1.1\r\nHost: web\r\n\r\n",
            Ok("GET /a?b HTTP/1.1, no body"),
        );
        check(
            "POST /up HTTP/1.1\r\nHost: w\r\nContent-Length: 5\r\nExpect: 100-Continue\r\n\r\n",
            Ok("POST /up HTTP/1.1, 5 bytes, continue"),
        );
        check(
            "POST /up HTTP/1.1\r\nHost: w\r\nTransfer-Encoding: Chunked\r\n\r\n",
            Ok("POST /up HTTP/1.1, chunked"),
        );
        check(
            "GET http://web.example.com/x HTTP/1.0\r\n\r\n",
            Ok("GET /x to web.example.com HTTP/1.0, no body, close"),
        );
        check(
            "GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
            Ok("GET / HTTP/1.0, no body"),
        );
        check(
            "OPTIONS * HTTP/1.1\r\nHost: w\r\nConnection: close\r\n\r\n",
            Ok("OPTIONS * HTTP/1.1, no body, close"),
        );
        check(
            "GET / HTTP/1.1\r\nHost: w\r\nExpect: 100-continue\r\n\r\n",
            Ok("GET / HTTP/1.1, no body"),
        );
    }

    #[test]
    fn bad_request_heads() {
        check(
            "GET / HTTP/2.0\r\n\r\n",
            Err((505, "only HTTP/1.0 and HTTP/1.1 are served")),
        );
        check(
            "GET /\x01 HTTP/1.1\r\n\r\n",
            Err((400, "invalid request head: invalid token")),
        );
        check(
            "POST / HTTP/1.1\r\nHost: w\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
            Err((
                400,
                "a request cannot have both content-length and transfer-encoding",
            )),
        );
        check(
            "POST / HTTP/1.1\r\nHost: w\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            Err((
                501,
                "transfer-encoding \"gzip, chunked\" is not supported, only chunked",
            )),
        );
        check(
            "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
            Err((400, "an HTTP/1.0 request cannot have a transfer-encoding")),
        );
        check(
            "POST / HTTP/1.1\r\nHost: w\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            Err((400, "content-length values disagree")),
        );
        check(
            "POST / HTTP/1.1\r\nHost: w\r\nContent-Length: -1\r\n\r\n",
            Err((400, "content-length \"-1\" is not a number")),
        );
        check(
            "GET / HTTP/1.1\r\nHost: w\r\nExpect: magic\r\n\r\n",
            Err((
                417,
                "the expectation \"magic\" is not supported, only 100-continue",
            )),
        );
        check(
            "CONNECT web:443 HTTP/1.1\r\nHost: w\r\n\r\n",
            Err((
                405,
                "CONNECT is not served: requests go to the cluster's members",
            )),
        );
        check(
            "GET / HTTP/1.1\r\n\r\n",
            Err((400, "an HTTP/1.1 request must have a host header")),
        );
        check(
            "GET web:80 HTTP/1.1\r\nHost: w\r\n\r\n",
            Err((400, "the request target \"web:80\" is not a URI")),
        );
        check(
            "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
            Err((400, "the request has more than one host header")),
        );
        let many: String = (0..=MAX_HEADERS).map(|i| format!("x-{i}: 1\r\n")).collect();
        check(
            &format!("GET / HTTP/1.1\r\nHost: w\r\n{many}\r\n"),
            Err((431, "the request has more than 100 headers")),
        );
        let long = "a".repeat(MAX_HEAD);
        check(
            &format!("GET /{long} HTTP/1.1\r\nHost: w\r\n\r\n"),
            Err((431, "the request head is larger than 65536 bytes")),
        );
    }

    #[test]
    fn heads_are_taken_off_the_buffer_one_by_one() {
        let mut buffer =
            BytesMut::from("GET /a HTTP/1.1\r\nHost: w\r\nX: 1\r\n\r\nGET /b HTTP/1.1\r\n");
        let first = parse_request(&mut buffer).unwrap().unwrap();
        assert_eq!(
            (
                first.request.path(),
                first.request.head.iter().nth(1).map(|x| x.value)
            ),
            ("/a", Some(&b"1"[..]))
        );
        assert_eq!(&buffer[..], b"GET /b HTTP/1.1\r\n");
        assert!(
            parse_request(&mut buffer).unwrap().is_none(),
            "the second is partial"
        );
    }
}
