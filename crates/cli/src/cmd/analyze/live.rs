//! Reading a running mesh for `trellis analyze`: a Kubernetes cluster through the
//! kubeconfig kubectl would use (`trellis_kube::source::snapshot` lists what the
//! control plane's watches read, plus Deployments and Istio's ConfigMaps), or the
//! local control plane `trellis up` runs, through its API (what `trellis get -A -o
//! yaml` shows). An error is one line saying where it tried and what went wrong.

use std::net::{TcpStream, ToSocketAddrs};
use std::path::Path;
use std::time::Duration;

use trellis_api::{Diagnostic, Resource};

use crate::cmd::control::{Target, call};

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

/// Whether a control plane's API takes connections at `target` (asked briefly: a
/// local mesh answers at once).
pub fn control_plane_running(target: &Target) -> bool {
    let host = target.control_plane.trim_start_matches("http://");
    let host = host.trim_end_matches('/');
    let Some(addr) = host.to_socket_addrs().ok().and_then(|mut a| a.next()) else {
        return false;
    };
    TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok()
}

/// Reads what the control plane at `target` holds. A resource keeps the file (and the
/// line it starts at) it was read from, so messages point there; one the control
/// plane read from a cluster has no line.
pub fn control_plane(target: &Target) -> Result<Live, String> {
    let host = target.control_plane.trim_start_matches("http://");
    let url = format!("http://{}", host.trim_end_matches('/'));
    let (status, answer) = call(target, "GET", "/api/v1/resources", None)
        .map_err(|e| format!("cannot read the local mesh: {e}"))?;
    if status != 200 {
        return Err(format!(
            "cannot read the local mesh at {url}: it answered {status}: {}",
            answer["error"].as_str().unwrap_or_default()
        ));
    }
    let mut live = Live {
        resources: Vec::new(),
        problems: Vec::new(),
        namespace: "default".into(),
        url,
    };
    for item in answer.as_array().into_iter().flatten() {
        let source = item["source"].as_str().unwrap_or_default();
        let (file, line) = match source.rsplit_once(':') {
            Some((file, line)) => (file, line.parse().unwrap_or(0)),
            None => (source, 0),
        };
        let line = if file.starts_with("cluster:") {
            0
        } else {
            line
        };
        let loaded = trellis_api::load_str(file, &item["resource"].to_string());
        let namespace = item["namespace"].as_str().map(str::to_string);
        live.problems.extend(
            loaded
                .diagnostics
                .into_iter()
                .filter(|d| d.severity == trellis_api::Severity::Error)
                .map(|d| (namespace.clone(), d)),
        );
        live.resources
            .extend(loaded.resources.into_iter().map(|mut r| {
                r.source.line = line;
                trellis_control::source::slim(r)
            }));
    }
    Ok(live)
}
