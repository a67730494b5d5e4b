//! The mesh root published where pods can mount it: a ConfigMap `istio-ca-root-cert`
//! (key `root-cert.pem`) in every namespace the control plane sees, as Istio does, so
//! an injected sidecar pins the root without any Secret. A leader duty: written when a
//! namespace appears or the copy differs, never deleted (a pod may still mount it).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, PostParams};
use tokio::sync::watch;
use trellis_api::Resource;

/// Istio's ConfigMap name and key.
pub const CONFIG_MAP: &str = "istio-ca-root-cert";
pub const KEY: &str = "root-cert.pem";

/// Runs until `snapshots` closes: keeps the root ConfigMap in each namespace of the
/// snapshots' Namespaces.
pub async fn publish(
    client: kube::Client,
    root_pem: String,
    mut snapshots: watch::Receiver<Arc<Vec<Resource>>>,
) {
    let mut done: BTreeSet<String> = BTreeSet::new();
    loop {
        let namespaces: BTreeSet<String> = snapshots
            .borrow_and_update()
            .iter()
            .filter(|r| r.kind == "Namespace")
            .map(|r| r.meta.name.clone())
            .collect();
        for namespace in namespaces.difference(&done.clone()) {
            match ensure(&client, namespace, &root_pem).await {
                Ok(()) => {
                    done.insert(namespace.clone());
                }
                Err(e) => {
                    tracing::warn!(namespace = %namespace, error = %e, "cannot publish the mesh root ({CONFIG_MAP})");
                }
            }
        }
        done.retain(|n| namespaces.contains(n));
        // Retry failures a little later even when nothing changes.
        let pending = namespaces.len() != done.len();
        tokio::select! {
            changed = snapshots.changed() => if changed.is_err() { return },
            () = tokio::time::sleep(Duration::from_secs(5)), if pending => {}
        }
    }
}

async fn ensure(client: &kube::Client, namespace: &str, root_pem: &str) -> Result<(), kube::Error> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let data = BTreeMap::from([(KEY.to_string(), root_pem.to_string())]);
    match api.get_opt(CONFIG_MAP).await? {
        Some(existing) if existing.data.as_ref() == Some(&data) => Ok(()),
        Some(mut existing) => {
            existing.data = Some(data);
            api.replace(CONFIG_MAP, &PostParams::default(), &existing)
                .await
                .map(|_| ())
        }
        None => {
            let map = ConfigMap {
                metadata: kube::api::ObjectMeta {
                    name: Some(CONFIG_MAP.into()),
                    namespace: Some(namespace.into()),
                    labels: Some(BTreeMap::from([(
                        "istio.io/config".to_string(),
                        "true".to_string(),
                    )])),
                    ..Default::default()
                },
                data: Some(data),
                ..Default::default()
            };
            match api.create(&PostParams::default(), &map).await {
                Ok(_) => Ok(()),
                Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
                Err(e) => Err(e),
            }
        }
    }
}
