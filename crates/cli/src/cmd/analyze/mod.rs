//! `trellis analyze`: cross-resource checks with Istio's message codes, over files,
//! a cluster, or files on top of a cluster (`sources.rs` decides which, `live.rs`
//! reads a running mesh, `scope.rs` picks the messages shown), printed as istioctl
//! prints them.

mod live;
mod scope;
mod sources;

use std::io::Write;
use std::path::PathBuf;

use trellis_analyze::{Level, Options, TemplatePods, analyzers};

use crate::output::{self, Format};
use sources::{Input, Origin};

/// Exit code when an analyzer reports an Error (or the input cannot be read).
pub const ERRORS_FOUND: i32 = 1;
/// Exit code for bad usage, or when nothing could be analyzed (no cluster reachable).
pub const USAGE: i32 = 2;

#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  trellis analyze -n production                  the cluster, messages about namespace production
  trellis analyze -A                             the cluster, every namespace
  trellis analyze -f new.yaml                    new.yaml as if applied to the cluster (kubeconfig)
  trellis analyze -f manifests/ --use-kube=false the files alone
  trellis analyze -f app.yaml --analyzer virtualservice.GatewayAnalyzer
  trellis analyze --list-analyzers               names you can pass to --analyzer
  trellis analyze -f manifests/ -o json | jq '.[] | select(.level == \"Error\")'

Without -f, the cluster is read through the kubeconfig kubectl would use (--kubeconfig,
--context, $KUBECONFIG, ~/.kube/config): every resource is analyzed, and messages about
resources in the selected namespace (-n, default the context's) are shown, or in every
namespace with -A. With no kubeconfig, the local mesh `trellis up` runs is analyzed
(what its control plane holds, --control-plane; -n default `default`), else, in a pod,
its cluster through the service account.

With -f and a kubeconfig (--kubeconfig, --context, $KUBECONFIG or ~/.kube/config), the
files are analyzed as if applied on top of what the cluster holds (a file's resource
replaces the cluster's of the same kind, namespace and name); messages are shown for the
selected namespace and the namespaces the files write to. With -f and no kubeconfig, or
with --use-kube=false, the files are analyzed alone, no cluster needed, and every message
is shown (-n then only names the namespace of resources that give none).

Messages use Istio's codes (IST0101 ReferencedResourceNotFound, ...), so istioctl's
documentation applies. A message about a resource from a cluster names it without a
file. Exit codes: 0 no errors (warnings and infos allowed), 1 an Error was found, 2 bad
usage, or no cluster could be read.")]
pub struct Args {
    /// Files or directories to analyze; `-` reads standard input.
    #[arg(short = 'f', long = "filename", value_name = "PATH")]
    pub files: Vec<PathBuf>,
    /// Read the cluster (`--use-kube=false`: analyze -f files alone). Default: read it
    /// without -f, and with -f when a kubeconfig is found.
    #[arg(
        long = "use-kube",
        value_name = "BOOL",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true"
    )]
    pub use_kube: Option<bool>,
    /// The kubeconfig to read the cluster through (default: as kubectl finds it).
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use (default: its current context).
    #[arg(long, value_name = "NAME")]
    pub context: Option<String>,
    /// Output format.
    #[arg(short, long, value_enum, default_value = "text")]
    pub output: Format,
    /// Run only this analyzer (repeatable); Istio's names, see --list-analyzers.
    #[arg(long = "analyzer", value_name = "NAME")]
    pub analyzers: Vec<String>,
    /// List the analyzers and exit.
    #[arg(long)]
    pub list_analyzers: bool,
    /// The namespace whose messages are shown when a cluster is read (default: the
    /// kubeconfig context's, else `default`); also the namespace of file resources
    /// that name none (default `default` for files alone).
    #[arg(short, long, value_name = "NS")]
    pub namespace: Option<String>,
    /// Show messages about every namespace of the cluster.
    #[arg(short = 'A', long, conflicts_with = "namespace")]
    pub all_namespaces: bool,
    /// The namespace the control plane runs in.
    #[arg(long, default_value = "istio-system")]
    pub istio_namespace: String,
    /// Istio's mesh config (YAML), as `istioctl analyze --meshConfigFile` takes it
    /// (default: the `mesh` key of the cluster's `istio` ConfigMap, if any).
    #[arg(
        long = "meshConfigFile",
        visible_alias = "mesh-config-file",
        value_name = "FILE"
    )]
    pub mesh_config_file: Option<PathBuf>,
    /// Lowest level to show.
    #[arg(long, value_enum, default_value = "info")]
    pub output_threshold: Threshold,
    /// The local mesh analyzed when there is neither -f nor a kubeconfig.
    #[command(flatten)]
    pub control_plane: crate::cmd::control::Target,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Threshold {
    Info,
    Warning,
    Error,
}

fn error_line(message: &dyn std::fmt::Display) {
    let _ = writeln!(
        anstream::stderr(),
        "{s}error{s:#}: {message}",
        s = output::ERROR
    );
}

/// Runs the analyzers and prints their messages.
pub fn run(args: &Args) -> i32 {
    if args.list_analyzers {
        return list(args.output);
    }
    let mesh_config = match &args.mesh_config_file {
        None => None,
        Some(path) => match read_mesh_config(path) {
            Ok(config) => config,
            Err(e) => {
                error_line(&format!("{}: {e}", path.display()));
                return USAGE;
            }
        },
    };
    let input = match sources::read(args) {
        Ok(input) => input,
        Err(e) => {
            error_line(&e);
            return USAGE;
        }
    };
    for d in &input.problems {
        error_line(d);
    }
    if let (Some(url), false) = (&input.read_from, args.files.is_empty()) {
        let _ = writeln!(
            anstream::stderr(),
            "analyzing the files on top of what {url} holds (--use-kube=false: the files alone)"
        );
    }
    // Files alone get the library's defaults (the ingress gateway's stand-ins,
    // Deployment templates as injected pods): the corpus tests measure exactly these,
    // and a local mesh runs them exactly so. A cluster has its own gateways and Pods;
    // a Deployment without Pods is still analyzed from its template.
    let cluster = input.origin == Origin::Cluster;
    let options = Options {
        default_namespace: Some(input.default_namespace.clone()),
        istio_namespace: args.istio_namespace.clone(),
        mesh_config,
        only: args.analyzers.clone(),
        add_ingress_gateway: !cluster,
        pods_from_deployments: if cluster {
            TemplatePods::WithoutPods
        } else {
            TemplatePods::Always
        },
    };
    let messages = match run_analyzers(&input.resources, &options) {
        Ok(m) => m,
        Err(e) => {
            error_line(&e);
            return USAGE;
        }
    };
    let scoped: Vec<_> = messages.iter().filter(|m| input.scope.shows(m)).collect();
    print(args, &input, &scoped);
    if !input.problems.is_empty() || scoped.iter().any(|m| m.level == Level::Error) {
        ERRORS_FOUND
    } else {
        0
    }
}

fn read_mesh_config(path: &std::path::Path) -> Result<Option<serde_json::Value>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    let docs =
        trellis_api::yaml::parse(&text).map_err(|e| format!("line {}: {}", e.line, e.message))?;
    Ok(docs.into_iter().next().map(|d| d.root.to_json()))
}

fn print(args: &Args, input: &Input, scoped: &[&trellis_analyze::Message]) {
    let threshold = match args.output_threshold {
        Threshold::Info => Level::Info,
        Threshold::Warning => Level::Warning,
        Threshold::Error => Level::Error,
    };
    let shown: Vec<_> = scoped.iter().filter(|m| m.level >= threshold).collect();
    match args.output {
        Format::Text => {
            let mut out = anstream::stdout();
            for m in &shown {
                let style = match m.level {
                    Level::Error => output::ERROR,
                    Level::Warning => output::WARNING,
                    Level::Info => output::INFO,
                };
                let _ = writeln!(
                    out,
                    "{style}{}{style:#} [{}] ({}) {}",
                    m.level,
                    m.code,
                    location(m),
                    m.message
                );
            }
            if shown.is_empty() && input.problems.is_empty() {
                let what = match input.origin {
                    Origin::Files => format!("{} resources", input.resources.len()),
                    _ => input.scope.describe(),
                };
                let _ = writeln!(
                    out,
                    "{s}✔{s:#} No validation issues found when analyzing {what}.",
                    s = output::OK
                );
            }
        }
        Format::Json => {
            let text = serde_json::to_string_pretty(&shown).unwrap_or_default();
            let _ = writeln!(anstream::stdout(), "{text}");
        }
        Format::Yaml => {
            let value = serde_json::to_value(&shown).unwrap_or_default();
            let _ = write!(anstream::stdout(), "{}", output::to_yaml(&value));
        }
    }
}

/// Runs the analyzers; with `TRELLIS_ANALYZE_TIMING` set, also prints how long building
/// the context and each analyzer took, on standard error.
pub fn run_analyzers(
    resources: &[trellis_api::Resource],
    options: &Options,
) -> Result<Vec<trellis_analyze::Message>, trellis_analyze::AnalyzeError> {
    let analysis = trellis_analyze::analyze_with_timings(resources, options)?;
    if std::env::var_os("TRELLIS_ANALYZE_TIMING").is_some() {
        let mut err = anstream::stderr();
        for t in &analysis.timings {
            let _ = writeln!(err, "{:>9.2} ms  {}", t.elapsed.as_secs_f64() * 1e3, t.step);
        }
    }
    Ok(analysis.messages)
}

fn location(m: &trellis_analyze::Message) -> String {
    match (&m.file, m.line) {
        (Some(file), Some(line)) => format!("{} {file}:{line}", m.resource()),
        _ => m.resource(),
    }
}

fn list(format: Format) -> i32 {
    let rows: Vec<serde_json::Value> = analyzers::ALL
        .iter()
        .map(|a| serde_json::json!({"name": a.name(), "default": a.enabled_by_default(), "description": a.description()}))
        .collect();
    let mut out = anstream::stdout();
    match format {
        Format::Text => {
            let width = analyzers::ALL
                .iter()
                .map(|a| a.name().len())
                .max()
                .unwrap_or(0);
            for a in analyzers::ALL {
                let note = if a.enabled_by_default() {
                    ""
                } else {
                    " (only when named)"
                };
                let _ = writeln!(out, "{:width$}  {}{note}", a.name(), a.description());
            }
        }
        Format::Json => {
            let _ = writeln!(
                out,
                "{}",
                serde_json::to_string_pretty(&rows).unwrap_or_default()
            );
        }
        Format::Yaml => {
            let _ = write!(out, "{}", output::to_yaml(&serde_json::Value::Array(rows)));
        }
    }
    0
}
