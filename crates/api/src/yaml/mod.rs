//! A YAML (and JSON) document tree that remembers where every node came from.
//!
//! The parser's event stream is folded into [`Node`]s carrying line and column, so
//! that a problem found later (by serde or by validation) can be reported at the
//! line the user wrote. Budgets on depth and size keep hostile input from
//! exhausting the stack or memory ("billion laughs", deep nesting). Writing YAML
//! back out is `emit`'s.

mod emit;

pub use emit::{to_yaml, to_yaml_documents};

use std::collections::HashMap;

use saphyr_parser::{Event, Parser, ScalarStyle, Span};

/// Deepest nesting accepted; far beyond any real manifest.
pub const MAX_DEPTH: usize = 128;
/// Most nodes one file may expand to, aliases included.
pub const MAX_NODES: usize = 2_000_000;

/// One YAML value with its position (1-based line, 1-based column).
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub value: Value,
    pub line: u32,
    pub col: u32,
}

/// The value of a node, resolved with the YAML 1.2 core schema.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    /// Keys are kept as text (`8080:` and `"8080":` are the same key), in document order.
    Map(Vec<(Key, Node)>),
}

/// A mapping key and where it was written.
#[derive(Debug, Clone, PartialEq)]
pub struct Key {
    pub text: String,
    pub line: u32,
    pub col: u32,
}

/// One document of a (possibly multi-document) file.
#[derive(Debug, Clone)]
pub struct Document {
    /// Line of the document's first node.
    pub line: u32,
    pub root: Node,
}

/// A syntax error, or a budget exceeded, at a position.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("line {line}, column {col}: {message}")]
pub struct SyntaxError {
    pub line: u32,
    pub col: u32,
    pub message: String,
}

impl Node {
    /// The child at `key` if this node is a mapping.
    pub fn get(&self, key: &str) -> Option<&Node> {
        match &self.value {
            Value::Map(entries) => entries.iter().find(|(k, _)| k.text == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// The text of a string scalar.
    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The deepest line known for a field path such as `spec.http[0].route[1].weight`.
    /// Walks as far as the path exists; for a mapping key, the key's own line.
    pub fn line_of(&self, path: &str) -> u32 {
        let mut node = self;
        let mut line = self.line;
        for segment in split_path(path) {
            match (segment, &node.value) {
                (PathSegment::Field(name), Value::Map(entries)) => {
                    match entries.iter().find(|(k, _)| k.text == name) {
                        Some((k, v)) => {
                            line = k.line;
                            node = v;
                        }
                        None => return line,
                    }
                }
                (PathSegment::Index(i), Value::Seq(items)) => match items.get(i) {
                    Some(v) => {
                        line = v.line;
                        node = v;
                    }
                    None => return line,
                },
                _ => return line,
            }
        }
        line
    }

    /// Converts to JSON for typed deserialization.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match &self.value {
            Value::Null => J::Null,
            Value::Bool(b) => J::Bool(*b),
            Value::Int(i) => J::from(*i),
            Value::Float(f) => serde_json::Number::from_f64(*f).map_or(J::Null, J::Number),
            Value::Str(s) => J::String(s.clone()),
            Value::Seq(items) => J::Array(items.iter().map(Node::to_json).collect()),
            Value::Map(entries) => {
                let mut map = serde_json::Map::with_capacity(entries.len());
                for (k, v) in entries {
                    map.insert(k.text.clone(), v.to_json());
                }
                J::Object(map)
            }
        }
    }
}

enum PathSegment<'a> {
    Field(&'a str),
    Index(usize),
}

fn split_path(path: &str) -> impl Iterator<Item = PathSegment<'_>> {
    path.split('.').filter(|s| !s.is_empty()).flat_map(|part| {
        let (name, rest) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        let field = (!name.is_empty()).then_some(PathSegment::Field(name));
        let indexes =
            rest.split(['[', ']'])
                .filter(|s| !s.is_empty())
                .map(|s| match s.parse::<usize>() {
                    Ok(i) => PathSegment::Index(i),
                    Err(_) => PathSegment::Field(s),
                });
        field.into_iter().chain(indexes)
    })
}

/// Parses every document of `text`. JSON is accepted as the YAML subset it is.
pub fn parse(text: &str) -> Result<Vec<Document>, SyntaxError> {
    let mut builder = Builder::default();
    let mut parser = Parser::new_from_str(text);
    let mut docs = Vec::new();
    while let Some(event) = parser.next_event() {
        let (event, span) = event.map_err(|e| SyntaxError {
            line: e.marker().line() as u32,
            col: e.marker().col() as u32 + 1,
            message: e.info().to_string(),
        })?;
        match event {
            Event::StreamStart | Event::DocumentStart(_) | Event::Nothing => {}
            Event::StreamEnd => break,
            Event::DocumentEnd => {
                if let Some(root) = builder.finish_document().filter(|r| r.value != Value::Null) {
                    docs.push(Document {
                        line: root.line,
                        root,
                    });
                }
            }
            other => builder.push(other, span)?,
        }
    }
    if let Some(root) = builder.finish_document().filter(|r| r.value != Value::Null) {
        docs.push(Document {
            line: root.line,
            root,
        });
    }
    Ok(docs)
}

enum Open {
    Seq(Node, usize),
    /// The mapping, its anchor, and a key waiting for its value.
    Map(Node, usize, Option<Key>),
}

#[derive(Default)]
struct Builder {
    stack: Vec<Open>,
    anchors: HashMap<usize, Node>,
    nodes: usize,
    done: Option<Node>,
}

impl Builder {
    fn finish_document(&mut self) -> Option<Node> {
        self.stack.clear();
        self.done.take()
    }

    fn push(&mut self, event: Event<'_>, span: Span) -> Result<(), SyntaxError> {
        let line = span.start.line() as u32;
        let col = span.start.col() as u32 + 1;
        let err = |message: String| SyntaxError { line, col, message };
        match event {
            Event::Scalar(text, style, anchor, tag) => {
                let tag = tag.map(|t| format!("{}{}", t.handle, t.suffix));
                let value = resolve_scalar(&text, style, tag.as_deref()).map_err(err)?;
                self.add(Node { value, line, col }, anchor)
            }
            Event::Alias(id) => {
                let node = self
                    .anchors
                    .get(&id)
                    .cloned()
                    .ok_or_else(|| err("alias to an unknown anchor".into()))?;
                self.nodes += count_nodes(&node);
                self.add(node, 0)
            }
            Event::SequenceStart(anchor, _) => self
                .open(Open::Seq(
                    Node {
                        value: Value::Seq(Vec::new()),
                        line,
                        col,
                    },
                    anchor,
                ))
                .map_err(err),
            Event::MappingStart(anchor, _) => self
                .open(Open::Map(
                    Node {
                        value: Value::Map(Vec::new()),
                        line,
                        col,
                    },
                    anchor,
                    None,
                ))
                .map_err(err),
            Event::SequenceEnd | Event::MappingEnd => {
                let (node, anchor) = match self.stack.pop() {
                    Some(Open::Seq(node, anchor)) | Some(Open::Map(node, anchor, None)) => {
                        (node, anchor)
                    }
                    Some(Open::Map(..)) => return Err(err("mapping key without a value".into())),
                    None => return Err(err("unbalanced end of collection".into())),
                };
                self.add(node, anchor)
            }
            _ => Ok(()),
        }
    }

    fn open(&mut self, open: Open) -> Result<(), String> {
        if self.stack.len() >= MAX_DEPTH {
            return Err(format!("nesting deeper than {MAX_DEPTH} levels"));
        }
        self.stack.push(open);
        Ok(())
    }

    fn add(&mut self, node: Node, anchor: usize) -> Result<(), SyntaxError> {
        self.nodes += 1;
        if self.nodes > MAX_NODES {
            return Err(SyntaxError {
                line: node.line,
                col: node.col,
                message: format!("document expands to more than {MAX_NODES} nodes (alias bomb?)"),
            });
        }
        if anchor != 0 {
            self.anchors.insert(anchor, node.clone());
        }
        match self.stack.last_mut() {
            None => self.done = Some(node),
            Some(Open::Seq(seq, _)) => {
                if let Value::Seq(items) = &mut seq.value {
                    items.push(node);
                }
            }
            Some(Open::Map(map, _, pending)) => match pending.take() {
                None => *pending = Some(key_of(&node)?),
                Some(key) => {
                    if let Value::Map(entries) = &mut map.value {
                        if entries.iter().any(|(k, _)| k.text == key.text) {
                            return Err(SyntaxError {
                                line: key.line,
                                col: key.col,
                                message: format!("duplicate key `{}`", key.text),
                            });
                        }
                        entries.push((key, node));
                    }
                }
            },
        }
        Ok(())
    }
}

fn count_nodes(node: &Node) -> usize {
    1 + match &node.value {
        Value::Seq(items) => items.iter().map(count_nodes).sum(),
        Value::Map(entries) => entries.iter().map(|(_, v)| count_nodes(v)).sum(),
        _ => 0,
    }
}

fn key_of(node: &Node) -> Result<Key, SyntaxError> {
    let text = match &node.value {
        Value::Str(s) => s.clone(),
        Value::Int(i) => i.to_string(),
        Value::Float(f) => f.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Null => String::new(),
        Value::Seq(_) | Value::Map(_) => {
            return Err(SyntaxError {
                line: node.line,
                col: node.col,
                message: "a mapping key must be a scalar".into(),
            });
        }
    };
    Ok(Key {
        text,
        line: node.line,
        col: node.col,
    })
}

/// YAML 1.2 core schema resolution for plain scalars; quoted scalars are strings.
fn resolve_scalar(text: &str, style: ScalarStyle, tag: Option<&str>) -> Result<Value, String> {
    match tag {
        Some("!!str") => return Ok(Value::Str(text.to_string())),
        Some("!!int") => {
            return parse_int(text)
                .map(Value::Int)
                .ok_or_else(|| format!("`{text}` is not an integer"));
        }
        Some("!!float") => {
            return parse_float(text)
                .map(Value::Float)
                .ok_or_else(|| format!("`{text}` is not a number"));
        }
        Some("!!bool") => {
            return parse_bool(text)
                .map(Value::Bool)
                .ok_or_else(|| format!("`{text}` is not a boolean"));
        }
        Some("!!null") => return Ok(Value::Null),
        _ => {}
    }
    if style != ScalarStyle::Plain {
        return Ok(Value::Str(text.to_string()));
    }
    if matches!(text, "" | "~" | "null" | "Null" | "NULL") {
        return Ok(Value::Null);
    }
    if let Some(b) = parse_bool(text) {
        return Ok(Value::Bool(b));
    }
    if let Some(i) = parse_int(text) {
        return Ok(Value::Int(i));
    }
    if let Some(f) = parse_float(text) {
        return Ok(Value::Float(f));
    }
    Ok(Value::Str(text.to_string()))
}

fn parse_bool(text: &str) -> Option<bool> {
    match text {
        "true" | "True" | "TRUE" => Some(true),
        "false" | "False" | "FALSE" => Some(false),
        _ => None,
    }
}

fn parse_int(text: &str) -> Option<i64> {
    let (neg, digits) = match text.as_bytes().first()? {
        b'-' => (true, &text[1..]),
        b'+' => (false, &text[1..]),
        _ => (false, text),
    };
    let value = if let Some(hex) = digits.strip_prefix("0x") {
        i64::from_str_radix(hex, 16).ok()?
    } else if let Some(oct) = digits.strip_prefix("0o") {
        i64::from_str_radix(oct, 8).ok()?
    } else if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        digits.parse().ok()?
    } else {
        return None;
    };
    Some(if neg { -value } else { value })
}

fn parse_float(text: &str) -> Option<f64> {
    match text {
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => return Some(f64::INFINITY),
        "-.inf" | "-.Inf" | "-.INF" => return Some(f64::NEG_INFINITY),
        ".nan" | ".NaN" | ".NAN" => return Some(f64::NAN),
        _ => {}
    }
    // The core schema's float pattern: digits, one optional dot, optional exponent.
    let body = text.strip_prefix(['-', '+']).unwrap_or(text);
    let (mantissa, exponent) = match body.find(['e', 'E']) {
        Some(i) => (&body[..i], Some(&body[i + 1..])),
        None => (body, None),
    };
    let mantissa_ok = !mantissa.is_empty()
        && mantissa != "."
        && mantissa.bytes().filter(|b| *b == b'.').count() <= 1
        && mantissa.bytes().all(|b| b.is_ascii_digit() || b == b'.');
    let exponent_ok = exponent.is_none_or(|e| {
        let e = e.strip_prefix(['-', '+']).unwrap_or(e);
        !e.is_empty() && e.bytes().all(|b| b.is_ascii_digit())
    });
    if mantissa_ok && exponent_ok {
        text.parse().ok()
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(text: &str) -> Node {
        parse(text).expect("parses").remove(0).root
    }

    #[test]
    fn scalars_follow_the_core_schema() {
        let n = one("a: 1\nb: 1.5\nc: true\nd: yes\ne: ~\nf: '1'\ng: 5s\nh: 0x1f\n");
        assert_eq!(n.get("a").map(|n| &n.value), Some(&Value::Int(1)));
        assert_eq!(n.get("b").map(|n| &n.value), Some(&Value::Float(1.5)));
        assert_eq!(n.get("c").map(|n| &n.value), Some(&Value::Bool(true)));
        assert_eq!(n.get("d").and_then(Node::as_str), Some("yes"));
        assert_eq!(n.get("e").map(|n| &n.value), Some(&Value::Null));
        assert_eq!(n.get("f").and_then(Node::as_str), Some("1"));
        assert_eq!(n.get("g").and_then(Node::as_str), Some("5s"));
        assert_eq!(n.get("h").map(|n| &n.value), Some(&Value::Int(31)));
    }

    #[test]
    fn lines_are_found_by_field_path() {
        let n = one("spec:\n  http:\n  - route:\n    - weight: 90\n    - weight: 10\n");
        assert_eq!(n.line_of("spec.http[0].route[1].weight"), 5);
        assert_eq!(n.line_of("spec.http[0].route[1].missing"), 5);
        assert_eq!(n.line_of("spec.http"), 2);
    }

    #[test]
    fn multi_document_and_flow_style() {
        let docs = parse("a: 1\n---\n# comment\n{b: [1, 2], c: {d: e}}\n---\n").expect("parses");
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[1].root.line, 4);
        assert_eq!(
            docs[1].root.to_json(),
            serde_json::json!({"b": [1, 2], "c": {"d": "e"}})
        );
    }

    #[test]
    fn json_is_accepted() {
        let n = one(r#"{"kind": "Gateway", "spec": {"servers": [{"port": {"number": 80}}]}}"#);
        assert_eq!(n.to_json()["spec"]["servers"][0]["port"]["number"], 80);
    }

    #[test]
    fn alias_bomb_is_refused() {
        let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..12 {
            let prev = i - 1;
            text.push_str(&format!("a{i}: &a{i} [*a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}]\n"));
        }
        let err = parse(&text).expect_err("must refuse");
        assert!(err.message.contains("alias bomb"), "{err}");
    }

    #[test]
    fn deep_nesting_is_refused() {
        let text = "[".repeat(10_000);
        let err = parse(&text).expect_err("must refuse");
        assert!(
            err.message.contains("nesting") || err.message.contains("recursion"),
            "{err}"
        );
    }

    #[test]
    fn duplicate_keys_are_reported_with_their_line() {
        let err = parse("a: 1\nb: 2\na: 3\n").expect_err("must refuse");
        assert_eq!(err.line, 3);
    }
}
