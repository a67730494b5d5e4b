//! Keeping the webhook configuration's `caBundle` equal to the roots the webhook's
//! certificate chains to: at start, whenever the certificate brings other roots,
//! and whenever the configuration is written by someone else (an install that
//! resets it). A leader's duty: one task per cluster, started by whoever leads.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use kube::Client;
use kube::api::{Api, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use tokio::sync::watch;
use trellis_identity::Credentials;

/// Checked again this often even when nothing was heard of.
const RESYNC: Duration = Duration::from_secs(300);

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
pub async fn set_ca_bundle(
    client: &Client,
    name: &str,
    roots_pem: &str,
) -> Result<BundleUpdate, kube::Error> {
    let api: Api<ValidatingWebhookConfiguration> = Api::all(client.clone());
    let Some(mut config) = api.get_opt(name).await? else {
        return Ok(BundleUpdate::Missing);
    };
    let bundle = ByteString(roots_pem.as_bytes().to_vec());
    let mut changed = false;
    for hook in config.webhooks.iter_mut().flatten() {
        if hook.client_config.ca_bundle.as_ref() != Some(&bundle) {
            hook.client_config.ca_bundle = Some(bundle.clone());
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
    mut certificates: watch::Receiver<Option<Arc<Credentials>>>,
) {
    let api: Api<ValidatingWebhookConfiguration> = Api::all(client.clone());
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
            match set_ca_bundle(&client, &name, &roots).await {
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
