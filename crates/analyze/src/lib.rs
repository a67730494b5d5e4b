//! Cross-resource checks (`trellis analyze`) that report Istio's message codes
//! (IST0101 ReferencedResourceNotFound, ...), so that istioctl users recognise them.
//!
//! Each analyzer is a small pure function over a [`Context`] (every loaded resource,
//! indexed by kind) that reports [`Message`]s; none needs a running server.

pub mod analyzers;
#[cfg(feature = "testing")]
pub mod conformance;
mod context;
pub mod messages;
mod report;
mod templates;

pub use context::{Context, is_cluster_scoped};
pub use messages::{Level, MessageType};
pub use report::{Message, Reporter};
pub use templates::Origin;
use trellis_api::Resource;

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
    /// Which Deployments' pod templates are analyzed as running, injected Pods.
    /// Messages about such a pod are reported on its Deployment (see [`Reporter`]).
    pub pods_from_deployments: TemplatePods,
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
            pods_from_deployments: TemplatePods::Always,
            mesh_config: None,
        }
    }
}

/// Which Deployments' pod templates become pods for the analyzers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TemplatePods {
    /// None: only the Pods among the inputs count (Istio's own harness; the status
    /// writer, which sees a cluster's Pods and no Deployments).
    Never,
    /// Every Deployment's, so that manifests analyze as the mesh they will become
    /// (Trellis's local mode runs them exactly so).
    Always,
    /// A Deployment's when none of its Pods is among the inputs (read from a
    /// cluster: running Pods speak for themselves, and a Deployment not rolled out
    /// or scaled to zero is analyzed from its template).
    WithoutPods,
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
        let mut reporter = Reporter::new(analyzer.name(), &cx);
        let started = std::time::Instant::now();
        analyzer.analyze(&cx, &mut reporter);
        timings.push(Timing {
            step: Step::Analyzer(analyzer.name()),
            elapsed: started.elapsed(),
        });
        messages.extend(reporter.finish());
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
