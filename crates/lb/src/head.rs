//! A message head kept as the bytes read, with where each header lies in them: the proxy
//! looks up the few headers it acts on by name and passes the others on as they came, so no
//! header map is built for a request or a response.

use std::ops::Range;

/// A parsed head (start line and headers), copied out of the read buffer so the buffer can
/// take the body and the next message.
#[derive(Debug)]
pub(crate) struct Head {
    bytes: Box<[u8]>,
    fields: Vec<Field>,
}

/// Where one header's name and value lie in the head's bytes.
#[derive(Debug, Clone)]
struct Field {
    name: Range<usize>,
    value: Range<usize>,
}

impl Head {
    /// Copies the head, the first `length` bytes of `read`, in which httparse found `headers`.
    pub(crate) fn new(read: &[u8], length: usize, headers: &[httparse::Header<'_>]) -> Head {
        let fields = headers
            .iter()
            .map(|header| Field {
                name: span_of(read, header.name.as_bytes()),
                value: span_of(read, header.value),
            })
            .collect();
        Head {
            bytes: read[..length].into(),
            fields,
        }
    }

    /// Bytes of the head, such as the request target, by where they lie in what was read.
    pub(crate) fn slice(&self, span: Range<usize>) -> &[u8] {
        &self.bytes[span]
    }

    /// Every header in the order it came, with its place among them.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (usize, &[u8], &[u8])> {
        self.fields.iter().enumerate().map(|(index, field)| {
            (
                index,
                &self.bytes[field.name.clone()],
                &self.bytes[field.value.clone()],
            )
        })
    }

    /// The values of every header named `name` (lowercase), in order.
    pub(crate) fn values<'a>(&'a self, name: &'a str) -> impl DoubleEndedIterator<Item = &'a [u8]> {
        self.fields
            .iter()
            .filter(move |field| is_named(&self.bytes[field.name.clone()], name))
            .map(|field| &self.bytes[field.value.clone()])
    }

    /// The value of the first header named `name` (lowercase).
    pub(crate) fn value(&self, name: &str) -> Option<&[u8]> {
        let field = self
            .fields
            .iter()
            .find(|field| is_named(&self.bytes[field.name.clone()], name))?;
        Some(&self.bytes[field.value.clone()])
    }

    pub(crate) fn contains(&self, name: &str) -> bool {
        self.value(name).is_some()
    }

    /// Whether a comma-separated header `name` lists `option`, in any case.
    pub(crate) fn lists(&self, name: &str, option: &[u8]) -> bool {
        self.values(name)
            .flat_map(|value| value.split(|&byte| byte == b','))
            .any(|item| item.trim_ascii().eq_ignore_ascii_case(option))
    }
}

/// Whether a header name read from a peer is `name`, which is lowercase.
pub(crate) fn is_named(read: &[u8], name: &str) -> bool {
    read.eq_ignore_ascii_case(name.as_bytes())
}

/// Where `part`, a slice of `read`, lies in it.
pub(crate) fn span_of(read: &[u8], part: &[u8]) -> Range<usize> {
    let start = part.as_ptr() as usize - read.as_ptr() as usize;
    start..start + part.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_are_found_by_name_in_any_case() {
        let read =
            b"HTTP/1.1 200 OK\r\nX-A: 1\r\nConnection: Keep-Alive, X-B\r\nx-a: 2\r\n\r\nbody";
        let mut slots = [httparse::EMPTY_HEADER; 4];
        let mut response = httparse::Response::new(&mut slots);
        let Ok(httparse::Status::Complete(length)) = response.parse(read) else {
            panic!("complete head");
        };
        let head = Head::new(read, length, response.headers);
        assert_eq!(head.values("x-a").collect::<Vec<_>>(), [b"1", b"2"]);
        assert_eq!(head.value("connection"), Some(&b"Keep-Alive, X-B"[..]));
        assert!(head.lists("connection", b"keep-alive"));
        assert!(head.lists("connection", b"x-b"));
        assert!(!head.lists("connection", b"close"));
        assert!(!head.contains("x-c"));
        let names: Vec<_> = head.iter().map(|(index, name, _)| (index, name)).collect();
        assert_eq!(names, [(0, &b"X-A"[..]), (1, b"Connection"), (2, b"x-a")]);
    }
}
