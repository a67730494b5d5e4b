//! Cluster mode put together for `trellis control-plane --kubernetes`: before the
//! control plane starts, the shared CA is read from (or stored in) its Secret and the
//! watches begin; once it runs, every replica serves the webhooks (validation, and
//! sidecar injection when configured), and the replica holding the Lease does the
//! singleton duties — the webhook configurations and their caBundles, the mesh root
//! published in every namespace, and analysis written back as status. Leadership
//! moves with the Lease.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use kube::api::{Api, PostParams};
use trellis_control::ControlPlane;

use crate::ca_secret::{self, CaFiles};
use crate::inject::InjectSettings;
use crate::leader::{self, Election, LeaderOptions};
use crate::source::{self, ClusterSource, SourceOptions};
use crate::status::{StatusOptions, StatusWriter};
use crate::webhook::{
    ConfigurationOptions, INJECTOR_CONFIGURATION, Injector, WebhookClient, WebhookConfiguration,
    WebhookOptions, WebhookServer, configuration_name, keep_ca_bundle_of,
    mutating_webhook_configuration, validating_webhook_configuration,
};

/// How cluster mode runs.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// The control plane's namespace (Istio's `istio-system`).
    pub namespace: String,
    /// This replica's name for the Lease (its pod name in a cluster).
    pub replica: String,
    /// The control plane's Service, which the webhook configuration names in a cluster.
    pub service: String,
    /// Where the webhook listens; `None`: no webhook.
    pub webhook: Option<SocketAddr>,
    /// Out of a cluster: the URL the API server calls the webhook at instead of the
    /// Service (`None` with a webhook: the Service, port 443).
    pub webhook_url: Option<String>,
    /// How long the Lease holds without renewal.
    pub lease_duration: Duration,
    /// Sidecar injection on the webhook's port (`/inject`) with these settings, and
    /// the leader keeps `istio-sidecar-injector`; `None`: no injection.
    pub inject: Option<InjectSettings>,
}

impl ClusterOptions {
    pub fn new(namespace: &str, replica: &str) -> ClusterOptions {
        ClusterOptions {
            namespace: namespace.into(),
            replica: replica.into(),
            service: "istiod".into(),
            webhook: None,
            webhook_url: None,
            lease_duration: Duration::from_secs(15),
            inject: None,
        }
    }
}

/// Why cluster mode could not start.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error(transparent)]
    Ca(#[from] ca_secret::CaSecretError),
    #[error("the validation webhook: {0}")]
    Webhook(#[from] crate::webhook::WebhookError),
    #[error("the validation webhook's address {address}: {source}")]
    Listen {
        address: SocketAddr,
        source: std::io::Error,
    },
}

/// The first half: the shared CA's files and the watches (the control plane holds
/// proxies back until the watches have listed).
pub struct Prepared {
    pub ca: CaFiles,
    source: ClusterSource,
    client: kube::Client,
}

impl Prepared {
    /// The API server's client it was prepared with.
    pub fn client(&self) -> &kube::Client {
        &self.client
    }
}

/// Reads the CA from its Secret into `state_dir` and starts the watches.
pub async fn prepare(
    client: &kube::Client,
    control: &ControlPlane,
    options: &ClusterOptions,
    state_dir: &Path,
    trust_domain: &str,
) -> Result<Prepared, ClusterError> {
    trellis_identity::files::create_private_dir(state_dir).map_err(|source| {
        ca_secret::CaSecretError::File {
            file: state_dir.to_path_buf(),
            source,
        }
    })?;
    let ca = ca_secret::sync(client, &options.namespace, state_dir, trust_domain).await?;
    ca_secret::sync_api_token(client, &options.namespace, state_dir).await?;
    let source = source::start(
        client.clone(),
        control.clone(),
        SourceOptions {
            namespace: options.namespace.clone(),
            ..SourceOptions::default()
        },
    );
    Ok(Prepared {
        ca,
        source,
        client: client.clone(),
    })
}

/// Cluster mode running beside a control plane; dropping it stops it all.
pub struct ClusterMode {
    _source: ClusterSource,
    webhook: Option<WebhookServer>,
    election: Election,
    duties: tokio::task::JoinHandle<()>,
}

impl ClusterMode {
    /// The webhook's address, when it serves one.
    pub fn webhook_address(&self) -> Option<SocketAddr> {
        self.webhook.as_ref().map(WebhookServer::local_addr)
    }

    /// Whether this replica leads now.
    pub fn leading(&self) -> bool {
        *self.election.leading().borrow()
    }
}

impl Drop for ClusterMode {
    fn drop(&mut self) {
        self.duties.abort();
    }
}

/// The second half, once the control plane runs with its CA: the webhook, the
/// election, and the leader's duties.
pub async fn serve(
    control: ControlPlane,
    ca: Arc<trellis_identity::Ca>,
    prepared: Prepared,
    options: ClusterOptions,
) -> Result<ClusterMode, ClusterError> {
    let client = prepared.client.clone();
    let root_pem = ca.root_pem();
    let webhook = match options.webhook {
        Some(address) => {
            let listener = tokio::net::TcpListener::bind(address)
                .await
                .map_err(|source| ClusterError::Listen { address, source })?;
            let mut names = WebhookOptions::for_service(&options.namespace, &options.service);
            names.injector = options
                .inject
                .clone()
                .map(|settings| Injector::new(client.clone(), settings));
            names.ip_addresses.push(
                listener
                    .local_addr()
                    .map_err(|source| ClusterError::Listen { address, source })?
                    .ip(),
            );
            Some(WebhookServer::start(ca, listener, names).await?)
        }
        None => None,
    };
    let in_cluster = std::env::var_os("KUBERNETES_SERVICE_HOST").is_some();
    let configuration = webhook.as_ref().map(|w| {
        let name = configuration_name(&options.namespace);
        match (&options.webhook_url, in_cluster) {
            (Some(url), _) => ConfigurationOptions::at_url(&name, url),
            // Out of a cluster the API server calls this replica directly.
            (None, false) => ConfigurationOptions::at_url(&name, &w.url()),
            (None, true) => ConfigurationOptions::in_cluster(&options.namespace, &options.service),
        }
    });
    // The injector's configuration: the same client, another path and name.
    let injection = webhook
        .as_ref()
        .zip(options.inject.as_ref())
        .zip(configuration.as_ref())
        .map(|((w, settings), validating)| {
            let client = match &validating.client {
                WebhookClient::Url(_) => WebhookClient::Url(
                    options
                        .webhook_url
                        .as_deref()
                        .map(|u| u.replace(crate::webhook::PATH, crate::webhook::INJECT_PATH))
                        .unwrap_or_else(|| w.inject_url()),
                ),
                service => service.clone(),
            };
            let options = ConfigurationOptions {
                name: INJECTOR_CONFIGURATION.into(),
                client,
                ..validating.clone()
            };
            mutating_webhook_configuration(&options, &settings.revision)
        });
    let certificates = webhook.as_ref().map(WebhookServer::certificates);
    let election = leader::start(
        client.clone(),
        LeaderOptions {
            duration: options.lease_duration,
            renew: (options.lease_duration / 5).max(Duration::from_millis(200)),
            ..LeaderOptions::new(&options.namespace, &options.replica)
        },
    );
    let mut leading = election.leading();
    let namespace = options.namespace.clone();
    let duties = tokio::spawn(async move {
        loop {
            // Wait to lead.
            if leading.wait_for(|l| *l).await.is_err() {
                return;
            }
            let mut tasks = Vec::new();
            if let (Some(configuration), Some(certificates)) = (&configuration, &certificates) {
                ensure_configuration(
                    &client,
                    &configuration.name,
                    validating_webhook_configuration(configuration),
                )
                .await;
                tasks.push(tokio::spawn(keep_ca_bundle_of::<
                    ValidatingWebhookConfiguration,
                >(
                    client.clone(),
                    configuration.name.clone(),
                    certificates.clone(),
                )));
                if let Some(injection) = &injection {
                    ensure_configuration(&client, INJECTOR_CONFIGURATION, injection.clone()).await;
                    tasks.push(tokio::spawn(keep_ca_bundle_of::<
                        MutatingWebhookConfiguration,
                    >(
                        client.clone(),
                        INJECTOR_CONFIGURATION.into(),
                        certificates.clone(),
                    )));
                }
            }
            let control = control.clone();
            let snapshots = crate::status::poll_snapshots(Duration::from_millis(500), move || {
                control.resources()
            });
            tasks.push(tokio::spawn(crate::root_cert::publish(
                client.clone(),
                root_pem.clone(),
                snapshots.clone(),
            )));
            let writer =
                StatusWriter::start(client.clone(), snapshots, StatusOptions::new(&namespace));
            // Until leadership is lost.
            let _ = leading.wait_for(|l| !*l).await;
            drop(writer);
            for t in tasks {
                t.abort();
            }
        }
    });
    Ok(ClusterMode {
        _source: prepared.source,
        webhook,
        election,
        duties,
    })
}

/// Creates a webhook configuration when it is missing (an install may have made it
/// already), and points one that calls a URL at this leader's (a Service reaches
/// every replica; a URL only the one that wrote it). Its caBundle is kept by
/// `keep_ca_bundle_of`.
async fn ensure_configuration<K: WebhookConfiguration>(
    client: &kube::Client,
    name: &str,
    mut wanted: K,
) {
    let api: Api<K> = Api::all(client.clone());
    let url = |c: &K| c.client_configs().first().and_then(|c| c.url.clone());
    let result = match api.get_opt(name).await {
        Ok(None) => api
            .create(&PostParams::default(), &wanted)
            .await
            .map(|_| ()),
        Ok(Some(existing)) => {
            if url(&wanted).is_some() && url(&existing) != url(&wanted) {
                wanted.meta_mut().resource_version = existing.meta().resource_version.clone();
                api.replace(name, &PostParams::default(), &wanted)
                    .await
                    .map(|_| ())
            } else {
                Ok(())
            }
        }
        Err(e) => Err(e),
    };
    match result {
        Ok(()) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => {
            tracing::warn!(%name, error = %e, "cannot write the webhook configuration")
        }
    }
}
