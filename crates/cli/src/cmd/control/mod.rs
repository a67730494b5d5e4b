//! The control plane and the commands that talk to it, a module each:
//! `trellis control-plane`, `apply`/`delete`, `get`, `proxy-status` and `proxy-config`.
//! The client commands speak the control plane's JSON API (see `trellis_control::api`)
//! over plain HTTP through `client::call`; what they share (the target address, exit
//! codes, printing) is here.

mod apply;
mod client;
mod cluster;
mod control_plane;
mod get;
mod proxy_config;
mod proxy_status;

use std::io::Write;

use serde_json::Value;

pub use apply::{ApplyArgs, apply};
pub use client::call;
pub use control_plane::{ControlPlaneArgs, control_plane};
pub use get::{GetArgs, get};
pub use proxy_config::{ProxyConfigArgs, proxy_config};
pub use proxy_status::{ProxyStatusArgs, proxy_status};

use crate::output::{self, Format};

/// Where the client commands find the control plane's API unless told otherwise.
pub const DEFAULT_API: &str = "127.0.0.1:15014";

/// Exit code when the control plane cannot be reached or answers with an error.
pub const UNREACHABLE: i32 = 3;

/// Where a client command sends its requests.
#[derive(Debug, Clone, clap::Args)]
pub struct Target {
    /// The control plane's HTTP API (also from TRELLIS_CONTROL_PLANE).
    #[arg(long, env = "TRELLIS_CONTROL_PLANE", default_value = DEFAULT_API, value_name = "HOST:PORT")]
    pub control_plane: String,
    /// The API token's file (default: the one the control plane at that address left
    /// a pointer to in ~/.trellis/credentials; or TRELLIS_TOKEN).
    #[arg(long, env = "TRELLIS_TOKEN_FILE", value_name = "FILE")]
    pub token_file: Option<std::path::PathBuf>,
    /// The cluster whose installed control plane to reach instead (set by the commands
    /// that take [`ClusterTarget`]'s flags).
    #[arg(skip)]
    pub cluster: ClusterTarget,
}

/// Reaching the control plane installed in a Kubernetes cluster: each replica through
/// the API server, with the user's own credentials.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ClusterTarget {
    /// Reach the control plane installed in a Kubernetes cluster (each replica through
    /// the API server, with your own credentials): this kubeconfig.
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<std::path::PathBuf>,
    /// With a cluster: this kubeconfig context.
    #[arg(long, value_name = "NAME")]
    pub context: Option<String>,
    /// With a cluster: the control plane's namespace.
    #[arg(long, default_value = "istio-system", value_name = "NS")]
    pub istio_namespace: String,
}

impl Target {
    /// Whether the control plane is the one installed in a cluster.
    pub fn in_cluster(&self) -> bool {
        self.cluster.kubeconfig.is_some() || self.cluster.context.is_some()
    }

    /// This target, reaching the cluster `cluster` names when it names one.
    pub fn with(&self, cluster: &ClusterTarget) -> Target {
        Target {
            cluster: cluster.clone(),
            ..self.clone()
        }
    }
}

fn fail(message: &str) -> i32 {
    let _ = writeln!(
        anstream::stderr(),
        "{s}error{s:#}: {message}",
        s = output::ERROR
    );
    UNREACHABLE
}

fn print_data(format: Format, value: &Value) {
    let text = match format {
        Format::Yaml => output::to_yaml(value),
        _ => serde_json::to_string_pretty(value).unwrap_or_default() + "\n",
    };
    let _ = anstream::stdout().write_all(text.as_bytes());
}
