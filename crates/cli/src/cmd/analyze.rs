//! `trellis analyze`: cross-resource checks with Istio's message codes.

use std::io::Write;
use std::path::PathBuf;

use trellis_analyze::{Level, Options, analyzers};
use trellis_api::Severity;

use crate::output::{self, Format};

/// Exit code when an analyzer reports an Error (or the input cannot be read).
pub const ERRORS_FOUND: i32 = 1;

#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  trellis analyze -f manifests/                        every default analyzer
  trellis analyze -f app.yaml --analyzer virtualservice.GatewayAnalyzer
  trellis analyze --list-analyzers                     names you can pass to --analyzer
  trellis analyze -f manifests/ -o json | jq '.[] | select(.level == \"Error\")'

Messages use Istio's codes (IST0101 ReferencedResourceNotFound, ...), so istioctl's
documentation applies. Exit codes: 0 no errors (warnings and infos allowed), 1 an
Error was found, 2 bad usage.")]
pub struct Args {
    /// Files or directories to analyze; `-` reads standard input.
    #[arg(
        short = 'f',
        long = "filename",
        value_name = "PATH",
        required_unless_present = "list_analyzers"
    )]
    pub files: Vec<PathBuf>,
    /// Output format.
    #[arg(short, long, value_enum, default_value = "text")]
    pub output: Format,
    /// Run only this analyzer (repeatable); Istio's names, see --list-analyzers.
    #[arg(long = "analyzer", value_name = "NAME")]
    pub analyzers: Vec<String>,
    /// List the analyzers and exit.
    #[arg(long)]
    pub list_analyzers: bool,
    /// Namespace for resources that name none.
    #[arg(short, long, default_value = "default")]
    pub namespace: String,
    /// The namespace the control plane runs in.
    #[arg(long, default_value = "istio-system")]
    pub istio_namespace: String,
    /// Istio's mesh config (YAML), as `istioctl analyze --meshConfigFile` takes it.
    #[arg(
        long = "meshConfigFile",
        visible_alias = "mesh-config-file",
        value_name = "FILE"
    )]
    pub mesh_config_file: Option<PathBuf>,
    /// Lowest level to show.
    #[arg(long, value_enum, default_value = "info")]
    pub output_threshold: Threshold,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Threshold {
    Info,
    Warning,
    Error,
}

/// Runs the analyzers and prints their messages.
pub fn run(args: &Args) -> i32 {
    if args.list_analyzers {
        return list(args.output);
    }
    let (loaded, _files) = crate::inputs::load(&args.files);
    let mut err = anstream::stderr();
    let load_errors: Vec<_> = loaded
        .diagnostics
        .iter()
        .filter(|d| d.severity == Severity::Error)
        .collect();
    for d in &load_errors {
        let _ = writeln!(err, "{s}error{s:#}: {d}", s = output::ERROR);
    }
    let mesh_config = match &args.mesh_config_file {
        None => None,
        Some(path) => match std::fs::read_to_string(path)
            .map_err(|e| e.to_string())
            .and_then(|text| {
                trellis_api::yaml::parse(&text)
                    .map_err(|e| format!("line {}: {}", e.line, e.message))
            }) {
            Ok(docs) => docs.into_iter().next().map(|d| d.root.to_json()),
            Err(e) => {
                let _ = writeln!(
                    err,
                    "{s}error{s:#}: {}: {e}",
                    path.display(),
                    s = output::ERROR
                );
                return 2;
            }
        },
    };
    // The library's defaults (the ingress gateway's stand-ins, Deployment templates as
    // injected pods) are what users get; the corpus tests measure exactly these.
    let options = Options {
        default_namespace: Some(args.namespace.clone()),
        istio_namespace: args.istio_namespace.clone(),
        mesh_config,
        only: args.analyzers.clone(),
        ..Options::default()
    };
    let messages = match run_analyzers(&loaded.resources, &options) {
        Ok(m) => m,
        Err(e) => {
            let _ = writeln!(err, "{s}error{s:#}: {e}", s = output::ERROR);
            return 2;
        }
    };
    let threshold = match args.output_threshold {
        Threshold::Info => Level::Info,
        Threshold::Warning => Level::Warning,
        Threshold::Error => Level::Error,
    };
    let shown: Vec<_> = messages.iter().filter(|m| m.level >= threshold).collect();
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
            if shown.is_empty() && load_errors.is_empty() {
                let _ = writeln!(
                    out,
                    "{s}✔{s:#} No validation issues found when analyzing {} resources.",
                    loaded.resources.len(),
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
    if !load_errors.is_empty() || messages.iter().any(|m| m.level == Level::Error) {
        ERRORS_FOUND
    } else {
        0
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
