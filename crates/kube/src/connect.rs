//! Reaching the API server as `kubectl` would: an explicit kubeconfig (and context),
//! else `$KUBECONFIG` or `~/.kube/config`, else the in-cluster service account. The
//! error says which of those was tried.

use std::path::{Path, PathBuf};

/// Why no client could be made.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("kubeconfig {file}: {message}")]
    Kubeconfig { file: PathBuf, message: String },
    #[error(
        "no Kubernetes configuration: no --kubeconfig, no $KUBECONFIG or ~/.kube/config, and not running in a pod ({0})"
    )]
    Infer(String),
    #[error("the Kubernetes client: {0}")]
    Client(String),
}

/// A client for `kubeconfig` (or the inferred configuration) and `context`.
pub async fn client(
    kubeconfig: Option<&Path>,
    context: Option<&str>,
) -> Result<kube::Client, ConnectError> {
    client_for(config(kubeconfig, context).await?)
}

/// The configuration [`client`] uses: the server's URL, the context's namespace
/// (`default_namespace`), credentials — for callers that need them (or other
/// timeouts) before making the client with [`client_for`].
pub async fn config(
    kubeconfig: Option<&Path>,
    context: Option<&str>,
) -> Result<kube::Config, ConnectError> {
    let options = kube::config::KubeConfigOptions {
        context: context.map(str::to_string),
        ..Default::default()
    };
    let config = match kubeconfig {
        Some(file) => {
            let error = |message: String| ConnectError::Kubeconfig {
                file: file.to_path_buf(),
                message,
            };
            let parsed =
                kube::config::Kubeconfig::read_from(file).map_err(|e| error(e.to_string()))?;
            kube::Config::from_custom_kubeconfig(parsed, &options)
                .await
                .map_err(|e| error(e.to_string()))?
        }
        None if context.is_some() => kube::Config::from_kubeconfig(&options)
            .await
            .map_err(|e| ConnectError::Infer(e.to_string()))?,
        None => kube::Config::infer()
            .await
            .map_err(|e| ConnectError::Infer(e.to_string()))?,
    };
    Ok(config)
}

/// A client for a configuration from [`config`].
pub fn client_for(config: kube::Config) -> Result<kube::Client, ConnectError> {
    kube::Client::try_from(config).map_err(|e| ConnectError::Client(e.to_string()))
}

/// Whether a kubeconfig is there to be used without asking: `$KUBECONFIG` names one,
/// or `~/.kube/config` exists (what kubectl reads when given no `--kubeconfig`).
pub fn kubeconfig_found() -> bool {
    let named = std::env::var_os("KUBECONFIG").is_some_and(|v| !v.is_empty());
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .is_some_and(|home| home.join(".kube/config").is_file());
    named || home
}
