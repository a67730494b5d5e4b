//! `trellis manifest generate`: the objects cluster mode installs, to pipe into
//! `kubectl apply -f -`. For now the CustomResourceDefinitions of the Istio kinds
//! Trellis carries out (crates/kube makes them); the namespace, RBAC, Deployments and
//! webhook configurations will join them here.

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
    /// Print the objects cluster mode installs (today: the Istio kinds' CustomResourceDefinitions).
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
  trellis manifest generate | kubectl apply -f -    install the CRDs in the current cluster
  trellis manifest generate > trellis.yaml          keep them to review or commit
  trellis manifest generate -o json                 a JSON List, for scripts

Prints the CustomResourceDefinitions of the Istio kinds Trellis carries out (Gateway,
VirtualService, DestinationRule, ServiceEntry, WorkloadEntry, Sidecar, PeerAuthentication,
AuthorizationPolicy, RequestAuthentication, Telemetry) with Istio's names and every version
Istio serves, so users' Istio YAML applies unchanged; applying them over Istio's own CRDs
(or the other way round) works too. The rest of the install (namespace, RBAC, Deployments,
webhook configurations) will be added to this output.")]
pub struct GenerateArgs {
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
    let objects = match trellis_kube::crd::definitions() {
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
