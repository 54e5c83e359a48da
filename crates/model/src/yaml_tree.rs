//! Builds the positioned value tree from YAML parser events.

use std::collections::HashMap;

use serde_saphyr::granit_parser::{Event, Marker, Parser, ScalarStyle};

use crate::tree::{Entry, Node, SyntaxError, Value};

/// Alias expansion beyond this many nodes is refused (the "billion laughs" document).
const MAX_NODES: usize = 100_000;
/// Deeper nesting than this is refused.
const MAX_DEPTH: usize = 200;

enum Frame {
    Seq {
        items: Vec<Node>,
        position: (usize, usize),
        anchor: usize,
    },
    Map {
        entries: Vec<Entry>,
        key: Option<(String, (usize, usize))>,
        position: (usize, usize),
        anchor: usize,
    },
}

/// The document's root, or `None` when the text holds no document.
pub(crate) fn parse(text: &str) -> Result<Option<Node>, SyntaxError> {
    let mut stack: Vec<Frame> = Vec::new();
    let mut anchors: HashMap<usize, Node> = HashMap::new();
    let mut root: Option<Node> = None;
    let mut documents = 0;
    let mut nodes = 0usize;
    for event in Parser::new_from_str(text) {
        let (event, span) = event.map_err(|e| SyntaxError {
            message: e.info(),
            position: position(e.marker()),
        })?;
        let here = position(&span.start);
        let node = match event {
            Event::DocumentStart(..) => {
                documents += 1;
                if documents > 1 {
                    return Err(SyntaxError {
                        message: "expected one YAML document, found a second one".into(),
                        position: here,
                    });
                }
                continue;
            }
            Event::Scalar(text, style, anchor, _) => {
                let value = match style {
                    ScalarStyle::Plain if is_null(&text) => Value::Null,
                    ScalarStyle::Plain => Value::Plain(text.into_owned()),
                    _ => Value::String(text.into_owned()),
                };
                let node = Node {
                    value,
                    position: here,
                };
                if anchor != 0 {
                    anchors.insert(anchor, node.clone());
                }
                node
            }
            Event::Alias(id) => {
                let node = anchors.get(&id).cloned().ok_or_else(|| SyntaxError {
                    message: "alias to an unknown anchor".into(),
                    position: here,
                })?;
                nodes += node.size();
                if nodes > MAX_NODES {
                    return Err(SyntaxError {
                        message: format!("the document expands to more than {MAX_NODES} values"),
                        position: here,
                    });
                }
                Node {
                    position: here,
                    ..node
                }
            }
            Event::SequenceStart(_, anchor, _) | Event::MappingStart(_, anchor, _) => {
                if stack.len() >= MAX_DEPTH {
                    return Err(SyntaxError {
                        message: format!("nesting deeper than {MAX_DEPTH} levels"),
                        position: here,
                    });
                }
                stack.push(if matches!(event, Event::SequenceStart(..)) {
                    Frame::Seq {
                        items: Vec::new(),
                        position: here,
                        anchor,
                    }
                } else {
                    Frame::Map {
                        entries: Vec::new(),
                        key: None,
                        position: here,
                        anchor,
                    }
                });
                continue;
            }
            Event::SequenceEnd | Event::MappingEnd => {
                let Some(frame) = stack.pop() else { continue };
                let (node, anchor) = match frame {
                    Frame::Seq {
                        items,
                        position,
                        anchor,
                    } => (
                        Node {
                            value: Value::Seq(items),
                            position,
                        },
                        anchor,
                    ),
                    Frame::Map {
                        entries,
                        position,
                        anchor,
                        ..
                    } => (
                        Node {
                            value: Value::Map(entries),
                            position,
                        },
                        anchor,
                    ),
                };
                if anchor != 0 {
                    anchors.insert(anchor, node.clone());
                }
                node
            }
            _ => continue,
        };
        nodes += 1;
        if nodes > MAX_NODES {
            return Err(SyntaxError {
                message: format!("the document expands to more than {MAX_NODES} values"),
                position: node.position,
            });
        }
        match stack.last_mut() {
            None => root = Some(node),
            Some(Frame::Seq { items, .. }) => items.push(node),
            Some(Frame::Map { entries, key, .. }) => match key.take() {
                Some((key, key_position)) => {
                    // An empty value has no text of its own to point at; its key does.
                    let value = match node.value {
                        Value::Null => Node {
                            position: key_position,
                            ..node
                        },
                        _ => node,
                    };
                    entries.push(Entry {
                        key,
                        key_position,
                        value,
                    });
                }
                None => {
                    let name = match &node.value {
                        Value::Plain(s) | Value::String(s) | Value::Number(s) => s.clone(),
                        Value::Bool(b) => b.to_string(),
                        Value::Null => String::new(),
                        Value::Seq(_) | Value::Map(_) => {
                            return Err(SyntaxError {
                                message: "a mapping key must be a plain string".into(),
                                position: node.position,
                            });
                        }
                    };
                    if name == "<<" {
                        return Err(SyntaxError {
                            message: "merge keys (`<<`) are not supported".into(),
                            position: node.position,
                        });
                    }
                    if entries.iter().any(|e| e.key == name) {
                        return Err(SyntaxError {
                            message: format!("duplicate key `{name}`"),
                            position: node.position,
                        });
                    }
                    *key = Some((name, node.position));
                }
            },
        }
    }
    Ok(root)
}

fn is_null(text: &str) -> bool {
    matches!(text, "" | "~" | "null" | "Null" | "NULL")
}

fn position(marker: &Marker) -> (usize, usize) {
    (marker.line(), marker.col() + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str, expected: Result<&str, (&str, (usize, usize))>) {
        match (parse(text), expected) {
            (Ok(node), Ok(json)) => {
                let want: serde_json::Value = serde_json::from_str(json).expect("test json");
                assert_eq!(node.map(|n| n.to_json()), Some(want), "{text}");
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
    fn reads_yaml() {
        check(
            "a: 1\nb: [x, 'y', ~]\n",
            Ok(r#"{"a": 1, "b": ["x", "y", null]}"#),
        );
        check(
            "a: &x {k: v}\nb: *x\n",
            Ok(r#"{"a": {"k": "v"}, "b": {"k": "v"}}"#),
        );
        check("a: 1\na: 2\n", Err(("duplicate key `a`", (2, 1))));
        check(
            "a: 1\n---\nb: 2\n",
            Err(("expected one YAML document, found a second one", (2, 1))),
        );
        check(
            "? [a]\n: 1\n",
            Err(("a mapping key must be a plain string", (1, 3))),
        );
    }

    #[test]
    fn positions_follow_the_text() {
        let root = parse("a:\n  b:\n    - 7\n").ok().flatten().expect("tree");
        let Value::Map(top) = &root.value else {
            panic!("map")
        };
        let Value::Map(inner) = &top[0].value.value else {
            panic!("map")
        };
        let Value::Seq(items) = &inner[0].value.value else {
            panic!("seq")
        };
        assert_eq!(items[0].position, (3, 7));
    }
}
