//! Typed reads over the positioned tree: every read knows its path, every problem is collected.
//!
//! Both syntaxes convert through this, so they share error wording. Each value read also
//! records where it came from under its place in the [`Bundle`](crate::Bundle), so checks
//! that run on the bundle afterwards can still point at the line.

use std::collections::BTreeMap;

use crate::check::CheckedFile;
use crate::diagnostic::{Diagnostic, Location};
use crate::tree::{Node, Value};
use crate::types::Bundle;

/// A node and its path from the document root, like `$.portMapping[1].port`.
#[derive(Debug, Clone)]
pub(crate) struct At<'n> {
    pub node: &'n Node,
    pub path: String,
}

impl<'n> At<'n> {
    pub fn root(node: &'n Node) -> Self {
        At {
            node,
            path: "$".into(),
        }
    }

    /// The field `key` of a map; `None` when absent, null, or this is not a map.
    pub fn get(&self, key: &str) -> Option<At<'n>> {
        let Value::Map(entries) = &self.node.value else {
            return None;
        };
        let entry = entries.iter().find(|e| e.key == key)?;
        if entry.value.value == Value::Null {
            return None;
        }
        Some(At {
            node: &entry.value,
            path: format!("{}.{key}", self.path),
        })
    }

    pub fn has(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    pub fn is_map(&self) -> bool {
        matches!(self.node.value, Value::Map(_))
    }
}

/// A place in the bundle, like `cartridges[0].port_mappings[1].port`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Key(pub String);

impl Key {
    pub fn new(s: impl Into<String>) -> Self {
        Key(s.into())
    }

    pub fn field(&self, name: &str) -> Key {
        if self.0.is_empty() {
            Key(name.to_string())
        } else {
            Key(format!("{}.{name}", self.0))
        }
    }

    pub fn index(&self, i: usize) -> Key {
        Key(format!("{}[{i}]", self.0))
    }
}

/// Where each bundle place came from in the text.
#[derive(Debug, Clone, Default)]
pub(crate) struct Origins {
    source: String,
    places: BTreeMap<Key, Location>,
}

impl Origins {
    pub fn new(source: &str) -> Self {
        Origins {
            source: source.to_string(),
            places: BTreeMap::new(),
        }
    }

    pub fn record(&mut self, key: &Key, at: &At) {
        self.places.insert(key.clone(), location(&self.source, at));
    }

    /// The origin of `key`, or of its nearest recorded ancestor; without any, the key itself.
    pub fn locate(&self, key: &Key) -> Location {
        self.find(key).unwrap_or_else(|| Location {
            source: self.source.clone(),
            line: None,
            path: format!("$.{}", key.0),
        })
    }

    /// The origin of `key`, or of its nearest recorded ancestor.
    pub fn find(&self, key: &Key) -> Option<Location> {
        let mut probe = key.0.as_str();
        loop {
            if let Some(location) = self.places.get(&Key(probe.to_string())) {
                return Some(location.clone());
            }
            let cut = probe.rfind(['.', '['])?;
            probe = &probe[..cut];
        }
    }
}

fn location(source: &str, at: &At) -> Location {
    Location {
        source: source.to_string(),
        line: Some(at.node.position),
        path: at.path.clone(),
    }
}

pub(crate) struct Reader {
    source: String,
    pub problems: Vec<Diagnostic>,
    pub origins: Origins,
}

impl Reader {
    pub fn new(source: &str) -> Self {
        Reader {
            source: source.to_string(),
            problems: Vec::new(),
            origins: Origins::new(source),
        }
    }

    pub fn error(&mut self, at: &At, message: impl Into<String>) {
        self.problems.push(Diagnostic {
            location: location(&self.source, at),
            message: message.into(),
        });
    }

    pub fn report(&mut self, location: Location, message: impl Into<String>) {
        self.problems.push(Diagnostic {
            location,
            message: message.into(),
        });
    }

    pub fn locate(&self, at: &At) -> Location {
        location(&self.source, at)
    }

    fn wrong_type(&mut self, at: &At, expected: &str) {
        let found = at.node.value.kind_name();
        self.error(at, format!("expected {expected}, found {found}"));
    }

    /// The field `key`, reporting it missing if absent.
    pub fn required<'n>(&mut self, at: &At<'n>, key: &str) -> Option<At<'n>> {
        let field = at.get(key);
        if field.is_none() && at.is_map() {
            self.error(at, format!("missing field `{key}`"));
        }
        field
    }

    /// Checks `at` is a map; in a native blueprint, also that it holds only `allowed` keys.
    pub fn map<'n>(&mut self, at: &At<'n>, allowed: Option<&[&str]>) -> Vec<(&'n str, At<'n>)> {
        let Value::Map(entries) = &at.node.value else {
            self.wrong_type(at, "a map");
            return Vec::new();
        };
        let mut out = Vec::new();
        for entry in entries {
            let key = &entry.key;
            let child = At {
                node: &entry.value,
                path: format!("{}.{key}", at.path),
            };
            if let Some(allowed) = allowed
                && !allowed.contains(&key.as_str())
            {
                let location = Location {
                    line: Some(entry.key_position),
                    ..self.locate(&child)
                };
                self.report(
                    location,
                    format!(
                        "unknown field `{key}`, expected one of: {}",
                        allowed.join(", ")
                    ),
                );
                continue;
            }
            out.push((key.as_str(), child));
        }
        out
    }

    /// Checks `at` is a map for its type only, without looking at its keys.
    pub fn object(&mut self, at: &At) -> bool {
        if at.is_map() {
            return true;
        }
        self.wrong_type(at, "a map");
        false
    }

    /// Like [`Reader::object`], and records where the map named `key` is, for later checks.
    pub fn open(&mut self, at: &At, key: &Key) -> bool {
        if !self.object(at) {
            return false;
        }
        self.origins.record(key, at);
        true
    }

    pub fn list<'n>(&mut self, at: &At<'n>) -> Vec<At<'n>> {
        let Value::Seq(items) = &at.node.value else {
            self.wrong_type(at, "a list");
            return Vec::new();
        };
        items
            .iter()
            .enumerate()
            .map(|(i, node)| At {
                node,
                path: format!("{}[{i}]", at.path),
            })
            .collect()
    }

    /// Any scalar as text (Stratos' readers turn `7` into `"7"` too).
    pub fn string(&mut self, at: &At, key: &Key) -> Option<String> {
        match at.node.value.scalar_text() {
            Some(text) => {
                self.origins.record(key, at);
                Some(text)
            }
            None => {
                self.wrong_type(at, "a string");
                None
            }
        }
    }

    /// A whole number up to `max`, written as a number or a numeric string.
    pub fn whole(&mut self, at: &At, key: &Key, max: u64) -> Option<u64> {
        let text = match &at.node.value {
            Value::Number(s) | Value::String(s) | Value::Plain(s) => s.trim(),
            _ => {
                self.wrong_type(at, "a whole number");
                return None;
            }
        };
        let Ok(n) = text.parse::<u64>() else {
            let negative = text.starts_with('-') && text[1..].parse::<u64>().is_ok();
            let message = if negative {
                format!("expected a whole number from 0 to {max}, found `{text}`")
            } else {
                format!("expected a whole number, found `{text}`")
            };
            self.error(at, message);
            return None;
        };
        if n > max {
            self.error(
                at,
                format!("expected a whole number from 0 to {max}, found `{text}`"),
            );
            return None;
        }
        self.origins.record(key, at);
        Some(n)
    }

    pub fn u32(&mut self, at: &At, key: &Key) -> Option<u32> {
        self.whole(at, key, u32::MAX.into())
            .and_then(|n| u32::try_from(n).ok())
    }

    pub fn u16(&mut self, at: &At, key: &Key) -> Option<u16> {
        self.whole(at, key, u16::MAX.into())
            .and_then(|n| u16::try_from(n).ok())
    }

    pub fn float(&mut self, at: &At, key: &Key) -> Option<f64> {
        let text = match &at.node.value {
            Value::Number(s) | Value::String(s) | Value::Plain(s) => s.trim(),
            _ => {
                self.wrong_type(at, "a number");
                return None;
            }
        };
        match text.parse::<f64>() {
            Ok(n) if n.is_finite() => {
                self.origins.record(key, at);
                Some(n)
            }
            _ => {
                self.error(at, format!("expected a number, found `{text}`"));
                None
            }
        }
    }

    /// `true` or `false`, as a boolean or a string (Stratos writes `"false"`).
    pub fn boolean(&mut self, at: &At, key: &Key) -> Option<bool> {
        let text = match &at.node.value {
            Value::Bool(b) => {
                self.origins.record(key, at);
                return Some(*b);
            }
            Value::String(s) | Value::Plain(s) => s.trim(),
            _ => {
                self.wrong_type(at, "true or false");
                return None;
            }
        };
        let value = if text.eq_ignore_ascii_case("true") {
            true
        } else if text.eq_ignore_ascii_case("false") {
            false
        } else {
            self.error(at, format!("expected true or false, found `{text}`"));
            return None;
        };
        self.origins.record(key, at);
        Some(value)
    }

    /// One of the named values; the message names what the value is (`partition algorithm`).
    pub fn choice<T: Copy>(
        &mut self,
        at: &At,
        key: &Key,
        what: &str,
        options: &[(&str, T)],
    ) -> Option<T> {
        let text = self.string(at, key)?;
        let wanted = text.trim();
        if let Some((_, value)) = options
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(wanted))
        {
            return Some(*value);
        }
        let names: Vec<&str> = options.iter().map(|(name, _)| *name).collect();
        self.error(
            at,
            format!(
                "unknown {what} `{wanted}`, expected one of: {}",
                names.join(", ")
            ),
        );
        None
    }

    /// A list of strings.
    pub fn strings(&mut self, at: &At, key: &Key) -> Vec<String> {
        self.origins.record(key, at);
        let items = self.list(at);
        items
            .iter()
            .enumerate()
            .filter_map(|(i, item)| self.string(item, &key.index(i)))
            .collect()
    }

    /// A map of scalar values as strings.
    pub fn string_map(&mut self, at: &At, key: &Key) -> BTreeMap<String, String> {
        self.origins.record(key, at);
        let entries = self.map(at, None);
        entries
            .iter()
            .filter_map(|(k, v)| Some((k.to_string(), self.string(v, &key.field(k))?)))
            .collect()
    }

    pub fn field_string(&mut self, at: &At, name: &str, key: &Key) -> Option<String> {
        let field = at.get(name)?;
        self.string(&field, key)
    }

    pub fn required_string(&mut self, at: &At, name: &str, key: &Key) -> Option<String> {
        let field = self.required(at, name)?;
        self.string(&field, key)
    }

    pub fn field_bool(&mut self, at: &At, name: &str, key: &Key) -> Option<bool> {
        let field = at.get(name)?;
        self.boolean(&field, key)
    }

    pub fn field_u32(&mut self, at: &At, name: &str, key: &Key) -> Option<u32> {
        let field = at.get(name)?;
        self.u32(&field, key)
    }

    pub fn field_strings(&mut self, at: &At, name: &str, key: &Key) -> Vec<String> {
        match at.get(name) {
            Some(field) => self.strings(&field, key),
            None => Vec::new(),
        }
    }

    /// The items of the list field `name`, each with its bundle key.
    pub fn field_list<'n>(&mut self, at: &At<'n>, name: &str, key: &Key) -> Vec<(At<'n>, Key)> {
        let Some(field) = at.get(name) else {
            return Vec::new();
        };
        self.origins.record(key, &field);
        self.list(&field)
            .into_iter()
            .enumerate()
            .map(|(i, item)| (item, key.index(i)))
            .collect()
    }

    /// The bundle read, unless reading it found problems, with those problems and the origins.
    pub fn finish(self, bundle: Bundle) -> CheckedFile {
        let bundle = self.problems.is_empty().then_some(bundle);
        CheckedFile::new(bundle, self.problems, self.origins)
    }
}
