//! The member side of a proxied request: HTTP/1.1 written and read directly on a pooled
//! connection, inside the client connection's own task, with no task or channel in between.
//!
//! The request head is encoded once into bytes that are kept, so a request without a body
//! can be sent again to another member at no cost when the first one fails before answering.

use std::io;
use std::mem::MaybeUninit;
use std::pin::{Pin, pin};
use std::task::{Context, Poll, Waker, ready};
use std::time::Duration;

use bytes::BytesMut;
use hyper::{StatusCode, Version};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::io::poll_read_buf;

use crate::deadline::Deadline;
use crate::downstream::{ClientBody, ClientBodyError};
use crate::framing::{
    BodyDecoder, Decoded, FramingError, MAX_HEAD, MAX_HEADERS, content_length, keeps_alive,
    push_chunk, push_content_length, push_header,
};
use crate::head::{Head, Layout, Name};

/// Bytes asked of a member's socket per read.
const READ_CHUNK: usize = 16 * 1024;

#[derive(Debug, thiserror::Error)]
pub(crate) enum UpstreamError {
    #[error("writing the request head failed: {0}")]
    WriteHead(io::Error),
    #[error("writing the request body failed: {0}")]
    WriteBody(io::Error),
    #[error("reading the request body from the client failed: {0}")]
    ClientBody(ClientBodyError),
    #[error("reading from the member failed: {0}")]
    Read(io::Error),
    #[error("the member closed the connection without answering")]
    ClosedBeforeResponse,
    #[error("the member closed the connection in the middle of the response head")]
    ClosedInHead,
    #[error("the member closed the connection before the end of the response body")]
    ClosedInBody,
    #[error("the member's response head is larger than {MAX_HEAD} bytes")]
    HeadTooLarge,
    #[error("the member sent an invalid response head: {0}")]
    InvalidHead(String),
    #[error("the member sent an invalid chunked body: {0}")]
    InvalidChunk(&'static str),
    #[error("the member did not answer within {} ms", .0.as_millis())]
    TimedOut(Duration),
    #[error("the member sent nothing of its response body for {} ms", .0.as_millis())]
    BodyStalled(Duration),
}

impl From<FramingError> for UpstreamError {
    fn from(error: FramingError) -> UpstreamError {
        match error {
            FramingError::InvalidChunk(reason) => UpstreamError::InvalidChunk(reason),
            FramingError::Closed => UpstreamError::ClosedInBody,
        }
    }
}

/// An open connection to a member.
pub(crate) struct Connection {
    io: MemberIo,
    /// When the member must have answered the request under way, or sent more of its body.
    deadline: Deadline,
    /// The deadline counts a pause in the response body: set at the first read that finds
    /// nothing, so a body that flows costs no clock read.
    body_pause_timed: bool,
    /// The last response had no body (HEAD, 204, 304, length 0): a member that sent one
    /// anyway, in a later segment, is caught by reading the socket before the next request.
    probe_before_reuse: bool,
}

/// The socket and the bytes read from it that are not used yet.
struct MemberIo {
    stream: TcpStream,
    buffer: BytesMut,
}

impl Connection {
    pub(crate) fn new(stream: TcpStream) -> Connection {
        Connection {
            io: MemberIo {
                stream,
                buffer: BytesMut::new(),
            },
            deadline: Deadline::new(Instant::now()),
            body_pause_timed: false,
            probe_before_reuse: false,
        }
    }

    /// Whether the connection, idle in a pool, still looks usable: the member has neither
    /// closed it nor sent anything unasked. Costs no system call unless the socket woke up or
    /// the last response had no body.
    pub(crate) fn is_reusable(&mut self) -> bool {
        let stream = &mut self.io.stream;
        let mut context = Context::from_waker(Waker::noop());
        if stream.poll_read_ready(&mut context).is_pending() && !self.probe_before_reuse {
            return true;
        }
        let mut probe = [0u8; 1];
        match stream.try_read(&mut probe) {
            Err(error) => error.kind() == io::ErrorKind::WouldBlock,
            Ok(_) => false,
        }
    }

    /// Sends a request and reads the head of its final response, skipping interim ones;
    /// gives up when the member takes longer than `timeout` to answer once the request is
    /// sent. An upload goes at the client's pace, so sending it has no time limit.
    pub(crate) async fn exchange(
        &mut self,
        request: &mut OutgoingRequest<'_>,
        timeout: Duration,
    ) -> Result<ResponseHead, UpstreamError> {
        let head = self.send_and_read(request, timeout).await?;
        self.probe_before_reuse = head.body.is_done();
        Ok(head)
    }

    async fn send_and_read(
        &mut self,
        request: &mut OutgoingRequest<'_>,
        timeout: Duration,
    ) -> Result<ResponseHead, UpstreamError> {
        if let Some(mut early) = self.io.send(request).await? {
            // The member may still expect the rest of the body, so the connection ends here.
            early.keep_alive = false;
            return Ok(early);
        }
        self.deadline.set(Instant::now() + timeout);
        self.body_pause_timed = false;
        let deadline = &mut self.deadline;
        let mut answer = pin!(self.io.read_final_head(request.method_is_head));
        std::future::poll_fn(|cx| match answer.as_mut().poll(cx) {
            Poll::Ready(result) => Poll::Ready(result),
            Poll::Pending => deadline
                .poll_reached(cx)
                .map(|()| Err(UpstreamError::TimedOut(timeout))),
        })
        .await
    }

    /// Reads more of a response body into the buffer; 0 means the member closed the
    /// connection. Fails once the member has sent nothing for `timeout`, so a stalled member
    /// cannot hold its client forever.
    pub(crate) fn poll_read_body(
        &mut self,
        cx: &mut Context<'_>,
        timeout: Duration,
    ) -> Poll<Result<usize, UpstreamError>> {
        if let Poll::Ready(read) = self.io.poll_read(cx) {
            self.body_pause_timed = false;
            return Poll::Ready(read.map_err(UpstreamError::Read));
        }
        if !self.body_pause_timed {
            self.deadline.set(Instant::now() + timeout);
            self.body_pause_timed = true;
        }
        ready!(self.deadline.poll_reached(cx));
        Poll::Ready(Err(UpstreamError::BodyStalled(timeout)))
    }

    /// The next piece of a response body, per its framing.
    pub(crate) fn decode(&mut self, body: &mut BodyDecoder) -> Result<Decoded, UpstreamError> {
        Ok(body.decode(&mut self.io.buffer)?)
    }

    /// Whether everything the member sent was used: bytes past the end of a response (a body
    /// sent with a HEAD answer, say) would be taken for the next response.
    pub(crate) fn is_drained(&self) -> bool {
        self.io.buffer.is_empty()
    }

    /// The socket and what was read past the response head, for a switched protocol.
    pub(crate) fn into_parts(self) -> (TcpStream, BytesMut) {
        (self.io.stream, self.io.buffer)
    }
}

impl MemberIo {
    /// Writes the request; while its body streams, the member's answer is read too, and one
    /// that comes before the body is through (a 413, say) is returned and the rest not sent.
    async fn send(
        &mut self,
        request: &mut OutgoingRequest<'_>,
    ) -> Result<Option<ResponseHead>, UpstreamError> {
        self.stream
            .write_all(&request.head)
            .await
            .map_err(UpstreamError::WriteHead)?;
        if !request.has_body_to_send() {
            return Ok(None);
        }
        let method_is_head = request.method_is_head;
        let (mut reader, mut writer) = self.stream.split();
        let written = pin!(request.write_body(&mut writer));
        let mut answered = pin!(read_final_head(
            &mut reader,
            &mut self.buffer,
            method_is_head
        ));
        tokio::select! {
            biased;
            written = written => match written {
                Ok(()) => Ok(None),
                // The member waits for the rest of a body that will not come.
                Err(error @ UpstreamError::ClientBody(_)) => Err(error),
                // A member that answered early and closed fails the write; its answer counts.
                Err(error) => answered.await.map(Some).map_err(|_| error),
            },
            // Bytes read so far stay in the buffer when the body wins, so nothing is lost.
            answered = answered.as_mut() => answered.map(Some),
        }
    }

    async fn read_final_head(
        &mut self,
        method_is_head: bool,
    ) -> Result<ResponseHead, UpstreamError> {
        read_final_head(&mut self.stream, &mut self.buffer, method_is_head).await
    }

    fn poll_read(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        poll_read_into(&mut self.stream, cx, &mut self.buffer, READ_CHUNK)
    }
}

/// Reads response heads off `reader` until a final one, skipping interim ones.
async fn read_final_head<R: AsyncRead + Unpin>(
    reader: &mut R,
    buffer: &mut BytesMut,
    method_is_head: bool,
) -> Result<ResponseHead, UpstreamError> {
    loop {
        let head = read_head(reader, buffer, method_is_head).await?;
        // 100 Continue and 103 Early Hints were already answered or are advisory.
        if !head.status.is_informational() || head.status == StatusCode::SWITCHING_PROTOCOLS {
            return Ok(head);
        }
    }
}

async fn read_head<R: AsyncRead + Unpin>(
    reader: &mut R,
    buffer: &mut BytesMut,
    method_is_head: bool,
) -> Result<ResponseHead, UpstreamError> {
    loop {
        if !buffer.is_empty()
            && let Some(head) = parse_head(buffer, method_is_head)?
        {
            return Ok(head);
        }
        if buffer.len() >= MAX_HEAD {
            return Err(UpstreamError::HeadTooLarge);
        }
        let read = std::future::poll_fn(|cx| poll_read_into(reader, cx, buffer, READ_CHUNK))
            .await
            .map_err(UpstreamError::Read)?;
        if read == 0 {
            return Err(match buffer.is_empty() {
                true => UpstreamError::ClosedBeforeResponse,
                false => UpstreamError::ClosedInHead,
            });
        }
    }
}

/// Reads what `reader` has into `buffer`, making room for `chunk` bytes; 0 means the peer
/// closed the connection. A short read marks a socket as drained, so the next read waits for
/// the reactor instead of spending a system call on an empty socket.
pub(crate) fn poll_read_into<R: AsyncRead + Unpin>(
    reader: &mut R,
    cx: &mut Context<'_>,
    buffer: &mut BytesMut,
    chunk: usize,
) -> Poll<io::Result<usize>> {
    buffer.reserve(chunk);
    poll_read_buf(Pin::new(reader), cx, buffer)
}

/// A request ready to be sent to any member: its head as bytes, and its body.
pub(crate) struct OutgoingRequest<'a> {
    head: Vec<u8>,
    body: RequestBody<'a>,
    method_is_head: bool,
}

enum RequestBody<'a> {
    None,
    Sized(ClientBody<'a>),
    Chunked(ClientBody<'a>),
    Sent,
}

impl<'a> OutgoingRequest<'a> {
    /// The request whose head, up to its framing, is `head` (request line and headers
    /// ending in CRLF); the framing of `body` is added. A request that declared a length
    /// keeps one even when its body is already through.
    pub(crate) fn new(
        mut head: Vec<u8>,
        body: ClientBody<'a>,
        method_is_head: bool,
        declared_length: bool,
    ) -> OutgoingRequest<'a> {
        let (body, length) = match body.length() {
            _ if body.is_done() => (RequestBody::None, declared_length.then_some(0)),
            Some(length) => (RequestBody::Sized(body), Some(length)),
            None => (RequestBody::Chunked(body), None),
        };
        match (&body, length) {
            (_, Some(length)) => {
                push_content_length(&mut head, length);
            }
            (RequestBody::Chunked(_), None) => {
                push_header(&mut head, b"transfer-encoding", b"chunked");
            }
            _ => {}
        }
        head.extend_from_slice(b"\r\n");
        OutgoingRequest {
            head,
            body,
            method_is_head,
        }
    }

    /// Whether the request can still be sent as a whole: its body was not streamed yet.
    pub(crate) fn is_unsent(&self) -> bool {
        !matches!(self.body, RequestBody::Sent)
    }

    /// Whether the request has no body, so sending it again repeats it exactly.
    pub(crate) fn is_bodiless(&self) -> bool {
        matches!(self.body, RequestBody::None)
    }

    /// Whether a body is still to be written after the head.
    fn has_body_to_send(&self) -> bool {
        matches!(self.body, RequestBody::Sized(_) | RequestBody::Chunked(_))
    }

    async fn write_body<W: AsyncWrite + Unpin>(
        &mut self,
        stream: &mut W,
    ) -> Result<(), UpstreamError> {
        let (mut body, chunked) = match std::mem::replace(&mut self.body, RequestBody::Sent) {
            RequestBody::None => {
                self.body = RequestBody::None;
                return Ok(());
            }
            RequestBody::Sent => return Ok(()),
            RequestBody::Sized(body) => (body, false),
            RequestBody::Chunked(body) => (body, true),
        };
        let mut framed = Vec::new();
        while let Some(data) = std::future::poll_fn(|cx| body.poll_data(cx)).await {
            let data = data.map_err(UpstreamError::ClientBody)?;
            if data.is_empty() {
                continue;
            }
            if !chunked {
                stream
                    .write_all(&data)
                    .await
                    .map_err(UpstreamError::WriteBody)?;
                continue;
            }
            framed.clear();
            push_chunk(&mut framed, &data);
            stream
                .write_all(&framed)
                .await
                .map_err(UpstreamError::WriteBody)?;
        }
        if chunked {
            stream
                .write_all(b"0\r\n\r\n")
                .await
                .map_err(UpstreamError::WriteBody)?;
        }
        Ok(())
    }
}

/// A member's response head, and how its body is framed.
pub(crate) struct ResponseHead {
    pub(crate) status: StatusCode,
    pub(crate) head: Head,
    /// The one length every `Content-Length` agrees on, unless a transfer coding frames the
    /// body.
    pub(crate) length: Option<u64>,
    pub(crate) body: BodyDecoder,
    /// Whether the connection can carry another request once the body was read.
    pub(crate) keep_alive: bool,
}

/// Parses a complete head off the front of `buffer`, or returns `None` when more is needed.
pub(crate) fn parse_head(
    buffer: &mut BytesMut,
    method_is_head: bool,
) -> Result<Option<ResponseHead>, UpstreamError> {
    let invalid = |reason: String| UpstreamError::InvalidHead(reason);
    let mut slots = [const { MaybeUninit::uninit() }; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut []);
    let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut response,
        buffer,
        &mut slots,
    );
    let length = match parsed {
        Ok(httparse::Status::Complete(length)) => length,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(error) => return Err(invalid(error.to_string())),
    };
    let code = response.code.unwrap_or_default();
    let status = StatusCode::from_u16(code).map_err(|_| invalid(format!("status {code}")))?;
    let version = match response.version {
        Some(0) => Version::HTTP_10,
        _ => Version::HTTP_11,
    };
    let layout = Layout::of(buffer, response.headers);
    let head = Head::take(buffer, length, layout);
    let coded = head.contains(Name::TransferEncoding);
    // The transfer coding frames the body, so a length beside it would mislead the client.
    let length = match coded {
        true => None,
        false => content_length(&head).map_err(invalid)?,
    };
    let body = BodyDecoder::for_response(method_is_head, status, &head, length);
    // Framing that RFC 9112 (6.1, 6.3) calls faulty is read once, then the connection closes.
    let faulty = coded && (version == Version::HTTP_10 || head.contains(Name::ContentLength));
    let keep_alive = keeps_alive(version, &head) && !faulty && !body.is_until_close();
    Ok(Some(ResponseHead {
        status,
        head,
        length,
        body,
        keep_alive,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parses a response fed in pieces, the member closing after the last one when `closed`,
    /// and checks its body or the error it ends with.
    fn check(name: &str, pieces: &[&str], closed: bool, expected: Result<&str, String>) {
        let expected = expected.map(str::to_string);
        let mut buffer = BytesMut::new();
        let mut body = String::new();
        let mut feed = pieces.iter();
        buffer.extend_from_slice(feed.next().copied().unwrap_or_default().as_bytes());
        let parsed = parse_head(&mut buffer, false);
        let mut response = match parsed {
            Ok(Some(response)) => response,
            Ok(None) => panic!("{name}: incomplete head"),
            Err(error) => {
                assert_eq!(Err(error.to_string()), expected, "{name}");
                return;
            }
        };
        let outcome = loop {
            match response.body.decode(&mut buffer) {
                Ok(Decoded::Data(data)) => body.push_str(std::str::from_utf8(&data).unwrap()),
                Ok(Decoded::Done) => break Ok(()),
                Ok(Decoded::NeedMore) => match feed.next() {
                    Some(piece) => buffer.extend_from_slice(piece.as_bytes()),
                    None if closed => {
                        break response.body.end_of_stream().map_err(UpstreamError::from);
                    }
                    None => panic!("{name}: needs more than was fed"),
                },
                Err(error) => break Err(UpstreamError::from(error)),
            }
        };
        let outcome = outcome.map(|()| body).map_err(|error| error.to_string());
        assert_eq!(outcome, expected, "{name}");
    }

    #[test]
    fn response_bodies() {
        let ok = "HTTP/1.1 200 OK\r\n";
        let chunked = format!("{ok}transfer-encoding: chunked\r\n\r\n");
        let invalid_chunk =
            |reason| Err(format!("the member sent an invalid chunked body: {reason}"));
        check(
            "length",
            &[&format!("{ok}content-length: 5\r\n\r\nhel"), "lo"],
            false,
            Ok("hello"),
        );
        check(
            "empty",
            &[&format!("{ok}content-length: 0\r\n\r\n")],
            false,
            Ok(""),
        );
        check(
            "chunked",
            &[
                &format!("{chunked}5\r\nhe"),
                "llo\r\n",
                "6;ext=1\r\n",
                " world\r\n0\r\n",
                "x-trailer: 1\r\n\r\n",
            ],
            false,
            Ok("hello world"),
        );
        check(
            "until close",
            &[&format!("{ok}\r\nsome"), " bytes"],
            true,
            Ok("some bytes"),
        );
        check(
            "cut short",
            &[&format!("{ok}content-length: 9\r\n\r\nshort")],
            true,
            Err("the member closed the connection before the end of the response body".into()),
        );
        check(
            "bad chunk",
            &[&format!("{chunked}zz\r\n")],
            false,
            invalid_chunk("chunk size is not hexadecimal"),
        );
        check(
            "huge chunk",
            &[&format!("{chunked}10000000000000000\r\n")],
            false,
            invalid_chunk("chunk size overflows"),
        );
        check(
            "no crlf",
            &[&format!("{chunked}1\r\nabc")],
            false,
            invalid_chunk("chunk data is not followed by CRLF"),
        );
        check(
            "disagree",
            &[&format!(
                "{ok}content-length: 1\r\ncontent-length: 2\r\n\r\n"
            )],
            false,
            Err("the member sent an invalid response head: content-length values disagree".into()),
        );
        check(
            "no content",
            &["HTTP/1.1 204 No Content\r\ncontent-length: 7\r\n\r\n"],
            false,
            Ok(""),
        );
        check(
            "bad status",
            &["HTTP/1.1 2000 OK\r\n\r\n"],
            false,
            Err("the member sent an invalid response head: invalid response status".into()),
        );
    }

    #[test]
    fn keep_alive_follows_version_and_connection() {
        let cases = [
            ("HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n", true),
            (
                "HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 0\r\n\r\n",
                false,
            ),
            ("HTTP/1.0 200 OK\r\ncontent-length: 0\r\n\r\n", false),
            (
                "HTTP/1.0 200 OK\r\nconnection: Keep-Alive\r\ncontent-length: 0\r\n\r\n",
                true,
            ),
            ("HTTP/1.1 200 OK\r\n\r\n", false),
            (
                "HTTP/1.0 200 OK\r\nconnection: keep-alive\r\ntransfer-encoding: chunked\r\n\r\n",
                false,
            ),
            (
                "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-length: 5\r\n\r\n",
                false,
            ),
        ];
        for (head, expected) in cases {
            let mut buffer = BytesMut::from(head);
            let response = parse_head(&mut buffer, false).unwrap().unwrap();
            assert_eq!(response.keep_alive, expected, "{head:?}");
        }
    }

    #[test]
    fn lengths_are_digits_and_reach_the_client_as_one_value() {
        let lengths = |head: &str| {
            let mut buffer = BytesMut::from(head);
            parse_head(&mut buffer, false).map(|response| response.expect("complete head").length)
        };
        let ok = "HTTP/1.1 200 OK\r\n";
        assert_eq!(
            lengths(&format!("{ok}content-length: 5, 5\r\n\r\n")).unwrap(),
            Some(5)
        );
        assert_eq!(
            lengths(&format!(
                "{ok}content-length: 5\r\ncontent-length: 5\r\n\r\n"
            ))
            .unwrap(),
            Some(5)
        );
        assert_eq!(
            lengths(&format!("{ok}content-length: +5\r\n\r\n"))
                .unwrap_err()
                .to_string(),
            "the member sent an invalid response head: content-length \"+5\" is not a number"
        );
    }

    #[test]
    fn heads_come_off_the_buffer() {
        let mut buffer = BytesMut::from("HTTP/1.1 404 Not Found\r\nX-A: 1\r\nx-a: 2\r\n\r\nrest");
        let response = parse_head(&mut buffer, true).unwrap().unwrap();
        assert_eq!(response.status, StatusCode::NOT_FOUND);
        let values: Vec<_> = response.head.iter().map(|header| header.value).collect();
        assert_eq!(values, [b"1", b"2"]);
        assert!(response.body.is_done(), "a HEAD response has no body");
        assert_eq!(&buffer[..], b"rest");
    }
}
