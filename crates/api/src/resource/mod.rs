//! Turning parsed documents into typed resources. A document becomes a [`Resource`]
//! when its kind is known (`kinds`: the registry of groups, versions and kinds) and
//! its fields have the right names and types; what does not is a [`Diagnostic`]
//! (`diagnostic`) naming file, line, resource and field. `load` walks the documents.
//! Semantic rules run later, from [`Resource::validate`].

mod diagnostic;
mod kinds;
mod load;

use std::sync::Arc;

pub use diagnostic::{Diagnostic, TypeError, typed};
pub use kinds::{IstioKind, istio_kinds, known_kinds};
pub use load::{Loaded, load_bytes, load_str};

use crate::check::{Checker, Validate, check_metadata};
use crate::meta::ObjectMeta;
use crate::yaml::Node;
use crate::{kube, networking, security, telemetry};

/// Where a resource was written. An object read from an API server (a cluster, the
/// control plane) names its origin in `file` (`cluster:virtualservices/ns/name`) and
/// has line 0: there is no file to point at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    pub file: Arc<str>,
    pub line: u32,
}

impl Source {
    /// Whether `file` and `line` point at a file the user can open.
    pub fn in_file(&self) -> bool {
        !self.file.is_empty() && self.line > 0
    }
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
    EndpointSlice(Arc<kube::EndpointSlice>),
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
                | Spec::EndpointSlice(_)
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
