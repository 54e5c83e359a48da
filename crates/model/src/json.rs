//! A JSON reader that keeps positions and, like Stratos' own, tolerates trailing commas.

use crate::tree::{Entry, Node, SyntaxError, Value};

/// Deeper nesting than this is refused rather than risking the stack.
const MAX_DEPTH: usize = 200;

pub(crate) fn parse(text: &str) -> Result<Node, SyntaxError> {
    let mut reader = Reader {
        text,
        bytes: text.as_bytes(),
        index: 0,
        line: 1,
        column: 1,
    };
    if reader.bytes.starts_with("\u{feff}".as_bytes()) {
        reader.index = 3;
    }
    reader.skip_whitespace();
    if reader.peek().is_none() {
        return Err(reader.error("the document is empty"));
    }
    let node = reader.value(0)?;
    reader.skip_whitespace();
    if reader.peek().is_some() {
        return Err(reader.error("unexpected text after the end of the document"));
    }
    Ok(node)
}

struct Reader<'t> {
    text: &'t str,
    bytes: &'t [u8],
    index: usize,
    line: usize,
    column: usize,
}

impl Reader<'_> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.index).copied()
    }

    fn position(&self) -> (usize, usize) {
        (self.line, self.column)
    }

    fn bump(&mut self) {
        let Some(byte) = self.peek() else { return };
        self.index += 1;
        if byte == b'\n' {
            self.line += 1;
            self.column = 1;
        } else if byte & 0xC0 != 0x80 {
            self.column += 1;
        }
    }

    fn error(&self, message: impl Into<String>) -> SyntaxError {
        SyntaxError {
            message: message.into(),
            position: self.position(),
        }
    }

    fn unexpected(&self, expected: &str) -> SyntaxError {
        match self
            .text
            .get(self.index..)
            .and_then(|rest| rest.chars().next())
        {
            Some(found) => self.error(format!("expected {expected}, found `{found}`")),
            None => self.error(format!("expected {expected}, found the end of the input")),
        }
    }

    fn skip_whitespace(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.bump();
        }
    }

    fn value(&mut self, depth: usize) -> Result<Node, SyntaxError> {
        if depth > MAX_DEPTH {
            return Err(self.error(format!("nesting deeper than {MAX_DEPTH} levels")));
        }
        let position = self.position();
        let value = match self.peek() {
            Some(b'{') => self.object(depth)?,
            Some(b'[') => self.array(depth)?,
            Some(b'"') => Value::String(self.string()?),
            Some(b'-' | b'0'..=b'9') => Value::Number(self.number()?),
            Some(b't') => self.literal("true", Value::Bool(true))?,
            Some(b'f') => self.literal("false", Value::Bool(false))?,
            Some(b'n') => self.literal("null", Value::Null)?,
            _ => return Err(self.unexpected("a value")),
        };
        Ok(Node { value, position })
    }

    fn literal(&mut self, word: &str, value: Value) -> Result<Value, SyntaxError> {
        if !self.bytes[self.index..].starts_with(word.as_bytes()) {
            return Err(self.unexpected("a value"));
        }
        for _ in 0..word.len() {
            self.bump();
        }
        Ok(value)
    }

    fn object(&mut self, depth: usize) -> Result<Value, SyntaxError> {
        self.bump();
        let mut entries: Vec<Entry> = Vec::new();
        loop {
            self.skip_whitespace();
            if self.peek() == Some(b'}') {
                self.bump();
                return Ok(Value::Map(entries));
            }
            if self.peek() != Some(b'"') {
                return Err(self.unexpected("a string key or `}`"));
            }
            let key_position = self.position();
            let key = self.string()?;
            if entries.iter().any(|e| e.key == key) {
                return Err(SyntaxError {
                    message: format!("duplicate key `{key}`"),
                    position: key_position,
                });
            }
            self.skip_whitespace();
            if self.peek() != Some(b':') {
                return Err(self.unexpected("`:`"));
            }
            self.bump();
            self.skip_whitespace();
            let value = self.value(depth + 1)?;
            entries.push(Entry {
                key,
                key_position,
                value,
            });
            self.skip_whitespace();
            match self.peek() {
                Some(b',') => self.bump(),
                Some(b'}') => {
                    self.bump();
                    return Ok(Value::Map(entries));
                }
                _ => return Err(self.unexpected("`,` or `}`")),
            }
        }
    }

    fn array(&mut self, depth: usize) -> Result<Value, SyntaxError> {
        self.bump();
        let mut items = Vec::new();
        loop {
            self.skip_whitespace();
            if self.peek() == Some(b']') {
                self.bump();
                return Ok(Value::Seq(items));
            }
            items.push(self.value(depth + 1)?);
            self.skip_whitespace();
            match self.peek() {
                Some(b',') => self.bump(),
                Some(b']') => {
                    self.bump();
                    return Ok(Value::Seq(items));
                }
                _ => return Err(self.unexpected("`,` or `]`")),
            }
        }
    }

    fn string(&mut self) -> Result<String, SyntaxError> {
        self.bump();
        let mut out = String::new();
        let mut start = self.index;
        loop {
            match self.peek() {
                None => return Err(self.error("unterminated string")),
                Some(b'"') => {
                    out.push_str(&self.text[start..self.index]);
                    self.bump();
                    return Ok(out);
                }
                Some(b'\\') => {
                    out.push_str(&self.text[start..self.index]);
                    self.bump();
                    out.push(self.escape()?);
                    start = self.index;
                }
                Some(byte) if byte < 0x20 => {
                    return Err(self.error("control character in a string"));
                }
                Some(_) => self.bump(),
            }
        }
    }

    fn escape(&mut self) -> Result<char, SyntaxError> {
        let Some(byte) = self.peek() else {
            return Err(self.error("unterminated string"));
        };
        let simple = match byte {
            b'"' => Some('"'),
            b'\\' => Some('\\'),
            b'/' => Some('/'),
            b'b' => Some('\u{8}'),
            b'f' => Some('\u{c}'),
            b'n' => Some('\n'),
            b'r' => Some('\r'),
            b't' => Some('\t'),
            _ => None,
        };
        if let Some(c) = simple {
            self.bump();
            return Ok(c);
        }
        if byte != b'u' {
            return Err(self.error("invalid escape in a string"));
        }
        self.bump();
        let high = self.hex4()?;
        if !(0xD800..0xDC00).contains(&high) {
            return char::from_u32(high).ok_or_else(|| self.error("invalid unicode escape"));
        }
        if !self.bytes[self.index..].starts_with(b"\\u") {
            return Err(self.error("unpaired surrogate in a unicode escape"));
        }
        self.bump();
        self.bump();
        let low = self.hex4()?;
        if !(0xDC00..0xE000).contains(&low) {
            return Err(self.error("unpaired surrogate in a unicode escape"));
        }
        char::from_u32(0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00))
            .ok_or_else(|| self.error("invalid unicode escape"))
    }

    fn hex4(&mut self) -> Result<u32, SyntaxError> {
        let mut value = 0;
        for _ in 0..4 {
            let digit = self
                .peek()
                .and_then(|b| (b as char).to_digit(16))
                .ok_or_else(|| self.error("invalid unicode escape"))?;
            value = value * 16 + digit;
            self.bump();
        }
        Ok(value)
    }

    fn number(&mut self) -> Result<String, SyntaxError> {
        let start = self.index;
        if self.peek() == Some(b'-') {
            self.bump();
        }
        match self.peek() {
            Some(b'0') => self.bump(),
            Some(b'1'..=b'9') => self.digits(),
            _ => return Err(self.error("invalid number")),
        }
        if self.peek() == Some(b'.') {
            self.bump();
            if !matches!(self.peek(), Some(b'0'..=b'9')) {
                return Err(self.error("invalid number"));
            }
            self.digits();
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.bump();
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.bump();
            }
            if !matches!(self.peek(), Some(b'0'..=b'9')) {
                return Err(self.error("invalid number"));
            }
            self.digits();
        }
        Ok(self.text[start..self.index].to_string())
    }

    fn digits(&mut self) {
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.bump();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str, expected: Result<&str, (&str, (usize, usize))>) {
        let got = parse(text);
        match (got, expected) {
            (Ok(node), Ok(json)) => {
                let want: serde_json::Value = serde_json::from_str(json).expect("test json");
                assert_eq!(node.to_json(), want, "{text}");
            }
            (Err(e), Err((message, position))) => {
                assert_eq!(
                    (e.message.as_str(), e.position),
                    (message, position),
                    "{text}"
                );
            }
            (got, want) => panic!("{text}: got {got:?}, want {want:?}"),
        }
    }

    #[test]
    fn reads_json() {
        check(
            r#"{"a": [1, 2.5e3, "x\u00e9\n"], "b": null}"#,
            Ok(r#"{"a": [1, 2.5e3, "xé\n"], "b": null}"#),
        );
        check("[1, 2, ]", Ok("[1, 2]"));
        check("{\"a\": 1,\n }", Ok(r#"{"a": 1}"#));
        check(r#""\ud83d\ude00""#, Ok(r#""😀""#));
        check(
            "{\n  \"a\": tru\n}",
            Err(("expected a value, found `t`", (2, 8))),
        );
        check(
            "{\"a\": 1 \"b\": 2}",
            Err(("expected `,` or `}`, found `\"`", (1, 9))),
        );
        check("{\"a\": 1, \"a\": 2}", Err(("duplicate key `a`", (1, 10))));
        check("", Err(("the document is empty", (1, 1))));
        check(
            "[1] x",
            Err(("unexpected text after the end of the document", (1, 5))),
        );
        check("\"é\u{1}\"", Err(("control character in a string", (1, 3))));
        check("[01]", Err(("expected `,` or `]`, found `1`", (1, 3))));
        check(
            &"[".repeat(500),
            Err(("nesting deeper than 200 levels", (1, 202))),
        );
    }
}
