//! Keeping the webhook configuration's `caBundle` equal to the roots the webhook's
//! certificate chains to: at start, whenever the certificate brings other roots,
//! and whenever the configuration is written by someone else (an install that
//! resets it). A leader's duty: one task per cluster, started by whoever leads.
//! Validating and mutating configurations alike ([`WebhookConfiguration`]).

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration, WebhookClientConfig,
};
use kube::Client;
use kube::api::{Api, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use tokio::sync::watch;
use trellis_identity::Credentials;

/// Checked again this often even when nothing was heard of.
const RESYNC: Duration = Duration::from_secs(300);

/// A webhook configuration kind: its webhooks' client configs.
pub trait WebhookConfiguration:
    kube::Resource<DynamicType = (), Scope = k8s_openapi::ClusterResourceScope>
    + Clone
    + std::fmt::Debug
    + serde::Serialize
    + serde::de::DeserializeOwned
    + Send
    + Sync
    + 'static
{
    fn client_configs(&self) -> Vec<&WebhookClientConfig>;
    fn client_configs_mut(&mut self) -> Vec<&mut WebhookClientConfig>;
}

impl WebhookConfiguration for ValidatingWebhookConfiguration {
    fn client_configs(&self) -> Vec<&WebhookClientConfig> {
        self.webhooks
            .iter()
            .flatten()
            .map(|w| &w.client_config)
            .collect()
    }
    fn client_configs_mut(&mut self) -> Vec<&mut WebhookClientConfig> {
        self.webhooks
            .iter_mut()
            .flatten()
            .map(|w| &mut w.client_config)
            .collect()
    }
}

impl WebhookConfiguration for MutatingWebhookConfiguration {
    fn client_configs(&self) -> Vec<&WebhookClientConfig> {
        self.webhooks
            .iter()
            .flatten()
            .map(|w| &w.client_config)
            .collect()
    }
    fn client_configs_mut(&mut self) -> Vec<&mut WebhookClientConfig> {
        self.webhooks
            .iter_mut()
            .flatten()
            .map(|w| &mut w.client_config)
            .collect()
    }
}

/// What one pass did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BundleUpdate {
    /// Every webhook of the configuration already carried the roots.
    Unchanged,
    /// The configuration was written with the roots.
    Patched,
    /// There is no such configuration (yet).
    Missing,
}

/// Sets every webhook's `caBundle` in configuration `name` to `roots_pem`, if it is
/// not that already (read, change, replace at the version read; a conflict is an error
/// the caller retries).
pub async fn set_ca_bundle<K: WebhookConfiguration>(
    client: &Client,
    name: &str,
    roots_pem: &str,
) -> Result<BundleUpdate, kube::Error> {
    let api: Api<K> = Api::all(client.clone());
    let Some(mut config) = api.get_opt(name).await? else {
        return Ok(BundleUpdate::Missing);
    };
    let bundle = ByteString(roots_pem.as_bytes().to_vec());
    let mut changed = false;
    for client_config in config.client_configs_mut() {
        if client_config.ca_bundle.as_ref() != Some(&bundle) {
            client_config.ca_bundle = Some(bundle.clone());
            changed = true;
        }
    }
    if !changed {
        return Ok(BundleUpdate::Unchanged);
    }
    api.replace(name, &PostParams::default(), &config).await?;
    Ok(BundleUpdate::Patched)
}

/// Runs until `certificates` closes (the webhook stopped): keeps configuration
/// `name`'s `caBundle` equal to the roots of the webhook's current certificate
/// ([`super::WebhookServer::certificates`]). Failures are logged and retried with
/// backoff. Spawn it: `tokio::spawn(keep_ca_bundle(client, name, server.certificates()))`.
pub async fn keep_ca_bundle(
    client: Client,
    name: String,
    certificates: watch::Receiver<Option<Arc<Credentials>>>,
) {
    keep_ca_bundle_of::<ValidatingWebhookConfiguration>(client, name, certificates).await
}

/// [`keep_ca_bundle`] for a configuration of kind `K` (the injector's, say).
pub async fn keep_ca_bundle_of<K: WebhookConfiguration>(
    client: Client,
    name: String,
    mut certificates: watch::Receiver<Option<Arc<Credentials>>>,
) {
    let api: Api<K> = Api::all(client.clone());
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut writes = std::pin::pin!(watcher(api, config).default_backoff());
    let mut failures: u32 = 0;
    loop {
        let roots = certificates
            .borrow_and_update()
            .as_ref()
            .map(|c| c.trust().roots_pem());
        let mut wait = RESYNC;
        if let Some(roots) = roots {
            match set_ca_bundle::<K>(&client, &name, &roots).await {
                Ok(update) => {
                    failures = 0;
                    match update {
                        BundleUpdate::Patched => {
                            tracing::info!(configuration = %name, "webhook caBundle set to the mesh roots");
                        }
                        BundleUpdate::Missing => {
                            tracing::debug!(configuration = %name, "no webhook configuration to patch yet");
                        }
                        BundleUpdate::Unchanged => {}
                    }
                }
                Err(error) => {
                    failures = failures.saturating_add(1);
                    wait = backoff(failures);
                    tracing::warn!(configuration = %name, %error, retry_in = ?wait, "cannot set the webhook caBundle");
                }
            }
        }
        tokio::select! {
            changed = certificates.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            // Any write to the configuration (including ours, which then finds
            // nothing to do) is checked again.
            Some(_) = writes.next() => {}
            () = tokio::time::sleep(wait) => {}
        }
    }
}

fn backoff(failures: u32) -> Duration {
    let factor = 2u32.saturating_pow(failures.saturating_sub(1).min(6));
    Duration::from_millis(250).saturating_mul(factor)
}
