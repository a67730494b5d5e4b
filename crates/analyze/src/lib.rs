//! Cross-resource checks (`trellis analyze`) that report Istio's message codes
//! (IST0101 ReferencedResourceNotFound, ...), so that istioctl users recognise them.
//!
//! Each analyzer is a small pure function over a [`Context`] (every loaded resource,
//! indexed by kind) that reports [`Message`]s; none needs a running server.

pub mod analyzers;
mod context;
pub mod messages;

use std::sync::Arc;

pub use context::Context;
pub use messages::{Level, MessageType};
use trellis_api::Resource;

/// One finding of one analyzer, about one resource.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Message {
    /// Istio's code, such as `IST0101`.
    pub code: &'static str,
    /// Istio's message name, such as `ReferencedResourceNotFound`.
    #[serde(rename = "type")]
    pub message_name: &'static str,
    pub level: Level,
    pub kind: String,
    #[serde(rename = "apiVersion")]
    pub api_version: String,
    pub namespace: Option<String>,
    pub name: String,
    /// The human text.
    pub message: String,
    /// Which analyzer said it (`virtualservice.GatewayAnalyzer`).
    pub analyzer: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<Arc<str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<u32>,
}

impl Message {
    /// `Kind namespace/name` as istioctl prints it.
    pub fn resource(&self) -> String {
        match &self.namespace {
            Some(ns) if !ns.is_empty() => format!("{} {}/{}", self.kind, ns, self.name),
            _ => format!("{} {}", self.kind, self.name),
        }
    }
}

impl std::fmt::Display for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} [{}] ({}", self.level, self.code, self.resource())?;
        if let (Some(file), Some(line)) = (&self.file, self.line) {
            write!(f, " {file}:{line}")?;
        }
        write!(f, ") {}", self.message)
    }
}

/// What an analyzer is: a name (Istio's) and a check.
pub trait Analyzer: Sync {
    /// Istio's name for it, such as `virtualservice.GatewayAnalyzer`.
    fn name(&self) -> &'static str;
    /// One line on what it checks.
    fn description(&self) -> &'static str;
    /// False for analyzers that run only when named (Istio's alpha analyzers).
    fn enabled_by_default(&self) -> bool {
        true
    }
    /// Reports what it finds.
    fn analyze(&self, cx: &Context<'_>, out: &mut Reporter);
}

/// How resources are seen by the analyzers.
#[derive(Debug, Clone)]
pub struct Options {
    /// Namespace given to resources that name none (`None` keeps them without one).
    pub default_namespace: Option<String>,
    /// The namespace the control plane runs in.
    pub istio_namespace: String,
    /// Add the ingress gateway Pod and Service Istio installs, so that Gateways selecting
    /// `istio: ingressgateway` find a workload when only user files are analyzed.
    pub add_ingress_gateway: bool,
    /// Run only these analyzers (Istio names); empty runs the default set.
    pub only: Vec<String>,
    /// Treat each Deployment's pod template as a running, injected Pod, so that
    /// manifests analyze as the mesh they will become (Trellis's local mode runs
    /// them exactly so). Istio's own harness analyzes only the Pods it is given.
    pub pods_from_deployments: bool,
    /// Istio's mesh config (what `istioctl analyze --meshConfigFile` reads); when absent,
    /// analyzers look for the `istio` ConfigMap among the inputs.
    pub mesh_config: Option<serde_json::Value>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            default_namespace: Some("default".into()),
            istio_namespace: "istio-system".into(),
            add_ingress_gateway: true,
            only: Vec::new(),
            pods_from_deployments: true,
            mesh_config: None,
        }
    }
}

/// Collects messages for one analyzer run.
pub struct Reporter {
    analyzer: &'static str,
    messages: Vec<Message>,
}

impl Reporter {
    /// Reports `ty` about `resource`, at an optional field path (for the line).
    pub fn report(
        &mut self,
        ty: &MessageType,
        resource: &Resource,
        path: Option<&str>,
        text: impl Into<String>,
    ) {
        let line = match path {
            Some(p) => resource.line_of(p),
            None => resource.source.line,
        };
        let synthetic = resource.source.file.is_empty();
        self.messages.push(Message {
            code: ty.code,
            message_name: ty.name,
            level: ty.level,
            kind: resource.kind.clone(),
            api_version: resource.api_version.clone(),
            namespace: resource.meta.namespace.clone(),
            name: resource.meta.name.clone(),
            message: text.into(),
            analyzer: self.analyzer,
            file: (!synthetic).then(|| resource.source.file.clone()),
            line: (!synthetic).then_some(line),
        });
    }
}

/// Namespaces whose resources Istio's analysis drops.
pub const IGNORED_NAMESPACES: &[&str] = &[
    "kube-system",
    "kube-public",
    "kube-node-lease",
    "local-path-storage",
];

/// Runs the selected analyzers over `resources`. Unknown analyzer names are an error.
pub fn analyze(resources: &[Resource], options: &Options) -> Result<Vec<Message>, String> {
    let selected: Vec<&'static dyn Analyzer> = if options.only.is_empty() {
        analyzers::ALL
            .iter()
            .copied()
            .filter(|a| a.enabled_by_default())
            .collect()
    } else {
        let mut picked = Vec::new();
        for name in &options.only {
            match analyzers::ALL.iter().find(|a| a.name() == name) {
                Some(a) => picked.push(*a),
                None => {
                    let names = analyzers::ALL.iter().map(|a| a.name());
                    let hint = match trellis_api::check::rules::nearest(name, names) {
                        Some(n) => format!(" (did you mean `{n}`?)"),
                        None => " (see --list-analyzers)".to_string(),
                    };
                    return Err(format!("unknown analyzer `{name}`{hint}"));
                }
            }
        }
        picked
    };
    let started = std::time::Instant::now();
    let cx = Context::new(resources, options);
    if std::env::var_os("TRELLIS_ANALYZE_TIMING").is_some() {
        eprintln!(
            "{:>9.2} ms  (building the context)",
            started.elapsed().as_secs_f64() * 1e3
        );
    }
    let mut messages = Vec::new();
    let timing = std::env::var_os("TRELLIS_ANALYZE_TIMING").is_some();
    for analyzer in selected {
        let mut reporter = Reporter {
            analyzer: analyzer.name(),
            messages: Vec::new(),
        };
        let started = std::time::Instant::now();
        analyzer.analyze(&cx, &mut reporter);
        if timing {
            eprintln!(
                "{:>9.2} ms  {}",
                started.elapsed().as_secs_f64() * 1e3,
                analyzer.name()
            );
        }
        messages.extend(reporter.messages);
    }
    messages.sort_by(|a, b| {
        (b.level, a.code, a.resource(), &a.message).cmp(&(
            a.level,
            b.code,
            b.resource(),
            &b.message,
        ))
    });
    messages.dedup();
    Ok(messages)
}
