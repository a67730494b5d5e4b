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
    /// Istio's code, such as `IST0101` (or Trellis's own `TRL0001`, where Trellis differs).
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

/// Why the analyzers could not run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AnalyzeError {
    /// [`Options::only`] names no analyzer; `nearest` is the closest name, if any is close.
    #[error("unknown analyzer `{name}`{}", match nearest {
        Some(n) => format!(" (did you mean `{n}`?)"),
        None => " (see --list-analyzers)".to_string(),
    })]
    UnknownAnalyzer {
        name: String,
        nearest: Option<&'static str>,
    },
}

/// One step of a run and how long it took (the CLI prints these on request).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    pub step: Step,
    pub elapsed: std::time::Duration,
}

/// What a [`Timing`] measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Indexing the resources ([`Context::new`]).
    Context,
    /// One analyzer, by its Istio name.
    Analyzer(&'static str),
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Step::Context => f.write_str("(building the context)"),
            Step::Analyzer(name) => f.write_str(name),
        }
    }
}

/// What a run found, and how long each step took.
#[derive(Debug, Clone)]
pub struct Analysis {
    /// Sorted (most severe first) and without duplicates.
    pub messages: Vec<Message>,
    /// The context first, then each analyzer in the order they ran.
    pub timings: Vec<Timing>,
}

/// Runs the selected analyzers over `resources`. Unknown analyzer names are an error.
pub fn analyze(resources: &[Resource], options: &Options) -> Result<Vec<Message>, AnalyzeError> {
    analyze_with_timings(resources, options).map(|a| a.messages)
}

/// [`analyze`], also returning how long building the context and each analyzer took.
pub fn analyze_with_timings(
    resources: &[Resource],
    options: &Options,
) -> Result<Analysis, AnalyzeError> {
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
                    return Err(AnalyzeError::UnknownAnalyzer {
                        name: name.clone(),
                        nearest: trellis_api::check::rules::nearest(name, names),
                    });
                }
            }
        }
        picked
    };
    let mut timings = Vec::with_capacity(selected.len() + 1);
    let started = std::time::Instant::now();
    let cx = Context::new(resources, options);
    timings.push(Timing {
        step: Step::Context,
        elapsed: started.elapsed(),
    });
    let mut messages = Vec::new();
    for analyzer in selected {
        let mut reporter = Reporter {
            analyzer: analyzer.name(),
            messages: Vec::new(),
        };
        let started = std::time::Instant::now();
        analyzer.analyze(&cx, &mut reporter);
        timings.push(Timing {
            step: Step::Analyzer(analyzer.name()),
            elapsed: started.elapsed(),
        });
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
    Ok(Analysis { messages, timings })
}
