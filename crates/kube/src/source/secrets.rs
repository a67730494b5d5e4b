//! Secrets are read one name at a time: only those a Gateway or DestinationRule names
//! (`credentialName`, `credentialNames`, `caCertCredentialName`, and Istio's
//! `NAME-cacert` companion), each through a watch with a field selector, so the
//! control plane never holds the cluster's other Secrets. A name no longer referenced
//! stops its watch and leaves the store.

use std::collections::{BTreeSet, HashMap};

use kube::api::Api;
use kube::core::{ApiResource, DynamicObject};
use kube::runtime::watcher;
use serde_json::Value;
use tokio::sync::mpsc;
use trellis_api::Resource;

use super::{Fold, Message, WatchId, WatchState, WatchedKind, spawn_watch};

/// The kind the Secret watches convert as.
pub fn kind() -> WatchedKind {
    WatchedKind {
        resource: ApiResource::erase::<k8s_openapi::api::core::v1::Secret>(&()),
        custom: false,
        labels: None,
    }
}

/// The Secret names (with a namespace when the reference gives one) that the mesh's
/// Gateways and DestinationRules refer to.
pub fn referenced<'a>(resources: impl IntoIterator<Item = &'a Resource>) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for r in resources {
        if r.kind != "Gateway" && r.kind != "DestinationRule" {
            continue;
        }
        if let Some(spec) = r.raw.get("spec") {
            collect(spec, &mut out);
        }
    }
    out
}

fn collect(value: &Value, out: &mut BTreeSet<String>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("credentialName" | "caCertCredentialName", Value::String(name))
                        if !name.is_empty() =>
                    {
                        add(name, out);
                    }
                    ("credentialNames", Value::Array(names)) => {
                        for name in names.iter().filter_map(Value::as_str) {
                            add(name, out);
                        }
                    }
                    _ => collect(v, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| collect(v, out)),
        _ => {}
    }
}

fn add(reference: &str, out: &mut BTreeSet<String>) {
    // `kubernetes://NAME` is Istio's older spelling of the same reference.
    let reference = reference.strip_prefix("kubernetes://").unwrap_or(reference);
    let name = reference.rsplit('/').next().unwrap_or(reference);
    out.insert(name.to_string());
    out.insert(format!("{name}-cacert"));
}

/// Starts a watch for each newly wanted name and stops those no longer wanted.
pub(super) fn follow(
    client: &kube::Client,
    wanted: &BTreeSet<String>,
    watches: &mut HashMap<String, tokio::task::JoinHandle<()>>,
    fold: &mut Fold,
    tx: &mpsc::UnboundedSender<Message>,
) {
    watches.retain(|name, task| {
        let keep = wanted.contains(name);
        if !keep {
            task.abort();
            fold.watches.remove(&WatchId::Secret(name.clone()));
        }
        keep
    });
    let resource = kind().resource;
    for name in wanted {
        if watches.contains_key(name) {
            continue;
        }
        let api: Api<DynamicObject> = Api::all_with(client.clone(), &resource);
        let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
        let id = WatchId::Secret(name.clone());
        // Listed or not, a Secret watch never holds the first push back: a missing
        // certificate skips its server with a note until it appears.
        fold.watches.insert(
            id.clone(),
            WatchState {
                listed: true,
                ..WatchState::default()
            },
        );
        watches.insert(name.clone(), spawn_watch(id, api, config, tx.clone()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_every_spelling_of_a_reference() {
        let loaded = trellis_api::load_str(
            "t.yaml",
            "apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 443, name: https, protocol: HTTPS}
    hosts: ['*']
    tls: {mode: SIMPLE, credentialName: bookinfo-cert}
  - port: {number: 8443, name: https2, protocol: HTTPS}
    hosts: ['*']
    tls: {mode: MUTUAL, credentialNames: [a, b], caCertCredentialName: other/roots}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: dr, namespace: default}
spec:
  host: ext.example.com
  trafficPolicy: {tls: {mode: MUTUAL, credentialName: client-cert}}
",
        );
        let names = referenced(&loaded.resources);
        for n in [
            "bookinfo-cert",
            "bookinfo-cert-cacert",
            "a",
            "b",
            "roots",
            "client-cert",
        ] {
            assert!(names.contains(n), "{n} in {names:?}");
        }
        assert!(!names.contains("other/roots"));
    }
}
