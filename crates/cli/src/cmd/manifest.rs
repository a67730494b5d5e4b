//! `trellis manifest generate`: the objects `trellis install` applies, to review or
//! pipe into `kubectl apply -f -` — the CustomResourceDefinitions of the Istio kinds
//! Trellis carries out, then the namespace, RBAC, control plane, webhook configuration
//! and gateways of the chosen profile (crates/kube makes them all).

use std::io::Write;

use serde_json::{Value, json};

/// Exit code when the manifests could not be made (a bug: the unit tests make them too).
const FAILED: i32 = 1;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Print the objects `trellis install` applies (CRDs, RBAC, control plane, gateways).
    Generate(GenerateArgs),
}

/// How the objects are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// One YAML document per object, separated by `---`.
    Yaml,
    /// One JSON object of kind `List` holding them all.
    Json,
}

#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  trellis manifest generate > trellis.yaml                    review what install would apply
  trellis manifest generate --set profile=demo | kubectl apply --server-side -f -
  trellis manifest generate --crds-only | kubectl apply -f -  only the Istio kinds' CRDs
  trellis manifest generate -o json                           a JSON List, for scripts

Prints the CustomResourceDefinitions of the Istio kinds Trellis carries out (Gateway,
VirtualService, DestinationRule, ServiceEntry, WorkloadEntry, Sidecar, PeerAuthentication,
AuthorizationPolicy, RequestAuthentication, Telemetry) with Istio's names and every version
Istio serves, so users' Istio YAML applies unchanged (applying them over Istio's own CRDs,
or the other way round, works too); then the profile's namespace, mesh ConfigMap, RBAC,
control plane (Deployment, `istiod` Service, PodDisruptionBudget), validating webhook
configuration and gateways. Profiles: default, demo, minimal, empty (as istioctl's).")]
pub struct GenerateArgs {
    /// A setting, KEY=VALUE (repeatable): profile=default|demo|minimal|empty, hub=REGISTRY,
    /// tag=TAG, namespace=NS, meshConfig.trustDomain=DOMAIN.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Only the CustomResourceDefinitions.
    #[arg(long)]
    pub crds_only: bool,
    /// Output format.
    #[arg(short, long, value_enum, default_value = "yaml")]
    pub output: Format,
}

pub fn run(args: &Args) -> i32 {
    match &args.command {
        Command::Generate(args) => generate(args),
    }
}

fn generate(args: &GenerateArgs) -> i32 {
    let values = match trellis_kube::install::Values::default()
        .with_sets(args.set.iter().map(String::as_str))
    {
        Ok(v) => v,
        Err(e) => {
            let _ = writeln!(anstream::stderr(), "error: {e}");
            return 2;
        }
    };
    let objects = if args.crds_only {
        trellis_kube::crd::definitions().map_err(|e| e.to_string())
    } else {
        trellis_kube::install::all_objects(&values).map_err(|e| e.to_string())
    };
    let objects = match objects {
        Ok(objects) => objects,
        Err(e) => {
            let _ = writeln!(anstream::stderr(), "error: {e}");
            return FAILED;
        }
    };
    let text = match args.output {
        Format::Yaml => yaml_stream(&objects),
        Format::Json => {
            let list = json!({"apiVersion": "v1", "kind": "List", "items": objects});
            serde_json::to_string_pretty(&list).unwrap_or_default() + "\n"
        }
    };
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Ok(()) => 0,
        // A closed pipe (`| head`) is not worth a message.
        Err(_) => FAILED,
    }
}

/// Every object as its own YAML document.
fn yaml_stream(objects: &[Value]) -> String {
    let header = format!(
        "# Trellis {}: `trellis manifest generate`\n",
        env!("CARGO_PKG_VERSION")
    );
    header + &trellis_api::yaml::to_yaml_documents(objects)
}
