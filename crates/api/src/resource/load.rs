//! The loader: text (or bytes) in, [`Resource`]s and [`Diagnostic`]s out. It unpacks
//! multi-document files and `kind: List`, reads `apiVersion`, `kind` and `metadata`,
//! and hands each document to its kind's parser (`kinds.rs`). An unknown kind is kept
//! (analyzers read its raw JSON) with a warning; a mistyped one is an error.

use std::sync::Arc;

use super::diagnostic::{Diagnostic, typed};
use super::kinds::{self, KindEntry};
use super::{Resource, Source, Spec};
use crate::check::{Severity, rules};
use crate::meta::ObjectMeta;
use crate::yaml::{self, Node, Value};

/// Everything loaded from some input: the resources that typed cleanly, and what did not.
#[derive(Debug, Default)]
pub struct Loaded {
    pub resources: Vec<Resource>,
    pub diagnostics: Vec<Diagnostic>,
}

impl Loaded {
    /// Adds another file's result.
    pub fn extend(&mut self, other: Loaded) {
        self.resources.extend(other.resources);
        self.diagnostics.extend(other.diagnostics);
    }
}

/// Loads every resource in `text`, read from `file` (a path, or `-` for stdin).
pub fn load_str(file: &str, text: &str) -> Loaded {
    let file: Arc<str> = Arc::from(file);
    let mut out = Loaded::default();
    match yaml::parse(text) {
        Err(e) => out.diagnostics.push(Diagnostic {
            severity: Severity::Error,
            file,
            line: e.line.clamp(1, text.lines().count().max(1) as u32),
            resource: None,
            path: None,
            message: format!("YAML syntax error at column {}: {}", e.col, e.message),
        }),
        Ok(docs) => {
            for doc in docs {
                load_node(&file, Arc::new(doc.root), &mut out);
            }
        }
    }
    out
}

/// Loads raw bytes, refusing what is not UTF-8 text with the line of the first bad byte.
pub fn load_bytes(file: &str, bytes: &[u8]) -> Loaded {
    match std::str::from_utf8(bytes) {
        Ok(text) => load_str(file, text),
        Err(e) => {
            let line = bytes[..e.valid_up_to()]
                .iter()
                .filter(|b| **b == b'\n')
                .count() as u32
                + 1;
            Loaded {
                resources: Vec::new(),
                diagnostics: vec![Diagnostic {
                    severity: Severity::Error,
                    file: Arc::from(file),
                    line,
                    resource: None,
                    path: None,
                    message: "not UTF-8 text (is this a binary file?)".into(),
                }],
            }
        }
    }
}

fn load_node(file: &Arc<str>, node: Arc<Node>, out: &mut Loaded) {
    let error =
        |line: u32, resource: Option<String>, path: Option<String>, message: String| Diagnostic {
            severity: Severity::Error,
            file: file.clone(),
            line,
            resource,
            path,
            message,
        };
    if matches!(node.value, Value::Null) {
        return;
    }
    if !matches!(node.value, Value::Map(_)) {
        out.diagnostics.push(error(
            node.line,
            None,
            None,
            "a resource must be a mapping with `apiVersion`, `kind` and `metadata`".into(),
        ));
        return;
    }
    let api_version = node
        .get("apiVersion")
        .and_then(Node::as_str)
        .unwrap_or("")
        .to_string();
    let kind = node
        .get("kind")
        .and_then(Node::as_str)
        .unwrap_or("")
        .to_string();
    if api_version.is_empty() || kind.is_empty() {
        let missing = if kind.is_empty() {
            "kind"
        } else {
            "apiVersion"
        };
        out.diagnostics.push(error(
            node.line,
            None,
            Some(missing.into()),
            format!("`{missing}` is required (text)"),
        ));
        return;
    }
    if kind == "List" || kind.ends_with("List") && api_version == "v1" {
        match node.get("items").map(|n| &n.value) {
            Some(Value::Seq(items)) => {
                for item in items {
                    load_node(file, Arc::new(item.clone()), out);
                }
            }
            None | Some(Value::Null) => {}
            Some(_) => out.diagnostics.push(error(
                node.line_of("items"),
                Some(kind),
                Some("items".into()),
                "`items` must be a list of resources".into(),
            )),
        }
        return;
    }
    let raw = node.to_json();
    let meta: ObjectMeta = match raw.get("metadata") {
        None | Some(serde_json::Value::Null) => ObjectMeta::default(),
        Some(m) => match typed(m, "metadata") {
            Ok(meta) => meta,
            Err(e) => {
                out.diagnostics.push(error(
                    node.line_of(&e.path),
                    Some(kind),
                    Some(e.path),
                    e.message,
                ));
                return;
            }
        },
    };
    let (group, version) = api_version
        .rsplit_once('/')
        .unwrap_or(("", api_version.as_str()));
    let source = Source {
        file: file.clone(),
        line: node.line,
    };
    let mut resource = Resource {
        api_version: api_version.clone(),
        kind: kind.clone(),
        meta,
        spec: Spec::Ignored,
        source,
        node: node.clone(),
        raw: Arc::new(raw),
    };
    let entry = kinds::lookup(group, &kind);
    match entry {
        Some(entry) if !entry.versions.contains(&version) => {
            out.diagnostics.push(error(
                node.line_of("apiVersion"),
                Some(resource.key()),
                Some("apiVersion".into()),
                format!(
                    "`{api_version}` does not serve {kind} (valid: {})",
                    entry
                        .versions
                        .iter()
                        .map(|v| format!("{group}/{v}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
            return;
        }
        Some(KindEntry {
            parse: Some(parse), ..
        }) => match parse(&resource.raw) {
            Ok(spec) => resource.spec = spec,
            Err(e) => {
                out.diagnostics.push(error(
                    node.line_of(&e.path),
                    Some(resource.key()),
                    Some(e.path),
                    e.message,
                ));
                return;
            }
        },
        _ => {
            let hint = if entry.is_none() && group.ends_with("istio.io") {
                match rules::nearest(&kind, kinds::kinds_in_group(group)) {
                    Some(n) => format!(" (did you mean `{n}`?)"),
                    None => String::new(),
                }
            } else {
                String::new()
            };
            out.diagnostics.push(Diagnostic {
                severity: Severity::Warning,
                file: file.clone(),
                line: node.line,
                resource: Some(resource.key()),
                path: None,
                message: format!(
                    "kind {kind} ({api_version}) is not carried out by Trellis; ignored{hint}"
                ),
            });
        }
    }
    out.resources.push(resource);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_spec_field_suggests_the_nearest() {
        let loaded = load_str(
            "vs.yaml",
            "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: r\n  namespace: d\nspec:\n  hosts: [r]\n  htpp: []\n",
        );
        assert_eq!(loaded.diagnostics.len(), 1, "{:?}", loaded.diagnostics);
        let d = loaded.diagnostics[0].to_string();
        assert_eq!(
            d,
            "vs.yaml:8: VirtualService d/r: spec.htpp: unknown field `htpp` (did you mean `http`?)"
        );
    }

    #[test]
    fn null_fields_count_as_absent() {
        let loaded = load_str(
            "vs.yaml",
            "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: r, namespace: d}\nspec:\n  hosts: [r]\n  gateways:\n  http:\n  - route:\n    - destination: {host: r}\n    timeout:\n",
        );
        assert!(loaded.diagnostics.is_empty(), "{:?}", loaded.diagnostics);
    }

    #[test]
    fn unknown_kinds_are_kept_and_warned_about() {
        let loaded = load_str(
            "x.yaml",
            "apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w}\n",
        );
        assert_eq!(loaded.resources.len(), 1);
        assert_eq!(loaded.diagnostics[0].severity, Severity::Warning);
    }

    #[test]
    fn lists_are_unpacked() {
        let loaded = load_str(
            "l.yaml",
            "apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: Namespace\n  metadata: {name: a}\n- apiVersion: v1\n  kind: Namespace\n  metadata: {name: b}\n",
        );
        assert_eq!(loaded.resources.len(), 2);
        assert_eq!(loaded.resources[1].source.line, 7);
    }

    #[test]
    fn binary_garbage_is_refused_with_a_line() {
        let loaded = load_bytes("g.bin", b"a: 1\n\xff\xfe\x00");
        assert_eq!(loaded.diagnostics[0].line, 2);
    }
}
