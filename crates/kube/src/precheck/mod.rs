//! `trellis x precheck`: whether a cluster is ready for `trellis install` — the API
//! server answers and runs Kubernetes 1.29 or later (`version`), the user may write
//! everything the install writes (`permissions`), and whether Istio is already there
//! (`istio`). Only reads (an access review stores nothing). The results are typed;
//! each also reads as a [`Check`] (status, one-line message, details) for the CLI.

pub mod istio;
pub mod permissions;
pub mod version;

use serde::Serialize;

pub use istio::{ExistingIstio, Found};
pub use permissions::{Permission, Permissions};
pub use version::{MINIMUM, ServerVersion};

/// Why no check could run.
#[derive(Debug, thiserror::Error)]
pub enum PrecheckError {
    /// `/version` did not answer: no connection, TLS refused, credentials refused.
    #[error("cannot talk to the Kubernetes API server at {server}: {message}")]
    Unreachable { server: String, message: String },
}

/// How a check came out; a warning is not a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pass,
    Warn,
    Fail,
}

/// One check as a line to print: a status, what was found, and detail lines.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// Stable, for scripts: `kubernetes-version`, `permissions`, `existing-istio`.
    pub name: &'static str,
    pub status: Status,
    pub message: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub details: Vec<String>,
}

/// Every check's result.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// The API server's URL, as the kubeconfig gave it.
    pub server: String,
    pub version: ServerVersion,
    pub permissions: Permissions,
    pub existing_istio: ExistingIstio,
}

impl Report {
    /// The checks in the order they are printed.
    pub fn checks(&self) -> Vec<Check> {
        vec![
            self.version.check(&self.server),
            self.permissions.check(),
            self.existing_istio.check(),
        ]
    }

    /// No check failed (warnings allowed).
    pub fn passed(&self) -> bool {
        self.checks().iter().all(|c| c.status != Status::Fail)
    }
}

/// Runs every check against the API server at `server` (the URL `client` talks to,
/// for messages), for a control plane in `istio_namespace`.
pub async fn run(
    client: &kube::Client,
    server: &str,
    istio_namespace: &str,
) -> Result<Report, PrecheckError> {
    let info = client
        .apiserver_version()
        .await
        .map_err(|e| PrecheckError::Unreachable {
            server: server.to_string(),
            message: describe_error(&e),
        })?;
    let (permissions, existing_istio) = tokio::join!(
        permissions::review(client, istio_namespace),
        istio::look(client, istio_namespace),
    );
    Ok(Report {
        server: server.to_string(),
        version: ServerVersion::from_info(&info),
        permissions,
        existing_istio,
    })
}

/// A client error on one line: the API server's own words for a refusal, else the
/// innermost causes (`tcp connect error: Connection refused (os error 111)`), without
/// the wrappers' names.
pub fn describe_error(error: &kube::Error) -> String {
    if let kube::Error::Api(status) = error {
        return format!("{} {}: {}", status.code, status.reason, status.message);
    }
    let mut chain: Vec<String> = Vec::new();
    let mut next: Option<&dyn std::error::Error> = Some(error);
    while let Some(e) = next {
        chain.push(e.to_string());
        next = e.source();
    }
    // Wrappers repeat their source's text ("HyperError: client error (Connect)");
    // keep the last two distinct causes.
    chain.dedup_by(|inner, outer| outer.contains(inner.as_str()));
    let keep = chain.len().saturating_sub(2);
    chain[keep..].join(": ").replace('\n', " ")
}
