//! Turning parsed documents into typed resources: the kind registry, the typed
//! `Spec` of each kind, and diagnostics that name file, line, resource and field.
//!
//! A document becomes a [`Resource`] when its kind is known and its fields have
//! the right names and types; semantic rules run later (see `validate`).

use std::sync::Arc;

use serde::de::DeserializeOwned;

use crate::check::{Checker, Severity, Validate, check_metadata, rules};
use crate::meta::ObjectMeta;
use crate::yaml::{self, Node, Value};
use crate::{kube, networking, security, telemetry};

/// Where a resource was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    pub file: Arc<str>,
    pub line: u32,
}

/// A typed resource and where it came from.
#[derive(Debug, Clone)]
pub struct Resource {
    pub api_version: String,
    pub kind: String,
    pub meta: ObjectMeta,
    pub spec: Spec,
    pub source: Source,
    /// The document as written, for mapping field paths back to lines.
    pub node: Arc<Node>,
    /// The document as JSON, for checks that read fields Trellis does not type.
    /// Shared, so copies of a resource (a config store's snapshots) are cheap.
    pub raw: Arc<serde_json::Value>,
}

/// The typed content of each kind Trellis understands.
#[derive(Debug, Clone)]
pub enum Spec {
    Gateway(Arc<networking::Gateway>),
    VirtualService(Arc<networking::VirtualService>),
    DestinationRule(Arc<networking::DestinationRule>),
    ServiceEntry(Arc<networking::ServiceEntry>),
    WorkloadEntry(Arc<networking::WorkloadEntry>),
    Sidecar(Arc<networking::Sidecar>),
    PeerAuthentication(Arc<security::PeerAuthentication>),
    AuthorizationPolicy(Arc<security::AuthorizationPolicy>),
    RequestAuthentication(Arc<security::RequestAuthentication>),
    Telemetry(Arc<telemetry::Telemetry>),
    Namespace(Arc<kube::Namespace>),
    Service(Arc<kube::Service>),
    Deployment(Arc<kube::Deployment>),
    Pod(Arc<kube::Pod>),
    ServiceAccount(Arc<kube::ServiceAccount>),
    Secret(Arc<kube::Secret>),
    /// A kind Trellis recognises but does not carry out (EnvoyFilter, WasmPlugin, unknown kinds).
    Ignored,
}

impl Resource {
    /// `Kind namespace/name` (or `Kind name` when no namespace is written).
    pub fn key(&self) -> String {
        match &self.meta.namespace {
            Some(ns) => format!("{} {}/{}", self.kind, ns, self.meta.name),
            None => format!("{} {}", self.kind, self.meta.name),
        }
    }

    /// The API group (`networking.istio.io`, or empty for core Kubernetes).
    pub fn group(&self) -> &str {
        self.api_version.rsplit_once('/').map_or("", |(g, _)| g)
    }

    /// The line of a field path such as `spec.http[0].route`.
    pub fn line_of(&self, path: &str) -> u32 {
        self.node.line_of(path)
    }

    /// Runs the kind's semantic validation; findings carry file, line, resource and field.
    pub fn validate(&self) -> Vec<Diagnostic> {
        let mut c = Checker::new("");
        check_metadata(&self.meta, &mut c);
        c.at("spec", |c| {
            let meta = &self.meta;
            match &self.spec {
                Spec::Gateway(s) => s.validate(meta, c),
                Spec::VirtualService(s) => s.validate(meta, c),
                Spec::DestinationRule(s) => s.validate(meta, c),
                Spec::ServiceEntry(s) => s.validate(meta, c),
                Spec::WorkloadEntry(s) => s.validate(meta, c),
                Spec::Sidecar(s) => s.validate(meta, c),
                Spec::PeerAuthentication(s) => s.validate(meta, c),
                Spec::AuthorizationPolicy(s) => s.validate(meta, c),
                Spec::RequestAuthentication(s) => s.validate(meta, c),
                Spec::Telemetry(s) => s.validate(meta, c),
                Spec::Namespace(_)
                | Spec::Service(_)
                | Spec::Deployment(_)
                | Spec::Pod(_)
                | Spec::ServiceAccount(_)
                | Spec::Secret(_)
                | Spec::Ignored => {}
            }
        });
        c.into_findings()
            .into_iter()
            .map(|f| Diagnostic {
                severity: f.severity,
                file: self.source.file.clone(),
                line: self.line_of(&f.path),
                resource: Some(self.key()),
                path: Some(f.path),
                message: f.message,
            })
            .collect()
    }
}

/// A problem tied to a place in the user's files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub severity: Severity,
    pub file: Arc<str>,
    pub line: u32,
    /// `Kind namespace/name` when the problem belongs to one resource.
    pub resource: Option<String>,
    /// The field path, such as `spec.http[0].timeout`.
    pub path: Option<String>,
    pub message: String,
}

impl std::fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.line == 0 {
            write!(f, "{}: ", self.file)?;
        } else {
            write!(f, "{}:{}: ", self.file, self.line)?;
        }
        if let Some(r) = &self.resource {
            write!(f, "{r}: ")?;
        }
        if let Some(p) = &self.path
            && !p.is_empty()
        {
            write!(f, "{p}: ")?;
        }
        f.write_str(&self.message)
    }
}

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

type Parse = fn(&serde_json::Value) -> Result<Spec, TypeError>;

struct KindEntry {
    group: &'static str,
    versions: &'static [&'static str],
    kind: &'static str,
    parse: Option<Parse>,
}

const NETWORKING: &[&str] = &["v1alpha3", "v1beta1", "v1"];
const SECURITY: &[&str] = &["v1beta1", "v1"];
const TELEMETRY: &[&str] = &["v1alpha1", "v1"];

macro_rules! istio_kind {
    ($group:expr, $versions:expr, $kind:ident, $module:ident) => {
        KindEntry {
            group: $group,
            versions: $versions,
            kind: stringify!($kind),
            parse: Some(|v| istio_spec::<$module::$kind>(v).map(|s| Spec::$kind(Arc::new(s)))),
        }
    };
}

macro_rules! kube_kind {
    ($group:expr, $kind:ident) => {
        KindEntry {
            group: $group,
            versions: &["v1"],
            kind: stringify!($kind),
            parse: Some(|v| kube_object::<kube::$kind>(v).map(|s| Spec::$kind(Arc::new(s)))),
        }
    };
}

const fn ignored(
    group: &'static str,
    versions: &'static [&'static str],
    kind: &'static str,
) -> KindEntry {
    KindEntry {
        group,
        versions,
        kind,
        parse: None,
    }
}

static KINDS: &[KindEntry] = &[
    istio_kind!("networking.istio.io", NETWORKING, Gateway, networking),
    istio_kind!(
        "networking.istio.io",
        NETWORKING,
        VirtualService,
        networking
    ),
    istio_kind!(
        "networking.istio.io",
        NETWORKING,
        DestinationRule,
        networking
    ),
    istio_kind!("networking.istio.io", NETWORKING, ServiceEntry, networking),
    istio_kind!("networking.istio.io", NETWORKING, WorkloadEntry, networking),
    istio_kind!("networking.istio.io", NETWORKING, Sidecar, networking),
    istio_kind!("security.istio.io", SECURITY, PeerAuthentication, security),
    istio_kind!("security.istio.io", SECURITY, AuthorizationPolicy, security),
    istio_kind!(
        "security.istio.io",
        SECURITY,
        RequestAuthentication,
        security
    ),
    istio_kind!("telemetry.istio.io", TELEMETRY, Telemetry, telemetry),
    kube_kind!("", Namespace),
    kube_kind!("", Service),
    kube_kind!("", Pod),
    kube_kind!("", ServiceAccount),
    kube_kind!("", Secret),
    kube_kind!("apps", Deployment),
    ignored("networking.istio.io", &["v1alpha3"], "EnvoyFilter"),
    ignored("networking.istio.io", NETWORKING, "WorkloadGroup"),
    ignored("networking.istio.io", &["v1beta1"], "ProxyConfig"),
    ignored("extensions.istio.io", &["v1alpha1"], "WasmPlugin"),
];

/// The kinds Trellis types, as `(group, kind)`.
pub fn known_kinds() -> impl Iterator<Item = (&'static str, &'static str)> {
    KINDS
        .iter()
        .filter(|k| k.parse.is_some())
        .map(|k| (k.group, k.kind))
}

/// A field with the wrong name or type, found while typing a document.
#[derive(Debug, Clone)]
pub struct TypeError {
    pub path: String,
    pub message: String,
}

fn istio_spec<T: DeserializeOwned>(object: &serde_json::Value) -> Result<T, TypeError> {
    if let Some(map) = object.as_object() {
        for key in map.keys() {
            if !matches!(
                key.as_str(),
                "apiVersion" | "kind" | "metadata" | "spec" | "status"
            ) {
                return Err(unknown_field_error(
                    key,
                    key,
                    &["apiVersion", "kind", "metadata", "spec", "status"],
                ));
            }
        }
    }
    let mut spec = match object.get("spec") {
        None | Some(serde_json::Value::Null) => serde_json::Value::Object(Default::default()),
        Some(s) => s.clone(),
    };
    drop_nulls(&mut spec);
    typed(&spec, "spec")
}

/// Kubernetes prunes `field: null` from custom resources before storing them, so
/// Istio never sees such fields; they are dropped here too.
fn drop_nulls(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            map.retain(|_, v| !v.is_null());
            map.values_mut().for_each(drop_nulls);
        }
        serde_json::Value::Array(items) => {
            for item in items {
                // `[2001:db8::]` reads as `{"2001:db8:": null}`; kept whole so that
                // address lists can read it back as text.
                let lone_key = item
                    .as_object()
                    .is_some_and(|m| m.len() == 1 && m.values().all(serde_json::Value::is_null));
                if !lone_key {
                    drop_nulls(item);
                }
            }
        }
        _ => {}
    }
}

fn kube_object<T: DeserializeOwned>(object: &serde_json::Value) -> Result<T, TypeError> {
    typed(object, "")
}

/// Deserializes `value`, reporting the failing field path under `prefix`.
pub fn typed<T: DeserializeOwned>(value: &serde_json::Value, prefix: &str) -> Result<T, TypeError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let inner = e.path().to_string();
        let path = join_path(prefix, if inner == "." { "" } else { &inner });
        let message = e.inner().to_string();
        explain(path, &message)
    })
}

fn join_path(prefix: &str, inner: &str) -> String {
    match (prefix.is_empty(), inner.is_empty()) {
        (_, true) => prefix.to_string(),
        (true, false) => inner.to_string(),
        (false, false) if inner.starts_with('[') => format!("{prefix}{inner}"),
        (false, false) => format!("{prefix}.{inner}"),
    }
}

/// Rewrites serde's messages into ones that say what would be valid.
fn explain(path: String, message: &str) -> TypeError {
    if let Some(rest) = message.strip_prefix("unknown field `") {
        let (name, expected) = rest.split_once('`').unwrap_or((rest, ""));
        let known = backticked(expected);
        let known: Vec<&str> = known.iter().map(String::as_str).collect();
        return unknown_field_error(&path, name, &known);
    }
    if let Some(rest) = message.strip_prefix("unknown variant `") {
        let (name, expected) = rest.split_once('`').unwrap_or((rest, ""));
        let known = backticked(expected);
        let hint = match rules::nearest(name, known.iter().map(String::as_str)) {
            Some(n) => format!(" (did you mean `{n}`? valid: {})", known.join(", ")),
            None => format!(" (valid: {})", known.join(", ")),
        };
        return TypeError {
            path,
            message: format!("unknown value `{name}`{hint}"),
        };
    }
    let message = message
        .replace("invalid type: ", "wrong type: ")
        .replace("a string", "text")
        .replace("a sequence", "a list")
        .replace("map", "mapping");
    TypeError { path, message }
}

/// `path` already ends with the unknown field's name.
fn unknown_field_error(path: &str, name: &str, known: &[&str]) -> TypeError {
    let path = path.to_string();
    let hint = match rules::nearest(name, known.iter().copied()) {
        Some(n) => format!(" (did you mean `{n}`?)"),
        None if known.is_empty() => " (this object has no fields)".to_string(),
        None => format!(" (known fields: {})", known.join(", ")),
    };
    TypeError {
        path,
        message: format!("unknown field `{name}`{hint}"),
    }
}

fn backticked(text: &str) -> Vec<String> {
    text.split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect()
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
    let entry = KINDS.iter().find(|k| k.group == group && k.kind == kind);
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
                match rules::nearest(
                    &kind,
                    KINDS.iter().filter(|k| k.group == group).map(|k| k.kind),
                ) {
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
