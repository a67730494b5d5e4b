//! `trellis validate`: load and check resources one by one, with Istio's rules and
//! a few stricter ones (unknown fields are errors, with the nearest known name).

use std::io::Write;
use std::path::PathBuf;

use trellis_api::{Diagnostic, Severity};

use crate::output::{self, Format};

/// Exit code when some input is invalid.
pub const INVALID: i32 = 1;

#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  trellis validate -f reviews.yaml                 check one file
  trellis validate -f manifests/ -f extra.yaml     directories are read recursively (*.yaml, *.yml, *.json)
  kubectl get vs -A -o yaml | trellis validate -f -   read from standard input
  trellis validate -f config/ -o json              problems as JSON, for scripts

Exit codes: 0 valid (warnings allowed), 1 invalid, 2 bad usage.")]
pub struct Args {
    /// Files or directories to check; `-` reads standard input.
    #[arg(short = 'f', long = "filename", value_name = "PATH", required = true)]
    pub files: Vec<PathBuf>,
    /// Output format for problems.
    #[arg(short, long, value_enum, default_value = "text")]
    pub output: Format,
    /// Do not print warnings (ignored kinds, deprecations).
    #[arg(short, long)]
    pub quiet: bool,
}

/// Loads and validates; prints one line per problem and a summary.
pub fn run(args: &Args) -> i32 {
    let (loaded, files) = crate::inputs::load(&args.files);
    let mut problems: Vec<Diagnostic> = loaded.diagnostics;
    for resource in &loaded.resources {
        problems.extend(resource.validate());
    }
    if args.quiet {
        problems.retain(|p| p.severity == Severity::Error);
    }
    let errors = problems
        .iter()
        .filter(|p| p.severity == Severity::Error)
        .count();
    let warnings = problems.len() - errors;
    match args.output {
        Format::Text => print_text(&problems, loaded.resources.len(), files, errors, warnings),
        Format::Json | Format::Yaml => {
            let value = serde_json::json!({
                "valid": errors == 0,
                "files": files,
                "resources": loaded.resources.len(),
                "problems": problems.iter().map(problem_json).collect::<Vec<_>>(),
            });
            let text = if args.output == Format::Json {
                serde_json::to_string_pretty(&value).unwrap_or_default() + "\n"
            } else {
                output::to_yaml(&value)
            };
            let _ = anstream::stdout().write_all(text.as_bytes());
        }
    }
    if errors > 0 { INVALID } else { 0 }
}

fn print_text(
    problems: &[Diagnostic],
    resources: usize,
    files: usize,
    errors: usize,
    warnings: usize,
) {
    let mut err = anstream::stderr();
    for p in problems {
        let (style, word) = match p.severity {
            Severity::Error => (output::ERROR, "error"),
            Severity::Warning => (output::WARNING, "warning"),
        };
        let _ = writeln!(err, "{style}{word}{style:#}: {p}");
    }
    let plural = |n: usize, word: &str| format!("{n} {word}{}", if n == 1 { "" } else { "s" });
    let mut out = anstream::stdout();
    if errors == 0 {
        let _ = writeln!(
            out,
            "{s}✔{s:#} {} in {} valid{}",
            plural(resources, "resource"),
            plural(files, "file"),
            if warnings > 0 {
                format!(" ({})", plural(warnings, "warning"))
            } else {
                String::new()
            },
            s = output::OK
        );
    } else {
        let _ = writeln!(
            out,
            "{s}✘{s:#} {} in {} ({} loaded from {})",
            plural(errors, "error"),
            plural(
                problems
                    .iter()
                    .map(|p| &p.file)
                    .collect::<std::collections::BTreeSet<_>>()
                    .len(),
                "file"
            ),
            plural(resources, "resource"),
            plural(files, "file"),
            s = output::ERROR
        );
    }
}

fn problem_json(p: &Diagnostic) -> serde_json::Value {
    serde_json::json!({
        "severity": p.severity,
        "file": &*p.file,
        "line": p.line,
        "resource": p.resource,
        "field": p.path,
        "message": p.message,
    })
}
