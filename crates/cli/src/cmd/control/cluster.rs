//! `trellis control-plane --kubernetes`: the flags of cluster mode and its wiring
//! around the control plane (crates/kube does the work): a runtime of its own for the
//! watches, TokenReviews, the webhook and the Lease.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use trellis_kube::mode::{ClusterMode, ClusterOptions, Prepared};

#[derive(Debug, Clone, clap::Args)]
pub struct ClusterArgs {
    /// Read the mesh's resources (Istio's kinds, Namespaces, Services, Pods, the
    /// `istio` mesh ConfigMap) from Kubernetes: the kubeconfig kubectl would use
    /// ($KUBECONFIG, ~/.kube/config), or the pod's service account when in a cluster.
    /// Proxies then prove their identity with their pod's service-account token, the
    /// mesh CA is shared by every replica through a Secret, and one replica (holding
    /// a Lease) writes analysis back as status.
    #[arg(long)]
    pub kubernetes: bool,
    /// With cluster mode: this kubeconfig file (implies --kubernetes).
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// With cluster mode: this kubeconfig context (implies --kubernetes).
    #[arg(long, value_name = "NAME")]
    pub context: Option<String>,
    /// With cluster mode: the control plane's namespace (the mesh ConfigMap, the CA's
    /// Secret, the Lease).
    #[arg(long, default_value = "istio-system", value_name = "NS")]
    pub namespace: String,
    /// With cluster mode: where the validating webhook listens (TLS from the mesh CA).
    #[arg(long, default_value = "0.0.0.0:15017", value_name = "ADDR")]
    pub webhook: SocketAddr,
    /// With cluster mode: the URL the API server calls the webhook at (default: the
    /// Service --service in a cluster, this replica's --webhook address outside one).
    #[arg(long, value_name = "URL")]
    pub webhook_url: Option<String>,
    /// With cluster mode: the control plane's Service (the webhook's name).
    #[arg(long, default_value = "istiod", value_name = "NAME")]
    pub service: String,
    /// With cluster mode: this replica's name in the Lease (default: $POD_NAME, else
    /// the host name and process id).
    #[arg(long, value_name = "NAME")]
    pub replica: Option<String>,
    /// With cluster mode: inject sidecars into pods that ask for one (namespace label
    /// `istio-injection=enabled` or `istio.io/rev=default`, pod label
    /// `sidecar.istio.io/inject=true`) through the webhook's `/inject`; the leader keeps
    /// the `istio-sidecar-injector` configuration.
    #[arg(long)]
    pub inject: bool,
    /// With --inject: the image injected sidecars run (a pod's
    /// `sidecar.istio.io/proxyImage` annotation overrides it).
    #[arg(long, value_name = "IMAGE", default_value = concat!("ghcr.io/trellis-mesh/trellis:", env!("CARGO_PKG_VERSION")))]
    pub proxy_image: String,
    /// How long the leader's Lease holds without renewal.
    #[arg(long, default_value = "15s", value_parser = super::control_plane::parse_lifetime, hide = true)]
    pub lease_duration: Duration,
}

impl ClusterArgs {
    pub fn enabled(&self) -> bool {
        self.kubernetes || self.kubeconfig.is_some() || self.context.is_some()
    }

    fn options(&self) -> ClusterOptions {
        let replica = self.replica.clone().unwrap_or_else(|| {
            std::env::var("POD_NAME").unwrap_or_else(|_| {
                let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                    .map(|h| h.trim().to_string())
                    .unwrap_or_else(|_| "trellis".into());
                format!("{host}-{}", std::process::id())
            })
        });
        ClusterOptions {
            service: self.service.clone(),
            webhook: Some(self.webhook),
            webhook_url: self.webhook_url.clone(),
            lease_duration: self.lease_duration,
            ..ClusterOptions::new(&self.namespace, &replica)
        }
    }
}

/// Cluster mode before the control plane starts: what the control plane's security
/// needs (the shared CA's files, TokenReview) and the watches already running.
pub struct Pending {
    runtime: tokio::runtime::Runtime,
    prepared: Prepared,
    options: ClusterOptions,
    pub authenticator: Arc<dyn trellis_identity::Authenticator>,
    /// Istio's plugged-in CA, when the cluster has a `cacerts` Secret.
    pub plugged_ca: Option<PathBuf>,
}

/// Cluster mode running; dropping it stops it.
pub struct Active {
    mode: ClusterMode,
    // Dropped last: the tasks above run on it.
    _runtime: tokio::runtime::Runtime,
}

impl Active {
    pub fn webhook_address(&self) -> Option<SocketAddr> {
        self.mode.webhook_address()
    }
}

/// Connects, shares the CA through its Secret and starts the watches.
pub fn prepare(
    args: &ClusterArgs,
    control: &trellis_control::ControlPlane,
    state_dir: &std::path::Path,
    trust_domain: &str,
) -> Result<Pending, String> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("trellis-kube")
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let client = runtime
        .block_on(trellis_kube::connect::client(
            args.kubeconfig.as_deref(),
            args.context.as_deref(),
        ))
        .map_err(|e| e.to_string())?;
    let mut options = args.options();
    if args.inject {
        options.inject = Some(trellis_kube::inject::InjectSettings {
            trust_domain: trust_domain.to_string(),
            ..trellis_kube::inject::InjectSettings::for_control_plane(
                &args.namespace,
                &args.service,
                &args.proxy_image,
            )
        });
    }
    let prepared = runtime
        .block_on(trellis_kube::mode::prepare(
            &client,
            control,
            &options,
            state_dir,
            trust_domain,
        ))
        .map_err(|e| e.to_string())?;
    let plugged_ca = match &prepared.ca {
        trellis_kube::ca_secret::CaFiles::Plugged(dir) => Some(dir.clone()),
        trellis_kube::ca_secret::CaFiles::SelfSigned => None,
    };
    Ok(Pending {
        authenticator: Arc::new(trellis_kube::token_review::TokenReviewer::new(client)),
        plugged_ca,
        runtime,
        prepared,
        options,
    })
}

impl Pending {
    /// Starts the webhook, the election and the leader's duties beside `running`.
    pub fn serve(self, running: &trellis_control::Running) -> Result<Active, String> {
        let mode = self
            .runtime
            .block_on(trellis_kube::mode::serve(
                running.control.clone(),
                running.security.ca.clone(),
                self.prepared,
                self.options,
            ))
            .map_err(|e| e.to_string())?;
        Ok(Active {
            mode,
            _runtime: self.runtime,
        })
    }
}
