//! Reading a running mesh for `trellis analyze`: a Kubernetes cluster through the
//! kubeconfig kubectl would use (`trellis_kube::source::snapshot` lists what the
//! control plane's watches read, plus Deployments and Istio's ConfigMaps). An error is
//! one line saying where it tried and what went wrong.

use std::path::Path;
use std::time::Duration;

use trellis_api::{Diagnostic, Resource};

/// How long reaching the API server may take before it counts as unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// What a running mesh holds.
pub struct Live {
    pub resources: Vec<Resource>,
    /// Objects that do not load, each with its namespace.
    pub problems: Vec<(Option<String>, Diagnostic)>,
    /// The namespace its configuration selects (a kubeconfig context's, else `default`).
    pub namespace: String,
    /// Where it was read.
    pub url: String,
}

/// Reads the cluster `kubeconfig` and `context` (or what kubectl would use) point at.
pub fn cluster(
    kubeconfig: Option<&Path>,
    context: Option<&str>,
    istio_namespace: &str,
) -> Result<Live, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the Kubernetes client: {e}"))?;
    runtime.block_on(async {
        let mut config = trellis_kube::connect::config(kubeconfig, context)
            .await
            .map_err(|e| e.to_string())?;
        config.connect_timeout = Some(CONNECT_TIMEOUT);
        let url = config.cluster_url.to_string();
        let url = url.trim_end_matches('/').to_string();
        let namespace = config.default_namespace.clone();
        let client = kube::Client::try_from(config)
            .map_err(|e| format!("the Kubernetes client for {url}: {e}"))?;
        let snapshot = trellis_kube::source::snapshot::read(&client, istio_namespace)
            .await
            .map_err(|e| {
                format!(
                    "cannot read the cluster at {url}: {e} (--use-kube=false analyzes -f files alone)"
                )
            })?;
        Ok(Live {
            resources: snapshot.resources,
            problems: snapshot.diagnostics,
            namespace,
            url,
        })
    })
}
