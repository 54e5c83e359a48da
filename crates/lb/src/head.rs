//! A message head kept as the bytes read, with where each header lies in them: the proxy
//! passes headers on as they came and looks up the few it acts on, which are recognized once
//! when the head is parsed, so no header map is built for a request or a response.

use std::ops::Range;

use bytes::{Bytes, BytesMut};

/// A parsed head (start line and headers), split off the read buffer, whose memory it shares,
/// so the buffer can take the body and the next message.
#[derive(Debug)]
pub(crate) struct Head {
    bytes: Bytes,
    fields: Vec<Field>,
    /// Whether a `Connection` header names options other than `close`, `keep-alive` and
    /// `upgrade`: headers it names are hop-by-hop too.
    names_headers: bool,
}

/// Where the headers httparse found lie in the bytes it read, ready to make a [`Head`] of
/// once those bytes are taken off the buffer.
pub(crate) struct Layout(Vec<Field>);

/// Where one header's name and value lie in the head's bytes.
#[derive(Debug)]
struct Field {
    name: Range<usize>,
    value: Range<usize>,
    known: Option<Name>,
}

/// A header of a head.
pub(crate) struct Header<'a> {
    /// Its place among the head's headers.
    pub(crate) index: usize,
    pub(crate) known: Option<Name>,
    pub(crate) name: &'a [u8],
    pub(crate) value: &'a [u8],
}

/// The headers the proxy acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Name {
    Connection,
    ContentLength,
    Expect,
    Host,
    KeepAlive,
    Location,
    ProxyAuthenticate,
    ProxyAuthorization,
    ProxyConnection,
    SetCookie,
    Te,
    Trailer,
    TransferEncoding,
    Upgrade,
    XForwardedFor,
    XForwardedProto,
}

impl Name {
    const ALL: [(Name, &'static str); 16] = [
        (Name::Connection, "connection"),
        (Name::ContentLength, "content-length"),
        (Name::Expect, "expect"),
        (Name::Host, "host"),
        (Name::KeepAlive, "keep-alive"),
        (Name::Location, "location"),
        (Name::ProxyAuthenticate, "proxy-authenticate"),
        (Name::ProxyAuthorization, "proxy-authorization"),
        (Name::ProxyConnection, "proxy-connection"),
        (Name::SetCookie, "set-cookie"),
        (Name::Te, "te"),
        (Name::Trailer, "trailer"),
        (Name::TransferEncoding, "transfer-encoding"),
        (Name::Upgrade, "upgrade"),
        (Name::XForwardedFor, "x-forwarded-for"),
        (Name::XForwardedProto, "x-forwarded-proto"),
    ];

    /// The header a name read from a peer is, in any case, when the proxy acts on it.
    fn of(name: &[u8]) -> Option<Name> {
        let (known, _) = Name::ALL
            .iter()
            .find(|(_, text)| name.eq_ignore_ascii_case(text.as_bytes()))?;
        Some(*known)
    }

    /// Whether the header describes one connection rather than the message (RFC 9110
    /// section 7.6.1).
    pub(crate) fn is_hop_by_hop(self) -> bool {
        matches!(
            self,
            Name::Connection
                | Name::TransferEncoding
                | Name::Te
                | Name::Trailer
                | Name::Upgrade
                | Name::ProxyAuthenticate
                | Name::ProxyAuthorization
                | Name::KeepAlive
                | Name::ProxyConnection
        )
    }
}

impl Layout {
    /// Where `headers`, found by httparse in `read`, lie in it.
    pub(crate) fn of(read: &[u8], headers: &[httparse::Header<'_>]) -> Layout {
        Layout(
            headers
                .iter()
                .map(|header| Field {
                    name: span_of(read, header.name.as_bytes()),
                    value: span_of(read, header.value),
                    known: Name::of(header.name.as_bytes()),
                })
                .collect(),
        )
    }
}

impl Head {
    /// Takes the head, the first `length` bytes of `buffer`, off it, with its headers where
    /// `layout` found them in the buffer.
    pub(crate) fn take(buffer: &mut BytesMut, length: usize, layout: Layout) -> Head {
        let mut head = Head {
            bytes: buffer.split_to(length).freeze(),
            fields: layout.0,
            names_headers: false,
        };
        let names_headers = options(head.values(Name::Connection)).any(|option| {
            !["close", "keep-alive", "upgrade"]
                .iter()
                .any(|standard| option.eq_ignore_ascii_case(standard.as_bytes()))
        });
        head.names_headers = names_headers;
        head
    }

    /// The bytes at `range` of the head, sharing its memory.
    pub(crate) fn slice(&self, range: Range<usize>) -> Bytes {
        self.bytes.slice(range)
    }

    /// Every header, in the order it came.
    pub(crate) fn iter(&self) -> impl Iterator<Item = Header<'_>> {
        self.fields.iter().enumerate().map(|(index, field)| Header {
            index,
            known: field.known,
            name: &self.bytes[field.name.clone()],
            value: &self.bytes[field.value.clone()],
        })
    }

    /// The values of every header `name`, in order.
    pub(crate) fn values(&self, name: Name) -> impl DoubleEndedIterator<Item = &[u8]> {
        self.fields
            .iter()
            .filter(move |field| field.known == Some(name))
            .map(|field| &self.bytes[field.value.clone()])
    }

    /// The value of the first header `name`.
    pub(crate) fn value(&self, name: Name) -> Option<&[u8]> {
        self.values(name).next()
    }

    pub(crate) fn contains(&self, name: Name) -> bool {
        self.value(name).is_some()
    }

    /// Whether the comma-separated header `name` lists `option`, in any case.
    pub(crate) fn lists(&self, name: Name, option: &[u8]) -> bool {
        options(self.values(name)).any(|item| item.eq_ignore_ascii_case(option))
    }

    /// Whether the header `header` describes the connection rather than the message: a
    /// standard hop-by-hop header, or one that `Connection` names, except `Host`, which the
    /// request was routed by and the member must see.
    pub(crate) fn is_hop_by_hop(&self, header: &Header<'_>) -> bool {
        match header.known {
            Some(known) if known.is_hop_by_hop() => true,
            Some(Name::Host) => false,
            _ => self.names_headers && self.lists(Name::Connection, header.name),
        }
    }
}

/// The items of comma-separated header values, trimmed.
fn options<'a>(values: impl Iterator<Item = &'a [u8]>) -> impl Iterator<Item = &'a [u8]> {
    values
        .flat_map(|value| value.split(|&byte| byte == b','))
        .map(<[u8]>::trim_ascii)
}

/// Where `part`, a slice of `read`, lies in it.
pub(crate) fn span_of(read: &[u8], part: &[u8]) -> Range<usize> {
    let start = part.as_ptr() as usize - read.as_ptr() as usize;
    start..start + part.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(text: &str) -> Head {
        let mut slots = [httparse::EMPTY_HEADER; 8];
        let mut response = httparse::Response::new(&mut slots);
        let Ok(httparse::Status::Complete(length)) = response.parse(text.as_bytes()) else {
            panic!("complete head");
        };
        let layout = Layout::of(text.as_bytes(), response.headers);
        Head::take(&mut BytesMut::from(text), length, layout)
    }

    #[test]
    fn headers_are_found_by_name_in_any_case() {
        let head =
            head("HTTP/1.1 200 OK\r\nHOST: a\r\nConnection: Keep-Alive\r\nhost: b\r\n\r\nbody");
        assert_eq!(head.values(Name::Host).collect::<Vec<_>>(), [b"a", b"b"]);
        assert!(head.lists(Name::Connection, b"keep-alive"));
        assert!(!head.lists(Name::Connection, b"close"));
        assert!(!head.contains(Name::Upgrade));
        let headers: Vec<_> = head
            .iter()
            .map(|header| (header.index, header.known, header.name))
            .collect();
        assert_eq!(
            headers,
            [
                (0, Some(Name::Host), &b"HOST"[..]),
                (1, Some(Name::Connection), b"Connection"),
                (2, Some(Name::Host), b"host"),
            ]
        );
    }

    #[test]
    fn headers_that_connection_names_are_hop_by_hop() {
        let check = |text: &str, expected: &[&str]| {
            let head = head(text);
            let hop_by_hop: Vec<_> = head
                .iter()
                .filter(|header| head.is_hop_by_hop(header))
                .map(|header| String::from_utf8_lossy(header.name).into_owned())
                .collect();
            assert_eq!(hop_by_hop, expected, "{text:?}");
        };
        check("HTTP/1.1 200 OK\r\nX-A: 1\r\nTE: trailers\r\n\r\n", &["TE"]);
        check(
            "HTTP/1.1 200 OK\r\nConnection: close, X-A, host\r\nX-A: 1\r\nX-B: 2\r\nHost: w\r\n\r\n",
            &["Connection", "X-A"],
        );
    }
}
