//! HTTP/1.1 message framing shared by both sides of the proxy: how long a body is (RFC 9112
//! section 6), whether the connection stays open, and decoding a body out of the bytes read.

use std::io::Write as _;

use bytes::{Bytes, BytesMut};
use hyper::{StatusCode, Version};

use crate::head::{Head, Name};

/// Largest head (start line and headers) a peer may send.
pub(crate) const MAX_HEAD: usize = 64 * 1024;
pub(crate) const MAX_HEADERS: usize = 100;
/// Longest chunk-size line, or trailer section, of a chunked body.
const MAX_CHUNK_LINE: usize = 4 * 1024;

#[derive(Debug, thiserror::Error)]
pub(crate) enum FramingError {
    #[error("{0}")]
    InvalidChunk(&'static str),
    #[error("the connection closed before the end of the body")]
    Closed,
}

/// Why a request's body cannot be read as framed.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum RequestFramingError {
    #[error("an HTTP/1.0 request cannot have a transfer-encoding")]
    CodingInHttp10,
    #[error("a request cannot have both content-length and transfer-encoding")]
    LengthAndCoding,
    #[error("transfer-encoding {0:?} is not supported, only chunked")]
    UnsupportedCoding(String),
    #[error("{0}")]
    Length(String),
}

impl RequestFramingError {
    pub(crate) fn status(&self) -> StatusCode {
        match self {
            RequestFramingError::UnsupportedCoding(_) => StatusCode::NOT_IMPLEMENTED,
            _ => StatusCode::BAD_REQUEST,
        }
    }
}

/// Whether a response with `status` to a request (a HEAD one when `method_is_head`) has no
/// body, whatever its headers say (RFC 9112 section 6.3).
pub(crate) fn has_no_body(method_is_head: bool, status: StatusCode) -> bool {
    method_is_head
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
}

/// Appends one header line to a head being encoded.
pub(crate) fn push_header(head: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    head.extend_from_slice(name);
    head.extend_from_slice(b": ");
    head.extend_from_slice(value);
    head.extend_from_slice(b"\r\n");
}

/// Appends a `content-length` header line, formatted in place.
pub(crate) fn push_content_length(head: &mut Vec<u8>, length: u64) {
    // Writing to a `Vec` cannot fail.
    let _ = write!(head, "content-length: {length}\r\n");
}

/// Appends `data` as one chunk of a chunked body.
pub(crate) fn push_chunk(out: &mut Vec<u8>, data: &[u8]) {
    let _ = write!(out, "{:x}\r\n", data.len());
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

/// HTTP/1.1 keeps a connection unless told `close`; HTTP/1.0 only when told `keep-alive`.
pub(crate) fn keeps_alive(version: Version, head: &Head) -> bool {
    match version {
        Version::HTTP_10 => head.lists(Name::Connection, b"keep-alive"),
        _ => !head.lists(Name::Connection, b"close"),
    }
}

/// How much of a response body is still to come (RFC 9112 section 6.3).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Framing {
    Length(u64),
    Chunked(ChunkState),
    UntilClose,
    Done,
    /// The body was framed wrongly: nothing after the error can be trusted.
    Failed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    Size,
    Data(u64),
    DataEnd,
    Trailers,
}

/// Reads a message body out of the bytes a peer sent.
#[derive(Debug)]
pub(crate) struct BodyDecoder {
    framing: Framing,
}

#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Decoded {
    Data(Bytes),
    NeedMore,
    Done,
}

impl BodyDecoder {
    /// The decoder of a body that is already through.
    pub(crate) fn empty() -> BodyDecoder {
        BodyDecoder {
            framing: Framing::Done,
        }
    }

    /// How a request's body is framed: chunked, a length, or none at all.
    pub(crate) fn for_request(
        version: Version,
        head: &Head,
    ) -> Result<BodyDecoder, RequestFramingError> {
        let framing = if let Some(codings) = head.values(Name::TransferEncoding).next_back() {
            if version == Version::HTTP_10 {
                return Err(RequestFramingError::CodingInHttp10);
            }
            // A length beside a coding is how requests are smuggled past proxies.
            if head.contains(Name::ContentLength) {
                return Err(RequestFramingError::LengthAndCoding);
            }
            let only_chunked = head.values(Name::TransferEncoding).count() == 1
                && codings.trim_ascii().eq_ignore_ascii_case(b"chunked");
            if !only_chunked {
                let codings = String::from_utf8_lossy(codings).into_owned();
                return Err(RequestFramingError::UnsupportedCoding(codings));
            }
            Framing::Chunked(ChunkState::Size)
        } else {
            match content_length(head).map_err(RequestFramingError::Length)? {
                Some(0) | None => Framing::Done,
                Some(length) => Framing::Length(length),
            }
        };
        Ok(BodyDecoder { framing })
    }

    /// How a response's body is framed, `length` being its `Content-Length`.
    pub(crate) fn for_response(
        method_is_head: bool,
        status: StatusCode,
        head: &Head,
        length: Option<u64>,
    ) -> BodyDecoder {
        let framing = if has_no_body(method_is_head, status) {
            Framing::Done
        } else if let Some(codings) = head.values(Name::TransferEncoding).next_back() {
            let last = codings
                .rsplit(|&byte| byte == b',')
                .next()
                .unwrap_or_default();
            match last.trim_ascii().eq_ignore_ascii_case(b"chunked") {
                true => Framing::Chunked(ChunkState::Size),
                false => Framing::UntilClose,
            }
        } else {
            match length {
                Some(0) => Framing::Done,
                Some(length) => Framing::Length(length),
                None => Framing::UntilClose,
            }
        };
        BodyDecoder { framing }
    }

    /// Whether the body ends only when the connection closes.
    pub(crate) fn is_until_close(&self) -> bool {
        self.framing == Framing::UntilClose
    }

    pub(crate) fn is_done(&self) -> bool {
        self.framing == Framing::Done
    }

    /// Bytes still to come, when the framing says.
    pub(crate) fn remaining(&self) -> Option<u64> {
        match self.framing {
            Framing::Length(length) => Some(length),
            Framing::Done => Some(0),
            _ => None,
        }
    }

    /// Takes the next piece of body off the front of `buffer`; after an error, every call
    /// fails, since where the body ends is no longer known.
    pub(crate) fn decode(&mut self, buffer: &mut BytesMut) -> Result<Decoded, FramingError> {
        let decoded = self.decode_framed(buffer);
        if decoded.is_err() {
            self.framing = Framing::Failed;
        }
        decoded
    }

    fn decode_framed(&mut self, buffer: &mut BytesMut) -> Result<Decoded, FramingError> {
        loop {
            match &mut self.framing {
                Framing::Done => return Ok(Decoded::Done),
                Framing::Failed => {
                    return Err(FramingError::InvalidChunk(
                        "an earlier part of the body was invalid",
                    ));
                }
                Framing::UntilClose
                | Framing::Length(_)
                | Framing::Chunked(ChunkState::Data(_))
                    if buffer.is_empty() =>
                {
                    return Ok(Decoded::NeedMore);
                }
                Framing::UntilClose => return Ok(Decoded::Data(buffer.split().freeze())),
                Framing::Length(left) => {
                    let data = take(buffer, left);
                    if *left == 0 {
                        self.framing = Framing::Done;
                    }
                    return Ok(Decoded::Data(data));
                }
                Framing::Chunked(ChunkState::Data(left)) => {
                    let data = take(buffer, left);
                    if *left == 0 {
                        self.framing = Framing::Chunked(ChunkState::DataEnd);
                    }
                    return Ok(Decoded::Data(data));
                }
                Framing::Chunked(ChunkState::Size) => {
                    let Some(line) = take_line(buffer)? else {
                        return Ok(Decoded::NeedMore);
                    };
                    self.framing = match chunk_size(&line)? {
                        0 => Framing::Chunked(ChunkState::Trailers),
                        size => Framing::Chunked(ChunkState::Data(size)),
                    };
                }
                Framing::Chunked(ChunkState::DataEnd) => {
                    if buffer.len() < 2 {
                        return Ok(Decoded::NeedMore);
                    }
                    if &buffer[..2] != b"\r\n" {
                        return Err(FramingError::InvalidChunk(
                            "chunk data is not followed by CRLF",
                        ));
                    }
                    let _ = buffer.split_to(2);
                    self.framing = Framing::Chunked(ChunkState::Size);
                }
                Framing::Chunked(ChunkState::Trailers) => {
                    let Some(line) = take_line(buffer)? else {
                        return Ok(Decoded::NeedMore);
                    };
                    if line.is_empty() {
                        self.framing = Framing::Done;
                    }
                }
            }
        }
    }

    /// What the peer closing the connection means for the body: its end, or its loss.
    pub(crate) fn end_of_stream(&mut self) -> Result<(), FramingError> {
        match self.framing {
            Framing::UntilClose | Framing::Done => {
                self.framing = Framing::Done;
                Ok(())
            }
            _ => Err(FramingError::Closed),
        }
    }
}

/// Up to `left` bytes off the front of `buffer`, counted off `left`.
fn take(buffer: &mut BytesMut, left: &mut u64) -> Bytes {
    let length = usize::try_from(*left)
        .unwrap_or(usize::MAX)
        .min(buffer.len());
    *left -= length as u64;
    buffer.split_to(length).freeze()
}

/// One CRLF-terminated line off the front of `buffer`, without its CRLF.
fn take_line(buffer: &mut BytesMut) -> Result<Option<BytesMut>, FramingError> {
    let Some(end) = buffer.windows(2).position(|pair| pair == b"\r\n") else {
        if buffer.len() > MAX_CHUNK_LINE {
            return Err(FramingError::InvalidChunk("line longer than 4 KiB"));
        }
        return Ok(None);
    };
    let mut line = buffer.split_to(end + 2);
    line.truncate(end);
    Ok(Some(line))
}

/// The hexadecimal size at the start of a chunk-size line; extensions after `;` are ignored.
fn chunk_size(line: &[u8]) -> Result<u64, FramingError> {
    let digits = line
        .split(|&byte| byte == b';')
        .next()
        .unwrap_or_default()
        .trim_ascii();
    if digits.is_empty() {
        return Err(FramingError::InvalidChunk("missing chunk size"));
    }
    digits.iter().try_fold(0u64, |size, &digit| {
        let value = (digit as char)
            .to_digit(16)
            .ok_or(FramingError::InvalidChunk("chunk size is not hexadecimal"))?;
        size.checked_mul(16)
            .and_then(|size| size.checked_add(u64::from(value)))
            .ok_or(FramingError::InvalidChunk("chunk size overflows"))
    })
}

/// The body length that every `Content-Length` value agrees on.
pub(crate) fn content_length(head: &Head) -> Result<Option<u64>, String> {
    let mut length = None;
    for value in head.values(Name::ContentLength) {
        for item in value.split(|&byte| byte == b',') {
            let item = item.trim_ascii();
            let parsed: u64 = std::str::from_utf8(item)
                .ok()
                .filter(|_| item.iter().all(u8::is_ascii_digit))
                .and_then(|item| item.parse().ok())
                .ok_or_else(|| {
                    let item = String::from_utf8_lossy(item);
                    format!("content-length {item:?} is not a number")
                })?;
            if length.is_some_and(|length| length != parsed) {
                return Err("content-length values disagree".to_string());
            }
            length = Some(parsed);
        }
    }
    Ok(length)
}
