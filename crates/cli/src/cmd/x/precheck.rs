//! `trellis x precheck`: prints what crates/kube's precheck finds, one line per
//! check (✔ pass, ! warning, ✘ failure) with its details indented below, or the
//! whole report as JSON or YAML. The checks themselves live in `trellis_kube::precheck`.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use trellis_kube::precheck::{self, Check, Report, Status};

use crate::output::{self, Format};

/// Exit code when a check failed.
pub const FAILED: i32 = 1;
/// Exit code for bad usage, or when the cluster cannot be reached at all.
pub const UNUSABLE: i32 = 2;

/// How long one request may take: a server that accepts connections but never
/// answers ends the precheck instead of hanging it.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  trellis x precheck                               the cluster kubectl uses now
  trellis x precheck --context prod-eu             another context of the kubeconfig
  trellis x precheck --kubeconfig ~/k/dev.yaml     another kubeconfig
  trellis x precheck -o json | jq '.checks[] | select(.status != \"pass\")'

Checks, with the kubeconfig kubectl would use (--kubeconfig, else $KUBECONFIG or
~/.kube/config, else the pod's service account):
  kubernetes-version  the API server answers, and runs Kubernetes 1.29 or later
                      (Trellis's sidecars are native sidecars)
  permissions         you may create and patch everything `trellis install` writes
                      (asked of the API server with SelfSubjectAccessReviews)
  existing-istio      an Istio control plane, its webhooks, or other workloads in the
                      control plane's namespace (warnings: run Istio or Trellis, not
                      both); Istio's CRDs are compatible and only noted

Exit codes: 0 every check passed (warnings allowed), 1 a check failed, 2 bad usage
or the cluster cannot be reached.")]
pub struct Args {
    /// The kubeconfig file (default: $KUBECONFIG, else ~/.kube/config).
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context (default: its current context).
    #[arg(long, value_name = "NAME")]
    pub context: Option<String>,
    /// The namespace `trellis install` would put the control plane in.
    #[arg(long, value_name = "NAMESPACE", default_value = "istio-system")]
    pub istio_namespace: String,
    /// Output format.
    #[arg(short, long, value_enum, default_value = "text")]
    pub output: Format,
}

pub fn run(args: &Args) -> i32 {
    if let Err(e) = trellis_api::check::rules::dns1123_label(&args.istio_namespace) {
        return fail(&format!("--istio-namespace: {e}"));
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => return fail(&format!("cannot start the async runtime: {e}")),
    };
    let report = match runtime.block_on(check(args)) {
        Ok(report) => report,
        Err(message) => return fail(&message),
    };
    match args.output {
        Format::Text => print_text(&report),
        Format::Json | Format::Yaml => print_data(args.output, &report),
    }
    if report.passed() { 0 } else { FAILED }
}

async fn check(args: &Args) -> Result<Report, String> {
    let kubeconfig = args.kubeconfig.as_deref();
    let context = args.context.as_deref();
    let mut config = trellis_kube::connect::config(kubeconfig, context)
        .await
        .map_err(|e| e.to_string())?;
    config.connect_timeout = Some(REQUEST_TIMEOUT);
    config.read_timeout = Some(REQUEST_TIMEOUT);
    let server = config.cluster_url.to_string();
    let server = server.trim_end_matches('/').to_string();
    let client = trellis_kube::connect::client_for(config).map_err(|e| e.to_string())?;
    precheck::run(&client, &server, &args.istio_namespace)
        .await
        .map_err(|e| e.to_string())
}

fn print_text(report: &Report) {
    let mut out = anstream::stdout();
    let checks = report.checks();
    for check in &checks {
        print_check(&mut out, check);
    }
    if checks.iter().all(|c| c.status == Status::Pass) {
        let _ = writeln!(out, "\nReady for `trellis install`.");
    } else if report.passed() {
        let _ = writeln!(
            out,
            "\nNo check failed: read the warnings above before `trellis install`."
        );
    } else {
        let failed = checks.iter().filter(|c| c.status == Status::Fail).count();
        let _ = writeln!(
            out,
            "\n{failed} check{} failed: fix {} before `trellis install`.",
            if failed == 1 { "" } else { "s" },
            if failed == 1 { "it" } else { "them" },
        );
    }
}

fn print_check(out: &mut impl Write, check: &Check) {
    let (style, mark) = match check.status {
        Status::Pass => (output::OK, "✔"),
        Status::Warn => (output::WARNING, "!"),
        Status::Fail => (output::ERROR, "✘"),
    };
    let _ = writeln!(out, "{style}{mark}{style:#} {}", check.message);
    for line in &check.details {
        let _ = writeln!(out, "    {line}");
    }
}

/// The report with each check's line, for scripts: `passed`, `checks` (name, status,
/// message, details), then the typed results (`version`, `permissions.missing`, …).
fn print_data(format: Format, report: &Report) {
    let mut value = serde_json::to_value(report).unwrap_or_default();
    value["passed"] = serde_json::json!(report.passed());
    value["checks"] = serde_json::to_value(report.checks()).unwrap_or_default();
    let text = match format {
        Format::Yaml => output::to_yaml(&value),
        _ => serde_json::to_string_pretty(&value).unwrap_or_default() + "\n",
    };
    let _ = anstream::stdout().write_all(text.as_bytes());
}

fn fail(message: &str) -> i32 {
    let message = message.replace('\n', " ");
    let _ = writeln!(
        anstream::stderr(),
        "{s}error{s:#}: {message}",
        s = output::ERROR
    );
    UNUSABLE
}
